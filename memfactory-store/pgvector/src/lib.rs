//! # memfactory-store-pgvector
//!
//! The server-backed [`MemoryStore`]: memory banks in one table of a PostgreSQL database with
//! the [pgvector](https://github.com/pgvector/pgvector) extension, for banks that outgrow one
//! process — several processes or machines read and write the same banks. Registered as store
//! kind `pgvector`; [`StoreFactory::open`] opens the named bank (an episode's
//! `sample-id/path`). The client is the synchronous `postgres` crate (no TLS: reach a remote
//! server through a trusted network, a Unix socket or an SSH tunnel).
//!
//! Semantics are those of `memfactory-store-memory` (the conformance suite in
//! `memfactory-store-conformance` checks both): items in insertion order, every field kept
//! exactly, exact top-k search by cosine when the query and the item carry embeddings, else by
//! lexical overlap, best first, ties in insertion order.
//!
//! ## Table
//!
//! Created on first use (`CREATE EXTENSION IF NOT EXISTS vector` when the extension is not
//! enabled yet, which needs a role allowed to create it):
//!
//! | column | type | |
//! |---|---|---|
//! | `seq` | `bigserial` primary key | insertion order (an update keeps it, a re-add gets a new one) |
//! | `bank`, `id` | `text`, unique together | |
//! | `content`, `speaker`, `time` | `text` | |
//! | `embedding` | `vector` (no fixed dimension) | the embedding, when pgvector can hold it |
//! | `embedding_raw` | `real[]` | an embedding pgvector rejects: empty, with NaN or ±∞, over 16,000 dimensions |
//! | `meta` | `jsonb` | the item's attributes |
//!
//! Embeddings in one bank may differ in length or be absent, so the column has no fixed
//! dimension. Values go over the wire in binary and are bit-exact `f32`s. PostgreSQL `text`
//! cannot hold NUL characters: a string with one is stored with NUL written as U+10FFFF `0`
//! and U+10FFFF (a Unicode noncharacter) as U+10FFFF U+10FFFF; every other string is stored
//! as it is, and reading undoes the escape, so items round-trip exactly. The table carries
//! the comment `memfactory-store-pgvector schema 1`; another table of that name is refused.
//!
//! ## Search
//!
//! Exact, and identical to the in-memory store's, scores included: the bank's candidate rows
//! (bank and speaker filtered in SQL, in `seq` order) are scored in Rust with the reference
//! cosine and lexical functions. pgvector's `<=>` is not used for ranking: it errors on
//! vectors of unequal length (which a bank may hold, and which score 0 here), it cannot fall
//! back to lexical overlap for items without an embedding, and it sums in another order and
//! divides in `double`, so its scores differ from the reference in the last bits — enough to
//! reorder near-ties. The `vector` column is there for SQL users (`<=>`, indexes) and a
//! future approximate mode.
//!
//! ## Transactions and concurrency
//!
//! Every [`MemoryStore::apply`] call is one transaction (committed when `apply` returns `Ok`;
//! an `apply` that fails leaves the bank unchanged). It first takes a transaction-scoped
//! advisory lock on its bank, so batches on one bank — from any process — apply one after
//! the other, each seeing the ones before it. Opening a bank with `fresh` clears it the same
//! way. Connections are pooled per factory: a store's connection goes back to the pool when
//! the store is dropped.
//!
//! Recipe:
//!
//! ```toml
//! [store]
//! kind = "pgvector"
//! url_env = "MEMFACTORY_PG_URL"  # the variable holding the connection string (keeps
//!                                # passwords out of recipes and run directories), or:
//! # url = "host=127.0.0.1 port=5432 user=memfactory dbname=memfactory"
//! #                              # (or postgresql://user@host:port/db); exactly one of the two
//! table = "memfactory_items"     # default; `name` or `schema.name`, letters, digits, `_`
//! fresh = true                   # default: clear a bank when an episode opens it (evals expect
//!                                # an empty bank); false keeps what the bank already holds
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memfactory_core::memory::OVERWRITE_ID;
use memfactory_core::memory::rank;
use memfactory_core::{
    Cfg, EditOutcome, Error, MemoryEdit, MemoryItem, MemoryStore, Result, SearchQuery, StoreFactory,
};
use postgres::config::Host;
use postgres::{Client, Config, GenericClient, NoTls, Statement};

/// Version of the table layout, kept in the table's comment.
pub const SCHEMA_VERSION: u32 = 1;

/// The table used when a recipe names none.
pub const DEFAULT_TABLE: &str = "memfactory_items";

/// The most dimensions pgvector's `vector` holds; longer embeddings go to `embedding_raw`.
pub const VECTOR_MAX_DIM: usize = 16_000;

/// Prefix of the table comment that marks a table as this store's.
const SCHEMA_COMMENT: &str = "memfactory-store-pgvector schema ";

/// Connection timeout when the connection string sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a pooled connection may take to answer before it is replaced.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections a factory keeps.
const MAX_IDLE: usize = 16;

/// Longest accepted table name (so that `<table>_bank_seq` fits PostgreSQL's 63 bytes).
const MAX_TABLE_NAME: usize = 54;

/// Advisory-lock namespace (first key of the two-key form) of the bank locks.
const BANK_LOCK_NAMESPACE: i32 = 0x4d46_5047; // "MFPG"

/// Advisory lock (one-key form) held while the table and the extension are created.
const SCHEMA_LOCK: i64 = 0x4d46_5047_5343_4831; // "MFPGSCH1"

// ---------------------------------------------------------------------------------------
// Connection strings and table names.

/// Parses a libpq-style connection string (`host=… port=… user=… dbname=…`) or URL
/// (`postgresql://user@host:port/db`); the message of an error does not repeat the string.
fn parse_url(url: &str) -> std::result::Result<Config, String> {
    if url.trim().is_empty() {
        return Err("empty connection string".into());
    }
    let config: Config = url
        .parse()
        .map_err(|e| format!("not a PostgreSQL connection string: {}", pg_message(&e)))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err("the connection string names no host (add `host=…`)".into());
    }
    Ok(config)
}

/// Fills in what the connection string left unset: a connect timeout of 30 s and the
/// application name `memfactory`; notices are dropped.
fn with_defaults(mut config: Config) -> Config {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("memfactory");
    }
    // Notices (e.g. "relation already exists, skipping") are not worth logging.
    config.notice_callback(|_| {});
    config
}

/// Where `config` connects, without the password: `host=… port=… dbname=… user=…`.
fn target(config: &Config) -> String {
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
    }
    let ports: Vec<String> = match config.get_ports() {
        [] => vec!["5432".into()],
        p => p.iter().map(|p| p.to_string()).collect(),
    };
    let mut s = format!("host={} port={}", hosts.join(","), ports.join(","));
    if let Some(db) = config.get_dbname() {
        s.push_str(&format!(" dbname={db}"));
    }
    if let Some(user) = config.get_user() {
        s.push_str(&format!(" user={user}"));
    }
    s
}

/// Checks a table name (`name` or `schema.name`, ASCII letters, digits and `_`, not starting
/// with a digit) and returns it quoted for SQL, with the unqualified name.
fn table_sql(table: &str) -> std::result::Result<(String, String), String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 {
        return Err(format!(
            "`{table}`: expected `name` or `schema.name`, found {} parts",
            parts.len()
        ));
    }
    for p in &parts {
        let ok = !p.is_empty()
            && p.len() <= MAX_TABLE_NAME
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(format!(
                "`{table}`: a table name is 1 to {MAX_TABLE_NAME} ASCII letters, digits or `_`, \
                 not starting with a digit (optionally `schema.` before it)"
            ));
        }
    }
    let quoted: Vec<String> = parts.iter().map(|p| format!("\"{p}\"")).collect();
    Ok((quoted.join("."), parts[parts.len() - 1].to_string()))
}

// ---------------------------------------------------------------------------------------
// Strings: PostgreSQL text cannot hold NUL, so NUL is escaped with a noncharacter.

/// The escape character, U+10FFFF (a Unicode noncharacter, never in real text).
const ESC: char = '\u{10FFFF}';

/// `s` as stored: NUL → ESC `0`, ESC → ESC ESC; unchanged (borrowed) when it has neither.
fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['\0', ESC]) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\0' => {
                out.push(ESC);
                out.push('0');
            }
            ESC => {
                out.push(ESC);
                out.push(ESC);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The inverse of [`esc`]; `None` for a string [`esc`] cannot produce.
fn unesc(s: String) -> Option<String> {
    if !s.contains(ESC) {
        return Some(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == ESC {
            match it.next() {
                Some('0') => out.push('\0'),
                Some(ESC) => out.push(ESC),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// True when pgvector's `vector` holds `e` exactly (1 to 16,000 finite values).
fn fits_vector(e: &[f32]) -> bool {
    (1..=VECTOR_MAX_DIM).contains(&e.len()) && e.iter().all(|x| x.is_finite())
}

/// `(vector column, raw column)` parameters of an embedding.
fn embedding_params(e: Option<&[f32]>) -> (Option<&[f32]>, Option<&[f32]>) {
    match e {
        None => (None, None),
        Some(e) if fits_vector(e) => (Some(e), None),
        Some(e) => (None, Some(e)),
    }
}

// ---------------------------------------------------------------------------------------
// Scoring: exactly the in-memory store's (memfactory-store-memory), so that both rank and
// score identically; the conformance suite compares them with a brute-force reference.

// ---------------------------------------------------------------------------------------
// SQL.

/// The statements a store prepares (lazily, once per connection).
#[derive(Clone, Copy)]
enum Q {
    Rows,
    RowsOfSpeaker,
    Get,
    Count,
    Insert,
    UpdateContent,
    UpdateWithEmbedding,
    Delete,
    Clear,
    LockBank,
}

const N_QUERIES: usize = 10;

const COLUMNS: &str =
    "id, content, speaker, time, COALESCE(embedding::real[], embedding_raw), meta::text";

/// The SQL of one table.
#[derive(Debug)]
struct Sql {
    /// Quoted, possibly schema-qualified table name.
    table: String,
    /// Quoted name of the `(bank, seq)` index.
    index: String,
    queries: [String; N_QUERIES],
}

impl Sql {
    fn new(table: String, name: &str) -> Sql {
        let t = &table;
        let queries = [
            format!("SELECT {COLUMNS} FROM {t} WHERE bank = $1 ORDER BY seq"),
            format!("SELECT {COLUMNS} FROM {t} WHERE bank = $1 AND speaker = $2 ORDER BY seq"),
            format!("SELECT {COLUMNS} FROM {t} WHERE bank = $1 AND id = $2"),
            format!("SELECT count(*) FROM {t} WHERE bank = $1"),
            format!(
                "INSERT INTO {t} (bank, id, content, speaker, time, embedding, embedding_raw, meta) \
                 VALUES ($1, $2, $3, $4, $5, $6::real[]::vector, $7::real[], $8::text::jsonb) \
                 ON CONFLICT (bank, id) DO NOTHING"
            ),
            format!("UPDATE {t} SET content = $3 WHERE bank = $1 AND id = $2"),
            format!(
                "UPDATE {t} SET content = $3, embedding = $4::real[]::vector, \
                 embedding_raw = $5::real[] WHERE bank = $1 AND id = $2"
            ),
            format!("DELETE FROM {t} WHERE bank = $1 AND id = $2"),
            format!("DELETE FROM {t} WHERE bank = $1"),
            "SELECT pg_advisory_xact_lock($1::int4, $2::int4)".to_string(),
        ];
        Sql {
            index: format!("\"{name}_bank_seq\""),
            table,
            queries,
        }
    }

    fn get(&self, q: Q) -> &str {
        &self.queries[q as usize]
    }
}

/// A connection with the statements prepared on it.
struct Conn {
    client: Client,
    statements: [Option<Statement>; N_QUERIES],
}

/// The prepared statement `q` (preparing it through `c` the first time).
fn statement<C: GenericClient>(
    c: &mut C,
    cache: &mut [Option<Statement>; N_QUERIES],
    sql: &Sql,
    q: Q,
) -> std::result::Result<Statement, postgres::Error> {
    if let Some(s) = &cache[q as usize] {
        return Ok(s.clone());
    }
    let s = c.prepare(sql.get(q))?;
    cache[q as usize] = Some(s.clone());
    Ok(s)
}

/// The text of a PostgreSQL error: the server's message (with detail and hint) or the
/// client's (connection refused, timeout, …).
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                let c = cause.to_string();
                if !s.contains(&c) {
                    s.push_str(&format!(": {c}"));
                }
                src = cause.source();
            }
            s
        }
    }
}

/// A 32-bit FNV-1a hash (the bank-lock key).
fn fnv32(parts: &[&str]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h as i32
}

// ---------------------------------------------------------------------------------------
// The factory's shared state: connection settings, SQL, the pool.

struct Shared {
    config: Config,
    /// `table … at host=… port=…` (no password), for errors and `describe`.
    where_: String,
    sql: Sql,
    fresh: bool,
    idle: Mutex<Vec<Conn>>,
}

impl Shared {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::backend(format!("pgvector store {}", self.where_), message)
    }

    fn pg<'a>(&'a self, what: &'a str) -> impl Fn(postgres::Error) -> Error + 'a {
        move |e| self.err(format!("{what}: {}", pg_message(&e)))
    }

    fn connect(&self) -> Result<Conn> {
        let client = self
            .config
            .connect(NoTls)
            .map_err(|e| self.err(format!("cannot connect: {}", pg_message(&e))))?;
        Ok(Conn {
            client,
            statements: Default::default(),
        })
    }

    /// A pooled connection that still answers, else a new one.
    fn checkout(&self) -> Result<Conn> {
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match pooled {
                Some(mut c) => {
                    if !c.client.is_closed() && c.client.is_valid(VALIDATE_TIMEOUT).is_ok() {
                        return Ok(c);
                    }
                }
                None => return self.connect(),
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Checks the database encoding, enables the extension and creates the table when
    /// absent, or checks that the table present is this store's.
    fn ensure_schema(&self, client: &mut Client) -> Result<()> {
        let pg = |what| self.pg(what);
        let encoding: String = client
            .query_one("SELECT current_setting('server_encoding')", &[])
            .map_err(pg("reading the server encoding"))?
            .get(0);
        if encoding != "UTF8" && encoding != "SQL_ASCII" {
            return Err(self.err(format!(
                "the database's encoding is {encoding}; the store needs a UTF8 database \
                 (CREATE DATABASE … ENCODING 'UTF8')"
            )));
        }
        let mut tx = client.transaction().map_err(pg("BEGIN"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(pg("locking the schema"))?;
        let has_vector: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')",
                &[],
            )
            .map_err(pg("looking for the pgvector extension"))?
            .get(0);
        if !has_vector {
            tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
                .map_err(|e| {
                    self.err(format!(
                        "the pgvector extension (`vector`) is not enabled in this database and \
                         could not be enabled: {}. Install pgvector on the server and run \
                         `CREATE EXTENSION vector;` in this database as a role allowed to \
                         (a superuser)",
                        pg_message(&e)
                    ))
                })?;
        }
        let t = &self.sql.table;
        let row = tx
            .query_one(
                "SELECT to_regclass($1)::oid, obj_description(to_regclass($1), 'pg_class')",
                &[t],
            )
            .map_err(pg("looking for the table"))?;
        let oid: Option<u32> = row.get(0);
        let comment: Option<String> = row.get(1);
        match oid {
            None => {
                let index = &self.sql.index;
                tx.batch_execute(&format!(
                    "CREATE TABLE {t} (
                        seq           bigserial PRIMARY KEY,
                        bank          text NOT NULL,
                        id            text NOT NULL,
                        content       text NOT NULL,
                        speaker       text,
                        time          text,
                        embedding     vector,
                        embedding_raw real[],
                        meta          jsonb NOT NULL,
                        UNIQUE (bank, id),
                        CHECK (embedding IS NULL OR embedding_raw IS NULL)
                    );
                    CREATE INDEX {index} ON {t} (bank, seq);
                    COMMENT ON TABLE {t} IS '{SCHEMA_COMMENT}{SCHEMA_VERSION}';"
                ))
                .map_err(pg("creating the table"))?;
            }
            Some(_) => {
                let version = comment
                    .as_deref()
                    .and_then(|c| c.strip_prefix(SCHEMA_COMMENT))
                    .and_then(|v| v.parse::<u32>().ok());
                match version {
                    Some(SCHEMA_VERSION) => {}
                    Some(v) => {
                        return Err(self.err(format!(
                            "the table's schema version {v} is not the one this build reads \
                             ({SCHEMA_VERSION})"
                        )));
                    }
                    None => {
                        return Err(self.err(format!(
                            "table {t} exists but was not created by this store (its comment \
                             is {comment:?}, not `{SCHEMA_COMMENT}{SCHEMA_VERSION}`); name \
                             another `table`"
                        )));
                    }
                }
            }
        }
        tx.commit().map_err(pg("COMMIT"))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Rows.

/// One row as read, strings unescaped, meta still JSON (decoded only for returned items).
struct Row {
    id: String,
    content: String,
    speaker: Option<String>,
    time: Option<String>,
    embedding: Option<Vec<f32>>,
    meta: String,
}

// ---------------------------------------------------------------------------------------
// The store.

/// One bank of a pgvector table, on its own (pooled) connection.
pub struct PgvectorStore {
    shared: Arc<Shared>,
    /// `None` only while being dropped.
    conn: RefCell<Option<Conn>>,
    bank: String,
    /// `bank` as stored.
    bank_db: String,
    lock: i32,
}

impl fmt::Debug for PgvectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgvectorStore")
            .field("at", &self.shared.where_)
            .field("bank", &self.bank)
            .finish()
    }
}

impl Drop for PgvectorStore {
    fn drop(&mut self) {
        if let Some(c) = self.conn.get_mut().take() {
            self.shared.checkin(c);
        }
    }
}

impl PgvectorStore {
    /// The bank this store reads and writes.
    pub fn bank(&self) -> &str {
        &self.bank
    }

    fn with<T>(&self, f: impl FnOnce(&mut Conn, &Shared) -> Result<T>) -> Result<T> {
        let mut guard = self.conn.borrow_mut();
        let conn = guard
            .as_mut()
            .ok_or_else(|| self.shared.err("the store's connection is gone"))?;
        f(conn, &self.shared)
    }

    fn corrupt(&self, id: &str, what: &str) -> Error {
        self.shared.err(format!(
            "bank `{}`, item `{id}`: {what} (the row was not written by this store)",
            self.bank
        ))
    }

    fn unesc(&self, id: &str, field: &str, s: String) -> Result<String> {
        unesc(s).ok_or_else(|| {
            self.corrupt(
                id,
                &format!("{field} holds a stray U+10FFFF escape character"),
            )
        })
    }

    fn row(&self, r: &postgres::Row) -> Result<Row> {
        let pg = self.shared.pg("reading a row");
        let id: String = r.try_get(0).map_err(&pg)?;
        let id = self.unesc("?", "id", id)?;
        let content: String = r.try_get(1).map_err(&pg)?;
        let speaker: Option<String> = r.try_get(2).map_err(&pg)?;
        let time: Option<String> = r.try_get(3).map_err(&pg)?;
        Ok(Row {
            content: self.unesc(&id, "content", content)?,
            speaker: speaker.map(|s| self.unesc(&id, "speaker", s)).transpose()?,
            time: time.map(|s| self.unesc(&id, "time", s)).transpose()?,
            embedding: r.try_get(4).map_err(&pg)?,
            meta: r.try_get(5).map_err(&pg)?,
            id,
        })
    }

    fn item(&self, row: Row) -> Result<MemoryItem> {
        let stored: BTreeMap<String, String> = serde_json::from_str(&row.meta).map_err(|e| {
            self.corrupt(&row.id, &format!("meta is not an object of strings: {e}"))
        })?;
        let mut meta = BTreeMap::new();
        for (k, v) in stored {
            meta.insert(
                self.unesc(&row.id, "meta", k)?,
                self.unesc(&row.id, "meta", v)?,
            );
        }
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
        let raw = self.with(|c, sh| {
            let pg = sh.pg("reading the bank");
            match speaker {
                None => {
                    let st = statement(&mut c.client, &mut c.statements, &sh.sql, Q::Rows)
                        .map_err(&pg)?;
                    c.client.query(&st, &[&self.bank_db]).map_err(&pg)
                }
                Some(s) => {
                    let st = statement(&mut c.client, &mut c.statements, &sh.sql, Q::RowsOfSpeaker)
                        .map_err(&pg)?;
                    c.client
                        .query(&st, &[&self.bank_db, &esc(s).as_ref()])
                        .map_err(&pg)
                }
            }
        })?;
        raw.iter().map(|r| self.row(r)).collect()
    }

    fn insert<C: GenericClient>(
        c: &mut C,
        cache: &mut [Option<Statement>; N_QUERIES],
        sh: &Shared,
        bank: &str,
        item: &MemoryItem,
    ) -> Result<bool> {
        let meta: BTreeMap<Cow<'_, str>, Cow<'_, str>> =
            item.meta.iter().map(|(k, v)| (esc(k), esc(v))).collect();
        let meta = serde_json::to_string(&meta)
            .map_err(|e| sh.err(format!("encoding the meta of item `{}`: {e}", item.id)))?;
        let (vector, raw) = embedding_params(item.embedding.as_deref());
        let pg = sh.pg("adding an item");
        let st = statement(c, cache, &sh.sql, Q::Insert).map_err(&pg)?;
        let n = c
            .execute(
                &st,
                &[
                    &bank,
                    &esc(&item.id).as_ref(),
                    &esc(&item.content).as_ref(),
                    &item.speaker.as_deref().map(esc).as_deref(),
                    &item.time.as_deref().map(esc).as_deref(),
                    &vector,
                    &raw,
                    &meta,
                ],
            )
            .map_err(&pg)?;
        Ok(n > 0)
    }

    fn apply_one<C: GenericClient>(
        c: &mut C,
        cache: &mut [Option<Statement>; N_QUERIES],
        sh: &Shared,
        bank: &str,
        edit: &MemoryEdit,
    ) -> Result<EditOutcome> {
        let pg = sh.pg("applying an edit");
        Ok(match edit {
            MemoryEdit::Add { item } => {
                if Self::insert(c, cache, sh, bank, item)? {
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
                let (id_db, content_db) = (esc(id), esc(content));
                let n = match embedding {
                    Some(e) => {
                        let (vector, raw) = embedding_params(Some(e));
                        let st =
                            statement(c, cache, &sh.sql, Q::UpdateWithEmbedding).map_err(&pg)?;
                        c.execute(
                            &st,
                            &[&bank, &id_db.as_ref(), &content_db.as_ref(), &vector, &raw],
                        )
                        .map_err(&pg)?
                    }
                    None => {
                        let st = statement(c, cache, &sh.sql, Q::UpdateContent).map_err(&pg)?;
                        c.execute(&st, &[&bank, &id_db.as_ref(), &content_db.as_ref()])
                            .map_err(&pg)?
                    }
                };
                if n > 0 {
                    EditOutcome::Applied
                } else {
                    EditOutcome::Rejected(format!("no item with id `{id}`"))
                }
            }
            MemoryEdit::Delete { id } => {
                let st = statement(c, cache, &sh.sql, Q::Delete).map_err(&pg)?;
                let n = c.execute(&st, &[&bank, &esc(id).as_ref()]).map_err(&pg)?;
                if n > 0 {
                    EditOutcome::Applied
                } else {
                    EditOutcome::Rejected(format!("no item with id `{id}`"))
                }
            }
            MemoryEdit::Overwrite { content } => {
                let st = statement(c, cache, &sh.sql, Q::Clear).map_err(&pg)?;
                c.execute(&st, &[&bank]).map_err(&pg)?;
                Self::insert(
                    c,
                    cache,
                    sh,
                    bank,
                    &MemoryItem::new(OVERWRITE_ID, content.clone()),
                )?;
                EditOutcome::Applied
            }
            MemoryEdit::Noop => EditOutcome::Unchanged,
        })
    }
}

/// Runs `f` in one transaction holding bank `bank_db`'s advisory lock; commits when it
/// returns `Ok`, rolls back otherwise.
fn in_bank_transaction<T>(
    c: &mut Conn,
    sh: &Shared,
    bank_db: &str,
    lock: i32,
    f: impl FnOnce(&mut postgres::Transaction<'_>, &mut [Option<Statement>; N_QUERIES]) -> Result<T>,
) -> Result<T> {
    let Conn { client, statements } = c;
    let mut tx = client.transaction().map_err(sh.pg("BEGIN"))?;
    let st =
        statement(&mut tx, statements, &sh.sql, Q::LockBank).map_err(sh.pg("locking the bank"))?;
    tx.execute(&st, &[&BANK_LOCK_NAMESPACE, &lock])
        .map_err(sh.pg(&format!("locking bank `{bank_db}`")))?;
    let out = f(&mut tx, statements)?;
    tx.commit().map_err(sh.pg("COMMIT"))?;
    Ok(out)
}

impl MemoryStore for PgvectorStore {
    fn apply(&mut self, edits: &[MemoryEdit]) -> Result<Vec<EditOutcome>> {
        if edits.iter().all(|e| matches!(e, MemoryEdit::Noop)) {
            return Ok(vec![EditOutcome::Unchanged; edits.len()]);
        }
        let (bank, lock) = (&self.bank_db, self.lock);
        self.with(|c, sh| {
            in_bank_transaction(c, sh, bank, lock, |tx, cache| {
                edits
                    .iter()
                    .map(|e| Self::apply_one(tx, cache, sh, bank, e))
                    .collect()
            })
        })
    }

    fn items(&self) -> Result<Vec<MemoryItem>> {
        self.rows(None)?.into_iter().map(|r| self.item(r)).collect()
    }

    fn get(&self, id: &str) -> Result<Option<MemoryItem>> {
        let raw = self.with(|c, sh| {
            let pg = sh.pg("reading an item");
            let st = statement(&mut c.client, &mut c.statements, &sh.sql, Q::Get).map_err(&pg)?;
            c.client
                .query_opt(&st, &[&self.bank_db, &esc(id).as_ref()])
                .map_err(&pg)
        })?;
        match raw {
            None => Ok(None),
            Some(r) => {
                let row = self.row(&r)?;
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
        let n: i64 = self.with(|c, sh| {
            let pg = sh.pg("counting the bank's items");
            let st = statement(&mut c.client, &mut c.statements, &sh.sql, Q::Count).map_err(&pg)?;
            Ok(c.client
                .query_one(&st, &[&self.bank_db])
                .map_err(&pg)?
                .get(0))
        })?;
        usize::try_from(n).map_err(|_| {
            self.shared
                .err(format!("bank `{}` counts {n} items", self.bank))
        })
    }
}

// ---------------------------------------------------------------------------------------
// The factory.

/// Opens the banks of one pgvector table.
#[derive(Clone)]
pub struct PgvectorFactory {
    shared: Arc<Shared>,
}

impl fmt::Debug for PgvectorFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgvectorFactory")
            .field("at", &self.shared.where_)
            .field("fresh", &self.shared.fresh)
            .finish()
    }
}

impl PgvectorFactory {
    /// Connects with the connection string `url` (libpq `key=value` pairs or a
    /// `postgresql://` URL) and makes sure `table` exists (see [`PgvectorFactory::with_config`]).
    /// A malformed string or table name is an [`Error::Invalid`] that does not repeat the
    /// string (it may hold a password).
    pub fn new(url: &str, table: &str, fresh: bool) -> Result<Self> {
        let config = parse_url(url).map_err(|m| Error::Invalid(format!("pgvector store: {m}")))?;
        Self::with_config(config, table, fresh)
    }

    /// Connects with `config` (a connect timeout of 30 s and the application name `memfactory`
    /// unless it sets them), enables the pgvector extension if needed, and creates `table`
    /// (`name` or `schema.name`) when absent. With `fresh`, [`StoreFactory::open`] clears the
    /// bank it opens. Connection and server failures are [`Error::Backend`]s naming the host,
    /// port, database and table (never the password).
    pub fn with_config(config: Config, table: &str, fresh: bool) -> Result<Self> {
        let (quoted, name) =
            table_sql(table).map_err(|m| Error::Invalid(format!("pgvector store table {m}")))?;
        let shared = Shared {
            where_: format!("{table} at {}", target(&config)),
            config: with_defaults(config),
            sql: Sql::new(quoted, &name),
            fresh,
            idle: Mutex::new(Vec::new()),
        };
        let mut conn = shared.connect()?;
        shared.ensure_schema(&mut conn.client)?;
        shared.checkin(conn);
        Ok(PgvectorFactory {
            shared: Arc::new(shared),
        })
    }

    /// Whether opening a bank clears it.
    pub fn fresh(&self) -> bool {
        self.shared.fresh
    }

    /// The table and server, e.g. `memfactory_items at host=127.0.0.1 port=5432 dbname=…`
    /// (never the password).
    pub fn location(&self) -> &str {
        &self.shared.where_
    }

    /// Opens bank `bank` (cleared first when the factory is `fresh`).
    pub fn open_bank(&self, bank: &str) -> Result<PgvectorStore> {
        let sh = &self.shared;
        let mut conn = sh.checkout()?;
        let bank_db = esc(bank).into_owned();
        let lock = fnv32(&[&sh.sql.table, &bank_db]);
        if sh.fresh {
            in_bank_transaction(&mut conn, sh, &bank_db, lock, |tx, cache| {
                let st = statement(tx, cache, &sh.sql, Q::Clear).map_err(sh.pg("clearing"))?;
                tx.execute(&st, &[&bank_db])
                    .map_err(sh.pg(&format!("clearing bank `{bank}`")))?;
                Ok(())
            })?;
        }
        Ok(PgvectorStore {
            shared: Arc::clone(sh),
            conn: RefCell::new(Some(conn)),
            bank: bank.to_string(),
            bank_db,
            lock,
        })
    }

    /// Names of the banks that hold at least one item, sorted.
    pub fn banks(&self) -> Result<Vec<String>> {
        let sh = &self.shared;
        let mut conn = sh.checkout()?;
        let rows = conn
            .client
            .query(&format!("SELECT DISTINCT bank FROM {}", sh.sql.table), &[])
            .map_err(sh.pg("listing the banks"));
        sh.checkin(conn);
        let mut banks = Vec::new();
        for r in rows? {
            let b: String = r.get(0);
            banks
                .push(unesc(b).ok_or_else(|| sh.err("a bank name holds a stray U+10FFFF escape"))?);
        }
        banks.sort();
        Ok(banks)
    }
}

impl StoreFactory for PgvectorFactory {
    fn describe(&self) -> String {
        format!(
            "pgvector store {} ({})",
            self.shared.where_,
            if self.shared.fresh {
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

/// Keys of `[store]` for kind `pgvector`.
const KEYS: [&str; 5] = ["fresh", "kind", "table", "url", "url_env"];

fn build(cfg: &mut Cfg) -> Result<Box<dyn StoreFactory>> {
    // Reject unknown keys before connecting (`Cfg::finish` would reject them too, but only
    // after `build` returns).
    if let Some(k) = cfg.table().keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(cfg.error(
            k,
            format!("unknown key (this table accepts: {})", KEYS.join(", ")),
        ));
    }
    let url: Option<String> = cfg.opt("url")?;
    let url_env: Option<String> = cfg.opt("url_env")?;
    let (key, url) = match (url, url_env) {
        (Some(_), Some(_)) => {
            return Err(cfg.error(
                "url",
                "give either `url` or `url_env` (the environment variable holding the \
                 connection string), not both",
            ));
        }
        (None, None) => {
            return Err(cfg.error(
                "url",
                "missing: give `url` (a connection string such as \"host=127.0.0.1 port=5432 \
                 user=memfactory dbname=memfactory\") or `url_env` (the environment variable \
                 holding one)",
            ));
        }
        (Some(u), None) => ("url", u),
        (None, Some(var)) => {
            if var.trim().is_empty() {
                return Err(cfg.error("url_env", "must name an environment variable"));
            }
            match std::env::var(&var) {
                Ok(u) if !u.trim().is_empty() => ("url_env", u),
                Ok(_) => {
                    return Err(
                        cfg.error("url_env", format!("environment variable `{var}` is empty"))
                    );
                }
                Err(std::env::VarError::NotPresent) => {
                    return Err(cfg.error(
                        "url_env",
                        format!("environment variable `{var}` is not set"),
                    ));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(cfg.error(
                        "url_env",
                        format!("environment variable `{var}` is not UTF-8"),
                    ));
                }
            }
        }
    };
    let config = parse_url(&url).map_err(|m| cfg.error(key, m))?;
    let table: String = cfg.get("table", DEFAULT_TABLE.to_string())?;
    table_sql(&table).map_err(|m| cfg.error("table", m))?;
    let fresh: bool = cfg.get("fresh", true)?;
    Ok(Box::new(PgvectorFactory::with_config(
        config, &table, fresh,
    )?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn StoreFactory> {
        kind: "pgvector",
        about: "PostgreSQL + pgvector store: banks shared across processes (one transaction per apply), exact cosine or lexical top-k",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_leaves_plain_text_alone() {
        for s in [
            "",
            "plain",
            "ünïcödé 🍵",
            "\0",
            "a\0b",
            "\u{10FFFF}",
            "\u{10FFFF}0",
            "\0\u{10FFFF}\0\u{10FFFF}\u{10FFFF}00",
        ] {
            let e = esc(s);
            assert!(!e.contains('\0'), "{s:?} → {e:?}");
            assert_eq!(unesc(e.clone().into_owned()).as_deref(), Some(s), "{e:?}");
        }
        assert!(matches!(esc("plain"), Cow::Borrowed(_)));
        assert_eq!(unesc("x\u{10FFFF}".into()), None);
        assert_eq!(unesc("\u{10FFFF}a".into()), None);
        // Injective: distinct strings stay distinct.
        assert_ne!(esc("\0"), esc("\u{10FFFF}0"));
    }

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(
            table_sql("memfactory_items").unwrap(),
            ("\"memfactory_items\"".into(), "memfactory_items".into())
        );
        assert_eq!(
            table_sql("ci.Banks_2").unwrap(),
            ("\"ci\".\"Banks_2\"".into(), "Banks_2".into())
        );
        for bad in [
            "",
            "a.b.c",
            ".x",
            "x.",
            "2x",
            "x y",
            "x\"; DROP TABLE y; --",
            "ünï",
            &"x".repeat(55),
        ] {
            assert!(table_sql(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connection_strings_are_parsed_and_described_without_the_password() {
        let c = parse_url("host=db.example port=6543 user=u password=s3cret dbname=banks").unwrap();
        let t = target(&c);
        assert_eq!(t, "host=db.example port=6543 dbname=banks user=u");
        assert_eq!(c.get_connect_timeout(), None);
        let c = with_defaults(c);
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(c.get_application_name(), Some("memfactory"));
        let c = parse_url("postgresql://u:s3cret@10.1.2.3:5433/banks?connect_timeout=3").unwrap();
        assert_eq!(target(&c), "host=10.1.2.3 port=5433 dbname=banks user=u");
        let c = with_defaults(c);
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert!(!format!("{c:?}").contains("s3cret"));
        for bad in [
            "",
            "   ",
            "user=u password=s3cret",
            "host=h port=notaport password=s3cret",
            "host=h password='s3cret",
            "postgresql://u:s3cret@[::1/db",
            "hots=h password=s3cret",
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(!e.contains("s3cret"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn embeddings_pgvector_cannot_hold_go_to_the_raw_column() {
        let ok = [0.5f32, -1.0];
        assert_eq!(embedding_params(Some(&ok)), (Some(&ok[..]), None));
        for e in [
            vec![],
            vec![f32::NAN],
            vec![1.0, f32::INFINITY],
            vec![f32::NEG_INFINITY],
            vec![0.0; VECTOR_MAX_DIM + 1],
        ] {
            let (vector, raw) = embedding_params(Some(&e));
            assert!(vector.is_none());
            assert!(std::ptr::eq(raw.unwrap(), &e[..]));
        }
        assert_eq!(embedding_params(None), (None, None));
        assert!(fits_vector(&vec![1.0; VECTOR_MAX_DIM]));
    }
}
