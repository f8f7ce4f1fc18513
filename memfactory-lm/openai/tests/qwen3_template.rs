//! `chat_template_kwargs` and thinking output against a REAL llama.cpp `llama-server`
//! rendering chats with Qwen3's chat template (`--jinja --chat-template-file`, the template
//! committed at `memfactory-lm/burn/tests/chat_template/Qwen-Qwen3-0.6B.jinja`) while it
//! serves the SmolLM2-135M-Instruct GGUF (the template is text; any model can run under it).
//!
//! 1. `chat_template_kwargs = { enable_thinking = false }` reaches the template in the
//!    generation request and in the `/apply-template` call behind `prompt_ids`: the prompt
//!    ends with Qwen3's empty `<think>\n\n</think>\n\n` block, and the prompt the server
//!    generated from (its `verbose` echo) tokenizes to the backend's `prompt_ids`; without
//!    the kwargs there is no thinking block.
//! 2. A generation holding a `<think>...</think>` block (forced with a GBNF grammar, SmolLM2
//!    does not think by itself): llama-server's default reasoning format moves it into
//!    `message.reasoning_content`, so the backend asks for `reasoning_format = "none"` and
//!    `text` is the raw generation, the decoding of `token_ids`; with the split forced back
//!    on (`extra_body.reasoning_format = "deepseek"`) the backend rebuilds the text from the
//!    token ids and records the same generation.
//!
//! One server start for the file. Needs `MEMFACTORY_LLAMA_SERVER` and the SmolLM2 GGUF
//! (`MEMFACTORY_SMOLLM2_GGUF`); skipped with a printed reason when either is missing.

use std::ffi::OsString;
use std::path::Path;

use memfactory_core::lm::ChatMessage;
use memfactory_core::{Cfg, Finish, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_openai::OpenAiLm;
use memfactory_lm_openai::wire::{BodyOptions, request_body};
use memfactory_testkit::llama_server::{Server, inputs, serial, start_with};
use serde_json::{Value, json};

/// Qwen3's empty thinking block, which its template appends to the generation prompt when
/// `enable_thinking` is false.
const EMPTY_THINK: &str = "<|im_start|>assistant\n<think>\n\n</think>\n\n";

/// GBNF forcing a thinking block, then an answer (the grammar ends, so the model stops).
const THINKING_GRAMMAR: &str = r#"root ::= "<think>\nI think\n</think>\n\nIt is " [0-9]"#;

fn lm_for(server: &Server, extra: toml::Table) -> OpenAiLm {
    let src = format!(
        "base_url = \"{}/v1\"\nmodel = \"smollm2\"\nserver = \"llama-server\"\n\
         timeout_s = 300.0\ntokenize = true\nrequire_logprobs = true\nconcurrency = 1\n",
        server.url()
    );
    let mut table: toml::Table = toml::from_str(&src).unwrap();
    table.extend(extra);
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

/// Sends `req` as the backend would (its own body), plus `verbose` (llama-server then echoes
/// the prompt it generated from), and returns the raw response.
fn raw(server: &Server, lm: &OpenAiLm, req: &GenRequest) -> Value {
    let c = lm.config();
    let o = BodyOptions {
        model: &c.model,
        server: c.server,
        logprobs: c.logprobs,
        extra: &c.extra_body,
        template_kwargs: &c.chat_template_kwargs,
    };
    let mut body = request_body(req, &o);
    body["verbose"] = json!(true);
    let text = ureq::post(format!("{}/v1/chat/completions", server.url()))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn qwen3_template_thinking_switch_and_thinking_output() {
    let _serial = serial();
    let Some((bin, model)) = inputs() else { return };
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../burn/tests/chat_template/Qwen-Qwen3-0.6B.jinja");
    assert!(template.is_file(), "{}", template.display());
    let server = start_with(
        &bin,
        &model,
        2048,
        1,
        [
            OsString::from("--jinja"),
            OsString::from("--chat-template-file"),
            template.into_os_string(),
        ],
    );

    // 1. The thinking switch, in the generation request and in `prompt_ids`.
    let off = lm_for(
        &server,
        toml::from_str("chat_template_kwargs = { enable_thinking = false }").unwrap(),
    );
    let on = lm_for(&server, toml::Table::new());
    let q = "What is 2+2?";
    let req = chat(q, 4);
    for (lm, thinking_off) in [(&off, true), (&on, false)] {
        let g = lm.generate(std::slice::from_ref(&req)).unwrap().remove(0);
        let rendered = lm.decode(&g.prompt_ids).unwrap();
        println!(
            "enable_thinking off: {thinking_off}: prompt {rendered:?}, reply {:?}",
            g.text
        );
        assert!(rendered.contains(q), "{rendered:?}");
        if thinking_off {
            assert!(rendered.ends_with(EMPTY_THINK), "{rendered:?}");
        } else {
            assert!(
                rendered.ends_with("<|im_start|>assistant\n"),
                "{rendered:?}"
            );
            assert!(!rendered.contains("<think>"), "{rendered:?}");
        }
        assert_eq!(g.prompt_ids, lm.prompt_ids(&req.prompt).unwrap());
        assert!(!g.token_ids.is_empty() && g.token_ids.len() <= 4, "{g:?}");
        assert_eq!(lm.decode(&g.token_ids).unwrap(), g.text);
        // The prompt the server generated from is the one `prompt_ids` rendered.
        let v = raw(&server, lm, &req);
        let served = v["__verbose"]["prompt"].as_str().unwrap();
        assert_eq!(served.ends_with(EMPTY_THINK), thinking_off, "{v}");
        assert_eq!(
            lm.prompt_ids(&Prompt::Text(served.to_string())).unwrap(),
            g.prompt_ids
        );
        assert_eq!(
            v["usage"]["prompt_tokens"],
            json!(g.prompt_ids.len()),
            "{v}"
        );
    }

    // 2. Thinking in the output: text and token ids stay the raw generation.
    let with = |grammar: bool, over: &str, thinking_off: bool| -> OpenAiLm {
        let mut extra = toml::Table::new();
        if grammar {
            extra.insert("grammar".into(), THINKING_GRAMMAR.into());
        }
        if !over.is_empty() {
            extra.insert("reasoning_format".into(), over.into());
        }
        let mut t = toml::Table::new();
        t.insert("extra_body".into(), toml::Value::Table(extra));
        if thinking_off {
            t.extend(
                toml::from_str::<toml::Table>("chat_template_kwargs = { enable_thinking = false }")
                    .unwrap(),
            );
        }
        lm_for(&server, t)
    };
    let think = with(true, "", false);
    let req = chat(q, 40);
    let g = think
        .generate(std::slice::from_ref(&req))
        .unwrap()
        .remove(0);
    println!("thinking: {:?} {:?} {:?}", g.text, g.token_ids, g.finish);
    assert_eq!(g.finish, Finish::Eos, "{g:?}");
    assert!(
        g.text.starts_with("<think>\nI think\n</think>\n\nIt is "),
        "{:?}",
        g.text
    );
    assert!(
        g.text.ends_with(|c: char| c.is_ascii_digit()),
        "{:?}",
        g.text
    );
    assert_eq!(think.decode(&g.token_ids).unwrap(), g.text);
    assert_eq!(g.token_ids.len(), g.logprobs.len());
    // The server's message (default reasoning format) lacks the thinking block: a backend
    // recording `content` would pair the answer alone with the thinking block's token ids.
    let v = raw(&server, &think, &req);
    let m = &v["choices"][0]["message"];
    println!("server's message: {m}");
    assert_eq!(
        m["content"].as_str(),
        Some(&g.text[g.text.len() - 7..]),
        "{v}"
    );
    assert!(
        m["reasoning_content"]
            .as_str()
            .is_some_and(|r| r.contains("I think")),
        "{v}"
    );
    // `reasoning_format = "none"` records the same generation.
    let none = with(true, "none", false);
    let n = none.generate(std::slice::from_ref(&req)).unwrap().remove(0);
    assert_eq!(
        (&n.text, &n.token_ids, n.finish),
        (&g.text, &g.token_ids, g.finish)
    );
    // A stop string after the thinking block: the text ends where the server cut (it drops
    // the stop string's tokens from the ids too).
    let mut stop = req.clone();
    stop.params.stop = vec![" is".into()];
    let s = think
        .generate(std::slice::from_ref(&stop))
        .unwrap()
        .remove(0);
    println!(
        "stop \" is\": {:?} {:?} {:?}",
        s.text, s.token_ids, s.finish
    );
    assert_eq!(s.finish, Finish::Stop, "{s:?}");
    assert_eq!(s.text, "<think>\nI think\n</think>\n\nIt");
    assert_eq!(think.decode(&s.token_ids).unwrap(), s.text);

    // `enable_thinking = false` with `reasoning_format = "none"`: the server's content starts
    // with the prompt's empty thinking block, which the model never generated; the record
    // holds what it generated.
    let off_none = with(false, "none", true);
    let req = chat(q, 4);
    let v = raw(&server, &off_none, &req);
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    println!("enable_thinking = false, reasoning_format = none: content {content:?}");
    assert!(content.starts_with("<think>\n\n</think>\n\n"), "{v}");
    let o = off_none
        .generate(std::slice::from_ref(&req))
        .unwrap()
        .remove(0);
    assert!(
        o.prompt_ids.ends_with(
            &off_none
                .encode(EMPTY_THINK.trim_start_matches("<|im_start|>"))
                .unwrap()
        )
    );
    assert_eq!(off_none.decode(&o.token_ids).unwrap(), o.text);
    assert_eq!(format!("<think>\n\n</think>\n\n{}", o.text), content);
}
