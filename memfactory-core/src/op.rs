//! Memory operations: components that read the memory and *decide* edits.
//!
//! An op never mutates the store: it returns edits in [`OpOutput`] and the paradigm applies
//! them through the [`EpisodeCx`](crate::EpisodeCx), which records them.

use serde::{Deserialize, Serialize};

use crate::{EpisodeCx, MemoryEdit, MemoryItem, Result};

/// What an op sees.
#[derive(Debug, Clone, Copy)]
pub struct OpInput<'a> {
    /// The problem / query the memory serves.
    pub question: &'a str,
    /// The new observation: a context chunk, dialogue turns, …
    pub observation: &'a str,
    /// The current memory view (items the op may reference).
    pub memory: &'a [MemoryItem],
}

/// What an op decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpOutput {
    /// Edits to apply, in order.
    pub edits: Vec<MemoryEdit>,
    /// Items selected (retrieve / rerank / distill), best first.
    pub items: Vec<MemoryItem>,
    /// Text produced (an answer, a summary), when the op produces one.
    pub text: Option<String>,
    /// Why the model's output could not be parsed, when it could not. Such output is
    /// applied as no edit and penalised by format rewards.
    pub parse_error: Option<String>,
}

/// A registered memory operation (`kind = "overwrite"`, …).
pub trait MemoryOp: Send + Sync {
    /// The registry kind.
    fn kind(&self) -> &'static str;

    /// Runs on one episode.
    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput>;

    /// Runs on several episodes in lockstep (one batched LM call per step where the op
    /// can). `inputs[i]` belongs to `cxs[i]`. The default runs them one by one.
    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        if cxs.len() != inputs.len() {
            return Err(crate::Error::Invalid(format!(
                "{} episodes but {} op inputs",
                cxs.len(),
                inputs.len()
            )));
        }
        cxs.iter_mut()
            .zip(inputs)
            .map(|(cx, input)| self.run(cx, *input))
            .collect()
    }
}
