//! The `list`, `check`, `eval` and `chat` commands.

use std::path::{Path, PathBuf};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use memfactory::eval::{self, Progress};
use memfactory::{Assembly, core};
use memfactory_core::{
    Cfg, ChatMessage, Family, GenRequest, LanguageModel, Prompt, SamplingParams, registry,
};

pub fn list() -> Result<()> {
    let catalog = registry::catalog()?;
    for family in Family::ALL {
        let items: Vec<_> = catalog.iter().filter(|(f, _, _)| *f == family).collect();
        outln!("{} ({}):", family.name(), family.prefix());
        if items.is_empty() {
            outln!("  (none linked in this build)");
        }
        for (_, kind, about) in items {
            outln!("  {kind:<16} {about}");
        }
    }
    Ok(())
}

pub fn check(recipe: &Path) -> Result<()> {
    let parsed = core::Recipe::from_file(recipe)?;
    let asm = if parsed.root.contains_key("train") {
        check_train(&parsed)?
    } else {
        Assembly::from_recipe(&parsed)?
    };
    let n = match &asm.eval_data {
        Some(_) => Some(eval::load_eval_samples(&asm, None)?.len()),
        None => None,
    };
    outln!("{}: ok", recipe.display());
    outln!("  model: {}", asm.model.describe());
    outln!(
        "  agent: {} ({} path(s))",
        asm.agent.kind(),
        asm.agent.paths()
    );
    outln!("  store: {}", asm.store.describe());
    if let (Some(d), Some(n)) = (&asm.eval_data, n) {
        outln!("  eval data: {} — {n} samples", d.describe());
    }
    outln!(
        "  metrics: {}",
        asm.metrics
            .iter()
            .map(|m| m.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!("\nresolved recipe:\n{}", asm.resolved_toml());
    Ok(())
}

/// Arguments of `memfactory eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The recipe (TOML).
    pub recipe: std::path::PathBuf,
    /// Evaluate only the first N samples (N ≥ 1).
    #[arg(long, value_parser = positive)]
    pub limit: Option<usize>,
    /// Run directory (default: the recipe's `run.out`, else runs/<name>).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Evaluate the weights of this training checkpoint (a `checkpoints/step-N`
    /// directory) on the recipe's base model.
    #[arg(long)]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Override a recipe key, e.g. `--set data.eval.docs=100` (repeatable; the value is
    /// read as TOML, else as a plain string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sweep a recipe key over values, e.g. `--sweep data.eval.docs=50,100,200`
    /// (repeatable: every combination runs, first sweep outermost). The key
    /// `checkpoint` sweeps training checkpoints (`base` = the recipe's own weights).
    /// Writes one run directory per combination plus sweep.md, sweep.json, sweep.svg.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Vec<String>,
    /// The metric of the sweep's pivot table and plot (default: the recipe's first).
    #[arg(long)]
    pub metric: Option<String>,
    /// Continue the interrupted eval in the run directory: keep the samples it finished
    /// and run the others (its recipe.resolved.toml must equal this eval's).
    #[arg(long)]
    pub resume: bool,
}

/// A count of at least 1 (`--limit`).
fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("expected at least 1 sample".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a number of samples ≥ 1 ({e})")),
    }
}

/// Checks that the run directory `out` can be created or written: neither it nor one of its
/// parents is a file.
fn check_out_dir(out: &Path) -> memfactory_core::Result<()> {
    for p in out.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(m) = std::fs::metadata(p) {
            if m.is_dir() {
                return Ok(());
            }
            let what = if p == out {
                "is a file".to_string()
            } else {
                format!("{} is a file", p.display())
            };
            return Err(memfactory_core::Error::path(
                out,
                format!("{what}, expected a run directory (created when absent)"),
            ));
        }
    }
    Ok(())
}

/// The recipe file with the `--set` overrides applied.
fn read_recipe(path: &Path, set: &[String]) -> Result<core::Recipe> {
    let mut recipe = core::Recipe::from_file(path)?;
    for s in set {
        let (k, v) = memfactory_core::recipe::parse_override(s)?;
        recipe.set(&k, v)?;
    }
    Ok(recipe)
}

fn samples_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} samples (eta {eta}) {msg}",
        )
        .expect("valid progress template"),
    );
    bar
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    let recipe = read_recipe(&a.recipe, &a.set)?;
    if !a.sweep.is_empty() {
        if a.resume {
            return Err(memfactory_core::Error::config(
                "--resume",
                "a sweep resumes by itself (finished combinations are reused); drop --resume",
            )
            .into());
        }
        return sweep(a, &recipe);
    }
    let asm = match &a.checkpoint {
        None => Assembly::from_recipe(&recipe)?,
        Some(ck) => {
            memfactory::sweep::check_checkpoint_dir(ck)?;
            with_checkpoint(&recipe, ck)?
        }
    };
    let out = a.out.clone().unwrap_or_else(|| eval::default_out(&asm));
    check_out_dir(&out)?;
    let bar = samples_bar();
    let first_metric = asm.metrics.first().map(|m| m.name().to_string());
    let mut sum = 0.0;
    let mut done = 0usize;
    let options = eval::EvalOptions {
        resume: a.resume,
        checkpoint: a.checkpoint.clone(),
    };
    let summary = eval::run_eval_with(&asm, a.limit, &out, &options, &mut |p| match p {
        Progress::Start {
            total,
            done: earlier,
        } => {
            bar.set_length(total as u64);
            bar.set_position(earlier as u64);
        }
        Progress::Sample { score } => {
            done += 1;
            if let Some(m) = &first_metric {
                sum += score.scores.get(m).copied().unwrap_or(0.0);
                bar.set_message(format!("{m} {:.3}", sum / done as f64));
            }
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    outln!(
        "eval of {} on {} samples ({:.1} s):",
        a.recipe.display(),
        summary.n,
        summary.seconds
    );
    for (k, v) in &summary.metrics {
        outln!(
            "  {k:<12} {v:.4} ± {:.4}",
            summary.ci95.get(k).copied().unwrap_or(0.0)
        );
    }
    for (m, c) in &summary.reward_counters {
        let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!("  {m} counters: {}", parts.join(", "));
    }
    outln!("run directory: {}", out.display());
    Ok(())
}

/// The sweep directory when `--out` is not given: `run.out` + `-sweep`, else
/// `runs/<run.name>-sweep` (the name checked like any run name), else the recipe's stem.
fn default_sweep_out(a: &EvalArgs, recipe: &core::Recipe) -> memfactory_core::Result<PathBuf> {
    let run = recipe.root.get("run").and_then(|r| r.as_table());
    let named = |k: &str| run.and_then(|r| r.get(k)).and_then(|v| v.as_str());
    match (named("out"), named("name")) {
        (Some(o), _) => Ok(PathBuf::from(format!("{o}-sweep"))),
        (None, Some(n)) => memfactory::assembly::check_run_name(n)
            .map(|()| PathBuf::from(format!("runs/{n}-sweep"))),
        (None, None) => {
            let stem = a
                .recipe
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            Ok(PathBuf::from(format!("runs/{stem}-sweep")))
        }
    }
}

/// `eval --sweep`: one eval per combination, one report.
fn sweep(a: &EvalArgs, recipe: &core::Recipe) -> Result<()> {
    use memfactory::sweep::{Axis, BuildRequest, CHECKPOINT_AXIS, SweepEvent, run_sweep};
    let mut axes = a
        .sweep
        .iter()
        .map(|s| Axis::parse(s))
        .collect::<memfactory_core::Result<Vec<_>>>()?;
    if let Some(ck) = &a.checkpoint {
        if axes.iter().any(|x| x.key == CHECKPOINT_AXIS) {
            return Err(memfactory_core::Error::config(
                "--checkpoint",
                "--checkpoint and --sweep checkpoint=… both name checkpoints; use the sweep alone",
            )
            .into());
        }
        axes.insert(
            0,
            Axis {
                key: CHECKPOINT_AXIS.into(),
                values: vec![toml::Value::String(ck.display().to_string())],
            },
        );
    }
    let out = match &a.out {
        Some(o) => o.clone(),
        None => default_sweep_out(a, recipe)?,
    };
    check_out_dir(&out)?;
    let mut build = |req: BuildRequest<'_>| -> memfactory_core::Result<Assembly> {
        match (req.checkpoint, req.reuse) {
            (_, Some(reuse)) => Assembly::from_recipe_with_model(req.recipe, Some(reuse)),
            (None, None) => Assembly::from_recipe(req.recipe),
            (Some(ck), None) => checkpoint_assembly(req.recipe, &ck),
        }
    };
    let bar = samples_bar();
    let report = run_sweep(
        recipe,
        &axes,
        a.limit,
        a.metric.as_deref(),
        &out,
        &mut build,
        &mut |e| match e {
            SweepEvent::Combo {
                index,
                total,
                settings,
                reused,
            } => {
                bar.reset();
                bar.set_message(format!("[{}/{total}] {settings}", index + 1));
                if reused {
                    bar.suspend(|| {
                        errln!(
                            "[{}/{total}] {settings}: finished earlier, reused",
                            index + 1
                        )
                    });
                }
            }
            SweepEvent::Eval(Progress::Start { total, .. }) => bar.set_length(total as u64),
            SweepEvent::Eval(Progress::Sample { .. }) => bar.inc(1),
        },
    )?;
    bar.finish_and_clear();
    let md = out.join("sweep.md");
    out!(
        "{}",
        std::fs::read_to_string(&md).map_err(|e| memfactory_core::Error::io(&md, e))?
    );
    // Two checkpoints and nothing else swept (`checkpoint=base,DIR`): the paired comparison
    // of their runs, as `memfactory compare` prints it, also written to compare.md.
    if let [(key, values)] = report.axes.as_slice()
        && key == CHECKPOINT_AXIS
        && values.len() == 2
        && report.runs.len() == 2
    {
        let c = memfactory::compare::compare_runs(&report.runs[0].dir, &report.runs[1].dir)?;
        let md = c.markdown();
        let path = out.join("compare.md");
        std::fs::write(&path, &md).map_err(|e| memfactory_core::Error::io(&path, e))?;
        outln!(
            "\npaired comparison, {} → {} (also in {}):\n",
            values[0],
            values[1],
            path.display()
        );
        out!("{md}");
    }
    outln!(
        "\n{} combinations; sweep directory: {} (primary metric {})",
        report.runs.len(),
        out.display(),
        report.primary_metric
    );
    Ok(())
}

/// Builds and checks a training recipe: the [train] table, the rollout agent, the splits.
#[cfg(feature = "train")]
fn check_train(recipe: &core::Recipe) -> Result<Assembly> {
    let job = memfactory::train::TrainJob::from_recipe(recipe)?;
    outln!(
        "  train: {} steps × {} samples × {} episodes, rollout agent {} path(s)",
        job.cfg.steps,
        job.cfg.samples_per_step,
        job.cfg.group_size,
        job.rollout_agent.paths()
    );
    Ok(job.asm)
}

/// The recipe's components with the trained weights of checkpoint `ck` in its base model.
#[cfg(feature = "train")]
fn checkpoint_assembly(recipe: &core::Recipe, ck: &Path) -> memfactory_core::Result<Assembly> {
    let (asm, lm) = memfactory::train::TrainJob::model_only_recipe(recipe)?;
    let integrity = memfactory::train::apply_checkpoint(&lm, ck)?;
    if integrity == memfactory::train::Integrity::Unverified {
        errln!(
            "warning: checkpoint {} has no manifest.json (written before checksums): its files were not verified",
            ck.display()
        );
    }
    Ok(asm)
}

#[cfg(feature = "train")]
fn with_checkpoint(recipe: &core::Recipe, ck: &Path) -> Result<Assembly> {
    let asm = checkpoint_assembly(recipe, ck)?;
    outln!("weights from checkpoint {}", ck.display());
    Ok(asm)
}

#[cfg(not(feature = "train"))]
fn no_train() -> anyhow::Error {
    anyhow::anyhow!(
        "this memfactory binary was built without the trainer: enable Cargo feature `train` of memfactory-cli"
    )
}

#[cfg(not(feature = "train"))]
fn check_train(_: &core::Recipe) -> Result<Assembly> {
    Err(no_train())
}

#[cfg(not(feature = "train"))]
fn with_checkpoint(_: &core::Recipe, _: &Path) -> Result<Assembly> {
    Err(no_train())
}

#[cfg(not(feature = "train"))]
fn checkpoint_assembly(_: &core::Recipe, _: &Path) -> memfactory_core::Result<Assembly> {
    Err(memfactory_core::Error::config(
        "checkpoint",
        "evaluating a checkpoint needs the trainer: enable Cargo feature `train` of memfactory-cli",
    ))
}

#[cfg(not(feature = "train"))]
pub fn train(_: &Path, _: bool, _: Option<PathBuf>, _: &[String]) -> Result<()> {
    Err(no_train())
}

#[cfg(feature = "train")]
pub fn train(recipe: &Path, resume: bool, out: Option<PathBuf>, set: &[String]) -> Result<()> {
    use memfactory::train::{TrainEvent, TrainJob, run_train};
    let job = TrainJob::from_recipe(&read_recipe(recipe, set)?)?;
    let out = out.unwrap_or_else(|| job.asm.run.out.clone());
    check_out_dir(&out)?;
    outln!(
        "training {} on {} — {} steps × {} samples × {} episodes; run directory {}",
        job.asm.agent.kind(),
        job.asm.model.describe(),
        job.cfg.steps,
        job.cfg.samples_per_step,
        job.cfg.group_size,
        out.display()
    );
    let bar = ProgressBar::new(job.cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps (eta {eta}) {msg}",
        )
        .expect("valid progress template"),
    );
    let summary = run_train(job, &out, resume, &mut |e| match e {
        TrainEvent::Start { done, .. } => bar.set_position(done as u64),
        TrainEvent::Note(n) => bar.suspend(|| errln!("{n}")),
        TrainEvent::Step(m) => {
            bar.set_message(format!(
                "reward {:.3}±{:.3} loss {:.4} kl {:.4} clip {:.3} |g| {:.3} |Δlp| {:.3}/{:.3} ({:.0}+{:.0} s)",
                m.reward.mean,
                m.reward.std,
                m.loss,
                m.kl,
                m.clip_fraction,
                m.grad_norm,
                m.logprob_gap_mean,
                m.logprob_gap_max,
                m.rollout_s,
                m.update_s
            ));
            bar.inc(1);
        }
        TrainEvent::Eval { step, summary } => bar.suspend(|| {
            errln!(
                "dev eval after {step} steps ({} samples): {}",
                summary.n,
                summary
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        TrainEvent::Checkpoint { path, .. } => {
            bar.suspend(|| errln!("checkpoint {}", path.display()))
        }
    })?;
    bar.finish_and_clear();
    outln!(
        "trained {} steps in {:.1} s; last checkpoint {}",
        summary.steps,
        summary.seconds,
        summary
            .checkpoint
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into())
    );
    if let Some(m) = &summary.last {
        outln!(
            "last step: reward {:.4} ± {:.4}, {} rows, {} skipped groups",
            m.reward.mean,
            m.reward.std,
            m.rows,
            m.skipped_groups
        );
    }
    outln!(
        "run directory: {} (metrics.jsonl, reward.svg, eval.jsonl, eval.svg, checkpoints/)",
        out.display()
    );
    Ok(())
}

/// Arguments of `memfactory chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Model: a .gguf file or an HF model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Device: flex (CPU), wgpu, cuda.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Optional system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// The user message.
    pub prompt: String,
}

/// `memfactory compare A B`: paired comparison of two eval runs.
pub fn compare(a: &Path, b: &Path, json: bool) -> Result<()> {
    let c = memfactory::compare::compare_runs(a, b)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        out!("{}", c.markdown());
    }
    Ok(())
}

pub fn chat(args: &ChatArgs) -> Result<()> {
    let mut t = toml::Table::new();
    t.insert("kind".into(), "burn".into());
    t.insert("path".into(), args.model.display().to_string().into());
    t.insert("device".into(), args.device.clone().into());
    let (lm, _) = registry::build::<dyn LanguageModel>(Cfg::new("--model", t))?;
    memfactory_core::lm::check_budget("--max-new-tokens", args.max_new_tokens, lm.as_ref())?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    messages.push(ChatMessage::user(args.prompt.clone()));
    let g = lm.generate(&[GenRequest {
        prompt: Prompt::Chat(messages),
        params: SamplingParams {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            seed: args.seed,
            ..Default::default()
        },
    }])?;
    let g = g
        .into_iter()
        .next()
        .ok_or_else(|| core::Error::backend("chat", "no generation returned"))?;
    outln!("{}", g.text.trim());
    Ok(())
}
