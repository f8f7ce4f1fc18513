//! The BERT encoder forward pass on burn: embeddings (word + token type 0 + absolute
//! position) → LayerNorm → N post-LN blocks (self-attention, GELU feed-forward) → masked
//! mean pooling. Weights live on the device as f32, projections `[in, out]` with q/k/v fused.

use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, layer_norm, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use memfactory_core::Result;

use crate::config::BertConfig;
use crate::weights::{HostTensor, Weights, transpose_cat};

/// Additive attention bias for padded keys (finite: no NaN even in padded query rows).
const NEG: f32 = -1e9;

/// `erf` by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, ≤ 5e-7 in f32 arithmetic; tested),
/// the approximation PyTorch's vectorised CPU kernels use for the exact GELU.
#[inline]
fn erf_as(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let y = 1.0 - poly * (-ax * ax).exp();
    y.copysign(x)
}

/// Exact (erf) GELU computed on the host in parallel: on `flex` burn's `gelu` calls the
/// scalar `libm::erff` per element, which took a quarter of the forward pass.
fn gelu_host(x: Tensor<2>) -> Tensor<2> {
    use rayon::prelude::*;
    let device = x.device();
    let mut data = x.into_data();
    let Ok(v) = data.as_mut_slice::<f32>() else {
        return gelu(Tensor::from_data(data, &device));
    };
    v.par_chunks_mut(4096).for_each(|c| {
        for e in c {
            *e = 0.5 * *e * (1.0 + erf_as(*e * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
    Tensor::from_data(data, &device)
}

struct Layer {
    wqkv: Tensor<2>,
    bqkv: Tensor<1>,
    wo: Tensor<2>,
    bo: Tensor<1>,
    ln1_g: Tensor<1>,
    ln1_b: Tensor<1>,
    w1: Tensor<2>,
    b1: Tensor<1>,
    w2: Tensor<2>,
    b2: Tensor<1>,
    ln2_g: Tensor<1>,
    ln2_b: Tensor<1>,
}

/// The encoder's weights on one device.
pub(crate) struct Encoder {
    pub cfg: BertConfig,
    /// GELU on the host (CPU device) instead of burn's op.
    host_gelu: bool,
    word: Tensor<2>,
    /// Position embedding rows `[max_positions, hidden]`.
    pos: Tensor<2>,
    /// Token-type 0 embedding `[hidden]`.
    type0: Tensor<1>,
    ln_g: Tensor<1>,
    ln_b: Tensor<1>,
    layers: Vec<Layer>,
}

fn t1(v: HostTensor, device: &Device) -> Tensor<1> {
    let n = v.data.len();
    Tensor::from_data(TensorData::new(v.data, [n]), device)
}

fn t2(v: Vec<f32>, r: usize, c: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, [r, c]), device)
}

impl Encoder {
    /// Reads every tensor `cfg` calls for from `w` onto `device`.
    pub fn load(
        w: &Weights<'_>,
        cfg: &BertConfig,
        device: &Device,
        host_gelu: bool,
    ) -> Result<Encoder> {
        let (d, ff) = (cfg.hidden, cfg.intermediate);
        let vec = |n: &str, len: usize| w.need(n, &[len]);
        let word = w.need("embeddings.word_embeddings.weight", &[cfg.vocab, d])?;
        let pos = w.need(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, d],
        )?;
        let types = w.need(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab, d],
        )?;
        let type0 = HostTensor {
            shape: vec![d],
            data: types.data[..d].to_vec(),
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = format!("encoder.layer.{l}.");
            let q = w.need(&format!("{p}attention.self.query.weight"), &[d, d])?;
            let k = w.need(&format!("{p}attention.self.key.weight"), &[d, d])?;
            let v = w.need(&format!("{p}attention.self.value.weight"), &[d, d])?;
            let (r, c, wqkv) = transpose_cat(&[&q, &k, &v]);
            let mut bqkv = vec(&format!("{p}attention.self.query.bias"), d)?.data;
            bqkv.extend(vec(&format!("{p}attention.self.key.bias"), d)?.data);
            bqkv.extend(vec(&format!("{p}attention.self.value.bias"), d)?.data);
            let o = w.need(&format!("{p}attention.output.dense.weight"), &[d, d])?;
            let (or, oc, wo) = transpose_cat(&[&o]);
            let i1 = w.need(&format!("{p}intermediate.dense.weight"), &[ff, d])?;
            let (r1, c1, w1) = transpose_cat(&[&i1]);
            let o2 = w.need(&format!("{p}output.dense.weight"), &[d, ff])?;
            let (r2, c2, w2) = transpose_cat(&[&o2]);
            let bqkv_len = bqkv.len();
            layers.push(Layer {
                wqkv: t2(wqkv, r, c, device),
                bqkv: Tensor::from_data(TensorData::new(bqkv, [bqkv_len]), device),
                wo: t2(wo, or, oc, device),
                bo: t1(vec(&format!("{p}attention.output.dense.bias"), d)?, device),
                ln1_g: t1(
                    vec(&format!("{p}attention.output.LayerNorm.weight"), d)?,
                    device,
                ),
                ln1_b: t1(
                    vec(&format!("{p}attention.output.LayerNorm.bias"), d)?,
                    device,
                ),
                w1: t2(w1, r1, c1, device),
                b1: t1(vec(&format!("{p}intermediate.dense.bias"), ff)?, device),
                w2: t2(w2, r2, c2, device),
                b2: t1(vec(&format!("{p}output.dense.bias"), d)?, device),
                ln2_g: t1(vec(&format!("{p}output.LayerNorm.weight"), d)?, device),
                ln2_b: t1(vec(&format!("{p}output.LayerNorm.bias"), d)?, device),
            });
        }
        Ok(Encoder {
            cfg: cfg.clone(),
            host_gelu,
            word: t2(word.data, cfg.vocab, d, device),
            pos: t2(pos.data, cfg.max_positions, d, device),
            type0: t1(type0, device),
            ln_g: t1(vec("embeddings.LayerNorm.weight", d)?, device),
            ln_b: t1(vec("embeddings.LayerNorm.bias", d)?, device),
            layers,
        })
    }

    /// Mean-pooled (not yet normalised) hidden states of a right-padded batch: `ids` holds
    /// `b` rows of `s` token ids, row `i` real for its first `lens[i]` tokens (each ≥ 1,
    /// `s ≤ max_positions`). Returns `[b, hidden]`.
    pub fn pooled(&self, ids: &[u32], lens: &[usize], s: usize, device: &Device) -> Tensor<2> {
        let cfg = &self.cfg;
        let b = lens.len();
        let (d, h, hd) = (cfg.hidden, cfg.heads, cfg.head_dim());
        let eps = cfg.layer_norm_eps;
        let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let ids: Tensor<1, Int> = Tensor::from_data(TensorData::new(ids, [b * s]), device);
        // Hugging Face order: (word + token type) + position.
        let x = self.word.clone().select(0, ids).reshape([b, s, d])
            + self.type0.clone().unsqueeze::<3>();
        let x = x + self.pos.clone().narrow(0, 0, s).unsqueeze::<3>();
        let mut x = layer_norm(
            x.reshape([b * s, d]),
            self.ln_g.clone(),
            Some(self.ln_b.clone()),
            eps,
        );
        // Key-padding bias [b, 1, s, s], broadcast over heads by the attention kernel.
        let mut bias = vec![0f32; b * s * s];
        for (i, &len) in lens.iter().enumerate() {
            for qi in 0..s {
                let row = &mut bias[(i * s + qi) * s..(i * s + qi + 1) * s];
                row[len..].fill(NEG);
            }
        }
        let bias: Tensor<4> = Tensor::from_data(TensorData::new(bias, [b, 1, s, s]), device);
        for ly in &self.layers {
            let qkv = linear(x.clone(), ly.wqkv.clone(), Some(ly.bqkv.clone()));
            let heads = |off: usize| {
                qkv.clone()
                    .narrow(1, off, d)
                    .reshape([b, s, h, hd])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (heads(0), heads(d), heads(2 * d));
            let o = attention(
                q,
                k,
                v,
                None,
                Some(bias.clone()),
                AttentionModuleOptions::default(),
            )
            .swap_dims(1, 2)
            .reshape([b * s, d]);
            let a = linear(o, ly.wo.clone(), Some(ly.bo.clone()));
            x = layer_norm(x + a, ly.ln1_g.clone(), Some(ly.ln1_b.clone()), eps);
            let f = linear(x.clone(), ly.w1.clone(), Some(ly.b1.clone()));
            let f = if self.host_gelu {
                gelu_host(f)
            } else {
                gelu(f)
            };
            let f = linear(f, ly.w2.clone(), Some(ly.b2.clone()));
            x = layer_norm(x + f, ly.ln2_g.clone(), Some(ly.ln2_b.clone()), eps);
        }
        // Mean over the real tokens (sentence-transformers `Pooling(mode="mean")`).
        let mut mask = vec![0f32; b * s];
        for (i, &len) in lens.iter().enumerate() {
            mask[i * s..i * s + len].fill(1.0);
        }
        let mask: Tensor<3> = Tensor::from_data(TensorData::new(mask, [b, s, 1]), device);
        let summed = (x.reshape([b, s, d]) * mask).sum_dim(1).reshape([b, d]);
        let counts: Vec<f32> = lens.iter().map(|&l| l.max(1) as f32).collect();
        let counts: Tensor<2> = Tensor::from_data(TensorData::new(counts, [b, 1]), device);
        summed / counts
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_approximation_is_within_5e7() {
        for i in -4000..=4000 {
            let x = i as f64 / 1000.0;
            let got = super::erf_as(x as f32) as f64;
            let want = libm_erf(x);
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    /// erf by its Taylor series (converges for the |x| ≤ 4 tested), in f64.
    fn libm_erf(x: f64) -> f64 {
        let (mut sum, mut term, mut n) = (0.0f64, x, 0.0f64);
        while term.abs() > 1e-18 * sum.abs().max(1e-300) && n < 400.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }
}
