//! The store opens only its own files: a new (absent or empty) file, a MemFactory database,
//! or a store written by an earlier build (upgraded). Anything else — another application's
//! SQLite database, a file that is not SQLite — is refused with a user error naming the
//! file, and is left byte for byte as it was, with no `-wal`, `-shm` or `-journal` beside it.

use std::path::{Path, PathBuf};

use memfactory_core::{Cfg, Error, MemoryEdit, MemoryItem, StoreFactory, registry};
use memfactory_store_sqlite::{APPLICATION_ID, SqliteFactory};
use rusqlite::Connection;

fn sidecars(path: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", path.display())))
        .filter(|p| p.exists())
        .collect()
}

fn application_id(path: &Path) -> i32 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap()
}

/// Every way of opening `path` is refused with a user error that names the file and says
/// `expect`; the file keeps its bytes and gains no sidecar file.
fn assert_refused(path: &Path, expect: &str) {
    let before = std::fs::read(path).unwrap();
    assert!(sidecars(path).is_empty(), "{:?}", sidecars(path));
    let shown = path.display().to_string();
    for fresh in [true, false] {
        let e = SqliteFactory::new(path, fresh).expect_err("a foreign file must be refused");
        let s = e.to_string();
        assert!(matches!(e, Error::Data { .. }), "{e:?}");
        assert!(e.is_user_error(), "{e:?}");
        assert!(s.contains(&shown), "{s}");
        assert!(s.contains(expect), "{s}");
        assert!(s.contains("`store.path`"), "{s}");
        assert!(s.contains("left this file unchanged"), "{s}");
        assert_eq!(std::fs::read(path).unwrap(), before, "{s}");
        assert!(sidecars(path).is_empty(), "{:?}", sidecars(path));
    }
    // Through the recipe, as `memfactory eval` builds it.
    let table: toml::Table =
        toml::from_str(&format!("kind = \"sqlite\"\npath = {shown:?}")).unwrap();
    let e = registry::build::<dyn StoreFactory>(Cfg::new("store", table))
        .err()
        .expect("a foreign file must be refused");
    assert!(e.is_user_error(), "{e:?}");
    assert!(e.to_string().contains(&shown), "{e}");
    assert_eq!(std::fs::read(path).unwrap(), before);
    assert!(sidecars(path).is_empty(), "{:?}", sidecars(path));
}

/// Another application's database, written with `journal` mode and closed.
fn foreign_db(path: &Path, journal: &str, setup: &str) {
    let c = Connection::open(path).unwrap();
    let mode: String = c
        .query_row(&format!("PRAGMA journal_mode = {journal}"), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(mode, journal);
    c.execute_batch(setup).unwrap();
    drop(c);
    assert!(sidecars(path).is_empty(), "{:?}", sidecars(path));
}

const APP: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
                   INSERT INTO users (name) VALUES ('ada'), ('grace');";

#[test]
fn another_applications_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();

    let rollback = dir.path().join("app.db");
    foreign_db(&rollback, "delete", APP);
    assert_refused(
        &rollback,
        "another application (no MemFactory application_id; tables: users)",
    );

    let wal = dir.path().join("app-wal.db");
    foreign_db(&wal, "wal", APP);
    assert_refused(&wal, "tables: users");

    // An application that sets its own id.
    let other_id = dir.path().join("other-id.db");
    foreign_db(
        &other_id,
        "delete",
        "PRAGMA application_id = 1234; CREATE TABLE t (x);",
    );
    assert_refused(&other_id, "application_id 0x000004d2");

    // MemFactory's table among other tables is still somebody else's database.
    let mixed = dir.path().join("mixed.db");
    foreign_db(
        &mixed,
        "wal",
        &format!("{LEGACY_SCHEMA} PRAGMA user_version = 1; {APP}"),
    );
    assert_refused(&mixed, "tables: memfactory_items, sqlite_sequence, users");

    // A SQLite database with no tables is not a new file either.
    let empty = dir.path().join("empty.db");
    foreign_db(&empty, "delete", "VACUUM;");
    assert!(std::fs::metadata(&empty).unwrap().len() > 0);
    assert_refused(&empty, "no tables");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "dear diary,\n".repeat(100)).unwrap();
    assert_refused(&text, "not a valid SQLite database");

    let random = dir.path().join("random.bin");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let bytes: Vec<u8> = (0..10_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&random, &bytes).unwrap();
    assert_refused(&random, "not a valid SQLite database");

    let short = dir.path().join("short");
    std::fs::write(&short, b"x").unwrap();
    assert_refused(&short, "not a valid SQLite database");

    // The SQLite magic alone, truncated before the header's end.
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, b"SQLite format 3\0\x10\x00").unwrap();
    assert_refused(&truncated, "not a valid SQLite database");
}

#[test]
fn new_and_empty_files_become_memfactory_databases() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sqlite");
    let empty = dir.path().join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap();
    for path in [&absent, &empty] {
        let f = SqliteFactory::new(path, true).unwrap();
        let mut s = f.open("b").unwrap();
        s.apply(&[MemoryEdit::Add {
            item: MemoryItem::new("a", "one"),
        }])
        .unwrap();
        drop(s);
        drop(f);
        assert_eq!(application_id(path), APPLICATION_ID);
        // The id is in the main file's header, not only in the WAL.
        let head = std::fs::read(path).unwrap();
        assert_eq!(head[68..72], APPLICATION_ID.to_be_bytes());
        // And it opens again, keeping its items.
        let s = SqliteFactory::new(path, false).unwrap().open("b").unwrap();
        assert_eq!(s.items().unwrap(), [MemoryItem::new("a", "one")]);
    }
}

/// The schema earlier MemFactory builds created (without an application id).
const LEGACY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS memfactory_items (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    bank      TEXT NOT NULL,
    id        TEXT NOT NULL,
    content   TEXT NOT NULL,
    speaker   TEXT,
    time      TEXT,
    embedding BLOB,
    meta      TEXT NOT NULL,
    UNIQUE (bank, id)
);
CREATE INDEX IF NOT EXISTS memfactory_items_bank_seq ON memfactory_items (bank, seq);
";

#[test]
fn a_store_from_an_earlier_build_is_recognised_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    foreign_db(
        &path,
        "wal",
        &format!(
            "{LEGACY_SCHEMA} PRAGMA user_version = 1;
             INSERT INTO memfactory_items (bank, id, content, meta) VALUES ('b', 'a', 'one', '{{}}');"
        ),
    );
    assert_eq!(application_id(&path), 0);
    let f = SqliteFactory::new(&path, false).unwrap();
    assert_eq!(f.banks().unwrap(), ["b"]);
    assert_eq!(
        f.open("b").unwrap().items().unwrap(),
        [MemoryItem::new("a", "one")]
    );
    drop(f);
    assert_eq!(application_id(&path), APPLICATION_ID);

    // The same, with the earlier build's last commits still in its WAL file (not
    // checkpointed: the process was killed).
    let hot = dir.path().join("hot.sqlite");
    foreign_db(
        &hot,
        "wal",
        &format!("{LEGACY_SCHEMA} PRAGMA user_version = 1;"),
    );
    let c = Connection::open(&hot).unwrap();
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    c.execute(
        "INSERT INTO memfactory_items (bank, id, content, meta) VALUES ('b', 'w', 'in the wal', '{}')",
        [],
    )
    .unwrap();
    let copy = dir.path().join("hot-copy.sqlite");
    std::fs::copy(&hot, &copy).unwrap();
    std::fs::copy(
        format!("{}-wal", hot.display()),
        format!("{}-wal", copy.display()),
    )
    .unwrap();
    drop(c);
    let f = SqliteFactory::new(&copy, false).unwrap();
    assert_eq!(
        f.open("b").unwrap().items().unwrap(),
        [MemoryItem::new("w", "in the wal")]
    );
}
