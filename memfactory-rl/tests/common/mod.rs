//! Shared by the golden loss tests: reading the reference scripts' JSON into f32 matrices
//! and burn tensors.

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

/// `tests/golden/<name>`, parsed.
pub fn golden(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of number arrays as f32 rows.
pub fn mat(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Rows (all of one length) as a 2-D tensor on `dev`.
pub fn tensor(rows: &[Vec<f32>], dev: &Device) -> Tensor<2> {
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [r, c]), dev)
}
