//! Random edit sequences applied to the pgvector store and to the in-memory reference store
//! give the same outcomes, the same items and the same search results — scores equal bit for
//! bit, ties in the same order — including awkward values (NUL, mixed and degenerate
//! embeddings, NaN, ±∞). Needs `MEMFACTORY_PG_URL` (skipped without).

mod support;

use std::collections::BTreeMap;

use memfactory_core::{MemoryEdit, MemoryItem, MemoryStore, SearchQuery, StoreFactory};
use memfactory_store_memory::InMemoryStore;
use memfactory_store_pgvector::PgvectorFactory;

/// Draws on SplitMix64.
struct Rng(memfactory_core::seed::SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const IDS: &[&str] = &["a", "b", "c", "d", "e", "f", "nul\0", "", "memory"];
const WORDS: &[&str] = &[
    "tea",
    "Cat",
    "dog",
    "café",
    "x\0y",
    "red",
    "sky",
    "\u{10FFFF}0",
];
const SPEAKERS: &[Option<&str>] = &[None, Some("alice"), Some("bob"), Some(""), Some("a\0")];
const VALUES: &[f32] = &[-1.0, 0.0, 0.5, 1.0, 2.0, 0.25, -0.0];

fn text(r: &mut Rng) -> String {
    let n = r.below(4);
    (0..n)
        .map(|_| *r.pick(WORDS))
        .collect::<Vec<_>>()
        .join(if r.chance(50) { " " } else { ", " })
}

fn embedding(r: &mut Rng) -> Option<Vec<f32>> {
    if r.chance(25) {
        return None;
    }
    let dim = r.below(4);
    Some(
        (0..dim)
            .map(|_| match r.below(40) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                _ => *r.pick(VALUES),
            })
            .collect(),
    )
}

fn item(r: &mut Rng) -> MemoryItem {
    let mut i = MemoryItem::new(*r.pick(IDS), text(r));
    i.speaker = r.pick(SPEAKERS).map(str::to_string);
    if r.chance(30) {
        i.time = Some(text(r));
    }
    i.embedding = embedding(r);
    if r.chance(30) {
        i.meta = BTreeMap::from([(text(r), text(r))]);
    }
    i
}

fn edit(r: &mut Rng) -> MemoryEdit {
    match r.below(20) {
        0..=7 => MemoryEdit::Add { item: item(r) },
        8..=12 => MemoryEdit::Update {
            id: r.pick(IDS).to_string(),
            content: text(r),
            embedding: if r.chance(50) { embedding(r) } else { None },
        },
        13..=16 => MemoryEdit::Delete {
            id: r.pick(IDS).to_string(),
        },
        17 => MemoryEdit::Overwrite { content: text(r) },
        _ => MemoryEdit::Noop,
    }
}

/// An item with its embedding as bits (NaN equals itself).
type Key = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<Vec<u32>>,
    BTreeMap<String, String>,
);

fn key(i: &MemoryItem) -> Key {
    (
        i.id.clone(),
        i.content.clone(),
        i.speaker.clone(),
        i.time.clone(),
        i.embedding
            .as_ref()
            .map(|e| e.iter().map(|x| x.to_bits()).collect()),
        i.meta.clone(),
    )
}

fn search_keys(s: &dyn MemoryStore, q: &SearchQuery) -> Vec<(Key, u32)> {
    s.search(q)
        .unwrap()
        .iter()
        .map(|(i, sc)| (key(i), sc.to_bits()))
        .collect()
}

#[test]
fn random_edits_match_the_in_memory_store_exactly() {
    let Some(url) = support::server("random_edits_match_the_in_memory_store_exactly") else {
        return;
    };
    let t = support::Scratch::new(&url, "differential");
    let f = PgvectorFactory::new(&url, &t.table, true).unwrap();
    for seed in 0..4u64 {
        let mut r = Rng(memfactory_core::seed::SplitMix64(seed));
        let mut pg = f.open(&format!("differential/{seed}")).unwrap();
        let mut mem = InMemoryStore::new();
        for step in 0..120 {
            let n = 1 + r.below(4);
            let edits: Vec<MemoryEdit> = (0..n).map(|_| edit(&mut r)).collect();
            let ctx = format!("seed {seed}, step {step}, edits {edits:?}");
            assert_eq!(
                pg.apply(&edits).unwrap(),
                mem.apply(&edits).unwrap(),
                "{ctx}: outcomes"
            );
            let want: Vec<Key> = mem.items().unwrap().iter().map(key).collect();
            let got: Vec<Key> = pg.items().unwrap().iter().map(key).collect();
            assert_eq!(got, want, "{ctx}: items");
            assert_eq!(pg.len().unwrap(), want.len(), "{ctx}: len");
            for _ in 0..3 {
                let q = SearchQuery {
                    text: text(&mut r),
                    embedding: if r.chance(60) {
                        embedding(&mut r)
                    } else {
                        None
                    },
                    speaker: if r.chance(30) {
                        r.pick(SPEAKERS).map(str::to_string)
                    } else {
                        None
                    },
                    k: *r.pick(&[0, 1, 2, 3, 5, 100, usize::MAX]),
                };
                assert_eq!(
                    search_keys(pg.as_ref(), &q),
                    search_keys(&mem, &q),
                    "{ctx}: search {q:?}"
                );
            }
            let id = r.pick(IDS);
            assert_eq!(
                pg.get(id).unwrap().as_ref().map(key),
                mem.get(id).unwrap().as_ref().map(key),
                "{ctx}: get({id:?})"
            );
        }
    }
}
