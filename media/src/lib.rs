//! Sans-IO media: RTP/RTCP wire views, symmetric-RTP latching, SSRC/sequence/timestamp
//! rewriting and the per-leg relay policy; audio played into a leg ([`player`]); the
//! decode side of a leg: jitter buffer ([`jitter`]), codecs ([`codec`]) and resampling
//! ([`resample`]). No sockets, threads or clocks here: the driver in the `voxgate` crate
//! (`src/media/`) passes `now` in and does the I/O.
//!
//! The hot path is allocation-free: [`rtp::RtpPacket`] borrows the receive buffer, and
//! [`relay::LegPolicy::route_rtp`] rewrites it in place.
#![forbid(unsafe_code)]

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod latch;
pub mod listen;
pub mod mixer;
pub mod player;
pub mod prompt;
pub mod recorder;
pub mod relay;
pub mod resample;
pub mod rewrite;
pub mod rtcp;
pub mod rtp;
pub mod tone;
pub mod transcode;
pub mod wav;

pub use codec::{Codec, CodecError, Decoder, Encoder, SampleRate};
pub use jitter::{Incoming, JitterBuffer, JitterConfig, JitterStats, Playout, Pushed};
pub use latch::{Latch, LatchMode, LatchVerdict};
pub use player::{Loops, Player, Source, SourceKind, Transmit};
pub use relay::{route, DropReason, LegPolicy, LegRemote, MediaDirection, Port, Route};
pub use resample::{ResampleError, Resampler};
pub use rewrite::{ClockRate, PtMap, Rewriter, SteadyRewrite};
pub use rtcp::{is_rtcp, RtcpCompound, RtcpError};
pub use rtp::{RtpError, RtpPacket, RtpTimestamp, SeqNo, Ssrc};
