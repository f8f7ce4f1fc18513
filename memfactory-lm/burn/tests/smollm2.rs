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

fn greedy(prompt: Prompt, n: usize) -> GenRequest {
    GenRequest {
        prompt,
        params: SamplingParams::greedy(n),
    }
}

#[test]
fn batched_generation_equals_one_at_a_time() {
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let mut reqs = vec![
        greedy(
            Prompt::Chat(vec![ChatMessage::user("Name three colors.")]),
            12,
        ),
        greedy(Prompt::Text("The quick brown fox".into()), 9),
        greedy(
            Prompt::Chat(vec![
                ChatMessage::system("You answer in one word."),
                ChatMessage::user(
                    "What is the largest planet in the solar system? Think about it carefully.",
                ),
            ]),
            6,
        ),
        greedy(Prompt::Text("1, 2, 3, 4,".into()), 12),
    ];
    reqs.push(GenRequest {
        prompt: Prompt::Text("Once upon a time".into()),
        params: SamplingParams {
            max_new_tokens: 10,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            stop: vec![],
            seed: 42,
        },
    });
    let t = std::time::Instant::now();
    let batched = lm.generate(&reqs).unwrap();
    println!("batched in {:.2}s", t.elapsed().as_secs_f32());
    for (r, b) in reqs.iter().zip(&batched) {
        let single = lm.generate(std::slice::from_ref(r)).unwrap().remove(0);
        println!("{:?} -> {:?}", b.text, single.text);
        assert_eq!(b.prompt_ids, single.prompt_ids);
        assert_eq!(
            b.token_ids, single.token_ids,
            "tokens differ for {:?}",
            r.prompt
        );
        assert_eq!(b.finish, single.finish);
        for (x, y) in b.logprobs.iter().zip(&single.logprobs) {
            assert!((x - y).abs() < 1e-4, "logprob {x} vs {y}");
        }
        assert!(b.logprobs.iter().all(|&l| l <= 1e-6 && l.is_finite()));
        assert_eq!(b.token_ids.len(), b.logprobs.len());
    }
    // Same seed, same sample.
    let again = lm.generate(&reqs[4..]).unwrap().remove(0);
    assert_eq!(again.token_ids, batched[4].token_ids);
}

#[test]
fn stop_strings_eos_and_lengths() {
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let q = || Prompt::Chat(vec![ChatMessage::user("What is the capital of France?")]);
    let mut r = greedy(q(), 24);
    r.params.stop = vec!["Paris".into()];
    let g = lm
        .generate(&[r, greedy(q(), 40), greedy(q(), 3), greedy(q(), 0)])
        .unwrap();
    assert_eq!(g[0].finish, Finish::Stop);
    assert!(!g[0].text.contains("Paris"), "{:?}", g[0].text);
    assert!(g[0].text.starts_with("The capital"), "{:?}", g[0].text);
    assert_eq!(g[1].finish, Finish::Eos, "{:?}", g[1].text);
    assert!(
        lm.tokenizer()
            .eos_ids
            .contains(g[1].token_ids.last().unwrap())
    );
    assert!(g[1].text.contains("Paris") && !g[1].text.contains("<|im_end|>"));
    assert_eq!((g[2].finish, g[2].token_ids.len()), (Finish::Length, 3));
    assert!(g[3].token_ids.is_empty());
}

#[test]
fn chat_prompt_follows_the_template() {
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let msgs = vec![ChatMessage::user("Hi there")];
    let text = lm.render_chat(&msgs, true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = lm.prompt_ids(&Prompt::Chat(msgs)).unwrap();
    let start = lm.encode("<|im_start|>").unwrap();
    assert_eq!(start.len(), 1, "special tokens are single ids");
    assert_eq!(ids[0], start[0]);
    assert!(!lm.decode(&ids).unwrap().contains("<|im_start|>"));
    // Round trip of ordinary text, digits split one by one.
    let s = "Hello, world! 12345 café";
    let e = lm.encode(s).unwrap();
    assert_eq!(lm.decode(&e).unwrap(), s);
    let digits = lm.encode("12345").unwrap();
    assert_eq!(digits.len(), 5);
}

#[test]
fn registry_builds_kind_burn() {
    let Some(_) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let path = common::model_path();
    let table: toml::Table = toml::from_str(&format!(
        "kind = \"burn\"\npath = {:?}\nmax_batch = 4",
        path.display().to_string()
    ))
    .unwrap();
    let (lm, resolved) = memfactory_core::registry::build::<dyn LanguageModel>(
        memfactory_core::Cfg::new("lm", table),
    )
    .unwrap();
    assert!(lm.describe().contains("Llama"), "{}", lm.describe());
    assert_eq!(resolved["device"].as_str(), Some("flex"));
    assert_eq!(resolved["max_batch"].as_integer(), Some(4));
    let table: toml::Table =
        toml::from_str("kind = \"burn\"\npath = \"x.gguf\"\ndevice = \"tpu\"").unwrap();
    let err = memfactory_core::registry::build::<dyn LanguageModel>(memfactory_core::Cfg::new(
        "lm", table,
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("lm.device") && err.contains("tpu"), "{err}");
}

#[test]
fn host_block_kernels_decode_like_the_f32_path() {
    // Decode steps multiply directly on the GGUF's Q4_1 / Q8_0 blocks; the engine without
    // them multiplies the dequantized f32 copy. Same weights, so the same greedy tokens and
    // log-probs up to summation order, at batch 1 and in a padded batch.
    let p = common::model_path();
    if !p.exists() {
        println!("skipping: model file {} not found", p.display());
        return;
    }
    let host = memfactory_lm_burn::BurnLm::load_with(&p, "flex", true).unwrap();
    let plain = memfactory_lm_burn::BurnLm::load_with(&p, "flex", false).unwrap();
    let reqs = [
        greedy(
            Prompt::Chat(vec![ChatMessage::user("What is the capital of France?")]),
            16,
        ),
        greedy(Prompt::Text("Water boils at".into()), 10),
        greedy(Prompt::Text("def fib(n):".into()), 12),
    ];
    for batch in [&reqs[..1], &reqs[..]] {
        let a = host.generate(batch).unwrap();
        let b = plain.generate(batch).unwrap();
        for (x, y) in a.iter().zip(&b) {
            println!("{:?} | {:?}", x.text, y.text);
            assert_eq!(x.token_ids, y.token_ids);
            for (u, v) in x.logprobs.iter().zip(&y.logprobs) {
                assert!((u - v).abs() < 1e-3, "logprob {u} vs {v}");
            }
        }
    }
}
