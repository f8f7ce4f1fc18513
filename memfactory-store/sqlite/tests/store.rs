//! Persistence across reopening, `fresh`, bad database paths, recipe keys, and concurrent
//! writers.

use std::collections::BTreeMap;
use std::path::Path;

use memfactory_core::{
    Cfg, EditOutcome, Error, MemoryEdit, MemoryItem, SearchQuery, StoreFactory, registry,
};
use memfactory_store_sqlite::SqliteFactory;

fn full_item(id: &str, n: usize) -> MemoryItem {
    MemoryItem {
        id: id.into(),
        content: format!("item {n}: \"quoted\"\nand ünïcödé"),
        speaker: Some(if n.is_multiple_of(2) { "alice" } else { "bob" }.into()),
        time: Some(format!("day {n}")),
        embedding: Some(vec![n as f32, -0.5, 1e-7, f32::MAX]),
        meta: BTreeMap::from([("turn".to_string(), n.to_string())]),
    }
}

fn add(item: MemoryItem) -> MemoryEdit {
    MemoryEdit::Add { item }
}

#[test]
fn items_persist_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persist.sqlite");
    let items: Vec<MemoryItem> = ["k", "c", "x", "a"]
        .iter()
        .enumerate()
        .map(|(n, id)| full_item(id, n))
        .collect();
    {
        let f = SqliteFactory::new(&path, false).unwrap();
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
    }
    let mut expected = items.clone();
    expected[1].content = "c, updated".into();
    expected.remove(2);

    // A new factory on the same file, keeping banks: everything is there, in order.
    let f = SqliteFactory::new(&path, false).unwrap();
    assert_eq!(f.banks().unwrap(), ["sample-1/0", "sample-2/0"]);
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

    // A fresh factory clears the banks it opens, and only those.
    let f = SqliteFactory::new(&path, true).unwrap();
    let s = f.open("sample-1/0").unwrap();
    assert!(s.is_empty().unwrap());
    let kept = SqliteFactory::new(&path, false).unwrap();
    assert_eq!(
        kept.open("sample-2/0").unwrap().items().unwrap(),
        [full_item("k", 9)]
    );
    assert_eq!(kept.banks().unwrap(), ["sample-2/0"]);
}

#[test]
fn a_rejected_edit_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite");
    let f = SqliteFactory::new(&path, false).unwrap();
    let mut s = f.open("b").unwrap();
    let out = s
        .apply(&[
            add(MemoryItem::new("a", "one")),
            add(MemoryItem::new("a", "two")),
        ])
        .unwrap();
    assert!(matches!(out[1], EditOutcome::Rejected(_)));
    drop(s);
    let s = SqliteFactory::new(&path, false).unwrap().open("b").unwrap();
    assert_eq!(s.items().unwrap(), [MemoryItem::new("a", "one")]);
}

fn err_text(r: memfactory_core::Result<SqliteFactory>) -> (Error, String) {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    (e, s)
}

#[test]
fn bad_paths_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();

    // A directory that does not exist.
    let missing = dir.path().join("no-such-dir").join("m.sqlite");
    let (e, s) = err_text(SqliteFactory::new(&missing, true));
    assert!(s.contains(&missing.display().to_string()), "{s}");
    assert!(s.contains("no-such-dir"), "{s}");
    assert!(e.is_user_error(), "{e:?}");
    assert!(!missing.parent().unwrap().exists());

    // A directory where the file should be.
    let (e, s) = err_text(SqliteFactory::new(dir.path(), true));
    assert!(s.contains(&dir.path().display().to_string()), "{s}");
    assert!(s.contains("directory"), "{s}");
    assert!(e.is_user_error(), "{e:?}");

    // A file that is not a database.
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(
        &junk,
        "this is not a database, just some text\n".repeat(200),
    )
    .unwrap();
    let (e, s) = err_text(SqliteFactory::new(&junk, true));
    assert!(matches!(e, Error::Data { .. }), "{e:?}");
    assert!(s.contains(&junk.display().to_string()), "{s}");
    assert!(s.contains("not a valid SQLite database"), "{s}");

    // A database whose pages were overwritten (header intact): an error when read, not a
    // panic.
    let broken = dir.path().join("broken.sqlite");
    {
        let f = SqliteFactory::new(&broken, false).unwrap();
        let mut s = f.open("b").unwrap();
        let batch: Vec<MemoryEdit> = (0..200)
            .map(|n| add(MemoryItem::new(format!("{n}"), "x".repeat(500))))
            .collect();
        s.apply(&batch).unwrap();
    }
    assert!(!Path::new(&format!("{}-wal", broken.display())).exists());
    let mut bytes = std::fs::read(&broken).unwrap();
    assert!(bytes.len() > 8192);
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&broken, &bytes).unwrap();
    let r = SqliteFactory::new(&broken, false).and_then(|f| {
        let s = f.open("b")?;
        s.items()
    });
    let e = r.expect_err("a corrupt database must not read back");
    let s = e.to_string();
    assert!(s.contains(&broken.display().to_string()), "{s}");
}

fn build(src: &str) -> memfactory_core::Result<(Box<dyn StoreFactory>, toml::Table)> {
    let table: toml::Table = toml::from_str(src).unwrap();
    registry::build::<dyn StoreFactory>(Cfg::new("store", table))
}

#[test]
fn recipe_keys_are_read_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipe.sqlite");
    let p = path.display().to_string();

    let (f, resolved) = build(&format!("kind = \"sqlite\"\npath = {p:?}")).unwrap();
    assert!(f.describe().contains(&p), "{}", f.describe());
    assert_eq!(resolved["fresh"].as_bool(), Some(true));
    assert_eq!(resolved["path"].as_str(), Some(p.as_str()));
    assert_eq!(resolved["kind"].as_str(), Some("sqlite"));
    assert!(path.exists());

    let (_, resolved) = build(&format!("kind = \"sqlite\"\npath = {p:?}\nfresh = false")).unwrap();
    assert_eq!(resolved["fresh"].as_bool(), Some(false));

    // A misspelt key names itself, and creates no file.
    let other = dir.path().join("typo.sqlite");
    let e = build(&format!(
        "kind = \"sqlite\"\npath = {:?}\nfersh = false",
        other.display().to_string()
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("`store.fersh`"), "{e}");
    assert!(e.contains("fresh, kind, path"), "{e}");
    assert!(!other.exists());

    let e = build("kind = \"sqlite\"").err().unwrap().to_string();
    assert!(e.contains("`store.path`") && e.contains("missing"), "{e}");
    let e = build("kind = \"sqlite\"\npath = \"\"")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`store.path`"), "{e}");
    let e = build(&format!("kind = \"sqlite\"\npath = {p:?}\nfresh = \"yes\""))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`store.fresh`"), "{e}");
    let e = build("kind = \"sqlite\"\npath = 3")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`store.path`"), "{e}");

    assert!(
        registry::kinds::<dyn StoreFactory>()
            .unwrap()
            .contains(&"sqlite")
    );
}

#[test]
fn concurrent_writers_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = SqliteFactory::new(dir.path().join("c.sqlite"), true).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let f = &f;
            scope.spawn(move || {
                let mut s = f.open(&format!("bank-{t}")).unwrap();
                for n in 0..40 {
                    let out = s
                        .apply(&[
                            add(MemoryItem::new(
                                format!("{n}"),
                                format!("thread {t} item {n}"),
                            )),
                            MemoryEdit::Update {
                                id: format!("{n}"),
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
    for t in 0..4 {
        let s = SqliteFactory::new(f.path(), false)
            .unwrap()
            .open(&format!("bank-{t}"))
            .unwrap();
        let items = s.items().unwrap();
        assert_eq!(items.len(), 40);
        for (n, i) in items.iter().enumerate() {
            assert_eq!(i.id, n.to_string());
            assert_eq!(i.content, format!("thread {t} item {n} updated"));
        }
    }
}
