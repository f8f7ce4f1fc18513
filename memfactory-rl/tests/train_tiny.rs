//! End to end on the tiny Qwen2 golden model (CPU, flex): a few GRPO steps with a reward
//! that prefers one token raise that token's probability; metrics.jsonl gets one line per
//! step, the clip fraction becomes non-zero once the policy moves.

use std::path::Path;
use std::sync::Arc;

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
    rollout_with(lm, step, groups, g, &PROMPT)
}

/// [`rollout`] from another prompt.
fn rollout_with(
    lm: &dyn LanguageModel,
    step: usize,
    groups: usize,
    g: usize,
    prompt: &[u32],
) -> Result<Vec<Group>> {
    let sample: Sample =
        serde_json::from_value(serde_json::json!({"id": "s", "question": "q", "answers": ["a"]}))
            .unwrap();
    let mut out = Vec::new();
    for gi in 0..groups {
        let reqs: Vec<GenRequest> = (0..g)
            .map(|p| GenRequest {
                prompt: Prompt::Tokens(prompt.to_vec()),
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
                    model: memfactory_core::episode::POLICY_MODEL.into(),
                    prompt: r.prompt,
                    params: r.params,
                    output: o,
                })],
                memory_tokens: None,
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
    let mut trainer = Trainer::new(Arc::new(lm), cfg, reward, Some(dir.path())).unwrap();
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
    let mut trainer = Trainer::new(Arc::new(lm), cfg, reward, None).unwrap();
    let m = trainer.train_on(&groups).unwrap();
    println!("ratio {} clip {} rows {}", m.ratio, m.clip_fraction, m.rows);
    assert!(m.rows > 0);
    assert!((m.ratio - 1.0).abs() < 1e-3, "ratio {}", m.ratio);
    assert_eq!(m.clip_fraction, 0.0);
    assert_eq!(m.kl, 0.0);
    assert_eq!(m.updates, 1);
}

fn resume_cfg(lora: bool) -> TrainConfig {
    let src = format!(
        r#"
        samples_per_step = 2
        group_size = 4
        advantage = "grpo"
        ppo_epochs = 2
        mini_batch_size = 4
        lr = 1e-2
        kl_beta = 0.01
        warmup_steps = 1
        schedule = "cosine"
        {}
        [[rewards]]
        kind = "exact-match"
    "#,
        if lora {
            "lora = { rank = 4, alpha = 8.0, targets = [\"q_proj\", \"v_proj\", \"down_proj\"] }"
        } else {
            ""
        }
    );
    TrainConfig::from_cfg(memfactory_core::Cfg::new(
        "train",
        toml::from_str(&src).unwrap(),
    ))
    .unwrap()
    .0
}

/// The first token of a sample at a fixed seed: a token the model samples sometimes, so
/// groups rewarded for it have reward variance.
fn sampled_token() -> u32 {
    rollout(&model(), 99, 1, 8).unwrap()[0].episodes[0]
        .lm_calls()
        .next()
        .unwrap()
        .output
        .token_ids[0]
}

fn resume_trainer(lora: bool, target: u32) -> Trainer {
    Trainer::new(
        Arc::new(model()),
        resume_cfg(lora),
        reward_for(target),
        None,
    )
    .unwrap()
}

fn reward_for(target: u32) -> CompositeReward {
    CompositeReward {
        components: vec![WeightedReward {
            reward: Box::new(Prefers(target)),
            weight: 1.0,
        }],
    }
}

/// Metrics that must agree exactly between a resumed and an uninterrupted run (timings
/// excluded).
fn comparable(m: &memfactory_rl::trainer::StepMetrics) -> String {
    format!(
        "{} {:?} {} {} {} {} {} {} {} {}",
        m.step,
        m.reward,
        m.loss,
        m.kl,
        m.clip_fraction,
        m.ratio,
        m.grad_norm,
        m.lr,
        m.updates,
        m.rows
    )
}

fn resume_matches(lora: bool) {
    // A token the model samples sometimes, so groups have reward variance.
    let target = sampled_token();
    let probe = vec![PROMPT.to_vec()];
    // Uninterrupted: 4 steps.
    let mut a = resume_trainer(lora, target);
    let mut ma = Vec::new();
    for _ in 0..4 {
        ma.push(comparable(
            &a.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap(),
        ));
    }
    // 2 steps, checkpoint, a fresh process-like trainer restores, 2 more steps.
    let dir = tempfile::tempdir().unwrap();
    let mut b = resume_trainer(lora, target);
    let mut mb = Vec::new();
    for _ in 0..2 {
        mb.push(comparable(
            &b.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap(),
        ));
    }
    let ck = b
        .checkpoint(dir.path(), 2, serde_json::json!({"cursor": 2}))
        .unwrap();
    drop(b);
    let mut c = resume_trainer(lora, target);
    assert_eq!(c.restore(&ck).unwrap(), serde_json::json!({"cursor": 2}));
    assert_eq!(c.steps_done(), 2);
    for _ in 0..2 {
        mb.push(comparable(
            &c.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap(),
        ));
    }
    assert_eq!(
        ma, mb,
        "metrics of 2 + resume + 2 steps differ from 4 steps"
    );
    assert_eq!(a.updates_done(), c.updates_done());
    let (la, lc) = (
        a.lm().batch_logits(&probe).unwrap(),
        c.lm().batch_logits(&probe).unwrap(),
    );
    assert!(
        la == lc,
        "weights after 2 + resume + 2 steps differ from 4 steps"
    );
    // The policy did move.
    assert!(
        la != model().batch_logits(&probe).unwrap(),
        "no update happened: the test would prove nothing"
    );
}

#[test]
fn resume_equals_uninterrupted_full_finetune() {
    resume_matches(false);
}

#[test]
fn resume_equals_uninterrupted_lora() {
    resume_matches(true);
}

#[test]
fn checkpoints_are_pruned_and_mismatched_lora_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = resume_trainer(true, 7);
    for _ in 0..3 {
        t.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
        t.checkpoint(dir.path(), 2, serde_json::Value::Null)
            .unwrap();
    }
    let names: Vec<String> = memfactory_rl::checkpoint::list(dir.path())
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-000002", "step-000003"]);
    let latest = memfactory_rl::checkpoint::latest(dir.path())
        .unwrap()
        .unwrap();
    let mut full = resume_trainer(false, 7);
    let e = full.restore(&latest).unwrap_err().to_string();
    assert!(e.contains("train.lora"), "{e}");
    // A torn checkpoint (state.json missing) is not listed.
    std::fs::remove_file(latest.join("state.json")).unwrap();
    assert_eq!(
        memfactory_rl::checkpoint::latest(dir.path())
            .unwrap()
            .unwrap(),
        dir.path().join("step-000002")
    );
}

/// Splitting a mini-batch into memory-sized chunks changes only the summation order.
#[test]
fn chunked_micro_batches_match_whole_ones() {
    let target = sampled_token();
    let run = |tokens: usize| {
        let mut cfg = resume_cfg(false);
        cfg.micro_batch_tokens = tokens;
        let mut t = Trainer::new(Arc::new(model()), cfg, reward_for(target), None).unwrap();
        let mut ms = Vec::new();
        for _ in 0..3 {
            ms.push(t.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap());
        }
        let m = ms
            .into_iter()
            .find(|m| m.updates > 0)
            .expect("some step updates");
        (m, t.lm().batch_logits(&[PROMPT.to_vec()]).unwrap())
    };
    let (whole, lw) = run(1 << 20);
    let (chunked, lc) = run(1); // one row per chunk
    let l0 = model().batch_logits(&[PROMPT.to_vec()]).unwrap();
    assert!(whole.updates > 0);
    // The two runs differ only in the order of f32 sums (one GEMM over all rows, or one per
    // row, and the chunks' gradients added up), and the GEMM's kernels — so that order — differ
    // between AVX2 and AVX-512 machines. Each bound is therefore relative to the size of the
    // quantity compared, with a wide margin over the rounding measured on both (CONTRIBUTING,
    // "Numeric tolerances"), and far below what a chunking fault (a row dropped or weighted
    // per chunk: a change of order 1/rows) would give.
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE);
    // Measured: 7e-6 relative on AVX-512 (loss 0.454).
    let loss_rel = rel(whole.loss, chunked.loss);
    assert!(
        loss_rel < 1e-4,
        "loss {} vs {} (relative {loss_rel:e})",
        whole.loss,
        chunked.loss
    );
    // Measured: 1.1e-5 relative on AVX-512 (norm 11.5).
    let gn_rel = rel(whole.grad_norm, chunked.grad_norm);
    assert!(
        gn_rel < 1e-4,
        "grad norm {} vs {} (relative {gn_rel:e})",
        whole.grad_norm,
        chunked.grad_norm
    );
    // Logits after three steps, against how far those steps moved them from the start
    // (measured: 1.1e-4 apart after a move of 7.8, i.e. 1.4e-5 of the move, on AVX-512).
    let max_diff = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let moved = max_diff(&lw[0], &l0[0]);
    let apart = max_diff(&lw[0], &lc[0]);
    assert!(moved > 0.1, "training moved the logits by only {moved}");
    assert!(
        apart < 1e-3 * moved,
        "logits differ by {apart} after training moved them by {moved}"
    );
}

/// Flips one bit in the middle of `path`.
fn flip_bit(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_damaged_checkpoint_file_is_named_with_both_hashes() {
    use memfactory_rl::checkpoint::{self, Integrity};
    let target = sampled_token();
    let dir = tempfile::tempdir().unwrap();
    let mut t = resume_trainer(true, target);
    t.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
    let ck = t
        .checkpoint(&dir.path().join("ck"), 2, serde_json::Value::Null)
        .unwrap();
    assert!(ck.join("manifest.json").is_file());
    assert_eq!(checkpoint::verify(&ck).unwrap(), Integrity::Verified);
    assert_eq!(
        checkpoint::read(&ck).unwrap().integrity,
        Integrity::Verified
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("manifest.json")).unwrap()).unwrap();

    for file in ["trainable.safetensors", "optimizer.bpk", "state.json"] {
        let bad = dir.path().join(format!("bad-{file}"));
        copy_dir(&ck, &bad);
        flip_bit(&bad.join(file));
        let want = manifest["sha256"][file].as_str().unwrap().to_string();
        let got = checkpoint::sha256_file(&bad.join(file)).unwrap();
        assert_ne!(want, got);
        for e in [
            checkpoint::read(&bad).err().expect("a flipped bit loads"),
            checkpoint::verify(&bad).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(e.is_user_error(), "{file}: {msg}");
            assert!(
                msg.contains(&bad.join(file).display().to_string()),
                "{file}: {msg}"
            );
            assert!(msg.contains(&want) && msg.contains(&got), "{file}: {msg}");
        }
        // The trainer refuses it and stays usable.
        let mut r = resume_trainer(true, target);
        assert!(r.restore(&bad).is_err());
        assert_eq!(r.steps_done(), 0);
        r.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
    }

    // Shipped for evaluation without the optimizer state: the weights load, verified; a
    // resume needs the optimizer state and says which file is missing.
    let weights_only = dir.path().join("weights-only");
    copy_dir(&ck, &weights_only);
    std::fs::remove_file(weights_only.join("optimizer.bpk")).unwrap();
    let w = checkpoint::read_weights(&weights_only).unwrap();
    assert_eq!(w.integrity, Integrity::Verified);
    assert_eq!(w.state.step, checkpoint::read(&ck).unwrap().state.step);
    let e = checkpoint::read(&weights_only)
        .err()
        .expect("no optimizer state");
    assert!(e.to_string().contains("optimizer.bpk"), "{e}");
    // A flipped bit in the weights is still caught without the optimizer file.
    flip_bit(&weights_only.join("trainable.safetensors"));
    assert!(checkpoint::read_weights(&weights_only).is_err());

    // A checkpoint written before checksums (no manifest) loads, unverified.
    let old = dir.path().join("old");
    copy_dir(&ck, &old);
    std::fs::remove_file(old.join("manifest.json")).unwrap();
    assert_eq!(checkpoint::verify(&old).unwrap(), Integrity::Unverified);
    assert_eq!(
        checkpoint::read(&old).unwrap().integrity,
        Integrity::Unverified
    );
    let mut r = resume_trainer(true, target);
    r.restore(&old).unwrap();
    assert_eq!(r.steps_done(), 1);

    // A manifest that is not one is an error, not a skipped check.
    let garbled = dir.path().join("garbled");
    copy_dir(&ck, &garbled);
    std::fs::write(garbled.join("manifest.json"), "{\"format\": 1, \"sha2").unwrap();
    let e = checkpoint::read(&garbled)
        .err()
        .expect("a torn manifest loads");
    assert!(
        e.is_user_error() && e.to_string().contains("manifest"),
        "{e}"
    );
}

#[test]
fn restoring_drops_the_metrics_of_steps_after_the_checkpoint() {
    let target = sampled_token();
    let run = tempfile::tempdir().unwrap();
    let new = || {
        Trainer::new(
            Arc::new(model()),
            resume_cfg(true),
            reward_for(target),
            Some(run.path()),
        )
        .unwrap()
    };
    let mut t = new();
    t.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
    let ck = t
        .checkpoint(&run.path().join("checkpoints"), 2, serde_json::Value::Null)
        .unwrap();
    t.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
    drop(t);
    // A kill in the middle of the next line.
    let mp = run.path().join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&mp).unwrap();
    text.push_str("{\"step\": 2, \"rew");
    std::fs::write(&mp, text).unwrap();

    let mut r = new();
    r.restore(&ck).unwrap();
    r.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
    r.step(&mut |lm, step| rollout(lm, step, 2, 4)).unwrap();
    let steps: Vec<u64> = std::fs::read_to_string(&mp)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [0, 1, 2], "one line per step after the restore");
}

fn first_token(g: &Group) -> u32 {
    g.episodes[0].lm_calls().next().unwrap().output.token_ids[0]
}

fn cfg_from(src: &str) -> TrainConfig {
    TrainConfig::from_cfg(memfactory_core::Cfg::new(
        "train",
        toml::from_str(src).unwrap(),
    ))
    .unwrap()
    .0
}

/// One epoch, one mini-batch holding every row, no KL: the ratio of the only update is
/// `exp(trainer − old)` over the rollout.
const ONE_BATCH: &str = r#"
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

#[test]
fn recomputed_old_logprobs_make_the_first_ratio_one_and_the_gap_is_logged() {
    let groups = rollout(&model(), 7, 2, 8).unwrap();
    let target = first_token(&groups[0]);
    let run = |mode: &str| {
        let cfg = cfg_from(&format!("old_logprobs = \"{mode}\"\n{ONE_BATCH}"));
        let mut t = Trainer::new(Arc::new(model()), cfg, reward_for(target), None).unwrap();
        t.train_on(&groups).unwrap()
    };
    let (s, r) = (run("sampler"), run("recompute"));
    println!(
        "sampler: ratio {:.9} gap {:.3e}/{:.3e} over {} tokens; recompute: ratio {:.9} gap {:.3e}/{:.3e} over {} tokens",
        s.ratio,
        s.logprob_gap_mean,
        s.logprob_gap_max,
        s.logprob_gap_tokens,
        r.ratio,
        r.logprob_gap_mean,
        r.logprob_gap_max,
        r.logprob_gap_tokens
    );
    assert!(s.rows > 0 && s.rows == r.rows);
    let tokens: usize = groups
        .iter()
        .flat_map(|g| &g.episodes)
        .flat_map(|e| e.lm_calls())
        .map(|c| c.output.token_ids.len())
        .sum();
    // Both modes compare every action token here (one mini-batch before the update).
    assert!(r.logprob_gap_tokens > 0 && r.logprob_gap_tokens <= tokens);
    assert_eq!(s.logprob_gap_tokens, r.logprob_gap_tokens);
    // The same forward of the same weights, batched differently: the same gap.
    assert!(
        (s.logprob_gap_mean - r.logprob_gap_mean).abs() <= 1e-5 * (1.0 + s.logprob_gap_mean),
        "{} vs {}",
        s.logprob_gap_mean,
        r.logprob_gap_mean
    );
    assert!(r.logprob_gap_max >= r.logprob_gap_mean && r.logprob_gap_mean >= 0.0);
    // The sampler (inference kernels) and the training forward differ: the gap is real.
    assert!(
        s.logprob_gap_max > 0.0,
        "no sampler-vs-trainer gap measured"
    );
    // Recomputed: the ratio before the first update is 1 up to the batching of the two
    // forwards (f32 rounding, well below the sampler gap).
    assert!((r.ratio - 1.0).abs() < 1e-5, "ratio {}", r.ratio);
    assert!(
        (r.ratio - 1.0).abs() < (s.ratio - 1.0).abs().max(1e-7),
        "recompute ratio {} vs sampler ratio {}",
        r.ratio,
        s.ratio
    );
    assert_eq!(r.clip_fraction, 0.0);
}

/// Reward: 1 for every episode of sample `s0` (a zero-variance group), the preferred-token
/// fraction otherwise.
struct ConstantOnS0(Prefers);
impl Reward for ConstantOnS0 {
    fn name(&self) -> &str {
        "prefers"
    }
    fn score(&self, s: &Sample, e: &Episode) -> Result<Option<f32>> {
        if e.sample_id == "s0" {
            Ok(Some(1.0))
        } else {
            self.0.score(s, e)
        }
    }
}

#[test]
fn zero_variance_groups_are_dropped_kept_or_resampled() {
    let groups = rollout(&model(), 7, 2, 8).unwrap();
    // A token group 1 samples sometimes: its rewards vary.
    let target = first_token(&groups[1]);
    let reward = || CompositeReward {
        components: vec![WeightedReward {
            reward: Box::new(ConstantOnS0(Prefers(target))),
            weight: 1.0,
        }],
    };
    let trainer = |mode: &str| {
        let cfg = cfg_from(&format!(
            "zero_variance = \"{mode}\"\n{}",
            ONE_BATCH.replace("mini_batch_size = 16", "mini_batch_size = 8")
        ));
        Trainer::new(Arc::new(model()), cfg, reward(), None).unwrap()
    };
    let drop = trainer("drop").train_on(&groups).unwrap();
    let keep = trainer("keep").train_on(&groups).unwrap();
    println!(
        "drop: rows {} skipped {}; keep: rows {} skipped {} zero-variance {}",
        drop.rows, drop.skipped_groups, keep.rows, keep.skipped_groups, keep.zero_variance_groups
    );
    assert_eq!((drop.skipped_groups, drop.zero_variance_groups), (1, 1));
    assert_eq!((keep.skipped_groups, keep.zero_variance_groups), (0, 1));
    // Every episode makes one row: the kept group adds its 8 rows (advantage 0).
    assert_eq!((drop.rows, keep.rows), (8, 16));
    // (That the A = 0 rows count in the token-mean denominator and carry the KL is
    // checked against the numpy peer in tests/golden_verl_loss.rs.)

    // Resample: `s0` is replaced by a group of a further round.
    let mut t = trainer("resample");
    let err = t
        .step(&mut |lm, step| rollout(lm, step, 2, 8))
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.zero_variance"), "{err}");
    let mut asked = Vec::new();
    let m = t
        .step_with(
            &mut |lm, step| rollout(lm, step + 7, 2, 8),
            Some(&mut |lm, step, round| {
                asked.push((step, round));
                // The step's own rollout again, under new sample ids: group 1 varies.
                let mut g = rollout(lm, 7, 2, 8)?;
                for (i, grp) in g.iter_mut().enumerate() {
                    for e in &mut grp.episodes {
                        e.sample_id = format!("r{round}-{i}");
                    }
                }
                Ok(g)
            }),
        )
        .unwrap();
    println!(
        "resample: rows {} rounds {} left out {} zero-variance {}",
        m.rows, m.resample_rounds, m.resample_dropped_groups, m.zero_variance_groups
    );
    assert_eq!(asked, vec![(0, 1)]);
    assert_eq!(m.resample_rounds, 1);
    // Left out: s0, and the second group of round 1 (the batch was full).
    assert_eq!(m.resample_dropped_groups, 2);
    assert_eq!(
        (m.zero_variance_groups, m.skipped_groups, m.rows),
        (0, 0, 16)
    );

    // A cap on rounds: a source that only yields zero-variance groups is asked that often.
    let mut t = Trainer::new(
        Arc::new(model()),
        cfg_from(&format!(
            "zero_variance = \"resample\"\nresample_max_rounds = 3\n{}",
            ONE_BATCH.replace("mini_batch_size = 16", "mini_batch_size = 8")
        )),
        reward(),
        None,
    )
    .unwrap();
    let mut n = 0;
    let m = t
        .step_with(
            &mut |lm, step| rollout(lm, step + 7, 2, 8),
            Some(&mut |lm, _, round| {
                n += 1;
                // Only sample s0: constant reward.
                rollout(lm, 600 + round, 1, 8)
            }),
        )
        .unwrap();
    assert_eq!((n, m.resample_rounds, m.rows), (3, 3, 8));
}

/// A prompt long enough to be shared by a group's rows (at least `PREFIX_MIN_TOKENS`).
const LONG_PROMPT: [u32; 24] = [
    5, 17, 42, 99, 3, 8, 61, 7, 12, 90, 33, 4, 5, 17, 42, 99, 21, 22, 23, 24, 25, 26, 27, 28,
];

/// `prefix_sharing` (each group's prompt run once per forward, rows packed) against every row
/// run alone: the same step up to f32 summation order, in the loss, the gradient norm, the
/// recomputed old log-probs (ratio 1) and the updated policy.
#[test]
fn prefix_sharing_changes_only_float_rounding() {
    let groups = rollout_with(&model(), 7, 2, 8, &LONG_PROMPT).unwrap();
    let target = first_token(&groups[0]);
    let run = |sharing: bool| {
        let cfg = cfg_from(&format!(
            "old_logprobs = \"recompute\"\nprefix_sharing = {sharing}\n{ONE_BATCH}"
        ));
        assert_eq!(cfg.prefix_sharing, sharing);
        let mut t = Trainer::new(Arc::new(model()), cfg, reward_for(target), None).unwrap();
        let m = t.train_on(&groups).unwrap();
        (m, t.lm().batch_logits(&[LONG_PROMPT.to_vec()]).unwrap())
    };
    let ((shared, ls), (alone, la)) = (run(true), run(false));
    println!(
        "loss {} / {}, grad norm {} / {}, ratio {} / {}",
        shared.loss, alone.loss, shared.grad_norm, alone.grad_norm, shared.ratio, alone.ratio
    );
    assert!(shared.rows > 0 && shared.rows == alone.rows);
    assert!(shared.updates > 0);
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE);
    assert!(
        rel(shared.loss, alone.loss) < 1e-4,
        "loss {} vs {}",
        shared.loss,
        alone.loss
    );
    assert!(
        rel(shared.grad_norm, alone.grad_norm) < 1e-4,
        "grad norm {} vs {}",
        shared.grad_norm,
        alone.grad_norm
    );
    assert!((shared.ratio - 1.0).abs() < 1e-5 && (alone.ratio - 1.0).abs() < 1e-5);
    let l0 = model().batch_logits(&[LONG_PROMPT.to_vec()]).unwrap();
    let max_diff = |a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>]| {
        a.iter()
            .flatten()
            .flatten()
            .zip(b.iter().flatten().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let moved = max_diff(&ls, &l0);
    assert!(moved > 0.0, "the update moved the policy");
    let apart = max_diff(&ls, &la);
    println!("logits {apart} apart after a move of {moved}");
    assert!(
        apart <= 1e-3 * moved,
        "sharing vs alone: logits {apart} apart after a move of {moved}"
    );
}
