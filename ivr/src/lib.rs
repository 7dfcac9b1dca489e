//! Call programs (SPEC §6), sans-IO: the verb model ([`verb`]), the interpreter that runs
//! it on a call leg ([`program::Program`]), and IVR flows that compile onto it ([`flow`]).
//! The call engine in `src/calls/` drives a [`Program`] with events and the clock and
//! carries out its commands; nothing here does I/O or reads the clock.
//! docs/call-programs.md is the operator's reference (and the TwiML / Plivo XML mapping).
#![forbid(unsafe_code)]

pub mod flow;
pub mod program;
pub mod verb;

pub use flow::{Catalog, Flow, FlowCheck, FlowError, FlowErrorKind, FlowErrors, Node};
pub use program::{
    Blocks, Command, Config, DialId, DialOutcome, Digit, Event, HttpError, Input, InputResult,
    Outcome, PlaybackId, Program, ProgramError, ReplyError, RequestId,
};
pub use verb::{parse_verbs, validate, Variables, Verb, VerbError, VerbErrorKind, VerbPath, Verbs};
