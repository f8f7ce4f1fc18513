//! Sentence embedders: text → fixed-size vectors for dense retrieval and learned reranking.
//!
//! An embedder is built once per run from the recipe's top-level `[embedder]` table and
//! reaches ops through [`EpisodeCx::embed`](crate::EpisodeCx::embed), so a model is loaded
//! once however many ops use it. Embeddings are deterministic functions of the text (no
//! sampling), so they are not recorded as episode steps; the vectors an op stores travel on
//! the [`MemoryItem`](crate::MemoryItem)s it adds.

use crate::Result;

/// A registered sentence embedder (`[embedder] kind = "minilm"`).
pub trait Embedder: Send + Sync {
    /// One line naming the model and backend.
    fn describe(&self) -> String;
    /// Length of every vector [`Embedder::embed`] returns.
    fn dim(&self) -> usize;
    /// One vector per text, in order. Batching is the embedder's business.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}
