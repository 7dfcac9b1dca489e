//! The trunks and numbers the call engine consults, in memory.
//!
//! The SIP loop never awaits the database, so it reads an immutable [`Snapshot`] built
//! from the store: [`TrunkDirectory::snapshot`] is a read lock held for one `Arc` clone
//! (writers hold it only to swap the pointer), and every lookup on the snapshot is plain
//! synchronous code over data parsed once (CIDRs, codecs, numbers). The API reloads the
//! directory after every committed change to trunks or numbers
//! ([`TrunkDirectory::reload`]), and [`crate::events::AppEvent::TrunksChanged`] tells
//! anyone else who caches from it.
//!
//! How the engine uses it (see docs/trunks.md, "Inbound admission"):
//! - an INVITE from `source`: [`Snapshot::match_inbound`] gives the carrier's trunk (or
//!   none: the caller must authenticate, with a trunk's inbound credentials
//!   ([`Snapshot::inbound_by_username`], [`Trunk::inbound_credentials`]) or as an agent);
//!   then [`Trunk::caller`] is the [`Caller`];
//! - the called number: [`Snapshot::number`] gives its route (unknown: 404);
//! - a number out: [`Snapshot::trunk`] (click-to-call's `trunk`) or
//!   [`Snapshot::default_outbound`] (an agent's softphone), the carrier's addresses
//!   ([`Trunk::outbound_target`], resolved by RFC 3263, or [`Trunk::literal_targets`] for
//!   an IP literal), then [`Trunk::dial`]; on a `simulated` trunk, [`Trunk::simulate_for`]
//!   instead of any network;
//! - at the end of a priced call: [`Trunk::cost`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use voxgate_sip::transaction::{Peer, Transport};

use super::number::{self, E164};
use super::{codec_by_name, Provider, SimulateRule, TrunkConfig};
use crate::calls::env::{Caller, Credentials, DialOutError, ProgramRoute, TrunkDial};
use crate::calls::pacer::TrunkLimits;
use crate::store::{IvrFlowRow, NumberRow, PromptRow, Store, StoreError, TrunkRow};

/// The host in the Request-URI of calls on a `simulated` trunk, which never leave
/// voxgate (`.invalid` is reserved for that, RFC 6761 §6.4).
pub const SIMULATED_HOST: &str = "simulated.invalid";

/// An IPv4 or IPv6 network (`192.0.2.0/24`, `2001:db8::/32`; a bare address is /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("is not an IPv4 or IPv6 address")]
    Address,
    #[error("has a prefix length that is not a number from 0 to {0}")]
    Prefix(u8),
    #[error("has address bits set beyond its prefix (did you mean {0}?)")]
    HostBits(String),
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u8>().ok())
                .flatten()
                .filter(|p| *p <= max)
                .ok_or(CidrError::Prefix(max))?,
        };
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(CidrError::HostBits(format!("{network}/{prefix}")));
        }
        Ok(cidr)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(self.prefix)).into()),
        }
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 source (`::ffff:192.0.2.1`,
    /// what a dual-stack socket reports) matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask32(self.prefix);
                u32::from(net) & m == u32::from(ip) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask128(self.prefix);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// A trunk as the engine sees it: its settings with everything parsed once.
#[derive(Debug, Clone)]
pub struct Trunk {
    pub id: String,
    pub config: TrunkConfig,
    cidrs: Vec<Cidr>,
    codecs: Vec<voxgate_sip::sdp::Codec>,
}

impl Trunk {
    /// Parses the stored settings. Entries that do not parse (only a hand-edited
    /// database has them: the API validates) are skipped with a warning.
    pub fn new(id: String, config: TrunkConfig) -> Trunk {
        let cidrs = config
            .inbound
            .allowed_cidrs
            .iter()
            .filter_map(|c| match Cidr::parse(c) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(trunk = %config.name, cidr = %c, error = %e, "allowed CIDR ignored");
                    None
                }
            })
            .collect();
        let codecs = config
            .codecs
            .iter()
            .filter_map(|c| {
                let codec = codec_by_name(c);
                if codec.is_none() {
                    tracing::warn!(trunk = %config.name, codec = %c, "unknown codec ignored");
                }
                codec
            })
            .collect();
        Trunk {
            id,
            config,
            cidrs,
            codecs,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn provider(&self) -> Provider {
        self.config.provider
    }

    /// Whether an INVITE from `source` is this carrier's by its address.
    pub fn allows(&self, source: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(source))
    }

    /// The longest allowed prefix containing `source`, if any.
    fn best_match(&self, source: IpAddr) -> Option<u8> {
        self.cidrs
            .iter()
            .filter(|c| c.contains(source))
            .map(Cidr::prefix)
            .max()
    }

    /// Credentials a carrier may authenticate its INVITEs with (RFC 3261 §22) instead of
    /// coming from an allowed address.
    pub fn inbound_credentials(&self) -> Option<Credentials> {
        match (&self.config.inbound.username, &self.config.inbound.password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            _ => None,
        }
    }

    /// Credentials voxgate answers the carrier's 401/407 with.
    pub fn credentials(&self) -> Option<Credentials> {
        match (
            &self.config.outbound.username,
            &self.config.outbound.password,
        ) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            _ => None,
        }
    }

    /// `number` (as a carrier or a user writes it) in E.164, reading national forms as
    /// the trunk's country's.
    pub fn normalize(&self, number: &str) -> Result<E164, number::NumberError> {
        number::parse(number, self.config.country_code.as_deref())
    }

    /// The caller of an INVITE this carrier sent, `from_user` being the From URI's user
    /// part: its number in E.164 when it reads as one, else as sent (`anonymous`).
    pub fn caller(&self, from_user: &str) -> Caller {
        let number = self
            .normalize(from_user)
            .map_or_else(|_| from_user.to_owned(), E164::into_string);
        Caller::Trunk {
            trunk_id: self.id.clone(),
            number,
        }
    }

    /// The trunk's limits for the engine's pacer.
    pub fn limits(&self) -> TrunkLimits {
        TrunkLimits {
            max_cps: self.config.max_cps,
            max_calls_per_minute: self.config.max_calls_per_minute,
            max_concurrent_calls: self.config.max_concurrent_calls,
        }
    }

    /// Codecs in the trunk's preference order (empty: voxgate's own list).
    pub fn codecs(&self) -> &[voxgate_sip::sdp::Codec] {
        &self.codecs
    }

    /// The carrier's SIP host, port (`None`: RFC 3263 decides) and transport; `None` for
    /// a `simulated` trunk, which has no carrier.
    pub fn outbound_target(&self) -> Option<(&str, Option<u16>, Transport)> {
        let host = self.config.outbound.host.as_deref()?;
        Some((
            host,
            self.config.outbound.port,
            self.config.outbound.transport.sip(),
        ))
    }

    /// Where to send INVITEs when the host is an IP literal (no DNS needed: RFC 3263
    /// §4.2, the port defaulting to the transport's); `None` for a host name.
    pub fn literal_targets(&self) -> Option<Vec<Peer>> {
        let (host, port, transport) = self.outbound_target()?;
        let ip: IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
        let port = port.unwrap_or(self.config.outbound.transport.default_port());
        Some(vec![Peer {
            transport,
            addr: SocketAddr::new(ip, port),
            conn: None,
        }])
    }

    /// `number` as this trunk writes it (its `number_format`).
    fn format(&self, n: &E164) -> Result<String, number::NumberError> {
        number::format(
            n,
            self.config.number_format,
            self.config.country_code.as_deref(),
        )
    }

    /// How to dial `number` through this trunk to `targets` (the carrier's addresses in
    /// RFC 3263 order: from the resolver, or [`literal_targets`](Self::literal_targets)),
    /// showing `caller_id` or else the trunk's own (`anonymous` if neither).
    ///
    /// The Request-URI is `sip:<number in the trunk's format>@host[:port]
    /// [;transport=tcp|tls]` (`host` is [`SIMULATED_HOST`] on a simulated trunk). A number
    /// or caller ID that does not read as E.164, or cannot be written in the trunk's
    /// format, is [`DialOutError::BadNumber`].
    pub fn dial(
        &self,
        number: &str,
        caller_id: Option<&str>,
        targets: Vec<Peer>,
    ) -> Result<TrunkDial, DialOutError> {
        let to = self
            .normalize(number)
            .and_then(|n| self.format(&n))
            .map_err(|e| DialOutError::BadNumber(format!("{number:?} {e}")))?;
        let from_user = match caller_id.or(self.config.caller_id.as_deref()) {
            Some(c) => self
                .normalize(c)
                .and_then(|n| self.format(&n))
                .map_err(|e| DialOutError::BadNumber(format!("caller ID {c:?} {e}")))?,
            None => "anonymous".to_owned(),
        };
        let uri = match self.outbound_target() {
            Some((host, port, _)) => {
                let host = match host.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => format!("[{host}]"),
                    Err(_) => host.to_owned(),
                };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let transport = match self.config.outbound.transport {
                    super::TrunkTransport::Udp => "",
                    super::TrunkTransport::Tcp => ";transport=tcp",
                    super::TrunkTransport::Tls => ";transport=tls",
                };
                format!("sip:{to}@{host}{port}{transport}")
            }
            None => format!("sip:{to}@{SIMULATED_HOST}"),
        };
        Ok(TrunkDial {
            trunk_id: self.id.clone(),
            uri,
            targets,
            from_user,
            credentials: self.credentials(),
            codecs: self.codecs.clone(),
            limits: self.limits(),
            rate: self.config.rate.clone(),
        })
    }

    /// What a call answered for `answered_seconds` costs at the trunk's rate, in
    /// micro-units of the currency; `None` for a trunk without a rate.
    pub fn cost(&self, answered_seconds: u64) -> Option<(i64, &str)> {
        let rate = self.config.rate.as_ref()?;
        Some((rate.cost_micros(answered_seconds), rate.currency.as_str()))
    }

    /// The first `simulate` rule matching `number` (read as E.164 with the trunk's
    /// country); `None` when none matches or the trunk is not `simulated` (the engine
    /// then fails the call as a carrier would with 404).
    pub fn simulate_for(&self, number: &str) -> Option<&SimulateRule> {
        if self.config.provider != Provider::Simulated {
            return None;
        }
        let n = self.normalize(number).ok()?;
        self.config.simulate.iter().find(|r| r.matches(n.as_str()))
    }
}

/// Where a number's inbound calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberRoute {
    /// Ring this agent (by id).
    Agent { agent_id: String },
    /// Answer and run this IVR flow (by id).
    Ivr { flow_id: String },
    /// Answer and run the verbs the operator's app at this URL returns.
    Webhook { url: String },
    /// A route type the engine does not run yet (`queue`, `ivr`, …): stored, not routed.
    Other { route_type: String, target: String },
}

/// An inbound number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberEntry {
    /// E.164.
    pub number: String,
    pub trunk_id: String,
    pub route: NumberRoute,
    /// Its calls are recorded, with these channels.
    pub record: Option<crate::store::RecordingChannels>,
}

/// Every trunk and number at one moment: immutable, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// In creation order.
    trunks: Vec<Trunk>,
    by_id: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    numbers: HashMap<String, NumberEntry>,
    /// The trunk flagged `default_outbound`, or the only trunk.
    default: Option<usize>,
    /// Country codes of the trunks that have numbers, to read national called numbers.
    countries: Vec<String>,
    /// IVR flows compiled for the engine, by id.
    flows: HashMap<String, ProgramRoute>,
    /// Prompts by id and by name (what programs play).
    prompts: HashMap<String, PromptRow>,
}

impl Snapshot {
    /// Build from store rows (trunks in creation order).
    pub fn build(trunks: Vec<TrunkRow>, numbers: Vec<NumberRow>) -> Snapshot {
        let trunks: Vec<Trunk> = trunks
            .into_iter()
            .map(|r| Trunk::new(r.id, r.config))
            .collect();
        let by_id = trunks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let by_name = trunks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.config.name.clone(), i))
            .collect();
        let default = trunks
            .iter()
            .position(|t| t.config.default_outbound)
            .or(if trunks.len() == 1 { Some(0) } else { None });
        let numbers: HashMap<String, NumberEntry> = numbers
            .into_iter()
            .map(|n| {
                let route = if n.route_type == "agent" {
                    NumberRoute::Agent {
                        agent_id: n.route_target,
                    }
                } else if n.route_type == "ivr" {
                    NumberRoute::Ivr {
                        flow_id: n.route_target,
                    }
                } else if n.route_type == "webhook" {
                    NumberRoute::Webhook {
                        url: n.route_target,
                    }
                } else {
                    NumberRoute::Other {
                        route_type: n.route_type,
                        target: n.route_target,
                    }
                };
                (
                    n.number.clone(),
                    NumberEntry {
                        number: n.number,
                        trunk_id: n.trunk_id,
                        route,
                        record: n.record,
                    },
                )
            })
            .collect();
        let mut countries: Vec<String> = Vec::new();
        for t in &trunks {
            if let Some(cc) = &t.config.country_code {
                if !countries.contains(cc) {
                    countries.push(cc.clone());
                }
            }
        }
        Snapshot {
            trunks,
            by_id,
            by_name,
            numbers,
            default,
            countries,
            flows: HashMap::new(),
            prompts: HashMap::new(),
        }
    }

    /// The same snapshot with the call programs numbers may route to: each flow compiled
    /// once (a flow that does not compile, which validation at `PUT` prevents, is left
    /// out and logged), and the prompts they play.
    #[must_use]
    pub fn with_programs(mut self, flows: Vec<IvrFlowRow>, prompts: Vec<PromptRow>) -> Snapshot {
        for f in flows {
            let compiled = serde_json::from_value::<voxgate_ivr::Flow>(f.flow)
                .map_err(|e| e.to_string())
                .and_then(|flow| flow.compile().map_err(|e| e.to_string()));
            match compiled {
                Ok(blocks) => {
                    self.flows
                        .insert(f.id, ProgramRoute::Flow(Arc::new(blocks)));
                }
                Err(e) => tracing::warn!(flow = %f.id, error = %e, "ivr flow not loaded"),
            }
        }
        for p in prompts {
            self.prompts.insert(p.name.clone(), p.clone());
            self.prompts.insert(p.id.clone(), p);
        }
        self
    }

    /// A compiled IVR flow by id.
    pub fn flow(&self, id: &str) -> Option<&ProgramRoute> {
        self.flows.get(id)
    }

    /// A prompt by id or name.
    pub fn prompt(&self, reference: &str) -> Option<&PromptRow> {
        self.prompts.get(reference)
    }

    /// Every trunk, in creation order.
    pub fn trunks(&self) -> &[Trunk] {
        &self.trunks
    }

    /// The trunk whose `allowed_cidrs` contain `source`; when several do, the most
    /// specific network wins, then the oldest trunk.
    pub fn match_inbound(&self, source: IpAddr) -> Option<&Trunk> {
        let mut best: Option<(&Trunk, u8)> = None;
        for t in &self.trunks {
            if let Some(p) = t.best_match(source) {
                if best.is_none_or(|(_, b)| p > b) {
                    best = Some((t, p));
                }
            }
        }
        best.map(|(t, _)| t)
    }

    /// The trunk whose inbound credentials have this username: a carrier that sends from
    /// addresses no trunk allows authenticates with them (RFC 3261 §22; the engine checks
    /// the digest against [`Trunk::inbound_credentials`]). The oldest trunk wins if two
    /// share a username.
    pub fn inbound_by_username(&self, username: &str) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|t| t.config.inbound.username.as_deref() == Some(username))
    }

    /// A trunk by id or unique name.
    pub fn trunk(&self, id_or_name: &str) -> Option<&Trunk> {
        self.by_id
            .get(id_or_name)
            .or_else(|| self.by_name.get(id_or_name))
            .and_then(|&i| self.trunks.get(i))
    }

    /// The trunk agents' softphones dial external numbers through: the one flagged
    /// `default_outbound`, or the only trunk when there is exactly one.
    pub fn default_outbound(&self) -> Option<&Trunk> {
        self.default.and_then(|i| self.trunks.get(i))
    }

    /// The inbound number `called` (a Request-URI user part), read as E.164; national
    /// forms (`09876543210`) are read with each trunk's country code in turn.
    pub fn number(&self, called: &str) -> Option<&NumberEntry> {
        if let Ok(n) = number::parse(called, None) {
            if let Some(e) = self.numbers.get(n.as_str()) {
                return Some(e);
            }
        }
        self.countries.iter().find_map(|cc| {
            number::parse(called, Some(cc))
                .ok()
                .and_then(|n| self.numbers.get(n.as_str()))
        })
    }

    /// `Directory::dial_out` without DNS: `number` through `trunk` (id or name) to the
    /// trunk's [`literal_targets`](Trunk::literal_targets). For a host name the targets
    /// are empty: the caller fills them from the RFC 3263 resolver (an engine given none
    /// reports the trunk unresolved).
    pub fn dial_out(
        &self,
        trunk: &str,
        number: &str,
        caller_id: Option<&str>,
    ) -> Result<TrunkDial, DialOutError> {
        let t = self.trunk(trunk).ok_or(DialOutError::NoTrunk)?;
        t.dial(number, caller_id, t.literal_targets().unwrap_or_default())
    }

    /// The inbound number `called` as it arrived on `trunk` (national forms read with
    /// that trunk's country code first).
    pub fn number_on(&self, trunk: &Trunk, called: &str) -> Option<&NumberEntry> {
        trunk
            .normalize(called)
            .ok()
            .and_then(|n| self.numbers.get(n.as_str()))
            .or_else(|| self.number(called))
    }
}

/// The engine's handle on trunks and numbers: cheap to clone, shared by the API (which
/// reloads it) and the SIP loop (which reads snapshots).
#[derive(Debug, Clone, Default)]
pub struct TrunkDirectory {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    current: RwLock<Arc<Snapshot>>,
    /// Reloads run one at a time, so the last one to swap read the latest data.
    reload: tokio::sync::Mutex<()>,
}

impl TrunkDirectory {
    /// A directory loaded from the store.
    pub async fn load(store: &Store) -> Result<TrunkDirectory, StoreError> {
        let d = TrunkDirectory::default();
        d.reload(store).await?;
        Ok(d)
    }

    /// Read every trunk and number again and swap the snapshot in.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let _one_at_a_time = self.inner.reload.lock().await;
        let (trunks, numbers) = store.trunks_and_numbers().await?;
        let (flows, prompts) = store.programs_catalog().await?;
        self.replace(Snapshot::build(trunks, numbers).with_programs(flows, prompts));
        Ok(())
    }

    /// Swap in `snapshot` (tests, or a caller that built one).
    pub fn replace(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = snapshot;
    }

    /// The current snapshot. Never blocks on the database; hold it for one decision, not
    /// across calls (it does not change under you, but later reloads do not reach it).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::trunks::{
        Inbound, NumberFormat, Outbound, Rate, SimOutcome, TrunkConfig, TrunkTransport,
    };

    fn config(name: &str, provider: Provider) -> TrunkConfig {
        TrunkConfig {
            name: name.to_owned(),
            provider,
            outbound: Outbound {
                host: Some("sip.carrier.example".to_owned()),
                ..Outbound::default()
            },
            inbound: Inbound::default(),
            codecs: vec!["PCMU".into(), "PCMA".into()],
            max_cps: Some(1),
            max_calls_per_minute: None,
            max_concurrent_calls: Some(10),
            number_format: NumberFormat::E164,
            caller_id: Some("+14155550199".to_owned()),
            country_code: None,
            rate: None,
            simulate: Vec::new(),
            default_outbound: false,
        }
    }

    fn row(id: &str, config: TrunkConfig) -> TrunkRow {
        TrunkRow {
            id: id.to_owned(),
            config,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn number(n: &str, trunk: &str, agent: &str) -> NumberRow {
        NumberRow {
            number: n.to_owned(),
            trunk_id: trunk.to_owned(),
            route_type: "agent".to_owned(),
            route_target: agent.to_owned(),
            record: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("192.0.2.0/24").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.contains(ip("192.0.2.77")));
        assert!(!c.contains(ip("192.0.3.1")));
        assert!(c.contains(ip("::ffff:192.0.2.1")), "v4-mapped source");
        assert!(!c.contains(ip("2001:db8::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap_or_else(|e| panic!("{e}"));
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.0.2.1")));
        let one = Cidr::parse("203.0.113.9").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.prefix(), 32);
        assert!(one.contains(ip("203.0.113.9")) && !one.contains(ip("203.0.113.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains(ip("198.51.100.1")));
        assert_eq!(Cidr::parse("192.0.2.0/33"), Err(CidrError::Prefix(32)));
        assert_eq!(Cidr::parse("192.0.2.0/x"), Err(CidrError::Prefix(32)));
        assert_eq!(Cidr::parse("example.com/24"), Err(CidrError::Address));
        assert_eq!(
            Cidr::parse("192.0.2.1/24"),
            Err(CidrError::HostBits("192.0.2.0/24".into()))
        );
    }

    #[test]
    fn inbound_admission_and_numbers() {
        let mut a = config("twilio", Provider::Twilio);
        a.inbound.allowed_cidrs = vec!["198.51.100.0/24".into(), "2001:db8::/32".into()];
        let mut b = config("exotel", Provider::Exotel);
        b.country_code = Some("91".into());
        b.inbound.allowed_cidrs = vec!["198.51.100.128/25".into()];
        let snap = Snapshot::build(
            vec![row("trk_a", a), row("trk_b", b)],
            vec![
                number("+14155550100", "trk_a", "agt_alice"),
                number("+919876543210", "trk_b", "agt_bob"),
            ],
        );
        assert_eq!(
            snap.match_inbound(ip("198.51.100.7"))
                .map(|t| t.id.as_str()),
            Some("trk_a")
        );
        // The more specific network wins.
        assert_eq!(
            snap.match_inbound(ip("198.51.100.200"))
                .map(|t| t.id.as_str()),
            Some("trk_b")
        );
        assert_eq!(
            snap.match_inbound(ip("2001:db8::9")).map(|t| t.id.as_str()),
            Some("trk_a")
        );
        assert!(snap.match_inbound(ip("127.0.0.2")).is_none());
        assert!(snap.inbound_by_username("carrier").is_none());

        let alice = NumberRoute::Agent {
            agent_id: "agt_alice".into(),
        };
        for called in ["+14155550100", "14155550100", "0014155550100"] {
            assert_eq!(
                snap.number(called).map(|n| &n.route),
                Some(&alice),
                "{called}"
            );
        }
        // National forms are read with the trunks' country codes.
        for called in ["09876543210", "9876543210", "+919876543210"] {
            assert_eq!(
                snap.number(called).map(|n| n.trunk_id.as_str()),
                Some("trk_b"),
                "{called}"
            );
        }
        assert!(snap.number("+14155550101").is_none());
        assert!(snap.number("alice").is_none());
        let exotel = snap.trunk("exotel").unwrap_or_else(|| panic!("by name"));
        assert_eq!(exotel.id, "trk_b");
        assert!(snap.number_on(exotel, "09876543210").is_some());
        assert_eq!(snap.trunk("trk_a").map(Trunk::name), Some("twilio"));
        assert_eq!(
            snap.dial_out("nope", "+14155550100", None),
            Err(DialOutError::NoTrunk)
        );
        let d = snap
            .dial_out("twilio", "+14155550100", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(d.targets.is_empty(), "a host name is left to the resolver");
        assert!(snap.trunk("nope").is_none());

        assert_eq!(
            exotel.caller("09876543210"),
            Caller::Trunk {
                trunk_id: "trk_b".into(),
                number: "+919876543210".into()
            }
        );
        assert_eq!(
            exotel.caller("anonymous"),
            Caller::Trunk {
                trunk_id: "trk_b".into(),
                number: "anonymous".into()
            }
        );
    }

    #[test]
    fn inbound_by_credentials() {
        let mut a = config("a", Provider::Generic);
        a.inbound.username = Some("carrier".into());
        a.inbound.password = Some("pw".into());
        let snap = Snapshot::build(
            vec![
                row("trk_0", config("z", Provider::Generic)),
                row("trk_a", a),
            ],
            vec![],
        );
        let t = snap
            .inbound_by_username("carrier")
            .unwrap_or_else(|| panic!("by username"));
        assert_eq!(t.id, "trk_a");
        assert_eq!(
            t.inbound_credentials(),
            Some(Credentials {
                username: "carrier".into(),
                password: "pw".into()
            })
        );
        assert!(snap.inbound_by_username("other").is_none());
        assert!(snap
            .trunk("z")
            .and_then(Trunk::inbound_credentials)
            .is_none());
    }

    #[test]
    fn default_outbound_trunk() {
        let one = Snapshot::build(vec![row("trk_a", config("a", Provider::Generic))], vec![]);
        assert_eq!(one.default_outbound().map(|t| t.id.as_str()), Some("trk_a"));
        let two = Snapshot::build(
            vec![
                row("trk_a", config("a", Provider::Generic)),
                row("trk_b", config("b", Provider::Generic)),
            ],
            vec![],
        );
        assert!(two.default_outbound().is_none());
        let mut flagged = config("b", Provider::Generic);
        flagged.default_outbound = true;
        let two = Snapshot::build(
            vec![
                row("trk_a", config("a", Provider::Generic)),
                row("trk_b", flagged),
            ],
            vec![],
        );
        assert_eq!(two.default_outbound().map(|t| t.id.as_str()), Some("trk_b"));
        assert!(Snapshot::default().default_outbound().is_none());
    }

    #[test]
    fn dial_builds_the_request() {
        let mut c = config("ex", Provider::Exotel);
        c.outbound = Outbound {
            host: Some("203.0.113.5".into()),
            port: Some(5070),
            transport: TrunkTransport::Tcp,
            username: Some("acct".into()),
            password: Some("s3cret".into()),
            register: false,
            register_expires: None,
        };
        c.country_code = Some("91".into());
        c.number_format = NumberFormat::InNational;
        c.caller_id = Some("+918000000001".into());
        c.codecs = vec!["PCMA".into(), "telephone-event".into()];
        let t = Trunk::new("trk_x".into(), c);
        let targets = t.literal_targets().unwrap_or_else(|| panic!("IP literal"));
        assert_eq!(targets.len(), 1);
        assert_eq!(
            targets[0].addr,
            "203.0.113.5:5070".parse().unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(targets[0].transport, Transport::Tcp);
        let d = t
            .dial("+919876543210", None, targets.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.uri, "sip:09876543210@203.0.113.5:5070;transport=tcp");
        assert_eq!(d.from_user, "08000000001");
        assert_eq!(d.trunk_id, "trk_x");
        assert_eq!(d.targets, targets);
        assert_eq!(
            d.credentials,
            Some(Credentials {
                username: "acct".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            d.codecs,
            vec![
                voxgate_sip::sdp::Codec::pcma(),
                voxgate_sip::sdp::Codec::telephone_event()
            ]
        );
        assert_eq!(
            d.limits,
            TrunkLimits {
                max_cps: Some(1),
                max_calls_per_minute: None,
                max_concurrent_calls: Some(10)
            }
        );
        // A caller ID given with the call wins; national input reads with the country.
        let d = t
            .dial("9876543210", Some("08000000002"), vec![])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.from_user, "08000000002");
        assert_eq!(d.uri, "sip:09876543210@203.0.113.5:5070;transport=tcp");
        // A US number cannot be written in India's national form.
        assert!(matches!(
            t.dial("+14155550100", None, vec![]),
            Err(DialOutError::BadNumber(_))
        ));
        assert!(matches!(
            t.dial("bob", None, vec![]),
            Err(DialOutError::BadNumber(_))
        ));
        assert!(matches!(
            t.dial("+919876543210", Some("alice"), vec![]),
            Err(DialOutError::BadNumber(_))
        ));

        // A host name: no literal targets, UDP without a port, E.164, no credentials.
        let t = Trunk::new("trk_y".into(), config("tw", Provider::Twilio));
        assert!(t.literal_targets().is_none());
        assert_eq!(
            t.outbound_target(),
            Some(("sip.carrier.example", None, Transport::Udp))
        );
        let d = t
            .dial("+14155550100", None, vec![])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.uri, "sip:+14155550100@sip.carrier.example");
        assert_eq!(d.from_user, "+14155550199");
        assert_eq!(d.credentials, None);

        // TLS on an IPv6 literal.
        let mut c = config("v6", Provider::Generic);
        c.outbound.host = Some("2001:db8::10".into());
        c.outbound.transport = TrunkTransport::Tls;
        c.caller_id = None;
        let t = Trunk::new("trk_z".into(), c);
        let d = t
            .dial("+14155550100", None, vec![])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.uri, "sip:+14155550100@[2001:db8::10];transport=tls");
        assert_eq!(d.from_user, "anonymous");
        let targets = t.literal_targets().unwrap_or_default();
        assert_eq!(targets[0].addr.port(), 5061);
    }

    #[test]
    fn cost_and_simulation() {
        let mut c = config("sim", Provider::Simulated);
        c.outbound.host = None;
        c.rate = Some(Rate {
            per_minute_micros: 13_000,
            currency: "USD".into(),
            increment_seconds: 60,
            minimum_seconds: 60,
        });
        c.country_code = Some("91".into());
        let busy = SimulateRule {
            pattern: "+9198*".into(),
            outcome: SimOutcome::Busy,
            after_seconds: 1,
            play: None,
        };
        let answer = SimulateRule {
            pattern: "*".into(),
            outcome: SimOutcome::Answer,
            after_seconds: 2,
            play: Some("tone".into()),
        };
        c.simulate = vec![busy.clone(), answer.clone()];
        let t = Trunk::new("trk_s".into(), c);
        assert_eq!(t.cost(61), Some((26_000, "USD")));
        assert_eq!(t.cost(0), Some((0, "USD")));
        assert_eq!(t.simulate_for("09876543210"), Some(&busy));
        assert_eq!(t.simulate_for("+14155550100"), Some(&answer));
        assert_eq!(t.simulate_for("not a number"), None);
        assert!(t.outbound_target().is_none() && t.literal_targets().is_none());
        let d = t
            .dial("+14155550100", None, vec![])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.uri, format!("sip:+14155550100@{SIMULATED_HOST}"));
        // Other providers never simulate, and a trunk without a rate has no cost.
        let t = Trunk::new("trk_t".into(), config("tw", Provider::Twilio));
        assert_eq!(t.simulate_for("+14155550100"), None);
        assert_eq!(t.cost(61), None);
    }

    #[tokio::test]
    async fn snapshots_are_swapped_whole() {
        let d = TrunkDirectory::default();
        let before = d.snapshot();
        assert!(before.trunks().is_empty());
        d.replace(Snapshot::build(
            vec![row("trk_a", config("a", Provider::Generic))],
            vec![],
        ));
        // The old snapshot is unchanged; a new one sees the trunk.
        assert!(before.trunks().is_empty());
        assert_eq!(d.clone().snapshot().trunks().len(), 1);
    }
}
