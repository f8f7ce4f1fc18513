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
        println!("{} ({}):", family.name(), family.prefix());
        if items.is_empty() {
            println!("  (none linked in this build)");
        }
        for (_, kind, about) in items {
            println!("  {kind:<16} {about}");
        }
    }
    Ok(())
}

pub fn check(recipe: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(recipe).map_err(|e| memfactory_core::Error::io(recipe, e))?;
    let has_train = toml::from_str::<toml::Table>(&text)
        .map(|t| t.contains_key("train"))
        .unwrap_or(false);
    let asm = if has_train {
        check_train(recipe)?
    } else {
        Assembly::from_file(recipe)?
    };
    let n = match &asm.eval_data {
        Some(_) => Some(eval::load_eval_samples(&asm, None)?.len()),
        None => None,
    };
    println!("{}: ok", recipe.display());
    println!("  model: {}", asm.model.describe());
    println!(
        "  agent: {} ({} path(s))",
        asm.agent.kind(),
        asm.agent.paths()
    );
    println!("  store: {}", asm.store.describe());
    if let (Some(d), Some(n)) = (&asm.eval_data, n) {
        println!("  eval data: {} — {n} samples", d.describe());
    }
    println!(
        "  metrics: {}",
        asm.metrics
            .iter()
            .map(|m| m.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("\nresolved recipe:\n{}", asm.resolved_toml());
    Ok(())
}

pub fn eval(
    recipe: &Path,
    limit: Option<usize>,
    out: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
) -> Result<()> {
    let asm = match &checkpoint {
        None => Assembly::from_file(recipe)?,
        Some(ck) => with_checkpoint(recipe, ck)?,
    };
    let out = out.unwrap_or_else(|| eval::default_out(&asm));
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} samples (eta {eta}) {msg}",
        )
        .expect("valid progress template"),
    );
    let first_metric = asm.metrics.first().map(|m| m.name().to_string());
    let mut sum = 0.0;
    let mut done = 0usize;
    let summary = eval::run_eval(&asm, limit, &out, &mut |p| match p {
        Progress::Start { total } => bar.set_length(total as u64),
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
    println!(
        "eval of {} on {} samples ({:.1} s):",
        recipe.display(),
        summary.n,
        summary.seconds
    );
    for (k, v) in &summary.metrics {
        println!(
            "  {k:<12} {v:.4} ± {:.4}",
            summary.ci95.get(k).copied().unwrap_or(0.0)
        );
    }
    println!("run directory: {}", out.display());
    Ok(())
}

/// Builds and checks a training recipe: the [train] table, the rollout agent, the splits.
#[cfg(feature = "train")]
fn check_train(recipe: &Path) -> Result<Assembly> {
    let job = memfactory::train::TrainJob::from_file(recipe)?;
    println!(
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
fn with_checkpoint(recipe: &Path, ck: &Path) -> Result<Assembly> {
    let (asm, lm) = memfactory::train::TrainJob::model_only(recipe)?;
    memfactory::train::apply_checkpoint(&lm, ck)?;
    println!("weights from checkpoint {}", ck.display());
    Ok(asm)
}

#[cfg(not(feature = "train"))]
fn no_train() -> anyhow::Error {
    anyhow::anyhow!(
        "this memfactory binary was built without the trainer: enable Cargo feature `train` of memfactory-cli"
    )
}

#[cfg(not(feature = "train"))]
fn check_train(_: &Path) -> Result<Assembly> {
    Err(no_train())
}

#[cfg(not(feature = "train"))]
fn with_checkpoint(_: &Path, _: &Path) -> Result<Assembly> {
    Err(no_train())
}

#[cfg(not(feature = "train"))]
pub fn train(_: &Path, _: bool, _: Option<PathBuf>) -> Result<()> {
    Err(no_train())
}

#[cfg(feature = "train")]
pub fn train(recipe: &Path, resume: bool, out: Option<PathBuf>) -> Result<()> {
    use memfactory::train::{TrainEvent, TrainJob, run_train};
    let job = TrainJob::from_file(recipe)?;
    let out = out.unwrap_or_else(|| job.asm.run.out.clone());
    println!(
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
        TrainEvent::Note(n) => bar.suspend(|| eprintln!("{n}")),
        TrainEvent::Step(m) => {
            bar.set_message(format!(
                "reward {:.3}±{:.3} loss {:.4} kl {:.4} clip {:.3} |g| {:.3} ({:.0}+{:.0} s)",
                m.reward.mean,
                m.reward.std,
                m.loss,
                m.kl,
                m.clip_fraction,
                m.grad_norm,
                m.rollout_s,
                m.update_s
            ));
            bar.inc(1);
        }
        TrainEvent::Eval { step, summary } => bar.suspend(|| {
            eprintln!(
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
            bar.suspend(|| eprintln!("checkpoint {}", path.display()))
        }
    })?;
    bar.finish_and_clear();
    println!(
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
        println!(
            "last step: reward {:.4} ± {:.4}, {} rows, {} skipped groups",
            m.reward.mean, m.reward.std, m.rows, m.skipped_groups
        );
    }
    println!(
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
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", c.markdown());
    }
    Ok(())
}

pub fn chat(args: &ChatArgs) -> Result<()> {
    let mut t = toml::Table::new();
    t.insert("kind".into(), "burn".into());
    t.insert("path".into(), args.model.display().to_string().into());
    t.insert("device".into(), args.device.clone().into());
    let (lm, _) = registry::build::<dyn LanguageModel>(Cfg::new("--model", t))?;
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
    println!("{}", g.text.trim());
    Ok(())
}
