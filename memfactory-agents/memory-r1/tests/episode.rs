//! Memory-R1 episodes with scripted replies and test ops: the exact order of operations and
//! final bank on a two-session dialogue, enrichment, lockstep batching (also with ragged
//! fact counts), parse errors, the bank cache, and config errors.

mod common;

use common::{BowEmbedder, CountingLm, bow, recipe, rule};
use memfactory_agent_memory_r1::{BANK_CACHE_OP, MemoryR1, bank_seed, dialogue_key};
use memfactory_core::{
    Cfg, Dialogue, Episode, EpisodeCx, LanguageModel, MemoryEdit, MemoryItem, Paradigm, Sample,
    Session, Step, StoreFactory, Turn, registry,
};
use memfactory_lm_scripted::ScriptedLm;
use memfactory_store_memory::InMemoryFactory;

fn agent(extra: &str) -> Box<dyn Paradigm> {
    let cfg = Cfg::new("agent", toml::from_str(&recipe(extra)).unwrap());
    registry::build::<dyn Paradigm>(cfg).unwrap().0
}

fn build_err(src: &str) -> String {
    registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap()))
        .err()
        .expect("the table should be rejected")
        .to_string()
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
                    turn("D1:1", "Caroline", "I live in Boston."),
                    turn("D1:2", "Melanie", "I paint on weekends."),
                ],
            },
            Session {
                index: 2,
                date: Some("9 June, 2023".into()),
                turns: vec![
                    turn("D2:1", "Caroline", "I moved to Seattle last week."),
                    turn("D2:2", "Melanie", "I stopped painting, too busy."),
                ],
            },
        ],
    }
}

fn sample(id: &str, question: &str) -> Sample {
    let mut s = Sample::text(id, question, "", vec!["Seattle".into()]);
    s.dialogue = Some(dialogue());
    s
}

fn scripted() -> ScriptedLm {
    ScriptedLm::new(
        vec![
            rule(&["EXTRACT", "[D1:1]"], "Caroline|Caroline lives in Boston"),
            rule(&["EXTRACT", "[D1:2]"], "Melanie|Melanie paints on weekends"),
            rule(&["EXTRACT", "[D2:1]"], "Caroline|Caroline moved to Seattle"),
            rule(&["EXTRACT", "[D2:2]"], "Melanie|Melanie stopped painting"),
            rule(
                &[
                    "MANAGE",
                    "fact: Caroline moved to Seattle",
                    "0: Caroline lives in Boston",
                ],
                "UPDATE 0 Caroline moved from Boston to Seattle",
            ),
            rule(
                &[
                    "MANAGE",
                    "fact: Melanie stopped painting",
                    "0: Melanie paints on weekends",
                ],
                "DELETE 0",
            ),
            rule(&["MANAGE"], "ADD {between:fact: |\\n}"),
            rule(&["ANSWER", "Seattle"], "Relevant: 0\nAnswer: Seattle"),
            rule(&["ANSWER"], "Answer: unknown"),
        ],
        "",
    )
}

/// Runs one group of `paths` episodes (seeds `seed + p`) and returns the episodes and the
/// final banks.
fn run_with(
    agent: &dyn Paradigm,
    lm: &dyn LanguageModel,
    embedder: Option<&dyn memfactory_core::Embedder>,
    sample: &Sample,
    paths: usize,
    seed: u64,
) -> (Vec<Episode>, Vec<Vec<MemoryItem>>) {
    let stores = InMemoryFactory;
    let mut cxs: Vec<EpisodeCx<'_>> = (0..paths)
        .map(|p| {
            EpisodeCx::new(
                lm,
                stores.open(&format!("{}/{p}", sample.id)).unwrap(),
                &sample.id,
                p,
                seed + p as u64,
            )
            .with_embedder(embedder)
        })
        .collect();
    agent.run_group(sample, &mut cxs).unwrap();
    let banks = cxs.iter().map(|cx| cx.memory().unwrap()).collect();
    (
        cxs.into_iter().map(EpisodeCx::into_episode).collect(),
        banks,
    )
}

fn edit_text(e: &MemoryEdit) -> String {
    match e {
        MemoryEdit::Add { item } => format!("add {} {:?}", item.id, item.content),
        MemoryEdit::Update { id, content, .. } => format!("update {id} {content:?}"),
        MemoryEdit::Delete { id } => format!("delete {id}"),
        MemoryEdit::Overwrite { content } => format!("overwrite {content:?}"),
        MemoryEdit::Noop => "noop".into(),
    }
}

/// One line per step.
fn trace(ep: &Episode) -> Vec<String> {
    ep.steps
        .iter()
        .map(|s| match s {
            Step::Note { label, text } => format!("note {label}: {text}"),
            Step::Lm(c) => format!("lm {}: {}", c.role, c.output.text),
            Step::Edit {
                op,
                edits,
                parse_error,
                ..
            } => {
                let e: Vec<String> = edits.iter().map(edit_text).collect();
                match parse_error {
                    Some(pe) => format!("edit {op}: [{}] error {pe}", e.join("; ")),
                    None => format!("edit {op}: [{}]", e.join("; ")),
                }
            }
        })
        .collect()
}

fn facts_note(ids: &str, speaker: &str, fact: &str) -> String {
    format!("note facts: [{ids}] [{{\"fact\":\"{fact}\",\"speaker\":\"{speaker}\"}}]")
}

#[test]
fn two_sessions_give_the_exact_order_of_operations_and_final_bank() {
    let lm = scripted();
    let a = agent("");
    let (eps, banks) = run_with(
        a.as_ref(),
        &lm,
        None,
        &sample("q1", "Where does Caroline live now?"),
        1,
        7,
    );
    let expected = vec![
        "lm extract: Caroline|Caroline lives in Boston".to_string(),
        facts_note("D1:1", "Caroline", "Caroline lives in Boston"),
        "lm manage: ADD Caroline lives in Boston".into(),
        "edit test-manage: [add m1 \"Caroline lives in Boston\"]".into(),
        "lm extract: Melanie|Melanie paints on weekends".into(),
        facts_note("D1:2", "Melanie", "Melanie paints on weekends"),
        "lm manage: ADD Melanie paints on weekends".into(),
        "edit test-manage: [add m2 \"Melanie paints on weekends\"]".into(),
        "lm extract: Caroline|Caroline moved to Seattle".into(),
        facts_note("D2:1", "Caroline", "Caroline moved to Seattle"),
        "lm manage: UPDATE 0 Caroline moved from Boston to Seattle".into(),
        "edit test-manage: [update m1 \"Caroline moved from Boston to Seattle\"]".into(),
        "lm extract: Melanie|Melanie stopped painting".into(),
        facts_note("D2:2", "Melanie", "Melanie stopped painting"),
        "lm manage: DELETE 0".into(),
        "edit test-manage: [delete m2]".into(),
        "note candidates: m1".into(),
        "lm answer: Relevant: 0\nAnswer: Seattle".into(),
        "note selected: m1".into(),
    ];
    assert_eq!(trace(&eps[0]), expected);
    assert_eq!(eps[0].answer.as_deref(), Some("Seattle"));
    assert_eq!(eps[0].parse_errors(), 0);

    // The extraction prompt carries the rendered turn; the manager saw the related memory.
    let calls: Vec<_> = eps[0].lm_calls().collect();
    let prompt = |i: usize| match &calls[i].prompt {
        memfactory_core::Prompt::Chat(m) => m[0].content.clone(),
        p => panic!("chat prompt expected, got {p:?}"),
    };
    assert_eq!(
        prompt(0),
        "EXTRACT\n[D1:1] Caroline (8 May, 2023): I live in Boston."
    );
    assert_eq!(
        prompt(5),
        "MANAGE\nfact: Caroline moved to Seattle\nmemories:\n0: Caroline lives in Boston\n1: Melanie paints on weekends\nend"
    );

    // Exact final bank: the update kept speaker, time and source turn of the added item.
    let mut m1 = MemoryItem::new("m1", "Caroline moved from Boston to Seattle");
    m1.speaker = Some("Caroline".into());
    m1.time = Some("8 May, 2023".into());
    m1.meta.insert("turn".into(), "D1:1".into());
    assert_eq!(banks[0], vec![m1]);
}

#[test]
fn edits_are_enriched_with_speaker_time_turns_and_embeddings() {
    let lm = scripted();
    let a = agent("turns_per_step = 2");
    let emb = BowEmbedder;
    let (eps, banks) = run_with(
        a.as_ref(),
        &lm,
        Some(&emb),
        &sample("q1", "Where does Caroline live now?"),
        1,
        7,
    );
    // With two turns per step the first step renders both turns and the rules match the
    // first: one fact per session.
    let calls: Vec<_> = eps[0].lm_calls().collect();
    let memfactory_core::Prompt::Chat(m) = &calls[0].prompt else {
        panic!("chat prompt expected")
    };
    assert_eq!(
        m[0].content,
        "EXTRACT\n[D1:1] Caroline (8 May, 2023): I live in Boston.\n[D1:2] Melanie (8 May, 2023): I paint on weekends."
    );
    let adds: Vec<&MemoryItem> = eps[0]
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Edit { edits, .. } => Some(edits),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            MemoryEdit::Add { item } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0].speaker.as_deref(), Some("Caroline"));
    assert_eq!(adds[0].time.as_deref(), Some("8 May, 2023"));
    assert_eq!(adds[0].meta["turn"], "D1:1,D1:2");
    assert_eq!(adds[0].embedding, Some(bow("Caroline lives in Boston")));
    let update = eps[0]
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Edit { edits, .. } => edits.iter().find_map(|e| match e {
                MemoryEdit::Update { embedding, .. } => Some(embedding.clone()),
                _ => None,
            }),
            _ => None,
        })
        .expect("an update edit");
    assert_eq!(update, Some(bow("Caroline moved from Boston to Seattle")));
    assert_eq!(banks[0].len(), 1);
    assert_eq!(
        banks[0][0].embedding,
        Some(bow("Caroline moved from Boston to Seattle"))
    );
    assert_eq!(banks[0][0].time.as_deref(), Some("8 May, 2023"));
}

#[test]
fn paths_run_in_lockstep_with_one_call_per_step() {
    let lm = CountingLm::new(scripted());
    let a = agent("paths = 3");
    assert_eq!(a.paths(), 3);
    let (eps, banks) = run_with(
        a.as_ref(),
        &lm,
        None,
        &sample("q1", "Where does Caroline live now?"),
        3,
        100,
    );
    // 4 extraction + 4 manager calls + 1 answer, each one batch over the 3 paths.
    assert_eq!(lm.batches(), vec![3; 9]);
    for (p, ep) in eps.iter().enumerate() {
        assert_eq!(ep.path, p);
        assert_eq!(ep.lm_calls().count(), 9);
        assert_eq!(ep.answer.as_deref(), Some("Seattle"));
        assert_eq!(banks[p], banks[0]);
    }
    let seeds: Vec<Vec<u64>> = eps
        .iter()
        .map(|e| e.lm_calls().map(|c| c.params.seed).collect())
        .collect();
    assert_ne!(seeds[0], seeds[1]);
}

#[test]
fn ragged_fact_counts_make_one_call_per_fact_index() {
    let lm = CountingLm::new(ScriptedLm::new(
        vec![
            rule(
                &["EXTRACT"],
                "Caroline|Caroline lives in Boston\n@1 Caroline|Caroline has a dog\n@2 Caroline|Caroline has a dog\n@2 Caroline|Caroline likes tea",
            ),
            rule(&["MANAGE"], "ADD {between:fact: |\\n}"),
            rule(&["ANSWER"], "Relevant: 0\nAnswer: ok"),
        ],
        "",
    ));
    let a = agent("paths = 3\nmax_turns = 1");
    let (eps, banks) = run_with(a.as_ref(), &lm, None, &sample("q1", "Pets?"), 3, 5);
    // extract (3 paths), fact 0 (3 paths), fact 1 (paths 1, 2), fact 2 (path 2), answer.
    assert_eq!(lm.batches(), vec![3, 3, 2, 1, 3]);
    let contents = |b: &[MemoryItem]| -> Vec<String> {
        b.iter()
            .map(|i| format!("{} {}", i.id, i.content))
            .collect()
    };
    assert_eq!(contents(&banks[0]), ["m1 Caroline lives in Boston"]);
    assert_eq!(
        contents(&banks[1]),
        ["m1 Caroline lives in Boston", "m2 Caroline has a dog"]
    );
    assert_eq!(
        contents(&banks[2]),
        [
            "m1 Caroline lives in Boston",
            "m2 Caroline has a dog",
            "m3 Caroline likes tea"
        ]
    );
    for (p, ep) in eps.iter().enumerate() {
        assert_eq!(ep.path, p, "the group's order is restored");
        let managed: Vec<String> = ep
            .lm_calls()
            .filter(|c| c.role == "manage")
            .map(|c| c.output.text.clone())
            .collect();
        assert_eq!(managed.len(), p + 1);
        assert_eq!(ep.lm_calls().count(), p + 3);
        assert_eq!(ep.answer.as_deref(), Some("ok"));
    }
    assert_eq!(
        eps[2]
            .lm_calls()
            .filter(|c| c.role == "manage")
            .map(|c| c.output.text.as_str())
            .collect::<Vec<_>>(),
        [
            "ADD Caroline lives in Boston",
            "ADD Caroline has a dog",
            "ADD Caroline likes tea"
        ]
    );
}

#[test]
fn malformed_outputs_are_recorded_as_parse_errors() {
    let lm = ScriptedLm::new(
        vec![
            rule(&["EXTRACT", "[D1:1]"], "Caroline|Caroline lives in Boston"),
            rule(&["EXTRACT", "[D1:2]"], "Melanie paints, I think"),
            rule(&["MANAGE"], "I would add this to the memory."),
            rule(&["ANSWER"], "NOTEXT"),
        ],
        "",
    );
    let a = agent("max_turns = 2");
    let (eps, banks) = run_with(a.as_ref(), &lm, None, &sample("q9", "Where?"), 1, 3);
    let t = trace(&eps[0]);
    assert_eq!(
        t,
        vec![
            "lm extract: Caroline|Caroline lives in Boston".to_string(),
            facts_note("D1:1", "Caroline", "Caroline lives in Boston"),
            "lm manage: I would add this to the memory.".into(),
            "edit test-manage: [noop] error unknown decision \"I would add this to the memory.\""
                .into(),
            "lm extract: Melanie paints, I think".into(),
            "note facts: [D1:2] []".into(),
            "edit test-extract: [] error not `Speaker|fact`: \"Melanie paints, I think\"".into(),
            "note candidates: ".into(),
            "lm answer: NOTEXT".into(),
            "note selected: ".into(),
            "note answer: op `test-distill` returned no text; the answer is empty".into(),
        ]
    );
    assert!(banks[0].is_empty(), "the bank is unchanged: {:?}", banks[0]);
    assert_eq!(eps[0].parse_errors(), 2);
    assert_eq!(eps[0].answer.as_deref(), Some(""));
}

#[test]
fn a_sample_without_dialogue_is_an_error_naming_it() {
    let lm = scripted();
    let a = agent("");
    let s = Sample::text("hqa-17", "Who?", "some text", vec!["x".into()]);
    let stores = InMemoryFactory;
    let mut cxs = vec![EpisodeCx::new(
        &lm,
        stores.open("b").unwrap(),
        "hqa-17",
        0,
        1,
    )];
    let err = a.run_group(&s, &mut cxs).unwrap_err();
    assert!(err.is_user_error());
    let err = err.to_string();
    assert!(err.contains("`hqa-17`"), "{err}");
    assert!(err.contains("no dialogue"), "{err}");
}

#[test]
fn bad_tables_are_rejected_with_key_paths() {
    let err = build_err(&recipe("bogus = 1"));
    assert!(err.contains("`agent.bogus`"), "{err}");
    assert!(err.contains("turns_per_step"), "{err}");
    let err = build_err(&recipe("turns_per_step = 0"));
    assert!(err.contains("`agent.turns_per_step`"), "{err}");
    let err = build_err(&recipe("related_k = 0"));
    assert!(err.contains("`agent.related_k`"), "{err}");
    let err = build_err(&recipe("paths = 0"));
    assert!(err.contains("`agent.paths`"), "{err}");
    let err = build_err(&recipe("bank_cache = \"yes\""));
    assert!(err.contains("`agent.bank_cache`"), "{err}");
    let err = build_err(&recipe("").replace("per_speaker = true", "per_speaker = true\nbogus = 2"));
    assert!(err.contains("`agent.retrieve.bogus`"), "{err}");
    let err = build_err(&recipe("").replace("kind = \"test-manage\"", "kind = \"test-manag\""));
    assert!(err.contains("agent.manage.kind"), "{err}");
}

#[test]
fn resolved_table_records_every_key() {
    let cfg = Cfg::new("agent", toml::from_str(&recipe("paths = 2")).unwrap());
    let (_, resolved) = registry::build::<dyn Paradigm>(cfg).unwrap();
    assert_eq!(resolved["paths"].as_integer(), Some(2));
    assert_eq!(resolved["turns_per_step"].as_integer(), Some(1));
    assert_eq!(resolved["max_turns"].as_integer(), Some(0));
    assert_eq!(resolved["related_k"].as_integer(), Some(5));
    assert_eq!(resolved["bank_cache"].as_bool(), Some(false));
    assert_eq!(resolved["retrieve"]["k"].as_integer(), Some(30));
    assert_eq!(resolved["retrieve"]["per_speaker"].as_bool(), Some(true));
    assert_eq!(resolved["answer"]["kind"].as_str(), Some("test-distill"));
}

#[test]
fn related_k_caps_what_the_manager_sees() {
    // The related op returns up to 5 memories; related_k = 1 keeps the best one.
    let lm = ScriptedLm::new(
        vec![
            rule(&["EXTRACT", "[D1:1]"], "Caroline|Caroline lives in Boston"),
            rule(&["EXTRACT", "[D1:2]"], "Melanie|Melanie paints on weekends"),
            rule(&["EXTRACT", "[D2:1]"], "Melanie|Melanie moved to Seattle"),
            rule(
                &["MANAGE", "fact: Caroline lives"],
                "ADD Caroline lives in Boston",
            ),
            rule(
                &["MANAGE", "fact: Melanie paints"],
                "ADD Melanie paints on weekends",
            ),
            rule(&["MANAGE"], "NOOP"),
            rule(&["ANSWER"], "Answer: x"),
        ],
        "",
    );
    let a = agent("related_k = 1\nmax_turns = 3");
    let (eps, banks) = run_with(a.as_ref(), &lm, None, &sample("q", "?"), 1, 1);
    let manage: Vec<String> = eps[0]
        .lm_calls()
        .filter(|c| c.role == "manage")
        .map(|c| match &c.prompt {
            memfactory_core::Prompt::Chat(m) => m[0].content.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(manage.len(), 3);
    assert_eq!(
        manage[2],
        "MANAGE\nfact: Melanie moved to Seattle\nmemories:\n0: Melanie paints on weekends\nend"
    );
    assert_eq!(banks[0].len(), 2);
}

// ------------------------------------------------------------------- bank cache

fn cache_agent() -> Box<dyn Paradigm> {
    agent("bank_cache = true")
}

#[test]
fn bank_cache_builds_once_per_dialogue_and_replays_the_same_bank() {
    let lm = CountingLm::new(scripted());
    let a = cache_agent();
    assert!(a.caches_across_samples());
    assert!(!agent("").caches_across_samples());
    let (e1, b1) = run_with(
        a.as_ref(),
        &lm,
        None,
        &sample("q1", "Where does Caroline live now?"),
        1,
        11,
    );
    assert_eq!(lm.batches().len(), 9);
    let (e2, b2) = run_with(a.as_ref(), &lm, None, &sample("q2", "Who paints?"), 1, 22);
    assert_eq!(lm.batches().len(), 10, "the second question only answers");
    assert_eq!(b1, b2);
    assert_eq!(b1.len(), 1);

    let key = format!("{:016x}", dialogue_key(&dialogue()));
    let t1 = trace(&e1[0]);
    assert_eq!(t1[16], format!("note {BANK_CACHE_OP}: built {key}/0"));
    let t2 = trace(&e2[0]);
    assert_eq!(
        t2,
        vec![
            format!("note {BANK_CACHE_OP}: reused {key}/0"),
            format!("edit {BANK_CACHE_OP}: [add m1 \"Caroline moved from Boston to Seattle\"]"),
            "note candidates: m1".into(),
            "lm answer: Relevant: 0\nAnswer: Seattle".into(),
            "note selected: m1".into(),
        ]
    );
    // The build's seeds derive from the dialogue, the answer's from the episode.
    let build_seed = e1[0].lm_calls().next().unwrap().params.seed;
    assert_eq!(
        build_seed,
        memfactory_core::seed::derive_n(bank_seed(dialogue_key(&dialogue()), 0), 0)
    );
    assert_eq!(e1[0].seed, 11);
    assert_eq!(e2[0].seed, 22);
}

#[test]
fn bank_cache_bank_does_not_depend_on_which_question_comes_first() {
    let a1 = cache_agent();
    let a2 = cache_agent();
    let lm = scripted();
    let (x, _) = run_with(a1.as_ref(), &lm, None, &sample("q1", "Where?"), 2, 11);
    let (y, _) = run_with(a2.as_ref(), &lm, None, &sample("q2", "Who?"), 2, 999);
    for p in 0..2 {
        let build = |e: &Episode| -> Vec<u64> {
            e.lm_calls()
                .filter(|c| c.role != "answer")
                .map(|c| c.params.seed)
                .collect()
        };
        assert_eq!(build(&x[p]), build(&y[p]));
        assert_eq!(build(&x[p]).len(), 8);
    }
    assert_ne!(
        x[0].lm_calls().next().unwrap().params.seed,
        x[1].lm_calls().next().unwrap().params.seed
    );
}

#[test]
fn bank_cache_is_shared_by_concurrent_workers() {
    let lm = CountingLm::new(scripted());
    let a = cache_agent();
    let banks: Vec<Vec<Vec<MemoryItem>>> = std::thread::scope(|s| {
        let hs: Vec<_> = ["q1", "q2", "q3"]
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let (a, lm) = (a.as_ref(), &lm);
                s.spawn(move || run_with(a, lm, None, &sample(id, "Where?"), 2, n as u64).1)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One build (8 calls) and three answers.
    assert_eq!(lm.batches().len(), 11);
    assert!(banks.iter().all(|b| *b == banks[0]));
    // At most one wait per (waiting episode, path).
    assert!(lm.waits() <= 4);
}

#[test]
fn public_fields_describe_the_agent() {
    let cfg = Cfg::new("agent", toml::from_str(&recipe("related_k = 2")).unwrap());
    let (p, _) = registry::build::<dyn Paradigm>(cfg).unwrap();
    assert_eq!(p.kind(), "memory-r1");
    let _: fn(&MemoryR1, &Dialogue, &mut [EpisodeCx<'_>]) -> memfactory_core::Result<()> =
        MemoryR1::build_bank;
}

/// Blocks its first `generate` until another thread has entered `wait_outside`, so that the
/// second episode deterministically finds the bank being built.
struct GateLm {
    inner: CountingLm<'static>,
    started: std::sync::mpsc::SyncSender<()>,
    first: std::sync::atomic::AtomicBool,
}

impl LanguageModel for GateLm {
    fn describe(&self) -> String {
        "gate".into()
    }
    fn encode(&self, text: &str) -> memfactory_core::Result<Vec<u32>> {
        self.inner.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> memfactory_core::Result<String> {
        self.inner.decode(ids)
    }
    fn prompt_ids(&self, p: &memfactory_core::Prompt) -> memfactory_core::Result<Vec<u32>> {
        self.inner.prompt_ids(p)
    }
    fn generate(
        &self,
        requests: &[memfactory_core::GenRequest],
    ) -> memfactory_core::Result<Vec<memfactory_core::Generation>> {
        if self.first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.started.send(()).unwrap();
            let t0 = std::time::Instant::now();
            while self.inner.waits() == 0 {
                assert!(
                    t0.elapsed().as_secs() < 10,
                    "the second episode never waited"
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        self.inner.generate(requests)
    }
    fn wait_outside(&self, wait: &mut dyn FnMut()) {
        self.inner.wait_outside(wait)
    }
}

#[test]
fn an_episode_waits_for_a_bank_being_built_outside_the_lm() {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let lm = GateLm {
        inner: CountingLm::new(scripted()),
        started: tx,
        first: std::sync::atomic::AtomicBool::new(true),
    };
    let a = cache_agent();
    let (first, second) = std::thread::scope(|s| {
        let (a1, lm1) = (a.as_ref(), &lm);
        let h1 = s.spawn(move || run_with(a1, lm1, None, &sample("q1", "Where?"), 1, 1));
        rx.recv().unwrap();
        let (a2, lm2) = (a.as_ref(), &lm);
        let h2 = s.spawn(move || run_with(a2, lm2, None, &sample("q2", "Who?"), 1, 2));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    assert_eq!(lm.inner.waits(), 1);
    assert_eq!(lm.inner.batches().len(), 10);
    assert_eq!(first.1, second.1);
    assert!(trace(&second.0[0])[0].starts_with("note bank-cache: reused"));
}

/// Fails its first `generate` call.
struct FlakyLm {
    inner: ScriptedLm,
    fail: std::sync::atomic::AtomicBool,
}

impl LanguageModel for FlakyLm {
    fn describe(&self) -> String {
        "flaky".into()
    }
    fn encode(&self, text: &str) -> memfactory_core::Result<Vec<u32>> {
        self.inner.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> memfactory_core::Result<String> {
        self.inner.decode(ids)
    }
    fn prompt_ids(&self, p: &memfactory_core::Prompt) -> memfactory_core::Result<Vec<u32>> {
        self.inner.prompt_ids(p)
    }
    fn generate(
        &self,
        requests: &[memfactory_core::GenRequest],
    ) -> memfactory_core::Result<Vec<memfactory_core::Generation>> {
        if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(memfactory_core::Error::backend("lm", "device lost"));
        }
        self.inner.generate(requests)
    }
}

#[test]
fn a_failed_cached_build_is_forgotten_and_retried() {
    let lm = FlakyLm {
        inner: scripted(),
        fail: std::sync::atomic::AtomicBool::new(true),
    };
    let a = cache_agent();
    let stores = InMemoryFactory;
    let s1 = sample("q1", "Where?");
    let mut cxs = vec![EpisodeCx::new(
        &lm,
        stores.open("q1/0").unwrap(),
        "q1",
        0,
        1,
    )];
    let err = a.run_group(&s1, &mut cxs).unwrap_err().to_string();
    assert!(err.contains("device lost"), "{err}");
    let (eps, banks) = run_with(a.as_ref(), &lm, None, &sample("q2", "Where?"), 1, 2);
    assert_eq!(banks[0].len(), 1);
    assert!(trace(&eps[0]).contains(&format!(
        "note bank-cache: built {:016x}/0",
        dialogue_key(&dialogue())
    )));
}

#[test]
fn locomo_dialogues_render_and_share_one_cached_bank() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/locomo/locomo_conv26_conv30.json");
    if !path.exists() {
        println!("skipped: LoCoMo file {} is absent", path.display());
        return;
    }
    let convs = memfactory_data_locomo::read_conversations(&path, true).unwrap();
    let conv = &convs[0];
    let s1 = memfactory_data_locomo::qa_to_sample(conv, &conv.qa[0], None);
    let s2 = memfactory_data_locomo::qa_to_sample(conv, &conv.qa[1], None);
    let d = s1.dialogue.as_ref().unwrap();
    assert_eq!(dialogue_key(d), dialogue_key(s2.dialogue.as_ref().unwrap()));

    // Every turn is read exactly once, in order, sessions never mixed within a step.
    let all: Vec<&str> = d
        .sessions
        .iter()
        .flat_map(|s| s.turns.iter().map(|t| t.id.as_str()))
        .collect();
    let steps = memfactory_agent_memory_r1::dialogue_steps(d, 4, 0);
    let read: Vec<&str> = steps
        .iter()
        .flat_map(|s| s.turns.iter().map(|t| t.id.as_str()))
        .collect();
    assert_eq!(read, all);
    for s in &steps {
        assert!(s.turns.len() <= 4);
        let session = s.turns[0].id.split(':').next().unwrap();
        assert!(
            s.turns
                .iter()
                .all(|t| t.id.starts_with(&format!("{session}:")))
        );
    }

    // Empty extractions: 6 extraction calls and one answer, then only an answer.
    let lm = CountingLm::new(ScriptedLm::new(vec![], ""));
    let a = agent("bank_cache = true\nmax_turns = 6");
    let (e1, _) = run_with(a.as_ref(), &lm, None, &s1, 1, 1);
    let first = e1[0].lm_calls().next().unwrap();
    let memfactory_core::Prompt::Chat(m) = &first.prompt else {
        panic!("chat prompt expected")
    };
    let t = &d.sessions[0].turns[0];
    let date = d.sessions[0].date.as_deref().unwrap();
    assert_eq!(
        m[0].content,
        format!("EXTRACT\n[{}] {} ({date}): {}", t.id, t.speaker, t.text)
    );
    assert_eq!(lm.batches().len(), 7);
    run_with(a.as_ref(), &lm, None, &s2, 1, 2);
    assert_eq!(lm.batches().len(), 8);
}

#[test]
fn a_replayed_bank_carries_its_build_parse_errors() {
    // Format rewards must score an episode that reused a cached bank like the one that built
    // it: the build's parse errors are recorded again on replay.
    let lm = ScriptedLm::new(
        vec![
            rule(&["EXTRACT", "[D1:1]"], "Caroline|Caroline lives in Boston"),
            rule(&["EXTRACT", "[D1:2]"], "Melanie paints, I think"),
            rule(&["MANAGE"], "I would add this to the memory."),
            rule(&["ANSWER"], "Answer: Boston"),
        ],
        "",
    );
    let a = agent("max_turns = 2\nbank_cache = true");
    let (e1, _) = run_with(a.as_ref(), &lm, None, &sample("q1", "Where?"), 1, 3);
    let (e2, _) = run_with(a.as_ref(), &lm, None, &sample("q2", "Where?"), 1, 4);
    assert_eq!(e1[0].parse_errors(), 2);
    assert_eq!(e2[0].parse_errors(), 2);
    let t2 = trace(&e2[0]);
    assert!(
        t2.contains(
            &"edit test-manage: [] error unknown decision \"I would add this to the memory.\""
                .to_string()
        ),
        "{t2:#?}"
    );
    assert_eq!(e2[0].lm_calls().count(), 1, "only the answer is generated");
}
