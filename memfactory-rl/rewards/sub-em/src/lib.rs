//! # memfactory-reward-sub-em
//!
//! Sub-EM: a normalized gold answer is contained in the normalized boxed answer (MemAgent eval metric).
//!
//! Scored on the last `\\boxed{}` of the episode's answer (0 when there is none, unless
//! `require_boxed = false`, which falls back to the whole answer text), maximised over
//! the gold answers, with SQuAD/HotpotQA normalization
//! ([`memfactory_core::text::normalize_answer`]). Registered as reward kind `sub-em`;
//! usable as an eval metric and a training reward.
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "sub-em", require_boxed = true }]
//! ```

use memfactory_core::{Cfg, Result, Reward, reward::AnswerMetric, text};

fn metric(pred: &str, gold: &str) -> f32 {
    f32::from(u8::from(text::sub_exact_match(pred, gold)))
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(AnswerMetric::from_cfg(cfg, "sub-em", metric)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "sub-em",
        about: "Sub-EM: a normalized gold answer is contained in the normalized boxed answer (MemAgent eval metric).",
        build,
    }
}
