//! The data source end to end: registry build, file errors, and the real HotpotQA file.

use std::path::{Path, PathBuf};

use memfactory_core::{DataSource, Error, LoadCx, Recipe, Sample};
use memfactory_data_ruler_hqa::{BuildParams, RulerHqa};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load(path: &Path, docs: usize) -> memfactory_core::Result<Vec<Sample>> {
    RulerHqa::new(
        path,
        BuildParams {
            docs,
            ..Default::default()
        },
    )
    .load(&LoadCx::default())
}

/// The `(location, message)` of an [`Error::Data`] about `path`.
fn data_error(err: Error, path: &Path) -> (Option<String>, String) {
    match err {
        Error::Data {
            path: p,
            location,
            message,
        } => {
            assert_eq!(p, path);
            (location, message)
        }
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

const RECORD: &str = r#"{"_id": "a1", "question": "Q?", "answer": "A", "type": "bridge", "level": "easy",
  "supporting_facts": [["T1", 0]], "context": [["T1", ["s1.", " s2."]], ["T2", ["s3."]]]}"#;

#[test]
fn registry_builds_without_io_and_resolves_defaults() {
    let cfg = Recipe::parse(
        "kind = \"ruler-hqa\"\npath = \"/nonexistent/hotpot.json\"\n",
        "<test>",
    )
    .unwrap()
    .cfg();
    let (src, resolved) = memfactory_core::registry::build::<dyn DataSource>(cfg).unwrap();
    assert!(src.describe().contains("/nonexistent/hotpot.json"));
    assert!(src.describe().contains("50 documents"));
    assert_eq!(resolved["kind"].as_str(), Some("ruler-hqa"));
    assert_eq!(resolved["docs"].as_integer(), Some(50));
    assert_eq!(resolved["seed"].as_integer(), Some(0));
    assert_eq!(resolved["offset"].as_integer(), Some(0));
    assert!(!resolved.contains_key("limit"));
}

#[test]
fn registry_rejects_bad_keys() {
    let build = |src: &str| {
        let cfg = Recipe::parse(src, "<test>").unwrap().cfg();
        memfactory_core::registry::build::<dyn DataSource>(cfg)
            .err()
            .unwrap()
            .to_string()
    };
    let err = build("kind = \"ruler-hqa\"\n");
    assert!(err.contains("`path`") && err.contains("missing"), "{err}");
    let err = build("kind = \"ruler-hqa\"\npath = \"x\"\nbogus = 1\n");
    assert!(err.contains("`bogus`"), "{err}");
    let err = build("kind = \"ruler-hqa\"\npath = \"x\"\ndocs = 0\n");
    assert!(err.contains("`docs`"), "{err}");
    let err = build("kind = \"ruler-hqa\"\npath = \"x\"\ndocs = \"many\"\n");
    assert!(err.contains("`docs`"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.json");
    let err = load(&path, 2).unwrap_err();
    assert!(err.is_user_error());
    assert!(err.to_string().contains("absent.json"), "{err}");
    let (_, message) = data_error(err, &path);
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn malformed_json_reports_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.json", "[\n{\"_id\": \"a\",\n  oops}\n]");
    let (location, message) = data_error(load(&path, 2).unwrap_err(), &path);
    let location = location.unwrap();
    assert!(location.starts_with("line 3, column"), "{location}");
    assert!(message.contains("malformed JSON"), "{message}");
}

#[test]
fn missing_or_wrong_field_names_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let no_answer = RECORD.replace(r#""answer": "A", "#, "");
    let path = write(dir.path(), "f.json", &format!("[{RECORD}, {no_answer}]"));
    let (location, message) = data_error(load(&path, 2).unwrap_err(), &path);
    assert_eq!(location.as_deref(), Some("record 1 (_id a1)"));
    assert_eq!(message, "missing field `answer`");

    let bad_ctx = RECORD.replace(r#"["T2", ["s3."]]"#, r#"["T2", "s3."]"#);
    let path = write(dir.path(), "g.json", &format!("[{bad_ctx}]"));
    let (location, message) = data_error(load(&path, 2).unwrap_err(), &path);
    assert_eq!(location.as_deref(), Some("record 0 (_id a1)"));
    assert!(message.contains("`context[1]`"), "{message}");

    let no_id = RECORD.replace(r#""_id": "a1", "#, "");
    let path = write(dir.path(), "h.json", &format!("[{no_id}]"));
    let (location, message) = data_error(load(&path, 2).unwrap_err(), &path);
    assert_eq!(location.as_deref(), Some("record 0"));
    assert_eq!(message, "missing field `_id`");

    let path = write(dir.path(), "i.json", "{\"_id\": 1}");
    let (_, message) = data_error(load(&path, 2).unwrap_err(), &path);
    assert!(message.contains("array"), "{message}");
}

#[test]
fn parameter_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "f.json", &format!("[{RECORD}]"));
    let (location, message) = data_error(load(&path, 1).unwrap_err(), &path);
    assert_eq!(location.as_deref(), Some("record 0 (_id a1)"));
    assert!(message.contains("at least 2"), "{message}");
    let (_, message) = data_error(load(&path, 3).unwrap_err(), &path);
    assert!(
        message.contains("exceeds the 2 distinct documents"),
        "{message}"
    );
    let s = load(&path, 2).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].meta["gold_docs"].as_array().unwrap().len(), 1);
    assert_eq!(s[0].meta["level"].as_str(), Some("easy"));
}

/// The shared HotpotQA dev file, when this checkout has `../shared/data` beside it.
fn hotpot_file() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/hotpotqa/hotpot_dev_distractor_0-1999.json");
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "skipping: {} is absent (a fresh clone has no ../shared/data)",
            p.display()
        );
        None
    }
}

#[test]
fn real_hotpotqa_file_at_50_docs() {
    let Some(path) = hotpot_file() else { return };
    let src = RulerHqa::new(
        &path,
        BuildParams {
            docs: 50,
            seed: 0,
            offset: 0,
            limit: Some(20),
            ..Default::default()
        },
    );
    let samples = src.load(&LoadCx::default()).unwrap();
    assert_eq!(samples.len(), 20);
    assert_eq!(samples[0].id, "5a8b57f25542995d1e6f1371");
    assert_eq!(samples[0].answers, vec!["yes".to_string()]);
    for s in &samples {
        assert!(!s.question.is_empty());
        assert_eq!(s.answers.len(), 1);
        assert!(!s.answers[0].trim().is_empty(), "{}", s.id);
        assert!(s.context.contains("Document 50:\n"));
        assert!(!s.context.contains("Document 51:"));
        // MemAgent: 50 documents ≈ 7K tokens ≈ 30K characters.
        let chars = s.context.chars().count();
        assert!((10_000..80_000).contains(&chars), "{}: {chars} chars", s.id);
        assert_eq!(s.meta["docs"].as_u64(), Some(50));
        assert_eq!(s.meta["source"].as_str(), Some("hotpotqa"));
        assert!(s.meta["type"].is_string() && s.meta["level"].is_string());
        let gold = s.meta["gold_docs"].as_array().unwrap();
        assert!((1..=4).contains(&gold.len()), "{}: {gold:?}", s.id);
        assert!(gold.iter().all(|g| (1..=50).contains(&g.as_u64().unwrap())));
    }
    // Deterministic, and a later slice reproduces the same instances.
    assert_eq!(src.load(&LoadCx::default()).unwrap(), samples);
    let later = RulerHqa::new(
        &path,
        BuildParams {
            docs: 50,
            seed: 0,
            offset: 5,
            limit: Some(3),
            ..Default::default()
        },
    )
    .load(&LoadCx::default())
    .unwrap();
    assert_eq!(later, samples[5..8]);
}

/// A HotpotQA file of `n` records, each with one distinct paragraph of about 210 characters.
fn many_records(n: usize) -> String {
    let records: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"_id": "r{i}", "question": "Q{i}?", "answer": "A{i}", "supporting_facts": [["T{i}", 0]], "context": [["T{i}", ["Paragraph {i} holds a sentence long enough to weigh about two hundred characters, which it reaches by saying the same thing twice: this paragraph is long enough to weigh about two hundred characters."]]]}}"#
            )
        })
        .collect();
    format!("[{}]", records.join(",\n"))
}

#[test]
fn loads_too_large_for_memory_are_refused_and_a_limit_builds_only_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6000;
    let p = write(dir.path(), "many.json", &many_records(n));
    let src = |limit: Option<usize>| {
        let table = match limit {
            Some(l) => format!("\nlimit = {l}"),
            None => String::new(),
        };
        let cfg = Recipe::parse(
            &format!(
                "[data.eval]\nkind = \"ruler-hqa\"\npath = \"{}\"\ndocs = {n}{table}\n",
                p.display().to_string().replace('\\', "/")
            ),
            "<test>",
        )
        .unwrap()
        .cfg()
        .sub("data")
        .unwrap()
        .unwrap()
        .sub("eval")
        .unwrap()
        .unwrap();
        memfactory_core::registry::build::<dyn DataSource>(cfg)
            .unwrap()
            .0
    };
    // 6000 questions padded to all 6000 documents: about 2 G tokens, over the 2^30 one load
    // may build. Refused before building, naming `docs`.
    match src(None).load(&LoadCx::default()).unwrap_err() {
        Error::Config { key, message } => {
            assert_eq!(key, "data.eval.docs");
            assert!(message.contains("6000 samples"), "{message}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // An eval limit of 2 builds two instances, the same as the recipe's own `limit = 2`.
    let two = src(None).load_first(&LoadCx::default(), 2).unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two, src(Some(2)).load(&LoadCx::default()).unwrap());
    // The recipe's smaller limit still applies.
    assert_eq!(
        src(Some(1))
            .load_first(&LoadCx::default(), 2)
            .unwrap()
            .len(),
        1
    );
}
