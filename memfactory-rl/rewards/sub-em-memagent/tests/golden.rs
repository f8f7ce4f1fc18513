//! MemAgent's per-sample pipeline (think stripping, `extract_answer`, `normalize_answer`,
//! `sub_exact_match_score` on the first gold, empty answers 0) against the golden file
//! written by `golden/make_golden.py` from MemAgent's own functions; through the registered
//! reward with `extract = "answer-is"` end to end.

use memfactory_core::Sample;
use memfactory_core::reward::{AnswerExtraction, Extract};
use memfactory_reward_sub_em_memagent::{normalize_memagent, sub_em_memagent};
use memfactory_testkit::reward::{answered, build, strings};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let root: Value = serde_json::from_str(include_str!("../golden/golden.json")).unwrap();
    root["cases"].as_array().unwrap().clone()
}

#[test]
fn golden_cases_match_memagent() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let extraction = AnswerExtraction {
        extract: Extract::AnswerIs,
        strip_think: true,
    };
    let reward = build("kind = \"sub-em-memagent\"\nextract = \"answer-is\"");
    for c in &cases {
        let note = c["note"].as_str().unwrap();
        let response = c["response"].as_str().unwrap();
        let golds = strings(&c["golds"]);
        let pred = extraction.apply(response);
        assert_eq!(pred.as_deref(), c["pred"].as_str(), "{note}: extraction");
        if let Some(p) = &pred {
            assert_eq!(
                normalize_memagent(p),
                c["norm_pred"].as_str().unwrap(),
                "{note}: normalize pred"
            );
        }
        assert_eq!(
            normalize_memagent(&golds[0]),
            c["norm_gold"].as_str().unwrap(),
            "{note}: normalize gold"
        );
        let want = c["sub_em"].as_f64().unwrap() as f32;
        let direct = pred.as_deref().map_or(0.0, |p| sub_em_memagent(p, &golds));
        assert_eq!(direct, want, "{note}: score");
        let sample = Sample::text("s", "q", "ctx", golds);
        let episode = answered(response.to_string());
        assert_eq!(
            reward.score(&sample, &episode).unwrap(),
            Some(want),
            "{note}: registered reward"
        );
    }
}
