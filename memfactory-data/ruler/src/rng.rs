//! Portable random draws: re-exported from [`memfactory_core::rng`], shared with every
//! dataset of MemFactory so one implementation fixes the bytes of generated instances.

pub use memfactory_core::rng::{bounded, sample_distinct, shuffle, unit_f64};
