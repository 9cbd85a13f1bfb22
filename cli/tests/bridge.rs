//! `ringbus bridge` and `ringbus list --remote` through the built binary: a sidecar bridge
//! exports a topic and a service of its root, another host's `list --remote` sees exactly
//! those, SIGTERM ends the bridge with exit 0 and its counters, and a bad configuration is one
//! line on stderr with exit 1. Processes synchronise on what they print; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringbus::{Bytes, Node};
use rustix::process::{kill_process, Pid, Signal};

fn root(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbus-clibridge-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("create the test root");
    dir
}

fn ringbus(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringbus"));
    cmd.args(args).env("RINGBUS_ROOT", root);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_sidecar_bridge_exports_what_it_is_told_and_stops_on_sigterm() {
    let dir = root("sidecar");
    let port = free_port();
    let config = dir.join("a.json5");
    std::fs::write(
        &config,
        format!(
            "{{ zenoh: {{ listen: [\"tcp/127.0.0.1:{port}\"] }}, \
             topics: {{ export: [\"prices\"] }}, services: {{ export: [\"quote\"] }} }}"
        ),
    )
    .unwrap();
    // What the bridge may export, and what it must not.
    let node = Node::with_root(&dir).unwrap();
    let _prices = node.topic_bytes("prices").publisher().unwrap();
    let _secret = node.topic_bytes("secret").publisher().unwrap();
    let _quote = node.service::<Bytes, Bytes>("quote").server().unwrap();

    let mut bridge = ringbus(
        &dir,
        &["bridge", "--config", config.to_str().unwrap(), "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(bridge.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("running"), "bridge said: {line}");

    let remote = dir.join("b.json5");
    std::fs::write(
        &remote,
        format!("{{ zenoh: {{ connect: [\"tcp/127.0.0.1:{port}\"] }} }}"),
    )
    .unwrap();
    // The exports follow within a scan of the root: ask until both are there.
    let start = Instant::now();
    let listed = loop {
        let out = ringbus(
            &dir,
            &[
                "list",
                "--remote",
                "--config",
                remote.to_str().unwrap(),
                "--json",
                "--wait",
                "300ms",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<(String, String)> = v["remote"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().into(),
                    e["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        if names.len() >= 2 || start.elapsed() > Duration::from_secs(30) {
            break names;
        }
    };
    assert_eq!(
        listed,
        [
            ("topic".to_string(), "prices".to_string()),
            ("service".into(), "quote".into())
        ]
    );

    kill_process(Pid::from_child(&bridge), Signal::TERM).unwrap();
    let out = bridge.wait_with_output().unwrap();
    assert!(out.status.success(), "bridge exit: {:?}", out.status);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["dropped_malformed"], 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_configuration_is_one_line_and_exit_1() {
    let dir = root("badconfig");
    let config = dir.join("bad.json5");
    for text in [
        "{ topics: { exprot: [\"x\"] } }",
        "{ topics: { export: [\"../etc\"] } }",
        "{ zenoh: { mode: \"satellite\" } }",
        "not json at all",
    ] {
        std::fs::write(&config, text).unwrap();
        let out = ringbus(&dir, &["bridge", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{text}: {err}");
        assert!(
            err.starts_with("ringbus: error: bridge configuration"),
            "{text}: {err}"
        );
    }
    let out = ringbus(&dir, &["bridge", "--config", "/nonexistent.json5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench net` on a tiny run: one JSON object, pattern "net", the three rows with their
/// percentiles, nothing lost in the streams.
#[test]
fn bench_net_reports_three_rows_as_json() {
    let dir = root("benchnet");
    let out = ringbus(
        &dir,
        &[
            "bench",
            "net",
            "--json",
            "--rounds",
            "1",
            "--trips",
            "5",
            "--messages",
            "200",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pattern"], "net");
    let rows = v["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zenoh", "ringbus-zenoh", "ringbus-zenoh-embedded"]);
    for r in rows {
        for figure in ["pubsub_rtt_ns", "rpc_rtt_ns"] {
            let p50 = r[figure]["p50"].as_u64().unwrap();
            let p99 = r[figure]["p99"].as_u64().unwrap();
            assert!(p50 > 0 && p50 <= p99, "{r}");
        }
        assert!(r["stream_msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["stream_lost"], 0, "{r}");
    }
    assert_eq!(rows[0]["pubsub_ratio_to_zenoh"], 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}
