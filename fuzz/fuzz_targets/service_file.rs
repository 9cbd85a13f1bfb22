//! A service's segment file, patched, then joined by a client and a server that exchange a call.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringbus::{Bytes, Node};

mod common;

fuzz_target!(|input: &[u8]| {
    let scratch = common::Scratch::new("service");
    let node = Node::with_root(&scratch.0).unwrap();
    let svc = node.service::<Bytes, Bytes>("f");
    let owner = svc.server().unwrap();
    common::patch(&scratch.0.join("service_f"), input);
    let (Ok(server), Ok(client)) = (svc.server(), svc.client()) else {
        return;
    };
    if let Ok(pending) = client.send(b"ping") {
        if let Ok(request) = server.try_receive() {
            let _ = request.respond(b"pong");
        }
        let _ = pending.wait_timeout(Duration::from_millis(1));
    }
    drop(owner);
});
