//! # memfactory-reward-f1
//!
//! Token F1 of the boxed answer against a gold answer (HotpotQA evaluation script).
//!
//! Scored on the last `\\boxed{}` of the episode's answer (0 when there is none, unless
//! `require_boxed = false`, which falls back to the whole answer text), maximised over
//! the gold answers, with SQuAD/HotpotQA normalization
//! ([`memfactory_core::text::normalize_answer`]). Registered as reward kind `f1`;
//! usable as an eval metric and a training reward.
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "f1", require_boxed = true }]
//! ```

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text};

fn metric(pred: &str, gold: &str) -> f32 {
    text::f1_score(pred, gold)
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg(cfg, "f1", metric)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "f1",
        about: "Token F1 of the boxed answer against a gold answer (HotpotQA evaluation script).",
        build,
    }
}
