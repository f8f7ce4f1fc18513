//! # memfactory-agent-long-context
//!
//! The long-context baseline, registered as agent kind `long-context`: no memory at all —
//! the whole context and the question go into one prompt and the model answers in one call.
//! It is the baseline MemAgent (arXiv 2507.02259) sets its memory agent against (the
//! "openai" method of its eval, a long-context model reading everything), and the
//! single-turn version of a MemAgent task for GRPO: one trained LM call per episode, the
//! shape TRL's `GRPOTrainer` and most single-turn RL frameworks train.
//!
//! ```toml
//! [agent]
//! kind = "long-context"
//! final = "boxed"            # prompt: "boxed" (training) | "answer-is" (published eval)
//! max_input_tokens = 120000  # longer prompts keep their first ⌊L/2⌋ and last ⌈L/2⌉ tokens
//! strip = true               # trim question and context as Python's str.strip()
//! paths = 1                  # sampled answers per question (avg@k)
//! [agent.answer]
//! template = "prompt.txt"    # optional, replaces the template `final` picks; {context} {prompt}
//! max_new_tokens = 256
//! temperature = 0.0
//! ```
//!
//! ## Keys that follow MemAgent
//!
//! Source: `BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146`,
//! `taskutils/memory_eval/utils/`.
//!
//! - `final = "answer-is"` is `template_0shot` of `openai_api.py` ("Therefore, the answer
//!   is …"), `final = "boxed"` the one of `boxed.py`, byte for byte with `$DOC$` written
//!   `{context}` and `$Q$` written `{prompt}`. `boxed.py`'s literal is a plain Python string
//!   (not an f-string and never `.format`ted), so its `\\boxed{{}}` reaches the model as
//!   `\boxed{{}}`, doubled braces included; the template here keeps them.
//! - `strip`: both files read `context.strip()` and `item['input'].strip()`; default true.
//! - `max_input_tokens` is `MAX_INPUT_LEN` (`envs.py`, default 120000): when the rendered
//!   prompt is longer, its token ids are cut to `ids[:L//2] + ids[-L//2:]` — Python's
//!   `-L//2` is `⌊−L/2⌋`, so the tail keeps `⌈L/2⌉` tokens and `L` tokens remain — and
//!   decoded back to text (special tokens skipped) before the chat template is applied.
//!   The cut is on the whole prompt, instructions included, as MemAgent does.
//! - MemAgent samples at temperature 0.7, top-p 0.95 for this baseline; the defaults here
//!   are greedy, as for every agent's evaluation: set `[agent.answer]` to match.
//!
//! One difference: MemAgent substitutes `$DOC$` first and then `$Q$` in the result, so a
//! context containing the text `$Q$` would receive the question there too; here each
//! placeholder is substituted once, in one pass, and values are never re-scanned.

use memfactory_core::{
    Cfg, ChatMessage, EpisodeCx, GenRequest, Paradigm, Prompt, PromptTemplate, Result, Sample,
    SamplingParams, config::sampling_from_cfg, episode::generate_lockstep,
    prompt::template_from_cfg, text::py_strip,
};

/// MemAgent's boxed baseline prompt (`taskutils/memory_eval/utils/boxed.py`), `final = "boxed"`.
pub const BOXED_TEMPLATE: &str = include_str!("../templates/boxed.txt");

/// MemAgent's published baseline prompt (`taskutils/memory_eval/utils/openai_api.py`),
/// `final = "answer-is"`.
pub const ANSWER_IS_TEMPLATE: &str = include_str!("../templates/answer_is.txt");

/// Role name of the answering call (the only LM call of an episode).
pub const ANSWER_ROLE: &str = "answer";

/// MemAgent's `MAX_INPUT_LEN` default (`taskutils/memory_eval/utils/envs.py`).
pub const DEFAULT_MAX_INPUT_TOKENS: usize = 120_000;

/// The long-context paradigm.
pub struct LongContext {
    /// The prompt, with `{context}` and `{prompt}` placeholders.
    pub template: PromptTemplate,
    /// Prompts longer than this many tokens are cut in the middle.
    pub max_input_tokens: usize,
    /// Trim the question and the context as Python's `str.strip()` does.
    pub strip: bool,
    /// Answers sampled per question.
    pub paths: usize,
    /// Sampling of the answer.
    pub sampling: SamplingParams,
}

/// The token spans MemAgent keeps of an `n`-token prompt under a budget of `max_tokens`
/// (`ids[:L//2] + ids[-L//2:]`): `None` when it fits, else the head and tail ranges.
pub fn kept_spans(
    n: usize,
    max_tokens: usize,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    if n <= max_tokens {
        return None;
    }
    let head = max_tokens / 2;
    let tail = max_tokens - head; // ⌈L/2⌉
    Some((0..head, n - tail..n))
}

impl LongContext {
    /// The user message for `sample`: the rendered template, cut to `max_input_tokens`
    /// tokens of `cx`'s tokenizer when longer (with a note of the cut).
    pub fn prompt_text(
        &self,
        cx: &EpisodeCx<'_>,
        sample: &Sample,
    ) -> Result<(String, Option<String>)> {
        let (context, question) = if self.strip {
            (py_strip(&sample.context), py_strip(&sample.question))
        } else {
            (sample.context.as_str(), sample.question.as_str())
        };
        let text = self
            .template
            .render(&[("context", context), ("prompt", question)]);
        let ids = cx.encode(&text)?;
        match kept_spans(ids.len(), self.max_input_tokens) {
            None => Ok((text, None)),
            Some((head, tail)) => {
                let note = format!(
                    "kept tokens {}..{} + {}..{} of {}",
                    head.start,
                    head.end,
                    tail.start,
                    tail.end,
                    ids.len()
                );
                let cut = [&ids[head], &ids[tail]].concat();
                Ok((cx.decode(&cut)?, Some(note)))
            }
        }
    }
}

impl Paradigm for LongContext {
    fn kind(&self) -> &'static str {
        "long-context"
    }

    fn paths(&self) -> usize {
        self.paths
    }

    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let Some(first) = cxs.first() else {
            return Ok(());
        };
        let (text, cut) = self.prompt_text(first, sample)?;
        for cx in cxs.iter_mut() {
            if let Some(cut) = &cut {
                cx.note("truncated", cut.clone());
            }
        }
        let requests = cxs
            .iter()
            .map(|_| GenRequest {
                prompt: Prompt::Chat(vec![ChatMessage::user(text.clone())]),
                params: self.sampling.clone(),
            })
            .collect();
        let gens = generate_lockstep(cxs, ANSWER_ROLE, requests)?;
        for (cx, g) in cxs.iter_mut().zip(gens) {
            cx.episode.answer = Some(g.text);
        }
        Ok(())
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Paradigm>> {
    let default_template = match cfg.choice("final", "boxed", &["boxed", "answer-is"])? {
        "boxed" => BOXED_TEMPLATE,
        _ => ANSWER_IS_TEMPLATE,
    };
    let max_input_tokens = cfg.get_checked(
        "max_input_tokens",
        DEFAULT_MAX_INPUT_TOKENS,
        |n| *n > 0,
        "a positive token count",
    )?;
    let strip = cfg.get("strip", true)?;
    let paths = cfg.paths()?;
    let mut answer = cfg.sub_or_empty("answer")?;
    let template = template_from_cfg(
        &mut answer,
        "template",
        default_template,
        &["context", "prompt"],
        &["context", "prompt"],
    )?;
    let sampling = sampling_from_cfg(&mut answer, 256)?;
    cfg.set_resolved("answer", toml::Value::Table(answer.finish()?));
    Ok(Box::new(LongContext {
        template,
        max_input_tokens,
        strip,
        paths,
        sampling,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Paradigm> {
        kind: "long-context",
        about: "long-context baseline: the whole context and the question in one prompt, one answer call (MemAgent's full-context baseline; single-turn GRPO)",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::kept_spans;

    /// `ids[:L//2] + ids[-L//2:]` in Python, for comparison.
    fn python_cut(n: usize, l: usize) -> Vec<usize> {
        let ids: Vec<usize> = (0..n).collect();
        let l = l as i64;
        let head = l.div_euclid(2) as usize;
        let neg = (-l).div_euclid(2); // Python's -L//2 (floor division)
        let start = (n as i64 + neg).max(0) as usize;
        let mut v = ids[..head.min(n)].to_vec();
        v.extend_from_slice(&ids[start..]);
        v
    }

    #[test]
    fn cut_keeps_what_python_keeps() {
        for n in 0..40 {
            for l in 1..45 {
                let got: Vec<usize> = match kept_spans(n, l) {
                    None => (0..n).collect(),
                    Some((h, t)) => h.chain(t).collect(),
                };
                let want = if n <= l {
                    (0..n).collect()
                } else {
                    python_cut(n, l)
                };
                assert_eq!(got, want, "n {n} L {l}");
                assert!(got.len() <= l, "n {n} L {l}");
            }
        }
    }
}
