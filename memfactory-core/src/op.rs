//! Memory operations: components that read the memory and *decide* edits.
//!
//! An op never mutates the store: it returns edits in [`OpOutput`] and the paradigm applies
//! them through the [`EpisodeCx`](crate::EpisodeCx), which records them.

use serde::{Deserialize, Serialize};

use crate::{
    Cfg, EpisodeCx, GenRequest, Generation, LanguageModel, MemoryEdit, MemoryItem, Result,
    episode::{generate_lockstep, generate_lockstep_with},
    registry,
};

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
        check_inputs(cxs.len(), inputs.len())?;
        cxs.iter_mut()
            .zip(inputs)
            .map(|(cx, input)| self.run(cx, *input))
            .collect()
    }

    /// The roles whose LM calls this op makes on its own model (its `model` sub-table, see
    /// [`model_from_cfg`]) rather than the episode's, each with the model id those calls
    /// are recorded under (`op:<role>`, [`LmCall::model`](crate::LmCall::model)). Such a
    /// model is frozen: a trainer refuses to train these roles before any rollout
    /// ([`crate::Paradigm::frozen_roles`]). Default: none (the op uses the episode's
    /// model, or no model at all). See [`own_model_roles`].
    fn frozen_roles(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// An op's batch contract: one input per episode (a caller's error otherwise).
pub fn check_inputs(episodes: usize, inputs: usize) -> Result<()> {
    if episodes != inputs {
        return Err(crate::Error::Invalid(format!(
            "{episodes} episodes but {inputs} op inputs"
        )));
    }
    Ok(())
}

/// [`MemoryOp::frozen_roles`] of an op that makes its calls under `roles`: each role with
/// its `op:<role>` model id when the op has its own model (`own` is `Some`), none otherwise.
pub fn own_model_roles(own: Option<&dyn LanguageModel>, roles: &[&str]) -> Vec<(String, String)> {
    match own {
        Some(_) => roles
            .iter()
            .map(|r| (r.to_string(), crate::episode::op_model_id(r)))
            .collect(),
        None => Vec::new(),
    }
}

/// An op's own model: the optional sub-table `key` (usually `model`) of an op's table,
/// built through the registry like `[model]` — e.g. a frozen copy of the base model that
/// answers while the run's model (the policy) is being trained. `None` when absent: the op
/// then uses the episode's model. The resolved table is recorded, and the generation
/// budgets read so far from `cfg` (`max_new_tokens`) are checked against the new model's
/// context ([`Cfg::check_budgets`]); a budget read afterwards is the caller's to check
/// ([`crate::lm::check_budget`]).
pub fn model_from_cfg(cfg: &mut Cfg, key: &str) -> Result<Option<Box<dyn LanguageModel>>> {
    match cfg.sub(key)? {
        None => Ok(None),
        Some(sub) => {
            let (lm, resolved) = registry::build::<dyn LanguageModel>(sub)?;
            cfg.check_budgets(lm.as_ref())?;
            cfg.set_resolved(key, toml::Value::Table(resolved));
            Ok(Some(lm))
        }
    }
}

/// One lockstep call for an op: on `own` (see [`model_from_cfg`]) when the op has its own
/// model, else on the episodes' model. Recorded on every episode under `role` either way,
/// with the model that produced it ([`LmCall::model`](crate::LmCall::model)): the policy's
/// id for the episodes' model, `op:<role>` for the op's own, so a trainer never trains on
/// the calls of a frozen model.
pub fn op_generate(
    own: Option<&dyn LanguageModel>,
    cxs: &mut [EpisodeCx<'_>],
    role: &str,
    requests: Vec<GenRequest>,
) -> Result<Vec<Generation>> {
    match own {
        Some(lm) => generate_lockstep_with(lm, cxs, role, requests),
        None => generate_lockstep(cxs, role, requests),
    }
}

/// [`op_generate`] for the episodes whose request is `Some` (a ragged round: some episodes
/// have nothing to ask). They are swapped to the front of `cxs`, so one contiguous slice makes
/// one batched call, and swapped back afterwards, even when the call fails. All `None`: no
/// call.
pub fn op_generate_subset(
    own: Option<&dyn LanguageModel>,
    cxs: &mut [EpisodeCx<'_>],
    role: &str,
    requests: Vec<Option<GenRequest>>,
) -> Result<Vec<Option<Generation>>> {
    let n = requests.len();
    let idx: Vec<usize> = (0..n).filter(|&i| requests[i].is_some()).collect();
    if idx.is_empty() {
        return Ok(vec![None; n]);
    }
    let reqs: Vec<GenRequest> = requests.into_iter().flatten().collect();
    for (t, &i) in idx.iter().enumerate() {
        cxs.swap(t, i);
    }
    let res = op_generate(own, &mut cxs[..idx.len()], role, reqs);
    for (t, &i) in idx.iter().enumerate().rev() {
        cxs.swap(t, i);
    }
    let mut out = vec![None; n];
    for (g, &i) in res?.into_iter().zip(&idx) {
        out[i] = Some(g);
    }
    Ok(out)
}

/// The one rule for a paradigm's sub-op tables: builds the op of sub-table `key` of `cfg`
/// and records its resolved table under `key`.
/// - absent → `default` as is;
/// - a string `"x"` → `{ kind = "x" }`, then as a table;
/// - a table without `kind`, or with `default`'s kind → merged over `default` (its own keys
///   win), so `[agent.update] memory_tokens = 512` keeps the paradigm's op and its defaults;
/// - a table with another kind → as written (another op's defaults are its own).
pub fn sub_op(cfg: &mut Cfg, key: &str, default: &toml::Table) -> Result<Box<dyn MemoryOp>> {
    let default_kind = default.get("kind").and_then(toml::Value::as_str);
    let table = match cfg.sub(key)? {
        None => default.clone(),
        Some(sub) => {
            let mut t = sub.table().clone();
            let kind = t.get("kind").map(toml::Value::as_str);
            if kind.is_none() || kind == Some(default_kind) {
                for (k, v) in default {
                    t.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            t
        }
    };
    let (op, resolved) = registry::build::<dyn MemoryOp>(Cfg::new(cfg.key(key), table))?;
    cfg.set_resolved(key, toml::Value::Table(resolved));
    Ok(op)
}

/// A default sub-op table for [`sub_op`]: `kind` and the paradigm's own defaults for it.
pub fn op_table(kind: &str, keys: &[(&str, toml::Value)]) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String(kind.into()));
    for (k, v) in keys {
        t.insert(k.to_string(), v.clone());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Finish, Prompt};

    /// A model whose context is its table's `context` key (kind `op-test-context`).
    struct Ctx(usize);
    impl LanguageModel for Ctx {
        fn describe(&self) -> String {
            format!("context {}", self.0)
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
                    token_ids: vec![],
                    logprobs: vec![],
                    text: String::new(),
                    finish: Finish::Eos,
                })
                .collect())
        }
        fn context_length(&self) -> Option<usize> {
            Some(self.0)
        }
    }

    fn build_ctx(cfg: &mut Cfg) -> Result<Box<dyn LanguageModel>> {
        Ok(Box::new(Ctx(cfg.req("context")?)))
    }

    crate::inventory::submit! {
        crate::Registration::<dyn LanguageModel> {
            kind: "op-test-context",
            about: "test model with a given context",
            build: build_ctx,
        }
    }

    fn op_cfg(max_new_tokens: usize) -> Cfg {
        let src = format!(
            "max_new_tokens = {max_new_tokens}\n\
             model = {{ kind = \"op-test-context\", context = 512 }}"
        );
        Cfg::new("agent.update", toml::from_str(&src).unwrap())
    }

    #[test]
    fn an_own_model_checks_the_budget_read_before_it() {
        let mut cfg = op_cfg(1_000_000_000_000);
        let s = crate::config::sampling_from_cfg(&mut cfg, 64).unwrap();
        assert_eq!(s.max_new_tokens, 1_000_000_000_000);
        let err = model_from_cfg(&mut cfg, "model").err().unwrap();
        assert!(err.is_user_error());
        let msg = err.to_string();
        assert!(msg.contains("`agent.update.max_new_tokens`"), "{msg}");
        assert!(
            msg.contains("1000000000000 exceeds the model's context of 512 tokens"),
            "{msg}"
        );

        let mut cfg = op_cfg(512);
        crate::config::sampling_from_cfg(&mut cfg, 64).unwrap();
        let lm = model_from_cfg(&mut cfg, "model").unwrap().unwrap();
        assert_eq!(lm.context_length(), Some(512));
        // A budget read after the model is the caller's to check.
        assert!(crate::lm::check_budget("judge.max_new_tokens", 513, lm.as_ref()).is_err());
        crate::lm::check_budget("judge.max_new_tokens", 512, lm.as_ref()).unwrap();
    }

    /// An op that reports the keys it was built with (kinds `op-test-keys`, `op-test-other`;
    /// the second knows only `b`).
    #[derive(Debug)]
    struct Keys(i64, i64);
    impl MemoryOp for Keys {
        fn kind(&self) -> &'static str {
            "op-test-keys"
        }
        fn run(&self, _: &mut EpisodeCx<'_>, _: OpInput<'_>) -> Result<OpOutput> {
            Ok(OpOutput {
                text: Some(format!("{} {}", self.0, self.1)),
                ..Default::default()
            })
        }
    }

    fn build_keys(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
        Ok(Box::new(Keys(cfg.get("a", 1)?, cfg.get("b", 2)?)))
    }

    fn build_other(cfg: &mut Cfg) -> Result<Box<dyn MemoryOp>> {
        Ok(Box::new(Keys(-1, cfg.get("b", 2)?)))
    }

    crate::inventory::submit! {
        crate::Registration::<dyn MemoryOp> {
            kind: "op-test-keys",
            about: "test op reporting its keys",
            build: build_keys,
        }
    }

    crate::inventory::submit! {
        crate::Registration::<dyn MemoryOp> {
            kind: "op-test-other",
            about: "test op knowing only key b",
            build: build_other,
        }
    }

    /// `(a, b)` of the op built by [`sub_op`] for `[agent] slot = …` written as `src`, and the
    /// resolved table recorded under `slot`.
    fn slot(src: &str) -> Result<(String, toml::Table)> {
        let mut cfg = Cfg::new("agent", toml::from_str(src).unwrap());
        let default = op_table("op-test-keys", &[("a", toml::Value::Integer(10))]);
        let op = sub_op(&mut cfg, "slot", &default)?;
        let lm = Ctx(8);
        let mut cx = EpisodeCx::new(&lm, Box::new(crate::test_support::NoStore), "s", 0, 0);
        let text = op
            .run(
                &mut cx,
                OpInput {
                    question: "",
                    observation: "",
                    memory: &[],
                },
            )?
            .text
            .unwrap();
        let resolved = cfg.finish()?;
        let slot = resolved["slot"].as_table().unwrap().clone();
        Ok((text, slot))
    }

    #[test]
    fn sub_op_merges_a_partial_table_over_the_default_and_keeps_another_kind_as_written() {
        // Absent: the default.
        let (got, resolved) = slot("").unwrap();
        assert_eq!(got, "10 2");
        assert_eq!(resolved["kind"].as_str(), Some("op-test-keys"));
        // No kind: the user's keys over the default's.
        assert_eq!(slot("slot = { b = 5 }").unwrap().0, "10 5");
        assert_eq!(slot("slot = { a = 3 }").unwrap().0, "3 2");
        // The default's kind, written out or as a string: the same merge.
        assert_eq!(
            slot("slot = { kind = \"op-test-keys\", b = 6 }").unwrap().0,
            "10 6"
        );
        assert_eq!(slot("slot = \"op-test-keys\"").unwrap().0, "10 2");
        // Another kind: as written (the default's `a` is not its key).
        assert_eq!(
            slot("slot = { kind = \"op-test-other\", b = 4 }")
                .unwrap()
                .0,
            "-1 4"
        );
        // A key the op does not read is rejected with its path.
        let e = slot("slot = { c = 1 }").unwrap_err().to_string();
        assert!(e.contains("agent.slot.c"), "{e}");
    }
}
