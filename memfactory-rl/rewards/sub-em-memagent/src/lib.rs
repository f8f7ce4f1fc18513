//! # memfactory-reward-sub-em-memagent
//!
//! MemAgent's evaluation metric for RULER-HotpotQA, `sub_exact_match_score`, reproduced as
//! MemAgent computes it. Registered as reward kind `sub-em-memagent`; usable as an eval
//! metric and a training reward. The project's older `sub-em` (gold contained in the
//! prediction on word boundaries, one direction, max over golds) keeps its name.
//!
//! ## Definition
//!
//! From BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146,
//! `taskutils/memory_eval/utils/__init__.py:51-95` and `taskutils/memory_eval/ruler_hqa.py:87-94`:
//!
//! - both texts go through MemAgent's `normalize_answer` ([`normalize_memagent`]: lowercase,
//!   ASCII punctuation removed, the words *a*, *an*, *the* replaced by a space, whitespace
//!   collapsed);
//! - the score is 1 when the normalized gold is a **character** substring of the normalized
//!   prediction **or** the prediction one of the gold (`"Paris"` vs `"Paris, France"` → 1,
//!   `"USA"` vs `"US"` → 1), else 0;
//! - only the **first** gold answer counts (`item["answer"] = item["answers"][0]`);
//! - an empty prediction scores 0: MemAgent guards it (`... if item["pred"] else 0`), so
//!   Python's `'' in s == True` never makes an empty answer correct. The guard looks at the
//!   extracted answer before normalization, as MemAgent's does: a non-empty answer that
//!   normalizes to nothing (`"the"`, `"?!"`) is contained in every gold and scores 1 there,
//!   and so it does here.
//!
//! `golden/make_golden.py` runs MemAgent's functions (copied into it) on tricky cases and
//! writes `golden/golden.json`; `tests/golden.rs` matches it.
//!
//! ## Recipe keys
//!
//! The extraction keys of every answer metric ([`memfactory_core::reward::AnswerExtraction`]):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `extract` | `"boxed"` | `"boxed"`, `"boxed-or-text"`, `"answer-is"` (MemAgent's `extract_answer`, used for its published RULER-HQA numbers), `"text"` |
//! | `require_boxed` | — | older spelling: `true` = `"boxed"`, `false` = `"boxed-or-text"` (not with `extract`) |
//! | `strip_think` | `true` | drop everything up to the last `</think>` first (MemAgent's `extract_solution`) |
//! | `name` | `"sub-em-memagent"` | the metric's name in reports |
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "sub-em-memagent", extract = "answer-is" }]
//! ```

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text::py_is_space};

/// Registry kind of this reward.
pub const KIND: &str = "sub-em-memagent";

/// Python's `\w` on `str` patterns: alphanumeric or `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// MemAgent's `normalize_answer`: `white_space_fix(remove_articles(remove_punc(lower(s))))`,
/// where `remove_articles` is `re.sub(r'\b(a|an|the)\b', ' ', text)` — a maximal run of word
/// characters equal to `a`, `an` or `the` becomes a space — and `white_space_fix` is
/// `' '.join(text.split())`.
pub fn normalize_memagent(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in lower.chars().filter(|c| !c.is_ascii_punctuation()) {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split(py_is_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// MemAgent's `sub_exact_match_score(prediction, ground_truth)`: normalized gold in
/// normalized prediction, or the reverse (no empty-prediction guard: see
/// [`sub_em_memagent`]).
pub fn sub_exact_match_score(prediction: &str, ground_truth: &str) -> bool {
    let g = normalize_memagent(ground_truth);
    let p = normalize_memagent(prediction);
    p.contains(&g) || g.contains(&p)
}

/// One sample as MemAgent's eval scores it: 0 for an empty prediction, else
/// [`sub_exact_match_score`] against the first gold answer (0 when there is none).
pub fn sub_em_memagent(prediction: &str, golds: &[String]) -> f32 {
    match golds.first() {
        Some(gold) if !prediction.is_empty() => {
            f32::from(u8::from(sub_exact_match_score(prediction, gold)))
        }
        _ => 0.0,
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg_golds(
        cfg,
        KIND,
        sub_em_memagent,
    )?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "MemAgent's sub-EM: normalized gold in prediction or prediction in gold (character substring), first gold only.",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golds(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn known_cases_from_the_review() {
        assert_eq!(sub_em_memagent("Paris", &golds(&["Paris, France"])), 1.0);
        assert_eq!(sub_em_memagent("USA", &golds(&["US"])), 1.0);
        assert_eq!(
            sub_em_memagent("Taylor Swift's album", &golds(&["Taylor Swift"])),
            1.0
        );
        assert_eq!(sub_em_memagent("London", &golds(&["Paris"])), 0.0);
        // First gold only.
        assert_eq!(sub_em_memagent("London", &golds(&["Paris", "London"])), 0.0);
        // Empty prediction guarded; one that normalizes to nothing is not.
        assert_eq!(sub_em_memagent("", &golds(&["Paris"])), 0.0);
        assert_eq!(sub_em_memagent("the", &golds(&["Paris"])), 1.0);
        assert_eq!(sub_em_memagent("x", &[]), 0.0);
    }

    #[test]
    fn normalization_follows_the_regex() {
        assert_eq!(normalize_memagent("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(normalize_memagent("a€b an"), "€b");
        assert_eq!(normalize_memagent("théâtre the"), "théâtre");
        assert_eq!(normalize_memagent("\u{1f}x\u{1c}"), "x");
    }
}
