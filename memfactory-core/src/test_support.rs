//! Test doubles shared by this crate's unit tests: a model that replies with a fixed text and
//! a store that holds nothing.

use crate::{
    EditOutcome, Finish, GenRequest, Generation, LanguageModel, MemoryEdit, MemoryItem,
    MemoryStore, Prompt, Result, SearchQuery,
};

/// Replies to every request with its text (one token, log-prob 0); described by that text.
pub(crate) struct Reply(pub &'static str);

impl LanguageModel for Reply {
    fn describe(&self) -> String {
        self.0.into()
    }
    fn encode(&self, t: &str) -> Result<Vec<u32>> {
        Ok(t.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids.iter().map(|&i| i as u8 as char).collect())
    }
    fn prompt_ids(&self, _: &Prompt) -> Result<Vec<u32>> {
        Ok(vec![])
    }
    fn generate(&self, reqs: &[GenRequest]) -> Result<Vec<Generation>> {
        Ok(reqs
            .iter()
            .map(|_| Generation {
                prompt_ids: vec![],
                token_ids: vec![1],
                logprobs: vec![0.0],
                text: self.0.into(),
                finish: Finish::Eos,
            })
            .collect())
    }
}

/// A store that holds nothing and changes nothing.
pub(crate) struct NoStore;

impl MemoryStore for NoStore {
    fn apply(&mut self, e: &[MemoryEdit]) -> Result<Vec<EditOutcome>> {
        Ok(e.iter().map(|_| EditOutcome::Unchanged).collect())
    }
    fn items(&self) -> Result<Vec<MemoryItem>> {
        Ok(vec![])
    }
    fn get(&self, _: &str) -> Result<Option<MemoryItem>> {
        Ok(None)
    }
    fn search(&self, _: &SearchQuery) -> Result<Vec<(MemoryItem, f32)>> {
        Ok(vec![])
    }
}
