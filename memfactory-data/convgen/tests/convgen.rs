//! The `convgen` data source end to end: registry build and strict keys, a small CSV written
//! here (determinism, answerability, gold operations, type shares, errors), and the real
//! Synthetic-Persona-Chat file from `../shared/data`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use memfactory_core::{DataSource, Error, LoadCx, MemoryStore, Recipe, Sample};
use memfactory_data_convgen::{
    ATTRIBUTES, Convgen, Generator, NOT_MENTIONED, OpKind, Params, QuestionType, SPEAKERS,
    gold_ops, parse_persona_chat, read_persona_chat, replay,
};
use memfactory_store_memory::InMemoryStore;
use serde_json::json;

fn build(src: &str) -> memfactory_core::Result<(Box<dyn DataSource>, toml::Table)> {
    let cfg = Recipe::parse(src, "<test>").unwrap().cfg();
    memfactory_core::registry::build::<dyn DataSource>(cfg)
}

fn load(src: &Convgen) -> memfactory_core::Result<Vec<Sample>> {
    src.load(&LoadCx::default())
}

/// A CSV quoted like the real file: `n` conversations of `lines` lines each, with a stage
/// direction and a `*User 1:*` line to skip or read.
fn small_csv(n: usize, lines: usize) -> String {
    let mut s = String::from("user 1 personas,user 2 personas,Best Generated Conversation\n");
    for c in 0..n {
        let mut conv = String::from("[They meet at a cafe]\n");
        for l in 0..lines {
            let who = l % 2 + 1;
            if l == 3 {
                conv.push_str(&format!(
                    "*User {who}:* Line {l} of chat {c}, with \"\"quotes\"\".\n"
                ));
            } else {
                conv.push_str(&format!("User {who}: Line {l} of chat {c}, hello.\n"));
            }
        }
        s.push_str(&format!(
            "\"I like tea.\nI have {c} cats.\",\"I run.\",\"{}\"\n",
            conv.trim_end()
        ));
    }
    s
}

fn small_file(dir: &Path) -> PathBuf {
    let p = dir.join("persona.csv");
    std::fs::write(&p, small_csv(8, 16)).unwrap();
    p
}

/// The shared Synthetic-Persona-Chat file, when this checkout has `../shared/data` beside it.
fn persona_file() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/persona_chat/Synthetic-Persona-Chat_valid.csv");
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "skipping: {} is absent (a fresh clone has no ../shared/data)",
            p.display()
        );
        None
    }
}

#[test]
fn not_mentioned_is_locomo_wording() {
    assert_eq!(NOT_MENTIONED, memfactory_data_locomo::ADVERSARIAL_ANSWER);
}

#[test]
fn attribute_tables_are_consistent() {
    let mut seen = BTreeSet::new();
    for s in SPEAKERS {
        assert!(seen.insert(s.to_string()), "duplicate {s}");
    }
    for a in ATTRIBUTES {
        assert!(a.values.len() >= 12, "{}", a.name);
        for v in a.values {
            assert!(
                seen.insert(v.to_string()),
                "{} value {v} is not unique",
                a.name
            );
        }
        for t in a.add {
            assert!(t.contains("{v}") || t.contains("{a}"), "{t}");
        }
        for t in a.update {
            assert!(t.contains("old}") && t.contains("new}"), "{t}");
        }
        for t in a.update_quiet {
            assert!(!t.contains("old}") && t.contains("new}"), "{t}");
        }
        for t in a.delete {
            assert!(t.contains("old}") && !t.contains("new}"), "{t}");
        }
        assert!(a.fact.contains("{who}"), "{}", a.name);
        for q in [a.ask, a.ask_now, a.descriptor] {
            assert!(!q.is_empty(), "{}", a.name);
        }
        if a.updatable() {
            assert!(a.ask_before.contains("new}"), "{}", a.name);
        }
        assert_eq!(a.update.is_empty(), a.update_quiet.is_empty(), "{}", a.name);
    }
    assert!(ATTRIBUTES.iter().filter(|a| a.event.is_some()).count() >= 3);
    assert!(ATTRIBUTES.iter().filter(|a| a.deletable()).count() >= 3);
    // 16 speaker-attribute pairs: a question uses at most two.
    assert!(2 * ATTRIBUTES.len() >= memfactory_data_convgen::MAX_DISTRACTOR_FACTS + 2);
}

#[test]
fn registry_builds_without_io_and_resolves_defaults() {
    let (src, resolved) =
        build("kind = \"convgen\"\npath = \"/nonexistent/persona.csv\"\n").unwrap();
    let d = src.describe();
    assert!(d.contains("/nonexistent/persona.csv"), "{d}");
    assert!(
        d.contains("100 samples") && d.contains("4 sessions of 10"),
        "{d}"
    );
    assert_eq!(resolved["kind"].as_str(), Some("convgen"));
    assert_eq!(resolved["samples"].as_integer(), Some(100));
    assert_eq!(resolved["seed"].as_integer(), Some(0));
    assert_eq!(resolved["offset"].as_integer(), Some(0));
    assert_eq!(resolved["sessions"].as_integer(), Some(4));
    assert_eq!(resolved["turns_per_session"].as_integer(), Some(10));
    assert_eq!(resolved["distractor_facts"].as_integer(), Some(3));
    let types: Vec<&str> = resolved["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "single-session",
            "multi-session",
            "knowledge-update",
            "temporal",
            "abstention"
        ]
    );

    let (src, _) = build(
        "kind = \"convgen\"\npath = \"x.csv\"\nsamples = 7\nseed = 3\noffset = 2\nsessions = 1\n\
         turns_per_session = 0\ndistractor_facts = 0\ntypes = [\"temporal\", \"abstention\"]\n",
    )
    .unwrap();
    let d = src.describe();
    assert!(d.contains("types [temporal, abstention]"), "{d}");
    assert!(d.contains("7 samples from index 2, seed 3"), "{d}");
}

#[test]
fn registry_rejects_bad_keys() {
    let err = |src: &str| build(src).err().unwrap().to_string();
    let e = err("kind = \"convgen\"\n");
    assert!(e.contains("`path`") && e.contains("missing"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"\"\n");
    assert!(e.contains("`path`"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\nsesions = 3\n");
    assert!(e.contains("`sesions`") && e.contains("unknown key"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\nsamples = 0\n");
    assert!(e.contains("`samples`") && e.contains("at least 1"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\nsamples = \"many\"\n");
    assert!(e.contains("`samples`"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\nsessions = 0\n");
    assert!(e.contains("`sessions`"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\nsessions = 1\n");
    assert!(
        e.contains("`sessions`") && e.contains("multi-session") && e.contains("at least 2"),
        "{e}"
    );
    let e = err("kind = \"convgen\"\npath = \"x\"\nsessions = 1\ntypes = [\"knowledge-update\"]\n");
    assert!(
        e.contains("`sessions`") && e.contains("knowledge-update"),
        "{e}"
    );
    let e = err("kind = \"convgen\"\npath = \"x\"\ntypes = [\"single-session\", \"trivia\"]\n");
    assert!(
        e.contains("`types`") && e.contains("`trivia`") && e.contains("abstention"),
        "{e}"
    );
    let e = err("kind = \"convgen\"\npath = \"x\"\ntypes = []\n");
    assert!(e.contains("`types`") && e.contains("at least one"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\ntypes = [\"temporal\", \"temporal\"]\n");
    assert!(e.contains("`types`") && e.contains("twice"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\ntypes = \"temporal\"\n");
    assert!(e.contains("`types`"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\ndistractor_facts = 13\n");
    assert!(e.contains("`distractor_facts`") && e.contains("12"), "{e}");
    let e = err("kind = \"convgen\"\npath = \"x\"\nturns_per_session = -1\n");
    assert!(e.contains("`turns_per_session`"), "{e}");
}

/// Checks every property the crate documents on `samples`.
fn check_samples(samples: &[Sample], params: &Params) {
    for s in samples {
        check_sample(s, params);
    }
}

fn turn_text<'a>(s: &'a Sample, id: &str) -> (&'a str, &'a str, String) {
    let d = s.dialogue.as_ref().unwrap();
    for sess in &d.sessions {
        for t in &sess.turns {
            if t.id == id {
                return (&t.text, &t.speaker, sess.date.clone().unwrap());
            }
        }
    }
    panic!("{}: evidence {id} is not a turn", s.id);
}

fn check_sample(s: &Sample, params: &Params) {
    let d = s.dialogue.as_ref().unwrap();
    let ty = s.category.clone().unwrap();
    assert_eq!(s.meta["type"], json!(ty));
    assert!(QuestionType::from_name(&ty).is_some(), "{ty}");
    assert!(s.context.is_empty());
    assert_eq!(d.speakers.len(), 2);
    assert_ne!(d.speakers[0], d.speakers[1]);
    assert_eq!(d.sessions.len(), params.sessions);

    // Structure: ids, dates, speakers, turn counts.
    let mut all_turns = Vec::new();
    for (i, sess) in d.sessions.iter().enumerate() {
        assert_eq!(sess.index, i + 1);
        let date = sess.date.as_deref().unwrap();
        assert!(
            date.contains(" on ") && (date.contains(" am ") || date.contains(" pm ")),
            "{date}"
        );
        assert!(sess.turns.len() >= params.turns_per_session);
        for (k, t) in sess.turns.iter().enumerate() {
            assert_eq!(t.id, format!("D{}:{}", i + 1, k + 1));
            assert!(d.speakers.contains(&t.speaker));
            assert!(!t.text.is_empty());
            all_turns.push((t, i + 1));
        }
    }

    // Gold operations: one per turn, in order; filler NOOP; a valid replay equal to
    // meta.facts.
    let ops = gold_ops(s).unwrap();
    assert_eq!(ops.len(), all_turns.len(), "{}", s.id);
    let mut evidence_turns = 0;
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    let mut ever_added: BTreeSet<String> = BTreeSet::new();
    for (op, (turn, session)) in ops.iter().zip(&all_turns) {
        assert_eq!(op.turn, turn.id);
        assert_eq!(op.session, *session);
        assert_eq!(op.speaker, turn.speaker);
        match op.op {
            OpKind::Noop => {
                assert!(op.key.is_none() && op.fact.is_none() && op.previous.is_none());
            }
            kind => {
                evidence_turns += 1;
                let key = op.key.clone().unwrap();
                let attr = op.attribute.clone().unwrap();
                assert_eq!(key, format!("{}/{attr}", op.speaker));
                match kind {
                    OpKind::Add => {
                        assert!(!ever_added.contains(&key), "{}: {key} added twice", s.id);
                        ever_added.insert(key.clone());
                        let v = op.value.as_deref().unwrap();
                        assert!(turn.text.contains(v), "{}: {} lacks {v}", s.id, turn.text);
                        live.insert(key, op.fact.clone().unwrap());
                    }
                    OpKind::Update => {
                        let before = live.get(&key).unwrap_or_else(|| {
                            panic!("{}: UPDATE of {key} not live at {}", s.id, op.turn)
                        });
                        assert_eq!(op.previous.as_ref(), Some(before));
                        let v = op.value.as_deref().unwrap();
                        assert!(turn.text.contains(v), "{}: {} lacks {v}", s.id, turn.text);
                        live.insert(key, op.fact.clone().unwrap());
                    }
                    OpKind::Delete => {
                        let before = live.remove(&key).unwrap_or_else(|| {
                            panic!("{}: DELETE of {key} not live at {}", s.id, op.turn)
                        });
                        assert_eq!(op.previous.as_ref(), Some(&before));
                        assert!(op.value.is_none() && op.fact.is_none());
                    }
                    OpKind::Noop => unreachable!(),
                }
            }
        }
    }
    let state = replay(&ops).unwrap();
    let facts: BTreeMap<String, String> = state
        .iter()
        .map(|(k, f)| (k.clone(), f.fact.clone()))
        .collect();
    assert_eq!(facts, live);
    assert_eq!(s.meta["facts"], json!(facts));
    // Filler turns are exactly `turns_per_session` per session.
    assert_eq!(
        all_turns.len() - evidence_turns,
        params.sessions * params.turns_per_session
    );

    // The same operations as MemoryEdits leave a store holding the final facts.
    let mut store = InMemoryStore::new();
    let edits: Vec<_> = ops.iter().map(|o| o.edit()).collect();
    let outcomes = store.apply(&edits).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| !matches!(o, memfactory_core::EditOutcome::Rejected(_))),
        "{}: {outcomes:?}",
        s.id
    );
    let items: BTreeMap<String, String> = store
        .items()
        .unwrap()
        .into_iter()
        .map(|i| (i.id, i.content))
        .collect();
    assert_eq!(items, facts);

    // The question is answerable from its evidence turns.
    let evidence: Vec<String> = serde_json::from_value(s.meta["evidence"].clone()).unwrap();
    let subject = s.meta["subject"].as_str().unwrap();
    let attribute = s.meta["attribute"].as_str().unwrap();
    let key = format!("{subject}/{attribute}");
    assert!(d.speakers.iter().any(|n| n == subject));
    assert!(!s.answers.is_empty());
    let answer = &s.answers[0];
    let texts: Vec<(&str, &str, String)> = evidence.iter().map(|e| turn_text(s, e)).collect();
    match ty.as_str() {
        "abstention" => {
            assert_eq!(s.answers, vec![NOT_MENTIONED.to_string()]);
            assert!(evidence.is_empty());
            assert!(
                !ops.iter().any(|o| o.key.as_deref() == Some(key.as_str())),
                "{}: the subject states {attribute}",
                s.id
            );
            let other = d.speakers.iter().find(|n| *n != subject).unwrap();
            assert!(
                ops.iter().any(
                    |o| o.key.as_deref() == Some(&format!("{other}/{attribute}"))
                        && o.op == OpKind::Add
                ),
                "{}: the other speaker never states {attribute}",
                s.id
            );
        }
        "temporal" => {
            assert_eq!(evidence.len(), 1);
            let date = &texts[0].2;
            assert!(date.ends_with(answer.as_str()), "{date} / {answer}");
            assert_eq!(s.answers[1], answer.replace(',', ""));
            assert_eq!(s.meta["date"], json!(date));
            assert!(s.question.starts_with(&format!("When did {subject} ")));
            let v = state[&key].value.clone();
            assert!(s.question.contains(&v), "{}", s.question);
        }
        other => {
            assert!(!evidence.is_empty());
            assert!(
                texts.iter().any(|(t, _, _)| t.contains(answer.as_str())),
                "{}: {answer} is in no evidence turn {texts:?}",
                s.id
            );
            // Every evidence turn is a fact turn of the subject.
            for e in &evidence {
                let op = ops.iter().find(|o| &o.turn == e).unwrap();
                assert_ne!(op.op, OpKind::Noop);
                assert_eq!(op.speaker, subject);
            }
            match other {
                "single-session" => {
                    assert_eq!(evidence.len(), 1);
                    assert_eq!(state[&key].value, *answer);
                    assert!(s.question.contains(subject));
                }
                "knowledge-update" => {
                    // The latest value, from replaying the gold operations.
                    assert_eq!(state[&key].value, *answer);
                    assert!(evidence.len() >= 2);
                    let kinds: Vec<OpKind> = evidence
                        .iter()
                        .map(|e| ops.iter().find(|o| &o.turn == e).unwrap().op)
                        .collect();
                    assert_eq!(kinds[0], OpKind::Add);
                    assert!(kinds[1..].iter().all(|k| *k == OpKind::Update));
                    let sessions: BTreeSet<&str> = evidence
                        .iter()
                        .map(|e| e.split(':').next().unwrap())
                        .collect();
                    assert_eq!(sessions.len(), evidence.len());
                }
                "multi-session" => {
                    assert_eq!(evidence.len(), 2);
                    let sessions: BTreeSet<&str> = evidence
                        .iter()
                        .map(|e| e.split(':').next().unwrap())
                        .collect();
                    assert_eq!(sessions.len(), 2, "{}: {evidence:?}", s.id);
                    match s.meta["form"].as_str().unwrap() {
                        "before-update" => {
                            // The answer is the old value; the update turn does not name it.
                            assert!(!texts[1].0.contains(answer.as_str()), "{:?}", texts[1]);
                            assert_ne!(state[&key].value, *answer);
                            assert!(s.question.contains(&state[&key].value));
                        }
                        "bridge" => {
                            assert_eq!(state[&key].value, *answer);
                            assert!(!s.question.contains(subject), "{}", s.question);
                            let by = s.meta["bridge_attribute"].as_str().unwrap();
                            let v = &state[&format!("{subject}/{by}")].value;
                            assert!(s.question.contains(v.as_str()), "{}", s.question);
                        }
                        f => panic!("form {f}"),
                    }
                }
                t => panic!("type {t}"),
            }
        }
    }
}

fn type_counts(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in samples {
        *out.entry(s.category.clone().unwrap()).or_default() += 1;
    }
    out
}

#[test]
fn small_file_samples_satisfy_every_property() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    for params in [
        Params::default(),
        Params {
            samples: 60,
            sessions: 2,
            turns_per_session: 3,
            distractor_facts: 12,
            ..Params::default()
        },
        Params {
            samples: 30,
            sessions: 1,
            turns_per_session: 0,
            distractor_facts: 5,
            types: vec![
                QuestionType::SingleSession,
                QuestionType::Temporal,
                QuestionType::Abstention,
            ],
            ..Params::default()
        },
        Params {
            samples: 40,
            sessions: 12,
            turns_per_session: 16,
            distractor_facts: 0,
            ..Params::default()
        },
    ] {
        let src = Convgen {
            params: params.clone(),
            ..Convgen::new(&path)
        };
        let samples = load(&src).unwrap();
        assert_eq!(samples.len(), params.samples);
        check_samples(&samples, &params);
    }
}

#[test]
fn same_seed_same_samples_and_ids_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let src = |seed: u64, offset: usize, samples: usize| Convgen {
        params: Params {
            seed,
            offset,
            samples,
            ..Params::default()
        },
        ..Convgen::new(&path)
    };
    let a = load(&src(5, 0, 20)).unwrap();
    let b = load(&src(5, 0, 20)).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let ids: Vec<&str> = a.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids[0], "convgen-5-0");
    assert_eq!(ids[19], "convgen-5-19");
    // An instance does not depend on offset or samples.
    let c = load(&src(5, 7, 3)).unwrap();
    assert_eq!(c[..], a[7..10]);
    assert_eq!(c[0].id, "convgen-5-7");
    // Another seed gives other instances.
    let d = load(&src(6, 0, 20)).unwrap();
    assert_eq!(d[0].id, "convgen-6-0");
    let differ = a
        .iter()
        .zip(&d)
        .filter(|(x, y)| x.dialogue != y.dialogue || x.question != y.question)
        .count();
    assert!(differ >= 19, "{differ}");
    let questions: BTreeSet<&str> = a.iter().map(|s| s.question.as_str()).collect();
    assert!(questions.len() >= 15, "{questions:?}");
}

#[test]
fn frozen_instances() {
    // A change here changes every generated instance: bump it only on purpose.
    let convs = parse_persona_chat(&small_csv(8, 16)).unwrap();
    let g = Generator::new(&convs, Params::default()).unwrap();
    let got: Vec<(String, String, Vec<String>)> = (0..5)
        .map(|i| {
            let s = g.sample(i);
            (s.id, s.question, s.answers)
        })
        .collect();
    let row = |id: &str, q: &str, a: &[&str]| {
        (
            id.to_string(),
            q.to_string(),
            a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let want = vec![
        row(
            "convgen-0-0",
            "Which city does Zara live in?",
            &["San Diego"],
        ),
        row(
            "convgen-0-1",
            "Which instrument did Ann play before the drums?",
            &["harp"],
        ),
        row(
            "convgen-0-2",
            "What does Victor do for work now?",
            &["accountant"],
        ),
        row(
            "convgen-0-3",
            "When did Sara start working as a pharmacist?",
            &["8 December, 2022", "8 December 2022"],
        ),
        row(
            "convgen-0-4",
            "Which instrument does Hugo play?",
            &[NOT_MENTIONED],
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn type_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let samples = load(&Convgen {
        params: Params {
            samples: 100,
            ..Params::default()
        },
        ..Convgen::new(&path)
    })
    .unwrap();
    let counts = type_counts(&samples);
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|c| *c == 20), "{counts:?}");
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.category.as_deref(), Some(QuestionType::ALL[i % 5].name()));
    }
    // Both multi-session forms occur, and both speakers are asked about.
    let forms: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.category.as_deref() == Some("multi-session"))
        .map(|s| s.meta["form"].as_str().unwrap())
        .collect();
    assert_eq!(forms, BTreeSet::from(["before-update", "bridge"]));
    let first_speaker = samples
        .iter()
        .filter(|s| s.meta["subject"] == json!(s.dialogue.as_ref().unwrap().speakers[0]))
        .count();
    assert!((25..=75).contains(&first_speaker), "{first_speaker}");
    // Knowledge updates sometimes need two updates (4 sessions).
    let long_chains = samples
        .iter()
        .filter(|s| s.category.as_deref() == Some("knowledge-update"))
        .filter(|s| s.meta["evidence"].as_array().unwrap().len() == 3)
        .count();
    assert!(long_chains > 0);
    // Every op kind occurs.
    let kinds: BTreeSet<OpKind> = samples
        .iter()
        .flat_map(|s| gold_ops(s).unwrap())
        .map(|o| o.op)
        .collect();
    assert_eq!(kinds.len(), 4);

    // A subset of types.
    let samples = load(&Convgen {
        params: Params {
            samples: 9,
            types: vec![QuestionType::Abstention, QuestionType::KnowledgeUpdate],
            ..Params::default()
        },
        ..Convgen::new(&path)
    })
    .unwrap();
    let counts = type_counts(&samples);
    assert_eq!(
        counts,
        BTreeMap::from([("abstention".into(), 5), ("knowledge-update".into(), 4)])
    );
}

#[test]
fn filler_comes_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let samples = load(&Convgen {
        params: Params {
            samples: 10,
            ..Params::default()
        },
        ..Convgen::new(&path)
    })
    .unwrap();
    for s in &samples {
        let ops = gold_ops(s).unwrap();
        let d = s.dialogue.as_ref().unwrap();
        let filler = s.meta["filler"].as_array().unwrap();
        assert_eq!(filler.len(), 4);
        // Sessions use distinct conversations (8 in the file, 4 sessions).
        let rows: BTreeSet<u64> = filler.iter().map(|f| f["row"].as_u64().unwrap()).collect();
        assert_eq!(rows.len(), 4);
        for (sess, f) in d.sessions.iter().zip(filler) {
            let row = f["row"].as_u64().unwrap() - 1;
            let first = f["first_line"].as_u64().unwrap();
            let lines: Vec<&str> = sess
                .turns
                .iter()
                .filter(|t| ops.iter().any(|o| o.turn == t.id && o.op == OpKind::Noop))
                .map(|t| t.text.as_str())
                .collect();
            assert_eq!(lines.len(), 10);
            for (k, l) in lines.iter().enumerate() {
                let n = first + k as u64;
                let expect = if n == 3 {
                    format!("Line {n} of chat {row}, with \"quotes\".")
                } else {
                    format!("Line {n} of chat {row}, hello.")
                };
                assert_eq!(*l, expect);
            }
            // `User 1` speaks as the first speaker.
            for t in sess.turns.iter().filter(|t| t.text.starts_with("Line ")) {
                let n: usize = t.text[5..].split(' ').next().unwrap().parse().unwrap();
                assert_eq!(t.speaker, d.speakers[n % 2]);
            }
        }
    }
}

#[test]
fn bad_files_name_the_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let data_err = |text: &str| -> (Option<String>, String) {
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, text).unwrap();
        match load(&Convgen::new(&p)).unwrap_err() {
            Error::Data {
                path,
                location,
                message,
            } => {
                assert_eq!(path, p);
                (location, message)
            }
            other => panic!("expected Error::Data, got {other:?}"),
        }
    };

    let missing = dir.path().join("missing.csv");
    let e = load(&Convgen::new(&missing)).unwrap_err();
    assert!(
        matches!(&e, Error::Data { path, .. } if path == &missing),
        "{e:?}"
    );
    assert!(e.to_string().contains("not found") && e.to_string().contains("missing.csv"));

    let (loc, msg) = data_err("");
    assert!(loc.is_none() && msg.contains("empty"), "{msg}");
    let header = "user 1 personas,user 2 personas,Best Generated Conversation\n";
    let (_, msg) = data_err(header);
    assert!(msg.contains("no conversation"), "{msg}");
    let (loc, msg) = data_err(&format!("{header}\"a\",\"b\",\"User 1: hi\nUser 2: open"));
    assert_eq!(loc.as_deref(), Some("line 2, column 9"));
    assert!(msg.contains("unterminated"), "{msg}");
    let (loc, msg) = data_err(&format!("{header}a,b,User 1: say \"hi\"\n"));
    assert_eq!(loc.as_deref(), Some("line 2, column 17"));
    assert!(msg.contains("double quote"), "{msg}");
    let (loc, msg) = data_err(&format!("{header}a,b,\"User 1: hi\",extra\n"));
    assert_eq!(loc.as_deref(), Some("record 1 (line 2)"));
    assert!(
        msg.contains("expected 3 fields") && msg.contains("found 4"),
        "{msg}"
    );
    let (loc, msg) = data_err("user 1 personas,user 2 personas,conversation\na,b,c\n");
    assert_eq!(loc.as_deref(), Some("line 1"));
    assert!(msg.contains("`Best Generated Conversation`"), "{msg}");
    let (_, msg) = data_err(&format!("{header}a,b,\"hello\nthere\"\n"));
    assert!(msg.contains("User 1:"), "{msg}");

    // Filler turns longer than every conversation: a recipe error naming the key.
    let path = small_file(dir.path());
    let (src, _) = build(&format!(
        "kind = \"convgen\"\npath = {:?}\nturns_per_session = 17\n",
        path.display().to_string()
    ))
    .unwrap();
    let e = src.load(&LoadCx::default()).unwrap_err();
    match &e {
        Error::Config { key, message } => {
            assert_eq!(key, "turns_per_session");
            assert!(message.contains("16 dialogue lines"), "{message}");
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    // 16 is fine.
    let (src, _) = build(&format!(
        "kind = \"convgen\"\npath = {:?}\nturns_per_session = 16\nsamples = 3\n",
        path.display().to_string()
    ))
    .unwrap();
    assert_eq!(src.load(&LoadCx::default()).unwrap().len(), 3);
}

#[test]
fn real_file_parses() {
    let Some(path) = persona_file() else { return };
    let convs = read_persona_chat(&path).unwrap();
    assert_eq!(convs.len(), 1000);
    assert_eq!(convs[0].row, 1);
    assert_eq!(convs[999].row, 1000);
    assert_eq!(convs[0].personas[0][0], "I love to bake cookies.");
    assert_eq!(convs[0].personas[0].len(), 4);
    assert_eq!(
        convs[0].personas[1][3],
        "I was born with my heart outside my body."
    );
    assert_eq!(convs[0].lines[0].text, "Hi!");
    assert_eq!(convs[0].lines[0].speaker, 0);
    assert_eq!(convs[0].lines[1].text, "Hello!");
    assert_eq!(convs[0].lines[1].speaker, 1);
    assert_eq!(convs[0].lines.len(), 25);
    assert!(convs.iter().all(|c| !c.lines.is_empty()));
    assert!(
        convs
            .iter()
            .all(|c| c.personas.iter().all(|p| !p.is_empty()))
    );
    let lines: usize = convs.iter().map(|c| c.lines.len()).sum();
    // 27,777 `User N:` lines, 73 of them written `*User N:*`.
    assert_eq!(lines, 27_777, "{lines}");
    assert!(
        convs
            .iter()
            .flat_map(|c| &c.lines)
            .all(|l| !l.text.starts_with('*') && !l.text.to_lowercase().starts_with("user ")),
    );
    let long = convs.iter().filter(|c| c.lines.len() >= 10).count();
    assert!(long >= 990, "{long}");
}

#[test]
fn real_file_samples_satisfy_every_property() {
    let Some(path) = persona_file() else { return };
    for params in [
        Params {
            samples: 200,
            seed: 11,
            ..Params::default()
        },
        Params {
            samples: 50,
            sessions: 8,
            turns_per_session: 20,
            distractor_facts: 8,
            ..Params::default()
        },
    ] {
        let src = Convgen {
            params: params.clone(),
            ..Convgen::new(&path)
        };
        let a = load(&src).unwrap();
        assert_eq!(a, load(&src).unwrap());
        check_samples(&a, &params);
        let counts = type_counts(&a);
        let n = params.samples / 5;
        assert!(counts.values().all(|c| *c == n), "{counts:?}");
    }
}

#[test]
fn sizes_are_bounded_before_samples_are_built() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_file(dir.path())
        .display()
        .to_string()
        .replace('\\', "/");
    // A dialogue of a trillion sessions is refused at build (it aborted at load).
    let e = build(&format!(
        "kind = \"convgen\"\npath = \"{p}\"\nsessions = 1000000000000\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("`sessions`") && e.contains("at most 10000"),
        "{e}"
    );
    // A trillion samples: a limit builds only the first ones, the same as a small load.
    let (many, _) = build(&format!(
        "kind = \"convgen\"\npath = \"{p}\"\nsamples = 1000000000000\n"
    ))
    .unwrap();
    let first = many.load_first(&LoadCx::default(), 2).unwrap();
    let (two, _) = build(&format!(
        "kind = \"convgen\"\npath = \"{p}\"\nsamples = 2\n"
    ))
    .unwrap();
    assert_eq!(first, two.load(&LoadCx::default()).unwrap());
    assert_eq!(two.load_first(&LoadCx::default(), 5).unwrap().len(), 2);
    // Without a limit the load is refused, naming `samples`, after one instance.
    match many.load(&LoadCx::default()).unwrap_err() {
        Error::Config { key, message } => {
            assert_eq!(key, "samples");
            assert!(message.contains("1000000000000 samples"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
