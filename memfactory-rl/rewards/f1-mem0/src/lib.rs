//! # memfactory-reward-f1-mem0
//!
//! Token F1 as the LoCoMo evaluations of the Mem0 / A-Mem / Memory-R1 line compute it.
//! Registered as reward kind `f1-mem0`; usable as an eval metric and a training reward. The
//! project's `f1` (HotpotQA/SQuAD normalization, multiset counts, yes/no rule) keeps its
//! name; the two differ on most free-text answers, so only `f1-mem0` is comparable with
//! those papers' tables.
//!
//! ## Definition
//!
//! mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8, `evaluation/metrics/utils.py`
//! (`simple_tokenize`, `calculate_metrics`; taken from A-Mem, WujiangXu/AgenticMemory
//! `utils.py`):
//!
//! - an empty prediction or gold answer scores 0 (`if not prediction or not reference`);
//! - [`simple_tokenize`]: lowercase, replace `.` `,` `!` `?` by spaces, split on whitespace
//!   (articles and every other punctuation mark stay);
//! - the token **sets** `P` and `G` give `precision = |P∩G| / |P|`, `recall = |P∩G| / |G|`
//!   and `F1 = 2pr / (p + r)` (0 when either set is empty or nothing is shared).
//!
//! Example: "The 7th of May, 2023" vs "7 May 2023" → P = {the, 7th, of, may, 2023},
//! G = {7, may, 2023}, F1 = 2 · (2/5 · 2/3) / (2/5 + 2/3) = 0.5 (the project's `f1` gives
//! 0.57). Mem0 scores one gold answer; here the score is maximised over the sample's gold
//! answers (LoCoMo has one per question, so the numbers agree).
//!
//! `golden/make_golden.py` runs mem0's functions (copied into it) on tricky cases and writes
//! `golden/golden.json`; `tests/golden.rs` matches it.
//!
//! ## Recipe keys
//!
//! The extraction keys of every answer metric
//! ([`memfactory_core::reward::AnswerExtraction`]): `extract` (`"boxed"` default,
//! `"boxed-or-text"`, `"answer-is"`, `"text"` — Mem0 scores the whole response), its older
//! spelling `require_boxed`, `strip_think` (default true), and `name` (default `"f1-mem0"`).
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "f1-mem0", extract = "text" }]
//! ```

use std::collections::HashSet;

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text::py_is_space};

/// Registry kind of this reward.
pub const KIND: &str = "f1-mem0";

/// mem0's `simple_tokenize`: `text.lower()`, `.` `,` `!` `?` replaced by spaces, `split()`.
pub fn simple_tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['.', ',', '!', '?'], " ")
        .split(py_is_space)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// mem0's token-set F1 of `prediction` against `reference` (see the crate docs).
pub fn f1_mem0(prediction: &str, reference: &str) -> f64 {
    if prediction.is_empty() || reference.is_empty() {
        return 0.0;
    }
    let p: HashSet<String> = simple_tokenize(prediction).into_iter().collect();
    let g: HashSet<String> = simple_tokenize(reference).into_iter().collect();
    if p.is_empty() || g.is_empty() {
        return 0.0;
    }
    let common = p.intersection(&g).count() as f64;
    let precision = common / p.len() as f64;
    let recall = common / g.len() as f64;
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

fn metric(pred: &str, gold: &str) -> f32 {
    f1_mem0(pred, gold) as f32
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg(cfg, KIND, metric)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "Mem0 / A-Mem LoCoMo F1: token sets of simple_tokenize (lowercase, . , ! ? removed), max over golds.",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cases() {
        assert!((f1_mem0("The 7th of May, 2023", "7 May 2023") - 0.5).abs() < 1e-12);
        assert_eq!(f1_mem0("Paris", "paris!"), 1.0);
        // Sets: repeats do not count twice.
        assert_eq!(f1_mem0("cat cat", "cat"), 1.0);
        assert_eq!(f1_mem0("", "x"), 0.0);
        assert_eq!(f1_mem0("...", "..."), 0.0);
        assert_eq!(f1_mem0("dog", "cat"), 0.0);
        assert_eq!(
            simple_tokenize("Self-care; it's A.B"),
            ["self-care;", "it's", "a", "b"]
        );
    }
}
