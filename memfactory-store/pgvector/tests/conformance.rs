//! The pgvector store satisfies the `MemoryStore` contract (memfactory-store-conformance),
//! whether banks are cleared on open or kept. Needs `MEMFACTORY_PG_URL` (skipped without).

mod support;

use memfactory_store_conformance::{CHECKS, run_all_factory};
use memfactory_store_pgvector::PgvectorFactory;

#[test]
fn pgvector_store_passes_the_conformance_suite() {
    let Some(url) = support::server("pgvector_store_passes_the_conformance_suite") else {
        return;
    };
    let t = support::Scratch::new(&url, "conformance_fresh");
    let f = PgvectorFactory::new(&url, &t.table, true).unwrap();
    run_all_factory(&f);
}

#[test]
fn pgvector_store_keeping_banks_passes_the_conformance_suite() {
    let Some(url) = support::server("pgvector_store_keeping_banks_passes_the_conformance_suite")
    else {
        return;
    };
    let t = support::Scratch::new(&url, "conformance_kept");
    let f = PgvectorFactory::new(&url, &t.table, false).unwrap();
    run_all_factory(&f);
    // Every check's banks are still in the table.
    assert!(f.banks().unwrap().len() >= CHECKS.len() - 1);
}
