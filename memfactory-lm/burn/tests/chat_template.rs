//! Chat-template arguments (`chat_template_kwargs` on the model table) reach the template:
//! Qwen3's real template, rendered by the engine, matches Hugging Face transformers'
//! `apply_chat_template` with and without `enable_thinking` (golden file and its script in
//! `tests/chat_template/`), the recipe key changes the prompt token ids the model is fed, and
//! a variable the template never reads is named.

use std::path::{Path, PathBuf};

use memfactory_core::{Cfg, ChatMessage, Error, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::tokenizer::{ignored_template_kwargs, render_template_with};
use serde_json::{Map, Value};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_template")
}

fn qwen3_template() -> String {
    std::fs::read_to_string(dir().join("Qwen-Qwen3-0.6B.jinja")).unwrap()
}

fn golden() -> Vec<Value> {
    let s = std::fs::read_to_string(dir().join("qwen3_golden.json")).unwrap();
    let v: Value = serde_json::from_str(&s).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage {
            role: m["role"].as_str().unwrap().into(),
            content: m["content"].as_str().unwrap().into(),
        })
        .collect()
}

fn golden_case(conversation: &str, agp: bool, kwargs: &str) -> String {
    golden()
        .into_iter()
        .find(|c| {
            c["conversation"] == conversation
                && c["add_generation_prompt"] == agp
                && serde_json::to_string(&c["kwargs"]).unwrap() == kwargs
        })
        .unwrap_or_else(|| panic!("no golden case {conversation} {agp} {kwargs}"))["rendered"]
        .as_str()
        .unwrap()
        .to_string()
}

const EMPTY_THINK: &str = "<|im_start|>assistant\n<think>\n\n</think>\n\n";

#[test]
fn qwen3_template_matches_transformers_with_and_without_enable_thinking() {
    let template = qwen3_template();
    let cases = golden();
    assert_eq!(cases.len(), 24);
    for c in &cases {
        let kwargs: Map<String, Value> = c["kwargs"].as_object().unwrap().clone();
        let agp = c["add_generation_prompt"].as_bool().unwrap();
        let out = render_template_with(
            &template,
            &messages(&c["messages"]),
            agp,
            "",
            "<|im_end|>",
            &kwargs,
        )
        .unwrap();
        let want = c["rendered"].as_str().unwrap();
        assert_eq!(
            out, want,
            "case {} agp={agp} kwargs={:?}",
            c["conversation"], kwargs
        );
        // What the golden file holds, said independently: only enable_thinking = false with
        // a generation prompt ends in the empty think block.
        let off = kwargs.get("enable_thinking") == Some(&Value::Bool(false));
        assert_eq!(out.ends_with(EMPTY_THINK), off && agp, "{out:?}");
    }
}

/// tiny-qwen3 (random weights, real Qwen2-style byte-level tokenizer) with Qwen3's chat
/// template written into a copy of its `tokenizer_config.json`.
fn tiny_qwen3_with_qwen3_template() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny-qwen3");
    let dst =
        std::env::temp_dir().join(format!("memfactory-qwen3-template-{}", std::process::id()));
    std::fs::create_dir_all(&dst).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut tc: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer_config.json")).unwrap())
            .unwrap();
    tc["chat_template"] = Value::String(qwen3_template());
    std::fs::write(dst.join("tokenizer_config.json"), tc.to_string()).unwrap();
    dst
}

fn model_cfg(path: &Path, extra: &str) -> Cfg {
    let src = format!("path = {:?}\n{extra}", path.display().to_string());
    Cfg::new("model", toml::from_str(&src).unwrap())
}

#[test]
fn recipe_kwargs_reach_the_prompt_ids() {
    let dir = tiny_qwen3_with_qwen3_template();
    let msgs = vec![ChatMessage::user("What is the capital of France?")];
    let prompt = Prompt::Chat(msgs.clone());
    for (extra, kwargs) in [
        ("", "{}"),
        (
            "chat_template_kwargs = { enable_thinking = true }",
            "{\"enable_thinking\":true}",
        ),
        (
            "chat_template_kwargs = { enable_thinking = false }",
            "{\"enable_thinking\":false}",
        ),
    ] {
        let mut cfg = model_cfg(&dir, extra);
        let lm = memfactory_lm_burn::from_cfg(&mut cfg).unwrap();
        let resolved = cfg.finish().unwrap();
        assert_eq!(
            resolved.contains_key("chat_template_kwargs"),
            !extra.is_empty()
        );
        let want = golden_case("user", true, kwargs);
        assert_eq!(lm.render_chat(&msgs, true).unwrap(), want, "{extra}");
        let ids = lm.prompt_ids(&prompt).unwrap();
        assert_eq!(ids, lm.encode(&want).unwrap(), "{extra}");
        // The ids generation actually feeds are the same.
        let g = lm
            .generate(&[GenRequest {
                prompt: prompt.clone(),
                params: SamplingParams::greedy(1),
            }])
            .unwrap();
        assert_eq!(g[0].prompt_ids, ids, "{extra}");
        // Nothing the template ignores is reported.
        assert!(
            ignored_template_kwargs(lm.tokenizer().template(), &lm.tokenizer().template_kwargs)
                .is_empty()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn kwargs_the_template_never_reads_are_named() {
    let kw = |pairs: &[(&str, Value)]| -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let qwen3 = qwen3_template();
    assert!(ignored_template_kwargs(&qwen3, &kw(&[("enable_thinking", false.into())])).is_empty());
    assert_eq!(
        ignored_template_kwargs(
            &qwen3,
            &kw(&[
                ("enable_thinking", false.into()),
                ("thinking_budget", 5.into())
            ])
        ),
        ["thinking_budget"]
    );
    // tiny-qwen3 ships a ChatML template that has no `enable_thinking`.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny-qwen3");
    let mut lm = memfactory_lm_burn::BurnLm::load(&dir, "flex").unwrap();
    let before = lm.render_chat(&[ChatMessage::user("hi")], true).unwrap();
    assert_eq!(
        lm.set_template_kwargs(kw(&[("enable_thinking", false.into())])),
        ["enable_thinking"]
    );
    assert_eq!(
        lm.render_chat(&[ChatMessage::user("hi")], true).unwrap(),
        before
    );
    // Through the recipe: still builds (a warning on stderr names the variable).
    let mut cfg = model_cfg(&dir, "chat_template_kwargs = { enable_thinking = false }");
    let lm = memfactory_lm_burn::from_cfg(&mut cfg).unwrap();
    assert_eq!(
        lm.render_chat(&[ChatMessage::user("hi")], true).unwrap(),
        before
    );
    // SmolLM2's GGUF template, when the model is here.
    let gguf = std::env::var_os("MEMFACTORY_SMOLLM2_GGUF").map(PathBuf::from);
    match gguf.filter(|p| p.exists()) {
        None => println!("skipping the SmolLM2 part: MEMFACTORY_SMOLLM2_GGUF not set or absent"),
        Some(p) => {
            let mut lm = memfactory_lm_burn::BurnLm::load(&p, "flex").unwrap();
            assert_eq!(
                lm.set_template_kwargs(kw(&[("enable_thinking", false.into())])),
                ["enable_thinking"]
            );
        }
    }
}

#[test]
fn bad_chat_template_kwargs_are_config_errors_naming_the_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny-qwen3");
    for (extra, key) in [
        (
            "chat_template_kwargs = \"enable_thinking=false\"",
            "model.chat_template_kwargs",
        ),
        (
            "chat_template_kwargs = { at = 1979-05-27 }",
            "model.chat_template_kwargs.at",
        ),
        (
            "chat_template_kwargs = { add_generation_prompt = false }",
            "model.chat_template_kwargs.add_generation_prompt",
        ),
    ] {
        let e = memfactory_lm_burn::from_cfg(&mut model_cfg(&dir, extra)).unwrap_err();
        assert!(
            matches!(&e, Error::Config { key: k, .. } if k == key),
            "{extra}: {e}"
        );
    }
}
