//! Checkpoints: everything needed to continue training exactly where it stopped.
//!
//! A checkpoint is a directory `step-NNNNNN/` (the number of steps done) holding
//! - `trainable.safetensors` — every trainable parameter (LoRA `A`/`B`, or all weights for
//!   full fine-tuning) in module visit order, named `p0000`, `p0001`, …;
//! - `optimizer.bpk` — the AdamW moments and step counts (burn's optimizer record, keyed by
//!   parameter id);
//! - `state.json` — steps and updates done, the parameter ids and shapes, the LoRA settings,
//!   and the caller's own state (the facade stores its data cursor and RNG seeds there).
//!
//! It is written into a temporary sibling directory, every file is synced, and the directory is
//! renamed into place (atomic on POSIX), then the parent is synced: a crash at any moment leaves
//! either the previous checkpoints or the new one complete, never a torn one. Only the last
//! `keep` checkpoints are kept. Frozen base weights are not stored: they come from the model
//! file named by the recipe.
//!
//! On restore the trainable parameters get back their saved values *and* their saved
//! parameter ids, so the optimizer record (keyed by id) attaches to the right tensors.

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};
use memfactory_core::{Error, Result};
use memfactory_lm_burn::{BurnLm, LoraConfig, TrainModel};
use serde::{Deserialize, Serialize};

/// Format version written into `state.json`.
pub const FORMAT: u32 = 1;

const PARAMS_FILE: &str = "trainable.safetensors";
const OPTIM_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";

/// One saved parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamMeta {
    /// burn parameter id (restored so the optimizer record matches).
    pub id: u64,
    /// Shape.
    pub shape: Vec<usize>,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`FORMAT`].
    pub format: u32,
    /// Training steps done.
    pub step: usize,
    /// Optimizer updates done.
    pub updates: usize,
    /// LoRA settings (`None` = full fine-tuning); must match on restore.
    pub lora: Option<LoraConfig>,
    /// Trainable parameters in visit order.
    pub params: Vec<ParamMeta>,
    /// The caller's state (data cursor, seeds, …).
    pub extra: serde_json::Value,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn bad(path: &Path, m: impl Into<String>) -> Error {
    Error::model(path.to_path_buf(), m.into())
}

/// Trainable parameters in visit order: `(id, shape, values)`.
struct Collect(Vec<(u64, Vec<usize>, Vec<f32>)>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        if t.is_require_grad() {
            let shape = t.dims().to_vec();
            let v = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            self.0.push((param.id.val(), shape, v));
        }
    }
}

/// Puts saved values and ids back into the trainable parameters, in visit order.
struct Restore {
    saved: std::vec::IntoIter<(u64, Vec<usize>, Vec<f32>)>,
    error: Option<String>,
}

impl ModuleMapper for Restore {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        if !value.is_require_grad() || self.error.is_some() {
            return Param::from_mapped_value(id, value, mapper);
        }
        let Some((sid, shape, data)) = self.saved.next() else {
            self.error =
                Some("the checkpoint has fewer trainable parameters than the model".into());
            return Param::from_mapped_value(id, value, mapper);
        };
        if shape != value.dims().to_vec() {
            self.error = Some(format!(
                "parameter shape {shape:?} in the checkpoint, {:?} in the model",
                value.dims()
            ));
            return Param::from_mapped_value(id, value, mapper);
        }
        let restored = Tensor::<D>::from_data(TensorData::new(data, shape), &value.device())
            .set_require_grad(true);
        Param::from_mapped_value(ParamId::from(sid), restored, mapper)
    }
}

/// Trainable parameters of `module`: metadata and values.
pub fn trainable<M: Module>(module: &M) -> Vec<(u64, Vec<usize>, Vec<f32>)> {
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere best effort.
    match File::open(path) {
        Ok(f) => {
            let _ = f.sync_all();
            Ok(())
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Name of the checkpoint directory after `step` steps.
pub fn dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

fn parse_step(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io(root))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(step) = parse_step(&name) {
            let p = ent.path();
            if p.join(STATE_FILE).is_file() {
                out.push((step, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint under `root`.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    Ok(list(root)?.pop().map(|(_, p)| p))
}

/// Writes a checkpoint of `module` and `optim_record` after `state.step` steps into
/// `root/step-NNNNNN` atomically, then removes all but the newest `keep` checkpoints.
pub fn write<M: Module>(
    root: &Path,
    module: &M,
    optim_record: burn::optim::OptimizerRecord,
    mut state: CheckpointState,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    // Leftovers of a write interrupted earlier.
    if let Ok(rd) = std::fs::read_dir(root) {
        for ent in rd.flatten() {
            if ent.file_name().to_string_lossy().starts_with(".tmp-step-") {
                let _ = std::fs::remove_dir_all(ent.path());
            }
        }
    }
    let name = dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    let params = trainable(module);
    state.format = FORMAT;
    state.params = params
        .iter()
        .map(|(id, shape, _)| ParamMeta {
            id: *id,
            shape: shape.clone(),
        })
        .collect();
    let bytes: Vec<Vec<u8>> = params
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = params
        .iter()
        .zip(&bytes)
        .enumerate()
        .map(|(i, ((_, shape, _), b))| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (format!("p{i:04}"), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("checkpoint tensor: {e}")))?;
    let pf = tmp.join(PARAMS_FILE);
    safetensors::serialize_to_file(views, None, &pf)
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", pf.display())))?;
    sync_file(&pf)?;

    let of = tmp.join(OPTIM_FILE);
    optim_record
        .save(&of)
        .map_err(|e| Error::Invalid(format!("writing {}: {e:?}", of.display())))?;
    sync_file(&of)?;

    let sf = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(&state).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&sf, json).map_err(io(&sf))?;
    sync_file(&sf)?;
    sync_dir(&tmp)?;

    let dest = root.join(&name);
    if dest.exists() {
        // A checkpoint of the same step from an earlier (resumed-over) run.
        std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
    }
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    sync_dir(root)?;

    let all = list(root)?;
    if all.len() > keep.max(1) {
        for (_, p) in &all[..all.len() - keep.max(1)] {
            std::fs::remove_dir_all(p).map_err(io(p))?;
        }
    }
    Ok(dest)
}

/// A checkpoint read back.
pub struct Loaded {
    /// `state.json`.
    pub state: CheckpointState,
    /// The optimizer record.
    pub optim: burn::optim::OptimizerRecord,
    params: Vec<(u64, Vec<usize>, Vec<f32>)>,
}

/// Reads the checkpoint directory `dir`.
pub fn read(dir: &Path) -> Result<Loaded> {
    let sf = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&sf).map_err(io(&sf))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| bad(&sf, format!("malformed checkpoint state: {e}")))?;
    if state.format != FORMAT {
        return Err(bad(
            &sf,
            format!(
                "checkpoint format {} (this build reads {FORMAT})",
                state.format
            ),
        ));
    }
    let pf = dir.join(PARAMS_FILE);
    let bytes = std::fs::read(&pf).map_err(io(&pf))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(&pf, format!("bad safetensors file: {e}")))?;
    let mut params = Vec::with_capacity(state.params.len());
    for (i, meta) in state.params.iter().enumerate() {
        let name = format!("p{i:04}");
        let t = st
            .tensor(&name)
            .map_err(|e| bad(&pf, format!("tensor {name}: {e}")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != meta.shape.as_slice() {
            return Err(bad(
                &pf,
                format!(
                    "tensor {name} is {:?} {:?}, state.json says F32 {:?}",
                    t.dtype(),
                    t.shape(),
                    meta.shape
                ),
            ));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        params.push((meta.id, meta.shape.clone(), v));
    }
    let of = dir.join(OPTIM_FILE);
    let optim = burn::optim::OptimizerRecord::load(&of)
        .map_err(|e| bad(&of, format!("cannot read the optimizer state: {e:?}")))?;
    Ok(Loaded {
        state,
        optim,
        params,
    })
}

impl Loaded {
    /// `module` with its trainable parameters (values and ids) replaced by the saved ones.
    pub fn restore_into<M: Module>(&mut self, module: M, dir: &Path) -> Result<M> {
        let n_model = trainable(&module).len();
        if n_model != self.params.len() {
            return Err(bad(
                dir,
                format!(
                    "the checkpoint holds {} trainable parameters, the model has {n_model} (different LoRA settings?)",
                    self.params.len()
                ),
            ));
        }
        let mut r = Restore {
            saved: std::mem::take(&mut self.params).into_iter(),
            error: None,
        };
        let module = module.map(&mut r);
        match r.error {
            Some(e) => Err(bad(dir, e)),
            None => Ok(module),
        }
    }
}

/// Loads the weights of checkpoint `dir` into `lm`'s inference weights (LoRA merged): the
/// trained policy, for evaluation. `lm` must be the base model the run started from.
pub fn apply(lm: &BurnLm, dir: &Path) -> Result<()> {
    let mut loaded = read(dir)?;
    let TrainModel { decoder, device } = TrainModel::new(lm, loaded.state.lora.as_ref())?;
    let decoder = loaded.restore_into(decoder, dir)?;
    lm.set_weights(&TrainModel { decoder, device })
}
