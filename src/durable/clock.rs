//! Record timestamps: real time (nanoseconds since the Unix epoch) to within microseconds, for
//! the cost of reading the CPU's time-stamp counter.
//!
//! Reading `CLOCK_REALTIME` costs about 30 ns here, as much as the rest of a send. Where the
//! CPU's counter runs at a constant rate in every power state (the "invariant TSC" of x86_64),
//! a publisher instead reads the counter (about 9 ns) and converts it with a rate it measured
//! against `CLOCK_REALTIME`: a first rate over 100 µs when the publisher is made (it spins for
//! that long), measured again over its first 10 ms, then every second (re-anchoring also
//! follows steps of the real clock within a second). Between anchors the error is that of the
//! measured rate over the time since the anchor: under 10 µs in the first 10 ms (two clock
//! readings of some 30 ns each, 100 µs apart), microseconds after. Elsewhere (another
//! architecture, a counter that may stop) every stamp reads the real clock.

/// Real time in nanoseconds since the Unix epoch (0 before 1970).
pub(crate) fn realtime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec.max(0) as u64)
}

/// Real time over which a new stamper measures its first rate.
const FIRST_RATE_NS: u64 = 100_000;
/// Counter time from the first anchor to the second, which measures the rate again.
const CALIBRATE_NS: u64 = 10_000_000;
/// Counter time between anchors once it is.
const ANCHOR_EVERY_NS: u64 = 1_000_000_000;

/// One publisher's converter from counter ticks to real time.
#[derive(Debug)]
pub(crate) struct Stamper {
    /// Whether the counter is usable (invariant TSC on x86_64).
    counter: bool,
    /// Counter and real time at the last anchor (0: none yet).
    base_tick: u64,
    base_ns: u64,
    /// Nanoseconds per tick, as a 32.32 fixed-point number (0: not measured yet).
    scale: u64,
    /// Ticks from the base after which to anchor again.
    span: u64,
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn ticks() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU; it reads a counter and touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn ticks() -> u64 {
    0
}

/// Whether the CPU says its time-stamp counter runs at a constant rate in every state (CPUID
/// leaf 0x8000_0007, EDX bit 8; Linux shows it as `nonstop_tsc`).
fn invariant_counter() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0x8000_0000 says which extended leaves exist; 0x8000_0007 is asked for only
        // if it does.
        use core::arch::x86_64::__cpuid;
        __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Stamper {
    /// A converter, with a first rate measured over [`FIRST_RATE_NS`] of real time if the
    /// counter is usable (spinning that long), so that its first stamps read the counter too.
    pub(crate) fn new() -> Stamper {
        let mut s = Stamper {
            counter: invariant_counter(),
            base_tick: 0,
            base_ns: 0,
            scale: 0,
            span: 0,
        };
        if s.counter {
            let (t0, ns0) = pair();
            let (t1, ns1) = loop {
                let (t, ns) = pair();
                if ns < ns0 || t <= t0 {
                    // A step of the real clock, or another CPU's counter: measured later.
                    return s;
                }
                if ns - ns0 >= FIRST_RATE_NS {
                    break (t, ns);
                }
                std::hint::spin_loop();
            };
            s.set_rate(t1 - t0, ns1 - ns0, CALIBRATE_NS);
            (s.base_tick, s.base_ns) = (t1, ns1);
        }
        s
    }

    /// Sets the rate measured as `ns` nanoseconds in `ticks` ticks, and the span to the next
    /// anchor, `next_ns` of real time. Returns false (and gives the counter up) if the rate is
    /// unusable.
    fn set_rate(&mut self, ticks: u64, ns: u64, next_ns: u64) -> bool {
        let scale = ((u128::from(ns) << 32) / u128::from(ticks.max(1))).min(u128::from(u64::MAX >> 1))
            as u64;
        if scale == 0 {
            // A counter far faster than a nanosecond per 2^32 ticks: unusable.
            self.counter = false;
            return false;
        }
        self.scale = scale;
        self.span = ((u128::from(next_ns) << 32) / u128::from(scale)) as u64;
        true
    }

    /// Real time now, in nanoseconds since the Unix epoch.
    #[inline]
    pub(crate) fn now(&mut self) -> u64 {
        if !self.counter {
            return realtime_ns();
        }
        let t = ticks();
        let d = t.wrapping_sub(self.base_tick);
        if self.scale != 0 && d < self.span {
            return self
                .base_ns
                .wrapping_add(((u128::from(d) * u128::from(self.scale)) >> 32) as u64);
        }
        self.anchor()
    }

    /// Reads the real clock and the counter together: measures the rate once an anchor is far
    /// enough back, and starts over if either went backwards (a step of the real clock, or a
    /// counter of another CPU behind this one's).
    #[cold]
    fn anchor(&mut self) -> u64 {
        let (t, ns) = pair();
        let far_enough = self.scale != 0 || ns.saturating_sub(self.base_ns) >= CALIBRATE_NS;
        if self.base_tick == 0 || t <= self.base_tick || ns <= self.base_ns {
            self.base_tick = t;
            self.base_ns = ns;
            self.scale = 0;
        } else if far_enough {
            if !self.set_rate(t - self.base_tick, ns - self.base_ns, ANCHOR_EVERY_NS) {
                return ns;
            }
            self.base_tick = t;
            self.base_ns = ns;
        }
        ns
    }
}

/// The counter and the real clock read together: the narrowest of three tries (the counter is
/// read on both sides of the clock, and the middle taken), so that a preemption between the
/// readings does not skew a rate.
fn pair() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..3 {
        let a = ticks();
        let ns = realtime_ns();
        let b = ticks();
        let width = b.wrapping_sub(a);
        if width < best.0 {
            best = (width, a + width / 2, ns);
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_real_clock_closely() {
        let mut s = Stamper::new();
        let start = realtime_ns();
        let mut last = 0;
        // Long enough to use the first rate, then the one measured over 10 ms.
        while realtime_ns() - start < 3 * CALIBRATE_NS {
            let before = realtime_ns();
            let ts = s.now();
            let after = realtime_ns();
            // Within 100 µs of the real clock around it (microseconds in practice; the
            // margin covers a VM's jitter).
            assert!(ts + 100_000 >= before && ts <= after + 100_000, "{before} {ts} {after}");
            assert!(ts + 100_000 >= last);
            last = ts;
        }
    }
}
