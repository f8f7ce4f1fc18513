//! Speed of the native engine in the JSON-lines format of
//! `benches/scripts/compare_engines.py --memfactory-cmd`, so it runs side by side with
//! llama.cpp and HF transformers in one run:
//!
//! ```sh
//! cargo build --release -p memfactory-lm-burn --example bench_json
//! python benches/scripts/compare_engines.py ... \
//!   --memfactory-cmd "target/release/examples/bench_json {gguf} {prompt_tokens} {new_tokens} {batch}"
//! ```
//!
//! Metrics (same definitions as the script): `prefill_tok_s` (one prompt of P tokens),
//! `decode_b1_empty_tok_s` (N greedy tokens after a short prompt), `decode_b1_tok_s` (N
//! greedy tokens after a P-token prompt), `decode_b8_tok_s` (B rows, each its own P-token
//! prompt, aggregate decode throughput). Decode time = time of the full generation minus the
//! time of the same prefill with one new token; best of 3. The prompts are counting
//! sequences so greedy decoding keeps going instead of ending early; the generated count is
//! what is divided. Threads: burn's flex backend uses every core (2 here).
//!
//! On a GPU (`--features wgpu`): `MF_BENCH_DEVICE=wgpu`. `MF_BENCH_RANDOM=DIR` loads the
//! architecture and tokenizer of the Hugging Face directory `DIR` with random weights instead
//! of the GGUF (`BurnLm::random`; off the host-kernel path every device computes in f32, so
//! the speed is the same as with real weights) — e.g. a model's `config.json` beside the
//! byte-level `configs/models/tiny-byte` tokenizer, when the real weights cannot travel.

/// The allocator the `memfactory` binary uses (fresh-buffer-per-op workloads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use memfactory_core::{GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;

fn counting(lm: &BurnLm, start: usize, tokens: usize) -> Vec<u32> {
    let text: String = (start..start + 4 * tokens)
        .map(|i| format!("{i}, "))
        .collect();
    let mut ids = lm.encode(&text).expect("encode");
    ids.truncate(tokens);
    ids
}

/// Best-of-3 seconds of generating `new` tokens for every prompt, and the tokens generated.
fn time(lm: &BurnLm, prompts: &[Vec<u32>], new: usize) -> (f64, usize) {
    let reqs: Vec<GenRequest> = prompts
        .iter()
        .map(|p| GenRequest {
            prompt: Prompt::Tokens(p.clone()),
            params: SamplingParams::greedy(new),
        })
        .collect();
    let mut best = f64::INFINITY;
    let mut generated = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let out = lm.generate(&reqs).expect("generate");
        best = best.min(t.elapsed().as_secs_f64());
        generated = out.iter().map(|g| g.token_ids.len()).sum();
    }
    (best, generated)
}

fn emit(metric: &str, value: f64) {
    println!("{{\"engine\": \"memfactory\", \"metric\": \"{metric}\", \"value\": {value:.3}}}");
}

fn main() {
    memfactory_lm_burn::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, env: &str, default: &str| {
        args.get(i)
            .cloned()
            .or_else(|| std::env::var(env).ok())
            .unwrap_or_else(|| default.to_string())
    };
    let gguf = PathBuf::from(arg(
        0,
        "MF_BENCH_GGUF",
        "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    ));
    let p: usize = arg(1, "MF_BENCH_PROMPT_TOKENS", "512")
        .parse()
        .expect("prompt tokens");
    let n: usize = arg(2, "MF_BENCH_NEW_TOKENS", "128")
        .parse()
        .expect("new tokens");
    let b: usize = arg(3, "MF_BENCH_BATCH", "8").parse().expect("batch");
    let device = std::env::var("MF_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let loaded = match std::env::var_os("MF_BENCH_RANDOM") {
        Some(dir) => BurnLm::random(&PathBuf::from(dir), &device, 1),
        None => BurnLm::load(&gguf, &device),
    };
    let mut lm = match loaded {
        Ok(lm) => lm,
        Err(e) => {
            eprintln!("bench_json: {e}");
            std::process::exit(2);
        }
    };
    lm.options.max_batch = b.max(1);

    // Warm-up (allocations, thread pool).
    let _ = time(&lm, &[counting(&lm, 1, 16)], 4);

    let long = counting(&lm, 1, p);
    let (t_pre, _) = time(&lm, std::slice::from_ref(&long), 1);
    emit("prefill_tok_s", p as f64 / t_pre);

    let short = counting(&lm, 1, 4);
    let (t_s1, _) = time(&lm, std::slice::from_ref(&short), 1);
    let (t_sn, g) = time(&lm, std::slice::from_ref(&short), n);
    emit(
        "decode_b1_empty_tok_s",
        (g.saturating_sub(1)) as f64 / (t_sn - t_s1),
    );

    let (t_ln, g) = time(&lm, std::slice::from_ref(&long), n);
    emit(
        "decode_b1_tok_s",
        (g.saturating_sub(1)) as f64 / (t_ln - t_pre),
    );

    let rows: Vec<Vec<u32>> = (0..b).map(|i| counting(&lm, 1 + 1000 * i, p)).collect();
    let (t_b1, _) = time(&lm, &rows, 1);
    let (t_bn, g) = time(&lm, &rows, n);
    emit(
        "decode_b8_tok_s",
        (g.saturating_sub(b)) as f64 / (t_bn - t_b1),
    );
}
