//! # memfactory-data-memagent-json
//!
//! Reads MemAgent / MemFactory evaluation files: each record is
//! `{"context": "...", "input": "...", "answers": ["...", ...]}`. In MemFactory this crate
//! is a dataset component ([`memfactory_core::DataSource`]) registered under
//! `kind = "memagent-json"`; a recipe names it in `[data.eval]` or `[data.train]`, and the
//! `memfactory` facade links it through the `data-memagent-json` feature. Use it to run on
//! the exact instances MemAgent published (e.g. its RULER-HotpotQA `eval_*.json` sets) or on
//! instances MemFactory wrote out.
//!
//! ## File format
//!
//! - Either a JSON array of objects, or JSONL (one object per line). The file is an array
//!   when its first non-whitespace character is `[`; otherwise it is JSONL, and blank lines
//!   are skipped. A UTF-8 byte-order mark is ignored.
//! - `context` (string, required) → [`Sample::context`].
//! - `input` (string, required; `question` is accepted when `input` is absent) →
//!   [`Sample::question`].
//! - `answers` (array of strings, or a single string; required; `answer` is accepted when
//!   `answers` is absent) → [`Sample::answers`].
//! - Id: the first of `_id`, `id`, `index` present (string or number) → [`Sample::id`];
//!   without any, the 0-based record index (the count of records before it, blank lines
//!   not counted) as a string.
//! - Every other field goes to [`Sample::meta`] under its own name.
//!
//! Errors name the file and the line (JSONL) or the 0-based record index (array), and say
//! what is wrong.
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | required | the file; relative paths are resolved against the current directory |
//! | `offset` | integer | `0` | first record (0-based) to load |
//! | `limit` | integer | none | at most this many samples |
//!
//! ```toml
//! [data.eval]
//! kind = "memagent-json"
//! path = "data/hotpotqa/eval_50.json"
//! limit = 100
//! ```
//!
//! The file is read only in [`DataSource::load`]; building the component (and so
//! `memfactory check`) does no IO.
//!
//! ## Data sources
//!
//! - The format is MemAgent's: Yu et al., "MemAgent: Reshaping Long-Context LLM with
//!   Multi-Conv RL-based Memory Agent", arXiv:2507.02259.
//! - MemAgent's RULER-HotpotQA files are built from HotpotQA (Yang et al., EMNLP 2018,
//!   CC BY-SA 4.0): cite it and keep the licence wherever results on them are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memfactory_core::{Cfg, DataSource, Error, LoadCx, Result, Sample};
use serde_json::{Map, Value};

/// Registry kind of this data source.
pub const KIND: &str = "memagent-json";

/// Fields read as the id, in order of preference.
pub const ID_FIELDS: [&str; 3] = ["_id", "id", "index"];

/// Where a record sits in its file, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// 0-based index in a JSON array.
    Record(usize),
    /// 1-based line of a JSONL file.
    Line(usize),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Record(i) => write!(f, "record {i}"),
            Origin::Line(l) => write!(f, "line {l}"),
        }
    }
}

/// Why a text could not be read: where (`line L[, column C]` or `record N`), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where in the file, when known.
    pub location: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

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

/// serde_json's message without its ` at line L column C` suffix.
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => full,
    }
}

/// Converts one record (a JSON value) into a [`Sample`]; `index` is its 0-based record
/// index (the fallback id).
pub fn record_to_sample(
    value: Value,
    index: usize,
    origin: Origin,
) -> std::result::Result<Sample, ParseError> {
    let err = |message: String| ParseError {
        location: Some(origin.to_string()),
        message,
    };
    let Value::Object(mut obj) = value else {
        return Err(err(format!(
            "expected an object with `context`, `input` and `answers`, found {}",
            type_name(&value)
        )));
    };
    let take_string = |obj: &mut Map<String, Value>, keys: &[&str]| {
        let Some(key) = keys.iter().find(|k| obj.contains_key(**k)) else {
            let alternatives: String = keys[1..].iter().map(|k| format!(" (or `{k}`)")).collect();
            return Err(err(format!("missing field `{}`{alternatives}", keys[0])));
        };
        match obj.remove(*key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(err(format!(
                "field `{key}`: expected a string, found {}",
                type_name(&other)
            ))),
            None => unreachable!("key checked above"),
        }
    };
    let context = take_string(&mut obj, &["context"])?;
    let question = take_string(&mut obj, &["input", "question"])?;

    let answers_key = ["answers", "answer"]
        .into_iter()
        .find(|k| obj.contains_key(*k))
        .ok_or_else(|| err("missing field `answers`".into()))?;
    let answers = match obj.remove(answers_key) {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, a) in items.into_iter().enumerate() {
                match a {
                    Value::String(s) => out.push(s),
                    other => {
                        return Err(err(format!(
                            "field `{answers_key}[{i}]`: expected a string, found {}",
                            type_name(&other)
                        )));
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(err(format!(
                "field `{answers_key}`: expected an array of strings or a string, found {}",
                type_name(&other)
            )));
        }
        None => unreachable!("key checked above"),
    };

    let id = match ID_FIELDS.into_iter().find(|k| obj.contains_key(*k)) {
        None => index.to_string(),
        Some(key) => match obj.remove(key) {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(err(format!(
                    "field `{key}`: expected a string or a number, found {}",
                    type_name(&other)
                )));
            }
            None => unreachable!("key checked above"),
        },
    };

    let mut sample = Sample::text(id, question, context, answers);
    sample.meta = obj.into_iter().collect::<BTreeMap<_, _>>();
    Ok(sample)
}

/// Parses the text of a MemAgent / MemFactory eval file (JSON array or JSONL) into samples,
/// in file order.
pub fn parse_samples(text: &str) -> std::result::Result<Vec<Sample>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.trim_start().chars().next();
    match first {
        None => Err(ParseError {
            location: None,
            message:
                "the file is empty (expected a JSON array or JSONL of {context, input, answers})"
                    .into(),
        }),
        Some('[') => {
            let items: Vec<Value> = serde_json::from_str(text).map_err(|e| ParseError {
                location: Some(format!("line {}, column {}", e.line(), e.column())),
                message: format!("malformed JSON: {}", bare_message(&e)),
            })?;
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| record_to_sample(v, i, Origin::Record(i)))
                .collect()
        }
        Some(_) => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let lineno = i + 1;
                let value: Value = serde_json::from_str(line).map_err(|e| ParseError {
                    location: Some(format!("line {lineno}, column {}", e.column())),
                    message: format!("malformed JSON: {}", bare_message(&e)),
                })?;
                let index = out.len();
                out.push(record_to_sample(value, index, Origin::Line(lineno))?);
            }
            Ok(out)
        }
    }
}

/// Reads and parses a file; every error is an [`Error::Data`] naming `path`.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    parse_samples(&text).map_err(|e| Error::data(path, e.location, e.message))
}

/// The `memagent-json` data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemAgentJson {
    /// The file.
    pub path: PathBuf,
    /// First record (0-based) to load.
    pub offset: usize,
    /// At most this many samples.
    pub limit: Option<usize>,
}

impl MemAgentJson {
    /// A source over the whole of `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MemAgentJson {
            path: path.into(),
            offset: 0,
            limit: None,
        }
    }
}

impl DataSource for MemAgentJson {
    fn describe(&self) -> String {
        let mut s = format!("memagent-json: {}", self.path.display());
        if self.offset > 0 {
            s.push_str(&format!(", from record {}", self.offset));
        }
        if let Some(l) = self.limit {
            s.push_str(&format!(", at most {l} samples"));
        }
        s
    }

    fn load(&self, _cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        let samples = read_samples(&self.path)?;
        if self.offset > 0 && self.offset >= samples.len() {
            return Err(Error::data(
                &self.path,
                None,
                format!(
                    "offset = {} is past the end of the file's {} records",
                    self.offset,
                    samples.len()
                ),
            ));
        }
        let take = self.limit.unwrap_or(usize::MAX);
        Ok(samples.into_iter().skip(self.offset).take(take).collect())
    }
}

/// Builds a [`MemAgentJson`] from its recipe table (no IO).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let path: String = cfg.req("path")?;
    if path.trim().is_empty() {
        return Err(cfg.error("path", "must not be empty"));
    }
    let offset: usize = cfg.get("offset", 0usize)?;
    let limit: Option<usize> = cfg.opt("limit")?;
    Ok(Box::new(MemAgentJson {
        path: path.into(),
        offset,
        limit,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "MemAgent / MemFactory eval file: JSON array or JSONL of {context, input, answers}",
        build,
    }
}
