//! Building every component a recipe names.
//!
//! A recipe has these top-level tables (anything else is rejected):
//!
//! ```toml
//! [run]                 # optional
//! name = "memagent-smoke"
//! seed = 0              # derives every RNG: run -> sample -> path -> LM call
//! out = "runs/memagent-smoke"   # default runs/<name>
//!
//! [model]               # an LM backend: kind = "burn" | "scripted" | ...
//! [store]               # optional, default { kind = "memory" }
//! [embedder]            # optional sentence embedder for dense retrieval: kind = "minilm" | ...
//! [agent]               # a paradigm: kind = "memagent" | ...
//! [data.eval]           # a dataset: kind = "ruler-hqa" | "memagent-json" | ...
//! [data.train]          # training samples (`memfactory train`)
//! [data.dev]            # optional dev split evaluated during training
//! [train]               # GRPO settings (`memfactory train`; see memfactory::train)
//! [eval]                # optional
//! limit = 100           # evaluate the first N samples
//! concurrency = 8       # samples in flight; their LM calls are batched together
//! metrics = ["sub-em", "exact-match", "f1", "format"]
//! ```
//!
//! `metrics` defaults to the list above; with `[data.eval] kind = "ruler"`,
//! `ruler-string-match` (RULER's own function for each sample, `meta.metric`) comes first, and
//! a recipe naming metrics without it is warned that `sub-em` takes the best single answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memfactory_core::{
    Cfg, DataSource, Embedder, Error, LanguageModel, Paradigm, Recipe, Result, Reward,
    StoreFactory, registry,
};

/// The `[run]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Run name.
    pub name: String,
    /// Root seed.
    pub seed: u64,
    /// Run directory.
    pub out: PathBuf,
}

/// Every component of a recipe, built and checked.
pub struct Assembly {
    /// Where the recipe came from.
    pub recipe_file: String,
    /// `[run]` settings.
    pub run: RunSettings,
    /// The LM backend (shared: the trainer updates a burn model's weights in place).
    pub model: Arc<dyn LanguageModel>,
    /// Opens one store per episode.
    pub store: Box<dyn StoreFactory>,
    /// The sentence embedder, when the recipe has `[embedder]` (built once, shared by
    /// every op through the episode context).
    pub embedder: Option<Arc<dyn Embedder>>,
    /// The agent paradigm.
    pub agent: Box<dyn Paradigm>,
    /// The eval dataset, when the recipe has `[data.eval]`.
    pub eval_data: Option<Box<dyn DataSource>>,
    /// The training dataset, when the recipe has `[data.train]`.
    pub train_data: Option<Box<dyn DataSource>>,
    /// The dev dataset, when the recipe has `[data.dev]`.
    pub dev_data: Option<Box<dyn DataSource>>,
    /// The recipe's `[agent]` table as written (the trainer derives its rollout agent
    /// from it).
    pub agent_table: toml::Table,
    /// The recipe's `[train]` table as written, parsed by `memfactory::train`.
    pub train_table: Option<toml::Table>,
    /// Eval metrics.
    pub metrics: Vec<Box<dyn Reward>>,
    /// `[eval] limit`.
    pub eval_limit: Option<usize>,
    /// `[eval] concurrency`: samples in flight, their LM calls batched together.
    pub eval_concurrency: usize,
    /// The resolved recipe: every key with its default filled in.
    pub resolved: toml::Table,
}

/// Checks that `name` (`run.name`) can be a directory name under `runs/`: not empty, not
/// `.` or `..`, no path separator, no `..` and no NUL. A name such as `../../x` would put the
/// run directory outside the working tree.
pub fn check_run_name(name: &str) -> Result<()> {
    let problem = if name.trim().is_empty() {
        Some("is empty")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator (`/` or `\\`)")
    } else if name.contains("..") {
        Some("contains `..`")
    } else if name.chars().all(|c| c == '.') {
        Some("is only dots")
    } else if name.contains('\0') {
        Some("contains a NUL character")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::config(
            "run.name",
            format!(
                "{name:?} {p}; a run name becomes the directory runs/<name>, so use letters, digits, `-`, `_` and `.` (set `run.out` to choose another directory)"
            ),
        )),
        None => Ok(()),
    }
}

fn required(cfg: &mut Cfg, key: &str, what: &str) -> Result<Cfg> {
    cfg.sub(key)?.ok_or_else(|| {
        Error::config(
            cfg.key(key),
            format!("missing table [{key}] ({what}); add it with a `kind` key"),
        )
    })
}

const DEFAULT_METRICS: [&str; 4] = ["sub-em", "exact-match", "f1", "format"];

/// The metric that scores a RULER sample with its own function (`meta.metric`); first among
/// the default metrics when the eval data is `ruler` and the metric is linked.
const RULER_METRIC: &str = "ruler-string-match";

impl Assembly {
    /// Reads ([`Recipe::from_file`]) and builds the recipe file at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_recipe(&Recipe::from_file(path)?)
    }

    /// Builds every component of `recipe`.
    pub fn from_recipe(recipe: &Recipe) -> Result<Self> {
        Self::from_recipe_with_model(recipe, None)
    }

    /// Builds every component of `recipe`; with `model`, that LM (already built from the
    /// recipe's `[model]` table, with its resolved table) is used instead of building one
    /// through the registry. The trainer uses this to hold the concrete burn engine whose
    /// weights it updates.
    pub fn from_recipe_with_model(
        recipe: &Recipe,
        model: Option<(Arc<dyn LanguageModel>, toml::Table)>,
    ) -> Result<Self> {
        let mut root = recipe.cfg();
        let mut resolved = toml::Table::new();

        let mut run_cfg = root
            .sub("run")?
            .unwrap_or_else(|| Cfg::new("run", toml::Table::new()));
        let stem = Path::new(&recipe.file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let name: String = run_cfg.get("name", stem)?;
        check_run_name(&name)?;
        let seed: u64 = run_cfg.get("seed", 0u64)?;
        let out: String = run_cfg.get("out", format!("runs/{name}"))?;
        resolved.insert("run".into(), toml::Value::Table(run_cfg.finish()?));

        let model_cfg = required(&mut root, "model", "the LM backend")?;
        let (model, t) = match model {
            Some(m) => m,
            None => {
                let (m, t) = registry::build::<dyn LanguageModel>(model_cfg)?;
                (Arc::from(m), t)
            }
        };
        resolved.insert("model".into(), toml::Value::Table(t));

        let store_cfg = match root.sub("store")? {
            Some(c) => c,
            None => Cfg::from_value("store", &toml::Value::String("memory".into()))?,
        };
        let (store, t) = registry::build::<dyn StoreFactory>(store_cfg)?;
        resolved.insert("store".into(), toml::Value::Table(t));

        let embedder = match root.sub("embedder")? {
            Some(c) => {
                let (e, t) = registry::build::<dyn Embedder>(c)?;
                resolved.insert("embedder".into(), toml::Value::Table(t));
                Some(Arc::from(e))
            }
            None => None,
        };

        let agent_cfg = required(&mut root, "agent", "the agent paradigm")?;
        let agent_table = agent_cfg.table().clone();
        let (agent, t) = registry::build::<dyn Paradigm>(agent_cfg)?;
        resolved.insert("agent".into(), toml::Value::Table(t));

        let (mut eval_data, mut train_data, mut dev_data) = (None, None, None);
        if let Some(mut data) = root.sub("data")? {
            let mut data_resolved = toml::Table::new();
            for (split, slot) in [
                ("eval", &mut eval_data),
                ("train", &mut train_data),
                ("dev", &mut dev_data),
            ] {
                if let Some(c) = data.sub(split)? {
                    let (d, t) = registry::build::<dyn DataSource>(c)?;
                    *slot = Some(d);
                    data_resolved.insert(split.into(), toml::Value::Table(t));
                }
            }
            data.finish()?;
            resolved.insert("data".into(), toml::Value::Table(data_resolved));
        }

        let mut eval_cfg = root
            .sub("eval")?
            .unwrap_or_else(|| Cfg::new("eval", toml::Table::new()));
        let eval_limit: Option<usize> = eval_cfg.opt("limit")?;
        let eval_concurrency: usize = eval_cfg.get_checked(
            "concurrency",
            1usize,
            |c| (1..=256).contains(c),
            "1..=256 samples in flight",
        )?;
        // RULER data: RULER scores each task with its own function (`meta.metric`:
        // string_match_all for needles, vt, multi-value, cwe and fwe), which `sub-em` — the best
        // single reference — is not; so it leads the default metrics, and a recipe that names
        // metrics without it is told.
        let eval_is_ruler = resolved
            .get("data")
            .and_then(|d| d.get("eval"))
            .and_then(|e| e.get("kind"))
            .and_then(|k| k.as_str())
            == Some("ruler");
        let ruler_metric =
            eval_is_ruler && registry::kinds::<dyn Reward>()?.contains(&RULER_METRIC);
        let metric_values = match eval_cfg.raw("metrics") {
            None => ruler_metric
                .then_some(RULER_METRIC)
                .into_iter()
                .chain(DEFAULT_METRICS)
                .map(|m| toml::Value::String(m.to_string()))
                .collect(),
            Some(toml::Value::Array(a)) => a,
            Some(other) => {
                return Err(eval_cfg.error(
                    "metrics",
                    format!(
                        "expected an array of reward kinds or tables, found {}",
                        other.type_str()
                    ),
                ));
            }
        };
        let mut metrics: Vec<Box<dyn Reward>> = Vec::new();
        let mut metrics_resolved = Vec::new();
        for (i, v) in metric_values.iter().enumerate() {
            let c = Cfg::from_value(format!("eval.metrics[{i}]"), v)?;
            let (m, t) = registry::build::<dyn Reward>(c)?;
            if metrics.iter().any(|o| o.name() == m.name()) {
                return Err(Error::config(
                    format!("eval.metrics[{i}]"),
                    format!(
                        "a second metric named `{}`; give one of them another `name`",
                        m.name()
                    ),
                ));
            }
            metrics.push(m);
            metrics_resolved.push(toml::Value::Table(t));
        }
        if ruler_metric
            && !metrics_resolved
                .iter()
                .any(|t| t.get("kind").and_then(|k| k.as_str()) == Some(RULER_METRIC))
        {
            eprintln!(
                "warning: eval.metrics: data.eval is RULER, whose multi-answer tasks (vt, \
                 multi-value, cwe, fwe) RULER scores with string_match_all; no metric here does \
                 (sub-em takes the best single answer) — add \"{RULER_METRIC}\", which scores \
                 each sample with its own meta.metric"
            );
        }
        eval_cfg.set_resolved("metrics", toml::Value::Array(metrics_resolved));
        resolved.insert("eval".into(), toml::Value::Table(eval_cfg.finish()?));
        // Parsed (and resolved) by memfactory::train, which knows its keys.
        let train_table = match root.raw("train") {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(other) => {
                return Err(Error::config(
                    "train",
                    format!("expected a table [train], found {}", other.type_str()),
                ));
            }
        };
        if let Some(t) = &train_table {
            resolved.insert("train".into(), toml::Value::Table(t.clone()));
        }
        root.finish()?;
        // Every generation budget the model generates for (the agent's, its ops', and
        // `[train.agent]`'s overrides) must fit its context; ops with their own model were
        // checked against that model when it was built.
        if let Some(context) = model.context_length() {
            memfactory_core::config::check_token_budgets(&resolved, "", context)?;
        }

        Ok(Assembly {
            recipe_file: recipe.file.clone(),
            run: RunSettings {
                name,
                seed,
                out: PathBuf::from(out),
            },
            model,
            store,
            embedder,
            agent,
            eval_data,
            train_data,
            dev_data,
            agent_table,
            train_table,
            metrics,
            eval_limit,
            eval_concurrency,
            resolved,
        })
    }

    /// The resolved recipe as TOML text, with credentials masked (URL userinfo, secret
    /// query parameters, connection-string passwords: [`memfactory_core::redact`]): this is
    /// what run directories keep and `check` prints.
    pub fn resolved_toml(&self) -> String {
        toml::to_string_pretty(&memfactory_core::redact::mask_table(&self.resolved))
            .unwrap_or_default()
    }
}
