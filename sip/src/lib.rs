//! voxgate-sip: sans-IO SIP for voxgate.
//!
//! Nothing here opens a socket, spawns a task or reads the clock: callers hand in bytes and
//! `now`, and take back bytes to send, timers to arm and events for the transaction user.
//! See DESIGN.md ("The shape") for the split between this crate and the drivers in `src/`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod dialog;
pub mod framing;
pub mod message;
pub mod sdp;
pub mod transaction;

pub use message::{
    CSeq, Contacts, HeaderName, Message, MessageBuilder, Method, NameAddr, ParseError, SipUri, Via,
};
