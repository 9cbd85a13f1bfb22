//! `ringbus bench pubsub --plot DIR` (the built binary) on a tiny run: the charts are written
//! as SVG and PNG, the SVGs parse as XML, and each holds one series per transport.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The transports of the run: those built without the `peers` feature.
const TRANSPORTS: [&str; 3] = ["floor", "uds", "ringbus"];

/// Points of each latency line: p50 .. p99.99 (the binary's `stats::CURVE_POINTS`).
const CURVE_POINTS: usize = 16;

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The texts of all `<text>` elements.
fn texts<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<&'a str> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect()
}

/// Asserts that every transport names exactly one text of the chart (its legend entry or bar
/// label) and that no other series is named.
fn assert_one_label_each(doc: &roxmltree::Document<'_>, file: &str) {
    let texts = texts(doc);
    for t in TRANSPORTS {
        let n = texts.iter().filter(|s| **s == t).count();
        assert_eq!(n, 1, "{file}: label {t} appears {n} times in {texts:?}");
    }
}

#[test]
fn bench_plot_writes_one_series_per_transport() {
    let dir = TempDir::new("ringbus-plot-test");
    // Not created beforehand: --plot creates it.
    let plot_dir = dir.0.join("charts");
    let out = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args([
            "bench", "pubsub", "--rounds", "1", "--msgs", "50", "--sizes", "64",
        ])
        .arg("--transports")
        .arg(TRANSPORTS.join(","))
        .arg("--json")
        .arg("--plot")
        .arg(&plot_dir)
        .output()
        .expect("run ringbus bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ringbus bench failed: {stderr}");
    // --json: stdout is exactly one JSON object, whatever --plot writes.
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(
        stdout.trim_start().starts_with('{') && stdout.trim_end().ends_with('}'),
        "{stdout}"
    );
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");

    let mut names: Vec<String> = std::fs::read_dir(&plot_dir)
        .expect("the plot directory exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "pubsub-latency-64B.png",
            "pubsub-latency-64B.svg",
            "pubsub-throughput-64B.png",
            "pubsub-throughput-64B.svg",
        ],
        "{stderr}"
    );
    for png in ["pubsub-latency-64B.png", "pubsub-throughput-64B.png"] {
        let bytes = std::fs::read(plot_dir.join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a PNG"
        );
        assert!(bytes.len() > 10_000, "{png} is nearly empty");
    }

    // Latency: one line of p50 .. p99.99 per transport, each its own colour.
    let file = "pubsub-latency-64B.svg";
    let text = read(&plot_dir.join(file));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let lines: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            let points = n.attribute("points").unwrap_or("");
            points.split_whitespace().count() == CURVE_POINTS
        })
        .collect();
    assert_eq!(lines.len(), TRANSPORTS.len(), "{file}: latency lines");
    let colours: HashSet<_> = lines.iter().filter_map(|n| n.attribute("stroke")).collect();
    assert_eq!(colours.len(), TRANSPORTS.len(), "{file}: line colours");
    assert_one_label_each(&doc, file);
    let all = texts(&doc).join("\n");
    for label in ["p50", "p90", "p99", "p99.9", "p99.99", "ns", "host "] {
        assert!(all.contains(label), "{file}: no {label:?} in {all}");
    }

    // Throughput: one filled bar per transport.
    let file = "pubsub-throughput-64B.svg";
    let text = read(&plot_dir.join(file));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| !matches!(n.attribute("fill"), None | Some("none") | Some("#FFFFFF")))
        .count();
    assert_eq!(bars, TRANSPORTS.len(), "{file}: bars");
    assert_one_label_each(&doc, file);
    assert!(texts(&doc)
        .iter()
        .any(|t| t.contains("messages per second")));
}
