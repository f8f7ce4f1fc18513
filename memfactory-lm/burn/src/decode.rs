//! The host decode step: a forward pass of a few positions (decode steps, a prefill's last
//! short chunk) on plain host vectors over a host [`KvCache`], for `flex`.
//!
//! A decode step of a 135M model is ~30 layers × ~25 small tensor ops; on the CPU each op
//! costs a dispatch, a fresh allocation (zeroed pages) and, for attention over the cache, a
//! strided copy of the cache's filled positions. Here the step is a loop over the layers on
//! one row-major buffer: the products go to the GGUF block kernels ([`Split::mm_host`];
//! through the tensor product where a weight has no blocks), and attention is fused — for
//! each query head the scores against the cached keys, the softmax and the weighted sum of the
//! values in one pass over the cache in place ([`attend`]), the row's left padding skipped.
//! The maths is the tensor forward's (same RoPE tables, norms, masking), in another summation
//! order; the parity and prefix-sharing tests run through it.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::forward::{KvCache, KvStore, host_vec, rope_inv_freq};
use crate::model::{Fused, ModelConfig};

/// Rows (batch × positions) up to which a forward chunk runs on the host step (the block
/// kernels' limit; above it a chunk's products are gemm-sized and the tensor forward wins).
pub(crate) const HOST_STEP_MAX_ROWS: usize = crate::kernels::HOST_MAX_ROWS;

/// Multiply-adds of a step's attention below which it runs on one thread (waking the pool
/// costs more than it saves).
const ATTN_PAR_MIN: usize = 1 << 16;

/// A layer's vectors on the host.
#[derive(Debug)]
struct LayerVecs {
    attn_norm: Vec<f32>,
    bqkv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
}

/// The model's norm weights and biases on the host, read once per set of weights.
#[derive(Debug)]
pub(crate) struct HostVecs {
    layers: Vec<LayerVecs>,
    norm: Vec<f32>,
}

impl HostVecs {
    fn of(w: &Fused) -> HostVecs {
        let v = |t: &Tensor<1>| host_vec(t.clone());
        HostVecs {
            layers: w
                .layers
                .iter()
                .map(|l| LayerVecs {
                    attn_norm: v(&l.attn_norm),
                    bqkv: l.bqkv.as_ref().map(v),
                    q_norm: l.q_norm.as_ref().map(v),
                    k_norm: l.k_norm.as_ref().map(v),
                    ffn_norm: v(&l.ffn_norm),
                })
                .collect(),
            norm: v(&w.norm),
        }
    }
}

/// Whether [`forward_host`] serves a chunk of `rows` (batch × positions) on this cache.
pub(crate) fn serves(cache: &KvCache, rows: usize) -> bool {
    matches!(cache.store, KvStore::Host { .. }) && rows <= HOST_STEP_MAX_ROWS
}

/// `x · rsqrt(mean(x²) + eps) · w` for each `w.len()`-wide row of `x`, in place.
fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for row in x.chunks_exact_mut(d) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * r * g;
        }
    }
}

/// Rotate-half RoPE of one head vector with the position's `cos` / `sin` (`hd / 2` each).
fn rope_head(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos[i] + b * -sin[i];
        x[i + half] = b * cos[i] + a * sin[i];
    }
}

/// One query head's attention over cache positions `lo ..= hi` of one K/V head (`k`, `v`:
/// that head's `[cap, hd]` rows): the scores, their softmax and the weighted sum of the values
/// in one pass, into `out` (`hd`). No visible position (`hi < lo`, a padding query) gives 0.
#[inline(always)]
fn attend_generic(
    q: &[f32],
    (k, v): (&[f32], &[f32]),
    (lo, hi): (usize, usize),
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    out.fill(0.0);
    if hi < lo {
        return;
    }
    scores.clear();
    let mut mx = f32::NEG_INFINITY;
    for kj in k[lo * hd..(hi + 1) * hd].chunks_exact(hd) {
        let mut acc = [0f32; 16];
        let mut tail = 0f32;
        let (qc, qr) = q.split_at(hd - hd % 16);
        let (kc, kr) = kj.split_at(hd - hd % 16);
        for (a, b) in qc.chunks_exact(16).zip(kc.chunks_exact(16)) {
            for l in 0..16 {
                acc[l] += a[l] * b[l];
            }
        }
        for (a, b) in qr.iter().zip(kr) {
            tail += a * b;
        }
        let s = (acc.iter().sum::<f32>() + tail) * scale;
        mx = mx.max(s);
        scores.push(s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - mx).exp();
        sum += *s;
    }
    for (p, vj) in scores
        .iter()
        .zip(v[lo * hd..(hi + 1) * hd].chunks_exact(hd))
    {
        for (o, &x) in out.iter_mut().zip(vj) {
            *o += p * x;
        }
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// [`attend_generic`] compiled for the CPU's vector units (AVX-512 or AVX2 where present,
/// chosen at run time), else portable.
#[allow(unsafe_code)]
fn attend(
    q: &[f32],
    kv: (&[f32], &[f32]),
    range: (usize, usize),
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512(
            q: &[f32],
            kv: (&[f32], &[f32]),
            range: (usize, usize),
            scale: f32,
            scores: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            attend_generic(q, kv, range, scale, scores, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(
            q: &[f32],
            kv: (&[f32], &[f32]),
            range: (usize, usize),
            scale: f32,
            scores: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            attend_generic(q, kv, range, scale, scores, out)
        }
        if crate::kernels::avx512_available() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked at run time), all the
            // function requires; it is safe code otherwise.
            return unsafe { avx512(q, kv, range, scale, scores, out) };
        }
        if crate::kernels::simd_available() {
            // SAFETY: as above, for AVX2 and FMA.
            return unsafe { avx2(q, kv, range, scale, scores, out) };
        }
    }
    attend_generic(q, kv, range, scale, scores, out)
}

/// Runs `tokens` (`[b][s]`, `b·s ≤` [`HOST_STEP_MAX_ROWS`]) at cache positions
/// `cache.len .. cache.len + s` (`pads[i]` leading positions of row `i` are padding), as
/// [`crate::forward::forward_chunk`] does, on host vectors. Returns the logits of each row's
/// last position (`[b, vocab]`), or of every position (`[b·s, vocab]`) when `all`.
pub(crate) fn forward_host(
    cfg: &ModelConfig,
    w: &Fused,
    tokens: &[Vec<u32>],
    pads: &[usize],
    cache: &mut KvCache,
    all: bool,
    device: &Device,
) -> Tensor<2> {
    let small: Arc<HostVecs> = Arc::clone(w.host_vecs.get_or_init(|| Arc::new(HostVecs::of(w))));
    let b = tokens.len();
    let s = tokens[0].len();
    let n = b * s;
    let start = cache.len;
    let (d, hh, kvh, hd) = (cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim);
    let (qo, kvo) = (hh * hd, kvh * hd);
    let group = hh / kvh;
    let eps = cfg.rms_eps;
    let ids: Vec<i64> = tokens.iter().flatten().map(|&t| t as i64).collect();
    let ids: Tensor<1, Int> = Tensor::from_data(TensorData::new(ids, [n]), device);
    let mut x = host_vec(w.embed.clone().select(0, ids));
    // RoPE per (row, position): the tensor forward's tables (angle `p · θ_i` in f32).
    let inv = rope_inv_freq(hd, cfg.rope_theta);
    let mut cos = Vec::with_capacity(n * hd / 2);
    let mut sin = Vec::with_capacity(n * hd / 2);
    for &p in pads {
        for i in 0..s {
            let pos = (start + i).saturating_sub(p) as f32;
            for &f in &inv {
                let a = pos * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let half = hd / 2;
    let scale = 1.0 / (hd as f32).sqrt();
    let KvStore::Host { k: kc, v: vc } = &mut cache.store else {
        unreachable!("forward_host runs on host caches only (`serves`)")
    };
    let (cap, ff) = (cache.cap, cfg.intermediate);
    let at = |row: usize, g: usize, pos: usize| ((row * kvh + g) * cap + pos) * hd;
    let end = start + s;
    let mut o = vec![0f32; n * qo];
    for (l, ly) in w.layers.iter().enumerate() {
        let lv = &small.layers[l];
        let mut h = x.clone();
        rms_norm_rows(&mut h, &lv.attn_norm, eps);
        let mut qkv = ly.wqkv.mm_host(h, n);
        let width = qo + 2 * kvo;
        if let Some(bias) = &lv.bqkv {
            for row in qkv.chunks_exact_mut(width) {
                for (v, &bb) in row.iter_mut().zip(bias) {
                    *v += bb;
                }
            }
        }
        for (r, row) in qkv.chunks_exact_mut(width).enumerate() {
            let (c, sn) = (
                &cos[r * half..(r + 1) * half],
                &sin[r * half..(r + 1) * half],
            );
            let (q, kv) = row.split_at_mut(qo);
            let (k, _) = kv.split_at_mut(kvo);
            for head in q.chunks_exact_mut(hd) {
                if let Some(qn) = &lv.q_norm {
                    rms_norm_rows(head, qn, eps);
                }
                rope_head(head, c, sn);
            }
            for head in k.chunks_exact_mut(hd) {
                if let Some(kn) = &lv.k_norm {
                    rms_norm_rows(head, kn, eps);
                }
                rope_head(head, c, sn);
            }
        }
        // Keys and values into the cache.
        let (kl, vl) = (&mut kc[l], &mut vc[l]);
        for (r, row) in qkv.chunks_exact(width).enumerate() {
            let (bi, i) = (r / s, r % s);
            for g in 0..kvh {
                let a = at(bi, g, start + i);
                kl[a..a + hd].copy_from_slice(&row[qo + g * hd..qo + (g + 1) * hd]);
                vl[a..a + hd].copy_from_slice(&row[qo + kvo + g * hd..qo + kvo + (g + 1) * hd]);
            }
        }
        // Fused attention: one task per (row, position, query head).
        let (kl, vl) = (&*kl, &*vl);
        let task = |t: usize, out: &mut [f32], scores: &mut Vec<f32>| {
            let (r, head) = (t / hh, t % hh);
            let (bi, i) = (r / s, r % s);
            let g = head / group;
            let q = &qkv[r * width + head * hd..r * width + (head + 1) * hd];
            let base = at(bi, g, 0);
            let span = cap * hd;
            attend(
                q,
                (&kl[base..base + span], &vl[base..base + span]),
                (pads[bi], start + i),
                scale,
                scores,
                out,
            );
        };
        if n * hh * end * hd < ATTN_PAR_MIN {
            let mut scores = Vec::with_capacity(end);
            for (t, out) in o.chunks_exact_mut(hd).enumerate() {
                task(t, out, &mut scores);
            }
        } else {
            o.par_chunks_mut(hd).enumerate().for_each_init(
                || Vec::with_capacity(end),
                |scores, (t, out)| task(t, out, scores),
            );
        }
        let y = ly.wo.mm_host(o.clone(), n);
        for (a, b) in x.iter_mut().zip(&y) {
            *a += b;
        }
        let mut h = x.clone();
        rms_norm_rows(&mut h, &lv.ffn_norm, eps);
        let gu = ly.wgu.mm_host(h, n);
        let mut act = Vec::with_capacity(n * ff);
        for row in gu.chunks_exact(2 * ff) {
            let (g, u) = row.split_at(ff);
            act.extend(g.iter().zip(u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u));
        }
        let y = ly.wdown.mm_host(act, n);
        for (a, b) in x.iter_mut().zip(&y) {
            *a += b;
        }
    }
    cache.len = end;
    let (rows, m) = if all {
        (x, n)
    } else {
        let mut last = Vec::with_capacity(b * d);
        for bi in 0..b {
            let r = bi * s + s - 1;
            last.extend_from_slice(&x[r * d..(r + 1) * d]);
        }
        (last, b)
    };
    let mut rows = rows;
    rms_norm_rows(&mut rows, &small.norm, eps);
    let logits = w.lm_head.mm_host(rows, m);
    let vocab = logits.len() / m.max(1);
    Tensor::from_data(TensorData::new(logits, [m, vocab]), device)
}
