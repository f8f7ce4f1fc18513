//! # memfactory-reward-string-match-all
//!
//! RULER's `string_match_all`, one sample at a time. Registered as reward kind
//! `string-match-all`; usable as an eval metric and a training reward. RULER scores its
//! synthetic tasks (needles, variable tracking, common / frequent words) with
//! `string_match_all` and its QA tasks with `string_match_part`; MemAgent's OOD RULER
//! evaluation (`taskutils/memory_eval/ruler_general.py:18-31`) uses `string_match_all` for
//! every non-QA task. `ruler-string-match` picks between the two per sample from
//! `meta.metric`.
//!
//! ## Definition
//!
//! NVIDIA/RULER@c3f5e3b, `scripts/eval/synthetic/constants.py`: the mean over the references of `ref.lower() in pred.lower()` (the fraction of references found), RULER's
//! mean over samples being the eval's mean. The scored text is the extracted answer after
//! RULER's `postprocess_pred` (`scripts/eval/evaluate.py:50-58`: strip, control characters
//! to newlines, strip; [`memfactory_core::text::ruler_postprocess`]). RULER reports
//! percentages rounded to 2 decimals over the whole set; scores here are per sample in
//! \[0, 1\], unrounded (MemAgent's `ruler_general.py` rounds each sample to 2 decimals, so a
//! 1/3 there is 0.33). Substring semantics as in Python: an empty reference is found in
//! every prediction. A sample without gold answers is not scored.
//!
//! `golden/make_golden.py` (in `memfactory-reward-string-match-all`) runs RULER's functions
//! on tricky cases and writes `golden/golden.json`, which both crates' tests match.
//!
//! ## Recipe keys
//!
//! The extraction keys of every answer metric ([`memfactory_core::reward::AnswerExtraction`]):
//! `extract` (`"boxed"` default — MemAgent's `recurrent-boxed` protocol —, `"boxed-or-text"`,
//! `"answer-is"` — its `recurrent` protocol —, `"text"` — RULER's own, on the raw output),
//! its older spelling `require_boxed`, `strip_think` (default true) and `name`
//! (default `"string-match-all"`).
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "string-match-all", extract = "text" }]
//! ```

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text};

/// Registry kind of this reward.
pub const KIND: &str = "string-match-all";

/// One sample's score: RULER's postprocess on `pred`, then `string_match_all` over
/// `refs`; 0 when `refs` is empty.
///
/// ```
/// use memfactory_reward_string_match_all::score;
/// assert_eq!(score("The numbers: 12, 34.", &["12", "34", "56", "78"]), 0.5);
/// ```
pub fn score<S: AsRef<str>>(pred: &str, refs: &[S]) -> f32 {
    text::string_match_all(&text::ruler_postprocess(pred), refs).unwrap_or(0.0)
}

fn metric(pred: &str, golds: &[String]) -> f32 {
    score(pred, golds)
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg_golds(cfg, KIND, metric)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "RULER's string_match_all: fraction of references found in the answer (case-insensitive substring).",
        build,
    }
}
