//! From groups of episodes to training rows.
//!
//! Every LM call of a trajectory (memory updates and the final answer — MemAgent's
//! Multi-Conv: K+1 independent conversations) becomes one [`Row`] with the exact prompt
//! ids the model consumed, the sampled action ids and the log-probs recorded at sampling
//! time (`old_logprobs`), and the trajectory's advantage. Nothing is re-tokenized.
//!
//! Rows are not emitted for: trajectories of skipped (zero-variance) groups (unless
//! `keep_zero_variance`: then they are rows with advantage 0), turns masked by
//! `mask_final_turn`, roles not listed in `roles` (when non-empty), empty actions, and calls
//! not made by the policy — an op's own (frozen) model records its calls with another
//! [`LmCall::model`](memfactory_core::LmCall::model) id: those tokens were not sampled from
//! the policy, so their log-probs are not the policy's and training on them would teach the
//! policy the frozen model's outputs. Listing such a role in `roles` is an error naming
//! `train.roles`: `memfactory train` / `check` refuse it before any rollout from the
//! agent's `Paradigm::frozen_roles`; the check here, on the recorded calls, is the backstop.

use memfactory_core::episode::POLICY_MODEL;
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
    /// Roles to train (empty = all the policy's).
    pub roles: Vec<String>,
    /// Zero-variance groups give rows with advantage 0 (verl's default, MemAgent's setting:
    /// they count in the token-mean denominator and the KL) instead of none.
    pub keep_zero_variance: bool,
}

/// A scored rollout turned into rows.
#[derive(Debug, Clone)]
pub struct RolloutBatch {
    /// Training rows.
    pub rows: Vec<Row>,
    /// Reward of every episode, `[group][trajectory]`.
    pub rewards: Vec<Vec<RewardBreakdown>>,
    /// Groups skipped for zero reward variance (no rows).
    pub skipped_groups: usize,
    /// Groups whose rewards have zero variance (skipped or, with `keep_zero_variance`, kept
    /// with advantage 0).
    pub zero_variance_groups: usize,
    /// Generated tokens of every LM call of the rollout (for response-length stats).
    pub response_lengths: Vec<usize>,
}

/// Scores every episode: `[group][trajectory]`.
pub fn score_groups(
    groups: &[Group],
    reward: &CompositeReward,
) -> Result<Vec<Vec<RewardBreakdown>>> {
    groups
        .iter()
        .map(|g| {
            g.episodes
                .iter()
                .map(|e| reward.score(&g.sample, e))
                .collect::<Result<Vec<_>>>()
        })
        .collect()
}

/// Scores every episode, computes advantages and emits the rows.
pub fn build_rows(
    groups: &[Group],
    reward: &CompositeReward,
    opts: &RowOptions,
) -> Result<RolloutBatch> {
    build_rows_scored(groups, score_groups(groups, reward)?, opts)
}

/// [`build_rows`] with the episodes already scored (`rewards[g][t]`, see [`score_groups`]).
pub fn build_rows_scored(
    groups: &[Group],
    rewards: Vec<Vec<RewardBreakdown>>,
    opts: &RowOptions,
) -> Result<RolloutBatch> {
    if rewards.len() != groups.len()
        || rewards
            .iter()
            .zip(groups)
            .any(|(r, g)| r.len() != g.episodes.len())
    {
        return Err(Error::Invalid(
            "rewards do not match the groups' episodes".into(),
        ));
    }
    let totals: Vec<Vec<f32>> = rewards
        .iter()
        .map(|g| g.iter().map(|b| b.total).collect())
        .collect();
    let adv = advantage::compute(&totals, opts.advantage, opts.eps)?;
    let zero_variance_groups = adv.skipped_groups;
    let per_group: Vec<Option<Vec<f32>>> = adv
        .per_group
        .into_iter()
        .zip(&totals)
        .map(|(a, t)| match a {
            None if opts.keep_zero_variance => Some(vec![0.0; t.len()]),
            a => a,
        })
        .collect();
    let skipped_groups = per_group.iter().filter(|a| a.is_none()).count();
    let mut rows = Vec::new();
    let mut response_lengths = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for (ti, e) in g.episodes.iter().enumerate() {
            let calls: Vec<_> = e.lm_calls().collect();
            response_lengths.extend(calls.iter().map(|c| c.output.token_ids.len()));
            // A role the recipe asks to train must be the policy's.
            if let Some(c) = calls
                .iter()
                .find(|c| c.model != POLICY_MODEL && opts.roles.contains(&c.role))
            {
                return Err(Error::config(
                    "train.roles",
                    format!(
                        "role `{}` is served by its own model (`{}`), not the policy being trained: \
                         its tokens were not sampled from the policy; remove it from train.roles \
                         (or drop that op's `model` table to let the policy play the role)",
                        c.role, c.model
                    ),
                ));
            }
            let Some(a) = &per_group[gi] else {
                continue;
            };
            for (c, (a, m)) in calls.iter().zip(advantage::broadcast(
                a[ti],
                calls.len(),
                opts.mask_final_turn,
            )) {
                if m == 0.0
                    || c.model != POLICY_MODEL
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
        skipped_groups,
        zero_variance_groups,
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
            model: memfactory_core::episode::POLICY_MODEL.into(),
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
            memory_tokens: None,
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
            keep_zero_variance: false,
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

    fn opts() -> RowOptions {
        RowOptions {
            advantage: AdvantageKind::DrGrpo,
            eps: 1e-6,
            mask_final_turn: false,
            roles: vec![],
            keep_zero_variance: false,
        }
    }

    #[test]
    fn kept_zero_variance_groups_give_rows_with_advantage_zero() {
        let b = build_rows(
            &groups(),
            &reward(),
            &RowOptions {
                keep_zero_variance: true,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!((b.skipped_groups, b.zero_variance_groups), (0, 1));
        assert_eq!(b.rows.len(), 8);
        let g1: Vec<f32> = b
            .rows
            .iter()
            .filter(|r| r.group == 1)
            .map(|r| r.advantage)
            .collect();
        assert_eq!(g1, vec![0.0; 4]);
        let dropped = build_rows(&groups(), &reward(), &opts()).unwrap();
        assert_eq!(
            (dropped.skipped_groups, dropped.zero_variance_groups),
            (1, 1)
        );
        assert!(dropped.rows.iter().all(|r| r.group == 0));
    }

    /// The groups of `groups()` with each answer made by a frozen op model instead.
    fn frozen_answer_groups() -> Vec<Group> {
        let mut gs = groups();
        for g in &mut gs {
            for e in &mut g.episodes {
                for s in &mut e.steps {
                    if let Step::Lm(c) = s
                        && c.role == "answer"
                    {
                        c.model = memfactory_core::episode::op_model_id("answer");
                    }
                }
            }
        }
        gs
    }

    #[test]
    fn calls_of_a_frozen_model_never_become_rows() {
        let b = build_rows(&frozen_answer_groups(), &reward(), &opts()).unwrap();
        // Group 0: 2 trajectories × 1 policy call (the non-empty memory update).
        assert_eq!(b.rows.len(), 2);
        assert!(
            b.rows.iter().all(|r| r.role == "memory-update"),
            "{:?}",
            b.rows
        );
        // The same rollout with the policy answering trains the answers too.
        let all = build_rows(&groups(), &reward(), &opts()).unwrap();
        assert_eq!(all.rows.iter().filter(|r| r.role == "answer").count(), 2);
        // Naming the frozen role is refused, with the key and the role.
        let err = build_rows(
            &frozen_answer_groups(),
            &reward(),
            &RowOptions {
                roles: vec!["answer".into()],
                ..opts()
            },
        )
        .unwrap_err();
        assert!(err.is_user_error());
        let msg = err.to_string();
        assert!(
            msg.contains("`train.roles`") && msg.contains("role `answer`"),
            "{msg}"
        );
        assert!(msg.contains("op:answer"), "{msg}");
        // Naming only the policy's role is fine.
        let upd = build_rows(
            &frozen_answer_groups(),
            &reward(),
            &RowOptions {
                roles: vec!["memory-update".into()],
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(upd.rows.len(), 2);
    }
}
