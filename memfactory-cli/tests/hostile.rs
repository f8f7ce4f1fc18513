//! Hostile inputs to the `memfactory` binary, table-driven: bad recipes, bad data files,
//! damaged model files, bad command-line flags. Every case runs under a 4 GiB address-space
//! limit and a time limit, and must exit with its expected code (2 for the user's mistakes),
//! name the offending key or path on stderr, and never panic (no "panicked", no exit 101,
//! no death by signal).
//!
//! Also here: a closed stdout is not a crash (`memfactory list | head`), credentials in a
//! recipe never reach a file of the run directory, and a sweep checks every combination
//! before running the first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The address-space limit of every run, in KiB (`ulimit -v`).
const MEMORY_LIMIT_KIB: u64 = 4 << 20;
/// How long one run may take.
const TIME_LIMIT: Duration = Duration::from_secs(120);

const DATA: &str = r#"{"_id": "a", "input": "What is the magic number?", "context": "Noise noise. The magic number is 4242. More noise here.", "answers": ["4242"]}
{"_id": "b", "input": "What is the magic number?", "context": "The magic number is 4242. Then a lot of unrelated text follows.", "answers": ["4242"]}
"#;

/// A scripted-LM MemAgent recipe that evaluates `data.jsonl`.
const RECIPE: &str = r#"[run]
name = "smoke"
seed = 7

[model]
kind = "scripted"
default = ""
rules = [
  { contains = ["Your answer:", "4242"], reply = "It is \\boxed{4242}." },
  { contains = ["Your answer:"], reply = "I do not know." },
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
metrics = ["sub-em", "exact-match"]
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The scripted RULER smoke recipe (generated data, no files).
fn ruler_recipe() -> String {
    std::fs::read_to_string(root().join("configs/memagent_ruler_scripted_smoke.toml")).unwrap()
}

/// The tiny random Qwen2 model of the burn engine's golden tests (256-token context).
fn tiny_model() -> PathBuf {
    root().join("memfactory-lm/burn/tests/golden/tiny-qwen2")
}

/// A MemAgent recipe on the tiny burn model.
fn burn_recipe(extra: &str) -> String {
    format!(
        "[model]\nkind = \"burn\"\npath = {:?}\n\n[agent]\nkind = \"memagent\"\nchunk_tokens = 32\n\n\
         [agent.update]\nkind = \"overwrite\"\nmemory_tokens = 32\nmax_new_tokens = 16\n\n\
         [agent.answer]\nmax_new_tokens = 16\n{extra}\n\n[data.eval]\nkind = \"memagent-json\"\n\
         path = \"data.jsonl\"\n",
        tiny_model().display().to_string()
    )
}

/// What a run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary in `dir` under the memory and time limits, stdout to `stdout`.
fn run_limited(dir: &Path, args: &[String], stdout: Stdio) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_memfactory"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run memfactory");
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > TIME_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("memfactory {args:?} ran past {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// One hostile input: files to lay out in a fresh directory (beside `data.jsonl` and
/// `recipe.toml`), the command line, and what must come out.
struct Case {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
    dirs: Vec<&'static str>,
    sqlite_clash: Option<&'static str>,
    args: Vec<String>,
    /// Accepted exit codes.
    codes: &'static [i32],
    /// Each must appear on stderr.
    needles: Vec<String>,
    /// Paths (relative to the case directory) that must not exist afterwards.
    absent: Vec<String>,
}

fn case(name: &'static str, args: &str) -> Case {
    Case {
        name,
        files: Vec::new(),
        dirs: Vec::new(),
        sqlite_clash: None,
        args: args.split_whitespace().map(str::to_string).collect(),
        codes: &[2],
        needles: Vec::new(),
        absent: Vec::new(),
    }
}

impl Case {
    /// `recipe.toml` replaced.
    fn recipe(self, text: impl Into<String>) -> Self {
        self.file("recipe.toml", text.into().into_bytes())
    }
    /// `recipe.toml` (the case's, else [`RECIPE`]) with `from` replaced by `to` (which must
    /// occur).
    fn edit(mut self, from: &str, to: &str) -> Self {
        let at = self.files.iter().position(|(p, _)| p == "recipe.toml");
        let text = match at {
            Some(i) => String::from_utf8(self.files.remove(i).1).unwrap(),
            None => RECIPE.to_string(),
        };
        assert!(
            text.contains(from),
            "{}: `{from}` not in the recipe",
            self.name
        );
        self.recipe(text.replacen(from, to, 1))
    }
    /// `path` becomes an SQLite database of another application.
    fn sqlite_clash(mut self, path: &'static str) -> Self {
        self.sqlite_clash = Some(path);
        self
    }
    fn file(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.to_string(), bytes.into()));
        self
    }
    fn dir(mut self, path: &'static str) -> Self {
        self.dirs.push(path);
        self
    }
    /// An argument with spaces or other characters `case` would split.
    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    fn names(mut self, needles: &[&str]) -> Self {
        self.needles.extend(needles.iter().map(|s| s.to_string()));
        self
    }
    fn exits(mut self, codes: &'static [i32]) -> Self {
        self.codes = codes;
        self
    }
    fn leaves_no(mut self, path: &str) -> Self {
        self.absent.push(path.to_string());
        self
    }
}

/// Writes an SQLite database at `path` with a table of the store's name and another
/// schema (another application's file).
fn clashing_sqlite(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE memfactory_items (x INTEGER, y TEXT); INSERT INTO memfactory_items VALUES (1, 'theirs');",
    )
    .unwrap();
}

/// Runs `c` and checks everything it promises; returns a description of what went wrong.
fn check(c: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.jsonl"), DATA).unwrap();
    std::fs::write(d.join("recipe.toml"), RECIPE).unwrap();
    std::fs::write(d.join("ruler.toml"), ruler_recipe()).unwrap();
    std::fs::create_dir(d.join("inner")).unwrap();
    std::fs::write(d.join("inner/data.jsonl"), DATA).unwrap();
    for p in &c.dirs {
        std::fs::create_dir_all(d.join(p)).unwrap();
    }
    for (p, bytes) in &c.files {
        let p = d.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    if let Some(p) = c.sqlite_clash {
        clashing_sqlite(&d.join(p));
    }
    // Traversal cases aim two levels up: run them from `inner/` so that stays inside the
    // temporary directory.
    let r = run_limited(&d.join("inner"), &c.args, Stdio::piped());
    let shown = format!(
        "{}: memfactory {:?} exited {:?}\n--- stderr\n{}",
        c.name, c.args, r.code, r.stderr
    );
    let mut problems = Vec::new();
    match r.code {
        None => problems.push("killed by a signal (out of memory?)".to_string()),
        Some(101) => problems.push("exit 101 (a panic)".to_string()),
        Some(code) if !c.codes.contains(&code) => {
            problems.push(format!("exit {code}, expected one of {:?}", c.codes))
        }
        _ => {}
    }
    if r.stderr.contains("panicked") || r.stderr.contains("memory allocation") {
        problems.push("panicked or ran out of memory".to_string());
    }
    if r.code != Some(0) {
        for n in &c.needles {
            if !r.stderr.contains(n.as_str()) {
                problems.push(format!("stderr does not name `{n}`"));
            }
        }
    }
    for p in &c.absent {
        if d.join("inner").join(p).exists() {
            problems.push(format!("{p} was created"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{shown}\n--- problems: {}", problems.join("; ")))
    }
}

/// Runs every case and fails listing all that went wrong.
fn check_all(cases: &[Case]) {
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} hostile inputs misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Cases run from `inner/`: files laid out at the top of the case directory are `../NAME`.
fn recipe_cases() -> Vec<Case> {
    vec![
        case("malformed TOML", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = = 16")
            .names(&["recipe.toml", "line 16"]),
        case("unterminated string", "check ../recipe.toml")
            .edit("name = \"smoke\"", "name = \"smoke")
            .names(&["recipe.toml", "line 2"]),
        case("unclosed table header", "check ../recipe.toml")
            .edit("[agent]", "[agent")
            .names(&["recipe.toml", "line 14"]),
        case("duplicate key", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = 40\nchunk_tokens = 41")
            .names(&["recipe.toml", "line 17"]),
        case("duplicate table", "check ../recipe.toml")
            .recipe(format!("{RECIPE}\n[agent]\nkind = \"memagent\"\n"))
            .names(&["recipe.toml", "line"]),
        case("integer beyond u64", "check ../recipe.toml")
            .edit("seed = 7", "seed = 18446744073709551616")
            .names(&["recipe.toml", "line 3"]),
        case("unknown top-level table", "check ../recipe.toml")
            .recipe(format!("{RECIPE}\n[trian]\nx = 1\n"))
            .names(&["`trian`", "unknown key"]),
        case("unknown agent key", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = 40\nchunk_size = 3")
            .names(&["agent.chunk_size"]),
        case("unknown op key", "check ../recipe.toml")
            .edit("memory_tokens = 64", "memory_tokens = 64\nmem = 1")
            .names(&["agent.update.mem"]),
        case("unknown agent kind", "check ../recipe.toml")
            .edit("kind = \"memagent\"", "kind = \"memgpt\"")
            .names(&["agent.kind", "memgpt"]),
        case("unknown model kind", "check ../recipe.toml")
            .edit("kind = \"scripted\"", "kind = \"gpt-9\"")
            .names(&["model.kind", "gpt-9"]),
        case("unknown data kind", "check ../recipe.toml")
            .edit("kind = \"memagent-json\"", "kind = \"squad\"")
            .names(&["data.eval.kind", "squad"]),
        case("unknown store kind", "check ../recipe.toml")
            .recipe(format!("{RECIPE}\n[store]\nkind = \"redis\"\n"))
            .names(&["store.kind", "redis"]),
        case("unknown metric", "check ../recipe.toml")
            .edit("\"exact-match\"]", "\"bleu-9\"]")
            .names(&["eval.metrics[1]", "bleu-9"]),
        case("string for an integer", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = \"big\"")
            .names(&["agent.chunk_tokens"]),
        case("table for an integer", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = { a = 1 }")
            .names(&["agent.chunk_tokens"]),
        case("string for a table", "check ../recipe.toml")
            .edit(
                "[agent.update]\nkind = \"overwrite\"\nmemory_tokens = 64",
                "",
            )
            .edit(
                "chunk_tokens = 40",
                "chunk_tokens = 40\nupdate = \"overwrite!\"",
            )
            .names(&["agent.update"]),
        case("array for a table", "check ../recipe.toml")
            .recipe(RECIPE.replace("[eval]\n", "[eval]\nlimit = [1, 2]\n"))
            .names(&["eval.limit"]),
        case("missing model table", "check ../recipe.toml")
            .edit("[model]", "[modell]")
            .names(&["missing table [model]"]),
        case("missing agent table", "check ../recipe.toml")
            .recipe(
                RECIPE
                    .replace("[agent]\nkind = \"memagent\"\nchunk_tokens = 40\n", "")
                    .replace(
                        "[agent.update]\nkind = \"overwrite\"\nmemory_tokens = 64\n",
                        "",
                    ),
            )
            .names(&["[agent]"]),
        case("missing data path", "check ../recipe.toml")
            .edit("path = \"data.jsonl\"", "")
            .names(&["data.eval.path"]),
        case("negative chunk size", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = -5")
            .names(&["agent.chunk_tokens"]),
        case("negative memory size", "check ../recipe.toml")
            .edit("memory_tokens = 64", "memory_tokens = -1")
            .names(&["agent.update.memory_tokens"]),
        case("zero chunk size", "check ../recipe.toml")
            .edit("chunk_tokens = 40", "chunk_tokens = 0")
            .names(&["agent.chunk_tokens"]),
        // No cap on a scripted model (it has no context length): it runs, in bounded memory.
        case("huge memory size", "eval ../recipe.toml --limit 1 --out o")
            .edit("memory_tokens = 64", "memory_tokens = 9223372036854775807")
            .exits(&[0, 2])
            .names(&["agent.update.memory_tokens"]),
        case("huge chunk size", "eval ../recipe.toml --limit 1 --out o")
            .edit("chunk_tokens = 40", "chunk_tokens = 9223372036854775807")
            .exits(&[0, 2])
            .names(&["agent.chunk_tokens"]),
        case("NaN temperature", "check ../recipe.toml")
            .edit(
                "memory_tokens = 64",
                "memory_tokens = 64\ntemperature = nan",
            )
            .names(&["agent.update.temperature"]),
        case("infinite temperature", "check ../recipe.toml")
            .edit(
                "memory_tokens = 64",
                "memory_tokens = 64\ntemperature = inf",
            )
            .names(&["agent.update.temperature"]),
        case("negative seed", "check ../recipe.toml")
            .edit("seed = 7", "seed = -7")
            .names(&["run.seed"]),
        case("zero concurrency", "check ../recipe.toml")
            .recipe(RECIPE.replace("[eval]\n", "[eval]\nconcurrency = 0\n"))
            .names(&["eval.concurrency"]),
        case("huge concurrency", "check ../recipe.toml")
            .recipe(RECIPE.replace("[eval]\n", "[eval]\nconcurrency = 1000000000\n"))
            .names(&["eval.concurrency"]),
        case("negative eval limit", "check ../recipe.toml")
            .recipe(RECIPE.replace("[eval]\n", "[eval]\nlimit = -1\n"))
            .names(&["eval.limit"]),
        case("recipe is a directory", "check ../adir.toml")
            .dir("adir.toml")
            .names(&["adir.toml", "is a directory", "expected a recipe file"]),
        case("recipe is not UTF-8", "check ../latin1.toml")
            .file("latin1.toml", b"[run]\nname = \"caf\xe9\"\n".to_vec())
            .names(&["latin1.toml", "line 2", "not UTF-8"]),
        case("recipe is missing", "check ../absent.toml").names(&["absent.toml", "not found"]),
        case("recipe under a file", "check ../recipe.toml/x.toml")
            .names(&["recipe.toml/x.toml", "not a directory"]),
        case("recipe is empty", "check ../empty.toml")
            .file("empty.toml", "")
            .names(&["missing table [model]"]),
        case("recipe is huge", "check ../huge.toml")
            .file("huge.toml", vec![b'#'; 17 << 20])
            .names(&["huge.toml", "larger than"]),
        case("train recipe is a directory", "train ../adir.toml")
            .dir("adir.toml")
            .names(&["adir.toml", "is a directory"]),
        case("NUL in the run name", "eval ../recipe.toml --limit 1")
            .edit("name = \"smoke\"", "name = \"a\\u0000b\"")
            .names(&["run.name", "NUL"]),
        case("run name climbs out", "eval ../recipe.toml --limit 1")
            .edit("name = \"smoke\"", "name = \"../../escaped\"")
            .names(&["run.name", "../../escaped"])
            .leaves_no("../escaped")
            .leaves_no("runs"),
        case("run name is ..", "eval ../recipe.toml --limit 1")
            .edit("name = \"smoke\"", "name = \"..\"")
            .names(&["run.name"])
            .leaves_no("runs"),
        case("run name is .", "eval ../recipe.toml --limit 1")
            .edit("name = \"smoke\"", "name = \".\"")
            .names(&["run.name"]),
        case("run name is empty", "eval ../recipe.toml --limit 1")
            .edit("name = \"smoke\"", "name = \"\"")
            .names(&["run.name"]),
        case("run name with a backslash", "eval ../recipe.toml --limit 1")
            .edit("name = \"smoke\"", "name = \"a\\\\b\"")
            .names(&["run.name"]),
        case(
            "sweep out from a climbing run name",
            "eval ../recipe.toml --limit 1",
        )
        .edit("name = \"smoke\"", "name = \"../../escaped\"")
        .arg("--sweep")
        .arg("agent.chunk_tokens=30,40")
        .names(&["run.name"])
        .leaves_no("../escaped-sweep"),
    ]
}

fn data_cases() -> Vec<Case> {
    let eval = "eval ../recipe.toml --out o";
    let with_data = |name: &'static str, file: &str, bytes: &[u8]| {
        case(name, eval)
            .edit("data.jsonl", &format!("../{file}"))
            .file(file, bytes.to_vec())
    };
    vec![
        case("data file is missing", eval)
            .edit("data.jsonl", "../nope.jsonl")
            .names(&["nope.jsonl", "not found"]),
        case("data file is a directory", eval)
            .edit("data.jsonl", "../ddir")
            .dir("ddir")
            .names(&["ddir", "is a directory"]),
        case("data path under a file", eval)
            .edit("data.jsonl", "../data.jsonl/x.jsonl")
            .names(&["data.jsonl/x.jsonl", "not a directory"]),
        with_data(
            "malformed JSON line",
            "bad.jsonl",
            b"{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"]}\n{\"input\": \"q\", \"context\": \n",
        )
        .names(&["bad.jsonl", "line 2"]),
        with_data("truncated data file", "cut.jsonl", &DATA.as_bytes()[..150])
            .names(&["cut.jsonl", "line 2"]),
        with_data(
            "missing field",
            "nofield.jsonl",
            b"{\"input\": \"q\", \"answers\": [\"a\"]}\n",
        )
        .names(&["nofield.jsonl", "context"]),
        with_data(
            "field of the wrong type",
            "wrongtype.jsonl",
            b"{\"input\": \"q\", \"context\": \"c\", \"answers\": 3}\n",
        )
        .names(&["wrongtype.jsonl", "answers"]),
        with_data(
            "data not UTF-8",
            "latin1.jsonl",
            b"{\"input\": \"caf\xe9\", \"context\": \"c\", \"answers\": [\"a\"]}\n",
        )
        .names(&["latin1.jsonl", "UTF-8"]),
        with_data("empty data file", "empty.jsonl", b"").names(&["empty.jsonl"]),
        with_data("binary data file", "bin.jsonl", &[0u8, 159, 146, 150, 255, 0, 1])
            .names(&["bin.jsonl"]),
        case("SQLite store of another schema", eval)
            .recipe(format!("{RECIPE}\n[store]\nkind = \"sqlite\"\npath = \"../theirs.db\"\n"))
            .sqlite_clash("theirs.db")
            .names(&["theirs.db"]),
        case("SQLite store is a directory", eval)
            .recipe(format!("{RECIPE}\n[store]\nkind = \"sqlite\"\npath = \"../sdir.db\"\n"))
            .dir("sdir.db")
            .names(&["sdir.db", "directory"]),
        case("compare runs that do not exist", "compare ../nope-a ../nope-b")
            .names(&["nope-a"]),
        case("compare directories without scores", "compare ../ea ../eb")
            .dir("ea")
            .dir("eb")
            .names(&["scores.jsonl"]),
    ]
}

fn model_cases() -> Vec<Case> {
    let tiny = tiny_model();
    let copy = |name: &str| -> Vec<(String, Vec<u8>)> {
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
        .iter()
        .map(|f| (format!("{name}/{f}"), std::fs::read(tiny.join(f)).unwrap()))
        .collect()
    };
    let damaged = |case_name: &'static str, file: &str, bytes: Option<Vec<u8>>| {
        let mut c = case(case_name, "chat --model ../m hello");
        c.files = copy("m")
            .into_iter()
            .filter(|(p, _)| p != &format!("m/{file}"))
            .collect();
        if let Some(b) = bytes {
            c.files.push((format!("m/{file}"), b));
        }
        c.names(&[&format!("m/{file}")])
    };
    let safetensors = std::fs::read(tiny.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(tiny.join("config.json")).unwrap();
    vec![
        case(
            "model path is missing",
            "chat --model ../absent-model hello",
        )
        .names(&["absent-model"]),
        case("model directory is empty", "chat --model ../emptym hello")
            .dir("emptym")
            .names(&["emptym"]),
        case("GGUF of garbage", "chat --model ../bad.gguf hello")
            .file("bad.gguf", b"GGUF\x03\x00\x00\x00garbage".to_vec())
            .names(&["bad.gguf"]),
        case("empty GGUF", "chat --model ../zero.gguf hello")
            .file("zero.gguf", Vec::new())
            .names(&["zero.gguf"]),
        case(
            "GGUF claiming 2^63 tensors",
            "chat --model ../huge.gguf hello",
        )
        .file(
            "huge.gguf",
            b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f\x01\x00\x00\x00\x00\x00\x00\x00"
                .to_vec(),
        )
        .names(&["huge.gguf"]),
        damaged("config.json is missing", "config.json", None),
        damaged(
            "config.json is malformed",
            "config.json",
            Some(b"{\"hidden_size\": ".to_vec()),
        ),
        damaged(
            "config.json is implausibly large",
            "config.json",
            Some(
                config
                    .replace(
                        "\"num_hidden_layers\": 2",
                        "\"num_hidden_layers\": 100000000",
                    )
                    .replace("\"hidden_size\": 64", "\"hidden_size\": 1099511627776")
                    .into_bytes(),
            ),
        ),
        damaged(
            "safetensors truncated",
            "model.safetensors",
            Some(safetensors[..safetensors.len() / 2].to_vec()),
        ),
        damaged(
            "safetensors header too large",
            "model.safetensors",
            Some(b"\xff\xff\xff\xff\xff\xff\x00\x00{".to_vec()),
        ),
        damaged("tokenizer is missing", "tokenizer.json", None),
        damaged(
            "tokenizer is malformed",
            "tokenizer.json",
            Some(b"{".to_vec()),
        ),
        case("recipe model path is missing", "check ../recipe.toml")
            .edit(
                "kind = \"scripted\"\ndefault = \"\"",
                "kind = \"burn\"\npath = \"../nowhere.gguf\"\ndefault = \"\"",
            )
            .names(&["nowhere.gguf"]),
    ]
}

fn flag_cases() -> Vec<Case> {
    let eval = "eval ../recipe.toml --out o";
    vec![
        case("--checkpoint names a file", eval)
            .arg("--checkpoint")
            .arg("../data.jsonl")
            .names(&["data.jsonl", "expected a checkpoint directory"])
            .leaves_no("o"),
        case("--checkpoint is missing", eval)
            .arg("--checkpoint")
            .arg("../no-ckpt")
            .names(&["no-ckpt", "not found"])
            .leaves_no("o"),
        case("--checkpoint is not a checkpoint", eval)
            .arg("--checkpoint")
            .arg("../notckpt")
            .dir("notckpt")
            .names(&["notckpt", "state.json"])
            .leaves_no("o"),
        case(
            "--limit beyond usize",
            "eval ../recipe.toml --limit 99999999999999999999999",
        )
        .names(&["--limit"]),
        case("--limit negative", "eval ../recipe.toml --limit=-3").names(&["--limit"]),
        case("--limit zero", "eval ../recipe.toml --limit 0 --out o")
            .names(&["--limit"])
            .leaves_no("o"),
        case("--limit not a number", "eval ../recipe.toml --limit many").names(&["--limit"]),
        case(
            "--out is a file",
            "eval ../recipe.toml --limit 1 --out ../data.jsonl",
        )
        .names(&["data.jsonl", "expected a run directory"]),
        case(
            "--out under a file",
            "eval ../recipe.toml --limit 1 --out ../data.jsonl/o",
        )
        .names(&["data.jsonl/o", "expected a run directory"]),
        case("--set without =", eval)
            .arg("--set")
            .arg("noequals")
            .names(&["KEY=VALUE"]),
        case("--set with an empty key", eval)
            .arg("--set")
            .arg("=3")
            .names(&["empty"]),
        case("--set through a value", eval)
            .arg("--set")
            .arg("agent.kind.x=3")
            .names(&["agent.kind"]),
        case("--set of the wrong type", eval)
            .arg("--set")
            .arg("agent.chunk_tokens=lots")
            .names(&["agent.chunk_tokens"]),
        case("--set of an empty key segment", eval)
            .arg("--set")
            .arg("agent..x=1")
            .names(&["agent..x"]),
        case("--sweep without =", eval)
            .arg("--sweep")
            .arg("agent.chunk_tokens")
            .names(&["KEY=V1,V2"]),
        case("--sweep naming a value twice", eval)
            .arg("--sweep")
            .arg("agent.chunk_tokens=30,30")
            .names(&["twice"]),
        case("--sweep with an empty value", eval)
            .arg("--sweep")
            .arg("agent.chunk_tokens=30,,40")
            .names(&["empty value"]),
        case("--sweep of one key twice", eval)
            .arg("--sweep")
            .arg("agent.chunk_tokens=30,40")
            .arg("--sweep")
            .arg("agent.chunk_tokens=50")
            .names(&["swept twice"]),
        case("--sweep bad value last", eval)
            .arg("--sweep")
            .arg("agent.chunk_tokens=30,40,-1")
            .names(&["agent.chunk_tokens", "agent.chunk_tokens=-1"])
            .leaves_no("o"),
        case("--sweep missing data file last", eval)
            .arg("--sweep")
            .arg("data.eval.path=../data.jsonl,../gone.jsonl")
            .names(&["gone.jsonl"])
            .leaves_no("o"),
        case("--sweep missing checkpoint last", eval)
            .arg("--sweep")
            .arg("checkpoint=base,../no-ckpt")
            .names(&["no-ckpt", "checkpoint"])
            .leaves_no("o"),
        case("--sweep checkpoint that is a file", eval)
            .arg("--sweep")
            .arg("checkpoint=base,../data.jsonl")
            .names(&["data.jsonl", "expected a checkpoint directory"])
            .leaves_no("o"),
        case("--checkpoint and a checkpoint sweep", eval)
            .arg("--checkpoint")
            .arg("../notckpt")
            .arg("--sweep")
            .arg("checkpoint=base")
            .dir("notckpt")
            .names(&["--checkpoint"]),
        case("--metric unknown in a sweep", eval)
            .arg("--sweep")
            .arg("agent.chunk_tokens=30,40")
            .arg("--metric")
            .arg("accuracy")
            .names(&["--metric", "accuracy"])
            .leaves_no("o"),
        case("unknown subcommand", "evaluate ../recipe.toml").names(&["evaluate"]),
        case("unknown flag", "eval ../recipe.toml --limt 3").names(&["--limt"]),
        case("chat without a prompt", "chat --model ../m").names(&["PROMPT"]),
    ]
}

/// Oversized budgets: item 1 of the issue (generation and dataset sizes bounded before any
/// allocation).
fn budget_cases() -> Vec<Case> {
    let tiny = tiny_model().display().to_string();
    vec![
        case(
            "max_new_tokens 10^12 on the tiny model",
            "eval ../burn.toml --limit 1 --out o",
        )
        .file(
            "burn.toml",
            burn_recipe("").replace(
                "[agent.answer]\nmax_new_tokens = 16",
                "[agent.answer]\nmax_new_tokens = 1000000000000",
            ),
        )
        .names(&["agent.answer.max_new_tokens"])
        .leaves_no("o"),
        case(
            "chat --max-new-tokens 10^12",
            "chat --max-new-tokens 1000000000000 hello",
        )
        .arg("--model")
        .arg(tiny)
        .names(&["--max-new-tokens"]),
        case("RULER tokens 10^12", "eval ../ruler.toml --limit 2 --out o")
            .arg("--set")
            .arg("data.eval.tokens=1000000000000")
            .names(&["data.eval.tokens"])
            .leaves_no("o"),
        case(
            "RULER tokens 1e12 (a float)",
            "eval ../ruler.toml --limit 2 --out o",
        )
        .arg("--set")
        .arg("data.eval.tokens=1e12")
        .names(&["data.eval.tokens"])
        .leaves_no("o"),
        // With --limit 2 only two samples are built: running them is fine, refusing the
        // count is fine; memory and time stay bounded either way.
        case(
            "RULER samples 10^12 with --limit 2",
            "eval ../ruler.toml --limit 2 --out o",
        )
        .arg("--set")
        .arg("data.eval.samples=1000000000000")
        .exits(&[0, 2])
        .names(&["data.eval.samples"]),
    ]
}

#[test]
fn hostile_recipes_fail_cleanly() {
    check_all(&recipe_cases());
}

#[test]
fn hostile_data_files_fail_cleanly() {
    check_all(&data_cases());
}

#[test]
fn damaged_models_fail_cleanly() {
    check_all(&model_cases());
}

#[test]
fn hostile_flags_fail_cleanly() {
    check_all(&flag_cases());
}

#[test]
fn oversized_budgets_fail_cleanly() {
    check_all(&budget_cases());
}

#[test]
fn there_are_at_least_fifty_hostile_inputs() {
    let n = recipe_cases().len()
        + data_cases().len()
        + model_cases().len()
        + flag_cases().len()
        + budget_cases().len();
    assert!(n >= 50, "{n}");
}

/// A reader that has gone away (`memfactory model list | head -1`) ends the command
/// quietly: exit 0, nothing on stderr, no panic.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.jsonl"), DATA).unwrap();
    std::fs::write(d.join("recipe.toml"), RECIPE).unwrap();
    let o = run_limited(
        d,
        &[
            "eval".into(),
            "recipe.toml".into(),
            "--out".into(),
            "a".into(),
        ],
        Stdio::null(),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    for args in [
        vec!["list"],
        vec!["model", "list"],
        vec!["check", "recipe.toml"],
        vec!["eval", "recipe.toml", "--out", "b"],
        vec![
            "eval",
            "recipe.toml",
            "--out",
            "sw",
            "--sweep",
            "agent.chunk_tokens=30,40",
        ],
        vec!["compare", "a", "a"],
        vec!["compare", "a", "a", "--json"],
        vec!["chat", "--model", "TINY", "--max-new-tokens", "4", "hello"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let tiny = tiny_model().display().to_string();
        let args: Vec<String> = args
            .iter()
            .map(|s| {
                if *s == "TINY" {
                    tiny.clone()
                } else {
                    s.to_string()
                }
            })
            .collect();
        let o = run_limited(d, &args, Stdio::from(writer));
        assert_eq!(o.code, Some(0), "{args:?}: {}", o.stderr);
        assert!(
            !o.stderr.contains("panicked") && !o.stderr.contains("error"),
            "{args:?}: {}",
            o.stderr
        );
    }
}

/// A minimal OpenAI-compatible server in the llama-server dialect: one token per byte for
/// `/tokenize` and `/detokenize`, a fixed boxed answer for completions. Answers by the
/// request body, whatever the path (a base URL with a query string moves the path into it).
fn mock_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let req: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let reply = if let Some(text) = req.get("content").and_then(|c| c.as_str()) {
                    let ids: Vec<u32> = text.bytes().map(u32::from).collect();
                    serde_json::json!({ "tokens": ids })
                } else if let Some(ids) = req.get("tokens").and_then(|t| t.as_array()) {
                    let bytes: Vec<u8> = ids
                        .iter()
                        .filter_map(|i| i.as_u64())
                        .map(|i| i as u8)
                        .collect();
                    serde_json::json!({ "content": String::from_utf8_lossy(&bytes) })
                } else {
                    let answer = "The magic number is \\boxed{4242}.";
                    serde_json::json!({
                        "choices": [{
                            "index": 0,
                            "text": answer,
                            "message": { "role": "assistant", "content": answer },
                            "finish_reason": "stop"
                        }]
                    })
                }
                .to_string();
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    format!("127.0.0.1:{}", addr.port())
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// User names, passwords and API keys in a base URL are masked in every file an eval and
/// a sweep write (resolved recipes, metrics, reports, sweep.json / sweep.md, directory
/// names), and in what `check` prints.
#[test]
fn credentials_in_urls_never_reach_the_run_directory() {
    let host = mock_server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.jsonl"), DATA).unwrap();
    let url = |path: &str| format!("http://alice:s3cretpw@{host}{path}?model=m&API_KEY=k3ykey");
    let recipe = format!(
        "[run]\nname = \"secret\"\n\n[model]\nkind = \"openai\"\nbase_url = {:?}\nmodel = \"m\"\n\
         server = \"llama-server\"\nlogprobs = false\nmax_retries = 0\n\n{}",
        url(""),
        &RECIPE[RECIPE.find("[agent]").unwrap()..]
    );
    std::fs::write(d.join("recipe.toml"), &recipe).unwrap();
    let secrets = ["alice", "s3cretpw", "k3ykey"];

    let o = run_limited(d, &["check".into(), "recipe.toml".into()], Stdio::piped());
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("base_url"), "{}", o.stdout);
    for s in secrets {
        assert!(
            !o.stdout.contains(s) && !o.stderr.contains(s),
            "`check` shows {s}:\n{}",
            o.stdout
        );
    }

    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = run_limited(
        d,
        &args(&["eval", "recipe.toml", "--out", "run"]),
        Stdio::piped(),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let sweep = format!("model.base_url={},{}", url("/a"), url("/b"));
    let o = run_limited(
        d,
        &args(&["eval", "recipe.toml", "--out", "sw", "--sweep", &sweep]),
        Stdio::piped(),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);

    let written: Vec<PathBuf> = [d.join("run"), d.join("sw")]
        .iter()
        .flat_map(|p| files_under(p))
        .collect();
    assert!(
        written.iter().any(|p| p.ends_with("recipe.resolved.toml"))
            && written.iter().any(|p| p.ends_with("sweep.json")),
        "{written:?}"
    );
    for p in &written {
        let name = p.strip_prefix(d).unwrap().display().to_string();
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        for s in secrets {
            assert!(!name.contains(s), "a path holds {s}: {name}");
            assert!(!text.contains(s), "{name} holds {s}:\n{text}");
        }
    }
    let resolved = std::fs::read_to_string(d.join("run/recipe.resolved.toml")).unwrap();
    assert!(
        resolved.contains(&format!("http://***@{host}?model=m&API_KEY=***")),
        "{resolved}"
    );
}
