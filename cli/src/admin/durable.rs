//! Durable topics in the tool: `inspect NAME --dir DIR` shows one (offsets, files, groups), and
//! `group reset` moves a consumer group's commits, as `kafka-consumer-groups --reset-offsets`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ringbus::durable::{self, StartAt, TopicInfo};
use serde_json::json;

use crate::args::fail;

/// Whether `dir` holds a durable topic named `name`.
pub fn exists(dir: &Path, name: &str) -> bool {
    durable::list(dir).is_ok_and(|names| names.iter().any(|n| n == name))
}

/// `inspect NAME --dir DIR` for a durable topic: once, as text or JSON.
pub fn inspect(dir: &Path, name: &str, json_out: bool) -> ExitCode {
    let info = match durable::inspect(dir, name) {
        Ok(i) => i,
        Err(e) => return fail(format_args!("cannot inspect durable topic {name}: {e}")),
    };
    let mut out = std::io::stdout().lock();
    let written = if json_out {
        writeln!(out, "{}", to_json(dir, &info))
    } else {
        write_text(&mut out, dir, &info)
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => fail(format_args!("stdout: {e}")),
        _ => ExitCode::SUCCESS,
    }
}

fn to_json(dir: &Path, info: &TopicInfo) -> serde_json::Value {
    json!({
        "kind": "durable-topic",
        "name": info.name,
        "dir": dir.display().to_string(),
        "max_message_size": info.max_message_size,
        "segment_records": info.segment_records,
        "subscribers": info.subscribers,
        "partitions": info.partitions.iter().enumerate().map(|(k, p)| json!({
            "partition": k,
            "earliest": p.earliest,
            "end": p.end,
            "retained": p.end - p.earliest,
            "files": p.files,
            "disk_bytes": p.bytes,
        })).collect::<Vec<_>>(),
        "groups": info.groups.iter().map(|g| json!({
            "name": g.name,
            "members": g.members,
            "committed": g.committed,
            "lag": g.lag,
            "lost": g.lost,
        })).collect::<Vec<_>>(),
    })
}

fn write_text(out: &mut impl std::io::Write, dir: &Path, info: &TopicInfo) -> std::io::Result<()> {
    writeln!(
        out,
        "durable topic {} in {}: {} partition(s), messages up to {} B, {} records per file, {} live subscriber(s)",
        info.name,
        dir.display(),
        info.partitions.len(),
        info.max_message_size,
        info.segment_records,
        info.subscribers
    )?;
    writeln!(
        out,
        "  partition   earliest        end   retained  files   disk"
    )?;
    for (k, p) in info.partitions.iter().enumerate() {
        writeln!(
            out,
            "  {k:>9} {:>10} {:>10} {:>10} {:>6} {:>5.1} MiB",
            p.earliest,
            p.end,
            p.end - p.earliest,
            p.files,
            p.bytes as f64 / (1 << 20) as f64
        )?;
    }
    if info.groups.is_empty() {
        writeln!(out, "  no consumer group")?;
    }
    for g in &info.groups {
        let committed: Vec<String> = g
            .committed
            .iter()
            .map(|c| c.map_or("-".into(), |c| c.to_string()))
            .collect();
        writeln!(
            out,
            "  group {}: {} live member(s), committed [{}], lag {}{}",
            g.name,
            g.members,
            committed.join(", "),
            g.lag,
            if g.lost > 0 {
                format!(", {} lost to retention", g.lost)
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// `ringbus group`.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// Set where a consumer group of a durable topic resumes, in every partition (its members
    /// must be stopped)
    Reset(ResetArgs),
}

/// `ringbus group reset`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "TO is `earliest` (the oldest retained message), `latest` (after the \
    newest), an offset (the same in every partition, clamped to what is retained), a time in \
    RFC 3339 (2026-12-04T18:00:00Z: the first message stamped at or after it), or a duration \
    ago (-15m, -2h). Refused while a member of the group is alive."
)]
pub struct ResetArgs {
    /// The consumer group
    pub group: String,
    /// The durable topic
    #[arg(long, value_name = "NAME")]
    pub topic: String,
    /// The directory the topic lives in (as given to `.durable(dir)`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Where to resume: earliest, latest, OFFSET, TIME or -DURATION
    #[arg(long, value_name = "TO", value_parser = parse_to, allow_hyphen_values = true)]
    pub to: StartAt,
    /// JSON on stdout: {"group", "topic", "committed": [...]}
    #[arg(long)]
    pub json: bool,
}

/// A `--to` value.
fn parse_to(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" => return Ok(StartAt::Earliest),
        "latest" => return Ok(StartAt::Latest),
        _ => {}
    }
    if let Ok(o) = s.parse::<u64>() {
        return Ok(StartAt::Offset(o));
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d: Duration =
            humantime::parse_duration(ago).map_err(|e| format!("{s}: not a duration ago ({e})"))?;
        return SystemTime::now()
            .checked_sub(d)
            .map(StartAt::Time)
            .ok_or_else(|| format!("{s}: before the epoch"));
    }
    humantime::parse_rfc3339_weak(s)
        .map(StartAt::Time)
        .map_err(|e| {
            format!("{s}: not earliest, latest, an offset, an RFC 3339 time or -DURATION ({e})")
        })
}

/// Runs `ringbus group ...`.
pub fn main(cmd: &GroupCommand) -> ExitCode {
    let GroupCommand::Reset(a) = cmd;
    if !exists(&a.dir, &a.topic) {
        return fail(format_args!(
            "no durable topic named {} in {}",
            a.topic,
            a.dir.display()
        ));
    }
    match durable::reset_group(&a.dir, &a.topic, &a.group, a.to) {
        Ok(set) => {
            if a.json {
                println!(
                    "{}",
                    json!({"group": a.group, "topic": a.topic, "committed": set})
                );
            } else {
                println!(
                    "group {} of durable topic {} resumes at {:?}",
                    a.group, a.topic, set
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("cannot reset group {}: {e}", a.group)),
    }
}
