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
    let asm = Assembly::from_file(recipe)?;
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

pub fn eval(recipe: &Path, limit: Option<usize>, out: Option<PathBuf>) -> Result<()> {
    let asm = Assembly::from_file(recipe)?;
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
