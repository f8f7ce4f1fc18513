//! # memfactory-reward-bleu1-nltk
//!
//! BLEU-1 as the LoCoMo evaluations of the Mem0 / A-Mem / Memory-R1 line compute it: NLTK's
//! `sentence_bleu` on NLTK word tokens of the lower-cased texts. Registered as reward kind
//! `bleu1-nltk`; usable as an eval metric and a training reward. The project's `bleu1`
//! (same BLEU formula over SQuAD-normalized tokens) keeps its name.
//!
//! ## Definition
//!
//! mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8, `evaluation/metrics/utils.py`,
//! `calculate_bleu_scores` (taken from A-Mem), as `evaluation/evals.py` calls it — on the raw
//! strings, without the empty-input guard of `calculate_metrics`:
//!
//! ```python
//! pred_tokens = nltk.word_tokenize(prediction.lower())
//! ref_tokens = [nltk.word_tokenize(reference.lower())]
//! sentence_bleu(ref_tokens, pred_tokens, weights=(1, 0, 0, 0),
//!               smoothing_function=SmoothingFunction().method1)
//! ```
//!
//! With `c` prediction tokens, `r` reference tokens and `m` clipped unigram matches,
//! `BLEU-1 = BP · m / c` with `BP = 1` if `c > r`, else `exp(1 − r / c)`, and 0 when `m = 0`
//! (method1's smoothing only touches the zero-weighted higher orders). The score is
//! maximised over the sample's gold answers (LoCoMo has one per question).
//!
//! [`word_tokenize`] reimplements NLTK's `NLTKWordTokenizer` (the improved Treebank
//! tokenizer `word_tokenize` applies to each sentence, nltk 3.10 `tokenize/destructive.py`):
//! the same regular expressions, in the same order (starting quotes, punctuation — a final
//! period split off, `:` `,` split unless before a digit, `...`, `;@#$%&`, dashes, `?!` —
//! brackets, `--`, ending quotes, the clitics `'s 'm 'd 'll 're 've n't`, and MacIntyre's
//! contractions `cannot gimme gonna gotta lemme more'n wanna 'tis 'twas`). Python's `$`
//! (end, or before a final newline) is written out where it matters.
//!
//! **One deviation.** `word_tokenize` first splits the text into sentences with NLTK's Punkt
//! model (`english.pickle`, trained parameters); the final-period rule then applies to each
//! sentence. This crate tokenizes the whole text as one sentence
//! (`word_tokenize(text, preserve_line=True)`), so in a prediction of several sentences a
//! period that ends an inner sentence stays attached to its word (`"paris. it"` gives
//! `paris.` here, `paris` `.` with Punkt) — answers of one sentence, the usual LoCoMo gold
//! and short predictions, tokenize identically.
//!
//! `golden/make_golden.py` runs NLTK (`NLTKWordTokenizer().tokenize`, `sentence_bleu`) on
//! tricky cases and writes `golden/golden.json`; `tests/golden.rs` matches tokens and scores.
//!
//! ## Recipe keys
//!
//! The extraction keys of every answer metric
//! ([`memfactory_core::reward::AnswerExtraction`]): `extract` (`"boxed"` default,
//! `"boxed-or-text"`, `"answer-is"`, `"text"` — Mem0 scores the whole response), its older
//! spelling `require_boxed`, `strip_think` (default true), and `name` (default
//! `"bleu1-nltk"`).
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "bleu1-nltk", extract = "text" }]
//! ```

use std::borrow::Cow;
use std::sync::LazyLock;

use fancy_regex::Regex;
use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text::py_is_space};

/// Registry kind of this reward.
pub const KIND: &str = "bleu1-nltk";

/// One substitution step: NLTK's pattern (Python `$` made explicit) and its replacement in
/// `regex` syntax (`${1}` for Python's `\1`, `${0}` for `\g<0>`).
type Rule = (Regex, &'static str);

fn rules(list: &[(&str, &'static str)]) -> Vec<Rule> {
    list.iter()
        .map(|(p, r)| (Regex::new(p).expect("NLTK tokenizer pattern"), *r))
        .collect()
}

/// `STARTING_QUOTES`, `PUNCTUATION`, `PARENS_BRACKETS`, `DOUBLE_DASHES` (applied before the
/// text is padded with spaces).
static BEFORE_PADDING: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    rules(&[
        // STARTING_QUOTES
        ("([«“‘„]|[`]+)", " ${1} "),
        (r#"^""#, "``"),
        ("(``)", " ${1} "),
        (r#"([ \(\[{<])("|'{2})"#, "${1} `` "),
        (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", "${1} "),
        // PUNCTUATION (`\s*$` is `\s*\z`: the whitespace run takes a final newline).
        (r#"([^\.])(\.)([\]\)}>"'»”’ ]*)\s*\z"#, "${1} ${2} ${3} "),
        (r"([:,])([^\d])", " ${1} ${2}"),
        // Python's `$` also matches before a final newline, which stays.
        (r"([:,])(\n?)\z", " ${1} ${2}"),
        (r"\.{2,}", " ${0} "),
        (r"[;@#$%&]", " ${0} "),
        (r"[\u2012-\u2015]", " ${0} "),
        (r#"([^\.])(\.)([\]\)}>"']*)\s*\z"#, "${1} ${2}${3} "),
        (r"[?!]", " ${0} "),
        (r"([^'])' ", "${1} ' "),
        (r"[*]", " ${0} "),
        // PARENS_BRACKETS
        (r"[\]\[\(\)\{\}<>]", " ${0} "),
        // DOUBLE_DASHES
        (r"--", " -- "),
    ])
});

/// `ENDING_QUOTES`, `CONTRACTIONS2`, `CONTRACTIONS3` (applied after padding).
static AFTER_PADDING: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    rules(&[
        // ENDING_QUOTES
        ("([»”’])", " ${1} "),
        ("''", " '' "),
        ("\"", " '' "),
        (r"\s+", " "),
        (r"([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} "),
        (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "${1} ${2} "),
        // CONTRACTIONS2
        (r"(?i)\b(can)(not)\b", " ${1} ${2} "),
        (r"(?i)\b(d)('ye)\b", " ${1} ${2} "),
        (r"(?i)\b(gim)(me)\b", " ${1} ${2} "),
        (r"(?i)\b(gon)(na)\b", " ${1} ${2} "),
        (r"(?i)\b(got)(ta)\b", " ${1} ${2} "),
        (r"(?i)\b(lem)(me)\b", " ${1} ${2} "),
        (r"(?i)\b(more)('n)\b", " ${1} ${2} "),
        (r"(?i)\b(wan)(na)(?=\s)", " ${1} ${2} "),
        // CONTRACTIONS3
        (r"(?i) ('t)(is)\b", " ${1} ${2} "),
        (r"(?i) ('t)(was)\b", " ${1} ${2} "),
    ])
});

fn apply(rules: &[Rule], mut text: String) -> String {
    for (re, rep) in rules {
        // The patterns are short and bounded; should the backtracking limit ever trip, the
        // step is skipped rather than the eval stopped.
        if let Ok(Cow::Owned(s)) = re.try_replacen(&text, 0, *rep) {
            text = s;
        }
    }
    text
}

/// NLTK's `NLTKWordTokenizer().tokenize(text)` (see the crate docs).
pub fn word_tokenize(text: &str) -> Vec<String> {
    let text = apply(&BEFORE_PADDING, text.to_string());
    let text = apply(&AFTER_PADDING, format!(" {text} "));
    text.split(py_is_space)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// NLTK's `sentence_bleu([gold], pred, weights=(1, 0, 0, 0), method1)` on tokens; one
/// definition shared with `bleu1`: [`memfactory_core::text::bleu1_tokens`].
pub use memfactory_core::text::bleu1_tokens;

/// Mem0's BLEU-1 of `prediction` against `reference`: [`bleu1_tokens`] over
/// [`word_tokenize`] of the lower-cased texts.
pub fn bleu1_nltk(prediction: &str, reference: &str) -> f64 {
    let p = word_tokenize(&prediction.to_lowercase());
    let g = word_tokenize(&reference.to_lowercase());
    bleu1_tokens(&p, &g)
}

fn metric(pred: &str, gold: &str) -> f32 {
    bleu1_nltk(pred, gold) as f32
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg(cfg, KIND, metric)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "Mem0 / A-Mem LoCoMo BLEU-1: NLTK sentence_bleu (1,0,0,0), method1, on NLTK word tokens of the lower-cased texts; max over golds.",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn treebank_cases() {
        let t = |s: &str| word_tokenize(s).join("|");
        assert_eq!(t("7 may, 2023"), "7|may|,|2023");
        assert_eq!(t("i can't do it."), "i|ca|n't|do|it|.");
        assert_eq!(t("melanie's dog"), "melanie|'s|dog");
        assert_eq!(t("\"hello\" (world)"), "``|hello|''|(|world|)");
        assert_eq!(t("1,000 and 3.5"), "1,000|and|3.5");
        assert_eq!(t("wait... what?"), "wait|...|what|?");
        assert_eq!(t("cannot"), "can|not");
    }

    #[test]
    fn bleu_known_cases() {
        assert_eq!(bleu1_nltk("Paris", "paris"), 1.0);
        assert_eq!(bleu1_nltk("", "paris"), 0.0);
        // "7 May, 2023" is four tokens against three: precision 3/4, no penalty.
        assert!((bleu1_nltk("7 May, 2023", "7 May 2023") - 0.75).abs() < 1e-12);
    }
}
