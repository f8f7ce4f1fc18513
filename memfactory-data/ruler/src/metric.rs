//! RULER's two scoring functions, as pure functions of one prediction and its references.
//!
//! RULER (`scripts/eval/synthetic/constants.py`) scores every synthetic task with
//! `string_match_all` and its QA tasks with `string_match_part`; both test whether a
//! reference occurs, case-insensitively, as a substring of the prediction. RULER reports
//! the mean over samples times 100; these functions return one sample's score in `[0, 1]`.
//! RULER also strips non-printable characters from predictions before scoring; callers that
//! want that do it first.

use serde::{Deserialize, Serialize};

/// Which scoring function a sample asks for (`meta.metric` of every sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// [`string_match_all`]: the fraction of references found in the prediction.
    StringMatchAll,
    /// [`string_match_part`]: 1 when any reference is found in the prediction.
    StringMatchPart,
}

impl Metric {
    /// The name written in `meta.metric`: `string-match-all` or `string-match-part`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::StringMatchAll => "string-match-all",
            Metric::StringMatchPart => "string-match-part",
        }
    }

    /// Scores `pred` against `refs` with this metric.
    pub fn score<S: AsRef<str>>(self, pred: &str, refs: &[S]) -> f32 {
        match self {
            Metric::StringMatchAll => string_match_all(pred, refs),
            Metric::StringMatchPart => string_match_part(pred, refs),
        }
    }
}

/// RULER's `string_match_all` for one sample: the mean over `refs` of
/// `ref.lower() in pred.lower()` (1 if found, else 0). `0.0` when `refs` is empty.
/// One definition with the metric crates: [`memfactory_core::text::string_match_all`].
///
/// ```
/// use memfactory_data_ruler::string_match_all;
/// assert_eq!(string_match_all("The numbers are 12 and 34.", &["12", "34", "56", "78"]), 0.5);
/// ```
pub fn string_match_all<S: AsRef<str>>(pred: &str, refs: &[S]) -> f32 {
    memfactory_core::text::string_match_all(pred, refs).unwrap_or(0.0)
}

/// RULER's `string_match_part` for one sample: the max over `refs` of
/// `ref.lower() in pred.lower()`, i.e. 1 when any reference is found. `0.0` when `refs` is
/// empty. One definition with the metric crates: [`memfactory_core::text::string_match_part`].
///
/// ```
/// use memfactory_data_ruler::string_match_part;
/// assert_eq!(string_match_part("It was PARIS.", &["London", "paris"]), 1.0);
/// ```
pub fn string_match_part<S: AsRef<str>>(pred: &str, refs: &[S]) -> f32 {
    memfactory_core::text::string_match_part(pred, refs).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_match_all_known_cases() {
        let refs = ["1234567", "7654321"];
        assert_eq!(string_match_all("1234567 and 7654321", &refs), 1.0);
        assert_eq!(string_match_all("only 1234567", &refs), 0.5);
        assert_eq!(string_match_all("nothing", &refs), 0.0);
        assert_eq!(
            string_match_all("ABCDE, FGHIJ", &["abcde", "fghij", "klmno"]),
            2.0 / 3.0
        );
        assert_eq!(string_match_all("Apple", &["apple"]), 1.0);
        assert_eq!(string_match_all("anything", &[] as &[&str]), 0.0);
        // Substring semantics, as in RULER.
        assert_eq!(string_match_all("x12345678", &["1234567"]), 1.0);
    }

    #[test]
    fn string_match_part_known_cases() {
        let refs = vec!["Paris".to_string(), "Lyon".to_string()];
        assert_eq!(string_match_part("I think lyon", &refs), 1.0);
        assert_eq!(string_match_part("paris and lyon", &refs), 1.0);
        assert_eq!(string_match_part("Berlin", &refs), 0.0);
        assert_eq!(string_match_part("", &[] as &[String]), 0.0);
    }

    #[test]
    fn metric_dispatches_and_names() {
        assert_eq!(Metric::StringMatchAll.name(), "string-match-all");
        assert_eq!(Metric::StringMatchPart.name(), "string-match-part");
        assert_eq!(Metric::StringMatchAll.score("a", &["a", "b"]), 0.5);
        assert_eq!(Metric::StringMatchPart.score("a", &["a", "b"]), 1.0);
    }
}
