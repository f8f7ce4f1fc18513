//! The BERT hyper-parameters read from a model directory's `config.json`, with every setting
//! this encoder does not implement rejected by name.

use std::path::Path;

use memfactory_core::{Error, Result};
use serde_json::Value as Json;

/// Hyper-parameters of a BERT encoder (Hugging Face `BertModel` names in the docs).
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// `vocab_size`: rows of the word embedding.
    pub vocab: usize,
    /// `hidden_size`: model width, also the embedding dimension.
    pub hidden: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `intermediate_size`: width of the feed-forward layer.
    pub intermediate: usize,
    /// `max_position_embeddings`: rows of the absolute position embedding.
    pub max_positions: usize,
    /// `type_vocab_size`: rows of the token-type embedding (only type 0 is used).
    pub type_vocab: usize,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Parses `config.json` text; `path` names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<BertConfig> {
        let bad = |m: String| Error::model(path.to_path_buf(), m);
        let j: Json =
            serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        if !j.is_object() {
            return Err(bad("expected a JSON object".into()));
        }
        let string = |k: &str| j.get(k).and_then(Json::as_str);
        match string("model_type") {
            Some("bert") => {}
            Some(other) => {
                return Err(bad(format!(
                    "key `model_type` is `{other}`; only `bert` encoders are supported"
                )));
            }
            None => return Err(bad("missing key `model_type` (expected \"bert\")".into())),
        }
        // Only the exact (erf) GELU of BERT; the tanh approximations would silently drift.
        match string("hidden_act") {
            Some("gelu") | None => {}
            Some(other) => {
                return Err(bad(format!(
                    "key `hidden_act` is `{other}`; only `gelu` (the erf form) is supported"
                )));
            }
        }
        match string("position_embedding_type") {
            Some("absolute") | None => {}
            Some(other) => {
                return Err(bad(format!(
                    "key `position_embedding_type` is `{other}`; only `absolute` is supported"
                )));
            }
        }
        if j.get("is_decoder").and_then(Json::as_bool) == Some(true) {
            return Err(bad(
                "key `is_decoder` is true; only bidirectional encoders are supported".into(),
            ));
        }
        let u = |k: &str| -> Result<usize> {
            match j.get(k) {
                None => Err(bad(format!("missing key `{k}`"))),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "key `{k}` must be a non-negative integer, found {v}"
                        ))
                    }),
            }
        };
        let cfg = BertConfig {
            vocab: u("vocab_size")?,
            hidden: u("hidden_size")?,
            layers: u("num_hidden_layers")?,
            heads: u("num_attention_heads")?,
            intermediate: u("intermediate_size")?,
            max_positions: u("max_position_embeddings")?,
            type_vocab: match j.get("type_vocab_size") {
                None => 2,
                Some(_) => u("type_vocab_size")?,
            },
            layer_norm_eps: match j.get("layer_norm_eps") {
                None => 1e-12,
                Some(v) => v
                    .as_f64()
                    .filter(|e| e.is_finite() && *e > 0.0)
                    .ok_or_else(|| {
                        bad(format!(
                            "key `layer_norm_eps` must be a positive number, found {v}"
                        ))
                    })?,
            },
        };
        let checks: [(&str, bool, &str); 7] = [
            (
                "vocab_size",
                cfg.vocab > 0 && cfg.vocab <= 1 << 20,
                "in 1..=1048576",
            ),
            (
                "hidden_size",
                cfg.hidden > 0 && cfg.hidden <= 1 << 14,
                "in 1..=16384",
            ),
            (
                "num_hidden_layers",
                cfg.layers > 0 && cfg.layers <= 256,
                "in 1..=256",
            ),
            (
                "num_attention_heads",
                cfg.heads > 0 && cfg.hidden.is_multiple_of(cfg.heads.max(1)),
                "positive and dividing `hidden_size`",
            ),
            (
                "intermediate_size",
                cfg.intermediate > 0 && cfg.intermediate <= 1 << 16,
                "in 1..=65536",
            ),
            (
                "max_position_embeddings",
                cfg.max_positions >= 2 && cfg.max_positions <= 1 << 16,
                "in 2..=65536",
            ),
            (
                "type_vocab_size",
                cfg.type_vocab >= 1 && cfg.type_vocab <= 1 << 10,
                "in 1..=1024",
            ),
        ];
        for (key, ok, expected) in checks {
            if !ok {
                return Err(bad(format!(
                    "key `{key}` must be {expected} (config: {cfg:?})"
                )));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures": ["BertModel"], "hidden_act": "gelu",
        "hidden_size": 384, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 6, "position_embedding_type": "absolute", "type_vocab_size": 2,
        "vocab_size": 30522}"#;

    #[test]
    fn reads_the_minilm_config() {
        let c = BertConfig::from_json(MINILM, Path::new("config.json")).unwrap();
        assert_eq!(
            c,
            BertConfig {
                vocab: 30522,
                hidden: 384,
                layers: 6,
                heads: 12,
                intermediate: 1536,
                max_positions: 512,
                type_vocab: 2,
                layer_norm_eps: 1e-12,
            }
        );
        assert_eq!(c.head_dim(), 32);
    }

    #[test]
    fn unsupported_settings_name_file_and_key() {
        let cases = [
            (
                MINILM.replace("\"gelu\"", "\"gelu_new\""),
                "`hidden_act` is `gelu_new`",
            ),
            (
                MINILM.replace("\"bert\"", "\"roberta\""),
                "`model_type` is `roberta`",
            ),
            (
                MINILM.replace("\"absolute\"", "\"relative_key\""),
                "`position_embedding_type` is `relative_key`",
            ),
            (
                MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
                "`num_attention_heads` must be",
            ),
            (
                MINILM.replace("\"hidden_size\": 384,", ""),
                "missing key `hidden_size`",
            ),
            (
                MINILM.replace("1e-12", "\"tiny\""),
                "`layer_norm_eps` must be a positive number",
            ),
            ("[1, 2]".to_string(), "expected a JSON object"),
            ("{".to_string(), "malformed JSON"),
        ];
        for (text, want) in cases {
            let err = BertConfig::from_json(&text, Path::new("/m/config.json"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/m/config.json") && err.contains(want),
                "{want}: {err}"
            );
        }
    }
}
