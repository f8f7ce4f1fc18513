//! [`CountingLm`]: a language model wrapper that records the batch size of every `generate`
//! call and counts `wait_outside` calls, so tests can assert how a component batches its LM
//! calls (one batch per step, never one request at a time) without a real model.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use memfactory_core::{GenRequest, Generation, LanguageModel, Prompt, Result};

enum Inner<'a> {
    Owned(Box<dyn LanguageModel + 'a>),
    Borrowed(&'a dyn LanguageModel),
}

/// Wraps a model (owned, [`CountingLm::new`], or borrowed, [`CountingLm::over`]); every call
/// goes to it unchanged.
pub struct CountingLm<'a> {
    inner: Inner<'a>,
    batches: Mutex<Vec<usize>>,
    waits: AtomicUsize,
}

impl<'a> CountingLm<'a> {
    /// Wraps (and owns) `inner`.
    pub fn new(inner: impl LanguageModel + 'a) -> Self {
        Self::with(Inner::Owned(Box::new(inner)))
    }

    /// Wraps a borrowed `inner`.
    pub fn over(inner: &'a dyn LanguageModel) -> Self {
        Self::with(Inner::Borrowed(inner))
    }

    fn with(inner: Inner<'a>) -> Self {
        CountingLm {
            inner,
            batches: Mutex::new(Vec::new()),
            waits: AtomicUsize::new(0),
        }
    }

    fn lm(&self) -> &dyn LanguageModel {
        match &self.inner {
            Inner::Owned(b) => b.as_ref(),
            Inner::Borrowed(r) => *r,
        }
    }

    /// The number of requests of each `generate` call so far, in call order.
    pub fn batches(&self) -> Vec<usize> {
        match self.batches.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many times `wait_outside` was called.
    pub fn waits(&self) -> usize {
        self.waits.load(Ordering::SeqCst)
    }
}

impl LanguageModel for CountingLm<'_> {
    fn describe(&self) -> String {
        self.lm().describe()
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.lm().encode(text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.lm().decode(ids)
    }
    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.lm().prompt_ids(prompt)
    }
    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>> {
        match self.batches.lock() {
            Ok(mut b) => b.push(requests.len()),
            Err(poisoned) => poisoned.into_inner().push(requests.len()),
        }
        self.lm().generate(requests)
    }
    fn wait_outside(&self, wait: &mut dyn FnMut()) {
        self.waits.fetch_add(1, Ordering::SeqCst);
        self.lm().wait_outside(wait)
    }
}
