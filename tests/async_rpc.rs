//! The async calls (`Server::receive_async`, `Client::call_async`, `Pending` awaited, streamed
//! responses awaited with `Pending::next_response_async`) in tokio tasks, with the peer in another
//! process (child roles of this same test binary, see `common`): answers right, cancel safety
//! (futures dropped at random points), a server killed while a call or a stream is awaited, and
//! no registration left behind.

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringbus::testing::live_registrations;
use ringbus::{CallError, Client, Node, ServiceBuilder};

/// The service every role opens: the same shape on both sides.
fn service(node: &Node, name: &str) -> ServiceBuilder<u64, u64> {
    node.service::<u64, u64>(name)
        .max_in_flight(128)
        .timeout(Duration::from_secs(10))
}

fn answer(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

/// Response `i` of the stream answering `x`.
fn item(x: u64, i: u64) -> u64 {
    x * 1_000_000 + i
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
        "server" => {
            // A blocking server answering until the parent closes stdin.
            let server = service(&node, &name).server().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let stopper = stop.clone();
            std::thread::spawn(move || {
                wait_parent();
                stopper.store(true, Ordering::SeqCst);
            });
            tell("ready");
            while !stop.load(Ordering::SeqCst) {
                match server.receive_timeout(Duration::from_millis(20)) {
                    Ok(req) => {
                        let x = *req;
                        // The caller may have given up (a dropped future): not an error here.
                        let _ = req.respond(&answer(x));
                    }
                    Err(ringbus::ReceiveError::Timeout(_)) => {}
                    Err(e) => panic!("server: {e}"),
                }
            }
        }
        "client" => {
            // A blocking client making `count` calls.
            let client = service(&node, &name).client().unwrap();
            tell("ready");
            for x in 0..get("count") {
                assert_eq!(*client.call(&x).unwrap(), answer(x));
            }
            tell("done");
            wait_parent();
        }
        "streamer" => {
            // A blocking server answering each request `x` with a stream of `items` responses
            // (`item(x, i)`), until the parent closes stdin.
            let server = service(&node, &name).server().unwrap();
            let items = get("items");
            let stop = Arc::new(AtomicBool::new(false));
            let stopper = stop.clone();
            std::thread::spawn(move || {
                wait_parent();
                stopper.store(true, Ordering::SeqCst);
            });
            tell("ready");
            while !stop.load(Ordering::SeqCst) {
                match server.receive_timeout(Duration::from_millis(20)) {
                    Ok(req) => {
                        let x = *req;
                        let mut stream = req.stream();
                        for i in 0..items {
                            stream.send(&item(x, i)).unwrap();
                        }
                        stream.end().unwrap();
                    }
                    Err(ringbus::ReceiveError::Timeout(_)) => {}
                    Err(e) => panic!("streamer: {e}"),
                }
            }
        }
        "stream-holder" => {
            // Takes one call, streams `items` responses, says so, holds the stream open until
            // killed.
            let server = service(&node, &name).server().unwrap();
            tell("ready");
            let req = server.receive_timeout(HANG).unwrap();
            let x = *req;
            let mut stream = req.stream();
            for i in 0..get("items") {
                stream.send(&item(x, i)).unwrap();
            }
            tell("streamed");
            wait_parent();
            drop(stream);
        }
        "holder" => {
            // Takes one call, says so, holds it unanswered until killed.
            let server = service(&node, &name).server().unwrap();
            tell("ready");
            let req = server.receive_timeout(HANG).unwrap();
            tell(&format!("holding {}", *req));
            wait_parent();
            drop(req);
        }
        other => panic!("unknown role {other}"),
    }
}

/// `call_async`, retried while every call slot is held (calls of other tasks, or abandoned
/// ones whose answers are on their way).
async fn call(client: &Client<u64, u64>, x: u64) -> Result<u64, CallError> {
    loop {
        match client.call_async(&x).await {
            Err(CallError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(1)).await,
            other => return other.map(|r| *r),
        }
    }
}

#[test]
fn an_async_server_in_a_tokio_task_answers_a_client_in_another_process() {
    let _serial = serial();
    let root = test_root("async-rpc-server");
    let node = Node::with_root(&root).unwrap();
    let mut server = service(&node, "async-rpc-server").server().unwrap();
    let count = 5_000u64;
    let mut child = ChildRole::spawn(
        "client",
        &root,
        &format!("name=async-rpc-server count={count}"),
    );
    child.expect("ready");
    let rt = runtime();
    // The server moves into a spawned task: the future is Send.
    let task = rt.spawn(async move {
        for _ in 0..count {
            let req = server.receive_async().await.unwrap();
            let x = *req;
            req.respond(&answer(x)).unwrap();
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
fn async_calls_in_tokio_tasks_are_answered_by_a_server_in_another_process() {
    let _serial = serial();
    let root = test_root("async-rpc-client");
    let node = Node::with_root(&root).unwrap();
    let client = Rc::new(service(&node, "async-rpc-client").client().unwrap());
    let mut child = ChildRole::spawn("server", &root, "name=async-rpc-client");
    child.expect("ready");
    // More tasks than a client's doorbell has bits for awaited calls: some share one.
    let (tasks, calls) = (100u64, 200u64);
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let client = client.clone();
            local.spawn_local(async move {
                for i in 0..calls {
                    let x = t * calls + i;
                    assert_eq!(call(&client, x).await.unwrap(), answer(x));
                }
            })
        })
        .collect();
    rt.block_on(local.run_until(async {
        tokio::time::timeout(HANG, futures::future::join_all(handles))
            .await
            .expect("no stuck future")
            .into_iter()
            .for_each(|r| r.unwrap());
    }));
    // A Pending awaited directly.
    rt.block_on(async {
        let pending = client.send(&7).unwrap();
        assert_eq!(*pending.await.unwrap(), answer(7));
    });
    assert!(child.finish());
    assert_eq!(live_registrations(), 0);
}

/// A timeout from a few microseconds to a millisecond, drawn from `rng`.
fn tiny(rng: &mut Rng) -> Duration {
    Duration::from_micros(rng.next() % 1000)
}

#[test]
fn futures_dropped_at_random_points_leave_no_registration_and_lose_no_call() {
    let _serial = serial();
    let root = test_root("async-rpc-cancel");
    let node = Node::with_root(&root).unwrap();
    // Calls dropped while awaited, answered by a blocking server.
    let client = service(&node, "async-rpc-cancel-c").client().unwrap();
    let mut server_child = ChildRole::spawn("server", &root, "name=async-rpc-cancel-c");
    server_child.expect("ready");
    // Receives dropped while awaited, by an async server answering a blocking client.
    let mut server = service(&node, "async-rpc-cancel-s").server().unwrap();
    let count = 2_000u64;
    let mut client_child = ChildRole::spawn(
        "client",
        &root,
        &format!("name=async-rpc-cancel-s count={count}"),
    );
    client_child.expect("ready");
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    let server_task = local.spawn_local(async move {
        let mut rng = Rng(5);
        let (mut answered, mut dropped) = (0, 0u64);
        while answered < count {
            // Dropped by the timeout before, while or after it registers.
            match tokio::time::timeout(tiny(&mut rng), server.receive_async()).await {
                Ok(req) => {
                    let req = req.unwrap();
                    let x = *req;
                    req.respond(&answer(x)).unwrap();
                    answered += 1;
                }
                Err(_) => dropped += 1,
            }
        }
        dropped
    });
    let client = Rc::new(client);
    let client_task = local.spawn_local({
        let client = client.clone();
        async move {
            let mut rng = Rng(9);
            let (mut answered, mut dropped) = (0u64, 0u64);
            for x in 0..count {
                let mut waiting = std::pin::pin!(client.call_async(&x));
                match tokio::time::timeout(tiny(&mut rng), waiting.as_mut()).await {
                    Ok(Ok(r)) => {
                        assert_eq!(*r, answer(x));
                        answered += 1;
                    }
                    Ok(Err(CallError::Busy { .. })) => {}
                    Ok(Err(e)) => panic!("call {x}: {e}"),
                    Err(_) => dropped += 1,
                }
            }
            (answered, dropped)
        }
    });
    let (server_dropped, (answered, dropped)) = rt.block_on(local.run_until(async {
        tokio::time::timeout(HANG, async {
            (server_task.await.unwrap(), client_task.await.unwrap())
        })
        .await
        .expect("no stuck future")
    }));
    assert!(
        server_dropped > 0 && dropped > 0 && answered > 0,
        "futures were dropped ({server_dropped}, {dropped}) and calls answered ({answered})"
    );
    client_child.expect("done");
    assert!(
        client_child.finish(),
        "every call of the blocking client answered"
    );
    assert_eq!(live_registrations(), 0, "every dropped future unregistered");
    // Later calls are still answered.
    rt.block_on(async {
        tokio::time::timeout(HANG, async {
            for x in 0..100 {
                assert_eq!(call(&client, x).await.unwrap(), answer(x));
            }
        })
        .await
        .expect("not hung");
    });
    assert!(server_child.finish());
    assert_eq!(live_registrations(), 0);
}

#[test]
fn a_server_killed_while_a_call_is_awaited_ends_it_as_the_blocking_wait_does() {
    let _serial = serial();
    let root = test_root("async-rpc-kill");
    let node = Node::with_root(&root).unwrap();
    let client = service(&node, "async-rpc-kill").client().unwrap();
    let mut victim = ChildRole::spawn("holder", &root, "name=async-rpc-kill");
    victim.expect("ready");
    let rt = current_thread();
    rt.block_on(async {
        let mut waiting = std::pin::pin!(client.call_async(&5));
        // Registered and asleep when the server takes the call and dies.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        assert!(live_registrations() > 0, "the future is registered");
        assert_eq!(victim.expect("holding"), "5");
        victim.kill();
        // As `Pending::wait` (tests/rpc_processes.rs): Disconnected, within the check interval,
        // long before the call's timeout.
        let got = tokio::time::timeout(HANG, waiting).await.expect("not hung");
        assert_eq!(got.err(), Some(CallError::Disconnected));
    });
    assert_eq!(live_registrations(), 0);
    // With no server left: NoServer at once, as `call`.
    let got = rt.block_on(client.call_async(&6));
    assert_eq!(got.err(), Some(CallError::NoServer));
}

#[test]
fn streamed_responses_are_awaited_in_order_in_tokio_tasks_even_when_dropped_midway() {
    let _serial = serial();
    let root = test_root("async-rpc-stream");
    let node = Node::with_root(&root).unwrap();
    let client = Rc::new(service(&node, "async-rpc-stream").client().unwrap());
    let items = 50u64;
    let mut child = ChildRole::spawn(
        "streamer",
        &root,
        &format!("name=async-rpc-stream items={items}"),
    );
    child.expect("ready");
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    // Three tasks read whole streams; a fourth drops its item futures at random points (a
    // timeout of a few microseconds) and awaits again: no item is lost or repeated.
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            local.spawn_local(async move {
                let mut rng = Rng(t + 1);
                let mut dropped = 0u64;
                for c in 0..40u64 {
                    let x = t * 1000 + c;
                    let mut pending = loop {
                        match client.send(&x) {
                            Ok(p) => break p,
                            Err(CallError::Busy { .. }) => {
                                tokio::time::sleep(Duration::from_millis(1)).await
                            }
                            Err(e) => panic!("send: {e}"),
                        }
                    };
                    let mut next = 0u64;
                    loop {
                        let got = if t == 3 {
                            match tokio::time::timeout(
                                tiny(&mut rng),
                                pending.next_response_async(),
                            )
                            .await
                            {
                                Ok(got) => got,
                                Err(_) => {
                                    dropped += 1;
                                    continue;
                                }
                            }
                        } else {
                            pending.next_response_async().await
                        };
                        match got.unwrap() {
                            Some(r) => {
                                assert_eq!(*r, item(x, next), "in order, none lost");
                                assert!(!r.is_last());
                                next += 1;
                            }
                            None => break,
                        }
                    }
                    assert_eq!(next, items, "every item of call {x}");
                    // After the end: still None, as `next_response`.
                    assert!(pending.next_response_async().await.unwrap().is_none());
                }
                dropped
            })
        })
        .collect();
    let dropped: Vec<u64> = rt.block_on(local.run_until(async {
        tokio::time::timeout(HANG, futures::future::join_all(handles))
            .await
            .expect("no stuck future")
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    }));
    assert!(dropped[3] > 0, "item futures were dropped while waiting");
    assert_eq!(client.in_flight(), 0);
    assert!(child.finish());
    assert_eq!(live_registrations(), 0);
}

/// Reads the `items` responses a `stream-holder` sends for call `x`, then returns the error of the
/// next read, made (awaited or blocking) after the holder is killed.
fn next_after_kill(node: &Node, root: &std::path::PathBuf, name: &str, awaited: bool) -> CallError {
    let items = 5u64;
    let client = service(node, name).client().unwrap();
    let mut victim = ChildRole::spawn("stream-holder", root, &format!("name={name} items={items}"));
    victim.expect("ready");
    let x = 9;
    let mut pending = client.send(&x).unwrap();
    let rt = current_thread();
    let err = rt.block_on(async {
        for i in 0..items {
            let r = pending.next_response_async().await.unwrap().unwrap();
            assert_eq!(*r, item(x, i));
        }
        victim.expect("streamed");
        if !awaited {
            victim.kill();
            return pending.next_response().err();
        }
        let mut waiting = std::pin::pin!(pending.next_response_async());
        // Registered and asleep when the server dies mid-stream.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        assert!(live_registrations() > 0, "the future is registered");
        victim.kill();
        let got = tokio::time::timeout(HANG, waiting).await.expect("not hung");
        got.err()
    });
    assert_eq!(live_registrations(), 0);
    err.expect("the stream ends in an error")
}

#[test]
fn a_server_killed_mid_stream_ends_the_awaited_stream_as_the_blocking_one() {
    let _serial = serial();
    let root = test_root("async-rpc-stream-kill");
    let node = Node::with_root(&root).unwrap();
    let blocking = next_after_kill(&node, &root, "async-rpc-stream-kill-b", false);
    let awaited = next_after_kill(&node, &root, "async-rpc-stream-kill-a", true);
    assert_eq!(blocking, CallError::Disconnected);
    assert_eq!(awaited, blocking, "the same typed error");
}
