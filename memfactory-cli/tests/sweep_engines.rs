//! `memfactory eval --sweep` end to end with real engines: the committed RULER and
//! RULER-HotpotQA sweep recipes against a real `llama-server` on 127.0.0.1 (started here) and
//! on the native engine, each judged by an LLM judge on the same backend. Skipped with a printed reason when the
//! server binary or the SmolLM2 GGUF is missing; `.ci/run` provides both.

use std::path::Path;
use std::process::Command;

use memfactory_testkit::llama_server::{inputs, serial, start, workspace_root};

fn gguf() -> Option<std::path::PathBuf> {
    let p = workspace_root().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        println!("skipped: no SmolLM2 GGUF at {}", p.display());
        None
    }
}

/// The RULER sweep of the tests: two questions at 600 and 1,200 tokens.
const RULER: &[&str] = &[
    "--limit",
    "2",
    "--set",
    "data.eval.samples=2",
    "--sweep",
    "data.eval.tokens=600,1200",
];

/// The RULER-HotpotQA sweep of the tests: two questions among 10 documents (a question's
/// own ten paragraphs, no distractor) and 20.
const HOTPOTQA: &[&str] = &["--limit", "2", "--sweep", "data.eval.docs=10,20"];

/// Whether the HotpotQA file the RULER-HotpotQA recipes read is present.
fn hotpotqa() -> bool {
    let p = workspace_root().join("data/hotpotqa/hotpot_dev_distractor_0-1999.json");
    if !p.is_file() {
        println!("skipped: no HotpotQA file at {}", p.display());
    }
    p.is_file()
}

/// Runs `eval RECIPE ARGS…` (a two-point sweep on two questions) from the workspace root
/// into `out`, and checks the report, the plot, and the judge's cache and counters.
fn sweep_and_check(recipe: &Path, out: &Path, args: &[&str]) {
    let axis = args[args.len() - 1].split('=').next().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(workspace_root())
        .arg("eval")
        .arg(recipe)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run memfactory");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{log}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{json}");
    for r in runs {
        assert_eq!(r["n"], 2, "{r}");
        let judge = r["metrics"]["judge"].as_f64();
        assert!(judge.is_some_and(|j| (0.0..=1.0).contains(&j)), "{r}");
        let dir = Path::new(r["dir"].as_str().unwrap());
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap())
                .unwrap();
        let c = &m["reward_counters"]["judge"];
        assert!(c["verdicts_asked"].as_u64().unwrap() >= 1, "{m}");
        assert!(c["unparsable"].as_u64().is_some(), "{m}");
        let cache = std::fs::read_to_string(dir.join("judge-cache.jsonl")).unwrap();
        assert_eq!(
            cache.lines().count() as u64,
            c["verdicts_asked"].as_u64().unwrap(),
            "one cache line per verdict asked"
        );
    }
    // Longer contexts are read in more chunks, so they take more LM calls.
    let calls = |i: usize| {
        let dir = Path::new(runs[i]["dir"].as_str().unwrap());
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap())
                .unwrap();
        m["lm_calls"].as_u64().unwrap()
    };
    assert!(calls(1) > calls(0), "{} vs {}", calls(1), calls(0));
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains(&format!("by {axis}")), "{md}");
    assert!(
        std::fs::read_to_string(out.join("sweep.svg"))
            .unwrap()
            .contains("<svg")
    );
}

/// The committed llama-server recipe `name`, pointed at `server`, written into `dir`.
fn served_recipe(name: &str, server: &str, dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("configs/sweep").join(name)).unwrap();
    assert!(text.contains("http://127.0.0.1:8080"));
    let recipe = dir.join(name);
    std::fs::write(&recipe, text.replace("http://127.0.0.1:8080", server)).unwrap();
    recipe
}

#[test]
fn ruler_and_hotpotqa_sweeps_against_a_real_llama_server_judged_by_it() {
    let _serial = serial();
    let Some((bin, model)) = inputs() else { return };
    let server = start(&bin, &model, 8192, 4);
    let dir = tempfile::tempdir().unwrap();
    let recipe = served_recipe(
        "memagent_ruler_llama_server.toml",
        &server.url(),
        dir.path(),
    );
    sweep_and_check(&recipe, &dir.path().join("ruler"), RULER);
    if hotpotqa() {
        let recipe = served_recipe(
            "memagent_hotpotqa_llama_server.toml",
            &server.url(),
            dir.path(),
        );
        sweep_and_check(&recipe, &dir.path().join("hotpotqa"), HOTPOTQA);
    }
    drop(server);
}

#[test]
fn ruler_sweep_on_the_native_engine_judged_by_it() {
    let _serial = serial();
    if gguf().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sweep_and_check(
        &workspace_root().join("configs/sweep/memagent_ruler_native.toml"),
        &dir.path().join("ruler"),
        RULER,
    );
    if hotpotqa() {
        sweep_and_check(
            &workspace_root().join("configs/sweep/memagent_hotpotqa_native.toml"),
            &dir.path().join("hotpotqa"),
            HOTPOTQA,
        );
    }
}
