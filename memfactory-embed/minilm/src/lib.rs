//! # memfactory-embed-minilm
//!
//! The sentence embedder **all-MiniLM-L6-v2** (sentence-transformers) written on [burn] 0.22:
//! text → 384-dimensional unit vectors for dense retrieval and learned reranking. It reads the
//! model's own files (`config.json`, `tokenizer.json`, `model.safetensors`) and runs the BERT
//! encoder itself, so no Python is involved at run time.
//!
//! How it fits in MemFactory: [`MiniLm`] implements [`memfactory_core::Embedder`] and is
//! registered as embedder kind **`minilm`**. The facade builds it once per run from the
//! recipe's top-level `[embedder]` table; ops reach it through
//! [`EpisodeCx::embed`](memfactory_core::EpisodeCx::embed) and store the vectors on the
//! memory items they add.
//!
//! ```toml
//! [embedder]
//! kind = "minilm"
//! path = "models/all-minilm-l6-v2"  # default; `memfactory model fetch all-minilm-l6-v2`
//! device = "flex"                    # flex (CPU, default) | wgpu (with this crate's feature)
//! batch_size = 32                    # texts per forward pass
//! max_tokens = 256                   # truncation, [CLS] and [SEP] included (2 ..= the
//!                                    # model's max_position_embeddings, 512; default capped)
//! ```
//!
//! Facts it follows (sentence-transformers' `all-MiniLM-L6-v2` card and modules; HF
//! `modeling_bert.py`):
//! - BERT encoder, 6 layers, hidden 384, 12 heads of 32, feed-forward 1536 with the exact
//!   (erf) GELU, post-LayerNorm blocks with eps 1e-12, absolute position embeddings (512),
//!   token-type embedding 0 for every token; `config.json` is read and any other
//!   architecture, activation or position scheme is an error naming the file and key;
//! - WordPiece tokenizer from `tokenizer.json` (lower-casing BERT normaliser), `[CLS]` …
//!   `[SEP]` added by its post-processor; the file's fixed padding to 128 is switched off and
//!   its truncation replaced by `max_tokens` (sentence-transformers' `max_seq_length` 256);
//! - mean pooling over the attention mask, then L2 normalisation (`Normalize()`), so the dot
//!   product of two embeddings is their cosine.
//!
//! Batching: texts are tokenised, sorted by length, cut into batches of `batch_size`,
//! right-padded with an additive attention bias on the padded keys, and returned in input
//! order. Results do not depend on the batch composition beyond float rounding (≤ 1e-5,
//! tested).
//!
//! Parity (`tests/parity.rs`, golden file from sentence-transformers 6.2.0 / torch 2.15.0
//! CPU, `scripts/make_golden.py`): on 12 sentences (unicode, punctuation, two truncated at
//! 256 tokens) the largest component difference is 1.9e-7 and 1 − cosine ≤ 1e-12. The GELU
//! of the feed-forward layers runs on the host on `flex` with the Abramowitz–Stegun erf that
//! PyTorch's CPU kernels use (burn's flex `gelu` calls scalar `libm::erff`, a quarter of the
//! forward pass); other devices use burn's `gelu`.
//!
//! Speed (`benches/scripts/compare_embedders.py`, 512 LoCoMo turns, batch 32, 2 threads, a
//! shared 2-core machine): ≈ 120 sentences/s, on par with sentence-transformers on PyTorch
//! (0.97×). About 60% of the time is burn's f32 GEMM (`gemm` crate, AVX2).

mod config;
mod model;
mod weights;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use memfactory_core::{Cfg, Embedder, Error, Result};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use config::BertConfig;

use model::Encoder;
use weights::Weights;

/// The model name `memfactory model fetch` knows this embedder's files by.
pub const MODEL_NAME: &str = "all-minilm-l6-v2";

/// The default model directory (relative to the working directory).
pub const DEFAULT_PATH: &str = "models/all-minilm-l6-v2";

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The burn device named `name`: `flex` (CPU) or `wgpu` when the crate feature is on.
pub fn parse_device(name: &str) -> std::result::Result<Device, String> {
    match name {
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(
            "device `wgpu` needs memfactory-embed-minilm's Cargo feature `wgpu` (this build lacks it)"
                .to_string(),
        ),
        other => Err(format!("unknown device `{other}` (expected flex or wgpu)")),
    }
}

/// all-MiniLM-L6-v2 (or any BERT encoder in the same layout) with mean pooling and L2
/// normalisation.
pub struct MiniLm {
    enc: Encoder,
    tok: Tokenizer,
    device: Device,
    device_name: String,
    dir: PathBuf,
    /// Texts per forward pass (at least 1).
    pub batch_size: usize,
    max_tokens: usize,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn fetch_hint() -> String {
    format!("run `memfactory model fetch {MODEL_NAME}` (it writes models/{MODEL_NAME}/)")
}

impl MiniLm {
    /// Loads the model directory `dir` (`config.json`, `tokenizer.json`,
    /// `model.safetensors`) onto `device` (`"flex"` or `"wgpu"`), with batch size 32 and
    /// truncation to 256 tokens.
    pub fn load(dir: &Path, device: &str) -> Result<MiniLm> {
        let dev = parse_device(device).map_err(Error::Invalid)?;
        if !dir.is_dir() {
            return Err(Error::model(
                dir,
                format!("no such model directory; {}", fetch_hint()),
            ));
        }
        for f in MODEL_FILES {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(Error::model(
                    p,
                    format!("missing model file `{f}`; {}", fetch_hint()),
                ));
            }
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg = BertConfig::from_json(&text, &cfg_path)?;

        let tok_path = dir.join("tokenizer.json");
        let mut tok = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::model(&tok_path, format!("cannot load tokenizer: {e}")))?;
        tok.with_padding(None);
        let n_tok = tok.get_vocab_size(true);
        if n_tok > cfg.vocab {
            return Err(Error::model(
                &tok_path,
                format!(
                    "tokenizer has {n_tok} tokens but config.json `vocab_size` is {}",
                    cfg.vocab
                ),
            ));
        }

        let st_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| Error::io(&st_path, e))?;
        let w = Weights::parse(&st_path, &bytes)?;
        let enc = Encoder::load(&w, &cfg, &dev, device == "flex")?;
        let mut m = MiniLm {
            enc,
            tok,
            device: dev,
            device_name: device.to_string(),
            dir: dir.to_path_buf(),
            batch_size: 32,
            max_tokens: 0,
        };
        m.set_max_tokens(256.min(cfg.max_positions))?;
        Ok(m)
    }

    /// The encoder's hyper-parameters.
    pub fn config(&self) -> &BertConfig {
        &self.enc.cfg
    }

    /// Truncation length in tokens, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Sets the truncation length (2 ..= `max_position_embeddings`).
    pub fn set_max_tokens(&mut self, n: usize) -> Result<()> {
        let max = self.enc.cfg.max_positions;
        if !(2..=max).contains(&n) {
            return Err(Error::Invalid(format!(
                "max_tokens {n} must be in 2..={max} (the model's max_position_embeddings)"
            )));
        }
        self.tok
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: n,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::model(self.dir.join("tokenizer.json"), e.to_string()))?;
        self.max_tokens = n;
        Ok(())
    }

    /// The token ids the model sees for `text` (`[CLS]` … `[SEP]`, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| Error::backend("embed-minilm", format!("tokenizing failed: {e}")))?;
        let ids = enc.get_ids();
        // The post-processor adds the specials, so even "" gives [CLS] [SEP]; guard anyway.
        if ids.is_empty() || ids.len() > self.max_tokens {
            return Err(Error::backend(
                "embed-minilm",
                format!(
                    "tokenizer returned {} ids for a text (expected 1..={})",
                    ids.len(),
                    self.max_tokens
                ),
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.enc.cfg.vocab) {
            return Err(Error::model(
                self.dir.join("tokenizer.json"),
                format!(
                    "token id {bad} is outside the embedding ({} rows)",
                    self.enc.cfg.vocab
                ),
            ));
        }
        Ok(ids.to_vec())
    }

    /// Unit-length embeddings of `texts`, in order, computed in length-sorted batches of
    /// [`MiniLm::batch_size`].
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let d = self.enc.cfg.hidden;
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.batch_size.max(1)) {
            let s = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
            let mut flat = vec![0u32; chunk.len() * s];
            let mut lens = Vec::with_capacity(chunk.len());
            for (r, &i) in chunk.iter().enumerate() {
                flat[r * s..r * s + ids[i].len()].copy_from_slice(&ids[i]);
                lens.push(ids[i].len());
            }
            let pooled = self.enc.pooled(&flat, &lens, s, &self.device);
            let v: Vec<f32> = pooled.into_data().try_into_vec::<f32>().map_err(|e| {
                Error::backend(
                    "embed-minilm",
                    format!("reading the embeddings back: {e:?}"),
                )
            })?;
            if v.len() != chunk.len() * d {
                return Err(Error::backend(
                    "embed-minilm",
                    format!(
                        "forward returned {} values, expected {}",
                        v.len(),
                        chunk.len() * d
                    ),
                ));
            }
            for (r, &i) in chunk.iter().enumerate() {
                let mut e = v[r * d..(r + 1) * d].to_vec();
                // torch.nn.functional.normalize: x / max(‖x‖₂, 1e-12).
                let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                e.iter_mut().for_each(|x| *x /= norm);
                out[i] = e;
            }
        }
        Ok(out)
    }
}

impl Embedder for MiniLm {
    fn describe(&self) -> String {
        let c = &self.enc.cfg;
        format!(
            "minilm: BERT {}L/{}H from {} on {} (mean pooling, L2 norm, max {} tokens, batch {})",
            c.layers,
            c.hidden,
            self.dir.display(),
            self.device_name,
            self.max_tokens,
            self.batch_size
        )
    }

    fn dim(&self) -> usize {
        self.enc.cfg.hidden
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        MiniLm::embed(self, texts)
    }
}

/// Builds the embedder from an `[embedder]` table (`kind` already read): `path`
/// (default [`DEFAULT_PATH`]), `device` (`flex`), `batch_size` (32), `max_tokens` (256, or
/// the model's `max_position_embeddings` when smaller).
pub fn from_cfg(cfg: &mut Cfg) -> Result<MiniLm> {
    let path: String = cfg.get("path", DEFAULT_PATH.to_string())?;
    let device: String = cfg.get("device", "flex".to_string())?;
    let batch_size: usize =
        cfg.get_checked("batch_size", 32usize, |&b| b > 0, "a positive integer")?;
    if let Err(m) = parse_device(&device) {
        return Err(cfg.error("device", m));
    }
    let dir = Path::new(&path);
    if !dir.is_dir() {
        return Err(cfg.error(
            "path",
            format!("no such model directory: {path}; {}", fetch_hint()),
        ));
    }
    let mut m = MiniLm::load(dir, &device)?;
    m.batch_size = batch_size;
    // Read after loading: the default 256 is capped by the model's position table.
    let max_pos = m.config().max_positions;
    let max_tokens: usize = cfg.get_checked(
        "max_tokens",
        256.min(max_pos),
        |&n| (2..=max_pos).contains(&n),
        &format!("a token count in 2..={max_pos} (the model's max_position_embeddings)"),
    )?;
    m.set_max_tokens(max_tokens)?;
    Ok(m)
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Embedder>> {
    Ok(Box::new(from_cfg(cfg)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Embedder> {
        kind: "minilm",
        about: "all-MiniLM-L6-v2 sentence embedder on burn (BERT encoder, mean pooling, L2 norm; 384 dims; flex CPU, wgpu feature)",
        build,
    }
}
