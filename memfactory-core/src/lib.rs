//! # memfactory-core
//!
//! The vocabulary every MemFactory crate speaks. It holds types and traits only — no burn,
//! no network, no file IO beyond reading a recipe or a template file — so that memory
//! operations, stores, LM backends, datasets, rewards and paradigms can be written as
//! independent crates and assembled from a TOML recipe.
//!
//! Four nouns to learn first:
//! - [`Sample`]: one question with its context and gold answers;
//! - [`Episode`]: everything one agent run did on one sample — every LM call with its exact
//!   token ids and log-probs, every memory edit — recorded as [`Step`]s by the [`EpisodeCx`];
//! - a *group*: the G episodes (memory paths) run on one sample, in lockstep, by
//!   [`Paradigm::run_group`];
//! - [`Registration`]: how a component crate makes itself available to recipes through
//!   `inventory`.
//!
//! Components parse their own TOML table through [`Cfg`], which rejects unknown keys and
//! records the resolved values (defaults filled in) that the run directory keeps.

pub mod config;
pub mod data;
pub mod embed;
pub mod episode;
pub mod error;
pub mod lm;
pub mod lm_op;
pub mod memory;
pub mod op;
pub mod paradigm;
pub mod prompt;
pub mod recipe;
pub mod redact;
pub mod registry;
pub mod reward;
pub mod rng;
pub mod sample;
pub mod seed;
#[cfg(test)]
mod test_support;
pub mod text;

pub use config::Cfg;
pub use data::{DataSource, LoadCx};
pub use embed::Embedder;
pub use episode::{Episode, EpisodeCx, LmCall, Step};
pub use error::{Error, Result};
pub use lm::{ChatMessage, Finish, GenRequest, Generation, LanguageModel, Prompt, SamplingParams};
pub use lm_op::{LmOp, LmOpSpec, LmSettings};
pub use memory::{EditOutcome, MemoryEdit, MemoryItem, MemoryStore, SearchQuery, StoreFactory};
pub use op::{MemoryOp, OpInput, OpOutput};
pub use paradigm::Paradigm;
pub use prompt::PromptTemplate;
pub use recipe::Recipe;
pub use registry::{Family, Registration};
pub use reward::Reward;
pub use sample::{Dialogue, Sample, Session, Turn};

/// Re-exported so component crates can call `inventory::submit!` without naming the crate.
pub use inventory;
