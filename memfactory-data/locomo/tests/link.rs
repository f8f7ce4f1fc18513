//! `link_turn` (each QA linked to one evidence turn, unlinked QAs dropped) and
//! `exclude_conversations` (Memory-R1's test split: every conversation but the train and
//! validation ones), on small files written here and on the real LoCoMo file.

use std::path::{Path, PathBuf};

use memfactory_core::{DataSource, LoadCx, Recipe, Sample};
use memfactory_data_locomo::{LinkTurn, Locomo, linked_turn, read_conversations};
use serde_json::json;

fn conv(id: &str) -> serde_json::Value {
    json!({
        "sample_id": id,
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bob",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "a"},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "b"}
            ],
            "session_2": [
                {"speaker": "Ann", "dia_id": "D2:1", "text": "c"},
                {"speaker": "Bob", "dia_id": "D2:2", "text": "d"}
            ]
        },
        "qa": [
            {"question": "q0", "answer": "x", "evidence": ["D2:2", "D1:1"], "category": 1},
            {"question": "q1", "answer": "x", "evidence": [], "category": 4},
            {"question": "q2", "answer": "x", "evidence": ["D9:9", "D02:01"], "category": 2},
            {"question": "q3", "answer": "x", "evidence": ["D1:2; D2:1"], "category": 1}
        ]
    })
}

fn file(dir: &Path) -> PathBuf {
    let p = dir.join("l.json");
    std::fs::write(
        &p,
        json!([conv("c-a"), conv("c-b"), conv("c-c")]).to_string(),
    )
    .unwrap();
    p
}

fn load(src: &Locomo) -> memfactory_core::Result<Vec<Sample>> {
    src.load(&LoadCx::default())
}

fn links(samples: &[Sample]) -> Vec<(String, String, u64)> {
    samples
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                s.meta["linked_turn"].as_str().unwrap().to_string(),
                s.meta["linked_turn_index"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn link_turn_first_and_last_drop_unlinked_questions() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let only_a = Some(vec!["c-a".to_string()]);
    let first = load(&Locomo {
        conversations: only_a.clone(),
        link_turn: Some(LinkTurn::First),
        ..Locomo::new(&path)
    })
    .unwrap();
    // q1 (no evidence) is dropped; q2's first id names no turn, its second (D02:01 = D2:1)
    // does; an entry holding two ids is split.
    assert_eq!(
        links(&first),
        [
            ("c-a-qa0".into(), "D2:2".into(), 3),
            ("c-a-qa2".into(), "D2:1".into(), 2),
            ("c-a-qa3".into(), "D1:2".into(), 1),
        ]
    );
    let last = load(&Locomo {
        conversations: only_a.clone(),
        link_turn: Some(LinkTurn::Last),
        ..Locomo::new(&path)
    })
    .unwrap();
    assert_eq!(
        links(&last),
        [
            ("c-a-qa0".into(), "D2:2".into(), 3),
            ("c-a-qa2".into(), "D2:1".into(), 2),
            ("c-a-qa3".into(), "D2:1".into(), 2),
        ]
    );
    // Without link_turn nothing is dropped or linked.
    let plain = load(&Locomo {
        conversations: only_a,
        ..Locomo::new(&path)
    })
    .unwrap();
    assert_eq!(plain.len(), 4);
    assert!(plain.iter().all(|s| !s.meta.contains_key("linked_turn")));

    let convs = read_conversations(&path, true).unwrap();
    let d = &convs[0].dialogue;
    assert_eq!(linked_turn(d, &["D1:1".into()], LinkTurn::First), Some(0));
    assert_eq!(linked_turn(d, &["nope".into()], LinkTurn::Last), None);
    assert_eq!(linked_turn(d, &[], LinkTurn::First), None);
}

#[test]
fn exclude_conversations_leaves_the_named_ones_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path());
    let got = load(&Locomo {
        exclude_conversations: Some(vec!["c-a".into(), "c-c".into()]),
        ..Locomo::new(&path)
    })
    .unwrap();
    assert!(got.iter().all(|s| s.id.starts_with("c-b-")), "{got:?}");
    assert_eq!(got.len(), 4);
    let err = load(&Locomo {
        exclude_conversations: Some(vec!["c-zz".into()]),
        exclude_key: "data.eval.exclude_conversations".into(),
        ..Locomo::new(&path)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`data.eval.exclude_conversations`") && err.contains("c-zz"),
        "{err}"
    );
}

#[test]
fn recipe_keys_are_checked() {
    let build = |src: &str| {
        let cfg = Recipe::parse(src, "<test>").unwrap().cfg();
        memfactory_core::registry::build::<dyn DataSource>(cfg)
    };
    let (src, resolved) = build(
        "kind = \"locomo\"\npath = \"x.json\"\nlink_turn = \"last\"\n\
         exclude_conversations = [\"conv-26\", \"conv-30\"]\n",
    )
    .unwrap();
    let d = src.describe();
    assert!(
        d.contains("last evidence turn") && d.contains("without conversations conv-26, conv-30"),
        "{d}"
    );
    assert_eq!(resolved["link_turn"].as_str(), Some("last"));
    let err = |src: &str| build(src).err().unwrap().to_string();
    let e = err("kind = \"locomo\"\npath = \"x\"\nlink_turn = \"middle\"\n");
    assert!(
        e.contains("`link_turn`") && e.contains("\"first\" or \"last\""),
        "{e}"
    );
    let e = err("kind = \"locomo\"\npath = \"x\"\nexclude_conversations = []\n");
    assert!(e.contains("`exclude_conversations`"), "{e}");
}

fn locomo_file() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/locomo/locomo_conv26_conv30.json");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

#[test]
fn real_file_links_memory_r1_training_questions() {
    let Some(path) = locomo_file() else { return };
    let load_conv = |c: &str, link| {
        load(&Locomo {
            conversations: Some(vec![c.into()]),
            link_turn: link,
            ..Locomo::new(&path)
        })
        .unwrap()
    };
    // conv-26: 152 QAs of categories 1-4, two with empty evidence.
    assert_eq!(load_conv("conv-26", None).len(), 152);
    let linked = load_conv("conv-26", Some(LinkTurn::First));
    assert_eq!(linked.len(), 150);
    let turns: std::collections::BTreeSet<&str> = linked
        .iter()
        .map(|s| s.meta["linked_turn"].as_str().unwrap())
        .collect();
    // Counted with a short script over the file: 112 distinct first-evidence turns.
    assert_eq!(turns.len(), 112);
    assert_eq!(load_conv("conv-30", Some(LinkTurn::First)).len(), 81);
    // Excluding both conversations of this file leaves nothing: an error, not zero samples.
    let err = load(&Locomo {
        exclude_conversations: Some(vec!["conv-26".into(), "conv-30".into()]),
        ..Locomo::new(&path)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no QA matches"), "{err}");
}
