//! Stage `manager-turn`: Memory-R1's memory manager trained per dialogue turn.
//!
//! Memory-R1 (arXiv 2508.19828) does not train the manager on whole trajectories. For each
//! dialogue turn `t` that LoCoMo QA evidence cites, a *teacher* builds a temporal memory
//! bank from the turns before `t` (≈50); the manager then acts on the facts extracted from
//! turn `t` against that fixed snapshot, and a **frozen** answer agent answers the questions
//! linked to `t` from the edited bank; the reward is their exact match. A GRPO group is G
//! manager outputs for the same state. The paper has no public code; the tuple layout
//! follows the third-party reading in
//! `kaicheng-li/memory-r1-thesis:memory_r1_original/memory_r1/datasets.py@c8ecf8cc16a5d8f45271c25154b0345c4ccabc18`
//! (`build_manager_samples`: one sample per (turn, linked QA), the bank snapshot taken
//! before the turn) and
//! `memory_r1_reproduction/scripts/build_manager_training_data.py@2033388b2b0bac476f15e3ed7ce812730bd62955`
//! (the teacher builds the bank from the preceding window of turns and extracts the turn's
//! facts; QAs are linked to the first evidence turn found).
//!
//! ## Tuples
//!
//! A sample of this stage is one LoCoMo QA whose `meta.linked_turn` names its turn `t`
//! (`[data.*] kind = "locomo"`, `link_turn = "first"`). Its **tuple** is
//!
//! - `snapshot`: the bank the teacher builds by running the `[agent.teacher]` ops —
//!   `extract` on each turn, then `related` + `manage` on each fact, exactly the
//!   trajectory stage's bank building with `turns_per_step = 1` — over the `history_turns`
//!   turns before `t` in reading order (across sessions; `0` = every turn before `t`);
//! - `facts`: the teacher's `extract` output on turn `t` alone;
//! - the QA itself comes from the sample (a turn with k linked questions gives k samples
//!   that share one tuple).
//!
//! Every teacher call runs on a scratch episode with its own in-memory store and no
//! embedder (the teacher's `related` retrieval must not need one: BM25, the default); the
//! scratch episodes are dropped, so teacher calls never enter a trajectory. Seeds derive
//! from the content hash of the turn (extraction) and of the window (bank), never from the
//! sample or the run seed, so a tuple is the same whichever sample asks first.
//!
//! ## Incremental teacher (`incremental = true`, with `history_turns = 0`)
//!
//! With every preceding turn in the window, the bank before turn `t` is the bank before an
//! earlier turn `t'` continued over the turns `t' .. t`. The incremental teacher keeps the
//! bank before every reading-order position it has built (per dialogue, in memory) and
//! continues the latest one at or before `t` instead of rebuilding from the first turn; its
//! builds run one at a time (a waiting worker waits outside the LM's batching), so each
//! continues the ones before. A conversation of n turns then costs one pass of manage calls
//! instead of one pass per linked turn (on LoCoMo conv-26, ~400 turns instead of ~150
//! passes). For a greedy teacher the snapshots are the ones a from-scratch teacher builds
//! (memory ids come from the store's contents, retrieval from its items), whichever order
//! the turns are asked in (tested); a sampling teacher draws one trajectory through the
//! conversation instead of one per turn. Banks are found by their position's window key,
//! so the snapshots of tuples read back from the file are continued too (a run stopped
//! half-way through a conversation resumes from its last tuple). The key is part of the
//! teacher table, so such a teacher has its own tuple file.
//!
//! ## The tuple file (built once, reused)
//!
//! Tuples are stored in `<tuples_dir>/<teacher key>.jsonl` as they are built, and read back
//! by later runs. The **teacher key** is FNV-1a 64 (16 hex digits) of [`TUPLE_FORMAT`] and
//! the resolved `[agent.teacher]` table without `tuples_dir` (the teacher's model table,
//! its op tables with every default filled in, `history_turns`): a changed teacher writes
//! a new file. Within a file, a tuple is found by its **window key**, FNV-1a 64 of the JSON
//! of the speakers and of the turns `t - history_turns ..= t` (session index and date, dia_id,
//! speaker, text): changed data builds a new tuple. Layout, one JSON object per line:
//!
//! 1. a header: `{"format": "memory-r1-turns/1", "teacher_key": "<16 hex>", "teacher":
//!    "<the teacher model's description>", "history_turns": 50}`;
//! 2. one [`TurnTuple`] per line: `{"key": "<16 hex window key>", "turn": "D3:5",
//!    "turn_index": 41, "history": 41, "snapshot": [MemoryItem…], "facts": [MemoryItem…],
//!    "teacher_parse_errors": 0, "bank_parse_errors": 0}` — `MemoryItem` as everywhere
//!    (`id`, `content`, `speaker`, `time`, `meta`), embeddings left out (they are computed
//!    when a snapshot is used, when the run has an `[embedder]`).
//!
//! A line is written whole (one `write` of the line and its newline, under a lock); a last
//! line without a newline (a run killed while writing) is ignored and rebuilt. A header
//! of another format or key, or a malformed whole line, is a data error naming the file.
//!
//! ## Episode of the stage
//!
//! 1. The tuple of the sample's linked turn (built, read from the file, or waited for when
//!    another worker is building it — through [`EpisodeCx::wait_outside_lm`]). Note
//!    `turn-tuple`.
//! 2. Every path gets the **same** snapshot, applied to its own store with one
//!    `cx.apply("turn-snapshot", adds)` (so the group starts from one state).
//! 3. The policy's `manage` op (role `manage`) decides an edit per fact of turn `t`
//!    (`related` retrieval first, as in the trajectory stage); the extractor is **not**
//!    called. New memories get turn `t`'s speaker, session date and `meta.turn`.
//! 4. The answer phase of the trajectory stage: `retrieve` (top-30 per speaker = 60
//!    candidates by default) and `answer` (distillation) — give `[agent.answer]` its own
//!    frozen `model` and train `[train] roles = ["manage"]`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use memfactory_core::{
    Dialogue, EpisodeCx, Error, LanguageModel, MemoryEdit, MemoryItem, MemoryOp, OpInput, Result,
    Sample, Session, seed,
};
use serde::{Deserialize, Serialize};

use crate::{BankOps, DialogueStep, MemoryR1, check_outputs};

/// Format tag of the tuple file's header.
pub const TUPLE_FORMAT: &str = "memory-r1-turns/1";

/// Op name under which the snapshot is applied to every path's store.
pub const SNAPSHOT_OP: &str = "turn-snapshot";

/// Default `[agent.teacher] tuples_dir`.
pub const DEFAULT_TUPLES_DIR: &str = "runs/memory-r1-turns";

/// The state of one linked turn (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnTuple {
    /// Window key (16 hex digits).
    pub key: String,
    /// dia_id of turn `t`.
    pub turn: String,
    /// Position of `t` in the dialogue's reading order.
    pub turn_index: usize,
    /// Number of preceding turns the snapshot was built from.
    pub history: usize,
    /// The teacher's bank before turn `t`.
    pub snapshot: Vec<MemoryItem>,
    /// The teacher's facts of turn `t`.
    pub facts: Vec<MemoryItem>,
    /// Parse errors of the teacher's calls while building this tuple.
    pub teacher_parse_errors: usize,
    /// Of those, the ones made while building the snapshot (without turn `t`'s extraction):
    /// what an incremental teacher carries on when it continues this bank. Absent in files
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_parse_errors: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    teacher_key: String,
    teacher: String,
    history_turns: usize,
}

type Facts = Arc<(Vec<MemoryItem>, Option<String>)>;
type Slot = Arc<OnceLock<std::result::Result<Arc<TurnTuple>, String>>>;
/// The incremental teacher's bank before a reading-order position, and the parse errors its
/// building recorded.
type Prefix = Arc<(Vec<MemoryItem>, usize)>;

#[derive(Default)]
struct State {
    loaded: bool,
    slots: HashMap<u64, Slot>,
    facts: HashMap<u64, Facts>,
    /// Incremental teacher: the bank before each reading-order position built so far (or
    /// read back from the file), by that position's window key.
    prefixes: HashMap<u64, Prefix>,
}

/// The frozen teacher of stage `manager-turn` and its tuple file (`[agent.teacher]`).
pub struct Teacher {
    /// The teacher's model (`[agent.teacher] model`).
    pub lm: Box<dyn LanguageModel>,
    /// Fact extraction.
    pub extract: Box<dyn MemoryOp>,
    /// Related-memory retrieval for the teacher's manager.
    pub related: Box<dyn MemoryOp>,
    /// The teacher's manager.
    pub manage: Box<dyn MemoryOp>,
    /// Cap on related memories shown per fact (the agent's `related_k`).
    pub related_k: usize,
    /// Preceding turns the snapshot is built from (0 = all).
    pub history_turns: usize,
    /// The tuple file.
    pub file: PathBuf,
    /// The teacher key (see the module docs).
    pub key: u64,
    /// Continue the bank of an earlier linked turn instead of rebuilding it from the first
    /// turn (`[agent.teacher] incremental`, with `history_turns = 0`; see the module docs).
    pub incremental: bool,
    state: Mutex<State>,
    write: Mutex<()>,
    /// Held by an incremental build, so that builds run one after another and each
    /// continues the banks of the ones before.
    build_lock: Mutex<()>,
}

/// The reading-order turns of a dialogue: `(session, index in the session)`.
fn reading_order(dialogue: &Dialogue) -> Vec<(&Session, usize)> {
    dialogue
        .sessions
        .iter()
        .flat_map(|s| (0..s.turns.len()).map(move |i| (s, i)))
        .collect()
}

fn turn_json(session: &Session, i: usize) -> serde_json::Value {
    let t = &session.turns[i];
    serde_json::json!([session.index, session.date, t.id, t.speaker, t.text])
}

impl Teacher {
    /// A teacher over `lm` and its ops; `file` is its tuple file, `key` its teacher key.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lm: Box<dyn LanguageModel>,
        extract: Box<dyn MemoryOp>,
        related: Box<dyn MemoryOp>,
        manage: Box<dyn MemoryOp>,
        related_k: usize,
        history_turns: usize,
        file: PathBuf,
        key: u64,
    ) -> Self {
        Teacher {
            lm,
            extract,
            related,
            manage,
            related_k,
            history_turns,
            file,
            key,
            incremental: false,
            state: Mutex::new(State::default()),
            write: Mutex::new(()),
            build_lock: Mutex::new(()),
        }
    }

    /// The same teacher, continuing banks across linked turns when `incremental` (which
    /// needs `history_turns == 0`: a sliding window cannot be continued).
    pub fn with_incremental(mut self, incremental: bool) -> Self {
        self.incremental = incremental && self.history_turns == 0;
        self
    }

    fn ops(&self) -> BankOps<'_> {
        BankOps {
            extract: self.extract.as_ref(),
            related: self.related.as_ref(),
            manage: self.manage.as_ref(),
            related_k: self.related_k,
        }
    }

    /// First preceding turn of the window of turn `t`.
    fn start(&self, t: usize) -> usize {
        if self.history_turns == 0 {
            0
        } else {
            t.saturating_sub(self.history_turns)
        }
    }

    /// The window key of turn `t` of `dialogue` (see the module docs).
    pub fn window_key(&self, dialogue: &Dialogue, t: usize) -> u64 {
        let order = reading_order(dialogue);
        let turns: Vec<serde_json::Value> = order[self.start(t)..=t]
            .iter()
            .map(|(s, i)| turn_json(s, *i))
            .collect();
        let v = serde_json::json!({"speakers": dialogue.speakers, "turns": turns});
        seed::fnv1a(v.to_string().as_bytes())
    }

    /// Reads the tuple file once (absent: nothing to read).
    fn load(&self, st: &mut State) -> Result<()> {
        if st.loaded {
            return Ok(());
        }
        st.loaded = true;
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::data_read(&self.file, e)),
        };
        let whole = match text.rfind('\n') {
            Some(p) => &text[..p],
            None => "",
        };
        for (n, line) in whole.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = Some(format!("line {}", n + 1));
            if n == 0 {
                let h: Header = serde_json::from_str(line)
                    .map_err(|e| Error::data(&self.file, at.clone(), format!("bad header: {e}")))?;
                let want = format!("{:016x}", self.key);
                if h.format != TUPLE_FORMAT || h.teacher_key != want {
                    return Err(Error::data(
                        &self.file,
                        at,
                        format!(
                            "header says format `{}`, teacher key {}; expected `{TUPLE_FORMAT}`, {want} (remove the file to rebuild it)",
                            h.format, h.teacher_key
                        ),
                    ));
                }
                continue;
            }
            let tuple: TurnTuple = serde_json::from_str(line)
                .map_err(|e| Error::data(&self.file, at.clone(), format!("bad tuple: {e}")))?;
            let key = u64::from_str_radix(&tuple.key, 16).map_err(|_| {
                Error::data(&self.file, at, format!("bad window key `{}`", tuple.key))
            })?;
            if self.incremental
                && let Some(e) = tuple.bank_parse_errors
            {
                st.prefixes
                    .insert(key, Arc::new((tuple.snapshot.clone(), e)));
            }
            let slot: Slot = Arc::new(OnceLock::new());
            let _ = slot.set(Ok(Arc::new(tuple)));
            st.slots.insert(key, slot);
        }
        Ok(())
    }

    /// Appends one tuple line (and the header first when the file is new or empty).
    fn append(&self, tuple: &TurnTuple) -> Result<()> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let io = |e: std::io::Error| {
            Error::backend("agent memory-r1", format!("{}: {e}", self.file.display()))
        };
        if let Some(dir) = self.file.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut buf = String::new();
        if len == 0 {
            let h = Header {
                format: TUPLE_FORMAT.into(),
                teacher_key: format!("{:016x}", self.key),
                teacher: self.lm.describe(),
                history_turns: self.history_turns,
            };
            buf.push_str(&serde_json::to_string(&h).map_err(|e| Error::Invalid(e.to_string()))?);
            buf.push('\n');
        }
        buf.push_str(&serde_json::to_string(tuple).map_err(|e| Error::Invalid(e.to_string()))?);
        buf.push('\n');
        f.write_all(buf.as_bytes()).map_err(io)?;
        f.flush().map_err(io)
    }

    /// The teacher's facts of turn `u` (cached in memory by the turn's content hash).
    fn facts_of(&self, session: &Session, i: usize) -> Result<Facts> {
        let h = seed::fnv1a(turn_json(session, i).to_string().as_bytes());
        if let Some(f) = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .facts
            .get(&h)
        {
            return Ok(f.clone());
        }
        let step = DialogueStep {
            session,
            turns: &session.turns[i..=i],
        };
        let observation = step.render();
        let mut cx = EpisodeCx::new(
            self.lm.as_ref(),
            Box::new(memfactory_store_memory::InMemoryStore::new()),
            "memory-r1-teacher",
            0,
            seed::derive(h, "memory-r1/teacher-extract"),
        );
        let input = OpInput {
            question: "",
            observation: &observation,
            memory: &[],
        };
        let outs = self
            .extract
            .run_batch(std::slice::from_mut(&mut cx), &[input])?;
        check_outputs(self.extract.kind(), 1, outs.len())?;
        let out = outs.into_iter().next().unwrap_or_default();
        let facts: Facts = Arc::new((out.items, out.parse_error));
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .facts
            .insert(h, facts.clone());
        Ok(facts)
    }

    /// Builds the tuple of turn `t` (window key `key`) with the teacher.
    fn build(
        &self,
        agent: &MemoryR1,
        dialogue: &Dialogue,
        t: usize,
        key: u64,
    ) -> Result<TurnTuple> {
        let order = reading_order(dialogue);
        let window = self.start(t);
        let mut start = window;
        let mut cx = EpisodeCx::new(
            self.lm.as_ref(),
            Box::new(memfactory_store_memory::InMemoryStore::new()),
            "memory-r1-teacher",
            0,
            seed::derive(key, "memory-r1/teacher-bank"),
        );
        let mut errors = 0;
        // Incremental: the window keys of positions 0..=t (a bank before position p is kept
        // under p's key), and the bank before the latest position built so far, continued.
        let keys: Vec<u64> = if self.incremental {
            (0..=t).map(|p| self.window_key(dialogue, p)).collect()
        } else {
            Vec::new()
        };
        if self.incremental {
            let prefix = {
                let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                (1..=t)
                    .rev()
                    .find_map(|p| st.prefixes.get(&keys[p]).map(|b| (p, b.clone())))
            };
            if let Some((p, bank)) = prefix {
                let adds = bank
                    .0
                    .iter()
                    .map(|item| MemoryEdit::Add { item: item.clone() })
                    .collect();
                cx.apply("teacher-prefix", adds, None)?;
                errors = bank.1;
                start = p;
            }
        }
        let ops = self.ops();
        for (pos, &(session, i)) in order.iter().enumerate().take(t).skip(start) {
            let facts = self.facts_of(session, i)?;
            errors += usize::from(facts.1.is_some());
            let step = DialogueStep {
                session,
                turns: &session.turns[i..=i],
            };
            agent.manage_facts(
                &ops,
                &step,
                std::slice::from_ref(&facts.0),
                std::slice::from_mut(&mut cx),
            )?;
            if self.incremental {
                // pos < t, so position pos + 1 has its key.
                let bank: Prefix = Arc::new((cx.memory()?, errors + cx.episode.parse_errors()));
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .prefixes
                    .insert(keys[pos + 1], bank);
            }
        }
        errors += cx.episode.parse_errors();
        let bank_errors = errors;
        let mut snapshot = cx.memory()?;
        for item in &mut snapshot {
            item.embedding = None;
        }
        let (session, i) = order[t];
        let facts = self.facts_of(session, i)?;
        errors += usize::from(facts.1.is_some());
        Ok(TurnTuple {
            key: format!("{key:016x}"),
            turn: session.turns[i].id.clone(),
            turn_index: t,
            history: t - window,
            snapshot,
            facts: facts.0.clone(),
            teacher_parse_errors: errors,
            bank_parse_errors: Some(bank_errors),
        })
    }

    /// The tuple of turn `t`: from memory or the file, else built (and appended to the file)
    /// by this call, or waited for when another worker builds it. Also says whether it was
    /// built here.
    pub fn tuple(
        &self,
        agent: &MemoryR1,
        dialogue: &Dialogue,
        t: usize,
        cx: &EpisodeCx<'_>,
    ) -> Result<(Arc<TurnTuple>, bool)> {
        let key = self.window_key(dialogue, t);
        let (slot, mine) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.load(&mut st)?;
            match st.slots.get(&key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s: Slot = Arc::new(OnceLock::new());
                    st.slots.insert(key, s.clone());
                    (s, true)
                }
            }
        };
        if mine {
            // Incremental builds run one at a time (waiting outside the LM's batching), so
            // each continues the banks the earlier ones left.
            let mut _serial = None;
            if self.incremental {
                cx.wait_outside_lm(&mut || {
                    _serial = Some(self.build_lock.lock().unwrap_or_else(|e| e.into_inner()));
                });
            }
            let built = self
                .build(agent, dialogue, t, key)
                .and_then(|tuple| self.append(&tuple).map(|()| Arc::new(tuple)));
            match built {
                Ok(tuple) => {
                    let _ = slot.set(Ok(tuple.clone()));
                    return Ok((tuple, true));
                }
                Err(e) => {
                    let _ = slot.set(Err(e.to_string()));
                    let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    if st.slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                        st.slots.remove(&key);
                    }
                    return Err(e);
                }
            }
        }
        if slot.get().is_none() {
            cx.wait_outside_lm(&mut || {
                slot.wait();
            });
        }
        match slot.wait() {
            Ok(t) => Ok((t.clone(), false)),
            Err(e) => Err(Error::backend(
                "agent memory-r1",
                format!("the teacher's tuple {key:016x} could not be built: {e}"),
            )),
        }
    }
}

/// The reading-order position of the sample's linked turn (`meta.linked_turn`).
pub fn linked_position(sample: &Sample, dialogue: &Dialogue) -> Result<usize> {
    let Some(id) = sample.meta.get("linked_turn").and_then(|v| v.as_str()) else {
        return Err(Error::config(
            "agent.stage",
            format!(
                "stage `manager-turn` trains the manager on the dialogue turn each question's \
                 evidence links it to, but sample `{}` names no linked turn (`meta.linked_turn`); \
                 load LoCoMo with `link_turn = \"first\"` in the data table \
                 (`[data.train] kind = \"locomo\"`)",
                sample.id
            ),
        ));
    };
    reading_order(dialogue)
        .iter()
        .position(|(s, i)| s.turns[*i].id == id)
        .ok_or_else(|| {
            Error::config(
                "agent.stage",
                format!(
                    "sample `{}` is linked to turn `{id}`, which its dialogue does not hold \
                     (a `window_turns` that cuts before it?)",
                    sample.id
                ),
            )
        })
}

/// The episode of stage `manager-turn` on every path of the group (see the module docs).
pub(crate) fn run_turn_group(
    agent: &MemoryR1,
    teacher: &Teacher,
    sample: &Sample,
    dialogue: &Dialogue,
    cxs: &mut [EpisodeCx<'_>],
) -> Result<()> {
    let t = linked_position(sample, dialogue)?;
    let (tuple, built) = teacher.tuple(agent, dialogue, t, &cxs[0])?;
    let (session, i) = reading_order(dialogue)[t];

    let mut snapshot = tuple.snapshot.clone();
    if let Some(embedder) = cxs[0].embedder()
        && !snapshot.is_empty()
    {
        let texts: Vec<&str> = snapshot.iter().map(|m| m.content.as_str()).collect();
        let vectors = embedder.embed(&texts)?;
        if vectors.len() != snapshot.len() {
            return Err(Error::backend(
                "embedder",
                format!(
                    "asked for {} embeddings, got {}",
                    snapshot.len(),
                    vectors.len()
                ),
            ));
        }
        for (m, v) in snapshot.iter_mut().zip(vectors) {
            m.embedding = Some(v);
        }
    }
    let listed: Vec<serde_json::Value> = tuple
        .facts
        .iter()
        .map(|f| {
            let mut o = serde_json::Map::new();
            o.insert("fact".into(), f.content.clone().into());
            o.insert("speaker".into(), f.speaker.clone().into());
            serde_json::Value::Object(o)
        })
        .collect();
    let facts_note = format!("[{}] {}", tuple.turn, serde_json::Value::Array(listed));
    for cx in cxs.iter_mut() {
        cx.note(
            "turn-tuple",
            format!(
                "{} {} {}: {} memories from {} turns, {} facts",
                tuple.key,
                tuple.turn,
                if built { "built" } else { "reused" },
                tuple.snapshot.len(),
                tuple.history,
                tuple.facts.len()
            ),
        );
        let adds = snapshot
            .iter()
            .map(|item| MemoryEdit::Add { item: item.clone() })
            .collect();
        cx.apply(SNAPSHOT_OP, adds, None)?;
        cx.note("facts", facts_note.clone());
    }
    let step = DialogueStep {
        session,
        turns: &session.turns[i..=i],
    };
    let facts = vec![tuple.facts.clone(); cxs.len()];
    agent.manage_facts(&agent.ops(), &step, &facts, cxs)?;
    agent.answer_phase(sample, cxs)
}

/// `<dir>/<teacher key>.jsonl`.
pub fn tuple_file(dir: &Path, key: u64) -> PathBuf {
    dir.join(format!("{key:016x}.jsonl"))
}
