//! Fused training kernels for the CPU (`flex`) backend, each with its own backward pass.
//!
//! The training forward ([`crate::train`]) written with burn's tensor ops decomposes RMSNorm,
//! SwiGLU, RoPE + causal softmax attention and the log-softmax at the action tokens into a
//! dozen element-wise ops each, every one of them allocating an output, materialising strided
//! copies (`swap_dims`, `cat`) and saving its inputs for the backward pass, with libm's
//! scalar `exp`. Here each of them is one op with a hand-written forward and backward on
//! contiguous `f32` rows, parallel over rows (or over batch × KV-head for attention) with
//! rayon, with a vectorised `exp`. They are registered as a burn backend extension
//! ([`TrainKernels`]): a [`Flex`] implementation (no gradient) and an [`Autodiff`]`<Flex>`
//! one that records a custom backward step. Other backends (wgpu, cuda) keep the composed
//! ops: the training forward only calls these on `flex`.
//!
//! Layouts (all row-major, `n` = batch × sequence):
//! - [`rms_norm`]: `x` `[n, d]`, `w` `[d]`.
//! - [`swiglu`]: `silu(g) · u`, both `[n, f]`.
//! - [`causal_attention`]: `q` `[n, H·hd]`, `k`/`v` `[n, K·hd]` straight from the projections
//!   (no head transpose); RoPE (rotate-half, positions `0..s` in every row) is applied inside;
//!   output `[n, H·hd]`, ready for `o_proj`. GQA: query head `h` reads KV head `h / (H/K)`;
//!   the `H/K` query heads of a KV head are stacked into one GEMM. Query positions go in
//!   blocks of 32 that only meet the keys up to their last position, so the masked upper
//!   triangle is never multiplied (forward or backward). [`packed_attention`] is the same op
//!   on sequences of any length packed row after row ([`AttnLayout`]), where a sequence may
//!   continue another (a prompt prefix several training rows share): the prefix's rows are
//!   computed once, each continuation's queries attend to the prefix's keys and their own, and
//!   the prefix's key/value gradient is the sum over every sequence that reads it.
//! - [`target_logprobs`]: `logits` `[N, V]` and one target id per row → `log_softmax[t]` `[N]`.
//! - [`gather_rows`]: rows of a table `[V, d]` by id (the embedding lookup, the action
//!   positions' hidden states); its backward allocates the table's gradient once (burn's
//!   `select` backward zero-fills it and copies it again: 113 MB for SmolLM2's embedding).
//! - [`linear`]: `x` `[n, in]` · `w` `[in, out]` (strided views taken as they are: the frozen
//!   q/k/v columns of a packed QKV weight, the transposed tied embedding). The same `gemm` as
//!   burn's matmul, but its output buffer is neither zero-filled nor copied again to re-align
//!   it, and the weight gradient keeps the orientation of the weight's storage.
//!
//! Results agree with the composed ops to float rounding (tests in `tests/fused.rs` compare
//! values and gradients); every reduction has a fixed order, so two runs give the same bits.
//! Row sums (mean square, softmax normalisers, the log-sum-exp over the vocabulary) accumulate
//! in `f64`: an `f32` running sum over 49,152 vocabulary terms drops every term below half an
//! ulp of the total, which biased SmolLM2's log-probs by +1e-4; with `f64` the training
//! log-probs agree with the generator's to 6e-6 (the composed ops: 2e-5).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// The fused training ops (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub trait TrainKernels: Backend {
    /// RMSNorm of each row of `x` `[n, d]`, times `w` `[d]`.
    fn fused_rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
    /// `silu(g) · u`.
    fn fused_swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self>;
    /// RoPE + causal GQA softmax attention on projection-layout `q`, `k`, `v`.
    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: AttnLayout,
    ) -> FloatTensor<Self>;
    /// `log_softmax(logits)[row, targets[row]]` for every row.
    fn fused_target_logprobs(logits: FloatTensor<Self>, targets: Vec<u32>) -> FloatTensor<Self>;
    /// `log_softmax(h · w / temperature)[row, targets[row]]` for `h` `[n, d]` and the LM head
    /// `w` `[d, V]` (may be a strided view), without keeping the `[n, V]` logits: they are
    /// made in row slices, and made again in the backward pass.
    fn fused_head_logprobs(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: Vec<u32>,
        temperature: f32,
    ) -> FloatTensor<Self>;
    /// `x · w` for `x` `[n, in]` and `w` `[in, out]` (either may be a strided view).
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Rows `ids` of `table` `[V, d]` → `[ids.len(), d]` (an embedding lookup, or picking the
    /// action positions' hidden states).
    fn fused_gather_rows(table: FloatTensor<Self>, ids: Vec<u32>) -> FloatTensor<Self>;
    /// `a + scale · b` (one shape): the residual adds and the LoRA branch's sum.
    fn fused_add_scaled(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// One AdamW update of parameter `p` from its gradient `g` and moments `m`, `v` (any rank,
    /// one shape): the new `(p, m, v)`, written over the inputs' storage where it is not shared.
    fn fused_adamw(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `Σ x²` over every element of `x` (any rank), as a one-element tensor.
    fn fused_sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The scalars of one [`adamw`] update, element-wise (burn's and PyTorch's AdamW):
/// `g ← g·grad_scale`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p·decay − lr · (m/bias_1) / (√(v/bias_2) + eps)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f32,
    /// β₁.
    pub beta_1: f32,
    /// β₂.
    pub beta_2: f32,
    /// ε.
    pub eps: f32,
    /// `1 − lr · weight_decay` (decoupled weight decay).
    pub decay: f32,
    /// `1 − β₁ᵗ` at (1-based) step `t`.
    pub bias_1: f32,
    /// `1 − β₂ᵗ`.
    pub bias_2: f32,
    /// Multiplier on the gradient (global-norm clipping, averaging accumulated micro-batches).
    pub grad_scale: f32,
}

impl AdamWStep {
    /// The scalars at (1-based) step `t`, rounded to `f32` the way burn's AdamW rounds them.
    pub fn new(
        lr: f64,
        [beta_1, beta_2]: [f32; 2],
        eps: f32,
        weight_decay: f32,
        t: usize,
        grad_scale: f32,
    ) -> Self {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        AdamWStep {
            lr: lr as f32,
            beta_1,
            beta_2,
            eps,
            decay: (1.0 - lr * weight_decay as f64) as f32,
            bias_1: 1.0 - beta_1.powi(t),
            bias_2: 1.0 - beta_2.powi(t),
            grad_scale,
        }
    }
}

/// The shape parameters of [`causal_attention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnDims {
    /// Rows of the batch (the sequence length is `n / batch`).
    pub batch: usize,
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads `K` (`H` a multiple of `K`).
    pub kv_heads: usize,
    /// RoPE base.
    pub theta: f32,
}

impl AttnDims {
    /// The same attention as a packed layout: `batch` sequences of `n / batch` rows each.
    pub fn layout(&self, n: usize) -> AttnLayout {
        assert!(self.batch > 0 && n.is_multiple_of(self.batch));
        let s = n / self.batch;
        AttnLayout {
            heads: self.heads,
            kv_heads: self.kv_heads,
            theta: self.theta,
            seqs: (0..self.batch)
                .map(|i| AttnSeq {
                    start: i * s,
                    len: s,
                    parent: None,
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }
}

/// One sequence of a packed attention input ([`packed_attention`]): its own rows
/// `start..start + len` of the packed `[n, ·]` tensors, and the sequence whose rows come
/// before them (a shared prompt prefix), if any. Its own rows sit at positions
/// `P..P + len`, where `P` is the total length of its ancestors, and each attends causally to
/// its ancestors' rows and its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnSeq {
    /// First packed row.
    pub start: usize,
    /// Own rows.
    pub len: usize,
    /// Index (in [`AttnLayout::seqs`], lower than this one's) of the sequence that precedes it.
    pub parent: Option<usize>,
}

/// The shape parameters of [`packed_attention`]: heads and the packed sequences (a prefix
/// tree: a shared prompt's rows once, each continuation after it).
#[derive(Debug, Clone, PartialEq)]
pub struct AttnLayout {
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads `K` (`H` a multiple of `K`).
    pub kv_heads: usize,
    /// RoPE base.
    pub theta: f32,
    /// Every packed row belongs to exactly one sequence; parents precede their children.
    pub seqs: std::sync::Arc<[AttnSeq]>,
}

// ---------------------------------------------------------------------------------------------
// Tensor-level entry points (any device whose backend is Flex or Autodiff<Flex>).
// ---------------------------------------------------------------------------------------------

/// See [`TrainKernels::fused_rms_norm`].
pub fn rms_norm(x: Tensor<2>, w: Tensor<1>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_rms_norm(
        x.into_dispatch(),
        w.into_dispatch(),
        eps,
    ))
}

/// See [`TrainKernels::fused_swiglu`].
pub fn swiglu(g: Tensor<2>, u: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_swiglu(
        g.into_dispatch(),
        u.into_dispatch(),
    ))
}

/// See [`TrainKernels::fused_causal_attention`]: `dims.batch` sequences of equal length.
pub fn causal_attention(q: Tensor<2>, k: Tensor<2>, v: Tensor<2>, dims: AttnDims) -> Tensor<2> {
    let layout = dims.layout(q.dims()[0]);
    packed_attention(q, k, v, layout)
}

/// See [`TrainKernels::fused_causal_attention`]: sequences of any length packed row after row,
/// a shared prefix's rows once (their gradient is the sum over every sequence that reads them).
pub fn packed_attention(q: Tensor<2>, k: Tensor<2>, v: Tensor<2>, layout: AttnLayout) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        layout,
    ))
}

/// See [`TrainKernels::fused_target_logprobs`].
pub fn target_logprobs(logits: Tensor<2>, targets: Vec<u32>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_target_logprobs(
        logits.into_dispatch(),
        targets,
    ))
}

/// See [`TrainKernels::fused_head_logprobs`].
pub fn head_logprobs(h: Tensor<2>, w: Tensor<2>, targets: Vec<u32>, temperature: f32) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_head_logprobs(
        h.into_dispatch(),
        w.into_dispatch(),
        targets,
        temperature,
    ))
}

/// See [`TrainKernels::fused_linear`].
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_linear(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// See [`TrainKernels::fused_gather_rows`].
pub fn gather_rows(table: Tensor<2>, ids: Vec<u32>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_gather_rows(
        table.into_dispatch(),
        ids,
    ))
}

/// See [`TrainKernels::fused_add_scaled`].
pub fn add_scaled(a: Tensor<2>, b: Tensor<2>, scale: f32) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_add_scaled(
        a.into_dispatch(),
        b.into_dispatch(),
        scale,
    ))
}

/// `a + b` through [`add_scaled`]: on all of rayon's threads (burn flex adds tensors below
/// 4 M elements on the calling thread alone).
pub fn add(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    add_scaled(a, b, 1.0)
}

/// One AdamW update (see [`AdamWStep`]); `m`, `v` `None` at the first step (zero moments).
/// On `flex` one fused pass over the four tensors ([`TrainKernels::fused_adamw`]), elsewhere
/// [`adamw_composed`].
pub fn adamw<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    step: AdamWStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    if p.device() != burn::tensor::Device::flex() {
        return adamw_composed(p, g, moments, step);
    }
    // Two zero tensors, not one shared: each is then written in place.
    let (m, v) = moments.unwrap_or_else(|| {
        let zeros = || Tensor::<D>::zeros(p.shape(), &p.device());
        (zeros(), zeros())
    });
    let (p, m, v) = <Dispatch as TrainKernels>::fused_adamw(
        p.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// [`adamw`] written with burn's tensor ops in burn's AdamW order (any backend).
pub fn adamw_composed<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    h: AdamWStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let g = if h.grad_scale == 1.0 {
        g
    } else {
        g.mul_scalar(h.grad_scale)
    };
    let (m, v) = match moments {
        Some((m, v)) => (
            m.mul_scalar(h.beta_1)
                .add(g.clone().mul_scalar(1.0 - h.beta_1)),
            v.mul_scalar(h.beta_2)
                .add(g.square().mul_scalar(1.0 - h.beta_2)),
        ),
        None => (
            g.clone().mul_scalar(1.0 - h.beta_1),
            g.square().mul_scalar(1.0 - h.beta_2),
        ),
    };
    let delta = m
        .clone()
        .div_scalar(h.bias_1)
        .div(v.clone().div_scalar(h.bias_2).sqrt().add_scalar(h.eps));
    let p = p.mul_scalar(h.decay) - delta.mul_scalar(h.lr);
    (p, m, v)
}

/// `Σ x²` over every element of `x` (on `flex` one pass accumulated in `f64`, elsewhere
/// `square().sum()`), returned through a one-element `f32` tensor, so rounded to `f32`.
pub fn sum_squares<const D: usize>(x: Tensor<D>) -> f64 {
    let s: Tensor<1> = if x.device() == burn::tensor::Device::flex() {
        Tensor::from_dispatch(<Dispatch as TrainKernels>::fused_sum_squares(
            x.into_dispatch(),
        ))
    } else {
        x.square().sum()
    };
    let v: f32 = s.into_scalar();
    v as f64
}

// ---------------------------------------------------------------------------------------------
// Flex (no autodiff): forward only.
// ---------------------------------------------------------------------------------------------

impl TrainKernels for Flex {
    fn fused_rms_norm(x: FlexTensor, w: FlexTensor, eps: f32) -> FlexTensor {
        rms_forward(&contiguous(x), &contiguous(w), eps).0
    }

    fn fused_swiglu(g: FlexTensor, u: FlexTensor) -> FlexTensor {
        swiglu_forward(&contiguous(g), &contiguous(u))
    }

    fn fused_causal_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        layout: AttnLayout,
    ) -> FlexTensor {
        attn_forward(&contiguous(q), &contiguous(k), &contiguous(v), layout).out
    }

    fn fused_target_logprobs(logits: FlexTensor, targets: Vec<u32>) -> FlexTensor {
        logprobs_forward(&contiguous(logits), &targets).0
    }

    fn fused_head_logprobs(
        h: FlexTensor,
        w: FlexTensor,
        targets: Vec<u32>,
        temperature: f32,
    ) -> FlexTensor {
        head_forward(&contiguous(h), &w, &targets, temperature).0
    }

    fn fused_linear(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        linear_forward(&x, &w)
    }

    fn fused_gather_rows(table: FlexTensor, ids: Vec<u32>) -> FlexTensor {
        gather_rows_forward(&contiguous(table), &ids)
    }

    fn fused_add_scaled(a: FlexTensor, b: FlexTensor, scale: f32) -> FlexTensor {
        add_scaled_kernel(&contiguous(a), &contiguous(b), scale)
    }

    fn fused_adamw(
        p: FlexTensor,
        g: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        step: AdamWStep,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        adamw_kernel(p, &contiguous(g), m, v, step)
    }

    fn fused_sum_squares(x: FlexTensor) -> FlexTensor {
        let s = sum_squares_kernel(f32s(&contiguous(x)));
        tensor(vec![s as f32], [1])
    }
}

// ---------------------------------------------------------------------------------------------
// Autodiff<Flex>: forward + recorded backward step.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct AddScaledBackward;

impl Backward<Flex, 2> for AddScaledBackward {
    /// The scale of `b`.
    type State = f32;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let scale = ops.state;
        if let Some(node) = node_b {
            let db = if scale == 1.0 {
                dy.clone()
            } else {
                scale_kernel(&dy, scale)
            };
            grads.register::<Flex>(node.id, db);
        }
        if let Some(node) = node_a {
            grads.register::<Flex>(node.id, dy);
        }
    }
}

#[derive(Debug)]
struct RmsBackward;

impl Backward<Flex, 2> for RmsBackward {
    /// `x`, `w`, per-row 1/rms, eps-free.
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w, rstd) = ops.state;
        let (dx, dw) = rms_backward(&x, &w, &rstd, &dy, node_w.is_some());
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_g, node_u] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (g, u) = ops.state;
        let (dg, du) = swiglu_backward(&g, &u, &dy);
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, dg);
        }
        if let Some(node) = node_u {
            grads.register::<Flex>(node.id, du);
        }
    }
}

#[derive(Debug)]
struct AttnBackward;

impl Backward<Flex, 3> for AttnBackward {
    type State = AttnSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let dout = contiguous(grads.consume::<Flex>(&ops.node));
        let (dq, dk, dv) = attn_backward(&ops.state, &dout);
        for (node, g) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct LogprobsBackward;

impl Backward<Flex, 1> for LogprobsBackward {
    /// Logits, per-row log-sum-exp, targets.
    type State = (FlexTensor, Vec<f32>, Vec<u32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dlp = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(node) = node {
            let (logits, lse, targets) = &ops.state;
            grads.register::<Flex>(node.id, logprobs_backward(logits, lse, targets, &dlp));
        }
    }
}

#[derive(Debug)]
struct HeadBackward;

/// What the head's backward needs: `h`, `w`, the rows' log-sum-exp, targets, temperature.
#[derive(Debug, Clone)]
struct HeadSaved {
    h: FlexTensor,
    w: FlexTensor,
    lse: Vec<f32>,
    targets: Vec<u32>,
    temperature: f32,
}

impl Backward<Flex, 2> for HeadBackward {
    type State = HeadSaved;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h, node_w] = ops.parents;
        let dlp = contiguous(grads.consume::<Flex>(&ops.node));
        let (dh, dw) = head_backward(&ops.state, &dlp, node_h.is_some(), node_w.is_some());
        if let (Some(node), Some(g)) = (node_h, dh) {
            grads.register::<Flex>(node.id, g);
        }
        if let (Some(node), Some(g)) = (node_w, dw) {
            grads.register::<Flex>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 2> for LinearBackward {
    /// `x` (kept only when `w` is tracked: `dw` needs it), `w` (kept only when `x` is
    /// tracked, for `dx`), and `w`'s orientation.
    type State = (Option<FlexTensor>, Option<FlexTensor>, bool);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w, col_major) = ops.state;
        if let (Some(node), Some(w)) = (node_x, w) {
            grads.register::<Flex>(node.id, linear_dx(&dy, &w));
        }
        if let (Some(node), Some(x)) = (node_w, x) {
            grads.register::<Flex>(node.id, linear_dw(&x, &dy, col_major));
        }
    }
}

#[derive(Debug)]
struct GatherRowsBackward;

impl Backward<Flex, 1> for GatherRowsBackward {
    /// Table shape `[V, d]`, ids.
    type State = ([usize; 2], Vec<u32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(node) = node {
            let (shape, ids) = &ops.state;
            grads.register::<Flex>(node.id, gather_rows_backward(*shape, ids, &dy));
        }
    }
}

impl<C: CheckpointStrategy> TrainKernels for Autodiff<Flex, C> {
    // Each op: take the inputs' graph nodes, run the forward kernel once, and record the
    // backward step with what it needs only when some input is tracked.

    fn fused_rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let prep = RmsBackward
            .prepare::<C>([x.node(), w.node()])
            .compute_bound()
            .stateful();
        let (xs, ws) = (
            contiguous(x.into_primitive()),
            contiguous(w.into_primitive()),
        );
        let (y, rstd) = rms_forward(&xs, &ws, eps);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((xs, ws, rstd), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SwigluBackward
            .prepare::<C>([g.node(), u.node()])
            .compute_bound()
            .stateful();
        let (gs, us) = (
            contiguous(g.into_primitive()),
            contiguous(u.into_primitive()),
        );
        let y = swiglu_forward(&gs, &us);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((gs, us), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: AttnLayout,
    ) -> FloatTensor<Self> {
        let prep = AttnBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful();
        let saved = attn_forward(
            &contiguous(q.into_primitive()),
            &contiguous(k.into_primitive()),
            &contiguous(v.into_primitive()),
            layout,
        );
        match prep {
            OpsKind::Tracked(prep) => {
                let out = saved.out.clone();
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(saved.out),
        }
    }

    fn fused_target_logprobs(logits: FloatTensor<Self>, targets: Vec<u32>) -> FloatTensor<Self> {
        let prep = LogprobsBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful();
        let l = contiguous(logits.into_primitive());
        let (lp, lse) = logprobs_forward(&l, &targets);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((l, lse, targets), lp),
            OpsKind::UnTracked(prep) => prep.finish(lp),
        }
    }

    fn fused_head_logprobs(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: Vec<u32>,
        temperature: f32,
    ) -> FloatTensor<Self> {
        let prep = HeadBackward
            .prepare::<C>([h.node(), w.node()])
            .compute_bound()
            .stateful();
        let (hs, ws) = (contiguous(h.into_primitive()), w.into_primitive());
        let (lp, lse) = head_forward(&hs, &ws, &targets, temperature);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(
                HeadSaved {
                    h: hs,
                    w: ws,
                    lse,
                    targets,
                    temperature,
                },
                lp,
            ),
            OpsKind::UnTracked(prep) => prep.finish(lp),
        }
    }

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = LinearBackward
            .prepare::<C>([x.node(), w.node()])
            .compute_bound()
            .stateful();
        // A frozen weight's input is not kept alive for the backward (LoRA: the SwiGLU output
        // feeding a frozen down projection, 212 MB on SmolLM2 at 4 × 288 tokens).
        let (keep_x, keep_w) = (w.is_tracked(), x.is_tracked());
        let (xs, ws) = (x.into_primitive(), w.into_primitive());
        let y = linear_forward(&xs, &ws);
        match prep {
            OpsKind::Tracked(prep) => {
                let col_major = is_col_major(&ws);
                prep.finish((keep_x.then_some(xs), keep_w.then_some(ws), col_major), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_gather_rows(table: FloatTensor<Self>, ids: Vec<u32>) -> FloatTensor<Self> {
        let prep = GatherRowsBackward
            .prepare::<C>([table.node()])
            .compute_bound()
            .stateful();
        let t = contiguous(table.into_primitive());
        let y = gather_rows_forward(&t, &ids);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((dims::<2>(&t), ids), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_add_scaled(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let prep = AddScaledBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful();
        let y = add_scaled_kernel(
            &contiguous(a.into_primitive()),
            &contiguous(b.into_primitive()),
            scale,
        );
        match prep {
            OpsKind::Tracked(prep) => prep.finish(scale, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    // The optimizer ops run on the parameters' inner values: no graph.

    fn fused_adamw(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (p, m, v) = Flex::fused_adamw(
            p.into_primitive(),
            g.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            step,
        );
        (
            Self::from_inner(p),
            Self::from_inner(m),
            Self::from_inner(v),
        )
    }

    fn fused_sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(Flex::fused_sum_squares(x.into_primitive()))
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels on contiguous f32 storage.
// ---------------------------------------------------------------------------------------------

fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels take contiguous f32 tensors")
}

fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    t.layout().shape().dims::<D>()
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Rows per rayon task for row-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// `n` zeros, written by all of rayon's threads: a kernel's output buffer. (`vec![0.0; n]`
/// zero-fills on the calling thread while the pool waits — a reused allocation is `memset`,
/// a fresh one page-faults — which was a third of the training step's serial time.)
fn zeros(n: usize) -> Vec<f32> {
    if n < (1 << 16) {
        return vec![0f32; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// RMSNorm's `1 / sqrt(mean(x²) + eps)` of one row (the mean summed in f64); the training
/// kernel and the host decode step both scale by it.
pub(crate) fn rms_rstd(x: &[f32], eps: f32) -> f32 {
    let ms = (x.iter().map(|&v| f64::from(v * v)).sum::<f64>() / x.len() as f64) as f32;
    1.0 / (ms + eps).sqrt()
}

fn rms_forward(x: &FlexTensor, w: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let [n, d] = dims::<2>(x);
    let (xs, ws) = (f32s(x), f32s(w));
    assert_eq!(ws.len(), d, "rms_norm: weight length");
    let mut y = zeros(n * d);
    let mut rstd = zeros(n);
    y.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(xs.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((yb, xb), rb)| {
            for ((yr, xr), r) in yb.chunks_mut(d).zip(xb.chunks(d)).zip(rb.iter_mut()) {
                *r = rms_rstd(xr, eps);
                for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(ws) {
                    *o = v * *r * g;
                }
            }
        });
    (tensor(y, [n, d]), rstd)
}

fn rms_backward(
    x: &FlexTensor,
    w: &FlexTensor,
    rstd: &[f32],
    dy: &FlexTensor,
    want_dw: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    let [n, d] = dims::<2>(x);
    let (xs, ws, dys) = (f32s(x), f32s(w), f32s(dy));
    let mut dx = zeros(n * d);
    // One partial dw per task, summed in task order afterwards (deterministic).
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(d * ROWS_PER_TASK)
        .zip(xs.par_chunks(d * ROWS_PER_TASK))
        .zip(dys.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .map(|(((dxb, xb), dyb), rb)| {
            let mut dw = if want_dw { vec![0f32; d] } else { Vec::new() };
            for (((dxr, xr), dyr), &r) in dxb
                .chunks_mut(d)
                .zip(xb.chunks(d))
                .zip(dyb.chunks(d))
                .zip(rb)
            {
                // c = (1/d) Σ dy·w·x·r ; dx = r·(dy·w − x·r·c)
                let c = dyr
                    .iter()
                    .zip(ws)
                    .zip(xr)
                    .map(|((a, b), v)| f64::from(a * b * v))
                    .sum::<f64>() as f32
                    * r
                    / d as f32;
                for (((o, &g), &wv), &v) in dxr.iter_mut().zip(dyr).zip(ws).zip(xr) {
                    *o = r * (g * wv - v * r * c);
                }
                if want_dw {
                    for ((acc, &g), &v) in dw.iter_mut().zip(dyr).zip(xr) {
                        *acc += g * v * r;
                    }
                }
            }
            dw
        })
        .collect();
    let dw = want_dw.then(|| {
        let mut dw = vec![0f32; d];
        for p in &partials {
            for (a, b) in dw.iter_mut().zip(p) {
                *a += b;
            }
        }
        tensor(dw, [d])
    });
    (tensor(dx, [n, d]), dw)
}

/// Elements per rayon task for element-wise kernels.
const ELEMS_PER_TASK: usize = 8192;

fn swiglu_forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    let shape = dims::<2>(g);
    assert_eq!(shape, dims::<2>(u), "swiglu: shapes differ");
    let (gs, us) = (f32s(g), f32s(u));
    let mut y = zeros(gs.len());
    y.par_chunks_mut(ELEMS_PER_TASK)
        .zip(gs.par_chunks(ELEMS_PER_TASK))
        .zip(us.par_chunks(ELEMS_PER_TASK))
        .for_each(|((yb, gb), ub)| swiglu_slice(gb, ub, yb));
    tensor(y, shape)
}

/// `y = g·σ(g)·u` elementwise, `σ(g) = 1 / (1 + e^−g)` with the vectorised exp; the training
/// kernel and the host decode step both use it.
pub(crate) fn swiglu_slice(g: &[f32], u: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(g) {
        *o = -v;
    }
    exp_in_place(y);
    for ((o, &v), &w) in y.iter_mut().zip(g).zip(u) {
        *o = v / (1.0 + *o) * w;
    }
}

fn swiglu_backward(g: &FlexTensor, u: &FlexTensor, dy: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let shape = dims::<2>(g);
    let (gs, us, dys) = (f32s(g), f32s(u), f32s(dy));
    let mut dg = zeros(gs.len());
    let mut du = zeros(gs.len());
    dg.par_chunks_mut(ELEMS_PER_TASK)
        .zip(du.par_chunks_mut(ELEMS_PER_TASK))
        .zip(gs.par_chunks(ELEMS_PER_TASK))
        .zip(us.par_chunks(ELEMS_PER_TASK))
        .zip(dys.par_chunks(ELEMS_PER_TASK))
        .for_each(|((((dgb, dub), gb), ub), dyb)| {
            for (o, &v) in dgb.iter_mut().zip(gb) {
                *o = -v;
            }
            exp_in_place(dgb);
            for ((((o, ou), &v), &w), &d) in dgb.iter_mut().zip(dub).zip(gb).zip(ub).zip(dyb) {
                let s = 1.0 / (1.0 + *o);
                // d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g)))
                *o = d * w * s * (1.0 + v * (1.0 - s));
                *ou = d * v * s;
            }
        });
    (tensor(dg, shape), tensor(du, shape))
}

fn logprobs_forward(logits: &FlexTensor, targets: &[u32]) -> (FlexTensor, Vec<f32>) {
    let [n, v] = dims::<2>(logits);
    assert_eq!(targets.len(), n, "target_logprobs: one target per row");
    let ls = f32s(logits);
    let rows: Vec<(f32, f32)> = ls
        .par_chunks(v)
        .zip(targets.par_iter())
        .map_init(
            || vec![0f32; v],
            |buf, (row, &t)| {
                let lse = log_sum_exp(row, buf);
                (row[t as usize] - lse, lse)
            },
        )
        .collect();
    let (lp, lse): (Vec<f32>, Vec<f32>) = rows.into_iter().unzip();
    (tensor(lp, [n]), lse)
}

fn log_sum_exp(row: &[f32], buf: &mut [f32]) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for (o, &x) in buf.iter_mut().zip(row) {
        *o = x - m;
    }
    exp_in_place(buf);
    m + (buf.iter().map(|&v| f64::from(v)).sum::<f64>().ln() as f32)
}

fn logprobs_backward(
    logits: &FlexTensor,
    lse: &[f32],
    targets: &[u32],
    dlp: &FlexTensor,
) -> FlexTensor {
    let [n, v] = dims::<2>(logits);
    let (ls, d) = (f32s(logits), f32s(dlp));
    let mut out = zeros(n * v);
    out.par_chunks_mut(v)
        .zip(ls.par_chunks(v))
        .enumerate()
        .for_each(|(r, (o, row))| {
            // d lp / d logit_c = δ(c, t) − softmax_c
            for (a, &x) in o.iter_mut().zip(row) {
                *a = x - lse[r];
            }
            exp_in_place(o);
            for a in o.iter_mut() {
                *a *= -d[r];
            }
            o[targets[r] as usize] += d[r];
        });
    tensor(out, [n, v])
}

/// Logit rows made at once by [`head_forward`] / [`head_backward`]: about 32 MB of logits
/// for a 49,152-token vocabulary, whatever the number of action tokens.
const HEAD_SLICE_FLOATS: usize = 8 << 20;

/// Rows of `h` per logit slice for a vocabulary of `v`.
fn head_slice(v: usize) -> usize {
    (HEAD_SLICE_FLOATS / v.max(1)).max(1)
}

/// `z = h_rows · w / temperature` for `rows` of `h` `[n, d]` into `out` `[rows.len(), V]`.
fn head_logits(
    h: &FlexTensor,
    w: &FlexTensor,
    rows: std::ops::Range<usize>,
    temperature: f32,
) -> Vec<f32> {
    let ([_, d], [_, v]) = (dims::<2>(h), dims::<2>(w));
    let m = rows.len();
    let mut z = with_views(h, w, |hv, wv| {
        let hv = View {
            off: hv.off + rows.start * hv.rs,
            ..hv
        };
        product(hv, wv, (m, v, d))
    });
    if temperature != 1.0 {
        let inv = 1.0 / temperature;
        z.par_iter_mut().for_each(|x| *x *= inv);
    }
    z
}

/// The head's log-probs of `targets` and each row's log-sum-exp, one row slice of logits at a
/// time (the same per-row arithmetic as [`logprobs_forward`]).
fn head_forward(
    h: &FlexTensor,
    w: &FlexTensor,
    targets: &[u32],
    temperature: f32,
) -> (FlexTensor, Vec<f32>) {
    head_forward_in(h, w, targets, temperature, head_slice(dims::<2>(w)[1]))
}

fn head_forward_in(
    h: &FlexTensor,
    w: &FlexTensor,
    targets: &[u32],
    temperature: f32,
    step: usize,
) -> (FlexTensor, Vec<f32>) {
    let ([n, _], [_, v]) = (dims::<2>(h), dims::<2>(w));
    assert_eq!(targets.len(), n, "head_logprobs: one target per row");
    let (mut lp, mut lse) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r0 in (0..n).step_by(step) {
        let r1 = (r0 + step).min(n);
        let z = head_logits(h, w, r0..r1, temperature);
        let rows: Vec<(f32, f32)> = z
            .par_chunks(v)
            .zip(targets[r0..r1].par_iter())
            .map_init(
                || vec![0f32; v],
                |buf, (row, &t)| {
                    let l = log_sum_exp(row, buf);
                    (row[t as usize] - l, l)
                },
            )
            .collect();
        for (a, b) in rows {
            lp.push(a);
            lse.push(b);
        }
    }
    (tensor(lp, [n]), lse)
}

/// `dh = dz · wᵀ` and `dw = hᵀ · dz` (in `w`'s storage orientation, as [`linear_dw`]) with
/// `dz = (δ(c, t) − softmax_c) · dlp / temperature`, the logits made again slice by slice.
fn head_backward(
    st: &HeadSaved,
    dlp: &FlexTensor,
    want_h: bool,
    want_w: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    head_backward_in(st, dlp, (want_h, want_w), head_slice(dims::<2>(&st.w)[1]))
}

fn head_backward_in(
    st: &HeadSaved,
    dlp: &FlexTensor,
    (want_h, want_w): (bool, bool),
    step: usize,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (h, w) = (&st.h, &st.w);
    let ([n, d], [_, v]) = (dims::<2>(h), dims::<2>(w));
    let dl = f32s(dlp);
    let col_major = is_col_major(w);
    let mut dh = if want_h { zeros(n * d) } else { Vec::new() };
    let mut dw = if want_w { zeros(d * v) } else { Vec::new() };
    let inv_t = 1.0 / st.temperature;
    for r0 in (0..n).step_by(step) {
        let r1 = (r0 + step).min(n);
        let m = r1 - r0;
        let mut dz = head_logits(h, w, r0..r1, st.temperature);
        dz.par_chunks_mut(v).enumerate().for_each(|(k, o)| {
            let r = r0 + k;
            for a in o.iter_mut() {
                *a -= st.lse[r];
            }
            exp_in_place(o);
            let g = dl[r] * inv_t;
            for a in o.iter_mut() {
                *a *= -g;
            }
            o[st.targets[r] as usize] += g;
        });
        let dzv = View::rows(&dz, 0, v);
        if want_h {
            with_views(h, w, |_, wv| {
                matmul_par(&mut dh[r0 * d..r1 * d], d, dzv, wv.t(), (m, d, v), false)
            });
        }
        if want_w {
            let hv = View::rows(f32s(h), r0 * d, d);
            if col_major {
                // [V, d] storage: dwᵀ += dzᵀ · h
                matmul_par(&mut dw, d, dzv.t(), hv, (v, d, m), true);
            } else {
                matmul_par(&mut dw, v, hv.t(), dzv, (d, v, m), true);
            }
        }
    }
    let dh = want_h.then(|| tensor(dh, [n, d]));
    let dw = want_w.then(|| {
        if col_major {
            let t = tensor(dw, [v, d]);
            let layout = t.layout().transpose(0, 1);
            t.with_layout(layout)
        } else {
            tensor(dw, [d, v])
        }
    });
    (dh, dw)
}

/// `cos`, `sin` `[s, hd/2]` of RoPE, computed as the composed path's `rope_tables`.
fn rope_tables(s: usize, hd: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = hd / 2;
    let inv = crate::forward::rope_inv_freq(hd, theta);
    let mut cos = Vec::with_capacity(s * half);
    let mut sin = Vec::with_capacity(s * half);
    for p in 0..s {
        crate::forward::rope_push(p, &inv, &mut cos, &mut sin);
    }
    (cos, sin)
}

/// Copies the `G` heads of `hd` values at each position `r` of `src` (position rows of stride
/// `stride`, the heads side by side) into `dst` `[s·G, hd]` (row `r·G + hg`), rotated by
/// RoPE at position `r`.
fn rotate_rows(
    src: &[f32],
    stride: usize,
    dst: &mut [f32],
    (hd, group): (usize, usize),
    cos: &[f32],
    sin: &[f32],
) {
    let half = hd / 2;
    for (row, d) in dst.chunks_mut(hd).enumerate() {
        let (p, hg) = (row / group, row % group);
        let x = &src[p * stride + hg * hd..p * stride + (hg + 1) * hd];
        let (c, sn) = (
            &cos[p * half..(p + 1) * half],
            &sin[p * half..(p + 1) * half],
        );
        let (d1, d2) = d.split_at_mut(half);
        for i in 0..half {
            d1[i] = x[i] * c[i] - x[i + half] * sn[i];
            d2[i] = x[i + half] * c[i] + x[i] * sn[i];
        }
    }
}

/// The transpose of [`rotate_rows`]'s rotation, in place on `[s·G, hd]` (row `r·G + hg` at
/// position `r`).
fn unrotate_rows(buf: &mut [f32], (hd, group): (usize, usize), cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for (row, d) in buf.chunks_mut(hd).enumerate() {
        let p = row / group;
        let (c, sn) = (
            &cos[p * half..(p + 1) * half],
            &sin[p * half..(p + 1) * half],
        );
        let (d1, d2) = d.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (d1[i], d2[i]);
            d1[i] = a * c[i] + b * sn[i];
            d2[i] = b * c[i] - a * sn[i];
        }
    }
}

/// A strided matrix view: element `(r, c)` at `data[off + r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    off: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    pub(crate) fn rows(data: &'a [f32], off: usize, rs: usize) -> Self {
        View {
            data,
            off,
            rs,
            cs: 1,
        }
    }

    pub(crate) fn t(self) -> Self {
        View {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst[m, n] (row stride dst_rs) = (accumulate ? dst : 0) + a[m, k] · b[k, n]`, single-threaded.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    a: View,
    b: View,
    dims: (usize, usize, usize),
    accumulate: bool,
) {
    matmul_in(dst, dst_rs, a, b, dims, accumulate, gemm::Parallelism::None)
}

/// `dst[m, n] (row stride dst_rs) = a[m, k] · b[k, n]`, single-threaded, into a raw
/// destination: for callers whose threads write disjoint column blocks of one buffer.
///
/// # Safety
/// `dst` must be valid for writes of the m×n elements at row stride `dst_rs`, must not
/// overlap `a` or `b`, and no other thread may touch those elements during the call.
#[allow(unsafe_code)]
pub(crate) unsafe fn matmul_to(
    dst: *mut f32,
    dst_rs: usize,
    a: View,
    b: View,
    (m, n, k): (usize, usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { gemm_raw(dst, dst_rs, a, b, (m, n, k), false, gemm::Parallelism::None) }
}

/// [`matmul`] on every core.
fn matmul_par(
    dst: &mut [f32],
    dst_rs: usize,
    a: View,
    b: View,
    dims: (usize, usize, usize),
    accumulate: bool,
) {
    matmul_in(
        dst,
        dst_rs,
        a,
        b,
        dims,
        accumulate,
        gemm::Parallelism::Rayon(0),
    )
}

fn matmul_in(
    dst: &mut [f32],
    dst_rs: usize,
    a: View,
    b: View,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n - 1 < dst.len());
    #[allow(unsafe_code)]
    // SAFETY: the assert keeps the m×n elements at row stride `dst_rs` inside `dst`, which is
    // borrowed mutably, so it aliases neither input.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            dst_rs,
            a,
            b,
            (m, n, k),
            accumulate,
            parallelism,
        )
    }
}

/// The one `gemm` call behind [`matmul`] and [`product`]: `dst = (accumulate ? dst : 0) + a · b`
/// for `m, n ≥ 1`; panics unless `k ≥ 1` and every element of `a` (m×k) and `b` (k×n) it
/// reads lies inside their slices.
///
/// # Safety
/// `dst` must be valid for writes of the m×n elements at row stride `dst_rs` (and for reads
/// when `accumulate`), and must not overlap `a` or `b`.
#[allow(unsafe_code)]
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: usize,
    a: View,
    b: View,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    par: gemm::Parallelism,
) {
    let last = |v: &View, r: usize, c: usize| v.off + (r - 1) * v.rs + (c - 1) * v.cs;
    assert!(k > 0 && last(&a, m, k) < a.data.len() && last(&b, k, n) < b.data.len());
    // SAFETY: the assert keeps every read of `a` and `b` inside their slices (offsets and
    // strides as the views give them); the caller guarantees `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// A 2-D tensor as a strided [`View`] of its storage (no copy); `None` for negative strides.
fn view2(t: &FlexTensor) -> Option<View<'_>> {
    let l = t.layout();
    match l.strides() {
        &[rs, cs] if rs >= 0 && cs >= 0 => Some(View {
            data: t.storage::<f32>(),
            off: l.start_offset(),
            rs: rs as usize,
            cs: cs as usize,
        }),
        _ => None,
    }
}

/// `a[m, k] · b[k, n]` into a fresh row-major `[m, n]` buffer, on all of rayon's threads.
///
/// The buffer is never zero-filled: the product (not accumulated into `dst`) writes every
/// element. burn's own matmul allocates its output zeroed and then copies it once more to
/// re-align it (`Bytes::from_bytes_vec`), two extra passes over every activation and gradient
/// that took 7 % of a full fine-tuning step's CPU samples on SmolLM2.
fn product(a: View, b: View, (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let mut out = Vec::<f32>::with_capacity(m * n);
    #[allow(unsafe_code)]
    // SAFETY: `out` has capacity for the m×n row-major result and aliases nothing; gemm writes
    // every element without reading it (`accumulate` false, k ≥ 1), so all are initialised
    // before `set_len`.
    unsafe {
        gemm_raw(
            out.as_mut_ptr(),
            n,
            a,
            b,
            (m, n, k),
            false,
            gemm::Parallelism::Rayon(0),
        );
        out.set_len(m * n);
    }
    out
}

/// Views of `x` and `w`, made contiguous first if a stride is negative.
fn with_views<R>(x: &FlexTensor, w: &FlexTensor, f: impl FnOnce(View, View) -> R) -> R {
    match (view2(x), view2(w)) {
        (Some(xv), Some(wv)) => f(xv, wv),
        _ => {
            let (x, w) = (x.to_contiguous(), w.to_contiguous());
            f(
                View::rows(f32s(&x), 0, dims::<2>(&x)[1]),
                View::rows(f32s(&w), 0, dims::<2>(&w)[1]),
            )
        }
    }
}

fn linear_forward(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let ([n, inp], [_, out]) = (dims::<2>(x), dims::<2>(w));
    let y = with_views(x, w, |xv, wv| product(xv, wv, (n, out, inp)));
    tensor(y, [n, out])
}

/// `dx = dy · wᵀ`.
fn linear_dx(dy: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let ([n, out], [inp, _]) = (dims::<2>(dy), dims::<2>(w));
    let dx = with_views(dy, w, |dyv, wv| product(dyv, wv.t(), (n, inp, out)));
    tensor(dx, [n, inp])
}

/// Whether a 2-D tensor is stored transposed (column-major).
fn is_col_major(w: &FlexTensor) -> bool {
    matches!(w.layout().strides(), &[1, cs] if cs != 1)
}

/// `dw = xᵀ · dy`, stored in the orientation of `w`'s storage ([`is_col_major`]): a weight
/// held transposed (an LM head tied to the embedding, `[d, V]` over `[V, d]` storage) gets its
/// gradient as `dyᵀ · x` in `[V, d]` storage under the same transposed layout, so that it adds
/// to the embedding's other gradient without a strided pass.
fn linear_dw(x: &FlexTensor, dy: &FlexTensor, col_major: bool) -> FlexTensor {
    let ([n, inp], [_, out]) = (dims::<2>(x), dims::<2>(dy));
    with_views(x, dy, |xv, dyv| {
        if col_major {
            let g = product(dyv.t(), xv, (out, inp, n));
            let t = tensor(g, [out, inp]);
            let layout = t.layout().transpose(0, 1);
            t.with_layout(layout)
        } else {
            tensor(product(xv.t(), dyv, (inp, out, n)), [inp, out])
        }
    })
}

fn gather_rows_forward(table: &FlexTensor, ids: &[u32]) -> FlexTensor {
    let [v, d] = dims::<2>(table);
    let t = f32s(table);
    assert!(ids.iter().all(|&i| (i as usize) < v), "row id out of range");
    let mut out = zeros(ids.len() * d);
    out.par_chunks_mut(d)
        .zip(ids.par_iter())
        .for_each(|(o, &i)| o.copy_from_slice(&t[i as usize * d..(i as usize + 1) * d]));
    tensor(out, [ids.len(), d])
}

/// The table's gradient: zeros except the looked-up rows, which sum their rows of `dy` in
/// order (deterministic). One zeroed allocation (fresh pages from the OS for a large table),
/// where burn's `select` backward zero-fills and then copies its buffer.
fn gather_rows_backward([v, d]: [usize; 2], ids: &[u32], dy: &FlexTensor) -> FlexTensor {
    let dy = f32s(dy);
    let mut g = zeros(v * d);
    for (row, &i) in dy.chunks(d).zip(ids) {
        let dst = &mut g[i as usize * d..(i as usize + 1) * d];
        for (a, b) in dst.iter_mut().zip(row) {
            *a += b;
        }
    }
    tensor(g, [v, d])
}

/// `a + scale·b` into a fresh buffer, written once (no zero-fill) on all of rayon's threads.
fn add_scaled_kernel(a: &FlexTensor, b: &FlexTensor, scale: f32) -> FlexTensor {
    let shape = a.layout().shape().clone();
    assert_eq!(&shape, b.layout().shape(), "add: shapes differ");
    let (xs, ys) = (f32s(a), f32s(b));
    let out: Vec<f32> = xs
        .par_iter()
        .zip(ys)
        .with_min_len(ELEMS_PER_TASK)
        .map(|(&x, &y)| x + scale * y)
        .collect();
    FlexTensor::from_data(TensorData::new(out, shape))
}

/// `scale·x` into a fresh buffer.
fn scale_kernel(x: &FlexTensor, scale: f32) -> FlexTensor {
    let out: Vec<f32> = f32s(x)
        .par_iter()
        .with_min_len(ELEMS_PER_TASK)
        .map(|&v| scale * v)
        .collect();
    FlexTensor::from_data(TensorData::new(out, x.layout().shape().clone()))
}

/// Elements per rayon task for the optimizer's passes over whole parameters.
const OPTIM_ELEMS_PER_TASK: usize = 1 << 15;

/// `t` as a contiguous tensor that owns its storage alone (so it can be written in place):
/// itself when it already is, else a copy.
fn exclusive(t: FlexTensor) -> FlexTensor {
    let whole = t
        .as_slice::<f32>()
        .is_some_and(|s| s.len() == t.storage::<f32>().len());
    if whole && t.is_unique() {
        t
    } else {
        let data = match t.as_slice::<f32>() {
            Some(s) => s.to_vec(),
            None => f32s(&t.to_contiguous()).to_vec(),
        };
        FlexTensor::from_data(TensorData::new(data, t.layout().shape().clone()))
    }
}

/// AdamW on one parameter in a single pass over `p`, `g`, `m`, `v` (burn's AdamW does a dozen
/// element-wise tensor ops, each a full pass with its own output), in burn's operation order.
fn adamw_kernel(
    p: FlexTensor,
    g: &FlexTensor,
    m: FlexTensor,
    v: FlexTensor,
    h: AdamWStep,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (mut p, mut m, mut v) = (exclusive(p), exclusive(m), exclusive(v));
    let gs = f32s(g);
    let n = gs.len();
    let ps = p.try_storage_mut::<f32>().expect("exclusive");
    let ms = m.try_storage_mut::<f32>().expect("exclusive");
    let vs = v.try_storage_mut::<f32>().expect("exclusive");
    assert!(
        ps.len() == n && ms.len() == n && vs.len() == n,
        "adamw: parameter, gradient and moments differ in size"
    );
    let (f1, f2) = (1.0 - h.beta_1, 1.0 - h.beta_2);
    ps.par_chunks_mut(OPTIM_ELEMS_PER_TASK)
        .zip(ms.par_chunks_mut(OPTIM_ELEMS_PER_TASK))
        .zip(vs.par_chunks_mut(OPTIM_ELEMS_PER_TASK))
        .zip(gs.par_chunks(OPTIM_ELEMS_PER_TASK))
        .for_each(|(((p, m), v), g)| {
            for i in 0..g.len() {
                let gi = g[i] * h.grad_scale;
                let mi = m[i] * h.beta_1 + gi * f1;
                let vi = v[i] * h.beta_2 + gi * gi * f2;
                m[i] = mi;
                v[i] = vi;
                let delta = (mi / h.bias_1) / ((vi / h.bias_2).sqrt() + h.eps);
                p[i] = p[i] * h.decay - delta * h.lr;
            }
        });
    (p, m, v)
}

/// `Σ x²` with a fixed summation order (per-task `f64` partials added in task order).
fn sum_squares_kernel(xs: &[f32]) -> f64 {
    let parts: Vec<f64> = xs
        .par_chunks(OPTIM_ELEMS_PER_TASK)
        .map(|c| {
            // Eight lanes of f64 partial sums keep the loop vectorisable.
            let mut acc = [0f64; 8];
            let mut it = c.chunks_exact(8);
            for w in &mut it {
                for (a, &x) in acc.iter_mut().zip(w) {
                    *a += (x as f64) * (x as f64);
                }
            }
            let tail: f64 = it
                .remainder()
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum();
            acc.iter().sum::<f64>() + tail
        })
        .collect();
    parts.iter().sum()
}

/// One task's geometry (sequence `seq`, KV head `j`): the packed rows of its queries, the packed
/// row ranges of its keys (the ancestors' rows, root first, then its own), and the position of
/// its first query (the ancestors' total length). Key `c` of the task sits at position `c`.
#[derive(Debug, Clone)]
struct TaskGeom {
    own: std::ops::Range<usize>,
    keys: Vec<std::ops::Range<usize>>,
    off: usize,
}

impl TaskGeom {
    fn of(layout: &AttnLayout, seq: usize) -> TaskGeom {
        let mut chain = vec![seq];
        let mut at = seq;
        while let Some(p) = layout.seqs[at].parent {
            chain.push(p);
            at = p;
        }
        chain.reverse();
        let keys: Vec<_> = chain
            .iter()
            .map(|&c| layout.seqs[c].start..layout.seqs[c].start + layout.seqs[c].len)
            .collect();
        let off = keys[..keys.len() - 1].iter().map(|r| r.len()).sum();
        TaskGeom {
            own: keys[keys.len() - 1].clone(),
            keys,
            off,
        }
    }

    /// Keys (= positions) the task's queries can see: `off + own.len()`.
    fn kn(&self) -> usize {
        self.off + self.own.len()
    }
}

/// What the attention backward needs, per task (sequence `i`, KV head `j`, in task order
/// `i·K + j`): the task's `G = H/K` query heads *interleaved* by position — row `r·G + hg` is
/// query head `j·G + hg` at its `r`-th own position — so the rows of a causal block for all `G`
/// heads that share the KV head are one contiguous `[bm·G, hd]` matrix (one GEMM instead of `G`).
#[derive(Debug, Clone)]
struct AttnTask {
    /// `[L·G, hd]` interleaved, RoPE applied (`L` = own rows).
    q: Vec<f32>,
    /// `[kn, hd]`: the keys it sees (ancestors', then own), RoPE applied.
    k: Vec<f32>,
    /// `[L·G, hd]` interleaved.
    o: Vec<f32>,
    /// `[L·G]`.
    lse: Vec<f32>,
}

#[derive(Debug, Clone)]
struct AttnSaved {
    layout: AttnLayout,
    /// Per sequence (tasks `i·K..(i+1)·K`).
    geoms: Vec<TaskGeom>,
    /// [`row_owners`] of the layout.
    owner: Vec<(usize, usize)>,
    hd: usize,
    tasks: Vec<AttnTask>,
    /// `[n, K·hd]` (projection layout).
    v: FlexTensor,
    /// The output, `[n, H·hd]`.
    out: FlexTensor,
}

/// For each of `n` packed rows, its sequence and its index among that sequence's own rows;
/// checks the layout on the way: every row belongs to exactly one sequence, and a parent
/// precedes its children in the list (so ancestor chains end).
fn row_owners(layout: &AttnLayout, n: usize) -> Vec<(usize, usize)> {
    let mut owner = vec![None; n];
    for (i, s) in layout.seqs.iter().enumerate() {
        assert!(
            s.start + s.len <= n,
            "attention layout: rows past the input"
        );
        if let Some(p) = s.parent {
            assert!(
                p < i,
                "attention layout: a parent must precede its children"
            );
        }
        for (r, o) in owner[s.start..s.start + s.len].iter_mut().enumerate() {
            assert!(o.is_none(), "attention layout: a row in two sequences");
            *o = Some((i, r));
        }
    }
    owner
        .into_iter()
        .map(|o| o.expect("attention layout: a row in no sequence"))
        .collect()
}

/// Per-task `[L·G, hd]` buffers (interleaved as in [`AttnTask`]) → projection layout
/// `[n, K·G·hd]`: own row `r` of task `(i, j)` is packed row `start_i + r`, columns
/// `j·G·hd..(j+1)·G·hd`, one contiguous copy.
fn tasks_to_rows<'a>(
    owner: &[(usize, usize)],
    part: impl Fn(usize) -> &'a [f32] + Sync,
    (kv, group, hd): (usize, usize, usize),
) -> FlexTensor {
    let w = kv * group * hd;
    let n = owner.len();
    let mut out = zeros(n * w);
    out.par_chunks_mut(w).enumerate().for_each(|(row, o)| {
        let (i, r) = owner[row];
        for j in 0..kv {
            let src = part(i * kv + j);
            let at = r * group * hd;
            o[j * group * hd..(j + 1) * group * hd].copy_from_slice(&src[at..at + group * hd]);
        }
    });
    tensor(out, [n, w])
}

/// Positions per causal block: small enough to skip most of the masked triangle (at 288
/// tokens the products cover 56 % of the full square); with the `G` query heads of a KV head
/// stacked, a block is `32·G` GEMM rows, and its scores `[32·G, s]` stay in L2.
const ATTN_BLOCK: usize = 32;

/// Query-row blocks `[r0, r1)` of a sequence with `l` own rows.
fn causal_blocks(l: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..l.div_ceil(ATTN_BLOCK)).map(move |b| (b * ATTN_BLOCK, ((b + 1) * ATTN_BLOCK).min(l)))
}

/// Copies the `hd` columns of KV head `j` of the task's key rows (ancestors', then own) out of
/// a projection-layout `[n, K·hd]` buffer into `dst` `[kn, hd]`, rotated by RoPE at positions
/// `0..kn` when `rotate`.
fn gather_keys(
    src: &[f32],
    geom: &TaskGeom,
    (kv, j, hd): (usize, usize, usize),
    rope: Option<(&[f32], &[f32])>,
    dst: &mut [f32],
) {
    let half = hd / 2;
    let mut pos = 0;
    for range in &geom.keys {
        let len = range.len();
        let d = &mut dst[pos * hd..(pos + len) * hd];
        let s = &src[range.start * kv * hd + j * hd..];
        match rope {
            Some((cos, sin)) => rotate_rows(
                s,
                kv * hd,
                d,
                (hd, 1),
                &cos[pos * half..],
                &sin[pos * half..],
            ),
            None => {
                for (r, row) in d.chunks_mut(hd).enumerate() {
                    row.copy_from_slice(&s[r * kv * hd..r * kv * hd + hd]);
                }
            }
        }
        pos += len;
    }
}

fn attn_forward(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, layout: AttnLayout) -> AttnSaved {
    let (hh, kv, theta) = (layout.heads, layout.kv_heads, layout.theta);
    let [n, qw] = self::dims::<2>(q);
    assert!(kv > 0 && hh.is_multiple_of(kv) && qw.is_multiple_of(hh));
    let (hd, g) = (qw / hh, hh / kv);
    assert_eq!(self::dims::<2>(k), [n, kv * hd], "attention: k shape");
    assert_eq!(self::dims::<2>(v), [n, kv * hd], "attention: v shape");
    let owner = row_owners(&layout, n);
    let geoms: Vec<TaskGeom> = (0..layout.seqs.len())
        .map(|i| TaskGeom::of(&layout, i))
        .collect();
    let max_pos = geoms.iter().map(TaskGeom::kn).max().unwrap_or(0);
    let (qs, ks, vs) = (f32s(q), f32s(k), f32s(v));
    let (cos, sin) = rope_tables(max_pos, hd, theta);
    let half = hd / 2;
    let scale = 1.0 / (hd as f32).sqrt();
    let tasks: Vec<AttnTask> = (0..geoms.len() * kv)
        .into_par_iter()
        .map(|task| {
            let (i, j) = (task / kv, task % kv);
            let geom = &geoms[i];
            let (l, off, kn) = (geom.own.len(), geom.off, geom.kn());
            let mut kt = zeros(kn * hd);
            gather_keys(ks, geom, (kv, j, hd), Some((&cos, &sin)), &mut kt);
            let mut vt = zeros(kn * hd);
            gather_keys(vs, geom, (kv, j, hd), None, &mut vt);
            let mut qt = zeros(l * g * hd);
            rotate_rows(
                &qs[geom.own.start * hh * hd + j * g * hd..],
                hh * hd,
                &mut qt,
                (hd, g),
                &cos[off * half..],
                &sin[off * half..],
            );
            let mut ot = zeros(l * g * hd);
            let mut lt = zeros(l * g);
            // The block's scores, row `lr` = query row `r0·G + lr`, keys at stride `kn`.
            let mut p = vec![0f32; ATTN_BLOCK.min(l) * g * kn];
            // Own query rows in blocks: block [r0, r1) only needs keys 0..off + r1 (causal),
            // so the masked upper triangle is never multiplied; its G heads are the rows
            // r0·G..r1·G.
            for (r0, r1) in causal_blocks(l) {
                let (rows, kb) = ((r1 - r0) * g, off + r1);
                // scores = q kᵀ for those rows, keys 0..off + r1
                matmul(
                    &mut p,
                    kn,
                    View::rows(&qt, r0 * g * hd, hd),
                    View::rows(&kt, 0, hd).t(),
                    (rows, kb, hd),
                    false,
                );
                for (lr, row) in (r0 * g..r1 * g).enumerate() {
                    let r = off + row / g;
                    let prow = &mut p[lr * kn..lr * kn + kb];
                    let live = &mut prow[..=r];
                    let mut m = f32::NEG_INFINITY;
                    for x in live.iter_mut() {
                        *x *= scale;
                        m = m.max(*x);
                    }
                    for x in live.iter_mut() {
                        *x -= m;
                    }
                    exp_in_place(live);
                    let sum = live.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
                    let inv = 1.0 / sum;
                    for x in live.iter_mut() {
                        *x *= inv;
                    }
                    prow[r + 1..].fill(0.0);
                    lt[row] = m + sum.ln();
                }
                matmul(
                    &mut ot[r0 * g * hd..r1 * g * hd],
                    hd,
                    View::rows(&p, 0, kn),
                    View::rows(&vt, 0, hd),
                    (rows, hd, kb),
                    false,
                );
            }
            AttnTask {
                q: qt,
                k: kt,
                o: ot,
                lse: lt,
            }
        })
        .collect();
    let out = tasks_to_rows(&owner, |t| &tasks[t].o, (kv, g, hd));
    AttnSaved {
        layout,
        geoms,
        owner,
        hd,
        tasks,
        v: v.clone(),
        out,
    }
}

fn attn_backward(st: &AttnSaved, dout: &FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
    let layout = &st.layout;
    let (hh, kv, theta) = (layout.heads, layout.kv_heads, layout.theta);
    let (hd, g) = (st.hd, hh / kv);
    let (dos, vs) = (f32s(dout), f32s(&st.v));
    let [n, _] = self::dims::<2>(&st.v);
    let geoms = &st.geoms;
    let max_pos = geoms.iter().map(TaskGeom::kn).max().unwrap_or(0);
    let (cos, sin) = rope_tables(max_pos, hd, theta);
    let half = hd / 2;
    let scale = 1.0 / (hd as f32).sqrt();
    // Per task: dQ of its own rows, dK / dV of every key it sees (ancestors' rows included).
    let grads: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..geoms.len() * kv)
        .into_par_iter()
        .map(|task| {
            let (i, j) = (task / kv, task % kv);
            let geom = &geoms[i];
            let (l, off, kn) = (geom.own.len(), geom.off, geom.kn());
            let t = &st.tasks[task];
            let (kt, qt, ot, lse) = (&t.k, &t.q, &t.o, &t.lse);
            let mut vt = zeros(kn * hd);
            gather_keys(vs, geom, (kv, j, hd), None, &mut vt);
            // dO of the task's heads, interleaved like q.
            let mut dot = zeros(l * g * hd);
            for (r, d) in dot.chunks_mut(g * hd).enumerate() {
                let at = (geom.own.start + r) * hh * hd + j * g * hd;
                d.copy_from_slice(&dos[at..at + g * hd]);
            }
            let mut dqt = zeros(l * g * hd);
            let mut dkt = zeros(kn * hd);
            let mut dvt = zeros(kn * hd);
            // The block's P and dP / dS, row `lr` = query row `r0·G + lr`, keys at stride kn.
            let mut p = vec![0f32; ATTN_BLOCK.min(l) * g * kn];
            let mut dp = vec![0f32; ATTN_BLOCK.min(l) * g * kn];
            for (r0, r1) in causal_blocks(l) {
                let (rows, kb) = ((r1 - r0) * g, off + r1);
                let q_blk = View::rows(qt, r0 * g * hd, hd);
                let do_blk = View::rows(&dot, r0 * g * hd, hd);
                // P = exp(scale·q kᵀ − lse) for the block's rows, keys 0..kb
                matmul(
                    &mut p,
                    kn,
                    q_blk,
                    View::rows(kt, 0, hd).t(),
                    (rows, kb, hd),
                    false,
                );
                for (lr, row) in (r0 * g..r1 * g).enumerate() {
                    let r = off + row / g;
                    let prow = &mut p[lr * kn..lr * kn + kb];
                    let live = &mut prow[..=r];
                    for x in live.iter_mut() {
                        *x = *x * scale - lse[row];
                    }
                    exp_in_place(live);
                    prow[r + 1..].fill(0.0);
                }
                // dV[0..kb] += Pᵀ dO  (dV starts at zero)
                let p_blk = View::rows(&p, 0, kn);
                matmul(&mut dvt, hd, p_blk.t(), do_blk, (kb, hd, rows), true);
                // dP = dO Vᵀ
                matmul(
                    &mut dp,
                    kn,
                    do_blk,
                    View::rows(&vt, 0, hd).t(),
                    (rows, kb, hd),
                    false,
                );
                // dS = P ∘ (dP − rowsum(dO ∘ O)) · scale
                for (lr, row) in (r0 * g..r1 * g).enumerate() {
                    let r = off + row / g;
                    let dor = &dot[row * hd..(row + 1) * hd];
                    let or = &ot[row * hd..(row + 1) * hd];
                    let dsum = dor
                        .iter()
                        .zip(or)
                        .map(|(&a, &b)| f64::from(a * b))
                        .sum::<f64>() as f32;
                    let prow = &p[lr * kn..lr * kn + r + 1];
                    let dprow = &mut dp[lr * kn..lr * kn + kb];
                    for (d, &pv) in dprow[..=r].iter_mut().zip(prow) {
                        *d = pv * (*d - dsum) * scale;
                    }
                    dprow[r + 1..].fill(0.0);
                }
                // dQ = dS K ; dK[0..kb] += dSᵀ Q
                let ds_blk = View::rows(&dp, 0, kn);
                matmul(
                    &mut dqt[r0 * g * hd..r1 * g * hd],
                    hd,
                    ds_blk,
                    View::rows(kt, 0, hd),
                    (rows, hd, kb),
                    false,
                );
                matmul(&mut dkt, hd, ds_blk.t(), q_blk, (kb, hd, rows), true);
            }
            unrotate_rows(&mut dqt, (hd, g), &cos[off * half..], &sin[off * half..]);
            unrotate_rows(&mut dkt, (hd, 1), &cos, &sin);
            (dqt, dkt, dvt)
        })
        .collect();
    let dq = tasks_to_rows(&st.owner, |t| &grads[t].0, (kv, g, hd));
    // dK / dV: each task's keys go back to their packed rows; an ancestor's rows collect the
    // sum over every task that sees them (its own and its descendants'), in task order.
    let w = kv * hd;
    let (mut dk, mut dv) = (zeros(n * w), zeros(n * w));
    for (task, (_, dkt, dvt)) in grads.iter().enumerate() {
        let (i, j) = (task / kv, task % kv);
        let mut pos = 0;
        for range in &geoms[i].keys {
            for (c, row) in range.clone().enumerate() {
                let (src_k, src_v) = (
                    &dkt[(pos + c) * hd..(pos + c + 1) * hd],
                    &dvt[(pos + c) * hd..(pos + c + 1) * hd],
                );
                let at = row * w + j * hd;
                for (d, s) in dk[at..at + hd].iter_mut().zip(src_k) {
                    *d += s;
                }
                for (d, s) in dv[at..at + hd].iter_mut().zip(src_v) {
                    *d += s;
                }
            }
            pos += range.len();
        }
    }
    (dq, tensor(dk, [n, w]), tensor(dv, [n, w]))
}

// ---------------------------------------------------------------------------------------------
// Vectorised exp.
// ---------------------------------------------------------------------------------------------

/// `e^x` for every element, in place: Cephes' range reduction and degree-6 polynomial
/// (≤ 2 ulp on the clamped range), branch-free so the loop vectorises; AVX2 + FMA when the
/// CPU has them. Inputs below −87.3 give ≈ 1e-38 instead of 0 (also for −∞), above 88.7 a
/// large finite value.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd_available() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 and FMA are present (checked above), the only requirement of the
        // `target_feature` function; it touches `xs` through safe slice code.
        unsafe {
            exp_avx2(xs)
        };
        return;
    }
    exp_portable(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(xs: &mut [f32]) {
    exp_portable(xs)
}

#[inline(always)]
fn exp_portable(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    for x in xs.iter_mut() {
        let v = x.clamp(-87.336_55, 88.722_83);
        let t = v * LOG2E + MAGIC;
        let nf = t - MAGIC;
        let r = v - nf * LN2_HI - nf * LN2_LO;
        let r2 = r * r;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        let p = p * r2 + r + 1.0;
        let n = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
        let scale = f32::from_bits(((n + 127) << 23) as u32);
        *x = p * scale;
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;

    fn vals(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    /// Equal up to f32 summation order: within 1e-5 of the larger magnitude (the sums here
    /// have at most 11 terms of magnitude ≤ 1; a slicing fault moves a value by its own size).
    fn close(a: &[f32], b: &[f32]) -> bool {
        let scale = a.iter().chain(b).fold(1e-30f32, |m, v| m.max(v.abs()));
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * scale)
    }

    /// Slicing the head's rows changes nothing: log-probs, `dh` and `dw` (row-major and
    /// transposed storage) equal the one-slice computation, which equals the unfused maths.
    #[test]
    fn head_slices_agree_with_whole_logits() {
        let (n, d, v) = (7usize, 5usize, 11usize);
        let h = tensor(vals(n * d, 1), [n, d]);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 3) % v as u32).collect();
        let dlp = tensor(vals(n, 7), [n]);
        for col_major in [false, true] {
            let w = if col_major {
                let t = tensor(vals(v * d, 3), [v, d]);
                let l = t.layout().transpose(0, 1);
                t.with_layout(l)
            } else {
                tensor(vals(d * v, 3), [d, v])
            };
            let whole = head_forward_in(&h, &w, &targets, 0.7, n);
            // Reference: whole logits, then the target log-softmax.
            let z = tensor(head_logits(&h, &w, 0..n, 0.7), [n, v]);
            let (lp_ref, _) = logprobs_forward(&z, &targets);
            assert_eq!(f32s(&whole.0), f32s(&lp_ref));
            let st = |lse: Vec<f32>| HeadSaved {
                h: h.clone(),
                w: w.clone(),
                lse,
                targets: targets.clone(),
                temperature: 0.7,
            };
            let (dh1, dw1) = head_backward_in(&st(whole.1.clone()), &dlp, (true, true), n);
            for step in [1, 2, 3] {
                let part = head_forward_in(&h, &w, &targets, 0.7, step);
                assert_eq!(f32s(&part.0), f32s(&whole.0), "step {step}");
                let (dh, dw) = head_backward_in(&st(part.1), &dlp, (true, true), step);
                let close_t = |a: &FlexTensor, b: &FlexTensor| {
                    close(f32s(&a.to_contiguous()), f32s(&b.to_contiguous()))
                };
                assert!(
                    close_t(dh.as_ref().unwrap(), dh1.as_ref().unwrap()),
                    "dh, step {step}"
                );
                assert!(
                    close_t(dw.as_ref().unwrap(), dw1.as_ref().unwrap()),
                    "dw, step {step}"
                );
            }
            // dh against the unfused backward: dz · wᵀ.
            let dz = logprobs_backward(&z, &whole.1, &targets, &dlp);
            let dzs: Vec<f32> = f32s(&dz).iter().map(|x| x / 0.7).collect();
            let dh_ref = linear_dx(&tensor(dzs, [n, v]), &w);
            assert!(close(f32s(&dh1.unwrap()), f32s(&dh_ref)));
            assert_eq!(is_col_major(dw1.as_ref().unwrap()), col_major);
        }
    }
}
