//! voxgate registering itself to carriers (`outbound.register` on a trunk), as a
//! FreeSWITCH gateway does: REGISTER when the trunk appears, answer the registrar's
//! digest challenge (once per request, RFC 3261 §22.2), re-register before the granted
//! expiry, back off and retry after a failure, fail over to the trunk's next address on a
//! timeout or transport error (RFC 3263 §4.3), and unregister (`Expires: 0`) when the
//! trunk goes away.
//!
//! Sans-IO: the SIP core hands it its transaction layer, the responses of the
//! transactions it started and the time; it keeps no socket and reads no clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use voxgate_sip::auth::{select_challenge, AnswerInput, ClientSecret};
use voxgate_sip::dialog::{Branch, LocalVia};
use voxgate_sip::message::{HeaderName, Message, MessageBuilder, Method};
use voxgate_sip::transaction::{ClientTxId, Peer, TransactionLayer, Transport};

use crate::calls::engine::EngineConfig;
use crate::calls::env::{Clock, Credentials};

/// The first wait after a failed registration; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(600);

/// Every trunk's registration state by trunk id, published by the SIP core each second
/// for the API.
pub type RegistrationStates = std::sync::Arc<std::sync::RwLock<HashMap<String, RegistrationView>>>;

/// One trunk's registration, as the trunk's entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSpec {
    pub trunk_id: String,
    /// The registrar's domain: the Request-URI `sip:<domain>` and the AoR's host.
    pub domain: String,
    /// The AoR's user part (and the Contact's).
    pub user: String,
    pub credentials: Option<Credentials>,
    /// Requested lifetime in seconds; the registrar may grant less (or ask for more: 423).
    pub expires: u32,
    /// Where to send REGISTERs, in RFC 3263 order.
    pub targets: Vec<Peer>,
}

/// A registration as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RegistrationView {
    /// `disabled` (the trunk does not register), `registering`, `registered` or `failed`.
    #[schema(example = "registered")]
    pub state: String,
    /// When the registration runs out (registered).
    #[serde(with = "crate::api::time_format::option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed, e.g. `403 Forbidden` or `timeout`.
    pub last_error: Option<String>,
    /// When the next attempt is due (failed).
    #[serde(with = "crate::api::time_format::option")]
    pub retry_at: Option<DateTime<Utc>>,
}

impl RegistrationView {
    /// A view with only a state (`disabled`, `registering`).
    pub fn state(state: &str) -> RegistrationView {
        RegistrationView {
            state: state.to_owned(),
            expires_at: None,
            last_error: None,
            retry_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A REGISTER is on its way (or about to be).
    Registering,
    Registered {
        until: Instant,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug)]
struct Client {
    spec: RegistrationSpec,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The REGISTER in flight and where it went.
    tx: Option<(ClientTxId, Message)>,
    /// Index into `spec.targets` of the registrar in use.
    target: usize,
    /// Whether the REGISTER in flight already answers a challenge.
    authed: bool,
    /// Lifetime asked for (raised by a 423's Min-Expires).
    asking: u32,
    state: State,
    /// When to send the next REGISTER (none while one is in flight).
    due: Option<Instant>,
    failures: u32,
    /// Unregistering: the client goes away after this REGISTER's final answer.
    leaving: bool,
}

/// Every trunk's registration client.
#[derive(Debug)]
pub struct Registrations {
    /// Our address and ports (the engine's), for Via and Contact.
    cfg: EngineConfig,
    clients: HashMap<String, Client>,
    by_tx: HashMap<ClientTxId, String>,
    rng: StdRng,
}

impl Registrations {
    pub fn new(cfg: EngineConfig, seed: u64) -> Registrations {
        Registrations {
            cfg,
            clients: HashMap::new(),
            by_tx: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.clients.values().filter(|c| !c.leaving).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registrations there should be: new ones start now, changed ones start over,
    /// missing ones are unregistered.
    pub fn set(
        &mut self,
        specs: Vec<RegistrationSpec>,
        layer: &mut TransactionLayer,
        now: Instant,
    ) {
        let mut wanted: HashMap<String, RegistrationSpec> =
            specs.into_iter().map(|s| (s.trunk_id.clone(), s)).collect();
        // Only the registrar's addresses changed (DNS refreshed, SRV weights drew another
        // order): keep the registration, use the new list from the next REGISTER on.
        for (id, c) in &mut self.clients {
            if let Some(w) = wanted.get(id) {
                if !c.leaving && c.spec.targets != w.targets && same_but_targets(&c.spec, w) {
                    c.spec.targets = w.targets.clone();
                    c.target = 0;
                }
            }
        }
        let gone: Vec<String> = self
            .clients
            .iter()
            .filter(|(id, c)| !c.leaving && wanted.get(*id) != Some(&c.spec))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.leave(&id, layer, now);
        }
        for (id, spec) in wanted.drain() {
            if self
                .clients
                .get(&id)
                .is_some_and(|c| c.spec == spec && !c.leaving)
            {
                continue;
            }
            let client = Client {
                call_id: format!("{}@voxgate", hex::encode(self.rng.random::<[u8; 12]>())),
                from_tag: hex::encode(self.rng.random::<[u8; 6]>()),
                cseq: 0,
                tx: None,
                target: 0,
                authed: false,
                asking: spec.expires,
                state: State::Registering,
                due: Some(now),
                failures: 0,
                leaving: false,
                spec,
            };
            // A client still unregistering under this id is forgotten: its answer no
            // longer matters.
            if let Some(old) = self.clients.insert(id, client) {
                if let Some((tx, _)) = old.tx {
                    self.by_tx.remove(&tx);
                }
            }
        }
    }

    /// Unregisters trunk `id` (if it was registered) and forgets it.
    fn leave(&mut self, id: &str, layer: &mut TransactionLayer, now: Instant) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let registered = matches!(c.state, State::Registered { .. });
        if let Some((tx, _)) = c.tx.take() {
            self.by_tx.remove(&tx);
        }
        if !registered {
            self.clients.remove(id);
            return;
        }
        c.leaving = true;
        c.due = None;
        self.send(id, 0, None, layer, now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clients.values().filter_map(|c| c.due).min()
    }

    /// Sends the REGISTERs that are due.
    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        let due: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| c.due.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(c) = self.clients.get_mut(&id) else {
                continue;
            };
            c.due = None;
            c.authed = false;
            if let State::Registered { until } = c.state {
                if until <= now {
                    c.state = State::Registering;
                }
            }
            let asking = c.asking;
            self.send(&id, asking, None, layer, now);
        }
    }

    /// A response on one of our transactions; false if the transaction is not ours.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        resp: &Message,
        now: Instant,
    ) -> bool {
        let Some(id) = self.by_tx.get(&tx).cloned() else {
            return false;
        };
        let code = resp.status().unwrap_or(0);
        if code < 200 {
            return true;
        }
        self.by_tx.remove(&tx);
        let Some(c) = self.clients.get_mut(&id) else {
            return true;
        };
        let Some((_, request)) = c.tx.take() else {
            return true;
        };
        let asking = request.expires().ok().flatten().unwrap_or(c.asking);
        match code {
            200..=299 if c.leaving => {
                self.clients.remove(&id);
            }
            200..=299 => {
                let granted = granted(resp, &request).unwrap_or(asking);
                c.failures = 0;
                c.state = State::Registered {
                    until: now + Duration::from_secs(u64::from(granted)),
                };
                c.due = Some(now + refresh_after(granted));
            }
            401 | 407 if !c.authed => {
                let answer = c.spec.credentials.as_ref().and_then(|creds| {
                    let name = if code == 401 {
                        HeaderName::WwwAuthenticate
                    } else {
                        HeaderName::ProxyAuthenticate
                    };
                    let challenge = select_challenge(resp.header_values(name))?;
                    let cnonce = hex::encode(self.rng.random::<[u8; 8]>());
                    let a = challenge
                        .answer(&AnswerInput {
                            username: &creds.username,
                            secret: ClientSecret::Password(&creds.password),
                            method: "REGISTER",
                            uri: request.request_uri().unwrap_or_default(),
                            cnonce: &cnonce,
                            nc: 1,
                        })
                        .ok()?;
                    let header = if code == 401 {
                        "Authorization"
                    } else {
                        "Proxy-Authorization"
                    };
                    Some((header, a.to_string()))
                });
                match answer {
                    Some(auth) => {
                        c.authed = true;
                        self.send(&id, asking, Some(auth), layer, now);
                    }
                    None => self.failed(&id, status_line(resp), now),
                }
            }
            423 => {
                // RFC 3261 §10.2.8: ask again for at least Min-Expires.
                let min = resp.min_expires().ok().flatten().unwrap_or(0);
                if min > asking && !c.leaving {
                    c.asking = min;
                    c.authed = false;
                    self.send(&id, min, None, layer, now);
                } else {
                    self.failed(&id, status_line(resp), now);
                }
            }
            503 if !c.leaving && c.target + 1 < c.spec.targets.len() => {
                c.target += 1;
                c.authed = false;
                self.send(&id, asking, None, layer, now);
            }
            _ => self.failed(&id, status_line(resp), now),
        }
        true
    }

    /// Our transaction timed out or failed at the transport: the next address, or a
    /// retry later. False if the transaction is not ours.
    pub fn on_failure(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        reason: &str,
        now: Instant,
    ) -> bool {
        let Some(id) = self.by_tx.remove(&tx) else {
            return false;
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return true;
        };
        let Some((_, request)) = c.tx.take() else {
            return true;
        };
        if c.target + 1 < c.spec.targets.len() {
            c.target += 1;
            c.authed = false;
            let asking = request.expires().ok().flatten().unwrap_or(c.asking);
            self.send(&id, asking, None, layer, now);
        } else {
            c.target = 0;
            self.failed(&id, reason.to_owned(), now);
        }
        true
    }

    /// Every trunk's registration, for the API.
    pub fn views(&self, clock: &Clock, now: Instant) -> HashMap<String, RegistrationView> {
        self.clients
            .iter()
            .filter(|(_, c)| !c.leaving)
            .map(|(id, c)| {
                let view = match &c.state {
                    State::Registering => RegistrationView {
                        state: "registering".into(),
                        expires_at: None,
                        last_error: None,
                        retry_at: None,
                    },
                    State::Registered { until } => RegistrationView {
                        state: "registered".into(),
                        expires_at: Some(wall(clock, now, *until)),
                        last_error: None,
                        retry_at: None,
                    },
                    State::Failed { reason } => RegistrationView {
                        state: "failed".into(),
                        expires_at: None,
                        last_error: Some(reason.clone()),
                        retry_at: c.due.map(|d| wall(clock, now, d)),
                    },
                };
                (id.clone(), view)
            })
            .collect()
    }

    fn failed(&mut self, id: &str, reason: String, now: Instant) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        if c.leaving {
            // The registrar refused to let go: the binding will expire on its own.
            self.clients.remove(id);
            return;
        }
        tracing::warn!(trunk = %id, %reason, "registration to the carrier failed");
        let backoff = FIRST_RETRY
            .saturating_mul(1 << c.failures.min(5))
            .min(MAX_RETRY);
        c.failures = c.failures.saturating_add(1);
        c.state = State::Failed { reason };
        c.due = Some(now + backoff);
    }

    /// Sends client `id`'s next REGISTER asking for `expires` seconds.
    fn send(
        &mut self,
        id: &str,
        expires: u32,
        auth: Option<(&str, String)>,
        layer: &mut TransactionLayer,
        now: Instant,
    ) {
        let branch = Branch::from_random(&self.rng.random::<[u8; 12]>());
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let Some(peer) = c.spec.targets.get(c.target).copied() else {
            return self.failed(id, "the registrar has no address".into(), now);
        };
        let via = self.cfg.via(peer.transport);
        c.cseq = c.cseq.wrapping_add(1);
        let aor = format!("sip:{}@{}", c.spec.user, c.spec.domain);
        let mut b = MessageBuilder::request(&Method::Register, &format!("sip:{}", c.spec.domain))
            .header("Via", &via.value(&branch))
            .header("Max-Forwards", "70")
            .header("From", &format!("<{aor}>;tag={}", c.from_tag))
            .header("To", &format!("<{aor}>"))
            .header("Call-ID", &c.call_id)
            .header("CSeq", &format!("{} REGISTER", c.cseq))
            .header("Contact", &format!("<{}>", contact(&c.spec.user, &via)))
            .header("Expires", &expires.to_string());
        if let Some((name, value)) = &auth {
            b = b.header(name, value);
        }
        let bytes = b.header("Content-Length", "0").build();
        let Ok(msg) = Message::parse(bytes.clone()) else {
            return self.failed(id, "could not build a REGISTER".into(), now);
        };
        match layer.send_request(bytes, peer, now) {
            Ok(tx) => {
                c.tx = Some((tx, msg));
                self.by_tx.insert(tx, id.to_owned());
            }
            Err(e) => self.failed(id, format!("not sent: {e}"), now),
        }
    }
}

/// Whether two specs differ at most in their registrar addresses.
fn same_but_targets(a: &RegistrationSpec, b: &RegistrationSpec) -> bool {
    a.trunk_id == b.trunk_id
        && a.domain == b.domain
        && a.user == b.user
        && a.credentials == b.credentials
        && a.expires == b.expires
}

/// Our Contact for a registration: the trunk's user at our address.
fn contact(user: &str, via: &LocalVia) -> String {
    let t = match via.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Ws => ";transport=ws",
        Transport::Wss => ";transport=wss",
    };
    format!("sip:{user}@{}{t}", via.sent_by)
}

/// The lifetime the registrar granted our Contact (RFC 3261 §10.2.4): its `expires`
/// parameter in the 200's Contact list, else the 200's Expires header.
fn granted(resp: &Message, request: &Message) -> Option<u32> {
    let ours = request
        .contacts()
        .ok()
        .flatten()
        .and_then(|c| c.as_slice().first().map(|c| c.uri.to_owned()))?;
    let listed = resp.contacts().ok().flatten().and_then(|list| {
        list.as_slice()
            .iter()
            .find(|c| same_uri(c.uri, &ours))
            .and_then(|c| c.expires().ok().flatten())
    });
    listed.or_else(|| resp.expires().ok().flatten())
}

/// Contact URIs compared as registrars echo them: scheme, user, host and port (some add
/// or reorder parameters).
fn same_uri(a: &str, b: &str) -> bool {
    use voxgate_sip::message::SipUri;
    match (SipUri::parse(a), SipUri::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.user == b.user && a.host.eq_ignore_ascii_case(b.host) && a.port == b.port
        }
        _ => a == b,
    }
}

/// When to re-register a registration granted for `granted` seconds: at 85 % of it, and
/// at least Timer F (32 s: a lost REGISTER's retransmissions) before it runs out, but not
/// before half of it (short lifetimes).
fn refresh_after(granted: u32) -> Duration {
    let ms = u64::from(granted) * 1000;
    let at = (ms * 85 / 100).min(ms.saturating_sub(32_000)).max(ms / 2);
    Duration::from_millis(at.max(500))
}

fn status_line(resp: &Message) -> String {
    format!(
        "{} {}",
        resp.status().unwrap_or(0),
        resp.reason().unwrap_or_default()
    )
}

fn wall(clock: &Clock, now: Instant, at: Instant) -> DateTime<Utc> {
    let w = clock.wall(now);
    if at >= now {
        chrono::Duration::from_std(at - now).map_or(w, |d| w + d)
    } else {
        chrono::Duration::from_std(now - at).map_or(w, |d| w - d)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use voxgate_sip::sdp::SdpConfig;
    use voxgate_sip::transaction::{TimerConfig, TxEvent};

    use super::*;

    fn cfg() -> EngineConfig {
        EngineConfig {
            public_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            sip_port: 5060,
            tls_port: None,
            sdp: SdpConfig::default(),
            ring_timeout: Duration::from_secs(60),
        }
    }

    fn peer(port: u16) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            conn: None,
        }
    }

    fn spec(targets: Vec<Peer>) -> RegistrationSpec {
        RegistrationSpec {
            trunk_id: "trk_1".into(),
            domain: "carrier.example".into(),
            user: "acme".into(),
            credentials: Some(Credentials {
                username: "acme".into(),
                password: "s3cret".into(),
            }),
            expires: 600,
            targets,
        }
    }

    struct Sim {
        layer: TransactionLayer,
        regs: Registrations,
        now: Instant,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                layer: TransactionLayer::new(TimerConfig::default()),
                regs: Registrations::new(cfg(), 7),
                now: Instant::now(),
            }
        }

        /// The REGISTERs sent, with where they went.
        fn sent(&mut self) -> Vec<(Message, Peer)> {
            let mut out = Vec::new();
            while let Some(t) = self.layer.poll_transmit() {
                out.push((Message::parse(t.bytes).unwrap(), t.to));
            }
            out
        }

        fn answer(&mut self, from: Peer, resp: MessageBuilder) {
            let msg = Message::parse(resp.build()).unwrap();
            let stray = self.layer.handle_incoming(msg, from, self.now);
            assert!(stray.is_none(), "stray response: {stray:?}");
            self.events();
        }

        fn events(&mut self) {
            while let Some(ev) = self.layer.poll_event() {
                match ev {
                    TxEvent::Response { tx, msg } => {
                        assert!(self.regs.on_response(&mut self.layer, tx, &msg, self.now));
                    }
                    TxEvent::Timeout {
                        tx: voxgate_sip::transaction::TxId::Client(tx),
                    } => {
                        self.regs
                            .on_failure(&mut self.layer, tx, "timeout", self.now);
                    }
                    _ => {}
                }
            }
        }

        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                let next = [self.layer.poll_timeout(), self.regs.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        self.layer.handle_timeout(self.now);
                        self.events();
                        self.regs.handle_timeout(&mut self.layer, self.now);
                    }
                    _ => break,
                }
            }
            self.now = end;
        }

        fn state(&self) -> RegistrationView {
            let clock = Clock::new(self.now, chrono::Utc::now());
            self.regs.views(&clock, self.now).remove("trk_1").unwrap()
        }
    }

    fn challenge() -> &'static str {
        r#"Digest realm="carrier.example", nonce="abc123", qop="auth", algorithm=MD5"#
    }

    #[test]
    fn registers_answers_the_challenge_and_refreshes_before_expiry() {
        let mut s = Sim::new();
        let p = peer(5070);
        s.regs.set(vec![spec(vec![p])], &mut s.layer, s.now);
        s.regs.handle_timeout(&mut s.layer, s.now);
        let sent = s.sent();
        assert_eq!(sent.len(), 1);
        let (first, to) = &sent[0];
        assert_eq!(*to, p);
        assert_eq!(first.request_uri(), Some("sip:carrier.example"));
        assert_eq!(first.expires().unwrap(), Some(600));
        assert_eq!(
            first.header(HeaderName::Contact),
            Some("<sip:acme@192.0.2.1:5060>")
        );
        s.answer(
            p,
            MessageBuilder::response_to(first, 401, "Unauthorized", Some("r1"))
                .header("WWW-Authenticate", challenge()),
        );
        let sent = s.sent();
        assert_eq!(sent.len(), 1, "one answer to the challenge");
        let (second, _) = &sent[0];
        let auth = second.header(HeaderName::Authorization).unwrap();
        assert!(auth.contains(r#"username="acme""#), "{auth}");
        assert!(auth.contains("nonce=\"abc123\""), "{auth}");
        assert_eq!(second.cseq().seq, first.cseq().seq + 1);
        assert_eq!(second.call_id(), first.call_id());
        s.answer(
            p,
            MessageBuilder::response_to(second, 200, "OK", Some("r1"))
                .header("Contact", "<sip:acme@192.0.2.1:5060>;expires=120"),
        );
        assert_eq!(s.state().state, "registered");
        // Refreshed Timer F (32 s) before the granted 120 s run out (85 % would leave less),
        // not in terms of the asked 600 s.
        s.advance(Duration::from_secs(87));
        assert!(s.sent().is_empty());
        s.advance(Duration::from_secs(2));
        let sent = s.sent();
        // The refresh (and its UDP retransmissions, Timer E): one new CSeq.
        assert!(sent
            .iter()
            .all(|(m, _)| m.cseq().seq == second.cseq().seq + 1));
        assert!(sent[0].0.header(HeaderName::Authorization).is_none());
        assert_eq!(
            s.state().state,
            "registered",
            "still registered while refreshing"
        );
    }

    #[test]
    fn a_second_challenge_fails_and_retries_later() {
        let mut s = Sim::new();
        let p = peer(5070);
        s.regs.set(vec![spec(vec![p])], &mut s.layer, s.now);
        s.regs.handle_timeout(&mut s.layer, s.now);
        let (r1, _) = s.sent().remove(0);
        s.answer(
            p,
            MessageBuilder::response_to(&r1, 401, "Unauthorized", Some("r"))
                .header("WWW-Authenticate", challenge()),
        );
        let (r2, _) = s.sent().remove(0);
        s.answer(
            p,
            MessageBuilder::response_to(&r2, 401, "Unauthorized", Some("r"))
                .header("WWW-Authenticate", challenge()),
        );
        assert!(
            s.sent().is_empty(),
            "wrong credentials are not retried at once"
        );
        let st = s.state();
        assert_eq!(st.state, "failed");
        assert_eq!(st.last_error.as_deref(), Some("401 Unauthorized"));
        s.advance(FIRST_RETRY);
        assert!(!s.sent().is_empty(), "retried after the backoff");
    }

    #[test]
    fn interval_too_brief_asks_for_min_expires() {
        let mut s = Sim::new();
        let p = peer(5070);
        let mut sp = spec(vec![p]);
        sp.expires = 30;
        s.regs.set(vec![sp], &mut s.layer, s.now);
        s.regs.handle_timeout(&mut s.layer, s.now);
        let (r1, _) = s.sent().remove(0);
        s.answer(
            p,
            MessageBuilder::response_to(&r1, 423, "Interval Too Brief", Some("r"))
                .header("Min-Expires", "60"),
        );
        let (r2, _) = s.sent().remove(0);
        assert_eq!(r2.expires().unwrap(), Some(60));
    }

    #[test]
    fn timeout_fails_over_to_the_next_registrar() {
        let mut s = Sim::new();
        let (a, b) = (peer(5070), peer(5071));
        s.regs.set(vec![spec(vec![a, b])], &mut s.layer, s.now);
        s.regs.handle_timeout(&mut s.layer, s.now);
        assert_eq!(s.sent()[0].1, a);
        // Timer F: 64 × T1.
        s.advance(Duration::from_secs(33));
        let to: Vec<Peer> = s.sent().into_iter().map(|(_, p)| p).collect();
        assert_eq!(to.last(), Some(&b), "{to:?}");
    }

    #[test]
    fn refresh_times() {
        // 85 %; Timer F before the end; not before half.
        assert_eq!(refresh_after(3600), Duration::from_secs(3060));
        assert_eq!(refresh_after(120), Duration::from_secs(88));
        assert_eq!(refresh_after(60), Duration::from_secs(30));
        assert_eq!(refresh_after(3), Duration::from_millis(1500));
    }

    #[test]
    fn new_addresses_alone_do_not_re_register() {
        let mut s = Sim::new();
        let (a, b) = (peer(5070), peer(5071));
        s.regs.set(vec![spec(vec![a, b])], &mut s.layer, s.now);
        s.regs.handle_timeout(&mut s.layer, s.now);
        let (r1, _) = s.sent().remove(0);
        s.answer(
            a,
            MessageBuilder::response_to(&r1, 200, "OK", Some("r")).header("Expires", "600"),
        );
        // DNS refreshed: the same registrars in another order.
        s.regs.set(vec![spec(vec![b, a])], &mut s.layer, s.now);
        assert!(s.sent().is_empty(), "no unregister, no new REGISTER");
        assert_eq!(s.state().state, "registered");
        // The refresh goes to the new first address.
        s.advance(Duration::from_secs(511));
        let sent = s.sent();
        assert_eq!(sent.first().map(|(_, p)| *p), Some(b), "{sent:?}");
    }

    #[test]
    fn a_removed_trunk_is_unregistered() {
        let mut s = Sim::new();
        let p = peer(5070);
        s.regs.set(vec![spec(vec![p])], &mut s.layer, s.now);
        s.regs.handle_timeout(&mut s.layer, s.now);
        let (r1, _) = s.sent().remove(0);
        s.answer(
            p,
            MessageBuilder::response_to(&r1, 200, "OK", Some("r")).header("Expires", "600"),
        );
        s.regs.set(vec![], &mut s.layer, s.now);
        let (bye, _) = s.sent().remove(0);
        assert_eq!(bye.expires().unwrap(), Some(0));
        assert!(s.regs.is_empty());
        s.answer(p, MessageBuilder::response_to(&bye, 200, "OK", Some("r")));
        assert_eq!(s.regs.poll_timeout(), None);
        assert!(s.regs.clients.is_empty());
    }
}
