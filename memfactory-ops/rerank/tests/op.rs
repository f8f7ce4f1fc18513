//! The rerank op in episodes: learned selection (deterministic and Gumbel), online updates,
//! adapter files, the LLM listwise method in lockstep, and config errors.

use memfactory_core::{
    Cfg, Embedder, EpisodeCx, LanguageModel, MemoryItem, MemoryOp, OpInput, Step, StoreFactory,
    registry,
};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_rerank::{
    Feedback, Reranker, parse_ranking, render_memory_list, render_memory_list_with_turns,
};
use memfactory_store_memory::InMemoryFactory;
use memfactory_testkit::BagOfWords;
use memfactory_testkit::CountingLm;

/// Bag-of-words counts over a fixed vocabulary (deterministic test embedder).
static BOW: BagOfWords = BagOfWords(&["paris", "dog", "cat", "travel", "music", "work"]);

fn reranker(src: &str) -> Reranker {
    let mut cfg = Cfg::new("agent.rerank", toml::from_str(src).unwrap());
    let r = Reranker::from_cfg(&mut cfg).unwrap();
    cfg.finish().unwrap();
    r
}

fn build_err(src: &str) -> String {
    registry::build::<dyn MemoryOp>(Cfg::new("agent.rerank", toml::from_str(src).unwrap()))
        .err()
        .unwrap()
        .to_string()
}

fn item(id: &str, text: &str, emb: bool) -> MemoryItem {
    let mut it = MemoryItem::new(id, text);
    if emb {
        it.embedding = Some(BOW.embed(&[text]).unwrap().remove(0));
    }
    it
}

fn candidates() -> Vec<MemoryItem> {
    vec![
        item("a", "work work", true),
        item("b", "paris travel", true),
        item("c", "dog", false), // no embedding: the op embeds it
        item("d", "paris", true),
    ]
}

fn cxs<'a>(
    lm: &'a dyn LanguageModel,
    emb: Option<&'a dyn Embedder>,
    n: usize,
) -> Vec<EpisodeCx<'a>> {
    (0..n)
        .map(|p| {
            EpisodeCx::new(
                lm,
                InMemoryFactory.open("s").unwrap(),
                "s",
                p,
                40 + p as u64,
            )
            .with_embedder(emb)
        })
        .collect()
}

fn ids(items: &[MemoryItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

#[test]
fn deterministic_top_m_by_dot_product_with_zero_adapters() {
    let lm = ScriptedLm::new(vec![], "");
    let r = reranker("init = \"zero\"\nsample = false\ntop_m = 2");
    let mut cx = cxs(&lm, Some(&BOW), 1);
    let mem = candidates();
    let input = OpInput {
        question: "paris travel tips",
        observation: "",
        memory: &mem,
    };
    let out = r.rerank_batch(&mut cx, &[input]).unwrap().remove(0);
    // q = paris + travel: scores a 0, b 2, c 0, d 1.
    assert_eq!(ids(&out.output.items), ["b", "d"]);
    assert_eq!(out.output.items[0].meta["score"], "2.000000");
    assert_eq!(out.output.items[0].meta["rank"], "1");
    assert_eq!(out.output.items[1].meta["candidate"], "3");
    let trace = out.trace.unwrap();
    assert_eq!(trace.chosen, [1, 3]);
    assert_eq!(trace.candidates[2], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    assert!(
        cx[0].episode.steps.is_empty(),
        "the learned method makes no LM call"
    );
    assert_eq!(r.weights().unwrap().dim, 6, "dim taken from the embedder");
    // Fewer candidates than top_m: all kept.
    let out = r
        .run(
            &mut cx[0],
            OpInput {
                question: "dog",
                observation: "",
                memory: &mem[..1],
            },
        )
        .unwrap();
    assert_eq!(ids(&out.items), ["a"]);
}

#[test]
fn gumbel_selection_is_a_function_of_episode_seed_and_steps() {
    let lm = ScriptedLm::new(vec![], "");
    let mem: Vec<MemoryItem> = (0..8)
        .map(|i| {
            item(
                &format!("m{i}"),
                ["paris", "dog", "cat", "music"][i % 4],
                true,
            )
        })
        .collect();
    let run = |r: &Reranker, seed_path: usize, notes: usize| {
        let mut cx = cxs(&lm, Some(&BOW), seed_path + 1);
        let mut cx = cx.remove(seed_path);
        for _ in 0..notes {
            cx.note("x", "y");
        }
        let out = r
            .run(
                &mut cx,
                OpInput {
                    question: "paris music",
                    observation: "",
                    memory: &mem,
                },
            )
            .unwrap();
        ids(&out.items).join(",")
    };
    let r = reranker("temperature = 2.0\ntop_m = 4");
    let a = run(&r, 0, 0);
    assert_eq!(a, run(&r, 0, 0), "same seed and history, same draw");
    let draws: std::collections::BTreeSet<String> = (0..6)
        .flat_map(|p| [run(&r, p, 0), run(&r, p, 3)])
        .collect();
    assert!(
        draws.len() > 1,
        "the noise never changed the selection: {draws:?}"
    );
    // Deterministic top-M: ties (four items score 1) keep candidate order.
    let det = reranker("sample = false\ntop_m = 4\ninit = \"zero\"");
    assert_eq!(run(&det, 0, 0), "m0,m3,m4,m7");
    // A tiny temperature reduces Gumbel top-M to top-M by score (distinct scores).
    let mem: Vec<MemoryItem> = ["dog", "paris music travel", "cat", "paris", "travel music"]
        .iter()
        .enumerate()
        .map(|(i, t)| item(&format!("n{i}"), t, true))
        .collect();
    let pick = |r: &Reranker, p: usize| {
        let mut cx = cxs(&lm, Some(&BOW), p + 1).remove(p);
        let out = r
            .run(
                &mut cx,
                OpInput {
                    question: "paris music travel",
                    observation: "",
                    memory: &mem,
                },
            )
            .unwrap();
        ids(&out.items).join(",")
    };
    let cold = reranker("temperature = 1e-9\ntop_m = 3\ninit = \"zero\"");
    let det = reranker("sample = false\ntop_m = 3\ninit = \"zero\"");
    for p in 0..4 {
        assert_eq!(pick(&cold, p), "n1,n4,n3");
    }
    assert_eq!(pick(&det, 0), "n1,n4,n3");
}

#[test]
fn learned_method_needs_an_embedder() {
    let lm = ScriptedLm::new(vec![], "");
    let r = reranker("");
    let mut cx = cxs(&lm, None, 1);
    let mem = candidates();
    let err = r
        .run(
            &mut cx[0],
            OpInput {
                question: "q",
                observation: "",
                memory: &mem,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[embedder]") && err.contains("op rerank"),
        "{err}"
    );
}

#[test]
fn reinforce_raises_the_cited_memory() {
    let lm = ScriptedLm::new(vec![], "");
    let r = reranker("init = \"zero\"\nsample = false\ntop_m = 2\nlr = 0.05\ntemperature = 1.0");
    let mem = vec![
        item("x", "paris travel", true),
        item("y", "paris music", true),
        item("z", "dog cat", true),
    ];
    let select = |r: &Reranker| {
        let mut cx = cxs(&lm, Some(&BOW), 1);
        r.rerank_batch(
            &mut cx,
            &[OpInput {
                question: "paris",
                observation: "",
                memory: &mem,
            }],
        )
        .unwrap()
        .remove(0)
    };
    let first = select(&r);
    // x and y tie (score 1); ties keep retriever order.
    assert_eq!(ids(&first.output.items), ["x", "y"]);
    let trace = first.trace.unwrap();
    let scores0 = r.weights().unwrap().scores(&trace.query, &trace.candidates);
    // The answer cited y (rank 2) but not x (rank 1).
    let fb = trace.feedback(vec![-1.0, 1.0]);
    r.reinforce(std::slice::from_ref(&fb)).unwrap();
    let scores1 = r.weights().unwrap().scores(&trace.query, &trace.candidates);
    assert!(scores1[1] > scores0[1], "{scores0:?} -> {scores1:?}");
    assert!(scores1[0] < scores0[0], "{scores0:?} -> {scores1:?}");
    assert_eq!(r.updates(), 1);
    assert_eq!(r.baseline(), 0.0, "mean reward 0 leaves b at 0");
    for _ in 0..20 {
        r.reinforce(std::slice::from_ref(&fb)).unwrap();
    }
    let after = select(&r);
    assert_eq!(
        ids(&after.output.items)[0],
        "y",
        "the cited memory now ranks first"
    );

    // Baseline: b <- 0.9 b + 0.1 mean(r), per feedback.
    let r2 = reranker("init = \"zero\"\nsample = false");
    let all_cited = trace.feedback(vec![1.0, 1.0]);
    r2.reinforce(&[all_cited.clone(), all_cited]).unwrap();
    assert!((r2.baseline() - 0.19).abs() < 1e-12, "{}", r2.baseline());

    // Broken feedback is an API error, not a panic.
    let bad = Feedback {
        chosen: vec![0, 7],
        ..fb.clone()
    };
    assert!(
        r.reinforce(&[bad])
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
    let llm = reranker("method = \"llm\"");
    assert!(llm.reinforce(&[fb]).is_err());
}

#[test]
fn adapters_are_saved_atomically_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapters.json");
    let src = format!(
        "state_path = {:?}\ninit_seed = 5\nlr = 0.1",
        path.to_str().unwrap()
    );
    let r = reranker(&src);
    r.save().unwrap();
    assert!(!path.exists(), "nothing to save before first use");
    let fb = Feedback {
        query: vec![1.0, 0.0, 0.5],
        candidates: vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]],
        chosen: vec![1, 0],
        rewards: vec![1.0, -1.0],
    };
    r.reinforce(&[fb]).unwrap();
    r.save().unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["adapters.json"], "no temporary file left");
    let back = reranker(&src);
    assert_eq!(back.weights(), r.weights());
    assert_eq!(back.updates(), 1);
    assert_eq!(back.baseline(), r.baseline());
    assert_ne!(
        back.weights().unwrap(),
        memfactory_op_rerank::Adapters::normal(3, 0.01, 5),
        "the update moved the weights"
    );

    // The loaded dim (3) disagrees with the embedder (6): an error naming the key.
    let lm = ScriptedLm::new(vec![], "");
    let mut cx = cxs(&lm, Some(&BOW), 1);
    let mem = candidates();
    let err = back
        .run(
            &mut cx[0],
            OpInput {
                question: "paris",
                observation: "",
                memory: &mem,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agent.rerank.state_path") && err.contains("dim 3"),
        "{err}"
    );

    std::fs::write(&path, "{not json").unwrap();
    let err = build_err(&format!("kind = \"rerank\"\n{src}"));
    assert!(err.contains("agent.rerank.state_path"), "{err}");
}

#[test]
fn ranking_parser_is_forgiving_and_strict_about_numbers() {
    assert_eq!(
        parse_ranking("[2] > [0] > [3]", 4),
        (vec![2, 0, 3, 1], None)
    );
    assert_eq!(parse_ranking("Ranking: [1], [1], [3]", 4).0, [1, 3, 0, 2]);
    assert_eq!(parse_ranking("2 > 0", 3), (vec![2, 0, 1], None));
    // Bracketed numbers win over bare ones (the "3" of the prose is not a rank).
    assert_eq!(
        parse_ranking("Of the 3 memories: [1] > [0]", 3).0,
        [1, 0, 2]
    );
    let (order, err) = parse_ranking("[7] > [1]", 3);
    assert_eq!(order, [1, 0, 2]);
    assert!(err.unwrap().contains('7'));
    let (order, err) = parse_ranking("I cannot rank these.", 3);
    assert_eq!(order, [0, 1, 2]);
    assert!(err.unwrap().contains("retriever order"));
}

#[test]
fn llm_method_ranks_in_one_lockstep_call() {
    let rule = |q: &str, reply: &str| Rule {
        contains: vec![format!("Question: {q}"), "Ranking:".into()],
        reply: reply.into(),
    };
    let lm = CountingLm::new(ScriptedLm::new(
        vec![rule("first", "[2] > [0]"), rule("third", "no idea")],
        "",
    ));
    let r = reranker("method = \"llm\"\ntop_m = 2");
    let mut cxs = cxs(&lm, None, 3);
    let mem = candidates();
    let inputs = [
        OpInput {
            question: "first",
            observation: "",
            memory: &mem,
        },
        // One candidate: nothing to rank, no LM call for this episode.
        OpInput {
            question: "second",
            observation: "",
            memory: &mem[..1],
        },
        OpInput {
            question: "third",
            observation: "",
            memory: &mem[..3],
        },
    ];
    let out = r.run_batch(&mut cxs, &inputs).unwrap();
    assert_eq!(
        lm.batches(),
        [2],
        "one call for the two episodes that need it"
    );
    assert_eq!(ids(&out[0].items), ["c", "a"]);
    assert_eq!(out[0].items[0].meta["score"], "1.000000");
    assert_eq!(out[0].items[1].meta["score"], "0.500000");
    assert_eq!(out[0].parse_error, None);
    assert_eq!(ids(&out[1].items), ["a"]);
    assert_eq!(ids(&out[2].items), ["a", "b"], "malformed: retriever order");
    assert!(out[2].parse_error.is_some());
    // Each call is recorded on its own episode (the cxs were swapped back in place).
    let roles = |cx: &EpisodeCx<'_>| -> Vec<String> {
        cx.episode
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Lm(c) => Some(format!("{}:{}", c.role, c.output.text)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(cxs[0].episode.path, 0);
    assert_eq!(roles(&cxs[0]), ["rerank:[2] > [0]"]);
    assert!(roles(&cxs[1]).is_empty());
    assert_eq!(roles(&cxs[2]), ["rerank:no idea"]);
    assert_eq!(cxs[2].episode.path, 2);
}

#[test]
fn memory_list_format() {
    let mut a = MemoryItem::new("a", "likes dogs");
    a.speaker = Some("Mel".into());
    a.time = Some("8 May 2023".into());
    let b = MemoryItem::new("b", "plain");
    assert_eq!(
        render_memory_list(&[a, b]),
        "[0] (Mel, 8 May 2023) likes dogs\n[1] plain"
    );
}

#[test]
fn memory_list_with_turns_is_bounded_per_memory() {
    let mut a = MemoryItem::new("a", "Mel likes dogs");
    a.speaker = Some("Mel".into());
    // Three turns of 20, 20 and 19 characters (é is one character).
    a.meta.insert(
        "dialogue".into(),
        "[D1:1] Mel: I'm Mél.\n[D1:2] Mel: dogs!!!!\n\n[D1:3] Mel: so cute".into(),
    );
    let b = MemoryItem::new("b", "plain");
    let items = [a, b];
    let whole = "[0] (Mel) Mel likes dogs\n    [D1:1] Mel: I'm Mél.\n    [D1:2] Mel: dogs!!!!\n    \
                 [D1:3] Mel: so cute\n[1] plain";
    // 0 = no bound; a budget of all 59 characters shows every turn too.
    assert_eq!(render_memory_list_with_turns(&items, 0), whole);
    assert_eq!(render_memory_list_with_turns(&items, 59), whole);
    // 58: the last turn is cut by one character.
    assert!(
        render_memory_list_with_turns(&items, 58).contains("    [D1:3] Mel: so cut…\n[1] plain")
    );
    // 25: the first turn whole, the second cut to 5 characters, the third counted.
    assert_eq!(
        render_memory_list_with_turns(&items, 25),
        "[0] (Mel) Mel likes dogs\n    [D1:1] Mel: I'm Mél.\n    [D1:2…\n    (+1 more turn)\n[1] plain"
    );
    // 20: the first turn exactly fills it; nothing left to cut into.
    assert_eq!(
        render_memory_list_with_turns(&items, 20),
        "[0] (Mel) Mel likes dogs\n    [D1:1] Mel: I'm Mél.\n    (+2 more turns)\n[1] plain"
    );
    // Without raw turns it is the summary list.
    assert_eq!(
        render_memory_list_with_turns(&items[1..], 5),
        render_memory_list(&items[1..])
    );
}

#[test]
fn config_errors_name_keys() {
    let e = build_err("kind = \"rerank\"\nmethod = \"bm25\"");
    assert!(
        e.contains("agent.rerank.method") && e.contains("learned"),
        "{e}"
    );
    let e = build_err("kind = \"rerank\"\ntemperature = 0.0");
    assert!(e.contains("agent.rerank.temperature"), "{e}");
    let e = build_err("kind = \"rerank\"\ntop_m = 0");
    assert!(e.contains("agent.rerank.top_m"), "{e}");
    let e = build_err("kind = \"rerank\"\nmethod = \"llm\"\nlr = 0.1");
    assert!(
        e.contains("agent.rerank.lr") && e.contains("unknown key"),
        "{e}"
    );
    let e = build_err("kind = \"rerank\"\nbaseline = \"ema\"");
    assert!(e.contains("agent.rerank.baseline"), "{e}");
    let e = build_err("kind = \"rerank\"\ninit = \"zero\"\ninit_seed = 3");
    assert!(e.contains("agent.rerank.init_seed"), "{e}");
    let (_, resolved) = registry::build::<dyn MemoryOp>(Cfg::new(
        "agent.rerank",
        toml::from_str("kind = \"rerank\"").unwrap(),
    ))
    .unwrap();
    assert_eq!(resolved["method"].as_str(), Some("learned"));
    assert_eq!(resolved["temperature"].as_float(), Some(0.5));
    assert_eq!(resolved["top_m"].as_integer(), Some(5));
}
