// Test support shared by the integration tests (and, by #[path], the fuzz target and benches).
pub mod args;
pub mod harness;
pub mod model;
pub mod sim;
pub mod world;
