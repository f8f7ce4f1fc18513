//! Tidy checks on the workspace layout, run as ordinary tests:
//! - layering: `cli > memfactory (facade) > rl > agents > ops, store, lm, embed, data, rewards > core`;
//! - only LM backends and the trainer depend on burn;
//! - naming rule: every component crate `memfactory-<family>-<kind>` has facade feature
//!   `<family>-<kind>` (test-support crates, marked `publish = false`, are not components);
//! - every crate starts with a rustdoc header;
//! - no prompt template's worked example is copied from evaluation data (LoCoMo).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read_toml(p: &Path) -> toml::Table {
    std::fs::read_to_string(p).unwrap().parse().unwrap()
}

struct Member {
    dir: PathBuf,
    name: String,
    deps: Vec<String>,
    /// `publish = false`: test support (e.g. the store conformance suite), not a component.
    support: bool,
}

fn members() -> Vec<Member> {
    let ws = read_toml(&root().join("Cargo.toml"));
    ws["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let dir = root().join(m.as_str().unwrap());
            let t = read_toml(&dir.join("Cargo.toml"));
            let name = t["package"]["name"].as_str().unwrap().to_string();
            let deps = t
                .get("dependencies")
                .and_then(|d| d.as_table())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            let support = t["package"].get("publish").and_then(|p| p.as_bool()) == Some(false);
            Member {
                dir,
                name,
                deps,
                support,
            }
        })
        .collect()
}

/// Layer of a crate (higher may depend on lower only).
fn layer(name: &str) -> Option<u8> {
    let prefixes: [(&str, u8); 10] = [
        ("memfactory-core", 0),
        ("memfactory-op-", 1),
        ("memfactory-store-", 1),
        ("memfactory-lm-", 1),
        ("memfactory-embed-", 1),
        ("memfactory-data-", 1),
        ("memfactory-reward-", 1),
        ("memfactory-agent-", 2),
        ("memfactory-rl", 3),
        ("memfactory-cli", 5),
    ];
    if name == "memfactory" {
        return Some(4);
    }
    prefixes
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, l)| *l)
}

#[test]
fn layering_is_respected() {
    for m in members() {
        let Some(own) = layer(&m.name) else { continue };
        for d in m.deps.iter().filter(|d| d.starts_with("memfactory")) {
            let dl = layer(d).unwrap_or_else(|| panic!("unknown crate {d}"));
            assert!(
                dl < own || (own == 1 && dl == 0),
                "{} (layer {own}) must not depend on {d} (layer {dl})",
                m.name
            );
        }
    }
}

#[test]
fn only_lm_backends_and_the_trainer_depend_on_burn() {
    for m in members() {
        if m.deps.iter().any(|d| d.starts_with("burn")) {
            assert!(
                m.name.starts_with("memfactory-lm-")
                    || m.name.starts_with("memfactory-embed-")
                    || m.name == "memfactory-rl"
                    || m.name == "memfactory-benches",
                "{} depends on burn",
                m.name
            );
        }
    }
}

#[test]
fn component_crates_have_facade_features() {
    let facade = read_toml(&root().join("memfactory/Cargo.toml"));
    let features = facade["features"].as_table().unwrap();
    for m in members().into_iter().filter(|m| !m.support) {
        for family in ["op", "store", "lm", "embed", "data", "reward", "agent"] {
            if let Some(kind) = m.name.strip_prefix(&format!("memfactory-{family}-")) {
                let f = format!("{family}-{kind}");
                assert!(
                    features.contains_key(&f),
                    "facade lacks feature `{f}` for {}",
                    m.name
                );
            }
        }
    }
}

#[test]
fn every_crate_has_a_rustdoc_header() {
    for m in members() {
        let lib = m.dir.join("src/lib.rs");
        let main = m.dir.join("src/main.rs");
        let src = std::fs::read_to_string(if lib.exists() { lib } else { main }).unwrap();
        assert!(
            src.trim_start().starts_with("//!"),
            "{} lacks a //! header",
            m.name
        );
    }
}

/// Every prompt template shipped with an op or a paradigm.
fn templates() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for m in members() {
        let dir = m.dir.join("templates");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "txt") {
                let t = std::fs::read_to_string(&p).unwrap();
                out.push((p, t));
            }
        }
    }
    out
}

#[test]
fn prompt_examples_are_not_copied_from_evaluation_data() {
    // A worked example taken from LoCoMo hands the model the answer to one of its questions
    // (a 0.5B model copied conv-26's "7 May 2023" from such an example): examples must be
    // invented. Every question and every utterance of at least 24 characters is checked.
    let data = root().join("../shared/data/locomo/locomo_conv26_conv30.json");
    let Ok(text) = std::fs::read_to_string(&data) else {
        eprintln!("skipped: {} is absent", data.display());
        return;
    };
    let v: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
    let mut needles: Vec<String> = Vec::new();
    for conv in v.as_array().unwrap() {
        for qa in conv["qa"].as_array().into_iter().flatten() {
            if let Some(q) = qa["question"].as_str() {
                needles.push(q.to_lowercase());
            }
        }
        for (k, turns) in conv["conversation"].as_object().unwrap() {
            if !k.starts_with("session_") || k.ends_with("date_time") {
                continue;
            }
            for t in turns.as_array().into_iter().flatten() {
                if let Some(x) = t["text"].as_str() {
                    needles.push(x.to_lowercase());
                }
            }
        }
    }
    needles.retain(|n| n.len() >= 24);
    assert!(needles.len() > 500, "read too little of {}", data.display());
    let templates = templates();
    assert!(
        templates.len() >= 8,
        "found only {} templates",
        templates.len()
    );
    for (p, t) in templates {
        let t = t.to_lowercase();
        for n in &needles {
            assert!(
                !t.contains(n.as_str()),
                "{} contains LoCoMo text {n:?}",
                p.display()
            );
        }
    }
}
