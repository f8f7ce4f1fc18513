//! The suite can fail: a faithful store written here passes every check, and each injected
//! bug (one at a time) makes the check that targets it fail.

use std::sync::{Arc, Mutex, MutexGuard};

use memfactory_core::memory::OVERWRITE_ID;
use memfactory_core::{EditOutcome, MemoryEdit, MemoryItem, MemoryStore, Result, SearchQuery};
use memfactory_store_conformance::{CHECKS, cosine, failures};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    None,
    DupAddReplaces,
    DupAddAppliedSilently,
    UpdateUnknownApplied,
    UpdateNoneClearsEmbedding,
    UpdateEmbeddingIgnored,
    UpdateMovesToEnd,
    DeleteUnknownApplied,
    DeleteSwapRemove,
    OverwriteAppends,
    OverwriteUnchanged,
    NoopApplied,
    RejectStopsBatch,
    ItemsReversed,
    DropsTime,
    DropsMeta,
    EmptySpeakerIsNone,
    EmptyEmbeddingIsNone,
    LenOffByOne,
    GetCaseInsensitive,
    TiesReversed,
    TiesById,
    SpeakerIgnored,
    SpeakerCaseInsensitive,
    KIgnored,
    LexicalCaseSensitive,
    LexicalDuplicateWords,
    LexicalSubstring,
    DotProduct,
    MissingEmbeddingScoresZero,
    EmptyEmbeddingLexical,
    SharedBanks,
}

struct Mutant {
    items: Arc<Mutex<Vec<MemoryItem>>>,
    bug: Bug,
}

impl Mutant {
    fn lock(&self) -> MutexGuard<'_, Vec<MemoryItem>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pos(items: &[MemoryItem], id: &str, bug: Bug) -> Option<usize> {
    items.iter().position(|i| {
        if bug == Bug::GetCaseInsensitive {
            i.id.eq_ignore_ascii_case(id)
        } else {
            i.id == id
        }
    })
}

fn query_words(text: &str, bug: Bug) -> Vec<String> {
    let mut w: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if bug == Bug::LexicalCaseSensitive {
                w.to_string()
            } else {
                w.to_lowercase()
            }
        })
        .collect();
    if bug != Bug::LexicalDuplicateWords {
        w.sort();
        w.dedup();
    }
    w
}

impl MemoryStore for Mutant {
    fn apply(&mut self, edits: &[MemoryEdit]) -> Result<Vec<EditOutcome>> {
        let bug = self.bug;
        let mut items = self.lock();
        let mut out = Vec::new();
        for e in edits {
            if bug == Bug::RejectStopsBatch
                && out.iter().any(|o| matches!(o, EditOutcome::Rejected(_)))
            {
                out.push(EditOutcome::Rejected("stopped".into()));
                continue;
            }
            let o = match e {
                MemoryEdit::Add { item } => {
                    let mut item = item.clone();
                    match bug {
                        Bug::DropsTime => item.time = None,
                        Bug::DropsMeta => item.meta.clear(),
                        Bug::EmptySpeakerIsNone if item.speaker.as_deref() == Some("") => {
                            item.speaker = None
                        }
                        Bug::EmptyEmbeddingIsNone
                            if item.embedding.as_ref().is_some_and(|e| e.is_empty()) =>
                        {
                            item.embedding = None
                        }
                        _ => {}
                    }
                    match pos(&items, &item.id, Bug::None) {
                        Some(p) if bug == Bug::DupAddReplaces => {
                            items[p] = item;
                            EditOutcome::Applied
                        }
                        Some(_) if bug == Bug::DupAddAppliedSilently => EditOutcome::Applied,
                        Some(_) => EditOutcome::Rejected("exists".into()),
                        None => {
                            items.push(item);
                            EditOutcome::Applied
                        }
                    }
                }
                MemoryEdit::Update {
                    id,
                    content,
                    embedding,
                } => match pos(&items, id, Bug::None) {
                    Some(p) => {
                        items[p].content = content.clone();
                        match bug {
                            Bug::UpdateNoneClearsEmbedding => {
                                items[p].embedding = embedding.clone()
                            }
                            Bug::UpdateEmbeddingIgnored => {}
                            _ if embedding.is_some() => items[p].embedding = embedding.clone(),
                            _ => {}
                        }
                        if bug == Bug::UpdateMovesToEnd {
                            let it = items.remove(p);
                            items.push(it);
                        }
                        EditOutcome::Applied
                    }
                    None if bug == Bug::UpdateUnknownApplied => EditOutcome::Applied,
                    None => EditOutcome::Rejected("unknown".into()),
                },
                MemoryEdit::Delete { id } => match pos(&items, id, Bug::None) {
                    Some(p) => {
                        if bug == Bug::DeleteSwapRemove {
                            items.swap_remove(p);
                        } else {
                            items.remove(p);
                        }
                        EditOutcome::Applied
                    }
                    None if bug == Bug::DeleteUnknownApplied => EditOutcome::Applied,
                    None => EditOutcome::Rejected("unknown".into()),
                },
                MemoryEdit::Overwrite { content } => match bug {
                    Bug::OverwriteAppends => {
                        items.push(MemoryItem::new(OVERWRITE_ID, content.clone()));
                        EditOutcome::Applied
                    }
                    Bug::OverwriteUnchanged => EditOutcome::Unchanged,
                    _ => {
                        *items = vec![MemoryItem::new(OVERWRITE_ID, content.clone())];
                        EditOutcome::Applied
                    }
                },
                MemoryEdit::Noop if bug == Bug::NoopApplied => EditOutcome::Applied,
                MemoryEdit::Noop => EditOutcome::Unchanged,
            };
            out.push(o);
        }
        Ok(out)
    }

    fn items(&self) -> Result<Vec<MemoryItem>> {
        let mut v = self.lock().clone();
        if self.bug == Bug::ItemsReversed {
            v.reverse();
        }
        Ok(v)
    }

    fn get(&self, id: &str) -> Result<Option<MemoryItem>> {
        let items = self.lock();
        Ok(pos(&items, id, self.bug).map(|p| items[p].clone()))
    }

    fn len(&self) -> Result<usize> {
        let n = self.lock().len();
        Ok(if self.bug == Bug::LenOffByOne {
            n + 1
        } else {
            n
        })
    }

    fn search(&self, q: &SearchQuery) -> Result<Vec<(MemoryItem, f32)>> {
        let bug = self.bug;
        let items = self.lock();
        let qw = query_words(&q.text, bug);
        let lexical = |content: &str| -> f32 {
            if qw.is_empty() {
                return 0.0;
            }
            let hits = if bug == Bug::LexicalSubstring {
                let c = content.to_lowercase();
                qw.iter().filter(|w| c.contains(w.as_str())).count()
            } else {
                let cw: Vec<String> = content
                    .split(|c: char| !c.is_alphanumeric())
                    .map(|w| w.to_lowercase())
                    .collect();
                qw.iter().filter(|w| cw.contains(w)).count()
            };
            hits as f32 / qw.len() as f32
        };
        let mut scored: Vec<(usize, f32)> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| match (&q.speaker, &i.speaker) {
                (None, _) => true,
                _ if bug == Bug::SpeakerIgnored => true,
                (Some(a), Some(b)) if bug == Bug::SpeakerCaseInsensitive => {
                    a.eq_ignore_ascii_case(b)
                }
                (a, b) => a.as_ref() == b.as_ref(),
            })
            .map(|(n, i)| {
                let s = match (&q.embedding, &i.embedding) {
                    (Some(_), Some(e)) if e.is_empty() && bug == Bug::EmptyEmbeddingLexical => {
                        lexical(&i.content)
                    }
                    (Some(a), Some(b)) if bug == Bug::DotProduct && a.len() == b.len() => {
                        a.iter().zip(b).map(|(x, y)| x * y).sum()
                    }
                    (Some(a), Some(b)) => cosine(a, b),
                    (Some(_), None) if bug == Bug::MissingEmbeddingScoresZero => 0.0,
                    _ => lexical(&i.content),
                };
                (n, s)
            })
            .collect();
        scored.sort_by(|a, b| {
            let tie = match bug {
                Bug::TiesReversed => b.0.cmp(&a.0),
                Bug::TiesById => items[a.0].id.cmp(&items[b.0].id),
                _ => a.0.cmp(&b.0),
            };
            b.1.total_cmp(&a.1).then(tie)
        });
        let k = if bug == Bug::KIgnored {
            usize::MAX
        } else {
            q.k
        };
        Ok(scored
            .into_iter()
            .take(k)
            .map(|(n, s)| (items[n].clone(), s))
            .collect())
    }
}

fn failures_with(bug: Bug) -> Vec<(&'static str, String)> {
    let shared = Arc::new(Mutex::new(Vec::new()));
    failures(&|_bank| {
        let items = if bug == Bug::SharedBanks {
            shared.clone()
        } else {
            Arc::new(Mutex::new(Vec::new()))
        };
        Box::new(Mutant { items, bug })
    })
}

#[test]
fn the_faithful_store_passes_every_check() {
    let failed = failures_with(Bug::None);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn every_injected_bug_fails_its_check() {
    let cases = [
        (Bug::DupAddReplaces, "duplicate_add_is_rejected"),
        (Bug::DupAddAppliedSilently, "duplicate_add_is_rejected"),
        (Bug::UpdateUnknownApplied, "unknown_ids_are_rejected"),
        (Bug::UpdateNoneClearsEmbedding, "update"),
        (Bug::UpdateEmbeddingIgnored, "update"),
        (Bug::UpdateMovesToEnd, "insertion_order"),
        (Bug::DeleteUnknownApplied, "unknown_ids_are_rejected"),
        (Bug::DeleteSwapRemove, "delete"),
        (Bug::OverwriteAppends, "overwrite"),
        (Bug::OverwriteUnchanged, "overwrite"),
        (Bug::NoopApplied, "noop_and_empty_batch"),
        (Bug::RejectStopsBatch, "batch_applies_in_order"),
        (Bug::ItemsReversed, "insertion_order"),
        (Bug::DropsTime, "items_keep_every_field"),
        (Bug::DropsMeta, "items_keep_every_field"),
        (Bug::EmptySpeakerIsNone, "items_keep_every_field"),
        (Bug::EmptyEmbeddingIsNone, "items_keep_every_field"),
        (Bug::LenOffByOne, "empty_bank"),
        (Bug::GetCaseInsensitive, "items_keep_every_field"),
        (Bug::TiesReversed, "dense_search_ties_in_insertion_order"),
        (Bug::TiesById, "dense_search_ties_in_insertion_order"),
        (Bug::SpeakerIgnored, "speaker_filter"),
        (Bug::SpeakerCaseInsensitive, "speaker_filter"),
        (Bug::KIgnored, "k_bounds"),
        (Bug::LexicalCaseSensitive, "lexical_search"),
        (Bug::LexicalDuplicateWords, "lexical_search"),
        (Bug::LexicalSubstring, "lexical_search"),
        (Bug::DotProduct, "dense_search_exact_top_k"),
        (
            Bug::MissingEmbeddingScoresZero,
            "mixed_and_degenerate_embeddings",
        ),
        (
            Bug::EmptyEmbeddingLexical,
            "mixed_and_degenerate_embeddings",
        ),
        (Bug::SharedBanks, "banks_are_isolated"),
    ];
    let mut missed = Vec::new();
    for (bug, check) in cases {
        let failed = failures_with(bug);
        if !failed.iter().any(|(name, _)| *name == check) {
            missed.push(format!(
                "{bug:?}: `{check}` passed (failed: {:?})",
                failed.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            ));
        }
    }
    assert!(missed.is_empty(), "bugs not caught:\n{}", missed.join("\n"));
}

#[test]
fn check_names_are_unique() {
    let mut names: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CHECKS.len());
}
