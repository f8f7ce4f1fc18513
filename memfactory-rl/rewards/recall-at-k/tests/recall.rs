//! Recall@K on hand-built episodes: values derived by hand for each `k`, list and
//! aggregate; evidence normalization and filtering; when the metric does not apply; and
//! the errors that name recipe keys.

use memfactory_core::{Cfg, Dialogue, Episode, Reward, Sample, Session, Step, Turn, registry};
use memfactory_reward_recall_at_k::{
    Aggregate, List, RecallAtK, normalize_turn_id, parse_memory_note, recall_at_k,
};
use serde_json::json;

fn metric(src: &str) -> Box<dyn Reward> {
    registry::build::<dyn Reward>(Cfg::new("eval.metrics[1]", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn build_err(src: &str) -> String {
    registry::build::<dyn Reward>(Cfg::new("eval.metrics[1]", toml::from_str(src).unwrap()))
        .err()
        .unwrap()
        .to_string()
}

fn turn(id: &str) -> Turn {
    Turn {
        id: id.into(),
        speaker: "A".into(),
        text: "t".into(),
    }
}

/// A LoCoMo-like sample: sessions 1 and 2 with turns D1:1..D1:4 and D2:1..D2:4.
fn sample(evidence: Option<serde_json::Value>) -> Sample {
    let mut s = Sample::text("conv-1-qa0", "q", "", vec!["a".into()]);
    s.dialogue = Some(Dialogue {
        speakers: vec!["A".into()],
        sessions: (1..=2)
            .map(|n| Session {
                index: n,
                date: None,
                turns: (1..=4).map(|t| turn(&format!("D{n}:{t}"))).collect(),
            })
            .collect(),
    });
    if let Some(e) = evidence {
        s.meta.insert("evidence".into(), e);
    }
    s
}

/// An episode with the two notes an rmm episode writes.
fn episode(retrieved: &str, reranked: &str) -> Episode {
    Episode {
        sample_id: "conv-1-qa0".into(),
        path: 0,
        seed: 0,
        steps: vec![
            Step::Note {
                label: "candidates".into(),
                text: "r1,r2,r3".into(),
            },
            Step::Note {
                label: "retrieved".into(),
                text: retrieved.into(),
            },
            Step::Note {
                label: "reranked".into(),
                text: reranked.into(),
            },
        ],
        answer: Some("a".into()),
        memory_tokens: None,
    }
}

// Retriever order: r1 (D1:1), r2 (D1:3, D2:2), r3 (D2:4), r4 (no turns), r5 (D1:2).
const RETRIEVED: &str = r#"[{"id":"r1","turns":["D1:1"]},{"id":"r2","turns":["D1:3","D2:2"]},
    {"id":"r3","turns":["D2:4"]},{"id":"r4","turns":[]},{"id":"r5","turns":["D1:2"]}]"#;
// The reranker kept r3 then r2.
const RERANKED: &str = r#"[{"id":"r3","turns":["D2:4"]},{"id":"r2","turns":["D1:3","D2:2"]}]"#;

#[test]
fn values_by_k_list_and_aggregate() {
    // Evidence {D1:3, D2:4, D1:2}; "D1:03" is D1:3 again.
    let s = sample(Some(json!(["D1:3", "D2:4; D1:03", "D1:2"])));
    let ep = episode(RETRIEVED, RERANKED);
    let score = |src: &str| metric(src).score(&s, &ep).unwrap();
    // retrieved: top-1 covers D1:1 → 0/3; top-2 adds D1:3 → 1/3; top-3 adds D2:4 → 2/3;
    // top-4 adds nothing; top-5 adds D1:2 → 3/3; k beyond the list is the whole list.
    for (k, want) in [
        (1, 0.0),
        (2, 1.0 / 3.0),
        (3, 2.0 / 3.0),
        (4, 2.0 / 3.0),
        (5, 1.0),
        (50, 1.0),
    ] {
        let got = score(&format!(
            "kind = \"recall-at-k\"\nlist = \"retrieved\"\nk = {k}"
        ));
        assert_eq!(got, Some(want), "retrieved k = {k}");
    }
    // reranked (the default list): top-1 = r3 → D2:4 → 1/3; top-2 adds D1:3 → 2/3.
    assert_eq!(score("kind = \"recall-at-k\"\nk = 1"), Some(1.0 / 3.0));
    assert_eq!(
        score("kind = \"recall-at-k\""),
        Some(2.0 / 3.0),
        "k = 5 by default"
    );
    // all / any (LongMemEval's recall_all / recall_any).
    let agg = |a: &str, k: usize, list: &str| {
        score(&format!(
            "kind = \"recall-at-k\"\naggregate = \"{a}\"\nk = {k}\nlist = \"{list}\""
        ))
    };
    assert_eq!(agg("all", 3, "retrieved"), Some(0.0));
    assert_eq!(agg("all", 5, "retrieved"), Some(1.0));
    assert_eq!(agg("any", 1, "retrieved"), Some(0.0));
    assert_eq!(agg("any", 2, "retrieved"), Some(1.0));
    assert_eq!(agg("any", 1, "reranked"), Some(1.0));
    assert_eq!(agg("all", 2, "reranked"), Some(0.0));
}

#[test]
fn the_last_note_counts_and_an_empty_list_scores_zero() {
    let s = sample(Some(json!(["D1:1"])));
    let mut ep = episode(RETRIEVED, RERANKED);
    let m = metric("kind = \"recall-at-k\"\nlist = \"retrieved\"\nk = 1");
    assert_eq!(m.score(&s, &ep).unwrap(), Some(1.0));
    ep.steps.push(Step::Note {
        label: "retrieved".into(),
        text: "[]".into(),
    });
    assert_eq!(m.score(&s, &ep).unwrap(), Some(0.0), "nothing retrieved");
}

#[test]
fn samples_without_usable_evidence_are_not_scored() {
    let ep = episode(RETRIEVED, RERANKED);
    let m = metric("kind = \"recall-at-k\"");
    // Empty evidence (LoCoMo has QAs without evidence): does not apply.
    assert_eq!(m.score(&sample(Some(json!([]))), &ep).unwrap(), None);
    // Evidence that is no turn of the dialogue (cut by a window, or wrong in the data) is
    // dropped; none left → does not apply; the rest is scored.
    assert_eq!(m.score(&sample(Some(json!(["D9:1"]))), &ep).unwrap(), None);
    assert_eq!(
        m.score(&sample(Some(json!(["D9:1", "D2:4"]))), &ep)
            .unwrap(),
        Some(1.0)
    );
    // Without a dialogue every evidence id counts.
    let mut s = sample(Some(json!(["D9:1", "D2:4"])));
    s.dialogue = None;
    assert_eq!(m.score(&s, &ep).unwrap(), Some(0.5));
}

#[test]
fn errors_name_the_recipe_key() {
    let ep = episode(RETRIEVED, RERANKED);
    let m = metric("kind = \"recall-at-k\"");
    // A dataset without evidence ids: a recipe error (exit 2), not a silent zero.
    let e = m.score(&sample(None), &ep).unwrap_err();
    assert!(e.is_user_error());
    let e = e.to_string();
    assert!(
        e.contains("eval.metrics[1].kind")
            && e.contains("meta.evidence")
            && e.contains("conv-1-qa0"),
        "{e}"
    );
    // A paradigm that records no memory list.
    let bare = Episode {
        steps: vec![],
        ..episode("[]", "[]")
    };
    let e = m.score(&sample(Some(json!(["D1:1"]))), &bare).unwrap_err();
    assert!(e.is_user_error());
    let e = e.to_string();
    assert!(
        e.contains("eval.metrics[1].list") && e.contains("`reranked` note"),
        "{e}"
    );
    // Malformed evidence and notes.
    let e = m
        .score(&sample(Some(json!("D1:1"))), &ep)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected an array"), "{e}");
    let e = m
        .score(&sample(Some(json!(["D1:1"]))), &episode("[]", "{oops"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`reranked` note") && e.contains("malformed"),
        "{e}"
    );

    for (src, key) in [
        ("kind = \"recall-at-k\"\nk = 0", "eval.metrics[1].k"),
        (
            "kind = \"recall-at-k\"\nlist = \"top\"",
            "eval.metrics[1].list",
        ),
        (
            "kind = \"recall-at-k\"\naggregate = \"mean\"",
            "eval.metrics[1].aggregate",
        ),
        ("kind = \"recall-at-k\"\nkk = 3", "eval.metrics[1].kk"),
    ] {
        let e = build_err(src);
        assert!(e.contains(key), "{src}: {e}");
    }
    let (_, resolved) = registry::build::<dyn Reward>(Cfg::new(
        "eval.metrics[1]",
        toml::from_str("kind = \"recall-at-k\"\nname = \"recall@5\"").unwrap(),
    ))
    .unwrap();
    assert_eq!(resolved["k"].as_integer(), Some(5));
    assert_eq!(resolved["list"].as_str(), Some("reranked"));
    assert_eq!(resolved["aggregate"].as_str(), Some("fraction"));
    assert_eq!(
        metric("kind = \"recall-at-k\"\nname = \"recall@5\"").name(),
        "recall@5"
    );
}

#[test]
fn helpers() {
    assert_eq!(normalize_turn_id(" D8:06 "), "D8:6");
    assert_eq!(normalize_turn_id("d10:1"), "D10:1");
    assert_eq!(normalize_turn_id("turn-7"), "turn-7");
    assert_eq!(
        parse_memory_note(RERANKED).unwrap(),
        [vec!["D2:4".to_string()], vec!["D1:3".into(), "D2:2".into()]]
    );
    assert!(
        parse_memory_note(r#"[{"id":"r1"}]"#)
            .unwrap_err()
            .contains("turns")
    );
    assert!(
        parse_memory_note(r#"[{"turns":[3]}]"#)
            .unwrap_err()
            .contains("not a string")
    );
    let ev = ["D1:1".to_string(), "D1:2".into()];
    let mems = [vec!["D1:02".to_string()], vec!["D1:1".into()]];
    assert_eq!(recall_at_k(&ev, &mems, 1, Aggregate::Fraction), Some(0.5));
    assert_eq!(recall_at_k(&ev, &mems, 2, Aggregate::All), Some(1.0));
    assert_eq!(recall_at_k(&[], &mems, 2, Aggregate::Any), None);
    let m = RecallAtK::new(2, List::Retrieved, Aggregate::Any, "");
    assert_eq!(m.list.label(), "retrieved");
}
