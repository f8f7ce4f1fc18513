//! The closed-book filter end to end: a scripted reference model that knows some answers,
//! the kept-ids record in the run directory, reuse through `keep_ids`, bad recipe input, and
//! once with SmolLM2 on 20 real questions (skipped without the model or the data).

use std::path::{Path, PathBuf};

use memfactory_core::{Cfg, DataSource, Error, LoadCx, Recipe, registry};
use memfactory_lm_burn as _;
use memfactory_lm_scripted as _;
use serde_json::Value;

/// Six questions Q1?..Q6? with answers Alpha..Zeta, three paragraphs each.
fn fixture(dir: &Path) -> PathBuf {
    let names = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta"];
    let recs: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let q = i + 1;
            serde_json::json!({
                "_id": format!("q{q}"),
                "question": format!("Q{q}?"),
                "answer": a,
                "type": "bridge",
                "supporting_facts": [[format!("T{q}a"), 0]],
                "context": [
                    [format!("T{q}a"), [format!("Paragraph a of {q}.")]],
                    [format!("T{q}b"), [format!("Paragraph b of {q}.")]],
                    [format!("T{q}c"), [format!("Paragraph c of {q}.")]],
                ],
            })
        })
        .collect();
    let p = dir.join("hotpot.json");
    std::fs::write(&p, serde_json::to_string(&recs).unwrap()).unwrap();
    p
}

/// The scripted model: knows Q1 (boxed), Q2 (in plain words, found by `contains`) and Q3
/// (boxed, differently spaced and cased); answers the rest wrongly.
const MODEL: &str = r#"
[closed_book.model]
kind = "scripted"
default = "I am not sure. \\boxed{Omega}"
[[closed_book.model.rules]]
contains = ["Q1?"]
reply = "It is \\boxed{Alpha}"
[[closed_book.model.rules]]
contains = ["Q2?"]
reply = "That would be beta, I believe."
[[closed_book.model.rules]]
contains = ["Q3?"]
reply = "\\boxed{ g AMMA }"
"#;

fn build(path: &Path, extra: &str) -> memfactory_core::Result<Box<dyn DataSource>> {
    build_docs(path, 6, extra)
}

fn build_docs(
    path: &Path,
    docs: usize,
    extra: &str,
) -> memfactory_core::Result<Box<dyn DataSource>> {
    let text = format!(
        "kind = \"ruler-hqa\"\npath = {:?}\ndocs = {docs}\n{extra}",
        path.display().to_string()
    );
    let table = Recipe::parse(&text, "<test>")
        .unwrap()
        .cfg()
        .table()
        .clone();
    registry::build::<dyn DataSource>(Cfg::new("data.eval", table)).map(|(d, _)| d)
}

fn ids(samples: &[memfactory_core::Sample]) -> Vec<&str> {
    samples.iter().map(|s| s.id.as_str()).collect()
}

fn config_key(e: Error) -> (String, String) {
    match e {
        Error::Config { key, message } => (key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn drops_the_questions_the_reference_model_answers_without_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let src = build(&path, &format!("[closed_book]\ntries = 2\n{MODEL}")).unwrap();
    let samples = src.load(&LoadCx::default()).unwrap();
    assert_eq!(ids(&samples), ["q4", "q5", "q6"]);
    // The kept questions are built as without a filter (same instances).
    let plain = build(&path, "").unwrap().load(&LoadCx::default()).unwrap();
    assert_eq!(samples, plain[3..]);
    assert!(src.describe().contains("closed-book filtered by scripted"));

    // Only `contains` (Q3's boxed answer is not a substring), only `boxed`.
    let only = |c: &str| {
        build(
            &path,
            &format!("[closed_book]\ncriterion = \"{c}\"\n{MODEL}"),
        )
        .unwrap()
        .load(&LoadCx::default())
        .unwrap()
        .iter()
        .map(|s| s.id.clone())
        .collect::<Vec<_>>()
    };
    assert_eq!(only("contains"), ["q3", "q4", "q5", "q6"]);
    assert_eq!(only("boxed"), ["q2", "q4", "q5", "q6"]);

    // keep_first (MemAgent keeps the first 128 survivors) and a smaller eval limit.
    let src = build(&path, &format!("[closed_book]\nkeep_first = 2\n{MODEL}")).unwrap();
    assert_eq!(ids(&src.load(&LoadCx::default()).unwrap()), ["q4", "q5"]);
    assert_eq!(ids(&src.load_first(&LoadCx::default(), 1).unwrap()), ["q4"]);
    // offset / limit choose the candidates.
    let src = build(
        &path,
        &format!("offset = 1\nlimit = 4\n[closed_book]\n{MODEL}"),
    )
    .unwrap();
    assert_eq!(ids(&src.load(&LoadCx::default()).unwrap()), ["q4", "q5"]);
}

#[test]
fn the_record_goes_to_the_run_directory_and_is_reused_by_keep_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let src = build(&path, &format!("[closed_book]\nseed = 7\n{MODEL}")).unwrap();
    // Attached before the load: written when the filter runs.
    src.attach_run_dir(&run).unwrap();
    let kept = src.load(&LoadCx::default()).unwrap();
    let file = run.join("closed_book_kept.eval.json");
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(record["dataset"], "data.eval");
    assert_eq!(record["candidates"], 6);
    assert_eq!(record["kept"], serde_json::json!(["q4", "q5", "q6"]));
    assert_eq!(record["kept_count"], 3);
    assert_eq!(record["model_table"]["kind"], "scripted");
    assert_eq!(
        record["settings"]["prompt"],
        "{question}\nYour final answer in \\boxed{}.\n"
    );
    assert_eq!(record["settings"]["tries"], 2);
    assert_eq!(record["settings"]["seed"], 7);
    assert_eq!(
        record["settings"]["top_p"].as_f64(),
        Some(0.699999988079071)
    );
    assert_eq!(record["settings"]["criterion"], "contains-or-boxed");
    let dropped = record["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 3);
    assert_eq!(dropped[0]["id"], "q1");
    assert_eq!(dropped[0]["by"], "model");
    assert_eq!(dropped[0]["try"], 0);
    assert_eq!(dropped[0]["response"], "It is \\boxed{Alpha}");

    // Attached after the load: written at once. The filter ran once (the cached ids).
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    src.attach_run_dir(&other).unwrap();
    assert_eq!(
        std::fs::read_to_string(other.join("closed_book_kept.eval.json")).unwrap(),
        std::fs::read_to_string(&file).unwrap()
    );

    // Reuse without a model: the same samples.
    let reuse = build(
        &path,
        &format!(
            "[closed_book]\nkeep_ids = {:?}\n",
            file.display().to_string()
        ),
    )
    .unwrap();
    assert_eq!(reuse.load(&LoadCx::default()).unwrap(), kept);

    // Chained: the file, then a second model that also knows Q5.
    let second = r#"
[closed_book.model]
kind = "scripted"
default = "no idea"
[[closed_book.model.rules]]
contains = ["Q5?"]
reply = "epsilon"
"#;
    let chained = build(
        &path,
        &format!(
            "[closed_book]\nkeep_ids = {:?}\n{second}",
            file.display().to_string()
        ),
    )
    .unwrap();
    assert_eq!(
        ids(&chained.load(&LoadCx::default()).unwrap()),
        ["q4", "q6"]
    );

    // A file made for another range is refused, naming the key.
    let wider = build(
        &path,
        &format!(
            "offset = 0\n[closed_book]\nkeep_ids = {:?}\n",
            file.display().to_string()
        ),
    )
    .unwrap();
    assert!(wider.load(&LoadCx::default()).is_ok());
    let narrow = dir.path().join("narrow");
    std::fs::create_dir(&narrow).unwrap();
    let n = build(&path, &format!("limit = 2\n[closed_book]\n{MODEL}")).unwrap();
    n.attach_run_dir(&narrow).unwrap();
    n.load(&LoadCx::default()).unwrap();
    let e = build(
        &path,
        &format!(
            "[closed_book]\nkeep_ids = {:?}\n",
            narrow
                .join("closed_book_kept.eval.json")
                .display()
                .to_string()
        ),
    )
    .unwrap()
    .load(&LoadCx::default())
    .unwrap_err();
    let (key, message) = config_key(e);
    assert_eq!(key, "data.eval.closed_book.keep_ids");
    assert!(message.contains("q3"), "{message}");
}

#[test]
fn bad_closed_book_tables_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let err = |extra: &str| config_key(build(&path, extra).err().expect(extra));
    let (k, m) = err("[closed_book]\ntries = 2\n");
    assert_eq!(k, "data.eval.closed_book.model");
    assert!(m.contains("keep_ids"), "{m}");
    let (k, m) = err(&format!("[closed_book]\ncriterion = \"exact\"\n{MODEL}"));
    assert_eq!(k, "data.eval.closed_book.criterion");
    assert!(m.contains("contains-or-boxed"), "{m}");
    assert_eq!(
        err(&format!("[closed_book]\ntries = 0\n{MODEL}")).0,
        "data.eval.closed_book.tries"
    );
    assert_eq!(
        err(&format!("[closed_book]\ntop_p = 0.0\n{MODEL}")).0,
        "data.eval.closed_book.top_p"
    );
    assert_eq!(
        err(&format!("[closed_book]\nkeep_first = 0\n{MODEL}")).0,
        "data.eval.closed_book.keep_first"
    );
    assert_eq!(
        err(&format!("[closed_book]\nbogus = 1\n{MODEL}")).0,
        "data.eval.closed_book.bogus"
    );
    assert_eq!(
        err("[closed_book]\nkeep_ids = \"\"\n").0,
        "data.eval.closed_book.keep_ids"
    );
    // A budget over the reference model's context... the scripted model has none; an
    // unknown model kind names the feature.
    let e = build(&path, "[closed_book.model]\nkind = \"nope\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("closed_book.model"), "{e}");
    // A kept-ids file that is not one.
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "[1, 2]").unwrap();
    let e = build(
        &path,
        &format!(
            "[closed_book]\nkeep_ids = {:?}\n",
            bogus.display().to_string()
        ),
    )
    .unwrap()
    .load(&LoadCx::default())
    .unwrap_err();
    assert!(matches!(e, Error::Data { .. }), "{e:?}");
    assert!(e.to_string().contains("kept-ids"), "{e}");
}

/// SmolLM2-135M-Instruct as the reference model on the first 8 questions of the shared
/// HotpotQA dev file, with MemAgent's settings (2 tries, T = 1.0, top_p 0.7) but 128 new
/// tokens instead of 512, so the test stays near a minute on 2 cores. (With 512 tokens on the
/// first 20 questions it kept 18: `5adbf0a255429947ff17385a` and `5ab56e32554299637185c594`
/// were answered without context; 234 s.)
#[test]
fn smollm2_filters_real_questions() {
    const N: usize = 8;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = std::env::var_os("MEMFACTORY_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            root.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let data = root.join("../shared/data/hotpotqa/hotpot_dev_distractor_0-1999.json");
    for p in [&model, &data] {
        if !p.is_file() {
            println!("skipping: {} is absent", p.display());
            return;
        }
    }
    let run = tempfile::tempdir().unwrap();
    let src = build_docs(
        &data,
        10,
        &format!(
            "limit = {N}\n[closed_book]\nbatch = 16\nmax_new_tokens = 128\n[closed_book.model]\nkind = \"burn\"\npath = {:?}\nmax_batch = 16\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    src.attach_run_dir(run.path()).unwrap();
    let t = std::time::Instant::now();
    let kept = src.load(&LoadCx::default()).unwrap();
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(run.path().join("closed_book_kept.eval.json")).unwrap(),
    )
    .unwrap();
    let dropped = record["dropped"].as_array().unwrap();
    println!(
        "SmolLM2 closed-book filter: kept {} of {N} in {:.0}s; dropped {:?}",
        kept.len(),
        t.elapsed().as_secs_f32(),
        dropped
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(kept.len() + dropped.len(), N);
    assert_eq!(record["kept"].as_array().unwrap().len(), kept.len());
    // Every drop is justified by its recorded response.
    let records = memfactory_data_ruler_hqa::read_records(&data).unwrap();
    for d in dropped {
        let id = d["id"].as_str().unwrap();
        let gold = &records.iter().find(|r| r.id == id).unwrap().answer;
        let resp = d["response"].as_str().unwrap();
        assert!(
            memfactory_data_ruler_hqa::closed_book::Criterion::ContainsOrBoxed.correct(resp, gold),
            "{id}: {resp:?} vs {gold:?}"
        );
    }
}
