//! Rewards (also used as evaluation metrics).

use crate::{Episode, Result, Sample};

/// A registered reward (`kind = "sub-em"`, …). Scores one finished episode.
pub trait Reward: Send + Sync {
    /// The metric name (its registry kind unless configured otherwise).
    fn name(&self) -> &str;
    /// Score in \[0, 1\] for most rewards; `None` when it does not apply to this sample.
    fn score(&self, sample: &Sample, episode: &Episode) -> Result<Option<f32>>;
}
