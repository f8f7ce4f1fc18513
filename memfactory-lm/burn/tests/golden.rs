//! Parity with the peer implementation (HF transformers, f32) on the golden files in
//! `tests/golden/` (see its README): identical tokenization, chat rendering, top-1 tokens and
//! greedy continuations; logits within the README's tolerances.

mod common;

use std::path::{Path, PathBuf};

use memfactory_core::{ChatMessage, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::BurnLm;
use serde_json::Value;

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &v)| if v > a.1 { (i, v) } else { a },
        )
        .0
}

fn lse(x: &[f32]) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + x.iter().map(|&v| ((v - m) as f64).exp()).sum::<f64>().ln() as f32
}

fn greedy_ids(lm: &BurnLm, prompt: &[u32], n: usize) -> Vec<u32> {
    let req = GenRequest {
        prompt: Prompt::Tokens(prompt.to_vec()),
        params: SamplingParams::greedy(n),
    };
    lm.generate(&[req]).unwrap().remove(0).token_ids
}

fn check_chat_rendering(lm: &BurnLm, g: &Value) {
    let Some(cases) = g["chat_render_cases"].as_array() else {
        return;
    };
    for case in cases {
        let msgs: Vec<ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        let agp = case["add_generation_prompt"].as_bool().unwrap_or(false);
        let text = lm.render_chat(&msgs, agp).unwrap();
        assert_eq!(
            text,
            case["rendered"].as_str().unwrap(),
            "rendering of {msgs:?}"
        );
        assert_eq!(
            lm.encode(&text).unwrap(),
            common::ids(&case["ids"]),
            "ids of {text:?}"
        );
    }
}

fn check_tokenization(lm: &BurnLm, g: &Value) {
    check_chat_rendering(lm, g);
    for case in g["tokenization_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            lm.encode(text).unwrap(),
            common::ids(&case["ids"]),
            "tokenization of {text:?}"
        );
    }
}

#[test]
fn smollm2_matches_transformers() {
    let Some(g) = common::golden("smollm2_q4_1.json") else {
        return;
    };
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    check_tokenization(lm, &g);
    let probe = common::ids(&g["probe_ids"]);
    let mut worst = 0f32;
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let want_ids = common::ids(&p["ids"]);
        let got_ids = if p["kind"] == "chat" {
            let msgs: Vec<ChatMessage> = p["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage {
                    role: m["role"].as_str().unwrap().into(),
                    content: m["content"].as_str().unwrap().into(),
                })
                .collect();
            assert_eq!(
                lm.render_chat(&msgs, true).unwrap(),
                p["rendered"].as_str().unwrap()
            );
            lm.prompt_ids(&Prompt::Chat(msgs)).unwrap()
        } else {
            lm.encode(p["text"].as_str().unwrap()).unwrap()
        };
        assert_eq!(got_ids, want_ids, "{name}: prompt ids");
        let logits = lm
            .batch_logits(std::slice::from_ref(&want_ids))
            .unwrap()
            .remove(0);
        let mut d_max = 0f32;
        for (pos, want) in p["positions"].as_array().unwrap().iter().enumerate() {
            let row = &logits[pos];
            assert_eq!(
                argmax(row),
                want["argmax"].as_u64().unwrap() as usize,
                "{name} pos {pos}: argmax"
            );
            let mut d = (row[argmax(row)] - f(&want["max_logit"])).abs();
            d = d.max((lse(row) - f(&want["logsumexp"])).abs());
            for (id, l) in common::ids(&want["top_ids"])
                .iter()
                .zip(want["top_logits"].as_array().unwrap())
            {
                d = d.max((row[*id as usize] - f(l)).abs());
            }
            for (id, l) in probe.iter().zip(want["probe_logits"].as_array().unwrap()) {
                d = d.max((row[*id as usize] - f(l)).abs());
            }
            if let Some(next) = want["next_id"].as_u64() {
                d = d.max((row[next as usize] - lse(row) - f(&want["next_logprob"])).abs());
            }
            d_max = d_max.max(d);
        }
        if let Some(full) = p["last_position_full_logits"].as_array() {
            let row = logits.last().unwrap();
            for (a, b) in row.iter().zip(full) {
                d_max = d_max.max((a - f(b)).abs());
            }
        }
        println!(
            "{name}: {} positions, max |Δlogit| = {d_max:e}",
            logits.len()
        );
        assert!(d_max <= 1e-3, "{name}: max |Δlogit| {d_max}");
        worst = worst.max(d_max);
        let want_new = common::ids(&p["greedy"]["new_ids"]);
        assert_eq!(
            greedy_ids(lm, &want_ids, want_new.len()),
            want_new,
            "{name}: greedy continuation"
        );
    }
    println!("SmolLM2 worst |Δlogit| = {worst:e}");
}

fn tiny(name: &str, dir: &str) {
    let Some(g) = common::golden(name) else {
        return;
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir);
    let lm = BurnLm::load(Path::new(&path), "flex").unwrap();
    check_tokenization(&lm, &g);
    let mut worst = 0f32;
    for s in g["sequences"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let want_ids = common::ids(&s["ids"]);
        if let Some(r) = s["rendered"].as_str() {
            // Chat sequences: the rendered text must encode to the same ids.
            assert_eq!(
                lm.encode(r).unwrap(),
                want_ids,
                "{name}: ids of rendered chat"
            );
        }
        let logits = lm
            .batch_logits(std::slice::from_ref(&want_ids))
            .unwrap()
            .remove(0);
        for (pos, want) in s["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f32> = want.as_array().unwrap().iter().map(f).collect();
            assert_eq!(
                argmax(&logits[pos]),
                argmax(&want),
                "{name} pos {pos}: argmax"
            );
            for (a, b) in logits[pos].iter().zip(&want) {
                worst = worst.max((a - b).abs());
            }
            worst = worst.max((lse(&logits[pos]) - f(&s["logsumexp"][pos])).abs());
        }
        let want_new = common::ids(&s["greedy"]["new_ids"]);
        assert_eq!(
            greedy_ids(&lm, &want_ids, want_new.len()),
            want_new,
            "{name}: greedy"
        );
    }
    // Left-padded batch: logits at valid positions equal the unbatched ones.
    let rows: Vec<Vec<u32>> = g["batch"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| common::ids(&r["ids"]))
        .collect();
    let got = lm.batch_logits(&rows).unwrap();
    for (r, row) in g["batch"]["rows"].as_array().unwrap().iter().enumerate() {
        for (pos, want) in row["logits"].as_array().unwrap().iter().enumerate() {
            for (a, b) in got[r][pos].iter().zip(want.as_array().unwrap()) {
                worst = worst.max((a - f(b)).abs());
            }
        }
    }
    println!("{name}: max |Δlogit| = {worst:e}");
    assert!(worst <= 2e-4, "{name}: max |Δlogit| {worst}");
    // Chat rendering follows the shipped template (tiny test model's own system prompt).
    let text = lm.render_chat(&[ChatMessage::user("hi")], true).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nYou are a tiny test model."),
        "{text}"
    );
}

#[test]
fn tiny_qwen2_matches_transformers() {
    tiny("tiny_qwen2.json", "tiny-qwen2");
}

#[test]
fn tiny_qwen3_matches_transformers() {
    tiny("tiny_qwen3.json", "tiny-qwen3");
}
