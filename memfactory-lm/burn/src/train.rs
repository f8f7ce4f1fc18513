//! The training forward: log-probs of action tokens after a prompt, under autodiff, with
//! LoRA on named projections or full fine-tuning.
//!
//! [`TrainModel`] holds a burn [`Module`] ([`Decoder`]) on the autodiff device, built from a
//! loaded [`BurnLm`] (weights shared, not copied, until the optimizer changes them). After an
//! optimizer step, [`BurnLm::set_weights`] merges LoRA and refreshes the inference weights so
//! that rollouts sample from the updated policy.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax, silu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use memfactory_core::{Error, Result};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::engine::BurnLm;
use crate::forward::{attention, rms_norm, rope, rope_tables};
use crate::fused;
use crate::model::{Fused, FusedLayer, ModelConfig, Split, split_parts};

/// Projection names LoRA may adapt (HF names).
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// LoRA settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank `r`.
    pub rank: usize,
    /// Scale numerator: the update is `alpha / r · x A B`.
    pub alpha: f32,
    /// Adapted projections, among [`PROJECTIONS`].
    pub targets: Vec<String>,
    /// Seed of the `A` initialisation (`B` starts at zero, so the model starts unchanged).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            seed: 0,
        }
    }
}

/// A linear map `x W + b` (`W` is `[in, out]`) with an optional LoRA update.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// `[in, r]`.
    pub lora_a: Option<Param<Tensor<2>>>,
    /// `[r, out]`.
    pub lora_b: Option<Param<Tensor<2>>>,
    /// `alpha / r`.
    pub scale: f32,
}

impl LoraLinear {
    /// Applies the map to `x` `[n, in]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.apply(x, Tensor::matmul, |y, d, s| y + d.mul_scalar(s))
    }

    /// [`LoraLinear::forward`] with the products done by [`fused::linear`] and the LoRA
    /// branch added by [`fused::add_scaled`] (`flex` only).
    pub fn forward_fused(&self, x: Tensor<2>) -> Tensor<2> {
        self.apply(x, fused::linear, fused::add_scaled)
    }

    fn apply(
        &self,
        x: Tensor<2>,
        mm: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
        add_scaled: impl Fn(Tensor<2>, Tensor<2>, f32) -> Tensor<2>,
    ) -> Tensor<2> {
        let mut y = mm(x.clone(), self.weight.val());
        if let (Some(a), Some(b)) = (&self.lora_a, &self.lora_b) {
            y = add_scaled(y, mm(mm(x, a.val()), b.val()), self.scale);
        }
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        y
    }

    /// The effective weight `W + s·A B`, detached, on the plain device.
    pub fn merged(&self) -> Tensor<2> {
        let w = self.weight.val().inner();
        match (&self.lora_a, &self.lora_b) {
            (Some(a), Some(b)) => {
                w + a
                    .val()
                    .inner()
                    .matmul(b.val().inner())
                    .mul_scalar(self.scale)
            }
            _ => w,
        }
    }
}

/// One decoder block.
#[derive(Module, Debug)]
pub struct Block {
    /// Pre-attention RMSNorm.
    pub attn_norm: Param<Tensor<1>>,
    /// Query projection.
    pub q_proj: LoraLinear,
    /// Key projection.
    pub k_proj: LoraLinear,
    /// Value projection.
    pub v_proj: LoraLinear,
    /// Output projection.
    pub o_proj: LoraLinear,
    /// Qwen3 per-head query norm.
    pub q_norm: Option<Param<Tensor<1>>>,
    /// Qwen3 per-head key norm.
    pub k_norm: Option<Param<Tensor<1>>>,
    /// Pre-MLP RMSNorm.
    pub ffn_norm: Param<Tensor<1>>,
    /// SwiGLU gate.
    pub gate_proj: LoraLinear,
    /// SwiGLU up.
    pub up_proj: LoraLinear,
    /// SwiGLU down.
    pub down_proj: LoraLinear,
}

/// The trainable decoder.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Token embedding `[vocab, d]`.
    pub embed: Param<Tensor<2>>,
    /// Blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub norm: Param<Tensor<1>>,
    /// LM head `[d, vocab]`; `None` when tied to the embedding.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// Hyper-parameters.
    #[module(skip)]
    pub cfg: ModelConfig,
    /// Whether the forward uses the fused CPU kernels of [`crate::fused`] (on `flex`) instead
    /// of composed tensor ops (any backend).
    #[module(skip)]
    pub fused: bool,
    /// On the fused path, rows whose inputs share a prefix of at least this many tokens run
    /// that prefix once ([`pack`]); 0 turns sharing off. Rows are always packed without
    /// padding there.
    #[module(skip)]
    pub prefix_min_tokens: usize,
    /// The GGUF blocks equal to the frozen base weights, where the model was built from
    /// a base with blocks and those weights are frozen (LoRA): the inference weights
    /// made from this module ([`BurnLm::set_weights`]) decode on them plus the adapters.
    #[module(skip)]
    pub(crate) base_blocks: Option<Arc<BaseBlocks>>,
}

/// Host blocks of a decoder's frozen base weights, per layer (`wqkv`, `wo`, `wgu`,
/// `wdown`) and for the LM head.
#[derive(Debug, Clone, Default)]
pub(crate) struct BaseBlocks {
    layers: Vec<[Option<Arc<crate::kernels::HostMat>>; 4]>,
    head: Option<Arc<crate::kernels::HostMat>>,
}

impl BaseBlocks {
    /// The blocks of `w` that equal its f32 weights exactly (a split without LoRA
    /// branches: its parts were made from those blocks), or `None` when there are none.
    fn of(w: &Fused) -> Option<BaseBlocks> {
        let exact = |s: &Split| s.host.clone().filter(|_| s.lora.is_empty());
        let b = BaseBlocks {
            layers: w
                .layers
                .iter()
                .map(|l| [exact(&l.wqkv), exact(&l.wo), exact(&l.wgu), exact(&l.wdown)])
                .collect(),
            head: exact(&w.lm_head),
        };
        let any = b.head.is_some() || b.layers.iter().flatten().any(Option::is_some);
        any.then_some(b)
    }
}

/// Default [`Decoder::prefix_min_tokens`]: shorter common prefixes save less than the
/// bookkeeping of another sequence costs.
pub const PREFIX_MIN_TOKENS: usize = 8;

/// Log-probs of action tokens, `[batch, max_action_len]`, with a 0/1 mask of real tokens.
#[derive(Debug, Clone)]
pub struct ActionLogprobs {
    /// Log-prob of each action token (0 where masked), differentiable.
    pub logprobs: Tensor<2>,
    /// 1 for real action tokens, 0 for padding.
    pub mask: Tensor<2>,
}

/// A trainable copy of a [`BurnLm`]'s weights on the autodiff device.
#[derive(Debug)]
pub struct TrainModel {
    /// The module (hand it to a burn optimizer).
    pub decoder: Decoder,
    /// The autodiff device.
    pub device: Device,
}

fn lora_init(inp: usize, r: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    // PEFT's kaiming_uniform(a = √5) on A: U(−1/√in, 1/√in).
    let bound = 1.0 / (inp as f32).sqrt();
    (0..inp * r)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
            (2.0 * u - 1.0) * bound
        })
        .collect()
}

impl TrainModel {
    /// Builds a trainable model from `lm`: LoRA on `lora.targets` with every base weight
    /// frozen, or full fine-tuning of every weight when `lora` is `None`.
    pub fn new(lm: &BurnLm, lora: Option<&LoraConfig>) -> Result<TrainModel> {
        Self::build(lm, lora, true)
    }

    /// A frozen copy of `lm` (no parameter requires a gradient): a reference policy for the
    /// KL term. Its forward builds no autodiff graph, so nothing piles up between updates.
    pub fn frozen(lm: &BurnLm) -> Result<TrainModel> {
        Self::build(lm, None, false)
    }

    fn build(lm: &BurnLm, lora: Option<&LoraConfig>, trainable: bool) -> Result<TrainModel> {
        if let Some(l) = lora {
            if l.rank == 0 {
                return Err(Error::Invalid("LoRA rank must be positive".into()));
            }
            if let Some(bad) = l
                .targets
                .iter()
                .find(|t| !PROJECTIONS.contains(&t.as_str()))
            {
                return Err(Error::Invalid(format!(
                    "unknown LoRA target `{bad}` (expected one of {})",
                    PROJECTIONS.join(", ")
                )));
            }
        }
        let device = lm.device.clone().autodiff();
        let cfg = lm.cfg.clone();
        let w = lm.weights();
        let full = lora.is_none() && trainable;
        let mut rng = ChaCha8Rng::seed_from_u64(lora.map_or(0, |l| l.seed));
        let p1 = |t: Tensor<1>| Param::from_tensor(t.autodiff()).set_require_grad(full);
        let p2 = |t: Tensor<2>| Param::from_tensor(t.autodiff()).set_require_grad(full);
        let mut lin = |name: &str, wt: Tensor<2>, b: Option<Tensor<1>>| -> LoraLinear {
            let [inp, out] = wt.dims();
            let (lora_a, lora_b, scale) = match lora {
                Some(l) if l.targets.iter().any(|t| t == name) => {
                    let a = lora_init(inp, l.rank, &mut rng);
                    let a = Tensor::<2>::from_data(TensorData::new(a, [inp, l.rank]), &device);
                    let b = Tensor::<2>::zeros([l.rank, out], &device);
                    (
                        Some(Param::from_tensor(a).set_require_grad(true)),
                        Some(Param::from_tensor(b).set_require_grad(true)),
                        l.alpha / l.rank as f32,
                    )
                }
                _ => (None, None, 0.0),
            };
            LoraLinear {
                weight: Param::from_tensor(wt.autodiff()).set_require_grad(full),
                bias: b.map(|b| Param::from_tensor(b.autodiff()).set_require_grad(full)),
                lora_a,
                lora_b,
                scale,
            }
        };
        let (hh, kv, hd, ff) = (cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.intermediate);
        let mut blocks = Vec::with_capacity(cfg.layers);
        for ly in &w.layers {
            let (wqkv, wgu) = (ly.wqkv.full(), ly.wgu.full());
            let bias = |o: usize, n: usize| ly.bqkv.as_ref().map(|b| b.clone().narrow(0, o, n));
            blocks.push(Block {
                attn_norm: p1(ly.attn_norm.clone()),
                q_proj: lin(
                    "q_proj",
                    wqkv.clone().narrow(1, 0, hh * hd),
                    bias(0, hh * hd),
                ),
                k_proj: lin(
                    "k_proj",
                    wqkv.clone().narrow(1, hh * hd, kv * hd),
                    bias(hh * hd, kv * hd),
                ),
                v_proj: lin(
                    "v_proj",
                    wqkv.clone().narrow(1, (hh + kv) * hd, kv * hd),
                    bias((hh + kv) * hd, kv * hd),
                ),
                o_proj: lin("o_proj", ly.wo.full(), None),
                q_norm: ly.q_norm.clone().map(p1),
                k_norm: ly.k_norm.clone().map(p1),
                ffn_norm: p1(ly.ffn_norm.clone()),
                gate_proj: lin("gate_proj", wgu.clone().narrow(1, 0, ff), None),
                up_proj: lin("up_proj", wgu.clone().narrow(1, ff, ff), None),
                down_proj: lin("down_proj", ly.wdown.full(), None),
            });
        }
        let decoder = Decoder {
            embed: p2(w.embed_tensor()),
            blocks,
            norm: p1(w.norm.clone()),
            lm_head: if cfg.tied {
                None
            } else {
                Some(p2(w.lm_head.full()))
            },
            cfg,
            fused: lm.device == Device::flex(),
            prefix_min_tokens: PREFIX_MIN_TOKENS,
            // Frozen base weights only: a full fine-tune moves them away from the blocks.
            base_blocks: if full {
                None
            } else {
                BaseBlocks::of(&w).map(Arc::new)
            },
        };
        Ok(TrainModel { decoder, device })
    }

    /// Log-probs of each `action` token after its `prompt`, for a batch of
    /// `(prompt, action)` pairs, under logits divided by `temperature` (1 = the plain
    /// policy). Differentiable with respect to the trainable parameters.
    pub fn action_logprobs(
        &self,
        batch: &[(Vec<u32>, Vec<u32>)],
        temperature: f32,
    ) -> Result<ActionLogprobs> {
        self.decoder
            .action_logprobs(batch, temperature, &self.device)
    }

    /// Shares prompt prefixes among the rows of a batch on the fused path: rows whose inputs
    /// begin with the same `min_tokens` or more tokens run that prefix's forward once (its
    /// gradient is the sum over the rows that read it). `None` turns it off (each row then
    /// runs alone, still without padding). On by default, from [`PREFIX_MIN_TOKENS`] tokens.
    pub fn set_prefix_sharing(&mut self, min_tokens: Option<usize>) {
        self.decoder.prefix_min_tokens = min_tokens.map_or(0, |m| m.max(1));
    }

    /// Turns the fused CPU kernels on or off (they are on by default on `flex`, and can only
    /// run there): off, the forward is built from burn's composed tensor ops, as on other
    /// backends. For comparisons; both compute the same function.
    pub fn set_fused(&mut self, on: bool) -> Result<()> {
        if on && self.device != Device::flex().autodiff() {
            return Err(Error::Invalid(
                "the fused training kernels run on the flex backend only".into(),
            ));
        }
        self.decoder.fused = on;
        Ok(())
    }
}

impl Decoder {
    /// The final hidden states `[b·s, d]` (before the final norm) of right-padded `ids`,
    /// through burn's composed ops.
    fn hidden(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<2> {
        let b = ids.len();
        let s = ids[0].len();
        let flat: Vec<i64> = ids.iter().flatten().map(|&t| t as i64).collect();
        let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(flat, [b * s]), device);
        let x = self.embed.val().select(0, idx);
        self.hidden_composed(x, b, s, device)
    }

    /// The final hidden states `[n, d]` (before the final norm) of packed rows through the
    /// fused CPU kernels: every tensor stays `[n, ·]`; `seqs` says which rows form a sequence
    /// (and which continue a shared prefix).
    fn hidden_fused(&self, mut x: Tensor<2>, seqs: Vec<fused::AttnSeq>) -> Tensor<2> {
        let cfg = &self.cfg;
        let n = x.dims()[0];
        let (hh, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let layout = fused::AttnLayout {
            heads: hh,
            kv_heads: kv,
            theta: cfg.rope_theta,
            seqs: seqs.into(),
        };
        let head_norm = |t: Tensor<2>, w: &Param<Tensor<1>>, heads: usize| {
            fused::rms_norm(t.reshape([n * heads, hd]), w.val(), cfg.rms_eps)
                .reshape([n, heads * hd])
        };
        for blk in &self.blocks {
            let h = fused::rms_norm(x.clone(), blk.attn_norm.val(), cfg.rms_eps);
            let mut q = blk.q_proj.forward_fused(h.clone());
            let mut k = blk.k_proj.forward_fused(h.clone());
            let v = blk.v_proj.forward_fused(h);
            if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
                q = head_norm(q, qn, hh);
                k = head_norm(k, kn, kv);
            }
            let o = fused::packed_attention(q, k, v, layout.clone());
            x = fused::add(x, blk.o_proj.forward_fused(o));
            let h = fused::rms_norm(x.clone(), blk.ffn_norm.val(), cfg.rms_eps);
            let g = blk.gate_proj.forward_fused(h.clone());
            let u = blk.up_proj.forward_fused(h);
            x = fused::add(x, blk.down_proj.forward_fused(fused::swiglu(g, u)));
        }
        x
    }

    /// [`Decoder::hidden`] from burn's tensor ops (any backend).
    fn hidden_composed(&self, mut x: Tensor<2>, b: usize, s: usize, device: &Device) -> Tensor<2> {
        let cfg = &self.cfg;
        let (hh, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let pos: Vec<Vec<usize>> = vec![(0..s).collect(); b];
        let (cos, sin) = rope_tables(&pos, hd, cfg.rope_theta, device);
        // −∞, not the inference path's finite NEG: every query sees at least itself, so no
        // row is all −∞, and exp(−∞) = 0 is libm's fast path where exp(−1e9) takes the slow
        // underflow branch (measured: 4 % of a training step's CPU time in `xflowf`).
        let mut bias = vec![0f32; s * s];
        for q in 0..s {
            for k in q + 1..s {
                bias[q * s + k] = f32::NEG_INFINITY;
            }
        }
        let bias: Tensor<4> =
            Tensor::<4>::from_data(TensorData::new(bias, [1, 1, s, s]), device).repeat_dim(0, b);
        for blk in &self.blocks {
            let h = rms_norm(x.clone(), &blk.attn_norm.val(), cfg.rms_eps);
            let mut q = blk
                .q_proj
                .forward(h.clone())
                .reshape([b, s, hh, hd])
                .swap_dims(1, 2);
            let mut k = blk
                .k_proj
                .forward(h.clone())
                .reshape([b, s, kv, hd])
                .swap_dims(1, 2);
            let v = blk
                .v_proj
                .forward(h)
                .reshape([b, s, kv, hd])
                .swap_dims(1, 2);
            if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
                q = rms_norm(q, &qn.val(), cfg.rms_eps);
                k = rms_norm(k, &kn.val(), cfg.rms_eps);
            }
            let q = rope(q, &cos, &sin);
            let k = rope(k, &cos, &sin);
            let o = attention(q, k, v, &bias)
                .swap_dims(1, 2)
                .reshape([b * s, hh * hd]);
            x = x + blk.o_proj.forward(o);
            let h = rms_norm(x.clone(), &blk.ffn_norm.val(), cfg.rms_eps);
            let g = blk.gate_proj.forward(h.clone());
            let u = blk.up_proj.forward(h);
            x = x + blk.down_proj.forward(silu(g) * u);
        }
        x
    }

    /// See [`TrainModel::action_logprobs`]; `device` is the device of this module.
    pub fn action_logprobs(
        &self,
        batch: &[(Vec<u32>, Vec<u32>)],
        temperature: f32,
        device: &Device,
    ) -> Result<ActionLogprobs> {
        if batch.is_empty() {
            return Err(Error::Invalid("empty batch".into()));
        }
        let vocab = self.cfg.vocab;
        for (p, a) in batch {
            if p.is_empty() || a.is_empty() {
                return Err(Error::Invalid(
                    "every item needs a non-empty prompt and action".into(),
                ));
            }
            if let Some(t) = p.iter().chain(a).find(|&&t| t as usize >= vocab) {
                return Err(Error::Invalid(format!(
                    "token id {t} is outside the vocabulary ({vocab})"
                )));
            }
        }
        let b = batch.len();
        // Inputs: prompt ++ action[..-1]; position p predicts token p + 1.
        let inputs: Vec<Vec<u32>> = batch
            .iter()
            .map(|(p, a)| p.iter().chain(&a[..a.len() - 1]).copied().collect())
            .collect();
        let amax = batch.iter().map(|(_, a)| a.len()).max().unwrap_or(1);
        let mut mask = vec![0f32; b * amax];
        for (i, (_, a)) in batch.iter().enumerate() {
            mask[i * amax..i * amax + a.len()].fill(1.0);
        }
        // Fused: rows packed without padding, shared prefixes once. Composed: right-padded
        // to the longest row (`row(i, t)` = i·s + t).
        let (h, row): (Tensor<2>, Box<dyn Fn(usize, usize) -> usize>) = if self.fused {
            let packed = pack(&inputs, self.prefix_min_tokens);
            let x = fused::gather_rows(self.embed.val(), packed.ids);
            let h = self.hidden_fused(x, packed.seqs);
            let place = packed.place;
            (h, Box::new(move |i, t| place[i].row(t)))
        } else {
            let s = inputs.iter().map(Vec::len).max().unwrap_or(1);
            let ids: Vec<Vec<u32>> = inputs
                .iter()
                .map(|x| {
                    let mut r = x.clone();
                    r.resize(s, 0);
                    r
                })
                .collect();
            (self.hidden(&ids, device), Box::new(move |i, t| i * s + t))
        };
        // Only the action positions go through the LM head: logits are [b·amax, vocab]
        // instead of [b·s, vocab] (a 900-token prompt would otherwise need GBs).
        let mut rows_at = vec![0i64; b * amax];
        let mut tgt = vec![0i64; b * amax];
        for (i, (p, a)) in batch.iter().enumerate() {
            for j in 0..amax {
                // Padding slots point at the row's first action position (masked below).
                let jj = j.min(a.len() - 1);
                rows_at[i * amax + j] = row(i, p.len() - 1 + jj) as i64;
                tgt[i * amax + j] = a[jj] as i64;
            }
        }
        let h = if self.fused {
            let rows = rows_at.iter().map(|&r| r as u32).collect();
            fused::rms_norm(
                fused::gather_rows(h, rows),
                self.norm.val(),
                self.cfg.rms_eps,
            )
        } else {
            let idx: Tensor<1, Int> =
                Tensor::from_data(TensorData::new(rows_at, [b * amax]), device);
            rms_norm(h.select(0, idx), &self.norm.val(), self.cfg.rms_eps)
        };
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed.val().transpose(),
        };
        let temp = if temperature > 0.0 { temperature } else { 1.0 };
        let mask: Tensor<2> = Tensor::from_data(TensorData::new(mask, [b, amax]), device);
        let lp = if self.fused {
            // The [b·amax, vocab] logits are never kept: made in slices, made again backward.
            let tgt = tgt.iter().map(|&t| t as u32).collect();
            fused::head_logprobs(h, head, tgt, temp).reshape([b, amax])
        } else {
            let mut logits = h.matmul(head);
            if temp != 1.0 {
                logits = logits.div_scalar(temp);
            }
            let t: Tensor<2, Int> = Tensor::from_data(TensorData::new(tgt, [b * amax, 1]), device);
            log_softmax(logits, 1).gather(1, t).reshape([b, amax])
        };
        let lp = lp * mask.clone();
        Ok(ActionLogprobs { logprobs: lp, mask })
    }

    /// Inference weights of this module (LoRA merged), on the plain device. Where the
    /// frozen base weights have GGUF blocks ([`Decoder::base_blocks`]), each product keeps
    /// them with the LoRA branches beside, so decode-sized products read the blocks (as for
    /// the base model) instead of the merged f32 weights.
    pub(crate) fn to_fused(&self) -> Fused {
        let base = self.base_blocks.as_deref();
        let layers = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bq = match (&b.q_proj.bias, &b.k_proj.bias, &b.v_proj.bias) {
                    (Some(q), Some(k), Some(v)) => Some(Tensor::cat(
                        vec![q.val().inner(), k.val().inner(), v.val().inner()],
                        0,
                    )),
                    _ => None,
                };
                let blk = |j: usize| base.and_then(|bb| bb.layers.get(i)?[j].clone());
                FusedLayer {
                    attn_norm: b.attn_norm.val().inner(),
                    wqkv: merged_split(&[&b.q_proj, &b.k_proj, &b.v_proj], blk(0)),
                    bqkv: bq,
                    q_norm: b.q_norm.as_ref().map(|p| p.val().inner()),
                    k_norm: b.k_norm.as_ref().map(|p| p.val().inner()),
                    wo: merged_split(&[&b.o_proj], blk(1)),
                    ffn_norm: b.ffn_norm.val().inner(),
                    wgu: merged_split(&[&b.gate_proj, &b.up_proj], blk(2)),
                    wdown: merged_split(&[&b.down_proj], blk(3)),
                }
            })
            .collect();
        let embed = self.embed.val().inner();
        let mut lm_head = Split::new(
            match &self.lm_head {
                Some(w) => w.val().inner(),
                None => embed.clone().transpose(),
            },
            1,
        );
        lm_head.host = base.and_then(|bb| bb.head.clone());
        Fused {
            embed: crate::model::Embed::F32(embed),
            layers,
            norm: self.norm.val().inner(),
            lm_head,
            host_vecs: std::sync::OnceLock::new(),
        }
    }
}

/// The inference weight of the projections `lins` side by side (LoRA merged), with
/// `base`'s blocks and the LoRA branches as host data where the base has blocks.
fn merged_split(lins: &[&LoraLinear], base: Option<Arc<crate::kernels::HostMat>>) -> Split {
    let merged: Vec<Tensor<2>> = lins.iter().map(|l| l.merged()).collect();
    let w = if merged.len() == 1 {
        merged.into_iter().next().expect("one")
    } else {
        Tensor::cat(merged, 1)
    };
    let mut split = Split::new(w, split_parts());
    let Some(host) = base else {
        return split;
    };
    let host_vec = |t: Tensor<2>| crate::forward::host_vec(t);
    let mut off = 0;
    for l in lins {
        let out = l.weight.val().dims()[1];
        if let (Some(a), Some(b)) = (&l.lora_a, &l.lora_b) {
            let rank = a.val().dims()[1];
            split.lora.push(Arc::new(crate::model::HostLora {
                off,
                a: host_vec(a.val().inner()),
                b: host_vec(b.val().inner()),
                rank,
                out,
                scale: l.scale,
            }));
        }
        off += out;
    }
    split.host = Some(host);
    split
}

impl BurnLm {
    /// Replaces the inference weights with `model`'s (LoRA merged), so that generation
    /// samples from the trained policy.
    pub fn set_weights(&self, model: &TrainModel) -> Result<()> {
        if model.decoder.cfg != self.cfg {
            return Err(Error::Invalid(
                "model config differs from the loaded model".into(),
            ));
        }
        let fused = Arc::new(model.decoder.to_fused());
        match self.weights.write() {
            Ok(mut w) => *w = fused,
            Err(poisoned) => *poisoned.into_inner() = fused,
        }
        Ok(())
    }

    /// Hyper-parameters (for trainers that build their own [`Decoder`]).
    pub fn model_config(&self) -> &ModelConfig {
        &self.cfg
    }
}

/// Where one batch row's inputs sit in a packed layout: positions `0..shared` in the shared
/// prefix's rows from `prefix_start`, the rest in its own rows from `own_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// First packed row of the shared prefix (unused when `shared` is 0).
    pub prefix_start: usize,
    /// Positions read from the shared prefix.
    pub shared: usize,
    /// First packed row of the row's own tokens.
    pub own_start: usize,
}

impl Placement {
    /// The packed row of position `t`.
    pub fn row(&self, t: usize) -> usize {
        if t < self.shared {
            self.prefix_start + t
        } else {
            self.own_start + t - self.shared
        }
    }
}

/// A batch of token sequences packed for the fused kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Token ids, packed row after row.
    pub ids: Vec<u32>,
    /// The sequences (shared prefixes first in their group, then the continuations).
    pub seqs: Vec<fused::AttnSeq>,
    /// Per input, where its positions went.
    pub place: Vec<Placement>,
}

/// Groups `rows` by shared prompt prefixes, one level deep: sorts them lexicographically
/// (`order`) and partitions the sorted list into runs `[a, b)` of `order`, each with the
/// length its members share — the partition that saves the most tokens, `Σ (b − a − 1) ·
/// shared`, by dynamic programming over the sorted rows. A run's `shared` is at least
/// `min_shared` and leaves every member at least one token of its own; runs of one row (and
/// every row when `min_shared` is 0 or there is one row) have `shared` 0. Used by the
/// trainer's packing ([`pack`]) and the engine's shared prefill, so that two groups of
/// identical prompts that also share a short instruction are two runs with their whole
/// prompts shared, not one run sharing the instruction.
pub(crate) fn prefix_runs(
    rows: &[&[u32]],
    min_shared: usize,
) -> (Vec<usize>, Vec<(usize, usize, usize)>) {
    let n = rows.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut groups: Vec<(usize, usize, usize)> = Vec::new();
    if min_shared == 0 || n < 2 {
        groups.extend((0..n).map(|k| (k, k + 1, 0)));
        return (order, groups);
    }
    order.sort_by(|&a, &b| rows[a].cmp(rows[b]).then(a.cmp(&b)));
    let lcp = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let adj: Vec<usize> = (1..n)
        .map(|k| lcp(rows[order[k - 1]], rows[order[k]]))
        .collect();
    // best[j] = most tokens saved over order[..j]; from[j] = where its last run starts.
    let mut best = vec![0usize; n + 1];
    let mut from = vec![0usize; n + 1];
    let mut shared_of = vec![0usize; n + 1];
    for j in 1..=n {
        best[j] = best[j - 1];
        from[j] = j - 1;
        let (mut common, mut shortest) = (usize::MAX, rows[order[j - 1]].len());
        for a in (0..j - 1).rev() {
            common = common.min(adj[a]);
            shortest = shortest.min(rows[order[a]].len());
            let shared = common.min(shortest.saturating_sub(1));
            if shared < min_shared {
                if common < min_shared {
                    break;
                }
                continue;
            }
            let saved = best[a] + (j - a - 1) * shared;
            if saved > best[j] {
                best[j] = saved;
                from[j] = a;
                shared_of[j] = shared;
            }
        }
    }
    let mut j = n;
    while j > 0 {
        let a = from[j];
        groups.push((a, j, if j - a > 1 { shared_of[j] } else { 0 }));
        j = a;
    }
    groups.reverse();
    (order, groups)
}

/// Packs `inputs` row after row without padding; with `min_shared > 0`, inputs that begin with
/// a common prefix of at least `min_shared` tokens are grouped and the prefix is packed once,
/// each member continuing it. The grouping maximises the tokens saved over partitions of the
/// lexicographically sorted inputs into runs (one level: a prefix and its continuations), and
/// every member keeps at least one token of its own.
pub fn pack(inputs: &[Vec<u32>], min_shared: usize) -> Packed {
    let n = inputs.len();
    let rows: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let (order, groups) = prefix_runs(&rows, min_shared);
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    let mut place = vec![
        Placement {
            prefix_start: 0,
            shared: 0,
            own_start: 0,
        };
        n
    ];
    for (a, b, shared) in groups {
        let parent = (shared > 0).then(|| {
            seqs.push(fused::AttnSeq {
                start: ids.len(),
                len: shared,
                parent: None,
            });
            ids.extend_from_slice(&inputs[order[a]][..shared]);
            seqs.len() - 1
        });
        let prefix_start = parent.map_or(0, |p| seqs[p].start);
        for &i in &order[a..b] {
            let own = &inputs[i][shared..];
            place[i] = Placement {
                prefix_start,
                shared,
                own_start: ids.len(),
            };
            seqs.push(fused::AttnSeq {
                start: ids.len(),
                len: own.len(),
                parent,
            });
            ids.extend_from_slice(own);
        }
    }
    Packed { ids, seqs, place }
}

#[cfg(test)]
mod pack_tests {
    use super::pack;

    fn unpack(p: &super::Packed, i: usize, len: usize) -> Vec<u32> {
        (0..len).map(|t| p.ids[p.place[i].row(t)]).collect()
    }

    #[test]
    fn packing_keeps_every_token_and_shares_common_prefixes() {
        let common: Vec<u32> = (100..120).collect();
        let mut inputs = Vec::new();
        for k in 0..3u32 {
            let mut x = common.clone();
            x.extend([k, k + 1]);
            inputs.push(x);
        }
        inputs.push(vec![7, 8, 9]);
        // Same prompt exactly: the shared part stops one short so each keeps a row.
        inputs.push(common.clone());
        let p = pack(&inputs, 8);
        for (i, x) in inputs.iter().enumerate() {
            assert_eq!(unpack(&p, i, x.len()), *x, "input {i}");
        }
        // 20 shared tokens read by 4 rows (the plain prompt caps it at 19 for all of them) or 3.
        let total: usize = inputs.iter().map(Vec::len).sum();
        assert!(p.ids.len() < total - 2 * 19, "{} of {total}", p.ids.len());
        let unshared = pack(&inputs, 0);
        assert_eq!(unshared.ids.len(), total);
        assert!(unshared.seqs.iter().all(|s| s.parent.is_none()));
        for (i, x) in inputs.iter().enumerate() {
            assert_eq!(unpack(&unshared, i, x.len()), *x);
        }
        // Below the minimum nothing is shared.
        let short = pack(&[vec![1, 2, 3, 4], vec![1, 2, 3, 5]], 8);
        assert_eq!(short.ids.len(), 8);
    }
}
