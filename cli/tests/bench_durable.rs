//! `ringbus bench durable --json` end to end, in a short run: one JSON object with the rows,
//! append and replay figures and rebalance times the issue asks for.

use std::process::Command;

use serde_json::Value;

/// A short run's JSON object, with `extra` flags.
fn short_run(extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args([
            "bench",
            "durable",
            "--json",
            "--rounds",
            "1",
            "--samples",
            "200",
            "--messages",
            "2000",
            "--trials",
            "3",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_short_durable_bench_reports_every_figure() {
    let v = short_run(&[]);
    assert_eq!(v["pattern"], "durable");
    assert_eq!(v["helper_thread"], true);
    let rows: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "ringbus",
            "ringbus-durable-never",
            "ringbus-durable-batch",
            "ringbus-durable-always"
        ]
    );
    for r in v["results"].as_array().unwrap() {
        assert!(
            r["p50_ns"].as_u64().unwrap() <= r["p99_ns"].as_u64().unwrap(),
            "{r}"
        );
        assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    let append = v["append"].as_array().unwrap();
    assert_eq!(append.len(), 6);
    assert!(append
        .iter()
        .all(|a| a["msgs_per_s"].as_f64().unwrap() > 0.0));
    assert_eq!(v["replay"]["messages"], 2000);
    assert!(v["replay"]["page_cache_mb_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["rebalance"]["trials"], 3);
    assert!(
        v["rebalance"]["max_ms"].as_f64().unwrap() >= v["rebalance"]["p50_ms"].as_f64().unwrap()
    );
}

#[test]
fn publishers_run_without_their_helper_thread_when_asked() {
    let v = short_run(&["--no-helper-thread"]);
    assert_eq!(v["helper_thread"], false);
    assert_eq!(v["results"].as_array().unwrap().len(), 4);
    assert_eq!(v["replay"]["messages"], 2000);
}
