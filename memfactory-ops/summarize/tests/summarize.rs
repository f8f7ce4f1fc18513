//! The summarize op: parsing of turns, reflections and merge decisions; the exact edits of
//! ADD / MERGE / malformed decisions; lockstep batching (ragged merge rounds); candidates
//! (speaker, threshold, lexical fallback); config errors.

use std::collections::{BTreeMap, HashSet};

use memfactory_core::{
    Cfg, Embedder, EpisodeCx, LanguageModel, MemoryEdit, MemoryItem, MemoryOp, OpInput, Prompt,
    Step, StoreFactory, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_summarize::{
    MergeDecision, NewMemory, TurnLine, parse::extract_json_object, parse_merge, parse_reflection,
    parse_turn_line,
};
use memfactory_store_memory::InMemoryFactory;
use memfactory_testkit::BagOfWords;
use memfactory_testkit::CountingLm;

static BOW: BagOfWords = BagOfWords(&[
    "caroline", "dog", "pet", "max", "paint", "walks", "melanie", "art",
]);
fn bow(t: &str) -> Vec<f32> {
    BOW.embed(&[t]).unwrap().remove(0)
}

fn counting(rules: Vec<(Vec<&str>, &str)>) -> CountingLm<'static> {
    CountingLm::new(ScriptedLm::new(
        rules
            .into_iter()
            .map(|(c, r)| Rule {
                contains: c.into_iter().map(String::from).collect(),
                reply: r.into(),
            })
            .collect(),
        "{\"memories\": []}",
    ))
}

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.reflect", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn cxs<'a>(
    lm: &'a dyn LanguageModel,
    emb: Option<&'a dyn Embedder>,
    n: usize,
) -> Vec<EpisodeCx<'a>> {
    (0..n)
        .map(|p| {
            EpisodeCx::new(lm, InMemoryFactory.open("s").unwrap(), "s", p, 7 + p as u64)
                .with_embedder(emb)
        })
        .collect()
}

fn seed_item(id: &str, speaker: &str, text: &str, emb: bool) -> MemoryItem {
    let mut it = MemoryItem::new(id, text);
    it.speaker = Some(speaker.into());
    it.time = Some("1 May, 2023".into());
    if emb {
        it.embedding = Some(bow(text));
    }
    it
}

const SESSION_A: &str = "[D2:1] Caroline (2:00 pm on 9 May, 2023): We adopted a dog, his name is Max!\n\
[D2:2] Melanie (2:00 pm on 9 May, 2023): So cute.\n\
[D2:3] Caroline (2:00 pm on 9 May, 2023): I walk Max every morning.";
const SESSION_B: &str = "[D2:1] Caroline (3:00 pm on 9 May, 2023): I started to paint.";

#[test]
fn turn_lines() {
    assert_eq!(
        parse_turn_line("[D1:3] Caroline (1:56 pm on 8 May, 2023): I went (twice): yes"),
        Some(TurnLine {
            id: "D1:3".into(),
            speaker: "Caroline".into(),
            date: Some("1:56 pm on 8 May, 2023".into()),
            text: "I went (twice): yes".into(),
        })
    );
    let t = parse_turn_line("[D1:4] Mel Jones: hi (there): ok").unwrap();
    assert_eq!(
        (t.speaker.as_str(), t.date, t.text.as_str()),
        ("Mel Jones", None, "hi (there): ok")
    );
    assert_eq!(parse_turn_line("no turn here"), None);
    assert_eq!(parse_turn_line("[D1:1] nobody"), None);
}

#[test]
fn reflection_parsing() {
    let known: HashSet<String> = ["D1:1", "D1:2"].iter().map(|s| s.to_string()).collect();
    let good = r#"{"memories": [{"summary": "Caroline paints.", "turns": ["D1:1"]}]}"#;
    assert_eq!(
        parse_reflection(good, Some(&known), 8),
        (
            vec![NewMemory {
                summary: "Caroline paints.".into(),
                turns: vec!["D1:1".into()],
            }],
            None
        )
    );
    // Fences and prose around the JSON are accepted silently.
    let fenced = format!("Sure! Here it is:\n```json\n{good}\n```\nDone.");
    assert_eq!(parse_reflection(&fenced, Some(&known), 8).1, None);
    assert_eq!(parse_reflection(&fenced, Some(&known), 8).0.len(), 1);
    // Single quotes are not JSON.
    let (m, e) = parse_reflection("{'memories': []}", Some(&known), 8);
    assert!(m.is_empty() && e.unwrap().contains("not valid JSON"));
    let (m, e) = parse_reflection("nothing to say", None, 8);
    assert!(m.is_empty() && e.unwrap().contains("no JSON object"));
    let (m, e) = parse_reflection("{\"memories\": [{\"summary\": \"cut", None, 8);
    assert!(m.is_empty() && e.unwrap().contains("unterminated"));
    let (m, e) = parse_reflection("{\"facts\": []}", None, 8);
    assert!(m.is_empty() && e.unwrap().contains("memories"));
    assert_eq!(
        parse_reflection("{\"memories\": []}", None, 8),
        (vec![], None)
    );
    // Bad entries are skipped, unknown turns dropped, both noted.
    let mixed = r#"{"memories": ["just a string", {"summary": "  "},
        {"summary": "Caroline has a dog.", "turns": ["D1:2", "D9:9", 3, "D1:2"]},
        {"summary": "No turns."}]}"#;
    let (m, e) = parse_reflection(mixed, Some(&known), 8);
    assert_eq!(
        m,
        vec![
            NewMemory {
                summary: "Caroline has a dog.".into(),
                turns: vec!["D1:2".into()],
            },
            NewMemory {
                summary: "No turns.".into(),
                turns: vec![],
            },
        ]
    );
    let e = e.unwrap();
    for part in [
        "memories[0]",
        "memories[1]",
        "`D9:9`",
        "turn 3",
        "memories[3]: no `turns`",
    ] {
        assert!(e.contains(part), "{part} missing from {e}");
    }
    // max_memories truncates silently.
    let many = r#"{"memories": [{"summary": "a", "turns": []}, {"summary": "b", "turns": []}, {"summary": "c", "turns": []}]}"#;
    let (m, e) = parse_reflection(many, None, 2);
    assert_eq!((m.len(), e), (2, None));
    assert!(
        extract_json_object("{\"a\": \"}{\"}").is_ok(),
        "braces inside strings"
    );
}

#[test]
fn merge_parsing() {
    assert_eq!(
        parse_merge("{\"action\": \"ADD\"}", 2),
        Ok(MergeDecision::Add)
    );
    assert_eq!(
        parse_merge(
            "```json\n{\"action\": \"merge\", \"index\": \"1\", \"summary\": \" x \"}\n```",
            2
        ),
        Ok(MergeDecision::Merge {
            index: 1,
            summary: "x".into()
        })
    );
    assert!(
        parse_merge(
            "{\"action\": \"MERGE\", \"index\": 2, \"summary\": \"x\"}",
            2
        )
        .unwrap_err()
        .contains("out of range")
    );
    assert!(
        parse_merge(
            "{\"action\": \"MERGE\", \"index\": -1, \"summary\": \"x\"}",
            2
        )
        .is_err()
    );
    assert!(
        parse_merge("{\"action\": \"MERGE\", \"index\": 0}", 2)
            .unwrap_err()
            .contains("summary")
    );
    assert!(
        parse_merge("{\"action\": \"DELETE\"}", 2)
            .unwrap_err()
            .contains("DELETE")
    );
    assert!(parse_merge("ADD", 2).is_err());
}

/// `item` with meta `turns` and `dialogue` from `(id, line)` pairs.
fn with_turns(mut item: MemoryItem, turns: &[(&str, &str)]) -> MemoryItem {
    let ids: Vec<&str> = turns.iter().map(|t| t.0).collect();
    let lines: Vec<&str> = turns.iter().map(|t| t.1).collect();
    item.meta.insert("turns".into(), ids.join(","));
    item.meta.insert("dialogue".into(), lines.join("\n"));
    item
}

#[test]
fn two_merges_into_one_memory_keep_the_union_of_all_turns() {
    // Both new memories of one reflection merge into r1: the second merge sees the first
    // one's result, and the final item holds r1's turn and both new memories' turns, once
    // each, with their raw text.
    let lm = counting(vec![
        reflect_rule(
            "adopted a dog",
            r#"{"memories": [{"summary": "Caroline adopted a dog named Max.", "turns": ["D2:1"]},
                             {"summary": "Caroline walks Max, her pet dog.", "turns": ["D2:3", "D2:1"]}]}"#,
        ),
        (
            vec![
                "Decision (JSON):",
                "New memory: Caroline adopted a dog named Max.",
            ],
            r#"{"action": "MERGE", "index": 0, "summary": "Caroline wanted a pet and adopted Max."}"#,
        ),
        (
            vec![
                "Decision (JSON):",
                "[0] (1 May, 2023) Caroline wanted a pet and adopted Max.",
                "New memory: Caroline walks Max, her pet dog.",
            ],
            r#"{"action": "MERGE", "index": 0, "summary": "Caroline adopted Max and walks him."}"#,
        ),
    ]);
    let op = op("kind = \"summarize\"\nmerge_k = 1");
    let mut cx = cxs(&lm, Some(&BOW), 1);
    let mut seeded = with_turns(
        seed_item("r1", "Caroline", "Caroline wants a pet.", true),
        &[("D1:4", "[D1:4] Caroline (1 May, 2023): I want a pet.")],
    );
    seeded.meta.insert("topic".into(), "pets".into());
    cx[0]
        .apply("seed", vec![MemoryEdit::Add { item: seeded }], None)
        .unwrap();
    let input = OpInput {
        question: "Caroline",
        observation: SESSION_A,
        memory: &[],
    };
    let out = op.run(&mut cx[0], input).unwrap();
    assert_eq!(out.parse_error, None);
    assert_eq!(out.edits.len(), 4, "{:?}", out.edits);
    cx[0].apply("summarize", out.edits, None).unwrap();
    let bank = cx[0].memory().unwrap();
    assert_eq!(bank.len(), 1);
    let mut want = with_turns(
        seed_item(
            "r1",
            "Caroline",
            "Caroline adopted Max and walks him.",
            true,
        ),
        &[
            ("D1:4", "[D1:4] Caroline (1 May, 2023): I want a pet."),
            (
                "D2:1",
                "[D2:1] Caroline (2:00 pm on 9 May, 2023): We adopted a dog, his name is Max!",
            ),
            (
                "D2:3",
                "[D2:3] Caroline (2:00 pm on 9 May, 2023): I walk Max every morning.",
            ),
        ],
    );
    want.meta.insert("topic".into(), "pets".into());
    assert_eq!(bank[0], want);
}

fn reflect_rule<'a>(session_marker: &'a str, reply: &'a str) -> (Vec<&'a str>, &'a str) {
    (
        vec!["Memories about Caroline (JSON):", session_marker],
        reply,
    )
}

#[test]
fn new_memories_are_added_with_fresh_ids_in_one_lockstep_call() {
    let lm = counting(vec![
        reflect_rule(
            "adopted a dog",
            r#"{"memories": [{"summary": "Caroline adopted a dog named Max.", "turns": ["D2:1"]},
                             {"summary": "Caroline walks Max every morning.", "turns": ["D2:3", "D2:1"]}]}"#,
        ),
        reflect_rule(
            "started to paint",
            r#"{"memories": [{"summary": "Caroline paints.", "turns": ["D2:1"]}]}"#,
        ),
    ]);
    let op = op("kind = \"summarize\"");
    let mut cxs = cxs(&lm, Some(&BOW), 2);
    // Episode 1 already holds r7 (another speaker's): fresh ids continue after it.
    cxs[1]
        .apply(
            "seed",
            vec![MemoryEdit::Add {
                item: seed_item("r7", "Melanie", "Melanie likes art.", true),
            }],
            None,
        )
        .unwrap();
    let inputs = [
        OpInput {
            question: "Caroline",
            observation: SESSION_A,
            memory: &[],
        },
        OpInput {
            question: "Caroline",
            observation: SESSION_B,
            memory: &[],
        },
    ];
    let out = op.run_batch(&mut cxs, &inputs).unwrap();
    assert_eq!(lm.batches(), [2], "one reflect call, no merge call");
    let add = |id: &str, text: &str, turns: &str, dialogue: &str| MemoryEdit::Add {
        item: MemoryItem {
            id: id.into(),
            content: text.into(),
            speaker: Some("Caroline".into()),
            time: Some("2:00 pm on 9 May, 2023".into()),
            embedding: Some(bow(text)),
            meta: BTreeMap::from([
                ("turns".to_string(), turns.to_string()),
                ("dialogue".to_string(), dialogue.to_string()),
            ]),
        },
    };
    // Each memory carries the raw turns it refers to (speaker, date, text), in its order.
    let (d1, d3) = (
        "[D2:1] Caroline (2:00 pm on 9 May, 2023): We adopted a dog, his name is Max!",
        "[D2:3] Caroline (2:00 pm on 9 May, 2023): I walk Max every morning.",
    );
    assert_eq!(
        out[0].edits,
        [
            add("r1", "Caroline adopted a dog named Max.", "D2:1", d1),
            add(
                "r2",
                "Caroline walks Max every morning.",
                "D2:3,D2:1",
                &format!("{d3}\n{d1}")
            ),
        ]
    );
    assert_eq!(out[0].parse_error, None);
    let MemoryEdit::Add { item } = &out[1].edits[0] else {
        panic!("add expected")
    };
    assert_eq!(item.id, "r8");
    assert_eq!(item.time.as_deref(), Some("3:00 pm on 9 May, 2023"));
    let Step::Lm(call) = cxs[0].episode.steps.last().unwrap() else {
        panic!()
    };
    assert_eq!(call.role, "reflect");
}

#[test]
fn merges_are_decided_in_ragged_lockstep_rounds() {
    let lm = counting(vec![
        reflect_rule(
            "adopted a dog",
            r#"{"memories": [{"summary": "Caroline adopted a dog named Max.", "turns": ["D2:1"]},
                             {"summary": "Caroline walks Max, her pet dog.", "turns": ["D2:3"]}]}"#,
        ),
        reflect_rule(
            "started to paint",
            r#"{"memories": [{"summary": "Caroline started to paint.", "turns": ["D2:1"]}]}"#,
        ),
        // Episode 0, memory 0: merge into the pet wish.
        (
            vec![
                "Decision (JSON):",
                "New memory: Caroline adopted a dog named Max.",
            ],
            r#"{"action": "MERGE", "index": 0, "summary": "Caroline wanted a pet and adopted a dog named Max."}"#,
        ),
        // Episode 0, memory 1 sees the merged text (earlier merges of the call apply).
        (
            vec![
                "Decision (JSON):",
                "[0] (1 May, 2023) Caroline wanted a pet and adopted a dog named Max.",
            ],
            r#"{"action": "ADD"}"#,
        ),
        // Episode 1: malformed decision -> ADD + parse error.
        (
            vec!["Decision (JSON):", "New memory: Caroline started to paint."],
            "merge it please",
        ),
    ]);
    let op = op("kind = \"summarize\"\nmerge_k = 2");
    let mut cxs = cxs(&lm, Some(&BOW), 2);
    for cx in cxs.iter_mut() {
        cx.apply(
            "seed",
            vec![
                MemoryEdit::Add {
                    item: with_turns(
                        seed_item("r1", "Caroline", "Caroline wants a pet.", true),
                        &[("D1:4", "[D1:4] Caroline (1 May, 2023): I want a pet.")],
                    ),
                },
                MemoryEdit::Add {
                    item: seed_item("r2", "Melanie", "Melanie has a pet dog Max.", true),
                },
                MemoryEdit::Add {
                    item: seed_item("r3", "Caroline", "Caroline likes art and paint.", false),
                },
            ],
            None,
        )
        .unwrap();
    }
    let inputs = [
        OpInput {
            question: "Caroline",
            observation: SESSION_A,
            memory: &[],
        },
        OpInput {
            question: "Caroline",
            observation: SESSION_B,
            memory: &[],
        },
    ];
    let out = op.run_batch(&mut cxs, &inputs).unwrap();
    // reflect (2 episodes), merge round 0 (2 episodes), merge round 1 (episode 0 only).
    assert_eq!(lm.batches(), [2, 2, 1]);
    let merged = "Caroline wanted a pet and adopted a dog named Max.";
    assert_eq!(out[0].edits.len(), 3);
    // MERGE: delete + add under the same id, with the old time and the union of turns.
    let mut merged_item = with_turns(
        seed_item("r1", "Caroline", merged, true),
        &[
            ("D1:4", "[D1:4] Caroline (1 May, 2023): I want a pet."),
            (
                "D2:1",
                "[D2:1] Caroline (2:00 pm on 9 May, 2023): We adopted a dog, his name is Max!",
            ),
        ],
    );
    merged_item.embedding = Some(bow(merged));
    assert_eq!(
        out[0].edits[..2],
        [
            MemoryEdit::Delete { id: "r1".into() },
            MemoryEdit::Add {
                item: merged_item.clone()
            }
        ]
    );
    let MemoryEdit::Add { item } = &out[0].edits[2] else {
        panic!("add expected")
    };
    assert_eq!(
        (item.id.as_str(), item.content.as_str()),
        ("r4", "Caroline walks Max, her pet dog.")
    );
    assert_eq!(out[0].parse_error, None);
    let MemoryEdit::Add { item } = &out[1].edits[0] else {
        panic!("add expected")
    };
    assert_eq!(
        (item.id.as_str(), item.content.as_str()),
        ("r4", "Caroline started to paint.")
    );
    let e = out[1].parse_error.as_deref().unwrap();
    assert!(
        e.contains("merge decision") && e.contains("added it instead"),
        "{e}"
    );

    // The merge prompts show only Caroline's memories, most similar first (r3 had no
    // vector: it was embedded on the fly), at most merge_k of them.
    let merge_prompts: Vec<String> = cxs[0]
        .episode
        .lm_calls()
        .filter(|c| c.role == "merge")
        .map(|c| match &c.prompt {
            Prompt::Chat(m) => m[0].content.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(merge_prompts.len(), 2);
    assert!(merge_prompts[0].contains("Old memories:\n[0] (1 May, 2023) Caroline wants a pet.\n[1] (1 May, 2023) Caroline likes art and paint.\n\nNew memory"), "{}", merge_prompts[0]);
    assert!(!merge_prompts[0].contains("Melanie"));
    let roles: Vec<&str> = cxs[1].episode.lm_calls().map(|c| c.role.as_str()).collect();
    assert_eq!(
        roles,
        ["reflect", "merge"],
        "episode 1's call recorded on episode 1"
    );

    // Applying the edits gives the merged bank.
    let (edits, err) = (out[0].edits.clone(), out[0].parse_error.clone());
    cxs[0].apply("summarize", edits, err).unwrap();
    let bank = cxs[0].memory().unwrap();
    let ids: Vec<&str> = bank.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["r2", "r3", "r1", "r4"],
        "the merged item moved to the end"
    );
    assert_eq!(bank[2], merged_item);
}

#[test]
fn threshold_and_lexical_similarity_without_embedder() {
    let lm = counting(vec![
        reflect_rule(
            "started to paint",
            r#"{"memories": [{"summary": "Caroline started to paint.", "turns": ["D2:1"]}]}"#,
        ),
        (vec!["Decision (JSON):"], r#"{"action": "ADD"}"#),
    ]);
    let seed = |cx: &mut EpisodeCx<'_>| {
        cx.apply(
            "seed",
            vec![
                MemoryEdit::Add {
                    item: seed_item("r1", "Caroline", "Caroline has a dog.", false),
                },
                MemoryEdit::Add {
                    item: seed_item("r2", "Caroline", "Caroline loves to paint.", false),
                },
            ],
            None,
        )
        .unwrap();
    };
    let input = OpInput {
        question: "Caroline",
        observation: SESSION_B,
        memory: &[],
    };
    // Lexical: "caroline started to paint" vs r2 = 3/4 words, vs r1 = 1/4.
    let strict = op("kind = \"summarize\"\nmerge_threshold = 0.5");
    let mut cx = cxs(&lm, None, 1);
    seed(&mut cx[0]);
    let out = strict.run(&mut cx[0], input).unwrap();
    let prompt = cx[0].episode.lm_calls().last().map(|c| match &c.prompt {
        Prompt::Chat(m) => m[0].content.clone(),
        _ => panic!(),
    });
    let prompt = prompt.unwrap();
    assert!(
        prompt.contains("[0] (1 May, 2023) Caroline loves to paint.\n\nNew"),
        "{prompt}"
    );
    let MemoryEdit::Add { item } = &out.edits[0] else {
        panic!()
    };
    assert_eq!((item.id.as_str(), item.embedding.as_ref()), ("r3", None));
    // Above every similarity: no candidate, ADD without a merge call.
    let lm2 = counting(vec![reflect_rule(
        "started to paint",
        r#"{"memories": [{"summary": "Caroline started to paint.", "turns": ["D2:1"]}]}"#,
    )]);
    let never = op("kind = \"summarize\"\nmerge_threshold = 0.9");
    let mut cx = cxs(&lm2, None, 1);
    seed(&mut cx[0]);
    let out = never.run(&mut cx[0], input).unwrap();
    assert_eq!(lm2.batches(), [1]);
    assert!(matches!(&out.edits[0], MemoryEdit::Add { item } if item.id == "r3"));
    // A malformed reflection: no memories, the error recorded, no merge call.
    let lm3 = counting(vec![reflect_rule("started to paint", "{'memories': []}")]);
    let mut cx = cxs(&lm3, None, 1);
    let out = never.run(&mut cx[0], input).unwrap();
    assert!(out.edits.is_empty());
    assert!(out.parse_error.unwrap().contains("not valid JSON"));
}

#[test]
fn config_errors_name_keys() {
    let err = |src: &str| {
        registry::build::<dyn MemoryOp>(Cfg::new("agent.reflect", toml::from_str(src).unwrap()))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err("kind = \"summarize\"\nmax_memories = 0").contains("agent.reflect.max_memories"));
    assert!(err("kind = \"summarize\"\nmerge_k = -1").contains("agent.reflect.merge_k"));
    assert!(
        err("kind = \"summarize\"\nmerge_treshold = 0.1").contains("agent.reflect.merge_treshold")
    );
    assert!(err("kind = \"summarize\"\ntemperature = -1.0").contains("agent.reflect.temperature"));
    let e = err("kind = \"summarize\"\ntemplate = \"/nonexistent/reflect.txt\"");
    assert!(e.contains("agent.reflect.template"), "{e}");
    let (_, resolved) = registry::build::<dyn MemoryOp>(Cfg::new(
        "agent.reflect",
        toml::from_str("kind = \"summarize\"").unwrap(),
    ))
    .unwrap();
    assert_eq!(resolved["merge_k"].as_integer(), Some(3));
    assert_eq!(resolved["max_memories"].as_integer(), Some(8));
    assert_eq!(resolved["max_new_tokens"].as_integer(), Some(512));
}

#[test]
fn think_is_stripped_before_parsing_and_kept_in_the_trajectory() {
    let reply = "<think>\nDraft: {\"memories\": [{\"summary\": \"draft\", \"turns\": [\"D2:1\"]}]}\n</think>\n\n{\"memories\": [{\"summary\": \"Caroline paints.\", \"turns\": [\"D2:1\"]}]}";
    let lm = counting(vec![reflect_rule("started to paint", reply)]);
    for (src, want) in [
        ("kind = \"summarize\"", "Caroline paints."),
        // Off: the first valid object — the draft inside the reasoning — is taken.
        ("kind = \"summarize\"\nstrip_think = false", "draft"),
    ] {
        let op = op(src);
        let mut cxs = cxs(&lm, None, 1);
        let input = OpInput {
            question: "Caroline",
            observation: SESSION_B,
            memory: &[],
        };
        let out = op.run_batch(&mut cxs, &[input]).unwrap();
        let MemoryEdit::Add { item } = &out[0].edits[0] else {
            panic!("add expected")
        };
        assert_eq!(item.content, want, "{src}");
        let Step::Lm(call) = cxs[0].episode.steps.last().unwrap() else {
            panic!()
        };
        assert_eq!(call.output.text, reply);
    }
}
