//! # memfactory-lm-burn
//!
//! The native language-model engine of MemFactory, written on [burn] 0.22. It implements
//! [`memfactory_core::LanguageModel`] for [`BurnLm`] and registers it with the component
//! registry as LM kind **`burn`**, so a recipe selects it with
//!
//! ```toml
//! [lm]
//! kind = "burn"
//! path = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"  # or an HF directory
//! device = "flex"      # flex (CPU, default) | wgpu | cuda (with the crate features)
//! max_batch = 8
//! chat_template_kwargs = { enable_thinking = false }   # optional: extra template variables
//! ```
//!
//! What it does:
//! - reads models from **GGUF** ([`gguf`], dequantizing F32/F16/BF16/Q4_0/Q4_1/Q5_0/Q5_1/
//!   Q8_0/Q4_K/Q5_K/Q6_K with [`quant`]) or from a **Hugging Face directory** (safetensors
//!   F32/F16/BF16, single or sharded);
//! - architectures Llama (SmolLM2), Qwen2/2.5 and Qwen3 as one decoder with a per-arch
//!   [`ModelConfig`];
//! - tokenizer and chat template from GGUF metadata or `tokenizer.json` /
//!   `tokenizer_config.json` ([`tokenizer`]);
//! - prompt prefixes shared within a batch (a GRPO group's identical prompts, a common
//!   instruction) prefilled once and copied into each sequence's KV cache
//!   (`prefix_sharing`, on by default);
//! - on `flex`, every forward chunk as one host loop over the layers (`decode`): a fused
//!   attention over a host KV cache (flash-style blocks on gemm for prefill chunks) and
//!   AVX-512 / AVX2 products on the GGUF's own Q4/Q8 blocks for decode steps, faster than
//!   llama.cpp on the same file at batch 1 and 8 (BENCHMARKS.md); a LoRA policy trained on a
//!   GGUF base decodes on the base's blocks with its adapters beside them;
//! - batched lockstep generation with a preallocated KV cache (reserved fallibly, never past
//!   the model's context: a request stops where prompt and generated tokens fill it), left
//!   padding with per-row positions, greedy / temperature / top-k / top-p sampling from a
//!   per-request ChaCha seed, stop strings, and the log-prob of every sampled token;
//! - a training forward ([`train`]): log-probs of action tokens after a prompt under autodiff,
//!   with LoRA on named projections or full fine-tuning; on `flex` the rows are packed without
//!   padding, a prompt prefix several rows share runs once ([`train::pack`],
//!   [`fused::packed_attention`]), and the LM head's `[rows, vocab]` logits are never kept
//!   ([`fused::head_logprobs`] makes them in slices, and again in the backward pass).
//!
//! Backends: `flex` (pure-Rust CPU, always on), `wgpu` and `cuda` behind the crate features of
//! the same names.
//!
//! Rust API (what the CLI calls):
//! - [`BurnLm::load`]`(path, device)` → a [`BurnLm`] (also a [`LanguageModel`]);
//! - [`BurnLm::render_chat`]`(messages, add_generation_prompt)` → the templated prompt text,
//!   [`BurnLm::chat`]`(user, max_new_tokens)` → a greedy reply;
//! - [`BurnLm::batch_logits`] for scoring / parity checks;
//! - training: [`TrainModel::new`]`(&lm, Some(&LoraConfig))`, [`TrainModel::action_logprobs`],
//!   then [`BurnLm::set_weights`] to sample from the updated policy.
//!
//! Speed (SmolLM2-135M Q4_1 dequantized to f32, 2 CPU cores, `benches/engine.rs`): prefill of
//! 512 tokens ≈ 240 tok/s; decode ≈ 37 tok/s at batch 1 (≈ 30 after a 512-token prompt) and
//! ≈ 87 tok/s aggregate at batch 8. burn's `simd` and `rayon` features must be on for this
//! (this crate enables them).

mod decode;
pub mod engine;
mod forward;
pub mod fused;
pub mod gguf;
mod kernels;
pub mod model;
mod qdot;
pub mod quant;
pub mod sampling;
pub mod tokenizer;
pub mod train;

/// Tunes mimalloc for burn's workloads, where every op allocates a fresh output buffer:
/// freed memory is never purged back to the OS, so the next tensor of the same size reuses
/// pages that are already mapped instead of faulting in (and zeroing) new ones. In a training
/// step on 640-token rows this halved the system time (12 → 6 s of 70 s of CPU). Peak memory is
/// unchanged (the high-water mark stays mapped). Call it first thing in `main` of a binary
/// whose global allocator is `mimalloc::MiMalloc`; without mimalloc it changes nothing.
pub fn tune_allocator() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` only stores an integer option; it is thread-safe and valid to
    // call at any time, before or after the first allocation.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1)
    };
}

pub use engine::{BurnLm, EngineOptions, host_kernels_default, parse_device};
pub use model::{Arch, ModelConfig};
pub use train::{ActionLogprobs, LoraConfig, TrainModel};

use memfactory_core::{Cfg, LanguageModel, Result};

/// Builds the engine from the keys of a recipe's `[model]` table (`kind = "burn"` already
/// read): `path`, `device` (default `flex`), `max_batch` (8), `prefill_chunk` (512),
/// `prefix_sharing` (true: a prompt prefix of at least `prefix_min_tokens` (32) tokens that
/// several requests of one batch share is prefilled once, see [`EngineOptions`]),
/// `host_kernels` (decode on the GGUF blocks, see [`BurnLm::load_with`]; default on),
/// `init_seed` (random weights for a model directory without weight files) and
/// `chat_template_kwargs` (a table of extra chat-template variables, e.g.
/// `{ enable_thinking = false }` to switch Qwen3's thinking off, as HF's
/// `apply_chat_template(**kwargs)` takes them; see
/// [`memfactory_core::lm::template_kwargs_from_cfg`] — a variable the model's template never
/// reads is reported as a warning on stderr naming it). The trainer calls this directly
/// because it needs the concrete engine.
pub fn from_cfg(cfg: &mut Cfg) -> Result<BurnLm> {
    let path: String = cfg.req("path")?;
    let device: String = cfg.get("device", "flex".to_string())?;
    let max_batch: usize =
        cfg.get_checked("max_batch", 8usize, |&b| b > 0, "a positive integer")?;
    let prefill_chunk: usize =
        cfg.get_checked("prefill_chunk", 512usize, |&b| b > 0, "a positive integer")?;
    let prefix_sharing: bool = cfg.get("prefix_sharing", true)?;
    let prefix_min_tokens: usize = cfg.get_checked(
        "prefix_min_tokens",
        32usize,
        |&b| b > 0,
        "a positive integer",
    )?;
    if let Err(m) = parse_device(&device) {
        return Err(cfg.error("device", m));
    }
    if !std::path::Path::new(&path).exists() {
        return Err(cfg.error(
            "path",
            format!("no such file or directory: {path} (a .gguf file or an HF model directory)"),
        ));
    }
    let init_seed: Option<u64> = cfg.opt("init_seed")?;
    let template_kwargs =
        memfactory_core::lm::template_kwargs_from_cfg(cfg, "chat_template_kwargs")?;
    let host_kernels: bool = cfg.get("host_kernels", engine::host_kernels_default())?;
    let p = std::path::Path::new(&path);
    if init_seed.is_some() && !p.is_dir() {
        return Err(cfg.error(
            "init_seed",
            "random initialisation needs `path` to be a model directory (config.json + tokenizer.json)",
        ));
    }
    let mut lm = match init_seed {
        Some(seed) => BurnLm::random(p, &device, seed)?,
        None => BurnLm::load_with(p, &device, host_kernels)?,
    };
    lm.options = EngineOptions {
        max_batch,
        prefill_chunk,
        prefix_sharing,
        prefix_min_tokens,
    };
    let ignored = lm.set_template_kwargs(template_kwargs);
    if !ignored.is_empty() {
        use std::io::Write as _;
        // A closed stderr loses the line; it never fails the build.
        let _ = writeln!(
            std::io::stderr(),
            "warning: {}: the chat template of {path} never reads {} (passing {} changes nothing)",
            cfg.key("chat_template_kwargs"),
            ignored
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if ignored.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(lm)
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn LanguageModel>> {
    Ok(Box::new(from_cfg(cfg)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn LanguageModel> {
        kind: "burn",
        about: "Native burn engine: Llama/Qwen2/Qwen3 from GGUF or HF safetensors, batched KV-cache generation with log-probs, LoRA training forward (flex CPU; wgpu/cuda features)",
        build,
    }
}
