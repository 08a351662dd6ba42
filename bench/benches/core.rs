//! ns per TCE for the four hypercalls on an in-memory host table, beside raw 8-byte stores measured in
//! the same run. Names carry the number of TCEs per iteration; `core-report` divides.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pvtce_bench::{Bench, LIOBN, LIST_GPA};
use pvtce_core::hcall::{hcall_with_buf, Dispatch, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use pvtce_core::host::Planned;
use pvtce_core::window::PLAN_SLOTS;

const RW: u64 = 3;

fn expect_ok(d: Dispatch) {
    assert!(matches!(d, Dispatch::Return { ret: 0, .. }), "{d:?}");
}

/// A fixed pseudo-random permutation of 0..n (xorshift), for the random-store baseline.
fn random_indices(n: usize, range: usize) -> Vec<usize> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % range as u64) as usize
        })
        .collect()
}

fn baselines(c: &mut Criterion) {
    let entries = 1 << 18; // same size as the benchmark host table
    let mut table = vec![0u64; entries];
    let idx = random_indices(512, entries);
    c.bench_function("raw_store_seq_512", |b| {
        let mut v = 0u64;
        b.iter(|| {
            v = v.wrapping_add(0x1000);
            for slot in table[4096..4096 + 512].iter_mut() {
                *slot = black_box(v);
            }
            black_box(&table);
        })
    });
    c.bench_function("raw_store_rand_512", |b| {
        let mut v = 0u64;
        b.iter(|| {
            v = v.wrapping_add(0x1000);
            for &i in &idx {
                table[i] = black_box(v);
            }
            black_box(&table);
        })
    });
}

fn hcalls(c: &mut Criterion) {
    let mut m = Bench::new();
    let mut buf = [0u64; 512];
    let mut plan = vec![Planned::default(); PLAN_SLOTS];
    let mut i = 0u64;
    c.bench_function("put_tce_1", |b| {
        b.iter(|| {
            i = (i + 1) & 0xFFFF;
            let d =
                hcall_with_buf(&mut m, H_PUT_TCE, black_box([LIOBN, i << 12, (i << 12) | RW, 0]), &mut buf, &mut plan);
            expect_ok(black_box(d));
        })
    });
    c.bench_function("get_tce_1", |b| {
        b.iter(|| {
            i = (i + 1) & 0xFFFF;
            expect_ok(black_box(hcall_with_buf(
                &mut m,
                H_GET_TCE,
                black_box([LIOBN, i << 12, 0, 0]),
                &mut buf,
                &mut plan,
            )));
        })
    });
    for n in [1u64, 512, 65536] {
        c.bench_function(&format!("stuff_tce_{n}"), |b| {
            b.iter(|| {
                expect_ok(black_box(hcall_with_buf(
                    &mut m,
                    H_STUFF_TCE,
                    black_box([LIOBN, 0x100_0000, 0, n]),
                    &mut buf,
                    &mut plan,
                )))
            })
        });
    }
    // The list: 512 mappings of distinct pages, big-endian as the guest writes them.
    m.host.list = (0..512u64).map(|k| ((0x100_0000 + (k << 12)) | RW).to_be()).collect();
    c.bench_function("put_tce_indirect_512", |b| {
        let mut base = 0u64;
        b.iter(|| {
            base = (base + 512) & 0x3FFFF;
            let args = [LIOBN, base << 12, LIST_GPA, 512];
            expect_ok(black_box(hcall_with_buf(&mut m, H_PUT_TCE_INDIRECT, black_box(args), &mut buf, &mut plan)));
        })
    });
}

criterion_group!(benches, baselines, hcalls);
criterion_main!(benches);
