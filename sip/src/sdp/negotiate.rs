//! RFC 3264 offer/answer for a B2BUA bridging audio between two legs.
//!
//! voxgate stands in the middle: it forwards the offer of one leg to the other with its
//! own address, ports and `o=` line, then turns the other leg's answer into the answer to
//! the first leg. Each leg keeps its own payload-type numbering; [`PtTranslation`] maps
//! between them for the relay.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use super::codec::{Codec, DYNAMIC_PT_FIRST, PT_MAX};
use super::model::{
    AddrType, Attribute, Connection, ConnectionAddress, Direction, MediaDescription, MediaType,
    Origin, PacketTime, Proto, Rtpmap, SessionDescription, Timing,
};

/// voxgate's SDP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpConfig {
    /// `o=` username (RFC 8866 §5.2: `-` when there is no user concept).
    pub username: String,
    /// `s=` line.
    pub session_name: String,
    /// Codecs voxgate relays, in preference order. Matching is by [`Codec::same_format`].
    pub codecs: Vec<Codec>,
    /// Voice codecs voxgate can decode and encode, in preference order: when an offer
    /// has one of them, the offer forwarded to the other leg adds the others after the
    /// offerer's own, and if the answerer picks only those voxgate transcodes between
    /// the two legs (SPEC §3: only when they share no codec). Empty: no transcoding.
    pub transcode: Vec<Codec>,
}

impl Default for SdpConfig {
    fn default() -> Self {
        SdpConfig {
            username: "voxgate".to_owned(),
            session_name: "voxgate".to_owned(),
            codecs: vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
            transcode: Vec::new(),
        }
    }
}

impl SdpConfig {
    fn supports(&self, codec: &Codec) -> bool {
        self.codecs.iter().any(|c| c.same_format(codec))
    }

    fn transcodes(&self, codec: &Codec) -> bool {
        self.transcode.iter().any(|c| c.same_format(codec))
    }

    /// What an offer forwarded with the offerer's `codecs` adds so that the answerer may
    /// pick a codec voxgate transcodes to: nothing unless voxgate can decode one of the
    /// offerer's voice codecs; else the transcodable voice codecs the offerer lacks, and
    /// telephone-event at their clocks if the offerer offered telephone-event at all.
    fn transcoding_extras(&self, codecs: &[(u8, Codec)]) -> Vec<Codec> {
        let has = |c: &Codec| codecs.iter().any(|(_, o)| o.same_format(c));
        let decodable = codecs
            .iter()
            .any(|(_, c)| !c.is_auxiliary() && self.transcodes(c));
        if !decodable {
            return Vec::new();
        }
        // Opus offered for transcoding asks for no more than the offerer's audio has.
        let beside = codecs
            .iter()
            .find(|(_, c)| !c.is_auxiliary() && self.transcodes(c))
            .map(|(_, c)| c);
        let mut extras: Vec<Codec> = self
            .transcode
            .iter()
            .filter(|c| !has(c))
            .map(|c| match beside.and_then(|b| opus_params_beside(c, b)) {
                Some(fmtp) => c.clone().with_fmtp(&fmtp),
                None => c.clone(),
            })
            .collect();
        if codecs.iter().any(|(_, c)| c.is_telephone_event()) {
            let mut clocks: Vec<u32> = extras.iter().map(|c| c.clock_rate).collect();
            clocks.dedup();
            for clock in clocks {
                let event = Codec {
                    clock_rate: clock,
                    ..Codec::telephone_event()
                };
                if !has(&event) && extras.iter().all(|c| !c.same_format(&event)) {
                    extras.push(event);
                }
            }
        }
        extras
    }
}

/// voxgate's own `o=` line on one leg (RFC 3264 §8: same id for the whole dialog, the
/// version goes up by one whenever the description changes, and only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    pub id: u64,
    pub version: u64,
    /// Fingerprint of the last description sent with this origin (version field zeroed).
    last: Option<u64>,
}

impl LocalSession {
    /// A new session; the first description sent carries version 1.
    pub fn new(id: u64) -> LocalSession {
        LocalSession {
            id,
            version: 1,
            last: None,
        }
    }

    /// Write this session's `o=` id and version into `sdp`, bumping the version if the
    /// description differs from the one sent last.
    pub fn stamp(&mut self, sdp: &mut SessionDescription) {
        sdp.origin.session_id = self.id;
        sdp.origin.session_version = 0;
        let mut h = DefaultHasher::new();
        sdp.to_string().hash(&mut h);
        let fingerprint = h.finish();
        if self.last.is_some_and(|f| f != fingerprint) {
            self.version = self.version.wrapping_add(1);
        }
        self.last = Some(fingerprint);
        sdp.origin.session_version = self.version;
    }
}

/// voxgate's RTP socket on one leg (RTCP on `rtp_port + 1` unless rtcp-mux is negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    pub address: IpAddr,
    pub rtp_port: u16,
}

/// Where the relay sends a leg's media before latching (RFC 3264 §5.1, RFC 3605, RFC 5761).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMedia {
    pub rtp: SocketAddr,
    /// Same as `rtp` with rtcp-mux; else `a=rtcp`, else the RTP port + 1 (RFC 3550 §11).
    pub rtcp: SocketAddr,
}

/// Payload type ↔ codec on one leg, in SDP order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PayloadMap(Vec<(u8, Codec)>);

impl PayloadMap {
    pub fn codec(&self, pt: u8) -> Option<&Codec> {
        self.0.iter().find(|(p, _)| *p == pt).map(|(_, c)| c)
    }
    /// The payload type of a codec of the same format.
    pub fn payload_type(&self, codec: &Codec) -> Option<u8> {
        self.0
            .iter()
            .find(|(_, c)| c.same_format(codec))
            .map(|(p, _)| *p)
    }
    pub fn iter(&self) -> impl Iterator<Item = (u8, &Codec)> {
        self.0.iter().map(|(p, c)| (*p, c))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Add a binding unless the number or the format is already bound (first wins).
    fn bind(&mut self, pt: u8, codec: &Codec) {
        if self.codec(pt).is_none() && self.payload_type(codec).is_none() {
            self.0.push((pt, codec.clone()));
        }
    }
}

/// The negotiated media of one leg, from a completed offer/answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegMedia {
    /// `None` while the leg asked not to receive (port 0, `c=0.0.0.0`): latch or wait.
    pub remote: Option<RemoteMedia>,
    /// The leg's own direction: [`Direction::receives`] tells whether to send to it.
    pub direction: Direction,
    /// Payload types voxgate must use when sending to this leg (its SDP's numbers).
    pub send: PayloadMap,
    /// Payload types this leg uses when sending to voxgate (voxgate's SDP's numbers).
    pub recv: PayloadMap,
    /// `a=ptime` the leg asked to receive, if any.
    pub ptime: Option<PacketTime>,
    pub rtcp_mux: bool,
}

/// Maps payload types of packets arriving from one leg to those the other leg expects
/// (e.g. telephone-event 101 on A, 96 on B). A flat table: the relay's hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtTranslation([Option<u8>; 128]);

impl PtTranslation {
    /// Translation for packets received from `from` and sent to `to`.
    pub fn new(from: &LegMedia, to: &LegMedia) -> PtTranslation {
        let mut table = [None; 128];
        for (pt, codec) in from.recv.iter() {
            if let Some(slot) = table.get_mut(usize::from(pt)) {
                *slot = to.send.payload_type(codec);
            }
        }
        PtTranslation(table)
    }
    /// The outgoing payload type, or `None` for a format the other leg did not negotiate.
    pub fn get(&self, pt: u8) -> Option<u8> {
        self.0.get(usize::from(pt)).copied().flatten()
    }
    /// Whether every negotiated payload type keeps its number (no rewrite needed).
    pub fn is_identity(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(i, t)| t.is_none_or(|pt| usize::from(pt) == i))
    }
}

/// Everything SDP-related the call engine keeps for one leg of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegSdp {
    pub session: LocalSession,
    pub local: LocalMedia,
    /// Set by a completed negotiation; replaced on every re-negotiation.
    pub media: Option<LegMedia>,
    /// Every payload-type binding used on this leg so far: RFC 3264 §8.3.2 forbids
    /// remapping a number to another codec within the session.
    bindings: PayloadMap,
}

impl LegSdp {
    pub fn new(session: LocalSession, local: LocalMedia) -> LegSdp {
        LegSdp {
            session,
            local,
            media: None,
            bindings: PayloadMap::default(),
        }
    }
}

/// Why an offer or answer cannot be bridged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// No audio `m=` line, or every audio port is 0.
    #[error("no audio stream offered")]
    NoAudio,
    /// Audio is offered only over a transport the relay does not terminate (SRTP, DTLS).
    #[error("audio offered only over unsupported transport {0}")]
    UnsupportedTransport(String),
    /// No voice codec in common (telephone-event alone is not a call).
    #[error("no common codec")]
    NoCommonCodec,
    /// Neither the media section (index) nor the session has a `c=` line.
    #[error("media section {0} has no connection address")]
    MissingConnection(usize),
    /// The media section's `c=` is a host name; sans-IO code does not resolve names.
    #[error("media section {0} has a host name as connection address")]
    HostNameConnection(usize),
    /// RFC 3264 §6: the answer must have as many `m=` lines as the offer, of the same type.
    #[error("answer media sections do not match the offer")]
    AnswerMismatch,
    /// The answerer set the audio port to 0 (RFC 3264 §6).
    #[error("answerer rejected the audio stream")]
    AudioRejected,
    #[error("no free dynamic payload type on the leg")]
    PayloadTypesExhausted,
}

impl NegotiationError {
    /// The SIP status for a failed *offer*: 488 Not Acceptable Here (RFC 3261 §21.4.26)
    /// for what we cannot support, 400 for a description missing its address. When the
    /// other leg's *answer* fails, the offerer did nothing wrong: the engine ends the other
    /// leg and answers the offerer 488 whatever this says.
    pub fn sip_status(&self) -> u16 {
        match self {
            NegotiationError::MissingConnection(_) => 400,
            _ => 488,
        }
    }
}

/// An offer forwarded to the other leg, waiting for that leg's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffer {
    /// The offer's m= lines, to echo (rejected) in the answer (RFC 3264 §6).
    lines: Vec<OfferedLine>,
    audio_index: usize,
    /// (offerer's PT, PT in our forwarded offer, codec as the offerer described it).
    codecs: Vec<(u8, u8, Codec)>,
    /// Codecs added to the forwarded offer that voxgate would transcode to, the
    /// offerer not having them: (PT in our forwarded offer, the same, codec).
    transcoded: Vec<(u8, u8, Codec)>,
    /// The offerer's direction, with `c=0.0.0.0` read as "does not receive".
    offerer_direction: Direction,
    offerer_rtcp_mux: bool,
    offerer_ptime: Option<PacketTime>,
    offerer_endpoint: Option<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OfferedLine {
    media: MediaType,
    proto: Proto,
    formats: Vec<String>,
    mid: Option<String>,
}

/// A remote RTP address and its RTCP hints, before rtcp-mux is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Endpoint {
    rtp: SocketAddr,
    rtcp_attr: Option<SocketAddr>,
}

impl Endpoint {
    fn resolve(self, mux: bool) -> RemoteMedia {
        // RFC 5761 §5.1.3: with mux, RTCP goes to the RTP port; else RFC 3605 a=rtcp, else
        // RFC 3550 §11's port + 1.
        let rtcp = if mux {
            self.rtp
        } else if let Some(attr) = self.rtcp_attr {
            attr
        } else {
            let port = self.rtp.port().checked_add(1).unwrap_or(self.rtp.port());
            SocketAddr::new(self.rtp.ip(), port)
        };
        RemoteMedia {
            rtp: self.rtp,
            rtcp,
        }
    }
}

/// Forward an offer received on one leg to the leg `to`: voxgate's address and port,
/// the audio codecs voxgate supports in the offerer's order, payload types stable on
/// `to`, ptime, direction and rtcp-mux carried. Non-audio streams are left out and
/// rejected in the answer. Returns the offer to send on `to` and the state for its answer.
///
/// On error nothing is changed (no version bump).
pub fn forward_offer(
    cfg: &SdpConfig,
    offer: &SessionDescription,
    to: &mut LegSdp,
) -> Result<(SessionDescription, PendingOffer), NegotiationError> {
    let (audio_index, codecs) = pick_audio(cfg, offer)?;
    let m = offer
        .media
        .get(audio_index)
        .ok_or(NegotiationError::NoAudio)?;

    let conn = offer
        .connection_for(m)
        .ok_or(NegotiationError::MissingConnection(audio_index))?;
    let endpoint = endpoint(m, conn, audio_index)?;
    let mut direction = offer.direction_for(m);
    if conn.is_unspecified() {
        // RFC 3264 §8.4: c=0.0.0.0 is the old way of saying "do not send to me".
        direction = Direction::from_flags(direction.sends(), false);
    }

    // Payload types on `to`: reuse earlier bindings, then static numbers, then the
    // offerer's number if free, then the lowest free dynamic one.
    let extras = cfg.transcoding_extras(&codecs);
    let mut forwarded: Vec<(u8, u8, Codec)> = Vec::with_capacity(codecs.len());
    for (pt, codec) in codecs {
        let taken: Vec<u8> = forwarded.iter().map(|(_, b, _)| *b).collect();
        let b_pt = assign_payload_type(&codec, pt, &to.bindings, &taken)
            .ok_or(NegotiationError::PayloadTypesExhausted)?;
        forwarded.push((pt, b_pt, codec));
    }
    // What voxgate would transcode to, after everything the offerer has.
    let mut transcoded: Vec<(u8, u8, Codec)> = Vec::with_capacity(extras.len());
    for codec in extras {
        let taken: Vec<u8> = forwarded
            .iter()
            .chain(&transcoded)
            .map(|(_, b, _)| *b)
            .collect();
        let wanted = codec.static_payload_type().unwrap_or(DYNAMIC_PT_FIRST);
        let b_pt = assign_payload_type(&codec, wanted, &to.bindings, &taken)
            .ok_or(NegotiationError::PayloadTypesExhausted)?;
        transcoded.push((b_pt, b_pt, codec));
    }

    // ptime, maxptime and rtcp-mux as the offerer asked (RFC 5761 §5.1.1: mux offered
    // only if the offerer offered it, so "both sides did" is decided by the answer).
    let attributes = stream_attributes(
        forwarded.iter().chain(&transcoded).map(|(_, b, c)| (*b, c)),
        m,
        m.rtcp_mux(),
        direction,
    );
    let media = audio_line(
        to.local.rtp_port,
        Proto::RtpAvp,
        forwarded.iter().chain(&transcoded).map(|(_, b, _)| *b),
        attributes,
    );
    let mut sdp = local_description(cfg, &to.local, [media]);
    to.session.stamp(&mut sdp);
    for (_, b_pt, codec) in forwarded.iter().chain(&transcoded) {
        to.bindings.bind(*b_pt, codec);
    }

    let pending = PendingOffer {
        lines: offer
            .media
            .iter()
            .map(|m| OfferedLine {
                media: m.media.clone(),
                proto: m.proto.clone(),
                formats: m.formats.clone(),
                mid: m.mid().map(str::to_owned),
            })
            .collect(),
        audio_index,
        codecs: forwarded,
        transcoded,
        offerer_direction: direction,
        offerer_rtcp_mux: m.rtcp_mux(),
        offerer_ptime: m.ptime(),
        offerer_endpoint: endpoint,
    };
    Ok((sdp, pending))
}

/// Answer an offer with voxgate's own media endpoint: voxgate answers the call itself (a
/// prompt, a menu, a channel not bridged yet). The answer carries one voice codec, the
/// offerer's first that voxgate supports (RFC 3264 §6.1 lets the answerer pick; one codec
/// spares the far end a switch mid-call), plus telephone-event at that clock if offered.
/// Records the leg's negotiated media in [`LegSdp::media`]. On error `leg` is unchanged.
///
/// voxgate's endpoint is treated as the leg the offer was forwarded to, answering with
/// exactly what it was offered: so the offer/answer rules stay in one place.
pub fn answer_offer(
    cfg: &SdpConfig,
    offer: &SessionDescription,
    leg: &mut LegSdp,
) -> Result<SessionDescription, NegotiationError> {
    let mut own = LegSdp::new(LocalSession::new(leg.session.id), leg.local);
    let (mut reply, pending) = forward_offer(cfg, offer, &mut own)?;
    let [m] = reply.media.as_mut_slice() else {
        return Err(NegotiationError::AnswerMismatch);
    };
    let voice = m
        .payload_types()
        .filter_map(|pt| Some((pt, m.codec(pt)?)))
        .find(|(_, c)| !c.is_auxiliary())
        .ok_or(NegotiationError::NoCommonCodec)?;
    let keep: Vec<u8> = m
        .payload_types()
        .filter(|&pt| {
            pt == voice.0
                || m.codec(pt)
                    .is_some_and(|c| c.is_telephone_event() && c.clock_rate == voice.1.clock_rate)
        })
        .collect();
    m.formats
        .retain(|f| f.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)));
    pending.answer(cfg, &reply, &mut own, leg)
}

/// voxgate's own offer on a leg, for a channel voxgate originates (click-to-call, a
/// campaign call): `codecs` in preference order (those voxgate supports; telephone-event
/// and other auxiliary codecs only at a voice codec's clock), payload types stable on the
/// leg, sendrecv. The leg's answer goes to [`PendingOffer::accept`].
///
/// On error nothing is changed (no version bump).
pub fn create_offer(
    cfg: &SdpConfig,
    codecs: &[Codec],
    to: &mut LegSdp,
) -> Result<(SessionDescription, PendingOffer), NegotiationError> {
    let supported: Vec<&Codec> = codecs.iter().filter(|c| cfg.supports(c)).collect();
    let clocks = voice_clocks(supported.iter().copied());
    let mut offered: Vec<(u8, u8, Codec)> = Vec::with_capacity(supported.len());
    for codec in supported.into_iter().filter(|c| usable(c, &clocks)) {
        if offered.iter().any(|(_, _, c)| c.same_format(codec)) {
            continue;
        }
        let taken: Vec<u8> = offered.iter().map(|(pt, _, _)| *pt).collect();
        // 101 for telephone-event, as most phones and carriers number it.
        let wanted = codec.static_payload_type().unwrap_or(101);
        let pt = assign_payload_type(codec, wanted, &to.bindings, &taken)
            .ok_or(NegotiationError::PayloadTypesExhausted)?;
        offered.push((pt, pt, codec.clone()));
    }
    if offered.is_empty() {
        return Err(NegotiationError::NoCommonCodec);
    }
    let mut attributes = rtpmaps(offered.iter().map(|(pt, _, c)| (*pt, c)));
    attributes.push(Attribute::Direction(Direction::SendRecv));
    let media = audio_line(
        to.local.rtp_port,
        Proto::RtpAvp,
        offered.iter().map(|(pt, _, _)| *pt),
        attributes,
    );
    let formats = media.formats.clone();
    let mut sdp = local_description(cfg, &to.local, [media]);
    to.session.stamp(&mut sdp);
    for (pt, _, codec) in &offered {
        to.bindings.bind(*pt, codec);
    }
    let pending = PendingOffer {
        lines: vec![OfferedLine {
            media: MediaType::Audio,
            proto: Proto::RtpAvp,
            formats,
            mid: None,
        }],
        audio_index: 0,
        codecs: offered,
        transcoded: Vec::new(),
        offerer_direction: Direction::SendRecv,
        offerer_rtcp_mux: false,
        offerer_ptime: None,
        offerer_endpoint: None,
    };
    Ok((sdp, pending))
}

impl PendingOffer {
    /// The answer to an offer voxgate made itself ([`create_offer`]): records the leg's
    /// negotiated media in [`LegSdp::media`]. On error the leg is unchanged.
    pub fn accept(
        &self,
        cfg: &SdpConfig,
        answer: &SessionDescription,
        answerer: &mut LegSdp,
    ) -> Result<(), NegotiationError> {
        // voxgate's own endpoint plays the offerer; its side of the result is not needed.
        let mut own = LegSdp::new(LocalSession::new(0), answerer.local);
        self.answer(cfg, answer, answerer, &mut own).map(|_| ())
    }

    /// Turn the answer from the leg the offer was forwarded to (`answerer`) into the answer
    /// for the leg that offered (`offerer`), and record the negotiated media of both legs
    /// in their [`LegSdp::media`]. On error neither leg is changed.
    pub fn answer(
        &self,
        cfg: &SdpConfig,
        answer: &SessionDescription,
        answerer: &mut LegSdp,
        offerer: &mut LegSdp,
    ) -> Result<SessionDescription, NegotiationError> {
        // We offered exactly one audio m= line (RFC 3264 §6: same count, same order).
        let [m] = answer.media.as_slice() else {
            return Err(NegotiationError::AnswerMismatch);
        };
        if m.media != MediaType::Audio {
            return Err(NegotiationError::AnswerMismatch);
        }
        if m.port == 0 {
            return Err(NegotiationError::AudioRejected);
        }
        let conn = answer
            .connection_for(m)
            .ok_or(NegotiationError::MissingConnection(0))?;
        let endpoint = endpoint(m, conn, 0)?;

        // Codecs the answerer kept, in its order (RFC 3264 §6.1), matched to our offer:
        // relayed as they are when it kept one of the offerer's voice codecs, else
        // transcoded when it kept one voxgate added.
        let relayed = agree(m, &self.codecs);
        let transcoding = relayed.is_empty() && !self.transcoded.is_empty();
        let pool: Vec<(u8, u8, Codec)> = if transcoding {
            self.codecs
                .iter()
                .filter(|(_, _, c)| c.is_auxiliary())
                .chain(&self.transcoded)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let agreed = if transcoding {
            agree(m, &pool)
        } else {
            relayed
        };
        if agreed.is_empty() {
            return Err(NegotiationError::NoCommonCodec);
        }
        // The offerer's side: the same codecs under its numbers; or, transcoding, its
        // first voice codec voxgate transcodes and telephone-event at that codec's clock.
        let offerer_own: Vec<&(u8, u8, Codec)> = if transcoding {
            let voice = self
                .codecs
                .iter()
                .find(|(_, _, c)| !c.is_auxiliary() && cfg.transcodes(c))
                .ok_or(NegotiationError::NoCommonCodec)?;
            let event = self
                .codecs
                .iter()
                .find(|(_, _, c)| c.is_telephone_event() && c.clock_rate == voice.2.clock_rate);
            [Some(voice), event].into_iter().flatten().collect()
        } else {
            agreed.iter().map(|(_, o, _)| *o).collect()
        };
        // In our answer: fmtp as the real answerer gave it when relaying.
        let offerer_codecs: Vec<(u8, Codec)> = if transcoding {
            // An Opus offerer is asked for no more audio than the other leg carries.
            let other = agreed.iter().map(|(_, _, c)| c).find(|c| !c.is_auxiliary());
            offerer_own
                .iter()
                .map(|o| {
                    let params = other.and_then(|b| opus_params_beside(&o.2, b));
                    let codec = match params {
                        Some(fmtp) => Codec {
                            fmtp: Some(fmtp),
                            ..o.2.clone()
                        },
                        None => o.2.clone(),
                    };
                    (o.0, codec)
                })
                .collect()
        } else {
            agreed
                .iter()
                .map(|(_, o, c)| {
                    let codec = Codec {
                        fmtp: c.fmtp.clone(),
                        ..o.2.clone()
                    };
                    (o.0, codec)
                })
                .collect()
        };

        // RFC 3264 §6.1: the answer may only send what the offer receives and vice versa;
        // clamp an answerer that got it wrong. c=0.0.0.0 means it does not receive.
        let mut wanted = answer.direction_for(m);
        if conn.is_unspecified() {
            wanted = Direction::from_flags(wanted.sends(), false);
        }
        let answerer_direction = Direction::answer_to(self.offerer_direction, wanted);
        // RFC 5761 §5.1.1: mux only if offered and accepted (we offered it iff the offerer did).
        let rtcp_mux = self.offerer_rtcp_mux && m.rtcp_mux();

        let answerer_media = LegMedia {
            remote: endpoint.map(|e| e.resolve(rtcp_mux)),
            direction: answerer_direction,
            send: PayloadMap(agreed.iter().map(|(pt, _, c)| (*pt, c.clone())).collect()),
            recv: PayloadMap(agreed.iter().map(|(_, o, _)| (o.1, o.2.clone())).collect()),
            ptime: m.ptime(),
            rtcp_mux,
        };
        let offerer_media = LegMedia {
            remote: self.offerer_endpoint.map(|e| e.resolve(rtcp_mux)),
            direction: answerer_direction.reversed(),
            send: PayloadMap(offerer_own.iter().map(|o| (o.0, o.2.clone())).collect()),
            recv: PayloadMap(offerer_own.iter().map(|o| (o.0, o.2.clone())).collect()),
            ptime: self.offerer_ptime,
            rtcp_mux,
        };

        let media = self.lines.iter().enumerate().map(|(i, line)| {
            // RFC 5888 §9.1: echo the offer's mid so a grouping-aware offerer can match.
            let mut attributes: Vec<Attribute> = line
                .mid
                .iter()
                .map(|mid| Attribute::Mid(mid.clone()))
                .collect();
            if i != self.audio_index {
                // RFC 3264 §6: a rejected stream is port 0, same media, proto and formats.
                return MediaDescription {
                    media: line.media.clone(),
                    port: 0,
                    proto: line.proto.clone(),
                    formats: line.formats.clone(),
                    attributes,
                    ..audio_line(0, Proto::RtpAvp, std::iter::empty(), Vec::new())
                };
            }
            attributes.extend(stream_attributes(
                offerer_codecs.iter().map(|(pt, c)| (*pt, c)),
                m,
                rtcp_mux,
                answerer_direction,
            ));
            audio_line(
                offerer.local.rtp_port,
                line.proto.clone(),
                offerer_codecs.iter().map(|(pt, _)| *pt),
                attributes,
            )
        });
        let mut sdp = local_description(cfg, &offerer.local, media);
        offerer.session.stamp(&mut sdp);

        for (pt, codec) in &offerer_codecs {
            offerer.bindings.bind(*pt, codec);
        }
        offerer.media = Some(offerer_media);
        answerer.media = Some(answerer_media);
        Ok(sdp)
    }
}

/// The `fmtp` for `codec` when it is Opus and transcoded against `other`, a narrowband
/// (G.711) or wideband (G.722) codec: RFC 7587 §6.1's `maxplaybackrate` and
/// `sprop-maxcapturerate`, so that a libopus peer sends (and expects) no more bandwidth
/// than the other leg carries: narrowband SILK is several times cheaper to code.
fn opus_params_beside(codec: &Codec, other: &Codec) -> Option<String> {
    if !codec.name.eq_ignore_ascii_case("opus") {
        return None;
    }
    let rate = match other.name.to_ascii_uppercase().as_str() {
        "PCMU" | "PCMA" => 8000,
        "G722" => 16_000,
        _ => return None,
    };
    Some(format!(
        "maxplaybackrate={rate};sprop-maxcapturerate={rate}"
    ))
}

/// The codecs of an answer's m= line that match `offered` (our offer's (offerer PT,
/// our PT, codec)), in the answerer's order, each once, as (answerer's PT, what we
/// offered, codec as the answerer described it). Auxiliary codecs only at a voice
/// codec's clock; empty without a voice codec.
fn agree<'a>(
    m: &MediaDescription,
    offered: &'a [(u8, u8, Codec)],
) -> Vec<(u8, &'a (u8, u8, Codec), Codec)> {
    let mut agreed: Vec<(u8, &(u8, u8, Codec), Codec)> = Vec::new();
    for pt in distinct_payload_types(m) {
        let described = m.codec(pt).or_else(|| {
            // A sloppy answerer may reuse our number without an rtpmap.
            offered
                .iter()
                .find(|(_, b, _)| *b == pt)
                .map(|(_, _, c)| c.clone())
        });
        let Some(codec) = described else { continue };
        let Some(o) = offered.iter().find(|(_, _, c)| c.same_format(&codec)) else {
            continue; // not offered: RFC 3264 §6.1 forbids it, ignore it
        };
        if agreed.iter().all(|(_, a, _)| !a.2.same_format(&codec)) {
            agreed.push((pt, o, codec));
        }
    }
    let clocks = voice_clocks(agreed.iter().map(|(_, _, c)| c));
    agreed.retain(|(_, _, c)| usable(c, &clocks));
    agreed
}

/// The first audio m= line we can bridge and its supported codecs (offerer's PT, codec),
/// in the offerer's order. Errors say why none fits, most specific first.
fn pick_audio(
    cfg: &SdpConfig,
    offer: &SessionDescription,
) -> Result<(usize, Vec<(u8, Codec)>), NegotiationError> {
    let mut error = NegotiationError::NoAudio;
    for (i, m) in offer.media.iter().enumerate() {
        if m.media != MediaType::Audio || m.port == 0 {
            continue;
        }
        if !m.proto.is_plain_rtp() {
            if error == NegotiationError::NoAudio {
                error = NegotiationError::UnsupportedTransport(m.proto.as_str().to_owned());
            }
            continue;
        }
        let mut codecs: Vec<(u8, Codec)> = Vec::new();
        for pt in distinct_payload_types(m) {
            let Some(codec) = m.codec(pt) else { continue };
            if cfg.supports(&codec) && codecs.iter().all(|(_, c)| !c.same_format(&codec)) {
                codecs.push((pt, codec));
            }
        }
        let clocks = voice_clocks(codecs.iter().map(|(_, c)| c));
        codecs.retain(|(_, c)| usable(c, &clocks));
        if codecs.is_empty() {
            error = NegotiationError::NoCommonCodec;
            continue;
        }
        return Ok((i, codecs));
    }
    Err(error)
}

/// Each payload type of an m= line once, in order: at most 128 codec lookups however
/// long a hostile format list is (each lookup scans the attributes).
fn distinct_payload_types(m: &MediaDescription) -> impl Iterator<Item = u8> + '_ {
    let mut seen = [false; 128];
    m.payload_types()
        .filter(move |pt| match seen.get_mut(usize::from(*pt)) {
            Some(s) if !*s => {
                *s = true;
                true
            }
            _ => false,
        })
}

/// Clock rates of the voice (non-auxiliary) codecs.
fn voice_clocks<'a>(codecs: impl Iterator<Item = &'a Codec>) -> Vec<u32> {
    codecs
        .filter(|c| !c.is_auxiliary())
        .map(|c| c.clock_rate)
        .collect()
}

/// Voice codecs, and auxiliary ones (telephone-event, CN) only at a clock rate some voice
/// codec uses (RFC 4733 §2.1: events share the audio stream's clock). With no voice codec
/// nothing is usable: DTMF alone is not a call.
fn usable(codec: &Codec, voice_clocks: &[u32]) -> bool {
    !codec.is_auxiliary() || voice_clocks.contains(&codec.clock_rate)
}

fn assign_payload_type(codec: &Codec, offered: u8, bound: &PayloadMap, taken: &[u8]) -> Option<u8> {
    let free = |pt: u8| !taken.contains(&pt) && bound.codec(pt).is_none();
    if let Some(pt) = bound.payload_type(codec).filter(|pt| !taken.contains(pt)) {
        return Some(pt);
    }
    if let Some(pt) = codec.static_payload_type().filter(|pt| free(*pt)) {
        return Some(pt);
    }
    if offered >= DYNAMIC_PT_FIRST && free(offered) {
        return Some(offered);
    }
    (DYNAMIC_PT_FIRST..=PT_MAX).find(|pt| free(*pt))
}

/// The RTP address of a media section and its RFC 3605 RTCP address; `None` when the
/// peer does not want media (`c=0.0.0.0`).
fn endpoint(
    m: &MediaDescription,
    conn: &Connection,
    index: usize,
) -> Result<Option<Endpoint>, NegotiationError> {
    let ip = match conn.address {
        ConnectionAddress::Ip(ip) => ip,
        ConnectionAddress::Fqdn(..) => return Err(NegotiationError::HostNameConnection(index)),
    };
    if ip.is_unspecified() || m.port == 0 {
        return Ok(None);
    }
    let rtcp_attr = m.rtcp().map(|(port, c)| {
        // An a=rtcp address of 0.0.0.0 is an ICE placeholder, not a destination.
        let ip = c
            .and_then(Connection::ip_addr)
            .filter(|a| !a.is_unspecified())
            .unwrap_or(ip);
        SocketAddr::new(ip, port)
    });
    Ok(Some(Endpoint {
        rtp: SocketAddr::new(ip, m.port),
        rtcp_attr,
    }))
}

/// The attributes of a bridged audio stream: rtpmaps and fmtps, then ptime and maxptime
/// copied from `from` (the SDP of the party whose packets this stream will carry), then
/// rtcp-mux and an explicit direction.
fn stream_attributes<'a>(
    codecs: impl Iterator<Item = (u8, &'a Codec)>,
    from: &MediaDescription,
    rtcp_mux: bool,
    direction: Direction,
) -> Vec<Attribute> {
    let mut attributes = rtpmaps(codecs);
    attributes.extend(from.ptime().map(Attribute::Ptime));
    attributes.extend(from.max_ptime().map(Attribute::MaxPtime));
    if rtcp_mux {
        attributes.push(Attribute::RtcpMux);
    }
    attributes.push(Attribute::Direction(direction));
    attributes
}

/// `a=rtpmap` for every payload type (static ones too: some peers insist) and `a=fmtp`.
fn rtpmaps<'a>(codecs: impl Iterator<Item = (u8, &'a Codec)>) -> Vec<Attribute> {
    let mut maps = Vec::new();
    let mut fmtps = Vec::new();
    for (pt, c) in codecs {
        maps.push(Attribute::Rtpmap(Rtpmap {
            payload_type: pt,
            encoding: c.name.clone(),
            clock_rate: c.clock_rate,
            channels: (c.channels != 1).then_some(c.channels),
        }));
        if let Some(params) = &c.fmtp {
            fmtps.push(Attribute::Fmtp {
                format: pt.to_string(),
                params: params.clone(),
            });
        }
    }
    maps.append(&mut fmtps);
    maps
}

fn audio_line(
    port: u16,
    proto: Proto,
    pts: impl Iterator<Item = u8>,
    attributes: Vec<Attribute>,
) -> MediaDescription {
    MediaDescription {
        media: MediaType::Audio,
        port,
        port_count: None,
        proto,
        formats: pts.map(|pt| pt.to_string()).collect(),
        info: None,
        connection: None,
        bandwidths: Vec::new(),
        key: None,
        attributes,
    }
}

/// voxgate's description on a leg: its address in o= and c=, `t=0 0` (RFC 3264 §5).
fn local_description(
    cfg: &SdpConfig,
    local: &LocalMedia,
    media: impl IntoIterator<Item = MediaDescription>,
) -> SessionDescription {
    SessionDescription {
        origin: Origin {
            username: cfg.username.clone(),
            session_id: 0,
            session_version: 0,
            addr_type: AddrType::of(local.address),
            address: local.address.to_string(),
        },
        session_name: cfg.session_name.clone(),
        info: None,
        uri: None,
        emails: Vec::new(),
        phones: Vec::new(),
        connection: Some(Connection::ip(local.address)),
        bandwidths: Vec::new(),
        timings: vec![Timing {
            start: 0,
            stop: 0,
            repeats: Vec::new(),
        }],
        time_zones: None,
        key: None,
        attributes: Vec::new(),
        media: media.into_iter().collect(),
    }
}
