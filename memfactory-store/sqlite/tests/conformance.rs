//! The SQLite store satisfies the `MemoryStore` contract (memfactory-store-conformance),
//! whether banks are cleared on open or kept.

use memfactory_store_conformance::run_all_factory;
use memfactory_store_sqlite::SqliteFactory;

#[test]
fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let f = SqliteFactory::new(dir.path().join("banks.sqlite"), true).unwrap();
    run_all_factory(&f);
}

#[test]
fn sqlite_store_keeping_banks_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let f = SqliteFactory::new(dir.path().join("banks.sqlite"), false).unwrap();
    run_all_factory(&f);
    // Every check's banks are still in the file.
    assert!(f.banks().unwrap().len() >= memfactory_store_conformance::CHECKS.len() - 1);
}
