//! The verb model (SPEC §6): a call program is a JSON list of verbs, written the way jambonz
//! apps write theirs (`[{"verb": "say", "text": "…"}, {"verb": "gather", …}]`), with the
//! field names of our API (snake_case, units in the name: `timeout_seconds`).
//!
//! Parsing ([`parse_verbs`]) and validation ([`validate`]) are separate: serde checks the
//! shape (unknown fields and unknown verbs are rejected), [`validate`] checks the values and
//! names the verb by its path (`verbs[2].options.1[0]`), so the API can answer 422 naming the
//! field and an HTTP reply that is not a program fails with a typed error.
//!
//! Branches ("what runs next") are verb lists themselves: a gather's `options`, `on_invalid`,
//! `on_timeout`, a dial's `on_busy`… Taking a branch replaces the rest of the current list
//! (as a TwiML `action` replaces the document); a branch of one `goto` jumps to a named block
//! (an IVR flow's node), one `redirect` asks the operator's app for the next verbs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A program's variables: what `set`, `gather` and `record` store, and what a `redirect`
/// posts. Values are strings, as DTMF digits and recording ids are.
pub type Variables = BTreeMap<String, String>;

/// A list of verbs run in order.
pub type Verbs = Vec<Verb>;

/// One verb. `#[serde(tag = "verb")]`: `{"verb": "play", "prompt": "welcome"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Verb {
    Answer(Answer),
    Play(Play),
    Say(Say),
    Pause(Pause),
    Gather(Gather),
    Record(Record),
    Dial(Dial),
    Enqueue(Enqueue),
    Redirect(Redirect),
    Set(Set),
    /// Jump to a named block (an IVR flow's node): the rest of the current list is dropped.
    Goto(Goto),
    Hangup(Hangup),
    Reject(Reject),
    /// Seam: live audio to a WebSocket (later). Parsed so the shape is fixed now;
    /// [`validate`] answers [`VerbErrorKind::NotYetSupported`] until the engine runs it.
    Stream(Stream),
    /// Seam: join a named conference (later); see [`Verb::Stream`].
    Conference(Conference),
}

impl Verb {
    /// The verb's name as written in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Answer(_) => "answer",
            Verb::Play(_) => "play",
            Verb::Say(_) => "say",
            Verb::Pause(_) => "pause",
            Verb::Gather(_) => "gather",
            Verb::Record(_) => "record",
            Verb::Dial(_) => "dial",
            Verb::Enqueue(_) => "enqueue",
            Verb::Redirect(_) => "redirect",
            Verb::Set(_) => "set",
            Verb::Goto(_) => "goto",
            Verb::Hangup(_) => "hangup",
            Verb::Reject(_) => "reject",
            Verb::Stream(_) => "stream",
            Verb::Conference(_) => "conference",
        }
    }

    /// Whether running this verb needs the call answered first (media verbs answer it
    /// implicitly, as TwiML and jambonz do).
    pub(crate) fn needs_answer(&self) -> bool {
        matches!(
            self,
            Verb::Play(_) | Verb::Say(_) | Verb::Pause(_) | Verb::Gather(_) | Verb::Record(_)
        )
    }
}

/// Answer the call (200 OK with voxgate's own SDP answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {}

/// Play a prompt (by id or unique name) or an http(s) URL (fetched once, decoded, cached).
/// Exactly one of `prompt` and `url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Play {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Times to play; 0 repeats until something stops it (hold music). Default 1.
    #[serde(default = "one", rename = "loop")]
    pub loop_count: u32,
}

impl Play {
    /// What to play, once validated (exactly one source).
    pub fn source(&self) -> Option<PlaySource> {
        match (&self.prompt, &self.url) {
            (Some(p), None) => Some(PlaySource::Prompt(p.clone())),
            (None, Some(u)) => Some(PlaySource::Url(u.clone())),
            _ => None,
        }
    }
}

/// Where a `play` verb's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlaySource {
    /// A prompt's id (`prm_…`) or unique name (SPEC §4).
    Prompt(String),
    /// An http(s) URL.
    Url(String),
}

/// Speak text through the `[tts]` service (OpenAI-compatible `POST /v1/audio/speech`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    pub text: String,
    /// The service's voice; the config's `[tts] voice` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
}

/// Silence for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    #[serde(default = "one")]
    pub seconds: u32,
}

/// A prompt nested in a `gather`: played until the first digit (barge-in). A `pause`
/// between prompts is silence the first digit ends too (TwiML nests `<Pause>` there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum GatherPrompt {
    Play(Play),
    Say(Say),
    Pause(Pause),
}

/// Collect DTMF digits (RFC 4733 events, as the media layer reports them).
///
/// Input ends when `max_digits` are in, on `finish_on_key` (not stored), or
/// `timeout_seconds` after the prompts finished or after the last digit. With `options`
/// the input must be one of their keys, else it is invalid; an invalid input or no input
/// replays the prompts up to `max_retries` times, then runs `on_invalid` / `on_timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gather {
    /// At most this many digits; absent: until the finish key or the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_digits: Option<u32>,
    /// One DTMF key that ends input, `""` for none. Default `#`.
    #[serde(default = "hash_key")]
    pub finish_on_key: String,
    /// Seconds of silence after the prompts (and between digits) that end input. Default 5.
    #[serde(default = "five")]
    pub timeout_seconds: u32,
    /// Prompts played in order; the first digit stops them (barge-in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<GatherPrompt>,
    /// The variable the digits are stored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// Accepted inputs and what each runs (a menu). Empty: any input is accepted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, Verbs>,
    /// How many times the prompts are replayed after an invalid input or no input.
    #[serde(default)]
    pub max_retries: u32,
    /// Runs after the last invalid input; absent: the verb after the gather.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_invalid: Option<Verbs>,
    /// Runs after the last attempt with no input; absent: the verb after the gather.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<Verbs>,
    /// Runs after an accepted input when there are no `options` (TwiML's `action`);
    /// absent: the verb after the gather.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Verbs>,
}

impl Gather {
    /// The finish key, once validated.
    pub fn finish_key(&self) -> Option<char> {
        self.finish_on_key.chars().next()
    }
}

/// Record the caller (voicemail) into a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The recording stops after this long. Default 120.
    #[serde(default = "two_minutes")]
    pub max_length_seconds: u32,
    /// Keys that stop the recording (any of them), `""` for none. Default `#`.
    #[serde(default = "hash_key")]
    pub finish_on_key: String,
    /// A beep before recording starts. Default true.
    #[serde(default = "yes")]
    pub beep: bool,
    /// The variable the recording's id is stored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
}

/// Ring one or more targets and bridge the first that answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dial {
    pub targets: Vec<DialTarget>,
    #[serde(default)]
    pub strategy: DialStrategy,
    /// Per target for `sequential`, for all of them for `simultaneous`. Default 30.
    #[serde(default = "thirty")]
    pub ring_timeout_seconds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Record the bridged call.
    #[serde(default)]
    pub record: bool,
    /// After the bridge ends (the callee hung up); absent: the verb after the dial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_answered: Option<Verbs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_busy: Option<Verbs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_no_answer: Option<Verbs>,
    /// Also taken for `canceled` while the program still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failed: Option<Verbs>,
}

/// Who a `dial` rings. `{"type": "agent", "agent": "alice"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DialTarget {
    /// An agent's registered contacts (id or username).
    Agent { agent: String },
    /// A number through a trunk (the number's own trunk or the routing default if absent).
    Number {
        number: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trunk: Option<String>,
    },
    /// A SIP URI, dialled directly.
    Sip { uri: String },
}

/// How a `dial` with several targets rings them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialStrategy {
    /// All at once; the first answer wins, the others are cancelled.
    #[default]
    Simultaneous,
    /// One after another, each for `ring_timeout_seconds`, until one answers.
    Sequential,
}

/// Put the caller in a queue (ACD). The program resumes after the bridge with an agent
/// ends, or when the engine replaces the program (overflow route, transfer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enqueue {
    pub queue: String,
}

/// POST the call and its variables to `url`; the JSON reply (a list of verbs) replaces the
/// rest of the program (jambonz's webhook model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub url: String,
}

/// Set variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Set {
    pub variables: Variables,
}

/// Jump to a named block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goto {
    pub node: String,
}

/// End the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hangup {}

/// Refuse the call before answering it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    #[serde(default)]
    pub reason: RejectReason,
}

/// Why a call is refused: the SIP final response the engine sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// 486 Busy Here (RFC 3261 §21.4.24).
    Busy,
    /// 603 Decline (RFC 3261 §21.6.2).
    #[default]
    Declined,
}

/// Seam for live audio to a WebSocket (later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub url: String,
}

/// Seam for conferences (later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conference {
    pub name: String,
}

fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}
fn thirty() -> u32 {
    30
}
fn two_minutes() -> u32 {
    120
}
fn yes() -> bool {
    true
}
fn hash_key() -> String {
    "#".to_owned()
}

/// Bounds on what a program may contain, so a reply from an operator's app cannot make us
/// hold or walk an unbounded structure.
pub mod limits {
    /// Verbs in one list.
    pub const MAX_VERBS: usize = 256;
    /// Branches inside branches (serde_json's own recursion limit is 128).
    pub const MAX_DEPTH: usize = 8;
    /// `say` text, URLs, names and variable values, in bytes.
    pub const MAX_TEXT: usize = 4096;
    pub const MAX_NAME: usize = 128;
    pub const MAX_DIGITS: u32 = 64;
    pub const MAX_GATHER_TIMEOUT: u32 = 120;
    pub const MAX_PAUSE: u32 = 600;
    pub const MAX_RECORD: u32 = 4 * 3600;
    pub const MAX_RING: u32 = 600;
    pub const MAX_RETRIES: u32 = 10;
    pub const MAX_TARGETS: usize = 32;
    pub const MAX_VARIABLES: usize = 256;
    /// An HTTP reply body that is a program, in bytes.
    pub const MAX_REPLY: usize = 1 << 20;
}

/// Where in a program an error is: `verbs[2].options.1[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbPath(String);

impl VerbPath {
    fn root() -> VerbPath {
        VerbPath("verbs".to_owned())
    }

    /// The verbs of a named block (an IVR flow's node).
    pub fn block(name: &str) -> VerbPath {
        VerbPath(format!("nodes.{name}"))
    }

    fn index(&self, i: usize) -> VerbPath {
        VerbPath(format!("{}[{i}]", self.0))
    }

    fn field(&self, f: &str) -> VerbPath {
        VerbPath(format!("{}.{f}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VerbPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A program that is not valid: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{at}: {kind}")]
pub struct VerbError {
    pub at: VerbPath,
    pub kind: VerbErrorKind,
}

/// What is wrong with a verb.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerbErrorKind {
    #[error("not a JSON list of verbs")]
    NotAList,
    /// serde's own message: an unknown verb or field, a missing field, a wrong type.
    #[error("{0}")]
    Parse(String),
    #[error("`{field}` is {got}, must be {min}..={max}")]
    OutOfRange {
        field: &'static str,
        got: u64,
        min: u64,
        max: u64,
    },
    #[error("`{field}` must not be empty")]
    Empty { field: &'static str },
    #[error("`{field}` is longer than {max}")]
    TooLong { field: &'static str, max: usize },
    #[error("`{field}` must be an http or https URL")]
    BadUrl { field: &'static str },
    #[error("`{field}` has {got:?}, not DTMF keys (0-9, *, #, A-D)")]
    BadKey { field: &'static str, got: String },
    #[error("`{field}` must be one key or empty")]
    OneKey { field: &'static str },
    #[error("`{field}` must be an E.164 number such as +14155550100, got {got:?}")]
    NotE164 { field: &'static str, got: String },
    #[error("exactly one of `prompt` and `url` is needed")]
    PlaySource,
    #[error("option {key:?} is not a string of DTMF keys without the finish key")]
    BadOption { key: String },
    #[error("option {key:?} is longer than `max_digits`")]
    OptionTooLong { key: String },
    #[error("variable name {name:?} must be 1..=128 of [A-Za-z0-9_.-]")]
    BadVariable { name: String },
    #[error("`reject` after the call was answered")]
    RejectAfterAnswer,
    #[error("no node or block named {node:?}")]
    UnknownNode { node: String },
    #[error("more than {max} verbs in one list")]
    TooManyVerbs { max: usize },
    #[error("branches nested deeper than {max}")]
    TooDeep { max: usize },
    #[error("`{verb}` is not supported yet")]
    NotYetSupported { verb: &'static str },
}

/// Parses a JSON list of verbs, naming the verb that does not parse.
pub fn parse_verbs(json: &[u8]) -> Result<Verbs, VerbError> {
    let root = VerbPath::root();
    let items: Vec<serde_json::Value> = serde_json::from_slice(json).map_err(|e| VerbError {
        at: root.clone(),
        kind: if e.is_data() {
            VerbErrorKind::NotAList
        } else {
            VerbErrorKind::Parse(e.to_string())
        },
    })?;
    parse_values(items, &root)
}

/// Parses already-decoded JSON values (as the API's extractor hands them over).
pub fn parse_values(items: Vec<serde_json::Value>, at: &VerbPath) -> Result<Verbs, VerbError> {
    if items.len() > limits::MAX_VERBS {
        return Err(VerbError {
            at: at.clone(),
            kind: VerbErrorKind::TooManyVerbs {
                max: limits::MAX_VERBS,
            },
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| VerbError {
                at: at.index(i),
                kind: VerbErrorKind::Parse(e.to_string()),
            })
        })
        .collect()
}

/// Validates a program's values. `blocks` says which `goto` targets exist.
pub fn validate(verbs: &[Verb], blocks: &dyn Fn(&str) -> bool) -> Result<(), VerbError> {
    validate_at(verbs, VerbPath::root(), blocks)
}

/// [`validate`], with errors located under `at`.
pub fn validate_at(
    verbs: &[Verb],
    at: VerbPath,
    blocks: &dyn Fn(&str) -> bool,
) -> Result<(), VerbError> {
    Validator { blocks }.list(verbs, &at, 0, false)
}

struct Validator<'a> {
    blocks: &'a dyn Fn(&str) -> bool,
}

fn err<T>(at: &VerbPath, kind: VerbErrorKind) -> Result<T, VerbError> {
    Err(VerbError {
        at: at.clone(),
        kind,
    })
}

fn range(
    at: &VerbPath,
    field: &'static str,
    got: u32,
    min: u32,
    max: u32,
) -> Result<(), VerbError> {
    if got < min || got > max {
        return err(
            at,
            VerbErrorKind::OutOfRange {
                field,
                got: got.into(),
                min: min.into(),
                max: max.into(),
            },
        );
    }
    Ok(())
}

fn text(at: &VerbPath, field: &'static str, s: &str, max: usize) -> Result<(), VerbError> {
    if s.trim().is_empty() {
        return err(at, VerbErrorKind::Empty { field });
    }
    if s.len() > max {
        return err(at, VerbErrorKind::TooLong { field, max });
    }
    Ok(())
}

fn url(at: &VerbPath, field: &'static str, s: &str) -> Result<(), VerbError> {
    text(at, field, s, limits::MAX_TEXT)?;
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return err(at, VerbErrorKind::BadUrl { field });
    };
    // A host must follow the scheme; whitespace never belongs in a URL.
    if rest.is_empty() || rest.starts_with('/') || s.chars().any(char::is_whitespace) {
        return err(at, VerbErrorKind::BadUrl { field });
    }
    Ok(())
}

/// E.164 as the API takes it: `+`, then 8 to 15 digits, the first not 0 (a trunk's
/// `number_format` rewrites it for the carrier).
pub fn is_e164(v: &str) -> bool {
    let digits = v.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn e164(at: &VerbPath, field: &'static str, v: &str) -> Result<(), VerbError> {
    if !is_e164(v) {
        return err(
            at,
            VerbErrorKind::NotE164 {
                field,
                got: v.to_owned(),
            },
        );
    }
    Ok(())
}

/// RFC 4733 §3.2 events 0-15: the sixteen DTMF keys.
pub fn is_dtmf_key(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

fn keys(at: &VerbPath, field: &'static str, s: &str) -> Result<(), VerbError> {
    if !s.chars().all(is_dtmf_key) {
        return err(
            at,
            VerbErrorKind::BadKey {
                field,
                got: s.to_owned(),
            },
        );
    }
    Ok(())
}

/// Variable names: short, and safe as form fields and JSON keys in a redirect's body.
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn variable(at: &VerbPath, name: &str) -> Result<(), VerbError> {
    if !is_variable_name(name) {
        return err(
            at,
            VerbErrorKind::BadVariable {
                name: name.to_owned(),
            },
        );
    }
    Ok(())
}

impl Validator<'_> {
    /// `answered`: whether an earlier verb of this list has surely answered the call.
    fn list(
        &self,
        verbs: &[Verb],
        at: &VerbPath,
        depth: usize,
        mut answered: bool,
    ) -> Result<(), VerbError> {
        if depth > limits::MAX_DEPTH {
            return err(
                at,
                VerbErrorKind::TooDeep {
                    max: limits::MAX_DEPTH,
                },
            );
        }
        if verbs.len() > limits::MAX_VERBS {
            return err(
                at,
                VerbErrorKind::TooManyVerbs {
                    max: limits::MAX_VERBS,
                },
            );
        }
        for (i, verb) in verbs.iter().enumerate() {
            let at = at.index(i);
            self.verb(verb, &at, depth, answered)?;
            answered |= verb.needs_answer() || matches!(verb, Verb::Answer(_));
        }
        Ok(())
    }

    fn branch(
        &self,
        verbs: &Option<Verbs>,
        at: &VerbPath,
        field: &str,
        depth: usize,
    ) -> Result<(), VerbError> {
        match verbs {
            Some(v) => self.list(v, &at.field(field), depth + 1, true),
            None => Ok(()),
        }
    }

    fn play(&self, p: &Play, at: &VerbPath) -> Result<(), VerbError> {
        match (&p.prompt, &p.url) {
            (Some(name), None) => text(at, "prompt", name, limits::MAX_NAME),
            (None, Some(u)) => url(at, "url", u),
            _ => err(at, VerbErrorKind::PlaySource),
        }
    }

    fn say(&self, s: &Say, at: &VerbPath) -> Result<(), VerbError> {
        text(at, "text", &s.text, limits::MAX_TEXT)?;
        if let Some(v) = &s.voice {
            text(at, "voice", v, limits::MAX_NAME)?;
        }
        Ok(())
    }

    fn verb(
        &self,
        verb: &Verb,
        at: &VerbPath,
        depth: usize,
        answered: bool,
    ) -> Result<(), VerbError> {
        match verb {
            Verb::Answer(_) | Verb::Hangup(_) => Ok(()),
            Verb::Play(p) => self.play(p, at),
            Verb::Say(s) => self.say(s, at),
            Verb::Pause(p) => range(at, "seconds", p.seconds, 1, limits::MAX_PAUSE),
            Verb::Gather(g) => self.gather(g, at, depth),
            Verb::Record(r) => {
                range(
                    at,
                    "max_length_seconds",
                    r.max_length_seconds,
                    1,
                    limits::MAX_RECORD,
                )?;
                keys(at, "finish_on_key", &r.finish_on_key)?;
                if let Some(v) = &r.variable {
                    variable(at, v)?;
                }
                Ok(())
            }
            Verb::Dial(d) => self.dial(d, at, depth),
            Verb::Enqueue(q) => text(at, "queue", &q.queue, limits::MAX_NAME),
            Verb::Redirect(r) => url(at, "url", &r.url),
            Verb::Set(s) => {
                if s.variables.len() > limits::MAX_VARIABLES {
                    return err(
                        at,
                        VerbErrorKind::TooLong {
                            field: "variables",
                            max: limits::MAX_VARIABLES,
                        },
                    );
                }
                for (k, v) in &s.variables {
                    variable(at, k)?;
                    if v.len() > limits::MAX_TEXT {
                        return err(
                            at,
                            VerbErrorKind::TooLong {
                                field: "variables",
                                max: limits::MAX_TEXT,
                            },
                        );
                    }
                }
                Ok(())
            }
            Verb::Goto(g) => {
                if (self.blocks)(&g.node) {
                    Ok(())
                } else {
                    err(
                        at,
                        VerbErrorKind::UnknownNode {
                            node: g.node.clone(),
                        },
                    )
                }
            }
            Verb::Reject(_) if answered => err(at, VerbErrorKind::RejectAfterAnswer),
            Verb::Reject(_) => Ok(()),
            Verb::Stream(_) => err(at, VerbErrorKind::NotYetSupported { verb: "stream" }),
            Verb::Conference(_) => err(at, VerbErrorKind::NotYetSupported { verb: "conference" }),
        }
    }

    fn gather(&self, g: &Gather, at: &VerbPath, depth: usize) -> Result<(), VerbError> {
        if let Some(n) = g.max_digits {
            range(at, "max_digits", n, 1, limits::MAX_DIGITS)?;
        }
        keys(at, "finish_on_key", &g.finish_on_key)?;
        if g.finish_on_key.chars().count() > 1 {
            return err(
                at,
                VerbErrorKind::OneKey {
                    field: "finish_on_key",
                },
            );
        }
        range(
            at,
            "timeout_seconds",
            g.timeout_seconds,
            1,
            limits::MAX_GATHER_TIMEOUT,
        )?;
        range(at, "max_retries", g.max_retries, 0, limits::MAX_RETRIES)?;
        if let Some(v) = &g.variable {
            variable(at, v)?;
        }
        let prompts = at.field("prompts");
        if g.prompts.len() > limits::MAX_VERBS {
            return err(
                &prompts,
                VerbErrorKind::TooManyVerbs {
                    max: limits::MAX_VERBS,
                },
            );
        }
        for (i, p) in g.prompts.iter().enumerate() {
            let at = prompts.index(i);
            match p {
                GatherPrompt::Play(p) => self.play(p, &at)?,
                GatherPrompt::Say(s) => self.say(s, &at)?,
                GatherPrompt::Pause(p) => range(&at, "seconds", p.seconds, 1, limits::MAX_PAUSE)?,
            }
        }
        let finish = g.finish_key();
        for (key, verbs) in &g.options {
            let bad = key.is_empty()
                || !key.chars().all(is_dtmf_key)
                || finish.is_some_and(|f| key.contains(f));
            if bad {
                return err(at, VerbErrorKind::BadOption { key: key.clone() });
            }
            if g.max_digits
                .is_some_and(|n| key.chars().count() > n as usize)
            {
                return err(at, VerbErrorKind::OptionTooLong { key: key.clone() });
            }
            self.list(verbs, &at.field("options").field(key), depth + 1, true)?;
        }
        self.branch(&g.on_invalid, at, "on_invalid", depth)?;
        self.branch(&g.on_timeout, at, "on_timeout", depth)?;
        self.branch(&g.next, at, "next", depth)
    }

    fn dial(&self, d: &Dial, at: &VerbPath, depth: usize) -> Result<(), VerbError> {
        if d.targets.is_empty() {
            return err(at, VerbErrorKind::Empty { field: "targets" });
        }
        if d.targets.len() > limits::MAX_TARGETS {
            return err(
                at,
                VerbErrorKind::TooLong {
                    field: "targets",
                    max: limits::MAX_TARGETS,
                },
            );
        }
        for (i, t) in d.targets.iter().enumerate() {
            let at = at.field("targets").index(i);
            match t {
                DialTarget::Agent { agent } => text(&at, "agent", agent, limits::MAX_NAME)?,
                DialTarget::Number { number, trunk } => {
                    e164(&at, "number", number)?;
                    if let Some(t) = trunk {
                        text(&at, "trunk", t, limits::MAX_NAME)?;
                    }
                }
                DialTarget::Sip { uri } => {
                    text(&at, "uri", uri, limits::MAX_TEXT)?;
                    let lower = uri.get(..5).unwrap_or("").to_ascii_lowercase();
                    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
                        return err(&at, VerbErrorKind::BadUrl { field: "uri" });
                    }
                }
            }
        }
        range(
            at,
            "ring_timeout_seconds",
            d.ring_timeout_seconds,
            1,
            limits::MAX_RING,
        )?;
        if let Some(c) = &d.caller_id {
            e164(at, "caller_id", c)?;
        }
        self.branch(&d.on_answered, at, "on_answered", depth)?;
        self.branch(&d.on_busy, at, "on_busy", depth)?;
        self.branch(&d.on_no_answer, at, "on_no_answer", depth)?;
        self.branch(&d.on_failed, at, "on_failed", depth)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn no_blocks(_: &str) -> bool {
        false
    }

    fn parse(json: &str) -> Result<Verbs, VerbError> {
        let verbs = parse_verbs(json.as_bytes())?;
        validate(&verbs, &no_blocks)?;
        Ok(verbs)
    }

    #[test]
    fn parses_every_verb_with_defaults() {
        let verbs = parse(
            r##"[
            {"verb": "answer"},
            {"verb": "play", "prompt": "welcome"},
            {"verb": "play", "url": "https://example.com/a.wav", "loop": 0},
            {"verb": "say", "text": "Hello", "voice": "alloy"},
            {"verb": "pause", "seconds": 2},
            {"verb": "gather", "max_digits": 4, "prompts": [{"verb": "say", "text": "PIN?"}],
             "variable": "pin", "next": [{"verb": "redirect", "url": "http://app/pin"}]},
            {"verb": "record", "beep": false},
            {"verb": "dial", "strategy": "sequential", "targets": [
                {"type": "agent", "agent": "alice"},
                {"type": "number", "number": "+15551230000", "trunk": "carrier"},
                {"type": "sip", "uri": "sip:bob@example.com"}],
             "on_no_answer": [{"verb": "hangup"}]},
            {"verb": "enqueue", "queue": "support"},
            {"verb": "set", "variables": {"lang": "en"}},
            {"verb": "hangup"}
        ]"##,
        )
        .unwrap();
        assert_eq!(verbs.len(), 11);
        let Verb::Play(p) = &verbs[2] else { panic!() };
        assert_eq!(p.loop_count, 0);
        assert_eq!(
            p.source(),
            Some(PlaySource::Url("https://example.com/a.wav".into()))
        );
        let Verb::Gather(g) = &verbs[5] else { panic!() };
        assert_eq!((g.finish_key(), g.timeout_seconds), (Some('#'), 5));
        let Verb::Record(r) = &verbs[6] else { panic!() };
        assert_eq!(
            (r.max_length_seconds, r.beep, r.finish_on_key.as_str()),
            (120, false, "#")
        );
        let Verb::Dial(d) = &verbs[7] else { panic!() };
        assert_eq!(
            (d.strategy, d.ring_timeout_seconds),
            (DialStrategy::Sequential, 30)
        );
        // Round trip: what we serialise parses back to the same program.
        let again = serde_json::to_vec(&verbs).unwrap();
        assert_eq!(parse_verbs(&again).unwrap(), verbs);
    }

    #[test]
    fn unknown_fields_and_verbs_are_rejected_with_their_index() {
        let e = parse(r#"[{"verb": "answer"}, {"verb": "play", "prompt": "x", "volume": 3}]"#)
            .unwrap_err();
        assert_eq!(e.at.as_str(), "verbs[1]");
        assert!(
            matches!(&e.kind, VerbErrorKind::Parse(m) if m.contains("volume")),
            "{e}"
        );

        let e = parse(r#"[{"verb": "dance"}]"#).unwrap_err();
        assert_eq!(e.at.as_str(), "verbs[0]");
        assert!(
            matches!(&e.kind, VerbErrorKind::Parse(m) if m.contains("dance")),
            "{e}"
        );

        let e =
            parse(r#"[{"verb": "dial", "targets": [{"type": "agent", "agent": "a", "x": 1}]}]"#)
                .unwrap_err();
        assert_eq!(e.at.as_str(), "verbs[0]");

        let e = parse(r#"{"verb": "answer"}"#).unwrap_err();
        assert_eq!((e.at.as_str(), e.kind), ("verbs", VerbErrorKind::NotAList));
    }

    #[test]
    fn values_are_checked_and_named() {
        let cases: &[(&str, &str, VerbErrorKind)] = &[
            (
                r#"[{"verb": "play"}]"#,
                "verbs[0]",
                VerbErrorKind::PlaySource,
            ),
            (
                r#"[{"verb": "play", "prompt": "a", "url": "http://x/"}]"#,
                "verbs[0]",
                VerbErrorKind::PlaySource,
            ),
            (
                r#"[{"verb": "play", "url": "ftp://x/a.wav"}]"#,
                "verbs[0]",
                VerbErrorKind::BadUrl { field: "url" },
            ),
            (
                r#"[{"verb": "gather", "max_digits": 0}]"#,
                "verbs[0]",
                VerbErrorKind::OutOfRange {
                    field: "max_digits",
                    got: 0,
                    min: 1,
                    max: 64,
                },
            ),
            (
                r#"[{"verb": "gather", "finish_on_key": "x"}]"#,
                "verbs[0]",
                VerbErrorKind::BadKey {
                    field: "finish_on_key",
                    got: "x".into(),
                },
            ),
            (
                r#"[{"verb": "gather", "finish_on_key": "*#"}]"#,
                "verbs[0]",
                VerbErrorKind::OneKey {
                    field: "finish_on_key",
                },
            ),
            (
                r##"[{"verb": "gather", "options": {"1#": []}}]"##,
                "verbs[0]",
                VerbErrorKind::BadOption { key: "1#".into() },
            ),
            (
                r#"[{"verb": "answer"}, {"verb": "gather", "options": {"1": [{"verb": "say", "text": " "}]}}]"#,
                "verbs[1].options.1[0]",
                VerbErrorKind::Empty { field: "text" },
            ),
            (
                r#"[{"verb": "gather", "prompts": [{"verb": "play", "url": "x"}]}]"#,
                "verbs[0].prompts[0]",
                VerbErrorKind::BadUrl { field: "url" },
            ),
            (
                r#"[{"verb": "dial", "targets": []}]"#,
                "verbs[0]",
                VerbErrorKind::Empty { field: "targets" },
            ),
            (
                r#"[{"verb": "dial", "targets": [{"type": "sip", "uri": "tel:+1"}]}]"#,
                "verbs[0].targets[0]",
                VerbErrorKind::BadUrl { field: "uri" },
            ),
            (
                r#"[{"verb": "dial", "targets": [{"type": "number", "number": "5551234"}]}]"#,
                "verbs[0].targets[0]",
                VerbErrorKind::NotE164 {
                    field: "number",
                    got: "5551234".into(),
                },
            ),
            (
                r#"[{"verb": "dial", "caller_id": "+0123456789",
                     "targets": [{"type": "agent", "agent": "a"}]}]"#,
                "verbs[0]",
                VerbErrorKind::NotE164 {
                    field: "caller_id",
                    got: "+0123456789".into(),
                },
            ),
            (
                r#"[{"verb": "say", "text": "hi"}, {"verb": "reject", "reason": "busy"}]"#,
                "verbs[1]",
                VerbErrorKind::RejectAfterAnswer,
            ),
            (
                r#"[{"verb": "goto", "node": "nowhere"}]"#,
                "verbs[0]",
                VerbErrorKind::UnknownNode {
                    node: "nowhere".into(),
                },
            ),
            (
                r#"[{"verb": "set", "variables": {"a b": "1"}}]"#,
                "verbs[0]",
                VerbErrorKind::BadVariable { name: "a b".into() },
            ),
            (
                r#"[{"verb": "stream", "url": "wss://x"}]"#,
                "verbs[0]",
                VerbErrorKind::NotYetSupported { verb: "stream" },
            ),
            (
                r#"[{"verb": "conference", "name": "room"}]"#,
                "verbs[0]",
                VerbErrorKind::NotYetSupported { verb: "conference" },
            ),
        ];
        for (json, at, kind) in cases {
            let e = parse(json).unwrap_err();
            assert_eq!((e.at.as_str(), &e.kind), (*at, kind), "{json}");
        }
    }

    #[test]
    fn reject_before_answer_is_fine() {
        parse(r#"[{"verb": "reject", "reason": "busy"}]"#).unwrap();
        parse(r#"[{"verb": "reject"}]"#).unwrap();
    }

    #[test]
    fn nesting_is_bounded() {
        let mut json = r#"[{"verb": "hangup"}]"#.to_owned();
        for _ in 0..=limits::MAX_DEPTH + 1 {
            json = format!(r#"[{{"verb": "gather", "next": {json}}}]"#);
        }
        let e = parse(&json).unwrap_err();
        assert_eq!(
            e.kind,
            VerbErrorKind::TooDeep {
                max: limits::MAX_DEPTH
            }
        );
    }
}
