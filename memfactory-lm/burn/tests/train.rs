//! Training forward on SmolLM2: LoRA gradients flow, and autodiff log-probs equal the
//! log-probs the generator reported.

mod common;

use memfactory_core::{ChatMessage, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::{LoraConfig, TrainModel};

#[test]
fn lora_logprobs_match_generation_and_gradients_flow() {
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let reqs = vec![
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user("What is the capital of France?")]),
            params: SamplingParams::greedy(8),
        },
        GenRequest {
            prompt: Prompt::Text("The quick brown fox".into()),
            params: SamplingParams::greedy(5),
        },
    ];
    let gens = lm.generate(&reqs).unwrap();
    let batch: Vec<(Vec<u32>, Vec<u32>)> = gens
        .iter()
        .map(|g| (g.prompt_ids.clone(), g.token_ids.clone()))
        .collect();
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        seed: 1,
    };
    let tm = TrainModel::new(lm, Some(&lora)).unwrap();
    let t = std::time::Instant::now();
    let out = tm.action_logprobs(&batch, 1.0).unwrap();
    println!("forward in {:.2}s", t.elapsed().as_secs_f32());
    let lp: Vec<f32> = out.logprobs.clone().into_data().try_to_vec().unwrap();
    let mask: Vec<f32> = out.mask.clone().into_data().try_to_vec().unwrap();
    let amax = out.logprobs.dims()[1];
    let mut worst = 0f32;
    for (i, g) in gens.iter().enumerate() {
        for (j, &want) in g.logprobs.iter().enumerate() {
            let got = lp[i * amax + j];
            assert_eq!(mask[i * amax + j], 1.0);
            worst = worst.max((got - want).abs());
            assert!(
                (got - want).abs() < 3e-5,
                "row {i} token {j}: {got} vs {want}"
            );
        }
        for j in g.logprobs.len()..amax {
            assert_eq!(mask[i * amax + j], 0.0);
        }
    }
    println!("max |Δ logprob| = {worst:e}");
    let loss = (out.logprobs * out.mask).sum().neg();
    let t = std::time::Instant::now();
    let grads = loss.backward();
    println!("backward in {:.2}s", t.elapsed().as_secs_f32());
    let blk = &tm.decoder.blocks[3];
    // B starts at zero, so A's gradient is zero at step 0; B's must not be.
    let gb = blk
        .q_proj
        .lora_b
        .as_ref()
        .unwrap()
        .val()
        .grad(&grads)
        .expect("grad of q lora_b");
    let norm: f32 = gb.powf_scalar(2.0).sum().into_scalar::<f32>();
    assert!(norm > 0.0, "zero LoRA gradient");
    let gd = blk
        .down_proj
        .lora_b
        .as_ref()
        .unwrap()
        .val()
        .grad(&grads)
        .expect("grad of down lora_b");
    assert!(gd.abs().sum().into_scalar::<f32>() > 0.0);
    // Frozen base weights and untargeted projections get no gradient.
    assert!(blk.q_proj.weight.val().grad(&grads).is_none());
    assert!(blk.k_proj.lora_a.is_none());
    assert!(tm.decoder.embed.val().grad(&grads).is_none());
}

#[test]
fn full_finetune_grads_and_set_weights_roundtrip() {
    let Some(lm) = common::model() else {
        println!("skipping: no model");
        return;
    };
    let tm = TrainModel::new(lm, None).unwrap();
    let prompt = lm.encode("Hello, my name is").unwrap();
    let action = lm.encode(" Bob and I like").unwrap();
    let out = tm
        .action_logprobs(&[(prompt.clone(), action.clone())], 1.0)
        .unwrap();
    let grads = out.logprobs.sum().backward();
    assert!(tm.decoder.embed.val().grad(&grads).is_some());
    assert!(
        tm.decoder.blocks[0]
            .q_proj
            .weight
            .val()
            .grad(&grads)
            .is_some()
    );
    assert!(
        tm.decoder.blocks[29]
            .down_proj
            .weight
            .val()
            .grad(&grads)
            .is_some()
    );
    // Writing the (unchanged) weights back keeps generation identical.
    let lm2 = memfactory_lm_burn::BurnLm::load(&common::model_path(), "flex").unwrap();
    let req = [GenRequest {
        prompt: Prompt::Tokens(prompt.clone()),
        params: SamplingParams::greedy(6),
    }];
    let before = lm2.generate(&req).unwrap().remove(0);
    let lora = LoraConfig::default();
    let tl = TrainModel::new(&lm2, Some(&lora)).unwrap();
    lm2.set_weights(&tl).unwrap();
    let after = lm2.generate(&req).unwrap().remove(0);
    assert_eq!(before.token_ids, after.token_ids);
    for (a, b) in before.logprobs.iter().zip(&after.logprobs) {
        assert!((a - b).abs() < 1e-4);
    }
    // Unknown LoRA target is a typed error.
    let bad = LoraConfig {
        targets: vec!["embed_tokens".into()],
        ..LoraConfig::default()
    };
    assert!(TrainModel::new(lm, Some(&bad)).is_err());
}
