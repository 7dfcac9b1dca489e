//! Sans-IO media: RTP/RTCP wire views, symmetric-RTP latching, SSRC/sequence/timestamp
//! rewriting and the per-leg relay policy. No sockets, threads or clocks here: the
//! driver in the `voxgate` crate (`src/media/`) passes `now` in and does the I/O.
//!
//! The hot path is allocation-free: [`rtp::RtpPacket`] borrows the receive buffer, and
//! [`relay::LegPolicy::route_rtp`] rewrites it in place.
#![forbid(unsafe_code)]

pub mod latch;
pub mod relay;
pub mod rewrite;
pub mod rtcp;
pub mod rtp;
pub mod tone;

pub use latch::{Latch, LatchMode, LatchVerdict};
pub use relay::{route, DropReason, LegPolicy, LegRemote, MediaDirection, Port, Route};
pub use rewrite::{ClockRate, PtMap, Rewriter, SteadyRewrite};
pub use rtcp::{is_rtcp, RtcpCompound, RtcpError};
pub use rtp::{RtpError, RtpPacket, RtpTimestamp, SeqNo, Ssrc};
