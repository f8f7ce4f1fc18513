//! `Paradigm::frozen_roles`: each paradigm, built through the registry, lists exactly the
//! roles its ops serve with their own (frozen) `model` table, each under its `op:<role>` model
//! id — the list `memfactory train` and `memfactory check` use to refuse a `[train] roles`
//! entry before any rollout. Memory-R1's teacher is not listed (its calls never enter a
//! trajectory).

use memfactory::core::{Cfg, Paradigm, registry};

const OWN: &str = "{ kind = \"scripted\", default = \"x\" }";

fn roles(agent: &str) -> Vec<(String, String)> {
    let table: toml::Table = toml::from_str(agent).unwrap();
    let (p, _) = registry::build::<dyn Paradigm>(Cfg::new("agent", table))
        .unwrap_or_else(|e| panic!("{e}\n{agent}"));
    let mut r = p.frozen_roles();
    r.sort();
    r
}

fn pairs(roles: &[&str]) -> Vec<(String, String)> {
    let mut v: Vec<_> = roles
        .iter()
        .map(|r| (r.to_string(), format!("op:{r}")))
        .collect();
    v.sort();
    v
}

#[cfg(all(feature = "memory-r1", feature = "lm-scripted"))]
#[test]
fn memory_r1_lists_the_ops_with_their_own_model() {
    assert_eq!(roles("kind = \"memory-r1\""), pairs(&[]));
    // Stage 1: a frozen answer agent.
    assert_eq!(
        roles(&format!(
            "kind = \"memory-r1\"\nanswer = {{ model = {OWN} }}"
        )),
        pairs(&["answer"])
    );
    // Stage 2: frozen extraction and manager.
    assert_eq!(
        roles(&format!(
            "kind = \"memory-r1\"\nextract = {{ model = {OWN} }}\nmanage = {{ model = {OWN} }}"
        )),
        pairs(&["extract", "manage"])
    );
    // Stage manager-turn: the teacher's model and ops are not the agent's.
    let turn = format!(
        "kind = \"memory-r1\"\nstage = \"manager-turn\"\nanswer = {{ model = {OWN} }}\n\
         [teacher]\nmodel = {OWN}\nmanage = {{ model = {OWN} }}"
    );
    assert_eq!(roles(&turn), pairs(&["answer"]));
}

#[cfg(all(feature = "rmm", feature = "lm-scripted"))]
#[test]
fn rmm_lists_reflection_llm_rerank_and_answer_models() {
    assert_eq!(roles("kind = \"rmm\""), pairs(&[]));
    assert_eq!(
        roles(&format!("kind = \"rmm\"\nreflect = {{ model = {OWN} }}")),
        pairs(&["reflect", "merge"])
    );
    assert_eq!(
        roles(&format!(
            "kind = \"rmm\"\nrerank = {{ method = \"llm\", model = {OWN} }}\nanswer = {{ model = {OWN} }}"
        )),
        pairs(&["rerank", "answer"])
    );
    // The LLM reranker on the episode's model is the policy's.
    assert_eq!(
        roles("kind = \"rmm\"\nrerank = { method = \"llm\" }"),
        pairs(&[])
    );
}

#[cfg(all(feature = "memagent", feature = "memory-r1", feature = "lm-scripted"))]
#[test]
fn memagent_lists_its_update_ops_model() {
    assert_eq!(roles("kind = \"memagent\""), pairs(&[]));
    // Any registered op can be the update op; one with its own model is frozen.
    assert_eq!(
        roles(&format!(
            "kind = \"memagent\"\nupdate = {{ kind = \"extract\", model = {OWN} }}"
        )),
        pairs(&["extract"])
    );
}
