//! Services within one process (in-process backing and shared memory alike): every limit and
//! error path gives its typed error.

use std::time::Duration;

use ringbus::{Bytes, CallError, Node, OpenError, ReceiveError, Rkyv, SendError};

/// One call of `v`, answered with `v + 1` by `server`.
fn call_plus_one(client: &ringbus::Client<u64, u64>, server: &ringbus::Server<u64, u64>, v: u64) {
    let p = client.send(&v).unwrap();
    let req = server.try_receive().unwrap();
    assert_eq!(*req, v);
    let answer = *req + 1;
    req.respond(&answer).unwrap();
    assert_eq!(*p.wait().unwrap(), v + 1);
}

fn nodes(test: &str) -> Vec<Node> {
    let root = std::env::temp_dir().join(format!("ringbus-rpc-{}-{test}", std::process::id()));
    vec![Node::in_process(), Node::with_root(root).unwrap()]
}

#[test]
fn unary_calls_answer_their_own_caller_in_any_order() {
    for node in nodes("unary") {
        let svc = node.service::<[u64; 2], u64>("add").max_in_flight(4);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        for i in 0..100u64 {
            let p = client.send(&[i, 2 * i]).unwrap();
            let req = server.try_receive().unwrap();
            let sum = req[0] + req[1];
            req.respond(&sum).unwrap();
            assert_eq!(*p.wait().unwrap(), 3 * i);
        }
        // Four in flight, answered in reverse order, read in send order.
        let pending: Vec<_> = (0..4u64).map(|i| client.send(&[i, 0]).unwrap()).collect();
        let reqs: Vec<_> = (0..4).map(|_| server.try_receive().unwrap()).collect();
        assert_eq!(server.try_receive().err(), Some(ReceiveError::Empty));
        for req in reqs.into_iter().rev() {
            let v = req[0] * 10;
            req.respond(&v).unwrap();
        }
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(*p.wait().unwrap(), i as u64 * 10);
        }
        assert_eq!(client.in_flight(), 0);
    }
}

#[test]
fn zero_copy_loans_both_ways() {
    for node in nodes("loans") {
        let svc = node
            .service::<Bytes, Bytes>("echo")
            .max_request_size(64)
            .max_response_size(64);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let mut loan = client.loan(5).unwrap();
        loan.copy_from_slice(b"hello");
        let p = loan.send();
        let req = server.try_receive().unwrap();
        let n = req.len();
        let mut out = {
            let body: Vec<u8> = req.iter().rev().copied().collect();
            let mut out = req.loan(n).unwrap();
            out.copy_from_slice(&body);
            out
        };
        out[0] = b'O';
        out.send();
        assert_eq!(&*p.wait().unwrap(), b"Olleh");
        // A loan dropped unsent posts nothing; the next call goes through.
        drop(client.loan(3).unwrap());
        let p = client.send(b"x").unwrap();
        server.try_receive().unwrap().respond(b"y").unwrap();
        assert_eq!(&*p.wait().unwrap(), b"y");
    }
}

#[test]
fn no_server_fails_at_once_or_waits_when_asked() {
    for node in nodes("noserver") {
        let svc = node.service::<u32, u32>("lonely");
        let client = svc.client().unwrap();
        assert_eq!(client.call(&1).err(), Some(CallError::NoServer));
        let waiting = svc
            .clone()
            .wait_for_server(true)
            .timeout(Duration::from_millis(20))
            .client()
            .unwrap();
        assert_eq!(waiting.call(&1).err(), Some(CallError::NoServer));
        assert_eq!(client.in_flight(), 0);
    }
}

#[test]
fn timeout_abandons_the_call_and_the_late_response_is_discarded() {
    for node in nodes("timeout") {
        let svc = node.service::<u64, u64>("slow").max_in_flight(2);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let p = client.send(&7).unwrap();
        let req = server.try_receive().unwrap();
        let err = p.wait_timeout(Duration::from_millis(1)).err();
        assert_eq!(err, Some(CallError::Timeout(Duration::from_millis(1))));
        assert_eq!(client.in_flight(), 1, "the server still holds the call");
        assert_eq!(*req, 7);
        req.respond(&8).unwrap();
        assert_eq!(client.collect(), 0);
        assert_eq!(client.discarded(), 1);
        // The slot is reused and the next call gets its own answer.
        call_plus_one(&client, &server, 9);
    }
}

#[test]
fn a_call_nobody_took_is_cancelled_by_its_timeout() {
    for node in nodes("cancel") {
        let svc = node.service::<u64, u64>("cancel").max_in_flight(1);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let err = client.call_timeout(&1, Duration::ZERO).err();
        assert!(matches!(err, Some(CallError::Timeout(_))));
        assert_eq!(
            client.in_flight(),
            0,
            "an untaken call is cancelled, not abandoned"
        );
        assert_eq!(server.try_receive().err(), Some(ReceiveError::Empty));
        call_plus_one(&client, &server, 2);
    }
}

#[test]
fn busy_when_every_slot_is_held() {
    for node in nodes("busy") {
        let svc = node.service::<u8, u8>("busy").max_in_flight(2);
        let _server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let _a = client.send(&1).unwrap();
        let _b = client.send(&2).unwrap();
        assert_eq!(
            client.send(&3).err(),
            Some(CallError::Busy { max_in_flight: 2 })
        );
    }
}

#[test]
fn oversized_request_and_response_are_errors() {
    for node in nodes("size") {
        let svc = node
            .service::<Bytes, Bytes>("size")
            .max_request_size(16)
            .max_response_size(4);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        assert_eq!(
            client.send(&[0u8; 17]).err(),
            Some(CallError::TooLarge { len: 17, max: 16 })
        );
        assert!(matches!(client.loan(17), Err(CallError::TooLarge { .. })));
        let p = client.send(&[1u8; 16]).unwrap();
        let req = server.try_receive().unwrap();
        assert_eq!(req.len(), 16);
        assert_eq!(
            req.respond(&[0u8; 5]).err(),
            Some(SendError::TooLarge { len: 5, max: 4 })
        );
        // The failed answer aborted the call rather than leaving it to time out.
        assert_eq!(p.wait().err(), Some(CallError::Aborted));
    }
}

#[test]
fn type_mismatch_is_an_error_at_connect() {
    for node in nodes("types") {
        let _server = node.service::<u64, u32>("typed").server().unwrap();
        let wrong_response = node.service::<u64, u64>("typed").client();
        assert!(matches!(
            wrong_response,
            Err(OpenError::TypeMismatch { .. })
        ));
        let wrong_request = node.service::<u32, u32>("typed").client();
        assert!(matches!(wrong_request, Err(OpenError::TypeMismatch { .. })));
        assert!(node.service::<u64, u32>("typed").client().is_ok());
    }
}

#[test]
fn streaming_responses_arrive_in_order_and_end() {
    for node in nodes("stream") {
        let svc = node.service::<u32, u32>("count").stream_depth(2);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let mut p = client.send(&5).unwrap();
        let req = server.try_receive().unwrap();
        let n = *req;
        let mut stream = req.stream();
        // Depth 2: two responses fit before the caller reads.
        stream.send(&0).unwrap();
        stream.send(&1).unwrap();
        let mut got = Vec::new();
        for i in 2..n {
            got.push(*p.next_response().unwrap().unwrap());
            stream.send(&i).unwrap();
        }
        // Full: the end marker needs room too, and a stream that cannot get it times out.
        got.push(*p.next_response().unwrap().unwrap());
        stream.end().unwrap();
        while let Some(r) = p.next_response().unwrap() {
            got.push(*r);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.next_response().unwrap().map(|r| *r), None);
        drop(p);
        assert_eq!(client.in_flight(), 0);
    }
}

#[test]
fn dropped_request_aborts_the_call() {
    for node in nodes("abort") {
        let svc = node.service::<u32, u32>("abort");
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let p = client.send(&1).unwrap();
        drop(server.try_receive().unwrap());
        assert_eq!(p.wait().err(), Some(CallError::Aborted));
        assert_eq!(client.in_flight(), 0);
    }
}

#[test]
fn two_servers_share_the_calls() {
    for node in nodes("share") {
        let svc = node.service::<u32, u32>("share").max_in_flight(8);
        let a = svc.server().unwrap();
        let b = svc.server().unwrap();
        let client = svc.client().unwrap();
        let pending: Vec<_> = (0..8).map(|i| client.send(&i).unwrap()).collect();
        let mut taken = 0;
        loop {
            let answer = |r: ringbus::Request<'_, u32, u32>| {
                let v = *r + 100;
                r.respond(&v).unwrap();
            };
            let got_a = a.try_receive().map(answer).is_ok();
            let got_b = b.try_receive().map(answer).is_ok();
            taken += got_a as u32 + got_b as u32;
            if !got_a && !got_b {
                break;
            }
        }
        assert_eq!(taken, 8, "each call taken exactly once");
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(*p.wait().unwrap(), i as u32 + 100);
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Query {
    words: Vec<String>,
}

#[test]
fn rkyv_requests_are_validated_and_answered() {
    for node in nodes("rkyv") {
        let svc = node.service::<Rkyv<Query>, u64>("words");
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let q = Query {
            words: vec!["a".into(), "bcd".into()],
        };
        let p = client.send(&q).unwrap();
        let req = server.try_receive().unwrap();
        let total: u64 = req.words.iter().map(|w| w.len() as u64).sum();
        req.respond(&total).unwrap();
        assert_eq!(*p.wait().unwrap(), 4);
    }
}

#[test]
fn blocking_call_across_threads() {
    for node in nodes("threads") {
        let svc = node
            .service::<u64, u64>("threads")
            .spin_before_sleep(Duration::ZERO);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..1000 {
                let r = server.receive().unwrap();
                let v = *r + 1;
                r.respond(&v).unwrap();
            }
        });
        for i in 0..1000 {
            assert_eq!(*client.call(&i).unwrap(), i + 1);
        }
        t.join().unwrap();
    }
}

#[test]
fn a_loan_out_holds_back_later_calls() {
    for node in nodes("loan-order") {
        let svc = node.service::<u64, u64>("order");
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let loan = client.loan().unwrap();
        assert_eq!(client.send(&1).err(), Some(CallError::LoanOutstanding));
        drop(loan);
        call_plus_one(&client, &server, 2);
    }
}

#[test]
fn an_abandoned_stream_stops_its_server_and_frees_the_slot() {
    for node in nodes("abandon-stream") {
        // A long timeout: the server must stop because the caller left, not because it waited.
        let svc = node
            .service::<u32, u32>("abandon")
            .stream_depth(1)
            .timeout(Duration::from_secs(60));
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let mut p = client.send(&0).unwrap();
        let mut stream = server.try_receive().unwrap().stream();
        stream.send(&1).unwrap();
        assert_eq!(*p.next_response().unwrap().unwrap(), 1);
        drop(p);
        // There is room (the caller read item 1), but the caller has left.
        assert_eq!(stream.send(&2).err(), Some(SendError::Disconnected));
        drop(stream);
        assert_eq!(client.collect(), 0);
    }
}

#[test]
fn busy_can_wait_for_an_abandoned_call_to_end() {
    for node in nodes("busy-wait") {
        let svc = node
            .service::<u64, u64>("busy-wait")
            .max_in_flight(1)
            .timeout(Duration::from_secs(30))
            .wait_when_busy(true);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let answering = std::thread::spawn(move || {
            let req = server.receive().unwrap();
            taken_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let v = *req + 1;
            req.respond(&v).unwrap();
            server
        });
        let p = client.send(&1).unwrap();
        taken_rx.recv().unwrap();
        // Abandoned while the server holds it: the only slot stays in use.
        assert!(matches!(
            p.wait_timeout(Duration::ZERO),
            Err(CallError::Timeout(_))
        ));
        go_tx.send(()).unwrap();
        // Waits for the late answer (discarded) instead of failing with Busy, then sends in
        // the freed slot.
        let p = client.send(&3).unwrap();
        let server = answering.join().unwrap();
        let req = server.try_receive().unwrap();
        let v = *req + 1;
        req.respond(&v).unwrap();
        assert_eq!(*p.wait().unwrap(), 4);
        assert_eq!(client.discarded(), 1);
    }
}

#[test]
fn a_dropped_server_gives_back_the_calls_it_had_not_handed_out() {
    for node in nodes("give-back") {
        let svc = node.service::<u64, u64>("give-back").max_in_flight(4);
        let client = svc.client().unwrap();
        let first = svc.server().unwrap();
        let pending: Vec<_> = (0..4u64).map(|i| client.send(&i).unwrap()).collect();
        // The only server takes the posted calls in one batch and hands out the first.
        let req = first.try_receive().unwrap();
        let v = *req + 10;
        req.respond(&v).unwrap();
        drop(first);
        // The other three were given back, not aborted: the next server answers them.
        let second = svc.server().unwrap();
        for _ in 0..3 {
            let req = second.try_receive().unwrap();
            let v = *req + 10;
            req.respond(&v).unwrap();
        }
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(*p.wait().unwrap(), i as u64 + 10);
        }
    }
}

/// Three server threads take calls while the client cancels many of them by timing out at once:
/// every call is taken at most once, never both answered and cancelled, and every answer is
/// read or discarded.
#[test]
fn calls_are_taken_at_most_once_under_racing_servers_and_cancels() {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
    use std::sync::Arc;

    const CALLS: u64 = 60_000;
    for node in nodes("races") {
        let svc = node
            .service::<u64, u64>("races")
            .max_in_flight(8)
            .max_servers(3)
            .timeout(Duration::from_secs(30));
        let client = svc.client().unwrap();
        let taken: Arc<Vec<AtomicU8>> = Arc::new((0..CALLS).map(|_| AtomicU8::new(0)).collect());
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let servers: Vec<_> = (0..3)
            .map(|_| {
                let server = svc.server().unwrap();
                let (taken, answered, stop) = (taken.clone(), answered.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(req) = server.receive_timeout(Duration::from_millis(5)) else {
                            continue;
                        };
                        let seq = *req;
                        let before = taken[seq as usize].fetch_add(1, Ordering::SeqCst);
                        assert_eq!(before, 0, "call {seq} taken twice");
                        req.respond(&seq).unwrap();
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let (mut ok, mut timeouts) = (0u64, 0u64); // timeouts: calls dropped unanswered
        let mut seq = 0;
        while seq < CALLS {
            // Every third call is dropped right after it is posted: the client's cancel races
            // the servers' takes.
            if seq % 3 == 0 {
                match client.send(&seq) {
                    Ok(p) => {
                        drop(p);
                        timeouts += 1;
                    }
                    Err(CallError::Busy { .. }) => {
                        client.collect();
                        continue; // retry the same call
                    }
                    Err(e) => panic!("call {seq}: {e}"),
                }
                seq += 1;
                continue;
            }
            match client.call(&seq) {
                Ok(r) => {
                    assert_eq!(*r, seq);
                    ok += 1;
                }
                Err(CallError::Busy { .. }) => {
                    client.collect();
                    continue; // retry the same call
                }
                Err(e) => panic!("call {seq}: {e}"),
            }
            seq += 1;
        }
        // Late answers of abandoned calls arrive and are discarded.
        let mut rounds = 0;
        while client.collect() != 0 {
            std::thread::yield_now();
            rounds += 1;
            assert!(rounds < 10_000_000, "slots never came back");
        }
        stop.store(true, Ordering::SeqCst);
        for s in servers {
            s.join().unwrap();
        }
        assert_eq!(ok + timeouts, CALLS);
        let answered = answered.load(Ordering::SeqCst);
        assert_eq!(
            answered,
            ok + client.discarded(),
            "answers read or discarded"
        );
        assert!(answered <= CALLS);
        let cancelled = CALLS - answered;
        assert!(ok > 0 && (cancelled > 0 || client.discarded() > 0));
    }
}
