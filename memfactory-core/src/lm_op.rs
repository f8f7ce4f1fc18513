//! LM-backed memory ops as a request / parse pair.
//!
//! Most ops ask a model once per episode and turn its reply into an [`OpOutput`] (extract,
//! update, distill, overwrite). Such an op implements [`LmOp`] — what to ask
//! ([`LmOp::request`]) and how to read the reply ([`LmOp::parse`]) — and gets [`MemoryOp`]
//! from the blanket impl here (the op's `kind` and `role` are constants of its impl):
//! - `run_batch` makes one lockstep call for all episodes, on the op's own model when its
//!   table has one ([`op_generate`]: recorded under the op's role with that model's id, so a
//!   trainer never trains on a frozen model's calls), and parses each reply after stripping a
//!   `<think>` block when `strip_think` is on;
//! - `run` is the batch of one;
//! - `frozen_roles` follows from the role and the own model.
//!
//! [`LmSettings::from_cfg`] reads the keys such ops share from the op's table in one call —
//! `template`, the sampling keys (`max_new_tokens`, `temperature`, `top_k`, `top_p`, `stop`),
//! `strip_think` and the own `model` sub-table — as an [`LmOpSpec`] of the op's defaults says.
//! Ops with several calls per episode (summarize's reflect-then-merge, the listwise reranker)
//! implement [`MemoryOp`] themselves.

use crate::{
    Cfg, ChatMessage, EpisodeCx, GenRequest, LanguageModel, MemoryOp, OpInput, OpOutput, Prompt,
    PromptTemplate, Result, SamplingParams,
    op::{model_from_cfg, op_generate, own_model_roles},
    prompt::template_from_cfg,
};

/// An op that asks a model once per episode: a request from the input, an output from the
/// reply. [`MemoryOp`] follows (see the module docs).
pub trait LmOp: Send + Sync {
    /// The registry kind.
    const KIND: &'static str;

    /// The role its calls are recorded under (what a trainer selects by).
    const ROLE: &'static str;

    /// Its template, sampling, `strip_think` and own model.
    fn settings(&self) -> &LmSettings;

    /// The user message for one episode (usually the template rendered from the input).
    fn prompt_text(&self, cx: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<String>;

    /// The request for one episode. Default: [`LmOp::prompt_text`] as one user message at the
    /// op's sampling ([`LmSettings::chat`]).
    fn request(&self, cx: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<GenRequest> {
        Ok(self.settings().chat(self.prompt_text(cx, input)?))
    }

    /// The output for one episode from the model's `reply` (after the `<think>` block is
    /// stripped when `strip_think` is on). Malformed replies are data: an output with
    /// `parse_error` set, not an `Err`; `Err` is for the episode's infrastructure (the store,
    /// the tokenizer).
    fn parse(&self, cx: &EpisodeCx<'_>, input: &OpInput<'_>, reply: &str) -> Result<OpOutput>;
}

impl<T: LmOp> MemoryOp for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn run(&self, cx: &mut EpisodeCx<'_>, input: OpInput<'_>) -> Result<OpOutput> {
        let mut out = self.run_batch(std::slice::from_mut(cx), &[input])?;
        Ok(out.remove(0))
    }

    fn run_batch(
        &self,
        cxs: &mut [EpisodeCx<'_>],
        inputs: &[OpInput<'_>],
    ) -> Result<Vec<OpOutput>> {
        crate::op::check_inputs(cxs.len(), inputs.len())?;
        let requests = cxs
            .iter()
            .zip(inputs)
            .map(|(cx, input)| self.request(cx, input))
            .collect::<Result<Vec<_>>>()?;
        let settings = self.settings();
        let gens = op_generate(settings.model.as_deref(), cxs, T::ROLE, requests)?;
        cxs.iter()
            .zip(inputs)
            .zip(&gens)
            .map(|((cx, input), g)| self.parse(cx, input, settings.reply(&g.text)))
            .collect()
    }

    fn frozen_roles(&self) -> Vec<(String, String)> {
        own_model_roles(self.settings().model.as_deref(), &[T::ROLE])
    }
}

/// An LM op's defaults and the shared keys it accepts.
#[derive(Debug, Clone, Copy)]
pub struct LmOpSpec {
    /// The default template text (a recipe's `template` names a file instead).
    pub template: &'static str,
    /// The placeholders the template may use.
    pub placeholders: &'static [&'static str],
    /// The placeholders the template must use.
    pub required: &'static [&'static str],
    /// The default `max_new_tokens` (greedy unless the table says otherwise).
    pub max_new_tokens: usize,
    /// `Some(default)`: the op reads `strip_think` with that default; `None`: it never strips
    /// (its parser reads the whole reply) and the key is not accepted.
    pub strip_think: Option<bool>,
    /// Whether the op accepts its own `model` sub-table.
    pub own_model: bool,
}

/// The settings every LM op shares, read from its table by [`LmSettings::from_cfg`].
pub struct LmSettings {
    /// The prompt.
    pub template: PromptTemplate,
    /// Sampling of the op's call.
    pub sampling: SamplingParams,
    /// Parse only the text after the last `</think>` (recipe `strip_think`).
    pub strip_think: bool,
    /// The op's own model (`None` = the episode's model).
    pub model: Option<Box<dyn LanguageModel>>,
}

impl std::fmt::Debug for LmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmSettings")
            .field("template", &self.template.name())
            .field("sampling", &self.sampling)
            .field("strip_think", &self.strip_think)
            .field("model", &self.model.as_ref().map(|m| m.describe()))
            .finish()
    }
}

impl LmSettings {
    /// The defaults of `spec`: its template, greedy with its `max_new_tokens`, its
    /// `strip_think`, the episode's model.
    pub fn defaults(spec: &LmOpSpec) -> Result<Self> {
        Ok(LmSettings {
            template: PromptTemplate::new(
                "default:template",
                spec.template,
                spec.placeholders,
                spec.required,
            )?,
            sampling: SamplingParams::greedy(spec.max_new_tokens),
            strip_think: spec.strip_think.unwrap_or(false),
            model: None,
        })
    }

    /// Reads `template`, the sampling keys, `strip_think` (when `spec` accepts it) and the
    /// `model` sub-table (when `spec` accepts one; read last, so the budgets read before it are
    /// checked against that model's context) from an op's table.
    pub fn from_cfg(cfg: &mut Cfg, spec: &LmOpSpec) -> Result<Self> {
        let template = template_from_cfg(
            cfg,
            "template",
            spec.template,
            spec.placeholders,
            spec.required,
        )?;
        let sampling = crate::config::sampling_from_cfg(cfg, spec.max_new_tokens)?;
        let strip_think = match spec.strip_think {
            Some(default) => cfg.get("strip_think", default)?,
            None => false,
        };
        let model = if spec.own_model {
            model_from_cfg(cfg, "model")?
        } else {
            None
        };
        Ok(LmSettings {
            template,
            sampling,
            strip_think,
            model,
        })
    }

    /// A one-message chat request of `text` (usually the template rendered) at the op's
    /// sampling.
    pub fn chat(&self, text: String) -> GenRequest {
        GenRequest {
            prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
            params: self.sampling.clone(),
        }
    }

    /// The part of a reply the op parses: after the last `</think>` when `strip_think` is on.
    pub fn reply<'a>(&self, text: &'a str) -> &'a str {
        if self.strip_think {
            crate::text::strip_think(text)
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{POLICY_MODEL, op_model_id};
    use crate::test_support::{NoStore, Reply};

    fn build_reply(cfg: &mut Cfg) -> Result<Box<dyn LanguageModel>> {
        let _: String = cfg.req("text")?;
        Ok(Box::new(Reply("<think>draft</think>own")))
    }

    crate::inventory::submit! {
        crate::Registration::<dyn LanguageModel> {
            kind: "lm-op-test-reply",
            about: "test model that replies with a fixed text",
            build: build_reply,
        }
    }

    /// Echoes the (stripped) reply into `text` and the question into the prompt.
    #[derive(Debug)]
    struct Echo {
        lm: LmSettings,
    }
    impl LmOp for Echo {
        const KIND: &'static str = "echo";
        const ROLE: &'static str = "echo-role";
        fn settings(&self) -> &LmSettings {
            &self.lm
        }
        fn prompt_text(&self, _: &EpisodeCx<'_>, input: &OpInput<'_>) -> Result<String> {
            Ok(self.lm.template.render(&[("q", input.question)]))
        }
        fn parse(&self, _: &EpisodeCx<'_>, _: &OpInput<'_>, reply: &str) -> Result<OpOutput> {
            Ok(OpOutput {
                text: Some(reply.to_string()),
                ..Default::default()
            })
        }
    }

    fn spec(strip_think: Option<bool>, own_model: bool) -> LmOpSpec {
        LmOpSpec {
            template: "Q={q}",
            placeholders: &["q"],
            required: &["q"],
            max_new_tokens: 7,
            strip_think,
            own_model,
        }
    }

    fn echo(src: &str, spec: &LmOpSpec) -> Result<Echo> {
        let mut cfg = Cfg::new("agent.echo", toml::from_str(src).unwrap());
        let lm = LmSettings::from_cfg(&mut cfg, spec)?;
        cfg.finish()?;
        Ok(Echo { lm })
    }

    fn input(q: &str) -> OpInput<'_> {
        OpInput {
            question: q,
            observation: "",
            memory: &[],
        }
    }

    #[test]
    fn run_batch_asks_once_per_episode_and_parses_each_stripped_reply() {
        let op = echo("", &spec(Some(true), true)).unwrap();
        let policy = Reply("<think>x</think> policy says");
        let mut cxs: Vec<EpisodeCx<'_>> = (0..3)
            .map(|i| EpisodeCx::new(&policy, Box::new(NoStore), "s", i, 9))
            .collect();
        let inputs = [input("a"), input("b"), input("c")];
        let outs = MemoryOp::run_batch(&op, &mut cxs, &inputs).unwrap();
        assert_eq!(outs.len(), 3);
        for (cx, (out, q)) in cxs.iter().zip(outs.iter().zip(["a", "b", "c"])) {
            assert_eq!(out.text.as_deref(), Some("policy says"));
            let calls: Vec<_> = cx.episode.lm_calls().collect();
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].role, "echo-role");
            assert_eq!(calls[0].model, POLICY_MODEL);
            assert_eq!(calls[0].params.max_new_tokens, 7);
            // The recorded call keeps the raw reply.
            assert_eq!(calls[0].output.text, "<think>x</think> policy says");
            assert_eq!(
                calls[0].prompt,
                Prompt::Chat(vec![ChatMessage::user(format!("Q={q}"))])
            );
        }
        assert!(MemoryOp::frozen_roles(&op).is_empty());
        // `run` is the batch of one.
        let mut cx = EpisodeCx::new(&policy, Box::new(NoStore), "s", 0, 9);
        let one = MemoryOp::run(&op, &mut cx, input("a")).unwrap();
        assert_eq!(one, outs[0]);
        // Mismatched lengths are a caller's error, not a panic.
        assert!(MemoryOp::run_batch(&op, &mut cxs, &inputs[..2]).is_err());
    }

    #[test]
    fn an_own_model_answers_is_recorded_under_its_id_and_makes_the_role_frozen() {
        let op = echo(
            "strip_think = false\nmax_new_tokens = 3\n\
             model = { kind = \"lm-op-test-reply\", text = \"x\" }",
            &spec(Some(true), true),
        )
        .unwrap();
        assert!(!op.lm.strip_think);
        let policy = Reply("policy");
        let mut cx = EpisodeCx::new(&policy, Box::new(NoStore), "s", 0, 9);
        let out = MemoryOp::run(&op, &mut cx, input("a")).unwrap();
        assert_eq!(out.text.as_deref(), Some("<think>draft</think>own"));
        let call = cx.episode.lm_calls().next().unwrap();
        assert_eq!(call.model, op_model_id("echo-role"));
        assert_eq!(call.params.max_new_tokens, 3);
        assert_eq!(
            MemoryOp::frozen_roles(&op),
            vec![("echo-role".to_string(), op_model_id("echo-role"))]
        );
    }

    #[test]
    fn keys_a_spec_does_not_accept_are_rejected_with_their_path() {
        let e = echo("strip_think = true", &spec(None, true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.echo.strip_think"), "{e}");
        let e = echo(
            "model = { kind = \"lm-op-test-reply\", text = \"x\" }",
            &spec(Some(true), false),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.echo.model"), "{e}");
        let e = echo("temperature = -1.0", &spec(None, false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.echo.temperature"), "{e}");
        // Defaults: greedy at the spec's budget; `strip_think` off when not accepted.
        let d = LmSettings::defaults(&spec(None, false)).unwrap();
        assert_eq!(d.sampling, SamplingParams::greedy(7));
        assert!(!d.strip_think && d.model.is_none());
        assert!(
            LmSettings::defaults(&spec(Some(true), false))
                .unwrap()
                .strip_think
        );
    }
}
