//! Every trained policy committed under `docs/results/` loads and runs: for each
//! `docs/results/<run>/policy/` (a weights-only checkpoint: `manifest.json`, `state.json`,
//! `trainable.safetensors`) and the `recipe.toml` beside it, `memfactory eval --checkpoint`
//! on the first two eval questions exits 0, reports the checkpoint verified against its
//! manifest, and scores both questions. The scores are not checked (the published results in
//! the same directory are); this checks that anyone can evaluate the shipped weights. A
//! model file absent at the recipe's path is taken from `MEMFACTORY_SMOLLM2_GGUF` when that
//! names the same file (CI keeps models outside the clone); runs whose model or data files
//! are still absent are skipped with a printed reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{missing_paths, root};

/// The recipe's model file, and `--set model.path=…` when that file is absent but
/// `MEMFACTORY_SMOLLM2_GGUF` names a file of the same name.
fn model_override(recipe: &toml::Table) -> (Option<&str>, Option<String>) {
    let Some(path) = recipe
        .get("model")
        .and_then(|m| m.get("path"))
        .and_then(|p| p.as_str())
    else {
        return (None, None);
    };
    if root().join(path).exists() {
        return (Some(path), None);
    }
    let set = std::env::var_os("MEMFACTORY_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .filter(|env| env.is_file() && env.file_name() == Path::new(path).file_name())
        .map(|env| format!("model.path={}", env.display()));
    (Some(path), set)
}

#[test]
fn committed_policies_load_and_run() {
    let results = root().join("docs/results");
    let mut policies: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path().join("policy"))
        .filter(|p| p.is_dir())
        .collect();
    policies.sort();
    assert!(
        !policies.is_empty(),
        "no docs/results/*/policy directory: the committed policies are gone"
    );
    for policy in policies {
        let dir = policy.parent().unwrap();
        let recipe = dir.join("recipe.toml");
        let text = std::fs::read_to_string(&recipe)
            .unwrap_or_else(|e| panic!("{}: {e}", recipe.display()));
        for f in ["manifest.json", "state.json", "trainable.safetensors"] {
            assert!(policy.join(f).is_file(), "{} lacks {f}", policy.display());
        }
        let table: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", recipe.display()));
        let (model, set) = model_override(&table);
        // The model's file is not missing when the override supplies it.
        let missing: Vec<String> = missing_paths(&text)
            .into_iter()
            .filter(|p| set.is_none() || Some(p.as_str()) != model)
            .collect();
        if !missing.is_empty() {
            println!(
                "skipping {}: {} not found (fetch the model / provide the data)",
                dir.display(),
                missing.join(", ")
            );
            continue;
        }
        let out = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_memfactory"));
        cmd.current_dir(root()).arg("eval").arg(&recipe);
        if let Some(s) = &set {
            cmd.arg("--set").arg(s);
        }
        let o = cmd
            .arg("--checkpoint")
            .arg(&policy)
            .arg("--limit")
            .arg("2")
            .arg("--out")
            .arg(out.path())
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{}: {log}", dir.display());
        assert!(
            log.contains("weights from checkpoint") && !log.contains("were not verified"),
            "{}: {log}",
            dir.display()
        );
        let scores = std::fs::read_to_string(out.path().join("scores.jsonl")).unwrap();
        assert_eq!(scores.lines().count(), 2, "{}: {scores}", dir.display());
    }
}
