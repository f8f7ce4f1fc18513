//! # memfactory-store-sqlite
//!
//! The embedded, persistent [`MemoryStore`]: memory banks in one SQLite database file
//! (bundled SQLite through `rusqlite`, nothing to install). Registered as store kind
//! `sqlite`; [`StoreFactory::open`] opens the named bank (an episode's `sample-id/path`),
//! so the banks of a whole run — or of several runs — live side by side in one file.
//!
//! Semantics are those of `memfactory-store-memory` (the conformance suite in
//! `memfactory-store-conformance` checks both): items in insertion order, every field kept
//! (embedding as a little-endian `f32` BLOB, meta as JSON), exact top-k search by cosine
//! when the query and the item carry embeddings, else by lexical overlap, best first, ties in
//! insertion order. Search loads the bank's candidate rows (bank and speaker filtered in
//! SQL) and scores them in Rust exactly as the in-memory store does.
//!
//! Durability: the database runs in WAL journal mode with `synchronous = FULL`, and every
//! [`MemoryStore::apply`] call is one `BEGIN IMMEDIATE … COMMIT` transaction. When `apply`
//! returns `Ok`, its commit record is in the WAL file and fsynced: the batch survives the
//! process being killed (and a power loss); a batch interrupted half-way is rolled back as a
//! whole when the database is next opened. An `apply` that fails leaves the bank unchanged.
//! Several stores (threads, processes) may use one file: writers take turns through the
//! write lock, waiting up to a minute for it.
//!
//! Only MemFactory's own files are opened: `path` must be absent, empty (zero bytes), or a
//! memory-bank database, recognised by its SQLite `application_id` ([`APPLICATION_ID`],
//! written when the file is created). Anything else — another application's database, a file
//! that is not SQLite at all — is refused with a user error naming the file, before any
//! write: the file is not switched to WAL, no table is added, `fresh` clears nothing, and no
//! `-wal` / `-shm` / `-journal` file is left beside it. A store written by earlier MemFactory
//! builds (no `application_id` yet) is recognised by its exact schema — only the
//! `memfactory_items` table with its index, `user_version` 1 — and upgraded in place (its
//! `application_id` is set).
//!
//! Recipe:
//!
//! ```toml
//! [store]
//! kind = "sqlite"
//! path = "runs/memory.sqlite"  # database file, created if absent or empty (its directory
//!                              # must exist); an existing file must be a MemFactory database
//! fresh = true                 # default: clear a bank when an episode opens it (evals expect
//!                              # an empty bank); false keeps what the bank already holds
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memfactory_core::memory::OVERWRITE_ID;
use memfactory_core::memory::rank;
use memfactory_core::{
    Cfg, EditOutcome, Error, MemoryEdit, MemoryItem, MemoryStore, Result, SearchQuery, StoreFactory,
};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// Version of the table layout, kept in the database's `user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// The SQLite `application_id` (header bytes 68..72) of a MemFactory memory-bank database:
/// ASCII `MemF`. A non-empty file without it is not opened (see the crate docs).
pub const APPLICATION_ID: i32 = 0x4D65_6D46;

/// How long a writer waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
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

const COLUMNS: &str = "id, content, speaker, time, embedding, meta";

// ---------------------------------------------------------------------------------------
// Errors.

/// A SQLite failure on the database at `path`: a file that is not a database (or is
/// corrupt) is the user's [`Error::Data`]; anything else is a [`Error::Backend`] naming it.
fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::data(
            path,
            None,
            format!("not a valid SQLite database (corrupt or another kind of file): {e}"),
        ),
        _ => Error::backend(format!("sqlite store {}", path.display()), e.to_string()),
    }
}

trait Db<T> {
    fn db(self, path: &Path) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self, path: &Path) -> Result<T> {
        self.map_err(|e| db_error(path, e))
    }
}

// ---------------------------------------------------------------------------------------
// Opening.

/// Checks what SQLite would report obscurely (or create silently): the directory exists,
/// the path is a file, the file is readable.
fn precheck(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                ),
            ));
        }
        Err(e) => {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    e.kind(),
                    format!("directory {} of the database: {e}", dir.display()),
                ),
            ));
        }
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::data(
            path,
            None,
            "is a directory, not a SQLite database file",
        )),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| Error::io(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// What [`inspect`] found at the database path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No file, or an empty one: MemFactory creates its database there.
    New,
    /// A MemFactory database (its header carries [`APPLICATION_ID`]).
    Ours,
    /// A database written by an earlier MemFactory build: the exact schema, no
    /// `application_id` yet. Opening it sets the id.
    Legacy,
}

/// Names, in the database's `sqlite_master`, of everything an earlier MemFactory build
/// created (with `type`): the table, the `AUTOINCREMENT` bookkeeping table, the `UNIQUE`
/// constraint's index and the bank index.
const LEGACY_OBJECTS: [(&str, &str); 4] = [
    ("index", "memfactory_items_bank_seq"),
    ("index", "sqlite_autoindex_memfactory_items_1"),
    ("table", "memfactory_items"),
    ("table", "sqlite_sequence"),
];

/// The columns of `memfactory_items`, in order.
const ITEM_COLUMNS: [&str; 8] = [
    "seq",
    "bank",
    "id",
    "content",
    "speaker",
    "time",
    "embedding",
    "meta",
];

/// The refusal for a file that is not a MemFactory database: the user's [`Error::Data`],
/// naming the file, what it is, and what was expected.
fn not_ours(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::data(
        path,
        None,
        format!(
            "{what}. The sqlite store opens only a new file (absent or empty) or a MemFactory \
             memory-bank database (SQLite application_id {APPLICATION_ID:#010x}), and left \
             this file unchanged; set `store.path` to another file"
        ),
    )
}

/// A `file:` URI opening `path` read-only and immutable (no locks, no journal, no `-wal` or
/// `-shm` file created), every byte outside a safe set percent-encoded.
fn immutable_uri(path: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let mut uri = String::from("file://");
    if !abs.as_os_str().as_encoded_bytes().starts_with(b"/") {
        uri.push('/');
    }
    for &b in abs.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    Ok(uri)
}

/// Tells, without writing anything, whether `path` may be opened: a new file, a MemFactory
/// database, or one from an earlier build; anything else is refused with [`not_ours`].
fn inspect(path: &Path) -> Result<Found> {
    use std::io::Read;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let mut head = Vec::with_capacity(100);
    match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::New),
        Err(e) => return Err(Error::io(path, e)),
        Ok(f) => {
            f.take(100)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(path, e))?;
        }
    }
    if head.is_empty() && !wal.exists() {
        return Ok(Found::New);
    }
    if head.len() < 100 || !head.starts_with(b"SQLite format 3\0") {
        return Err(not_ours(
            path,
            "not a valid SQLite database (it does not start with the SQLite header: another \
             kind of file)",
        ));
    }
    let app_id = i32::from_be_bytes([head[68], head[69], head[70], head[71]]);
    if app_id == APPLICATION_ID {
        return Ok(Found::Ours);
    }
    if app_id != 0 {
        return Err(not_ours(
            path,
            format!("a SQLite database of another application (application_id {app_id:#010x})"),
        ));
    }
    // No application_id: a MemFactory store from an earlier build, or somebody else's
    // database. Read its schema on a connection that cannot write: immutable when no WAL
    // file is beside it (nothing is created then); with a WAL file present (its content is
    // part of the database), a plain read-only connection, which never checkpoints.
    let conn = if wal.exists() {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        Connection::open_with_flags(
            immutable_uri(path)?,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }
    .db(path)?;
    conn.busy_timeout(BUSY_TIMEOUT).db(path)?;
    let mut objects: Vec<(String, String)> = conn
        .prepare("SELECT type, name FROM sqlite_master ORDER BY type, name")
        .db(path)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .db(path)?
        .collect::<rusqlite::Result<_>>()
        .db(path)?;
    objects.sort();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .db(path)?;
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('memfactory_items') ORDER BY cid")
        .db(path)?
        .query_map([], |r| r.get(0))
        .db(path)?
        .collect::<rusqlite::Result<_>>()
        .db(path)?;
    drop(conn);
    let legacy = objects
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .eq(LEGACY_OBJECTS)
        && columns.iter().map(String::as_str).eq(ITEM_COLUMNS)
        && version == 1;
    if legacy {
        return Ok(Found::Legacy);
    }
    let tables: Vec<&str> = objects
        .iter()
        .filter(|(t, _)| t == "table")
        .map(|(_, n)| n.as_str())
        .collect();
    Err(not_ours(
        path,
        if tables.is_empty() {
            "a SQLite database of another application (no MemFactory application_id, no tables)"
                .to_string()
        } else {
            format!(
                "a SQLite database of another application (no MemFactory application_id; \
                 tables: {})",
                tables.join(", ")
            )
        },
    ))
}

/// Creates MemFactory's database in the new (absent or empty) file `conn` opened: in one
/// transaction, still in SQLite's default rollback-journal mode, the application id, the
/// table and the schema version, so that the header carries the id before the database is
/// switched to WAL. A file another process has initialised meanwhile is left as it is; one
/// that something else has written meanwhile is refused.
fn initialise(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db(path)?;
    let app_id: i32 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .db(path)?;
    if app_id == APPLICATION_ID {
        return Ok(());
    }
    let objects: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .db(path)?;
    if app_id != 0 || objects != 0 {
        return Err(not_ours(
            path,
            "a SQLite database that another program wrote while MemFactory was creating it",
        ));
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .db(path)?;
    tx.execute_batch(SCHEMA).db(path)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .db(path)?;
    tx.commit().db(path)
}

/// Opens the database at `path` — created if absent or empty, else only if it is
/// MemFactory's ([`inspect`], before anything is written) — in WAL mode with
/// `synchronous = FULL` and makes sure the table exists; with `clear`, empties bank `clear`
/// in the same transaction.
fn connect(path: &Path, clear: Option<&str>) -> Result<Connection> {
    precheck(path)?;
    let found = inspect(path)?;
    // No SQLITE_OPEN_URI: the path is a plain file path, even if it starts with `file:`.
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if found == Found::New {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).db(path)?;
    conn.busy_timeout(BUSY_TIMEOUT).db(path)?;
    if found == Found::New {
        initialise(&mut conn, path)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .db(path)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::backend(
            format!("sqlite store {}", path.display()),
            format!(
                "could not switch the database to WAL journal mode (it stays `{mode}`); \
                 put it on a local filesystem"
            ),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL").db(path)?;

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db(path)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .db(path)?;
    if version > SCHEMA_VERSION {
        return Err(Error::data(
            path,
            None,
            format!(
                "memory-bank schema version {version} is newer than this build reads \
                 ({SCHEMA_VERSION})"
            ),
        ));
    }
    tx.execute_batch(SCHEMA).db(path)?;
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .db(path)?;
    }
    if found == Found::Legacy {
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .db(path)?;
    }
    if let Some(bank) = clear {
        tx.execute("DELETE FROM memfactory_items WHERE bank = ?1", [bank])
            .db(path)?;
    }
    tx.commit().db(path)?;
    Ok(conn)
}

// ---------------------------------------------------------------------------------------
// Rows.

fn encode_embedding(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One row as read, with meta still JSON (decoded only for returned items).
struct Row {
    id: String,
    content: String,
    speaker: Option<String>,
    time: Option<String>,
    embedding: Option<Vec<f32>>,
    meta: String,
}

type RawRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    String,
);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

// ---------------------------------------------------------------------------------------
// Scoring: exactly the in-memory store's (memfactory-store-memory), so that both rank and
// score identically; the conformance suite compares them with a brute-force reference.

// ---------------------------------------------------------------------------------------
// The store.

/// One bank of a SQLite database, on its own connection.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    bank: String,
}

impl SqliteStore {
    /// The bank this store reads and writes.
    pub fn bank(&self) -> &str {
        &self.bank
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn decode(&self, raw: RawRow) -> Result<Row> {
        let (id, content, speaker, time, blob, meta) = raw;
        let embedding = match blob {
            None => None,
            Some(b) if !b.len().is_multiple_of(4) => {
                return Err(Error::data(
                    &self.path,
                    Some(format!("bank `{}`, item `{id}`", self.bank)),
                    format!(
                        "embedding BLOB of {} bytes is not a sequence of little-endian f32",
                        b.len()
                    ),
                ));
            }
            Some(b) => Some(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        };
        Ok(Row {
            id,
            content,
            speaker,
            time,
            embedding,
            meta,
        })
    }

    fn item(&self, row: Row) -> Result<MemoryItem> {
        let meta: BTreeMap<String, String> = serde_json::from_str(&row.meta).map_err(|e| {
            Error::data(
                &self.path,
                Some(format!("bank `{}`, item `{}`", self.bank, row.id)),
                format!("meta is not a JSON object of strings: {e}"),
            )
        })?;
        Ok(MemoryItem {
            id: row.id,
            content: row.content,
            speaker: row.speaker,
            time: row.time,
            embedding: row.embedding,
            meta,
        })
    }

    /// The bank's rows in insertion order, optionally one speaker's only.
    fn rows(&self, speaker: Option<&str>) -> Result<Vec<Row>> {
        let p = &self.path;
        let raw: Vec<RawRow> = match speaker {
            None => {
                let mut st = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM memfactory_items WHERE bank = ?1 ORDER BY seq"
                    ))
                    .db(p)?;
                st.query_map([&self.bank], raw_row)
                    .db(p)?
                    .collect::<rusqlite::Result<_>>()
                    .db(p)?
            }
            Some(s) => {
                let mut st = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM memfactory_items \
                         WHERE bank = ?1 AND speaker = ?2 ORDER BY seq"
                    ))
                    .db(p)?;
                st.query_map(params![&self.bank, s], raw_row)
                    .db(p)?
                    .collect::<rusqlite::Result<_>>()
                    .db(p)?
            }
        };
        raw.into_iter().map(|r| self.decode(r)).collect()
    }

    fn insert(
        tx: &rusqlite::Transaction<'_>,
        path: &Path,
        bank: &str,
        item: &MemoryItem,
    ) -> Result<bool> {
        let meta = serde_json::to_string(&item.meta).map_err(|e| {
            Error::backend(
                format!("sqlite store {}", path.display()),
                format!("encoding the meta of item `{}`: {e}", item.id),
            )
        })?;
        let mut st = tx
            .prepare_cached(
                "INSERT INTO memfactory_items (bank, id, content, speaker, time, embedding, meta) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (bank, id) DO NOTHING",
            )
            .db(path)?;
        let n = st
            .execute(params![
                bank,
                item.id,
                item.content,
                item.speaker,
                item.time,
                item.embedding.as_deref().map(encode_embedding),
                meta,
            ])
            .db(path)?;
        Ok(n > 0)
    }

    fn apply_one(
        tx: &rusqlite::Transaction<'_>,
        path: &Path,
        bank: &str,
        edit: &MemoryEdit,
    ) -> Result<EditOutcome> {
        Ok(match edit {
            MemoryEdit::Add { item } => {
                if Self::insert(tx, path, bank, item)? {
                    EditOutcome::Applied
                } else {
                    EditOutcome::Rejected(format!("id `{}` already exists", item.id))
                }
            }
            MemoryEdit::Update {
                id,
                content,
                embedding,
            } => {
                let n = match embedding {
                    Some(e) => tx
                        .prepare_cached(
                            "UPDATE memfactory_items SET content = ?3, embedding = ?4 \
                             WHERE bank = ?1 AND id = ?2",
                        )
                        .db(path)?
                        .execute(params![bank, id, content, encode_embedding(e)])
                        .db(path)?,
                    None => tx
                        .prepare_cached(
                            "UPDATE memfactory_items SET content = ?3 WHERE bank = ?1 AND id = ?2",
                        )
                        .db(path)?
                        .execute(params![bank, id, content])
                        .db(path)?,
                };
                if n > 0 {
                    EditOutcome::Applied
                } else {
                    EditOutcome::Rejected(format!("no item with id `{id}`"))
                }
            }
            MemoryEdit::Delete { id } => {
                let n = tx
                    .prepare_cached("DELETE FROM memfactory_items WHERE bank = ?1 AND id = ?2")
                    .db(path)?
                    .execute(params![bank, id])
                    .db(path)?;
                if n > 0 {
                    EditOutcome::Applied
                } else {
                    EditOutcome::Rejected(format!("no item with id `{id}`"))
                }
            }
            MemoryEdit::Overwrite { content } => {
                tx.prepare_cached("DELETE FROM memfactory_items WHERE bank = ?1")
                    .db(path)?
                    .execute([bank])
                    .db(path)?;
                Self::insert(
                    tx,
                    path,
                    bank,
                    &MemoryItem::new(OVERWRITE_ID, content.clone()),
                )?;
                EditOutcome::Applied
            }
            MemoryEdit::Noop => EditOutcome::Unchanged,
        })
    }
}

impl MemoryStore for SqliteStore {
    fn apply(&mut self, edits: &[MemoryEdit]) -> Result<Vec<EditOutcome>> {
        if edits.iter().all(|e| matches!(e, MemoryEdit::Noop)) {
            return Ok(vec![EditOutcome::Unchanged; edits.len()]);
        }
        let (path, bank) = (&self.path, &self.bank);
        // IMMEDIATE: take the write lock up front (waiting for it), so that the batch
        // cannot fail half-way on a lock upgrade.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db(path)?;
        let mut out = Vec::with_capacity(edits.len());
        for e in edits {
            out.push(Self::apply_one(&tx, path, bank, e)?);
        }
        tx.commit().db(path)?;
        Ok(out)
    }

    fn items(&self) -> Result<Vec<MemoryItem>> {
        self.rows(None)?.into_iter().map(|r| self.item(r)).collect()
    }

    fn get(&self, id: &str) -> Result<Option<MemoryItem>> {
        let p = &self.path;
        let raw = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM memfactory_items WHERE bank = ?1 AND id = ?2"
            ))
            .db(p)?
            .query_row(params![&self.bank, id], raw_row)
            .optional()
            .db(p)?;
        match raw {
            None => Ok(None),
            Some(r) => {
                let row = self.decode(r)?;
                self.item(row).map(Some)
            }
        }
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<(MemoryItem, f32)>> {
        if query.k == 0 {
            return Ok(Vec::new());
        }
        // Rows come in `seq` (insertion) order, which `rank` keeps for ties.
        rank(
            self.rows(query.speaker.as_deref())?,
            query,
            |r| &r.content,
            |r| r.embedding.as_deref(),
        )
        .into_iter()
        .map(|(r, s)| Ok((self.item(r)?, s)))
        .collect()
    }

    fn len(&self) -> Result<usize> {
        let p = &self.path;
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM memfactory_items WHERE bank = ?1")
            .db(p)?
            .query_row([&self.bank], |r| r.get(0))
            .db(p)?;
        usize::try_from(n).map_err(|_| {
            Error::backend(
                format!("sqlite store {}", p.display()),
                format!("bank `{}` counts {n} items", self.bank),
            )
        })
    }
}

// ---------------------------------------------------------------------------------------
// The factory.

/// Opens the banks of one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteFactory {
    path: PathBuf,
    fresh: bool,
}

impl SqliteFactory {
    /// The database at `path`, created (with its table) if absent or empty; its directory
    /// must exist. With `fresh`, [`StoreFactory::open`] clears the bank it opens. Errors name
    /// the path: a missing directory, a directory or unreadable file, a file that is not a
    /// MemFactory database (another application's SQLite database, or not SQLite at all —
    /// refused before anything is written to it).
    pub fn new(path: impl Into<PathBuf>, fresh: bool) -> Result<Self> {
        let path = path.into();
        connect(&path, None)?;
        Ok(SqliteFactory { path, fresh })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether opening a bank clears it.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Opens bank `bank` on a new connection (cleared first when the factory is `fresh`).
    pub fn open_bank(&self, bank: &str) -> Result<SqliteStore> {
        let conn = connect(&self.path, self.fresh.then_some(bank))?;
        Ok(SqliteStore {
            conn,
            path: self.path.clone(),
            bank: bank.to_string(),
        })
    }

    /// Names of the banks that hold at least one item, sorted.
    pub fn banks(&self) -> Result<Vec<String>> {
        let p = &self.path;
        let conn = connect(p, None)?;
        let mut st = conn
            .prepare("SELECT DISTINCT bank FROM memfactory_items ORDER BY bank")
            .db(p)?;
        st.query_map([], |r| r.get(0))
            .db(p)?
            .collect::<rusqlite::Result<_>>()
            .db(p)
    }
}

impl StoreFactory for SqliteFactory {
    fn describe(&self) -> String {
        format!(
            "sqlite store {} ({})",
            self.path.display(),
            if self.fresh {
                "a bank is cleared when an episode opens it"
            } else {
                "banks keep their items across runs"
            }
        )
    }

    fn open(&self, bank: &str) -> Result<Box<dyn MemoryStore>> {
        Ok(Box::new(self.open_bank(bank)?))
    }
}

/// Keys of `[store]` for kind `sqlite`.
const KEYS: [&str; 3] = ["fresh", "kind", "path"];

fn build(cfg: &mut Cfg) -> Result<Box<dyn StoreFactory>> {
    // Reject unknown keys before the database file is created (`Cfg::finish` would reject
    // them too, but only after `build` returns).
    if let Some(k) = cfg.table().keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(cfg.error(
            k,
            format!("unknown key (this table accepts: {})", KEYS.join(", ")),
        ));
    }
    let path: String = cfg.req("path")?;
    if path.trim().is_empty() {
        return Err(cfg.error("path", "must not be empty"));
    }
    let fresh: bool = cfg.get("fresh", true)?;
    Ok(Box::new(SqliteFactory::new(path, fresh)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn StoreFactory> {
        kind: "sqlite",
        about: "SQLite store: durable banks in one database file (WAL, one transaction per apply), exact cosine or lexical top-k",
        build,
    }
}
