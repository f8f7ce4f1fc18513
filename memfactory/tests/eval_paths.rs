//! `memfactory eval` with k paths per sample states its aggregation: `metrics` is avg@k
//! (mean over each sample's k paths, then over samples) and `pass_at_k` the mean of each
//! sample's best path; scores.jsonl keeps each sample's best path. A scripted LM that gives
//! exactly one of the k paths the right answer makes the two differ by a known amount.

#![cfg(all(
    feature = "lm-scripted",
    feature = "agent-memagent",
    feature = "op-overwrite",
    feature = "data-memagent-json",
    feature = "reward-exact-match"
))]

use memfactory::Assembly;
use memfactory::core::Recipe;
use memfactory::eval::run_eval;

/// Two samples, one chunk each; `paths` paths; replies cycle over one right and two wrong
/// answers, so each batch of 3 lockstep requests holds exactly one right answer.
fn eval(paths: usize) -> (serde_json::Value, String, Vec<serde_json::Value>) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d.json");
    std::fs::write(
        &data,
        r#"[{"_id": "a", "context": "Some text.", "input": "Q?", "answers": ["4242"]},
            {"_id": "b", "context": "Other text.", "input": "Q2?", "answers": ["7"]}]"#,
    )
    .unwrap();
    let recipe = format!(
        r#"
[run]
name = "paths"
seed = 0
[model]
kind = "scripted"
sequence = ["\\boxed{{4242}}", "\\boxed{{no}}", "\\boxed{{no}}"]
[agent]
kind = "memagent"
chunk_tokens = 1000
paths = {paths}
[data.eval]
kind = "memagent-json"
path = {data:?}
[eval]
concurrency = 1
metrics = ["exact-match"]
"#
    );
    let asm = Assembly::from_recipe(&Recipe::parse(&recipe, "paths.toml").unwrap()).unwrap();
    let out = t.path().join("run");
    run_eval(&asm, None, &out, &mut |_| {}).unwrap();
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let metrics = serde_json::from_str(&read("metrics.json")).unwrap();
    let scores = read("scores.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (metrics, read("report.md"), scores)
}

#[test]
fn avg_at_k_and_pass_at_k_are_reported() {
    let (m, report, scores) = eval(3);
    assert_eq!(m["paths"], 3);
    assert_eq!(m["aggregate"], "avg@3");
    // Sample a: 1 of 3 paths right; sample b: none (its gold is "7").
    let avg = m["metrics"]["exact-match"].as_f64().unwrap();
    assert!((avg - (1.0 / 3.0) / 2.0).abs() < 1e-12, "{m}");
    assert_eq!(m["pass_at_k"]["exact-match"].as_f64(), Some(0.5), "{m}");
    assert_eq!(scores[0]["best"]["exact-match"].as_f64(), Some(1.0));
    assert_eq!(scores[1]["best"]["exact-match"].as_f64(), Some(0.0));
    assert!(
        report.contains("| metric | avg@3 | 95% CI | pass@3 |"),
        "{report}"
    );
    assert!(report.contains("| exact-match | 0.1667 |"), "{report}");
    assert!(report.contains(" 0.5000 |\n"), "{report}");
}

#[test]
fn one_path_reports_avg_at_1_without_pass_at_k() {
    let (m, report, scores) = eval(1);
    assert_eq!(m["aggregate"], "avg@1");
    assert!(m.get("pass_at_k").is_none(), "{m}");
    assert!(scores[0].get("best").is_none());
    assert!(report.contains("| metric | avg@1 | 95% CI |\n"), "{report}");
}
