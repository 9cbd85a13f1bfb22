//! A durable queue's ring file and first log segment file, patched (the input is split between
//! them by its first byte), then recovered, received from and sent to. Every delivery must be a
//! message that was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbus::{queue::Policy, Node, SyncPolicy};

mod common;

const SENT: [&[u8]; 3] = [b"first", b"second", b"third"];

fuzz_target!(|input: &[u8]| {
    let scratch = common::Scratch::new("durable");
    let node = Node::with_root(&scratch.0.join("shm")).unwrap();
    let data = scratch.0.join("data");
    let q = node
        .queue_bytes("f")
        .capacity(8)
        .max_message_size(48)
        .segment_records(4)
        .durable(&data)
        .sync_policy(SyncPolicy::Never)
        .policy(Policy::Fail);
    {
        let mut p = q.producer().unwrap();
        for m in SENT {
            p.send(m).unwrap();
        }
    }
    let (split, rest) = input.split_first().map_or((0, input), |(&b, r)| (b, r));
    let at = (rest.len() * split as usize / 256) / 10 * 10;
    common::patch(&data.join("queue_f"), &rest[..at]);
    common::patch(
        &data.join("queue_f.log").join("00000000000000000000.seg"),
        &rest[at..],
    );
    if let Ok(c) = q.consumer() {
        for _ in 0..6 {
            if let Ok(d) = c.try_receive() {
                assert!(SENT.contains(&&d[..]), "delivered bytes never sent: {:?}", &d[..]);
                let _ = d.ack();
            }
        }
        if let Ok(mut p) = q.producer() {
            let _ = p.send(b"fourth");
        }
    }
});
