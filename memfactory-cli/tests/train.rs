//! `memfactory train` end to end on the tiny random byte-level model
//! (`configs/tests/grpo_tiny_random.toml`): run directory contents, exact resumption
//! (N steps + `--resume` + N steps = 2N steps; also after SIGKILLs between a checkpoint and
//! its dev eval and at seeded random moments, with every per-step log holding one record
//! per step), damaged checkpoints (refused by `eval --checkpoint`, skipped by `--resume`),
//! evaluating a checkpoint, and impossible recipes rejected before any work.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_memfactory"));
    c.current_dir(root());
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const RECIPE: &str = "configs/tests/grpo_tiny_random.toml";

/// The tiny recipe with `edit(text)` applied, written into `dir`.
fn recipe_with(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let t = std::fs::read_to_string(root().join(RECIPE)).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, edit(t)).unwrap();
    p
}

fn train(recipe: &Path, out: &Path, resume: bool) -> Output {
    let mut c = bin();
    c.arg("train").arg(recipe).arg("--out").arg(out);
    if resume {
        c.arg("--resume");
    }
    c.output().unwrap()
}

/// metrics.jsonl without the timing fields.
fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["tokens_per_s", "rollout_s", "update_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

fn weights(out: &Path, step: usize) -> Vec<u8> {
    std::fs::read(
        out.join("checkpoints")
            .join(format!("step-{step:06}"))
            .join("trainable.safetensors"),
    )
    .unwrap()
}

fn steps(n: usize) -> impl Fn(String) -> String {
    move |t| t.replace("steps = 4\n", &format!("steps = {n}\n"))
}

#[test]
fn train_writes_the_run_directory_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let o = train(&root().join(RECIPE), &a, false);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "recipe.resolved.toml",
        "metrics.jsonl",
        "reward.svg",
        "eval.jsonl",
        "eval.svg",
        "summary.json",
        "dev/step-000000/metrics.json",
        "dev/step-000004/report.md",
    ] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    let ma = metrics(&a);
    assert_eq!(ma.len(), 4);
    assert!(
        ma.iter().any(|m| m["updates"].as_u64().unwrap() > 0),
        "no update happened: the resume comparison would prove nothing"
    );
    assert!(
        ma.iter()
            .any(|m| m["clip_fraction"].as_f64().unwrap() > 0.0),
        "the ratio never moved"
    );
    let ev: Vec<u64> = std::fs::read_to_string(a.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ev, [0, 2, 4]);
    // keep_checkpoints = 2, every 2 steps.
    let mut cks: Vec<String> = std::fs::read_dir(a.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cks.sort();
    assert_eq!(cks, ["step-000002", "step-000004"]);
    assert!(
        std::fs::read_to_string(a.join("reward.svg"))
            .unwrap()
            .contains("<svg")
    );

    // The run directory is not overwritten by accident.
    let o = train(&root().join(RECIPE), &a, false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--resume"), "{}", text(&o));

    // 2 steps, then --resume to 4: identical metrics and weights.
    let b = tmp.path().join("b");
    let two = recipe_with(tmp.path(), "two.toml", steps(2));
    let o = train(&two, &b, false);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(metrics(&b).len(), 2);
    let o = train(&root().join(RECIPE), &b, true);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resumed from"), "{}", text(&o));
    assert_eq!(metrics(&b), ma, "2 + resume + 2 steps differ from 4 steps");
    assert!(
        weights(&b, 4) == weights(&a, 4),
        "weights differ after resume"
    );

    // The trained checkpoint evaluates through `eval --checkpoint`, and differs from base.
    let ck = a.join("checkpoints/step-000004");
    let ev_recipe = recipe_with(tmp.path(), "eval.toml", |t| {
        t.replace("[data.dev]", "[data.eval]")
    });
    let o = bin()
        .arg("eval")
        .arg(&ev_recipe)
        .arg("--out")
        .arg(tmp.path().join("ev"))
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let trained = std::fs::read_to_string(tmp.path().join("ev/trajectories.jsonl")).unwrap();
    let o = bin()
        .arg("eval")
        .arg(&ev_recipe)
        .arg("--out")
        .arg(tmp.path().join("ev0"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let base = std::fs::read_to_string(tmp.path().join("ev0/trajectories.jsonl")).unwrap();
    assert_ne!(trained, base, "the checkpoint's weights were not used");

    // Base and trained in one sweep report: each combination equals its own eval.
    let o = bin()
        .arg("eval")
        .arg(&ev_recipe)
        .arg("--out")
        .arg(tmp.path().join("sw"))
        .arg("--sweep")
        .arg(format!("checkpoint=base,{}", ck.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("sw/sweep.json")).unwrap())
            .unwrap();
    let dirs: Vec<&str> = sweep["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dir"].as_str().unwrap())
        .collect();
    assert_eq!(dirs.len(), 2);
    let traj = |d: &str| std::fs::read_to_string(Path::new(d).join("trajectories.jsonl")).unwrap();
    assert_eq!(traj(dirs[0]), base, "base combination");
    assert_eq!(traj(dirs[1]), trained, "checkpoint combination");
    let md = std::fs::read_to_string(tmp.path().join("sw/sweep.md")).unwrap();
    assert!(md.contains("| base |"), "{md}");
    // Two checkpoints swept: their paired comparison, printed and in compare.md, is the one
    // `memfactory compare` gives for the two runs.
    let cmp = std::fs::read_to_string(tmp.path().join("sw/compare.md")).unwrap();
    assert!(text(&o).contains(&cmp), "{}", text(&o));
    let o = bin()
        .arg("compare")
        .arg(dirs[0])
        .arg(dirs[1])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), cmp);
}

/// The tiny recipe with every per-step record the trainer writes: `steps` steps, a
/// checkpoint every `every` steps (the newest 2 kept), dev evals after 0, 2, 4 and the last
/// step, rollouts saved.
fn logged_recipe(dir: &Path, name: &str, n: usize, every: usize) -> PathBuf {
    recipe_with(dir, name, |t| {
        steps(n)(t)
            .replace(
                "checkpoint_every = 2",
                &format!("checkpoint_every = {every}"),
            )
            .replace("[train.agent]", "save_rollouts = true\n\n[train.agent]")
    })
}

fn spawn_train(recipe: &Path, out: &Path, resume: bool, pause_after: Option<usize>) -> Child {
    let mut c = bin();
    c.arg("train").arg(recipe).arg("--out").arg(out);
    if resume {
        c.arg("--resume");
    }
    match pause_after {
        Some(n) => c.env("MEMFACTORY_TEST_PAUSE_AFTER_CHECKPOINT", n.to_string()),
        None => c.env_remove("MEMFACTORY_TEST_PAUSE_AFTER_CHECKPOINT"),
    };
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists, then SIGKILLs `child`.
fn kill_once_exists(child: &mut Child, path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "{} never appeared",
            path.display()
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "training ended ({s}) before {} appeared to kill it at",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Complete lines of `path` (0 when it does not exist).
fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|r| r.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// The `step` of each line of a JSONL log (a line without one fails the test).
fn steps_of(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l}", path.display()));
            v["step"].as_u64().unwrap()
        })
        .collect()
}

/// Everything a run directory holds that must not depend on kills and resumptions
/// (timings left out), after checking that each log has exactly one record per step.
fn run_result(out: &Path, n_steps: u64, evals: &[u64], episodes_per_step: usize) -> String {
    assert_eq!(
        steps_of(&out.join("metrics.jsonl")),
        (0..n_steps).collect::<Vec<_>>(),
        "metrics.jsonl: one line per step"
    );
    assert_eq!(
        steps_of(&out.join("eval.jsonl")),
        evals,
        "eval.jsonl: one line per dev eval"
    );
    let want: Vec<u64> = (0..n_steps)
        .flat_map(|s| std::iter::repeat_n(s, episodes_per_step))
        .collect();
    assert_eq!(
        steps_of(&out.join("rollouts.jsonl")),
        want,
        "rollouts.jsonl: one line per episode of each step"
    );
    let mut dev: Vec<String> = std::fs::read_dir(out.join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dev.sort();
    let want: Vec<String> = evals.iter().map(|s| format!("step-{s:06}")).collect();
    assert_eq!(dev, want, "dev eval directories");

    let mut r = String::new();
    r += &serde_json::to_string(&metrics(out)).unwrap();
    for l in std::fs::read_to_string(out.join("eval.jsonl"))
        .unwrap()
        .lines()
    {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        r += &v.to_string();
    }
    r += &std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap();
    for d in &dev {
        for f in ["trajectories.jsonl", "scores.jsonl"] {
            r += &std::fs::read_to_string(out.join("dev").join(d).join(f)).unwrap();
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    r += &summary["steps"].to_string();
    r += &summary["evals"].to_string();
    r
}

#[test]
fn training_killed_at_any_moment_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    // Checkpoints after steps 2 and 4 only: a kill during step 4 leaves step 3's records
    // after the newest checkpoint.
    let recipe = logged_recipe(tmp.path(), "kill.toml", 4, 2);
    let episodes = 2 * 4; // samples_per_step × group_size

    // Reference: 4 uninterrupted steps.
    let a = tmp.path().join("a");
    let o = train(&recipe, &a, false);
    assert!(o.status.success(), "{}", text(&o));
    let reference = run_result(&a, 4, &[0, 2, 4], episodes);

    let b = tmp.path().join("b");
    // 1. Between checkpoint 2 and its dev eval (the run waits there on the test hook). The
    //    resume used to truncate eval.jsonl and carry on, losing that eval for good.
    let mut c = spawn_train(&recipe, &b, false, Some(2));
    kill_once_exists(&mut c, &b.join("checkpoints/step-000002"));
    assert_eq!(steps_of(&b.join("eval.jsonl")), [0], "killed before eval 2");
    // What a kill in the middle of that eval leaves: a partial eval directory.
    std::fs::create_dir_all(b.join("dev/step-000002")).unwrap();
    std::fs::write(
        b.join("dev/step-000002/trajectories.jsonl"),
        "{\"sample_id\": \"torn",
    )
    .unwrap();
    // 2. Resume: eval 2 runs first. Killed again once the third step has logged its
    //    rollouts (during the fourth, before checkpoint 4): the resume used to log the third
    //    step's records twice.
    let mut c = spawn_train(&recipe, &b, true, None);
    let t = Instant::now();
    while lines(&b.join("rollouts.jsonl")) < 3 * episodes {
        assert!(t.elapsed() < Duration::from_secs(600), "step 3 never ended");
        if let Some(s) = c.try_wait().unwrap() {
            panic!("training ended ({s}) before it could be killed in step 4");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    assert!(
        !b.join("checkpoints/step-000004").exists(),
        "killed too late"
    );
    assert_eq!(steps_of(&b.join("eval.jsonl")), [0, 2], "eval 2 re-run");
    assert_eq!(
        std::fs::read_to_string(b.join("dev/step-000002/trajectories.jsonl")).unwrap(),
        std::fs::read_to_string(a.join("dev/step-000002/trajectories.jsonl")).unwrap(),
        "the re-run eval 2 differs from the uninterrupted one"
    );
    // 3. The last resume finishes the run.
    let o = train(&recipe, &b, true);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        run_result(&b, 4, &[0, 2, 4], episodes),
        reference,
        "killed + resumed run differs from the uninterrupted one"
    );
    assert!(
        weights(&b, 4) == weights(&a, 4),
        "weights differ after kills + resumes"
    );

    // Kills at seeded random moments of a fresh run, each resumed: during start-up, a
    // rollout, an update, a checkpoint, an eval or a log append, wherever they land. A
    // moment is a number of rollout records logged plus a delay, so that it does not depend
    // on the machine's speed; the moments are sorted so that the run gets further each time.
    let c = tmp.path().join("c");
    let mut seed: u64 = 0x6b69_6c6c;
    let mut draw = || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut moments: Vec<(usize, Duration)> = (0..5)
        .map(|_| {
            let records = (draw() * (4 * episodes) as f64) as usize;
            (records, Duration::from_millis((draw() * 1500.0) as u64))
        })
        .collect();
    moments.sort();
    let mut kills = 0;
    for (records, delay) in moments {
        let mut child = spawn_train(&recipe, &c, kills > 0, None);
        let t = Instant::now();
        let mut deadline = None;
        while child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(600), "a run hangs");
            match deadline {
                None if lines(&c.join("rollouts.jsonl")) >= records => {
                    deadline = Some(Instant::now() + delay)
                }
                Some(d) if Instant::now() >= d => break,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL (an error only when it already exited)
        let st = child.wait().unwrap();
        assert!(st.success() || st.code().is_none(), "a run failed: {st}");
        eprintln!(
            "killed at {records} rollout records + {} ms: {st}; metrics.jsonl {} lines, eval.jsonl {} lines",
            delay.as_millis(),
            lines(&c.join("metrics.jsonl")),
            lines(&c.join("eval.jsonl"))
        );
        kills += 1;
        if st.success() {
            break;
        }
    }
    let o = train(&recipe, &c, kills > 0);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        run_result(&c, 4, &[0, 2, 4], episodes),
        reference,
        "a run killed at random moments differs from the uninterrupted one"
    );
    assert!(weights(&c, 4) == weights(&a, 4), "weights differ");
}

/// Flips one bit in the middle of `path`.
fn flip_bit(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_damaged_checkpoint_is_refused_by_eval_and_skipped_by_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = logged_recipe(tmp.path(), "three.toml", 3, 1);
    let a = tmp.path().join("a");
    let o = train(&recipe, &a, false);
    assert!(o.status.success(), "{}", text(&o));
    let reference = run_result(&a, 3, &[0, 2, 3], 8);
    let w3 = weights(&a, 3);

    // One flipped bit in the newest checkpoint's weights.
    let ck3 = a.join("checkpoints/step-000003");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck3.join("manifest.json")).unwrap()).unwrap();
    let recorded = manifest["sha256"]["trainable.safetensors"]
        .as_str()
        .unwrap()
        .to_string();
    flip_bit(&ck3.join("trainable.safetensors"));
    let ev_recipe = recipe_with(tmp.path(), "eval.toml", |t| {
        t.replace("[data.dev]", "[data.eval]")
    });
    let o = bin()
        .arg("eval")
        .arg(&ev_recipe)
        .arg("--out")
        .arg(tmp.path().join("ev"))
        .arg("--checkpoint")
        .arg(&ck3)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&ck3.join("trainable.safetensors").display().to_string()),
        "{t}"
    );
    assert!(t.contains(&recorded), "the recorded hash is not named: {t}");
    let actual = t
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64 && *w != recorded)
        .count();
    assert_eq!(actual, 1, "the file's own hash is not named: {t}");
    assert!(!t.contains("panicked"), "{t}");

    // --resume falls back to checkpoint 2, says so, and redoes step 3 and its eval.
    let o = train(&recipe, &a, true);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("damaged") && t.contains("step-000003") && t.contains("resumed from"),
        "{t}"
    );
    assert!(t.contains("step-000002 (step 2)"), "{t}");
    assert!(a.join("checkpoints/damaged-step-000003").is_dir());
    assert_eq!(run_result(&a, 3, &[0, 2, 3], 8), reference);
    assert!(weights(&a, 3) == w3, "step 3 redone differs");

    // A checkpoint written before checksums (no manifest) still evaluates, with a warning.
    std::fs::remove_file(a.join("checkpoints/step-000003/manifest.json")).unwrap();
    let o = bin()
        .arg("eval")
        .arg(&ev_recipe)
        .arg("--out")
        .arg(tmp.path().join("ev-old"))
        .arg("--checkpoint")
        .arg(a.join("checkpoints/step-000003"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("not verified"), "{t}");
}

#[test]
fn impossible_training_recipes_fail_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "grpo with a group of one",
            Box::new(|t: String| t.replace("group_size = 4", "group_size = 1")),
            "train.group_size",
        ),
        (
            "mini-batch larger than the batch",
            Box::new(|t: String| t.replace("mini_batch_size = 8", "mini_batch_size = 64")),
            "train.mini_batch_size",
        ),
        (
            "no training data",
            Box::new(|t: String| {
                t.replace(
                    "[data.train]\nkind = \"memagent-json\"\npath = \"configs/tests/tiny_letters.jsonl\"\nlimit = 8\n",
                    "",
                )
            }),
            "data.train",
        ),
        (
            "training data file missing",
            Box::new(|t: String| {
                t.replace("limit = 8", "limit = 8\noffset = 0").replace(
                    "path = \"configs/tests/tiny_letters.jsonl\"\nlimit",
                    "path = \"configs/tests/nope.jsonl\"\nlimit",
                )
            }),
            "nope.jsonl",
        ),
        (
            "a model the trainer cannot update",
            Box::new(|t: String| {
                t.replace(
                    "kind = \"burn\"\npath = \"configs/models/tiny-byte\"\ninit_seed = 0",
                    "kind = \"scripted\"",
                )
            }),
            "model.kind",
        ),
        (
            "dev eval without a dev split",
            Box::new(|t: String| {
                t.replace(
                    "[data.dev]\nkind = \"memagent-json\"\npath = \"configs/tests/tiny_letters.jsonl\"\noffset = 8\n",
                    "",
                )
            }),
            "train.eval_every",
        ),
        (
            "a misspelt key",
            Box::new(|t: String| t.replace("kl_beta = 1e-3", "kl_betta = 1e-3")),
            "train.kl_betta",
        ),
        (
            "rollout paths that contradict the group size",
            Box::new(|t: String| t.replace("[train.agent]", "[train.agent]\npaths = 3")),
            "train.group_size",
        ),
        (
            "a reward that does not exist",
            Box::new(|t: String| t.replace("kind = \"overlong\"", "kind = \"overlength\"")),
            "train.rewards",
        ),
    ];
    for (i, (what, edit, want)) in cases.iter().enumerate() {
        let r = recipe_with(tmp.path(), &format!("bad{i}.toml"), edit);
        assert_ne!(
            std::fs::read_to_string(&r).unwrap(),
            std::fs::read_to_string(root().join(RECIPE)).unwrap(),
            "case {what:?} did not change the recipe"
        );
        let out = tmp.path().join(format!("out{i}"));
        let o = train(&r, &out, false);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {t}");
        assert!(t.contains(want), "{what}: expected {want:?} in: {t}");
        assert!(!t.contains("panicked"), "{what}: {t}");
        assert!(!out.exists(), "{what}: work started before the error");
    }
}

const MEMORY_R1_RECIPE: &str = "configs/tests/memory_r1_grpo_tiny.toml";

#[test]
fn memory_r1_manager_stage_trains_only_the_memory_roles() {
    if !root()
        .join("../shared/data/locomo/locomo_conv26_conv30.json")
        .exists()
    {
        eprintln!("skipped: ../shared/data/locomo is absent");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = train(&root().join(MEMORY_R1_RECIPE), &out, false);
    assert!(o.status.success(), "{}", text(&o));
    let m = metrics(&out);
    assert_eq!(m.len(), 2);
    let rows: u64 = m.iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    let updates: u64 = m.iter().map(|s| s["updates"].as_u64().unwrap()).sum();
    assert!(rows > 0 && updates > 0, "nothing trained: {m:?}");
    // The weights moved.
    assert_ne!(weights(&out, 1), weights(&out, 2));

    // A rollout agent that reuses banks across samples would keep memory built by old
    // weights: refused before any work.
    let bad = tmp.path().join("cached.toml");
    let t = std::fs::read_to_string(root().join(MEMORY_R1_RECIPE)).unwrap();
    std::fs::write(
        &bad,
        t.replace("[train.agent]\n", "[train.agent]\nbank_cache = true\n"),
    )
    .unwrap();
    let o = train(&bad, &tmp.path().join("bad"), false);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("train.agent") && t.contains("bank_cache"), "{t}");
    assert!(!tmp.path().join("bad").join("metrics.jsonl").exists());
}

/// The answer agent of the Memory-R1 stage-1 recipe has its own (frozen) model: its calls
/// are never training rows. Naming its role in `train.roles` is a user error raised when the
/// recipe is read, before any rollout: `memfactory check` and `memfactory train` exit 2 with a
/// message naming the key, the role and its model, and `train` creates no run directory (the
/// same role frozen only through `[train.agent]` is refused too). The default roles (all)
/// train exactly what the explicit memory roles train.
#[test]
fn a_frozen_models_role_is_never_trained() {
    if !root()
        .join("../shared/data/locomo/locomo_conv26_conv30.json")
        .exists()
    {
        eprintln!("skipped: ../shared/data/locomo is absent");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(root().join(MEMORY_R1_RECIPE))
        .unwrap()
        .replace("steps = 2\n", "steps = 1\n")
        .replace("eval_every = 2\n", "eval_every = 0\n");
    // The first occurrence is [train]'s (the overlong reward lists the same roles).
    let roles = "roles = [\"extract\", \"manage\"]";
    assert!(base.contains(roles) && base.contains("model = { kind = \"burn\""));
    let write = |name: &str, text: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let bad = write(
        "frozen_role.toml",
        base.replacen(roles, "roles = [\"extract\", \"manage\", \"answer\"]", 1),
    );
    // The same frozen answerer, given only to the rollout agent.
    let answer_model =
        "model = { kind = \"burn\", path = \"configs/models/tiny-byte\", init_seed = 1 }\n";
    assert!(base.contains(answer_model));
    let bad_rollout = write(
        "frozen_rollout_role.toml",
        base.replacen(answer_model, "", 1)
            .replacen(roles, "roles = [\"manage\", \"answer\"]", 1)
            .replace(
                "manage = { temperature = 1.0 }\n",
                "manage = { temperature = 1.0 }\n\
                 answer = { model = { kind = \"burn\", path = \"configs/models/tiny-byte\", init_seed = 1 } }\n",
            ),
    );
    for r in [&bad, &bad_rollout] {
        let mut check = bin();
        let o = check.arg("check").arg(r).output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            t.contains("`train.roles`") && t.contains("role `answer`") && t.contains("op:answer"),
            "{t}"
        );
        assert!(t.contains("not the policy"), "{t}");
        assert!(!t.contains("panicked"), "{t}");
        let out = tmp.path().join("bad");
        let o = train(r, &out, false);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            t.contains("`train.roles`") && t.contains("role `answer`") && t.contains("op:answer"),
            "{t}"
        );
        // Refused before any rollout: no step ran, no run directory was made.
        assert!(!t.contains("step 1"), "{t}");
        assert!(!out.exists(), "{t}");
    }
    // Without the answer role the rollout-only frozen answerer is a valid recipe.
    let ok_rollout = write(
        "ok_rollout.toml",
        std::fs::read_to_string(&bad_rollout).unwrap().replacen(
            "roles = [\"manage\", \"answer\"]",
            "roles = [\"manage\"]",
            1,
        ),
    );
    let o = bin().arg("check").arg(&ok_rollout).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let explicit = write("explicit.toml", base.clone());
    let default = write("default.toml", base.replacen(roles, "", 1));
    let (a, b) = (tmp.path().join("explicit"), tmp.path().join("default"));
    for (r, out) in [(&explicit, &a), (&default, &b)] {
        let o = train(r, out, false);
        assert!(o.status.success(), "{}", text(&o));
    }
    let (ma, mb) = (metrics(&a), metrics(&b));
    println!(
        "rows: explicit roles {}, default roles {}",
        ma[0]["rows"], mb[0]["rows"]
    );
    assert!(ma[0]["rows"].as_u64().unwrap() > 0);
    assert_eq!(
        ma, mb,
        "the default roles trained something else than the policy's roles"
    );
    assert_eq!(weights(&a, 1), weights(&b, 1));
}

/// `zero_variance = "resample"` and `old_logprobs = "recompute"` through `memfactory train`:
/// the extra rounds come from a seeded stream, so 1 step + `--resume` + 1 step equals 2 steps.
#[test]
fn resampling_with_recomputed_old_logprobs_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let edit = |n: usize| {
        move |t: String| {
            steps(n)(t)
                .replace("eval_every = 2\n", "eval_every = 0\n")
                .replace("checkpoint_every = 2\n", "checkpoint_every = 1\n")
                .replace(
                    "roles = []",
                    "roles = []\nzero_variance = \"resample\"\nresample_max_rounds = 2\nold_logprobs = \"recompute\"",
                )
        }
    };
    let (r1, r2) = (
        recipe_with(tmp.path(), "one.toml", edit(1)),
        recipe_with(tmp.path(), "two.toml", edit(2)),
    );
    let (a, b) = (tmp.path().join("straight"), tmp.path().join("resumed"));
    let o = train(&r2, &a, false);
    assert!(o.status.success(), "{}", text(&o));
    let o = train(&r1, &b, false);
    assert!(o.status.success(), "{}", text(&o));
    let o = train(&r2, &b, true);
    assert!(o.status.success(), "{}", text(&o));
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma.len(), 2);
    for m in &ma {
        println!(
            "step {}: rows {} resample rounds {} left out {} ratio {} gap {}",
            m["step"],
            m["rows"],
            m["resample_rounds"],
            m["resample_dropped_groups"],
            m["ratio"],
            m["logprob_gap_max"]
        );
        assert!(m["resample_rounds"].as_u64().unwrap() <= 2);
        assert!(m["logprob_gap_tokens"].as_u64().unwrap() > 0);
    }
    assert_eq!(ma, mb);
    assert_eq!(weights(&a, 2), weights(&b, 2));
}

const RMM_RECIPE: &str = "configs/tests/rmm_grpo_tiny.toml";

#[test]
fn rmm_answer_stage_trains() {
    let minilm = std::env::var_os("MEMFACTORY_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/all-minilm-l6-v2"));
    if !root()
        .join("../shared/data/locomo/locomo_conv26_conv30.json")
        .exists()
        || !minilm.join("model.safetensors").exists()
    {
        eprintln!(
            "skipped: needs ../shared/data/locomo and all-MiniLM-L6-v2 ({})",
            minilm.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("rmm.toml");
    let t = std::fs::read_to_string(root().join(RMM_RECIPE)).unwrap();
    std::fs::write(
        &recipe,
        t.replace(
            "path = \"models/all-minilm-l6-v2\"",
            &format!("path = {:?}", minilm.display().to_string()),
        ),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let o = train(&recipe, &out, false);
    assert!(o.status.success(), "{}", text(&o));
    let m = metrics(&out);
    assert_eq!(m.len(), 2);
    let rows: u64 = m.iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    assert!(rows > 0, "nothing trained: {m:?}");
    assert_ne!(weights(&out, 1), weights(&out, 2));
    // The dev eval ran the whole RMM episode: reflection at session ends, answer.
    let dev = std::fs::read_to_string(out.join("eval.jsonl")).unwrap();
    assert_eq!(dev.lines().count(), 2, "{dev}");
}
