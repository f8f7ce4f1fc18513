//! NLTK's word tokenizer and mem0's `sentence_bleu` BLEU-1 against the golden file written by `golden/make_golden.py` from the reference
//! code, token by token and score by score, and through the registered reward
//! (`extract = "text"`, max over golds).

use memfactory_core::Sample;
use memfactory_reward_bleu1_nltk::{bleu1_nltk, word_tokenize};
use memfactory_testkit::reward::{answered, build, strings};
use serde_json::Value;

#[test]
fn golden_cases_match_the_reference() {
    let root: Value = serde_json::from_str(include_str!("../golden/golden.json")).unwrap();
    let cases = root["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let reward = build("kind = \"bleu1-nltk\"\nextract = \"text\"\nstrip_think = false");
    for c in cases {
        let note = c["note"].as_str().unwrap();
        let pred = c["prediction"].as_str().unwrap();
        let golds = strings(&c["golds"]);
        assert_eq!(
            word_tokenize(&pred.to_lowercase()),
            strings(&c["pred_tokens"]),
            "{note}: prediction tokens"
        );
        for (g, want) in golds.iter().zip(c["gold_tokens"].as_array().unwrap()) {
            assert_eq!(
                word_tokenize(&g.to_lowercase()),
                strings(want),
                "{note}: gold tokens"
            );
        }
        let per_gold: Vec<f64> = c["per_gold"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (g, want) in golds.iter().zip(&per_gold) {
            let got = bleu1_nltk(pred, g);
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
