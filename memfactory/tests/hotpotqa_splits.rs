//! Train / dev / eval disjointness: a training recipe whose splits share questions is
//! refused, naming both keys — before anything loads for `ruler-hqa` record ranges, at load
//! for shared sample ids — and the shipped HotpotQA recipes pass.
#![cfg(all(
    feature = "train",
    feature = "data-ruler-hqa",
    feature = "data-memagent-json"
))]

use std::path::{Path, PathBuf};

use memfactory::train::{TrainJob, run_train};
use memfactory_core::{Error, Recipe};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The CI training recipe (random 2-layer model) with its `[data.*]` tables replaced by
/// `data` (TOML text).
fn recipe_with_data(data: &str) -> Recipe {
    let text = std::fs::read_to_string(root().join("configs/tests/grpo_tiny_random.toml"))
        .unwrap()
        .replace(
            "path = \"configs/models/tiny-byte\"",
            &format!(
                "path = {:?}",
                root()
                    .join("configs/models/tiny-byte")
                    .display()
                    .to_string()
            ),
        );
    let (head, rest) = text.split_once("[data.train]").unwrap();
    let (_, tail) = rest.split_once("[eval]").unwrap();
    Recipe::parse(&format!("{head}{data}\n[eval]{tail}"), "<test>").unwrap()
}

fn config_error(e: Error) -> (String, String) {
    match e {
        Error::Config { key, message } => (key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn hqa(split: &str, path: &str, extra: &str) -> String {
    format!("[data.{split}]\nkind = \"ruler-hqa\"\npath = \"{path}\"\n{extra}\n")
}

#[test]
fn overlapping_ruler_hqa_ranges_are_refused_before_loading() {
    // No file is read: the ranges are compared from the recipe.
    let f = "no/such/hotpot.json";
    let job = |data: String| TrainJob::from_recipe(&recipe_with_data(&data));

    // Train on everything, evaluate on the first 200: refused, naming data.eval.
    let e = job(hqa("train", f, "")
        + &hqa("dev", f, "offset = 200\nlimit = 8")
        + &hqa("eval", f, "limit = 200"))
    .err()
    .unwrap();
    let (key, message) = config_error(e);
    assert_eq!(key, "data.dev");
    assert!(message.contains("data.train (records 0..)"), "{message}");
    assert!(message.contains("data.dev (records 200..208)"), "{message}");

    let e = job(hqa("train", f, "offset = 100")
        + &hqa("dev", f, "offset = 0\nlimit = 64")
        + &hqa("eval", f, "limit = 200"))
    .err()
    .unwrap();
    let (key, message) = config_error(e);
    assert_eq!(key, "data.eval");
    assert!(
        message.contains("data.train (records 100..)")
            && message.contains("data.eval (records 0..200)"),
        "{message}"
    );

    // Disjoint ranges (train from 200, eval and dev inside 0..200), or another file: fine.
    assert!(
        job(hqa("train", f, "offset = 200")
            + &hqa("dev", f, "limit = 64")
            + &hqa("eval", f, "limit = 200"))
        .is_ok()
    );
    assert!(
        job(hqa("train", f, "limit = 200")
            + &hqa("dev", f, "offset = 200\nlimit = 8")
            + &hqa("eval", f, "offset = 200"))
        .is_ok()
    );
    assert!(job(hqa("train", f, "") + &hqa("dev", "other.json", "limit = 8")).is_ok());
}

/// Every shipped recipe that trains on ruler-hqa passes the check, and the GPU recipe
/// follows MemAgent's split: training questions from record 200 on at 200 documents,
/// evaluation on records 0..200 filtered closed-book to the first 128.
#[test]
fn shipped_hotpotqa_training_recipes_are_disjoint() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let recipe = Recipe::from_file(&path).unwrap();
        let cfg = recipe.cfg();
        let table = cfg.table();
        let Some(data) = table.get("data").and_then(|d| d.as_table()) else {
            continue;
        };
        let is_hqa = |s: &str| {
            data.get(s)
                .and_then(|t| t.get("kind"))
                .and_then(|k| k.as_str())
                == Some("ruler-hqa")
        };
        if !is_hqa("train") {
            continue;
        }
        // The recipe's data tables (closed-book models left out: they name weights this
        // test does not have) under the CI recipe's model and trainer.
        let mut data = data.clone();
        for split in ["train", "dev", "eval"] {
            if let Some(cb) = data
                .get_mut(split)
                .and_then(|t| t.get_mut("closed_book"))
                .and_then(|c| c.as_table_mut())
            {
                cb.remove("model");
                cb.insert("keep_ids".into(), "unused.json".into());
            }
        }
        let mut wrapper = toml::Table::new();
        wrapper.insert("data".into(), toml::Value::Table(data.clone()));
        let text = toml::to_string(&wrapper).unwrap();
        TrainJob::from_recipe(&recipe_with_data(&text))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;

        // Mutant: the same recipe training from record 0 is refused.
        let t = data["train"].as_table().unwrap().clone();
        let mut bad = t.clone();
        bad.remove("offset");
        bad.remove("limit");
        data.insert("train".into(), toml::Value::Table(bad));
        wrapper.insert("data".into(), toml::Value::Table(data.clone()));
        assert!(
            TrainJob::from_recipe(&recipe_with_data(&toml::to_string(&wrapper).unwrap())).is_err(),
            "{}",
            path.display()
        );

        if path.ends_with("memagent_grpo_qwen3_1.7b_gpu.toml") {
            assert!(t["offset"].as_integer().unwrap() >= 200);
            assert_eq!(t["docs"].as_integer(), Some(200));
            let eval = table["data"]["eval"].as_table().unwrap();
            assert_eq!(
                eval.get("offset").and_then(|o| o.as_integer()).unwrap_or(0),
                0
            );
            assert_eq!(eval["limit"].as_integer(), Some(200));
            assert_eq!(eval["closed_book"]["keep_first"].as_integer(), Some(128));
            assert_eq!(eval["shuffle"].as_str(), Some("memagent"));
        }
    }
    assert!(checked >= 1, "no shipped recipe trains on ruler-hqa");
}

/// Splits of other kinds are compared by sample id once loaded: a dev split that repeats
/// training samples stops the run before the run directory is made.
#[test]
fn dev_samples_shared_with_training_are_refused_at_load() {
    let letters = root().join("configs/tests/tiny_letters.jsonl");
    let data = format!(
        "[data.train]\nkind = \"memagent-json\"\npath = {p:?}\nlimit = 8\n\
         [data.dev]\nkind = \"memagent-json\"\npath = {p:?}\noffset = 6\n",
        p = letters.display().to_string()
    );
    let job = TrainJob::from_recipe(&recipe_with_data(&data)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let e = run_train(job, &run, false, &mut |_| {}).err().unwrap();
    let (key, message) = config_error(e);
    assert_eq!(key, "data.dev");
    assert!(
        message.contains("2 dev samples") && message.contains("data.train"),
        "{message}"
    );
    assert!(!run.exists());
}
