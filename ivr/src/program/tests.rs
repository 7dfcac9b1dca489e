//! The interpreter on a virtual clock: the test plays the engine, feeding events and
//! firing timers by advancing `now`, and checks the commands in order.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::verb::parse_verbs;

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The engine side of a test: a program, the virtual clock, and the commands seen.
pub(crate) struct Sim {
    pub p: Program,
    pub now: Instant,
}

impl Sim {
    pub fn new(json: &str) -> Sim {
        let verbs = parse_verbs(json.as_bytes()).unwrap();
        Sim::with(Program::new(verbs, Variables::new()).unwrap())
    }

    pub fn with(p: Program) -> Sim {
        Sim {
            p,
            now: Instant::now(),
        }
    }

    pub fn start(&mut self) -> Vec<Command> {
        self.p.start(self.now);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.p.poll_command()).collect()
    }

    pub fn event(&mut self, e: Event) -> Vec<Command> {
        self.p.handle_event(e, self.now);
        self.drain()
    }

    pub fn digits(&mut self, keys: &str) -> Vec<Command> {
        let mut out = Vec::new();
        for c in keys.chars() {
            out.extend(self.event(Event::Digit(Digit::new(c).unwrap())));
        }
        out
    }

    /// Moves the clock forward by `d`, firing every timer that falls due on the way.
    pub fn advance(&mut self, d: Duration) -> Vec<Command> {
        let until = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.p.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.p.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = until;
        out
    }
}

/// The playback id of the last `Play`/`Say` in `cmds`.
pub(crate) fn playback(cmds: &[Command]) -> PlaybackId {
    cmds.iter()
        .rev()
        .find_map(|c| match c {
            Command::Play { playback, .. } | Command::Say { playback, .. } => Some(*playback),
            _ => None,
        })
        .unwrap()
}

pub(crate) fn inputs(cmds: &[Command]) -> Vec<(String, InputResult)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Input(i) => Some((i.digits.clone(), i.result)),
            _ => None,
        })
        .collect()
}

fn say(text: &str, playback: u64) -> Command {
    Command::Say {
        playback: PlaybackId(playback),
        text: text.into(),
        voice: None,
    }
}

fn vars(pairs: &[(&str, &str)]) -> Variables {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn media_verbs_answer_first_and_run_in_order() {
    let mut sim = Sim::new(
        r#"[{"verb": "say", "text": "hello"}, {"verb": "pause", "seconds": 2},
            {"verb": "play", "prompt": "bye", "loop": 2}]"#,
    );
    assert_eq!(sim.start(), vec![Command::Answer, say("hello", 1)]);
    assert_eq!(sim.p.poll_timeout(), None);
    assert_eq!(
        sim.event(Event::SpeechFinished {
            playback: PlaybackId(1)
        }),
        vec![]
    );
    // The pause is the clock's: one second is not enough, two are.
    assert_eq!(sim.advance(secs(1)), vec![]);
    assert_eq!(
        sim.advance(secs(1)),
        vec![Command::Play {
            playback: PlaybackId(2),
            source: PlaySource::Prompt("bye".into()),
            loop_count: 2
        }]
    );
    assert_eq!(
        sim.event(Event::PlaybackFinished {
            playback: PlaybackId(2)
        }),
        vec![Command::Hangup, Command::Finished(Outcome::Completed)]
    );
    assert!(sim.p.is_finished());
}

#[test]
fn a_stale_playback_finished_is_ignored() {
    let mut sim = Sim::new(r#"[{"verb": "play", "prompt": "a"}, {"verb": "hangup"}]"#);
    sim.start();
    assert_eq!(
        sim.event(Event::PlaybackFinished {
            playback: PlaybackId(7)
        }),
        vec![]
    );
    assert!(!sim.p.is_finished());
}

#[test]
fn gather_ends_on_max_digits() {
    let mut sim =
        Sim::new(r#"[{"verb": "gather", "max_digits": 3, "variable": "pin"}, {"verb": "hangup"}]"#);
    assert_eq!(sim.start(), vec![Command::Answer]);
    // No prompts: the timeout runs from the start.
    assert_eq!(sim.p.poll_timeout(), Some(sim.now + secs(5)));
    assert_eq!(sim.digits("12"), vec![]);
    let out = sim.digits("3");
    assert_eq!(
        out,
        vec![
            Command::SetVariables(vars(&[("pin", "123")])),
            Command::Input(Input {
                node: None,
                digits: "123".into(),
                variable: Some("pin".into()),
                result: InputResult::Accepted,
                attempt: 0,
            }),
            Command::Hangup,
            Command::Finished(Outcome::Completed),
        ]
    );
    assert_eq!(
        sim.p.variables().get("pin").map(String::as_str),
        Some("123")
    );
}

#[test]
fn gather_ends_on_finish_key_which_is_not_stored() {
    let mut sim = Sim::new(
        r#"[{"verb": "gather", "max_digits": 10, "finish_on_key": "*", "variable": "acct"}]"#,
    );
    sim.start();
    assert_eq!(sim.digits("42"), vec![]);
    let out = sim.digits("*");
    assert_eq!(inputs(&out), vec![("42".into(), InputResult::Accepted)]);
    assert_eq!(
        sim.p.variables().get("acct").map(String::as_str),
        Some("42")
    );
}

#[test]
fn gather_timeout_runs_from_the_last_digit() {
    let mut sim = Sim::new(r#"[{"verb": "gather", "timeout_seconds": 3}]"#);
    sim.start();
    sim.advance(secs(2));
    sim.digits("9");
    // 2 s after the digit: not yet (the timer restarted at the digit).
    assert_eq!(sim.advance(secs(2)), vec![]);
    let out = sim.advance(secs(1));
    assert_eq!(inputs(&out), vec![("9".into(), InputResult::Accepted)]);
}

#[test]
fn finish_key_alone_is_no_input() {
    let mut sim = Sim::new(r#"[{"verb": "gather", "variable": "x"}]"#);
    sim.start();
    let out = sim.digits("#");
    assert_eq!(inputs(&out), vec![(String::new(), InputResult::NoInput)]);
    assert!(sim.p.variables().is_empty());
}

#[test]
fn barge_in_stops_the_prompt_before_anything_else() {
    let mut sim = Sim::new(
        r#"[{"verb": "gather", "max_digits": 2, "timeout_seconds": 4,
             "prompts": [{"verb": "play", "prompt": "menu"}, {"verb": "say", "text": "or wait"}]}]"#,
    );
    let out = sim.start();
    let first = playback(&out);
    // No input timer while the prompt plays.
    assert_eq!(sim.p.poll_timeout(), None);
    sim.advance(secs(1));
    let out = sim.digits("5");
    assert_eq!(out, vec![Command::StopPlayback { playback: first }]);
    // The second prompt never starts, even when the first one's finish arrives late.
    assert_eq!(
        sim.event(Event::PlaybackFinished { playback: first }),
        vec![]
    );
    assert_eq!(sim.p.poll_timeout(), Some(sim.now + secs(4)));
    let out = sim.digits("6");
    assert_eq!(inputs(&out), vec![("56".into(), InputResult::Accepted)]);
}

#[test]
fn gather_prompts_play_in_order_then_the_timer_starts() {
    let mut sim = Sim::new(
        r#"[{"verb": "gather", "prompts": [{"verb": "say", "text": "a"}, {"verb": "say", "text": "b"}]}]"#,
    );
    assert_eq!(sim.start(), vec![Command::Answer, say("a", 1)]);
    assert_eq!(
        sim.event(Event::SpeechFinished {
            playback: PlaybackId(1)
        }),
        vec![say("b", 2)]
    );
    assert_eq!(sim.p.poll_timeout(), None);
    sim.advance(secs(3));
    sim.event(Event::SpeechFinished {
        playback: PlaybackId(2),
    });
    assert_eq!(sim.p.poll_timeout(), Some(sim.now + secs(5)));
}

#[test]
fn menu_gather_branches_retries_and_gives_up() {
    let json = r#"[{"verb": "gather", "max_digits": 1, "max_retries": 1,
        "prompts": [{"verb": "play", "prompt": "menu"}],
        "options": {"1": [{"verb": "say", "text": "sales"}]},
        "on_invalid": [{"verb": "say", "text": "invalid"}],
        "on_timeout": [{"verb": "say", "text": "bye"}]}]"#;
    // Invalid, then the prompt again, then a valid key.
    let mut sim = Sim::new(json);
    let out = sim.start();
    let p1 = playback(&out);
    let out = sim.digits("7");
    assert_eq!(out[0], Command::StopPlayback { playback: p1 });
    assert_eq!(inputs(&out), vec![("7".into(), InputResult::Invalid)]);
    let p2 = playback(&out);
    assert_ne!(p1, p2);
    let out = sim.digits("1");
    assert_eq!(out[0], Command::StopPlayback { playback: p2 });
    assert_eq!(inputs(&out), vec![("1".into(), InputResult::Matched)]);
    assert!(matches!(out.last(), Some(Command::Say { text, .. }) if text == "sales"));

    // Two invalid inputs: on_invalid.
    let mut sim = Sim::new(json);
    sim.start();
    sim.digits("8");
    let out = sim.digits("9");
    assert!(matches!(out.last(), Some(Command::Say { text, .. }) if text == "invalid"));

    // Nothing twice: on_timeout, after two full timeouts.
    let mut sim = Sim::new(json);
    let out = sim.start();
    sim.event(Event::PlaybackFinished {
        playback: playback(&out),
    });
    let out = sim.advance(secs(5));
    assert_eq!(inputs(&out), vec![(String::new(), InputResult::NoInput)]);
    sim.event(Event::PlaybackFinished {
        playback: playback(&out),
    });
    let out = sim.advance(secs(5));
    assert_eq!(inputs(&out), vec![(String::new(), InputResult::NoInput)]);
    assert!(matches!(out.last(), Some(Command::Say { text, .. }) if text == "bye"));
}

#[test]
fn record_stops_on_its_key_or_its_length() {
    let json = r##"[{"verb": "record", "max_length_seconds": 30, "finish_on_key": "#*",
                    "variable": "voicemail"}, {"verb": "hangup"}]"##;
    let mut sim = Sim::new(json);
    assert_eq!(
        sim.start(),
        vec![
            Command::Answer,
            Command::StartRecording {
                beep: true,
                max_length: secs(30)
            }
        ]
    );
    assert_eq!(sim.digits("1"), vec![]);
    assert_eq!(sim.digits("*"), vec![Command::StopRecording]);
    // The key again does not stop it twice, nor does the timer.
    assert_eq!(sim.digits("#"), vec![]);
    assert_eq!(sim.advance(secs(60)), vec![]);
    assert_eq!(
        sim.event(Event::RecordFinished {
            recording: "rec_1".into()
        }),
        vec![
            Command::SetVariables(vars(&[("voicemail", "rec_1")])),
            Command::Hangup,
            Command::Finished(Outcome::Completed)
        ]
    );

    let mut sim = Sim::new(json);
    sim.start();
    assert_eq!(sim.advance(secs(29)), vec![]);
    assert_eq!(sim.advance(secs(1)), vec![Command::StopRecording]);
}

fn dial_ids(cmds: &[Command]) -> Vec<(DialId, Vec<DialTarget>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Dial { dial, targets, .. } => Some((*dial, targets.clone())),
            _ => None,
        })
        .collect()
}

fn agent(name: &str) -> DialTarget {
    DialTarget::Agent { agent: name.into() }
}

#[test]
fn sequential_dial_moves_on_after_no_answer() {
    let mut sim = Sim::new(
        r#"[{"verb": "dial", "strategy": "sequential", "ring_timeout_seconds": 15,
             "targets": [{"type": "agent", "agent": "alice"}, {"type": "agent", "agent": "bob"}],
             "on_no_answer": [{"verb": "say", "text": "nobody"}]},
            {"verb": "say", "text": "after"}]"#,
    );
    let out = sim.start();
    // A dial does not answer the caller itself: the bridge does.
    assert_eq!(
        out,
        vec![Command::Dial {
            dial: DialId(1),
            targets: vec![agent("alice")],
            ring_timeout: secs(15),
            caller_id: None,
            record: false
        }]
    );
    let out = sim.event(Event::DialOutcome {
        dial: DialId(1),
        outcome: DialOutcome::NoAnswer,
    });
    let dials = dial_ids(&out);
    assert_eq!(dials, vec![(DialId(2), vec![agent("bob")])]);
    // A late outcome for alice's attempt changes nothing.
    assert_eq!(
        sim.event(Event::DialOutcome {
            dial: DialId(1),
            outcome: DialOutcome::Answered
        }),
        vec![]
    );
    let out = sim.event(Event::DialOutcome {
        dial: DialId(2),
        outcome: DialOutcome::Answered,
    });
    assert_eq!(
        out,
        vec![Command::SetVariables(vars(&[(
            "dial_status",
            "in-progress"
        )]))]
    );
    // Bob hangs up: no on_answered branch, so the next verb runs.
    let out = sim.event(Event::BridgeEnded);
    assert!(matches!(out.last(), Some(Command::Say { text, .. }) if text == "after"));
    assert_eq!(
        sim.p.variables().get("dial_status").map(String::as_str),
        Some("completed")
    );
}

#[test]
fn sequential_dial_with_nobody_answering_takes_the_last_outcome_branch() {
    let mut sim = Sim::new(
        r#"[{"verb": "dial", "strategy": "sequential",
             "targets": [{"type": "agent", "agent": "alice"}, {"type": "sip", "uri": "sip:b@x"}],
             "on_busy": [{"verb": "say", "text": "busy"}],
             "on_no_answer": [{"verb": "say", "text": "nobody"}]}]"#,
    );
    sim.start();
    sim.event(Event::DialOutcome {
        dial: DialId(1),
        outcome: DialOutcome::Busy,
    });
    let out = sim.event(Event::DialOutcome {
        dial: DialId(2),
        outcome: DialOutcome::NoAnswer,
    });
    assert!(matches!(out.last(), Some(Command::Say { text, .. }) if text == "nobody"));
}

#[test]
fn simultaneous_dial_rings_everyone_once() {
    let mut sim = Sim::new(
        r#"[{"verb": "dial", "caller_id": "+15550001", "record": true,
             "targets": [{"type": "agent", "agent": "alice"}, {"type": "agent", "agent": "bob"}],
             "on_busy": [{"verb": "hangup"}]}]"#,
    );
    let out = sim.start();
    assert_eq!(
        dial_ids(&out),
        vec![(DialId(1), vec![agent("alice"), agent("bob")])]
    );
    let out = sim.event(Event::DialOutcome {
        dial: DialId(1),
        outcome: DialOutcome::Busy,
    });
    assert_eq!(out.last(), Some(&Command::Finished(Outcome::Completed)));
}

fn request(cmds: &[Command]) -> (RequestId, String, Variables) {
    cmds.iter()
        .find_map(|c| match c {
            Command::HttpRequest {
                request,
                url,
                variables,
            } => Some((*request, url.clone(), variables.clone())),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_redirect_reply_is_the_next_program() {
    let mut sim = Sim::with(
        Program::new(
            parse_verbs(
                br#"[{"verb": "gather", "max_digits": 1, "variable": "choice"},
                     {"verb": "redirect", "url": "https://app.example/next"},
                     {"verb": "say", "text": "never"}]"#,
            )
            .unwrap(),
            vars(&[("lang", "en")]),
        )
        .unwrap(),
    );
    sim.start();
    let out = sim.digits("2");
    let (id, url, posted) = request(&out);
    assert_eq!(url, "https://app.example/next");
    assert_eq!(posted, vars(&[("choice", "2"), ("lang", "en")]));
    let out = sim.event(Event::HttpReply {
        request: id,
        result: Ok(br#"[{"verb": "say", "text": "you chose two"}, {"verb": "hangup"}]"#.to_vec()),
    });
    assert!(matches!(&out[0], Command::Say { text, .. } if text == "you chose two"));
    let p = playback(&out);
    let out = sim.event(Event::PlaybackFinished { playback: p });
    assert_eq!(
        out,
        vec![Command::Hangup, Command::Finished(Outcome::Completed)]
    );
}

#[test]
fn a_reply_that_is_not_a_program_fails_typed() {
    let start = r#"[{"verb": "redirect", "url": "http://app/x"}]"#;
    let cases: &[(&[u8], &str)] = &[
        (br#"{"verb": "hangup"}"#, "verbs"),
        (br#"[{"verb": "say"}]"#, "verbs[0]"),
        (
            br#"[{"verb": "hangup"}, {"verb": "play", "url": "file:///etc/passwd"}]"#,
            "verbs[1]",
        ),
        (br"not json", "verbs"),
    ];
    for (body, at) in cases {
        let mut sim = Sim::new(start);
        let (id, ..) = request(&sim.start());
        let out = sim.event(Event::HttpReply {
            request: id,
            result: Ok(body.to_vec()),
        });
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], Command::Hangup);
        let Command::Finished(Outcome::Failed(ProgramError::BadReply {
            url,
            error: ReplyError::Verbs(e),
        })) = &out[1]
        else {
            panic!("{out:?}")
        };
        assert_eq!((url.as_str(), e.at.as_str()), ("http://app/x", *at));
        assert!(sim.p.is_finished());
    }

    let mut sim = Sim::new(start);
    let (id, ..) = request(&sim.start());
    let out = sim.event(Event::HttpReply {
        request: id,
        result: Ok(vec![b' '; limits::MAX_REPLY + 1]),
    });
    assert!(matches!(
        &out[1],
        Command::Finished(Outcome::Failed(ProgramError::BadReply {
            error: ReplyError::TooLarge { .. },
            ..
        }))
    ));

    let mut sim = Sim::new(start);
    let (id, ..) = request(&sim.start());
    let out = sim.event(Event::HttpReply {
        request: id,
        result: Err(HttpError::Status(500)),
    });
    assert_eq!(
        out[1],
        Command::Finished(Outcome::Failed(ProgramError::RedirectFailed {
            url: "http://app/x".into(),
            error: HttpError::Status(500)
        }))
    );
}

#[test]
fn a_redirect_loop_is_capped() {
    let mut sim = Sim::with(
        Program::new(
            parse_verbs(br#"[{"verb": "redirect", "url": "http://app/loop"}]"#).unwrap(),
            Variables::new(),
        )
        .unwrap()
        .with_config(Config {
            max_redirects: 3,
            ..Config::default()
        }),
    );
    let mut out = sim.start();
    let mut requests = 0;
    while let Some((id, ..)) = out
        .iter()
        .any(|c| matches!(c, Command::HttpRequest { .. }))
        .then(|| request(&out))
    {
        requests += 1;
        assert!(requests <= 3, "not capped");
        out = sim.event(Event::HttpReply {
            request: id,
            result: Ok(br#"[{"verb": "set", "variables": {"n": "1"}},
                            {"verb": "redirect", "url": "http://app/loop"}]"#
                .to_vec()),
        });
    }
    assert_eq!(requests, 3);
    assert_eq!(
        out.last(),
        Some(&Command::Finished(Outcome::Failed(
            ProgramError::RedirectLoop { max: 3 }
        )))
    );
}

#[test]
fn redirects_separated_by_caller_input_are_not_a_loop() {
    let reply = br#"[{"verb": "gather", "max_digits": 1},
                     {"verb": "redirect", "url": "http://app/step"}]"#;
    let mut sim = Sim::with(
        Program::new(
            parse_verbs(br#"[{"verb": "redirect", "url": "http://app/step"}]"#).unwrap(),
            Variables::new(),
        )
        .unwrap()
        .with_config(Config {
            max_redirects: 2,
            ..Config::default()
        }),
    );
    let mut out = sim.start();
    for _ in 0..10 {
        let (id, ..) = request(&out);
        sim.event(Event::HttpReply {
            request: id,
            result: Ok(reply.to_vec()),
        });
        out = sim.digits("1");
    }
    assert!(!sim.p.is_finished());
}

#[test]
fn a_loop_that_never_waits_is_capped() {
    let blocks = BTreeMap::from([
        (
            "a".to_owned(),
            parse_verbs(
                br#"[{"verb": "set", "variables": {"x": "1"}}, {"verb": "goto", "node": "b"}]"#,
            )
            .unwrap(),
        ),
        (
            "b".to_owned(),
            parse_verbs(br#"[{"verb": "goto", "node": "a"}]"#).unwrap(),
        ),
    ]);
    let p = Program::with_blocks(&Blocks::new(blocks, "a").unwrap(), Variables::new()).with_config(
        Config {
            max_steps: 50,
            ..Config::default()
        },
    );
    let mut sim = Sim::with(p);
    let out = sim.start();
    assert_eq!(
        out.len(),
        17 + 2,
        "17 sets before the cap, then hangup and finished"
    );
    assert_eq!(
        out.last(),
        Some(&Command::Finished(Outcome::Failed(
            ProgramError::TooManySteps { max: 50 }
        )))
    );
}

#[test]
fn caller_hangup_ends_the_program_quietly() {
    let mut sim = Sim::new(r#"[{"verb": "gather", "prompts": [{"verb": "say", "text": "x"}]}]"#);
    sim.start();
    assert_eq!(
        sim.event(Event::CallerHungUp),
        vec![Command::Finished(Outcome::CallerHungUp)]
    );
    assert_eq!(sim.digits("1"), vec![]);
    assert_eq!(sim.advance(secs(60)), vec![]);
}

#[test]
fn reject_before_answer_and_after() {
    let mut sim = Sim::new(r#"[{"verb": "reject", "reason": "busy"}]"#);
    assert_eq!(
        sim.start(),
        vec![
            Command::Reject(RejectReason::Busy),
            Command::Finished(Outcome::Rejected)
        ]
    );

    // A reply can only be checked for this at run time.
    let mut sim = Sim::new(r#"[{"verb": "answer"}, {"verb": "redirect", "url": "http://a/b"}]"#);
    let (id, ..) = request(&sim.start());
    let out = sim.event(Event::HttpReply {
        request: id,
        result: Ok(br#"[{"verb": "reject"}]"#.to_vec()),
    });
    assert_eq!(
        out,
        vec![
            Command::Hangup,
            Command::Finished(Outcome::Failed(ProgramError::RejectAfterAnswer))
        ]
    );
}

#[test]
fn enqueue_resumes_after_the_agent_hangs_up_and_replace_takes_over() {
    let mut sim =
        Sim::new(r#"[{"verb": "enqueue", "queue": "support"}, {"verb": "say", "text": "thanks"}]"#);
    assert_eq!(
        sim.start(),
        vec![Command::Enqueue {
            queue: "support".into()
        }]
    );
    let out = sim.event(Event::BridgeEnded);
    assert!(matches!(&out[..], [Command::Answer, Command::Say { text, .. }] if text == "thanks"));

    // Overflow: the engine replaces the program while the caller waits.
    let mut sim = Sim::new(r#"[{"verb": "enqueue", "queue": "support"}]"#);
    sim.start();
    sim.p
        .replace(
            parse_verbs(br#"[{"verb": "record", "beep": false}]"#).unwrap(),
            sim.now,
        )
        .unwrap();
    assert_eq!(
        sim.drain(),
        vec![
            Command::Answer,
            Command::StartRecording {
                beep: false,
                max_length: secs(120)
            }
        ]
    );
}

#[test]
fn digits_from_rfc4733_events() {
    let keys: String = (0..16)
        .map(|e| Digit::from_event(e).unwrap().as_char())
        .collect();
    assert_eq!(keys, "0123456789*#ABCD");
    assert_eq!(Digit::from_event(16), None);
    assert_eq!(Digit::new('x'), None);
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Seeded random engines against many programs: whatever arrives, in whatever order, the
/// program never panics, never asks for work it cannot own (stopping a playback it did not
/// start, or twice), finishes at most once and says nothing after, never asks to be woken
/// in the past, and does bounded work per call.
#[test]
fn random_events_keep_the_invariants() {
    const PROGRAMS: &[&str] = &[
        r#"[{"verb": "gather", "max_digits": 2, "max_retries": 2, "variable": "v",
             "prompts": [{"verb": "play", "prompt": "a"}, {"verb": "pause", "seconds": 1},
                         {"verb": "say", "text": "b"}],
             "options": {"1": [{"verb": "redirect", "url": "http://app/1"}],
                         "22": [{"verb": "dial", "strategy": "sequential",
                                 "targets": [{"type": "agent", "agent": "a"}, {"type": "agent", "agent": "b"}],
                                 "on_no_answer": [{"verb": "record"}]}]},
             "on_timeout": [{"verb": "enqueue", "queue": "q"}]},
            {"verb": "pause", "seconds": 3}]"#,
        r#"[{"verb": "redirect", "url": "http://app/start"}]"#,
        r#"[{"verb": "record", "max_length_seconds": 5, "finish_on_key": "1#"},
            {"verb": "play", "url": "https://x/y.wav", "loop": 0}]"#,
        r#"[{"verb": "dial", "targets": [{"type": "sip", "uri": "sip:a@b"}],
             "on_answered": [{"verb": "gather", "finish_on_key": "*"}],
             "on_failed": [{"verb": "redirect", "url": "http://app/f"}]},
            {"verb": "say", "text": "end"}]"#,
    ];
    const REPLIES: &[&[u8]] = &[
        br#"[{"verb": "gather", "max_digits": 1, "prompts": [{"verb": "say", "text": "x"}]},
             {"verb": "redirect", "url": "http://app/again"}]"#,
        br#"[{"verb": "redirect", "url": "http://app/loop"}]"#,
        br#"[{"verb": "reject"}]"#,
        br#"[{"verb": "pause", "seconds": 1}, {"verb": "enqueue", "queue": "q"}]"#,
        br#"[{"verb": "set", "variables": {"a": "b"}}]"#,
        br#"[{"verb": "nonsense"}]"#,
        b"\xff\xfe",
        b"[]",
    ];
    let outcomes = [
        DialOutcome::Answered,
        DialOutcome::Busy,
        DialOutcome::NoAnswer,
        DialOutcome::Failed,
        DialOutcome::Canceled,
    ];
    let mut finished_runs = 0;
    for seed in 1..=400u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut sim = Sim::new(PROGRAMS[rng.below(PROGRAMS.len())]);
        let mut started: Vec<PlaybackId> = Vec::new();
        let mut stopped: Vec<PlaybackId> = Vec::new();
        let (mut dial, mut request) = (DialId(0), RequestId(0));
        let mut finished = false;
        let mut out = sim.start();
        for _ in 0..300 {
            assert!(out.len() < 3000, "seed {seed}: unbounded work");
            for c in &out {
                assert!(!finished, "seed {seed}: {c:?} after Finished");
                match c {
                    Command::Play { playback, .. } | Command::Say { playback, .. } => {
                        assert!(started.last().is_none_or(|l| l < playback), "seed {seed}");
                        started.push(*playback);
                    }
                    Command::StopPlayback { playback } => {
                        assert!(started.contains(playback), "seed {seed}: never started");
                        assert!(!stopped.contains(playback), "seed {seed}: stopped twice");
                        stopped.push(*playback);
                    }
                    Command::Dial { dial: d, .. } => dial = *d,
                    Command::HttpRequest { request: r, .. } => request = *r,
                    Command::Finished(_) => finished = true,
                    _ => {}
                }
            }
            assert_eq!(finished, sim.p.is_finished(), "seed {seed}");
            if let Some(t) = sim.p.poll_timeout() {
                assert!(t > sim.now, "seed {seed}: a timer in the past");
            }
            let event = match rng.below(20) {
                0..=5 => {
                    let keys = ['1', '2', '#', '*', '9'];
                    Event::Digit(Digit::new(keys[rng.below(keys.len())]).unwrap())
                }
                6..=8 => {
                    // Mostly the newest playback, sometimes an old or unknown one.
                    let playback = match (started.last(), rng.below(4)) {
                        (Some(p), 0..=2) => *p,
                        _ => PlaybackId(rng.next() % 8),
                    };
                    if rng.below(2) == 0 {
                        Event::PlaybackFinished { playback }
                    } else {
                        Event::SpeechFinished { playback }
                    }
                }
                9..=10 => Event::DialOutcome {
                    dial: if rng.below(4) == 0 { DialId(99) } else { dial },
                    outcome: outcomes[rng.below(outcomes.len())],
                },
                11 => Event::BridgeEnded,
                12..=14 => Event::HttpReply {
                    request,
                    result: if rng.below(6) == 0 {
                        Err(HttpError::Timeout)
                    } else {
                        Ok(REPLIES[rng.below(REPLIES.len())].to_vec())
                    },
                },
                15 => Event::RecordFinished {
                    recording: "rec".into(),
                },
                16 if rng.below(10) == 0 => Event::CallerHungUp,
                _ => {
                    out = sim.advance(secs(rng.next() % 8));
                    continue;
                }
            };
            out = sim.event(event);
        }
        finished_runs += usize::from(finished);
    }
    // The runs exercise the ends of programs, not only their beginnings.
    assert!(finished_runs > 100, "only {finished_runs} runs finished");
}

#[test]
fn a_webhook_program_asks_again_when_a_reply_runs_out() {
    let mut sim =
        Sim::with(Program::webhook("https://app.example/voice", Variables::new()).unwrap());
    let (id, url, _) = request(&sim.start());
    assert_eq!(url, "https://app.example/voice");
    let out = sim.event(Event::HttpReply {
        request: id,
        result: Ok(br#"[{"verb": "gather", "max_digits": 1, "variable": "choice"}]"#.to_vec()),
    });
    assert_eq!(out, vec![Command::Answer]);
    // The reply ran out after the input: the app is asked again, with the digits.
    let out = sim.digits("4");
    let (id, url, posted) = request(&out);
    assert_eq!(url, "https://app.example/voice");
    assert_eq!(posted, vars(&[("choice", "4")]));
    let out = sim.event(Event::HttpReply {
        request: id,
        result: Ok(br#"[{"verb": "hangup"}]"#.to_vec()),
    });
    assert_eq!(
        out,
        vec![Command::Hangup, Command::Finished(Outcome::Completed)]
    );

    // An app that answers with nothing to do is a loop, and capped.
    let mut sim =
        Sim::with(Program::webhook("https://app.example/voice", Variables::new()).unwrap());
    let mut out = sim.start();
    for _ in 0..20 {
        let Some(Command::HttpRequest { request, .. }) = out.last().cloned() else {
            break;
        };
        out = sim.event(Event::HttpReply {
            request,
            result: Ok(b"[]".to_vec()),
        });
    }
    assert_eq!(
        out.last(),
        Some(&Command::Finished(Outcome::Failed(
            ProgramError::RedirectLoop { max: 10 }
        )))
    );

    assert!(Program::webhook("ftp://x", Variables::new()).is_err());
}

#[test]
fn an_input_serialises_as_the_ivr_input_data() {
    let input = Input {
        node: Some("menu".into()),
        digits: "2".into(),
        variable: None,
        result: InputResult::NoInput,
        attempt: 1,
    };
    assert_eq!(
        serde_json::to_value(&input).unwrap(),
        serde_json::json!({"node": "menu", "digits": "2", "variable": null,
                           "result": "no_input", "attempt": 1})
    );
    assert_eq!(InputResult::NoInput.as_str(), "no_input");
}

#[test]
fn a_pause_between_gather_prompts_is_timed_and_a_digit_ends_it() {
    let json = r#"[{"verb": "gather", "timeout_seconds": 3, "prompts": [
        {"verb": "say", "text": "a"}, {"verb": "pause", "seconds": 2}, {"verb": "say", "text": "b"}]}]"#;
    let mut sim = Sim::new(json);
    sim.start();
    assert_eq!(
        sim.event(Event::SpeechFinished {
            playback: PlaybackId(1)
        }),
        vec![]
    );
    assert_eq!(sim.p.poll_timeout(), Some(sim.now + secs(2)));
    assert_eq!(sim.advance(secs(2)), vec![say("b", 2)]);
    // While "b" plays there is no input timer.
    assert_eq!(sim.p.poll_timeout(), None);

    // A digit in the pause: no playback to stop, the rest of the prompts are skipped.
    let mut sim = Sim::new(json);
    sim.start();
    sim.event(Event::SpeechFinished {
        playback: PlaybackId(1),
    });
    sim.advance(secs(1));
    assert_eq!(sim.digits("4"), vec![]);
    assert_eq!(sim.p.poll_timeout(), Some(sim.now + secs(3)));
    let out = sim.advance(secs(3));
    assert_eq!(inputs(&out), vec![("4".into(), InputResult::Accepted)]);
    assert!(!out.iter().any(|c| matches!(c, Command::Say { .. })));
}
