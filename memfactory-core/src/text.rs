//! Answer extraction and SQuAD/HotpotQA-style answer metrics, shared by the reward crates.
//!
//! Normalization follows the official HotpotQA / SQuAD evaluation script: lowercase, drop
//! ASCII punctuation, drop the articles *a*, *an*, *the*, collapse whitespace.

use std::collections::HashMap;

/// The content of the last `\boxed{...}` in `text` (nested braces balanced), trimmed.
pub fn extract_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{")?;
    let body = &text[start + "\\boxed{".len()..];
    let mut depth = 1usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(body[..i].trim().to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// Python's `str.isspace` (what `str.strip()` with no argument removes): Rust's
/// `char::is_whitespace` plus the ASCII separators U+001C..U+001F.
pub fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// MemAgent's think stripping (`extract_solution` in
/// BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146,
/// `taskutils/memory_eval/utils/__init__.py:20-38`, applied to every memory update and to
/// the final response in `utils/recurrent.py` and `ruler_hqa.py`): when the text holds a
/// `</think>`, the text after the **last** `</think>`, stripped of surrounding whitespace
/// (Python `str.strip()`); otherwise the text unchanged. An unclosed `<think>` (reasoning cut
/// off by the token budget) is therefore kept whole, `<think>` tag included — MemAgent's
/// default, without its `FORCE_THINK` environment switch, which would return no answer.
pub fn strip_think(text: &str) -> &str {
    match text.rfind("</think>") {
        Some(i) => py_strip(&text[i + "</think>".len()..]),
        None => text,
    }
}

/// MemAgent's `extract_answer` (same file as [`strip_think`], lines 41-49; used for the
/// published RULER-HQA numbers, whose final prompt asks for "Therefore, the answer is …"):
/// every `*` is deleted, then the text after the **last** `the answer is` (case-sensitive),
/// stripped, with the DeepSeek markers `<｜Assistant｜>` and `<｜end▁of▁sentence｜>` deleted,
/// stripped again, leading and trailing `.` removed, stripped once more. `None` when the
/// phrase does not occur.
pub fn extract_answer_is(response: &str) -> Option<String> {
    const PHRASE: &str = "the answer is";
    let response = response.replace('*', "");
    let at = response.rfind(PHRASE)?;
    let tail = py_strip(&response[at + PHRASE.len()..])
        .replace("<｜Assistant｜>", "")
        .replace("<｜end▁of▁sentence｜>", "");
    Some(py_strip(py_strip(&tail).trim_matches('.')).to_string())
}

/// RULER's `postprocess_pred` (NVIDIA/RULER@c3f5e3b, `scripts/eval/evaluate.py:50-58`):
/// strip, replace every control character U+0000..U+001F by a newline, strip again.
pub fn ruler_postprocess(pred: &str) -> String {
    let replaced: String = py_strip(pred)
        .chars()
        .map(|c| if c <= '\u{1f}' { '\n' } else { c })
        .collect();
    py_strip(&replaced).to_string()
}

/// One sample of RULER's `string_match_all` (NVIDIA/RULER@c3f5e3b,
/// `scripts/eval/synthetic/constants.py`): the mean over `refs` of
/// `ref.lower() in pred.lower()`. `None` when `refs` is empty (RULER divides by zero).
pub fn string_match_all<S: AsRef<str>>(pred: &str, refs: &[S]) -> Option<f32> {
    if refs.is_empty() {
        return None;
    }
    let pred = pred.to_lowercase();
    let hits = refs
        .iter()
        .filter(|r| pred.contains(&r.as_ref().to_lowercase()))
        .count();
    Some(hits as f32 / refs.len() as f32)
}

/// One sample of RULER's `string_match_part`: the max over `refs` of
/// `ref.lower() in pred.lower()`. `None` when `refs` is empty (Python's `max([])` fails).
pub fn string_match_part<S: AsRef<str>>(pred: &str, refs: &[S]) -> Option<f32> {
    if refs.is_empty() {
        return None;
    }
    let pred = pred.to_lowercase();
    let any = refs
        .iter()
        .any(|r| pred.contains(&r.as_ref().to_lowercase()));
    Some(if any { 1.0 } else { 0.0 })
}

/// NLTK's `sentence_bleu([gold], pred, weights=(1, 0, 0, 0),
/// smoothing_function=SmoothingFunction().method1)` on already tokenized text: clipped
/// unigram precision times the brevity penalty; 0 when no token of the prediction matches
/// (or it is empty). The metric crates `bleu1` (SQuAD-normalized tokens) and `bleu1-nltk`
/// (NLTK word tokens) differ only in how they tokenize.
pub fn bleu1_tokens<S: AsRef<str>>(pred: &[S], gold: &[S]) -> f64 {
    if pred.is_empty() {
        return 0.0;
    }
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for t in gold {
        *gold_counts.entry(t.as_ref()).or_default() += 1;
    }
    let mut matches = 0usize;
    for t in pred {
        if let Some(n) = gold_counts.get_mut(t.as_ref())
            && *n > 0
        {
            *n -= 1;
            matches += 1;
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let (c, r) = (pred.len() as f64, gold.len() as f64);
    let bp = if pred.len() > gold.len() {
        1.0
    } else {
        (1.0 - r / c).exp()
    };
    // As NLTK: BP · exp(Σ wₙ · ln pₙ) with w₁ = 1 and the other weights 0.
    bp * (matches as f64 / c).ln().exp()
}

/// SQuAD / HotpotQA answer normalization.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalized exact match.
pub fn exact_match(pred: &str, gold: &str) -> bool {
    normalize_answer(pred) == normalize_answer(gold)
}

/// Normalized gold contained in normalized prediction (MemAgent's sub-EM).
pub fn sub_exact_match(pred: &str, gold: &str) -> bool {
    let g = normalize_answer(gold);
    let p = normalize_answer(pred);
    if g.is_empty() {
        return p.is_empty();
    }
    // Containment on word boundaries of the normalized strings.
    format!(" {p} ").contains(&format!(" {g} "))
}

/// Token F1 as in the HotpotQA evaluation script (yes / no / noanswer must match exactly).
pub fn f1_score(pred: &str, gold: &str) -> f32 {
    let p = normalize_answer(pred);
    let g = normalize_answer(gold);
    let special = ["yes", "no", "noanswer"];
    if (special.contains(&p.as_str()) || special.contains(&g.as_str())) && p != g {
        return 0.0;
    }
    let pt: Vec<&str> = p.split_whitespace().collect();
    let gt: Vec<&str> = g.split_whitespace().collect();
    if pt.is_empty() || gt.is_empty() {
        return if pt.is_empty() && gt.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, i32> = HashMap::new();
    for t in &gt {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0;
    for t in &pt {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f32 / pt.len() as f32;
    let recall = same as f32 / gt.len() as f32;
    2.0 * precision * recall / (precision + recall)
}

/// `metric` maximised over gold answers (0 when there are none).
pub fn max_over(golds: &[String], metric: impl Fn(&str) -> f32) -> f32 {
    golds.iter().map(|g| metric(g)).fold(0.0, f32::max)
}

/// Byte range of the balanced `{...}` starting at `start` (which holds `{`), skipping
/// braces inside JSON strings; `None` when it never closes.
fn balanced_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &c) in bytes.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first balanced `{...}` of `text` that is a valid JSON object (code fences and prose
/// around it are skipped) — how ops read a model's JSON reply. A candidate that is not valid JSON is skipped whole (its inner
/// objects are not tried); when none is valid the error describes the first candidate.
pub fn find_json_object(
    text: &str,
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut first_err: Option<String> = None;
    let mut from = 0;
    while let Some(off) = text[from..].find('{') {
        let start = from + off;
        let Some(end) = balanced_end(text, start) else {
            return Err(first_err.unwrap_or_else(|| {
                "unterminated JSON object (a `{` is never closed)".to_string()
            }));
        };
        match serde_json::from_str::<serde_json::Value>(&text[start..end]) {
            Ok(serde_json::Value::Object(m)) => return Ok(m),
            // Cannot happen (a balanced `{...}` is an object or invalid); never panic on input.
            Ok(_) => {
                first_err.get_or_insert_with(|| "not a JSON object".to_string());
            }
            Err(e) => {
                first_err.get_or_insert_with(|| format!("not valid JSON: {e}"));
            }
        }
        from = end;
    }
    Err(first_err.unwrap_or_else(|| "no JSON object in the output".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_cases() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(normalize_answer("An apple, a day"), "apple day");
        assert_eq!(normalize_answer("U.S.A."), "usa");
        assert_eq!(normalize_answer("theatre"), "theatre");
        assert_eq!(normalize_answer("  "), "");
    }

    #[test]
    fn strip_think_follows_memagent() {
        assert_eq!(strip_think("<think>hmm</think>  Paris \n"), "Paris");
        // The last `</think>` wins; text before it is dropped whatever it holds.
        assert_eq!(strip_think("a</think>b</think> c"), "c");
        // No closing tag: unchanged, not even trimmed; an unclosed `<think>` is kept.
        assert_eq!(
            strip_think(" <think>still thinking "),
            " <think>still thinking "
        );
        assert_eq!(strip_think(" plain "), " plain ");
        // A stray `</think>` without an opening tag still cuts.
        assert_eq!(strip_think("x </think>y"), "y");
        assert_eq!(strip_think("<think>a</think>"), "");
        // Python's strip also removes U+001C..U+001F and Unicode spaces.
        assert_eq!(strip_think("</think>\u{1f}\u{3000}ans\u{a0}"), "ans");
    }

    #[test]
    fn answer_is_follows_memagent() {
        assert_eq!(
            extract_answer_is("So, the answer is **Paris**.").as_deref(),
            Some("Paris")
        );
        // The last occurrence wins; the phrase is case-sensitive.
        assert_eq!(
            extract_answer_is("the answer is A. No, the answer is B..").as_deref(),
            Some("B")
        );
        assert_eq!(extract_answer_is("The answer is C"), None);
        assert_eq!(
            extract_answer_is("the answer is 42<｜end▁of▁sentence｜>").as_deref(),
            Some("42")
        );
        assert_eq!(extract_answer_is("the answer is . ").as_deref(), Some(""));
        assert_eq!(extract_answer_is("no phrase"), None);
    }

    #[test]
    fn ruler_string_match() {
        let refs = ["12", "34", "56"];
        assert_eq!(string_match_all("12 and 34", &refs), Some(2.0 / 3.0));
        assert_eq!(string_match_part("12 and 34", &refs), Some(1.0));
        assert_eq!(string_match_part("none", &refs), Some(0.0));
        assert_eq!(string_match_all("ABC", &["abc"]), Some(1.0));
        assert_eq!(string_match_all("x", &[] as &[&str]), None);
        assert_eq!(ruler_postprocess(" a\tb\u{0}c \n"), "a\nb\nc");
    }

    #[test]
    fn boxed_extraction() {
        assert_eq!(extract_boxed("so \\boxed{Paris}."), Some("Paris".into()));
        assert_eq!(
            extract_boxed("\\boxed{a} then \\boxed{ {b} c }"),
            Some("{b} c".into())
        );
        assert_eq!(extract_boxed("no box"), None);
        assert_eq!(extract_boxed("\\boxed{unclosed"), None);
    }

    #[test]
    fn metrics_known_cases() {
        assert!(exact_match("the Eiffel tower", "Eiffel Tower."));
        assert!(!exact_match("Eiffel", "Eiffel Tower"));
        assert!(sub_exact_match(
            "It is the Eiffel Tower in Paris",
            "Eiffel Tower"
        ));
        assert!(!sub_exact_match("Eiffelish Towers", "Eiffel Tower"));
        assert!((f1_score("Eiffel Tower Paris", "the Eiffel Tower") - 0.8).abs() < 1e-6);
        assert_eq!(f1_score("yes", "no"), 0.0);
        assert_eq!(f1_score("yes", "Yes."), 1.0);
        assert_eq!(f1_score("cat", "dog"), 0.0);
        let golds = vec!["dog".to_string(), "cat".to_string()];
        assert_eq!(max_over(&golds, |g| f1_score("a cat", g)), 1.0);
    }
}

#[cfg(test)]
mod json_tests {
    use super::find_json_object;

    #[test]
    fn finds_the_first_valid_object_around_prose_and_fences() {
        let m =
            find_json_object("Sure!\n```json\n{\"a\": \"x}{\", \"b\": {\"c\": 1}}\n```").unwrap();
        assert_eq!(m["a"], "x}{");
        assert_eq!(m["b"]["c"], 1);
        // An invalid candidate is skipped whole; the next valid one is taken.
        let m = find_json_object("{'a': 1} then {\"a\": 2}").unwrap();
        assert_eq!(m["a"], 2);
        assert!(
            find_json_object("no json")
                .unwrap_err()
                .contains("no JSON object")
        );
        assert!(
            find_json_object("{\"a\": 1")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            find_json_object("{'a': 1}")
                .unwrap_err()
                .starts_with("not valid JSON")
        );
    }
}
