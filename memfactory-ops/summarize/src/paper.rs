//! RMM's own prospective-reflection prompts (arXiv 2503.08026, App. D.1), selected with
//! `template = "rmm-paper"` (D.1.1, memory extraction) and `merge_template = "rmm-paper"`
//! (D.1.2, memory update): the templates, the session and candidate layouts they expect,
//! and the parsers of their outputs.
//!
//! ## Where the text comes from, and what was adapted
//!
//! The prompt text is copied from a markdown conversion of the paper (arXiv 2503.08026v2,
//! App. D.1.1 and D.1.2). Conversion artifacts are undone: `#` heading markers and empty
//! lines between list items are dropped, nested items are indented, and the examples'
//! JSON is closed where the conversion cut it (D.1.1's first example lacks its final `}`,
//! the second ends `} }` instead of `} ] }`; D.1.2's example history lacks the closing `"`
//! of its string; D.1.2 writes `new.summary` / `merged.summary` where the text around it
//! says `new_summary` / `merged_summary`, so the underscores are restored). The paper's
//! Python-style `{}` slots become named placeholders:
//!
//! - D.1.1 (`templates/rmm_paper_extract_speaker1.txt`, `…speaker2.txt`): the paper has
//!   one prompt per speaker (`SPEAKER_1`, `SPEAKER_2`), differing in the example. The
//!   variant is chosen by position: the speaker of the session's first utterance gets the
//!   `SPEAKER_1` prompt, the other the `SPEAKER_2` one. In the task description (not in
//!   the examples) the extracted speaker is `{speaker}` and the other speaker(s)
//!   `{other}` (joined with " and "); `Input: {}` is `Input:` + `{session}`.
//! - D.1.2 (`templates/rmm_paper_update.txt`): `History Personal Summaries: {}` is
//!   `{memories}`, rendered `{"history_summaries": ["…", …]}` ([`render_history`]), the
//!   candidates' order giving the `index`; `New Personal Summary: {}` is `{new}`, rendered
//!   `{"new_summary": "…"}` ([`render_new`]).
//!
//! ## Turns
//!
//! The paper's input lists numbered *turns*, each one exchange of the two speakers
//! (`- Turn 0:` then `- SPEAKER_1: …`, `- SPEAKER_2: …`), and the output references turn
//! indices (`"reference": [0, 2]`). A session's utterances (LoCoMo's `D1:3` turns) are
//! grouped into such turns in order ([`group_turns`]): a new turn starts when a speaker
//! already in the current one speaks again, so alternating speakers make pairs. A
//! reference `i` stands for every utterance of turn `i`; the memory's `turns` meta lists
//! their ids. Session dates are not shown (the paper's input has none); the memory's time
//! is still the session date, and its raw turns keep it.

use memfactory_core::text::find_json_object;
use serde_json::Value;

use crate::parse::{MergeDecision, NewMemory, TurnLine};

/// App. D.1.1 for the speaker who opens the session (the paper's `SPEAKER_1` prompt).
pub const EXTRACT_SPEAKER1_TEMPLATE: &str =
    include_str!("../templates/rmm_paper_extract_speaker1.txt");
/// App. D.1.1 for the other speaker (the paper's `SPEAKER_2` prompt).
pub const EXTRACT_SPEAKER2_TEMPLATE: &str =
    include_str!("../templates/rmm_paper_extract_speaker2.txt");
/// App. D.1.2, the memory update prompt.
pub const UPDATE_TEMPLATE: &str = include_str!("../templates/rmm_paper_update.txt");
/// The extraction prompt's "nothing to remember" answer.
pub const NO_TRAIT: &str = "NO_TRAIT";

/// Groups utterances into dialogue turns (indices into `lines`, in order): a new turn
/// starts at the first utterance and whenever a speaker already in the current turn
/// speaks again.
pub fn group_turns(lines: &[TurnLine]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match out.last_mut() {
            Some(turn) if !turn.iter().any(|&j| lines[j].speaker == l.speaker) => turn.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// The session as the paper's input lists it: `- Turn i:` then one `  - Speaker: text` line
/// per utterance (newlines in the text become spaces).
pub fn render_session(lines: &[TurnLine], turns: &[Vec<usize>]) -> String {
    let mut out = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        out.push(format!("- Turn {i}:"));
        for &j in turn {
            let l = &lines[j];
            out.push(format!(
                "  - {}: {}",
                l.speaker,
                l.text.replace(['\n', '\r'], " ")
            ));
        }
    }
    out.join("\n")
}

/// Whether `speaker` gets the `SPEAKER_1` prompt (they speak first in the session), and
/// the other speakers of the session in order of appearance, joined with " and "
/// ("the other speaker" when there is none).
pub fn speaker_roles(lines: &[TurnLine], speaker: &str) -> (bool, String) {
    let first = lines.first().is_none_or(|l| l.speaker == speaker);
    let mut others: Vec<&str> = Vec::new();
    for l in lines {
        if l.speaker != speaker && !others.contains(&l.speaker.as_str()) {
            others.push(&l.speaker);
        }
    }
    let other = if others.is_empty() {
        "the other speaker".to_string()
    } else {
        others.join(" and ")
    };
    (first, other)
}

/// Parses the D.1.1 output `{"extracted_memories": [{"summary": "…", "reference": [0, 2]}]}`
/// for a session whose turn `i` holds the utterance ids `turns[i]`.
///
/// - `NO_TRAIT` (and no `extracted_memories` array) → no memories, no error.
/// - Not JSON / no `extracted_memories` array → no memories and an error.
/// - An entry without a non-empty string `summary` is skipped (noted).
/// - `reference`: a list of turn indices, each an integer, a numeric string, `"[3]"` or
///   `[3]` (the prompt asks for "the format of `[turn_id]`"); a single index is accepted as
///   a list of one. Indices outside `0..turns.len()` and other values are dropped (noted);
///   a missing `reference` keeps the memory without turns (noted). Each index becomes the
///   ids of its turn's utterances, in order, without duplicates.
/// - At most `max` memories are kept.
/// - Output cut off inside the array (a small model repeating entries until the token cap):
///   the complete entries before the cut are kept ([`salvage_array`]) and the cut is
///   reported as an error, so it still counts as a format failure.
/// - An entry whose summary repeats an earlier one is skipped (noted).
pub fn parse_extraction(
    text: &str,
    turns: &[Vec<String>],
    max: usize,
) -> (Vec<NewMemory>, Option<String>) {
    let no_trait = text.contains(NO_TRAIT);
    let mut errors = Vec::new();
    let list: Vec<Value> = match find_json_object(text) {
        Ok(v) => match v.get("extracted_memories").and_then(Value::as_array) {
            Some(list) => list.clone(),
            None if no_trait => return (Vec::new(), None),
            None => {
                return (
                    Vec::new(),
                    Some("expected {\"extracted_memories\": [...]} or NO_TRAIT: no `extracted_memories` array".into()),
                );
            }
        },
        Err(_) if no_trait => return (Vec::new(), None),
        Err(e) => match salvage_array(text, "extracted_memories") {
            Some(list) if !list.is_empty() => {
                errors.push(format!(
                    "output cut off inside `extracted_memories` ({e}); kept its {} complete entries",
                    list.len()
                ));
                list
            }
            _ => return (Vec::new(), Some(e)),
        },
    };
    let mut out: Vec<NewMemory> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let summary = entry
            .get("summary")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let Some(summary) = summary else {
            errors.push(format!(
                "extracted_memories[{i}]: not an object with a non-empty string `summary`; skipped"
            ));
            continue;
        };
        if let Some(j) = out.iter().position(|m| m.summary == summary) {
            errors.push(format!(
                "extracted_memories[{i}]: repeats memory {j}'s summary; skipped"
            ));
            continue;
        }
        let refs: Vec<&Value> = match entry.get("reference") {
            None => {
                errors.push(format!("extracted_memories[{i}]: no `reference`"));
                Vec::new()
            }
            Some(Value::Array(rs)) => rs.iter().collect(),
            Some(r) => vec![r],
        };
        let mut ids: Vec<String> = Vec::new();
        for r in refs {
            match turn_index(r) {
                Some(t) if t < turns.len() => {
                    for id in &turns[t] {
                        if !ids.contains(id) {
                            ids.push(id.clone());
                        }
                    }
                }
                Some(t) => errors.push(format!(
                    "extracted_memories[{i}]: turn {t} is not in the session (0..{}); dropped",
                    turns.len()
                )),
                None => errors.push(format!(
                    "extracted_memories[{i}]: reference {r} is not a turn index; dropped"
                )),
            }
        }
        out.push(NewMemory {
            summary: summary.to_string(),
            turns: ids,
        });
    }
    out.truncate(max);
    (out, (!errors.is_empty()).then(|| errors.join("; ")))
}

/// The complete elements of the JSON array that follows the first `"key"` in `text`, read
/// one value at a time, stopping at the array's end or at the first element that does not
/// parse (output cut off by the token cap). `None` when `text` has no `"key": [`.
pub fn salvage_array(text: &str, key: &str) -> Option<Vec<Value>> {
    let at = text.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let mut rest = rest.strip_prefix('[')?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with(']') {
            return Some(out);
        }
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                let used = values.byte_offset();
                out.push(v);
                rest = rest[used..].trim_start();
                match rest.strip_prefix(',') {
                    Some(r) => rest = r,
                    None => return Some(out),
                }
            }
            _ => return Some(out),
        }
    }
}

/// A turn index written as `3`, `"3"`, `"[3]"` or `[3]`.
fn turn_index(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(s) => {
            let s = s.trim();
            let s = s
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(s);
            s.trim().parse().ok()
        }
        Value::Array(a) if a.len() == 1 => turn_index(&a[0]),
        _ => None,
    }
}

/// `{"history_summaries": ["…", …]}` (JSON-escaped, in candidate order).
pub fn render_history(summaries: &[&str]) -> String {
    serde_json::json!({ "history_summaries": summaries }).to_string()
}

/// `{"new_summary": "…"}`.
pub fn render_new(summary: &str) -> String {
    serde_json::json!({ "new_summary": summary }).to_string()
}

/// Parses the D.1.2 output for `n` history summaries: `Add()` or
/// `Merge(index, merged_summary)`, one action per line (case-insensitive; text before
/// the action on its line, code fences and blank lines are ignored). `index` is 0-based
/// (the paper's example merges into `0`, the first summary) and must be in `0..n`; the
/// merged summary is the text between the first comma and the line's last `)`, trimmed,
/// surrounding quotes removed, and must not be empty.
///
/// The first action is applied. The prompt allows several actions (one per line); one
/// new summary can only be added or merged once here, so further actions are ignored and
/// reported in the returned note. No action, or a malformed first action → `Err`.
pub fn parse_update(text: &str, n: usize) -> Result<(MergeDecision, Option<String>), String> {
    let mut actions = text.lines().filter_map(|l| find_action(l, n));
    let first = actions
        .next()
        .ok_or_else(|| "no Add() or Merge(index, merged_summary) action".to_string())??;
    let more = actions.count();
    let note = (more > 0).then(|| {
        format!(
            "{more} further action(s) after the first ignored (one action per new summary is applied)"
        )
    });
    Ok((first, note))
}

/// The action on `line`, if it has one (`Err` when it is malformed).
fn find_action(line: &str, n: usize) -> Option<Result<MergeDecision, String>> {
    let lower = line.to_ascii_lowercase();
    let add = lower.find("add(");
    let merge = lower.find("merge(");
    match (add, merge) {
        (Some(a), m) if m.is_none_or(|m| a < m) => {
            let rest = line[a + 4..].trim_start();
            Some(if rest.starts_with(')') {
                Ok(MergeDecision::Add)
            } else {
                Err(format!("`{}` is not Add()", line.trim()))
            })
        }
        (_, Some(m)) => Some(parse_merge_call(&line[m + 6..], n)),
        _ => None,
    }
}

/// `index, merged_summary)` → the merge.
fn parse_merge_call(args: &str, n: usize) -> Result<MergeDecision, String> {
    let close = args
        .rfind(')')
        .ok_or_else(|| format!("Merge({args} is not closed"))?;
    let (index, summary) = args[..close]
        .split_once(',')
        .ok_or_else(|| format!("Merge({}) has no `, merged_summary`", &args[..close]))?;
    let index = unquote(index.trim());
    let index: usize = index
        .parse()
        .map_err(|_| format!("Merge index `{index}` is not a non-negative integer"))?;
    if index >= n {
        return Err(format!("Merge index {index} out of range 0..{n}"));
    }
    let summary = unquote(summary.trim()).trim();
    if summary.is_empty() {
        return Err("Merge without a merged summary".into());
    }
    Ok(MergeDecision::Merge {
        index,
        summary: summary.to_string(),
    })
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    s
}
