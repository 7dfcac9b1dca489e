//! Calls out through trunks.
//!
//! - Click-to-call (SPEC §4 `POST /v1/calls` with `agent` and `to`): ring the agent's
//!   phones with voxgate's own offer; when one answers, dial the lead through the trunk
//!   with the codec the agent's phone chose (so no transcoding is needed), and bridge the
//!   two when the lead answers.
//! - Trunk limits ([`Pacer`](crate::calls::pacer::Pacer)): a click-to-call waits `queued`
//!   for a free slot of `max_concurrent_calls`; every INVITE to the carrier waits its turn
//!   under `max_cps` and `max_calls_per_minute`. Both queues are served in order.
//! - The retries of an INVITE voxgate sends: answering a carrier's digest challenge, and
//!   failing over to the trunk's next address.

use std::time::Instant;

use voxgate_sip::auth::{select_challenge, AnswerInput, ClientSecret};
use voxgate_sip::message::{HeaderName, Message, MessageBuilder, Method};
use voxgate_sip::sdp::{create_offer, Codec, LegSdp, LocalMedia, LocalSession};
use voxgate_sip::transaction::{Peer, TransactionLayer};

use super::{
    host, Call, CallEngine, CallEvent, DialOffer, Ending, Fork, HeldDial, Originate, Output,
    Parties, ALLOW,
};
use crate::calls::env::{Directory, Route, TrunkDial};
use crate::calls::pacer::TrunkLimits;
use crate::calls::record::{CallChange, CallStatus};
use crate::calls::types::{CallId, HangupBy, LegId};
use crate::media::Side;
use rand::Rng;

impl CallEngine {
    /// Starts a click-to-call whose record the API has stored (`queued`). Whatever goes
    /// wrong ends that record with the reason; nothing is answered to the API here.
    pub(super) fn originate(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        o: Originate,
        now: Instant,
    ) {
        let lead = match directory.dial_out(&o.trunk, &o.to, o.caller_id.as_deref()) {
            Ok(lead) => lead,
            Err(e) => return self.never_started(&o.call, CallStatus::Failed, &e.to_string(), now),
        };
        let q = self.trunks.entry(lead.trunk_id.clone()).or_default();
        q.pacer.limits = lead.limits;
        if !q.starts.is_empty() || !q.pacer.has_slot() {
            // Stays `queued` until a call on the trunk ends.
            q.starts.push_back(o);
            return;
        }
        self.start_click_to_call(layer, directory, o, lead, now);
    }

    /// A click-to-call with a free slot on its trunk: ring the agent.
    fn start_click_to_call(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        o: Originate,
        lead: TrunkDial,
        now: Instant,
    ) {
        let (party, targets) = match directory.agent(&o.agent) {
            Route::Agent { party, targets, .. } => (party, targets),
            Route::Offline => {
                return self.never_started(&o.call, CallStatus::Failed, "agent offline", now)
            }
            Route::NotFound | Route::Answer | Route::Trunk(_) | Route::Program(_) => {
                return self.never_started(&o.call, CallStatus::Failed, "no such agent", now)
            }
        };
        if self.active.get(&party.agent).copied().unwrap_or(0) >= party.max_concurrent_calls {
            return self.never_started(&o.call, CallStatus::Busy, "agent busy", now);
        }
        let session = match self.media.create_session() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no media for a click-to-call");
                return self.never_started(&o.call, CallStatus::Failed, "no media ports", now);
            }
        };
        if o.listen {
            self.media.need_digits(session.id);
        }
        let mut sdp = [session.a, session.b].map(|side| {
            LegSdp::new(
                LocalSession::new(self.rng.random::<u32>().into()),
                LocalMedia {
                    address: self.cfg.public_ip,
                    rtp_port: side.rtp.port(),
                },
            )
        });
        // The agent is offered what the trunk carries, so the lead can be offered exactly
        // the agent's choice; DTMF events too, which every carrier preset relays.
        let mut codecs = if lead.codecs.is_empty() {
            self.cfg.sdp.codecs.clone()
        } else {
            lead.codecs.clone()
        };
        if !codecs.iter().any(Codec::is_telephone_event) {
            codecs.push(Codec::telephone_event());
        }
        let (offer, pending) = match create_offer(&self.cfg.sdp, &codecs, &mut sdp[0]) {
            Ok(x) => x,
            Err(e) => {
                self.media.release_session(session.id);
                let cause = format!("no codec for the trunk: {e}");
                return self.never_started(&o.call, CallStatus::Failed, &cause, now);
            }
        };
        let wall = self.wall(now);
        let trunk = lead.trunk_id.clone();
        if let Some(q) = self.trunks.get_mut(&trunk) {
            q.pacer.take_slot();
        }
        self.calls.insert(
            o.call.clone(),
            Call {
                id: o.call.clone(),
                agents: vec![party.agent.clone()],
                channels: Vec::new(),
                dial: None,
                bridge: None,
                media: session.id,
                sdp,
                answered_at: None,
                renegotiation: None,
                lead: Some(Box::new(lead)),
                ring_timeout: o.ring_timeout.unwrap_or(self.cfg.ring_timeout),
                time_limit: o.time_limit,
                trunk: Some(trunk.clone()),
                rate: None,
                ringback: false,
                internal: Side::A,
                record: o.record,
                recording: None,
                info_dtmf: [false; 2],
                program: None,
            },
        );
        self.by_session.insert(session.id, o.call.clone());
        *self.active.entry(party.agent.clone()).or_default() += 1;
        metrics::counter!("voxgate_calls_total").increment(1);
        self.emit(CallChange::CallRinging {
            call_id: o.call.to_string(),
            at: wall,
        });
        self.emit(CallChange::CallTrunk {
            call_id: o.call.to_string(),
            trunk_id: trunk,
        });
        self.output.push_back(Output::Event(CallEvent::Ringing {
            call: o.call.clone(),
        }));
        let ip = host(self.cfg.public_ip);
        // The agent's phone shows whom it is about to talk to.
        let parties = Parties {
            from: format!("sip:{}@{ip}", o.to),
            to: format!("sip:{}@{ip}", party.username),
            agent: Some(party.agent),
        };
        let forks = targets.iter().map(Fork::from).collect();
        self.dial(
            layer,
            &o.call,
            None,
            &parties,
            forks,
            Side::A,
            &offer,
            DialOffer::Own(pending),
            now,
        );
    }

    /// A click-to-call that ends before any leg rang: only its record changes.
    fn never_started(&mut self, call: &CallId, status: CallStatus, cause: &str, now: Instant) {
        tracing::info!(call = %call, cause, "click-to-call not started");
        self.emit(CallChange::CallEnded {
            call_id: call.to_string(),
            status,
            at: self.wall(now),
            duration_seconds: 0,
            hangup_cause: cause.to_owned(),
            hangup_by: HangupBy::System,
        });
        self.output.push_back(Output::Event(CallEvent::Ended {
            call: call.clone(),
            status,
        }));
    }

    /// The agent answered: dial the lead through the trunk, offering the codec the
    /// agent's phone chose (and its DTMF events).
    pub(super) fn dial_lead(
        &mut self,
        layer: &mut TransactionLayer,
        call_id: &CallId,
        agent_leg: &LegId,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(lead) = call.lead.take() else {
            return;
        };
        call.rate = lead.rate.clone();
        // The agent hears ringback from now until the lead answers or sends early media.
        super::start_ringback(self.media.as_mut(), call, self.rng.random());
        let codecs: Vec<Codec> = call.sdp[0]
            .media
            .as_ref()
            .map(|m| m.send.iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default();
        let offer = create_offer(&self.cfg.sdp, &codecs, &mut call.sdp[1]);
        let mut targets = lead.targets.clone();
        let (Ok((offer, pending)), false) = (offer, targets.is_empty()) else {
            let ending = Ending {
                status: CallStatus::Failed,
                cause: "lead not dialled: no codec or no address for the trunk",
                by: HangupBy::System,
                reply: None,
            };
            return self.end_call(layer, call_id, &ending, now);
        };
        let first = targets.remove(0);
        let parties = Parties {
            from: format!("sip:{}@{}", lead.from_user, host(self.cfg.public_ip)),
            to: lead.uri.clone(),
            agent: None,
        };
        let fork = Fork {
            uri: lead.uri.clone(),
            peer: first,
            fallback: targets,
            auth: lead.credentials.clone(),
        };
        let held = HeldDial {
            call: call_id.clone(),
            origin: Some(agent_leg.clone()),
            parties,
            forks: vec![fork],
            side: Side::B,
            sdp: offer,
            offer: DialOffer::Own(pending),
            has_slot: true,
        };
        self.send_trunk_dial(layer, &lead.trunk_id, lead.limits, held, now);
    }

    /// Sends a dial to a trunk now if its limits allow and nothing waits before it, else
    /// queues it behind the others.
    pub(super) fn send_trunk_dial(
        &mut self,
        layer: &mut TransactionLayer,
        trunk: &str,
        limits: TrunkLimits,
        held: HeldDial,
        now: Instant,
    ) {
        let q = self.trunks.entry(trunk.to_owned()).or_default();
        q.pacer.limits = limits;
        let ready =
            q.dials.is_empty() && q.pacer.may_send(now) && (held.has_slot || q.pacer.has_slot());
        if ready {
            self.release_dial(layer, trunk, held, now);
        } else {
            tracing::debug!(trunk, call = %held.call, "dial waits for the trunk's limits");
            q.dials.push_back(held);
        }
    }

    /// Counts the dial against its trunk's limits and sends it.
    fn release_dial(
        &mut self,
        layer: &mut TransactionLayer,
        trunk: &str,
        held: HeldDial,
        now: Instant,
    ) {
        if let Some(q) = self.trunks.get_mut(trunk) {
            q.pacer.record_send(now);
            if !held.has_slot {
                q.pacer.take_slot();
            }
        }
        if !held.has_slot {
            if let Some(call) = self.calls.get_mut(&held.call) {
                call.trunk = Some(trunk.to_owned());
            }
        }
        self.dial(
            layer,
            &held.call,
            held.origin.as_ref(),
            &held.parties,
            held.forks,
            held.side,
            &held.sdp,
            held.offer,
            now,
        );
    }

    /// Sends what waited for a trunk's limits, in order, as far as they allow now.
    pub(super) fn serve_trunks(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        now: Instant,
    ) {
        self.wake = None;
        let trunks: Vec<String> = self
            .trunks
            .iter()
            .filter(|(_, q)| !q.dials.is_empty() || !q.starts.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        for trunk in trunks {
            while let Some(q) = self.trunks.get_mut(&trunk) {
                let Some(front) = q.dials.front() else {
                    break;
                };
                if !self.calls.contains_key(&front.call) {
                    // The call ended while it waited (hung up by the API or its caller).
                    q.dials.pop_front();
                    continue;
                }
                if !q.pacer.may_send(now) || !(front.has_slot || q.pacer.has_slot()) {
                    break;
                }
                let Some(held) = q.dials.pop_front() else {
                    break;
                };
                self.release_dial(layer, &trunk, held, now);
            }
            while let Some(q) = self.trunks.get_mut(&trunk) {
                if q.starts.is_empty() || !q.pacer.has_slot() {
                    break;
                }
                let Some(o) = q.starts.pop_front() else {
                    break;
                };
                // Looked up again: the agent's phones and the trunk may have changed.
                match directory.dial_out(&o.trunk, &o.to, o.caller_id.as_deref()) {
                    Ok(lead) => self.start_click_to_call(layer, directory, o, lead, now),
                    Err(e) => {
                        self.never_started(&o.call, CallStatus::Failed, &e.to_string(), now);
                    }
                }
            }
        }
    }

    /// A fork's final error that another attempt may cure: a digest challenge we hold
    /// credentials for (answered once, RFC 3261 §22.2), or a 503 from a trunk address
    /// with others left (RFC 3263 §4.3). Returns whether the fork was sent again.
    pub(super) fn retry_fork(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        resp: &Message,
        now: Instant,
    ) -> bool {
        let code = resp.status().unwrap_or(0);
        if code == 503 {
            return self.fail_over(layer, leg, now);
        }
        let (challenge_header, answer_header) = match code {
            401 => (HeaderName::WwwAuthenticate, "Authorization"),
            407 => (HeaderName::ProxyAuthenticate, "Proxy-Authorization"),
            _ => return false,
        };
        let cnonce = hex::encode(self.rng.random::<[u8; 8]>());
        let Some(channel) = self.channels.get_mut(leg) else {
            return false;
        };
        let peer = channel.peer;
        let Some(uac) = channel.uac_mut() else {
            return false;
        };
        let (Some(creds), false) = (&uac.auth, uac.authed) else {
            return false;
        };
        let Some(challenge) = select_challenge(resp.header_values(challenge_header)) else {
            return false;
        };
        let answer = challenge.answer(&AnswerInput {
            username: &creds.username,
            secret: ClientSecret::Password(&creds.password),
            method: "INVITE",
            uri: uac.invite.request_uri().unwrap_or_default(),
            cnonce: &cnonce,
            nc: 1,
        });
        let Ok(answer) = answer else {
            return false;
        };
        uac.authed = true;
        self.resend_invite(
            layer,
            leg,
            peer,
            Some((answer_header, answer.to_string())),
            now,
        )
    }

    /// The fork's target timed out or failed at the transport: try the trunk's next
    /// address (RFC 3263 §4.3). Returns whether the fork was sent again.
    pub(super) fn fail_over(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        now: Instant,
    ) -> bool {
        let Some(uac) = self.channels.get_mut(leg).and_then(|c| c.uac_mut()) else {
            return false;
        };
        if uac.fallback.is_empty() || uac.canceled {
            return false;
        }
        let next = uac.fallback.remove(0);
        // A new server: its challenge is a new one.
        uac.authed = false;
        self.resend_invite(layer, leg, next, None, now)
    }

    /// Sends the fork's INVITE again to `peer` as a new transaction (RFC 3261 §8.1.3.5:
    /// same Call-ID, From and To, CSeq one higher, a new branch), optionally with a
    /// credentials header.
    fn resend_invite(
        &mut self,
        layer: &mut TransactionLayer,
        leg: &LegId,
        peer: Peer,
        auth: Option<(&str, String)>,
        now: Instant,
    ) -> bool {
        let branch = self.branch();
        let via = self.via(peer.transport).value(&branch);
        let contact = format!("<{}>", self.contact(peer.transport));
        let Some(channel) = self.channels.get_mut(leg) else {
            return false;
        };
        let Some(uac) = channel.uac_mut() else {
            return false;
        };
        let old = &uac.invite;
        let mut b = MessageBuilder::request(&Method::Invite, old.request_uri().unwrap_or_default())
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", old.header(HeaderName::From).unwrap_or_default())
            .header("To", old.header(HeaderName::To).unwrap_or_default())
            .header("Call-ID", old.call_id())
            .header(
                "CSeq",
                &format!("{} INVITE", old.cseq().seq.saturating_add(1)),
            )
            .header("Contact", &contact)
            .header("Allow", ALLOW);
        if let Some((name, value)) = &auth {
            b = b.header(name, value);
        }
        let request = b
            .body(old.content_type().unwrap_or("application/sdp"), old.body())
            .build();
        let Ok(parsed) = Message::parse(request.clone()) else {
            return false;
        };
        let Ok(tx) = layer.send_request(request, peer, now) else {
            return false;
        };
        let old_tx = std::mem::replace(&mut uac.tx, tx);
        uac.invite = parsed;
        channel.peer = peer;
        self.by_client_tx.remove(&old_tx);
        self.by_client_tx.insert(tx, leg.clone());
        true
    }
}
