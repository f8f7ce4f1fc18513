//! Checkpoints: everything needed to continue training exactly where it stopped.
//!
//! A checkpoint is a directory `step-NNNNNN/` (the number of steps done) holding
//! - `trainable.safetensors` — every trainable parameter (LoRA `A`/`B`, or all weights for
//!   full fine-tuning) in module visit order, named `p0000`, `p0001`, …;
//! - `optimizer.bpk` — the AdamW moments and step counts (burn's optimizer record, keyed by
//!   parameter id);
//! - `state.json` — steps and updates done, the parameter ids and shapes, the LoRA settings,
//!   and the caller's own state (the facade stores its data cursor and RNG seeds there);
//! - `manifest.json` — the SHA-256 of each of the three files above, written last.
//!
//! [`read`] verifies every file against the manifest before using it: a flipped bit is an
//! [`Error::Model`] naming the file and both hashes (a user error: the CLI exits 2), never a
//! silently different policy. A checkpoint written before checksums existed has no
//! `manifest.json`; it still loads, as [`Integrity::Unverified`], and callers warn about it.
//!
//! It is written into a temporary sibling directory, every file is synced, and the directory is
//! renamed into place (atomic on POSIX), then the parent is synced: a crash at any moment leaves
//! either the previous checkpoints or the new one complete, never a torn one. Only the last
//! `keep` checkpoints are kept. Frozen base weights are not stored: they come from the model
//! file named by the recipe.
//!
//! On restore the trainable parameters get back their saved values *and* their saved
//! parameter ids, so the optimizer record (keyed by id) attaches to the right tensors.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};
use memfactory_core::{Error, Result};
use memfactory_lm_burn::{BurnLm, LoraConfig, TrainModel};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Format version written into `state.json`.
pub const FORMAT: u32 = 1;

const PARAMS_FILE: &str = "trainable.safetensors";
const OPTIM_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";
const MANIFEST_FILE: &str = "manifest.json";

/// `manifest.json`: the checksum of every other file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// File name → lowercase hex SHA-256 of its bytes.
    pub sha256: BTreeMap<String, String>,
}

/// What [`read`] could check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every file matched its SHA-256 in `manifest.json`.
    Verified,
    /// No `manifest.json` (a checkpoint written before checksums): the files were parsed
    /// but not verified.
    Unverified,
}

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

/// Shapes of the trainable parameters in visit order.
struct Shapes(Vec<Vec<usize>>);

impl ModuleVisitor for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        if t.is_require_grad() {
            self.0.push(t.dims().to_vec());
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of the file at `path`, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The error for a file whose SHA-256 is not the manifest's.
fn mismatch(path: &Path, want: &str, got: &str) -> Error {
    bad(
        path,
        format!(
            "checksum mismatch, the checkpoint is damaged: {MANIFEST_FILE} records SHA-256 {want}, the file has {got}"
        ),
    )
}

/// Name of the checkpoint directory after `step` steps.
pub fn dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

fn parse_step(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Keeps the lines of the JSONL log `path` whose `"step"` satisfies `keep`, so that a run
/// resumed from a checkpoint drops what it logged for the steps it will redo. Whole lines
/// only: a last line cut short by a kill, and any line that is not a JSON object with an
/// integer `step`, are dropped too. The log is streamed into a temporary sibling that is
/// synced and renamed over it (a kill during the truncation leaves the old file), only
/// when something is dropped; a missing file is no error. Returns the number of lines
/// dropped.
pub fn truncate_log(path: &Path, keep: impl Fn(usize) -> bool) -> Result<usize> {
    #[derive(Deserialize)]
    struct Step {
        step: u64,
    }
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut reader = BufReader::new(f);
    let mut writer = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    let mut line = Vec::new();
    let mut dropped = 0usize;
    let copied = (|| -> Result<()> {
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io(path))? == 0 {
                return Ok(());
            }
            let step = line
                .ends_with(b"\n")
                .then(|| serde_json::from_slice::<Step>(&line).ok())
                .flatten()
                .and_then(|s| usize::try_from(s.step).ok());
            if step.is_some_and(&keep) {
                writer.write_all(&line).map_err(io(&tmp))?;
            } else {
                dropped += 1;
            }
        }
    })();
    let finished = copied.and_then(|()| {
        let f = writer
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        if dropped > 0 {
            f.sync_all().map_err(io(&tmp))?;
        }
        Ok(())
    });
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if dropped == 0 {
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
    } else {
        std::fs::rename(&tmp, path).map_err(io(path))?;
    }
    Ok(dropped)
}

/// Drops a last line that a kill cut short (no final `\n`) from the append-only JSONL file
/// `path`, so that the next append starts a line of its own: the file is cut in place
/// after its last newline (only its tail is read). Returns whether it did.
pub fn drop_torn_line(path: &Path) -> Result<bool> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    let len = f.metadata().map_err(io(path))?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start)).map_err(io(path))?;
        f.read_exact(chunk).map_err(io(path))?;
        if end == len && chunk.last() == Some(&b'\n') {
            return Ok(false);
        }
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep == len {
        return Ok(false);
    }
    f.set_len(keep)
        .and_then(|()| f.sync_all())
        .map_err(io(path))?;
    Ok(true)
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

/// Moves the damaged checkpoint `dir` (`step-N`) aside to `damaged-step-N` next to it (an
/// older one of that name is replaced), out of [`list`]'s sight — so it is neither resumed
/// from nor counted among the `keep` newest — but kept for inspection. Returns the new path.
pub fn set_aside(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = dir.with_file_name(format!("damaged-{name}"));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
    }
    std::fs::rename(dir, &dest).map_err(io(dir))?;
    Ok(dest)
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
    std::fs::write(&sf, &json).map_err(io(&sf))?;
    sync_file(&sf)?;

    // Checksums of the files as they are on disk (read back, not the buffers we meant to
    // write), the manifest last.
    let mut sha256 = BTreeMap::new();
    for (name, path) in [(PARAMS_FILE, &pf), (OPTIM_FILE, &of), (STATE_FILE, &sf)] {
        sha256.insert(name.to_string(), sha256_file(path)?);
    }
    let manifest = Manifest {
        format: FORMAT,
        sha256,
    };
    let mf = tmp.join(MANIFEST_FILE);
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut f = File::create(&mf).map_err(io(&mf))?;
    f.write_all(json.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&mf))?;
    drop(f);
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
    /// Whether the files were verified against `manifest.json`.
    pub integrity: Integrity,
    params: Vec<(u64, Vec<usize>, Vec<f32>)>,
}

/// `dir/manifest.json`, or `None` for a checkpoint written before checksums.
fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let mf = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&mf) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(bad(&mf, format!("malformed checkpoint manifest: {e}")));
        }
        Err(e) => return Err(Error::io(&mf, e)),
    };
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| bad(&mf, format!("malformed checkpoint manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(bad(
            &mf,
            format!("checkpoint format {} (this build reads {FORMAT})", m.format),
        ));
    }
    Ok(Some(m))
}

/// The manifest's SHA-256 for `name`.
fn expected<'m>(m: &'m Manifest, dir: &Path, name: &str) -> Result<&'m str> {
    m.sha256.get(name).map(String::as_str).ok_or_else(|| {
        bad(
            &dir.join(MANIFEST_FILE),
            format!("the manifest records no checksum for {name}"),
        )
    })
}

/// Checks `bytes` (read from `dir/name`) against the manifest.
fn verify_bytes(m: Option<&Manifest>, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let Some(m) = m else { return Ok(()) };
    let want = expected(m, dir, name)?;
    let got = sha256_hex(bytes);
    if got != want {
        return Err(mismatch(&dir.join(name), want, &got));
    }
    Ok(())
}

/// Verifies every file of the checkpoint `dir` against its manifest without loading it.
pub fn verify(dir: &Path) -> Result<Integrity> {
    let Some(m) = read_manifest(dir)? else {
        return Ok(Integrity::Unverified);
    };
    for name in [STATE_FILE, PARAMS_FILE, OPTIM_FILE] {
        let want = expected(&m, dir, name)?;
        let p = dir.join(name);
        let got = sha256_file(&p)?;
        if got != want {
            return Err(mismatch(&p, want, &got));
        }
    }
    Ok(Integrity::Verified)
}

/// Reads the checkpoint directory `dir`, verifying each file against `manifest.json` (when
/// there is one) before parsing it.
pub fn read(dir: &Path) -> Result<Loaded> {
    let manifest = read_manifest(dir)?;
    let mut loaded = read_weights_with(dir, manifest.as_ref())?;
    let of = dir.join(OPTIM_FILE);
    if let Some(m) = &manifest {
        let want = expected(m, dir, OPTIM_FILE)?;
        let got = sha256_file(&of)?;
        if got != want {
            return Err(mismatch(&of, want, &got));
        }
    }
    loaded.optim = burn::optim::OptimizerRecord::load(&of)
        .map_err(|e| bad(&of, format!("cannot read the optimizer state: {e:?}")))?;
    Ok(loaded)
}

/// [`read`] without the optimizer state: `state.json` and the trainable parameters, each
/// verified against `manifest.json` when there is one; `optim` is left empty. Enough to
/// evaluate the policy ([`apply`]), so a checkpoint shipped for evaluation may leave out
/// `optimizer.bpk` (twice the size of the weights); resuming a run needs [`read`].
pub fn read_weights(dir: &Path) -> Result<Loaded> {
    read_weights_with(dir, read_manifest(dir)?.as_ref())
}

/// [`read_weights`] against the manifest already read from `dir` (`None`: no manifest).
fn read_weights_with(dir: &Path, m: Option<&Manifest>) -> Result<Loaded> {
    let sf = dir.join(STATE_FILE);
    let raw = std::fs::read(&sf).map_err(io(&sf))?;
    verify_bytes(m, dir, STATE_FILE, &raw)?;
    let state: CheckpointState = serde_json::from_slice(&raw)
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
    verify_bytes(m, dir, PARAMS_FILE, &bytes)?;
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
    Ok(Loaded {
        state,
        optim: Default::default(),
        integrity: if m.is_some() {
            Integrity::Verified
        } else {
            Integrity::Unverified
        },
        params,
    })
}

impl Loaded {
    /// Checks that the saved parameters fit `module`'s trainable ones (count and shapes).
    pub fn check_fits<M: Module>(&self, module: &M, dir: &Path) -> Result<()> {
        let mut shapes = Shapes(Vec::new());
        module.visit(&mut shapes);
        let n_model = shapes.0.len();
        if n_model != self.params.len() {
            return Err(bad(
                dir,
                format!(
                    "the checkpoint holds {} trainable parameters, the model has {n_model} (different LoRA settings?)",
                    self.params.len()
                ),
            ));
        }
        for (i, ((_, saved, _), model)) in self.params.iter().zip(&shapes.0).enumerate() {
            if saved != model {
                return Err(bad(
                    dir,
                    format!(
                        "parameter p{i:04} has shape {saved:?} in the checkpoint, {model:?} in the model"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `module` with its trainable parameters (values and ids) replaced by the saved ones.
    pub fn restore_into<M: Module>(&mut self, module: M, dir: &Path) -> Result<M> {
        self.check_fits(&module, dir)?;
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
/// trained policy, for evaluation. `lm` must be the base model the run started from. A
/// damaged checkpoint is an error naming the file and both hashes; the result says whether
/// the files could be verified at all (see [`Integrity`]). The optimizer state is not read
/// ([`read_weights`]): `optimizer.bpk` may be absent.
pub fn apply(lm: &BurnLm, dir: &Path) -> Result<Integrity> {
    let mut loaded = read_weights(dir)?;
    let TrainModel { decoder, device } = TrainModel::new(lm, loaded.state.lora.as_ref())?;
    let decoder = loaded.restore_into(decoder, dir)?;
    lm.set_weights(&TrainModel { decoder, device })?;
    Ok(loaded.integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_log_keeps_whole_lines_of_kept_steps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        std::fs::write(
            &p,
            "{\"step\":0,\"x\":1}\n{\"step\":1}\nnot json\n{\"step\":2}\n{\"step\":1,\"again\":true}\n{\"step\":0,\"torn",
        )
        .unwrap();
        assert_eq!(truncate_log(&p, |s| s < 2).unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":0,\"x\":1}\n{\"step\":1}\n{\"step\":1,\"again\":true}\n"
        );
        // Nothing to drop: the file is left alone; a missing file is no error.
        assert_eq!(truncate_log(&p, |s| s < 2).unwrap(), 0);
        assert_eq!(truncate_log(&dir.path().join("none"), |_| true).unwrap(), 0);
        // A complete record whose newline was not written yet is torn too.
        std::fs::write(&p, "{\"step\":0}\n{\"step\":1}").unwrap();
        assert_eq!(truncate_log(&p, |_| true).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"step\":0}\n");
        assert_eq!(truncate_log(&p, |_| false).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn drop_torn_line_cuts_only_an_unterminated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cache.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        assert!(drop_torn_line(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        assert!(!drop_torn_line(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        std::fs::write(&p, "{\"b\":").unwrap();
        assert!(drop_torn_line(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        assert!(!drop_torn_line(&dir.path().join("none")).unwrap());
        // A torn line longer than the block the tail is read in.
        let long = format!("{{\"a\":1}}\n{{\"b\":\"{}", "x".repeat(200_000));
        std::fs::write(&p, long).unwrap();
        assert!(drop_torn_line(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        std::fs::write(&p, "").unwrap();
        assert!(!drop_torn_line(&p).unwrap());
    }

    #[test]
    fn a_damaged_checkpoint_is_set_aside_out_of_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        for s in [1, 2] {
            let d = dir.path().join(dir_name(s));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(STATE_FILE), "{}").unwrap();
        }
        let aside = set_aside(&dir.path().join(dir_name(2))).unwrap();
        assert_eq!(aside, dir.path().join("damaged-step-000002"));
        assert!(aside.join(STATE_FILE).is_file());
        let steps: Vec<usize> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [1]);
    }
}
