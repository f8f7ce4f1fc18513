//! From groups of episodes to training rows.
//!
//! Every LM call of a trajectory (memory updates and the final answer — MemAgent's
//! Multi-Conv: K+1 independent conversations) becomes one [`Row`] with the exact prompt
//! ids the model consumed, the sampled action ids and the log-probs recorded at sampling
//! time (`old_logprobs`), and the trajectory's advantage. Nothing is re-tokenized.
//!
//! Rows are not emitted for: trajectories of skipped (zero-variance) groups, turns masked
//! by `mask_final_turn`, roles not listed in `roles` (when non-empty), and empty actions.

use memfactory_core::{Episode, Error, Result, Sample};
use serde::Serialize;

use crate::advantage::{self, AdvantageKind};
use crate::reward::{CompositeReward, RewardBreakdown};

/// One sample's group of episodes (one per memory path).
#[derive(Debug, Clone)]
pub struct Group {
    /// The sample.
    pub sample: Sample,
    /// Its episodes.
    pub episodes: Vec<Episode>,
}

/// One training row: one LM call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Prompt token ids as consumed.
    pub prompt_ids: Vec<u32>,
    /// Sampled token ids.
    pub action_ids: Vec<u32>,
    /// Log-prob of each action token at sampling time.
    pub old_logprobs: Vec<f32>,
    /// The trajectory's advantage.
    pub advantage: f32,
    /// Sampling temperature (the training forward divides logits by it; 0 = greedy = 1).
    pub temperature: f32,
    /// The call's role.
    pub role: String,
    /// Group index in the batch.
    pub group: usize,
    /// Episode index in the group.
    pub trajectory: usize,
}

/// Row-building options.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOptions {
    /// Advantage normalization.
    pub advantage: AdvantageKind,
    /// `eps` of the z-score.
    pub eps: f32,
    /// Drop each trajectory's final turn.
    pub mask_final_turn: bool,
    /// Roles to train (empty = all).
    pub roles: Vec<String>,
}

/// A scored rollout turned into rows.
#[derive(Debug, Clone)]
pub struct RolloutBatch {
    /// Training rows.
    pub rows: Vec<Row>,
    /// Reward of every episode, `[group][trajectory]`.
    pub rewards: Vec<Vec<RewardBreakdown>>,
    /// Groups skipped for zero reward variance.
    pub skipped_groups: usize,
    /// Generated tokens of every LM call of the rollout (for response-length stats).
    pub response_lengths: Vec<usize>,
}

/// Scores every episode, computes advantages and emits the rows.
pub fn build_rows(
    groups: &[Group],
    reward: &CompositeReward,
    opts: &RowOptions,
) -> Result<RolloutBatch> {
    let mut rewards = Vec::with_capacity(groups.len());
    for g in groups {
        let scored = g
            .episodes
            .iter()
            .map(|e| reward.score(&g.sample, e))
            .collect::<Result<Vec<_>>>()?;
        rewards.push(scored);
    }
    let totals: Vec<Vec<f32>> = rewards
        .iter()
        .map(|g| g.iter().map(|b| b.total).collect())
        .collect();
    let adv = advantage::compute(&totals, opts.advantage, opts.eps)?;
    let mut rows = Vec::new();
    let mut response_lengths = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for (ti, e) in g.episodes.iter().enumerate() {
            let calls: Vec<_> = e.lm_calls().collect();
            response_lengths.extend(calls.iter().map(|c| c.output.token_ids.len()));
            let Some(a) = &adv.per_group[gi] else {
                continue;
            };
            for (c, (a, m)) in calls.iter().zip(advantage::broadcast(
                a[ti],
                calls.len(),
                opts.mask_final_turn,
            )) {
                if m == 0.0
                    || c.output.token_ids.is_empty()
                    || (!opts.roles.is_empty() && !opts.roles.contains(&c.role))
                {
                    continue;
                }
                if c.output.logprobs.len() != c.output.token_ids.len() {
                    return Err(Error::Invalid(format!(
                        "sample {} path {}: {} tokens but {} log-probs (the LM backend must record log-probs)",
                        g.sample.id,
                        e.path,
                        c.output.token_ids.len(),
                        c.output.logprobs.len()
                    )));
                }
                rows.push(Row {
                    prompt_ids: c.output.prompt_ids.clone(),
                    action_ids: c.output.token_ids.clone(),
                    old_logprobs: c.output.logprobs.clone(),
                    advantage: a,
                    temperature: c.params.temperature,
                    role: c.role.clone(),
                    group: gi,
                    trajectory: ti,
                });
            }
        }
    }
    Ok(RolloutBatch {
        rows,
        rewards,
        skipped_groups: adv.skipped_groups,
        response_lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::WeightedReward;
    use memfactory_core::{Finish, Generation, LmCall, Prompt, Reward, SamplingParams, Step};

    /// Reward = the answer parsed as a number.
    struct Num;
    impl Reward for Num {
        fn name(&self) -> &str {
            "num"
        }
        fn score(&self, _: &Sample, e: &Episode) -> Result<Option<f32>> {
            Ok(e.answer.as_deref().and_then(|a| a.parse().ok()))
        }
    }

    fn call(role: &str, tokens: Vec<u32>) -> Step {
        Step::Lm(LmCall {
            role: role.into(),
            prompt: Prompt::Tokens(vec![1, 2]),
            params: SamplingParams {
                temperature: 0.7,
                ..Default::default()
            },
            output: Generation {
                prompt_ids: vec![1, 2],
                logprobs: vec![-0.5; tokens.len()],
                token_ids: tokens,
                text: String::new(),
                finish: Finish::Length,
            },
        })
    }

    fn episode(path: usize, answer: &str) -> Episode {
        Episode {
            sample_id: "s".into(),
            path,
            seed: 0,
            steps: vec![
                call("memory-update", vec![5, 6]),
                Step::Note {
                    label: "chunk".into(),
                    text: "1".into(),
                },
                call("memory-update", vec![]),
                call("answer", vec![7]),
            ],
            answer: Some(answer.into()),
        }
    }

    fn groups() -> Vec<Group> {
        let sample: Sample = serde_json::from_value(
            serde_json::json!({"id": "s", "question": "q", "answers": ["a"]}),
        )
        .unwrap();
        vec![
            Group {
                sample: sample.clone(),
                episodes: vec![episode(0, "1"), episode(1, "0")],
            },
            Group {
                sample,
                episodes: vec![episode(0, "1"), episode(1, "1")],
            },
        ]
    }

    fn reward() -> CompositeReward {
        CompositeReward {
            components: vec![WeightedReward {
                reward: Box::new(Num),
                weight: 2.0,
            }],
        }
    }

    #[test]
    fn one_row_per_call_with_trajectory_advantage() {
        let opts = RowOptions {
            advantage: AdvantageKind::DrGrpo,
            eps: 1e-6,
            mask_final_turn: false,
            roles: vec![],
        };
        let b = build_rows(&groups(), &reward(), &opts).unwrap();
        assert_eq!(b.skipped_groups, 1);
        // Group 0: 2 trajectories × (2 non-empty calls); group 1 skipped.
        assert_eq!(b.rows.len(), 4);
        assert_eq!(b.rows[0].advantage, 1.0);
        assert_eq!(b.rows[1].advantage, 1.0);
        assert_eq!(b.rows[2].advantage, -1.0);
        assert_eq!(b.rows[0].action_ids, vec![5, 6]);
        assert_eq!(b.rows[0].old_logprobs, vec![-0.5, -0.5]);
        assert_eq!(b.rows[1].role, "answer");
        assert_eq!(b.rows[1].temperature, 0.7);
        assert_eq!(b.rewards[0][0].total, 2.0);
        assert_eq!(b.response_lengths.len(), 12);

        let masked = build_rows(
            &groups(),
            &reward(),
            &RowOptions {
                mask_final_turn: true,
                ..opts.clone()
            },
        )
        .unwrap();
        assert!(masked.rows.iter().all(|r| r.role == "memory-update"));
        assert_eq!(masked.rows.len(), 2);
        let answers = build_rows(
            &groups(),
            &reward(),
            &RowOptions {
                roles: vec!["answer".into()],
                ..opts
            },
        )
        .unwrap();
        assert!(answers.rows.iter().all(|r| r.role == "answer"));
    }
}
