//! A bounds-checked reader for GGUF (versions 2 and 3) files.
//!
//! Layout (all little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64`
//! metadata count, the metadata key/values, the tensor infos (name, dims, type, offset), then
//! padding to `general.alignment` (default 32) and the tensor data. Every length read from the
//! file is checked against the bytes that remain and against sanity limits before anything is
//! allocated, so a corrupt or hostile file yields [`Error::Model`] naming what and where — never
//! a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memfactory_core::{Error, Result};

use crate::quant::GgmlType;

/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata entries a file may declare.
pub const MAX_METADATA: u64 = 1 << 16;
/// Longest string (key, value or tensor name) accepted, in bytes.
pub const MAX_STRING: u64 = 1 << 24;
/// Most elements of one metadata array.
pub const MAX_ARRAY: u64 = 1 << 24;
/// Most dimensions of a tensor.
pub const MAX_DIMS: u32 = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string`.
    String(String),
    /// `array` of values of one type.
    Array(Vec<Value>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, when numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64).or(match *self {
                Value::I8(v) => Some(v as f64),
                Value::I16(v) => Some(v as f64),
                Value::I32(v) => Some(v as f64),
                Value::I64(v) => Some(v as f64),
                _ => None,
            }),
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// GGML dims, fastest-varying first (`[in, out]` for a weight matrix).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Byte size of the data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Row-major shape (slowest first, as PyTorch writes it).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF header: metadata and tensor directory.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// File version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Alignment of the data section.
    pub alignment: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str, msg: impl std::fmt::Display) -> Error {
        Error::model(
            self.path.to_path_buf(),
            format!("GGUF {what} at byte {}: {msg}", self.pos),
        )
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(
                what,
                format!(
                    "truncated file (needs {n} bytes, {} left)",
                    self.buf.len() - self.pos
                ),
            )),
        }
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(self.err(what, format!("string length {len} exceeds {MAX_STRING}")));
        }
        let bytes = self.take(len as usize, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => Value::Bool(self.arr::<1>(what)?[0] != 0),
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 2 {
                    return Err(self.err(what, "arrays nested too deeply"));
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                if n > MAX_ARRAY {
                    return Err(self.err(what, format!("array length {n} exceeds {MAX_ARRAY}")));
                }
                // Every element takes at least one byte: reject lengths the file cannot hold.
                let left = (self.buf.len() - self.pos) as u64;
                if n > left {
                    return Err(self.err(
                        what,
                        format!("array length {n} exceeds the {left} bytes left"),
                    ));
                }
                let mut out = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    out.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(out)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            t => return Err(self.err(what, format!("unknown value type {t}"))),
        })
    }
}

/// The bytes of a GGUF file opened for loading: a read-only memory map where the OS gives
/// one (a tensor's pages are read when it is copied and can be handed back right after,
/// [`GgufBytes::release`], so loading never holds the whole file besides the weights made
/// from it), else the file read into memory.
pub enum GgufBytes {
    /// A read-only map of the file.
    Map(memmap2::Mmap),
    /// The file's contents.
    Owned(Vec<u8>),
}

impl std::ops::Deref for GgufBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            GgufBytes::Map(m) => m,
            GgufBytes::Owned(v) => v,
        }
    }
}

impl GgufBytes {
    /// Hands the pages of tensor `t` back to the OS (a map only; a later read faults them
    /// in again from the file). Peak memory while loading, not correctness, depends on it.
    pub fn release(&self, g: &Gguf, t: &TensorInfo) {
        if let GgufBytes::Map(m) = self {
            #[allow(unsafe_code)]
            // SAFETY: the map is read-only and backed by the file, so dropping its pages
            // only makes the next read fault them in again from the file; nothing holds a
            // reference into these pages across this call that relies on them staying
            // resident.
            let _ = unsafe {
                m.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    (g.data_offset + t.offset) as usize,
                    t.size as usize,
                )
            };
        }
    }
}

impl Gguf {
    /// Opens the GGUF file at `path` and parses its header; the tensor data is read as the
    /// loader asks for it (see [`GgufBytes`]).
    pub fn open(path: &Path) -> Result<(Gguf, GgufBytes)> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        #[allow(unsafe_code)]
        // SAFETY: a read-only map. Another process truncating or rewriting the file while
        // the model loads would change what is read (as with any loader that maps weights,
        // e.g. llama.cpp); the header and every tensor range are bounds-checked by `parse`.
        let bytes = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(m) => GgufBytes::Map(m),
            Err(_) => GgufBytes::Owned(std::fs::read(path).map_err(|e| Error::io(path, e))?),
        };
        let g = Gguf::parse(&bytes, path)?;
        Ok((g, bytes))
    }

    /// Parses a whole GGUF file held in `buf` (`path` only names it in errors). Checks that
    /// every tensor's data lies inside `buf`.
    pub fn parse(buf: &[u8], path: &Path) -> Result<Gguf> {
        let mut r = Reader { buf, pos: 0, path };
        let magic = r.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(r.err("magic", format!("not a GGUF file (magic {magic:02x?})")));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(r.err("version", format!("unsupported version {version}")));
        }
        let n_tensors = r.u64("tensor count")?;
        if n_tensors > MAX_TENSORS {
            return Err(r.err(
                "tensor count",
                format!("{n_tensors} tensors exceeds {MAX_TENSORS}"),
            ));
        }
        let n_kv = r.u64("metadata count")?;
        if n_kv > MAX_METADATA {
            return Err(r.err(
                "metadata count",
                format!("{n_kv} entries exceeds {MAX_METADATA}"),
            ));
        }
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("type of metadata `{key}`"))?;
            let v = r.value(ty, &format!("metadata `{key}`"), 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a <= 1 << 16 && a.is_power_of_two() => a,
                _ => {
                    return Err(r.err(
                        "general.alignment",
                        format!("bad alignment {v:?} (a power of two ≤ 65536 expected)"),
                    ));
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors.min(4096) as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("tensor #{i} name"))?;
            let what = format!("tensor `{name}`");
            let nd = r.u32(&what)?;
            if nd == 0 || nd > MAX_DIMS {
                return Err(r.err(&what, format!("{nd} dims (1..={MAX_DIMS} expected)")));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(r.u64(&what)?);
            }
            let ty_id = r.u32(&what)?;
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| r.err(&what, format!("unsupported tensor type {ty_id}")))?;
            let offset = r.u64(&what)?;
            let numel = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= buf.len() as u64 * 4)
                .ok_or_else(|| r.err(&what, format!("dims {dims:?} larger than the file")))?;
            if numel % ty.block_size() as u64 != 0 || dims[0] % ty.block_size() as u64 != 0 {
                return Err(r.err(
                    &what,
                    format!(
                        "dims {dims:?} not a multiple of the {:?} block size {}",
                        ty,
                        ty.block_size()
                    ),
                ));
            }
            let size = numel / ty.block_size() as u64 * ty.block_bytes() as u64;
            if offset % alignment != 0 {
                return Err(r.err(
                    &what,
                    format!("data offset {offset} not aligned to {alignment}"),
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            if end.is_none_or(|e| e > buf.len() as u64) {
                return Err(Error::model(
                    path.to_path_buf(),
                    format!(
                        "GGUF tensor `{}`: data [{} + {}, {} bytes] runs past the end of the file ({} bytes)",
                        t.name,
                        data_offset,
                        t.offset,
                        t.size,
                        buf.len()
                    ),
                ));
            }
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            data_offset,
            alignment,
        })
    }

    /// Metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Tensor info named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of tensor `t` inside the file bytes `buf` (bounds were checked by
    /// [`Gguf::parse`]).
    pub fn tensor_bytes<'b>(&self, buf: &'b [u8], t: &TensorInfo) -> &'b [u8] {
        let start = (self.data_offset + t.offset) as usize;
        &buf[start..start + t.size as usize]
    }

    /// Dequantizes tensor `name` to f32 (GGML order: fastest dim last in the returned
    /// row-major shape).
    pub fn tensor_f32(
        &self,
        buf: &[u8],
        name: &str,
        path: &Path,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensor(name).ok_or_else(|| {
            Error::model(
                PathBuf::from(path),
                format!("GGUF: missing tensor `{name}`"),
            )
        })?;
        let data = crate::quant::dequantize(t.ty, self.tensor_bytes(buf, t), t.numel() as usize)
            .map_err(|m| Error::model(path.to_path_buf(), format!("GGUF tensor `{name}`: {m}")))?;
        Ok((t.shape(), data))
    }
}

/// Builds a GGUF file image (used by tests and fuzzing).
#[doc(hidden)]
pub mod write {
    /// A metadata value to write.
    pub enum W<'a> {
        /// uint32
        U32(u32),
        /// float32
        F32(f32),
        /// string
        Str(&'a str),
        /// array of strings
        StrArr(&'a [&'a str]),
        /// array of int32
        I32Arr(&'a [i32]),
    }
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    /// Writes a GGUF v3 image: metadata, then tensors `(name, dims, type id, data)`.
    pub fn gguf(meta: &[(&str, W)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            s(&mut out, k);
            match v {
                W::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                W::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                W::Str(x) => {
                    out.extend(8u32.to_le_bytes());
                    s(&mut out, x);
                }
                W::StrArr(a) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((a.len() as u64).to_le_bytes());
                    for x in *a {
                        s(&mut out, x);
                    }
                }
                W::I32Arr(a) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((a.len() as u64).to_le_bytes());
                    for x in *a {
                        out.extend(x.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in tensors {
            s(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        for (_, _, _, data) in tensors {
            out.extend(data);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{W, gguf};
    use super::*;

    fn sample() -> Vec<u8> {
        let data: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
        gguf(
            &[
                ("general.architecture", W::Str("llama")),
                ("llama.block_count", W::U32(2)),
                ("llama.rope.freq_base", W::F32(10000.0)),
                ("tokenizer.ggml.tokens", W::StrArr(&["a", "b", "c"])),
                ("tokenizer.ggml.token_type", W::I32Arr(&[1, 1, 3])),
            ],
            &[("w", vec![4, 2], 0, data)],
        )
    }

    #[test]
    fn parses_handmade_file() {
        let buf = sample();
        let g = Gguf::parse(&buf, Path::new("x.gguf")).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(
            g.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        assert_eq!(g.get("llama.block_count").unwrap().as_u64(), Some(2));
        assert_eq!(
            g.get("tokenizer.ggml.tokens")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let (shape, v) = g.tensor_f32(&buf, "w", Path::new("x.gguf")).unwrap();
        assert_eq!(shape, vec![2, 4]);
        assert_eq!(v, (0..8).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn truncation_anywhere_is_an_error() {
        let buf = sample();
        for n in 0..buf.len() - 1 {
            let cut = &buf[..n];
            // Truncation inside the tensor data or header must fail; trailing padding may not.
            if let Err(e) = Gguf::parse(cut, Path::new("x.gguf")) {
                assert!(matches!(e, Error::Model { .. }), "{e}");
            }
        }
        assert!(Gguf::parse(&buf[..40], Path::new("x.gguf")).is_err());
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        let mut buf = sample();
        buf[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = Gguf::parse(&buf, Path::new("x.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor count"), "{e}");
        let mut buf = sample();
        buf[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = Gguf::parse(&buf, Path::new("x.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata count"), "{e}");
        // string length of the first key
        let mut buf = sample();
        buf[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        let e = Gguf::parse(&buf, Path::new("x.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata key #0"), "{e}");
    }

    #[test]
    fn bad_magic_names_the_file() {
        let e = Gguf::parse(b"GGML\x03\0\0\0", Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.gguf") && e.contains("magic"), "{e}");
    }
}
