//! The judge with the scripted LM: verdict parsing through the model, unparsable output,
//! the verdict cache (memory, file, reload, corrupt file, key isolation), recipe key
//! errors, `None` without golds, `require_boxed`, the answer metrics' `extract` and
//! `strip_think` keys, and scoring from several threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use memfactory_core::{
    Cfg, Episode, GenRequest, Generation, LanguageModel, Prompt, PromptTemplate, Result, Reward,
    Sample, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_reward_judge::{
    DEFAULT_TEMPLATE, Judge, JudgeStats, TEMPLATE_NAMES, TEMPLATE_REQUIRED, from_cfg,
};

fn rule(contains: &[&str], reply: &str) -> Rule {
    Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    }
}

/// The judge model of most tests: Paris is right, Lyon is wrong, "Marseille" gets an
/// unparsable reply; the verdict variants answer for the other predictions.
fn rules() -> Vec<Rule> {
    vec![
        rule(
            &["Gold answer: Paris\n", "Generated answer: Paris\n"],
            "True",
        ),
        rule(
            &["Gold answer: Paris\n", "Generated answer: Lyon\n"],
            "False.",
        ),
        rule(
            &["Generated answer: Marseille\n"],
            "I cannot tell from this.",
        ),
        rule(&["Generated answer: the capital\n"], "Verdict: CORRECT"),
        rule(
            &["Generated answer: a city in France\n"],
            "{\"correct\": false}",
        ),
        rule(&["Generated answer: paris city\n"], "yes"),
        rule(&["Generated answer: PARIS!\n"], "{\"label\": \"CORRECT\"}"),
        rule(&["Generated answer: Nice\n"], "WRONG"),
        rule(
            &["Generated answer: Lutetia\n"],
            "Lutetia is an old name, correct in spirit.\n{\"label\": \"WRONG\"}",
        ),
    ]
}

/// Counts calls and requests of the wrapped model; optionally sleeps in `generate` to make
/// races between threads likely.
struct CountingLm {
    inner: ScriptedLm,
    calls: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    prompts: Arc<std::sync::Mutex<Vec<String>>>,
    sleep: Duration,
}

#[derive(Clone, Default)]
struct Counters {
    calls: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    prompts: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Counters {
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn counting(sleep_ms: u64) -> (Box<dyn LanguageModel>, Counters) {
    let c = Counters::default();
    let lm = CountingLm {
        inner: ScriptedLm::new(rules(), "hmm"),
        calls: c.calls.clone(),
        requests: c.requests.clone(),
        prompts: c.prompts.clone(),
        sleep: Duration::from_millis(sleep_ms),
    };
    (Box::new(lm), c)
}

impl LanguageModel for CountingLm {
    fn describe(&self) -> String {
        format!("counting {}", self.inner.describe())
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids)
    }
    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.inner.prompt_ids(prompt)
    }
    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.requests
            .fetch_add(requests.len() as u64, Ordering::SeqCst);
        for r in requests {
            if let Prompt::Chat(m) = &r.prompt {
                self.prompts.lock().unwrap().push(m[0].content.clone());
            }
            assert_eq!(r.params.temperature, 0.0, "the judge decodes greedily");
        }
        std::thread::sleep(self.sleep);
        self.inner.generate(requests)
    }
}

fn sample(answers: &[&str]) -> Sample {
    Sample::text(
        "s1",
        "What is the capital of France?",
        "",
        answers.iter().map(|a| a.to_string()).collect(),
    )
}

fn episode(answer: &str) -> Episode {
    Episode {
        sample_id: "s1".into(),
        path: 0,
        seed: 7,
        steps: vec![],
        answer: Some(answer.into()),
        memory_tokens: None,
    }
}

fn boxed(p: &str) -> Episode {
    episode(&format!("The answer is \\boxed{{{p}}}."))
}

/// A judge built through the registry from a recipe table (the model: scripted, by rules).
fn judge_from(extra: &str) -> Result<Judge> {
    let mut src = String::from(extra);
    src.push_str("\n[model]\nkind = \"scripted\"\ndefault = \"hmm\"\n");
    for r in rules() {
        src.push_str(&format!(
            "[[model.rules]]\ncontains = {}\nreply = {}\n",
            toml::Value::Array(r.contains.into_iter().map(toml::Value::String).collect()),
            toml::Value::String(r.reply)
        ));
    }
    let mut cfg = Cfg::new("eval.metrics[0]", toml::from_str(&src).unwrap());
    let j = from_cfg(&mut cfg)?;
    cfg.finish()?;
    Ok(j)
}

fn score(j: &Judge, s: &Sample, e: &Episode) -> Option<f32> {
    j.score(s, e).unwrap()
}

#[test]
fn verdict_variants_through_the_model() {
    // 32 bytes of output: the JSON replies are longer than the default 16 scripted bytes.
    let j = judge_from("max_new_tokens = 32").unwrap();
    let s = sample(&["Paris"]);
    let cases = [
        ("Paris", 1.0),            // True
        ("Lyon", 0.0),             // False.
        ("the capital", 1.0),      // Verdict: CORRECT
        ("a city in France", 0.0), // {"correct": false}: a key, then the verdict
        ("paris city", 1.0),       // yes
        ("PARIS!", 1.0),           // {"label": "CORRECT"} (Mem0's format)
        ("Nice", 0.0),             // WRONG
    ];
    for (p, want) in cases {
        assert_eq!(score(&j, &s, &boxed(p)), Some(want), "prediction {p:?}");
    }
    assert_eq!(
        j.stats(),
        JudgeStats {
            lm_calls: 7,
            requests: 7,
            cache_hits: 0,
            unparsable: 0
        }
    );
}

#[test]
fn unparsable_output_scores_zero_and_is_counted() {
    let j = judge_from("").unwrap();
    let s = sample(&["Paris"]);
    assert_eq!(score(&j, &s, &boxed("Marseille")), Some(0.0));
    assert_eq!(score(&j, &s, &boxed("Toulouse")), Some(0.0)); // default reply "hmm"
    assert_eq!(j.stats().unparsable, 2);
    // From the cache, an unparsable verdict is used (and counted) again, not re-asked.
    assert_eq!(score(&j, &s, &boxed("Marseille")), Some(0.0));
    let st = j.stats();
    assert_eq!((st.requests, st.cache_hits, st.unparsable), (2, 1, 3));
}

#[test]
fn max_new_tokens_caps_the_output() {
    // The scripted LM cuts replies to max_new_tokens bytes: "True" becomes "Tr".
    let j = judge_from("max_new_tokens = 2").unwrap();
    assert_eq!(score(&j, &sample(&["Paris"]), &boxed("Paris")), Some(0.0));
    assert_eq!(j.stats().unparsable, 1);
    let j = judge_from("max_new_tokens = 4").unwrap();
    assert_eq!(score(&j, &sample(&["Paris"]), &boxed("Paris")), Some(1.0));
}

#[test]
fn prompt_holds_question_gold_and_prediction() {
    let (lm, c) = counting(0);
    let j = Judge::new(lm).unwrap();
    j.score(&sample(&["Paris"]), &boxed("Lyon")).unwrap();
    let prompts = c.prompts.lock().unwrap();
    assert_eq!(prompts.len(), 1);
    assert!(
        prompts[0].contains(
            "Question: What is the capital of France?\nGold answer: Paris\nGenerated answer: Lyon\n"
        ),
        "{}",
        prompts[0]
    );
    assert!(prompts[0].starts_with("You grade answers."));
}

#[test]
fn any_gold_counts_and_golds_share_one_call() {
    let (lm, c) = counting(0);
    let j = Judge::new(lm).unwrap();
    // "Lyon" is judged against both golds: Paris → False, Lyon → no rule → unparsable.
    let s2 = sample(&["Paris", "Lyon"]);
    assert_eq!(j.score(&s2, &boxed("Lyon")).unwrap(), Some(0.0));
    assert_eq!((c.calls(), c.requests()), (1, 2));
    // "Paris" is right against the first gold: one call with two requests, score 1.
    let s3 = sample(&["Lutetia", "Paris"]);
    assert_eq!(j.score(&s3, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!((c.calls(), c.requests()), (2, 4));
    // Per-gold verdicts are reused: only the new gold is asked.
    let s4 = sample(&["Paris", "Lutetia", "City of Light"]);
    assert_eq!(j.score(&s4, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(
        (c.calls(), c.requests()),
        (2, 4),
        "a cached True ends scoring"
    );
    assert_eq!(j.score(&s4, &boxed("Lyon")).unwrap(), Some(0.0));
    assert_eq!(
        (c.calls(), c.requests()),
        (3, 6),
        "Lutetia and City of Light asked"
    );
    // Duplicate golds are asked once.
    let s5 = sample(&["Rome", "Rome"]);
    assert_eq!(j.score(&s5, &boxed("Paris")).unwrap(), Some(0.0));
    assert_eq!((c.calls(), c.requests()), (4, 7));
}

#[test]
fn second_scoring_makes_no_lm_call() {
    let (lm, c) = counting(0);
    let j = Judge::new(lm).unwrap();
    let s = sample(&["Paris"]);
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    // The key is the scored answer, not the episode text around the box.
    assert_eq!(
        j.score(&s, &episode("\\boxed{ Paris }")).unwrap(),
        Some(1.0)
    );
    assert_eq!(c.calls(), 1);
    assert_eq!(j.stats().cache_hits, 2);
    // Another question is another key.
    let mut other = sample(&["Paris"]);
    other.question = "Where is the Louvre?".into();
    assert_eq!(j.score(&other, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(c.calls(), 2);
}

#[test]
fn none_without_golds_and_require_boxed() {
    let (lm, c) = counting(0);
    let j = Judge::new(lm).unwrap();
    assert_eq!(j.score(&sample(&[]), &boxed("Paris")).unwrap(), None);
    // Default require_boxed = true: no box → 0 without a call; an empty box → 0 too.
    assert_eq!(
        j.score(&sample(&["Paris"]), &episode("Paris")).unwrap(),
        Some(0.0)
    );
    assert_eq!(j.score(&sample(&["Paris"]), &boxed("")).unwrap(), Some(0.0));
    let no_answer = Episode {
        answer: None,
        ..episode("")
    };
    assert_eq!(j.score(&sample(&["Paris"]), &no_answer).unwrap(), Some(0.0));
    assert_eq!(c.calls(), 0);

    // require_boxed = false: the whole answer is judged; a box still wins when present.
    let j = judge_from("require_boxed = false").unwrap();
    assert_eq!(score(&j, &sample(&["Paris"]), &episode("Paris")), Some(1.0));
    assert_eq!(
        score(&j, &sample(&["Paris"]), &episode("Lyon, I think")),
        Some(0.0),
        "judged as a whole: the default reply is unparsable"
    );
    assert_eq!(j.stats().unparsable, 1);
    assert_eq!(
        score(
            &j,
            &sample(&["Paris"]),
            &episode("Maybe Paris? \\boxed{Lyon}")
        ),
        Some(0.0)
    );
    assert_eq!(j.stats().unparsable, 1, "the box (Lyon) was judged: False");
}

#[test]
fn cache_file_is_written_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/judge.jsonl");
    let table = format!("cache = {:?}", path.to_str().unwrap());
    let s = sample(&["Paris"]);
    {
        let j = judge_from(&table).unwrap();
        assert!(!path.exists(), "nothing is written before a verdict");
        assert_eq!(score(&j, &s, &boxed("Paris")), Some(1.0));
        assert_eq!(score(&j, &s, &boxed("Marseille")), Some(0.0));
        assert_eq!(score(&j, &s, &boxed("Paris")), Some(1.0)); // cached: not appended
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["question"], "What is the capital of France?");
    assert_eq!(lines[0]["gold"], "Paris");
    assert_eq!(lines[0]["prediction"], "Paris");
    assert_eq!(lines[0]["output"], "True");
    assert_eq!(lines[0]["verdict"], true);
    assert_eq!(lines[1]["verdict"], serde_json::Value::Null);
    assert!(
        lines[0]["judge"]
            .as_str()
            .unwrap()
            .starts_with("scripted LM (9 rules")
            && lines[0]["judge"]
                .as_str()
                .unwrap()
                .ends_with("max_new_tokens=16"),
        "{}",
        lines[0]["judge"]
    );
    assert_eq!(lines[0]["template"].as_str().unwrap().len(), 16);

    // A new judge on the same file: no LM request for the cached pairs.
    let j = judge_from(&table).unwrap();
    assert_eq!(j.cached(), 2);
    assert_eq!(score(&j, &s, &boxed("Paris")), Some(1.0));
    assert_eq!(score(&j, &s, &boxed("Marseille")), Some(0.0));
    assert_eq!(
        j.stats(),
        JudgeStats {
            lm_calls: 0,
            requests: 0,
            cache_hits: 2,
            unparsable: 1
        }
    );
    // A new pair is asked and appended.
    assert_eq!(score(&j, &s, &boxed("Lyon")), Some(0.0));
    assert_eq!(j.stats().requests, 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
}

#[test]
fn cache_is_keyed_by_judge_model_and_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.jsonl");
    let s = sample(&["Paris"]);
    let (lm, c) = counting(0);
    let j = Judge::new(lm).unwrap().with_cache_file(&path).unwrap();
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(c.calls(), 1);
    drop(j);

    // Same model, other template: asked again.
    let (lm, c) = counting(0);
    let tpl = PromptTemplate::new(
        "t",
        format!("Be strict.\n{DEFAULT_TEMPLATE}"),
        TEMPLATE_NAMES,
        TEMPLATE_REQUIRED,
    )
    .unwrap();
    let j = Judge::new(lm)
        .unwrap()
        .with_template(tpl)
        .with_cache_file(&path)
        .unwrap();
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(c.calls(), 1, "another template must not reuse verdicts");

    // Other model (describe differs), default template: asked again.
    let j = Judge::new(Box::new(ScriptedLm::new(rules(), "hmm")))
        .unwrap()
        .with_cache_file(&path)
        .unwrap();
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(
        j.stats().requests,
        1,
        "another judge model must not reuse verdicts"
    );

    // Other output cap: asked again.
    let (lm, c) = counting(0);
    let j = Judge::new(lm)
        .unwrap()
        .with_max_new_tokens(32)
        .unwrap()
        .with_cache_file(&path)
        .unwrap();
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(c.calls(), 1);

    // The original judge again: everything cached.
    let (lm, c) = counting(0);
    let j = Judge::new(lm).unwrap().with_cache_file(&path).unwrap();
    assert_eq!(j.cached(), 4);
    assert_eq!(j.score(&s, &boxed("Paris")).unwrap(), Some(1.0));
    assert_eq!(c.calls(), 0);
}

#[test]
fn corrupt_cache_file_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.jsonl");
    // Write one good record through a judge, then a broken line.
    {
        let j = judge_from(&format!("cache = {:?}", path.to_str().unwrap())).unwrap();
        score(&j, &sample(&["Paris"]), &boxed("Paris"));
    }
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n{\"judge\": \"x\", \"verdict\": tru\n");
    std::fs::write(&path, text).unwrap();
    let err = judge_from(&format!("cache = {:?}", path.to_str().unwrap()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("judge.jsonl"), "{err}");
    assert!(err.contains("line 3"), "{err}");

    // A well-formed JSON line that is not a record (unknown field) is refused too.
    std::fs::write(&path, "{\"foo\": 1}\n").unwrap();
    let err = judge_from(&format!("cache = {:?}", path.to_str().unwrap()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("not a judge cache record"),
        "{err}"
    );
}

/// The judged answer is cut out as by every answer metric (`AnswerExtraction`): `extract`
/// (`boxed` default, `boxed-or-text`, `answer-is`, `text`), `strip_think` (default true: only
/// what follows the last `</think>`), and the older `require_boxed`, never together with
/// `extract`. An answer with nothing to judge scores 0 without a call.
#[test]
fn extract_and_strip_think_as_every_answer_metric() {
    let s = sample(&["Paris"]);
    let calls = |j: &Judge| j.stats().lm_calls;

    // MemAgent's "the answer is".
    let j = judge_from("extract = \"answer-is\"").unwrap();
    assert_eq!(
        score(
            &j,
            &s,
            &episode("Both clues point north, so the answer is **Paris**.")
        ),
        Some(1.0)
    );
    assert_eq!(score(&j, &s, &episode("\\boxed{Paris}")), Some(0.0));
    assert_eq!(calls(&j), 1, "no phrase: nothing judged");
    // The whole text, box or not.
    let j = judge_from("extract = \"text\"").unwrap();
    assert_eq!(score(&j, &s, &episode("  Paris \n")), Some(1.0));
    assert_eq!(score(&j, &s, &boxed("Paris")), Some(0.0));
    assert_eq!(
        j.stats().unparsable,
        1,
        "the whole boxed sentence was judged"
    );
    // boxed-or-text is require_boxed = false.
    let j = judge_from("extract = \"boxed-or-text\"").unwrap();
    assert_eq!(score(&j, &s, &episode("Paris")), Some(1.0));
    assert_eq!(score(&j, &s, &episode("Paris? \\boxed{Lyon}")), Some(0.0));
    assert_eq!(j.stats().unparsable, 0, "the box (Lyon) was judged: False");

    // strip_think (default true): the reasoning is never judged.
    let thinking = episode("<think>Lyon? No: \\boxed{Paris}</think>\n\nI am not sure.");
    let j = judge_from("").unwrap();
    assert!(j.extraction().strip_think);
    assert_eq!(score(&j, &s, &thinking), Some(0.0));
    assert_eq!(calls(&j), 0, "no box after </think>: nothing judged");
    assert_eq!(
        score(
            &j,
            &s,
            &episode("<think>\\boxed{Lyon}</think> \\boxed{Paris}")
        ),
        Some(1.0)
    );
    let j = judge_from("strip_think = false").unwrap();
    assert_eq!(
        score(&j, &s, &thinking),
        Some(1.0),
        "the box inside <think>"
    );
    let j = judge_from("require_boxed = false").unwrap();
    assert_eq!(
        score(&j, &s, &episode("<think>Lyon?</think>Paris")),
        Some(1.0)
    );
    let j = judge_from("require_boxed = false\nstrip_think = false").unwrap();
    assert_eq!(
        score(&j, &s, &episode("<think>Lyon?</think>Paris")),
        Some(0.0)
    );
    assert_eq!(
        j.stats().unparsable,
        1,
        "judged with the reasoning: no rule"
    );
    // Nothing after </think>: the whole answer, as MemAgent's eval falls back.
    let j = judge_from("extract = \"text\"").unwrap();
    assert_eq!(score(&j, &s, &episode("Paris</think>")), Some(0.0));
    assert_eq!(j.stats().unparsable, 1);

    // Recipe errors name the key.
    let err = judge_from("require_boxed = true\nextract = \"boxed\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`eval.metrics[0].extract`")
            && err.contains("`eval.metrics[0].require_boxed`"),
        "{err}"
    );
    let err = judge_from("extract = \"last-line\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`eval.metrics[0].extract`") && err.contains("\"answer-is\""),
        "{err}"
    );
    let err = judge_from("strip_think = \"yes\"").unwrap_err().to_string();
    assert!(err.contains("`eval.metrics[0].strip_think`"), "{err}");

    // The resolved table records the extraction.
    let (_, resolved) = registry::build::<dyn Reward>(Cfg::new(
        "m",
        toml::from_str("kind = \"judge\"\nmodel = \"scripted\"").unwrap(),
    ))
    .unwrap();
    assert_eq!(resolved["extract"].as_str(), Some("boxed"));
    assert_eq!(resolved["strip_think"].as_bool(), Some(true));
}

#[test]
fn recipe_key_errors() {
    // No model table.
    let mut cfg = Cfg::new(
        "eval.metrics[0]",
        toml::from_str("kind = \"judge\"").unwrap(),
    );
    let err = registry::build::<dyn Reward>(cfg.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`eval.metrics[0].model`") && err.contains("missing"),
        "{err}"
    );
    assert!(from_cfg(&mut cfg).is_err());

    let err = judge_from("max_new_tokens = 0").unwrap_err().to_string();
    assert!(err.contains("`eval.metrics[0].max_new_tokens`"), "{err}");
    let err = judge_from("require_boxed = \"yes\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`eval.metrics[0].require_boxed`"), "{err}");
    let err = judge_from("bogus = 1").unwrap_err().to_string();
    assert!(err.contains("`eval.metrics[0].bogus`"), "{err}");
    assert!(
        err.contains(
            "cache, extract, max_new_tokens, model, name, require_boxed, strip_think, template"
        ),
        "{err}"
    );
    let err = judge_from("name = \"\"").unwrap_err().to_string();
    assert!(err.contains("`eval.metrics[0].name`"), "{err}");
    let err = judge_from("template = \"/nonexistent/judge.txt\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`eval.metrics[0].template`") && err.contains("/nonexistent/judge.txt"),
        "{err}"
    );

    // A template without {prediction}.
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("t.txt");
    std::fs::write(&tpl, "Gold: {gold}\nTrue or False?").unwrap();
    let err = judge_from(&format!("template = {:?}", tpl.to_str().unwrap()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("{prediction}") && err.contains("t.txt"),
        "{err}"
    );

    // The model's own keys are checked under the model's path.
    let mut cfg = Cfg::new(
        "eval.metrics[0]",
        toml::from_str("kind = \"judge\"\nmodel = { kind = \"scripted\", temperature = 1 }")
            .unwrap(),
    );
    cfg.req::<String>("kind").unwrap();
    let err = from_cfg(&mut cfg).unwrap_err().to_string();
    assert!(err.contains("`eval.metrics[0].model.temperature`"), "{err}");
}

#[test]
fn registry_build_resolves_defaults_and_name() {
    let cfg = Cfg::new(
        "eval.metrics[1]",
        toml::from_str(
            "kind = \"judge\"\nname = \"judge-unboxed\"\nrequire_boxed = false\n\
             model = { kind = \"scripted\", default = \"True\" }",
        )
        .unwrap(),
    );
    let (r, resolved) = registry::build::<dyn Reward>(cfg).unwrap();
    assert_eq!(r.name(), "judge-unboxed");
    assert_eq!(resolved["kind"].as_str(), Some("judge"));
    assert_eq!(resolved["max_new_tokens"].as_integer(), Some(16));
    assert_eq!(resolved["require_boxed"].as_bool(), Some(false));
    assert!(
        resolved.get("template").is_none(),
        "default template: no file"
    );
    assert!(resolved.get("cache").is_none());
    let model = resolved["model"].as_table().unwrap();
    assert_eq!(model["kind"].as_str(), Some("scripted"));
    assert_eq!(model["default"].as_str(), Some("True"));
    assert_eq!(
        r.score(&sample(&["Paris"]), &episode("whatever")).unwrap(),
        Some(1.0)
    );
    let r2 = registry::build::<dyn Reward>(Cfg::new(
        "m",
        toml::from_str("kind = \"judge\"\nmodel = \"scripted\"").unwrap(),
    ))
    .unwrap()
    .0;
    assert_eq!(r2.name(), "judge");
}

#[test]
fn four_threads_one_call_per_distinct_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.jsonl");
    let (lm, c) = counting(50);
    let j = Judge::new(lm).unwrap().with_cache_file(&path).unwrap();
    let s = sample(&["Paris"]);

    // Same key from 4 threads at once: one request; all see the verdict.
    let barrier = Barrier::new(4);
    let scores: Vec<Option<f32>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    barrier.wait();
                    j.score(&s, &boxed("Paris")).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(scores, vec![Some(1.0); 4]);
    assert_eq!((c.calls(), c.requests()), (1, 1));

    // Two distinct keys, each from two threads: two requests.
    let barrier = Barrier::new(4);
    let preds = ["Lyon", "Nice", "Lyon", "Nice"];
    let scores: Vec<Option<f32>> = std::thread::scope(|sc| {
        let hs: Vec<_> = preds
            .iter()
            .map(|p| {
                let (j, s, barrier) = (&j, &s, &barrier);
                sc.spawn(move || {
                    barrier.wait();
                    j.score(s, &boxed(p)).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(scores, vec![Some(0.0); 4]);
    assert_eq!(c.requests(), 3);
    assert_eq!(j.stats().cache_hits, 3 + 2);

    // Overlapping gold sets locked in different orders from 4 threads: no deadlock, and
    // every (gold, prediction) asked once.
    let barrier = Barrier::new(4);
    let golds = [
        sample(&["Rome", "Oslo"]),
        sample(&["Oslo", "Rome"]),
        sample(&["Oslo", "Bern"]),
        sample(&["Bern", "Rome"]),
    ];
    std::thread::scope(|sc| {
        for g in &golds {
            let (j, barrier) = (&j, &barrier);
            sc.spawn(move || {
                barrier.wait();
                assert_eq!(j.score(g, &boxed("Madrid")).unwrap(), Some(0.0));
            });
        }
    });
    assert_eq!(c.requests(), 3 + 3);
    // The file holds exactly one line per distinct key.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
}

#[test]
fn without_a_cache_key_the_eval_run_directory_holds_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample(&["Paris"]);
    {
        let j = judge_from("").unwrap();
        assert_eq!(j.cache_file(), None, "no file before an eval attaches one");
        j.attach_run_dir(dir.path()).unwrap();
        assert_eq!(j.cache_file(), Some(dir.path().join("judge-cache.jsonl")));
        assert_eq!(score(&j, &s, &boxed("Paris")), Some(1.0));
        assert_eq!(score(&j, &s, &boxed("nonsense")), Some(0.0)); // "hmm": unparsable
        let c = j.counters();
        assert_eq!(c["verdicts_asked"], 2);
        assert_eq!(c["cache_hits"], 0);
        assert_eq!(c["unparsable"], 1);
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("judge-cache.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    // Re-running the eval into the same directory pays nothing.
    let j = judge_from("name = \"judge\"").unwrap();
    j.attach_run_dir(dir.path()).unwrap();
    assert_eq!(score(&j, &s, &boxed("Paris")), Some(1.0));
    assert_eq!(j.counters()["verdicts_asked"], 0);
    assert_eq!(j.counters()["cache_hits"], 1);

    // A recipe's own `cache` wins over the run directory.
    let other = dir.path().join("mine.jsonl");
    let j = judge_from(&format!("cache = {:?}", other.to_str().unwrap())).unwrap();
    j.attach_run_dir(dir.path()).unwrap();
    assert_eq!(j.cache_file(), Some(other));
}

#[test]
fn a_last_line_cut_short_by_a_kill_is_dropped_and_the_cache_appends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.jsonl");
    let table = format!("cache = {:?}", path.to_str().unwrap());
    let s = sample(&["Paris"]);
    {
        let j = judge_from(&table).unwrap();
        score(&j, &s, &boxed("Paris"));
        score(&j, &s, &boxed("Lyon"));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    // A kill in the middle of the second verdict's write: half of it, no newline.
    let cut = format!("{}\n{}", lines[0], &lines[1][..lines[1].len() / 2]);
    std::fs::write(&path, &cut).unwrap();
    let j = judge_from(&table).unwrap();
    assert_eq!(
        j.cached(),
        1,
        "the whole line is loaded, the cut one is not"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", lines[0]),
        "the file is cut back to its whole lines"
    );
    // The lost verdict is asked again and appended on a line of its own.
    assert_eq!(score(&j, &s, &boxed("Lyon")), Some(0.0));
    assert_eq!(j.stats().requests, 1);
    let after = std::fs::read_to_string(&path).unwrap();
    for l in after.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    assert_eq!(after.lines().count(), 2);
    assert_eq!(judge_from(&table).unwrap().cached(), 2);
}

#[test]
fn mem0_template_and_its_json_label() {
    use memfactory_reward_judge::{MEM0_TEMPLATE, parse_mem0_verdict};
    assert!(MEM0_TEMPLATE.contains("label an answer to a question as ’CORRECT’ or ’WRONG’"));
    assert_eq!(parse_mem0_verdict("{\"label\": \"CORRECT\"}"), Some(true));
    assert_eq!(
        parse_mem0_verdict("ok ```json\n{\"label\": \"WRONG\"}\n```"),
        Some(false)
    );
    // Mem0 compares the label exactly.
    assert_eq!(parse_mem0_verdict("{\"label\": \"correct\"}"), Some(false));
    assert_eq!(parse_mem0_verdict("CORRECT"), None);
    assert_eq!(parse_mem0_verdict("{\"verdict\": \"CORRECT\"}"), None);

    let mut cfg_text = String::from("template = \"mem0\"");
    cfg_text.push('\n');
    let j = judge_from(&cfg_text).unwrap();
    let s = sample(&["Paris"]);
    let cases = [
        ("PARIS!", Some(1.0)),           // {"label": "CORRECT"}
        ("Lutetia", Some(0.0)),          // prose saying "correct", then the label WRONG
        ("Paris", Some(0.0)),            // "True": no JSON label, unparsable
        ("a city in France", Some(0.0)), // {"correct": false}: no label
    ];
    for (p, want) in cases {
        assert_eq!(score(&j, &s, &boxed(p)), want, "prediction {p:?}");
    }
    assert_eq!(j.stats().unparsable, 2);
    // The default prompt reads the same Lutetia reply by its first verdict word.
    let words = judge_from("max_new_tokens = 96").unwrap();
    assert_eq!(score(&words, &s, &boxed("Lutetia")), Some(1.0));

    // The prompt sent is Mem0's, with question, gold and prediction filled in.
    let (lm, c) = counting(0);
    let template =
        PromptTemplate::new("mem0", MEM0_TEMPLATE, TEMPLATE_NAMES, TEMPLATE_REQUIRED).unwrap();
    let j = Judge::new(lm).unwrap().with_template(template);
    j.score(&sample(&["Paris"]), &boxed("Lyon")).unwrap();
    let prompts = c.prompts.lock().unwrap();
    assert!(prompts[0].contains(
        "Question: What is the capital of France?\nGold answer: Paris\nGenerated answer: Lyon\n"
    ));
    assert!(prompts[0].contains("in a json format with the key as \"label\""));
}
