//! Every committed recipe under `configs/` passes `memfactory check` (recipes whose model
//! or data files are absent here are skipped with a printed reason), and the scripted smoke
//! recipe runs end to end.

mod common;

use std::process::Command;

use common::{missing_paths, root};

#[test]
fn committed_recipes_check() {
    let mut checked = 0;
    let recipes = ["configs", "configs/sweep"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
        .map(|e| e.unwrap().path());
    for path in recipes {
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("kind = \"openai\"") {
            // Loading its data asks the server's tokenizer; tests/sweep_engines.rs runs
            // these recipes against a real llama-server.
            println!("skipping {}: needs a running server", path.display());
            continue;
        }
        let missing = missing_paths(&text);
        if !missing.is_empty() {
            println!(
                "skipping {}: missing {}",
                path.display(),
                missing.join(", ")
            );
            continue;
        }
        let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
            .current_dir(root())
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{} does not check:\n{}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no recipe was checked");
}

#[test]
fn scripted_smoke_recipe_runs() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(root())
        .args([
            "eval",
            "configs/memagent_ruler_scripted_smoke.toml",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["n"], 20);
    // The scripted model answers whenever the needle was not split across two chunks.
    assert!(m["metrics"]["sub-em"].as_f64().unwrap() >= 0.8, "{m}");
}

#[test]
fn memory_r1_scripted_smoke_reports_per_category() {
    let data = root().join("../shared/data/persona_chat/Synthetic-Persona-Chat_valid.csv");
    if !data.exists() {
        eprintln!("skipped: {} is absent", data.display());
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(root())
        .args([
            "eval",
            "configs/memory_r1_convgen_scripted_smoke.toml",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["n"], 10);
    let cats = m["by_category"]
        .as_object()
        .expect("a per-category breakdown");
    let names: Vec<&str> = cats.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "abstention",
            "knowledge-update",
            "multi-session",
            "single-session",
            "temporal"
        ]
    );
    for (c, v) in cats {
        assert_eq!(v["n"], 2, "{c}");
        for k in ["f1", "bleu1", "exact-match"] {
            assert!(v["metrics"][k].is_number(), "{c} lacks {k}");
        }
    }
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(report.contains("## By category"), "{report}");
    // Every episode ran the whole Memory-R1 pipeline: extraction, the manager, the answer.
    let traj = std::fs::read_to_string(out.path().join("trajectories.jsonl")).unwrap();
    for line in traj.lines() {
        let ep: serde_json::Value = serde_json::from_str(line).unwrap();
        let roles: std::collections::BTreeSet<&str> = ep["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["role"].as_str())
            .collect();
        assert_eq!(
            roles.into_iter().collect::<Vec<_>>(),
            ["answer", "extract", "manage"],
            "{}",
            ep["sample_id"]
        );
        assert!(ep["answer"].is_string());
    }
}

/// The LoCoMo papers' F1 and BLEU-1 score the whole response (Mem0); with the answer
/// metrics' default extraction (`boxed`) they find nothing to score in an unboxed answer, so
/// every committed recipe names `extract` for them (a recipe that did not scored nothing).
#[test]
fn locomo_metrics_name_their_extraction() {
    let dirs = ["configs", "configs/sweep", "configs/repro", "configs/tests"];
    let mut seen = 0;
    for path in dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut tables: Vec<&toml::Table> = Vec::new();
        if let Some(m) = t
            .get("eval")
            .and_then(|e| e.get("metrics"))
            .and_then(|m| m.as_array())
        {
            tables.extend(m.iter().filter_map(|v| v.as_table()));
        }
        if let Some(r) = t
            .get("train")
            .and_then(|e| e.get("rewards"))
            .and_then(|m| m.as_array())
        {
            tables.extend(r.iter().filter_map(|v| v.as_table()));
        }
        for m in tables {
            let kind = m.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind == "f1-mem0" || kind == "bleu1-nltk" {
                seen += 1;
                assert!(
                    m.contains_key("extract") || m.contains_key("require_boxed"),
                    "{}: `{kind}` without `extract` scores only \\boxed{{}} answers; \
                     name extract = \"text\" (Mem0 scores the whole response)",
                    path.display()
                );
            }
        }
    }
    assert!(seen > 0, "no recipe uses f1-mem0 / bleu1-nltk any more");
}
