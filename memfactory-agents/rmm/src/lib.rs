//! # memfactory-agent-rmm
//!
//! The RMM paradigm (Reflective Memory Management, arXiv 2503.08026), registered as agent
//! kind `rmm`. RMM keeps a bank of topic-level memories of a long conversation and answers
//! questions from it with two reflections:
//!
//! - **prospective reflection** — at the end of every session, the `reflect` op (default
//!   [`summarize`](https://docs.rs/memfactory-op-summarize)) extracts topic memories per
//!   speaker (summary + referenced turns) and adds each to the bank or merges it into a
//!   similar one;
//! - **retrospective reflection** — at question time a dense retriever returns the top
//!   `retrieve_k` memories, the `rerank` op ([`memfactory_op_rerank::Reranker`]) keeps M of
//!   them (learned reranker: residual adapters + Gumbel top-M), the LLM answers citing the
//!   memories it used, and the citations train the reranker online (REINFORCE: cited `+1`,
//!   uncited `−1`). The paper reports 70.4 on LongMemEval against 63.6 for plain RAG.
//!
//! ## Episode (all paths of a group in lockstep)
//!
//! 1. The question is embedded first (`cx.embed`), so a recipe without `[embedder]` fails
//!    before any work. A sample without a dialogue is a configuration error naming it.
//! 2. Bank: for every session in order, its turns are rendered one per line,
//!    `[D1:3] Caroline (1:56 pm on 8 May, 2023): text` (no parenthesis without a date), and
//!    `reflect.run_batch` runs once per speaker of the session (the dialogue's speaker list
//!    order, then unlisted speakers in order of appearance), `question` = the speaker; each
//!    path's edits are applied with `cx.apply(reflect.kind(), edits, parse_error)`.
//! 3. Retrieval: `store.search` with the question text, its embedding and `k = retrieve_k`
//!    (exact dense search on the summaries' embeddings; note `candidates`: the ids, and
//!    note [`RETRIEVED_NOTE`]: the memories with their turn ids, see [`memory_turns_note`]).
//! 4. Rerank: [`Reranker::rerank_batch`] (note `selected`: the ids, note
//!    [`RERANKED_NOTE`]: the kept memories with their turn ids; an `llm` reranker's parse
//!    error is recorded with `cx.apply("rerank", [], error)`). The `recall-at-k` metric
//!    (`memfactory-reward-recall-at-k`) scores these two notes against the sample's
//!    evidence turn ids.
//! 5. Answer (role `answer`, one lockstep call): the prompt lists the kept memories as
//!    `[0]..[M-1]` and asks for a short answer citing `[i]`. With `memory_view =
//!    "summary-and-turns"` (default) each memory is its summary line
//!    `[i] (speaker, time) summary` followed by the raw dialogue turns it was extracted
//!    from (meta `dialogue`, written by `summarize`), at most `max_turn_chars` characters
//!    of them per memory ([`render_memory_list_with_turns`]) — RMM's memory entry is the
//!    pair (topic summary, raw dialogue), the summary being the search key and the
//!    generator reading "personal summaries with their corresponding original turns"
//!    (arXiv 2503.08026 §4 and App. D.2). `memory_view = "summary"` shows the summary
//!    lines only, with the summary-only default prompt (`templates/answer_summary.txt`),
//!    the behaviour before raw turns were kept. `template = "rmm-paper"` asks with RMM's
//!    own answer prompt (App. D.2, [`RMM_PAPER_ANSWER_TEMPLATE`]: copied from the paper
//!    with its `{}` slots named `{question}` / `{memories}`, markdown-conversion artifacts
//!    undone, the examples' memory lists indented) and lists the memories in its layout
//!    ([`render_memory_list_rmm_paper`]: `- Memory [i]: summary`, raw turns as bullets);
//!    it needs `memory_view = "summary-and-turns"`. [`parse_answer`] reads the citations
//!    and the paper's `[NO_CITE]` marker;
//!    `cx.episode.answer` is the answer with the markers removed. A malformed answer (an
//!    out-of-range citation, an empty answer) is recorded with
//!    `cx.apply("answer", [], error)`.
//! 6. Online learning (`online = true` and a learned reranker): every path whose answer
//!    parsed cleanly gives a [`Feedback`] (`+1` for each cited kept memory, `−1` for the
//!    others — an answer citing nothing, `[NO_CITE]` or not, gives all `−1`: the paper's
//!    reward is `−1` for every memory not cited, §6.2, and it does not exempt `[NO_CITE]`;
//!    `no_cite_feedback = "none"` gives no feedback for such answers instead); one
//!    [`Reranker::reinforce`] call takes the group's feedback (the reranker applies it
//!    once `[agent.rerank] batch` questions are in), then [`Reranker::save`]
//!    writes the adapters when the rerank table has a `state_path`. A malformed answer is
//!    no evidence about the memories and gives no feedback. With `method = "llm"` nothing
//!    is trained.
//!
//! ## Bank cache (`bank_cache = true`, evaluation only)
//!
//! LoCoMo asks ~150 questions per conversation; with the cache the bank of each
//! (conversation, path) is built once and replayed for the other questions. The key is the
//! FNV-1a hash of the dialogue's JSON (with the group's number of paths, since a group's
//! paths are built together in lockstep); path `p` of the build runs with episode seed
//! `seed::derive_n(seed::derive(hash, "rmm-bank"), p)` (restored afterwards), so the bank
//! does not depend on which question came first (nor on the run seed). The first episode
//! records the build's steps; a later one gets one `cx.apply("bank-cache", adds, None)` and
//! a note naming the key. When another thread is building the same key, the episode waits
//! inside `cx.wait_outside_lm` (so cross-sample batching does not wait for it). In cache
//! mode the question phase (steps 3–6) is recorded on a fresh step list that is appended to
//! the episode's earlier steps afterwards, so its seeds (`derive_n(episode seed, step
//! index)`: Gumbel noise, answer sampling) are the same for the episode that built the bank
//! and for one that replayed it. [`Paradigm::caches_across_samples`] returns `bank_cache`,
//! so the trainer refuses it.
//!
//! ## Recipe
//!
//! ```toml
//! [agent]
//! kind = "rmm"
//! paths = 1
//! retrieve_k = 20          # K candidates from the bank (dense store search; needs [embedder])
//! bank_cache = false       # eval only: prospective reflection once per (conversation, path)
//! online = true            # train the learned reranker from the answer's citations
//! [agent.reflect]          # any memory op; default { kind = "summarize" } (also when `kind` is omitted)
//! [agent.rerank]           # kind must be "rerank" (built concretely; may be omitted)
//! [agent.answer]
//! memory_view = "summary-and-turns"  # or "summary": summaries only
//! max_turn_chars = 800     # raw-turn characters shown per memory (0 = no bound)
//! template = "answer.txt"  # optional; placeholders {question} {memories}; the default
//!                          # depends on memory_view (answer.txt / answer_summary.txt);
//!                          # "rmm-paper": the paper's App. D.2 prompt and memory layout
//! no_cite_feedback = "negative"  # an answer citing nothing: every kept memory -1 | "none"
//! max_new_tokens = 128     # temperature, top_k, top_p, stop (greedy default)
//! model = { kind = "..." } # optional own model for the answer
//! ```
//!
//! ## Frozen LLM (RMM) and GRPO on the answer (an extension)
//!
//! In RMM only the reranker learns (online, from citations); the retriever and the LLM
//! (Gemini 1.5) are frozen. An `eval` of this paradigm is that protocol
//! (`configs/repro/rmm_locomo.toml`). `memfactory train` with an `rmm` agent additionally
//! trains the answering LLM with GRPO (`configs/tests/rmm_grpo_tiny.toml`): an extension
//! of this project that the paper does not have.
//!
//! The learned reranker's weights are shared by every episode of the run; with
//! `online = true` later questions see weights trained on earlier ones (order-dependent;
//! reproducible with `[eval] concurrency = 1`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memfactory_core::{
    Cfg, ChatMessage, Dialogue, EpisodeCx, Error, GenRequest, LanguageModel, MemoryEdit,
    MemoryItem, MemoryOp, OpInput, Paradigm, Prompt, PromptTemplate, Result, Sample,
    SamplingParams, SearchQuery, Session, Step,
    config::sampling_from_cfg,
    op::model_from_cfg,
    op::op_generate,
    op::{op_table, sub_op},
    prompt::template_from_cfg,
    seed,
};
use memfactory_op_rerank::{
    Feedback, Reranker, render_memory_list, render_memory_list_rmm_paper,
    render_memory_list_with_turns,
};

/// The default answer prompt (`memory_view = "summary-and-turns"`).
pub const DEFAULT_ANSWER_TEMPLATE: &str = include_str!("../templates/answer.txt");
/// The default answer prompt with `memory_view = "summary"`.
pub const DEFAULT_SUMMARY_ANSWER_TEMPLATE: &str = include_str!("../templates/answer_summary.txt");
/// RMM's answer prompt (arXiv 2503.08026 App. D.2), `[agent.answer] template = "rmm-paper"`.
pub const RMM_PAPER_ANSWER_TEMPLATE: &str = include_str!("../templates/answer_rmm_paper.txt");
/// Recipe value of `[agent.answer] template` selecting [`RMM_PAPER_ANSWER_TEMPLATE`].
pub const RMM_PAPER: &str = "rmm-paper";
/// The marker of RMM's answer prompt for "no useful memory" (App. D.2).
pub const NO_CITE: &str = "[NO_CITE]";

/// Label of the note listing the retrieved candidates with their turn ids.
pub const RETRIEVED_NOTE: &str = "retrieved";
/// Label of the note listing the memories the reranker kept with their turn ids.
pub const RERANKED_NOTE: &str = "reranked";

/// What the answer prompt shows of each memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryView {
    /// The summary line, then the raw turns it was extracted from (RMM).
    SummaryAndTurns,
    /// The summary line only.
    Summary,
    /// RMM App. D.2's layout (`template = "rmm-paper"`): `- Memory [i]: summary` and the
    /// raw turns as bullets ([`render_memory_list_rmm_paper`]).
    RmmPaper,
}

/// What an answer that cites no memory teaches the reranker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCiteFeedback {
    /// Every kept memory gets `−1` (the paper's rule, §6.2: `−1` for each memory not
    /// cited), `[NO_CITE]` or not.
    Negative,
    /// No feedback from that answer.
    None,
}

/// A note listing memories best first with their source turns, the format the
/// `recall-at-k` metric reads: a JSON array of `{"id": "r3", "turns": ["D1:3", "D2:5"]}`,
/// the turns taken from meta `turns` (comma-separated; none when absent).
pub fn memory_turns_note(items: &[MemoryItem]) -> String {
    let list: Vec<serde_json::Value> = items
        .iter()
        .map(|i| {
            let turns: Vec<&str> = i
                .meta
                .get("turns")
                .map(|t| {
                    t.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({ "id": i.id, "turns": turns })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// Role of the answer call.
pub const ANSWER_ROLE: &str = "answer";

/// What the answer prompt shows when no memory was kept.
pub const NO_MEMORIES: &str = "(no memories)";

/// Per-path banks of one cache key, or why the build failed.
/// Per path: the built bank's items and the parse errors its build recorded (`(op,
/// error)`), re-recorded by a replaying episode so that format rewards see the same bank.
type PathBank = (Vec<MemoryItem>, Vec<(String, String)>);
type Built = std::result::Result<Vec<PathBank>, String>;

#[derive(Default)]
struct Slot {
    claimed: AtomicBool,
    done: OnceLock<Built>,
}

/// Sets a slot to failed if its builder leaves without setting it (a panic), so that
/// waiting threads wake up.
struct FailOnDrop(Arc<Slot>);
impl Drop for FailOnDrop {
    fn drop(&mut self) {
        let _ = self
            .0
            .done
            .set(Err("the thread building this bank stopped".into()));
    }
}

/// The RMM paradigm.
pub struct Rmm {
    /// Memory paths per question.
    pub paths: usize,
    /// Candidates retrieved from the bank (K).
    pub retrieve_k: usize,
    /// Reuse each conversation's bank across its questions.
    pub bank_cache: bool,
    /// Train the learned reranker from citations.
    pub online: bool,
    /// The prospective-reflection op.
    pub reflect: Box<dyn MemoryOp>,
    /// The reranker (built concretely: the paradigm trains it).
    pub rerank: Reranker,
    /// The answer prompt (`{question}`, `{memories}`).
    pub answer_template: PromptTemplate,
    /// What the answer prompt shows of each memory.
    pub memory_view: MemoryView,
    /// Raw-turn characters shown per memory (0 = no bound).
    pub max_turn_chars: usize,
    /// Feedback from an answer citing no memory.
    pub no_cite_feedback: NoCiteFeedback,
    /// Sampling of the answer.
    pub answer_sampling: SamplingParams,
    /// The answer's own model, when it has one.
    pub answer_model: Option<Box<dyn LanguageModel>>,
    cache: Mutex<HashMap<(u64, usize), Arc<Slot>>>,
}

/// An answer with its citations read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAnswer {
    /// The answer with citation markers (and a leading `Answer:` label) removed.
    pub answer: String,
    /// Cited memory indices, in order of first citation, valid ones only.
    pub cited: Vec<usize>,
    /// The answer said `[NO_CITE]` (no useful memory, App. D.2).
    pub no_cite: bool,
    /// What was wrong (out-of-range citations, empty answer), when something was.
    pub error: Option<String>,
}

/// Reads citations of `m` memories from an answer. A citation is a bracket of numbers:
/// `[2]`, `[0, 2]`, `[0,2]`; other brackets are text. Indices outside `0..m` are dropped
/// and reported. `[NO_CITE]` (RMM's "no useful memory" marker, App. D.2; also `[no cite]`,
/// any case) sets `no_cite`; an answer that has it *and* cites a memory contradicts
/// itself and is reported. Markers are removed with the whitespace before them
/// (`Paris [0].` → `Paris.`); a leading `Answer:` (or the paper's `Output:`) label is
/// removed; the rest is trimmed. An answer that is empty after that is reported too.
pub fn parse_answer(text: &str, m: usize) -> ParsedAnswer {
    let mut answer = String::with_capacity(text.len());
    let mut cited = Vec::new();
    let mut bad = Vec::new();
    let mut no_cite = false;
    let mut rest = text.trim();
    for label in ["answer:", "output:"] {
        if let Some(p) = rest.get(..label.len())
            && p.eq_ignore_ascii_case(label)
        {
            rest = rest[label.len()..].trim_start();
        }
    }
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find(']')
            && is_no_cite(&after[..close])
        {
            no_cite = true;
            answer.push_str(rest[..open].trim_end());
            rest = &after[close + 1..];
            continue;
        }
        let group = after.find(']').map(|close| &after[..close]).filter(|g| {
            !g.trim().is_empty()
                && g.split(',')
                    .all(|n| !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit()))
        });
        match group {
            Some(g) => {
                answer.push_str(rest[..open].trim_end());
                for n in g.split(',') {
                    match n.trim().parse::<usize>().ok().filter(|i| *i < m) {
                        Some(i) => {
                            if !cited.contains(&i) {
                                cited.push(i);
                            }
                        }
                        None => bad.push(n.trim().to_string()),
                    }
                }
                rest = &after[g.len() + 1..];
            }
            None => {
                answer.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    answer.push_str(rest);
    let answer = answer.trim().to_string();
    let mut errors = Vec::new();
    if !bad.is_empty() {
        errors.push(format!(
            "citation(s) out of range 0..{m} ignored: {}",
            bad.join(", ")
        ));
    }
    if answer.is_empty() {
        errors.push("empty answer".to_string());
    }
    if no_cite && !cited.is_empty() {
        errors.push("the answer cites memories and says [NO_CITE]".to_string());
    }
    ParsedAnswer {
        answer,
        cited,
        no_cite,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// `NO_CITE` / `NO CITE`, any case, inside a bracket.
fn is_no_cite(inner: &str) -> bool {
    let t = inner.trim();
    t.eq_ignore_ascii_case("no_cite") || t.eq_ignore_ascii_case("no cite")
}

/// A session rendered one turn per line: `[D1:3] Caroline (1:56 pm on 8 May, 2023): text`,
/// or `[D1:3] Caroline: text` when the session has no date.
pub fn render_session(session: &Session) -> String {
    let date = session.date.as_deref().filter(|d| !d.trim().is_empty());
    session
        .turns
        .iter()
        .map(|t| match date {
            Some(d) => format!("[{}] {} ({d}): {}", t.id, t.speaker, t.text),
            None => format!("[{}] {}: {}", t.id, t.speaker, t.text),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The speakers of `session` to reflect for: the dialogue's speakers that speak in it (in
/// the dialogue's order), then speakers missing from that list, in order of appearance.
pub fn session_speakers(dialogue: &Dialogue, session: &Session) -> Vec<String> {
    let mut out: Vec<String> = dialogue
        .speakers
        .iter()
        .filter(|s| session.turns.iter().any(|t| &t.speaker == *s))
        .cloned()
        .collect();
    for t in &session.turns {
        if !out.contains(&t.speaker) {
            out.push(t.speaker.clone());
        }
    }
    out
}

/// The cache key of a dialogue: FNV-1a of its JSON.
pub fn dialogue_key(dialogue: &Dialogue) -> u64 {
    seed::fnv1a(&serde_json::to_vec(dialogue).unwrap_or_default())
}

impl Rmm {
    /// Prospective reflection over every session, all paths in lockstep.
    pub fn build_bank(&self, dialogue: &Dialogue, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        for session in &dialogue.sessions {
            if session.turns.is_empty() {
                continue;
            }
            let rendered = render_session(session);
            for speaker in session_speakers(dialogue, session) {
                let input = OpInput {
                    question: &speaker,
                    observation: &rendered,
                    memory: &[],
                };
                let inputs = vec![input; cxs.len()];
                let outs = self.reflect.run_batch(cxs, &inputs)?;
                for (cx, out) in cxs.iter_mut().zip(outs) {
                    cx.apply(self.reflect.kind(), out.edits, out.parse_error)?;
                }
            }
        }
        Ok(())
    }

    /// The bank through the cache (see the crate docs).
    fn cached_bank(&self, dialogue: &Dialogue, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let hash = dialogue_key(dialogue);
        let key = (hash, cxs.len());
        let slot = {
            let mut map = self
                .cache
                .lock()
                .map_err(|_| Error::backend("agent rmm", "bank cache lock poisoned"))?;
            map.entry(key).or_default().clone()
        };
        if slot.done.get().is_none() && !slot.claimed.swap(true, Ordering::SeqCst) {
            let guard = FailOnDrop(slot.clone());
            let base = seed::derive(hash, "rmm-bank");
            let saved: Vec<u64> = cxs.iter().map(|cx| cx.episode.seed).collect();
            for (p, cx) in cxs.iter_mut().enumerate() {
                cx.episode.seed = seed::derive_n(base, p as u64);
            }
            let res = self.build_bank(dialogue, cxs);
            for (cx, s) in cxs.iter_mut().zip(saved) {
                cx.episode.seed = s;
            }
            let built: Built = match &res {
                Ok(()) => cxs
                    .iter()
                    .map(|cx| {
                        Ok((
                            cx.memory()?,
                            cx.episode
                                .edit_parse_errors()
                                .map(|(op, e)| (op.to_string(), e.to_string()))
                                .collect::<Vec<_>>(),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let failed = built.is_err();
            let _ = slot.done.set(built);
            drop(guard);
            if failed && let Ok(mut map) = self.cache.lock() {
                map.remove(&key);
            }
            res?;
            for (p, cx) in cxs.iter_mut().enumerate() {
                cx.note("bank-cache", format!("built bank {hash:016x}/path {p}"));
            }
            return Ok(());
        }
        if slot.done.get().is_none() {
            let Some(first) = cxs.first() else {
                return Ok(());
            };
            first.wait_outside_lm(&mut || {
                slot.done.wait();
            });
        }
        let banks = match slot.done.get() {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                return Err(Error::backend(
                    "agent rmm",
                    format!("building the cached bank {hash:016x} failed: {e}"),
                ));
            }
            None => return Err(Error::backend("agent rmm", "bank cache slot left empty")),
        };
        for (p, cx) in cxs.iter_mut().enumerate() {
            if let Some((_, errors)) = banks.get(p) {
                for (op, e) in errors {
                    cx.apply(op, vec![], Some(e.clone()))?;
                }
            }
            let adds = banks
                .get(p)
                .map(|(items, _)| {
                    items
                        .iter()
                        .map(|i| MemoryEdit::Add { item: i.clone() })
                        .collect()
                })
                .unwrap_or_default();
            cx.apply("bank-cache", adds, None)?;
            cx.note("bank-cache", format!("replayed bank {hash:016x}/path {p}"));
        }
        Ok(())
    }

    /// Retrieval, rerank, answer and online feedback (steps 3–6 of the crate docs).
    fn answer_phase(
        &self,
        sample: &Sample,
        query: &[f32],
        cxs: &mut [EpisodeCx<'_>],
    ) -> Result<()> {
        let candidates: Vec<Vec<MemoryItem>> = cxs
            .iter()
            .map(|cx| {
                Ok(cx
                    .store()
                    .search(&SearchQuery {
                        text: sample.question.clone(),
                        embedding: Some(query.to_vec()),
                        speaker: None,
                        k: self.retrieve_k,
                    })?
                    .into_iter()
                    .map(|(item, _)| item)
                    .collect())
            })
            .collect::<Result<_>>()?;
        for (cx, c) in cxs.iter_mut().zip(&candidates) {
            cx.note("candidates", ids(c));
            cx.note(RETRIEVED_NOTE, memory_turns_note(c));
        }
        let inputs: Vec<OpInput<'_>> = candidates
            .iter()
            .map(|c| OpInput {
                question: &sample.question,
                observation: "",
                memory: c,
            })
            .collect();
        let reranked = self.rerank.rerank_batch(cxs, &inputs)?;
        let mut requests = Vec::with_capacity(cxs.len());
        for (cx, r) in cxs.iter_mut().zip(&reranked) {
            if let Some(e) = &r.output.parse_error {
                cx.apply("rerank", Vec::new(), Some(e.clone()))?;
            }
            cx.note("selected", ids(&r.output.items));
            cx.note(RERANKED_NOTE, memory_turns_note(&r.output.items));
            let memories = if r.output.items.is_empty() {
                NO_MEMORIES.to_string()
            } else {
                match self.memory_view {
                    MemoryView::SummaryAndTurns => {
                        render_memory_list_with_turns(&r.output.items, self.max_turn_chars)
                    }
                    MemoryView::Summary => render_memory_list(&r.output.items),
                    MemoryView::RmmPaper => {
                        render_memory_list_rmm_paper(&r.output.items, self.max_turn_chars)
                    }
                }
            };
            let text = self.answer_template.render(&[
                ("question", sample.question.as_str()),
                ("memories", memories.as_str()),
            ]);
            requests.push(GenRequest {
                prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
                params: self.answer_sampling.clone(),
            });
        }
        let gens = op_generate(self.answer_model.as_deref(), cxs, ANSWER_ROLE, requests)?;
        let mut feedback: Vec<Feedback> = Vec::new();
        for ((cx, g), r) in cxs.iter_mut().zip(&gens).zip(&reranked) {
            let parsed = parse_answer(&g.text, r.output.items.len());
            cx.note(
                "cited",
                parsed
                    .cited
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            if let Some(e) = &parsed.error {
                cx.apply(ANSWER_ROLE, Vec::new(), Some(e.clone()))?;
            } else if let Some(trace) = &r.trace
                && !trace.chosen.is_empty()
                && (!parsed.cited.is_empty() || self.no_cite_feedback == NoCiteFeedback::Negative)
            {
                let rewards = (0..trace.chosen.len())
                    .map(|i| if parsed.cited.contains(&i) { 1.0 } else { -1.0 })
                    .collect();
                feedback.push(trace.feedback(rewards));
            }
            cx.episode.answer = Some(parsed.answer);
        }
        if self.online && self.rerank.is_learned() && !feedback.is_empty() {
            self.rerank.reinforce(&feedback)?;
            self.rerank.save()?;
        }
        Ok(())
    }
}

fn ids(items: &[MemoryItem]) -> String {
    items
        .iter()
        .map(|i| i.id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl Paradigm for Rmm {
    fn kind(&self) -> &'static str {
        "rmm"
    }

    fn paths(&self) -> usize {
        self.paths
    }

    fn caches_across_samples(&self) -> bool {
        self.bank_cache
    }

    /// The reflection op's, the LLM reranker's and the answer's, for those with their own
    /// model.
    fn frozen_roles(&self) -> Vec<(String, String)> {
        let mut out = self.reflect.frozen_roles();
        out.extend(self.rerank.frozen_roles());
        out.extend(memfactory_core::op::own_model_roles(
            self.answer_model.as_deref(),
            &[ANSWER_ROLE],
        ));
        out
    }

    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()> {
        let Some(first) = cxs.first() else {
            return Ok(());
        };
        let Some(dialogue) = &sample.dialogue else {
            return Err(Error::config(
                "agent.kind",
                format!(
                    "rmm reads multi-session dialogues, but sample `{}` has none \
                     (use a dialogue dataset such as locomo)",
                    sample.id
                ),
            ));
        };
        let query = first
            .embed("agent rmm (dense retrieval)", &[sample.question.as_str()])?
            .pop()
            .ok_or_else(|| Error::backend("agent rmm", "embedder returned no vector"))?;
        if !self.bank_cache {
            self.build_bank(dialogue, cxs)?;
            return self.answer_phase(sample, &query, cxs);
        }
        self.cached_bank(dialogue, cxs)?;
        let earlier: Vec<Vec<Step>> = cxs
            .iter_mut()
            .map(|cx| std::mem::take(&mut cx.episode.steps))
            .collect();
        let res = self.answer_phase(sample, &query, cxs);
        for (cx, mut steps) in cxs.iter_mut().zip(earlier) {
            steps.append(&mut cx.episode.steps);
            cx.episode.steps = steps;
        }
        res
    }
}

impl Rmm {
    /// Reads the `[agent]` table (every key but `kind`, which the registry reads); the
    /// caller calls [`Cfg::finish`]. The registered `build` uses it; tests use it to keep
    /// the concrete type (and reach [`Rmm::rerank`]).
    pub fn from_cfg(cfg: &mut Cfg) -> Result<Self> {
        build_rmm(cfg)
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Paradigm>> {
    Ok(Box::new(build_rmm(cfg)?))
}

fn build_rmm(cfg: &mut Cfg) -> Result<Rmm> {
    let paths = cfg.paths()?;
    let retrieve_k = cfg.get_checked(
        "retrieve_k",
        20usize,
        |k| *k > 0,
        "a positive number of candidates",
    )?;
    let bank_cache = cfg.get("bank_cache", false)?;
    let online = cfg.get("online", true)?;

    let reflect = sub_op(cfg, "reflect", &op_table("summarize", &[]))?;

    let mut rerank_cfg = match cfg.sub("rerank")? {
        Some(c) => c,
        None => Cfg::from_value(cfg.key("rerank"), &toml::Value::String("rerank".into()))?,
    };
    let kind: String = rerank_cfg.get("kind", "rerank".to_string())?;
    if kind != "rerank" {
        return Err(rerank_cfg.error(
            "kind",
            format!(
                "the rmm paradigm trains its reranker itself and needs kind \"rerank\" \
                 (method \"learned\" or \"llm\"), found \"{kind}\""
            ),
        ));
    }
    let rerank = Reranker::from_cfg(&mut rerank_cfg)?;
    let mut resolved = toml::Table::new();
    resolved.insert("kind".into(), toml::Value::String(kind));
    for (k, v) in rerank_cfg.finish()? {
        if k != "kind" {
            resolved.insert(k, v);
        }
    }
    cfg.set_resolved("rerank", toml::Value::Table(resolved));

    let mut answer = cfg.sub_or_empty("answer")?;
    let paper = answer.table().get("template").and_then(|v| v.as_str()) == Some(RMM_PAPER);
    let view: String = answer.get("memory_view", "summary-and-turns".to_string())?;
    let (mut memory_view, default_template) = match view.as_str() {
        "summary-and-turns" => (MemoryView::SummaryAndTurns, DEFAULT_ANSWER_TEMPLATE),
        "summary" => (MemoryView::Summary, DEFAULT_SUMMARY_ANSWER_TEMPLATE),
        other => {
            return Err(answer.error(
                "memory_view",
                format!("expected \"summary-and-turns\" or \"summary\", found \"{other}\""),
            ));
        }
    };
    let max_turn_chars: usize = answer.get("max_turn_chars", 800usize)?;
    let answer_template = if paper {
        if memory_view == MemoryView::Summary {
            return Err(answer.error(
                "memory_view",
                "template = \"rmm-paper\" shows each memory's summary with its original \
                 turns (RMM App. D.2); use memory_view = \"summary-and-turns\"",
            ));
        }
        let _: Option<String> = answer.opt("template")?;
        memory_view = MemoryView::RmmPaper;
        PromptTemplate::new(
            RMM_PAPER,
            RMM_PAPER_ANSWER_TEMPLATE,
            &["question", "memories"],
            &["question", "memories"],
        )?
    } else {
        template_from_cfg(
            &mut answer,
            "template",
            default_template,
            &["question", "memories"],
            &["question", "memories"],
        )?
    };
    let no_cite_feedback = match answer
        .get_checked(
            "no_cite_feedback",
            "negative".to_string(),
            |v| v == "negative" || v == "none",
            "\"negative\" (every kept memory -1, the paper's rule) or \"none\"",
        )?
        .as_str()
    {
        "none" => NoCiteFeedback::None,
        _ => NoCiteFeedback::Negative,
    };
    let answer_sampling = sampling_from_cfg(&mut answer, 128)?;
    let answer_model = model_from_cfg(&mut answer, "model")?;
    cfg.set_resolved("answer", toml::Value::Table(answer.finish()?));
    Ok(Rmm {
        paths,
        retrieve_k,
        bank_cache,
        online,
        reflect,
        rerank,
        answer_template,
        memory_view,
        max_turn_chars,
        no_cite_feedback,
        answer_sampling,
        answer_model,
        cache: Mutex::new(HashMap::new()),
    })
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Paradigm> {
        kind: "rmm",
        about: "RMM: topic memories per speaker at session ends (add/merge), dense retrieval, learned reranking (Gumbel top-M, online REINFORCE on citations), cited answers",
        build,
    }
}
