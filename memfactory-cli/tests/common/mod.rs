//! Helpers shared by the tests that run committed recipes.

use std::path::{Path, PathBuf};

/// The workspace root (recipes name their files relative to it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Paths named by `path` / `dir` / `filler_path` keys of `recipe` that do not exist
/// (relative to the workspace root).
pub fn missing_paths(recipe: &str) -> Vec<String> {
    recipe
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            ["path = \"", "dir = \"", "filler_path = \""]
                .iter()
                .find_map(|k| l.strip_prefix(k))
        })
        .filter_map(|r| r.split('"').next())
        .filter(|p| !root().join(p).exists())
        .map(str::to_string)
        .collect()
}
