//! # memfactory-reward-exact-match
//!
//! Normalized exact match of the boxed answer with a gold answer (MemAgent training reward).
//!
//! Scored on the last `\\boxed{}` of the episode's answer (0 when there is none, unless
//! `require_boxed = false`, which falls back to the whole answer text), maximised over
//! the gold answers, with SQuAD/HotpotQA normalization
//! ([`memfactory_core::text::normalize_answer`]). Registered as reward kind `exact-match`;
//! usable as an eval metric and a training reward.
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "exact-match", require_boxed = true }]
//! ```

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text};

fn metric(pred: &str, gold: &str) -> f32 {
    f32::from(u8::from(text::exact_match(pred, gold)))
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg(
        cfg,
        "exact-match",
        metric,
    )?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "exact-match",
        about: "Normalized exact match of the boxed answer with a gold answer (MemAgent training reward).",
        build,
    }
}
