//! Sizes bounded before memory is reserved: generation never grows the KV cache past the
//! model's context whatever `max_new_tokens` asks, a prompt that fills the context is an
//! error, and a cache the system cannot hold is an error instead of an abort.

use std::path::{Path, PathBuf};

use memfactory_core::{Error, Finish, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;

/// A copy of `configs/models/tiny-byte` (random weights, one token per byte) whose
/// `max_position_embeddings` is `context`.
fn tiny_byte_with_context(context: u64) -> (PathBuf, BurnLm) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/models/tiny-byte");
    let dir = std::env::temp_dir().join(format!(
        "memfactory-context-{}-{context}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["max_position_embeddings"] = context.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let lm = BurnLm::random(&dir, "flex", 0).unwrap();
    (dir, lm)
}

fn request(prompt: &str, max_new_tokens: usize) -> GenRequest {
    GenRequest {
        prompt: Prompt::Text(prompt.into()),
        params: SamplingParams::greedy(max_new_tokens),
    }
}

#[test]
fn generation_stops_at_the_context_whatever_max_new_tokens_asks() {
    let (dir, lm) = tiny_byte_with_context(48);
    assert_eq!(lm.context_length(), Some(48));
    // A trillion new tokens used to size the KV cache at a trillion positions (an abort).
    let reqs = [
        request("a prompt of 20 bytes", 1_000_000_000_000),
        request("ten bytes!", 1_000_000_000_000),
        request("short budget", 3),
    ];
    let out = lm.generate(&reqs).unwrap();
    for (g, want) in out.iter().zip([48, 48, 15]) {
        let total = g.prompt_ids.len() + g.token_ids.len();
        assert_eq!(g.logprobs.len(), g.token_ids.len());
        match g.finish {
            Finish::Length => assert_eq!(total, want, "{g:?}"),
            Finish::Eos => assert!(total <= want, "{g:?}"),
            Finish::Stop => panic!("no stop strings were given"),
        }
    }
    // The greedy random model does not end these early: the clamp is what stopped them.
    assert_eq!(out[0].finish, Finish::Length);
    assert_eq!(out[1].finish, Finish::Length);
    // A clamped request decodes the same tokens as one asking for exactly what fits.
    let one = |n: usize| {
        lm.generate(&[request("a prompt of 20 bytes", n)])
            .unwrap()
            .remove(0)
    };
    let (clamped, exact) = (one(1_000_000_000_000), one(28));
    assert_eq!(clamped.token_ids.len(), 28);
    assert_eq!(clamped.token_ids, exact.token_ids);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_prompt_that_fills_the_context_is_an_error() {
    let (dir, lm) = tiny_byte_with_context(16);
    let err = lm
        .generate(&[request("sixteen bytes!!!", 1)])
        .expect_err("no room for a token");
    let msg = err.to_string();
    assert!(msg.contains("prompt of 16 tokens"), "{msg}");
    assert!(msg.contains("context of 16 tokens"), "{msg}");
    // Asking for nothing is still fine, and a prompt one shorter gets its one token.
    let g = lm.generate(&[request("sixteen bytes!!!", 0)]).unwrap();
    assert!(g[0].token_ids.is_empty());
    let g = lm.generate(&[request("fifteen bytes!!", 100)]).unwrap();
    assert_eq!(g[0].token_ids.len(), 1);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_cache_the_system_cannot_hold_is_an_error_not_an_abort() {
    // A model file claiming an enormous context: the clamp does not bound the cache, the
    // fallible reservation does.
    let (dir, lm) = tiny_byte_with_context(1 << 60);
    for max_new in [1usize << 50, usize::MAX / 2] {
        let err = lm
            .generate(&[request("hello", max_new)])
            .expect_err("a cache of 2^50 positions or more");
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("KV cache"), "{msg}");
        assert!(msg.contains("cannot be allocated"), "{msg}");
    }
    // The model still generates afterwards.
    let g = lm.generate(&[request("hello", 2)]).unwrap();
    assert!(!g[0].token_ids.is_empty());
    std::fs::remove_dir_all(dir).ok();
}
