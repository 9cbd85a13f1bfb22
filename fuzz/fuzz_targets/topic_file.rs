//! A topic's segment file, patched, then joined, published to and read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbus::Node;

mod common;

fuzz_target!(|input: &[u8]| {
    let scratch = common::Scratch::new("topic");
    let node = Node::with_root(&scratch.0).unwrap();
    let t = node.topic_bytes("f").capacity(8).max_message_size(64);
    let mut p = t.publisher().unwrap();
    if let Ok(mut loan) = p.loan(5) {
        loan.copy_from_slice(b"hello");
        loan.send();
    }
    common::patch(&scratch.0.join("topic_f"), input);
    if let Ok(s) = t.subscriber() {
        for _ in 0..4 {
            if let Ok(m) = s.try_receive() {
                assert!(m.len() <= 64);
            }
        }
    }
    if let Ok(mut p2) = t.publisher() {
        if let Ok(loan) = p2.try_loan(3) {
            loan.send();
        }
    }
    drop(p);
});
