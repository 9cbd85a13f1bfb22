//! A writer's helper thread, which gets the file ready before the writer reaches it.
//!
//! A record written into a page the file has not got yet costs a page fault: the kernel
//! allocates and zeroes a page-cache page, the file system reserves its block, and the page is
//! mapped. About 3 µs a 4 KiB page here, so a writer of 128-byte records spends most of an
//! append in the kernel (measured with `ringbus bench durable`: 64 B appends at 5.9 M msgs/s
//! with the writer populating its own chunks, 7.8 to 10.2 M with this thread doing it). The writer
//! hands two kinds of work to this thread instead:
//! - **populate** a chunk of the current segment file, the one after the chunk that follows the
//!   one it just entered ([`Pretouch`], from `LogSegment::seal`);
//! - **make** the next segment file, once half of the current one is written.
//!
//! Both are hints. A chunk not populated yet when the writer gets there is faulted in by the
//! writer's own stores; a file not made yet is made by the writer when it needs it (two makers
//! of one file are resolved by the log: one links it, the other opens it). The writer never
//! waits for this thread, and the thread never touches a record.
//!
//! One thread per writer handle, started at its first job and joined when the handle drops, so
//! no work outlives the handle (a caller that drops its publisher and removes the directory
//! does not race a file being made in it). It inherits the CPU affinity of the thread that
//! started it. On a machine with no spare CPU it runs in the time of busy threads, a context
//! switch each time it wakes, which shows in their latency tails: a durable topic turns it off
//! with `DurableTopicBuilder::helper_thread(false)`. A job is a push under a mutex and a condition-variable notify, once per
//! chunk (256 KiB of records) and once per segment file: not per message. Pending jobs are
//! bounded ([`PENDING`]); one more is run by the writer itself (it never queues without bound
//! and never allocates after the start).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::segment::Pretouch;
use super::Log;

/// Jobs of each kind that may wait at once; a writer that finds the queue full runs its job
/// itself.
const PENDING: usize = 4;

/// The helper thread of one writer handle (see the module documentation).
#[derive(Debug)]
pub(crate) struct Ahead {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    jobs: Mutex<Jobs>,
    /// Notified when a job is pushed, or the thread is told to stop.
    wake: Condvar,
    /// Notified when the thread has run every job pushed (for tests).
    idle: Condvar,
}

#[derive(Debug)]
struct Jobs {
    populate: Vec<Pretouch>,
    make: Vec<(Arc<Log>, u64)>,
    /// The thread is running jobs it took from the lists.
    busy: bool,
    stop: bool,
}

impl Jobs {
    fn new() -> Jobs {
        Jobs {
            populate: Vec::with_capacity(PENDING),
            make: Vec::with_capacity(PENDING),
            busy: false,
            stop: false,
        }
    }
}

impl Ahead {
    /// Starts the thread; `None` if it cannot be started (the writer then does its own jobs).
    pub(crate) fn start() -> Option<Ahead> {
        let state = Arc::new(State {
            jobs: Mutex::new(Jobs::new()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("ringbus-ahead".into())
            .spawn(move || st.serve())
            .ok()?;
        Some(Ahead {
            state,
            thread: Some(thread),
        })
    }

    /// Populates a chunk on the thread (or here, if too many wait).
    pub(crate) fn populate(&self, p: Pretouch) {
        let mut jobs = self.state.lock();
        if jobs.populate.len() < PENDING {
            jobs.populate.push(p);
            drop(jobs);
            self.state.wake.notify_one();
        } else {
            drop(jobs);
            p.run();
        }
    }

    /// Makes (or maps) the segment file of `log` based at `base` on the thread (or here, if too
    /// many wait). Best effort: a failure is met again, and reported, by the writer when it
    /// needs the file.
    pub(crate) fn make(&self, log: Arc<Log>, base: u64) {
        let mut jobs = self.state.lock();
        if jobs.make.len() < PENDING {
            jobs.make.push((log, base));
            drop(jobs);
            self.state.wake.notify_one();
        } else {
            drop(jobs);
            let _ = log.segment(base, true);
        }
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        // A panic on the thread cannot leave the job lists half changed (pushes and swaps).
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread: waits for jobs and runs them, populates first (the writer is nearer to
    /// them), until told to stop; jobs still waiting then are dropped (hints).
    fn serve(&self) {
        let mut todo = Jobs::new();
        loop {
            {
                let mut jobs = self.lock();
                jobs.busy = false;
                while !jobs.stop && jobs.populate.is_empty() && jobs.make.is_empty() {
                    self.idle.notify_all();
                    jobs = self.wake.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
                if jobs.stop {
                    return;
                }
                // Swapped, not moved: both lists keep their capacity, so no job allocates.
                std::mem::swap(&mut jobs.populate, &mut todo.populate);
                std::mem::swap(&mut jobs.make, &mut todo.make);
                jobs.busy = true;
            }
            for p in todo.populate.drain(..) {
                p.run();
            }
            for (log, base) in todo.make.drain(..) {
                let _ = log.segment(base, true);
            }
        }
    }
}

#[cfg(test)]
impl Ahead {
    /// Waits until the thread has run every job pushed so far.
    fn wait_idle(&self) {
        let mut jobs = self.state.lock();
        while jobs.busy || !jobs.populate.is_empty() || !jobs.make.is_empty() {
            jobs = self.state.idle.wait(jobs).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.state.lock().stop = true;
        self.state.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // The job running finishes first (a bounded system call or file creation).
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogShape;

    const SHAPE: LogShape = LogShape {
        records: 8,
        max_payload: 48,
    };

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ringbus-ahead-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_file_made_ahead_is_a_whole_segment_the_writer_then_finds() {
        let dir = tmp("make");
        let log = Arc::new(Log::open(&dir, SHAPE).unwrap());
        let ahead = Ahead::start().unwrap();
        ahead.make(log.clone(), 8);
        ahead.wait_idle();
        // Linked under its final name, with a valid header (a fresh open maps and checks it).
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![format!("{:020}.seg", 8)]);
        let again = Log::open(&dir, SHAPE).unwrap();
        assert_eq!(again.segment(8, false).unwrap().base(), 8);
        // The writer's lookup finds the same mapping the thread made.
        let made = log.segment(8, false).unwrap();
        assert!(Arc::ptr_eq(&made, &log.segment(8, true).unwrap()));
        drop(ahead);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_populated_chunk_keeps_every_record_and_dropping_the_helper_joins_it() {
        let dir = tmp("populate");
        let log = Arc::new(Log::open(&dir, SHAPE).unwrap());
        let seg = log.segment(0, true).unwrap();
        let ahead = Ahead::start().unwrap();
        for o in 0..8u64 {
            let p = seg.payload_ptr(o, 8);
            // SAFETY: 8 bytes inside record o's payload area; this test is its only writer.
            unsafe { std::ptr::copy_nonoverlapping(o.to_le_bytes().as_ptr(), p, 8) };
            // Every record of this tiny file is in its first chunk: the first one is due.
            if let Some(job) = seg.seal(o, 8) {
                ahead.populate(job);
            }
        }
        ahead.wait_idle();
        for o in 0..8u64 {
            match seg.read(o) {
                crate::log::Record::Valid(b) => assert_eq!(b, o.to_le_bytes()),
                _ => panic!("record {o} not valid"),
            }
        }
        // Joined: nothing of it runs after the drop, so the directory goes away whole.
        drop(ahead);
        drop(seg);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
