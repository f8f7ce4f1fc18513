//! # memfactory-data-ruler
//!
//! RULER's synthetic long-context tasks — needle-in-a-haystack retrieval, variable
//! tracking, common-words and frequent-words extraction — generated on the fly, each
//! instance a pure function of (parameters, seed, index). In MemFactory this crate is a
//! dataset component ([`memfactory_core::DataSource`]) registered under `kind = "ruler"`; a
//! recipe names it in `[data.eval]` or `[data.train]`, and the `memfactory` facade links it
//! through the `data-ruler` feature. The scoring functions RULER uses,
//! [`string_match_all`] and [`string_match_part`], are exported as pure functions; each
//! sample names the one that applies in `meta.metric`.
//!
//! The formats follow NVIDIA/RULER's generators (`scripts/data/synthetic/niah.py`,
//! `variable_tracking.py`, `common_words_extraction.py`, `freq_words_extraction.py`) and
//! its prompt templates; the code is written from those formats, not ported.
//!
//! ## Tasks (`task`)
//!
//! | task | context | question | references |
//! |---|---|---|---|
//! | `niah-single` | noise lines with one needle `One of the special magic {type} for {key} is: {value}.` | `What is the special magic {type} for {key} mentioned in the provided text?` | the value |
//! | `niah-multikey` | `keys` needles with distinct keys, one asked | same | the asked key's value |
//! | `niah-multivalue` | `values` needles for one key | `What are all the special magic {types} for {key} mentioned in the provided text?` | every value |
//! | `niah-multiquery` | `keys` needles, `queries` of them asked (`a, b, and c`) | same, listing the keys | every asked value |
//! | `vt` | noise lines with `chains` chains `VAR ABCDE = 12345`, `VAR FGHIJ = VAR ABCDE`, … of `hops` hops each, in order | `Find all variables that are assigned the value 12345 in the text above.` | the `hops + 1` names of the asked chain |
//! | `cwe` | numbered list `1. word 2. word …`: `common` words `common_freq` times each, the others `uncommon_freq` times, shuffled | `What are the 10 most common words in the above list?` | the common words |
//! | `fwe` | coded words (`word_len` random letters) drawn with Zipf weights `k^-alpha / ζ(alpha)`; rank 1 is the noise word `...` | `Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?` | ranks 2–4 |
//!
//! The noise haystack is RULER's `The grass is green. The sky is blue. The sun is yellow.
//! Here we go. There and back again.` repeated one per line; needles and assignments are
//! lines inserted between them. Paul Graham essays (RULER's other haystack) and RULER's
//! one-shot examples for vt/cwe are not included. Keys, and values of type `words`, come
//! from a built-in list of a few hundred English words ([`WORDS`]); `numbers` are 7-digit,
//! `uuids` are version-4 UUIDs. All keys and all values of an instance are distinct. cwe
//! draws its words from [`WORDS`] while they suffice to fill `tokens`, else (for every word
//! of that instance) from ordered pairs of two different words, `apple-river`.
//!
//! ## Samples
//!
//! [`Sample::context`] is the haystack alone; [`Sample::question`] is RULER's question;
//! [`Sample::answers`] the references; [`Sample::id`] is `"{task}-{tokens}-{seed}-{index}"`;
//! [`Sample::category`] the task. [`Sample::meta`] holds `task`, `tokens` (the context's
//! measured size), `target_tokens`, `counted_by` (`"tokenizer"` or `"chars/4"`), `metric`
//! (`"string-match-all"`: RULER scores every synthetic task with it), `instruction` and
//! `answer_prefix` (the rest of RULER's template, for prompts that want it), `units` (the
//! haystack size used), `depth` (niah, vt: relative position of the first asked needle or
//! assignment, 0 = start, 1 = end), `queries` (niah: the asked keys, in order) and
//! `vocabulary` (cwe: `"words"` or `"pairs"`).
//!
//! ## Size
//!
//! `tokens` sizes the context. With a tokenizer ([`LoadCx::tokenizer`]), each instance's
//! haystack is grown or shrunk (secant steps, then bisection over the number of noise
//! lines / words) to the largest size whose `encode(context)` is at most `tokens`, so an
//! instance never exceeds the budget and falls short of it by at most one haystack unit.
//! Without one, 1 token is estimated as 4 characters. `tokens` is at most
//! [`MAX_SAMPLE_TOKENS`] (2^25), and one load generates at most
//! [`MAX_LOADED_TOKENS`] (2^30) tokens of contexts: more samples than that is a recipe error
//! naming `samples`, unless an eval limit (`[eval] limit`, `--limit`) asks for fewer — only
//! the first `limit` instances are generated ([`DataSource::load_first`]). RULER sizes the whole prompt
//! (template and generation budget included); here the agent's prompt is unknown, so only
//! the context is sized.
//!
//! ## Determinism
//!
//! Instance `index` draws from a [`ChaCha8Rng`](rand_chacha::ChaCha8Rng) seeded (through
//! `seed_from_u64`) with [`instance_seed`] = `derive_n(derive(seed, "ruler/{task}"), index)`
//! ([`memfactory_core::seed`]). Integers, shuffles and samples are computed here from
//! `next_u64` alone ([`rng`]: Lemire's unbiased multiply-shift with rejection, Fisher–Yates,
//! sparse partial Fisher–Yates), never with `rand`'s distributions or a thread RNG, so the
//! same recipe gives the same bytes across crate versions. Content (keys, values, chains,
//! depths) is drawn before anything that depends on the haystack size.
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `task` | string | required | `niah-single`, `niah-multikey`, `niah-multivalue`, `niah-multiquery`, `vt`, `cwe`, `fwe` |
//! | `tokens` | integer | `4000` | context size in tokens (1 to 2^25 = 33554432, and enough to hold the needles) |
//! | `samples` | integer | `100` | number of instances (≥ 1; with an eval limit, only the first `limit` are generated) |
//! | `seed` | integer | `0` | dataset seed |
//! | `offset` | integer | `0` | index of the first instance (instances `offset..offset+samples`) |
//! | `needle_type` | string | `"numbers"` | niah: values are `numbers` (7 digits), `words` or `uuids` |
//! | `key_type` | string | `"words"` | niah: keys are `words`, `numbers` or `uuids` |
//! | `depth` | float | random | niah: put every needle at this relative depth (0.0–1.0) instead of uniformly at random |
//! | `keys` | integer | `4` | niah-multikey, niah-multiquery: number of needles' keys |
//! | `values` | integer | `4` | niah-multivalue: values of the one key |
//! | `queries` | integer | `4` | niah-multiquery: keys asked (≤ `keys`) |
//! | `hops` | integer | `4` | vt: assignments after the first in each chain (≥ 1) |
//! | `chains` | integer | `1` | vt: chains (the first is asked, the others distract) |
//! | `common` | integer | `10` | cwe: number of common words (the references) |
//! | `common_freq` | integer | `30` (`6` below 4096 tokens) | cwe: repetitions of each common word |
//! | `uncommon_freq` | integer | `3` (`1` below 4096 tokens) | cwe: repetitions of each other word (< `common_freq`) |
//! | `alpha` | float | `2.0` | fwe: Zipf exponent (> 1) |
//! | `vocab` | integer | `max(tokens / 50, 10)` | fwe: coded-word vocabulary size, noise word included (≥ 5) |
//! | `word_len` | integer | `6` | fwe: letters per coded word (2–16) |
//!
//! Keys that do not apply to the chosen task are rejected as unknown. Bad values (an
//! unknown task, `hops = 0`, a `tokens` too small for the needles, …) are recipe errors
//! naming the key, found when the component is built (the size check there uses the
//! 4-characters estimate; a tokenizer that counts more can still fail at load, with the
//! same kind of error).
//!
//! ```toml
//! [data.eval]
//! kind = "ruler"
//! task = "niah-multikey"
//! tokens = 8000
//! samples = 50
//! ```
//!
//! ## Citation and licence
//!
//! RULER: Hsieh, Sun, Kriman, Acharya, Rekesh, Jia, Zhang, Ginsburg, "RULER: What's the
//! Real Context Size of Your Long-Context Language Models?", COLM 2024, arXiv:2404.06654.
//! NVIDIA/RULER is Apache-2.0, like this crate. Cite it wherever results on these tasks are
//! reported.

use std::fmt;

use memfactory_core::data::{MAX_LOADED_TOKENS, MAX_SAMPLE_TOKENS, too_much_to_load};
use memfactory_core::{Cfg, DataSource, Error, LanguageModel, LoadCx, Result, Sample, seed};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod metric;
pub mod rng;
mod tasks;
mod words;

pub use metric::{Metric, string_match_all, string_match_part};
pub use tasks::{fit, zeta, zipf_weights};
pub use words::WORDS;

/// Registry kind of this data source.
pub const KIND: &str = "ruler";

/// RULER's noise haystack: one line, repeated.
pub const NOISE: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

/// The needle sentence: `One of the special magic {type} for {key} is: {value}.`, with the
/// plural type name (`numbers`, `words`, `uuids`), as in RULER.
pub fn needle(ty: NeedleType, key: &str, value: &str) -> String {
    format!(
        "One of the special magic {} for {key} is: {value}.",
        ty.name()
    )
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

/// A RULER synthetic task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One needle; its value is asked.
    NiahSingle,
    /// Several needles with distinct keys; one key is asked.
    NiahMultikey,
    /// Several values for one key; all are asked.
    NiahMultivalue,
    /// Several needles; several keys are asked.
    NiahMultiquery,
    /// Variable tracking: chains of assignments; every name bound to a value is asked.
    Vt,
    /// Common words extraction: the most repeated words of a numbered list.
    Cwe,
    /// Frequent words extraction: the three most frequent coded words of a Zipf text.
    Fwe,
}

impl Task {
    /// Every task, in documentation order.
    pub const ALL: [Task; 7] = [
        Task::NiahSingle,
        Task::NiahMultikey,
        Task::NiahMultivalue,
        Task::NiahMultiquery,
        Task::Vt,
        Task::Cwe,
        Task::Fwe,
    ];

    /// The recipe name (`niah-single`, …, `fwe`).
    pub fn name(self) -> &'static str {
        match self {
            Task::NiahSingle => "niah-single",
            Task::NiahMultikey => "niah-multikey",
            Task::NiahMultivalue => "niah-multivalue",
            Task::NiahMultiquery => "niah-multiquery",
            Task::Vt => "vt",
            Task::Cwe => "cwe",
            Task::Fwe => "fwe",
        }
    }

    /// The task named `name`, if any.
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    /// True for the four needle-in-a-haystack tasks.
    pub fn is_niah(self) -> bool {
        matches!(
            self,
            Task::NiahSingle | Task::NiahMultikey | Task::NiahMultivalue | Task::NiahMultiquery
        )
    }

    /// The metric RULER scores this task with (every synthetic task: string-match-all).
    pub fn metric(self) -> Metric {
        Metric::StringMatchAll
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What needle keys or values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeedleType {
    /// 7-digit numbers.
    Numbers,
    /// Words of [`WORDS`].
    Words,
    /// Version-4 UUIDs.
    Uuids,
}

impl NeedleType {
    /// Every type.
    pub const ALL: [NeedleType; 3] = [NeedleType::Numbers, NeedleType::Words, NeedleType::Uuids];

    /// Recipe and needle name (plural): `numbers`, `words`, `uuids`.
    pub fn name(self) -> &'static str {
        match self {
            NeedleType::Numbers => "numbers",
            NeedleType::Words => "words",
            NeedleType::Uuids => "uuids",
        }
    }

    /// Singular, for single-answer questions: `number`, `word`, `uuid`.
    pub fn singular(self) -> &'static str {
        let n = self.name();
        &n[..n.len() - 1]
    }

    /// The type named `name`, if any.
    pub fn from_name(name: &str) -> Option<NeedleType> {
        NeedleType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Needle-task parameters (RULER's `num_needle_k`, `num_needle_v`, `num_needle_q`, types).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NiahParams {
    /// Keys (used by niah-multikey and niah-multiquery; the others use 1).
    pub keys: usize,
    /// Values per key (used by niah-multivalue; the others use 1).
    pub values: usize,
    /// Keys asked (used by niah-multiquery; the others ask 1).
    pub queries: usize,
    /// Type of the keys.
    pub key_type: NeedleType,
    /// Type of the values.
    pub needle_type: NeedleType,
    /// Fixed relative depth of every needle, else uniform at random.
    pub depth: Option<f64>,
}

/// Variable-tracking parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VtParams {
    /// Number of chains; the first is asked.
    pub chains: usize,
    /// Assignments after the first in each chain.
    pub hops: usize,
}

/// Common-words-extraction parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CweParams {
    /// Number of common words.
    pub common: usize,
    /// Repetitions of each common word.
    pub common_freq: usize,
    /// Repetitions of each uncommon word.
    pub uncommon_freq: usize,
}

impl CweParams {
    /// RULER's defaults for a context of `tokens`: 10 common words, 30 / 3 repetitions, or
    /// 6 / 1 below 4096 tokens.
    pub fn ruler_default(tokens: usize) -> Self {
        let (common_freq, uncommon_freq) = if tokens < 4096 { (6, 1) } else { (30, 3) };
        CweParams {
            common: 10,
            common_freq,
            uncommon_freq,
        }
    }
}

/// Frequent-words-extraction parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FweParams {
    /// Zipf exponent (> 1).
    pub alpha: f64,
    /// Vocabulary size, the noise word `...` included.
    pub vocab: usize,
    /// Letters per coded word.
    pub word_len: usize,
}

impl FweParams {
    /// RULER's defaults for a context of `tokens`: α = 2, `tokens / 50` words (at least
    /// 10), 6 letters.
    pub fn ruler_default(tokens: usize) -> Self {
        FweParams {
            alpha: 2.0,
            vocab: (tokens / 50).max(10),
            word_len: 6,
        }
    }
}

/// Everything an instance depends on, besides its index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Which task.
    pub task: Task,
    /// Target context size in tokens.
    pub tokens: usize,
    /// Number of instances loaded.
    pub samples: usize,
    /// Dataset seed.
    pub seed: u64,
    /// Index of the first instance loaded.
    pub offset: usize,
    /// Needle tasks.
    pub niah: NiahParams,
    /// Variable tracking.
    pub vt: VtParams,
    /// Common words extraction.
    pub cwe: CweParams,
    /// Frequent words extraction.
    pub fwe: FweParams,
}

/// A parameter that fails validation: the recipe key (relative to the component's table)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// Recipe key, e.g. `hops`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Params {
    /// RULER's defaults for `task` at 4000 tokens, 100 samples, seed 0.
    pub fn new(task: Task) -> Self {
        let tokens = 4000;
        Params {
            task,
            tokens,
            samples: 100,
            seed: 0,
            offset: 0,
            niah: NiahParams {
                keys: 4,
                values: 4,
                queries: 4,
                key_type: NeedleType::Words,
                needle_type: NeedleType::Numbers,
                depth: None,
            },
            vt: VtParams { chains: 1, hops: 4 },
            cwe: CweParams::ruler_default(tokens),
            fwe: FweParams::ruler_default(tokens),
        }
    }

    /// `(keys, values per key, keys asked)` for the needle tasks, as the task uses them.
    pub fn needle_counts(&self) -> (usize, usize, usize) {
        let n = &self.niah;
        match self.task {
            Task::NiahMultikey => (n.keys, 1, 1),
            Task::NiahMultivalue => (1, n.values, 1),
            Task::NiahMultiquery => (n.keys, 1, n.queries),
            _ => (1, 1, 1),
        }
    }

    /// Checks every parameter the task uses (not the size: see [`Ruler::new`]).
    pub fn check(&self) -> std::result::Result<(), ParamError> {
        let err = |key: &'static str, message: String| Err(ParamError { key, message });
        if self.tokens == 0 {
            return err("tokens", "expected a positive token count, found 0".into());
        }
        if self.tokens > MAX_SAMPLE_TOKENS {
            return err(
                "tokens",
                format!(
                    "expected at most {MAX_SAMPLE_TOKENS} tokens per context (2^25, beyond the \
                     longest long-context evaluations), found {}",
                    self.tokens
                ),
            );
        }
        if self.samples == 0 {
            return err("samples", "expected at least 1 sample, found 0".into());
        }
        if self.offset.checked_add(self.samples).is_none() {
            return err(
                "offset",
                format!("offset {} + samples overflows", self.offset),
            );
        }
        match self.task {
            Task::NiahSingle | Task::NiahMultikey | Task::NiahMultivalue | Task::NiahMultiquery => {
                let n = &self.niah;
                if let Some(d) = n.depth
                    && !(d.is_finite() && (0.0..=1.0).contains(&d))
                {
                    return err(
                        "depth",
                        format!("expected a depth in [0.0, 1.0], found {d}"),
                    );
                }
                let (k, v, q) = self.needle_counts();
                if k == 0 {
                    return err("keys", "expected at least 1 key, found 0".into());
                }
                if v == 0 {
                    return err("values", "expected at least 1 value, found 0".into());
                }
                if q == 0 {
                    return err("queries", "expected at least 1 query, found 0".into());
                }
                if q > k {
                    return err(
                        "queries",
                        format!("expected at most `keys` = {k} queries, found {q}"),
                    );
                }
                let w = WORDS.len();
                let key_words = if n.key_type == NeedleType::Words {
                    k
                } else {
                    0
                };
                let value_words = if n.needle_type == NeedleType::Words {
                    k.saturating_mul(v)
                } else {
                    0
                };
                if key_words.saturating_add(value_words) > w {
                    let key = if self.task == Task::NiahMultivalue {
                        "values"
                    } else {
                        "keys"
                    };
                    return err(
                        key,
                        format!(
                            "needs {} distinct words but the built-in list has {w}",
                            key_words + value_words
                        ),
                    );
                }
                if k > 100_000 || k.saturating_mul(v) > 100_000 {
                    return err(key_of_count(self.task), "at most 100000 needles".into());
                }
            }
            Task::Vt => {
                if self.vt.hops == 0 {
                    return err("hops", "expected at least 1 hop, found 0".into());
                }
                if self.vt.chains == 0 {
                    return err("chains", "expected at least 1 chain, found 0".into());
                }
                if self.vt.chains > 10_000 {
                    return err(
                        "chains",
                        format!("expected at most 10000 chains, found {}", self.vt.chains),
                    );
                }
                if self.vt.hops > 100_000 {
                    return err(
                        "hops",
                        format!("expected at most 100000 hops, found {}", self.vt.hops),
                    );
                }
            }
            Task::Cwe => {
                let c = &self.cwe;
                if c.common == 0 {
                    return err("common", "expected at least 1 common word, found 0".into());
                }
                let w = WORDS.len();
                if c.common > w {
                    return err(
                        "common",
                        format!(
                            "expected at most {w} common words (the word list), found {}",
                            c.common
                        ),
                    );
                }
                if c.uncommon_freq == 0 {
                    return err("uncommon_freq", "expected at least 1, found 0".into());
                }
                if c.common_freq <= c.uncommon_freq {
                    return err(
                        "common_freq",
                        format!(
                            "expected more than `uncommon_freq` = {}, found {}",
                            c.uncommon_freq, c.common_freq
                        ),
                    );
                }
            }
            Task::Fwe => {
                let f = &self.fwe;
                if !(f.alpha.is_finite() && f.alpha > 1.0 && f.alpha <= 16.0) {
                    return err(
                        "alpha",
                        format!("expected a Zipf exponent in (1, 16], found {}", f.alpha),
                    );
                }
                if !(2..=16).contains(&f.word_len) {
                    return err(
                        "word_len",
                        format!("expected 2 to 16 letters, found {}", f.word_len),
                    );
                }
                if f.vocab < 5 {
                    return err(
                        "vocab",
                        format!(
                            "expected at least 5 words (noise word, 3 answers, 1 other), found {}",
                            f.vocab
                        ),
                    );
                }
                let space = 26f64.powi(f.word_len as i32);
                if f.vocab as f64 > space / 2.0 || f.vocab > 1_000_000 {
                    return err(
                        "vocab",
                        format!(
                            "expected at most {} words of {} letters, found {}",
                            (space / 2.0).min(1_000_000.0) as u64,
                            f.word_len,
                            f.vocab
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn key_of_count(task: Task) -> &'static str {
    if task == Task::NiahMultivalue {
        "values"
    } else {
        "keys"
    }
}

/// The seed of instance `index`: `derive_n(derive(seed, "ruler/{task}"), index)`.
pub fn instance_seed(params: &Params, index: usize) -> u64 {
    let base = seed::derive(params.seed, &format!("ruler/{}", params.task.name()));
    seed::derive_n(base, index as u64)
}

// ---------------------------------------------------------------------------------------
// The data source
// ---------------------------------------------------------------------------------------

/// How context size is counted.
#[derive(Clone, Copy)]
enum Counter<'a> {
    Tokenizer(&'a dyn LanguageModel),
    Estimate,
}

impl Counter<'_> {
    fn count(&self, text: &str) -> Result<usize> {
        match self {
            Counter::Tokenizer(lm) => Ok(lm.encode(text)?.len()),
            Counter::Estimate => Ok(text.chars().count().div_ceil(4)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Counter::Tokenizer(_) => "tokenizer",
            Counter::Estimate => "chars/4",
        }
    }
}

/// The `ruler` data source: validated [`Params`] plus the recipe path of `tokens` (for
/// size errors found at load time).
#[derive(Debug, Clone)]
pub struct Ruler {
    params: Params,
    tokens_key: String,
    samples_key: String,
}

impl Ruler {
    /// Validates `params` (including that `tokens` holds the needles of the first
    /// instance, by the 4-characters estimate); errors name the bare key (`hops`, …).
    pub fn new(params: Params) -> Result<Self> {
        Self::with_path(params, "")
    }

    fn with_path(params: Params, path: &str) -> Result<Self> {
        let key = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        params
            .check()
            .map_err(|e| Error::config(key(e.key), e.message))?;
        let ruler = Ruler {
            tokens_key: key("tokens"),
            samples_key: key("samples"),
            params,
        };
        ruler.minimal_size(ruler.params.offset, Counter::Estimate)?;
        Ok(ruler)
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    fn too_small(&self, needed: usize, index: usize, counter: Counter<'_>) -> Error {
        Error::config(
            self.tokens_key.clone(),
            format!(
                "{} tokens cannot hold a `{}` instance: its smallest context (instance {index}) \
                 takes {needed} tokens ({})",
                self.params.tokens,
                self.params.task,
                if matches!(counter, Counter::Estimate) {
                    "estimated as 4 characters per token"
                } else {
                    "counted with the LM's tokenizer"
                }
            ),
        )
    }

    fn unrankable(&self) -> Error {
        let p = &self.params;
        Error::config(
            self.tokens_key.clone(),
            format!(
                "{} tokens are too few for `fwe` with alpha {} to rank three words",
                p.tokens, p.fwe.alpha
            ),
        )
    }

    /// Checks that instance `index` fits at its smallest haystack.
    fn minimal_size(&self, index: usize, counter: Counter<'_>) -> Result<()> {
        let p = &self.params;
        let Some(min) = tasks::min_units(p) else {
            return Err(self.unrankable());
        };
        let r = tasks::render(p, instance_seed(p, index), min, false);
        let c = counter.count(&r.context)?;
        if c > p.tokens {
            return Err(self.too_small(c, index, counter));
        }
        Ok(())
    }

    /// Instance `index` (absolute, `offset` not added), sized with `tokenizer` when given,
    /// else with the 4-characters estimate.
    pub fn sample(&self, index: usize, tokenizer: Option<&dyn LanguageModel>) -> Result<Sample> {
        let counter = match tokenizer {
            Some(lm) => Counter::Tokenizer(lm),
            None => Counter::Estimate,
        };
        let p = &self.params;
        let s = instance_seed(p, index);
        let Some(min) = tasks::min_units(p) else {
            return Err(self.unrankable());
        };
        let attempt = |pairs: bool| {
            fit(min, tasks::max_units(p, pairs), p.tokens, |n| {
                counter.count(&tasks::render(p, s, n, pairs).context)
            })
        };
        // cwe: single words while the list lasts, word pairs when it runs out first.
        let mut pairs = false;
        let mut fitted = attempt(false)?;
        if p.task == Task::Cwe
            && let Some((n, _)) = fitted
            && n >= tasks::max_units(p, false)
            && let Some(with_pairs) = attempt(true)?
        {
            fitted = Some(with_pairs);
            pairs = true;
        }
        let Some((units, tokens)) = fitted else {
            let c = counter.count(&tasks::render(p, s, min, false).context)?;
            return Err(self.too_small(c, index, counter));
        };
        let r = tasks::render(p, s, units, pairs);
        let id = format!("{}-{}-{}-{index}", p.task, p.tokens, p.seed);
        let mut sample = Sample::text(id, r.question, r.context, r.answers);
        sample.category = Some(p.task.name().to_string());
        let m = &mut sample.meta;
        m.insert("task".into(), json!(p.task.name()));
        m.insert("tokens".into(), json!(tokens));
        m.insert("target_tokens".into(), json!(p.tokens));
        m.insert("counted_by".into(), json!(counter.name()));
        m.insert("metric".into(), json!(p.task.metric().name()));
        m.insert("instruction".into(), json!(r.instruction));
        m.insert("answer_prefix".into(), json!(r.answer_prefix));
        m.insert("units".into(), json!(units));
        if p.task == Task::Cwe {
            m.insert(
                "vocabulary".into(),
                json!(if pairs { "pairs" } else { "words" }),
            );
        }
        if let Some(d) = r.depth {
            m.insert("depth".into(), json!(d));
        }
        if p.task.is_niah() {
            m.insert("queries".into(), json!(r.queries));
        }
        Ok(sample)
    }
}

impl DataSource for Ruler {
    fn describe(&self) -> String {
        let p = &self.params;
        let detail = match p.task {
            Task::NiahSingle | Task::NiahMultikey | Task::NiahMultivalue | Task::NiahMultiquery => {
                let (k, v, q) = p.needle_counts();
                let depth = match p.niah.depth {
                    Some(d) => format!("depth {d}"),
                    None => "random depth".into(),
                };
                format!(
                    "{k} key(s) of {} x {v} value(s) of {}, {q} asked, {depth}",
                    p.niah.key_type.name(),
                    p.niah.needle_type.name()
                )
            }
            Task::Vt => format!("{} chain(s) of {} hops", p.vt.chains, p.vt.hops),
            Task::Cwe => format!(
                "{} common words x{} among words x{}",
                p.cwe.common, p.cwe.common_freq, p.cwe.uncommon_freq
            ),
            Task::Fwe => format!(
                "Zipf alpha {}, {} coded words of {} letters",
                p.fwe.alpha, p.fwe.vocab, p.fwe.word_len
            ),
        };
        format!(
            "ruler: RULER `{}` ({detail}), {} samples from index {}, seed {}, contexts of about \
             {} tokens (counted with the LM's tokenizer when one is given, else estimated as \
             1 token = 4 characters)",
            p.task, p.samples, p.offset, p.seed, p.tokens
        )
    }

    fn load(&self, cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        self.load_first(cx, self.params.samples)
    }

    /// Generates only instances `offset..offset + min(n, samples)`; refuses (naming
    /// `samples`) a load whose contexts would add up to more than [`MAX_LOADED_TOKENS`].
    fn load_first(&self, cx: &LoadCx<'_>, n: usize) -> Result<Vec<Sample>> {
        let p = &self.params;
        let count = n.min(p.samples);
        if count.saturating_mul(p.tokens) > MAX_LOADED_TOKENS {
            return Err(too_much_to_load(self.samples_key.clone(), count, p.tokens));
        }
        (p.offset..p.offset + count)
            .map(|i| self.sample(i, cx.tokenizer))
            .collect()
    }
}

fn parse_type(cfg: &mut Cfg, key: &str, default: NeedleType) -> Result<NeedleType> {
    let name: String = cfg.get(key, default.name().to_string())?;
    NeedleType::from_name(&name).ok_or_else(|| {
        cfg.error(
            key,
            format!("unknown needle type `{name}`; expected numbers, words or uuids"),
        )
    })
}

/// Builds a [`Ruler`] from its recipe table (reads only the keys the task uses).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let name: String = cfg.req("task")?;
    let Some(task) = Task::from_name(&name) else {
        let known: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
        return Err(cfg.error(
            "task",
            format!(
                "unknown RULER task `{name}`; expected one of: {}",
                known.join(", ")
            ),
        ));
    };
    let mut p = Params::new(task);
    p.tokens = cfg.get("tokens", p.tokens)?;
    p.samples = cfg.get("samples", p.samples)?;
    p.seed = cfg.get("seed", p.seed)?;
    p.offset = cfg.get("offset", p.offset)?;
    match task {
        t @ (Task::NiahSingle
        | Task::NiahMultikey
        | Task::NiahMultivalue
        | Task::NiahMultiquery) => {
            p.niah.needle_type = parse_type(cfg, "needle_type", NeedleType::Numbers)?;
            p.niah.key_type = parse_type(cfg, "key_type", NeedleType::Words)?;
            p.niah.depth = cfg.opt("depth")?;
            if matches!(t, Task::NiahMultikey | Task::NiahMultiquery) {
                p.niah.keys = cfg.get("keys", p.niah.keys)?;
            }
            if t == Task::NiahMultivalue {
                p.niah.values = cfg.get("values", p.niah.values)?;
            }
            if t == Task::NiahMultiquery {
                p.niah.queries = cfg.get("queries", p.niah.queries)?;
            }
        }
        Task::Vt => {
            p.vt.hops = cfg.get("hops", p.vt.hops)?;
            p.vt.chains = cfg.get("chains", p.vt.chains)?;
        }
        Task::Cwe => {
            let d = CweParams::ruler_default(p.tokens);
            p.cwe = CweParams {
                common: cfg.get("common", d.common)?,
                common_freq: cfg.get("common_freq", d.common_freq)?,
                uncommon_freq: cfg.get("uncommon_freq", d.uncommon_freq)?,
            };
        }
        Task::Fwe => {
            let d = FweParams::ruler_default(p.tokens);
            p.fwe = FweParams {
                alpha: cfg.get("alpha", d.alpha)?,
                vocab: cfg.get("vocab", d.vocab)?,
                word_len: cfg.get("word_len", d.word_len)?,
            };
        }
    }
    Ok(Box::new(Ruler::with_path(p, cfg.path())?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "RULER synthetic tasks (niah single/multikey/multivalue/multiquery, vt, cwe, fwe) sized to `tokens`",
        build,
    }
}
