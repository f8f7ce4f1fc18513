//! A bag-of-words [`Embedder`] over a fixed vocabulary, for tests that need a deterministic
//! "semantic" similarity: each text becomes a 0/1 vector saying which vocabulary words it
//! contains ([`memfactory_core::memory::words`]).

use memfactory_core::{Embedder, Result};

/// The embedder: `BagOfWords(&["caroline", "dog", …])`, one dimension per word.
pub struct BagOfWords(pub &'static [&'static str]);

impl Embedder for BagOfWords {
    fn describe(&self) -> String {
        "bag of words".into()
    }

    fn dim(&self) -> usize {
        self.0.len()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let w = memfactory_core::memory::words(t);
                self.0
                    .iter()
                    .map(|v| if w.contains(*v) { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect())
    }
}
