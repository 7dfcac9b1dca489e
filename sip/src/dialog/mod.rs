//! Dialogs (RFC 3261 §12, §13.2.2.4, §13.3.1.4, §14, §15; RFC 3262, 3311, 4028, 6026).
//!
//! A [`Dialog`] is the state one leg keeps towards one peer: the [`DialogId`], local and
//! remote URI, both CSeq spaces, the remote target, the route set, the secure flag and our
//! Contact. It builds in-dialog requests ([`Dialog::request`], [`Dialog::ack`],
//! [`Dialog::prack`]) and responses ([`Dialog::response`]), checks incoming in-dialog
//! requests ([`Dialog::handle_request`]) and follows responses to our requests
//! ([`Dialog::handle_response`]). Like the rest of the crate it never does I/O: randomness
//! (Via branches, tags) and `now` come in as arguments, built messages go out as
//! [`MessageBuilder`]s for the caller to finish (body, extra headers) and hand to the
//! [`transaction`](crate::transaction) layer.
//!
//! [`Dialogs`] holds many dialogs and finds the one a message belongs to, including the
//! forks of one outgoing INVITE (§12.1.2, §13.2.2.4). [`AckWait`] retransmits a 2xx until
//! its ACK (§13.3.1.4 as corrected by RFC 6026), [`AckCache`] re-sends our ACK to a
//! retransmitted 2xx, and [`session_timer`] implements RFC 4028.
//!
//! A UAS dialog answering an INVITE, then a BYE:
//!
//! ```
//! use bytes::Bytes;
//! use voxgate_sip::dialog::{Dialog, DialogState, Dialogs, InDialogRequest};
//! use voxgate_sip::Message;
//!
//! let invite = Message::parse(Bytes::from_static(
//!     b"INVITE sip:bob@voxgate.test SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
//!       Max-Forwards: 70\r\n\
//!       From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
//!       To: <sip:bob@voxgate.test>\r\n\
//!       Call-ID: c1@192.0.2.1\r\n\
//!       CSeq: 7 INVITE\r\n\
//!       Contact: <sip:alice@192.0.2.1:5060>\r\n\
//!       Content-Length: 0\r\n\r\n",
//! ))?;
//! // Our To tag and Contact; the tag is random in real life (sans-IO: passed in).
//! let dialog = Dialog::new_uas(&invite, "b7f3", "sip:voxgate@192.0.2.2:5060")?;
//! let mut dialogs = Dialogs::new();
//! let id = dialog.id().clone();
//! dialogs.insert(dialog)?;
//!
//! // 180 then 200: both carry our tag and Contact; the 200 confirms the dialog.
//! let d = dialogs.get_mut(&id).ok_or("gone")?;
//! let _ringing = d.response(&invite, 180, "Ringing")?.build();
//! let ok = d.response(&invite, 200, "OK")?.build();
//! assert_eq!(d.state(), &DialogState::Confirmed);
//! # let _ = ok; // hand `ok` to TransactionLayer::send_response and to an AckWait
//!
//! // Later the caller hangs up.
//! let bye = Message::parse(Bytes::from_static(
//!     b"BYE sip:voxgate@192.0.2.2:5060 SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-2\r\n\
//!       From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
//!       To: <sip:bob@voxgate.test>;tag=b7f3\r\n\
//!       Call-ID: c1@192.0.2.1\r\n\
//!       CSeq: 8 BYE\r\n\
//!       Content-Length: 0\r\n\r\n",
//! ))?;
//! let d = dialogs.find_for_request(&bye).ok_or("481")?;
//! assert_eq!(d.handle_request(&bye)?, InDialogRequest::Bye);
//! let _ok = d.response(&bye, 200, "OK")?.build();
//! assert!(d.state().is_terminated());
//! dialogs.remove(&id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ack;
mod route;
pub mod session_timer;
mod set;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use crate::message::{HeaderName, Message, MessageBuilder, Method, NameAddr, ParseError, SipUri};
use crate::transaction::Transport;

pub use ack::{AckCache, AckWait, AckWaitEvent};
pub use route::{NextHop, RouteSet};
pub use set::{Dialogs, UacInviteOutcome};

use route::first_contact_uri;

/// RFC 3261 §8.1.1.7: every branch we generate starts with this.
const MAGIC_COOKIE: &str = "z9hG4bK";

/// Why a dialog could not be created or an operation on it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("expected a request")]
    NotARequest,
    #[error("expected a response")]
    NotAResponse,
    #[error("dialogs are created by INVITE only (got {0})")]
    NotInvite(Method),
    #[error("the INVITE already has a To tag: it is in a dialog, not creating one")]
    HasToTag,
    #[error("status {0} does not create a dialog (101-299 do, §12.1)")]
    NotDialogCreating(u16),
    #[error("status code {0} is outside 100-699")]
    BadStatus(u16),
    #[error("missing {0} tag")]
    MissingTag(&'static str),
    #[error("tag is empty or not a token")]
    BadTag,
    #[error("branch must be a token starting with z9hG4bK (§8.1.1.7)")]
    BadBranch,
    #[error("missing Contact (§8.1.1.8, §12.1)")]
    MissingContact,
    #[error("malformed Contact")]
    BadContact,
    #[error("malformed Record-Route")]
    BadRecordRoute,
    #[error("the remote target or first route is not a SIP/SIPS URI")]
    BadTargetUri,
    #[error("unsupported transport parameter {0:?}")]
    UnsupportedTransport(String),
    #[error("our local Contact is not a SIP/SIPS URI")]
    BadLocalContact,
    #[error("the response does not answer this request (Call-ID, From tag or CSeq differ)")]
    Mismatch,
    #[error("the message does not belong to this dialog")]
    NotThisDialog,
    #[error("a dialog with this id already exists")]
    Duplicate,
    #[error("the dialog is terminated")]
    Terminated,
    #[error("{0} is not sent with Dialog::request (ACK: Dialog::ack; CANCEL: not in-dialog)")]
    MethodNotInDialog(Method),
    #[error("the callee must not send BYE on an early dialog (§15)")]
    ByeOnEarlyUas,
    #[error("no re-INVITE on an early dialog (§14.1; use UPDATE, RFC 3311)")]
    ReInviteOnEarly,
    #[error("an INVITE transaction is already in progress on this dialog (§14.1)")]
    InvitePending,
    #[error("local CSeq would exceed 2**31-1 (§8.1.1.5)")]
    CSeqExhausted,
    #[error("the provisional response has no valid RSeq (RFC 3262 §7.1)")]
    BadRSeq,
    #[error("RSeq {0} was already acknowledged (a retransmission, RFC 3262 §4)")]
    RSeqRetransmission(u32),
    #[error("RSeq {got} skips ahead of {expected} (RFC 3262 §4: do not PRACK yet)")]
    RSeqOutOfOrder { expected: u32, got: u32 },
    #[error("unparseable message: {0}")]
    Parse(#[from] ParseError),
}

/// A dialog's identity (§12): Call-ID plus both tags, seen from our side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    /// Our tag: From tag of our requests, To tag of theirs.
    pub local_tag: String,
    /// The peer's tag; empty for an RFC 2543 peer that sent none (§12.1.1, §12.1.2).
    pub remote_tag: String,
}

impl DialogId {
    /// The id an incoming in-dialog request names (§12.2.2): To tag ours, From tag theirs.
    /// `None` without a To tag (not an in-dialog request).
    pub fn of_request(req: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id().to_owned(),
            local_tag: req.to().tag()?.to_owned(),
            remote_tag: req.from().tag().unwrap_or("").to_owned(),
        })
    }

    /// The id a response to our request names: From tag ours, To tag theirs. `None`
    /// without a From tag (we always send one).
    pub fn of_response(resp: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: resp.call_id().to_owned(),
            local_tag: resp.from().tag()?.to_owned(),
            remote_tag: resp.to().tag().unwrap_or("").to_owned(),
        })
    }
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};local={};remote={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// Which side of the dialog-creating INVITE we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Uac,
    Uas,
}

/// A dialog's state (§12): created Early by a 1xx with a To tag, Confirmed by a 2xx,
/// Terminated by a non-2xx final to the initial INVITE, a BYE, or a dead peer.
///
/// ```text
///            1xx (tag)            2xx
///   (none) ------------> Early ----------> Confirmed
///      |      2xx          |                  |
///      +-------------------|----------------->|
///                          | 3xx-6xx          | BYE, 481/408, no ACK, expiry
///                          v                  v
///                      Terminated <-----------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated(TerminationReason),
}

impl DialogState {
    pub fn is_early(&self) -> bool {
        matches!(self, DialogState::Early)
    }
    pub fn is_confirmed(&self) -> bool {
        matches!(self, DialogState::Confirmed)
    }
    pub fn is_terminated(&self) -> bool {
        matches!(self, DialogState::Terminated(_))
    }
}

/// Why a dialog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationReason {
    /// A 3xx-6xx final response to the initial INVITE ended the early dialog (§12.3).
    Rejected { status: u16 },
    /// We sent BYE (§15.1.1).
    LocalBye,
    /// The peer sent BYE (§15.1.2).
    RemoteBye,
    /// 481 or 408 to one of our in-dialog requests, or it timed out (status 408)
    /// (§12.2.1.2).
    PeerGone { status: u16 },
    /// Our 2xx was never ACKed (§13.3.1.4); the TU sends BYE.
    NoAck,
    /// The RFC 4028 session interval ran out.
    SessionExpired,
    /// The TU ended it, e.g. an early fork after another fork answered (§13.2.2.4).
    Local,
}

/// What an incoming in-dialog request means to the TU (after [`Dialog::handle_request`]
/// accepted it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDialogRequest {
    /// An ACK for the 2xx to the INVITE with this CSeq number (§13.3.1.4): feed it to that
    /// INVITE's [`AckWait::handle_ack`]. Never answered.
    Ack { cseq: u32 },
    /// BYE: the dialog is now terminated; answer 200 (and 487 to a pending initial INVITE,
    /// §15.1.2).
    Bye,
    /// Any other request; `target_refreshed` when a re-INVITE or UPDATE changed the remote
    /// target (§12.2.2).
    Request { target_refreshed: bool },
}

/// Why an incoming in-dialog request is refused, with the response it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not a request")]
    NotARequest,
    #[error("the request does not belong to this dialog")]
    NotThisDialog,
    #[error("the dialog is terminated")]
    Terminated,
    #[error("CANCEL is matched by transactions, not dialogs (§9.2)")]
    Cancel,
    /// §12.2.2.
    #[error("CSeq {got} is lower than the last remote CSeq {last}")]
    OutOfOrder { last: u32, got: u32 },
    /// §14.2: an INVITE while the previous one has no final response yet.
    #[error("an earlier INVITE on this dialog has no final response yet")]
    InviteOverlap { retry_after: u32 },
    /// §14.2: glare, our own INVITE is in progress.
    #[error("our INVITE on this dialog is in progress (glare)")]
    RequestPending,
    #[error("malformed Contact in a target refresh request")]
    BadContact,
}

impl Rejection {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::NotARequest | Rejection::BadContact => 400,
            Rejection::NotThisDialog | Rejection::Terminated | Rejection::Cancel => 481,
            Rejection::OutOfOrder { .. } | Rejection::InviteOverlap { .. } => 500,
            Rejection::RequestPending => 491,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            481 => "Call/Transaction Does Not Exist",
            491 => "Request Pending",
            _ => "Server Internal Error",
        }
    }

    /// The response to `req` (with Retry-After where §14.2 asks for it).
    pub fn response(&self, req: &Message) -> MessageBuilder {
        let b = MessageBuilder::response_to(req, self.status(), self.reason(), None);
        match self {
            Rejection::InviteOverlap { retry_after } => {
                b.header("Retry-After", &retry_after.to_string())
            }
            _ => b,
        }
    }
}

/// What a response to one of our in-dialog requests did (after
/// [`Dialog::handle_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Nothing changed in the dialog (a provisional, a failed non-INVITE request, …).
    Unchanged,
    /// A 2xx confirmed the early dialog (§13.2.2.4): ACK it.
    Confirmed,
    /// A 2xx to an INVITE this dialog already has a 2xx for: a retransmission or late
    /// copy; re-send the same ACK ([`AckCache`]).
    Retransmitted2xx,
    /// A 2xx to a re-INVITE (ACK it) or UPDATE; `target_refreshed` when its Contact changed
    /// the remote target (§12.2.1.2).
    Refreshed {
        invite: bool,
        target_refreshed: bool,
    },
    /// 491 to our re-INVITE (glare): retry after [`Dialog::glare_retry_window`] (§14.1).
    RequestPending,
    /// A non-2xx final to our re-INVITE: the session stays as it was (RFC 6141 §3).
    ReInviteFailed { status: u16 },
    /// The dialog is now terminated (see [`Dialog::state`]).
    Terminated,
}

/// The random part of a Via branch, made by the caller (sans-IO).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Branch(String);

impl Branch {
    /// A branch from random bytes: `z9hG4bK` + hex. Pass at least 8 bytes.
    pub fn from_random(bytes: &[u8]) -> Branch {
        Branch(format!("{MAGIC_COOKIE}{}", hex::encode(bytes)))
    }

    /// A branch given whole; must start with `z9hG4bK` and be a token (§8.1.1.7).
    pub fn new(s: &str) -> Result<Branch, DialogError> {
        if s.len() > MAGIC_COOKIE.len() && s.starts_with(MAGIC_COOKIE) && is_token(s) {
            Ok(Branch(s.to_owned()))
        } else {
            Err(DialogError::BadBranch)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Our side of the Via header: the transport the request goes out on and our sent-by
/// (`host[:port]`). The branch comes with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVia {
    pub transport: Transport,
    pub sent_by: String,
}

impl LocalVia {
    pub fn new(transport: Transport, sent_by: impl Into<String>) -> LocalVia {
        LocalVia {
            transport,
            sent_by: sent_by.into(),
        }
    }

    /// The Via value, with `rport` so that responses find us behind NAT (RFC 3581).
    pub fn value(&self, branch: &Branch) -> String {
        let t = match self.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        };
        format!("SIP/2.0/{t} {};branch={};rport", self.sent_by, branch.0)
    }
}

/// A URI with its display name, as From/To carry it (without the tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// As received: inside of the quotes (escapes kept) or the tokens.
    pub display_name: Option<String>,
    pub uri: String,
}

impl Party {
    fn of(na: &NameAddr<'_>) -> Party {
        Party {
            display_name: na.display_name.map(str::to_owned),
            uri: na.uri.to_owned(),
        }
    }

    /// The header value with `tag` (none when empty: an RFC 2543 peer).
    fn header_value(&self, tag: &str) -> String {
        let mut s = String::with_capacity(self.uri.len() + tag.len() + 32);
        if let Some(d) = &self.display_name {
            s.push('"');
            s.push_str(d);
            s.push_str("\" ");
        }
        s.push('<');
        s.push_str(&self.uri);
        s.push('>');
        if !tag.is_empty() {
            s.push_str(";tag=");
            s.push_str(tag);
        }
        s
    }
}

/// One dialog. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    role: Role,
    state: DialogState,
    local: Party,
    remote: Party,
    /// Empty for a UAS until it sends its first request (§12.1.1).
    local_seq: Option<u32>,
    /// Empty for a UAC until the peer sends a request (§12.1.2).
    remote_seq: Option<u32>,
    remote_target: String,
    route_set: RouteSet,
    secure: bool,
    local_contact: String,
    /// CSeq number of the dialog-creating INVITE (ours as UAC, theirs as UAS).
    initial_invite_seq: u32,
    /// Our INVITE (initial or re-) that has no final response yet (§14.1).
    invite_in_progress: Option<u32>,
    /// Highest RSeq we sent PRACK for (RFC 3262 §4).
    last_rseq: Option<u32>,
    /// CSeq of the last re-INVITE we got a 2xx for: a second 2xx is a retransmission.
    last_invite_2xx: Option<u32>,
    /// A 2xx has been seen or sent for the initial INVITE (forking: §13.2.2.4).
    was_confirmed: bool,
}

impl Dialog {
    /// The UAS side of a dialog created by an incoming INVITE (§12.1.1), in state Early.
    /// `local_tag` is our To tag (random, made by the caller), `local_contact` our Contact
    /// URI. Answer through [`Dialog::response`], which adds both and moves the state.
    ///
    /// The secure flag follows the Request-URI scheme (SIPS); the driver must refuse a
    /// SIPS request that did not arrive over TLS (§26.2.2), it is not checked here.
    pub fn new_uas(
        req: &Message,
        local_tag: &str,
        local_contact: &str,
    ) -> Result<Dialog, DialogError> {
        let method = req.method().ok_or(DialogError::NotARequest)?;
        if *method != Method::Invite {
            return Err(DialogError::NotInvite(method.clone()));
        }
        if req.to().tag().is_some() {
            return Err(DialogError::HasToTag);
        }
        if !is_token(local_tag) {
            return Err(DialogError::BadTag);
        }
        SipUri::parse(local_contact).map_err(|_| DialogError::BadLocalContact)?;
        // §8.1.1.8: an INVITE must carry a Contact; without one we could not reach the peer.
        let remote_target = first_contact_uri(req)?.ok_or(DialogError::MissingContact)?;
        let route_set = RouteSet::from_request(req)?;
        let secure = req
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .is_some_and(|u| u.is_sips());
        let seq = req.cseq().seq;
        Ok(Dialog {
            id: DialogId {
                call_id: req.call_id().to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: req.from().tag().unwrap_or("").to_owned(),
            },
            role: Role::Uas,
            state: DialogState::Early,
            local: Party::of(&req.to()),
            remote: Party::of(&req.from()),
            local_seq: None,
            remote_seq: Some(seq),
            remote_target,
            route_set,
            secure,
            local_contact: local_contact.to_owned(),
            initial_invite_seq: seq,
            invite_in_progress: None,
            last_rseq: None,
            last_invite_2xx: None,
            was_confirmed: false,
        })
    }

    /// The UAC side (§12.1.2) from the INVITE we sent and a 101-299 response to it: Early
    /// for a 1xx (which must have a To tag), Confirmed for a 2xx. Each To tag is its own
    /// dialog (forking, §13.2.2.4): [`Dialogs::handle_uac_response`] does the bookkeeping.
    ///
    /// Without a Contact in the response the Request-URI of our INVITE stands in as the
    /// remote target (a 2xx must have one, §13.3.1.4, but carriers omit it in 18x).
    pub fn new_uac(request: &Message, response: &Message) -> Result<Dialog, DialogError> {
        let method = request.method().ok_or(DialogError::NotARequest)?;
        if *method != Method::Invite {
            return Err(DialogError::NotInvite(method.clone()));
        }
        let status = response.status().ok_or(DialogError::NotAResponse)?;
        if !(101..=299).contains(&status) {
            return Err(DialogError::NotDialogCreating(status));
        }
        let local_tag = request
            .from()
            .tag()
            .ok_or(DialogError::MissingTag("From"))?;
        if response.call_id() != request.call_id()
            || response.from().tag() != Some(local_tag)
            || response.cseq() != request.cseq()
        {
            return Err(DialogError::Mismatch);
        }
        // §12.1.2: a 2xx without a To tag is from an RFC 2543 UAS (null tag); a 1xx
        // without one creates no dialog.
        let remote_tag = match response.to().tag() {
            Some(t) => t,
            None if status >= 200 => "",
            None => return Err(DialogError::MissingTag("To")),
        };
        let request_uri = request.request_uri().unwrap_or_default();
        let remote_target = match first_contact_uri(response)? {
            Some(uri) => uri,
            None => request_uri.to_owned(),
        };
        let local_contact = first_contact_uri(request)?.ok_or(DialogError::MissingContact)?;
        let confirmed = status >= 200;
        let seq = request.cseq().seq;
        Ok(Dialog {
            id: DialogId {
                call_id: request.call_id().to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            role: Role::Uac,
            state: if confirmed {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local: Party::of(&request.from()),
            remote: Party::of(&request.to()),
            local_seq: Some(seq),
            remote_seq: None,
            remote_target,
            route_set: RouteSet::from_response(response)?,
            secure: SipUri::parse(request_uri).is_ok_and(|u| u.is_sips()),
            local_contact,
            initial_invite_seq: seq,
            invite_in_progress: (!confirmed).then_some(seq),
            last_rseq: None,
            last_invite_2xx: None,
            was_confirmed: confirmed,
        })
    }

    pub fn id(&self) -> &DialogId {
        &self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn state(&self) -> &DialogState {
        &self.state
    }
    /// Our From (UAC) / To (UAS) URI and display name, without tag.
    pub fn local(&self) -> &Party {
        &self.local
    }
    pub fn remote(&self) -> &Party {
        &self.remote
    }
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }
    /// Where in-dialog requests are addressed (the peer's Contact, §12.1).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }
    pub fn route_set(&self) -> &RouteSet {
        &self.route_set
    }
    pub fn is_secure(&self) -> bool {
        self.secure
    }
    pub fn local_contact(&self) -> &str {
        &self.local_contact
    }
    /// CSeq number of the INVITE that created the dialog.
    pub fn initial_invite_seq(&self) -> u32 {
        self.initial_invite_seq
    }
    /// Whether the initial INVITE got (UAC) or was answered with (UAS) a 2xx, even if the
    /// dialog has ended since.
    pub fn was_confirmed(&self) -> bool {
        self.was_confirmed
    }
    /// CSeq number of our INVITE that still waits for its final response (§14.1).
    pub fn invite_in_progress(&self) -> Option<u32> {
        self.invite_in_progress
    }

    /// Changes our Contact for the next target refresh request (e.g. after a network
    /// change); the peer learns it from that request (§12.2).
    pub fn set_local_contact(&mut self, uri: &str) -> Result<(), DialogError> {
        SipUri::parse(uri).map_err(|_| DialogError::BadLocalContact)?;
        uri.clone_into(&mut self.local_contact);
        Ok(())
    }

    /// Ends the dialog for a reason the TU found (no ACK, session expiry, a losing fork).
    /// The first reason sticks.
    pub fn terminate(&mut self, reason: TerminationReason) {
        if !self.state.is_terminated() {
            self.state = DialogState::Terminated(reason);
        }
    }

    /// Where our next request goes: see [`RouteSet::next_hop`].
    pub fn next_hop(&self) -> Result<NextHop, DialogError> {
        self.route_set.next_hop(&self.remote_target)
    }

    /// §14.1: after a 491, the owner of the Call-ID (the UAC of the dialog) waits 2.1-4 s
    /// before retrying its re-INVITE, the other side 0-2 s; pick a random point in the
    /// window (10 ms granularity in the RFC).
    pub fn glare_retry_window(&self) -> (Duration, Duration) {
        match self.role {
            Role::Uac => (Duration::from_millis(2100), Duration::from_secs(4)),
            Role::Uas => (Duration::ZERO, Duration::from_secs(2)),
        }
    }

    /// A new in-dialog request (§12.2.1.1): Request-URI and Route from the route set
    /// (loose or strict), Via with `branch`, Max-Forwards 70, From/To with tags, Call-ID,
    /// the next local CSeq, and our Contact for target refresh methods (INVITE, UPDATE,
    /// and the RFC 6665/3515 ones). Add a body and other headers on the builder.
    ///
    /// BYE terminates the dialog at once (§15.1.1: the session ends when BYE is sent). A
    /// re-INVITE is refused while any INVITE is in progress (§14.1) or on an early dialog.
    pub fn request(
        &mut self,
        method: Method,
        via: &LocalVia,
        branch: &Branch,
    ) -> Result<MessageBuilder, DialogError> {
        match method {
            Method::Ack | Method::Cancel => return Err(DialogError::MethodNotInDialog(method)),
            _ => {}
        }
        if self.state.is_terminated() {
            return Err(DialogError::Terminated);
        }
        let early = self.state.is_early();
        match method {
            Method::Bye if early && self.role == Role::Uas => {
                return Err(DialogError::ByeOnEarlyUas)
            }
            Method::Invite if early => return Err(DialogError::ReInviteOnEarly),
            Method::Invite if self.invite_in_progress.is_some() => {
                return Err(DialogError::InvitePending)
            }
            _ => {}
        }
        // §12.2.1.1: an empty local sequence number starts per §8.1.1.5 (any value < 2**31).
        let seq = match self.local_seq {
            None => 1,
            Some(s) if s < (1 << 31) - 1 => s + 1,
            Some(_) => return Err(DialogError::CSeqExhausted),
        };
        let mut b = self.build(&method, seq, via, branch);
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
        ) {
            b = b.header("Contact", &format!("<{}>", self.local_contact));
        }
        self.local_seq = Some(seq);
        match method {
            Method::Invite => self.invite_in_progress = Some(seq),
            Method::Bye => self.terminate(TerminationReason::LocalBye),
            _ => {}
        }
        Ok(b)
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `invite_seq` (§13.2.2.4): built
    /// like any in-dialog request but with the INVITE's CSeq number and a fresh branch. The
    /// caller adds the credentials the INVITE carried (Authorization/Proxy-Authorization)
    /// and, if the 2xx carried an offer, the answer as body. Allowed in any state: a 2xx
    /// must be ACKed even when we are about to BYE it.
    pub fn ack(&self, invite_seq: u32, via: &LocalVia, branch: &Branch) -> MessageBuilder {
        self.build(&Method::Ack, invite_seq, via, branch)
    }

    /// A PRACK for a reliable provisional response (RFC 3262 §7.2: `RAck: RSeq CSeq
    /// method`). Refuses a retransmitted 1xx (already PRACKed) and one that skips RSeq
    /// numbers (§4: wait for the missing ones).
    pub fn prack(
        &mut self,
        provisional: &Message,
        via: &LocalVia,
        branch: &Branch,
    ) -> Result<MessageBuilder, DialogError> {
        let rseq = provisional
            .header_named("RSeq")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|r| (1..1 << 31).contains(r))
            .ok_or(DialogError::BadRSeq)?;
        match self.last_rseq {
            Some(last) if rseq <= last => return Err(DialogError::RSeqRetransmission(rseq)),
            Some(last) if rseq != last + 1 => {
                return Err(DialogError::RSeqOutOfOrder {
                    expected: last + 1,
                    got: rseq,
                })
            }
            _ => {}
        }
        let cseq = provisional.cseq();
        let b = self
            .request(Method::Prack, via, branch)?
            .header("RAck", &format!("{rseq} {} {}", cseq.seq, cseq.method));
        self.last_rseq = Some(rseq);
        Ok(b)
    }

    /// Via, Route, Max-Forwards, From, To, Call-ID, CSeq (§12.2.1.1, §8.1.1).
    fn build(&self, method: &Method, seq: u32, via: &LocalVia, branch: &Branch) -> MessageBuilder {
        let (ruri, routes) = self.route_set.request_target(&self.remote_target);
        let mut b = MessageBuilder::request(method, &ruri).header("Via", &via.value(branch));
        for r in &routes {
            b = b.header("Route", &format!("<{r}>"));
        }
        b.header("Max-Forwards", "70")
            .header("From", &self.local.header_value(&self.id.local_tag))
            .header("To", &self.remote.header_value(&self.id.remote_tag))
            .header("Call-ID", &self.id.call_id)
            .header("CSeq", &format!("{seq} {method}"))
    }

    /// A response to `req`, a request of this dialog (the initial INVITE or an in-dialog
    /// request): our To tag (not on 100, §8.2.6.2), the Record-Route set copied on a
    /// dialog-creating response (§12.1.1), our Contact on 101-299 to INVITE and 2xx to
    /// UPDATE (§12.1.1, RFC 3311 §6.2). For the initial INVITE it moves the state: 2xx
    /// confirms, 3xx-6xx ends an early dialog.
    pub fn response(
        &mut self,
        req: &Message,
        status: u16,
        reason: &str,
    ) -> Result<MessageBuilder, DialogError> {
        if !(100..=699).contains(&status) {
            return Err(DialogError::BadStatus(status));
        }
        let method = req.method().ok_or(DialogError::NotARequest)?;
        let to_tag = req.to().tag();
        if req.call_id() != self.id.call_id
            || to_tag.is_some_and(|t| t != self.id.local_tag)
            || req.from().tag().unwrap_or("") != self.id.remote_tag
        {
            return Err(DialogError::NotThisDialog);
        }
        let initial = self.role == Role::Uas
            && *method == Method::Invite
            && to_tag.is_none()
            && req.cseq().seq == self.initial_invite_seq;
        let tag = (status > 100).then_some(self.id.local_tag.as_str());
        let mut b = MessageBuilder::response_to(req, status, reason, tag);
        let success = (200..300).contains(&status);
        if initial && (101..300).contains(&status) {
            for rr in req.header_values(HeaderName::RecordRoute) {
                b = b.header("Record-Route", rr);
            }
        }
        if (*method == Method::Invite && (101..300).contains(&status))
            || (*method == Method::Update && success)
        {
            b = b.header("Contact", &format!("<{}>", self.local_contact));
        }
        if initial && self.state.is_early() {
            if success {
                self.state = DialogState::Confirmed;
                self.was_confirmed = true;
            } else if status >= 300 {
                self.state = DialogState::Terminated(TerminationReason::Rejected { status });
            }
        }
        Ok(b)
    }

    /// Checks an incoming in-dialog request (§12.2.2) and updates the dialog: remote CSeq
    /// order (500 when lower), glare (§14.2: 491, or 500 with Retry-After), target
    /// refresh from a re-INVITE's or UPDATE's Contact, BYE ends the dialog. A BYE crossing
    /// ours is still accepted (answer 200). On `Err`, answer with
    /// [`Rejection::response`].
    pub fn handle_request(&mut self, req: &Message) -> Result<InDialogRequest, Rejection> {
        let method = req.method().ok_or(Rejection::NotARequest)?;
        if req.call_id() != self.id.call_id
            || req.to().tag() != Some(self.id.local_tag.as_str())
            || req.from().tag().unwrap_or("") != self.id.remote_tag
        {
            return Err(Rejection::NotThisDialog);
        }
        let seq = req.cseq().seq;
        match method {
            // §12.2.2: ACK and CANCEL are outside the CSeq check; an ACK carries the
            // INVITE's number.
            Method::Ack => return Ok(InDialogRequest::Ack { cseq: seq }),
            Method::Cancel => return Err(Rejection::Cancel),
            _ => {}
        }
        let crossing_bye = *method == Method::Bye
            && self.state == DialogState::Terminated(TerminationReason::LocalBye);
        if self.state.is_terminated() && !crossing_bye {
            return Err(Rejection::Terminated);
        }
        if let Some(last) = self.remote_seq {
            if seq < last {
                return Err(Rejection::OutOfOrder { last, got: seq });
            }
        }
        self.remote_seq = Some(seq);
        match method {
            Method::Bye => {
                self.terminate(TerminationReason::RemoteBye);
                Ok(InDialogRequest::Bye)
            }
            Method::Invite if self.role == Role::Uas && self.state.is_early() => {
                // §14.2: the initial INVITE has no final response yet. Retry-After is
                // "random between 0 and 10 s"; the CSeq is random enough and keeps this
                // deterministic.
                Err(Rejection::InviteOverlap {
                    retry_after: seq % 11,
                })
            }
            Method::Invite if self.invite_in_progress.is_some() => Err(Rejection::RequestPending),
            Method::Invite | Method::Update => {
                let target_refreshed = self
                    .refresh_target(req)
                    .map_err(|_| Rejection::BadContact)?;
                Ok(InDialogRequest::Request { target_refreshed })
            }
            _ => Ok(InDialogRequest::Request {
                target_refreshed: false,
            }),
        }
    }

    /// §12.2: replace the remote target with the message's Contact, if it has one.
    fn refresh_target(&mut self, msg: &Message) -> Result<bool, DialogError> {
        match first_contact_uri(msg)? {
            Some(uri) if uri != self.remote_target => {
                SipUri::parse(&uri).map_err(|_| DialogError::BadContact)?;
                self.remote_target = uri;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Follows a response to one of our requests in this dialog (§12.2.1.2, §13.2.2.4):
    /// a 2xx to the initial INVITE confirms (route set and target recomputed from it), a
    /// 3xx-6xx ends the early dialog, a 2xx to a re-INVITE/UPDATE refreshes the target,
    /// 481/408 end the dialog. Responses to the initial INVITE with another To tag belong
    /// to another fork: [`Dialogs::handle_uac_response`] routes them.
    pub fn handle_response(&mut self, resp: &Message) -> Result<ResponseOutcome, DialogError> {
        let status = resp.status().ok_or(DialogError::NotAResponse)?;
        if resp.call_id() != self.id.call_id
            || resp.from().tag() != Some(self.id.local_tag.as_str())
            || resp.to().tag().unwrap_or("") != self.id.remote_tag
        {
            return Err(DialogError::NotThisDialog);
        }
        let cseq = resp.cseq();
        let final_ = status >= 200;
        let success = (200..300).contains(&status);
        if cseq.method == Method::Invite && final_ && self.invite_in_progress == Some(cseq.seq) {
            self.invite_in_progress = None;
        }
        let initial_invite = self.role == Role::Uac
            && cseq.method == Method::Invite
            && cseq.seq == self.initial_invite_seq;
        if initial_invite {
            return Ok(match (&self.state, status) {
                // §13.2.2.4: a 2xx for a dialog that never had one (early, or an early
                // fork the TU already gave up) makes it confirmed; the TU must ACK it.
                (_, 200..=299) if !self.was_confirmed => {
                    // §13.2.2.4: the 2xx recomputes the route set (§12.2.1.2 refers to
                    // §12.1.2) and, INVITE being a target refresh, the remote target.
                    self.route_set = RouteSet::from_response(resp)?;
                    self.refresh_target(resp)?;
                    self.state = DialogState::Confirmed;
                    self.was_confirmed = true;
                    ResponseOutcome::Confirmed
                }
                (DialogState::Early, 300..) => {
                    self.state = DialogState::Terminated(TerminationReason::Rejected { status });
                    ResponseOutcome::Terminated
                }
                (_, 200..=299) => ResponseOutcome::Retransmitted2xx,
                _ => ResponseOutcome::Unchanged,
            });
        }
        if matches!(status, 408 | 481) && cseq.method != Method::Bye {
            // §12.2.1.2 (RFC 5057 narrows this to the usage; an INVITE dialog has one).
            self.terminate(TerminationReason::PeerGone { status });
            return Ok(ResponseOutcome::Terminated);
        }
        if !final_ || self.state.is_terminated() {
            return Ok(ResponseOutcome::Unchanged);
        }
        match cseq.method {
            Method::Invite if success => {
                if self.last_invite_2xx.is_some_and(|last| cseq.seq <= last) {
                    return Ok(ResponseOutcome::Retransmitted2xx);
                }
                let target_refreshed = self.refresh_target(resp)?;
                self.last_invite_2xx = Some(cseq.seq);
                Ok(ResponseOutcome::Refreshed {
                    invite: true,
                    target_refreshed,
                })
            }
            Method::Invite if status == 491 => Ok(ResponseOutcome::RequestPending),
            Method::Invite => Ok(ResponseOutcome::ReInviteFailed { status }),
            Method::Update if success => Ok(ResponseOutcome::Refreshed {
                invite: false,
                target_refreshed: self.refresh_target(resp)?,
            }),
            _ => Ok(ResponseOutcome::Unchanged),
        }
    }

    /// Our in-dialog request got no response (Timer B/F; transaction layer
    /// `TxEvent::Timeout`): like a 408 (§12.2.1.2, §8.1.3.1), the dialog ends. For the
    /// initial INVITE of an early dialog it ends too (nothing will confirm it).
    pub fn handle_request_timeout(&mut self, method: &Method) {
        if *method == Method::Invite {
            self.invite_in_progress = None;
        }
        self.terminate(TerminationReason::PeerGone { status: 408 });
    }
}

/// RFC 3261 §25.1 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}
