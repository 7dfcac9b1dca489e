#![allow(clippy::unwrap_used)]

use super::*;

const REGISTER: &[u8] = b"REGISTER sip:voxgate.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bK776asdhds\r\n\
Subject: folded\r\n l: 99\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
content-LENGTH :  0\r\n\
\r\n";

// Compact `l`, and a body that itself contains CRLFCRLF and a start line.
const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/TCP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n\
L\t:\t31\r\n\
\r\n\
v=0\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n";

fn drain(f: &mut StreamFramer, out: &mut Vec<Frame>) {
    while let Some(r) = f.next_frame() {
        out.push(r.unwrap());
    }
}

fn frames_of(chunks: &[&[u8]]) -> Vec<Frame> {
    let mut f = StreamFramer::default();
    let mut out = Vec::new();
    for c in chunks {
        f.push(c);
        drain(&mut f, &mut out);
    }
    assert_eq!(f.buffered(), 0);
    out
}

fn two_messages() -> (Vec<u8>, Vec<Frame>) {
    let mut input = Vec::new();
    input.extend_from_slice(b"\r\n\r\n"); // ping before anything
    input.extend_from_slice(REGISTER);
    input.extend_from_slice(b"\r\n"); // lone CRLF (a pong) between messages
    input.extend_from_slice(INVITE);
    input.extend_from_slice(b"\r\n\r\n"); // ping after
    let want = vec![
        Frame::Ping,
        Frame::Message(Bytes::from_static(REGISTER)),
        Frame::Message(Bytes::from_static(INVITE)),
        Frame::Ping,
    ];
    (input, want)
}

#[test]
fn invite_body_length_is_right() {
    let at = find(INVITE, CRLFCRLF, 0).unwrap() + 4;
    assert_eq!(INVITE.len() - at, 31);
}

#[test]
fn one_read_many_messages() {
    let (input, want) = two_messages();
    assert_eq!(frames_of(&[&input]), want);
}

#[test]
fn every_split_point() {
    let (input, want) = two_messages();
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(frames_of(&[a, b]), want, "split at {i}");
    }
}

#[test]
fn every_pair_of_split_points_around_the_first_header_end() {
    // Splits inside CRLFCRLF and inside the Content-Length line, two cuts at a time.
    let (input, want) = two_messages();
    let end = 4 + REGISTER.len();
    for i in end - 40..end {
        for j in i..=end + 4 {
            let chunks = [&input[..i], &input[i..j], &input[j..]];
            assert_eq!(frames_of(&chunks), want, "split at {i},{j}");
        }
    }
}

#[test]
fn byte_at_a_time() {
    let (input, want) = two_messages();
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(frames_of(&chunks), want);
    // And nothing is returned early: each message appears exactly when its last byte does.
    let mut f = StreamFramer::default();
    let mut out = Vec::new();
    for (i, c) in input.iter().enumerate() {
        f.push(&[*c]);
        let before = out.len();
        drain(&mut f, &mut out);
        if i + 1 == 4 + REGISTER.len() {
            assert_eq!(out.len(), before + 1);
        }
    }
}

#[test]
fn pseudo_random_chunking() {
    let (input, want) = two_messages();
    let mut s = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..500 {
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let n = 1 + (s % 40) as usize;
            let (a, b) = rest.split_at(n.min(rest.len()));
            chunks.push(a);
            rest = b;
        }
        assert_eq!(frames_of(&chunks), want);
    }
}

#[test]
fn pings_and_slack() {
    assert_eq!(
        frames_of(&[b"\r\n\r\n\r\n\r\n"]),
        vec![Frame::Ping, Frame::Ping]
    );
    // A lone CRLF (a pong from the peer) produces nothing and is not waited on forever:
    // the next message pushes it out.
    let mut f = StreamFramer::default();
    f.push(b"\r\n");
    assert!(f.next_frame().is_none());
    f.push(REGISTER);
    assert_eq!(
        f.next_frame(),
        Some(Ok(Frame::Message(Bytes::from_static(REGISTER))))
    );
    // Stray bare LF / CR before a start line are dropped (RFC 3261 §7.5 leniency).
    let mut input = b"\n\r".to_vec();
    input.extend_from_slice(REGISTER);
    assert_eq!(
        frames_of(&[&input]),
        vec![Frame::Message(Bytes::from_static(REGISTER))]
    );
}

fn first_error(input: &[u8], config: FramerConfig) -> FrameError {
    let mut f = StreamFramer::new(config);
    f.push(input);
    loop {
        match f.next_frame() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return e,
            None => panic!("no error for {:?}", String::from_utf8_lossy(input)),
        }
    }
}

fn msg_with(header: &str) -> Vec<u8> {
    format!("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n{header}\r\n\r\n").into_bytes()
}

#[test]
fn content_length_forms() {
    for (h, len) in [
        ("Content-Length: 3", 3),
        ("content-length:3", 3),
        ("CONTENT-LENGTH   :   3  ", 3),
        ("l: 3", 3),
        ("L:3", 3),
        ("Content-Length:\r\n 3", 3),
        ("Content-Length: 00003", 3),
    ] {
        let mut m = msg_with(h);
        let head = m.len();
        m.extend_from_slice(b"abcOPT");
        let mut f = StreamFramer::default();
        f.push(&m);
        let Some(Ok(Frame::Message(got))) = f.next_frame() else {
            panic!("{h}");
        };
        assert_eq!(got.len(), head + len, "{h}");
        assert_eq!(f.buffered(), 3, "{h}");
    }
}

#[test]
fn bad_content_length() {
    let d = FramerConfig::default();
    for h in [
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: +5",
        "Content-Length: 1 2",
        "Content-Length:",
        "l: 0x10",
    ] {
        assert_eq!(
            first_error(&msg_with(h), d),
            FrameError::BadContentLength,
            "{h}"
        );
    }
    assert_eq!(
        first_error(&msg_with("X-Other: 1"), d),
        FrameError::MissingContentLength
    );
    // Only a folded continuation mentions it: still missing.
    assert_eq!(
        first_error(&msg_with("Subject: a\r\n Content-Length: 5"), d),
        FrameError::MissingContentLength
    );
    // In the start line it is not a header either.
    assert_eq!(
        first_error(b"OPTIONS sip:l:5@x SIP/2.0\r\nVia: x\r\n\r\n", d),
        FrameError::MissingContentLength
    );
    assert_eq!(
        first_error(&msg_with("Content-Length: 0\r\nl: 0"), d),
        FrameError::DuplicateContentLength
    );
    // A bare-LF line is still seen, so it cannot hide a second Content-Length.
    assert_eq!(
        first_error(
            &msg_with("Content-Length: 0\r\nX: y\nContent-Length: 10"),
            d
        ),
        FrameError::DuplicateContentLength
    );
}

#[test]
fn oversize_header_and_body() {
    let config = FramerConfig {
        max_header_len: 256,
        max_body_len: 100,
    };
    // No end of headers in sight: error as soon as the limit is reached, not at EOF.
    let mut f = StreamFramer::new(config);
    for _ in 0..255 {
        f.push(b"a");
        assert!(f.next_frame().is_none());
    }
    f.push(b"a");
    assert_eq!(
        f.next_frame(),
        Some(Err(FrameError::HeaderTooLarge { limit: 256 }))
    );
    // Terminator found, but past the limit.
    let long = msg_with(&format!("X: {}\r\nl: 0", "a".repeat(300)));
    assert_eq!(
        first_error(&long, config),
        FrameError::HeaderTooLarge { limit: 256 }
    );
    // Body too large is reported from the header alone, before any body byte arrives.
    assert_eq!(
        first_error(&msg_with("l: 101"), config),
        FrameError::BodyTooLarge {
            length: 101,
            limit: 100
        }
    );
    assert_eq!(
        first_error(&msg_with("l: 99999999999999999999999999"), config),
        FrameError::BodyTooLarge {
            length: u64::MAX,
            limit: 100
        }
    );
    // Exactly at the limits is fine.
    let mut ok = msg_with("l: 100");
    ok.extend_from_slice(&[b'x'; 100]);
    assert!(matches!(
        frames_of_with(&ok, config).as_slice(),
        [Frame::Message(m)] if m.len() == ok.len()
    ));
}

fn frames_of_with(input: &[u8], config: FramerConfig) -> Vec<Frame> {
    let mut f = StreamFramer::new(config);
    f.push(input);
    let mut out = Vec::new();
    drain(&mut f, &mut out);
    out
}

#[test]
fn poisoned_after_error() {
    let mut f = StreamFramer::default();
    let mut input = msg_with("l: nope");
    input.extend_from_slice(REGISTER);
    f.push(&input);
    assert_eq!(f.next_frame(), Some(Err(FrameError::BadContentLength)));
    assert!(f.is_poisoned());
    f.push(REGISTER);
    assert_eq!(f.buffered(), 0);
    assert_eq!(f.next_frame(), Some(Err(FrameError::BadContentLength)));
}

#[test]
fn garbage_never_panics() {
    let pieces: [&[u8]; 10] = [
        b"\r\n",
        b"\r",
        b"\n",
        b" ",
        b"l:",
        b"Content-Length",
        b"5",
        b"\xff\xfe",
        b"INVITE ",
        b":",
    ];
    let mut s = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..5_000 {
        let mut f = StreamFramer::new(FramerConfig {
            max_header_len: 64,
            max_body_len: 16,
        });
        for _ in 0..40 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            f.push(pieces[(s % pieces.len() as u64) as usize]);
            while let Some(r) = f.next_frame() {
                if r.is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn scanning_is_linear_byte_at_a_time() {
    // 256 KiB of headers fed one byte per push: rescanning from the start on each push
    // would be ~3 * 10^10 comparisons and hang this test; resuming is ~3 * 10^5.
    let config = FramerConfig {
        max_header_len: 1 << 20,
        max_body_len: 0,
    };
    let mut input = msg_with(&format!("X: {}\r\nl: 0", "a".repeat(256 * 1024)));
    input.extend_from_slice(REGISTER);
    let mut f = StreamFramer::new(config);
    let mut out = Vec::new();
    for b in &input {
        f.push(std::slice::from_ref(b));
        drain(&mut f, &mut out);
    }
    assert_eq!(out.len(), 2);
}
