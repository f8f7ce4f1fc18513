//! Parity with sentence-transformers on the real all-MiniLM-L6-v2: the golden file
//! `tests/golden/minilm_golden.json` (12 sentences, written by `scripts/make_golden.py` with
//! sentence-transformers 6.2.0 / torch 2.15.0, CPU f32) against this crate's embeddings.
//!
//! The model directory comes from env `MEMFACTORY_MINILM_DIR`, else
//! `models/all-minilm-l6-v2` under the workspace root (`memfactory model fetch
//! all-minilm-l6-v2`); without it the tests print why and pass.
//!
//! Measured (flex, 2 cores, host GELU): 1 − min cosine = 8.4e-13 (contract: cosine ≥ 0.999),
//! max |diff| 1.9e-7 over all 12 × 384 components (the golden values are rounded to 7
//! significant digits); batch sizes 1 and 5 agree with 32 within 2.0e-7 (contract: 1e-5).

use std::path::PathBuf;

use memfactory_embed_minilm::MiniLm;
use serde_json::Value;

fn model_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MEMFACTORY_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-minilm-l6-v2"),
    };
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: no all-MiniLM-L6-v2 at {} (run `memfactory model fetch all-minilm-l6-v2` \
             in the workspace root or set MEMFACTORY_MINILM_DIR)",
            dir.display()
        );
        None
    }
}

struct Case {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn golden() -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/minilm_golden.json");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(j["max_seq_length"].as_u64(), Some(256));
    j["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            tokens: c["tokens"].as_u64().unwrap() as usize,
            embedding: c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn matches_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let m = MiniLm::load(&dir, "flex").unwrap();
    assert_eq!(memfactory_core::Embedder::dim(&m), 384);
    let cases = golden();
    assert!(
        cases.iter().any(|c| c.tokens == 256),
        "golden lacks a truncated case"
    );
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let got = m.embed(&texts).unwrap();
    let (mut min_cos, mut worst) = (f64::INFINITY, 0f32);
    for (c, e) in cases.iter().zip(&got) {
        assert_eq!(
            m.token_ids(&c.text).unwrap().len(),
            c.tokens,
            "{:?}",
            c.text
        );
        assert_eq!(e.len(), c.embedding.len());
        let cos = cosine(e, &c.embedding);
        min_cos = min_cos.min(cos);
        worst = worst.max(max_diff(e, &c.embedding));
        assert!(cos >= 0.999, "{:?}: cosine {cos}", c.text);
    }
    // Tighter than the contract, to catch a real regression early (see the module doc).
    assert!(worst < 1e-4, "max |diff| {worst}");
    eprintln!(
        "parity: 1 - min cosine = {:.3e}, max |diff| {worst:.3e}",
        1.0 - min_cos
    );
}

#[test]
fn batch_size_does_not_change_vectors() {
    let Some(dir) = model_dir() else { return };
    let mut m = MiniLm::load(&dir, "flex").unwrap();
    let cases = golden();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let all = m.embed(&texts).unwrap();
    let mut worst = 0f32;
    for bs in [1, 5] {
        m.batch_size = bs;
        let got = m.embed(&texts).unwrap();
        for (i, (a, b)) in all.iter().zip(&got).enumerate() {
            let d = max_diff(a, b);
            worst = worst.max(d);
            assert!(d <= 1e-5, "batch {bs}, {:?}: max |diff| {d}", texts[i]);
        }
    }
    eprintln!("batching: max |diff| {worst:.3e}");
}
