//! A MemAgent episode with the scripted LM, checked step by step: chunk count, memory cap,
//! lockstep batching of paths, final prompt content.

use memfactory_agent_memagent::{ANSWER_ROLE, MemAgent};
use memfactory_core::{
    Cfg, EpisodeCx, LanguageModel, MemoryEdit, Paradigm, Prompt, Sample, Step, StoreFactory,
    registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_overwrite as _;
use memfactory_store_memory::InMemoryFactory;

fn lm() -> ScriptedLm {
    let rule = |contains: &[&str], reply: &str| Rule {
        contains: contains.iter().map(|s| s.to_string()).collect(),
        reply: reply.into(),
    };
    ScriptedLm::new(
        vec![
            rule(&["Your answer:", "4242"], "The answer is \\boxed{4242}."),
            rule(&["Your answer:"], "\\boxed{unknown}"),
            // The section holds the needle: write it (with a long tail to exercise the cap).
            rule(
                &["Updated memory:", "<section>", "magic number is 4242"],
                "The magic number is 4242. Filler filler filler filler filler filler filler filler filler filler filler filler.",
            ),
            // Otherwise keep the previous memory.
            rule(&["Updated memory:"], "{between:<memory>\\n|\\n</memory>}"),
        ],
        "",
    )
}

fn agent(src: &str) -> Box<dyn Paradigm> {
    let cfg = Cfg::new("agent", toml::from_str(src).unwrap());
    registry::build::<dyn Paradigm>(cfg).unwrap().0
}

fn context() -> String {
    // 10 filler sentences, the needle in the middle, 10 more: ~ 1.5 KB of bytes.
    let filler = "The grass is green. The sky is blue. The sun is yellow. ";
    format!(
        "{}The magic number is 4242. {}",
        filler.repeat(12),
        filler.repeat(12)
    )
}

fn run(
    agent: &dyn Paradigm,
    lm: &dyn LanguageModel,
    paths: usize,
) -> Vec<memfactory_core::Episode> {
    let sample = Sample::text(
        "q1",
        "What is the magic number?",
        context(),
        vec!["4242".into()],
    );
    let stores = InMemoryFactory;
    let mut cxs: Vec<EpisodeCx<'_>> = (0..paths)
        .map(|p| EpisodeCx::new(lm, stores.open("q1").unwrap(), "q1", p, 100 + p as u64))
        .collect();
    agent.run_group(&sample, &mut cxs).unwrap();
    cxs.into_iter().map(EpisodeCx::into_episode).collect()
}

#[test]
fn episode_is_recorded_step_by_step() {
    let lm = lm();
    let agent = agent(
        "kind = \"memagent\"\nchunk_tokens = 200\n[update]\nkind = \"overwrite\"\nmemory_tokens = 40\n",
    );
    let ctx_len = context().len();
    let expected_chunks = ctx_len.div_ceil(200);
    let episodes = run(agent.as_ref(), &lm, 1);
    let ep = &episodes[0];

    // Note, then (update call, overwrite edit) per chunk, then the answer call.
    assert!(
        matches!(&ep.steps[0], Step::Note { label, text } if label == "chunks" && *text == expected_chunks.to_string())
    );
    assert_eq!(ep.steps.len(), 1 + 2 * expected_chunks + 1);
    let mut saw_needle = false;
    for c in 0..expected_chunks {
        let Step::Lm(call) = &ep.steps[1 + 2 * c] else {
            panic!("step {} is not an LM call", 1 + 2 * c)
        };
        assert_eq!(call.role, "memory-update");
        assert_eq!(call.params.max_new_tokens, 40);
        assert_eq!(call.output.logprobs.len(), call.output.token_ids.len());
        assert_eq!(call.output.prompt_ids, lm.prompt_ids(&call.prompt).unwrap());
        let Prompt::Chat(msgs) = &call.prompt else {
            panic!("chat prompt expected")
        };
        let text = &msgs[0].content;
        // Each update prompt carries exactly its chunk (<= 200 tokens) and the memory.
        let section = text
            .split("<section>\n")
            .nth(1)
            .unwrap()
            .split("\n</section>")
            .next()
            .unwrap();
        assert!(lm.encode(section).unwrap().len() <= 200);
        if c == 0 {
            assert!(
                text.contains("<memory>\nNo previous memory\n</memory>"),
                "{text}"
            );
        }
        let Step::Edit { op, edits, .. } = &ep.steps[2 + 2 * c] else {
            panic!("step {} is not an edit", 2 + 2 * c)
        };
        assert_eq!(op, "overwrite");
        let MemoryEdit::Overwrite { content } = &edits[0] else {
            panic!("overwrite expected")
        };
        // The memory cap is honoured (40 byte-tokens).
        assert!(lm.encode(content).unwrap().len() <= 40, "{content:?}");
        saw_needle |= content.contains("4242");
    }
    assert!(saw_needle, "the memory never picked up the needle");
    let Step::Lm(last) = ep.steps.last().unwrap() else {
        panic!("last step is not an LM call")
    };
    assert_eq!(last.role, ANSWER_ROLE);
    let Prompt::Chat(msgs) = &last.prompt else {
        panic!("chat prompt expected")
    };
    let final_prompt = &msgs[0].content;
    assert!(final_prompt.contains("<problem> \nWhat is the magic number?\n</problem>"));
    assert!(final_prompt.contains("<memory>\nThe magic number is 4242."));
    assert!(final_prompt.contains("\\boxed{}"));
    assert!(!final_prompt.contains("<section>"));
    assert_eq!(ep.answer.as_deref(), Some("The answer is \\boxed{4242}."));
}

#[test]
fn paths_run_in_lockstep_with_distinct_seeds() {
    let lm = lm();
    let agent = agent("kind = \"memagent\"\nchunk_tokens = 500\npaths = 3\n");
    assert_eq!(agent.paths(), 3);
    let eps = run(agent.as_ref(), &lm, 3);
    assert_eq!(eps.len(), 3);
    let seeds: Vec<Vec<u64>> = eps
        .iter()
        .map(|e| e.lm_calls().map(|c| c.params.seed).collect())
        .collect();
    assert_ne!(seeds[0], seeds[1]);
    for e in &eps {
        assert_eq!(e.lm_calls().count(), context().len().div_ceil(500) + 1);
        assert_eq!(e.answer.as_deref(), Some("The answer is \\boxed{4242}."));
    }
}

#[test]
fn max_chunks_limits_reading() {
    let lm = lm();
    let a = agent("kind = \"memagent\"\nchunk_tokens = 100\nmax_chunks = 2\ntruncate = \"head\"\n");
    let eps = run(a.as_ref(), &lm, 1);
    assert_eq!(eps[0].lm_calls().count(), 3);
    // The needle sits past the first 200 bytes, so the memory never saw it.
    assert_eq!(eps[0].answer.as_deref(), Some("\\boxed{unknown}"));
}

#[test]
fn bad_agent_tables_are_rejected_with_key_paths() {
    let err = |src: &str| {
        registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap()))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err("kind = \"memagent\"\nchunk_tokens = 0").contains("agent.chunk_tokens"));
    assert!(
        err("kind = \"memagent\"\n[update]\nkind = \"overwrite\"\nmemory_tokenz = 3")
            .contains("agent.update.memory_tokenz")
    );
    assert!(
        err("kind = \"memagent\"\n[answer]\ntemperature = -1.0")
            .contains("agent.answer.temperature")
    );
    assert!(err("kind = \"memagent\"\n[update]\nkind = \"overwrite\"\nmemory_tokens = 10\nmax_new_tokens = 20").contains("agent.update.max_new_tokens"));
    // Without `kind`, the update table's keys merge over the default op (the rule every
    // paradigm follows, `memfactory_core::op::sub_op`), so its own keys are checked too.
    assert!(
        err("kind = \"memagent\"\n[update]\nmemory_tokens = 10\nmax_new_tokens = 20")
            .contains("agent.update.max_new_tokens")
    );
    let _ = MemAgent::chunks; // public API used by trainers
}

#[test]
fn a_partial_update_table_keeps_the_default_op() {
    let built = |src: &str| {
        registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap()))
            .unwrap()
            .1
    };
    let resolved = built("kind = \"memagent\"\n[update]\nmemory_tokens = 40\n");
    let update = resolved["update"].as_table().unwrap();
    assert_eq!(update["kind"].as_str(), Some("overwrite"));
    assert_eq!(update["memory_tokens"].as_integer(), Some(40));
    assert_eq!(
        built("kind = \"memagent\"\n[update]\nkind = \"overwrite\"\nmemory_tokens = 40\n")["update"],
        resolved["update"]
    );
}
