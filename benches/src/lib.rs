//! # memfactory-benches
//!
//! Benchmarks of MemFactory, kept out of the component crates:
//!
//! - `benches/framework.rs` (criterion): the framework's own overhead — answer metrics and a
//!   whole MemAgent episode with the scripted LM (so the LM costs nothing and what is left is
//!   chunking, prompt rendering, recording and memory edits);
//! - the native engine's criterion bench lives beside the engine in
//!   `memfactory-lm/burn/benches/engine.rs`;
//! - `scripts/compare_engines.py`: the side-by-side comparison of the native engine with
//!   llama.cpp and HF transformers on the same GGUF, in one run (results in BENCHMARKS.md).
