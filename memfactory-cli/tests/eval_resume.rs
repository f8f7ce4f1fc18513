//! A `memfactory eval` killed at any moment leaves a consistent run directory — no summary
//! beside scores it does not summarize, whole lines only (a last line a kill cut short is a
//! prefix of the line being written) — and `eval --resume` finishes it with the result of an
//! uninterrupted eval.
#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use memfactory_core::seed;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memfactory"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The scripted RULER smoke recipe (4 samples in flight, LM calls batched across them).
fn recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/memagent_ruler_scripted_smoke.toml")
}

const SAMPLES: usize = 300;

fn eval_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg("eval")
        .arg(recipe())
        .arg("--out")
        .arg(out)
        .args(["--set", &format!("data.eval.samples={SAMPLES}")])
        .args(["--set", "data.eval.tokens=3000"])
        .args(extra);
    c
}

fn eval(out: &Path, extra: &[&str]) -> Output {
    eval_cmd(out, extra).output().unwrap()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

/// metrics.json without its wall time and cost (timing and memory).
fn metrics(dir: &Path) -> serde_json::Value {
    let mut m: serde_json::Value = serde_json::from_str(&read(dir, "metrics.json")).unwrap();
    m.as_object_mut().unwrap().remove("seconds");
    m.as_object_mut().unwrap().remove("cost");
    m
}

/// report.md without its wall time.
fn report(dir: &Path) -> String {
    read(dir, "report.md")
        .lines()
        .filter(|l| !l.starts_with("- wall time"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of a JSONL file a kill left: whole lines, and the text after the last newline.
fn lines_and_tail(path: &Path) -> (Vec<String>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let whole = String::from_utf8(bytes[..end].to_vec()).expect("whole lines are UTF-8");
    (
        whole.split_inclusive('\n').map(str::to_string).collect(),
        bytes[end..].to_vec(),
    )
}

/// Checks the run directory `run` a kill left against the uninterrupted run `reference`;
/// returns how many samples it holds finished.
fn check_consistent(run: &Path, reference: &Path, what: &str) -> usize {
    if run.join("recipe.resolved.toml").exists() {
        assert_eq!(
            read(run, "recipe.resolved.toml"),
            read(reference, "recipe.resolved.toml"),
            "{what}: recipe"
        );
    }
    let mut counts = Vec::new();
    for f in ["scores.jsonl", "trajectories.jsonl"] {
        let (lines, tail) = lines_and_tail(&run.join(f));
        let (want, _) = lines_and_tail(&reference.join(f));
        assert!(lines.len() <= want.len(), "{what}: {f} has extra lines");
        for (i, (a, b)) in lines.iter().zip(&want).enumerate() {
            assert!(a == b, "{what}: {f} line {} differs", i + 1);
        }
        if !tail.is_empty() {
            let next = want.get(lines.len()).map(String::as_bytes).unwrap_or(b"");
            assert!(
                next.starts_with(&tail),
                "{what}: {f} ends in a fragment that is no prefix of its line"
            );
        }
        counts.push(lines.len());
    }
    let (scored, episodes) = (counts[0], counts[1]);
    // One path per sample: a sample's trajectory is written just before its score.
    assert!(
        episodes == scored || episodes == scored + 1,
        "{what}: {scored} scores beside {episodes} trajectories"
    );
    if run.join("metrics.json").exists() {
        assert_eq!(
            scored, SAMPLES,
            "{what}: metrics.json beside unfinished scores"
        );
        assert_eq!(metrics(run), metrics(reference), "{what}: metrics.json");
    }
    if run.join("report.md").exists() {
        assert_eq!(
            scored, SAMPLES,
            "{what}: report.md beside unfinished scores"
        );
        assert_eq!(report(run), report(reference), "{what}: report.md");
    }
    scored
}

fn scored_lines(dir: &Path) -> usize {
    std::fs::read(dir.join("scores.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn eval_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let o = eval(&reference, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(scored_lines(&reference), SAMPLES);

    // A stale eval of another recipe in the directory first: the first kill must not leave
    // its summary beside the new scores.
    let run = tmp.path().join("run");
    let o = eval(&run, &["--set", "run.seed=1", "--limit", "3"]);
    assert!(o.status.success(), "{}", text(&o));

    let recipe = read(&reference, "recipe.resolved.toml");
    let root = 0x5eed_u64;
    let mut landed = Vec::new();
    for kill in 0..8u64 {
        // Each kill lands once the run holds a random number of finished samples (of this
        // recipe), plus a random delay of up to 5 ms: in setup, between or inside line
        // writes, or while the summaries are written.
        let done = if kill == 0 { 1 } else { scored_lines(&run) };
        let target = done + (seed::derive_n(root, 2 * kill) % 45) as usize;
        let jitter = Duration::from_micros(seed::derive_n(root, 2 * kill + 1) % 5_000);
        // The first run starts over (another recipe's eval is there); the others resume.
        let extra: &[&str] = if kill == 0 { &[] } else { &["--resume"] };
        let mut child = eval_cmd(&run, extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let reached = || {
            std::fs::read_to_string(run.join("recipe.resolved.toml")).ok() == Some(recipe.clone())
                && scored_lines(&run) >= target
        };
        let mut finished = false;
        while !finished && !reached() {
            assert!(t.elapsed() < Duration::from_secs(300), "eval hangs");
            finished = child.try_wait().unwrap().is_some();
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(jitter);
        // SIGKILL; Ok as well when the eval has exited already.
        child.kill().unwrap();
        let exited = child.wait().unwrap();
        assert!(
            exited.success() || (!finished && exited.signal() == Some(9)),
            "kill {kill}: the eval failed: {exited:?}"
        );
        let what = format!("kill {kill} (target {target}, {exited})");
        let scored = check_consistent(&run, &reference, &what);
        landed.push(scored);
    }
    let mid_run = landed.iter().filter(|&&s| 0 < s && s < SAMPLES).count();
    assert!(mid_run >= 3, "too few kills landed mid-run: {landed:?}");

    let o = eval(&run, &["--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(check_consistent(&run, &reference, "after resume"), SAMPLES);
    assert_eq!(metrics(&run), metrics(&reference));
    for f in ["scores.jsonl", "trajectories.jsonl"] {
        assert!(read(&run, f) == read(&reference, f), "{f} differs");
    }
    assert_eq!(report(&run), report(&reference));
}

#[test]
fn resume_refuses_another_recipe_and_sweeps() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let o = eval(&out, &["--limit", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = read(&out, "metrics.json");

    let o = eval(&out, &["--limit", "2", "--resume", "--set", "run.seed=3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--resume") && text(&o).contains("seed = 3"),
        "{}",
        text(&o)
    );
    assert_eq!(
        read(&out, "metrics.json"),
        before,
        "a refused resume changed it"
    );

    // The same recipe with a larger limit continues from the finished samples.
    let o = eval(&out, &["--limit", "3", "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(scored_lines(&out), 3);
    assert_eq!(metrics(&out)["n"], 3);

    let o = eval(
        &tmp.path().join("sw"),
        &["--resume", "--sweep", "data.eval.tokens=1000,2000"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
}
