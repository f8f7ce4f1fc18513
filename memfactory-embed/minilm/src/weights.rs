//! Reading the encoder's tensors from `model.safetensors`: names with or without the `bert.`
//! prefix, F32 / F16 / BF16 cast to f32, and an error naming the tensor for anything missing,
//! misshapen or cut off.

use std::path::{Path, PathBuf};

use memfactory_core::{Error, Result};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::Value as Json;

/// A tensor on the host, row-major, with its shape.
pub(crate) struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An open safetensors file.
pub(crate) struct Weights<'a> {
    path: PathBuf,
    st: SafeTensors<'a>,
    /// `""` or `"bert."`: how this file spells the encoder's tensor names.
    prefix: &'static str,
}

/// Says why a file the `safetensors` crate rejected is bad; for a file cut short, names the
/// first tensor whose bytes lie past the end.
fn diagnose(bytes: &[u8], err: &SafeTensorError) -> String {
    let generic = format!("not a valid safetensors file ({err})");
    if !matches!(err, SafeTensorError::MetadataIncompleteBuffer) {
        return generic;
    }
    let Some(n) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
    else {
        return generic;
    };
    let Some(header) = bytes.get(8..8usize.saturating_add(n)) else {
        return generic;
    };
    let Ok(Json::Object(map)) = serde_json::from_slice::<Json>(header) else {
        return generic;
    };
    let have = bytes.len() - 8 - n;
    let mut worst: Option<(u64, &str)> = None;
    for (name, info) in &map {
        let end = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(Json::as_u64);
        if let Some(end) = end
            && end > have as u64
            && worst.is_none_or(|(e, _)| end < e)
        {
            worst = Some((end, name));
        }
    }
    match worst {
        Some((end, name)) => format!(
            "file is truncated: tensor `{name}` needs data bytes up to {end} but the file holds \
             only {have} (an interrupted download?)"
        ),
        None => format!("{generic}: the data section does not match the header"),
    }
}

impl<'a> Weights<'a> {
    /// Parses the header of `bytes` (the contents of `path`).
    pub fn parse(path: &Path, bytes: &'a [u8]) -> Result<Weights<'a>> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::model(path.to_path_buf(), diagnose(bytes, &e)))?;
        let bert_prefixed = st.names().iter().any(|n| n.starts_with("bert."));
        Ok(Weights {
            path: path.to_path_buf(),
            st,
            prefix: if bert_prefixed { "bert." } else { "" },
        })
    }

    /// Tensor `name` (without the `bert.` prefix) as f32, which must have shape `shape`.
    pub fn need(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let full = format!("{}{name}", self.prefix);
        let bad = |m: String| Error::model(self.path.clone(), m);
        let t = self.st.tensor(&full).map_err(|e| match e {
            SafeTensorError::TensorNotFound(_) => bad(format!(
                "missing tensor `{full}` (is this an all-MiniLM-L6-v2 / BERT safetensors file?)"
            )),
            e => bad(format!("tensor `{full}`: {e}")),
        })?;
        if t.shape() != shape {
            return Err(bad(format!(
                "tensor `{full}` has shape {:?}, expected {shape:?} (from config.json)",
                t.shape()
            )));
        }
        let raw = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            d => {
                return Err(bad(format!(
                    "tensor `{full}` has dtype {d:?}; supported: F32, F16, BF16"
                )));
            }
        };
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(bad(format!(
                "tensor `{full}` holds {} values, expected {n}",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor `{full}` has a non-finite value at flat index {i}"
            )));
        }
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }
}

/// `[in, Σ out]` row-major from PyTorch `[out, in]` matrices (so `x · W` with burn's
/// `linear`), concatenating along the output dimension.
pub(crate) fn transpose_cat(mats: &[&HostTensor]) -> (usize, usize, Vec<f32>) {
    let cols_in = mats[0].shape[1];
    let total: usize = mats.iter().map(|m| m.shape[0]).sum();
    let mut out = vec![0f32; cols_in * total];
    let mut off = 0;
    for m in mats {
        let rows = m.shape[0];
        for r in 0..rows {
            let row = &m.data[r * cols_in..(r + 1) * cols_in];
            for (i, &v) in row.iter().enumerate() {
                out[i * total + off + r] = v;
            }
        }
        off += rows;
    }
    (cols_in, total, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_cat_layout() {
        let a = HostTensor {
            shape: vec![2, 3],
            data: vec![1., 2., 3., 4., 5., 6.],
        };
        let b = HostTensor {
            shape: vec![1, 3],
            data: vec![7., 8., 9.],
        };
        let (r, c, v) = transpose_cat(&[&a, &b]);
        assert_eq!((r, c), (3, 3));
        assert_eq!(v, vec![1., 4., 7., 2., 5., 8., 3., 6., 9.]);
    }
}
