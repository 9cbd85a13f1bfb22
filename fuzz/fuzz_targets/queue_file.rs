//! An in-memory queue's segment file, patched, then joined, sent to and received from: every
//! input must end in a typed error or a correct result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbus::{queue::Policy, Node};

mod common;

fuzz_target!(|input: &[u8]| {
    let scratch = common::Scratch::new("queue");
    let node = Node::with_root(&scratch.0).unwrap();
    let q = node.queue_bytes("f").capacity(8).max_message_size(64).policy(Policy::Fail);
    {
        let mut p = q.producer().unwrap();
        p.send(b"a message").unwrap();
        let owner = q.consumer().unwrap();
        // The file outlives this scope only while a handle holds it: patch it now, then join.
        common::patch(&scratch.0.join("queue_f"), input);
        if let Ok(c) = q.consumer() {
            for _ in 0..4 {
                if let Ok(d) = c.try_receive() {
                    assert!(d.len() <= 64);
                    let _ = d.ack();
                }
            }
        }
        if let Ok(mut p2) = q.producer() {
            let _ = p2.send(b"another");
        }
        drop(owner);
    }
});
