//! Advantage + loss against the PyTorch peer (`scripts/grpo_reference.py`, TRL's GRPO
//! formulas): loss and gradient w.r.t. the log-probs agree to 1e-5 on burn's flex autodiff
//! device, for both advantage kinds and both aggregations.

mod common;

use burn::tensor::Device;
use common::{golden, mat, tensor};
use memfactory_rl::advantage::{self, AdvantageKind};
use memfactory_rl::loss::{Aggregation, LossConfig, LossInputs, grpo_loss};

#[test]
fn advantages_loss_and_gradient_match_pytorch() {
    let g = golden("grpo_reference.json");
    let group_size = g["group_size"].as_u64().unwrap() as usize;
    let turns = g["turns"].as_u64().unwrap() as usize;
    let eps = g["eps"].as_f64().unwrap() as f32;
    let rewards = mat(&g["rewards"]);
    let (mask, lp, old, rf) = (
        mat(&g["mask"]),
        mat(&g["logprobs"]),
        mat(&g["old_logprobs"]),
        mat(&g["ref_logprobs"]),
    );
    let dev = Device::flex().autodiff();
    for case in g["cases"].as_array().unwrap() {
        let kind = AdvantageKind::parse(case["advantage"].as_str().unwrap()).unwrap();
        let agg = Aggregation::parse(case["aggregation"].as_str().unwrap()).unwrap();
        let adv = advantage::compute(&rewards, kind, eps).unwrap();
        assert_eq!(adv.skipped_groups, 1);
        // Advantages per trajectory.
        for (ours, want) in adv
            .per_group
            .iter()
            .zip(case["advantages"].as_array().unwrap())
        {
            match ours {
                None => assert!(want.is_null()),
                Some(a) => {
                    for (x, y) in a.iter().zip(want.as_array().unwrap()) {
                        assert!((*x as f64 - y.as_f64().unwrap()).abs() < 1e-5, "{x} {y}");
                    }
                }
            }
        }
        // Rows: every turn of every trajectory of the kept groups.
        let (mut keep, mut a_rows) = (Vec::new(), Vec::new());
        for (gi, a) in adv.per_group.iter().enumerate() {
            let Some(a) = a else { continue };
            for (i, &ai) in a.iter().enumerate() {
                for (t, (at, m)) in advantage::broadcast(ai, turns, false)
                    .into_iter()
                    .enumerate()
                {
                    assert_eq!(m, 1.0);
                    keep.push((gi * group_size + i) * turns + t);
                    a_rows.push(at);
                }
            }
        }
        let pick =
            |m: &[Vec<f32>]| -> Vec<Vec<f32>> { keep.iter().map(|&r| m[r].clone()).collect() };
        let cols = mask[0].len();
        let advs: Vec<Vec<f32>> = a_rows.iter().map(|&a| vec![a; cols]).collect();
        let logprobs = tensor(&pick(&lp), &dev).require_grad();
        let cfg = LossConfig {
            clip_low: g["clip_low"].as_f64().unwrap() as f32,
            clip_high: g["clip_high"].as_f64().unwrap() as f32,
            kl_beta: g["kl_beta"].as_f64().unwrap() as f32,
            aggregation: agg,
            // TRL's formulas: no dual-clip, no k3 clamp (the inputs stay far from both
            // bounds, so the defaults would give the same numbers).
            clip_ratio_c: 0.0,
            kl_clamp: 0.0,
        };
        let out = grpo_loss(
            LossInputs {
                logprobs: logprobs.clone(),
                old_logprobs: tensor(&pick(&old), &dev),
                ref_logprobs: Some(tensor(&pick(&rf), &dev)),
                advantages: tensor(&advs, &dev),
                mask: tensor(&pick(&mask), &dev),
            },
            &cfg,
        )
        .unwrap();
        let loss: f32 = out.loss.clone().into_scalar();
        let want = case["loss"].as_f64().unwrap();
        assert!(
            (loss as f64 - want).abs() < 1e-5,
            "{kind:?} {agg:?}: loss {loss} vs {want}"
        );
        assert!(
            out.stats.clip_fraction > 0.0,
            "inputs should exercise clipping"
        );
        let grads = out.loss.backward();
        let grad: Vec<f32> = logprobs
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let want_grad = mat(&case["grad"]);
        let mut worst = 0f64;
        for (k, &r) in keep.iter().enumerate() {
            for c in 0..cols {
                let d = (grad[k * cols + c] as f64 - want_grad[r][c] as f64).abs();
                worst = worst.max(d);
            }
        }
        assert!(worst < 1e-5, "{kind:?} {agg:?}: max |Δgrad| = {worst:e}");
        // Rows of the skipped group have zero reference gradient.
        for (r, row) in want_grad.iter().enumerate() {
            if !keep.contains(&r) {
                assert!(row.iter().all(|&x| x == 0.0));
            }
        }
        println!(
            "{kind:?} {agg:?}: loss {loss:.7} (torch {want:.7}), max |Δgrad| {worst:.1e}, clip {:.3}",
            out.stats.clip_fraction
        );
    }
}
