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

#[test]
fn lora_policy_decodes_on_the_base_blocks_like_the_merged_weights() {
    // A LoRA policy trained on a GGUF base keeps decoding on the base's Q4_1 / Q8_0 blocks
    // with the adapters added beside them; an engine without blocks decodes on the merged
    // f32 weights. With non-zero adapters (B drawn at random, so the policy differs from
    // the base) both must give the same greedy tokens and log-probs up to summation order.
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    let p = common::model_path();
    if !p.exists() {
        println!("skipping: model file {} not found", p.display());
        return;
    }
    let blocks = memfactory_lm_burn::BurnLm::load_with(&p, "flex", true).unwrap();
    let plain = memfactory_lm_burn::BurnLm::load_with(&p, "flex", false).unwrap();
    assert!(blocks.block_weights() > 0 && plain.block_weights() == 0);
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    // The same adapters for both engines: A from the LoRA seed, B from a fixed stream.
    let adapted = |lm: &memfactory_lm_burn::BurnLm| -> TrainModel {
        let mut tm = TrainModel::new(lm, Some(&lora)).unwrap();
        let mut seed = 7u64;
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
                })
                .collect()
        };
        let device = tm.device.clone();
        for b in &mut tm.decoder.blocks {
            for l in [
                &mut b.q_proj,
                &mut b.k_proj,
                &mut b.v_proj,
                &mut b.o_proj,
                &mut b.gate_proj,
                &mut b.up_proj,
                &mut b.down_proj,
            ] {
                if let Some(pb) = &l.lora_b {
                    let [r, out] = pb.val().dims();
                    let t =
                        Tensor::<2>::from_data(TensorData::new(draw(r * out), [r, out]), &device);
                    l.lora_b = Some(Param::from_tensor(t).set_require_grad(true));
                }
            }
        }
        tm
    };
    let blocked = blocks.block_weights();
    blocks.set_weights(&adapted(&blocks)).unwrap();
    plain.set_weights(&adapted(&plain)).unwrap();
    // Every weight that had blocks (here every projection) still reads them.
    assert!(blocked >= 4 * blocks.model_config().layers, "{blocked}");
    assert_eq!(blocks.block_weights(), blocked);
    assert_eq!(plain.block_weights(), 0);
    let reqs = [
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user("What is the capital of France?")]),
            params: SamplingParams::greedy(16),
        },
        GenRequest {
            prompt: Prompt::Text("Water boils at".into()),
            params: SamplingParams::greedy(10),
        },
    ];
    let base = memfactory_lm_burn::BurnLm::load_with(&p, "flex", false).unwrap();
    let before = base.generate(&reqs).unwrap();
    let a = blocks.generate(&reqs).unwrap();
    let b = plain.generate(&reqs).unwrap();
    let mut moved = 0f32;
    for ((x, y), z) in a.iter().zip(&b).zip(&before) {
        println!("{:?} | {:?} | base {:?}", x.text, y.text, z.text);
        assert_eq!(x.token_ids, y.token_ids);
        for (u, v) in x.logprobs.iter().zip(&y.logprobs) {
            assert!((u - v).abs() < 1e-3, "logprob {u} vs {v}");
        }
        for (u, v) in y.logprobs.iter().zip(&z.logprobs) {
            moved = moved.max((u - v).abs());
        }
    }
    // The adapters moved the policy (else the comparison above tests nothing).
    assert!(moved > 1e-2, "adapters changed log-probs by only {moved}");
}
