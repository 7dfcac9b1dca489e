//! Robustness: nothing a peer sends may panic (SPEC §2). Deterministic xorshift so a
//! failure reproduces; every description that parses must round-trip and negotiate
//! without panicking.

use super::{assert_round_trip, sdp, ALL, TWILIO};
use crate::sdp::{forward_offer, LegSdp, LocalMedia, LocalSession, SdpConfig, SessionDescription};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        // xorshift64 (Marsaglia 2003).
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn legs() -> (LegSdp, LegSdp) {
    let ip = "203.0.113.10".parse().unwrap();
    (
        LegSdp::new(
            LocalSession::new(1),
            LocalMedia {
                address: ip,
                rtp_port: 20000,
            },
        ),
        LegSdp::new(
            LocalSession::new(2),
            LocalMedia {
                address: ip,
                rtp_port: 20002,
            },
        ),
    )
}

/// Parse; if it parses, round-trip it and run it through both sides of a negotiation.
/// Returns whether it was bridged as an offer.
fn exercise(input: &[u8]) -> bool {
    let Ok(x) = SessionDescription::parse(input) else {
        return false;
    };
    assert_round_trip(&x);
    let cfg = SdpConfig::default();
    let (mut a, mut b) = legs();
    // As an offer from A.
    let bridged = forward_offer(&cfg, &x, &mut b);
    if let Ok((offer_b, pending)) = &bridged {
        assert_round_trip(offer_b);
        let answer = sdp(&offer_b.to_string().replace("o=voxgate", "o=bob"));
        let answer_a = pending.answer(&cfg, &answer, &mut b, &mut a).unwrap();
        assert_round_trip(&answer_a);
        assert_eq!(
            answer_a.media.len(),
            x.media.len(),
            "RFC 3264 §6: same m-line count"
        );
    }
    // As an answer from B to a sane offer.
    let (mut a, mut b) = legs();
    let (_, pending) = forward_offer(&cfg, &sdp(TWILIO), &mut b).unwrap();
    if let Ok(answer_a) = pending.answer(&cfg, &x, &mut b, &mut a) {
        assert_round_trip(&answer_a);
    }
    bridged.is_ok()
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5000 {
        let len = rng.below(600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        assert!(!exercise(&bytes), "random bytes bridged");
    }
}

#[test]
fn every_truncation_of_real_offers_is_safe() {
    for text in ALL {
        let bytes = text.as_bytes();
        for end in 0..=bytes.len() {
            let _ = exercise(&bytes[..end]);
        }
    }
}

#[test]
fn mutated_real_offers_never_panic() {
    // Flip, insert and delete bytes from SDP's own alphabet, where parsers break.
    const ALPHABET: &[u8] = b"0123456789 /:=\r\n\tamcvotsbk-.IPN4608rtpmapfmtp\xff\x00";
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let (mut parsed, mut bridged) = (0, 0);
    for i in 0..6000 {
        let mut bytes = ALL[i % ALL.len()].as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            let b = ALPHABET[rng.below(ALPHABET.len())];
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = b,
                1 => bytes.insert(at, b),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        if SessionDescription::parse(&bytes).is_ok() {
            parsed += 1;
        }
        bridged += usize::from(exercise(&bytes));
    }
    assert!(bridged > 500, "only {bridged} mutants bridged");
    // The mutations must leave many inputs valid, or this test exercises nothing deep.
    assert!(parsed > 1000, "only {parsed} mutants parsed");
}

#[test]
fn token_soup_never_panics() {
    // Plausible lines in implausible combinations reach the negotiation code paths.
    const SESSION: &[&str] = &[
        "c=IN IP4 192.0.2.1",
        "c=IN IP4 0.0.0.0",
        "c=IN IP6 2001:db8::1",
        "c=IN IP4 host.example",
        "a=sendonly",
        "a=inactive",
        "b=AS:64",
        "a=group:BUNDLE 0",
        "r=1 2 3",
        "i=x",
    ];
    const M: &[&str] = &[
        "m=audio 5000 RTP/AVP 0 8 101",
        "m=audio 0 RTP/AVP 0",
        "m=audio 65535 RTP/AVP 96 97 0",
        "m=video 5002 RTP/AVP 96",
        "m=audio 5000 RTP/SAVP 0",
        "m=audio 5000 RTP/AVPF 101 8",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "m=audio 5000/2 RTP/AVP 18 0",
    ];
    const MEDIA: &[&str] = &[
        "c=IN IP4 192.0.2.9",
        "c=IN IP4 0.0.0.0",
        "c=IN IP4 host.example",
        "a=rtpmap:96 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:97 telephone-event/48000",
        "a=rtpmap:0 PCMA/8000",
        "a=rtpmap:8 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:40",
        "a=sendonly",
        "a=recvonly",
        "a=inactive",
        "a=sendrecv",
        "a=rtcp:65535",
        "a=rtcp:5001 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=mid:a",
        "a=x:y",
        "b=AS:64",
    ];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut bridged = 0;
    for _ in 0..5000 {
        let mut lines = vec!["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"];
        if rng.below(4) != 0 {
            lines.push("c=IN IP4 192.0.2.1");
        }
        for _ in 0..rng.below(3) {
            lines.push(SESSION[rng.below(SESSION.len())]);
        }
        for _ in 0..=rng.below(3) {
            lines.push(M[rng.below(M.len())]);
            for _ in 0..rng.below(7) {
                lines.push(MEDIA[rng.below(MEDIA.len())]);
            }
        }
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push_str(if rng.below(4) == 0 { "\n" } else { "\r\n" });
        }
        bridged += usize::from(exercise(text.as_bytes()));
    }
    assert!(bridged > 1000, "only {bridged} soups bridged");
}
