//! GGML tensor types and their dequantization to `f32`.
//!
//! Block layouts follow ggml's `ggml-common.h` (`block_q4_0`, `block_q4_1`, `block_q5_0`,
//! `block_q5_1`, `block_q8_0`, `block_q4_K`, `block_q5_K`, `block_q6_K`); the decoders mirror
//! `dequantize_row_*` in ggml-quants.c.

use half::{bf16, f16};

/// A GGML element type that this crate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 32 weights: f16 scale + 16 bytes of 4-bit values, `x = d·(q − 8)`.
    Q4_0,
    /// 32 weights: f16 scale, f16 min, 16 bytes of nibbles, `x = d·q + m`.
    Q4_1,
    /// 32 weights: f16 scale, 32 high bits, 16 bytes of nibbles, `x = d·(q − 16)`.
    Q5_0,
    /// 32 weights: f16 scale, f16 min, 32 high bits, 16 bytes of nibbles, `x = d·q + m`.
    Q5_1,
    /// 32 weights: f16 scale + 32 signed bytes.
    Q8_0,
    /// 256-weight super-block, 8 sub-blocks with 6-bit scales and mins, 4-bit values.
    Q4K,
    /// 256-weight super-block, 6-bit scales and mins, 5-bit values.
    Q5K,
    /// 256-weight super-block, 16 signed 8-bit scales, 6-bit values.
    Q6K,
}

impl GgmlType {
    /// The type with GGML id `id`, when supported.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                32
            }
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
        }
    }
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantizes `numel` values of type `ty` from `bytes`; `Err` names the size mismatch.
pub fn dequantize(ty: GgmlType, bytes: &[u8], numel: usize) -> Result<Vec<f32>, String> {
    let bs = ty.block_size();
    if !numel.is_multiple_of(bs) {
        return Err(format!(
            "{numel} values is not a whole number of {ty:?} blocks"
        ));
    }
    let need = numel / bs * ty.block_bytes();
    if bytes.len() != need {
        return Err(format!(
            "{numel} {ty:?} values need {need} bytes, found {}",
            bytes.len()
        ));
    }
    let mut out = vec![0f32; numel];
    let blocks = bytes.chunks_exact(ty.block_bytes());
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(blocks) {
                let d = h(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
                    y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in out.chunks_exact_mut(32).zip(blocks) {
                let (d, m) = (h(b, 0), h(b, 2));
                for j in 0..16 {
                    let q = b[4 + j];
                    y[j] = (q & 0xF) as f32 * d + m;
                    y[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let with_min = ty == GgmlType::Q5_1;
            let o = if with_min { 4 } else { 2 };
            for (y, b) in out.chunks_exact_mut(32).zip(blocks) {
                let d = h(b, 0);
                let m = if with_min { h(b, 2) } else { 0.0 };
                let qh = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
                let qs = &b[o + 4..];
                for j in 0..16 {
                    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                    let x0 = (qs[j] & 0xF) | xh0;
                    let x1 = (qs[j] >> 4) | xh1;
                    if with_min {
                        y[j] = x0 as f32 * d + m;
                        y[j + 16] = x1 as f32 * d + m;
                    } else {
                        y[j] = (x0 as i32 - 16) as f32 * d;
                        y[j + 16] = (x1 as i32 - 16) as f32 * d;
                    }
                }
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(blocks) {
                let d = h(b, 0);
                for j in 0..32 {
                    y[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let five = ty == GgmlType::Q5K;
            for (y, b) in out.chunks_exact_mut(256).zip(blocks) {
                let (d, dmin) = (h(b, 0), h(b, 2));
                let scales = &b[4..16];
                let (qh, qs) = if five {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[0..0], &b[16..144])
                };
                let mut is = 0;
                let (mut u1, mut u2) = (1u8, 2u8);
                for (jb, j) in (0..256).step_by(64).enumerate() {
                    let ql = &qs[jb * 32..jb * 32 + 32];
                    let (sc, m) = scale_min_k4(is, scales);
                    let (d1, m1) = (d * sc as f32, dmin * m as f32);
                    let (sc, m) = scale_min_k4(is + 1, scales);
                    let (d2, m2) = (d * sc as f32, dmin * m as f32);
                    for l in 0..32 {
                        let hi1 = if five && qh[l] & u1 != 0 { 16.0 } else { 0.0 };
                        let hi2 = if five && qh[l] & u2 != 0 { 16.0 } else { 0.0 };
                        y[j + l] = d1 * ((ql[l] & 0xF) as f32 + hi1) - m1;
                        y[j + 32 + l] = d2 * ((ql[l] >> 4) as f32 + hi2) - m2;
                    }
                    is += 2;
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
        }
        GgmlType::Q6K => {
            for (y, b) in out.chunks_exact_mut(256).zip(blocks) {
                let d = h(b, 208);
                for n in 0..2 {
                    let ql = &b[n * 64..n * 64 + 64];
                    let qh = &b[128 + n * 32..128 + n * 32 + 32];
                    let sc = &b[192 + n * 8..192 + n * 8 + 8];
                    let y = &mut y[n * 128..n * 128 + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn plain_floats() {
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::F32, &b, 2).unwrap(), vec![1.5, -2.0]);
        let b: Vec<u8> = [f16b(0.5), f16b(-3.0)].concat();
        assert_eq!(dequantize(GgmlType::F16, &b, 2).unwrap(), vec![0.5, -3.0]);
        let b: Vec<u8> = [
            bf16::from_f32(0.25).to_le_bytes(),
            bf16::from_f32(-8.0).to_le_bytes(),
        ]
        .concat();
        assert_eq!(dequantize(GgmlType::BF16, &b, 2).unwrap(), vec![0.25, -8.0]);
    }

    #[test]
    fn q8_0_block() {
        let mut b = f16b(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_and_q4_1_blocks() {
        // byte j holds value j&15 in the low nibble (element j) and 15-j in the high one
        // (element j+16).
        let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let mut b = f16b(2.0).to_vec();
        b.extend(&qs);
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(y[j + 16], ((15 - j) as f32 - 8.0) * 2.0);
        }
        let mut b = [f16b(0.5), f16b(-1.0)].concat();
        b.extend(&qs);
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.5 - 1.0);
            assert_eq!(y[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q5_0_block() {
        // All high bits set for elements 0..16 (qh bits 0..16), none for 16..32.
        let mut b = f16b(1.0).to_vec();
        b.extend(0x0000_FFFFu32.to_le_bytes());
        b.extend((0..16u8).map(|j| j | (j << 4)));
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 + 16.0) - 16.0);
            assert_eq!(y[j + 16], j as f32 - 16.0);
        }
    }

    #[test]
    fn q4_k_block() {
        // scales: sub-blocks 0..4 get scale 1..4, min 0; sub-blocks 4..8 scale 2, min 1.
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = (j + 1) as u8; // scale
            scales[j + 4] = 0; // min
        }
        for j in 4..8 {
            // low 4 bits of scale in scales[j+4] low nibble, of min in its high nibble
            scales[j + 4] = 2 | (1 << 4);
        }
        let mut b = [f16b(1.0), f16b(0.5)].concat();
        b.extend(scales);
        b.extend(std::iter::repeat_n(0x31u8, 128)); // low nibble 1, high nibble 3
        let y = dequantize(GgmlType::Q4K, &b, 256).unwrap();
        // sub-block 0 (low nibbles of bytes 0..32): scale 1 → 1
        assert_eq!(y[0], 1.0);
        // sub-block 1 (high nibbles of bytes 0..32): scale 2 → 6
        assert_eq!(y[32], 6.0);
        // sub-block 3: scale 4, high nibble 3 → 12
        assert_eq!(y[96 + 5], 12.0);
        // sub-block 4: scale 2, min 1·0.5, low nibble 1 → 2 − 0.5
        assert_eq!(y[128], 1.5);
        // sub-block 7: high nibble 3 → 6 − 0.5
        assert_eq!(y[255], 5.5);
    }

    #[test]
    fn q6_k_block() {
        let mut b = vec![0u8; 210];
        // ql: all 0x21 (low 1, high 2); qh: all 0b11_10_01_00 → q1 hi 0, q2 hi 1, q3 hi 2, q4 hi 3
        for x in &mut b[..128] {
            *x = 0x21;
        }
        for x in &mut b[128..192] {
            *x = 0b1110_0100;
        }
        for (i, x) in b[192..208].iter_mut().enumerate() {
            *x = (i as i8 - 4) as u8;
        }
        b[208..210].copy_from_slice(&f16b(0.25));
        let y = dequantize(GgmlType::Q6K, &b, 256).unwrap();
        // l = 0: q1 = 1 − 32, scale sc[0] = −4
        assert_eq!(y[0], 0.25 * -4.0 * (1.0 - 32.0));
        // y[32]: q2 = (1 | 1<<4) − 32 = −15, sc[2] = −2
        assert_eq!(y[32], 0.25 * -2.0 * -15.0);
        // y[64]: q3 = (2 | 2<<4) − 32 = 2, sc[4] = 0
        assert_eq!(y[64], 0.0);
        // y[96 + 16]: q4 = (2 | 3<<4) − 32 = 18, is = 1, sc[7] = 3
        assert_eq!(y[112], 0.25 * 3.0 * 18.0);
        // second half: sc[8 + 0] = 4
        assert_eq!(y[128], 0.25 * 4.0 * -31.0);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        assert!(dequantize(GgmlType::Q4_1, &[0u8; 19], 32).is_err());
        assert!(dequantize(GgmlType::Q4_1, &[0u8; 20], 31).is_err());
    }
}
