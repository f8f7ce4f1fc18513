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

/// Engine knobs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineOptions {
    /// Most requests decoded together (larger batches are split).
    pub max_batch: usize,
    /// Prompt tokens processed per prefill step (bounds attention memory).
    pub prefill_chunk: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch: 8,
            prefill_chunk: 512,
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

    /// [`BurnLm::load`], choosing whether decode-sized products (≤ 16 rows) on `flex`
    /// multiply directly on a GGUF file's Q4_0 / Q4_1 / Q8_0 blocks (`host_kernels`; about
    /// 100 MB read per token for SmolLM2-135M instead of the f32 copy's 540 MB). Results
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
        let chunk = self.options.prefill_chunk.max(1);
        let mut logits = None;
        let mut at = 0;
        while at < plen {
            let e = (at + chunk).min(plen);
            let part: Vec<Vec<u32>> = padded.iter().map(|r| r[at..e].to_vec()).collect();
            logits = Some(forward_chunk(
                &self.cfg,
                &weights,
                &part,
                &pads,
                &mut cache,
                false,
                &self.device,
            ));
            at = e;
        }
        let mut logits = to_rows(logits.expect("prompt is non-empty"), active.len())?;
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
