//! The tiny byte-level model of `configs/models/tiny-byte` with random weights: exact
//! byte round trip, seeded initialisation, generation with log-probs.

use std::path::{Path, PathBuf};

use memfactory_core::{GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/models/tiny-byte")
}

#[test]
fn byte_tokenizer_round_trips_and_init_is_seeded() {
    let a = BurnLm::random(&dir(), "flex", 7).unwrap();
    let text = "Héllo \\boxed{42}";
    let ids = a.encode(text).unwrap();
    assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
    assert_eq!(a.decode(&ids).unwrap(), text);
    let la = a.batch_logits(std::slice::from_ref(&ids)).unwrap();
    let same = BurnLm::random(&dir(), "flex", 7).unwrap();
    assert_eq!(la, same.batch_logits(std::slice::from_ref(&ids)).unwrap());
    let other = BurnLm::random(&dir(), "flex", 8).unwrap();
    assert_ne!(la, other.batch_logits(std::slice::from_ref(&ids)).unwrap());
    // Random weights of std 0.02 give near-uniform next-token distributions.
    let row = &la[0][0];
    let max = row.iter().cloned().fold(f32::MIN, f32::max);
    let min = row.iter().cloned().fold(f32::MAX, f32::min);
    assert!(max - min < 2.0, "logit spread {}", max - min);
}

#[test]
fn random_model_generates_with_logprobs() {
    let lm = BurnLm::random(&dir(), "flex", 0).unwrap();
    let req = GenRequest {
        prompt: Prompt::Text("question: 1+1?".into()),
        params: SamplingParams {
            max_new_tokens: 6,
            temperature: 1.0,
            seed: 3,
            ..Default::default()
        },
    };
    let out = lm.generate(&[req.clone(), req]).unwrap();
    assert_eq!(out[0].token_ids, out[1].token_ids, "same seed, same sample");
    for g in &out {
        assert!(!g.token_ids.is_empty() && g.token_ids.len() <= 6);
        assert_eq!(g.logprobs.len(), g.token_ids.len());
        assert!(g.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
    }
}

#[test]
fn random_init_needs_a_directory() {
    let e = BurnLm::random(&dir().join("config.json"), "flex", 0).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
}
