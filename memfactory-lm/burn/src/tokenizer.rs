//! Tokenizer and chat template, from GGUF metadata or a Hugging Face model directory.
//!
//! From GGUF, a byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is rebuilt as a
//! `tokenizer.json` document (vocab, merges, special tokens from `token_type`, the
//! pre-tokenizer named by `tokenizer.ggml.pre`) and loaded with the `tokenizers` crate. Chat
//! templates are Hugging Face Jinja templates rendered with minijinja under HF's settings
//! (`trim_blocks`, `lstrip_blocks`, `raise_exception`, common Python string methods).

use std::collections::BTreeMap;
use std::path::Path;

use memfactory_core::{ChatMessage, Error, Result};
use minijinja::value::Value as JValue;
use serde_json::{Value as Json, json};
use tokenizers::Tokenizer;

use crate::gguf::{Gguf, Value};

/// A tokenizer with its special tokens and chat template.
pub struct TextTokenizer {
    tok: Tokenizer,
    /// Tokens that end generation.
    pub eos_ids: Vec<u32>,
    /// Beginning-of-sequence token, when the model has one.
    pub bos_id: Option<u32>,
    /// Text of the BOS token (for the chat template).
    pub bos_token: String,
    /// Text of the EOS token (for the chat template).
    pub eos_token: String,
    /// The Jinja chat template, when the model ships one.
    pub chat_template: Option<String>,
    /// Extra variables for every render of the chat template (the recipe's
    /// `chat_template_kwargs`, e.g. `enable_thinking = false` for Qwen3), as Hugging Face's
    /// `apply_chat_template(**kwargs)` passes them. Empty by default.
    pub template_kwargs: serde_json::Map<String, Json>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.tok.get_vocab_size(true))
            .field("eos_ids", &self.eos_ids)
            .field("bos_id", &self.bos_id)
            .finish()
    }
}

// The GPT-2 / Qwen2 split patterns (as in their tokenizer.json files).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(pattern: &str) -> Json {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

fn pre_tokenizer(pre: &str) -> Json {
    match pre {
        // SmolLM / SmolLM2: every digit is its own pre-token, then GPT-2 byte-level.
        "smollm" | "smollm2" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "qwen2" | "qwen3" | "deepseek-r1-qwen" => json!({"type": "Sequence", "pretokenizers": [
            split(QWEN2_PATTERN), byte_level(false)]}),
        "llama3" | "llama-bpe" | "smaug-bpe" => json!({"type": "Sequence", "pretokenizers": [
            split(LLAMA3_PATTERN), byte_level(false)]}),
        _ => byte_level(true),
    }
}

fn meta_u32(g: &Gguf, key: &str) -> Option<u32> {
    g.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

impl TextTokenizer {
    /// Builds the tokenizer from GGUF metadata (`path` only names the file in errors).
    pub fn from_gguf(g: &Gguf, path: &Path) -> Result<TextTokenizer> {
        let bad = |m: String| Error::model(path.to_path_buf(), m);
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model `{model}` is not supported (only byte-level BPE `gpt2`)"
            )));
        }
        let tokens = g
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("GGUF metadata lacks tokenizer.ggml.tokens".into()))?;
        let types: Vec<i64> = g
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect())
            .unwrap_or_default();
        let merges: Vec<&str> = g
            .get("tokenizer.ggml.merges")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        let mut texts = Vec::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            let t = t
                .as_str()
                .ok_or_else(|| bad(format!("tokenizer.ggml.tokens[{id}] is not a string")))?;
            texts.push(t);
            vocab.insert(t.to_string(), json!(id));
            let ty = types.get(id).copied().unwrap_or(1);
            // 3 = control, 4 = user-defined: matched before BPE, as HF's added tokens are.
            if ty == 3 || ty == 4 {
                added.push(
                    json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == 3}),
                );
            }
        }
        let pre = g
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("gpt2");
        let doc = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": null,
            "pre_tokenizer": pre_tokenizer(pre),
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
        });
        let tok: Tokenizer = doc.to_string().parse().map_err(|e| {
            bad(format!(
                "cannot build the BPE tokenizer from GGUF metadata: {e}"
            ))
        })?;
        let name = |id: Option<u32>| {
            id.and_then(|i| texts.get(i as usize))
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let bos_id = meta_u32(g, "tokenizer.ggml.bos_token_id");
        let eos = meta_u32(g, "tokenizer.ggml.eos_token_id");
        let eot = meta_u32(g, "tokenizer.ggml.eot_token_id");
        let mut eos_ids: Vec<u32> = [eos, eot].into_iter().flatten().collect();
        // ChatML models end an assistant turn with <|im_end|> even when EOS is another token.
        if let Some(i) = texts.iter().position(|t| *t == "<|im_end|>") {
            eos_ids.push(i as u32);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let chat_template = g
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(TextTokenizer {
            tok,
            eos_ids,
            bos_id,
            bos_token: name(bos_id),
            eos_token: name(eos),
            chat_template,
            template_kwargs: serde_json::Map::new(),
        })
    }

    /// Loads `tokenizer.json` (and `tokenizer_config.json`, `generation_config.json` when
    /// present) from a Hugging Face model directory.
    pub fn from_hf_dir(dir: &Path, config_eos: &[u32]) -> Result<TextTokenizer> {
        let tj = dir.join("tokenizer.json");
        let tok = Tokenizer::from_file(&tj)
            .map_err(|e| Error::model(tj.clone(), format!("cannot load tokenizer: {e}")))?;
        let read_json = |name: &str| -> Result<Option<Json>> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => serde_json::from_str(&s)
                    .map(Some)
                    .map_err(|e| Error::model(p, format!("malformed JSON: {e}"))),
                Err(_) => Ok(None),
            }
        };
        let cfg = read_json("tokenizer_config.json")?.unwrap_or(Json::Null);
        let token_text = |v: &Json| -> Option<String> {
            match v {
                Json::String(s) => Some(s.clone()),
                Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
                _ => None,
            }
        };
        let bos_token = cfg
            .get("bos_token")
            .and_then(token_text)
            .unwrap_or_default();
        let eos_token = cfg
            .get("eos_token")
            .and_then(token_text)
            .unwrap_or_default();
        let chat_template = match cfg.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Json::as_str))
                .map(str::to_string),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let mut eos_ids: Vec<u32> = config_eos.to_vec();
        if let Some(gen_cfg) = read_json("generation_config.json")? {
            match gen_cfg.get("eos_token_id") {
                Some(Json::Number(n)) => eos_ids.extend(n.as_u64().map(|v| v as u32)),
                Some(Json::Array(a)) => {
                    eos_ids.extend(a.iter().filter_map(Json::as_u64).map(|v| v as u32))
                }
                _ => {}
            }
        }
        eos_ids.extend(tok.token_to_id(&eos_token));
        eos_ids.extend(tok.token_to_id("<|im_end|>"));
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let bos_id = tok.token_to_id(&bos_token);
        Ok(TextTokenizer {
            tok,
            eos_ids,
            bos_id,
            bos_token,
            eos_token,
            chat_template,
            template_kwargs: serde_json::Map::new(),
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// Token ids of `text` (no special tokens added; special-token text is matched).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tok
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::backend("burn tokenizer", e.to_string()))
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tok
            .decode(ids, true)
            .map_err(|e| Error::backend("burn tokenizer", e.to_string()))
    }

    /// Renders `messages` with the chat template (plus the assistant generation prompt when
    /// `add_generation_prompt`) and [`TextTokenizer::template_kwargs`]. Models without a
    /// template get ChatML.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        render_template_with(
            self.template(),
            messages,
            add_generation_prompt,
            &self.bos_token,
            &self.eos_token,
            &self.template_kwargs,
        )
    }

    /// The chat template text used (the model's, else [`CHATML`]).
    pub fn template(&self) -> &str {
        self.chat_template.as_deref().unwrap_or(CHATML)
    }
}

/// ChatML, used when a model ships no template.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn py_method(
    value: &JValue,
    method: &str,
    args: &[JValue],
) -> std::result::Result<JValue, minijinja::Error> {
    use minijinja::ErrorKind;
    let unknown = || minijinja::Error::from(ErrorKind::UnknownMethod);
    if let Some(s) = value.as_str() {
        let arg = |i: usize| args.get(i).and_then(|a| a.as_str());
        let chars = arg(0);
        let trim_set = |c: char| chars.map(|cs| cs.contains(c)).unwrap_or(c.is_whitespace());
        return Ok(match method {
            "strip" => JValue::from(s.trim_matches(trim_set)),
            "lstrip" => JValue::from(s.trim_start_matches(trim_set)),
            "rstrip" => JValue::from(s.trim_end_matches(trim_set)),
            "startswith" => JValue::from(arg(0).is_some_and(|p| s.starts_with(p))),
            "endswith" => JValue::from(arg(0).is_some_and(|p| s.ends_with(p))),
            "lower" => JValue::from(s.to_lowercase()),
            "upper" => JValue::from(s.to_uppercase()),
            "replace" => match (arg(0), arg(1)) {
                (Some(a), Some(b)) => JValue::from(s.replace(a, b)),
                _ => return Err(unknown()),
            },
            "split" => match arg(0) {
                Some(sep) => s.split(sep).map(JValue::from).collect(),
                None => s.split_whitespace().map(JValue::from).collect(),
            },
            _ => return Err(unknown()),
        });
    }
    if method == "get" {
        let key = args.first().cloned().unwrap_or_default();
        let v = value.get_item(&key).unwrap_or_default();
        return Ok(if v.is_undefined() {
            args.get(1).cloned().unwrap_or(JValue::from(()))
        } else {
            v
        });
    }
    if method == "items" {
        let mut out = Vec::new();
        if let Ok(keys) = value.try_iter() {
            for k in keys {
                let v = value.get_item(&k).unwrap_or_default();
                out.push(JValue::from(vec![k, v]));
            }
        }
        return Ok(JValue::from(out));
    }
    Err(unknown())
}

/// Renders an HF chat template with minijinja.
pub fn render_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    render_template_with(
        template,
        messages,
        add_generation_prompt,
        bos_token,
        eos_token,
        &serde_json::Map::new(),
    )
}

/// The names of `kwargs` that `template` never reads: variables it does not reference at
/// all (minijinja's `undeclared_variables`), so passing them changes nothing — e.g.
/// `enable_thinking` for SmolLM2's template. A template that does not parse reports none
/// (rendering reports the parse error).
pub fn ignored_template_kwargs(
    template: &str,
    kwargs: &serde_json::Map<String, Json>,
) -> Vec<String> {
    let env = environment();
    let Ok(tmpl) = env.template_from_str(template) else {
        return Vec::new();
    };
    let used = tmpl.undeclared_variables(false);
    kwargs
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect()
}

/// minijinja set up as Hugging Face renders chat templates (`trim_blocks`, `lstrip_blocks`,
/// `raise_exception`, Python string methods).
fn environment<'s>() -> minijinja::Environment<'s> {
    let mut env = minijinja::Environment::new();
    // Both flags are plain booleans: building this syntax cannot fail.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<JValue, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.set_unknown_method_callback(|_state, value, method, args| py_method(value, method, args));
    env
}

/// A JSON value as a template value (objects keep their keys, numbers their integer-ness).
fn json_value(v: &Json) -> JValue {
    match v {
        Json::Null => JValue::from(()),
        Json::Bool(b) => JValue::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => JValue::from(i),
            (None, Some(u)) => JValue::from(u),
            _ => JValue::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => JValue::from(s.as_str()),
        Json::Array(a) => a.iter().map(json_value).collect(),
        Json::Object(o) => JValue::from(
            o.iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect::<BTreeMap<String, JValue>>(),
        ),
    }
}

/// Renders an HF chat template with minijinja, with `kwargs` as extra template variables
/// (the recipe's `chat_template_kwargs`; HF's `apply_chat_template(**kwargs)`).
pub fn render_template_with(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    kwargs: &serde_json::Map<String, Json>,
) -> Result<String> {
    let terr = |e: minijinja::Error| Error::Template {
        name: "chat_template".into(),
        message: format!("{e:#}"),
    };
    let env = environment();
    let tmpl = env.template_from_str(template).map_err(terr)?;
    let msgs: Vec<JValue> = messages
        .iter()
        .map(|m| {
            let mut o = BTreeMap::new();
            o.insert("role".to_string(), JValue::from(m.role.as_str()));
            o.insert("content".to_string(), JValue::from(m.content.as_str()));
            JValue::from(o)
        })
        .collect();
    let mut ctx = BTreeMap::new();
    for (k, v) in kwargs {
        ctx.insert(k.clone(), json_value(v));
    }
    ctx.insert("messages".to_string(), JValue::from(msgs));
    ctx.insert(
        "add_generation_prompt".to_string(),
        JValue::from(add_generation_prompt),
    );
    ctx.insert("bos_token".to_string(), JValue::from(bos_token));
    ctx.insert("eos_token".to_string(), JValue::from(eos_token));
    tmpl.render(JValue::from(ctx)).map_err(terr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_adds_default_system_prompt() {
        let out = render_template(SMOL, &[ChatMessage::user("Hi")], true, "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = render_template(
            SMOL,
            &[ChatMessage::system("S"), ChatMessage::user("Hi")],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let t = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('bad first role') }}{% endif %}{{ messages[0]['content'].strip().upper() }}{% if messages[0]['content'].startswith(' x') %}!{% endif %}";
        let out = render_template(t, &[ChatMessage::user(" xy ")], false, "", "").unwrap();
        assert_eq!(out, "XY!");
        let e = render_template(t, &[ChatMessage::assistant("a")], false, "", "").unwrap_err();
        assert!(e.to_string().contains("bad first role"), "{e}");
    }

    #[test]
    fn trim_blocks_like_hf() {
        let t = "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}";
        let out = render_template(
            t,
            &[ChatMessage::user("a"), ChatMessage::user("b")],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(out, "  a\n  b\n");
    }
}
