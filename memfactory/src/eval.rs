//! Evaluation: run the agent over the eval samples and write the run directory.
//!
//! Files written into the run directory (each appended and flushed as samples finish, so
//! an interrupted run keeps everything done so far):
//! - `recipe.resolved.toml` — the recipe with every default filled in;
//! - `trajectories.jsonl` — one line per episode: every LM call with prompt token ids,
//!   generated token ids and their log-probs, every memory edit, the answer;
//! - `scores.jsonl` — one line per sample: each metric averaged over its paths;
//! - `metrics.json` — `{"metrics": {name: mean}, "ci95": {name: half-width}, "n": N, ...}`,
//!   with `reward_counters` (e.g. the judge's verdicts asked, cache hits, unparsable outputs);
//! - files a metric keeps, e.g. the LLM judge's verdict cache `judge-cache.jsonl`;
//! - `report.md` — a readable summary with a few examples.

use std::collections::BTreeMap;
use std::collections::BTreeMap as Reorder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use memfactory_core::{
    Embedder, Episode, EpisodeCx, Error, LanguageModel, LoadCx, Paradigm, Result, Sample, Step,
    StoreFactory, seed,
};
use serde::Serialize;

use crate::Assembly;
use crate::batching::BatchingLm;

/// Per-sample result.
#[derive(Debug, Clone, Serialize)]
pub struct SampleScore {
    /// Sample id.
    pub id: String,
    /// Each metric averaged over the sample's paths (avg@k).
    pub scores: BTreeMap<String, f64>,
    /// Answer of path 0.
    pub answer: Option<String>,
    /// Gold answers.
    pub gold: Vec<String>,
    /// The sample's category (`"1 (multi-hop)"`: [`Sample::category`] with its
    /// `meta.category_name` when the dataset gives one), for per-category reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// The metrics of the samples of one category.
#[derive(Debug, Clone, Serialize)]
pub struct CategorySummary {
    /// Samples in the category.
    pub n: usize,
    /// Mean of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// 95 % confidence half-width of each mean.
    pub ci95: BTreeMap<String, f64>,
}

/// The label a sample's category is reported under, when it has one.
pub fn category_label(sample: &Sample) -> Option<String> {
    let c = sample.category.as_ref()?;
    Some(
        match sample.meta.get("category_name").and_then(|v| v.as_str()) {
            Some(name) if name != c => format!("{c} ({name})"),
            _ => c.clone(),
        },
    )
}

/// What an eval run produced.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    /// Mean of each metric over samples.
    pub metrics: BTreeMap<String, f64>,
    /// 95 % confidence half-width of each mean (normal approximation over samples).
    pub ci95: BTreeMap<String, f64>,
    /// The same per category, when the samples have categories (LoCoMo's multi-hop,
    /// temporal, …); empty otherwise.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_category: BTreeMap<String, CategorySummary>,
    /// Samples evaluated.
    pub n: usize,
    /// Paths per sample (avg@k).
    pub paths: usize,
    /// LM calls made.
    pub lm_calls: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The model.
    pub model: String,
    /// Each metric's event counts ([`memfactory_core::Reward::counters`]), for the metrics
    /// that keep any.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reward_counters: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Progress events for a UI.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Samples loaded; `total` will be evaluated.
    Start {
        /// How many samples.
        total: usize,
    },
    /// One sample finished.
    Sample {
        /// Its scores.
        score: SampleScore,
    },
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).map_err(write_err(path))?))
}

fn append_json<T: Serialize>(w: &mut BufWriter<File>, path: &Path, v: &T) -> Result<()> {
    let line = serde_json::to_string(v).map_err(|e| Error::Invalid(e.to_string()))?;
    writeln!(w, "{line}").map_err(write_err(path))?;
    w.flush().map_err(write_err(path))
}

/// Loads the eval samples of `asm` (first `limit` of them).
pub fn load_eval_samples(asm: &Assembly, limit: Option<usize>) -> Result<Vec<Sample>> {
    let data = asm.eval_data.as_ref().ok_or_else(|| {
        Error::config(
            "data.eval",
            "the recipe has no [data.eval] table to evaluate on",
        )
    })?;
    let cx = LoadCx {
        tokenizer: Some(asm.model.as_ref()),
    };
    // With a limit, only the first samples are built (a generated dataset's `samples` may be
    // far larger than what is evaluated).
    match limit.or(asm.eval_limit) {
        Some(l) => data.load_first(&cx, l),
        None => data.load(&cx),
    }
}

/// Runs one sample's group of episodes (the paradigm's `paths`) on the recipe's model.
pub fn run_sample(asm: &Assembly, sample: &Sample) -> Result<Vec<Episode>> {
    run_sample_with(asm, asm.model.as_ref(), sample)
}

/// Runs one sample's group of episodes on `lm` (e.g. a [`BatchingLm`] over the model).
pub fn run_sample_with(
    asm: &Assembly,
    lm: &dyn LanguageModel,
    sample: &Sample,
) -> Result<Vec<Episode>> {
    run_group(
        asm.agent.as_ref(),
        asm.store.as_ref(),
        lm,
        asm.embedder.as_deref(),
        sample,
        asm.run.seed,
    )
}

/// Runs `agent`'s group of episodes (its `paths`) on `sample` with `lm`; episode seeds
/// derive from `root_seed` → sample id → path. `embedder` is the run's `[embedder]`.
pub fn run_group(
    agent: &dyn Paradigm,
    store: &dyn StoreFactory,
    lm: &dyn LanguageModel,
    embedder: Option<&dyn Embedder>,
    sample: &Sample,
    root_seed: u64,
) -> Result<Vec<Episode>> {
    let paths = agent.paths().max(1);
    let sample_seed = seed::derive(root_seed, &sample.id);
    let mut cxs = (0..paths)
        .map(|p| {
            let store = store.open(&format!("{}/{p}", sample.id))?;
            Ok(EpisodeCx::new(
                lm,
                store,
                &sample.id,
                p,
                seed::derive_n(sample_seed, p as u64),
            )
            .with_embedder(embedder))
        })
        .collect::<Result<Vec<_>>>()?;
    agent.run_group(sample, &mut cxs)?;
    Ok(cxs.into_iter().map(EpisodeCx::into_episode).collect())
}

/// Runs one sample's group on the given (batching) LM.
type RunOne<'a> = dyn Fn(&dyn LanguageModel, &Sample) -> Result<Vec<Episode>> + Sync + 'a;

/// Runs `run` on every sample on up to `concurrency` worker threads whose LM calls go
/// through one [`BatchingLm`] over `lm` (batches of at most `concurrency × paths`
/// requests). `sink` gets each `(sample index, result)` on the calling thread in completion
/// order; returning `false` stops the workers (a worker also stops after its own error).
fn run_pooled(
    lm: &dyn LanguageModel,
    paths: usize,
    samples: &[Sample],
    concurrency: usize,
    run: &RunOne<'_>,
    sink: &mut dyn FnMut(usize, Result<Vec<Episode>>) -> bool,
) {
    let n = samples.len();
    let concurrency = concurrency.clamp(1, n.max(1));
    let batching = BatchingLm::new(lm, concurrency * paths.max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Result<Vec<Episode>>)>();
    std::thread::scope(|s| {
        // Every worker is registered before any starts, so no batch is cut while a worker
        // is still starting up (batch composition, hence the numbers, stay reproducible).
        let guards: Vec<_> = (0..concurrency).map(|_| batching.worker()).collect();
        for guard in guards {
            let tx = tx.clone();
            let (batching, next) = (&batching, &next);
            s.spawn(move || {
                let _worker = guard;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = run(batching, &samples[i]);
                    let failed = r.is_err();
                    if tx.send((i, r)).is_err() || failed {
                        next.store(n, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            if !sink(i, r) {
                next.store(n, Ordering::SeqCst);
            }
        }
    });
}

/// Runs the groups of all `samples` with up to `concurrency` samples in flight, their LM
/// calls batched together; results in sample order. The first error stops the run.
pub fn run_groups(
    agent: &dyn Paradigm,
    store: &dyn StoreFactory,
    lm: &dyn LanguageModel,
    embedder: Option<&dyn Embedder>,
    samples: &[Sample],
    root_seed: u64,
    concurrency: usize,
) -> Result<Vec<Vec<Episode>>> {
    let mut out: Vec<Option<Result<Vec<Episode>>>> = (0..samples.len()).map(|_| None).collect();
    run_pooled(
        lm,
        agent.paths(),
        samples,
        concurrency,
        &|lm, sample| run_group(agent, store, lm, embedder, sample, root_seed),
        &mut |i, r| {
            let ok = r.is_ok();
            out[i] = Some(r);
            ok
        },
    );
    let mut groups = Vec::with_capacity(samples.len());
    for (i, r) in out.into_iter().enumerate() {
        match r {
            Some(r) => groups.push(r?),
            None => {
                return Err(Error::Invalid(format!(
                    "sample {} was not run (an earlier sample failed)",
                    samples[i].id
                )));
            }
        }
    }
    Ok(groups)
}

/// Scores `episodes` of `sample` with every metric, averaged over paths.
pub fn score_sample(
    asm: &Assembly,
    sample: &Sample,
    episodes: &[Episode],
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for m in &asm.metrics {
        let mut vals = Vec::new();
        for e in episodes {
            if let Some(v) = m.score(sample, e)? {
                if !v.is_finite() {
                    return Err(Error::backend(
                        m.name(),
                        format!("metric returned {v} on sample {}", sample.id),
                    ));
                }
                vals.push(v as f64);
            }
        }
        if !vals.is_empty() {
            out.insert(
                m.name().to_string(),
                vals.iter().sum::<f64>() / vals.len() as f64,
            );
        }
    }
    Ok(out)
}

fn mean_ci(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if n < 2.0 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

/// Runs the eval: loads samples, runs every group, writes the run directory `out`.
pub fn run_eval(
    asm: &Assembly,
    limit: Option<usize>,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalSummary> {
    let samples = load_eval_samples(asm, limit)?;
    run_eval_on(asm, &samples, out, progress)
}

/// Evaluates the recipe's agent and model on `samples`, writing the run directory `out`.
pub fn run_eval_on(
    asm: &Assembly,
    samples: &[Sample],
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalSummary> {
    let start = Instant::now();
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let resolved_path = out.join("recipe.resolved.toml");
    std::fs::write(&resolved_path, asm.resolved_toml()).map_err(write_err(&resolved_path))?;
    for m in &asm.metrics {
        m.attach_run_dir(out)?;
    }
    progress(Progress::Start {
        total: samples.len(),
    });

    let traj_path = out.join("trajectories.jsonl");
    let scores_path = out.join("scores.jsonl");
    let mut traj = create(&traj_path)?;
    let mut scores_w = create(&scores_path)?;
    let mut per_metric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut per_category: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut category_n: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: Vec<(Sample, Episode, SampleScore)> = Vec::new();
    let (mut lm_calls, mut generated) = (0usize, 0usize);

    let mut failure: Option<Error> = None;
    // Results arrive in completion order; write them in sample order.
    let mut waiting: Reorder<usize, Vec<Episode>> = Reorder::new();
    let mut written = 0usize;
    run_pooled(
        asm.model.as_ref(),
        asm.agent.paths(),
        samples,
        asm.eval_concurrency,
        &|lm, sample| run_sample_with(asm, lm, sample),
        &mut |i, r| {
            if failure.is_some() {
                return false;
            }
            match r {
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
                Ok(eps) => {
                    waiting.insert(i, eps);
                }
            }
            while let Some(episodes) = waiting.remove(&written) {
                let sample = &samples[written];
                written += 1;
                let step = (|| -> Result<SampleScore> {
                    for e in &episodes {
                        append_json(&mut traj, &traj_path, e)?;
                        for c in e.lm_calls() {
                            lm_calls += 1;
                            generated += c.output.token_ids.len();
                        }
                    }
                    let scores = score_sample(asm, sample, &episodes)?;
                    let category = category_label(sample);
                    for (k, v) in &scores {
                        per_metric.entry(k.clone()).or_default().push(*v);
                        if let Some(c) = &category {
                            per_category
                                .entry(c.clone())
                                .or_default()
                                .entry(k.clone())
                                .or_default()
                                .push(*v);
                        }
                    }
                    if let Some(c) = &category {
                        *category_n.entry(c.clone()).or_default() += 1;
                    }
                    let score = SampleScore {
                        id: sample.id.clone(),
                        scores,
                        answer: episodes.first().and_then(|e| e.answer.clone()),
                        gold: sample.answers.clone(),
                        category,
                    };
                    append_json(&mut scores_w, &scores_path, &score)?;
                    Ok(score)
                })();
                match step {
                    Ok(score) => {
                        if examples.len() < 3 {
                            examples.push((sample.clone(), episodes[0].clone(), score.clone()));
                        }
                        progress(Progress::Sample { score });
                    }
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                }
            }
            true
        },
    );
    if let Some(e) = failure {
        return Err(e);
    }

    let mut metrics = BTreeMap::new();
    let mut ci95 = BTreeMap::new();
    for (k, v) in &per_metric {
        let (m, c) = mean_ci(v);
        metrics.insert(k.clone(), m);
        ci95.insert(k.clone(), c);
    }
    let by_category = per_category
        .into_iter()
        .map(|(c, per)| {
            let (mut metrics, mut ci95) = (BTreeMap::new(), BTreeMap::new());
            for (k, v) in &per {
                let (m, h) = mean_ci(v);
                metrics.insert(k.clone(), m);
                ci95.insert(k.clone(), h);
            }
            let n = category_n.get(&c).copied().unwrap_or(0);
            (c, CategorySummary { n, metrics, ci95 })
        })
        .collect();
    let summary = EvalSummary {
        metrics,
        ci95,
        by_category,
        n: samples.len(),
        paths: asm.agent.paths().max(1),
        lm_calls,
        generated_tokens: generated,
        seconds: start.elapsed().as_secs_f64(),
        model: asm.model.describe(),
        reward_counters: asm
            .metrics
            .iter()
            .map(|m| (m.name().to_string(), m.counters()))
            .filter(|(_, c)| !c.is_empty())
            .collect(),
    };
    let metrics_path = out.join("metrics.json");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&metrics_path, json).map_err(write_err(&metrics_path))?;
    let report_path = out.join("report.md");
    std::fs::write(&report_path, report(asm, &summary, &examples))
        .map_err(write_err(&report_path))?;
    Ok(summary)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn report(asm: &Assembly, s: &EvalSummary, examples: &[(Sample, Episode, SampleScore)]) -> String {
    let mut r = String::new();
    r.push_str(&format!("# Eval report: {}\n\n", asm.run.name));
    r.push_str(&format!(
        "- recipe: `{}`\n- model: {}\n- agent: `{}`, {} path(s) per sample (avg@{})\n- samples: {}\n- LM calls: {}, generated tokens: {}\n- wall time: {:.1} s\n\n",
        asm.recipe_file,
        s.model,
        asm.agent.kind(),
        s.paths,
        s.paths,
        s.n,
        s.lm_calls,
        s.generated_tokens,
        s.seconds
    ));
    r.push_str("| metric | mean | 95% CI |\n|---|---|---|\n");
    for (k, v) in &s.metrics {
        let c = s.ci95.get(k).copied().unwrap_or(0.0);
        r.push_str(&format!(
            "| {k} | {v:.4} | [{:.4}, {:.4}] |\n",
            (v - c).max(0.0),
            v + c
        ));
    }
    for (metric, counters) in &s.reward_counters {
        let parts: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        r.push_str(&format!("\n`{metric}` counters: {}\n", parts.join(", ")));
    }
    if !s.by_category.is_empty() {
        let names: Vec<&String> = s.metrics.keys().collect();
        r.push_str("\n## By category\n\n| category | n |");
        for k in &names {
            r.push_str(&format!(" {k} |"));
        }
        r.push_str("\n|---|---|");
        r.push_str(&"---|".repeat(names.len()));
        r.push('\n');
        for (c, cs) in &s.by_category {
            r.push_str(&format!("| {c} | {} |", cs.n));
            for k in &names {
                match (cs.metrics.get(*k), cs.ci95.get(*k)) {
                    (Some(m), Some(h)) => r.push_str(&format!(" {m:.4} ± {h:.4} |")),
                    _ => r.push_str(" – |"),
                }
            }
            r.push('\n');
        }
    }
    r.push_str("\n## Examples (path 0)\n");
    for (sample, ep, score) in examples {
        let chunks = ep
            .steps
            .iter()
            .find_map(|st| match st {
                Step::Note { label, text } if label == "chunks" => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "?".into());
        let last_memory = ep
            .steps
            .iter()
            .rev()
            .find_map(|st| match st {
                Step::Edit { edits, .. } => edits.iter().find_map(|e| match e {
                    memfactory_core::MemoryEdit::Overwrite { content } => Some(content.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_else(|| edit_counts(ep));
        r.push_str(&format!(
            "\n### `{}`\n\n- question: {}\n- gold: {}\n- chunks read: {}\n- final memory: {}\n- answer: {}\n- scores: {}\n",
            sample.id,
            clip(&sample.question, 300),
            sample.answers.join(" | "),
            chunks,
            clip(&last_memory, 400).replace('\n', " "),
            clip(ep.answer.as_deref().unwrap_or(""), 300).replace('\n', " "),
            score
                .scores
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    r
}

/// "3 add, 1 update, …" over an episode's applied edits (paradigms with item banks).
fn edit_counts(ep: &Episode) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for st in &ep.steps {
        if let Step::Edit { edits, .. } = st {
            for e in edits {
                let k = match e {
                    memfactory_core::MemoryEdit::Add { .. } => "add",
                    memfactory_core::MemoryEdit::Update { .. } => "update",
                    memfactory_core::MemoryEdit::Delete { .. } => "delete",
                    memfactory_core::MemoryEdit::Overwrite { .. } => "overwrite",
                    memfactory_core::MemoryEdit::Noop => "noop",
                };
                *n.entry(k).or_default() += 1;
            }
        }
    }
    if n.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = n.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!("(edits: {})", parts.join(", "))
}

/// Default run directory for `asm` when `--out` is not given.
pub fn default_out(asm: &Assembly) -> PathBuf {
    asm.run.out.clone()
}

#[cfg(test)]
mod category_tests {
    use super::*;

    #[test]
    fn category_labels_carry_the_dataset_name_when_it_differs() {
        let mut s = Sample::text("a", "q", "", vec![]);
        assert_eq!(category_label(&s), None);
        s.category = Some("2".into());
        assert_eq!(category_label(&s).as_deref(), Some("2"));
        s.meta.insert("category_name".into(), "temporal".into());
        assert_eq!(category_label(&s).as_deref(), Some("2 (temporal)"));
        s.category = Some("temporal".into());
        assert_eq!(category_label(&s).as_deref(), Some("temporal"));
    }
}
