//! Dataset sources: a registered component that loads [`Sample`]s.

use crate::{Error, LanguageModel, Result, Sample};

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
    /// The first `n` samples of [`DataSource::load`] (all of them when there are fewer).
    /// Sources that generate or build their samples one by one override it to build only
    /// those, so that a large configured size evaluated with a small limit costs only the
    /// limit.
    fn load_first(&self, cx: &LoadCx<'_>, n: usize) -> Result<Vec<Sample>> {
        let mut samples = self.load(cx)?;
        samples.truncate(n);
        Ok(samples)
    }
    /// Called by a run (eval, train) with its run directory: a source that records how it
    /// selected its samples (ruler-hqa's closed-book filter: the kept ids) writes the record
    /// there — at once if it has already loaded, else when it loads. Default: nothing.
    fn attach_run_dir(&self, dir: &std::path::Path) -> Result<()> {
        let _ = dir;
        Ok(())
    }
}

/// Largest context, in tokens, that a generated dataset sizes one sample to: 2^25 ≈ 33.5 M.
/// The longest published memory-agent evaluations stop at 3.5 M (MemAgent) and 10 M
/// (BABILong) tokens; one sample of 2^25 tokens is already over 128 MiB of text, and building
/// it (the haystack is re-tokenized while it is sized) takes hours. Larger values are
/// rejected when the component is built, naming the key.
pub const MAX_SAMPLE_TOKENS: usize = 1 << 25;

/// The most text, in tokens (estimated at 4 characters per token where a source cannot
/// count them), that one load of a dataset builds in memory: 2^30 ≈ 1.07 G tokens, about
/// 4 GiB of text. RULER's grid at 128 K tokens (500 samples: 64 M) and MemAgent's largest
/// set (128 samples of 3.5 M: 450 M) fit. A load that would build more is refused before
/// anything is built, naming the size keys (and the limit that would make it fit).
pub const MAX_LOADED_TOKENS: usize = 1 << 30;

/// The error for a load that would build `count` samples of about `tokens_each` tokens,
/// over [`MAX_LOADED_TOKENS`]; `key` is the dotted recipe key to lower.
pub fn too_much_to_load(key: impl Into<String>, count: usize, tokens_each: usize) -> Error {
    let fit = (MAX_LOADED_TOKENS / tokens_each.max(1)).max(1);
    Error::config(
        key,
        format!(
            "{count} samples of about {tokens_each} tokens would build {} tokens of text in \
             memory, over the {MAX_LOADED_TOKENS} (about 4 GiB) one load may build; load at \
             most {fit} of them: fewer or smaller samples, or an eval limit (`[eval] limit`, \
             `--limit`)",
            count as u128 * tokens_each as u128
        ),
    )
}
