//! # memfactory-store-memory
//!
//! The in-memory [`MemoryStore`]: items kept in insertion order in a `Vec`, exact top-k
//! search by cosine similarity when the query and items carry embeddings, else by lexical
//! overlap (fraction of query words found in the item). Registered as store kind `memory`;
//! every episode opens a fresh, empty bank. Nothing persists.
//!
//! Recipe: `[store] kind = "memory"` (no other keys).

use memfactory_core::memory::rank;
use memfactory_core::{
    Cfg, EditOutcome, MemoryEdit, MemoryItem, MemoryStore, Result, SearchQuery, StoreFactory,
    memory::OVERWRITE_ID,
};

/// An in-memory bank.
#[derive(Debug, Default, Clone)]
pub struct InMemoryStore {
    items: Vec<MemoryItem>,
}

impl InMemoryStore {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.items.iter().position(|i| i.id == id)
    }
}

impl MemoryStore for InMemoryStore {
    fn apply(&mut self, edits: &[MemoryEdit]) -> Result<Vec<EditOutcome>> {
        let mut out = Vec::with_capacity(edits.len());
        for e in edits {
            out.push(match e {
                MemoryEdit::Add { item } => {
                    if self.position(&item.id).is_some() {
                        EditOutcome::Rejected(format!("id `{}` already exists", item.id))
                    } else {
                        self.items.push(item.clone());
                        EditOutcome::Applied
                    }
                }
                MemoryEdit::Update {
                    id,
                    content,
                    embedding,
                } => match self.position(id) {
                    Some(p) => {
                        self.items[p].content = content.clone();
                        if embedding.is_some() {
                            self.items[p].embedding = embedding.clone();
                        }
                        EditOutcome::Applied
                    }
                    None => EditOutcome::Rejected(format!("no item with id `{id}`")),
                },
                MemoryEdit::Delete { id } => match self.position(id) {
                    Some(p) => {
                        self.items.remove(p);
                        EditOutcome::Applied
                    }
                    None => EditOutcome::Rejected(format!("no item with id `{id}`")),
                },
                MemoryEdit::Overwrite { content } => {
                    self.items = vec![MemoryItem::new(OVERWRITE_ID, content.clone())];
                    EditOutcome::Applied
                }
                MemoryEdit::Noop => EditOutcome::Unchanged,
            });
        }
        Ok(out)
    }

    fn items(&self) -> Result<Vec<MemoryItem>> {
        Ok(self.items.clone())
    }

    fn get(&self, id: &str) -> Result<Option<MemoryItem>> {
        Ok(self.position(id).map(|p| self.items[p].clone()))
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<(MemoryItem, f32)>> {
        let rows = self
            .items
            .iter()
            .filter(|i| query.speaker.is_none() || i.speaker == query.speaker);
        Ok(
            rank(rows, query, |i| &i.content, |i| i.embedding.as_deref())
                .into_iter()
                .map(|(i, s)| (i.clone(), s))
                .collect(),
        )
    }

    fn len(&self) -> Result<usize> {
        Ok(self.items.len())
    }
}

/// Opens a fresh [`InMemoryStore`] per episode.
#[derive(Debug, Default)]
pub struct InMemoryFactory;

impl StoreFactory for InMemoryFactory {
    fn describe(&self) -> String {
        "in-memory store (fresh per episode)".into()
    }
    fn open(&self, _bank: &str) -> Result<Box<dyn MemoryStore>> {
        Ok(Box::new(InMemoryStore::new()))
    }
}

fn build(_cfg: &mut Cfg) -> Result<Box<dyn StoreFactory>> {
    Ok(Box::new(InMemoryFactory))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn StoreFactory> {
        kind: "memory",
        about: "In-memory store: insertion-ordered items, exact cosine or lexical top-k, fresh per episode",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_and_reject() {
        let mut s = InMemoryStore::new();
        let out = s
            .apply(&[
                MemoryEdit::Add {
                    item: MemoryItem::new("1", "Alice likes tea"),
                },
                MemoryEdit::Add {
                    item: MemoryItem::new("1", "dup"),
                },
                MemoryEdit::Update {
                    id: "1".into(),
                    content: "Alice likes green tea".into(),
                    embedding: None,
                },
                MemoryEdit::Delete { id: "9".into() },
                MemoryEdit::Noop,
            ])
            .unwrap();
        assert_eq!(out[0], EditOutcome::Applied);
        assert!(matches!(out[1], EditOutcome::Rejected(_)));
        assert_eq!(out[2], EditOutcome::Applied);
        assert!(matches!(out[3], EditOutcome::Rejected(_)));
        assert_eq!(out[4], EditOutcome::Unchanged);
        assert_eq!(
            s.get("1").unwrap().unwrap().content,
            "Alice likes green tea"
        );
        s.apply(&[MemoryEdit::Overwrite {
            content: "fresh".into(),
        }])
        .unwrap();
        let items = s.items().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, OVERWRITE_ID);
    }

    #[test]
    fn search_ranks_by_overlap_then_cosine() {
        let mut s = InMemoryStore::new();
        let mut a = MemoryItem::new("a", "the cat sat on the mat");
        a.embedding = Some(vec![1.0, 0.0]);
        let mut b = MemoryItem::new("b", "dogs bark");
        b.embedding = Some(vec![0.0, 1.0]);
        s.apply(&[MemoryEdit::Add { item: a }, MemoryEdit::Add { item: b }])
            .unwrap();
        let q = SearchQuery {
            text: "where is the cat".into(),
            k: 1,
            ..Default::default()
        };
        assert_eq!(s.search(&q).unwrap()[0].0.id, "a");
        let q = SearchQuery {
            embedding: Some(vec![0.1, 0.9]),
            k: 2,
            ..Default::default()
        };
        let r = s.search(&q).unwrap();
        assert_eq!(r[0].0.id, "b");
        assert_eq!(r.len(), 2);
    }
}
