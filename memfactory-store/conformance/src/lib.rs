//! # memfactory-store-conformance
//!
//! The [`MemoryStore`] contract as a test suite that every store crate runs against its own
//! store (as a dev-dependency): `memfactory-store-memory` and `memfactory-store-sqlite` both
//! call [`run_all`] (or [`run_all_factory`]) from a test.
//!
//! What it checks, one [`Check`] each (see [`CHECKS`]):
//! - `Add` / `Update` / `Delete` / `Overwrite` / `Noop` semantics and their [`EditOutcome`]s:
//!   a duplicate id on add, an unknown id on update or delete is `Rejected` and leaves the
//!   store unchanged; edits of one batch apply in order, each seeing the ones before it;
//! - items keep every field (id, content, speaker, time, embedding, meta) exactly;
//! - `items()` in insertion order (an update keeps the position, a re-added id goes last),
//!   `get`, `len`, `is_empty`;
//! - exact top-k `search`: cosine similarity when the query and the item both carry an
//!   embedding, else lexical overlap (the fraction of the query's distinct lower-cased
//!   alphanumeric words found in the item's content); best first, ties in insertion order;
//!   ordering and scores compared with a brute-force computation ([`expected_search`]) and
//!   with hand-computed values;
//! - per-speaker filtering, `k` of 0 and larger than the bank (up to `usize::MAX`), the
//!   empty bank, and banks isolated from each other.
//!
//! These are the semantics of the in-memory store, which is the reference: a store that
//! passes ranks and scores exactly as `memfactory-store-memory` does.
//!
//! The suite needs a way to open a bank by name ([`Open`]). Every check uses bank names
//! of its own (`conformance/<check>/…`) and expects a name it has not opened before to be
//! an empty bank. A failing check panics with a message that names the check.

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use memfactory_core::memory::OVERWRITE_ID;
use memfactory_core::{
    EditOutcome, MemoryEdit, MemoryItem, MemoryStore, Result, SearchQuery, StoreFactory,
};

/// Opens (creating if needed) the bank with the given name. A name the suite has not
/// opened before must give an empty bank; two names must give independent banks.
pub type Open<'a> = &'a dyn Fn(&str) -> Box<dyn MemoryStore>;

/// One check of the contract.
#[derive(Clone, Copy)]
pub struct Check {
    /// Short name (also the bank-name prefix it uses).
    pub name: &'static str,
    /// Runs the check; panics on a violation.
    pub run: fn(Open<'_>),
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Every check, in the order [`run_all`] runs them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "empty_bank",
        run: empty_bank,
    },
    Check {
        name: "items_keep_every_field",
        run: items_keep_every_field,
    },
    Check {
        name: "insertion_order",
        run: insertion_order,
    },
    Check {
        name: "duplicate_add_is_rejected",
        run: duplicate_add_is_rejected,
    },
    Check {
        name: "update",
        run: update,
    },
    Check {
        name: "unknown_ids_are_rejected",
        run: unknown_ids_are_rejected,
    },
    Check {
        name: "delete",
        run: delete,
    },
    Check {
        name: "overwrite",
        run: overwrite,
    },
    Check {
        name: "noop_and_empty_batch",
        run: noop_and_empty_batch,
    },
    Check {
        name: "batch_applies_in_order",
        run: batch_applies_in_order,
    },
    Check {
        name: "lexical_search",
        run: lexical_search,
    },
    Check {
        name: "dense_search_exact_top_k",
        run: dense_search_exact_top_k,
    },
    Check {
        name: "dense_search_ties_in_insertion_order",
        run: dense_search_ties_in_insertion_order,
    },
    Check {
        name: "mixed_and_degenerate_embeddings",
        run: mixed_and_degenerate_embeddings,
    },
    Check {
        name: "speaker_filter",
        run: speaker_filter,
    },
    Check {
        name: "k_bounds",
        run: k_bounds,
    },
    Check {
        name: "search_reflects_edits",
        run: search_reflects_edits,
    },
    Check {
        name: "banks_are_isolated",
        run: banks_are_isolated,
    },
];

/// Runs every check against `open`; panics listing every failed check with its message.
pub fn run_all(open: Open<'_>) {
    let failed = failures(open);
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(name, msg)| format!("- {name}: {msg}"))
            .collect();
        panic!(
            "{} of {} MemoryStore conformance checks failed:\n{}",
            failed.len(),
            CHECKS.len(),
            list.join("\n")
        );
    }
}

/// [`run_all`] over the banks of `factory` (an `open` error fails the check that opened).
pub fn run_all_factory(factory: &dyn StoreFactory) {
    run_all(&|bank| match factory.open(bank) {
        Ok(s) => s,
        Err(e) => panic!("opening bank `{bank}` of {}: {e}", factory.describe()),
    })
}

/// Runs every check against `open` and returns `(check name, panic message)` of each one
/// that failed (empty when the store conforms).
pub fn failures(open: Open<'_>) -> Vec<(&'static str, String)> {
    CHECKS
        .iter()
        .filter_map(|c| run_check(c, open).err().map(|m| (c.name, m)))
        .collect()
}

/// Runs one check, turning its panic into `Err(message)`.
pub fn run_check(check: &Check, open: Open<'_>) -> std::result::Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (check.run)(open))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_string())
    })
}

// ---------------------------------------------------------------------------------------
// The reference scoring (the in-memory store's semantics, written out independently).

/// Cosine similarity; 0 when the lengths differ, either is empty, or either has zero norm.
/// Accumulated in `f32` in index order.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The distinct lower-cased words of `s` (maximal runs of Unicode alphanumerics).
pub fn words(s: &str) -> HashSet<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// The score of `item` for `query`: cosine when both carry an embedding, else the fraction
/// of the query text's distinct words found in the item's content (0 for a query without
/// words).
pub fn score(query: &SearchQuery, item: &MemoryItem) -> f32 {
    match (&query.embedding, &item.embedding) {
        (Some(q), Some(e)) => cosine(q, e),
        _ => {
            let q = words(&query.text);
            if q.is_empty() {
                return 0.0;
            }
            let w = words(&item.content);
            q.iter().filter(|x| w.contains(*x)).count() as f32 / q.len() as f32
        }
    }
}

/// Brute-force search over `items` (given in insertion order): the speaker filter, then
/// every item scored, best first, ties in insertion order, the first `query.k`.
pub fn expected_search(items: &[MemoryItem], query: &SearchQuery) -> Vec<(MemoryItem, f32)> {
    let mut scored: Vec<(usize, f32)> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| query.speaker.is_none() || i.speaker == query.speaker)
        .map(|(n, i)| (n, score(query, i)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
        .into_iter()
        .take(query.k)
        .map(|(n, s)| (items[n].clone(), s))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// Scores may differ from the reference by this much (a store may sum in another order).
const SCORE_TOLERANCE: f32 = 1e-5;

fn bank(check: &str, name: &str) -> String {
    format!("conformance/{check}/{name}")
}

fn ok<T>(r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} returned an error: {e}"),
    }
}

fn apply(s: &mut dyn MemoryStore, edits: &[MemoryEdit]) -> Vec<EditOutcome> {
    let out = ok(s.apply(edits), "apply");
    assert_eq!(
        out.len(),
        edits.len(),
        "apply must return one outcome per edit (edits {edits:?}, outcomes {out:?})"
    );
    out
}

fn add(item: MemoryItem) -> MemoryEdit {
    MemoryEdit::Add { item }
}

fn upd(id: &str, content: &str, embedding: Option<Vec<f32>>) -> MemoryEdit {
    MemoryEdit::Update {
        id: id.into(),
        content: content.into(),
        embedding,
    }
}

fn del(id: &str) -> MemoryEdit {
    MemoryEdit::Delete { id: id.into() }
}

fn item(id: &str, content: &str) -> MemoryItem {
    MemoryItem::new(id, content)
}

fn with_emb(id: &str, content: &str, e: &[f32]) -> MemoryItem {
    let mut i = MemoryItem::new(id, content);
    i.embedding = Some(e.to_vec());
    i
}

fn with_speaker(mut i: MemoryItem, speaker: &str) -> MemoryItem {
    i.speaker = Some(speaker.into());
    i
}

fn is_rejected(o: &EditOutcome) -> bool {
    matches!(o, EditOutcome::Rejected(_))
}

fn ids(items: &[MemoryItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

/// `items()`, `len`, `is_empty` and `get` all agree with `expected` (in order), and
/// `get` finds none of `absent`.
fn assert_state(s: &dyn MemoryStore, expected: &[MemoryItem], absent: &[&str], ctx: &str) {
    let items = ok(s.items(), "items");
    assert_eq!(
        ids(&items),
        ids(expected),
        "{ctx}: items() ids (in order) differ"
    );
    assert_eq!(
        items, expected,
        "{ctx}: items() differ from the expected items"
    );
    assert_eq!(ok(s.len(), "len"), expected.len(), "{ctx}: len()");
    assert_eq!(
        ok(s.is_empty(), "is_empty"),
        expected.is_empty(),
        "{ctx}: is_empty()"
    );
    for e in expected {
        assert_eq!(
            ok(s.get(&e.id), "get").as_ref(),
            Some(e),
            "{ctx}: get({:?})",
            e.id
        );
    }
    for id in absent {
        assert_eq!(
            ok(s.get(id), "get"),
            None,
            "{ctx}: get({id:?}) of an absent id"
        );
    }
}

fn query(text: &str, embedding: Option<&[f32]>, speaker: Option<&str>, k: usize) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        embedding: embedding.map(|e| e.to_vec()),
        speaker: speaker.map(|s| s.to_string()),
        k,
    }
}

/// Runs `q` and checks the result against the brute-force reference over the store's own
/// items; returns `(id, score)` pairs for further checks.
fn search_matches_reference(s: &dyn MemoryStore, q: &SearchQuery, ctx: &str) -> Vec<(String, f32)> {
    let items = ok(s.items(), "items");
    let got = ok(s.search(q), "search");
    let want = expected_search(&items, q);
    let got_ids: Vec<&str> = got.iter().map(|(i, _)| i.id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|(i, _)| i.id.as_str()).collect();
    assert_eq!(
        got_ids, want_ids,
        "{ctx}: search {q:?} returned ids (best first) that differ from brute force"
    );
    for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
        assert!(
            (gs - ws).abs() <= SCORE_TOLERANCE,
            "{ctx}: search {q:?}: score of `{}` is {gs}, brute force gives {ws}",
            gi.id
        );
        assert_eq!(
            gi, wi,
            "{ctx}: search {q:?} returned an item unlike the stored one"
        );
    }
    for w in got.windows(2) {
        assert!(
            w[0].1 >= w[1].1,
            "{ctx}: search {q:?}: scores not best first ({} then {})",
            w[0].1,
            w[1].1
        );
    }
    got.into_iter().map(|(i, s)| (i.id, s)).collect()
}

/// [`search_matches_reference`] plus a hand-computed expectation (ids in order, scores).
fn assert_search(s: &dyn MemoryStore, q: &SearchQuery, expected: &[(&str, f32)], ctx: &str) {
    let got = search_matches_reference(s, q, ctx);
    let got_ids: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    let want_ids: Vec<&str> = expected.iter().map(|(i, _)| *i).collect();
    assert_eq!(got_ids, want_ids, "{ctx}: search {q:?} ids (best first)");
    for ((id, gs), (_, ws)) in got.iter().zip(expected) {
        assert!(
            (gs - ws).abs() <= SCORE_TOLERANCE,
            "{ctx}: search {q:?}: score of `{id}` is {gs}, expected {ws}"
        );
    }
}

/// A deterministic stream of numbers in [-1, 1) (SplitMix64).
struct Numbers(memfactory_core::seed::SplitMix64);

impl Numbers {
    fn next(&mut self) -> f32 {
        self.0.signed_unit()
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

fn empty_bank(open: Open<'_>) {
    let s = open(&bank("empty_bank", "a"));
    assert_state(s.as_ref(), &[], &["a", "memory", ""], "a new bank");
    for q in [
        query("anything at all", None, None, 5),
        query("", Some(&[1.0, 0.0]), None, 5),
        query("x", None, Some("alice"), 5),
        query("x", None, None, 0),
        query("x", Some(&[0.0, 1.0]), None, usize::MAX),
    ] {
        assert_eq!(
            ok(s.search(&q), "search").len(),
            0,
            "search {q:?} in an empty bank"
        );
    }
}

fn items_keep_every_field(open: Open<'_>) {
    let mut s = open(&bank("items_keep_every_field", "a"));
    let mut full = MemoryItem::new(
        "a1",
        "Alice's \"tea\" ;-- DROP TABLE items;\nline two — ünïcödé 🍵\ttab",
    );
    full.speaker = Some("alice".into());
    full.time = Some("2023-05-08 13:56".into());
    full.embedding = Some(vec![0.25, -1.5, 3.0e-8, 1.0e20, -7.125, f32::MIN_POSITIVE]);
    full.meta = BTreeMap::from([
        ("source".to_string(), "session 1, turn 3".to_string()),
        ("quote".to_string(), "\"x\" \\ {y}".to_string()),
        ("ünï".to_string(), "".to_string()),
    ]);
    let bare = item("b", "");
    let mut empty_fields = item("c", "empty speaker, time and embedding");
    empty_fields.speaker = Some(String::new());
    empty_fields.time = Some(String::new());
    empty_fields.embedding = Some(Vec::new());
    let mut time_only = item("d", "only a time");
    time_only.time = Some("yesterday".into());
    let odd_id = item("id with spaces/and:colons 'quoted'", "odd id");
    let lower = item("x", "lower-case id");
    let upper = item("X", "upper-case id (ids are case-sensitive)");

    let out = apply(
        s.as_mut(),
        &[
            add(full.clone()),
            add(bare.clone()),
            add(empty_fields.clone()),
        ],
    );
    assert_eq!(out, vec![EditOutcome::Applied; 3], "adding new ids");
    let out = apply(
        s.as_mut(),
        &[
            add(time_only.clone()),
            add(odd_id.clone()),
            add(lower.clone()),
            add(upper.clone()),
        ],
    );
    assert_eq!(
        out,
        vec![EditOutcome::Applied; 4],
        "adding new ids (case-distinct)"
    );
    let all = [full, bare, empty_fields, time_only, odd_id, lower, upper];
    assert_state(
        s.as_ref(),
        &all,
        &["A1", "a", "y"],
        "after adding items with every field",
    );
}

fn insertion_order(open: Open<'_>) {
    let mut s = open(&bank("insertion_order", "a"));
    // Ids deliberately neither sorted nor reverse-sorted.
    let names = [
        "m07", "a03", "z11", "b00", "q19", "c42", "y05", "d13", "x08", "e21", "k02", "f30",
    ];
    let mut expected: Vec<MemoryItem> = names
        .iter()
        .enumerate()
        .map(|(n, id)| item(id, &format!("item number {n}")))
        .collect();
    // In batches of 1, 2, 3, 6.
    let mut at = 0;
    for size in [1, 2, 3, 6] {
        let edits: Vec<MemoryEdit> = expected[at..at + size].iter().cloned().map(add).collect();
        assert_eq!(apply(s.as_mut(), &edits), vec![EditOutcome::Applied; size]);
        at += size;
    }
    assert_state(s.as_ref(), &expected, &[], "after 12 adds");

    // Updates keep the position; deletes close the gap; new adds go last.
    apply(
        s.as_mut(),
        &[upd("b00", "updated", None), del("z11"), del("e21")],
    );
    expected[3].content = "updated".into();
    expected.retain(|i| i.id != "z11" && i.id != "e21");
    let extra = item("a00", "added after deletes");
    apply(s.as_mut(), &[add(extra.clone())]);
    expected.push(extra);
    assert_state(
        s.as_ref(),
        &expected,
        &["z11", "e21"],
        "after update, deletes, add",
    );

    // A deleted id added again goes last, not back into its old place.
    let back = item("z11", "z11 again");
    apply(s.as_mut(), &[add(back.clone())]);
    expected.push(back);
    assert_state(
        s.as_ref(),
        &expected,
        &["e21"],
        "after re-adding a deleted id",
    );
}

fn duplicate_add_is_rejected(open: Open<'_>) {
    let mut s = open(&bank("duplicate_add_is_rejected", "a"));
    let mut a = with_emb("a", "original", &[1.0, 2.0]);
    a.speaker = Some("alice".into());
    a.meta.insert("k".into(), "v".into());
    apply(s.as_mut(), &[add(a.clone())]);

    let mut dup = with_emb("a", "impostor", &[3.0, 4.0]);
    dup.speaker = Some("bob".into());
    dup.time = Some("later".into());
    let b = item("b", "second");
    let out = apply(s.as_mut(), &[add(dup.clone()), add(b.clone())]);
    assert!(
        is_rejected(&out[0]),
        "adding an existing id: got {:?}",
        out[0]
    );
    assert_eq!(
        out[1],
        EditOutcome::Applied,
        "the next edit of the batch still applies"
    );
    assert_state(
        s.as_ref(),
        &[a.clone(), b.clone()],
        &[],
        "a rejected duplicate leaves the original untouched and in place",
    );

    // A duplicate within one batch.
    let c = item("c", "first c");
    let out = apply(s.as_mut(), &[add(c.clone()), add(item("c", "second c"))]);
    assert_eq!(out[0], EditOutcome::Applied);
    assert!(
        is_rejected(&out[1]),
        "second add of `c` in one batch: {:?}",
        out[1]
    );
    assert_state(
        s.as_ref(),
        &[a, b, c],
        &[],
        "after a duplicate within one batch",
    );
}

fn update(open: Open<'_>) {
    let mut s = open(&bank("update", "a"));
    let mut a = with_emb("a", "alpha", &[1.0, 0.0, 0.5]);
    a.speaker = Some("alice".into());
    a.time = Some("day 1".into());
    a.meta.insert("topic".into(), "greek".into());
    let b = with_emb("b", "beta", &[0.0, 1.0, 0.0]);
    let c = item("c", "gamma");
    apply(
        s.as_mut(),
        &[add(a.clone()), add(b.clone()), add(c.clone())],
    );

    // Content only: the embedding, speaker, time and meta stay, and so does the position.
    let out = apply(s.as_mut(), &[upd("a", "alpha, revised", None)]);
    assert_eq!(out, vec![EditOutcome::Applied], "update of an existing id");
    let mut a2 = a.clone();
    a2.content = "alpha, revised".into();
    assert_state(
        s.as_ref(),
        &[a2.clone(), b.clone(), c.clone()],
        &[],
        "an update without embedding keeps the old embedding, other fields and the position",
    );

    // Content and embedding.
    let out = apply(
        s.as_mut(),
        &[upd("b", "beta, re-embedded", Some(vec![0.5, 0.5, 0.25]))],
    );
    assert_eq!(out, vec![EditOutcome::Applied]);
    let mut b2 = b.clone();
    b2.content = "beta, re-embedded".into();
    b2.embedding = Some(vec![0.5, 0.5, 0.25]);
    assert_state(
        s.as_ref(),
        &[a2.clone(), b2.clone(), c.clone()],
        &[],
        "an update with embedding replaces it",
    );

    // An embedding given to an item that had none.
    apply(s.as_mut(), &[upd("c", "gamma", Some(vec![2.0]))]);
    let mut c2 = c.clone();
    c2.embedding = Some(vec![2.0]);
    assert_state(
        s.as_ref(),
        &[a2, b2, c2],
        &[],
        "an update can add an embedding to an item without one",
    );
}

fn unknown_ids_are_rejected(open: Open<'_>) {
    let mut s = open(&bank("unknown_ids_are_rejected", "a"));
    let out = apply(
        s.as_mut(),
        &[upd("ghost", "boo", Some(vec![1.0])), del("ghost")],
    );
    assert!(
        out.iter().all(is_rejected),
        "update/delete in an empty bank: {out:?}"
    );
    assert_state(
        s.as_ref(),
        &[],
        &["ghost"],
        "an empty bank after rejected edits",
    );

    let a = with_emb("a", "present", &[1.0, 1.0]);
    apply(s.as_mut(), &[add(a.clone())]);
    for e in [
        upd("A", "case differs", None),
        upd("a ", "trailing space", Some(vec![0.0, 1.0])),
        upd("", "empty id", None),
        del("A"),
        del("b"),
        del(""),
    ] {
        let out = apply(s.as_mut(), std::slice::from_ref(&e));
        assert!(is_rejected(&out[0]), "{e:?} on an unknown id: {:?}", out[0]);
        assert_state(
            s.as_ref(),
            std::slice::from_ref(&a),
            &["A", "a ", "", "b"],
            &format!("after rejected {e:?}"),
        );
    }
}

fn delete(open: Open<'_>) {
    let mut s = open(&bank("delete", "a"));
    let all: Vec<MemoryItem> = ["p", "q", "r", "s", "t"]
        .iter()
        .map(|id| with_speaker(item(id, &format!("content {id}")), "alice"))
        .collect();
    apply(
        s.as_mut(),
        &all.iter().cloned().map(add).collect::<Vec<_>>(),
    );

    let out = apply(s.as_mut(), &[del("r")]);
    assert_eq!(out, vec![EditOutcome::Applied], "delete of an existing id");
    let mut expected = all.clone();
    expected.remove(2);
    assert_state(
        s.as_ref(),
        &expected,
        &["r"],
        "after deleting the middle item",
    );

    let out = apply(s.as_mut(), &[del("r")]);
    assert!(is_rejected(&out[0]), "deleting an id twice: {:?}", out[0]);
    assert_state(s.as_ref(), &expected, &["r"], "after deleting an id twice");

    // Last and first.
    apply(s.as_mut(), &[del("t"), del("p")]);
    expected.retain(|i| i.id != "t" && i.id != "p");
    assert_state(
        s.as_ref(),
        &expected,
        &["t", "p"],
        "after deleting the last and first",
    );

    // Down to empty, then add again.
    apply(s.as_mut(), &[del("q"), del("s")]);
    assert_state(s.as_ref(), &[], &["q", "s"], "after deleting everything");
    let again = item("r", "r is back");
    assert_eq!(
        apply(s.as_mut(), &[add(again.clone())]),
        vec![EditOutcome::Applied]
    );
    assert_state(
        s.as_ref(),
        &[again],
        &["p"],
        "a deleted id can be added again",
    );
}

fn overwrite(open: Open<'_>) {
    let mut s = open(&bank("overwrite", "a"));
    let a = with_speaker(with_emb("a", "first", &[1.0]), "alice");
    let b = with_speaker(item("b", "second"), "bob");
    apply(s.as_mut(), &[add(a), add(b)]);

    let out = apply(
        s.as_mut(),
        &[MemoryEdit::Overwrite {
            content: "the whole memory".into(),
        }],
    );
    assert_eq!(out, vec![EditOutcome::Applied], "overwrite");
    let mem = MemoryItem::new(OVERWRITE_ID, "the whole memory");
    assert_state(
        s.as_ref(),
        std::slice::from_ref(&mem),
        &["a", "b"],
        "overwrite leaves exactly one bare item with id OVERWRITE_ID",
    );

    // The overwrite item is an ordinary item afterwards.
    let out = apply(
        s.as_mut(),
        &[
            add(item(OVERWRITE_ID, "a second memory")),
            upd(OVERWRITE_ID, "edited memory", None),
            add(item("c", "after the overwrite")),
        ],
    );
    assert!(
        is_rejected(&out[0]),
        "adding OVERWRITE_ID again: {:?}",
        out[0]
    );
    assert_eq!(out[1..], [EditOutcome::Applied, EditOutcome::Applied]);
    let mem2 = MemoryItem::new(OVERWRITE_ID, "edited memory");
    let c = item("c", "after the overwrite");
    assert_state(
        s.as_ref(),
        &[mem2, c],
        &["a", "b"],
        "edits after an overwrite",
    );

    // Overwrite again replaces the overwrite item too.
    apply(
        s.as_mut(),
        &[MemoryEdit::Overwrite {
            content: "third".into(),
        }],
    );
    assert_state(
        s.as_ref(),
        &[MemoryItem::new(OVERWRITE_ID, "third")],
        &["c"],
        "a second overwrite",
    );

    // On an empty bank.
    let mut e = open(&bank("overwrite", "empty"));
    let out = apply(
        e.as_mut(),
        &[MemoryEdit::Overwrite {
            content: String::new(),
        }],
    );
    assert_eq!(out, vec![EditOutcome::Applied]);
    assert_state(
        e.as_ref(),
        &[MemoryItem::new(OVERWRITE_ID, "")],
        &[],
        "overwrite of an empty bank",
    );
}

fn noop_and_empty_batch(open: Open<'_>) {
    let mut s = open(&bank("noop_and_empty_batch", "a"));
    assert_eq!(apply(s.as_mut(), &[]), Vec::<EditOutcome>::new());
    assert_eq!(
        apply(s.as_mut(), &[MemoryEdit::Noop]),
        vec![EditOutcome::Unchanged]
    );
    assert_state(s.as_ref(), &[], &[], "noop on an empty bank");
    let a = item("a", "kept");
    let out = apply(
        s.as_mut(),
        &[MemoryEdit::Noop, add(a.clone()), MemoryEdit::Noop],
    );
    assert_eq!(
        out,
        vec![
            EditOutcome::Unchanged,
            EditOutcome::Applied,
            EditOutcome::Unchanged
        ]
    );
    assert_eq!(apply(s.as_mut(), &[]), Vec::<EditOutcome>::new());
    assert_state(
        s.as_ref(),
        &[a],
        &[],
        "noops and empty batches change nothing",
    );
}

fn batch_applies_in_order(open: Open<'_>) {
    let mut s = open(&bank("batch_applies_in_order", "a"));
    let out = apply(
        s.as_mut(),
        &[
            upd("x", "too early", None),
            add(item("x", "one")),
            upd("x", "two", None),
            del("x"),
            del("x"),
            add(item("x", "three")),
            add(item("y", "why")),
            MemoryEdit::Overwrite {
                content: "over".into(),
            },
            del("y"),
            add(item("z", "zed")),
            upd(OVERWRITE_ID, "over and out", None),
        ],
    );
    use EditOutcome::Applied;
    assert!(
        is_rejected(&out[0]),
        "update before add in one batch: {:?}",
        out[0]
    );
    assert_eq!(
        out[1..4],
        [Applied, Applied, Applied],
        "add, update, delete"
    );
    assert!(
        is_rejected(&out[4]),
        "second delete in one batch: {:?}",
        out[4]
    );
    assert_eq!(
        out[5..8],
        [Applied, Applied, Applied],
        "add, add, overwrite"
    );
    assert!(
        is_rejected(&out[8]),
        "delete of an id the overwrite removed: {:?}",
        out[8]
    );
    assert_eq!(out[9..], [Applied, Applied]);
    assert_state(
        s.as_ref(),
        &[
            MemoryItem::new(OVERWRITE_ID, "over and out"),
            item("z", "zed"),
        ],
        &["x", "y"],
        "after one batch of dependent edits",
    );
}

fn lexical_search(open: Open<'_>) {
    let mut s = open(&bank("lexical_search", "a"));
    let texts = [
        ("l0", "The cat sat on the mat."),
        ("l1", "A DOG barked at the Cat!"),
        ("l2", "dogs and cats"),
        ("l3", "Café au lait, naïve-approach"),
        ("l4", ""),
        ("l5", "cat-dog hybrid"),
    ];
    apply(
        s.as_mut(),
        &texts
            .iter()
            .map(|(i, t)| add(item(i, t)))
            .collect::<Vec<_>>(),
    );
    let q = |t: &str, k: usize| query(t, None, None, k);
    let ctx = "lexical";
    // Whole words, case-insensitive, split on punctuation; plurals are other words.
    assert_search(
        s.as_ref(),
        &q("cat dog", 10),
        &[
            ("l1", 1.0),
            ("l5", 1.0),
            ("l0", 0.5),
            ("l2", 0.0),
            ("l3", 0.0),
            ("l4", 0.0),
        ],
        ctx,
    );
    // Repeated query words count once: {cat, mat}.
    assert_search(
        s.as_ref(),
        &q("cat CAT Cat, mat", 3),
        &[("l0", 1.0), ("l1", 0.5), ("l5", 0.5)],
        ctx,
    );
    // Unicode lower-casing and alphanumerics.
    assert_search(
        s.as_ref(),
        &q("CAFÉ NAÏVE lait tea", 2),
        &[("l3", 0.75), ("l0", 0.0)],
        ctx,
    );
    // A query without words scores everything 0: insertion order.
    for t in ["", "  !!! ... -- ", "\n"] {
        assert_search(
            s.as_ref(),
            &q(t, 4),
            &[("l0", 0.0), ("l1", 0.0), ("l2", 0.0), ("l3", 0.0)],
            ctx,
        );
    }
    // A word found only once in the bank.
    assert_search(s.as_ref(), &q("hybrid vigour", 1), &[("l5", 0.5)], ctx);
    // The same query with an embedding but items without: still lexical.
    assert_search(
        s.as_ref(),
        &query("the", Some(&[1.0, 0.0]), None, 3),
        &[("l0", 1.0), ("l1", 1.0), ("l2", 0.0)],
        ctx,
    );
}

fn dense_fixture(seed: u64, n: usize, dim: usize) -> Vec<MemoryItem> {
    let mut r = Numbers(memfactory_core::seed::SplitMix64(seed));
    let mut items: Vec<MemoryItem> = (0..n)
        .map(|i| {
            with_emb(
                &format!("v{:02}", (i * 7) % n),
                &format!("vector {i}"),
                &r.vec(dim),
            )
        })
        .collect();
    // Exact duplicates of earlier embeddings (ties); in the pair 10/21 the later-inserted
    // item has the smaller id, so ordering ties by id would show.
    let e3 = items[3].embedding.clone();
    let e10 = items[10].embedding.clone();
    items[17].embedding = e3;
    items[21].embedding = e10;
    items
}

fn dense_search_exact_top_k(open: Open<'_>) {
    const CHECK: &str = "dense_search_exact_top_k";
    let mut s = open(&bank(CHECK, "a"));
    let items = dense_fixture(0x5eed, 24, 6);
    apply(
        s.as_mut(),
        &items[..10].iter().cloned().map(add).collect::<Vec<_>>(),
    );
    apply(
        s.as_mut(),
        &items[10..].iter().cloned().map(add).collect::<Vec<_>>(),
    );
    assert_state(s.as_ref(), &items, &[], "dense fixture");

    let mut r = Numbers(memfactory_core::seed::SplitMix64(0xface));
    let mut queries: Vec<Vec<f32>> = (0..5).map(|_| r.vec(6)).collect();
    queries.push(items[3].embedding.clone().unwrap_or_default());
    queries.push(
        items[8]
            .embedding
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|x| -x)
            .collect(),
    );
    for (qn, qe) in queries.iter().enumerate() {
        // The fixture keeps distinct scores apart, so that summation order cannot reorder.
        let mut scores: Vec<f32> = items
            .iter()
            .map(|i| score(&query("", Some(qe), None, 0), i))
            .collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        for w in scores.windows(2) {
            assert!(
                w[0] == w[1] || w[0] - w[1] > 1e-4,
                "fixture: query {qn} has near-tied scores {} and {}",
                w[0],
                w[1]
            );
        }
        for k in [1, 3, 10, 24, 25, 1000] {
            let got = search_matches_reference(
                s.as_ref(),
                &query("vector", Some(qe), None, k),
                &format!("query {qn}, k {k}"),
            );
            assert_eq!(got.len(), k.min(24), "query {qn}, k {k}: number of results");
        }
    }
    // Hand-computed: the query equal to item 3's embedding finds item 3 first, its exact
    // duplicate (item 17, inserted later) second, both with score 1.
    let got = search_matches_reference(s.as_ref(), &query("", Some(&queries[5]), None, 2), "self");
    assert_eq!(
        got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        vec![items[3].id.as_str(), items[17].id.as_str()],
        "searching for an item's own embedding"
    );
    for (_, sc) in &got {
        assert!(
            (sc - 1.0).abs() < 1e-5,
            "cosine of a vector with itself: {sc}"
        );
    }
    let mut t = open(&bank(CHECK, "small"));
    apply(
        t.as_mut(),
        &[
            add(with_emb("e1", "", &[1.0, 0.0])),
            add(with_emb("e2", "", &[0.0, 1.0])),
            add(with_emb("e3", "", &[1.0, 1.0])),
            add(with_emb("e4", "", &[-2.0, 0.0])),
            add(with_emb("e5", "", &[3.0, -4.0])),
        ],
    );
    assert_search(
        t.as_ref(),
        &query("", Some(&[2.0, 0.0]), None, 5),
        &[
            ("e1", 1.0),
            ("e3", std::f32::consts::FRAC_1_SQRT_2),
            ("e5", 0.6),
            ("e2", 0.0),
            ("e4", -1.0),
        ],
        "hand-computed cosine (scale-invariant, negative scores last)",
    );
}

fn dense_search_ties_in_insertion_order(open: Open<'_>) {
    let mut s = open(&bank("dense_search_ties_in_insertion_order", "a"));
    // Ties inserted in an order that is neither id order nor reverse insertion order.
    let e = [0.3, -0.2, 0.9];
    apply(
        s.as_mut(),
        &[
            add(with_emb("t-m", "tie", &e)),
            add(with_emb("other", "x", &[0.0, 1.0, 0.0])),
            add(with_emb("t-z", "tie", &e)),
            add(with_emb("t-a", "tie", &e)),
        ],
    );
    let q = query("", Some(&e), None, 3);
    let got = search_matches_reference(s.as_ref(), &q, "ties");
    assert_eq!(
        got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["t-m", "t-z", "t-a"],
        "equal scores keep insertion order"
    );
    // After a delete and a re-add the re-added item is the latest inserted.
    apply(s.as_mut(), &[del("t-m"), add(with_emb("t-m", "tie", &e))]);
    let got = search_matches_reference(s.as_ref(), &q, "ties after re-add");
    assert_eq!(
        got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["t-z", "t-a", "t-m"],
        "a re-added item ranks after earlier-inserted ties"
    );
    // An update keeps the insertion position among ties.
    apply(s.as_mut(), &[upd("t-z", "tie, edited", Some(e.to_vec()))]);
    let got = search_matches_reference(s.as_ref(), &q, "ties after update");
    assert_eq!(
        got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["t-z", "t-a", "t-m"],
        "an updated item keeps its place among ties"
    );
}

fn mixed_and_degenerate_embeddings(open: Open<'_>) {
    let mut s = open(&bank("mixed_and_degenerate_embeddings", "a"));
    apply(
        s.as_mut(),
        &[
            add(with_emb("d0", "red apple", &[1.0, 0.0])),
            add(item("d1", "green apple")),
            add(with_emb("d2", "blue sky", &[1.0, 0.0, 0.0])),
            add(with_emb("d3", "red sky", &[0.0, 0.0])),
            add(with_emb("d4", "apple pie", &[0.6, 0.8])),
            add(with_emb("d5", "green apple", &[])),
        ],
    );
    let ctx = "mixed embeddings";
    // Cosine for items with an embedding (0 for another length, zero or empty vectors),
    // lexical for the item without one.
    assert_search(
        s.as_ref(),
        &query("apple", Some(&[1.0, 0.0]), None, 10),
        &[
            ("d0", 1.0),
            ("d1", 1.0),
            ("d4", 0.6),
            ("d2", 0.0),
            ("d3", 0.0),
            ("d5", 0.0),
        ],
        ctx,
    );
    assert_search(
        s.as_ref(),
        &query("green", Some(&[0.0, 1.0]), None, 3),
        &[("d1", 1.0), ("d4", 0.8), ("d0", 0.0)],
        ctx,
    );
    // A zero query vector: cosine 0 for every embedded item.
    assert_search(
        s.as_ref(),
        &query("apple green", Some(&[0.0, 0.0]), None, 10),
        &[
            ("d1", 1.0),
            ("d0", 0.0),
            ("d2", 0.0),
            ("d3", 0.0),
            ("d4", 0.0),
            ("d5", 0.0),
        ],
        ctx,
    );
    // No query embedding: lexical for every item, embedded or not.
    assert_search(
        s.as_ref(),
        &query("red sky", None, None, 4),
        &[("d3", 1.0), ("d0", 0.5), ("d2", 0.5), ("d1", 0.0)],
        ctx,
    );
}

fn speaker_filter(open: Open<'_>) {
    let mut s = open(&bank("speaker_filter", "a"));
    let mut none = with_emb("s2", "someone likes tea", &[0.6, 0.8]);
    none.speaker = None;
    let mut empty = with_emb("s5", "nobody likes tea", &[0.0, -1.0]);
    empty.speaker = Some(String::new());
    apply(
        s.as_mut(),
        &[
            add(with_speaker(
                with_emb("s0", "alice likes tea", &[1.0, 0.0]),
                "alice",
            )),
            add(with_speaker(
                with_emb("s1", "bob likes tea", &[0.8, 0.6]),
                "bob",
            )),
            add(none),
            add(with_speaker(
                with_emb("s3", "alice hates coffee", &[0.0, 1.0]),
                "alice",
            )),
            add(with_speaker(
                with_emb("s4", "bob hates coffee", &[1.0, 0.0]),
                "bob",
            )),
            add(empty),
        ],
    );
    let ctx = "speaker filter";
    assert_search(
        s.as_ref(),
        &query("tea", None, Some("alice"), 10),
        &[("s0", 1.0), ("s3", 0.0)],
        ctx,
    );
    assert_search(
        s.as_ref(),
        &query("tea", None, Some("bob"), 10),
        &[("s1", 1.0), ("s4", 0.0)],
        ctx,
    );
    assert_search(
        s.as_ref(),
        &query("tea", None, None, 10),
        &[
            ("s0", 1.0),
            ("s1", 1.0),
            ("s2", 1.0),
            ("s5", 1.0),
            ("s3", 0.0),
            ("s4", 0.0),
        ],
        ctx,
    );
    assert_search(
        s.as_ref(),
        &query("tea", None, Some("alice"), 1),
        &[("s0", 1.0)],
        ctx,
    );
    // Speakers match exactly: no one else, no case folding, "" is a speaker of its own.
    assert_search(s.as_ref(), &query("tea", None, Some("carol"), 10), &[], ctx);
    assert_search(s.as_ref(), &query("tea", None, Some("Alice"), 10), &[], ctx);
    assert_search(s.as_ref(), &query("tea", None, Some("ali"), 10), &[], ctx);
    assert_search(
        s.as_ref(),
        &query("tea", None, Some(""), 10),
        &[("s5", 1.0)],
        ctx,
    );
    // Dense with a speaker.
    assert_search(
        s.as_ref(),
        &query("", Some(&[1.0, 0.0]), Some("bob"), 10),
        &[("s4", 1.0), ("s1", 0.8)],
        ctx,
    );
    assert_search(
        s.as_ref(),
        &query("", Some(&[1.0, 0.0]), None, 10),
        &[
            ("s0", 1.0),
            ("s4", 1.0),
            ("s1", 0.8),
            ("s2", 0.6),
            ("s3", 0.0),
            ("s5", 0.0),
        ],
        ctx,
    );
}

fn k_bounds(open: Open<'_>) {
    let mut s = open(&bank("k_bounds", "a"));
    apply(
        s.as_mut(),
        &[
            add(with_emb("a", "one two", &[1.0, 0.0])),
            add(with_emb("b", "two three", &[0.0, 1.0])),
            add(with_emb("c", "three four", &[1.0, 1.0])),
        ],
    );
    for emb in [None, Some([0.0f32, 1.0].as_slice())] {
        for k in [0usize, 1, 2, 3, 4, 1000, usize::MAX] {
            let q = query("three", emb, None, k);
            let got = search_matches_reference(s.as_ref(), &q, "k bounds");
            assert_eq!(got.len(), k.min(3), "search {q:?}: number of results");
        }
        let q = query("three", emb, Some("nobody"), usize::MAX);
        assert!(ok(s.search(&q), "search").is_empty(), "{q:?}");
    }
    assert_search(
        s.as_ref(),
        &query("three", None, None, usize::MAX),
        &[("b", 1.0), ("c", 1.0), ("a", 0.0)],
        "k = usize::MAX",
    );
}

fn search_reflects_edits(open: Open<'_>) {
    let mut s = open(&bank("search_reflects_edits", "a"));
    apply(
        s.as_mut(),
        &[
            add(with_emb("a", "old words", &[1.0, 0.0])),
            add(with_emb("b", "other words", &[0.0, 1.0])),
        ],
    );
    let ctx = "search after edits";
    assert_search(
        s.as_ref(),
        &query("new", None, None, 2),
        &[("a", 0.0), ("b", 0.0)],
        ctx,
    );
    apply(s.as_mut(), &[upd("b", "brand new words", None)]);
    assert_search(
        s.as_ref(),
        &query("new", None, None, 2),
        &[("b", 1.0), ("a", 0.0)],
        ctx,
    );
    // The kept embedding still ranks.
    assert_search(
        s.as_ref(),
        &query("", Some(&[0.0, 1.0]), None, 1),
        &[("b", 1.0)],
        ctx,
    );
    apply(s.as_mut(), &[upd("a", "old words", Some(vec![0.0, 2.0]))]);
    assert_search(
        s.as_ref(),
        &query("", Some(&[0.0, 1.0]), None, 2),
        &[("a", 1.0), ("b", 1.0)],
        ctx,
    );
    apply(s.as_mut(), &[del("a")]);
    assert_search(
        s.as_ref(),
        &query("old words", Some(&[0.0, 1.0]), None, 5),
        &[("b", 1.0)],
        ctx,
    );
    apply(
        s.as_mut(),
        &[MemoryEdit::Overwrite {
            content: "fresh words".into(),
        }],
    );
    assert_search(
        s.as_ref(),
        &query("fresh", Some(&[0.0, 1.0]), None, 5),
        &[(OVERWRITE_ID, 1.0)],
        ctx,
    );
}

fn banks_are_isolated(open: Open<'_>) {
    const CHECK: &str = "banks_are_isolated";
    // Names that share a prefix or differ only in case are different banks.
    let mut x = open(&bank(CHECK, "x"));
    let mut y = open(&bank(CHECK, "x/y"));
    let mut z = open(&bank(CHECK, "X"));
    let xa = with_speaker(with_emb("a", "shared words in x", &[1.0, 0.0]), "alice");
    let ya = with_speaker(with_emb("a", "shared words in y", &[0.0, 1.0]), "alice");
    assert_eq!(
        apply(x.as_mut(), &[add(xa.clone())]),
        vec![EditOutcome::Applied]
    );
    assert_state(y.as_ref(), &[], &["a"], "bank y after adding to bank x");
    assert_state(z.as_ref(), &[], &["a"], "bank X after adding to bank x");
    assert_eq!(
        apply(y.as_mut(), &[add(ya.clone())]),
        vec![EditOutcome::Applied],
        "the same id in another bank is new"
    );
    let yb = item("b", "only in y");
    apply(y.as_mut(), &[add(yb.clone())]);
    assert_state(x.as_ref(), std::slice::from_ref(&xa), &["b"], "bank x");
    assert_state(y.as_ref(), &[ya.clone(), yb.clone()], &[], "bank y");

    // Searches see one bank only.
    for (s, want) in [(&x, "x"), (&y, "y")] {
        let got = ok(
            s.search(&query("shared words", Some(&[1.0, 1.0]), None, 10)),
            "search",
        );
        assert!(
            got.iter()
                .all(|(i, _)| i.content.ends_with(want) || i.id == "b"),
            "search in bank {want} returned items of another bank: {got:?}"
        );
    }
    let got = ok(
        z.search(&query("shared", None, Some("alice"), 10)),
        "search",
    );
    assert!(got.is_empty(), "search in an empty bank returned {got:?}");

    // Edits in one bank leave the others alone.
    apply(
        x.as_mut(),
        &[MemoryEdit::Overwrite {
            content: "x only".into(),
        }],
    );
    assert_state(
        y.as_ref(),
        &[ya.clone(), yb.clone()],
        &[OVERWRITE_ID],
        "bank y after overwriting x",
    );
    assert_eq!(apply(y.as_mut(), &[del("a")]), vec![EditOutcome::Applied]);
    assert_state(
        x.as_ref(),
        &[MemoryItem::new(OVERWRITE_ID, "x only")],
        &["a"],
        "bank x after deleting from y",
    );
    assert!(
        is_rejected(&apply(z.as_mut(), &[del("b")])[0]),
        "deleting in bank X an id that only bank x/y has"
    );
    assert!(
        is_rejected(&apply(z.as_mut(), &[upd(OVERWRITE_ID, "no", None)])[0]),
        "updating in bank X an id that only bank x has"
    );
    assert_state(
        y.as_ref(),
        std::slice::from_ref(&yb),
        &["a"],
        "bank y at the end",
    );
    assert_state(z.as_ref(), &[], &[], "bank X at the end");
}
