//! `memfactory train configs/tests/memory_r1_turn_tiny.toml`: Memory-R1's per-turn manager
//! stage trains on the tiny random model with a scripted teacher and a scripted, frozen
//! answerer. Checks that training rows come only from `manage` calls, that the paths of a
//! group start from the same teacher snapshot, that the tuple file is written once and
//! reused by a second run, and that data without evidence links is a recipe error (exit 2)
//! naming `agent.stage`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RECIPE: &str = "configs/tests/memory_r1_turn_tiny.toml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn train(recipe: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memfactory"))
        .current_dir(root())
        .arg("train")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The snapshot edit of an episode, as its (id, content) pairs.
fn snapshot(ep: &Value) -> Vec<(String, String)> {
    let snaps: Vec<&Value> = ep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "edit" && s["op"] == "turn-snapshot")
        .collect();
    assert_eq!(snaps.len(), 1, "{ep}");
    snaps[0]["edits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["op"], "add", "{e}");
            let item = &e["item"];
            (
                item["id"].as_str().unwrap().to_string(),
                item["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn notes<'e>(ep: &'e Value, label: &str) -> Vec<&'e str> {
    ep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "note" && s["label"] == label)
        .map(|s| s["text"].as_str().unwrap())
        .collect()
}

#[test]
fn manager_turn_stage_trains_only_manage_from_one_snapshot_per_group() {
    if !root()
        .join("../shared/data/locomo/locomo_conv26_conv30.json")
        .exists()
    {
        eprintln!("skipping: ../shared/data/locomo is absent");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tuples = tmp.path().join("tuples");
    let recipe = tmp.path().join("turn.toml");
    let src = std::fs::read_to_string(root().join(RECIPE)).unwrap();
    assert!(src.contains("tuples_dir = \"runs/memory-r1-turns\""));
    std::fs::write(
        &recipe,
        src.replace(
            "tuples_dir = \"runs/memory-r1-turns\"",
            &format!("tuples_dir = {:?}", tuples.display().to_string()),
        ),
    )
    .unwrap();

    let out = tmp.path().join("run");
    let o = train(&recipe, &out);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = lines(&out.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 2);
    let rollouts = lines(&out.join("rollouts.jsonl"));
    let mut trained = 0;
    for m in &metrics {
        let step = m["step"].as_u64().unwrap();
        let eps: Vec<&Value> = rollouts
            .iter()
            .filter(|r| r["step"].as_u64() == Some(step))
            .map(|r| &r["episode"])
            .collect();
        assert_eq!(eps.len(), 2 * 4, "samples_per_step x group_size");
        let mut manage = 0;
        let mut others = 0;
        for ep in &eps {
            for s in ep["steps"].as_array().unwrap() {
                if s["step"] != "lm" {
                    continue;
                }
                match s["role"].as_str().unwrap() {
                    "manage" => manage += 1,
                    "answer" => others += 1,
                    r => panic!("the policy made a `{r}` call in stage manager-turn"),
                }
            }
        }
        assert!(others > 0, "the frozen answerer made no call");
        // One training row per policy `manage` call of the groups that were not skipped.
        let rows = m["rows"].as_u64().unwrap();
        if m["skipped_groups"].as_u64() == Some(0) {
            assert_eq!(rows, manage, "step {step}: {m}");
        } else {
            assert!(rows <= manage, "step {step}: {m}");
        }
        trained += rows;

        // The group's paths start from the same snapshot.
        let mut groups: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for ep in &eps {
            groups
                .entry(ep["sample_id"].as_str().unwrap())
                .or_default()
                .push(ep);
        }
        assert_eq!(groups.len(), 2);
        for (id, g) in &groups {
            assert_eq!(g.len(), 4, "{id}");
            let first = snapshot(g[0]);
            assert!(g.iter().all(|e| snapshot(e) == first), "{id}");
            assert!(g.iter().all(|e| notes(e, "turn-tuple").len() == 1), "{id}");
        }
    }
    assert!(trained > 0, "nothing trained: {metrics:?}");
    assert!(metrics.iter().any(|m| m["updates"].as_u64() > Some(0)));

    // Some snapshot is not empty (history of 4 turns), and the tuple file holds the tuples.
    assert!(
        rollouts.iter().any(|r| !snapshot(&r["episode"]).is_empty()),
        "every snapshot is empty"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&tuples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let before = std::fs::read_to_string(&files[0]).unwrap();
    assert!(before.lines().next().unwrap().contains("memory-r1-turns/1"));

    // A second run reuses every tuple: nothing is built, the file is unchanged.
    let out2 = tmp.path().join("run2");
    let o = train(&recipe, &out2);
    assert!(o.status.success(), "{}", text(&o));
    for r in lines(&out2.join("rollouts.jsonl")) {
        for n in notes(&r["episode"], "turn-tuple") {
            assert!(n.contains(" reused: "), "{n}");
        }
    }
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), before);

    // Data without evidence links: a recipe error naming the key, exit code 2.
    let bad = tmp.path().join("unlinked.toml");
    let t = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&bad, t.replace("link_turn = \"first\"\n", "")).unwrap();
    let o = train(&bad, &tmp.path().join("bad"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("agent.stage") && t.contains("link_turn"), "{t}");
}
