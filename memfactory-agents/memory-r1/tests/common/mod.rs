//! Test doubles for the memory-r1 tests: four small ops that follow the contracts of
//! `extract`, `update`, `retrieve` and `distill` deterministically (registered under
//! `test-*` kinds), a call-counting LM wrapper and a bag-of-words embedder.
//!
//! - `test-extract` (role `extract`): one lockstep call, prompt `EXTRACT\n<turns>`; each reply
//!   line `Speaker|fact` is a fact, a line `@<p> Speaker|fact` is a fact for path `p` only; a
//!   line without `|` is a parse error (no facts).
//! - `test-manage` (role `manage`): prompt `MANAGE\nfact: <fact>\nmemories:\n<i>: <content>…`;
//!   reply `ADD <content>` (fresh id `m<n>`), `UPDATE <i> <content>`, `DELETE <i>`, `NOOP`;
//!   anything else → `[Noop]` + parse error.
//! - `test-retrieve` (no LM; keys `k` = 5, `per_speaker` = false): the store's lexical search.
//! - `test-distill` (role `answer`): prompt `ANSWER\nQ: <question>\n<i>: <content>…`; reply
//!   `Relevant: 0, 2\nAnswer: x`; `NOTEXT` → no text; no `Answer:` → parse error.

#![allow(dead_code)]

use memfactory_core::{
    Cfg, ChatMessage, Embedder, EpisodeCx, GenRequest, MemoryEdit, MemoryItem, MemoryOp, OpInput,
    OpOutput, Prompt, Result, SamplingParams, SearchQuery, episode::generate_lockstep,
};
use memfactory_lm_scripted::Rule;

pub fn rule(contains: &[&str], reply: &str) -> Rule {
    Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    }
}

fn chat(text: String) -> GenRequest {
    GenRequest {
        prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
        params: SamplingParams::greedy(200),
    }
}

// ---------------------------------------------------------------- test-extract

struct TestExtract;

fn parse_facts(text: &str, path: usize) -> (Vec<MemoryItem>, Option<String>) {
    let mut items = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (only, rest) = match line.strip_prefix('@') {
            Some(r) => {
                let (p, rest) = r.split_once(' ').unwrap_or((r, ""));
                (p.parse::<usize>().ok(), rest)
            }
            None => (None, line),
        };
        let Some((speaker, fact)) = rest.split_once('|') else {
            return (Vec::new(), Some(format!("not `Speaker|fact`: {line:?}")));
        };
        if only.is_some_and(|p| p != path) {
            continue;
        }
        let mut item = MemoryItem::new("", fact.trim());
        item.speaker = Some(speaker.trim().to_string());
        items.push(item);
    }
    (items, None)
}

impl MemoryOp for TestExtract {
    fn kind(&self) -> &'static str {
        "test-extract"
    }
    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        Ok(self
            .run_batch(std::slice::from_mut(cx), &[input])?
            .remove(0))
    }
    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        let reqs = inputs
            .iter()
            .map(|i| chat(format!("EXTRACT\n{}", i.observation)))
            .collect();
        let gens = generate_lockstep(cxs, "extract", reqs)?;
        Ok(cxs
            .iter()
            .zip(gens)
            .map(|(cx, g)| {
                let (items, parse_error) = parse_facts(&g.text, cx.episode.path);
                OpOutput {
                    items,
                    parse_error,
                    ..Default::default()
                }
            })
            .collect())
    }
}

// ---------------------------------------------------------------- test-manage

struct TestManage;

fn fresh_id(cx: &EpisodeCx<'_>) -> Result<String> {
    let max = cx
        .memory()?
        .iter()
        .filter_map(|i| i.id.strip_prefix('m')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    Ok(format!("m{}", max + 1))
}

fn parse_decision(
    cx: &EpisodeCx<'_>,
    text: &str,
    memory: &[MemoryItem],
) -> Result<std::result::Result<MemoryEdit, String>> {
    let text = text.trim();
    let (op, rest) = text.split_once(' ').unwrap_or((text, ""));
    let index = |s: &str| -> std::result::Result<String, String> {
        let i: usize = s.parse().map_err(|_| format!("bad index {s:?}"))?;
        memory
            .get(i)
            .map(|m| m.id.clone())
            .ok_or(format!("index {i} out of range"))
    };
    Ok(match op {
        "ADD" if !rest.is_empty() => Ok(MemoryEdit::Add {
            item: MemoryItem::new(fresh_id(cx)?, rest),
        }),
        "UPDATE" => {
            let (i, content) = rest.split_once(' ').unwrap_or((rest, ""));
            index(i).map(|id| MemoryEdit::Update {
                id,
                content: content.to_string(),
                embedding: None,
            })
        }
        "DELETE" => index(rest).map(|id| MemoryEdit::Delete { id }),
        "NOOP" => Ok(MemoryEdit::Noop),
        _ => Err(format!("unknown decision {text:?}")),
    })
}

impl MemoryOp for TestManage {
    fn kind(&self) -> &'static str {
        "test-manage"
    }
    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        Ok(self
            .run_batch(std::slice::from_mut(cx), &[input])?
            .remove(0))
    }
    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        let reqs = inputs
            .iter()
            .map(|i| {
                let mems: Vec<String> = i
                    .memory
                    .iter()
                    .enumerate()
                    .map(|(n, m)| format!("{n}: {}", m.content))
                    .collect();
                chat(format!(
                    "MANAGE\nfact: {}\nmemories:\n{}\nend",
                    i.observation,
                    mems.join("\n")
                ))
            })
            .collect();
        let gens = generate_lockstep(cxs, "manage", reqs)?;
        cxs.iter()
            .zip(gens)
            .zip(inputs)
            .map(|((cx, g), i)| {
                Ok(match parse_decision(cx, &g.text, i.memory)? {
                    Ok(e) => OpOutput {
                        edits: vec![e],
                        ..Default::default()
                    },
                    Err(msg) => OpOutput {
                        edits: vec![MemoryEdit::Noop],
                        parse_error: Some(msg),
                        ..Default::default()
                    },
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------- test-retrieve

struct TestRetrieve {
    k: usize,
    per_speaker: bool,
}

impl MemoryOp for TestRetrieve {
    fn kind(&self) -> &'static str {
        "test-retrieve"
    }
    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        let store = cx.store();
        let mut items = Vec::new();
        if self.per_speaker {
            let mut speakers: Vec<Option<String>> = Vec::new();
            for i in store.items()? {
                if !speakers.contains(&i.speaker) {
                    speakers.push(i.speaker.clone());
                }
            }
            for sp in speakers {
                let found = store.search(&SearchQuery {
                    text: input.question.to_string(),
                    k: usize::MAX,
                    ..Default::default()
                })?;
                items.extend(
                    found
                        .into_iter()
                        .map(|(i, _)| i)
                        .filter(|i| i.speaker == sp)
                        .take(self.k),
                );
            }
        } else {
            items = store
                .search(&SearchQuery {
                    text: input.question.to_string(),
                    k: self.k,
                    ..Default::default()
                })?
                .into_iter()
                .map(|(i, _)| i)
                .collect();
        }
        Ok(OpOutput {
            items,
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------- test-distill

struct TestDistill;

impl MemoryOp for TestDistill {
    fn kind(&self) -> &'static str {
        "test-distill"
    }
    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        Ok(self
            .run_batch(std::slice::from_mut(cx), &[input])?
            .remove(0))
    }
    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        let reqs = inputs
            .iter()
            .map(|i| {
                let mems: Vec<String> = i
                    .memory
                    .iter()
                    .enumerate()
                    .map(|(n, m)| format!("{n}: {}", m.content))
                    .collect();
                chat(format!("ANSWER\nQ: {}\n{}", i.question, mems.join("\n")))
            })
            .collect();
        let gens = generate_lockstep(cxs, "answer", reqs)?;
        Ok(gens
            .iter()
            .zip(inputs)
            .map(|(g, i)| {
                let text = g.text.trim();
                if text == "NOTEXT" {
                    return OpOutput::default();
                }
                let items = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Relevant:"))
                    .map(|r| {
                        r.split(',')
                            .filter_map(|n| n.trim().parse::<usize>().ok())
                            .filter_map(|n| i.memory.get(n).cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                match text.rsplit_once("Answer:") {
                    Some((_, a)) => OpOutput {
                        items,
                        text: Some(a.trim().to_string()),
                        ..Default::default()
                    },
                    None => OpOutput {
                        items,
                        text: Some(text.to_string()),
                        parse_error: Some("no `Answer:` line".into()),
                        ..Default::default()
                    },
                }
            })
            .collect())
    }
}

fn build_extract(_: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    Ok(Box::new(TestExtract))
}
fn build_manage(_: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    Ok(Box::new(TestManage))
}
fn build_retrieve(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    Ok(Box::new(TestRetrieve {
        k: cfg.get_checked("k", 5usize, |k| *k >= 1, "k >= 1")?,
        per_speaker: cfg.get("per_speaker", false)?,
    }))
}
fn build_distill(_: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    Ok(Box::new(TestDistill))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> { kind: "test-extract", about: "test", build: build_extract }
}
memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> { kind: "test-manage", about: "test", build: build_manage }
}
memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> { kind: "test-retrieve", about: "test", build: build_retrieve }
}
memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> { kind: "test-distill", about: "test", build: build_distill }
}

/// The `[agent]` table naming the four test ops, plus `extra` lines at the top level.
pub fn recipe(extra: &str) -> String {
    format!(
        "kind = \"memory-r1\"\n{extra}\n\
         [extract]\nkind = \"test-extract\"\n\
         [related]\nkind = \"test-retrieve\"\nk = 5\n\
         [manage]\nkind = \"test-manage\"\n\
         [retrieve]\nkind = \"test-retrieve\"\nk = 30\nper_speaker = true\n\
         [answer]\nkind = \"test-distill\"\n"
    )
}

// ---------------------------------------------------------------- counting LM

pub use memfactory_testkit::CountingLm;

// ---------------------------------------------------------------- embedder

/// Bag-of-words counts over a fixed vocabulary.
pub struct BowEmbedder;

pub const VOCAB: &[&str] = &[
    "caroline", "melanie", "boston", "seattle", "moved", "paints", "painting", "lives", "dog",
    "tea",
];

pub fn bow(text: &str) -> Vec<f32> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .collect();
    VOCAB
        .iter()
        .map(|v| words.iter().filter(|w| w == v).count() as f32)
        .collect()
}

impl Embedder for BowEmbedder {
    fn describe(&self) -> String {
        "bag of words".into()
    }
    fn dim(&self) -> usize {
        VOCAB.len()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| bow(t)).collect())
    }
}
