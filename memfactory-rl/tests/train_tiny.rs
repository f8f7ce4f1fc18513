//! End to end on the tiny Qwen2 golden model (CPU, flex): a few GRPO steps with a reward
//! that prefers one token raise that token's probability; metrics.jsonl gets one line per
//! step, the clip fraction becomes non-zero once the policy moves.

use std::path::Path;

use memfactory_core::{
    Episode, GenRequest, LanguageModel, LmCall, Prompt, Result, Reward, Sample, SamplingParams,
    Step,
};
use memfactory_lm_burn::{BurnLm, TrainModel};
use memfactory_rl::config::TrainConfig;
use memfactory_rl::reward::{CompositeReward, WeightedReward};
use memfactory_rl::rollout::Group;
use memfactory_rl::trainer::Trainer;

// Link the reward crate so its registration runs.
use memfactory_reward_exact_match as _;

const PROMPT: [u32; 4] = [5, 17, 42, 99];

/// Fraction of generated tokens equal to `target`.
struct Prefers(u32);
impl Reward for Prefers {
    fn name(&self) -> &str {
        "prefers"
    }
    fn score(&self, _: &Sample, e: &Episode) -> Result<Option<f32>> {
        let (mut hit, mut n) = (0, 0);
        for c in e.lm_calls() {
            n += c.output.token_ids.len();
            hit += c.output.token_ids.iter().filter(|&&t| t == self.0).count();
        }
        Ok(Some(if n == 0 { 0.0 } else { hit as f32 / n as f32 }))
    }
}

fn model() -> BurnLm {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../memfactory-lm/burn/tests/golden/tiny-qwen2");
    BurnLm::load(&p, "flex").unwrap()
}

fn rollout(lm: &dyn LanguageModel, step: usize, groups: usize, g: usize) -> Result<Vec<Group>> {
    let sample: Sample =
        serde_json::from_value(serde_json::json!({"id": "s", "question": "q", "answers": ["a"]}))
            .unwrap();
    let mut out = Vec::new();
    for gi in 0..groups {
        let reqs: Vec<GenRequest> = (0..g)
            .map(|p| GenRequest {
                prompt: Prompt::Tokens(PROMPT.to_vec()),
                params: SamplingParams {
                    max_new_tokens: 3,
                    temperature: 1.0,
                    seed: 1 + (step * 1000 + gi * 100 + p) as u64,
                    ..Default::default()
                },
            })
            .collect();
        let gens = lm.generate(&reqs)?;
        let episodes = reqs
            .into_iter()
            .zip(gens)
            .enumerate()
            .map(|(p, (r, o))| Episode {
                sample_id: format!("s{gi}"),
                path: p,
                seed: r.params.seed,
                answer: Some(o.text.clone()),
                steps: vec![Step::Lm(LmCall {
                    role: "answer".into(),
                    prompt: r.prompt,
                    params: r.params,
                    output: o,
                })],
            })
            .collect();
        out.push(Group {
            sample: sample.clone(),
            episodes,
        });
    }
    Ok(out)
}

fn prob_of(lm: &BurnLm, token: u32) -> f32 {
    let tm = TrainModel::new(lm, None).unwrap();
    let lp: f32 = tm
        .action_logprobs(&[(PROMPT.to_vec(), vec![token])], 1.0)
        .unwrap()
        .logprobs
        .into_scalar();
    lp.exp()
}

#[test]
fn grpo_raises_the_preferred_tokens_probability() {
    let lm = model();
    // Target: a token the model already samples sometimes (first token of a sample).
    let first = rollout(&lm, 99, 1, 8).unwrap();
    let target = first[0].episodes[0]
        .lm_calls()
        .next()
        .unwrap()
        .output
        .token_ids[0];
    let before = prob_of(&lm, target);

    let src = r#"
        steps = 4
        samples_per_step = 2
        group_size = 8
        advantage = "grpo"
        ppo_epochs = 2
        mini_batch_size = 8
        lr = 3e-3
        kl_beta = 0.01
        clip_high = 0.28
        max_grad_norm = 1.0
        [[rewards]]
        kind = "exact-match"
    "#;
    let (cfg, _, _) = TrainConfig::from_cfg(memfactory_core::Cfg::new(
        "train",
        toml::from_str(src).unwrap(),
    ))
    .unwrap();
    let reward = CompositeReward {
        components: vec![WeightedReward {
            reward: Box::new(Prefers(target)),
            weight: 1.0,
        }],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(lm, cfg, reward, Some(dir.path())).unwrap();
    let mut clip_seen = 0.0f64;
    for _ in 0..4 {
        let m = trainer
            .step(&mut |lm, step| rollout(lm, step, 2, 8))
            .unwrap();
        println!(
            "step {}: reward {:.3}±{:.3} loss {:.4} kl {:.5} clip {:.3} ratio {:.4} |g| {:.3} rows {} skipped {} updates {}",
            m.step,
            m.reward.mean,
            m.reward.std,
            m.loss,
            m.kl,
            m.clip_fraction_last_epoch,
            m.ratio,
            m.grad_norm,
            m.rows,
            m.skipped_groups,
            m.updates
        );
        assert!(m.loss.is_finite() && m.grad_norm.is_finite());
        clip_seen = clip_seen.max(m.clip_fraction);
    }
    let after = prob_of(trainer.lm(), target);
    println!("p(target {target}) {before:.4} → {after:.4}; max clip fraction {clip_seen:.3}");
    assert!(after > before * 1.2, "p(target) {before} → {after}");
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for k in [
        "reward",
        "reward_components",
        "loss",
        "kl",
        "clip_fraction",
        "grad_norm",
        "response_length",
        "tokens_per_s",
    ] {
        assert!(first.get(k).is_some(), "metrics.jsonl lacks {k}");
    }
    assert!(first["reward_components"].get("prefers").is_some());
}

#[test]
fn first_update_is_on_policy_ratio_one() {
    // One epoch, one mini-batch: the recomputed log-probs equal the sampling ones, so the
    // ratio is 1 and nothing is clipped before the first update.
    let lm = model();
    let src = r#"
        samples_per_step = 2
        group_size = 8
        advantage = "dr-grpo"
        ppo_epochs = 1
        mini_batch_size = 16
        lr = 1e-4
        kl_beta = 0.0
        [[rewards]]
        kind = "exact-match"
    "#;
    let (cfg, _, _) = TrainConfig::from_cfg(memfactory_core::Cfg::new(
        "train",
        toml::from_str(src).unwrap(),
    ))
    .unwrap();
    let groups = rollout(&lm, 7, 2, 8).unwrap();
    let target = groups[0].episodes[0]
        .lm_calls()
        .next()
        .unwrap()
        .output
        .token_ids[0];
    let reward = CompositeReward {
        components: vec![WeightedReward {
            reward: Box::new(Prefers(target)),
            weight: 1.0,
        }],
    };
    let mut trainer = Trainer::new(lm, cfg, reward, None).unwrap();
    let m = trainer.train_on(&groups).unwrap();
    println!("ratio {} clip {} rows {}", m.ratio, m.clip_fraction, m.rows);
    assert!(m.rows > 0);
    assert!((m.ratio - 1.0).abs() < 1e-3, "ratio {}", m.ratio);
    assert_eq!(m.clip_fraction, 0.0);
    assert_eq!(m.kl, 0.0);
    assert_eq!(m.updates, 1);
}
