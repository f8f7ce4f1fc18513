//! BM25 retrieval on the real LoCoMo conversations (from `../shared/data`, skipped with a
//! printed reason when absent): every dialogue turn is a memory item; Memory-R1's answer
//! agent setting (top 30 per speaker = 60 candidates) must put the questions' evidence
//! turns among the candidates far more often than chance.

use std::path::{Path, PathBuf};

use memfactory_core::MemoryStore;
use memfactory_core::{Cfg, EpisodeCx, MemoryEdit, MemoryItem, MemoryOp, OpInput, registry};
use memfactory_data_locomo::read_conversations;
use memfactory_lm_scripted::ScriptedLm;
use memfactory_op_retrieve as _;
use memfactory_store_memory::InMemoryStore;

fn locomo_file() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/locomo/locomo_conv26_conv30.json");
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "skipping: {} is absent (a fresh clone has no ../shared/data)",
            p.display()
        );
        None
    }
}

#[test]
fn per_speaker_bm25_finds_locomo_evidence() {
    let Some(path) = locomo_file() else { return };
    let convs = read_conversations(&path, false).unwrap();
    let op = registry::build::<dyn MemoryOp>(Cfg::new(
        "agent.retrieve",
        toml::from_str("kind = \"retrieve\"\nk = 30\nper_speaker = true").unwrap(),
    ))
    .unwrap()
    .0;
    let lm = ScriptedLm::new(Vec::new(), "");
    let (mut questions, mut hits, mut chance) = (0usize, 0usize, 0.0f64);
    for conv in &convs {
        let mut store = InMemoryStore::new();
        let edits: Vec<MemoryEdit> = conv
            .dialogue
            .sessions
            .iter()
            .flat_map(|s| {
                s.turns.iter().map(|t| {
                    let mut it = MemoryItem::new(t.id.clone(), t.text.clone());
                    it.speaker = Some(t.speaker.clone());
                    it.time = s.date.clone();
                    MemoryEdit::Add { item: it }
                })
            })
            .collect();
        store.apply(&edits).unwrap();
        let n = edits.len();
        let mut cx = EpisodeCx::new(&lm, Box::new(store), &conv.sample_id, 0, 1);
        for qa in conv
            .qa
            .iter()
            .filter(|q| q.category != 5 && !q.evidence.is_empty())
        {
            let out = op
                .run(
                    &mut cx,
                    OpInput {
                        question: &qa.question,
                        observation: "",
                        memory: &[],
                    },
                )
                .unwrap();
            // Two speakers with > 30 turns each: 30 + 30 candidates, speaker A's first.
            assert_eq!(out.items.len(), 60, "{}", qa.question);
            let first = out.items[0].speaker.clone();
            assert!(out.items[..30].iter().all(|i| i.speaker == first));
            assert!(out.items[30..].iter().all(|i| i.speaker != first));
            questions += 1;
            if out.items.iter().any(|i| qa.evidence.contains(&i.id)) {
                hits += 1;
            }
            // Chance that 60 random turns include at least one of the evidence turns (upper
            // bound: 60 · |evidence| / n).
            chance += (60.0 * qa.evidence.len() as f64 / n as f64).min(1.0);
        }
    }
    let recall = hits as f64 / questions as f64;
    let chance = chance / questions as f64;
    println!(
        "LoCoMo ({} conversations, {questions} questions): evidence among the 60 BM25 candidates \
         for {:.1}% (chance <= {:.1}%)",
        convs.len(),
        100.0 * recall,
        100.0 * chance
    );
    assert!(questions > 100);
    assert!(
        recall > 0.6 && recall > chance + 0.2,
        "recall {recall:.3}, chance {chance:.3}"
    );
}
