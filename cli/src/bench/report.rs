//! Output: a readable table, or exactly one JSON object (hand-written, no serde).

use std::fmt::Write as _;

use super::queue;
use super::stats::{LatencySummary, Row};
use super::transport::{LatencyKind, Pattern, RPC_WINDOW};

/// Renders the JSON object:
/// `{"pattern":"pubsub","latency":"one_way","results":[{"transport":..,
/// "payload_bytes":..,"touch":..,"p50_ns":..,"p99_ns":..,"p999_ns":..,"max_ns":..,
/// "samples":..,"msgs_per_s":..,"ratio_p50_to_floor":..},..]}`; missing values are
/// `null`. `"latency"` says what the `*_ns` figures are: `"one_way"` (round trip / 2,
/// `pubsub`) or `"round_trip"` (`rpc`). For `rpc`, `msgs_per_s` holds pipelined calls per
/// second (measured at the client) and every result also has `"pipelined_x_rtt"`
/// (calls/s x round-trip p50 in s). For `queue` (`"latency":"one_way"`: send to receive,
/// from `CLOCK_MONOTONIC` stamps), every result also has `"producers"`, `"consumers"`,
/// `"ratio_msgs_per_s"` (median over rounds of msgs/s / the reference row's msgs/s in the
/// same round) and `"ratio_reference"` (that row's transport, or `null`).
pub fn json(pattern: Pattern, rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("{\"pattern\":");
    push_json_str(&mut out, pattern.as_str());
    out.push_str(",\"latency\":");
    push_json_str(&mut out, pattern.latency_kind().as_str());
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
             \"max_ns\":{},\"samples\":{},\"msgs_per_s\":{},\"ratio_p50_to_floor\":{}",
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
        if pattern == Pattern::Rpc {
            let _ = write!(
                out,
                ",\"pipelined_x_rtt\":{}",
                opt_float(row.pipelined_x_rtt, 2)
            );
        }
        if pattern == Pattern::Queue {
            let (producers, consumers) = row.shape.unwrap_or((0, 0));
            let _ = write!(
                out,
                ",\"producers\":{producers},\"consumers\":{consumers},\"ratio_msgs_per_s\":{},\
                 \"ratio_reference\":",
                opt_float(row.rate_ratio.map(|r| r.0), 3)
            );
            match row.rate_ratio {
                Some((_, reference)) => push_json_str(&mut out, reference),
                None => out.push_str("null"),
            }
        }
        out.push('}');
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

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A table cell: the value, or `-`.
fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A table cell: the value with `decimals` decimals, or `-`.
fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// Appends the latency cells of a table line: p50, p99, p99.9 and max (`-` without latency).
fn push_latency_cells(out: &mut String, lat: Option<&LatencySummary>) {
    let _ = write!(
        out,
        " {:>9} {:>9} {:>9} {:>10}",
        cell(lat.map(|l| l.p50_ns)),
        cell(lat.map(|l| l.p99_ns)),
        cell(lat.map(|l| l.p999_ns)),
        cell(lat.map(|l| l.max_ns)),
    );
}

/// Renders the human-readable table.
pub fn table(pattern: Pattern, rows: &[Row], header_note: &str) -> String {
    if pattern == Pattern::Queue {
        return queue_table(rows, header_note);
    }
    let mut out = String::new();
    let rpc = pattern == Pattern::Rpc;
    let what = match pattern.latency_kind() {
        LatencyKind::OneWay => "one-way latency = round trip / 2",
        LatencyKind::RoundTrip => "round-trip latency (request + 8-byte response)",
    };
    let _ = writeln!(
        out,
        "ringbus bench {}: {what}, in ns; {header_note}",
        pattern.as_str()
    );
    if rpc {
        let _ = writeln!(
            out,
            "calls/s: pipelined, {RPC_WINDOW} in flight, at the client; \
             x rtt = calls/s x round-trip p50"
        );
    }
    let _ = write!(
        out,
        "{:<22} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>13}",
        "transport",
        "bytes",
        "p50",
        "p99",
        "p99.9",
        "max",
        "x floor",
        if rpc { "calls/s" } else { "msgs/s" }
    );
    if rpc {
        let _ = write!(out, " {:>6}", "x rtt");
    }
    out.push('\n');
    let mut last_size = None;
    for row in rows {
        if last_size.is_some() && last_size != Some(row.payload_bytes) {
            out.push('\n');
        }
        last_size = Some(row.payload_bytes);
        let _ = write!(out, "{:<22} {:>8}", row.transport, row.payload_bytes);
        push_latency_cells(&mut out, row.latency.as_ref());
        let _ = write!(
            out,
            " {:>7} {:>13}",
            fixed(row.ratio_p50_to_floor, 2),
            fixed(row.msgs_per_s, 0)
        );
        if rpc {
            let _ = write!(out, " {:>6}", fixed(row.pipelined_x_rtt, 2));
        }
        out.push('\n');
    }
    out
}

/// The `queue` table: one line per transport, size and shape, then the judged ratios.
fn queue_table(rows: &[Row], header_note: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringbus bench queue: one-way latency (send -> receive, CLOCK_MONOTONIC stamps, paced) \
         in ns; msgs/s acked, median over rounds; {header_note}"
    );
    let _ = writeln!(
        out,
        "x ref = median over rounds of msgs/s / the reference row's msgs/s in the same round"
    );
    let _ = writeln!(
        out,
        "{:<23} {:>5} {:>6} {:>9} {:>9} {:>9} {:>10} {:>7} {:>12} {:>6}  ref",
        "transport", "shape", "bytes", "p50", "p99", "p99.9", "max", "samples", "msgs/s", "x ref",
    );
    let mut last_group = None;
    for row in rows {
        let group = (row.payload_bytes, row.shape);
        if last_group.is_some() && last_group != Some(group) {
            out.push('\n');
        }
        last_group = Some(group);
        let lat = row.latency.as_ref();
        let shape = row
            .shape
            .map_or_else(|| "-".to_string(), |(p, c)| format!("{p}→{c}"));
        let _ = write!(
            out,
            "{:<23} {:>5} {:>6}",
            row.transport, shape, row.payload_bytes
        );
        push_latency_cells(&mut out, lat);
        let _ = writeln!(
            out,
            " {:>7} {:>12} {:>6}  {}",
            cell(lat.map(|l| l.samples)),
            fixed(row.msgs_per_s, 0),
            fixed(row.rate_ratio.map(|(r, _)| r), 2),
            row.rate_ratio.map_or("", |(_, reference)| reference),
        );
    }
    let judged: Vec<String> = queue::TARGETS
        .iter()
        .filter_map(|&(name, reference, least)| {
            let row = rows.iter().find(|r| {
                r.transport == name && r.payload_bytes == 64 && r.shape == Some((1, 1))
            })?;
            let (ratio, got_reference) = row.rate_ratio?;
            (got_reference == reference).then(|| {
                format!(
                    "  {:<40} {ratio:>6.3}  (target >= {least:.2}: {})",
                    format!("{name} / {reference}"),
                    if ratio >= least { "met" } else { "NOT met" }
                )
            })
        })
        .collect();
    if !judged.is_empty() {
        let _ = writeln!(out, "\njudged figures, 1→1, 64 B, x ref of msgs/s:");
        for line in judged {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::CURVE_POINTS;

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
                    curve: [0; CURVE_POINTS],
                }),
                msgs_per_s: Some(1e6),
                ratio_p50_to_floor: Some(1.0),
                pipelined_x_rtt: None,
                shape: None,
                rate_ratio: None,
            },
            Row {
                transport: "crossbeam\"x".into(),
                payload_bytes: 64,
                touch: true,
                latency: None,
                msgs_per_s: None,
                ratio_p50_to_floor: None,
                pipelined_x_rtt: None,
                shape: None,
                rate_ratio: None,
            },
        ];
        let out = json(Pattern::PubSub, &rows);
        assert!(out.starts_with(
            "{\"pattern\":\"pubsub\",\"latency\":\"one_way\",\"results\":[{\"transport\":\"floor\""
        ));
        assert!(out.contains("\"p50_ns\":60,\"p99_ns\":70,\"p999_ns\":80,\"max_ns\":90"));
        assert!(out.contains("\"msgs_per_s\":1000000,\"ratio_p50_to_floor\":1.000}"));
        assert!(out.contains("\"transport\":\"crossbeam\\\"x\""));
        assert!(out.contains("\"p50_ns\":null"));
        assert!(out.ends_with("]}"));
        assert!(!out.contains('\n'));
        assert!(!out.contains("pipelined_x_rtt"));
    }

    #[test]
    fn rpc_json_and_table_say_round_trip() {
        let rows = vec![Row {
            transport: "ringbus".into(),
            payload_bytes: 64,
            touch: false,
            latency: Some(LatencySummary {
                p50_ns: 1000,
                p99_ns: 2000,
                p999_ns: 3000,
                max_ns: 4000,
                samples: 10,
                curve: [0; CURVE_POINTS],
            }),
            msgs_per_s: Some(4e6),
            ratio_p50_to_floor: Some(1.5),
            pipelined_x_rtt: Some(4.0),
            shape: None,
            rate_ratio: None,
        }];
        let out = json(Pattern::Rpc, &rows);
        assert!(out.starts_with("{\"pattern\":\"rpc\",\"latency\":\"round_trip\",\"results\":["));
        assert!(out.contains("\"p50_ns\":1000,"));
        assert!(out.contains(
            "\"msgs_per_s\":4000000,\"ratio_p50_to_floor\":1.500,\"pipelined_x_rtt\":4.00}"
        ));
        assert!(out.ends_with("]}"));
        let t = table(Pattern::Rpc, &rows, "note");
        assert!(t.contains("round-trip latency"));
        assert!(t.contains("calls/s") && t.contains("x rtt"));
        assert!(t
            .lines()
            .any(|l| l.starts_with("ringbus") && l.ends_with("4.00")));
        let t = table(Pattern::PubSub, &rows, "note");
        assert!(t.contains("one-way latency") && t.contains("msgs/s") && !t.contains("x rtt"));
    }

    #[test]
    fn queue_json_and_table_carry_shape_and_ratio() {
        let row = |transport: &str, ratio: Option<(f64, &'static str)>| Row {
            transport: transport.into(),
            payload_bytes: 64,
            touch: false,
            latency: Some(LatencySummary {
                p50_ns: 700,
                p99_ns: 2000,
                p999_ns: 3000,
                max_ns: 4000,
                samples: 3500,
                curve: [0; CURVE_POINTS],
            }),
            msgs_per_s: Some(5e6),
            ratio_p50_to_floor: None,
            pipelined_x_rtt: None,
            shape: Some((1, 1)),
            rate_ratio: ratio,
        };
        let rows = vec![
            row("crossbeam", None),
            row("ringbus", Some((0.6, "crossbeam"))),
            row("ringbus-durable-never", Some((0.4, "ringbus"))),
        ];
        let out = json(Pattern::Queue, &rows);
        assert!(out.starts_with(
            "{\"pattern\":\"queue\",\"latency\":\"one_way\",\"results\":[{\"transport\":\"crossbeam\""
        ));
        assert!(out.contains(
            "\"producers\":1,\"consumers\":1,\"ratio_msgs_per_s\":null,\"ratio_reference\":null}"
        ));
        assert!(out.contains("\"ratio_msgs_per_s\":0.600,\"ratio_reference\":\"crossbeam\"}"));
        assert!(!out.contains("pipelined_x_rtt") && !out.contains('\n'));
        let t = table(Pattern::Queue, &rows, "note");
        assert!(t.contains("send -> receive") && t.contains("1→1"));
        assert!(t.contains("ringbus / crossbeam") && t.contains("0.600  (target >= 0.50: met)"));
        assert!(t.contains("ringbus-durable-never / ringbus") && t.contains("NOT met"));
    }
}
