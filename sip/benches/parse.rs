//! Parser micro-benchmarks: the REGISTER path runs ≥5,000 times a second in production.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use voxgate_sip::message::{Message, MessageBuilder};

const REGISTER_AUTH: &str = "REGISTER sip:voxgate.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.44:52341;rport;branch=z9hG4bKPj3a9b0c7d2e4f41c1a6b8\r\n\
Max-Forwards: 70\r\n\
From: \"Agent 1001\" <sip:1001@voxgate.example.com>;tag=9f1e2d3c4b5a\r\n\
To: \"Agent 1001\" <sip:1001@voxgate.example.com>\r\n\
Call-ID: 5f0c2a8e-41d7-4f2b-9a55-3c2d1e0f9b8a\r\n\
CSeq: 4712 REGISTER\r\n\
User-Agent: Zoiper rv2.10.20.1\r\n\
Contact: <sip:1001@192.0.2.44:52341;transport=udp;ob>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Supported: replaces, outbound, path, gruu\r\n\
Authorization: Digest username=\"1001\", realm=\"voxgate.example.com\", nonce=\"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo\", uri=\"sip:voxgate.example.com\", response=\"0b7d6e5f4c3b2a19081726354a5b6c7d\", algorithm=MD5, cnonce=\"f2a1b3c4\", qop=auth, nc=00000001\r\n\
Content-Length: 0\r\n\
\r\n";

const INVITE_SDP: &str = "INVITE sip:+14155550123@voxgate.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK6c1d2e3f4a5b;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.12:5060;branch=z9hG4bKa9b8c7d6e5f4;received=10.0.0.12\r\n\
Record-Route: <sip:198.51.100.7;lr;ftag=as5f1e2d3c>\r\n\
Max-Forwards: 69\r\n\
From: \"+1 650 555 0199\" <sip:+16505550199@carrier.example.net>;tag=as5f1e2d3c\r\n\
To: <sip:+14155550123@voxgate.example.com>\r\n\
Contact: <sip:+16505550199@198.51.100.7:5060>\r\n\
Call-ID: 7a3c51b06f2e4d1a9c8b7a6f5e4d3c2b@198.51.100.7\r\n\
CSeq: 102 INVITE\r\n\
User-Agent: Carrier SBC\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 245\r\n\
\r\n\
v=0\r\n\
o=- 1712345678 1712345678 IN IP4 198.51.100.7\r\n\
s=SBC call\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 31234 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, text) in [("register_auth", REGISTER_AUTH), ("invite_sdp", INVITE_SDP)] {
        let bytes = Bytes::from_static(text.as_bytes());
        let parsed = Message::parse(bytes.clone());
        // Content-Length must cover the whole body exactly.
        assert!(
            parsed.is_ok_and(|m| m.body().is_empty() || m.body().ends_with(b"a=sendrecv\r\n")),
            "{name} must parse"
        );
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let m = Message::parse(black_box(bytes.clone())).ok()?;
                Some((
                    m.top_via().branch.map(str::len),
                    m.cseq().seq,
                    m.call_id().len(),
                ))
            })
        });
    }
    // Parse plus what a registrar reads.
    let reg = Bytes::from_static(REGISTER_AUTH.as_bytes());
    g.bench_function("register_auth_accessors", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(reg.clone())).ok()?;
            let contacts = m.contacts().ok()??;
            let expires = contacts.as_slice().first()?.expires().ok()?;
            let auth = m.header(voxgate_sip::HeaderName::Authorization)?;
            Some((expires, auth.len(), m.expires().ok()?, m.to().uri.len()))
        })
    });
    g.bench_function("response_to_401", |b| {
        let m = Message::parse(reg.clone()).ok();
        b.iter(|| {
            m.as_ref().map(|m| {
                MessageBuilder::response_to(black_box(m), 401, "Unauthorized", Some("t1")).build()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
