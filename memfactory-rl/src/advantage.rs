//! Per-trajectory advantages from a group's total rewards.
//!
//! A *group* is the G episodes (memory paths) run on one sample. Each episode gets one
//! scalar advantage computed from the group's rewards, and that advantage is then broadcast
//! to every turn (LM call) of the episode: MemAgent's Multi-Conv GRPO normalizes rewards
//! per trajectory *before* expanding into per-turn rows (see `shared/design/references.md`).
//!
//! - [`AdvantageKind::Grpo`]: group z-score `(r − mean) / (std + eps)`, with the unbiased
//!   standard deviation (`torch.std`, as in TRL and verl);
//! - [`AdvantageKind::DrGrpo`]: `r − mean` (no std division; MemAgent's choice).
//!
//! A group whose rewards are all equal (zero variance, or a single episode) carries no
//! learning signal: it is *skipped* — its trajectories get no advantage and produce no
//! training rows — and counted in [`Advantages::skipped_groups`].

use serde::{Deserialize, Serialize};

use memfactory_core::{Error, Result};

/// How advantages are normalized within a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdvantageKind {
    /// `(r − mean) / (std + eps)` (recipe value `"grpo"`).
    #[serde(rename = "grpo")]
    Grpo,
    /// `r − mean` (recipe value `"dr-grpo"`).
    #[serde(rename = "dr-grpo")]
    DrGrpo,
}

impl AdvantageKind {
    /// Parses the recipe spelling (`grpo`, `dr-grpo`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grpo" => Some(AdvantageKind::Grpo),
            "dr-grpo" => Some(AdvantageKind::DrGrpo),
            _ => None,
        }
    }

    /// The recipe spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdvantageKind::Grpo => "grpo",
            AdvantageKind::DrGrpo => "dr-grpo",
        }
    }
}

/// Advantages of a batch of groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// `per_group[g]` is `Some(advantage of each trajectory)` or `None` when group `g` was
    /// skipped (zero variance).
    pub per_group: Vec<Option<Vec<f32>>>,
    /// How many groups were skipped.
    pub skipped_groups: usize,
}

/// Below this standard deviation a group counts as having zero variance.
pub const ZERO_STD: f64 = 1e-9;

/// Advantages of one group's rewards, or `None` when the group has zero variance (or
/// fewer than two trajectories). Computed in f64.
pub fn group_advantages(rewards: &[f32], kind: AdvantageKind, eps: f32) -> Option<Vec<f32>> {
    let n = rewards.len();
    if n < 2 {
        return None;
    }
    let mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / n as f64;
    let var = rewards
        .iter()
        .map(|&r| (r as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let std = var.sqrt();
    if std <= ZERO_STD {
        return None;
    }
    Some(
        rewards
            .iter()
            .map(|&r| {
                let c = r as f64 - mean;
                (match kind {
                    AdvantageKind::Grpo => c / (std + eps as f64),
                    AdvantageKind::DrGrpo => c,
                }) as f32
            })
            .collect(),
    )
}

/// Advantages of every group; `groups[g]` holds the total rewards of group `g`'s
/// trajectories. A non-finite reward is an error.
pub fn compute(groups: &[Vec<f32>], kind: AdvantageKind, eps: f32) -> Result<Advantages> {
    let mut per_group = Vec::with_capacity(groups.len());
    let mut skipped_groups = 0;
    for (g, rewards) in groups.iter().enumerate() {
        if let Some((i, r)) = rewards.iter().enumerate().find(|(_, r)| !r.is_finite()) {
            return Err(Error::Invalid(format!(
                "group {g}, trajectory {i}: reward {r} is not finite"
            )));
        }
        let a = group_advantages(rewards, kind, eps);
        if a.is_none() {
            skipped_groups += 1;
        }
        per_group.push(a);
    }
    Ok(Advantages {
        per_group,
        skipped_groups,
    })
}

/// Broadcasts a trajectory's advantage to its `turns` LM calls: `(advantage, mask)` per
/// turn, where the mask is 0 for the final turn when `mask_final_turn` is set (train only
/// the memory updates) and 1 otherwise.
pub fn broadcast(advantage: f32, turns: usize, mask_final_turn: bool) -> Vec<(f32, f32)> {
    (0..turns)
        .map(|t| {
            let masked = mask_final_turn && t + 1 == turns;
            (advantage, if masked { 0.0 } else { 1.0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpo_and_dr_grpo_by_hand() {
        let r = [1.0, 0.0, 0.0, 1.0];
        // mean 0.5, unbiased std = sqrt(1/3).
        let s = (1.0f64 / 3.0).sqrt();
        let a = group_advantages(&r, AdvantageKind::Grpo, 0.0).unwrap();
        assert!((a[0] as f64 - 0.5 / s).abs() < 1e-6);
        assert!((a[1] as f64 + 0.5 / s).abs() < 1e-6);
        let d = group_advantages(&r, AdvantageKind::DrGrpo, 1e-6).unwrap();
        assert_eq!(d, vec![0.5, -0.5, -0.5, 0.5]);
    }

    #[test]
    fn zero_variance_and_singletons_are_skipped_and_counted() {
        let groups = vec![vec![1.0, 1.0, 1.0], vec![0.0, 1.0], vec![0.3]];
        let a = compute(&groups, AdvantageKind::Grpo, 1e-6).unwrap();
        assert_eq!(a.skipped_groups, 2);
        assert!(a.per_group[0].is_none());
        assert!(a.per_group[1].is_some());
        assert!(a.per_group[2].is_none());
    }

    #[test]
    fn nan_reward_is_an_error() {
        let err = compute(&[vec![0.0, f32::NAN]], AdvantageKind::DrGrpo, 0.0).unwrap_err();
        assert!(err.to_string().contains("trajectory 1"), "{err}");
    }

    #[test]
    fn broadcast_masks_final_turn_on_request() {
        assert_eq!(broadcast(0.5, 3, false), vec![(0.5, 1.0); 3]);
        assert_eq!(
            broadcast(-1.0, 3, true),
            vec![(-1.0, 1.0), (-1.0, 1.0), (-1.0, 0.0)]
        );
        assert!(broadcast(1.0, 0, true).is_empty());
    }

    #[test]
    fn kind_spelling_round_trips() {
        for k in [AdvantageKind::Grpo, AdvantageKind::DrGrpo] {
            assert_eq!(AdvantageKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AdvantageKind::parse("ppo"), None);
    }

    fn rewards() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-10.0f32..10.0, 2..17)
    }

    fn kind() -> impl Strategy<Value = AdvantageKind> {
        prop_oneof![Just(AdvantageKind::Grpo), Just(AdvantageKind::DrGrpo)]
    }

    proptest! {
        #[test]
        fn advantages_have_zero_mean(r in rewards(), k in kind()) {
            if let Some(a) = group_advantages(&r, k, 1e-6) {
                let m: f64 = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
                let scale = a.iter().fold(1.0f64, |s, &x| s.max(x.abs() as f64));
                prop_assert!(m.abs() < 1e-5 * scale, "mean {}", m);
            }
        }

        #[test]
        fn shift_invariance(r in rewards(), c in -5.0f32..5.0, k in kind()) {
            let shifted: Vec<f32> = r.iter().map(|x| x + c).collect();
            let a = group_advantages(&r, k, 1e-6);
            let b = group_advantages(&shifted, k, 1e-6);
            if let (Some(a), Some(b)) = (a, b) {
                for (x, y) in a.iter().zip(&b) {
                    prop_assert!((x - y).abs() < 1e-3 * (1.0 + x.abs()), "{} vs {}", x, y);
                }
            }
        }

        #[test]
        fn scale_behaviour(r in rewards(), c in 0.1f32..10.0) {
            // dr-grpo scales linearly; grpo is scale invariant (up to eps).
            let scaled: Vec<f32> = r.iter().map(|x| x * c).collect();
            if let (Some(a), Some(b)) = (
                group_advantages(&r, AdvantageKind::DrGrpo, 0.0),
                group_advantages(&scaled, AdvantageKind::DrGrpo, 0.0),
            ) {
                for (x, y) in a.iter().zip(&b) {
                    prop_assert!((x * c - y).abs() < 1e-3 * (1.0 + y.abs()));
                }
            }
            if let (Some(a), Some(b)) = (
                group_advantages(&r, AdvantageKind::Grpo, 0.0),
                group_advantages(&scaled, AdvantageKind::Grpo, 0.0),
            ) {
                for (x, y) in a.iter().zip(&b) {
                    prop_assert!((x - y).abs() < 1e-3 * (1.0 + x.abs()));
                }
            }
        }

        #[test]
        fn constant_groups_are_always_skipped(v in -10.0f32..10.0, n in 1usize..10, k in kind()) {
            let groups = vec![vec![v; n], vec![0.0, 1.0]];
            let a = compute(&groups, k, 1e-6).unwrap();
            prop_assert_eq!(a.skipped_groups, 1);
            prop_assert!(a.per_group[0].is_none());
        }
    }
}
