//! The `[train]` recipe table.
//!
//! ```toml
//! [train]
//! steps = 10                 # rollout → update steps
//! samples_per_step = 4       # samples (groups) per rollout
//! group_size = 8             # episodes per sample (the agent's paths)
//! advantage = "dr-grpo"      # "grpo" | "dr-grpo"
//! adv_eps = 1e-6
//! mask_final_turn = false    # true: train only the memory updates
//! roles = []                 # LM-call roles to train; empty = all the policy's (a role an
//!                            # op's own model serves is never trained: naming it is an error)
//! zero_variance = "drop"     # "drop" | "keep" (rows with A = 0, verl/MemAgent) | "resample" (DAPO)
//! resample_max_rounds = 10   # "resample": extra rollout rounds per step at most
//! old_logprobs = "sampler"   # "sampler" (recorded at sampling) | "recompute" (verl: training
//!                            # forward before the update, no grad)
//! ppo_epochs = 2             # passes over the rollout's rows
//! mini_batch_size = 8        # rows per optimizer micro-batch
//! micro_batch_tokens = 4096  # memory bound: tokens per forward/backward chunk (on CPU the rows
//!                            # packed without padding, a shared prefix once; elsewhere rows ×
//!                            # longest row)
//! prefix_sharing = true      # CPU: rows sharing a prompt prefix (≥ 8 tokens) run it once
//! grad_accum = 1
//! clip_low = 0.2
//! clip_high = 0.2
//! kl_beta = 1e-3             # 0: no reference model
//! kl_clamp = 10.0            # bound on the k3 term per token (verl); 0 = off
//! clip_ratio_c = 3.0         # dual-clip bound for A < 0 (verl); 0 = off
//! loss_agg = "token-mean"    # "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum-norm"
//! loss_agg_norm = 1024.0     # "seq-mean-token-sum-norm" only (required): the constant divisor
//! lr = 1e-6
//! betas = [0.9, 0.999]
//! eps = 1e-8
//! weight_decay = 0.01
//! warmup_steps = 0
//! schedule = "constant"      # "constant" | "cosine" (over `steps`)
//! min_lr_ratio = 0.0
//! max_grad_norm = 1.0        # 0: no clipping
//! seed = 0                   # mini-batch shuffling
//! lora = { rank = 8, alpha = 16.0, targets = ["q_proj", "v_proj"], seed = 0 }  # absent: full fine-tune
//! [[train.rewards]]
//! kind = "sub-em"
//! weight = 1.0
//! ```
//!
//! Impossible settings are rejected before any work, naming the key path.

use memfactory_core::{Cfg, Result};
use memfactory_lm_burn::{LoraConfig, train::PROJECTIONS};
use serde::Serialize;

use crate::advantage::AdvantageKind;
use crate::loss::{Aggregation, DEFAULT_CLIP_RATIO_C, DEFAULT_KL_CLAMP, LossConfig};
use crate::optim::{OptimConfig, Schedule};
use crate::reward::CompositeReward;

/// Where the `old_logprobs` of the PPO ratio come from (`train.old_logprobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OldLogprobs {
    /// The log-probs the sampler recorded (`"sampler"`): cheap, but under top-k / top-p
    /// they are those of the truncated distribution, and quantized inference kernels differ
    /// from the training forward, so the first ratio is not exactly 1.
    #[serde(rename = "sampler")]
    Sampler,
    /// Recomputed by the training forward before the step's first update, at the rollout
    /// temperature, without gradient (`"recompute"`, verl's `compute_log_prob`): the first
    /// mini-batch's ratio is exactly 1.
    #[serde(rename = "recompute")]
    Recompute,
}

/// What a group whose rewards are all equal (no learning signal) becomes
/// (`train.zero_variance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ZeroVariance {
    /// No rows (`"drop"`): the batch shrinks.
    #[serde(rename = "drop")]
    Drop,
    /// Rows with advantage 0 (`"keep"`, verl's default and MemAgent's setting): they count
    /// in the token-mean denominator and carry the KL term.
    #[serde(rename = "keep")]
    Keep,
    /// DAPO's dynamic sampling (`"resample"`): more groups are rolled out until
    /// `samples_per_step` groups with signal are in hand, at most `max_rounds` extra rounds;
    /// the batch is then cut to `samples_per_step` groups (or is what was found).
    #[serde(rename = "resample")]
    Resample {
        /// Extra rollout rounds per step at most.
        max_rounds: usize,
    },
}

/// Parsed `[train]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Rollout → update steps.
    pub steps: usize,
    /// Samples per rollout.
    pub samples_per_step: usize,
    /// Episodes per sample.
    pub group_size: usize,
    /// Advantage normalization.
    pub advantage: AdvantageKind,
    /// `eps` of the `grpo` z-score.
    pub adv_eps: f32,
    /// Drop the final turn (answer) of each trajectory from training.
    pub mask_final_turn: bool,
    /// Roles trained (empty = all the policy's).
    pub roles: Vec<String>,
    /// Zero-variance groups: drop, keep or resample.
    pub zero_variance: ZeroVariance,
    /// Source of the old log-probs.
    pub old_logprobs: OldLogprobs,
    /// Passes over the rollout's rows.
    pub ppo_epochs: usize,
    /// Rows per micro-batch.
    pub mini_batch_size: usize,
    /// Forward/backward chunks of a micro-batch hold at most this many tokens (at least one
    /// row): on the fused CPU path the packed rows (no padding, a shared prefix counted once),
    /// elsewhere rows × longest row; bounds activation memory, not the maths.
    pub micro_batch_tokens: usize,
    /// Rows of a forward that share a prompt prefix run it once (fused CPU path; the same
    /// log-probs and gradients to float rounding).
    pub prefix_sharing: bool,
    /// Loss settings.
    pub loss: LossConfig,
    /// Optimizer settings.
    pub optim: OptimConfig,
    /// LoRA, or full fine-tuning when `None`.
    pub lora: Option<LoraConfig>,
    /// Shuffling seed.
    pub seed: u64,
}

fn positive(n: &usize) -> bool {
    *n > 0
}

impl TrainConfig {
    /// Parses and checks the `[train]` table (`cfg`'s path is usually `train`); builds the
    /// rewards. Returns the settings, the reward and the resolved table.
    pub fn from_cfg(mut cfg: Cfg) -> Result<(TrainConfig, CompositeReward, toml::Table)> {
        let steps = cfg.get_checked("steps", 10usize, positive, "a positive step count")?;
        let samples_per_step =
            cfg.get_checked("samples_per_step", 4usize, positive, "a positive count")?;
        let group_size = cfg.get_checked("group_size", 8usize, positive, "a positive count")?;
        let adv: String = cfg.get("advantage", "dr-grpo".to_string())?;
        let advantage = AdvantageKind::parse(&adv).ok_or_else(|| {
            cfg.error(
                "advantage",
                format!("expected \"grpo\" or \"dr-grpo\", found {adv:?}"),
            )
        })?;
        if advantage == AdvantageKind::Grpo && group_size < 2 {
            return Err(cfg.error(
                "group_size",
                "advantage \"grpo\" divides by the group's standard deviation: group_size must be at least 2",
            ));
        }
        if group_size < 2 {
            return Err(cfg.error(
                "group_size",
                "a group of one has no baseline (every advantage is 0): use at least 2",
            ));
        }
        let adv_eps = cfg.get_checked(
            "adv_eps",
            1e-6f32,
            |e| e.is_finite() && *e >= 0.0,
            "eps >= 0",
        )?;
        let mask_final_turn = cfg.get("mask_final_turn", false)?;
        let roles: Vec<String> = cfg.get("roles", Vec::new())?;
        let zv: String = cfg.get("zero_variance", "drop".to_string())?;
        let max_rounds: Option<usize> = cfg.opt("resample_max_rounds")?;
        let zero_variance = match zv.as_str() {
            "drop" | "keep" if max_rounds.is_some() => {
                return Err(cfg.error(
                    "resample_max_rounds",
                    format!("only used with zero_variance = \"resample\" (found {zv:?})"),
                ));
            }
            "drop" => ZeroVariance::Drop,
            "keep" => ZeroVariance::Keep,
            "resample" => {
                let max_rounds = max_rounds.unwrap_or(10);
                if max_rounds == 0 {
                    return Err(cfg.error(
                        "resample_max_rounds",
                        "expected at least 1 extra rollout round (or zero_variance = \"drop\")",
                    ));
                }
                cfg.set_resolved(
                    "resample_max_rounds",
                    toml::Value::Integer(max_rounds as i64),
                );
                ZeroVariance::Resample { max_rounds }
            }
            _ => {
                return Err(cfg.error(
                    "zero_variance",
                    format!("expected \"drop\", \"keep\" or \"resample\", found {zv:?}"),
                ));
            }
        };
        let olp: String = cfg.get("old_logprobs", "sampler".to_string())?;
        let old_logprobs = match olp.as_str() {
            "sampler" => OldLogprobs::Sampler,
            "recompute" => OldLogprobs::Recompute,
            _ => {
                return Err(cfg.error(
                    "old_logprobs",
                    format!("expected \"sampler\" or \"recompute\", found {olp:?}"),
                ));
            }
        };
        let ppo_epochs = cfg.get_checked("ppo_epochs", 2usize, positive, "a positive count")?;
        let mini_batch_size =
            cfg.get_checked("mini_batch_size", 8usize, positive, "a positive row count")?;
        let min_rows = samples_per_step * group_size;
        if mini_batch_size > min_rows {
            return Err(cfg.error(
                "mini_batch_size",
                format!(
                    "larger than the batch: a rollout yields at least samples_per_step × group_size = {min_rows} rows"
                ),
            ));
        }
        let micro_batch_tokens = cfg.get_checked(
            "micro_batch_tokens",
            4096usize,
            positive,
            "a positive token count",
        )?;
        let prefix_sharing: bool = cfg.get("prefix_sharing", true)?;
        let grad_accum = cfg.get_checked("grad_accum", 1usize, positive, "a positive count")?;
        let clip = |c: &f32| c.is_finite() && *c > 0.0;
        let clip_low = cfg.get_checked(
            "clip_low",
            0.2f32,
            |c| clip(c) && *c < 1.0,
            "a value in (0, 1)",
        )?;
        let clip_high = cfg.get_checked("clip_high", 0.2f32, clip, "a positive value")?;
        let kl_beta = cfg.get_checked(
            "kl_beta",
            1e-3f32,
            |b| b.is_finite() && *b >= 0.0,
            "a value >= 0",
        )?;
        let kl_clamp = cfg.get_checked(
            "kl_clamp",
            DEFAULT_KL_CLAMP,
            |c| c.is_finite() && *c >= 0.0,
            "a bound > 0 on the k3 term (0 = off)",
        )?;
        let clip_ratio_c = cfg.get_checked(
            "clip_ratio_c",
            DEFAULT_CLIP_RATIO_C,
            |c| c.is_finite() && (*c == 0.0 || *c > 1.0),
            "a dual-clip bound > 1 (0 = off)",
        )?;
        let agg: String = cfg.get("loss_agg", "token-mean".to_string())?;
        let norm: Option<f32> = cfg.opt("loss_agg_norm")?;
        let aggregation = match (Aggregation::parse_with(&agg, norm.unwrap_or(0.0)), norm) {
            (None, _) => {
                return Err(cfg.error(
                    "loss_agg",
                    format!(
                        "expected one of {}, found {agg:?}",
                        Aggregation::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                    ),
                ));
            }
            (Some(Aggregation::SeqMeanTokenSumNorm { .. }), None) => {
                return Err(cfg.error(
                    "loss_agg_norm",
                    "loss_agg = \"seq-mean-token-sum-norm\" divides each row's token sum by this \
                     constant: set it, e.g. to the longest response allowed (max_new_tokens)",
                ));
            }
            (Some(Aggregation::SeqMeanTokenSumNorm { .. }), Some(n))
                if !(n.is_finite() && n > 0.0) =>
            {
                return Err(cfg.error(
                    "loss_agg_norm",
                    format!("expected a positive number of tokens, found {n}"),
                ));
            }
            (Some(Aggregation::SeqMeanTokenSumNorm { .. }), Some(_)) => {
                cfg.set_resolved(
                    "loss_agg_norm",
                    toml::Value::Float(f64::from(norm.unwrap_or(0.0))),
                );
                Aggregation::parse_with(&agg, norm.unwrap_or(0.0)).expect("parsed above")
            }
            (Some(_), Some(_)) => {
                return Err(cfg.error(
                    "loss_agg_norm",
                    format!(
                        "only used with loss_agg = \"seq-mean-token-sum-norm\" (found {agg:?})"
                    ),
                ));
            }
            (Some(a), None) => a,
        };
        let lr = cfg.get_checked(
            "lr",
            1e-6f64,
            |l| l.is_finite() && *l > 0.0,
            "a learning rate > 0",
        )?;
        let betas: [f32; 2] = cfg.get_checked(
            "betas",
            [0.9f32, 0.999],
            |b| b.iter().all(|x| (0.0..1.0).contains(x)),
            "two values in [0, 1)",
        )?;
        let eps = cfg.get_checked("eps", 1e-8f32, |e| e.is_finite() && *e > 0.0, "a value > 0")?;
        let weight_decay = cfg.get_checked(
            "weight_decay",
            0.01f32,
            |w| w.is_finite() && *w >= 0.0,
            "a value >= 0",
        )?;
        let warmup_steps = cfg.get("warmup_steps", 0usize)?;
        let sched: String = cfg.get("schedule", "constant".to_string())?;
        let schedule = match sched.as_str() {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            _ => {
                return Err(cfg.error(
                    "schedule",
                    format!("expected \"constant\" or \"cosine\", found {sched:?}"),
                ));
            }
        };
        let min_lr_ratio = cfg.get_checked(
            "min_lr_ratio",
            0.0f64,
            |r| (0.0..=1.0).contains(r),
            "a value in [0, 1]",
        )?;
        let max_grad_norm = cfg.get_checked(
            "max_grad_norm",
            1.0f32,
            |m| m.is_finite() && *m >= 0.0,
            "a value >= 0 (0 = off)",
        )?;
        let seed = cfg.get("seed", 0u64)?;
        let lora = match cfg.sub("lora")? {
            None => None,
            Some(mut l) => {
                let d = LoraConfig::default();
                let rank = l.get_checked("rank", d.rank, positive, "a positive rank")?;
                let alpha = l.get_checked(
                    "alpha",
                    d.alpha,
                    |a| a.is_finite() && *a > 0.0,
                    "a value > 0",
                )?;
                let targets: Vec<String> = l.get("targets", d.targets.clone())?;
                if let Some(bad) = targets.iter().find(|t| !PROJECTIONS.contains(&t.as_str())) {
                    return Err(l.error(
                        "targets",
                        format!(
                            "unknown projection `{bad}` (expected among {})",
                            PROJECTIONS.join(", ")
                        ),
                    ));
                }
                let lseed = l.get("seed", 0u64)?;
                let resolved = l.finish()?;
                cfg.set_resolved("lora", toml::Value::Table(resolved));
                Some(LoraConfig {
                    rank,
                    alpha,
                    targets,
                    seed: lseed,
                })
            }
        };
        let rewards_path = cfg.key("rewards");
        let (reward, resolved_rewards) = match cfg.raw("rewards") {
            Some(v) => CompositeReward::from_value(&rewards_path, &v)?,
            None => {
                return Err(cfg.error(
                    "rewards",
                    "missing required key: at least one [[train.rewards]] table",
                ));
            }
        };
        cfg.set_resolved("rewards", resolved_rewards);
        let resolved = cfg.finish()?;
        Ok((
            TrainConfig {
                steps,
                samples_per_step,
                group_size,
                advantage,
                adv_eps,
                mask_final_turn,
                roles,
                zero_variance,
                old_logprobs,
                ppo_epochs,
                mini_batch_size,
                micro_batch_tokens,
                prefix_sharing,
                loss: LossConfig {
                    clip_low,
                    clip_high,
                    kl_beta,
                    aggregation,
                    clip_ratio_c,
                    kl_clamp,
                },
                optim: OptimConfig {
                    lr,
                    betas,
                    eps,
                    weight_decay,
                    warmup_steps,
                    schedule,
                    total_steps: steps,
                    min_lr_ratio,
                    max_grad_norm: (max_grad_norm > 0.0).then_some(max_grad_norm),
                    grad_accum,
                },
                lora,
                seed,
            },
            reward,
            resolved,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_reward_sub_em as _;

    fn parse(src: &str) -> Result<(TrainConfig, CompositeReward, toml::Table)> {
        let t: toml::Table = toml::from_str(src).unwrap();
        TrainConfig::from_cfg(Cfg::new("train", t))
    }

    const REW: &str = "\n[[rewards]]\nkind = \"sub-em\"\n";

    #[test]
    fn defaults_resolve() {
        let (c, r, t) = parse(REW).unwrap();
        assert_eq!(c.advantage, AdvantageKind::DrGrpo);
        assert_eq!(c.optim.eps, 1e-8);
        assert_eq!(c.optim.betas, [0.9, 0.999]);
        assert_eq!(c.loss.aggregation, Aggregation::TokenMean);
        assert!(c.lora.is_none());
        assert_eq!(r.components.len(), 1);
        assert_eq!(t["lr"].as_float(), Some(1e-6));
        assert_eq!(t["rewards"][0]["kind"].as_str(), Some("sub-em"));
        assert_eq!(c.zero_variance, ZeroVariance::Drop);
        assert_eq!(c.old_logprobs, OldLogprobs::Sampler);
        assert_eq!(c.loss.clip_ratio_c, 3.0);
        assert_eq!(c.loss.kl_clamp, 10.0);
        assert_eq!(t["zero_variance"].as_str(), Some("drop"));
        assert_eq!(t["old_logprobs"].as_str(), Some("sampler"));
    }

    #[test]
    fn new_modes_parse() {
        let (c, _, t) = parse(&format!(
            "loss_agg = \"seq-mean-token-sum-norm\"\nloss_agg_norm = 256.0\n\
             zero_variance = \"resample\"\nold_logprobs = \"recompute\"\n\
             clip_ratio_c = 0.0\nkl_clamp = 0.0{REW}"
        ))
        .unwrap();
        assert_eq!(
            c.loss.aggregation,
            Aggregation::SeqMeanTokenSumNorm { norm: 256.0 }
        );
        assert_eq!(c.zero_variance, ZeroVariance::Resample { max_rounds: 10 });
        assert_eq!(t["resample_max_rounds"].as_integer(), Some(10));
        assert_eq!(c.old_logprobs, OldLogprobs::Recompute);
        assert_eq!((c.loss.clip_ratio_c, c.loss.kl_clamp), (0.0, 0.0));
        let (c, _, _) = parse(&format!("zero_variance = \"keep\"{REW}")).unwrap();
        assert_eq!(c.zero_variance, ZeroVariance::Keep);
    }

    #[test]
    fn impossible_settings_name_their_key() {
        let cases = [
            ("advantage = \"grpo\"\ngroup_size = 1", "train.group_size"),
            (
                "group_size = 2\nsamples_per_step = 1\nmini_batch_size = 3",
                "train.mini_batch_size",
            ),
            ("lr = 0.0", "train.lr"),
            ("lr = -1e-5", "train.lr"),
            ("advantage = \"ppo\"", "train.advantage"),
            ("loss_agg = \"sum\"", "train.loss_agg"),
            (
                "loss_agg = \"seq-mean-token-sum-norm\"",
                "train.loss_agg_norm",
            ),
            (
                "loss_agg = \"seq-mean-token-sum-norm\"\nloss_agg_norm = 0.0",
                "train.loss_agg_norm",
            ),
            ("loss_agg_norm = 512.0", "train.loss_agg_norm"),
            ("clip_ratio_c = 1.0", "train.clip_ratio_c"),
            ("clip_ratio_c = -3.0", "train.clip_ratio_c"),
            ("kl_clamp = -1.0", "train.kl_clamp"),
            ("zero_variance = \"filter\"", "train.zero_variance"),
            ("resample_max_rounds = 3", "train.resample_max_rounds"),
            (
                "zero_variance = \"resample\"\nresample_max_rounds = 0",
                "train.resample_max_rounds",
            ),
            ("old_logprobs = \"vllm\"", "train.old_logprobs"),
            ("clip_low = 1.5", "train.clip_low"),
            ("lora = { rank = 0 }", "train.lora.rank"),
            ("lora = { targets = [\"embed\"] }", "train.lora.targets"),
            ("bogus = 1", "train.bogus"),
        ];
        for (src, key) in cases {
            let err = parse(&format!("{src}{REW}")).err().unwrap().to_string();
            assert!(err.contains(&format!("`{key}`")), "{src}: {err}");
        }
        let err = parse("").err().unwrap().to_string();
        assert!(err.contains("train.rewards"), "{err}");
    }
}
