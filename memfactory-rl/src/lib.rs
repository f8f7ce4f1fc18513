//! # memfactory-rl
//!
//! The GRPO trainer of MemFactory. `memfactory train RECIPE` reaches it through the
//! `memfactory` facade, which assembles the recipe (model, agent, data) and hands the
//! trainer a rollout function; this crate depends only on `memfactory-core` and the burn
//! engine (`memfactory-lm-burn`), never on the facade or the CLI.
//!
//! Data flow of one training step, one module per stage (read them in this order):
//!
//! 1. [`rollout`] — a group of episodes (one per memory path) of each sample becomes
//!    training rows: one row per LM call of the policy (memory updates and final answer;
//!    calls of an op's own frozen model are never rows) with its exact prompt ids, action
//!    ids and the log-probs recorded at sampling time;
//! 2. [`reward`] — a weighted sum of registered rewards scores each episode (components
//!    kept apart for logging);
//! 3. [`advantage`] — per-trajectory advantages within each group (`grpo` z-score or
//!    `dr-grpo` mean-centering, MemAgent's choice), broadcast to every turn of the
//!    trajectory; zero-variance groups dropped, kept (A = 0) or resampled (DAPO);
//! 4. [`loss`] — the PPO clipped surrogate (with verl's dual-clip and ±20 log-ratio clamp)
//!    and a clamped k3 KL to a frozen reference, aggregated `token-mean`,
//!    `seq-mean-token-mean` or Dr. GRPO's `seq-mean-token-sum-norm`, on burn autodiff
//!    tensors;
//! 5. [`optim`] — AdamW (PyTorch defaults written out), warmup + constant/cosine schedule,
//!    global-norm gradient clipping and gradient accumulation;
//! 6. [`trainer`] — `ppo_epochs` × mini-batches over the rows (so the ratio moves and
//!    clipping acts, unlike one-update-per-batch GRPO; old log-probs from the sampler or
//!    recomputed by the training forward), then `BurnLm::set_weights` so the
//!    next rollout samples from the updated policy; metrics appended to `metrics.jsonl`.
//!
//! [`checkpoint`] saves and restores the trainable weights, optimizer moments and the
//! caller's state atomically, so `memfactory train --resume` continues exactly.
//!
//! The `[train]` recipe table is parsed by [`config::TrainConfig::from_cfg`].

pub mod advantage;
pub mod checkpoint;
pub mod config;
pub mod loss;
pub mod optim;
pub mod reward;
pub mod rollout;
pub mod trainer;
