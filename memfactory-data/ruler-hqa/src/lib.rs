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
//! | `limit` | integer | none | at most this many samples |
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

use memfactory_core::data::{MAX_LOADED_TOKENS, too_much_to_load};
use memfactory_core::{Cfg, DataSource, Error, LoadCx, Result, Sample};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::Value;

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
    let nth_allowed = |c: usize| {
        let mut v = c;
        for &e in excluded {
            if e <= v {
                v += 1;
            } else {
                break;
            }
        }
        v
    };
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
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            docs: DEFAULT_DOCS,
            seed: 0,
            offset: 0,
            limit: None,
        }
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
    let docs = params.docs;
    if params.offset > 0 && params.offset >= records.len() {
        return Err(BuildError::OffsetPastEnd {
            offset: params.offset,
            records: records.len(),
        });
    }
    let pool = document_pool(records);
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

    let end = match params.limit {
        Some(l) => records.len().min(params.offset.saturating_add(l)),
        None => records.len(),
    };
    let mut out = Vec::with_capacity(end.saturating_sub(params.offset));
    for (ri, rec) in records.iter().enumerate().take(end).skip(params.offset) {
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
        if docs < own.len() {
            return Err(BuildError::TooFewDocs {
                record: ri,
                id: rec.id.clone(),
                docs,
                own: own.len(),
            });
        }

        let mut rng = instance_rng(params.seed, &rec.id, docs);
        let mut excluded = own.clone();
        excluded.sort_unstable();
        let padding = sample_excluding(&mut rng, pool.len(), &excluded, docs - own.len());
        let mut order = own;
        order.extend(padding);
        shuffle(&mut rng, &mut order);

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

/// The `ruler-hqa` data source: a HotpotQA file and the construction parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulerHqa {
    /// The HotpotQA JSON file.
    pub path: PathBuf,
    /// Construction parameters.
    pub params: BuildParams,
    /// Dotted path of the component's recipe table (for errors), empty when built in code.
    pub table: String,
}

impl RulerHqa {
    /// A source over `path` with `params`.
    pub fn new(path: impl Into<PathBuf>, params: BuildParams) -> Self {
        RulerHqa {
            path: path.into(),
            params,
            table: String::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.table.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.table)
        }
    }

    /// The samples of `params` (limit included): a load whose contexts would add up to more
    /// than [`MAX_LOADED_TOKENS`] (estimated as `docs` documents of the pool's mean length,
    /// 4 characters per token) is refused, naming `docs`, before any instance is built.
    fn load_with(&self, params: &BuildParams) -> Result<Vec<Sample>> {
        let records = read_records(&self.path)?;
        let end = params.limit.map_or(records.len(), |l| {
            records.len().min(params.offset.saturating_add(l))
        });
        let count = end.saturating_sub(params.offset);
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
        build_samples(&records, params)
            .map_err(|e| Error::data(&self.path, e.location(), e.message()))
    }
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
        s.push(')');
        s
    }

    fn load(&self, _cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        self.load_with(&self.params)
    }

    /// Builds only the first `n` samples (the recipe's `limit`, if smaller, still applies).
    fn load_first(&self, _cx: &LoadCx<'_>, n: usize) -> Result<Vec<Sample>> {
        let mut params = self.params;
        params.limit = Some(params.limit.map_or(n, |l| l.min(n)));
        self.load_with(&params)
    }
}

/// Builds a [`RulerHqa`] from its recipe table (no IO).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let path: String = cfg.req("path")?;
    if path.trim().is_empty() {
        return Err(cfg.error("path", "must not be empty"));
    }
    let docs = cfg.get_checked("docs", DEFAULT_DOCS, |d| *d >= 1, "at least 1 document")?;
    let seed: u64 = cfg.get("seed", 0u64)?;
    let offset: usize = cfg.get("offset", 0usize)?;
    let limit: Option<usize> = cfg.opt("limit")?;
    let mut source = RulerHqa::new(
        path,
        BuildParams {
            docs,
            seed,
            offset,
            limit,
        },
    );
    source.table = cfg.path().to_string();
    Ok(Box::new(source))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "RULER-HotpotQA (MemAgent): a HotpotQA file's questions padded to `docs` shuffled documents",
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
