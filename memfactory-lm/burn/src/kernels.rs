//! CPU matrix–vector kernels on GGUF-quantized rows, for decode-sized products on `flex`.
//!
//! **Experimental, opt-in** (`MEMFACTORY_BURN_HOST_KERNELS=1`): written in portable safe Rust
//! (baseline x86-64 SIMD through auto-vectorization), they are currently *slower* than burn's
//! f32 gemm (≈ 10 vs 22 tok/s at batch 1 on 2 cores); an integer-dot kernel with AVX2 would be
//! needed to win. Kept because they are exact (tested) and cut weight memory 5×.
//!
//! Decoding one token reads every weight once, so on a CPU it is bound by memory bandwidth:
//! the f32 copy of SmolLM2-135M is 540 MB a token, its Q4_1/Q8_0 blocks 100 MB. For products
//! with few rows (decode steps) the engine therefore multiplies directly on the GGUF blocks,
//! in parallel over output rows. The arithmetic is the dequantization's own
//! (`w = d·q + m`), so `x·w = Σ_blocks d·Σ qᵢxᵢ + m·Σ xᵢ` equals the f32 product up to
//! summation order (≈ 1e-6 relative; see the golden parity tests).

use rayon::prelude::*;

use crate::quant::GgmlType;

/// A weight `[out, in]` kept as GGUF blocks, split into f32 block scales/mins and the raw
/// quants (so the inner loop does no f16 conversion).
#[derive(Debug, Clone)]
pub(crate) struct HostMat {
    pub rows: usize,
    pub cols: usize,
    /// 4-bit (16 bytes a block) or 8-bit (32 bytes a block) quants.
    four_bit: bool,
    qs: Vec<u8>,
    /// Per block: `d`.
    scale: Vec<f32>,
    /// Per block: the additive term (`m` for Q4_1, `−8·d` for Q4_0, 0 for Q8_0).
    min: Vec<f32>,
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;

fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

impl HostMat {
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
            let d = f16(blk, 0);
            scale.push(d);
            match ty {
                GgmlType::Q4_1 => {
                    min.push(f16(blk, 2));
                    qs.extend_from_slice(&blk[4..20]);
                }
                GgmlType::Q4_0 => {
                    min.push(-8.0 * d);
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
            qs,
            scale,
            min,
        })
    }

    /// Stacks matrices with the same format and width by rows.
    pub fn stack(mats: Vec<HostMat>) -> Option<HostMat> {
        let first = mats.first()?;
        let (four_bit, cols) = (first.four_bit, first.cols);
        if mats
            .iter()
            .any(|m| m.four_bit != four_bit || m.cols != cols)
        {
            return None;
        }
        let mut out = HostMat {
            rows: 0,
            cols,
            four_bit,
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

    /// `y = x · Wᵀ` for `x` `[m, in]` (row-major), returning `[m, out]`.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n) = (self.cols, self.rows);
        let nb = k / 32;
        // Per 32-block sums of x (for the additive term).
        let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
        let qb = if self.four_bit { 16 } else { 32 };
        let mut out_t = vec![0f32; n * m]; // [out, m]
        out_t
            .par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(task, chunk)| {
                let r0 = task * ROWS_PER_TASK;
                for (i, o) in chunk.chunks_exact_mut(m).enumerate() {
                    let r = r0 + i;
                    let qs = &self.qs[r * nb * qb..(r + 1) * nb * qb];
                    let sc = &self.scale[r * nb..(r + 1) * nb];
                    let mn = &self.min[r * nb..(r + 1) * nb];
                    for (bi, ob) in o.iter_mut().enumerate() {
                        let xr = &x[bi * k..(bi + 1) * k];
                        let xs = &xsum[bi * nb..(bi + 1) * nb];
                        let add: f32 = mn.iter().zip(xs).map(|(a, b)| a * b).sum();
                        *ob = if self.four_bit {
                            dot4(qs, sc, xr)
                        } else {
                            dot8(qs, sc, xr)
                        } + add;
                    }
                }
            });
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

/// Lane-wise sums (vectorizable) folded at the end.
#[inline]
fn fold(acc: [f32; 16]) -> f32 {
    let mut s = [0f32; 4];
    for (i, v) in acc.iter().enumerate() {
        s[i % 4] += v;
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

fn dot4(qs: &[u8], sc: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((q, &d), xb) in qs.chunks_exact(16).zip(sc).zip(x.chunks_exact(32)) {
        let q: &[u8; 16] = q.try_into().expect("16 bytes");
        let (lo, hi) = xb.split_at(16);
        let lo: &[f32; 16] = lo.try_into().expect("16");
        let hi: &[f32; 16] = hi.try_into().expect("16");
        let mut s = [0f32; 16];
        for j in 0..16 {
            s[j] = (q[j] & 0xF) as f32 * lo[j] + (q[j] >> 4) as f32 * hi[j];
        }
        for j in 0..16 {
            acc[j] += d * s[j];
        }
    }
    fold(acc)
}

fn dot8(qs: &[u8], sc: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((q, &d), xb) in qs.chunks_exact(32).zip(sc).zip(x.chunks_exact(32)) {
        let q: &[u8; 32] = q.try_into().expect("32 bytes");
        let xb: &[f32; 32] = xb.try_into().expect("32");
        let mut s = [0f32; 16];
        for j in 0..16 {
            s[j] = (q[j] as i8) as f32 * xb[j] + (q[j + 16] as i8) as f32 * xb[j + 16];
        }
        for j in 0..16 {
            acc[j] += d * s[j];
        }
    }
    fold(acc)
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
    fn kernels_match_dequantized_matmul() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols, m) = (70, 96, 3);
            let data = blocks(ty, rows, cols);
            let w = dequantize(ty, &data, rows * cols).unwrap();
            let hm = HostMat::new(ty, rows, cols, data).unwrap();
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 13) % 17) as f32 / 17.0 - 0.4)
                .collect();
            let y = hm.matmul_t(&x, m);
            for b in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[b * cols + c] * w[r * cols + c]).sum();
                    let got = y[b * rows + r];
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{ty:?} {b} {r}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
