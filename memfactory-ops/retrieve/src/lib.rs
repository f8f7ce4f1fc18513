//! # memfactory-op-retrieve
//!
//! Retrieval op: the top-`k` memories of a bank for a query, by BM25, by dense cosine
//! similarity of sentence embeddings, or by both fused with reciprocal rank. It makes no LM
//! call and decides no edit.
//!
//! How it fits in MemFactory: the `memory-r1` paradigm uses it twice — to fetch the
//! memories related to a new fact for the Memory Manager (`memfactory-op-update`), and to
//! fetch the Answer Agent's candidates (`memfactory-op-distill`). Memory-R1 (arXiv
//! 2508.19828) gives the answer agent **60 candidates: the top 30 of each of the two
//! speakers** — `k = 30, per_speaker = true` here.
//!
//! Input: [`OpInput::question`] is the query; every item of the episode's bank is read
//! with `cx.store().items()` and scored exactly (`observation` and `memory` are not used).
//! Output: [`OpOutput::items`] = the selected items, best first, each with
//! `meta["score"]` (the score, `{:.6}`) and `meta["rank"]` (1-based position in the output
//! list); no edits, no text. An empty bank gives no items (and needs no embedder). Items
//! are returned even when their score is 0 (a bank smaller than `k` is returned whole).
//!
//! Scoring (always over the whole bank, so a score does not depend on `per_speaker`):
//! - **bm25** ([`bm25_scores`]): tokens are the lowercase alphanumeric words of a text
//!   ([`tokens`], the word rule of `memfactory_core::memory::words`, duplicates kept); the
//!   score of document D for query Q sums over the *distinct* query terms t:
//!   `idf(t) · tf(t,D)·(k1+1) / (tf(t,D) + k1·(1 − b + b·|D|/avgdl))` with Lucene's
//!   `idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))` (N documents, df(t) of them
//!   containing t, |D| the token count of D, avgdl the mean token count);
//! - **dense**: cosine (`memfactory_core::memory::cosine`) of the query embedding
//!   (`cx.embed("op retrieve (dense)", &[query])`, the recipe's `[embedder]`) and each
//!   item's [`MemoryItem::embedding`]; items without one are embedded in one further call
//!   (not stored back, not attached to the output);
//! - **hybrid** ([`rrf`]): reciprocal rank fusion of the two rankings,
//!   `score(d) = 1/(rrf_k + rank_bm25(d)) + 1/(rrf_k + rank_dense(d))` with 1-based ranks.
//!
//! Every ranking sorts by score, best first, ties broken by insertion order ([`order`]).
//! Selection ([`select`]): the best `k`; with `per_speaker = true`, the best `k` of EACH
//! speaker's items (by [`MemoryItem::speaker`]; items without a speaker form their own
//! group), the groups concatenated in order of the speaker's first appearance in the bank,
//! each group best first.
//!
//! Measured (tests/locomo.rs, BM25 over raw turns of LoCoMo conv-26 and conv-30, 231
//! questions of categories 1-4): with `k = 30, per_speaker = true` an evidence turn is
//! among the 60 candidates for 74.9% of the questions (60 random turns: at most 20%).
//!
//! Recipe keys (defaults):
//!
//! ```toml
//! [agent.retrieve]
//! kind = "retrieve"
//! method = "bm25"       # "bm25" | "dense" | "hybrid" (dense and hybrid need an [embedder])
//! k = 10                # items returned (per speaker when per_speaker), >= 1
//! per_speaker = false   # top-k of each speaker, concatenated (Memory-R1: k = 30, true)
//! k1 = 1.2              # BM25 term-frequency saturation, >= 0
//! b = 0.75              # BM25 length normalisation, in [0, 1]
//! rrf_k = 60.0          # hybrid: reciprocal-rank-fusion constant, >= 0
//! ```

use std::collections::HashMap;

use memfactory_core::{
    Cfg, EpisodeCx, MemoryItem, MemoryOp, OpInput, OpOutput, Result, memory::cosine,
};

/// Who asks the embedder (shown when the recipe has no `[embedder]`).
pub const EMBED_WHO: &str = "op retrieve (dense)";

/// How items are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// BM25 over the items' words.
    Bm25,
    /// Cosine similarity of sentence embeddings.
    Dense,
    /// Reciprocal rank fusion of BM25 and dense.
    Hybrid,
}

impl Method {
    /// The recipe name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Bm25 => "bm25",
            Method::Dense => "dense",
            Method::Hybrid => "hybrid",
        }
    }
}

/// The retrieval op.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieve {
    /// Scoring method.
    pub method: Method,
    /// Items returned (per speaker when `per_speaker`).
    pub k: usize,
    /// Top-k of each speaker, concatenated.
    pub per_speaker: bool,
    /// BM25 k1.
    pub k1: f32,
    /// BM25 b.
    pub b: f32,
    /// Reciprocal-rank-fusion constant.
    pub rrf_k: f32,
}

impl Default for Retrieve {
    fn default() -> Self {
        Retrieve {
            method: Method::Bm25,
            k: 10,
            per_speaker: false,
            k1: 1.2,
            b: 0.75,
            rrf_k: 60.0,
        }
    }
}

impl Retrieve {
    /// One score per item of `items` for `query`, by `self.method`.
    pub fn scores(
        &self,
        cx: &EpisodeCx<'_>,
        query: &str,
        items: &[MemoryItem],
    ) -> Result<Vec<f32>> {
        let bm25 = || {
            let docs: Vec<&str> = items.iter().map(|i| i.content.as_str()).collect();
            bm25_scores(query, &docs, self.k1, self.b)
        };
        Ok(match self.method {
            Method::Bm25 => bm25(),
            Method::Dense => dense_scores(cx, query, items)?,
            Method::Hybrid => {
                let dense = dense_scores(cx, query, items)?;
                rrf(&[&bm25(), &dense], self.rrf_k)
            }
        })
    }
}

impl MemoryOp for Retrieve {
    fn kind(&self) -> &'static str {
        "retrieve"
    }

    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        let items = cx.store().items()?;
        if items.is_empty() {
            return Ok(OpOutput::default());
        }
        let scores = self.scores(cx, input.question, &items)?;
        let picked = select(&items, &scores, self.k, self.per_speaker);
        let items = picked
            .into_iter()
            .enumerate()
            .map(|(rank, i)| {
                let mut it = items[i].clone();
                it.meta.insert("score".into(), format!("{:.6}", scores[i]));
                it.meta.insert("rank".into(), (rank + 1).to_string());
                it
            })
            .collect();
        Ok(OpOutput {
            items,
            ..Default::default()
        })
    }
}

/// Cosine scores of `items` against `query`, embedding the query and the items that carry
/// no embedding (one call each) with the run's embedder.
fn dense_scores(cx: &EpisodeCx<'_>, query: &str, items: &[MemoryItem]) -> Result<Vec<f32>> {
    let q = cx.embed(EMBED_WHO, &[query])?.pop().unwrap_or_default();
    let missing: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].embedding.is_none())
        .collect();
    let mut computed: HashMap<usize, Vec<f32>> = HashMap::new();
    if !missing.is_empty() {
        let texts: Vec<&str> = missing.iter().map(|&i| items[i].content.as_str()).collect();
        computed = missing
            .into_iter()
            .zip(cx.embed(EMBED_WHO, &texts)?)
            .collect();
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, it)| match &it.embedding {
            Some(e) => cosine(&q, e),
            None => computed.get(&i).map_or(0.0, |e| cosine(&q, e)),
        })
        .collect())
}

/// The lowercase alphanumeric words of `s`, in order, duplicates kept (the word rule of
/// `memfactory_core::memory::words`).
pub fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// BM25 score of each of `docs` for `query` (see the crate docs for the formula), computed
/// in `f64`.
pub fn bm25_scores(query: &str, docs: &[&str], k1: f32, b: f32) -> Vec<f32> {
    let (k1, b) = (f64::from(k1), f64::from(b));
    let docs: Vec<Vec<String>> = docs.iter().map(|d| tokens(d)).collect();
    let n = docs.len() as f64;
    let avgdl = if docs.is_empty() {
        0.0
    } else {
        docs.iter().map(Vec::len).sum::<usize>() as f64 / n
    };
    let mut terms = tokens(query);
    let mut seen = std::collections::HashSet::new();
    terms.retain(|t| seen.insert(t.clone()));
    let tfs: Vec<HashMap<&str, usize>> = docs
        .iter()
        .map(|d| {
            let mut m = HashMap::new();
            for t in d {
                *m.entry(t.as_str()).or_insert(0) += 1;
            }
            m
        })
        .collect();
    let idf: Vec<f64> = terms
        .iter()
        .map(|t| {
            let df = tfs.iter().filter(|m| m.contains_key(t.as_str())).count() as f64;
            (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
        })
        .collect();
    docs.iter()
        .zip(&tfs)
        .map(|(d, tf)| {
            let len_norm = if avgdl > 0.0 {
                1.0 - b + b * d.len() as f64 / avgdl
            } else {
                1.0
            };
            terms
                .iter()
                .zip(&idf)
                .map(|(t, idf)| {
                    let f = *tf.get(t.as_str()).unwrap_or(&0) as f64;
                    if f == 0.0 {
                        0.0
                    } else {
                        idf * f * (k1 + 1.0) / (f + k1 * len_norm)
                    }
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// Indices of `scores`, best first; ties (and NaNs, which rank last) keep index order.
pub fn order(scores: &[f32]) -> Vec<usize> {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    idx
}

/// The 1-based rank of each index under [`order`].
pub fn ranks(scores: &[f32]) -> Vec<usize> {
    let mut r = vec![0; scores.len()];
    for (pos, i) in order(scores).into_iter().enumerate() {
        r[i] = pos + 1;
    }
    r
}

/// Reciprocal rank fusion: `Σ_lists 1 / (rrf_k + rank)` per document, ranks 1-based by
/// [`ranks`]. Every list scores the same documents; the result has the length of the first
/// (lists of another length are an API misuse and contribute nothing past their end).
pub fn rrf(score_lists: &[&[f32]], rrf_k: f32) -> Vec<f32> {
    let n = score_lists.first().map_or(0, |l| l.len());
    let mut out = vec![0.0f64; n];
    for list in score_lists {
        for (i, r) in ranks(list).into_iter().enumerate().take(n) {
            out[i] += 1.0 / (f64::from(rrf_k) + r as f64);
        }
    }
    out.into_iter().map(|s| s as f32).collect()
}

/// Indices of the selected items (see the crate docs): the best `k`, or with `per_speaker`
/// the best `k` of each speaker group, groups in order of first appearance.
pub fn select(items: &[MemoryItem], scores: &[f32], k: usize, per_speaker: bool) -> Vec<usize> {
    let ranked = order(scores);
    if !per_speaker {
        return ranked.into_iter().take(k).collect();
    }
    let mut groups: Vec<Option<&str>> = Vec::new();
    for it in items {
        let s = it.speaker.as_deref();
        if !groups.contains(&s) {
            groups.push(s);
        }
    }
    groups
        .into_iter()
        .flat_map(|g| {
            ranked
                .iter()
                .copied()
                .filter(move |&i| items[i].speaker.as_deref() == g)
                .take(k)
        })
        .collect()
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
    let d = Retrieve::default();
    let method = match cfg.get("method", d.method.name().to_string())?.as_str() {
        "bm25" => Method::Bm25,
        "dense" => Method::Dense,
        "hybrid" => Method::Hybrid,
        other => {
            return Err(cfg.error(
                "method",
                format!("expected \"bm25\", \"dense\" or \"hybrid\", found {other:?}"),
            ));
        }
    };
    Ok(Box::new(Retrieve {
        method,
        k: cfg.get_checked("k", d.k, |k| *k >= 1, "an item count >= 1")?,
        per_speaker: cfg.get("per_speaker", d.per_speaker)?,
        k1: cfg.get_checked("k1", d.k1, |v| v.is_finite() && *v >= 0.0, "a number >= 0")?,
        b: cfg.get_checked("b", d.b, |v| (0.0..=1.0).contains(v), "a number in [0, 1]")?,
        rrf_k: cfg.get_checked(
            "rrf_k",
            d.rrf_k,
            |v| v.is_finite() && *v >= 0.0,
            "a number >= 0",
        )?,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn MemoryOp> {
        kind: "retrieve",
        about: "Retrieval: exact BM25, dense (embedder) or hybrid (RRF) top-k over the bank, optionally top-k per speaker (Memory-R1: 30 per speaker)",
        build,
    }
}
