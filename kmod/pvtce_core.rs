// SPDX-License-Identifier: GPL-2.0

//! pvtce-core, compiled into the module by source: one implementation of the TCE semantics, shared with the
//! userspace fallback (which builds the same files through Cargo). The files refer to each other with
//! `super::`, so they sit here as siblings.

#[path = "core/src/args.rs"]
pub mod args;
#[path = "core/src/error.rs"]
pub mod error;
#[path = "core/src/host.rs"]
pub mod host;
#[path = "core/src/table.rs"]
pub mod table;
#[path = "core/src/types.rs"]
pub mod types;
#[path = "core/src/window.rs"]
pub mod window;
