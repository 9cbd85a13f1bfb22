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
use crate::shm::entry::{
    abandon_entry, claim_entry, entry_alive, find_free, ACTIVE, ENTRY_OWNER, ENTRY_STATE, FREE,
};
use crate::shm::{Backing, Header, OpenMode, Region, Segment, SegmentSpec, TypeIdentity};
use crate::sync::{futex, ProcessId};

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
        let Ok(l) = TopicLayout::from_header(&h, r.len()) else {
            return false;
        };
        let live = |off: usize| {
            // Acquire: pairs with the Release store of ACTIVE after the owner was written.
            // Acquire/Relaxed: as in `any_live` and `entry_alive` below.
            r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) == ACTIVE
                && ProcessId::unpack(r.u64_at(off + ENTRY_OWNER).load(Ordering::Relaxed)).is_alive()
        };
        (0..l.max_publishers).any(|p| live(l.pub_entry(p)))
            || (0..l.max_subscribers).any(|s| live(l.sub_entry(s)))
    }
}

/// What a handle got when it joined.
pub(crate) enum Joined {
    Publisher(usize, Writer),
    Subscriber(usize, Vec<Reader>),
}

/// Which table to join.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    Publisher,
    Subscriber,
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
            reclaim_dead(r, &layout);
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

    /// Removes publisher `p`; removes the segment's name if nobody live is left.
    pub(crate) fn leave_publisher(&self, p: usize) {
        let off = self.layout.pub_entry(p);
        self.seg.leave(
            |r| {
                free_publisher(r, &self.layout, p);
                !any_live(r, &self.layout)
            },
            |r| abandon_entry(r, off),
        );
    }

    /// Removes subscriber `s`; removes the segment's name if nobody live is left.
    pub(crate) fn leave_subscriber(&self, s: usize) {
        let off = self.layout.sub_entry(s);
        self.seg.leave(
            |r| {
                free_subscriber(r, &self.layout, s);
                !any_live(r, &self.layout)
            },
            |r| abandon_entry(r, off),
        );
    }

    /// If subscriber `s` is registered to a dead process, reclaims it (under the lock). Returns
    /// whether it was reclaimed.
    pub(crate) fn reclaim_subscriber_if_dead(&self, s: usize) -> bool {
        let r = self.region();
        if entry_alive(r, self.layout.sub_entry(s)) {
            return false;
        }
        let Some(_guard) = self.seg.try_lock() else {
            return false;
        };
        let off = self.layout.sub_entry(s);
        // Recheck under the lock: someone else may have reclaimed it, or a new owner joined.
        if r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) == ACTIVE && !entry_alive(r, off) {
            free_subscriber(r, &self.layout, s);
            true
        } else {
            false
        }
    }

    /// Frees the entries of dead publishers and subscribers, if the lock is free now. Housekeeping
    /// for the hot paths, which call it rarely (rate-limited by their callers).
    #[cold]
    pub(crate) fn reclaim_dead(&self) {
        if let Some(_guard) = self.seg.try_lock() {
            reclaim_dead(self.region(), &self.layout);
        }
    }

    /// Wakes every sleeping subscriber (after a commit, if `subs_waiting` was non-zero). Each
    /// subscriber clears its own bit when it wakes, so a publisher that is delayed between its
    /// check and its wake cannot hide a sleeper from the next publisher.
    #[cold]
    pub(crate) fn wake_subscribers(&self) {
        let r = self.region();
        // SeqCst: a subscriber that read the old value before sleeping gets EAGAIN or the wake.
        r.u32_at(CTRL_WAKE_SEQ).fetch_add(1, Ordering::SeqCst);
        futex::wake_all(r.u32_at(CTRL_WAKE_SEQ));
    }

    /// Wakes every publisher blocked for room.
    #[cold]
    pub(crate) fn wake_publishers(&self) {
        let r = self.region();
        // SeqCst: as in `wake_subscribers`.
        r.u32_at(CTRL_SPACE_SEQ).fetch_add(1, Ordering::SeqCst);
        futex::wake_all(r.u32_at(CTRL_SPACE_SEQ));
    }
}

fn any_live(r: &Region, l: &TopicLayout) -> bool {
    let live = |off: usize| {
        // Acquire: pairs with the Release store of ACTIVE.
        r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) == ACTIVE && entry_alive(r, off)
    };
    (0..l.max_publishers).any(|p| live(l.pub_entry(p)))
        || (0..l.max_subscribers).any(|s| live(l.sub_entry(s)))
}

/// Frees every entry whose owner died. Runs under the lock.
fn reclaim_dead(r: &Region, l: &TopicLayout) {
    for p in 0..l.max_publishers {
        let off = l.pub_entry(p);
        // Acquire: pairs with the Release store of the entry's state (under the lock anyway).
        if r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) != FREE && !entry_alive(r, off) {
            free_publisher(r, l, p);
        }
    }
    for s in 0..l.max_subscribers {
        let off = l.sub_entry(s);
        // Acquire: as above.
        if r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) != FREE && !entry_alive(r, off) {
            free_subscriber(r, l, s);
        }
    }
}

fn join_publisher(r: &Region, l: &TopicLayout) -> Result<Joined, OpenError> {
    let p = find_free(r, (0..l.max_publishers).map(|p| (p, l.pub_entry(p)))).ok_or(
        OpenError::NoFreeEntry {
            role: "publisher",
            max: l.max_publishers,
        },
    )?;
    claim_entry(r, l.pub_entry(p));
    let writer = Writer::adopt(&l.cells(r, p), l.max_subscribers);
    // Release: subscribers that see the bit (Acquire) poll this ring from now on; set before the
    // first commit. Never cleared: a later publisher of this entry continues the ring.
    r.u64_at(CTRL_RINGS_USED)
        .fetch_or(1u64 << p, Ordering::Release);
    Ok(Joined::Publisher(p, writer))
}

fn free_publisher(r: &Region, l: &TopicLayout, p: usize) {
    // SeqCst/Release: ordinary bookkeeping under the lock; the ring keeps its tail and stamps so
    // the next publisher of this entry continues its positions.
    r.u64_at(CTRL_PUBS_WAITING)
        .fetch_and(!(1u64 << p), Ordering::SeqCst);
    r.u64_at(l.pub_entry(p) + ENTRY_STATE)
        .store(FREE, Ordering::Release);
}

fn join_subscriber(r: &Region, l: &TopicLayout) -> Result<Joined, OpenError> {
    let s = find_free(r, (0..l.max_subscribers).map(|s| (s, l.sub_entry(s)))).ok_or(
        OpenError::NoFreeEntry {
            role: "subscriber",
            max: l.max_subscribers,
        },
    )?;
    claim_entry(r, l.sub_entry(s));
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

fn free_subscriber(r: &Region, l: &TopicLayout, s: usize) {
    let bit = 1u64 << s;
    // SeqCst: the leave half of the roster handshake; a writer waiting on this subscriber is woken
    // below and rereads the active bitmap.
    r.u64_at(CTRL_ACTIVE).fetch_and(!bit, Ordering::SeqCst);
    r.u64_at(CTRL_SUBS_WAITING)
        .fetch_and(!bit, Ordering::SeqCst);
    for p in 0..l.max_publishers {
        let c = l.cells(r, p);
        for h in 0..l.max_held {
            c.held(s, h).store(NONE, Ordering::SeqCst);
        }
    }
    r.u64_at(CTRL_ROSTER).fetch_add(1, Ordering::SeqCst);
    // Release: the cleared pins and bits above are visible to whoever claims the entry next.
    r.u64_at(l.sub_entry(s) + ENTRY_STATE)
        .store(FREE, Ordering::Release);
    // A publisher blocked on this subscriber must re-evaluate now.
    r.u32_at(CTRL_SPACE_SEQ).fetch_add(1, Ordering::SeqCst);
    futex::wake_all(r.u32_at(CTRL_SPACE_SEQ));
}
