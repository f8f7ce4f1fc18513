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
