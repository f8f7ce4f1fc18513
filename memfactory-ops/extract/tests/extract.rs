//! The extract op with the scripted LM: parsing of good, fenced and malformed replies, one
//! lockstep call for several episodes, roles and parse errors as recorded, an own model,
//! config errors naming keys.

use std::collections::BTreeMap;

use memfactory_core::{
    Cfg, EpisodeCx, LanguageModel, MemoryItem, MemoryOp, OpInput, OpOutput, Prompt, Step, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_extract::{Fact, ROLE, parse_facts};
use memfactory_store_memory::InMemoryStore;
use memfactory_testkit::CountingLm;

fn rule(contains: &[&str], reply: &str) -> Rule {
    Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    }
}

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.extract", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn build_err(src: &str) -> String {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.extract", toml::from_str(src).unwrap()))
        .err()
        .expect("the table should be rejected")
        .to_string()
}

fn cx(lm: &dyn LanguageModel, path: usize) -> EpisodeCx<'_> {
    EpisodeCx::new(
        lm,
        Box::new(InMemoryStore::new()),
        "conv-26",
        path,
        7 + path as u64,
    )
}

fn input(turns: &str) -> OpInput<'_> {
    OpInput {
        question: "",
        observation: turns,
        memory: &[],
    }
}

fn fact(speaker: Option<&str>, fact: &str) -> Fact {
    Fact {
        speaker: speaker.map(str::to_string),
        fact: fact.into(),
    }
}

fn item(speaker: Option<&str>, content: &str) -> MemoryItem {
    let mut it = MemoryItem::new("", content);
    it.speaker = speaker.map(str::to_string);
    it.meta = BTreeMap::from([("source".to_string(), "extract".to_string())]);
    it
}

#[test]
fn good_replies_parse_exactly() {
    let text = r#"{"facts": [{"speaker": "Caroline", "fact": "Caroline attended an LGBTQ support group on 7 May 2023"}, {"speaker": "", "fact": "  Melanie paints sunsets. "}, {"fact": "It rained.", "speaker": null, "time": "8 May"}]}"#;
    assert_eq!(
        parse_facts(text, 8).unwrap(),
        vec![
            fact(
                Some("Caroline"),
                "Caroline attended an LGBTQ support group on 7 May 2023"
            ),
            fact(None, "Melanie paints sunsets."),
            fact(None, "It rained."),
        ]
    );
    assert_eq!(parse_facts(r#"{"facts": []}"#, 8).unwrap(), vec![]);
}

#[test]
fn fences_and_prose_are_accepted() {
    let fenced = "Sure! Here are the facts:\n```json\n{\"facts\": [{\"speaker\": \"Mel\", \"fact\": \"Mel ran a {charity} race.\"}]}\n```\nHope that helps.";
    assert_eq!(
        parse_facts(fenced, 8).unwrap(),
        vec![fact(Some("Mel"), "Mel ran a {charity} race.")]
    );
    // A braced non-JSON fragment before the object is skipped.
    let prose =
        "Facts {see below}: {\"facts\": [{\"speaker\": \"Jon\", \"fact\": \"Jon lost his job.\"}]}";
    assert_eq!(
        parse_facts(prose, 8).unwrap(),
        vec![fact(Some("Jon"), "Jon lost his job.")]
    );
}

#[test]
fn malformed_replies_are_errors_with_reasons() {
    let e = |t: &str| parse_facts(t, 8).unwrap_err();
    assert_eq!(
        e("Caroline went to a support group."),
        "no JSON object in the output"
    );
    assert_eq!(
        e(r#"{"facts": [{"fact": "x"}"#),
        "unterminated JSON object (a `{` is never closed)"
    );
    let single = e("{'facts': [{'fact': 'x'}]}");
    assert!(
        single.starts_with("not valid JSON: key must be a string"),
        "{single}"
    );
    assert_eq!(e(r#"{"memories": []}"#), "missing key `facts`");
    assert_eq!(
        e(r#"{"facts": "none"}"#),
        "`facts` is not a list (a string)"
    );
    assert_eq!(
        e(r#"{"facts": ["Caroline went to a group"]}"#),
        "facts[0] is not an object (a string)"
    );
    assert_eq!(
        e(r#"{"facts": [{"fact": "ok"}, {"speaker": "A"}]}"#),
        "facts[1] has no `fact`"
    );
    assert_eq!(
        e(r#"{"facts": [{"fact": 3}]}"#),
        "facts[0].fact is not a string (a number)"
    );
    assert_eq!(
        e(r#"{"facts": [{"fact": "  "}]}"#),
        "facts[0].fact is empty"
    );
    assert_eq!(
        e(r#"{"facts": [{"fact": "x", "speaker": ["A"]}]}"#),
        "facts[0].speaker is not a string (a list)"
    );
}

#[test]
fn max_facts_truncates_before_validation() {
    let text = r#"{"facts": [{"fact": "a"}, {"fact": "b"}, {"fact": 3}]}"#;
    assert_eq!(
        parse_facts(text, 2).unwrap(),
        vec![fact(None, "a"), fact(None, "b")]
    );
    assert_eq!(
        parse_facts(text, 3).unwrap_err(),
        "facts[2].fact is not a string (a number)"
    );
    // Through the op: max_facts = 1 keeps the first fact only.
    let lm = ScriptedLm::new(Vec::new(), text);
    let op = op("kind = \"extract\"\nmax_facts = 1");
    let mut c = cx(&lm, 0);
    let out = op.run(&mut c, input("[D1:1] A: hi")).unwrap();
    assert_eq!(
        out,
        OpOutput {
            items: vec![item(None, "a")],
            ..Default::default()
        }
    );
}

#[test]
fn one_lockstep_call_for_all_episodes_recorded_per_episode() {
    let scripted = ScriptedLm::new(
        vec![
            rule(
                &["Turns:\n[D1:3]"],
                "```json\n{\"facts\": [{\"speaker\": \"Caroline\", \"fact\": \"Caroline attended an LGBTQ support group on 7 May 2023\"}]}\n```",
            ),
            rule(&["Hello"], "{\"facts\": []}"),
        ],
        "I cannot find facts.",
    );
    let lm = CountingLm::over(&scripted);
    let op = op("kind = \"extract\"");
    let mut cxs: Vec<EpisodeCx<'_>> = (0..3).map(|p| cx(&lm, p)).collect();
    let turns = [
        "[D1:3] Caroline (1:56 pm on 8 May, 2023): I went to a LGBTQ support group yesterday.",
        "[D1:1] Melanie (1:56 pm on 8 May, 2023): Hello!",
        "[D1:2] Melanie (1:56 pm on 8 May, 2023): Nice weather.",
    ];
    let inputs: Vec<OpInput<'_>> = turns.iter().map(|t| input(t)).collect();
    let outs = op.run_batch(&mut cxs, &inputs).unwrap();
    assert_eq!(lm.batches(), vec![3], "one generate call with 3 requests");
    assert_eq!(
        outs,
        vec![
            OpOutput {
                items: vec![item(
                    Some("Caroline"),
                    "Caroline attended an LGBTQ support group on 7 May 2023"
                )],
                ..Default::default()
            },
            OpOutput::default(),
            OpOutput {
                parse_error: Some("no JSON object in the output".into()),
                ..Default::default()
            },
        ]
    );
    for ((c, out), t) in cxs.iter_mut().zip(&outs).zip(&turns) {
        c.apply(op.kind(), out.edits.clone(), out.parse_error.clone())
            .unwrap();
        let Step::Lm(call) = &c.episode.steps[0] else {
            panic!("first step is not an LM call")
        };
        assert_eq!(call.role, ROLE);
        assert_eq!(call.role, "extract");
        assert_eq!(call.params.max_new_tokens, 256);
        assert_eq!(call.params.temperature, 0.0);
        let Prompt::Chat(msgs) = &call.prompt else {
            panic!("chat prompt expected")
        };
        assert!(msgs[0].content.contains(&format!("Turns:\n{t}\nReply:")));
        assert!(msgs[0].content.contains("At most 8 facts."));
        let Step::Edit {
            op: kind,
            edits,
            parse_error,
            ..
        } = &c.episode.steps[1]
        else {
            panic!("second step is not an edit")
        };
        assert_eq!(kind, "extract");
        assert!(edits.is_empty());
        assert_eq!(parse_error, &out.parse_error);
    }
    assert_eq!(cxs[2].episode.parse_errors(), 1);
    assert_eq!(cxs[0].episode.parse_errors(), 0);
    // Deterministic seeds differ per path.
    let seed = |c: &EpisodeCx<'_>| c.episode.lm_calls().next().unwrap().params.seed;
    assert_ne!(seed(&cxs[0]), seed(&cxs[1]));
}

#[test]
fn own_model_answers_and_is_recorded_on_the_episode() {
    let episode_lm = ScriptedLm::new(Vec::new(), "{\"facts\": [{\"fact\": \"from the policy\"}]}");
    let counting = CountingLm::over(&episode_lm);
    let op = op(r#"
kind = "extract"
max_new_tokens = 100
[model]
kind = "scripted"
default = '{"facts": [{"speaker": "Frozen", "fact": "from the frozen model"}]}'
"#);
    let mut cxs = vec![cx(&counting, 0), cx(&counting, 1)];
    let outs = op
        .run_batch(&mut cxs, &[input("[D1:1] A: x"), input("[D1:2] B: y")])
        .unwrap();
    assert!(
        counting.batches().is_empty(),
        "the episode model was not asked"
    );
    for (c, out) in cxs.iter().zip(&outs) {
        assert_eq!(
            out.items,
            vec![item(Some("Frozen"), "from the frozen model")]
        );
        let calls: Vec<_> = c.episode.lm_calls().collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].role, "extract");
        assert_eq!(calls[0].params.max_new_tokens, 100);
    }
}

#[test]
fn template_override_and_config_errors_name_keys() {
    let dir = std::env::temp_dir().join(format!("mf-extract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.txt");
    std::fs::write(&good, "TURNS<{turns}> cap {max_facts}").unwrap();
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "no placeholder").unwrap();

    let lm = ScriptedLm::new(
        vec![rule(&["TURNS<[D1:1] A: x> cap 3"], "{\"facts\": []}")],
        "nope",
    );
    let op = op(&format!(
        "kind = \"extract\"\nmax_facts = 3\ntemplate = {:?}",
        good.display().to_string()
    ));
    let mut c = cx(&lm, 0);
    let out = op.run(&mut c, input("[D1:1] A: x")).unwrap();
    assert_eq!(out, OpOutput::default(), "the custom template was used");

    let err = build_err(&format!(
        "kind = \"extract\"\ntemplate = {:?}",
        bad.display().to_string()
    ));
    assert!(err.contains("{turns}"), "{err}");
    let err = build_err("kind = \"extract\"\ntemplate = \"/nonexistent/x.txt\"");
    assert!(err.contains("agent.extract.template"), "{err}");
    let err = build_err("kind = \"extract\"\nmax_facts = 0");
    assert!(
        err.contains("`agent.extract.max_facts`") && err.contains(">= 1"),
        "{err}"
    );
    let err = build_err("kind = \"extract\"\ntemperature = -1.0");
    assert!(err.contains("`agent.extract.temperature`"), "{err}");
    let err = build_err("kind = \"extract\"\nmax_fact = 3");
    assert!(
        err.contains("`agent.extract.max_fact`") && err.contains("unknown key"),
        "{err}"
    );
    let err = build_err("kind = \"extract\"\n[model]\nkind = \"scripted\"\nbogus = 1");
    assert!(err.contains("`agent.extract.model.bogus`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn think_is_stripped_before_parsing_and_kept_in_the_trajectory() {
    let reply = "<think>\nDraft: {\"facts\": [{\"speaker\": \"Caroline\", \"fact\": \"draft\"}]}\n</think>\n\n{\"facts\": [{\"speaker\": \"Caroline\", \"fact\": \"Caroline went to a support group\"}]}";
    let lm = ScriptedLm::new(vec![], reply);
    for (src, want) in [
        ("kind = \"extract\"", "Caroline went to a support group"),
        // Off: the first valid object — the draft inside the reasoning — is taken.
        ("kind = \"extract\"\nstrip_think = false", "draft"),
    ] {
        let op = op(src);
        let mut c = cx(&lm, 0);
        let out = op.run(&mut c, input("[D1:1] Caroline: hi")).unwrap();
        assert_eq!(out.items, vec![item(Some("Caroline"), want)], "{src}");
        let call = c.episode.lm_calls().next().unwrap();
        assert_eq!(call.output.text, reply);
    }
    let e = build_err("kind = \"extract\"\nstrip_think = 1");
    assert!(e.contains("agent.extract.strip_think"), "{e}");
}
