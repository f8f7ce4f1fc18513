//! `memfactory eval --sweep` end to end with real engines: the committed RULER sweep recipes
//! against a real `llama-server` on 127.0.0.1 (started here) and on the native engine, each
//! judged by an LLM judge on the same backend. Skipped with a printed reason when the
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

/// Runs `eval RECIPE --sweep data.eval.tokens=600,1200` on two questions from the workspace
/// root into `out`, and checks the report, the plot, and the judge's cache and counters.
fn sweep_and_check(recipe: &Path, out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(workspace_root())
        .arg("eval")
        .arg(recipe)
        .args(["--limit", "2", "--set", "data.eval.samples=2"])
        .args(["--sweep", "data.eval.tokens=600,1200", "--out"])
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
    assert!(md.contains("by data.eval.tokens"), "{md}");
    assert!(
        std::fs::read_to_string(out.join("sweep.svg"))
            .unwrap()
            .contains("<svg")
    );
}

#[test]
fn ruler_sweep_against_a_real_llama_server_judged_by_it() {
    let _serial = serial();
    let Some((bin, model)) = inputs() else { return };
    let server = start(&bin, &model, 8192, 4);
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        workspace_root().join("configs/sweep/memagent_ruler_llama_server.toml"),
    )
    .unwrap();
    assert!(text.contains("http://127.0.0.1:8080"));
    let recipe = dir.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        text.replace("http://127.0.0.1:8080", &server.url()),
    )
    .unwrap();
    sweep_and_check(&recipe, &dir.path().join("out"));
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
        &dir.path().join("out"),
    );
}
