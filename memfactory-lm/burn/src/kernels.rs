//! CPU matrix–vector kernels on GGUF-quantized rows, for decode-sized products on `flex`.
//!
//! Decoding one token reads every weight once, so on a CPU it is bound by memory bandwidth:
//! the f32 copy of SmolLM2-135M is 540 MB a token, its Q4_1/Q8_0 blocks about 100 MB. For
//! products with few rows (decode steps, at most [`HOST_MAX_ROWS`]) the engine therefore
//! multiplies directly on the GGUF blocks, in parallel over output rows. With one row of `x`
//! each block contributes `d·Σ qᵢxᵢ + (m − o·d)·Σ xᵢ`, the quants converted in registers;
//! with several, each weight row is dequantized once into an L1-resident buffer and dotted
//! with every row of `x`. Since `d` is an f16 and `q` a small integer, `d·(q − o) + m` is
//! exactly the dequantizer's f32 weight, so results equal the f32 product up to summation
//! order (≈ 1e-6 relative; tested against the dequantized product and, end to end, against
//! the f32 engine's greedy tokens and log-probs).
//!
//! With `MEMFACTORY_BURN_QDOT=int8` the activations are instead quantised per 32-block to
//! int8 and multiplied with integer dot products, as llama.cpp does ([`crate::qdot`],
//! `Acts::Int8`), at the cost of the int8 rounding of the activations (bound derived and
//! tested there). The default stays the f32-activation kernels below (`Acts::F32`), whose
//! results match the dequantized f32 product and the parity tests' 1e-3 logit tolerance.
//!
//! On x86-64 with AVX-512F (detected at run time) the kernels widen a block's quants 16
//! lanes at a time and prefetch the next rows' blocks (`avx512`: the weights of a small model
//! sit in L3, where one core's stream is bound by latency); with AVX2 and FMA they use those
//! instructions (`avx2`); elsewhere a portable loop runs (correct, but auto-vectorization
//! gathers the bytes one by one: ~7× slower, not faster than the f32 gemm).

use rayon::prelude::*;

use crate::qdot::{self, QActs, QdotPath};
use crate::quant::GgmlType;

/// Rows of `x` up to which the host kernels serve a product (above it, gemm is faster).
pub(crate) const HOST_MAX_ROWS: usize = 16;

/// A weight `[out, in]` kept as GGUF blocks, split into f32 block scales/mins and the raw
/// quants (so the inner loop does no f16 conversion).
#[derive(Debug, Clone)]
pub(crate) struct HostMat {
    pub rows: usize,
    pub cols: usize,
    /// 4-bit (16 bytes a block) or 8-bit (32 bytes a block) quants.
    pub(crate) four_bit: bool,
    /// Subtracted from each 4-bit quant before scaling (8 for Q4_0, 0 for Q4_1).
    pub(crate) offset: i32,
    pub(crate) qs: Vec<u8>,
    /// Per block: `d`.
    pub(crate) scale: Vec<f32>,
    /// Per block: the additive term (`m` for Q4_1, 0 otherwise).
    pub(crate) min: Vec<f32>,
}

/// How a [`HostMat`] product treats the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acts {
    /// f32 activations times the blocks converted in registers (`simd`: the AVX2 + FMA build).
    F32 { simd: bool },
    /// Activations quantised per block to int8, integer dot products ([`crate::qdot`]).
    Int8(QdotPath),
}

impl Acts {
    /// The process-wide choice, read once from `MEMFACTORY_BURN_QDOT`: unset, empty or `f32`
    /// → f32 activations (the default); `int8` → int8 activations on the best path this CPU
    /// has; `scalar`, `avx2`, `avxvnni`, `avx512vnni` → int8 on that path (when
    /// the CPU lacks it, or the value is anything else, a warning is printed once and the
    /// default is used).
    pub(crate) fn from_env() -> Acts {
        static CHOICE: std::sync::OnceLock<Acts> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| {
            let v = std::env::var("MEMFACTORY_BURN_QDOT").unwrap_or_default();
            match Acts::parse(&v) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("warning: MEMFACTORY_BURN_QDOT: {e}; using f32 activations");
                    Acts::F32 {
                        simd: simd_available(),
                    }
                }
            }
        })
    }

    /// Parses a `MEMFACTORY_BURN_QDOT` value (see [`Acts::from_env`]).
    pub(crate) fn parse(v: &str) -> Result<Acts, String> {
        match v.trim() {
            "int8" => Ok(Acts::Int8(QdotPath::detect())),
            "" | "f32" => Ok(Acts::F32 {
                simd: simd_available(),
            }),
            other => match QdotPath::ALL.into_iter().find(|p| p.name() == other) {
                Some(p) if p.available() => Ok(Acts::Int8(p)),
                Some(p) => Err(format!("this CPU cannot run `{}`", p.name())),
                None => Err(format!(
                    "unknown value `{other}` (expected int8, f32, scalar, avx2, avxvnni or avx512vnni)"
                )),
            },
        }
    }
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 32;

fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

impl HostMat {
    /// Quant bytes per block.
    pub(crate) fn qbytes(&self) -> usize {
        if self.four_bit { 16 } else { 32 }
    }

    /// Wraps raw blocks when `ty` has a kernel here and the sizes agree.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Option<HostMat> {
        let supported = matches!(ty, GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q4_0);
        if !supported
            || !cols.is_multiple_of(32)
            || data.len() != rows * cols / 32 * ty.block_bytes()
        {
            return None;
        }
        let nblocks = rows * cols / 32;
        let four_bit = ty != GgmlType::Q8_0;
        let mut qs = Vec::with_capacity(nblocks * if four_bit { 16 } else { 32 });
        let mut scale = Vec::with_capacity(nblocks);
        let mut min = Vec::with_capacity(nblocks);
        for blk in data.chunks_exact(ty.block_bytes()) {
            scale.push(f16(blk, 0));
            match ty {
                GgmlType::Q4_1 => {
                    min.push(f16(blk, 2));
                    qs.extend_from_slice(&blk[4..20]);
                }
                GgmlType::Q4_0 => {
                    min.push(0.0);
                    qs.extend_from_slice(&blk[2..18]);
                }
                _ => {
                    min.push(0.0);
                    qs.extend_from_slice(&blk[2..34]);
                }
            }
        }
        Some(HostMat {
            rows,
            cols,
            four_bit,
            offset: if ty == GgmlType::Q4_0 { 8 } else { 0 },
            qs,
            scale,
            min,
        })
    }

    /// Stacks matrices with the same format and width by rows.
    pub fn stack(mats: Vec<HostMat>) -> Option<HostMat> {
        let first = mats.first()?;
        let (four_bit, offset, cols) = (first.four_bit, first.offset, first.cols);
        if mats
            .iter()
            .any(|m| m.four_bit != four_bit || m.offset != offset || m.cols != cols)
        {
            return None;
        }
        let mut out = HostMat {
            rows: 0,
            cols,
            four_bit,
            offset,
            qs: Vec::new(),
            scale: Vec::new(),
            min: Vec::new(),
        };
        for m in mats {
            out.rows += m.rows;
            out.qs.extend(m.qs);
            out.scale.extend(m.scale);
            out.min.extend(m.min);
        }
        Some(out)
    }

    /// `y = x · Wᵀ` for `x` `[m, in]` (row-major, `m ≤ HOST_MAX_ROWS`), returning `[m, out]`.
    /// Activations as [`Acts::from_env`] says (f32 by default).
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_t_acts(x, m, Acts::from_env())
    }

    /// [`HostMat::matmul_t`] with f32 activations, the SIMD variant chosen by the caller.
    #[cfg(test)]
    fn matmul_t_with(&self, x: &[f32], m: usize, simd: bool) -> Vec<f32> {
        self.matmul_t_acts(x, m, Acts::F32 { simd })
    }

    /// [`HostMat::matmul_t`] with the activation treatment chosen by the caller.
    pub(crate) fn matmul_t_acts(&self, x: &[f32], m: usize, acts: Acts) -> Vec<f32> {
        assert!(
            m <= HOST_MAX_ROWS && x.len() == m * self.cols,
            "host matmul shape"
        );
        let n = self.rows;
        let mut out_t = vec![0f32; n * m]; // [out, m]
        match acts {
            #[cfg(target_arch = "x86_64")]
            Acts::F32 { simd: true } if m == 1 && avx512_available() => {
                // The block sums of `x` once for the whole product.
                let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
                out_t
                    .par_chunks_mut(ROWS_PER_TASK)
                    .enumerate()
                    .for_each(|(task, chunk)| {
                        avx512::rows1(self, task * ROWS_PER_TASK, chunk, x, &xsum)
                    })
            }
            Acts::F32 { simd } => out_t
                .par_chunks_mut(ROWS_PER_TASK * m)
                .enumerate()
                .for_each(|(task, chunk)| {
                    rows_dispatch(self, task * ROWS_PER_TASK, chunk, x, m, simd)
                }),
            Acts::Int8(path) => {
                let a = QActs::quantize(x, self.cols);
                out_t
                    .par_chunks_mut(ROWS_PER_TASK * m)
                    .enumerate()
                    .for_each(|(task, chunk)| {
                        qdot::rows(self, task * ROWS_PER_TASK, chunk, &a, m, path)
                    })
            }
        }
        if m == 1 {
            return out_t;
        }
        let mut out = vec![0f32; m * n];
        for r in 0..n {
            for b in 0..m {
                out[b * n + r] = out_t[r * m + b];
            }
        }
        out
    }
}

/// Output rows (weight rows) per tile of [`HostMat::matmul_t_gemm`].
const GEMM_TILE: usize = 64;

impl HostMat {
    /// Weight rows `r0 ..` dequantized into `out` (`[out.len() / cols, cols]` row-major):
    /// the same f32 values as [`crate::quant::dequantize`] gives for these blocks.
    pub(crate) fn dequant_rows(&self, r0: usize, out: &mut [f32]) {
        let nb = self.cols / 32;
        let qb = self.qbytes();
        for (bi, wb) in out.chunks_exact_mut(32).enumerate() {
            let idx = r0 * nb + bi;
            let (d, mv) = (self.scale[idx], self.min[idx]);
            let q = &self.qs[idx * qb..(idx + 1) * qb];
            if self.four_bit {
                for j in 0..16 {
                    wb[j] = ((q[j] & 0xF) as i32 - self.offset) as f32 * d + mv;
                    wb[j + 16] = ((q[j] >> 4) as i32 - self.offset) as f32 * d + mv;
                }
            } else {
                for j in 0..32 {
                    wb[j] = (q[j] as i8) as f32 * d;
                }
            }
        }
    }

    /// The whole weight as f32, `[rows, cols]` row-major.
    pub(crate) fn dequantize_all(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(GEMM_TILE * self.cols)
            .enumerate()
            .for_each(|(t, o)| self.dequant_rows(t * GEMM_TILE, o));
        out
    }

    /// `y = x · Wᵀ` for gemm-sized `x` `[m, in]`, returning `[m, out]`: tiles of
    /// [`GEMM_TILE`] weight rows dequantized into a per-thread buffer (a few hundred KB, in
    /// cache) and multiplied by gemm, the tiles in parallel. No f32 copy of the weight is
    /// kept; each product dequantizes it once, which costs about one `m = 10` product's
    /// worth of arithmetic per weight.
    #[allow(unsafe_code)]
    pub(crate) fn matmul_t_gemm(&self, x: &[f32], m: usize) -> Vec<f32> {
        /// The output buffer, shared by the tile tasks (each writes its own columns).
        struct Dst(*mut f32);
        // SAFETY: tasks write disjoint elements (see below); the buffer outlives them.
        unsafe impl Send for Dst {}
        unsafe impl Sync for Dst {}
        impl Dst {
            fn at(&self, off: usize) -> *mut f32 {
                self.0.wrapping_add(off)
            }
        }
        let (n, k) = (self.rows, self.cols);
        assert_eq!(x.len(), m * k, "host gemm shape");
        let mut out = vec![0f32; m * n];
        let dst = Dst(out.as_mut_ptr());
        (0..n.div_ceil(GEMM_TILE)).into_par_iter().for_each_init(
            || vec![0f32; GEMM_TILE * k],
            |w, t| {
                let (r0, r1) = (t * GEMM_TILE, ((t + 1) * GEMM_TILE).min(n));
                let w = &mut w[..(r1 - r0) * k];
                self.dequant_rows(r0, w);
                // SAFETY: columns `r0..r1` of every one of the `m` rows (stride `n`) lie
                // inside `out` (r1 ≤ n), which nothing else reads or writes until every
                // task is done; tiles of different tasks are disjoint; `x` and `w` are
                // other buffers.
                unsafe {
                    crate::fused::matmul_to(
                        dst.at(r0),
                        n,
                        crate::fused::View::rows(x, 0, k),
                        crate::fused::View::rows(w, 0, k).t(),
                        (m, r1 - r0, k),
                    )
                }
            },
        );
        out
    }
}

/// Whether the AVX2 + FMA build of the kernels can run on this CPU.
pub(crate) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 build of the one-row kernel can run on this CPU.
pub(crate) fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && simd_available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn rows_dispatch(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], m: usize, simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // One row on AVX-512 never comes here: `matmul_t_acts` sends it to
        // `avx512::rows1` with the block sums of `x` made once per product.
        if avx512_available() {
            avx512::rows_m(h, r0, out, x, m);
        } else {
            avx2::rows(h, r0, out, x, m);
        }
        return;
    }
    let _ = simd;
    rows_portable(h, r0, out, x, m)
}

/// Output rows `r0..` of `out` (`[rows, m]`) in portable Rust: dequantize each weight row
/// once, then dot it with every row of `x`.
fn rows_portable(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], m: usize) {
    let k = h.cols;
    let mut w = vec![0f32; k];
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        h.dequant_rows(r0 + i, &mut w);
        for (b, ob) in o.iter_mut().enumerate() {
            let xr = &x[b * k..(b + 1) * k];
            let mut acc = [0f32; 8];
            for (wc, xc) in w.chunks_exact(8).zip(xr.chunks_exact(8)) {
                for j in 0..8 {
                    acc[j] += wc[j] * xc[j];
                }
            }
            *ob = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
    }
}

/// The same kernel with AVX2 + FMA intrinsics (the auto-vectorized portable loop gathers
/// bytes one by one and converts scalars: ~7× slower).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::HostMat;

    /// Safe entry point: checks the CPU once per call (cached by std), then runs the
    /// `target_feature` kernel.
    pub(super) fn rows(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], m: usize) {
        assert!(
            super::simd_available(),
            "AVX2 kernels on a CPU without AVX2/FMA"
        );
        assert!(m > 0 && out.len().is_multiple_of(m) && x.len() >= m * h.cols);
        assert!(r0 + out.len() / m <= h.rows);
        // SAFETY: AVX2 and FMA are present (checked above), which is all the
        // `target_feature` function requires; its slice accesses are bounds-checked.
        unsafe { rows_avx2(h, r0, out, x, m) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn rows_avx2(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], m: usize) {
        let k = h.cols;
        let nb = k / 32;
        let qb = if h.four_bit { 16 } else { 32 };
        if m == 1 {
            // One row of x: Σ (d·(q − o) + m)·x = d·Σ q·x + (m − o·d)·Σ x per block, the
            // integer quants converted and multiplied straight from the block.
            let xsum: Vec<f32> = x[..k].chunks_exact(32).map(|c| c.iter().sum()).collect();
            for (i, o) in out.iter_mut().enumerate() {
                let r = r0 + i;
                let qs = &h.qs[r * nb * qb..(r + 1) * nb * qb];
                let sc = &h.scale[r * nb..(r + 1) * nb];
                let mn = &h.min[r * nb..(r + 1) * nb];
                let mut acc = [_mm256_setzero_ps(); 2];
                let mut add = 0f32;
                for bi in 0..nb {
                    let xb = &x[bi * 32..bi * 32 + 32];
                    let t = if h.four_bit {
                        qdot4(&qs[bi * 16..bi * 16 + 16], xb)
                    } else {
                        qdot8(&qs[bi * 32..bi * 32 + 32], xb)
                    };
                    acc[bi & 1] = _mm256_fmadd_ps(_mm256_set1_ps(sc[bi]), t, acc[bi & 1]);
                    add += (mn[bi] - h.offset as f32 * sc[bi]) * xsum[bi];
                }
                *o = hsum(_mm256_add_ps(acc[0], acc[1])) + add;
            }
            return;
        }
        let mut w = vec![0f32; k];
        for (i, o) in out.chunks_exact_mut(m).enumerate() {
            let r = r0 + i;
            let qs = &h.qs[r * nb * qb..(r + 1) * nb * qb];
            let sc = &h.scale[r * nb..(r + 1) * nb];
            let mn = &h.min[r * nb..(r + 1) * nb];
            for (bi, wb) in w.chunks_exact_mut(32).enumerate() {
                let v = if h.four_bit {
                    block4(&qs[bi * 16..bi * 16 + 16], sc[bi], mn[bi], h.offset)
                } else {
                    block8(&qs[bi * 32..bi * 32 + 32], sc[bi])
                };
                for (c, vv) in wb.chunks_exact_mut(8).zip(v) {
                    store8(c, vv);
                }
            }
            for (b, ob) in o.iter_mut().enumerate() {
                *ob = dot(&w, &x[b * k..(b + 1) * k]);
            }
        }
    }

    /// Loads 8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load8(s: &[f32]) -> __m256 {
        assert!(s.len() >= 8);
        // SAFETY: 8 readable f32 (checked); unaligned load.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// Stores 8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn store8(s: &mut [f32], v: __m256) {
        assert!(s.len() >= 8);
        // SAFETY: 8 writable f32 (checked); unaligned store.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }

    /// `(q − off)·d + m` for 8 bytes of `b`'s low half as floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn deq8(b: __m128i, off: __m256i, d: __m256, m: __m256, add: bool) -> __m256 {
        let i = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), off);
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(i), d);
        // Multiply then add, as the dequantizer does, so the weights are bit-identical.
        if add { _mm256_add_ps(f, m) } else { f }
    }

    /// One Q4_0 / Q4_1 block (16 bytes) as 32 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block4(q: &[u8], d: f32, m: f32, off: i32) -> [__m256; 4] {
        assert!(q.len() == 16);
        // SAFETY: 16 readable bytes (checked); unaligned load.
        let v = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
        let (o, dv, mv) = (_mm256_set1_epi32(off), _mm256_set1_ps(d), _mm256_set1_ps(m));
        let add = off == 0;
        [
            deq8(lo, o, dv, mv, add),
            deq8(_mm_srli_si128::<8>(lo), o, dv, mv, add),
            deq8(hi, o, dv, mv, add),
            deq8(_mm_srli_si128::<8>(hi), o, dv, mv, add),
        ]
    }

    /// One Q8_0 block (32 signed bytes) as 32 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block8(q: &[u8], d: f32) -> [__m256; 4] {
        assert!(q.len() == 32);
        let dv = _mm256_set1_ps(d);
        let mut out = [_mm256_setzero_ps(); 4];
        for (o, c) in out.iter_mut().zip(q.chunks_exact(8)) {
            // SAFETY: 8 readable bytes (`chunks_exact(8)`); unaligned 64-bit load.
            let b = unsafe { _mm_loadl_epi64(c.as_ptr().cast()) };
            *o = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), dv);
        }
        out
    }

    /// `Σ qᵢ·xᵢ` over one 4-bit block (16 bytes, unsigned nibbles), as 8 lane sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn qdot4(q: &[u8], x: &[f32]) -> __m256 {
        assert!(q.len() == 16 && x.len() == 32);
        // SAFETY: 16 readable bytes (checked); unaligned load.
        let v = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
        let f = |b: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
        let t = _mm256_mul_ps(f(lo), load8(&x[0..]));
        let t = _mm256_fmadd_ps(f(_mm_srli_si128::<8>(lo)), load8(&x[8..]), t);
        let t = _mm256_fmadd_ps(f(hi), load8(&x[16..]), t);
        _mm256_fmadd_ps(f(_mm_srli_si128::<8>(hi)), load8(&x[24..]), t)
    }

    /// `Σ qᵢ·xᵢ` over one Q8_0 block (32 signed bytes), as 8 lane sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn qdot8(q: &[u8], x: &[f32]) -> __m256 {
        assert!(q.len() == 32 && x.len() == 32);
        let mut t = _mm256_setzero_ps();
        for (j, c) in q.chunks_exact(8).enumerate() {
            // SAFETY: 8 readable bytes (`chunks_exact(8)`); unaligned 64-bit load.
            let b = unsafe { _mm_loadl_epi64(c.as_ptr().cast()) };
            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            t = _mm256_fmadd_ps(f, load8(&x[8 * j..]), t);
        }
        t
    }

    /// Sum of the 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(s: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h));
        _mm_cvtss_f32(h)
    }

    /// `Σ wᵢ·xᵢ` (lengths multiples of 32) in four FMA chains.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn dot(w: &[f32], x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (wc, xc) in w.chunks_exact(32).zip(x.chunks_exact(32)) {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(load8(&wc[8 * j..]), load8(&xc[8 * j..]), *a);
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }
}

/// The one-row (decode) kernel with AVX-512: a block's 16 or 32 quants widened to 16 lanes
/// at a time (`vpmovzxbd` / `vpmovsxbd` on 512-bit registers), so each block costs two
/// conversions and two multiply-adds instead of four of each; two accumulators in registers;
/// the blocks' additive terms (`m − o·d`, times the block sums of `x`) in one vector pass per
/// row afterwards. Same sums as the AVX2 kernel up to summation order.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::HostMat;

    /// Safe entry point: checks the CPU and the shapes, then runs the `target_feature` kernel.
    /// Rows `r0 .. r0 + out.len()` of `h · x`, given `xsum`, the sums of `x`'s 32-blocks.
    pub(super) fn rows1(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], xsum: &[f32]) {
        assert!(
            super::avx512_available(),
            "AVX-512 kernel on a CPU without it"
        );
        let k = h.cols;
        let nb = k / 32;
        assert!(k.is_multiple_of(32) && x.len() >= k && xsum.len() >= nb);
        assert!(r0 + out.len() <= h.rows && h.qs.len() >= h.rows * nb * h.qbytes());
        assert!(h.scale.len() >= h.rows * nb && h.min.len() >= h.rows * nb);
        // SAFETY: AVX-512F, AVX2 and FMA are present (checked above); every pointer the
        // kernel reads lies inside the slices whose lengths were checked above (rows
        // `r0 .. r0 + out.len()` of `h`, `k` values of `x`, `nb` block sums).
        unsafe { rows1_avx512(h, r0, out, x, xsum) }
    }

    /// How far ahead of the current row the quant bytes are prefetched.
    const PREFETCH_BYTES: usize = 2048;
    /// How far ahead the scales and mins are prefetched.
    const PREFETCH_SCALES: usize = 512;

    /// Rows `r0 .. r0 + out.len() / m` of `x · hᵀ` for `m` rows of `x` (`out` `[rows, m]`):
    /// each weight block dequantized once into two registers and multiplied into up to 8
    /// rows' accumulators at a time.
    pub(super) fn rows_m(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], m: usize) {
        assert!(
            super::avx512_available(),
            "AVX-512 kernel on a CPU without it"
        );
        let k = h.cols;
        let nb = k / 32;
        assert!(m > 0 && k.is_multiple_of(32) && x.len() >= m * k);
        assert!(out.len().is_multiple_of(m) && r0 + out.len() / m <= h.rows);
        assert!(h.qs.len() >= h.rows * nb * h.qbytes());
        assert!(h.scale.len() >= h.rows * nb && h.min.len() >= h.rows * nb);
        // SAFETY: AVX-512F, AVX2 and FMA are present (checked above); the kernel reads rows
        // `r0 ..` of `h` and `m` rows of `x`, all inside the lengths checked above.
        unsafe { rows_m_avx512(h, r0, out, x, m) }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rows_m_avx512(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], m: usize) {
        let nb = h.cols / 32;
        let qb = h.qbytes();
        for (i, o) in out.chunks_exact_mut(m).enumerate() {
            let r = r0 + i;
            // SAFETY: row `r` is in bounds (checked by `rows_m`); prefetches never fault.
            unsafe {
                let q = h.qs.as_ptr().add(r * nb * qb);
                for l in (0..nb * qb).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH_BYTES + l).cast());
                }
            }
            let mut g0 = 0;
            while g0 < m {
                let g = (m - g0).min(8);
                let o = &mut o[g0..g0 + g];
                // SAFETY: rows `g0 .. g0 + g` of `x` exist (`g0 + g ≤ m`), row `r` of `h`
                // is in bounds (checked by `rows_m`).
                unsafe {
                    match g {
                        1 => group::<1>(h, r, x, g0, o),
                        2 => group::<2>(h, r, x, g0, o),
                        3 => group::<3>(h, r, x, g0, o),
                        4 => group::<4>(h, r, x, g0, o),
                        5 => group::<5>(h, r, x, g0, o),
                        6 => group::<6>(h, r, x, g0, o),
                        7 => group::<7>(h, r, x, g0, o),
                        _ => group::<8>(h, r, x, g0, o),
                    }
                }
                g0 += g;
            }
        }
    }

    /// Weight row `r` against rows `g0 .. g0 + G` of `x`, into `o` (`G` values).
    #[inline(always)]
    unsafe fn group<const G: usize>(h: &HostMat, r: usize, x: &[f32], g0: usize, o: &mut [f32]) {
        let k = h.cols;
        let nb = k / 32;
        let qb = h.qbytes();
        // SAFETY (whole body): as documented by the callers: row `r` of `h` and rows
        // `g0 .. g0 + G` of `x` are in bounds.
        unsafe {
            let q = h.qs.as_ptr().add(r * nb * qb);
            let sc = h.scale.as_ptr().add(r * nb);
            let mn = h.min.as_ptr().add(r * nb);
            let xp = x.as_ptr().add(g0 * k);
            let mask = _mm_set1_epi8(0x0F);
            let off = _mm512_set1_epi32(h.offset);
            let mut acc = [_mm512_setzero_ps(); G];
            for bi in 0..nb {
                let d = _mm512_set1_ps(*sc.add(bi));
                let (w0, w1) = if h.four_bit {
                    let v = _mm_loadu_si128(q.add(bi * 16).cast());
                    let lo = _mm_and_si128(v, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
                    let mv = _mm512_set1_ps(*mn.add(bi));
                    // (q − o)·d + m, multiply then add, as the dequantizer does.
                    let w = |b: __m128i| {
                        let i = _mm512_sub_epi32(_mm512_cvtepu8_epi32(b), off);
                        _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i), d), mv)
                    };
                    (w(lo), w(hi))
                } else {
                    let b0 = _mm_loadu_si128(q.add(bi * 32).cast());
                    let b1 = _mm_loadu_si128(q.add(bi * 32 + 16).cast());
                    (
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b0)), d),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b1)), d),
                    )
                };
                for (b, a) in acc.iter_mut().enumerate() {
                    let xb = xp.add(b * k + bi * 32);
                    *a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), *a);
                    *a = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb.add(16)), *a);
                }
            }
            for (ob, a) in o.iter_mut().zip(acc) {
                *ob = _mm512_reduce_add_ps(a);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rows1_avx512(h: &HostMat, r0: usize, out: &mut [f32], x: &[f32], xsum: &[f32]) {
        let nb = h.cols / 32;
        let qb = h.qbytes();
        let xp = x.as_ptr();
        let off = h.offset as f32;
        let mask = _mm_set1_epi8(0x0F);
        for (i, o) in out.iter_mut().enumerate() {
            let r = r0 + i;
            // SAFETY (whole block): row `r` < h.rows, so its `nb` blocks of `qb` quant bytes,
            // `nb` scales and `nb` mins are in bounds (checked by `rows1`); `x` has `32·nb`
            // values; the tail loads are masked to the `nb` blocks.
            unsafe {
                let q = h.qs.as_ptr().add(r * nb * qb);
                let sc = h.scale.as_ptr().add(r * nb);
                let mn = h.min.as_ptr().add(r * nb);
                let mut acc = [_mm512_setzero_ps(), _mm512_setzero_ps()];
                // The next rows' blocks are requested ahead (L3 latency, not bandwidth, bounds
                // one core's stream; prefetching never faults, hence `wrapping_add`).
                for l in (0..nb * qb).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH_BYTES + l).cast());
                }
                for l in (0..nb * 4).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(sc.cast::<i8>().wrapping_add(PREFETCH_SCALES + l));
                    _mm_prefetch::<_MM_HINT_T0>(mn.cast::<i8>().wrapping_add(PREFETCH_SCALES + l));
                }
                for bi in 0..nb {
                    let (x0, x1) = (
                        _mm512_loadu_ps(xp.add(bi * 32)),
                        _mm512_loadu_ps(xp.add(bi * 32 + 16)),
                    );
                    let (w0, w1) = if h.four_bit {
                        let v = _mm_loadu_si128(q.add(bi * 16).cast());
                        let lo = _mm_and_si128(v, mask);
                        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
                        (
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)),
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)),
                        )
                    } else {
                        let b0 = _mm_loadu_si128(q.add(bi * 32).cast());
                        let b1 = _mm_loadu_si128(q.add(bi * 32 + 16).cast());
                        (
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b0)),
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b1)),
                        )
                    };
                    let p = _mm512_fmadd_ps(w1, x1, _mm512_mul_ps(w0, x0));
                    let j = bi & 1;
                    acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(*sc.add(bi)), p, acc[j]);
                }
                let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
                if h.four_bit {
                    // Σ (m − o·d)·Σx over the row's blocks, 16 blocks a step.
                    let mut add = _mm512_setzero_ps();
                    let ov = _mm512_set1_ps(off);
                    for b0 in (0..nb).step_by(16) {
                        let n = (nb - b0).min(16);
                        let lanes: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
                        let d = _mm512_maskz_loadu_ps(lanes, sc.add(b0));
                        let m = _mm512_maskz_loadu_ps(lanes, mn.add(b0));
                        let s = _mm512_maskz_loadu_ps(lanes, xsum.as_ptr().add(b0));
                        add = _mm512_fmadd_ps(_mm512_fnmadd_ps(ov, d, m), s, add);
                    }
                    sum += _mm512_reduce_add_ps(add);
                }
                *o = sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    fn blocks(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
        let bb = ty.block_bytes();
        let mut v = Vec::new();
        for b in 0..rows * cols / 32 {
            let mut blk = vec![0u8; bb];
            blk[0..2]
                .copy_from_slice(&half::f16::from_f32(0.01 * (b % 7) as f32 + 0.02).to_le_bytes());
            let qs_at = if ty == GgmlType::Q4_1 {
                blk[2..4]
                    .copy_from_slice(&half::f16::from_f32(-0.05 * (b % 3) as f32).to_le_bytes());
                4
            } else {
                2
            };
            for (j, q) in blk[qs_at..].iter_mut().enumerate() {
                *q = ((j * 37 + b * 11) % 256) as u8;
            }
            v.extend(blk);
        }
        v
    }

    #[test]
    fn gemm_sized_products_on_blocks_match_the_dequantized_weights() {
        // Tiles of 64 weight rows: 150 rows are two full tiles and a tail of 22; m = 17 and
        // 100 are gemm-sized. The dequantized rows are exactly the loader's f32 values.
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols) = (150, 96);
            let data = blocks(ty, rows, cols);
            let w = dequantize(ty, &data, rows * cols).unwrap();
            let h = HostMat::new(ty, rows, cols, data).unwrap();
            assert_eq!(h.dequantize_all(), w, "{ty:?}");
            for m in [17, 100] {
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let y = h.matmul_t_gemm(&x, m);
                for b in 0..m {
                    for r in 0..rows {
                        let terms =
                            (0..cols).map(|c| x[b * cols + c] as f64 * w[r * cols + c] as f64);
                        let want: f64 = terms.clone().sum();
                        // f32 rounding of a sum in any order: a few ulps of Σ|terms|.
                        let scale: f64 = terms.map(f64::abs).sum();
                        let got = y[b * rows + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * scale,
                            "{ty:?} m {m} row {b} out {r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_match_dequantized_matmul() {
        let simd_variants: &[bool] = if simd_available() {
            &[false, true]
        } else {
            &[false]
        };
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            // 96 columns: 3 blocks (a masked tail in the AVX-512 kernel's block-term pass);
            // 576: 18 (a full pass of 16, then a tail of 2).
            // m = 3 and 16: one and two groups of the AVX-512 multi-row kernel (8 rows each).
            for (m, cols) in [(1, 96), (1, 576), (3, 96), (HOST_MAX_ROWS, 96), (11, 576)] {
                let rows = 70;
                let data = blocks(ty, rows, cols);
                let w = dequantize(ty, &data, rows * cols).unwrap();
                let hm = HostMat::new(ty, rows, cols, data).unwrap();
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 13) % 17) as f32 / 17.0 - 0.4)
                    .collect();
                // Each kernel: portable, and the SIMD one this CPU picks (AVX-512 where
                // present, then AVX2 — called directly here too).
                let mut variants: Vec<(&str, Vec<f32>)> = simd_variants
                    .iter()
                    .map(|&simd| {
                        (
                            if simd { "simd" } else { "portable" },
                            hm.matmul_t_with(&x, m, simd),
                        )
                    })
                    .collect();
                #[cfg(target_arch = "x86_64")]
                if simd_available() && avx512_available() {
                    let mut y = vec![0f32; rows * m];
                    avx2::rows(&hm, 0, &mut y, &x, m);
                    // `[rows, m]` → `[m, rows]`, as `matmul_t` returns.
                    let y = (0..m * rows)
                        .map(|i| y[(i % rows) * m + i / rows])
                        .collect();
                    variants.push(("avx2 (called directly)", y));
                }
                for (simd, y) in variants {
                    for b in 0..m {
                        for r in 0..rows {
                            let want: f32 =
                                (0..cols).map(|c| x[b * cols + c] * w[r * cols + c]).sum();
                            let got = y[b * rows + r];
                            assert!(
                                (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                "{ty:?} m {m} simd {simd} [{b},{r}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn row_dequantization_is_the_dequantizers() {
        // The dequantized row must equal `dequantize` bit for bit: a one-hot x picks one weight.
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols) = (4, 64);
            let data = blocks(ty, rows, cols);
            let w = dequantize(ty, &data, rows * cols).unwrap();
            let hm = HostMat::new(ty, rows, cols, data).unwrap();
            for c in [0, 5, 17, 31, 32, 63] {
                let mut x = vec![0f32; cols];
                x[c] = 1.0;
                let y = hm.matmul_t_with(&x, 1, simd_available());
                for r in 0..rows {
                    assert_eq!(
                        y[r].to_bits(),
                        w[r * cols + c].to_bits(),
                        "{ty:?} [{r},{c}]"
                    );
                }
            }
        }
    }
}
