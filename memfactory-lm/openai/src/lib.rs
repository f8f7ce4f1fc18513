//! # memfactory-lm-openai
//!
//! A [`LanguageModel`] that sends MemFactory's generation requests to any OpenAI-compatible
//! server — vLLM, SGLang, llama.cpp's `llama-server`, or a hosted API — registered as LM kind
//! **`openai`**. It lets episodes (and GRPO rollouts, when the server returns token ids and
//! log-probs) come from an external serving engine instead of the native burn engine; the
//! rest of MemFactory sees an ordinary model behind `EpisodeCx::generate`.
//!
//! ```toml
//! [model]
//! kind = "openai"
//! base_url = "http://127.0.0.1:8080"   # required; a trailing "/v1" is accepted and dropped
//! model = "smollm2"                    # required: the served model name (`model` field)
//! server = "llama-server"              # generic (default) | llama-server | vllm
//! api_key_env = "OPENAI_API_KEY"       # optional: NAME of the variable holding the key
//! concurrency = 8                      # HTTP requests in flight, at most (all calls)
//! timeout_s = 600.0                    # one HTTP exchange: connect + send + response + body
//! connect_timeout_s = 10.0             # the connection alone
//! max_retries = 4                      # further attempts on 429 / 5xx / transport failures
//! backoff_ms = 500                     # first wait, doubling per attempt ...
//! max_backoff_ms = 30000               # ... up to this (and at least the `Retry-After`)
//! jitter = true                        # deterministic spread of the waits, x[1, 1.25)
//! logprobs = true                      # ask for log-probs (and token ids where available)
//! require_logprobs = false             # true: a response lacking token ids or log-probs is an error
//! tokenize = false                     # true: fill `Generation::prompt_ids` via /tokenize
//! extra_body = {}                      # fields merged into every request body (win over ours)
//! chat_template_kwargs = { enable_thinking = false }  # optional: chat-template variables
//! ```
//!
//! `chat_template_kwargs` (the same key as the burn engine's) is sent as the
//! `chat_template_kwargs` field of every chat request — and of the chat `/apply-template`
//! (llama-server) and `/tokenize` (vLLM) calls behind [`LanguageModel::prompt_ids`] — which
//! vLLM, SGLang and llama-server hand to the model's chat template (e.g.
//! `enable_thinking = false` switches Qwen3's thinking off; llama-server also reads it as its
//! own thinking switch). Values are any TOML value but date-times (see
//! [`memfactory_core::lm::template_kwargs_from_cfg`]). The server's template is not visible
//! here, so a variable it ignores cannot be reported (the burn engine reports it); an
//! `extra_body.chat_template_kwargs` replaces this field whole.
//!
//! ## Requests
//!
//! [`Prompt::Chat`] → `POST {base_url}/v1/chat/completions`; [`Prompt::Text`] and
//! [`Prompt::Tokens`] (a token-id array as `prompt`) → `POST {base_url}/v1/completions`.
//! [`SamplingParams`](memfactory_core::SamplingParams) map to `max_tokens`, `temperature`
//! (`0` = greedy), `top_p`, `stop` (when not empty), `seed` (folded to 31 bits, see
//! [`wire::wire_seed`]) and `top_k` (only when `> 0`). Which server honours what (from the
//! servers' documentation; only llama-server is exercised by this crate's tests):
//!
//! | field        | OpenAI         | vLLM | SGLang | llama-server |
//! |--------------|----------------|------|--------|--------------|
//! | `top_k`      | no (400 error) | yes  | yes    | yes          |
//! | `seed`       | best effort    | yes  | yes    | yes          |
//! | `stop`       | up to 4        | yes  | yes    | yes          |
//! | token ids    | no             | `server = "vllm"` | no | yes (`logprobs.content[i].id`) |
//! | log-probs    | yes            | yes  | yes    | yes          |
//!
//! A batch of [`GenRequest`]s is sent as parallel HTTP requests by `min(concurrency, n)`
//! threads; at most `concurrency` requests are in flight across all concurrent `generate`
//! calls of one model; results come back in request order.
//!
//! ## Token ids and log-probs
//!
//! [`Generation::token_ids`] and [`Generation::logprobs`] are filled when the server returns
//! them, otherwise they are **empty** (the eval runner does not need them; the trainer does —
//! set `require_logprobs = true` to turn their absence into an error instead):
//! - `server = "llama-server"`: ids from `logprobs.content[i].id`; log-probs are the
//!   probabilities the token was drawn with (`post_sampling_probs` is sent when
//!   `temperature > 0`; for greedy the plain softmax), as [`Generation::logprobs`] specifies.
//!   An end-of-generation token is included (its text is empty), like the burn engine does.
//!   When a stop string ends generation, llama-server drops as many trailing tokens as the
//!   stop string has on its own, so `token_ids` can differ from `text` by a partial token
//!   there (e.g. stop `"answer is"` after `"The answer is"`: text `"The "`, tokens `The`).
//! - `server = "vllm"`: `return_token_ids` and `return_tokens_as_token_ids` are sent; vLLM
//!   reports the raw (pre-temperature) log-probs unless it was started with
//!   `--logprobs-mode processed_logprobs`, which training from its rollouts wants.
//! - `server = "generic"`: log-probs when the server gives them, token ids only when the
//!   response carries them in one of the shapes above.
//!
//! Thinking models: `text` is the raw generation, `<think>...</think>` included, as the burn
//! engine returns it (an op strips it where it parses a reply, e.g. op-summarize's
//! `strip_think`). llama-server (`--jinja`) builds `message.content` by parsing the
//! template's generation prompt followed by the generation, so with a thinking template the
//! content is not what was generated: its default `--reasoning-format` moves a
//! `<think>...</think>` block into `message.reasoning_content` (trimmed) while the token ids
//! keep every generated token, and `reasoning_format = "none"` prepends the prompt's own
//! thinking part (Qwen3 with `enable_thinking = false`: an empty `<think>` block the model
//! never generated). With `server = "llama-server"` the text is therefore the generated
//! tokens' own bytes (`logprobs.content[i].bytes`) wherever they differ from the content
//! (but for the stop-string caveat above, [`wire::llama_server_text`]); with
//! `logprobs = false` there are neither bytes nor token ids and the text is the content.
//! With `server = "vllm"` and a response carrying its reasoning apart (vLLM started with a
//! reasoning parser: `reasoning_content`, or `reasoning` in newer versions), the text is
//! rebuilt by decoding the token ids through `/detokenize` (one more request; cut at the
//! first stop string). So `text` and `token_ids` agree. With `server = "generic"` the text
//! is the server's content, the answer without its reasoning. Tested against a real
//! llama-server rendering Qwen3's template (`tests/qwen3_template.rs`); the vLLM path only
//! against the documented response shape.
//!
//! [`Generation::prompt_ids`]: from the response when it carries them (vLLM), else from the
//! server's `/tokenize` endpoint when `tokenize = true` (llama-server renders chat prompts
//! with `/apply-template` first), else empty. [`LanguageModel::encode`] /
//! [`LanguageModel::decode`] / [`LanguageModel::prompt_ids`] use `/tokenize`,
//! `/detokenize` (llama-server, vLLM) and fail with a clear error for `server = "generic"`.
//! llama-server's `/detokenize` renders special tokens as text; `decode` drops the control
//! tokens this client has seen (they come back with an empty text in generations).
//! Prompt ids count what the server adds to a prompt (a BOS token where the model asks for
//! one; SmolLM2 does not); `encode` adds nothing.
//!
//! [`Finish`](memfactory_core::Finish): `finish_reason = "length"` → `Length`; `"stop"` →
//! `Eos` or `Stop` as described in [`wire`].
//!
//! ## Failures
//!
//! 429, 5xx and transport failures (refused or reset connections, timeouts) are retried
//! with exponential backoff; other 4xx are immediate errors quoting the server's message.
//! Every error is [`Error::Backend`] (`openai: ...`) naming the URL and the status; the API
//! key is sent only as `Authorization: Bearer` and appears in no error message (a server
//! echoing it is redacted to `***`), no [`LanguageModel::describe`] line, no `Debug` output
//! and not in the resolved recipe (which keeps only the variable's name). A recipe with an
//! `api_key` key is refused. Local servers (`localhost`, `127.*`, `[::1]`) are reached
//! directly, never through an `HTTP(S)_PROXY` from the environment.
//!
//! When some requests of a batch fail after their retries, the others still run to the end.
//! [`OpenAiLm::generate_each`] returns every request's own result. The trait's
//! [`LanguageModel::generate`] (one `Result` for the batch) returns an error listing each
//! failed request (index and reason) and **keeps the finished generations**: a later request
//! with an identical body (same prompt, parameters and seed — e.g. the caller retrying the
//! batch) is answered from them without asking the server again, so a retry loses no
//! finished result and costs only the failed requests.

pub mod http;
pub mod wire;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use memfactory_core::{Cfg, Error, GenRequest, Generation, LanguageModel, Prompt, Result};
use serde_json::{Map, Value, json};

pub use http::Retry;
pub use wire::ServerKind;

/// Component name used in errors.
const NAME: &str = "openai";
/// Finished generations kept from failed batches, at most.
const STASH_CAP: usize = 4096;

/// Everything the backend needs except the API key.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Server root, e.g. `http://127.0.0.1:8080` (a trailing `/` or `/v1` is dropped).
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
    /// Dialect (extension fields, tokenizer endpoints).
    pub server: ServerKind,
    /// Name of the environment variable holding the key (only for messages).
    pub api_key_env: Option<String>,
    /// Requests in flight, at most.
    pub concurrency: usize,
    /// Limit on one HTTP exchange.
    pub timeout: Duration,
    /// Limit on establishing the connection.
    pub connect_timeout: Duration,
    /// Retry policy.
    pub retry: Retry,
    /// Ask for log-probs.
    pub logprobs: bool,
    /// Missing token ids / log-probs are an error.
    pub require_logprobs: bool,
    /// Fill `prompt_ids` through `/tokenize` when the response lacks them.
    pub tokenize: bool,
    /// Fields merged into every request body.
    pub extra_body: Map<String, Value>,
    /// Chat-template variables sent with chat requests (recipe `chat_template_kwargs`).
    pub chat_template_kwargs: Map<String, Value>,
    /// Dotted recipe path of the table (`model`, `agent.update.model`), for messages.
    pub table: String,
}

impl OpenAiConfig {
    /// The defaults for a server at `base_url` serving `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            server: ServerKind::Generic,
            api_key_env: None,
            concurrency: 8,
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            retry: Retry {
                max_retries: 4,
                backoff_ms: 500,
                max_backoff_ms: 30_000,
                jitter: true,
            },
            logprobs: true,
            require_logprobs: false,
            tokenize: false,
            extra_body: Map::new(),
            chat_template_kwargs: Map::new(),
            table: "model".to_string(),
        }
    }

    /// Reads the recipe table (keys and defaults in the crate docs) and the API key from the
    /// variable named by `api_key_env`.
    pub fn from_cfg(cfg: &mut Cfg) -> Result<(OpenAiConfig, Option<String>)> {
        if cfg.has("api_key") {
            return Err(cfg.error(
                "api_key",
                "API keys are not read from recipes (the resolved recipe is written to the run \
                 directory); put the key in an environment variable and name it with \
                 `api_key_env`",
            ));
        }
        let base_url: String = cfg.req("base_url")?;
        let trimmed = base_url.trim();
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(cfg.error(
                "base_url",
                format!(
                    "expected an http:// or https:// URL, found {:?}",
                    http::hide_userinfo(trimmed)
                ),
            ));
        }
        let model: String = cfg.req("model")?;
        let server: String = cfg.get("server", "generic".to_string())?;
        let Some(server) = ServerKind::parse(&server) else {
            return Err(cfg.error(
                "server",
                format!("expected \"generic\", \"llama-server\" or \"vllm\", found {server:?}"),
            ));
        };
        let api_key_env: Option<String> = cfg.opt("api_key_env")?;
        let key = match &api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
                Ok(_) => {
                    return Err(cfg.error(
                        "api_key_env",
                        format!("environment variable `{var}` is empty"),
                    ));
                }
                Err(std::env::VarError::NotPresent) => {
                    return Err(cfg.error(
                        "api_key_env",
                        format!("environment variable `{var}` is not set"),
                    ));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(cfg.error(
                        "api_key_env",
                        format!("environment variable `{var}` is not UTF-8"),
                    ));
                }
            },
        };
        let concurrency: usize =
            cfg.get_checked("concurrency", 8usize, |&c| c > 0, "a positive integer")?;
        let positive = |s: &f64| s.is_finite() && *s > 0.0 && *s < 1.0e7;
        let timeout_s: f64 =
            cfg.get_checked("timeout_s", 600.0, positive, "a positive number of seconds")?;
        let connect_s: f64 = cfg.get_checked(
            "connect_timeout_s",
            10.0,
            positive,
            "a positive number of seconds",
        )?;
        let max_retries: u32 = cfg.get("max_retries", 4u32)?;
        let backoff_ms: u64 = cfg.get("backoff_ms", 500u64)?;
        let max_backoff_ms: u64 = cfg.get_checked(
            "max_backoff_ms",
            30_000u64,
            |&m| m >= backoff_ms,
            "a number of milliseconds >= backoff_ms",
        )?;
        let jitter: bool = cfg.get("jitter", true)?;
        let logprobs: bool = cfg.get("logprobs", true)?;
        let require_logprobs: bool = cfg.get("require_logprobs", false)?;
        if require_logprobs && !logprobs {
            return Err(cfg.error(
                "require_logprobs",
                "requires `logprobs = true` (log-probs are not asked for)",
            ));
        }
        let tokenize: bool = cfg.get("tokenize", false)?;
        if tokenize && server == ServerKind::Generic {
            return Err(cfg.error(
                "tokenize",
                "needs a tokenizer endpoint: set `server` to \"llama-server\" or \"vllm\"",
            ));
        }
        let extra_body: Map<String, Value> = cfg.get("extra_body", Map::new())?;
        let chat_template_kwargs =
            memfactory_core::lm::template_kwargs_from_cfg(cfg, "chat_template_kwargs")?;
        let config = OpenAiConfig {
            base_url,
            model,
            server,
            api_key_env,
            concurrency,
            timeout: Duration::from_secs_f64(timeout_s),
            connect_timeout: Duration::from_secs_f64(connect_s),
            retry: Retry {
                max_retries,
                backoff_ms,
                max_backoff_ms,
                jitter,
            },
            logprobs,
            require_logprobs,
            tokenize,
            extra_body,
            chat_template_kwargs,
            table: cfg.path().to_string(),
        };
        Ok((config, key))
    }
}

/// One request of a batch that failed after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFailure {
    /// Its index in the batch.
    pub index: usize,
    /// HTTP status of the last attempt, when the server answered.
    pub status: Option<u16>,
    /// What went wrong (URL, status, the server's message; never the key).
    pub message: String,
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request {}: {}", self.index, self.message)
    }
}

#[derive(Debug, Default)]
struct Stash {
    map: HashMap<String, Generation>,
    order: VecDeque<String>,
}

/// The OpenAI-compatible backend.
#[derive(Debug)]
pub struct OpenAiLm {
    config: OpenAiConfig,
    client: http::Client,
    stash: Mutex<Stash>,
    control_ids: Mutex<BTreeSet<u32>>,
    http_requests: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OpenAiLm {
    /// A backend for `config`, sending `api_key` (if any) as a bearer token.
    pub fn new(config: OpenAiConfig, api_key: Option<String>) -> Result<Self> {
        let mut base = config.base_url.trim().trim_end_matches('/').to_string();
        if let Some(b) = base.strip_suffix("/v1") {
            base = b.trim_end_matches('/').to_string();
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::config(
                format!("{}.base_url", config.table),
                format!(
                    "expected an http:// or https:// URL, found {:?}",
                    http::hide_userinfo(&base)
                ),
            ));
        }
        if config.concurrency == 0 {
            return Err(Error::config(
                format!("{}.concurrency", config.table),
                "expected a positive integer, found 0",
            ));
        }
        let client = http::Client::new(
            base,
            api_key,
            config.timeout,
            config.connect_timeout,
            config.retry,
            config.concurrency,
        );
        Ok(OpenAiLm {
            config,
            client,
            stash: Mutex::new(Stash::default()),
            control_ids: Mutex::new(BTreeSet::new()),
            http_requests: AtomicUsize::new(0),
        })
    }

    /// Builds the backend from its recipe table (see the crate docs).
    pub fn from_cfg(cfg: &mut Cfg) -> Result<Self> {
        let (config, key) = OpenAiConfig::from_cfg(cfg)?;
        OpenAiLm::new(config, key)
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Finished generations kept from failed batches, waiting for a retry.
    pub fn stashed(&self) -> usize {
        lock(&self.stash).map.len()
    }

    /// Generation requests this backend has sent (answers from the stash not counted).
    pub fn requests_sent(&self) -> usize {
        self.http_requests.load(Ordering::Relaxed)
    }

    fn body_options(&self) -> wire::BodyOptions<'_> {
        wire::BodyOptions {
            model: &self.config.model,
            server: self.config.server,
            logprobs: self.config.logprobs,
            extra: &self.config.extra_body,
            template_kwargs: &self.config.chat_template_kwargs,
        }
    }

    /// Adds the recipe's `chat_template_kwargs` to a chat-rendering request body.
    fn add_template_kwargs(&self, body: &mut Value) {
        if let (Some(o), false) = (
            body.as_object_mut(),
            self.config.chat_template_kwargs.is_empty(),
        ) {
            o.insert(
                "chat_template_kwargs".into(),
                Value::Object(self.config.chat_template_kwargs.clone()),
            );
        }
    }

    fn backend(&self, msg: impl Into<String>) -> Error {
        Error::backend(NAME, self.client.redact(&msg.into()))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.client
            .post(path, body)
            .map_err(|e| self.backend(e.message))
    }

    fn no_tokenizer(&self, what: &str) -> Error {
        Error::config(
            format!("{}.server", self.config.table),
            format!(
                "{what} needs the server's tokenizer endpoints, which `server = \"generic\"` \
                 does not assume; set `server` to \"llama-server\" or \"vllm\" (both serve \
                 /tokenize and /detokenize)"
            ),
        )
    }

    fn ids_from(&self, v: &Value, path: &str) -> Result<Vec<u32>> {
        let ids = v.get("tokens").and_then(Value::as_array).and_then(|a| {
            a.iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect::<Option<Vec<u32>>>()
        });
        ids.ok_or_else(|| {
            self.backend(format!(
                "POST {}{path}: expected {{\"tokens\": [ids]}}, got {}",
                self.client.shown_base,
                wire::short(&v.to_string())
            ))
        })
    }

    /// Token ids of `text` as the server tokenizes it (`add_special`: BOS etc. as for a
    /// prompt).
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let body = match self.config.server {
            ServerKind::LlamaServer => json!({
                "content": text, "add_special": add_special, "parse_special": true
            }),
            ServerKind::Vllm => json!({
                "model": self.config.model, "prompt": text, "add_special_tokens": add_special
            }),
            ServerKind::Generic => return Err(self.no_tokenizer("tokenization")),
        };
        let v = self.post("/tokenize", &body)?;
        self.ids_from(&v, "/tokenize")
    }

    fn generate_one(
        &self,
        req: &GenRequest,
        key: &str,
    ) -> std::result::Result<Generation, (Option<u16>, String)> {
        if let Some(g) = self.stash_take(key) {
            return Ok(g);
        }
        let path = wire::endpoint(&req.prompt);
        let body = wire::request_body(req, &self.body_options());
        self.http_requests.fetch_add(1, Ordering::Relaxed);
        let v = self
            .client
            .post(path, &body)
            .map_err(|e| (e.status, e.message))?;
        let shown = format!("POST {}{path}", self.client.shown_base);
        let chat = matches!(req.prompt, Prompt::Chat(_));
        let p = wire::parse_response(&v, chat, !req.params.stop.is_empty())
            .map_err(|m| (Some(200), self.client.redact(&format!("{shown}: {m}"))))?;
        if !p.control_ids.is_empty() {
            lock(&self.control_ids).extend(p.control_ids.iter().copied());
        }
        // The generation as generated, even where the server's chat parser rewrote the
        // message (thinking templates): `text` stays the decoding of `token_ids`.
        let llama_text = (self.config.server == ServerKind::LlamaServer)
            .then(|| wire::llama_server_text(&p, &req.params.stop));
        if self.config.require_logprobs {
            let missing = match (&p.token_ids, &p.logprobs) {
                (None, None) => Some("token ids and log-probs"),
                (None, Some(_)) => Some("token ids"),
                (Some(_), None) => Some("log-probs (aligned with the token ids)"),
                (Some(_), Some(_)) => None,
            };
            if let Some(what) = missing {
                return Err((
                    Some(200),
                    format!(
                        "{shown}: the response carries no {what} and `{}.require_logprobs = \
                         true` (llama-server returns both with `server = \"llama-server\"`; \
                         vLLM with `server = \"vllm\"`)",
                        self.config.table
                    ),
                ));
            }
        }
        let prompt_ids = match (&req.prompt, p.prompt_ids) {
            (Prompt::Tokens(ids), _) => ids.clone(),
            (_, Some(ids)) => ids,
            (prompt, None) if self.config.tokenize => {
                self.prompt_ids(prompt).map_err(|e| match e {
                    Error::Backend { message, .. } => (None, message),
                    other => (None, other.to_string()),
                })?
            }
            _ => Vec::new(),
        };
        let mut token_ids = p.token_ids.unwrap_or_default();
        let mut logprobs = p.logprobs.unwrap_or_default();
        if !token_ids.is_empty() && !logprobs.is_empty() && token_ids.len() != logprobs.len() {
            logprobs.clear();
        }
        if token_ids.is_empty() {
            logprobs.clear();
        }
        // Keep the `Finish` contract: EOS included in `token_ids`, cut at the token budget.
        if token_ids.len() > req.params.max_new_tokens {
            token_ids.truncate(req.params.max_new_tokens);
            logprobs.truncate(token_ids.len());
        }
        let text = match (llama_text, self.config.server) {
            (Some(t), _) => t,
            // vLLM started with a reasoning parser: rebuilt from the token ids.
            (None, ServerKind::Vllm) if p.reasoning.is_some() && !token_ids.is_empty() => {
                let t = self.decode(&token_ids).map_err(|e| match e {
                    Error::Backend { message, .. } => (None, message),
                    other => (None, other.to_string()),
                })?;
                wire::cut_at_stop(&t, &req.params.stop)
            }
            (None, _) => p.text,
        };
        Ok(Generation {
            prompt_ids,
            token_ids,
            logprobs,
            text,
            finish: p.finish,
        })
    }

    fn stash_take(&self, key: &str) -> Option<Generation> {
        let mut s = lock(&self.stash);
        let g = s.map.remove(key)?;
        s.order.retain(|k| k != key);
        Some(g)
    }

    fn stash_put(&self, key: String, g: Generation) {
        let mut s = lock(&self.stash);
        if s.map.insert(key.clone(), g).is_none() {
            s.order.push_back(key);
        }
        while s.order.len() > STASH_CAP {
            if let Some(old) = s.order.pop_front() {
                s.map.remove(&old);
            }
        }
    }

    fn request_key(&self, req: &GenRequest) -> String {
        let body = wire::request_body(req, &self.body_options());
        format!("{} {}", wire::endpoint(&req.prompt), body)
    }

    fn run_batch(
        &self,
        requests: &[GenRequest],
        keys: &[String],
    ) -> Vec<std::result::Result<Generation, RequestFailure>> {
        let n = requests.len();
        let one = |i: usize| {
            self.generate_one(&requests[i], &keys[i])
                .map_err(|(status, message)| RequestFailure {
                    index: i,
                    status,
                    message: self.client.redact(&message),
                })
        };
        let workers = self.config.concurrency.min(n);
        if workers <= 1 {
            return (0..n).map(one).collect();
        }
        let next = AtomicUsize::new(0);
        let slots: Mutex<Vec<Option<std::result::Result<Generation, RequestFailure>>>> =
            Mutex::new((0..n).map(|_| None).collect());
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let r = one(i);
                lock(&slots)[i] = Some(r);
            }
        };
        std::thread::scope(|s| {
            // `workers - 1` helpers plus this thread, which guarantees progress even when
            // the OS refuses a thread (the others then take its share).
            for _ in 1..workers {
                if std::thread::Builder::new()
                    .name("memfactory-openai".into())
                    .spawn_scoped(s, work)
                    .is_err()
                {
                    break;
                }
            }
            work();
        });
        let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
        slots
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(RequestFailure {
                        index: i,
                        status: None,
                        message: "worker thread ended without a result".into(),
                    })
                })
            })
            .collect()
    }

    /// Generates every request and returns each one's own result, in order: a failure
    /// (after retries) of one request does not hide the others' generations.
    pub fn generate_each(
        &self,
        requests: &[GenRequest],
    ) -> Vec<std::result::Result<Generation, RequestFailure>> {
        let keys: Vec<String> = requests.iter().map(|r| self.request_key(r)).collect();
        self.run_batch(requests, &keys)
    }
}

impl LanguageModel for OpenAiLm {
    fn describe(&self) -> String {
        format!(
            "OpenAI-compatible server {} ({}), model {:?}, concurrency {}{}",
            self.client.shown_base,
            self.config.server.name(),
            self.config.model,
            self.config.concurrency,
            match &self.config.api_key_env {
                Some(v) => format!(", API key from ${v}"),
                None => String::new(),
            }
        )
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, false)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        match self.config.server {
            ServerKind::LlamaServer => {
                let control = lock(&self.control_ids).clone();
                let ids: Vec<u32> = ids
                    .iter()
                    .copied()
                    .filter(|i| !control.contains(i))
                    .collect();
                let v = self.post("/detokenize", &json!({ "tokens": ids }))?;
                v.get("content")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        self.backend(format!(
                            "POST {}/detokenize: expected {{\"content\": text}}, got {}",
                            self.client.shown_base,
                            wire::short(&v.to_string())
                        ))
                    })
            }
            ServerKind::Vllm => {
                let v = self.post(
                    "/detokenize",
                    &json!({ "model": self.config.model, "tokens": ids }),
                )?;
                v.get("prompt")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        self.backend(format!(
                            "POST {}/detokenize: expected {{\"prompt\": text}}, got {}",
                            self.client.shown_base,
                            wire::short(&v.to_string())
                        ))
                    })
            }
            ServerKind::Generic => Err(self.no_tokenizer("decoding")),
        }
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Tokens(ids) => Ok(ids.clone()),
            Prompt::Text(t) => self.tokenize(t, true),
            Prompt::Chat(msgs) => {
                let messages: Vec<Value> = msgs
                    .iter()
                    .map(|m| json!({ "role": m.role, "content": m.content }))
                    .collect();
                match self.config.server {
                    ServerKind::LlamaServer => {
                        let mut body = json!({ "messages": messages });
                        self.add_template_kwargs(&mut body);
                        let v = self.post("/apply-template", &body)?;
                        let Some(text) = v.get("prompt").and_then(Value::as_str) else {
                            return Err(self.backend(format!(
                                "POST {}/apply-template: expected {{\"prompt\": text}}, got {}",
                                self.client.shown_base,
                                wire::short(&v.to_string())
                            )));
                        };
                        self.tokenize(text, true)
                    }
                    ServerKind::Vllm => {
                        let mut body = json!({
                            "model": self.config.model,
                            "messages": messages,
                            "add_generation_prompt": true
                        });
                        self.add_template_kwargs(&mut body);
                        let v = self.post("/tokenize", &body)?;
                        self.ids_from(&v, "/tokenize")
                    }
                    ServerKind::Generic => Err(self.no_tokenizer("prompt_ids")),
                }
            }
        }
    }

    /// Sends the batch (at most `concurrency` requests in flight) and returns the
    /// generations in order. When requests fail after their retries, the error lists each
    /// one (index and reason) and the finished generations are kept for an identical retry
    /// (see the crate docs); use [`OpenAiLm::generate_each`] for per-request results.
    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>> {
        let keys: Vec<String> = requests.iter().map(|r| self.request_key(r)).collect();
        let results = self.run_batch(requests, &keys);
        if results.iter().all(|r| r.is_ok()) {
            return Ok(results.into_iter().flatten().collect());
        }
        let n = results.len();
        let mut failures = Vec::new();
        let mut kept = 0usize;
        for (r, key) in results.into_iter().zip(keys) {
            match r {
                Ok(g) => {
                    self.stash_put(key, g);
                    kept += 1;
                }
                Err(f) => failures.push(f),
            }
        }
        const SHOWN: usize = 8;
        let mut listed: Vec<String> = failures.iter().take(SHOWN).map(|f| f.to_string()).collect();
        if failures.len() > SHOWN {
            listed.push(format!("... and {} more", failures.len() - SHOWN));
        }
        let failed_idx: Vec<String> = failures.iter().map(|f| f.index.to_string()).collect();
        Err(self.backend(format!(
            "{} of {n} requests failed (indices {}); {kept} finished generation{} kept, and a \
             retry of the same requests reuses {} without asking the server again. {}",
            failures.len(),
            failed_idx.join(", "),
            if kept == 1 { " is" } else { "s are" },
            if kept == 1 { "it" } else { "them" },
            listed.join("; ")
        )))
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn LanguageModel>> {
    Ok(Box::new(OpenAiLm::from_cfg(cfg)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn LanguageModel> {
        kind: "openai",
        about: "Any OpenAI-compatible server (vLLM, SGLang, llama-server, hosted APIs): bounded concurrency, retries with backoff, token ids and log-probs when the server returns them",
        build,
    }
}
