//! The update (memory manager) op: every branch of `parse_decision`, the fresh-id rule,
//! one lockstep call for several episodes with their own stores, recorded roles, edits and
//! parse errors, an own model, config errors naming keys.

use memfactory_core::{
    Cfg, EditOutcome, EpisodeCx, MemoryEdit, MemoryItem, MemoryOp, MemoryStore, OpInput, OpOutput,
    Prompt, Step, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_update::{Decision, ROLE, fresh_id, parse_decision};
use memfactory_store_memory::InMemoryStore;
use memfactory_testkit::CountingLm;

fn rule(contains: &[&str], reply: &str) -> Rule {
    Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    }
}

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.manage", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn build_err(src: &str) -> String {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.manage", toml::from_str(src).unwrap()))
        .err()
        .expect("the table should be rejected")
        .to_string()
}

fn mem(id: &str, content: &str) -> MemoryItem {
    MemoryItem::new(id, content)
}

/// A store holding `items`.
fn store(items: &[MemoryItem]) -> Box<dyn MemoryStore> {
    let mut s = InMemoryStore::new();
    let edits: Vec<MemoryEdit> = items
        .iter()
        .map(|i| MemoryEdit::Add { item: i.clone() })
        .collect();
    s.apply(&edits).unwrap();
    Box::new(s)
}

fn related() -> Vec<MemoryItem> {
    vec![
        mem("m2", "Caroline lives in Boston."),
        mem("m7", "Caroline has a dog."),
    ]
}

#[test]
fn parse_decision_accepts_each_op() {
    let m = related();
    let p = |t: &str| parse_decision(t, &m);
    assert_eq!(
        p(r#"{"op": "ADD", "content": " Caroline likes jazz. "}"#),
        Ok(Decision::Add {
            content: "Caroline likes jazz.".into()
        })
    );
    // Op names in any case; extra keys (an id on ADD) ignored.
    assert_eq!(
        p(r#"{"op": "add", "id": 9, "content": "x"}"#),
        Ok(Decision::Add {
            content: "x".into()
        })
    );
    assert_eq!(
        p(r#"{"op": "UPDATE", "id": 0, "content": "Caroline moved to Seattle."}"#),
        Ok(Decision::Update {
            index: 0,
            content: "Caroline moved to Seattle.".into()
        })
    );
    // id as a numeric string.
    assert_eq!(
        p(r#"{"op": "Update", "id": " 1 ", "content": "Caroline has two dogs."}"#),
        Ok(Decision::Update {
            index: 1,
            content: "Caroline has two dogs.".into()
        })
    );
    assert_eq!(
        p(r#"{"op": "DELETE", "id": 1}"#),
        Ok(Decision::Delete { index: 1 })
    );
    assert_eq!(p(r#"{"op": "NOOP"}"#), Ok(Decision::Noop));
    assert_eq!(p(r#"{"op": "none", "id": 99}"#), Ok(Decision::Noop));
    // Fenced, after prose.
    assert_eq!(
        p("I think {this} is old news.\n```json\n{\"op\": \"NOOP\"}\n```"),
        Ok(Decision::Noop)
    );
}

#[test]
fn parse_decision_rejects_schema_violations() {
    let m = related();
    let e = |t: &str| parse_decision(t, &m).unwrap_err();
    assert_eq!(e("ADD it"), "no JSON object in the output");
    assert_eq!(
        e(r#"{"op": "ADD""#),
        "unterminated JSON object (a `{` is never closed)"
    );
    let single = e("{'op': 'ADD', 'content': 'x'}");
    assert!(
        single.starts_with("not valid JSON: key must be a string"),
        "{single}"
    );
    assert_eq!(e(r#"{"content": "x"}"#), "missing key `op`");
    assert_eq!(e(r#"{"op": 1}"#), "`op` is not a string (a number)");
    assert_eq!(
        e(r#"{"op": "MERGE", "id": 0}"#),
        "unknown op \"MERGE\" (expected ADD, UPDATE, DELETE or NOOP)"
    );
    assert_eq!(
        e(r#"{"op": "UPDATE", "content": "x"}"#),
        "UPDATE needs an `id`"
    );
    assert_eq!(e(r#"{"op": "DELETE", "id": null}"#), "DELETE needs an `id`");
    assert_eq!(
        e(r#"{"op": "DELETE", "id": -1}"#),
        "`id` -1 is not a memory index (a whole number >= 0)"
    );
    assert_eq!(
        e(r#"{"op": "DELETE", "id": 1.5}"#),
        "`id` 1.5 is not a memory index (a whole number >= 0)"
    );
    assert_eq!(
        e(r#"{"op": "DELETE", "id": "m2"}"#),
        "`id` \"m2\" is not a memory index (a whole number >= 0)"
    );
    assert_eq!(
        e(r#"{"op": "DELETE", "id": [0]}"#),
        "`id` is not a number (a list)"
    );
    assert_eq!(
        e(r#"{"op": "DELETE", "id": 2}"#),
        "DELETE of memory 2, but the related memories are numbered 0..=1"
    );
    assert_eq!(
        parse_decision(r#"{"op": "UPDATE", "id": 0, "content": "x"}"#, &[]).unwrap_err(),
        "UPDATE of memory 0, but there are no related memories"
    );
    assert_eq!(e(r#"{"op": "ADD"}"#), "ADD needs a `content`");
    assert_eq!(
        e(r#"{"op": "ADD", "content": "  "}"#),
        "ADD has an empty `content`"
    );
    assert_eq!(
        e(r#"{"op": "ADD", "content": ["x"]}"#),
        "`content` is not a string (a list)"
    );
    assert_eq!(
        e(r#"{"op": "UPDATE", "id": 1}"#),
        "UPDATE needs a `content`"
    );
}

#[test]
fn fresh_ids_and_edits() {
    assert_eq!(fresh_id(&[]), "m1");
    let items: Vec<MemoryItem> = ["m1", "m3", "x7", "m", "m2a", "m10", "M40", "memory"]
        .iter()
        .map(|id| mem(id, "c"))
        .collect();
    assert_eq!(fresh_id(&items), "m11");
    assert_eq!(fresh_id(&[mem("m007", "c")]), "m8");
    assert_eq!(fresh_id(&[mem("other", "c")]), "m1");

    let m = related();
    assert_eq!(
        Decision::Add {
            content: "x".into()
        }
        .into_edit(&m, "m8"),
        MemoryEdit::Add {
            item: mem("m8", "x")
        }
    );
    assert_eq!(
        Decision::Update {
            index: 1,
            content: "y".into()
        }
        .into_edit(&m, ""),
        MemoryEdit::Update {
            id: "m7".into(),
            content: "y".into(),
            embedding: None
        }
    );
    assert_eq!(
        Decision::Delete { index: 0 }.into_edit(&m, ""),
        MemoryEdit::Delete { id: "m2".into() }
    );
    assert_eq!(
        Decision::Delete { index: 5 }.into_edit(&m, ""),
        MemoryEdit::Noop
    );
    assert_eq!(Decision::Noop.into_edit(&m, ""), MemoryEdit::Noop);
}

#[test]
fn one_lockstep_call_edits_each_store_and_records_errors() {
    let scripted = ScriptedLm::new(
        vec![
            rule(
                &["New fact: Melanie plays the violin."],
                r#"{"op": "ADD", "content": "Melanie plays the violin."}"#,
            ),
            rule(
                &["New fact: Caroline has two dogs now."],
                "Here you go:\n```json\n{\"op\": \"UPDATE\", \"id\": \"1\", \"content\": \"Caroline has two dogs.\"}\n```",
            ),
            rule(
                &["New fact: Caroline left Boston."],
                r#"{"op": "DELETE", "id": 4}"#,
            ),
        ],
        r#"{"op": "NOOP"}"#,
    );
    let lm = CountingLm::over(&scripted);
    let op = op("kind = \"update\"");
    // Each path has its own bank.
    let banks = [
        vec![],
        vec![
            mem("m1", "a"),
            mem("m4", "b"),
            mem("custom", "c"),
            mem("m2", "d"),
        ],
        related(),
        related(),
    ];
    let mut cxs: Vec<EpisodeCx<'_>> = banks
        .iter()
        .enumerate()
        .map(|(p, b)| EpisodeCx::new(&lm, store(b), "conv-26", p, 11 + p as u64))
        .collect();
    let m = related();
    let inputs = [
        OpInput {
            question: "",
            observation: "Melanie plays the violin.",
            memory: &[],
        },
        OpInput {
            question: "",
            observation: "Melanie plays the violin.",
            memory: &[],
        },
        OpInput {
            question: "",
            observation: "Caroline has two dogs now.",
            memory: &m,
        },
        OpInput {
            question: "",
            observation: "Caroline left Boston.",
            memory: &m,
        },
    ];
    let outs = op.run_batch(&mut cxs, &inputs).unwrap();
    assert_eq!(lm.batches(), vec![4], "one generate call with 4 requests");
    assert_eq!(
        outs,
        vec![
            OpOutput {
                edits: vec![MemoryEdit::Add {
                    item: mem("m1", "Melanie plays the violin.")
                }],
                ..Default::default()
            },
            OpOutput {
                edits: vec![MemoryEdit::Add {
                    item: mem("m5", "Melanie plays the violin.")
                }],
                ..Default::default()
            },
            OpOutput {
                edits: vec![MemoryEdit::Update {
                    id: "m7".into(),
                    content: "Caroline has two dogs.".into(),
                    embedding: None
                }],
                ..Default::default()
            },
            OpOutput {
                edits: vec![MemoryEdit::Noop],
                parse_error: Some(
                    "DELETE of memory 4, but the related memories are numbered 0..=1".into()
                ),
                ..Default::default()
            },
        ]
    );
    let expected_outcomes = [
        EditOutcome::Applied,
        EditOutcome::Applied,
        EditOutcome::Applied,
        EditOutcome::Unchanged,
    ];
    for (i, (c, out)) in cxs.iter_mut().zip(&outs).enumerate() {
        c.apply(op.kind(), out.edits.clone(), out.parse_error.clone())
            .unwrap();
        let Step::Lm(call) = &c.episode.steps[0] else {
            panic!("first step is not an LM call")
        };
        assert_eq!(call.role, ROLE);
        assert_eq!(call.role, "manage");
        assert_eq!(call.params.max_new_tokens, 128);
        let Prompt::Chat(msgs) = &call.prompt else {
            panic!("chat prompt expected")
        };
        let text = &msgs[0].content;
        if i < 2 {
            assert!(
                text.contains("Related memories:\n(none)\nNew fact: Melanie plays the violin.\n"),
                "{text}"
            );
        } else {
            // Local indices, never store ids.
            assert!(
                text.contains(
                    "Related memories:\n0: Caroline lives in Boston.\n1: Caroline has a dog.\nNew fact: "
                ),
                "{text}"
            );
            assert!(!text.contains("m7"), "{text}");
        }
        let Step::Edit {
            op: kind,
            edits,
            outcomes,
            parse_error,
        } = &c.episode.steps[1]
        else {
            panic!("second step is not an edit")
        };
        assert_eq!(kind, "update");
        assert_eq!(edits, &out.edits);
        assert_eq!(outcomes, &[expected_outcomes[i].clone()]);
        assert_eq!(parse_error, &out.parse_error);
    }
    assert_eq!(cxs[3].episode.parse_errors(), 1);
    assert_eq!(
        cxs[1].store().get("m5").unwrap().map(|i| i.content),
        Some("Melanie plays the violin.".to_string())
    );
    assert_eq!(
        cxs[2].store().get("m7").unwrap().map(|i| i.content),
        Some("Caroline has two dogs.".to_string())
    );
    // A second ADD on path 0 gets the next id.
    let again = op.run(&mut cxs[0], inputs[0]).unwrap();
    assert_eq!(
        again.edits,
        vec![MemoryEdit::Add {
            item: mem("m2", "Melanie plays the violin.")
        }]
    );
}

#[test]
fn own_model_and_options() {
    let episode_lm = ScriptedLm::new(Vec::new(), r#"{"op": "ADD", "content": "policy"}"#);
    let counting = CountingLm::over(&episode_lm);
    let op = op(r#"
kind = "update"
empty_memory = "NOTHING YET"
[model]
kind = "scripted"
default = '{"op": "DELETE", "id": 0}'
"#);
    let mut c = EpisodeCx::new(&counting, store(&[]), "s", 0, 1);
    let out = op
        .run(
            &mut c,
            OpInput {
                question: "",
                observation: "x",
                memory: &[],
            },
        )
        .unwrap();
    assert!(
        counting.batches().is_empty(),
        "the episode model was not asked"
    );
    assert_eq!(out.edits, vec![MemoryEdit::Noop]);
    assert_eq!(
        out.parse_error.as_deref(),
        Some("DELETE of memory 0, but there are no related memories")
    );
    let call = c.episode.lm_calls().next().unwrap();
    assert_eq!(call.role, "manage");
    let Prompt::Chat(msgs) = &call.prompt else {
        panic!("chat prompt expected")
    };
    assert!(msgs[0].content.contains("Related memories:\nNOTHING YET\n"));
}

#[test]
fn config_errors_name_keys() {
    let dir = std::env::temp_dir().join(format!("mf-update-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "Fact: {fact}").unwrap();
    let err = build_err(&format!(
        "kind = \"update\"\ntemplate = {:?}",
        bad.display().to_string()
    ));
    assert!(err.contains("{memories}"), "{err}");
    let err = build_err("kind = \"update\"\ntop_p = 0.0");
    assert!(err.contains("`agent.manage.top_p`"), "{err}");
    let err = build_err("kind = \"update\"\nempty_memory = 3");
    assert!(err.contains("`agent.manage.empty_memory`"), "{err}");
    let err = build_err("kind = \"update\"\nops = [\"ADD\"]");
    assert!(
        err.contains("`agent.manage.ops`") && err.contains("unknown key"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn think_is_stripped_before_parsing_and_kept_in_the_trajectory() {
    let reply = "<think>\nMaybe {\"op\": \"DELETE\", \"id\": 0}? No, it is new.\n</think>\n\n{\"op\": \"ADD\", \"content\": \"Melanie plays the violin.\"}";
    let lm = ScriptedLm::new(Vec::new(), reply);
    let memory = related();
    let input = OpInput {
        question: "",
        observation: "Melanie plays the violin.",
        memory: &memory,
    };
    for (src, add) in [
        ("kind = \"update\"", true),
        // Off: the draft DELETE inside the reasoning is taken.
        ("kind = \"update\"\nstrip_think = false", false),
    ] {
        let op = op(src);
        let mut c = EpisodeCx::new(&lm, store(&memory), "s", 0, 1);
        let out = op.run(&mut c, input).unwrap();
        match (&out.edits[..], add) {
            ([MemoryEdit::Add { item }], true) => {
                assert_eq!(item.content, "Melanie plays the violin.")
            }
            ([MemoryEdit::Delete { id }], false) => assert_eq!(id, "m2"),
            (e, _) => panic!("{src}: unexpected edits {e:?}"),
        }
        assert_eq!(c.episode.lm_calls().next().unwrap().output.text, reply);
    }
    let e = build_err("kind = \"update\"\nstrip_think = \"no\"");
    assert!(e.contains("agent.manage.strip_think"), "{e}");
}
