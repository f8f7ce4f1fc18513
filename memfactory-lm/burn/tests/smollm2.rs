//! End-to-end tests on SmolLM2-135M-Instruct (GGUF Q4_1). Skipped, with a message, when the
//! model file is absent.

mod common;

use memfactory_core::{ChatMessage, Finish, GenRequest, LanguageModel, Prompt, SamplingParams};

#[test]
fn chat_answers_paris() {
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let t = std::time::Instant::now();
    let reply = lm.chat("What is the capital of France?", 24).unwrap();
    println!("reply in {:.1}s: {reply:?}", t.elapsed().as_secs_f32());
    assert!(reply.contains("Paris"), "{reply}");
}
