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

    /// True when episodes reuse work done for earlier samples with the same model (a
    /// memory bank built once per conversation and shared by its questions). Such reuse is
    /// right for evaluation and wrong for training, where the weights change between
    /// steps: the trainer refuses a rollout agent that says true.
    fn caches_across_samples(&self) -> bool {
        false
    }

    /// The roles of this agent's LM calls served by a model other than the policy (an op
    /// with its own `model` table, [`crate::MemoryOp::frozen_roles`]), each with the model
    /// id its calls are recorded under (`op:<role>`). `memfactory train` and `memfactory
    /// check` refuse a `[train] roles` entry naming one of them before any rollout: that
    /// model is frozen and its tokens were not sampled from the policy. Default: none.
    fn frozen_roles(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Runs one episode per context in `cxs` on `sample`, in lockstep where the paradigm
    /// can batch. Each episode's answer is stored in `cx.episode.answer`. Malformed model
    /// output is recorded, never an `Err`.
    fn run_group(&self, sample: &Sample, cxs: &mut [EpisodeCx<'_>]) -> Result<()>;
}
