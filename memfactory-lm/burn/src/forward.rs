//! The inference forward pass: fused weights, a preallocated KV cache, per-row positions and
//! additive attention masks (left-padded batches).

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use memfactory_core::{Error, Result};

use crate::model::{Fused, FusedLayer, ModelConfig};

/// Additive mask value for blocked keys (finite, so fully-masked pad rows stay NaN-free).
pub(crate) const NEG: f32 = -1e9;

pub(crate) fn rms_norm<const D: usize>(x: Tensor<D>, w: &Tensor<1>, eps: f32) -> Tensor<D> {
    let var = (x.clone() * x.clone()).mean_dim(D - 1);
    let x = x * var.add_scalar(eps).sqrt().recip();
    x * w.clone().unsqueeze::<D>()
}

/// RoPE's rotation frequencies `θ^(−2i/head_dim)`, `i < head_dim / 2` (position `p` turns pair
/// `i` by `p · freq[i]`); shared by the inference tables and the fused training attention.
pub(crate) fn rope_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Appends RoPE's `cos` and `sin` at position `p` for each pair `i` (angle `p · inv[i]` in
/// f32): the one table the tensor forward, the fused training attention and the host decode
/// step all rotate by.
pub(crate) fn rope_push(p: usize, inv: &[f32], cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    for &w in inv {
        let f = p as f32 * w;
        cos.push(f.cos());
        sin.push(f.sin());
    }
}

/// RoPE tables for positions `pos` (`[b][s]`): `cos` = `[cos, cos]` and `sin` = `[−sin, sin]`,
/// each `[b, 1, s, head_dim]`.
pub(crate) fn rope_tables(
    pos: &[Vec<usize>],
    head_dim: usize,
    theta: f32,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let b = pos.len();
    let s = pos.first().map_or(0, Vec::len);
    let inv = rope_inv_freq(head_dim, theta);
    let mut cos = Vec::with_capacity(b * s * head_dim);
    let mut sin = Vec::with_capacity(b * s * head_dim);
    let (mut c, mut sn) = (Vec::new(), Vec::new());
    for row in pos {
        for &p in row {
            c.clear();
            sn.clear();
            rope_push(p, &inv, &mut c, &mut sn);
            cos.extend_from_slice(&c);
            cos.extend_from_slice(&c);
            sin.extend(sn.iter().map(|x| -x));
            sin.extend_from_slice(&sn);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [b, 1, s, head_dim]), device),
        Tensor::from_data(TensorData::new(sin, [b, 1, s, head_dim]), device),
    )
}

/// Rotate-half RoPE on `[b, h, s, hd]`.
pub(crate) fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let hd = x.dims()[3];
    let half = hd / 2;
    let swapped = Tensor::cat(
        vec![
            x.clone().narrow(3, half, half),
            x.clone().narrow(3, 0, half),
        ],
        3,
    );
    x * cos.clone() + swapped * sin.clone()
}

/// GQA attention from tensor ops (differentiable): `q` `[b, H, s, hd]`, `k`/`v`
/// `[b, K, T, hd]`, `bias` `[b, 1, s, T]`. The training forward uses it; inference uses the
/// backend's fused kernel ([`attention_fused`]).
pub(crate) fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: &Tensor<4>) -> Tensor<4> {
    let [b, h, s, hd] = q.dims();
    let kvh = k.dims()[1];
    let t = k.dims()[2];
    let g = h / kvh;
    let scale = 1.0 / (hd as f32).sqrt();
    let q = q.reshape([b, kvh, g * s, hd]);
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = scores.reshape([b, h, s, t]) + bias.clone();
    let p = softmax(scores, 3).reshape([b, kvh, g * s, t]);
    p.matmul(v).reshape([b, h, s, hd])
}

/// The same attention through the backend's own kernel (on `flex`: GQA without repeating
/// K/V, the bias broadcast over heads without a copy, flash tiling for long contexts),
/// for the inference forward, where no gradient is needed.
pub(crate) fn attention_fused(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: &Tensor<4>,
) -> Tensor<4> {
    burn::tensor::module::attention(
        q,
        k,
        v,
        None,
        Some(bias.clone()),
        burn::tensor::ops::AttentionModuleOptions::default(),
    )
}

/// A tensor's values in row-major order, as f32 (the inference tensors are f32).
pub(crate) fn host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data converts to f32")
}

/// Where a [`KvCache`] keeps its keys and values.
pub(crate) enum KvStore {
    /// Device tensors `[batch, kv_heads, capacity, head_dim]` per layer (GPU backends).
    Tensors {
        k: Vec<Tensor<4>>,
        v: Vec<Tensor<4>>,
    },
    /// Host memory with the same layout per layer (`flex`): the host decode step
    /// ([`crate::decode`]) attends over it in place, without tensor ops.
    Host { k: Vec<Vec<f32>>, v: Vec<Vec<f32>> },
}

/// The layout of a host cache layer: `[row][kv head][position][head_dim]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvGeom {
    pub kv_heads: usize,
    /// Positions each row can hold.
    pub cap: usize,
    pub head_dim: usize,
}

impl KvGeom {
    /// Offset of position `pos` of K/V head `g` of row `row` in a host layer.
    pub fn at(self, row: usize, g: usize, pos: usize) -> usize {
        ((row * self.kv_heads + g) * self.cap + pos) * self.head_dim
    }
}

/// Per-layer key/value cache, preallocated to `capacity` positions.
pub(crate) struct KvCache {
    pub store: KvStore,
    pub geom: KvGeom,
    /// Positions filled so far.
    pub len: usize,
}

impl KvCache {
    /// Bytes of a cache for `batch` rows of `capacity` positions (keys and values of every
    /// layer, f32), or `None` when that overflows.
    pub fn bytes(cfg: &ModelConfig, batch: usize, capacity: usize) -> Option<usize> {
        [cfg.kv_heads, capacity, cfg.head_dim, cfg.layers, 2, 4]
            .into_iter()
            .try_fold(batch, usize::checked_mul)
    }

    /// A zeroed cache for `batch` rows of `capacity` positions: host memory on `flex`,
    /// tensors elsewhere. The size comes from the requests, so it is reserved fallibly: a
    /// size the system cannot provide is an error here instead of an abort inside an
    /// allocation.
    pub fn new(
        cfg: &ModelConfig,
        batch: usize,
        capacity: usize,
        device: &Device,
    ) -> Result<KvCache> {
        let too_big = |what: String| {
            Error::backend(
                "burn",
                format!(
                    "the KV cache for {batch} sequence(s) of {capacity} positions ({what}) \
                     cannot be allocated; lower max_new_tokens, the prompt length or max_batch"
                ),
            )
        };
        let bytes = Self::bytes(cfg, batch, capacity)
            .ok_or_else(|| too_big("its size overflows".into()))?;
        let store = if *device == Device::flex() {
            let per = bytes / 4 / (2 * cfg.layers).max(1);
            let zeroed = || -> Result<Vec<f32>> {
                let mut v: Vec<f32> = Vec::new();
                v.try_reserve_exact(per)
                    .map_err(|e| too_big(format!("{bytes} bytes: {e}")))?;
                v.resize(per, 0.0);
                Ok(v)
            };
            KvStore::Host {
                k: (0..cfg.layers).map(|_| zeroed()).collect::<Result<_>>()?,
                v: (0..cfg.layers).map(|_| zeroed()).collect::<Result<_>>()?,
            }
        } else {
            let shape = [batch, cfg.kv_heads, capacity, cfg.head_dim];
            KvStore::Tensors {
                k: (0..cfg.layers)
                    .map(|_| Tensor::zeros(shape, device))
                    .collect(),
                v: (0..cfg.layers)
                    .map(|_| Tensor::zeros(shape, device))
                    .collect(),
            }
        };
        Ok(KvCache {
            store,
            geom: KvGeom {
                kv_heads: cfg.kv_heads,
                cap: capacity,
                head_dim: cfg.head_dim,
            },
            len: 0,
        })
    }

    /// Copies positions `src_at .. src_at + len` of row `src_row` of `src` (every layer's keys
    /// and values) into positions `dst_at .. dst_at + len` of row `dst_row`: a prefix
    /// prefilled once is shared by every sequence that starts with it. Keys carry RoPE by
    /// token position, not cache position, so a prefix may land at another cache offset
    /// (another left padding) as long as its tokens' positions are the same.
    pub fn copy_rows_from(
        &mut self,
        src: &KvCache,
        (src_row, src_at): (usize, usize),
        (dst_row, dst_at): (usize, usize),
        len: usize,
    ) {
        let (kvh, hd) = (self.geom.kv_heads, self.geom.head_dim);
        let n = len * hd;
        let offsets: Vec<(usize, usize)> = (0..kvh)
            .map(|g| {
                (
                    src.geom.at(src_row, g, src_at),
                    self.geom.at(dst_row, g, dst_at),
                )
            })
            .collect();
        match (&mut self.store, &src.store) {
            (KvStore::Host { k, v }, KvStore::Host { k: sk, v: sv }) => {
                for (dst, src) in k.iter_mut().zip(sk).chain(v.iter_mut().zip(sv)) {
                    for &(so, d) in &offsets {
                        dst[d..d + n].copy_from_slice(&src[so..so + n]);
                    }
                }
            }
            (KvStore::Tensors { k, v }, KvStore::Tensors { k: sk, v: sv }) => {
                for (dst, src) in k.iter_mut().zip(sk).chain(v.iter_mut().zip(sv)) {
                    let part = src.clone().slice([
                        src_row..src_row + 1,
                        0..kvh,
                        src_at..src_at + len,
                        0..hd,
                    ]);
                    let old = std::mem::replace(dst, part.clone());
                    *dst = old.slice_assign(
                        [dst_row..dst_row + 1, 0..kvh, dst_at..dst_at + len, 0..hd],
                        part,
                    );
                }
            }
            // Both caches of one generation are made on the same device.
            _ => unreachable!("KV caches of one generation share a device"),
        }
    }

    /// Keeps only batch rows `rows`.
    pub fn select_rows(&mut self, rows: &[usize], device: &Device) {
        let per_row = self.geom.at(1, 0, 0);
        match &mut self.store {
            KvStore::Host { k, v } => {
                for t in k.iter_mut().chain(v.iter_mut()) {
                    let mut kept = Vec::with_capacity(rows.len() * per_row);
                    for &r in rows {
                        kept.extend_from_slice(&t[r * per_row..(r + 1) * per_row]);
                    }
                    *t = kept;
                }
            }
            KvStore::Tensors { k, v } => {
                let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
                let n = idx.len();
                let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(idx, [n]), device);
                for t in k.iter_mut().chain(v.iter_mut()) {
                    let old = std::mem::replace(t, Tensor::zeros([1, 1, 1, 1], device));
                    *t = old.select(0, idx.clone());
                }
            }
        }
    }

    /// Stores layer `l`'s keys and values `[b, kv_heads, s, head_dim]` at positions
    /// `start .. start + s` and returns the cache's positions `0 .. start + s` as tensors
    /// `[b, kv_heads, start + s, head_dim]` for the attention.
    fn store_and_read(
        &mut self,
        l: usize,
        (k, v): (Tensor<4>, Tensor<4>),
        start: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, kvh, s, hd] = k.dims();
        let end = start + s;
        let (geom, device) = (self.geom, k.device());
        match &mut self.store {
            KvStore::Tensors { k: kc, v: vc } => {
                let (kc, vc) = (&mut kc[l], &mut vc[l]);
                let old = std::mem::replace(kc, k.clone());
                *kc = old.slice_assign([0..b, 0..kvh, start..end, 0..hd], k);
                let old = std::mem::replace(vc, v.clone());
                *vc = old.slice_assign([0..b, 0..kvh, start..end, 0..hd], v);
                (
                    kc.clone().slice([0..b, 0..kvh, 0..end, 0..hd]),
                    vc.clone().slice([0..b, 0..kvh, 0..end, 0..hd]),
                )
            }
            KvStore::Host { k: kc, v: vc } => {
                let read = |t: Tensor<4>, host: &mut Vec<f32>| -> Tensor<4> {
                    let new = host_vec(t);
                    let mut all = Vec::with_capacity(b * kvh * end * hd);
                    for (rg, part) in new.chunks_exact(s * hd).enumerate() {
                        let base = geom.at(rg / kvh, rg % kvh, 0);
                        host[base + start * hd..base + end * hd].copy_from_slice(part);
                        all.extend_from_slice(&host[base..base + end * hd]);
                    }
                    Tensor::from_data(TensorData::new(all, [b, kvh, end, hd]), &device)
                };
                (read(k, &mut kc[l]), read(v, &mut vc[l]))
            }
        }
    }
}

fn layer(
    cfg: &ModelConfig,
    ly: &FusedLayer,
    x: Tensor<2>,
    dims: (usize, usize),
    rope_t: &(Tensor<4>, Tensor<4>),
    // The attention bias, and whether burn's fused attention kernel may be used.
    (bias, fused_attention): (&Tensor<4>, bool),
    cache: (&mut KvCache, usize, usize),
) -> Tensor<2> {
    let (b, s) = dims;
    let (hh, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    let h = rms_norm(x.clone(), &ly.attn_norm, cfg.rms_eps);
    let mut qkv = ly.wqkv.mm(h);
    if let Some(bq) = &ly.bqkv {
        qkv = qkv + bq.clone().unsqueeze::<2>();
    }
    let mut q = qkv
        .clone()
        .narrow(1, 0, hh * hd)
        .reshape([b, s, hh, hd])
        .swap_dims(1, 2);
    let mut k = qkv
        .clone()
        .narrow(1, hh * hd, kv * hd)
        .reshape([b, s, kv, hd])
        .swap_dims(1, 2);
    let v = qkv
        .narrow(1, (hh + kv) * hd, kv * hd)
        .reshape([b, s, kv, hd])
        .swap_dims(1, 2);
    if let (Some(qn), Some(kn)) = (&ly.q_norm, &ly.k_norm) {
        q = rms_norm(q, qn, cfg.rms_eps);
        k = rms_norm(k, kn, cfg.rms_eps);
    }
    let q = rope(q, &rope_t.0, &rope_t.1);
    let k = rope(k, &rope_t.0, &rope_t.1);
    let (cache, l, start) = cache;
    let (kk, vv) = cache.store_and_read(l, (k, v), start);
    let o = if fused_attention {
        attention_fused(q, kk, vv, bias)
    } else {
        attention(q, kk, vv, bias)
    };
    let o = o.swap_dims(1, 2).reshape([b * s, hh * hd]);
    let x = x + ly.wo.mm(o);
    let h = rms_norm(x.clone(), &ly.ffn_norm, cfg.rms_eps);
    let gu = ly.wgu.mm(h);
    let ff = cfg.intermediate;
    let g = gu.clone().narrow(1, 0, ff);
    let u = gu.narrow(1, ff, ff);
    x + ly.wdown.mm(silu(g) * u)
}

/// Runs `tokens` (`[b][s]`, one chunk) through the model at cache positions
/// `cache.len .. cache.len + s`; `pads[i]` leading cache positions of row `i` are padding.
/// Returns the logits of the last position of each row, `[b, vocab]`, or of every position,
/// `[b·s, vocab]`, when `all`.
pub(crate) fn forward_chunk(
    cfg: &ModelConfig,
    w: &Fused,
    tokens: &[Vec<u32>],
    pads: &[usize],
    cache: &mut KvCache,
    all: bool,
    device: &Device,
) -> Tensor<2> {
    let b = tokens.len();
    let s = tokens[0].len();
    if crate::decode::serves(cache, b * s) {
        return crate::decode::forward_host(cfg, w, tokens, pads, cache, all, device);
    }
    let start = cache.len;
    let end = start + s;
    let ids: Vec<u32> = tokens.iter().flatten().copied().collect();
    let mut x = w.embed_select(&ids, device);
    let pos: Vec<Vec<usize>> = pads
        .iter()
        .map(|&p| (start..end).map(|j| j.saturating_sub(p)).collect())
        .collect();
    let rope_t = rope_tables(&pos, cfg.head_dim, cfg.rope_theta, device);
    let mut bias = vec![0f32; b * s * end];
    for (i, &p) in pads.iter().enumerate() {
        for qi in 0..s {
            let row = &mut bias[(i * s + qi) * end..(i * s + qi + 1) * end];
            for (j, m) in row.iter_mut().enumerate() {
                if j < p || j > start + qi {
                    *m = NEG;
                }
            }
        }
    }
    let bias: Tensor<4> = Tensor::from_data(TensorData::new(bias, [b, 1, s, end]), device);
    // burn's own attention kernel handles grouped K/V heads on flex only (the cubecl one
    // needs as many K/V heads as query heads); elsewhere the tensor-op attention, which
    // groups the query heads itself.
    let fused_attention = *device == Device::flex() || cfg.kv_heads == cfg.heads;
    for (l, ly) in w.layers.iter().enumerate() {
        x = layer(
            cfg,
            ly,
            x,
            (b, s),
            &rope_t,
            (&bias, fused_attention),
            (&mut *cache, l, start),
        );
    }
    cache.len = end;
    let d = cfg.hidden;
    if all {
        return w.lm_head.mm(rms_norm(x, &w.norm, cfg.rms_eps));
    }
    let last = x.reshape([b, s, d]).narrow(1, s - 1, 1).reshape([b, d]);
    let last = rms_norm(last, &w.norm, cfg.rms_eps);
    w.lm_head.mm(last)
}
