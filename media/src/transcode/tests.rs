use super::*;
use crate::codec::testutil::{dominant, tone};

const SSRC: Ssrc = Ssrc(0x1234_5678);

/// One packet out: payload type, marker, sequence number, timestamp, payload.
type Out = (u8, bool, u16, u32, Vec<u8>);

/// An RTP packet of `codec` carrying `pcm` (one or more 20 ms frames for G.711 and
/// G.722; exactly one for Opus), with `pt`, `seq` and `ts`.
fn packet(enc: &mut Encoder, pcm: &[i16], pt: u8, seq: u16, ts: u32) -> Vec<u8> {
    let frame = enc.codec().samples_per_frame();
    let mut out = vec![0u8; HEADER_LEN];
    for chunk in pcm.chunks(frame) {
        let mut payload = [0u8; 1500];
        let n = enc.encode(chunk, &mut payload).unwrap();
        out.extend_from_slice(&payload[..n]);
    }
    write_header(&mut out, pt, false, SeqNo(seq), RtpTimestamp(ts), SSRC).unwrap();
    out
}

fn transcoder(from: (u8, Codec), to: (u8, Codec)) -> Transcoder {
    let spec = TranscodeSpec {
        from: vec![from],
        to,
        events: Some(((101, ClockRate(8000)), (96, ClockRate(48_000)))),
    };
    Transcoder::new(&spec, Ssrc(7), SeqNo(1000), RtpTimestamp(5000)).unwrap()
}

/// Everything `t` has ready, as (header fields, payload).
fn drain(t: &mut Transcoder) -> Vec<Out> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(n) = t.pop(&mut buf) {
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        got.push((
            p.payload_type(),
            p.marker(),
            p.seq().0,
            p.timestamp().0,
            p.payload().to_vec(),
        ));
    }
    got
}

/// Sends `frames` 20 ms frames of a `freq` tone from `from` through `t`; returns what
/// came out, decoded with a decoder of the output codec.
fn run_tone(
    t: &mut Transcoder,
    from: (u8, Codec),
    freq: f64,
    frames: usize,
) -> (Vec<i16>, Vec<Out>) {
    let mut enc = Encoder::new(from.1).unwrap();
    let rate = from.1.sample_rate().hz();
    let n = from.1.samples_per_frame();
    let mut out = Vec::new();
    for i in 0..frames {
        let pcm = tone(freq, 8000.0, rate, i * n, n);
        let ts = 9000u32.wrapping_add(from.1.ticks_per_frame() * i as u32);
        let pkt = packet(&mut enc, &pcm, from.0, 40 + i as u16, ts);
        assert_eq!(
            t.push(&RtpPacket::new_checked(&pkt[..]).unwrap()),
            Pushed::Accepted
        );
        out.extend(drain(t));
    }
    let mut dec = Decoder::new(t.output_codec()).unwrap();
    let mut pcm = Vec::new();
    for (.., payload) in &out {
        let mut frame = [0i16; MAX_FRAME_SAMPLES];
        let k = dec.decode(payload, &mut frame).unwrap();
        pcm.extend_from_slice(&frame[..k]);
    }
    (pcm, out)
}

#[test]
fn pcmu_becomes_opus_at_48k_timestamps_and_keeps_its_tone() {
    let mut t = transcoder((0, Codec::Pcmu), (111, Codec::Opus));
    let (pcm, out) = run_tone(&mut t, (0, Codec::Pcmu), 440.0, 50);
    assert_eq!(out.len(), 50, "one 20 ms frame out per 20 ms packet in");
    for (i, (pt, marker, seq, ts, _)) in out.iter().enumerate() {
        assert_eq!(*pt, 111);
        assert_eq!(*marker, i == 0, "marker on the first packet only");
        assert_eq!(*seq, 1000 + i as u16);
        assert_eq!(*ts, 5000 + 960 * i as u32, "Opus' 48 kHz clock");
    }
    // Skip the codecs' and resampler's start-up, then the tone is what is heard.
    let tail = &pcm[48_000 / 5..];
    assert_eq!(
        dominant(tail, 48_000, &[300.0, 440.0, 600.0, 1000.0]),
        440.0
    );
}

#[test]
fn opus_becomes_pcmu_and_keeps_its_tone() {
    let mut t = transcoder((111, Codec::Opus), (0, Codec::Pcmu));
    let (pcm, out) = run_tone(&mut t, (111, Codec::Opus), 1000.0, 50);
    assert_eq!(out.len(), 50);
    assert!(out.windows(2).all(|w| w[1].3.wrapping_sub(w[0].3) == 160));
    assert!(out.iter().all(|p| p.4.len() == 160 && p.0 == 0));
    let tail = &pcm[8000 / 5..];
    assert_eq!(
        dominant(tail, 8000, &[440.0, 700.0, 1000.0, 1400.0]),
        1000.0
    );
}

#[test]
fn g722_becomes_pcma_on_the_same_clock() {
    let mut t = transcoder((9, Codec::G722), (8, Codec::Pcma));
    let (pcm, out) = run_tone(&mut t, (9, Codec::G722), 700.0, 25);
    assert_eq!(out.len(), 25);
    assert!(out.windows(2).all(|w| w[1].3.wrapping_sub(w[0].3) == 160));
    assert_eq!(dominant(&pcm[1600..], 8000, &[440.0, 700.0, 1000.0]), 700.0);
}

#[test]
fn thirty_ms_packets_come_out_as_twenty_ms_frames_on_one_timeline() {
    let mut t = transcoder((0, Codec::Pcmu), (8, Codec::Pcma));
    let mut enc = Encoder::new(Codec::Pcmu).unwrap();
    let mut out = Vec::new();
    for i in 0..4u32 {
        // 30 ms = 240 samples: one and a half frames per packet.
        let pcm = tone(440.0, 8000.0, 8000, 240 * i as usize, 240);
        let mut payload = vec![0u8; 240];
        for (c, o) in pcm.chunks(160).zip(payload.chunks_mut(160)) {
            let mut frame = [0i16; 160];
            frame[..c.len()].copy_from_slice(c);
            let mut bytes = [0u8; 160];
            enc.encode(&frame, &mut bytes).unwrap();
            o.copy_from_slice(&bytes[..o.len()]);
        }
        let mut pkt = vec![0u8; HEADER_LEN];
        pkt.extend_from_slice(&payload);
        write_header(
            &mut pkt,
            0,
            false,
            SeqNo(i as u16),
            RtpTimestamp(100 + 240 * i),
            SSRC,
        )
        .unwrap();
        t.push(&RtpPacket::new_checked(&pkt[..]).unwrap());
        out.extend(drain(&mut t));
    }
    // 120 ms in: six 20 ms frames out, back to back.
    let ts: Vec<u32> = out.iter().map(|p| p.3).collect();
    assert_eq!(ts, (0..6).map(|i| 5000 + 160 * i).collect::<Vec<_>>());
}

#[test]
fn loss_jumps_the_output_as_far_and_late_packets_are_dropped() {
    let mut t = transcoder((0, Codec::Pcmu), (8, Codec::Pcma));
    let mut enc = Encoder::new(Codec::Pcmu).unwrap();
    let silence = [0i16; 160];
    let mut out = Vec::new();
    let mut push = |t: &mut Transcoder, seq: u16, ts: u32| {
        let pkt = packet(&mut enc, &silence, 0, seq, ts);
        let pushed = t.push(&RtpPacket::new_checked(&pkt[..]).unwrap());
        out.extend(drain(t));
        pushed
    };
    assert_eq!(push(&mut t, 1, 0), Pushed::Accepted);
    assert_eq!(push(&mut t, 2, 160), Pushed::Accepted);
    // Packet 3 (ts 320) and 4 are lost; 5 arrives.
    assert_eq!(push(&mut t, 5, 640), Pushed::Accepted);
    // Then 3 arrives late, and 5 again.
    assert_eq!(push(&mut t, 3, 320), Pushed::Late);
    assert_eq!(push(&mut t, 5, 640), Pushed::Late);
    let got: Vec<(u32, bool)> = out.iter().map(|p| (p.3, p.1)).collect();
    assert_eq!(got, vec![(5000, true), (5160, false), (5640, true)]);
    let seqs: Vec<u16> = out.iter().map(|p| p.2).collect();
    assert_eq!(
        seqs,
        vec![1000, 1001, 1002],
        "sequence numbers stay consecutive"
    );
    assert_eq!(t.stats().dropped, 2);
}

#[test]
fn telephone_events_cross_to_the_other_clock() {
    let mut t = transcoder((0, Codec::Pcmu), (111, Codec::Opus));
    let (_, voice) = run_tone(&mut t, (0, Codec::Pcmu), 440.0, 5);
    assert_eq!(voice.len(), 5);
    // Digit 5 starting at the next voice timestamp (9000 + 5 * 160), 800 ticks long
    // (100 ms at 8 kHz), end bit set, volume 10.
    let mut pkt = vec![0u8; HEADER_LEN];
    pkt.extend_from_slice(&[5, 0x80 | 10, 0x03, 0x20]);
    write_header(&mut pkt, 101, true, SeqNo(46), RtpTimestamp(9800), SSRC).unwrap();
    assert_eq!(
        t.push(&RtpPacket::new_checked(&pkt[..]).unwrap()),
        Pushed::Accepted
    );
    let out = drain(&mut t);
    assert_eq!(out.len(), 1);
    let (pt, marker, seq, ts, payload) = &out[0];
    assert_eq!((*pt, *marker, *seq), (96, true, 1005));
    assert_eq!(*ts, 5000 + 5 * 960, "where the next voice frame would be");
    assert_eq!(
        payload,
        &vec![5, 0x80 | 10, 0x12, 0xc0],
        "800 ticks at 8 kHz = 4800 at 48 kHz"
    );
}

#[test]
fn unknown_payload_types_are_dropped() {
    let mut t = transcoder((0, Codec::Pcmu), (8, Codec::Pcma));
    let mut pkt = vec![0u8; HEADER_LEN + 1];
    write_header(&mut pkt, 13, false, SeqNo(1), RtpTimestamp(0), SSRC).unwrap();
    assert_eq!(
        t.push(&RtpPacket::new_checked(&pkt[..]).unwrap()),
        Pushed::UnknownPayload
    );
    assert!(drain(&mut t).is_empty());
}
