//! Engine speed on SmolLM2-135M-Instruct (GGUF Q4_1): prefill of a 512-token prompt, and
//! decode at batch 1 and batch 8. Skips with a message when the model file is absent
//! (`MEMFACTORY_SMOLLM2_GGUF`, default `models/smollm2-135m-instruct/...` in the workspace).
//!
//! Besides criterion's timings it prints tokens/s for each case.

use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use memfactory_core::{GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;

const DECODE_TOKENS: usize = 32;

fn model_path() -> PathBuf {
    match std::env::var_os("MEMFACTORY_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

fn prompt_of(lm: &BurnLm, n: usize) -> Vec<u32> {
    let text = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
    let one = lm.encode(text).unwrap();
    one.iter().cycle().take(n).copied().collect()
}

fn req(prompt: Vec<u32>, n: usize, seed: u64) -> GenRequest {
    // Sampling at temperature 1 keeps rows from stopping early on EOS too often; a stop at
    // EOS is still counted honestly (tokens actually generated).
    GenRequest {
        prompt: Prompt::Tokens(prompt),
        params: SamplingParams {
            max_new_tokens: n,
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        },
    }
}

fn generated(lm: &BurnLm, reqs: &[GenRequest]) -> (usize, f64) {
    let t = Instant::now();
    let g = lm.generate(reqs).unwrap();
    (
        g.iter().map(|g| g.token_ids.len()).sum(),
        t.elapsed().as_secs_f64(),
    )
}

fn main() {
    let path = model_path();
    if !path.exists() {
        println!(
            "skipping: model file {} not found (set MEMFACTORY_SMOLLM2_GGUF)",
            path.display()
        );
        return;
    }
    let lm = BurnLm::load(&path, "flex").unwrap();
    let p512 = prompt_of(&lm, 512);
    let p16 = prompt_of(&lm, 16);

    // One-shot numbers (printed): prefill = time to the first token; decode = the rest.
    let (_, t_prefill) = generated(&lm, &[req(p512.clone(), 1, 0)]);
    println!(
        "prefill 512 tokens: {:.2}s = {:.1} tok/s",
        t_prefill,
        512.0 / t_prefill
    );
    for b in [1usize, 8] {
        let reqs: Vec<GenRequest> = (0..b)
            .map(|i| req(p16.clone(), DECODE_TOKENS, i as u64))
            .collect();
        let first: Vec<GenRequest> = (0..b).map(|i| req(p16.clone(), 1, i as u64)).collect();
        let (_, t1) = generated(&lm, &first);
        let (n, t) = generated(&lm, &reqs);
        let steps = n.saturating_sub(b);
        println!(
            "decode batch {b}: {n} tokens in {t:.2}s; excluding prefill {:.1} tok/s aggregate",
            steps as f64 / (t - t1)
        );
    }
    let (_, t1) = generated(&lm, &[req(p512.clone(), 1, 0)]);
    let (n, t) = generated(&lm, &[req(p512.clone(), DECODE_TOKENS + 1, 0)]);
    println!(
        "decode batch 1 after a 512-token prompt: {:.1} tok/s",
        (n - 1) as f64 / (t - t1)
    );

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut g = c.benchmark_group("smollm2");
    g.throughput(Throughput::Elements(512));
    g.bench_function("prefill_512", |bch| {
        bch.iter(|| lm.generate(&[req(p512.clone(), 1, 0)]).unwrap())
    });
    for b in [1usize, 8] {
        g.throughput(Throughput::Elements((b * DECODE_TOKENS) as u64));
        let reqs: Vec<GenRequest> = (0..b)
            .map(|i| req(p16.clone(), DECODE_TOKENS, i as u64))
            .collect();
        g.bench_function(format!("generate_16+{DECODE_TOKENS}_batch{b}"), |bch| {
            bch.iter(|| lm.generate(&reqs).unwrap())
        });
    }
    g.finish();
    c.final_summary();
}
