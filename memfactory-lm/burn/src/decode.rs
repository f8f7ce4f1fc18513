//! The host forward: every forward chunk on `flex` (decode steps and prefill chunks alike)
//! on plain host vectors over a host [`KvCache`].
//!
//! A decode step of a 135M model is ~30 layers × ~25 small tensor ops; on the CPU each op
//! costs a dispatch, a fresh allocation (zeroed pages) and, for attention over the cache, a
//! strided copy of the cache's filled positions. Here a chunk is a loop over the layers on
//! one row-major buffer: the products go to the GGUF block kernels when they are decode-sized
//! ([`Split::mm_host`]: at most [`HOST_STEP_MAX_ROWS`] rows, with a LoRA policy's adapters
//! beside the base's blocks) and to gemm otherwise, and attention is fused:
//! - decode-sized chunks: for each query head the scores against the cached keys, the
//!   softmax and the weighted sum of the values in one pass over the cache in place
//!   ([`attend`]), the row's left padding skipped;
//! - prefill chunks ([`ATTN_BLOCKED_MIN`] positions per row or more): flash-style blocks of
//!   queries, `Q · Kᵀ` and `P · V` as gemm products straight from the `qkv` buffer and the
//!   cache ([`attention_blocked`]), so no `[heads, positions, positions]` score tensor is
//!   ever allocated (on 1K-token prompts the tensor forward spent 30 % of a prefill in
//!   burn's attention and in faulting in those buffers).
//!
//! The maths is the tensor forward's (same RoPE tables, norms, masking), in another summation
//! order; the parity and prefix-sharing tests run through it, and `MEMFACTORY_HOST_PREFILL=0`
//! sends prefill chunks back to the tensor forward for comparisons.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::forward::{KvCache, KvStore, host_vec, rope_inv_freq, rope_push};
use crate::fused;
use crate::model::{Fused, FusedLayer, ModelConfig};

/// Rows (batch × positions) up to which a chunk's products run on the block kernels (above
/// it they are gemm-sized).
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
    matches!(cache.store, KvStore::Host { .. })
        && (rows <= HOST_STEP_MAX_ROWS || {
            static HOST_PREFILL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            *HOST_PREFILL.get_or_init(|| {
                std::env::var_os("MEMFACTORY_HOST_PREFILL").is_none_or(|v| v != "0")
            })
        })
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

/// Rows per block of [`mlp_host`]: the MLP's `[rows, 2·ff]` and `[rows, ff]` buffers are the
/// largest of a prefill chunk, so a long chunk runs them block by block (the rows are
/// independent there) to bound its peak memory.
const MLP_ROW_BLOCK: usize = 1024;

/// The MLP half of a layer on host rows `x` (`n` of them), residual added in place.
fn mlp_host(ly: &FusedLayer, lv: &LayerVecs, x: &mut [f32], n: usize, ff: usize, eps: f32) {
    if n > MLP_ROW_BLOCK {
        let d = x.len() / n;
        for blk in x.chunks_mut(MLP_ROW_BLOCK * d) {
            let rows = blk.len() / d;
            mlp_host(ly, lv, blk, rows, ff, eps);
        }
        return;
    }
    let mut h = x.to_vec();
    rms_norm_rows(&mut h, &lv.ffn_norm, eps);
    let gu = ly.wgu.mm_host(&h, n);
    drop(h);
    let mut act = vec![0f32; n * ff];
    let swiglu = |(row, a): (&[f32], &mut [f32])| {
        let (g, u) = row.split_at(ff);
        fused::swiglu_slice(g, u, a);
    };
    if n > HOST_STEP_MAX_ROWS {
        gu.par_chunks_exact(2 * ff)
            .zip(act.par_chunks_exact_mut(ff))
            .for_each(swiglu);
    } else {
        gu.chunks_exact(2 * ff)
            .zip(act.chunks_exact_mut(ff))
            .for_each(swiglu);
    }
    drop(gu);
    let y = ly.wdown.mm_host(&act, n);
    for (a, b) in x.iter_mut().zip(&y) {
        *a += b;
    }
}

/// Multiplies `x` by `scale` in place and returns the largest result, 16 lanes at a time
/// (`f32::max` in a loop stays scalar: it must order NaNs).
fn scale_and_max(x: &mut [f32], scale: f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] *= scale;
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let mut mx = f32::NEG_INFINITY;
    for v in lanes
        .into_iter()
        .chain(chunks.into_remainder().iter_mut().map(|v| {
            *v *= scale;
            *v
        }))
    {
        if v > mx {
            mx = v;
        }
    }
    mx
}

/// Positions of a row in one chunk from which its attention runs blocked on gemm
/// ([`attention_blocked`]) rather than one query at a time ([`attend`]).
const ATTN_BLOCKED_MIN: usize = 32;

/// Query positions per block of [`attention_blocked`].
const ATTN_QBLOCK: usize = 64;

/// Shapes of a chunk for [`attention_blocked`].
#[derive(Clone, Copy)]
struct BlockDims {
    b: usize,
    s: usize,
    start: usize,
    hh: usize,
    group: usize,
    hd: usize,
    /// Row width of the `qkv` buffer.
    width: usize,
}

/// Causal attention of a prefill chunk (`s` positions per row at cache positions
/// `start ..`), flash-style in blocks: per (row, query head, block of [`ATTN_QBLOCK`]
/// positions) the scores of the block's queries against the keys it can see are one gemm
/// (`Q · Kᵀ` straight from the `qkv` buffer and the host cache), masked and soft-maxed in
/// place, and the output one more gemm (`P · V`); nothing of size positions² is ever
/// materialised. The same maths as [`attend`] per query, in another summation order.
fn attention_blocked(
    qkv: &[f32],
    (kl, vl, geom): (&[f32], &[f32], crate::forward::KvGeom),
    pads: &[usize],
    d: BlockDims,
    scale: f32,
    o: &mut [f32],
) {
    let BlockDims {
        b,
        s,
        start,
        hh,
        group,
        hd,
        width,
    } = d;
    let qo = hh * hd;
    let blocks = s.div_ceil(ATTN_QBLOCK);
    let outs: Vec<Vec<f32>> = (0..b * hh * blocks)
        .into_par_iter()
        .map(|t| {
            let (bi, head, blk) = (t / (hh * blocks), (t / blocks) % hh, t % blocks);
            let (i0, i1) = (blk * ATTN_QBLOCK, ((blk + 1) * ATTN_QBLOCK).min(s));
            let qb = i1 - i0;
            let mut out = vec![0f32; qb * hd];
            let lo = pads[bi];
            let hi = start + i1 - 1;
            if hi < lo {
                return out;
            }
            let nk = hi + 1 - lo;
            let kvbase = geom.at(bi, head / group, lo);
            let q = fused::View::rows(qkv, (bi * s + i0) * width + head * hd, width);
            let k = fused::View::rows(kl, kvbase, hd);
            let mut p = vec![0f32; qb * nk];
            fused::matmul(&mut p, nk, q, k.t(), (qb, nk, hd), false);
            let mut inv = vec![0f32; qb];
            for (qi, row) in p.chunks_exact_mut(nk).enumerate() {
                let last = start + i0 + qi;
                let vis = (last + 1).saturating_sub(lo).min(nk);
                let (seen, masked) = row.split_at_mut(vis);
                masked.fill(0.0);
                if vis == 0 {
                    continue;
                }
                let mx = scale_and_max(seen, scale);
                inv[qi] = 1.0 / softmax_weights(seen, mx);
            }
            let v = fused::View::rows(vl, kvbase, hd);
            fused::matmul(
                &mut out,
                hd,
                fused::View::rows(&p, 0, nk),
                v,
                (qb, hd, nk),
                false,
            );
            for (row, &c) in out.chunks_exact_mut(hd).zip(&inv) {
                row.iter_mut().for_each(|x| *x *= c);
            }
            out
        })
        .collect();
    for (t, out) in outs.into_iter().enumerate() {
        let (bi, head, blk) = (t / (hh * blocks), (t / blocks) % hh, t % blocks);
        for (qi, row) in out.chunks_exact(hd).enumerate() {
            let r = bi * s + blk * ATTN_QBLOCK + qi;
            o[r * qo + head * hd..r * qo + (head + 1) * hd].copy_from_slice(row);
        }
    }
}

/// Runs `tokens` (`[b][s]`, one chunk) at cache positions
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
    let ids: Vec<u32> = tokens.iter().flatten().copied().collect();
    let mut x = w.embed_rows(&ids);
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
        let (kl, vl) = (&*kl, &*vl);
        if s >= ATTN_BLOCKED_MIN {
            let dims = BlockDims {
                b,
                s,
                start,
                hh,
                group,
                hd,
                width,
            };
            attention_blocked(&qkv, (kl, vl, geom), pads, dims, scale, &mut o);
            let y = ly.wo.mm_host(&o, n);
            for (a, b) in x.iter_mut().zip(&y) {
                *a += b;
            }
            mlp_host(ly, lv, &mut x, n, ff, eps);
            continue;
        }
        // Fused attention: one task per (row, position, query head).
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
        mlp_host(ly, lv, &mut x, n, ff, eps);
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
    fn blocked_prefill_attention_is_per_query_attention() {
        // Two rows (the second left-padded by 5), 2 K/V heads of 4 query heads, a chunk of
        // 70 positions (a full block of 64 and a tail) after 9 cached ones; head dims 64
        // (AVX-512 kernel in `attend`) and 24 (generic loop).
        let mut rng = SplitMix64(11);
        for hd in [24, 64] {
            let (b, s, start, kvh, hh) = (2, 70, 9, 2, 4);
            let geom = crate::forward::KvGeom {
                kv_heads: kvh,
                cap: start + s + 3,
                head_dim: hd,
            };
            let width = (hh + 2 * kvh) * hd;
            let mut r = |n: usize| (0..n).map(|_| rng.signed_unit()).collect::<Vec<_>>();
            let qkv = r(b * s * width);
            let (kl, vl) = (r(b * kvh * geom.cap * hd), r(b * kvh * geom.cap * hd));
            let pads = [0, 5];
            let scale = 1.0 / (hd as f32).sqrt();
            let dims = BlockDims {
                b,
                s,
                start,
                hh,
                group: hh / kvh,
                hd,
                width,
            };
            let mut got = vec![f32::NAN; b * s * hh * hd];
            attention_blocked(&qkv, (&kl, &vl, geom), &pads, dims, scale, &mut got);
            let span = geom.cap * hd;
            for r in 0..b * s {
                let (bi, i) = (r / s, r % s);
                for head in 0..hh {
                    let base = geom.at(bi, head / 2, 0);
                    let q = &qkv[r * width + head * hd..r * width + (head + 1) * hd];
                    let mut want = vec![0f32; hd];
                    attend(
                        q,
                        (&kl[base..base + span], &vl[base..base + span]),
                        (pads[bi], start + i),
                        scale,
                        &mut Vec::new(),
                        &mut want,
                    );
                    let g = &got[(r * hh + head) * hd..(r * hh + head + 1) * hd];
                    // Outputs are convex combinations of value rows: bound relative to |v|.
                    let vmax = vl.iter().fold(0f32, |a, x| a.max(x.abs()));
                    for (d, (x, y)) in g.iter().zip(&want).enumerate() {
                        assert!(
                            (x - y).abs() < 1e-5 * vmax,
                            "hd {hd} row {bi} pos {i} head {head} dim {d}: {x} vs {y}"
                        );
                    }
                }
            }
        }
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
