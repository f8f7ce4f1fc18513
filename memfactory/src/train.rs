//! `memfactory train RECIPE [--resume]`: GRPO on the memory agent a recipe assembles.
//!
//! The recipe is an eval recipe plus a training split and a `[train]` table:
//!
//! ```toml
//! [model]                      # must be kind = "burn": the trainer updates its weights
//! [agent]                      # the agent as evaluated (dev eval, `memfactory eval`)
//! [data.train]                 # training samples
//! [data.dev]                   # optional: evaluated every `eval_every` steps
//! [train]                      # memfactory_rl::config::TrainConfig keys, plus:
//! checkpoint_every = 10        # steps between checkpoints (the last step always gets one)
//! keep_checkpoints = 3         # newest checkpoints kept
//! eval_every = 10              # steps between dev evals (0 = never); step 0 = the base model
//! eval_limit = 50              # dev samples evaluated
//! concurrency = 4              # samples rolled out together (default: samples_per_step)
//! save_rollouts = false        # append every episode to rollouts.jsonl
//! [train.agent]                # overrides merged over [agent] for rollouts, e.g.
//! answer = { temperature = 1.0 }   # sample; `paths` defaults to group_size
//! ```
//!
//! The run directory (`[run] out`, or `--out`) receives `recipe.resolved.toml`,
//! `metrics.jsonl` (one line per step, appended as it goes), `rollouts.jsonl` (with
//! `save_rollouts`: one line per episode), `reward.svg` (reward curve, redrawn every step),
//! `eval.jsonl` + `eval.svg` and `dev/step-NNNNNN/` eval directories,
//! `checkpoints/step-NNNNNN/` and, at the end, `summary.json` (its `evals` lists every dev
//! eval of the run, also those before a resume).
//!
//! Everything random derives from `[run] seed` and the step number (sample order per data
//! epoch, rollout seeds, mini-batch shuffles), so `--resume` from a checkpoint continues
//! exactly as if training had not stopped.
//!
//! A kill at any moment loses at most the steps since the newest checkpoint. `--resume`
//! takes the newest checkpoint whose files match their checksums (a damaged newer one is
//! reported and moved to `checkpoints/damaged-step-N`), cuts every per-step log back to
//! it — `metrics.jsonl` and `rollouts.jsonl` to the steps before it, `eval.jsonl` to the
//! evals up to it, whole lines only — removes the dev eval directories of later steps,
//! re-runs the checkpoint's own dev eval when the kill came before it finished, and goes
//! on. A kill-cut last line of any other JSONL file in the run directory (the judge's
//! verdict cache) is dropped. The test hook `MEMFACTORY_TEST_PAUSE_AFTER_CHECKPOINT=N`
//! makes a run sleep between checkpoint N and its dev eval, so that tests can kill it
//! there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use memfactory_core::{
    Cfg, Error, LanguageModel, LoadCx, Paradigm, Recipe, Result, Sample, registry, seed,
};
use memfactory_lm_burn::BurnLm;
use memfactory_rl::checkpoint;
pub use memfactory_rl::checkpoint::Integrity;
use memfactory_rl::config::{TrainConfig, ZeroVariance};
use memfactory_rl::reward::CompositeReward;
use memfactory_rl::rollout::Group;
use memfactory_rl::trainer::{StepMetrics, Trainer};
use serde::Serialize;

use crate::Assembly;
use crate::eval::{EvalSummary, Progress, run_eval_on, run_groups};
use crate::plot::{Series, line_chart};

/// The facade's own `[train]` keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSettings {
    /// Steps between checkpoints (0: only the last step).
    pub checkpoint_every: usize,
    /// Newest checkpoints kept.
    pub keep_checkpoints: usize,
    /// Steps between dev evals (0: never).
    pub eval_every: usize,
    /// Dev samples evaluated.
    pub eval_limit: Option<usize>,
    /// Samples rolled out together.
    pub concurrency: usize,
    /// Append every rollout episode to `rollouts.jsonl`.
    pub save_rollouts: bool,
}

/// A training run assembled from a recipe.
pub struct TrainJob {
    /// The recipe's components; `asm.model` is the engine below.
    pub asm: Assembly,
    /// The policy engine (shared with `asm.model`; its weights follow training).
    pub lm: Arc<BurnLm>,
    /// The agent that produces rollouts (`[agent]` with `[train.agent]` merged over it).
    pub rollout_agent: Box<dyn Paradigm>,
    /// GRPO settings.
    pub cfg: TrainConfig,
    /// The weighted reward.
    pub reward: CompositeReward,
    /// Checkpoint / eval / rollout settings.
    pub settings: TrainSettings,
}

/// What a training run reports while it goes.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// Training starts (or resumes) at step `done` of `steps`.
    Start {
        /// Total steps.
        steps: usize,
        /// Steps already done (resumed).
        done: usize,
        /// Training samples.
        train_samples: usize,
    },
    /// A message for the user.
    Note(String),
    /// One step finished.
    Step(Box<StepMetrics>),
    /// A dev eval finished after `step` steps.
    Eval {
        /// Steps done when evaluated.
        step: usize,
        /// Its summary.
        summary: Box<EvalSummary>,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Steps done.
        step: usize,
        /// Its directory.
        path: PathBuf,
    },
}

/// What a finished run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Steps done.
    pub steps: usize,
    /// The last checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// Metrics of the last step.
    pub last: Option<StepMetrics>,
    /// Dev evals of the run, also those before a resume: `(step, metric means)`.
    pub evals: Vec<(usize, std::collections::BTreeMap<String, f64>)>,
    /// Wall time of this invocation in seconds.
    pub seconds: f64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Recursively merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl TrainJob {
    /// Reads and assembles the recipe file at `path`.
    pub fn from_file(path: &Path) -> Result<TrainJob> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_recipe(&Recipe::parse(&text, &path.display().to_string())?)
    }

    /// The recipe's components with its `[model]` built as the concrete burn engine (for
    /// evaluating a checkpoint with [`apply_checkpoint`]); `[train]` is not required.
    pub fn model_only(path: &Path) -> Result<(Assembly, Arc<BurnLm>)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::model_only_recipe(&Recipe::parse(&text, &path.display().to_string())?)
    }

    /// [`TrainJob::model_only`] for a parsed (possibly overridden) recipe.
    pub fn model_only_recipe(recipe: &Recipe) -> Result<(Assembly, Arc<BurnLm>)> {
        burn_assembly(recipe)
    }

    /// Assembles a training run: the burn engine, the recipe's components, the rollout
    /// agent and the `[train]` settings, all checked before any work.
    pub fn from_recipe(recipe: &Recipe) -> Result<TrainJob> {
        let (asm, lm) = burn_assembly(recipe)?;
        Self::with_assembly(asm, lm)
    }

    fn with_assembly(asm: Assembly, lm: Arc<BurnLm>) -> Result<TrainJob> {
        let table = asm.train_table.clone().ok_or_else(|| {
            Error::config(
                "train",
                "missing table [train] (GRPO settings: steps, samples_per_step, group_size, rewards, ...)",
            )
        })?;
        let mut tcfg = Cfg::new("train", table);
        let checkpoint_every = tcfg.get("checkpoint_every", 10usize)?;
        let keep_checkpoints = tcfg.get_checked(
            "keep_checkpoints",
            3usize,
            |k| *k >= 1,
            "at least 1 checkpoint",
        )?;
        let eval_every = tcfg.get("eval_every", 0usize)?;
        let eval_limit: Option<usize> = tcfg.opt("eval_limit")?;
        let concurrency: Option<usize> = tcfg.opt("concurrency")?;
        let save_rollouts = tcfg.get("save_rollouts", false)?;
        let overrides = match tcfg.sub("agent")? {
            Some(c) => c.table().clone(),
            None => toml::Table::new(),
        };
        if !overrides.is_empty() {
            tcfg.set_resolved("agent", toml::Value::Table(overrides.clone()));
        }
        if concurrency == Some(0) {
            return Err(tcfg.error("concurrency", "expected a positive number of samples"));
        }
        let (cfg, reward, _resolved) = TrainConfig::from_cfg(tcfg)?;

        if asm.train_data.is_none() {
            return Err(Error::config(
                "data.train",
                "missing table [data.train]: the samples to train on (a dataset with a `kind`)",
            ));
        }
        if eval_every > 0 && asm.dev_data.is_none() {
            return Err(Error::config(
                "train.eval_every",
                "periodic evaluation needs a [data.dev] table (or set eval_every = 0)",
            ));
        }
        check_disjoint_splits(&asm.resolved)?;

        // The eval agent's `paths` (avg@k) does not carry over: a rollout group has
        // group_size episodes.
        let mut agent_table = asm.agent_table.clone();
        agent_table.remove("paths");
        merge(&mut agent_table, &overrides);
        if let Some(p) = agent_table.get("paths") {
            if p.as_integer() != Some(cfg.group_size as i64) {
                return Err(Error::config(
                    "train.group_size",
                    format!(
                        "the rollout agent runs {p} paths per sample but group_size is {}: each path is one episode of the group (drop `paths` from [train.agent] to use group_size)",
                        cfg.group_size
                    ),
                ));
            }
        } else {
            agent_table.insert("paths".into(), toml::Value::Integer(cfg.group_size as i64));
        }
        let (rollout_agent, _) =
            registry::build::<dyn Paradigm>(Cfg::new("train.agent", agent_table))?;
        if rollout_agent.caches_across_samples() {
            return Err(Error::config(
                "train.agent",
                format!(
                    "the rollout agent `{}` reuses work across samples (e.g. `bank_cache = true`), \
                     which would keep memory built by old weights after an update; turn that \
                     off for training (e.g. `[train.agent] bank_cache = false`)",
                    rollout_agent.kind()
                ),
            ));
        }
        check_trainable_roles(&cfg.roles, rollout_agent.as_ref())?;
        if rollout_agent.paths() != cfg.group_size {
            return Err(Error::config(
                "train.group_size",
                format!(
                    "the rollout agent runs {} paths per sample, group_size is {}",
                    rollout_agent.paths(),
                    cfg.group_size
                ),
            ));
        }
        let settings = TrainSettings {
            checkpoint_every,
            keep_checkpoints,
            eval_every,
            eval_limit,
            concurrency: concurrency.unwrap_or(cfg.samples_per_step),
            save_rollouts,
        };
        Ok(TrainJob {
            asm,
            lm,
            rollout_agent,
            cfg,
            reward,
            settings,
        })
    }
}

/// `[train] roles` may name only roles the policy plays. A role the rollout agent serves
/// with an op's own model ([`Paradigm::frozen_roles`]) is refused here, before any rollout
/// (`memfactory check` and `memfactory train` both assemble through this); the rollout
/// step keeps its own check on the recorded calls as a backstop.
fn check_trainable_roles(roles: &[String], agent: &dyn Paradigm) -> Result<()> {
    let frozen = agent.frozen_roles();
    for role in roles {
        if let Some((_, model)) = frozen.iter().find(|(r, _)| r == role) {
            return Err(Error::config(
                "train.roles",
                format!(
                    "role `{role}` of the rollout agent `{}` is served by its own model \
                     (`{model}`), not the policy being trained: that model is frozen and its \
                     tokens are not sampled from the policy; remove `{role}` from train.roles \
                     (or drop that op's `model` table to let the policy play the role)",
                    agent.kind()
                ),
            ));
        }
    }
    Ok(())
}

/// The training split must not hold questions the dev or eval split scores. Splits whose ids
/// cannot be known before loading are compared by id when they load (`run_train`); here,
/// before anything loads, `ruler-hqa` splits over the same file are refused when their
/// record ranges (`offset .. offset + limit`) overlap. The error names both keys.
fn check_disjoint_splits(resolved: &toml::Table) -> Result<()> {
    let split = |name: &str| {
        resolved
            .get("data")
            .and_then(|d| d.get(name))
            .and_then(|t| t.as_table())
    };
    // (file, first record, one past the last record) of a ruler-hqa split.
    let range = |t: &toml::Table| -> Option<(PathBuf, u64, u64)> {
        if t.get("kind")?.as_str()? != "ruler-hqa" {
            return None;
        }
        let path = t.get("path")?.as_str()?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
        let offset = t.get("offset").and_then(|v| v.as_integer()).unwrap_or(0) as u64;
        let end = match t.get("limit").and_then(|v| v.as_integer()) {
            Some(l) => offset.saturating_add(l as u64),
            None => u64::MAX,
        };
        Some((path, offset, end))
    };
    let show = |a: u64, b: u64| match b {
        u64::MAX => format!("records {a}.."),
        b => format!("records {a}..{b}"),
    };
    let Some((file, t0, t1)) = split("train").and_then(range) else {
        return Ok(());
    };
    for other in ["dev", "eval"] {
        let Some((f, o0, o1)) = split(other).and_then(range) else {
            continue;
        };
        if f == file && t0 < o1 && o0 < t1 {
            return Err(Error::config(
                format!("data.{other}"),
                format!(
                    "data.train ({}) and data.{other} ({}) take questions from the same file {}: \
                     training would see questions the {other} split scores; make the ranges \
                     disjoint with `offset` / `limit` (MemAgent evaluates on dev records 0..200: \
                     train with data.train.offset = 200)",
                    show(t0, t1),
                    show(o0, o1),
                    file.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The recipe's components with `[model]` built as the burn engine (shared with the
/// assembly, so weight updates reach every user).
fn burn_assembly(recipe: &Recipe) -> Result<(Assembly, Arc<BurnLm>)> {
    let mut root = recipe.cfg();
    let mut mcfg = root.sub("model")?.ok_or_else(|| {
        Error::config(
            "model",
            "missing table [model]; training needs kind = \"burn\" with a `path`",
        )
    })?;
    let kind: String = mcfg.req("kind")?;
    if kind != "burn" {
        return Err(mcfg.error(
            "kind",
            format!(
                "training updates the weights of the native engine: expected \"burn\", found {kind:?}"
            ),
        ));
    }
    let lm = Arc::new(memfactory_lm_burn::from_cfg(&mut mcfg)?);
    let mut model_table = toml::Table::new();
    model_table.insert("kind".into(), toml::Value::String(kind));
    model_table.extend(mcfg.finish()?);
    let shared: Arc<dyn LanguageModel> = lm.clone();
    let asm = Assembly::from_recipe_with_model(recipe, Some((shared, model_table)))?;
    Ok((asm, lm))
}

/// Index of the sample at global position `pos` of the training stream: each pass over
/// the `n` samples (a data epoch) is a fresh seeded permutation.
pub fn sample_at(run_seed: u64, n: usize, pos: usize) -> usize {
    let epoch = pos / n;
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = seed::derive_n(seed::derive(run_seed, "train-order"), epoch as u64);
    for i in (1..n).rev() {
        s = seed::mix(s);
        let j = (s % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order[pos % n]
}

fn append_line<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut line = serde_json::to_string(v).map_err(|e| Error::Invalid(e.to_string()))?;
    line.push('\n');
    let mut f: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(line.as_bytes()).map_err(io(path))
}

/// The test hook behind `MEMFACTORY_TEST_PAUSE_AFTER_CHECKPOINT=N`: once checkpoint N is
/// written the run sleeps (10 minutes) before that step's dev eval, so a test can kill it at
/// exactly that moment. Unset (always, outside tests) it does nothing.
fn test_pause_after_checkpoint(step: usize) {
    let wanted = std::env::var("MEMFACTORY_TEST_PAUSE_AFTER_CHECKPOINT")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok());
    if wanted == Some(step) {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

/// `(step, metric means)` of each line of `eval.jsonl`.
fn read_evals(path: &Path) -> Vec<(usize, std::collections::BTreeMap<String, f64>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let step = usize::try_from(v.get("step")?.as_u64()?).ok()?;
            let metrics = v
                .get("metrics")?
                .as_object()?
                .iter()
                .map(|(k, m)| (k.clone(), m.as_f64().unwrap_or(f64::NAN)))
                .collect();
            Some((step, metrics))
        })
        .collect()
}

/// The `dev/step-N/` directories under `dev` with their steps.
fn dev_dirs(dev: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let rd = match std::fs::read_dir(dev) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dev, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io(dev))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|n| n.parse().ok()) {
            out.push((step, ent.path()));
        }
    }
    Ok(out)
}

/// The newest checkpoint of `all` (oldest first) that reads back intact. Each damaged newer
/// one is reported and moved aside ([`checkpoint::set_aside`]). `None` when none is intact.
fn newest_intact(
    all: &[(usize, PathBuf)],
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Option<(PathBuf, checkpoint::Loaded)>> {
    for (_, p) in all.iter().rev() {
        match checkpoint::read(p) {
            Ok(loaded) => return Ok(Some((p.clone(), loaded))),
            // Damage: a file that fails its checksum or does not parse, or is missing or
            // cut short. Any other failure (permissions, a full disk) is no reason to skip
            // the checkpoint.
            Err(e)
                if matches!(&e, Error::Model { .. })
                    || matches!(&e, Error::Io { source, .. } if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound
                            | std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::InvalidData
                    )) =>
            {
                let aside = checkpoint::set_aside(p)?;
                progress(TrainEvent::Note(format!(
                    "warning: checkpoint {} is damaged ({e}); moved it to {} and falling back to an older checkpoint",
                    p.display(),
                    aside.display()
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Redraws `reward.svg` from `metrics.jsonl`.
fn plot_rewards(out: &Path) -> Result<()> {
    let mp = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&mp).unwrap_or_default();
    let mut total = Series::line("reward (mean ± std)", Vec::new());
    let mut comps: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0) + 1.0;
        let (m, s) = (
            v["reward"]["mean"].as_f64().unwrap_or(f64::NAN),
            v["reward"]["std"].as_f64().unwrap_or(0.0),
        );
        total.points.push((step, m));
        total.band.push((step, m - s, m + s));
        if let Some(c) = v["reward_components"].as_object() {
            for (k, cv) in c {
                comps
                    .entry(k.clone())
                    .or_default()
                    .push((step, cv["mean"].as_f64().unwrap_or(f64::NAN)));
            }
        }
    }
    let mut series = vec![total];
    series.extend(comps.into_iter().map(|(k, p)| Series::line(k, p)));
    line_chart(
        &out.join("reward.svg"),
        "Training reward per step",
        "step",
        "reward",
        &series,
    )
}

/// Redraws `eval.svg` from `eval.jsonl`.
fn plot_evals(out: &Path) -> Result<()> {
    let ep = out.join("eval.jsonl");
    let text = std::fs::read_to_string(&ep).unwrap_or_default();
    let mut by: std::collections::BTreeMap<String, Series> = Default::default();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(m) = v["metrics"].as_object() {
            for (k, mv) in m {
                let y = mv.as_f64().unwrap_or(f64::NAN);
                let c = v["ci95"][k].as_f64().unwrap_or(0.0);
                let s = by
                    .entry(k.clone())
                    .or_insert_with(|| Series::line(format!("{k} (95% CI)"), Vec::new()));
                s.points.push((step, y));
                s.band.push((step, y - c, y + c));
            }
        }
    }
    let series: Vec<Series> = by.into_values().collect();
    line_chart(
        &out.join("eval.svg"),
        "Dev evaluation during training",
        "training step",
        "score",
        &series,
    )
}

/// The resolved recipe without keys that may change between a run and its resumption.
fn comparable_recipe(text: &str) -> Option<toml::Table> {
    let mut t: toml::Table = toml::from_str(text).ok()?;
    if let Some(toml::Value::Table(tr)) = t.get_mut("train") {
        for k in [
            "steps",
            "checkpoint_every",
            "keep_checkpoints",
            "eval_every",
        ] {
            tr.remove(k);
        }
    }
    t.remove("eval");
    Some(t)
}

/// Trains: rollouts from the current policy, GRPO updates, checkpoints, dev evals, plots.
/// With `resume`, continues from the newest checkpoint under `out/checkpoints`.
pub fn run_train(
    job: TrainJob,
    out: &Path,
    resume: bool,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<TrainSummary> {
    let start = Instant::now();
    let TrainJob {
        asm,
        lm,
        rollout_agent,
        cfg,
        reward,
        settings,
    } = job;
    let asm = &asm;
    // Data first: a missing or malformed split fails before the run directory is touched.
    let cx = LoadCx {
        tokenizer: Some(asm.model.as_ref()),
    };
    let train: Vec<Sample> = match &asm.train_data {
        Some(d) => d.load(&cx)?,
        None => Vec::new(),
    };
    let spp = cfg.samples_per_step;
    if train.len() < spp {
        return Err(Error::config(
            "data.train",
            format!(
                "{} training samples, fewer than train.samples_per_step = {spp}",
                train.len()
            ),
        ));
    }
    let dev: Vec<Sample> = match (&asm.dev_data, settings.eval_every) {
        (Some(d), e) if e > 0 => {
            let mut v = d.load(&cx)?;
            if let Some(l) = settings.eval_limit {
                v.truncate(l);
            }
            let train_ids: std::collections::HashSet<&str> =
                train.iter().map(|s| s.id.as_str()).collect();
            let leaked: Vec<&str> = v
                .iter()
                .map(|s| s.id.as_str())
                .filter(|id| train_ids.contains(id))
                .collect();
            if let Some(first) = leaked.first() {
                return Err(Error::config(
                    "data.dev",
                    format!(
                        "{} dev samples share their id with samples of data.train (first: {first}): \
                         the dev split must hold out the questions the model trains on; make \
                         data.train and data.dev disjoint",
                        leaked.len()
                    ),
                ));
            }
            v
        }
        _ => Vec::new(),
    };

    std::fs::create_dir_all(out).map_err(io(out))?;
    // A dataset that records how it chose its samples (ruler-hqa's closed-book filter: the
    // kept ids) writes the record into the run directory.
    for d in [&asm.train_data, &asm.dev_data].into_iter().flatten() {
        d.attach_run_dir(out)?;
    }
    if resume {
        // A kill may have cut the last line of any JSONL file the run appends to (the
        // judge's verdict cache among them, read below): keep whole lines only, so that the
        // next append starts a line of its own.
        let rd = std::fs::read_dir(out).map_err(io(out))?;
        for ent in rd {
            let p = ent.map_err(io(out))?.path();
            if p.extension().is_some_and(|e| e == "jsonl") && p.is_file() {
                checkpoint::drop_torn_line(&p)?;
            }
        }
    }
    // Rewards that keep files (the judge's verdict cache) keep them in the run directory.
    for c in &reward.components {
        c.reward.attach_run_dir(out)?;
    }
    let ck_root = out.join("checkpoints");
    let all_ckpts = checkpoint::list(&ck_root)?;
    let existing = all_ckpts.last().map(|(_, p)| p.clone());
    let resolved_path = out.join("recipe.resolved.toml");
    let resolved = asm.resolved_toml();
    match (&existing, resume) {
        (Some(p), false) => {
            return Err(Error::config(
                "run.out",
                format!(
                    "{} already holds a checkpoint of an earlier run ({}): pass --resume to continue it, or set another [run] out / --out",
                    out.display(),
                    p.display()
                ),
            ));
        }
        (Some(_), true) => {
            if let Ok(old) = std::fs::read_to_string(&resolved_path)
                && comparable_recipe(&old) != comparable_recipe(&resolved)
            {
                return Err(Error::config(
                    "run.out",
                    format!(
                        "--resume: the recipe differs from the one this run started with ({}); only train.steps, checkpoint_every, keep_checkpoints, eval_every and [eval] may change",
                        resolved_path.display()
                    ),
                ));
            }
        }
        (None, true) => progress(TrainEvent::Note(format!(
            "--resume: no checkpoint under {} yet; starting from step 0",
            ck_root.display()
        ))),
        (None, false) => {}
    }
    std::fs::write(&resolved_path, &resolved).map_err(io(&resolved_path))?;

    let mut trainer = Trainer::new(lm, cfg.clone(), reward, None)?;
    let metrics_path = out.join("metrics.jsonl");
    let eval_path = out.join("eval.jsonl");
    let rollouts_path = out.join("rollouts.jsonl");
    let dev_root = out.join("dev");
    let mut last_ckpt = None;
    let mut evals = Vec::new();
    if resume && !all_ckpts.is_empty() {
        let Some((p, loaded)) = newest_intact(&all_ckpts, progress)? else {
            return Err(Error::model(
                ck_root.clone(),
                format!(
                    "--resume: no intact checkpoint left under {} (each damaged one was moved to damaged-step-N); remove the run directory to start over",
                    ck_root.display()
                ),
            ));
        };
        if loaded.integrity == checkpoint::Integrity::Unverified {
            progress(TrainEvent::Note(format!(
                "warning: checkpoint {} has no manifest.json (written before checkpoints carried checksums): loaded without verifying its files",
                p.display()
            )));
        }
        let extra = trainer.restore_loaded(loaded, &p)?;
        let done = trainer.steps_done();
        if extra.get("cursor").and_then(serde_json::Value::as_u64) != Some((done * spp) as u64) {
            return Err(Error::model(
                p.clone(),
                format!("checkpoint state {extra} does not match {done} steps of {spp} samples"),
            ));
        }
        // Every per-step record written after the checkpoint belongs to a step that will be
        // redone (and logged again): keep steps < done (the dev eval of step `done` ran after
        // its checkpoint, so it stays when it finished).
        checkpoint::truncate_log(&metrics_path, |s| s < done)?;
        checkpoint::truncate_log(&rollouts_path, |s| s < done)?;
        checkpoint::truncate_log(&eval_path, |s| s <= done)?;
        for (s, d) in dev_dirs(&dev_root)? {
            if s > done {
                std::fs::remove_dir_all(&d).map_err(io(&d))?;
            }
        }
        if metrics_path.exists() {
            plot_rewards(out)?;
        }
        evals = read_evals(&eval_path);
        if !evals.is_empty() {
            plot_evals(out)?;
        }
        progress(TrainEvent::Note(format!(
            "resumed from {} (step {done})",
            p.display()
        )));
        last_ckpt = Some(p);
    } else {
        for p in [&metrics_path, &eval_path, &rollouts_path] {
            if p.exists() {
                std::fs::remove_file(p).map_err(io(p))?;
            }
        }
        for (_, d) in dev_dirs(&dev_root)? {
            std::fs::remove_dir_all(&d).map_err(io(&d))?;
        }
    }
    let steps = cfg.steps;
    progress(TrainEvent::Start {
        steps,
        done: trainer.steps_done(),
        train_samples: train.len(),
    });

    let ee = settings.eval_every;
    let eval_due = |done: usize| ee > 0 && (done == steps || done.is_multiple_of(ee));
    let mut dev_eval = |step: usize, progress: &mut dyn FnMut(TrainEvent)| -> Result<()> {
        let dir = dev_root.join(checkpoint::dir_name(step));
        // What an interrupted eval of this step left is redone from scratch.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let summary = run_eval_on(asm, &dev, &dir, &mut |_: Progress| {})?;
        append_line(
            &eval_path,
            &serde_json::json!({
                "step": step,
                "metrics": summary.metrics,
                "ci95": summary.ci95,
                "n": summary.n,
                "seconds": summary.seconds,
            }),
        )?;
        plot_evals(out)?;
        evals.push((step, summary.metrics.clone()));
        progress(TrainEvent::Eval {
            step,
            summary: Box::new(summary),
        });
        Ok(())
    };
    // The base model's eval before step 1, or the dev eval that a kill interrupted between
    // the checkpoint we resume from and its eval.
    let done = trainer.steps_done();
    if eval_due(done) && !read_evals(&eval_path).iter().any(|(s, _)| *s == done) {
        if done > 0 {
            progress(TrainEvent::Note(format!(
                "the dev eval after step {done} did not finish before the run stopped: running it again"
            )));
        }
        dev_eval(done, progress)?;
    }

    let rollout_root = seed::derive(asm.run.seed, "rollout");
    let mut last = None;
    while trainer.steps_done() < steps {
        let step = trainer.steps_done();
        let picked: Vec<Sample> = (0..spp)
            .map(|j| train[sample_at(asm.run.seed, train.len(), step * spp + j)].clone())
            .collect();
        let mut kept_groups: Vec<Group> = Vec::new();
        let mut extra_groups: Vec<Group> = Vec::new();
        // zero_variance = "resample": round r of step s draws other samples from a stream of
        // its own (not the training cursor), seeded by the run, so a resumed run draws the same.
        let mut more = |lm: &dyn LanguageModel, step: usize, round: usize| -> Result<Vec<Group>> {
            let rounds = match cfg.zero_variance {
                ZeroVariance::Resample { max_rounds } => max_rounds,
                _ => 0,
            };
            let base = (step * rounds + round - 1) * spp;
            let extra: Vec<Sample> = (0..spp)
                .map(|j| {
                    train[sample_at(
                        seed::derive(asm.run.seed, "resample-order"),
                        train.len(),
                        base + j,
                    )]
                    .clone()
                })
                .collect();
            let eps = run_groups(
                rollout_agent.as_ref(),
                asm.store.as_ref(),
                lm,
                asm.embedder.as_deref(),
                &extra,
                seed::derive_n(
                    seed::derive_n(seed::derive(rollout_root, "resample"), step as u64),
                    round as u64,
                ),
                settings.concurrency,
            )?;
            let groups: Vec<Group> = extra
                .into_iter()
                .zip(eps)
                .map(|(sample, episodes)| Group { sample, episodes })
                .collect();
            if settings.save_rollouts {
                extra_groups.extend(groups.iter().cloned());
            }
            Ok(groups)
        };
        let result = trainer.step_with(
            &mut |lm, step| {
                let eps = run_groups(
                    rollout_agent.as_ref(),
                    asm.store.as_ref(),
                    lm,
                    asm.embedder.as_deref(),
                    &picked,
                    seed::derive_n(rollout_root, step as u64),
                    settings.concurrency,
                )?;
                let groups: Vec<Group> = picked
                    .iter()
                    .cloned()
                    .zip(eps)
                    .map(|(sample, episodes)| Group { sample, episodes })
                    .collect();
                if settings.save_rollouts {
                    kept_groups = groups.clone();
                }
                Ok(groups)
            },
            Some(&mut more),
        );
        kept_groups.append(&mut extra_groups);
        let m = match result {
            Ok(m) => m,
            Err(e) => {
                let at = match &last_ckpt {
                    Some(p) => format!("the last good checkpoint is {}", p.display()),
                    None => "no checkpoint was written yet".to_string(),
                };
                // Error::Step keeps the cause's class: a recipe or data error met during a
                // rollout still exits 2.
                // Error::Step counts steps from 1 (metrics.jsonl's `step` from 0).
                return Err(Error::step(
                    step + 1,
                    format!("{at} (resume with --resume)"),
                    e,
                ));
            }
        };
        append_line(&metrics_path, &m)?;
        if settings.save_rollouts {
            for g in &kept_groups {
                for e in &g.episodes {
                    append_line(
                        &rollouts_path,
                        &serde_json::json!({"step": step, "episode": e}),
                    )?;
                }
            }
        }
        plot_rewards(out)?;
        progress(TrainEvent::Step(Box::new(m.clone())));
        last = Some(m);
        let done = trainer.steps_done();
        let every = settings.checkpoint_every;
        if done == steps || (every > 0 && done.is_multiple_of(every)) {
            let p = trainer.checkpoint(
                &ck_root,
                settings.keep_checkpoints,
                serde_json::json!({
                    "cursor": done * spp,
                    "data_epoch": (done * spp) / train.len(),
                    "run_seed": asm.run.seed,
                }),
            )?;
            progress(TrainEvent::Checkpoint {
                step: done,
                path: p.clone(),
            });
            last_ckpt = Some(p);
            test_pause_after_checkpoint(done);
        }
        if eval_due(done) {
            dev_eval(done, progress)?;
        }
    }
    let summary = TrainSummary {
        steps: trainer.steps_done(),
        checkpoint: last_ckpt,
        last,
        evals,
        seconds: start.elapsed().as_secs_f64(),
    };
    let sp = out.join("summary.json");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&sp, json).map_err(io(&sp))?;
    Ok(summary)
}

/// Loads the trained weights of checkpoint `dir` into `lm` (LoRA merged), e.g. to evaluate
/// a trained policy with an eval recipe of the base model. A file that does not match its
/// checksum is an [`Error::Model`] naming the file and both hashes;
/// [`Integrity::Unverified`] means the checkpoint predates checksums (warn the user).
pub fn apply_checkpoint(lm: &BurnLm, dir: &Path) -> Result<Integrity> {
    memfactory_rl::checkpoint::apply(lm, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_order_is_a_permutation_per_epoch() {
        let n = 7;
        for epoch in 0..3 {
            let mut seen: Vec<usize> = (0..n).map(|j| sample_at(5, n, epoch * n + j)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        let e0: Vec<usize> = (0..n).map(|j| sample_at(5, n, j)).collect();
        let e1: Vec<usize> = (0..n).map(|j| sample_at(5, n, n + j)).collect();
        assert_ne!(e0, e1, "each epoch reshuffles");
        let other: Vec<usize> = (0..n).map(|j| sample_at(6, n, j)).collect();
        assert_ne!(e0, other, "the run seed changes the order");
    }

    #[test]
    fn merge_overrides_nested_tables() {
        let mut a: toml::Table = toml::from_str("x = 1\n[u]\nt = 0.0\nm = 5").unwrap();
        let b: toml::Table = toml::from_str("paths = 4\n[u]\nt = 1.0").unwrap();
        merge(&mut a, &b);
        assert_eq!(a["u"]["t"].as_float(), Some(1.0));
        assert_eq!(a["u"]["m"].as_integer(), Some(5));
        assert_eq!(a["paths"].as_integer(), Some(4));
    }
}
