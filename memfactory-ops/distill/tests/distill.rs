//! The distill (answer agent) op: parsing of good and malformed replies, memory rendering,
//! one lockstep call for several episodes, recorded role and parse errors, the answer-only
//! ablation, an own model, config errors naming keys.

use memfactory_core::{
    Cfg, EpisodeCx, MemoryItem, MemoryOp, OpInput, OpOutput, Prompt, Step, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_distill::{ROLE, Reply, parse_reply, render_memories};
use memfactory_store_memory::InMemoryStore;
use memfactory_testkit::CountingLm;

fn rule(contains: &[&str], reply: &str) -> Rule {
    Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    }
}

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.answer", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn build_err(src: &str) -> String {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.answer", toml::from_str(src).unwrap()))
        .err()
        .expect("the table should be rejected")
        .to_string()
}

fn mem(id: &str, speaker: Option<&str>, time: Option<&str>, content: &str) -> MemoryItem {
    let mut it = MemoryItem::new(id, content);
    it.speaker = speaker.map(str::to_string);
    it.time = time.map(str::to_string);
    it
}

fn candidates() -> Vec<MemoryItem> {
    vec![
        mem(
            "m1",
            Some("Melanie"),
            Some("8 May 2023"),
            "Melanie painted a lake.",
        ),
        mem("m2", Some("Caroline"), None, "Caroline is a counselor."),
        mem("m3", None, Some("9 June 2023"), "It rained\nall day."),
        mem(
            "m4",
            Some("Caroline"),
            Some("8 May 2023"),
            "Caroline attended an LGBTQ support group on 7 May 2023.",
        ),
    ]
}

fn reply(answer: &str, relevant: &[usize], errors: &[&str]) -> Reply {
    Reply {
        answer: answer.into(),
        relevant: relevant.to_vec(),
        errors: errors.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn good_replies_parse() {
    assert_eq!(
        parse_reply("Relevant: 3, 1\nAnswer: 7 May 2023", 4, true),
        reply("7 May 2023", &[3, 1], &[])
    );
    // Case, brackets, duplicates, the answer on the same line, an answer on the next line.
    assert_eq!(
        parse_reply("relevant: [3], [3], #0 Answer: Paris", 4, true),
        reply("Paris", &[3, 0], &[])
    );
    assert_eq!(
        parse_reply(
            "Let me think.\nRelevant: none\nANSWER:\n  a lake \nmore text",
            4,
            true
        ),
        reply("a lake", &[], &[])
    );
    // The LAST Answer: wins.
    assert_eq!(
        parse_reply("Relevant: 2\nAnswer: first\nAnswer: second", 4, true),
        reply("second", &[2], &[])
    );
    // Answer only (distill = false): a Relevant: line is not read.
    assert_eq!(
        parse_reply("Relevant: 1\nAnswer: yes", 4, false),
        reply("yes", &[], &[])
    );
    assert_eq!(parse_reply("Answer: yes", 4, false), reply("yes", &[], &[]));
}

#[test]
fn malformed_replies_are_recorded() {
    assert_eq!(
        parse_reply("  7 May 2023\n", 4, true),
        reply(
            "7 May 2023",
            &[],
            &["missing `Relevant:` line", "missing `Answer:`"]
        )
    );
    assert_eq!(
        parse_reply(
            "Relevant: 1, 9, -2, 1, 99999999999999999999999\nAnswer: x",
            4,
            true
        ),
        reply(
            "x",
            &[1],
            &[
                "relevant memories 9, -2, 99999999999999999999999 not among the 4 memories (numbered from 0)"
            ]
        )
    );
    assert_eq!(
        parse_reply("Relevant: 0\nAnswer: ", 1, true),
        reply("", &[0], &["empty answer after `Answer:`"])
    );
    assert_eq!(
        parse_reply("Relevant: 0\nI do not know", 0, true),
        reply(
            "Relevant: 0\nI do not know",
            &[],
            &[
                "relevant memory 0 not among the 0 memories (numbered from 0)",
                "missing `Answer:`"
            ]
        )
    );
    assert_eq!(
        parse_reply("no idea", 3, false),
        reply("no idea", &[], &["missing `Answer:`"])
    );
    assert_eq!(parse_reply("Answer: x", 3, false).parse_error(), None);
    assert_eq!(
        parse_reply("x", 3, true).parse_error().as_deref(),
        Some("missing `Relevant:` line; missing `Answer:`")
    );
}

#[test]
fn memories_are_numbered_with_speaker_and_time() {
    assert_eq!(
        render_memories(&candidates(), "(no memories)"),
        "[0] (Melanie, 8 May 2023) Melanie painted a lake.\n\
         [1] (Caroline) Caroline is a counselor.\n\
         [2] (9 June 2023) It rained all day.\n\
         [3] (Caroline, 8 May 2023) Caroline attended an LGBTQ support group on 7 May 2023."
    );
    assert_eq!(
        render_memories(&[MemoryItem::new("x", "bare")], "-"),
        "[0] bare"
    );
    assert_eq!(render_memories(&[], "(no memories)"), "(no memories)");
}

#[test]
fn one_lockstep_call_answers_every_episode() {
    let scripted = ScriptedLm::new(
        vec![
            rule(
                &["Question: When did Caroline go to the support group?\n"],
                "Relevant: 3, 7\nAnswer: 7 May 2023",
            ),
            rule(
                &["Question: What did Melanie paint?\n"],
                "Relevant: 0\nAnswer: a lake",
            ),
        ],
        "I don't know.",
    );
    let lm = CountingLm::over(&scripted);
    let op = op("kind = \"distill\"");
    let mut cxs: Vec<EpisodeCx<'_>> = (0..3)
        .map(|p| {
            EpisodeCx::new(
                &lm,
                Box::new(InMemoryStore::new()),
                "conv-26",
                p,
                3 + p as u64,
            )
        })
        .collect();
    let c = candidates();
    let questions = [
        "When did Caroline go to the support group?",
        "What did Melanie paint?",
        "Where does Jon live?",
    ];
    let inputs: Vec<OpInput<'_>> = questions
        .iter()
        .map(|q| OpInput {
            question: q,
            observation: "",
            memory: &c,
        })
        .collect();
    let outs = op.run_batch(&mut cxs, &inputs).unwrap();
    assert_eq!(lm.batches(), vec![3], "one generate call with 3 requests");
    assert_eq!(
        outs,
        vec![
            OpOutput {
                items: vec![c[3].clone()],
                text: Some("7 May 2023".into()),
                parse_error: Some(
                    "relevant memory 7 not among the 4 memories (numbered from 0)".into()
                ),
                ..Default::default()
            },
            OpOutput {
                items: vec![c[0].clone()],
                text: Some("a lake".into()),
                ..Default::default()
            },
            OpOutput {
                text: Some("I don't know.".into()),
                parse_error: Some("missing `Relevant:` line; missing `Answer:`".into()),
                ..Default::default()
            },
        ]
    );
    for ((cx, out), q) in cxs.iter_mut().zip(&outs).zip(&questions) {
        cx.apply(op.kind(), out.edits.clone(), out.parse_error.clone())
            .unwrap();
        let Step::Lm(call) = &cx.episode.steps[0] else {
            panic!("first step is not an LM call")
        };
        assert_eq!(call.role, ROLE);
        assert_eq!(call.role, "answer");
        assert_eq!(call.params.max_new_tokens, 128);
        let Prompt::Chat(msgs) = &call.prompt else {
            panic!("chat prompt expected")
        };
        let text = &msgs[0].content;
        assert!(
            text.ends_with(&format!(
                "Memories:\n{}\nQuestion: {q}\n",
                render_memories(&c, "(no memories)")
            )),
            "{text}"
        );
        assert!(text.contains("Relevant: <numbers"), "{text}");
        let Step::Edit {
            op: kind,
            edits,
            parse_error,
            ..
        } = &cx.episode.steps[1]
        else {
            panic!("second step is not an edit")
        };
        assert_eq!(kind, "distill");
        assert!(edits.is_empty());
        assert_eq!(parse_error, &out.parse_error);
    }
    assert_eq!(
        cxs.iter()
            .map(|c| c.episode.parse_errors())
            .collect::<Vec<_>>(),
        [1, 0, 1]
    );
}

#[test]
fn answer_only_ablation_and_own_model() {
    let episode_lm = ScriptedLm::new(Vec::new(), "Answer: from the policy");
    let counting = CountingLm::over(&episode_lm);
    let op = op(r#"
kind = "distill"
distill = false
max_new_tokens = 32
empty_memory = "NO MEMORIES"
[model]
kind = "scripted"
default = "Relevant: 0\nAnswer: frozen"
"#);
    let mut cx = EpisodeCx::new(&counting, Box::new(InMemoryStore::new()), "s", 0, 1);
    let out = op
        .run(
            &mut cx,
            OpInput {
                question: "Who?",
                observation: "",
                memory: &[],
            },
        )
        .unwrap();
    assert!(
        counting.batches().is_empty(),
        "the episode model was not asked"
    );
    assert_eq!(
        out,
        OpOutput {
            text: Some("frozen".into()),
            ..Default::default()
        }
    );
    let call = cx.episode.lm_calls().next().unwrap();
    assert_eq!(call.role, "answer");
    assert_eq!(call.params.max_new_tokens, 32);
    let Prompt::Chat(msgs) = &call.prompt else {
        panic!("chat prompt expected")
    };
    assert!(
        msgs[0]
            .content
            .ends_with("Memories:\nNO MEMORIES\nQuestion: Who?\n")
    );
    assert!(!msgs[0].content.contains("Relevant"), "{}", msgs[0].content);
}

#[test]
fn config_errors_name_keys() {
    let err = build_err("kind = \"distill\"\ndistill = \"yes\"");
    assert!(err.contains("`agent.answer.distill`"), "{err}");
    let err = build_err("kind = \"distill\"\nmax_new_tokens = 0");
    assert!(err.contains("`agent.answer.max_new_tokens`"), "{err}");
    let err = build_err("kind = \"distill\"\nk = 60");
    assert!(
        err.contains("`agent.answer.k`") && err.contains("unknown key"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("mf-distill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "Q: {question}").unwrap();
    let err = build_err(&format!(
        "kind = \"distill\"\ntemplate = {:?}",
        bad.display().to_string()
    ));
    assert!(err.contains("{memories}"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
