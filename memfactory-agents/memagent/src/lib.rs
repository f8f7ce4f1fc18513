//! # memfactory-agent-memagent
//!
//! The MemAgent paradigm (arXiv 2507.02259), registered as agent kind `memagent`.
//!
//! 1. The context is tokenized with the LM's tokenizer and split into chunks of
//!    `chunk_tokens` tokens (each chunk decoded back to text). With `max_chunks > 0`, a
//!    context longer than `max_chunks × chunk_tokens` tokens is first cut to that size
//!    (`truncate`, below).
//! 2. The memory starts empty ("No previous memory"); for each chunk, the `update` op
//!    (default [`overwrite`](https://docs.rs/memfactory-op-overwrite)) writes the new memory,
//!    capped to its token budget, which replaces the old one.
//! 3. A final call sees the problem and the memory and answers — in `\boxed{}` with the
//!    training template (default), or "Therefore, the answer is …" with MemAgent's published
//!    eval template (`final = "answer-is"`).
//!
//! `paths` independent memory paths run per question in lockstep — one batched LM call per
//! chunk for all paths — and metrics average over them (avg@k).
//!
//! ```toml
//! [agent]
//! kind = "memagent"
//! chunk_tokens = 5000
//! max_chunks = 0            # 0 = read every chunk; else at most max_chunks chunks
//! truncate = "centre"       # how max_chunks cuts: "centre" (keep both ends) | "head"
//! final = "boxed"           # final prompt: "boxed" (training) | "answer-is" (published eval)
//! strip = false             # trim question and context (default: true with final = "answer-is")
//! paths = 1
//! [agent.update]            # any registered memory op; default below. Without `kind` (or
//! kind = "overwrite"        # with kind "overwrite") the keys merge over the default op
//! memory_tokens = 1024      # (memfactory_core::op::sub_op, the rule of every paradigm)
//! [agent.answer]
//! template = "final.txt"    # optional, replaces the template `final` picks; {prompt} {memory}
//! max_new_tokens = 256      # MemAgent gives the final turn 1024 (memory.py:206)
//! temperature = 0.0
//! ```
//!
//! ## Keys that follow MemAgent
//!
//! Source: `BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146`.
//!
//! - `final = "boxed"` is `TEMPLATE_FINAL_BOXED` (`recurrent/impls/memory.py:132-143`), as
//!   its eval renders it (`\boxed{}`), the prompt MemAgent trains with.
//!   `final = "answer-is"` is `TEMPLATE_FINAL` (`taskutils/memory_eval/utils/recurrent.py:22-33`),
//!   byte for byte: the prompt behind the published RL-MemoryAgent-7B/14B RULER-HotpotQA
//!   numbers (`taskutils/memory_eval/run.py:272-289` evaluates them with `method =
//!   "recurrent"`); score it with an "answer is" extractor. Both files sit in `templates/`,
//!   checked against MemAgent's sources by `scripts/memagent_reference.py templates`.
//! - `strip`: MemAgent's eval reads `context = item["context"].strip()` and
//!   `prompt = item["input"].strip()` (`utils/recurrent.py:49-50`); `strip = true` trims the
//!   same characters (Python's `str.isspace`: Unicode White_Space plus U+001C–U+001F) from
//!   both ends of the context and the question. Its training path does not strip.
//! - `truncate = "centre"` is the training data path (`memory.py:61-95` with
//!   `verl/utils/torch_functional.py:postprocess_data`): with `L = max_chunks × chunk_tokens`,
//!   a longer context keeps its first `⌊L/2⌋` and its last `⌊L/2⌋` tokens (so `L − 1`
//!   tokens when `L` is odd), then is chunked. `truncate = "head"` keeps the first `L`
//!   tokens. The one case where the two codes part: for `L = 1`, Python's `ids[-0:]` keeps
//!   the whole context; here the first token is kept. (MemAgent's eval cuts at
//!   `RECURRENT_MAX_CONTEXT_LEN`, set to 1e11 for the published runs, i.e. never.)
//! - The final budget is `[agent.answer] max_new_tokens`; MemAgent gives the final turn the
//!   memory budget, `max_tokens = 1024` (`memory.py:206`; eval `RECURRENT_MAX_NEW = 1024`).
//!   The default here stays 256.

use memfactory_core::{
    Cfg, ChatMessage, EpisodeCx, GenRequest, MemoryOp, OpInput, Paradigm, Prompt, PromptTemplate,
    Result, Sample, SamplingParams,
    config::sampling_from_cfg,
    episode::generate_lockstep,
    op::{op_table, sub_op},
    prompt::template_from_cfg,
    text::py_strip,
};

/// The default final prompt (MemAgent's `TEMPLATE_FINAL_BOXED`), `final = "boxed"`.
pub const DEFAULT_FINAL_TEMPLATE: &str = include_str!("../templates/final.txt");

/// MemAgent's published eval final prompt (`TEMPLATE_FINAL` of
/// `taskutils/memory_eval/utils/recurrent.py`), `final = "answer-is"`.
pub const ANSWER_IS_FINAL_TEMPLATE: &str = include_str!("../templates/final_answer_is.txt");

/// Which built-in final prompt the answer call uses (`final` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalPrompt {
    /// `"boxed"`: the training template, answer in `\boxed{}`.
    Boxed,
    /// `"answer-is"`: MemAgent's eval template, "Therefore, the answer is …".
    AnswerIs,
}

impl FinalPrompt {
    /// The recipe name.
    pub fn name(self) -> &'static str {
        match self {
            FinalPrompt::Boxed => "boxed",
            FinalPrompt::AnswerIs => "answer-is",
        }
    }

    /// The template text.
    pub fn template(self) -> &'static str {
        match self {
            FinalPrompt::Boxed => DEFAULT_FINAL_TEMPLATE,
            FinalPrompt::AnswerIs => ANSWER_IS_FINAL_TEMPLATE,
        }
    }
}

/// How `max_chunks` cuts a longer context (`truncate` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncate {
    /// `"centre"` (or `"center"`): keep the first and the last `⌊L/2⌋` tokens (MemAgent).
    Centre,
    /// `"head"`: keep the first `L` tokens.
    Head,
}

impl Truncate {
    /// The recipe name.
    pub fn name(self) -> &'static str {
        match self {
            Truncate::Centre => "centre",
            Truncate::Head => "head",
        }
    }

    /// What is kept of an `n`-token context under a budget of `max_tokens` tokens: `None`
    /// when it fits, else the kept head and tail spans (half-open; the tail is empty for
    /// `Head`). See the crate docs for the rule.
    pub fn kept(
        self,
        n: usize,
        max_tokens: usize,
    ) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
        if n <= max_tokens {
            return None;
        }
        Some(match self {
            Truncate::Head => (0..max_tokens, n..n),
            Truncate::Centre => {
                let half = max_tokens / 2;
                if half == 0 {
                    // max_tokens = 1 (0 never reaches here: max_chunks = 0 reads all).
                    (0..max_tokens, n..n)
                } else {
                    (0..half, n - half..n)
                }
            }
        })
    }
}

/// Role name of the final answering call.
pub const ANSWER_ROLE: &str = "answer";

/// The MemAgent paradigm.
pub struct MemAgent {
    /// Tokens per context chunk.
    pub chunk_tokens: usize,
    /// Read at most this many chunks (0 = all).
    pub max_chunks: usize,
    /// How `max_chunks` cuts a longer context.
    pub truncate: Truncate,
    /// Trim the question and the context as Python's `str.strip()` does.
    pub strip: bool,
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
    /// Splits `text` into chunks of at most `chunk_tokens` tokens of `cx`'s tokenizer,
    /// after cutting it to `max_chunks × chunk_tokens` tokens (when `max_chunks > 0`) the
    /// `truncate` way.
    pub fn chunks(&self, cx: &EpisodeCx<'_>, text: &str) -> Result<Vec<String>> {
        Ok(self.chunks_noted(cx, text)?.0)
    }

    /// [`MemAgent::chunks`], plus a description of the cut when one was made.
    fn chunks_noted(
        &self,
        cx: &EpisodeCx<'_>,
        text: &str,
    ) -> Result<(Vec<String>, Option<String>)> {
        let mut ids = cx.encode(text)?;
        let mut note = None;
        if self.max_chunks > 0 {
            let max_tokens = self.max_chunks.saturating_mul(self.chunk_tokens);
            let n = ids.len();
            if let Some((head, tail)) = self.truncate.kept(n, max_tokens) {
                let mut shown = format!("{}..{}", head.start, head.end);
                if !tail.is_empty() {
                    shown.push_str(&format!(" + {}..{}", tail.start, tail.end));
                }
                note = Some(format!(
                    "{}: kept tokens {shown} of {n}",
                    self.truncate.name()
                ));
                ids = [&ids[head], &ids[tail]].concat();
            }
        }
        let out = ids
            .chunks(self.chunk_tokens)
            .map(|c| cx.decode(c))
            .collect::<Result<_>>()?;
        Ok((out, note))
    }
}

impl Paradigm for MemAgent {
    fn kind(&self) -> &'static str {
        "memagent"
    }

    fn paths(&self) -> usize {
        self.paths
    }

    /// The memory update op's, when it has its own model (the final answer is always the
    /// episode's model).
    fn frozen_roles(&self) -> Vec<(String, String)> {
        self.update.frozen_roles()
    }

    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let Some(first) = cxs.first() else {
            return Ok(());
        };
        let (context, question) = if self.strip {
            (py_strip(&sample.context), py_strip(&sample.question))
        } else {
            (sample.context.as_str(), sample.question.as_str())
        };
        let (chunks, cut) = self.chunks_noted(first, context)?;
        for cx in cxs.iter_mut() {
            cx.note("chunks", chunks.len().to_string());
            if let Some(cut) = &cut {
                cx.note("truncated", cut.clone());
            }
        }
        for chunk in &chunks {
            let memories: Vec<_> = cxs.iter().map(|cx| cx.memory()).collect::<Result<_>>()?;
            let inputs: Vec<OpInput<'_>> = memories
                .iter()
                .map(|m| OpInput {
                    question,
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
                    .render(&[("prompt", question), ("memory", &memory)]);
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
    let truncate = match cfg.get("truncate", "centre".to_string())?.as_str() {
        "centre" | "center" => Truncate::Centre,
        "head" => Truncate::Head,
        other => {
            return Err(cfg.error(
                "truncate",
                format!("expected \"centre\" (or \"center\") or \"head\", found {other:?}"),
            ));
        }
    };
    let final_prompt = match cfg.choice("final", "boxed", &["boxed", "answer-is"])? {
        "boxed" => FinalPrompt::Boxed,
        _ => FinalPrompt::AnswerIs,
    };
    let strip = cfg.get("strip", final_prompt == FinalPrompt::AnswerIs)?;
    let paths = cfg.paths()?;
    let empty_memory: String = cfg.get("empty_memory", "No previous memory".to_string())?;
    let update = sub_op(cfg, "update", &op_table("overwrite", &[]))?;

    let mut answer = cfg.sub_or_empty("answer")?;
    let final_template = template_from_cfg(
        &mut answer,
        "template",
        final_prompt.template(),
        &["prompt", "memory"],
        &["memory"],
    )?;
    let answer_sampling = sampling_from_cfg(&mut answer, 256)?;
    cfg.set_resolved("answer", toml::Value::Table(answer.finish()?));
    Ok(Box::new(MemAgent {
        chunk_tokens,
        max_chunks,
        truncate,
        strip,
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
        about: "MemAgent: read the context chunk by chunk, overwrite a token-capped memory, answer in \\boxed{} or \"the answer is\" (final)",
        build,
    }
}
