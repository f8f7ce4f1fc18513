//! Evaluation: run the agent over the eval samples and write the run directory.
//!
//! Files written into the run directory:
//! - `recipe.resolved.toml` — the recipe with every default filled in (preceded by a comment
//!   naming the training checkpoint when [`EvalOptions::checkpoint`] is set);
//! - `trajectories.jsonl` — one line per episode: every LM call with prompt token ids,
//!   generated token ids and their log-probs, every memory edit, the answer;
//! - `scores.jsonl` — one line per sample: each metric averaged over its paths (and, with
//!   k > 1 paths, its best path: `best`);
//! - `metrics.json` — `{"metrics": {name: mean}, "ci95": {name: half-width}, "n": N, ...}`,
//!   where `metrics` is avg@k: the mean over each sample's k paths (`paths`), then over
//!   samples (`"aggregate": "avg@k"` says so); with k > 1 paths also `pass_at_k`
//!   (`{name: mean}`: the best of each sample's k paths, then the mean over samples —
//!   pass@k for a 0/1 metric),
//!   with `reward_counters` (e.g. the judge's verdicts asked, cache hits, unparsable outputs);
//! - `cost.jsonl` — one line per sample: its wall seconds (from the start of its group to its
//!   end; with `concurrency` > 1 samples share batches, so this is the latency of a sample
//!   while others run beside it), its LM calls and the prompt tokens prefilled and tokens
//!   decoded by them, and the memory's size at the end in tokens ([`SampleCost`]). Timing is kept out of `scores.jsonl` and
//!   `trajectories.jsonl`, which stay byte-for-byte reproducible; no score reads it;
//! - `metrics.json` also holds `cost` ([`CostSummary`]): mean, median and p95 seconds per
//!   question, wall seconds per question, LM calls, prompt and generated tokens and memory
//!   tokens at the end per question, and the peak resident memory
//!   (Linux: `VmHWM` of `/proc/self/status`, reset through `/proc/self/clear_refs` when the
//!   eval starts so that it is this eval's peak — the loaded model included; elsewhere
//!   absent, with a note saying why);
//! - files a metric keeps, e.g. the LLM judge's verdict cache `judge-cache.jsonl`;
//! - `report.md` — a readable summary with a few examples.
//!
//! The directory is consistent at every instant, so a killed eval leaves no file that
//! contradicts another:
//! - the summaries (`metrics.json`, then `report.md`) are removed before any per-sample file
//!   changes, and written at the end through a temp file, fsync and rename — `report.md`
//!   first, `metrics.json` last, so `metrics.json` marks a finished eval (sweeps reuse a
//!   combination by it);
//! - a fresh eval empties `scores.jsonl`, then `trajectories.jsonl`, and only then replaces
//!   `recipe.resolved.toml`, so the per-sample lines always belong to the recipe beside them;
//! - per-sample lines are appended in sample order, a sample's trajectories before its
//!   score, each line (newline included) with one write; a sample is finished once its
//!   `scores.jsonl` line is whole. A reader ignores the text after the last newline: a kill
//!   can cut a long line short.
//!
//! With [`EvalOptions::resume`] an eval keeps the samples an interrupted eval of the same
//! resolved recipe finished and runs the others; episode seeds derive from the run seed
//! and the sample id, and the summary is computed from the lines as `scores.jsonl` holds
//! them, so the result is that of an uninterrupted eval.

use std::collections::BTreeMap;
use std::collections::BTreeMap as Reorder;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use memfactory_core::{
    Embedder, Episode, EpisodeCx, Error, LanguageModel, LoadCx, Paradigm, Result, Sample, Step,
    StoreFactory, seed,
};
use serde::{Deserialize, Serialize};

use crate::Assembly;
use crate::batching::BatchingLm;

/// Per-sample result (one line of `scores.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleScore {
    /// Sample id.
    pub id: String,
    /// Each metric averaged over the sample's paths (avg@k).
    pub scores: BTreeMap<String, f64>,
    /// Each metric's best path (the maximum over the sample's paths), when it has more than
    /// one path; `metrics.json`'s `pass_at_k` is its mean.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub best: BTreeMap<String, f64>,
    /// Answer of path 0.
    pub answer: Option<String>,
    /// Gold answers.
    pub gold: Vec<String>,
    /// The sample's category (`"1 (multi-hop)"`: [`Sample::category`] with its
    /// `meta.category_name` when the dataset gives one), for per-category reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The metrics' event counts ([`memfactory_core::Reward::counters`]) this sample's
    /// scoring added, the non-zero ones; `metrics.json`'s `reward_counters` is their sum.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reward_counters: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The cost of one sample (one line of `cost.jsonl`): reported, never scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleCost {
    /// Sample id.
    pub id: String,
    /// Wall seconds from the start of the sample's group of episodes to its end (with
    /// several samples in flight, their LM calls share batches: the sample's latency).
    pub seconds: f64,
    /// LM calls of its episodes.
    pub lm_calls: usize,
    /// Prompt tokens of those calls (what the model prefilled, before any prefix reuse).
    pub prompt_tokens: usize,
    /// Tokens those calls generated (decoded).
    pub generated_tokens: usize,
    /// The memory's size at the end, in tokens, mean over the sample's episodes
    /// ([`Episode::memory_tokens`]); absent when no episode could say (and in lines written
    /// before the field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_tokens: Option<f64>,
}

impl SampleCost {
    /// The cost of `episodes` of sample `id`, run in `seconds`.
    pub fn of(id: &str, episodes: &[Episode], seconds: f64) -> SampleCost {
        let (mut lm_calls, mut prompt_tokens, mut generated_tokens) = (0, 0, 0);
        for c in episodes.iter().flat_map(Episode::lm_calls) {
            lm_calls += 1;
            prompt_tokens += c.output.prompt_ids.len();
            generated_tokens += c.output.token_ids.len();
        }
        let sizes: Vec<f64> = episodes
            .iter()
            .filter_map(|e| e.memory_tokens)
            .map(|t| t as f64)
            .collect();
        SampleCost {
            id: id.to_string(),
            seconds,
            lm_calls,
            prompt_tokens,
            generated_tokens,
            memory_tokens: (!sizes.is_empty())
                .then(|| sizes.iter().sum::<f64>() / sizes.len() as f64),
        }
    }
}

/// What an eval cost (`metrics.json`'s `cost`): timing and memory, reported beside the
/// metrics and never used in them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// Samples with a `cost.jsonl` line (all of them, unless a resumed eval's earlier
    /// samples were run by a version that kept no cost).
    pub samples: usize,
    /// Mean over samples of a sample's wall seconds ([`SampleCost::seconds`]).
    pub seconds_per_question_mean: f64,
    /// Median of the same.
    pub seconds_per_question_median: f64,
    /// 95th percentile of the same (nearest rank).
    #[serde(default)]
    pub seconds_per_question_p95: f64,
    /// This eval's wall time over the samples it ran (throughput: with several samples in
    /// flight, below the per-sample latency).
    pub wall_seconds_per_question: f64,
    /// Mean prompt tokens per question (summed over its LM calls).
    pub prompt_tokens_per_question: f64,
    /// Mean generated tokens per question.
    pub generated_tokens_per_question: f64,
    /// Mean LM calls per question (over its episodes).
    #[serde(default)]
    pub lm_calls_per_question: f64,
    /// Mean memory size at the end, in tokens, over the questions whose episodes reported
    /// one ([`SampleCost::memory_tokens`]); absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_tokens_per_question: Option<f64>,
    /// Peak resident memory in bytes (`VmHWM`); absent where the system does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// What the peak covers: `eval` (reset when the eval started, model already loaded),
    /// `process` (since the process started: the reset was refused), or why it is absent.
    pub peak_rss_scope: String,
}

impl CostSummary {
    /// The peak RSS in MiB, when known.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.peak_rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0))
    }
}

/// Resets the process's peak RSS to its current RSS (Linux >= 4.0: `5` written to
/// `/proc/self/clear_refs`); whether it was reset.
fn reset_peak_rss() -> bool {
    cfg!(target_os = "linux") && std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak RSS in bytes (`VmHWM` of `/proc/self/status`, Linux), or why not.
fn peak_rss() -> std::result::Result<u64, String> {
    if !cfg!(target_os = "linux") {
        return Err("unavailable: peak RSS is read from /proc/self/status (Linux only)".into());
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("unavailable: /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| "unavailable: /proc/self/status has no VmHWM".into())
}

/// The `q`-quantile of `v` by nearest rank (the smallest value with at least `q` of the
/// values at or below it; 0 when empty).
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// Mean and median of `v` (0 when empty).
fn mean_median(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    };
    (mean, median)
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
    /// How `metrics` aggregates a sample's paths: `"avg@k"` with k = `paths` (mean over
    /// the paths, then over samples).
    pub aggregate: String,
    /// Mean of each metric over samples (avg@k).
    pub metrics: BTreeMap<String, f64>,
    /// With more than one path per sample: the mean over samples of each metric's best
    /// path (pass@k for a 0/1 metric); empty with one path.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pass_at_k: BTreeMap<String, f64>,
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
    /// Timing and memory ([`CostSummary`]); never used in `metrics`.
    pub cost: CostSummary,
    /// Each metric's event counts ([`memfactory_core::Reward::counters`]), for the metrics
    /// that keep any.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reward_counters: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Progress events for a UI.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Samples loaded; `total` will be evaluated, of which `done` were finished by the
    /// interrupted eval being resumed.
    Start {
        /// How many samples.
        total: usize,
        /// How many of them were finished earlier (0 unless resuming).
        done: usize,
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

/// `v` as one JSONL line, newline included.
fn json_line<T: Serialize>(v: &T) -> Result<String> {
    let mut line = serde_json::to_string(v).map_err(|e| Error::Invalid(e.to_string()))?;
    line.push('\n');
    Ok(line)
}

/// Appends `line` (newline included) with one write, so that a concurrent reader or a kill
/// sees the line whole or not at all, or, should a kill cut a long write short, a last line
/// without its newline, which readers ignore ([`whole_lines`]).
fn append_line(w: &mut impl Write, path: &Path, line: &str) -> Result<()> {
    w.write_all(line.as_bytes()).map_err(write_err(path))
}

/// The whole lines of a JSONL file's bytes: everything up to and including the last
/// newline. What follows it is a line whose write a kill cut short; it is no record.
pub fn whole_lines(bytes: &[u8]) -> &[u8] {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[],
    }
}

/// The whole lines of the JSONL file at `path` as text (empty when there is no file).
fn read_whole_lines(path: &Path) -> Result<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let n = whole_lines(&bytes).len();
    let mut bytes = bytes;
    bytes.truncate(n);
    String::from_utf8(bytes).map_err(|e| Error::data(path, None, format!("not UTF-8 text: {e}")))
}

/// Where [`write_atomic`] writes before renaming: `.<name>.tmp` beside `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Makes the directory's entries (created, renamed, removed files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `path` with `bytes` atomically: written to a temp file beside it, fsynced,
/// renamed over `path`, the directory fsynced. A reader or a kill sees the old file or the
/// new one, never part of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(write_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(write_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(write_err(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
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

/// What [`run_pooled`] hands its sink: sample index, result, wall seconds of the run.
type Ran = (usize, Result<Vec<Episode>>, f64);

/// Runs `run` on every sample on up to `concurrency` worker threads whose LM calls go
/// through one [`BatchingLm`] over `lm` (batches of at most `concurrency × paths`
/// requests). `sink` gets each `(sample index, result, wall seconds)` on the calling thread
/// in completion order; returning `false` stops the workers (a worker also stops after its own error).
fn run_pooled(
    lm: &dyn LanguageModel,
    paths: usize,
    samples: &[Sample],
    concurrency: usize,
    run: &RunOne<'_>,
    sink: &mut dyn FnMut(Ran) -> bool,
) {
    let n = samples.len();
    let concurrency = concurrency.clamp(1, n.max(1));
    let batching = BatchingLm::new(lm, concurrency * paths.max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Ran>();
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
                    let t0 = Instant::now();
                    let r = run(batching, &samples[i]);
                    let seconds = t0.elapsed().as_secs_f64();
                    let failed = r.is_err();
                    if tx.send((i, r, seconds)).is_err() || failed {
                        next.store(n, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
        drop(tx);
        for ran in rx {
            if !sink(ran) {
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
        &mut |(i, r, _)| {
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
    Ok(score_sample_paths(asm, sample, episodes)?.0)
}

/// Scores `episodes` of `sample` with every metric: the mean over paths (avg@k) and, with
/// more than one episode, the best path (the maximum; empty with one episode).
pub fn score_sample_paths(
    asm: &Assembly,
    sample: &Sample,
    episodes: &[Episode],
) -> Result<(BTreeMap<String, f64>, BTreeMap<String, f64>)> {
    let mut out = BTreeMap::new();
    let mut best = BTreeMap::new();
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
            if episodes.len() > 1 {
                let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                best.insert(m.name().to_string(), max);
            }
        }
    }
    Ok((out, best))
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

/// How an eval treats its run directory ([`run_eval_with`], [`run_eval_on_with`]).
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Resume an interrupted eval: keep the samples it finished in the directory and run
    /// only the others. The directory's `recipe.resolved.toml` must equal this eval's (an
    /// error otherwise, naming the first line that differs), and its finished samples must
    /// be this eval's first ones (same ids, gold answers, categories). A directory without
    /// `recipe.resolved.toml` starts fresh. Without `resume` the directory's eval files are
    /// replaced.
    pub resume: bool,
    /// The training checkpoint whose weights the model carries (`eval --checkpoint`): named
    /// in a comment heading `recipe.resolved.toml`, so that a resume with other weights is
    /// refused.
    pub checkpoint: Option<PathBuf>,
}

/// Runs the eval: loads samples, runs every group, writes the run directory `out`
/// (replacing an eval found there).
pub fn run_eval(
    asm: &Assembly,
    limit: Option<usize>,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalSummary> {
    run_eval_with(asm, limit, out, &EvalOptions::default(), progress)
}

/// [`run_eval`] with options (resuming an interrupted eval).
pub fn run_eval_with(
    asm: &Assembly,
    limit: Option<usize>,
    out: &Path,
    options: &EvalOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalSummary> {
    let samples = load_eval_samples(asm, limit)?;
    run_eval_on_with(asm, &samples, out, options, progress)
}

/// Evaluates the recipe's agent and model on `samples`, writing the run directory `out`
/// (replacing an eval found there).
pub fn run_eval_on(
    asm: &Assembly,
    samples: &[Sample],
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalSummary> {
    run_eval_on_with(asm, samples, out, &EvalOptions::default(), progress)
}

/// The files of a run directory.
struct RunFiles {
    dir: PathBuf,
    resolved: PathBuf,
    trajectories: PathBuf,
    scores: PathBuf,
    cost: PathBuf,
    metrics: PathBuf,
    report: PathBuf,
}

impl RunFiles {
    fn at(dir: &Path) -> RunFiles {
        RunFiles {
            dir: dir.to_path_buf(),
            resolved: dir.join("recipe.resolved.toml"),
            trajectories: dir.join("trajectories.jsonl"),
            scores: dir.join("scores.jsonl"),
            cost: dir.join("cost.jsonl"),
            metrics: dir.join("metrics.json"),
            report: dir.join("report.md"),
        }
    }

    /// Removes the summaries (and temp files a kill left of them), `metrics.json` — the
    /// mark of a finished eval — first, and makes the removal durable before anything
    /// they summarize changes.
    fn remove_summaries(&self) -> Result<()> {
        for p in [&self.metrics, &self.report] {
            remove_if_present(p)?;
            remove_if_present(&tmp_path(p))?;
        }
        sync_dir(&self.dir)
    }

    /// Starts a fresh eval: empties `scores.jsonl`, then `trajectories.jsonl` (so that no
    /// score is ever without its trajectories), then writes `resolved`.
    fn start_fresh(&self, resolved: &str) -> Result<()> {
        for p in [&self.scores, &self.trajectories, &self.cost] {
            File::create(p).map_err(write_err(p))?;
        }
        write_atomic(&self.resolved, resolved.as_bytes())
    }

    /// Reads what an interrupted eval of the recipe `resolved` finished into `tally`,
    /// changing nothing; `None` when the directory holds no eval to resume.
    fn read_finished(
        &self,
        resolved: &str,
        samples: &[Sample],
        paths: usize,
        tally: &mut Tally,
    ) -> Result<Option<Finished>> {
        let old = match std::fs::read_to_string(&self.resolved) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.resolved, e)),
        };
        if old != resolved {
            return Err(Error::config(
                "--resume",
                format!(
                    "{} holds an eval of a different recipe ({}); run without --resume to \
                     replace it, or choose another --out",
                    self.dir.display(),
                    first_difference(&old, resolved)
                ),
            ));
        }
        let restart = "run without --resume to start over";
        let scores_text = read_whole_lines(&self.scores)?;
        let mut finished = Vec::new();
        for (i, line) in scores_text.lines().enumerate() {
            let at = || Some(format!("line {}", i + 1));
            let score: SampleScore = serde_json::from_str(line).map_err(|e| {
                Error::data(&self.scores, at(), format!("not a sample's scores: {e}"))
            })?;
            let Some(sample) = samples.get(i) else {
                return Err(Error::data(
                    &self.scores,
                    None,
                    format!(
                        "{} samples finished, but this eval has {} (a smaller --limit?); {restart}",
                        scores_text.lines().count(),
                        samples.len()
                    ),
                ));
            };
            if score.id != sample.id
                || score.gold != sample.answers
                || score.category != category_label(sample)
            {
                return Err(Error::data(
                    &self.scores,
                    at(),
                    format!(
                        "sample `{}` with gold {:?}, but this eval's sample {} is `{}` with \
                         gold {:?}: the data changed; {restart}",
                        score.id,
                        score.gold,
                        i + 1,
                        sample.id,
                        sample.answers
                    ),
                ));
            }
            finished.push(score);
        }
        let traj_text = read_whole_lines(&self.trajectories)?;
        let mut lines = traj_text.split_inclusive('\n').enumerate();
        let mut traj_len = 0usize;
        for (sample, score) in samples.iter().zip(&finished) {
            let mut group = Vec::with_capacity(paths);
            for p in 0..paths {
                let Some((j, line)) = lines.next() else {
                    return Err(Error::data(
                        &self.trajectories,
                        None,
                        format!(
                            "{} samples are scored but only {} episodes recorded; {restart}",
                            finished.len(),
                            traj_text.lines().count()
                        ),
                    ));
                };
                let at = || Some(format!("line {}", j + 1));
                let e: Episode = serde_json::from_str(line).map_err(|e| {
                    Error::data(&self.trajectories, at(), format!("not an episode: {e}"))
                })?;
                if e.sample_id != sample.id || e.path != p {
                    return Err(Error::data(
                        &self.trajectories,
                        at(),
                        format!(
                            "episode of sample `{}` path {}, expected sample `{}` path {p}; \
                             {restart}",
                            e.sample_id, e.path, sample.id
                        ),
                    ));
                }
                traj_len += line.len();
                group.push(e);
            }
            tally.add(sample, &group, score);
        }
        // Cost lines are reported, never results: the finished samples' lines that read
        // back are kept (a line a kill cut short, or one of a sample whose score was not
        // written, is dropped).
        let cost_text = read_whole_lines(&self.cost)?;
        let mut cost_len = 0usize;
        for (line, score) in cost_text.split_inclusive('\n').zip(&finished) {
            match serde_json::from_str::<SampleCost>(line) {
                Ok(c) if c.id == score.id => {
                    cost_len += line.len();
                    tally.costs.push(c);
                }
                _ => break,
            }
        }
        Ok(Some(Finished {
            samples: finished.len(),
            scores_len: scores_text.len() as u64,
            trajectories_len: traj_len as u64,
            cost_len: cost_len as u64,
        }))
    }

    /// Cuts the per-sample files back to the whole lines of the finished samples: drops a
    /// line a kill cut short, and the trajectories of a sample whose score was not written.
    fn cut_to(&self, f: &Finished) -> Result<()> {
        truncate_to(&self.scores, f.scores_len)?;
        truncate_to(&self.trajectories, f.trajectories_len)?;
        truncate_to(&self.cost, f.cost_len)
    }
}

/// The samples an interrupted eval finished, and where their lines end.
struct Finished {
    samples: usize,
    scores_len: u64,
    trajectories_len: u64,
    cost_len: u64,
}

/// Cuts the file at `path` to `len` bytes when it is longer.
fn truncate_to(path: &Path, len: u64) -> Result<()> {
    let f = match File::options().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    if f.metadata().map_err(write_err(path))?.len() > len {
        f.set_len(len)
            .and_then(|()| f.sync_all())
            .map_err(write_err(path))?;
    }
    Ok(())
}

/// Where two resolved recipes first differ, for an error message.
fn first_difference(old: &str, new: &str) -> String {
    let (mut a, mut b) = (old.lines(), new.lines());
    let mut line = 1;
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => line += 1,
            (None, None) => return "they differ in whitespace".into(),
            (x, y) => {
                return format!(
                    "line {line}: `{}` there, `{}` now",
                    x.unwrap_or("(end of file)"),
                    y.unwrap_or("(end of file)")
                );
            }
        }
    }
}

/// The recipe text an eval writes to `recipe.resolved.toml`.
fn resolved_text(asm: &Assembly, options: &EvalOptions) -> String {
    match &options.checkpoint {
        Some(ck) => format!(
            "# weights: training checkpoint {}\n{}",
            ck.display(),
            asm.resolved_toml()
        ),
        None => asm.resolved_toml(),
    }
}

/// Counters of every metric that keeps any.
fn reward_counters(asm: &Assembly) -> BTreeMap<String, BTreeMap<String, u64>> {
    asm.metrics
        .iter()
        .map(|m| (m.name().to_string(), m.counters()))
        .filter(|(_, c)| !c.is_empty())
        .collect()
}

/// What the summary is computed from, sample by sample in sample order.
#[derive(Default)]
struct Tally {
    per_metric: BTreeMap<String, Vec<f64>>,
    per_metric_best: BTreeMap<String, Vec<f64>>,
    per_category: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    category_n: BTreeMap<String, usize>,
    counters: BTreeMap<String, BTreeMap<String, u64>>,
    lm_calls: usize,
    generated: usize,
    examples: Vec<(Sample, Episode, SampleScore)>,
    /// The samples' costs (`cost.jsonl`), in sample order.
    costs: Vec<SampleCost>,
}

impl Tally {
    /// Adds one finished sample: its episodes and its scores as read from `scores.jsonl`.
    fn add(&mut self, sample: &Sample, episodes: &[Episode], score: &SampleScore) {
        for c in episodes.iter().flat_map(Episode::lm_calls) {
            self.lm_calls += 1;
            self.generated += c.output.token_ids.len();
        }
        for (k, v) in &score.scores {
            self.per_metric.entry(k.clone()).or_default().push(*v);
            if let Some(b) = score.best.get(k) {
                self.per_metric_best.entry(k.clone()).or_default().push(*b);
            }
            if let Some(c) = &score.category {
                self.per_category
                    .entry(c.clone())
                    .or_default()
                    .entry(k.clone())
                    .or_default()
                    .push(*v);
            }
        }
        if let Some(c) = &score.category {
            *self.category_n.entry(c.clone()).or_default() += 1;
        }
        for (m, counts) in &score.reward_counters {
            let sum = self.counters.entry(m.clone()).or_default();
            for (k, v) in counts {
                *sum.entry(k.clone()).or_default() += v;
            }
        }
        if self.examples.len() < 3
            && let Some(e) = episodes.first()
        {
            self.examples
                .push((sample.clone(), e.clone(), score.clone()));
        }
    }
}

/// Evaluates the recipe's agent and model on `samples`, writing the run directory `out`;
/// with [`EvalOptions::resume`], continues the interrupted eval found there.
pub fn run_eval_on_with(
    asm: &Assembly,
    samples: &[Sample],
    out: &Path,
    options: &EvalOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalSummary> {
    let start = Instant::now();
    // The peak RSS reported is this eval's (the loaded model included) where it can be reset.
    let rss_reset = reset_peak_rss();
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let files = RunFiles::at(out);
    let resolved = resolved_text(asm, options);
    let paths = asm.agent.paths().max(1);
    let mut tally = Tally::default();
    // A resume that is refused changes nothing.
    let resumed = if options.resume {
        files.read_finished(&resolved, samples, paths, &mut tally)?
    } else {
        None
    };
    files.remove_summaries()?;
    let done = match resumed {
        Some(f) => {
            files.cut_to(&f)?;
            f.samples
        }
        None => {
            files.start_fresh(&resolved)?;
            0
        }
    };
    let open = |p: &Path| {
        File::options()
            .create(true)
            .append(true)
            .open(p)
            .map_err(write_err(p))
    };
    let (traj_path, scores_path, cost_path) = (&files.trajectories, &files.scores, &files.cost);
    let mut traj = open(traj_path)?;
    let mut scores_w = open(scores_path)?;
    let mut cost_w = open(cost_path)?;
    for m in &asm.metrics {
        m.attach_run_dir(out)?;
    }
    // A dataset that records how it chose its samples (ruler-hqa's closed-book filter: the
    // kept ids) writes the record into the run directory.
    if let Some(d) = &asm.eval_data {
        d.attach_run_dir(out)?;
    }
    progress(Progress::Start {
        total: samples.len(),
        done,
    });

    let rest = &samples[done..];
    let mut failure: Option<Error> = None;
    // Results arrive in completion order; write them in sample order.
    let mut waiting: Reorder<usize, (Vec<Episode>, f64)> = Reorder::new();
    let mut written = 0usize;
    run_pooled(
        asm.model.as_ref(),
        paths,
        rest,
        asm.eval_concurrency,
        &|lm, sample| run_sample_with(asm, lm, sample),
        &mut |(i, r, seconds)| {
            if failure.is_some() {
                return false;
            }
            match r {
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
                Ok(eps) => {
                    waiting.insert(i, (eps, seconds));
                }
            }
            while let Some((episodes, seconds)) = waiting.remove(&written) {
                let sample = &rest[written];
                written += 1;
                let step = (|| -> Result<SampleScore> {
                    for e in &episodes {
                        append_line(&mut traj, traj_path, &json_line(e)?)?;
                    }
                    // Before the score line, which marks the sample finished.
                    let cost = SampleCost::of(&sample.id, &episodes, seconds);
                    append_line(&mut cost_w, cost_path, &json_line(&cost)?)?;
                    tally.costs.push(cost);
                    let before = reward_counters(asm);
                    let (scores, best) = score_sample_paths(asm, sample, &episodes)?;
                    let mut counters = reward_counters(asm);
                    for (m, counts) in &mut counters {
                        for (k, v) in counts.iter_mut() {
                            let was = before.get(m).and_then(|c| c.get(k)).copied();
                            *v = v.saturating_sub(was.unwrap_or(0));
                        }
                        counts.retain(|_, v| *v > 0);
                    }
                    counters.retain(|_, c| !c.is_empty());
                    let score = SampleScore {
                        id: sample.id.clone(),
                        scores,
                        best,
                        answer: episodes.first().and_then(|e| e.answer.clone()),
                        gold: sample.answers.clone(),
                        category: category_label(sample),
                        reward_counters: counters,
                    };
                    let line = json_line(&score)?;
                    append_line(&mut scores_w, scores_path, &line)?;
                    // The summary is computed from the scores as the file holds them (read
                    // back: serde_json's reading of a float may differ from the written
                    // one in its last bit), as a resumed eval reads the finished samples.
                    let score: SampleScore = serde_json::from_str(&line)
                        .map_err(|e| Error::Invalid(format!("scores line: {e}")))?;
                    tally.add(sample, &episodes, &score);
                    Ok(score)
                })();
                match step {
                    Ok(score) => progress(Progress::Sample { score }),
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
    // The per-sample lines are durable before a summary of them is.
    for (f, p) in [
        (&traj, traj_path),
        (&cost_w, cost_path),
        (&scores_w, scores_path),
    ] {
        f.sync_data().map_err(write_err(p))?;
    }

    let mut metrics = BTreeMap::new();
    let mut ci95 = BTreeMap::new();
    for (k, v) in &tally.per_metric {
        let (m, c) = mean_ci(v);
        metrics.insert(k.clone(), m);
        ci95.insert(k.clone(), c);
    }
    // pass@k of a metric only when every sample scored by it has its best path (a resumed
    // eval's older lines may lack it).
    let pass_at_k: BTreeMap<String, f64> = tally
        .per_metric_best
        .iter()
        .filter(|(k, b)| tally.per_metric.get(*k).is_some_and(|v| v.len() == b.len()))
        .map(|(k, b)| (k.clone(), b.iter().sum::<f64>() / b.len() as f64))
        .collect();
    let by_category = std::mem::take(&mut tally.per_category)
        .into_iter()
        .map(|(c, per)| {
            let (mut metrics, mut ci95) = (BTreeMap::new(), BTreeMap::new());
            for (k, v) in &per {
                let (m, h) = mean_ci(v);
                metrics.insert(k.clone(), m);
                ci95.insert(k.clone(), h);
            }
            let n = tally.category_n.get(&c).copied().unwrap_or(0);
            (c, CategorySummary { n, metrics, ci95 })
        })
        .collect();
    // Every counter a metric keeps, summed over the samples (those that stayed zero too).
    let mut counters = reward_counters(asm);
    for (m, counts) in &mut counters {
        for (k, v) in counts.iter_mut() {
            *v = tally
                .counters
                .get(m)
                .and_then(|c| c.get(k))
                .copied()
                .unwrap_or(0);
        }
    }
    for (m, counts) in &tally.counters {
        let sum = counters.entry(m.clone()).or_default();
        for (k, v) in counts {
            sum.entry(k.clone()).or_insert(*v);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let per_q: Vec<f64> = tally.costs.iter().map(|c| c.seconds).collect();
    let (mean_s, median_s) = mean_median(&per_q);
    let nc = tally.costs.len().max(1) as f64;
    let ran = samples.len() - done;
    let (peak_rss_bytes, peak_rss_scope) = match peak_rss() {
        Ok(b) if rss_reset => (Some(b), "eval".to_string()),
        Ok(b) => (Some(b), "process".to_string()),
        Err(why) => (None, why),
    };
    let cost = CostSummary {
        samples: tally.costs.len(),
        seconds_per_question_mean: mean_s,
        seconds_per_question_median: median_s,
        seconds_per_question_p95: nearest_rank(&per_q, 0.95),
        wall_seconds_per_question: if ran > 0 { seconds / ran as f64 } else { 0.0 },
        prompt_tokens_per_question: tally.costs.iter().map(|c| c.prompt_tokens).sum::<usize>()
            as f64
            / nc,
        generated_tokens_per_question: tally
            .costs
            .iter()
            .map(|c| c.generated_tokens)
            .sum::<usize>() as f64
            / nc,
        lm_calls_per_question: tally.costs.iter().map(|c| c.lm_calls).sum::<usize>() as f64 / nc,
        memory_tokens_per_question: {
            let m: Vec<f64> = tally.costs.iter().filter_map(|c| c.memory_tokens).collect();
            (!m.is_empty()).then(|| m.iter().sum::<f64>() / m.len() as f64)
        },
        peak_rss_bytes,
        peak_rss_scope,
    };
    let summary = EvalSummary {
        aggregate: format!("avg@{paths}"),
        metrics,
        pass_at_k,
        ci95,
        by_category,
        n: samples.len(),
        paths,
        lm_calls: tally.lm_calls,
        generated_tokens: tally.generated,
        seconds,
        model: asm.model.describe(),
        cost,
        reward_counters: counters,
    };
    write_atomic(
        &files.report,
        report(asm, &summary, &tally.examples).as_bytes(),
    )?;
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?;
    // Last: metrics.json marks a finished eval.
    write_atomic(&files.metrics, json.as_bytes())?;
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
        "- recipe: `{}`\n- model: {}\n- agent: `{}`, {} path(s) per sample (avg@{})\n- samples: {}\n- LM calls: {}, generated tokens: {}\n- per question: {:.1} LM calls, {:.0} prompt tokens, {:.0} generated tokens, memory at the end {}\n- wall time: {:.1} s; per question {:.2} s mean, {:.2} s median, {:.2} s p95; peak RSS {}\n\n",
        asm.recipe_file,
        s.model,
        asm.agent.kind(),
        s.paths,
        s.paths,
        s.n,
        s.lm_calls,
        s.generated_tokens,
        s.cost.lm_calls_per_question,
        s.cost.prompt_tokens_per_question,
        s.cost.generated_tokens_per_question,
        match s.cost.memory_tokens_per_question {
            Some(t) => format!("{t:.0} tokens"),
            None => "not reported".to_string(),
        },
        s.seconds,
        s.cost.seconds_per_question_mean,
        s.cost.seconds_per_question_median,
        s.cost.seconds_per_question_p95,
        match s.cost.peak_rss_mib() {
            Some(m) => format!("{m:.0} MiB ({})", s.cost.peak_rss_scope),
            None => s.cost.peak_rss_scope.clone(),
        }
    ));
    if s.pass_at_k.is_empty() {
        r.push_str(&format!(
            "| metric | {} | 95% CI |\n|---|---|---|\n",
            s.aggregate
        ));
    } else {
        r.push_str(&format!(
            "| metric | {} | 95% CI | pass@{} |\n|---|---|---|---|\n",
            s.aggregate, s.paths
        ));
    }
    for (k, v) in &s.metrics {
        let c = s.ci95.get(k).copied().unwrap_or(0.0);
        r.push_str(&format!(
            "| {k} | {v:.4} | [{:.4}, {:.4}] |",
            (v - c).max(0.0),
            v + c
        ));
        if !s.pass_at_k.is_empty() {
            match s.pass_at_k.get(k) {
                Some(p) => r.push_str(&format!(" {p:.4} |")),
                None => r.push_str(" – |"),
            }
        }
        r.push('\n');
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

#[cfg(test)]
mod run_dir_tests {
    use super::*;

    #[test]
    fn a_last_line_without_its_newline_is_no_record() {
        assert_eq!(whole_lines(b"{\"a\":1}\n{\"b\":"), b"{\"a\":1}\n");
        assert_eq!(whole_lines(b"{\"a\":1}\n"), b"{\"a\":1}\n");
        assert_eq!(whole_lines(b"{\"a\":1}"), b"");
        assert_eq!(whole_lines(b""), b"");
        // A kill can cut a multi-byte character in two: the whole lines are still text.
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.jsonl");
        let mut bytes = "{\"a\":\"é\"}\n{\"a\":\"é".as_bytes().to_vec();
        bytes.pop();
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(read_whole_lines(&p).unwrap(), "{\"a\":\"é\"}\n");
        assert_eq!(read_whole_lines(&t.path().join("none")).unwrap(), "");
    }

    /// Records every `write` call it gets.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_goes_out_in_one_write_with_its_newline() {
        let mut w = Writes::default();
        let long = "x".repeat(100_000);
        let line = json_line(&serde_json::json!({ "id": "a", "text": long })).unwrap();
        append_line(&mut w, Path::new("t.jsonl"), &line).unwrap();
        assert_eq!(w.0.len(), 1, "one write per line");
        assert_eq!(w.0[0], line.as_bytes());
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("metrics.json");
        std::fs::write(&p, "old").unwrap();
        // A reader holding the old file keeps the old text: the file is replaced, never
        // rewritten in place.
        std::fs::hard_link(&p, t.path().join("held")).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(
            std::fs::read_to_string(t.path().join("held")).unwrap(),
            "old"
        );
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn seconds_per_question_have_a_mean_and_a_median() {
        let (mean, median) = mean_median(&[1.0, 10.0, 2.0]);
        assert!((mean - 13.0 / 3.0).abs() < 1e-12 && median == 2.0);
        assert_eq!(mean_median(&[4.0, 1.0, 3.0, 2.0]), (2.5, 2.5));
        assert_eq!(mean_median(&[5.0, 1.0, 9.0, 1.0]).1, 3.0);
        assert_eq!(mean_median(&[]), (0.0, 0.0));
        if cfg!(target_os = "linux") {
            // VmHWM in bytes: at least the pages this process has touched.
            let b = peak_rss().unwrap();
            assert!(b >= 1 << 20, "{b}");
        } else {
            assert!(peak_rss().unwrap_err().contains("unavailable"));
        }
    }

    #[test]
    fn recipe_differences_are_named_by_line() {
        assert_eq!(
            first_difference("a = 1\nb = 2\n", "a = 1\nb = 3\n"),
            "line 2: `b = 2` there, `b = 3` now"
        );
        assert_eq!(
            first_difference("a = 1\n", "a = 1\nc = 4\n"),
            "line 2: `(end of file)` there, `c = 4` now"
        );
    }
}

/// Eval runs on the scripted smoke recipe (RULER needles, scripted LM).
#[cfg(all(
    test,
    feature = "lm-scripted",
    feature = "agent-memagent",
    feature = "op-overwrite",
    feature = "data-ruler",
    feature = "reward-sub-em",
    feature = "reward-exact-match",
    feature = "reward-format",
    feature = "reward-ruler-string-match"
))]
mod eval_dir_tests {
    use super::*;
    use memfactory_core::Recipe;

    fn smoke(samples: usize, seed: u64) -> Assembly {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/memagent_ruler_scripted_smoke.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut r = Recipe::parse(&text, path).unwrap();
        r.set("data.eval.samples", toml::Value::Integer(samples as i64))
            .unwrap();
        r.set("data.eval.seed", toml::Value::Integer(seed as i64))
            .unwrap();
        Assembly::from_recipe(&r).unwrap()
    }

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn a_rerun_removes_the_old_summaries_before_any_sample_line_changes() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        run_eval(&smoke(6, 0), None, out, &mut |_| {}).unwrap();
        let old_scores = read(out, "scores.jsonl");
        assert!(out.join("metrics.json").exists() && out.join("report.md").exists());

        // A rerun with another recipe: while the per-sample files change, no summary of
        // the old run may stand beside them.
        let mut seen = Vec::new();
        run_eval(&smoke(6, 1), None, out, &mut |p| {
            let scores = std::fs::read_to_string(out.join("scores.jsonl")).unwrap();
            let stale = out.join("metrics.json").exists() || out.join("report.md").exists();
            seen.push((
                matches!(p, Progress::Start { .. }),
                scores != old_scores,
                stale,
            ));
        })
        .unwrap();
        assert_eq!(seen.len(), 7);
        assert!(seen.iter().skip(1).all(|s| s.1), "the scores changed");
        assert!(
            seen.iter().all(|s| !s.2),
            "an old summary beside new scores: {seen:?}"
        );
        let m: serde_json::Value = serde_json::from_str(&read(out, "metrics.json")).unwrap();
        assert_eq!(m["n"], 6);
    }

    #[test]
    fn resuming_after_a_cut_gives_the_uninterrupted_result() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let asm = smoke(7, 3);
        let whole = run_eval(&asm, None, &a, &mut |_| {}).unwrap();

        // The state a kill leaves: 3 samples scored, the 4th one's trajectory written, the
        // 5th one's cut mid-line; no summary.
        run_eval(&asm, None, &b, &mut |_| {}).unwrap();
        let traj = read(&a, "trajectories.jsonl");
        let scores = read(&a, "scores.jsonl");
        let keep = |text: &str, n: usize, extra: usize| {
            let mut s: String = text.split_inclusive('\n').take(n).collect();
            let next = text.split_inclusive('\n').nth(n).unwrap();
            s.push_str(&next[..extra.min(next.len() - 1)]);
            s
        };
        let cut_traj = {
            let mut s = keep(&traj, 4, 0);
            let fifth = traj.split_inclusive('\n').nth(4).unwrap();
            s.push_str(&fifth[..fifth.len() / 2]);
            s
        };
        std::fs::write(b.join("trajectories.jsonl"), cut_traj).unwrap();
        std::fs::write(b.join("scores.jsonl"), keep(&scores, 3, 5)).unwrap();
        for f in ["metrics.json", "report.md"] {
            std::fs::remove_file(b.join(f)).unwrap();
        }

        let resume = EvalOptions {
            resume: true,
            ..EvalOptions::default()
        };
        let mut events = Vec::new();
        let resumed = run_eval_on_with(
            &asm,
            &load_eval_samples(&asm, None).unwrap(),
            &b,
            &resume,
            &mut |p| {
                events.push(match p {
                    Progress::Start { total, done } => format!("start {done}/{total}"),
                    Progress::Sample { score } => score.id,
                })
            },
        )
        .unwrap();
        assert_eq!(events.len(), 5, "{events:?}");
        assert_eq!(events[0], "start 3/7");
        assert_eq!(read(&b, "scores.jsonl"), scores);
        assert_eq!(read(&b, "trajectories.jsonl"), traj);
        // cost.jsonl: one line per sample, in sample order, the cut one's dropped.
        let ids = |d: &Path, f: &str| -> Vec<String> {
            read(d, f)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
                .collect()
        };
        assert_eq!(ids(&b, "cost.jsonl"), ids(&a, "scores.jsonl"));
        let strip = |mut s: EvalSummary| {
            s.seconds = 0.0;
            assert_eq!(s.cost.samples, 7, "one cost per sample: {:?}", s.cost);
            assert!(s.cost.seconds_per_question_mean > 0.0, "{:?}", s.cost);
            s.cost = CostSummary::default();
            serde_json::to_string(&s).unwrap()
        };
        assert_eq!(strip(resumed), strip(whole.clone()));
        let without_time = |r: String| {
            r.lines()
                .filter(|l| !l.starts_with("- wall time"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            without_time(read(&b, "report.md")),
            without_time(read(&a, "report.md"))
        );

        // Resuming a finished eval runs nothing and writes the same summary again.
        let mut n = 0;
        let again = run_eval_on_with(
            &asm,
            &load_eval_samples(&asm, None).unwrap(),
            &b,
            &resume,
            &mut |p| n += matches!(p, Progress::Sample { .. }) as usize,
        )
        .unwrap();
        assert_eq!((n, again.n, again.lm_calls), (0, 7, whole.lm_calls));
        assert_eq!(read(&b, "scores.jsonl"), scores);
    }

    #[test]
    fn resuming_refuses_another_recipe_other_weights_or_changed_data() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        let asm = smoke(6, 0);
        let all = load_eval_samples(&asm, None).unwrap();
        let samples = &all[..4];
        run_eval_on(&asm, samples, out, &mut |_| {}).unwrap();
        let resume = EvalOptions {
            resume: true,
            ..EvalOptions::default()
        };
        let files = [
            "scores.jsonl",
            "trajectories.jsonl",
            "recipe.resolved.toml",
            "metrics.json",
            "report.md",
        ];
        let before: Vec<String> = files.iter().map(|f| read(out, f)).collect();
        let unchanged = || {
            let now: Vec<String> = files.iter().map(|f| read(out, f)).collect();
            assert!(now == before, "a refused resume changed the run directory");
        };

        let e = run_eval_on_with(&smoke(6, 9), samples, out, &resume, &mut |_| {}).unwrap_err();
        assert!(e.is_user_error(), "{e}");
        let m = e.to_string();
        assert!(m.contains("--resume") && m.contains("seed = 9"), "{m}");
        unchanged();

        let other_weights = EvalOptions {
            resume: true,
            checkpoint: Some("runs/x/checkpoints/step-2".into()),
        };
        let e = run_eval_on_with(&asm, samples, out, &other_weights, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("checkpoint"), "{e}");
        unchanged();

        let mut changed = samples.to_vec();
        changed[1].answers = vec!["no".into()];
        let e = run_eval_on_with(&asm, &changed, out, &resume, &mut |_| {}).unwrap_err();
        assert!(e.is_user_error() && e.to_string().contains("line 2"), "{e}");
        let e = run_eval_on_with(&asm, &samples[..2], out, &resume, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 samples finished"), "{e}");
        unchanged();

        // A longer sample list (a larger --limit) continues from the finished prefix.
        let s = run_eval_on_with(&asm, &all, out, &resume, &mut |_| {}).unwrap();
        assert_eq!(s.n, 6);
        assert_eq!(read(out, "scores.jsonl").lines().count(), 6);
    }
}
