//! # memfactory-reward-bleu1
//!
//! BLEU-1 of the answer against a gold answer, the lexical metric that LoCoMo evaluations
//! in the Mem0 / Memory-R1 line report beside token F1 and an LLM judge. Registered as
//! reward kind `bleu1`; usable as an eval metric and a training reward.
//!
//! ## Definition
//!
//! Both texts are normalized with [`memfactory_core::text::normalize_answer`] (the
//! SQuAD/HotpotQA normalization the `f1` reward uses: lowercase, ASCII punctuation removed,
//! articles *a*/*an*/*the* removed) and split on whitespace. With `c` prediction tokens,
//! `r` gold tokens and `m` the clipped unigram matches (each prediction token counted at
//! most as often as it occurs in the gold answer):
//!
//! ```text
//! BLEU-1 = BP · m / c,   BP = 1 if c > r, else exp(1 − r / c)
//! ```
//!
//! and 0 when `m = 0` — in particular when the prediction has no token (empty, blank, or
//! only punctuation and articles) or the gold answer has none. This is NLTK's
//! `sentence_bleu([gold_tokens], pred_tokens, weights=(1, 0, 0, 0),
//! smoothing_function=SmoothingFunction().method1)`, computed the same way
//! (`BP · exp(ln(m / c))`). The smoothing never changes BLEU-1: NLTK returns 0 before
//! smoothing when there is no unigram match, and method1's ε only lifts zero-count
//! precisions of higher orders, whose weights are 0. Unlike `f1`, `yes` / `no` get no
//! special treatment. The score is maximised over the gold answers (each scored as a single
//! reference), so a sample with several accepted answers scores its best match.
//!
//! `golden/make_golden.py` computes the same pairs with NLTK and writes
//! `golden/golden.json`; the tests match it to 1e-6.
//!
//! ## Differences from published numbers
//!
//! The published reference code for LoCoMo's BLEU-1 is Mem0's evaluation
//! (`mem0ai/mem0`, `evaluation/metrics/utils.py`, `calculate_bleu_scores`, itself taken from
//! A-Mem), whose metric set (F1, BLEU-1, LLM judge) Memory-R1 reports. It uses the same
//! `sentence_bleu` call and smoothing, but tokenizes with `nltk.word_tokenize(text.lower())`:
//! punctuation marks are tokens there and articles stay (`"7 May, 2023"` is four tokens there,
//! three here). Scores here therefore differ from those tables when answers carry punctuation
//! or articles; they agree with this workspace's `f1` and `exact-match`, which share the
//! normalization.
//!
//! ## Recipe keys
//!
//! Scored on the last `\boxed{}` of the episode's answer (0 when there is none, unless
//! `require_boxed = false`, which falls back to the whole answer text), as `f1` does:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `require_boxed` | boolean | `true` | score only a `\boxed{}` answer |
//! | `name` | string | `"bleu1"` | the metric's name in reports |
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "bleu1", require_boxed = false }]
//! ```

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text};

/// Registry kind of this reward.
pub const KIND: &str = "bleu1";

/// BLEU-1 of prediction tokens against gold tokens (see the crate docs); 0 when no token
/// of the prediction matches. One definition shared with `bleu1-nltk`:
/// [`memfactory_core::text::bleu1_tokens`].
pub use memfactory_core::text::bleu1_tokens;

/// BLEU-1 of `pred` against `gold` over normalized tokens
/// ([`text::normalize_answer`], split on whitespace).
pub fn bleu1(pred: &str, gold: &str) -> f64 {
    let p = text::normalize_answer(pred);
    let g = text::normalize_answer(gold);
    let pt: Vec<&str> = p.split_whitespace().collect();
    let gt: Vec<&str> = g.split_whitespace().collect();
    bleu1_tokens(&pt, &gt)
}

fn metric(pred: &str, gold: &str) -> f32 {
    bleu1(pred, gold) as f32
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg(cfg, KIND, metric)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "BLEU-1 (clipped unigram precision × brevity penalty) of the boxed answer over normalized tokens, max over golds.",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_cases() {
        assert_eq!(bleu1("Paris", "paris."), 1.0);
        assert_eq!(bleu1("", "Paris"), 0.0);
        assert_eq!(bleu1("the", "Paris"), 0.0);
        assert_eq!(bleu1("Paris", ""), 0.0);
        assert_eq!(bleu1("", ""), 0.0);
        // Shorter: BP = exp(1 - 2/1).
        assert!((bleu1("Eiffel", "Eiffel Tower") - (-1.0f64).exp()).abs() < 1e-12);
        // Longer: no penalty, precision 2/5.
        assert!((bleu1("the Eiffel Tower in Paris France", "Eiffel Tower") - 0.4).abs() < 1e-12);
        // Clipping: "cat" counts once.
        assert!((bleu1("cat cat cat", "cat") - 1.0 / 3.0).abs() < 1e-12);
        // Order does not matter for unigrams.
        assert_eq!(bleu1("tower eiffel", "Eiffel Tower"), 1.0);
    }
}
