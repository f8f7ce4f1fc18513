//! # memfactory-agent-memagent
//!
//! The MemAgent paradigm (arXiv 2507.02259), registered as agent kind `memagent`.
//!
//! 1. The context is tokenized with the LM's tokenizer and split into chunks of
//!    `chunk_tokens` tokens (each chunk decoded back to text).
//! 2. The memory starts empty ("No previous memory"); for each chunk, the `update` op
//!    (default [`overwrite`](https://docs.rs/memfactory-op-overwrite)) writes the new memory,
//!    capped to its token budget, which replaces the old one.
//! 3. A final call sees the problem and the memory and answers in `\boxed{}`.
//!
//! `paths` independent memory paths run per question in lockstep — one batched LM call per
//! chunk for all paths — and metrics average over them (avg@k).
//!
//! ```toml
//! [agent]
//! kind = "memagent"
//! chunk_tokens = 5000
//! max_chunks = 0            # 0 = read every chunk; else only the first max_chunks
//! paths = 1
//! [agent.update]            # any registered memory op; default below
//! kind = "overwrite"
//! memory_tokens = 1024
//! [agent.answer]
//! template = "final.txt"    # optional; placeholders {prompt} {memory}
//! max_new_tokens = 256
//! temperature = 0.0
//! ```

use memfactory_core::{
    Cfg, ChatMessage, EpisodeCx, GenRequest, MemoryOp, OpInput, Paradigm, Prompt, PromptTemplate,
    Result, Sample, SamplingParams, config::sampling_from_cfg, episode::generate_lockstep,
    prompt::template_from_cfg, registry,
};

/// The default final prompt (MemAgent's `TEMPLATE_FINAL_BOXED`).
pub const DEFAULT_FINAL_TEMPLATE: &str = include_str!("../templates/final.txt");

/// Role name of the final answering call.
pub const ANSWER_ROLE: &str = "answer";

/// The MemAgent paradigm.
pub struct MemAgent {
    /// Tokens per context chunk.
    pub chunk_tokens: usize,
    /// Read at most this many chunks (0 = all).
    pub max_chunks: usize,
    /// Memory paths per question.
    pub paths: usize,
    /// The memory update op.
    pub update: Box<dyn MemoryOp>,
    /// The final prompt.
    pub final_template: PromptTemplate,
    /// Sampling of the final answer.
    pub answer_sampling: SamplingParams,
    /// What an empty memory reads as in the final prompt.
    pub empty_memory: String,
}

impl MemAgent {
    /// Splits `text` into chunks of at most `chunk_tokens` tokens of `cx`'s tokenizer.
    pub fn chunks(&self, cx: &EpisodeCx<'_>, text: &str) -> Result<Vec<String>> {
        let ids = cx.encode(text)?;
        let mut out: Vec<String> = ids
            .chunks(self.chunk_tokens)
            .map(|c| cx.decode(c))
            .collect::<Result<_>>()?;
        if self.max_chunks > 0 && out.len() > self.max_chunks {
            out.truncate(self.max_chunks);
        }
        Ok(out)
    }
}

impl Paradigm for MemAgent {
    fn kind(&self) -> &'static str {
        "memagent"
    }

    fn paths(&self) -> usize {
        self.paths
    }

    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let Some(first) = cxs.first() else {
            return Ok(());
        };
        let chunks = self.chunks(first, &sample.context)?;
        for cx in cxs.iter_mut() {
            cx.note("chunks", chunks.len().to_string());
        }
        for chunk in &chunks {
            let memories: Vec<_> = cxs.iter().map(|cx| cx.memory()).collect::<Result<_>>()?;
            let inputs: Vec<OpInput<'_>> = memories
                .iter()
                .map(|m| OpInput {
                    question: &sample.question,
                    observation: chunk,
                    memory: m,
                })
                .collect();
            let outputs = self.update.run_batch(cxs, &inputs)?;
            for (cx, out) in cxs.iter_mut().zip(outputs) {
                cx.apply(self.update.kind(), out.edits, out.parse_error)?;
            }
        }
        let requests = cxs
            .iter()
            .map(|cx| {
                let items = cx.memory()?;
                let memory = if items.is_empty() {
                    self.empty_memory.clone()
                } else {
                    items
                        .iter()
                        .map(|i| i.content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let text = self
                    .final_template
                    .render(&[("prompt", &sample.question), ("memory", &memory)]);
                Ok(GenRequest {
                    prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
                    params: self.answer_sampling.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let gens = generate_lockstep(cxs, ANSWER_ROLE, requests)?;
        for (cx, g) in cxs.iter_mut().zip(gens) {
            cx.episode.answer = Some(g.text);
        }
        Ok(())
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Paradigm>> {
    let chunk_tokens = cfg.get_checked(
        "chunk_tokens",
        5000usize,
        |n| *n > 0,
        "a positive token count",
    )?;
    let max_chunks = cfg.get("max_chunks", 0usize)?;
    let paths = cfg.get_checked(
        "paths",
        1usize,
        |n| (1..=1024).contains(n),
        "1..=1024 paths",
    )?;
    let empty_memory: String = cfg.get("empty_memory", "No previous memory".to_string())?;
    let update_cfg = match cfg.sub("update")? {
        Some(c) => c,
        None => Cfg::from_value(cfg.key("update"), &toml::Value::String("overwrite".into()))?,
    };
    let (update, resolved) = registry::build::<dyn MemoryOp>(update_cfg)?;
    cfg.set_resolved("update", toml::Value::Table(resolved));

    let mut answer = cfg
        .sub("answer")?
        .unwrap_or_else(|| Cfg::new(cfg.key("answer"), toml::Table::new()));
    let final_template = template_from_cfg(
        &mut answer,
        "template",
        DEFAULT_FINAL_TEMPLATE,
        &["prompt", "memory"],
        &["memory"],
    )?;
    let answer_sampling = sampling_from_cfg(&mut answer, 256)?;
    cfg.set_resolved("answer", toml::Value::Table(answer.finish()?));
    Ok(Box::new(MemAgent {
        chunk_tokens,
        max_chunks,
        paths,
        update,
        final_template,
        answer_sampling,
        empty_memory,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Paradigm> {
        kind: "memagent",
        about: "MemAgent: read the context chunk by chunk, overwrite a token-capped memory, answer in \\boxed{}",
        build,
    }
}
