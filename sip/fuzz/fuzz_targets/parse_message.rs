//! `cargo +nightly fuzz run parse_message` (seed with `-- ../tests/torture`).
//!
//! Parses arbitrary bytes; on success calls every accessor and re-serialises, checking that
//! what the transaction layer matches on survives the round trip.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use voxgate_sip::message::{Message, MessageBuilder, MAX_MESSAGE_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (
        m.is_request(),
        m.method(),
        m.request_uri(),
        m.status(),
        m.reason(),
    );
    let _ = (
        m.call_id(),
        m.cseq().to_string(),
        m.as_bytes().len(),
        m.header_len(),
    );
    let (from, to, via) = (m.from(), m.to(), m.top_via());
    let _ = (
        from.tag(),
        from.to_string(),
        from.sip_uri(),
        to.tag(),
        to.to_string(),
    );
    let _ = (via.to_string(), via.param("maddr"), via.is_rfc3261_branch());
    for v in m.vias().flatten() {
        let _ = v.to_string();
    }
    if let Ok(Some(contacts)) = m.contacts() {
        for c in contacts.as_slice() {
            let _ = (
                c.expires(),
                c.q_millis(),
                c.params_iter().count(),
                c.to_string(),
            );
            if let Ok(u) = c.sip_uri() {
                let _ = (u.param("transport"), u.to_string());
            }
        }
    }
    let _ = m.routes().flatten().count() + m.record_routes().flatten().count();
    let _ = (
        m.max_forwards(),
        m.expires(),
        m.min_expires(),
        m.retry_after(),
        m.date(),
    );
    let _ = (m.content_type(), m.content_length(), m.body().len());
    let _ = m.supported().count() + m.require().count() + m.proxy_require().count();
    for (name, value) in m.headers() {
        assert!(m.header_named(name).is_some(), "{name}: {value}");
    }
    if let Some(uri) = m.request_uri() {
        let _ = voxgate_sip::SipUri::parse(uri);
    }
    let _ = MessageBuilder::response_to(&m, 400, "Bad Request", Some("fuzz")).build();

    let bytes = MessageBuilder::from_message(&m).build();
    if bytes.len() > MAX_MESSAGE_SIZE {
        return;
    }
    let again = Message::parse(bytes).expect("a re-serialised message parses");
    assert_eq!(again.call_id(), m.call_id());
    assert_eq!(again.cseq(), m.cseq());
    assert_eq!(again.body(), m.body());
    for (a, b) in [(again.from(), m.from()), (again.to(), m.to())] {
        assert_eq!((a.uri, a.tag()), (b.uri, b.tag()));
    }
    let (a, b) = (again.top_via(), m.top_via());
    assert_eq!(
        (a.transport, a.host, a.port, a.branch, a.received, a.rport),
        (b.transport, b.host, b.port, b.branch, b.received, b.rport)
    );
});
