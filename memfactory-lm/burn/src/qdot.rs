//! Integer decode kernels: activations quantised per 32-block to int8, integer dot products
//! against the GGUF's Q4_0 / Q4_1 / Q8_0 blocks (the weights of a [`HostMat`]).
//!
//! This is llama.cpp's CPU decode scheme (`quantize_row_q8_1_ref`, `ggml_vec_dot_q4_0_q8_0`,
//! `ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q8_0_q8_0` in ggml/src/ggml-cpu/quants.c and
//! arch/x86/quants.c of ggml-org/llama.cpp@b6a5ae3): each 32-value block of an activation row
//! `x` becomes `d·q` with `d = max|x|/127`, `q = round(x/d)` in −127…127 and `s = d·Σq`, so a
//! weight block `w = dw·(qw − o) + m` contributes
//!
//! `dw·d·Σ qw·q  +  (m − o·dw)·s`
//!
//! where `Σ qw·q` is an exact integer. Unlike llama.cpp, `d` and `s` are kept in f32 (ggml
//! rounds them to f16), so the only rounding is that of the int8 quants themselves.
//!
//! The integer sums run on the best instruction set the CPU reports at run time
//! ([`QdotPath::detect`]): AVX-512 VNNI (+VL) or AVX-VNNI (`vpdpbusd` on 256-bit lanes),
//! AVX2 (`vpmaddubsw` + `vpmaddwd`), or a portable scalar loop. Every path computes the same
//! per-block integers (tested); they differ only in the order the f32 block terms are summed.
//!
//! Used by [`HostMat`] products when `MEMFACTORY_BURN_QDOT=int8` (or a path name) is set;
//! the default stays f32 activations (see `kernels::Acts`).
//!
//! Error bound against the f32-activation kernels (tested in `tests`): rounding moves each
//! activation by at most `d/2`, so a block's error is at most `(d/2)·Σ|w|` and a row's at
//! most `Σ_blocks (d_b/2)·Σ_{j∈b}|w_j|` (plus f32 summation error).

use crate::kernels::HostMat;

/// Which implementation computes the integer block sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QdotPath {
    /// Portable Rust.
    Scalar,
    /// AVX2: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// AVX-VNNI: 256-bit `vpdpbusd` (VEX encoding).
    AvxVnni,
    /// AVX-512 VNNI with VL: 256-bit `vpdpbusd` (EVEX encoding).
    Avx512Vnni,
}

impl QdotPath {
    /// All paths, best first.
    pub const ALL: [QdotPath; 4] = [
        QdotPath::Avx512Vnni,
        QdotPath::AvxVnni,
        QdotPath::Avx2,
        QdotPath::Scalar,
    ];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            match self {
                QdotPath::Scalar => true,
                QdotPath::Avx2 => has!("avx2") && has!("fma"),
                QdotPath::AvxVnni => has!("avx2") && has!("fma") && has!("avxvnni"),
                QdotPath::Avx512Vnni => {
                    has!("avx2") && has!("fma") && has!("avx512vnni") && has!("avx512vl")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == QdotPath::Scalar
        }
    }

    /// The best path this CPU can run.
    pub fn detect() -> QdotPath {
        QdotPath::ALL
            .into_iter()
            .find(|p| p.available())
            .unwrap_or(QdotPath::Scalar)
    }

    /// The name used by `MEMFACTORY_BURN_QDOT`.
    pub fn name(self) -> &'static str {
        match self {
            QdotPath::Scalar => "scalar",
            QdotPath::Avx2 => "avx2",
            QdotPath::AvxVnni => "avxvnni",
            QdotPath::Avx512Vnni => "avx512vnni",
        }
    }
}

/// Rows of activations quantised per 32-block (llama.cpp's `block_q8_1`, with f32 `d`, `s`).
#[derive(Debug, Clone)]
pub struct QActs {
    /// Values per row (a multiple of 32).
    pub k: usize,
    /// The int8 quants, `[m, k]`.
    pub qs: Vec<i8>,
    /// Per block: the scale `d`.
    pub d: Vec<f32>,
    /// Per block: `d·Σq`.
    pub s: Vec<f32>,
}

impl QActs {
    /// Quantises `x` (`[m, k]` row-major, `k` a multiple of 32): per block `d = max|x|/127`,
    /// `q = round(x/d)` (half away from zero, as `roundf`), all-zero blocks get `d = 0`.
    pub fn quantize(x: &[f32], k: usize) -> QActs {
        assert!(k.is_multiple_of(32) && x.len().is_multiple_of(k.max(1)));
        let nb = x.len() / 32;
        let mut qs = vec![0i8; x.len()];
        let mut d = Vec::with_capacity(nb);
        let mut s = Vec::with_capacity(nb);
        for (xb, qb) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)) {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let db = amax / 127.0;
            let id = if db != 0.0 { 1.0 / db } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in qb.iter_mut().zip(xb) {
                // |v·id| ≤ 127 (up to rounding of `id`, clamped), so the cast is exact.
                *q = (v * id).round().clamp(-127.0, 127.0) as i8;
                sum += *q as i32;
            }
            d.push(db);
            s.push(db * sum as f32);
        }
        QActs { k, qs, d, s }
    }
}

/// `Σ qw·qa` over one block: `qw` 16 bytes of nibbles (element `j` low nibble of byte `j`,
/// element `j+16` its high nibble) when `four_bit`, else 32 signed bytes. The reference.
pub fn block_isum_scalar(four_bit: bool, qw: &[u8], qa: &[i8]) -> i32 {
    assert!(qa.len() == 32);
    if four_bit {
        assert!(qw.len() == 16);
        (0..16)
            .map(|j| (qw[j] & 0xF) as i32 * qa[j] as i32 + (qw[j] >> 4) as i32 * qa[j + 16] as i32)
            .sum()
    } else {
        assert!(qw.len() == 32);
        qw.iter()
            .zip(qa)
            .map(|(&w, &a)| (w as i8) as i32 * a as i32)
            .sum()
    }
}

/// The per-block integer sums of weight row `r` against activation row `b`, on `path`
/// (for tests: every path must give the scalar reference's integers).
#[cfg(test)]
pub fn block_isums(h: &HostMat, r: usize, a: &QActs, b: usize, path: QdotPath) -> Vec<i32> {
    assert!(path.available(), "{path:?} on a CPU without it");
    let nb = h.cols / 32;
    let qb = h.qbytes();
    let qw = &h.qs[r * nb * qb..(r + 1) * nb * qb];
    let qa = &a.qs[b * h.cols..(b + 1) * h.cols];
    (0..nb)
        .map(|bi| {
            let (w, x) = (&qw[bi * qb..(bi + 1) * qb], &qa[bi * 32..bi * 32 + 32]);
            match path {
                QdotPath::Scalar => block_isum_scalar(h.four_bit, w, x),
                #[cfg(target_arch = "x86_64")]
                _ => simd::block_isum(path, h.four_bit, w, x),
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("only the scalar path exists off x86-64"),
            }
        })
        .collect()
}

/// Output rows `r0..` of `out` (`[rows, m]`, `m = out.len() / rows`) for quantised
/// activations `a` (`m` rows), on `path`.
pub(crate) fn rows(h: &HostMat, r0: usize, out: &mut [f32], a: &QActs, m: usize, path: QdotPath) {
    assert!(m > 0 && out.len().is_multiple_of(m) && a.k == h.cols && a.qs.len() >= m * h.cols);
    assert!(r0 + out.len() / m <= h.rows);
    match path {
        QdotPath::Scalar => rows_scalar(h, r0, out, a, m),
        #[cfg(target_arch = "x86_64")]
        _ => simd::rows(h, r0, out, a, m, path),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the scalar path exists off x86-64"),
    }
}

fn rows_scalar(h: &HostMat, r0: usize, out: &mut [f32], a: &QActs, m: usize) {
    let k = h.cols;
    let nb = k / 32;
    let qb = h.qbytes();
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        let r = r0 + i;
        let qw = &h.qs[r * nb * qb..(r + 1) * nb * qb];
        let sc = &h.scale[r * nb..(r + 1) * nb];
        let mn = &h.min[r * nb..(r + 1) * nb];
        for (b, ob) in o.iter_mut().enumerate() {
            let qa = &a.qs[b * k..(b + 1) * k];
            let (da, sa) = (&a.d[b * nb..(b + 1) * nb], &a.s[b * nb..(b + 1) * nb]);
            let mut acc = 0f32;
            for bi in 0..nb {
                let isum = block_isum_scalar(
                    h.four_bit,
                    &qw[bi * qb..(bi + 1) * qb],
                    &qa[bi * 32..bi * 32 + 32],
                );
                acc += sc[bi] * da[bi] * isum as f32 + (mn[bi] - h.offset as f32 * sc[bi]) * sa[bi];
            }
            *ob = acc;
        }
    }
}

/// x86-64 intrinsics: one block's 32 products summed into 8 i32 lanes, then scaled in f32.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd {
    use std::arch::x86_64::*;

    use super::{HostMat, QActs, QdotPath};

    /// One block's integer sum on `path` (tests).
    #[cfg(test)]
    pub(super) fn block_isum(path: QdotPath, four_bit: bool, qw: &[u8], qa: &[i8]) -> i32 {
        assert!(path.available() && path != QdotPath::Scalar);
        assert!(qa.len() == 32 && qw.len() == if four_bit { 16 } else { 32 });
        // SAFETY: the CPU has the path's features (checked above), all the `target_feature`
        // functions need; their loads are on length-checked slices.
        unsafe {
            match path {
                QdotPath::Avx2 => hsum_i32_avx2(block_avx2(four_bit, qw, qa)),
                QdotPath::AvxVnni => hsum_i32_avx2(block_avxvnni(four_bit, qw, qa)),
                QdotPath::Avx512Vnni => hsum_i32_avx2(block_avx512vnni(four_bit, qw, qa)),
                QdotPath::Scalar => unreachable!(),
            }
        }
    }

    pub(super) fn rows(
        h: &HostMat,
        r0: usize,
        out: &mut [f32],
        a: &QActs,
        m: usize,
        path: QdotPath,
    ) {
        assert!(path.available(), "{path:?} on a CPU without it");
        // SAFETY: as in `block_isum`; shapes were checked by the caller (`super::rows`) and
        // every slice access inside is bounds-checked.
        unsafe {
            match path {
                QdotPath::Avx2 => rows_avx2(h, r0, out, a, m),
                QdotPath::AvxVnni => rows_avxvnni(h, r0, out, a, m),
                QdotPath::Avx512Vnni => rows_avx512vnni(h, r0, out, a, m),
                QdotPath::Scalar => unreachable!(),
            }
        }
    }

    /// Loads 16 bytes.
    #[inline(always)]
    fn load16(q: &[u8]) -> __m128i {
        assert!(q.len() >= 16);
        // SAFETY: 16 readable bytes (checked); unaligned load, SSE2 is baseline on x86-64.
        unsafe { _mm_loadu_si128(q.as_ptr().cast()) }
    }

    /// Loads 32 bytes.
    #[inline(always)]
    fn load32<T>(q: &[T]) -> __m256i {
        assert!(std::mem::size_of_val(q) >= 32);
        // SAFETY: 32 readable bytes (checked); unaligned load. Only called from functions
        // compiled with AVX2 enabled (`inline(always)` into them).
        unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
    }

    /// A 4-bit block's 16 bytes as 32 unsigned bytes in element order: low nibbles
    /// (elements 0..16) in the low lane, high nibbles (16..32) in the high lane.
    #[inline(always)]
    fn nibbles(qw: &[u8]) -> __m256i {
        let v = load16(qw);
        // SAFETY: only inlined into AVX2 (or wider) `target_feature` functions.
        unsafe {
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(v, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
            _mm256_set_m128i(hi, lo)
        }
    }

    /// `(unsigned weights, signed activations)` for a block: nibbles as they are, signed
    /// bytes through llama.cpp's sign trick `(|w|, a·sign(w))` (|−128| = 128 as unsigned).
    #[inline(always)]
    fn operands(four_bit: bool, qw: &[u8], qa: &[i8]) -> (__m256i, __m256i) {
        let a = load32(qa);
        if four_bit {
            (nibbles(qw), a)
        } else {
            let w = load32(qw);
            // SAFETY: only inlined into AVX2 (or wider) `target_feature` functions.
            unsafe { (_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block_avx2(four_bit: bool, qw: &[u8], qa: &[i8]) -> __m256i {
        let (u, s) = operands(four_bit, qw, qa);
        // u ≤ 128, |s| ≤ 127: pair sums ≤ 32 512, so `vpmaddubsw` never saturates.
        let p = _mm256_maddubs_epi16(u, s);
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,avxvnni")]
    fn block_avxvnni(four_bit: bool, qw: &[u8], qa: &[i8]) -> __m256i {
        let (u, s) = operands(four_bit, qw, qa);
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    fn block_avx512vnni(four_bit: bool, qw: &[u8], qa: &[i8]) -> __m256i {
        let (u, s) = operands(four_bit, qw, qa);
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }

    #[cfg(test)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum_i32_avx2(v: __m256i) -> i32 {
        let h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b01>(h));
        _mm_cvtsi128_si32(h)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum_f32(s: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h));
        _mm_cvtss_f32(h)
    }

    /// The row loop, generic over the block kernel; inlined into each `target_feature`
    /// wrapper below so the block kernel is compiled with that wrapper's features.
    #[inline(always)]
    fn rows_with(
        h: &HostMat,
        r0: usize,
        out: &mut [f32],
        a: &QActs,
        m: usize,
        block: impl Fn(bool, &[u8], &[i8]) -> __m256i,
    ) {
        let k = h.cols;
        let nb = k / 32;
        let qb = h.qbytes();
        for (i, o) in out.chunks_exact_mut(m).enumerate() {
            let r = r0 + i;
            let qw = &h.qs[r * nb * qb..(r + 1) * nb * qb];
            let sc = &h.scale[r * nb..(r + 1) * nb];
            let mn = &h.min[r * nb..(r + 1) * nb];
            for (b, ob) in o.iter_mut().enumerate() {
                let qa = &a.qs[b * k..(b + 1) * k];
                let (da, sa) = (&a.d[b * nb..(b + 1) * nb], &a.s[b * nb..(b + 1) * nb]);
                // SAFETY: only inlined into AVX2 (or wider) `target_feature` functions.
                unsafe {
                    let mut acc = [_mm256_setzero_ps(); 2];
                    let mut add = 0f32;
                    for bi in 0..nb {
                        let v = block(
                            h.four_bit,
                            &qw[bi * qb..(bi + 1) * qb],
                            &qa[bi * 32..bi * 32 + 32],
                        );
                        let f = _mm256_cvtepi32_ps(v);
                        let j = bi & 1;
                        acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(sc[bi] * da[bi]), f, acc[j]);
                        add += (mn[bi] - h.offset as f32 * sc[bi]) * sa[bi];
                    }
                    *ob = hsum_f32(_mm256_add_ps(acc[0], acc[1])) + add;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn rows_avx2(h: &HostMat, r0: usize, out: &mut [f32], a: &QActs, m: usize) {
        // The closure inherits this function's features, so the block kernel is safe to call.
        rows_with(h, r0, out, a, m, |f, w, x| block_avx2(f, w, x))
    }

    #[target_feature(enable = "avx2,fma,avxvnni")]
    fn rows_avxvnni(h: &HostMat, r0: usize, out: &mut [f32], a: &QActs, m: usize) {
        // The closure inherits this function's features, so the block kernel is safe to call.
        rows_with(h, r0, out, a, m, |f, w, x| block_avxvnni(f, w, x))
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    fn rows_avx512vnni(h: &HostMat, r0: usize, out: &mut [f32], a: &QActs, m: usize) {
        // The closure inherits this function's features, so the block kernel is safe to call.
        rows_with(h, r0, out, a, m, |f, w, x| block_avx512vnni(f, w, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Acts;
    use crate::quant::{GgmlType, dequantize};

    use memfactory_core::seed::SplitMix64 as Rng;

    /// `rows × cols` weights of type `ty` as GGUF blocks: random quants, with every fourth
    /// block at the extremes (all 15 nibbles / all −128 bytes) to catch saturation.
    fn blocks(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let mut v = Vec::new();
        for b in 0..rows * cols / 32 {
            let mut blk = vec![0u8; ty.block_bytes()];
            let d = 0.01 + 0.05 * (rng.signed_unit().abs());
            blk[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            let at = if ty == GgmlType::Q4_1 {
                blk[2..4]
                    .copy_from_slice(&half::f16::from_f32(-0.3 * rng.signed_unit()).to_le_bytes());
                4
            } else {
                2
            };
            for q in &mut blk[at..] {
                *q = match (b % 4, ty) {
                    (0, GgmlType::Q8_0) => 0x80,
                    (0, _) => 0xFF,
                    _ => rng.next_u64() as u8,
                };
            }
            v.extend(blk);
        }
        v
    }

    /// `m × k` activations with heavy-tailed rows; some blocks all zero, some with a ±max
    /// pair so quants hit ±127.
    fn acts(m: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
        let mut x: Vec<f32> = (0..m * k)
            .map(|_| rng.signed_unit() * rng.signed_unit() * 3.0)
            .collect();
        for (bi, b) in x.chunks_exact_mut(32).enumerate() {
            match bi % 5 {
                0 => b.fill(0.0),
                1 => {
                    b[3] = 7.5;
                    b[20] = -7.5;
                }
                2 => b.fill(-0.75),
                _ => {}
            }
        }
        x
    }

    const TYPES: [GgmlType; 3] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0];

    fn paths() -> Vec<QdotPath> {
        let p: Vec<QdotPath> = QdotPath::ALL
            .into_iter()
            .filter(|p| p.available())
            .collect();
        println!("paths on this CPU: {p:?}");
        p
    }

    #[test]
    fn quantisation_is_within_half_a_step() {
        let mut rng = Rng(1);
        let x = acts(3, 128, &mut rng);
        let a = QActs::quantize(&x, 128);
        for (bi, xb) in x.chunks_exact(32).enumerate() {
            let (d, qb) = (a.d[bi], &a.qs[bi * 32..bi * 32 + 32]);
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(d, amax / 127.0);
            let sum: i32 = qb.iter().map(|&q| q as i32).sum();
            assert_eq!(a.s[bi], d * sum as f32);
            for (&q, &v) in qb.iter().zip(xb) {
                assert!((-127..=127).contains(&q));
                assert!(
                    (d * q as f32 - v).abs() <= d * 0.5 * (1.0 + 1e-5),
                    "{v} → {q}·{d}"
                );
            }
            if amax > 0.0 {
                assert!(qb.iter().any(|&q| q.abs() == 127), "the max maps to ±127");
            } else {
                assert!(qb.iter().all(|&q| q == 0));
            }
        }
    }

    #[test]
    fn every_path_gives_the_scalar_integers() {
        let mut rng = Rng(7);
        let (rows, cols, m) = (9, 320, 3);
        for ty in TYPES {
            let hm = HostMat::new(ty, rows, cols, blocks(ty, rows, cols, &mut rng)).unwrap();
            let a = QActs::quantize(&acts(m, cols, &mut rng), cols);
            for path in paths() {
                for r in 0..rows {
                    for b in 0..m {
                        let want = block_isums(&hm, r, &a, b, QdotPath::Scalar);
                        let got = block_isums(&hm, r, &a, b, path);
                        assert_eq!(got, want, "{ty:?} {path:?} row {r} act {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_blocks_do_not_saturate() {
        // All-15 nibbles and all −128 bytes against all ±127: the largest sums there are.
        for a in [127i8, -127] {
            let qa = [a; 32];
            let want4 = 15 * 32 * a as i32;
            let want8 = -128 * 32 * a as i32;
            assert_eq!(block_isum_scalar(true, &[0xFF; 16], &qa), want4);
            assert_eq!(block_isum_scalar(false, &[0x80; 32], &qa), want8);
            #[cfg(target_arch = "x86_64")]
            for path in paths().into_iter().filter(|&p| p != QdotPath::Scalar) {
                assert_eq!(simd::block_isum(path, true, &[0xFF; 16], &qa), want4);
                assert_eq!(simd::block_isum(path, false, &[0x80; 32], &qa), want8);
            }
        }
    }

    #[test]
    fn rows_agree_across_paths_and_with_f32_within_the_bound() {
        let mut rng = Rng(11);
        let (rows, cols) = (70, 256);
        for ty in TYPES {
            let data = blocks(ty, rows, cols, &mut rng);
            let w = dequantize(ty, &data, rows * cols).unwrap();
            let hm = HostMat::new(ty, rows, cols, data).unwrap();
            for m in [1, 4, crate::kernels::HOST_MAX_ROWS] {
                let x = acts(m, cols, &mut rng);
                let a = QActs::quantize(&x, cols);
                let scalar = hm.matmul_t_acts(&x, m, Acts::Int8(QdotPath::Scalar));
                for path in paths() {
                    let y = hm.matmul_t_acts(&x, m, Acts::Int8(path));
                    for b in 0..m {
                        for r in 0..rows {
                            let (xr, wr) = (&x[b * cols..(b + 1) * cols], &w[r * cols..][..cols]);
                            let mag: f32 = xr.iter().zip(wr).map(|(u, v)| (u * v).abs()).sum();
                            let (got, s) = (y[b * rows + r], scalar[b * rows + r]);
                            // Same integers; only the f32 summation order differs.
                            assert!(
                                (got - s).abs() <= 1e-5 * (1.0 + mag),
                                "{ty:?} m {m} {path:?} [{b},{r}]: {got} vs scalar {s}"
                            );
                            // Against the exact f32-activation product: each activation
                            // moved by ≤ d_b/2, so |err| ≤ Σ_b d_b/2 · Σ_{j∈b} |w_j|.
                            let exact: f64 =
                                xr.iter().zip(wr).map(|(&u, &v)| u as f64 * v as f64).sum();
                            let bound: f32 = (0..cols / 32)
                                .map(|bi| {
                                    let d = a.d[b * cols / 32 + bi];
                                    d / 2.0
                                        * wr[bi * 32..bi * 32 + 32]
                                            .iter()
                                            .map(|v| v.abs())
                                            .sum::<f32>()
                                })
                                .sum();
                            let err = (got as f64 - exact).abs() as f32;
                            assert!(
                                err <= bound * 1.0001 + 1e-5 * (1.0 + mag),
                                "{ty:?} m {m} {path:?} [{b},{r}]: error {err} > bound {bound}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn int8_activations_are_close_to_f32_on_realistic_rows() {
        // Smooth activations (no outliers): the int8 product stays within 1 % of the row's
        // magnitude, the regime decode runs in.
        let mut rng = Rng(5);
        let (rows, cols) = (40, 576);
        let ty = GgmlType::Q4_1;
        let data = blocks(ty, rows, cols, &mut rng);
        let hm = HostMat::new(ty, rows, cols, data).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.signed_unit()).collect();
        let f = hm.matmul_t_acts(&x, 1, Acts::F32 { simd: false });
        let q = hm.matmul_t_acts(&x, 1, Acts::Int8(QdotPath::detect()));
        let scale = f.iter().map(|v| v.abs()).fold(0f32, f32::max);
        for (a, b) in f.iter().zip(&q) {
            assert!((a - b).abs() <= 0.01 * scale, "{a} vs {b} (scale {scale})");
        }
    }

    #[test]
    fn env_values_parse() {
        assert_eq!(
            Acts::parse("f32").unwrap(),
            Acts::F32 {
                simd: crate::kernels::simd_available()
            }
        );
        assert_eq!(Acts::parse("").unwrap(), Acts::parse("f32").unwrap());
        assert_eq!(Acts::parse("int8").unwrap(), Acts::Int8(QdotPath::detect()));
        assert_eq!(Acts::parse("scalar").unwrap(), Acts::Int8(QdotPath::Scalar));
        let e = Acts::parse("int4").unwrap_err();
        assert!(e.contains("int4") && e.contains("avx512vnni"), "{e}");
        for p in QdotPath::ALL {
            assert_eq!(Acts::parse(p.name()).is_ok(), p.available(), "{p:?}");
        }
    }
}
