//! Route sets, the Request-URI of in-dialog requests and the next hop (RFC 3261 §12.1,
//! §12.2.1.1, §16.12, §19.1.1).

use crate::message::{Message, NameAddr, SipUri};
use crate::transaction::Transport;

use super::DialogError;

/// A dialog's route set: the URIs of the Record-Route header fields, in the order the
/// dialog uses them (first = next hop). URI parameters are kept as received (§12.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet {
    uris: Vec<String>,
}

impl RouteSet {
    /// An empty route set: requests go straight to the remote target.
    pub fn empty() -> RouteSet {
        RouteSet::default()
    }

    /// UAS side (§12.1.1): the request's Record-Route URIs, in order.
    pub fn from_request(req: &Message) -> Result<RouteSet, DialogError> {
        Self::collect(req)
    }

    /// UAC side (§12.1.2): the response's Record-Route URIs, in reverse order.
    pub fn from_response(resp: &Message) -> Result<RouteSet, DialogError> {
        let mut set = Self::collect(resp)?;
        set.uris.reverse();
        Ok(set)
    }

    fn collect(msg: &Message) -> Result<RouteSet, DialogError> {
        let mut uris = Vec::new();
        for rr in msg.record_routes() {
            let rr = rr.map_err(|_| DialogError::BadRecordRoute)?;
            // Every hop must be routable later; a non-SIP URI here could never be used
            // as a next hop (§16.12 needs the `lr` parameter of a SIP URI).
            SipUri::parse(rr.uri).map_err(|_| DialogError::BadRecordRoute)?;
            uris.push(rr.uri.to_owned());
        }
        Ok(RouteSet { uris })
    }

    /// The URIs, first hop first.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }

    /// Whether the first hop is a loose router (`;lr`, §16.12); true for an empty set.
    pub fn is_loose(&self) -> bool {
        self.uris
            .first()
            .is_none_or(|u| SipUri::parse(u).is_ok_and(|u| u.param("lr").is_some()))
    }

    /// The Request-URI and Route header URIs of a request to `remote_target`
    /// (§12.2.1.1): loose routing keeps the target in the Request-URI and the whole set as
    /// Route; strict routing puts the first hop in the Request-URI and appends the target
    /// as the last Route.
    pub fn request_target(&self, remote_target: &str) -> (String, Vec<String>) {
        match self.uris.split_first() {
            None => (request_uri_form(remote_target), Vec::new()),
            Some(_) if self.is_loose() => (request_uri_form(remote_target), self.uris.clone()),
            Some((first, rest)) => {
                let mut routes = rest.to_vec();
                routes.push(remote_target.to_owned());
                (request_uri_form(first), routes)
            }
        }
    }

    /// Where a request goes first (§8.1.2, §12.2.1.1): the first route if there is one
    /// (it is also the Request-URI under strict routing), else the remote target.
    pub fn next_hop(&self, remote_target: &str) -> Result<NextHop, DialogError> {
        NextHop::of_uri(self.uris.first().map_or(remote_target, String::as_str))
    }
}

/// The URI a request is sent to, for the driver to resolve (RFC 3263): host (or `maddr`),
/// port and transport as the URI gives them. Resolution and the default port are the
/// driver's (5060, or 5061 for SIPS/TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The URI the hop was taken from.
    pub uri: String,
    /// Host name or IP literal as in the URI (IPv6 in brackets), or the `maddr` parameter
    /// when present (§19.1.1: it overrides the host).
    pub host: String,
    pub port: Option<u16>,
    /// The `transport` parameter; `None` leaves the choice to RFC 3263.
    pub transport: Option<Transport>,
    /// A SIPS URI: the hop must be reached over TLS (§19.1.2, §26.2.2).
    pub secure: bool,
}

impl NextHop {
    /// The hop for one SIP/SIPS URI.
    pub fn of_uri(uri: &str) -> Result<NextHop, DialogError> {
        let u = SipUri::parse(uri).map_err(|_| DialogError::BadTargetUri)?;
        let transport =
            match u.param("transport") {
                None => None,
                Some(t) => Some(parse_transport(t).ok_or_else(|| {
                    DialogError::UnsupportedTransport(t.chars().take(16).collect())
                })?),
            };
        let host = u.param("maddr").filter(|m| !m.is_empty()).unwrap_or(u.host);
        Ok(NextHop {
            uri: uri.to_owned(),
            host: host.to_owned(),
            port: u.port,
            transport,
            secure: u.is_sips(),
        })
    }
}

fn parse_transport(t: &str) -> Option<Transport> {
    [
        ("udp", Transport::Udp),
        ("tcp", Transport::Tcp),
        ("tls", Transport::Tls),
        ("ws", Transport::Ws),
        ("wss", Transport::Wss),
    ]
    .into_iter()
    .find(|(n, _)| n.eq_ignore_ascii_case(t))
    .map(|(_, t)| t)
}

/// A URI as it may stand in a Request-URI (§19.1.1 table 1): the `method` parameter and
/// the `?headers` part are not allowed there and are dropped. Non-SIP URIs pass unchanged.
pub(crate) fn request_uri_form(uri: &str) -> String {
    let Ok(u) = SipUri::parse(uri) else {
        return uri.to_owned();
    };
    let drops_param = u.param("method").is_some();
    if !drops_param && u.headers.is_empty() && !uri.contains('?') {
        return uri.to_owned();
    }
    let mut out = String::with_capacity(uri.len());
    out.push_str(u.scheme);
    out.push(':');
    if let Some(user) = u.user {
        out.push_str(user);
        if let Some(pw) = u.password {
            out.push(':');
            out.push_str(pw);
        }
        out.push('@');
    }
    out.push_str(u.host);
    if let Some(p) = u.port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    for p in u.params.split(';').skip(1) {
        let name = p.split('=').next().unwrap_or("");
        if !name.eq_ignore_ascii_case("method") {
            out.push(';');
            out.push_str(p);
        }
    }
    out
}

/// The URI of the first Contact of `msg`: `Ok(None)` without a Contact, an error for
/// `*` or a malformed one.
pub(crate) fn first_contact_uri(msg: &Message) -> Result<Option<String>, DialogError> {
    let contacts = msg.contacts().map_err(|_| DialogError::BadContact)?;
    let Some(contacts) = contacts else {
        return Ok(None);
    };
    if contacts.is_star() {
        return Err(DialogError::BadContact);
    }
    Ok(contacts
        .as_slice()
        .first()
        .map(|c: &NameAddr<'_>| c.uri.to_owned()))
}
