//! The GRPO policy loss: PPO clipped surrogate plus a k3 KL penalty to a frozen reference.
//!
//! Per action token, with `ratio = exp(clamp(logp − old_logp, −20, 20))` and advantage `A`:
//!
//! ```text
//! surrogate = −min(ratio · A, clamp(ratio, 1 − clip_low, 1 + clip_high) · A)
//! surrogate = min(surrogate, −A · clip_ratio_c)   when A < 0 and clip_ratio_c > 0 (dual-clip)
//! d         = clamp(ref − logp, −20, 20)                   (when kl_clamp > 0)
//! kl        = exp(d) − d − 1                               (k3, always ≥ 0)
//! kl        = clamp(kl, −kl_clamp, kl_clamp)               (when kl_clamp > 0)
//! per_token = surrogate + kl_beta · kl
//! ```
//!
//! aggregated over the masked tokens either as
//! - [`Aggregation::TokenMean`]: sum over all tokens / number of tokens (DAPO, MemAgent), or
//! - [`Aggregation::SeqMeanTokenMean`]: mean over tokens of each row, then mean over rows
//!   (TRL's original `grpo` loss); rows without any unmasked token do not count, or
//! - [`Aggregation::SeqMeanTokenSumNorm`]: sum over the tokens of each row divided by a
//!   constant (`loss_agg_norm`, e.g. the longest response allowed), then mean over rows —
//!   Dr. GRPO's length-unbiased loss (arXiv 2503.20783, §3.1: no `1/|o_i|`).
//!
//! Dual-clip PPO (Ye et al., arXiv 1912.09729) bounds the loss of a token whose advantage is
//! negative and whose ratio has grown past `clip_ratio_c`, and the k3 clamp bounds the KL
//! term; both are verl's `compute_policy_loss` / `kl_penalty("low_var_kl")`
//! (`volcengine/verl:verl/trainer/ppo/core_algos.py@012be9d9dcb7c38499f23616142870d2682757fc`,
//! `clip_ratio_c` default 3.0, KL clamped to ±10 after the log-difference is clamped to ±20).
//! The log-ratio is clamped to ±[`LOG_RATIO_CLAMP`] before `exp` as verl's
//! `compute_policy_loss_vanilla` does (`negative_approx_kl = torch.clamp(log_prob −
//! old_log_prob, min=−20.0, max=20.0)`, same file and commit): a numeric safeguard only — the
//! ratio stays ≤ e^20 ≈ 4.9·10^8, finite in f32 (e^89 is not), and a token beyond the bound
//! gets no gradient through the ratio. Within ±20 nothing changes.
//! Deviation: verl's `seq-mean-token-sum-norm` divides the *sum* over the mini-batch's rows
//! by the padded response length (no division by the row count); ours takes the mean over
//! rows as the Dr. GRPO paper writes it, so the two differ by the row count (a learning-rate
//! scale).
//!
//! The clipped surrogate, the k3 KL and the two first aggregations are TRL's GRPO formulas
//! (`memfactory-rl/scripts/grpo_reference.py` is the PyTorch peer; `tests/golden_grpo.rs`
//! matches loss and gradient to 1e-5); the dual-clip, the k3 clamp and the constant
//! normaliser are checked against `scripts/verl_loss_reference.py` (numpy, verl's formulas;
//! `tests/golden_verl_loss.rs`). Everything is written on burn's `Tensor<2>`, so it runs —
//! and differentiates — on any device; the aggregation weights come from the
//! (non-differentiable) mask on the host.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use memfactory_core::{Error, Result};

/// How per-token losses are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Aggregation {
    /// Mean over every unmasked token of the batch (recipe value `"token-mean"`).
    #[serde(rename = "token-mean")]
    TokenMean,
    /// Mean over the tokens of each row, then over rows (`"seq-mean-token-mean"`).
    #[serde(rename = "seq-mean-token-mean")]
    SeqMeanTokenMean,
    /// Sum over the tokens of each row divided by the constant `norm`, then mean over rows
    /// (`"seq-mean-token-sum-norm"`, Dr. GRPO).
    #[serde(rename = "seq-mean-token-sum-norm")]
    SeqMeanTokenSumNorm {
        /// The constant normaliser (tokens), e.g. the longest response allowed.
        norm: f32,
    },
}

impl Aggregation {
    /// The recipe spellings of [`Aggregation::parse`].
    pub const NAMES: [&'static str; 3] = [
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum-norm",
    ];

    /// Parses the recipe spelling; `seq-mean-token-sum-norm` gets `norm` (the recipe's
    /// `loss_agg_norm`).
    pub fn parse_with(s: &str, norm: f32) -> Option<Self> {
        match s {
            "token-mean" => Some(Aggregation::TokenMean),
            "seq-mean-token-mean" => Some(Aggregation::SeqMeanTokenMean),
            "seq-mean-token-sum-norm" => Some(Aggregation::SeqMeanTokenSumNorm { norm }),
            _ => None,
        }
    }

    /// Parses the spellings without a parameter (`token-mean`, `seq-mean-token-mean`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token-mean" => Some(Aggregation::TokenMean),
            "seq-mean-token-mean" => Some(Aggregation::SeqMeanTokenMean),
            _ => None,
        }
    }

    /// The recipe spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::TokenMean => "token-mean",
            Aggregation::SeqMeanTokenMean => "seq-mean-token-mean",
            Aggregation::SeqMeanTokenSumNorm { .. } => "seq-mean-token-sum-norm",
        }
    }
}

/// Loss hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Lower clip range: the ratio is clamped at `1 − clip_low`.
    pub clip_low: f32,
    /// Upper clip range: the ratio is clamped at `1 + clip_high` (DAPO's clip-higher).
    pub clip_high: f32,
    /// Weight of the k3 KL to the reference; 0 = no reference model.
    pub kl_beta: f32,
    /// Token aggregation.
    pub aggregation: Aggregation,
    /// Dual-clip bound `c` (> 1) on the ratio for tokens with a negative advantage: their
    /// loss is at most `−A · c`. 0 = off. Default 3.0 (verl's, always on there).
    pub clip_ratio_c: f32,
    /// Bound on the k3 KL term per token (verl's `low_var_kl` clamps it to ±10, and the
    /// log-difference inside it to ±20). 0 = off. Default 10.0.
    pub kl_clamp: f32,
}

/// verl's dual-clip bound (`clip_ratio_c`).
pub const DEFAULT_CLIP_RATIO_C: f32 = 3.0;
/// verl's bound on the k3 KL term.
pub const DEFAULT_KL_CLAMP: f32 = 10.0;
/// verl's bound on the log-difference inside k3.
pub const KL_LOG_CLAMP: f32 = 20.0;
/// verl's bound on the log-ratio `logp − old_logp` before `exp` (always applied).
pub const LOG_RATIO_CLAMP: f32 = 20.0;

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            clip_low: 0.2,
            clip_high: 0.2,
            kl_beta: 1e-3,
            aggregation: Aggregation::TokenMean,
            clip_ratio_c: DEFAULT_CLIP_RATIO_C,
            kl_clamp: DEFAULT_KL_CLAMP,
        }
    }
}

/// Diagnostics of one loss evaluation, over unmasked tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossStats {
    /// Fraction of tokens where the clipped term is the active one (ratio beyond the clip
    /// range in the direction the advantage pushes it).
    pub clip_fraction: f32,
    /// Fraction of tokens whose loss the dual-clip bounds (negative advantage, ratio above
    /// `clip_ratio_c`).
    #[serde(default)]
    pub dual_clip_fraction: f32,
    /// Fraction of tokens whose k3 KL term the clamp bounds.
    #[serde(default)]
    pub kl_clamp_fraction: f32,
    /// Mean k3 KL to the reference (0 without a reference; after the clamp).
    pub kl_mean: f32,
    /// Mean ratio `exp(logp − old_logp)`.
    pub ratio_mean: f32,
    /// Unmasked tokens.
    pub tokens: usize,
}

/// The loss (a differentiable one-element tensor) and its stats.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Scalar loss, shape `[1]`.
    pub loss: Tensor<1>,
    /// Diagnostics.
    pub stats: LossStats,
}

/// Inputs, all `[rows, max_action_len]` on one device. Padding positions must have mask 0
/// (their log-prob values are ignored).
#[derive(Debug, Clone)]
pub struct LossInputs {
    /// Log-probs under the current policy (differentiable).
    pub logprobs: Tensor<2>,
    /// Log-probs recorded when the actions were sampled.
    pub old_logprobs: Tensor<2>,
    /// Log-probs under the frozen reference (required when `kl_beta > 0`).
    pub ref_logprobs: Option<Tensor<2>>,
    /// Advantage of each token (usually the row's trajectory advantage, broadcast).
    pub advantages: Tensor<2>,
    /// 1 for trained tokens, 0 for padding and masked turns.
    pub mask: Tensor<2>,
}

fn host(t: &Tensor<2>) -> Result<Vec<f32>> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::backend("burn", format!("reading tensor: {e:?}")))
}

/// Per-token aggregation weights from the mask: `loss = Σ weight · per_token_loss`.
pub fn aggregation_weights(mask: &[f32], rows: usize, cols: usize, agg: Aggregation) -> Vec<f32> {
    match agg {
        Aggregation::TokenMean => {
            let n: f32 = mask.iter().sum();
            let inv = 1.0 / n.max(1.0);
            mask.iter().map(|m| m * inv).collect()
        }
        Aggregation::SeqMeanTokenMean => {
            let counts: Vec<f32> = (0..rows)
                .map(|r| mask[r * cols..(r + 1) * cols].iter().sum())
                .collect();
            let live = counts.iter().filter(|&&c| c > 0.0).count().max(1) as f32;
            let mut w = vec![0.0; rows * cols];
            for r in 0..rows {
                if counts[r] > 0.0 {
                    for c in 0..cols {
                        w[r * cols + c] = mask[r * cols + c] / (counts[r] * live);
                    }
                }
            }
            w
        }
        Aggregation::SeqMeanTokenSumNorm { norm } => {
            let live = (0..rows)
                .filter(|&r| mask[r * cols..(r + 1) * cols].iter().any(|&m| m > 0.0))
                .count()
                .max(1) as f32;
            let inv = 1.0 / (norm * live);
            mask.iter().map(|m| m * inv).collect()
        }
    }
}

/// Computes the GRPO loss of `inputs` under `cfg`.
pub fn grpo_loss(inputs: LossInputs, cfg: &LossConfig) -> Result<LossOutput> {
    let [rows, cols] = inputs.logprobs.dims();
    let mask_h = host(&inputs.mask)?;
    let weights = aggregation_weights(&mask_h, rows, cols, cfg.aggregation);
    grpo_loss_weighted(inputs, cfg, weights)
}

/// The GRPO loss with explicit per-token aggregation `weights` (row-major, the shape of
/// the log-probs): `loss = Σ weight · per_token_loss`. A mini-batch too large for memory is
/// run in chunks of rows, each with its slice of the whole mini-batch's
/// [`aggregation_weights`]; the chunks' gradients then sum to the mini-batch's gradient.
pub fn grpo_loss_weighted(
    inputs: LossInputs,
    cfg: &LossConfig,
    weights: Vec<f32>,
) -> Result<LossOutput> {
    let LossInputs {
        logprobs,
        old_logprobs,
        ref_logprobs,
        advantages,
        mask,
    } = inputs;
    let dims = logprobs.dims();
    for (name, t) in [
        ("old_logprobs", &old_logprobs),
        ("advantages", &advantages),
        ("mask", &mask),
    ] {
        if t.dims() != dims {
            return Err(Error::Invalid(format!(
                "{name} has shape {:?}, log-probs {:?}",
                t.dims(),
                dims
            )));
        }
    }
    if cfg.kl_beta > 0.0 && ref_logprobs.is_none() {
        return Err(Error::Invalid(
            "kl_beta > 0 needs reference log-probs".into(),
        ));
    }
    let [rows, cols] = dims;
    if weights.len() != rows * cols {
        return Err(Error::Invalid(format!(
            "{} aggregation weights for log-probs of shape {dims:?}",
            weights.len()
        )));
    }
    let device = logprobs.device();
    let mask_h = host(&mask)?;
    let tokens = mask_h.iter().filter(|&&m| m > 0.0).count();
    let weights: Tensor<2> = Tensor::from_data(TensorData::new(weights, [rows, cols]), &device);

    // Padding positions get log-ratio 0 (ratio 1) so garbage there cannot overflow; the
    // others are clamped to ±20 as verl does (no gradient beyond the bound).
    let log_ratio =
        ((logprobs.clone() - old_logprobs) * mask.clone()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
    let ratio = log_ratio.exp();
    let clipped = ratio.clone().clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let unclipped_obj = ratio.clone() * advantages.clone();
    let clipped_obj = clipped * advantages.clone();
    let mut per_token = unclipped_obj.min_pair(clipped_obj).neg();
    let adv_h = host(&advantages)?;
    let mut dual_n = 0usize;
    if cfg.clip_ratio_c > 0.0 {
        // Dual-clip: for A < 0 the loss is at most −A · c (its gradient is then 0).
        let per_h = host(&per_token)?;
        let mut neg = vec![0f32; rows * cols];
        for i in 0..rows * cols {
            if adv_h[i] < 0.0 {
                neg[i] = 1.0;
                if mask_h[i] > 0.0 && per_h[i] > -adv_h[i] * cfg.clip_ratio_c {
                    dual_n += 1;
                }
            }
        }
        let neg: Tensor<2> = Tensor::from_data(TensorData::new(neg, [rows, cols]), &device);
        let cap = advantages.clone().mul_scalar(-cfg.clip_ratio_c);
        let capped = per_token.clone().min_pair(cap);
        per_token = capped * neg.clone() + per_token * (neg.neg() + 1.0);
    }
    let mut kl_h = None;
    let mut kl_clamped_n = 0usize;
    if cfg.kl_beta > 0.0
        && let Some(r) = ref_logprobs
    {
        let mut d = (r - logprobs) * mask.clone();
        if cfg.kl_clamp > 0.0 {
            d = d.clamp(-KL_LOG_CLAMP, KL_LOG_CLAMP);
        }
        let mut kl = d.clone().exp() - d - 1.0;
        if cfg.kl_clamp > 0.0 {
            let raw = host(&kl)?;
            kl_clamped_n = raw
                .iter()
                .zip(&mask_h)
                .filter(|&(k, m)| *m > 0.0 && k.abs() > cfg.kl_clamp)
                .count();
            kl = kl.clamp(-cfg.kl_clamp, cfg.kl_clamp);
        }
        kl_h = Some(host(&kl)?);
        per_token = per_token + kl.mul_scalar(cfg.kl_beta);
    }
    let loss = (per_token * weights).sum();

    let ratio_h = host(&ratio)?;
    let (mut clipped_n, mut ratio_sum, mut kl_sum) = (0usize, 0f64, 0f64);
    for i in 0..rows * cols {
        if mask_h[i] <= 0.0 {
            continue;
        }
        let (r, a) = (ratio_h[i], adv_h[i]);
        if (r < 1.0 - cfg.clip_low && a < 0.0) || (r > 1.0 + cfg.clip_high && a > 0.0) {
            clipped_n += 1;
        }
        ratio_sum += r as f64;
        if let Some(k) = &kl_h {
            kl_sum += k[i] as f64;
        }
    }
    let n = tokens.max(1) as f64;
    Ok(LossOutput {
        loss,
        stats: LossStats {
            clip_fraction: (clipped_n as f64 / n) as f32,
            dual_clip_fraction: (dual_n as f64 / n) as f32,
            kl_clamp_fraction: (kl_clamped_n as f64 / n) as f32,
            kl_mean: (kl_sum / n) as f32,
            ratio_mean: (ratio_sum / n) as f32,
            tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t(v: &[f32], rows: usize, dev: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [rows, v.len() / rows]), dev)
    }

    #[test]
    fn on_policy_loss_is_minus_mean_advantage_and_grad_is_minus_adv_weight() {
        let dev = Device::flex().autodiff();
        let lp = t(&[-1.0, -2.0, -0.5, 0.0], 2, &dev).require_grad();
        let inputs = LossInputs {
            logprobs: lp.clone(),
            old_logprobs: t(&[-1.0, -2.0, -0.5, 0.0], 2, &dev),
            ref_logprobs: None,
            advantages: t(&[1.0, 1.0, -2.0, -2.0], 2, &dev),
            mask: t(&[1.0, 1.0, 1.0, 0.0], 2, &dev),
        };
        let cfg = LossConfig {
            kl_beta: 0.0,
            ..Default::default()
        };
        let out = grpo_loss(inputs.clone(), &cfg).unwrap();
        let l: f32 = out.loss.clone().into_scalar();
        // token-mean: −(1 + 1 − 2) / 3 = 0.
        assert!(l.abs() < 1e-6, "{l}");
        assert_eq!(out.stats.tokens, 3);
        assert_eq!(out.stats.clip_fraction, 0.0);
        assert!((out.stats.ratio_mean - 1.0).abs() < 1e-6);
        let g = out.loss.backward();
        let gl = host(&lp.grad(&g).unwrap()).unwrap();
        let want = [-1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0, 0.0];
        for (a, b) in gl.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{gl:?}");
        }
        // seq-mean-token-mean: rows −1 and 2 → mean 0.5.
        let cfg = LossConfig {
            aggregation: Aggregation::SeqMeanTokenMean,
            ..cfg
        };
        let l: f32 = grpo_loss(inputs, &cfg).unwrap().loss.into_scalar();
        assert!((l - 0.5).abs() < 1e-6, "{l}");
    }

    #[test]
    fn clipping_stops_the_gradient_and_is_counted() {
        let dev = Device::flex().autodiff();
        // ratio e^0.5 ≈ 1.65 with positive advantage: clipped, no gradient.
        let lp = t(&[-0.5, -1.0], 1, &dev).require_grad();
        let out = grpo_loss(
            LossInputs {
                logprobs: lp.clone(),
                old_logprobs: t(&[-1.0, -1.0], 1, &dev),
                ref_logprobs: Some(t(&[-0.5, -1.0], 1, &dev)),
                advantages: t(&[1.0, 1.0], 1, &dev),
                mask: t(&[1.0, 1.0], 1, &dev),
            },
            &LossConfig::default(),
        )
        .unwrap();
        assert!((out.stats.clip_fraction - 0.5).abs() < 1e-6);
        assert!(out.stats.kl_mean.abs() < 1e-7);
        let g = out.loss.backward();
        let gl = host(&lp.grad(&g).unwrap()).unwrap();
        assert!(gl[0].abs() < 1e-7, "{gl:?}");
        assert!((gl[1] + 0.5).abs() < 1e-6, "{gl:?}");
    }

    /// verl's ±20 clamp on the log-ratio: a token whose log-ratio is 100 (e^100 overflows
    /// f32) gives the finite loss of log-ratio 20 and no gradient; one at 20 − 1 keeps its
    /// exact value and gradient.
    #[test]
    fn the_log_ratio_is_clamped_to_20_before_exp() {
        let dev = Device::flex().autodiff();
        let lp = t(&[99.0, 18.0], 1, &dev).require_grad();
        let out = grpo_loss(
            LossInputs {
                logprobs: lp.clone(),
                old_logprobs: t(&[-1.0, -1.0], 1, &dev),
                ref_logprobs: None,
                advantages: t(&[-1.0, -1.0], 1, &dev),
                mask: t(&[1.0, 1.0], 1, &dev),
            },
            &LossConfig {
                kl_beta: 0.0,
                clip_ratio_c: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let l: f32 = out.loss.clone().into_scalar();
        // token-mean of −A · ratio = (e^20 + e^19) / 2.
        let want = ((20f64.exp() + 19f64.exp()) / 2.0) as f32;
        assert!(
            l.is_finite() && ((l - want) / want).abs() < 1e-6,
            "{l} vs {want}"
        );
        assert!((out.stats.ratio_mean - want).abs() / want < 1e-6);
        let g = out.loss.backward();
        let gl = host(&lp.grad(&g).unwrap()).unwrap();
        assert_eq!(gl[0], 0.0, "{gl:?}");
        let g1 = (19f64.exp() / 2.0) as f32;
        assert!(((gl[1] - g1) / g1).abs() < 1e-6, "{gl:?}");
    }

    #[test]
    fn kl_needs_reference_and_shapes_must_match() {
        let dev = Device::flex();
        let z = t(&[0.0, 0.0], 1, &dev);
        let mk = |r: Option<Tensor<2>>, m: Tensor<2>| LossInputs {
            logprobs: z.clone(),
            old_logprobs: z.clone(),
            ref_logprobs: r,
            advantages: z.clone(),
            mask: m,
        };
        assert!(grpo_loss(mk(None, z.clone()), &LossConfig::default()).is_err());
        assert!(
            grpo_loss(
                mk(Some(z.clone()), t(&[1.0], 1, &dev)),
                &LossConfig::default()
            )
            .is_err()
        );
    }

    #[test]
    fn k3_is_nonnegative_and_zero_at_reference() {
        let dev = Device::flex();
        let out = grpo_loss(
            LossInputs {
                logprobs: t(&[-1.0, -2.0, -3.0], 1, &dev),
                old_logprobs: t(&[-1.0, -2.0, -3.0], 1, &dev),
                ref_logprobs: Some(t(&[-1.0, -1.0, -5.0], 1, &dev)),
                advantages: t(&[0.0, 0.0, 0.0], 1, &dev),
                mask: t(&[1.0, 1.0, 1.0], 1, &dev),
            },
            &LossConfig::default(),
        )
        .unwrap();
        let k = |d: f32| d.exp() - d - 1.0;
        let want = (k(0.0) + k(1.0) + k(-2.0)) / 3.0;
        assert!((out.stats.kl_mean - want).abs() < 1e-6);
        let l: f32 = out.loss.into_scalar();
        assert!((l - 1e-3 * want).abs() < 1e-7);
    }
}
