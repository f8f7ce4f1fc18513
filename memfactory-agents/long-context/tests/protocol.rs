//! The `long-context` paradigm against MemAgent's baseline code
//! (`BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146`,
//! `taskutils/memory_eval/utils/openai_api.py` and `boxed.py`): the prompts rendered as
//! `template_0shot.replace('$DOC$', context.strip()).replace('$Q$', item['input'].strip())`,
//! the cut `ids[:L//2] + ids[-L//2:]` of a long prompt, one answer call per path. Scripted LM,
//! byte tokens.

use memfactory_agent_long_context::{ANSWER_IS_TEMPLATE, ANSWER_ROLE, BOXED_TEMPLATE};
use memfactory_core::{Cfg, Episode, EpisodeCx, Paradigm, Prompt, Sample, StoreFactory, registry};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_store_memory::InMemoryFactory;

/// `template_0shot` of `openai_api.py`, copied from the Python source (a triple-quoted
/// literal with no escapes).
const PY_OPENAI: &str = r#"Please read the following text and answer the question below.

<text>
$DOC$
</text>

$Q$

Format your response as follows: "Therefore, the answer is (insert answer here)"."#;

/// `template_0shot` of `boxed.py` as Python evaluates the literal: `"\\boxed{{}}"` in a
/// plain string is the characters `\boxed{{}}`.
const PY_BOXED: &str = r#"Please read the following text and answer the question below.

<text>
$DOC$
</text>

$Q$

Put the answer in \boxed{{}}."#;

fn lm() -> ScriptedLm {
    ScriptedLm::new(
        vec![
            Rule {
                contains: vec!["Therefore, the answer is".into()],
                reply: "Therefore, the answer is 4242.".into(),
            },
            Rule {
                contains: vec!["Put the answer in".into()],
                reply: "\\boxed{4242}".into(),
            },
        ],
        "no rule",
    )
}

fn build(src: &str) -> memfactory_core::Result<(Box<dyn Paradigm>, toml::Table)> {
    registry::build::<dyn Paradigm>(Cfg::new("agent", toml::from_str(src).unwrap()))
}

fn run(agent: &dyn Paradigm, question: &str, context: &str) -> Vec<Episode> {
    let lm = lm();
    let sample = Sample::text("q1", question, context.to_string(), vec!["4242".into()]);
    let stores = InMemoryFactory;
    let mut cxs: Vec<_> = (0..agent.paths())
        .map(|p| EpisodeCx::new(&lm, stores.open("q1").unwrap(), "q1", p, 7))
        .collect();
    agent.run_group(&sample, &mut cxs).unwrap();
    cxs.into_iter().map(|cx| cx.into_episode()).collect()
}

fn only_prompt(ep: &Episode) -> String {
    let calls: Vec<_> = ep.lm_calls().collect();
    assert_eq!(calls.len(), 1, "one LM call per episode");
    assert_eq!(calls[0].role, ANSWER_ROLE);
    let Prompt::Chat(msgs) = &calls[0].prompt else {
        panic!("chat prompt expected")
    };
    assert_eq!(msgs.len(), 1);
    msgs[0].content.clone()
}

fn python_render(template: &str, context: &str, question: &str) -> String {
    template
        .replace("$DOC$", context.trim())
        .replace("$Q$", question.trim())
}

#[test]
fn templates_render_as_memagents_baseline() {
    assert_eq!(
        ANSWER_IS_TEMPLATE,
        PY_OPENAI
            .replace("$DOC$", "{context}")
            .replace("$Q$", "{prompt}")
    );
    assert_eq!(
        BOXED_TEMPLATE,
        PY_BOXED
            .replace("$DOC$", "{context}")
            .replace("$Q$", "{prompt}")
    );
    let question = "  What is the magic number?\n";
    let context = "\n The magic number is 4242. {prompt} stays. \n\n";
    for (src, py, reply) in [
        (
            "kind = \"long-context\"\nfinal = \"answer-is\"",
            PY_OPENAI,
            "Therefore, the answer is 4242.",
        ),
        ("kind = \"long-context\"", PY_BOXED, "\\boxed{4242}"),
    ] {
        let (agent, resolved) = build(src).unwrap();
        assert_eq!(resolved["strip"].as_bool(), Some(true));
        let eps = run(agent.as_ref(), question, context);
        assert_eq!(eps.len(), 1);
        assert_eq!(
            only_prompt(&eps[0]),
            python_render(py, context, question),
            "{src}"
        );
        assert_eq!(eps[0].answer.as_deref(), Some(reply));
    }
}

#[test]
fn long_prompts_are_cut_in_the_middle_as_memagent_cuts_them() {
    let context: String = (0..300)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let full = python_render(PY_BOXED, &context, "Q?");
    let n = full.len(); // byte tokens: one token per byte (ASCII)
    for l in [1usize, 2, 101, 150, n - 1, n, n + 5] {
        let (agent, _) =
            build(&format!("kind = \"long-context\"\nmax_input_tokens = {l}")).unwrap();
        let eps = run(agent.as_ref(), "Q?", &context);
        let got = only_prompt(&eps[0]);
        // Python: ids[:L//2] + ids[-L//2:] with -L//2 = floor(-L/2).
        let want = if n <= l {
            full.clone()
        } else {
            let tail = l - l / 2;
            format!("{}{}", &full[..l / 2], &full[n - tail..])
        };
        assert_eq!(got, want, "L = {l}");
        let noted = eps[0]
            .steps
            .iter()
            .any(|s| format!("{s:?}").contains("kept tokens"));
        assert_eq!(noted, n > l, "L = {l}: the cut is noted exactly when made");
    }
}

#[test]
fn paths_sample_one_answer_each_from_the_same_prompt() {
    let (agent, _) =
        build("kind = \"long-context\"\npaths = 3\n[answer]\ntemperature = 0.7").unwrap();
    let eps = run(agent.as_ref(), "Q?", "ctx");
    assert_eq!(eps.len(), 3);
    let prompts: Vec<String> = eps.iter().map(only_prompt).collect();
    assert!(prompts.iter().all(|p| p == &prompts[0]));
}

#[test]
fn bad_keys_name_the_key() {
    let err = build("kind = \"long-context\"\nfinal = \"box\"")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("agent.final") && err.contains("answer-is"),
        "{err}"
    );
    let err = build("kind = \"long-context\"\nmax_input_tokens = 0")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("agent.max_input_tokens"), "{err}");
    let err = build("kind = \"long-context\"\nchunk_tokens = 10")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("chunk_tokens"), "{err}");
    let dir = std::env::temp_dir().join(format!("lc-template-{}", std::process::id()));
    std::fs::write(&dir, "only {prompt}").unwrap();
    let err = build(&format!(
        "kind = \"long-context\"\n[answer]\ntemplate = {:?}",
        dir.to_str().unwrap()
    ))
    .err()
    .unwrap()
    .to_string();
    std::fs::remove_file(&dir).ok();
    assert!(err.contains("{context}"), "{err}");
}
