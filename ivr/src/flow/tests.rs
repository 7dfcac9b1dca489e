//! Flows: validation against a catalog, and whole calls through menus on the virtual clock.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::program::tests::{inputs, playback, secs, Sim};
use crate::program::{Command, Event, Input, InputResult, Outcome, PlaybackId};
use crate::verb::PlaySource;

struct Store;

impl Catalog for Store {
    fn prompt_exists(&self, p: &str) -> bool {
        ["main_menu", "goodbye", "sorry", "leave_message"].contains(&p)
    }
    fn queue_exists(&self, q: &str) -> bool {
        q == "support" || q == "sales"
    }
    fn agent_exists(&self, a: &str) -> bool {
        a == "alice"
    }
    fn trunk_exists(&self, t: &str) -> bool {
        t == "carrier"
    }
}

/// A sales/support menu: 1 sales, 2 support, 3 voicemail; an invalid choice says sorry
/// and comes back to the menu (a legal cycle); no input twice says goodbye.
const MENU: &str = r#"{
    "name": "main",
    "start": "welcome",
    "nodes": {
        "welcome": {"type": "set", "variables": {"entry": "main"}, "next": "menu"},
        "menu": {"type": "menu", "prompt": "main_menu",
                 "options": {"1": "sales", "2": "support", "3": "voicemail"},
                 "timeout_seconds": 4, "max_retries": 1,
                 "invalid": "sorry", "timeout": "bye"},
        "sorry": {"type": "play", "prompt": "sorry", "next": "menu"},
        "sales": {"type": "enqueue", "queue": "sales"},
        "support": {"type": "enqueue", "queue": "support", "next": "bye"},
        "voicemail": {"type": "record", "max_length_seconds": 60, "variable": "vm", "next": "bye"},
        "bye": {"type": "play", "prompt": "goodbye"}
    }
}"#;

fn menu_sim() -> Sim {
    let flow = Flow::from_json(MENU.as_bytes()).unwrap();
    assert_eq!(flow.validate(&Store).unwrap(), FlowCheck::default());
    let mut sim = Sim::with(flow.program(Variables::new()).unwrap());
    sim.start();
    sim
}

fn prompt_of(cmds: &[Command]) -> Option<String> {
    cmds.iter().rev().find_map(|c| match c {
        Command::Play {
            source: PlaySource::Prompt(p),
            ..
        } => Some(p.clone()),
        _ => None,
    })
}

fn menu_input(digits: &str, result: InputResult, attempt: u32) -> Command {
    Command::Input(Input {
        node: Some("menu".into()),
        digits: digits.into(),
        variable: None,
        result,
        attempt,
    })
}

#[test]
fn menu_happy_path_reaches_the_queue() {
    let flow = Flow::from_json(MENU.as_bytes()).unwrap();
    let mut sim = Sim::with(flow.program(Variables::new()).unwrap());
    let out = sim.start();
    assert_eq!(
        out[0],
        Command::SetVariables(Variables::from([("entry".into(), "main".into())]))
    );
    assert_eq!(out[1], Command::Answer);
    assert_eq!(prompt_of(&out).as_deref(), Some("main_menu"));
    assert_eq!(sim.p.node(), Some("menu"));
    let menu = playback(&out);
    sim.advance(secs(1));
    let out = sim.digits("2");
    assert_eq!(
        out,
        vec![
            Command::StopPlayback { playback: menu },
            menu_input("2", InputResult::Matched, 0),
            Command::Enqueue {
                queue: "support".into()
            },
        ]
    );
    // The agent hangs up: support's `next` says goodbye, then the call ends.
    let out = sim.event(Event::BridgeEnded);
    assert_eq!(prompt_of(&out).as_deref(), Some("goodbye"));
    let out = sim.event(Event::PlaybackFinished {
        playback: playback(&out),
    });
    assert_eq!(
        out,
        vec![Command::Hangup, Command::Finished(Outcome::Completed)]
    );
}

#[test]
fn invalid_then_valid_digit() {
    let mut sim = menu_sim();
    sim.advance(secs(1));
    // 9 is not an option: reported once, then the menu plays again (a retry is left).
    let out = sim.digits("9");
    assert_eq!(inputs(&out), vec![("9".into(), InputResult::Invalid)]);
    assert_eq!(prompt_of(&out).as_deref(), Some("main_menu"));
    let again = playback(&out);
    sim.event(Event::PlaybackFinished { playback: again });
    sim.advance(secs(2));
    let out = sim.digits("1");
    assert_eq!(
        out,
        vec![
            menu_input("1", InputResult::Matched, 1),
            Command::Enqueue {
                queue: "sales".into()
            }
        ]
    );
}

#[test]
fn invalid_twice_goes_through_the_invalid_node_back_to_the_menu() {
    let mut sim = menu_sim();
    sim.digits("8");
    let out = sim.digits("9");
    assert_eq!(inputs(&out), vec![("9".into(), InputResult::Invalid)]);
    assert_eq!(prompt_of(&out).as_deref(), Some("sorry"));
    assert_eq!(sim.p.node(), Some("sorry"));
    let out = sim.event(Event::PlaybackFinished {
        playback: playback(&out),
    });
    // Back in the menu with its retries counted afresh.
    assert_eq!(prompt_of(&out).as_deref(), Some("main_menu"));
    assert_eq!(sim.p.node(), Some("menu"));
    let out = sim.digits("7");
    assert_eq!(out[1], menu_input("7", InputResult::Invalid, 0));
}

#[test]
fn timeout_retries_then_the_timeout_node() {
    let mut sim = menu_sim();
    let mut reported = Vec::new();
    for attempt in 0u32..2 {
        // The prompt plays for 3 s; the 4 s timeout runs from its end.
        let pb = PlaybackId(u64::from(attempt) + 1);
        sim.advance(secs(3));
        sim.event(Event::PlaybackFinished { playback: pb });
        assert_eq!(sim.advance(secs(3)), vec![]);
        let out = sim.advance(secs(1));
        reported.extend(
            out.iter()
                .filter(|c| matches!(c, Command::Input(_)))
                .cloned(),
        );
        if attempt == 0 {
            assert_eq!(prompt_of(&out).as_deref(), Some("main_menu"));
        } else {
            assert_eq!(prompt_of(&out).as_deref(), Some("goodbye"));
            assert_eq!(sim.p.node(), Some("bye"));
        }
    }
    assert_eq!(
        reported,
        vec![
            menu_input("", InputResult::NoInput, 0),
            menu_input("", InputResult::NoInput, 1)
        ]
    );
}

#[test]
fn voicemail_stores_the_recording() {
    let mut sim = menu_sim();
    let out = sim.digits("3");
    assert!(out.contains(&Command::StartRecording {
        beep: true,
        max_length: secs(60)
    }));
    sim.advance(secs(10));
    assert_eq!(sim.digits("#"), vec![Command::StopRecording]);
    sim.event(Event::RecordFinished {
        recording: "rec_9".into(),
    });
    assert_eq!(
        sim.p.variables().get("vm").map(String::as_str),
        Some("rec_9")
    );
    assert_eq!(sim.p.node(), Some("bye"));
}

#[test]
fn a_webhook_node_reply_can_come_back_into_the_flow() {
    let flow = Flow::from_json(
        br#"{"name": "hooked", "start": "ask",
             "nodes": {
               "ask": {"type": "gather", "max_digits": 4, "variable": "pin", "next": "check"},
               "check": {"type": "webhook", "url": "https://crm.example/pin"},
               "ok": {"type": "enqueue", "queue": "support"}
             }}"#,
    )
    .unwrap();
    // `ok` is reached only through the webhook's reply: a warning, not an error.
    assert_eq!(
        flow.validate(&Store).unwrap().unreachable,
        vec!["ok".to_owned()]
    );
    let mut sim = Sim::with(flow.program(Variables::new()).unwrap());
    sim.start();
    let out = sim.digits("1234");
    let Some(Command::HttpRequest {
        request,
        url,
        variables,
    }) = out.last().cloned()
    else {
        panic!("{out:?}")
    };
    assert_eq!(url, "https://crm.example/pin");
    assert_eq!(variables.get("pin").map(String::as_str), Some("1234"));
    let out = sim.event(Event::HttpReply {
        request,
        result: Ok(
            br#"[{"verb": "say", "text": "thanks"}, {"verb": "goto", "node": "ok"}]"#.to_vec(),
        ),
    });
    let out = sim.event(Event::SpeechFinished {
        playback: playback(&out),
    });
    assert_eq!(
        out,
        vec![Command::Enqueue {
            queue: "support".into()
        }]
    );

    // A reply that jumps to a node the flow does not have is a bad reply.
    let mut sim = Sim::with(flow.program(Variables::new()).unwrap());
    sim.start();
    let out = sim.digits("1234");
    let Some(Command::HttpRequest { request, .. }) = out.last().cloned() else {
        panic!()
    };
    let out = sim.event(Event::HttpReply {
        request,
        result: Ok(br#"[{"verb": "goto", "node": "nowhere"}]"#.to_vec()),
    });
    assert!(matches!(
        out.last(),
        Some(Command::Finished(Outcome::Failed(_)))
    ));
}

fn errors(json: &str) -> Vec<FlowError> {
    Flow::from_json(json.as_bytes())
        .unwrap()
        .validate(&Store)
        .unwrap_err()
        .0
}

fn err(node: &str, kind: FlowErrorKind) -> FlowError {
    FlowError {
        node: Some(node.into()),
        kind,
    }
}

#[test]
fn missing_nodes_prompts_queues_and_agents_are_named() {
    let e = errors(
        r#"{"name": "bad", "start": "menu", "nodes": {
            "menu": {"type": "menu", "prompt": "no_such_prompt",
                     "options": {"1": "sales", "2": "ghost"}, "timeout": "gone"},
            "sales": {"type": "enqueue", "queue": "nope"},
            "call": {"type": "dial", "agent": "bob", "trunk": "x"},
            "both": {"type": "dial", "agent": "alice", "number": "+1"}
        }}"#,
    );
    assert_eq!(
        e,
        vec![
            err("both", FlowErrorKind::DialTarget),
            err(
                "call",
                FlowErrorKind::MissingAgent {
                    agent: "bob".into()
                }
            ),
            err("call", FlowErrorKind::MissingTrunk { trunk: "x".into() }),
            err(
                "menu",
                FlowErrorKind::MissingNode {
                    field: "timeout".into(),
                    target: "gone".into()
                }
            ),
            err(
                "menu",
                FlowErrorKind::MissingNode {
                    field: "options.2".into(),
                    target: "ghost".into()
                }
            ),
            err(
                "menu",
                FlowErrorKind::MissingPrompt {
                    prompt: "no_such_prompt".into()
                }
            ),
            err(
                "sales",
                FlowErrorKind::MissingQueue {
                    queue: "nope".into()
                }
            ),
        ]
    );
    // The message an API 422 carries names each of them.
    let text = FlowErrors(e).to_string();
    for word in ["\"ghost\"", "\"no_such_prompt\"", "\"nope\"", "\"bob\""] {
        assert!(text.contains(word), "{text}");
    }

    let e = errors(r#"{"name": "x", "start": "nowhere", "nodes": {"a": {"type": "hangup"}}}"#);
    assert_eq!(
        e,
        vec![FlowError {
            node: None,
            kind: FlowErrorKind::MissingStart {
                start: "nowhere".into()
            }
        }]
    );
}

#[test]
fn values_and_shapes_are_checked() {
    let e = errors(
        r#"{"name": "x", "start": "m", "nodes": {
            "m": {"type": "menu", "prompt": "main_menu", "options": {}, "timeout_seconds": 0},
            "g": {"type": "gather", "variable": "bad name"},
            "w": {"type": "webhook", "url": "ftp://x"}
        }}"#,
    );
    assert_eq!(
        e,
        vec![
            err(
                "g",
                FlowErrorKind::Value(VerbErrorKind::BadVariable {
                    name: "bad name".into()
                })
            ),
            err("m", FlowErrorKind::NoOptions),
            err(
                "m",
                FlowErrorKind::Value(VerbErrorKind::OutOfRange {
                    field: "timeout_seconds",
                    got: 0,
                    min: 1,
                    max: 120
                })
            ),
            err(
                "w",
                FlowErrorKind::Value(VerbErrorKind::BadUrl { field: "url" })
            ),
        ]
    );

    // Unknown fields and node types are rejected, naming the node.
    let e = Flow::from_json(
        br#"{"name": "x", "start": "a", "nodes": {"a": {"type": "play", "prompt": "p", "colour": 1}}}"#,
    )
    .unwrap_err();
    assert_eq!(e.node.as_deref(), Some("a"));
    assert!(e.to_string().contains("colour"), "{e}");
    let e = Flow::from_json(br#"{"name": "x", "start": "a", "nodes": {"a": {"type": "jump"}}}"#)
        .unwrap_err();
    assert_eq!(e.node.as_deref(), Some("a"));
    let e =
        Flow::from_json(br#"{"name": "x", "start": "a", "nodes": {}, "extra": 1}"#).unwrap_err();
    assert_eq!(e.node, None);
}

#[test]
fn set_nodes_looping_alone_are_refused_but_menu_cycles_are_fine() {
    let e = errors(
        r#"{"name": "x", "start": "a", "nodes": {
            "a": {"type": "set", "variables": {"n": "1"}, "next": "b"},
            "b": {"type": "set", "variables": {"n": "2"}, "next": "a"}
        }}"#,
    );
    assert_eq!(
        e,
        vec![err(
            "a",
            FlowErrorKind::LoopWithoutWait {
                nodes: vec!["a".into(), "b".into()]
            }
        )]
    );
    // A set in a cycle with a menu waits at the menu each time round.
    Flow::from_json(
        br#"{"name": "x", "start": "a", "nodes": {
            "a": {"type": "set", "variables": {"n": "1"}, "next": "m"},
            "m": {"type": "menu", "prompt": "main_menu", "options": {"1": "a"}}
        }}"#,
    )
    .unwrap()
    .validate(&Store)
    .unwrap();
}

#[test]
fn a_flow_serialises_back_to_what_parses() {
    let flow = Flow::from_json(MENU.as_bytes()).unwrap();
    let json = serde_json::to_vec(&flow).unwrap();
    assert_eq!(Flow::from_json(&json).unwrap(), flow);
}
