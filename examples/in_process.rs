//! Publish/subscribe between threads of one process, without touching /dev/shm.
//!
//! `cargo run --example in_process`

use std::time::Duration;

use ringbus::{topic::Policy, Node};

#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::in_process();
    let topic = node
        .topic::<Tick>("ticks")
        .capacity(256)
        .policy(Policy::Block);
    let subscribers: Vec<_> = (0..2)
        .map(|_| topic.subscriber())
        .collect::<Result<_, _>>()?;
    let mut publisher = topic.publisher()?;

    let readers: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .map(|(id, sub)| {
            std::thread::spawn(move || {
                let mut sum = 0.0;
                for expect in 0..1000u64 {
                    let tick = sub.receive_timeout(Duration::from_secs(5)).expect("a tick");
                    assert_eq!(tick.seq, expect);
                    sum += tick.price;
                }
                println!("subscriber {id}: 1000 ticks, sum of prices {sum}");
            })
        })
        .collect();

    for seq in 0..1000u64 {
        let mut loan = publisher.loan()?; // a slot in the ring, written in place
        *loan = Tick {
            seq,
            price: 100.0 + seq as f64 / 100.0,
        };
        loan.send();
    }
    for r in readers {
        r.join().expect("subscriber thread");
    }
    Ok(())
}
