//! The training loop: rollout → reward → advantage → loss → step.
//!
//! [`Trainer`] owns the policy's inference engine ([`BurnLm`]), its trainable copy
//! ([`TrainModel`]), an optional frozen reference (when `kl_beta > 0`) and the optimizer.
//! [`Trainer::step`] asks a caller-supplied rollout function for groups of episodes sampled
//! from the *current* policy (the facade runs the agent there; tests build episodes by
//! hand), then [`Trainer::train_on`] turns them into rows and runs `ppo_epochs` passes of
//! shuffled mini-batches of `mini_batch_size` rows. The ratio therefore moves away from 1
//! after the first update and clipping acts (the clip fraction is logged). Finally
//! [`BurnLm::set_weights`] refreshes the inference weights so the next rollout samples from
//! the updated policy. Each step appends one JSON line to `metrics.jsonl`.
//!
//! The log-probs recomputed for training divide the logits by the row's sampling
//! temperature. The ratio's denominator (`old_logprobs`) is, with `old_logprobs =
//! "sampler"`, what the sampler recorded — with `top_k`/`top_p` sampling the log-probs of the
//! truncated distribution, and on CPU those of the quantized inference kernels — so the
//! first ratio is not exactly 1; with `"recompute"` (verl's `compute_log_prob` before the
//! update) the training forward recomputes them once per step, without gradient, before the
//! first update, and the first mini-batch's ratio is exactly 1. Either way every step logs
//! the sampler-vs-trainer gap over action tokens (`logprob_gap_mean`, `logprob_gap_max`):
//! over every row with `"recompute"`, over the mini-batches run before the step's first
//! update with `"sampler"` (no extra forward).
//!
//! Zero-variance groups (`zero_variance`) are dropped, kept with advantage 0, or — DAPO's
//! dynamic sampling (arXiv 2503.14476, §3.2) — replaced by groups of further rollout rounds
//! ([`Trainer::step_with`] and its [`MoreFn`]) until the batch is full or
//! `resample_max_rounds` rounds were drawn.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use memfactory_core::{Error, LanguageModel, Result, seed};
use memfactory_lm_burn::train::{Decoder, PREFIX_MIN_TOKENS};
use memfactory_lm_burn::{BurnLm, TrainModel};
use serde::Serialize;

use crate::advantage;
use crate::checkpoint::{self, CheckpointState};
use crate::config::{OldLogprobs, TrainConfig, ZeroVariance};
use crate::loss::{LossInputs, aggregation_weights, grpo_loss_weighted};
use crate::optim::Optim;
use crate::reward::{CompositeReward, RewardBreakdown};
use crate::rollout::{Group, Row, RowOptions, build_rows_scored, score_groups};

/// Mean and (population) standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
}

impl MeanStd {
    fn of(v: impl IntoIterator<Item = f64>) -> Self {
        let v: Vec<f64> = v.into_iter().collect();
        if v.is_empty() {
            return MeanStd::default();
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        MeanStd {
            mean,
            std: var.sqrt(),
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// Step index (0-based).
    pub step: usize,
    /// Total reward over episodes.
    pub reward: MeanStd,
    /// Each reward component (unweighted) over episodes.
    pub reward_components: BTreeMap<String, MeanStd>,
    /// Mean loss over micro-batches.
    pub loss: f64,
    /// Mean k3 KL over micro-batches.
    pub kl: f64,
    /// Mean clip fraction over micro-batches.
    pub clip_fraction: f64,
    /// Clip fraction of the last PPO epoch (non-zero once the policy has moved).
    pub clip_fraction_last_epoch: f64,
    /// Mean ratio over micro-batches.
    pub ratio: f64,
    /// Mean pre-clip global gradient norm over optimizer updates.
    pub grad_norm: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Optimizer updates made.
    pub updates: usize,
    /// Training rows.
    pub rows: usize,
    /// Groups skipped for zero reward variance (no rows).
    pub skipped_groups: usize,
    /// Groups of the trained batch whose rewards had zero variance (skipped, or kept with
    /// advantage 0).
    pub zero_variance_groups: usize,
    /// `zero_variance = "resample"`: extra rollout rounds drawn this step.
    pub resample_rounds: usize,
    /// `zero_variance = "resample"`: zero-variance groups left out of the batch.
    pub resample_dropped_groups: usize,
    /// Mean |sampler − trainer| log-prob over the action tokens compared (the trainer's
    /// forward before the step's first update, at the rollout temperature).
    pub logprob_gap_mean: f64,
    /// Largest such |Δ|.
    pub logprob_gap_max: f64,
    /// Action tokens compared for the gap.
    pub logprob_gap_tokens: usize,
    /// Mean fraction of tokens bounded by the dual-clip over micro-batches.
    pub dual_clip_fraction: f64,
    /// Mean fraction of tokens whose k3 term was clamped over micro-batches.
    pub kl_clamp_fraction: f64,
    /// Generated tokens per LM call.
    pub response_length: MeanStd,
    /// Longest generation.
    pub response_length_max: usize,
    /// Trained action tokens per second of update time.
    pub tokens_per_s: f64,
    /// Seconds spent in the rollout.
    pub rollout_s: f64,
    /// Seconds spent updating.
    pub update_s: f64,
}

/// Samples the groups of one step from the current policy: `(policy, step) → groups`.
pub type RolloutFn<'a> = dyn FnMut(&dyn LanguageModel, usize) -> Result<Vec<Group>> + 'a;

/// Samples further groups for `zero_variance = "resample"`: `(policy, step, round) →
/// groups`, round 1, 2, … — other samples than the step's own (and than each other round's),
/// chosen deterministically from the step and round so that a resumed run draws the same.
/// An empty answer ends the resampling.
pub type MoreFn<'a> = dyn FnMut(&dyn LanguageModel, usize, usize) -> Result<Vec<Group>> + 'a;

/// Sampler-vs-trainer log-prob gap accumulator.
#[derive(Debug, Clone, Copy, Default)]
struct Gap {
    sum: f64,
    max: f64,
    n: usize,
}

impl Gap {
    fn add(&mut self, sampler: &[f32], trainer: &[f32]) {
        for (a, b) in sampler.iter().zip(trainer) {
            let d = (*a as f64 - *b as f64).abs();
            self.sum += d;
            self.max = self.max.max(d);
            self.n += 1;
        }
    }
}

/// The GRPO trainer.
pub struct Trainer {
    /// Settings.
    pub cfg: TrainConfig,
    reward: CompositeReward,
    lm: Arc<BurnLm>,
    model: Option<TrainModel>,
    reference: Option<TrainModel>,
    optim: Optim<Decoder>,
    step: usize,
    metrics_path: Option<PathBuf>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

impl Trainer {
    /// A trainer for policy `lm` (its inference weights are replaced after every step, so
    /// every holder of the `Arc` samples from the current policy). With `run_dir`, metrics
    /// are appended to `run_dir/metrics.jsonl` (the directory is created).
    pub fn new(
        lm: Arc<BurnLm>,
        cfg: TrainConfig,
        reward: CompositeReward,
        run_dir: Option<&Path>,
    ) -> Result<Trainer> {
        let sharing = cfg.prefix_sharing.then_some(PREFIX_MIN_TOKENS);
        let mut model = TrainModel::new(&lm, cfg.lora.as_ref())?;
        model.set_prefix_sharing(sharing);
        let reference = if cfg.loss.kl_beta > 0.0 {
            let mut r = TrainModel::frozen(&lm)?;
            r.set_prefix_sharing(sharing);
            Some(r)
        } else {
            None
        };
        let metrics_path = match run_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(d))?;
                Some(d.join("metrics.jsonl"))
            }
            None => None,
        };
        Ok(Trainer {
            optim: Optim::new(cfg.optim.clone()),
            cfg,
            reward,
            lm,
            model: Some(model),
            reference,
            step: 0,
            metrics_path,
        })
    }

    /// The current policy (sample rollouts from it).
    pub fn lm(&self) -> &Arc<BurnLm> {
        &self.lm
    }

    /// Optimizer updates done.
    pub fn updates_done(&self) -> usize {
        self.optim.updates
    }

    /// Writes a checkpoint of the policy, the optimizer and `extra` (the caller's state)
    /// under `root` (see [`checkpoint`]); keeps the newest `keep`.
    pub fn checkpoint(
        &self,
        root: &Path,
        keep: usize,
        extra: serde_json::Value,
    ) -> Result<PathBuf> {
        let model = self.model.as_ref().expect("model present");
        checkpoint::write(
            root,
            &model.decoder,
            self.optim.record(),
            CheckpointState {
                format: checkpoint::FORMAT,
                step: self.step,
                updates: self.optim.updates,
                lora: self.cfg.lora.clone(),
                params: Vec::new(),
                extra,
            },
            keep,
        )
    }

    /// Continues from the checkpoint directory `dir`: trainable weights, optimizer state and
    /// step count; returns the caller's state saved with it.
    pub fn restore(&mut self, dir: &Path) -> Result<serde_json::Value> {
        let loaded = checkpoint::read(dir)?;
        self.restore_loaded(loaded, dir)
    }

    /// [`Trainer::restore`] from a checkpoint already read (and verified) by
    /// [`checkpoint::read`]. With a run directory, `metrics.jsonl` keeps only the steps
    /// before the checkpoint's. On error the trainer is unchanged.
    pub fn restore_loaded(
        &mut self,
        mut loaded: checkpoint::Loaded,
        dir: &Path,
    ) -> Result<serde_json::Value> {
        if loaded.state.lora != self.cfg.lora {
            return Err(Error::config(
                "train.lora",
                format!(
                    "the checkpoint {} was trained with LoRA {:?}, the recipe asks for {:?}",
                    dir.display(),
                    loaded.state.lora,
                    self.cfg.lora
                ),
            ));
        }
        let model = self.model.as_ref().expect("model present");
        loaded.check_fits(&model.decoder, dir)?;
        let TrainModel { decoder, device } = self.model.take().expect("model present");
        let decoder = loaded.restore_into(decoder, dir)?;
        let mut model = TrainModel { decoder, device };
        model.set_prefix_sharing(self.cfg.prefix_sharing.then_some(PREFIX_MIN_TOKENS));
        self.model = Some(model);
        let optim = std::mem::take(&mut loaded.optim);
        self.optim.load_record(optim, loaded.state.updates);
        self.step = loaded.state.step;
        self.lm
            .set_weights(self.model.as_ref().expect("model present"))?;
        if let Some(p) = &self.metrics_path {
            let done = self.step;
            checkpoint::truncate_log(p, |s| s < done)?;
        }
        Ok(loaded.state.extra)
    }

    /// Sets the number of steps done (the schedule and seeds follow it).
    pub fn set_steps_done(&mut self, step: usize) {
        self.step = step;
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// One training step: `rollout(policy, step)` returns the groups sampled from the
    /// current policy; the trainer updates on them.
    pub fn step(&mut self, rollout: &mut RolloutFn<'_>) -> Result<StepMetrics> {
        self.step_with(rollout, None)
    }

    /// [`Trainer::step`] with a source of further groups for `zero_variance = "resample"`
    /// (required then): groups whose rewards have zero variance are left out and `more`
    /// rolls out further rounds until the step has as many groups with signal as the first
    /// round had, or `resample_max_rounds` rounds were drawn; groups beyond that count are
    /// not trained on. The logged `reward` covers every group rolled out in the step.
    pub fn step_with(
        &mut self,
        rollout: &mut RolloutFn<'_>,
        more: Option<&mut MoreFn<'_>>,
    ) -> Result<StepMetrics> {
        let t = Instant::now();
        let groups = rollout(self.lm.as_ref(), self.step)?;
        let scores = score_groups(&groups, &self.reward)?;
        let (groups, scores, all_scores, rounds, dropped) = match self.cfg.zero_variance {
            ZeroVariance::Resample { max_rounds } => {
                let Some(more) = more else {
                    return Err(Error::config(
                        "train.zero_variance",
                        "\"resample\" needs a rollout that can draw further groups \
                         (Trainer::step_with with a MoreFn); use \"drop\" or \"keep\" here",
                    ));
                };
                let wanted = groups.len();
                let mut all_scores = scores.clone();
                let mut kept: Vec<(Group, Vec<RewardBreakdown>)> = Vec::new();
                let mut dropped = 0usize;
                let mut take =
                    |gs: Vec<Group>,
                     ss: Vec<Vec<RewardBreakdown>>,
                     kept: &mut Vec<(Group, Vec<RewardBreakdown>)>| {
                        for (g, s) in gs.into_iter().zip(ss) {
                            let totals: Vec<f32> = s.iter().map(|b| b.total).collect();
                            let signal = advantage::group_advantages(
                                &totals,
                                self.cfg.advantage,
                                self.cfg.adv_eps,
                            )
                            .is_some();
                            if signal && kept.len() < wanted {
                                kept.push((g, s));
                            } else {
                                dropped += 1;
                            }
                        }
                    };
                take(groups, scores, &mut kept);
                let mut rounds = 0;
                while kept.len() < wanted && rounds < max_rounds {
                    rounds += 1;
                    let extra = more(self.lm.as_ref(), self.step, rounds)?;
                    if extra.is_empty() {
                        break;
                    }
                    let s = score_groups(&extra, &self.reward)?;
                    all_scores.extend(s.iter().cloned());
                    take(extra, s, &mut kept);
                }
                let (groups, scores): (Vec<Group>, Vec<_>) = kept.into_iter().unzip();
                (groups, scores, all_scores, rounds, dropped)
            }
            _ => {
                let all = scores.clone();
                (groups, scores, all, 0, 0)
            }
        };
        let rollout_s = t.elapsed().as_secs_f64();
        let mut m = self.train_scored(&groups, scores, &all_scores)?;
        m.rollout_s = rollout_s;
        m.resample_rounds = rounds;
        m.resample_dropped_groups = dropped;
        self.append_metrics(&m)?;
        Ok(m)
    }

    fn append_metrics(&self, m: &StepMetrics) -> Result<()> {
        let Some(p) = &self.metrics_path else {
            return Ok(());
        };
        let mut line = serde_json::to_string(m).map_err(|e| Error::Invalid(e.to_string()))?;
        line.push('\n');
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(io(p))?;
        // One write: a kill leaves a whole line or a torn last one, never a line cut between
        // the record and its newline that a later append would run on from.
        f.write_all(line.as_bytes()).map_err(io(p))
    }

    /// The trainer's log-probs of every row's actions (no gradient kept), at each row's
    /// temperature, in chunks bounded like the micro-batches (rows sorted so that those
    /// sharing a prompt run together; the result is in `rows`' order).
    fn trainer_logprobs(&self, rows: &[Row]) -> Result<Vec<Vec<f32>>> {
        let model = self.model.as_ref().expect("model present");
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| {
            rows[a]
                .temperature
                .total_cmp(&rows[b].temperature)
                .then_with(|| row_key(&rows[a]).cmp(&row_key(&rows[b])))
        });
        let sorted: Vec<&Row> = order.iter().map(|&i| &rows[i]).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); rows.len()];
        let mut start = 0;
        while start < sorted.len() {
            let temp = sorted[start].temperature;
            let end = start + sorted[start..].partition_point(|r| r.temperature == temp);
            for range in self.chunks(&sorted[start..end]) {
                let part = &sorted[start + range.start..start + range.end];
                let batch: Vec<(Vec<u32>, Vec<u32>)> = part
                    .iter()
                    .map(|r| (r.prompt_ids.clone(), r.action_ids.clone()))
                    .collect();
                let lp = model.action_logprobs(&batch, temp)?.logprobs.detach();
                let [_, am] = lp.dims();
                let v: Vec<f32> = lp
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| Error::backend("burn", format!("reading tensor: {e:?}")))?;
                for (k, r) in part.iter().enumerate() {
                    out[order[start + range.start + k]] =
                        v[k * am..k * am + r.action_ids.len()].to_vec();
                }
            }
            start = end;
        }
        Ok(out)
    }

    /// Splits `rows` (in order) into forward/backward chunks of at most `micro_batch_tokens`
    /// tokens, at least one row each: packed tokens on the fused path (a row's prefix shared
    /// with the row before it counted once, when sharing is on), rows × longest row elsewhere.
    fn chunks(&self, rows: &[&Row]) -> Vec<std::ops::Range<usize>> {
        let model = self.model.as_ref().expect("model present");
        let packed = model.decoder.fused;
        let min_shared = model.decoder.prefix_min_tokens;
        let budget = self.cfg.micro_batch_tokens.max(1);
        let mut chunks = Vec::new();
        // The open chunk [start, i): its longest row and its packed tokens.
        let (mut start, mut longest, mut tokens) = (0usize, 0usize, 0usize);
        for (i, r) in rows.iter().enumerate() {
            let len = r.prompt_ids.len() + r.action_ids.len() - 1;
            let shared = if packed && min_shared > 0 && i > start {
                let l = common_prefix(rows[i - 1], r).min(len - 1);
                if l >= min_shared { l } else { 0 }
            } else {
                0
            };
            let (l, t) = (longest.max(len), tokens + len - shared);
            let cost = if packed { t } else { l * (i + 1 - start) };
            if i > start && cost > budget {
                chunks.push(start..i);
                (start, longest, tokens) = (i, len, len);
            } else {
                (longest, tokens) = (l, t);
            }
        }
        if start < rows.len() {
            chunks.push(start..rows.len());
        }
        chunks
    }

    fn micro_batch(
        &mut self,
        rows: &[&Row],
        gap: Option<&mut Gap>,
    ) -> Result<(crate::loss::LossStats, f32)> {
        let mut gap = gap;
        let temp = rows[0].temperature;
        if rows.iter().any(|r| r.temperature != temp) {
            return Err(Error::Invalid(
                "rows of one mini-batch were sampled at different temperatures".into(),
            ));
        }
        // Rows that share a prompt next to each other (their prefix then runs once per chunk);
        // the loss weights below follow this order, so only float summation order changes.
        let mut rows = rows.to_vec();
        if self.cfg.prefix_sharing {
            rows.sort_by(|a, b| row_key(a).cmp(&row_key(b)));
        }
        let rows = &rows[..];
        // Aggregation weights of the whole mini-batch, then forward/backward in chunks of
        // rows small enough for memory.
        let n = rows.len();
        let amax = rows.iter().map(|r| r.action_ids.len()).max().unwrap_or(1);
        let mut mask_all = vec![0f32; n * amax];
        for (i, r) in rows.iter().enumerate() {
            mask_all[i * amax..i * amax + r.action_ids.len()].fill(1.0);
        }
        let w_all = aggregation_weights(&mask_all, n, amax, self.cfg.loss.aggregation);
        let chunks = self.chunks(rows);

        let (mut loss_sum, mut tokens) = (0f64, 0usize);
        let (mut clip_w, mut kl_w, mut ratio_w) = (0f64, 0f64, 0f64);
        let (mut dual_w, mut klc_w) = (0f64, 0f64);
        for range in chunks {
            let part = &rows[range.clone()];
            let batch: Vec<(Vec<u32>, Vec<u32>)> = part
                .iter()
                .map(|r| (r.prompt_ids.clone(), r.action_ids.clone()))
                .collect();
            let model = self.model.as_ref().expect("model present");
            let out = model.action_logprobs(&batch, temp)?;
            let [b, am] = out.logprobs.dims();
            if let Some(g) = gap.as_deref_mut() {
                let v: Vec<f32> = out
                    .logprobs
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| Error::backend("burn", format!("reading tensor: {e:?}")))?;
                for (k, r) in part.iter().enumerate() {
                    g.add(&r.old_logprobs, &v[k * am..k * am + r.action_ids.len()]);
                }
            }
            let device = out.logprobs.device();
            let mut old = vec![0f32; b * am];
            let mut adv = vec![0f32; b * am];
            let mut w = vec![0f32; b * am];
            for (k, r) in part.iter().enumerate() {
                let i = range.start + k;
                old[k * am..k * am + r.old_logprobs.len()].copy_from_slice(&r.old_logprobs);
                adv[k * am..(k + 1) * am].fill(r.advantage);
                w[k * am..(k + 1) * am].copy_from_slice(&w_all[i * amax..i * amax + am]);
            }
            let ref_logprobs = match &self.reference {
                Some(rm) => Some(rm.action_logprobs(&batch, temp)?.logprobs.detach()),
                None => None,
            };
            let out_loss = grpo_loss_weighted(
                LossInputs {
                    logprobs: out.logprobs,
                    old_logprobs: Tensor::from_data(TensorData::new(old, [b, am]), &device),
                    ref_logprobs,
                    advantages: Tensor::from_data(TensorData::new(adv, [b, am]), &device),
                    mask: out.mask,
                },
                &self.cfg.loss,
                w,
            )?;
            let loss_v: f32 = out_loss.loss.clone().into_scalar();
            if !loss_v.is_finite() {
                return Err(Error::backend(
                    "memfactory-rl",
                    format!(
                        "loss is {loss_v} at step {}: training stopped before the update",
                        self.step
                    ),
                ));
            }
            let model = self.model.as_ref().expect("model present");
            let grads = GradientsParams::from_grads(out_loss.loss.backward(), &model.decoder);
            self.optim.accumulate_part(&model.decoder, grads);
            loss_sum += loss_v as f64;
            let st = out_loss.stats;
            let t = st.tokens as f64;
            tokens += st.tokens;
            clip_w += st.clip_fraction as f64 * t;
            kl_w += st.kl_mean as f64 * t;
            ratio_w += st.ratio_mean as f64 * t;
            dual_w += st.dual_clip_fraction as f64 * t;
            klc_w += st.kl_clamp_fraction as f64 * t;
        }
        self.optim.end_micro_batch();
        let t = tokens.max(1) as f64;
        Ok((
            crate::loss::LossStats {
                clip_fraction: (clip_w / t) as f32,
                dual_clip_fraction: (dual_w / t) as f32,
                kl_clamp_fraction: (klc_w / t) as f32,
                kl_mean: (kl_w / t) as f32,
                ratio_mean: (ratio_w / t) as f32,
                tokens,
            },
            loss_sum as f32,
        ))
    }

    fn apply_update(&mut self, grad_norms: &mut Vec<f64>) -> Result<()> {
        let tm = self.model.take().expect("model present");
        let TrainModel { decoder, device } = tm;
        let (decoder, info) = self.optim.update(decoder, self.step);
        self.model = Some(TrainModel { decoder, device });
        if let Some(i) = info {
            if !i.applied {
                return Err(Error::backend(
                    "memfactory-rl",
                    format!(
                        "gradient norm is {} at step {}: update skipped, training stopped",
                        i.grad_norm, self.step
                    ),
                ));
            }
            grad_norms.push(i.grad_norm as f64);
        }
        Ok(())
    }

    /// Updates the policy on `groups` (already sampled from it): rows, `ppo_epochs` ×
    /// shuffled mini-batches, optimizer updates, then refreshes the inference weights.
    pub fn train_on(&mut self, groups: &[Group]) -> Result<StepMetrics> {
        let scores = score_groups(groups, &self.reward)?;
        let all = scores.clone();
        self.train_scored(groups, scores, &all)
    }

    /// [`Trainer::train_on`] with the groups' rewards already scored (`scores[g][t]`);
    /// `all_scores` are the rewards logged (every group rolled out in the step).
    fn train_scored(
        &mut self,
        groups: &[Group],
        scores: Vec<Vec<RewardBreakdown>>,
        all_scores: &[Vec<RewardBreakdown>],
    ) -> Result<StepMetrics> {
        let t = Instant::now();
        let mut batch = build_rows_scored(
            groups,
            scores,
            &RowOptions {
                advantage: self.cfg.advantage,
                eps: self.cfg.adv_eps,
                mask_final_turn: self.cfg.mask_final_turn,
                roles: self.cfg.roles.clone(),
                keep_zero_variance: self.cfg.zero_variance == ZeroVariance::Keep,
            },
        )?;
        let mut gap = Gap::default();
        let recompute = self.cfg.old_logprobs == OldLogprobs::Recompute;
        if recompute && !batch.rows.is_empty() {
            let fresh = self.trainer_logprobs(&batch.rows)?;
            for (r, f) in batch.rows.iter_mut().zip(fresh) {
                gap.add(&r.old_logprobs, &f);
                r.old_logprobs = f;
            }
        }
        let (mut losses, mut kls, mut clips, mut ratios, mut last_clips) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut duals, mut klcs) = (Vec::new(), Vec::new());
        let mut grad_norms = Vec::new();
        let mut tokens = 0usize;
        let updates_before = self.optim.updates;
        let n = batch.rows.len();
        if n > 0 {
            for epoch in 0..self.cfg.ppo_epochs {
                let order = shuffled(
                    n,
                    seed::derive_n(
                        seed::derive_n(self.cfg.seed, self.step as u64),
                        epoch as u64,
                    ),
                );
                for chunk in order.chunks(self.cfg.mini_batch_size) {
                    let rows: Vec<&Row> = chunk.iter().map(|&i| &batch.rows[i]).collect();
                    // Before the step's first update the forward is the sampling policy's.
                    let pre_update = !recompute && self.optim.updates == updates_before;
                    let (stats, loss) = self.micro_batch(&rows, pre_update.then_some(&mut gap))?;
                    duals.push(stats.dual_clip_fraction as f64);
                    klcs.push(stats.kl_clamp_fraction as f64);
                    losses.push(loss as f64);
                    kls.push(stats.kl_mean as f64);
                    clips.push(stats.clip_fraction as f64);
                    ratios.push(stats.ratio_mean as f64);
                    if epoch + 1 == self.cfg.ppo_epochs {
                        last_clips.push(stats.clip_fraction as f64);
                    }
                    tokens += stats.tokens;
                    if self.optim.ready() {
                        self.apply_update(&mut grad_norms)?;
                    }
                }
            }
            // Leftover micro-batches of an incomplete accumulation.
            self.apply_update(&mut grad_norms)?;
            let model = self.model.as_ref().expect("model present");
            self.lm.set_weights(model)?;
        }
        let update_s = t.elapsed().as_secs_f64();
        let mut components: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for b in all_scores.iter().flatten() {
            for (name, v) in &b.components {
                components.entry(name.clone()).or_default().push(*v as f64);
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let m = StepMetrics {
            step: self.step,
            reward: MeanStd::of(all_scores.iter().flatten().map(|b| b.total as f64)),
            reward_components: components
                .into_iter()
                .map(|(k, v)| (k, MeanStd::of(v)))
                .collect(),
            loss: mean(&losses),
            kl: mean(&kls),
            clip_fraction: mean(&clips),
            clip_fraction_last_epoch: mean(&last_clips),
            ratio: mean(&ratios),
            grad_norm: mean(&grad_norms),
            lr: self.cfg.optim.lr_at(self.step),
            updates: self.optim.updates - updates_before,
            rows: n,
            skipped_groups: batch.skipped_groups,
            zero_variance_groups: batch.zero_variance_groups,
            resample_rounds: 0,
            resample_dropped_groups: 0,
            logprob_gap_mean: gap.sum / gap.n.max(1) as f64,
            logprob_gap_max: gap.max,
            logprob_gap_tokens: gap.n,
            dual_clip_fraction: mean(&duals),
            kl_clamp_fraction: mean(&klcs),
            response_length: MeanStd::of(batch.response_lengths.iter().map(|&l| l as f64)),
            response_length_max: batch.response_lengths.iter().copied().max().unwrap_or(0),
            tokens_per_s: tokens as f64 / update_s.max(1e-9),
            rollout_s: 0.0,
            update_s,
        };
        self.step += 1;
        Ok(m)
    }
}

/// A permutation of `0..n` from `seed` (Fisher–Yates over SplitMix64).
/// The order rows are sorted in so that rows sharing a prompt prefix sit together.
fn row_key(r: &Row) -> (&[u32], &[u32]) {
    (&r.prompt_ids, &r.action_ids)
}

/// Tokens two rows' inputs (prompt ++ action without its last token) begin with alike.
fn common_prefix(a: &Row, b: &Row) -> usize {
    fn input(r: &Row) -> impl Iterator<Item = &u32> {
        let n = r.prompt_ids.len() + r.action_ids.len() - 1;
        r.prompt_ids.iter().chain(&r.action_ids).take(n)
    }
    input(a).zip(input(b)).take_while(|(x, y)| x == y).count()
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = seed::mix(s);
        let j = (s % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let a = super::shuffled(10, 3);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_eq!(a, super::shuffled(10, 3));
        assert_ne!(a, super::shuffled(10, 4));
    }
}
