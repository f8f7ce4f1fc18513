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

use crate::forward::{KvCache, KvStore, host_vec, rope_inv_freq, rope_push};
use crate::fused;
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

/// `x · rsqrt(mean(x²) + eps) · w` for each `w.len()`-wide row of `x`, in place (the
/// training kernel's [`fused::rms_rstd`]).
fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let r = fused::rms_rstd(row, eps);
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
    // Head dimensions in 16-lane chunks (vector registers), the rest one by one.
    let wide = hd - hd % 16;
    scores.clear();
    let mut mx = f32::NEG_INFINITY;
    for kj in k[lo * hd..(hi + 1) * hd].chunks_exact(hd) {
        let mut acc = [0f32; 16];
        for (a, b) in q[..wide].chunks_exact(16).zip(kj[..wide].chunks_exact(16)) {
            for l in 0..16 {
                acc[l] += a[l] * b[l];
            }
        }
        let mut tail = 0f32;
        for (a, b) in q[wide..].iter().zip(&kj[wide..]) {
            tail += a * b;
        }
        let s = (sum16(acc) + tail) * scale;
        mx = mx.max(s);
        scores.push(s);
    }
    let sum = softmax_weights(scores, mx);
    let inv = 1.0 / sum;
    let vs = &v[lo * hd..(hi + 1) * hd];
    // The weighted values, 16 dimensions at a time with the sum held in registers.
    for (c, oc) in out[..wide].chunks_exact_mut(16).enumerate() {
        let mut acc = [0f32; 16];
        for (&p, vj) in scores.iter().zip(vs.chunks_exact(hd)) {
            let vc = &vj[c * 16..c * 16 + 16];
            for l in 0..16 {
                acc[l] += p * vc[l];
            }
        }
        for (o, a) in oc.iter_mut().zip(acc) {
            *o = a * inv;
        }
    }
    for (i, o) in out.iter_mut().enumerate().skip(wide) {
        let mut a = 0f32;
        for (&p, vj) in scores.iter().zip(vs.chunks_exact(hd)) {
            a += p * vj[i];
        }
        *o = a * inv;
    }
}

/// `e^(s − mx)` for every score in place (the vectorised [`fused::exp_in_place`]); returns
/// their sum.
fn softmax_weights(scores: &mut [f32], mx: f32) -> f32 {
    for s in scores.iter_mut() {
        *s -= mx;
    }
    fused::exp_in_place(scores);
    scores.iter().sum()
}

/// The sum of 16 lanes as a tree (8 + 8, 4 + 4, …), which vectorizes; a left-to-right sum
/// is 15 dependent additions per key.
#[inline(always)]
fn sum16(a: [f32; 16]) -> f32 {
    let mut h = [0f32; 8];
    for i in 0..8 {
        h[i] = a[i] + a[i + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

/// [`attend_generic`] on the CPU's vector units, chosen at run time: the AVX-512 kernel for
/// head dims 64 and 128 ([`attend512`]), else the loop compiled for AVX2 + FMA where present
/// (any AVX-512 CPU has them), else portable.
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
            match q.len() {
                64 => return attend512::run::<4>(q, kv, range, scale, scores, out),
                128 => return attend512::run::<8>(q, kv, range, scale, scores, out),
                _ => {}
            }
        }
        if crate::kernels::simd_available() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time), all the function
            // requires; it is safe code otherwise.
            return unsafe { avx2(q, kv, range, scale, scores, out) };
        }
    }
    attend_generic(q, kv, range, scale, scores, out)
}

/// [`attend_generic`] in AVX-512 intrinsics for head dimensions of `16·C` (64 and 128, the
/// families' sizes): the query in `C` registers, each key's dot product a chain of `C`
/// multiply-adds reduced once, the weighted values summed in `2·C` registers (even and odd
/// keys apart, so the additions overlap).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod attend512 {
    use std::arch::x86_64::*;

    /// Checks the CPU and the lengths, then runs the kernel.
    pub(super) fn run<const C: usize>(
        q: &[f32],
        (k, v): (&[f32], &[f32]),
        (lo, hi): (usize, usize),
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = 16 * C;
        assert!(
            crate::kernels::avx512_available(),
            "AVX-512 on a CPU without it"
        );
        assert!(q.len() == hd && out.len() == hd);
        if hi < lo {
            out.fill(0.0);
            return;
        }
        assert!(k.len() >= (hi + 1) * hd && v.len() >= (hi + 1) * hd);
        scores.clear();
        scores.resize(hi + 1 - lo, 0.0);
        // SAFETY: AVX-512F is present (checked); the kernel reads `hd` values of `q`, keys and
        // values `lo ..= hi` (`hd` each, inside `k` and `v` as checked), writes the
        // `hi + 1 − lo` scores (resized above) and the `hd` outputs.
        unsafe { kernel::<C>(q, (k, v), (lo, hi), scale, scores, out) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const C: usize>(
        q: &[f32],
        (k, v): (&[f32], &[f32]),
        (lo, hi): (usize, usize),
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let hd = 16 * C;
        let n = hi + 1 - lo;
        // SAFETY (whole body): every offset stays inside the lengths `run` checked.
        unsafe {
            let qv: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(q.as_ptr().add(16 * c)));
            let kp = k.as_ptr().add(lo * hd);
            let mut mx = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let kr = kp.add(j * hd);
                let mut a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kr));
                for (c, qc) in qv.iter().enumerate().skip(1) {
                    a = _mm512_fmadd_ps(*qc, _mm512_loadu_ps(kr.add(16 * c)), a);
                }
                *s = _mm512_reduce_add_ps(a) * scale;
                mx = mx.max(*s);
            }
            let sum = super::softmax_weights(scores, mx);
            let vp = v.as_ptr().add(lo * hd);
            let mut even = [_mm512_setzero_ps(); C];
            let mut odd = [_mm512_setzero_ps(); C];
            let mut j = 0;
            while j + 1 < n {
                let (pe, po) = (_mm512_set1_ps(scores[j]), _mm512_set1_ps(scores[j + 1]));
                let (re, ro) = (vp.add(j * hd), vp.add((j + 1) * hd));
                for c in 0..C {
                    even[c] = _mm512_fmadd_ps(pe, _mm512_loadu_ps(re.add(16 * c)), even[c]);
                    odd[c] = _mm512_fmadd_ps(po, _mm512_loadu_ps(ro.add(16 * c)), odd[c]);
                }
                j += 2;
            }
            if j < n {
                let pe = _mm512_set1_ps(scores[j]);
                let re = vp.add(j * hd);
                for (c, e) in even.iter_mut().enumerate() {
                    *e = _mm512_fmadd_ps(pe, _mm512_loadu_ps(re.add(16 * c)), *e);
                }
            }
            let inv = _mm512_set1_ps(1.0 / sum);
            for c in 0..C {
                let o = _mm512_mul_ps(_mm512_add_ps(even[c], odd[c]), inv);
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * c), o);
            }
        }
    }
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
            rope_push((start + i).saturating_sub(p), &inv, &mut cos, &mut sin);
        }
    }
    let half = hd / 2;
    let scale = 1.0 / (hd as f32).sqrt();
    let KvStore::Host { k: kc, v: vc } = &mut cache.store else {
        unreachable!("forward_host runs on host caches only (`serves`)")
    };
    let (geom, ff) = (cache.geom, cfg.intermediate);
    let end = start + s;
    let mut o = vec![0f32; n * qo];
    for (l, ly) in w.layers.iter().enumerate() {
        let lv = &small.layers[l];
        let mut h = x.clone();
        rms_norm_rows(&mut h, &lv.attn_norm, eps);
        let mut qkv = ly.wqkv.mm_host(&h, n);
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
                let a = geom.at(bi, g, start + i);
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
            let base = geom.at(bi, g, 0);
            let span = geom.cap * hd;
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
        let y = ly.wo.mm_host(&o, n);
        for (a, b) in x.iter_mut().zip(&y) {
            *a += b;
        }
        let mut h = x.clone();
        rms_norm_rows(&mut h, &lv.ffn_norm, eps);
        let gu = ly.wgu.mm_host(&h, n);
        let mut act = vec![0f32; n * ff];
        for (row, a) in gu.chunks_exact(2 * ff).zip(act.chunks_exact_mut(ff)) {
            let (g, u) = row.split_at(ff);
            fused::swiglu_slice(g, u, a);
        }
        let y = ly.wdown.mm_host(&act, n);
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
    let logits = w.lm_head.mm_host(&rows, m);
    let vocab = logits.len() / m.max(1);
    Tensor::from_data(TensorData::new(logits, [m, vocab]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::seed::SplitMix64;

    /// Softmax attention in f64, one position at a time: the reference.
    fn reference(q: &[f32], k: &[f32], v: &[f32], lo: usize, hi: usize, scale: f32) -> Vec<f64> {
        let hd = q.len();
        let mut out = vec![0f64; hd];
        if hi < lo {
            return out;
        }
        let s: Vec<f64> = (lo..=hi)
            .map(|j| {
                (0..hd)
                    .map(|d| q[d] as f64 * k[j * hd + d] as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
        let z: f64 = e.iter().sum();
        for (w, j) in e.iter().zip(lo..=hi) {
            for d in 0..hd {
                out[d] += w / z * v[j * hd + d] as f64;
            }
        }
        out
    }

    #[test]
    fn fused_attention_is_softmax_attention() {
        let mut rng = SplitMix64(7);
        // 64 and 128 take the AVX-512 kernels where present; 8 and 24 the generic loop (24:
        // one 16-lane chunk and a tail of 8).
        for hd in [8, 24, 64, 128] {
            let cap = 40;
            let mut r = |n: usize| (0..n).map(|_| rng.signed_unit()).collect::<Vec<_>>();
            let (q, k, v) = (r(hd), r(cap * hd), r(cap * hd));
            let scale = 1.0 / (hd as f32).sqrt();
            // A padded row (lo > 0), one key, odd and even counts, the whole cache, and a
            // padding query that sees nothing.
            for (lo, hi) in [(0, 0), (3, 3), (5, 17), (0, 22), (0, cap - 1), (9, 4)] {
                let mut out = vec![f32::NAN; hd];
                attend(&q, (&k, &v), (lo, hi), scale, &mut Vec::new(), &mut out);
                let want = reference(&q, &k, &v, lo, hi, scale);
                // The output is a convex combination of value rows, so its error scales with
                // the largest |v| (≤ 1 here): bound it relative to that.
                let vmax = v.iter().fold(0f32, |a, x| a.max(x.abs())) as f64;
                for (d, (&g, &w)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - w).abs() < 1e-5 * vmax,
                        "hd {hd} keys {lo}..={hi} dim {d}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
