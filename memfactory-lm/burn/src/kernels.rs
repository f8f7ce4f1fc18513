//! CPU matrix–vector kernels on GGUF-quantized rows, for decode-sized products on `flex`.
//!
//! Decoding one token reads every weight once, so on a CPU it is bound by memory bandwidth:
//! the f32 copy of SmolLM2-135M is 540 MB a token, its Q4_1/Q8_0 blocks 100 MB. For products
//! with few rows (decode steps) the engine therefore multiplies directly on the GGUF blocks,
//! in parallel over output rows. The arithmetic is the dequantization's own
//! (`w = d·q + m`), so `x·w = Σ_blocks d·Σ qᵢxᵢ + m·Σ xᵢ` equals the f32 product up to
//! summation order (≈ 1e-6 relative; see the golden parity tests).

use rayon::prelude::*;

use crate::quant::GgmlType;

/// A weight `[out, in]` kept in its GGUF block format.
#[derive(Debug, Clone)]
pub(crate) struct HostMat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;

impl HostMat {
    /// Wraps raw blocks when `ty` has a kernel here and the sizes agree.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Option<HostMat> {
        let supported = matches!(ty, GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q4_0);
        let ok = supported
            && cols.is_multiple_of(32)
            && data.len() == rows * cols / 32 * ty.block_bytes();
        ok.then_some(HostMat {
            ty,
            rows,
            cols,
            data,
        })
    }

    fn row_bytes(&self) -> usize {
        self.cols / 32 * self.ty.block_bytes()
    }

    /// Stacks matrices with the same type and width by rows.
    pub fn stack(mats: Vec<HostMat>) -> Option<HostMat> {
        let first = mats.first()?;
        let (ty, cols) = (first.ty, first.cols);
        if mats.iter().any(|m| m.ty != ty || m.cols != cols) {
            return None;
        }
        let rows = mats.iter().map(|m| m.rows).sum();
        let data = mats.into_iter().flat_map(|m| m.data).collect();
        HostMat::new(ty, rows, cols, data)
    }

    /// `y = x · Wᵀ` for `x` `[m, in]` (row-major), returning `[m, out]`.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n) = (self.cols, self.rows);
        let nb = k / 32;
        // Per 32-block sums of x (for the `m·Σ x` term of Q4_1).
        let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
        let rb = self.row_bytes();
        let mut out_t = vec![0f32; n * m]; // [out, m]
        out_t
            .par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(task, chunk)| {
                let r0 = task * ROWS_PER_TASK;
                for (i, o) in chunk.chunks_exact_mut(m).enumerate() {
                    let row = &self.data[(r0 + i) * rb..(r0 + i + 1) * rb];
                    for (bi, ob) in o.iter_mut().enumerate() {
                        let xr = &x[bi * k..(bi + 1) * k];
                        let xs = &xsum[bi * nb..(bi + 1) * nb];
                        *ob = match self.ty {
                            GgmlType::Q4_1 => dot_q4_1(row, xr, xs),
                            GgmlType::Q4_0 => dot_q4_0(row, xr, xs),
                            _ => dot_q8_0(row, xr),
                        };
                    }
                }
            });
        // Transpose [out, m] → [m, out].
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

fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
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

fn dot_q4_1(row: &[u8], x: &[f32], xsum: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut mins = 0f32;
    for ((blk, xb), xs) in row.chunks_exact(20).zip(x.chunks_exact(32)).zip(xsum) {
        let (d, m) = (f16(blk, 0), f16(blk, 2));
        let qs: &[u8; 16] = blk[4..20].try_into().expect("16 bytes");
        let (lo, hi) = xb.split_at(16);
        for j in 0..16 {
            acc[j] += d * ((qs[j] & 0xF) as f32 * lo[j] + (qs[j] >> 4) as f32 * hi[j]);
        }
        mins += m * xs;
    }
    fold(acc) + mins
}

fn dot_q4_0(row: &[u8], x: &[f32], xsum: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for ((blk, xb), xs) in row.chunks_exact(18).zip(x.chunks_exact(32)).zip(xsum) {
        let d = f16(blk, 0);
        let qs: &[u8; 16] = blk[2..18].try_into().expect("16 bytes");
        let (lo, hi) = xb.split_at(16);
        for j in 0..16 {
            acc[j] += d * ((qs[j] & 0xF) as f32 * lo[j] + (qs[j] >> 4) as f32 * hi[j]);
        }
        off -= 8.0 * d * xs;
    }
    fold(acc) + off
}

fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (blk, xb) in row.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = f16(blk, 0);
        let qs: &[u8; 32] = blk[2..34].try_into().expect("32 bytes");
        for j in 0..16 {
            acc[j] += d * ((qs[j] as i8) as f32 * xb[j] + (qs[j + 16] as i8) as f32 * xb[j + 16]);
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
            blk[0..2].copy_from_slice(&half::f16::from_f32(0.01 * (b % 7) as f32 + 0.02).to_le_bytes());
            let qs_at = if ty == GgmlType::Q4_1 {
                blk[2..4].copy_from_slice(&half::f16::from_f32(-0.05 * (b % 3) as f32).to_le_bytes());
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
            let x: Vec<f32> = (0..m * cols).map(|i| ((i * 13) % 17) as f32 / 17.0 - 0.4).collect();
            let y = hm.matmul_t(&x, m);
            for b in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[b * cols + c] * w[r * cols + c]).sum();
                    let got = y[b * rows + r];
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{ty:?} {b} {r}: {got} vs {want}");
                }
            }
        }
    }
}
