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

/// A metric of the scored answer against the gold answers (max over golds); 0 when there is
/// no answer to score. The reward crates `exact-match`, `sub-em` and `f1` are instances.
pub struct AnswerMetric {
    name: String,
    require_boxed: bool,
    metric: fn(&str, &str) -> f32,
}

impl AnswerMetric {
    /// Builds from a recipe table: keys `require_boxed` (default true) and `name` (the
    /// metric's name in reports, default the kind — set it to report one metric twice,
    /// e.g. boxed and unboxed).
    pub fn from_cfg(
        cfg: &mut crate::Cfg,
        kind: &str,
        metric: fn(&str, &str) -> f32,
    ) -> Result<Self> {
        Ok(AnswerMetric {
            require_boxed: cfg.get("require_boxed", true)?,
            name: cfg.get("name", kind.to_string())?,
            metric,
        })
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
        Ok(Some(match scored_answer(episode, self.require_boxed) {
            None => 0.0,
            Some(pred) => crate::text::max_over(&sample.answers, |g| (self.metric)(&pred, g)),
        }))
    }
}
