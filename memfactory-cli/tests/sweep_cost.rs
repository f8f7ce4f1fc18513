//! How eval cost grows with context length (issue 17): every eval writes each question's
//! wall seconds and tokens to `cost.jsonl` and a `cost` summary (mean / median seconds per
//! question, peak RSS) to `metrics.json`; a sweep carries them into `sweep.json`, pivots
//! them in `sweep.md` and plots them in `sweep_cost.svg`. Timing never enters
//! `scores.jsonl`, which stays reproducible byte for byte.
//!
//! Runs the scripted RULER smoke recipe (no weights, no data files) over three context
//! lengths.

use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run memfactory")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const TOKENS: [u64; 3] = [1000, 2000, 4000];

#[test]
fn a_context_length_sweep_reports_seconds_per_question_and_peak_memory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let recipe =
        std::fs::read_to_string(root.join("configs/memagent_ruler_scripted_smoke.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipe.toml"), recipe).unwrap();
    let sweep = format!(
        "data.eval.tokens={}",
        TOKENS.map(|t| t.to_string()).join(",")
    );
    let args = [
        "eval",
        "recipe.toml",
        "--limit",
        "2",
        "--out",
        "sw",
        "--sweep",
        &sweep,
    ];
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let sw = dir.path().join("sw");

    // sweep.json: one cost per combination, positive, in run order.
    let report = json(&sw.join("sweep.json"));
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), TOKENS.len());
    let mut prompt_per_q = Vec::new();
    for (r, t) in runs.iter().zip(TOKENS) {
        assert_eq!(r["settings"][0][1], t.to_string(), "{r}");
        let c = &r["cost"];
        assert_eq!(c["samples"], 2, "one cost line per question: {r}");
        let mean = c["seconds_per_question_mean"].as_f64().unwrap();
        let median = c["seconds_per_question_median"].as_f64().unwrap();
        assert!(mean > 0.0 && mean.is_finite(), "{c}");
        assert!(median > 0.0 && median.is_finite(), "{c}");
        let p95 = c["seconds_per_question_p95"].as_f64().unwrap();
        assert!(p95 >= median && p95.is_finite(), "{c}");
        // MemAgent's memory is one overwritten text: its final size is known and positive.
        let memory = c["memory_tokens_per_question"].as_f64().unwrap();
        assert!(memory > 0.0, "{c}");
        assert!(
            c["wall_seconds_per_question"].as_f64().unwrap() > 0.0,
            "{c}"
        );
        if cfg!(target_os = "linux") {
            // At least a megabyte, below a terabyte: a real VmHWM, not a unit slip.
            let rss = c["peak_rss_bytes"].as_u64().expect("peak RSS on Linux");
            assert!((1 << 20..1 << 40).contains(&rss), "{c}");
            assert_eq!(c["peak_rss_scope"], "eval", "{c}");
        } else {
            assert!(c.get("peak_rss_bytes").is_none(), "{c}");
            assert!(
                c["peak_rss_scope"]
                    .as_str()
                    .unwrap()
                    .contains("unavailable")
            );
        }
        prompt_per_q.push(c["prompt_tokens_per_question"].as_f64().unwrap());

        // The run directory: metrics.json's cost is the one in sweep.json; cost.jsonl has
        // one line per question with its seconds and tokens; scores.jsonl has no timing.
        let d = dir.path().join(r["dir"].as_str().unwrap());
        let m = json(&d.join("metrics.json"));
        assert_eq!(&m["cost"], c, "sweep.json carries metrics.json's cost");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(d.join("cost.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let scores = std::fs::read_to_string(d.join("scores.jsonl")).unwrap();
        let ids: Vec<serde_json::Value> = scores
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].clone())
            .collect();
        assert_eq!(
            lines.iter().map(|l| l["id"].clone()).collect::<Vec<_>>(),
            ids
        );
        let mut secs: Vec<f64> = Vec::new();
        let calls: u64 = lines.iter().map(|l| l["lm_calls"].as_u64().unwrap()).sum();
        assert_eq!(
            c["lm_calls_per_question"].as_f64().unwrap(),
            calls as f64 / lines.len() as f64,
            "{c}"
        );
        // Each episode of trajectories.jsonl records its memory's final size, and cost.jsonl
        // its sample's mean.
        let sizes: Vec<f64> = std::fs::read_to_string(d.join("trajectories.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap();
                e["memory_tokens"]
                    .as_f64()
                    .expect("memory_tokens per episode")
            })
            .collect();
        assert_eq!(sizes.len(), lines.len(), "one path per question");
        for (l, size) in lines.iter().zip(&sizes) {
            assert_eq!(l["memory_tokens"].as_f64(), Some(*size), "{l}");
        }
        for l in &lines {
            secs.push(l["seconds"].as_f64().unwrap());
            assert!(l["seconds"].as_f64().unwrap() > 0.0, "{l}");
            assert!(l["lm_calls"].as_u64().unwrap() > 0, "{l}");
            assert!(l["prompt_tokens"].as_u64().unwrap() > 0, "{l}");
            assert!(l["generated_tokens"].as_u64().unwrap() > 0, "{l}");
        }
        let want_mean = secs.iter().sum::<f64>() / secs.len() as f64;
        assert!((mean - want_mean).abs() < 1e-9, "{mean} vs {want_mean}");
        assert!(!scores.contains("seconds"), "timing in scores.jsonl");
    }
    // MemAgent reads the context chunk by chunk: more context, more tokens prefilled.
    assert!(
        prompt_per_q.windows(2).all(|w| w[1] > w[0]),
        "{prompt_per_q:?}"
    );

    // sweep.md pivots the cost; sweep_cost.svg plots it.
    let md = std::fs::read_to_string(sw.join("sweep.md")).unwrap();
    for h in [
        "## seconds per question (mean) by data.eval.tokens",
        "## seconds per question (median) by data.eval.tokens",
        "## peak RSS (MiB) by data.eval.tokens",
        "## prompt tokens per question by data.eval.tokens",
        "## generated tokens per question by data.eval.tokens",
        "## memory tokens at the end per question by data.eval.tokens",
        "sweep_cost.svg",
        "sweep_tradeoff.svg",
    ] {
        assert!(md.contains(h), "{h} missing:\n{md}");
    }
    let svg = std::fs::read_to_string(sw.join("sweep_cost.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "sweep_cost.svg");
    for w in [
        "seconds per question (mean) by data.eval.tokens",
        "peak RSS (MiB) by data.eval.tokens",
    ] {
        assert!(svg.contains(w), "{w} missing from sweep_cost.svg");
    }
    // Accuracy against cost: one labelled point per run.
    let svg = std::fs::read_to_string(sw.join("sweep_tradeoff.svg")).unwrap();
    assert!(
        svg.contains("generated tokens per question"),
        "tradeoff axis"
    );
    for t in TOKENS {
        assert!(
            svg.contains(&format!("data.eval.tokens={t}")),
            "run {t} missing from sweep_tradeoff.svg"
        );
    }

    // Reused combinations keep their cost.
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let again = json(&sw.join("sweep.json"));
    for (a, b) in again["runs"].as_array().unwrap().iter().zip(runs) {
        assert_eq!(a["reused"], true);
        assert_eq!(
            a["cost"], b["cost"],
            "a reused run's cost is the one it measured"
        );
    }
}
