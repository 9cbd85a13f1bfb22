//! Publish/subscribe between two processes through shared memory.
//!
//! `cargo run --example pubsub` starts a subscriber, which spawns this same program as the
//! publisher (`cargo run --example pubsub -- publish` runs that role alone).
//! Messages are byte strings read in place from the shared segment.

use std::time::Duration;

use ringbus::{topic::Policy, Node, ReceiveError};

const TOPIC: &str = "example-greetings";
const COUNT: u64 = 10;

fn topic(node: &Node) -> ringbus::TopicBuilder<ringbus::Bytes> {
    node.topic_bytes(TOPIC)
        .max_message_size(256)
        .capacity(16)
        .policy(Policy::Block)
}

fn publish() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::new()?;
    let mut publisher = topic(&node).publisher()?;
    for i in 0..COUNT {
        let text = format!("hello #{i} from process {}", std::process::id());
        let mut loan = publisher.loan(text.len())?;
        loan.copy_from_slice(text.as_bytes());
        loan.send();
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("publish") {
        return publish();
    }
    let node = Node::new()?;
    // Subscribe first, so no message is sent before we listen.
    let subscriber = topic(&node).subscriber()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("publish")
        .spawn()?;
    for _ in 0..COUNT {
        match subscriber.receive_timeout(Duration::from_secs(10)) {
            Ok(msg) => println!("received: {}", String::from_utf8_lossy(&msg)),
            Err(ReceiveError::Timeout(t)) => return Err(format!("nothing within {t:?}").into()),
            Err(e) => return Err(e.into()),
        }
    }
    child.wait()?;
    Ok(())
}
