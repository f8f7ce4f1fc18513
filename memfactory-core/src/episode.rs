//! Episodes and the episode context through which a paradigm reaches the LM and the store.
//!
//! Every LM call made through [`EpisodeCx::generate`] (or [`generate_lockstep`]) and every
//! edit applied through [`EpisodeCx::apply`] is appended to the episode as a [`Step`]. The
//! trajectory is therefore complete by construction: trainers read token ids and log-probs
//! from it, reports read prompts and memories from it.

use serde::{Deserialize, Serialize};

use crate::{
    EditOutcome, Embedder, Error, GenRequest, Generation, LanguageModel, MemoryEdit, MemoryItem,
    MemoryStore, Prompt, Result, SamplingParams, seed,
};

/// The model id recorded on calls made through the episode's own model (the run's
/// `[model]`, which `memfactory train` trains): [`LmCall::model`].
pub const POLICY_MODEL: &str = "policy";

/// The model id recorded on calls an op makes on its own (frozen) model for `role`
/// (`op:<role>`): see [`crate::op::op_generate`].
pub fn op_model_id(role: &str) -> String {
    format!("op:{role}")
}

fn policy_model() -> String {
    POLICY_MODEL.to_string()
}

/// One LM call as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmCall {
    /// Which role of the paradigm made it (`memory-update`, `answer`, …) — trainers select
    /// turns by role.
    pub role: String,
    /// Which model produced it: [`POLICY_MODEL`] for the episode's own model, an op's own
    /// model otherwise ([`op_model_id`]). Only the policy's calls are training samples.
    /// Trajectories recorded before the field existed read as the policy's.
    #[serde(default = "policy_model")]
    pub model: String,
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
    /// The memory's size at the end, in tokens of the episode's model: the items' contents
    /// joined by newlines and encoded (cost, reported beside accuracy). `None` when the store or the
    /// tokenizer could not say, and in trajectories written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_tokens: Option<usize>,
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
        self.edit_parse_errors().count()
    }

    /// The parse errors recorded on edit steps, in order, as `(op, error)` (what a cached
    /// memory bank carries from its build into every episode that replays it).
    pub fn edit_parse_errors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.steps.iter().filter_map(|s| match s {
            Step::Edit {
                op,
                parse_error: Some(e),
                ..
            } => Some((op.as_str(), e.as_str())),
            _ => None,
        })
    }
}

/// The only route from a paradigm to the LM and the store during an episode.
pub struct EpisodeCx<'a> {
    lm: &'a dyn LanguageModel,
    embedder: Option<&'a dyn Embedder>,
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
            embedder: None,
            store,
            episode: Episode {
                sample_id: sample_id.to_string(),
                path,
                seed,
                steps: Vec::new(),
                answer: None,
                memory_tokens: None,
            },
        }
    }

    /// The same context with the run's sentence embedder (the recipe's `[embedder]`).
    pub fn with_embedder(mut self, embedder: Option<&'a dyn Embedder>) -> Self {
        self.embedder = embedder;
        self
    }

    /// The run's embedder, when the recipe has an `[embedder]` table.
    pub fn embedder(&self) -> Option<&'a dyn Embedder> {
        self.embedder
    }

    /// Embeds `texts` with the run's embedder; an error naming the missing `[embedder]`
    /// table when the recipe has none (`who` says which component needed it).
    pub fn embed(&self, who: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let Some(e) = self.embedder else {
            return Err(Error::config(
                "embedder",
                format!(
                    "{who} needs sentence embeddings, but the recipe has no [embedder] table; \
                     add one, e.g. `[embedder]` with `kind = \"minilm\"`"
                ),
            ));
        };
        let out = e.embed(texts)?;
        check_len(texts.len(), out.len())?;
        Ok(out)
    }

    /// Runs `wait` — a blocking wait for work another episode is doing (a shared memory
    /// bank being built) — while telling the LM that this episode makes no call meanwhile,
    /// so that cross-episode batching does not wait for it.
    pub fn wait_outside_lm(&self, wait: &mut dyn FnMut()) {
        self.lm.wait_outside(wait)
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
                model: POLICY_MODEL.to_string(),
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

    /// Ends the episode, recording the memory's final size in tokens
    /// ([`Episode::memory_tokens`]).
    pub fn into_episode(mut self) -> Episode {
        self.episode.memory_tokens = self.memory_tokens().ok();
        self.episode
    }

    /// The memory's size in tokens of the episode's model: its items' contents joined by
    /// newlines, encoded once (one call, also for a backend that tokenizes on a server).
    fn memory_tokens(&self) -> Result<usize> {
        let items = self.store.items()?;
        if items.is_empty() {
            return Ok(0);
        }
        let text: Vec<&str> = items.iter().map(|m| m.content.as_str()).collect();
        Ok(self.lm.encode(&text.join("\n"))?.len())
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
    let Some(first) = cxs.first() else {
        return if requests.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::Invalid(format!(
                "0 episodes but {} requests",
                requests.len()
            )))
        };
    };
    let lm = first.lm;
    lockstep(lm, POLICY_MODEL, cxs, role, requests)
}

/// [`generate_lockstep`] on another model than the episodes' own — a frozen model a
/// paradigm holds for one role (Memory-R1's frozen answer agent while its memory manager
/// trains). The calls are recorded on the episodes like any other, under `role`, with
/// model id [`op_model_id`]`(role)`, so a trainer never takes them for the policy's.
pub fn generate_lockstep_with(
    lm: &dyn LanguageModel,
    cxs: &mut [EpisodeCx<'_>],
    role: &str,
    requests: Vec<GenRequest>,
) -> Result<Vec<Generation>> {
    lockstep(lm, &op_model_id(role), cxs, role, requests)
}

fn lockstep(
    lm: &dyn LanguageModel,
    model: &str,
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
    if cxs.is_empty() {
        return Ok(Vec::new());
    }
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
            model: model.to_string(),
            prompt: r.prompt,
            params: r.params,
            output: g.clone(),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Finish, Prompt};

    use crate::test_support::{NoStore, Reply as Echo};

    struct Lengths;
    impl Embedder for Lengths {
        fn describe(&self) -> String {
            "lengths".into()
        }
        fn dim(&self) -> usize {
            1
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    fn req() -> GenRequest {
        GenRequest {
            prompt: Prompt::Text("q".into()),
            params: SamplingParams::greedy(4),
        }
    }

    #[test]
    fn embed_needs_an_embedder_and_says_which_table_is_missing() {
        let lm = Echo("policy");
        let cx = EpisodeCx::new(&lm, Box::new(NoStore), "s", 0, 1);
        let err = cx
            .embed("op retrieve (dense)", &["x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("op retrieve (dense)"), "{err}");
        assert!(err.contains("[embedder]"), "{err}");
        let e = Lengths;
        let cx = cx.with_embedder(Some(&e));
        assert_eq!(
            cx.embed("t", &["ab", "abc"]).unwrap(),
            vec![vec![2.0], vec![3.0]]
        );
    }

    #[test]
    fn a_call_recorded_without_a_model_reads_as_the_policys() {
        let call = Step::Lm(LmCall {
            role: "answer".into(),
            model: "op:answer".into(),
            prompt: Prompt::Text("q".into()),
            params: SamplingParams::greedy(4),
            output: Generation {
                prompt_ids: vec![],
                token_ids: vec![1],
                logprobs: vec![0.0],
                text: "a".into(),
                finish: Finish::Eos,
            },
        });
        let mut v = serde_json::to_value(&call).unwrap();
        assert_eq!(v["model"], "op:answer");
        assert_eq!(serde_json::from_value::<Step>(v.clone()).unwrap(), call);
        // A trajectory written before calls carried their model.
        v.as_object_mut().unwrap().remove("model");
        let Step::Lm(c) = serde_json::from_value::<Step>(v).unwrap() else {
            panic!("not an LM step")
        };
        assert_eq!(c.model, POLICY_MODEL);
    }

    #[test]
    fn calls_on_another_model_are_recorded_on_every_episode() {
        let (policy, frozen) = (Echo("policy"), Echo("frozen"));
        let mut cxs: Vec<EpisodeCx<'_>> = (0..2)
            .map(|p| EpisodeCx::new(&policy, Box::new(NoStore), "s", p, 10 + p as u64))
            .collect();
        let out = generate_lockstep_with(&frozen, &mut cxs, "answer", vec![req(), req()]).unwrap();
        assert!(out.iter().all(|g| g.text == "frozen"));
        let own = generate_lockstep(&mut cxs, "manage", vec![req(), req()]).unwrap();
        assert!(own.iter().all(|g| g.text == "policy"));
        for cx in &cxs {
            let calls: Vec<(&str, &str)> = cx
                .episode
                .lm_calls()
                .map(|c| (c.role.as_str(), c.output.text.as_str()))
                .collect();
            assert_eq!(calls, vec![("answer", "frozen"), ("manage", "policy")]);
            let models: Vec<&str> = cx.episode.lm_calls().map(|c| c.model.as_str()).collect();
            assert_eq!(models, vec!["op:answer", POLICY_MODEL]);
        }
        // Seeds were filled in per episode, and differ between the two paths.
        let seeds: Vec<u64> = cxs
            .iter()
            .map(|cx| cx.episode.lm_calls().next().unwrap().params.seed)
            .collect();
        assert!(seeds[0] != 0 && seeds[0] != seeds[1]);
        assert!(generate_lockstep(&mut cxs, "x", vec![req()]).is_err());
        assert!(generate_lockstep(&mut [], "x", vec![req()]).is_err());
        assert!(generate_lockstep(&mut [], "x", vec![]).unwrap().is_empty());
    }
}
