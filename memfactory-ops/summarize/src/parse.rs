//! Parsing of the op's inputs (rendered dialogue turns) and of the model's JSON outputs.
//!
//! Forgiving where it is safe, strict about the schema: the first balanced `{…}` of the
//! output is taken, so code fences and prose around the JSON are accepted silently; what
//! is inside must be valid JSON (single-quoted keys are not) of the documented shape.

use std::collections::HashSet;

use serde_json::Value;

/// One rendered dialogue turn: `[D1:3] Caroline (1:56 pm on 8 May, 2023): text`, or without
/// the parenthesised date: `[D1:3] Caroline: text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnLine {
    /// Turn id (`D1:3`).
    pub id: String,
    /// Speaker.
    pub speaker: String,
    /// Session date, when the line carries one.
    pub date: Option<String>,
    /// What was said.
    pub text: String,
}

/// Parses one rendered turn line; None when the line does not have the turn format.
pub fn parse_turn_line(line: &str) -> Option<TurnLine> {
    let rest = line.trim().strip_prefix('[')?;
    let close = rest.find(']')?;
    let id = rest[..close].trim();
    let rest = rest[close + 1..].strip_prefix(' ')?;
    let colon = rest.find(": ");
    let paren = rest.find(" (");
    let (speaker, date, text) = match (paren, colon) {
        // `Speaker (date): text` — the date may itself contain ':' (`1:56 pm`), so the
        // parenthesis must open before the first ": " and close with "): ".
        (Some(p), Some(c)) if p < c => {
            let end = rest[p..].find("): ")? + p;
            (&rest[..p], Some(rest[p + 2..end].trim()), &rest[end + 3..])
        }
        (_, Some(c)) => (&rest[..c], None, &rest[c + 2..]),
        _ => return None,
    };
    if id.is_empty() || speaker.trim().is_empty() {
        return None;
    }
    Some(TurnLine {
        id: id.to_string(),
        speaker: speaker.trim().to_string(),
        date: date.filter(|d| !d.is_empty()).map(str::to_string),
        text: text.trim().to_string(),
    })
}

/// The first balanced JSON object of `text` (braces inside strings are skipped), parsed:
/// [`memfactory_core::text::find_json_object`].
pub fn extract_json_object(text: &str) -> Result<Value, String> {
    memfactory_core::text::find_json_object(text).map(Value::Object)
}

/// One memory the reflection proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMemory {
    /// The topic summary.
    pub summary: String,
    /// The turn ids it refers to.
    pub turns: Vec<String>,
}

/// Parses the reflection output `{"memories": [{"summary": "...", "turns": ["D1:3"]}]}`.
///
/// - Not JSON, no object, or no `memories` array → no memories and an error.
/// - An entry that is not an object with a non-empty string `summary` is skipped (error
///   noted); the others are kept.
/// - `turns` must be an array of strings; a missing `turns` keeps the memory with no turns
///   (error noted), non-string entries are dropped (noted), and when `known_turns` is given
///   and non-empty, ids not in it are dropped (noted) — turn ids must exist.
/// - At most `max` memories are kept (the rest are dropped silently).
///
/// Returns the memories and the joined error notes (None when the output was clean).
pub fn parse_reflection(
    text: &str,
    known_turns: Option<&HashSet<String>>,
    max: usize,
) -> (Vec<NewMemory>, Option<String>) {
    let v = match extract_json_object(text) {
        Ok(v) => v,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let Some(list) = v.get("memories").and_then(Value::as_array) else {
        return (
            Vec::new(),
            Some("expected {\"memories\": [...]}: no `memories` array".into()),
        );
    };
    let known = known_turns.filter(|k| !k.is_empty());
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let summary = entry
            .get("summary")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let Some(summary) = summary else {
            errors.push(format!(
                "memories[{i}]: not an object with a non-empty string `summary`; skipped"
            ));
            continue;
        };
        let mut turns = Vec::new();
        match entry.get("turns") {
            None => errors.push(format!("memories[{i}]: no `turns`")),
            Some(Value::Array(ts)) => {
                for t in ts {
                    match t.as_str().map(str::trim) {
                        Some(t) if known.is_none_or(|k| k.contains(t)) => {
                            if !turns.iter().any(|x| x == t) {
                                turns.push(t.to_string());
                            }
                        }
                        Some(t) => errors.push(format!(
                            "memories[{i}]: turn `{t}` is not in the session; dropped"
                        )),
                        None => {
                            errors.push(format!("memories[{i}]: turn {t} is not a string; dropped"))
                        }
                    }
                }
            }
            Some(_) => errors.push(format!("memories[{i}]: `turns` is not an array")),
        }
        out.push(NewMemory {
            summary: summary.to_string(),
            turns,
        });
    }
    out.truncate(max);
    (out, (!errors.is_empty()).then(|| errors.join("; ")))
}

/// The merge decision for one new memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeDecision {
    /// Keep it as a new memory.
    Add,
    /// Merge it into candidate `index`, whose text becomes `summary`.
    Merge {
        /// Index into the candidates shown (0-based).
        index: usize,
        /// The merged text.
        summary: String,
    },
}

/// Parses `{"action": "ADD"}` or `{"action": "MERGE", "index": i, "summary": "..."}` for
/// `n` candidates. The action is case-insensitive; `index` may be a number or a numeric
/// string and must be in `0..n`; a MERGE needs a non-empty string `summary`.
pub fn parse_merge(text: &str, n: usize) -> Result<MergeDecision, String> {
    let v = extract_json_object(text)?;
    let action = v
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| "no string `action`".to_string())?;
    match action.trim().to_ascii_uppercase().as_str() {
        "ADD" => Ok(MergeDecision::Add),
        "MERGE" => {
            let index = match v.get("index") {
                Some(Value::Number(x)) => x.as_u64(),
                Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| "MERGE without a non-negative integer `index`".to_string())?;
            let index = usize::try_from(index)
                .ok()
                .filter(|i| *i < n)
                .ok_or_else(|| format!("MERGE index {index} out of range 0..{n}"))?;
            let summary = v
                .get("summary")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| "MERGE without a non-empty string `summary`".to_string())?;
            Ok(MergeDecision::Merge {
                index,
                summary: summary.to_string(),
            })
        }
        other => Err(format!("unknown action `{other}` (expected ADD or MERGE)")),
    }
}
