//! Behaviour at the limits, in one process (in-process backing and shared memory alike).

use std::time::Duration;

use ringbus::{topic::Policy, Node, OpenError, ReceiveError, SendError};

fn nodes(test: &str) -> Vec<Node> {
    let root = std::env::temp_dir().join(format!("ringbus-test-{}-{test}", std::process::id()));
    vec![Node::in_process(), Node::with_root(root).unwrap()]
}

#[test]
fn holding_more_than_allowed_is_an_error_and_release_frees_it() {
    for node in nodes("held") {
        let t = node.topic::<u32>("held").capacity(8).max_held(2);
        let mut p = t.publisher().unwrap();
        let s = t.subscriber().unwrap();
        for i in 0..3 {
            p.send_copy(&i).unwrap();
        }
        let a = s.try_receive().unwrap();
        let b = s.try_receive().unwrap();
        assert_eq!(s.try_receive().err(), Some(ReceiveError::TooManyHeld(2)));
        assert_eq!((*a, *b), (0, 1));
        drop(a);
        assert_eq!(*s.try_receive().unwrap(), 2);
        drop(b);
    }
}

#[test]
fn held_samples_are_never_overwritten_and_all_pinned_is_an_error() {
    for node in nodes("pinned") {
        let t = node
            .topic::<u64>("pinned")
            .capacity(2)
            .max_held(2)
            .max_subscribers(1)
            .policy(Policy::DropOldest);
        let mut p = t.publisher().unwrap();
        let s = t.subscriber().unwrap();
        p.send_copy(&10).unwrap();
        p.send_copy(&11).unwrap();
        let a = s.try_receive().unwrap();
        let b = s.try_receive().unwrap();
        // Both slots are held: the publisher must not overwrite them.
        assert_eq!(p.send_copy(&12), Err(SendError::AllSlotsHeld));
        assert_eq!((*a, *b), (10, 11), "held samples unchanged");
        drop((a, b));
        p.send_copy(&13).unwrap();
        assert_eq!(*s.try_receive().unwrap(), 13);
    }
}

#[test]
fn block_full_timeout_and_drop_oldest_never_waits() {
    for node in nodes("full") {
        let t = node
            .topic::<u8>("full")
            .capacity(4)
            .send_timeout(Duration::from_millis(20));
        let mut p = t.publisher().unwrap();
        let _s = t.subscriber().unwrap();
        for i in 0..4 {
            p.send_copy(&i).unwrap();
        }
        assert_eq!(p.try_loan().err(), Some(SendError::Full));
        assert_eq!(
            p.send_copy(&9),
            Err(SendError::Timeout(Duration::from_millis(20)))
        );

        let t = node
            .topic::<u8>("lossy")
            .capacity(4)
            .policy(Policy::DropOldest);
        let mut p = t.publisher().unwrap();
        let s = t.subscriber().unwrap();
        for i in 0..100 {
            p.send_copy(&i).unwrap();
        }
        assert!(matches!(s.try_receive().err(), Some(ReceiveError::Lagged(n)) if n > 90));
        assert!(*s.try_receive().unwrap() > 90);
    }
}

#[test]
fn oversized_dropped_loans_timeouts_and_bad_options() {
    for node in nodes("limits") {
        let t = node.topic_bytes("limits").max_message_size(16);
        let mut p = t.publisher().unwrap();
        let s = t.subscriber().unwrap();
        assert_eq!(
            p.loan(17).err(),
            Some(SendError::TooLarge { len: 17, max: 16 })
        );
        drop(p.loan(3).unwrap()); // dropped unsent: never delivered
        p.send_copy(b"kept").unwrap();
        assert_eq!(&*s.try_receive().unwrap(), b"kept");
        assert_eq!(
            s.receive_timeout(Duration::from_millis(5)).err(),
            Some(ReceiveError::Timeout(Duration::from_millis(5)))
        );
        for bad in [
            node.topic::<u8>("bad").capacity(3),
            node.topic::<u8>("bad").max_held(7),
        ] {
            assert!(matches!(bad.publisher(), Err(OpenError::InvalidConfig(_))));
        }
        let full = node.topic::<u8>("few").max_subscribers(1);
        let _one = full.subscriber().unwrap();
        assert!(matches!(
            full.subscriber(),
            Err(OpenError::NoFreeEntry { .. })
        ));
    }
}

#[test]
fn blocking_receive_is_woken_by_a_publisher_thread() {
    for node in nodes("wake") {
        let t = node.topic::<u64>("wake").spin_before_sleep(Duration::ZERO);
        // Two subscribers asleep on the same futex word: every publish must wake both.
        let s = t.subscriber().unwrap();
        let s2 = t.subscriber().unwrap();
        let mut p = t.publisher().unwrap();
        let other = std::thread::spawn(move || {
            for i in 0..1000 {
                assert_eq!(*s2.receive().unwrap(), i);
            }
        });
        let sender = std::thread::spawn(move || {
            for i in 0..1000 {
                p.send_copy(&i).unwrap();
            }
        });
        for i in 0..1000 {
            assert_eq!(*s.receive().unwrap(), i);
        }
        sender.join().unwrap();
        other.join().unwrap();
    }
}

#[test]
fn wake_system_calls_only_when_a_subscriber_sleeps() {
    for node in nodes("syscalls") {
        let t = node.topic::<u64>("syscalls").capacity(64);
        let mut p = t.publisher().unwrap();
        let s = t.subscriber().unwrap();
        // The subscriber never sleeps (try_receive): no wake-up call at all.
        for i in 0..10_000 {
            p.send_copy(&i).unwrap();
            assert_eq!(*s.try_receive().unwrap(), i);
        }
        assert_eq!(p.wake_calls(), 0);
        // A subscriber asleep in receive() is woken by a system call.
        let sleeper = std::thread::spawn(move || *s.receive().unwrap());
        // Wait (without sleeping blindly) until its bit says it is asleep, then send.
        while !p.has_sleeping_subscriber() {
            std::thread::yield_now();
        }
        p.send_copy(&7).unwrap();
        assert_eq!(sleeper.join().unwrap(), 7);
        assert_eq!(p.wake_calls(), 1);
    }
}

/// A skipped position (here: loans dropped unsent) rings nobody, yet a `Block` writer must wait
/// for a subscriber asleep before it to pass it. The writer that finds no room rings the news
/// bell, so that subscriber wakes, passes the skips and makes room. (Without that ring both
/// slept until the subscriber's nap: 100 ms for `receive`, 5 s for `receive_async`.)
#[test]
fn a_writer_without_room_wakes_a_subscriber_asleep_before_skipped_positions() {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    struct Flag(AtomicBool, std::thread::Thread);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
            self.1.unpark();
        }
    }

    for node in nodes("skip-wake") {
        let t = node
            .topic::<u32>("skip-wake")
            .capacity(4)
            .spin_before_sleep(Duration::ZERO);
        let mut p = t.publisher().unwrap();
        let mut s = t.subscriber().unwrap();
        for i in 0..4 {
            p.send_copy(&i).unwrap();
            assert_eq!(*s.try_receive().unwrap(), i);
        }
        // The subscriber waits at position 4, parked in the waiter.
        let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
        let waker = Waker::from(flag.clone());
        let mut waiting = Box::pin(s.receive_async());
        let mut cx = Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        // Positions 4 to 7 are claimed and abandoned: skipped, no message, no ring.
        for _ in 0..4 {
            drop(p.try_loan().unwrap());
        }
        let rings = p.wake_calls();
        // Position 8 reuses the slot of 4, which the subscriber has not passed: no room, and
        // the writer rings the sleeping subscriber.
        assert_eq!(p.try_loan().err(), Some(SendError::Full));
        assert_eq!(p.wake_calls(), rings + 1, "the writer rang");
        assert_eq!(p.try_loan().err(), Some(SendError::Full));
        assert_eq!(p.wake_calls(), rings + 1, "once per position it stopped at");
        // The subscriber is woken by that ring: its own nap is 5 s, past this bound.
        let end = std::time::Instant::now() + Duration::from_secs(2);
        while !flag.0.load(Ordering::SeqCst) && std::time::Instant::now() < end {
            std::thread::park_timeout(Duration::from_millis(10));
        }
        assert!(flag.0.load(Ordering::SeqCst), "the subscriber was woken");
        // Polled, it passes the skips (still nothing to read) and so makes room.
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(waiting);
        p.send_copy(&8).unwrap();
        assert_eq!(*s.try_receive().unwrap(), 8);
    }
}

/// Losses a relay reports (`Publisher::report_lost`) are added to each subscriber's lag, also
/// when the message that carried a report was itself overwritten before the subscriber read
/// it: every gap in what a subscriber reads equals the lag it was told.
#[test]
fn reported_upstream_losses_count_even_when_their_message_is_missed() {
    for node in nodes("upstream-lost") {
        let topic = node
            .topic::<u64>("lost")
            .capacity(4)
            .policy(Policy::DropOldest);
        let mut relay = topic.publisher().unwrap();
        let subscriber = topic.subscriber().unwrap();
        relay.send_copy(&0).unwrap();
        assert_eq!(*subscriber.try_receive().unwrap(), 0);
        // Upstream, 1 and 2 were lost; 3 reaches us.
        relay.report_lost(2);
        relay.send_copy(&3).unwrap();
        assert_eq!(
            subscriber.try_receive().err(),
            Some(ReceiveError::Lagged(2))
        );
        assert_eq!(*subscriber.try_receive().unwrap(), 3);
        // 4..=11 are sent with reports of 12..=19 lost in between; the subscriber, reading
        // nothing meanwhile, misses the oldest of them here as well.
        let mut seq = 4;
        for _ in 0..8 {
            relay.send_copy(&seq).unwrap();
            relay.report_lost(1);
            seq += 2;
        }
        relay.send_copy(&seq).unwrap();
        let (mut expected, mut lag) = (4, 0);
        loop {
            match subscriber.try_receive() {
                Err(ReceiveError::Lagged(n)) => lag += n,
                Ok(m) => {
                    assert_eq!(*m - expected, lag, "a gap before {}", *m);
                    expected = *m + 1;
                    lag = 0;
                }
                Err(ReceiveError::Empty) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(expected, seq + 1, "the last message read");
    }
}
