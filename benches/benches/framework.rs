//! Framework overhead: answer metrics, and a MemAgent episode with the scripted LM.

use criterion::{Criterion, criterion_group, criterion_main};
use memfactory_agent_memagent as _;
use memfactory_core::{Cfg, EpisodeCx, Paradigm, Sample, StoreFactory, registry, text};
use memfactory_lm_scripted::{Rule, ScriptedLm};
use memfactory_op_overwrite as _;
use memfactory_store_memory::InMemoryFactory;

fn metrics(c: &mut Criterion) {
    let pairs: Vec<(String, String)> = (0..1000)
        .map(|i| {
            (
                format!("The answer is probably the Eiffel Tower, number {i}."),
                format!("Eiffel Tower {}", i % 7),
            )
        })
        .collect();
    c.bench_function("f1+sub-em over 1000 answers", |b| {
        b.iter(|| {
            pairs
                .iter()
                .map(|(p, g)| {
                    text::f1_score(p, g) + f32::from(u8::from(text::sub_exact_match(p, g)))
                })
                .sum::<f32>()
        })
    });
}

fn episode(c: &mut Criterion) {
    let lm = ScriptedLm::new(
        vec![Rule {
            contains: vec!["Updated memory:".into()],
            reply: "{between:<memory>\\n|\\n</memory>}".into(),
        }],
        "\\boxed{x}",
    );
    let cfg = Cfg::new(
        "agent",
        toml::from_str("kind = \"memagent\"\nchunk_tokens = 1000\npaths = 4").unwrap(),
    );
    let (agent, _) = registry::build::<dyn Paradigm>(cfg).unwrap();
    let context = "The grass is green. The sky is blue. ".repeat(3000); // ~110 KB, 111 chunks
    let sample = Sample::text("b", "What?", context, vec!["x".into()]);
    let stores = InMemoryFactory;
    c.bench_function("memagent episode, 111 chunks x 4 paths, scripted LM", |b| {
        b.iter(|| {
            let mut cxs: Vec<EpisodeCx<'_>> = (0..4)
                .map(|p| EpisodeCx::new(&lm, stores.open("b").unwrap(), "b", p, p as u64 + 1))
                .collect();
            agent.run_group(&sample, &mut cxs).unwrap();
            cxs.len()
        })
    });
}

criterion_group!(benches, metrics, episode);
criterion_main!(benches);
