//! MemAgent's own protocol on the `memagent` paradigm: the published eval's final prompt
//! (`final = "answer-is"`), its whitespace stripping (`strip`), centre truncation under
//! `max_chunks` (`truncate`), checked against MemAgent's code
//! (`BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146`): the template
//! against a copy of its Python literal, the truncation against `tests/golden/
//! centre_truncation.json` made by `scripts/memagent_reference.py golden` from a
//! re-implementation of `memory.py` + `postprocess_data`. Scripted LM, byte tokens.

use memfactory_agent_memagent::{ANSWER_IS_FINAL_TEMPLATE, ANSWER_ROLE, Truncate};
use memfactory_core::{
    Cfg, Episode, EpisodeCx, Paradigm, Prompt, Sample, Step, StoreFactory, registry, text::py_strip,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_overwrite as _;
use memfactory_store_memory::InMemoryFactory;

/// `TEMPLATE_FINAL` as written in MemAgent's `taskutils/memory_eval/utils/recurrent.py`
/// (lines 22-33), copied from the Python source (a triple-quoted literal with no escapes).
const PY_TEMPLATE_FINAL: &str = r#"You are presented with a problem and a previous memory. Please answer the problem based on the previous memory and format your response as follows "Therefore, the answer is (insert answer here)".

<problem> 
{prompt}
</problem>

<memory>
{memory}
</memory>

Your answer:
"#;

fn lm() -> ScriptedLm {
    ScriptedLm::new(
        vec![
            Rule {
                contains: vec!["Therefore, the answer is".into()],
                reply: "Therefore, the answer is 4242.".into(),
            },
            Rule {
                contains: vec!["Your answer:".into()],
                reply: "\\boxed{unknown}".into(),
            },
            // Keep the previous memory.
            Rule {
                contains: vec!["Updated memory:".into()],
                reply: "{between:<memory>\\n|\\n</memory>}".into(),
            },
        ],
        "",
    )
}

fn build(src: &str) -> (Box<dyn Paradigm>, toml::Table) {
    registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap())).unwrap()
}

fn run(agent: &dyn Paradigm, question: &str, context: &str) -> Episode {
    let lm = lm();
    let sample = Sample::text("q1", question, context.to_string(), vec!["4242".into()]);
    let stores = InMemoryFactory;
    let mut cxs = vec![EpisodeCx::new(&lm, stores.open("q1").unwrap(), "q1", 0, 7)];
    agent.run_group(&sample, &mut cxs).unwrap();
    cxs.pop().unwrap().into_episode()
}

fn user_text(prompt: &Prompt) -> &str {
    let Prompt::Chat(msgs) = prompt else {
        panic!("chat prompt expected")
    };
    assert_eq!(msgs.len(), 1);
    &msgs[0].content
}

fn final_prompt(ep: &Episode) -> String {
    let call = ep.lm_calls().last().unwrap();
    assert_eq!(call.role, ANSWER_ROLE);
    user_text(&call.prompt).to_string()
}

/// The `<section>` of every memory-update call, in order.
fn sections(ep: &Episode) -> Vec<String> {
    ep.lm_calls()
        .filter(|c| c.role != ANSWER_ROLE)
        .map(|c| {
            let text = user_text(&c.prompt);
            let start = text.find("<section>\n").unwrap() + "<section>\n".len();
            let end = text.rfind("\n</section>").unwrap();
            text[start..end].to_string()
        })
        .collect()
}

/// `n` pseudo-random lowercase letters: a chunk cut at a wrong offset cannot match.
fn letters(n: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

#[test]
fn answer_is_template_renders_byte_identically() {
    assert_eq!(ANSWER_IS_FINAL_TEMPLATE, PY_TEMPLATE_FINAL);
    let (agent, resolved) = build("kind = \"memagent\"\nfinal = \"answer-is\"\nchunk_tokens = 64");
    assert_eq!(resolved["final"].as_str(), Some("answer-is"));
    assert_eq!(resolved["strip"].as_bool(), Some(true));
    let ep = run(agent.as_ref(), "What is the magic number?", &letters(100));
    // Python: TEMPLATE_FINAL.format(prompt=prompt, memory=memory) (utils/recurrent.py:90).
    let want = PY_TEMPLATE_FINAL
        .replace("{prompt}", "What is the magic number?")
        .replace("{memory}", "No previous memory");
    assert_eq!(final_prompt(&ep), want);
    assert_eq!(ep.answer.as_deref(), Some("Therefore, the answer is 4242."));
}

#[test]
fn boxed_stays_the_default_and_template_still_overrides() {
    let (agent, resolved) = build("kind = \"memagent\"\nchunk_tokens = 64");
    assert_eq!(resolved["final"].as_str(), Some("boxed"));
    assert_eq!(resolved["strip"].as_bool(), Some(false));
    assert_eq!(resolved["truncate"].as_str(), Some("centre"));
    let ep = run(agent.as_ref(), "Q?", &letters(10));
    let p = final_prompt(&ep);
    assert!(p.contains("put the answer in \\boxed{}."), "{p}");
    assert!(!p.contains("Therefore"), "{p}");

    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.txt");
    std::fs::write(&own, "OWN {prompt} / {memory}").unwrap();
    let src = format!(
        "kind = \"memagent\"\nfinal = \"answer-is\"\n[answer]\ntemplate = {:?}",
        own.to_str().unwrap()
    );
    let (agent, _) = build(&src);
    let ep = run(agent.as_ref(), "Q?", &letters(10));
    assert_eq!(final_prompt(&ep), "OWN Q? / No previous memory");
}

#[test]
fn strip_trims_question_and_context_as_python_does() {
    // U+001C..U+001F are `str.isspace()` in Python but not Unicode White_Space.
    let question = "\u{1f} \tWhat is the magic number?\n\u{a0}";
    let context = format!("\n\u{1c}  {}\u{2003}\r\n", letters(30));
    assert_eq!(py_strip(question), "What is the magic number?");
    assert_eq!(py_strip(&context), letters(30));
    assert_eq!(py_strip("\u{200b}x\u{85}"), "\u{200b}x"); // ZWSP is not whitespace

    let (agent, _) = build("kind = \"memagent\"\nfinal = \"answer-is\"\nchunk_tokens = 1000");
    let ep = run(agent.as_ref(), question, &context);
    assert_eq!(sections(&ep), vec![letters(30)]);
    assert!(final_prompt(&ep).contains("<problem> \nWhat is the magic number?\n</problem>"));

    // strip = false keeps them, also with the eval template; the boxed default keeps them.
    for src in [
        "kind = \"memagent\"\nfinal = \"answer-is\"\nstrip = false\nchunk_tokens = 1000",
        "kind = \"memagent\"\nchunk_tokens = 1000",
    ] {
        let (agent, _) = build(src);
        let ep = run(agent.as_ref(), question, &context);
        assert_eq!(sections(&ep), vec![context.clone()], "{src}");
        assert!(
            final_prompt(&ep).contains(&format!("<problem> \n{question}\n</problem>")),
            "{src}"
        );
    }
}

#[test]
fn centre_truncation_matches_memagent_golden() {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("golden/centre_truncation.json")).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let n = case["n"].as_u64().unwrap() as usize;
        let max_chunks = case["max_chunks"].as_u64().unwrap();
        let chunk = case["chunk_tokens"].as_u64().unwrap();
        let context = letters(n);
        let want: Vec<String> = case["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ranges| {
                ranges
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let (a, b) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
                        &context[a as usize..b as usize]
                    })
                    .collect()
            })
            .collect();
        // No `truncate` key: centre is the default.
        let (agent, _) = build(&format!(
            "kind = \"memagent\"\nchunk_tokens = {chunk}\nmax_chunks = {max_chunks}"
        ));
        let ep = run(agent.as_ref(), "Q?", &context);
        assert_eq!(sections(&ep), want, "case {case}");
    }
}

#[test]
fn centre_keeps_both_ends_and_head_keeps_the_start() {
    // 1000 tokens, 3 chunks of 100: centre keeps 0..150 and 850..1000.
    let context = letters(1000);
    let (agent, _) = build("kind = \"memagent\"\nchunk_tokens = 100\nmax_chunks = 3");
    let ep = run(agent.as_ref(), "Q?", &context);
    let read = sections(&ep).concat();
    assert_eq!(read, format!("{}{}", &context[..150], &context[850..]));
    assert!(read.starts_with(&context[..1]) && read.ends_with(&context[999..]));
    assert!(ep.steps.iter().any(|s| matches!(
        s,
        Step::Note { label, text } if label == "truncated" && text == "centre: kept tokens 0..150 + 850..1000 of 1000"
    )));

    let (agent, resolved) =
        build("kind = \"memagent\"\nchunk_tokens = 100\nmax_chunks = 3\ntruncate = \"head\"");
    assert_eq!(resolved["truncate"].as_str(), Some("head"));
    let ep = run(agent.as_ref(), "Q?", &context);
    assert_eq!(sections(&ep).concat(), &context[..300]);

    // MemAgent spells it "center"; a context that fits is never cut (no note).
    let (agent, _) =
        build("kind = \"memagent\"\nchunk_tokens = 100\nmax_chunks = 3\ntruncate = \"center\"");
    let ep = run(agent.as_ref(), "Q?", &context[..300]);
    assert_eq!(sections(&ep).concat(), &context[..300]);
    assert!(
        !ep.steps
            .iter()
            .any(|s| matches!(s, Step::Note { label, .. } if label == "truncated"))
    );
}

#[test]
fn kept_spans_follow_memagent_arithmetic() {
    // Odd budget: ⌊21/2⌋ = 10 from each end, 20 tokens in all (postprocess_data).
    assert_eq!(Truncate::Centre.kept(101, 21), Some((0..10, 91..101)));
    assert_eq!(Truncate::Centre.kept(22, 21), Some((0..10, 12..22)));
    assert_eq!(Truncate::Centre.kept(21, 21), None);
    assert_eq!(Truncate::Head.kept(101, 21), Some((0..21, 101..101)));
    // L = 1: Python's ids[-0:] would keep everything; here the first token.
    assert_eq!(Truncate::Centre.kept(5, 1), Some((0..1, 5..5)));
}

#[test]
fn bad_protocol_values_are_clear_errors() {
    let err = |src: &str| {
        registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap()))
            .err()
            .unwrap()
            .to_string()
    };
    let e = err("kind = \"memagent\"\nfinal = \"answer_is\"");
    assert!(
        e.contains("agent.final") && e.contains("\"answer-is\"") && e.contains("answer_is"),
        "{e}"
    );
    let e = err("kind = \"memagent\"\ntruncate = \"middle\"");
    assert!(
        e.contains("agent.truncate") && e.contains("\"centre\"") && e.contains("middle"),
        "{e}"
    );
    let e = err("kind = \"memagent\"\nstrip = \"yes\"");
    assert!(e.contains("agent.strip"), "{e}");
    let e = err("kind = \"memagent\"\nfinal = 1");
    assert!(e.contains("agent.final"), "{e}");
    let e = err("kind = \"memagent\"\ntruncation = \"head\"");
    assert!(
        e.contains("agent.truncation") && e.contains("truncate"),
        "{e}"
    );
}
