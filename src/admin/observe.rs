//! Reading one segment file as an observer: mapped read-only, judged as an open judges it
//! (without the lock), its members and counters read with loads only.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{counters, Details, Kind, Participant, PayloadType, SegmentInfo, Status};
use crate::queue::layout::QueueLayout;
use crate::service::layout::ServiceLayout;
use crate::shm::entry::Tables;
use crate::shm::{Header, Region, SegmentLayout, HEADER_LEN};
use crate::topic::layout::{PayloadKind, TopicLayout};

/// Segment `name` of `kind` in `dir`, as an observer sees it now. Never fails: what cannot be
/// read is [`Status::Unreadable`] with the reason.
pub(super) fn observe(dir: &Path, kind: Kind, name: &str) -> SegmentInfo {
    let path = dir.join(kind.file(name));
    let mut info = SegmentInfo {
        kind,
        name: name.to_string(),
        path,
        bytes: 0,
        status: Status::Unfinished,
        durable: false,
        payload: None,
        participants: Vec::new(),
        details: None,
    };
    let region = match crate::shm::map_read_only(&info.path) {
        Ok(Some((region, meta))) => {
            info.bytes = meta.len();
            region
        }
        // Removed between the listing and now: nothing left to show but that.
        Ok(None) => {
            info.status = Status::Unreadable("removed while being read".into());
            return info;
        }
        Err(e) => {
            info.status = Status::Unreadable(e.to_string());
            return info;
        }
    };
    match published(&region) {
        Ok(None) => info.status = Status::Unfinished,
        Err(why) => info.status = Status::Unreadable(why),
        Ok(Some(header)) => {
            info.payload = Some(PayloadType {
                name: header.ty.name.clone(),
                size: header.ty.size,
                align: header.ty.align,
                encoding: "",
            });
            if let Err(why) = read_layout(&region, &header, &mut info) {
                info.status = Status::Unreadable(why);
            }
        }
    }
    info
}

/// Judges a mapped segment as `Segment::open` does: `Ok(None)` if it is empty or unpublished
/// (its creator is initialising it, or died doing so), its header if published, the reason if
/// it is not a segment at all.
pub(crate) fn published(r: &Region) -> Result<Option<Header>, String> {
    if r.is_empty() {
        return Ok(None);
    }
    if r.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than a segment header",
            r.len()
        ));
    }
    // Relaxed: only compared with the two values below; the state is read with Acquire next.
    let magic = r.u64_at(0).load(Ordering::Relaxed);
    let ready = Header::state(r) == crate::shm::STATE_READY;
    if !ready && (magic == 0 || magic == crate::shm::MAGIC) {
        return Ok(None);
    }
    if magic != crate::shm::MAGIC {
        return Err(format!("bad magic {magic:#018x}: not a ringbus segment"));
    }
    Header::read(r).map(Some).map_err(|e| e.to_string())
}

/// Reads the layout `header` gives (checked against the file as an open checks it), the members
/// and the counters into `info`.
fn read_layout(r: &Region, header: &Header, info: &mut SegmentInfo) -> Result<(), String> {
    let expected = match info.kind {
        Kind::Topic => TopicLayout::KIND,
        Kind::Service => ServiceLayout::KIND,
        Kind::Queue => QueueLayout::KIND,
    };
    if header.kind != expected {
        return Err(format!(
            "the {} file holds a segment of kind {}",
            info.kind, header.kind
        ));
    }
    let err = |e: crate::OpenError| e.to_string();
    let (encoding, details) = match info.kind {
        Kind::Topic => {
            let l = TopicLayout::from_header(header, r.len()).map_err(err)?;
            info.participants = participants(&l, r);
            (l.kind, Details::Topic(counters::topic(&l, r)))
        }
        Kind::Service => {
            let l = ServiceLayout::from_header(header, r.len()).map_err(err)?;
            info.participants = participants(&l, r);
            // Relaxed: an observer's snapshot.
            let fallbacks = r
                .u64_at(crate::service::layout::CTRL_FALLBACKS)
                .load(Ordering::Relaxed);
            for p in &mut info.participants {
                if p.role == "server" && p.index < 64 && fallbacks & (1u64 << p.index) != 0 {
                    p.role = "fallback server";
                }
            }
            (l.kinds.0, Details::Service(counters::service(&l, r)))
        }
        Kind::Queue => {
            let l = QueueLayout::from_header(header, r.len()).map_err(err)?;
            info.participants = participants(&l, r);
            info.durable = l.durable;
            let log = l.durable.then(|| info.path.with_file_name(format!(
                "{}.log",
                info.kind.file(&info.name)
            )));
            (l.kind, Details::Queue(counters::queue(&l, r, log)))
        }
    };
    if let Some(p) = &mut info.payload {
        p.encoding = encoding_name(encoding);
    }
    info.details = Some(details);
    info.status = if info.participants.iter().any(|p| p.alive) {
        Status::Live
    } else {
        Status::Dead
    };
    Ok(())
}

/// Every taken entry of both member tables of layout `l` (validated against `r`).
pub(super) fn participants<L: Tables>(l: &L, r: &Region) -> Vec<Participant> {
    let mut found = Vec::new();
    for role in L::ROLES {
        let t = l.table(role);
        for index in 0..t.len {
            if let Some(owner) = t.owner(r, index) {
                found.push(Participant {
                    role: t.role,
                    index,
                    pid: owner.pid,
                    alive: owner.is_alive(),
                });
            }
        }
    }
    found
}

fn encoding_name(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::Pod => "pod",
        PayloadKind::Bytes => "bytes",
        PayloadKind::Rkyv => "rkyv",
    }
}
