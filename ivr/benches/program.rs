//! What a call program costs the engine: parsing and validating a webhook's reply, and a
//! whole menu call (start, barge-in digit, queue, agent hangs up, goodbye) through a flow.
//!
//! `cargo bench -p voxgate-ivr --bench program`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use voxgate_ivr::program::{Command, Event};
use voxgate_ivr::{parse_verbs, validate, Blocks, Catalog, Digit, Flow, Program, Variables};

const REPLY: &[u8] = br#"[
    {"verb": "say", "text": "Thanks for calling Acme. Your call may be recorded."},
    {"verb": "set", "variables": {"lang": "en", "segment": "gold"}},
    {"verb": "gather", "max_digits": 1, "timeout_seconds": 5, "max_retries": 2,
     "prompts": [{"verb": "play", "prompt": "main_menu"}],
     "options": {"1": [{"verb": "enqueue", "queue": "sales"}],
                 "2": [{"verb": "dial", "strategy": "sequential",
                        "targets": [{"type": "agent", "agent": "alice"},
                                    {"type": "agent", "agent": "bob"}],
                        "on_no_answer": [{"verb": "record", "variable": "vm"}]}],
                 "3": [{"verb": "redirect", "url": "https://app.example/billing"}]},
     "on_timeout": [{"verb": "say", "text": "Goodbye."}, {"verb": "hangup"}]},
    {"verb": "hangup"}
]"#;

const MENU: &[u8] = br#"{
    "name": "main", "start": "welcome",
    "nodes": {
        "welcome": {"type": "play", "prompt": "welcome", "next": "menu"},
        "menu": {"type": "menu", "prompt": "main_menu",
                 "options": {"1": "sales", "2": "support", "3": "voicemail"},
                 "invalid": "menu", "timeout": "bye"},
        "sales": {"type": "enqueue", "queue": "sales", "next": "bye"},
        "support": {"type": "enqueue", "queue": "support", "next": "bye"},
        "voicemail": {"type": "record", "variable": "vm", "next": "bye"},
        "bye": {"type": "play", "prompt": "goodbye"}
    }
}"#;

struct Everything;

impl Catalog for Everything {
    fn prompt_exists(&self, _: &str) -> bool {
        true
    }
    fn queue_exists(&self, _: &str) -> bool {
        true
    }
    fn agent_exists(&self, _: &str) -> bool {
        true
    }
    fn trunk_exists(&self, _: &str) -> bool {
        true
    }
}

/// The id of the last playback the program asked for.
fn last_playback(p: &mut Program) -> Option<voxgate_ivr::PlaybackId> {
    let mut last = None;
    while let Some(c) = p.poll_command() {
        if let Command::Play { playback, .. } | Command::Say { playback, .. } = c {
            last = Some(playback);
        }
        black_box(&c);
    }
    last
}

fn benches(c: &mut Criterion) {
    c.bench_function("parse_and_validate_reply", |b| {
        b.iter(|| {
            let verbs = parse_verbs(black_box(REPLY)).ok();
            verbs.map(|v| validate(&v, &|_| false).is_ok())
        });
    });

    c.bench_function("flow_from_json_and_validate", |b| {
        b.iter(|| {
            Flow::from_json(black_box(MENU))
                .ok()
                .map(|f| f.validate(&Everything).is_ok())
        });
    });

    let Ok(flow) = Flow::from_json(MENU) else {
        return;
    };
    let Ok(blocks) = flow.compile() else {
        return;
    };
    let now = Instant::now();
    // The scenario must really reach the end, or the figure measures nothing.
    assert!(menu_call(&blocks, now), "the menu call did not finish");
    c.bench_function("menu_call_through_a_flow", |b| {
        b.iter(|| menu_call(black_box(&blocks), now));
    });
}

/// Welcome prompt, menu prompt, `2` (barge-in), queue, the agent hangs up, goodbye.
fn menu_call(blocks: &Blocks, now: Instant) -> bool {
    let mut p = Program::with_blocks(blocks, Variables::new());
    p.start(now);
    if let Some(welcome) = last_playback(&mut p) {
        p.handle_event(Event::PlaybackFinished { playback: welcome }, now);
    }
    last_playback(&mut p);
    if let Some(d) = Digit::new('2') {
        p.handle_event(Event::Digit(d), now);
    }
    last_playback(&mut p);
    p.handle_event(Event::BridgeEnded, now);
    if let Some(bye) = last_playback(&mut p) {
        p.handle_event(Event::PlaybackFinished { playback: bye }, now);
    }
    last_playback(&mut p);
    p.is_finished()
}

criterion_group!(program, benches);
criterion_main!(program);
