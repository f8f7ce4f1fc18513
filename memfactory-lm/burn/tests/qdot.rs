//! The integer decode kernels (int8 activations, `MEMFACTORY_BURN_QDOT`) against the
//! f32-activation host kernels and against transformers' greedy continuations, on the parity
//! prompts of `tests/golden/smollm2_q4_1.json`.
//!
//! The activation mode is read once per process, so the test runs this binary twice as a
//! child (`MEMFACTORY_BURN_QDOT=f32`, then `int8`), each printing its greedy tokens and
//! log-probs as one JSON line, and compares them here.

mod common;

use std::process::Command;

use memfactory_core::{GenRequest, LanguageModel, Prompt, SamplingParams};
use serde_json::{Value, json};

/// A transformers top-1/top-2 logit margin below which int8 rounding may flip the choice.
const NEAR_TIE: f64 = 0.3;

const CHILD: &str = "MEMFACTORY_QDOT_TEST_CHILD";

/// Child: greedy continuations of every parity prompt, one at a time and as one batch.
#[test]
fn child_greedy_on_parity_prompts() {
    if std::env::var_os(CHILD).is_none() {
        return; // only meaningful as the child of `int8_decode_keeps_the_parity_greedy_tokens`
    }
    let (Some(g), Some(lm)) = (common::golden("smollm2_q4_1.json"), common::model()) else {
        return;
    };
    let reqs: Vec<GenRequest> = g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| GenRequest {
            prompt: Prompt::Tokens(common::ids(&p["ids"])),
            params: SamplingParams::greedy(common::ids(&p["greedy"]["new_ids"]).len()),
        })
        .collect();
    let single: Vec<_> = reqs
        .iter()
        .map(|r| lm.generate(std::slice::from_ref(r)).unwrap().remove(0))
        .collect();
    let batched = lm.generate(&reqs).unwrap();
    let out: Vec<Value> = single
        .iter()
        .chain(&batched)
        .map(|o| json!({"ids": o.token_ids, "logprobs": o.logprobs}))
        .collect();
    println!("QDOT-RESULT {}", Value::Array(out));
}

fn run_child(mode: &str) -> Option<Vec<(Vec<u32>, Vec<f32>)>> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_greedy_on_parity_prompts", "--nocapture"])
        .env(CHILD, "1")
        .env("MEMFACTORY_BURN_QDOT", mode)
        .output()
        .expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child ({mode}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("QDOT-RESULT "))?;
    let v: Value = serde_json::from_str(line).unwrap();
    Some(
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let lp = o["logprobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32);
                (common::ids(&o["ids"]), lp.collect())
            })
            .collect(),
    )
}

#[test]
fn int8_decode_keeps_the_parity_greedy_tokens() {
    let Some(g) = common::golden("smollm2_q4_1.json") else {
        return;
    };
    if !common::model_path().exists() {
        println!(
            "skipping: model file {} not found",
            common::model_path().display()
        );
        return;
    }
    let (Some(f32_out), Some(int8_out)) = (run_child("f32"), run_child("int8")) else {
        panic!("a child printed no result (model or golden file vanished?)");
    };
    let prompts = g["prompts"].as_array().unwrap();
    let n = prompts.len();
    assert_eq!((f32_out.len(), int8_out.len()), (2 * n, 2 * n));
    let mut worst = 0f32;
    let mut diverged = 0;
    for (i, ((fi, fl), (qi, ql))) in f32_out.iter().zip(&int8_out).enumerate() {
        let p = &prompts[i % n];
        let name = p["name"].as_str().unwrap();
        let batch = if i < n { "b1" } else { "batched" };
        let want = common::ids(&p["greedy"]["new_ids"]);
        assert_eq!(fi, &want, "{name} {batch}: f32 activations vs transformers");
        // int8 activations move logits by a few hundredths: greedy tokens must equal
        // transformers' until a step where transformers' own top-1/top-2 margin is a near-tie
        // (< NEAR_TIE), and there pick one of its top-5 tokens.
        if let Some(k) = qi.iter().zip(&want).position(|(a, b)| a != b) {
            let step = &p["greedy"]["steps"][k];
            let top = step["top_logits"].as_array().unwrap();
            let margin = top[0].as_f64().unwrap() - top[1].as_f64().unwrap();
            println!(
                "{name} {batch}: int8 diverges at new token {k} ({} vs transformers' {}), \
                 transformers' top-1/top-2 margin there {margin:.4}",
                qi[k], want[k]
            );
            assert!(
                margin < NEAR_TIE,
                "{name} {batch}: int8 diverges at {k} with margin {margin}"
            );
            assert!(
                common::ids(&step["top_ids"]).contains(&qi[k]),
                "{name} {batch}: int8 token not in top 5"
            );
            diverged += 1;
            continue;
        }
        let d = fl
            .iter()
            .zip(ql)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{name} {batch}: tokens equal, max |Δ logprob| int8 vs f32 = {d:e}");
        worst = worst.max(d);
    }
    println!(
        "worst |Δ logprob| int8 vs f32 activations (identical continuations): {worst:e}; \
         {diverged} of {} continuations diverge at a near-tie",
        2 * n
    );
    // Each divergence above is at a near-tie of transformers' and picks one of its top 5;
    // measured: 4 of 10 with the tensor decode step, 5 with the host step (its f32 summation
    // order moves raw_france b1 across a 0.22 margin). More than half is a broken path.
    assert!(diverged <= n, "int8 changed most continuations");
    // The int8 rounding moves log-probs by up to ~0.16 nats here (measured; the last
    // hidden state entering the output projection is rounded too): bound it at 0.25.
    assert!(worst < 0.25, "int8 log-probs moved by {worst}");
}
