//! The overwrite op with the scripted LM: a reasoning model's `<think>…</think>` is stripped
//! before the memory is stored (MemAgent's `extract_solution`), while the recorded LM call
//! keeps the raw generation and its token ids; `strip_think = false` stores the raw text.

use memfactory_core::{
    Cfg, EpisodeCx, LanguageModel, MemoryEdit, MemoryOp, OpInput, OpOutput, Step, registry,
};
use memfactory_lm_scripted::ScriptedLm;
use memfactory_op_overwrite::ROLE;
use memfactory_store_memory::InMemoryStore;

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.update", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn cx(lm: &dyn LanguageModel, path: usize) -> EpisodeCx<'_> {
    EpisodeCx::new(
        lm,
        Box::new(InMemoryStore::new()),
        "s",
        path,
        3 + path as u64,
    )
}

fn input() -> OpInput<'static> {
    OpInput {
        question: "Where was X born?",
        observation: "Document 1: X was born in Paris.",
        memory: &[],
    }
}

const THINKING: &str = "<think>\nThe chunk says X was born in Paris. I should keep that.\n</think>\n\nX was born in Paris.";

fn overwritten(out: &OpOutput) -> &str {
    match out.edits.as_slice() {
        [MemoryEdit::Overwrite { content }] => content,
        e => panic!("one overwrite expected, got {e:?}"),
    }
}

/// The raw generation recorded for the single LM call of `c`.
fn recorded(c: &EpisodeCx<'_>) -> (String, Vec<u32>) {
    let Step::Lm(call) = &c.episode.steps[0] else {
        panic!("first step is not an LM call")
    };
    assert_eq!(call.role, ROLE);
    (call.output.text.clone(), call.output.token_ids.clone())
}

#[test]
fn think_is_stripped_from_the_stored_memory_but_kept_in_the_trajectory() {
    let lm = ScriptedLm::replay(vec![THINKING.into()]);
    let op = op("kind = \"overwrite\"\nmemory_tokens = 256");
    let mut c = cx(&lm, 0);
    let out = op.run(&mut c, input()).unwrap();
    assert_eq!(overwritten(&out), "X was born in Paris.");
    assert_eq!(out.text.as_deref(), Some("X was born in Paris."));
    // The trajectory keeps what the model generated, token for token (byte-level model:
    // one token per byte, then EOS).
    let (text, ids) = recorded(&c);
    assert_eq!(text, THINKING);
    let mut want: Vec<u32> = THINKING.bytes().map(u32::from).collect();
    want.push(memfactory_lm_scripted::EOS);
    assert_eq!(ids, want);
    // The store holds the stripped memory.
    c.apply(op.kind(), out.edits.clone(), None).unwrap();
    let stored: Vec<String> = c.memory().unwrap().into_iter().map(|i| i.content).collect();
    assert_eq!(stored, ["X was born in Paris."]);
}

#[test]
fn lockstep_batches_strip_each_path_and_text_without_think_is_unchanged() {
    let lm = ScriptedLm::replay(vec![
        THINKING.into(),
        "  plain memory  ".into(),
        "<think>reasoning cut off by the budget".into(),
        "<think>a</think>first<think>b</think>\nsecond\n".into(),
    ]);
    let op = op("kind = \"overwrite\"");
    let mut cxs: Vec<EpisodeCx<'_>> = (0..4).map(|p| cx(&lm, p)).collect();
    let inputs: Vec<OpInput<'_>> = (0..4).map(|_| input()).collect();
    let outs = op.run_batch(&mut cxs, &inputs).unwrap();
    let got: Vec<&str> = outs.iter().map(overwritten).collect();
    assert_eq!(
        got,
        [
            "X was born in Paris.",
            "plain memory",
            // MemAgent keeps an unclosed <think> whole.
            "<think>reasoning cut off by the budget",
            // The text after the last </think>.
            "second",
        ]
    );
    assert_eq!(recorded(&cxs[0]).0, THINKING);
}

#[test]
fn strip_think_false_stores_the_raw_text_and_bad_values_name_the_key() {
    let lm = ScriptedLm::replay(vec![THINKING.into()]);
    let op = op("kind = \"overwrite\"\nstrip_think = false");
    let mut c = cx(&lm, 0);
    let out = op.run(&mut c, input()).unwrap();
    assert_eq!(overwritten(&out), THINKING);

    let e = registry::build::<dyn MemoryOp>(Cfg::new(
        "agent.update",
        toml::from_str("kind = \"overwrite\"\nstrip_think = \"yes\"").unwrap(),
    ))
    .err()
    .expect("a string is not a boolean")
    .to_string();
    assert!(e.contains("agent.update.strip_think"), "{e}");
    // The resolved table records the default.
    let (_, resolved) = registry::build::<dyn MemoryOp>(Cfg::new(
        "agent.update",
        toml::from_str("kind = \"overwrite\"").unwrap(),
    ))
    .unwrap();
    assert_eq!(resolved["strip_think"], toml::Value::Boolean(true));
}
