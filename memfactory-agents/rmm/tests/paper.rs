//! RMM with the paper's prompts and REINFORCE settings (arXiv 2503.08026 App. A.1, D.1,
//! D.2): an episode with the scripted LM (rules match only the paper's prompt text), the
//! App. D.2 memory layout, `[NO_CITE]`, batched online updates and config errors.

use memfactory_agent_rmm::{Rmm, parse_answer};
use memfactory_core::{
    Cfg, Dialogue, Episode, EpisodeCx, LanguageModel, Paradigm, Prompt, Result, Sample, Session,
    StoreFactory, Turn,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_summarize as _;
use memfactory_store_memory::InMemoryFactory;
use memfactory_testkit::BagOfWords;

static BOW: BagOfWords = BagOfWords(&["caroline", "pet", "dog", "max", "melanie", "sunsets"]);

const MERGED: &str = "Caroline wanted a pet, and adopted a dog named Max.";

fn lm(answer: &str) -> ScriptedLm {
    let rule = |contains: &[&str], reply: &str| Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    };
    ScriptedLm::new(
        vec![
            rule(
                &[
                    "Function: Memory extraction for Caroline",
                    "- Turn 0:\n  - Caroline: I want a pet.\n  - Melanie: I paint sunsets.",
                ],
                r#"{"extracted_memories": [{"summary": "Caroline wants a pet.", "reference": [0]}]}"#,
            ),
            rule(
                &[
                    "Function: Memory extraction for Melanie",
                    "between Caroline and Melanie, extract the personal summaries of Melanie",
                    "I paint sunsets.",
                ],
                r#"{"extracted_memories": [{"summary": "Melanie paints sunsets.", "reference": [0]}]}"#,
            ),
            rule(
                &["Function: Memory extraction for Caroline", "adopted a dog"],
                r#"```json
{"extracted_memories": [{"summary": "Caroline adopted a dog named Max.", "reference": ["[0]"]}]}
```"#,
            ),
            rule(&["Function: Memory extraction for Melanie"], "NO_TRAIT"),
            rule(
                &[
                    "OUTPUT ACTION:",
                    r#"{"history_summaries":["Caroline wants a pet."]}"#,
                    r#"{"new_summary":"Caroline adopted a dog named Max."}"#,
                ],
                &format!("Merge(0, {MERGED})"),
            ),
            rule(
                &[
                    "If no useful memory exist, output [NO_CITE].",
                    "- User Query: What pet did Caroline adopt?",
                ],
                answer,
            ),
        ],
        "",
    )
}

fn dialogue() -> Dialogue {
    let t = |id: &str, speaker: &str, text: &str| Turn {
        id: id.into(),
        speaker: speaker.into(),
        text: text.into(),
    };
    Dialogue {
        speakers: vec!["Caroline".into(), "Melanie".into()],
        sessions: vec![
            Session {
                index: 1,
                date: Some("8 May, 2023".into()),
                turns: vec![
                    t("D1:1", "Caroline", "I want a pet."),
                    t("D1:2", "Melanie", "I paint sunsets."),
                ],
            },
            Session {
                index: 2,
                date: Some("9 May, 2023".into()),
                turns: vec![
                    t("D2:1", "Caroline", "We adopted a dog named Max!"),
                    t("D2:2", "Melanie", "Nice."),
                ],
            },
        ],
    }
}

fn sample(id: &str) -> Sample {
    let mut s = Sample::text(id, "What pet did Caroline adopt?", "", vec!["a dog".into()]);
    s.dialogue = Some(dialogue());
    s
}

const PAPER: &str = r#"
kind = "rmm"
[reflect]
kind = "summarize"
template = "rmm-paper"
merge_template = "rmm-paper"
[rerank]
kind = "rerank"
sample = false
init = "zero"
baseline = 0.5
batch = 2
[answer]
template = "rmm-paper"
max_turn_chars = 0
"#;

fn rmm(src: &str) -> Result<Rmm> {
    let mut cfg = Cfg::new("agent", toml::from_str(src).unwrap());
    let _: String = cfg.req("kind")?;
    let r = Rmm::from_cfg(&mut cfg)?;
    cfg.finish()?;
    Ok(r)
}

fn run(agent: &dyn Paradigm, lm: &dyn LanguageModel, s: &Sample) -> Episode {
    let mut cxs = vec![
        EpisodeCx::new(lm, InMemoryFactory.open(&s.id).unwrap(), &s.id, 0, 3)
            .with_embedder(Some(&BOW)),
    ];
    agent.run_group(s, &mut cxs).unwrap();
    cxs.pop().unwrap().into_episode()
}

fn last_prompt(ep: &Episode) -> String {
    match &ep.lm_calls().last().unwrap().prompt {
        Prompt::Chat(m) => m[0].content.clone(),
        _ => panic!("chat prompt"),
    }
}

#[test]
fn an_episode_with_the_papers_prompts_and_batched_updates() {
    let agent = rmm(PAPER).unwrap();
    let lm = lm("You adopted a dog named Max. [0]");
    let ep = run(&agent, &lm, &sample("q1"));
    assert_eq!(ep.parse_errors(), 0, "{:?}", ep.steps);
    assert_eq!(ep.answer.as_deref(), Some("You adopted a dog named Max."));
    let prompt = last_prompt(&ep);
    // App. D.2 with the kept memories in its layout: the merged memory first (it scores
    // higher), its turns the union of both sessions' turn 0.
    let want = format!(
        "- User Query: What pet did Caroline adopt?\n- Memories:\n  - Memory [0]: {MERGED}\n    \
         * Caroline (8 May, 2023): I want a pet.\n      \
         Melanie (8 May, 2023): I paint sunsets.\n    \
         * Caroline (9 May, 2023): We adopted a dog named Max!\n      \
         Melanie (9 May, 2023): Nice.\n  \
         - Memory [1]: Melanie paints sunsets.\n    \
         * Caroline (8 May, 2023): I want a pet.\n      \
         Melanie (8 May, 2023): I paint sunsets.\n\nOutput:"
    );
    assert!(prompt.trim_end().ends_with(&want), "{prompt}");
    assert!(prompt.starts_with("Task Description: Given a user query and a list of memories"));
    // batch = 2: the first question's feedback waits.
    assert_eq!(agent.rerank.updates(), 0);
    assert_eq!(agent.rerank.pending_questions(), 1);
    run(&agent, &lm, &sample("q2"));
    assert_eq!(agent.rerank.updates(), 1);
    assert_eq!(agent.rerank.pending_questions(), 0);
    assert_eq!(agent.rerank.baseline(), 0.0, "constant b: no running mean");
}

#[test]
fn no_cite_answers_give_all_negative_feedback_or_none() {
    let lm = lm("I don't have enough information to answer that. [NO_CITE]");
    let agent = rmm(PAPER).unwrap();
    let ep = run(&agent, &lm, &sample("q1"));
    assert_eq!(ep.parse_errors(), 0);
    assert_eq!(
        ep.answer.as_deref(),
        Some("I don't have enough information to answer that.")
    );
    // The paper's rule: every kept memory is not cited, -1 each: one pending question.
    assert_eq!(agent.rerank.pending_questions(), 1);

    let agent = rmm(&PAPER.replace(
        "max_turn_chars = 0",
        "max_turn_chars = 0\nno_cite_feedback = \"none\"",
    ))
    .unwrap();
    run(&agent, &lm, &sample("q1"));
    assert_eq!(agent.rerank.pending_questions(), 0, "no feedback");

    // A cited answer still gives feedback with no_cite_feedback = "none".
    let lm = self::lm("A dog [0].");
    run(&agent, &lm, &sample("q1"));
    assert_eq!(agent.rerank.pending_questions(), 1);
}

#[test]
fn no_cite_marker_parsing() {
    let p = parse_answer("Output: I don't know. [NO_CITE]", 3);
    assert_eq!(
        (p.answer.as_str(), p.cited.len(), p.no_cite, p.error),
        ("I don't know.", 0, true, None)
    );
    let p = parse_answer("Nothing [no cite] here", 3);
    assert_eq!((p.answer.as_str(), p.no_cite), ("Nothing here", true));
    let p = parse_answer("Paris [0] [NO_CITE]", 3);
    assert_eq!(p.cited, [0]);
    assert!(p.error.unwrap().contains("[NO_CITE]"));
    let p = parse_answer("[NO_CITE]", 3);
    assert_eq!(p.error.as_deref(), Some("empty answer"));
    let p = parse_answer("You enjoy hiking. [0, 1, 2]", 3);
    assert_eq!((p.cited.as_slice(), p.no_cite), (&[0, 1, 2][..], false));
}

#[test]
fn paper_answer_template_needs_the_turns_and_keys_are_checked() {
    let e = rmm(&PAPER.replace(
        "max_turn_chars = 0",
        "max_turn_chars = 0\nmemory_view = \"summary\"",
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("agent.answer.memory_view"), "{e}");
    let e = rmm(&PAPER.replace(
        "max_turn_chars = 0",
        "max_turn_chars = 0\nno_cite_feedback = \"skip\"",
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("agent.answer.no_cite_feedback"), "{e}");
    let e = rmm(&PAPER.replace("baseline = 0.5", "baseline = \"b\""))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("agent.rerank.baseline"), "{e}");
}
