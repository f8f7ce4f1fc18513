//! The generator: one sample is a pure function of (filler conversations, parameters,
//! index).

use std::collections::BTreeMap;

use memfactory_core::rng::{bounded, sample_distinct, shuffle};
use memfactory_core::{Dialogue, Sample, Session, Turn, seed};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde_json::json;

use crate::attrs::{ATTRIBUTES, Attribute, SPEAKERS, fill};
use crate::gold::{GoldOp, OpKind};
use crate::persona::Conversation;
use crate::{NOT_MENTIONED, ParamError, Params, QuestionType};

/// The seed of instance `index`: `derive_n(derive(seed, "convgen"), index)`.
pub fn instance_seed(seed_: u64, index: usize) -> u64 {
    seed::derive_n(seed::derive(seed_, "convgen"), index as u64)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Day `days` after 1 January 2022 as (year, month 1–12, day 1–31).
fn civil(mut days: u64) -> (u64, usize, u64) {
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 2022;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let lens = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lens[month] {
        days -= lens[month];
        month += 1;
    }
    (year, month + 1, days + 1)
}

/// A session's date: `2:15 pm on 3 March, 2023` (LoCoMo's format) and its day part
/// `3 March, 2023`.
#[derive(Debug, Clone)]
struct Date {
    full: String,
    day: String,
    day_no_comma: String,
}

fn date(days: u64, hour: u64, minute: u64) -> Date {
    let (y, m, d) = civil(days);
    let h12 = if hour.is_multiple_of(12) {
        12
    } else {
        hour % 12
    };
    let ampm = if hour < 12 { "am" } else { "pm" };
    let day = format!("{d} {}, {y}", MONTHS[m - 1]);
    Date {
        full: format!("{h12}:{minute:02} {ampm} on {day}"),
        day,
        day_no_comma: format!("{d} {} {y}", MONTHS[m - 1]),
    }
}

/// Replaces the name placeholders of persona-chat lines (`[User 1's name]`, `[user 2 name]`,
/// `[User 1]`, `[user2]`, any case) by the speaker playing that user.
fn fill_names(text: &str, names: &[&str]) -> String {
    if !text.contains('[') {
        return text.to_string();
    }
    let mut out = text.to_string();
    for (n, name) in names.iter().enumerate() {
        for pattern in [
            format!("[user {}'s name]", n + 1),
            format!("[user {} name]", n + 1),
            format!("[user {}]", n + 1),
            format!("[user{}]", n + 1),
        ] {
            // ASCII lowercasing keeps byte offsets, so matches in `lower` are matches in `out`.
            while let Some(at) = out.to_ascii_lowercase().find(&pattern) {
                out.replace_range(at..at + pattern.len(), name);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Add,
    /// `quiet`: the statement names only the new value.
    Update {
        quiet: bool,
    },
    Delete,
}

/// The life of one (speaker, attribute) fact: an ADD, then updates, maybe a retraction, each
/// in a later session.
#[derive(Debug, Clone)]
struct Chain {
    speaker: usize,
    attr: usize,
    /// One value per ADD / UPDATE step, in order.
    values: Vec<&'static str>,
    /// Steps with their 0-based session, sessions strictly increasing.
    steps: Vec<(Step, usize)>,
}

impl Chain {
    fn attribute(&self) -> &'static Attribute {
        &ATTRIBUTES[self.attr]
    }

    /// The value after step `k` (`None` after a DELETE).
    fn value_after(&self, k: usize) -> Option<&'static str> {
        let mut v = None;
        let mut next = 0;
        for (step, _) in &self.steps[..=k] {
            match step {
                Step::Add | Step::Update { .. } => {
                    v = Some(self.values[next]);
                    next += 1;
                }
                Step::Delete => v = None,
            }
        }
        v
    }

    /// The value before step `k`.
    fn value_before(&self, k: usize) -> Option<&'static str> {
        if k == 0 {
            None
        } else {
            self.value_after(k - 1)
        }
    }
}

/// What the question asks, by chain index.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Single(usize),
    Temporal(usize),
    Latest(usize),
    Before(usize),
    Bridge { by: usize, asked: usize },
    Absent { speaker: usize, attr: usize },
}

struct Planner<'r> {
    rng: &'r mut ChaCha8Rng,
    sessions: usize,
    /// Per attribute: its value indices, shuffled; `next` is the first unused.
    pools: Vec<(Vec<usize>, usize)>,
    taken: [[bool; ATTRIBUTES.len()]; 2],
    chains: Vec<Chain>,
}

impl Planner<'_> {
    fn take(&mut self, attr: usize, n: usize) -> Vec<&'static str> {
        let (pool, next) = &mut self.pools[attr];
        let out = pool[*next..*next + n]
            .iter()
            .map(|&i| ATTRIBUTES[attr].values[i])
            .collect();
        *next += n;
        out
    }

    /// `k` distinct sessions, in increasing order.
    fn sessions_sorted(&mut self, k: usize) -> Vec<usize> {
        let mut s: Vec<usize> = sample_distinct(self.rng, self.sessions as u64, k)
            .into_iter()
            .map(|s| s as usize)
            .collect();
        s.sort_unstable();
        s
    }

    fn pick(&mut self, from: &[usize]) -> usize {
        from[bounded(self.rng, from.len() as u64) as usize]
    }

    fn chain(&mut self, speaker: usize, attr: usize, steps: Vec<Step>) -> usize {
        let sessions = self.sessions_sorted(steps.len());
        let n_values = steps.iter().filter(|s| **s != Step::Delete).count();
        let values = self.take(attr, n_values);
        self.taken[speaker][attr] = true;
        self.chains.push(Chain {
            speaker,
            attr,
            values,
            steps: steps.into_iter().zip(sessions).collect(),
        });
        self.chains.len() - 1
    }

    fn plan_question(&mut self, ty: QuestionType) -> Ask {
        let all: Vec<usize> = (0..ATTRIBUTES.len()).collect();
        let updatable: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&a| ATTRIBUTES[a].updatable())
            .collect();
        let x = bounded(self.rng, 2) as usize;
        match ty {
            QuestionType::SingleSession => {
                let a = self.pick(&all);
                Ask::Single(self.chain(x, a, vec![Step::Add]))
            }
            QuestionType::Temporal => {
                let events: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&a| ATTRIBUTES[a].event.is_some())
                    .collect();
                let a = self.pick(&events);
                Ask::Temporal(self.chain(x, a, vec![Step::Add]))
            }
            QuestionType::KnowledgeUpdate => {
                let a = self.pick(&updatable);
                let updates = if self.sessions >= 3 {
                    1 + bounded(self.rng, 2) as usize
                } else {
                    1
                };
                let mut steps = vec![Step::Add];
                for _ in 0..updates {
                    let quiet = bounded(self.rng, 2) == 0;
                    steps.push(Step::Update { quiet });
                }
                Ask::Latest(self.chain(x, a, steps))
            }
            QuestionType::MultiSession => {
                if bounded(self.rng, 2) == 0 {
                    let a = self.pick(&updatable);
                    Ask::Before(self.chain(x, a, vec![Step::Add, Step::Update { quiet: true }]))
                } else {
                    let two = sample_distinct(self.rng, ATTRIBUTES.len() as u64, 2);
                    let s = sample_distinct(self.rng, self.sessions as u64, 2);
                    let mut one = |attr: u64, session: u64| {
                        let values = self.take(attr as usize, 1);
                        self.taken[x][attr as usize] = true;
                        self.chains.push(Chain {
                            speaker: x,
                            attr: attr as usize,
                            values,
                            steps: vec![(Step::Add, session as usize)],
                        });
                        self.chains.len() - 1
                    };
                    let by = one(two[0], s[0]);
                    let asked = one(two[1], s[1]);
                    Ask::Bridge { by, asked }
                }
            }
            QuestionType::Abstention => {
                let a = self.pick(&all);
                // The other speaker states the attribute: the question is about the one who
                // never did (LoCoMo's adversarial questions swap speakers the same way).
                self.chain(1 - x, a, vec![Step::Add]);
                self.taken[x][a] = true;
                Ask::Absent {
                    speaker: x,
                    attr: a,
                }
            }
        }
    }

    fn plan_distractors(&mut self, n: usize) {
        let mut free: Vec<(usize, usize)> = (0..2)
            .flat_map(|s| (0..ATTRIBUTES.len()).map(move |a| (s, a)))
            .filter(|&(s, a)| !self.taken[s][a])
            .collect();
        shuffle(self.rng, &mut free);
        free.truncate(n);
        for (s, a) in free {
            let attr = &ATTRIBUTES[a];
            let mut kinds = vec![Step::Add, Step::Add];
            if self.sessions >= 2 {
                if attr.updatable() {
                    kinds.push(Step::Update { quiet: false });
                }
                if attr.deletable() {
                    kinds.push(Step::Delete);
                }
            }
            let steps = match kinds[bounded(self.rng, kinds.len() as u64) as usize] {
                Step::Add => vec![Step::Add],
                Step::Update { .. } => {
                    let quiet = bounded(self.rng, 2) == 0;
                    vec![Step::Add, Step::Update { quiet }]
                }
                Step::Delete => vec![Step::Add, Step::Delete],
            };
            self.chain(s, a, steps);
        }
    }
}

/// Samples generated from a filler pool (see the crate docs).
#[derive(Debug, Clone)]
pub struct Generator<'a> {
    params: Params,
    /// Conversations with at least `turns_per_session` lines.
    pool: Vec<&'a Conversation>,
}

impl<'a> Generator<'a> {
    /// A generator drawing filler from the conversations of `convs` that have at least
    /// `params.turns_per_session` lines. Fails when `params` is invalid or no conversation is
    /// long enough (naming `turns_per_session`).
    pub fn new(convs: &'a [Conversation], params: Params) -> Result<Self, ParamError> {
        params.check()?;
        let pool: Vec<&Conversation> = convs
            .iter()
            .filter(|c| c.lines.len() >= params.turns_per_session)
            .collect();
        if pool.is_empty() {
            let longest = convs.iter().map(|c| c.lines.len()).max().unwrap_or(0);
            return Err(ParamError {
                key: "turns_per_session",
                message: format!(
                    "{} filler turns per session, but the longest conversation of the file has \
                     {longest} dialogue lines",
                    params.turns_per_session
                ),
            });
        }
        Ok(Generator { params, pool })
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Number of conversations long enough to fill a session.
    pub fn pool_size(&self) -> usize {
        self.pool.len()
    }

    /// The question type of instance `index`: `types[index % types.len()]`.
    pub fn question_type(&self, index: usize) -> QuestionType {
        self.params.types[index % self.params.types.len()]
    }

    /// Instance `index` (absolute: `offset` is not added).
    pub fn sample(&self, index: usize) -> Sample {
        let p = &self.params;
        let ty = self.question_type(index);
        let mut rng = ChaCha8Rng::seed_from_u64(instance_seed(p.seed, index));
        let rng = &mut rng;
        let n_sessions = p.sessions;

        // Speakers and session dates.
        let names: Vec<&str> = sample_distinct(rng, SPEAKERS.len() as u64, 2)
            .into_iter()
            .map(|i| SPEAKERS[i as usize])
            .collect();
        let mut day = bounded(rng, 730);
        let mut dates = Vec::with_capacity(n_sessions);
        for s in 0..n_sessions {
            if s > 0 {
                day += 1 + bounded(rng, 30);
            }
            let hour = 8 + bounded(rng, 14);
            let minute = bounded(rng, 60);
            dates.push(date(day, hour, minute));
        }

        // Facts and the question.
        let mut pools = Vec::with_capacity(ATTRIBUTES.len());
        for a in ATTRIBUTES {
            let mut v: Vec<usize> = (0..a.values.len()).collect();
            shuffle(rng, &mut v);
            pools.push((v, 0));
        }
        let mut planner = Planner {
            rng: &mut *rng,
            sessions: n_sessions,
            pools,
            taken: [[false; ATTRIBUTES.len()]; 2],
            chains: Vec::new(),
        };
        let ask = planner.plan_question(ty);
        planner.plan_distractors(p.distractor_facts);
        let chains = planner.chains;

        // Evidence turns by session, in a random order within each session.
        let mut by_session: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_sessions];
        for (c, chain) in chains.iter().enumerate() {
            for (k, &(_, s)) in chain.steps.iter().enumerate() {
                by_session[s].push((c, k));
            }
        }
        for events in &mut by_session {
            shuffle(rng, events);
        }

        // Filler conversations: distinct across the sample's sessions when the pool allows.
        let t = p.turns_per_session;
        let filler: Vec<(&Conversation, usize)> = if t == 0 {
            Vec::new()
        } else {
            let picks: Vec<usize> = if n_sessions <= self.pool.len() {
                sample_distinct(rng, self.pool.len() as u64, n_sessions)
                    .into_iter()
                    .map(|i| i as usize)
                    .collect()
            } else {
                (0..n_sessions)
                    .map(|_| bounded(rng, self.pool.len() as u64) as usize)
                    .collect()
            };
            picks
                .into_iter()
                .map(|i| {
                    let conv = self.pool[i];
                    let start = bounded(rng, (conv.lines.len() - t + 1) as u64) as usize;
                    (conv, start)
                })
                .collect()
        };

        // Render sessions, turns and gold operations.
        let mut sessions = Vec::with_capacity(n_sessions);
        let mut gold: Vec<GoldOp> = Vec::new();
        // (turn id, reading position) of each chain step.
        let mut step_turn: Vec<Vec<(String, usize)>> = chains
            .iter()
            .map(|c| vec![(String::new(), 0); c.steps.len()])
            .collect();
        let mut position = 0usize;
        for (s, events) in by_session.iter().enumerate() {
            let total = t + events.len();
            let mut slots: Vec<usize> = sample_distinct(rng, total as u64, events.len())
                .into_iter()
                .map(|i| i as usize)
                .collect();
            slots.sort_unstable();
            let mut turns = Vec::with_capacity(total);
            let (mut next_event, mut next_filler) = (0, 0);
            for slot in 0..total {
                let id = format!("D{}:{}", s + 1, slot + 1);
                if next_event < events.len() && slots[next_event] == slot {
                    let (c, k) = events[next_event];
                    next_event += 1;
                    let chain = &chains[c];
                    let attr = chain.attribute();
                    let name = names[chain.speaker];
                    let (step, _) = chain.steps[k];
                    let before = chain.value_before(k);
                    let after = chain.value_after(k);
                    let templates = match step {
                        Step::Add => attr.add,
                        Step::Update { quiet: false } => attr.update,
                        Step::Update { quiet: true } => attr.update_quiet,
                        Step::Delete => attr.delete,
                    };
                    let template = templates[bounded(rng, templates.len() as u64) as usize];
                    let text = match step {
                        Step::Add => fill(template, name, after, None, None),
                        _ => fill(template, name, None, before, after),
                    };
                    let fact_of =
                        |v: Option<&str>| v.map(|v| fill(attr.fact, name, Some(v), None, None));
                    gold.push(GoldOp {
                        turn: id.clone(),
                        session: s + 1,
                        op: match step {
                            Step::Add => OpKind::Add,
                            Step::Update { .. } => OpKind::Update,
                            Step::Delete => OpKind::Delete,
                        },
                        speaker: name.to_string(),
                        key: Some(format!("{name}/{}", attr.name)),
                        attribute: Some(attr.name.to_string()),
                        value: after.map(str::to_string),
                        fact: fact_of(after),
                        previous: fact_of(before),
                    });
                    step_turn[c][k] = (id.clone(), position);
                    turns.push(Turn {
                        id,
                        speaker: name.to_string(),
                        text,
                    });
                } else {
                    let (conv, start) = filler[s];
                    let line = &conv.lines[start + next_filler];
                    next_filler += 1;
                    let name = names[line.speaker];
                    gold.push(GoldOp {
                        turn: id.clone(),
                        session: s + 1,
                        op: OpKind::Noop,
                        speaker: name.to_string(),
                        key: None,
                        attribute: None,
                        value: None,
                        fact: None,
                        previous: None,
                    });
                    turns.push(Turn {
                        id,
                        speaker: name.to_string(),
                        text: fill_names(&line.text, &names),
                    });
                }
                position += 1;
            }
            sessions.push(Session {
                index: s + 1,
                date: Some(dates[s].full.clone()),
                turns,
            });
        }

        // The question.
        let turn_of = |c: usize, k: usize| step_turn[c][k].clone();
        let mut meta: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let (question, answers, evidence, subject, attribute, form) = match ask {
            Ask::Single(c) => {
                let ch = &chains[c];
                let name = names[ch.speaker];
                (
                    fill(ch.attribute().ask, name, None, None, None),
                    vec![ch.values[0].to_string()],
                    vec![turn_of(c, 0)],
                    name,
                    ch.attribute().name,
                    "fact",
                )
            }
            Ask::Temporal(c) => {
                let ch = &chains[c];
                let name = names[ch.speaker];
                let event = ch.attribute().event.unwrap_or_default();
                let event = fill(event, name, Some(ch.values[0]), None, None);
                let d = &dates[ch.steps[0].1];
                meta.insert("date".into(), json!(d.full));
                (
                    format!("When did {name} {event}?"),
                    vec![d.day.clone(), d.day_no_comma.clone()],
                    vec![turn_of(c, 0)],
                    name,
                    ch.attribute().name,
                    "when",
                )
            }
            Ask::Latest(c) => {
                let ch = &chains[c];
                let name = names[ch.speaker];
                let last = ch.values[ch.values.len() - 1];
                (
                    fill(ch.attribute().ask_now, name, None, None, None),
                    vec![last.to_string()],
                    (0..ch.steps.len()).map(|k| turn_of(c, k)).collect(),
                    name,
                    ch.attribute().name,
                    "latest-value",
                )
            }
            Ask::Before(c) => {
                let ch = &chains[c];
                let name = names[ch.speaker];
                (
                    fill(
                        ch.attribute().ask_before,
                        name,
                        None,
                        None,
                        Some(ch.values[1]),
                    ),
                    vec![ch.values[0].to_string()],
                    vec![turn_of(c, 0), turn_of(c, 1)],
                    name,
                    ch.attribute().name,
                    "before-update",
                )
            }
            Ask::Bridge { by, asked } => {
                let (b, a) = (&chains[by], &chains[asked]);
                let who = format!(
                    "the person {}",
                    fill(b.attribute().descriptor, "", Some(b.values[0]), None, None)
                );
                meta.insert("bridge_attribute".into(), json!(b.attribute().name));
                (
                    fill(a.attribute().ask, &who, None, None, None),
                    vec![a.values[0].to_string()],
                    vec![turn_of(by, 0), turn_of(asked, 0)],
                    names[a.speaker],
                    a.attribute().name,
                    "bridge",
                )
            }
            Ask::Absent { speaker, attr } => {
                let name = names[speaker];
                (
                    fill(ATTRIBUTES[attr].ask, name, None, None, None),
                    vec![NOT_MENTIONED.to_string()],
                    Vec::new(),
                    name,
                    ATTRIBUTES[attr].name,
                    "unstated-attribute",
                )
            }
        };
        let mut evidence = evidence;
        evidence.sort_by_key(|(_, pos)| *pos);
        let evidence: Vec<String> = evidence.into_iter().map(|(id, _)| id).collect();

        // The final fact state.
        let mut facts = serde_json::Map::new();
        for ch in &chains {
            if let Some(v) = ch.value_after(ch.steps.len() - 1) {
                let name = names[ch.speaker];
                facts.insert(
                    format!("{name}/{}", ch.attribute().name),
                    json!(fill(ch.attribute().fact, name, Some(v), None, None)),
                );
            }
        }

        let mut sample = Sample::text(
            format!("convgen-{}-{index}", p.seed),
            question,
            String::new(),
            answers,
        );
        sample.category = Some(ty.name().to_string());
        sample.dialogue = Some(Dialogue {
            speakers: names.iter().map(|n| n.to_string()).collect(),
            sessions,
        });
        meta.insert("source".into(), json!("convgen"));
        meta.insert("index".into(), json!(index));
        meta.insert("seed".into(), json!(p.seed));
        meta.insert("type".into(), json!(ty.name()));
        meta.insert("form".into(), json!(form));
        meta.insert("subject".into(), json!(subject));
        meta.insert("attribute".into(), json!(attribute));
        meta.insert("evidence".into(), json!(evidence));
        meta.insert(
            "gold_ops".into(),
            serde_json::to_value(&gold).unwrap_or_default(),
        );
        meta.insert("facts".into(), serde_json::Value::Object(facts));
        meta.insert(
            "filler".into(),
            json!(
                filler
                    .iter()
                    .enumerate()
                    .map(|(s, (c, start))| json!({"session": s + 1, "row": c.row, "first_line": start}))
                    .collect::<Vec<_>>()
            ),
        );
        sample.meta = meta;
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_placeholders() {
        let names = ["Ann", "Ben"];
        assert_eq!(
            fill_names("Hi, I'm [User 1's name]! And you, [user 2 name]?", &names),
            "Hi, I'm Ann! And you, Ben?"
        );
        assert_eq!(
            fill_names("[USER2] and [user 1] and [name]", &names),
            "Ben and Ann and [name]"
        );
        assert_eq!(fill_names("no placeholder", &names), "no placeholder");
    }

    #[test]
    fn dates() {
        assert_eq!(civil(0), (2022, 1, 1));
        assert_eq!(civil(31 + 28), (2022, 3, 1));
        assert_eq!(civil(365), (2023, 1, 1));
        assert_eq!(civil(365 + 365 + 31 + 28), (2024, 2, 29));
        assert_eq!(civil(365 + 366 + 365), (2025, 1, 1));
        let d = date(365 + 31 + 28 + 2, 14, 5);
        assert_eq!(d.full, "2:05 pm on 3 March, 2023");
        assert_eq!(d.day, "3 March, 2023");
        assert_eq!(d.day_no_comma, "3 March 2023");
        assert_eq!(date(0, 0, 0).full, "12:00 am on 1 January, 2022");
        assert_eq!(date(0, 12, 30).full, "12:30 pm on 1 January, 2022");
    }
}
