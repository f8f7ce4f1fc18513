//! Embedding throughput of [`MiniLm`] for `benches/scripts/compare_embedders.py`, which runs
//! it side by side with sentence-transformers on the same sentences:
//!
//! ```sh
//! cargo build --release -p memfactory-embed-minilm --example embed_bench
//! RAYON_NUM_THREADS=2 target/release/examples/embed_bench MODEL_DIR SENTENCES.txt N B
//! ```
//!
//! Embeds the first `N` lines of `SENTENCES.txt` (one sentence per line; fewer lines are
//! cycled) in batches of `B`: one warm-up pass over the first `B` sentences, then the whole
//! set three times; the best pass counts. Prints one JSON line
//! `{"engine": "memfactory", "sentences_per_s": …, "n": N, "batch": B, "threads": T,
//! "seconds": best, "load_s": …}`. Threads: burn's flex backend runs on rayon's global pool,
//! sized by `RAYON_NUM_THREADS` (all cores when unset).

/// The allocator the `memfactory` binary uses (fresh-buffer-per-op workloads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use memfactory_embed_minilm::MiniLm;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: embed_bench MODEL_DIR SENTENCES.txt N BATCH");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let text = std::fs::read_to_string(&args[2]).unwrap_or_else(|e| {
        eprintln!("{}: {e}", args[2]);
        std::process::exit(2)
    });
    let parse = |s: &str, what: &str| -> usize {
        s.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            eprintln!("{what} must be a positive integer, found {s:?}");
            std::process::exit(2)
        })
    };
    let n = parse(&args[3], "N");
    let batch = parse(&args[4], "BATCH");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        eprintln!("{}: no sentences", args[2]);
        std::process::exit(2);
    }
    let sentences: Vec<&str> = lines.iter().cycle().take(n).copied().collect();

    let t = Instant::now();
    let mut m = MiniLm::load(&dir, "flex").unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let load_s = t.elapsed().as_secs_f64();
    m.batch_size = batch;
    m.embed(&sentences[..batch.min(n)]).expect("warm-up");
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let out = m.embed(&sentences).expect("embed");
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), n);
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "{{\"engine\": \"memfactory\", \"sentences_per_s\": {:.2}, \"n\": {n}, \"batch\": {batch}, \"threads\": \"{threads}\", \"seconds\": {best:.4}, \"load_s\": {load_s:.3}}}",
        n as f64 / best
    );
}
