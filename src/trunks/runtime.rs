//! Trunks at work: what the SIP core needs of them, kept off its loop.
//!
//! - [`TrunkTable`]: the trunk directory's snapshot plus every trunk's addresses (host
//!   names resolved as RFC 3263 says, by [`run`] on its own task) and the registrations
//!   to keep up; the core swaps in a new one whenever trunks change or DNS is refreshed.
//! - [`GatewayDirectory`]: the call engine's [`Directory`] for a running gateway: carriers
//!   by source address, numbers to agents, agents from the registrar, numbers out through
//!   trunks.
//! - [`simulated_rules`]: what the simulated carrier does for a trunk's number.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, watch};
use voxgate_sip::message::{HeaderName, Message, SipUri};
use voxgate_sip::transaction::{Peer, Transport};

use super::directory::{NumberRoute, Snapshot, Trunk, TrunkDirectory};
use super::{Provider, SimOutcome};
use crate::calls::env::Party;
use crate::calls::env::{AgentDirectory, Caller, DialOutError, Directory, Route, TrunkDial};
use crate::events::AppEvent;
use crate::registrar::{Authenticated, Challenger, Reply};
use crate::sip::registration::RegistrationSpec;
use crate::sip::resolve::Resolver;
use crate::sip::simulated::{Outcome, Rules};
use voxgate_sip::auth::{ha1, Algorithm};

/// How often trunk host names are resolved again (DNS answers change; a carrier moves).
const REFRESH: Duration = Duration::from_secs(300);

/// Trunks as the SIP core uses them.
#[derive(Debug, Default)]
pub struct TrunkTable {
    pub snapshot: Arc<Snapshot>,
    /// Where each trunk's calls go (by trunk id), in RFC 3263 order; empty while its
    /// host does not resolve.
    pub targets: HashMap<String, Vec<Peer>>,
    /// The registrations to the carriers the trunks ask for (`outbound.register`).
    pub registrations: Vec<RegistrationSpec>,
    /// Where the simulated carrier listens (simulated trunks' calls go there).
    pub simulated: Option<SocketAddr>,
}

/// Builds the table for `snapshot`: resolves every trunk's host.
pub async fn build(
    snapshot: Arc<Snapshot>,
    resolver: &Resolver,
    simulated: Option<SocketAddr>,
) -> TrunkTable {
    let mut targets = HashMap::new();
    let mut registrations = Vec::new();
    for t in snapshot.trunks() {
        let peers = trunk_targets(t, resolver, simulated).await;
        if let Some(spec) = registration(t, &peers) {
            registrations.push(spec);
        }
        targets.insert(t.id.clone(), peers);
    }
    TrunkTable {
        snapshot,
        targets,
        registrations,
        simulated,
    }
}

async fn trunk_targets(t: &Trunk, resolver: &Resolver, simulated: Option<SocketAddr>) -> Vec<Peer> {
    if t.provider() == Provider::Simulated {
        return simulated
            .map(|addr| Peer {
                transport: Transport::Udp,
                addr,
                conn: None,
            })
            .into_iter()
            .collect();
    }
    if let Some(peers) = t.literal_targets() {
        return peers;
    }
    let Some((host, port, transport)) = t.outbound_target() else {
        return Vec::new();
    };
    match resolver.resolve(host, port, Some(transport), false).await {
        Ok(found) => found.iter().map(Peer::from).collect(),
        Err(e) => {
            tracing::warn!(trunk = %t.name(), %host, error = %e, "trunk host not resolved");
            Vec::new()
        }
    }
}

fn registration(t: &Trunk, targets: &[Peer]) -> Option<RegistrationSpec> {
    let out = &t.config.outbound;
    if !out.register {
        return None;
    }
    let host = out.host.as_deref()?;
    let domain = match out.port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Some(RegistrationSpec {
        trunk_id: t.id.clone(),
        domain,
        user: out.username.clone().unwrap_or_else(|| "voxgate".to_owned()),
        credentials: t.credentials(),
        expires: out.register_expires.unwrap_or(3600),
        targets: targets.to_vec(),
    })
}

/// Keeps the core's trunk table current: at start, whenever trunks or numbers change,
/// and every [`REFRESH`] (DNS). Stops when `shutdown` turns true or the core is gone.
pub async fn run(
    trunks: TrunkDirectory,
    resolver: Resolver,
    simulated: Option<SocketAddr>,
    mut events: broadcast::Receiver<AppEvent>,
    table: mpsc::UnboundedSender<Arc<TrunkTable>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = refresh.tick() => {}
            ev = events.recv() => match ev {
                Ok(AppEvent::TrunksChanged) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
        let built = build(trunks.snapshot(), &resolver, simulated).await;
        if table.send(Arc::new(built)).is_err() {
            return;
        }
    }
}

/// What the simulated carrier does for `number` on trunk `trunk_id`: the trunk's first
/// matching `simulate` rule; no rule (or no such trunk) is a 404, as a carrier answers
/// for a number it does not serve.
pub fn simulated_rules(trunks: TrunkDirectory) -> Rules {
    Arc::new(move |trunk_id: &str, number: &str| {
        let snap = trunks.snapshot();
        let Some(rule) = snap.trunk(trunk_id).and_then(|t| t.simulate_for(number)) else {
            return Outcome::NotFound;
        };
        let after = Duration::from_secs(rule.after_seconds.into());
        match rule.outcome {
            SimOutcome::Answer => Outcome::Answer { after, talk: None },
            SimOutcome::Busy => Outcome::Busy { after },
            SimOutcome::NoAnswer => Outcome::NoAnswer,
            SimOutcome::Fail => Outcome::Fail { after },
        }
    })
}

/// The call engine's directory for a running gateway.
pub struct GatewayDirectory<'a> {
    pub agents: AgentDirectory<'a>,
    pub trunks: &'a TrunkTable,
}

impl Directory for GatewayDirectory<'_> {
    fn authenticate(
        &mut self,
        invite: &Message,
        source: IpAddr,
        wall: DateTime<Utc>,
        random: [u8; 8],
    ) -> Result<Caller, Reply> {
        let snap = &self.trunks.snapshot;
        if let Some(trunk) = snap.match_inbound(source) {
            return Ok(trunk.caller(from_user(invite)));
        }
        // A call to one of our numbers from a source no trunk admits: a carrier we do not
        // know, or someone posing as one. Refused without a challenge (SPEC §2) and
        // counted, unless some trunk admits its carrier by credentials: then it is
        // challenged like everyone. An agent's phone dialling the number sends
        // credentials after its first challenge, so only an INVITE without them is
        // refused here.
        let refused = invite.header(HeaderName::ProxyAuthorization).is_none()
            && request_user(invite).is_some_and(|u| snap.number(u).is_some())
            && !snap
                .trunks()
                .iter()
                .any(|t| t.inbound_credentials().is_some());
        if refused {
            metrics::counter!("voxgate_sip_trunk_rejected_total").increment(1);
            return Err(Reply::new(403, "Forbidden"));
        }
        // A carrier's trunk credentials answer the same challenge as agents' do.
        let trunk_ha1 = |user: &str, realm: &str, alg: Algorithm| {
            let creds = snap.inbound_by_username(user)?.inbound_credentials()?;
            Some(ha1(alg, user, realm, &creds.password))
        };
        let who = self.agents.registrar.authenticate_with(
            invite,
            Challenger::Proxy,
            wall,
            random,
            &trunk_ha1,
        )?;
        match who {
            Authenticated::Agent(a) => Ok(Caller::Agent(Party::of(a))),
            Authenticated::Other(user) => {
                let trunk = snap
                    .inbound_by_username(&user)
                    .ok_or_else(|| Reply::new(403, "Forbidden"))?;
                Ok(trunk.caller(from_user(invite)))
            }
        }
    }

    fn route(&self, caller: &Caller, user: &str) -> Route {
        let snap = &self.trunks.snapshot;
        match caller {
            Caller::Trunk { trunk_id, .. } => {
                let entry = match snap.trunk(trunk_id) {
                    Some(t) => snap.number_on(t, user),
                    None => snap.number(user),
                };
                let Some(entry) = entry else {
                    return Route::NotFound;
                };
                match &entry.route {
                    NumberRoute::Agent { agent_id } => match self.agents.agent(agent_id) {
                        Route::Agent { party, targets, .. } => Route::Agent {
                            party,
                            targets,
                            record: entry.record,
                        },
                        other => other,
                    },
                    NumberRoute::Ivr { flow_id } => match snap.flow(flow_id) {
                        Some(program) => Route::Program(program.clone()),
                        None => Route::NotFound,
                    },
                    NumberRoute::Webhook { url } => {
                        Route::Program(crate::calls::env::ProgramRoute::Webhook(url.clone()))
                    }
                    NumberRoute::Other { .. } => Route::NotFound,
                }
            }
            Caller::Agent(_) => match self.agents.agent(user) {
                // Not an agent: a number out through the default trunk, if it reads as one.
                Route::NotFound => self
                    .dial_out("", user, None)
                    .map_or(Route::NotFound, |d| Route::Trunk(Box::new(d))),
                found => found,
            },
        }
    }

    fn agent(&self, agent: &str) -> Route {
        self.agents.agent(agent)
    }

    fn prompt(&self, reference: &str) -> Option<crate::store::PromptRow> {
        self.trunks.snapshot.prompt(reference).cloned()
    }

    fn dial_out(
        &self,
        trunk: &str,
        number: &str,
        caller_id: Option<&str>,
    ) -> Result<TrunkDial, DialOutError> {
        let snap = &self.trunks.snapshot;
        let t = if trunk.is_empty() {
            snap.default_outbound()
        } else {
            snap.trunk(trunk)
        }
        .ok_or(DialOutError::NoTrunk)?;
        let targets = self
            .trunks
            .targets
            .get(&t.id)
            .filter(|t| !t.is_empty())
            .cloned()
            .ok_or(DialOutError::Unresolved)?;
        let mut dial = t.dial(number, caller_id, targets)?;
        if let (Provider::Simulated, Some(addr)) = (t.provider(), self.trunks.simulated) {
            // The simulated carrier learns the trunk from the Request-URI.
            let user = SipUri::parse(&dial.uri)
                .ok()
                .and_then(|u| u.user)
                .unwrap_or_default()
                .to_owned();
            dial.uri = format!("sip:{user}@{addr};trunk={}", t.id);
        }
        Ok(dial)
    }
}

/// The From URI's user part (the calling number), or the whole URI if it has none.
fn from_user(invite: &Message) -> &str {
    let from = invite.from().uri;
    SipUri::parse(from)
        .ok()
        .and_then(|u| u.user)
        .unwrap_or(from)
}

fn request_user(invite: &Message) -> Option<&str> {
    SipUri::parse(invite.request_uri()?).ok()?.user
}
