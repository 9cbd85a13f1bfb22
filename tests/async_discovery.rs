//! Discovery futures (`*_when_found`, `wait_for_*`): tasks that start before the topic, service
//! and queue exist find them once another process creates them, and senders wait for their
//! first receiver; dropped futures leave no registration; an open error other than "not found"
//! ends the wait.

mod common;

use common::*;
use ringbus::testing::live_registrations;
use ringbus::{Node, OpenError};

/// Entry point of every child role; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let node = Node::new().unwrap();
    match role.as_str() {
        // Creates a topic, a service and a queue; its senders wait for their first receivers.
        "creator" => {
            let mut publisher = node.topic::<u64>("disc-topic").publisher().unwrap();
            let server = node.service::<u64, u64>("disc-service").server().unwrap();
            let mut producer = node.queue::<u64>("disc-queue").producer().unwrap();
            tell("created");
            futures::executor::block_on(publisher.wait_for_subscriber());
            publisher.send_copy(&7).unwrap();
            let request = server.receive_timeout(HANG).unwrap();
            let x = *request;
            request.respond(&(x + 1)).unwrap();
            futures::executor::block_on(producer.wait_for_consumer());
            producer.send(&9).unwrap();
            tell("done");
            wait_parent();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn tasks_started_before_a_process_creates_the_segments_find_them_and_their_peers() {
    let _serial = serial();
    let root = test_root("async-discovery");
    let node = Node::with_root(&root).unwrap();
    let rt = runtime();
    let (tx, rx) = std::sync::mpsc::channel::<&str>();

    // Each task polls its discovery future once (nothing exists yet: pending), says so, and
    // awaits it.
    let topic = node.topic::<u64>("disc-topic");
    let said = tx.clone();
    let subscriber = rt.spawn(async move {
        let mut found = std::pin::pin!(topic.subscriber_when_found());
        assert!(futures::poll!(&mut found).is_pending(), "no topic yet");
        said.send("topic").unwrap();
        let mut sub = found.await.unwrap();
        let got = *sub.receive_async().await.unwrap();
        got
    });
    // A client's calls are awaited where it lives (its futures are not Send): polled here.
    let service = node.service::<u64, u64>("disc-service");
    let mut client = Box::pin(service.client_when_found());
    let first = futures::executor::block_on(async { futures::poll!(&mut client) });
    assert!(first.is_pending(), "no service yet");
    let queue = node.queue::<u64>("disc-queue");
    let said = tx;
    let consumer = rt.spawn(async move {
        let mut found = std::pin::pin!(queue.consumer_when_found());
        assert!(futures::poll!(&mut found).is_pending(), "no queue yet");
        said.send("queue").unwrap();
        let mut consumer = found.await.unwrap();
        let delivery = consumer.receive_async().await.unwrap();
        let got = *delivery;
        delivery.ack().unwrap();
        got
    });
    for _ in 0..2 {
        rx.recv_timeout(HANG).expect("every task is waiting");
    }

    let mut child = ChildRole::spawn("creator", &root, "");
    child.expect("created");
    let results = rt.block_on(async {
        tokio::time::timeout(HANG, async {
            let mut client = client.await.unwrap();
            client.wait_for_server().await;
            let response = *client.call_async(&5).await.unwrap();
            (subscriber.await.unwrap(), response, consumer.await.unwrap())
        })
        .await
        .expect("no stuck future")
    });
    assert_eq!(results, (7, 6, 9));
    child.expect("done");
    assert!(child.finish());
    assert_eq!(live_registrations(), 0);
}

#[test]
fn dropped_discovery_futures_leave_no_registration() {
    let _serial = serial();
    let node = Node::in_process();
    let topic = node.topic::<u64>("disc-drop-topic");
    futures::executor::block_on(async {
        let mut found = std::pin::pin!(topic.subscriber_when_found());
        assert!(futures::poll!(&mut found).is_pending());
        assert_eq!(live_registrations(), 1, "napping in the waiter");
    });
    assert_eq!(live_registrations(), 0, "the dropped Found unregistered");

    let mut publisher = topic.publisher().unwrap();
    futures::executor::block_on(async {
        let mut joined = std::pin::pin!(publisher.wait_for_subscriber());
        assert!(
            futures::poll!(&mut joined).is_pending(),
            "no subscriber yet"
        );
        assert_eq!(live_registrations(), 1);
    });
    assert_eq!(
        live_registrations(),
        0,
        "the dropped PeerJoined unregistered"
    );
    let _subscriber = topic.subscriber().unwrap();
    futures::executor::block_on(publisher.wait_for_subscriber());
    assert_eq!(live_registrations(), 0);
}

#[test]
fn an_open_error_other_than_not_found_ends_the_wait() {
    let _serial = serial();
    let node = Node::in_process();
    let _u64s = node.topic::<u64>("disc-mismatch").publisher().unwrap();
    let got =
        futures::executor::block_on(node.topic::<u32>("disc-mismatch").subscriber_when_found());
    assert!(
        matches!(got, Err(OpenError::TypeMismatch { .. })),
        "{got:?}"
    );
    assert_eq!(live_registrations(), 0);
}

/// What a multi-threaded runtime needs: every handle moves into `tokio::spawn` (`Send`), and so
/// do the futures of the handles borrowed mutably (`&mut self`). A client's calls borrow the
/// client, which is not `Sync`: they are awaited in the task that owns it. Checked at compile
/// time; the table in ARCHITECTURE.md ("Async") says the same.
#[test]
fn handles_and_their_futures_move_into_spawned_tasks() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Sync>() {}
    sync::<Node>();
    sync::<ringbus::Publisher<u64>>();
    sync::<ringbus::Producer<u64>>();
    sync::<ringbus::TopicBuilder<u64>>();
    let node = Node::in_process();
    let topic = node.topic::<u64>("send-check");
    let svc = node.service::<u64, u64>("send-check");
    let queue = node.queue::<u64>("send-check");
    let (mut p, mut s) = (topic.publisher().unwrap(), topic.subscriber().unwrap());
    let (mut server, mut client) = (svc.server().unwrap(), svc.client().unwrap());
    let (mut producer, mut consumer) = (queue.producer().unwrap(), queue.consumer().unwrap());
    send(&topic.subscriber_when_found());
    send(&svc.server_when_found());
    send(&queue.consumer_when_found());
    send(&s.receive_async());
    send(&server.receive_async());
    send(&consumer.receive_async());
    send(&p.wait_for_subscriber());
    send(&client.wait_for_server());
    send(&producer.wait_for_consumer());
    send(&p.send_copy_async(&1));
    send(&producer.send_async(&1));
    send(&(p, s, server, client, producer, consumer));
}
