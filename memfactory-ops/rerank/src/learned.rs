//! The learned reranker's maths: residual linear adapters, Gumbel top-M sampling, the
//! Plackett–Luce log-probability of a sampled ordered subset and its REINFORCE gradient.
//!
//! Everything here is a pure function of its arguments (no episode, no lock), so the
//! gradient can be checked against finite differences.
//!
//! ## Notation
//!
//! `d` = embedding size; `q ∈ R^d` the query embedding; `m_k ∈ R^d` the embedding of
//! candidate `k` (`k = 0..K`); `W_q`, `W_m ∈ R^{d×d}` (row-major, `w[a * d + b]` = row `a`,
//! column `b`).
//!
//! - adapted vectors: `q' = q + W_q q`, `m'_k = m_k + W_m m_k`;
//! - score: `s_k = q' · m'_k`;
//! - sampling: `z_k = s_k / τ + g_k` with `g_k ~ Gumbel(0, 1)` i.i.d.; the M largest `z_k`
//!   in decreasing order give the ordered selection `σ = (σ_1, …, σ_M)`. This is exactly a
//!   draw without replacement from the Plackett–Luce model with logits `s / τ`.
//!
//! ## The estimator
//!
//! Under Plackett–Luce the log-probability of `σ` is the sum of *stage terms*
//!
//! ```text
//! ℓ_j = s_{σ_j} / τ − log Σ_{k ∈ R_j} exp(s_k / τ),   R_j = {0..K} \ {σ_1, …, σ_{j−1}}
//! log P(σ) = Σ_j ℓ_j
//! ```
//!
//! RMM rewards every selected memory separately (`r_j = +1` when the answer cites memory
//! `σ_j`, `−1` otherwise). Each selection stage is one action whose log-probability is
//! `ℓ_j`, so the REINFORCE-with-baseline update ascends
//!
//! ```text
//! J = Σ_j (r_j − b) ℓ_j          (∇J is the estimator; b = the baseline)
//! ```
//!
//! When every `r_j` equals one sequence reward `R`, this is the textbook
//! `(R − b) ∇ log P(σ)`.
//!
//! ## The gradient, by hand
//!
//! `∂ℓ_j / ∂s_k = ([k = σ_j] − p_{j,k}) / τ` with `p_{j,k} = exp(s_k/τ) / Σ_{i∈R_j} exp(s_i/τ)`
//! for `k ∈ R_j` and `p_{j,k} = 0` otherwise. Collect the score coefficients
//!
//! ```text
//! c_k = Σ_j (r_j − b) ([k = σ_j] − p_{j,k}) / τ      (so ∂J/∂s_k = c_k)
//! ```
//!
//! Since `s_k = m'_kᵀ (q + W_q q)`, `∂s_k / ∂(W_q)_{ab} = m'_k[a] q[b]`; since
//! `s_k = q'ᵀ (m_k + W_m m_k)`, `∂s_k / ∂(W_m)_{ab} = q'[a] m_k[b]`. Hence, with
//! `u = Σ_k c_k m'_k` and `v = Σ_k c_k m_k`,
//!
//! ```text
//! ∂J/∂W_q = u qᵀ        ∂J/∂W_m = q' vᵀ
//! ```
//!
//! and the update is `W ← W + lr · ∂J/∂W` (gradient *ascent*). [`gradient`] computes exactly
//! this; the crate's tests compare it with central finite differences of [`objective`].

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The two residual adapters of the learned reranker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adapters {
    /// Embedding size `d`.
    pub dim: usize,
    /// `W_q`, row-major `d × d`.
    pub w_q: Vec<f64>,
    /// `W_m`, row-major `d × d`.
    pub w_m: Vec<f64>,
}

/// A uniform draw in `(0, 1]` from the top 53 bits of one ChaCha output.
fn unit_open0(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw in `[0, 1)` from the top 53 bits of one ChaCha output.
fn unit_open1(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw strictly inside `(0, 1)`: `(top 53 bits + 0.5) · 2^-53`.
fn unit_open(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// `n` standard normal draws by the Box–Muller transform: for each pair,
/// `u1 ∈ (0, 1]`, `u2 ∈ [0, 1)` (one ChaCha output each, top 53 bits),
/// `r = sqrt(−2 ln u1)`, giving `r cos(2π u2)` then `r sin(2π u2)`.
pub fn box_muller(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = unit_open0(rng);
        let u2 = unit_open1(rng);
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push(r * t.cos());
        out.push(r * t.sin());
    }
    out.truncate(n);
    out
}

/// One standard Gumbel draw: `−ln(−ln u)` with `u` strictly inside `(0, 1)`.
pub fn gumbel(rng: &mut ChaCha8Rng) -> f64 {
    -(-unit_open(rng).ln()).ln()
}

fn residual(w: &[f64], x: &[f64], d: usize) -> Vec<f64> {
    (0..d)
        .map(|a| {
            let row = &w[a * d..(a + 1) * d];
            x[a] + row.iter().zip(x).map(|(w, x)| w * x).sum::<f64>()
        })
        .collect()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|v| f64::from(*v)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Adapters {
    /// Zero adapters (identity residual maps: scores are plain dot products).
    pub fn zeros(dim: usize) -> Self {
        Adapters {
            dim,
            w_q: vec![0.0; dim * dim],
            w_m: vec![0.0; dim * dim],
        }
    }

    /// Adapters drawn i.i.d. from `N(0, std²)`: a ChaCha8 stream seeded with `seed`
    /// (`seed_from_u64`) feeds [`box_muller`]; `W_q` takes the first `d²` draws row by row,
    /// `W_m` the next `d²`.
    pub fn normal(dim: usize, std: f64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut z = box_muller(&mut rng, 2 * dim * dim);
        for v in &mut z {
            *v *= std;
        }
        let w_m = z.split_off(dim * dim);
        Adapters { dim, w_q: z, w_m }
    }

    /// `q' = q + W_q q`.
    pub fn adapt_query(&self, q: &[f32]) -> Vec<f64> {
        residual(&self.w_q, &to_f64(q), self.dim)
    }

    /// `m' = m + W_m m`.
    pub fn adapt_memory(&self, m: &[f32]) -> Vec<f64> {
        residual(&self.w_m, &to_f64(m), self.dim)
    }

    /// `s_k = q' · m'_k` for every candidate.
    pub fn scores(&self, q: &[f32], candidates: &[Vec<f32>]) -> Vec<f64> {
        let qa = self.adapt_query(q);
        candidates
            .iter()
            .map(|m| dot(&qa, &self.adapt_memory(m)))
            .collect()
    }

    /// Checks shapes and finiteness (used on loaded state).
    pub fn check(&self) -> Result<(), String> {
        let n = self.dim * self.dim;
        if self.dim == 0 {
            return Err("dim is 0".into());
        }
        if self.w_q.len() != n || self.w_m.len() != n {
            return Err(format!(
                "expected {n} weights per matrix for dim {}, found w_q: {}, w_m: {}",
                self.dim,
                self.w_q.len(),
                self.w_m.len()
            ));
        }
        if !self.w_q.iter().chain(&self.w_m).all(|v| v.is_finite()) {
            return Err("non-finite weight".into());
        }
        Ok(())
    }
}

/// Indices of the `m` largest `scores`, best first (ties: lower index first).
pub fn top_m(scores: &[f64], m: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
    idx.truncate(m);
    idx
}

/// Gumbel top-M: one Gumbel draw per candidate, in index order, from `rng`; returns the
/// indices of the `m` largest `s_k / τ + g_k`, best first (ties: lower index first).
pub fn gumbel_top_m(scores: &[f64], tau: f64, m: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let z: Vec<f64> = scores.iter().map(|s| s / tau + gumbel(rng)).collect();
    top_m(&z, m)
}

/// The Plackett–Luce stage terms `ℓ_j` of the ordered selection `chosen` under logits
/// `scores / τ` (see the module docs); their sum is `log P(chosen)`.
pub fn stage_log_probs(scores: &[f64], tau: f64, chosen: &[usize]) -> Vec<f64> {
    let mut remaining = vec![true; scores.len()];
    let mut out = Vec::with_capacity(chosen.len());
    for &c in chosen {
        let lse = log_sum_exp(scores, tau, &remaining);
        out.push(scores[c] / tau - lse);
        remaining[c] = false;
    }
    out
}

fn log_sum_exp(scores: &[f64], tau: f64, mask: &[bool]) -> f64 {
    let max = scores
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(s, _)| s / tau)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = scores
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(s, _)| (s / tau - max).exp())
        .sum();
    max + sum.ln()
}

/// What one answer taught the reranker: the query and candidate embeddings it ranked, the
/// ordered selection it sampled and one reward per selected memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The query embedding `q`.
    pub query: Vec<f32>,
    /// The candidates' embeddings `m_k`, in the order the selection indexes them.
    pub candidates: Vec<Vec<f32>>,
    /// The selected candidate indices, in rank order (`σ`).
    pub chosen: Vec<usize>,
    /// One reward per selected index: RMM uses `+1` cited, `−1` not cited.
    pub rewards: Vec<f32>,
}

impl Feedback {
    /// Checks that the shapes agree with embedding size `dim`.
    pub fn check(&self, dim: usize) -> Result<(), String> {
        if self.query.len() != dim {
            return Err(format!(
                "query embedding has {} values, the reranker has dim {dim}",
                self.query.len()
            ));
        }
        if let Some((k, m)) = self
            .candidates
            .iter()
            .enumerate()
            .find(|(_, m)| m.len() != dim)
        {
            return Err(format!(
                "candidate {k} embedding has {} values, the reranker has dim {dim}",
                m.len()
            ));
        }
        if self.chosen.len() != self.rewards.len() {
            return Err(format!(
                "{} chosen indices but {} rewards",
                self.chosen.len(),
                self.rewards.len()
            ));
        }
        let mut seen = vec![false; self.candidates.len()];
        for &c in &self.chosen {
            if c >= self.candidates.len() {
                return Err(format!(
                    "chosen index {c} out of range ({} candidates)",
                    self.candidates.len()
                ));
            }
            if std::mem::replace(&mut seen[c], true) {
                return Err(format!("chosen index {c} appears twice"));
            }
        }
        if !self.rewards.iter().all(|r| r.is_finite()) {
            return Err("non-finite reward".into());
        }
        Ok(())
    }
}

/// `J = Σ_j (r_j − b) ℓ_j` for one feedback (the function [`gradient`] differentiates).
pub fn objective(ad: &Adapters, f: &Feedback, tau: f64, baseline: f64) -> f64 {
    let s = ad.scores(&f.query, &f.candidates);
    stage_log_probs(&s, tau, &f.chosen)
        .iter()
        .zip(&f.rewards)
        .map(|(l, r)| (f64::from(*r) - baseline) * l)
        .sum()
}

/// `(∂J/∂W_q, ∂J/∂W_m)` for one feedback, row-major like the weights (module docs).
pub fn gradient(ad: &Adapters, f: &Feedback, tau: f64, baseline: f64) -> (Vec<f64>, Vec<f64>) {
    let d = ad.dim;
    let q = to_f64(&f.query);
    let qa = ad.adapt_query(&f.query);
    let ms: Vec<Vec<f64>> = f.candidates.iter().map(|m| to_f64(m)).collect();
    let mas: Vec<Vec<f64>> = f.candidates.iter().map(|m| ad.adapt_memory(m)).collect();
    let s: Vec<f64> = mas.iter().map(|m| dot(&qa, m)).collect();

    // c_k = Σ_j (r_j − b) ([k = σ_j] − p_{j,k}) / τ
    let mut c = vec![0.0f64; s.len()];
    let mut remaining = vec![true; s.len()];
    for (&sel, &r) in f.chosen.iter().zip(&f.rewards) {
        let adv = f64::from(r) - baseline;
        let lse = log_sum_exp(&s, tau, &remaining);
        for k in 0..s.len() {
            if remaining[k] {
                let p = (s[k] / tau - lse).exp();
                c[k] -= adv * p / tau;
            }
        }
        c[sel] += adv / tau;
        remaining[sel] = false;
    }

    let mut u = vec![0.0f64; d];
    let mut v = vec![0.0f64; d];
    for k in 0..s.len() {
        for a in 0..d {
            u[a] += c[k] * mas[k][a];
            v[a] += c[k] * ms[k][a];
        }
    }
    let mut g_q = vec![0.0f64; d * d];
    let mut g_m = vec![0.0f64; d * d];
    for a in 0..d {
        for b in 0..d {
            g_q[a * d + b] = u[a] * q[b];
            g_m[a * d + b] = qa[a] * v[b];
        }
    }
    (g_q, g_m)
}
