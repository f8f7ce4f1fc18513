//! The fused CPU training kernels (`memfactory_lm_burn::fused`) compute the same function as
//! the composed tensor-op forward: action log-probs and every parameter's gradient agree on
//! three tiny architectures (Llama with GQA and tied embeddings, Qwen2 with q/k/v biases,
//! Qwen3 with per-head q/k norms), on a ragged batch (right padding), with full fine-tuning
//! and with LoRA; rows that share a prompt prefix give the same log-probs and gradients with
//! the prefix run once as with every row run alone; and the vectorised `exp` stays within a
//! few ulp of libm's.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::Tensor;
use memfactory_lm_burn::{BurnLm, LoraConfig, TrainModel};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn models() -> Vec<(&'static str, BurnLm)> {
    vec![
        (
            "tiny-byte (llama, GQA 4/2, tied)",
            BurnLm::random(&root().join("../../configs/models/tiny-byte"), "flex", 3).unwrap(),
        ),
        (
            "tiny-qwen2 (biases)",
            BurnLm::load(&root().join("tests/golden/tiny-qwen2"), "flex").unwrap(),
        ),
        (
            "tiny-qwen3 (q/k norms)",
            BurnLm::load(&root().join("tests/golden/tiny-qwen3"), "flex").unwrap(),
        ),
    ]
}

/// A ragged batch: different prompt and action lengths, so rows are right-padded.
fn batch(vocab: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let ids = |n: usize, seed: usize| -> Vec<u32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % (vocab - 1)) as u32)
            .collect()
    };
    vec![
        (ids(37, 1), ids(9, 2)),
        (ids(20, 3), ids(4, 4)),
        (ids(51, 5), ids(13, 6)),
    ]
}

/// Log-probs (masked) and the gradient of a weighted sum of them, per named parameter.
fn run(
    tm: &TrainModel,
    batch: &[(Vec<u32>, Vec<u32>)],
    temperature: f32,
) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let out = tm.action_logprobs(batch, temperature).unwrap();
    let lp: Vec<f32> = out.logprobs.clone().into_data().try_to_vec().unwrap();
    // Different weights per position, so every position's gradient matters.
    let [b, a] = out.logprobs.dims();
    let w: Vec<f32> = (0..b * a).map(|i| ((i % 5) as f32 - 2.0) * 0.3).collect();
    let w = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(w, [b, a]),
        &out.logprobs.device(),
    );
    let grads = (out.logprobs * w).sum().backward();
    let mut g = Vec::new();
    let mut push2 = |name: String, p: &Param<Tensor<2>>| {
        if let Some(t) = p.grad(&grads) {
            g.push((name, t.into_data().try_to_vec().unwrap()));
        }
    };
    let d = &tm.decoder;
    push2("embed".into(), &d.embed);
    for (i, blk) in d.blocks.iter().enumerate() {
        for (name, lin) in [
            ("q", &blk.q_proj),
            ("k", &blk.k_proj),
            ("v", &blk.v_proj),
            ("o", &blk.o_proj),
            ("gate", &blk.gate_proj),
            ("up", &blk.up_proj),
            ("down", &blk.down_proj),
        ] {
            push2(format!("{i}.{name}.weight"), &lin.weight);
            if let Some(a) = &lin.lora_a {
                push2(format!("{i}.{name}.lora_a"), a);
            }
            if let Some(bb) = &lin.lora_b {
                push2(format!("{i}.{name}.lora_b"), bb);
            }
        }
    }
    let mut push1 = |name: String, p: &Param<Tensor<1>>| {
        if let Some(t) = p.grad(&grads) {
            g.push((name, t.into_data().try_to_vec().unwrap()));
        }
    };
    for (i, blk) in d.blocks.iter().enumerate() {
        push1(format!("{i}.attn_norm"), &blk.attn_norm);
        push1(format!("{i}.ffn_norm"), &blk.ffn_norm);
        if let Some(q) = &blk.q_norm {
            push1(format!("{i}.q_norm"), q);
        }
        if let Some(k) = &blk.k_norm {
            push1(format!("{i}.k_norm"), k);
        }
        for (name, lin) in [("q", &blk.q_proj), ("k", &blk.k_proj), ("v", &blk.v_proj)] {
            if let Some(bias) = &lin.bias {
                push1(format!("{i}.{name}.bias"), bias);
            }
        }
    }
    push1("norm".into(), &d.norm);
    (lp, g)
}

/// LoRA's `B` starts at zero, which makes `A`'s gradient zero; give it values so that both
/// factors' gradients are compared.
fn nonzero_lora_b(tm: &mut TrainModel) {
    let device = tm.device.clone();
    for blk in &mut tm.decoder.blocks {
        for lin in [
            &mut blk.q_proj,
            &mut blk.k_proj,
            &mut blk.v_proj,
            &mut blk.o_proj,
            &mut blk.gate_proj,
            &mut blk.up_proj,
            &mut blk.down_proj,
        ] {
            if let Some(b) = &lin.lora_b {
                let [r, o] = b.val().dims();
                let v: Vec<f32> = (0..r * o).map(|i| 0.05 * (i as f32 * 0.37).sin()).collect();
                let t = Tensor::<2>::from_data(burn::tensor::TensorData::new(v, [r, o]), &device);
                lin.lora_b = Some(Param::from_tensor(t).set_require_grad(true));
            }
        }
    }
}

/// max |a − b| relative to max |b| (and 1e-30, for all-zero gradients).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn compare(lora: Option<&LoraConfig>, temperature: f32) {
    for (name, lm) in models() {
        let b = batch(lm.model_config().vocab);
        let mut fused = TrainModel::new(&lm, lora).unwrap();
        nonzero_lora_b(&mut fused);
        assert!(
            fused.decoder.fused,
            "{name}: fused kernels are the flex default"
        );
        let (lp_f, g_f) = run(&fused, &b, temperature);
        fused.set_fused(false).unwrap();
        let (lp_c, g_c) = run(&fused, &b, temperature);
        assert_logprobs_close(&format!("{name}: fused vs composed"), &lp_f, &lp_c);
        assert!(lp_c.iter().any(|&v| v < -1.0), "{name}: log-probs are real");
        assert_grads_close(&format!("{name}: fused vs composed"), &g_f, &g_c, 1e-3);
    }
}

/// Log-probs of two runs differ by less than 2e-5.
fn assert_logprobs_close(what: &str, a: &[f32], b: &[f32]) {
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst < 2e-5, "{what}: log-prob differs by {worst}");
}

/// The same parameters get gradients in both runs, none all zero, each within `bound`
/// ([`rel_err`]).
fn assert_grads_close(what: &str, a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], bound: f32) {
    let names_a: Vec<&String> = a.iter().map(|(n, _)| n).collect();
    let names_b: Vec<&String> = b.iter().map(|(n, _)| n).collect();
    assert_eq!(names_a, names_b, "{what}: same parameters get gradients");
    assert!(!b.is_empty());
    for ((pn, ga), (_, gb)) in a.iter().zip(b) {
        assert!(
            gb.iter().any(|&v| v != 0.0),
            "{what}: {pn} has an all-zero gradient"
        );
        let e = rel_err(ga, gb);
        assert!(e < bound, "{what}: gradient of {pn} differs (relative {e})");
    }
}

#[test]
fn fused_matches_composed_full_fine_tuning() {
    compare(None, 1.0);
}

#[test]
fn fused_matches_composed_with_lora_and_temperature() {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![
            "q_proj".into(),
            "k_proj".into(),
            "v_proj".into(),
            "o_proj".into(),
            "gate_proj".into(),
            "up_proj".into(),
            "down_proj".into(),
        ],
        seed: 5,
    };
    compare(Some(&lora), 0.7);
}

/// A GRPO-like batch: a group of rows with one prompt and different actions (two of them
/// beginning alike, so the shared part runs into the action), two rows with a common
/// instruction and different questions, and a row alone.
fn shared_batch(vocab: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let ids = |n: usize, seed: usize| -> Vec<u32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % (vocab - 1)) as u32)
            .collect()
    };
    let cat = |a: Vec<u32>, b: Vec<u32>| -> Vec<u32> { a.into_iter().chain(b).collect() };
    let prompt = ids(41, 1);
    let instruction = ids(23, 2);
    vec![
        (prompt.clone(), ids(9, 3)),
        (ids(15, 9), ids(6, 10)),
        (prompt.clone(), ids(5, 4)),
        (cat(instruction.clone(), ids(12, 5)), ids(7, 6)),
        (prompt.clone(), cat(ids(3, 3), ids(8, 8))),
        (cat(instruction, ids(17, 7)), ids(4, 8)),
        (prompt, ids(1, 11)),
    ]
}

fn compare_sharing(lora: Option<&LoraConfig>, temperature: f32) {
    for (name, lm) in models() {
        let b = shared_batch(lm.model_config().vocab);
        let inputs: Vec<Vec<u32>> = b
            .iter()
            .map(|(p, a)| p.iter().chain(&a[..a.len() - 1]).copied().collect())
            .collect();
        let packed = memfactory_lm_burn::train::pack(&inputs, 8);
        let total: usize = inputs.iter().map(Vec::len).sum();
        assert!(
            packed.ids.len() + 3 * 40 + 22 <= total,
            "{name}: the prompt and the instruction are shared ({} of {total} rows)",
            packed.ids.len()
        );
        let mut tm = TrainModel::new(&lm, lora).unwrap();
        nonzero_lora_b(&mut tm);
        let (lp_s, g_s) = run(&tm, &b, temperature);
        tm.set_prefix_sharing(None);
        let (lp_u, g_u) = run(&tm, &b, temperature);
        tm.set_fused(false).unwrap();
        let (lp_c, _) = run(&tm, &b, temperature);
        assert_logprobs_close(&format!("{name}: shared vs alone"), &lp_s, &lp_u);
        assert_logprobs_close(&format!("{name}: shared vs composed"), &lp_s, &lp_c);
        assert_grads_close(&format!("{name}: shared vs alone"), &g_s, &g_u, 1e-4);
    }
}

#[test]
fn shared_prefixes_match_rows_alone_full_fine_tuning() {
    compare_sharing(None, 1.0);
}

#[test]
fn shared_prefixes_match_rows_alone_with_lora() {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        seed: 6,
    };
    compare_sharing(Some(&lora), 0.7);
}

#[test]
fn fused_forward_is_deterministic() {
    let lm = BurnLm::random(&root().join("../../configs/models/tiny-byte"), "flex", 3).unwrap();
    let b = batch(lm.model_config().vocab);
    let tm = TrainModel::new(&lm, None).unwrap();
    let (lp1, g1) = run(&tm, &b, 1.0);
    let (lp2, g2) = run(&tm, &b, 1.0);
    assert_eq!(lp1, lp2);
    assert_eq!(g1, g2);
}

#[test]
fn vectorised_exp_is_close_to_libm() {
    let xs: Vec<f32> = (0..20_001)
        .map(|i| -87.0 + i as f32 * (175.0 / 20_000.0))
        .collect();
    let mut ys = xs.clone();
    memfactory_lm_burn::fused::exp_in_place(&mut ys);
    for (x, y) in xs.iter().zip(&ys) {
        let want = x.exp();
        let rel = ((y - want) / want).abs();
        assert!(rel < 4e-7, "exp({x}) = {y}, libm {want} (rel {rel})");
    }
    let mut edge = vec![f32::NEG_INFINITY, -1000.0, 0.0];
    memfactory_lm_burn::fused::exp_in_place(&mut edge);
    assert!(
        edge[0] < 1e-37 && edge[1] < 1e-37 && edge[2] == 1.0,
        "{edge:?}"
    );
}

#[test]
fn fused_kernels_toggle_on_flex() {
    let lm = BurnLm::random(&root().join("../../configs/models/tiny-byte"), "flex", 3).unwrap();
    let mut tm = TrainModel::new(&lm, None).unwrap();
    tm.set_fused(false).unwrap();
    assert!(!tm.decoder.fused);
    tm.set_fused(true).unwrap();
    assert!(tm.decoder.fused);
}

/// Deterministic pseudo-random values in `[-scale, scale)`.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn t2(data: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(
        burn::tensor::TensorData::new(data, shape),
        &burn::tensor::Device::flex(),
    )
}

fn vec_of(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

#[test]
fn fused_adamw_matches_composed_ops() {
    use memfactory_lm_burn::fused::{AdamWStep, adamw, adamw_composed};
    // One small shape and one that spans several rayon tasks with a ragged tail.
    for (shape, t) in [([7usize, 13usize], 1usize), ([301, 419], 4)] {
        let n = shape[0] * shape[1];
        let p = values(n, 1, 1.0);
        let g = values(n, 2, 0.1);
        let m = values(n, 3, 0.01);
        let v: Vec<f32> = values(n, 4, 1e-3).iter().map(|x| x.abs()).collect();
        let h = AdamWStep::new(3e-3, [0.9, 0.999], 1e-8, 0.01, t, 0.37);
        let moments = || Some((t2(m.clone(), shape), t2(v.clone(), shape)));
        for first in [false, true] {
            let mo = if first { None } else { moments() };
            let (pf, mf, vf) = adamw(t2(p.clone(), shape), t2(g.clone(), shape), mo, h);
            let mo = if first { None } else { moments() };
            let (pc, mc, vc) = adamw_composed(t2(p.clone(), shape), t2(g.clone(), shape), mo, h);
            for (what, a, b) in [("p", pf, pc), ("m", mf, mc), ("v", vf, vc)] {
                let e = rel_err(&vec_of(a), &vec_of(b));
                assert!(e < 1e-6, "{shape:?} first={first} {what}: rel err {e}");
            }
        }
    }
}

#[test]
fn fused_adamw_leaves_shared_and_strided_inputs_alone() {
    use memfactory_lm_burn::fused::{AdamWStep, adamw, adamw_composed};
    let shape = [64, 48];
    let n = 64 * 48;
    let p = t2(values(n, 5, 1.0), shape);
    let m = t2(values(n, 6, 0.01), shape);
    let v = t2(values(n, 7, 1e-3).iter().map(|x| x.abs()).collect(), shape);
    // The gradient as a transposed view: the kernel must read it in logical order.
    let g = t2(values(n, 8, 0.1), [48, 64]).transpose();
    let h = AdamWStep::new(1e-2, [0.9, 0.95], 1e-6, 0.1, 2, 1.0);
    let before = [vec_of(p.clone()), vec_of(m.clone()), vec_of(v.clone())];
    // `p`, `m`, `v` are shared with the clones kept here, so they must not be written over.
    let (pf, mf, vf) = adamw(p.clone(), g.clone(), Some((m.clone(), v.clone())), h);
    let after = [vec_of(p.clone()), vec_of(m.clone()), vec_of(v.clone())];
    assert_eq!(before, after, "a shared input was written over");
    let (pc, mc, vc) = adamw_composed(p, g, Some((m, v)), h);
    for (a, b) in [(pf, pc), (mf, mc), (vf, vc)] {
        let e = rel_err(&vec_of(a), &vec_of(b));
        assert!(e < 1e-6, "rel err {e}");
    }
}

#[test]
fn fused_sum_squares_matches_composed() {
    let x = values(301 * 419, 9, 2.0);
    let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let got = memfactory_lm_burn::fused::sum_squares(t2(x, [301, 419]));
    assert!(((got - want) / want).abs() < 1e-6, "{got} vs {want}");
    let strided = t2(values(12, 10, 1.0), [3, 4]).transpose();
    let want: f64 = vec_of(strided.clone())
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    let got = memfactory_lm_burn::fused::sum_squares(strided);
    assert!(((got - want) / want).abs() < 1e-6, "{got} vs {want}");
}
