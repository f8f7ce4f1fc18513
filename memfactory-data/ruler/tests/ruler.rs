//! Properties of the generated instances, sizing with a real tokenizer, and recipe errors.

use std::collections::HashMap;

use memfactory_core::{Cfg, DataSource, Error, LoadCx, Sample, registry};
use memfactory_data_ruler::{
    NOISE, NeedleType, Params, Ruler, Task, WORDS, needle, string_match_all, string_match_part,
};
use memfactory_lm_scripted::ScriptedLm;
use proptest::prelude::*;

fn params(task: Task, tokens: usize, seed: u64, offset: usize, samples: usize) -> Params {
    let mut p = Params::new(task);
    p.tokens = tokens;
    p.seed = seed;
    p.offset = offset;
    p.samples = samples;
    p.cwe = memfactory_data_ruler::CweParams::ruler_default(tokens);
    p.fwe = memfactory_data_ruler::FweParams::ruler_default(tokens);
    p
}

fn load(p: Params, lm: Option<&ScriptedLm>) -> Vec<Sample> {
    let ruler = Ruler::new(p).expect("valid params");
    let cx = LoadCx {
        tokenizer: lm.map(|l| l as &dyn memfactory_core::LanguageModel),
    };
    ruler.load(&cx).expect("load")
}

fn meta_usize(s: &Sample, key: &str) -> usize {
    s.meta[key].as_u64().unwrap_or_else(|| panic!("meta.{key}")) as usize
}

/// Checks the structure of one sample of `p.task`.
fn check_instance(p: &Params, s: &Sample) {
    assert!(!s.answers.is_empty());
    for a in &s.answers {
        assert!(s.context.contains(a.as_str()), "answer {a} not in context");
    }
    assert_eq!(s.meta["task"], p.task.name());
    assert_eq!(s.meta["metric"], "string-match-all");
    assert_eq!(s.category.as_deref(), Some(p.task.name()));
    // The references score 1 against themselves.
    assert_eq!(string_match_all(&s.answers.join(", "), &s.answers), 1.0);
    match p.task {
        t if t.is_niah() => check_niah(p, s),
        Task::Vt => check_vt(p, s),
        Task::Cwe => check_cwe(p, s),
        _ => check_fwe(p, s),
    }
}

fn check_niah(p: &Params, s: &Sample) {
    let (k, v, q) = p.needle_counts();
    let ty = p.niah.needle_type;
    let needles: Vec<&str> = s
        .context
        .lines()
        .filter(|l| l.starts_with("One of the special magic"))
        .collect();
    assert_eq!(needles.len(), k * v, "needle count");
    assert_eq!(s.context.matches("special magic").count(), k * v);
    // Every other line is the noise line.
    assert!(
        s.context
            .lines()
            .all(|l| l == NOISE || l.starts_with("One of the special magic"))
    );
    let queries: Vec<String> = serde_json::from_value(s.meta["queries"].clone()).unwrap();
    assert_eq!(queries.len(), q);
    assert_eq!(s.answers.len(), q * v);
    for (key, values) in queries.iter().zip(s.answers.chunks(v)) {
        assert!(s.question.contains(key.as_str()), "{} / {key}", s.question);
        for value in values {
            let line = needle(ty, key, value);
            assert_eq!(
                needles.iter().filter(|l| **l == line).count(),
                1,
                "needle {line:?} exactly once"
            );
        }
    }
    let single = q * v == 1;
    let expect = if single {
        format!("What is the special magic {} for ", ty.singular())
    } else {
        format!("What are all the special magic {} for ", ty.name())
    };
    assert!(s.question.starts_with(&expect), "{}", s.question);
    assert!(s.question.ends_with(" mentioned in the provided text?"));
    let depth = s.meta["depth"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&depth));
}

fn check_vt(p: &Params, s: &Sample) {
    let (chains, hops) = (p.vt.chains, p.vt.hops);
    let lines: Vec<&str> = s.context.lines().collect();
    let vars: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("VAR "))
        .collect();
    assert_eq!(vars.len(), chains * (hops + 1));
    assert!(lines.iter().all(|l| *l == NOISE || l.starts_with("VAR ")));
    assert_eq!(s.answers.len(), hops + 1);
    let value = s
        .question
        .strip_prefix("Find all variables that are assigned the value ")
        .and_then(|r| r.strip_suffix(" in the text above."))
        .expect("vt question");
    assert_eq!(value.len(), 5);
    let pos = |line: &str| lines.iter().position(|l| *l == line).expect(line);
    let mut last = pos(&format!("VAR {} = {value}", s.answers[0]));
    for w in s.answers.windows(2) {
        let at = pos(&format!("VAR {} = VAR {}", w[1], w[0]));
        assert!(at > last, "chain out of order");
        last = at;
    }
    for a in &s.answers {
        assert_eq!(a.len(), 5);
        assert!(a.chars().all(|c| c.is_ascii_uppercase()));
    }
}

fn items(context: &str) -> Vec<String> {
    // "1. w 2. w ..." — words never contain spaces or digits.
    let toks: Vec<&str> = context.split(' ').collect();
    assert_eq!(toks.len() % 2, 0);
    toks.chunks(2)
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c[0], format!("{}.", i + 1));
            c[1].to_string()
        })
        .collect()
}

fn check_cwe(p: &Params, s: &Sample) {
    let c = &p.cwe;
    let words = items(&s.context);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &words {
        *counts.entry(w).or_default() += 1;
    }
    assert_eq!(s.answers.len(), c.common);
    for a in &s.answers {
        assert_eq!(counts[a.as_str()], c.common_freq, "{a}");
    }
    let units = meta_usize(s, "units");
    assert_eq!(counts.len(), c.common + units);
    assert_eq!(
        words.len(),
        c.common * c.common_freq + units * c.uncommon_freq
    );
    for (w, n) in &counts {
        if !s.answers.iter().any(|a| a == w) {
            assert_eq!(*n, c.uncommon_freq, "{w}");
        }
    }
    assert_eq!(
        s.question,
        format!(
            "What are the {} most common words in the above list?",
            c.common
        )
    );
}

fn check_fwe(p: &Params, s: &Sample) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in s.context.split(' ') {
        *counts.entry(w).or_default() += 1;
    }
    assert_eq!(s.answers.len(), 3);
    let least_answer = s.answers.iter().map(|a| counts[a.as_str()]).min().unwrap();
    for (w, n) in &counts {
        if *w == "..." {
            assert!(*n >= least_answer);
        } else if !s.answers.iter().any(|a| a == w) {
            assert!(*n < least_answer, "{w} x{n} vs answers x{least_answer}");
            assert_eq!(w.len(), p.fwe.word_len);
        }
    }
}

fn arb_task() -> impl Strategy<Value = Task> {
    proptest::sample::select(Task::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn instances_hold_their_needles_and_are_deterministic(
        task in arb_task(),
        seed in any::<u64>(),
        tokens in 600usize..6000,
        offset in 0usize..1000,
    ) {
        let p = params(task, tokens, seed, offset, 2);
        let a = load(p.clone(), None);
        let b = load(p.clone(), None);
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        prop_assert_eq!(a.len(), 2);
        for (i, s) in a.iter().enumerate() {
            prop_assert_eq!(&s.id, &format!("{task}-{tokens}-{seed}-{}", offset + i));
            prop_assert_eq!(meta_usize(s, "target_tokens"), tokens);
            prop_assert_eq!(&s.meta["counted_by"], "chars/4");
            let measured = meta_usize(s, "tokens");
            prop_assert_eq!(measured, s.context.chars().count().div_ceil(4));
            prop_assert!(measured <= tokens);
            check_instance(&p, s);
        }
        prop_assert_ne!(&a[0].context, &a[1].context);
        // Instance `offset + 1` is the same whether loaded first or second.
        let single = load(params(task, tokens, seed, offset + 1, 1), None);
        prop_assert_eq!(&single[0], &a[1]);
    }

    #[test]
    fn needle_variants_hold_their_needles(
        task in proptest::sample::select(vec![
            Task::NiahSingle, Task::NiahMultikey, Task::NiahMultivalue, Task::NiahMultiquery,
        ]),
        key_type in proptest::sample::select(NeedleType::ALL.to_vec()),
        needle_type in proptest::sample::select(NeedleType::ALL.to_vec()),
        keys in 1usize..8,
        values in 1usize..6,
        queries in 1usize..8,
        depth in proptest::option::of(0.0f64..=1.0),
        seed in any::<u64>(),
        tokens in 1500usize..5000,
    ) {
        let mut p = params(task, tokens, seed, 0, 2);
        p.niah.key_type = key_type;
        p.niah.needle_type = needle_type;
        p.niah.keys = keys;
        p.niah.values = values;
        p.niah.queries = queries.min(keys);
        p.niah.depth = depth;
        for s in load(p.clone(), None) {
            check_instance(&p, &s);
            if let Some(d) = depth {
                // Every needle sits at the same line: the requested depth.
                let lines: Vec<&str> = s.context.lines().collect();
                let first = lines.iter().position(|l| l.starts_with("One of")).unwrap();
                let (k, v, _) = p.needle_counts();
                prop_assert!(lines[first..first + k * v].iter().all(|l| l.starts_with("One of")));
                let units = meta_usize(&s, "units");
                prop_assert_eq!(first, ((d * (units + 1) as f64) as usize).min(units));
            }
        }
    }

    #[test]
    fn vt_chains_and_hops(
        chains in 1usize..5, hops in 1usize..10, seed in any::<u64>(), tokens in 800usize..4000,
    ) {
        let mut p = params(Task::Vt, tokens, seed, 0, 2);
        p.vt.chains = chains;
        p.vt.hops = hops;
        for s in load(p.clone(), None) {
            check_instance(&p, &s);
        }
    }

    #[test]
    fn cwe_and_fwe_parameters(
        common in 1usize..15, cf in 2usize..8, uf in 1usize..2,
        alpha in 1.2f64..3.0, vocab in 5usize..200, word_len in 3usize..8,
        seed in any::<u64>(),
    ) {
        let mut p = params(Task::Cwe, 3000, seed, 0, 1);
        p.cwe.common = common;
        p.cwe.common_freq = cf;
        p.cwe.uncommon_freq = uf;
        for s in load(p.clone(), None) {
            check_instance(&p, &s);
        }
        let mut p = params(Task::Fwe, 3000, seed, 0, 1);
        p.fwe.alpha = alpha;
        p.fwe.vocab = vocab;
        p.fwe.word_len = word_len;
        for s in load(p.clone(), None) {
            check_instance(&p, &s);
        }
    }

    #[test]
    fn string_match_scores_are_fractions(
        refs in proptest::collection::vec("[a-z]{1,6}", 1..6),
        pred in "[a-z ]{0,40}",
    ) {
        let all = string_match_all(&pred, &refs);
        let part = string_match_part(&pred, &refs);
        let hits = refs.iter().filter(|r| pred.contains(r.as_str())).count();
        prop_assert_eq!(all, hits as f32 / refs.len() as f32);
        prop_assert_eq!(part, if hits > 0 { 1.0 } else { 0.0 });
        prop_assert!(all <= part);
        prop_assert_eq!(string_match_all(&pred.to_uppercase(), &refs), all);
    }
}

#[test]
fn string_match_known_cases() {
    let refs = ["1234567".to_string(), "7654321".to_string()];
    assert_eq!(string_match_all("1234567, 7654321", &refs), 1.0);
    assert_eq!(string_match_all("The number is 1234567.", &refs), 0.5);
    assert_eq!(string_match_all("none", &refs), 0.0);
    assert_eq!(string_match_part("The number is 1234567.", &refs), 1.0);
    assert_eq!(string_match_part("none", &refs), 0.0);
    assert_eq!(
        string_match_all("They are: Apple, RIVER", &["apple", "river"]),
        1.0
    );
}

#[test]
fn sizing_with_a_byte_tokenizer_is_within_five_percent() {
    let lm = ScriptedLm::new(vec![], "");
    for task in Task::ALL {
        for tokens in [2500usize, 6000, 16000] {
            let p = params(task, tokens, 11, 0, 3);
            for s in load(p.clone(), Some(&lm)) {
                let measured = meta_usize(&s, "tokens");
                assert_eq!(
                    measured,
                    s.context.len(),
                    "byte tokenizer: 1 token = 1 byte"
                );
                assert_eq!(s.meta["counted_by"], "tokenizer");
                assert!(measured <= tokens, "{task} {tokens}: {measured}");
                assert!(
                    measured as f64 >= tokens as f64 * 0.95,
                    "{task} {tokens}: measured {measured}"
                );
                check_instance(&p, &s);
            }
        }
    }
}

#[test]
fn estimate_sizing_is_within_five_percent() {
    for task in Task::ALL {
        for tokens in [2000usize, 8000, 30_000] {
            for s in load(params(task, tokens, 5, 0, 2), None) {
                let measured = meta_usize(&s, "tokens");
                assert!(
                    measured <= tokens && measured as f64 >= tokens as f64 * 0.95,
                    "{task} {tokens}: {measured} units {}",
                    s.meta["units"]
                );
            }
        }
    }
}

#[test]
fn cwe_switches_to_word_pairs_when_words_run_out() {
    let lm = ScriptedLm::new(vec![], "");
    let small = &load(params(Task::Cwe, 3000, 3, 0, 1), Some(&lm))[0];
    assert_eq!(small.meta["vocabulary"], "words");
    assert!(!small.context.contains('-'));
    let p = params(Task::Cwe, 40_000, 3, 0, 2);
    for s in load(p.clone(), Some(&lm)) {
        assert_eq!(s.meta["vocabulary"], "pairs");
        assert!(s.answers.iter().all(|a| a.contains('-')));
        let measured = meta_usize(&s, "tokens");
        assert!((38_000..=40_000).contains(&measured), "{measured}");
        check_instance(&p, &s);
    }
}

#[test]
fn seeds_and_tasks_give_different_instances() {
    let a = load(params(Task::NiahSingle, 1000, 1, 0, 1), None);
    let b = load(params(Task::NiahSingle, 1000, 2, 0, 1), None);
    let c = load(params(Task::NiahMultikey, 1000, 1, 0, 1), None);
    assert_ne!(a[0].answers, b[0].answers);
    assert_ne!(a[0].context, c[0].context);
}

#[test]
fn frozen_instance_bytes() {
    // A change here changes every dataset this crate generates: bump it only on purpose.
    let s = &load(params(Task::NiahSingle, 300, 0, 0, 1), None)[0];
    let h = memfactory_core::seed::fnv1a(s.context.as_bytes());
    assert_eq!(
        (s.answers.clone(), s.question.clone(), h),
        (
            FROZEN_ANSWERS.iter().map(|a| a.to_string()).collect(),
            FROZEN_QUESTION.to_string(),
            FROZEN_HASH
        ),
        "{:?} {:?} {h:#x}",
        s.answers,
        s.question
    );
}

const FROZEN_ANSWERS: &[&str] = &["2436647"];
const FROZEN_QUESTION: &str =
    "What is the special magic number for bear mentioned in the provided text?";
const FROZEN_HASH: u64 = 0x20c5_9b58_5939_27e8;

#[test]
fn word_list_is_clean() {
    let mut seen = std::collections::HashSet::new();
    let noise_words: Vec<String> = format!("{NOISE} one of the special magic numbers for is")
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    assert!(WORDS.len() >= 300, "{}", WORDS.len());
    for w in WORDS {
        assert!(seen.insert(*w), "duplicate {w}");
        assert!(
            w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()),
            "{w}"
        );
        assert!(!noise_words.iter().any(|n| n == w), "{w} is a noise word");
    }
}

// ---------------------------------------------------------------------------------------
// Recipe errors
// ---------------------------------------------------------------------------------------

fn build(src: &str) -> memfactory_core::Result<(Box<dyn DataSource>, toml::Table)> {
    let table: toml::Table = toml::from_str(&format!("kind = \"ruler\"\n{src}")).unwrap();
    registry::build::<dyn DataSource>(Cfg::new("data.eval", table))
}

fn config_error(src: &str) -> (String, String) {
    match build(src) {
        Ok(_) => panic!("expected an error for {src:?}"),
        Err(e) => {
            assert!(e.is_user_error(), "{e}");
            let text = e.to_string();
            match e {
                Error::Config { key, .. } => (key, text),
                other => panic!("expected a config error, got {other}"),
            }
        }
    }
}

#[test]
fn registered_and_resolves_defaults() {
    let (ds, resolved) = build("task = \"cwe\"").unwrap();
    assert_eq!(resolved["kind"].as_str(), Some("ruler"));
    assert_eq!(resolved["tokens"].as_integer(), Some(4000));
    assert_eq!(resolved["samples"].as_integer(), Some(100));
    assert_eq!(resolved["common_freq"].as_integer(), Some(6));
    assert_eq!(resolved["uncommon_freq"].as_integer(), Some(1));
    assert!(ds.describe().contains("4 characters"), "{}", ds.describe());
    let (ds, resolved) = build("task = \"vt\"\ntokens = 8000\nsamples = 3").unwrap();
    assert_eq!(resolved["hops"].as_integer(), Some(4));
    assert_eq!(resolved["chains"].as_integer(), Some(1));
    let samples = ds.load(&LoadCx::default()).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].id, "vt-8000-0-0");
    let (_, resolved) = build("task = \"fwe\"\ntokens = 8000").unwrap();
    assert_eq!(resolved["vocab"].as_integer(), Some(160));
    assert_eq!(resolved["alpha"].as_float(), Some(2.0));
    let (_, resolved) = build("task = \"niah-multiquery\"\ndepth = 0.5").unwrap();
    assert_eq!(resolved["queries"].as_integer(), Some(4));
    assert_eq!(resolved["needle_type"].as_str(), Some("numbers"));
}

#[test]
fn unknown_task_names_task() {
    let (key, text) = config_error("task = \"niah\"");
    assert_eq!(key, "data.eval.task");
    assert!(
        text.contains("niah-single") && text.contains("fwe"),
        "{text}"
    );
    let (key, _) = config_error("tokens = 100");
    assert_eq!(key, "data.eval.task");
}

#[test]
fn bad_values_name_their_keys() {
    let cases = [
        ("task = \"vt\"\nhops = 0", "data.eval.hops"),
        ("task = \"vt\"\nchains = 0", "data.eval.chains"),
        ("task = \"niah-single\"\ntokens = 10", "data.eval.tokens"),
        (
            "task = \"niah-multivalue\"\nvalues = 50\ntokens = 100",
            "data.eval.tokens",
        ),
        ("task = \"cwe\"\ntokens = 50", "data.eval.tokens"),
        ("task = \"fwe\"\ntokens = 5", "data.eval.tokens"),
        ("task = \"niah-single\"\ntokens = 0", "data.eval.tokens"),
        ("task = \"niah-single\"\nsamples = 0", "data.eval.samples"),
        (
            "task = \"niah-multiquery\"\nkeys = 2\nqueries = 3",
            "data.eval.queries",
        ),
        ("task = \"niah-multikey\"\nkeys = 0", "data.eval.keys"),
        (
            "task = \"niah-multikey\"\nkeys = 5000\nneedle_type = \"words\"",
            "data.eval.keys",
        ),
        (
            "task = \"niah-single\"\nneedle_type = \"emoji\"",
            "data.eval.needle_type",
        ),
        (
            "task = \"niah-single\"\nkey_type = \"x\"",
            "data.eval.key_type",
        ),
        ("task = \"niah-single\"\ndepth = 1.5", "data.eval.depth"),
        ("task = \"niah-single\"\nhops = 3", "data.eval.hops"),
        ("task = \"vt\"\nkeys = 3", "data.eval.keys"),
        (
            "task = \"cwe\"\ncommon_freq = 2\nuncommon_freq = 2",
            "data.eval.common_freq",
        ),
        ("task = \"cwe\"\ncommon = 0", "data.eval.common"),
        ("task = \"fwe\"\nalpha = 1.0", "data.eval.alpha"),
        ("task = \"fwe\"\nvocab = 4", "data.eval.vocab"),
        ("task = \"fwe\"\nword_len = 1", "data.eval.word_len"),
        ("task = \"vt\"\ntokens = \"big\"", "data.eval.tokens"),
    ];
    for (src, want) in cases {
        let (key, text) = config_error(src);
        assert_eq!(key, want, "{src:?}: {text}");
    }
}

#[test]
fn tokenizer_too_coarse_fails_at_load_naming_tokens() {
    // 4 characters per token passes at build; a byte tokenizer counts 4x more.
    let (ds, _) = build("task = \"niah-single\"\ntokens = 30\nsamples = 1").unwrap();
    let lm = ScriptedLm::new(vec![], "");
    let err = ds
        .load(&LoadCx {
            tokenizer: Some(&lm),
        })
        .expect_err("too small for a byte tokenizer");
    match err {
        Error::Config { key, message } => {
            assert_eq!(key, "data.eval.tokens");
            assert!(message.contains("tokenizer"), "{message}");
        }
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Sizes bounded before anything is built
// ---------------------------------------------------------------------------------------

#[test]
fn huge_tokens_are_rejected_at_build_naming_tokens() {
    // Before the bound, a trillion tokens passed the build and aborted the generator.
    for task in ["niah-single", "vt", "cwe", "fwe"] {
        let (key, text) = config_error(&format!("task = \"{task}\"\ntokens = 1000000000000"));
        assert_eq!(key, "data.eval.tokens", "{task}: {text}");
        assert!(text.contains("at most 33554432"), "{text}");
    }
    let (key, _) = config_error("task = \"vt\"\ntokens = 33554433");
    assert_eq!(key, "data.eval.tokens");
    build("task = \"niah-single\"\ntokens = 33554432").expect("the bound itself is accepted");
}

#[test]
fn a_limit_generates_only_the_first_samples() {
    let (ds, _) = build("task = \"niah-single\"\ntokens = 200\nsamples = 1000000000000").unwrap();
    let first = ds.load_first(&LoadCx::default(), 2).unwrap();
    let ids: Vec<&str> = first.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["niah-single-200-0-0", "niah-single-200-0-1"]);
    // The same instances as a plain load of 2.
    let (small, _) = build("task = \"niah-single\"\ntokens = 200\nsamples = 2").unwrap();
    assert_eq!(small.load(&LoadCx::default()).unwrap(), first);
    // A limit above `samples` loads `samples`.
    assert_eq!(small.load_first(&LoadCx::default(), 10).unwrap().len(), 2);
}

#[test]
fn a_load_too_large_for_memory_is_refused_naming_samples() {
    let (ds, _) = build("task = \"niah-single\"\ntokens = 200\nsamples = 1000000000000").unwrap();
    let err = ds.load(&LoadCx::default()).expect_err("a trillion samples");
    assert!(err.is_user_error(), "{err}");
    match err {
        Error::Config { key, message } => {
            assert_eq!(key, "data.eval.samples");
            assert!(message.contains("--limit"), "{message}");
            // 2^30 tokens of 200-token contexts.
            assert!(message.contains("at most 5368709 of them"), "{message}");
        }
        other => panic!("{other}"),
    }
    let err = ds
        .load_first(&LoadCx::default(), 6_000_000)
        .expect_err("six million samples of 200 tokens");
    assert!(err.to_string().contains("data.eval.samples"), "{err}");
}
