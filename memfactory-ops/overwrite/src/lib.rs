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
    Cfg, ChatMessage, EpisodeCx, GenRequest, MemoryEdit, MemoryOp, OpInput, OpOutput, Prompt,
    PromptTemplate, Result, SamplingParams, config::sampling_from_cfg, episode::generate_lockstep,
    prompt::template_from_cfg,
};

/// The default update prompt (MemAgent's `TEMPLATE`).
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/update.txt");

/// Role name of the LM calls this op makes (trainers select turns by role).
pub const ROLE: &str = "memory-update";

/// The overwrite op.
#[derive(Debug, Clone)]
pub struct Overwrite {
    /// Memory cap in tokens.
    pub memory_tokens: usize,
    /// The update prompt.
    pub template: PromptTemplate,
    /// What an empty memory reads as.
    pub empty_memory: String,
    /// Sampling of the update.
    pub sampling: SamplingParams,
    /// Store only the text after the last `</think>` (recipe `strip_think`, default true).
    pub strip_think: bool,
}

impl Overwrite {
    /// The op with MemAgent's defaults and a `memory_tokens` cap.
    pub fn new(memory_tokens: usize) -> Result<Self> {
        Ok(Overwrite {
            memory_tokens,
            template: PromptTemplate::new(
                "default:template",
                DEFAULT_TEMPLATE,
                &["prompt", "memory", "chunk"],
                &["memory", "chunk"],
            )?,
            empty_memory: "No previous memory".into(),
            sampling: SamplingParams::greedy(memory_tokens),
            strip_think: true,
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

    fn request(&self, input: &OpInput<'_>) -> GenRequest {
        let memory = self.memory_text(input);
        let text = self.template.render(&[
            ("prompt", input.question),
            ("memory", &memory),
            ("chunk", input.observation),
        ]);
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
            params: self.sampling.clone(),
        }
    }

    fn output(&self, cx: &EpisodeCx<'_>, text: &str) -> Result<OpOutput> {
        let text = if self.strip_think {
            memfactory_core::text::strip_think(text)
        } else {
            text
        };
        let text = text.trim();
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

impl MemoryOp for Overwrite {
    fn kind(&self) -> &'static str {
        "overwrite"
    }

    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        let g = cx.generate(ROLE, vec![self.request(&input)])?;
        self.output(cx, &g[0].text)
    }

    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        let reqs = inputs.iter().map(|i| self.request(i)).collect();
        let gens = generate_lockstep(cxs, ROLE, reqs)?;
        cxs.iter()
            .zip(&gens)
            .map(|(cx, g)| self.output(cx, &g.text))
            .collect()
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    let memory_tokens: usize =
        cfg.get_checked("memory_tokens", 1024, |n| *n > 0, "a positive token count")?;
    let mut op = Overwrite::new(memory_tokens)?;
    op.template = template_from_cfg(
        cfg,
        "template",
        DEFAULT_TEMPLATE,
        &["prompt", "memory", "chunk"],
        &["memory", "chunk"],
    )?;
    op.empty_memory = cfg.get("empty_memory", op.empty_memory.clone())?;
    op.sampling = sampling_from_cfg(cfg, memory_tokens)?;
    op.strip_think = cfg.get("strip_think", true)?;
    if op.sampling.max_new_tokens > memory_tokens {
        return Err(cfg.error(
            "max_new_tokens",
            format!("must not exceed memory_tokens ({memory_tokens}): the memory is capped anyway"),
        ));
    }
    Ok(Box::new(op))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "overwrite",
        about: "MemAgent memory update: the LM rewrites the whole memory from problem, memory and a chunk; capped to memory_tokens",
        build,
    }
}
