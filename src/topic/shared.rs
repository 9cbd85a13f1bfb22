//! A topic segment shared by the handles of one process: joining, leaving, reclaiming the dead.
//!
//! Joins, leaves and reclaims run under the segment lock, so the tables never see two of them at
//! once; a participant that dies inside one leaves an entry whose owner is dead, which the next
//! one reclaims. The hot path (send, receive) never takes the lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::layout::*;
use crate::error::OpenError;
use crate::ring::broadcast::{Cells, Reader, Writer, NONE};
use crate::shm::entry::{self, Members};
use crate::shm::{Backing, Header, OpenMode, Region, Segment, SegmentSpec, TypeIdentity};

/// One mapped topic segment and its validated layout.
pub(crate) struct TopicShared {
    pub(crate) seg: Segment,
    pub(crate) layout: TopicLayout,
    pub(crate) name: String,
}

struct Spec<'a> {
    layout: &'a TopicLayout,
    ty: &'a TypeIdentity,
}

impl SegmentSpec for Spec<'_> {
    fn segment_len(&self) -> usize {
        self.layout.len
    }

    fn init(&self, r: &Region) -> Result<(), OpenError> {
        self.layout.header(self.ty.clone()).write(r)?;
        for s in 0..self.layout.max_subscribers {
            for p in 0..self.layout.max_publishers {
                let c = self.layout.cells(r, p);
                for h in 0..self.layout.max_held {
                    // Relaxed: the segment is published with Release after init.
                    c.held(s, h).store(NONE, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn check_layout(&self, r: &Region, h: &Header) -> Result<(), OpenError> {
        if h.kind != KIND_TOPIC {
            return Err(OpenError::Corrupt(format!(
                "a topic file holds segment kind {}",
                h.kind
            )));
        }
        TopicLayout::from_header(h, r.len()).map(|_| ())
    }

    fn check_type(&self, h: &Header) -> Result<(), OpenError> {
        let kind = h.config[7];
        if h.ty != *self.ty || kind != self.layout.kind as u64 {
            return Err(OpenError::TypeMismatch {
                expected: self.ty.to_string(),
                found: h.ty.to_string(),
            });
        }
        Ok(())
    }

    fn has_live_participants(&self, r: &Region) -> bool {
        // The layout is the one found in the header (checked equal in length by `check`).
        let Ok(h) = Header::read(r) else { return false };
        TopicLayout::from_header(&h, r.len()).is_ok_and(|l| l.any_live(r))
    }
}

/// What a handle got when it joined.
pub(crate) enum Joined {
    Publisher(usize, Writer),
    Subscriber(usize, Vec<Reader>),
}

impl TopicShared {
    /// Opens (or creates) topic `name` and registers a publisher or a subscriber in it.
    pub(crate) fn open(
        backing: &Backing,
        name: &str,
        wanted: &TopicLayout,
        ty: &TypeIdentity,
        role: Role,
        mode: OpenMode,
    ) -> Result<(Arc<TopicShared>, Joined), OpenError> {
        crate::shm::validate_name(name)?;
        let file = format!("topic_{name}");
        let spec = Spec { layout: wanted, ty };
        let (seg, (layout, joined)) = Segment::open(backing, &file, mode, &spec, |r| {
            let h = Header::read(r)?;
            let layout = TopicLayout::from_header(&h, r.len())?;
            layout.reclaim_dead(r);
            let joined = match role {
                Role::Publisher => join_publisher(r, &layout)?,
                Role::Subscriber => join_subscriber(r, &layout)?,
            };
            Ok((layout, joined))
        })?;
        Ok((
            Arc::new(TopicShared {
                seg,
                layout,
                name: name.to_string(),
            }),
            joined,
        ))
    }

    pub(crate) fn region(&self) -> &Region {
        self.seg.region()
    }

    /// Member `i` of `role` leaves; the segment's name is removed if nobody live is left.
    pub(crate) fn leave(&self, role: Role, i: usize) {
        entry::leave(&self.seg, &self.layout, role, i);
    }

    /// If subscriber `s` is registered to a dead process, reclaims it (if the lock is free).
    /// Returns whether it was reclaimed.
    pub(crate) fn reclaim_subscriber_if_dead(&self, s: usize) -> bool {
        entry::reclaim_if_dead(&self.seg, &self.layout, Role::Subscriber, s)
    }

    /// Frees the entries of dead publishers and subscribers, if the lock is free now. Housekeeping
    /// for the hot paths, which call it rarely (rate-limited by their callers).
    #[cold]
    pub(crate) fn reclaim_dead(&self) {
        entry::reclaim_dead_now(&self.seg, &self.layout);
    }
}

fn join_publisher(r: &Region, l: &TopicLayout) -> Result<Joined, OpenError> {
    let p = l.join(r, Role::Publisher)?;
    let writer = Writer::adopt(&l.cells(r, p), l.max_subscribers);
    // Release: subscribers that see the bit (Acquire) poll this ring from now on; set before the
    // first commit. Never cleared: a later publisher of this entry continues the ring.
    r.u64_at(CTRL_RINGS_USED)
        .fetch_or(1u64 << p, Ordering::Release);
    Ok(Joined::Publisher(p, writer))
}

fn join_subscriber(r: &Region, l: &TopicLayout) -> Result<Joined, OpenError> {
    let s = l.join(r, Role::Subscriber)?;
    let mut readers = Vec::with_capacity(l.max_publishers);
    for p in 0..l.max_publishers {
        let c = l.cells(r, p);
        let reader = Reader::new(&c, l.history as u64);
        // SeqCst: the cursor must be in place before the active bit below makes writers read it.
        c.cursor(s).store(reader.position(), Ordering::SeqCst);
        for h in 0..l.max_held {
            c.held(s, h).store(NONE, Ordering::SeqCst);
        }
        readers.push(reader);
    }
    // SeqCst: the join half of the roster handshake (ring::broadcast docs).
    r.u64_at(CTRL_ACTIVE).fetch_or(1u64 << s, Ordering::SeqCst);
    r.u64_at(CTRL_ROSTER).fetch_add(1, Ordering::SeqCst);
    // Past what each writer may overwrite without having seen the join (invariant 4).
    for (p, reader) in readers.iter_mut().enumerate() {
        reader.joined(&l.cells(r, p), s);
    }
    Ok(Joined::Subscriber(s, readers))
}
