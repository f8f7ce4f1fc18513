//! Acknowledged edits survive the writing process being killed.
//!
//! The test re-runs its own binary as a child ("writer" mode, selected by an environment
//! variable) that applies a deterministic stream of edit batches (adds, updates, deletes,
//! overwrites, no-ops; contents up to a few KiB, so a batch spans several pages) and prints
//! `ACK <batch> <outcomes>` after each `apply` returns `Ok`. The parent reads the
//! acknowledgments, kills the child with SIGKILL in the middle of the stream, reads the
//! acknowledgments still in the pipe, and then checks the database: `PRAGMA
//! integrity_check` is `ok`, and the bank equals the in-memory store after replaying the
//! acknowledged batches (plus, possibly, the one batch in flight, which may have committed
//! without being acknowledged). Five rounds, each writer resuming the stream on the
//! recovered database.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use memfactory_core::{EditOutcome, MemoryEdit, MemoryItem, MemoryStore};
use memfactory_store_memory::InMemoryStore;
use memfactory_store_sqlite::SqliteFactory;

/// Selects writer mode: the database path.
const WRITER_DB: &str = "MEMFACTORY_SQLITE_CRASH_WRITER_DB";
/// Writer mode: the first batch index to apply.
const WRITER_START: &str = "MEMFACTORY_SQLITE_CRASH_WRITER_START";
const TEST_NAME: &str = "acknowledged_edits_survive_sigkill";
const BANK: &str = "crash/bank";
/// Acknowledgments read before killing the writer, per round.
const KILL_AFTER: usize = 60;
const ROUNDS: usize = 5;
/// The writer stops by itself after this many batches (the parent kills it long before).
const MAX_BATCHES: u64 = 1_000_000;

/// Draws on SplitMix64.
struct Mix(memfactory_core::seed::SplitMix64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Batch `i` of the stream: a pure function of `i`.
fn batch(i: u64) -> Vec<MemoryEdit> {
    let mut r = Mix(memfactory_core::seed::SplitMix64(i ^ 0xC0FF_EE00_D15C_0DE5));
    let n = 1 + r.below(6);
    (0..n)
        .map(|j| {
            let id = format!("k{}", r.below(48));
            let len = r.below(3000) as usize;
            let content = format!("batch {i} edit {j} ").repeat(1 + len / 20);
            let embedding = (r.below(3) > 0).then(|| {
                (0..16)
                    .map(|d| ((i * 31 + j * 7 + d) % 97) as f32 / 97.0 - 0.5)
                    .collect()
            });
            match r.below(100) {
                0..=44 => MemoryEdit::Add {
                    item: MemoryItem {
                        id,
                        content,
                        speaker: (r.below(2) == 0).then(|| "alice".to_string()),
                        time: Some(format!("t{i}")),
                        embedding,
                        meta: [("batch".to_string(), i.to_string())].into(),
                    },
                },
                45..=69 => MemoryEdit::Update {
                    id,
                    content,
                    embedding,
                },
                70..=92 => MemoryEdit::Delete { id },
                93..=98 => MemoryEdit::Noop,
                _ => MemoryEdit::Overwrite { content },
            }
        })
        .collect()
}

fn code(outcomes: &[EditOutcome]) -> String {
    outcomes
        .iter()
        .map(|o| match o {
            EditOutcome::Applied => 'A',
            EditOutcome::Rejected(_) => 'R',
            EditOutcome::Unchanged => 'U',
        })
        .collect()
}

/// Writer mode: apply batches from `start` on, acknowledging each on stdout.
fn writer(db: &str, start: u64) {
    let f = SqliteFactory::new(db, false).expect("writer: open database");
    let mut s = f.open_bank(BANK).expect("writer: open bank");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in start..MAX_BATCHES {
        let outcomes = s.apply(&batch(i)).expect("writer: apply");
        // Stop when the parent has gone away.
        if writeln!(out, "ACK {i} {}", code(&outcomes))
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Kills and reaps the child however the test ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One round: a writer from batch `start`, killed after `KILL_AFTER` acknowledgments.
/// Returns the acknowledged `(batch, outcome code)` pairs, in order.
fn run_writer(db: &Path, start: u64) -> Vec<(u64, String)> {
    let exe = std::env::current_exe().expect("test binary path");
    let child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(WRITER_DB, db)
        .env(WRITER_START, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let mut child = Reaper(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let parse = |line: &str, acks: &mut Vec<(u64, String)>| {
        // The harness's `test … ... ` announcement may precede the first one on its line.
        if let Some(rest) = line.find("ACK ").map(|at| &line[at + 4..]) {
            let (i, c) = rest.split_once(' ').expect("ACK <batch> <outcomes>");
            acks.push((i.parse::<u64>().expect("batch number"), c.to_string()));
        }
    };
    while acks.len() < KILL_AFTER {
        match lines.next() {
            Some(Ok(line)) => parse(&line, &mut acks),
            _ => {
                let mut err = String::new();
                if let Some(mut e) = child.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "the writer stopped after {} acknowledgments: {:?}\n{err}",
                    acks.len(),
                    child.0.wait()
                );
            }
        }
    }
    // SIGKILL, in the middle of the stream.
    child.0.kill().expect("kill the writer");
    let status = child.0.wait().expect("reap the writer");
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer must die of SIGKILL, not finish: {status:?}"
    );
    // Acknowledgments written before the kill are still in the pipe.
    for line in lines {
        parse(&line.expect("read the pipe"), &mut acks);
    }
    acks
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open for integrity_check");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

#[test]
fn acknowledged_edits_survive_sigkill() {
    if let Ok(db) = std::env::var(WRITER_DB) {
        let start = std::env::var(WRITER_START)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        writer(&db, start);
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.sqlite");
    SqliteFactory::new(&db, true).expect("create the database");

    let mut oracle = InMemoryStore::new();
    let mut next = 0u64;
    let (mut acknowledged, mut in_flight_committed) = (0, 0);
    for round in 0..ROUNDS {
        let acks = run_writer(&db, next);
        assert!(acks.len() >= KILL_AFTER);
        for (n, (i, c)) in acks.iter().enumerate() {
            assert_eq!(
                *i,
                next + n as u64,
                "round {round}: acknowledgments out of order"
            );
            let outcomes = oracle.apply(&batch(*i)).expect("oracle apply");
            assert_eq!(
                &code(&outcomes),
                c,
                "round {round}: batch {i} outcomes differ from the in-memory store's"
            );
        }
        next += acks.len() as u64;
        acknowledged += acks.len();

        assert_eq!(
            integrity(&db),
            "ok",
            "round {round}: PRAGMA integrity_check"
        );
        let store = SqliteFactory::new(&db, false)
            .and_then(|f| f.open_bank(BANK))
            .expect("reopen after the kill");
        let got = store.items().expect("items after the kill");
        if got != oracle.items().expect("oracle items") {
            // The batch in flight may have committed without its acknowledgment.
            oracle.apply(&batch(next)).expect("oracle apply");
            next += 1;
            in_flight_committed += 1;
            let want = oracle.items().expect("oracle items");
            assert_eq!(
                got.len(),
                want.len(),
                "round {round}: after the kill the bank matches neither the acknowledged \
                 prefix (batches ..{}) nor it plus the batch in flight",
                next - 1
            );
            assert_eq!(
                got, want,
                "round {round}: after the kill the bank matches neither the acknowledged \
                 prefix nor it plus the batch in flight"
            );
        }
        assert_eq!(store.len().expect("len"), got.len());
    }
    // The recovered database takes more edits.
    let mut store = SqliteFactory::new(&db, false)
        .and_then(|f| f.open_bank(BANK))
        .expect("reopen");
    for i in next..next + 5 {
        assert_eq!(
            store.apply(&batch(i)).expect("apply after recovery"),
            oracle.apply(&batch(i)).expect("oracle apply")
        );
    }
    assert_eq!(
        store.items().expect("items"),
        oracle.items().expect("items")
    );
    eprintln!(
        "{ROUNDS} kills, {acknowledged} batches acknowledged, {in_flight_committed} in-flight batches \
         committed unacknowledged, {} items at the end, {:.2?}",
        oracle.len().expect("len"),
        t0.elapsed()
    );
}
