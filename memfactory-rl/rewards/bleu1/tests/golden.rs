//! BLEU-1 against NLTK's `sentence_bleu` (golden file written by `golden/make_golden.py`),
//! and the registered reward end to end.

use memfactory_core::{Episode, Recipe, Reward, Sample};
use memfactory_reward_bleu1::bleu1;
use serde_json::Value;

struct Case {
    prediction: String,
    golds: Vec<String>,
    per_gold: Vec<f64>,
    bleu1: f64,
    note: String,
}

fn cases() -> Vec<Case> {
    let text = include_str!("../golden/golden.json");
    let root: Value = serde_json::from_str(text).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    root["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prediction: c["prediction"].as_str().unwrap().to_string(),
            golds: strings(&c["golds"]),
            per_gold: c["per_gold"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect(),
            bleu1: c["bleu1"].as_f64().unwrap(),
            note: c["note"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn reward(table: &str) -> Box<dyn Reward> {
    let cfg = Recipe::parse(table, "<test>").unwrap().cfg();
    memfactory_core::registry::build::<dyn Reward>(cfg)
        .unwrap()
        .0
}

fn episode(answer: &str) -> Episode {
    Episode {
        sample_id: "s".into(),
        path: 0,
        seed: 0,
        steps: Vec::new(),
        answer: Some(answer.to_string()),
        memory_tokens: None,
    }
}

#[test]
fn matches_nltk_sentence_bleu() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for c in &cases {
        for (g, want) in c.golds.iter().zip(&c.per_gold) {
            let got = bleu1(&c.prediction, g);
            assert!(
                (got - want).abs() < 1e-6,
                "{}: bleu1({:?}, {g:?}) = {got}, NLTK {want}",
                c.note,
                c.prediction
            );
        }
    }
}

#[test]
fn reward_scores_the_max_over_golds() {
    let boxed = reward("kind = \"bleu1\"\n");
    let plain = reward("kind = \"bleu1\"\nrequire_boxed = false\nname = \"bleu1-plain\"\n");
    assert_eq!(boxed.name(), "bleu1");
    assert_eq!(plain.name(), "bleu1-plain");
    for c in cases() {
        let sample = Sample::text("s", "q", "", c.golds.clone());
        let in_box = format!("reasoning... \\boxed{{{}}}", c.prediction);
        let got = boxed.score(&sample, &episode(&in_box)).unwrap().unwrap();
        assert!(
            (f64::from(got) - c.bleu1).abs() < 1e-6,
            "{}: boxed score {got}, NLTK {}",
            c.note,
            c.bleu1
        );
        // Unboxed text is scored whole only with `require_boxed = false` (trimmed).
        let got = plain
            .score(&sample, &episode(&c.prediction))
            .unwrap()
            .unwrap();
        assert!(
            (f64::from(got) - c.bleu1).abs() < 1e-6,
            "{}: plain score {got}, NLTK {}",
            c.note,
            c.bleu1
        );
    }
}

#[test]
fn reward_edge_cases() {
    let boxed = reward("kind = \"bleu1\"\n");
    let sample = Sample::text("s", "q", "", vec!["Paris".into()]);
    // No box: 0 under require_boxed.
    assert_eq!(boxed.score(&sample, &episode("Paris")).unwrap(), Some(0.0));
    // No answer at all: 0.
    let mut e = episode("");
    e.answer = None;
    assert_eq!(boxed.score(&sample, &e).unwrap(), Some(0.0));
    // No gold answers: the metric does not apply.
    let none = Sample::text("s", "q", "", Vec::new());
    assert_eq!(
        boxed.score(&none, &episode("\\boxed{Paris}")).unwrap(),
        None
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let cfg = Recipe::parse("kind = \"bleu1\"\nrequire_box = false\n", "<test>")
        .unwrap()
        .cfg();
    let err = memfactory_core::registry::build::<dyn Reward>(cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`require_box`"), "{err}");
}
