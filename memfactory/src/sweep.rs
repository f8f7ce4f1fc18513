//! Sweeps: one eval per combination of recipe settings — context lengths, models,
//! checkpoints — and one report over all of them (`memfactory eval RECIPE --sweep …`).
//!
//! An axis is a dotted recipe key and its values (`data.eval.docs=50,100,200`,
//! `model.path=a.gguf,b.gguf`), or the special key [`CHECKPOINT_AXIS`] whose values are
//! training checkpoint directories (`base` = the recipe's own weights). Combinations run
//! first axis outermost, so put the model or checkpoint axis first: the model is loaded once
//! per value and reused by every combination that shares its `[model]` table and checkpoint.
//!
//! The sweep directory holds one ordinary eval run directory per combination
//! (`<key>=<value>+…`), and:
//! - `sweep.json` — every combination's settings, run directory, sample count, paths per
//!   sample (avg@k), metric means and 95 % CI half-widths;
//! - `sweep.md` — the same as a table, and a pivot of the primary metric with the last
//!   numeric axis (the context length) across and the other axes down (models, checkpoints);
//! - `sweep.svg` — the primary metric against the last numeric axis, one line per
//!   combination of the other axes, with its 95 % CI as a band;
//! - `sweep_cost.svg` — what each combination cost against the last numeric axis: mean
//!   seconds per question (each question's wall seconds, `cost.jsonl`) above the eval's
//!   peak resident memory (`metrics.json`'s `cost`, [`crate::eval::CostSummary`]); `sweep.json`
//!   holds each run's `cost` and `sweep.md` pivots both (with prompt, generated and memory
//!   tokens per question). Timing is reported, never scored;
//! - `sweep_tradeoff.svg` — accuracy against cost: the primary metric against generated tokens
//!   per question, one point per run (written for any sweep whose runs kept their cost).
//!
//! A combination whose directory already holds a finished eval of the same resolved recipe
//! and sample count is not run again (an interrupted sweep resumes where it stopped).
//!
//! Every combination is checked before the first one runs — its recipe built (each distinct
//! `[model]` table loaded once), its eval data loaded, its checkpoint directory looked at — so
//! a bad value in the last combination is reported at once, not after hours of the others.
//! Values are shown in reports and directory names with credentials masked
//! ([`memfactory_core::redact`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memfactory_core::recipe::{parse_value, split_assignment};
use memfactory_core::redact::mask_str;
use memfactory_core::{Error, LanguageModel, Recipe, Result};
use serde::Serialize;

use crate::Assembly;
use crate::eval::{self, CostSummary, Progress};
use crate::plot::{Panel, Series, line_chart, panels_chart};

/// The axis key whose values are training checkpoint directories (`base`: none).
pub const CHECKPOINT_AXIS: &str = "checkpoint";

/// One swept setting and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Dotted recipe key (`data.eval.docs`), or [`CHECKPOINT_AXIS`].
    pub key: String,
    /// The values, in order.
    pub values: Vec<toml::Value>,
}

impl Axis {
    /// Parses `KEY=V1,V2,…` (each value TOML when it parses as one, else a plain string).
    pub fn parse(arg: &str) -> Result<Axis> {
        let (key, values) =
            split_assignment(arg, "a sweep KEY=V1,V2,…, e.g. data.eval.docs=50,100,200")?;
        let values: Vec<toml::Value> = values.split(',').map(parse_value).collect();
        if values.iter().any(|v| label(v).is_empty()) {
            return Err(Error::config(
                key,
                format!("sweep `{arg}` has an empty value"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &values {
            // Masked labels name the run directories: they must differ too.
            if !seen.insert(shown(v)) {
                return Err(Error::config(
                    key,
                    format!("sweep `{}` names `{}` twice", mask_str(arg), shown(v)),
                ));
            }
        }
        Ok(Axis {
            key: key.to_string(),
            values,
        })
    }

    /// Whether every value is a number (a context length, a budget): such an axis goes
    /// across the pivot table and along the plot's x axis.
    pub fn is_numeric(&self) -> bool {
        self.values.iter().all(|v| number(v).is_some())
    }
}

/// A value as written in reports and directory names.
pub fn label(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as shown in reports and directory names: its label with credentials masked.
pub fn shown(v: &toml::Value) -> String {
    mask_str(&label(v)).into_owned()
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Every combination of the axes' values, first axis outermost.
pub fn combinations(axes: &[Axis]) -> Vec<Vec<(String, toml::Value)>> {
    let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push((axis.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    out
}

/// The run directory name of a combination: `key=value+key=value` (values [`shown`]), with
/// every character other than letters, digits, `.`, `-`, `_` and `=` replaced by `_`.
pub fn dir_name(combo: &[(String, toml::Value)]) -> String {
    let raw: Vec<String> = combo
        .iter()
        .map(|(k, v)| format!("{k}={}", shown(v)))
        .collect();
    raw.join("+")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '=' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file every training checkpoint directory holds (`memfactory_rl::checkpoint`).
const CHECKPOINT_STATE: &str = "state.json";

/// Checks that `dir` is a training checkpoint directory (`runs/<name>/checkpoints/step-N`,
/// holding `state.json`), naming it and what was expected when it is not: missing, a file,
/// or a directory that is not a checkpoint.
pub fn check_checkpoint_dir(dir: &Path) -> Result<()> {
    const EXPECTED: &str =
        "a checkpoint directory (runs/<name>/checkpoints/step-N, written by `memfactory train`)";
    let meta = std::fs::metadata(dir).map_err(|e| Error::user_io(dir, e, EXPECTED))?;
    if !meta.is_dir() {
        return Err(Error::path(dir, format!("is a file, expected {EXPECTED}")));
    }
    let state = dir.join(CHECKPOINT_STATE);
    match std::fs::metadata(&state) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::path(
            dir,
            format!("{CHECKPOINT_STATE} is not a file, expected {EXPECTED}"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::path(
            dir,
            format!("has no {CHECKPOINT_STATE}: not a training checkpoint, expected {EXPECTED}"),
        )),
        Err(e) => Err(Error::user_io(&state, e, EXPECTED)),
    }
}

/// One combination, ready to run.
struct Plan {
    /// The recipe with the combination's settings.
    recipe: Recipe,
    /// Its checkpoint, when the checkpoint axis names one.
    checkpoint: Option<PathBuf>,
    /// The `[model]` table as text: combinations with the same table and checkpoint share
    /// a model.
    model: String,
}

/// A built model: its `[model]` table as text, its checkpoint, the model and its resolved
/// table.
type Cached = (String, Option<PathBuf>, Arc<dyn LanguageModel>, toml::Table);

/// The recipe, checkpoint and model key of `combo` applied to `recipe`.
fn plan(recipe: &Recipe, combo: &[(String, toml::Value)]) -> Result<Plan> {
    let mut r = recipe.clone();
    let mut checkpoint = None;
    for (k, v) in combo {
        if k == CHECKPOINT_AXIS {
            let l = label(v);
            if l != "base" {
                checkpoint = Some(PathBuf::from(l));
            }
        } else {
            r.set(k, v.clone())?;
        }
    }
    let model = r
        .root
        .get("model")
        .map(|m| m.to_string())
        .unwrap_or_default();
    Ok(Plan {
        recipe: r,
        checkpoint,
        model,
    })
}

/// Checks every combination before any runs: its checkpoint directory, its recipe (built
/// through `build` without the checkpoint, each distinct `[model]` table loaded once), its
/// eval data and the primary `metric`. Combinations are checked last to first, so the model
/// left built — returned — is the first combination's base model, and the sweep starts
/// without loading it again.
fn check_plans(
    plans: &[Plan],
    combos: &[Vec<(String, toml::Value)>],
    limit: Option<usize>,
    metric: Option<&str>,
    build: &mut Builder<'_>,
) -> Result<Option<Cached>> {
    let mut cached: Option<Cached> = None;
    for (p, combo) in plans.iter().zip(combos).rev() {
        let settings = || {
            combo
                .iter()
                .map(|(k, v)| format!("{k}={}", shown(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(ck) = &p.checkpoint {
            check_checkpoint_dir(ck)?;
        }
        let reuse = match &cached {
            Some((k, _, m, t)) if *k == p.model => Some((m.clone(), t.clone())),
            _ => None,
        };
        if reuse.is_none() {
            cached = None; // one model at a time
        }
        let asm = build(BuildRequest {
            recipe: &p.recipe,
            checkpoint: None,
            reuse,
        })
        .map_err(|e| in_combination(e, &settings()))?;
        eval::load_eval_samples(&asm, limit).map_err(|e| in_combination(e, &settings()))?;
        if let Some(m) = metric
            && !asm.metrics.iter().any(|x| x.name() == m)
        {
            let names: Vec<&str> = asm.metrics.iter().map(|x| x.name()).collect();
            return Err(Error::config(
                "--metric",
                format!(
                    "`{m}` is not a metric of the recipe ({}); the recipe's metrics: {}",
                    settings(),
                    names.join(", ")
                ),
            ));
        }
        if let Some(toml::Value::Table(t)) = asm.resolved.get("model") {
            cached = Some((p.model.clone(), None, asm.model.clone(), t.clone()));
        }
    }
    Ok(cached)
}

/// `e` with the combination it was met in added to its message, its kind (and so its exit
/// code) kept.
fn in_combination(e: Error, settings: &str) -> Error {
    let note = format!(" (sweep combination {settings})");
    match e {
        Error::Config { key, message } => Error::Config {
            key,
            message: message + &note,
        },
        Error::Data {
            path,
            location,
            message,
        } => Error::Data {
            path,
            location,
            message: message + &note,
        },
        Error::Model { path, message } => Error::Model {
            path,
            message: message + &note,
        },
        Error::Path { path, message } => Error::Path {
            path,
            message: message + &note,
        },
        other => other,
    }
}

/// What [`run_sweep`] asks its caller to build for one combination.
pub struct BuildRequest<'a> {
    /// The recipe with the combination's settings applied.
    pub recipe: &'a Recipe,
    /// The checkpoint directory to evaluate, from a [`CHECKPOINT_AXIS`] value other than
    /// `base`.
    pub checkpoint: Option<PathBuf>,
    /// A model built for an earlier combination with the same `[model]` table and
    /// checkpoint, with its resolved table: reuse it instead of loading again.
    pub reuse: Option<(Arc<dyn LanguageModel>, toml::Table)>,
}

/// Builds the assembly of one combination (the CLI applies checkpoints here).
pub type Builder<'a> = dyn FnMut(BuildRequest<'_>) -> Result<Assembly> + 'a;

/// Progress of a sweep.
#[derive(Debug, Clone)]
pub enum SweepEvent {
    /// Combination `index` of `total` starts (`reused`: a finished run was found).
    Combo {
        /// 0-based.
        index: usize,
        /// How many combinations.
        total: usize,
        /// `key=value` pairs.
        settings: String,
        /// Whether an earlier finished run is reused.
        reused: bool,
    },
    /// An event of the running combination's eval.
    Eval(Progress),
}

/// One combination's result.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRun {
    /// `key → value` as labels, in axis order.
    pub settings: Vec<(String, String)>,
    /// Its eval run directory.
    pub dir: PathBuf,
    /// Whether an earlier finished run was reused.
    pub reused: bool,
    /// Samples evaluated.
    pub n: usize,
    /// Paths per sample (avg@k).
    pub paths: usize,
    /// Wall time of its eval in seconds.
    pub seconds: f64,
    /// Mean of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// 95 % CI half-width of each mean.
    pub ci95: BTreeMap<String, f64>,
    /// Seconds per question and peak memory of its eval; absent for a reused run directory
    /// written before evals kept it.
    pub cost: Option<CostSummary>,
}

/// The whole sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The recipe file.
    pub recipe: String,
    /// Each axis's key and value labels.
    pub axes: Vec<(String, Vec<String>)>,
    /// The metric of the pivot table and the plot.
    pub primary_metric: String,
    /// One per combination, in run order.
    pub runs: Vec<SweepRun>,
}

fn read_finished(dir: &Path, resolved: &str, n: usize) -> Option<serde_json::Value> {
    let old = std::fs::read_to_string(dir.join("recipe.resolved.toml")).ok()?;
    if old != resolved {
        return None;
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).ok()?).ok()?;
    (m["n"].as_u64() == Some(n as u64)).then_some(m)
}

fn map_f64(v: &serde_json::Value) -> BTreeMap<String, f64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the eval of every combination of `axes` over `recipe` into `out/<combination>/`,
/// then writes `out/sweep.json`, `out/sweep.md` and `out/sweep.svg` (see the module docs).
/// `metric` picks the primary metric (default: the recipe's first metric).
pub fn run_sweep(
    recipe: &Recipe,
    axes: &[Axis],
    limit: Option<usize>,
    metric: Option<&str>,
    out: &Path,
    build: &mut Builder<'_>,
    events: &mut dyn FnMut(SweepEvent),
) -> Result<SweepReport> {
    if axes.is_empty() {
        return Err(Error::config("--sweep", "a sweep needs at least one axis"));
    }
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.key == a.key) {
            return Err(Error::config(
                &a.key,
                "swept twice; give each key one --sweep",
            ));
        }
    }
    let combos = combinations(axes);
    let total = combos.len();
    let plans = combos
        .iter()
        .map(|c| plan(recipe, c))
        .collect::<Result<Vec<_>>>()?;
    // (model table + checkpoint) → the model built for it; checking leaves the first
    // combination's base model built.
    let mut cached = check_plans(&plans, &combos, limit, metric, build)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut runs = Vec::new();
    let mut last = None;
    let mut primary = metric.map(str::to_string);
    for (index, (combo, p)) in combos.iter().zip(plans).enumerate() {
        let Plan {
            recipe: r,
            checkpoint,
            model,
        } = p;
        let reuse = match &cached {
            Some((k, c, m, t)) if *k == model && *c == checkpoint => Some((m.clone(), t.clone())),
            _ => None,
        };
        if reuse.is_none() {
            cached = None; // one model at a time
        }
        let asm = build(BuildRequest {
            recipe: &r,
            checkpoint: checkpoint.clone(),
            reuse,
        })?;
        if let Some(toml::Value::Table(t)) = asm.resolved.get("model") {
            cached = Some((model, checkpoint, asm.model.clone(), t.clone()));
        }
        if primary.is_none() {
            primary = asm.metrics.first().map(|m| m.name().to_string());
        }
        let settings: Vec<(String, String)> =
            combo.iter().map(|(k, v)| (k.clone(), shown(v))).collect();
        let shown = settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let dir = out.join(dir_name(combo));
        let samples = eval::load_eval_samples(&asm, limit)?;
        let run = match read_finished(&dir, &asm.resolved_toml(), samples.len()) {
            Some(m) => {
                events(SweepEvent::Combo {
                    index,
                    total,
                    settings: shown,
                    reused: true,
                });
                SweepRun {
                    settings,
                    dir,
                    reused: true,
                    n: samples.len(),
                    paths: m["paths"].as_u64().unwrap_or(1) as usize,
                    seconds: m["seconds"].as_f64().unwrap_or(0.0),
                    metrics: map_f64(&m["metrics"]),
                    ci95: map_f64(&m["ci95"]),
                    cost: serde_json::from_value(m["cost"].clone()).ok(),
                }
            }
            None => {
                events(SweepEvent::Combo {
                    index,
                    total,
                    settings: shown,
                    reused: false,
                });
                let s =
                    eval::run_eval_on(&asm, &samples, &dir, &mut |p| events(SweepEvent::Eval(p)))?;
                SweepRun {
                    settings,
                    dir,
                    reused: false,
                    n: s.n,
                    paths: s.paths,
                    seconds: s.seconds,
                    metrics: s.metrics,
                    ci95: s.ci95,
                    cost: Some(s.cost),
                }
            }
        };
        runs.push(run);
        // The report so far, so an interrupted sweep still leaves one.
        let report = SweepReport {
            recipe: recipe.file.clone(),
            axes: axes
                .iter()
                .map(|a| (a.key.clone(), a.values.iter().map(self::shown).collect()))
                .collect(),
            primary_metric: primary.clone().unwrap_or_default(),
            runs: runs.clone(),
        };
        write_report(&report, axes, out)?;
        last = Some(report);
    }
    last.ok_or_else(|| Error::config("--sweep", "the sweep has no combination"))
}

fn write_report(report: &SweepReport, axes: &[Axis], out: &Path) -> Result<()> {
    let json_path = out.join("sweep.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&json_path, json).map_err(|e| Error::io(&json_path, e))?;
    let md_path = out.join("sweep.md");
    std::fs::write(&md_path, markdown(report, axes)).map_err(|e| Error::io(&md_path, e))?;
    if let Some(x) = axes.iter().rposition(Axis::is_numeric) {
        let (x_key, series) = plot_series(report, axes, x);
        let svg = out.join("sweep.svg");
        line_chart(
            &svg,
            &format!("{} by {x_key} (95 % CI)", report.primary_metric),
            &x_key,
            &report.primary_metric,
            &series,
        )?;
        let [seconds, rss] = [Cost::SecondsMean, Cost::PeakRssMib].map(|c| Panel {
            title: format!("{} by {x_key}", c.label()),
            y_label: c.unit().to_string(),
            series: cost_series(report, x, c),
        });
        panels_chart(&out.join("sweep_cost.svg"), &x_key, &[seconds, rss])?;
    }
    let tradeoff = accuracy_by_cost(report, Cost::GeneratedTokens);
    if !tradeoff.is_empty() {
        line_chart(
            &out.join("sweep_tradeoff.svg"),
            &format!(
                "{} against {} (one point per run)",
                report.primary_metric,
                Cost::GeneratedTokens.label()
            ),
            Cost::GeneratedTokens.label(),
            &report.primary_metric,
            &tradeoff,
        )?;
    }
    Ok(())
}

/// Accuracy against cost: each run as one point `(cost, primary metric)`, named by its
/// settings, so the trade-off between combinations reads off one chart.
fn accuracy_by_cost(report: &SweepReport, cost: Cost) -> Vec<Series> {
    report
        .runs
        .iter()
        .filter_map(|run| {
            let y = *run.metrics.get(&report.primary_metric)?;
            let x = cost.of(run)?;
            Some(Series::line(row_key(run, None), vec![(x, y)]))
        })
        .collect()
}

/// A cost figure of a run, for the pivot and the cost plot.
#[derive(Debug, Clone, Copy)]
enum Cost {
    SecondsMean,
    SecondsMedian,
    PeakRssMib,
    PromptTokens,
    GeneratedTokens,
    MemoryTokens,
}

impl Cost {
    fn label(self) -> &'static str {
        match self {
            Cost::SecondsMean => "seconds per question (mean)",
            Cost::SecondsMedian => "seconds per question (median)",
            Cost::PeakRssMib => "peak RSS (MiB)",
            Cost::PromptTokens => "prompt tokens per question",
            Cost::GeneratedTokens => "generated tokens per question",
            Cost::MemoryTokens => "memory tokens at the end per question",
        }
    }

    /// `v` as a pivot cell: seconds to the millisecond or 3 significant digits below a
    /// second, MiB and tokens whole.
    fn cell(self, v: f64) -> String {
        match self {
            Cost::SecondsMean | Cost::SecondsMedian if v < 1.0 => format!("{v:.3e}"),
            Cost::SecondsMean | Cost::SecondsMedian => format!("{v:.3}"),
            Cost::PeakRssMib | Cost::PromptTokens | Cost::GeneratedTokens | Cost::MemoryTokens => {
                format!("{v:.0}")
            }
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Cost::SecondsMean | Cost::SecondsMedian => "seconds",
            Cost::PeakRssMib => "MiB",
            Cost::PromptTokens | Cost::GeneratedTokens | Cost::MemoryTokens => "tokens",
        }
    }

    fn of(self, run: &SweepRun) -> Option<f64> {
        let c = run.cost.as_ref()?;
        match self {
            Cost::SecondsMean => Some(c.seconds_per_question_mean),
            Cost::SecondsMedian => Some(c.seconds_per_question_median),
            Cost::PeakRssMib => c.peak_rss_mib(),
            Cost::PromptTokens => Some(c.prompt_tokens_per_question),
            Cost::GeneratedTokens => Some(c.generated_tokens_per_question),
            Cost::MemoryTokens => c.memory_tokens_per_question,
        }
    }
}

/// `cost` of each run against the numeric axis `x`, one line per combination of the
/// other axes.
fn cost_series(report: &SweepReport, x: usize, cost: Cost) -> Vec<Series> {
    let mut lines: Vec<Series> = Vec::new();
    for run in &report.runs {
        let key = row_key(run, Some(x));
        let (Some(xv), Some(y)) = (run.settings[x].1.parse::<f64>().ok(), cost.of(run)) else {
            continue;
        };
        match lines.iter_mut().find(|s| s.name == key) {
            Some(s) => s.points.push((xv, y)),
            None => lines.push(Series::line(key, vec![(xv, y)])),
        }
    }
    for s in &mut lines {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// The other axes' settings of a run (the row / line it belongs to).
fn row_key(run: &SweepRun, x: Option<usize>) -> String {
    let parts: Vec<String> = run
        .settings
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != x)
        .map(|(_, (k, v))| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

fn plot_series(report: &SweepReport, axes: &[Axis], x: usize) -> (String, Vec<Series>) {
    let mut lines: Vec<(String, Series)> = Vec::new();
    let m = &report.primary_metric;
    for run in &report.runs {
        let key = row_key(run, Some(x));
        let Some(xv) = run.settings[x].1.parse::<f64>().ok() else {
            continue;
        };
        let (Some(mean), ci) = (run.metrics.get(m), run.ci95.get(m).copied().unwrap_or(0.0)) else {
            continue;
        };
        let at = match lines.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                lines.push((key.clone(), Series::line(key.clone(), Vec::new())));
                lines.len() - 1
            }
        };
        let s = &mut lines[at].1;
        s.points.push((xv, *mean));
        s.band.push((xv, mean - ci, mean + ci));
    }
    for (_, s) in &mut lines {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        s.band.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (
        axes[x].key.clone(),
        lines.into_iter().map(|(_, s)| s).collect(),
    )
}

fn markdown(report: &SweepReport, axes: &[Axis]) -> String {
    let mut r = format!("# Sweep: {}\n\n", report.recipe);
    let paths: Vec<usize> = report.runs.iter().map(|x| x.paths).collect();
    let k = paths.iter().copied().max().unwrap_or(1);
    r.push_str(&format!(
        "Each cell: mean over samples of the metric averaged over each sample's paths (avg@{k}) ± its 95 % CI half-width.\n\n"
    ));
    let metrics: Vec<String> = {
        let mut m: Vec<String> = Vec::new();
        for run in &report.runs {
            for k in run.metrics.keys() {
                if !m.contains(k) {
                    m.push(k.clone());
                }
            }
        }
        m
    };
    r.push('|');
    for a in axes {
        r.push_str(&format!(" {} |", a.key));
    }
    r.push_str(" n | seconds |");
    for m in &metrics {
        r.push_str(&format!(" {m} |"));
    }
    r.push_str("\n|");
    r.push_str(&"---|".repeat(axes.len() + 2 + metrics.len()));
    r.push('\n');
    for run in &report.runs {
        r.push('|');
        for (_, v) in &run.settings {
            r.push_str(&format!(" {v} |"));
        }
        r.push_str(&format!(
            " {} | {:.0}{} |",
            run.n,
            run.seconds,
            if run.reused { " (reused)" } else { "" }
        ));
        for m in &metrics {
            match run.metrics.get(m) {
                Some(v) => r.push_str(&format!(
                    " {v:.4} ± {:.4} |",
                    run.ci95.get(m).copied().unwrap_or(0.0)
                )),
                None => r.push_str(" – |"),
            }
        }
        r.push('\n');
    }
    if let Some(x) = axes.iter().rposition(Axis::is_numeric) {
        let m = &report.primary_metric;
        let cols: Vec<String> = axes[x].values.iter().map(shown).collect();
        r.push_str(&format!(
            "\n## {m} by {}\n\n| | {} |\n|---|{}\n",
            axes[x].key,
            cols.join(" | "),
            "---|".repeat(cols.len())
        ));
        let mut rows: Vec<String> = Vec::new();
        for run in &report.runs {
            let key = row_key(run, Some(x));
            if !rows.contains(&key) {
                rows.push(key);
            }
        }
        for row in rows {
            r.push_str(&format!("| {row} |"));
            for c in &cols {
                let cell = report
                    .runs
                    .iter()
                    .find(|run| row_key(run, Some(x)) == row && run.settings[x].1 == *c)
                    .and_then(|run| {
                        Some((run.metrics.get(m)?, run.ci95.get(m).copied().unwrap_or(0.0)))
                    });
                match cell {
                    Some((v, h)) => r.push_str(&format!(" {v:.4} ± {h:.4} |")),
                    None => r.push_str(" – |"),
                }
            }
            r.push('\n');
        }
        r.push_str("\nPlot: `sweep.svg`.\n");
        for c in [
            Cost::SecondsMean,
            Cost::SecondsMedian,
            Cost::PeakRssMib,
            Cost::PromptTokens,
            Cost::GeneratedTokens,
            Cost::MemoryTokens,
        ] {
            r.push_str(&format!(
                "\n## {} by {}\n\n| | {} |\n|---|{}\n",
                c.label(),
                axes[x].key,
                cols.join(" | "),
                "---|".repeat(cols.len())
            ));
            let mut rows: Vec<String> = Vec::new();
            for run in &report.runs {
                let key = row_key(run, Some(x));
                if !rows.contains(&key) {
                    rows.push(key);
                }
            }
            for row in rows {
                r.push_str(&format!("| {row} |"));
                for col in &cols {
                    let cell = report
                        .runs
                        .iter()
                        .find(|run| row_key(run, Some(x)) == row && run.settings[x].1 == *col)
                        .and_then(|run| c.of(run));
                    match cell {
                        Some(v) => r.push_str(&format!(" {} |", c.cell(v))),
                        None => r.push_str(" – |"),
                    }
                }
                r.push('\n');
            }
        }
        r.push_str(
            "\nEach question's seconds run from the start of its episodes to their end (with \
             several questions in flight, their LM calls share batches); peak RSS is the \
             eval's, the loaded model included. Plots: `sweep_cost.svg`, and the primary \
             metric against generated tokens per question in `sweep_tradeoff.svg`.\n",
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_values_and_reject_bad_ones() {
        let a = Axis::parse("data.eval.docs=50,100,200").unwrap();
        assert_eq!(a.key, "data.eval.docs");
        assert_eq!(a.values.len(), 3);
        assert!(a.is_numeric());
        let m = Axis::parse("model.path=models/a.gguf,models/b.gguf").unwrap();
        assert!(!m.is_numeric());
        assert_eq!(label(&m.values[1]), "models/b.gguf");
        assert!(Axis::parse("docs").is_err());
        assert!(Axis::parse("=1,2").is_err());
        assert!(Axis::parse("docs=1,,2").is_err());
        assert!(Axis::parse("docs=1,2,1").is_err());
    }

    #[test]
    fn combinations_run_first_axis_outermost_with_safe_names() {
        let axes = [
            Axis::parse("checkpoint=base,runs/x/step-5").unwrap(),
            Axis::parse("data.eval.tokens=100,200").unwrap(),
        ];
        let c = combinations(&axes);
        let names: Vec<String> = c.iter().map(|c| dir_name(c)).collect();
        assert_eq!(
            names,
            [
                "checkpoint=base+data.eval.tokens=100",
                "checkpoint=base+data.eval.tokens=200",
                "checkpoint=runs_x_step-5+data.eval.tokens=100",
                "checkpoint=runs_x_step-5+data.eval.tokens=200",
            ]
        );
    }
}
