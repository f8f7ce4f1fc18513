//! The `locomo` data source end to end: registry build, small files written here (format,
//! ordering, windows, errors), and the real LoCoMo file from `../shared/data`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memfactory_core::{DataSource, Dialogue, Error, LoadCx, Recipe, Sample, Session, Turn};
use memfactory_data_locomo::{
    ADVERSARIAL_ANSWER, Locomo, Window, category_name, split_evidence, window_dialogue,
};
use serde_json::json;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load(src: &Locomo) -> memfactory_core::Result<Vec<Sample>> {
    src.load(&LoadCx::default())
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

fn build(src: &str) -> memfactory_core::Result<(Box<dyn DataSource>, toml::Table)> {
    let cfg = Recipe::parse(src, "<test>").unwrap().cfg();
    memfactory_core::registry::build::<dyn DataSource>(cfg)
}

/// A small conversation in the locomo10.json layout; sessions written out of order.
fn small_conversation(id: &str) -> serde_json::Value {
    json!({
        "sample_id": id,
        "conversation": {
            "speaker_a": "Ann",
            "speaker_b": "Bob",
            "session_10": [
                {"speaker": "Ann", "dia_id": "D10:1", "text": "Last one."}
            ],
            "session_2_date_time": "9:00 am on 2 May, 2023",
            "session_2": [
                {"speaker": "Bob", "dia_id": "D2:1", "text": "Back again.",
                 "img_url": ["http://x/y.jpg"], "blip_caption": "a photo of a red bike",
                 "query": "bike", "re-download": true},
                {"speaker": "Ann", "dia_id": "D2:2", "text": "Nice bike!"}
            ],
            "session_1_date_time": "1:56 pm on 1 May, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob."},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "Hi Ann, I bought a bike."},
                {"speaker": "Ann", "dia_id": "D1:3", "text": "Which colour?"}
            ],
            "session_10_date_time": "5:00 pm on 10 June, 2023",
            "session_11_date_time": "a date without a session"
        },
        "qa": [
            {"question": "When did Bob buy a bike?", "answer": "1 May 2023",
             "evidence": ["D1:2"], "category": 2},
            {"question": "How many bikes?", "answer": 1, "evidence": ["D1:2; D2:1"],
             "category": 1},
            {"question": "What would Bob like?", "answer": "cycling",
             "evidence": [], "category": 3},
            {"question": "What colour is Ann's bike?", "evidence": ["D2:1"], "category": 5,
             "adversarial_answer": "red"},
            {"question": "What does Ann say last?", "answer": "Last one.",
             "evidence": ["D10:01"], "category": 4}
        ],
        "event_summary": {}, "observation": {}, "session_summary": {}
    })
}

fn small_file(dir: &Path) -> PathBuf {
    let text = serde_json::to_string_pretty(&json!([
        small_conversation("conv-a"),
        small_conversation("conv-b")
    ]))
    .unwrap();
    write(dir, "locomo.json", &text)
}

#[test]
fn registry_builds_without_io_and_resolves_defaults() {
    let (src, resolved) =
        build("kind = \"locomo\"\npath = \"/nonexistent/locomo.json\"\n").unwrap();
    assert!(src.describe().contains("/nonexistent/locomo.json"));
    assert!(src.describe().contains("categories [1, 2, 3, 4]"));
    assert_eq!(resolved["kind"].as_str(), Some("locomo"));
    let cats: Vec<i64> = resolved["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_integer().unwrap())
        .collect();
    assert_eq!(cats, vec![1, 2, 3, 4]);
    assert_eq!(resolved["image_captions"].as_bool(), Some(true));
    assert_eq!(resolved["offset"].as_integer(), Some(0));
    for absent in ["limit", "conversations", "window_turns"] {
        assert!(!resolved.contains_key(absent), "{absent}");
    }

    let (src, resolved) = build(
        "kind = \"locomo\"\npath = \"x.json\"\ncategories = [1, 5]\nconversations = [\"conv-26\"]\n\
         window_turns = 50\nimage_captions = false\nlimit = 3\n",
    )
    .unwrap();
    let d = src.describe();
    assert!(
        d.contains("categories [1, 5]") && d.contains("conv-26"),
        "{d}"
    );
    assert!(d.contains("windows of 50 turns"), "{d}");
    assert_eq!(resolved["window_turns"].as_integer(), Some(50));
    let (src, resolved) =
        build("kind = \"locomo\"\npath = \"x.json\"\nwindow_turns = \"all\"\n").unwrap();
    assert!(src.describe().contains("cut after the last evidence turn"));
    assert_eq!(resolved["window_turns"].as_str(), Some("all"));
}

#[test]
fn registry_rejects_bad_keys() {
    let err = |src: &str| build(src).err().unwrap().to_string();
    let e = err("kind = \"locomo\"\n");
    assert!(e.contains("`path`") && e.contains("missing"), "{e}");
    let e = err("kind = \"locomo\"\npath = \"x\"\ncategores = [1]\n");
    assert!(
        e.contains("`categores`") && e.contains("unknown key"),
        "{e}"
    );
    for bad in ["[]", "[0]", "[6]", "[1, 7]"] {
        let e = err(&format!(
            "kind = \"locomo\"\npath = \"x\"\ncategories = {bad}\n"
        ));
        assert!(e.contains("`categories`"), "{bad}: {e}");
    }
    let e = err("kind = \"locomo\"\npath = \"x\"\ncategories = [-1]\n");
    assert!(e.contains("`categories`"), "{e}");
    for bad in ["0", "-3", "\"some\"", "1.5", "true"] {
        let e = err(&format!(
            "kind = \"locomo\"\npath = \"x\"\nwindow_turns = {bad}\n"
        ));
        assert!(
            e.contains("`window_turns`") && e.contains("\"all\""),
            "{bad}: {e}"
        );
    }
    let e = err("kind = \"locomo\"\npath = \"x\"\nconversations = []\n");
    assert!(e.contains("`conversations`"), "{e}");
    let e = err("kind = \"locomo\"\npath = \"x\"\nconversations = \"conv-26\"\n");
    assert!(e.contains("`conversations`"), "{e}");
    let e = err("kind = \"locomo\"\npath = \"\"\n");
    assert!(e.contains("`path`"), "{e}");
}

#[test]
fn small_file_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let all = Locomo {
        categories: vec![1, 2, 3, 4, 5],
        ..Locomo::new(&path)
    };
    let s = load(&all).unwrap();
    assert_eq!(s.len(), 10);
    let ids: Vec<&str> = s.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        &ids[..5],
        &[
            "conv-a-qa0",
            "conv-a-qa1",
            "conv-a-qa2",
            "conv-a-qa3",
            "conv-a-qa4"
        ]
    );
    assert_eq!(ids[5], "conv-b-qa0");

    let q0 = &s[0];
    assert_eq!(q0.question, "When did Bob buy a bike?");
    assert_eq!(q0.answers, vec!["1 May 2023".to_string()]);
    assert_eq!(q0.category.as_deref(), Some("2"));
    assert!(q0.context.is_empty());
    assert_eq!(q0.meta["category_name"], json!("temporal"));
    assert_eq!(q0.meta["sample_id"], json!("conv-a"));
    assert_eq!(q0.meta["qa_index"], json!(0));
    assert_eq!(q0.meta["evidence"], json!(["D1:2"]));
    assert_eq!(q0.meta["source"], json!("locomo"));
    assert!(!q0.meta.contains_key("window"));

    // Dialogue: speakers, sessions in numeric order with their dates, captions appended.
    let d = q0.dialogue.as_ref().unwrap();
    assert_eq!(d.speakers, vec!["Ann".to_string(), "Bob".to_string()]);
    let idx: Vec<usize> = d.sessions.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![1, 2, 10]);
    assert_eq!(
        d.sessions[0].date.as_deref(),
        Some("1:56 pm on 1 May, 2023")
    );
    assert_eq!(
        d.sessions[2].date.as_deref(),
        Some("5:00 pm on 10 June, 2023")
    );
    assert_eq!(
        d.sessions[0].turns[1],
        Turn {
            id: "D1:2".into(),
            speaker: "Bob".into(),
            text: "Hi Ann, I bought a bike.".into()
        }
    );
    assert_eq!(
        d.sessions[1].turns[0].text,
        "Back again. [shares a photo of a red bike]"
    );

    // Numbers become strings; multi-id evidence entries are split.
    assert_eq!(s[1].answers, vec!["1".to_string()]);
    assert_eq!(s[1].meta["evidence"], json!(["D1:2", "D2:1"]));
    assert_eq!(s[1].meta["category_name"], json!("multi-hop"));
    // Category 5 without an answer.
    assert_eq!(s[3].answers, vec![ADVERSARIAL_ANSWER.to_string()]);
    assert_eq!(s[3].meta["adversarial_answer"], json!("red"));
    assert_eq!(s[3].meta["category_name"], json!("adversarial"));

    // Captions off.
    let plain = load(&Locomo {
        image_captions: false,
        limit: Some(1),
        ..Locomo::new(&path)
    })
    .unwrap();
    assert_eq!(
        plain[0].dialogue.as_ref().unwrap().sessions[1].turns[0].text,
        "Back again."
    );
}

#[test]
fn small_file_filters() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let ids =
        |src: Locomo| -> Vec<String> { load(&src).unwrap().into_iter().map(|s| s.id).collect() };
    // Default: category 5 excluded.
    assert_eq!(ids(Locomo::new(&path)).len(), 8);
    assert_eq!(
        ids(Locomo {
            categories: vec![5],
            ..Locomo::new(&path)
        }),
        vec!["conv-a-qa3", "conv-b-qa3"]
    );
    assert_eq!(
        ids(Locomo {
            conversations: Some(vec!["conv-b".into()]),
            categories: vec![2, 4],
            ..Locomo::new(&path)
        }),
        vec!["conv-b-qa0", "conv-b-qa4"]
    );
    assert_eq!(
        ids(Locomo {
            offset: 2,
            limit: Some(3),
            ..Locomo::new(&path)
        }),
        vec!["conv-a-qa2", "conv-a-qa4", "conv-b-qa0"]
    );

    // An unknown conversation is a recipe error naming the key and what the file holds.
    let err = load(&Locomo {
        conversations: Some(vec!["conv-a".into(), "conv-zz".into()]),
        conversations_key: "data.train.conversations".into(),
        ..Locomo::new(&path)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("`data.train.conversations`"), "{err}");
    assert!(
        err.contains("conv-zz") && err.contains("conv-a, conv-b"),
        "{err}"
    );

    let (_, msg) = data_error(
        load(&Locomo {
            offset: 8,
            ..Locomo::new(&path)
        })
        .unwrap_err(),
        &path,
    );
    assert!(
        msg.contains("offset = 8") && msg.contains("8 selected"),
        "{msg}"
    );
}

#[test]
fn small_file_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let windowed = |w: Window| {
        load(&Locomo {
            window: Some(w),
            categories: vec![1, 2, 3, 4, 5],
            conversations: Some(vec!["conv-a".into()]),
            ..Locomo::new(&path)
        })
        .unwrap()
    };
    let turn_ids = |s: &Sample| -> Vec<String> {
        s.dialogue
            .as_ref()
            .unwrap()
            .sessions
            .iter()
            .flat_map(|x| x.turns.iter().map(|t| t.id.clone()))
            .collect()
    };
    let all = windowed(Window::All);
    // qa0: evidence D1:2 — the dialogue stops there.
    assert_eq!(turn_ids(&all[0]), vec!["D1:1", "D1:2"]);
    assert_eq!(
        all[0].meta["window"],
        json!({"start": "D1:1", "end": "D1:2", "turns": 2, "evidence_in_window": 1})
    );
    // Dates stay on the kept sessions.
    assert_eq!(
        all[0].dialogue.as_ref().unwrap().sessions[0]
            .date
            .as_deref(),
        Some("1:56 pm on 1 May, 2023")
    );
    // qa1: evidence D1:2 and D2:1 — ends at the later one, in session 2.
    assert_eq!(turn_ids(&all[1]), vec!["D1:1", "D1:2", "D1:3", "D2:1"]);
    assert_eq!(all[1].meta["window"]["evidence_in_window"], json!(2));
    // qa2: no evidence — the whole conversation.
    assert_eq!(turn_ids(&all[2]).len(), 6);
    assert_eq!(all[2].meta["window"]["end"], json!("D10:1"));
    assert_eq!(all[2].meta["window"]["evidence_in_window"], json!(0));
    // qa4: `D10:01` is found as D10:1.
    assert_eq!(all[4].meta["window"]["end"], json!("D10:1"));
    assert_eq!(all[4].meta["window"]["evidence_in_window"], json!(1));

    let two = windowed(Window::Turns(2));
    // Across a session boundary: D1:3 and D2:1, both sessions kept with their dates.
    assert_eq!(turn_ids(&two[1]), vec!["D1:3", "D2:1"]);
    let sessions: Vec<usize> = two[1]
        .dialogue
        .as_ref()
        .unwrap()
        .sessions
        .iter()
        .map(|s| s.index)
        .collect();
    assert_eq!(sessions, vec![1, 2]);
    // The earlier evidence turn D1:2 falls outside the window.
    assert_eq!(
        two[1].meta["window"],
        json!({"start": "D1:3", "end": "D2:1", "turns": 2, "evidence_in_window": 1})
    );
    // No evidence: the last two turns of the conversation; empty sessions removed.
    assert_eq!(turn_ids(&two[2]), vec!["D2:2", "D10:1"]);
    // A window larger than what precedes the end keeps everything before it.
    let big = windowed(Window::Turns(1000));
    assert_eq!(turn_ids(&big[0]), turn_ids(&all[0]));
}

fn dialogue(sessions: &[(usize, &[&str])]) -> Dialogue {
    Dialogue {
        speakers: vec!["A".into(), "B".into()],
        sessions: sessions
            .iter()
            .map(|(n, ids)| Session {
                index: *n,
                date: Some(format!("day {n}")),
                turns: ids
                    .iter()
                    .map(|id| Turn {
                        id: id.to_string(),
                        speaker: "A".into(),
                        text: format!("text {id}"),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[test]
fn window_function_edge_cases() {
    let d = dialogue(&[
        (1, &["D1:1", "D1:2"]),
        (2, &[]),
        (3, &["D3:1", "D3:2", "D3:3"]),
    ]);
    let ev = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Unknown ids are skipped; the latest known one ends the window.
    let w = window_dialogue(&d, &ev(&["D9:9", "D3:1", "nonsense"]), Window::All);
    assert_eq!(
        (w.start.as_deref(), w.end.as_deref(), w.turns),
        (Some("D1:1"), Some("D3:1"), 3)
    );
    assert_eq!(w.evidence_in_window, 1);
    // The empty session 2 is not kept.
    assert_eq!(
        w.dialogue
            .sessions
            .iter()
            .map(|s| s.index)
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
    // Turns(0) is read as 1; duplicates count once.
    let w = window_dialogue(&d, &ev(&["D3:2", "D3:2"]), Window::Turns(0));
    assert_eq!(
        (w.start.as_deref(), w.turns, w.evidence_in_window),
        (Some("D3:2"), 1, 1)
    );
    // An empty dialogue gives an empty window.
    let empty = dialogue(&[]);
    let w = window_dialogue(&empty, &ev(&["D1:1"]), Window::Turns(3));
    assert_eq!((w.start, w.end, w.turns), (None, None, 0));
    assert!(w.dialogue.sessions.is_empty());

    assert_eq!(
        split_evidence(["D8:6; D9:17", "D1:1,D1:2", " D3:3 "]),
        vec!["D8:6", "D9:17", "D1:1", "D1:2", "D3:3"]
    );
    let names: Vec<_> = (0..=6).map(category_name).collect();
    assert_eq!(
        names,
        vec![
            None,
            Some("multi-hop"),
            Some("temporal"),
            Some("open-domain"),
            Some("single-hop"),
            Some("adversarial"),
            None
        ]
    );
}

/// Loads a file holding `conversations` and returns the data error's (location, message).
fn bad(conversations: serde_json::Value) -> (Option<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.json", &conversations.to_string());
    data_error(load(&Locomo::new(&path)).unwrap_err(), &path)
}

/// An edit that breaks a conversation.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn malformed_files() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("absent.json");
    let (loc, msg) = data_error(load(&Locomo::new(&missing)).unwrap_err(), &missing);
    assert_eq!((loc, msg.as_str()), (None, "file not found"));

    let path = write(
        dir.path(),
        "broken.json",
        "[\n  {\"sample_id\": \"c\",\n   \"qa\": [}\n]",
    );
    let (loc, msg) = data_error(load(&Locomo::new(&path)).unwrap_err(), &path);
    assert_eq!(loc.as_deref(), Some("line 3, column 11"));
    assert!(msg.starts_with("malformed JSON"), "{msg}");

    let path = write(dir.path(), "empty.json", "  \n");
    let (_, msg) = data_error(load(&Locomo::new(&path)).unwrap_err(), &path);
    assert!(msg.contains("empty"), "{msg}");
    let (_, msg) = bad(json!({"sample_id": "x"}));
    assert!(msg.contains("expected a JSON array"), "{msg}");
    let (_, msg) = bad(json!([]));
    assert!(msg.contains("no conversations"), "{msg}");

    // A QA missing its answer names the conversation and the QA index.
    let mut conv = small_conversation("conv-x");
    conv["qa"][1].as_object_mut().unwrap().remove("answer");
    let (loc, msg) = bad(json!([small_conversation("conv-a"), conv]));
    assert_eq!(loc.as_deref(), Some("conversation 1 (conv-x), qa 1"));
    assert!(
        msg.contains("missing field `answer`") && msg.contains("category 1"),
        "{msg}"
    );

    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            Box::new(|c| {
                c["qa"][0].as_object_mut().unwrap().remove("question");
            }),
            "conversation 0 (conv-x), qa 0",
            "missing field `question`",
        ),
        (
            Box::new(|c| {
                c["qa"][2].as_object_mut().unwrap().remove("category");
            }),
            "conversation 0 (conv-x), qa 2",
            "missing field `category`",
        ),
        (
            Box::new(|c| c["qa"][2]["category"] = json!(7)),
            "conversation 0 (conv-x), qa 2",
            "from 1 to 5, found 7",
        ),
        (
            Box::new(|c| c["qa"][0]["answer"] = json!(true)),
            "conversation 0 (conv-x), qa 0",
            "field `answer`: expected a string or a number, found a boolean",
        ),
        (
            Box::new(|c| c["qa"][0]["evidence"] = json!("D1:2")),
            "conversation 0 (conv-x), qa 0",
            "field `evidence`",
        ),
        (
            Box::new(|c| c["qa"][0]["evidence"] = json!([3])),
            "conversation 0 (conv-x), qa 0",
            "field `evidence[0]`",
        ),
        (
            Box::new(|c| {
                c["qa"][4].as_object_mut().unwrap().remove("evidence");
            }),
            "conversation 0 (conv-x), qa 4",
            "missing field `evidence`",
        ),
        (
            Box::new(|c| {
                c["conversation"]["session_2"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("text");
            }),
            "conversation 0 (conv-x), session_2 turn 1",
            "missing field `text`",
        ),
        (
            Box::new(|c| c["conversation"]["session_2"][0]["blip_caption"] = json!(["x"])),
            "conversation 0 (conv-x), session_2 turn 0",
            "field `blip_caption`",
        ),
        (
            Box::new(|c| c["conversation"]["session_1"] = json!("hello")),
            "conversation 0 (conv-x)",
            "field `session_1`: expected an array of turns",
        ),
        (
            Box::new(|c| c["conversation"]["session_1_date_time"] = json!(5)),
            "conversation 0 (conv-x)",
            "field `session_1_date_time`",
        ),
        (
            Box::new(|c| {
                c["conversation"]
                    .as_object_mut()
                    .unwrap()
                    .remove("speaker_b");
            }),
            "conversation 0 (conv-x)",
            "missing field `speaker_b`",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("qa");
            }),
            "conversation 0 (conv-x)",
            "missing field `qa`",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("sample_id");
            }),
            "conversation 0",
            "missing field `sample_id`",
        ),
    ];
    for (edit, want_loc, want_msg) in cases {
        let mut conv = small_conversation("conv-x");
        edit(&mut conv);
        let (loc, msg) = bad(json!([conv]));
        assert_eq!(loc.as_deref(), Some(want_loc), "{want_msg}");
        assert!(msg.contains(want_msg), "{msg} (wanted {want_msg})");
    }

    // A well-formed file whose selection is empty.
    let mut conv = small_conversation("conv-x");
    conv["qa"] = json!([]);
    let (_, msg) = bad(json!([conv]));
    assert!(msg.contains("no QA matches"), "{msg}");
}

/// The shared LoCoMo file, when this checkout has `../shared/data` beside it.
fn locomo_file() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/locomo/locomo_conv26_conv30.json");
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

fn category_counts(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in samples {
        *out.entry(s.category.clone().unwrap()).or_default() += 1;
    }
    out
}

#[test]
fn real_file_counts_and_categories() {
    let Some(path) = locomo_file() else { return };
    let conv26 = |categories: Vec<u8>| Locomo {
        categories,
        conversations: Some(vec!["conv-26".into()]),
        ..Locomo::new(&path)
    };
    // Memory-R1's training set: conv-26's 152 non-adversarial QAs.
    let train = load(&conv26(vec![1, 2, 3, 4])).unwrap();
    assert_eq!(train.len(), 152);
    let want: BTreeMap<String, usize> = [("1", 32), ("2", 37), ("3", 13), ("4", 70)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(category_counts(&train), want);
    assert_eq!(load(&conv26(vec![1, 2, 3, 4, 5])).unwrap().len(), 199);
    let adversarial = load(&conv26(vec![5])).unwrap();
    assert_eq!(adversarial.len(), 47);
    // 45 adversarial QAs have no answer; two (qa167, qa178) answer "No".
    let own: Vec<(&str, &str)> = adversarial
        .iter()
        .filter(|s| s.answers[0] != ADVERSARIAL_ANSWER)
        .map(|s| (s.id.as_str(), s.answers[0].as_str()))
        .collect();
    assert_eq!(own, vec![("conv-26-qa167", "No"), ("conv-26-qa178", "No")]);
    assert!(
        adversarial
            .iter()
            .all(|s| s.meta["adversarial_answer"].is_string())
    );

    // Both conversations, default categories: 152 + 81.
    let all = load(&Locomo::new(&path)).unwrap();
    assert_eq!(all.len(), 233);
    assert_eq!(
        all.iter()
            .filter(|s| s.meta["sample_id"] == "conv-30")
            .count(),
        81
    );
    assert!(all.iter().all(|s| s.category.as_deref() != Some("5")));
    let everything = load(&Locomo {
        categories: vec![1, 2, 3, 4, 5],
        ..Locomo::new(&path)
    })
    .unwrap();
    assert_eq!(everything.len(), 304);

    // First QAs, number answers, split evidence.
    let q0 = &train[0];
    assert_eq!(q0.id, "conv-26-qa0");
    assert_eq!(
        q0.question,
        "When did Caroline go to the LGBTQ support group?"
    );
    assert_eq!(q0.answers, vec!["7 May 2023".to_string()]);
    assert_eq!(q0.category.as_deref(), Some("2"));
    assert_eq!(q0.meta["category_name"], json!("temporal"));
    assert_eq!(q0.meta["evidence"], json!(["D1:3"]));
    assert_eq!(train[1].answers, vec!["2022".to_string()]);
    let q37 = train.iter().find(|s| s.id == "conv-26-qa37").unwrap();
    assert_eq!(q37.meta["evidence"], json!(["D8:6", "D9:17"]));
    assert_eq!(q37.meta["category_name"], json!("multi-hop"));
    // Every non-adversarial answer is a non-empty string.
    assert!(
        all.iter()
            .all(|s| s.answers.len() == 1 && !s.answers[0].trim().is_empty())
    );

    // Limit and offset slice the same order.
    let slice = load(&Locomo {
        offset: 150,
        limit: Some(4),
        ..Locomo::new(&path)
    })
    .unwrap();
    let ids: Vec<&str> = slice.iter().map(|s| s.id.as_str()).collect();
    let want: Vec<&str> = all[150..154].iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, want);
    assert_eq!(ids[2], "conv-30-qa0");
}

#[test]
fn real_file_sessions_and_dates() {
    let Some(path) = locomo_file() else { return };
    let samples = load(&Locomo {
        conversations: Some(vec!["conv-26".into()]),
        ..Locomo::new(&path)
    })
    .unwrap();
    let d = samples[0].dialogue.as_ref().unwrap();
    // Every sample carries the same whole conversation.
    assert!(samples.iter().all(|s| s.dialogue.as_ref() == Some(d)));
    assert_eq!(
        d.speakers,
        vec!["Caroline".to_string(), "Melanie".to_string()]
    );
    // 19 sessions in numeric order (the file also dates sessions 20-35, which have no turns).
    let idx: Vec<usize> = d.sessions.iter().map(|s| s.index).collect();
    assert_eq!(idx, (1..=19).collect::<Vec<_>>());
    assert_eq!(
        d.sessions[0].date.as_deref(),
        Some("1:56 pm on 8 May, 2023")
    );
    assert_eq!(
        d.sessions[18].date.as_deref(),
        Some("9:55 am on 22 October, 2023")
    );
    assert!(d.sessions.iter().all(|s| s.date.is_some()));
    let turns: usize = d.sessions.iter().map(|s| s.turns.len()).sum();
    assert_eq!(turns, 419);
    for s in &d.sessions {
        for (k, t) in s.turns.iter().enumerate() {
            assert_eq!(t.id, format!("D{}:{}", s.index, k + 1));
            assert!(d.speakers.contains(&t.speaker), "{}", t.id);
        }
    }
    // Photo captions are appended; without them the text is the file's.
    let d1_5 = &d.sessions[0].turns[4];
    assert_eq!(d1_5.id, "D1:5");
    assert!(
        d1_5.text
            .starts_with("The transgender stories were so inspiring!")
    );
    assert!(
        d1_5.text.ends_with(
            "support. [shares a photo of a dog walking past a wall with a painting of a woman]"
        ),
        "{}",
        d1_5.text
    );
    let shared = d
        .sessions
        .iter()
        .flat_map(|s| &s.turns)
        .filter(|t| t.text.contains(" [shares "))
        .count();
    assert_eq!(shared, 116);
    let plain = load(&Locomo {
        conversations: Some(vec!["conv-26".into()]),
        image_captions: false,
        limit: Some(1),
        ..Locomo::new(&path)
    })
    .unwrap();
    let d = plain[0].dialogue.as_ref().unwrap();
    assert!(
        d.sessions
            .iter()
            .flat_map(|s| &s.turns)
            .all(|t| !t.text.contains("[shares"))
    );

    // conv-30: Jon and Gina, 19 sessions, 369 turns.
    let c30 = load(&Locomo {
        conversations: Some(vec!["conv-30".into()]),
        limit: Some(1),
        ..Locomo::new(&path)
    })
    .unwrap();
    let d = c30[0].dialogue.as_ref().unwrap();
    assert_eq!(d.speakers, vec!["Jon".to_string(), "Gina".to_string()]);
    assert_eq!(d.sessions.len(), 19);
    assert_eq!(d.sessions.iter().map(|s| s.turns.len()).sum::<usize>(), 369);
    assert_eq!(
        d.sessions[0].date.as_deref(),
        Some("4:04 pm on 20 January, 2023")
    );
}

#[test]
fn real_file_training_windows() {
    let Some(path) = locomo_file() else { return };
    let src = |window| Locomo {
        conversations: Some(vec!["conv-26".into()]),
        window: Some(window),
        ..Locomo::new(&path)
    };
    let all = load(&src(Window::All)).unwrap();
    assert_eq!(all.len(), 152);
    let mut whole = 0;
    for s in &all {
        let w = &s.meta["window"];
        let d = s.dialogue.as_ref().unwrap();
        let ids: Vec<&str> = d
            .sessions
            .iter()
            .flat_map(|x| &x.turns)
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(w["turns"].as_u64().unwrap() as usize, ids.len());
        assert_eq!(w["start"], json!("D1:1"));
        assert_eq!(w["end"].as_str(), ids.last().copied());
        let evidence: Vec<&str> = s.meta["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        if evidence.is_empty() {
            // No evidence: the whole conversation.
            assert_eq!(ids.len(), 419, "{}", s.id);
            whole += 1;
        } else {
            // Up to the last evidence turn, nothing after; every evidence turn inside.
            assert!(evidence.contains(ids.last().unwrap()), "{}", s.id);
            assert!(evidence.iter().all(|e| ids.contains(e)), "{}", s.id);
            assert_eq!(w["evidence_in_window"].as_u64().unwrap() as usize, {
                let mut e = evidence.clone();
                e.sort();
                e.dedup();
                e.len()
            });
        }
    }
    // conv-26 has two category-3 QAs without evidence.
    assert_eq!(whole, 2);
    // qa0 (evidence D1:3): session 1 only, 3 turns, its date kept.
    let q0 = &all[0];
    let d = q0.dialogue.as_ref().unwrap();
    assert_eq!(d.sessions.len(), 1);
    assert_eq!(d.sessions[0].turns.len(), 3);
    assert_eq!(
        d.sessions[0].date.as_deref(),
        Some("1:56 pm on 8 May, 2023")
    );
    // qa37 (evidence D8:6; D9:17): sessions 1-9, ending at D9:17.
    let q37 = all.iter().find(|s| s.id == "conv-26-qa37").unwrap();
    let d = q37.dialogue.as_ref().unwrap();
    assert_eq!(d.sessions.last().unwrap().index, 9);
    assert_eq!(d.sessions.last().unwrap().turns.last().unwrap().id, "D9:17");
    assert_eq!(q37.meta["window"]["evidence_in_window"], json!(2));

    // 50-turn windows: never longer, always ending at the same turn.
    let fifty = load(&src(Window::Turns(50))).unwrap();
    for (a, b) in all.iter().zip(&fifty) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.meta["window"]["end"], b.meta["window"]["end"]);
        let n = b.meta["window"]["turns"].as_u64().unwrap();
        assert_eq!(n, a.meta["window"]["turns"].as_u64().unwrap().min(50));
    }
    // qa37's D8:6 lies outside 50 turns before D9:17.
    let q37 = fifty.iter().find(|s| s.id == "conv-26-qa37").unwrap();
    assert_eq!(q37.meta["window"]["evidence_in_window"], json!(1));
    let first = q37.dialogue.as_ref().unwrap().sessions[0].turns[0]
        .id
        .clone();
    assert_eq!(q37.meta["window"]["start"], json!(first));
}
