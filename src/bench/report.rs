//! Output: a readable table, or exactly one JSON object (hand-written, no serde).

use std::fmt::Write as _;

use super::stats::Row;
use super::transport::Pattern;

/// Renders the JSON object:
/// `{"pattern":"pubsub","results":[{"transport":..,"payload_bytes":..,"touch":..,
/// "p50_ns":..,"p99_ns":..,"p999_ns":..,"max_ns":..,"samples":..,"msgs_per_s":..,
/// "ratio_p50_to_floor":..},..]}`. Latencies are one-way (round trip / 2) in ns;
/// missing values are `null`.
pub fn json(pattern: Pattern, rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("{\"pattern\":");
    push_json_str(&mut out, pattern.as_str());
    out.push_str(",\"results\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"transport\":");
        push_json_str(&mut out, &row.transport);
        let lat = row.latency.as_ref();
        let _ = write!(
            out,
            ",\"payload_bytes\":{},\"touch\":{},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\
             \"max_ns\":{},\"samples\":{},\"msgs_per_s\":{},\"ratio_p50_to_floor\":{}}}",
            row.payload_bytes,
            row.touch,
            opt_int(lat.map(|l| l.p50_ns)),
            opt_int(lat.map(|l| l.p99_ns)),
            opt_int(lat.map(|l| l.p999_ns)),
            opt_int(lat.map(|l| l.max_ns)),
            opt_int(lat.map(|l| l.samples)),
            opt_float(row.msgs_per_s, 0),
            opt_float(row.ratio_p50_to_floor, 3),
        );
    }
    out.push_str("]}");
    out
}

fn opt_int(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn opt_float(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".to_string(),
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Renders the human-readable table.
pub fn table(pattern: Pattern, rows: &[Row], header_note: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringbus bench {}: one-way latency = round trip / 2, in ns; {header_note}",
        pattern.as_str()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>13}",
        "transport", "bytes", "p50", "p99", "p99.9", "max", "x floor", "msgs/s"
    );
    let mut last_size = None;
    for row in rows {
        if last_size.is_some() && last_size != Some(row.payload_bytes) {
            out.push('\n');
        }
        last_size = Some(row.payload_bytes);
        let lat = row.latency.as_ref();
        let cell = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>13}",
            row.transport,
            row.payload_bytes,
            cell(lat.map(|l| l.p50_ns)),
            cell(lat.map(|l| l.p99_ns)),
            cell(lat.map(|l| l.p999_ns)),
            cell(lat.map(|l| l.max_ns)),
            row.ratio_p50_to_floor
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}")),
            row.msgs_per_s
                .map_or_else(|| "-".to_string(), |m| format!("{m:.0}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::LatencySummary;

    #[test]
    fn json_has_one_object_with_nulls() {
        let rows = vec![
            Row {
                transport: "floor".into(),
                payload_bytes: 64,
                touch: false,
                latency: Some(LatencySummary {
                    p50_ns: 60,
                    p99_ns: 70,
                    p999_ns: 80,
                    max_ns: 90,
                    samples: 10,
                }),
                msgs_per_s: Some(1e6),
                ratio_p50_to_floor: Some(1.0),
            },
            Row {
                transport: "crossbeam\"x".into(),
                payload_bytes: 64,
                touch: true,
                latency: None,
                msgs_per_s: None,
                ratio_p50_to_floor: None,
            },
        ];
        let out = json(Pattern::PubSub, &rows);
        assert!(out.starts_with("{\"pattern\":\"pubsub\",\"results\":[{\"transport\":\"floor\""));
        assert!(out.contains("\"p50_ns\":60,\"p99_ns\":70,\"p999_ns\":80,\"max_ns\":90"));
        assert!(out.contains("\"msgs_per_s\":1000000,\"ratio_p50_to_floor\":1.000}"));
        assert!(out.contains("\"transport\":\"crossbeam\\\"x\""));
        assert!(out.contains("\"p50_ns\":null"));
        assert!(out.ends_with("]}"));
        assert!(!out.contains('\n'));
    }
}
