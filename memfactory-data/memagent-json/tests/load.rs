//! Reading MemAgent / MemFactory eval files from temporary files.

use std::path::{Path, PathBuf};

use memfactory_core::{DataSource, Error, LoadCx, Recipe, Sample};
use memfactory_data_memagent_json::MemAgentJson;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load(path: &Path) -> memfactory_core::Result<Vec<Sample>> {
    MemAgentJson::new(path).load(&LoadCx::default())
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

#[test]
fn json_array() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "eval.json",
        r#"
        [
          {"context": "Document 1:\nx", "input": "Q1?", "answers": ["a", "b"], "_id": "h1", "num_tokens": 7},
          {"context": "c2", "input": "Q2?", "answers": ["c"], "index": 5}
        ]"#,
    );
    let s = load(&path).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].id, "h1");
    assert_eq!(s[0].question, "Q1?");
    assert_eq!(s[0].context, "Document 1:\nx");
    assert_eq!(s[0].answers, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(s[0].meta["num_tokens"].as_u64(), Some(7));
    assert!(!s[0].meta.contains_key("_id"));
    assert_eq!(s[1].id, "5");
    assert!(s[1].meta.is_empty());
}

#[test]
fn jsonl_with_blank_lines_and_default_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "eval.jsonl",
        "\n{\"context\": \"c0\", \"input\": \"q0\", \"answers\": [\"a0\"]}\n\n   \n\
         {\"context\": \"c1\", \"input\": \"q1\", \"answers\": [\"a1\"], \"id\": 42, \"_id\": \"x\"}\n\
         {\"context\": \"c2\", \"input\": \"q2\", \"answers\": [\"a2\"]}\n",
    );
    let s = load(&path).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].id, "0");
    // `_id` wins over `id`, which then stays in meta.
    assert_eq!(s[1].id, "x");
    assert_eq!(s[1].meta["id"].as_u64(), Some(42));
    // The fallback id counts records, not lines.
    assert_eq!(s[2].id, "2");
    assert_eq!(s[2].question, "q2");
}

#[test]
fn single_string_answers_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "eval.jsonl",
        "{\"context\": \"c\", \"input\": \"q\", \"answers\": \"only\"}\n",
    );
    assert_eq!(load(&path).unwrap()[0].answers, vec!["only".to_string()]);
}

#[test]
fn malformed_jsonl_line_is_reported_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "eval.jsonl",
        "{\"context\": \"c\", \"input\": \"q\", \"answers\": [\"a\"]}\n\n{\"context\": \"c\", oops}\n",
    );
    let err = load(&path).unwrap_err();
    assert!(err.is_user_error());
    assert!(err.to_string().contains("eval.jsonl"), "{err}");
    let (location, message) = data_error(err, &path);
    assert!(location.unwrap().starts_with("line 3, column"));
    assert!(message.contains("malformed JSON"), "{message}");
}

#[test]
fn malformed_array_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "eval.json", "[\n  {\"context\": \"c\",\n  }\n]");
    let (location, _) = data_error(load(&path).unwrap_err(), &path);
    assert!(location.unwrap().starts_with("line 3, column"));
}

#[test]
fn missing_input_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "eval.jsonl",
        "{\"context\": \"c\", \"input\": \"q\", \"answers\": [\"a\"]}\n{\"context\": \"c\", \"answers\": [\"a\"]}\n",
    );
    let (location, message) = data_error(load(&path).unwrap_err(), &path);
    assert_eq!(location.as_deref(), Some("line 2"));
    assert!(message.contains("missing field `input`"), "{message}");

    let path = write(
        dir.path(),
        "eval.json",
        "[{\"context\": \"c\", \"input\": \"q\", \"answers\": [\"a\"]}, {\"context\": \"c\", \"answers\": [\"a\"]}]",
    );
    let (location, message) = data_error(load(&path).unwrap_err(), &path);
    assert_eq!(location.as_deref(), Some("record 1"));
    assert!(message.contains("missing field `input`"), "{message}");
}

#[test]
fn wrong_types_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "{\"context\": 3, \"input\": \"q\", \"answers\": [\"a\"]}",
            "field `context`: expected a string, found a number",
        ),
        (
            "{\"context\": \"c\", \"input\": \"q\", \"answers\": [1]}",
            "field `answers[0]`: expected a string, found a number",
        ),
        (
            "{\"context\": \"c\", \"input\": \"q\"}",
            "missing field `answers`",
        ),
        ("[1]", "expected an object"),
    ] {
        let path = write(dir.path(), "eval.jsonl", text);
        let (_, message) = data_error(load(&path).unwrap_err(), &path);
        assert!(message.contains(expected), "{text}: {message}");
    }
}

#[test]
fn missing_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.json");
    let (_, message) = data_error(load(&path).unwrap_err(), &path);
    assert!(message.contains("not found"), "{message}");
    let path = write(dir.path(), "empty.jsonl", "  \n\n");
    let (_, message) = data_error(load(&path).unwrap_err(), &path);
    assert!(message.contains("empty"), "{message}");
}

#[test]
fn registry_offset_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..5)
        .map(|i| {
            format!("{{\"context\": \"c{i}\", \"input\": \"q{i}\", \"answers\": [\"a{i}\"]}}\n")
        })
        .collect();
    let path = write(dir.path(), "eval.jsonl", &lines);
    let recipe = format!(
        "kind = \"memagent-json\"\npath = {:?}\noffset = 1\nlimit = 2\n",
        path.display().to_string()
    );
    let cfg = Recipe::parse(&recipe, "<test>").unwrap().cfg();
    let (src, resolved) = memfactory_core::registry::build::<dyn DataSource>(cfg).unwrap();
    assert_eq!(resolved["offset"].as_integer(), Some(1));
    assert_eq!(resolved["limit"].as_integer(), Some(2));
    let s = src.load(&LoadCx::default()).unwrap();
    let ids: Vec<&str> = s.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);

    // Building does no IO; unknown keys and a missing path are rejected.
    let build = |src: &str| {
        let cfg = Recipe::parse(src, "<test>").unwrap().cfg();
        memfactory_core::registry::build::<dyn DataSource>(cfg).map(|(s, _)| s.describe())
    };
    assert!(build("kind = \"memagent-json\"\npath = \"/nonexistent.json\"\n").is_ok());
    let err = build("kind = \"memagent-json\"\n").unwrap_err().to_string();
    assert!(err.contains("`path`"), "{err}");
    let err = build("kind = \"memagent-json\"\npath = \"x\"\ndocs = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`docs`"), "{err}");

    let src = MemAgentJson {
        path: path.clone(),
        offset: 5,
        limit: None,
    };
    let (_, message) = data_error(src.load(&LoadCx::default()).unwrap_err(), &path);
    assert!(message.contains("offset = 5"), "{message}");
}
