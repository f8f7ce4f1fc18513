//! Shared prompt prefixes within a generation batch (`EngineOptions::prefix_sharing`): the
//! same tokens and log-probs as prefilling every row in full, for greedy and seeded sampled
//! decoding, on tiny Llama / Qwen2 / Qwen3 models and (when its GGUF is present) SmolLM2.

mod common;

use std::path::{Path, PathBuf};

use memfactory_core::{GenRequest, Generation, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A request; sampled ones draw from the 50 likeliest tokens. Over the whole vocabulary a
/// 135M model's next-token distribution after these random prompts puts ~1e-5 on each of
/// thousands of tokens, and a seeded draw then falls within the float noise of a boundary
/// between two of them often enough to flip a token (seen: log-probs equal to 4e-7, the
/// third draw landing on a neighbour of probability 8e-6). Among the top 50 the boundaries
/// are orders of magnitude wider than that noise, so equal tokens are a fair demand.
fn req(prompt: Vec<u32>, max_new_tokens: usize, temperature: f32, seed: u64) -> GenRequest {
    GenRequest {
        prompt: Prompt::Tokens(prompt),
        params: SamplingParams {
            max_new_tokens,
            temperature,
            top_k: if temperature > 0.0 { 50 } else { 0 },
            seed,
            ..Default::default()
        },
    }
}

/// Batches exercising every case: a group of identical prompts (a GRPO group), rows sharing
/// a long instruction before questions of different lengths (so different left padding), a
/// row sharing nothing whose padding still leaves a shared stretch to skip, and two groups
/// that share an instruction (partitioned into two runs).
fn batches(vocab: u32, temperature: f32) -> Vec<Vec<GenRequest>> {
    let tok = |i: u32| (i * 7 + 3) % vocab;
    let instruction: Vec<u32> = (0..70).map(tok).collect();
    let with = |q: std::ops::Range<u32>| {
        let mut v = instruction.clone();
        v.extend(q.map(|i| tok(i * 13 + 1)));
        v
    };
    let group: Vec<GenRequest> = (0..4)
        .map(|s| req(with(0..9), 6, temperature, 11 + s))
        .collect();
    let mut mixed = vec![
        req(with(100..112), 6, temperature, 1),
        req(with(200..203), 6, temperature, 2),
        req(with(300..317), 6, temperature, 3),
        req(with(300..317), 6, temperature, 4),
        // A second group, of two short prompts: their padding (47) covers the first
        // group's shared part.
        req((0..40).map(|i| tok(i * 5 + 2)).collect(), 6, temperature, 5),
        req((0..40).map(|i| tok(i * 5 + 2)).collect(), 6, temperature, 7),
    ];
    mixed.push(req(with(0..9), 6, temperature, 6));
    // Two GRPO groups whose prompts begin with the same instruction, interleaved: each group
    // shares its whole prompt (all but the last token), not only the instruction.
    let two_groups: Vec<GenRequest> = (0..8)
        .map(|s| {
            let q = if s % 2 == 0 { 400..440 } else { 500..530 };
            req(with(q), 6, temperature, 21 + s)
        })
        .collect();
    vec![group, mixed, two_groups]
}

fn generate(lm: &mut BurnLm, sharing: bool, reqs: &[GenRequest]) -> (Vec<Generation>, u64) {
    lm.options.prefix_sharing = sharing;
    let before = lm.shared_prefill_positions();
    let out = lm.generate(reqs).unwrap();
    (out, lm.shared_prefill_positions() - before)
}

/// Largest relative log-prob difference allowed between sharing on and off.
///
/// Both runs prefill every row's last prompt token and decode in the same batch; they differ
/// only in how the shared prefix's keys and values were computed: in a batch of the distinct
/// prefixes instead of the whole batch, at another left padding and another prefill
/// chunking. Row products do not mix rows, so a group of identical prompts at the batch's
/// longest length (no padding) came out bit for bit equal on the tiny models. Otherwise the
/// results differ in summation order only: a padded row's keys sit at other cache offsets,
/// so the attention kernel's tiles split the softmax sums elsewhere, and the gemm blocks a
/// product of another row count differently. A regrouped n-term f32 sum moves by about
/// √n·ε relatively (n = 576 for SmolLM2's hidden size: ~3e-6), growing through the layers.
/// Measured (AVX-512, this test's batches): largest relative difference 1.2e-7 (tiny-byte),
/// 1.4e-6 (tiny-qwen2), 2.5e-6 (tiny-qwen3), 1.6e-5 (SmolLM2 with f32 products, 30
/// layers). The bound, 1e-4, keeps six times the largest; a fault moves them far more (mutants on tiny-byte: a
/// prefix copied from the other group's row, 4e-3; copied one position late, 5e-4).
const REL_TOL: f32 = 1e-4;

/// [`REL_TOL`] for SmolLM2 with the host kernels on: products of at most 16 rows then run on
/// the GGUF blocks (f32 activations: the f32 product up to summation order), and sharing moves
/// the rows' last prompt token onto them and onto the host decode step. Measured
/// (AVX-512): 1.2e-5 (1.4e-5 before the host step); the bound keeps 14 times the larger.
const REL_TOL_HOST: f32 = 2e-4;

/// Sharing on vs off: same tokens, log-probs within `tol` (relative).
fn assert_same(name: &str, lm: &mut BurnLm, tol: f32) {
    let vocab = lm.config().vocab as u32;
    let mut worst = 0f32;
    for temperature in [0.0, 1.0] {
        for (b, reqs) in batches(vocab, temperature).iter().enumerate() {
            let (off, saved_off) = generate(lm, false, reqs);
            let (on, saved_on) = generate(lm, true, reqs);
            assert_eq!(saved_off, 0, "{name}: sharing off shares nothing");
            assert!(
                saved_on > 0,
                "{name}: batch {b} at temperature {temperature} shared no prefix"
            );
            for (i, (a, s)) in off.iter().zip(&on).enumerate() {
                assert_eq!(a.prompt_ids, s.prompt_ids);
                assert_eq!(
                    a.token_ids, s.token_ids,
                    "{name}: batch {b} row {i} at temperature {temperature}: tokens differ"
                );
                for (x, y) in a.logprobs.iter().zip(&s.logprobs) {
                    let rel = (x - y).abs() / x.abs().max(y.abs()).max(1e-3);
                    worst = worst.max(rel);
                    assert!(
                        rel <= tol,
                        "{name}: batch {b} row {i} at temperature {temperature}: log-probs \
                         {:?} (shared) vs {:?} (full prefill)",
                        s.logprobs,
                        a.logprobs
                    );
                }
                assert_eq!(a.finish, s.finish);
            }
        }
    }
    println!("{name}: largest relative log-prob difference {worst:e}");
}

#[test]
fn sharing_matches_full_prefill_on_tiny_models() {
    let byte = BurnLm::random(&root().join("../../configs/models/tiny-byte"), "flex", 5).unwrap();
    let qwen2 = BurnLm::load(&root().join("tests/golden/tiny-qwen2"), "flex").unwrap();
    let qwen3 = BurnLm::load(&root().join("tests/golden/tiny-qwen3"), "flex").unwrap();
    for (name, mut lm) in [
        ("tiny-byte (Llama)", byte),
        ("tiny-qwen2 (qkv bias)", qwen2),
        ("tiny-qwen3 (q/k norms)", qwen3),
    ] {
        // Small chunks: the shared prefill and the rows' prefill both span several chunks.
        lm.options.prefill_chunk = 16;
        assert_same(name, &mut lm, REL_TOL);
    }
}

#[test]
fn sharing_matches_full_prefill_on_smollm2() {
    let p = common::model_path();
    if !p.exists() {
        println!(
            "skipping: model file {} not found (set MEMFACTORY_SMOLLM2_GGUF)",
            p.display()
        );
        return;
    }
    // Without and with the host kernels: with them, products of at most 16 rows run on the
    // GGUF blocks (f32 activations, equal to the f32 product up to summation order), and
    // sharing shrinks the batch's prefill to the rows' unshared tokens (one token per row for
    // identical prompts), which moves those products from the gemm to the block kernels.
    for (host, tol) in [(false, REL_TOL), (true, REL_TOL_HOST)] {
        if host && std::env::var_os("MEMFACTORY_BURN_QDOT").is_some_and(|v| v == "int8") {
            // int8 activations: a product's kernel (int8 at <= 16 rows, f32 above) changes
            // its result by the quantisation error, which that kernel's own tests bound.
            println!("skipping the host-kernel case: MEMFACTORY_BURN_QDOT=int8");
            continue;
        }
        let mut lm = BurnLm::load_with(&p, "flex", host).unwrap();
        lm.options.prefill_chunk = 64;
        assert_same(
            &format!("SmolLM2-135M Q4_1, host kernels {host}"),
            &mut lm,
            tol,
        );
    }
}

#[test]
fn a_short_common_prefix_is_not_shared() {
    let mut lm = BurnLm::random(&root().join("../../configs/models/tiny-byte"), "flex", 5).unwrap();
    let a: Vec<u32> = (0..40).collect();
    let reqs = vec![req(a.clone(), 2, 0.0, 0), req(a, 2, 0.0, 0)];
    lm.options.prefix_min_tokens = 40;
    let (_, saved) = generate(&mut lm, true, &reqs);
    assert_eq!(saved, 0, "39 shareable tokens < prefix_min_tokens = 40");
    lm.options.prefix_min_tokens = 39;
    let (_, saved) = generate(&mut lm, true, &reqs);
    assert!(saved > 0);
}
