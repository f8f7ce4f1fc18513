//! The in-memory store satisfies the `MemoryStore` contract (memfactory-store-conformance).

use memfactory_core::MemoryStore;
use memfactory_store_conformance::{run_all, run_all_factory};
use memfactory_store_memory::{InMemoryFactory, InMemoryStore};

#[test]
fn in_memory_factory_passes_the_conformance_suite() {
    run_all_factory(&InMemoryFactory);
}

#[test]
fn in_memory_store_passes_the_conformance_suite() {
    run_all(&|_bank| Box::new(InMemoryStore::new()) as Box<dyn MemoryStore>);
}
