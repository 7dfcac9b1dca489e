//! Call programs on the engine (SPEC §6, docs/call-programs.md): a number routed to an
//! IVR flow gets a call that voxgate answers itself and runs the flow's verbs on.
//!
//! The interpreter is `voxgate_ivr::Program` (sans-IO); this module is its driver, in the
//! engine's own sans-IO style: the engine's inputs that concern a program (a key press on
//! its leg, the end of a prompt it started, its timer) become program events, and the
//! program's commands become engine actions (answer the channel, play a prompt into it,
//! stop it, hang up, reject, report the caller's input).
//!
//! What runs today: `answer`, `play` (prompts, and URLs fetched once), `say` (the `[tts]`
//! service), `pause`,
//! `gather` (RFC 4733, SIP INFO and in-band digits, with barge-in), `record` (voicemail:
//! the caller, mono, after a beep), `set`, `goto`, `hangup`, `reject`, `redirect` and
//! webhook numbers, `dial` to agents (their phones ring at once with voxgate's own offer;
//! the first to answer is bridged to the caller; the program goes on when the agent hangs
//! up or nobody answers), and IVR flows' nodes built on them. What does not yet, and ends
//! the call (logged, hangup cause `program: … not supported yet`): `enqueue`. A `dial` to
//! a SIP URI with a host name (not an IP address) is a failed dial.
//!
//! Dial outcomes and the end of a bridge arrive where the engine has no directory at hand
//! (SIP responses, a BYE): they wait in the program's inbox, and its timer is due at once,
//! so the next turn of the engine's clock hands them over.

use std::collections::VecDeque;
use std::time::Instant;

use rand::Rng;

use voxgate_ivr::verb::{DialTarget, PlaySource};
use voxgate_ivr::{
    Command, DialId, DialOutcome, Digit as ProgramDigit, Event, Outcome, PlaybackId, Program,
};
use voxgate_sip::sdp::{create_offer, Codec};
use voxgate_sip::transaction::TransactionLayer;

use super::{
    audio_codec, host, leg_remote, listen_config, CallEngine, DialOffer, Ending, Fork, HeldDial,
    Parties,
};
use crate::calls::control::RecordingAction;
use crate::calls::env::{Directory, FetchedAudio, ProgramRoute, PromptPlay, Route, SpeechPlay};
use crate::calls::fetch::{ProgramReply, ProgramRequest};
use crate::calls::record::{CallChange, CallStatus, MediaChange};
use crate::calls::types::{CallId, HangupBy, LegId};
use crate::media::{Loops, PlaybackEvent, Side};
use crate::store::RecordingChannels;

/// A program running on a call's answering channel (side A).
pub(super) struct Running {
    program: Program,
    /// The channel it runs on: the caller's.
    leg: LegId,
    /// Prompts and speech it started and still waits for: the media tag → its playback,
    /// and whether it is speech (`say`).
    playbacks: Vec<(u64, PlaybackId, bool)>,
    /// The dial it waits on, while its forks ring or its bridge lasts.
    dialing: Option<DialId>,
    /// The recording its `record` verb is making.
    recording: Option<String>,
    /// The dial it waits on asked for `record` and the call did not record already: the
    /// bridge is recorded (dual), the recording ends with it, and the call's `record`
    /// setting goes back to none.
    dial_record: bool,
    /// Events for it that arrived without a directory at hand, and since when.
    inbox: VecDeque<Event>,
    inbox_since: Option<Instant>,
}

/// Why a program ended the call.
const UNSUPPORTED: &str = "not supported yet";

impl CallEngine {
    /// Starts `blocks` on `leg`, the caller's UAS channel of `call_id` (not answered yet).
    pub(super) fn start_program(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        call_id: &CallId,
        leg: &LegId,
        route: &ProgramRoute,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let mut vars = voxgate_ivr::Variables::new();
        vars.insert("call_id".to_owned(), call_id.to_string());
        let mut program = match route {
            ProgramRoute::Flow(blocks) => Program::with_blocks(blocks, vars),
            ProgramRoute::Webhook(url) => match Program::webhook(url, vars) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(call = %call_id, error = %e, "webhook program not started");
                    let ending = Ending {
                        status: CallStatus::Failed,
                        cause: "program failed",
                        by: HangupBy::System,
                        reply: Some((480, "Temporarily Unavailable")),
                    };
                    return self.end_call(layer, call_id, &ending, now);
                }
            },
        };
        program.start(now);
        call.program = Some(Box::new(Running {
            program,
            leg: leg.clone(),
            playbacks: Vec::new(),
            dialing: None,
            recording: None,
            dial_record: false,
            inbox: VecDeque::new(),
            inbox_since: None,
        }));
        self.drive_program(layer, directory, call_id, now);
    }

    /// A key press on side A of a call whose program gathers.
    pub(super) fn program_digit(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        call_id: &CallId,
        side: Side,
        digit: char,
        now: Instant,
    ) {
        let Some(run) = self.calls.get_mut(call_id).and_then(|c| c.program.as_mut()) else {
            return;
        };
        let Some(digit) = ProgramDigit::new(digit) else {
            return;
        };
        if side != Side::A {
            return;
        }
        run.program.handle_event(Event::Digit(digit), now);
        self.drive_program(layer, directory, call_id, now);
    }

    /// The media side reports the end of a playback.
    pub fn on_playback(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        ended: PlaybackEvent,
        now: Instant,
    ) {
        let Some(call_id) = self.by_session.get(&ended.session).cloned() else {
            return;
        };
        let Some(run) = self
            .calls
            .get_mut(&call_id)
            .and_then(|c| c.program.as_mut())
        else {
            return;
        };
        let Some(i) = run.playbacks.iter().position(|(t, ..)| *t == ended.tag) else {
            return;
        };
        let (_, playback, speech) = run.playbacks.swap_remove(i);
        tracing::debug!(call = %call_id, outcome = ?ended.outcome, "program: playback ended");
        let event = if speech {
            Event::SpeechFinished { playback }
        } else {
            Event::PlaybackFinished { playback }
        };
        run.program.handle_event(event, now);
        self.drive_program(layer, directory, &call_id, now);
    }

    /// When the program on `leg`'s call wants the clock next, if `leg` is its channel:
    /// its own timer, or at once for events waiting in its inbox.
    pub(super) fn program_timeout(&self, leg: &LegId) -> Option<Instant> {
        let channel = self.channels.get(leg)?;
        let run = self.calls.get(&channel.call)?.program.as_ref()?;
        if run.leg != *leg {
            return None;
        }
        match (run.inbox_since, run.program.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An event for the program of `call_id`, handed over on the engine's next turn.
    fn post_program_event(&mut self, call_id: &CallId, event: Event, now: Instant) {
        let Some(run) = self.calls.get_mut(call_id).and_then(|c| c.program.as_mut()) else {
            return;
        };
        run.inbox.push_back(event);
        run.inbox_since.get_or_insert(now);
        let leg = run.leg.clone();
        self.arm(&leg);
    }

    /// Whether the call runs a program that is dialling (its dial's outcome is the
    /// program's, not the call's).
    pub(super) fn program_dialing(&self, call_id: &CallId) -> bool {
        self.calls
            .get(call_id)
            .and_then(|c| c.program.as_ref())
            .is_some_and(|r| r.dialing.is_some())
    }

    /// The program's dial ended without a bridge: `outcome` (busy, no answer, failed).
    pub(super) fn program_dial_failed(
        &mut self,
        call_id: &CallId,
        outcome: DialOutcome,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.dial = None;
        super::stop_ringback(self.media.as_mut(), call);
        if call
            .program
            .as_mut()
            .is_some_and(|r| std::mem::take(&mut r.dial_record))
        {
            call.record = None;
        }
        let Some(dial) = call.program.as_mut().and_then(|r| r.dialing.take()) else {
            return;
        };
        self.post_program_event(call_id, Event::DialOutcome { dial, outcome }, now);
    }

    /// The program's dial was answered and is bridged to the caller.
    pub(super) fn program_dial_answered(&mut self, call_id: &CallId, now: Instant) {
        let Some(dial) = self
            .calls
            .get(call_id)
            .and_then(|c| c.program.as_ref())
            .and_then(|r| r.dialing)
        else {
            return;
        };
        let outcome = DialOutcome::Answered;
        self.post_program_event(call_id, Event::DialOutcome { dial, outcome }, now);
    }

    /// The agent bridged to a program's caller hung up (`leg`): the caller is alone
    /// again, and the program goes on.
    pub(super) fn program_bridge_ended(&mut self, call_id: &CallId, leg: &LegId, now: Instant) {
        let wall = self.wall(now);
        if let Some(channel) = self.channels.remove(leg) {
            if let Some(d) = channel.dialog {
                self.dialogs.remove(&d);
                self.by_dialog.remove(&d);
            }
        }
        self.emit(CallChange::LegStatus {
            leg_id: leg.to_string(),
            status: CallStatus::Completed,
            at: wall,
            hangup_cause: Some("BYE".to_owned()),
        });
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.bridge = None;
        call.channels.retain(|l| l != leg);
        call.sdp[1].media = None;
        let session = call.media;
        if let Some(m) = &call.sdp[0].media {
            // Nothing to relay to: side A's remote alone, B's forgotten.
            self.media.update_leg(session, Side::A, leg_remote(m, m));
            self.media
                .update_leg(session, Side::B, crate::media::LegRemote::default());
        }
        self.listen_alone(call_id);
        let mut recorded = false;
        if let Some(call) = self.calls.get_mut(call_id) {
            if let Some(run) = call.program.as_mut() {
                run.dialing = None;
                recorded = std::mem::take(&mut run.dial_record);
            }
            if recorded {
                call.record = None;
            }
        }
        if recorded {
            if let Err(e) = self.recording(call_id, RecordingAction::Stop, now) {
                tracing::debug!(call = %call_id, error = ?e, "dial's recording not stopped");
            }
        }
        self.post_program_event(call_id, Event::BridgeEnded, now);
    }

    /// The program's timer on `leg`'s call, if due.
    pub(super) fn program_tick(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        leg: &LegId,
        now: Instant,
    ) {
        if self.program_timeout(leg).is_none_or(|at| at > now) {
            return;
        }
        let Some(call_id) = self.channels.get(leg).map(|c| c.call.clone()) else {
            return;
        };
        if let Some(run) = self
            .calls
            .get_mut(&call_id)
            .and_then(|c| c.program.as_mut())
        {
            run.inbox_since = None;
            while let Some(event) = run.inbox.pop_front() {
                run.program.handle_event(event, now);
            }
            if run.program.poll_timeout().is_some_and(|at| at <= now) {
                run.program.handle_timeout(now);
            }
        }
        self.drive_program(layer, directory, &call_id, now);
    }

    /// Carries out the program's commands until it waits (or the call ends).
    fn drive_program(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        call_id: &CallId,
        now: Instant,
    ) {
        loop {
            let Some(call) = self.calls.get_mut(call_id) else {
                return;
            };
            let Some(run) = call.program.as_mut() else {
                return;
            };
            let Some(command) = run.program.poll_command() else {
                break;
            };
            let leg = run.leg.clone();
            match command {
                Command::Answer => {
                    if self.answer_locally(layer, &leg, now).is_ok() {
                        self.listen_alone(call_id);
                    }
                }
                Command::Play {
                    playback,
                    source,
                    loop_count,
                } => {
                    // 0: until something stops it (hold music).
                    let loops =
                        std::num::NonZeroU32::new(loop_count).map_or(Loops::Forever, Loops::Count);
                    let played = match source {
                        PlaySource::Prompt(reference) => {
                            self.play_for_program(directory, call_id, &reference, loops)
                        }
                        PlaySource::Url(url) => {
                            self.fetched_for_program(call_id, FetchedAudio::Url(url), loops)
                        }
                    };
                    self.playback_started(call_id, playback, played, false, now);
                }
                Command::Say {
                    playback,
                    text,
                    voice,
                } => {
                    let speech = FetchedAudio::Speech { text, voice };
                    let said = self.fetched_for_program(call_id, speech, Loops::ONCE);
                    self.playback_started(call_id, playback, said, true, now);
                }
                Command::StopPlayback { playback } => {
                    run.playbacks.retain(|(_, p, _)| *p != playback);
                    let session = call.media;
                    self.media.stop_play(session, Side::A);
                }
                Command::Input(input) => {
                    let data = serde_json::json!({
                        "call_id": call_id.to_string(),
                        "leg_id": leg.to_string(),
                        "node": input.node,
                        "digits": input.digits,
                        "variable": input.variable,
                        "result": input.result.as_str(),
                        "attempt": input.attempt,
                        "at": crate::store::fmt_time(self.wall(now)),
                    });
                    self.emit(CallChange::Media(MediaChange::IvrInput {
                        call_id: call_id.to_string(),
                        data,
                    }));
                }
                Command::Dial {
                    dial,
                    targets,
                    ring_timeout,
                    caller_id,
                    record,
                } => {
                    run.dialing = Some(dial);
                    call.ring_timeout = ring_timeout;
                    // Recorded from the dialled party's answer (the engine starts a
                    // call's `record` when a program's dial is bridged), until the bridge
                    // ends; not when the call records from its own answer anyway.
                    run.dial_record = record && call.record.is_none();
                    if run.dial_record {
                        call.record = Some(RecordingChannels::Dual);
                    }
                    // The bridge joins two legs that voxgate's own SDP set up: a caller
                    // not answered yet is answered now (billing starts here, not when the
                    // dialled party answers as in Twilio's <Dial>).
                    if !call.answered() && self.answer_locally(layer, &leg, now).is_ok() {
                        self.listen_alone(call_id);
                    }
                    self.program_dial(layer, directory, call_id, &targets, caller_id, now);
                }
                Command::SetVariables(_) | Command::CancelDial { .. } => {}
                Command::Hangup => {
                    let answered = call.answered();
                    let ending = Ending {
                        status: if answered {
                            CallStatus::Completed
                        } else {
                            CallStatus::Canceled
                        },
                        cause: "program hangup",
                        by: HangupBy::System,
                        reply: (!answered).then_some((480, "Temporarily Unavailable")),
                    };
                    self.end_call(layer, call_id, &ending, now);
                    return;
                }
                Command::Reject(reason) => {
                    let (status, reply) = match reason {
                        voxgate_ivr::verb::RejectReason::Busy => {
                            (CallStatus::Busy, (486, "Busy Here"))
                        }
                        voxgate_ivr::verb::RejectReason::Declined => {
                            (CallStatus::Failed, (603, "Decline"))
                        }
                    };
                    let ending = Ending {
                        status,
                        cause: "program reject",
                        by: HangupBy::System,
                        reply: Some(reply),
                    };
                    self.end_call(layer, call_id, &ending, now);
                    return;
                }
                Command::Finished(outcome) => {
                    call.program = None;
                    if let Outcome::Failed(e) = &outcome {
                        tracing::warn!(call = %call_id, error = %e, "program failed");
                    }
                    if self.calls.contains_key(call_id) {
                        let cause = match outcome {
                            Outcome::Failed(_) => "program failed",
                            _ => "program finished",
                        };
                        let ending = Ending {
                            status: CallStatus::Completed,
                            cause,
                            by: HangupBy::System,
                            reply: Some((480, "Temporarily Unavailable")),
                        };
                        self.end_call(layer, call_id, &ending, now);
                    }
                    return;
                }
                Command::HttpRequest {
                    request,
                    url,
                    variables,
                } => {
                    let body = self.program_request_body(call_id, &variables);
                    self.output
                        .push_back(super::Output::ProgramRequest(ProgramRequest {
                            call: call_id.clone(),
                            request,
                            url,
                            body,
                        }));
                }
                Command::StartRecording { beep, .. } => {
                    // The program keeps the time and the finish key; the engine records
                    // the caller (mono: what the caller says).
                    let session = call.media;
                    let codec = call.sdp[0].media.as_ref().and_then(audio_codec);
                    if let (true, Some((pt, codec))) = (beep, codec) {
                        self.media.beep(session, Side::A, codec, pt);
                    }
                    let started = self.start_recording(call_id, RecordingChannels::Mono, now);
                    if let Err(e) = &started {
                        tracing::warn!(call = %call_id, error = ?e, "program: record not started");
                    }
                    if let Some(run) = self.calls.get_mut(call_id).and_then(|c| c.program.as_mut())
                    {
                        run.recording = started.ok();
                    }
                }
                Command::StopRecording => {
                    let recording = run.recording.take().unwrap_or_default();
                    if !recording.is_empty() {
                        let _ = self.recording(call_id, RecordingAction::Stop, now);
                    }
                    if let Some(run) = self.calls.get_mut(call_id).and_then(|c| c.program.as_mut())
                    {
                        run.program
                            .handle_event(Event::RecordFinished { recording }, now);
                    }
                }
                Command::Enqueue { .. } => {
                    let verb = "enqueue";
                    tracing::warn!(call = %call_id, verb, "program: {verb} {UNSUPPORTED}; ending the call");
                    let cause = format!("program: {verb} {UNSUPPORTED}");
                    let answered = call.answered();
                    let ending = Ending {
                        status: if answered {
                            CallStatus::Completed
                        } else {
                            CallStatus::Failed
                        },
                        cause: &cause,
                        by: HangupBy::System,
                        reply: Some((480, "Temporarily Unavailable")),
                    };
                    self.end_call(layer, call_id, &ending, now);
                    return;
                }
            }
        }
        // Its next timer, on its channel's slot in the engine's timer heap.
        if let Some(leg) = self
            .calls
            .get(call_id)
            .and_then(|c| c.program.as_ref())
            .map(|r| r.leg.clone())
        {
            self.arm(&leg);
        }
    }

    /// The reply to a program's request (see [`crate::calls::fetch`]).
    pub fn on_program_reply(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        reply: ProgramReply,
        now: Instant,
    ) {
        let Some(run) = self
            .calls
            .get_mut(&reply.call)
            .and_then(|c| c.program.as_mut())
        else {
            return;
        };
        run.program.handle_event(
            Event::HttpReply {
                request: reply.request,
                result: reply.result,
            },
            now,
        );
        self.drive_program(layer, directory, &reply.call, now);
    }

    /// What a program's request tells the operator's app (docs/call-programs.md): the
    /// call as the API shows its fields, and the program's variables.
    fn program_request_body(
        &self,
        call_id: &CallId,
        variables: &voxgate_ivr::Variables,
    ) -> serde_json::Value {
        let invite = self
            .calls
            .get(call_id)
            .and_then(|c| c.channels.first())
            .and_then(|l| self.channels.get(l))
            .and_then(|c| c.uas())
            .map(|u| &u.invite);
        serde_json::json!({
            "call_id": call_id.to_string(),
            "direction": "inbound",
            "from": invite.map(|i| i.from().uri.to_owned()),
            "to": invite.map(|i| i.to().uri.to_owned()),
            "variables": variables,
        })
    }

    /// Rings every registered phone of the agents among `targets` at once with voxgate's
    /// own offer (the caller's codec first: no transcoding when the phone has it), or,
    /// with no agent among them, the first number through its trunk (the call's
    /// `ring_timeout` is the dial's); the outcome reaches the program through
    /// [`Self::program_dial_failed`] or [`Self::program_dial_answered`].
    fn program_dial(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        call_id: &CallId,
        targets: &[DialTarget],
        caller_id: Option<String>,
        now: Instant,
    ) {
        let ip = host(self.cfg.public_ip);
        let mut forks = Vec::new();
        let mut agents = Vec::new();
        // The To of the INVITEs: the first agent's address of record, else the first URI.
        let mut to = None;
        let mut number = None;
        for target in targets {
            match target {
                DialTarget::Agent { agent } => {
                    if let Route::Agent { party, targets, .. } = directory.agent(agent) {
                        forks.extend(targets.iter().map(Fork::from));
                        to.get_or_insert(format!("sip:{}@{ip}", party.username));
                        agents.push(party.agent);
                    }
                }
                DialTarget::Number { number: n, trunk } => {
                    number.get_or_insert((n.clone(), trunk.clone()));
                }
                DialTarget::Sip { uri } => match sip_target(uri) {
                    Ok(t) => {
                        forks.push(Fork::from(&t));
                        to.get_or_insert(uri.clone());
                    }
                    Err(why) => {
                        tracing::warn!(call = %call_id, uri, "program: not dialled: {why}");
                    }
                },
            }
        }
        if let (None, Some((n, trunk))) = (&to, number) {
            let caller_id = caller_id.as_deref();
            return self.program_dial_number(layer, directory, call_id, &n, trunk, caller_id, now);
        }
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let codecs: Vec<Codec> = call.sdp[0]
            .media
            .as_ref()
            .map(|m| m.send.iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default();
        let offer = create_offer(&self.cfg.sdp, &codecs, &mut call.sdp[1]);
        let (Some(to), Ok((offer, pending))) = (to, offer) else {
            // Nobody to ring (offline, unknown, a URI not dialled) or nothing to offer.
            return self.program_dial_failed(call_id, DialOutcome::Failed, now);
        };
        for agent in &agents {
            if !call.agents.contains(agent) {
                call.agents.push(agent.clone());
                *self.active.entry(agent.clone()).or_default() += 1;
            }
        }
        let caller = call
            .channels
            .first()
            .and_then(|l| self.channels.get(l))
            .and_then(|c| c.uas())
            .map(|u| u.invite.from().uri.to_owned())
            .unwrap_or_else(|| format!("sip:voxgate@{ip}"));
        let parties = Parties {
            from: caller,
            to,
            agent: agents.first().cloned(),
        };
        let origin = call.channels.first().cloned();
        // The caller hears ringback until the agent answers (fork_answered stops it).
        super::start_ringback(self.media.as_mut(), call, self.rng.random());
        self.dial(
            layer,
            call_id,
            origin.as_ref(),
            &parties,
            forks,
            Side::B,
            &offer,
            DialOffer::Own(pending),
            now,
        );
    }

    /// Dials `number` out through `trunk` (the routing default when `None`), showing
    /// `caller_id` (else the trunk's own), with voxgate's own offer in the caller's codec
    /// first; paced by the trunk's limits like every call out.
    #[allow(clippy::too_many_arguments)]
    fn program_dial_number(
        &mut self,
        layer: &mut TransactionLayer,
        directory: &mut dyn Directory,
        call_id: &CallId,
        number: &str,
        trunk: Option<String>,
        caller_id: Option<&str>,
        now: Instant,
    ) {
        let d = match directory.dial_out(trunk.as_deref().unwrap_or(""), number, caller_id) {
            Ok(d) if !d.targets.is_empty() => d,
            Ok(_) => {
                tracing::warn!(call = %call_id, number, "program: the trunk has no address now");
                return self.program_dial_failed(call_id, DialOutcome::Failed, now);
            }
            Err(e) => {
                tracing::warn!(call = %call_id, number, error = %e, "program: number not dialled");
                return self.program_dial_failed(call_id, DialOutcome::Failed, now);
            }
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let codecs: Vec<Codec> = call.sdp[0]
            .media
            .as_ref()
            .map(|m| m.send.iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default();
        let Ok((offer, pending)) = create_offer(&self.cfg.sdp, &codecs, &mut call.sdp[1]) else {
            return self.program_dial_failed(call_id, DialOutcome::Failed, now);
        };
        call.rate = d.rate.clone();
        let origin = call.channels.first().cloned();
        let trunk = d.trunk_id.clone();
        let limits = d.limits;
        let (parties, forks) = super::trunk_fork(d, &host(self.cfg.public_ip));
        super::start_ringback(self.media.as_mut(), call, self.rng.random());
        let held = HeldDial {
            call: call_id.clone(),
            origin,
            parties,
            forks,
            side: Side::B,
            sdp: offer,
            offer: DialOffer::Own(pending),
            has_slot: false,
        };
        self.send_trunk_dial(layer, &trunk, limits, held, now);
    }

    /// A `play` (or, `speech`, a `say`) the program asked for started with media tag
    /// `tag`: its end is waited for; or did not start: the program moves on at once (a
    /// failed `say` does not stop a call, as a failed TwiML `<Say>` does not).
    fn playback_started(
        &mut self,
        call_id: &CallId,
        playback: PlaybackId,
        tag: Option<u64>,
        speech: bool,
        now: Instant,
    ) {
        let Some(run) = self.calls.get_mut(call_id).and_then(|c| c.program.as_mut()) else {
            return;
        };
        match (tag, speech) {
            (Some(tag), _) => run.playbacks.push((tag, playback, speech)),
            (None, false) => run
                .program
                .handle_event(Event::PlaybackFinished { playback }, now),
            (None, true) => run
                .program
                .handle_event(Event::SpeechFinished { playback }, now),
        }
    }

    /// Plays prompt `reference` into side A for the program; the media tag to wait for,
    /// or `None` when it cannot start.
    fn play_for_program(
        &mut self,
        directory: &mut dyn Directory,
        call_id: &CallId,
        reference: &str,
        loops: Loops,
    ) -> Option<u64> {
        let Some(prompt) = directory.prompt(reference) else {
            tracing::warn!(call = %call_id, prompt = reference, "program: no such prompt");
            return None;
        };
        let call = self.calls.get(call_id)?;
        let (payload_type, codec) = call.sdp[0].media.as_ref().and_then(audio_codec)?;
        self.next_tag += 1;
        let tag = self.next_tag;
        let play = PromptPlay {
            prompt,
            codec,
            payload_type,
            loops,
            tag: Some(tag),
        };
        self.media.play(call.media, Side::A, play).then_some(tag)
    }

    /// Plays fetched audio (`say`'s speech, a `play` URL's file) into side A for the
    /// program; the media tag to wait for, or `None` when it cannot start (no codec).
    /// A fetch that fails is reported as the playback's end (failed), and the program
    /// goes on.
    fn fetched_for_program(
        &mut self,
        call_id: &CallId,
        audio: FetchedAudio,
        loops: Loops,
    ) -> Option<u64> {
        let call = self.calls.get(call_id)?;
        let (payload_type, codec) = call.sdp[0].media.as_ref().and_then(audio_codec)?;
        self.next_tag += 1;
        let tag = self.next_tag;
        let say = SpeechPlay {
            audio,
            loops,
            codec,
            payload_type,
            tag,
        };
        let said = self.media.say(call.media, Side::A, say).then_some(tag);
        if said.is_none() {
            tracing::warn!(call = %call_id, "program: fetched audio not started");
        }
        said
    }

    /// The caller's channel is answered and alone: listen to it (digits for `gather`),
    /// its packets numbered as it sends them (nothing relays them on).
    fn listen_alone(&mut self, call_id: &CallId) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let Some(m) = call.sdp[0].media.as_ref() else {
            return;
        };
        let session = call.media;
        let config = listen_config(&m.recv);
        self.media.listen(session, Side::A, config);
        self.media.need_digits(session);
    }
}

/// Where to send the INVITE for a `dial` to a SIP URI: `sip:` with an IP address (IPv4,
/// or IPv6 in brackets), its port (5060 if absent) and `transport` parameter (`udp`, the
/// default, or `tcp`). Host names are not dialled: resolving them (RFC 3263) happens off
/// the engine, for trunks only so far.
fn sip_target(uri: &str) -> Result<crate::calls::env::Target, String> {
    use voxgate_sip::message::SipUri;
    use voxgate_sip::transaction::{Peer, Transport};
    let u = SipUri::parse(uri).map_err(|_| "not a SIP URI".to_owned())?;
    if u.is_sips() {
        return Err("sips: URIs are not dialled yet".to_owned());
    }
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("{host} is a host name; only IP addresses are dialled yet"))?;
    let transport = match u.param("transport").map(str::to_ascii_lowercase).as_deref() {
        None | Some("udp") => Transport::Udp,
        Some("tcp") => Transport::Tcp,
        Some(other) => return Err(format!("transport {other} is not dialled")),
    };
    Ok(crate::calls::env::Target {
        uri: uri.to_owned(),
        peer: Peer {
            transport,
            addr: std::net::SocketAddr::new(ip, u.port.unwrap_or(5060)),
            conn: None,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::sip_target;
    use voxgate_sip::transaction::Transport;

    #[test]
    fn sip_uri_targets_are_ip_addresses_with_their_port_and_transport() {
        let t = sip_target("sip:2001@192.0.2.7").unwrap();
        assert_eq!(t.peer.addr, "192.0.2.7:5060".parse().unwrap());
        assert_eq!(t.peer.transport, Transport::Udp);
        let t = sip_target("sip:2001@[2001:db8::1]:5080;transport=TCP").unwrap();
        assert_eq!(t.peer.addr, "[2001:db8::1]:5080".parse().unwrap());
        assert_eq!(t.peer.transport, Transport::Tcp);
        assert_eq!(t.uri, "sip:2001@[2001:db8::1]:5080;transport=TCP");
        for bad in [
            "sip:2001@pbx.example.com",
            "sips:2001@192.0.2.7",
            "sip:2001@192.0.2.7;transport=sctp",
            "tel:+14155550100",
        ] {
            assert!(sip_target(bad).is_err(), "{bad}");
        }
    }
}
