//! The paper's REINFORCE settings (arXiv 2503.08026 App. A.1): a constant baseline
//! `b = 0.5` and batches of 4 answered questions. The expected updates are computed here
//! from central finite differences of `Σ_j (r_j − b) ℓ_j` (the stage log-probabilities `ℓ_j`
//! taken from `stage_log_probs`), not from the library's `gradient`.

use memfactory_core::Cfg;
use memfactory_op_rerank::learned::{Adapters, Feedback, stage_log_probs};
use memfactory_op_rerank::{Baseline, Reranker};

fn reranker(src: &str) -> Reranker {
    let mut cfg = Cfg::new("agent.rerank", toml::from_str(src).unwrap());
    let r = Reranker::from_cfg(&mut cfg).unwrap();
    cfg.finish().unwrap();
    r
}

fn build_err(src: &str) -> String {
    let mut cfg = Cfg::new("agent.rerank", toml::from_str(src).unwrap());
    Reranker::from_cfg(&mut cfg).err().unwrap().to_string()
}

fn fb(query: [f32; 3], chosen: Vec<usize>, rewards: Vec<f32>) -> Feedback {
    Feedback {
        query: query.to_vec(),
        candidates: vec![
            vec![1.0, 0.2, -0.4],
            vec![-0.5, 0.9, 0.1],
            vec![0.7, -0.8, 1.1],
            vec![0.05, 0.3, -0.9],
            vec![0.4, 0.4, 0.4],
        ],
        chosen,
        rewards,
    }
}

/// `Σ_j (r_j − b) ℓ_j`, written out here.
fn j(ad: &Adapters, f: &Feedback, tau: f64, b: f64) -> f64 {
    let s = ad.scores(&f.query, &f.candidates);
    stage_log_probs(&s, tau, &f.chosen)
        .iter()
        .zip(&f.rewards)
        .map(|(l, r)| (f64::from(*r) - b) * l)
        .sum()
}

/// Central differences of `j` in every weight: `(∂J/∂W_q, ∂J/∂W_m)`.
fn fd(ad: &Adapters, f: &Feedback, tau: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
    let eps = 1e-6;
    let n = ad.w_q.len();
    let mut gq = vec![0.0; n];
    let mut gm = vec![0.0; n];
    for i in 0..n {
        let (mut p, mut m) = (ad.clone(), ad.clone());
        p.w_q[i] += eps;
        m.w_q[i] -= eps;
        gq[i] = (j(&p, f, tau, b) - j(&m, f, tau, b)) / (2.0 * eps);
        let (mut p, mut m) = (ad.clone(), ad.clone());
        p.w_m[i] += eps;
        m.w_m[i] -= eps;
        gm[i] = (j(&p, f, tau, b) - j(&m, f, tau, b)) / (2.0 * eps);
    }
    (gq, gm)
}

/// `new − old` of both matrices.
fn delta(old: &Adapters, new: &Adapters) -> (Vec<f64>, Vec<f64>) {
    let d = |a: &[f64], b: &[f64]| b.iter().zip(a).map(|(n, o)| n - o).collect::<Vec<_>>();
    (d(&old.w_q, &new.w_q), d(&old.w_m, &new.w_m))
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    let norm: f64 = want.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(norm > 1e-4, "{what}: expected update is ~0, test vacuous");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-7 * (norm + w.abs()),
            "{what}[{i}]: applied {g}, expected {w}"
        );
    }
}

const TAU: f64 = 0.5;
const LR: f64 = 0.05;

fn start() -> Adapters {
    Adapters::normal(3, 0.4, 11)
}

#[test]
fn constant_baseline_update_is_lr_times_sum_of_advantage_weighted_stage_gradients() {
    let r = reranker(&format!("baseline = 0.5\nlr = {LR}\ntemperature = {TAU}"));
    let ad = start();
    r.set_weights(ad.clone()).unwrap();
    // Two of three cited: Σ (r_j − 0.5) = 0.5 + 0.5 − 1.5; b matters (the b = 0 update differs).
    let f = fb([0.3, -1.2, 0.8], vec![2, 0, 4], vec![1.0, -1.0, 1.0]);
    assert!(r.reinforce(std::slice::from_ref(&f)).unwrap());
    let (dq, dm) = delta(&ad, &r.weights().unwrap());
    let (gq, gm) = fd(&ad, &f, TAU, 0.5);
    let want_q: Vec<f64> = gq.iter().map(|g| LR * g).collect();
    let want_m: Vec<f64> = gm.iter().map(|g| LR * g).collect();
    assert_close(&dq, &want_q, "ΔW_q");
    assert_close(&dm, &want_m, "ΔW_m");
    // The b = 0 and b = running-mean (0 at the start) updates are different.
    let (zq, _) = fd(&ad, &f, TAU, 0.0);
    let gap: f64 = zq.iter().zip(&gq).map(|(a, b)| (a - b).abs()).sum();
    assert!(gap > 1e-3, "b = 0.5 vs b = 0 must differ ({gap})");
    // A constant baseline does not move.
    assert_eq!(r.baseline(), 0.0);
    for _ in 0..3 {
        r.reinforce(std::slice::from_ref(&f)).unwrap();
    }
    assert_eq!(r.baseline(), 0.0, "the running mean is not used");

    // The running mean (default) uses b = 0 at the first step: a different update.
    let m = reranker(&format!("lr = {LR}\ntemperature = {TAU}"));
    m.set_weights(ad.clone()).unwrap();
    m.reinforce(std::slice::from_ref(&f)).unwrap();
    let (mq, _) = delta(&ad, &m.weights().unwrap());
    let want: Vec<f64> = zq.iter().map(|g| LR * g).collect();
    assert_close(&mq, &want, "ΔW_q (mean baseline, b = 0)");
}

#[test]
fn batch_of_four_applies_one_mean_update_after_the_fourth_question() {
    let r = reranker(&format!(
        "baseline = 0.5\nbatch = 4\nlr = {LR}\ntemperature = {TAU}"
    ));
    let ad = start();
    r.set_weights(ad.clone()).unwrap();
    let qs = [
        fb([0.3, -1.2, 0.8], vec![2, 0, 4], vec![1.0, -1.0, 1.0]),
        fb([-0.7, 0.1, 0.5], vec![1, 3], vec![-1.0, -1.0]),
        fb([1.1, 0.4, -0.2], vec![0, 1, 2], vec![1.0, 1.0, -1.0]),
        fb([0.2, 0.9, 0.9], vec![4], vec![1.0]),
    ];
    for (i, f) in qs.iter().enumerate().take(3) {
        assert!(!r.reinforce(std::slice::from_ref(f)).unwrap());
        assert_eq!(r.pending_questions(), i + 1);
        assert_eq!(
            r.weights().unwrap(),
            ad,
            "no update before the batch is full"
        );
        assert_eq!(r.updates(), 0);
    }
    assert!(r.reinforce(std::slice::from_ref(&qs[3])).unwrap());
    assert_eq!(r.updates(), 1);
    assert_eq!(r.pending_questions(), 0);
    // ΔW = lr · (1/4) Σ_f ∇J_f, every gradient at the starting weights.
    let mut want_q = vec![0.0; 9];
    let mut want_m = vec![0.0; 9];
    for f in &qs {
        let (gq, gm) = fd(&ad, f, TAU, 0.5);
        for k in 0..9 {
            want_q[k] += LR * gq[k] / 4.0;
            want_m[k] += LR * gm[k] / 4.0;
        }
    }
    let (dq, dm) = delta(&ad, &r.weights().unwrap());
    assert_close(&dq, &want_q, "ΔW_q");
    assert_close(&dm, &want_m, "ΔW_m");

    // batch = 1 applies four sequential updates instead: different weights.
    let one = reranker(&format!("baseline = 0.5\nlr = {LR}\ntemperature = {TAU}"));
    one.set_weights(ad.clone()).unwrap();
    for f in &qs {
        assert!(one.reinforce(std::slice::from_ref(f)).unwrap());
    }
    assert_eq!(one.updates(), 4);
    assert_ne!(one.weights(), r.weights());

    // A partial batch waits; flush applies it.
    let p = reranker(&format!("baseline = 0.5\nbatch = 4\nlr = {LR}"));
    p.set_weights(ad.clone()).unwrap();
    assert!(!p.flush().unwrap(), "nothing pending");
    p.reinforce(std::slice::from_ref(&qs[0])).unwrap();
    assert!(p.flush().unwrap());
    assert_eq!((p.updates(), p.pending_questions()), (1, 0));
    assert_ne!(p.weights().unwrap(), ad);
}

#[test]
fn a_question_is_one_reinforce_call_whatever_its_number_of_paths() {
    // batch counts questions: two calls of two paths each fill a batch of 2, and the
    // update is the mean over the four feedbacks.
    let r = reranker(&format!(
        "baseline = 0.5\nbatch = 2\nlr = {LR}\ntemperature = {TAU}"
    ));
    let ad = start();
    r.set_weights(ad.clone()).unwrap();
    let a = fb([0.3, -1.2, 0.8], vec![2, 0], vec![1.0, -1.0]);
    let b = fb([0.3, -1.2, 0.8], vec![1, 4], vec![1.0, 1.0]);
    let c = fb([1.1, 0.4, -0.2], vec![3], vec![-1.0]);
    let d = fb([1.1, 0.4, -0.2], vec![0, 2], vec![1.0, -1.0]);
    assert!(!r.reinforce(&[a.clone(), b.clone()]).unwrap());
    assert!(r.reinforce(&[c.clone(), d.clone()]).unwrap());
    let mut want_q = vec![0.0; 9];
    for f in [&a, &b, &c, &d] {
        let (gq, _) = fd(&ad, f, TAU, 0.5);
        for k in 0..9 {
            want_q[k] += LR * gq[k] / 4.0;
        }
    }
    assert_close(&delta(&ad, &r.weights().unwrap()).0, &want_q, "ΔW_q");
}

#[test]
fn a_pending_batch_is_saved_and_completed_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rr.json");
    let src = format!(
        "baseline = 0.5\nbatch = 4\nlr = {LR}\nstate_path = {:?}",
        path.to_str().unwrap()
    );
    let qs = [
        fb([0.3, -1.2, 0.8], vec![2, 0, 4], vec![1.0, -1.0, 1.0]),
        fb([-0.7, 0.1, 0.5], vec![1, 3], vec![-1.0, -1.0]),
        fb([1.1, 0.4, -0.2], vec![0, 1, 2], vec![1.0, 1.0, -1.0]),
        fb([0.2, 0.9, 0.9], vec![4], vec![1.0]),
    ];
    let whole = reranker(&format!("baseline = 0.5\nbatch = 4\nlr = {LR}"));
    whole.set_weights(start()).unwrap();
    for f in &qs {
        whole.reinforce(std::slice::from_ref(f)).unwrap();
    }

    let first = reranker(&src);
    first.set_weights(start()).unwrap();
    for f in &qs[..2] {
        first.reinforce(std::slice::from_ref(f)).unwrap();
    }
    first.save().unwrap();
    let second = reranker(&src);
    assert_eq!(second.pending_questions(), 2);
    assert_eq!(second.weights().unwrap(), start());
    for f in &qs[2..] {
        second.reinforce(std::slice::from_ref(f)).unwrap();
    }
    assert_eq!(second.updates(), 1);
    assert_eq!(
        second.weights(),
        whole.weights(),
        "bit-exact across the reload"
    );
}

#[test]
fn baseline_and_batch_keys_are_checked() {
    let r = reranker("baseline = 0.5\nbatch = 4");
    let Some(cfg) = learned(&r) else {
        panic!("learned")
    };
    assert_eq!((cfg.0, cfg.1), (Baseline::Constant(0.5), 4));
    let r = reranker("baseline = 1");
    assert_eq!(learned(&r).unwrap().0, Baseline::Constant(1.0));
    assert_eq!(learned(&reranker("")).unwrap(), (Baseline::Mean, 1));
    assert_eq!(
        learned(&reranker("baseline = \"none\"")).unwrap().0,
        Baseline::None
    );
    for (src, key, what) in [
        (
            "baseline = \"constant\"",
            "agent.rerank.baseline",
            "\"constant\"",
        ),
        ("baseline = nan", "agent.rerank.baseline", "NaN"),
        ("baseline = [0.5]", "agent.rerank.baseline", "array"),
        ("batch = 0", "agent.rerank.batch", "0"),
    ] {
        let e = build_err(src);
        assert!(e.contains(key) && e.contains(what), "{src}: {e}");
    }
    // The resolved recipe records a constant baseline as a number.
    let mut cfg = Cfg::new(
        "agent.rerank",
        toml::from_str("baseline = 0.5\nbatch = 4").unwrap(),
    );
    Reranker::from_cfg(&mut cfg).unwrap();
    let resolved = cfg.finish().unwrap();
    assert_eq!(resolved.get("baseline"), Some(&toml::Value::Float(0.5)));
    assert_eq!(resolved.get("batch"), Some(&toml::Value::Integer(4)));
}

fn learned(r: &Reranker) -> Option<(Baseline, usize)> {
    match &r.method {
        memfactory_op_rerank::Method::Learned(c) => Some((c.baseline, c.batch)),
        memfactory_op_rerank::Method::Llm(_) => None,
    }
}
