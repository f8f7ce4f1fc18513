//! Stage `manager-turn` with scripted models and the test ops: every path starts from the
//! teacher's snapshot of the turns before the linked turn, the policy only manages the
//! turn's facts (no extraction), the tuple file is written once and reused (a changed
//! teacher or changed data builds anew), concurrent groups share one build, and the recipe
//! errors name their keys.

mod common;

#[allow(unused_imports)]
use common::{CountingLm as _, recipe};

use std::path::Path;

use memfactory_agent_memory_r1::turns::{SNAPSHOT_OP, TurnTuple};
use memfactory_core::{
    Cfg, Dialogue, Episode, EpisodeCx, LanguageModel, MemoryEdit, MemoryItem, Paradigm, Sample,
    Session, Step, StoreFactory, Turn, registry,
};
use memfactory_lm_scripted::ScriptedLm;
use memfactory_store_memory::InMemoryFactory;

/// The agent table: test ops for the policy and the teacher, the teacher's scripted model.
fn table(dir: &Path, history: usize, extra: &str) -> String {
    format!(
        "kind = \"memory-r1\"\nstage = \"manager-turn\"\npaths = 3\n{extra}\n\
         [extract]\nkind = \"test-extract\"\n\
         [related]\nkind = \"test-retrieve\"\nk = 5\n\
         [manage]\nkind = \"test-manage\"\n\
         [retrieve]\nkind = \"test-retrieve\"\nk = 30\nper_speaker = true\n\
         [answer]\nkind = \"test-distill\"\n\
         [teacher]\nhistory_turns = {history}\ntuples_dir = {dir:?}\n\
         [teacher.extract]\nkind = \"test-extract\"\n\
         [teacher.related]\nkind = \"test-retrieve\"\n\
         [teacher.manage]\nkind = \"test-manage\"\n\
         [teacher.model]\nkind = \"scripted\"\n\
         rules = [\n\
           {{ contains = [\"EXTRACT\", \"[D1:1]\"], reply = \"Caroline|Caroline lives in Boston\" }},\n\
           {{ contains = [\"EXTRACT\", \"[D1:2]\"], reply = \"Melanie|Melanie paints on weekends\" }},\n\
           {{ contains = [\"EXTRACT\", \"[D2:1]\"], reply = \"Caroline|Caroline moved to Seattle\" }},\n\
           {{ contains = [\"MANAGE\"], reply = \"ADD {{between:fact: |\\n}}\" }},\n\
         ]\n",
        dir = dir.display().to_string()
    )
}

fn agent(src: &str) -> Box<dyn Paradigm> {
    let cfg = Cfg::new("agent", toml::from_str(src).unwrap());
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

fn dialogue(first: &str) -> Dialogue {
    Dialogue {
        speakers: vec!["Caroline".into(), "Melanie".into()],
        sessions: vec![
            Session {
                index: 1,
                date: Some("8 May, 2023".into()),
                turns: vec![
                    turn("D1:1", "Caroline", first),
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

fn sample(id: &str, linked: Option<&str>, first: &str) -> Sample {
    let mut s = Sample::text(
        id,
        "Where does Caroline live now?",
        "",
        vec!["Seattle".into()],
    );
    s.dialogue = Some(dialogue(first));
    if let Some(t) = linked {
        s.meta.insert("linked_turn".into(), serde_json::json!(t));
    }
    s
}

/// The policy: three different manager decisions for the three paths of the one fact,
/// then three answers.
fn policy() -> ScriptedLm {
    ScriptedLm::replay(vec![
        "UPDATE 0 Caroline moved from Boston to Seattle".into(),
        "NOOP".into(),
        "DELETE 0".into(),
        "Relevant: 0\nAnswer: Seattle".into(),
        "Relevant: 0\nAnswer: Boston".into(),
        "Answer: unknown".into(),
    ])
}

fn run(
    agent: &dyn Paradigm,
    lm: &dyn LanguageModel,
    sample: &Sample,
) -> memfactory_core::Result<(Vec<Episode>, Vec<Vec<MemoryItem>>)> {
    let stores = InMemoryFactory;
    let mut cxs: Vec<EpisodeCx<'_>> = (0..agent.paths())
        .map(|p| {
            EpisodeCx::new(
                lm,
                stores.open(&format!("{}/{p}", sample.id)).unwrap(),
                &sample.id,
                p,
                11 + p as u64,
            )
        })
        .collect();
    agent.run_group(sample, &mut cxs)?;
    let banks = cxs.iter().map(|cx| cx.memory().unwrap()).collect();
    Ok((
        cxs.into_iter().map(EpisodeCx::into_episode).collect(),
        banks,
    ))
}

fn snapshot_of(ep: &Episode) -> Vec<String> {
    let mut found = ep.steps.iter().filter_map(|s| match s {
        Step::Edit { op, edits, .. } if op == SNAPSHOT_OP => Some(
            edits
                .iter()
                .map(|e| match e {
                    MemoryEdit::Add { item } => format!("{} {}", item.id, item.content),
                    other => panic!("snapshot holds {other:?}"),
                })
                .collect::<Vec<_>>(),
        ),
        _ => None,
    });
    let snap = found.next().expect("no snapshot step");
    assert!(found.next().is_none(), "two snapshot steps");
    snap
}

fn note<'e>(ep: &'e Episode, label: &str) -> &'e str {
    ep.steps
        .iter()
        .find_map(|s| match s {
            Step::Note { label: l, text } if l == label => Some(text.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no note {label}"))
}

fn roles(ep: &Episode) -> Vec<&str> {
    ep.lm_calls().map(|c| c.role.as_str()).collect()
}

fn tuples(file: &Path) -> Vec<TurnTuple> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["format"], "memory-r1-turns/1");
    lines.map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn only_file(dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn the_group_starts_from_one_teacher_snapshot_and_only_manages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tuples");
    let a = agent(&table(&dir, 2, ""));
    let lm = policy();
    let (eps, banks) = run(
        a.as_ref(),
        &lm,
        &sample("q1", Some("D2:1"), "I live in Boston."),
    )
    .unwrap();
    assert_eq!(eps.len(), 3);
    // Same starting snapshot on every path: the teacher's bank of D1:1 and D1:2.
    let want = vec![
        "m1 Caroline lives in Boston".to_string(),
        "m2 Melanie paints on weekends".to_string(),
    ];
    for ep in &eps {
        assert_eq!(snapshot_of(ep), want);
        // The policy never extracts: one manage call (the turn's one fact), one answer.
        assert_eq!(roles(ep), ["manage", "answer"]);
        assert!(note(ep, "turn-tuple").contains("D2:1 built: 2 memories from 2 turns, 1 facts"));
        assert_eq!(
            note(ep, "facts"),
            "[D2:1] [{\"fact\":\"Caroline moved to Seattle\",\"speaker\":\"Caroline\"}]"
        );
    }
    // Each path's edits went to its own copy.
    let contents = |b: &Vec<MemoryItem>| b.iter().map(|m| m.content.clone()).collect::<Vec<_>>();
    assert_eq!(
        contents(&banks[0]),
        [
            "Caroline moved from Boston to Seattle",
            "Melanie paints on weekends"
        ]
    );
    assert_eq!(
        contents(&banks[1]),
        ["Caroline lives in Boston", "Melanie paints on weekends"]
    );
    assert_eq!(contents(&banks[2]), ["Melanie paints on weekends"]);
    let answers: Vec<_> = eps.iter().map(|e| e.answer.clone().unwrap()).collect();
    assert_eq!(answers, ["Seattle", "Boston", "unknown"]);

    // The tuple file: a header and one tuple.
    let file = only_file(&dir);
    let t = tuples(&file);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].turn.as_str(), t[0].turn_index, t[0].history),
        ("D2:1", 2, 2)
    );
    assert_eq!(t[0].snapshot.len(), 2);
    assert_eq!(t[0].facts[0].content, "Caroline moved to Seattle");
    assert_eq!(t[0].teacher_parse_errors, 0);

    // Reused by a new agent with the same teacher: the file is read, not rebuilt (an edited
    // snapshot shows through).
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("Caroline lives in Boston", "Caroline lives in Denver"),
    )
    .unwrap();
    let b = agent(&table(&dir, 2, ""));
    let (eps, _) = run(
        b.as_ref(),
        &policy(),
        &sample("q1", Some("D2:1"), "I live in Boston."),
    )
    .unwrap();
    assert_eq!(snapshot_of(&eps[0])[0], "m1 Caroline lives in Denver");
    assert!(note(&eps[0], "turn-tuple").contains(" reused: "));

    // Changed data (turn D1:1's text): a new tuple, appended to the same file.
    let (eps, _) = run(
        b.as_ref(),
        &policy(),
        &sample("q1", Some("D2:1"), "I live in Boston!"),
    )
    .unwrap();
    assert_eq!(snapshot_of(&eps[0])[0], "m1 Caroline lives in Boston");
    assert_eq!(tuples(&file).len(), 2);

    // A changed teacher (history of one turn): another file, a snapshot of D1:2 only.
    let c = agent(&table(&dir, 1, ""));
    let (eps, _) = run(
        c.as_ref(),
        &policy(),
        &sample("q1", Some("D2:1"), "I live in Boston."),
    )
    .unwrap();
    assert_eq!(snapshot_of(&eps[0]), ["m1 Melanie paints on weekends"]);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);

    // A torn last line (a kill while writing) is ignored and rebuilt.
    let d = tmp.path().join("torn");
    std::fs::create_dir_all(&d).unwrap();
    let a = agent(&table(&d, 2, ""));
    run(
        a.as_ref(),
        &policy(),
        &sample("q1", Some("D2:1"), "I live in Boston."),
    )
    .unwrap();
    let f = only_file(&d);
    let whole = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, format!("{whole}{{\"key\":\"00")).unwrap();
    let a = agent(&table(&d, 2, ""));
    run(
        a.as_ref(),
        &policy(),
        &sample("q1", Some("D1:2"), "I live in Boston."),
    )
    .unwrap();
    // A malformed whole line is a data error naming the file.
    std::fs::write(&f, format!("{whole}not json\n")).unwrap();
    let a = agent(&table(&d, 2, ""));
    let e = run(
        a.as_ref(),
        &policy(),
        &sample("q1", Some("D2:1"), "I live in Boston."),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains(&f.display().to_string()) && e.contains("line 3"),
        "{e}"
    );
}

#[test]
fn concurrent_groups_share_one_build() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(&table(tmp.path(), 2, ""));
    let snaps: Vec<Vec<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let a = a.as_ref();
                s.spawn(move || {
                    let lm = policy();
                    let (eps, _) = run(
                        a,
                        &lm,
                        &sample(&format!("q{i}"), Some("D2:1"), "I live in Boston."),
                    )
                    .unwrap();
                    snapshot_of(&eps[0])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(snaps.iter().all(|s| s == &snaps[0]), "{snaps:?}");
    assert_eq!(tuples(&only_file(tmp.path())).len(), 1);
}

#[test]
fn recipe_and_data_errors_name_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(&table(tmp.path(), 2, ""));
    // Data without evidence links.
    let e = run(a.as_ref(), &policy(), &sample("q1", None, "x"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("agent.stage") && e.contains("link_turn"), "{e}");
    let e = run(a.as_ref(), &policy(), &sample("q1", Some("D9:9"), "x"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("agent.stage") && e.contains("D9:9"), "{e}");

    let e = build_err(&recipe("stage = \"per-turn\""));
    assert!(
        e.contains("agent.stage") && e.contains("manager-turn"),
        "{e}"
    );
    let e = build_err(&recipe("stage = \"manager-turn\""));
    assert!(e.contains("agent.teacher"), "{e}");
    let e = build_err(&recipe(
        "stage = \"manager-turn\"\n[teacher]\nhistory_turns = 3",
    ));
    assert!(e.contains("agent.teacher.model"), "{e}");
    let e = build_err(&recipe("[teacher]\nhistory_turns = 3"));
    assert!(
        e.contains("agent.teacher") && e.contains("only stage"),
        "{e}"
    );
    let e = build_err(&table(tmp.path(), 2, "bank_cache = true"));
    assert!(e.contains("agent.bank_cache"), "{e}");
    let e = build_err(&table(tmp.path(), 2, "").replace("history_turns = 2", "history_turn = 2"));
    assert!(e.contains("agent.teacher.history_turn"), "{e}");
}

/// `[agent.teacher] incremental = true` (with `history_turns = 0`): the bank of a linked turn
/// continues the bank of the latest turn built before it instead of being rebuilt from the
/// first turn, and its snapshots are the ones a from-scratch teacher builds (a greedy
/// teacher), whichever order the turns are asked in.
#[test]
fn an_incremental_teacher_builds_the_snapshots_a_scratch_teacher_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let incremental = |d: &Path| {
        agent(&table(d, 0, "").replace("[teacher]\n", "[teacher]\nincremental = true\n"))
    };
    let scratch = agent(&table(&tmp.path().join("scratch"), 0, ""));
    let snap = |a: &dyn Paradigm, turn: &str| {
        let (eps, _) = run(a, &policy(), &sample("q", Some(turn), "I live in Boston.")).unwrap();
        snapshot_of(&eps[0])
    };
    let want: Vec<(&str, Vec<String>)> = ["D1:2", "D2:1", "D2:2"]
        .into_iter()
        .map(|t| (t, snap(scratch.as_ref(), t)))
        .collect();
    assert_eq!(want[2].1.len(), 3, "{want:?}");
    for (name, order) in [
        ("forward", [0, 1, 2]),
        ("backward", [2, 1, 0]),
        ("mixed", [1, 2, 0]),
    ] {
        let dir = tmp.path().join(name);
        let a = incremental(&dir);
        for i in order {
            assert_eq!(
                snap(a.as_ref(), want[i].0),
                want[i].1,
                "{name}: {}",
                want[i].0
            );
        }
        // Tuples record the whole history as their window.
        for t in tuples(&only_file(&dir)) {
            assert_eq!(t.history, t.turn_index, "{name}: {t:?}");
        }
    }
    // A new run continues the banks of the tuples in the file: an edited snapshot of D2:1
    // shows through in the D2:2 it builds next.
    let dir = tmp.path().join("resumed");
    assert_eq!(snap(incremental(&dir).as_ref(), "D2:1"), want[1].1);
    let file = only_file(&dir);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"bank_parse_errors\":0"), "{text}");
    std::fs::write(&file, text.replace("lives in Boston", "lives in Denver")).unwrap();
    let resumed = snap(incremental(&dir).as_ref(), "D2:2");
    assert_eq!(resumed.len(), want[2].1.len());
    assert!(resumed.iter().any(|m| m.contains("Denver")), "{resumed:?}");
    // A teacher of its own: its own tuple file.
    assert_ne!(
        only_file(&tmp.path().join("forward")).file_name(),
        only_file(&tmp.path().join("scratch")).file_name()
    );
    let e = build_err(
        &table(tmp.path(), 2, "").replace("[teacher]\n", "[teacher]\nincremental = true\n"),
    );
    assert!(
        e.contains("agent.teacher.incremental") && e.contains("history_turns = 0"),
        "{e}"
    );
}
