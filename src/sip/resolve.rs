//! RFC 3263 §4 resolution of a SIP host (a trunk's `outbound.host`) into the ordered
//! destinations to try, on hickory-resolver:
//!
//! 1. An IP literal is its own destination (port: the given one, else 5060/5061).
//! 2. A name with an explicit port: its A/AAAA records on that port (§4.2: no SRV).
//! 3. No transport given: the name's NAPTR records (§4.1) for `SIP+D2U`, `SIP+D2T` and
//!    `SIPS+D2T` (only `SIPS+D2T` for a `sips:` URI), in order and preference, each
//!    leading to the SRV name it replaces the host with.
//! 4. Else SRV: `_sips._tcp` (secure or TLS), `_sip._tcp` (TCP), `_sip._udp` (UDP); with no
//!    transport given and no usable NAPTR, UDP, TCP and TLS in that order (§4.1: the
//!    transports we support). Records ordered by priority, then weighted at random
//!    within a priority (RFC 2782), each target's A/AAAA records in turn.
//! 5. No SRV records: the name's A/AAAA records on the default port (5060, TLS 5061).
//!
//! Destinations over TLS carry the name their certificate must show (RFC 5922 §4: the
//! domain that was resolved, not the SRV target); [`ServerNames`] hands them to the
//! connector that opens the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use rand::{Rng, SeedableRng};
use voxgate_sip::transaction::{Peer, Transport};

/// A whole resolution (several SRV, A and AAAA queries) ends within this.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to send: one entry of a resolution, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The name a TLS peer's certificate must match (and the SNI); `None` for an IP
    /// literal.
    pub server_name: Option<String>,
}

impl Destination {
    /// The transaction layer's view: a peer with no connection yet (the core opens or
    /// reuses one for TCP and TLS).
    pub fn peer(&self) -> Peer {
        Peer {
            transport: self.transport,
            addr: self.addr,
            conn: None,
        }
    }
}

impl From<&Destination> for Peer {
    fn from(d: &Destination) -> Peer {
        d.peer()
    }
}

/// Why a host could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
    #[error("{host}: no address found: {reason}")]
    NotFound { host: String, reason: String },
    #[error("{transport:?} is not a transport SIP hosts are resolved for")]
    Unsupported { transport: Transport },
}

/// Host names of TLS destinations by address, written by the resolver and read by the
/// connector when it opens a connection (SNI and certificate name).
#[derive(Debug, Clone, Default)]
pub struct ServerNames(Arc<RwLock<HashMap<SocketAddr, String>>>);

impl ServerNames {
    pub fn get(&self, addr: &SocketAddr) -> Option<String> {
        self.0.read().ok()?.get(addr).cloned()
    }

    pub fn set(&self, addr: SocketAddr, name: String) {
        if let Ok(mut m) = self.0.write() {
            m.insert(addr, name);
        }
    }
}

/// One SRV record (RFC 2782), as far as ordering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// RFC 2782 order: ascending priority; within one priority, a weighted random draw
/// without replacement (zero-weight records first in the list so they keep a small
/// chance, as the RFC's selection algorithm does).
pub fn order_srv(mut records: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<SrvRecord> {
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == priority) {
            group.push(r);
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let idx = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(idx));
        }
    }
    out
}

/// A transport by its name in config and URIs (`udp`, `tcp`, `tls`, `ws`, `wss`; any case).
pub fn transport_from_name(name: &str) -> Option<Transport> {
    match name.to_ascii_lowercase().as_str() {
        "udp" => Some(Transport::Udp),
        "tcp" => Some(Transport::Tcp),
        "tls" => Some(Transport::Tls),
        "ws" => Some(Transport::Ws),
        "wss" => Some(Transport::Wss),
        _ => None,
    }
}

/// The default port of a transport (RFC 3261 §19.1.2, RFC 3263 §4.2).
fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls | Transport::Wss => 5061,
        _ => 5060,
    }
}

/// The SRV service of a transport (RFC 3263 §4.1).
fn srv_prefix(transport: Transport) -> Result<&'static str, ResolveError> {
    match transport {
        Transport::Udp => Ok("_sip._udp"),
        Transport::Tcp => Ok("_sip._tcp"),
        Transport::Tls => Ok("_sips._tcp"),
        t @ (Transport::Ws | Transport::Wss) => Err(ResolveError::Unsupported { transport: t }),
    }
}

/// The resolver the app holds: cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Resolver {
    dns: TokioResolver,
    names: ServerNames,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `dns_servers` (UDP, then TCP for truncated answers), or the
    /// system's servers (`/etc/resolv.conf`) when the list is empty. `names` is shared
    /// with the connector.
    pub fn new(dns_servers: &[SocketAddr], names: ServerNames) -> Result<Resolver, ResolveError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let explicit = |servers: &[SocketAddr]| {
            let mut group = NameServerConfigGroup::new();
            for addr in servers {
                group.push(NameServerConfig::new(*addr, Protocol::Udp));
                group.push(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        };
        let builder = if dns_servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    // A host without a usable resolv.conf (some containers) still runs:
                    // only trunk hosts given by name fail to resolve, each with this reason.
                    tracing::warn!(error = %e, "no system DNS configuration; set sip.dns_servers to resolve trunk host names");
                    explicit(&[])
                }
            }
        } else {
            explicit(dns_servers)
        };
        let dns = builder.with_options(opts).build();
        Ok(Resolver { dns, names })
    }

    /// The host names of TLS destinations, for the connector.
    pub fn server_names(&self) -> ServerNames {
        self.names.clone()
    }

    /// Resolves `host` as RFC 3263 §4 says (see the module docs); destinations in the
    /// order to try. `secure` is a `sips:` URI: TLS only.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        secure: bool,
    ) -> Result<Vec<Destination>, ResolveError> {
        // The rng is made inside: `ThreadRng` is not `Send`.
        let out = tokio::time::timeout(RESOLVE_TIMEOUT, async {
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            self.resolve_with(host, port, transport, secure, &mut rng)
                .await
        })
        .await
        .map_err(|_| ResolveError::NotFound {
            host: host.to_owned(),
            reason: format!("no answer within {RESOLVE_TIMEOUT:?}"),
        })??;
        for d in &out {
            if let (Transport::Tls, Some(name)) = (d.transport, &d.server_name) {
                self.names.set(d.addr, name.clone());
            }
        }
        Ok(out)
    }

    async fn resolve_with(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        secure: bool,
        rng: &mut impl Rng,
    ) -> Result<Vec<Destination>, ResolveError> {
        let host = host.trim().trim_end_matches('.');
        let requested = transport;
        let transport = if secure {
            Some(Transport::Tls)
        } else {
            transport
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // §4.1 and §4.2: a numeric IP address, with the given or the default port; UDP
        // when no transport is given.
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let transport = transport.unwrap_or(Transport::Udp);
            return Ok(vec![Destination {
                transport,
                addr: SocketAddr::new(ip, port.unwrap_or_else(|| default_port(transport))),
                server_name: None,
            }]);
        }
        if let Some(port) = port {
            // §4.2: an explicit port means no NAPTR or SRV lookup.
            let transport = transport.unwrap_or(Transport::Udp);
            return self.addresses(host, port, transport, host).await;
        }
        let services: Vec<(Transport, String)> = if requested.is_none() {
            self.naptr(host, secure).await?
        } else {
            Vec::new()
        };
        let services = if services.is_empty() {
            let transports = match transport {
                Some(t) => vec![t],
                None => vec![Transport::Udp, Transport::Tcp, Transport::Tls],
            };
            transports
                .into_iter()
                .map(|t| Ok((t, format!("{}.{host}.", srv_prefix(t)?))))
                .collect::<Result<Vec<_>, ResolveError>>()?
        } else {
            services
        };
        let mut out = Vec::new();
        for (t, name) in &services {
            for r in order_srv(self.srv(host, name).await?, rng) {
                let target = r.target.trim_end_matches('.');
                // RFC 2782: a target of "." means the service is not available there.
                if target.is_empty() {
                    continue;
                }
                match self.addresses(target, r.port, *t, host).await {
                    Ok(found) => out.extend(found),
                    Err(e) => tracing::debug!(error = %e, "SRV target without an address"),
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // §4.2: no SRV records: the name's A/AAAA records on the transport's default port.
        let transport = transport.unwrap_or(Transport::Udp);
        self.addresses(host, default_port(transport), transport, host)
            .await
    }

    /// The SRV records of `name` (a service of `host`); empty when the DNS says there are
    /// none. A DNS failure (timeout, refused, SERVFAIL) is an error: "no SRV records" is
    /// then not known, falling back to A records would be a guess, and another query to a
    /// server that does not answer only adds its timeout.
    async fn srv(&self, host: &str, name: &str) -> Result<Vec<SrvRecord>, ResolveError> {
        match self.dns.srv_lookup(name).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|srv| SrvRecord {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    target: srv.target().to_utf8(),
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                tracing::debug!(%name, "no SRV records");
                Ok(Vec::new())
            }
            Err(e) => Err(ResolveError::NotFound {
                host: host.to_owned(),
                reason: format!("SRV lookup of {name} failed: {e}"),
            }),
        }
    }

    /// RFC 3263 §4.1: the NAPTR records of `host` that lead to SIP over a transport we
    /// support (`SIPS+D2T` only when `secure`), by order then preference, as (transport,
    /// SRV name). Only `s` records are followed (their replacement is an SRV name);
    /// regexp rewriting is not used for SIP.
    async fn naptr(
        &self,
        host: &str,
        secure: bool,
    ) -> Result<Vec<(Transport, String)>, ResolveError> {
        let name = format!("{host}.");
        let lookup = match self.dns.lookup(name.as_str(), RecordType::NAPTR).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(Vec::new()),
            Err(e) => {
                return Err(ResolveError::NotFound {
                    host: host.to_owned(),
                    reason: format!("NAPTR lookup failed: {e}"),
                })
            }
        };
        let mut found: Vec<(u16, u16, Transport, String)> = lookup
            .iter()
            .filter_map(|r| {
                let RData::NAPTR(n) = r else { return None };
                if !n.flags().eq_ignore_ascii_case(b"s") {
                    return None;
                }
                let transport = match n.services().to_ascii_uppercase().as_slice() {
                    b"SIP+D2U" => Transport::Udp,
                    b"SIP+D2T" => Transport::Tcp,
                    b"SIPS+D2T" => Transport::Tls,
                    _ => return None,
                };
                if secure && transport != Transport::Tls {
                    return None;
                }
                Some((
                    n.order(),
                    n.preference(),
                    transport,
                    n.replacement().to_utf8(),
                ))
            })
            .collect();
        found.sort_by_key(|(order, preference, ..)| (*order, *preference));
        Ok(found.into_iter().map(|(_, _, t, name)| (t, name)).collect())
    }

    /// A and AAAA records of `name` as destinations on `port`.
    async fn addresses(
        &self,
        name: &str,
        port: u16,
        transport: Transport,
        resolved: &str,
    ) -> Result<Vec<Destination>, ResolveError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let lookup =
            self.dns
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| ResolveError::NotFound {
                    host: name.to_owned(),
                    reason: e.to_string(),
                })?;
        let out: Vec<Destination> = lookup
            .iter()
            .map(|ip| Destination {
                transport,
                addr: SocketAddr::new(ip, port),
                server_name: Some(resolved.to_owned()),
            })
            .collect();
        if out.is_empty() {
            return Err(ResolveError::NotFound {
                host: name.to_owned(),
                reason: "no A or AAAA records".into(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand::rngs::StdRng;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    #[test]
    fn priority_first_then_weight() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let out = order_srv(
                vec![
                    rec(20, 0, "backup"),
                    rec(10, 10, "light"),
                    rec(10, 90, "heavy"),
                ],
                &mut rng,
            );
            assert_eq!(out.len(), 3);
            assert_eq!(out[2].target, "backup", "{out:?}");
            if out[0].target == "heavy" {
                heavy_first += 1;
            }
        }
        // 90 % expected.
        assert!((850..=950).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn transports_by_name() {
        assert_eq!(transport_from_name("TLS"), Some(Transport::Tls));
        assert_eq!(transport_from_name("udp"), Some(Transport::Udp));
        assert_eq!(transport_from_name("sctp"), None);
    }

    #[test]
    fn zero_weights_are_all_kept() {
        let mut rng = StdRng::seed_from_u64(2);
        let out = order_srv(
            vec![rec(1, 0, "a"), rec(1, 0, "b"), rec(1, 5, "c")],
            &mut rng,
        );
        let mut names: Vec<_> = out.iter().map(|r| r.target.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn ip_literals_resolve_to_themselves() {
        let r = Resolver::new(&["127.0.0.1:9".parse().unwrap()], ServerNames::default()).unwrap();
        // The app spawns resolutions on tokio: the future must be Send.
        fn assert_send<T: Send>(t: T) -> T {
            t
        }
        let d = assert_send(r.resolve("192.0.2.1", None, None, false))
            .await
            .unwrap();
        assert_eq!(
            d,
            vec![Destination {
                transport: Transport::Udp,
                addr: "192.0.2.1:5060".parse().unwrap(),
                server_name: None
            }]
        );
        let d = r
            .resolve("[2001:db8::1]", Some(5080), Some(Transport::Tcp), false)
            .await
            .unwrap();
        assert_eq!(d[0].addr, "[2001:db8::1]:5080".parse().unwrap());
        let d = r.resolve("192.0.2.1", None, None, true).await.unwrap();
        assert_eq!((d[0].transport, d[0].addr.port()), (Transport::Tls, 5061));
        assert_eq!(d[0].peer().conn, None);
    }
}
