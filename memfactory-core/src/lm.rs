//! The language-model interface: batched generation with exact token ids and log-probs.
//!
//! Backends (`memfactory-lm-burn`, `memfactory-lm-scripted`, …) implement
//! [`LanguageModel`]. A [`Generation`] carries the prompt token ids exactly as the model saw
//! them, the sampled token ids and the log-prob of each under the sampling distribution that
//! was actually used — so training never re-tokenizes text.

use serde::{Deserialize, Serialize};

use crate::Result;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Message text.
    pub content: String,
}

impl ChatMessage {
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template plus the generation prompt.
    Chat(Vec<ChatMessage>),
    /// Raw text, tokenized as is (no template, no special tokens added).
    Text(String),
    /// Exact token ids.
    Tokens(Vec<u32>),
}

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (`0` = off).
    pub top_k: usize,
    /// Nucleus sampling mass (`1.0` = off).
    pub top_p: f32,
    /// Stop when the decoded text contains one of these (the stop string is cut off).
    pub stop: Vec<String>,
    /// Per-request seed (sampling is a pure function of it).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            max_new_tokens,
            ..Default::default()
        }
    }
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// How to sample.
    pub params: SamplingParams,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence token was sampled (it is included in `token_ids`).
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` was reached, or the model's context is full (prompt plus generated
    /// tokens fill [`LanguageModel::context_length`]).
    Length,
}

/// The result of one [`GenRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Prompt token ids exactly as the model consumed them.
    pub prompt_ids: Vec<u32>,
    /// Generated token ids (an EOS token, when sampled, is the last one).
    pub token_ids: Vec<u32>,
    /// Log-prob of each generated token under the distribution it was sampled from
    /// (after temperature / top-k / top-p; for greedy, the plain softmax).
    pub logprobs: Vec<f32>,
    /// Decoded text of the generated tokens, special tokens and stop string removed.
    pub text: String,
    /// Why it stopped.
    pub finish: Finish,
}

/// A language model that can tokenize and generate in batches.
pub trait LanguageModel: Send + Sync {
    /// One line naming the model and backend.
    fn describe(&self) -> String;
    /// Token ids of `text`, without special tokens or template.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of `ids`, special tokens skipped.
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// The prompt token ids `generate` would feed for `prompt`.
    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>>;
    /// Generates for every request; one [`Generation`] per request, in order.
    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>>;
    /// Runs `wait`, a blocking wait during which the calling thread makes no `generate`
    /// call. Wrappers that batch calls across threads (the facade's `BatchingLm`) must not
    /// wait for such a thread before cutting a batch; plain models just run `wait`.
    fn wait_outside(&self, wait: &mut dyn FnMut()) {
        wait()
    }
    /// The most tokens one sequence may hold, prompt and generated tokens together (the
    /// model's trained context), when the backend knows it; `None` when it does not (a
    /// remote server enforces its own limit). Recipes' `max_new_tokens` are checked against
    /// it when the components are built ([`crate::config::check_token_budgets`]), and a
    /// backend that knows it never generates past it.
    fn context_length(&self) -> Option<usize> {
        None
    }
}

/// The error for a generation budget `max_new_tokens` (at dotted recipe key `key`) that
/// cannot fit a model whose context holds `context` tokens.
pub fn budget_exceeds_context(
    key: impl Into<String>,
    max_new_tokens: usize,
    context: usize,
) -> crate::Error {
    crate::Error::config(
        key,
        format!(
            "{max_new_tokens} exceeds the model's context of {context} tokens (the prompt and \
             the generated tokens share it); expected at most {context}, and in practice \
             {context} minus the longest prompt"
        ),
    )
}

/// Checks a generation budget read from recipe key `key` against the context of `lm`, the
/// model that generates with it (nothing to check when `lm` does not know its context).
pub fn check_budget(
    key: impl Into<String>,
    max_new_tokens: usize,
    lm: &dyn LanguageModel,
) -> Result<()> {
    match lm.context_length() {
        Some(context) if max_new_tokens > context => {
            Err(budget_exceeds_context(key, max_new_tokens, context))
        }
        _ => Ok(()),
    }
}

/// Number of tokens of `text` under `lm`'s tokenizer.
pub fn count_tokens(lm: &dyn LanguageModel, text: &str) -> Result<usize> {
    Ok(lm.encode(text)?.len())
}
