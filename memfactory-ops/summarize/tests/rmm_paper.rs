//! RMM's App. D.1 prompts (`template = "rmm-paper"`, `merge_template = "rmm-paper"`): turn
//! grouping, the session layout, the extraction and update parsers, and the op end to end
//! with a scripted LM (a rule matches only when the prompt has the expected text; the
//! LM's default reply is the project's JSON format, which the paper's parser rejects).

use memfactory_core::{
    Cfg, Embedder, EpisodeCx, LanguageModel, MemoryEdit, MemoryItem, MemoryOp, OpInput,
    StoreFactory, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_summarize::paper::{
    EXTRACT_SPEAKER1_TEMPLATE, EXTRACT_SPEAKER2_TEMPLATE, UPDATE_TEMPLATE, group_turns,
    parse_extraction, parse_update, render_history, render_new, render_session, salvage_array,
    speaker_roles,
};
use memfactory_op_summarize::{MergeDecision, NewMemory, TurnLine, parse_turn_line};
use memfactory_store_memory::InMemoryFactory;
use memfactory_testkit::BagOfWords;

fn lines(src: &str) -> Vec<TurnLine> {
    src.lines().filter_map(parse_turn_line).collect()
}

const SESSION: &str = "[D2:1] Caroline (2:00 pm on 9 May, 2023): We adopted a dog, his name is Max!\n\
[D2:2] Melanie (2:00 pm on 9 May, 2023): So cute.\n\
[D2:3] Caroline (2:00 pm on 9 May, 2023): I walk Max every morning.\n\
[D2:4] Melanie (2:00 pm on 9 May, 2023): I paint\nin the mornings.\n\
[D2:5] Melanie (2:00 pm on 9 May, 2023): Mostly lakes.";

#[test]
fn utterances_group_into_turns_and_render_as_the_paper_lists_them() {
    let l = lines(SESSION);
    // The line "in the mornings." is not a turn line: D2:4's text is "I paint".
    assert_eq!(l.len(), 5);
    let turns = group_turns(&l);
    // C M | C M | M: a speaker already in the turn starts the next one.
    assert_eq!(turns, vec![vec![0, 1], vec![2, 3], vec![4]]);
    assert_eq!(
        render_session(&l, &turns),
        "- Turn 0:\n  - Caroline: We adopted a dog, his name is Max!\n  - Melanie: So cute.\n\
         - Turn 1:\n  - Caroline: I walk Max every morning.\n  - Melanie: I paint\n\
         - Turn 2:\n  - Melanie: Mostly lakes."
    );
    let aab = lines("[a] A: 1\n[b] A: 2\n[c] B: 3\n[d] A: 4");
    assert_eq!(group_turns(&aab), vec![vec![0], vec![1, 2], vec![3]]);
    assert_eq!(speaker_roles(&l, "Caroline"), (true, "Melanie".to_string()));
    assert_eq!(
        speaker_roles(&l, "Melanie"),
        (false, "Caroline".to_string())
    );
    assert_eq!(
        speaker_roles(&lines("[a] A: 1"), "A"),
        (true, "the other speaker".to_string())
    );
}

fn turns() -> Vec<Vec<String>> {
    vec![
        vec!["D2:1".into(), "D2:2".into()],
        vec!["D2:3".into(), "D2:4".into()],
        vec!["D2:5".into()],
    ]
}

fn mem(summary: &str, turns: &[&str]) -> NewMemory {
    NewMemory {
        summary: summary.into(),
        turns: turns.iter().map(|t| t.to_string()).collect(),
    }
}

#[test]
fn extraction_output_maps_turn_indices_to_utterance_ids() {
    let t = turns();
    // The paper's example format, in a code fence.
    let good = "```json\n{ \"extracted_memories\": [ { \"summary\": \"Caroline adopted Max.\", \"reference\": [0, 1] }, \
                { \"summary\": \"Caroline walks Max.\", \"reference\": [1] } ] }\n```";
    assert_eq!(
        parse_extraction(good, &t, 8),
        (
            vec![
                mem("Caroline adopted Max.", &["D2:1", "D2:2", "D2:3", "D2:4"]),
                mem("Caroline walks Max.", &["D2:3", "D2:4"]),
            ],
            None
        )
    );
    // "[turn_id]" as strings, a nested [2], a bare number, duplicates once.
    let forms = r#"{"extracted_memories": [{"summary": "s", "reference": ["[2]", [0], "1", 2]}]}"#;
    assert_eq!(
        parse_extraction(forms, &t, 8),
        (
            vec![mem("s", &["D2:5", "D2:1", "D2:2", "D2:3", "D2:4"])],
            None
        )
    );
    let single = r#"{"extracted_memories": [{"summary": "s", "reference": 2}]}"#;
    assert_eq!(parse_extraction(single, &t, 8).0, vec![mem("s", &["D2:5"])]);
    // NO_TRAIT: nothing, and nothing wrong.
    assert_eq!(parse_extraction("NO_TRAIT", &t, 8), (vec![], None));
    assert_eq!(parse_extraction("Output: NO_TRAIT.", &t, 8), (vec![], None));
    // Out of range, not an index, no reference, no summary: noted, the rest kept.
    let mixed = r#"{"extracted_memories": [
        {"summary": "a", "reference": [3, 1, "x"]},
        {"summary": "b"},
        {"reference": [0]},
        {"summary": "c", "reference": [0]}]}"#;
    let (m, e) = parse_extraction(mixed, &t, 8);
    assert_eq!(
        m,
        vec![
            mem("a", &["D2:3", "D2:4"]),
            mem("b", &[]),
            mem("c", &["D2:1", "D2:2"])
        ]
    );
    let e = e.unwrap();
    for part in [
        "extracted_memories[0]: turn 3 is not in the session (0..3)",
        "extracted_memories[0]: reference \"x\" is not a turn index",
        "extracted_memories[1]: no `reference`",
        "extracted_memories[2]: not an object with a non-empty string `summary`",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
    assert_eq!(parse_extraction(mixed, &t, 1).0.len(), 1, "max kept");
    // Malformed: no memories, an error (our own JSON format is not the paper's).
    let (m, e) = parse_extraction(r#"{"memories": []}"#, &t, 8);
    assert!(m.is_empty() && e.unwrap().contains("extracted_memories"));
    let (m, e) = parse_extraction("I cannot help.", &t, 8);
    assert!(m.is_empty() && e.is_some());
    let (m, e) = parse_extraction("{\"extracted_memories\": [{\"summary\": \"cut", &t, 8);
    assert!(m.is_empty() && e.is_some());
}

#[test]
fn extraction_cut_off_by_the_token_cap_keeps_its_complete_entries() {
    let t = turns();
    // A small model repeating entries until max_new_tokens: the complete entries before the
    // cut are kept once each, and the cut and the repeats are reported.
    let cut = "```json\n{ \"extracted_memories\": [ { \"summary\": \"a\", \"reference\": [0] }, \
               { \"summary\": \"b\", \"reference\": [2] }, { \"summary\": \"a\", \"reference\": [0] }, \
               { \"summary\": \"b\", \"refer";
    let (m, e) = parse_extraction(cut, &t, 8);
    assert_eq!(m, vec![mem("a", &["D2:1", "D2:2"]), mem("b", &["D2:5"])]);
    let e = e.expect("a cut output is still a format error");
    assert!(
        e.contains("cut off") && e.contains("kept its 3 complete entries"),
        "{e}"
    );
    assert!(e.contains("extracted_memories[2]: repeats memory 0"), "{e}");
    // A repeat in a complete output is skipped too.
    let rep = r#"{"extracted_memories": [{"summary": "a", "reference": [0]}, {"summary": "a", "reference": [1]}]}"#;
    assert_eq!(
        parse_extraction(rep, &t, 8).0,
        vec![mem("a", &["D2:1", "D2:2"])]
    );
    // The salvage reads values one at a time and stops at the array's end or the cut.
    assert_eq!(
        salvage_array(r#"x "k" : [1, {"a": [2, 3]}, "s" ] tail"#, "k"),
        Some(vec![1.into(), serde_json::json!({"a": [2, 3]}), "s".into()])
    );
    assert_eq!(
        salvage_array(r#""k": [1, 2, {"#, "k"),
        Some(vec![1.into(), 2.into()])
    );
    assert_eq!(salvage_array(r#""k": {"#, "k"), None);
    assert_eq!(salvage_array("no key", "k"), None);
}

#[test]
fn update_output_is_add_or_merge_with_commas_in_the_summary() {
    assert_eq!(parse_update("Add()", 2), Ok((MergeDecision::Add, None)));
    assert_eq!(
        parse_update("OUTPUT ACTION:\n```\nadd( )\n```", 2),
        Ok((MergeDecision::Add, None))
    );
    // The paper's example: the merged summary has a comma.
    assert_eq!(
        parse_update(
            "Merge(0, SPEAKER_1 exercises every Monday and Thursday, although he doesn't particularly enjoy it.)",
            1
        ),
        Ok((
            MergeDecision::Merge {
                index: 0,
                summary: "SPEAKER_1 exercises every Monday and Thursday, although he doesn't particularly enjoy it."
                    .into()
            },
            None
        ))
    );
    assert_eq!(
        parse_update("Merge(\"1\", \"Mel paints (lakes).\")", 2),
        Ok((
            MergeDecision::Merge {
                index: 1,
                summary: "Mel paints (lakes).".into()
            },
            None
        ))
    );
    // Several actions: the first is applied, the others reported.
    let (d, note) = parse_update("Merge(1, x)\nAdd()\nMerge(0, y)", 2).unwrap();
    assert_eq!(
        d,
        MergeDecision::Merge {
            index: 1,
            summary: "x".into()
        }
    );
    assert!(note.unwrap().starts_with("2 further action(s)"));
    for (bad, what) in [
        ("Merge(2, x)", "out of range 0..2"),
        ("Merge(0)", "no `, merged_summary`"),
        ("Merge(0, x", "not closed"),
        ("Merge(a, x)", "not a non-negative integer"),
        ("Merge(0, \"\")", "without a merged summary"),
        ("Add(it)", "is not Add()"),
        ("{\"action\": \"ADD\"}", "no Add() or Merge"),
        ("", "no Add() or Merge"),
    ] {
        let e = parse_update(bad, 2).unwrap_err();
        assert!(e.contains(what), "{bad}: {e}");
    }
    assert_eq!(
        render_history(&["a \"b\"", "c"]),
        r#"{"history_summaries":["a \"b\"","c"]}"#
    );
    assert_eq!(render_new("n"), r#"{"new_summary":"n"}"#);
}

#[test]
fn templates_are_the_papers_with_named_slots() {
    for t in [EXTRACT_SPEAKER1_TEMPLATE, EXTRACT_SPEAKER2_TEMPLATE] {
        for s in [
            "Function: Memory extraction for {speaker}",
            "extract the personal summaries of {speaker}, with references to the corresponding turn IDs.",
            "The top-level key is \"extracted_memories\".",
            "If no personal summary can be extracted, return NO_TRAIT.",
            "Task: Follow the JSON format demonstrated in the example above and extract the personal summaries for {speaker} from the following dialogue session.",
            "Input:\n{session}\n\nOutput:",
        ] {
            assert!(t.contains(s), "{s}");
        }
        assert!(!t.contains("{}"), "every slot is named");
    }
    assert!(EXTRACT_SPEAKER1_TEMPLATE.contains("between {speaker} and {other}"));
    assert!(EXTRACT_SPEAKER2_TEMPLATE.contains("between {other} and {speaker}"));
    assert!(
        EXTRACT_SPEAKER2_TEMPLATE
            .contains("I'm just trying to figure out what I would do more-go to the gym")
    );
    for s in [
        "Format: Merge(index, merged_summary)",
        "- History Personal Summaries: {memories}\n- New Personal Summary: {new}\n\nOUTPUT ACTION:",
    ] {
        assert!(UPDATE_TEMPLATE.contains(s), "{s}");
    }
}

static BOW: BagOfWords = BagOfWords(&["caroline", "dog", "pet", "max", "melanie"]);

fn scripted(rules: Vec<(Vec<&str>, &str)>) -> ScriptedLm {
    ScriptedLm::new(
        rules
            .into_iter()
            .map(|(c, r)| Rule {
                contains: c.into_iter().map(String::from).collect(),
                reply: r.into(),
            })
            .collect(),
        // The project's own format: the paper's parsers reject it.
        "{\"memories\": [], \"action\": \"ADD\"}",
    )
}

fn op(src: &str) -> Box<dyn MemoryOp> {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.reflect", toml::from_str(src).unwrap()))
        .unwrap()
        .0
}

fn cx<'a>(lm: &'a dyn LanguageModel) -> EpisodeCx<'a> {
    EpisodeCx::new(lm, InMemoryFactory.open("s").unwrap(), "s", 0, 7).with_embedder(Some(&BOW))
}

fn run(op: &dyn MemoryOp, cx: &mut EpisodeCx<'_>, speaker: &str) -> memfactory_core::OpOutput {
    let out = op
        .run(
            cx,
            OpInput {
                question: speaker,
                observation: SESSION,
                memory: &[],
            },
        )
        .unwrap();
    cx.apply("summarize", out.edits.clone(), out.parse_error.clone())
        .unwrap();
    out
}

#[test]
fn the_op_asks_with_the_papers_prompts_and_maps_references() {
    let lm = scripted(vec![
        // Caroline opens the session: the SPEAKER_1 prompt, with her name and Melanie's.
        (
            vec![
                "Function: Memory extraction for Caroline",
                "between Caroline and Melanie, extract the personal summaries of Caroline",
                "Did you check out that new gym in town?",
                "Input:\n- Turn 0:\n  - Caroline: We adopted a dog, his name is Max!\n  - Melanie: So cute.\n- Turn 1:",
            ],
            r#"{"extracted_memories": [{"summary": "Caroline adopted a dog named Max.", "reference": [0, 1]}]}"#,
        ),
        // Melanie: the SPEAKER_2 prompt (its own example).
        (
            vec![
                "Function: Memory extraction for Melanie",
                "between Caroline and Melanie, extract the personal summaries of Melanie",
                "Did you manage to go out on a run today?",
            ],
            "NO_TRAIT",
        ),
        // The update prompt with the candidates and the new memory as JSON.
        (
            vec![
                "History Personal Summaries: {\"history_summaries\":[\"Caroline wants a pet.\"]}",
                "New Personal Summary: {\"new_summary\":\"Caroline adopted a dog named Max.\"}",
                "OUTPUT ACTION:",
            ],
            "Merge(0, Caroline wanted a pet, and adopted a dog named Max.)",
        ),
    ]);
    let op = op(
        "kind = \"summarize\"\ntemplate = \"rmm-paper\"\nmerge_template = \"rmm-paper\"\nmerge_k = 1",
    );
    let mut cx = cx(&lm);
    let mut seeded = MemoryItem::new("r1", "Caroline wants a pet.");
    seeded.speaker = Some("Caroline".into());
    seeded.embedding = Some(BOW.embed(&["Caroline wants a pet."]).unwrap().remove(0));
    seeded.meta.insert("turns".into(), "D1:4".into());
    seeded.meta.insert(
        "dialogue".into(),
        "[D1:4] Caroline (1 May, 2023): I want a pet.".into(),
    );
    cx.apply("seed", vec![MemoryEdit::Add { item: seeded }], None)
        .unwrap();

    let out = run(op.as_ref(), &mut cx, "Caroline");
    assert_eq!(out.parse_error, None);
    let bank = cx.memory().unwrap();
    assert_eq!(bank.len(), 1);
    let r1 = &bank[0];
    assert_eq!(r1.id, "r1");
    assert_eq!(
        r1.content,
        "Caroline wanted a pet, and adopted a dog named Max."
    );
    // Reference [0, 1] = utterances D2:1, D2:2, D2:3, D2:4, after the old D1:4.
    assert_eq!(r1.meta["turns"], "D1:4,D2:1,D2:2,D2:3,D2:4");
    assert_eq!(
        r1.meta["dialogue"].lines().nth(2).unwrap(),
        "[D2:2] Melanie (2:00 pm on 9 May, 2023): So cute."
    );

    let out = run(op.as_ref(), &mut cx, "Melanie");
    assert_eq!(out.parse_error, None, "NO_TRAIT is not an error");
    assert!(out.edits.is_empty());
}

#[test]
fn malformed_paper_outputs_are_recorded_and_fall_back_as_before() {
    let lm = scripted(vec![
        (
            vec!["Function: Memory extraction for Caroline"],
            r#"{"extracted_memories": [{"summary": "Caroline adopted a dog named Max.", "reference": [2, 9]}]}"#,
        ),
        (vec!["OUTPUT ACTION:"], "I would merge these."),
    ]);
    let op = op(
        "kind = \"summarize\"\ntemplate = \"rmm-paper\"\nmerge_template = \"rmm-paper\"\nmerge_k = 1",
    );
    let mut cx = cx(&lm);
    let mut seeded = MemoryItem::new("r1", "Caroline wants a pet.");
    seeded.speaker = Some("Caroline".into());
    cx.apply("seed", vec![MemoryEdit::Add { item: seeded }], None)
        .unwrap();
    let out = run(op.as_ref(), &mut cx, "Caroline");
    let e = out.parse_error.unwrap();
    assert!(e.contains("turn 9 is not in the session (0..3)"), "{e}");
    assert!(
        e.contains("merge decision for new memory 0: no Add() or Merge")
            && e.contains("added it instead"),
        "{e}"
    );
    let bank = cx.memory().unwrap();
    assert_eq!(bank.len(), 2, "the malformed decision falls back to ADD");
    assert_eq!(bank[1].id, "r2");
    assert_eq!(bank[1].meta["turns"], "D2:5");

    // The default extraction reply (our JSON) is malformed for the paper's parser.
    let lm = scripted(vec![]);
    let mut cx2 = self::cx(&lm);
    let out = run(op.as_ref(), &mut cx2, "Melanie");
    assert!(out.parse_error.unwrap().contains("extracted_memories"));
    assert!(out.edits.is_empty());
}

#[test]
fn rmm_paper_is_a_recipe_value_and_other_values_stay_template_files() {
    let mut cfg = Cfg::new(
        "agent.reflect",
        toml::from_str(
            "kind = \"summarize\"\ntemplate = \"rmm-paper\"\nmerge_template = \"rmm-paper\"",
        )
        .unwrap(),
    );
    let (_, resolved) = registry::build::<dyn MemoryOp>(cfg.clone()).unwrap();
    assert_eq!(resolved["template"].as_str(), Some("rmm-paper"));
    assert_eq!(resolved["merge_template"].as_str(), Some("rmm-paper"));
    cfg = Cfg::new(
        "agent.reflect",
        toml::from_str("kind = \"summarize\"\ntemplate = \"./rmm-paper\"").unwrap(),
    );
    let e = registry::build::<dyn MemoryOp>(cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("agent.reflect.template") && e.contains("./rmm-paper"),
        "{e}"
    );
}
