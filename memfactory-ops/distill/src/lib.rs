//! # memfactory-op-distill
//!
//! Memory-R1's Answer Agent (arXiv 2508.19828): given a question and the retrieved
//! candidate memories (60 in the paper: the top 30 of each speaker), the LM performs
//! **Memory Distillation** — it first lists the memories relevant to the question, then
//! answers briefly from them. Memory-R1 trains this agent with RL, rewarded by exact match.
//!
//! How it fits in MemFactory: the `memory-r1` paradigm passes [`OpInput::question`] and the
//! candidates in order ([`OpInput::memory`], from `memfactory-op-retrieve`; `observation` is
//! not used) and calls [`MemoryOp::run_batch`] over the group's paths: **one** lockstep LM
//! call, recorded on every episode under role [`ROLE`] (`"answer"`). The prompt numbers the
//! memories from 0 with speaker and time when present
//! (`[3] (Caroline, 8 May 2023) Caroline attended ...`; [`render_memories`]) and asks for
//!
//! ```text
//! Relevant: 3, 7
//! Answer: <short answer>
//! ```
//!
//! With `distill = false` (the ablation) a different default prompt asks for the
//! `Answer:` line only; the `Relevant:` line is then neither expected nor read.
//!
//! Parsing ([`parse_reply`]):
//! - the answer is the first non-empty line after the LAST `Answer:` (case-insensitive),
//!   trimmed — later lines are dropped (a short answer is asked for). No `Answer:` →
//!   `parse_error`, and the answer is the whole output trimmed (so it is still scored);
//!   nothing after `Answer:` → `parse_error`, empty answer;
//! - the relevant memories are read from the first line that starts with `Relevant:`
//!   (case-insensitive; the line is cut at an `Answer:` on it): every whole number on it
//!   that is a valid index, in the order listed, duplicates removed. Words (`none`) are
//!   ignored; numbers that are not valid indices (too large, negative) are named in
//!   `parse_error` and ignored; no `Relevant:` line (when `distill = true`) → `parse_error`,
//!   no selection.
//!
//! Output: [`OpOutput::text`] = the answer, [`OpOutput::items`] = the selected memories in
//! the order listed (empty with `distill = false`), no edits; several problems are joined
//! with `; ` in [`OpOutput::parse_error`].
//!
//! Recipe keys (defaults):
//!
//! ```toml
//! [agent.answer]
//! kind = "distill"
//! distill = true                  # list the relevant memories first (false = answer only; ablation)
//! template = "my_answer.txt"      # optional; placeholders {question} {memories} (both required)
//! empty_memory = "(no memories)"  # what an empty candidate list reads as
//! max_new_tokens = 128            # sampling (greedy by default): temperature, top_k, top_p, stop
//! [agent.answer.model]            # optional: this role's own (e.g. frozen) model; absent = the episode's model
//! kind = "burn"
//! ```

use memfactory_core::{
    Cfg, EpisodeCx, LmOp, LmOpSpec, LmSettings, MemoryItem, MemoryOp, OpInput, OpOutput, Result,
};

/// The default prompt with memory distillation (`distill = true`).
pub const DISTILL_TEMPLATE: &str = include_str!("../templates/distill.txt");

/// The default answer-only prompt (`distill = false`).
pub const ANSWER_TEMPLATE: &str = include_str!("../templates/answer.txt");

/// Role name of the LM calls this op makes (trainers select turns by role).
pub const ROLE: &str = "answer";

/// Placeholders of the templates (both required).
pub const PLACEHOLDERS: &[&str] = &["question", "memories"];

/// Default generation budget.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

/// Default text of an empty candidate list.
pub const DEFAULT_EMPTY_MEMORY: &str = "(no memories)";

/// A parsed answer-agent reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The answer (the whole output trimmed when there was no `Answer:`).
    pub answer: String,
    /// Indices of the relevant memories, in the order listed, valid and distinct.
    pub relevant: Vec<usize>,
    /// What was wrong, in order; empty when the reply followed the format.
    pub errors: Vec<String>,
}

impl Reply {
    /// The problems joined with `; `, or `None`.
    pub fn parse_error(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| self.errors.join("; "))
    }
}

/// Parses `text` against `n` candidate memories; `distill` says whether a `Relevant:` line
/// is expected (see the crate docs).
pub fn parse_reply(text: &str, n: usize, distill: bool) -> Reply {
    let mut reply = Reply::default();
    let lower = text.to_ascii_lowercase();
    if distill {
        let line = text
            .lines()
            .map(str::trim_start)
            .find(|l| l.to_ascii_lowercase().starts_with("relevant:"));
        match line {
            None => reply.errors.push("missing `Relevant:` line".into()),
            Some(line) => {
                let body = &line["relevant:".len()..];
                let body = match body.to_ascii_lowercase().find("answer:") {
                    Some(p) => &body[..p],
                    None => body,
                };
                let (relevant, bad) = indices(body, n);
                reply.relevant = relevant;
                if !bad.is_empty() {
                    reply.errors.push(format!(
                        "relevant memor{} {} not among the {n} memories (numbered from 0)",
                        if bad.len() == 1 { "y" } else { "ies" },
                        bad.join(", ")
                    ));
                }
            }
        }
    }
    match lower.rfind("answer:") {
        None => {
            reply.errors.push("missing `Answer:`".into());
            reply.answer = text.trim().to_string();
        }
        Some(p) => {
            let after = &text[p + "answer:".len()..];
            match after.lines().map(str::trim).find(|l| !l.is_empty()) {
                Some(a) => reply.answer = a.to_string(),
                None => reply.errors.push("empty answer after `Answer:`".into()),
            }
        }
    }
    reply
}

/// The whole numbers of `body` that index one of `n` memories (in order, distinct), and
/// the ones that do not (as written, a leading `-` kept).
fn indices(body: &str, n: usize) -> (Vec<usize>, Vec<String>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let negative = start > 0 && bytes[start - 1] == b'-';
        let digits = &body[start..i];
        match digits.parse::<usize>() {
            Ok(v) if !negative && v < n => {
                if !ok.contains(&v) {
                    ok.push(v);
                }
            }
            _ => {
                let shown = if negative {
                    format!("-{digits}")
                } else {
                    digits.to_string()
                };
                if !bad.contains(&shown) {
                    bad.push(shown);
                }
            }
        }
    }
    (ok, bad)
}

/// The candidates as shown to the model: `[i] (speaker, time) content` per line (the
/// parenthesis lists what is present and is left out when neither is; newlines inside a
/// memory become spaces), or `empty` when there are none.
pub fn render_memories(memory: &[MemoryItem], empty: &str) -> String {
    if memory.is_empty() {
        return empty.to_string();
    }
    memory
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let tags: Vec<&str> = [m.speaker.as_deref(), m.time.as_deref()]
                .into_iter()
                .flatten()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let content = m.content.split_whitespace().collect::<Vec<_>>().join(" ");
            if tags.is_empty() {
                format!("[{i}] {content}")
            } else {
                format!("[{i}] ({}) {content}", tags.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The answer-agent op.
#[derive(Debug)]
pub struct Distill {
    /// List the relevant memories before answering.
    pub distill: bool,
    /// What an empty candidate list reads as.
    pub empty_memory: String,
    /// Template, sampling and own model (the reply is parsed whole: no `strip_think`).
    pub lm: LmSettings,
}

/// The op's defaults for `distill`: its template, greedy with 128 new tokens, an own `model`
/// sub-table accepted. The parser reads the whole reply, so `strip_think` is not a key.
pub fn spec(distill: bool) -> LmOpSpec {
    LmOpSpec {
        template: if distill {
            DISTILL_TEMPLATE
        } else {
            ANSWER_TEMPLATE
        },
        placeholders: PLACEHOLDERS,
        required: PLACEHOLDERS,
        max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
        strip_think: None,
        own_model: true,
    }
}

impl Distill {
    /// The op with its defaults for `distill` ([`spec`], the episode's model).
    pub fn new(distill: bool) -> Result<Self> {
        Ok(Distill {
            distill,
            empty_memory: DEFAULT_EMPTY_MEMORY.into(),
            lm: LmSettings::defaults(&spec(distill))?,
        })
    }

    /// The prompt text for `input`.
    pub fn prompt(&self, input: &OpInput<'_>) -> String {
        let memories = render_memories(input.memory, &self.empty_memory);
        self.lm
            .template
            .render(&[("question", input.question.trim()), ("memories", &memories)])
    }

    /// The op's output for the model's reply `text` to `input`.
    pub fn output(&self, input: &OpInput<'_>, text: &str) -> OpOutput {
        let reply = parse_reply(text, input.memory.len(), self.distill);
        OpOutput {
            edits: Vec::new(),
            items: reply
                .relevant
                .iter()
                .map(|&i| input.memory[i].clone())
                .collect(),
            parse_error: reply.parse_error(),
            text: Some(reply.answer),
        }
    }
}

impl LmOp for Distill {
    const KIND: &'static str = "distill";
    const ROLE: &'static str = ROLE;

    fn settings(&self) -> &LmSettings {
        &self.lm
    }

    fn prompt_text(&self, _cx: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<String> {
        Ok(self.prompt(input))
    }

    fn parse(&self, _cx: &EpisodeCx<'_>, input: &OpInput<'_>, reply: &str) -> Result<OpOutput> {
        Ok(self.output(input, reply))
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    let distill: bool = cfg.get("distill", true)?;
    let empty_memory = cfg.get("empty_memory", DEFAULT_EMPTY_MEMORY.to_string())?;
    Ok(Box::new(Distill {
        distill,
        empty_memory,
        lm: LmSettings::from_cfg(cfg, &spec(distill))?,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "distill",
        about: "Memory-R1 answer agent: memory distillation (Relevant: <numbers>) then a short answer (Answer: ...); distill = false answers only",
        build,
    }
}
