//! [`BurnLm`]: loading, batched lockstep generation, and the [`LanguageModel`] impl.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use burn::tensor::Device;
use memfactory_core::{
    ChatMessage, Error, Finish, GenRequest, Generation, LanguageModel, Prompt, Result,
};

use crate::forward::{KvCache, forward_chunk};
use crate::gguf::Gguf;
use crate::model::{Fused, GgufSource, ModelConfig, RandomSource, SafetensorsSource};
use crate::sampling::Sampler;
use crate::tokenizer::TextTokenizer;

/// Most rows (batch × positions) of one prefill chunk on `flex`: a long prompt in a large
/// batch is prefilled in chunks of `PREFILL_MAX_ROWS / batch` positions (at most
/// [`EngineOptions::prefill_chunk`]), which bounds the chunk's activations (a batch of 8
/// 512-token prompts in one chunk held ~75 MB of them) at no measurable cost in speed.
const PREFILL_MAX_ROWS: usize = 2048;

/// Engine knobs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineOptions {
    /// Most requests decoded together (larger batches are split).
    pub max_batch: usize,
    /// Prompt tokens processed per prefill step (bounds attention memory).
    pub prefill_chunk: usize,
    /// Prefill a prompt prefix shared by several requests of one batch once and copy its
    /// keys and values into each sequence's cache (a GRPO group's G identical prompts, or
    /// one instruction before different questions); see [`share_plan`]. Off: every row is
    /// prefilled in full, as before.
    #[serde(default = "default_true")]
    pub prefix_sharing: bool,
    /// Fewest shared prompt tokens worth sharing (shorter common prefixes are prefilled per
    /// row).
    #[serde(default = "default_prefix_min")]
    pub prefix_min_tokens: usize,
}

fn default_true() -> bool {
    true
}

fn default_prefix_min() -> usize {
    32
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch: 8,
            prefill_chunk: 512,
            prefix_sharing: true,
            prefix_min_tokens: default_prefix_min(),
        }
    }
}

/// The native burn language model.
pub struct BurnLm {
    pub(crate) cfg: ModelConfig,
    /// Inference weights; replaced whole by [`BurnLm::set_weights`] after a training step
    /// (each generation call works on one snapshot).
    pub(crate) weights: RwLock<Arc<Fused>>,
    pub(crate) tok: TextTokenizer,
    pub(crate) device: Device,
    device_name: String,
    path: PathBuf,
    /// Engine knobs (public so callers can tune batch size and prefill chunking).
    pub options: EngineOptions,
    /// Prompt positions whose prefill was shared (see [`BurnLm::shared_prefill_positions`]).
    shared_positions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for BurnLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The burn device named `name`: `flex` (CPU), `wgpu` or `cuda` when those features are on.
pub fn parse_device(name: &str) -> std::result::Result<Device, String> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        // Reached only for a device whose feature is off (with a feature on, its arm above
        // matches first).
        #[allow(unreachable_patterns)]
        "wgpu" | "cuda" => Err(format!(
            "device `{name}` needs memfactory-lm-burn's Cargo feature `{name}` (this build lacks it)"
        )),
        other => Err(format!(
            "unknown device `{other}` (expected flex, wgpu or cuda)"
        )),
    }
}

/// Whether [`BurnLm::load`] uses the host block kernels: on unless the environment variable
/// `MEMFACTORY_BURN_HOST_KERNELS` is `0`.
pub fn host_kernels_default() -> bool {
    std::env::var_os("MEMFACTORY_BURN_HOST_KERNELS").is_none_or(|v| v != "0")
}

impl BurnLm {
    /// Loads a model from a `.gguf` file or a Hugging Face directory (`config.json`,
    /// `model.safetensors[.index.json]`, `tokenizer.json`, `tokenizer_config.json`) onto
    /// device `device` (`"flex"`, `"wgpu"`, `"cuda"`).
    pub fn load(path: &Path, device: &str) -> Result<BurnLm> {
        Self::load_with(path, device, host_kernels_default())
    }

    /// [`BurnLm::load`], choosing whether a GGUF file's Q4_0 / Q4_1 / Q8_0 weights stay in
    /// their blocks on `flex` (`host_kernels`): decode-sized products (≤ 16 rows) multiply
    /// on the blocks directly (about 100 MB read per token for SmolLM2-135M instead of an f32
    /// copy's 540 MB), gemm-sized ones dequantize tiles of them, and no f32 copy is kept
    /// (SmolLM2's peak memory at batch 8 after 512 tokens: 0.53 GiB instead of 1.3). Results
    /// equal the f32 path up to summation order. Ignored for other devices and formats.
    pub fn load_with(path: &Path, device: &str, host_kernels: bool) -> Result<BurnLm> {
        let dev = parse_device(device).map_err(Error::Invalid)?;
        let (cfg, weights, tok) = if path.is_dir() {
            let (cfg, tok) = hf_dir_config(path)?;
            let mut src = SafetensorsSource::open(path)?;
            let w = Fused::load(&mut src, &cfg, &dev, false)?;
            (cfg, w, tok)
        } else {
            let (g, buf) = Gguf::open(path)?;
            let cfg = ModelConfig::from_gguf(&g, path)?;
            let tok = TextTokenizer::from_gguf(&g, path)?;
            let mut src = GgufSource {
                g: &g,
                buf: &buf,
                path: path.to_path_buf(),
                cfg: cfg.clone(),
            };
            let host = host_kernels && (device == "flex" || device == "cpu");
            let w = Fused::load(&mut src, &cfg, &dev, host)?;
            (cfg, w, tok)
        };
        Self::assemble(path, device, dev, cfg, weights, tok)
    }

    fn assemble(
        path: &Path,
        device: &str,
        dev: Device,
        cfg: ModelConfig,
        weights: Fused,
        tok: TextTokenizer,
    ) -> Result<BurnLm> {
        if tok.vocab_size() > cfg.vocab {
            return Err(Error::model(
                path.to_path_buf(),
                format!(
                    "tokenizer has {} tokens but the embedding only {}",
                    tok.vocab_size(),
                    cfg.vocab
                ),
            ));
        }
        Ok(BurnLm {
            cfg,
            weights: RwLock::new(Arc::new(weights)),
            tok,
            device: dev,
            device_name: device.to_string(),
            path: path.to_path_buf(),
            options: EngineOptions::default(),
            shared_positions: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A model with the architecture and tokenizer of the Hugging Face directory `dir`
    /// (`config.json`, `tokenizer.json`; no weight files needed) and random weights:
    /// every matrix drawn from N(0, `initializer_range`²) (default 0.02) by a ChaCha8
    /// stream seeded from `seed` and the tensor's name, norms 1, biases 0. For fast tests of
    /// the whole training loop and for pre-training experiments.
    pub fn random(dir: &Path, device: &str, seed: u64) -> Result<BurnLm> {
        let dev = parse_device(device).map_err(Error::Invalid)?;
        if !dir.is_dir() {
            return Err(Error::model(
                dir.to_path_buf(),
                "random initialisation needs a model directory with config.json and tokenizer.json",
            ));
        }
        let (cfg, tok) = hf_dir_config(dir)?;
        let cj = dir.join("config.json");
        let std = std::fs::read_to_string(&cj)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|j| {
                j.get("initializer_range")
                    .and_then(serde_json::Value::as_f64)
            })
            .unwrap_or(0.02) as f32;
        let mut src = RandomSource {
            seed,
            std,
            path: dir.to_path_buf(),
        };
        let weights = Fused::load(&mut src, &cfg, &dev, false)?;
        Self::assemble(dir, device, dev, cfg, weights, tok)
    }

    /// Prompt positions (summed over rows and calls) that were not prefilled row by row
    /// because their keys and values were copied from a prefix prefilled once
    /// ([`EngineOptions::prefix_sharing`]), minus the positions of those shared prefills.
    /// Lets tests and benches see that sharing happened.
    pub fn shared_prefill_positions(&self) -> u64 {
        self.shared_positions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The tokenizer (with chat template and special tokens).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tok
    }

    /// The burn device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Renders `messages` with the model's chat template, plus the assistant generation
    /// prompt when `add_generation_prompt`.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.tok.render_chat(messages, add_generation_prompt)
    }

    /// Sets the extra chat-template variables of every later render (the recipe's
    /// `chat_template_kwargs`; see [`crate::tokenizer::TextTokenizer::template_kwargs`]) and
    /// returns the names the model's template never reads (passing them changes nothing).
    pub fn set_template_kwargs(
        &mut self,
        kwargs: serde_json::Map<String, serde_json::Value>,
    ) -> Vec<String> {
        let ignored = crate::tokenizer::ignored_template_kwargs(self.tok.template(), &kwargs);
        self.tok.template_kwargs = kwargs;
        ignored
    }

    /// Greedy chat reply to one user message (convenience for CLIs and smoke tests).
    pub fn chat(&self, user: &str, max_new_tokens: usize) -> Result<String> {
        let req = GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user(user)]),
            params: memfactory_core::SamplingParams::greedy(max_new_tokens),
        };
        Ok(self.generate(&[req])?.remove(0).text)
    }

    /// Next-token logits at every position of each row of `rows` (run as one left-padded
    /// batch, like generation's prefill): `out[row][pos][vocab]`. Used by parity tests and
    /// scoring.
    pub fn batch_logits(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        for r in rows {
            if r.is_empty() {
                return Err(Error::Invalid("empty row".into()));
            }
            self.check_ids(r)?;
        }
        let weights = self.weights();
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let pads: Vec<usize> = rows.iter().map(|r| len - r.len()).collect();
        let padded: Vec<Vec<u32>> = rows
            .iter()
            .zip(&pads)
            .map(|(r, &p)| {
                let mut v = vec![0u32; p];
                v.extend(r);
                v
            })
            .collect();
        let mut cache = KvCache::new(&self.cfg, rows.len(), len, &self.device)?;
        let l = forward_chunk(
            &self.cfg,
            &weights,
            &padded,
            &pads,
            &mut cache,
            true,
            &self.device,
        );
        let flat = to_rows(l, rows.len() * len)?;
        Ok(pads
            .iter()
            .enumerate()
            .map(|(i, &p)| flat[i * len + p..(i + 1) * len].to_vec())
            .collect())
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab
            )));
        }
        Ok(())
    }

    /// How many weight matrices of the current inference weights decode-sized products
    /// read as GGUF blocks (with any LoRA branches beside them) rather than as f32 copies;
    /// 0 where every product reads f32. For tests and logs.
    pub fn block_weights(&self) -> usize {
        let w = self.weights();
        let host = |s: &crate::model::Split| usize::from(s.host.is_some());
        host(&w.lm_head)
            + w.layers
                .iter()
                .map(|l| host(&l.wqkv) + host(&l.wo) + host(&l.wgu) + host(&l.wdown))
                .sum::<usize>()
    }

    /// The current inference weights (a snapshot: a concurrent `set_weights` does not
    /// change them under a running generation).
    pub(crate) fn weights(&self) -> Arc<Fused> {
        match self.weights.read() {
            Ok(w) => Arc::clone(&w),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Tokens each request may generate: its `max_new_tokens`, at most what is left of the
    /// context after its prompt. A prompt that leaves no room for one token (when tokens
    /// are asked for) is an error naming both sizes.
    fn budgets(&self, reqs: &[GenRequest], prompts: &[Vec<u32>]) -> Result<Vec<usize>> {
        let context = self.cfg.max_positions;
        reqs.iter()
            .zip(prompts)
            .map(|(r, p)| {
                let want = r.params.max_new_tokens;
                if want > 0 && p.len() >= context {
                    return Err(Error::Invalid(format!(
                        "a prompt of {} tokens leaves no room in the model's context of \
                         {context} tokens ({}); shorten the prompts (e.g. smaller chunks)",
                        p.len(),
                        self.path.display()
                    )));
                }
                Ok(want.min(context.saturating_sub(p.len())))
            })
            .collect()
    }

    /// Chunked prefill of the left-padded rows `padded` (all of one length) from cache
    /// position `from` (positions before it already in `cache`) to their end; the logits of
    /// each row's last position.
    fn prefill(
        &self,
        weights: &Fused,
        padded: &[Vec<u32>],
        pads: &[usize],
        cache: &mut KvCache,
        from: usize,
    ) -> Result<burn::tensor::Tensor<2>> {
        let plen = padded.first().map_or(0, Vec::len);
        let mut chunk = self.options.prefill_chunk.max(1);
        if self.device == Device::flex() {
            // A chunk's activations grow with batch × positions: bound the rows.
            chunk = chunk.min((PREFILL_MAX_ROWS / padded.len().max(1)).max(1));
        }
        let mut logits = None;
        cache.len = from;
        let mut at = from;
        while at < plen {
            let e = (at + chunk).min(plen);
            let part: Vec<Vec<u32>> = padded.iter().map(|r| r[at..e].to_vec()).collect();
            logits = Some(forward_chunk(
                &self.cfg,
                weights,
                &part,
                pads,
                cache,
                false,
                &self.device,
            ));
            at = e;
        }
        logits.ok_or_else(|| Error::Invalid("nothing to prefill".into()))
    }

    /// Prefills the prefixes that rows of the batch share ([`share_plan`]) once, as one
    /// left-padded batch of the distinct prefixes, and copies each into its rows' caches at
    /// their own left padding (`pads`). Returns the cache position from which every row still
    /// needs its own prefill (the smallest of pad + shared length over the rows), or 0 when
    /// nothing is shared or sharing would save fewer than `prefix_min_tokens` positions.
    fn prefill_shared(
        &self,
        weights: &Fused,
        rows: &[&[u32]],
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<usize> {
        let plan = share_plan(rows, self.options.prefix_min_tokens.max(1));
        let groups: Vec<(usize, usize)> = {
            let mut g: Vec<(usize, usize)> = Vec::new();
            for s in plan.iter().flatten() {
                if !g.iter().any(|&(r, _)| r == s.0) {
                    g.push(*s);
                }
            }
            g
        };
        let from = plan
            .iter()
            .zip(pads)
            .map(|(s, &p)| p + s.map_or(0, |s| s.1))
            .min()
            .unwrap_or(0);
        if groups.is_empty() || from < self.options.prefix_min_tokens.max(1) {
            return Ok(0);
        }
        let lmax = groups.iter().map(|g| g.1).max().unwrap_or(0);
        let gpads: Vec<usize> = groups.iter().map(|g| lmax - g.1).collect();
        let gpadded: Vec<Vec<u32>> = groups
            .iter()
            .zip(&gpads)
            .map(|(&(r, len), &p)| {
                let mut v = vec![0u32; p];
                v.extend(&rows[r][..len]);
                v
            })
            .collect();
        let mut shared = KvCache::new(&self.cfg, groups.len(), lmax, &self.device)?;
        self.prefill(weights, &gpadded, &gpads, &mut shared, 0)?;
        let saved = (from * rows.len()).saturating_sub(lmax * groups.len());
        self.shared_positions
            .fetch_add(saved as u64, std::sync::atomic::Ordering::Relaxed);
        for (row, s) in plan.iter().enumerate() {
            if let Some((leader, len)) = *s {
                let g = groups
                    .iter()
                    .position(|&(r, _)| r == leader)
                    .expect("every leader has a group");
                cache.copy_rows_from(&shared, (g, gpads[g]), (row, pads[row]), len);
            }
        }
        Ok(from)
    }

    fn generate_batch(&self, reqs: &[GenRequest]) -> Result<Vec<Generation>> {
        let weights = self.weights();
        let mut prompts = Vec::with_capacity(reqs.len());
        for r in reqs {
            let mut ids = self.prompt_ids(&r.prompt)?;
            if ids.is_empty() {
                match self.tok.bos_id {
                    Some(b) => ids.push(b),
                    None => {
                        return Err(Error::Invalid(
                            "empty prompt and the model has no BOS token".into(),
                        ));
                    }
                }
            }
            self.check_ids(&ids)?;
            prompts.push(ids);
        }
        let n = reqs.len();
        let mut outs: Vec<Generation> = prompts
            .iter()
            .map(|p| Generation {
                prompt_ids: p.clone(),
                token_ids: Vec::new(),
                logprobs: Vec::new(),
                text: String::new(),
                finish: Finish::Length,
            })
            .collect();
        let mut samplers: Vec<Sampler> = reqs.iter().map(|r| Sampler::new(&r.params)).collect();
        // What each request may generate: `max_new_tokens`, cut where prompt and generated
        // tokens fill the context (generation then stops with finish `length`), so the KV
        // cache never grows past the context whatever `max_new_tokens` says.
        let budget = self.budgets(reqs, &prompts)?;
        // Requests asking for nothing are done already.
        let mut active: Vec<usize> = (0..n).filter(|&i| budget[i] > 0).collect();
        if active.is_empty() {
            return Ok(outs);
        }
        let plen = active.iter().map(|&i| prompts[i].len()).max().unwrap_or(0);
        let max_new = active.iter().map(|&i| budget[i]).max().unwrap_or(0);
        let mut pads: Vec<usize> = active.iter().map(|&i| plen - prompts[i].len()).collect();
        let mut cache = KvCache::new(&self.cfg, active.len(), plen + max_new, &self.device)?;
        // Batched, chunked prefill of the left-padded prompts.
        let padded: Vec<Vec<u32>> = active
            .iter()
            .zip(&pads)
            .map(|(&i, &p)| {
                let mut v = vec![0u32; p];
                v.extend(&prompts[i]);
                v
            })
            .collect();
        // Shared prefixes: prefilled once, copied into each row's cache; the batched prefill
        // then starts where the first row's own tokens begin.
        let from = if self.options.prefix_sharing {
            let rows: Vec<&[u32]> = active.iter().map(|&i| prompts[i].as_slice()).collect();
            self.prefill_shared(&weights, &rows, &pads, &mut cache)?
        } else {
            0
        };
        let logits = self.prefill(&weights, &padded, &pads, &mut cache, from)?;
        let mut logits = to_rows(logits, active.len())?;
        loop {
            let mut next = Vec::with_capacity(active.len());
            let mut keep = Vec::with_capacity(active.len());
            for (row, &i) in active.iter().enumerate() {
                let (t, lp) = samplers[i].sample(&logits[row]);
                let o = &mut outs[i];
                o.token_ids.push(t);
                o.logprobs.push(lp);
                let params = &reqs[i].params;
                if self.tok.eos_ids.contains(&t) {
                    o.finish = Finish::Eos;
                    continue;
                }
                if !params.stop.is_empty() {
                    let text = self.tok.decode(&o.token_ids)?;
                    if params
                        .stop
                        .iter()
                        .any(|s| !s.is_empty() && text.contains(s.as_str()))
                    {
                        o.finish = Finish::Stop;
                        continue;
                    }
                }
                if o.token_ids.len() >= budget[i] {
                    o.finish = Finish::Length;
                    continue;
                }
                keep.push(row);
                next.push(vec![t]);
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() < active.len() {
                cache.select_rows(&keep, &self.device);
                active = keep.iter().map(|&r| active[r]).collect();
                pads = keep.iter().map(|&r| pads[r]).collect();
            }
            let l = forward_chunk(
                &self.cfg,
                &weights,
                &next,
                &pads,
                &mut cache,
                false,
                &self.device,
            );
            logits = to_rows(l, active.len())?;
        }
        for (o, r) in outs.iter_mut().zip(reqs) {
            let mut text = self.tok.decode(&o.token_ids)?;
            if o.finish == Finish::Stop {
                let cut = r
                    .params
                    .stop
                    .iter()
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| text.find(s.as_str()))
                    .min();
                if let Some(c) = cut {
                    text.truncate(c);
                }
            }
            o.text = text;
        }
        Ok(outs)
    }
}

/// Which rows of a batch share a prompt prefix of at least `min_len` tokens: for each row,
/// `Some((leader, len))` — the group's first row and the number of leading tokens the group
/// shares — or `None`. Rows are sorted by their token ids and partitioned into the runs that
/// save the most prefill positions ([`crate::train::prefix_runs`]); a run of two or more rows
/// shares its longest common prefix, cut one token short of its shortest prompt (every row's
/// last prompt token is always prefilled in the batch, which gives the logits of its first
/// generated token). Identical prompts (a GRPO group) share all but their last token, also
/// when two groups in one batch begin with the same instruction.
pub(crate) fn share_plan(rows: &[&[u32]], min_len: usize) -> Vec<Option<(usize, usize)>> {
    let (order, runs) = crate::train::prefix_runs(rows, min_len);
    let mut plan = vec![None; rows.len()];
    // A run of two or more rows shares at least `min_len` tokens (`prefix_runs` forms no
    // other), so every such run is a sharing group.
    for (a, b, len) in runs {
        if b - a > 1 {
            let run = &order[a..b];
            let leader = run.iter().copied().min().unwrap_or(run[0]);
            for &r in run {
                plan[r] = Some((leader, len));
            }
        }
    }
    plan
}

fn to_vec(t: burn::tensor::Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::backend("burn", format!("reading logits: {e:?}")))
}

fn to_rows(t: burn::tensor::Tensor<2>, b: usize) -> Result<Vec<Vec<f32>>> {
    let v = to_vec(t)?;
    let vocab = v.len() / b.max(1);
    Ok(v.chunks(vocab).map(<[f32]>::to_vec).collect())
}

impl LanguageModel for BurnLm {
    fn describe(&self) -> String {
        format!(
            "burn {:?} ({} layers, d {}) from {} on {}",
            self.cfg.arch,
            self.cfg.layers,
            self.cfg.hidden,
            self.path.display(),
            self.device_name
        )
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tok.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tok.decode(ids)
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Chat(m) => self.tok.encode(&self.tok.render_chat(m, true)?),
            Prompt::Text(t) => self.tok.encode(t),
            Prompt::Tokens(ids) => Ok(ids.clone()),
        }
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.cfg.max_positions)
    }

    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>> {
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(self.options.max_batch.max(1)) {
            out.extend(self.generate_batch(chunk)?);
        }
        Ok(out)
    }
}

/// Config and tokenizer of a Hugging Face model directory.
fn hf_dir_config(path: &Path) -> Result<(ModelConfig, TextTokenizer)> {
    let cj = path.join("config.json");
    let s = std::fs::read_to_string(&cj).map_err(|e| Error::io(&cj, e))?;
    let j: serde_json::Value = serde_json::from_str(&s)
        .map_err(|e| Error::model(cj.clone(), format!("malformed JSON: {e}")))?;
    let cfg = ModelConfig::from_hf_json(&j, &cj)?;
    let eos: Vec<u32> = match j.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    };
    let tok = TextTokenizer::from_hf_dir(path, &eos)?;
    Ok((cfg, tok))
}

#[cfg(test)]
mod tests {
    use super::share_plan;

    #[test]
    fn share_plan_groups_identical_prompts_and_long_common_prefixes() {
        let a: Vec<u32> = (0..40).collect();
        let mut b = a.clone();
        b.extend([7, 8, 9]);
        let mut c: Vec<u32> = (0..35).collect();
        c.push(99);
        let other: Vec<u32> = (100..140).collect();
        // Identical prompts share all but their last token.
        let rows: Vec<&[u32]> = vec![&a, &other, &a, &a];
        assert_eq!(
            share_plan(&rows, 32),
            vec![Some((0, 39)), None, Some((0, 39)), Some((0, 39))]
        );
        // A common prefix of 35 tokens (a, b and c), led by the first row.
        let rows: Vec<&[u32]> = vec![&other, &b, &c, &a];
        assert_eq!(
            share_plan(&rows, 32),
            vec![None, Some((1, 35)), Some((1, 35)), Some((1, 35))]
        );
        // Above 35, c drops out: a and b (a prefix of b) share all of a but its last token.
        assert_eq!(
            share_plan(&rows, 36),
            vec![None, Some((1, 39)), None, Some((1, 39))]
        );
        // Below the threshold nothing is shared; a single row shares nothing.
        assert_eq!(share_plan(&rows, 40), vec![None, None, None, None]);
        let rows: Vec<&[u32]> = vec![&a];
        assert_eq!(share_plan(&rows, 1), vec![None]);
        // A prompt of min_len tokens repeated leaves min_len - 1 to share: not enough.
        let short: Vec<u32> = (0..32).collect();
        let rows: Vec<&[u32]> = vec![&short, &short];
        assert_eq!(share_plan(&rows, 32), vec![None, None]);
        // Two GRPO groups whose prompts share a 40-token instruction: each group shares its
        // whole prompt (all but the last token), not only the instruction with the other.
        let mut g1: Vec<u32> = (0..40).collect();
        g1.extend(200..260);
        let mut g2: Vec<u32> = (0..40).collect();
        g2.extend(300..355);
        let rows: Vec<&[u32]> = vec![&g1, &g2, &g1, &g2, &g1, &g2];
        assert_eq!(
            share_plan(&rows, 32),
            vec![
                Some((0, 99)),
                Some((1, 94)),
                Some((0, 99)),
                Some((1, 94)),
                Some((0, 99)),
                Some((1, 94))
            ]
        );
    }
}
