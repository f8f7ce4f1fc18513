//! # memfactory-data-locomo
//!
//! LoCoMo's very-long-term conversations (Maharana et al., ACL 2024), read from a file in the
//! layout of the public `locomo10.json`. Each question-answer pair becomes one [`Sample`]
//! whose [`Sample::dialogue`] holds the whole multi-session conversation (or, with
//! `window_turns`, the part of it that ends at the question's last evidence turn). In
//! MemFactory this crate is a dataset component ([`memfactory_core::DataSource`]) registered
//! under `kind = "locomo"`; a recipe names it in `[data.eval]` or `[data.train]`, and the
//! `memfactory` facade links it through the `data-locomo` feature. Use it for conversational
//! memory agents (Memory-R1-style memory managers that read a dialogue turn by turn).
//!
//! ## File format
//!
//! A JSON array of conversations (a UTF-8 byte-order mark is ignored). Each conversation:
//!
//! - `sample_id` (string, required), e.g. `"conv-26"`;
//! - `conversation` (object, required): `speaker_a`, `speaker_b` (strings, required);
//!   `session_N` (array of turns) for each session N ≥ 1; `session_N_date_time` (string,
//!   optional) its date as written, e.g. `"1:56 pm on 8 May, 2023"`. Sessions are ordered by
//!   their number N (numerically: `session_10` after `session_9`), whatever the key order in
//!   the file, and keep N as [`Session::index`]. A `session_N_date_time` without a
//!   `session_N` is ignored (conv-26 has dates for sessions 20–35 but no such sessions).
//!   Every other key is ignored.
//! - each turn: `speaker`, `dia_id`, `text` (strings, required), and optionally
//!   `blip_caption` (string) when the speaker shares a photo (`img_url`, `query` and
//!   `re-download` are ignored);
//! - `qa` (array, required): `question` (string), `answer` (string or number; required
//!   unless the category is 5), `evidence` (array of dia_id strings; an entry may hold
//!   several ids separated by `;`, `,` or spaces, as `"D8:6; D9:17"` in conv-26),
//!   `category` (integer 1–5), and for category 5 usually `adversarial_answer`;
//! - `event_summary`, `observation`, `session_summary` and any other field are ignored.
//!
//! ## Samples
//!
//! - [`Sample::id`]: `"{sample_id}-qa{i}"`, `i` being the QA's 0-based index in the
//!   conversation's `qa` array (stable whatever the filters), e.g. `"conv-26-qa0"`.
//! - [`Sample::question`]: `question`. [`Sample::context`] is empty.
//! - [`Sample::answers`]: `[answer]`; a number is written as JSON writes it (`2022`, `3`).
//!   For category 5 (only loaded when `categories` selects it), `[answer]` when the QA has
//!   one (two conv-26 QAs do, e.g. `"No"`), otherwise [`ADVERSARIAL_ANSWER`]
//!   (`"Not mentioned in the conversation"`, the correct option of LoCoMo's own category-5
//!   evaluation); the distractor goes to `meta.adversarial_answer`.
//! - [`Sample::category`]: the numeric category as a string, `"1"` … `"5"`.
//! - [`Sample::dialogue`]: speakers `[speaker_a, speaker_b]`; sessions in numeric order with
//!   their dates; turns with `dia_id` as [`Turn::id`], the speaker and the text. A turn
//!   with a `blip_caption` gets ` [shares {caption}]` appended to its text — the captions read
//!   `"a photo of …"`, so a turn becomes `"Look at this! [shares a photo of a sunset over a
//!   lake]"` (LoCoMo's own evaluation prompt appends ` and shared {caption}.`). Set
//!   `image_captions = false` to keep the text alone.
//! - [`Sample::meta`]: `source` (`"locomo"`), `sample_id`, `qa_index`, `category_name` (see
//!   below), `evidence` (the dia_ids, split as above), `adversarial_answer` (when present),
//!   and `window` (with `window_turns`, see below).
//!
//! ## Categories
//!
//! | category | name ([`category_name`]) | loaded by default |
//! |---|---|---|
//! | 1 | `multi-hop` | yes |
//! | 2 | `temporal` | yes |
//! | 3 | `open-domain` | yes |
//! | 4 | `single-hop` | yes |
//! | 5 | `adversarial` | no |
//!
//! The LoCoMo paper lists its question types in another order (single-hop, multi-hop,
//! temporal, open-domain, adversarial) than the numbers in the released file. The mapping
//! above is the one the Mem0 / Memory-R1 line of LoCoMo evaluations reports per category,
//! and it agrees with the data: in conv-26 and conv-30, category 1 QAs cite 2.5 evidence
//! turns on average and span several sessions in 91 % of cases, 95 % of category 2 questions
//! start with "When", category 4 cites one turn, category 3 asks for inferences
//! ("What fields would Caroline be likely to pursue…"), and category 5 has no answer.
//! Category 5 is excluded by default, as in Memory-R1 (which trains on conv-26's 152
//! non-adversarial QAs) and Mem0's evaluation.
//!
//! ## Training windows (`window_turns`)
//!
//! Memory-R1 trains its memory manager on conv-26, building memory incrementally over the
//! dialogue's turns. Reading the whole 419-turn conversation for every question is wasteful
//! when the question only needs its first sessions; `window_turns` cuts each sample's
//! dialogue so that an episode reads up to what its question needs and nothing after:
//!
//! 1. The dialogue's turns are numbered in reading order (sessions by number, turns in file
//!    order). The question's evidence ids are looked up among the turns' dia_ids (exactly, or
//!    as `D{session}:{turn}` with the numbers parsed, so `D8:06` finds `D8:6`); ids that match
//!    no turn are skipped.
//! 2. The window **ends** at the latest evidence turn found — or at the conversation's last
//!    turn when none is found (empty or unknown evidence: what the question needs is unknown).
//!    No turn after the end is kept.
//! 3. The window **starts** at the first turn of the conversation with `window_turns = "all"`;
//!    with `window_turns = N` (N ≥ 1) it holds the N turns ending at the end turn (fewer when
//!    the conversation has fewer before it), across session boundaries. Evidence turns before
//!    the start are dropped (multi-hop questions can lose evidence with a small N; the
//!    sample's `meta.window.evidence_in_window` says how many of its evidence turns it kept).
//! 4. Sessions keep their index and date; a session with no turn left is removed.
//!
//! `meta.window` then records `{"start": dia_id, "end": dia_id, "turns": count,
//! "evidence_in_window": count}` (`start` / `end` are null when the conversation has no
//! turn). Without `window_turns` the dialogue is whole and `meta.window` is absent.
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | required | the file (locomo10.json layout); relative paths resolve against the current directory |
//! | `categories` | array of integers | `[1, 2, 3, 4]` | the QA categories to load (each 1–5) |
//! | `conversations` | array of strings | all | only these `sample_id`s (each must be in the file) |
//! | `exclude_conversations` | array of strings | none | leave these `sample_id`s out (each must be in the file) |
//! | `link_turn` | `"first"` or `"last"` | none | link each QA to one evidence turn (`meta.linked_turn`), see below |
//! | `window_turns` | integer or `"all"` | none (whole dialogue) | training windows, see above |
//! | `image_captions` | boolean | `true` | append ` [shares {blip_caption}]` to turns that share a photo |
//! | `offset` | integer | `0` | skip this many of the selected samples |
//! | `limit` | integer | none | at most this many samples |
//!
//! Samples come in file order (conversations, then QAs), after the `categories`,
//! `conversations`, `exclude_conversations` and `link_turn` filters; `offset` and `limit`
//! apply last. Memory-R1's LoCoMo protocol (1:1:8 by conversation) on the full
//! `locomo10.json`: train `conversations = ["conv-26"]`, validate `["conv-30"]`, test
//! `exclude_conversations = ["conv-26", "conv-30"]` (the other eight conversations).
//!
//! ## Linked turns (`link_turn`)
//!
//! Memory-R1 trains its memory manager per dialogue turn: the QA pairs whose evidence cites
//! a turn are the ones that turn's memory operations are rewarded on. With `link_turn`,
//! each QA is linked to ONE turn of the dialogue: its evidence ids are looked up among the
//! turns (exactly, or as `D{session}:{turn}` with the numbers parsed, as for windows) and
//! `"first"` takes the first id of the evidence list that is found — the reading of
//! `kaicheng-li/memory-r1-thesis:memory_r1_reproduction/scripts/build_manager_training_data.py@2033388b2b0bac476f15e3ed7ce812730bd62955`
//! (`normalize_locomo_sample`) — while `"last"` takes the latest evidence turn in reading
//! order. QAs none of whose evidence ids is found (conv-26 has two with empty evidence) are
//! dropped, as that script drops them. The sample then carries `meta.linked_turn` (the
//! turn's dia_id as in the file) and `meta.linked_turn_index` (its 0-based position in
//! reading order). The dialogue is not cut by `link_turn` (`window_turns` still applies).
//!
//! ```toml
//! [data.train]
//! kind = "locomo"
//! path = "../shared/data/locomo/locomo_conv26_conv30.json"
//! conversations = ["conv-26"]   # Memory-R1's 152 training QAs
//! window_turns = "all"
//! ```
//!
//! The file is read only in [`DataSource::load`]; building the component (and so
//! `memfactory check`) does no IO. Errors are [`Error::Data`] naming the file and where in it
//! (`line L, column C` for malformed JSON; `conversation I (sample_id), qa J` or
//! `…, session_N turn K` for a bad record) and what is wrong.
//!
//! ## Data source and licence
//!
//! LoCoMo: Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents",
//! ACL 2024 (<https://snap-research.github.io/locomo>), released under CC BY-NC 4.0 —
//! non-commercial use only; cite it wherever results on it are reported. This crate holds no
//! LoCoMo data. Memory-R1: Yan et al., arXiv:2508.19828.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memfactory_core::{Cfg, DataSource, Dialogue, Error, LoadCx, Result, Sample, Session, Turn};
use serde_json::{Map, Value, json};

/// Registry kind of this data source.
pub const KIND: &str = "locomo";

/// Categories loaded when a recipe does not say (category 5, adversarial, excluded).
pub const DEFAULT_CATEGORIES: [u8; 4] = [1, 2, 3, 4];

/// The gold answer of a category-5 (adversarial) QA that has no `answer` of its own.
pub const ADVERSARIAL_ANSWER: &str = "Not mentioned in the conversation";

/// The name of a LoCoMo QA category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop,
/// 5 adversarial); `None` outside 1–5.
pub fn category_name(category: u8) -> Option<&'static str> {
    match category {
        1 => Some("multi-hop"),
        2 => Some("temporal"),
        3 => Some("open-domain"),
        4 => Some("single-hop"),
        5 => Some("adversarial"),
        _ => None,
    }
}

/// Why a text could not be read: where (`line L, column C` or a record path), and what.
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

/// One question-answer pair of a conversation, as in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Qa {
    /// 0-based index in the conversation's `qa` array.
    pub index: usize,
    /// The question.
    pub question: String,
    /// The answer (numbers written as strings); `None` only for category 5.
    pub answer: Option<String>,
    /// The distractor of an adversarial question, when present.
    pub adversarial_answer: Option<String>,
    /// Evidence dia_ids, entries holding several ids split apart.
    pub evidence: Vec<String>,
    /// Category 1–5.
    pub category: u8,
}

/// One LoCoMo conversation with its questions.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// `sample_id`, e.g. `conv-26`.
    pub sample_id: String,
    /// The sessions in numeric order (captions appended as configured).
    pub dialogue: Dialogue,
    /// The QAs in file order, every category.
    pub qa: Vec<Qa>,
}

/// Which part of the dialogue a windowed sample keeps (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// From the first turn up to the question's latest evidence turn.
    All,
    /// The given number of turns (0 is read as 1) ending at the question's latest evidence
    /// turn.
    Turns(usize),
}

/// A dialogue cut by [`window_dialogue`], with what the cut kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Windowed {
    /// The kept sessions and turns.
    pub dialogue: Dialogue,
    /// dia_id of the first kept turn (`None` when nothing is kept).
    pub start: Option<String>,
    /// dia_id of the last kept turn (`None` when nothing is kept).
    pub end: Option<String>,
    /// Number of kept turns.
    pub turns: usize,
    /// Number of distinct evidence turns inside the window.
    pub evidence_in_window: usize,
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

/// serde_json's message without its ` at line L column C` suffix.
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => full,
    }
}

/// Reads field `key` of `obj` as a string; `where_` locates `obj` for the error.
fn string_field(
    obj: &Map<String, Value>,
    key: &str,
    where_: &str,
) -> std::result::Result<String, ParseError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ParseError {
            location: Some(where_.to_string()),
            message: format!(
                "field `{key}`: expected a string, found {}",
                type_name(other)
            ),
        }),
        None => Err(ParseError {
            location: Some(where_.to_string()),
            message: format!("missing field `{key}`"),
        }),
    }
}

/// Splits evidence entries (`"D8:6; D9:17"`) into single dia_ids.
pub fn split_evidence<'a>(entries: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    entries
        .into_iter()
        .flat_map(|e| e.split(|c: char| c == ';' || c == ',' || c.is_whitespace()))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `D{session}:{turn}` with both numbers parsed, for lenient evidence lookup.
fn parse_dia_id(id: &str) -> Option<(u64, u64)> {
    let rest = id.trim().strip_prefix('D')?;
    let (s, t) = rest.split_once(':')?;
    Some((s.trim().parse().ok()?, t.trim().parse().ok()?))
}

fn parse_turn(
    value: &Value,
    where_: &str,
    captions: bool,
) -> std::result::Result<Turn, ParseError> {
    let Value::Object(obj) = value else {
        return Err(ParseError {
            location: Some(where_.to_string()),
            message: format!(
                "expected a turn object with `speaker`, `dia_id` and `text`, found {}",
                type_name(value)
            ),
        });
    };
    let speaker = string_field(obj, "speaker", where_)?;
    let id = string_field(obj, "dia_id", where_)?;
    let mut text = string_field(obj, "text", where_)?;
    if obj.contains_key("blip_caption") {
        let caption = string_field(obj, "blip_caption", where_)?;
        let caption = caption.trim();
        if captions && !caption.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("[shares {caption}]"));
        }
    }
    Ok(Turn { id, speaker, text })
}

fn parse_dialogue(
    conv: &Map<String, Value>,
    where_: &str,
    captions: bool,
) -> std::result::Result<Dialogue, ParseError> {
    let speakers = vec![
        string_field(conv, "speaker_a", where_)?,
        string_field(conv, "speaker_b", where_)?,
    ];
    let mut sessions: BTreeMap<usize, &Vec<Value>> = BTreeMap::new();
    for (key, value) in conv {
        let Some(n) = key
            .strip_prefix("session_")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let n: usize = n.parse().map_err(|_| ParseError {
            location: Some(where_.to_string()),
            message: format!("session key `{key}`: number out of range"),
        })?;
        match value {
            Value::Array(turns) => {
                sessions.insert(n, turns);
            }
            other => {
                return Err(ParseError {
                    location: Some(where_.to_string()),
                    message: format!(
                        "field `{key}`: expected an array of turns, found {}",
                        type_name(other)
                    ),
                });
            }
        }
    }
    let mut out = Vec::with_capacity(sessions.len());
    for (n, turns) in sessions {
        let date_key = format!("session_{n}_date_time");
        let date = match conv.get(&date_key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ParseError {
                    location: Some(where_.to_string()),
                    message: format!(
                        "field `{date_key}`: expected a string, found {}",
                        type_name(other)
                    ),
                });
            }
        };
        let turns = turns
            .iter()
            .enumerate()
            .map(|(k, t)| parse_turn(t, &format!("{where_}, session_{n} turn {k}"), captions))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        out.push(Session {
            index: n,
            date,
            turns,
        });
    }
    Ok(Dialogue {
        speakers,
        sessions: out,
    })
}

fn parse_qa(value: &Value, index: usize, where_: &str) -> std::result::Result<Qa, ParseError> {
    let err = |message: String| ParseError {
        location: Some(where_.to_string()),
        message,
    };
    let Value::Object(obj) = value else {
        return Err(err(format!(
            "expected a QA object with `question`, `answer`, `evidence` and `category`, found {}",
            type_name(value)
        )));
    };
    let question = string_field(obj, "question", where_)?;
    let category = match obj.get("category") {
        None => return Err(err("missing field `category`".into())),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(c @ 1..=5) => c as u8,
            _ => {
                return Err(err(format!(
                    "field `category`: expected an integer from 1 to 5, found {n}"
                )));
            }
        },
        Some(other) => {
            return Err(err(format!(
                "field `category`: expected an integer from 1 to 5, found {}",
                type_name(other)
            )));
        }
    };
    let answer = match obj.get("answer") {
        None if category == 5 => None,
        None => {
            return Err(err(format!(
                "missing field `answer` (required for category {category})"
            )));
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(err(format!(
                "field `answer`: expected a string or a number, found {}",
                type_name(other)
            )));
        }
    };
    let adversarial_answer = match obj.get("adversarial_answer") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(err(format!(
                "field `adversarial_answer`: expected a string or a number, found {}",
                type_name(other)
            )));
        }
    };
    let evidence = match obj.get("evidence") {
        None => return Err(err("missing field `evidence`".into())),
        Some(Value::Array(items)) => {
            let mut entries = Vec::with_capacity(items.len());
            for (k, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => entries.push(s.as_str()),
                    other => {
                        return Err(err(format!(
                            "field `evidence[{k}]`: expected a dia_id string, found {}",
                            type_name(other)
                        )));
                    }
                }
            }
            split_evidence(entries)
        }
        Some(other) => {
            return Err(err(format!(
                "field `evidence`: expected an array of dia_id strings, found {}",
                type_name(other)
            )));
        }
    };
    Ok(Qa {
        index,
        question,
        answer,
        adversarial_answer,
        evidence,
        category,
    })
}

fn parse_conversation(
    value: &Value,
    index: usize,
    captions: bool,
) -> std::result::Result<Conversation, ParseError> {
    let where_ = format!("conversation {index}");
    let Value::Object(obj) = value else {
        return Err(ParseError {
            location: Some(where_),
            message: format!(
                "expected a conversation object with `sample_id`, `conversation` and `qa`, found {}",
                type_name(value)
            ),
        });
    };
    let sample_id = string_field(obj, "sample_id", &where_)?;
    let where_ = format!("conversation {index} ({sample_id})");
    let dialogue = match obj.get("conversation") {
        Some(Value::Object(conv)) => parse_dialogue(conv, &where_, captions)?,
        Some(other) => {
            return Err(ParseError {
                location: Some(where_),
                message: format!(
                    "field `conversation`: expected an object, found {}",
                    type_name(other)
                ),
            });
        }
        None => {
            return Err(ParseError {
                location: Some(where_),
                message: "missing field `conversation`".into(),
            });
        }
    };
    let qa = match obj.get("qa") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, q)| parse_qa(q, j, &format!("{where_}, qa {j}")))
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(ParseError {
                location: Some(where_),
                message: format!("field `qa`: expected an array, found {}", type_name(other)),
            });
        }
        None => {
            return Err(ParseError {
                location: Some(where_),
                message: "missing field `qa`".into(),
            });
        }
    };
    Ok(Conversation {
        sample_id,
        dialogue,
        qa,
    })
}

/// Parses the text of a LoCoMo file (a JSON array of conversations); `captions` appends
/// ` [shares {blip_caption}]` to turns that share a photo.
pub fn parse_conversations(
    text: &str,
    captions: bool,
) -> std::result::Result<Vec<Conversation>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ParseError {
            location: None,
            message: "the file is empty (expected a JSON array of LoCoMo conversations)".into(),
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError {
        location: Some(format!("line {}, column {}", e.line(), e.column())),
        message: format!("malformed JSON: {}", bare_message(&e)),
    })?;
    let Value::Array(items) = value else {
        return Err(ParseError {
            location: None,
            message: format!(
                "expected a JSON array of LoCoMo conversations (locomo10.json layout), found {}",
                type_name(&value)
            ),
        });
    };
    if items.is_empty() {
        return Err(ParseError {
            location: None,
            message: "the file holds no conversations (an empty array)".into(),
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_conversation(v, i, captions))
        .collect()
}

/// Reads and parses a file; every error is an [`Error::Data`] naming `path`.
pub fn read_conversations(path: &Path, captions: bool) -> Result<Vec<Conversation>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    parse_conversations(&text, captions).map_err(|e| Error::data(path, e.location, e.message))
}

/// Cuts `dialogue` to the window of a question with these evidence dia_ids (see the crate
/// docs, "Training windows").
pub fn window_dialogue(dialogue: &Dialogue, evidence: &[String], window: Window) -> Windowed {
    // Reading order: (session position, turn position).
    let order: Vec<(usize, usize)> = dialogue
        .sessions
        .iter()
        .enumerate()
        .flat_map(|(s, sess)| (0..sess.turns.len()).map(move |t| (s, t)))
        .collect();
    let turn = |p: usize| &dialogue.sessions[order[p].0].turns[order[p].1];
    let mut exact: HashMap<&str, usize> = HashMap::new();
    let mut parsed: HashMap<(u64, u64), usize> = HashMap::new();
    for p in 0..order.len() {
        let id = turn(p).id.as_str();
        exact.entry(id).or_insert(p);
        if let Some(key) = parse_dia_id(id) {
            parsed.entry(key).or_insert(p);
        }
    }
    let mut found: Vec<usize> = evidence
        .iter()
        .filter_map(|e| {
            exact
                .get(e.as_str())
                .copied()
                .or_else(|| parse_dia_id(e).and_then(|k| parsed.get(&k).copied()))
        })
        .collect();
    found.sort_unstable();
    found.dedup();

    let Some(last) = order.len().checked_sub(1) else {
        return Windowed {
            dialogue: Dialogue {
                speakers: dialogue.speakers.clone(),
                sessions: Vec::new(),
            },
            start: None,
            end: None,
            turns: 0,
            evidence_in_window: 0,
        };
    };
    let end = found.last().copied().unwrap_or(last);
    let start = match window {
        Window::All => 0,
        Window::Turns(n) => (end + 1).saturating_sub(n.max(1)),
    };
    let mut sessions = Vec::new();
    let mut first = 0; // reading-order position of the session's first turn
    for sess in &dialogue.sessions {
        let (lo, hi) = (first, first + sess.turns.len());
        first = hi;
        let turns: Vec<Turn> =
            sess.turns[start.clamp(lo, hi) - lo..(end + 1).clamp(lo, hi) - lo].to_vec();
        if !turns.is_empty() {
            sessions.push(Session {
                index: sess.index,
                date: sess.date.clone(),
                turns,
            });
        }
    }
    Windowed {
        dialogue: Dialogue {
            speakers: dialogue.speakers.clone(),
            sessions,
        },
        start: Some(turn(start).id.clone()),
        end: Some(turn(end).id.clone()),
        turns: end + 1 - start,
        evidence_in_window: found.iter().filter(|p| (start..=end).contains(*p)).count(),
    }
}

/// The sample of QA `qa` of `conv`, its dialogue cut to `window` when given.
pub fn qa_to_sample(conv: &Conversation, qa: &Qa, window: Option<Window>) -> Sample {
    let answer = qa
        .answer
        .clone()
        .unwrap_or_else(|| ADVERSARIAL_ANSWER.to_string());
    let mut sample = Sample::text(
        format!("{}-qa{}", conv.sample_id, qa.index),
        qa.question.clone(),
        String::new(),
        vec![answer],
    );
    sample.category = Some(qa.category.to_string());
    let meta = &mut sample.meta;
    meta.insert("source".into(), json!("locomo"));
    meta.insert("sample_id".into(), json!(conv.sample_id));
    meta.insert("qa_index".into(), json!(qa.index));
    if let Some(name) = category_name(qa.category) {
        meta.insert("category_name".into(), json!(name));
    }
    meta.insert("evidence".into(), json!(qa.evidence));
    if let Some(a) = &qa.adversarial_answer {
        meta.insert("adversarial_answer".into(), json!(a));
    }
    sample.dialogue = Some(match window {
        None => conv.dialogue.clone(),
        Some(w) => {
            let cut = window_dialogue(&conv.dialogue, &qa.evidence, w);
            sample.meta.insert(
                "window".into(),
                json!({
                    "start": cut.start,
                    "end": cut.end,
                    "turns": cut.turns,
                    "evidence_in_window": cut.evidence_in_window,
                }),
            );
            cut.dialogue
        }
    });
    sample
}

/// The `locomo` data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locomo {
    /// The file.
    pub path: PathBuf,
    /// Categories to load.
    pub categories: Vec<u8>,
    /// Only these conversations (`sample_id`s), when set.
    pub conversations: Option<Vec<String>>,
    /// Training windows, when set.
    pub window: Option<Window>,
    /// Append photo captions to turns.
    pub image_captions: bool,
    /// Selected samples to skip.
    pub offset: usize,
    /// At most this many samples.
    pub limit: Option<usize>,
    /// Dotted recipe key of `conversations`, for errors.
    pub conversations_key: String,
    /// Leave these conversations (`sample_id`s) out, when set.
    pub exclude_conversations: Option<Vec<String>>,
    /// Dotted recipe key of `exclude_conversations`, for errors.
    pub exclude_key: String,
    /// Link each QA to one evidence turn (and drop QAs with none), when set.
    pub link_turn: Option<LinkTurn>,
}

/// Which evidence turn a QA is linked to (`link_turn`, see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTurn {
    /// The first evidence id of the list that names a turn.
    First,
    /// The latest evidence turn in reading order.
    Last,
}

/// The reading-order position (sessions in order, turns in file order) of the turn a QA with
/// these evidence ids is linked to, or `None` when no id names a turn of `dialogue`.
pub fn linked_turn(dialogue: &Dialogue, evidence: &[String], link: LinkTurn) -> Option<usize> {
    let ids: Vec<&str> = dialogue
        .sessions
        .iter()
        .flat_map(|s| s.turns.iter().map(|t| t.id.as_str()))
        .collect();
    let find = |e: &String| {
        ids.iter().position(|id| *id == e.as_str()).or_else(|| {
            let k = parse_dia_id(e)?;
            ids.iter().position(|id| parse_dia_id(id) == Some(k))
        })
    };
    match link {
        LinkTurn::First => evidence.iter().find_map(find),
        LinkTurn::Last => evidence.iter().filter_map(find).max(),
    }
}

impl Locomo {
    /// A source over `path` with the defaults (categories 1–4, whole dialogues, captions).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Locomo {
            path: path.into(),
            categories: DEFAULT_CATEGORIES.to_vec(),
            conversations: None,
            window: None,
            image_captions: true,
            offset: 0,
            limit: None,
            conversations_key: "conversations".into(),
            exclude_conversations: None,
            exclude_key: "exclude_conversations".into(),
            link_turn: None,
        }
    }
}

impl DataSource for Locomo {
    fn describe(&self) -> String {
        let cats: Vec<String> = self.categories.iter().map(|c| c.to_string()).collect();
        let mut s = format!(
            "locomo: {}, categories [{}]",
            self.path.display(),
            cats.join(", ")
        );
        if let Some(c) = &self.conversations {
            s.push_str(&format!(", conversations {}", c.join(", ")));
        }
        if let Some(c) = &self.exclude_conversations {
            s.push_str(&format!(", without conversations {}", c.join(", ")));
        }
        match self.link_turn {
            None => {}
            Some(LinkTurn::First) => s.push_str(", each QA linked to its first evidence turn"),
            Some(LinkTurn::Last) => s.push_str(", each QA linked to its last evidence turn"),
        }
        match self.window {
            None => {}
            Some(Window::All) => s.push_str(", dialogues cut after the last evidence turn"),
            Some(Window::Turns(n)) => s.push_str(&format!(
                ", windows of {n} turns ending at the last evidence turn"
            )),
        }
        if !self.image_captions {
            s.push_str(", no photo captions");
        }
        if self.offset > 0 {
            s.push_str(&format!(", from sample {}", self.offset));
        }
        if let Some(l) = self.limit {
            s.push_str(&format!(", at most {l} samples"));
        }
        s
    }

    fn load(&self, _cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        let convs = read_conversations(&self.path, self.image_captions)?;
        for (list, key) in [
            (&self.conversations, &self.conversations_key),
            (&self.exclude_conversations, &self.exclude_key),
        ] {
            for w in list.iter().flatten() {
                if !convs.iter().any(|c| &c.sample_id == w) {
                    let have: Vec<&str> = convs.iter().map(|c| c.sample_id.as_str()).collect();
                    return Err(Error::config(
                        key,
                        format!(
                            "conversation `{w}` is not in {} (it holds {})",
                            self.path.display(),
                            have.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut samples = Vec::new();
        for conv in &convs {
            if let Some(wanted) = &self.conversations
                && !wanted.contains(&conv.sample_id)
            {
                continue;
            }
            if let Some(out) = &self.exclude_conversations
                && out.contains(&conv.sample_id)
            {
                continue;
            }
            for qa in conv
                .qa
                .iter()
                .filter(|q| self.categories.contains(&q.category))
            {
                let link = match self.link_turn {
                    None => None,
                    Some(l) => match linked_turn(&conv.dialogue, &qa.evidence, l) {
                        Some(p) => Some(p),
                        None => continue,
                    },
                };
                samples.push((conv, qa, link));
            }
        }
        if samples.is_empty() {
            return Err(Error::data(
                &self.path,
                None,
                format!("no QA matches {}", self.describe()),
            ));
        }
        if self.offset > 0 && self.offset >= samples.len() {
            return Err(Error::data(
                &self.path,
                None,
                format!(
                    "offset = {} is past the end of the {} selected samples",
                    self.offset,
                    samples.len()
                ),
            ));
        }
        Ok(samples
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|(conv, qa, link)| {
                let mut sample = qa_to_sample(conv, qa, self.window);
                if let Some(p) = link
                    && let Some(turn) = conv.dialogue.sessions.iter().flat_map(|s| &s.turns).nth(p)
                {
                    sample.meta.insert("linked_turn".into(), json!(turn.id));
                    sample.meta.insert("linked_turn_index".into(), json!(p));
                }
                sample
            })
            .collect())
    }
}

/// Reads `window_turns`: a positive integer or `"all"`.
fn window_from_cfg(cfg: &mut Cfg) -> Result<Option<Window>> {
    let expected = "a positive number of turns or \"all\"";
    match cfg.opt::<Value>("window_turns")? {
        None => Ok(None),
        Some(Value::String(s)) if s == "all" => Ok(Some(Window::All)),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) if t >= 1 => Ok(Some(Window::Turns(t as usize))),
            _ => Err(cfg.error("window_turns", format!("expected {expected}, found {n}"))),
        },
        Some(other) => Err(cfg.error(
            "window_turns",
            format!("expected {expected}, found {other}"),
        )),
    }
}

/// Builds a [`Locomo`] from its recipe table (no IO).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let path: String = cfg.req("path")?;
    if path.trim().is_empty() {
        return Err(cfg.error("path", "must not be empty"));
    }
    let categories: Vec<u8> = cfg.get_checked(
        "categories",
        DEFAULT_CATEGORIES.to_vec(),
        |c| !c.is_empty() && c.iter().all(|c| (1..=5).contains(c)),
        "a non-empty array of LoCoMo categories, each from 1 to 5",
    )?;
    let conversations: Option<Vec<String>> = cfg.opt("conversations")?;
    if conversations.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(cfg.error(
            "conversations",
            "must name at least one conversation (leave it out to load them all)",
        ));
    }
    let exclude_conversations: Option<Vec<String>> = cfg.opt("exclude_conversations")?;
    if exclude_conversations.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(cfg.error(
            "exclude_conversations",
            "must name at least one conversation (leave it out to exclude none)",
        ));
    }
    let link_turn = match cfg.opt::<String>("link_turn")?.as_deref() {
        None => None,
        Some("first") => Some(LinkTurn::First),
        Some("last") => Some(LinkTurn::Last),
        Some(other) => {
            return Err(cfg.error(
                "link_turn",
                format!("expected \"first\" or \"last\", found \"{other}\""),
            ));
        }
    };
    let window = window_from_cfg(cfg)?;
    let image_captions: bool = cfg.get("image_captions", true)?;
    let offset: usize = cfg.get("offset", 0usize)?;
    let limit: Option<usize> = cfg.opt("limit")?;
    Ok(Box::new(Locomo {
        path: path.into(),
        categories,
        conversations,
        window,
        image_captions,
        offset,
        limit,
        conversations_key: cfg.key("conversations"),
        exclude_conversations,
        exclude_key: cfg.key("exclude_conversations"),
        link_turn,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "LoCoMo conversations (locomo10.json layout): one sample per QA with the whole multi-session dialogue",
        build,
    }
}
