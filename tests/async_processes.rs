//! The async receives (`Subscriber::receive_async`, `Consumer::receive_async`) in tokio tasks,
//! with peers in other processes (child roles of this same test binary, see `common`) or many
//! tasks in one process: order, no loss, cancel safety, a peer killed while futures wait, and
//! no registration left behind.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::*;
use ringbus::testing::live_registrations;
use ringbus::Node;

/// The tests count the process's live registrations: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Long enough that only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
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
        &format!("name=async-cancel-topic count={count}"),
    );
    let mut producer = ChildRole::spawn(
        "producer",
        &root,
        &format!("name=async-cancel-queue count={count}"),
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
