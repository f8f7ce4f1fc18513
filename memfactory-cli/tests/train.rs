//! `memfactory train` end to end on the tiny random byte-level model
//! (`configs/tests/grpo_tiny_random.toml`): run directory contents, exact resumption
//! (N steps + `--resume` + N steps = 2N steps, also after SIGKILL mid-run), evaluating a
//! checkpoint, and impossible recipes rejected before any work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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
}

#[test]
fn training_killed_mid_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    // Reference: 3 uninterrupted steps.
    let three = recipe_with(tmp.path(), "three.toml", |t| {
        steps(3)(t)
            .replace("checkpoint_every = 2", "checkpoint_every = 1")
            .replace("eval_every = 2", "eval_every = 0")
    });
    let a = tmp.path().join("a");
    let o = train(&three, &a, false);
    assert!(o.status.success(), "{}", text(&o));

    // Same run, SIGKILLed once its first checkpoint exists.
    let b = tmp.path().join("b");
    let mut child = bin()
        .arg("train")
        .arg(&three)
        .arg("--out")
        .arg(&b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !b.join("checkpoints/step-000001/state.json").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!("training ended before it could be killed: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = train(&three, &b, true);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(metrics(&b), metrics(&a));
    assert!(
        weights(&b, 3) == weights(&a, 3),
        "weights differ after kill + resume"
    );
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
