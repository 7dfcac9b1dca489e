//! End to end: a UAC layer and a UAS layer, each with a small scripted TU, connected through
//! a simulated network that drops, duplicates and reorders datagrams by a seeded xorshift
//! pattern, on a virtual clock. Checks that every transaction completes exactly once on
//! both sides and that both layers end empty.

use std::collections::HashMap;

use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

#[derive(Debug, Clone, Copy)]
struct Faults {
    loss: u64,
    dup: u64,
    max_delay_ms: u64,
}

const CLEAN: Faults = Faults {
    loss: 0,
    dup: 0,
    max_delay_ms: 0,
};

const LOSSY: Faults = Faults {
    loss: 25,
    dup: 15,
    max_delay_ms: 120,
};

struct Packet {
    at: Instant,
    seq: u64,
    to_uas: bool,
    from: Peer,
    bytes: Bytes,
}

struct Net {
    rng: XorShift,
    faults: Faults,
    seq: u64,
    in_flight: Vec<Packet>,
    sent: usize,
    dropped: usize,
    duplicated: usize,
}

impl Net {
    fn send(&mut self, now: Instant, t: Transmit, from: Peer, to_uas: bool) {
        self.sent += 1;
        let copies = if t.to.transport.is_reliable() {
            // A stream: lossless and in order (a fixed delay keeps the order).
            1
        } else if self.rng.percent() < self.faults.loss {
            self.dropped += 1;
            0
        } else if self.rng.percent() < self.faults.dup {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if t.to.transport.is_reliable() || self.faults.max_delay_ms == 0 {
                5
            } else {
                1 + self.rng.next() % self.faults.max_delay_ms
            };
            self.seq += 1;
            self.in_flight.push(Packet {
                at: now + ms(delay),
                seq: self.seq,
                to_uas,
                from,
                bytes: t.bytes.clone(),
            });
        }
    }

    fn next_at(&self) -> Option<Instant> {
        self.in_flight.iter().map(|p| p.at).min()
    }

    fn pop_due(&mut self, now: Instant) -> Option<Packet> {
        let i = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, p)| p.at <= now)
            .min_by_key(|(_, p)| (p.at, p.seq))
            .map(|(i, _)| i)?;
        Some(self.in_flight.swap_remove(i))
    }
}

/// What the UAS TU does with an INVITE.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UasPlan {
    /// 180 after `ring_ms` (past 200 ms the layer's own 100 goes first), final after 1 s.
    Answer { ring_ms: u64, code: u16 },
    /// 180, then wait for a CANCEL.
    RingForever,
}

#[derive(Default)]
struct UasTu {
    /// Requests the TU saw, by "Call-ID method".
    seen: HashMap<String, usize>,
    acks: usize,
    scheduled: Vec<(Instant, ServerTxId, Bytes)>,
    /// §13.3.1.4: the TU's own 2xx retransmission: (tx, 2xx, next, interval, give up).
    two_xx: Vec<(ServerTxId, Bytes, Instant, Duration, Instant)>,
    failures: Vec<TxEvent>,
    terminated: usize,
    /// INVITEs by transaction, to answer 487 after a CANCEL.
    invites: HashMap<ServerTxId, Bytes>,
}

#[derive(Default)]
struct UacTu {
    /// Final responses per client transaction (2xx retransmissions counted too).
    finals: HashMap<ClientTxId, Vec<u16>>,
    provisionals: HashMap<ClientTxId, usize>,
    terminated: HashMap<ClientTxId, usize>,
    failures: Vec<TxEvent>,
    acks_for_2xx: usize,
    /// Cancel each INVITE once its first provisional arrives.
    cancel_on_ringing: bool,
    cancels: HashMap<ClientTxId, ClientTxId>,
}

struct Sim {
    now: Instant,
    t0: Instant,
    uac: TransactionLayer,
    uas: TransactionLayer,
    uac_peer: Peer,
    uas_peer: Peer,
    net: Net,
    uac_tu: UacTu,
    uas_tu: UasTu,
    plan: UasPlan,
}

impl Sim {
    fn new(seed: u64, transport: Transport, faults: Faults, plan: UasPlan) -> Sim {
        let t0 = Instant::now();
        Sim {
            now: t0,
            t0,
            uac: TransactionLayer::new(TimerConfig::default()),
            uas: TransactionLayer::new(TimerConfig::default()),
            uac_peer: peer(UAC, transport),
            uas_peer: peer(UAS, transport),
            net: Net {
                rng: XorShift(seed.max(1)),
                faults,
                seq: 0,
                in_flight: Vec::new(),
                sent: 0,
                dropped: 0,
                duplicated: 0,
            },
            uac_tu: UacTu::default(),
            uas_tu: UasTu::default(),
            plan,
        }
    }

    fn send_request(&mut self, bytes: Bytes) -> ClientTxId {
        let tx = self
            .uac
            .send_request(bytes, self.uas_peer, self.now)
            .unwrap();
        self.pump();
        tx
    }

    /// Moves transmits onto the network and events into the TUs until all is quiet.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(t) = self.uac.poll_transmit() {
                busy = true;
                self.net.send(self.now, t, self.uac_peer, true);
            }
            while let Some(t) = self.uas.poll_transmit() {
                busy = true;
                self.net.send(self.now, t, self.uas_peer, false);
            }
            while let Some(ev) = self.uac.poll_event() {
                busy = true;
                self.uac_event(ev);
            }
            while let Some(ev) = self.uas.poll_event() {
                busy = true;
                match ev {
                    TxEvent::Terminated { .. } => self.uas_tu.terminated += 1,
                    other => self.uas_tu.failures.push(other),
                }
            }
            if !busy {
                break;
            }
        }
    }

    fn uac_event(&mut self, ev: TxEvent) {
        match ev {
            TxEvent::Response { tx, msg } => {
                let status = msg.status().unwrap();
                if status < 200 {
                    *self.uac_tu.provisionals.entry(tx).or_default() += 1;
                    if self.uac_tu.cancel_on_ringing && !self.uac_tu.cancels.contains_key(&tx) {
                        let c = self.uac.cancel(tx, self.now).unwrap();
                        self.uac_tu.cancels.insert(tx, c);
                    }
                    return;
                }
                self.uac_tu.finals.entry(tx).or_default().push(status);
                if status < 300 && msg.cseq().method == Method::Invite {
                    // §13.2.2.4: the TU ACKs every 2xx, outside the transaction.
                    let ack = MessageBuilder::request(&Method::Ack, "sip:bob@192.0.2.2")
                        .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack2xx")
                        .header("Max-Forwards", "70")
                        .header("From", msg.header(HeaderName::From).unwrap())
                        .header("To", msg.header(HeaderName::To).unwrap())
                        .header("Call-ID", msg.call_id())
                        .header("CSeq", &format!("{} ACK", msg.cseq().seq))
                        .build();
                    self.uac_tu.acks_for_2xx += 1;
                    self.uac.send_stateless(ack, self.uas_peer);
                }
            }
            TxEvent::Terminated {
                tx: TxId::Client(tx),
            } => {
                *self.uac_tu.terminated.entry(tx).or_default() += 1;
            }
            other => self.uac_tu.failures.push(other),
        }
    }

    fn uas_incoming(&mut self, inc: Incoming) {
        let now = self.now;
        match inc {
            Incoming::Request { tx, msg, .. } => {
                let key = format!("{} {}", msg.call_id(), msg.method().unwrap().as_str());
                *self.uas_tu.seen.entry(key).or_default() += 1;
                let req = msg.as_bytes().clone();
                if msg.method() == Some(&Method::Invite) {
                    self.uas_tu.invites.insert(tx, req.clone());
                    match self.plan {
                        UasPlan::Answer { ring_ms, code } => {
                            self.uas_tu.scheduled.push((
                                now + ms(ring_ms),
                                tx,
                                response(&req, 180),
                            ));
                            self.uas_tu
                                .scheduled
                                .push((now + ms(1000), tx, response(&req, code)));
                        }
                        UasPlan::RingForever => {
                            self.uas_tu
                                .scheduled
                                .push((now + ms(50), tx, response(&req, 180)));
                        }
                    }
                } else {
                    // A registrar answers at once.
                    self.uas
                        .send_response(tx, response(&req, 200), now)
                        .unwrap();
                }
            }
            Incoming::Cancel {
                tx, invite, msg, ..
            } => {
                let key = format!("{} CANCEL", msg.call_id());
                *self.uas_tu.seen.entry(key).or_default() += 1;
                // §9.2: 200 to the CANCEL, 487 to the INVITE if it is still pending.
                let req = msg.as_bytes().clone();
                self.uas
                    .send_response(tx, response(&req, 200), now)
                    .unwrap();
                let invite = invite.unwrap();
                if self.uas.state(invite) == Some(TxState::Proceeding) {
                    let inv = &self.uas_tu.invites[&invite];
                    self.uas
                        .send_response(invite, response(inv, 487), now)
                        .unwrap();
                    self.uas_tu.scheduled.retain(|(_, t, _)| *t != invite);
                }
            }
            Incoming::Ack { .. } => {
                self.uas_tu.acks += 1;
                self.uas_tu.two_xx.clear();
            }
            Incoming::Response { .. } => panic!("the UAS sent no requests"),
        }
    }

    fn next_at(&self) -> Option<Instant> {
        [
            self.uac.poll_timeout(),
            self.uas.poll_timeout(),
            self.net.next_at(),
            self.uas_tu.scheduled.iter().map(|s| s.0).min(),
            self.uas_tu.two_xx.iter().map(|s| s.2).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until nothing is left to do, or `limit` of virtual time.
    fn run(&mut self, limit: Duration) {
        while let Some(at) = self.next_at() {
            if at > self.t0 + limit {
                break;
            }
            self.now = self.now.max(at);
            let now = self.now;
            while let Some(p) = self.net.pop_due(now) {
                let msg = Message::parse(p.bytes).unwrap();
                if p.to_uas {
                    if let Some(inc) = self.uas.handle_incoming(msg, p.from, now) {
                        self.uas_incoming(inc);
                    }
                } else if let Some(inc) = self.uac.handle_incoming(msg, p.from, now) {
                    // After Timer M, a late 2xx retransmission is a stray: a UA core drops it.
                    assert!(matches!(inc, Incoming::Response { .. }), "{inc:?}");
                }
                self.pump();
            }
            let due: Vec<_> = self
                .uas_tu
                .scheduled
                .iter()
                .filter(|s| s.0 <= now)
                .cloned()
                .collect();
            self.uas_tu.scheduled.retain(|s| s.0 > now);
            for (_, tx, bytes) in due {
                let status = status_of(&bytes).unwrap();
                self.uas.send_response(tx, bytes.clone(), now).unwrap();
                if (200..300).contains(&status) {
                    let t1 = ms(500);
                    self.uas_tu
                        .two_xx
                        .push((tx, bytes, now + t1, t1, now + ms(32_000)));
                }
            }
            for (tx, bytes, next, interval, give_up) in &mut self.uas_tu.two_xx {
                if *next <= now {
                    self.uas.send_response(*tx, bytes.clone(), now).unwrap();
                    *interval = (*interval * 2).min(ms(4000));
                    *next = now + *interval;
                }
                if *give_up <= now {
                    *next = far_future(now);
                }
            }
            self.uas_tu.two_xx.retain(|t| t.4 > now);
            self.uac.handle_timeout(now);
            self.uas.handle_timeout(now);
            self.pump();
        }
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(3600)
}

fn finals_once(sim: &Sim, txs: &[ClientTxId], expect: u16) {
    for tx in txs {
        let finals = sim.uac_tu.finals.get(tx).cloned().unwrap_or_default();
        assert_eq!(finals, vec![expect], "{tx:?}");
        assert_eq!(
            sim.uac_tu.terminated.get(tx),
            Some(&1),
            "{tx:?} terminated once"
        );
    }
}

fn assert_all_gone(sim: &Sim) {
    assert_eq!(sim.uac.len(), 0, "UAC transactions left");
    assert_eq!(sim.uas.len(), 0, "UAS transactions left");
    assert!(
        sim.uac_tu.failures.is_empty(),
        "UAC failures: {:?}",
        sim.uac_tu.failures
    );
    assert!(
        sim.uas_tu.failures.is_empty(),
        "UAS failures: {:?}",
        sim.uas_tu.failures
    );
}

#[test]
fn registers_complete_exactly_once_over_a_lossy_network() {
    for seed in 1..=20u64 {
        let mut sim = Sim::new(
            seed * 0x9E37_79B9,
            Transport::Udp,
            LOSSY,
            UasPlan::RingForever,
        );
        let mut txs = Vec::new();
        for i in 0..10 {
            let req = request(
                Method::Register,
                &format!("z9hG4bKreg{i}"),
                &format!("reg{i}@uac"),
                1,
            );
            txs.push(sim.send_request(req));
            sim.now += ms(7);
        }
        sim.run(Duration::from_secs(120));
        finals_once(&sim, &txs, 200);
        assert_eq!(sim.uas_tu.seen.len(), 10);
        assert!(
            sim.uas_tu.seen.values().all(|n| *n == 1),
            "seed {seed}: {:?}",
            sim.uas_tu.seen
        );
        assert_eq!(sim.uas_tu.terminated, 10);
        assert_all_gone(&sim);
        assert!(
            sim.net.dropped > 0 && sim.net.duplicated > 0,
            "the network did misbehave"
        );
    }
}

#[test]
fn register_over_tcp_sends_each_message_once() {
    let mut sim = Sim::new(1, Transport::Tcp, CLEAN, UasPlan::RingForever);
    let tx = sim.send_request(register("z9hG4bKtcp"));
    sim.run(Duration::from_secs(60));
    finals_once(&sim, &[tx], 200);
    assert_eq!(
        sim.net.sent, 2,
        "no retransmissions on a reliable transport"
    );
    assert_all_gone(&sim);
}

#[test]
fn rejected_invites_are_acked_and_complete_once() {
    for seed in 1..=20u64 {
        let ring_ms = if seed % 2 == 0 { 50 } else { 400 };
        let plan = UasPlan::Answer { ring_ms, code: 486 };
        let mut sim = Sim::new(seed * 0x2545_F491, Transport::Udp, LOSSY, plan);
        let txs: Vec<_> = (0..5)
            .map(|i| {
                let req = request(
                    Method::Invite,
                    &format!("z9hG4bKinv{i}"),
                    &format!("inv{i}@uac"),
                    1,
                );
                sim.send_request(req)
            })
            .collect();
        sim.run(Duration::from_secs(120));
        finals_once(&sim, &txs, 486);
        assert!(
            sim.uas_tu.seen.values().all(|n| *n == 1),
            "seed {seed}: {:?}",
            sim.uas_tu.seen
        );
        assert_eq!(sim.uas_tu.seen.len(), 5);
        // The UAS got an ACK for each 486 (no Timer H failure in assert_all_gone), and the
        // ACK never reached its TU.
        assert_eq!(sim.uas_tu.acks, 0);
        assert_all_gone(&sim);
    }
}

#[test]
fn accepted_invites_reach_the_tu_and_are_acked_by_it() {
    for seed in 1..=10u64 {
        let plan = UasPlan::Answer {
            ring_ms: 300,
            code: 200,
        };
        let mut sim = Sim::new(seed * 0x5851_F42D, Transport::Udp, LOSSY, plan);
        let tx = sim.send_request(invite("z9hG4bKok"));
        sim.run(Duration::from_secs(120));
        let finals = &sim.uac_tu.finals[&tx];
        assert!(
            !finals.is_empty() && finals.iter().all(|s| *s == 200),
            "seed {seed}: {finals:?}"
        );
        assert_eq!(
            sim.uac_tu.acks_for_2xx,
            finals.len(),
            "every 2xx ACKed by the TU"
        );
        assert!(
            sim.uas_tu.acks >= 1,
            "seed {seed}: the ACK for 2xx reached the UAS TU"
        );
        assert_eq!(sim.uas_tu.seen.len(), 1);
        assert_eq!(sim.uac_tu.terminated.get(&tx), Some(&1));
        assert_all_gone(&sim);
    }
}

#[test]
fn cancel_flows_end_to_end() {
    for seed in 1..=20u64 {
        let mut sim = Sim::new(
            seed * 0x1405_7B7E,
            Transport::Udp,
            LOSSY,
            UasPlan::RingForever,
        );
        let early = seed % 2 == 0;
        sim.uac_tu.cancel_on_ringing = !early;
        let tx = sim.send_request(invite("z9hG4bKcan"));
        let cancel = if early {
            // Before any provisional: the CANCEL waits for one (§9.1).
            let c = sim.uac.cancel(tx, sim.now).unwrap();
            sim.pump();
            c
        } else {
            sim.run(Duration::from_secs(5));
            sim.uac_tu.cancels[&tx]
        };
        sim.run(Duration::from_secs(120));
        finals_once(&sim, &[tx], 487);
        finals_once(&sim, &[cancel], 200);
        assert!(sim.uac_tu.provisionals[&tx] >= 1);
        let seen = &sim.uas_tu.seen;
        assert_eq!(seen.get("call-1@192.0.2.1 INVITE"), Some(&1), "seed {seed}");
        assert_eq!(seen.get("call-1@192.0.2.1 CANCEL"), Some(&1), "seed {seed}");
        assert_all_gone(&sim);
    }
}

#[test]
fn invite_over_tcp_has_no_retransmissions() {
    let plan = UasPlan::Answer {
        ring_ms: 50,
        code: 486,
    };
    let mut sim = Sim::new(1, Transport::Tcp, CLEAN, plan);
    let tx = sim.send_request(invite("z9hG4bKtcp"));
    sim.run(Duration::from_secs(120));
    finals_once(&sim, &[tx], 486);
    // INVITE, 180, 486, ACK.
    assert_eq!(sim.net.sent, 4);
    assert_all_gone(&sim);
}
