//! # memfactory-testkit
//!
//! Test support shared by MemFactory's crates (a `publish = false` dev-dependency, never a
//! runtime one):
//!
//! - [`llama_server`], a real llama.cpp `llama-server` serving the SmolLM2 GGUF on 127.0.0.1,
//!   started by a test and killed when dropped, so the OpenAI-compatible backend, the judge and
//!   `eval --sweep` are tested against the real thing. Tests skip with a printed reason when
//!   the binary or the model is missing; `.ci/run` provides both.
//! - [`CountingLm`], a wrapper that records how every `generate` call was batched, for the
//!   memory operations' and agents' batching tests.
//! - [`BagOfWords`], a deterministic bag-of-words embedder for retrieval and merge tests.
//! - [`reward`], the reward crates' golden-test helpers (build a reward from a recipe table,
//!   an episode that only answered, string arrays of a golden file).

mod bow;
mod counting;
pub mod llama_server;
pub mod reward;

pub use bow::BagOfWords;
pub use counting::CountingLm;
