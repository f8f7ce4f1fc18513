//! # memfactory
//!
//! The facade of MemFactory: one Cargo feature per component, profile features per
//! paradigm, and the recipe runner.
//!
//! Components register themselves through `inventory`, but inventory only sees crates that
//! are linked, so this crate names each enabled component crate (`use … as _;`). The
//! registry therefore holds exactly the components whose features are enabled — a test
//! checks it.
//!
//! ## Features
//!
//! One feature per component (`<family>-<kind>`, the recipe's `kind`), a profile per paradigm
//! (`memagent`, `memory-r1`, `rmm`), `train`, and the GPU backends `wgpu` / `cuda`. This
//! crate's `Cargo.toml` is the one list: `build.rs` turns it into [`CATALOGUE`] and [`FEATURES`]
//! and links each enabled component crate; `docs/cargo_features.md` is generated from it and
//! the registry's descriptions by a test; `memfactory list` shows what a build holds.
//!
//! ## Running a recipe
//!
//! [`Assembly::from_recipe`] builds every component a recipe names (checking every key);
//! [`eval::run_eval`] runs the agent over the eval data and writes the run directory.

pub mod assembly;
pub mod batching;
pub mod compare;
pub mod eval;
pub mod plot;
pub mod sweep;
#[cfg(feature = "train")]
pub mod train;

pub use assembly::{Assembly, RunSettings};
pub use memfactory_core as core;

#[cfg(feature = "lm-burn")]
pub use memfactory_lm_burn as lm_burn;

/// Tunes a mimalloc global allocator for the burn engine (freed memory is reused, never
/// purged; see `memfactory_lm_burn::tune_allocator`). Does nothing without feature `lm-burn`.
pub fn tune_allocator() {
    #[cfg(feature = "lm-burn")]
    memfactory_lm_burn::tune_allocator();
}

use memfactory_core::Family;

/// A component feature of this crate: `feature` = `<family>-<kind>`, linking crate `krate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// The Cargo feature (`op-overwrite`).
    pub feature: &'static str,
    /// The component's family.
    pub family: Family,
    /// The recipe's `kind` (`overwrite`).
    pub kind: &'static str,
    /// The crate the feature links (`memfactory-op-overwrite`).
    pub krate: &'static str,
    /// Whether this build has the feature on.
    pub enabled: bool,
    /// Whether the feature is in `default` directly (profiles turn on more).
    pub default: bool,
}

/// A feature that is not a component: a paradigm profile, `train`, `wgpu`, `cuda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDoc {
    /// The Cargo feature.
    pub name: &'static str,
    /// What it turns on, as written in `Cargo.toml` (features, `dep:` crates, `crate/feature`).
    pub implies: &'static [&'static str],
    /// Its description: the `#` comment above it in `Cargo.toml`.
    pub about: &'static str,
    /// Whether it is in `default`.
    pub default: bool,
}

// `CATALOGUE`, `FEATURES` and one `use memfactory_<family>_<kind> as _;` per enabled component.
include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The components whose features are enabled in this build, as `(family, kind)`.
pub fn enabled_components() -> Vec<(Family, &'static str)> {
    CATALOGUE
        .iter()
        .filter(|c| c.enabled)
        .map(|c| (c.family, c.kind))
        .collect()
}
