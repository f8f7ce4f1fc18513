//! # memfactory-reward-overlong
//!
//! DAPO's soft overlong punishment (Yu et al., 2025, "DAPO: An Open-Source LLM
//! Reinforcement Learning System at Scale", eq. 13), registered as reward kind `overlong`:
//! for a response of `n` generated tokens, with `L_max = max_tokens` and
//! `L_cache = cache_tokens`,
//!
//! ```text
//! 0                                  n ≤ L_max − L_cache
//! ((L_max − L_cache) − n) / L_cache   L_max − L_cache < n ≤ L_max
//! −1                                 n > L_max
//! ```
//!
//! A memory agent makes several LM calls per episode; the reward is the mean penalty over
//! the calls whose role is listed in `roles` (default: every call), 0 when there is none.
//! Added with a small weight beside an accuracy reward, it discourages rambling memory
//! updates and answers that run into the token limit.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_tokens` | required | `L_max` |
//! | `cache_tokens` | `max_tokens / 4` | `L_cache` (the soft zone), `0 < L_cache ≤ L_max` |
//! | `roles` | `[]` (all) | LM-call roles penalised (`"memory-update"`, `"answer"`, …) |

use memfactory_core::{Cfg, Episode, Result, Reward, Sample};

/// The overlong penalty.
pub struct Overlong {
    max_tokens: usize,
    cache_tokens: usize,
    roles: Vec<String>,
}

impl Overlong {
    /// Penalty of one response of `n` tokens.
    pub fn penalty(&self, n: usize) -> f32 {
        let soft = self.max_tokens - self.cache_tokens;
        if n <= soft {
            0.0
        } else if n <= self.max_tokens {
            (soft as f32 - n as f32) / self.cache_tokens as f32
        } else {
            -1.0
        }
    }
}

impl Reward for Overlong {
    fn name(&self) -> &str {
        "overlong"
    }

    fn score(&self, _sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        let p: Vec<f32> = episode
            .lm_calls()
            .filter(|c| self.roles.is_empty() || self.roles.contains(&c.role))
            .map(|c| self.penalty(c.output.token_ids.len()))
            .collect();
        Ok(Some(if p.is_empty() {
            0.0
        } else {
            p.iter().sum::<f32>() / p.len() as f32
        }))
    }
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    let max_tokens: usize = cfg.req("max_tokens")?;
    if max_tokens == 0 {
        return Err(cfg.error("max_tokens", "expected a positive token count"));
    }
    let cache_tokens = cfg.get_checked(
        "cache_tokens",
        (max_tokens / 4).max(1),
        |c| *c > 0 && *c <= max_tokens,
        "a soft zone 0 < cache_tokens <= max_tokens",
    )?;
    let roles: Vec<String> = cfg.get("roles", Vec::new())?;
    Ok(Box::new(Overlong {
        max_tokens,
        cache_tokens,
        roles,
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "overlong",
        about: "DAPO soft overlong punishment: 0 up to max_tokens - cache_tokens, linear to -1 at max_tokens (mean over LM calls)",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::{Generation, LmCall, Prompt, SamplingParams, Step};

    fn call(role: &str, n: usize) -> Step {
        Step::Lm(LmCall {
            role: role.into(),
            model: memfactory_core::episode::POLICY_MODEL.into(),
            prompt: Prompt::Tokens(vec![1]),
            params: SamplingParams::default(),
            output: Generation {
                prompt_ids: vec![1],
                token_ids: vec![0; n],
                logprobs: vec![0.0; n],
                text: String::new(),
                finish: memfactory_core::Finish::Length,
            },
        })
    }

    fn build_from(src: &str) -> Result<Box<dyn Reward>> {
        let mut c = Cfg::new("r", toml::from_str(src).unwrap());
        let r = build(&mut c)?;
        c.finish()?;
        Ok(r)
    }

    fn error_of(src: &str) -> String {
        match build_from(src) {
            Ok(_) => panic!("{src:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn dapo_piecewise_penalty() {
        let o = Overlong {
            max_tokens: 20,
            cache_tokens: 4,
            roles: vec![],
        };
        assert_eq!(o.penalty(0), 0.0);
        assert_eq!(o.penalty(16), 0.0);
        assert_eq!(o.penalty(17), -0.25);
        assert_eq!(o.penalty(20), -1.0);
        assert_eq!(o.penalty(21), -1.0);
    }

    #[test]
    fn mean_over_the_chosen_roles() {
        let r = build_from("max_tokens = 20\ncache_tokens = 4\nroles = [\"answer\"]").unwrap();
        let sample: Sample = serde_json::from_value(
            serde_json::json!({"id": "s", "question": "q", "answers": ["a"]}),
        )
        .unwrap();
        let e = Episode {
            sample_id: "s".into(),
            path: 0,
            seed: 0,
            answer: None,
            steps: vec![
                call("memory-update", 30),
                call("answer", 18),
                call("answer", 10),
            ],
            memory_tokens: None,
        };
        // answers: -0.5 and 0 → mean -0.25; the memory update is not counted.
        assert_eq!(r.score(&sample, &e).unwrap(), Some(-0.25));
        let all = build_from("max_tokens = 20\ncache_tokens = 4").unwrap();
        assert_eq!(all.score(&sample, &e).unwrap(), Some(-0.5));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = error_of("max_tokens = 8\ncache_tokens = 9");
        assert!(e.contains("r.cache_tokens"), "{e}");
        let e = error_of("cache_tokens = 2");
        assert!(e.contains("r.max_tokens"), "{e}");
        let e = error_of("max_tokens = 8\nweight = 1");
        assert!(e.contains("weight"), "{e}");
    }
}
