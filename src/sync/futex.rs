//! A futex on a 32-bit word of shared memory, without `FUTEX_PRIVATE_FLAG`.
//!
//! A shared futex is keyed by the backing page of the word, so a `wake` in one process wakes a
//! waiter in another that maps the same file. (std's and `atomic-wait`'s futexes are private and
//! would never wake another process.) It works on process-private memory too.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Sleeps while `*word == expected`, for at most `timeout`. Returns on wake, on timeout, on a
/// signal, or at once if the word already differs: callers always recheck their condition.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // Errors (EAGAIN: the value changed, ETIMEDOUT, EINTR) all mean "recheck", which callers do.
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes every waiter on `word`.
pub fn wake_all(word: &AtomicU32) {
    wake(word, i32::MAX as u32);
}

/// Wakes at most `n` waiters on `word`.
pub fn wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn wait_returns_when_value_differs() {
        let w = AtomicU32::new(1);
        // Must not sleep: the value is not the expected one.
        wait(&w, 0, Duration::from_secs(3600));
    }

    #[test]
    fn wake_releases_a_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            // Acquire/Release: the flag hands over nothing but itself; kept paired for clarity.
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Duration::from_secs(3600));
            }
        });
        // Release: pairs with the waiter's Acquire load.
        w.store(1, Ordering::Release);
        wake_all(&w);
        t.join().unwrap();
    }
}
