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
use crate::shm::{
    Backing, Header, OpenMode, Region, Segment, SegmentSpec, TypeIdentity,
};

crate::shm::segment_layout!(TopicLayout, KIND_TOPIC, "topic");

/// What a topic opening wants: the layout and payload type it creates the segment with.
struct Spec<'a> {
    layout: &'a TopicLayout,
    ty: &'a TypeIdentity,
}

/// One mapped topic segment and its validated layout.
pub(crate) struct TopicShared {
    pub(crate) seg: Segment,
    pub(crate) layout: TopicLayout,
    pub(crate) name: String,
}

impl SegmentSpec for Spec<'_> {
    type Layout = TopicLayout;

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

    fn segment_len(&self) -> usize {
        self.layout.len
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
}

/// What a handle got when it joined.
pub(crate) enum Joined {
    Publisher(usize, Writer),
    Subscriber(usize, Vec<Reader>),
}

impl TopicShared {
    pub(crate) fn region(&self) -> &Region {
        self.seg.region()
    }

    /// Opens (or creates) topic `name` and registers a publisher or a subscriber in it.
    pub(crate) fn open(
        backing: &Backing,
        name: &str,
        wanted: &TopicLayout,
        ty: &TypeIdentity,
        role: Role,
        mode: OpenMode,
    ) -> Result<(Arc<TopicShared>, Joined), OpenError> {
        let spec = Spec { layout: wanted, ty };
        let (seg, layout, joined) = Segment::open_kind(backing, name, mode, &spec, |r, l| join(r, l, role))?;
        let name = name.to_string();
        Ok((Arc::new(TopicShared { seg, layout, name }), joined))
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

/// Reclaims the entries of dead members, then registers this process as a `role` in the topic
/// of layout `l`. Runs under the lock.
fn join(r: &Region, l: &TopicLayout, role: Role) -> Result<Joined, OpenError> {
    l.reclaim_dead(r);
    match role {
        Role::Publisher => join_publisher(r, l),
        Role::Subscriber => join_subscriber(r, l),
    }
}
