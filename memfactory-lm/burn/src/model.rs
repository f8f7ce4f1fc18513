//! Decoder-only transformer families (Llama, Qwen2/2.5, Qwen3) as one shared decoder with a
//! per-architecture [`ModelConfig`], and loading of their weights from GGUF or a Hugging Face
//! directory.
//!
//! Facts used (HF `modeling_llama.py`, `modeling_qwen2.py`, `modeling_qwen3.py`; llama.cpp
//! `convert_hf_to_gguf.py`):
//! - pre-norm blocks, RMSNorm `x / sqrt(mean(x²) + eps) · w`, SwiGLU MLP, GQA where query head
//!   `h` reads kv head `h / (heads / kv_heads)`;
//! - RoPE in the rotate-half layout (pairs `i` and `i + head_dim/2`); llama-arch GGUF files
//!   store q/k rows permuted for interleaved RoPE, so they are un-permuted on load and one
//!   RoPE serves every source;
//! - Qwen2: bias on q/k/v; Qwen3: per-head RMSNorm on q and k before RoPE, explicit
//!   `head_dim`;
//! - tied embeddings: the LM head is the token embedding.
//!
//! Weights are held on the device as `f32`, `[in, out]` (so `x · W`), with q/k/v and gate/up
//! fused into one matrix each for inference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use memfactory_core::{Error, Result};
use serde_json::Value as Json;

use std::sync::Arc;

use crate::gguf::{Gguf, Value};
use crate::kernels::{HOST_MAX_ROWS, HostMat};

/// Which architecture family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    /// Llama / SmolLM / SmolLM2.
    Llama,
    /// Qwen2 and Qwen2.5 (q/k/v bias).
    Qwen2,
    /// Qwen3 (q/k RMSNorm, explicit head_dim).
    Qwen3,
}

/// Hyper-parameters of a decoder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// Model width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// LM head shares the embedding.
    pub tied: bool,
    /// q/k/v projections have a bias.
    pub qkv_bias: bool,
    /// q/k RMSNorm per head (Qwen3).
    pub qk_norm: bool,
    /// Trained context length.
    pub max_positions: usize,
}

impl ModelConfig {
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::model(path.to_path_buf(), m));
        if self.hidden == 0 || self.layers == 0 || self.heads == 0 || self.kv_heads == 0 {
            return bad(format!("degenerate config {self:?}"));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} heads not a multiple of {} kv heads",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!("odd head_dim {}", self.head_dim));
        }
        if self.hidden > 1 << 16
            || self.intermediate > 1 << 18
            || self.layers > 512
            || self.vocab > 1 << 20
        {
            return bad(format!("implausibly large config {self:?}"));
        }
        Ok(())
    }

    /// Reads the config from GGUF metadata.
    pub fn from_gguf(g: &Gguf, path: &Path) -> Result<ModelConfig> {
        let bad = |m: String| Error::model(path.to_path_buf(), m);
        let arch_name = g
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("GGUF metadata lacks general.architecture".into()))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            a => {
                return Err(bad(format!(
                    "unsupported architecture `{a}` (llama, qwen2, qwen3)"
                )));
            }
        };
        let u = |k: &str| -> Result<usize> {
            g.get(&format!("{arch_name}.{k}"))
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("GGUF metadata lacks {arch_name}.{k}")))
        };
        let f = |k: &str, d: f32| -> f32 {
            g.get(&format!("{arch_name}.{k}"))
                .and_then(Value::as_f64)
                .map(|v| v as f32)
                .unwrap_or(d)
        };
        let hidden = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        let kv_heads = u("attention.head_count_kv").unwrap_or(heads);
        let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
        let embd = g
            .tensor("token_embd.weight")
            .ok_or_else(|| bad("GGUF lacks token_embd.weight".into()))?;
        let vocab = embd.dims.get(1).copied().unwrap_or(0) as usize;
        let cfg = ModelConfig {
            arch,
            vocab,
            hidden,
            intermediate: u("feed_forward_length")?,
            layers: u("block_count")?,
            heads,
            kv_heads,
            head_dim,
            rope_theta: f(
                "rope.freq_base",
                if arch == Arch::Llama {
                    10_000.0
                } else {
                    1_000_000.0
                },
            ),
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-6),
            tied: g.tensor("output.weight").is_none(),
            qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: g.tensor("blk.0.attn_q_norm.weight").is_some(),
            max_positions: u("context_length").unwrap_or(4096),
        };
        cfg.check(path)?;
        Ok(cfg)
    }

    /// Reads the config from an HF `config.json`.
    pub fn from_hf_json(j: &Json, path: &Path) -> Result<ModelConfig> {
        let bad = |m: String| Error::model(path.to_path_buf(), m);
        let mt = j.get("model_type").and_then(Json::as_str).unwrap_or("");
        let arch = match mt {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            a => {
                return Err(bad(format!(
                    "unsupported model_type `{a}` (llama, qwen2, qwen3)"
                )));
            }
        };
        let u = |k: &str| -> Result<usize> {
            j.get(k)
                .and_then(Json::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("config.json lacks `{k}`")))
        };
        let hidden = u("hidden_size")?;
        let heads = u("num_attention_heads")?;
        let cfg = ModelConfig {
            arch,
            vocab: u("vocab_size")?,
            hidden,
            intermediate: u("intermediate_size")?,
            layers: u("num_hidden_layers")?,
            heads,
            kv_heads: u("num_key_value_heads").unwrap_or(heads),
            head_dim: u("head_dim").unwrap_or(hidden / heads.max(1)),
            // transformers ≥ 5 writes `rope_parameters.rope_theta`; older files `rope_theta`.
            rope_theta: j
                .get("rope_theta")
                .or_else(|| j.get("rope_parameters").and_then(|r| r.get("rope_theta")))
                .and_then(Json::as_f64)
                .unwrap_or(10_000.0) as f32,
            rms_eps: j.get("rms_norm_eps").and_then(Json::as_f64).unwrap_or(1e-6) as f32,
            tied: j
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2
                || j.get("attention_bias")
                    .and_then(Json::as_bool)
                    .unwrap_or(false),
            qk_norm: arch == Arch::Qwen3,
            max_positions: u("max_position_embeddings").unwrap_or(4096),
        };
        cfg.check(path)?;
        Ok(cfg)
    }
}

/// A host matrix, row-major `[rows, cols]` (PyTorch's `[out, in]` for weights).
pub(crate) struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Named tensors on the host, dequantized to f32, under Hugging Face names.
pub(crate) trait Source {
    fn get(&mut self, name: &str) -> Result<Option<Mat>>;
    /// The tensor in its quantized block format, when it has a host kernel.
    fn raw(&mut self, _name: &str) -> Option<HostMat> {
        None
    }
    fn path(&self) -> &Path;
    fn need(&mut self, name: &str, rows: usize, cols: usize) -> Result<Mat> {
        let m = self.get(name)?.ok_or_else(|| {
            Error::model(
                self.path().to_path_buf(),
                format!("missing tensor `{name}`"),
            )
        })?;
        if m.rows != rows || m.cols != cols {
            return Err(Error::model(
                self.path().to_path_buf(),
                format!(
                    "tensor `{name}` has shape [{}, {}], expected [{rows}, {cols}]",
                    m.rows, m.cols
                ),
            ));
        }
        Ok(m)
    }
}

/// Random weights for a config (see [`crate::BurnLm::random`]).
pub(crate) struct RandomSource {
    pub seed: u64,
    pub std: f32,
    pub path: PathBuf,
}

impl Source for RandomSource {
    fn get(&mut self, _name: &str) -> Result<Option<Mat>> {
        Ok(None)
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn need(&mut self, name: &str, rows: usize, cols: usize) -> Result<Mat> {
        use rand_chacha::ChaCha8Rng;
        use rand_core::{RngCore, SeedableRng};
        let n = rows * cols;
        let data = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(memfactory_core::seed::derive(self.seed, name));
            let mut unit = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (0..n)
                .map(|_| {
                    // Box–Muller, one normal per pair of uniforms.
                    let (u, v) = (unit(), unit());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * self.std
                })
                .collect()
        };
        Ok(Mat { rows, cols, data })
    }
}

/// GGUF file as a [`Source`] under HF names.
pub(crate) struct GgufSource<'a> {
    pub g: &'a Gguf,
    pub buf: &'a crate::gguf::GgufBytes,
    pub path: PathBuf,
    pub cfg: ModelConfig,
}

fn gguf_name(hf: &str) -> Option<String> {
    if hf == "model.embed_tokens.weight" {
        return Some("token_embd.weight".into());
    }
    if hf == "model.norm.weight" {
        return Some("output_norm.weight".into());
    }
    if hf == "lm_head.weight" {
        return Some("output.weight".into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let t = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{n}.{t}"))
}

/// Undoes llama.cpp's q/k row permutation (`reshape(h, 2, d/2h, ..).swapaxes(1, 2)`):
/// GGUF row `h·hd + 2i + a` holds HF row `h·hd + a·hd/2 + i`.
fn unpermute<T: Copy + Default>(data: &mut Vec<T>, rows: usize, n_head: usize) {
    let width = data.len() / rows.max(1);
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for a in 0..2 {
                let src = h * hd + 2 * i + a;
                let dst = h * hd + a * half + i;
                out[dst * width..(dst + 1) * width]
                    .copy_from_slice(&data[src * width..(src + 1) * width]);
            }
        }
    }
    *data = out;
}

fn unpermute_rows(m: &mut Mat, n_head: usize) {
    unpermute(&mut m.data, m.rows, n_head);
}

impl Source for GgufSource<'_> {
    fn path(&self) -> &Path {
        &self.path
    }
    fn raw(&mut self, name: &str) -> Option<HostMat> {
        let gname = gguf_name(name)?;
        let t = self.g.tensor(&gname)?;
        if t.dims.len() != 2 {
            return None;
        }
        let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
        let mut data = self.g.tensor_bytes(self.buf, t).to_vec();
        self.buf.release(self.g, t);
        if self.cfg.arch == Arch::Llama {
            let heads = if gname.ends_with("attn_q.weight") {
                Some(self.cfg.heads)
            } else if gname.ends_with("attn_k.weight") {
                Some(self.cfg.kv_heads)
            } else {
                None
            };
            if let Some(h) = heads {
                if !rows.is_multiple_of(h) {
                    return None;
                }
                unpermute(&mut data, rows, h);
            }
        }
        HostMat::new(t.ty, rows, cols, data)
    }
    fn get(&mut self, name: &str) -> Result<Option<Mat>> {
        let Some(gname) = gguf_name(name) else {
            return Ok(None);
        };
        if self.g.tensor(&gname).is_none() {
            return Ok(None);
        }
        let (shape, data) = self.g.tensor_f32(self.buf, &gname, &self.path)?;
        if let Some(t) = self.g.tensor(&gname) {
            self.buf.release(self.g, t);
        }
        let (rows, cols) = match shape.as_slice() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            s => {
                return Err(Error::model(
                    self.path.clone(),
                    format!("tensor `{gname}` has {} dims", s.len()),
                ));
            }
        };
        let mut m = Mat { rows, cols, data };
        if self.cfg.arch == Arch::Llama {
            if gname.ends_with("attn_q.weight") && m.rows.is_multiple_of(self.cfg.heads) {
                unpermute_rows(&mut m, self.cfg.heads);
            } else if gname.ends_with("attn_k.weight") && m.rows.is_multiple_of(self.cfg.kv_heads) {
                unpermute_rows(&mut m, self.cfg.kv_heads);
            }
        }
        Ok(Some(m))
    }
}

/// Safetensors files of an HF directory as a [`Source`].
pub(crate) struct SafetensorsSource {
    pub path: PathBuf,
    /// (file bytes, tensor names in it)
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub index: HashMap<String, usize>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<SafetensorsSource> {
        let single = dir.join("model.safetensors");
        let idx = dir.join("model.safetensors.index.json");
        let mut names: Vec<PathBuf> = Vec::new();
        if single.exists() {
            names.push(single);
        } else if idx.exists() {
            let s = std::fs::read_to_string(&idx).map_err(|e| Error::io(&idx, e))?;
            let j: Json = serde_json::from_str(&s)
                .map_err(|e| Error::model(idx.clone(), format!("malformed JSON: {e}")))?;
            let map = j
                .get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| Error::model(idx.clone(), "no `weight_map` object"))?;
            let mut files: Vec<&str> = map.values().filter_map(Json::as_str).collect();
            files.sort_unstable();
            files.dedup();
            for f in files {
                if f.contains("..") || f.contains('/') {
                    return Err(Error::model(idx.clone(), format!("bad shard name `{f}`")));
                }
                names.push(dir.join(f));
            }
        } else {
            return Err(Error::model(
                dir.to_path_buf(),
                "no model.safetensors or model.safetensors.index.json",
            ));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for p in names {
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| Error::model(p.clone(), format!("bad safetensors file: {e}")))?;
            for n in st.names() {
                index.insert(n.to_string(), files.len());
            }
            files.push((p, bytes));
        }
        Ok(SafetensorsSource {
            path: dir.to_path_buf(),
            files,
            index,
        })
    }
}

impl Source for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn get(&mut self, name: &str) -> Result<Option<Mat>> {
        let Some(&fi) = self.index.get(name) else {
            return Ok(None);
        };
        let (p, bytes) = &self.files[fi];
        let bad = |m: String| Error::model(p.clone(), m);
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("bad safetensors file: {e}")))?;
        let t = st
            .tensor(name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let raw = t.data();
        use safetensors::Dtype;
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            d => return Err(bad(format!("tensor `{name}`: unsupported dtype {d:?}"))),
        };
        let (rows, cols) = match t.shape() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            s => return Err(bad(format!("tensor `{name}`: {} dims", s.len()))),
        };
        Ok(Some(Mat { rows, cols, data }))
    }
}

/// A weight `[in, out]` stored as column blocks, one per core: flex runs matmuls below
/// ~7 M multiply-adds on one thread, so decode-sized products are split by columns and the
/// blocks multiplied in parallel.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    pub parts: Vec<Tensor<2>>,
    /// The same weight as GGUF blocks `[out, in]`, for decode-sized products on the CPU —
    /// or, where `lora` is not empty, the *base* weight the parts were merged from.
    pub host: Option<Arc<HostMat>>,
    /// LoRA branches added to the host product (`parts` = blocks + these, merged): a policy
    /// trained with LoRA on a GGUF base decodes on the base's blocks plus its adapters
    /// instead of on f32 copies of the merged weights.
    pub lora: Vec<Arc<HostLora>>,
}

/// One LoRA branch of a host product: output columns `off..off + out` gain
/// `scale · (x · A) · B`.
#[derive(Debug, Clone)]
pub(crate) struct HostLora {
    /// First output column.
    pub off: usize,
    /// `[in, r]` row-major.
    pub a: Vec<f32>,
    /// `[r, out]` row-major.
    pub b: Vec<f32>,
    pub rank: usize,
    pub out: usize,
    pub scale: f32,
}

impl HostLora {
    /// Adds this branch to `y` `[m, total]` for `x` `[m, in]`.
    fn add_to(&self, x: &[f32], m: usize, y: &mut [f32], total: usize) {
        let (r, inp) = (self.rank, self.a.len() / self.rank.max(1));
        let mut t = vec![0f32; r];
        for row in 0..m {
            t.iter_mut().for_each(|v| *v = 0.0);
            for (xi, arow) in x[row * inp..(row + 1) * inp]
                .iter()
                .zip(self.a.chunks_exact(r))
            {
                for (tv, &av) in t.iter_mut().zip(arow) {
                    *tv += xi * av;
                }
            }
            let yrow = &mut y[row * total + self.off..row * total + self.off + self.out];
            for (&tj, brow) in t.iter().zip(self.b.chunks_exact(self.out)) {
                let c = tj * self.scale;
                for (yv, &bv) in yrow.iter_mut().zip(brow) {
                    *yv += c * bv;
                }
            }
        }
    }
}

/// Rows of `x` up to which a product runs block-parallel (above it, gemm's own threading
/// takes over).
const SPLIT_MAX_ROWS: usize = 64;

impl Split {
    /// Splits `w` `[in, out]` into `n` contiguous column blocks — on `flex` only: a GPU
    /// runs one product on all its cores, and blocks there would only multiply the kernel
    /// launches (8 matmuls and a concatenation per weight; measured on an H100 through wgpu:
    /// decode at 6 tok/s).
    pub fn new(w: Tensor<2>, n: usize) -> Split {
        let [_, out] = w.dims();
        let n = if w.device() == Device::flex() {
            n.clamp(1, out.max(1))
        } else {
            1
        };
        if n == 1 {
            return Split {
                parts: vec![w],
                host: None,
                lora: Vec::new(),
            };
        }
        let step = out.div_ceil(n);
        let parts = (0..out)
            .step_by(step)
            .map(|s| {
                let part = w.clone().narrow(1, s, step.min(out - s));
                // A fresh contiguous copy (a narrow is only a view).
                Tensor::from_data(part.into_data(), &w.device())
            })
            .collect();
        Split {
            parts,
            host: None,
            lora: Vec::new(),
        }
    }

    /// A weight held only as GGUF blocks (no f32 copy): products of any size read the
    /// blocks ([`HostMat::matmul_t_gemm`] for gemm-sized ones), and [`Split::full`]
    /// dequantizes on demand. `flex` only.
    pub fn blocks(host: HostMat) -> Split {
        Split {
            parts: Vec::new(),
            host: Some(Arc::new(host)),
            lora: Vec::new(),
        }
    }

    /// The whole matrix (dequantized from the blocks when there is no f32 copy).
    pub fn full(&self) -> Tensor<2> {
        if self.parts.is_empty()
            && let Some(h) = &self.host
        {
            let w = h.dequantize_all();
            let (out, inp) = (h.rows, h.cols);
            let mut t = vec![0f32; w.len()];
            for (o, row) in w.chunks_exact(inp).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    t[i * out + o] = v;
                }
            }
            // Blocks-only weights carry no LoRA branches (a LoRA policy's splits keep
            // their merged f32 parts), so the blocks are the whole matrix.
            debug_assert!(self.lora.is_empty());
            return Tensor::from_data(TensorData::new(t, [inp, out]), &Device::flex());
        }
        if self.parts.len() == 1 {
            self.parts[0].clone()
        } else {
            Tensor::cat(self.parts.clone(), 1)
        }
    }

    /// `x · W` for host rows `x` (`[m, in]` row-major), returning `[m, out]`: on the GGUF
    /// blocks when this weight has them and `m` is decode-sized, else through the tensor
    /// product.
    pub fn mm_host(&self, x: &[f32], m: usize) -> Vec<f32> {
        if let Some(y) = self.host_product(x, m) {
            return y;
        }
        if let Some(y) = self.blocks_gemm(x, m) {
            return y;
        }
        let k = x.len() / m.max(1);
        let device = self.parts[0].device();
        let t = Tensor::from_data(TensorData::new(x.to_vec(), [m, k]), &device);
        crate::forward::host_vec(self.mm(t))
    }

    /// `x · W` on the host blocks (plus the LoRA branches) when this weight has blocks and
    /// `m` is decode-sized.
    fn host_product(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        let h = self.host.as_ref()?;
        if m > HOST_MAX_ROWS || x.len() != m * h.cols {
            return None;
        }
        let mut y = h.matmul_t(x, m);
        for l in &self.lora {
            l.add_to(x, m, &mut y, h.rows);
        }
        Some(y)
    }

    /// `x · W` for gemm-sized `x` on a weight held only as blocks.
    fn blocks_gemm(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        let h = self.host.as_ref().filter(|_| self.parts.is_empty())?;
        let mut y = h.matmul_t_gemm(x, m);
        for l in &self.lora {
            l.add_to(x, m, &mut y, h.rows);
        }
        Some(y)
    }

    /// `x · W`.
    pub fn mm(&self, x: Tensor<2>) -> Tensor<2> {
        if self.parts.is_empty() {
            let [m, _] = x.dims();
            let device = x.device();
            let v = crate::forward::host_vec(x);
            let y = self.mm_host(&v, m);
            let n = y.len() / m.max(1);
            return Tensor::from_data(TensorData::new(y, [m, n]), &device);
        }
        if let Some(h) = &self.host
            && x.dims()[0] <= HOST_MAX_ROWS
        {
            let [m, k] = x.dims();
            if let Ok(v) = x.clone().into_data().try_into_vec::<f32>()
                && let Some(y) = self.host_product(&v, m)
            {
                debug_assert_eq!(v.len(), m * k);
                return Tensor::from_data(TensorData::new(y, [m, h.rows]), &x.device());
            }
        }
        if self.parts.len() == 1 {
            return x.matmul(self.parts[0].clone());
        }
        let outs: Vec<Tensor<2>> = if x.dims()[0] <= SPLIT_MAX_ROWS {
            use rayon::prelude::*;
            self.parts
                .par_iter()
                .map(|w| x.clone().matmul(w.clone()))
                .collect()
        } else {
            self.parts
                .iter()
                .map(|w| x.clone().matmul(w.clone()))
                .collect()
        };
        Tensor::cat(outs, 1)
    }
}

/// Column blocks per weight: one per rayon thread (at most 8).
pub(crate) fn split_parts() -> usize {
    rayon::current_num_threads().clamp(1, 8)
}

/// One block of inference weights (fused, `[in, out]`).
#[derive(Debug, Clone)]
pub(crate) struct FusedLayer {
    pub attn_norm: Tensor<1>,
    pub wqkv: Split,
    pub bqkv: Option<Tensor<1>>,
    pub q_norm: Option<Tensor<1>>,
    pub k_norm: Option<Tensor<1>>,
    pub wo: Split,
    pub ffn_norm: Tensor<1>,
    pub wgu: Split,
    pub wdown: Split,
}

/// The token embedding `[vocab, d]`: f32 on the device, or the GGUF blocks of a model
/// held as blocks on `flex` (rows dequantized as tokens need them).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per model
pub(crate) enum Embed {
    F32(Tensor<2>),
    Blocks(Arc<HostMat>),
}

/// Inference weights.
#[derive(Debug, Clone)]
pub(crate) struct Fused {
    pub embed: Embed,
    pub layers: Vec<FusedLayer>,
    pub norm: Tensor<1>,
    /// `[hidden, vocab]`.
    pub lm_head: Split,
    /// The norm weights and biases as host vectors for the host decode step, read on its
    /// first use.
    pub host_vecs: std::sync::OnceLock<Arc<crate::decode::HostVecs>>,
}

/// `[in, Σ out]` row-major from `[out, in]` matrices.
fn transpose_cat(mats: &[&Mat]) -> (usize, usize, Vec<f32>) {
    let cols_in = mats[0].cols;
    let total: usize = mats.iter().map(|m| m.rows).sum();
    let mut out = vec![0f32; cols_in * total];
    let mut off = 0;
    for m in mats {
        for r in 0..m.rows {
            let row = &m.data[r * m.cols..(r + 1) * m.cols];
            for (i, &v) in row.iter().enumerate() {
                out[i * total + off + r] = v;
            }
        }
        off += m.rows;
    }
    (cols_in, total, out)
}

pub(crate) fn t1(v: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

pub(crate) fn t2(v: Vec<f32>, r: usize, c: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, [r, c]), device)
}

impl Fused {
    /// The embedding rows of `ids` as host rows `[ids.len(), d]`.
    pub fn embed_rows(&self, ids: &[u32]) -> Vec<f32> {
        match &self.embed {
            Embed::Blocks(h) => {
                let d = h.cols;
                let mut out = vec![0f32; ids.len() * d];
                for (row, &t) in out.chunks_exact_mut(d).zip(ids) {
                    h.dequant_rows(t as usize, row);
                }
                out
            }
            Embed::F32(t) => {
                let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let n = ids.len();
                let idx = Tensor::<1, burn::tensor::Int>::from_data(
                    TensorData::new(ids, [n]),
                    &t.device(),
                );
                crate::forward::host_vec(t.clone().select(0, idx))
            }
        }
    }

    /// The embedding rows of `ids` as a tensor `[ids.len(), d]` on `device`.
    pub fn embed_select(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        match &self.embed {
            Embed::F32(t) => {
                let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let n = ids.len();
                let idx =
                    Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(ids, [n]), device);
                t.clone().select(0, idx)
            }
            Embed::Blocks(h) => {
                let rows = self.embed_rows(ids);
                Tensor::from_data(TensorData::new(rows, [ids.len(), h.cols]), device)
            }
        }
    }

    /// The whole embedding `[vocab, d]` as f32 (dequantized when held as blocks).
    pub fn embed_tensor(&self) -> Tensor<2> {
        match &self.embed {
            Embed::F32(t) => t.clone(),
            Embed::Blocks(h) => Tensor::from_data(
                TensorData::new(h.dequantize_all(), [h.rows, h.cols]),
                &Device::flex(),
            ),
        }
    }

    /// Loads every weight of `cfg` from `src` onto `device`. With `host_kernels`, a
    /// weight whose GGUF blocks have a host kernel is held as those blocks only
    /// ([`Split::blocks`]; no f32 copy), the rest as f32.
    pub fn load(
        src: &mut dyn Source,
        cfg: &ModelConfig,
        device: &Device,
        host_kernels: bool,
    ) -> Result<Fused> {
        let raw = |src: &mut dyn Source, names: &[String]| -> Option<HostMat> {
            if !host_kernels {
                return None;
            }
            HostMat::stack(
                names
                    .iter()
                    .map(|n| src.raw(n))
                    .collect::<Option<Vec<_>>>()?,
            )
        };
        let (d, hd) = (cfg.hidden, cfg.head_dim);
        let (qo, kvo) = (cfg.heads * hd, cfg.kv_heads * hd);
        // One inference weight from HF matrices `names` `[out_i, in]` stacked by rows: the
        // GGUF blocks alone where they have a kernel, else f32 `[in, Σ out]`.
        let weight =
            |src: &mut dyn Source, names: &[String], outs: &[usize], inp: usize, n: usize| {
                let total: usize = outs.iter().sum();
                if let Some(h) = raw(src, names).filter(|h| h.rows == total && h.cols == inp) {
                    return Ok::<Split, Error>(Split::blocks(h));
                }
                let mats = names
                    .iter()
                    .zip(outs)
                    .map(|(nm, &o)| src.need(nm, o, inp))
                    .collect::<Result<Vec<_>>>()?;
                let (r, c, w) = transpose_cat(&mats.iter().collect::<Vec<_>>());
                drop(mats);
                Ok(Split::new(t2(w, r, c, device), n))
            };
        let vec1 = |src: &mut dyn Source, n: &str, len: usize| -> Result<Vec<f32>> {
            Ok(src.need(n, 1, len)?.data)
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = format!("model.layers.{l}.");
            let nm = |t: &str| format!("{p}{t}");
            let wqkv = weight(
                src,
                &[
                    nm("self_attn.q_proj.weight"),
                    nm("self_attn.k_proj.weight"),
                    nm("self_attn.v_proj.weight"),
                ],
                &[qo, kvo, kvo],
                d,
                split_parts(),
            )?;
            let bqkv = if cfg.qkv_bias {
                let mut b = vec1(src, &nm("self_attn.q_proj.bias"), qo)?;
                b.extend(vec1(src, &nm("self_attn.k_proj.bias"), kvo)?);
                b.extend(vec1(src, &nm("self_attn.v_proj.bias"), kvo)?);
                Some(t1(b, device))
            } else {
                None
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(t1(vec1(src, &nm("self_attn.q_norm.weight"), hd)?, device)),
                    Some(t1(vec1(src, &nm("self_attn.k_norm.weight"), hd)?, device)),
                )
            } else {
                (None, None)
            };
            let wo = weight(
                src,
                &[nm("self_attn.o_proj.weight")],
                &[d],
                qo,
                split_parts(),
            )?;
            let wgu = weight(
                src,
                &[nm("mlp.gate_proj.weight"), nm("mlp.up_proj.weight")],
                &[cfg.intermediate, cfg.intermediate],
                d,
                split_parts(),
            )?;
            let wdown = weight(
                src,
                &[nm("mlp.down_proj.weight")],
                &[d],
                cfg.intermediate,
                split_parts(),
            )?;
            layers.push(FusedLayer {
                attn_norm: t1(vec1(src, &nm("input_layernorm.weight"), d)?, device),
                wqkv,
                bqkv,
                q_norm,
                k_norm,
                wo,
                ffn_norm: t1(
                    vec1(src, &nm("post_attention_layernorm.weight"), d)?,
                    device,
                ),
                wgu,
                wdown,
            });
        }
        let norm = t1(vec1(src, "model.norm.weight", d)?, device);
        let embed_name = "model.embed_tokens.weight".to_string();
        let head_name = if cfg.tied {
            embed_name.clone()
        } else {
            "lm_head.weight".to_string()
        };
        let lm_head = weight(src, std::slice::from_ref(&head_name), &[cfg.vocab], d, 1)?;
        let embed = match (&lm_head.host, cfg.tied) {
            // Tied: the head's blocks are the embedding's.
            (Some(h), true) if lm_head.parts.is_empty() => Embed::Blocks(Arc::clone(h)),
            _ => match raw(src, std::slice::from_ref(&embed_name))
                .filter(|h| h.rows == cfg.vocab && h.cols == d)
            {
                Some(h) => Embed::Blocks(Arc::new(h)),
                None => Embed::F32(t2(
                    src.need(&embed_name, cfg.vocab, d)?.data,
                    cfg.vocab,
                    d,
                    device,
                )),
            },
        };
        Ok(Fused {
            embed,
            layers,
            norm,
            lm_head,
            host_vecs: std::sync::OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // HF rows 0..8 for 2 heads of dim 4; llama.cpp permute: reshape(h, 2, hd/2).swap(1, 2).
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        // head 0: rows [0,1,2,3] → pairs (0,2),(1,3) interleaved: [0,2,1,3]
        let gguf = vec![0., 2., 1., 3., 4., 6., 5., 7.];
        let mut m = Mat {
            rows: 8,
            cols: 1,
            data: gguf,
        };
        unpermute_rows(&mut m, 2);
        assert_eq!(m.data, hf);
    }

    #[test]
    fn transpose_cat_layout() {
        let a = Mat {
            rows: 2,
            cols: 3,
            data: vec![1., 2., 3., 4., 5., 6.],
        };
        let b = Mat {
            rows: 1,
            cols: 3,
            data: vec![7., 8., 9.],
        };
        let (r, c, v) = transpose_cat(&[&a, &b]);
        assert_eq!((r, c), (3, 3));
        assert_eq!(v, vec![1., 4., 7., 2., 5., 8., 3., 6., 9.]);
    }
}
