//! Engine bench (placeholder until the engine lands).
fn main() {}
