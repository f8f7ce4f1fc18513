//! mem0's `simple_tokenize` and token-set F1 against the golden file written by `golden/make_golden.py` from the reference
//! code, token by token and score by score, and through the registered reward
//! (`extract = "text"`, max over golds).

use memfactory_core::Sample;
use memfactory_reward_f1_mem0::{f1_mem0, simple_tokenize};
use memfactory_testkit::reward::{answered, build, strings};
use serde_json::Value;

#[test]
fn golden_cases_match_the_reference() {
    let root: Value = serde_json::from_str(include_str!("../golden/golden.json")).unwrap();
    let cases = root["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let reward = build("kind = \"f1-mem0\"\nextract = \"text\"\nstrip_think = false");
    for c in cases {
        let note = c["note"].as_str().unwrap();
        let pred = c["prediction"].as_str().unwrap();
        let golds = strings(&c["golds"]);
        assert_eq!(
            simple_tokenize(pred),
            strings(&c["pred_tokens"]),
            "{note}: tokens"
        );
        let per_gold: Vec<f64> = c["per_gold"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (g, want) in golds.iter().zip(&per_gold) {
            let got = f1_mem0(pred, g);
            // Same f64 operations in the same order as the Python reference.
            assert!(
                (got - want).abs() < 1e-12,
                "{note}: {got} vs {want} (gold {g:?})"
            );
        }
        let best = per_gold.iter().cloned().fold(0.0, f64::max);
        let sample = Sample::text("s", "q", "ctx", golds.clone());
        let episode = answered(pred.to_string());
        // The reward trims the extracted text (`extract = "text"`); every reference score
        // here is unchanged by trimming, which the direct comparison above does not assume.
        let got = reward.score(&sample, &episode).unwrap().unwrap();
        assert!(
            (f64::from(got) - best).abs() < 1e-6,
            "{note}: reward {got} vs {best}"
        );
    }
}
