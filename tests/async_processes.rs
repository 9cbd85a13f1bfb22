//! The async receives (`Subscriber::receive_async`, `Consumer::receive_async`) and room waits
//! (`Publisher::loan_async` / `send_copy_async`, `Producer::send_async` / `loan_async`) in tokio
//! tasks, with peers in other processes (child roles of this same test binary, see `common`) or
//! many tasks in one process: order, no loss, cancel safety, a peer killed while futures wait,
//! and no registration left behind.

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use futures::TryFutureExt;
use ringbus::queue::Policy;
use ringbus::testing::live_registrations;
use ringbus::Node;

/// A sender's pause of `micros` between messages (none at 0): paced senders leave the
/// receiving futures waiting often, so that dropping them lands while they wait.
fn pace(micros: u64) {
    if micros > 0 {
        std::thread::sleep(Duration::from_micros(micros));
    }
}

/// Entry point of every child role; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    let get = |k: &str| a.get(k).map(|v| v.parse::<u64>().unwrap()).unwrap_or(0);
    let name = a.get("name").cloned().unwrap_or_default();
    let node = Node::new().unwrap();
    match role.as_str() {
        "publisher" => {
            let mut p = node
                .topic::<u64>(&name)
                .capacity(8)
                .send_timeout(HANG)
                .publisher()
                .unwrap();
            tell("ready");
            for seq in 0..get("count") {
                p.send_copy(&seq).unwrap();
                pace(get("pause"));
            }
            tell("done");
            wait_parent();
        }
        "producer" => {
            let mut p = node.queue::<u64>(&name).capacity(8).producer().unwrap();
            tell("ready");
            for seq in 0..get("count") {
                // A full queue: wait for the consumer (the blocking send's own policy).
                p.send(&seq).unwrap();
                pace(get("pause"));
            }
            tell("done");
            wait_parent();
        }
        "holder" => {
            // Takes one message, says so, holds it until killed.
            let c = node
                .queue::<u64>(&name)
                .capacity(8)
                .prefetch(1)
                .consumer()
                .unwrap();
            let d = c.receive_timeout(HANG).unwrap();
            tell(&format!("holding {}", *d));
            wait_parent();
            drop(d);
        }
        "reader" => {
            // Reads `count` messages slowly (`pause` µs each), checks they are 0, 1, 2, ...
            // then, told to, that nothing follows.
            let s = node.topic::<u64>(&name).subscriber().unwrap();
            tell("ready");
            for seq in 0..get("count") {
                assert_eq!(
                    *s.receive_timeout(HANG).unwrap(),
                    seq,
                    "in order, once each"
                );
                std::thread::sleep(Duration::from_micros(get("pause")));
            }
            tell(&format!("got {}", get("count")));
            wait_parent();
            assert!(s.try_receive().is_err(), "nothing after the last message");
            tell("clean");
            wait_parent();
        }
        "stuck-reader" => {
            // Subscribes and never reads: a Block publisher waits for it.
            let _s = node.topic::<u64>(&name).subscriber().unwrap();
            tell("ready");
            wait_parent();
        }
        "worker" => {
            // As "reader", for a queue: takes, acknowledges, one at a time.
            let c = node.queue::<u64>(&name).prefetch(1).consumer().unwrap();
            tell("ready");
            for seq in 0..get("count") {
                let job = c.receive_timeout(HANG).unwrap();
                assert_eq!(*job, seq, "one producer, one consumer: in order, once each");
                job.ack().unwrap();
                std::thread::sleep(Duration::from_micros(get("pause")));
            }
            tell(&format!("got {}", get("count")));
            wait_parent();
            assert!(c.try_receive().is_err(), "nothing after the last message");
            tell("clean");
            wait_parent();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn an_async_subscriber_in_a_tokio_task_receives_from_another_process() {
    let _serial = serial();
    let root = test_root("async-sub");
    let node = Node::with_root(&root).unwrap();
    let mut sub = node
        .topic::<u64>("async-sub")
        .capacity(8)
        .subscriber()
        .unwrap();
    let count = 20_000u64;
    let mut child = ChildRole::spawn("publisher", &root, &format!("name=async-sub count={count}"));
    child.expect("ready");
    let rt = runtime();
    // The subscriber moves into a spawned task: the future is Send.
    let task = rt.spawn(async move {
        for seq in 0..count {
            let got = *sub.receive_async().await.unwrap();
            assert_eq!(got, seq, "in order, none lost");
        }
    });
    rt.block_on(async { tokio::time::timeout(HANG, task).await })
        .expect("no stuck future")
        .unwrap();
    child.expect("done");
    assert!(child.finish());
    assert_eq!(live_registrations(), 0);
}

#[test]
fn an_async_consumer_in_a_tokio_task_receives_from_another_process() {
    let _serial = serial();
    let root = test_root("async-queue");
    let node = Node::with_root(&root).unwrap();
    let mut consumer = node
        .queue::<u64>("async-queue")
        .capacity(8)
        .consumer()
        .unwrap();
    let count = 20_000u64;
    let mut child = ChildRole::spawn(
        "producer",
        &root,
        &format!("name=async-queue count={count}"),
    );
    child.expect("ready");
    let rt = runtime();
    let task = rt.spawn(async move {
        for seq in 0..count {
            let job = consumer.receive_async().await.unwrap();
            assert_eq!(*job, seq, "one consumer: in order, none lost");
            job.ack().unwrap();
        }
    });
    rt.block_on(async { tokio::time::timeout(HANG, task).await })
        .expect("no stuck future")
        .unwrap();
    child.expect("done");
    assert!(child.finish());
    assert_eq!(live_registrations(), 0);
}

/// A timeout from a few microseconds to a millisecond, drawn from `rng`.
fn tiny(rng: &mut Rng) -> Duration {
    Duration::from_micros(rng.next() % 1000)
}

#[test]
fn futures_dropped_at_random_points_lose_no_message_and_leave_no_registration() {
    let _serial = serial();
    let root = test_root("async-cancel");
    let node = Node::with_root(&root).unwrap();
    let mut sub = node
        .topic::<u64>("async-cancel-topic")
        .capacity(8)
        .subscriber()
        .unwrap();
    let mut consumer = node
        .queue::<u64>("async-cancel-queue")
        .capacity(8)
        .consumer()
        .unwrap();
    let count = 5_000u64;
    let mut publisher = ChildRole::spawn(
        "publisher",
        &root,
        &format!("name=async-cancel-topic count={count} pause=30"),
    );
    let mut producer = ChildRole::spawn(
        "producer",
        &root,
        &format!("name=async-cancel-queue count={count} pause=30"),
    );
    publisher.expect("ready");
    producer.expect("ready");
    let rt = runtime();
    let topic_task = rt.spawn(async move {
        let mut rng = Rng(7);
        let (mut seq, mut dropped) = (0, 0u64);
        while seq < count {
            // Dropped by the timeout before, while or after it registers.
            match tokio::time::timeout(tiny(&mut rng), sub.receive_async()).await {
                Ok(got) => {
                    assert_eq!(*got.unwrap(), seq, "no message lost to a dropped future");
                    seq += 1;
                }
                Err(_) => dropped += 1,
            }
        }
        dropped
    });
    let queue_task = rt.spawn(async move {
        let mut rng = Rng(11);
        let (mut seq, mut dropped) = (0, 0u64);
        while seq < count {
            let mut next = std::pin::pin!(futures::FutureExt::fuse(consumer.receive_async()));
            let timer = tokio::time::sleep(tiny(&mut rng));
            futures::select_biased! {
                got = next.as_mut() => {
                    let job = got.unwrap();
                    assert_eq!(*job, seq, "no message lost to a dropped future");
                    job.ack().unwrap();
                    seq += 1;
                }
                _ = futures::FutureExt::fuse(timer) => dropped += 1,
            }
        }
        dropped
    });
    let (topic_dropped, queue_dropped) = rt
        .block_on(async {
            tokio::time::timeout(HANG, async { (topic_task.await, queue_task.await) }).await
        })
        .expect("no stuck future");
    let (topic_dropped, queue_dropped) = (topic_dropped.unwrap(), queue_dropped.unwrap());
    assert!(
        topic_dropped > 0 && queue_dropped > 0,
        "futures were dropped ({topic_dropped}, {queue_dropped})"
    );
    assert!(publisher.finish());
    assert!(producer.finish());
    assert_eq!(live_registrations(), 0, "every dropped future unregistered");
}

#[test]
fn many_tasks_on_many_handles_in_one_process_never_get_stuck() {
    let _serial = serial();
    let node = Node::in_process();
    // More futures than one waiter thread takes (127): two threads share them.
    let (topics, subs_per_topic, count) = (36usize, 4usize, 1_000u64);
    let rt = runtime();
    let mut tasks = Vec::new();
    let mut publishers = Vec::new();
    for t in 0..topics {
        let topic = node
            .topic::<u64>(&format!("stress-{t}"))
            .capacity(4)
            .max_subscribers(subs_per_topic)
            .send_timeout(HANG)
            // Every wait parks in the waiter (no spin): the register/notify races are the
            // point, and 150 tasks spinning in turn on two cores would only slow them down.
            .spin_before_sleep(Duration::ZERO);
        for _ in 0..subs_per_topic {
            let mut sub = topic.subscriber().unwrap();
            tasks.push(rt.spawn(async move {
                for seq in 0..count {
                    assert_eq!(*sub.receive_async().await.unwrap(), seq);
                }
            }));
        }
        let mut publisher = topic.publisher().unwrap();
        publishers.push(std::thread::spawn(move || {
            for seq in 0..count {
                publisher.send_copy(&seq).unwrap();
            }
        }));
    }
    // Competing consumers of one queue: every message to exactly one of them.
    let queue = node
        .queue::<u64>("stress-queue")
        .capacity(4)
        .spin_before_sleep(Duration::ZERO);
    let mut producer = queue.producer().unwrap();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let mut consumer = queue.consumer().unwrap();
            rt.spawn(async move {
                let mut got = Vec::new();
                loop {
                    let job = consumer.receive_async().await.unwrap();
                    let v = *job;
                    job.ack().unwrap();
                    if v == u64::MAX {
                        return got;
                    }
                    got.push(v);
                }
            })
        })
        .collect();
    let queued = 4 * count;
    publishers.push(std::thread::spawn(move || {
        for seq in 0..queued {
            producer.send(&seq).unwrap();
        }
        for _ in 0..4 {
            producer.send(&u64::MAX).unwrap();
        }
    }));
    let mut all = rt
        .block_on(async {
            tokio::time::timeout(HANG, async {
                for t in tasks {
                    t.await.unwrap();
                }
                let mut all = Vec::new();
                for c in consumers {
                    all.extend(c.await.unwrap());
                }
                all
            })
            .await
        })
        .expect("no stuck future");
    for p in publishers {
        p.join().unwrap();
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..queued).collect::<Vec<_>>(),
        "each job exactly once"
    );
    assert_eq!(live_registrations(), 0);
}

#[test]
fn a_publisher_killed_while_a_future_waits_leaves_it_waiting_as_receive_does() {
    let _serial = serial();
    let root = test_root("async-kill");
    let node = Node::with_root(&root).unwrap();
    let mut sub = node
        .topic::<u64>("async-kill")
        .capacity(8)
        .subscriber()
        .unwrap();
    let mut victim = ChildRole::spawn("publisher", &root, "name=async-kill count=0");
    victim.expect("ready");
    let rt = runtime();
    rt.block_on(async {
        let mut waiting = std::pin::pin!(sub.receive_async());
        // Registered and asleep when the publisher dies.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        assert!(live_registrations() > 0, "the future is registered");
        victim.kill();
        // The blocking receive keeps waiting for another publisher: so does the future...
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiting.as_mut())
                .await
                .is_err(),
            "nothing to receive"
        );
        // ...and receives from the next one.
        let mut next = ChildRole::spawn("publisher", &root, "name=async-kill count=1");
        next.expect("ready");
        let got = tokio::time::timeout(HANG, waiting).await.expect("not hung");
        assert_eq!(*got.unwrap(), 0);
        assert!(next.finish());
    });
    assert_eq!(live_registrations(), 0);
}

#[test]
fn a_future_takes_back_the_delivery_of_a_consumer_killed_while_it_waits() {
    let _serial = serial();
    let root = test_root("async-holder");
    let node = Node::with_root(&root).unwrap();
    let queue = node.queue::<u64>("async-holder").capacity(8).prefetch(1);
    let mut producer = queue.producer().unwrap();
    let mut holder = ChildRole::spawn("holder", &root, "name=async-holder");
    producer.send(&5).unwrap();
    assert_eq!(holder.expect("holding"), "5");
    let mut consumer = queue.consumer().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut waiting = std::pin::pin!(consumer.receive_async());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "the only message is held"
        );
        holder.kill();
        // No producer rings: the future's own periodic scan (as `receive`'s) finds the dead
        // consumer and takes its delivery back.
        let start = std::time::Instant::now();
        let job = tokio::time::timeout(HANG, waiting)
            .await
            .expect("not hung")
            .unwrap();
        // Not woken by the timeout's timer (which polls the future first).
        assert!(start.elapsed() < HANG / 4, "woken by its own scan");
        assert_eq!((*job, job.delivery_count()), (5, 2));
        job.ack().unwrap();
    });
    assert_eq!(live_registrations(), 0);
}

#[test]
fn a_producer_killed_while_a_future_waits_leaves_it_waiting_as_receive_does() {
    let _serial = serial();
    let root = test_root("async-producer-kill");
    let node = Node::with_root(&root).unwrap();
    let mut consumer = node
        .queue::<u64>("async-producer-kill")
        .capacity(8)
        .consumer()
        .unwrap();
    let mut victim = ChildRole::spawn("producer", &root, "name=async-producer-kill count=0");
    victim.expect("ready");
    let rt = runtime();
    rt.block_on(async {
        let mut waiting = std::pin::pin!(consumer.receive_async());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        victim.kill();
        // Its scans find the dead producer and nothing to take: it keeps waiting...
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiting.as_mut())
                .await
                .is_err(),
            "nothing to receive"
        );
        // ...and receives from the next one.
        let mut next = ChildRole::spawn("producer", &root, "name=async-producer-kill count=1");
        next.expect("ready");
        let job = tokio::time::timeout(HANG, waiting)
            .await
            .expect("not hung")
            .unwrap();
        assert_eq!(*job, 0);
        job.ack().unwrap();
        assert!(next.finish());
    });
    assert_eq!(live_registrations(), 0);
}

/// Awaits `f`, counting the times it returned `Pending` in `pending`.
async fn counting<F: Future>(f: F, pending: &mut u64) -> F::Output {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let got = f.as_mut().poll(cx);
        *pending += u64::from(got.is_pending());
        got
    })
    .await
}

/// The child reader or worker got `count` messages in order, and none after them.
fn check_reader(mut child: ChildRole, count: u64) {
    assert_eq!(child.expect("got"), count.to_string());
    child.say("check");
    child.expect("clean");
    assert!(child.finish());
}

#[test]
fn an_async_publisher_in_a_tokio_task_waits_for_room_for_a_slow_subscriber_in_another_process() {
    let _serial = serial();
    let root = test_root("async-room-topic");
    let node = Node::with_root(&root).unwrap();
    let mut p = node
        .topic::<u64>("async-room-topic")
        .capacity(2)
        .send_timeout(HANG)
        .publisher()
        .unwrap();
    let count = 1000u64;
    let mut child = ChildRole::spawn(
        "reader",
        &root,
        &format!("name=async-room-topic count={count} pause=50"),
    );
    child.expect("ready");
    let rt = runtime();
    // The publisher moves into a spawned task: the futures are Send.
    let task = rt.spawn(async move {
        let mut waits = 0;
        for seq in 0..count {
            if seq % 2 == 0 {
                counting(p.send_copy_async(&seq), &mut waits).await.unwrap();
            } else {
                let mut loan = counting(p.loan_async(), &mut waits).await.unwrap();
                *loan = seq;
                loan.send();
            }
        }
        waits
    });
    let waits = rt
        .block_on(async { tokio::time::timeout(HANG, task).await })
        .expect("no stuck future")
        .unwrap();
    assert!(waits > 0, "the publisher waited for room");
    check_reader(child, count);
    assert_eq!(live_registrations(), 0);
}

#[test]
fn an_async_producer_in_a_tokio_task_waits_for_room_for_a_slow_consumer_in_another_process() {
    let _serial = serial();
    let root = test_root("async-room-queue");
    let node = Node::with_root(&root).unwrap();
    let mut producer = node
        .queue::<u64>("async-room-queue")
        .capacity(2)
        .policy(Policy::Block(HANG))
        .producer()
        .unwrap();
    let count = 1000u64;
    let mut child = ChildRole::spawn(
        "worker",
        &root,
        &format!("name=async-room-queue count={count} pause=50"),
    );
    child.expect("ready");
    let rt = runtime();
    let task = rt.spawn(async move {
        let mut waits = 0;
        for seq in 0..count {
            if seq % 2 == 0 {
                let pos = counting(producer.send_async(&seq), &mut waits).await;
                assert_eq!(pos.unwrap(), seq, "positions count every message");
            } else {
                let mut loan = counting(producer.loan_async(), &mut waits).await.unwrap();
                *loan = seq;
                loan.send().unwrap();
            }
        }
        waits
    });
    let waits = rt
        .block_on(async { tokio::time::timeout(HANG, task).await })
        .expect("no stuck future")
        .unwrap();
    assert!(waits > 0, "the producer waited for room");
    check_reader(child, count);
    assert_eq!(live_registrations(), 0);
}

/// Sends until the ring is full (a subscriber that never reads is a ring behind).
fn fill(p: &mut ringbus::Publisher<u64>) {
    while let Ok(loan) = p.try_loan() {
        loan.send();
    }
}

#[test]
fn a_subscriber_killed_while_an_async_publisher_waits_for_room_is_reclaimed_as_send_does() {
    let _serial = serial();
    let root = test_root("async-room-kill");
    let node = Node::with_root(&root).unwrap();
    let mut p = node
        .topic::<u64>("async-room-kill")
        .capacity(2)
        .send_timeout(HANG)
        .publisher()
        .unwrap();
    let rt = runtime();
    // The future: waits, registered, until the subscriber it waits for is killed; then its
    // periodic check reclaims the dead subscriber and the send goes through.
    let victim = ChildRole::spawn("stuck-reader", &root, "name=async-room-kill");
    let mut victim = Some(victim);
    victim.as_mut().unwrap().expect("ready");
    fill(&mut p);
    rt.block_on(async {
        let mut waiting = std::pin::pin!(p.send_copy_async(&7));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "no room while the subscriber lives"
        );
        assert!(live_registrations() > 0, "the future is registered");
        victim.take().unwrap().kill();
        let start = std::time::Instant::now();
        let sent = tokio::time::timeout(HANG, waiting).await.expect("not hung");
        assert!(sent.is_ok(), "room once the dead subscriber is reclaimed");
        assert!(start.elapsed() < HANG / 4, "woken by its own check");
    });
    assert_eq!(live_registrations(), 0);
    // The blocking send, the same situation: the same result.
    let mut victim = ChildRole::spawn("stuck-reader", &root, "name=async-room-kill");
    victim.expect("ready");
    fill(&mut p);
    victim.kill();
    assert!(p.send_copy(&8).is_ok());
}

#[test]
fn a_consumer_killed_while_an_async_producer_waits_for_room_leaves_it_full_as_send_does() {
    let _serial = serial();
    let root = test_root("async-room-holder");
    let node = Node::with_root(&root).unwrap();
    let timeout = Duration::from_millis(300);
    let queue = node
        .queue::<u64>("async-room-holder")
        .capacity(8)
        .policy(Policy::Block(timeout));
    let mut producer = queue.producer().unwrap();
    let mut holder = ChildRole::spawn("holder", &root, "name=async-room-holder");
    producer.send(&0).unwrap();
    assert_eq!(holder.expect("holding"), "0");
    for v in 1..8 {
        producer.send(&v).unwrap();
    }
    let mut holder = Some(holder);
    let rt = runtime();
    rt.block_on(async {
        let mut waiting = std::pin::pin!(producer.send_async(&8));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "the queue is full"
        );
        assert!(live_registrations() > 0, "the future is registered");
        holder.take().unwrap().kill();
        // The dead consumer's delivery goes back to the queue, which stays full: the future
        // times out, as the blocking send does below.
        let got = tokio::time::timeout(HANG, waiting).await.expect("not hung");
        assert!(
            matches!(got, Err(ringbus::SendError::Timeout(t)) if t == timeout),
            "{got:?}"
        );
    });
    assert_eq!(live_registrations(), 0);
    assert!(matches!(
        producer.send(&8),
        Err(ringbus::SendError::Timeout(t)) if t == timeout
    ));
    // Nothing lost, nothing sent twice: the held message comes back once.
    let consumer = queue.consumer().unwrap();
    let mut all = drain_acked(&consumer);
    all.sort_unstable();
    assert_eq!(all, (0..8).collect::<Vec<_>>());
}

#[test]
fn async_room_waits_end_as_the_blocking_calls_do_in_one_process() {
    let _serial = serial();
    let node = Node::in_process();
    use futures::executor::block_on;
    // A live subscriber that never reads: Timeout after the send timeout, as `send_copy`.
    let timeout = Duration::from_millis(100);
    let topic = node
        .topic::<u64>("async-room-timeout")
        .capacity(2)
        .send_timeout(timeout);
    let mut p = topic.publisher().unwrap();
    let _s = topic.subscriber().unwrap();
    fill(&mut p);
    let start = std::time::Instant::now();
    let got = block_on(p.send_copy_async(&1));
    assert!(matches!(got, Err(ringbus::SendError::Timeout(t)) if t == timeout));
    assert!(start.elapsed() >= timeout);
    assert!(matches!(p.send_copy(&1), Err(ringbus::SendError::Timeout(t)) if t == timeout));
    // DropOldest: ready at once, overwriting, as `send_copy`.
    let topic = node
        .topic::<u64>("async-room-drop")
        .capacity(2)
        .policy(ringbus::topic::Policy::DropOldest);
    let mut p = topic.publisher().unwrap();
    let s = topic.subscriber().unwrap();
    for v in 0..5 {
        let now = futures::FutureExt::now_or_never(p.send_copy_async(&v));
        assert!(matches!(now, Some(Ok(()))), "ready at once");
    }
    assert!(matches!(
        s.try_receive(),
        Err(ringbus::ReceiveError::Lagged(_))
    ));
    // Every slot held by the subscriber (DropOldest cannot overwrite them): AllSlotsHeld.
    let topic = node
        .topic::<u64>("async-room-held")
        .capacity(2)
        .max_held(2)
        .policy(ringbus::topic::Policy::DropOldest);
    let mut p = topic.publisher().unwrap();
    let s = topic.subscriber().unwrap();
    p.send_copy(&0).unwrap();
    p.send_copy(&1).unwrap();
    let (a, b) = (s.try_receive().unwrap(), s.try_receive().unwrap());
    assert!(matches!(
        block_on(p.send_copy_async(&2)),
        Err(ringbus::SendError::AllSlotsHeld)
    ));
    assert!(matches!(
        p.send_copy(&2),
        Err(ringbus::SendError::AllSlotsHeld)
    ));
    drop((a, b));
    // A queue under Fail: Full at once, as `send`.
    let queue = node
        .queue::<u64>("async-room-fail")
        .capacity(2)
        .policy(Policy::Fail);
    let mut producer = queue.producer().unwrap();
    let _c = queue.consumer().unwrap();
    while producer.send(&0).is_ok() {}
    let now = futures::FutureExt::now_or_never(producer.send_async(&1));
    assert!(matches!(now, Some(Err(ringbus::SendError::Full))));
    // A live consumer that never takes: Timeout, as `send`.
    let queue = node
        .queue::<u64>("async-room-queue-timeout")
        .capacity(2)
        .policy(Policy::Block(timeout));
    let mut producer = queue.producer().unwrap();
    let _c = queue.consumer().unwrap();
    producer.send(&0).unwrap();
    producer.send(&1).unwrap();
    let got = block_on(producer.loan_async().map_ok(|_| ()));
    assert!(matches!(got, Err(ringbus::SendError::Timeout(t)) if t == timeout));
    assert!(matches!(producer.send(&2), Err(ringbus::SendError::Timeout(t)) if t == timeout));
    assert_eq!(live_registrations(), 0);
}

#[test]
fn room_futures_dropped_at_random_points_send_nothing_twice_and_lose_nothing() {
    let _serial = serial();
    let root = test_root("async-room-cancel");
    let node = Node::with_root(&root).unwrap();
    let mut p = node
        .topic::<u64>("async-room-cancel-topic")
        .capacity(2)
        .send_timeout(HANG)
        .publisher()
        .unwrap();
    let mut producer = node
        .queue::<u64>("async-room-cancel-queue")
        .capacity(2)
        .policy(Policy::Block(HANG))
        .producer()
        .unwrap();
    let count = 3_000u64;
    let mut reader = ChildRole::spawn(
        "reader",
        &root,
        &format!("name=async-room-cancel-topic count={count} pause=20"),
    );
    let mut worker = ChildRole::spawn(
        "worker",
        &root,
        &format!("name=async-room-cancel-queue count={count} pause=20"),
    );
    reader.expect("ready");
    worker.expect("ready");
    let rt = runtime();
    let topic_task = rt.spawn(async move {
        let mut rng = Rng(5);
        let (mut seq, mut dropped) = (0, 0u64);
        while seq < count {
            // Dropped by the timeout before, while or after it registers; a future that
            // returned sent its message, one that was dropped sent nothing.
            let sent = if rng.next() % 2 == 0 {
                tokio::time::timeout(tiny(&mut rng), p.send_copy_async(&seq)).await
            } else {
                tokio::time::timeout(tiny(&mut rng), async {
                    let mut loan = p.loan_async().await?;
                    *loan = seq;
                    loan.send();
                    Ok::<(), ringbus::SendError>(())
                })
                .await
            };
            match sent {
                Ok(got) => {
                    got.unwrap();
                    seq += 1;
                }
                Err(_) => dropped += 1,
            }
        }
        dropped
    });
    let queue_task = rt.spawn(async move {
        let mut rng = Rng(13);
        let (mut seq, mut dropped) = (0, 0u64);
        while seq < count {
            let sent = if rng.next() % 2 == 0 {
                tokio::time::timeout(tiny(&mut rng), producer.send_async(&seq)).await
            } else {
                tokio::time::timeout(tiny(&mut rng), async {
                    let mut loan = producer.loan_async().await?;
                    *loan = seq;
                    loan.send()
                })
                .await
            };
            match sent {
                Ok(got) => {
                    got.unwrap();
                    seq += 1;
                }
                Err(_) => dropped += 1,
            }
        }
        dropped
    });
    let (topic_dropped, queue_dropped) = rt
        .block_on(async {
            tokio::time::timeout(HANG, async { (topic_task.await, queue_task.await) }).await
        })
        .expect("no stuck future");
    let (topic_dropped, queue_dropped) = (topic_dropped.unwrap(), queue_dropped.unwrap());
    assert!(
        topic_dropped > 0 && queue_dropped > 0,
        "futures were dropped ({topic_dropped}, {queue_dropped})"
    );
    check_reader(reader, count);
    check_reader(worker, count);
    assert_eq!(live_registrations(), 0, "every dropped future unregistered");
}

#[test]
fn an_async_producer_waits_for_room_in_a_durable_queue_as_send_does() {
    let _serial = serial();
    let dir = test_root("async-room-durable").join("log");
    let node = Node::in_process();
    // Capacity 8 with segments of 16 records: the producer maps new segments while it waits.
    let queue = node
        .queue::<u64>("async-room-durable")
        .capacity(8)
        .segment_records(16)
        .policy(Policy::Block(HANG))
        .durable(&dir)
        .sync_policy(ringbus::SyncPolicy::Always);
    let mut producer = queue.producer().unwrap();
    let consumer = queue.consumer().unwrap();
    let count = 200u64;
    let reader = std::thread::spawn(move || {
        (0..count)
            .map(|_| {
                let job = consumer.receive_timeout(HANG).unwrap();
                let v = *job;
                job.ack().unwrap();
                v
            })
            .collect::<Vec<_>>()
    });
    let rt = runtime();
    rt.block_on(async {
        for seq in 0..count {
            let sent = tokio::time::timeout(HANG, producer.send_async(&seq)).await;
            assert_eq!(sent.expect("not hung").unwrap(), seq);
        }
    });
    assert_eq!(reader.join().unwrap(), (0..count).collect::<Vec<_>>());
    assert_eq!(live_registrations(), 0);
}
