//! How segments are shown: JSON objects for scripts, and text for people.

use std::fmt::Write as _;
use std::time::Duration;

use ringbus::admin::{Details, Participant, SegmentInfo, Status};
use ringbus::SyncPolicy;
use serde_json::{json, Value};

/// Messages per second of each moving counter, from two snapshots of a segment taken `dt`
/// apart (`None` where the participant changed between them).
#[derive(Debug, Default, Clone)]
pub struct Rates {
    /// Per participant (role, index): messages/s (sent by a publisher, read by a subscriber,
    /// taken from a client's ring).
    pub members: Vec<((&'static str, usize), f64)>,
    /// A queue's messages sent per second.
    pub queue_sent: Option<f64>,
}

impl Rates {
    /// The rates between snapshot `before` and snapshot `now` of the same segment.
    pub fn between(before: &SegmentInfo, now: &SegmentInfo, dt: Duration) -> Rates {
        let secs = dt.as_secs_f64().max(1e-9);
        let same = |role: &str, index: usize| {
            let pid = |s: &SegmentInfo| {
                s.participants
                    .iter()
                    .find(|p| p.role == role && p.index == index)
                    .map(|p| p.pid)
            };
            pid(before).is_some() && pid(before) == pid(now)
        };
        let counts = |s: &SegmentInfo| -> Vec<((&'static str, usize), u64)> {
            match &s.details {
                Some(Details::Topic(t)) => t
                    .publishers
                    .iter()
                    .map(|p| (("publisher", p.index), p.sent))
                    .chain(
                        t.subscribers
                            .iter()
                            .map(|c| (("subscriber", c.index), c.read)),
                    )
                    .collect(),
                Some(Details::Service(v)) => v
                    .clients
                    .iter()
                    .map(|c| (("client", c.index), c.taken))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let old = counts(before);
        let mut rates = Rates::default();
        for (key, n) in counts(now) {
            if let Some((_, m)) = old.iter().find(|(k, _)| *k == key) {
                if same(key.0, key.1) && n >= *m {
                    rates.members.push((key, (n - m) as f64 / secs));
                }
            }
        }
        if let (Some(Details::Queue(a)), Some(Details::Queue(b))) = (&before.details, &now.details)
        {
            rates.queue_sent = (b.sent >= a.sent).then(|| (b.sent - a.sent) as f64 / secs);
        }
        rates
    }

    fn of(&self, role: &str, index: usize) -> Option<f64> {
        self.members
            .iter()
            .find(|((r, i), _)| *r == role && *i == index)
            .map(|(_, v)| *v)
    }
}

fn participant_json(p: &Participant) -> Value {
    json!({"role": p.role, "index": p.index, "pid": p.pid, "alive": p.alive})
}

fn sync_str(s: Option<SyncPolicy>) -> Value {
    match s {
        None => Value::Null,
        Some(SyncPolicy::Always) => json!("always"),
        Some(SyncPolicy::Never) => json!("never"),
        Some(SyncPolicy::Batch(d)) => json!(format!("batch {} ms", d.as_millis())),
    }
}

/// A segment as a JSON object; with `rates`, each moving counter's messages/s beside it.
pub fn segment_json(s: &SegmentInfo, rates: Option<&Rates>) -> Value {
    let rate = |role: &str, index: usize| rates.and_then(|r| r.of(role, index));
    let details = match &s.details {
        None => Value::Null,
        Some(Details::Topic(t)) => json!({
            "policy": format!("{:?}", t.policy).to_lowercase(),
            "capacity": t.capacity,
            "max_message_size": t.max_message_size,
            "history": t.history,
            "max_publishers": t.max_publishers,
            "max_subscribers": t.max_subscribers,
            "publishers": t.publishers.iter().map(|p| json!({
                "index": p.index, "sent": p.sent, "msgs_per_s": rate("publisher", p.index),
            })).collect::<Vec<_>>(),
            "subscribers": t.subscribers.iter().map(|c| json!({
                "index": c.index, "read": c.read, "lag": c.lag,
                "msgs_per_s": rate("subscriber", c.index),
            })).collect::<Vec<_>>(),
        }),
        Some(Details::Service(v)) => json!({
            "max_in_flight": v.max_in_flight,
            "max_request_size": v.max_request_size,
            "max_response_size": v.max_response_size,
            "stream_depth": v.stream_depth,
            "max_servers": v.max_servers,
            "max_clients": v.max_clients,
            "in_flight": v.clients.iter().map(|c| c.waiting + c.in_service).sum::<usize>(),
            "timeouts": v.clients.iter().map(|c| c.timeouts).sum::<u64>(),
            "clients": v.clients.iter().map(|c| json!({
                "index": c.index, "taken": c.taken, "waiting": c.waiting,
                "in_service": c.in_service, "timeouts": c.timeouts,
                "calls_per_s": rate("client", c.index),
            })).collect::<Vec<_>>(),
        }),
        Some(Details::Queue(q)) => json!({
            "capacity": q.capacity,
            "max_message_size": q.max_message_size,
            "max_deliveries": q.max_deliveries,
            "visibility_timeout_ms": q.visibility_timeout.as_millis() as u64,
            "dead_letter": q.dead_letter,
            "sent": q.sent,
            "sent_per_s": rates.and_then(|r| r.queue_sent),
            "depth": q.depth,
            "in_flight": q.in_flight,
            "redelivered": q.redelivered,
            "dead_lettered": q.dead_lettered,
            "dropped": q.dropped,
            "torn": q.torn,
            "recoveries": q.recoveries,
            "recovered": q.recovered,
            "producers": q.producers.iter().map(|p| json!({
                "index": p.index, "sync": sync_str(p.sync),
            })).collect::<Vec<_>>(),
            "consumers": q.consumers.iter().map(|c| json!({
                "index": c.index, "prefetch": c.prefetch, "in_flight": c.in_flight,
            })).collect::<Vec<_>>(),
            "log": q.log.as_ref().map(|l| json!({
                "dir": l.dir,
                "disk_bytes": l.disk_bytes,
                "files": l.files.iter().map(|f| json!({"path": f.path, "bytes": f.bytes}))
                    .collect::<Vec<_>>(),
            })),
        }),
    };
    json!({
        "kind": s.kind.as_str(),
        "name": s.name,
        "path": s.path,
        "status": s.status.as_str(),
        "reason": match &s.status { Status::Unreadable(why) => Some(why), _ => None },
        "durable": s.durable,
        "bytes": s.bytes,
        "payload": s.payload.as_ref().map(|p| json!({
            "type": p.name, "size": p.size, "align": p.align, "encoding": p.encoding,
        })),
        "participants": s.participants.iter().map(participant_json).collect::<Vec<_>>(),
        "details": details,
    })
}

/// `n` bytes in binary units (`"1.5 MiB"`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A rate for people (`"12.3k/s"`), `-` if unknown.
fn rate(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(v) if v >= 1e6 => format!("{:.1}M/s", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k/s", v / 1e3),
        Some(v) => format!("{v:.0}/s"),
    }
}

/// The payload type for people: `"u64 (pod, 8 B)"`.
pub fn payload(s: &SegmentInfo) -> String {
    match &s.payload {
        None => "-".into(),
        // No encoding: the layout did not read (the header alone did).
        Some(p) if p.encoding.is_empty() => p.name.clone(),
        Some(p) if p.size == 0 => format!("{} ({})", p.name, p.encoding),
        Some(p) => format!("{} ({}, {} B)", p.name, p.encoding, p.size),
    }
}

/// The shape in a few words: capacity and message size.
pub fn shape(s: &SegmentInfo) -> String {
    match &s.details {
        None => "-".into(),
        Some(Details::Topic(t)) => format!(
            "{} × {}, {}",
            t.capacity,
            bytes(t.max_message_size as u64),
            format!("{:?}", t.policy).to_lowercase()
        ),
        Some(Details::Service(v)) => format!(
            "{} in flight, {} → {}",
            v.max_in_flight,
            bytes(v.max_request_size as u64),
            bytes(v.max_response_size as u64)
        ),
        Some(Details::Queue(q)) => format!(
            "{} × {}{}",
            q.capacity,
            bytes(q.max_message_size as u64),
            if s.durable { ", durable" } else { "" }
        ),
    }
}

/// The participants in one cell: `publisher 4121, subscriber 4122 (dead)`; for an unreadable
/// file, why.
pub fn participants(s: &SegmentInfo) -> String {
    if let Status::Unreadable(why) = &s.status {
        return why.clone();
    }
    if s.participants.is_empty() {
        return "-".into();
    }
    s.participants
        .iter()
        .map(|p| {
            format!(
                "{} {}{}",
                p.role,
                p.pid,
                if p.alive { "" } else { " (dead)" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of cells as a table with aligned columns (the last column is not padded).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = width[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One segment in detail, for people.
pub fn segment_text(s: &SegmentInfo, rates: Option<&Rates>) -> String {
    let mut out = String::new();
    let status = match &s.status {
        Status::Unreadable(why) => format!("unreadable: {why}"),
        st => st.as_str().to_string(),
    };
    let _ = writeln!(out, "{} {}  ({status})", s.kind, s.name);
    let _ = writeln!(out, "  file     {}  ({})", s.path.display(), bytes(s.bytes));
    let _ = writeln!(out, "  payload  {}", payload(s));
    let r = |role: &str, index: usize| rate(rates.and_then(|r| r.of(role, index)));
    let alive = |role: &str, index: usize| {
        s.participants
            .iter()
            .find(|p| p.role == role && p.index == index)
            .map(|p| format!("pid {}{}", p.pid, if p.alive { "" } else { " (dead)" }))
            .unwrap_or_default()
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    match &s.details {
        None => {}
        Some(Details::Topic(t)) => {
            let _ = writeln!(
                out,
                "  shape    capacity {}, max message {}, policy {}, history {}",
                t.capacity,
                bytes(t.max_message_size as u64),
                format!("{:?}", t.policy).to_lowercase(),
                t.history
            );
            rows.push(vec![
                "  ROLE".into(),
                "#".into(),
                "PROCESS".into(),
                "SENT/READ".into(),
                "LAG".into(),
                "RATE".into(),
            ]);
            for p in &t.publishers {
                rows.push(vec![
                    "  publisher".into(),
                    p.index.to_string(),
                    alive("publisher", p.index),
                    p.sent.to_string(),
                    "-".into(),
                    r("publisher", p.index),
                ]);
            }
            for c in &t.subscribers {
                rows.push(vec![
                    "  subscriber".into(),
                    c.index.to_string(),
                    alive("subscriber", c.index),
                    c.read.to_string(),
                    c.lag.to_string(),
                    r("subscriber", c.index),
                ]);
            }
        }
        Some(Details::Service(v)) => {
            let _ = writeln!(
                out,
                "  shape    {} calls in flight per client, request ≤ {}, response ≤ {}, stream depth {}",
                v.max_in_flight,
                bytes(v.max_request_size as u64),
                bytes(v.max_response_size as u64),
                v.stream_depth
            );
            let _ = writeln!(
                out,
                "  calls    {} in flight ({} waiting for a server), {} timed out",
                v.clients
                    .iter()
                    .map(|c| c.waiting + c.in_service)
                    .sum::<usize>(),
                v.clients.iter().map(|c| c.waiting).sum::<usize>(),
                v.clients.iter().map(|c| c.timeouts).sum::<u64>()
            );
            rows.push(vec![
                "  ROLE".into(),
                "#".into(),
                "PROCESS".into(),
                "TAKEN".into(),
                "IN FLIGHT".into(),
                "TIMEOUTS".into(),
                "RATE".into(),
            ]);
            for p in s.participants.iter().filter(|p| p.role == "server") {
                rows.push(vec![
                    "  server".into(),
                    p.index.to_string(),
                    alive("server", p.index),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for c in &v.clients {
                rows.push(vec![
                    "  client".into(),
                    c.index.to_string(),
                    alive("client", c.index),
                    c.taken.to_string(),
                    (c.waiting + c.in_service).to_string(),
                    c.timeouts.to_string(),
                    r("client", c.index),
                ]);
            }
        }
        Some(Details::Queue(q)) => {
            let _ = writeln!(
                out,
                "  shape    capacity {}, max message {}, max deliveries {}, visibility {} ms{}",
                q.capacity,
                bytes(q.max_message_size as u64),
                match q.max_deliveries {
                    0 => "unlimited".to_string(),
                    n => n.to_string(),
                },
                q.visibility_timeout.as_millis(),
                q.dead_letter
                    .as_ref()
                    .map(|d| format!(", dead letters to {d}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                out,
                "  messages depth {}, in flight {}, sent {} ({}), redelivered {}, dead-lettered {}, dropped {}, torn {}",
                q.depth, q.in_flight, q.sent, rate(rates.and_then(|r| r.queue_sent)),
                q.redelivered, q.dead_lettered, q.dropped, q.torn
            );
            if let Some(log) = &q.log {
                let _ = writeln!(
                    out,
                    "  log      {}: {} files, {} on disk; {} recoveries (last found {})",
                    log.dir.display(),
                    log.files.len(),
                    bytes(log.disk_bytes),
                    q.recoveries,
                    q.recovered
                );
            }
            rows.push(vec![
                "  ROLE".into(),
                "#".into(),
                "PROCESS".into(),
                "PREFETCH".into(),
                "IN FLIGHT".into(),
                "SYNC".into(),
            ]);
            for p in &q.producers {
                let sync = match sync_str(p.sync) {
                    Value::String(s) => s,
                    _ => "-".into(),
                };
                rows.push(vec![
                    "  producer".into(),
                    p.index.to_string(),
                    alive("producer", p.index),
                    "-".into(),
                    "-".into(),
                    sync,
                ]);
            }
            for c in &q.consumers {
                rows.push(vec![
                    "  consumer".into(),
                    c.index.to_string(),
                    alive("consumer", c.index),
                    c.prefetch.to_string(),
                    c.in_flight.to_string(),
                    "-".into(),
                ]);
            }
        }
    }
    if rows.len() > 1 {
        out.push_str(&table(&rows));
    }
    out
}
