//! Invariants of the RULER-HotpotQA construction on synthetic records (no shared data).

use std::collections::HashSet;

use memfactory_data_ruler_hqa::{
    BuildError, BuildParams, HotpotRecord, Own, Paragraph, build_samples, document_pool,
};
use proptest::prelude::*;

/// Synthetic records: record r has `sizes[r]` paragraphs titled `t{r}_{p}`; the first two
/// are gold. `shared` makes record 1 reuse record 0's first paragraph (a duplicate in the
/// pool).
fn records(sizes: &[usize], shared: bool) -> Vec<HotpotRecord> {
    let mut out: Vec<HotpotRecord> = sizes
        .iter()
        .enumerate()
        .map(|(r, &n)| {
            let context: Vec<Paragraph> = (0..n)
                .map(|p| Paragraph {
                    title: format!("t{r}_{p}"),
                    sentences: vec![format!("alpha {r} {p}."), format!(" beta {r} {p}.")],
                })
                .collect();
            HotpotRecord {
                id: format!("q{r}"),
                question: format!("what is {r}?"),
                answer: format!("answer {r}"),
                kind: Some("bridge".into()),
                level: Some("hard".into()),
                supporting_titles: context.iter().take(2).map(|p| p.title.clone()).collect(),
                context,
            }
        })
        .collect();
    if shared && out.len() > 1 {
        let p = out[0].context[0].clone();
        out[1].context.push(p);
    }
    out
}

/// The documents of a rendered context, checking the `Document {i}:` headers on the way.
fn split_documents(context: &str) -> Vec<String> {
    context
        .split("\n\n")
        .enumerate()
        .map(|(i, block)| {
            let header = format!("Document {}:\n", i + 1);
            block
                .strip_prefix(&header)
                .unwrap_or_else(|| panic!("block {i} lacks {header:?}: {block:?}"))
                .to_string()
        })
        .collect()
}

fn arb_case() -> impl Strategy<Value = (Vec<usize>, bool, usize, u64)> {
    (prop::collection::vec(1usize..=10, 2..12), any::<bool>()).prop_flat_map(|(sizes, shared)| {
        let own_max = sizes.iter().copied().max().unwrap() + usize::from(shared);
        let pool = document_pool(&records(&sizes, shared)).len();
        (Just(sizes), Just(shared), own_max..=pool, any::<u64>())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn instances_hold_their_invariants((sizes, shared, docs, seed) in arb_case()) {
        let recs = records(&sizes, shared);
        let pool: HashSet<String> = document_pool(&recs).into_iter().collect();
        let params = BuildParams { docs, seed, offset: 0, limit: None, ..Default::default() };
        let samples = build_samples(&recs, &params).unwrap();
        prop_assert_eq!(samples.len(), recs.len());
        for (rec, s) in recs.iter().zip(&samples) {
            prop_assert_eq!(&s.id, &rec.id);
            prop_assert_eq!(&s.question, &rec.question);
            prop_assert_eq!(&s.answers, &vec![rec.answer.clone()]);
            prop_assert!(!s.context.contains(&rec.question));
            // Exactly `docs` documents, headers 1..=docs and no more.
            let docs_text = split_documents(&s.context);
            prop_assert_eq!(docs_text.len(), docs);
            prop_assert_eq!(s.context.matches("Document ").count(), docs);
            let distinct: HashSet<&String> = docs_text.iter().collect();
            prop_assert_eq!(distinct.len(), docs, "documents repeat");
            prop_assert!(docs_text.iter().all(|d| pool.contains(d)));
            // Every own paragraph is present; gold ones exactly at `gold_docs`.
            for p in &rec.context {
                prop_assert!(docs_text.contains(&p.document()));
            }
            let gold: Vec<usize> = s.meta["gold_docs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let mut expected: Vec<usize> = docs_text
                .iter()
                .enumerate()
                .filter(|(_, d)| {
                    rec.context
                        .iter()
                        .any(|p| &p.document() == *d && rec.supporting_titles.contains(&p.title))
                })
                .map(|(i, _)| i + 1)
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(gold, expected);
            prop_assert_eq!(s.meta["docs"].as_u64(), Some(docs as u64));
            prop_assert_eq!(s.meta["source"].as_str(), Some("hotpotqa"));
            prop_assert_eq!(s.category.as_deref(), Some("bridge"));
        }
        // Same seed: identical bytes.
        prop_assert_eq!(&build_samples(&recs, &params).unwrap(), &samples);
        // A slice of the file gives the same instances for the questions it keeps.
        let sliced = build_samples(&recs, &BuildParams { offset: 1, limit: Some(1), ..params }).unwrap();
        prop_assert_eq!(sliced.len(), 1);
        prop_assert_eq!(&sliced[0], &samples[1]);
    }

    #[test]
    fn gold_only_instances_keep_the_gold_paragraphs_and_no_other_own_one(
        (sizes, shared, docs, seed) in arb_case()
    ) {
        let recs = records(&sizes, shared);
        let pool: HashSet<String> = document_pool(&recs).into_iter().collect();
        // At least the gold paragraphs (2, or the record's own count when smaller) fit.
        let docs = docs.max(2);
        let params = BuildParams { docs, seed, own: Own::Gold, ..Default::default() };
        let samples = match build_samples(&recs, &params) {
            Ok(s) => s,
            // A small synthetic pool may not hold docs - 2 documents outside a record's own.
            Err(BuildError::PoolTooSmall { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        for (rec, s) in recs.iter().zip(&samples) {
            let docs_text = split_documents(&s.context);
            prop_assert_eq!(docs_text.len(), docs);
            prop_assert!(docs_text.iter().all(|d| pool.contains(d)));
            let gold: Vec<String> = rec.context.iter()
                .filter(|p| rec.supporting_titles.contains(&p.title))
                .map(|p| p.document())
                .collect();
            for p in &rec.context {
                let present = docs_text.contains(&p.document());
                prop_assert_eq!(present, gold.contains(&p.document()), "{}", p.title);
            }
            prop_assert_eq!(s.meta["gold_docs"].as_array().unwrap().len(),
                            gold.iter().collect::<HashSet<_>>().len());
        }
    }

    #[test]
    fn too_few_docs_is_an_error(sizes in prop::collection::vec(2usize..=10, 1..6)) {
        let recs = records(&sizes, false);
        let own_max = *sizes.iter().max().unwrap();
        let err = build_samples(&recs, &BuildParams { docs: own_max - 1, ..Default::default() })
            .unwrap_err();
        let is_too_few = matches!(err, BuildError::TooFewDocs { .. });
        prop_assert!(is_too_few, "{err}");
    }
}

#[test]
fn different_seeds_usually_differ() {
    let recs = records(&[10; 30], false);
    let build = |seed| {
        build_samples(
            &recs,
            &BuildParams {
                docs: 20,
                seed,
                offset: 0,
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0)
        .context
    };
    let distinct: HashSet<String> = (0..20).map(build).collect();
    assert!(distinct.len() >= 19, "only {} distinct", distinct.len());
    // The document count changes the instance too (it is part of the seed).
    assert_ne!(
        build_samples(
            &recs,
            &BuildParams {
                docs: 20,
                limit: Some(1),
                ..Default::default()
            }
        )
        .unwrap()[0]
            .context,
        build_samples(
            &recs,
            &BuildParams {
                docs: 21,
                limit: Some(1),
                ..Default::default()
            }
        )
        .unwrap()[0]
            .context
    );
}

#[test]
fn pool_limits_docs_and_offset_limits_records() {
    let recs = records(&[10, 10], false);
    let err = build_samples(
        &recs,
        &BuildParams {
            docs: 21,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err, BuildError::PoolTooSmall { docs: 21, pool: 20 });
    assert!(err.to_string().contains("at most 20"), "{err}");
    // docs = pool size: every document of the file appears.
    let all = build_samples(
        &recs,
        &BuildParams {
            docs: 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(all[0].context.matches("Document ").count(), 20);
    let err = build_samples(
        &recs,
        &BuildParams {
            docs: 10,
            offset: 2,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::OffsetPastEnd { .. }), "{err}");
    let none = build_samples(
        &recs,
        &BuildParams {
            docs: 10,
            limit: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(none.is_empty());
}

#[test]
fn document_text_is_title_newline_joined_sentences() {
    let p = Paragraph {
        title: "Ed Wood".into(),
        sentences: vec![
            "Ed Wood was a filmmaker.".into(),
            " He was American.".into(),
        ],
    };
    assert_eq!(
        p.document(),
        "Ed Wood\nEd Wood was a filmmaker. He was American."
    );
    assert_eq!(
        memfactory_data_ruler_hqa::render(&["a\nb", "c\nd"]),
        "Document 1:\na\nb\n\nDocument 2:\nc\nd"
    );
}
