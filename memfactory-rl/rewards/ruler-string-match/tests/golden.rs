//! `ruler-string-match` picks RULER's function from each sample's `meta.metric`: matched
//! against the golden file written by `string-match-all/golden/make_golden.py` from RULER's
//! own functions, with each case scored under both names.

use memfactory_core::Sample;
use memfactory_reward_ruler_string_match as _;
use memfactory_testkit::reward::{answered, build, strings};
use serde_json::{Value, json};

#[test]
fn golden_cases_by_sample_metric() {
    let root: Value =
        serde_json::from_str(include_str!("../../string-match-all/golden/golden.json")).unwrap();
    let cases = root["cases"].as_array().unwrap();
    let reward = build("kind = \"ruler-string-match\"\nextract = \"text\"\nstrip_think = false");
    let mut differ = 0;
    for c in cases {
        let note = c["note"].as_str().unwrap();
        let refs = strings(&c["refs"]);
        let episode = answered(c["prediction"].as_str().unwrap().to_string());
        for (name, field) in [
            ("string-match-all", "string_match_all"),
            ("string-match-part", "string_match_part"),
        ] {
            let mut sample = Sample::text("s", "q", "ctx", refs.clone());
            sample.meta.insert("metric".into(), json!(name));
            let got = reward.score(&sample, &episode).unwrap().unwrap();
            let want = c[field].as_f64().unwrap();
            assert!(
                (f64::from(got) - want).abs() < 1e-6,
                "{note} ({name}): {got} vs {want}"
            );
        }
        if c["string_match_all"] != c["string_match_part"] {
            differ += 1;
        }
    }
    // The two functions disagree on enough cases that a swapped dispatch fails above.
    assert!(differ >= 5, "{differ}");
}
