//! Episodes and the episode context through which a paradigm reaches the LM and the store.
//!
//! Every LM call made through [`EpisodeCx::generate`] (or [`generate_lockstep`]) and every
//! edit applied through [`EpisodeCx::apply`] is appended to the episode as a [`Step`]. The
//! trajectory is therefore complete by construction: trainers read token ids and log-probs
//! from it, reports read prompts and memories from it.

use serde::{Deserialize, Serialize};

use crate::{
    EditOutcome, Error, GenRequest, Generation, LanguageModel, MemoryEdit, MemoryItem, MemoryStore,
    Prompt, Result, SamplingParams, seed,
};

/// One LM call as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmCall {
    /// Which role of the paradigm made it (`memory-update`, `answer`, …) — trainers select
    /// turns by role.
    pub role: String,
    /// The prompt as given (chat messages or text).
    pub prompt: Prompt,
    /// The sampling parameters actually used (including the seed).
    pub params: SamplingParams,
    /// The generation, with exact token ids and log-probs.
    pub output: Generation,
}

/// One recorded step of an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// An LM call.
    Lm(LmCall),
    /// Edits applied to the store by an op.
    Edit {
        /// The op kind that decided them.
        op: String,
        /// The edits, in order.
        edits: Vec<MemoryEdit>,
        /// What each did.
        outcomes: Vec<EditOutcome>,
        /// Why the model output could not be parsed, when it could not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parse_error: Option<String>,
    },
    /// A free-form note (chunk boundaries, retrieval results) for reports.
    Note {
        /// What it is about.
        label: String,
        /// The note.
        text: String,
    },
}

/// Everything one run of an agent on one sample did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// The sample's id.
    pub sample_id: String,
    /// Which path (0..k) of the group.
    pub path: usize,
    /// The episode's seed (LM call seeds derive from it).
    pub seed: u64,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// The final answer text, when the paradigm produced one.
    pub answer: Option<String>,
}

impl Episode {
    /// The LM calls, in order.
    pub fn lm_calls(&self) -> impl Iterator<Item = &LmCall> {
        self.steps.iter().filter_map(|s| match s {
            Step::Lm(c) => Some(c),
            _ => None,
        })
    }

    /// Number of parse errors recorded on edit steps.
    pub fn parse_errors(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Edit {
                        parse_error: Some(_),
                        ..
                    }
                )
            })
            .count()
    }
}

/// The only route from a paradigm to the LM and the store during an episode.
pub struct EpisodeCx<'a> {
    lm: &'a dyn LanguageModel,
    store: Box<dyn MemoryStore>,
    /// The episode being recorded.
    pub episode: Episode,
}

impl<'a> EpisodeCx<'a> {
    /// A context for path `path` of `sample_id`, with seed `seed` and a fresh store.
    pub fn new(
        lm: &'a dyn LanguageModel,
        store: Box<dyn MemoryStore>,
        sample_id: &str,
        path: usize,
        seed: u64,
    ) -> Self {
        EpisodeCx {
            lm,
            store,
            episode: Episode {
                sample_id: sample_id.to_string(),
                path,
                seed,
                steps: Vec::new(),
                answer: None,
            },
        }
    }

    /// Token ids of `text` under the LM's tokenizer (for chunking and caps).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.lm.encode(text)
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.lm.decode(ids)
    }

    /// The store, read-only (mutate through [`EpisodeCx::apply`]).
    pub fn store(&self) -> &dyn MemoryStore {
        self.store.as_ref()
    }

    /// Every memory item.
    pub fn memory(&self) -> Result<Vec<MemoryItem>> {
        self.store.items()
    }

    fn next_seed(&self) -> u64 {
        seed::derive_n(self.episode.seed, self.episode.steps.len() as u64)
    }

    /// Generates for `requests` in one batched call and records each as an LM step. A
    /// request whose seed is 0 gets one derived from the episode seed and the step index.
    pub fn generate(&mut self, role: &str, requests: Vec<GenRequest>) -> Result<Vec<Generation>> {
        let requests: Vec<GenRequest> = requests
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                if r.params.seed == 0 {
                    r.params.seed = seed::derive_n(self.next_seed(), i as u64);
                }
                r
            })
            .collect();
        let out = self.lm.generate(&requests)?;
        check_len(requests.len(), out.len())?;
        for (r, g) in requests.into_iter().zip(&out) {
            self.episode.steps.push(Step::Lm(LmCall {
                role: role.to_string(),
                prompt: r.prompt,
                params: r.params,
                output: g.clone(),
            }));
        }
        Ok(out)
    }

    /// Applies `edits` decided by op `op` and records them (with the parse error, if any).
    pub fn apply(
        &mut self,
        op: &str,
        edits: Vec<MemoryEdit>,
        parse_error: Option<String>,
    ) -> Result<Vec<EditOutcome>> {
        let outcomes = self.store.apply(&edits)?;
        self.episode.steps.push(Step::Edit {
            op: op.to_string(),
            edits,
            outcomes: outcomes.clone(),
            parse_error,
        });
        Ok(outcomes)
    }

    /// Records a note.
    pub fn note(&mut self, label: &str, text: impl Into<String>) {
        self.episode.steps.push(Step::Note {
            label: label.to_string(),
            text: text.into(),
        });
    }

    /// Ends the episode.
    pub fn into_episode(self) -> Episode {
        self.episode
    }
}

fn check_len(asked: usize, got: usize) -> Result<()> {
    if asked != got {
        return Err(Error::backend(
            "lm",
            format!("asked for {asked} generations, got {got}"),
        ));
    }
    Ok(())
}

/// One batched LM call across episodes: `requests[i]` belongs to `cxs[i]` and is recorded
/// there. All contexts must share the same LM.
pub fn generate_lockstep(
    cxs: &mut [EpisodeCx<'_>],
    role: &str,
    requests: Vec<GenRequest>,
) -> Result<Vec<Generation>> {
    if cxs.len() != requests.len() {
        return Err(Error::Invalid(format!(
            "{} episodes but {} requests",
            cxs.len(),
            requests.len()
        )));
    }
    let Some(first) = cxs.first() else {
        return Ok(Vec::new());
    };
    let lm = first.lm;
    let requests: Vec<GenRequest> = requests
        .into_iter()
        .zip(cxs.iter())
        .map(|(mut r, cx)| {
            if r.params.seed == 0 {
                r.params.seed = cx.next_seed();
            }
            r
        })
        .collect();
    let out = lm.generate(&requests)?;
    check_len(requests.len(), out.len())?;
    for ((cx, r), g) in cxs.iter_mut().zip(requests).zip(&out) {
        cx.episode.steps.push(Step::Lm(LmCall {
            role: role.to_string(),
            prompt: r.prompt,
            params: r.params,
            output: g.clone(),
        }));
    }
    Ok(out)
}
