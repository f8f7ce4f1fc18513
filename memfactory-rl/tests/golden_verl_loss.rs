//! The verl loss variants against their numpy peer (`scripts/verl_loss_reference.py`, golden
//! file `tests/golden/verl_loss_reference.json`): PPO dual-clip (`clip_ratio_c`), the
//! clamped k3 KL (`kl_clamp`), Dr. GRPO's constant-normaliser aggregation
//! (`seq-mean-token-sum-norm` with `loss_agg_norm`), each on and off, with a zero-variance
//! group kept as rows of advantage 0 (`zero_variance = "keep"`). Loss and gradient w.r.t. the
//! log-probs agree to 1e-5 on burn's flex autodiff device.
//!
//! A second input set moves five tokens' log-ratios 22 to 30 nats beyond verl's ±20 clamp on
//! the log-ratio before `exp` (`LOG_RATIO_CLAMP`): loss and gradient match the clamped numpy
//! peer, and the script's unclamped loss differs from it by orders of magnitude.
//!
//! The inputs exercise every branch (the script prints how many tokens each bound hits), and
//! each variant moves the loss far more than the tolerance, so a dropped clamp or a flipped
//! dual-clip condition fails here.

mod common;

use burn::tensor::Device;
use common::{golden, mat, tensor};
use memfactory_rl::advantage::{self, AdvantageKind};
use memfactory_rl::loss::{Aggregation, LossConfig, LossInputs, grpo_loss};
use serde_json::Value;

fn golden_verl() -> Value {
    golden("verl_loss_reference.json")
}

/// The advantage of every row (one turn per trajectory), broadcast over `cols` tokens.
fn advantage_rows(g: &Value, cols: usize) -> Vec<Vec<f32>> {
    let rewards = mat(&g["rewards"]);
    let adv = advantage::compute(&rewards, AdvantageKind::DrGrpo, 1e-6).unwrap();
    adv.per_group
        .iter()
        .enumerate()
        .flat_map(|(gi, a)| a.clone().unwrap_or(vec![0.0; rewards[gi].len()]))
        .map(|a| vec![a; cols])
        .collect()
}

/// verl's ±20 clamp on `logp − old_logp` before `exp`: five tokens moved 22–30 nats past
/// it (their reference moved with them, so the k3 term is the same) give numpy's clamped
/// loss and gradient — none through a clamped token — with and without dual-clip; without
/// dual-clip the unclamped loss would be about 7000 times larger.
#[test]
fn the_log_ratio_clamp_matches_numpy_beyond_20_nats() {
    use memfactory_rl::loss::LOG_RATIO_CLAMP;
    assert_eq!(LOG_RATIO_CLAMP, 20.0);
    let g = golden_verl();
    let x = &g["log_ratio_clamp"];
    let (mask, lp, old, rf) = (
        mat(&g["mask"]),
        mat(&x["logprobs"]),
        mat(&g["old_logprobs"]),
        mat(&x["ref_logprobs"]),
    );
    let cols = mask[0].len();
    let advs = advantage_rows(&g, cols);
    let dev = Device::flex().autodiff();
    let mut acted = false;
    for case in x["cases"].as_array().unwrap() {
        let cfg = LossConfig {
            clip_low: g["clip_low"].as_f64().unwrap() as f32,
            clip_high: g["clip_high"].as_f64().unwrap() as f32,
            kl_beta: g["kl_beta"].as_f64().unwrap() as f32,
            aggregation: Aggregation::TokenMean,
            clip_ratio_c: case["clip_ratio_c"].as_f64().unwrap() as f32,
            kl_clamp: case["kl_clamp"].as_f64().unwrap() as f32,
        };
        assert_eq!(case["aggregation"], "token-mean");
        assert_eq!(case["log_ratio_clamped_tokens"], 5);
        let logprobs = tensor(&lp, &dev).require_grad();
        let out = grpo_loss(
            LossInputs {
                logprobs: logprobs.clone(),
                old_logprobs: tensor(&old, &dev),
                ref_logprobs: Some(tensor(&rf, &dev)),
                advantages: tensor(&advs, &dev),
                mask: tensor(&mask, &dev),
            },
            &cfg,
        )
        .unwrap();
        let label = format!("log-ratio clamp, c={}", cfg.clip_ratio_c);
        let tokens = out.stats.tokens as f32;
        let dual_n = (out.stats.dual_clip_fraction * tokens).round() as u64;
        assert_eq!(
            dual_n,
            case["dual_clipped_tokens"].as_u64().unwrap(),
            "{label}"
        );
        let loss: f32 = out.loss.clone().into_scalar();
        let want = case["loss"].as_f64().unwrap();
        let raw = case["loss_without_log_ratio_clamp"].as_f64().unwrap();
        assert!(loss.is_finite(), "{label}: loss {loss}");
        assert!(
            (loss as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{label}: loss {loss} vs numpy {want} (unclamped {raw})"
        );
        if (raw - want).abs() > 1e-3 * want.abs().max(1.0) {
            acted = true;
        }
        let grads = out.loss.backward();
        let grad: Vec<f32> = logprobs
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let want_grad = mat(&case["grad"]);
        let mut worst = 0f64;
        for (r, row) in want_grad.iter().enumerate() {
            for (c, w) in row.iter().enumerate() {
                let d = (grad[r * cols + c] as f64 - *w as f64).abs();
                worst = worst.max(d / (*w as f64).abs().max(1.0));
            }
        }
        assert!(worst < 1e-5, "{label}: max relative |Δgrad| = {worst:e}");
        println!(
            "{label}: loss {loss:.7e} (numpy {want:.7e}, without the clamp {raw:.7e}), max |Δgrad| {worst:.1e}, dual-clipped {dual_n}"
        );
    }
    assert!(acted, "no case where the log-ratio clamp changes the loss");
}

#[test]
fn dual_clip_kl_clamp_and_constant_normaliser_match_numpy() {
    let g = golden_verl();
    let rewards = mat(&g["rewards"]);
    let (mask, lp, old, rf) = (
        mat(&g["mask"]),
        mat(&g["logprobs"]),
        mat(&g["old_logprobs"]),
        mat(&g["ref_logprobs"]),
    );
    let cols = mask[0].len();
    // Advantages: dr-grpo, the zero-variance group kept with A = 0.
    let adv = advantage::compute(&rewards, AdvantageKind::DrGrpo, 1e-6).unwrap();
    assert_eq!(adv.skipped_groups, 1);
    let want_adv = mat(&g["advantages"]);
    let mut a_rows = Vec::new();
    for (gi, a) in adv.per_group.iter().enumerate() {
        let a = a.clone().unwrap_or(vec![0.0; rewards[gi].len()]);
        for (x, y) in a.iter().zip(&want_adv[gi]) {
            assert!((x - y).abs() < 1e-6, "advantage {x} vs {y}");
        }
        a_rows.extend(a);
    }
    let advs: Vec<Vec<f32>> = a_rows.iter().map(|&a| vec![a; cols]).collect();
    let dev = Device::flex().autodiff();
    let norm = g["loss_agg_norm"].as_f64().unwrap() as f32;
    let mut losses = Vec::new();
    for case in g["cases"].as_array().unwrap() {
        let name = case["aggregation"].as_str().unwrap();
        let aggregation = Aggregation::parse_with(name, norm).unwrap();
        let cfg = LossConfig {
            clip_low: g["clip_low"].as_f64().unwrap() as f32,
            clip_high: g["clip_high"].as_f64().unwrap() as f32,
            kl_beta: g["kl_beta"].as_f64().unwrap() as f32,
            aggregation,
            clip_ratio_c: case["clip_ratio_c"].as_f64().unwrap() as f32,
            kl_clamp: case["kl_clamp"].as_f64().unwrap() as f32,
        };
        let logprobs = tensor(&lp, &dev).require_grad();
        let out = grpo_loss(
            LossInputs {
                logprobs: logprobs.clone(),
                old_logprobs: tensor(&old, &dev),
                ref_logprobs: Some(tensor(&rf, &dev)),
                advantages: tensor(&advs, &dev),
                mask: tensor(&mask, &dev),
            },
            &cfg,
        )
        .unwrap();
        let tokens = out.stats.tokens as f32;
        let label = format!("{name} c={} clamp={}", cfg.clip_ratio_c, cfg.kl_clamp);
        // The bounds hit as many tokens as in the reference.
        let dual_n = (out.stats.dual_clip_fraction * tokens).round() as u64;
        let kl_n = (out.stats.kl_clamp_fraction * tokens).round() as u64;
        assert_eq!(
            dual_n,
            case["dual_clipped_tokens"].as_u64().unwrap(),
            "{label}"
        );
        assert_eq!(kl_n, case["kl_clamped_tokens"].as_u64().unwrap(), "{label}");
        let loss: f32 = out.loss.clone().into_scalar();
        let want = case["loss"].as_f64().unwrap();
        assert!(
            (loss as f64 - want).abs() < 1e-5,
            "{label}: loss {loss} vs numpy {want}"
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
        for (r, row) in want_grad.iter().enumerate() {
            for (c, w) in row.iter().enumerate() {
                worst = worst.max((grad[r * cols + c] as f64 - *w as f64).abs());
            }
        }
        assert!(worst < 1e-5, "{label}: max |Δgrad| = {worst:e}");
        println!(
            "{label}: loss {loss:.7} (numpy {want:.7}), max |Δgrad| {worst:.1e}, dual-clipped {dual_n}, kl-clamped {kl_n}"
        );
        losses.push((label, want));
    }
    // Each switch changes the loss by far more than the tolerance: the test sees a mutant.
    for i in 0..losses.len() {
        for j in i + 1..losses.len() {
            assert!(
                (losses[i].1 - losses[j].1).abs() > 1e-3,
                "{} and {} give the same loss",
                losses[i].0,
                losses[j].0
            );
        }
    }
}
