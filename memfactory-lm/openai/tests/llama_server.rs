//! The backend against a REAL llama.cpp `llama-server` serving SmolLM2-135M-Instruct (GGUF)
//! on 127.0.0.1: chat and completion with token ids and log-probs, tokenizer endpoints, and a
//! fault test that kills the server while requests are queued.
//!
//! Needs `MEMFACTORY_LLAMA_SERVER` (the binary; `benches/scripts/build_llama_server.sh`
//! builds it) and the model from `MEMFACTORY_SMOLLM2_GGUF` or
//! `models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf` under the workspace root;
//! each test is skipped with a printed reason when either is missing.

use std::time::{Duration, Instant};

use memfactory_core::lm::ChatMessage;
use memfactory_core::{Cfg, Finish, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_openai::OpenAiLm;
use memfactory_testkit::llama_server::{Server, inputs, serial};

fn start(bin: &std::path::Path, model: &std::path::Path) -> Server {
    memfactory_testkit::llama_server::start(bin, model, 2048, 2)
}

fn lm_for(server: &Server, extra: &str) -> OpenAiLm {
    let src = format!(
        "kind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"smollm2\"\nserver = \"llama-server\"\n\
         timeout_s = 300.0\n{extra}",
        server.url()
    );
    let mut table: toml::Table = toml::from_str(&src).unwrap();
    table.remove("kind");
    let mut cfg = Cfg::new("model", table);
    let lm = OpenAiLm::from_cfg(&mut cfg).unwrap();
    cfg.finish().unwrap();
    lm
}

fn chat(q: &str, max: usize) -> GenRequest {
    GenRequest {
        prompt: Prompt::Chat(vec![ChatMessage::user(q)]),
        params: SamplingParams::greedy(max),
    }
}

#[test]
fn chat_and_completion_with_token_ids_and_logprobs() {
    let _serial = serial();
    let Some((bin, model)) = inputs() else { return };
    let server = start(&bin, &model);
    let lm = lm_for(
        &server,
        "tokenize = true\nrequire_logprobs = true\nconcurrency = 2",
    );

    // Chat, greedy: stops at EOS, which is the last token id.
    let q = "What is 2+2? Answer with one number.";
    let g = lm.generate(&[chat(q, 40)]).unwrap().remove(0);
    println!("chat: {:?} {:?} {:?}", g.text, g.token_ids, g.finish);
    assert_eq!(g.finish, Finish::Eos, "{g:?}");
    assert!(!g.text.is_empty());
    assert_eq!(g.token_ids.len(), g.logprobs.len());
    assert!(
        g.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0),
        "{:?}",
        g.logprobs
    );
    let eos = *g.token_ids.last().unwrap();
    // The token ids decode to the text (the EOS token, a control token, decodes to nothing).
    assert_eq!(lm.decode(&g.token_ids).unwrap(), g.text);
    assert_eq!(
        lm.decode(&g.token_ids[..g.token_ids.len() - 1]).unwrap(),
        g.text
    );
    assert_eq!(
        lm.encode(&g.text).unwrap(),
        g.token_ids[..g.token_ids.len() - 1]
    );
    // Prompt ids: the chat template rendered by the server, as the server tokenized it.
    let prompt = chat(q, 40).prompt;
    assert_eq!(g.prompt_ids, lm.prompt_ids(&prompt).unwrap());
    let rendered = lm.decode(&g.prompt_ids).unwrap();
    assert!(
        rendered.contains(q) && rendered.contains("assistant"),
        "{rendered:?}"
    );

    // Completion: a raw text prompt, cut by the token budget.
    let text = GenRequest {
        prompt: Prompt::Text("The capital of France is".into()),
        params: SamplingParams::greedy(6),
    };
    let c = lm.generate(std::slice::from_ref(&text)).unwrap().remove(0);
    println!("completion: {:?} {:?}", c.text, c.token_ids);
    assert_eq!(c.finish, Finish::Length);
    assert_eq!(c.token_ids.len(), 6);
    assert_eq!(lm.decode(&c.token_ids).unwrap(), c.text);
    assert!(!c.token_ids.contains(&eos));
    // The same prompt as token ids gives the same continuation.
    let ids = lm.prompt_ids(&text.prompt).unwrap();
    assert_eq!(ids, c.prompt_ids);
    let t = lm
        .generate(&[GenRequest {
            prompt: Prompt::Tokens(ids.clone()),
            params: SamplingParams::greedy(6),
        }])
        .unwrap()
        .remove(0);
    assert_eq!(
        (t.text.as_str(), &t.token_ids),
        (c.text.as_str(), &c.token_ids)
    );
    assert_eq!(t.prompt_ids, ids);

    // A stop string: finish `Stop`, the string is not in the text.
    let mut s = chat(q, 40);
    s.params.stop = vec!["4".into()];
    let s = lm.generate(&[s]).unwrap().remove(0);
    println!("stop: {:?} {:?}", s.text, s.finish);
    if g.text.contains('4') {
        assert_eq!(s.finish, Finish::Stop, "{s:?}");
        assert!(!s.text.contains('4'));
    }

    // Sampling with a seed: reproducible, log-probs from the sampling distribution.
    let mut r = chat("Name a colour.", 8);
    r.params.temperature = 0.9;
    r.params.top_k = 20;
    r.params.seed = 1234;
    let a = lm.generate(std::slice::from_ref(&r)).unwrap().remove(0);
    let b = lm.generate(std::slice::from_ref(&r)).unwrap().remove(0);
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.token_ids.len(), a.logprobs.len());
    assert!(a.logprobs.iter().all(|l| *l <= 0.0), "{:?}", a.logprobs);

    // A batch in parallel keeps its order.
    let batch: Vec<GenRequest> = [
        "Say yes.",
        "Say no.",
        "What is 2+2? Answer with one number.",
    ]
    .iter()
    .map(|q| chat(q, 12))
    .collect();
    let out = lm.generate(&batch).unwrap();
    for (o, r) in out.iter().zip(&batch) {
        let Prompt::Chat(m) = &r.prompt else {
            unreachable!()
        };
        assert!(lm.decode(&o.prompt_ids).unwrap().contains(&m[0].content));
        assert!(!o.token_ids.is_empty() && o.token_ids.len() == o.logprobs.len());
    }
}

#[test]
fn killing_the_server_mid_batch_reports_failed_requests_and_keeps_finished_ones() {
    let _serial = serial();
    let Some((bin, model)) = inputs() else { return };
    let mut server = start(&bin, &model);
    let lm = lm_for(
        &server,
        "concurrency = 2\nmax_retries = 2\nbackoff_ms = 50\nmax_backoff_ms = 200\njitter = false\n\
         extra_body = { ignore_eos = true }",
    );
    // Two short requests first (the two workers take them), then six long ones that cannot
    // finish before the kill (`ignore_eos` sent to every request, hundreds of tokens each).
    let mut reqs = vec![chat("Say yes.", 3), chat("Say no.", 3)];
    for i in 0..6 {
        let mut r = GenRequest {
            prompt: Prompt::Text(format!("Story {i}: Once upon a time")),
            params: SamplingParams::greedy(600),
        };
        r.params.seed = i;
        reqs.push(r);
    }
    let t = Instant::now();
    let result = std::thread::scope(|s| {
        let h = s.spawn(|| lm.generate(&reqs));
        // Wait until the server has released two slots (the two short requests), then kill.
        let deadline = Instant::now() + Duration::from_secs(240);
        while server.log_text().matches("stop processing").count() < 2 {
            assert!(Instant::now() < deadline, "short requests never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        server.kill();
        h.join()
    });
    let result = result.expect("generate must not panic");
    let took = t.elapsed();
    let e = result
        .expect_err("the long requests cannot have finished")
        .to_string();
    println!("after {took:?}: {e}");
    assert!(
        e.starts_with("openai: 6 of 8 requests failed (indices 2, 3, 4, 5, 6, 7)"),
        "{e}"
    );
    assert!(e.contains("2 finished generations are kept"), "{e}");
    for i in 2..8 {
        assert!(
            e.contains(&format!("request {i}: POST {}/v1/", server.url())),
            "{e}"
        );
    }
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    assert_eq!(lm.stashed(), 2);
    // The finished ones are answered from the kept results, without a server.
    let kept = lm.generate(&reqs[..2]).unwrap();
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .all(|g| g.finish == Finish::Length && g.token_ids.len() == 3)
    );
    assert_eq!(lm.stashed(), 0);
}
