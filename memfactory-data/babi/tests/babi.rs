//! Parsing, story boundaries, samples, haystack sizing / order / determinism, recipe errors,
//! and the real bAbI and Synthetic-Persona-Chat files from `../shared/data`.

use std::path::{Path, PathBuf};

use memfactory_core::{
    Cfg, DataSource, Error, GenRequest, Generation, LanguageModel, LoadCx, Prompt, Result, Sample,
};
use memfactory_data_babi::{BUILTIN_SENTENCES, parse_babi, parse_persona_chat, read_babi};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A word-level test tokenizer: one token per run of letters/digits, per other
/// non-space character, and per newline.
struct WordTok;

fn word_tokens(text: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                n += 1;
            }
            in_word = true;
        } else {
            in_word = false;
            if c == '\n' || !c.is_whitespace() {
                n += 1;
            }
        }
    }
    n
}

impl LanguageModel for WordTok {
    fn describe(&self) -> String {
        "word tokenizer (test)".into()
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(vec![7; word_tokens(text)])
    }
    fn decode(&self, _ids: &[u32]) -> Result<String> {
        Ok(String::new())
    }
    fn prompt_ids(&self, _prompt: &Prompt) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
    fn generate(&self, _requests: &[GenRequest]) -> Result<Vec<Generation>> {
        Err(Error::backend("test", "no generation"))
    }
}

const TASK1: &str = "\
1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Sandra moved to the garden.
6 Where is Daniel? \thallway\t4
1 Sandra travelled to the office.
2 Sandra went to the bathroom.
3 Where is Sandra? \tbathroom\t2
4 Mary went to the bedroom.
5 Daniel moved to the hallway.
6 Where is Sandra? \tbathroom\t2
7 John went to the kitchen.
8 Where is John? \tkitchen\t7
";

const TASK8: &str = "\
1 Mary got the milk there.
2 John moved to the bedroom.
3 Mary took the apple there.
4 What is Mary carrying?\tmilk,apple\t1 3
5 Mary dropped the milk.
6 What is Mary carrying?\tapple\t1 3 5
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn cfg(toml_src: &str) -> Cfg {
    let table: toml::Table = toml::from_str(toml_src).unwrap();
    Cfg::new("data.eval", table)
}

fn build(toml_src: &str) -> Result<(Box<dyn DataSource>, toml::Table)> {
    memfactory_core::registry::build::<dyn DataSource>(cfg(toml_src))
}

fn build_err(toml_src: &str) -> (String, String) {
    match build(toml_src) {
        Err(Error::Config { key, message }) => (key, message),
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("expected an error for:\n{toml_src}"),
    }
}

fn load(src: &dyn DataSource, lm: Option<&dyn LanguageModel>) -> Result<Vec<Sample>> {
    src.load(&LoadCx { tokenizer: lm })
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

fn meta_usizes(s: &Sample, key: &str) -> Vec<usize> {
    serde_json::from_value(s.meta[key].clone()).unwrap_or_else(|_| panic!("meta.{key}"))
}

fn data_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if p.join("babi").is_dir() {
        Some(p)
    } else {
        println!(
            "skipping: {} is absent (a fresh clone has no ../shared/data)",
            p.join("babi").display()
        );
        None
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

#[test]
fn parses_stories_questions_and_supporting_facts() {
    let stories = parse_babi(TASK1).unwrap();
    assert_eq!(stories.len(), 2);
    let s0 = &stories[0];
    assert_eq!(s0.statements.len(), 4);
    assert_eq!(s0.questions.len(), 2);
    let q = &s0.questions[0];
    assert_eq!(q.id, 3);
    assert_eq!(q.text, "Where is Mary?");
    assert_eq!(q.answer, "bathroom");
    assert_eq!(q.supporting, vec![1]);
    assert_eq!(q.line, 3);
    assert_eq!(q.statements_before, 2);
    assert_eq!(s0.questions[1].statements_before, 4);
    let s1 = &stories[1];
    assert_eq!(s1.statements[0].text, "Sandra travelled to the office.");
    assert_eq!(s1.statements[0].line, 7);
    assert_eq!(s1.questions.len(), 3);
    assert_eq!(s1.questions[2].answer, "kitchen");
    assert_eq!(s1.questions[2].statements_before, 5);
    // Multiple supporting facts.
    let t8 = parse_babi(TASK8).unwrap();
    assert_eq!(t8[0].questions[1].supporting, vec![1, 3, 5]);
    // CRLF, blank lines and a BOM are accepted.
    let crlf = format!("\u{feff}{}\n\n", TASK1.replace('\n', "\r\n"));
    assert_eq!(parse_babi(&crlf).unwrap(), stories);
}

#[test]
fn malformed_lines_are_errors_with_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("1 A b.\nMary went home.\n", 2, "expected `ID sentence`"),
        ("1 A b.\n2\tx\n", 2, "expected a space after the id 2"),
        ("1 A b.\n3 C d.\n", 2, "expected id 2"),
        ("2 A b.\n", 1, "must start at id 1"),
        ("0 A b.\n", 1, "ids start at 1"),
        ("1 A b.\n2 Where? \tx\n", 2, "found 1 tab(s)"),
        ("1 A b.\n2 Where? \tx\t1\textra\n", 2, "found 3 tab(s)"),
        ("1 A b.\n2 Where? \t \t1\n", 2, "empty answer"),
        (
            "1 A b.\n2 Where? \tx\tone\n",
            2,
            "\"one\" of question 2 is not a number",
        ),
        (
            "1 A b.\n2 Where? \tx\t1\n3 Who?\ty\t2\n",
            3,
            "id 2 of question 3 names no earlier statement",
        ),
        ("1 A b.\n2 Where? \tx\t5\n", 2, "id 5 of question 2"),
        ("1 A b.\n2  \n", 2, "statement 2 is empty"),
        ("1 A b.\n2 \tx\t1\n", 2, "question 2 is empty"),
        ("1 A b.\n99999999999 x\n", 2, "too large"),
    ];
    for (text, line, msg) in cases {
        let e = parse_babi(text).unwrap_err();
        assert_eq!(e.line, *line, "{text:?}: {e:?}");
        assert!(e.message.contains(msg), "{text:?}: {}", e.message);
    }
    // A supporting id from a previous story is not accepted.
    let e =
        parse_babi("1 A b.\n2 Q?\tx\t1\n1 C d.\n2 E f.\n3 Q?\tx\t2 1\n4 Q?\ty\t3\n").unwrap_err();
    assert_eq!(e.line, 6);
}

#[test]
fn read_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_x_train.txt", "1 A b.\n2 Where? \tx\t7\n");
    let e = read_babi(&p).unwrap_err();
    let shown = e.to_string();
    match &e {
        Error::Data { path, location, .. } => {
            assert_eq!(path, &p);
            assert_eq!(location.as_deref(), Some("line 2"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        shown.contains("qa1_x_train.txt") && shown.contains("line 2"),
        "{shown}"
    );
    let missing = read_babi(&dir.path().join("nope.txt")).unwrap_err();
    assert!(matches!(missing, Error::Data { .. }), "{missing:?}");
    // Through the data source too.
    let (src, _) = build(&format!("kind = \"babi\"\npath = \"{}\"", toml_path(&p))).unwrap();
    let e = load(src.as_ref(), None).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Plain samples
// ---------------------------------------------------------------------------------------

#[test]
fn plain_samples_follow_story_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    let (src, resolved) = build(&format!("kind = \"babi\"\npath = \"{}\"", toml_path(&p))).unwrap();
    assert_eq!(resolved["offset"].as_integer(), Some(0));
    assert_eq!(resolved["haystack"].as_bool(), Some(false));
    let s = load(src.as_ref(), None).unwrap();
    assert_eq!(s.len(), 5);
    let ids: Vec<&str> = s.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "babi-qa1-0",
            "babi-qa1-1",
            "babi-qa1-2",
            "babi-qa1-3",
            "babi-qa1-4"
        ]
    );
    assert_eq!(
        s[0].context,
        "Mary moved to the bathroom.\nJohn went to the hallway."
    );
    assert_eq!(s[0].question, "Where is Mary?");
    assert_eq!(s[0].answers, vec!["bathroom"]);
    assert_eq!(
        s[1].context,
        "Mary moved to the bathroom.\nJohn went to the hallway.\nDaniel went back to the \
         hallway.\nSandra moved to the garden."
    );
    // The second story starts afresh: nothing of the first one, no earlier questions.
    assert_eq!(
        s[2].context,
        "Sandra travelled to the office.\nSandra went to the bathroom."
    );
    assert_eq!(s[4].context.lines().count(), 5);
    assert!(!s[4].context.contains('?'));
    assert!(
        s.iter()
            .all(|x| x.category.as_deref() == Some("qa1-single-supporting-fact"))
    );
    let m = &s[4].meta;
    assert_eq!(m["source"], "babi");
    assert_eq!(m["task"], 1);
    assert_eq!(m["task_name"], "single-supporting-fact");
    assert_eq!(m["file"], "qa1_single-supporting-fact_train.txt");
    assert_eq!(m["story"], 1);
    assert_eq!(m["question_index"], 4);
    assert_eq!(m["line"], 14);
    assert_eq!(m["question_id"], 8);
    assert_eq!(m["supporting_ids"], serde_json::json!([7]));
    assert_eq!(
        m["supporting_facts"],
        serde_json::json!(["John went to the kitchen."])
    );
    assert_eq!(meta_usizes(&s[4], "supporting_lines"), vec![4]);
    assert_eq!(
        s[4].context.lines().nth(4),
        Some("John went to the kitchen.")
    );
}

#[test]
fn list_answers_get_their_spellings_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa8_lists-sets_train.txt", TASK8);
    let (src, _) = build(&format!("kind = \"babi\"\npath = \"{}\"", toml_path(&p))).unwrap();
    let s = load(src.as_ref(), None).unwrap();
    assert_eq!(
        s[0].answers,
        vec!["milk,apple", "milk, apple", "apple,milk", "apple, milk"]
    );
    assert_eq!(s[0].meta["answer"], "milk,apple");
    assert_eq!(
        s[0].meta["answer_items"],
        serde_json::json!(["milk", "apple"])
    );
    assert_eq!(s[1].answers, vec!["apple"]);
    assert_eq!(meta_usizes(&s[1], "supporting_lines"), vec![0, 2, 3]);
    // Task 19's paths keep their order.
    let p19 = write(
        dir.path(),
        "qa19_path-finding_train.txt",
        "1 The garden is west of the office.\n2 How do you go from the office to the garden?\tw,n\t1\n",
    );
    let (src, _) = build(&format!("kind = \"babi\"\npath = \"{}\"", toml_path(&p19))).unwrap();
    assert_eq!(
        load(src.as_ref(), None).unwrap()[0].answers,
        vec!["w,n", "w, n"]
    );
    // A file not named like bAbI's: its stem is the category.
    let other = write(dir.path(), "my stories.txt", TASK8);
    let (src, _) = build(&format!(
        "kind = \"babi\"\npath = \"{}\"",
        toml_path(&other)
    ))
    .unwrap();
    let s = load(src.as_ref(), None).unwrap();
    assert_eq!(s[0].category.as_deref(), Some("my stories"));
    assert_eq!(s[0].id, "babi-my stories-0");
    assert_eq!(s[0].meta["task"], serde_json::Value::Null);
    assert_eq!(s[0].answers, vec!["milk,apple", "milk, apple"]);
}

#[test]
fn offset_and_limit_apply_per_task_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    write(dir.path(), "qa8_lists-sets_train.txt", TASK8);
    write(
        dir.path(),
        "qa8_lists-sets_test.txt",
        "1 X y.\n2 Q?\tz\t1\n",
    );
    let d = toml_path(dir.path());
    let (src, _) = build(&format!(
        "kind = \"babi\"\ndir = \"{d}\"\ntasks = [8, 1]\noffset = 1\nlimit = 2"
    ))
    .unwrap();
    let ids: Vec<String> = load(src.as_ref(), None)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["babi-qa8-1", "babi-qa1-1", "babi-qa1-2"]);
    let (src, _) = build(&format!(
        "kind = \"babi\"\ndir = \"{d}\"\ntasks = [8]\nsplit = \"test\""
    ))
    .unwrap();
    let s = load(src.as_ref(), None).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].answers, vec!["z"]);
    // A task without a file is a data error naming the directory and the task.
    let (src, _) = build(&format!("kind = \"babi\"\ndir = \"{d}\"\ntasks = [1, 2]")).unwrap();
    let e = load(src.as_ref(), None).unwrap_err();
    assert!(
        matches!(&e, Error::Data { message, .. } if message.contains("task 2")),
        "{e:?}"
    );
    // Default: every task, so the missing ones fail.
    let (src, _) = build(&format!("kind = \"babi\"\ndir = \"{d}\"")).unwrap();
    assert!(load(src.as_ref(), None).is_err());
}

// ---------------------------------------------------------------------------------------
// Haystack
// ---------------------------------------------------------------------------------------

fn haystack_src(p: &Path, extra: &str) -> Box<dyn DataSource> {
    build(&format!(
        "kind = \"babi\"\npath = \"{}\"\nhaystack = true\n{extra}",
        toml_path(p)
    ))
    .unwrap()
    .0
}

fn check_haystack(plain: &Sample, h: &Sample, target: usize) {
    let tokens = word_tokens(&h.context);
    assert_eq!(h.meta["tokens"], tokens);
    assert_eq!(h.meta["target_tokens"], target);
    assert_eq!(h.meta["counted_by"], "tokenizer");
    // Never above the budget; short of it by at most one background line (+ its newline).
    let widest = BUILTIN_SENTENCES
        .iter()
        .map(|s| word_tokens(s))
        .max()
        .unwrap()
        + 1;
    assert!(tokens <= target, "{tokens} > {target}");
    assert!(tokens + widest > target, "{tokens} too far below {target}");
    // Facts at the recorded lines, in story order; everything else is filler.
    let facts: Vec<&str> = plain.context.lines().collect();
    let lines: Vec<&str> = h.context.lines().collect();
    let fl = meta_usizes(h, "fact_lines");
    assert_eq!(fl.len(), facts.len());
    assert!(fl.windows(2).all(|w| w[0] < w[1]), "{fl:?}");
    for (k, &i) in fl.iter().enumerate() {
        assert_eq!(lines[i], facts[k]);
    }
    assert_eq!(h.meta["background_lines"], lines.len() - facts.len());
    for (i, l) in lines.iter().enumerate() {
        if !fl.contains(&i) {
            assert!(BUILTIN_SENTENCES.contains(l), "line {i}: {l:?}");
        }
    }
    // Supporting lines point at the supporting facts inside the haystack.
    let sup: Vec<String> = serde_json::from_value(h.meta["supporting_facts"].clone()).unwrap();
    let sl = meta_usizes(h, "supporting_lines");
    assert_eq!(sl.len(), sup.len());
    for (i, f) in sl.iter().zip(&sup) {
        assert_eq!(lines[*i], f);
    }
    assert_eq!(h.question, plain.question);
    assert_eq!(h.answers, plain.answers);
}

#[test]
fn haystack_is_sized_ordered_and_filled() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    let (plain_src, _) = build(&format!("kind = \"babi\"\npath = \"{}\"", toml_path(&p))).unwrap();
    let plain = load(plain_src.as_ref(), None).unwrap();
    for target in [60usize, 500, 3000] {
        let src = haystack_src(&p, &format!("tokens = {target}\nseed = 3"));
        let hs = load(src.as_ref(), Some(&WordTok)).unwrap();
        assert_eq!(hs.len(), plain.len());
        for (a, b) in plain.iter().zip(&hs) {
            check_haystack(a, b, target);
            assert_eq!(b.id, format!("{}-haystack-{target}-3", a.id));
            assert_eq!(b.meta["filler"], "builtin");
            assert!(!b.meta.contains_key("filler_start"));
        }
    }
    // Background cycles from the first built-in sentence.
    let src = haystack_src(&p, "tokens = 400");
    let h = &load(src.as_ref(), Some(&WordTok)).unwrap()[0];
    let fl = meta_usizes(h, "fact_lines");
    let bg: Vec<&str> = h
        .context
        .lines()
        .enumerate()
        .filter(|(i, _)| !fl.contains(i))
        .map(|(_, l)| l)
        .collect();
    for (j, l) in bg.iter().enumerate() {
        assert_eq!(*l, BUILTIN_SENTENCES[j % 5]);
    }
}

#[test]
fn haystack_is_deterministic_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    let a = load(
        haystack_src(&p, "tokens = 800\nseed = 1").as_ref(),
        Some(&WordTok),
    )
    .unwrap();
    let b = load(
        haystack_src(&p, "tokens = 800\nseed = 1").as_ref(),
        Some(&WordTok),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = load(
        haystack_src(&p, "tokens = 800\nseed = 2").as_ref(),
        Some(&WordTok),
    )
    .unwrap();
    let pos = |v: &[Sample]| {
        v.iter()
            .map(|s| meta_usizes(s, "fact_lines"))
            .collect::<Vec<_>>()
    };
    assert_ne!(pos(&a), pos(&c), "another seed moves the facts");
    // Instances differ from each other too (seeded by question index).
    assert_ne!(
        meta_usizes(&a[0], "fact_lines"),
        meta_usizes(&a[2], "fact_lines")
    );
    // A sample's haystack does not depend on offset / limit.
    let d = load(
        haystack_src(&p, "tokens = 800\nseed = 1\noffset = 3\nlimit = 1").as_ref(),
        Some(&WordTok),
    )
    .unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0], a[3]);
}

#[test]
fn haystack_needs_a_tokenizer_and_room_for_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    let e = load(haystack_src(&p, "").as_ref(), None).unwrap_err();
    match e {
        Error::Config { key, message } => {
            assert_eq!(key, "data.eval.haystack");
            assert!(message.contains("tokenizer"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The second question's four facts take 28 word tokens; 20 cannot hold them.
    let e = load(haystack_src(&p, "tokens = 20").as_ref(), Some(&WordTok)).unwrap_err();
    match e {
        Error::Config { key, message } => {
            assert_eq!(key, "data.eval.tokens");
            assert!(message.contains("babi-qa1-1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Exactly the facts fit: no background.
    let facts = "Mary moved to the bathroom.\nJohn went to the hallway.";
    let n = word_tokens(facts);
    let s = load(
        haystack_src(&p, &format!("tokens = {n}\nlimit = 1")).as_ref(),
        Some(&WordTok),
    )
    .unwrap();
    assert_eq!(s[0].context, facts);
    assert_eq!(s[0].meta["background_lines"], 0);
}

const PERSONA_CSV: &str = "user 1 personas,user 2 personas,Best Generated Conversation\r\n\
\"I like tea.\nI have a cat.\",\"I run.\",\"User 1: Hi, there!\nUser 2: Hello \"\"friend\"\".\nUser 1: Bye.\"\r\n\
\"A.\",\"B.\",\"User 2: Second talk.\n\nUser 1: Last one.\"\r\n";

#[test]
fn persona_chat_filler() {
    let u = parse_persona_chat(PERSONA_CSV).unwrap();
    assert_eq!(
        u,
        [
            "Hi, there!",
            "Hello \"friend\".",
            "Bye.",
            "Second talk.",
            "Last one."
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    let csv = write(dir.path(), "persona.csv", PERSONA_CSV);
    let extra = format!(
        "tokens = 300\nfiller = \"persona-chat\"\nfiller_path = \"{}\"",
        toml_path(&csv)
    );
    let s = load(haystack_src(&p, &extra).as_ref(), Some(&WordTok)).unwrap();
    for h in &s {
        let start = h.meta["filler_start"].as_u64().unwrap() as usize;
        assert!(start < u.len());
        let fl = meta_usizes(h, "fact_lines");
        let bg: Vec<&str> = h
            .context
            .lines()
            .enumerate()
            .filter(|(i, _)| !fl.contains(i))
            .map(|(_, l)| l)
            .collect();
        assert!(!bg.is_empty());
        for (j, l) in bg.iter().enumerate() {
            assert_eq!(*l, u[(start + j) % u.len()], "consecutive, wrapping");
        }
        let t = word_tokens(&h.context);
        assert!(t <= 300 && t + 8 > 300, "{t}");
        assert_eq!(h.meta["filler"], "persona-chat");
    }
    // Malformed CSV: the error names the file and the line of the bad record.
    let bad = write(
        dir.path(),
        "bad.csv",
        "user 1 personas,user 2 personas,Best Generated Conversation\n\"a\",\"b\",\"User 1: x\"\nc,d\n",
    );
    let extra = format!(
        "filler = \"persona-chat\"\nfiller_path = \"{}\"",
        toml_path(&bad)
    );
    let e = load(haystack_src(&p, &extra).as_ref(), Some(&WordTok)).unwrap_err();
    match &e {
        Error::Data {
            path,
            location,
            message,
        } => {
            assert_eq!(path, &bad);
            assert_eq!(location.as_deref(), Some("line 3"));
            assert!(message.contains("expected 3 fields"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let nocol = write(dir.path(), "nocol.csv", "a,b\nc,d\n");
    let extra = format!(
        "filler = \"persona-chat\"\nfiller_path = \"{}\"",
        toml_path(&nocol)
    );
    let e = load(haystack_src(&p, &extra).as_ref(), Some(&WordTok)).unwrap_err();
    assert!(e.to_string().contains("Best Generated Conversation"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Recipe keys
// ---------------------------------------------------------------------------------------

#[test]
fn recipe_key_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "data.eval.path", "give `path`"),
        ("path = \"a\"\ndir = \"b\"", "data.eval.dir", "not both"),
        ("path = \" \"", "data.eval.path", "must not be empty"),
        (
            "path = \"a\"\ntasks = [1]",
            "data.eval.tasks",
            "only used with `dir`",
        ),
        (
            "path = \"a\"\nsplit = \"test\"",
            "data.eval.split",
            "only used with `dir`",
        ),
        (
            "dir = \"d\"\ntasks = []",
            "data.eval.tasks",
            "non-empty array",
        ),
        (
            "dir = \"d\"\ntasks = [0]",
            "data.eval.tasks",
            "from 1 to 20",
        ),
        (
            "dir = \"d\"\ntasks = [21]",
            "data.eval.tasks",
            "from 1 to 20",
        ),
        ("dir = \"d\"\ntasks = [2, 2]", "data.eval.tasks", "distinct"),
        ("dir = \"d\"\nsplit = \"a_b\"", "data.eval.split", "suffix"),
        ("path = \"a\"\nlimit = 0", "data.eval.limit", "at least 1"),
        (
            "path = \"a\"\noffset = -1",
            "data.eval.offset",
            "wrong type",
        ),
        (
            "path = \"a\"\ntokens = 100",
            "data.eval.tokens",
            "haystack = true",
        ),
        (
            "path = \"a\"\nseed = 1",
            "data.eval.seed",
            "haystack = true",
        ),
        (
            "path = \"a\"\nfiller = \"builtin\"",
            "data.eval.filler",
            "haystack = true",
        ),
        (
            "path = \"a\"\nhaystack = \"yes\"",
            "data.eval.haystack",
            "wrong type",
        ),
        (
            "path = \"a\"\nhaystack = true\ntokens = 0",
            "data.eval.tokens",
            "positive",
        ),
        (
            "path = \"a\"\nhaystack = true\nfiller = \"books\"",
            "data.eval.filler",
            "unknown filler `books`",
        ),
        (
            "path = \"a\"\nhaystack = true\nfiller = \"persona-chat\"",
            "data.eval.filler_path",
            "missing required key",
        ),
        (
            "path = \"a\"\nhaystack = true\nfiller_path = \"x.csv\"",
            "data.eval.filler_path",
            "persona-chat",
        ),
        (
            "path = \"a\"\nsamples = 3",
            "data.eval.samples",
            "unknown key",
        ),
    ];
    for (body, key, msg) in cases {
        let (k, m) = build_err(&format!("kind = \"babi\"\n{body}"));
        assert_eq!(&k, key, "{body}: {m}");
        assert!(m.contains(msg), "{body}: {m}");
    }
}

#[test]
fn resolved_table_has_defaults() {
    let (src, t) = build("kind = \"babi\"\ndir = \"d\"\nhaystack = true").unwrap();
    assert_eq!(t["tokens"].as_integer(), Some(4000));
    assert_eq!(t["seed"].as_integer(), Some(0));
    assert_eq!(t["filler"].as_str(), Some("builtin"));
    assert_eq!(t["split"].as_str(), Some("train"));
    assert_eq!(t["tasks"].as_array().map(|a| a.len()), Some(20));
    assert!(src.describe().contains("4000 tokens"), "{}", src.describe());
}

// ---------------------------------------------------------------------------------------
// Real data
// ---------------------------------------------------------------------------------------

const TASK_NAMES: [&str; 20] = [
    "single-supporting-fact",
    "two-supporting-facts",
    "three-supporting-facts",
    "two-arg-relations",
    "three-arg-relations",
    "yes-no-questions",
    "counting",
    "lists-sets",
    "simple-negation",
    "indefinite-knowledge",
    "basic-coreference",
    "conjunction",
    "compound-coreference",
    "time-reasoning",
    "basic-deduction",
    "basic-induction",
    "positional-reasoning",
    "size-reasoning",
    "path-finding",
    "agents-motivations",
];

#[test]
fn real_files_have_1000_questions_per_task() {
    let Some(data) = data_dir() else { return };
    let (src, _) = build(&format!(
        "kind = \"babi\"\ndir = \"{}\"",
        toml_path(&data.join("babi"))
    ))
    .unwrap();
    let s = load(src.as_ref(), None).unwrap();
    assert_eq!(s.len(), 20_000);
    for (t, chunk) in s.chunks(1000).enumerate() {
        let want = format!("qa{}-{}", t + 1, TASK_NAMES[t]);
        assert!(
            chunk
                .iter()
                .all(|x| x.category.as_deref() == Some(want.as_str()))
        );
        assert_eq!(chunk[999].id, format!("babi-qa{}-999", t + 1));
        for x in chunk {
            assert!(!x.context.is_empty() && !x.question.is_empty());
            // Every supporting fact is in the context at the recorded line.
            let lines: Vec<&str> = x.context.lines().collect();
            let sup: Vec<String> =
                serde_json::from_value(x.meta["supporting_facts"].clone()).unwrap();
            for (i, f) in meta_usizes(x, "supporting_lines").iter().zip(&sup) {
                assert_eq!(lines[*i], f);
            }
        }
    }
    // First question of task 1, as in the file.
    assert_eq!(s[0].question, "Where is Mary?");
    assert_eq!(s[0].answers, ["bathroom"]);
    assert_eq!(
        s[0].context,
        "Mary moved to the bathroom.\nJohn went to the hallway."
    );
    // Task 8 lists become sets.
    let multi = s[7000..8000]
        .iter()
        .filter(|x| x.meta["answer_items"].as_array().unwrap().len() > 1)
        .count();
    assert!(multi > 50, "{multi}");
}

#[test]
fn real_haystack_with_persona_chat() {
    let Some(data) = data_dir() else { return };
    let csv = data.join("persona_chat/Synthetic-Persona-Chat_valid.csv");
    if !csv.is_file() {
        println!("skipping: {} is absent", csv.display());
        return;
    }
    let u = memfactory_data_babi::read_persona_chat(&csv).unwrap();
    assert!(u.len() > 10_000, "{}", u.len());
    assert!(
        u.iter()
            .all(|x| !x.starts_with("User 1:") && !x.starts_with("User 2:"))
    );
    let (src, _) = build(&format!(
        "kind = \"babi\"\ndir = \"{}\"\ntasks = [2, 3]\nlimit = 3\nhaystack = true\n\
         tokens = 4000\nseed = 11\nfiller = \"persona-chat\"\nfiller_path = \"{}\"",
        toml_path(&data.join("babi")),
        toml_path(&csv)
    ))
    .unwrap();
    let s = load(src.as_ref(), Some(&WordTok)).unwrap();
    assert_eq!(s.len(), 6);
    for h in &s {
        let t = word_tokens(&h.context);
        assert!(t <= 4000 && t > 3800, "{t}");
        let lines: Vec<&str> = h.context.lines().collect();
        let sup: Vec<String> = serde_json::from_value(h.meta["supporting_facts"].clone()).unwrap();
        for (i, f) in meta_usizes(h, "supporting_lines").iter().zip(&sup) {
            assert_eq!(lines[*i], f);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sizes bounded before anything is built
// ---------------------------------------------------------------------------------------

#[test]
fn huge_haystack_tokens_are_rejected_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let p = toml_path(&write(dir.path(), "qa1.txt", TASK1));
    for tokens in ["1000000000000", "33554433"] {
        let (key, message) = build_err(&format!(
            "kind = \"babi\"\npath = \"{p}\"\nhaystack = true\ntokens = {tokens}"
        ));
        assert_eq!(key, "data.eval.tokens");
        assert!(message.contains("at most 33554432"), "{message}");
    }
}

#[test]
fn a_limit_builds_only_the_first_haystacks() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "qa1_single-supporting-fact_train.txt", TASK1);
    // 20 tokens hold the first question's facts, not the second's: a full load fails on the
    // second, a load of the first only builds (and returns) the first.
    let src = haystack_src(&p, "tokens = 20");
    assert!(load(src.as_ref(), Some(&WordTok)).is_err());
    let first = src
        .load_first(
            &LoadCx {
                tokenizer: Some(&WordTok),
            },
            1,
        )
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, "babi-qa1-0-haystack-20-0");
    // Plain mode: the first n in load's order, tasks in turn.
    let plain = build(&format!("kind = \"babi\"\npath = \"{}\"", toml_path(&p)))
        .unwrap()
        .0;
    let all = load(plain.as_ref(), None).unwrap();
    assert_eq!(plain.load_first(&LoadCx::default(), 3).unwrap(), all[..3]);
    assert_eq!(plain.load_first(&LoadCx::default(), 99).unwrap(), all);
}

#[test]
fn haystacks_too_large_for_memory_are_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    // 45 questions of 2^25 tokens: over the 2^30 tokens one load may build.
    let p = write(dir.path(), "qa1.txt", &TASK1.repeat(9));
    let src = haystack_src(&p, "tokens = 33554432");
    match load(src.as_ref(), Some(&WordTok)).unwrap_err() {
        Error::Config { key, message } => {
            assert_eq!(key, "data.eval.tokens");
            assert!(message.contains("45 samples"), "{message}");
            assert!(message.contains("at most 32 of them"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
