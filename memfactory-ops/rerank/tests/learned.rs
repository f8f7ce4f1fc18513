//! The learned reranker's maths: the REINFORCE gradient against central finite differences,
//! Plackett–Luce stage terms against brute-force enumeration, Gumbel top-M sampling against
//! the Plackett–Luce probabilities, and the Box–Muller initialisation.

use memfactory_op_rerank::learned::{
    Adapters, Feedback, box_muller, gradient, gumbel_top_m, objective, stage_log_probs, top_m,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn feedback(chosen: Vec<usize>, rewards: Vec<f32>) -> Feedback {
    Feedback {
        query: vec![0.3, -1.2, 0.8],
        candidates: vec![
            vec![1.0, 0.2, -0.4],
            vec![-0.5, 0.9, 0.1],
            vec![0.7, -0.8, 1.1],
            vec![0.05, 0.3, -0.9],
        ],
        chosen,
        rewards,
    }
}

/// Central differences of `objective` in every weight of both matrices, in f64.
fn numeric_gradient(ad: &Adapters, f: &Feedback, tau: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
    let eps = 1e-6;
    let mut gq = vec![0.0; ad.w_q.len()];
    let mut gm = vec![0.0; ad.w_m.len()];
    for i in 0..ad.w_q.len() {
        let mut p = ad.clone();
        p.w_q[i] += eps;
        let mut m = ad.clone();
        m.w_q[i] -= eps;
        gq[i] = (objective(&p, f, tau, b) - objective(&m, f, tau, b)) / (2.0 * eps);
        let mut p = ad.clone();
        p.w_m[i] += eps;
        let mut m = ad.clone();
        m.w_m[i] -= eps;
        gm[i] = (objective(&p, f, tau, b) - objective(&m, f, tau, b)) / (2.0 * eps);
    }
    (gq, gm)
}

fn assert_close(analytic: &[f64], numeric: &[f64], what: &str) {
    assert_eq!(analytic.len(), numeric.len());
    let norm: f64 = analytic.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(
        norm > 1e-3,
        "{what}: gradient is (nearly) zero, the test would be vacuous"
    );
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-6 * (1.0 + a.abs()),
            "{what}[{i}]: analytic {a} vs finite difference {n}"
        );
    }
}

#[test]
fn gradient_matches_finite_differences() {
    // Non-trivial adapters (std 0.5) so that q' != q and m' != m.
    let ad = Adapters::normal(3, 0.5, 7);
    for (f, tau, b) in [
        (feedback(vec![2, 0], vec![1.0, -1.0]), 0.5, 0.3),
        (feedback(vec![1, 3, 0], vec![-1.0, 1.0, 1.0]), 1.7, -0.2),
        (feedback(vec![3], vec![1.0]), 0.25, 0.0),
        // Every candidate selected: the last stage has one option (ℓ = 0).
        (
            feedback(vec![0, 1, 2, 3], vec![1.0, -1.0, -1.0, 1.0]),
            0.8,
            0.1,
        ),
    ] {
        let (gq, gm) = gradient(&ad, &f, tau, b);
        let (nq, nm) = numeric_gradient(&ad, &f, tau, b);
        assert_close(&gq, &nq, "dJ/dW_q");
        assert_close(&gm, &nm, "dJ/dW_m");
    }
}

#[test]
fn gradient_at_zero_adapters_matches_finite_differences() {
    // init = "zero": the first update starts from the identity residual maps.
    let ad = Adapters::zeros(3);
    let f = feedback(vec![1, 2], vec![1.0, -1.0]);
    let (gq, gm) = gradient(&ad, &f, 0.5, 0.0);
    let (nq, nm) = numeric_gradient(&ad, &f, 0.5, 0.0);
    assert_close(&gq, &nq, "dJ/dW_q");
    assert_close(&gm, &nm, "dJ/dW_m");
}

#[test]
fn stage_terms_are_plackett_luce_log_probabilities() {
    let s = [1.0, 0.5, -0.3, 0.2];
    let tau = 0.7;
    // Probabilities of all 12 ordered pairs sum to 1.
    let mut total = 0.0;
    for a in 0..4 {
        for b in 0..4 {
            if a != b {
                total += stage_log_probs(&s, tau, &[a, b]).iter().sum::<f64>().exp();
            }
        }
    }
    assert!((total - 1.0).abs() < 1e-12, "{total}");
    // First stage = softmax; second = softmax over the rest (hand-computed form).
    let e: Vec<f64> = s.iter().map(|v| (v / tau).exp()).collect();
    let z: f64 = e.iter().sum();
    let l = stage_log_probs(&s, tau, &[2, 0]);
    assert!((l[0] - (e[2] / z).ln()).abs() < 1e-12);
    assert!((l[1] - (e[0] / (z - e[2])).ln()).abs() < 1e-12);
}

#[test]
fn gumbel_top_m_samples_plackett_luce() {
    let s = [1.0, 0.5, 0.0, -0.5];
    let tau = 0.5;
    let n = 40_000;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut pairs = [[0usize; 4]; 4];
    for _ in 0..n {
        let c = gumbel_top_m(&s, tau, 2, &mut rng);
        assert_eq!(c.len(), 2);
        pairs[c[0]][c[1]] += 1;
    }
    for (a, row) in pairs.iter().enumerate() {
        for (b, &count) in row.iter().enumerate() {
            if a == b {
                assert_eq!(count, 0);
                continue;
            }
            let p = stage_log_probs(&s, tau, &[a, b]).iter().sum::<f64>().exp();
            let f = count as f64 / n as f64;
            // Binomial standard error <= 0.0025 at n = 40000; allow 4 of them.
            assert!(
                (f - p).abs() < 0.01,
                "pair ({a},{b}): frequency {f} vs P {p}"
            );
        }
    }
    // A tiny temperature makes the noise irrelevant: deterministic top-M.
    let c = gumbel_top_m(&s, 1e-9, 3, &mut rng);
    assert_eq!(c, top_m(&s, 3));
    assert_eq!(
        top_m(&[0.5, 0.9, 0.5], 3),
        [1, 0, 2],
        "ties keep index order"
    );
}

#[test]
fn box_muller_init_is_normal_and_deterministic() {
    let a = Adapters::normal(40, 0.01, 3);
    assert_eq!(a.w_q.len(), 1600);
    assert_eq!(a.w_m.len(), 1600);
    assert_eq!(a, Adapters::normal(40, 0.01, 3));
    assert_ne!(a, Adapters::normal(40, 0.01, 4));
    let all: Vec<f64> = a.w_q.iter().chain(&a.w_m).copied().collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let std = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    assert!(mean.abs() < 0.0007, "mean {mean}");
    assert!((std - 0.01).abs() < 0.0006, "std {std}");
    // Frozen draws: a change here changes every reranker's initial weights.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let z = box_muller(&mut rng, 3);
    let frozen = [FROZEN_0, FROZEN_1, FROZEN_2];
    for (v, f) in z.iter().zip(frozen) {
        assert!((v - f).abs() < 1e-12, "{z:?}");
    }
    assert!(Adapters::zeros(2).w_q.iter().all(|v| *v == 0.0));
}

const FROZEN_0: f64 = -0.8102724983810923;
const FROZEN_1: f64 = 0.17619664335415378;
const FROZEN_2: f64 = 0.786301250909937;

#[test]
fn feedback_shapes_are_checked() {
    let ok = feedback(vec![0, 1], vec![1.0, -1.0]);
    assert!(ok.check(3).is_ok());
    assert!(ok.check(4).unwrap_err().contains("query"));
    assert!(
        feedback(vec![0, 0], vec![1.0, 1.0])
            .check(3)
            .unwrap_err()
            .contains("twice")
    );
    assert!(
        feedback(vec![4], vec![1.0])
            .check(3)
            .unwrap_err()
            .contains("out of range")
    );
    assert!(
        feedback(vec![0], vec![1.0, 1.0])
            .check(3)
            .unwrap_err()
            .contains("rewards")
    );
}
