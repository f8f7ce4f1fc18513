//! Training-step and rollout throughput of the burn engine, in the JSON-lines format of
//! `benches/scripts/compare_training.py` (`{"engine","metric","value"}` on stdout), so it runs
//! side by side with an equivalent PyTorch loop in one run:
//!
//! ```sh
//! cargo build --release -p memfactory-rl --example train_bench
//! $REFVENV/bin/python benches/scripts/compare_training.py --nice -15 \
//!     --memfactory-bin $CARGO_TARGET_DIR/release/examples/train_bench
//! ```
//!
//! Modes (one per process, so the caller measures each one's peak RSS):
//!
//! - `--mode lora` / `--mode full`: the exact sequence of one `Trainer` micro-batch plus its
//!   optimizer update (`trainer.rs` `micro_batch` + `apply_update`): `action_logprobs` under
//!   autodiff, `grpo_loss` (PPO clip 0.2/0.2, token-mean, `kl_beta` 0 so no reference
//!   forward), `loss.into_scalar()`, `backward`, `GradientsParams::from_grads`,
//!   `Optim::accumulate`, `Optim::update` (global-norm clip 1.0 + AdamW). The batch (prompt
//!   and action ids, advantages) comes from `--batch-file`, written by the script, so both
//!   engines train on the same rows. One warm-up step whose detached log-probs become the
//!   "old" log-probs of every later step, then `--steps` timed steps; reports the median.
//!   `BurnLm::set_weights` (once per `train_on`, not per step) is not timed. Also reports the
//!   median of each phase: `fwd` (forward + loss + `into_scalar`), `bwd` (backward +
//!   `from_grads` + `accumulate`), `opt` (`update`: clip + AdamW).
//! - `--mode rollout`: `--group` requests with the same chat prompt (temperature 1, top-k/p
//!   off, `--new-tokens` at most, seeds 1..=G) generated as one batch (`max_batch = G`) and
//!   one request at a time; best of `--reps` wall times each. Prints the prompt ids so the
//!   PyTorch peer can use the same ones.
//!
//! `--kernels composed` builds the training forward from burn's tensor ops instead of the
//! fused CPU kernels (`memfactory_lm_burn::fused`, the default on `flex`), for A/B runs.
//!
//! `--device wgpu` (built with `--features memfactory-lm-burn/wgpu`) runs on a GPU;
//! `--random DIR` builds the model of the Hugging Face directory `DIR` (config.json +
//! tokenizer.json) with random weights instead of loading `--gguf` (same shapes, same speed).

/// The allocator the `memfactory` binary uses (fresh-buffer-per-op workloads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use memfactory_core::{ChatMessage, GenRequest, LanguageModel, Prompt, SamplingParams};
use memfactory_lm_burn::{BurnLm, LoraConfig, TrainModel};
use memfactory_rl::loss::{Aggregation, LossConfig, LossInputs, grpo_loss};
use memfactory_rl::optim::{Optim, OptimConfig};
use serde_json::{Value, json};

fn emit(metric: &str, value: impl Into<Value>, extra: Value) {
    let mut v = json!({"engine": "memfactory", "metric": metric, "value": value.into()});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{v}");
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("train_bench: {msg}");
    std::process::exit(2);
}

struct Args {
    gguf: PathBuf,
    random: Option<PathBuf>,
    device: String,
    mode: String,
    batch_file: Option<PathBuf>,
    steps: usize,
    lr: f64,
    group: usize,
    new_tokens: usize,
    reps: usize,
    fused: bool,
}

fn args() -> Args {
    let mut a = Args {
        gguf: PathBuf::from("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
        random: None,
        device: "flex".into(),
        mode: "lora".into(),
        batch_file: None,
        steps: 5,
        lr: 1e-5,
        group: 8,
        new_tokens: 64,
        reps: 2,
        fused: true,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| die(format!("{} needs a value", v[i])));
        let num = |s: &str| {
            s.parse::<f64>()
                .unwrap_or_else(|e| die(format!("{s}: {e}")))
        };
        match v[i].as_str() {
            "--gguf" => a.gguf = val.into(),
            "--mode" => a.mode = val,
            "--random" => a.random = Some(val.into()),
            "--device" => a.device = val,
            "--kernels" => {
                a.fused = match val.as_str() {
                    "fused" => true,
                    "composed" => false,
                    _ => die(format!("--kernels {val}: expected fused or composed")),
                }
            }
            "--batch-file" => a.batch_file = Some(val.into()),
            "--steps" => a.steps = num(&val) as usize,
            "--lr" => a.lr = num(&val),
            "--group" => a.group = num(&val) as usize,
            "--new-tokens" => a.new_tokens = num(&val) as usize,
            "--reps" => a.reps = num(&val) as usize,
            other => die(format!("unknown argument {other}")),
        }
        i += 2;
    }
    a
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| die("batch file: expected an array of token ids"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| die("batch file: bad id")) as u32)
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn train(lm: &BurnLm, a: &Args) {
    let path = a
        .batch_file
        .as_ref()
        .unwrap_or_else(|| die("--batch-file is required"));
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| die(format!("{path:?}: {e}")));
    let spec: Value = serde_json::from_str(&text).unwrap_or_else(|e| die(e));
    let prompts = spec["prompts"]
        .as_array()
        .unwrap_or_else(|| die("no prompts"));
    let actions = spec["actions"]
        .as_array()
        .unwrap_or_else(|| die("no actions"));
    let adv_row: Vec<f32> = spec["advantages"]
        .as_array()
        .unwrap_or_else(|| die("no advantages"))
        .iter()
        .map(|x| x.as_f64().unwrap_or(0.0) as f32)
        .collect();
    let batch: Vec<(Vec<u32>, Vec<u32>)> = prompts
        .iter()
        .zip(actions)
        .map(|(p, q)| (ids(p), ids(q)))
        .collect();
    let b = batch.len();
    let amax = batch.iter().map(|(_, q)| q.len()).max().unwrap_or(0);
    let tokens: usize = batch.iter().map(|(p, q)| p.len() + q.len()).sum();
    let lora = match a.mode.as_str() {
        "lora" => Some(LoraConfig::default()), // rank 8, alpha 16, q_proj + v_proj
        "full" => None,
        m => die(format!("unknown mode {m}")),
    };
    let loss_cfg = LossConfig {
        clip_low: 0.2,
        clip_high: 0.2,
        kl_beta: 0.0,
        aggregation: Aggregation::TokenMean,
        ..LossConfig::default()
    };
    let mut optim = Optim::new(OptimConfig {
        lr: a.lr,
        max_grad_norm: Some(1.0),
        ..OptimConfig::default()
    });
    let t = Instant::now();
    let mut tm = TrainModel::new(lm, lora.as_ref()).unwrap_or_else(|e| die(e));
    if tm.decoder.fused != a.fused {
        tm.set_fused(a.fused).unwrap_or_else(|e| die(e));
    }
    let TrainModel {
        mut decoder,
        device,
    } = tm;
    emit(
        "setup_s",
        t.elapsed().as_secs_f64(),
        json!({"mode": a.mode}),
    );
    let mut adv = vec![0f32; b * amax];
    for (i, r) in adv.chunks_mut(amax).enumerate() {
        r.fill(adv_row[i % adv_row.len()]);
    }
    let mut old: Option<Vec<f32>> = None;
    let mut times = Vec::new();
    let mut losses = Vec::new();
    // forward + loss, backward + gradient accumulation, optimizer update
    let mut phases: [Vec<f64>; 3] = Default::default();
    for step in 0..=a.steps {
        let t = Instant::now();
        // --- Trainer::micro_batch
        let out = decoder
            .action_logprobs(&batch, 1.0, &device)
            .unwrap_or_else(|e| die(e));
        let old_v = match &old {
            Some(o) => o.clone(),
            None => {
                // Warm-up step: its own log-probs (detached) are the "old" ones from now on.
                let v: Vec<f32> = out
                    .logprobs
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .unwrap_or_else(|e| die(format!("{e:?}")));
                let n = v.len().max(1) as f64;
                emit(
                    "step0_logprob_mean",
                    v.iter().map(|&x| x as f64).sum::<f64>() / n,
                    json!({"mode": a.mode}),
                );
                old = Some(v.clone());
                v
            }
        };
        let out_loss = grpo_loss(
            LossInputs {
                logprobs: out.logprobs,
                old_logprobs: Tensor::from_data(TensorData::new(old_v, [b, amax]), &device),
                ref_logprobs: None,
                advantages: Tensor::from_data(TensorData::new(adv.clone(), [b, amax]), &device),
                mask: out.mask,
            },
            &loss_cfg,
        )
        .unwrap_or_else(|e| die(e));
        let loss_v: f32 = out_loss.loss.clone().into_scalar();
        if !loss_v.is_finite() {
            die(format!("loss is {loss_v}"));
        }
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(out_loss.loss.backward(), &decoder);
        optim.accumulate(&decoder, grads);
        let t_bwd = t.elapsed().as_secs_f64();
        // --- Trainer::apply_update
        let (d, _info) = optim.update(decoder, step);
        decoder = d;
        let dt = t.elapsed().as_secs_f64();
        eprintln!(
            "[memfactory {}] step {step}: {dt:.2} s, loss {loss_v:.6}",
            a.mode
        );
        if step > 0 {
            times.push(dt);
            phases[0].push(t_fwd);
            phases[1].push(t_bwd - t_fwd);
            phases[2].push(dt - t_bwd);
            losses.push(loss_v as f64);
        }
    }
    let med = median(&times);
    let extra = json!({"mode": a.mode, "times_s": times, "losses": losses,
                       "rows": b, "tokens_per_step": tokens});
    emit(&format!("train_{}_step_s", a.mode), med, extra.clone());
    emit(
        &format!("train_{}_tok_s", a.mode),
        tokens as f64 / med,
        extra.clone(),
    );
    emit(
        &format!("train_{}_action_tok_s", a.mode),
        (b * amax) as f64 / med,
        extra.clone(),
    );
    for (name, v) in ["fwd", "bwd", "opt"].iter().zip(&phases) {
        emit(
            &format!("train_{}_{name}_s", a.mode),
            median(v),
            json!({"mode": a.mode, "times_s": v}),
        );
    }
}

const ROLLOUT_TEXT: &str = "You are helping an agent that reads a long document in chunks and keeps a short memory. \
Below is the current memory and the next chunk. Rewrite the memory so that it keeps every fact \
that may help answer the question later, and nothing else.\n\nQuestion: Which city did the \
expedition leader choose for the final winter camp, and why?\n\nMemory: The expedition left the \
coast in early spring with twelve members, four sledges and supplies for nine months. The \
leader, a former naval officer, kept a detailed diary. In May the group crossed the first \
glacier and lost one sledge in a crevasse. The geologist recorded unusual rock formations near \
a frozen lake and proposed a detour, which was rejected.\n\nChunk: By midsummer the expedition \
reached the northern plateau. Food was running low, and two members fell ill. The leader \
compared three possible winter sites: a fishing village on the eastern fjord, a mining town \
further inland with a railway station, and an abandoned whaling station on the western \
islands. The mining town had a doctor and a telegraph office, but its mine had closed and \
the town was half empty. The fishing village offered fresh food but was often cut off by ice \
for months. The whaling station had shelter but no supplies at all. After a long discussion \
in the evening, the leader wrote that the sick men needed a doctor and that news had to reach \
the sponsors before the passes closed. The group turned south the next morning.\n\n\
Write the new memory now.";

fn rollout(mut lm: BurnLm, a: &Args) {
    let prompt = Prompt::Chat(vec![ChatMessage::user(ROLLOUT_TEXT)]);
    let pids = lm.prompt_ids(&prompt).unwrap_or_else(|e| die(e));
    emit(
        "rollout_prompt_tokens",
        pids.len(),
        json!({"prompt_ids": pids}),
    );
    let reqs: Vec<GenRequest> = (0..a.group)
        .map(|i| GenRequest {
            prompt: Prompt::Tokens(pids.clone()),
            params: SamplingParams {
                max_new_tokens: a.new_tokens,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                stop: Vec::new(),
                seed: 1 + i as u64,
            },
        })
        .collect();
    // Warm-up (allocations, thread pool).
    lm.options.max_batch = a.group.max(1);
    let mut warm = reqs[..1].to_vec();
    warm[0].params.max_new_tokens = 4;
    lm.generate(&warm).unwrap_or_else(|e| die(e));

    let mut outs: Vec<Vec<Vec<u32>>> = Vec::new();
    for (name, batched) in [("batched", true), ("sequential", false)] {
        let mut best = f64::INFINITY;
        let mut toks = Vec::new();
        let mut all = Vec::new();
        for _ in 0..a.reps.max(1) {
            let t = Instant::now();
            let gens = if batched {
                lm.generate(&reqs).unwrap_or_else(|e| die(e))
            } else {
                let mut g = Vec::new();
                for r in &reqs {
                    g.extend(
                        lm.generate(std::slice::from_ref(r))
                            .unwrap_or_else(|e| die(e)),
                    );
                }
                g
            };
            let dt = t.elapsed().as_secs_f64();
            all.push(dt);
            best = best.min(dt);
            toks = gens.into_iter().map(|g| g.token_ids).collect::<Vec<_>>();
        }
        let generated: usize = toks.iter().map(Vec::len).sum();
        let extra = json!({"group": a.group, "generated": generated, "times_s": all,
                           "prompt_tokens": pids.len()});
        emit(&format!("rollout_{name}_s"), best, extra.clone());
        emit(
            &format!("rollout_{name}_tok_s"),
            generated as f64 / best,
            extra,
        );
        outs.push(toks);
    }
    emit(
        "rollout_same_tokens",
        u8::from(outs[0] == outs[1]),
        json!({}),
    );
}

fn main() {
    memfactory_lm_burn::tune_allocator();
    let a = args();
    let t = Instant::now();
    let lm = match &a.random {
        Some(dir) => BurnLm::random(dir, &a.device, 1),
        None => BurnLm::load(&a.gguf, &a.device),
    }
    .unwrap_or_else(|e| die(e));
    emit("load_s", t.elapsed().as_secs_f64(), json!({}));
    if a.mode == "rollout" {
        rollout(lm, &a);
    } else {
        train(&lm, &a);
    }
}
