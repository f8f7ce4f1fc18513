//! Helpers for the reward crates' golden tests: a reward built from a recipe table through
//! the registry (as a recipe would build it), an episode that only answered, and the string
//! arrays of a golden JSON file.

use memfactory_core::{Episode, Recipe, Reward};

/// Builds the reward a recipe table (TOML text, e.g. `kind = "f1-mem0"\nextract = "text"`)
/// names, through the registry. The reward's crate must be linked into the test.
pub fn build(table: &str) -> Box<dyn Reward> {
    let cfg = Recipe::parse(table, "<test>")
        .unwrap_or_else(|e| panic!("{e}"))
        .cfg();
    memfactory_core::registry::build::<dyn Reward>(cfg)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// An episode of sample `s` whose only content is its final answer.
pub fn answered(answer: impl Into<String>) -> Episode {
    Episode {
        sample_id: "s".into(),
        path: 0,
        seed: 0,
        steps: Vec::new(),
        answer: Some(answer.into()),
        memory_tokens: None,
    }
}

/// A JSON array of strings as a `Vec<String>` (panics on anything else: golden files are
/// written by the committed scripts).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, found {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("expected a string, found {s}"))
                .to_string()
        })
        .collect()
}
