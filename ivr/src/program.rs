//! The verb interpreter: one [`Program`] per call leg, sans-IO in the shape of quinn-proto's
//! `Connection` and str0m's `Rtc`.
//!
//! The engine feeds it [`Event`]s (a digit, a playback that finished, a dial's outcome, an
//! HTTP reply, the caller hanging up) through [`Program::handle_event`] and the clock through
//! [`Program::handle_timeout`], asks [`Program::poll_timeout`] when to call next, and drains
//! [`Program::poll_command`] after each call. The program never reads the clock, opens a
//! socket or spawns anything, so a whole IVR call runs in a test on a virtual clock.
//!
//! ```text
//!             start(now)
//!                 │
//!                 ▼
//!   ┌──────── Running ◄───────────────────────────────┐  runs verbs until one waits
//!   │   (answer, set, goto: no wait)                  │
//!   ▼                                                 │
//!  Playing / Pausing / Gathering / Recording /        │  wait for an event or the timer
//!  Dialing → Bridged / Queued / AwaitingReply ────────┘
//!   │
//!   ▼
//!  Done  (Finished: completed, caller hung up, rejected, or a typed failure)
//! ```
//!
//! Bounded work: at most [`Config::max_steps`] verbs run per call into the program (a `set`
//! and `goto` loop that never waits fails with [`ProgramError::TooManySteps`]), and at most
//! [`Config::max_redirects`] redirects follow each other without the caller being waited on
//! in between ([`ProgramError::RedirectLoop`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::verb::{
    self, limits, parse_verbs, Dial, DialStrategy, DialTarget, Gather, GatherPrompt, PlaySource,
    Record, RejectReason, Variables, Verb, VerbError, Verbs,
};

/// One playback (a `play` or a `say`) the program started, so a late "finished" for a
/// playback it already stopped is told apart from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaybackId(pub u64);

/// One dial attempt (a `dial` verb, or one target of a sequential one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialId(pub u64);

/// One HTTP request (a `redirect`), matched with its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A DTMF key (RFC 4733 §3.2 events 0-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(char);

impl Digit {
    /// `0`-`9`, `*`, `#`, `A`-`D`; anything else is not a key.
    pub fn new(c: char) -> Option<Digit> {
        verb::is_dtmf_key(c).then_some(Digit(c))
    }

    /// RFC 4733 §3.2 table 1: events 0-9 are the digits, 10 `*`, 11 `#`, 12-15 `A`-`D`.
    pub fn from_event(code: u8) -> Option<Digit> {
        let c = match code {
            0..=9 => char::from(b'0' + code),
            10 => '*',
            11 => '#',
            12..=15 => char::from(b'A' + (code - 12)),
            _ => return None,
        };
        Some(Digit(c))
    }

    pub fn as_char(self) -> char {
        self.0
    }
}

/// How a dial attempt ended (the call's SPEC §4 statuses for a leg that did not bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// A target answered and is bridged to the caller.
    Answered,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl DialOutcome {
    /// The `dial_status` variable's value (SPEC §4 call statuses).
    pub fn as_str(self) -> &'static str {
        match self {
            DialOutcome::Answered => "in-progress",
            DialOutcome::Busy => "busy",
            DialOutcome::NoAnswer => "no-answer",
            DialOutcome::Failed => "failed",
            DialOutcome::Canceled => "canceled",
        }
    }
}

/// Why an HTTP request got no usable reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HttpError {
    #[error("timed out")]
    Timeout,
    #[error("could not connect")]
    Unreachable,
    #[error("HTTP status {0}")]
    Status(u16),
}

/// What the engine tells the program.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A DTMF key from the caller (RFC 4733 or SIP INFO, as the engine detects it).
    Digit(Digit),
    /// A `play` finished (all its loops) or was stopped.
    PlaybackFinished {
        playback: PlaybackId,
    },
    /// A `say` finished (or the speech service failed: the program moves on either way).
    SpeechFinished {
        playback: PlaybackId,
    },
    DialOutcome {
        dial: DialId,
        outcome: DialOutcome,
    },
    /// The bridge a `dial` or an `enqueue` made ended from the other side.
    BridgeEnded,
    /// The reply to [`Command::HttpRequest`]: a 2xx body, or why there is none.
    HttpReply {
        request: RequestId,
        result: Result<Vec<u8>, HttpError>,
    },
    /// A recording stopped and was stored.
    RecordFinished {
        recording: String,
    },
    /// The caller hung up: the program ends without further commands.
    CallerHungUp,
}

/// What an input attempt came to (the `result` of `ivr.input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputResult {
    /// One of the gather's `options`.
    Matched,
    /// Any input, for a gather without `options`.
    Accepted,
    /// Not one of the `options`.
    Invalid,
    /// Nothing (timeout, or the finish key alone).
    NoInput,
}

impl InputResult {
    pub fn as_str(self) -> &'static str {
        match self {
            InputResult::Matched => "matched",
            InputResult::Accepted => "accepted",
            InputResult::Invalid => "invalid",
            InputResult::NoInput => "no_input",
        }
    }
}

/// One input attempt, reported once (SPEC §5 `ivr.input`); serialised, it is the event's
/// `data` apart from the call's own fields the engine adds:
/// `{"node": "menu", "digits": "2", "variable": null, "result": "matched", "attempt": 0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    /// The flow node (block) the gather ran in; `None` for a plain verb list.
    pub node: Option<String>,
    pub digits: String,
    /// The variable the digits were stored into (accepted or matched input only).
    pub variable: Option<String>,
    pub result: InputResult,
    /// 0 for the first attempt, then one more per retry.
    pub attempt: u32,
}

/// What the program asks the engine to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Answer the caller's channel (voxgate's own SDP answer).
    Answer,
    Play {
        playback: PlaybackId,
        source: PlaySource,
        /// 0: repeat until stopped.
        loop_count: u32,
    },
    Say {
        playback: PlaybackId,
        text: String,
        voice: Option<String>,
    },
    /// Stop a playback now (barge-in); no `PlaybackFinished` is needed for it.
    StopPlayback {
        playback: PlaybackId,
    },
    StartRecording {
        beep: bool,
        max_length: Duration,
    },
    /// Stop the recording; the engine answers with [`Event::RecordFinished`].
    StopRecording,
    Dial {
        dial: DialId,
        targets: Vec<DialTarget>,
        ring_timeout: Duration,
        caller_id: Option<String>,
        record: bool,
    },
    /// Stop ringing (the program was replaced while a dial rang).
    CancelDial {
        dial: DialId,
    },
    Enqueue {
        queue: String,
    },
    /// POST the call and these variables to `url`; answer with [`Event::HttpReply`].
    HttpRequest {
        request: RequestId,
        url: String,
        variables: Variables,
    },
    /// Variables that changed (for the call's record).
    SetVariables(Variables),
    /// Fire `ivr.input` and store it in the call's record.
    Input(Input),
    Hangup,
    Reject(RejectReason),
    /// The program ended; nothing follows.
    Finished(Outcome),
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran out of verbs or ran `hangup`.
    Completed,
    CallerHungUp,
    Rejected,
    Failed(ProgramError),
}

/// Why a program failed while running.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProgramError {
    #[error("more than {max} verbs ran without waiting for the caller")]
    TooManySteps { max: u32 },
    #[error("more than {max} redirects in a row without waiting for the caller")]
    RedirectLoop { max: u32 },
    #[error("redirect to {url}: {error}")]
    RedirectFailed { url: String, error: HttpError },
    #[error("redirect to {url}: the reply is not a program: {error}")]
    BadReply { url: String, error: ReplyError },
    #[error("`reject` after the call was answered")]
    RejectAfterAnswer,
    #[error("no block named {node:?}")]
    UnknownNode { node: String },
}

/// Why an HTTP reply is not a program.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("body larger than {max} bytes")]
    TooLarge { max: usize },
    #[error(transparent)]
    Verbs(#[from] VerbError),
}

/// Bounds on one program's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Verbs run per call into the program before it fails.
    pub max_steps: u32,
    /// Redirects in a row (no wait on the caller between them) before it fails.
    pub max_redirects: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_steps: 1000,
            max_redirects: 10,
        }
    }
}

/// A gather in progress.
#[derive(Debug)]
struct GatherRun {
    spec: Gather,
    /// The next prompt to start.
    next_prompt: usize,
    playing: Option<PlaybackId>,
    /// A `pause` between prompts runs until then.
    pause_until: Option<Instant>,
    digits: String,
    /// Set once the prompts are done (or interrupted): input ends then.
    deadline: Option<Instant>,
    attempt: u32,
}

#[derive(Debug)]
struct DialRun {
    spec: Dial,
    dial: DialId,
    /// The next target of a sequential dial.
    next_target: usize,
}

/// Where the program is.
#[derive(Debug)]
enum State {
    NotStarted,
    /// Running verbs; only seen inside [`Program::run`].
    Running,
    Playing {
        playback: PlaybackId,
    },
    Pausing {
        until: Instant,
    },
    Gathering(Box<GatherRun>),
    Recording {
        spec: Record,
        stop_at: Instant,
        stopping: bool,
    },
    Dialing(Box<DialRun>),
    /// A dial answered; waiting for its bridge to end.
    Bridged(Box<Dial>),
    Queued,
    AwaitingReply {
        request: RequestId,
        url: String,
    },
    Done,
}

/// Named, validated verb lists (an IVR flow's nodes) and the one to start at, built once
/// and shared by every call that runs them.
#[derive(Debug, Clone)]
pub struct Blocks {
    start: String,
    map: Arc<BTreeMap<String, Arc<[Verb]>>>,
}

impl Blocks {
    /// Validates every block; a `goto` to a missing block, or a `start` that names none,
    /// is an error.
    pub fn new(blocks: BTreeMap<String, Verbs>, start: &str) -> Result<Blocks, VerbError> {
        let exists = |name: &str| blocks.contains_key(name);
        for (name, verbs) in &blocks {
            verb::validate_at(verbs, verb::VerbPath::block(name), &exists)?;
        }
        if !blocks.contains_key(start) {
            return Err(VerbError {
                at: verb::VerbPath::block(start),
                kind: verb::VerbErrorKind::UnknownNode {
                    node: start.to_owned(),
                },
            });
        }
        let map = blocks.into_iter().map(|(k, v)| (k, v.into())).collect();
        Ok(Blocks {
            start: start.to_owned(),
            map: Arc::new(map),
        })
    }

    pub fn start(&self) -> &str {
        &self.start
    }
}

/// A running call program. See the module docs.
pub struct Program {
    blocks: Arc<BTreeMap<String, Arc<[Verb]>>>,
    /// The block `list` came from (the flow node reported with inputs).
    block: Option<String>,
    list: Arc<[Verb]>,
    /// The next verb of `list`.
    pc: usize,
    state: State,
    vars: Variables,
    answered: bool,
    config: Config,
    steps: u32,
    redirects: u32,
    next_id: u64,
    /// A webhook-driven program: when a reply's verbs run out, the app is asked again.
    webhook: Option<String>,
    commands: VecDeque<Command>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("block", &self.block)
            .field("pc", &self.pc)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// A program of `verbs` with initial variables; validated here (no `goto` targets).
    pub fn new(verbs: Verbs, vars: Variables) -> Result<Program, VerbError> {
        verb::validate(&verbs, &|_| false)?;
        Ok(Program::build(None, verbs.into(), vars))
    }

    /// A program of named blocks (an IVR flow's nodes) that starts at the blocks' start;
    /// `goto` jumps between them. Cheap: the blocks are shared, not copied.
    pub fn with_blocks(blocks: &Blocks, vars: Variables) -> Program {
        let list = blocks
            .map
            .get(&blocks.start)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let mut p = Program::build(Some(blocks.start.clone()), list, vars);
        p.blocks = Arc::clone(&blocks.map);
        p
    }

    /// A webhook-driven program (a number routed to `webhook`): POST to `url`, run the
    /// reply's verbs, and when they run out POST again with the variables they left (the
    /// gathered digits, `dial_status`, a recording's id), until a reply hangs up. Replies
    /// that wait for nothing are caught by [`Config::max_redirects`].
    pub fn webhook(url: &str, vars: Variables) -> Result<Program, VerbError> {
        let first = vec![Verb::Redirect(verb::Redirect {
            url: url.to_owned(),
        })];
        verb::validate(&first, &|_| false)?;
        let mut p = Program::build(None, first.into(), vars);
        p.webhook = Some(url.to_owned());
        Ok(p)
    }

    fn build(block: Option<String>, list: Arc<[Verb]>, vars: Variables) -> Program {
        Program {
            blocks: Arc::default(),
            block,
            list,
            pc: 0,
            state: State::NotStarted,
            vars,
            answered: false,
            config: Config::default(),
            steps: 0,
            redirects: 0,
            next_id: 0,
            webhook: None,
            commands: VecDeque::new(),
        }
    }

    /// Replaces the default bounds.
    #[must_use]
    pub fn with_config(mut self, config: Config) -> Program {
        self.config = config;
        self
    }

    /// The call was answered before the program started (an outbound leg, a transfer).
    #[must_use]
    pub fn already_answered(mut self) -> Program {
        self.answered = true;
        self
    }

    /// Runs the first verbs, up to the first that waits.
    pub fn start(&mut self, now: Instant) {
        if matches!(self.state, State::NotStarted) {
            self.steps = 0;
            self.state = State::Running;
            self.run(now);
        }
    }

    /// Replaces the rest of the program with `verbs` (a queue's overflow route, a transfer
    /// through the API). What the program was doing stops first. The engine has already
    /// taken the caller out of a queue or bridge it replaces the program from.
    pub fn replace(&mut self, verbs: Verbs, now: Instant) -> Result<(), VerbError> {
        let blocks = &self.blocks;
        verb::validate(&verbs, &|name| blocks.contains_key(name))?;
        if matches!(self.state, State::Done) {
            return Ok(());
        }
        self.stop_current();
        self.steps = 0;
        self.jump(verbs);
        self.run(now);
        Ok(())
    }

    /// The next command for the engine.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Program::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Pausing { until } => Some(*until),
            State::Gathering(g) => g.pause_until.or(g.deadline),
            State::Recording {
                stop_at,
                stopping: false,
                ..
            } => Some(*stop_at),
            _ => None,
        }
    }

    /// Whether the program has ended ([`Command::Finished`] was queued).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn variables(&self) -> &Variables {
        &self.vars
    }

    /// The block (flow node) running now.
    pub fn node(&self) -> Option<&str> {
        self.block.as_deref()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.steps = 0;
        match &mut self.state {
            State::Pausing { until } if *until <= now => {
                self.redirects = 0;
                self.state = State::Running;
                self.run(now);
            }
            State::Gathering(g) if g.pause_until.is_some_and(|t| t <= now) => {
                g.pause_until = None;
                self.next_prompt(now);
            }
            State::Gathering(g) if g.deadline.is_some_and(|d| d <= now) => {
                self.end_attempt(now);
            }
            State::Recording {
                stop_at, stopping, ..
            } if !*stopping && *stop_at <= now => {
                *stopping = true;
                self.commands.push_back(Command::StopRecording);
            }
            _ => {}
        }
    }

    pub fn handle_event(&mut self, event: Event, now: Instant) {
        self.steps = 0;
        if matches!(self.state, State::Done | State::NotStarted) {
            return;
        }
        match event {
            Event::CallerHungUp => {
                // The engine tears the call down itself (it cancels dials, stops media).
                self.state = State::Done;
                self.commands
                    .push_back(Command::Finished(Outcome::CallerHungUp));
            }
            Event::Digit(d) => self.on_digit(d, now),
            Event::PlaybackFinished { playback } | Event::SpeechFinished { playback } => {
                self.on_playback_finished(playback, now);
            }
            Event::DialOutcome { dial, outcome } => self.on_dial_outcome(dial, outcome, now),
            Event::BridgeEnded => match std::mem::replace(&mut self.state, State::Running) {
                State::Bridged(spec) => {
                    self.redirects = 0;
                    self.set_var("dial_status", "completed");
                    self.branch_or_continue(spec.on_answered, now);
                }
                State::Queued => {
                    self.redirects = 0;
                    self.run(now);
                }
                other => self.state = other,
            },
            Event::HttpReply { request, result } => self.on_reply(request, result, now),
            Event::RecordFinished { recording } => {
                match std::mem::replace(&mut self.state, State::Running) {
                    State::Recording { spec, .. } => {
                        self.redirects = 0;
                        if let Some(name) = spec.variable {
                            self.set_var(&name, &recording);
                        }
                        self.run(now);
                    }
                    other => self.state = other,
                }
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn set_var(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_owned(), value.to_owned());
        self.commands
            .push_back(Command::SetVariables(Variables::from([(
                name.to_owned(),
                value.to_owned(),
            )])));
    }

    fn finish(&mut self, outcome: Outcome, hangup: bool) {
        if hangup {
            self.commands.push_back(Command::Hangup);
        }
        self.commands.push_back(Command::Finished(outcome));
        self.state = State::Done;
    }

    fn fail(&mut self, error: ProgramError) {
        self.finish(Outcome::Failed(error), true);
    }

    /// The rest of the current list is replaced by `verbs`.
    fn jump(&mut self, verbs: Verbs) {
        self.list = verbs.into();
        self.pc = 0;
        self.state = State::Running;
    }

    fn branch_or_continue(&mut self, branch: Option<Verbs>, now: Instant) {
        match branch {
            Some(verbs) => self.jump(verbs),
            None => self.state = State::Running,
        }
        self.run(now);
    }

    /// Stops what the current verb started (for [`Program::replace`]).
    fn stop_current(&mut self) {
        match &self.state {
            State::Playing { playback } => {
                let playback = *playback;
                self.commands.push_back(Command::StopPlayback { playback });
            }
            State::Gathering(g) => {
                if let Some(playback) = g.playing {
                    self.commands.push_back(Command::StopPlayback { playback });
                }
            }
            State::Recording {
                stopping: false, ..
            } => self.commands.push_back(Command::StopRecording),
            State::Dialing(d) => {
                let dial = d.dial;
                self.commands.push_back(Command::CancelDial { dial });
            }
            _ => {}
        }
    }

    /// Runs verbs until one waits or the program ends.
    fn run(&mut self, now: Instant) {
        while matches!(self.state, State::Running) {
            if self.steps >= self.config.max_steps {
                self.fail(ProgramError::TooManySteps {
                    max: self.config.max_steps,
                });
                return;
            }
            self.steps += 1;
            let list = Arc::clone(&self.list);
            let Some(verb) = list.get(self.pc) else {
                match self.webhook.clone() {
                    Some(url) => self.exec(&Verb::Redirect(verb::Redirect { url }), now),
                    None => self.finish(Outcome::Completed, true),
                }
                continue;
            };
            self.pc += 1;
            self.exec(verb, now);
        }
    }

    fn answer(&mut self) {
        if !self.answered {
            self.answered = true;
            self.commands.push_back(Command::Answer);
        }
    }

    fn exec(&mut self, verb: &Verb, now: Instant) {
        if verb.needs_answer() {
            self.answer();
        }
        match verb {
            Verb::Answer(_) => self.answer(),
            Verb::Play(p) => {
                // Validated: exactly one source. A program built around validation still
                // must not panic, so a sourceless play is skipped.
                if let Some(source) = p.source() {
                    let playback = PlaybackId(self.id());
                    self.commands.push_back(Command::Play {
                        playback,
                        source,
                        loop_count: p.loop_count,
                    });
                    self.state = State::Playing { playback };
                }
            }
            Verb::Say(s) => {
                let playback = PlaybackId(self.id());
                self.commands.push_back(Command::Say {
                    playback,
                    text: s.text.clone(),
                    voice: s.voice.clone(),
                });
                self.state = State::Playing { playback };
            }
            Verb::Pause(p) => {
                self.state = State::Pausing {
                    until: now + Duration::from_secs(p.seconds.into()),
                };
            }
            Verb::Gather(g) => self.start_attempt(g.clone(), 0, now),
            Verb::Record(r) => {
                let max_length = Duration::from_secs(r.max_length_seconds.into());
                self.commands.push_back(Command::StartRecording {
                    beep: r.beep,
                    max_length,
                });
                self.state = State::Recording {
                    spec: r.clone(),
                    stop_at: now + max_length,
                    stopping: false,
                };
            }
            Verb::Dial(d) => {
                let run = DialRun {
                    spec: d.clone(),
                    dial: DialId(0),
                    next_target: 0,
                };
                self.dial_next(Box::new(run));
            }
            Verb::Enqueue(q) => {
                self.commands.push_back(Command::Enqueue {
                    queue: q.queue.clone(),
                });
                self.state = State::Queued;
            }
            Verb::Redirect(r) => {
                self.redirects += 1;
                if self.redirects > self.config.max_redirects {
                    self.fail(ProgramError::RedirectLoop {
                        max: self.config.max_redirects,
                    });
                    return;
                }
                let request = RequestId(self.id());
                self.commands.push_back(Command::HttpRequest {
                    request,
                    url: r.url.clone(),
                    variables: self.vars.clone(),
                });
                self.state = State::AwaitingReply {
                    request,
                    url: r.url.clone(),
                };
            }
            Verb::Set(s) => {
                self.vars
                    .extend(s.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
                self.commands
                    .push_back(Command::SetVariables(s.variables.clone()));
            }
            Verb::Goto(g) => match self.blocks.get(&g.node) {
                Some(list) => {
                    self.list = Arc::clone(list);
                    self.pc = 0;
                    self.block = Some(g.node.clone());
                }
                None => self.fail(ProgramError::UnknownNode {
                    node: g.node.clone(),
                }),
            },
            Verb::Hangup(_) => self.finish(Outcome::Completed, true),
            Verb::Reject(r) => {
                if self.answered {
                    self.fail(ProgramError::RejectAfterAnswer);
                } else {
                    self.commands.push_back(Command::Reject(r.reason));
                    self.finish(Outcome::Rejected, false);
                }
            }
            // Validation refuses the seams; a program that skipped it moves on.
            Verb::Stream(_) | Verb::Conference(_) => {}
        }
    }

    // ---- gather ----

    fn start_attempt(&mut self, spec: Gather, attempt: u32, now: Instant) {
        let run = GatherRun {
            spec,
            next_prompt: 0,
            playing: None,
            pause_until: None,
            digits: String::new(),
            deadline: None,
            attempt,
        };
        self.state = State::Gathering(Box::new(run));
        self.next_prompt(now);
    }

    /// Starts the gather's next prompt, or the input timer once they are all played.
    fn next_prompt(&mut self, now: Instant) {
        let State::Gathering(g) = &mut self.state else {
            return;
        };
        let Some(prompt) = g.spec.prompts.get(g.next_prompt) else {
            g.playing = None;
            g.deadline = Some(now + Duration::from_secs(g.spec.timeout_seconds.into()));
            return;
        };
        g.next_prompt += 1;
        if let GatherPrompt::Pause(p) = prompt {
            g.playing = None;
            g.pause_until = Some(now + Duration::from_secs(p.seconds.into()));
            return;
        }
        self.next_id += 1;
        let playback = PlaybackId(self.next_id);
        g.playing = Some(playback);
        let command = match prompt {
            GatherPrompt::Pause(_) => None,
            GatherPrompt::Play(p) => p.source().map(|source| Command::Play {
                playback,
                source,
                loop_count: p.loop_count,
            }),
            GatherPrompt::Say(s) => Some(Command::Say {
                playback,
                text: s.text.clone(),
                voice: s.voice.clone(),
            }),
        };
        match command {
            Some(command) => self.commands.push_back(command),
            // Validation makes this unreachable; skip a sourceless prompt rather than stall.
            None => self.next_prompt(now),
        }
    }

    fn on_digit(&mut self, digit: Digit, now: Instant) {
        match &mut self.state {
            State::Gathering(g) => {
                // Barge-in: the prompt stops before anything else happens, and the prompts
                // after it are skipped.
                if let Some(playback) = g.playing.take() {
                    self.commands.push_back(Command::StopPlayback { playback });
                    g.next_prompt = g.spec.prompts.len();
                }
                if g.pause_until.take().is_some() {
                    g.next_prompt = g.spec.prompts.len();
                }
                let c = digit.as_char();
                if g.spec.finish_key() == Some(c) {
                    return self.end_attempt(now);
                }
                g.digits.push(c);
                let full = g
                    .spec
                    .max_digits
                    .is_some_and(|n| g.digits.chars().count() >= n as usize);
                if full {
                    return self.end_attempt(now);
                }
                // The timeout runs again from each digit (TwiML's inter-digit timeout).
                g.deadline = Some(now + Duration::from_secs(g.spec.timeout_seconds.into()));
            }
            State::Recording { spec, stopping, .. }
                if !*stopping && spec.finish_on_key.contains(digit.as_char()) =>
            {
                *stopping = true;
                self.commands.push_back(Command::StopRecording);
            }
            // Digits while nothing gathers are dropped: no type-ahead buffer.
            _ => {}
        }
    }

    /// Ends an input attempt: report it, then branch, retry, or move on.
    fn end_attempt(&mut self, now: Instant) {
        let State::Gathering(g) = std::mem::replace(&mut self.state, State::Running) else {
            return;
        };
        let mut g = *g;
        if let Some(playback) = g.playing.take() {
            self.commands.push_back(Command::StopPlayback { playback });
        }
        self.redirects = 0;
        let digits = std::mem::take(&mut g.digits);
        let result = if digits.is_empty() {
            InputResult::NoInput
        } else if g.spec.options.is_empty() {
            InputResult::Accepted
        } else if g.spec.options.contains_key(&digits) {
            InputResult::Matched
        } else {
            InputResult::Invalid
        };
        let stored = matches!(result, InputResult::Matched | InputResult::Accepted);
        let variable = g.spec.variable.clone().filter(|_| stored);
        if let Some(name) = &variable {
            self.set_var(name, &digits);
        }
        self.commands.push_back(Command::Input(Input {
            node: self.block.clone(),
            digits: digits.clone(),
            variable,
            result,
            attempt: g.attempt,
        }));
        let spec = g.spec;
        match result {
            InputResult::Matched => {
                let branch = spec.options.get(&digits).cloned();
                self.branch_or_continue(branch, now);
            }
            InputResult::Accepted => self.branch_or_continue(spec.next, now),
            InputResult::Invalid | InputResult::NoInput => {
                if g.attempt < spec.max_retries {
                    self.start_attempt(spec, g.attempt + 1, now);
                } else if result == InputResult::Invalid {
                    self.branch_or_continue(spec.on_invalid, now);
                } else {
                    self.branch_or_continue(spec.on_timeout, now);
                }
            }
        }
    }

    fn on_playback_finished(&mut self, finished: PlaybackId, now: Instant) {
        match &mut self.state {
            State::Playing { playback } if *playback == finished => {
                self.redirects = 0;
                self.state = State::Running;
                self.run(now);
            }
            State::Gathering(g) if g.playing == Some(finished) => {
                self.redirects = 0;
                self.next_prompt(now);
            }
            // A playback already stopped (barge-in) or replaced.
            _ => {}
        }
    }

    // ---- dial ----

    /// Rings the next target (sequential) or all of them (simultaneous).
    fn dial_next(&mut self, mut run: Box<DialRun>) {
        let targets = match run.spec.strategy {
            DialStrategy::Simultaneous => {
                run.next_target = run.spec.targets.len();
                run.spec.targets.clone()
            }
            DialStrategy::Sequential => {
                let Some(t) = run.spec.targets.get(run.next_target) else {
                    return;
                };
                run.next_target += 1;
                vec![t.clone()]
            }
        };
        run.dial = DialId(self.id());
        self.commands.push_back(Command::Dial {
            dial: run.dial,
            targets,
            ring_timeout: Duration::from_secs(run.spec.ring_timeout_seconds.into()),
            caller_id: run.spec.caller_id.clone(),
            record: run.spec.record,
        });
        self.state = State::Dialing(run);
    }

    fn on_dial_outcome(&mut self, dial: DialId, outcome: DialOutcome, now: Instant) {
        let run = match std::mem::replace(&mut self.state, State::Running) {
            State::Dialing(run) if run.dial == dial => run,
            other => {
                // A late outcome of an attempt already done with.
                self.state = other;
                return;
            }
        };
        self.redirects = 0;
        self.set_var("dial_status", outcome.as_str());
        let more = run.next_target < run.spec.targets.len();
        match outcome {
            DialOutcome::Answered => self.state = State::Bridged(Box::new(run.spec)),
            DialOutcome::Busy | DialOutcome::NoAnswer | DialOutcome::Failed if more => {
                self.dial_next(run);
            }
            DialOutcome::Busy => self.branch_or_continue(run.spec.on_busy, now),
            DialOutcome::NoAnswer => self.branch_or_continue(run.spec.on_no_answer, now),
            DialOutcome::Failed | DialOutcome::Canceled => {
                self.branch_or_continue(run.spec.on_failed, now);
            }
        }
    }

    // ---- redirect ----

    fn on_reply(&mut self, request: RequestId, result: Result<Vec<u8>, HttpError>, now: Instant) {
        let url = match std::mem::replace(&mut self.state, State::Running) {
            State::AwaitingReply { request: r, url } if r == request => url,
            other => {
                self.state = other;
                return;
            }
        };
        let body = match result {
            Ok(body) => body,
            Err(error) => return self.fail(ProgramError::RedirectFailed { url, error }),
        };
        if body.len() > limits::MAX_REPLY {
            let error = ReplyError::TooLarge {
                max: limits::MAX_REPLY,
            };
            return self.fail(ProgramError::BadReply { url, error });
        }
        let blocks = &self.blocks;
        let verbs = parse_verbs(&body)
            .and_then(|v| verb::validate(&v, &|name| blocks.contains_key(name)).map(|()| v));
        match verbs {
            Ok(verbs) => {
                self.jump(verbs);
                self.run(now);
            }
            Err(e) => self.fail(ProgramError::BadReply {
                url,
                error: ReplyError::Verbs(e),
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
