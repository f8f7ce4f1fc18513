//! Smoke test on a real LoCoMo conversation (skipped when the data is absent): every
//! session renders into turn lines the summarize op accepts (no parse error: turn ids and
//! dates survive the round trip), one memory per speaker per session lands in the bank
//! with the session's date, and the question is answered.

use std::path::PathBuf;

use memfactory_agent_rmm::Rmm;
use memfactory_core::{Cfg, Embedder, EpisodeCx, Paradigm, Result, StoreFactory};
use memfactory_data_locomo::{qa_to_sample, read_conversations};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_summarize as _;
use memfactory_store_memory::InMemoryFactory;

/// Hashed bag of words (64 buckets).
struct Hashed;
impl Embedder for Hashed {
    fn describe(&self) -> String {
        "hashed bag of words".into()
    }
    fn dim(&self) -> usize {
        64
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 64];
                for w in memfactory_core::memory::words(t) {
                    v[(memfactory_core::seed::fnv1a(w.as_bytes()) % 64) as usize] += 1.0;
                }
                v
            })
            .collect())
    }
}

#[test]
fn locomo_conversation_end_to_end() {
    let dir = std::env::var("MEMFACTORY_DATA").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    );
    let path = dir.join("locomo/locomo_conv26_conv30.json");
    if !path.exists() {
        println!("skipped: {} is absent", path.display());
        return;
    }
    let convs = read_conversations(&path, false).unwrap();
    let conv = &convs[0];
    let sample = qa_to_sample(conv, &conv.qa[0], None);
    let dialogue = sample.dialogue.clone().unwrap();

    let rule = |contains: &str, reply: &str| Rule {
        contains: vec![contains.into()],
        reply: reply.into(),
    };
    let lm = ScriptedLm::new(
        vec![
            rule("Decision (JSON):", r#"{"action": "ADD"}"#),
            // One memory citing the session's first turn (its id, cut from the prompt).
            rule(
                "(JSON):\n<|im_end|>",
                r#"{"memories": [{"summary": "Memory of {between:Conversation:\n[|]}", "turns": ["{between:Conversation:\n[|]}"]}]}"#,
            ),
            rule("Answer:", "I don't know [0]"),
        ],
        "",
    );
    let mut cfg = Cfg::new(
        "agent",
        toml::from_str("[rerank]\nsample = false\n[reflect]\nmax_new_tokens = 4000").unwrap(),
    );
    let agent = Rmm::from_cfg(&mut cfg).unwrap();
    cfg.finish().unwrap();
    let mut cxs = vec![
        EpisodeCx::new(&lm, InMemoryFactory.open("c").unwrap(), &sample.id, 0, 3)
            .with_embedder(Some(&Hashed)),
    ];
    agent.run_group(&sample, &mut cxs).unwrap();
    let bank = cxs[0].memory().unwrap();
    let ep = cxs.pop().unwrap().into_episode();
    let errors: Vec<&str> = ep
        .steps
        .iter()
        .filter_map(|s| match s {
            memfactory_core::Step::Edit {
                parse_error: Some(e),
                ..
            } => Some(e.as_str()),
            _ => None,
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let expected: usize = dialogue
        .sessions
        .iter()
        .map(|s| memfactory_agent_rmm::session_speakers(&dialogue, s).len())
        .sum();
    assert_eq!(bank.len(), expected);
    let first = &dialogue.sessions[0];
    assert_eq!(bank[0].content, format!("Memory of {}", first.turns[0].id));
    assert_eq!(bank[0].time, first.date);
    assert_eq!(bank[0].meta["turns"], first.turns[0].id);
    assert_eq!(ep.answer.as_deref(), Some("I don't know"));
    println!(
        "{}: {} sessions, {} memories, question {:?}",
        sample.id,
        dialogue.sessions.len(),
        bank.len(),
        sample.question
    );
}
