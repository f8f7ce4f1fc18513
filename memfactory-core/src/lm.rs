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

/// Names a chat template receives from MemFactory itself, which `chat_template_kwargs`
/// may not set.
pub const RESERVED_TEMPLATE_VARIABLES: [&str; 4] = [
    "messages",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

/// Reads the model table's `chat_template_kwargs` (e.g. `{ enable_thinking = false }` for
/// Qwen3): extra variables for the model's chat template, as Hugging Face's
/// `apply_chat_template(**kwargs)` and the `chat_template_kwargs` field of vLLM, SGLang and
/// llama-server take them. Each value becomes a JSON value (strings, integers, finite
/// floats, booleans, arrays and tables); a TOML date-time, a non-finite float, a key that is
/// not a table or a reserved name ([`RESERVED_TEMPLATE_VARIABLES`]) is a config error naming
/// the dotted key. Absent: an empty map (and nothing is added to the resolved recipe).
pub fn template_kwargs_from_cfg(
    cfg: &mut crate::Cfg,
    key: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let Some(raw) = cfg.raw(key) else {
        return Ok(serde_json::Map::new());
    };
    let toml::Value::Table(table) = &raw else {
        return Err(cfg.error(
            key,
            format!(
                "expected a table of template variables (e.g. {{ enable_thinking = false }}), \
                 found {}",
                raw.type_str()
            ),
        ));
    };
    let mut out = serde_json::Map::new();
    for (name, value) in table {
        let at = format!("{key}.{name}");
        if RESERVED_TEMPLATE_VARIABLES.contains(&name.as_str()) {
            return Err(cfg.error(
                &at,
                format!(
                    "`{name}` is set by MemFactory itself and cannot be a template argument \
                     (reserved: {})",
                    RESERVED_TEMPLATE_VARIABLES.join(", ")
                ),
            ));
        }
        out.insert(
            name.clone(),
            toml_to_json(value).map_err(|(sub, m)| cfg.error(&format!("{at}{sub}"), m))?,
        );
    }
    cfg.set_resolved(key, raw.clone());
    Ok(out)
}

/// A TOML value as JSON; on failure the dotted / indexed suffix of the offending element and
/// what was expected.
fn toml_to_json(v: &toml::Value) -> std::result::Result<serde_json::Value, (String, String)> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => J::Number(n),
            None => {
                return Err((
                    String::new(),
                    format!("expected a finite number (JSON has no {f}), found {f}"),
                ));
            }
        },
        toml::Value::Datetime(d) => {
            return Err((
                String::new(),
                format!(
                    "expected a string, number, boolean, array or table, found the date-time \
                     {d} (quote it to pass it as a string)"
                ),
            ));
        }
        toml::Value::Array(a) => J::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| toml_to_json(x).map_err(|(s, m)| (format!("[{i}]{s}"), m)))
                .collect::<std::result::Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, x)| {
                    toml_to_json(x)
                        .map(|j| (k.clone(), j))
                        .map_err(|(s, m)| (format!(".{k}{s}"), m))
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(src: &str) -> crate::Cfg {
        crate::Cfg::new("model", toml::from_str(src).unwrap())
    }

    #[test]
    fn template_kwargs_become_json_and_are_resolved() {
        let mut c = cfg(
            "chat_template_kwargs = { enable_thinking = false, n = 3, x = 0.5, s = \"a\", \
             l = [1, true], t = { u = \"v\" } }",
        );
        let k = template_kwargs_from_cfg(&mut c, "chat_template_kwargs").unwrap();
        assert_eq!(
            serde_json::Value::Object(k),
            serde_json::json!({"enable_thinking": false, "n": 3, "x": 0.5, "s": "a",
                "l": [1, true], "t": {"u": "v"}})
        );
        let resolved = c.finish().unwrap();
        assert_eq!(
            resolved["chat_template_kwargs"]["enable_thinking"],
            toml::Value::Boolean(false)
        );
        let mut c = cfg("");
        assert!(
            template_kwargs_from_cfg(&mut c, "chat_template_kwargs")
                .unwrap()
                .is_empty()
        );
        assert!(!c.finish().unwrap().contains_key("chat_template_kwargs"));
    }

    #[test]
    fn bad_template_kwargs_name_the_key() {
        let err = |src: &str| {
            template_kwargs_from_cfg(&mut cfg(src), "chat_template_kwargs")
                .unwrap_err()
                .to_string()
        };
        let e = err("chat_template_kwargs = false");
        assert!(
            e.contains("model.chat_template_kwargs") && e.contains("table"),
            "{e}"
        );
        let e = err("chat_template_kwargs = { when = 1979-05-27T07:32:00Z }");
        assert!(
            e.contains("model.chat_template_kwargs.when") && e.contains("date-time"),
            "{e}"
        );
        let e = err("chat_template_kwargs = { t = { l = [1, nan] } }");
        assert!(
            e.contains("model.chat_template_kwargs.t.l[1]") && e.contains("finite"),
            "{e}"
        );
        let e = err("chat_template_kwargs = { messages = [] }");
        assert!(
            e.contains("model.chat_template_kwargs.messages") && e.contains("reserved"),
            "{e}"
        );
    }
}
