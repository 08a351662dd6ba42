//! Prints ns per TCE for each core benchmark and the ratios to the raw-store baselines measured in the
//! same criterion run. Usage: `cargo run -p pvtce-bench --bin core-report [target/criterion]`.

use std::path::Path;

const BENCHES: [&str; 8] = [
    "raw_store_seq_512",
    "raw_store_rand_512",
    "put_tce_1",
    "get_tce_1",
    "stuff_tce_1",
    "stuff_tce_512",
    "stuff_tce_65536",
    "put_tce_indirect_512",
];

/// Mean point estimate (ns) from criterion's estimates.json.
fn mean_ns(dir: &Path, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(name).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn per_tce(dir: &Path, name: &str) -> Option<f64> {
    let n: f64 = name.rsplit('_').next()?.parse().ok()?;
    Some(mean_ns(dir, name)? / n)
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "target/criterion".into());
    let dir = Path::new(&arg);
    println!("{:<24} {:>12} {:>10} {:>10}", "benchmark", "ns/TCE", "x seq", "x rand");
    let seq = per_tce(dir, "raw_store_seq_512");
    let rand = per_tce(dir, "raw_store_rand_512");
    for name in BENCHES {
        match per_tce(dir, name) {
            Some(v) => {
                let ratio = |b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}", v / b));
                println!("{name:<24} {v:>12.2} {:>10} {:>10}", ratio(seq), ratio(rand));
            }
            None => println!("{name:<24} {:>12}", "missing"),
        }
    }
    if let (Some(ind), Some(r)) = (per_tce(dir, "put_tce_indirect_512"), rand) {
        let ratio = ind / r;
        println!("INDIRECT-512 per TCE / random raw store per TCE = {ratio:.2} (goal < 3)");
    }
}
