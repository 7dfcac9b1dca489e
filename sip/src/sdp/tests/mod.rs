//! SDP tests: realistic descriptions from the phones and carriers voxgate meets.
#![allow(clippy::unwrap_used)]

mod negotiate;
mod parse;
mod robust;

use super::SessionDescription;

/// baresip 3.x with opus first, LF line endings (as some builds and test tools write).
pub(super) const BARESIP: &str = "v=0\n\
o=- 1529316486 3014016547 IN IP4 192.168.1.23\n\
s=-\n\
c=IN IP4 192.168.1.23\n\
t=0 0\n\
a=tool:baresip 3.10.1\n\
m=audio 10420 RTP/AVP 96 0 8 101\n\
b=AS:96\n\
a=rtpmap:96 opus/48000/2\n\
a=fmtp:96 stereo=1;sprop-stereo=1\n\
a=rtpmap:0 PCMU/8000\n\
a=rtpmap:8 PCMA/8000\n\
a=rtpmap:101 telephone-event/8000\n\
a=fmtp:101 0-15\n\
a=rtcp-rsize\n\
a=sendrecv\n\
a=label:1\n\
a=ssrc:2435373837 cname:8ec8f5c0-d4d5-4c0a-a2b2-4d2e0b0b1b25\n\
a=ptime:20\n";

/// pjsua 2.x: media-level c=, RFC 3605 a=rtcp with address, many codecs, b=TIAS.
pub(super) const PJSUA: &str = "v=0\r\n\
o=- 3899871520 3899871520 IN IP4 10.0.0.15\r\n\
s=pjmedia\r\n\
b=AS:84\r\n\
t=0 0\r\n\
a=X-nat:0\r\n\
m=audio 4000 RTP/AVP 96 97 98 99 3 0 8 9 120 121\r\n\
c=IN IP4 10.0.0.15\r\n\
b=AS:64000\r\n\
b=TIAS:64000\r\n\
a=rtcp:4001 IN IP4 10.0.0.15\r\n\
a=sendrecv\r\n\
a=rtpmap:96 speex/16000\r\n\
a=rtpmap:97 speex/8000\r\n\
a=rtpmap:98 speex/32000\r\n\
a=rtpmap:99 iLBC/8000\r\n\
a=fmtp:99 mode=30\r\n\
a=rtpmap:3 GSM/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:120 telephone-event/16000\r\n\
a=fmtp:120 0-16\r\n\
a=rtpmap:121 telephone-event/8000\r\n\
a=fmtp:121 0-16\r\n\
a=ssrc:1047436431 cname:7d1b2f3c5c6e4a1b\r\n";

/// A carrier media gateway (Twilio-like): PCMU/PCMA/telephone-event, a=rtcp, maxptime.
pub(super) const TWILIO: &str = "v=0\r\n\
o=root 1452187532 1452187532 IN IP4 54.172.60.1\r\n\
s=Twilio Media Gateway\r\n\
c=IN IP4 54.172.60.1\r\n\
t=0 0\r\n\
m=audio 16852 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n\
a=rtcp:16853\r\n";

/// Chrome-style WebRTC offer: BUNDLE, ICE, DTLS, rtcp-mux, audio + video.
pub(super) const WEBRTC: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS stream0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.1.5 54321 typ host generation 0\r\n\
a=ice-ufrag:Fx3b\r\n\
a=ice-pwd:bV8gK9eqXPZZ1sJ2bB5ydJNp\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendrecv\r\n\
a=msid:stream0 track0\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1001 cname:Yx1bXBqMrSg7xVZ3\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Fx3b\r\n\
a=ice-pwd:bV8gK9eqXPZZ1sJ2bB5ydJNp\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n";

/// An IPv6 softphone: static PCMU without rtpmap (RFC 3551 table), session-level c=.
pub(super) const IPV6: &str = "v=0\r\n\
o=- 20518 0 IN IP6 2001:db8::10\r\n\
s=-\r\n\
c=IN IP6 2001:db8::10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n";

/// A G.729-only PBX trunk: nothing voxgate relays, so 488.
pub(super) const G729_ONLY: &str = "v=0\r\n\
o=PBX 8721 8721 IN IP4 192.0.2.77\r\n\
s=session\r\n\
c=IN IP4 192.0.2.77\r\n\
t=0 0\r\n\
m=audio 18000 RTP/AVP 18\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=sendrecv\r\n";

pub(super) const ALL: [&str; 6] = [BARESIP, PJSUA, TWILIO, WEBRTC, IPV6, G729_ONLY];

/// The WebRTC offer as a gateway that already terminated ICE/DTLS would send it.
pub(super) fn webrtc_plain() -> String {
    WEBRTC
        .replace("UDP/TLS/RTP/SAVPF", "RTP/AVPF")
        .replace("m=audio 9 ", "m=audio 50000 ")
        .replacen("c=IN IP4 0.0.0.0", "c=IN IP4 192.0.2.50", 1)
}

pub(super) fn sdp(text: &str) -> SessionDescription {
    text.parse().unwrap()
}

/// parse(serialise(x)) == x, and the serialised form is canonical CRLF.
pub(super) fn assert_round_trip(x: &SessionDescription) {
    let text = x.to_string();
    assert!(text.starts_with("v=0\r\n"));
    assert!(text.ends_with("\r\n"));
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    let again = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(&again, x, "{text}");
    assert_eq!(again.to_string(), text);
}
