//! Request/response across real processes: matching under load, timeouts and late responses,
//! servers and clients SIGKILLed at bad moments, restarts, streams, type and size errors. Child
//! roles run in this same test binary (see `common`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringbus::{Bytes, CallError, Node, OpenError, ServiceBuilder};

const MAX_REQUEST: usize = 256;
/// Response: client id, sequence number, checksum of the request body.
const RESPONSE: usize = 24;

fn service(node: &Node, name: &str) -> ServiceBuilder<Bytes, Bytes> {
    node.service::<Bytes, Bytes>(name)
        .max_request_size(MAX_REQUEST)
        .max_response_size(RESPONSE)
        .max_clients(8)
        .max_servers(4)
        .max_in_flight(8)
        .stream_depth(2)
        .timeout(Duration::from_secs(30))
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap())
}

/// A request: client id, sequence number, then random bytes.
fn request(id: u64, seq: u64, rng: &mut Rng) -> Vec<u8> {
    let len = 16 + rng.next() as usize % (MAX_REQUEST - 16);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((16..len).map(|_| rng.next() as u8));
    v
}

/// The echo server's answer to `req`.
fn answer(req: &[u8]) -> [u8; RESPONSE] {
    let mut out = [0u8; RESPONSE];
    out[..16].copy_from_slice(&req[..16]);
    out[16..].copy_from_slice(&checksum(&req[16..]).to_le_bytes());
    out
}

/// Runs until the parent closes stdin; returns the flag it sets.
fn stop_on_parent_eof() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while wait_parent().is_some() {}
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// Entry point of every child role; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    let get = |k: &str| a.get(k).map(|v| v.parse::<u64>().unwrap()).unwrap_or(0);
    let name = a.get("service").cloned().unwrap_or_default();
    let node = Node::new().unwrap();
    match role.as_str() {
        "echo-server" => {
            let server = service(&node, &name).server().unwrap();
            let stop = stop_on_parent_eof();
            tell("ready");
            let mut served = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let Ok(req) = server.receive_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let out = answer(&req);
                if get("delay_us") > 0 {
                    std::thread::sleep(Duration::from_micros(get("delay_us")));
                }
                req.respond(&out).unwrap();
                served += 1;
            }
            tell(&format!("served {served}"));
        }
        "holding-server" => {
            // Takes `hold` calls, keeps them unanswered and waits to be killed.
            let server = service(&node, &name).server().unwrap();
            tell("ready");
            let mut held = Vec::new();
            while held.len() < get("hold") as usize {
                held.push(server.receive().unwrap());
            }
            tell(&format!("took {}", held.len()));
            wait_parent();
        }
        "stream-server" => {
            let server = service(&node, &name).server().unwrap();
            tell("ready");
            let req = server.receive().unwrap();
            let n = word(&req, 0);
            let mut stream = req.stream();
            for i in 0..n {
                let mut item = [0u8; RESPONSE];
                item[..8].copy_from_slice(&i.to_le_bytes());
                stream.send(&item).unwrap();
            }
            stream.end().unwrap();
            tell("streamed");
            wait_parent();
        }
        "client" => {
            let client = service(&node, &name).client().unwrap();
            let id = get("id");
            let depth = get("depth").max(1) as usize;
            let mut rng = Rng(id * 7919 + 1);
            tell("ready");
            let mut pending = std::collections::VecDeque::new();
            let mut ok = 0u64;
            let mut check = |resp: &[u8], expect_seq: u64, sum: u64| {
                assert_eq!(resp.len(), RESPONSE);
                assert_eq!(word(resp, 0), id, "response of another client");
                assert_eq!(word(resp, 1), expect_seq, "response of another call");
                assert_eq!(word(resp, 2), sum, "response to another request");
                ok += 1;
            };
            for seq in 0..get("calls") {
                let req = request(id, seq, &mut rng);
                let sum = checksum(&req[16..]);
                pending.push_back((client.send(&req).unwrap(), seq, sum));
                if pending.len() == depth {
                    let (p, s, sum) = pending.pop_front().unwrap();
                    check(&p.wait().unwrap(), s, sum);
                }
            }
            for (p, s, sum) in pending {
                check(&p.wait().unwrap(), s, sum);
            }
            tell(&format!("ok {ok}"));
            wait_parent();
        }
        "busy-client" => {
            // Pipelines calls until killed.
            let client = service(&node, &name).client().unwrap();
            let mut rng = Rng(get("id") + 3);
            tell("ready");
            let mut pending = std::collections::VecDeque::new();
            for seq in 0.. {
                pending.push_back(client.send(&request(1, seq, &mut rng)).unwrap());
                if pending.len() == 8 {
                    pending.pop_front().unwrap().wait().unwrap();
                }
            }
        }
        "doomed-client" => {
            // Sends `calls` calls and is killed with them in flight.
            let client = service(&node, &name).client().unwrap();
            let pending: Vec<_> = (0..get("calls"))
                .map(|i| client.send(&i.to_le_bytes()).unwrap())
                .collect();
            tell(&format!("sent {}", pending.len()));
            wait_parent();
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn_server(role: &str, root: &std::path::PathBuf, args: &str) -> ChildRole {
    let mut s = ChildRole::spawn(role, root, args);
    s.expect("ready");
    s
}

#[test]
fn every_response_reaches_its_own_caller() {
    let root = test_root("rpc-match");
    let servers: Vec<_> = (0..2)
        .map(|_| spawn_server("echo-server", &root, "service=match"))
        .collect();
    let mut clients: Vec<_> = (0..4)
        .map(|id| {
            let depth = [1, 2, 4, 8][id];
            let args = format!("service=match id={id} calls=10000 depth={depth}");
            let mut c = ChildRole::spawn("client", &root, &args);
            c.expect("ready");
            c
        })
        .collect();
    for c in &mut clients {
        assert_eq!(c.expect("ok"), "10000");
    }
    for c in clients {
        assert!(c.finish());
    }
    let mut served = 0;
    for mut s in servers {
        s.close();
        served += s.expect("served").parse::<u64>().unwrap();
        assert!(s.finish());
    }
    assert_eq!(served, 40_000, "every call served exactly once");
}

#[test]
fn late_responses_are_discarded_and_slots_reused() {
    let root = test_root("rpc-late");
    let server = spawn_server("echo-server", &root, "service=late delay_us=2000");
    let node = Node::with_root(&root).unwrap();
    let client = service(&node, "late").client().unwrap();
    let mut rng = Rng(5);
    let (mut timeouts, mut answered) = (0u64, 0u64);
    for seq in 0..200 {
        let req = request(9, seq, &mut rng);
        match client.call_timeout(&req, Duration::from_micros(500)) {
            Err(CallError::Timeout(_)) => timeouts += 1,
            Ok(r) => {
                assert_eq!(word(&r, 1), seq);
                answered += 1;
            }
            Err(CallError::Busy { .. }) => {
                // Every slot waits for a late answer: wait for one and retry.
                std::thread::sleep(Duration::from_millis(3));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(timeouts > 0, "the server is slower than the timeout");
    // Every late answer arrives and is discarded; then no slot is in use.
    let mut spins = 0;
    while client.collect() != 0 {
        std::thread::sleep(Duration::from_millis(5));
        spins += 1;
        assert!(spins < 2000, "abandoned slots never came back");
    }
    // A timed-out call a server had taken gets its answer late (discarded); one still waiting
    // in the ring was cancelled (never answered).
    assert!(client.discarded() > 0 && client.discarded() <= timeouts);
    // Fresh calls still match their own answers.
    for seq in 1000..1010 {
        let req = request(9, seq, &mut rng);
        let r = client.call(&req).unwrap();
        assert_eq!(word(&r, 1), seq);
        answered += 1;
    }
    assert!(answered >= 10);
    drop(client);
    assert!(server.finish());
}

#[test]
fn killed_server_fails_waiting_calls_and_a_restarted_one_is_found() {
    let root = test_root("rpc-server-kill");
    let mut holder = spawn_server("holding-server", &root, "service=sk hold=3");
    let node = Node::with_root(&root).unwrap();
    let client = service(&node, "sk").client().unwrap();
    let pending: Vec<_> = (0..3u64)
        .map(|i| client.send(&i.to_le_bytes()).unwrap())
        .collect();
    assert_eq!(holder.expect("took"), "3");
    holder.kill();
    // Every waiting call fails with Disconnected (within the check interval; the 30 s timeout
    // would give Timeout instead).
    for p in pending {
        assert_eq!(p.wait().err(), Some(CallError::Disconnected));
    }
    assert_eq!(client.in_flight(), 0);
    // No server now: a call fails at once (the dead one was reclaimed).
    assert_eq!(client.call(&[1]).err(), Some(CallError::NoServer));
    // A restarted server is found by the same client.
    let server = spawn_server("echo-server", &root, "service=sk");
    let mut rng = Rng(3);
    for seq in 0..100 {
        let req = request(1, seq, &mut rng);
        assert_eq!(word(&client.call(&req).unwrap(), 1), seq);
    }
    drop(client);
    assert!(server.finish());
}

#[test]
fn killed_client_does_not_disturb_server_or_others_and_its_entry_is_reused() {
    let root = test_root("rpc-client-kill");
    let node = Node::with_root(&root).unwrap();
    // Two client entries: this process's and the doomed child's.
    let svc = service(&node, "ck").max_clients(2);
    let server = svc.server().unwrap();
    let me = svc.client().unwrap();
    let mut doomed = ChildRole::spawn("doomed-client", &root, "service=ck calls=8");
    assert_eq!(doomed.expect("sent"), "8");
    // Take some of its calls; leave the rest posted.
    let taken: Vec<_> = (0..3).map(|_| server.receive().unwrap()).collect();
    doomed.kill();
    // Answering a dead caller is harmless.
    for req in taken {
        req.respond(&[0u8; RESPONSE]).unwrap();
    }
    // The other client is served as usual (the server also meets the dead client's posted
    // calls: it answers them into the void).
    let mut rng = Rng(11);
    for seq in 0..50 {
        let req = request(2, seq, &mut rng);
        let p = me.send(&req).unwrap();
        loop {
            let r = server.receive().unwrap();
            let mine = word(&r, 0) == 2 && r.len() >= 16;
            let out = if r.len() >= 16 {
                answer(&r)
            } else {
                [0; RESPONSE]
            };
            r.respond(&out).unwrap();
            if mine {
                break;
            }
        }
        assert_eq!(word(&p.wait().unwrap(), 1), seq);
    }
    // The dead client's entry is reclaimed: a new client gets it and all its slots work.
    let again = svc.client().unwrap();
    for i in 0..16u64 {
        let p = again.send(&i.to_le_bytes()).unwrap();
        let r = server.receive().unwrap();
        let mut out = [0u8; RESPONSE];
        out[..8].copy_from_slice(&r[..8]);
        r.respond(&out).unwrap();
        assert_eq!(word(&p.wait().unwrap(), 0), i);
    }
    assert_eq!(again.in_flight(), 0);
}

#[test]
fn streamed_responses_cross_processes_in_order_and_end() {
    let root = test_root("rpc-stream");
    let server = spawn_server("stream-server", &root, "service=st");
    let node = Node::with_root(&root).unwrap();
    let client = service(&node, "st").client().unwrap();
    let mut p = client.send(&1000u64.to_le_bytes()).unwrap();
    let mut next = 0u64;
    while let Some(item) = p.next_response().unwrap() {
        assert_eq!(word(&item, 0), next);
        next += 1;
    }
    assert_eq!(next, 1000);
    drop(p);
    assert_eq!(client.in_flight(), 0);
    assert!(server.finish());
}

#[test]
fn type_mismatch_and_oversized_requests_are_errors() {
    let root = test_root("rpc-types");
    let server = spawn_server("echo-server", &root, "service=types");
    let node = Node::with_root(&root).unwrap();
    let wrong = node.service::<u64, u64>("types").client();
    assert!(matches!(wrong, Err(OpenError::TypeMismatch { .. })));
    let client = service(&node, "types").client().unwrap();
    assert_eq!(
        client.send(&[0u8; MAX_REQUEST + 1]).err(),
        Some(CallError::TooLarge {
            len: MAX_REQUEST + 1,
            max: MAX_REQUEST
        })
    );
    drop(client);
    assert!(server.finish());
}

#[test]
fn servers_killed_at_random_moments_never_leave_a_call_hanging() {
    let root = test_root("rpc-random-kill");
    let node = Node::with_root(&root).unwrap();
    let client = service(&node, "rk").client().unwrap();
    let mut rng = Rng(99);
    let (mut ok, mut failed) = (0u64, 0u64);
    for round in 0..6 {
        let server = spawn_server("echo-server", &root, "service=rk");
        // Kill after a random number of pipelined calls (0..3000), mid-stream.
        let kill_after = rng.next() % 3000;
        let mut pending = std::collections::VecDeque::new();
        let mut server = Some(server);
        for seq in 0..4000u64 {
            if seq == kill_after {
                server.take().unwrap().kill();
            }
            let req = request(round, seq, &mut rng);
            match client.send(&req) {
                Ok(p) => pending.push_back((p, seq)),
                // After the kill: the dead server was noticed (NoServer), or its calls still
                // hold the slots (Busy) until they fail.
                Err(CallError::Busy { .. } | CallError::NoServer) => {}
                Err(e) => panic!("send: {e}"),
            }
            while pending.len() >= 8 {
                let (p, s) = pending.pop_front().unwrap();
                match p.wait() {
                    Ok(r) => {
                        assert_eq!((word(&r, 0), word(&r, 1)), (round, s));
                        ok += 1;
                    }
                    // The 30 s timeout would show up as Timeout: every call ends promptly.
                    Err(CallError::Disconnected | CallError::NoServer | CallError::Aborted) => {
                        failed += 1
                    }
                    Err(e) => panic!("call {s} of round {round}: {e}"),
                }
            }
            if server.is_none() && seq > kill_after + 16 {
                break;
            }
        }
        for (p, _) in pending {
            assert!(!matches!(p.wait(), Err(CallError::Timeout(_))));
        }
        if let Some(s) = server {
            s.kill();
        }
    }
    assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    // Every slot comes back once the dead servers are noticed.
    let server = spawn_server("echo-server", &root, "service=rk");
    let req = request(7, 7, &mut rng);
    assert_eq!(word(&client.call(&req).unwrap(), 1), 7);
    assert_eq!(client.collect(), 0);
    drop(client);
    assert!(server.finish());
}

#[test]
fn clients_killed_at_random_moments_leave_their_entry_reusable() {
    let root = test_root("rpc-client-random-kill");
    let server = spawn_server("echo-server", &root, "service=crk");
    let node = Node::with_root(&root).unwrap();
    let mut rng = Rng(5);
    for id in 0..5 {
        let mut c = ChildRole::spawn("busy-client", &root, &format!("service=crk id={id}"));
        c.expect("ready");
        std::thread::sleep(Duration::from_micros(rng.next() % 20_000));
        c.kill();
    }
    // Entries are taken lowest first: this client takes over the dead ones' entry 0 (reclaimed
    // at its join), and all its slots work.
    let client = service(&node, "crk").client().unwrap();
    for seq in 0..100 {
        let req = request(2, seq, &mut rng);
        assert_eq!(word(&client.call(&req).unwrap(), 1), seq);
    }
    assert_eq!(client.collect(), 0);
    drop(client);
    assert!(server.finish());
}

#[test]
fn corrupt_and_garbage_service_segments_and_bad_names_are_errors() {
    let root = test_root("rpc-corrupt");
    let node = Node::with_root(&root).unwrap();
    // A live service (a server in a child) whose header the test corrupts.
    let server = spawn_server("echo-server", &root, "service=bad");
    let file = root.join("service_bad");
    let mut bytes = std::fs::read(&file).unwrap();
    // Rewrites the header in place: truncating a mapped file would SIGBUS the live server.
    let patch = |bytes: &[u8]| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&bytes[..256], 0).unwrap();
    };
    // The max in flight configuration word becomes 3: not a power of two.
    let in_flight = 184 + 8 * ringbus::layout::service::CONFIG_IN_FLIGHT;
    bytes[in_flight..in_flight + 8].copy_from_slice(&3u64.to_le_bytes());
    patch(&bytes);
    assert!(matches!(
        service(&node, "bad").client(),
        Err(OpenError::Corrupt(_))
    ));
    // Segment kind 1 (a topic) under a service's name.
    bytes[in_flight..in_flight + 8].copy_from_slice(&8u64.to_le_bytes());
    bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
    patch(&bytes);
    assert!(matches!(
        service(&node, "bad").client(),
        Err(OpenError::Corrupt(_))
    ));
    assert!(server.finish());
    // Garbage: refused, and left as it was.
    let mut rng = Rng(9);
    let garbage: Vec<u8> = (0..16384).map(|_| rng.next() as u8).collect();
    std::fs::write(root.join("service_garbage"), &garbage).unwrap();
    assert!(matches!(
        service(&node, "garbage").server(),
        Err(OpenError::Corrupt(_))
    ));
    assert_eq!(
        std::fs::read(root.join("service_garbage")).unwrap(),
        garbage
    );
    for name in ["", "../escape", "a/b", "dot.name"] {
        assert!(matches!(
            service(&node, name).client(),
            Err(OpenError::InvalidName(_))
        ));
    }
}
