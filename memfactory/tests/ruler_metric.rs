//! RULER data is scored with RULER's own per-task function by default: with no `[eval]
//! metrics`, `ruler-string-match` (each sample's `meta.metric`) leads the default metrics;
//! other data keeps the defaults unchanged; a recipe that names its metrics gets exactly those.

#![cfg(all(
    feature = "lm-scripted",
    feature = "agent-memagent",
    feature = "op-overwrite",
    feature = "data-ruler",
    feature = "data-memagent-json",
    feature = "reward-ruler-string-match",
    feature = "reward-sub-em",
    feature = "reward-exact-match",
    feature = "reward-f1",
    feature = "reward-format"
))]

use memfactory::Assembly;
use memfactory::core::Recipe;

fn metric_names(data: &str, eval: &str) -> Vec<String> {
    let recipe = format!(
        r#"
[model]
kind = "scripted"
sequence = ["\\boxed{{1}}"]
[agent]
kind = "memagent"
chunk_tokens = 400
[data.eval]
{data}
[eval]
{eval}
"#
    );
    let asm = Assembly::from_recipe(&Recipe::parse(&recipe, "ruler_metric.toml").unwrap()).unwrap();
    asm.metrics.iter().map(|m| m.name().to_string()).collect()
}

const RULER: &str = "kind = \"ruler\"\ntask = \"niah-multivalue\"\ntokens = 500\nsamples = 2";

#[test]
fn ruler_data_is_scored_with_its_own_metric_by_default() {
    assert_eq!(
        metric_names(RULER, ""),
        [
            "ruler-string-match",
            "sub-em",
            "exact-match",
            "f1",
            "format"
        ]
    );
}

#[test]
fn other_data_keeps_the_default_metrics() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d.json");
    std::fs::write(
        &data,
        r#"[{"_id": "a", "context": "Some text.", "input": "Q?", "answers": ["1"]}]"#,
    )
    .unwrap();
    assert_eq!(
        metric_names(&format!("kind = \"memagent-json\"\npath = {data:?}"), ""),
        ["sub-em", "exact-match", "f1", "format"]
    );
}

#[test]
fn named_metrics_are_kept_as_named() {
    assert_eq!(metric_names(RULER, "metrics = [\"sub-em\"]"), ["sub-em"]);
}
