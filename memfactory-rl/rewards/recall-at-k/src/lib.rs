//! # memfactory-reward-recall-at-k
//!
//! Recall@K of retrieved memories against a question's evidence turns, the retrieval metric
//! RMM reports on LongMemEval (arXiv 2503.08026, Table 1: "Recall@5") and LongMemEval
//! defines (`xiaowu0162/LongMemEval:src/retrieval/eval_utils.py@6a92d1ab7a7f8815525e43048f752f59e1d711a9`,
//! `evaluate_retrieval`: `recall_any` and `recall_all` over the top-k retrieved items). On
//! LoCoMo, whose QAs list evidence dialog ids (`D8:6`), it is a LongMemEval-style retrieval
//! proxy. Registered as metric kind `recall-at-k` (an eval metric; as a training reward it
//! would reward retrieval, not answers). The `memfactory` facade links it through the
//! `reward-recall-at-k` feature.
//!
//! ## What it reads
//!
//! - **Evidence**: `Sample::meta["evidence"]`, an array of turn-id strings (the `locomo`
//!   dataset writes it; an entry holding several ids separated by `;`, `,` or spaces is
//!   split). Ids are compared in the form `D{session}:{turn}` with both numbers parsed
//!   (`D8:06` is `D8:6`), others as written, trimmed ([`normalize_turn_id`]). When the
//!   sample has a dialogue, evidence ids that match none of its turns are dropped — a
//!   training window (`window_turns`) cut them, or the id is wrong in the data — since no
//!   memory can cover them.
//! - **Retrieved memories**: the episode's last note labelled `retrieved` (the retriever's
//!   top-K candidates, best first) or `reranked` (the memories the reranker kept, in its
//!   order), chosen by `list`. Its text is a JSON array of
//!   `{"id": "r3", "turns": ["D1:3", "D2:5"]}`, the turns being the dialogue turns each
//!   memory was built from. The `rmm` paradigm writes both notes
//!   (`memfactory_agent_rmm::memory_turns_note`); any paradigm that writes them can be
//!   scored.
//!
//! ## Definition
//!
//! With `E` the distinct evidence turns (after the filtering above) and `C` the union of
//! the turns of the first `k` memories of the list (all of them when the list is shorter):
//!
//! | `aggregate` | score | LongMemEval |
//! |---|---|---|
//! | `"fraction"` (default) | `|E ∩ C| / |E|` | — |
//! | `"all"` | 1 if `E ⊆ C`, else 0 | `recall_all@k` |
//! | `"any"` | 1 if `E ∩ C ≠ ∅`, else 0 | `recall_any@k` |
//!
//! A memory counts for the turns it was built from, whatever its text says, so a memory
//! that merged several topics covers all their turns.
//!
//! ## When it does not apply, and errors
//!
//! - A sample whose `meta.evidence` is an empty array, or whose evidence ids match no turn
//!   of its dialogue: `None` (not scored; the report's count says how many were).
//! - A sample **without** `meta.evidence`: a recipe error naming `eval.metrics[i].kind`
//!   (the dataset has no evidence ids, so Recall@K cannot be computed — never a silent 0).
//!   A `meta.evidence` that is not an array of strings is an error too.
//! - An episode without the note `list` names: a recipe error naming `eval.metrics[i].list`
//!   (the paradigm does not record its retrieved memories with their turns).
//! - An episode whose note lists no memory scores 0 (nothing was retrieved).
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `k` | integer ≥ 1 | `5` | how many memories of the list count (RMM reports Recall@5) |
//! | `list` | `"reranked"` \| `"retrieved"` | `"reranked"` | the reranker's kept memories (what the LLM saw) or the retriever's candidates |
//! | `aggregate` | `"fraction"` \| `"all"` \| `"any"` | `"fraction"` | see the table above |
//! | `name` | string | `"recall-at-k"` | the metric's name in reports (set it to report several k or lists) |
//!
//! ```toml
//! [eval]
//! metrics = [
//!   { kind = "recall-at-k", k = 5, list = "reranked", name = "recall@5" },
//!   { kind = "recall-at-k", k = 20, list = "retrieved", name = "retrieved-recall@20" },
//! ]
//! ```

use std::collections::HashSet;

use memfactory_core::{Cfg, Episode, Error, Result, Reward, Sample, Step};
use serde_json::Value;

/// Registry kind of this metric.
pub const KIND: &str = "recall-at-k";
/// Note label of the retriever's candidates.
pub const RETRIEVED_NOTE: &str = "retrieved";
/// Note label of the memories the reranker kept.
pub const RERANKED_NOTE: &str = "reranked";

/// Which list of memories is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// The retriever's candidates (note `retrieved`).
    Retrieved,
    /// The reranker's kept memories (note `reranked`).
    Reranked,
}

impl List {
    /// The note label it reads.
    pub fn label(self) -> &'static str {
        match self {
            List::Retrieved => RETRIEVED_NOTE,
            List::Reranked => RERANKED_NOTE,
        }
    }
}

/// How covered evidence turns become a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Covered evidence turns / evidence turns.
    Fraction,
    /// 1 when every evidence turn is covered.
    All,
    /// 1 when some evidence turn is covered.
    Any,
}

/// The metric.
#[derive(Debug, Clone)]
pub struct RecallAtK {
    name: String,
    /// Memories of the list that count.
    pub k: usize,
    /// Which list.
    pub list: List,
    /// How the score is formed.
    pub aggregate: Aggregate,
    /// The recipe table's path (`eval.metrics[2]`), for errors.
    path: String,
}

impl RecallAtK {
    /// A metric with the given settings; `path` is the recipe table it came from (named in
    /// errors).
    pub fn new(k: usize, list: List, aggregate: Aggregate, path: &str) -> Self {
        RecallAtK {
            name: KIND.to_string(),
            k,
            list,
            aggregate,
            path: path.to_string(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// A turn id in comparable form: `D{session}:{turn}` with both numbers parsed (`D8:06` →
/// `D8:6`, ` d8:6 ` → `D8:6`); any other id trimmed as written.
pub fn normalize_turn_id(id: &str) -> String {
    let t = id.trim();
    let parsed = t
        .strip_prefix(['D', 'd'])
        .and_then(|r| r.split_once(':'))
        .and_then(|(s, n)| Some((s.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((s, n)) => format!("D{s}:{n}"),
        None => t.to_string(),
    }
}

/// Reads a memory-list note: `[{"id": "r3", "turns": ["D1:3"]}, ...]` → the turns of each
/// memory, in list order.
pub fn parse_memory_note(text: &str) -> std::result::Result<Vec<Vec<String>>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("not a JSON array")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let turns = m
                .get("turns")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("entry {i}: no `turns` array"))?;
            turns
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("entry {i}: a turn id that is not a string"))
                })
                .collect()
        })
        .collect()
}

/// Recall of `evidence` (normalized, distinct) by the turns of the first `k` memories of
/// `memories` (each a list of turn ids); `None` when `evidence` is empty.
pub fn recall_at_k(
    evidence: &[String],
    memories: &[Vec<String>],
    k: usize,
    aggregate: Aggregate,
) -> Option<f32> {
    let wanted: HashSet<String> = evidence.iter().map(|e| normalize_turn_id(e)).collect();
    if wanted.is_empty() {
        return None;
    }
    let covered: HashSet<String> = memories
        .iter()
        .take(k)
        .flatten()
        .map(|t| normalize_turn_id(t))
        .collect();
    let hits = wanted.iter().filter(|e| covered.contains(*e)).count();
    Some(match aggregate {
        Aggregate::Fraction => hits as f32 / wanted.len() as f32,
        Aggregate::All => f32::from(u8::from(hits == wanted.len())),
        Aggregate::Any => f32::from(u8::from(hits > 0)),
    })
}

impl RecallAtK {
    /// The sample's evidence turns as scored: split, normalized, distinct, and — when the
    /// sample has a dialogue — only those that are turns of it.
    pub fn evidence(&self, sample: &Sample) -> Result<Vec<String>> {
        let Some(raw) = sample.meta.get("evidence") else {
            return Err(Error::config(
                self.key("kind"),
                format!(
                    "metric `{KIND}` needs samples with evidence turn ids (meta.evidence, \
                     as the locomo dataset gives); sample `{}` has none — use a dataset \
                     with evidence ids or remove this metric",
                    sample.id
                ),
            ));
        };
        let bad = || {
            Error::Invalid(format!(
                "metric `{KIND}`: sample `{}` has meta.evidence {raw}, expected an array of \
                 turn-id strings",
                sample.id
            ))
        };
        let entries = raw.as_array().ok_or_else(bad)?;
        let mut ids: Vec<String> = Vec::new();
        for e in entries {
            for id in e
                .as_str()
                .ok_or_else(bad)?
                .split([';', ','])
                .flat_map(str::split_whitespace)
            {
                let id = normalize_turn_id(id);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        if let Some(d) = &sample.dialogue {
            let turns: HashSet<String> = d
                .sessions
                .iter()
                .flat_map(|s| &s.turns)
                .map(|t| normalize_turn_id(&t.id))
                .collect();
            ids.retain(|id| turns.contains(id));
        }
        Ok(ids)
    }
}

impl Reward for RecallAtK {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        let evidence = self.evidence(sample)?;
        if evidence.is_empty() {
            return Ok(None);
        }
        let label = self.list.label();
        let note = episode.steps.iter().rev().find_map(|s| match s {
            Step::Note { label: l, text } if l == label => Some(text.as_str()),
            _ => None,
        });
        let Some(note) = note else {
            return Err(Error::config(
                self.key("list"),
                format!(
                    "metric `{KIND}`: the episode of sample `{}` has no `{label}` note; the \
                     metric reads the memories a paradigm records with their turn ids (the \
                     rmm paradigm records `retrieved` and `reranked`)",
                    sample.id
                ),
            ));
        };
        let memories = parse_memory_note(note).map_err(|e| {
            Error::Invalid(format!(
                "metric `{KIND}`: the `{label}` note of sample `{}` is malformed: {e}",
                sample.id
            ))
        })?;
        Ok(recall_at_k(&evidence, &memories, self.k, self.aggregate))
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    let k = cfg.get_checked("k", 5usize, |k| *k >= 1, "a positive number of memories")?;
    let list = match cfg.get("list", "reranked".to_string())?.as_str() {
        "reranked" => List::Reranked,
        "retrieved" => List::Retrieved,
        other => {
            return Err(cfg.error(
                "list",
                format!("expected \"reranked\" or \"retrieved\", found \"{other}\""),
            ));
        }
    };
    let aggregate = match cfg.get("aggregate", "fraction".to_string())?.as_str() {
        "fraction" => Aggregate::Fraction,
        "all" => Aggregate::All,
        "any" => Aggregate::Any,
        other => {
            return Err(cfg.error(
                "aggregate",
                format!("expected \"fraction\", \"all\" or \"any\", found \"{other}\""),
            ));
        }
    };
    let mut m = RecallAtK::new(k, list, aggregate, cfg.path());
    m.name = cfg.get("name", KIND.to_string())?;
    Ok(Box::new(m))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: KIND,
        about: "Recall@K: fraction of the sample's evidence turns covered by the turns of the top-K retrieved or reranked memories (LongMemEval / RMM)",
        build,
    }
}
