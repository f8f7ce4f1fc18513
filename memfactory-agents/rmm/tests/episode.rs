//! RMM episodes with the scripted LM, a bag-of-words embedder and the real summarize and
//! rerank ops: the exact bank after two sessions (ADD then MERGE), lockstep batches,
//! citations and online learning, the bank cache, and config errors.

use std::collections::BTreeMap;

use memfactory_agent_rmm::{Rmm, parse_answer, render_session};
use memfactory_core::{
    Cfg, Dialogue, Embedder, Episode, EpisodeCx, LanguageModel, MemoryItem, Paradigm, Prompt,
    Result, Sample, Session, Step, StoreFactory, Turn, registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_summarize as _;
use memfactory_reward_recall_at_k as _;
use memfactory_store_memory::InMemoryFactory;
use memfactory_testkit::BagOfWords;
use memfactory_testkit::CountingLm;

static BOW: BagOfWords = BagOfWords(&[
    "caroline", "pet", "dog", "max", "melanie", "paints", "sunsets", "adopt", "wants",
]);
fn bow(t: &str) -> Vec<f32> {
    BOW.embed(&[t]).unwrap().remove(0)
}

const MERGED: &str = "Caroline wanted a pet and adopted a dog named Max.";

fn lm(answer: &str) -> CountingLm<'static> {
    let rule = |contains: &[&str], reply: &str| Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    };
    CountingLm::new(ScriptedLm::new(
        vec![
            rule(
                &["Memories about Caroline (JSON):", "I want a pet"],
                r#"{"memories": [{"summary": "Caroline wants a pet.", "turns": ["D1:1"]}]}"#,
            ),
            rule(
                &["Memories about Melanie (JSON):", "I paint sunsets"],
                r#"{"memories": [{"summary": "Melanie paints sunsets.", "turns": ["D1:2"]}]}"#,
            ),
            rule(
                &["Memories about Caroline (JSON):", "adopted a dog"],
                r#"```json
{"memories": [{"summary": "Caroline adopted a dog named Max.", "turns": ["D2:1"]}]}
```"#,
            ),
            rule(&["Memories about Melanie (JSON):"], r#"{"memories": []}"#),
            rule(
                &[
                    "Decision (JSON):",
                    "New memory: Caroline adopted a dog named Max.",
                ],
                &format!(r#"{{"action": "MERGE", "index": 0, "summary": "{MERGED}"}}"#),
            ),
            rule(&["Ranking:"], "[1] > [0]"),
            rule(&["Question: What pet did Caroline adopt?"], answer),
            rule(&["Question: What does Melanie paint?"], "Sunsets [1]"),
        ],
        "",
    ))
}

fn turn(id: &str, speaker: &str, text: &str) -> Turn {
    Turn {
        id: id.into(),
        speaker: speaker.into(),
        text: text.into(),
    }
}

fn dialogue() -> Dialogue {
    Dialogue {
        speakers: vec!["Caroline".into(), "Melanie".into()],
        sessions: vec![
            Session {
                index: 1,
                date: Some("8 May, 2023".into()),
                turns: vec![
                    turn("D1:1", "Caroline", "I want a pet."),
                    turn("D1:2", "Melanie", "I paint sunsets."),
                ],
            },
            Session {
                index: 2,
                date: Some("9 May, 2023".into()),
                turns: vec![
                    turn("D2:1", "Caroline", "We adopted a dog named Max!"),
                    turn("D2:2", "Melanie", "Nice."),
                ],
            },
        ],
    }
}

fn sample(id: &str, question: &str) -> Sample {
    let mut s = Sample::text(id, question, "", vec!["a dog".into()]);
    s.dialogue = Some(dialogue());
    s
}

fn rmm(src: &str) -> Rmm {
    let mut cfg = Cfg::new("agent", toml::from_str(src).unwrap());
    assert_eq!(cfg.req::<String>("kind").unwrap(), "rmm");
    let r = Rmm::from_cfg(&mut cfg).unwrap();
    cfg.finish().unwrap();
    r
}

fn run_with(
    agent: &dyn Paradigm,
    lm: &dyn LanguageModel,
    emb: Option<&dyn Embedder>,
    s: &Sample,
    paths: usize,
) -> Result<(Vec<Episode>, Vec<Vec<MemoryItem>>)> {
    let mut cxs: Vec<EpisodeCx<'_>> = (0..paths)
        .map(|p| {
            EpisodeCx::new(
                lm,
                InMemoryFactory.open(&s.id).unwrap(),
                &s.id,
                p,
                memfactory_core::seed::derive_n(memfactory_core::seed::derive(1, &s.id), p as u64),
            )
            .with_embedder(emb)
        })
        .collect();
    agent.run_group(s, &mut cxs)?;
    let banks = cxs.iter().map(|cx| cx.memory().unwrap()).collect();
    Ok((
        cxs.into_iter().map(EpisodeCx::into_episode).collect(),
        banks,
    ))
}

fn run(
    agent: &dyn Paradigm,
    lm: &dyn LanguageModel,
    s: &Sample,
    paths: usize,
) -> (Vec<Episode>, Vec<Vec<MemoryItem>>) {
    run_with(agent, lm, Some(&BOW), s, paths).unwrap()
}

fn notes<'a>(ep: &'a Episode, label: &str) -> Vec<&'a str> {
    ep.steps
        .iter()
        .filter_map(|s| match s {
            Step::Note { label: l, text } if l == label => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

const LEARNED_DET: &str =
    "kind = \"rmm\"\n[rerank]\ninit = \"zero\"\nsample = false\ntop_m = 2\nlr = 0.05";

#[test]
fn bank_after_two_sessions_is_exact() {
    let lm = lm("A dog named Max [0].");
    let agent = rmm(LEARNED_DET);
    let (eps, banks) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    let item = |id: &str, speaker: &str, text: &str, turns: &str, dialogue: &str| MemoryItem {
        id: id.into(),
        content: text.into(),
        speaker: Some(speaker.into()),
        time: Some("8 May, 2023".into()),
        embedding: Some(bow(text)),
        meta: BTreeMap::from([
            ("turns".to_string(), turns.to_string()),
            ("dialogue".to_string(), dialogue.to_string()),
        ]),
    };
    // Every memory keeps the raw turns it summarises; the merged one (deleted and re-added
    // under its id, so now last) keeps the union of session 1's and session 2's turns and
    // its first time.
    assert_eq!(
        banks[0],
        [
            item(
                "r2",
                "Melanie",
                "Melanie paints sunsets.",
                "D1:2",
                "[D1:2] Melanie (8 May, 2023): I paint sunsets."
            ),
            item(
                "r1",
                "Caroline",
                MERGED,
                "D1:1,D2:1",
                "[D1:1] Caroline (8 May, 2023): I want a pet.\n\
                 [D2:1] Caroline (9 May, 2023): We adopted a dog named Max!"
            ),
        ]
    );
    // The order of operations: reflect per speaker per session, the merge, the answer.
    let roles: Vec<&str> = eps[0].lm_calls().map(|c| c.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "reflect", "reflect", "reflect", "merge", "reflect", "answer"
        ]
    );
    let edits: Vec<&str> = eps[0]
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Edit { op, .. } => Some(op.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(edits, ["summarize"; 4]);
    assert_eq!(eps[0].parse_errors(), 0);
    let Prompt::Chat(m) = &eps[0].lm_calls().next().unwrap().prompt else {
        panic!()
    };
    assert!(
        m[0].content
            .contains(&render_session(&dialogue().sessions[0]))
    );
    assert!(
        m[0].content
            .contains("[D1:1] Caroline (8 May, 2023): I want a pet.")
    );
}

#[test]
fn citations_are_parsed_and_train_the_reranker() {
    let lm = lm("A dog named Max [0].");
    let agent = rmm(LEARNED_DET);
    let (eps, _) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    let ep = &eps[0];
    assert_eq!(ep.answer.as_deref(), Some("A dog named Max."));
    assert_eq!(notes(ep, "candidates"), ["r1,r2"]);
    assert_eq!(notes(ep, "selected"), ["r1,r2"]);
    assert_eq!(notes(ep, "cited"), ["0"]);
    let answer_prompt = match &ep.lm_calls().last().unwrap().prompt {
        Prompt::Chat(m) => m[0].content.clone(),
        _ => panic!(),
    };
    // Each kept memory: its summary line, then the raw turns it was extracted from.
    assert!(
        answer_prompt.contains(&format!(
            "Memories:\n[0] (Caroline, 8 May, 2023) {MERGED}\n    \
         [D1:1] Caroline (8 May, 2023): I want a pet.\n    \
         [D2:1] Caroline (9 May, 2023): We adopted a dog named Max!\n\
         [1] (Melanie, 8 May, 2023) Melanie paints sunsets.\n    \
         [D1:2] Melanie (8 May, 2023): I paint sunsets.\n\
         Question: What pet did Caroline adopt?\nAnswer:"
        )),
        "{answer_prompt}"
    );
    assert!(
        answer_prompt.starts_with(
            memfactory_agent_rmm::DEFAULT_ANSWER_TEMPLATE
                .split("{memories}")
                .next()
                .unwrap()
        )
    );
    // The memories and their turn ids are recorded for recall-at-k.
    assert_eq!(
        notes(ep, "retrieved"),
        [r#"[{"id":"r1","turns":["D1:1","D2:1"]},{"id":"r2","turns":["D1:2"]}]"#]
    );
    assert_eq!(notes(ep, "reranked"), notes(ep, "retrieved"));
    // One update; the cited memory's score rose, the uncited one's fell.
    assert_eq!(agent.rerank.updates(), 1);
    let w = agent.rerank.weights().unwrap();
    let q = bow("What pet did Caroline adopt?");
    let cands = [bow(MERGED), bow("Melanie paints sunsets.")];
    let zero = memfactory_op_rerank::Adapters::zeros(BOW.dim());
    let before = zero.scores(&q, &cands);
    let after = w.scores(&q, &cands);
    assert!(after[0] > before[0], "{before:?} -> {after:?}");
    assert!(after[1] < before[1], "{before:?} -> {after:?}");

    // An out-of-range citation: recorded as a parse error, no feedback.
    let lm2 = lm_with_answer("A dog [5]");
    let agent2 = rmm(LEARNED_DET);
    let (eps, _) = run(
        &agent2,
        &lm2,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    assert_eq!(eps[0].answer.as_deref(), Some("A dog"));
    assert_eq!(eps[0].parse_errors(), 1);
    assert!(
        matches!(eps[0].steps.iter().rev().find(|s| matches!(s, Step::Edit { .. })),
        Some(Step::Edit { op, parse_error: Some(e), .. }) if op == "answer" && e.contains('5'))
    );
    assert_eq!(agent2.rerank.updates(), 0);
    assert!(
        agent2.rerank.weights().is_some(),
        "initialised by the rerank, not trained"
    );

    // online = false: no update.
    let agent3 = rmm(&LEARNED_DET.replace("kind = \"rmm\"", "kind = \"rmm\"\nonline = false"));
    run(
        &agent3,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    assert_eq!(agent3.rerank.updates(), 0);
}

fn answer_prompt_of(ep: &Episode) -> String {
    match &ep.lm_calls().last().unwrap().prompt {
        Prompt::Chat(m) => m[0].content.clone(),
        _ => panic!(),
    }
}

#[test]
fn summary_view_shows_summaries_only_and_turns_are_bounded() {
    let lm = lm("A dog named Max [0].");
    // memory_view = "summary": the prompt of before raw turns were kept, word for word.
    let agent = rmm(&LEARNED_DET.replace(
        "kind = \"rmm\"",
        "kind = \"rmm\"\n[answer]\nmemory_view = \"summary\"",
    ));
    assert_eq!(agent.memory_view, memfactory_agent_rmm::MemoryView::Summary);
    let (eps, _) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    let p = answer_prompt_of(&eps[0]);
    assert_eq!(
        p,
        memfactory_agent_rmm::DEFAULT_SUMMARY_ANSWER_TEMPLATE
            .replace(
                "{memories}",
                &format!("[0] (Caroline, 8 May, 2023) {MERGED}\n[1] (Melanie, 8 May, 2023) Melanie paints sunsets.")
            )
            .replace("{question}", "What pet did Caroline adopt?")
    );
    assert!(!p.contains("[D1:1]"));

    // max_turn_chars = 50: the first turn line (44 characters) fits, the second is cut to
    // the 6 left; Melanie's single line (46) fits whole.
    let agent = rmm(&LEARNED_DET.replace(
        "kind = \"rmm\"",
        "kind = \"rmm\"\n[answer]\nmax_turn_chars = 50",
    ));
    let (eps, _) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    let p = answer_prompt_of(&eps[0]);
    assert!(
        p.contains(&format!(
            "[0] (Caroline, 8 May, 2023) {MERGED}\n    \
             [D1:1] Caroline (8 May, 2023): I want a pet.\n    [D2:1]…\n[1]"
        )),
        "{p}"
    );
}

#[test]
fn recall_at_k_scores_the_recorded_memories_against_evidence() {
    // The bank: r1 (Caroline, turns D1:1 + D2:1 after the merge), r2 (Melanie, D1:2); the
    // question's retrieval ranks r1 first.
    let lm = lm("A dog named Max [0].");
    let agent = rmm(LEARNED_DET);
    let mut s = sample("q1", "What pet did Caroline adopt?");
    s.meta
        .insert("evidence".into(), serde_json::json!(["D2:1", "D1:2"]));
    let (eps, _) = run(&agent, &lm, &s, 1);
    let score_of = |s: &Sample, src: &str| {
        let (m, _) = registry::build::<dyn memfactory_core::Reward>(Cfg::new(
            "eval.metrics[0]",
            toml::from_str(src).unwrap(),
        ))
        .unwrap();
        m.score(s, &eps[0]).unwrap()
    };
    let score = |src: &str| score_of(&s, src);
    // Top-1 (r1) covers D2:1 (merged into it from session 2) of {D2:1, D1:2}: 1/2; top-2
    // adds r2's D1:2: 1.
    assert_eq!(
        score("kind = \"recall-at-k\"\nk = 1\nlist = \"retrieved\""),
        Some(0.5)
    );
    assert_eq!(
        score("kind = \"recall-at-k\"\nk = 2\nlist = \"retrieved\""),
        Some(1.0)
    );
    assert_eq!(score("kind = \"recall-at-k\"\nk = 1"), Some(0.5));
    assert_eq!(
        score("kind = \"recall-at-k\"\nk = 1\naggregate = \"all\""),
        Some(0.0)
    );
    // r1 keeps the turn it had before the merge too (the union of turns counts).
    let mut s1 = s.clone();
    s1.meta
        .insert("evidence".into(), serde_json::json!(["D1:1"]));
    assert_eq!(score_of(&s1, "kind = \"recall-at-k\"\nk = 1"), Some(1.0));
    assert_eq!(
        memfactory_reward_recall_at_k::RETRIEVED_NOTE,
        memfactory_agent_rmm::RETRIEVED_NOTE
    );
    assert_eq!(
        memfactory_reward_recall_at_k::RERANKED_NOTE,
        memfactory_agent_rmm::RERANKED_NOTE
    );
    assert_eq!(
        memfactory_op_summarize::DIALOGUE_META,
        memfactory_op_rerank::DIALOGUE_META
    );
}

fn lm_with_answer(a: &str) -> CountingLm<'static> {
    lm(a)
}

#[test]
fn answer_parsing() {
    let p = parse_answer("Answer: Paris [0][2].", 3);
    assert_eq!(
        (p.answer.as_str(), p.cited.as_slice(), p.error),
        ("Paris.", &[0, 2][..], None)
    );
    let p = parse_answer("He went to [the park] [1, 0] and [a]", 2);
    assert_eq!(p.answer, "He went to [the park] and [a]");
    assert_eq!(p.cited, [1, 0]);
    let p = parse_answer("no idea", 2);
    assert_eq!((p.cited.len(), p.error), (0, None));
    let p = parse_answer("[0]", 2);
    assert_eq!(p.error.as_deref(), Some("empty answer"));
    let p = parse_answer("x [3] [1]", 2);
    assert_eq!(p.cited, [1]);
    assert!(p.error.unwrap().contains("out of range 0..2 ignored: 3"));
}

#[test]
fn paths_run_in_lockstep() {
    let lm = lm("A dog named Max [0].");
    let agent = rmm(&LEARNED_DET.replace("kind = \"rmm\"", "kind = \"rmm\"\npaths = 3"));
    assert_eq!(agent.paths(), 3);
    let (eps, banks) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        3,
    );
    // reflect x2, reflect + merge + reflect, answer: every call batches the 3 paths.
    assert_eq!(lm.batches(), [3, 3, 3, 3, 3, 3]);
    assert_eq!(banks[0], banks[2]);
    let seeds: Vec<u64> = eps
        .iter()
        .map(|e| e.lm_calls().last().unwrap().params.seed)
        .collect();
    assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2], "{seeds:?}");
    // One reinforce call for the group's three feedbacks.
    assert_eq!(agent.rerank.updates(), 1);
}

#[test]
fn llm_reranker_gets_no_feedback() {
    let lm = lm("A dog named Max [0].");
    let agent = rmm("kind = \"rmm\"\n[rerank]\nmethod = \"llm\"\ntop_m = 1");
    let (eps, _) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    let roles: Vec<&str> = eps[0].lm_calls().map(|c| c.role.as_str()).collect();
    assert_eq!(roles[roles.len() - 2..], ["rerank", "answer"]);
    // "[1] > [0]": Melanie's memory first, only one kept.
    assert_eq!(notes(&eps[0], "selected"), ["r2"]);
    assert_eq!(agent.rerank.weights(), None);
    assert_eq!(agent.rerank.updates(), 0);
}

#[test]
fn bank_cache_builds_once_per_conversation() {
    let lm = lm("A dog named Max [0].");
    let src =
        "kind = \"rmm\"\nbank_cache = true\nonline = false\n[rerank]\ntemperature = 1.0\ntop_m = 1";
    let agent = rmm(src);
    assert!(agent.caches_across_samples());
    let s1 = sample("q1", "What pet did Caroline adopt?");
    let s2 = sample("q2", "What does Melanie paint?");
    let (e1, b1) = run(&agent, &lm, &s1, 1);
    assert_eq!(lm.batches().len(), 6);
    let (e2, b2) = run(&agent, &lm, &s2, 1);
    assert_eq!(lm.batches().len(), 7, "the second question only answers");
    assert_eq!(b1, b2);
    assert_eq!(e1[0].lm_calls().count(), 6);
    let roles: Vec<&str> = e2[0].lm_calls().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["answer"]);
    assert!(
        matches!(&e2[0].steps[0], Step::Edit { op, edits, .. } if op == "bank-cache" && edits.len() == 2)
    );
    assert_eq!(notes(&e2[0], "bank-cache").len(), 1);
    assert_eq!(e2[0].answer.as_deref(), Some("Sunsets"));

    // The question phase does not depend on who built the bank: the reverse order gives
    // the same Gumbel selections and answer seeds.
    let lm_b = lm_with_answer("A dog named Max [0].");
    let agent_b = rmm(src);
    let (f2, _) = run(&agent_b, &lm_b, &s2, 1);
    let (f1, _) = run(&agent_b, &lm_b, &s1, 1);
    let tail = |e: &Episode| -> (Vec<String>, u64) {
        (
            notes(e, "selected").iter().map(|s| s.to_string()).collect(),
            e.lm_calls().last().unwrap().params.seed,
        )
    };
    assert_eq!(tail(&e1[0]), tail(&f1[0]));
    assert_eq!(tail(&e2[0]), tail(&f2[0]));
    assert_eq!(f2[0].lm_calls().count(), 6, "q2 built this time");
}

#[test]
fn bank_cache_waits_for_a_concurrent_build() {
    let lm = lm("A dog named Max [0].");
    let agent = rmm("kind = \"rmm\"\nbank_cache = true\npaths = 2\n[rerank]\ntop_m = 1");
    let s1 = sample("q1", "What pet did Caroline adopt?");
    let s2 = sample("q2", "What does Melanie paint?");
    let (a, b) = std::thread::scope(|sc| {
        let h1 = sc.spawn(|| run(&agent, &lm, &s1, 2));
        let h2 = sc.spawn(|| run(&agent, &lm, &s2, 2));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    // One build (5 calls of 2 paths) and two answers.
    assert_eq!(lm.batches(), [2; 7]);
    assert_eq!(a.1, b.1);
    let built = a.0[0].lm_calls().count() + b.0[0].lm_calls().count();
    assert_eq!(built, 6 + 1);
}

#[test]
fn errors_name_what_is_wrong() {
    let lm = lm("x");
    let agent = rmm("kind = \"rmm\"");
    let err = run_with(&agent, &lm, None, &sample("q1", "What pet?"), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("[embedder]") && err.contains("agent rmm"),
        "{err}"
    );
    assert!(lm.batches().is_empty(), "failed before any LM call");
    let text = Sample::text("t7", "q", "ctx", vec![]);
    let err = run_with(&agent, &lm, Some(&BOW), &text, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`t7`") && err.contains("dialogue"), "{err}");

    let build_err = |src: &str| {
        registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap()))
            .err()
            .unwrap()
            .to_string()
    };
    for (src, key) in [
        ("kind = \"rmm\"\nretrieve_k = 0", "agent.retrieve_k"),
        ("kind = \"rmm\"\npaths = 0", "agent.paths"),
        ("kind = \"rmm\"\nbank_cahce = true", "agent.bank_cahce"),
        (
            "kind = \"rmm\"\n[rerank]\nkind = \"retrieve\"",
            "agent.rerank.kind",
        ),
        ("kind = \"rmm\"\n[rerank]\ntop_k = 3", "agent.rerank.top_k"),
        (
            "kind = \"rmm\"\n[rerank]\nmethod = \"llm\"\nsample = false",
            "agent.rerank.sample",
        ),
        (
            "kind = \"rmm\"\n[reflect]\nkind = \"summarise\"",
            "agent.reflect.kind",
        ),
        (
            "kind = \"rmm\"\n[reflect]\nmerge_k = \"3\"",
            "agent.reflect.merge_k",
        ),
        (
            "kind = \"rmm\"\n[answer]\ntemperature = -1.0",
            "agent.answer.temperature",
        ),
        (
            "kind = \"rmm\"\n[answer]\nmax_tokens = 5",
            "agent.answer.max_tokens",
        ),
        (
            "kind = \"rmm\"\n[answer]\nmemory_view = \"turns\"",
            "agent.answer.memory_view",
        ),
        (
            "kind = \"rmm\"\n[answer]\nmax_turn_chars = -1",
            "agent.answer.max_turn_chars",
        ),
    ] {
        let e = build_err(src);
        assert!(e.contains(key), "{src}: {e}");
    }
    let (_, resolved) = registry::build::<dyn Paradigm>(Cfg::new(
        "agent",
        toml::from_str("kind = \"rmm\"").unwrap(),
    ))
    .unwrap();
    assert_eq!(resolved["retrieve_k"].as_integer(), Some(20));
    assert_eq!(resolved["rerank"]["kind"].as_str(), Some("rerank"));
    assert_eq!(resolved["rerank"]["top_m"].as_integer(), Some(5));
    assert_eq!(resolved["reflect"]["kind"].as_str(), Some("summarize"));
    assert_eq!(resolved["answer"]["max_new_tokens"].as_integer(), Some(128));
    assert_eq!(
        resolved["answer"]["memory_view"].as_str(),
        Some("summary-and-turns")
    );
    assert_eq!(resolved["answer"]["max_turn_chars"].as_integer(), Some(800));
}

#[test]
fn a_replayed_bank_carries_its_build_parse_errors() {
    // Every reflection is cut off (as SmolLM2-135M's were on LoCoMo): the bank stays empty
    // and each of the 4 reflection calls records a parse error. An episode that replays the
    // cached bank must report the same 4, or format rewards would score it as clean.
    let rule = |contains: &[&str], reply: &str| Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    };
    let lm = ScriptedLm::new(
        vec![
            rule(&["(JSON):"], r#"{"memories": [{"summary": "cut"#),
            rule(&["Question:"], "I do not know."),
        ],
        "",
    );
    let agent = rmm("kind = \"rmm\"\nbank_cache = true\nonline = false");
    let (e1, b1) = run(
        &agent,
        &lm,
        &sample("q1", "What pet did Caroline adopt?"),
        1,
    );
    let (e2, b2) = run(&agent, &lm, &sample("q2", "What does Melanie paint?"), 1);
    assert!(b1[0].is_empty() && b2[0].is_empty());
    assert_eq!(e1[0].parse_errors(), 4);
    assert_eq!(e2[0].parse_errors(), 4);
    let roles: Vec<&str> = e2[0].lm_calls().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["answer"], "the replay made no reflection call");
}
