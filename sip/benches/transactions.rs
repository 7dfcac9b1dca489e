//! REGISTER server transactions through the sans-IO layer, at the scale it must hold:
//! ~10,000 new transactions a second, each lingering 32 s for Timer J (≈ 320k live).
//!
//! - `register_server_tx`: handle_incoming (match, create), send_response, poll_transmit,
//!   poll_event and handle_timeout on a virtual clock advancing 100 µs per transaction, so
//!   Timer J expiry (removal) is paid in the steady state too. Parsing and building the
//!   response happen outside the measurement (the parser's and the TU's cost).
//! - `register_retransmission`: a retransmitted REGISTER answered from its transaction.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use voxgate_sip::transaction::{Incoming, Peer, TimerConfig, TransactionLayer, Transport};
use voxgate_sip::{Message, MessageBuilder};

fn register(n: u64) -> Bytes {
    Bytes::from(format!(
        "REGISTER sip:voxgate.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.1.{}.{}:5060;branch=z9hG4bK{n:016x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:agent{n}@voxgate.test>;tag={n:x}\r\n\
         To: <sip:agent{n}@voxgate.test>\r\n\
         Call-ID: {n:x}@10.1.0.1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:agent{n}@10.1.0.1:5060>\r\n\
         Expires: 3600\r\n\
         User-Agent: bench\r\n\
         Content-Length: 0\r\n\r\n",
        (n >> 8) & 0xff,
        n & 0xff
    ))
}

fn input(n: u64) -> (Message, Bytes) {
    let msg = Message::parse(register(n)).expect("bench REGISTER parses");
    let ok = MessageBuilder::response_to(&msg, 200, "OK", Some("reg"))
        .header("Contact", "<sip:agent@10.1.0.1:5060>;expires=3600")
        .build();
    (msg, ok)
}

struct Rig {
    layer: TransactionLayer,
    now: Instant,
    next: u64,
    from: Peer,
}

impl Rig {
    /// A layer already holding the steady state's 32 s worth of transactions.
    fn steady() -> Rig {
        let mut rig = Rig {
            layer: TransactionLayer::new(TimerConfig::default()),
            now: Instant::now(),
            next: 0,
            from: Peer {
                transport: Transport::Udp,
                addr: SocketAddr::from(([10, 1, 0, 1], 5060)),
                conn: None,
            },
        };
        for _ in 0..320_000 {
            let (msg, ok) = input(rig.next);
            rig.one(msg, ok);
        }
        rig
    }

    fn one(&mut self, msg: Message, ok: Bytes) {
        self.next += 1;
        self.now += Duration::from_micros(100);
        let now = self.now;
        if let Some(Incoming::Request { tx, .. }) = self.layer.handle_incoming(msg, self.from, now)
        {
            let _ = self.layer.send_response(tx, ok, now);
        }
        while let Some(t) = self.layer.poll_transmit() {
            black_box(t);
        }
        self.layer.handle_timeout(now);
        while let Some(e) = self.layer.poll_event() {
            black_box(e);
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut rig = Rig::steady();
    eprintln!("live transactions in the steady state: {}", rig.layer.len());
    let mut n = rig.next;
    c.bench_function("register_server_tx", |b| {
        b.iter_batched(
            || {
                n += 1;
                input(n)
            },
            |(msg, ok)| rig.one(msg, ok),
            BatchSize::SmallInput,
        )
    });

    // Retransmissions of one live REGISTER: matched and answered with the stored 200.
    let (msg, ok) = input(u64::MAX / 2);
    let raw = msg.as_bytes().clone();
    rig.one(msg, ok);
    let (from, now) = (rig.from, rig.now);
    c.bench_function("register_retransmission", |b| {
        b.iter_batched(
            || Message::parse(raw.clone()).expect("parses"),
            |msg| {
                black_box(rig.layer.handle_incoming(msg, from, now));
                black_box(rig.layer.poll_transmit())
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
