//! IVR flows (SPEC §6): `{"name": …, "start": "<node>", "nodes": {"<name>": {…}}}`, checked
//! at `POST`/`PUT` time against the store ([`Catalog`]) and run as verbs: each node becomes
//! a named block of the [`Program`], its links become `goto`s.
//!
//! What validation decides:
//! - A link to a node that does not exist, a prompt, queue, agent or trunk the catalog does
//!   not know, and a value out of range are errors naming the node (and the field).
//! - Cycles are legal (a menu's `invalid` node leading back to the menu is the usual
//!   shape), except a cycle made only of `set` nodes: it never waits for the caller, so it
//!   could only spin until the step cap; it is an error.
//! - A node no link reaches from `start` is a warning, not an error: a webhook's reply may
//!   `goto` any node, and operators keep drafts in a flow.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::program::{Blocks, Program};
use crate::verb::{
    self, Dial, DialStrategy, DialTarget, Enqueue, Gather, GatherPrompt, Goto, Hangup, Play,
    Record, Redirect, Set, Variables, Verb, VerbErrorKind, VerbPath, Verbs,
};

/// Most nodes in one flow.
pub const MAX_NODES: usize = 500;

/// An IVR flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    pub start: String,
    pub nodes: BTreeMap<String, Node>,
}

/// One node; `{"type": "menu", …}`. A missing `next` hangs up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Play a prompt, then `next`.
    Play {
        prompt: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Play a prompt and take one of `options` by the digits pressed. An invalid choice or
    /// none replays the prompt up to `max_retries` times, then goes to `invalid` or
    /// `timeout` (by the last attempt), or hangs up when that node is absent.
    Menu {
        prompt: String,
        options: BTreeMap<String, String>,
        #[serde(default = "five")]
        timeout_seconds: u32,
        #[serde(default = "two")]
        max_retries: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invalid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Collect digits into `variable`, then `next` (with or without input).
    Gather {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_digits: Option<u32>,
        #[serde(default = "hash_key")]
        finish_on_key: String,
        #[serde(default = "five")]
        timeout_seconds: u32,
        variable: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Wait in a queue; `next` after the agent hangs up.
    Enqueue {
        queue: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Ring an agent or a number (exactly one). `next` after the bridge ends; `no_answer`
    /// (busy, no answer, failed) or else `next` when nobody answered.
    Dial {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trunk: Option<String>,
        #[serde(default = "thirty")]
        ring_timeout_seconds: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller_id: Option<String>,
        #[serde(default)]
        record: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        no_answer: Option<String>,
    },
    /// Voicemail into a recording, its id stored into `variable`.
    Record {
        #[serde(default = "two_minutes")]
        max_length_seconds: u32,
        #[serde(default = "hash_key")]
        finish_on_key: String,
        #[serde(default = "yes")]
        beep: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        variable: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// POST the call and its variables to `url`; the reply is the verbs that run next
    /// (`{"verb": "goto", "node": "…"}` comes back into the flow).
    Webhook {
        url: String,
    },
    Set {
        variables: Variables,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Hangup {},
}

fn five() -> u32 {
    5
}
fn two() -> u32 {
    2
}
fn thirty() -> u32 {
    30
}
fn two_minutes() -> u32 {
    120
}
fn yes() -> bool {
    true
}
fn hash_key() -> String {
    "#".to_owned()
}

impl Node {
    /// The nodes this one links to, with the field that names each.
    pub fn links(&self) -> Vec<(String, &str)> {
        fn add<'a>(out: &mut Vec<(String, &'a str)>, field: &str, target: &'a Option<String>) {
            if let Some(t) = target {
                out.push((field.to_owned(), t.as_str()));
            }
        }
        let mut out = Vec::new();
        match self {
            Node::Play { next, .. }
            | Node::Gather { next, .. }
            | Node::Enqueue { next, .. }
            | Node::Record { next, .. }
            | Node::Set { next, .. } => add(&mut out, "next", next),
            Node::Menu {
                options,
                invalid,
                timeout,
                ..
            } => {
                add(&mut out, "invalid", invalid);
                add(&mut out, "timeout", timeout);
                for (key, target) in options {
                    out.push((format!("options.{key}"), target.as_str()));
                }
            }
            Node::Dial {
                next, no_answer, ..
            } => {
                add(&mut out, "next", next);
                add(&mut out, "no_answer", no_answer);
            }
            Node::Webhook { .. } | Node::Hangup {} => {}
        }
        out
    }

    /// The node's verbs: its block in the program.
    pub fn verbs(&self) -> Verbs {
        fn then(next: &Option<String>) -> Verb {
            match next {
                Some(node) => Verb::Goto(Goto { node: node.clone() }),
                None => Verb::Hangup(Hangup {}),
            }
        }
        fn prompt(name: &str) -> Play {
            Play {
                prompt: Some(name.to_owned()),
                url: None,
                loop_count: 1,
            }
        }
        match self {
            Node::Play { prompt: p, next } => vec![Verb::Play(prompt(p)), then(next)],
            Node::Menu {
                prompt: p,
                options,
                timeout_seconds,
                max_retries,
                invalid,
                timeout,
            } => {
                let longest = options.keys().map(|k| k.chars().count()).max().unwrap_or(1);
                vec![Verb::Gather(Gather {
                    max_digits: Some(u32::try_from(longest).unwrap_or(u32::MAX)),
                    // Any key may be an option, `#` included.
                    finish_on_key: String::new(),
                    timeout_seconds: *timeout_seconds,
                    prompts: vec![GatherPrompt::Play(prompt(p))],
                    variable: None,
                    options: options
                        .iter()
                        .map(|(k, node)| (k.clone(), vec![then(&Some(node.clone()))]))
                        .collect(),
                    max_retries: *max_retries,
                    on_invalid: Some(vec![then(invalid)]),
                    on_timeout: Some(vec![then(timeout)]),
                    next: None,
                })]
            }
            Node::Gather {
                prompt: p,
                max_digits,
                finish_on_key,
                timeout_seconds,
                variable,
                next,
            } => vec![
                Verb::Gather(Gather {
                    max_digits: *max_digits,
                    finish_on_key: finish_on_key.clone(),
                    timeout_seconds: *timeout_seconds,
                    prompts: p.iter().map(|p| GatherPrompt::Play(prompt(p))).collect(),
                    variable: Some(variable.clone()),
                    options: BTreeMap::new(),
                    max_retries: 0,
                    on_invalid: None,
                    on_timeout: None,
                    next: None,
                }),
                then(next),
            ],
            Node::Enqueue { queue, next } => vec![
                Verb::Enqueue(Enqueue {
                    queue: queue.clone(),
                }),
                then(next),
            ],
            Node::Dial {
                agent,
                number,
                trunk,
                ring_timeout_seconds,
                caller_id,
                record,
                next,
                no_answer,
            } => {
                let targets = match (agent, number) {
                    (Some(agent), _) => vec![DialTarget::Agent {
                        agent: agent.clone(),
                    }],
                    (None, Some(number)) => vec![DialTarget::Number {
                        number: number.clone(),
                        trunk: trunk.clone(),
                    }],
                    (None, None) => Vec::new(),
                };
                let failed = no_answer.as_ref().map(|n| vec![then(&Some(n.clone()))]);
                vec![
                    Verb::Dial(Dial {
                        targets,
                        strategy: DialStrategy::Simultaneous,
                        ring_timeout_seconds: *ring_timeout_seconds,
                        caller_id: caller_id.clone(),
                        record: *record,
                        on_answered: None,
                        on_busy: failed.clone(),
                        on_no_answer: failed.clone(),
                        on_failed: failed,
                    }),
                    then(next),
                ]
            }
            Node::Record {
                max_length_seconds,
                finish_on_key,
                beep,
                variable,
                next,
            } => vec![
                Verb::Record(Record {
                    max_length_seconds: *max_length_seconds,
                    finish_on_key: finish_on_key.clone(),
                    beep: *beep,
                    variable: variable.clone(),
                }),
                then(next),
            ],
            Node::Webhook { url } => vec![Verb::Redirect(Redirect { url: url.clone() })],
            Node::Set { variables, next } => vec![
                Verb::Set(Set {
                    variables: variables.clone(),
                }),
                then(next),
            ],
            Node::Hangup {} => vec![Verb::Hangup(Hangup {})],
        }
    }
}

/// What a flow refers to outside itself; the API answers from the store.
pub trait Catalog {
    /// A prompt by id or unique name.
    fn prompt_exists(&self, prompt: &str) -> bool;
    fn queue_exists(&self, queue: &str) -> bool;
    fn agent_exists(&self, agent: &str) -> bool;
    fn trunk_exists(&self, trunk: &str) -> bool;
}

/// One thing wrong with a flow; `node` is the node it is in (none: the flow itself).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct FlowError {
    pub node: Option<String>,
    pub kind: FlowErrorKind,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node {node:?}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlowErrorKind {
    /// serde's message (unknown field or type, missing field).
    #[error("{0}")]
    Parse(String),
    #[error("`start` names no node: {start:?}")]
    MissingStart { start: String },
    #[error("`{field}` names no node: {target:?}")]
    MissingNode { field: String, target: String },
    #[error("no prompt {prompt:?}")]
    MissingPrompt { prompt: String },
    #[error("no queue {queue:?}")]
    MissingQueue { queue: String },
    #[error("no agent {agent:?}")]
    MissingAgent { agent: String },
    #[error("no trunk {trunk:?}")]
    MissingTrunk { trunk: String },
    #[error("a menu needs at least one option")]
    NoOptions,
    #[error("a dial needs exactly one of `agent` and `number`")]
    DialTarget,
    #[error("node names must be 1..=64 of [A-Za-z0-9_-]")]
    BadName,
    #[error("`name` must not be empty")]
    EmptyName,
    #[error("more than {max} nodes")]
    TooManyNodes { max: usize },
    #[error("the `set` nodes {nodes:?} loop without ever waiting for the caller")]
    LoopWithoutWait { nodes: Vec<String> },
    /// A value out of range or malformed (the field is named in it).
    #[error("{0}")]
    Value(VerbErrorKind),
}

/// Everything wrong with a flow, in node order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct FlowErrors(pub Vec<FlowError>);

impl fmt::Display for FlowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What a valid flow may still want to tell its author.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowCheck {
    /// Nodes no link reaches from `start` (a webhook's reply may still `goto` them).
    pub unreachable: Vec<String>,
}

fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

impl Flow {
    /// Parses a flow, naming the node whose JSON does not fit.
    pub fn from_json(json: &[u8]) -> Result<Flow, FlowError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: String,
            start: String,
            nodes: BTreeMap<String, serde_json::Value>,
        }
        let parse = |node: Option<&String>, e: serde_json::Error| FlowError {
            node: node.cloned(),
            kind: FlowErrorKind::Parse(e.to_string()),
        };
        let raw: Raw = serde_json::from_slice(json).map_err(|e| parse(None, e))?;
        if raw.nodes.len() > MAX_NODES {
            return Err(FlowError {
                node: None,
                kind: FlowErrorKind::TooManyNodes { max: MAX_NODES },
            });
        }
        let mut nodes = BTreeMap::new();
        for (name, value) in raw.nodes {
            let node = serde_json::from_value(value).map_err(|e| parse(Some(&name), e))?;
            nodes.insert(name, node);
        }
        Ok(Flow {
            name: raw.name,
            start: raw.start,
            nodes,
        })
    }

    /// Checks the flow against itself and the catalog; every error is reported.
    pub fn validate(&self, catalog: &dyn Catalog) -> Result<FlowCheck, FlowErrors> {
        let mut errors = Vec::new();
        let mut error = |node: Option<&str>, kind| {
            errors.push(FlowError {
                node: node.map(str::to_owned),
                kind,
            });
        };
        if self.name.trim().is_empty() {
            error(None, FlowErrorKind::EmptyName);
        }
        if self.nodes.len() > MAX_NODES {
            error(None, FlowErrorKind::TooManyNodes { max: MAX_NODES });
        }
        if !self.nodes.contains_key(&self.start) {
            error(
                None,
                FlowErrorKind::MissingStart {
                    start: self.start.clone(),
                },
            );
        }
        for (name, node) in &self.nodes {
            let at = Some(name.as_str());
            if !is_node_name(name) {
                error(at, FlowErrorKind::BadName);
            }
            for (field, target) in node.links() {
                if !self.nodes.contains_key(target) {
                    error(
                        at,
                        FlowErrorKind::MissingNode {
                            field,
                            target: target.to_owned(),
                        },
                    );
                }
            }
            for kind in check_refs(node, catalog) {
                error(at, kind);
            }
            // Values: the node's verbs are checked as any program is (links were checked
            // above, so `goto` targets are taken as existing here).
            match verb::validate_at(&node.verbs(), VerbPath::block(name), &|_| true) {
                // Said already as `DialTarget`.
                Err(e) if e.kind == (VerbErrorKind::Empty { field: "targets" }) => {}
                Err(e) => error(at, FlowErrorKind::Value(e.kind)),
                Ok(()) => {}
            }
        }
        if let Some(nodes) = self.set_loop() {
            let first = nodes.first().cloned();
            error(first.as_deref(), FlowErrorKind::LoopWithoutWait { nodes });
        }
        if !errors.is_empty() {
            return Err(FlowErrors(errors));
        }
        Ok(FlowCheck {
            unreachable: self.unreachable(),
        })
    }

    /// A cycle made only of `set` nodes, if any (each has one successor, so walking at
    /// most `n` links from each finds it).
    fn set_loop(&self) -> Option<Vec<String>> {
        let succ = |name: &str| match self.nodes.get(name) {
            Some(Node::Set { next: Some(n), .. }) => Some(n.as_str()),
            _ => None,
        };
        for start in self.nodes.keys() {
            let mut path = vec![start.as_str()];
            let mut at = start.as_str();
            while let Some(next) = succ(at) {
                if next == start {
                    return Some(path.into_iter().map(str::to_owned).collect());
                }
                if path.contains(&next) || path.len() > self.nodes.len() {
                    break;
                }
                path.push(next);
                at = next;
            }
        }
        None
    }

    fn unreachable(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.start.as_str()];
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            if let Some(node) = self.nodes.get(name) {
                todo.extend(node.links().into_iter().map(|(_, t)| t));
            }
        }
        self.nodes
            .keys()
            .filter(|n| !seen.contains(n.as_str()))
            .cloned()
            .collect()
    }

    /// The flow's nodes as blocks of verbs, built once per flow version and shared by its
    /// calls ([`Program::with_blocks`]). Validate the flow first: this only re-checks the
    /// verbs.
    pub fn compile(&self) -> Result<Blocks, verb::VerbError> {
        let blocks = self
            .nodes
            .iter()
            .map(|(name, node)| (name.clone(), node.verbs()))
            .collect();
        Blocks::new(blocks, &self.start)
    }

    /// The flow as a program ([`Flow::compile`] then [`Program::with_blocks`]).
    pub fn program(&self, vars: Variables) -> Result<Program, verb::VerbError> {
        Ok(Program::with_blocks(&self.compile()?, vars))
    }
}

fn check_refs(node: &Node, catalog: &dyn Catalog) -> Vec<FlowErrorKind> {
    let mut out = Vec::new();
    let mut prompt = |p: &str| {
        if !catalog.prompt_exists(p) {
            out.push(FlowErrorKind::MissingPrompt {
                prompt: p.to_owned(),
            });
        }
    };
    match node {
        Node::Play { prompt: p, .. } | Node::Menu { prompt: p, .. } => prompt(p),
        Node::Gather {
            prompt: Some(p), ..
        } => prompt(p),
        _ => {}
    }
    match node {
        Node::Menu { options, .. } if options.is_empty() => out.push(FlowErrorKind::NoOptions),
        Node::Enqueue { queue, .. } if !catalog.queue_exists(queue) => {
            out.push(FlowErrorKind::MissingQueue {
                queue: queue.clone(),
            });
        }
        Node::Dial {
            agent,
            number,
            trunk,
            ..
        } => {
            match (agent, number) {
                (Some(a), None) if !catalog.agent_exists(a) => {
                    out.push(FlowErrorKind::MissingAgent { agent: a.clone() });
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => out.push(FlowErrorKind::DialTarget),
            }
            if let Some(t) = trunk.as_ref().filter(|t| !catalog.trunk_exists(t)) {
                out.push(FlowErrorKind::MissingTrunk { trunk: t.clone() });
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests;
