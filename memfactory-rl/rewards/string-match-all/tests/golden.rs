//! RULER's `string_match_all` (after `postprocess_pred`) against the golden file written by
//! `string-match-all/golden/make_golden.py` from RULER's own functions, directly and through
//! the registered reward (`extract = "text"`, `strip_think = false`: RULER's raw output).

use memfactory_core::{Sample, text};
use memfactory_reward_string_match_all::score;
use memfactory_testkit::reward::{answered, build, strings};
use serde_json::Value;

#[test]
fn golden_cases_match_ruler() {
    let root: Value =
        serde_json::from_str(include_str!("../../string-match-all/golden/golden.json")).unwrap();
    let cases = root["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let reward = build("kind = \"string-match-all\"\nextract = \"text\"\nstrip_think = false");
    for c in cases {
        let note = c["note"].as_str().unwrap();
        let pred = c["prediction"].as_str().unwrap();
        let refs = strings(&c["refs"]);
        assert_eq!(
            text::ruler_postprocess(pred),
            c["postprocessed"].as_str().unwrap(),
            "{note}: postprocess"
        );
        let want = c["string_match_all"].as_f64().unwrap();
        let got = score(pred, &refs);
        // One f32 division of small counts: within an ulp of the f64 value.
        assert!(
            (f64::from(got) - want).abs() < 1e-6,
            "{note}: {got} vs {want}"
        );
        let sample = Sample::text("s", "q", "ctx", refs);
        let episode = answered(pred.to_string());
        assert_eq!(
            reward.score(&sample, &episode).unwrap(),
            Some(got),
            "{note}: registered reward"
        );
    }
}
