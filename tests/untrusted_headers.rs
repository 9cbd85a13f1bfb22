//! Segment headers and shapes that disagree with what a handle asks for: another layout version,
//! a durable queue joined with other options, a crafted header whose type does not fit its
//! slots, type names longer than the header holds. Each ends in a typed error or in correct
//! operation, never in a write outside a slot.

mod common;

use common::*;
use ringbus::{Node, OpenError, SendError};

/// Offset of the layout version word in every segment header.
const VERSION: u64 = 8;

#[test]
fn a_segment_of_another_layout_version_is_refused_for_every_kind() {
    let root = test_root("version");
    let node = Node::with_root(&root).unwrap();
    // One live handle per kind keeps each segment; its version word is then changed.
    let _topic = node.topic::<u64>("v-topic").publisher().unwrap();
    let _service = node.service::<u64, u64>("v-service").server().unwrap();
    let _queue = node.queue::<u64>("v-queue").consumer().unwrap();
    for file in ["topic_v-topic", "service_v-service", "queue_v-queue"] {
        patch(&root.join(file), VERSION, &99u32.to_le_bytes());
    }
    let refused = |r: Result<(), OpenError>| {
        assert!(
            matches!(r, Err(OpenError::VersionMismatch { found: 99, .. })),
            "{r:?}"
        )
    };
    refused(node.topic::<u64>("v-topic").subscriber().map(drop));
    refused(node.service::<u64, u64>("v-service").client().map(drop));
    refused(node.queue::<u64>("v-queue").producer().map(drop));
    drop((_topic, _service, _queue));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_durable_producer_with_other_options_writes_within_the_queues_records() {
    let root = test_root("shape");
    let dir = data_dir("shape");
    let node = Node::with_root(&root).unwrap();
    let queue = |max: usize, records: u64| {
        node.queue_bytes("shape")
            .capacity(16)
            .durable(&dir)
            .max_message_size(max)
            .segment_records(records)
    };
    // The queue is created with 4096-byte messages and 16 records per file...
    let consumer = queue(4096, 16).consumer().unwrap();
    // ...and joined with other options: the queue's own shape wins, for the ring and the log.
    let mut producer = queue(64, 32).producer().unwrap();
    assert_eq!(producer.max_message_size(), 4096);
    for i in 0..100u32 {
        let msg: Vec<u8> = (0..1000u32).map(|b| (b ^ i) as u8).collect();
        producer.send(&msg).unwrap();
        let d = consumer.try_receive().unwrap();
        assert_eq!(&*d, &msg[..], "message {i}");
        d.ack().unwrap();
    }
    let mut loan = producer.loan(4000).unwrap();
    loan.fill(7);
    loan.send().unwrap();
    let d = consumer.try_receive().unwrap();
    assert!(d.len() == 4000 && d.iter().all(|&b| b == 7));
    d.ack().unwrap();
    assert!(matches!(
        producer.loan(4097),
        Err(SendError::TooLarge { len: 4097, .. })
    ));
    drop((producer, consumer));

    // Recovery (nobody alive) by a handle with yet other options uses the queue's shape too.
    let mut producer = queue(8, 64).producer().unwrap();
    producer.send(&[5; 3000]).unwrap();
    let consumer = queue(8, 64).consumer().unwrap();
    assert_eq!(&*consumer.try_receive().unwrap(), &[5; 3000][..]);
    drop((producer, consumer));
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ring_rebuilt_over_a_log_of_another_shape_is_a_typed_error() {
    let root = test_root("log-shape");
    let dir = data_dir("log-shape");
    let node = Node::with_root(&root).unwrap();
    let queue = |records: u64| {
        node.queue::<u64>("logshape")
            .capacity(16)
            .durable(&dir)
            .segment_records(records)
    };
    let mut p = queue(16).producer().unwrap();
    for i in 0..16 {
        p.send(&i).unwrap();
    }
    drop(p);
    // The ring file is lost; a new ring of another record count would misplace every record.
    std::fs::remove_file(dir.join("queue_logshape")).unwrap();
    let err = queue(32).consumer().map(drop);
    assert!(
        matches!(err, Err(OpenError::TypeMismatch { .. })),
        "{err:?}"
    );
    // With the log's own shape, its messages are all there.
    let c = queue(16).consumer().unwrap();
    let held: Vec<_> = std::iter::from_fn(|| c.try_receive().ok()).collect();
    assert_eq!(
        held.iter().map(|d| **d).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    drop(held);
    drop(c);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_crafted_header_whose_type_outgrows_its_slots_is_refused() {
    let root = test_root("pod-size");
    let node = Node::with_root(&root).unwrap();
    // A queue of 1-byte messages, kept alive by its consumer.
    let _c = node.queue::<u8>("podsize").capacity(4).consumer().unwrap();
    // Its header now claims a 4096-byte type: internally consistent, but the slots hold 1 byte.
    let name = std::any::type_name::<[u8; 4096]>();
    let file = root.join("queue_podsize");
    patch(&file, 32, &4096u64.to_le_bytes()); // type size
    patch(&file, 48, &(name.len() as u64).to_le_bytes()); // type name length
    patch(&file, 56, name.as_bytes());
    let err = node.queue::<[u8; 4096]>("podsize").producer().map(drop);
    assert!(
        matches!(err, Err(OpenError::TypeMismatch { .. })),
        "{err:?}"
    );
    drop(_c);
    let _ = std::fs::remove_dir_all(&root);
}

/// A `Pod` type whose name is longer than the 128 bytes a header holds.
mod a_module_with_a_long_name_so_that_the_payload_type_name_is_longer_than_a_header_holds {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    pub struct AndAStructWithALongNameTooSoThatTheWholeNameExceedsOneHundredAndTwentyEightBytes(
        pub u64,
    );

    /// Another type, named like the first up to its last characters.
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    pub struct AndAStructWithALongNameTooSoThatTheWholeNameExceedsOneHundredAndTwentyEightBytez(
        pub u64,
    );
}
use a_module_with_a_long_name_so_that_the_payload_type_name_is_longer_than_a_header_holds::{
    AndAStructWithALongNameTooSoThatTheWholeNameExceedsOneHundredAndTwentyEightBytes as Long,
    AndAStructWithALongNameTooSoThatTheWholeNameExceedsOneHundredAndTwentyEightBytez as LongToo,
};

#[test]
fn payload_types_with_long_names_join_like_short_ones() {
    assert!(std::any::type_name::<Long>().len() > 128);
    let root = test_root("long-name");
    let node = Node::with_root(&root).unwrap();
    let topic = node.topic::<Long>("long-topic");
    let mut publisher = topic.publisher().unwrap();
    let subscriber = topic.subscriber().unwrap();
    let mut loan = publisher.loan().unwrap();
    *loan = Long(7);
    loan.send();
    assert_eq!(subscriber.receive().unwrap().0, 7);

    let queue = node.queue::<Long>("long-queue");
    let mut producer = queue.producer().unwrap();
    let consumer = queue.consumer().unwrap();
    producer.send(&Long(8)).unwrap();
    assert_eq!(consumer.try_receive().unwrap().0, 8);

    let service = node.service::<Long, Long>("long-service");
    let server = service.server().unwrap();
    let client = service.client().unwrap();
    let pending = client.send(&Long(9)).unwrap();
    let request = server.receive().unwrap();
    let answer = Long(request.0 + 1);
    request.respond(&answer).unwrap();
    assert_eq!(pending.wait().unwrap().0, 10);

    // Another type whose long name differs only past the first 128 bytes is another type.
    let other = node.queue::<LongToo>("long-queue").consumer().map(drop);
    assert!(
        matches!(other, Err(OpenError::TypeMismatch { .. })),
        "{other:?}"
    );
    drop((publisher, subscriber, producer, consumer, server, client));
    let _ = std::fs::remove_dir_all(&root);
}
