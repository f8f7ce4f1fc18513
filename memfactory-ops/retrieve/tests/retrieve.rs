//! The retrieve op: BM25 and RRF arithmetic against hand-computed values, exact BM25 /
//! dense / hybrid retrieval over a store (with a deterministic bag-of-words test embedder),
//! per-speaker selection order, config errors naming keys.

use std::sync::Mutex;

use memfactory_core::{
    Cfg, Embedder, EpisodeCx, MemoryEdit, MemoryItem, MemoryOp, MemoryStore, OpInput, OpOutput,
    Result, memory::words, registry,
};
use memfactory_lm_scripted::ScriptedLm;
use memfactory_op_retrieve::{bm25_scores, order, ranks, rrf, select, tokens};
use memfactory_store_memory::InMemoryStore;

/// Bag-of-words counts over a fixed vocabulary; records every call's texts.
struct BowEmbedder {
    calls: Mutex<Vec<Vec<String>>>,
}

const VOCAB: [&str; 5] = ["dog", "cat", "boston", "seattle", "jazz"];

impl BowEmbedder {
    fn new() -> Self {
        BowEmbedder {
            calls: Mutex::new(Vec::new()),
        }
    }
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

impl Embedder for BowEmbedder {
    fn describe(&self) -> String {
        "bag of words (test)".into()
    }
    fn dim(&self) -> usize {
        VOCAB.len()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.calls
            .lock()
            .unwrap()
            .push(texts.iter().map(|t| t.to_string()).collect());
        Ok(texts
            .iter()
            .map(|t| {
                let toks = tokens(t);
                VOCAB
                    .iter()
                    .map(|v| toks.iter().filter(|w| w == v).count() as f32)
                    .collect()
            })
            .collect())
    }
}

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.retrieve", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn build_err(src: &str) -> String {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.retrieve", toml::from_str(src).unwrap()))
        .err()
        .expect("the table should be rejected")
        .to_string()
}

fn item(id: &str, speaker: Option<&str>, content: &str) -> MemoryItem {
    let mut it = MemoryItem::new(id, content);
    it.speaker = speaker.map(str::to_string);
    it
}

fn store(items: &[MemoryItem]) -> Box<dyn MemoryStore> {
    let mut s = InMemoryStore::new();
    let edits: Vec<MemoryEdit> = items
        .iter()
        .map(|i| MemoryEdit::Add { item: i.clone() })
        .collect();
    s.apply(&edits).unwrap();
    Box::new(s)
}

fn query(q: &str) -> OpInput<'_> {
    OpInput {
        question: q,
        observation: "",
        memory: &[],
    }
}

/// (id, score, rank) of each output item.
fn summary(out: &OpOutput) -> Vec<(String, String, String)> {
    out.items
        .iter()
        .map(|i| {
            (
                i.id.clone(),
                i.meta["score"].clone(),
                i.meta["rank"].clone(),
            )
        })
        .collect()
}

fn row(id: &str, score: &str, rank: usize) -> (String, String, String) {
    (id.to_string(), score.to_string(), rank.to_string())
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() < 1e-5
}

#[test]
fn tokens_keep_duplicates_with_the_core_word_rule() {
    let t = tokens("Apple, apple! Über-cool 42x");
    assert_eq!(t, ["apple", "apple", "über", "cool", "42x"]);
    let set: std::collections::HashSet<String> = t.into_iter().collect();
    assert_eq!(set, words("Apple, apple! Über-cool 42x"));
}

#[test]
fn bm25_matches_hand_computed_values() {
    // N = 3 docs, lengths 3, 2, 1 → avgdl = 2; k1 = 1.2, b = 0.75; query terms apple, cherry.
    // idf(apple)  = ln(1 + (3 - 1 + 0.5)/(1 + 0.5)) = ln(2.666667) = 0.980829  (df = 1)
    // idf(cherry) = ln(1 + (3 - 2 + 0.5)/(2 + 0.5)) = ln(1.6)      = 0.470004  (df = 2)
    // d0: apple tf 2, |D| 3: 0.980829 · 2·2.2 / (2 + 1.2·(0.25 + 0.75·3/2)) = 0.980829 · 4.4/3.65 = 1.1823695 (f32 prints 1.182369)
    // d1: cherry tf 1, |D| 2: 0.470004 · 2.2 / (1 + 1.2·1.0)               = 0.470004
    // d2: cherry tf 1, |D| 1: 0.470004 · 2.2 / (1 + 1.2·0.625) = 0.470004 · 2.2/1.75 = 0.590862
    let docs = ["apple banana apple", "banana cherry", "cherry"];
    let s = bm25_scores("Apple cherry apple", &docs, 1.2, 0.75);
    assert_eq!(s.len(), 3);
    assert!(close(s[0], 1.182370), "{s:?}");
    assert!(close(s[1], 0.470004), "{s:?}");
    assert!(close(s[2], 0.590862), "{s:?}");
    // b = 0: no length normalisation; d1 and d2 score alike: 0.470004 · 2.2/2.2.
    let s = bm25_scores("cherry", &docs, 1.2, 0.0);
    assert!(
        s[0] == 0.0 && close(s[1], 0.470004) && close(s[2], 0.470004),
        "{s:?}"
    );
    // No documents, empty query, empty documents.
    assert!(bm25_scores("x", &[], 1.2, 0.75).is_empty());
    assert_eq!(bm25_scores("", &docs, 1.2, 0.75), vec![0.0; 3]);
    assert_eq!(bm25_scores("x", &["", ""], 1.2, 0.75), vec![0.0; 2]);
}

#[test]
fn order_ranks_and_rrf_match_hand_computed_values() {
    // Ties keep insertion order; NaN ranks last.
    assert_eq!(order(&[0.2, 0.8, 0.8, f32::NAN, 0.5]), vec![1, 2, 4, 0, 3]);
    assert_eq!(ranks(&[0.2, 0.8, 0.8]), vec![3, 1, 2]);
    // A ranks d0, d1, d2 = 1, 2, 3; B = [0.2, 0.8, 0.8] ranks them 3, 1, 2 (tie → d1 first).
    // rrf_k = 60: d0 = 1/61 + 1/63 = 0.016393 + 0.015873 = 0.032266
    //             d1 = 1/62 + 1/61 = 0.016129 + 0.016393 = 0.032522
    //             d2 = 1/63 + 1/62 = 0.015873 + 0.016129 = 0.032002
    let a = [0.9f32, 0.5, 0.1];
    let b = [0.2f32, 0.8, 0.8];
    let f = rrf(&[&a, &b], 60.0);
    assert!(close(f[0], 0.0322665), "{f:?}");
    assert!(close(f[1], 0.0325225), "{f:?}");
    assert!(close(f[2], 0.0320020), "{f:?}");
    assert_eq!(order(&f), vec![1, 0, 2]);
    // rrf_k = 0, one list: 1/rank.
    assert_eq!(rrf(&[&a], 0.0), vec![1.0, 0.5, 1.0 / 3.0]);
    assert!(rrf(&[], 60.0).is_empty());
}

#[test]
fn bm25_retrieval_over_the_store() {
    let lm = ScriptedLm::new(Vec::new(), "");
    let items = [
        item("d0", None, "apple banana apple"),
        item("d1", None, "banana cherry"),
        item("d2", None, "cherry"),
    ];
    let mut cx = EpisodeCx::new(&lm, store(&items), "s", 0, 1);
    // The op reads the store, not `memory`.
    let ignored = [item("x", None, "apple cherry")];
    let out = op("kind = \"retrieve\"\nk = 2")
        .run(
            &mut cx,
            OpInput {
                question: "apple cherry",
                observation: "",
                memory: &ignored,
            },
        )
        .unwrap();
    assert_eq!(
        summary(&out),
        vec![row("d0", "1.182369", 1), row("d2", "0.590862", 2)]
    );
    assert!(out.edits.is_empty() && out.text.is_none() && out.parse_error.is_none());
    assert_eq!(out.items[1].content, "cherry");
    // No LM call, nothing recorded.
    assert!(cx.episode.steps.is_empty());
    // k larger than the bank: all items, zero scores included.
    let out = op("kind = \"retrieve\"\nk = 5")
        .run(&mut cx, query("apple"))
        .unwrap();
    let ids: Vec<&str> = out.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["d0", "d1", "d2"]);
    assert_eq!(out.items[2].meta["score"], "0.000000");
    // Empty bank: nothing, and no embedder is needed even for dense.
    let mut empty = EpisodeCx::new(&lm, store(&[]), "s", 0, 1);
    let out = op("kind = \"retrieve\"\nmethod = \"dense\"")
        .run(&mut empty, query("apple"))
        .unwrap();
    assert_eq!(out, OpOutput::default());
}

#[test]
fn per_speaker_selection_order() {
    let lm = ScriptedLm::new(Vec::new(), "");
    let items = [
        item("c1", Some("Caroline"), "c jazz"),
        item("m1", Some("Melanie"), "m jazz jazz"),
        item("n1", None, "n something"),
        item("c2", Some("Caroline"), "c jazz concert"),
        item("m2", Some("Melanie"), "m hiking"),
        item("c3", Some("Caroline"), "c painting"),
        item("m3", Some("Melanie"), "m jazz"),
    ];
    let mut cx = EpisodeCx::new(&lm, store(&items), "s", 0, 1);
    let ids = |out: &OpOutput| -> Vec<String> { out.items.iter().map(|i| i.id.clone()).collect() };
    // Overall: m1 (tf 2) first, then c1 and m3 tie (same length, tf 1): insertion order.
    let out = op("kind = \"retrieve\"\nk = 2")
        .run(&mut cx, query("jazz"))
        .unwrap();
    assert_eq!(ids(&out), ["m1", "c1"]);
    // Per speaker: Caroline's best 2, Melanie's best 2, then the speakerless group.
    let out = op("kind = \"retrieve\"\nk = 2\nper_speaker = true")
        .run(&mut cx, query("jazz"))
        .unwrap();
    assert_eq!(ids(&out), ["c1", "c2", "m1", "m3", "n1"]);
    let ranks: Vec<&str> = out.items.iter().map(|i| i.meta["rank"].as_str()).collect();
    assert_eq!(ranks, ["1", "2", "3", "4", "5"]);
    // The same scores with or without per_speaker.
    let overall = op("kind = \"retrieve\"\nk = 7")
        .run(&mut cx, query("jazz"))
        .unwrap();
    for it in &out.items {
        let same = overall.items.iter().find(|o| o.id == it.id).unwrap();
        assert_eq!(it.meta["score"], same.meta["score"]);
    }
    // `select` directly.
    let scores = [0.1, 0.9, 0.0, 0.5, 0.0, 0.7, 0.3];
    assert_eq!(select(&items, &scores, 1, true), vec![5, 1, 2]);
    assert_eq!(select(&items, &scores, 3, false), vec![1, 5, 3]);
}

/// Items for the dense tests; m3's stored vector (dog) disagrees with its text (jazz).
fn dense_items() -> Vec<MemoryItem> {
    let mut m3 = item("m3", Some("Melanie"), "Melanie likes jazz");
    m3.embedding = Some(vec![1.0, 0.0, 0.0, 0.0, 0.0]);
    vec![
        item("m1", Some("Caroline"), "Caroline has a dog"),
        item(
            "m2",
            Some("Caroline"),
            "Caroline lives in Boston with her cat",
        ),
        m3,
        item("m4", None, "Nothing relevant"),
    ]
}

#[test]
fn dense_retrieval_with_a_test_embedder() {
    let lm = ScriptedLm::new(Vec::new(), "");
    let emb = BowEmbedder::new();
    let mut cx = EpisodeCx::new(&lm, store(&dense_items()), "s", 0, 1).with_embedder(Some(&emb));
    // q = dog + boston = [1,0,1,0,0]; m1 = [1,0,0,0,0] → 1/√2 = 0.707107;
    // m2 = [0,1,1,0,0] → 1/(√2·√2) = 0.5; m3 (stored dog) → 0.707107; m4 = 0 → 0.
    let out = op("kind = \"retrieve\"\nmethod = \"dense\"\nk = 3")
        .run(&mut cx, query("dog in Boston"))
        .unwrap();
    assert_eq!(
        summary(&out),
        vec![
            row("m1", "0.707107", 1),
            row("m3", "0.707107", 2),
            row("m2", "0.500000", 3)
        ]
    );
    // The query in one call, the three items without a vector in one more; m3 not re-embedded.
    assert_eq!(
        emb.calls(),
        vec![
            vec!["dog in Boston".to_string()],
            vec![
                "Caroline has a dog".to_string(),
                "Caroline lives in Boston with her cat".to_string(),
                "Nothing relevant".to_string()
            ]
        ]
    );
    // Computed vectors are neither stored nor attached.
    assert!(out.items[0].embedding.is_none());
    assert!(cx.store().get("m1").unwrap().unwrap().embedding.is_none());
    assert!(cx.episode.steps.is_empty());
    // Without an embedder: an error naming the missing [embedder] table and who needed it.
    let mut bare = EpisodeCx::new(&lm, store(&dense_items()), "s", 0, 1);
    let err = op("kind = \"retrieve\"\nmethod = \"dense\"")
        .run(&mut bare, query("dog"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[embedder]") && err.contains("op retrieve (dense)"),
        "{err}"
    );
}

#[test]
fn hybrid_fuses_bm25_and_dense_ranks() {
    let lm = ScriptedLm::new(Vec::new(), "");
    let emb = BowEmbedder::new();
    let mut cx = EpisodeCx::new(&lm, store(&dense_items()), "s", 0, 1).with_embedder(Some(&emb));
    // BM25 ("dog in boston"; N = 4, lengths 4, 7, 3, 2, avgdl 4; idf of each term
    // ln(1 + 3.5/1.5) = 1.203973): m1 = 1.203973, m2 = 2 · 1.203973 · 2.2/2.875 = 1.842602,
    // m3 = m4 = 0 → ranks m2 1, m1 2, m3 3, m4 4. Dense ranks (above): m1 1, m3 2, m2 3, m4 4.
    // RRF (60): m1 = 1/62 + 1/61 = 0.032522, m2 = 1/61 + 1/63 = 0.032266,
    //           m3 = 1/63 + 1/62 = 0.032002, m4 = 1/64 + 1/64 = 0.031250.
    let out = op("kind = \"retrieve\"\nmethod = \"hybrid\"\nk = 4\nrrf_k = 60")
        .run(&mut cx, query("dog in Boston"))
        .unwrap();
    assert_eq!(
        summary(&out),
        vec![
            row("m1", "0.032522", 1),
            row("m2", "0.032266", 2),
            row("m3", "0.032002", 3),
            row("m4", "0.031250", 4)
        ]
    );
    let s = bm25_scores(
        "dog in Boston",
        &dense_items()
            .iter()
            .map(|i| i.content.as_str())
            .collect::<Vec<_>>(),
        1.2,
        0.75,
    );
    assert!(close(s[0], 1.203973) && close(s[1], 1.842602), "{s:?}");
}

#[test]
fn config_errors_name_keys() {
    let err = build_err("kind = \"retrieve\"\nmethod = \"tfidf\"");
    assert!(
        err.contains("`agent.retrieve.method`") && err.contains("\"tfidf\""),
        "{err}"
    );
    let err = build_err("kind = \"retrieve\"\nk = 0");
    assert!(
        err.contains("`agent.retrieve.k`") && err.contains(">= 1"),
        "{err}"
    );
    let err = build_err("kind = \"retrieve\"\nb = 1.5");
    assert!(err.contains("`agent.retrieve.b`"), "{err}");
    let err = build_err("kind = \"retrieve\"\nk1 = -0.1");
    assert!(err.contains("`agent.retrieve.k1`"), "{err}");
    let err = build_err("kind = \"retrieve\"\nrrf_k = -1");
    assert!(err.contains("`agent.retrieve.rrf_k`"), "{err}");
    let err = build_err("kind = \"retrieve\"\nper_speaker = \"yes\"");
    assert!(err.contains("`agent.retrieve.per_speaker`"), "{err}");
    let err = build_err("kind = \"retrieve\"\ntop_k = 3");
    assert!(
        err.contains("`agent.retrieve.top_k`") && err.contains("unknown key"),
        "{err}"
    );
    // Integers are fine where numbers are expected; the resolved table has every default.
    let (_, resolved) = registry::build::<dyn MemoryOp>(Cfg::new(
        "agent.retrieve",
        toml::from_str("kind = \"retrieve\"\nb = 1\nrrf_k = 60").unwrap(),
    ))
    .unwrap();
    let mut keys: Vec<&str> = resolved.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["b", "k", "k1", "kind", "method", "per_speaker", "rrf_k"]
    );
    assert_eq!(resolved["method"].as_str(), Some("bm25"));
    assert_eq!(resolved["k"].as_integer(), Some(10));
}
