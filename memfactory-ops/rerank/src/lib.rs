//! # memfactory-op-rerank
//!
//! RMM's *retrospective reflection* (Reflective Memory Management, arXiv 2503.08026) as a
//! memory op, registered as op kind `rerank`. A retriever hands over its top-K candidates
//! (`OpInput::memory`, best first); the op returns the `top_m` it keeps, in rank order
//! (`OpOutput::items`, each with `meta["score"]` (`{:.6}`), `meta["rank"]` (1-based) and
//! `meta["candidate"]` (its index in the input)). Two methods:
//!
//! - **`learned`** (default; the paper's reranker): residual linear adapters
//!   `q' = q + W_q q`, `m' = m + W_m m`, score `s = q' · m'`, and *Gumbel top-M* sampling of
//!   M memories with temperature `τ`. The LLM that answers cites the memories it used; a
//!   cited memory earns `+1`, an uncited one `−1`, and [`Reranker::reinforce`] updates the
//!   adapters online with REINFORCE and a baseline (running mean by default, or the
//!   paper's constant `b = 0.5`). The estimator and its
//!   gradient are derived in [`learned`]; tests check the gradient against finite
//!   differences. No LM call.
//! - **`llm`**: a listwise LLM reranker (one lockstep LM call, role `rerank`): the model
//!   lists candidate numbers by relevance (`[2] > [0] > [5]`); see [`parse_ranking`].
//!
//! Embeddings come from the recipe's `[embedder]` through
//! [`EpisodeCx::embed`](memfactory_core::EpisodeCx::embed) (the learned method fails with a
//! clear error without one): the query is embedded each call, candidates use
//! [`MemoryItem::embedding`] and only missing (or wrong-sized) ones are embedded, in one call,
//! and not stored. The adapters' size `d` is taken from the first query embedding.
//!
//! ## Randomness
//!
//! Adapters start at `N(0, init_std²)` (`init_std = 0.01`, PyTorch's `normal_(0, 0.01)`
//! convention: 0.01 is the *standard deviation*), drawn by a Box–Muller transform from a
//! ChaCha8 stream seeded with `init_seed` ([`learned::Adapters::normal`]), or are zero
//! (`init = "zero"`: plain dot-product scores until the first update). Gumbel noise for an
//! episode comes from ChaCha8 seeded with `seed::derive_n(episode seed, number of steps
//! recorded so far)`, one draw per candidate in candidate order — so a selection is a pure
//! function of the episode's seed and history, and the paths of a group draw differently.
//!
//! ## Online learning
//!
//! [`Reranker::reinforce`] takes the [`Feedback`]s of one answered question (the paradigm
//! passes one per path of a group) and adds them to a pending batch. When `batch` questions
//! are pending (`batch = 1`, the default: every call) one update is applied to all pending
//! feedbacks `F`: every gradient is computed at the current weights with the current
//! baseline `b`, the update is
//!
//! ```text
//! W ← W + lr · (1/|F|) Σ_{f ∈ F} Σ_j (r_{f,j} − b) ∇ℓ_{f,j}      (the MEAN over feedbacks)
//! ```
//!
//! and then, with `baseline = "mean"`, per feedback in order, `b ← 0.9 b + 0.1 · mean_j r_j`
//! (`b` starts at 0). `baseline = "none"` keeps `b = 0`; `baseline = 0.5` (any finite
//! number) is the constant baseline of the paper (arXiv 2503.08026 App. A.1: "Baseline value
//! (b): 0.5", "Batch size: 4", lr `1e-3`). The paper's update (Eq. 3,
//! `Δφ = η (R − b) ∇ log P(M_M | q, M_K; φ)`) is written for one sample and does not say how a
//! batch of 4 is reduced; this op takes the mean, PyTorch's default loss reduction, so a
//! batch of 4 moves the weights by the average of the 4 single-sample steps (not their
//! sum). Selections of one batch are all sampled with the same weights (the update comes
//! after the last of them), so the estimator stays on-policy. A partial batch pending when
//! the run ends is not applied ([`Reranker::flush`] applies it; with `state_path` it is
//! saved with the adapters and completed by the next run that loads them).
//! The weights live behind a `Mutex`, shared by every episode of the run; with
//! online learning, later questions see weights trained on earlier ones, so results depend
//! on the order questions are answered in (deterministic with `[eval] concurrency = 1`).
//! With `state_path`, adapters are loaded when the op is built (when the file exists) and
//! written by [`Reranker::save`] (temporary file + rename, so a crash never leaves half a
//! file); the `rmm` paradigm saves after every online update.
//!
//! ## Recipe
//!
//! ```toml
//! [agent.rerank]
//! kind = "rerank"
//! method = "learned"       # "learned" | "llm"
//! top_m = 5                # memories kept (M)
//! # method = "learned":
//! temperature = 0.5        # Gumbel temperature τ (> 0)
//! sample = true            # Gumbel top-M sampling; false = deterministic top-M by score
//! lr = 1e-3                # REINFORCE step size (>= 0)
//! baseline = "mean"        # "mean" (running mean of rewards, momentum 0.9) | "none" |
//!                          # a number: constant b (the paper: 0.5)
//! batch = 1                # questions whose feedback makes one update (the paper: 4)
//! init = "normal"          # "normal" (N(0, init_std²)) | "zero"
//! init_std = 0.01
//! init_seed = 0
//! state_path = "rerank.json"   # optional (relative to the working directory): adapters
//!                              # loaded at build when the file exists, written by save()
//! # method = "llm":
//! template = "rerank.txt"  # optional; placeholders {question} {memories}
//! max_new_tokens = 96      # sampling keys: temperature, top_k, top_p, stop (greedy default)
//! model = { kind = "..." } # optional own model for the rerank call
//! ```
//!
//! Keys of the other method are rejected as unknown (`temperature` is the Gumbel τ for
//! `learned` and the LM's sampling temperature for `llm`).

pub mod learned;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memfactory_core::{
    Cfg, ChatMessage, EpisodeCx, Error, GenRequest, LanguageModel, MemoryItem, MemoryOp, OpInput,
    OpOutput, Prompt, PromptTemplate, Result, SamplingParams, config::sampling_from_cfg,
    op::model_from_cfg, op::op_generate_subset, prompt::template_from_cfg, seed,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

pub use learned::{Adapters, Feedback};

/// The default listwise rerank prompt (`method = "llm"`).
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/rerank.txt");

/// Role name of the LM call of the `llm` method.
pub const ROLE: &str = "rerank";

/// Format tag written into saved adapter files.
pub const STATE_FORMAT: &str = "memfactory-rerank-adapters/1";

/// How the adapters start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `N(0, std²)` from `seed` (Box–Muller on ChaCha8).
    Normal {
        /// Standard deviation.
        std: f64,
        /// ChaCha8 seed.
        seed: u64,
    },
    /// All zero: the residual maps start as the identity.
    Zero,
}

/// Settings of the learned method.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedCfg {
    /// Gumbel temperature `τ`.
    pub tau: f64,
    /// Gumbel top-M sampling (true) or deterministic top-M by score (false).
    pub sample: bool,
    /// REINFORCE step size.
    pub lr: f64,
    /// The REINFORCE baseline.
    pub baseline: Baseline,
    /// Answered questions per update (`1` = every question).
    pub batch: usize,
    /// Initial adapters.
    pub init: Init,
    /// Where adapters are loaded from / saved to.
    pub state_path: Option<PathBuf>,
    /// Dotted recipe key of `state_path` (for error messages).
    pub state_key: String,
}

impl Default for LearnedCfg {
    fn default() -> Self {
        LearnedCfg {
            tau: 0.5,
            sample: true,
            lr: 1e-3,
            baseline: Baseline::Mean,
            batch: 1,
            init: Init::Normal { std: 0.01, seed: 0 },
            state_path: None,
            state_key: "state_path".into(),
        }
    }
}

/// The REINFORCE baseline `b` (crate docs, "Online learning").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// Running mean of the rewards (momentum 0.9, starts at 0): `baseline = "mean"`.
    Mean,
    /// `b = 0`: `baseline = "none"`.
    None,
    /// A constant `b` (the paper's 0.5): `baseline = 0.5`.
    Constant(f64),
}

/// Settings of the LLM listwise method.
pub struct LlmCfg {
    /// The rerank prompt (`{question}`, `{memories}`).
    pub template: PromptTemplate,
    /// Sampling of the rerank call.
    pub sampling: SamplingParams,
    /// The op's own model, when it has one.
    pub model: Option<Box<dyn LanguageModel>>,
}

/// Which reranker.
pub enum Method {
    /// Residual adapters + Gumbel top-M + online REINFORCE.
    Learned(LearnedCfg),
    /// Listwise LLM reranking.
    Llm(LlmCfg),
}

#[derive(Debug, Default)]
struct State {
    adapters: Option<Adapters>,
    /// The running-mean baseline (`Baseline::Mean`; stays 0 otherwise).
    baseline: f64,
    updates: u64,
    /// Feedback of the questions answered since the last update.
    pending: Vec<Feedback>,
    /// Number of questions (reinforce calls) in `pending`.
    pending_questions: usize,
}

/// The adapter file: JSON whose floats are written as text by Rust's shortest round-trip
/// formatting (space-separated, row-major) and read back with `str::parse`, so a reload is
/// bit-exact (JSON numbers through serde_json are not guaranteed to round-trip).
#[derive(Serialize, Deserialize)]
struct SavedState {
    format: String,
    dim: usize,
    baseline: String,
    updates: u64,
    w_q: String,
    w_m: String,
    /// Questions of a partial batch (absent in files written before batching).
    #[serde(default)]
    pending_questions: usize,
    /// Their feedback.
    #[serde(default)]
    pending: Vec<SavedFeedback>,
}

/// One pending [`Feedback`], floats as text like the weights (f32 shortest round-trip).
#[derive(Serialize, Deserialize)]
struct SavedFeedback {
    query: String,
    candidates: Vec<String>,
    chosen: Vec<usize>,
    rewards: String,
}

fn f32s_to_text(v: &[f32]) -> String {
    v.iter()
        .map(|x| format!("{x:e}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn f32s_from_text(s: &str, what: &str) -> std::result::Result<Vec<f32>, String> {
    s.split_ascii_whitespace()
        .map(|t| {
            t.parse::<f32>()
                .map_err(|e| format!("{what}: `{t}` is not a number ({e})"))
        })
        .collect()
}

impl SavedFeedback {
    fn from_feedback(f: &Feedback) -> Self {
        SavedFeedback {
            query: f32s_to_text(&f.query),
            candidates: f.candidates.iter().map(|c| f32s_to_text(c)).collect(),
            chosen: f.chosen.clone(),
            rewards: f32s_to_text(&f.rewards),
        }
    }

    fn to_feedback(&self, i: usize) -> std::result::Result<Feedback, String> {
        let what = format!("pending[{i}]");
        Ok(Feedback {
            query: f32s_from_text(&self.query, &format!("{what}.query"))?,
            candidates: self
                .candidates
                .iter()
                .map(|c| f32s_from_text(c, &format!("{what}.candidates")))
                .collect::<std::result::Result<_, _>>()?,
            chosen: self.chosen.clone(),
            rewards: f32s_from_text(&self.rewards, &format!("{what}.rewards"))?,
        })
    }
}

fn floats_to_text(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:e}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn floats_from_text(s: &str, what: &str) -> std::result::Result<Vec<f64>, String> {
    s.split_ascii_whitespace()
        .map(|t| {
            t.parse::<f64>()
                .map_err(|e| format!("{what}: `{t}` is not a number ({e})"))
        })
        .collect()
}

/// What the learned method ranked for one episode: enough to turn the answer's citations
/// into a [`Feedback`].
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The query embedding.
    pub query: Vec<f32>,
    /// The candidates' embeddings, in input order.
    pub candidates: Vec<Vec<f32>>,
    /// The selected candidate indices, in rank order (`OpOutput::items` follows it).
    pub chosen: Vec<usize>,
}

impl Trace {
    /// The feedback for this selection with one reward per selected memory (in rank order).
    pub fn feedback(&self, rewards: Vec<f32>) -> Feedback {
        Feedback {
            query: self.query.clone(),
            candidates: self.candidates.clone(),
            chosen: self.chosen.clone(),
            rewards,
        }
    }
}

/// One episode's rerank result.
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    /// The op output (the kept items, best first).
    pub output: OpOutput,
    /// The learned method's trace (None for `llm` and for an empty candidate list).
    pub trace: Option<Trace>,
}

/// The rerank op (both methods).
pub struct Reranker {
    /// How many memories to keep (M).
    pub top_m: usize,
    /// Which method, with its settings.
    pub method: Method,
    state: Mutex<State>,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker")
            .field("top_m", &self.top_m)
            .field("learned", &self.is_learned())
            .finish()
    }
}

fn backend(msg: impl Into<String>) -> Error {
    Error::backend("op rerank", msg)
}

impl Reranker {
    /// A learned reranker keeping `top_m`; loads `cfg.state_path` when that file exists.
    pub fn learned(top_m: usize, cfg: LearnedCfg) -> Result<Self> {
        let state = match &cfg.state_path {
            Some(p) if p.exists() => load_state(p, &cfg.state_key)?,
            _ => State::default(),
        };
        Ok(Reranker {
            top_m,
            method: Method::Learned(cfg),
            state: Mutex::new(state),
        })
    }

    /// An LLM listwise reranker keeping `top_m`.
    pub fn llm(top_m: usize, cfg: LlmCfg) -> Self {
        Reranker {
            top_m,
            method: Method::Llm(cfg),
            state: Mutex::new(State::default()),
        }
    }

    /// Reads the op's keys (everything but `kind`) from `cfg`; the caller calls
    /// [`Cfg::finish`]. The registry's `build` and the `rmm` paradigm both use it.
    pub fn from_cfg(cfg: &mut Cfg) -> Result<Self> {
        let method: String = cfg.get_checked(
            "method",
            "learned".to_string(),
            |m| m == "learned" || m == "llm",
            "\"learned\" or \"llm\"",
        )?;
        let top_m =
            cfg.get_checked("top_m", 5usize, |n| *n > 0, "a positive number of memories")?;
        if method == "llm" {
            let template = template_from_cfg(
                cfg,
                "template",
                DEFAULT_TEMPLATE,
                &["question", "memories"],
                &["question", "memories"],
            )?;
            let sampling = sampling_from_cfg(cfg, 96)?;
            let model = model_from_cfg(cfg, "model")?;
            return Ok(Reranker::llm(
                top_m,
                LlmCfg {
                    template,
                    sampling,
                    model,
                },
            ));
        }
        let tau = cfg.get_checked(
            "temperature",
            0.5f64,
            |t| t.is_finite() && *t > 0.0,
            "a Gumbel temperature > 0",
        )?;
        let sample = cfg.get("sample", true)?;
        let lr = cfg.get_checked(
            "lr",
            1e-3f64,
            |l| l.is_finite() && *l >= 0.0,
            "a finite step size >= 0",
        )?;
        let baseline = baseline_from_cfg(cfg)?;
        let batch = cfg.get_checked(
            "batch",
            1usize,
            |n| *n > 0,
            "a positive number of questions per update",
        )?;
        let init_kind: String = cfg.get_checked(
            "init",
            "normal".to_string(),
            |i| i == "normal" || i == "zero",
            "\"normal\" or \"zero\"",
        )?;
        let init = if init_kind == "zero" {
            Init::Zero
        } else {
            let std = cfg.get_checked(
                "init_std",
                0.01f64,
                |s| s.is_finite() && *s >= 0.0,
                "a finite standard deviation >= 0",
            )?;
            let seed = cfg.get("init_seed", 0u64)?;
            Init::Normal { std, seed }
        };
        let state_path: Option<String> = cfg.opt("state_path")?;
        Reranker::learned(
            top_m,
            LearnedCfg {
                tau,
                sample,
                lr,
                baseline,
                batch,
                init,
                state_path: state_path.map(PathBuf::from),
                state_key: cfg.key("state_path"),
            },
        )
    }

    /// True for the learned method (the one [`Reranker::reinforce`] trains).
    pub fn is_learned(&self) -> bool {
        matches!(self.method, Method::Learned(_))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| backend("adapter lock poisoned by a panic"))
    }

    /// A copy of the current adapters (None before first use).
    pub fn weights(&self) -> Option<Adapters> {
        self.state.lock().ok().and_then(|s| s.adapters.clone())
    }

    /// The current baseline `b`.
    pub fn baseline(&self) -> f64 {
        self.state.lock().map(|s| s.baseline).unwrap_or(0.0)
    }

    /// Number of [`Reranker::reinforce`] updates applied (including loaded ones).
    pub fn updates(&self) -> u64 {
        self.state.lock().map(|s| s.updates).unwrap_or(0)
    }

    /// Replaces the adapters (tests, warm starts).
    pub fn set_weights(&self, adapters: Adapters) -> Result<()> {
        adapters.check().map_err(Error::Invalid)?;
        self.lock()?.adapters = Some(adapters);
        Ok(())
    }

    fn init_adapters(&self, cfg: &LearnedCfg, dim: usize) -> Adapters {
        match cfg.init {
            Init::Zero => Adapters::zeros(dim),
            Init::Normal { std, seed } => Adapters::normal(dim, std, seed),
        }
    }

    /// Reranks each episode's candidates. `inputs[i]` belongs to `cxs[i]`; the `llm` method
    /// makes one lockstep LM call for the episodes with at least two candidates.
    pub fn rerank_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<Reranked>> {
        if cxs.len() != inputs.len() {
            return Err(Error::Invalid(format!(
                "{} episodes but {} op inputs",
                cxs.len(),
                inputs.len()
            )));
        }
        match &self.method {
            Method::Learned(cfg) => cxs
                .iter()
                .zip(inputs)
                .map(|(cx, input)| self.rerank_learned(cfg, cx, input))
                .collect(),
            Method::Llm(cfg) => self.rerank_llm(cfg, cxs, inputs),
        }
    }

    fn rerank_learned(
        &self,
        cfg: &LearnedCfg,
        cx: &EpisodeCx<'_>,
        input: &OpInput<'_>,
    ) -> Result<Reranked> {
        if input.memory.is_empty() {
            return Ok(Reranked {
                output: OpOutput::default(),
                trace: None,
            });
        }
        let who = "op rerank (learned)";
        let query = cx
            .embed(who, &[input.question])?
            .pop()
            .ok_or_else(|| backend("embedder returned no vector"))?;
        let dim = query.len();
        if dim == 0 {
            return Err(backend("the embedder returned an empty vector"));
        }
        let candidates = candidate_embeddings(cx, who, input.memory, dim)?;
        let scores = {
            let mut st = self.lock()?;
            if st.adapters.is_none() {
                st.adapters = Some(self.init_adapters(cfg, dim));
            }
            let ad = st.adapters.as_ref().expect("initialised above");
            if ad.dim != dim {
                return Err(Error::config(
                    cfg.state_key.clone(),
                    format!(
                        "the loaded adapters have dim {}, but the embedder gives {dim}-dimensional vectors",
                        ad.dim
                    ),
                ));
            }
            ad.scores(&query, &candidates)
        };
        let m = self.top_m.min(candidates.len());
        let chosen = if cfg.sample {
            let s = seed::derive_n(cx.episode.seed, cx.episode.steps.len() as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(s);
            learned::gumbel_top_m(&scores, cfg.tau, m, &mut rng)
        } else {
            learned::top_m(&scores, m)
        };
        let items = chosen
            .iter()
            .enumerate()
            .map(|(r, &k)| annotate(&input.memory[k], k, r, scores[k]))
            .collect();
        Ok(Reranked {
            output: OpOutput {
                items,
                ..Default::default()
            },
            trace: Some(Trace {
                query,
                candidates,
                chosen,
            }),
        })
    }

    fn rerank_llm(
        &self,
        cfg: &LlmCfg,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<Reranked>> {
        let requests: Vec<Option<GenRequest>> = inputs
            .iter()
            .map(|input| {
                (input.memory.len() >= 2).then(|| {
                    let text = cfg.template.render(&[
                        ("question", input.question),
                        ("memories", &render_memory_list(input.memory)),
                    ]);
                    GenRequest {
                        prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
                        params: cfg.sampling.clone(),
                    }
                })
            })
            .collect();
        let gens = op_generate_subset(cfg.model.as_deref(), cxs, ROLE, requests)?;
        Ok(inputs
            .iter()
            .zip(gens)
            .map(|(input, g)| {
                let n = input.memory.len();
                let (order, parse_error) = match g {
                    Some(g) => parse_ranking(&g.text, n),
                    None => ((0..n).collect(), None),
                };
                let items = order
                    .iter()
                    .take(self.top_m)
                    .enumerate()
                    .map(|(r, &k)| annotate(&input.memory[k], k, r, 1.0 / (r as f64 + 1.0)))
                    .collect();
                Reranked {
                    output: OpOutput {
                        items,
                        parse_error,
                        ..Default::default()
                    },
                    trace: None,
                }
            })
            .collect())
    }

    /// The feedback of one answered question (module docs, "Online learning"): checked,
    /// added to the pending batch, and when `batch` questions are pending, one update —
    /// gradients at the current weights and baseline, `W += lr · mean ∇J` over every
    /// pending feedback, then the running-mean baseline moves. Returns whether an update
    /// was applied. An empty `feedback` is not a question (nothing happens). Adapters not
    /// yet initialised are initialised with the feedback's dimension. Errors (`Invalid`) on
    /// inconsistent shapes (nothing is added then) and on an `llm` reranker.
    pub fn reinforce(&self, feedback: &[Feedback]) -> Result<bool> {
        let cfg = self.learned_cfg()?;
        let Some(first) = feedback.first() else {
            return Ok(false);
        };
        let mut st = self.lock()?;
        if st.adapters.is_none() {
            st.adapters = Some(self.init_adapters(cfg, first.query.len()));
        }
        let dim = st.adapters.as_ref().map_or(0, |a| a.dim);
        for (i, f) in feedback.iter().enumerate() {
            f.check(dim)
                .map_err(|e| Error::Invalid(format!("rerank feedback {i}: {e}")))?;
        }
        st.pending.extend_from_slice(feedback);
        st.pending_questions += 1;
        if st.pending_questions < cfg.batch {
            return Ok(false);
        }
        Self::apply_pending(cfg, &mut st);
        Ok(true)
    }

    /// Applies a partial batch now (as if `batch` questions were pending). Returns whether
    /// there was anything to apply.
    pub fn flush(&self) -> Result<bool> {
        let cfg = self.learned_cfg()?;
        let mut st = self.lock()?;
        if st.pending.is_empty() || st.adapters.is_none() {
            return Ok(false);
        }
        Self::apply_pending(cfg, &mut st);
        Ok(true)
    }

    /// Questions whose feedback waits for the batch to fill.
    pub fn pending_questions(&self) -> usize {
        self.state.lock().map(|s| s.pending_questions).unwrap_or(0)
    }

    fn learned_cfg(&self) -> Result<&LearnedCfg> {
        match &self.method {
            Method::Learned(cfg) => Ok(cfg),
            Method::Llm(_) => Err(Error::Invalid(
                "reinforce called on an llm reranker (only method = \"learned\" learns)".into(),
            )),
        }
    }

    /// One update from every pending feedback (the mean of their gradients), then the
    /// running-mean baseline moves; the batch is emptied.
    fn apply_pending(cfg: &LearnedCfg, st: &mut State) {
        let feedback = std::mem::take(&mut st.pending);
        st.pending_questions = 0;
        let b = match cfg.baseline {
            Baseline::Mean => st.baseline,
            Baseline::None => 0.0,
            Baseline::Constant(b) => b,
        };
        let ad = st
            .adapters
            .as_ref()
            .expect("pending feedback implies adapters");
        let dim = ad.dim;
        let mut g_q = vec![0.0f64; dim * dim];
        let mut g_m = vec![0.0f64; dim * dim];
        for f in &feedback {
            let (gq, gm) = learned::gradient(ad, f, cfg.tau, b);
            for (a, g) in g_q.iter_mut().zip(gq) {
                *a += g;
            }
            for (a, g) in g_m.iter_mut().zip(gm) {
                *a += g;
            }
        }
        let step = cfg.lr / feedback.len() as f64;
        let ad = st
            .adapters
            .as_mut()
            .expect("pending feedback implies adapters");
        for (w, g) in ad.w_q.iter_mut().zip(&g_q) {
            *w += step * g;
        }
        for (w, g) in ad.w_m.iter_mut().zip(&g_m) {
            *w += step * g;
        }
        if cfg.baseline == Baseline::Mean {
            for f in &feedback {
                if !f.rewards.is_empty() {
                    let mean = f.rewards.iter().map(|r| f64::from(*r)).sum::<f64>()
                        / f.rewards.len() as f64;
                    st.baseline = 0.9 * st.baseline + 0.1 * mean;
                }
            }
        }
        st.updates += 1;
    }

    /// Writes the adapters to `state_path` (temporary file in the same directory, fsync,
    /// rename). Does nothing without `state_path` or before the adapters exist.
    pub fn save(&self) -> Result<()> {
        let Method::Learned(cfg) = &self.method else {
            return Ok(());
        };
        let Some(path) = &cfg.state_path else {
            return Ok(());
        };
        let saved = {
            let st = self.lock()?;
            let Some(ad) = &st.adapters else {
                return Ok(());
            };
            SavedState {
                format: STATE_FORMAT.into(),
                dim: ad.dim,
                baseline: format!("{:e}", st.baseline),
                updates: st.updates,
                w_q: floats_to_text(&ad.w_q),
                w_m: floats_to_text(&ad.w_m),
                pending_questions: st.pending_questions,
                pending: st
                    .pending
                    .iter()
                    .map(SavedFeedback::from_feedback)
                    .collect(),
            }
        };
        let bytes = serde_json::to_vec(&saved)
            .map_err(|e| backend(format!("cannot serialise adapters: {e}")))?;
        write_atomic(path, &bytes)
    }
}

/// Reads `baseline`: `"mean"` (default), `"none"` or a finite number (a constant `b`).
fn baseline_from_cfg(cfg: &mut Cfg) -> Result<Baseline> {
    let expected = "\"mean\", \"none\" or a finite number (a constant baseline, e.g. 0.5)";
    let (b, resolved) = match cfg.raw("baseline") {
        None => (Baseline::Mean, toml::Value::String("mean".into())),
        Some(toml::Value::String(s)) if s == "mean" => (Baseline::Mean, toml::Value::String(s)),
        Some(toml::Value::String(s)) if s == "none" => (Baseline::None, toml::Value::String(s)),
        Some(v @ toml::Value::Float(_)) | Some(v @ toml::Value::Integer(_)) => {
            let x = match v {
                toml::Value::Float(x) => x,
                toml::Value::Integer(i) => i as f64,
                _ => unreachable!("matched above"),
            };
            if !x.is_finite() {
                return Err(cfg.error("baseline", format!("expected {expected}, found {x}")));
            }
            (Baseline::Constant(x), toml::Value::Float(x))
        }
        Some(toml::Value::String(s)) => {
            return Err(cfg.error("baseline", format!("expected {expected}, found \"{s}\"")));
        }
        Some(v) => {
            return Err(cfg.error(
                "baseline",
                format!("expected {expected}, found {} {v}", v.type_str()),
            ));
        }
    };
    cfg.set_resolved("baseline", resolved);
    Ok(b)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rerank-state".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn load_state(path: &Path, key: &str) -> Result<State> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| {
        Error::config(
            key,
            format!(
                "cannot load reranker adapters from `{}`: {msg}",
                path.display()
            ),
        )
    };
    let s: SavedState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if s.format != STATE_FORMAT {
        return Err(bad(format!(
            "format `{}`, expected `{STATE_FORMAT}`",
            s.format
        )));
    }
    let ad = Adapters {
        dim: s.dim,
        w_q: floats_from_text(&s.w_q, "w_q").map_err(bad)?,
        w_m: floats_from_text(&s.w_m, "w_m").map_err(bad)?,
    };
    ad.check().map_err(bad)?;
    let baseline = s
        .baseline
        .parse::<f64>()
        .ok()
        .filter(|b| b.is_finite())
        .ok_or_else(|| bad(format!("baseline `{}` is not a finite number", s.baseline)))?;
    let pending: Vec<Feedback> = s
        .pending
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.to_feedback(i)?;
            f.check(ad.dim).map(|()| f)
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(bad)?;
    if pending.is_empty() != (s.pending_questions == 0) {
        return Err(bad(format!(
            "{} pending questions with {} pending feedbacks",
            s.pending_questions,
            pending.len()
        )));
    }
    Ok(State {
        adapters: Some(ad),
        baseline,
        updates: s.updates,
        pending,
        pending_questions: s.pending_questions,
    })
}

fn annotate(item: &MemoryItem, candidate: usize, rank: usize, score: f64) -> MemoryItem {
    let mut it = item.clone();
    it.meta.insert("score".into(), format!("{score:.6}"));
    it.meta.insert("rank".into(), (rank + 1).to_string());
    it.meta.insert("candidate".into(), candidate.to_string());
    it
}

/// The candidates' embeddings: each item's own when it has one of size `dim`, the others
/// embedded with one `cx.embed` call (not stored).
fn candidate_embeddings(
    cx: &EpisodeCx<'_>,
    who: &str,
    items: &[MemoryItem],
    dim: usize,
) -> Result<Vec<Vec<f32>>> {
    let missing: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].embedding.as_ref().is_none_or(|e| e.len() != dim))
        .collect();
    let texts: Vec<&str> = missing.iter().map(|&i| items[i].content.as_str()).collect();
    let mut fresh = if texts.is_empty() {
        Vec::new()
    } else {
        cx.embed(who, &texts)?
    }
    .into_iter();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if missing.binary_search(&i).is_ok() {
            let v = fresh
                .next()
                .ok_or_else(|| backend("embedder returned too few vectors"))?;
            if v.len() != dim {
                return Err(backend(format!(
                    "embedder returned a {}-dimensional vector, expected {dim}",
                    v.len()
                )));
            }
            out.push(v);
        } else {
            out.push(item.embedding.clone().unwrap_or_default());
        }
    }
    Ok(out)
}

/// Memories as the prompts list them: one per line, `[i] (speaker, time) content`, the
/// parenthesis holding what is known (omitted when neither is).
pub fn render_memory_list(items: &[MemoryItem]) -> String {
    items
        .iter()
        .enumerate()
        .map(|(i, m)| memory_line(i, m))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One memory's line: `[i] (speaker, time) content`.
fn memory_line(i: usize, m: &MemoryItem) -> String {
    let who: Vec<&str> = [m.speaker.as_deref(), m.time.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if who.is_empty() {
        format!("[{i}] {}", m.content)
    } else {
        format!("[{i}] ({}) {}", who.join(", "), m.content)
    }
}

/// Meta key holding a memory's raw dialogue turns, one rendered turn per line
/// (`[D1:3] Caroline (8 May, 2023): text`), as the `summarize` op stores them.
pub const DIALOGUE_META: &str = "dialogue";

/// Memories as RMM's answer prompt shows them: each memory's summary line as
/// [`render_memory_list`] writes it, followed by the raw dialogue turns it was built from
/// (meta [`DIALOGUE_META`]), one per line, indented by four spaces — RMM's generator sees
/// "personal summaries with their corresponding original turns" (arXiv 2503.08026,
/// App. D.2). A memory without raw turns shows its summary line alone.
///
/// `max_turn_chars` bounds the characters (Unicode scalar values) of one memory's turn
/// lines, indentation not counted, so that the prompt stays inside the model's context
/// (about 4 characters per token in English): turns are shown whole in order while they
/// fit; the first that does not fit is cut to the budget left and ends with `…`, and the
/// turns after it are replaced by one line `    (+N more turns)`. `0` shows every turn
/// whole.
pub fn render_memory_list_with_turns(items: &[MemoryItem], max_turn_chars: usize) -> String {
    let mut out = String::new();
    for (i, m) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&memory_line(i, m));
        let turns: Vec<(&str, &str)> = dialogue_lines(m).into_iter().map(|t| ("    ", t)).collect();
        push_bounded_turns(&mut out, &turns, max_turn_chars, "    ");
    }
    out
}

/// The non-empty lines of a memory's meta [`DIALOGUE_META`], trimmed.
fn dialogue_lines(m: &MemoryItem) -> Vec<&str> {
    m.meta
        .get(DIALOGUE_META)
        .map(|d| d.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

/// Appends `turns` (`(indent, text)`), one per line, bounded by `max_turn_chars`
/// characters of text in all (see [`render_memory_list_with_turns`]); the
/// `(+N more turns)` line is indented by `more_indent`.
fn push_bounded_turns(
    out: &mut String,
    turns: &[(&str, &str)],
    max_turn_chars: usize,
    more_indent: &str,
) {
    let mut left = max_turn_chars;
    for (i, (indent, t)) in turns.iter().enumerate() {
        let n = t.chars().count();
        if max_turn_chars == 0 || n <= left {
            out.push('\n');
            out.push_str(indent);
            out.push_str(t);
            left = left.saturating_sub(n);
            continue;
        }
        let mut dropped = turns.len() - i;
        if left > 0 {
            out.push('\n');
            out.push_str(indent);
            out.extend(t.chars().take(left));
            out.push('…');
            dropped -= 1;
        }
        if dropped > 0 {
            let s = if dropped == 1 { "" } else { "s" };
            out.push_str(&format!("\n{more_indent}(+{dropped} more turn{s})"));
        }
        break;
    }
}

/// Memories in the layout of RMM's answer prompt (arXiv 2503.08026 App. D.2, recipe
/// `[agent.answer] template = "rmm-paper"`): per memory a line `  - Memory [i]: summary`,
/// then its raw turns as bullets, one utterance per line without its turn id,
/// `    * Caroline (8 May, 2023): text` starting a bullet and `      Melanie (…): text`
/// continuing it — a bullet is one dialogue turn (the paper's example pairs
/// `Speaker 1` and `Speaker 2`), so a new bullet starts when a speaker already in the
/// current one speaks again. Turn characters are bounded per memory by `max_turn_chars`
/// as in [`render_memory_list_with_turns`] (`0` = no bound). Unlike the paper's example,
/// each utterance keeps its session date (LoCoMo's temporal questions need it).
pub fn render_memory_list_rmm_paper(items: &[MemoryItem], max_turn_chars: usize) -> String {
    let mut out = String::new();
    for (i, m) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("  - Memory [{i}]: {}", m.content));
        let mut turns: Vec<(&str, &str)> = Vec::new();
        let mut speakers: Vec<&str> = Vec::new();
        for line in dialogue_lines(m) {
            let text = strip_turn_id(line);
            let speaker = utterance_speaker(text);
            let indent = if turns.is_empty() || speakers.contains(&speaker) {
                speakers.clear();
                "    * "
            } else {
                "      "
            };
            speakers.push(speaker);
            turns.push((indent, text));
        }
        push_bounded_turns(&mut out, &turns, max_turn_chars, "    ");
    }
    out
}

/// `[D1:3] Caroline (…): text` → `Caroline (…): text` (unchanged without a leading id).
fn strip_turn_id(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((id, rest)) if !id.contains(' ') => rest,
        _ => line,
    }
}

/// The speaker of `Caroline (date): text` / `Caroline: text` (the text before the first
/// ` (` or `: `, whichever comes first).
fn utterance_speaker(text: &str) -> &str {
    let end = [text.find(" ("), text.find(": ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

/// Parses a listwise ranking of `n` candidates. Candidate numbers are the bracketed
/// integers (`[2] > [0] > [5]`, `[2], [0]`), or, when the output has none, its bare
/// integers (`2 > 0 > 5`); duplicates are dropped. Numbers out of `0..n` are ignored and
/// reported. Candidates the model did not list follow in retriever order (RankGPT's rule),
/// so the result is always a permutation of `0..n`. No valid number at all → the
/// retriever order with a parse error.
pub fn parse_ranking(text: &str, n: usize) -> (Vec<usize>, Option<String>) {
    let bracketed = integers(text, true);
    let nums = if bracketed.is_empty() {
        integers(text, false)
    } else {
        bracketed
    };
    let mut order = Vec::new();
    let mut seen = vec![false; n];
    let mut bad = Vec::new();
    for v in nums {
        match usize::try_from(v).ok().filter(|&i| i < n) {
            Some(i) => {
                if !std::mem::replace(&mut seen[i], true) {
                    order.push(i);
                }
            }
            None => bad.push(v.to_string()),
        }
    }
    let error = if order.is_empty() {
        Some(if bad.is_empty() {
            "no candidate number in the ranking; kept the retriever order".to_string()
        } else {
            format!(
                "no valid candidate number in the ranking (out of range 0..{n}: {}); kept the retriever order",
                bad.join(", ")
            )
        })
    } else if !bad.is_empty() {
        Some(format!(
            "candidate number(s) out of range 0..{n} ignored: {}",
            bad.join(", ")
        ))
    } else {
        None
    };
    order.extend((0..n).filter(|i| !seen[*i]));
    (order, error)
}

/// Integers of `text` in order: only `[digits]` when `bracketed`, else every run of digits.
/// Numbers too large for u64 are skipped.
fn integers(text: &str, bracketed: bool) -> Vec<u64> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let ok =
                !bracketed || (start > 0 && b[start - 1] == b'[' && i < b.len() && b[i] == b']');
            if ok && let Ok(v) = text[start..i].parse::<u64>() {
                out.push(v);
            }
        } else {
            i += 1;
        }
    }
    out
}

impl MemoryOp for Reranker {
    fn kind(&self) -> &'static str {
        "rerank"
    }

    fn frozen_roles(&self) -> Vec<(String, String)> {
        match &self.method {
            Method::Llm(c) => memfactory_core::op::own_model_roles(c.model.as_deref(), &[ROLE]),
            Method::Learned(_) => Vec::new(),
        }
    }

    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        let mut out = self.rerank_batch(std::slice::from_mut(cx), &[input])?;
        Ok(out.pop().map(|r| r.output).unwrap_or_default())
    }

    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        Ok(self
            .rerank_batch(cxs, inputs)?
            .into_iter()
            .map(|r| r.output)
            .collect())
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    Ok(Box::new(Reranker::from_cfg(cfg)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "rerank",
        about: "RMM retrospective reflection: learned reranker (residual adapters, Gumbel top-M, online REINFORCE on citations) or LLM listwise reranking",
        build,
    }
}
