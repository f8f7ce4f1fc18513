//! Persistence across reconnecting, `fresh`, exact round trips of awkward values, atomic
//! batches, recipe keys, connection errors, foreign tables, the connection pool, and
//! concurrent writers. Tests that need a server read `MEMFACTORY_PG_URL` (skipped without);
//! the error tests need none.

mod support;

use std::collections::BTreeMap;

use memfactory_core::{
    Cfg, EditOutcome, Error, MemoryEdit, MemoryItem, SearchQuery, StoreFactory, registry,
};
use memfactory_store_pgvector::{PgvectorFactory, VECTOR_MAX_DIM};

fn full_item(id: &str, n: usize) -> MemoryItem {
    MemoryItem {
        id: id.into(),
        content: format!("item {n}: \"quoted\" 'single' \\ ;--\nand ünïcödé"),
        speaker: Some(if n.is_multiple_of(2) { "alice" } else { "bob" }.into()),
        time: Some(format!("day {n}")),
        embedding: Some(vec![n as f32, -0.5, 1e-7, f32::MAX]),
        meta: BTreeMap::from([("turn".to_string(), n.to_string())]),
    }
}

fn add(item: MemoryItem) -> MemoryEdit {
    MemoryEdit::Add { item }
}

/// Items whose every field is awkward for PostgreSQL: NUL (which `text` cannot hold), the
/// escape character U+10FFFF, embeddings `vector` cannot hold (empty, NaN, ±∞, too long),
/// subnormals and signed zeros.
fn awkward_items() -> Vec<MemoryItem> {
    let mut a = MemoryItem::new("nul\0id", "content with \0 NUL and \u{10FFFF}0 escape");
    a.speaker = Some("sp\0eaker".into());
    a.time = Some("\u{10FFFF}".into());
    a.embedding = Some(vec![f32::MIN_POSITIVE / 8.0, -0.0, 0.0, f32::MIN, 1e-45]);
    a.meta = BTreeMap::from([
        ("k\0ey".to_string(), "v\0alue".to_string()),
        (
            "\u{10FFFF}".to_string(),
            "\u{10FFFF}\u{10FFFF}0".to_string(),
        ),
        ("ctrl".to_string(), "\u{1}\u{1f}\t\r\n\"\\".to_string()),
    ]);
    let mut b = MemoryItem::new("empty-embedding", "");
    b.embedding = Some(Vec::new());
    let mut c = MemoryItem::new("infinite", "inf");
    c.embedding = Some(vec![1.0, f32::INFINITY, f32::NEG_INFINITY]);
    let mut d = MemoryItem::new("long", "more dimensions than pgvector holds");
    d.embedding = Some((0..=VECTOR_MAX_DIM).map(|i| i as f32 * 0.5).collect());
    let mut e = MemoryItem::new("widest", "as many dimensions as pgvector holds");
    e.embedding = Some((0..VECTOR_MAX_DIM).map(|i| (i as f32).sin()).collect());
    vec![a, b, c, d, e]
}

/// Embedding bits, so that NaN compares equal to itself.
fn bits(i: &MemoryItem) -> Option<Vec<u32>> {
    i.embedding
        .as_ref()
        .map(|e| e.iter().map(|x| x.to_bits()).collect())
}

#[test]
fn items_persist_across_reconnecting() {
    let Some(url) = support::server("items_persist_across_reconnecting") else {
        return;
    };
    let t = support::Scratch::new(&url, "persist");
    let items: Vec<MemoryItem> = ["k", "c", "x", "a"]
        .iter()
        .enumerate()
        .map(|(n, id)| full_item(id, n))
        .collect();
    {
        let f = PgvectorFactory::new(&url, &t.table, false).unwrap();
        let mut s = f.open("sample-1/0").unwrap();
        s.apply(&items.iter().cloned().map(add).collect::<Vec<_>>())
            .unwrap();
        s.apply(&[
            MemoryEdit::Update {
                id: "c".into(),
                content: "c, updated".into(),
                embedding: None,
            },
            MemoryEdit::Delete { id: "x".into() },
        ])
        .unwrap();
        let mut other = f.open("sample-2/0").unwrap();
        other.apply(&[add(full_item("k", 9))]).unwrap();
        let mut odd = f.open("bank with \0 NUL").unwrap();
        odd.apply(&awkward_items().into_iter().map(add).collect::<Vec<_>>())
            .unwrap();
    }
    let mut expected = items.clone();
    expected[1].content = "c, updated".into();
    expected.remove(2);

    // A new factory (new connections) on the same table, keeping banks: everything is
    // there, in order.
    let f = PgvectorFactory::new(&url, &t.table, false).unwrap();
    assert_eq!(
        f.banks().unwrap(),
        ["bank with \0 NUL", "sample-1/0", "sample-2/0"]
    );
    let s = f.open("sample-1/0").unwrap();
    assert_eq!(s.items().unwrap(), expected);
    assert_eq!(s.get("a").unwrap(), Some(expected[2].clone()));
    let hits = s
        .search(&SearchQuery {
            text: "item 3".into(),
            k: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(hits[0].0.id, "a");
    // Adding after reopening still goes last.
    let mut s = f.open("sample-1/0").unwrap();
    s.apply(&[add(full_item("b", 7))]).unwrap();
    assert_eq!(s.items().unwrap().last().unwrap().id, "b");
    drop(s);

    // Awkward values come back bit for bit, and are found by id and speaker.
    let odd = f.open("bank with \0 NUL").unwrap();
    let want = awkward_items();
    let got = odd.items().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(bits(g), bits(w), "embedding of {:?}", w.id);
        let (mut g, mut w) = (g.clone(), w.clone());
        g.embedding = None;
        w.embedding = None;
        assert_eq!(g, w);
    }
    assert_eq!(bits(&odd.get("nul\0id").unwrap().unwrap()), bits(&want[0]));
    assert_eq!(odd.get("nul").unwrap(), None);
    let q = SearchQuery {
        text: "NUL escape".into(),
        speaker: Some("sp\0eaker".into()),
        k: 5,
        ..Default::default()
    };
    let hits = odd.search(&q).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].0.id.as_str(), hits[0].1), ("nul\0id", 1.0));
    // The reference scorer sees the original text: "\u{10FFFF}0" holds the word "0".
    let q = SearchQuery {
        text: "0".into(),
        k: 1,
        ..Default::default()
    };
    assert_eq!(odd.search(&q).unwrap()[0].0.id, "nul\0id");

    // What is stored is readable SQL: the embedding as a pgvector `vector` when it can be
    // one, ids as plain text.
    let mut c = support::client(&url);
    let row = c
        .query_one(
            &format!(
                "SELECT embedding::text, embedding <=> '[1,0,0,0]', embedding_raw IS NULL \
                 FROM \"{}\" WHERE bank = 'sample-1/0' AND id = 'k'",
                t.table
            ),
            &[],
        )
        .unwrap();
    let text: String = row.get(0);
    assert!(text.starts_with("[0,-0.5,1e-07,3.4028235e+38]"), "{text}");
    assert!(row.get::<_, f64>(1).is_finite());
    assert!(row.get::<_, bool>(2));

    // A fresh factory clears the banks it opens, and only those.
    let f = PgvectorFactory::new(&url, &t.table, true).unwrap();
    let s = f.open("sample-1/0").unwrap();
    assert!(s.is_empty().unwrap());
    let kept = PgvectorFactory::new(&url, &t.table, false).unwrap();
    assert_eq!(
        kept.open("sample-2/0").unwrap().items().unwrap(),
        [full_item("k", 9)]
    );
    assert_eq!(kept.banks().unwrap(), ["bank with \0 NUL", "sample-2/0"]);
}

#[test]
fn a_rejected_edit_changes_nothing_and_a_failed_batch_rolls_back_whole() {
    let Some(url) =
        support::server("a_rejected_edit_changes_nothing_and_a_failed_batch_rolls_back_whole")
    else {
        return;
    };
    let t = support::Scratch::new(&url, "atomic");
    let f = PgvectorFactory::new(&url, &t.table, false).unwrap();
    let mut s = f.open("b").unwrap();
    let out = s
        .apply(&[
            add(MemoryItem::new("a", "one")),
            add(MemoryItem::new("a", "two")),
        ])
        .unwrap();
    assert!(matches!(out[1], EditOutcome::Rejected(_)));
    drop(s);
    let mut s = PgvectorFactory::new(&url, &t.table, false)
        .unwrap()
        .open("b")
        .unwrap();
    assert_eq!(s.items().unwrap(), [MemoryItem::new("a", "one")]);

    // The server refuses the third edit of a batch: the first two do not stay either, and
    // the store (and its pooled connection) keeps working.
    support::client(&url)
        .batch_execute(&format!(
            "ALTER TABLE \"{}\" ADD CONSTRAINT no_boom CHECK (content <> 'boom')",
            t.table
        ))
        .unwrap();
    let e = s
        .apply(&[
            add(MemoryItem::new("b", "two")),
            MemoryEdit::Delete { id: "a".into() },
            add(MemoryItem::new("c", "boom")),
        ])
        .expect_err("the server refuses the batch");
    let msg = e.to_string();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(msg.contains("no_boom") && msg.contains(&t.table), "{msg}");
    assert_eq!(s.items().unwrap(), [MemoryItem::new("a", "one")]);
    assert_eq!(
        s.apply(&[add(MemoryItem::new("c", "fine"))]).unwrap(),
        [EditOutcome::Applied]
    );
    drop(s);
    let s = f.open("b").unwrap();
    assert_eq!(
        s.items().unwrap(),
        [MemoryItem::new("a", "one"), MemoryItem::new("c", "fine")]
    );
}

fn build(src: &str) -> memfactory_core::Result<(Box<dyn StoreFactory>, toml::Table)> {
    let table: toml::Table = toml::from_str(src).unwrap();
    registry::build::<dyn StoreFactory>(Cfg::new("store", table))
}

fn build_err(src: &str) -> String {
    build(src).err().expect("expected an error").to_string()
}

#[test]
fn connection_failures_name_host_and_port_but_never_the_password() {
    // Nothing listens on port 1 of the loopback address: refused at once.
    let url = "host=127.0.0.1 port=1 user=someone password=hunter2-secret dbname=banks";
    let e = PgvectorFactory::new(url, "memfactory_items", true).expect_err("no server on port 1");
    let s = e.to_string();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    for want in ["host=127.0.0.1", "port=1", "dbname=banks", "cannot connect"] {
        assert!(s.contains(want), "{want:?} missing from: {s}");
    }
    assert!(!s.contains("hunter2"), "{s}");
    assert!(!format!("{e:?}").contains("hunter2"));

    // The same through a recipe, as a URL.
    let s = build_err(
        "kind = \"pgvector\"\nurl = \"postgresql://someone:hunter2-secret@127.0.0.1:1/banks\"",
    );
    assert!(s.contains("host=127.0.0.1 port=1"), "{s}");
    assert!(!s.contains("hunter2"), "{s}");

    // Malformed strings: a config error on the key, without the string.
    for (url, want) in [
        ("host=h port=notaport password=hunter2-secret", "port"),
        ("host=h password='hunter2-secret", "unterminated"),
        ("user=u password=hunter2-secret", "no host"),
        ("hots=h password=hunter2-secret", "hots"),
        ("", "empty"),
    ] {
        let s = build_err(&format!("kind = \"pgvector\"\nurl = {url:?}"));
        assert!(
            s.contains("`store.url`") && s.contains(want),
            "{url:?}: {s}"
        );
        assert!(!s.contains("hunter2"), "{s}");
        let e = PgvectorFactory::new(url, "t", true).expect_err(url);
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn recipe_keys_are_read_strictly() {
    // Errors found before connecting: no server needed.
    let s = build_err("kind = \"pgvector\"\nurl = \"host=h\"\ntabel = \"x\"");
    assert!(s.contains("`store.tabel`"), "{s}");
    assert!(s.contains("fresh, kind, table, url, url_env"), "{s}");
    let s = build_err("kind = \"pgvector\"");
    assert!(s.contains("`store.url`") && s.contains("url_env"), "{s}");
    let s = build_err("kind = \"pgvector\"\nurl = \"host=h\"\nurl_env = \"X\"");
    assert!(s.contains("`store.url`") && s.contains("not both"), "{s}");
    let s = build_err("kind = \"pgvector\"\nurl_env = \"MEMFACTORY_TEST_NO_SUCH_VARIABLE\"");
    assert!(
        s.contains("`store.url_env`") && s.contains("MEMFACTORY_TEST_NO_SUCH_VARIABLE"),
        "{s}"
    );
    assert!(s.contains("not set"), "{s}");
    let s = build_err("kind = \"pgvector\"\nurl_env = \"\"");
    assert!(s.contains("`store.url_env`"), "{s}");
    let s = build_err("kind = \"pgvector\"\nurl = 5");
    assert!(s.contains("`store.url`"), "{s}");
    for bad in ["x y", "a.b.c", "1abc", "t\\\"; DROP TABLE x; --", ""] {
        let s = build_err(&format!(
            "kind = \"pgvector\"\nurl = \"host=127.0.0.1 port=1\"\ntable = \"{bad}\""
        ));
        assert!(s.contains("`store.table`"), "{bad:?}: {s}");
    }
    let s = build_err("kind = \"pgvector\"\nurl = \"host=127.0.0.1 port=1\"\nfresh = \"yes\"");
    assert!(s.contains("`store.fresh`"), "{s}");
    assert!(
        registry::kinds::<dyn StoreFactory>()
            .unwrap()
            .contains(&"pgvector")
    );

    let Some(url) = support::server("recipe_keys_are_read_strictly (with a server)") else {
        return;
    };
    // MEMFACTORY_PG_URL holds the connection string: the recipe names the variable, and the
    // resolved recipe keeps the name, not the string.
    let t = support::Scratch::new(&url, "recipe");
    let (f, resolved) = build(&format!(
        "kind = \"pgvector\"\nurl_env = \"MEMFACTORY_PG_URL\"\ntable = \"{}\"",
        t.table
    ))
    .unwrap();
    assert_eq!(resolved["url_env"].as_str(), Some("MEMFACTORY_PG_URL"));
    assert_eq!(resolved["table"].as_str(), Some(t.table.as_str()));
    assert_eq!(resolved["fresh"].as_bool(), Some(true));
    assert_eq!(resolved["kind"].as_str(), Some("pgvector"));
    assert!(!resolved.contains_key("url"));
    assert!(f.describe().contains(&t.table), "{}", f.describe());
    assert!(f.describe().contains("cleared"), "{}", f.describe());
    let mut s = f.open("r").unwrap();
    s.apply(&[add(MemoryItem::new("a", "via a recipe"))])
        .unwrap();

    let (f, resolved) = build(&format!(
        "kind = \"pgvector\"\nurl = {url:?}\ntable = \"{}\"\nfresh = false",
        t.table
    ))
    .unwrap();
    assert_eq!(resolved["fresh"].as_bool(), Some(false));
    assert_eq!(resolved["url"].as_str(), Some(url.as_str()));
    assert_eq!(f.open("r").unwrap().len().unwrap(), 1);
}

#[test]
fn a_table_this_store_did_not_create_is_refused() {
    let Some(url) = support::server("a_table_this_store_did_not_create_is_refused") else {
        return;
    };
    let t = support::Scratch::new(&url, "foreign");
    support::client(&url)
        .batch_execute(&format!(
            "CREATE TABLE \"{}\" (id int PRIMARY KEY, note text)",
            t.table
        ))
        .unwrap();
    let e = PgvectorFactory::new(&url, &t.table, true).expect_err("a foreign table");
    let s = e.to_string();
    assert!(
        s.contains(&t.table) && s.contains("not created by this store"),
        "{s}"
    );
    // A newer layout is refused too.
    support::client(&url)
        .batch_execute(&format!(
            "COMMENT ON TABLE \"{}\" IS 'memfactory-store-pgvector schema 99'",
            t.table
        ))
        .unwrap();
    let s = PgvectorFactory::new(&url, &t.table, true)
        .expect_err("a newer schema")
        .to_string();
    assert!(s.contains("schema version 99"), "{s}");
}

/// Connections of this test, told apart by their `application_name`.
fn connections(url: &str, app: &str) -> i64 {
    support::client(url)
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0)
}

#[test]
fn connections_are_pooled_and_dead_ones_replaced() {
    let Some(server) = support::server("connections_are_pooled_and_dead_ones_replaced") else {
        return;
    };
    let app = format!("mf_pool_{}", std::process::id());
    let url = format!("{server} application_name={app}");
    let t = support::Scratch::new(&server, "pool");
    let f = PgvectorFactory::new(&url, &t.table, true).unwrap();
    for n in 0..30 {
        let mut s = f.open(&format!("bank-{n}")).unwrap();
        s.apply(&[add(MemoryItem::new("a", "x"))]).unwrap();
    }
    assert_eq!(connections(&server, &app), 1, "one connection, reused");
    {
        let _held: Vec<_> = (0..3)
            .map(|n| f.open(&format!("held-{n}")).unwrap())
            .collect();
        assert_eq!(connections(&server, &app), 3);
    }
    // The server ends the idle connections (as a restart or an idle timeout would): the next
    // open notices and connects anew.
    support::client(&server)
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap();
    let mut s = f.open("after").unwrap();
    assert_eq!(
        s.apply(&[add(MemoryItem::new("a", "x"))]).unwrap(),
        [EditOutcome::Applied]
    );
    assert_eq!(s.len().unwrap(), 1);
}

#[test]
fn concurrent_writers_share_one_table() {
    let Some(url) = support::server("concurrent_writers_share_one_table") else {
        return;
    };
    let scratch = support::Scratch::new(&url, "concurrent");
    let table = scratch.table.as_str();
    let f = PgvectorFactory::new(&url, table, false).unwrap();
    std::thread::scope(|scope| {
        // Four threads with a bank each, two more writing into one shared bank, each of those
        // through its own factory (as separate processes would).
        for t in 0..6 {
            let (f, url) = (&f, &url);
            scope.spawn(move || {
                let own;
                let (f, bank) = if t < 4 {
                    (f, format!("bank-{t}"))
                } else {
                    own = PgvectorFactory::new(url, table, false).unwrap();
                    (&own, "shared".to_string())
                };
                let mut s = f.open(&bank).unwrap();
                for n in 0..40 {
                    let id = format!("{t}-{n}");
                    let out = s
                        .apply(&[
                            add(MemoryItem::new(&id, format!("thread {t} item {n}"))),
                            MemoryEdit::Update {
                                id: id.clone(),
                                content: format!("thread {t} item {n} updated"),
                                embedding: Some(vec![t as f32, n as f32]),
                            },
                        ])
                        .unwrap();
                    assert_eq!(out, [EditOutcome::Applied, EditOutcome::Applied]);
                }
            });
        }
    });
    let reader = PgvectorFactory::new(&url, table, false).unwrap();
    for t in 0..4 {
        let items = reader.open(&format!("bank-{t}")).unwrap().items().unwrap();
        assert_eq!(items.len(), 40);
        for (n, i) in items.iter().enumerate() {
            assert_eq!(i.id, format!("{t}-{n}"));
            assert_eq!(i.content, format!("thread {t} item {n} updated"));
            assert_eq!(i.embedding, Some(vec![t as f32, n as f32]));
        }
    }
    let shared = reader.open("shared").unwrap().items().unwrap();
    assert_eq!(shared.len(), 80);
    for t in 4..6 {
        let mine: Vec<&str> = shared
            .iter()
            .filter(|i| i.id.starts_with(&format!("{t}-")))
            .map(|i| i.id.as_str())
            .collect();
        let want: Vec<String> = (0..40).map(|n| format!("{t}-{n}")).collect();
        assert_eq!(mine, want, "each writer's items in its order");
    }
}
