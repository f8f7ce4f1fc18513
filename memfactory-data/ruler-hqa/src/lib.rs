//! # memfactory-data-ruler-hqa
//!
//! RULER-HotpotQA instances built from a HotpotQA JSON file, the way MemAgent builds its
//! long-context QA sets. In MemFactory this crate is a dataset component
//! ([`memfactory_core::DataSource`]) registered under `kind = "ruler-hqa"`; a recipe names
//! it in `[data.eval]` or `[data.train]`, and the `memfactory` facade links it through the
//! `data-ruler-hqa` feature.
//!
//! ## Construction
//!
//! - Every paragraph `[title, [sentence, ...]]` of the file becomes a *document*
//!   `title + "\n" + sentences.concat()` (the sentences carry their own leading spaces).
//! - The *pool* is every document of the whole file, deduplicated by exact text, in
//!   first-seen order. It does not depend on `offset` / `limit`, so one question always
//!   gives the same instance whatever slice of the file is loaded.
//! - Each question keeps its own paragraphs (2 gold + 8 distractors in the distractor
//!   setting; a few records have fewer), is padded to `docs` documents with documents
//!   drawn uniformly without replacement from the pool minus its own, and the whole list is
//!   shuffled.
//! - The context is `"Document {i}:\n{text}"` for i = 1..=docs, joined by `"\n\n"`. The
//!   question is kept apart, in [`Sample::question`]; [`Sample::answers`] is `[answer]`,
//!   [`Sample::id`] the record's `_id`, [`Sample::category`] its `type`.
//! - [`Sample::meta`]: `docs` (number of documents), `source` = `"hotpotqa"`, `type`,
//!   `level` (when the record has them) and `gold_docs`: the 1-based document numbers (as in
//!   the `Document {i}:` headers) of the question's own paragraphs whose titles appear in
//!   `supporting_facts`.
//!
//! ## Determinism
//!
//! Each instance has its own RNG, [`ChaCha8Rng`] seeded (through
//! [`SeedableRng::seed_from_u64`]) with [`instance_seed`]`(seed, _id, docs)`, built on
//! [`memfactory_core::seed`]. The shuffle and the sampling are written here on top of
//! `next_u64` alone ([`bounded`], [`shuffle`], [`sample_excluding`]) so that the bytes of
//! an instance do not change when `rand` changes its algorithms. Frozen-value tests pin
//! them.
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | required | HotpotQA JSON file (e.g. `hotpot_dev_distractor_v1.json`); relative paths are resolved against the current directory |
//! | `docs` | integer | `50` | documents per instance (≥ 1, and ≥ each question's own paragraph count, ≤ the pool size). MemAgent: 50 ≈ 7K tokens, 100 ≈ 14K, 200 ≈ 28K |
//! | `seed` | integer | `0` | dataset seed |
//! | `offset` | integer | `0` | first record (0-based) to turn into a sample |
//! | `limit` | integer | none | at most this many samples (the candidate range before the closed-book filter) |
//! | `own` | string | `"all"` | which of the question's own paragraphs the instance keeps: `"all"` (MemAgent: 2 gold + 8 HotpotQA distractors) or `"gold"` — only the paragraphs whose titles are in `supporting_facts`, so the rest of the `docs` documents are random pool documents. `"gold"` is a named easier variant (no retrieved hard distractors), not MemAgent's task; padding still excludes every own paragraph |
//! | `shuffle` | string | `"per-question"` | document order: `"per-question"` (ChaCha per instance, above) or `"memagent"` (MemAgent's fixed `random.Random(4).shuffle` of own-then-padding documents, the same permutation for every question) |
//! | `padding` | string | `"per-question"` | padding draw: `"per-question"` (ChaCha, pool in first-seen order) or `"memagent"` (CPython `random.sample` from a fresh `random.seed(42)` state over the code-point-sorted pool minus the question's own documents) |
//! | `closed_book` | table | none | MemAgent's closed-book filter (below) |
//!
//! ## MemAgent's construction (`shuffle = "memagent"`, `padding = "memagent"`)
//!
//! BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146
//! `taskutils/memory_data/processing.py` (also `different_docs_eval.py`, which builds the
//! `eval_N.json` files): the pool is `sorted(set(documents))` of the whole file (lines
//! 42-44), the instance is the question's own documents in context order followed by
//! `random.sample(other documents, N - own)` (lines 62-68), then
//! `random.Random(4).shuffle` (line 72). [`pyrandom`] reproduces CPython's Mersenne Twister,
//! `_randbelow`, `shuffle` and `sample` bit for bit (golden file from
//! `tests/golden/memagent_random.py`). Because the shuffle seed is fixed, a question's own
//! paragraphs always land at the same positions for a given N: documents 11, 18, 27, 29,
//! 37, 41–44, 48 for N = 50 (checked in the tests). Differences that remain:
//!
//! - MemAgent seeds the padding once (`random.seed(42)`, line 116) and draws it in a
//!   fork-based process pool (`utils.TqdmExecutor`), so each worker starts from the seed-42
//!   state and a question's padding depends on how many questions its worker drew before —
//!   not reproducible from the code alone. Here every question draws from a fresh seed-42
//!   state (what a worker's first question gets).
//! - MemAgent's pool is the whole dev set (66,635 documents); with the shipped
//!   `hotpot_dev_distractor_0-1999.json` it is 19,315 documents. Given the full dev file,
//!   the same keys build MemAgent's instances (the golden test checks whole contexts against
//!   the Python construction on the file it is given).
//! - Own documents are de-duplicated (no record of dev 0–1999 repeats a paragraph, where
//!   the two agree).
//!
//! ## Closed-book filter (`closed_book`)
//!
//! MemAgent drops the questions a reference model answers with no context
//! ([`closed_book`]: `filter.py`, `filter2.py:21-34`). The sub-table:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `model` | table | — | the reference model: any LM backend table (`kind = "burn"`, `"openai"`, ...), built through the registry like an op's own model |
//! | `keep_ids` | string | — | a kept-ids file written by an earlier run: reused without running a model (with `model` as well, the model only sees the questions the file keeps: two filters chained) |
//! | `tries` | integer | `2` | samples per question (MemAgent: `n = 2`) |
//! | `temperature` | float | `1.0` | MemAgent: 1.0 |
//! | `top_p` | float | `0.7` | MemAgent: 0.7 |
//! | `max_new_tokens` | integer | `512` | MemAgent: 512 |
//! | `seed` | integer | `0` | sampling seed (try t of question q samples with `derive_n(derive(seed, q), t)`) |
//! | `criterion` | string | `"contains-or-boxed"` | what counts as correct: MemAgent's union, `"contains"` or `"boxed"` |
//! | `keep_first` | integer | none | keep at most the first N surviving questions (MemAgent: 128 of dev 0–199, 8,192 of train) |
//! | `batch` | integer | `32` | requests per `generate` call |
//!
//! At least one of `model` and `keep_ids` is required. The candidates are the records
//! `offset .. offset + limit`; all of them are judged (a smaller eval limit does not shorten
//! the filter), in record order, and the kept ids with the model, prompt and settings that
//! produced them (and every dropped question with its correct response) go to
//! `closed_book_kept.<split>.json` in the run directory ([`DataSource::attach_run_dir`]; the
//! split is the last part of the table's key, e.g. `closed_book_kept.eval.json`). Pass that
//! file as `keep_ids` to reuse it; a candidate the file neither keeps nor drops is an error
//! (the file was made for another range). The model runs once per process, however many
//! times the source is loaded.
//!
//! ```toml
//! [data.eval]
//! kind = "ruler-hqa"
//! path = "../shared/data/hotpotqa/hotpot_dev_distractor_0-1999.json"
//! docs = 50
//! limit = 100
//! ```
//!
//! The file is read only in [`DataSource::load`]; building the component (and so
//! `memfactory check`) does no IO.
//!
//! ## Data sources
//!
//! - HotpotQA: Yang et al., "HotpotQA: A Dataset for Diverse, Explainable Multi-hop
//!   Question Answering", EMNLP 2018. Licence CC BY-SA 4.0: cite it and keep the licence
//!   wherever results on it are reported.
//! - The RULER-HotpotQA construction follows MemAgent: Yu et al., "MemAgent: Reshaping
//!   Long-Context LLM with Multi-Conv RL-based Memory Agent", arXiv:2507.02259.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memfactory_core::data::{MAX_LOADED_TOKENS, too_much_to_load};
use memfactory_core::{Cfg, DataSource, Error, LanguageModel, LoadCx, Result, Sample};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::Value;

pub mod closed_book;
pub mod pyrandom;

use pyrandom::PyRandom;

/// Registry kind of this data source.
pub const KIND: &str = "ruler-hqa";

/// Default number of documents per instance (MemAgent's smallest setting, ≈ 7K tokens).
pub const DEFAULT_DOCS: usize = 50;

/// Value of `meta.source`.
pub const SOURCE: &str = "hotpotqa";

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

/// One paragraph of a HotpotQA record: a Wikipedia title and its sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    /// Article title.
    pub title: String,
    /// Sentences, as in the file (each but the first usually starts with a space).
    pub sentences: Vec<String>,
}

impl Paragraph {
    /// The document text: `title + "\n" + sentences.concat()`.
    pub fn document(&self) -> String {
        format!("{}\n{}", self.title, self.sentences.concat())
    }
}

/// The fields of one HotpotQA record that the construction uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotpotRecord {
    /// `_id`.
    pub id: String,
    /// `question`.
    pub question: String,
    /// `answer`.
    pub answer: String,
    /// `type` (`bridge` or `comparison`), when present.
    pub kind: Option<String>,
    /// `level` (`easy`, `medium`, `hard`), when present.
    pub level: Option<String>,
    /// Titles named in `supporting_facts`, in order (repeats kept).
    pub supporting_titles: Vec<String>,
    /// `context`: the question's own paragraphs.
    pub context: Vec<Paragraph>,
}

/// Why a HotpotQA JSON text could not be read: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// `line L, column C` for malformed JSON, `record N (_id X)` for a bad record.
    pub location: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Turns a serde_json error into a location (`line L, column C`) and a message without the
/// position suffix.
fn json_error(e: &serde_json::Error) -> ParseError {
    let full = e.to_string();
    let message = match full.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => full,
    };
    ParseError {
        location: Some(format!("line {}, column {}", e.line(), e.column())),
        message: format!("malformed JSON: {message}"),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads one record (array element `index`) into a [`HotpotRecord`].
fn parse_record(index: usize, v: &Value) -> std::result::Result<HotpotRecord, ParseError> {
    let Value::Object(obj) = v else {
        return Err(ParseError {
            location: Some(format!("record {index}")),
            message: format!("expected an object, found {}", type_name(v)),
        });
    };
    // `_id` first, so the other errors can name it.
    let id = match obj.get("_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(ParseError {
                location: Some(format!("record {index}")),
                message: format!("field `_id`: expected a string, found {}", type_name(other)),
            });
        }
        None => {
            return Err(ParseError {
                location: Some(format!("record {index}")),
                message: "missing field `_id`".into(),
            });
        }
    };
    let err = |message: String| ParseError {
        location: Some(format!("record {index} (_id {id})")),
        message,
    };
    let string = |key: &str| -> std::result::Result<String, ParseError> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(err(format!(
                "field `{key}`: expected a string, found {}",
                type_name(other)
            ))),
            None => Err(err(format!("missing field `{key}`"))),
        }
    };
    let opt_string = |key: &str| -> std::result::Result<Option<String>, ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => string(key).map(Some),
        }
    };
    let question = string("question")?;
    let answer = string("answer")?;
    let kind = opt_string("type")?;
    let level = opt_string("level")?;

    let Some(facts) = obj.get("supporting_facts") else {
        return Err(err("missing field `supporting_facts`".into()));
    };
    let Value::Array(facts) = facts else {
        return Err(err(format!(
            "field `supporting_facts`: expected an array of [title, sentence index], found {}",
            type_name(facts)
        )));
    };
    let mut supporting_titles = Vec::with_capacity(facts.len());
    for (i, f) in facts.iter().enumerate() {
        match f.as_array().and_then(|a| a.first()) {
            Some(Value::String(t)) => supporting_titles.push(t.clone()),
            _ => {
                return Err(err(format!(
                    "field `supporting_facts[{i}]`: expected [title, sentence index], found {f}"
                )));
            }
        }
    }

    let Some(ctx) = obj.get("context") else {
        return Err(err("missing field `context`".into()));
    };
    let Value::Array(ctx) = ctx else {
        return Err(err(format!(
            "field `context`: expected an array of [title, [sentences]], found {}",
            type_name(ctx)
        )));
    };
    let mut context = Vec::with_capacity(ctx.len());
    for (i, p) in ctx.iter().enumerate() {
        let bad = || {
            err(format!(
                "field `context[{i}]`: expected [title, [sentence, ...]] (strings)"
            ))
        };
        let Some([Value::String(title), Value::Array(sents)]) = p.as_array().map(|a| a.as_slice())
        else {
            return Err(bad());
        };
        let sentences = sents
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        context.push(Paragraph {
            title: title.clone(),
            sentences,
        });
    }
    if context.is_empty() {
        return Err(err("field `context` is empty".into()));
    }
    Ok(HotpotRecord {
        id,
        question,
        answer,
        kind,
        level,
        supporting_titles,
        context,
    })
}

/// Parses the text of a HotpotQA JSON file (an array of records) into records.
///
/// Malformed JSON reports `line L, column C`; a record with a missing or mistyped field
/// reports `record N (_id X)` (N is the 0-based index in the array) and the field.
pub fn parse_records(json: &str) -> std::result::Result<Vec<HotpotRecord>, ParseError> {
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    let value: Value = serde_json::from_str(json).map_err(|e| json_error(&e))?;
    let Value::Array(items) = value else {
        return Err(ParseError {
            location: None,
            message: format!(
                "expected a JSON array of HotpotQA records, found {}",
                type_name(&value)
            ),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_record(i, v))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Portable randomness
// ---------------------------------------------------------------------------------------

/// The seed of one instance: `derive_n(derive(seed, id), docs)` ([`memfactory_core::seed`]).
pub fn instance_seed(seed: u64, id: &str, docs: usize) -> u64 {
    memfactory_core::seed::derive_n(memfactory_core::seed::derive(seed, id), docs as u64)
}

/// The RNG of one instance: ChaCha8 seeded with [`instance_seed`].
pub fn instance_rng(seed: u64, id: &str, docs: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(instance_seed(seed, id, docs))
}

pub use memfactory_core::rng::{bounded, shuffle};

/// `k` distinct integers drawn uniformly from `0..n` minus `excluded`, in draw order.
///
/// A partial Fisher–Yates over the virtual array of the `n - excluded.len()` allowed
/// values (step i swaps position i with i + [`bounded`]`(m - i)` and takes it), kept sparse
/// in a map so the cost is O(k · |excluded|) whatever `n`. `excluded` must be sorted and
/// free of duplicates, every value `< n`.
///
/// # Panics
/// When fewer than `k` values are allowed.
pub fn sample_excluding<R: RngCore + ?Sized>(
    rng: &mut R,
    n: usize,
    excluded: &[usize],
    k: usize,
) -> Vec<usize> {
    debug_assert!(excluded.windows(2).all(|w| w[0] < w[1]));
    debug_assert!(excluded.iter().all(|&e| e < n));
    let m = n - excluded.len();
    assert!(k <= m, "sample_excluding: {k} values asked from {m}");
    // The c-th allowed value: skip every excluded value at or below it.
    let nth_allowed = |c: usize| nth_allowed(excluded, c);
    let mut moved: HashMap<usize, usize> = HashMap::with_capacity(2 * k);
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let j = i + bounded(rng, (m - i) as u64) as usize;
        let at_j = moved.get(&j).copied().unwrap_or(j);
        let at_i = moved.get(&i).copied().unwrap_or(i);
        // Position i is never read again; position j now holds what was at i.
        moved.insert(j, at_i);
        out.push(nth_allowed(at_j));
    }
    out
}

// ---------------------------------------------------------------------------------------
// The pure builder
// ---------------------------------------------------------------------------------------

/// How the documents of an instance are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shuffle {
    /// A ChaCha shuffle of its own per instance ([`instance_rng`]).
    #[default]
    PerQuestion,
    /// MemAgent's `random.Random(4).shuffle` of own-then-padding documents.
    MemAgent,
}

/// How the padding documents are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// ChaCha per instance ([`instance_rng`]) from the pool in first-seen order.
    #[default]
    PerQuestion,
    /// CPython's `random.sample` from a fresh `random.seed(42)` state over the
    /// code-point-sorted pool minus the question's own documents.
    MemAgent,
}

/// Recipe names of [`Shuffle`] / [`Padding`] values.
pub const ORDER_NAMES: [&str; 2] = ["per-question", "memagent"];

/// The seed MemAgent's `processing.py` gives `random.seed` before drawing padding.
pub const MEMAGENT_PADDING_SEED: u64 = 42;
/// The seed of MemAgent's `random.Random(4).shuffle`.
pub const MEMAGENT_SHUFFLE_SEED: u64 = 4;

/// Construction parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildParams {
    /// Documents per instance.
    pub docs: usize,
    /// Dataset seed.
    pub seed: u64,
    /// First record (0-based) to turn into a sample.
    pub offset: usize,
    /// At most this many samples.
    pub limit: Option<usize>,
    /// Document order.
    pub shuffle: Shuffle,
    /// Padding draw.
    pub padding: Padding,
    /// Which own paragraphs are kept.
    pub own: Own,
}

/// Which of a question's own paragraphs an instance keeps (`own` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Own {
    /// All of them (MemAgent): the gold paragraphs and HotpotQA's retrieved distractors.
    #[default]
    All,
    /// Only the gold (supporting) paragraphs; the rest of the instance is padding.
    Gold,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            docs: DEFAULT_DOCS,
            seed: 0,
            offset: 0,
            limit: None,
            shuffle: Shuffle::PerQuestion,
            padding: Padding::PerQuestion,
            own: Own::All,
        }
    }
}

impl BuildParams {
    /// The record indices `offset .. offset + limit` of a file of `records` records.
    pub fn range(&self, records: usize) -> std::ops::Range<usize> {
        let end = match self.limit {
            Some(l) => records.min(self.offset.saturating_add(l)),
            None => records,
        };
        self.offset.min(end)..end
    }
}

/// Why instances could not be built from valid records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// `docs` is smaller than a question's own (distinct) paragraph count.
    TooFewDocs {
        /// 0-based record index.
        record: usize,
        /// The record's `_id`.
        id: String,
        /// The `docs` asked for.
        docs: usize,
        /// The question's own distinct documents.
        own: usize,
    },
    /// `docs` exceeds the number of distinct documents in the whole file.
    PoolTooSmall {
        /// The `docs` asked for.
        docs: usize,
        /// Distinct documents in the file.
        pool: usize,
    },
    /// `offset` is past the last record.
    OffsetPastEnd {
        /// The `offset` asked for.
        offset: usize,
        /// Records in the file.
        records: usize,
    },
}

impl BuildError {
    /// Where in the file the problem is, when it concerns one record.
    pub fn location(&self) -> Option<String> {
        match self {
            BuildError::TooFewDocs { record, id, .. } => {
                Some(format!("record {record} (_id {id})"))
            }
            _ => None,
        }
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> String {
        match self {
            BuildError::TooFewDocs { docs, own, .. } => format!(
                "docs = {docs} is smaller than this question's own {own} paragraphs; set `docs` to at least {own}"
            ),
            BuildError::PoolTooSmall { docs, pool } => format!(
                "docs = {docs} exceeds the {pool} distinct documents in the file; set `docs` to at most {pool}"
            ),
            BuildError::OffsetPastEnd { offset, records } => {
                format!("offset = {offset} is past the end of the file's {records} records")
            }
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location() {
            Some(l) => write!(f, "{l}: {}", self.message()),
            None => f.write_str(&self.message()),
        }
    }
}

impl std::error::Error for BuildError {}

/// The distinct documents of `records` sorted by code point, as MemAgent's
/// `sorted(set(...))` (`processing.py:42-43`; Rust orders `str` by UTF-8 bytes, which is
/// code-point order).
pub fn sorted_document_pool(records: &[HotpotRecord]) -> Vec<String> {
    let mut pool = document_pool(records);
    pool.sort_unstable();
    pool
}

/// The `c`-th value of `0..` that is not in `excluded` (sorted, distinct).
fn nth_allowed(excluded: &[usize], c: usize) -> usize {
    let mut v = c;
    for &e in excluded {
        if e <= v {
            v += 1;
        } else {
            break;
        }
    }
    v
}

/// MemAgent's padding: `random.sample([i for i in range(n) if i not in own], k)` from a
/// fresh `random.seed(42)` state. `excluded` must be sorted and distinct.
pub fn memagent_padding(n: usize, excluded: &[usize], k: usize) -> Vec<usize> {
    let mut rng = PyRandom::new(MEMAGENT_PADDING_SEED);
    rng.sample_indices(n - excluded.len(), k)
        .into_iter()
        .map(|c| nth_allowed(excluded, c))
        .collect()
}

/// The distinct documents of `records`, in first-seen order.
pub fn document_pool(records: &[HotpotRecord]) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut pool = Vec::new();
    for p in records.iter().flat_map(|r| &r.context) {
        let d = p.document();
        if seen.insert(d.clone()) {
            pool.push(d);
        }
    }
    pool
}

/// Renders documents as `"Document {i}:\n{text}"` (i from 1) joined by `"\n\n"`.
pub fn render<S: AsRef<str>>(docs: &[S]) -> String {
    let mut out = String::with_capacity(docs.iter().map(|d| d.as_ref().len() + 16).sum());
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str("Document ");
        out.push_str(&(i + 1).to_string());
        out.push_str(":\n");
        out.push_str(d.as_ref());
    }
    out
}

/// Builds RULER-HotpotQA samples from parsed records: the pool comes from all of
/// `records`, the samples from `records[offset..]`, at most `limit` of them.
pub fn build_samples(
    records: &[HotpotRecord],
    params: &BuildParams,
) -> std::result::Result<Vec<Sample>, BuildError> {
    if params.offset > 0 && params.offset >= records.len() {
        return Err(BuildError::OffsetPastEnd {
            offset: params.offset,
            records: records.len(),
        });
    }
    let range: Vec<usize> = params.range(records.len()).collect();
    build_selected(records, params, &range)
}

/// Builds the samples of `records[i]` for each `i` of `selected` (in that order); the pool
/// comes from all of `records`. `offset` and `limit` of `params` are not used.
pub fn build_selected(
    records: &[HotpotRecord],
    params: &BuildParams,
    selected: &[usize],
) -> std::result::Result<Vec<Sample>, BuildError> {
    let docs = params.docs;
    let pool = match params.padding {
        Padding::PerQuestion => document_pool(records),
        Padding::MemAgent => sorted_document_pool(records),
    };
    if docs > pool.len() {
        return Err(BuildError::PoolTooSmall {
            docs,
            pool: pool.len(),
        });
    }
    let index: HashMap<&str, usize> = pool
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();

    let mut out = Vec::with_capacity(selected.len());
    for &ri in selected {
        let rec = &records[ri];
        // The question's own documents (distinct, in order) and which of them are gold.
        let gold_titles: HashSet<&str> = rec.supporting_titles.iter().map(String::as_str).collect();
        let mut own: Vec<usize> = Vec::with_capacity(rec.context.len());
        let mut gold: HashSet<usize> = HashSet::new();
        for p in &rec.context {
            let i = index[p.document().as_str()];
            if !own.contains(&i) {
                own.push(i);
            }
            if gold_titles.contains(p.title.as_str()) {
                gold.insert(i);
            }
        }
        // Padding never draws any own paragraph, kept or not.
        let mut excluded = own.clone();
        excluded.sort_unstable();
        if params.own == Own::Gold {
            own.retain(|i| gold.contains(i));
        }
        if docs < own.len() {
            return Err(BuildError::TooFewDocs {
                record: ri,
                id: rec.id.clone(),
                docs,
                own: own.len(),
            });
        }

        if docs - own.len() > pool.len() - excluded.len() {
            return Err(BuildError::PoolTooSmall {
                docs,
                pool: pool.len() - excluded.len() + own.len(),
            });
        }
        let mut rng = instance_rng(params.seed, &rec.id, docs);
        let padding = match params.padding {
            Padding::PerQuestion => {
                sample_excluding(&mut rng, pool.len(), &excluded, docs - own.len())
            }
            Padding::MemAgent => memagent_padding(pool.len(), &excluded, docs - own.len()),
        };
        let mut order = own;
        order.extend(padding);
        match params.shuffle {
            Shuffle::PerQuestion => shuffle(&mut rng, &mut order),
            Shuffle::MemAgent => PyRandom::new(MEMAGENT_SHUFFLE_SEED).shuffle(&mut order),
        }

        let gold_docs: Vec<Value> = order
            .iter()
            .enumerate()
            .filter(|(_, d)| gold.contains(d))
            .map(|(pos, _)| Value::from(pos + 1))
            .collect();
        let texts: Vec<&str> = order.iter().map(|&i| pool[i].as_str()).collect();

        let mut meta = BTreeMap::new();
        meta.insert("docs".to_string(), Value::from(docs));
        meta.insert("source".to_string(), Value::from(SOURCE));
        if let Some(t) = &rec.kind {
            meta.insert("type".to_string(), Value::from(t.as_str()));
        }
        if let Some(l) = &rec.level {
            meta.insert("level".to_string(), Value::from(l.as_str()));
        }
        meta.insert("gold_docs".to_string(), Value::Array(gold_docs));

        let mut sample = Sample::text(
            rec.id.clone(),
            rec.question.clone(),
            render(&texts),
            vec![rec.answer.clone()],
        );
        sample.category = rec.kind.clone();
        sample.meta = meta;
        out.push(sample);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The data source
// ---------------------------------------------------------------------------------------

/// The closed-book filter of a [`RulerHqa`] source (recipe table `closed_book`).
pub struct ClosedBook {
    /// The reference model, when the filter runs one.
    pub model: Option<Box<dyn LanguageModel>>,
    /// The model's resolved recipe table, credentials masked (written into the kept-ids file).
    pub model_table: Option<toml::Table>,
    /// A kept-ids file to reuse.
    pub keep_ids: Option<PathBuf>,
    /// Sampling and scoring.
    pub settings: closed_book::Settings,
    /// Keep at most the first N surviving questions.
    pub keep_first: Option<usize>,
}

impl fmt::Debug for ClosedBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosedBook")
            .field("model", &self.model.as_ref().map(|m| m.describe()))
            .field("keep_ids", &self.keep_ids)
            .field("settings", &self.settings)
            .field("keep_first", &self.keep_first)
            .finish()
    }
}

/// What a filter run left: the kept ids (all survivors, before `keep_first`) and the record
/// written to the run directory.
#[derive(Debug, Default)]
struct FilterState {
    run_dir: Option<PathBuf>,
    kept: Option<Vec<String>>,
    record: Option<serde_json::Value>,
}

/// The `ruler-hqa` data source: a HotpotQA file and the construction parameters.
#[derive(Debug)]
pub struct RulerHqa {
    /// The HotpotQA JSON file.
    pub path: PathBuf,
    /// Construction parameters.
    pub params: BuildParams,
    /// Dotted path of the component's recipe table (for errors), empty when built in code.
    pub table: String,
    /// The closed-book filter, when the recipe has one.
    pub closed_book: Option<ClosedBook>,
    state: Mutex<FilterState>,
}

impl RulerHqa {
    /// A source over `path` with `params`.
    pub fn new(path: impl Into<PathBuf>, params: BuildParams) -> Self {
        RulerHqa {
            path: path.into(),
            params,
            table: String::new(),
            closed_book: None,
            state: Mutex::new(FilterState::default()),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.table.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.table)
        }
    }

    /// File name of the kept-ids record: `closed_book_kept.<split>.json`, the split being
    /// the last part of the table's key (`closed_book_kept.json` when built in code).
    pub fn kept_file_name(&self) -> String {
        match self.table.rsplit('.').next().filter(|s| !s.is_empty()) {
            Some(split) => format!("closed_book_kept.{split}.json"),
            None => "closed_book_kept.json".to_string(),
        }
    }

    /// The record of the last filter run (what `closed_book_kept.<split>.json` holds), when
    /// the filter has run.
    pub fn closed_book_record(&self) -> Option<serde_json::Value> {
        self.state.lock().ok().and_then(|s| s.record.clone())
    }

    /// The record indices the samples are built from: the candidate range, filtered by the
    /// closed-book filter when there is one (at most `keep_first` of them).
    fn selected(&self, records: &[HotpotRecord], params: &BuildParams) -> Result<Vec<usize>> {
        let range: Vec<usize> = params.range(records.len()).collect();
        let Some(cb) = &self.closed_book else {
            return Ok(range);
        };
        let kept = {
            let mut st = self
                .state
                .lock()
                .map_err(|_| Error::config(self.key("closed_book"), "filter state poisoned"))?;
            if st.kept.is_none() {
                let (kept, record) = self.run_filter(cb, records, params)?;
                st.kept = Some(kept);
                if let Some(dir) = &st.run_dir {
                    write_record(&dir.join(self.kept_file_name()), &record)?;
                }
                st.record = Some(record);
            }
            st.kept.clone().unwrap_or_default()
        };
        let kept: HashSet<&str> = kept.iter().map(String::as_str).collect();
        let mut out: Vec<usize> = range
            .into_iter()
            .filter(|&i| kept.contains(records[i].id.as_str()))
            .collect();
        if let Some(k) = cb.keep_first {
            out.truncate(k);
        }
        Ok(out)
    }

    /// Runs the filter over the whole candidate range (the source's own `offset` / `limit`).
    fn run_filter(
        &self,
        cb: &ClosedBook,
        records: &[HotpotRecord],
        _params: &BuildParams,
    ) -> Result<(Vec<String>, serde_json::Value)> {
        let range = self.params.range(records.len());
        let candidates: Vec<&HotpotRecord> = records[range.clone()].iter().collect();
        let mut dropped: Vec<serde_json::Value> = Vec::new();
        // First the file, when one is given.
        let mut alive: Vec<&HotpotRecord> = match &cb.keep_ids {
            None => candidates.clone(),
            Some(path) => {
                let (kept, dropped_ids) = read_kept_file(path)?;
                let mut alive = Vec::new();
                for r in &candidates {
                    if kept.contains(&r.id) {
                        alive.push(*r);
                    } else if dropped_ids.contains(&r.id) {
                        dropped.push(serde_json::json!({ "id": r.id, "by": "keep_ids" }));
                    } else {
                        return Err(Error::config(
                            self.key("closed_book.keep_ids"),
                            format!(
                                "{} neither keeps nor drops question {} (record {} of {}): it was made for another range or file; run the filter again (give `closed_book.model`)",
                                path.display(),
                                r.id,
                                records
                                    .iter()
                                    .position(|x| std::ptr::eq(x, *r))
                                    .unwrap_or(0),
                                self.path.display()
                            ),
                        ));
                    }
                }
                alive
            }
        };
        if let Some(lm) = &cb.model {
            let questions: Vec<closed_book::Question<'_>> = alive
                .iter()
                .map(|r| closed_book::Question {
                    id: &r.id,
                    question: &r.question,
                    answer: &r.answer,
                })
                .collect();
            let verdicts = closed_book::run(lm.as_ref(), &questions, &cb.settings)?;
            let mut still = Vec::with_capacity(alive.len());
            for (r, v) in alive.iter().zip(verdicts) {
                match v.correct_try {
                    None => still.push(*r),
                    Some(t) => dropped.push(serde_json::json!({
                        "id": r.id,
                        "by": "model",
                        "try": t,
                        "response": v.responses[t],
                    })),
                }
            }
            alive = still;
        }
        let kept: Vec<String> = alive.iter().map(|r| r.id.clone()).collect();
        let p = &self.params;
        let record = serde_json::json!({
            "about": "MemAgent's closed-book filter (memfactory-data-ruler-hqa): questions the reference model answered correctly without context are dropped",
            "dataset": self.table,
            "path": self.path.display().to_string(),
            "offset": p.offset,
            "limit": p.limit,
            "candidates": candidates.len(),
            "model": cb.model.as_ref().map(|m| m.describe()),
            "model_table": cb.model_table,
            "keep_ids": cb.keep_ids.as_ref().map(|k| k.display().to_string()),
            "settings": closed_book::settings_json(&cb.settings),
            "keep_first": cb.keep_first,
            "kept_count": kept.len(),
            "kept": kept,
            "dropped": dropped,
        });
        Ok((kept, record))
    }

    /// The samples of `params` (limit included): a load whose contexts would add up to more
    /// than [`MAX_LOADED_TOKENS`] (estimated as `docs` documents of the pool's mean length,
    /// 4 characters per token) is refused, naming `docs`, before any instance is built.
    fn load_with(&self, params: &BuildParams, first: Option<usize>) -> Result<Vec<Sample>> {
        let records = read_records(&self.path)?;
        if params.offset > 0 && params.offset >= records.len() {
            let e = BuildError::OffsetPastEnd {
                offset: params.offset,
                records: records.len(),
            };
            return Err(Error::data(&self.path, e.location(), e.message()));
        }
        let mut selected = self.selected(&records, params)?;
        if let Some(n) = first {
            selected.truncate(n);
        }
        let count = selected.len();
        let pool = document_pool(&records);
        let chars: usize = pool.iter().map(String::len).sum();
        let mean = chars.div_ceil(pool.len().max(1));
        let each = params
            .docs
            .min(pool.len())
            .saturating_mul(mean + 16)
            .div_ceil(4);
        if count.saturating_mul(each) > MAX_LOADED_TOKENS {
            return Err(too_much_to_load(self.key("docs"), count, each));
        }
        drop(pool);
        build_selected(&records, params, &selected)
            .map_err(|e| Error::data(&self.path, e.location(), e.message()))
    }
}

/// Writes `value` as pretty JSON to `path` (temp file, then rename).
fn write_record(path: &Path, value: &serde_json::Value) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::data(path, None, format!("cannot encode the record: {e}")))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a kept-ids file: its `kept` and `dropped[].id` lists.
pub fn read_kept_file(path: &Path) -> Result<(HashSet<String>, HashSet<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        let pe = json_error(&e);
        Error::data(path, pe.location, pe.message)
    })?;
    let bad = |m: &str| {
        Error::data(
            path,
            None,
            format!("not a closed-book kept-ids file: {m} (write one with `closed_book.model`)"),
        )
    };
    let ids = |key: &str, field: Option<&str>| -> Result<HashSet<String>> {
        let arr = v
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(&format!("no `{key}` array")))?;
        arr.iter()
            .map(|x| {
                let s = match field {
                    Some(f) => x.get(f),
                    None => Some(x),
                };
                s.and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("an entry of `{key}` is not an id string")))
            })
            .collect()
    };
    Ok((ids("kept", None)?, ids("dropped", Some("id"))?))
}

/// Reads and parses a HotpotQA JSON file; every error is an [`Error::Data`] naming `path`.
pub fn read_records(path: &Path) -> Result<Vec<HotpotRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    parse_records(&text).map_err(|e| Error::data(path, e.location, e.message))
}

impl DataSource for RulerHqa {
    fn describe(&self) -> String {
        let p = &self.params;
        let mut s = format!(
            "ruler-hqa: {} ({} documents per question, seed {}",
            self.path.display(),
            p.docs,
            p.seed
        );
        if p.offset > 0 {
            s.push_str(&format!(", from record {}", p.offset));
        }
        if let Some(l) = p.limit {
            s.push_str(&format!(", at most {l} questions"));
        }
        if p.shuffle == Shuffle::MemAgent {
            s.push_str(", MemAgent's document order");
        }
        if p.padding == Padding::MemAgent {
            s.push_str(", MemAgent's padding");
        }
        if let Some(cb) = &self.closed_book {
            s.push_str(", closed-book filtered");
            if let Some(m) = &cb.model {
                s.push_str(&format!(" by {}", m.describe()));
            }
            if let Some(k) = &cb.keep_ids {
                s.push_str(&format!(" (ids kept in {})", k.display()));
            }
            if let Some(k) = cb.keep_first {
                s.push_str(&format!(", first {k} kept"));
            }
        }
        s.push(')');
        s
    }

    fn load(&self, _cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        self.load_with(&self.params, None)
    }

    /// Builds only the first `n` samples (the recipe's `limit`, if smaller, still applies;
    /// the closed-book filter judges the whole candidate range first).
    fn load_first(&self, _cx: &LoadCx<'_>, n: usize) -> Result<Vec<Sample>> {
        self.load_with(&self.params, Some(n))
    }

    /// Writes the closed-book record into `dir` (now if the filter already ran, else when it
    /// runs).
    fn attach_run_dir(&self, dir: &Path) -> Result<()> {
        if self.closed_book.is_none() {
            return Ok(());
        }
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::config(self.key("closed_book"), "filter state poisoned"))?;
        st.run_dir = Some(dir.to_path_buf());
        if let Some(r) = &st.record {
            write_record(&dir.join(self.kept_file_name()), r)?;
        }
        Ok(())
    }
}

fn order_from_cfg(cfg: &mut Cfg, key: &str) -> Result<bool> {
    Ok(cfg.choice(key, ORDER_NAMES[0], &ORDER_NAMES)? == ORDER_NAMES[1])
}

/// Reads the `closed_book` sub-table (builds its model).
fn closed_book_from_cfg(mut cb: Cfg) -> Result<(ClosedBook, toml::Table)> {
    let tries = cb.get_checked("tries", 2usize, |t| *t >= 1, "at least 1 try")?;
    let temperature: f32 = cb.get_checked(
        "temperature",
        1.0f32,
        |t| t.is_finite() && *t >= 0.0,
        "a temperature ≥ 0 (0 = greedy)",
    )?;
    let top_p: f32 = cb.get_checked(
        "top_p",
        0.7f32,
        |p| *p > 0.0 && *p <= 1.0,
        "a nucleus mass in (0, 1]",
    )?;
    let max_new_tokens =
        cb.get_checked("max_new_tokens", 512usize, |m| *m >= 1, "at least 1 token")?;
    let seed: u64 = cb.get("seed", 0u64)?;
    let criterion_name: String =
        cb.get("criterion", closed_book::Criterion::NAMES[0].to_string())?;
    let criterion = closed_book::Criterion::parse(&criterion_name).ok_or_else(|| {
        cb.error(
            "criterion",
            format!(
                "expected one of {}, found {criterion_name:?}",
                closed_book::Criterion::NAMES
                    .map(|n| format!("\"{n}\""))
                    .join(", ")
            ),
        )
    })?;
    let keep_first: Option<usize> = cb.opt("keep_first")?;
    if keep_first == Some(0) {
        return Err(cb.error("keep_first", "expected at least 1 question"));
    }
    let batch = cb.get_checked("batch", 32usize, |b| *b >= 1, "at least 1 request per call")?;
    let keep_ids: Option<String> = cb.opt("keep_ids")?;
    if keep_ids.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(cb.error("keep_ids", "must not be empty"));
    }
    let model = memfactory_core::op::model_from_cfg(&mut cb, "model")?;
    if model.is_none() && keep_ids.is_none() {
        return Err(cb.error(
            "model",
            "the closed-book filter needs a reference model (`model`, an LM table) or a kept-ids file from an earlier run (`keep_ids`)",
        ));
    }
    let resolved = cb.finish()?;
    let model_table = resolved
        .get("model")
        .and_then(|v| v.as_table())
        .map(memfactory_core::redact::mask_table);
    Ok((
        ClosedBook {
            model,
            model_table,
            keep_ids: keep_ids.map(PathBuf::from),
            settings: closed_book::Settings {
                tries,
                temperature,
                top_p,
                max_new_tokens,
                seed,
                criterion,
                batch,
            },
            keep_first,
        },
        resolved,
    ))
}

/// Builds a [`RulerHqa`] from its recipe table (no IO, but a `closed_book.model` is built).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let path: String = cfg.req("path")?;
    if path.trim().is_empty() {
        return Err(cfg.error("path", "must not be empty"));
    }
    let docs = cfg.get_checked("docs", DEFAULT_DOCS, |d| *d >= 1, "at least 1 document")?;
    let seed: u64 = cfg.get("seed", 0u64)?;
    let offset: usize = cfg.get("offset", 0usize)?;
    let limit: Option<usize> = cfg.opt("limit")?;
    let shuffle = if order_from_cfg(cfg, "shuffle")? {
        Shuffle::MemAgent
    } else {
        Shuffle::PerQuestion
    };
    let padding = if order_from_cfg(cfg, "padding")? {
        Padding::MemAgent
    } else {
        Padding::PerQuestion
    };
    let own = match cfg.choice("own", "all", &["all", "gold"])? {
        "gold" => Own::Gold,
        _ => Own::All,
    };
    let closed_book = match cfg.sub("closed_book")? {
        None => None,
        Some(cb) => {
            let (cb, resolved) = closed_book_from_cfg(cb)?;
            cfg.set_resolved("closed_book", toml::Value::Table(resolved));
            Some(cb)
        }
    };
    let mut source = RulerHqa::new(
        path,
        BuildParams {
            docs,
            seed,
            offset,
            limit,
            shuffle,
            padding,
            own,
        },
    );
    source.table = cfg.path().to_string();
    source.closed_book = closed_book;
    Ok(Box::new(source))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "RULER-HotpotQA (MemAgent): a HotpotQA file's questions padded to `docs` shuffled documents, optionally closed-book filtered",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_excluding_avoids_excluded_and_repeats() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let excluded = [0, 3, 4, 9];
        for k in 0..=6 {
            let s = sample_excluding(&mut rng, 10, &excluded, k);
            assert_eq!(s.len(), k);
            let set: HashSet<_> = s.iter().collect();
            assert_eq!(set.len(), k);
            assert!(s.iter().all(|v| *v < 10 && !excluded.contains(v)));
        }
        // All allowed values when k = m.
        let mut s = sample_excluding(&mut rng, 10, &excluded, 6);
        s.sort_unstable();
        assert_eq!(s, vec![1, 2, 5, 6, 7, 8]);
    }

    #[test]
    fn sample_excluding_is_uniform_over_allowed_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut counts = [0usize; 8];
        for _ in 0..20_000 {
            for v in sample_excluding(&mut rng, 8, &[2, 5], 2) {
                counts[v] += 1;
            }
        }
        assert_eq!(counts[2] + counts[5], 0);
        // 40,000 picks over 6 values: about 6,667 each.
        for (v, c) in counts.iter().enumerate() {
            if v != 2 && v != 5 {
                assert!((6_300..7_050).contains(c), "{counts:?}");
            }
        }
    }

    /// Frozen values: if this fails, every RULER-HotpotQA instance has changed bytes.
    #[test]
    fn randomness_is_frozen() {
        let seed = instance_seed(0, "q", 50);
        let mut rng = instance_rng(0, "q", 50);
        let mut v: Vec<u32> = (0..10).collect();
        shuffle(&mut rng, &mut v);
        let s = sample_excluding(&mut rng, 1000, &[1, 500], 5);
        assert_eq!(seed, FROZEN_SEED);
        assert_eq!(v, FROZEN_SHUFFLE);
        assert_eq!(s, FROZEN_SAMPLE);
    }

    const FROZEN_SEED: u64 = 0xc427_ea3c_3acb_3e07;
    const FROZEN_SHUFFLE: [u32; 10] = [5, 8, 0, 7, 1, 9, 4, 2, 6, 3];
    const FROZEN_SAMPLE: [usize; 5] = [746, 970, 551, 526, 642];
}
