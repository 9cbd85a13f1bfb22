//! In-process cost of one send + one receive (same thread), ringbus beside crossbeam-channel's
//! bounded channel, for a 64-byte message. Run: `cargo bench --bench inprocess`.
//!
//! The cross-process latency figures come from the harness (`cargo run --release -p ringbus-cli
//! -- bench`); this bench isolates the instructions of the hot path, without any cache-line
//! transfer. The `call_64B` group does the same for one request/response call, `queue_64B` for
//! one queued message (send, claim, read, ack).

use criterion::{black_box, criterion_group, criterion_main, Criterion};

type Msg = [u64; 8];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_receive_64B");

    let local = ringbus::Node::in_process();
    let topic = local.topic::<Msg>("bench-inprocess").capacity(64);
    let mut p = topic.publisher().unwrap();
    let s = topic.subscriber().unwrap();
    g.bench_function("ringbus_in_process", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut loan = p.loan().unwrap();
            loan[0] = i;
            loan.send();
            let got = s.try_receive().unwrap();
            i = i.wrapping_add(black_box(got[0]) + 1);
        })
    });

    let root = std::env::temp_dir().join(format!("ringbus-bench-{}", std::process::id()));
    let shm = ringbus::Node::with_root(&root).unwrap();
    let topic = shm.topic::<Msg>("bench-shm").capacity(64);
    let mut p2 = topic.publisher().unwrap();
    let s2 = topic.subscriber().unwrap();
    g.bench_function("ringbus_shm", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut loan = p2.loan().unwrap();
            loan[0] = i;
            loan.send();
            let got = s2.try_receive().unwrap();
            i = i.wrapping_add(black_box(got[0]) + 1);
        })
    });

    let (tx, rx) = crossbeam_channel::bounded::<Msg>(64);
    g.bench_function("crossbeam_bounded", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut m = [0u64; 8];
            m[0] = i;
            tx.send(m).unwrap();
            let got = rx.recv().unwrap();
            i = i.wrapping_add(black_box(got[0]) + 1);
        })
    });
    g.finish();
    drop((p2, s2));

    // One whole call (send, take, respond, read the response) in one thread: the instructions
    // of the call path of both sides, without any cache-line transfer.
    let mut g = c.benchmark_group("call_64B");
    let svc = shm.service::<Msg, u64>("bench-call").max_in_flight(16);
    let server = svc.server().unwrap();
    let client = svc.client().unwrap();
    g.bench_function("ringbus_shm", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut loan = client.loan().unwrap();
            loan[0] = i;
            let pending = loan.send();
            let req = server.try_receive().unwrap();
            let answer = req[0] + 1;
            req.respond(&answer).unwrap();
            i = black_box(*pending.wait().unwrap());
        })
    });
    g.finish();
    drop((client, server));

    // One queued message (send, claim, read, ack) in one thread, in memory and durable (log
    // record written and checksummed; no sync), beside crossbeam's ArrayQueue push + pop.
    let mut g = c.benchmark_group("queue_64B");
    let q = shm.queue::<Msg>("bench-queue").capacity(1024);
    let mut qp = q.producer().unwrap();
    let qc = q.consumer().unwrap();
    g.bench_function("ringbus_shm", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut loan = qp.loan().unwrap();
            loan[0] = i;
            loan.send().unwrap();
            let d = qc.try_receive().unwrap();
            i = i.wrapping_add(black_box(d[0]) + 1);
            d.ack().unwrap();
        })
    });
    let dir = root.join("durable");
    let dq = shm
        .queue::<Msg>("bench-queue-durable")
        .capacity(1024)
        .durable(&dir)
        .sync_policy(ringbus::SyncPolicy::Never);
    let mut dp = dq.producer().unwrap();
    let dc = dq.consumer().unwrap();
    g.bench_function("ringbus_durable_never", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut loan = dp.loan().unwrap();
            loan[0] = i;
            loan.send().unwrap();
            let d = dc.try_receive().unwrap();
            i = i.wrapping_add(black_box(d[0]) + 1);
            d.ack().unwrap();
        })
    });
    let aq = crossbeam_queue::ArrayQueue::<Msg>::new(1024);
    g.bench_function("crossbeam_array_queue", |b| {
        let mut i = 0u64;
        b.iter(|| {
            let mut m = [0u64; 8];
            m[0] = i;
            aq.push(m).unwrap();
            let got = aq.pop().unwrap();
            i = i.wrapping_add(black_box(got[0]) + 1);
        })
    });
    g.finish();
    drop((qp, qc, dp, dc));
    let _ = std::fs::remove_dir_all(root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
