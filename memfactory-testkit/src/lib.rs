//! # memfactory-testkit
//!
//! Test support shared by MemFactory's crates (a `publish = false` dev-dependency, never a
//! runtime one). Today: [`llama_server`], a real llama.cpp `llama-server` serving the SmolLM2
//! GGUF on 127.0.0.1, started by a test and killed when dropped, so the OpenAI-compatible
//! backend, the judge and `eval --sweep` are tested against the real thing. Tests skip with a
//! printed reason when the binary or the model is missing; `.ci/run` provides both.

pub mod llama_server;
