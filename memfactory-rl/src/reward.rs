//! The training reward: a weighted sum of registered rewards.
//!
//! ```toml
//! [[train.rewards]]
//! kind = "sub-em"
//! weight = 1.0
//! [[train.rewards]]
//! kind = "format"
//! weight = 0.1
//! ```
//!
//! Each component is built through `memfactory_core::registry::build::<dyn Reward>` (so
//! unknown kinds and keys are errors naming their key path) and is kept separately in
//! [`RewardBreakdown`] for logging. A component returning `None` (does not apply) counts as
//! 0; a non-finite score is an error naming the reward and the sample.

use memfactory_core::{Cfg, Episode, Error, Result, Reward, Sample, registry};

/// One weighted component.
pub struct WeightedReward {
    /// The reward.
    pub reward: Box<dyn Reward>,
    /// Its weight in the sum.
    pub weight: f32,
}

/// The weighted sum of rewards used for training.
pub struct CompositeReward {
    /// Components in recipe order.
    pub components: Vec<WeightedReward>,
}

/// The score of one episode: the total and each component's (unweighted) score.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardBreakdown {
    /// `Σ weight · score`.
    pub total: f32,
    /// `(name, unweighted score)` per component, in recipe order.
    pub components: Vec<(String, f32)>,
}

impl CompositeReward {
    /// Builds from the `rewards` array of tables at `path` (e.g. `train.rewards`); returns
    /// the reward and its resolved array. At least one component is required.
    pub fn from_value(path: &str, value: &toml::Value) -> Result<(Self, toml::Value)> {
        let toml::Value::Array(items) = value else {
            return Err(Error::config(
                path,
                "expected an array of tables ([[train.rewards]] kind = .., weight = ..)",
            ));
        };
        if items.is_empty() {
            return Err(Error::config(path, "at least one reward is required"));
        }
        let mut components = Vec::with_capacity(items.len());
        let mut resolved = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let mut cfg = Cfg::from_value(item_path.clone(), item)?;
            let weight: f32 =
                cfg.get_checked("weight", 1.0f32, |w| w.is_finite(), "a finite weight")?;
            // `weight` is ours; everything else goes to the reward's own builder.
            let mut table = match item {
                toml::Value::Table(t) => t.clone(),
                _ => {
                    let mut t = toml::Table::new();
                    t.insert("kind".into(), item.clone());
                    t
                }
            };
            table.remove("weight");
            let (reward, mut res) =
                registry::build::<dyn Reward>(Cfg::new(item_path.clone(), table))?;
            res.insert("weight".into(), toml::Value::Float(weight as f64));
            resolved.push(toml::Value::Table(res));
            components.push(WeightedReward { reward, weight });
        }
        Ok((CompositeReward { components }, toml::Value::Array(resolved)))
    }

    /// Scores one episode of `sample`.
    pub fn score(&self, sample: &Sample, episode: &Episode) -> Result<RewardBreakdown> {
        let mut total = 0.0f32;
        let mut components = Vec::with_capacity(self.components.len());
        for c in &self.components {
            let s = c.reward.score(sample, episode)?.unwrap_or(0.0);
            if !s.is_finite() {
                return Err(Error::backend(
                    c.reward.name(),
                    format!(
                        "reward `{}` returned {s} on sample {} (path {})",
                        c.reward.name(),
                        sample.id,
                        episode.path
                    ),
                ));
            }
            total += c.weight * s;
            components.push((c.reward.name().to_string(), s));
        }
        Ok(RewardBreakdown { total, components })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Link the reward crates so their registrations run.
    use memfactory_reward_exact_match as _;
    use memfactory_reward_sub_em as _;

    struct Const(f32);
    impl Reward for Const {
        fn name(&self) -> &str {
            "const"
        }
        fn score(&self, _: &Sample, _: &Episode) -> Result<Option<f32>> {
            Ok(Some(self.0))
        }
    }

    fn sample() -> Sample {
        serde_json::from_value(serde_json::json!({
            "id": "q1", "question": "Who?", "answers": ["Paris"]
        }))
        .unwrap()
    }

    fn episode(answer: &str) -> Episode {
        Episode {
            sample_id: "q1".into(),
            path: 0,
            seed: 0,
            steps: vec![],
            answer: Some(answer.into()),
            memory_tokens: None,
        }
    }

    #[test]
    fn weighted_sum_keeps_components() {
        let v: toml::Value = toml::from_str::<toml::Table>(
            "rewards = [{ kind = \"sub-em\", weight = 1.0 }, { kind = \"exact-match\", weight = 0.5 }]",
        )
        .unwrap()["rewards"]
            .clone();
        let (r, resolved) = CompositeReward::from_value("train.rewards", &v).unwrap();
        let b = r
            .score(&sample(), &episode("It is \\boxed{Paris, France}"))
            .unwrap();
        assert_eq!(b.components[0], ("sub-em".to_string(), 1.0));
        assert_eq!(b.components[1], ("exact-match".to_string(), 0.0));
        assert!((b.total - 1.0).abs() < 1e-6);
        let b = r.score(&sample(), &episode("\\boxed{Paris}")).unwrap();
        assert!((b.total - 1.5).abs() < 1e-6);
        assert_eq!(
            resolved.as_array().unwrap()[1]["weight"].as_float(),
            Some(0.5)
        );
    }

    #[test]
    fn bad_tables_name_their_key_path() {
        let v: toml::Value = toml::from_str::<toml::Table>(
            "rewards = [{ kind = \"sub-em\" }, { kind = \"sub-emm\" }]",
        )
        .unwrap()["rewards"]
            .clone();
        let err = CompositeReward::from_value("train.rewards", &v)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("train.rewards[1].kind"), "{err}");
        let v = toml::Value::Array(vec![]);
        assert!(CompositeReward::from_value("train.rewards", &v).is_err());
        let v: toml::Value =
            toml::from_str::<toml::Table>("rewards = [{ kind = \"sub-em\", bogus = 1 }]").unwrap()
                ["rewards"]
                .clone();
        let err = CompositeReward::from_value("train.rewards", &v)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("train.rewards[0].bogus"), "{err}");
    }

    #[test]
    fn nan_reward_names_reward_and_sample() {
        let r = CompositeReward {
            components: vec![WeightedReward {
                reward: Box::new(Const(f32::NAN)),
                weight: 1.0,
            }],
        };
        let err = r.score(&sample(), &episode("x")).unwrap_err().to_string();
        assert!(err.contains("const") && err.contains("q1"), "{err}");
    }
}
