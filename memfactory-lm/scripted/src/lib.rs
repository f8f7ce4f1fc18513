//! # memfactory-lm-scripted
//!
//! A deterministic [`LanguageModel`] for tests and recipe smoke runs (kind `scripted`).
//!
//! Tokenizer: byte level — token id = byte value, id 256 = end of sequence — so token counts
//! are predictable (`chunk_tokens = 100` means 100 bytes). Generation renders the prompt
//! (chat messages in ChatML), then picks a reply:
//!
//! 1. `sequence`: when given, replies are replayed in order (one per request, cycling);
//! 2. else the first of `rules` whose `contains` substrings all occur in the rendered prompt;
//! 3. else `default`.
//!
//! A reply may contain `{between:START|END}`, replaced by the prompt text between the last
//! `START` and the next `END` (e.g. `{between:<memory>\n|\n</memory>}` echoes the previous
//! memory). The reply is cut to `max_new_tokens` bytes (finish `length`) or followed by EOS.
//! Every generated token gets log-prob `logprob` (default ln 0.9).
//!
//! ```toml
//! [model]
//! kind = "scripted"
//! default = "\\boxed{unknown}"
//! [[model.rules]]
//! contains = ["<section>", "magic number"]
//! reply = "The magic number is 42."
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use memfactory_core::{
    Cfg, Finish, GenRequest, Generation, LanguageModel, Prompt, Result, lm::ChatMessage,
};
use serde::{Deserialize, Serialize};

/// End-of-sequence token id.
pub const EOS: u32 = 256;

/// One reply rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Substrings that must all occur in the rendered prompt.
    pub contains: Vec<String>,
    /// The reply (may use `{between:START|END}`).
    pub reply: String,
}

/// The scripted model.
#[derive(Debug)]
pub struct ScriptedLm {
    rules: Vec<Rule>,
    default: String,
    sequence: Vec<String>,
    logprob: f32,
    cursor: AtomicUsize,
}

impl ScriptedLm {
    /// A model answering by `rules`, else `default`.
    pub fn new(rules: Vec<Rule>, default: impl Into<String>) -> Self {
        ScriptedLm {
            rules,
            default: default.into(),
            sequence: Vec::new(),
            logprob: 0.9f32.ln(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// A model replaying `replies` in order.
    pub fn replay(replies: Vec<String>) -> Self {
        let mut lm = ScriptedLm::new(Vec::new(), "");
        lm.sequence = replies;
        lm
    }

    fn render(prompt: &Prompt) -> String {
        match prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Tokens(ids) => decode_bytes(ids),
            Prompt::Chat(msgs) => render_chatml(msgs),
        }
    }

    fn reply_for(&self, rendered: &str) -> String {
        let template = if !self.sequence.is_empty() {
            let n = self.cursor.fetch_add(1, Ordering::SeqCst);
            self.sequence[n % self.sequence.len()].clone()
        } else {
            self.rules
                .iter()
                .find(|r| r.contains.iter().all(|c| rendered.contains(c.as_str())))
                .map_or_else(|| self.default.clone(), |r| r.reply.clone())
        };
        expand(&template, rendered)
    }
}

/// ChatML rendering used by the scripted model.
pub fn render_chatml(msgs: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in msgs {
        s.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role, m.content
        ));
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

fn expand(template: &str, prompt: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{between:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{between:".len()..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let spec = &after[..end];
        let (open, close) = spec.split_once('|').unwrap_or((spec, ""));
        let open = open.replace("\\n", "\n");
        let close = close.replace("\\n", "\n");
        if let Some(p) = prompt.rfind(&open) {
            let tail = &prompt[p + open.len()..];
            let q = if close.is_empty() {
                tail.len()
            } else {
                tail.find(&close).unwrap_or(tail.len())
            };
            out.push_str(&tail[..q]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn decode_bytes(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl LanguageModel for ScriptedLm {
    fn describe(&self) -> String {
        format!(
            "scripted LM ({} rules, {} replayed replies, byte tokenizer)",
            self.rules.len(),
            self.sequence.len()
        )
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(decode_bytes(ids))
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Tokens(ids) => Ok(ids.clone()),
            p => self.encode(&Self::render(p)),
        }
    }

    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>> {
        requests
            .iter()
            .map(|r| {
                let prompt_ids = self.prompt_ids(&r.prompt)?;
                let rendered = Self::render(&r.prompt);
                let mut reply = self.reply_for(&rendered);
                let mut finish = Finish::Eos;
                if let Some(p) = r
                    .params
                    .stop
                    .iter()
                    .filter_map(|s| reply.find(s.as_str()))
                    .min()
                {
                    reply.truncate(p);
                    finish = Finish::Stop;
                }
                let mut token_ids: Vec<u32> = reply.bytes().map(u32::from).collect();
                if token_ids.len() >= r.params.max_new_tokens {
                    token_ids.truncate(r.params.max_new_tokens);
                    finish = Finish::Length;
                } else if finish == Finish::Eos {
                    token_ids.push(EOS);
                }
                let text = decode_bytes(&token_ids);
                Ok(Generation {
                    prompt_ids,
                    logprobs: vec![self.logprob; token_ids.len()],
                    token_ids,
                    text,
                    finish,
                })
            })
            .collect()
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn LanguageModel>> {
    let rules: Vec<Rule> = cfg.get("rules", Vec::new())?;
    let default: String = cfg.get("default", String::new())?;
    let sequence: Vec<String> = cfg.get("sequence", Vec::new())?;
    let logprob: f32 = cfg.get_checked(
        "logprob",
        0.9f32.ln(),
        |l| *l <= 0.0 && l.is_finite(),
        "a finite log-probability <= 0",
    )?;
    let mut lm = ScriptedLm::new(rules, default);
    lm.sequence = sequence;
    lm.logprob = logprob;
    Ok(Box::new(lm))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn LanguageModel> {
        kind: "scripted",
        about: "Deterministic scripted LM for tests: rule- or replay-driven replies, byte-level tokenizer",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::SamplingParams;

    fn req(p: &str, max: usize) -> GenRequest {
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user(p)]),
            params: SamplingParams::greedy(max),
        }
    }

    #[test]
    fn rules_between_and_caps() {
        let lm = ScriptedLm::new(
            vec![Rule {
                contains: vec!["<memory>".into()],
                reply: "kept: {between:<memory>\\n|\\n</memory>}".into(),
            }],
            "\\boxed{x}",
        );
        let g = lm
            .generate(&[req("<memory>\nold facts\n</memory>", 100), req("hi", 3)])
            .unwrap();
        assert_eq!(g[0].text, "kept: old facts");
        assert_eq!(g[0].finish, Finish::Eos);
        assert_eq!(*g[0].token_ids.last().unwrap(), EOS);
        assert_eq!(g[0].logprobs.len(), g[0].token_ids.len());
        assert_eq!(g[1].text, "\\bo");
        assert_eq!(g[1].finish, Finish::Length);
        assert_eq!(
            lm.decode(&g[0].prompt_ids).unwrap(),
            "<|im_start|>user\n<memory>\nold facts\n</memory><|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn replay_cycles() {
        let lm = ScriptedLm::replay(vec!["a".into(), "b".into()]);
        let g = lm
            .generate(&[req("1", 9), req("2", 9), req("3", 9)])
            .unwrap();
        let texts: Vec<&str> = g.iter().map(|g| g.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "a"]);
    }
}
