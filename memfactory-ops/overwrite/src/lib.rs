//! # memfactory-op-overwrite
//!
//! MemAgent's memory update (arXiv 2507.02259): given the problem, the previous memory and
//! a new chunk of context, the LM writes the new memory, which *overwrites* the old one.
//! The new memory is generated with at most `memory_tokens` tokens and then hard-truncated
//! to `memory_tokens` tokens of the LM's tokenizer (reproductions insist on the cap).
//! An empty bank is shown to the model as `empty_memory` ("No previous memory").
//!
//! A reasoning model's `<think>…</think>` block is stripped before the memory is stored
//! (`strip_think`, default on): the stored memory is the text after the last `</think>`, as
//! MemAgent's evaluation does to every memory update
//! ([`memfactory_core::text::strip_think`], MemAgent's `extract_solution`,
//! BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146
//! `taskutils/memory_eval/utils/__init__.py:20-38`). Text without `</think>` is stored as is
//! (an unclosed `<think>` — reasoning cut off by the budget — is kept whole, as MemAgent
//! does). Only the stored text changes: the LM call recorded in the episode keeps the raw
//! generation and its token ids, which is what training learns from.
//!
//! The op decides an [`MemoryEdit::Overwrite`]; the paradigm applies it. Registered as op
//! kind `overwrite`. Recipe keys (defaults):
//!
//! ```toml
//! [agent.update]
//! kind = "overwrite"
//! memory_tokens = 1024          # cap of the memory, in tokens
//! template = "my_update.txt"    # optional; placeholders {prompt} {memory} {chunk}
//! empty_memory = "No previous memory"
//! temperature = 0.0             # sampling of the update (0 = greedy); top_k, top_p, stop
//! strip_think = true            # store only the text after the last </think>
//! ```

use memfactory_core::{
    Cfg, EpisodeCx, LmOp, LmOpSpec, LmSettings, MemoryEdit, MemoryOp, OpInput, OpOutput, Result,
};

/// The default update prompt (MemAgent's `TEMPLATE`).
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/update.txt");

/// Role name of the LM calls this op makes (trainers select turns by role).
pub const ROLE: &str = "memory-update";

/// The overwrite op.
#[derive(Debug)]
pub struct Overwrite {
    /// Memory cap in tokens.
    pub memory_tokens: usize,
    /// What an empty memory reads as.
    pub empty_memory: String,
    /// Template, sampling (`max_new_tokens` defaults to `memory_tokens`) and `strip_think`
    /// (default on). The update runs on the episode's model: it is the policy.
    pub lm: LmSettings,
}

/// The op's defaults for a `memory_tokens` cap: MemAgent's template, greedy with
/// `memory_tokens` new tokens, `strip_think` on, no own model.
pub fn spec(memory_tokens: usize) -> LmOpSpec {
    LmOpSpec {
        template: DEFAULT_TEMPLATE,
        placeholders: &["prompt", "memory", "chunk"],
        required: &["memory", "chunk"],
        max_new_tokens: memory_tokens,
        strip_think: Some(true),
        own_model: false,
    }
}

impl Overwrite {
    /// The op with MemAgent's defaults and a `memory_tokens` cap.
    pub fn new(memory_tokens: usize) -> Result<Self> {
        Ok(Overwrite {
            memory_tokens,
            empty_memory: "No previous memory".into(),
            lm: LmSettings::defaults(&spec(memory_tokens))?,
        })
    }

    /// The memory text shown to the model for `input`.
    pub fn memory_text(&self, input: &OpInput<'_>) -> String {
        let joined: Vec<&str> = input.memory.iter().map(|i| i.content.as_str()).collect();
        if joined.is_empty() {
            self.empty_memory.clone()
        } else {
            joined.join("\n")
        }
    }
}

impl LmOp for Overwrite {
    const KIND: &'static str = "overwrite";
    const ROLE: &'static str = ROLE;

    fn settings(&self) -> &LmSettings {
        &self.lm
    }

    fn prompt_text(&self, _cx: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<String> {
        Ok(self.lm.template.render(&[
            ("prompt", input.question),
            ("memory", &self.memory_text(input)),
            ("chunk", input.observation),
        ]))
    }

    /// The new memory: the reply (past any `</think>`), trimmed and cut to `memory_tokens`.
    fn parse(&self, cx: &EpisodeCx<'_>, _input: &OpInput<'_>, reply: &str) -> Result<OpOutput> {
        let text = reply.trim();
        let ids = cx.encode(text)?;
        let content = if ids.len() > self.memory_tokens {
            cx.decode(&ids[..self.memory_tokens])?
        } else {
            text.to_string()
        };
        Ok(OpOutput {
            edits: vec![MemoryEdit::Overwrite {
                content: content.clone(),
            }],
            text: Some(content),
            ..Default::default()
        })
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    let memory_tokens: usize =
        cfg.get_checked("memory_tokens", 1024, |n| *n > 0, "a positive token count")?;
    let empty_memory = cfg.get("empty_memory", "No previous memory".to_string())?;
    let lm = LmSettings::from_cfg(cfg, &spec(memory_tokens))?;
    if lm.sampling.max_new_tokens > memory_tokens {
        return Err(cfg.error(
            "max_new_tokens",
            format!("must not exceed memory_tokens ({memory_tokens}): the memory is capped anyway"),
        ));
    }
    Ok(Box::new(Overwrite {
        memory_tokens,
        empty_memory,
        lm,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "overwrite",
        about: "MemAgent memory update: the LM rewrites the whole memory from problem, memory and a chunk; capped to memory_tokens",
        build,
    }
}
