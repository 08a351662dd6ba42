//! Property tests: random hypercall / link / DDW sequences against the core and the reference model.
//! Sequences are decoded from random bytes by the same decoder the fuzz target uses.

mod common;

use common::harness::{run_bytes, Stats};
use proptest::prelude::*;

// Debug builds run fewer cases (the model is slow unoptimised); `--release` runs more.
const CASES: u32 = if cfg!(debug_assertions) { 4000 } else { 20000 };

fn add(total: &mut Stats, s: &Stats) {
    total.ops += s.ops;
    total.hcalls += s.hcalls;
    total.success += s.success;
    total.param += s.param;
    total.too_hard += s.too_hard;
    total.refused_midway += s.refused_midway;
    total.retries += s.retries;
    total.need_alloc += s.need_alloc;
    total.fanout_calls += s.fanout_calls;
    total.two_table_calls += s.two_table_calls;
    total.links_ok += s.links_ok;
    total.ddw_creates_ok += s.ddw_creates_ok;
}

#[test]
fn core_matches_model() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: CASES,
        // A failing case's seed is saved here (cargo runs tests in the package directory) and replayed
        // first by every later run; commit the file with the fix.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "tests/proptest-regressions/model.txt",
        ))),
        ..ProptestConfig::default()
    });
    let total = std::cell::RefCell::new(Stats::default());
    let cases = std::cell::Cell::new(0u64);
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..3000), |data| {
        let stats = run_bytes(&data, 200).map_err(TestCaseError::fail)?;
        add(&mut total.borrow_mut(), &stats);
        cases.set(cases.get() + 1);
        Ok(())
    });
    let total = total.into_inner();
    let divergences = u32::from(result.is_err());
    println!("proptest cases run: {}, divergences: {divergences}; totals: {total:?}", cases.get());
    if let Err(e) = result {
        panic!("divergence: {e}");
    }
    // The generator must reach the interesting paths, or the comparison proves little.
    assert!(total.refused_midway > 0, "no batch refused after valid entries generated");
    assert!(total.retries > 0, "no retry after H_TOO_HARD generated");
    assert!(total.fanout_calls > 0, "no fan-out generated");
    assert!(total.two_table_calls > 0, "no two-table window generated");
    assert!(total.need_alloc > 0, "no NeedAlloc generated");
    assert!(total.ddw_creates_ok > 0, "no DDW window created");
}

/// The comparison itself can fail: after a linked PUT that both sides agree on, a host entry the core's
/// side wrote wrongly, one it wrote but the model did not, a guest entry changed behind the harness's back
/// and an exchange left without invalidation are each reported.
#[test]
fn harness_reports_divergences() {
    use common::harness::{Op, World, LIOBNS};
    let setup = || {
        let mut w = World::new();
        w.run(&Op::Link { liobn: LIOBNS[0], table: 0 }).expect("link agrees");
        let put = Op::Hcall { nr: 0x20, args: [LIOBNS[0], 0, 0x3, 0], list: None };
        w.run(&put).expect("put agrees");
        w.compare_full().expect("whole state agrees");
        assert_eq!(w.sim.host.tables[&0].entries.len(), 1, "the PUT reached the host table");
        w
    };
    let mut w = setup();
    let (&index, _) = w.sim.host.tables[&0].entries.iter().next().unwrap();
    w.sim.host.tables.get_mut(&0).unwrap().entries.insert(index, 0x1234_0003);
    assert!(w.compare_full().is_err(), "a wrong host entry is found");

    let mut w = setup();
    w.sim.host.tables.get_mut(&0).unwrap().entries.insert(index + 1, 0x3);
    assert!(w.compare_full().is_err(), "an extra host entry is found");

    let mut w = setup();
    w.model.windows.get_mut(&LIOBNS[0]).unwrap().tces.insert(0, 0x1_0003);
    assert!(w.compare_full().is_err(), "a changed guest entry is found");

    let mut w = setup();
    w.sim.host.tables.get_mut(&0).unwrap().dirty.push(index);
    assert!(w.run(&Op::Query).is_err(), "an exchange without invalidation is found");
}
