//! # memfactory-reward-format
//!
//! Format reward: 1 when the episode's answer contains a `\boxed{...}` answer, else 0;
//! minus `parse_error_penalty` (default 0) for each memory-op output that could not be
//! parsed, floored at 0. Registered as reward kind `format`; typically weighted lightly
//! beside an accuracy reward (`sub-em` 1.0 + `format` 0.1).

use memfactory_core::{Cfg, Episode, Result, Reward, Sample, text};

/// The format reward.
pub struct Format {
    parse_error_penalty: f32,
}

impl Reward for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, _sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        let boxed = episode
            .answer
            .as_deref()
            .and_then(text::extract_boxed)
            .is_some();
        let base = if boxed { 1.0 } else { 0.0 };
        Ok(Some(
            (base - self.parse_error_penalty * episode.parse_errors() as f32).max(0.0),
        ))
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(Format {
        parse_error_penalty: cfg.get_checked(
            "parse_error_penalty",
            0.0f32,
            |p| p.is_finite() && *p >= 0.0,
            "a penalty >= 0",
        )?,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "format",
        about: "Format: 1 when the answer has a \\boxed{} answer (minus an optional penalty per unparsable op output)",
        build,
    }
}
