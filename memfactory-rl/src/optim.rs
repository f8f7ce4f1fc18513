//! The optimizer: AdamW with every hyper-parameter explicit, an LR schedule, global-norm
//! gradient clipping and gradient accumulation.
//!
//! burn 0.22's `AdamWConfig` defaults differ from PyTorch (eps 1e-5, weight decay 1e-4);
//! [`OptimConfig::default`] writes PyTorch's out (betas 0.9/0.999, eps 1e-8, weight decay
//! 0.01), and every value is passed explicitly to the update, which is burn's and PyTorch's:
//! `p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + eps)`.
//!
//! burn's built-in clipping acts per parameter; GRPO (like `torch.nn.utils.clip_grad_norm_`)
//! clips the *global* norm over all parameters: a [`ModuleVisitor`] sums squared gradients,
//! and every gradient is scaled by `min(1, max_norm / (norm + 1e-6))` ([`clip_factor`];
//! [`clip_global_norm`] does it on a [`GradientsParams`]).
//!
//! The update itself is [`FusedAdamW`]: burn's AdamW formula and state (the optimizer record
//! has burn's `AdamWState` layout), computed by [`memfactory_lm_burn::fused::adamw`], one pass
//! over parameter, gradient and both moments on `flex` (burn's AdamW makes a dozen passes,
//! each with a fresh output). [`Optim`] folds the clipping factor and the `1 / micro-batches`
//! average into that pass as a gradient scale instead of rewriting every gradient first.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{
    AdamWState, AdaptiveMomentumState, GradientsAccumulator, GradientsParams, LearningRate,
    ModuleOptimizer, Optimizer,
};
use burn::tensor::{Device, Tensor};
use memfactory_lm_burn::fused::{self, AdamWStep};
use serde::{Deserialize, Serialize};

/// Shape of the learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant at `lr`.
    Constant,
    /// Cosine decay from `lr` to `lr · min_lr_ratio` at `total_steps`.
    Cosine,
}

/// Optimizer settings (the `[train]` keys of the same names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Adam β₁, β₂.
    pub betas: [f32; 2],
    /// Adam ε.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Linear warmup from 0 over this many steps.
    pub warmup_steps: usize,
    /// After warmup.
    pub schedule: Schedule,
    /// Length of the schedule (the cosine reaches its floor here).
    pub total_steps: usize,
    /// Cosine floor as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip; `None` = off.
    pub max_grad_norm: Option<f32>,
    /// Micro-batches accumulated per optimizer update.
    pub grad_accum: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-6,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            total_steps: 1,
            min_lr_ratio: 0.0,
            max_grad_norm: Some(1.0),
            grad_accum: 1,
        }
    }
}

impl OptimConfig {
    /// Learning rate at (0-based) schedule step `step`: linear warmup `lr·(step+1)/warmup`,
    /// then constant or cosine.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let floor = self.lr * self.min_lr_ratio;
                floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += fused::sum_squares(g);
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Global L2 norm of the gradients of `module`'s parameters.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f32 {
    let mut v = SquaredNorm { grads, sum: 0.0 };
    module.visit(&mut v);
    v.sum.sqrt() as f32
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f32) {
    module.visit(&mut Scale { grads, factor });
}

/// Clips the global gradient norm to `max_norm` (PyTorch's `clip_grad_norm_`: factor
/// `min(1, max_norm / (norm + 1e-6))`); returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let norm = global_grad_norm(module, grads);
    let coef = clip_factor(norm, Some(max_norm));
    if coef < 1.0 {
        scale_grads(module, grads, coef);
    }
    norm
}

/// The factor gradients of global norm `norm` are scaled by: `min(1, max_norm / (norm +
/// 1e-6))`, or 1 without clipping.
pub fn clip_factor(norm: f32, max_norm: Option<f32>) -> f32 {
    max_norm.map_or(1.0, |m| (m / (norm + 1e-6)).min(1.0))
}

/// What one optimizer update did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateInfo {
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm of the averaged gradient, before clipping.
    pub grad_norm: f32,
    /// False when the norm was not finite: the update was skipped (the trainer stops).
    pub applied: bool,
}

/// burn's AdamW (same formula, same per-parameter state) computed by
/// [`memfactory_lm_burn::fused::adamw`], with a gradient scale shared with its [`Optim`].
#[derive(Clone)]
pub struct FusedAdamW {
    betas: [f32; 2],
    eps: f32,
    weight_decay: f32,
    /// `f32` bits of the factor every gradient is multiplied by in the next step.
    grad_scale: Arc<AtomicU32>,
}

impl FusedAdamW {
    fn new(cfg: &OptimConfig) -> Self {
        FusedAdamW {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            grad_scale: Arc::new(AtomicU32::new(1f32.to_bits())),
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let scale = f32::from_bits(self.grad_scale.load(Ordering::Relaxed));
        let (time, moments) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let h = AdamWStep::new(lr, self.betas, self.eps, self.weight_decay, time, scale);
        let (p, m, v) = fused::adamw(tensor, grad, moments, h);
        let state = AdamWState::new(AdaptiveMomentumState::new(time, m, v));
        (p, Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// AdamW + schedule + clipping + accumulation for module `M`.
pub struct Optim<M: Module> {
    /// Settings.
    pub cfg: OptimConfig,
    inner: ModuleOptimizer,
    grad_scale: Arc<AtomicU32>,
    accum: GradientsAccumulator<M>,
    pending: usize,
    /// Optimizer updates done.
    pub updates: usize,
    _m: PhantomData<M>,
}

impl<M: Module> Optim<M> {
    /// A fresh optimizer.
    pub fn new(cfg: OptimConfig) -> Self {
        let adamw = FusedAdamW::new(&cfg);
        let grad_scale = adamw.grad_scale.clone();
        Optim {
            cfg,
            inner: ModuleOptimizer::from(adamw),
            grad_scale,
            accum: GradientsAccumulator::new(),
            pending: 0,
            updates: 0,
            _m: PhantomData,
        }
    }

    /// Adds one micro-batch's gradients.
    pub fn accumulate(&mut self, module: &M, grads: GradientsParams) {
        self.accum.accumulate(module, grads);
        self.pending += 1;
    }

    /// Adds the gradients of one chunk of a micro-batch (the chunks' losses carry the
    /// micro-batch's aggregation weights, so their gradients sum to its gradient); call
    /// [`Optim::end_micro_batch`] after the last chunk.
    pub fn accumulate_part(&mut self, module: &M, grads: GradientsParams) {
        self.accum.accumulate(module, grads);
    }

    /// Counts one micro-batch whose chunks were added with [`Optim::accumulate_part`].
    pub fn end_micro_batch(&mut self) {
        self.pending += 1;
    }

    /// Micro-batches accumulated since the last update.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// True when `grad_accum` micro-batches are waiting.
    pub fn ready(&self) -> bool {
        self.pending >= self.cfg.grad_accum.max(1)
    }

    /// Averages the accumulated gradients, clips their global norm and applies AdamW at the
    /// learning rate of schedule step `schedule_step`. With nothing accumulated, returns the
    /// module unchanged and `None`.
    pub fn update(&mut self, module: M, schedule_step: usize) -> (M, Option<UpdateInfo>) {
        if self.pending == 0 {
            return (module, None);
        }
        let grads = self.accum.grads();
        // The average over micro-batches and the clipping factor are applied inside the
        // AdamW pass (one multiplication per gradient element, no rewritten gradients).
        let average = 1.0 / self.pending as f32;
        self.pending = 0;
        let grad_norm = global_grad_norm(&module, &grads) * average;
        let clip = clip_factor(grad_norm, self.cfg.max_grad_norm);
        let lr = self.cfg.lr_at(schedule_step);
        if !grad_norm.is_finite() {
            return (
                module,
                Some(UpdateInfo {
                    lr,
                    grad_norm,
                    applied: false,
                }),
            );
        }
        self.grad_scale
            .store((average * clip).to_bits(), Ordering::Relaxed);
        let module = self.inner.step(lr, module, grads);
        self.updates += 1;
        (
            module,
            Some(UpdateInfo {
                lr,
                grad_norm,
                applied: true,
            }),
        )
    }

    /// The AdamW state (moments and step counts), keyed by parameter id.
    pub fn record(&self) -> burn::optim::OptimizerRecord {
        self.inner.to_record()
    }

    /// Restores the AdamW state saved by [`Optim::record`] and the update count.
    pub fn load_record(&mut self, record: burn::optim::OptimizerRecord, updates: usize) {
        let blank = ModuleOptimizer::from(FusedAdamW::new(&self.cfg));
        let inner = std::mem::replace(&mut self.inner, blank);
        self.inner = inner.load_record(record);
        self.updates = updates;
        self.pending = 0;
        self.accum = GradientsAccumulator::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<2>>,
    }

    fn two(dev: &Device) -> Two {
        Two {
            a: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![1.0f32, 2.0], [2]),
                dev,
            )),
            b: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![3.0f32], [1, 1]),
                dev,
            )),
        }
    }

    fn grads_of(m: &Two, k: f32) -> GradientsParams {
        // loss = k·(Σa + Σb²/2) → grad a = k, grad b = k·b.
        let loss =
            (m.a.val().sum() + m.b.val().square().sum().reshape([1]).mul_scalar(0.5)).mul_scalar(k);
        GradientsParams::from_grads(loss.backward(), m)
    }

    #[test]
    fn schedule_warmup_constant_cosine() {
        let mut c = OptimConfig {
            lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            ..Default::default()
        };
        assert_eq!(c.lr_at(0), 0.25);
        assert_eq!(c.lr_at(3), 1.0);
        assert_eq!(c.lr_at(100), 1.0);
        c.schedule = Schedule::Cosine;
        c.min_lr_ratio = 0.1;
        assert!((c.lr_at(4) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(9) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(14) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(99) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn global_norm_clipping_scales_all_params_together() {
        let dev = Device::flex().autodiff();
        let m = two(&dev);
        let mut g = grads_of(&m, 1.0);
        // grads: a = [1, 1], b = [3] → norm √11.
        let n = clip_global_norm(&m, &mut g, 1.0);
        assert!((n - 11f32.sqrt()).abs() < 1e-5);
        assert!((global_grad_norm(&m, &g) - 1.0).abs() < 1e-4);
        let ga: Vec<f32> = g
            .get::<1>(m.a.id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!((ga[0] - 1.0 / 11f32.sqrt()).abs() < 1e-5);
        // Below the threshold nothing changes.
        let mut g = grads_of(&m, 0.1);
        let n = clip_global_norm(&m, &mut g, 10.0);
        assert!((global_grad_norm(&m, &g) - n).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_matches_pytorch_formula_and_accumulation_averages() {
        let dev = Device::flex().autodiff();
        let cfg = OptimConfig {
            lr: 0.1,
            weight_decay: 0.01,
            max_grad_norm: None,
            grad_accum: 2,
            ..Default::default()
        };
        let mut opt = Optim::<Two>::new(cfg);
        let m = two(&dev);
        // Two micro-batches with scales 1 and 3 average to scale 2.
        opt.accumulate(&m, grads_of(&m, 1.0));
        assert!(!opt.ready());
        opt.accumulate(&m, grads_of(&m, 3.0));
        assert!(opt.ready());
        let (m, info) = opt.update(m, 0);
        let info = info.unwrap();
        // averaged grads: a = [2, 2], b = [6] → norm √44.
        assert!((info.grad_norm - 44f32.sqrt()).abs() < 1e-4);
        // First Adam step: m̂ = g, v̂ = g² → update = g/(|g| + eps) ≈ sign(g).
        // p ← p(1 − lr·wd) − lr·sign(g).
        let a: Vec<f32> = m.a.val().into_data().try_to_vec().unwrap();
        let want = |p: f32| p * (1.0 - 0.1 * 0.01) - 0.1;
        assert!((a[0] - want(1.0)).abs() < 1e-6, "{a:?}");
        assert!((a[1] - want(2.0)).abs() < 1e-6, "{a:?}");
        let b: Vec<f32> = m.b.val().into_data().try_to_vec().unwrap();
        assert!((b[0] - want(3.0)).abs() < 1e-6, "{b:?}");
        assert_eq!(opt.updates, 1);
        let (_, none) = opt.update(m, 1);
        assert!(none.is_none());
    }

    /// `b` after two AdamW steps (lr 0.1, wd 0.01, betas 0.9/0.999, eps 1e-8) in `f64`: the
    /// first with effective gradient `g1`, the second with `g2(b after the first)`.
    fn two_steps_ref(b0: f64, g1: f64, g2: impl Fn(f64) -> f64) -> f64 {
        let (lr, wd, b1c, b2c, eps) = (0.1, 0.01, 0.9f64, 0.999f64, 1e-8);
        let (m1, v1) = ((1.0 - b1c) * g1, (1.0 - b2c) * g1 * g1);
        let step = |b: f64, m: f64, v: f64, t: i32| {
            b * (1.0 - lr * wd)
                - lr * (m / (1.0 - b1c.powi(t))) / ((v / (1.0 - b2c.powi(t))).sqrt() + eps)
        };
        let b1 = step(b0, m1, v1, 1);
        let g = g2(b1);
        let (m2, v2) = (b1c * m1 + (1.0 - b1c) * g, b2c * v1 + (1.0 - b2c) * g * g);
        step(b1, m2, v2, 2)
    }

    #[test]
    fn averaging_and_clipping_scale_the_gradient_inside_the_update() {
        let dev = Device::flex().autodiff();
        let cfg = |max_grad_norm, grad_accum| OptimConfig {
            lr: 0.1,
            max_grad_norm,
            grad_accum,
            ..Default::default()
        };
        // Averaging: two micro-batches with k = 1, 3 give the effective gradient 2·b (grad b =
        // k·b), then one with k = 1 gives 1·b. (Adam is blind to one scale on every gradient;
        // a sum instead of the mean at the first step only changes the second step.)
        let mut opt = Optim::<Two>::new(cfg(None, 2));
        let m = two(&dev);
        for k in [1.0, 3.0] {
            opt.accumulate(&m, grads_of(&m, k));
        }
        let (m, _) = opt.update(m, 0);
        opt.cfg.grad_accum = 1;
        opt.accumulate(&m, grads_of(&m, 1.0));
        let (m, _) = opt.update(m, 1);
        let b: f32 = m.b.val().into_scalar();
        let want = two_steps_ref(3.0, 6.0, |b1| b1);
        assert!((b as f64 - want).abs() < 1e-5, "averaged: {b} vs {want}");
        let summed = two_steps_ref(3.0, 12.0, |b1| b1);
        assert!(
            (want - summed).abs() > 1e-3,
            "the test must tell the two apart"
        );

        // Clipping: k = 2 gives a = [2, 2], b = [6] (norm √44) → scaled to norm 1; then k = 0.01
        // (norm below 1, unchanged).
        let mut opt = Optim::<Two>::new(cfg(Some(1.0), 1));
        let m = two(&dev);
        opt.accumulate(&m, grads_of(&m, 2.0));
        let (m, info) = opt.update(m, 0);
        assert!((info.unwrap().grad_norm - 44f32.sqrt()).abs() < 1e-4);
        opt.accumulate(&m, grads_of(&m, 0.01));
        let (m, _) = opt.update(m, 1);
        let b: f32 = m.b.val().into_scalar();
        let c = 1.0 / (44f64.sqrt() + 1e-6);
        let want = two_steps_ref(3.0, 6.0 * c, |b1| 0.01 * b1);
        assert!((b as f64 - want).abs() < 1e-5, "clipped: {b} vs {want}");
        let unclipped = two_steps_ref(3.0, 6.0, |b1| 0.01 * b1);
        assert!(
            (want - unclipped).abs() > 1e-3,
            "the test must tell the two apart"
        );
    }
}
