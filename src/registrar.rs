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

/// What to answer. The core adds Via/From/To/Call-ID/CSeq and a To tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// A failed authentication: counts towards the source's ban (SPEC §2).
    pub auth_failure: bool,
}

impl Reply {
    pub fn new(code: u16, reason: &'static str) -> Reply {
        Reply {
            code,
            reason,
            headers: Vec::new(),
            auth_failure: false,
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
    /// Bindings by agent id.
    bindings: HashMap<String, Vec<Binding>>,
    persist: UnboundedSender<RegistrationChange>,
}

impl Registrar {
    pub fn new(
        cfg: RegistrarConfig,
        verifier: auth::Verifier,
        persist: UnboundedSender<RegistrationChange>,
    ) -> Registrar {
        Registrar {
            cfg,
            verifier,
            agents: HashMap::new(),
            bindings: HashMap::new(),
            persist,
        }
    }

    /// Replaces the credential cache.
    pub fn load_agents(&mut self, agents: Vec<AgentAuth>) {
        self.agents = agents
            .into_iter()
            .map(|a| (a.username.clone(), a))
            .collect();
        let known: std::collections::HashSet<&str> =
            self.agents.values().map(|a| a.id.as_str()).collect();
        self.bindings.retain(|id, _| known.contains(id.as_str()));
    }

    /// Adds or refreshes one agent's credentials (after an API change).
    pub fn upsert_agent(&mut self, agent: AgentAuth) {
        self.agents.retain(|_, a| a.id != agent.id);
        self.agents.insert(agent.username.clone(), agent);
    }

    /// Forgets an agent and its bindings (the store cascades the rows itself).
    pub fn remove_agent(&mut self, agent_id: &str) {
        self.agents.retain(|_, a| a.id != agent_id);
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
        let mut removed = 0;
        let persist = &self.persist;
        self.bindings.retain(|agent_id, list| {
            list.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    removed += 1;
                    let _ = persist.send(RegistrationChange::Remove {
                        agent_id: agent_id.clone(),
                        contact: b.contact.clone(),
                    });
                }
                live
            });
            !list.is_empty()
        });
        removed
    }

    /// The 401 challenge: identical in shape for every request, whoever it claims to be,
    /// so usernames cannot be enumerated (SPEC §2).
    pub fn challenge(&self, stale: bool, random: [u8; NONCE_RANDOM_LEN], now_unix: u64) -> Reply {
        let mut reply = Reply::new(401, "Unauthorized");
        for challenge in self.verifier.challenges(now_unix, random, stale) {
            reply = reply.with("WWW-Authenticate", challenge.to_string());
        }
        reply
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
        let now_unix = u64::try_from(now.timestamp()).unwrap_or(0);
        let Some(credentials) = req.header(HeaderName::Authorization) else {
            return self.challenge(false, random, now_unix);
        };
        let agents = &self.agents;
        let verified = self
            .verifier
            .verify("REGISTER", credentials, |username, alg| {
                let agent = agents.get(username)?;
                match alg {
                    Algorithm::Md5 => Some(agent.ha1_md5.clone()),
                    Algorithm::Sha256 => Some(agent.ha1_sha256.clone()),
                    // Only the base algorithms are offered (RegistrarConfig::algorithms).
                    _ => None,
                }
            }, now_unix);
        let verified = match verified {
            Ok(v) => v,
            Err(auth::AuthError::Stale) => return self.challenge(true, random, now_unix),
            Err(auth::AuthError::Forbidden) => {
                let mut r = Reply::new(403, "Forbidden");
                r.auth_failure = true;
                return r;
            }
            // Credentials for another realm, garbage, a replayed nc: ask again; the client
            // has nothing that can succeed without a fresh challenge.
            Err(_) => return self.challenge(false, random, now_unix),
        };
        // RFC 2617 §3.2.2.5: the digest-uri names the resource the response was computed
        // for; one for another Request-URI is a replay from elsewhere.
        if req.request_uri() != Some(verified.uri.as_str()) {
            return Reply::new(400, "Bad Request");
        }
        let Some(agent) = self.agents.get(&verified.username).cloned() else {
            let mut r = Reply::new(403, "Forbidden");
            r.auth_failure = true;
            return r;
        };

        // SPEC §2: an agent may only register its own username (RFC 3261 §10.3 step 6).
        let to = req.to();
        let aor_user = SipUri::parse(to.uri).ok().and_then(|u| u.user);
        if aor_user != Some(agent.username.as_str()) {
            return Reply::new(403, "Forbidden");
        }

        self.update_bindings(req, &agent, transport, source, now)
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
                    let _ = self.persist.send(RegistrationChange::RemoveAllForAgent {
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
                            let _ = self.persist.send(RegistrationChange::Remove {
                                agent_id: agent.id.clone(),
                                contact: b.contact,
                            });
                        }
                        continue;
                    }
                    let binding = Binding {
                        id: existing
                            .map(|i| bindings[i].id.clone())
                            .unwrap_or_else(|| crate::ids::new_id(crate::ids::IdKind::Registration)),
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
                        None if bindings.len() >= MAX_CONTACTS_PER_AGENT => {
                            return Reply::new(503, "Too Many Registered Contacts")
                                .with("Retry-After", "60".to_owned());
                        }
                        None => bindings.push(binding.clone()),
                    }
                    let _ = self.persist.send(RegistrationChange::Upsert(Registration {
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
