//! Agent paradigms: MemAgent, Memory-R1, RMM, … — how ops, store and LM combine into an
//! episode.

use crate::{EpisodeCx, Result, Sample};

/// A registered agent paradigm (`[agent] kind = "memagent"`).
pub trait Paradigm: Send + Sync {
    /// The registry kind.
    fn kind(&self) -> &'static str;

    /// How many independent episodes (memory paths) to run per sample by default
    /// (MemAgent's `paths`, avg@k).
    fn paths(&self) -> usize {
        1
    }

    /// Runs one episode per context in `cxs` on `sample`, in lockstep where the paradigm
    /// can batch. Each episode's answer is stored in `cx.episode.answer`. Malformed model
    /// output is recorded, never an `Err`.
    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()>;
}
