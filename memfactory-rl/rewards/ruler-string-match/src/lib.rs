//! # memfactory-reward-ruler-string-match
//!
//! RULER scoring with the metric each sample asks for. Registered as reward kind
//! `ruler-string-match`; usable as an eval metric and a training reward.
//!
//! RULER (NVIDIA/RULER@c3f5e3b, `scripts/eval/synthetic/constants.py`) scores each task
//! with its own function: `string_match_all` for the synthetic tasks (needles, variable
//! tracking, common and frequent words extraction), `string_match_part` for QA. The dataset
//! `memfactory-data-ruler` writes the name of that function into every sample's
//! `meta.metric` (`"string-match-all"` or `"string-match-part"`); this reward reads it and
//! scores as `string-match-all` / `string-match-part` do (RULER's `postprocess_pred` on the
//! extracted answer, case-insensitive substring per reference). Multi-answer tasks (vt,
//! multi-value and multi-query needles, cwe, fwe) are thereby scored as the fraction of
//! references found, not as "any reference found".
//!
//! A sample without `meta.metric` (a dataset other than RULER's) or with a name other than
//! those two is a recipe error naming this metric's recipe key and the sample: the eval
//! stops with exit code 2 rather than score it some other way.
//!
//! ## Recipe keys
//!
//! The extraction keys of every answer metric ([`AnswerExtraction`]): `extract`
//! (`"boxed"` default, `"boxed-or-text"`, `"answer-is"`, `"text"`), its older spelling
//! `require_boxed`, `strip_think` (default true), and `name` (default
//! `"ruler-string-match"`).
//!
//! ```toml
//! [eval]
//! metrics = [{ kind = "ruler-string-match" }, { kind = "sub-em", name = "sub-em" }]
//! ```

use memfactory_core::reward::AnswerExtraction;
use memfactory_core::{Cfg, Episode, Error, Result, Reward, Sample, text};

/// Registry kind of this reward.
pub const KIND: &str = "ruler-string-match";

/// The sample meta key naming the metric.
pub const META_KEY: &str = "metric";

/// RULER's scoring function for one sample, by the name in `meta.metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulerMetric {
    /// `"string-match-all"`: the fraction of references found.
    All,
    /// `"string-match-part"`: 1 when any reference is found.
    Part,
}

impl RulerMetric {
    /// The metric a sample names in `meta.metric`, or why there is none.
    pub fn of(sample: &Sample) -> std::result::Result<RulerMetric, String> {
        match sample.meta.get(META_KEY) {
            None => Err(format!(
                "sample `{}` has no `meta.{META_KEY}` (only RULER samples name their metric; \
                 use `string-match-all` or `string-match-part` for other data)",
                sample.id
            )),
            Some(v) => match v.as_str() {
                Some("string-match-all") => Ok(RulerMetric::All),
                Some("string-match-part") => Ok(RulerMetric::Part),
                _ => Err(format!(
                    "sample `{}` has `meta.{META_KEY}` = {v}, expected \"string-match-all\" or \
                     \"string-match-part\"",
                    sample.id
                )),
            },
        }
    }

    /// Scores `pred` (after RULER's postprocess) against `refs`; 0 when `refs` is empty.
    pub fn score(self, pred: &str, refs: &[String]) -> f32 {
        let pred = text::ruler_postprocess(pred);
        match self {
            RulerMetric::All => text::string_match_all(&pred, refs),
            RulerMetric::Part => text::string_match_part(&pred, refs),
        }
        .unwrap_or(0.0)
    }
}

/// The registered reward.
pub struct RulerStringMatch {
    name: String,
    key: String,
    extraction: AnswerExtraction,
}

impl Reward for RulerStringMatch {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        let metric = RulerMetric::of(sample).map_err(|m| Error::config(self.key.clone(), m))?;
        if sample.answers.is_empty() {
            return Ok(None);
        }
        Ok(Some(match self.extraction.answer(episode) {
            None => 0.0,
            Some(pred) => metric.score(&pred, &sample.answers),
        }))
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    let extraction = AnswerExtraction::from_cfg(cfg)?;
    Ok(Box::new(RulerStringMatch {
        name: cfg.get("name", KIND.to_string())?,
        key: cfg.key("kind"),
        extraction,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "RULER's string_match_all or string_match_part, as each sample's meta.metric names it.",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::Recipe;

    fn reward(table: &str) -> Box<dyn Reward> {
        let cfg = Recipe::parse(table, "<test>").unwrap().cfg();
        memfactory_core::registry::build::<dyn Reward>(cfg)
            .unwrap()
            .0
    }

    fn sample(metric: Option<&str>, golds: &[&str]) -> Sample {
        let mut s = Sample::text(
            "vt-3",
            "q",
            "ctx",
            golds.iter().map(|g| g.to_string()).collect(),
        );
        if let Some(m) = metric {
            s.meta.insert(META_KEY.into(), serde_json::json!(m));
        }
        s
    }

    fn episode(answer: &str) -> Episode {
        Episode {
            sample_id: "vt-3".into(),
            path: 0,
            seed: 0,
            steps: Vec::new(),
            answer: Some(answer.to_string()),
            memory_tokens: None,
        }
    }

    #[test]
    fn scores_with_the_sample_metric() {
        let r = reward("kind = \"ruler-string-match\"\nextract = \"text\"");
        let refs = ["VAR_A", "VAR_B", "VAR_C", "VAR_D"];
        let ep = episode("var_a, VAR_B");
        let all = r
            .score(&sample(Some("string-match-all"), &refs), &ep)
            .unwrap();
        assert_eq!(all, Some(0.5));
        let part = r
            .score(&sample(Some("string-match-part"), &refs), &ep)
            .unwrap();
        assert_eq!(part, Some(1.0));
        // Default extraction: the last box only.
        let boxed = reward("kind = \"ruler-string-match\"");
        let s = sample(Some("string-match-all"), &refs);
        assert_eq!(boxed.score(&s, &ep).unwrap(), Some(0.0));
        let ep = episode("<think>VAR_C</think>\\boxed{VAR_A VAR_B VAR_C}");
        assert_eq!(boxed.score(&s, &ep).unwrap(), Some(0.75));
        assert_eq!(
            boxed
                .score(&sample(Some("string-match-all"), &[]), &ep)
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_sample_without_its_metric_is_a_recipe_error() {
        // A metric table under a dotted path, as the eval builds it.
        let mut cfg = Recipe::parse("[eval.metrics]\nkind = \"ruler-string-match\"", "<test>")
            .unwrap()
            .cfg();
        let c = cfg
            .sub("eval")
            .unwrap()
            .unwrap()
            .sub("metrics")
            .unwrap()
            .unwrap();
        let r = memfactory_core::registry::build::<dyn Reward>(c).unwrap().0;
        let e = r
            .score(&sample(None, &["Paris"]), &episode("\\boxed{Paris}"))
            .unwrap_err();
        assert!(e.is_user_error());
        let msg = e.to_string();
        assert!(
            msg.contains("`eval.metrics.kind`")
                && msg.contains("meta.metric")
                && msg.contains("vt-3"),
            "{msg}"
        );
        let e = r
            .score(&sample(Some("f1"), &["Paris"]), &episode("\\boxed{Paris}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"f1\"") && e.contains("string-match-part"),
            "{e}"
        );
    }
}
