//! # memfactory-op-extract
//!
//! Fact extraction op (Memory-R1, arXiv 2508.19828, and Mem0 before it): for each new piece
//! of a conversation an LM lists the facts worth remembering; Memory-R1's memory manager
//! then decides ADD / UPDATE / DELETE / NOOP for each of them (`memfactory-op-update`).
//!
//! How it fits in MemFactory: a paradigm (`memory-r1`) renders dialogue turns one per line
//! into [`OpInput::observation`], e.g.
//! `[D1:3] Caroline (1:56 pm on 8 May, 2023): I went to a LGBTQ support group yesterday.`,
//! and calls [`MemoryOp::run_batch`] over the paths of a group: all paths share **one**
//! lockstep LM call, recorded on every episode under role [`ROLE`] (`"extract"`).
//! `question` and `memory` are not used. The op decides no edit: it returns one
//! [`MemoryItem`] per fact in [`OpOutput::items`] — id `""` (the paradigm assigns ids),
//! content = the fact, speaker = the fact's speaker (`None` when missing or empty), no
//! time or embedding, meta `{"source": "extract"}`.
//!
//! The model is asked for JSON:
//! `{"facts": [{"speaker": "Caroline", "fact": "Caroline attended an LGBTQ support group on 7 May 2023"}]}`
//! (an empty list is valid). Parsing ([`parse_facts`]):
//! - forgiving where it is safe: the JSON may sit inside a code fence or after/before prose —
//!   the first balanced `{...}` that is valid JSON is taken, and that is not an error;
//! - strict about the schema: no JSON object, invalid JSON (single-quoted keys included),
//!   a missing `facts` list, an entry that is not an object, a `fact` that is missing, not a
//!   string or empty, a `speaker` that is neither a string nor null → **no items** and
//!   [`OpOutput::parse_error`] says what was wrong (all-or-nothing: a half-valid list is not
//!   trusted). Other keys of an entry are ignored.
//! - `max_facts` caps the list: entries past the cap are dropped *before* validation and
//!   this is not an error.
//! - a reasoning model's `<think>…</think>` is stripped first (`strip_think`, default on;
//!   [`memfactory_core::text::strip_think`], MemAgent's `extract_solution`), so a draft
//!   object inside the reasoning is not taken for the reply. The recorded LM call keeps the
//!   raw generation.
//!
//! Recipe keys (defaults):
//!
//! ```toml
//! [agent.extract]
//! kind = "extract"
//! max_facts = 8                 # at most this many facts per call (>= 1)
//! template = "my_extract.txt"   # optional; placeholders {turns} (required) {max_facts}
//! max_new_tokens = 256          # sampling (greedy by default): temperature, top_k, top_p, stop
//! strip_think = true            # parse only the text after the last </think>
//! [agent.extract.model]         # optional: this role's own (e.g. frozen) model; absent = the episode's model
//! kind = "burn"
//! ```

use std::collections::BTreeMap;

use memfactory_core::{
    Cfg, EpisodeCx, LmOp, LmOpSpec, LmSettings, MemoryItem, MemoryOp, OpInput, OpOutput, Result,
};
use serde_json::Value;

/// The default extraction prompt.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/extract.txt");

/// Role name of the LM calls this op makes (trainers select turns by role).
pub const ROLE: &str = "extract";

/// Placeholders the template may use.
pub const PLACEHOLDERS: &[&str] = &["turns", "max_facts"];

/// Default cap on facts per call.
pub const DEFAULT_MAX_FACTS: usize = 8;

/// Default generation budget.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// One extracted fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// Whose fact (`None` when the model gave no or an empty speaker).
    pub speaker: Option<String>,
    /// The fact, trimmed.
    pub fact: String,
}

impl Fact {
    /// The memory item the op outputs for this fact (id `""`, meta `source = extract`).
    pub fn into_item(self) -> MemoryItem {
        let mut item = MemoryItem::new("", self.fact);
        item.speaker = self.speaker;
        item.meta = BTreeMap::from([("source".to_string(), "extract".to_string())]);
        item
    }
}

/// The extraction op (see the crate docs).
#[derive(Debug)]
pub struct Extract {
    /// Cap on facts per call.
    pub max_facts: usize,
    /// Template, sampling, `strip_think` (default on) and own model.
    pub lm: LmSettings,
}

/// The op's defaults: its template, greedy with 256 new tokens, `strip_think` on, and an own
/// `model` sub-table accepted.
pub const SPEC: LmOpSpec = LmOpSpec {
    template: DEFAULT_TEMPLATE,
    placeholders: PLACEHOLDERS,
    required: &["turns"],
    max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
    strip_think: Some(true),
    own_model: true,
};

impl Extract {
    /// The op with its defaults ([`SPEC`], [`DEFAULT_MAX_FACTS`], the episode's model).
    pub fn new() -> Result<Self> {
        Ok(Extract {
            max_facts: DEFAULT_MAX_FACTS,
            lm: LmSettings::defaults(&SPEC)?,
        })
    }

    /// The prompt text for `input`.
    pub fn prompt(&self, input: &OpInput<'_>) -> String {
        self.lm.template.render(&[
            ("turns", input.observation),
            ("max_facts", &self.max_facts.to_string()),
        ])
    }

    /// The op's output for the model's reply `text` (already past any `</think>`).
    pub fn output(&self, text: &str) -> OpOutput {
        match parse_facts(text, self.max_facts) {
            Ok(facts) => OpOutput {
                items: facts.into_iter().map(Fact::into_item).collect(),
                ..Default::default()
            },
            Err(e) => OpOutput {
                parse_error: Some(e),
                ..Default::default()
            },
        }
    }
}

impl LmOp for Extract {
    const KIND: &'static str = "extract";
    const ROLE: &'static str = ROLE;

    fn settings(&self) -> &LmSettings {
        &self.lm
    }

    fn prompt_text(&self, _cx: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<String> {
        Ok(self.prompt(input))
    }

    fn parse(&self, _cx: &EpisodeCx<'_>, _input: &OpInput<'_>, reply: &str) -> Result<OpOutput> {
        Ok(self.output(reply))
    }
}

pub use memfactory_core::text::find_json_object;

/// Parses the model's reply into at most `max_facts` facts (see the crate docs for the
/// rules). `Err` says what was wrong; the op then outputs no items.
pub fn parse_facts(text: &str, max_facts: usize) -> std::result::Result<Vec<Fact>, String> {
    let obj = find_json_object(text)?;
    let list = match obj.get("facts") {
        None => return Err("missing key `facts`".into()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("`facts` is not a list ({})", json_type(other))),
    };
    list.iter()
        .take(max_facts)
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(e) = entry else {
                return Err(format!(
                    "facts[{i}] is not an object ({})",
                    json_type(entry)
                ));
            };
            let fact = match e.get("fact") {
                None => return Err(format!("facts[{i}] has no `fact`")),
                Some(Value::String(s)) if s.trim().is_empty() => {
                    return Err(format!("facts[{i}].fact is empty"));
                }
                Some(Value::String(s)) => s.trim().to_string(),
                Some(other) => {
                    return Err(format!(
                        "facts[{i}].fact is not a string ({})",
                        json_type(other)
                    ));
                }
            };
            let speaker = match e.get("speaker") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(Value::String(s)) => Some(s.trim().to_string()),
                Some(other) => {
                    return Err(format!(
                        "facts[{i}].speaker is not a string ({})",
                        json_type(other)
                    ));
                }
            };
            Ok(Fact { speaker, fact })
        })
        .collect()
}

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
    let max_facts = cfg.get_checked(
        "max_facts",
        DEFAULT_MAX_FACTS,
        |n| *n >= 1,
        "a fact count >= 1",
    )?;
    Ok(Box::new(Extract {
        max_facts,
        lm: LmSettings::from_cfg(cfg, &SPEC)?,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "extract",
        about: "Fact extraction (Memory-R1 / Mem0): the LM lists the facts of dialogue turns as JSON {facts: [{speaker, fact}]}",
        build,
    }
}
