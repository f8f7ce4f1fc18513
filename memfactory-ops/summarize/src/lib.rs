//! # memfactory-op-summarize
//!
//! RMM's *prospective reflection* (Reflective Memory Management, arXiv 2503.08026) as a
//! memory op, registered as op kind `summarize`. At the end of each session the LLM
//! extracts *topic-level* memories — a one-sentence summary plus the turns it refers to —
//! about one speaker; each new memory is then either **added** to the bank or **merged**
//! into a similar existing memory of that speaker, the LLM deciding from the most similar
//! ones. The `rmm` paradigm calls it once per speaker at every session end, all paths in
//! lockstep.
//!
//! ## Contract
//!
//! - `OpInput::observation`: the finished session rendered one turn per line,
//!   `[D1:3] Caroline (1:56 pm on 8 May, 2023): text` (the parenthesised session date is
//!   optional). The session date of the new memories is the date of the first line that
//!   has one; the turn ids of the lines are the ids the model may cite.
//! - `OpInput::question`: the speaker whose memories to extract. `OpInput::memory` is unused:
//!   the op reads the bank from `cx.store()` (only that speaker's items are merge
//!   candidates).
//! - Call 1, role `reflect` (one lockstep call for all episodes): the model answers
//!   `{"memories": [{"summary": "...", "turns": ["D1:3", ...]}]}` (see
//!   [`parse::parse_reflection`]; at most `max_memories` are kept).
//! - For each new memory, in order: similarity to every existing memory of the speaker;
//!   the `merge_k` most similar with similarity `>= merge_threshold` are the candidates.
//!   No candidate → ADD without asking. Otherwise call 2, role `merge`: the model answers
//!   `{"action": "ADD"}` or `{"action": "MERGE", "index": i, "summary": "<merged>"}`
//!   ([`parse::parse_merge`]). New memory `j` of every episode is decided in one lockstep
//!   call over the episodes that have such a memory with candidates (episodes are
//!   reordered in place for the call and put back), so an episode makes at most
//!   `max_memories` merge calls per reflection.
//! - Candidates are the bank as it was before this call, *with earlier merges of this call
//!   applied* (a second memory merging into the same item sees the already merged text);
//!   memories added by this same call are never candidates — one session's topics are
//!   distinct by construction, and this keeps the decisions of one call independent of
//!   the order of ADDs.
//! - Similarity: cosine of embeddings ([`memfactory_core::memory::cosine`]) when the recipe
//!   has an `[embedder]` (existing items without a vector of the right size are embedded on
//!   the fly, not stored); otherwise lexical: the fraction of the new memory's words found
//!   in the old one ([`memfactory_core::memory::lexical`]).
//!
//! ## Output edits, in order
//!
//! - ADD → [`MemoryEdit::Add`] of an item with a fresh id `r{n}` (`n` = 1 + the largest
//!   `n` among the store's `r<number>` ids, counting up within the call), content = the
//!   summary, speaker = the speaker, time = the session date, the summary's embedding
//!   (when there is an embedder) and meta:
//!   - `turns`: the referenced turn ids, comma-separated (`"D1:3,D1:5"`);
//!   - `dialogue` ([`DIALOGUE_META`]): the referenced turns' raw text, one per line in the
//!     session rendering `[D1:3] Caroline (1:56 pm on 8 May, 2023): text` (speaker, date,
//!     text; [`render_turn_line`], read back with [`parse_turn_line`]), in the order of
//!     `turns`. RMM's memory entries are pairs *(topic summary, raw dialogue)*: the summary
//!     is the search key, the raw turns go into the answer prompt (arXiv 2503.08026 §4 and
//!     App. D.2 "a list of memories consisting of personal summaries with their
//!     corresponding original turns"). The `rmm` paradigm's answer prompt shows them
//!     (`memfactory_op_rerank::render_memory_list_with_turns`).
//! - MERGE → [`MemoryEdit::Delete`] of the old item, then [`MemoryEdit::Add`] of the merged
//!   item under the **same id**: content = the merged summary, embedding = the merged
//!   text's (the old one without an embedder), the old item's speaker and time, its other
//!   meta kept, and `turns` / `dialogue` = the **union** of the old item's turns and the
//!   new memory's (old first, then new ones not already there). A store's `Update` edit
//!   cannot change meta, hence delete + add; the merged item therefore moves to the end of
//!   the bank's insertion order.
//!
//! ## The paper's prompts (`"rmm-paper"`)
//!
//! `template = "rmm-paper"` asks with RMM's memory-extraction prompt (App. D.1.1): the
//! session is listed as numbered dialogue turns, the model answers
//! `{"extracted_memories": [{"summary": "…", "reference": [0, 2]}]}` or `NO_TRAIT`, and
//! each turn index is mapped to the ids of that turn's utterances
//! ([`paper::parse_extraction`]). `merge_template = "rmm-paper"` asks with RMM's memory
//! update prompt (App. D.1.2): the candidates as `{"history_summaries": [...]}`, the new
//! memory as `{"new_summary": "…"}`, and the model answers `Add()` or
//! `Merge(index, merged_summary)` ([`paper::parse_update`]). Everything else (candidates,
//! edits, fallbacks) is as above. What was adapted from the paper's text is listed in
//! [`paper`]. A template *file* named `rmm-paper` is read with `./rmm-paper`.
//!
//! Malformed output is data: a malformed reflection gives no memories; a malformed merge
//! decision falls back to ADD (the new memory itself is fine, only the decision was
//! lost). Both are reported in `OpOutput::parse_error` (notes joined with `; `).
//! A reasoning model's `<think>…</think>` is stripped from both replies before parsing
//! (`strip_think`, default on; [`memfactory_core::text::strip_think`], MemAgent's
//! `extract_solution`); the recorded LM calls keep the raw generations.
//!
//! ## Recipe
//!
//! ```toml
//! [agent.reflect]
//! kind = "summarize"
//! merge_k = 3                # candidates shown to the merge call (0 = never merge)
//! merge_threshold = 0.0      # minimum similarity of a candidate
//! max_memories = 8           # memories kept per reflection
//! template = "reflect.txt"   # optional; placeholders {speaker} {session};
//!                            # "rmm-paper": the paper's App. D.1.1 extraction prompt
//! merge_template = "merge.txt"  # optional; placeholders {speaker} {memories} {new};
//!                            # "rmm-paper": the paper's App. D.1.2 update prompt
//! max_new_tokens = 512       # sampling of both calls: temperature, top_k, top_p, stop
//! strip_think = true         # parse only the text after the last </think>
//! model = { kind = "..." }   # optional own model for both calls
//! ```

pub mod paper;
pub mod parse;

use std::collections::{BTreeMap, HashMap, HashSet};

use memfactory_core::{
    Cfg, ChatMessage, EpisodeCx, GenRequest, LanguageModel, MemoryEdit, MemoryItem, MemoryOp,
    OpInput, OpOutput, Prompt, PromptTemplate, Result, SamplingParams,
    config::sampling_from_cfg,
    memory::{cosine, lexical, words},
    op::{model_from_cfg, op_generate, op_generate_subset},
    prompt::template_from_cfg,
};

pub use parse::{
    MergeDecision, NewMemory, TurnLine, parse_merge, parse_reflection, parse_turn_line,
};

/// The default reflection prompt.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/reflect.txt");
/// The default merge prompt.
pub const DEFAULT_MERGE_TEMPLATE: &str = include_str!("../templates/merge.txt");
/// Role of the reflection call.
pub const REFLECT_ROLE: &str = "reflect";
/// Role of the merge calls.
pub const MERGE_ROLE: &str = "merge";

/// Meta key of the referenced turns' ids (comma-separated).
pub const TURNS_META: &str = "turns";
/// Meta key of the referenced turns' raw text (one rendered turn per line).
pub const DIALOGUE_META: &str = "dialogue";

/// A turn as the op stores it in meta `dialogue`: `[D1:3] Caroline (date): text`, or
/// `[D1:3] Caroline: text` without a date (newlines in the text become spaces, so one turn
/// is one line). [`parse_turn_line`] reads it back.
pub fn render_turn_line(t: &TurnLine) -> String {
    let text = t.text.replace(['\n', '\r'], " ");
    match t.date.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => format!("[{}] {} ({d}): {text}", t.id, t.speaker),
        None => format!("[{}] {}: {text}", t.id, t.speaker),
    }
}

/// The turns of a memory: ids from meta `turns`, each with its rendered line from meta
/// `dialogue` when there is one.
fn item_turns(meta: &BTreeMap<String, String>) -> Vec<(String, Option<String>)> {
    let mut lines: HashMap<String, String> = meta
        .get(DIALOGUE_META)
        .map(|d| {
            d.lines()
                .filter_map(|l| parse_turn_line(l).map(|t| (t.id, l.to_string())))
                .collect()
        })
        .unwrap_or_default();
    meta.get(TURNS_META)
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|id| (id.to_string(), lines.remove(id)))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `turns` into `meta` as `turns` and `dialogue` (the latter omitted when no turn
/// has a line).
fn set_turns(meta: &mut BTreeMap<String, String>, turns: &[(String, Option<String>)]) {
    let ids: Vec<&str> = turns.iter().map(|(id, _)| id.as_str()).collect();
    meta.insert(TURNS_META.into(), ids.join(","));
    let lines: Vec<&str> = turns.iter().filter_map(|(_, l)| l.as_deref()).collect();
    if lines.is_empty() {
        meta.remove(DIALOGUE_META);
    } else {
        meta.insert(DIALOGUE_META.into(), lines.join("\n"));
    }
}

const REFLECT_NAMES: &[&str] = &["speaker", "session"];
const MERGE_NAMES: &[&str] = &["speaker", "memories", "new"];

/// Which reflection prompt, with its input layout and output parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReflectPrompt {
    /// This project's prompt (`template`, default `templates/reflect.txt`): rendered turn
    /// lines in, `{"memories": [{"summary", "turns": ["D1:3"]}]}` out.
    Json,
    /// RMM App. D.1.1 (`template = "rmm-paper"`, [`paper`]): numbered turns in,
    /// `{"extracted_memories": [{"summary", "reference": [0]}]}` or `NO_TRAIT` out.
    RmmPaper {
        /// The prompt for the speaker who opens the session (`SPEAKER_1`).
        first: PromptTemplate,
        /// The prompt for the other speaker (`SPEAKER_2`).
        second: PromptTemplate,
    },
}

/// Which merge prompt, with its input layout and output parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergePrompt {
    /// This project's prompt (`merge_template`): `{"action": "ADD"}` /
    /// `{"action": "MERGE", "index", "summary"}`.
    Json,
    /// RMM App. D.1.2 (`merge_template = "rmm-paper"`, [`paper`]): JSON inputs,
    /// `Add()` / `Merge(index, merged_summary)` out.
    RmmPaper,
}

/// Recipe value of `template` / `merge_template` selecting the paper's prompt.
pub const RMM_PAPER: &str = "rmm-paper";

/// The summarize op.
pub struct Summarize {
    /// Candidates shown to the merge call.
    pub merge_k: usize,
    /// Minimum similarity of a candidate.
    pub merge_threshold: f32,
    /// Memories kept per reflection.
    pub max_memories: usize,
    /// The reflection prompt (`{speaker}`, `{session}`).
    pub template: PromptTemplate,
    /// The merge prompt (`{speaker}`, `{memories}`, `{new}`).
    pub merge_template: PromptTemplate,
    /// Sampling of both calls.
    pub sampling: SamplingParams,
    /// The op's own model, when it has one.
    pub model: Option<Box<dyn LanguageModel>>,
    /// Parse only the text after the last `</think>` (recipe `strip_think`, default true).
    pub strip_think: bool,
    /// The reflection prompt's kind (`Json` uses `template`).
    pub reflect_prompt: ReflectPrompt,
    /// The merge prompt's kind (`merge_template` holds its text either way).
    pub merge_prompt: MergePrompt,
}

impl std::fmt::Debug for Summarize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Summarize")
            .field("merge_k", &self.merge_k)
            .field("merge_threshold", &self.merge_threshold)
            .field("max_memories", &self.max_memories)
            .field("own_model", &self.model.is_some())
            .finish()
    }
}

/// One new memory on its way through the merge decision.
struct Pending {
    memory: NewMemory,
    embedding: Option<Vec<f32>>,
}

/// An existing memory of the speaker as the merge decisions see it.
struct ViewItem {
    id: String,
    content: String,
    time: Option<String>,
    embedding: Option<Vec<f32>>,
    /// The stored embedding (the one kept by a merge without an embedder).
    stored_embedding: Option<Vec<f32>>,
    meta: BTreeMap<String, String>,
}

/// Per-episode state of one call.
struct Work {
    speaker: String,
    date: Option<String>,
    /// The session's turns by id, rendered for meta `dialogue`.
    lines: HashMap<String, String>,
    pending: Vec<Pending>,
    view: Vec<ViewItem>,
    next_id: u64,
    edits: Vec<MemoryEdit>,
    errors: Vec<String>,
    embed: bool,
}

impl Summarize {
    /// The op with the defaults of the recipe table.
    pub fn new() -> Result<Self> {
        Ok(Summarize {
            merge_k: 3,
            merge_threshold: 0.0,
            max_memories: 8,
            template: PromptTemplate::new(
                "default:template",
                DEFAULT_TEMPLATE,
                REFLECT_NAMES,
                REFLECT_NAMES,
            )?,
            merge_template: PromptTemplate::new(
                "default:merge_template",
                DEFAULT_MERGE_TEMPLATE,
                MERGE_NAMES,
                MERGE_NAMES,
            )?,
            sampling: SamplingParams::greedy(512),
            model: None,
            strip_think: true,
            reflect_prompt: ReflectPrompt::Json,
            merge_prompt: MergePrompt::Json,
        })
    }

    /// The part of a generation that is parsed (`strip_think`).
    fn reply<'t>(&self, text: &'t str) -> &'t str {
        if self.strip_think {
            memfactory_core::text::strip_think(text)
        } else {
            text
        }
    }

    fn request(&self, text: String) -> GenRequest {
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
            params: self.sampling.clone(),
        }
    }

    /// The reflection prompt for one input.
    fn reflect_text(&self, input: &OpInput<'_>) -> String {
        let speaker = input.question.trim();
        match &self.reflect_prompt {
            ReflectPrompt::Json => self
                .template
                .render(&[("speaker", speaker), ("session", input.observation)]),
            ReflectPrompt::RmmPaper { first, second } => {
                let lines: Vec<TurnLine> = input
                    .observation
                    .lines()
                    .filter_map(parse_turn_line)
                    .collect();
                let turns = paper::group_turns(&lines);
                let (opens, other) = paper::speaker_roles(&lines, speaker);
                let t = if opens { first } else { second };
                t.render(&[
                    ("speaker", speaker),
                    ("other", &other),
                    ("session", &paper::render_session(&lines, &turns)),
                ])
            }
        }
    }

    /// Starts the per-episode work from the reflection output.
    fn start(&self, cx: &EpisodeCx<'_>, input: &OpInput<'_>, reply: &str) -> Result<Work> {
        let speaker = input.question.trim().to_string();
        let lines: Vec<TurnLine> = input
            .observation
            .lines()
            .filter_map(parse_turn_line)
            .collect();
        let known: HashSet<String> = lines.iter().map(|l| l.id.clone()).collect();
        let date = lines.iter().find_map(|l| l.date.clone());
        let rendered: HashMap<String, String> = lines
            .iter()
            .map(|l| (l.id.clone(), render_turn_line(l)))
            .collect();
        let (memories, error) = match &self.reflect_prompt {
            ReflectPrompt::Json => parse_reflection(reply, Some(&known), self.max_memories),
            ReflectPrompt::RmmPaper { .. } => {
                let turns: Vec<Vec<String>> = paper::group_turns(&lines)
                    .into_iter()
                    .map(|t| t.into_iter().map(|j| lines[j].id.clone()).collect())
                    .collect();
                paper::parse_extraction(reply, &turns, self.max_memories)
            }
        };
        let errors: Vec<String> = error.into_iter().collect();

        let items = cx.memory()?;
        let next_id = 1 + items
            .iter()
            .filter_map(|i| i.id.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        let mut view: Vec<ViewItem> = items
            .into_iter()
            .filter(|i| i.speaker.as_deref() == Some(speaker.as_str()))
            .map(|i| ViewItem {
                id: i.id,
                content: i.content,
                time: i.time,
                stored_embedding: i.embedding.clone(),
                embedding: i.embedding,
                meta: i.meta,
            })
            .collect();
        let embed = cx.embedder().is_some();
        let mut pending: Vec<Pending> = memories
            .into_iter()
            .map(|memory| Pending {
                memory,
                embedding: None,
            })
            .collect();
        if embed && !pending.is_empty() {
            let who = "op summarize";
            let texts: Vec<&str> = pending.iter().map(|p| p.memory.summary.as_str()).collect();
            let vecs = cx.embed(who, &texts)?;
            let dim = vecs.first().map_or(0, Vec::len);
            for (p, v) in pending.iter_mut().zip(vecs) {
                p.embedding = Some(v);
            }
            if self.merge_k > 0 {
                let stale: Vec<usize> = (0..view.len())
                    .filter(|&i| view[i].embedding.as_ref().is_none_or(|e| e.len() != dim))
                    .collect();
                if !stale.is_empty() {
                    let texts: Vec<&str> =
                        stale.iter().map(|&i| view[i].content.as_str()).collect();
                    for (i, v) in stale.iter().zip(cx.embed(who, &texts)?) {
                        view[*i].embedding = Some(v);
                    }
                }
            }
        }
        Ok(Work {
            speaker,
            date,
            lines: rendered,
            pending,
            view,
            next_id,
            edits: Vec::new(),
            errors,
            embed,
        })
    }

    /// The merge candidates of `p`: indices into `view`, most similar first.
    fn candidates(&self, w: &Work, p: &Pending) -> Vec<usize> {
        if self.merge_k == 0 {
            return Vec::new();
        }
        let qwords = words(&p.memory.summary);
        let mut scored: Vec<(usize, f32)> = w
            .view
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let s = match (&p.embedding, &v.embedding) {
                    (Some(a), Some(b)) if w.embed => cosine(a, b),
                    _ => lexical(&qwords, &v.content),
                };
                (i, s)
            })
            .filter(|(_, s)| *s >= self.merge_threshold)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(self.merge_k);
        scored.into_iter().map(|(i, _)| i).collect()
    }

    fn merge_prompt(&self, w: &Work, p: &Pending, cands: &[usize]) -> String {
        if self.merge_prompt == MergePrompt::RmmPaper {
            let history: Vec<&str> = cands.iter().map(|&i| w.view[i].content.as_str()).collect();
            return self.merge_template.render(&[
                ("speaker", &w.speaker),
                ("memories", &paper::render_history(&history)),
                ("new", &paper::render_new(&p.memory.summary)),
            ]);
        }
        let list = cands
            .iter()
            .enumerate()
            .map(|(n, &i)| match &w.view[i].time {
                Some(t) => format!("[{n}] ({t}) {}", w.view[i].content),
                None => format!("[{n}] {}", w.view[i].content),
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.merge_template.render(&[
            ("speaker", &w.speaker),
            ("memories", &list),
            ("new", &p.memory.summary),
        ])
    }

    fn add(&self, w: &mut Work, p: Pending) {
        let mut item = MemoryItem::new(format!("r{}", w.next_id), p.memory.summary);
        w.next_id += 1;
        item.speaker = Some(w.speaker.clone());
        item.time = w.date.clone();
        item.embedding = p.embedding;
        let turns: Vec<(String, Option<String>)> = p
            .memory
            .turns
            .iter()
            .map(|id| (id.clone(), w.lines.get(id).cloned()))
            .collect();
        set_turns(&mut item.meta, &turns);
        w.edits.push(MemoryEdit::Add { item });
    }

    /// MERGE of `p` into view item `target` with the merged `summary`: delete + add under
    /// the same id, turns united (see the crate docs).
    fn merge(
        &self,
        w: &mut Work,
        p: &Pending,
        target: usize,
        summary: String,
        embedding: Option<Vec<f32>>,
    ) {
        let v = &mut w.view[target];
        let mut turns = item_turns(&v.meta);
        for id in &p.memory.turns {
            if !turns.iter().any(|(t, _)| t == id) {
                turns.push((id.clone(), w.lines.get(id).cloned()));
            }
        }
        set_turns(&mut v.meta, &turns);
        v.content = summary;
        if embedding.is_some() {
            v.embedding = embedding.clone();
            v.stored_embedding = embedding;
        }
        let mut item = MemoryItem::new(v.id.clone(), v.content.clone());
        item.speaker = Some(w.speaker.clone());
        item.time = v.time.clone();
        item.embedding = v.stored_embedding.clone();
        item.meta = v.meta.clone();
        w.edits.push(MemoryEdit::Delete { id: v.id.clone() });
        w.edits.push(MemoryEdit::Add { item });
    }
}

impl MemoryOp for Summarize {
    fn kind(&self) -> &'static str {
        "summarize"
    }

    fn frozen_roles(&self) -> Vec<(String, String)> {
        memfactory_core::op::own_model_roles(self.model.as_deref(), &[REFLECT_ROLE, MERGE_ROLE])
    }

    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        let mut out = self.run_batch(std::slice::from_mut(cx), &[input])?;
        Ok(out.pop().unwrap_or_default())
    }

    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        memfactory_core::op::check_inputs(cxs.len(), inputs.len())?;
        let requests = inputs
            .iter()
            .map(|i| self.request(self.reflect_text(i)))
            .collect();
        let gens = op_generate(self.model.as_deref(), cxs, REFLECT_ROLE, requests)?;
        let mut works: Vec<Work> = cxs
            .iter()
            .zip(inputs)
            .zip(&gens)
            .map(|((cx, input), g)| self.start(cx, input, self.reply(&g.text)))
            .collect::<Result<_>>()?;

        // Memory j of every episode, decided in one lockstep call.
        let rounds = works.iter().map(|w| w.pending.len()).max().unwrap_or(0);
        let mut queues: Vec<std::vec::IntoIter<Pending>> = works
            .iter_mut()
            .map(|w| std::mem::take(&mut w.pending).into_iter())
            .collect();
        for round in 0..rounds {
            let mut current: Vec<Option<(Pending, Vec<usize>)>> = Vec::with_capacity(works.len());
            let mut requests: Vec<Option<GenRequest>> = Vec::with_capacity(works.len());
            for (w, q) in works.iter_mut().zip(queues.iter_mut()) {
                match q.next() {
                    None => {
                        current.push(None);
                        requests.push(None);
                    }
                    Some(p) => {
                        let cands = self.candidates(w, &p);
                        if cands.is_empty() {
                            self.add(w, p);
                            current.push(None);
                            requests.push(None);
                        } else {
                            requests.push(Some(self.request(self.merge_prompt(w, &p, &cands))));
                            current.push(Some((p, cands)));
                        }
                    }
                }
            }
            let gens = op_generate_subset(self.model.as_deref(), cxs, MERGE_ROLE, requests)?;
            for (e, (slot, g)) in current.into_iter().zip(gens).enumerate() {
                let (Some((p, cands)), Some(g)) = (slot, g) else {
                    continue;
                };
                let w = &mut works[e];
                let decision = match self.merge_prompt {
                    MergePrompt::Json => parse_merge(self.reply(&g.text), cands.len()),
                    MergePrompt::RmmPaper => paper::parse_update(self.reply(&g.text), cands.len())
                        .map(|(d, note)| {
                            if let Some(note) = note {
                                w.errors
                                    .push(format!("merge decision for new memory {round}: {note}"));
                            }
                            d
                        }),
                };
                match decision {
                    Ok(MergeDecision::Add) => self.add(w, p),
                    Ok(MergeDecision::Merge { index, summary }) => {
                        let target = cands[index];
                        let embedding = if w.embed {
                            cxs[e].embed("op summarize", &[summary.as_str()])?.pop()
                        } else {
                            None
                        };
                        self.merge(w, &p, target, summary, embedding);
                    }
                    Err(err) => {
                        w.errors.push(format!(
                            "merge decision for new memory {round}: {err}; added it instead"
                        ));
                        self.add(w, p);
                    }
                }
            }
        }
        Ok(works
            .into_iter()
            .map(|w| OpOutput {
                edits: w.edits,
                parse_error: (!w.errors.is_empty()).then(|| w.errors.join("; ")),
                ..Default::default()
            })
            .collect())
    }
}

const PAPER_EXTRACT_NAMES: &[&str] = &["speaker", "other", "session"];
const PAPER_UPDATE_REQUIRED: &[&str] = &["memories", "new"];

/// True when `key` is the string `"rmm-paper"` (a template file of that name: `./rmm-paper`).
fn is_rmm_paper(cfg: &Cfg, key: &str) -> bool {
    cfg.table().get(key).and_then(|v| v.as_str()) == Some(RMM_PAPER)
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    let mut op = Summarize::new()?;
    op.merge_k = cfg.get("merge_k", 3usize)?;
    op.merge_threshold = cfg.get_checked(
        "merge_threshold",
        0.0f32,
        |t| t.is_finite(),
        "a finite similarity",
    )?;
    op.max_memories = cfg.get_checked(
        "max_memories",
        8usize,
        |n| *n > 0,
        "a positive number of memories",
    )?;
    if is_rmm_paper(cfg, "template") {
        let _: Option<String> = cfg.opt("template")?;
        let first = PromptTemplate::new(
            "rmm-paper:extract-speaker1",
            paper::EXTRACT_SPEAKER1_TEMPLATE,
            PAPER_EXTRACT_NAMES,
            PAPER_EXTRACT_NAMES,
        )?;
        let second = PromptTemplate::new(
            "rmm-paper:extract-speaker2",
            paper::EXTRACT_SPEAKER2_TEMPLATE,
            PAPER_EXTRACT_NAMES,
            PAPER_EXTRACT_NAMES,
        )?;
        op.template = first.clone();
        op.reflect_prompt = ReflectPrompt::RmmPaper { first, second };
    } else {
        op.template = template_from_cfg(
            cfg,
            "template",
            DEFAULT_TEMPLATE,
            REFLECT_NAMES,
            REFLECT_NAMES,
        )?;
    }
    if is_rmm_paper(cfg, "merge_template") {
        let _: Option<String> = cfg.opt("merge_template")?;
        op.merge_template = PromptTemplate::new(
            "rmm-paper:update",
            paper::UPDATE_TEMPLATE,
            MERGE_NAMES,
            PAPER_UPDATE_REQUIRED,
        )?;
        op.merge_prompt = MergePrompt::RmmPaper;
    } else {
        op.merge_template = template_from_cfg(
            cfg,
            "merge_template",
            DEFAULT_MERGE_TEMPLATE,
            MERGE_NAMES,
            MERGE_NAMES,
        )?;
    }
    op.sampling = sampling_from_cfg(cfg, 512)?;
    op.strip_think = cfg.get("strip_think", true)?;
    op.model = model_from_cfg(cfg, "model")?;
    Ok(Box::new(op))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "summarize",
        about: "RMM prospective reflection: topic-level memories per speaker at session end, each added or merged into a similar one",
        build,
    }
}
