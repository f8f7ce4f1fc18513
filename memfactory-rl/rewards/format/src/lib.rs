//! # memfactory-reward-format
//!
//! Format reward: 1 when the episode's answer contains a `\boxed{...}` answer, else 0;
//! minus `parse_error_penalty` (default 0) for each memory-op output that could not be
//! parsed, floored at 0. Registered as reward kind `format`; typically weighted lightly
//! beside an accuracy reward (`sub-em` 1.0 + `format` 0.1).
//!
//! Paradigms that answer in plain text (Memory-R1, RMM) set `require_boxed = false`: the
//! base is then 1 for any episode, so the reward measures only how many of the model's
//! outputs (extracted facts, manager decisions, reflections, cited answers) were malformed.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `parse_error_penalty` | `0.0` | subtracted per recorded parse error (≥ 0) |
//! | `require_boxed` | `true` | base 1 only with a `\boxed{}` answer; `false`: base 1 always |

use memfactory_core::{Cfg, Episode, Result, Reward, Sample, text};

/// The format reward.
pub struct Format {
    parse_error_penalty: f32,
    require_boxed: bool,
}

impl Reward for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, _sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        let boxed = !self.require_boxed
            || episode
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
        require_boxed: cfg.get("require_boxed", true)?,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "format",
        about: "Format: 1 when the answer has a \\boxed{} answer (minus an optional penalty per unparsable op output)",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::{MemoryEdit, Step};

    fn episode(answer: &str, parse_errors: usize) -> Episode {
        Episode {
            sample_id: "s".into(),
            path: 0,
            seed: 1,
            steps: (0..parse_errors)
                .map(|_| Step::Edit {
                    op: "update".into(),
                    edits: vec![MemoryEdit::Noop],
                    outcomes: vec![],
                    parse_error: Some("not JSON".into()),
                })
                .collect(),
            answer: Some(answer.into()),
            memory_tokens: None,
        }
    }

    fn reward(table: &str) -> Box<dyn Reward> {
        let mut cfg = Cfg::new("eval.metrics[0]", toml::from_str(table).unwrap());
        build(&mut cfg).unwrap()
    }

    #[test]
    fn boxed_base_and_parse_error_penalty() {
        let s = Sample::text("s", "q", "", vec![]);
        let boxed = reward("parse_error_penalty = 0.25");
        assert_eq!(
            boxed.score(&s, &episode("\\boxed{x}", 1)).unwrap(),
            Some(0.75)
        );
        assert_eq!(boxed.score(&s, &episode("x", 0)).unwrap(), Some(0.0));
        let plain = reward("parse_error_penalty = 0.25\nrequire_boxed = false");
        assert_eq!(plain.score(&s, &episode("x", 0)).unwrap(), Some(1.0));
        assert_eq!(plain.score(&s, &episode("x", 2)).unwrap(), Some(0.5));
        assert_eq!(plain.score(&s, &episode("x", 9)).unwrap(), Some(0.0));
    }
}
