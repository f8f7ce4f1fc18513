//! Rewards (also used as evaluation metrics).

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Episode, Result, Sample};

/// A registered reward (`kind = "sub-em"`, …). Scores one finished episode.
pub trait Reward: Send + Sync {
    /// The metric name (its registry kind unless configured otherwise).
    fn name(&self) -> &str;
    /// Score in \[0, 1\] for most rewards; `None` when it does not apply to this sample.
    fn score(&self, sample: &Sample, episode: &Episode) -> Result<Option<f32>>;

    /// Called by an eval before the first score with the run directory: a reward that keeps
    /// files (the LLM judge's verdict cache) puts them there unless its recipe names a place.
    /// Default: nothing.
    fn attach_run_dir(&self, dir: &Path) -> Result<()> {
        let _ = dir;
        Ok(())
    }

    /// Event counts worth reporting beside the scores (the judge: verdicts asked, taken from
    /// the cache, unparsable); written into the eval's `metrics.json` under
    /// `reward_counters.<name>`. Default: none.
    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// The answer a metric scores: the last `\boxed{}` of the episode's answer, or — when
/// `require_boxed` is false and there is no box — the whole answer text.
pub fn scored_answer(episode: &Episode, require_boxed: bool) -> Option<String> {
    let text = episode.answer.as_deref()?;
    match crate::text::extract_boxed(text) {
        Some(b) => Some(b),
        None if !require_boxed => Some(text.trim().to_string()),
        None => None,
    }
}

/// How the scored answer is cut out of the episode's answer text (recipe key `extract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extract {
    /// `"boxed"` (default; also `require_boxed = true`): the last `\boxed{}`; no answer (score
    /// 0) without one.
    Boxed,
    /// `"boxed-or-text"` (also `require_boxed = false`): the last `\boxed{}`, else the whole
    /// answer text, trimmed.
    BoxedOrText,
    /// `"answer-is"`: MemAgent's `extract_answer`, the text after the last `the answer is`
    /// ([`crate::text::extract_answer_is`]); no answer without the phrase.
    AnswerIs,
    /// `"text"`: the whole answer text, trimmed.
    Text,
}

impl Extract {
    /// Every value of the `extract` key, in the order shown in errors.
    pub const ALL: [Extract; 4] = [
        Extract::Boxed,
        Extract::BoxedOrText,
        Extract::AnswerIs,
        Extract::Text,
    ];

    /// The recipe value naming this extraction.
    pub fn name(self) -> &'static str {
        match self {
            Extract::Boxed => "boxed",
            Extract::BoxedOrText => "boxed-or-text",
            Extract::AnswerIs => "answer-is",
            Extract::Text => "text",
        }
    }

    /// The extraction named `name`, if any.
    pub fn from_name(name: &str) -> Option<Extract> {
        Extract::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The answer this extraction cuts out of `text` (`None`: nothing to score).
    pub fn apply(self, text: &str) -> Option<String> {
        match self {
            Extract::Boxed => crate::text::extract_boxed(text),
            Extract::BoxedOrText => {
                Some(crate::text::extract_boxed(text).unwrap_or_else(|| text.trim().to_string()))
            }
            Extract::AnswerIs => crate::text::extract_answer_is(text),
            Extract::Text => Some(text.trim().to_string()),
        }
    }
}

/// The answer extraction shared by the answer metrics: recipe keys `extract`, its older
/// spelling `require_boxed`, and `strip_think`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerExtraction {
    /// Which part of the answer text is scored.
    pub extract: Extract,
    /// Apply [`crate::text::strip_think`] first, as MemAgent's eval does.
    pub strip_think: bool,
}

impl Default for AnswerExtraction {
    fn default() -> Self {
        AnswerExtraction {
            extract: Extract::Boxed,
            strip_think: true,
        }
    }
}

impl AnswerExtraction {
    /// Reads `extract` (`"boxed"` default, `"boxed-or-text"`, `"answer-is"`, `"text"`) or
    /// `require_boxed` (`true` = `"boxed"`, `false` = `"boxed-or-text"`; both keys together are
    /// an error naming `extract`), and `strip_think` (default true).
    pub fn from_cfg(cfg: &mut crate::Cfg) -> Result<Self> {
        let require_boxed: Option<bool> = cfg.opt("require_boxed")?;
        let named: Option<String> = cfg.opt("extract")?;
        let extract = match (require_boxed, named) {
            (Some(_), Some(_)) => {
                return Err(cfg.error(
                    "extract",
                    format!(
                        "cannot be combined with `{}` (require_boxed = true is extract = \"boxed\", \
                         require_boxed = false is extract = \"boxed-or-text\"); set only `extract`",
                        cfg.key("require_boxed")
                    ),
                ));
            }
            (Some(true), None) => Extract::Boxed,
            (Some(false), None) => Extract::BoxedOrText,
            (None, Some(name)) => Extract::from_name(&name).ok_or_else(|| {
                let all: Vec<String> = Extract::ALL
                    .iter()
                    .map(|e| format!("\"{}\"", e.name()))
                    .collect();
                cfg.error(
                    "extract",
                    format!("expected one of {}, found {name:?}", all.join(", ")),
                )
            })?,
            (None, None) => {
                cfg.set_resolved("extract", toml::Value::String("boxed".into()));
                Extract::Boxed
            }
        };
        Ok(AnswerExtraction {
            extract,
            strip_think: cfg.get("strip_think", true)?,
        })
    }

    /// The answer to score from an answer text. With `strip_think`, the text after the last
    /// `</think>` is used — unless nothing follows it, where MemAgent's eval falls back to the
    /// whole response (`ruler_hqa.py:92`: `extract_answer(pred) if pred else
    /// extract_answer(response)`), and so does this.
    pub fn apply(&self, text: &str) -> Option<String> {
        let text = if self.strip_think {
            match crate::text::strip_think(text) {
                "" => text,
                stripped => stripped,
            }
        } else {
            text
        };
        self.extract.apply(text)
    }

    /// The answer to score from an episode (`None` when it has no answer).
    pub fn answer(&self, episode: &Episode) -> Option<String> {
        self.apply(episode.answer.as_deref()?)
    }
}

enum GoldScore {
    /// A metric of one gold answer, maximised over the gold answers.
    MaxOver(fn(&str, &str) -> f32),
    /// A metric of all gold answers at once (RULER's `string_match_all`, MemAgent's first gold).
    AllGolds(fn(&str, &[String]) -> f32),
}

/// A metric of the scored answer against the gold answers (max over golds, or a metric of
/// all golds at once); 0 when there is no answer to score. The reward crates `exact-match`,
/// `sub-em`, `f1`, `bleu1`, `sub-em-memagent`, `string-match-all`, `string-match-part`,
/// `f1-mem0` and `bleu1-nltk` are instances.
pub struct AnswerMetric {
    name: String,
    extraction: AnswerExtraction,
    metric: GoldScore,
}

impl AnswerMetric {
    /// Builds from a recipe table: the extraction keys of [`AnswerExtraction::from_cfg`]
    /// and `name` (the metric's name in reports, default the kind — set it to report one
    /// metric twice, e.g. boxed and unboxed). `metric` scores one gold answer; the score is
    /// its maximum over the gold answers.
    pub fn from_cfg(
        cfg: &mut crate::Cfg,
        kind: &str,
        metric: fn(&str, &str) -> f32,
    ) -> Result<Self> {
        Self::build(cfg, kind, GoldScore::MaxOver(metric))
    }

    /// As [`AnswerMetric::from_cfg`], for a metric that scores against all gold answers at
    /// once (called only when the sample has at least one).
    pub fn from_cfg_golds(
        cfg: &mut crate::Cfg,
        kind: &str,
        metric: fn(&str, &[String]) -> f32,
    ) -> Result<Self> {
        Self::build(cfg, kind, GoldScore::AllGolds(metric))
    }

    fn build(cfg: &mut crate::Cfg, kind: &str, metric: GoldScore) -> Result<Self> {
        Ok(AnswerMetric {
            extraction: AnswerExtraction::from_cfg(cfg)?,
            name: cfg.get("name", kind.to_string())?,
            metric,
        })
    }

    /// The extraction this metric applies.
    pub fn extraction(&self) -> AnswerExtraction {
        self.extraction
    }
}

impl Reward for AnswerMetric {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        if sample.answers.is_empty() {
            return Ok(None);
        }
        Ok(Some(match self.extraction.answer(episode) {
            None => 0.0,
            Some(pred) => match self.metric {
                GoldScore::MaxOver(m) => crate::text::max_over(&sample.answers, |g| m(&pred, g)),
                GoldScore::AllGolds(m) => m(&pred, &sample.answers),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cfg, Recipe};

    fn cfg(table: &str) -> Cfg {
        Recipe::parse(table, "<test>").unwrap().cfg()
    }

    fn metric(table: &str) -> Result<AnswerMetric> {
        AnswerMetric::from_cfg(&mut cfg(table), "em", |p, g| f32::from(u8::from(p == g)))
    }

    fn score(m: &AnswerMetric, answer: &str, golds: &[&str]) -> Option<f32> {
        let sample = Sample::text(
            "s",
            "q",
            "ctx",
            golds.iter().map(|g| g.to_string()).collect(),
        );
        let episode = Episode {
            sample_id: "s".into(),
            path: 0,
            seed: 0,
            steps: Vec::new(),
            answer: Some(answer.to_string()),
            memory_tokens: None,
        };
        m.score(&sample, &episode).unwrap()
    }

    #[test]
    fn extract_values_and_their_legacy_spelling() {
        let boxed = metric("").unwrap();
        assert_eq!(boxed.extraction(), AnswerExtraction::default());
        assert_eq!(score(&boxed, "\\boxed{Paris}", &["Paris"]), Some(1.0));
        assert_eq!(score(&boxed, "Paris", &["Paris"]), Some(0.0));
        assert_eq!(score(&boxed, "Paris", &[]), None);
        for legacy in ["require_boxed = false", "extract = \"boxed-or-text\""] {
            let m = metric(legacy).unwrap();
            assert_eq!(m.extraction().extract, Extract::BoxedOrText);
            assert_eq!(score(&m, " Paris ", &["Paris"]), Some(1.0));
            assert_eq!(score(&m, "x \\boxed{Paris}", &["Paris"]), Some(1.0));
        }
        assert_eq!(
            metric("require_boxed = true").unwrap().extraction().extract,
            Extract::Boxed
        );
        let text = metric("extract = \"text\"").unwrap();
        assert_eq!(score(&text, "\\boxed{Paris}", &["Paris"]), Some(0.0));
        assert_eq!(score(&text, " Paris\n", &["Paris"]), Some(1.0));
        let is = metric("extract = \"answer-is\"").unwrap();
        assert_eq!(
            score(&is, "Therefore, the answer is Paris.", &["Paris"]),
            Some(1.0)
        );
        assert_eq!(score(&is, "Paris", &["Paris"]), Some(0.0));
    }

    #[test]
    fn strip_think_before_extraction() {
        let m = metric("extract = \"text\"").unwrap();
        assert!(m.extraction().strip_think);
        assert_eq!(score(&m, "<think>x</think> Paris", &["Paris"]), Some(1.0));
        // Nothing after `</think>`: MemAgent falls back to the whole response.
        // (the closing tag stays in the answer then, as in MemAgent).
        let is = metric("extract = \"answer-is\"").unwrap().extraction();
        assert_eq!(
            is.apply("<think>the answer is Paris</think>\n").as_deref(),
            Some("Paris</think>")
        );
        assert_eq!(is.apply("<think>x</think>\n").as_deref(), None);
        let raw = metric("extract = \"text\"\nstrip_think = false").unwrap();
        assert_eq!(score(&raw, "<think>x</think> Paris", &["Paris"]), Some(0.0));
        let boxed = metric("").unwrap();
        assert_eq!(
            score(
                &boxed,
                "<think>\\boxed{Rome}</think>\\boxed{Paris}",
                &["Paris"]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn bad_extraction_keys_name_the_key() {
        let mut c = cfg("[m]\nextract = \"answer-is\"\nrequire_boxed = true\n");
        let mut m = c.sub("m").unwrap().unwrap();
        let e = AnswerExtraction::from_cfg(&mut m).unwrap_err();
        assert!(e.is_user_error());
        let msg = e.to_string();
        assert!(
            msg.contains("`m.extract`") && msg.contains("m.require_boxed"),
            "{msg}"
        );
        let msg = metric("extract = \"last-line\"").err().unwrap().to_string();
        assert!(
            msg.contains("`extract`") && msg.contains("\"answer-is\"") && msg.contains("last-line"),
            "{msg}"
        );
        let msg = metric("extract = 3").err().unwrap().to_string();
        assert!(msg.contains("`extract`"), "{msg}");
        let msg = metric("strip_think = \"yes\"").err().unwrap().to_string();
        assert!(msg.contains("`strip_think`"), "{msg}");
    }

    #[test]
    fn resolved_table_is_readable_again() {
        for table in ["", "require_boxed = false", "extract = \"answer-is\""] {
            let mut c = cfg(table);
            let m = AnswerMetric::from_cfg(&mut c, "em", |_, _| 0.0).unwrap();
            let resolved = c.finish().unwrap();
            let again = toml::to_string(&resolved).unwrap();
            let m2 = metric(&again).unwrap();
            assert_eq!(m.extraction(), m2.extraction(), "{table} -> {again}");
        }
    }
}
