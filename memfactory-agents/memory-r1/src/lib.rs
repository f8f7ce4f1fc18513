//! # memfactory-agent-memory-r1
//!
//! The Memory-R1 paradigm (arXiv 2508.19828), registered as agent kind `memory-r1`: a
//! **Memory Manager** that builds a memory bank from a multi-session dialogue with
//! ADD / UPDATE / DELETE / NOOP decisions (Mem0 style), and an **Answer Agent** that
//! retrieves candidates and performs *Memory Distillation* (it lists the memories relevant to
//! the question, then answers). In the paper both agents are trained separately with
//! PPO/GRPO: the manager's reward is the exact match of a *frozen* answer agent's answer
//! after the manager's operations, the answer agent's reward is the exact match of its own
//! answer. Data: LoCoMo-style dialogues (speakers, dated sessions, turns with ids
//! `D<session>:<n>`), one question per sample.
//!
//! ## How it fits in MemFactory
//!
//! The paradigm owns no prompt and parses no model output: it composes five memory ops,
//! each built through the registry from a sub-table of `[agent]` and driven through
//! [`MemoryOp::run_batch`] over the group's paths in lockstep — every LM call of an episode
//! is one batched call over the paths that make it. The default ops are
//! `memfactory-op-extract` (role `extract`), `memfactory-op-retrieve` (no LM),
//! `memfactory-op-update` (role `manage`) and `memfactory-op-distill` (role `answer`); any
//! registered op with the same contract can replace one. Each op may carry its own
//! `model = {...}` sub-table (a frozen model for its role) — that is the op's business.
//! Memory-R1's stage 1 trains role `manage` with a frozen answer model on
//! `[agent.answer] model`; stage 2 trains role `answer` with frozen `[agent.extract] model`
//! and `[agent.manage] model`.
//!
//! ## Episode
//!
//! 1. **Bank building.** Sessions are walked in order; within a session, steps of
//!    `turns_per_step` turns (a step never crosses a session; `max_turns` > 0 keeps only the
//!    first `max_turns` turns of the dialogue). Each step's turns are rendered one per line
//!    ([`render_turn`]): `[D1:3] Caroline (1:56 pm on 8 May, 2023): text` (the parenthesis
//!    is left out when the session has no date; newlines inside a turn become spaces).
//!    - `extract` runs on every path (one LM call) and returns facts (`items`, ids `""`).
//!      A note `facts` lists them; an extraction `parse_error` is recorded as an edit step
//!      with no edits (`cx.apply(<extract kind>, [], parse_error)`) so that format rewards
//!      count it.
//!    - Then, for fact index `j = 0, 1, …`: on every path that has a fact `j`, `related`
//!      retrieves the memories related to the fact (query = the fact text, at most
//!      `related_k` kept) and `manage` decides one edit. Paths may have different numbers
//!      of facts: the paths are reordered (stably, most facts first) so that the paths with
//!      a fact `j` form a prefix of the group's slice, each fact index makes **one** batched
//!      call over that prefix, and the original order is restored afterwards.
//!    - The fact text shown to the manager is the fact, prefixed with `Speaker: ` when the
//!      fact has a speaker whose name it does not already contain ([`fact_text`]).
//!    - Before they are applied, the manager's edits are enriched: an `Add` item gets the
//!      fact's speaker, the session date as `time`, `meta.turn` = the step's turn ids joined
//!      by `,` (e.g. `D1:1,D1:2`) and, when the run has an `[embedder]`, the embedding of its
//!      content; an `Update` gets the embedding of its new content. Embeddings of one fact
//!      index are computed in one embedder call for all paths. The edits are applied with
//!      `cx.apply(<manage kind>, edits, parse_error)`.
//! 2. **Answer.** `retrieve` runs with the sample's question (note `candidates`: the ids),
//!    then `answer` sees the question and the candidates; its `text` is the episode's
//!    answer (no text → empty answer, with a note `answer`), its `items` the selected
//!    memories (note `selected`: the ids). A `parse_error` of either op is recorded as an
//!    edit step with no edits.
//!
//! ## Bank cache (evaluation only)
//!
//! LoCoMo asks ~150 questions per conversation. With `bank_cache = true` the bank built for
//! `(dialogue, path)` — key = FNV-1a of the dialogue's JSON ([`dialogue_key`]) and the
//! episode's path index — is built once and replayed for later questions on the same
//! dialogue. The build's LM seeds then derive from `(key, path)` ([`bank_seed`]), not from
//! the sample, so the bank is the same whichever question comes first (and, as a
//! consequence, does not depend on the run seed either). The episode that builds a bank
//! records the build's steps and a note `bank-cache` (`built <key>/<path>`); a later episode
//! replays the items into its fresh store with one `cx.apply("bank-cache", adds, None)`
//! (after re-recording the build's parse errors, one edit-less step each, so that format
//! rewards score a replayed bank like the built one) and
//! a note `bank-cache` (`reused <key>/<path>`). An episode whose bank another worker thread
//! is building waits for it through [`EpisodeCx::wait_outside_lm`], so cross-sample
//! batching does not wait on it. A failed build is reported to its waiters and forgotten
//! (a later question retries). [`Paradigm::caches_across_samples`] returns `bank_cache`, so
//! the trainer refuses such an agent.
//!
//! ## Recipe table
//!
//! ```toml
//! [agent]
//! kind = "memory-r1"
//! paths = 1                 # memory paths per question, 1..=1024 (GRPO sets it to group_size)
//! turns_per_step = 1        # dialogue turns per extraction call (>= 1; a step never crosses a session)
//! max_turns = 0             # 0 = read every turn; else only the first N turns of the dialogue
//! related_k = 5             # at most this many related memories shown to the manager per fact (>= 1)
//! bank_cache = false        # eval only: build each conversation's bank once per path, reuse it
//! stage = "trajectory"      # or "manager-turn": Memory-R1's per-turn manager stage (module `turns`)
//! [agent.extract]           # default { kind = "extract" }
//! [agent.related]           # default { kind = "retrieve", k = <related_k> }
//! [agent.manage]            # default { kind = "update" }
//! [agent.retrieve]          # default { kind = "retrieve", k = 30, per_speaker = true }
//! [agent.answer]            # default { kind = "distill" }
//! [agent.teacher]           # stage "manager-turn" only (required there)
//! model = { kind = "openai", ... }   # the teacher's own model (required)
//! history_turns = 50        # the snapshot is built from this many preceding turns (0 = all)
//! incremental = false       # with history_turns = 0: continue the bank of the latest turn
//!                           # built so far instead of rebuilding from the first turn
//! tuples_dir = "runs/memory-r1-turns"   # where the tuple file is kept and reused
//! extract = "extract"       # the teacher's ops, defaults as the agent's
//! related = "retrieve"
//! manage = "update"
//! ```
//!
//! Stage `manager-turn` (see [`turns`]) replaces the bank building: every path starts from
//! the same teacher snapshot of the turns before the sample's linked turn, the policy's
//! `manage` op acts on that turn's teacher-extracted facts, and the answer phase is the
//! same. Stage 2 of the paper (the answer agent trained with the manager fixed) is the
//! trajectory stage with frozen `[agent.extract] model` and `[agent.manage] model` and
//! `[train] roles = ["answer"]`.
//!
//! An op table may be written as a kind name (`answer = "distill"`). A table that omits
//! `kind`, or names the default kind, is **merged over the default table** (its keys win):
//! `[agent.retrieve] k = 10` means `{ kind = "retrieve", k = 10, per_speaker = true }`. A
//! table naming another kind is used as written. `related_k` is a cap the paradigm applies
//! to whatever `related` returns; it is also the default `k` of the default `related`
//! table, so the two agree unless `[agent.related] k` says otherwise (then the smaller
//! wins).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub mod turns;

use memfactory_core::{
    Cfg, Dialogue, EpisodeCx, Error, MemoryEdit, MemoryItem, MemoryOp, OpInput, OpOutput, Paradigm,
    Result, Sample, Session, Turn,
    op::{op_table, sub_op},
    seed,
};

/// Registry kind of this paradigm.
pub const KIND: &str = "memory-r1";

/// Op name under which replayed (cached) banks are applied.
pub const BANK_CACHE_OP: &str = "bank-cache";

/// A built bank: its items, and the parse errors its build recorded (`(op, error)`), which
/// a replaying episode records too so that format rewards see the same bank quality.
type BuiltBank = (Vec<MemoryItem>, Vec<(String, String)>);

/// What a bank-cache slot ends up holding: the built bank, or why the build failed.
type CachedBank = std::result::Result<Arc<BuiltBank>, String>;

/// A bank-cache slot, set once by the episode that builds it.
type Slot = Arc<OnceLock<CachedBank>>;

/// The Memory-R1 paradigm.
pub struct MemoryR1 {
    /// Memory paths per question.
    pub paths: usize,
    /// Dialogue turns per extraction call.
    pub turns_per_step: usize,
    /// Read only the first `max_turns` turns (0 = all).
    pub max_turns: usize,
    /// At most this many related memories are shown to the manager per fact.
    pub related_k: usize,
    /// Build each conversation's bank once per path and reuse it (evaluation only).
    pub bank_cache: bool,
    /// Fact extraction (`[agent.extract]`).
    pub extract: Box<dyn MemoryOp>,
    /// Retrieval of the memories related to a fact (`[agent.related]`).
    pub related: Box<dyn MemoryOp>,
    /// The memory manager: one edit per fact (`[agent.manage]`).
    pub manage: Box<dyn MemoryOp>,
    /// Retrieval of the answer candidates (`[agent.retrieve]`).
    pub retrieve: Box<dyn MemoryOp>,
    /// The answer agent with memory distillation (`[agent.answer]`).
    pub answer: Box<dyn MemoryOp>,
    /// Which training stage an episode runs (`stage`).
    pub stage: Stage,
    /// The teacher of stage `manager-turn` (`[agent.teacher]`).
    pub teacher: Option<turns::Teacher>,
    cache: Mutex<HashMap<(u64, usize), Slot>>,
}

/// What an episode of the paradigm runs (`[agent] stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `"trajectory"` (default): every path builds its own bank over the dialogue with the
    /// agent's ops, then answers.
    Trajectory,
    /// `"manager-turn"`: Memory-R1's per-turn manager stage ([`turns`]).
    ManagerTurn,
}

/// One extraction step: consecutive turns of one session.
#[derive(Debug, Clone, Copy)]
pub struct DialogueStep<'a> {
    /// The session the turns belong to.
    pub session: &'a Session,
    /// The turns (at least one).
    pub turns: &'a [Turn],
}

impl DialogueStep<'_> {
    /// The turns rendered one per line with [`render_turn`].
    pub fn render(&self) -> String {
        let date = self.session.date.as_deref();
        self.turns
            .iter()
            .map(|t| render_turn(t, date))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The turn ids joined by `,` (the `turn` meta of the memories added at this step).
    pub fn turn_ids(&self) -> String {
        self.turns
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One turn as the extractor sees it: `[D1:3] Caroline (1:56 pm on 8 May, 2023): text`,
/// without the parenthesis when `date` is `None`; line breaks in the text become spaces.
pub fn render_turn(turn: &Turn, date: Option<&str>) -> String {
    let text: String = turn
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match date {
        Some(d) => format!("[{}] {} ({}): {}", turn.id, turn.speaker, d, text),
        None => format!("[{}] {}: {}", turn.id, turn.speaker, text),
    }
}

/// The extraction steps of `dialogue`: sessions in order, `turns_per_step` turns at a time
/// (the last step of a session may be shorter), only the first `max_turns` turns of the
/// dialogue when `max_turns > 0`. Sessions without turns give no step.
pub fn dialogue_steps(
    dialogue: &Dialogue,
    turns_per_step: usize,
    max_turns: usize,
) -> Vec<DialogueStep<'_>> {
    let mut left = if max_turns == 0 {
        usize::MAX
    } else {
        max_turns
    };
    let mut out = Vec::new();
    for session in &dialogue.sessions {
        if left == 0 {
            break;
        }
        let take = session.turns.len().min(left);
        left -= take;
        for turns in session.turns[..take].chunks(turns_per_step.max(1)) {
            out.push(DialogueStep { session, turns });
        }
    }
    out
}

/// The text of a fact as the manager sees it: the fact's content, prefixed with
/// `Speaker: ` when it has a speaker whose name the content does not already contain
/// (case-insensitive).
pub fn fact_text(fact: &MemoryItem) -> String {
    match fact.speaker.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() && !fact.content.to_lowercase().contains(&s.to_lowercase()) => {
            format!("{s}: {}", fact.content)
        }
        _ => fact.content.clone(),
    }
}

/// The bank-cache key of a dialogue: FNV-1a 64 of its JSON serialization.
pub fn dialogue_key(dialogue: &Dialogue) -> u64 {
    let json = serde_json::to_vec(dialogue).unwrap_or_default();
    seed::fnv1a(&json)
}

/// The episode seed under which path `path` of the cached bank of dialogue `key` is built
/// (LM call seeds derive from it as usual).
pub fn bank_seed(key: u64, path: usize) -> u64 {
    seed::derive_n(seed::derive(key, "memory-r1/bank"), path as u64)
}

/// Reorders `v` so that the new `v[i]` is the old `v[order[i]]` (`order` is a permutation).
fn permute<T>(v: &mut [T], order: &[usize]) {
    let mut at: Vec<usize> = (0..v.len()).collect();
    for (i, want) in order.iter().enumerate() {
        if let Some(j) = at.iter().position(|o| o == want) {
            v.swap(i, j);
            at.swap(i, j);
        }
    }
}

/// The inverse permutation: `permute(v, order)` then `permute(v, &inverse(order))` is the
/// identity.
fn inverse(order: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; order.len()];
    for (i, &o) in order.iter().enumerate() {
        inv[o] = i;
    }
    inv
}

/// Records an op's parse error (when there is one) as an edit step without edits, so that
/// [`memfactory_core::Episode::parse_errors`] and format rewards count it.
fn record_parse_error(cx: &mut EpisodeCx<'_>, op: &str, parse_error: Option<String>) -> Result<()> {
    if let Some(e) = parse_error {
        cx.apply(op, Vec::new(), Some(e))?;
    }
    Ok(())
}

fn ids(items: &[MemoryItem]) -> String {
    items
        .iter()
        .map(|i| i.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn check_outputs(op: &str, asked: usize, got: usize) -> Result<()> {
    if asked != got {
        return Err(Error::Invalid(format!(
            "op `{op}` returned {got} outputs for {asked} episodes"
        )));
    }
    Ok(())
}

/// Releases bank-cache claims that were not filled (build error or panic): waiters get the
/// error and the slot leaves the map, so a later question retries.
struct Claims<'m> {
    map: &'m Mutex<HashMap<(u64, usize), Slot>>,
    slots: Vec<((u64, usize), Slot)>,
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (key, slot) in &self.slots {
            if slot.get().is_none() {
                let _ = slot.set(Err("the episode building it failed or was abandoned".into()));
            }
            if matches!(slot.get(), Some(Err(_)))
                && map.get(key).is_some_and(|s| Arc::ptr_eq(s, slot))
            {
                map.remove(key);
            }
        }
    }
}

/// The ops that build a bank: the agent's own, or the teacher's (stage `manager-turn`).
pub(crate) struct BankOps<'a> {
    pub(crate) extract: &'a dyn MemoryOp,
    pub(crate) related: &'a dyn MemoryOp,
    pub(crate) manage: &'a dyn MemoryOp,
    pub(crate) related_k: usize,
}

impl MemoryR1 {
    /// The agent's own bank-building ops.
    pub(crate) fn ops(&self) -> BankOps<'_> {
        BankOps {
            extract: self.extract.as_ref(),
            related: self.related.as_ref(),
            manage: self.manage.as_ref(),
            related_k: self.related_k,
        }
    }

    /// Builds the memory bank of `dialogue` on every episode of `cxs`, in lockstep.
    pub fn build_bank(&self, dialogue: &Dialogue, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        for step in dialogue_steps(dialogue, self.turns_per_step, self.max_turns) {
            self.bank_step(&self.ops(), &step, cxs)?;
        }
        Ok(())
    }

    /// One extraction step and the manager's decisions on its facts.
    fn bank_step(
        &self,
        ops: &BankOps<'_>,
        step: &DialogueStep<'_>,
        cxs: &mut [EpisodeCx<'_>],
    ) -> Result<()> {
        if cxs.is_empty() {
            return Ok(());
        }
        let observation = step.render();
        let input = OpInput {
            question: "",
            observation: &observation,
            memory: &[],
        };
        let inputs = vec![input; cxs.len()];
        let outs = ops.extract.run_batch(cxs, &inputs)?;
        check_outputs(ops.extract.kind(), cxs.len(), outs.len())?;
        let mut facts: Vec<Vec<MemoryItem>> = Vec::with_capacity(cxs.len());
        for (cx, out) in cxs.iter_mut().zip(outs) {
            let listed: Vec<serde_json::Value> = out
                .items
                .iter()
                .map(|f| {
                    // Keys inserted in sorted order: the text is the same with or without
                    // serde_json's `preserve_order`.
                    let mut o = serde_json::Map::new();
                    o.insert("fact".into(), f.content.clone().into());
                    o.insert("speaker".into(), f.speaker.clone().into());
                    serde_json::Value::Object(o)
                })
                .collect();
            cx.note(
                "facts",
                format!("[{}] {}", step.turn_ids(), serde_json::Value::Array(listed)),
            );
            record_parse_error(cx, ops.extract.kind(), out.parse_error)?;
            facts.push(out.items);
        }

        // Paths with more facts first (stable), so that the paths having fact j form a prefix.
        let mut order: Vec<usize> = (0..cxs.len()).collect();
        order.sort_by_key(|&i| (Reverse(facts[i].len()), i));
        permute(cxs, &order);
        permute(&mut facts, &order);
        let result = self.manage_facts(ops, step, &facts, cxs);
        permute(cxs, &inverse(&order));
        result
    }

    /// The manager's loop over fact indices; `facts[i]` belongs to `cxs[i]` and the counts
    /// are non-increasing.
    pub(crate) fn manage_facts(
        &self,
        ops: &BankOps<'_>,
        step: &DialogueStep<'_>,
        facts: &[Vec<MemoryItem>],
        cxs: &mut [EpisodeCx<'_>],
    ) -> Result<()> {
        let most = facts.first().map_or(0, Vec::len);
        for j in 0..most {
            let m = facts.iter().take_while(|f| f.len() > j).count();
            let sub = &mut cxs[..m];
            let texts: Vec<String> = facts[..m].iter().map(|f| fact_text(&f[j])).collect();

            let rel_inputs: Vec<OpInput<'_>> = texts
                .iter()
                .map(|t| OpInput {
                    question: t,
                    observation: t,
                    memory: &[],
                })
                .collect();
            let related = ops.related.run_batch(sub, &rel_inputs)?;
            check_outputs(ops.related.kind(), m, related.len())?;
            let mut shown: Vec<Vec<MemoryItem>> = Vec::with_capacity(m);
            for (cx, out) in sub.iter_mut().zip(related) {
                record_parse_error(cx, ops.related.kind(), out.parse_error)?;
                let mut items = out.items;
                items.truncate(ops.related_k);
                shown.push(items);
            }

            let inputs: Vec<OpInput<'_>> = texts
                .iter()
                .zip(&shown)
                .map(|(t, mem)| OpInput {
                    question: "",
                    observation: t,
                    memory: mem,
                })
                .collect();
            let outs = ops.manage.run_batch(sub, &inputs)?;
            check_outputs(ops.manage.kind(), m, outs.len())?;
            let facts_j: Vec<&MemoryItem> = facts[..m].iter().map(|f| &f[j]).collect();
            let outs = self.enrich(sub, step, &facts_j, outs)?;
            for (cx, out) in sub.iter_mut().zip(outs) {
                cx.apply(ops.manage.kind(), out.edits, out.parse_error)?;
            }
        }
        Ok(())
    }

    /// Fills in what the manager leaves to the paradigm: speaker, time, source turns and
    /// embeddings (one embedder call for all paths).
    fn enrich(
        &self,
        cxs: &[EpisodeCx<'_>],
        step: &DialogueStep<'_>,
        facts: &[&MemoryItem],
        mut outs: Vec<OpOutput>,
    ) -> Result<Vec<OpOutput>> {
        let turn_ids = step.turn_ids();
        let mut texts: Vec<String> = Vec::new();
        for (out, fact) in outs.iter_mut().zip(facts) {
            for edit in &mut out.edits {
                match edit {
                    MemoryEdit::Add { item } => {
                        if fact.speaker.is_some() {
                            item.speaker = fact.speaker.clone();
                        }
                        if step.session.date.is_some() {
                            item.time = step.session.date.clone();
                        }
                        item.meta.insert("turn".into(), turn_ids.clone());
                        texts.push(item.content.clone());
                    }
                    MemoryEdit::Update { content, .. } => texts.push(content.clone()),
                    _ => {}
                }
            }
        }
        let Some(embedder) = cxs.first().and_then(|cx| cx.embedder()) else {
            return Ok(outs);
        };
        if texts.is_empty() {
            return Ok(outs);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs)?;
        if vectors.len() != texts.len() {
            return Err(Error::backend(
                "embedder",
                format!(
                    "asked for {} embeddings, got {}",
                    texts.len(),
                    vectors.len()
                ),
            ));
        }
        let mut vectors = vectors.into_iter();
        for out in &mut outs {
            for edit in &mut out.edits {
                match edit {
                    MemoryEdit::Add { item } => item.embedding = vectors.next(),
                    MemoryEdit::Update { embedding, .. } => *embedding = vectors.next(),
                    _ => {}
                }
            }
        }
        Ok(outs)
    }

    /// Bank building with the bank cache: builds the banks no episode has claimed yet (in
    /// lockstep, seeds from [`bank_seed`]), then replays the others' banks.
    fn cached_bank(&self, dialogue: &Dialogue, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let key = dialogue_key(dialogue);
        let mut mine: Vec<usize> = Vec::new();
        let mut theirs: Vec<(usize, Slot)> = Vec::new();
        let mut claims = Claims {
            map: &self.cache,
            slots: Vec::new(),
        };
        {
            // Every path of the group is claimed under one lock: a group never holds some
            // claims while waiting for another group's.
            let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (i, cx) in cxs.iter().enumerate() {
                let k = (key, cx.episode.path);
                match map.get(&k) {
                    Some(slot) => theirs.push((i, slot.clone())),
                    None => {
                        let slot: Slot = Arc::new(OnceLock::new());
                        map.insert(k, slot.clone());
                        claims.slots.push((k, slot));
                        mine.push(i);
                    }
                }
            }
        }

        if !mine.is_empty() {
            let mut order = mine.clone();
            order.extend(theirs.iter().map(|(i, _)| *i));
            permute(cxs, &order);
            let m = mine.len();
            let saved: Vec<u64> = cxs[..m].iter().map(|cx| cx.episode.seed).collect();
            for cx in cxs[..m].iter_mut() {
                cx.episode.seed = bank_seed(key, cx.episode.path);
            }
            let built = self.build_bank(dialogue, &mut cxs[..m]);
            for (cx, s) in cxs[..m].iter_mut().zip(saved) {
                cx.episode.seed = s;
            }
            let filled = built.and_then(|()| {
                for (cx, (_, slot)) in cxs[..m].iter_mut().zip(&claims.slots) {
                    let items = cx.memory()?;
                    let errors = cx
                        .episode
                        .edit_parse_errors()
                        .map(|(op, e)| (op.to_string(), e.to_string()))
                        .collect::<Vec<_>>();
                    cx.note(
                        BANK_CACHE_OP,
                        format!("built {key:016x}/{}", cx.episode.path),
                    );
                    let _ = slot.set(Ok(Arc::new((items, errors))));
                }
                Ok(())
            });
            permute(cxs, &inverse(&order));
            filled?;
        }
        drop(claims);

        for (i, slot) in theirs {
            let cx = &mut cxs[i];
            let bank = match slot.get() {
                Some(b) => b.clone(),
                None => {
                    let mut got: Option<CachedBank> = None;
                    cx.wait_outside_lm(&mut || got = Some(slot.wait().clone()));
                    match got {
                        Some(b) => b,
                        None => slot.get().cloned().ok_or_else(|| {
                            Error::Invalid(
                                "the LM's wait_outside did not run the wait it was given".into(),
                            )
                        })?,
                    }
                }
            };
            let path = cx.episode.path;
            let built = bank.map_err(|e| {
                Error::backend(
                    "agent memory-r1",
                    format!("the cached bank {key:016x}/{path} could not be built: {e}"),
                )
            })?;
            cx.note(BANK_CACHE_OP, format!("reused {key:016x}/{path}"));
            let (items, errors) = built.as_ref();
            for (op, e) in errors {
                cx.apply(op, vec![], Some(e.clone()))?;
            }
            let adds = items
                .iter()
                .map(|item| MemoryEdit::Add { item: item.clone() })
                .collect();
            cx.apply(BANK_CACHE_OP, adds, None)?;
        }
        Ok(())
    }

    /// Retrieval of candidates and the answer agent, on every episode in lockstep.
    pub(crate) fn answer_phase(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let n = cxs.len();
        let input = OpInput {
            question: &sample.question,
            observation: "",
            memory: &[],
        };
        let rets = self.retrieve.run_batch(cxs, &vec![input; n])?;
        check_outputs(self.retrieve.kind(), n, rets.len())?;
        let mut candidates: Vec<Vec<MemoryItem>> = Vec::with_capacity(n);
        for (cx, out) in cxs.iter_mut().zip(rets) {
            record_parse_error(cx, self.retrieve.kind(), out.parse_error)?;
            cx.note("candidates", ids(&out.items));
            candidates.push(out.items);
        }
        let inputs: Vec<OpInput<'_>> = candidates
            .iter()
            .map(|c| OpInput {
                question: &sample.question,
                observation: "",
                memory: c,
            })
            .collect();
        let outs = self.answer.run_batch(cxs, &inputs)?;
        check_outputs(self.answer.kind(), n, outs.len())?;
        for (cx, out) in cxs.iter_mut().zip(outs) {
            record_parse_error(cx, self.answer.kind(), out.parse_error)?;
            cx.note("selected", ids(&out.items));
            cx.episode.answer = Some(match out.text {
                Some(t) => t,
                None => {
                    cx.note(
                        "answer",
                        format!(
                            "op `{}` returned no text; the answer is empty",
                            self.answer.kind()
                        ),
                    );
                    String::new()
                }
            });
        }
        Ok(())
    }
}

impl Paradigm for MemoryR1 {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn paths(&self) -> usize {
        self.paths
    }

    fn caches_across_samples(&self) -> bool {
        self.bank_cache
    }

    /// The agent's five ops' (e.g. stage 1's frozen `[agent.answer] model`, stage 2's
    /// frozen `[agent.extract] model` and `[agent.manage] model`). The teacher's model is
    /// not listed: its calls run on scratch episodes and never enter a trajectory.
    fn frozen_roles(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for op in [
            &self.extract,
            &self.related,
            &self.manage,
            &self.retrieve,
            &self.answer,
        ] {
            for r in op.frozen_roles() {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }

    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        if cxs.is_empty() {
            return Ok(());
        }
        let Some(dialogue) = sample.dialogue.as_ref() else {
            return Err(Error::config(
                "agent.kind",
                format!(
                    "agent `memory-r1` reads multi-session dialogues, but sample `{}` has no \
                     dialogue; use a dialogue dataset (e.g. `locomo`)",
                    sample.id
                ),
            ));
        };
        if self.stage == Stage::ManagerTurn {
            let Some(teacher) = self.teacher.as_ref() else {
                return Err(Error::config(
                    "agent.teacher.model",
                    "stage `manager-turn` needs a teacher model",
                ));
            };
            return turns::run_turn_group(self, teacher, sample, dialogue, cxs);
        }
        if self.bank_cache {
            self.cached_bank(dialogue, cxs)?;
        } else {
            self.build_bank(dialogue, cxs)?;
        }
        self.answer_phase(sample, cxs)
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Paradigm>> {
    let paths = cfg.paths()?;
    let turns_per_step = cfg.get_checked(
        "turns_per_step",
        1usize,
        |n| *n >= 1,
        "at least 1 turn per extraction step",
    )?;
    let max_turns = cfg.get("max_turns", 0usize)?;
    let related_k = cfg.get_checked(
        "related_k",
        5usize,
        |n| *n >= 1,
        "at least 1 related memory per fact",
    )?;
    let bank_cache = cfg.get("bank_cache", false)?;
    let extract = sub_op(cfg, "extract", &op_table("extract", &[]))?;
    let related = sub_op(
        cfg,
        "related",
        &op_table("retrieve", &[("k", toml::Value::Integer(related_k as i64))]),
    )?;
    let manage = sub_op(cfg, "manage", &op_table("update", &[]))?;
    let retrieve = sub_op(
        cfg,
        "retrieve",
        &op_table(
            "retrieve",
            &[
                ("k", toml::Value::Integer(30)),
                ("per_speaker", toml::Value::Boolean(true)),
            ],
        ),
    )?;
    let answer = sub_op(cfg, "answer", &op_table("distill", &[]))?;
    let stage = match cfg.get("stage", "trajectory".to_string())?.as_str() {
        "trajectory" => Stage::Trajectory,
        "manager-turn" => Stage::ManagerTurn,
        other => {
            return Err(cfg.error(
                "stage",
                format!("expected \"trajectory\" or \"manager-turn\", found \"{other}\""),
            ));
        }
    };
    let teacher = match (stage, cfg.sub("teacher")?) {
        (Stage::ManagerTurn, None) => {
            return Err(cfg.error(
                "teacher",
                "stage = \"manager-turn\" needs a teacher table with its own model                  (`[agent.teacher] model = { kind = ..., ... }`) that builds the bank snapshots",
            ));
        }
        (Stage::Trajectory, Some(_)) => {
            return Err(cfg.error(
                "teacher",
                "only stage = \"manager-turn\" reads a teacher; remove it or set the stage",
            ));
        }
        (Stage::Trajectory, None) => None,
        (Stage::ManagerTurn, Some(mut tcfg)) => {
            let t = teacher_from_cfg(&mut tcfg, related_k, bank_cache)?;
            cfg.set_resolved("teacher", toml::Value::Table(tcfg.finish()?));
            Some(t)
        }
    };
    Ok(Box::new(MemoryR1 {
        paths,
        turns_per_step,
        max_turns,
        related_k,
        bank_cache,
        extract,
        related,
        manage,
        retrieve,
        answer,
        stage,
        teacher,
        cache: Mutex::new(HashMap::new()),
    }))
}

/// Reads `[agent.teacher]` (stage `manager-turn`): its model, ops, `history_turns` and
/// `tuples_dir`; the teacher key hashes the resolved table without `tuples_dir`.
fn teacher_from_cfg(tcfg: &mut Cfg, related_k: usize, bank_cache: bool) -> Result<turns::Teacher> {
    if bank_cache {
        return Err(Error::config(
            tcfg.path()
                .rsplit_once('.')
                .map_or("bank_cache", |(p, _)| p)
                .to_string()
                + ".bank_cache",
            "stage = \"manager-turn\" replays teacher snapshots, not banks: leave bank_cache off",
        ));
    }
    let Some(lm) = memfactory_core::op::model_from_cfg(tcfg, "model")? else {
        return Err(tcfg.error(
            "model",
            "the teacher needs its own model table (e.g. `model = { kind = \"openai\", ... }`,              or a `scripted` model in tests)",
        ));
    };
    let history_turns: usize = tcfg.get("history_turns", 50usize)?;
    let incremental: bool = tcfg.get("incremental", false)?;
    if incremental && history_turns != 0 {
        return Err(tcfg.error(
            "incremental",
            format!(
                "continues the bank of an earlier turn, which needs every preceding turn in the \
                 window: set history_turns = 0 (it is {history_turns}), or incremental = false"
            ),
        ));
    }
    let dir: String = tcfg.get("tuples_dir", turns::DEFAULT_TUPLES_DIR.to_string())?;
    if dir.trim().is_empty() {
        return Err(tcfg.error("tuples_dir", "must not be empty"));
    }
    let extract = sub_op(tcfg, "extract", &op_table("extract", &[]))?;
    let related = sub_op(
        tcfg,
        "related",
        &op_table("retrieve", &[("k", toml::Value::Integer(related_k as i64))]),
    )?;
    let manage = sub_op(tcfg, "manage", &op_table("update", &[]))?;
    let mut resolved = tcfg.clone().finish()?;
    resolved.remove("tuples_dir");
    if let Some(ctx) = lm.context_length() {
        let mut ops = resolved.clone();
        ops.remove("model");
        memfactory_core::config::check_token_budgets(&ops, tcfg.path(), ctx)?;
    }
    let key = seed::fnv1a(
        format!(
            "{}\n{}",
            turns::TUPLE_FORMAT,
            toml::to_string(&resolved).unwrap_or_default()
        )
        .as_bytes(),
    );
    Ok(turns::Teacher::new(
        lm,
        extract,
        related,
        manage,
        related_k,
        history_turns,
        turns::tuple_file(std::path::Path::new(&dir), key),
        key,
    )
    .with_incremental(incremental))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Paradigm> {
        kind: KIND,
        about: "Memory-R1: extract facts per dialogue step, manage them with ADD/UPDATE/DELETE/NOOP, answer from retrieved memories with distillation",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_and_its_inverse() {
        let mut v = vec!['a', 'b', 'c', 'd'];
        let order = [2, 0, 3, 1];
        permute(&mut v, &order);
        assert_eq!(v, ['c', 'a', 'd', 'b']);
        permute(&mut v, &inverse(&order));
        assert_eq!(v, ['a', 'b', 'c', 'd']);
    }

    #[test]
    fn turns_render_and_steps_split_within_sessions() {
        let turn = |id: &str, sp: &str, t: &str| Turn {
            id: id.into(),
            speaker: sp.into(),
            text: t.into(),
        };
        let d = Dialogue {
            speakers: vec!["A".into(), "B".into()],
            sessions: vec![
                Session {
                    index: 1,
                    date: Some("1:56 pm on 8 May, 2023".into()),
                    turns: vec![
                        turn("D1:1", "A", "hi\nthere"),
                        turn("D1:2", "B", "yo"),
                        turn("D1:3", "A", "bye"),
                    ],
                },
                Session {
                    index: 2,
                    date: None,
                    turns: vec![turn("D2:1", "B", "back")],
                },
            ],
        };
        let steps = dialogue_steps(&d, 2, 0);
        let rendered: Vec<String> = steps.iter().map(DialogueStep::render).collect();
        assert_eq!(
            rendered,
            [
                "[D1:1] A (1:56 pm on 8 May, 2023): hi there\n[D1:2] B (1:56 pm on 8 May, 2023): yo",
                "[D1:3] A (1:56 pm on 8 May, 2023): bye",
                "[D2:1] B: back",
            ]
        );
        assert_eq!(steps[0].turn_ids(), "D1:1,D1:2");
        let steps = dialogue_steps(&d, 1, 2);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].turn_ids(), "D1:2");
        let steps = dialogue_steps(&d, 5, 4);
        assert_eq!(
            steps.iter().map(|s| s.turn_ids()).collect::<Vec<_>>(),
            ["D1:1,D1:2,D1:3", "D2:1"]
        );
    }

    #[test]
    fn fact_text_adds_missing_speaker() {
        let mut f = MemoryItem::new("", "likes tea");
        assert_eq!(fact_text(&f), "likes tea");
        f.speaker = Some("Caroline".into());
        assert_eq!(fact_text(&f), "Caroline: likes tea");
        f.content = "caroline likes tea".into();
        assert_eq!(fact_text(&f), "caroline likes tea");
    }
}
