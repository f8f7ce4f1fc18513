//! Every recipe under `configs/repro/` (the papers' protocols) passes `memfactory check`.
//!
//! These recipes name models and files a CI machine does not have: a served model
//! (`kind = "openai"`), GPU weights, MemAgent's own eval files. So that their keys are still
//! checked, the test checks a copy in which
//! - every LM table (`[model]`, and any `model` sub-table such as a closed-book reference)
//!   that is `kind = "openai"` becomes the scripted LM, and a `kind = "burn"` one whose
//!   `path` is missing the random-init test model `configs/models/tiny-byte` (training
//!   needs the native engine);
//! - a `memagent-json` data table whose file is missing reads a one-record stand-in file;
//!
//! and prints what it replaced. A recipe whose other data files are missing (e.g. no
//! `../shared/data`) is skipped with a printed reason. A recipe that checks only with
//! replacements is still a recipe whose keys, values and components are all valid.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scripted() -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String("scripted".into()));
    toml::Value::Table(t)
}

/// The random-init byte-level test model (context 4096).
fn tiny_burn() -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String("burn".into()));
    t.insert(
        "path".into(),
        toml::Value::String("configs/models/tiny-byte".into()),
    );
    t.insert("init_seed".into(), toml::Value::Integer(0));
    toml::Value::Table(t)
}

fn missing(path: &str) -> bool {
    !root().join(path).exists()
}

/// Replaces unavailable LM tables under `table` (at dotted `at`), recording each in `notes`.
fn replace_models(table: &mut toml::Table, at: &str, notes: &mut Vec<String>) {
    for (key, value) in table.iter_mut() {
        let here = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        let toml::Value::Table(t) = value else {
            continue;
        };
        if key == "model" {
            let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let path = t.get("path").and_then(|p| p.as_str());
            let stand_in = if kind == "openai" {
                Some(("a served model".to_string(), "scripted", scripted()))
            } else {
                path.filter(|p| missing(p)).map(|p| {
                    let (name, v) = if kind == "burn" {
                        ("tiny-byte", tiny_burn())
                    } else {
                        ("scripted", scripted())
                    };
                    (format!("missing {p}"), name, v)
                })
            };
            if let Some((why, name, v)) = stand_in {
                notes.push(format!("{here} ({why}) -> {name}"));
                *value = v;
                continue;
            }
        }
        replace_models(t, &here, notes);
    }
}

/// Data tables whose file is missing: a `memagent-json` one reads `stand_in`; the others
/// are returned (the recipe cannot be checked here).
fn replace_data(recipe: &mut toml::Table, stand_in: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let mut absent = Vec::new();
    let Some(toml::Value::Table(data)) = recipe.get_mut("data") else {
        return absent;
    };
    for (split, table) in data.iter_mut() {
        let Some(t) = table.as_table_mut() else {
            continue;
        };
        let Some(path) = t.get("path").and_then(|p| p.as_str()).map(str::to_string) else {
            continue;
        };
        if !missing(&path) {
            continue;
        }
        if t.get("kind").and_then(|k| k.as_str()) == Some("memagent-json") {
            notes.push(format!(
                "data.{split}.path (missing {path}) -> stand-in file"
            ));
            t.insert(
                "path".into(),
                toml::Value::String(stand_in.to_str().unwrap().into()),
            );
        } else {
            absent.push(path);
        }
    }
    absent
}

#[test]
fn repro_recipes_check() {
    let dir = root().join("configs/repro");
    let mut recipes: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    recipes.sort();
    assert!(!recipes.is_empty(), "no recipe in {}", dir.display());

    let tmp = tempfile::tempdir().unwrap();
    let stand_in = tmp.path().join("stand_in.json");
    std::fs::write(
        &stand_in,
        r#"[{"_id": "0", "context": "Document 1:\nParis\nParis is in France.", "input": "Where is Paris?", "answers": ["France"]}]"#,
    )
    .unwrap();

    let mut checked = 0;
    for path in &recipes {
        let text = std::fs::read_to_string(path).unwrap();
        let mut recipe: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
        let mut notes = Vec::new();
        replace_models(&mut recipe, "", &mut notes);
        let mut absent = replace_data(&mut recipe, &stand_in, &mut notes);
        // A sentence embedder has no stand-in: without its weights the recipe is not checked
        // here (CI fetches them).
        if let Some(p) = recipe
            .get("embedder")
            .and_then(|e| e.get("path"))
            .and_then(|p| p.as_str())
            .filter(|p| missing(p))
        {
            absent.push(p.to_string());
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if !absent.is_empty() {
            println!("skipping {name}: missing {}", absent.join(", "));
            continue;
        }
        let copy = tmp.path().join(&*name);
        std::fs::write(&copy, toml::to_string(&recipe).unwrap()).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
            .current_dir(root())
            .arg("check")
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "configs/repro/{name} does not check{}:\n{}",
            if notes.is_empty() {
                String::new()
            } else {
                format!(" (with {})", notes.join("; "))
            },
            String::from_utf8_lossy(&o.stderr)
        );
        if notes.is_empty() {
            println!("checked {name}");
        } else {
            println!("checked {name} with {}", notes.join("; "));
        }
        checked += 1;
    }
    if checked == 0 {
        println!("skipping: no repro recipe could be checked here (data absent)");
    }
}

/// The replacements keep a recipe's mistakes visible: a wrong key still fails.
#[test]
fn a_repro_recipe_with_a_wrong_key_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[run]\nname = \"bad\"\n[model]\nkind = \"scripted\"\n[agent]\nkind = \"memagent\"\nfinal = \"answer_is\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(root())
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("agent.final"), "{err}");
}
