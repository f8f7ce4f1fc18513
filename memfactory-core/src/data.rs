//! Dataset sources: a registered component that loads [`Sample`]s.

use crate::{LanguageModel, Result, Sample};

/// What a data source may use while loading: the model's tokenizer, for sources that size
/// their instances to a token budget.
#[derive(Clone, Copy, Default)]
pub struct LoadCx<'a> {
    /// The LM whose tokenizer counts tokens, when one is built.
    pub tokenizer: Option<&'a dyn LanguageModel>,
}

/// A registered dataset (`[data.eval]` / `[data.train]` in a recipe).
pub trait DataSource: Send + Sync {
    /// One line saying what this source loads (file, size parameters).
    fn describe(&self) -> String;
    /// Loads every sample, in a deterministic order.
    fn load(&self, cx: &LoadCx<'_>) -> Result<Vec<Sample>>;
}
