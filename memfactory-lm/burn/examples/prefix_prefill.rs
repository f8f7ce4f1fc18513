//! Prefill of a GRPO-style group with and without shared prompt prefixes
//! (`EngineOptions::prefix_sharing`): G requests with one identical P-token prompt, one new
//! token each (so the time is the prefill plus one sampling step), run as one batch.
//!
//! ```sh
//! cargo build --release -p memfactory-lm-burn --example prefix_prefill
//! target/release/examples/prefix_prefill MODEL.gguf on|off [P=1024] [G=8] [REPS=3]
//! ```
//!
//! Prints one JSON line: the median seconds of `REPS` timed `generate` calls (after one
//! untimed warm-up), the resident memory after loading the model, and the peak resident
//! memory during the calls (Linux: the peak is reset through `/proc/self/clear_refs` after
//! the model is loaded, so it is the peak of the generation calls on top of the loaded
//! model). Run the two modes
//! as separate processes, alternated (`benches/scripts/prefix_sharing.sh` does), so that one
//! mode's freed memory does not hide the other's peak. Threads: burn's flex backend uses
//! every core.

/// The allocator the `memfactory` binary uses (fresh-buffer-per-op workloads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use memfactory_core::{GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`), 0 where unreadable.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || !matches!(args[2].as_str(), "on" | "off") {
        eprintln!("usage: prefix_prefill MODEL on|off [PROMPT_TOKENS=1024] [GROUP=8] [REPS=3]");
        std::process::exit(2);
    }
    let num = |i: usize, d: usize| -> usize {
        args.get(i).map_or(d, |s| {
            s.parse().unwrap_or_else(|_| {
                eprintln!("argument {i} must be a positive integer, got {s:?}");
                std::process::exit(2)
            })
        })
    };
    let (p, g, reps) = (num(3, 1024), num(4, 8), num(5, 3).max(1));
    let mut lm = BurnLm::load(&PathBuf::from(&args[1]), "flex").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    lm.options.max_batch = g.max(1);
    lm.options.prefix_sharing = args[2] == "on";
    // A long instruction-like text, cut at P tokens.
    let text = "Read the document below and answer the question that follows it in one short \
                phrase. The document is a sequence of numbered paragraphs about the history \
                of a small harbour town, its trade, its families and its weather. "
        .repeat(1 + p / 8);
    let mut ids = lm.encode(&text).expect("encode");
    ids.truncate(p);
    assert_eq!(ids.len(), p, "the text is long enough for {p} tokens");
    let reqs: Vec<GenRequest> = (0..g as u64)
        .map(|seed| GenRequest {
            prompt: Prompt::Tokens(ids.clone()),
            params: SamplingParams {
                max_new_tokens: 1,
                temperature: 1.0,
                seed,
                ..Default::default()
            },
        })
        .collect();
    let rss_before = status_kib("VmRSS:");
    // Resets VmHWM to the current RSS (Linux >= 4.0); without it the peak includes loading.
    // Reset before the warm-up: the allocator keeps what the first call freed, so later
    // calls would not raise the peak again.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    lm.generate(&reqs).expect("warm-up");
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let out = lm.generate(&reqs).expect("generate");
        secs.push(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), g);
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "{{\"sharing\":{},\"prompt_tokens\":{p},\"group\":{g},\"reps\":{reps},\
         \"prefill_s_median\":{:.4},\"prefill_s_min\":{:.4},\"prefill_s_max\":{:.4},\
         \"rss_loaded_mib\":{:.1},\"peak_rss_mib\":{:.1},\"peak_reset\":{reset},\
         \"shared_positions\":{}}}",
        lm.options.prefix_sharing,
        secs[secs.len() / 2],
        secs[0],
        secs[secs.len() - 1],
        rss_before as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
        lm.shared_prefill_positions()
    );
}
