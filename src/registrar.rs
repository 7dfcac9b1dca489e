//! The registrar (RFC 3261 §10.3): digest-authenticated REGISTER against the agents in the
//! store, bindings held in memory for routing and written behind to the store so that a
//! restart keeps them (SPEC §2).
//!
//! It is synchronous and owns no sockets: the SIP core hands it a parsed REGISTER plus the
//! wall-clock time and sends the [`Reply`] it returns. Persistence goes out on an unbounded
//! channel to a worker that batches changes into one transaction (see `sip::persist`), so a
//! slow disk never stalls signalling.

use std::collections::HashMap;
use std::net::SocketAddr;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tokio::sync::mpsc::UnboundedSender;
use voxgate_sip::auth::{self, Algorithm, NONCE_RANDOM_LEN};
use voxgate_sip::message::{Contacts, HeaderName, Message};
use voxgate_sip::SipUri;

use crate::sip::PersistOp;
use crate::store::{AgentAuth, Registration, RegistrationChange};

/// Bindings one agent may hold at once; more is refused (Kamailio's `max_contacts` idea).
pub const MAX_CONTACTS_PER_AGENT: usize = 10;

/// Registrar settings, from `[sip]` in the config.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub realm: String,
    pub min_expires: u32,
    pub default_expires: u32,
    pub max_expires: u32,
}

/// One contact bound to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub id: String,
    pub contact: String,
    pub transport: String,
    pub source: SocketAddr,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub call_id: String,
    pub cseq: u32,
}

/// Who challenges: the registrar (401, RFC 3261 §22.2) or the proxy-like call engine for
/// INVITEs (407, §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenger {
    Registrar,
    Proxy,
}

impl Challenger {
    fn response(self) -> (u16, &'static str, &'static str) {
        match self {
            Challenger::Registrar => (401, "Unauthorized", "WWW-Authenticate"),
            Challenger::Proxy => (407, "Proxy Authentication Required", "Proxy-Authenticate"),
        }
    }
}

/// What to answer. The core adds Via/From/To/Call-ID/CSeq and a To tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// A failed authentication: counts towards the source's ban (SPEC §2).
    pub auth_failure: bool,
    /// The handling queued changes for the store: send this only once they are committed.
    pub durable: bool,
}

/// Who a request's credentials belong to.
#[derive(Debug, Clone)]
pub enum Authenticated {
    Agent(AgentAuth),
    /// A username [`Registrar::authenticate_with`]'s `others` knows.
    Other(String),
}

impl Reply {
    pub fn new(code: u16, reason: &'static str) -> Reply {
        Reply {
            code,
            reason,
            headers: Vec::new(),
            auth_failure: false,
            durable: false,
        }
    }
    pub fn with(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

pub struct Registrar {
    cfg: RegistrarConfig,
    verifier: auth::Verifier,
    /// Agents by username: the credential cache, kept whole from the store and its events.
    agents: HashMap<String, AgentAuth>,
    /// Usernames by agent id (numbers route to agents by id).
    usernames: HashMap<String, String>,
    /// Bindings by agent id.
    bindings: HashMap<String, Vec<Binding>>,
    persist: UnboundedSender<PersistOp>,
    /// Changes queued so far; a reply whose handling moved it must wait for the commit.
    queued: u64,
}

impl Registrar {
    pub fn new(
        cfg: RegistrarConfig,
        verifier: auth::Verifier,
        persist: UnboundedSender<PersistOp>,
    ) -> Registrar {
        Registrar {
            cfg,
            verifier,
            agents: HashMap::new(),
            usernames: HashMap::new(),
            bindings: HashMap::new(),
            persist,
            queued: 0,
        }
    }

    /// Queues a change for the store.
    fn queue(&mut self, change: RegistrationChange) {
        self.queued += 1;
        // The worker only stops after the core (and so this registrar) is gone.
        let _ = self.persist.send(PersistOp::Change(change));
    }

    /// Replaces the credential cache.
    pub fn load_agents(&mut self, agents: Vec<AgentAuth>) {
        self.agents = agents
            .into_iter()
            .map(|a| (a.username.clone(), a))
            .collect();
        self.usernames = self
            .agents
            .values()
            .map(|a| (a.id.clone(), a.username.clone()))
            .collect();
        let known: std::collections::HashSet<&str> =
            self.agents.values().map(|a| a.id.as_str()).collect();
        self.bindings.retain(|id, _| known.contains(id.as_str()));
    }

    /// Adds or refreshes one agent's credentials (after an API change).
    pub fn upsert_agent(&mut self, agent: AgentAuth) {
        if let Some(old) = self.usernames.remove(&agent.id) {
            self.agents.remove(&old);
        }
        self.usernames
            .insert(agent.id.clone(), agent.username.clone());
        self.agents.insert(agent.username.clone(), agent);
    }

    /// Forgets an agent and its bindings (the store cascades the rows itself).
    pub fn remove_agent(&mut self, agent_id: &str) {
        if let Some(username) = self.usernames.remove(agent_id) {
            self.agents.remove(&username);
        }
        self.bindings.remove(agent_id);
    }

    /// Restores bindings persisted before a restart, skipping the expired.
    pub fn load_registrations(&mut self, regs: Vec<Registration>, now: DateTime<Utc>) {
        for r in regs {
            if r.expires_at <= now {
                continue;
            }
            let Ok(source) = r.source.parse::<SocketAddr>() else {
                continue;
            };
            self.bindings.entry(r.agent_id).or_default().push(Binding {
                id: r.id,
                contact: r.contact,
                transport: r.transport,
                source,
                expires_at: r.expires_at,
                user_agent: r.user_agent,
                call_id: r.call_id,
                cseq: u32::try_from(r.cseq).unwrap_or(0),
            });
        }
    }

    /// Live bindings of an agent, for routing calls to it.
    pub fn bindings(&self, agent_id: &str) -> &[Binding] {
        self.bindings.get(agent_id).map_or(&[], Vec::as_slice)
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Drops expired bindings and queues their removal; returns how many went.
    pub fn sweep(&mut self, now: DateTime<Utc>) -> usize {
        let mut gone = Vec::new();
        self.bindings.retain(|agent_id, list| {
            list.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    gone.push(RegistrationChange::Remove {
                        agent_id: agent_id.clone(),
                        contact: b.contact.clone(),
                    });
                }
                live
            });
            !list.is_empty()
        });
        let removed = gone.len();
        for change in gone {
            self.queue(change);
        }
        removed
    }

    /// The challenge: identical in shape for every request, whoever it claims to be, so
    /// usernames cannot be enumerated (SPEC §2).
    pub fn challenge(
        &self,
        kind: Challenger,
        stale: bool,
        random: [u8; NONCE_RANDOM_LEN],
        now_unix: u64,
    ) -> Reply {
        let (code, reason, header) = kind.response();
        let mut reply = Reply::new(code, reason);
        for challenge in self.verifier.challenges(now_unix, random, stale) {
            reply = reply.with(header, challenge.to_string());
        }
        reply
    }

    /// Digest-authenticates a request as one of the agents (RFC 3261 §22): the agent, or
    /// the reply to send instead (a challenge, 403, or 400).
    pub fn authenticate(
        &mut self,
        req: &Message,
        kind: Challenger,
        now: DateTime<Utc>,
        random: [u8; NONCE_RANDOM_LEN],
    ) -> Result<AgentAuth, Reply> {
        match self.authenticate_with(req, kind, now, random, &|_, _, _| None)? {
            Authenticated::Agent(a) => Ok(a),
            Authenticated::Other(_) => Err(Reply::new(403, "Forbidden")),
        }
    }

    /// [`authenticate`](Self::authenticate), also accepting the users `others` knows
    /// (carriers' trunk credentials): it gives the HA1 of a username that is not an
    /// agent's, in the given realm (this registrar's), for an algorithm. Agents' usernames
    /// win. The same challenge goes to everyone.
    pub fn authenticate_with(
        &mut self,
        req: &Message,
        kind: Challenger,
        now: DateTime<Utc>,
        random: [u8; NONCE_RANDOM_LEN],
        others: &dyn Fn(&str, &str, Algorithm) -> Option<String>,
    ) -> Result<Authenticated, Reply> {
        let now_unix = u64::try_from(now.timestamp()).unwrap_or(0);
        let header = match kind {
            Challenger::Registrar => HeaderName::Authorization,
            Challenger::Proxy => HeaderName::ProxyAuthorization,
        };
        let Some(credentials) = req.header(header) else {
            return Err(self.challenge(kind, false, random, now_unix));
        };
        let method = req.method().map_or("", |m| m.as_str());
        let agents = &self.agents;
        let realm = &self.cfg.realm;
        let verified = self.verifier.verify(
            method,
            credentials,
            |username, alg| match agents.get(username) {
                Some(agent) => match alg {
                    Algorithm::Md5 => Some(agent.ha1_md5.clone()),
                    Algorithm::Sha256 => Some(agent.ha1_sha256.clone()),
                    // Only the base algorithms are offered (`sip.auth_algorithms`).
                    _ => None,
                },
                None => others(username, realm, alg),
            },
            now_unix,
        );
        let forbidden = || {
            let mut r = Reply::new(403, "Forbidden");
            r.auth_failure = true;
            r
        };
        let verified = match verified {
            Ok(v) => v,
            Err(auth::AuthError::Stale) => return Err(self.challenge(kind, true, random, now_unix)),
            Err(auth::AuthError::Forbidden) => return Err(forbidden()),
            // Credentials for another realm, garbage, a replayed nc: ask again; the client
            // has nothing that can succeed without a fresh challenge.
            Err(_) => return Err(self.challenge(kind, false, random, now_unix)),
        };
        // RFC 2617 §3.2.2.5: the digest-uri names the resource the response was computed
        // for; one for another Request-URI is a replay from elsewhere.
        if req.request_uri() != Some(verified.uri.as_str()) {
            return Err(Reply::new(400, "Bad Request"));
        }
        match self.agents.get(&verified.username) {
            Some(a) => Ok(Authenticated::Agent(a.clone())),
            None => Ok(Authenticated::Other(verified.username)),
        }
    }

    /// An agent's credentials and limits by username.
    pub fn agent(&self, username: &str) -> Option<&AgentAuth> {
        self.agents.get(username)
    }

    /// An agent by id or username.
    pub fn find_agent(&self, reference: &str) -> Option<&AgentAuth> {
        self.agents.get(reference).or_else(|| {
            self.usernames
                .get(reference)
                .and_then(|u| self.agents.get(u))
        })
    }

    /// Handles one REGISTER. `random` feeds a fresh nonce if a challenge is needed.
    pub fn handle_register(
        &mut self,
        req: &Message,
        transport: &str,
        source: SocketAddr,
        now: DateTime<Utc>,
        random: [u8; NONCE_RANDOM_LEN],
    ) -> Reply {
        let agent = match self.authenticate(req, Challenger::Registrar, now, random) {
            Ok(agent) => agent,
            Err(reply) => return reply,
        };

        // SPEC §2: an agent may only register its own username (RFC 3261 §10.3 step 6).
        let to = req.to();
        let aor_user = SipUri::parse(to.uri).ok().and_then(|u| u.user);
        if aor_user != Some(agent.username.as_str()) {
            return Reply::new(403, "Forbidden");
        }

        let queued = self.queued;
        let mut reply = self.update_bindings(req, &agent, transport, source, now);
        reply.durable = self.queued != queued;
        reply
    }

    /// RFC 3261 §10.3 steps 7-8.
    fn update_bindings(
        &mut self,
        req: &Message,
        agent: &AgentAuth,
        transport: &str,
        source: SocketAddr,
        now: DateTime<Utc>,
    ) -> Reply {
        let header_expires = match req.expires() {
            Ok(e) => e,
            Err(_) => return Reply::new(400, "Bad Request"),
        };
        let contacts = match req.contacts() {
            Ok(c) => c,
            Err(_) => return Reply::new(400, "Bad Request"),
        };
        let call_id = req.call_id();
        let cseq = req.cseq().seq;
        let user_agent = req.header(HeaderName::UserAgent).map(str::to_owned);

        match contacts {
            None => {}
            Some(Contacts::Star) => {
                // §10.3 step 6: `*` only with Expires: 0 and no other contact.
                if header_expires != Some(0) {
                    return Reply::new(400, "Bad Request");
                }
                let list = self.bindings.remove(&agent.id).unwrap_or_default();
                if !list.is_empty() {
                    self.queue(RegistrationChange::RemoveAllForAgent {
                        agent_id: agent.id.clone(),
                    });
                }
            }
            Some(Contacts::List(list)) => {
                // Validate everything first so a 423 or 400 changes nothing.
                let mut wanted = Vec::with_capacity(list.len());
                for c in &list {
                    let requested = match c.param("expires") {
                        Some(v) => match v.trim().parse::<u32>() {
                            Ok(n) => n,
                            // RFC 3261 §10.3 step 6 allows treating a malformed value as the
                            // default; a softphone that sends it means "no preference".
                            Err(_) => self.cfg.default_expires,
                        },
                        None => header_expires.unwrap_or(self.cfg.default_expires),
                    };
                    if requested != 0 && requested < self.cfg.min_expires {
                        return Reply::new(423, "Interval Too Brief")
                            .with("Min-Expires", self.cfg.min_expires.to_string());
                    }
                    if SipUri::parse(c.uri).is_err() {
                        return Reply::new(400, "Bad Request");
                    }
                    wanted.push((c.uri.to_owned(), requested.min(self.cfg.max_expires)));
                }
                // The contact limit is checked before anything changes, so a 503 leaves
                // memory and store as they were.
                let current = self.bindings(&agent.id);
                let after = current
                    .iter()
                    .map(|b| b.contact.as_str())
                    .filter(|c| !wanted.iter().any(|(w, e)| w == c && *e == 0))
                    .chain(
                        wanted
                            .iter()
                            .filter(|(w, e)| *e > 0 && !current.iter().any(|b| &b.contact == w))
                            .map(|(w, _)| w.as_str()),
                    )
                    .collect::<std::collections::HashSet<_>>()
                    .len();
                if after > MAX_CONTACTS_PER_AGENT {
                    return Reply::new(503, "Too Many Registered Contacts")
                        .with("Retry-After", "60".to_owned());
                }
                let mut changes = Vec::new();
                let bindings = self.bindings.entry(agent.id.clone()).or_default();
                for (contact, expires) in wanted {
                    let existing = bindings.iter().position(|b| b.contact == contact);
                    if let Some(i) = existing {
                        // §10.3 step 7: same Call-ID with an older CSeq is out of order.
                        let b = &bindings[i];
                        if b.call_id == call_id && cseq <= b.cseq {
                            continue;
                        }
                    }
                    if expires == 0 {
                        if let Some(i) = existing {
                            let b = bindings.remove(i);
                            changes.push(RegistrationChange::Remove {
                                agent_id: agent.id.clone(),
                                contact: b.contact,
                            });
                        }
                        continue;
                    }
                    let binding = Binding {
                        id: existing.map(|i| bindings[i].id.clone()).unwrap_or_else(|| {
                            crate::ids::new_id(crate::ids::IdKind::Registration)
                        }),
                        contact,
                        transport: transport.to_owned(),
                        source,
                        expires_at: now + ChronoDuration::seconds(i64::from(expires)),
                        user_agent: user_agent.clone(),
                        call_id: call_id.to_owned(),
                        cseq,
                    };
                    match existing {
                        Some(i) => bindings[i] = binding.clone(),
                        None => bindings.push(binding.clone()),
                    }
                    changes.push(RegistrationChange::Upsert(Registration {
                        id: binding.id,
                        agent_id: agent.id.clone(),
                        contact: binding.contact,
                        transport: binding.transport,
                        source: binding.source.to_string(),
                        expires_at: binding.expires_at,
                        user_agent: binding.user_agent,
                        call_id: binding.call_id,
                        cseq: i64::from(binding.cseq),
                    }));
                }
                for change in changes {
                    self.queue(change);
                }
                if self.bindings.get(&agent.id).is_some_and(Vec::is_empty) {
                    self.bindings.remove(&agent.id);
                }
            }
        }

        // §10.3 step 8: the 200 lists every current binding with its remaining time.
        let mut reply = Reply::new(200, "OK");
        for b in self.bindings(&agent.id) {
            let left = (b.expires_at - now).num_seconds().max(0);
            reply = reply.with("Contact", format!("<{}>;expires={left}", b.contact));
        }
        reply.with("Date", now.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
    use voxgate_sip::auth::{ha1, select_challenge, AnswerInput, ClientSecret, Nonces, Verifier};

    const REALM: &str = "voxgate";

    fn agent(id: &str, username: &str, password: &str) -> AgentAuth {
        AgentAuth {
            id: id.to_owned(),
            username: username.to_owned(),
            ha1_md5: ha1(Algorithm::Md5, username, REALM, password),
            ha1_sha256: ha1(Algorithm::Sha256, username, REALM, password),
            realm: REALM.to_owned(),
            max_concurrent_calls: 1,
            away: false,
        }
    }

    fn registrar() -> (Registrar, UnboundedReceiver<PersistOp>) {
        let (tx, rx) = unbounded_channel();
        let verifier = Verifier::new(REALM, Nonces::new(&[7; 32]));
        let mut r = Registrar::new(
            RegistrarConfig {
                realm: REALM.to_owned(),
                min_expires: 60,
                default_expires: 3600,
                max_expires: 7200,
            },
            verifier,
            tx,
        );
        r.load_agents(vec![
            agent("agt_1", "alice", "alicepass1"),
            agent("agt_2", "bob", "bobpass123"),
        ]);
        (r, rx)
    }

    fn register(aor: &str, contact: &str, extra: &str, cseq: u32) -> String {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}x;rport\r\n\
             From: <sip:{aor}@127.0.0.1>;tag=abc\r\n\
             To: <sip:{aor}@127.0.0.1>\r\n\
             Call-ID: reg-{aor}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: {contact}\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    }

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::from(s.to_owned())).unwrap()
    }

    fn src() -> SocketAddr {
        "127.0.0.1:5070".parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Answers the registrar's challenge the way a softphone does.
    fn authorize(r: &mut Registrar, user: &str, password: &str, alg: Option<&str>) -> String {
        // A fresh nonce per challenge, as the core's random bytes give.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let random = NEXT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
        let c = r.handle_register(
            &parse(&register(user, "<sip:x@h>", "", 1)),
            "udp",
            src(),
            now(),
            random,
        );
        assert_eq!(c.code, 401);
        let values: Vec<&str> = c
            .headers
            .iter()
            .filter(|(n, v)| *n == "WWW-Authenticate" && alg.is_none_or(|a| v.contains(a)))
            .map(|(_, v)| v.as_str())
            .collect();
        let challenge = select_challenge(values).unwrap();
        challenge
            .answer(&AnswerInput {
                username: user,
                secret: ClientSecret::Password(password),
                method: "REGISTER",
                uri: "sip:127.0.0.1",
                cnonce: "c0ffee",
                nc: 1,
            })
            .unwrap()
            .to_string()
    }

    fn with_auth(auth: &str) -> String {
        format!("Authorization: {auth}\r\n")
    }

    #[test]
    fn challenge_offers_sha256_then_md5_and_is_the_same_for_everyone() {
        let (mut r, _) = registrar();
        let shape = |reply: &Reply| -> Vec<String> {
            reply
                .headers
                .iter()
                .map(|(n, v)| {
                    // Strip the per-challenge values; everything else must be identical.
                    let c = voxgate_sip::auth::Challenge::parse(v).unwrap();
                    format!("{n}: {} {:?} {:?} {}", c.realm, c.algorithm, c.qop, c.stale)
                })
                .collect()
        };
        let known = r.handle_register(
            &parse(&register("alice", "<sip:a@h>", "", 1)),
            "udp",
            src(),
            now(),
            [1; 8],
        );
        let unknown = r.handle_register(
            &parse(&register("mallory", "<sip:m@h>", "", 1)),
            "udp",
            src(),
            now(),
            [2; 8],
        );
        assert_eq!(known.code, 401);
        assert_eq!(shape(&known), shape(&unknown));
        assert!(known.headers[0].1.contains("SHA-256"));
        assert!(known.headers[1].1.contains("MD5"));
        assert!(!known.auth_failure);
    }

    #[test]
    fn registers_with_either_algorithm_and_lists_bindings() {
        for alg in ["SHA-256", "MD5"] {
            let (mut r, mut rx) = registrar();
            let auth = authorize(&mut r, "alice", "alicepass1", Some(alg));
            let req = register("alice", "<sip:alice@10.0.0.5:5070>", &with_auth(&auth), 2);
            let ok = r.handle_register(&parse(&req), "udp", src(), now(), [3; 8]);
            assert_eq!(ok.code, 200, "{alg}");
            assert!(ok.headers.contains(&(
                "Contact",
                "<sip:alice@10.0.0.5:5070>;expires=3600".to_owned()
            )));
            assert_eq!(r.bindings("agt_1").len(), 1);
            assert!(ok.durable);
            match rx.try_recv().unwrap() {
                PersistOp::Change(RegistrationChange::Upsert(reg)) => {
                    assert_eq!(reg.agent_id, "agt_1");
                    assert_eq!(reg.contact, "sip:alice@10.0.0.5:5070");
                    assert_eq!(reg.source, "127.0.0.1:5070");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_are_the_same_403() {
        let (mut r, _) = registrar();
        let auth = authorize(&mut r, "alice", "wrong-password", None);
        let bad = r.handle_register(
            &parse(&register("alice", "<sip:a@h>", &with_auth(&auth), 2)),
            "udp",
            src(),
            now(),
            [3; 8],
        );
        let auth = authorize(&mut r, "mallory", "whatever1", None);
        let unknown = r.handle_register(
            &parse(&register("mallory", "<sip:m@h>", &with_auth(&auth), 2)),
            "udp",
            src(),
            now(),
            [3; 8],
        );
        assert_eq!((bad.code, bad.auth_failure), (403, true));
        assert_eq!(bad, unknown);
    }

    #[test]
    fn an_agent_may_only_register_its_own_aor() {
        let (mut r, _) = registrar();
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let req = register("bob", "<sip:bob@h>", &with_auth(&auth), 2);
        let reply = r.handle_register(&parse(&req), "udp", src(), now(), [3; 8]);
        assert_eq!(reply.code, 403);
        assert!(r.bindings("agt_2").is_empty());
    }

    #[test]
    fn interval_too_brief_clamping_and_unregister() {
        let (mut r, _) = registrar();
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let brief = register(
            "alice",
            "<sip:a@h>",
            &format!("Expires: 30\r\n{}", with_auth(&auth)),
            2,
        );
        let reply = r.handle_register(&parse(&brief), "udp", src(), now(), [3; 8]);
        assert_eq!(reply.code, 423);
        assert_eq!(reply.headers, vec![("Min-Expires", "60".to_owned())]);
        assert!(r.bindings("agt_1").is_empty());

        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let long = register("alice", "<sip:a@h>;expires=99999", &with_auth(&auth), 3);
        let reply = r.handle_register(&parse(&long), "udp", src(), now(), [3; 8]);
        assert_eq!(reply.code, 200);
        assert!(reply
            .headers
            .contains(&("Contact", "<sip:a@h>;expires=7200".to_owned())));

        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let second = register("alice", "<sip:a2@h>", &with_auth(&auth), 4);
        assert_eq!(
            r.handle_register(&parse(&second), "udp", src(), now(), [3; 8])
                .code,
            200
        );
        assert_eq!(r.bindings("agt_1").len(), 2);

        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let one = register("alice", "<sip:a@h>;expires=0", &with_auth(&auth), 5);
        let reply = r.handle_register(&parse(&one), "udp", src(), now(), [3; 8]);
        assert_eq!(reply.code, 200);
        assert_eq!(r.bindings("agt_1").len(), 1);

        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let star = register(
            "alice",
            "*",
            &format!("Expires: 0\r\n{}", with_auth(&auth)),
            6,
        );
        let reply = r.handle_register(&parse(&star), "udp", src(), now(), [3; 8]);
        assert_eq!(reply.code, 200);
        assert!(reply.headers.iter().all(|(n, _)| *n != "Contact"));
        assert!(r.bindings("agt_1").is_empty());
    }

    #[test]
    fn contact_limit_is_checked_before_anything_changes() {
        let (mut r, mut rx) = registrar();
        let many: Vec<String> = (0..MAX_CONTACTS_PER_AGENT)
            .map(|i| format!("<sip:a{i}@h>"))
            .collect();
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let req = register("alice", &many.join(", "), &with_auth(&auth), 2);
        let ok = r.handle_register(&parse(&req), "udp", src(), now(), [3; 8]);
        assert_eq!(ok.code, 200);
        while rx.try_recv().is_ok() {}

        // One more new contact alongside a refresh: refused whole, nothing queued.
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let req = register("alice", "<sip:a0@h>, <sip:extra@h>", &with_auth(&auth), 3);
        let full = r.handle_register(&parse(&req), "udp", src(), now(), [3; 8]);
        assert_eq!((full.code, full.durable), (503, false));
        assert!(rx.try_recv().is_err());
        assert_eq!(r.bindings("agt_1").len(), MAX_CONTACTS_PER_AGENT);

        // Replacing one contact by another in the same request fits.
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let req = register(
            "alice",
            "<sip:a0@h>;expires=0, <sip:extra@h>",
            &with_auth(&auth),
            4,
        );
        let swapped = r.handle_register(&parse(&req), "udp", src(), now(), [3; 8]);
        assert_eq!((swapped.code, swapped.durable), (200, true));
        assert_eq!(r.bindings("agt_1").len(), MAX_CONTACTS_PER_AGENT);
    }

    #[test]
    fn star_without_expires_zero_is_a_400() {
        let (mut r, _) = registrar();
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let star = register("alice", "*", &with_auth(&auth), 2);
        assert_eq!(
            r.handle_register(&parse(&star), "udp", src(), now(), [3; 8])
                .code,
            400
        );
    }

    #[test]
    fn sweep_removes_expired_bindings_and_queues_their_removal() {
        let (mut r, mut rx) = registrar();
        let auth = authorize(&mut r, "alice", "alicepass1", None);
        let req = register("alice", "<sip:a@h>;expires=60", &with_auth(&auth), 2);
        assert_eq!(
            r.handle_register(&parse(&req), "udp", src(), now(), [3; 8])
                .code,
            200
        );
        let _ = rx.try_recv();
        assert_eq!(r.sweep(now() + ChronoDuration::seconds(59)), 0);
        assert_eq!(r.sweep(now() + ChronoDuration::seconds(60)), 1);
        assert!(matches!(
            rx.try_recv(),
            Ok(PersistOp::Change(RegistrationChange::Remove { .. }))
        ));
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn restored_registrations_skip_the_expired() {
        let (mut r, _) = registrar();
        let reg = |contact: &str, secs: i64| Registration {
            id: format!("reg_{contact}"),
            agent_id: "agt_1".to_owned(),
            contact: contact.to_owned(),
            transport: "udp".to_owned(),
            source: "127.0.0.1:5070".to_owned(),
            expires_at: now() + ChronoDuration::seconds(secs),
            user_agent: None,
            call_id: "c".to_owned(),
            cseq: 1,
        };
        r.load_registrations(vec![reg("sip:a@h", 100), reg("sip:b@h", -1)], now());
        assert_eq!(r.bindings("agt_1").len(), 1);
        assert_eq!(r.bindings("agt_1")[0].contact, "sip:a@h");
    }
}
