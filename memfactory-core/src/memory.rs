//! Memory items, the edits that change them, and the store trait.
//!
//! [`MemoryStore::apply`] is the only mutation: memory operations *decide* edits and the
//! episode context applies them, so every change is recorded.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::Result;

/// One memory entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// Identifier, unique within a store.
    pub id: String,
    /// The remembered text.
    pub content: String,
    /// Whose memory (per-speaker banks), when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// When it happened (session date), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Embedding, for dense retrieval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// Free-form attributes (source turns, topic, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl MemoryItem {
    /// An item with only an id and content.
    pub fn new(id: impl Into<String>, content: impl Into<String>) -> Self {
        MemoryItem {
            id: id.into(),
            content: content.into(),
            speaker: None,
            time: None,
            embedding: None,
            meta: BTreeMap::new(),
        }
    }
}

/// Id of the single item an [`MemoryEdit::Overwrite`] leaves in a store.
pub const OVERWRITE_ID: &str = "memory";

/// A change to a memory store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemoryEdit {
    /// Insert a new item (its id must be new).
    Add {
        /// The item.
        item: MemoryItem,
    },
    /// Replace the content (and embedding, when given) of an existing item.
    Update {
        /// Which item.
        id: String,
        /// New content.
        content: String,
        /// New embedding, when recomputed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<f32>>,
    },
    /// Remove an item.
    Delete {
        /// Which item.
        id: String,
    },
    /// Replace the whole bank by one item with id [`OVERWRITE_ID`] (MemAgent's memory).
    Overwrite {
        /// The new memory text.
        content: String,
    },
    /// Change nothing (recorded so that "decided to do nothing" is visible).
    Noop,
}

/// What applying one edit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOutcome {
    /// The edit changed the store.
    Applied,
    /// The edit could not apply (unknown id, duplicate id); the store is unchanged. This is
    /// model behaviour, recorded, not an error.
    Rejected(String),
    /// A no-op.
    Unchanged,
}

/// A search in a store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Query text (lexical search).
    pub text: String,
    /// Query embedding (dense search), when the caller has one.
    pub embedding: Option<Vec<f32>>,
    /// Restrict to one speaker's bank.
    pub speaker: Option<String>,
    /// How many results.
    pub k: usize,
}

/// A bank of memory items.
pub trait MemoryStore: Send {
    /// Applies `edits` in order; one outcome per edit. Only infrastructure failures are `Err`.
    fn apply(&mut self, edits: &[MemoryEdit]) -> Result<Vec<EditOutcome>>;
    /// Every item, in insertion order.
    fn items(&self) -> Result<Vec<MemoryItem>>;
    /// One item by id.
    fn get(&self, id: &str) -> Result<Option<MemoryItem>>;
    /// The best `query.k` items with their scores, best first (exact search).
    fn search(&self, query: &SearchQuery) -> Result<Vec<(MemoryItem, f32)>>;
    /// Number of items.
    fn len(&self) -> Result<usize> {
        Ok(self.items()?.len())
    }
    /// True when empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Opens fresh stores: one per episode (`bank` names it, e.g. `sample-id/path`).
pub trait StoreFactory: Send + Sync {
    /// One line saying what this store is.
    fn describe(&self) -> String;
    /// Opens (creating if needed) the bank `bank`.
    fn open(&self, bank: &str) -> Result<Box<dyn MemoryStore>>;
}

/// Cosine similarity of two embeddings; 0 when their lengths differ, either is empty or
/// either has zero norm. The score every store's dense search uses.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The lowercased alphanumeric words of `s` (lexical search's tokens).
pub fn words(s: &str) -> HashSet<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Fraction of the query's words found in `text` (0 for an empty query): the score every
/// store's lexical search uses.
pub fn lexical(query: &HashSet<String>, text: &str) -> f32 {
    if query.is_empty() {
        return 0.0;
    }
    let w = words(text);
    query.iter().filter(|q| w.contains(*q)).count() as f32 / query.len() as f32
}

/// The best `query.k` of `rows` (given in insertion order) with their scores, best first,
/// ties in insertion order: cosine of `query.embedding` with a row's embedding when both
/// exist, else the lexical score of the row's text. The exact search every store runs after
/// selecting the rows (the speaker filter is the store's business).
pub fn rank<T>(
    rows: impl IntoIterator<Item = T>,
    query: &SearchQuery,
    text: impl Fn(&T) -> &str,
    embedding: impl Fn(&T) -> Option<&[f32]>,
) -> Vec<(T, f32)> {
    if query.k == 0 {
        return Vec::new();
    }
    let qwords = words(&query.text);
    let mut scored: Vec<(usize, f32, T)> = rows
        .into_iter()
        .enumerate()
        .map(|(n, r)| {
            let s = match (&query.embedding, embedding(&r)) {
                (Some(q), Some(e)) => cosine(q, e),
                _ => lexical(&qwords, text(&r)),
            };
            (n, s, r)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(query.k);
    scored.into_iter().map(|(_, s, r)| (r, s)).collect()
}
