//! `memfactory data fetch`: public evaluation data the recipes name by path, downloaded from
//! its publisher (or imported from a local copy with `--from`) and checked before use.
//!
//! The only entry today is `hotpotqa-dev`: the first 2,000 records of the HotpotQA dev set,
//! distractor setting, written to `<dir>/hotpotqa/hotpot_dev_distractor_0-1999.json` — the
//! file the RULER-HotpotQA recipes read. RULER-HotpotQA draws each question's padding
//! documents from the pool of every paragraph of the file, so an instance depends on the
//! whole file, not only on its own record: the recipes' splits (eval 0-199, dev 200-231,
//! train 232-1999) and the committed results are those of exactly these 2,000 records. The
//! publisher ships the whole dev set (7,405 records, 46 MB), so `fetch` keeps its first
//! 2,000 records, in order.
//!
//! Checking: HotpotQA publishes no digest, so the pin is a SHA-256 over the content the
//! loader reads — for each kept record in order, the compact JSON of
//! `[_id, question, answer, type, level, supporting_facts, context]` followed by a newline
//! ([`content_digest`]) — computed on the copy the project's results were produced from.
//! It does not depend on key order, whitespace or fields the loader ignores (such as a
//! `dev_index` a copy may carry), and Python reproduces it with
//! `json.dumps(row, ensure_ascii=False, separators=(",", ":"))` per record. A source whose digest differs is refused naming both
//! digests, and nothing is written; a file already in place is kept when it matches and
//! replaced when it does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fetch::FetchError;

/// One dataset `data fetch` knows.
struct DataSpec {
    name: &'static str,
    about: &'static str,
    /// Where the publisher serves the source file, tried in order.
    urls: &'static [&'static str],
    /// Output file under `<dir>/`.
    file: &'static str,
    /// Records kept from the start of the source.
    records: usize,
    /// [`content_digest`] of the kept records.
    digest: &'static str,
    /// Licence and citation, printed after a fetch.
    licence: &'static str,
}

const CATALOGUE: &[DataSpec] = &[DataSpec {
    name: "hotpotqa-dev",
    about: "HotpotQA dev set, distractor setting, records 0-1999 (the RULER-HotpotQA recipes' eval, dev and train splits)",
    // The address HotpotQA's README gives, then the same over TLS.
    urls: &[
        "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json",
        "https://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json",
    ],
    file: "hotpotqa/hotpot_dev_distractor_0-1999.json",
    records: 2000,
    digest: "deb1c86172a5badd2c16a56a5e37103a62d349cb4643f79671262b988db8b6e2",
    licence: "CC BY-SA 4.0 — Yang et al., \"HotpotQA: A Dataset for Diverse, Explainable Multi-hop Question Answering\", EMNLP 2018",
}];

/// `memfactory data list`.
pub fn list() -> Result<()> {
    for d in CATALOGUE {
        outln!("{:<14} {}", d.name, d.about);
        outln!("{:<14} source {} → {}", "", d.urls.join(" or "), d.file);
    }
    Ok(())
}

/// The fields of a HotpotQA record the RULER-HotpotQA loader reads, in a fixed order.
const FIELDS: [&str; 7] = [
    "_id",
    "question",
    "answer",
    "type",
    "level",
    "supporting_facts",
    "context",
];

/// SHA-256 (lowercase hex) over `records`: for each, the compact JSON array of its
/// [`FIELDS`] (a missing field as `null`) and a newline.
pub fn content_digest(records: &[Value]) -> String {
    let mut h = Sha256::new();
    for r in records {
        let row: Vec<&Value> = FIELDS
            .iter()
            .map(|f| r.get(f).unwrap_or(&Value::Null))
            .collect();
        h.update(serde_json::to_vec(&row).expect("JSON values serialize"));
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `spec.records` records of the JSON array in `path`, checked against the pin.
fn kept_records(spec: &DataSpec, path: &Path) -> Result<Vec<Value>> {
    let bytes = std::fs::read(path)
        .map_err(|e| FetchError(format!("cannot read {}: {e}", path.display())))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        FetchError(format!(
            "{}: not JSON ({e}); expected the HotpotQA dev file (a JSON array of records)",
            path.display()
        ))
    })?;
    let Value::Array(mut all) = v else {
        return Err(FetchError(format!(
            "{}: expected a JSON array of HotpotQA records at the top level",
            path.display()
        ))
        .into());
    };
    if all.len() < spec.records {
        return Err(FetchError(format!(
            "{}: {} records, expected at least {} (the first {} of the HotpotQA dev set)",
            path.display(),
            all.len(),
            spec.records,
            spec.records
        ))
        .into());
    }
    all.truncate(spec.records);
    for (i, r) in all.iter().enumerate() {
        for f in ["_id", "question", "answer", "context"] {
            if r.get(f).is_none() {
                return Err(FetchError(format!(
                    "{}: record {i} has no `{f}` field; expected HotpotQA records \
                     (_id, question, answer, type, level, supporting_facts, context)",
                    path.display()
                ))
                .into());
            }
        }
    }
    let got = content_digest(&all);
    if got != spec.digest {
        return Err(FetchError(format!(
            "{}: the first {} records are not the ones the recipes were built on \
             (content digest expected {}, got {}); use the publisher's \
             hotpot_dev_distractor_v1.json or a copy of its first {} records",
            path.display(),
            spec.records,
            spec.digest,
            got,
            spec.records
        ))
        .into());
    }
    Ok(all)
}

/// Downloads `url` to `to` with curl, else Python's urllib.
fn download(url: &str, to: &Path) -> Result<()> {
    outln!("downloading {url}");
    let curl = Command::new("curl")
        .args(["-fL", "--retry", "3", "--progress-bar", "-o"])
        .arg(to)
        .arg(url)
        .status();
    match curl {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => errln!("curl failed ({s}); trying Python's urllib"),
        Err(_) => {}
    }
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])",
            url,
        ])
        .arg(to)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(FetchError(format!(
            "downloading {url} failed ({s}); is it reachable? With a copy of the file \
             already on disk, pass it with --from FILE"
        ))
        .into()),
        Err(e) => Err(FetchError(format!(
            "cannot download {url}: neither curl nor python3 runs ({e}); pass a local copy \
             with --from FILE"
        ))
        .into()),
    }
}

/// `memfactory data fetch NAME [--dir DIR] [--from FILE]`.
pub fn fetch(name: &str, dir: &Path, from: Option<&Path>) -> Result<()> {
    let Some(spec) = CATALOGUE.iter().find(|d| d.name == name) else {
        let known: Vec<_> = CATALOGUE.iter().map(|d| d.name).collect();
        return Err(FetchError(format!(
            "unknown dataset `{name}`; `memfactory data fetch` knows: {}",
            known.join(", ")
        ))
        .into());
    };
    fetch_spec(spec, spec.urls, dir, from)
}

/// [`fetch`] of one catalogue entry, downloading from `urls` (tests serve a local copy).
fn fetch_spec(spec: &DataSpec, urls: &[&str], dir: &Path, from: Option<&Path>) -> Result<()> {
    let name = spec.name;
    let target = dir.join(spec.file);
    if target.exists() {
        match kept_records(spec, &target) {
            Ok(_) => {
                outln!("{} is in place and matches its pin", target.display());
                return Ok(());
            }
            Err(e) => errln!("{e:#}; fetching it again"),
        }
    }
    let parent = target.parent().expect("catalogue files sit in a folder");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let (source, downloaded): (PathBuf, bool) = match from {
        Some(p) => (p.to_path_buf(), false),
        None => {
            let tmp = parent.join(".download.partial");
            let mut got = Err(FetchError(format!("{name}: no source address")).into());
            for (n, url) in urls.iter().enumerate() {
                got = download(url, &tmp);
                match &got {
                    Ok(()) => break,
                    // The last failure is the command's error; earlier ones are reported here.
                    Err(e) if n + 1 < urls.len() => errln!("{e:#}; trying the next address"),
                    Err(_) => {}
                }
            }
            if let Err(e) = got {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            (tmp, true)
        }
    };
    let result = kept_records(spec, &source);
    if downloaded {
        let _ = std::fs::remove_file(&source);
    }
    let records = result?;
    let partial = target.with_extension("json.partial");
    let write = || -> Result<()> {
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut w, &records)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let f = w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", partial.display(), e.error()))?;
        f.sync_all()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &target)
            .with_context(|| format!("cannot rename into {}", target.display()))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    outln!(
        "wrote {} ({} records, content digest {})",
        target.display(),
        spec.records,
        spec.digest
    );
    outln!("licence: {}", spec.licence);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order_and_extra_fields() {
        let a = json!([{"_id": "x", "question": "q", "answer": "a", "context": [["T", [" s"]]]}]);
        let b = json!([{"context": [["T", [" s"]]], "dev_index": 0, "answer": "a", "question": "q", "_id": "x"}]);
        let c = json!([{"_id": "x", "question": "q", "answer": "b", "context": [["T", [" s"]]]}]);
        let (Value::Array(a), Value::Array(b), Value::Array(c)) = (a, b, c) else {
            unreachable!()
        };
        assert_eq!(content_digest(&a), content_digest(&b));
        assert_ne!(content_digest(&a), content_digest(&c));
    }

    /// A small catalogue entry over a file written here, to exercise the checks.
    fn tiny_spec(digest: &'static str) -> DataSpec {
        DataSpec {
            name: "tiny",
            about: "",
            urls: &["http://unreachable.invalid/"],
            file: "tiny/t.json",
            records: 2,
            digest,
            licence: "",
        }
    }

    /// The shared copy of HotpotQA dev 0-1999 the results were produced from (CI has it);
    /// `None`, with a printed reason, when it is absent.
    fn shared_copy() -> Option<std::path::PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/hotpotqa/hotpot_dev_distractor_0-1999.json");
        if !p.exists() {
            eprintln!("skipped: {} is absent", p.display());
            return None;
        }
        Some(p)
    }

    /// The pin is the digest of the shared copy.
    #[test]
    fn hotpotqa_pin_matches_the_shared_copy() {
        let Some(p) = shared_copy() else { return };
        let spec = &CATALOGUE[0];
        let kept = kept_records(spec, &p).unwrap();
        assert_eq!(kept.len(), 2000);
        // Importing it writes the same records to the recipes' path, and a second fetch
        // keeps the file in place.
        let dir = tempfile::tempdir().unwrap();
        fetch("hotpotqa-dev", dir.path(), Some(&p)).unwrap();
        let out = dir.path().join(spec.file);
        assert_eq!(kept_records(spec, &out).unwrap(), kept);
        fetch("hotpotqa-dev", dir.path(), None).unwrap();
        let unknown = fetch("hotpot", dir.path(), None).unwrap_err().to_string();
        assert!(unknown.contains("knows: hotpotqa-dev"), "{unknown}");
    }

    /// The download path against a local HTTP server holding the shared copy: the first
    /// address fails, the second serves it, the kept records are written and checked.
    #[test]
    fn hotpotqa_downloads_from_the_next_address_when_one_fails() {
        let Some(shared) = shared_copy() else { return };
        let served = tempfile::tempdir().unwrap();
        std::fs::copy(&shared, served.path().join("dev.json")).unwrap();
        let port = 20000 + (std::process::id() % 20000) as u16;
        let Ok(mut server) = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(served.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            eprintln!("skipped: python3 is not available to serve the file");
            return;
        };
        let good = format!("http://127.0.0.1:{port}/dev.json");
        let bad = format!("http://127.0.0.1:{port}/missing.json");
        // Wait for the server to listen.
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = tempfile::tempdir().unwrap();
        let r = fetch_spec(&CATALOGUE[0], &[&bad, &good], out.path(), None);
        let _ = server.kill();
        let _ = server.wait();
        r.unwrap();
        let spec = &CATALOGUE[0];
        assert_eq!(
            kept_records(spec, &out.path().join(spec.file))
                .unwrap()
                .len(),
            2000
        );
        assert!(!out.path().join("hotpotqa/.download.partial").exists());
    }

    #[test]
    fn kept_records_truncates_and_checks_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Value> = (0..3)
            .map(
                |i| json!({"_id": format!("id{i}"), "question": "q", "answer": "a", "context": []}),
            )
            .collect();
        let p = dir.path().join("src.json");
        std::fs::write(&p, serde_json::to_vec(&recs).unwrap()).unwrap();
        let pin: &'static str = Box::leak(content_digest(&recs[..2]).into_boxed_str());
        let kept = kept_records(&tiny_spec(pin), &p).unwrap();
        assert_eq!(kept.len(), 2);
        let wrong = kept_records(&tiny_spec("00"), &p).unwrap_err().to_string();
        assert!(
            wrong.contains("expected 00") && wrong.contains(pin),
            "{wrong}"
        );
        std::fs::write(&p, serde_json::to_vec(&recs[..1]).unwrap()).unwrap();
        let short = kept_records(&tiny_spec(pin), &p).unwrap_err().to_string();
        assert!(short.contains("1 records, expected at least 2"), "{short}");
        std::fs::write(&p, br#"[{"_id": "a"}, {"_id": "b"}]"#).unwrap();
        let bad = kept_records(&tiny_spec(pin), &p).unwrap_err().to_string();
        assert!(bad.contains("record 0 has no `question`"), "{bad}");
        std::fs::write(&p, b"{\"a\": 1}").unwrap();
        let obj = kept_records(&tiny_spec(pin), &p).unwrap_err().to_string();
        assert!(obj.contains("JSON array"), "{obj}");
    }
}
