//! Shared helpers: locating and loading the SmolLM2 GGUF once per test binary, and reading
//! the golden files of `tests/golden/`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use memfactory_lm_burn::BurnLm;
use serde_json::Value;

/// Path of the SmolLM2 GGUF: `$MEMFACTORY_SMOLLM2_GGUF` or the workspace default.
pub fn model_path() -> PathBuf {
    match std::env::var_os("MEMFACTORY_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

/// The loaded model, or `None` (with a printed reason) when the file is absent.
pub fn model() -> Option<&'static BurnLm> {
    static LM: OnceLock<Option<BurnLm>> = OnceLock::new();
    LM.get_or_init(|| {
        let p = model_path();
        if !p.exists() {
            println!(
                "skipping: model file {} not found (set MEMFACTORY_SMOLLM2_GGUF)",
                p.display()
            );
            return None;
        }
        let t = std::time::Instant::now();
        let lm = BurnLm::load(&p, "flex").expect("load SmolLM2");
        println!(
            "loaded {} in {:.1}s",
            p.display(),
            t.elapsed().as_secs_f32()
        );
        Some(lm)
    })
    .as_ref()
}

/// `tests/golden/NAME` parsed, or `None` (with a printed reason) when it is absent.
pub fn golden(name: &str) -> Option<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    match std::fs::read_to_string(&p) {
        Ok(s) => Some(serde_json::from_str(&s).expect("golden JSON")),
        Err(_) => {
            println!("skipping: golden file {} not found", p.display());
            None
        }
    }
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
