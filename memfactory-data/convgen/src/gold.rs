//! Gold memory operations: what a perfect memory manager applies after each turn, and the
//! fact state they build.

use std::collections::BTreeMap;

use memfactory_core::{Error, MemoryEdit, MemoryItem, Result, Sample};
use serde::{Deserialize, Serialize};

/// The kind of a gold operation (serialized `"ADD"`, `"UPDATE"`, `"DELETE"`, `"NOOP"`, as
/// Memory-R1 names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OpKind {
    /// A new fact.
    Add,
    /// A fact replaced by a new value.
    Update,
    /// A fact retracted.
    Delete,
    /// Nothing to remember.
    Noop,
}

impl OpKind {
    /// `"ADD"`, `"UPDATE"`, `"DELETE"` or `"NOOP"`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Add => "ADD",
            OpKind::Update => "UPDATE",
            OpKind::Delete => "DELETE",
            OpKind::Noop => "NOOP",
        }
    }
}

/// The gold operation of one turn (see the crate docs, "Gold memory operations").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldOp {
    /// The turn's id (`D{session}:{n}`).
    pub turn: String,
    /// The turn's session (1-based, [`memfactory_core::Session::index`]).
    pub session: usize,
    /// What to do.
    pub op: OpKind,
    /// Who speaks (and whom the fact is about).
    pub speaker: String,
    /// The fact's key, `{speaker}/{attribute}` (ADD creates it; UPDATE and DELETE name the
    /// fact an earlier ADD created); absent for NOOP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The attribute (`job`, `city`, …); absent for NOOP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The value after the operation (ADD, UPDATE); absent for DELETE and NOOP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The fact text after the operation (ADD, UPDATE), e.g. `Ann lives in Austin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact: Option<String>,
    /// The fact text before the operation: the replaced fact (UPDATE) or the retracted one
    /// (DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl GoldOp {
    /// The [`MemoryEdit`] that carries out this operation on a store whose item ids are the
    /// fact keys: ADD → `Add` (id = key, content = fact, speaker, `meta.attribute`,
    /// `meta.turn`), UPDATE → `Update`, DELETE → `Delete`, NOOP → `Noop`.
    pub fn edit(&self) -> MemoryEdit {
        let key = self.key.clone().unwrap_or_default();
        let fact = self.fact.clone().unwrap_or_default();
        match self.op {
            OpKind::Add => {
                let mut item = MemoryItem::new(key, fact);
                item.speaker = Some(self.speaker.clone());
                if let Some(a) = &self.attribute {
                    item.meta.insert("attribute".into(), a.clone());
                }
                item.meta.insert("turn".into(), self.turn.clone());
                MemoryEdit::Add { item }
            }
            OpKind::Update => MemoryEdit::Update {
                id: key,
                content: fact,
                embedding: None,
            },
            OpKind::Delete => MemoryEdit::Delete { id: key },
            OpKind::Noop => MemoryEdit::Noop,
        }
    }
}

/// One fact of the state gold operations build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldFact {
    /// Whose fact.
    pub speaker: String,
    /// The attribute.
    pub attribute: String,
    /// The value.
    pub value: String,
    /// The fact text.
    pub fact: String,
}

/// The gold operations of a generated sample (`meta.gold_ops`).
pub fn gold_ops(sample: &Sample) -> Result<Vec<GoldOp>> {
    let v = sample
        .meta
        .get("gold_ops")
        .ok_or_else(|| Error::Invalid(format!("sample {} has no meta.gold_ops", sample.id)))?;
    serde_json::from_value(v.clone())
        .map_err(|e| Error::Invalid(format!("sample {}: meta.gold_ops: {e}", sample.id)))
}

/// Applies `ops` in order to an empty fact state and returns the final state, by key. An
/// ADD of a live key, an UPDATE or DELETE of a key that is not live, or an operation without
/// the fields its kind needs is an [`Error::Invalid`] naming the turn.
pub fn replay(ops: &[GoldOp]) -> Result<BTreeMap<String, GoldFact>> {
    let mut state: BTreeMap<String, GoldFact> = BTreeMap::new();
    for op in ops {
        let bad = |m: &str| Error::Invalid(format!("gold op of turn {}: {m}", op.turn));
        if op.op == OpKind::Noop {
            continue;
        }
        let key = op.key.clone().ok_or_else(|| bad("no key"))?;
        match op.op {
            OpKind::Add | OpKind::Update => {
                let fact = GoldFact {
                    speaker: op.speaker.clone(),
                    attribute: op.attribute.clone().ok_or_else(|| bad("no attribute"))?,
                    value: op.value.clone().ok_or_else(|| bad("no value"))?,
                    fact: op.fact.clone().ok_or_else(|| bad("no fact"))?,
                };
                let live = state.contains_key(&key);
                if op.op == OpKind::Add && live {
                    return Err(bad(&format!("ADD of `{key}`, which is already live")));
                }
                if op.op == OpKind::Update && !live {
                    return Err(bad(&format!("UPDATE of `{key}`, which is not live")));
                }
                state.insert(key, fact);
            }
            OpKind::Delete => {
                if state.remove(&key).is_none() {
                    return Err(bad(&format!("DELETE of `{key}`, which is not live")));
                }
            }
            OpKind::Noop => {}
        }
    }
    Ok(state)
}
