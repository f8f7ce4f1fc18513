//! # memfactory-op-update
//!
//! Memory-R1's Memory Manager (arXiv 2508.19828, Mem0-style operations): for ONE newly
//! extracted fact and the existing memories related to it, the LM chooses exactly one of
//! **ADD** (a new memory), **UPDATE** (rewrite a related memory), **DELETE** (remove a related
//! memory the fact contradicts) or **NOOP** (nothing to change). Memory-R1 trains this
//! manager with RL, rewarding it by the answer agent's success after its operations.
//!
//! How it fits in MemFactory: the `memory-r1` paradigm puts the fact (with the speaker's
//! name in it) into [`OpInput::observation`] and the related memories it retrieved, with
//! their real store ids, into [`OpInput::memory`] (`question` is not used), then calls
//! [`MemoryOp::run_batch`] over the group's paths: **one** lockstep LM call, recorded on every
//! episode under role [`ROLE`] (`"manage"`). The prompt shows the related memories with short
//! local indices `0..n` (never store ids) and asks for one JSON object:
//!
//! ```json
//! {"op": "ADD" | "UPDATE" | "DELETE" | "NOOP", "id": 0, "content": "new memory text"}
//! ```
//!
//! `id` is needed by UPDATE / DELETE, `content` by ADD / UPDATE; other keys are ignored.
//! Forgiving where it is safe: op names in any case, `"NONE"` read as NOOP, `id` as a number
//! or a numeric string, the object inside a code fence or after prose (the first balanced
//! `{...}` that is valid JSON). Strict about the schema ([`parse_decision`]): invalid JSON
//! (single-quoted keys included), an unknown op, a missing, non-integer or out-of-range id,
//! a missing, non-string or empty content → the edit is [`MemoryEdit::Noop`] and
//! [`OpOutput::parse_error`] says what was wrong. Never `Err` for model output.
//! A reasoning model's `<think>…</think>` is stripped before parsing (`strip_think`, default
//! on; [`memfactory_core::text::strip_think`], MemAgent's `extract_solution`), so a draft
//! decision inside the reasoning is not taken; the recorded LM call keeps the raw generation.
//!
//! Output: `edits` holds exactly one edit ([`Decision::into_edit`]):
//! - ADD → [`MemoryEdit::Add`] of an item with a fresh id `m{n}`, n = 1 + the largest `n`
//!   of the store's existing `m<number>` ids (1 when none; [`fresh_id`]), content = the
//!   model's content, speaker / time / embedding `None` (the paradigm fills them);
//! - UPDATE → [`MemoryEdit::Update`] of the real id of `memory[id]`, embedding `None`;
//! - DELETE → [`MemoryEdit::Delete`] of the real id of `memory[id]`;
//! - NOOP → [`MemoryEdit::Noop`].
//!
//! Recipe keys (defaults):
//!
//! ```toml
//! [agent.manage]
//! kind = "update"
//! template = "my_manage.txt"    # optional; placeholders {fact} {memories} (both required)
//! empty_memory = "(none)"       # what an empty list of related memories reads as
//! max_new_tokens = 128          # sampling (greedy by default): temperature, top_k, top_p, stop
//! strip_think = true            # parse only the text after the last </think>
//! [agent.manage.model]          # optional: this role's own (e.g. frozen) model; absent = the episode's model
//! kind = "burn"
//! ```

use memfactory_core::{
    Cfg, EpisodeCx, LmOp, LmOpSpec, LmSettings, MemoryEdit, MemoryItem, MemoryOp, OpInput,
    OpOutput, Result,
};
use serde_json::Value;

/// The default manager prompt.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/manage.txt");

/// Role name of the LM calls this op makes (trainers select turns by role).
pub const ROLE: &str = "manage";

/// Placeholders of the template (both required).
pub const PLACEHOLDERS: &[&str] = &["fact", "memories"];

/// Default generation budget.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

/// Default text of an empty list of related memories.
pub const DEFAULT_EMPTY_MEMORY: &str = "(none)";

/// The manager's decision, with `index` into the related memories shown to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add a new memory.
    Add {
        /// Its text.
        content: String,
    },
    /// Rewrite related memory `index`.
    Update {
        /// Index into the related memories.
        index: usize,
        /// The new text.
        content: String,
    },
    /// Remove related memory `index`.
    Delete {
        /// Index into the related memories.
        index: usize,
    },
    /// Change nothing.
    Noop,
}

impl Decision {
    /// The store edit: `memory` is the list [`parse_decision`] checked the index against
    /// (an index outside it gives [`MemoryEdit::Noop`]); `fresh_id` names an added item.
    pub fn into_edit(self, memory: &[MemoryItem], fresh_id: &str) -> MemoryEdit {
        match self {
            Decision::Add { content } => MemoryEdit::Add {
                item: MemoryItem::new(fresh_id, content),
            },
            Decision::Update { index, content } => match memory.get(index) {
                Some(m) => MemoryEdit::Update {
                    id: m.id.clone(),
                    content,
                    embedding: None,
                },
                None => MemoryEdit::Noop,
            },
            Decision::Delete { index } => match memory.get(index) {
                Some(m) => MemoryEdit::Delete { id: m.id.clone() },
                None => MemoryEdit::Noop,
            },
            Decision::Noop => MemoryEdit::Noop,
        }
    }
}

/// `m{n}` with n = 1 + the largest `n` of the `m<number>` ids among `items` (1 when none).
pub fn fresh_id(items: &[MemoryItem]) -> String {
    let max = items
        .iter()
        .filter_map(|i| {
            let digits = i.id.strip_prefix('m')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0);
    format!("m{}", max.saturating_add(1))
}

/// The manager op.
#[derive(Debug)]
pub struct Update {
    /// What an empty list of related memories reads as.
    pub empty_memory: String,
    /// Template, sampling, `strip_think` (default on) and own model.
    pub lm: LmSettings,
}

/// The op's defaults: its template, greedy with 128 new tokens, `strip_think` on, and an own
/// `model` sub-table accepted.
pub const SPEC: LmOpSpec = LmOpSpec {
    template: DEFAULT_TEMPLATE,
    placeholders: PLACEHOLDERS,
    required: PLACEHOLDERS,
    max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
    strip_think: Some(true),
    own_model: true,
};

impl Update {
    /// The op with its defaults ([`SPEC`], the episode's model).
    pub fn new() -> Result<Self> {
        Ok(Update {
            empty_memory: DEFAULT_EMPTY_MEMORY.into(),
            lm: LmSettings::defaults(&SPEC)?,
        })
    }

    /// The related memories as shown to the model: `i: content` per line (newlines inside
    /// a memory become spaces), or `empty_memory`.
    pub fn memories_text(&self, memory: &[MemoryItem]) -> String {
        if memory.is_empty() {
            return self.empty_memory.clone();
        }
        memory
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{i}: {}", one_line(&m.content)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The prompt text for `input`.
    pub fn prompt(&self, input: &OpInput<'_>) -> String {
        self.lm.template.render(&[
            ("fact", one_line(input.observation).as_str()),
            ("memories", &self.memories_text(input.memory)),
        ])
    }

    /// The op's output for the model's reply `text` (already past any `</think>`) in episode
    /// `cx` (whose store gives the fresh id of an ADD).
    pub fn output(&self, cx: &EpisodeCx<'_>, input: &OpInput<'_>, text: &str) -> Result<OpOutput> {
        Ok(match parse_decision(text, input.memory) {
            Ok(d) => {
                let id = match d {
                    Decision::Add { .. } => fresh_id(&cx.store().items()?),
                    _ => String::new(),
                };
                OpOutput {
                    edits: vec![d.into_edit(input.memory, &id)],
                    ..Default::default()
                }
            }
            Err(e) => OpOutput {
                edits: vec![MemoryEdit::Noop],
                parse_error: Some(e),
                ..Default::default()
            },
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl LmOp for Update {
    const KIND: &'static str = "update";
    const ROLE: &'static str = ROLE;

    fn settings(&self) -> &LmSettings {
        &self.lm
    }

    fn prompt_text(&self, _cx: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<String> {
        Ok(self.prompt(input))
    }

    fn parse(&self, cx: &EpisodeCx<'_>, input: &OpInput<'_>, reply: &str) -> Result<OpOutput> {
        self.output(cx, input, reply)
    }
}

/// Parses the manager's reply against the `memory` shown to it (see the crate docs).
/// `Err` says what was wrong; the op then decides [`MemoryEdit::Noop`].
pub fn parse_decision(text: &str, memory: &[MemoryItem]) -> std::result::Result<Decision, String> {
    let obj = find_json_object(text)?;
    let op = match obj.get("op") {
        None => return Err("missing key `op`".into()),
        Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
        Some(other) => return Err(format!("`op` is not a string ({})", json_type(other))),
    };
    let index = || -> std::result::Result<usize, String> {
        let n = match obj.get("id") {
            None | Some(Value::Null) => return Err(format!("{op} needs an `id`")),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| format!("`id` {n} is not a memory index (a whole number >= 0)"))?,
            Some(Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("`id` {s:?} is not a memory index (a whole number >= 0)"))?,
            Some(other) => return Err(format!("`id` is not a number ({})", json_type(other))),
        };
        if n >= memory.len() as u64 {
            return Err(if memory.is_empty() {
                format!("{op} of memory {n}, but there are no related memories")
            } else {
                format!(
                    "{op} of memory {n}, but the related memories are numbered 0..={}",
                    memory.len() - 1
                )
            });
        }
        Ok(n as usize)
    };
    let content = || -> std::result::Result<String, String> {
        match obj.get("content") {
            None | Some(Value::Null) => Err(format!("{op} needs a `content`")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(format!("{op} has an empty `content`"))
            }
            Some(Value::String(s)) => Ok(s.trim().to_string()),
            Some(other) => Err(format!("`content` is not a string ({})", json_type(other))),
        }
    };
    match op.as_str() {
        "ADD" => Ok(Decision::Add {
            content: content()?,
        }),
        "UPDATE" => {
            let index = index()?;
            Ok(Decision::Update {
                index,
                content: content()?,
            })
        }
        "DELETE" => Ok(Decision::Delete { index: index()? }),
        "NOOP" | "NONE" => Ok(Decision::Noop),
        _ => Err(format!(
            "unknown op {:?} (expected ADD, UPDATE, DELETE or NOOP)",
            obj.get("op").and_then(Value::as_str).unwrap_or_default()
        )),
    }
}

pub use memfactory_core::text::find_json_object;

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    let empty_memory = cfg.get("empty_memory", DEFAULT_EMPTY_MEMORY.to_string())?;
    Ok(Box::new(Update {
        empty_memory,
        lm: LmSettings::from_cfg(cfg, &SPEC)?,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "update",
        about: "Memory-R1 memory manager: ADD / UPDATE / DELETE / NOOP for a new fact against related memories, as schema-checked JSON",
        build,
    }
}
