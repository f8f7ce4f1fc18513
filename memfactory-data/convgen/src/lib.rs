//! # memfactory-data-convgen
//!
//! A deterministic conversational-memory generator: multi-session dialogues between two
//! speakers, real chit-chat from Synthetic-Persona-Chat as filler, and injected turns in
//! which a speaker states a fact about themself (job, city, pet, …), later updates it ("I
//! moved from Denver to Austin") or retracts it ("I no longer have Max"). Each sample asks one
//! question about those facts and records, for **every turn**, the memory operation a perfect
//! memory manager would apply (ADD / UPDATE / DELETE / NOOP, as Memory-R1's manager decides
//! them). It is a model-free test bed for a memory manager and its reward: every instance is
//! a pure function of (filler file, parameters, seed, index). In MemFactory this crate is a
//! dataset component ([`memfactory_core::DataSource`]) registered under `kind = "convgen"`; a
//! recipe names it in `[data.eval]` or `[data.train]`, and the `memfactory` facade links it
//! through the `data-convgen` feature.
//!
//! ## Filler file
//!
//! `path` names a CSV file in the layout of Synthetic-Persona-Chat
//! (`Synthetic-Persona-Chat_valid.csv`): a header with the columns `user 1 personas`,
//! `user 2 personas` and `Best Generated Conversation` (any order; other columns ignored),
//! then one conversation per record, fields quoted as RFC 4180 says (quoted fields span
//! lines; `""` is a quote; LF or CRLF). The conversation field holds one `User 1: …` or
//! `User 2: …` line per utterance (`*User 1:* …` and `user 2 : …` are read too); other lines
//! (stage directions, recipes, `* * *`) are dropped. Persona sentences are parsed
//! ([`Conversation::personas`]) but not used in dialogues: they describe the filler
//! conversation's own speakers. The file is read only in [`DataSource::load`]. Errors are
//! [`Error::Data`] naming the file and where in it (`line L, column C` for a malformed quote,
//! `record R (line L)` for a wrong field count, the header's line for a missing column).
//!
//! ## Samples
//!
//! - [`Sample::id`]: `"convgen-{seed}-{index}"`; instances are `offset..offset + samples`.
//! - [`Sample::dialogue`]: two speakers drawn from a built-in list of first names;
//!   `sessions` sessions with LoCoMo-style dates (`"2:15 pm on 3 March, 2023"`, the first in
//!   2022–2023, each next one 1–30 days later, times between 8 am and 10 pm). Each session
//!   holds `turns_per_session` consecutive lines of one persona-chat conversation (`User 1`
//!   speaks as the first speaker, `User 2` as the second; sessions of a sample use distinct
//!   conversations while the file has enough long ones), with the sample's **evidence turns**
//!   inserted at random places, so a session has `turns_per_session` + its evidence turns.
//!   The name placeholders of filler lines (`[User 1's name]`, `[user 2 name]`, `[User 1]`,
//!   `[user2]`, any case) become the speakers' names; other placeholders (`[name]`) stay.
//!   Turn ids are `D{session}:{n}`, `n` counting from 1 in each session.
//! - [`Sample::question`], [`Sample::answers`], [`Sample::category`] (the question type),
//!   see "Question types"; [`Sample::context`] is empty.
//! - [`Sample::meta`]: `source` (`"convgen"`), `index`, `seed`, `type`, `form` (the
//!   question's form, below), `subject` (the speaker asked about), `attribute` (the
//!   attribute asked for), `evidence` (turn ids, reading order), `gold_ops` (below), `facts`
//!   (the final fact state: `{key: fact text}`), `filler` (per session `{session, row,
//!   first_line}`: the CSV data row, 1-based, and the first conversation line used, 0-based),
//!   and for some forms `date` (temporal: the evidence session's full date) and
//!   `bridge_attribute` (multi-session bridge: the attribute that identifies the person).
//!
//! ## Facts
//!
//! A fact is single-valued: (speaker, attribute) → value, with key `{speaker}/{attribute}`
//! (`Ann/city`) and a text (`Ann lives in Austin`). Its life is a *chain* of evidence turns
//! in strictly increasing sessions: an ADD, then zero or more UPDATEs, maybe one DELETE. All
//! values of one attribute in a sample are distinct, so a value names one fact.
//!
//! | attribute | values (e.g.) | update | retract | temporal event |
//! |---|---|---|---|---|
//! | `job` | nurse, architect, … (16) | yes | yes | start working as a nurse |
//! | `city` | Denver, Austin, … (16) | yes | yes | move to Denver |
//! | `pet` | Max, Luna, … (16) | yes | yes | adopt Max |
//! | `food` | sushi, pad thai, … (14) | yes | no | — |
//! | `partner` | Jordan, Taylor, … (14) | yes | yes | start dating Jordan |
//! | `hobby` | pottery, chess, … (14) | yes | yes | take up pottery |
//! | `instrument` | guitar, cello, … (12) | yes | yes | start learning the guitar |
//! | `sister` | Emma, Grace, … (12) | no | no | — |
//!
//! Updates either name both values ("I moved from Denver to Austin") or only the new one
//! ("I relocated again, I'm settling into Austin now"): the manager must then find the old
//! fact itself. Besides the question's own facts, `distractor_facts` more chains are drawn
//! on other (speaker, attribute) pairs: an ADD alone, or (with 2 sessions or more, where the
//! attribute allows it) an ADD followed in a later session by an UPDATE or a DELETE; an ADD
//! alone is drawn at least half of the time.
//!
//! Filler lines are real conversation and may mention jobs, pets or places of their own;
//! they are NOOP here: gold operations track only the generated facts.
//!
//! ## Question types (`types`)
//!
//! Instance `index` asks a question of type `types[index % types.len()]`, so every type gets
//! the same share (±1). The subject is one of the two speakers.
//!
//! | type (category) | form | example | answer | evidence |
//! |---|---|---|---|---|
//! | `single-session` | `fact` | What does Ann do for work? | `nurse` | the ADD |
//! | `multi-session` | `before-update` | Which city did Ann live in before moving to Austin? | `Denver` | the ADD and an UPDATE that names only the new value, in a later session |
//! | `multi-session` | `bridge` | Which city does the person who works as a nurse live in? | `Denver` | two ADDs of the subject in two sessions (one identifies the person, the other answers) |
//! | `knowledge-update` | `latest-value` | Which city does Ann live in now? | the value after 1–2 UPDATEs (2 only with ≥ 3 sessions) | the whole chain |
//! | `temporal` | `when` | When did Ann move to Denver? | `3 March, 2023` and `3 March 2023` (the day of the ADD's session) | the ADD |
//! | `abstention` | `unstated-attribute` | What is the name of the pet that Ben has? | [`NOT_MENTIONED`] | none |
//!
//! `multi-session` draws its form with even odds. An abstention question asks about an
//! attribute the subject never states while the **other** speaker does (the speaker swap of
//! LoCoMo's adversarial questions); its answer [`NOT_MENTIONED`] is the wording of LoCoMo's
//! category-5 answer (`memfactory_data_locomo::ADVERSARIAL_ANSWER`,
//! `"Not mentioned in the conversation"`). `multi-session` and `knowledge-update` need
//! `sessions` ≥ 2. Every answer except the temporal and abstention ones appears verbatim in
//! an evidence turn; a temporal answer is the date of its evidence turn's session.
//!
//! ## Gold memory operations (`meta.gold_ops`)
//!
//! An array with one object per turn, in reading order ([`GoldOp`], read back with
//! [`gold_ops`]):
//!
//! | field | present | meaning |
//! |---|---|---|
//! | `turn` | always | the turn id, `D2:5` |
//! | `session` | always | the session index (1-based) |
//! | `op` | always | `"ADD"`, `"UPDATE"`, `"DELETE"` or `"NOOP"` (every filler turn) |
//! | `speaker` | always | who speaks (the fact is about the speaker) |
//! | `key` | ADD, UPDATE, DELETE | `{speaker}/{attribute}`: ADD creates it, UPDATE and DELETE name a fact an earlier ADD created and no DELETE removed |
//! | `attribute` | ADD, UPDATE, DELETE | `job`, `city`, … |
//! | `value` | ADD, UPDATE | the value after the operation |
//! | `fact` | ADD, UPDATE | the fact text after the operation, `Ann lives in Austin` |
//! | `previous` | UPDATE, DELETE | the fact text before it (replaced or retracted) |
//!
//! ```json
//! {"turn": "D1:4", "session": 1, "op": "ADD", "speaker": "Ann", "key": "Ann/city",
//!  "attribute": "city", "value": "Denver", "fact": "Ann lives in Denver"}
//! {"turn": "D3:2", "session": 3, "op": "UPDATE", "speaker": "Ann", "key": "Ann/city",
//!  "attribute": "city", "value": "Austin", "fact": "Ann lives in Austin",
//!  "previous": "Ann lives in Denver"}
//! {"turn": "D3:3", "session": 3, "op": "NOOP", "speaker": "Ben"}
//! ```
//!
//! [`replay`] applies them to an empty state (`meta.facts` is its result); [`GoldOp::edit`]
//! turns one into the [`memfactory_core::MemoryEdit`] that carries it out on a store whose
//! item ids are the fact keys, so a test can compare a manager's edits, or the store they
//! leave, with the gold ones.
//!
//! ## Determinism
//!
//! Instance `index` draws from a [`ChaCha8Rng`](rand_chacha::ChaCha8Rng) seeded (through
//! `seed_from_u64`) with [`instance_seed`] = `derive_n(derive(seed, "convgen"), index)`
//! ([`memfactory_core::seed`]), with the portable draws of [`memfactory_core::rng`] only, so
//! the same file, parameters and seed give the same bytes across platforms and crate
//! versions, and an instance does not depend on `offset` or `samples`.
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | required | the Synthetic-Persona-Chat CSV file (relative paths resolve against the current directory) |
//! | `samples` | integer | `100` | number of instances (≥ 1; with an eval limit only the first `limit` are generated; one load builds at most 2^30 tokens, [`MAX_LOADED_TOKENS`]) |
//! | `seed` | integer | `0` | dataset seed |
//! | `offset` | integer | `0` | index of the first instance |
//! | `sessions` | integer | `4` | sessions per dialogue (1 to 10 000; ≥ 2 with `multi-session` or `knowledge-update`) |
//! | `turns_per_session` | integer | `10` | filler turns per session (0: evidence turns only); at most the longest conversation of the file |
//! | `distractor_facts` | integer | `3` | fact chains besides the question's (0–12) |
//! | `types` | array of strings | all five | question types, each once: `single-session`, `multi-session`, `knowledge-update`, `temporal`, `abstention` |
//!
//! Bad values are recipe errors naming the key, found when the component is built (no IO);
//! `turns_per_session` longer than every conversation of the file is found at load.
//!
//! ```toml
//! [data.train]
//! kind = "convgen"
//! path = "../shared/data/persona_chat/Synthetic-Persona-Chat_valid.csv"
//! samples = 500
//! sessions = 4
//! types = ["knowledge-update", "multi-session"]
//! ```
//!
//! ## Data source and licence
//!
//! Synthetic-Persona-Chat: Jandaghi, Sheng, Bai, Pujara, Sidahmed, "Faithful Persona-based
//! Conversational Dataset Generation with Large Language Models", 2023 (arXiv:2312.10007),
//! CC BY 4.0; cite it wherever results on generated samples are reported. This crate holds
//! none of its data. The question types follow LongMemEval (Wu et al., ICLR 2025) and LoCoMo
//! (Maharana et al., ACL 2024); the operations follow Memory-R1 (Yan et al., arXiv:2508.19828).

use std::path::PathBuf;

use memfactory_core::data::{MAX_LOADED_TOKENS, too_much_to_load};
use memfactory_core::{Cfg, DataSource, Error, LoadCx, Result, Sample};

mod attrs;
mod generate;
mod gold;
mod persona;

pub use attrs::{ATTRIBUTES, Attribute, SPEAKERS, with_article};
pub use generate::{Generator, instance_seed};
pub use gold::{GoldFact, GoldOp, OpKind, gold_ops, replay};
pub use persona::{
    COLUMN_CONVERSATION, COLUMN_PERSONA_1, COLUMN_PERSONA_2, Conversation, CsvRecord, Line,
    ParseError, parse_csv, parse_persona_chat, read_persona_chat,
};

/// Registry kind of this data source.
pub const KIND: &str = "convgen";

/// The gold answer of an abstention question: the wording of LoCoMo's category-5 answer.
pub const NOT_MENTIONED: &str = "Not mentioned in the conversation";

/// The most `distractor_facts` a sample can hold (16 speaker-attribute pairs, less what a
/// question uses).
pub const MAX_DISTRACTOR_FACTS: usize = 12;

/// The most `sessions` a dialogue may have: LoCoMo's have up to 35, LongMemEval's up to about
/// 500; 10 000 leaves room while keeping one dialogue's size (sessions × turns) bounded.
pub const MAX_SESSIONS: usize = 10_000;

/// A question type (the sample's category).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuestionType {
    /// One fact stated once.
    SingleSession,
    /// Two facts from two sessions (a value before an update, or a bridge between two
    /// facts).
    MultiSession,
    /// The latest value after updates.
    KnowledgeUpdate,
    /// When a fact was stated (its session's date).
    Temporal,
    /// An attribute never stated: [`NOT_MENTIONED`].
    Abstention,
}

impl QuestionType {
    /// Every type, in the default order.
    pub const ALL: [QuestionType; 5] = [
        QuestionType::SingleSession,
        QuestionType::MultiSession,
        QuestionType::KnowledgeUpdate,
        QuestionType::Temporal,
        QuestionType::Abstention,
    ];

    /// The recipe and category name.
    pub fn name(self) -> &'static str {
        match self {
            QuestionType::SingleSession => "single-session",
            QuestionType::MultiSession => "multi-session",
            QuestionType::KnowledgeUpdate => "knowledge-update",
            QuestionType::Temporal => "temporal",
            QuestionType::Abstention => "abstention",
        }
    }

    /// The type named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The fewest sessions a question of this type needs.
    pub fn min_sessions(self) -> usize {
        match self {
            QuestionType::MultiSession | QuestionType::KnowledgeUpdate => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for QuestionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The generator's parameters (the recipe keys but `path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Number of instances loaded.
    pub samples: usize,
    /// Dataset seed.
    pub seed: u64,
    /// Index of the first instance loaded.
    pub offset: usize,
    /// Sessions per dialogue.
    pub sessions: usize,
    /// Filler turns per session.
    pub turns_per_session: usize,
    /// Fact chains besides the question's.
    pub distractor_facts: usize,
    /// Question types, assigned round-robin by index.
    pub types: Vec<QuestionType>,
}

impl Default for Params {
    /// 100 samples, seed 0, 4 sessions of 10 filler turns, 3 distractor facts, every type.
    fn default() -> Self {
        Params {
            samples: 100,
            seed: 0,
            offset: 0,
            sessions: 4,
            turns_per_session: 10,
            distractor_facts: 3,
            types: QuestionType::ALL.to_vec(),
        }
    }
}

/// A parameter that fails validation: the recipe key (relative to the component's table)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// Recipe key, e.g. `sessions`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ParamError {}

impl Params {
    /// Checks every parameter (not `turns_per_session` against a file: see
    /// [`Generator::new`]).
    pub fn check(&self) -> std::result::Result<(), ParamError> {
        let err = |key: &'static str, message: String| Err(ParamError { key, message });
        if self.samples == 0 {
            return err("samples", "expected at least 1 sample, found 0".into());
        }
        if self.offset.checked_add(self.samples).is_none() {
            return err(
                "offset",
                format!("offset {} + samples overflows", self.offset),
            );
        }
        if self.sessions == 0 {
            return err("sessions", "expected at least 1 session, found 0".into());
        }
        if self.sessions > MAX_SESSIONS {
            return err(
                "sessions",
                format!(
                    "expected at most {MAX_SESSIONS} sessions, found {}",
                    self.sessions
                ),
            );
        }
        if self.distractor_facts > MAX_DISTRACTOR_FACTS {
            return err(
                "distractor_facts",
                format!(
                    "expected at most {MAX_DISTRACTOR_FACTS}, found {}",
                    self.distractor_facts
                ),
            );
        }
        if self.types.is_empty() {
            return err(
                "types",
                "expected at least one question type (leave the key out for all of them)".into(),
            );
        }
        for (i, t) in self.types.iter().enumerate() {
            if self.types[..i].contains(t) {
                return err("types", format!("question type `{t}` is listed twice"));
            }
            if self.sessions < t.min_sessions() {
                return err(
                    "sessions",
                    format!(
                        "question type `{t}` needs at least {} sessions, found {}",
                        t.min_sessions(),
                        self.sessions
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The `convgen` data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convgen {
    /// The Synthetic-Persona-Chat CSV file.
    pub path: PathBuf,
    /// The generator's parameters.
    pub params: Params,
    /// Dotted path of the component's recipe table (for errors), empty when built in code.
    pub table: String,
}

impl Convgen {
    /// A source over `path` with [`Params::default`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Convgen {
            path: path.into(),
            params: Params::default(),
            table: String::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.table.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.table)
        }
    }
}

impl DataSource for Convgen {
    fn describe(&self) -> String {
        let p = &self.params;
        let types: Vec<&str> = p.types.iter().map(|t| t.name()).collect();
        format!(
            "convgen: {} samples from index {}, seed {}, {} sessions of {} filler turns from {}, \
             {} distractor facts, types [{}]",
            p.samples,
            p.offset,
            p.seed,
            p.sessions,
            p.turns_per_session,
            self.path.display(),
            p.distractor_facts,
            types.join(", ")
        )
    }

    fn load(&self, cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        self.load_first(cx, self.params.samples)
    }

    /// Generates only instances `offset..offset + min(n, samples)`. The first instance's
    /// size (its JSON at 4 characters per token) estimates the others'; a load estimated
    /// over [`MAX_LOADED_TOKENS`] is refused, naming `samples`, before the rest is built.
    fn load_first(&self, _cx: &LoadCx<'_>, n: usize) -> Result<Vec<Sample>> {
        let convs = read_persona_chat(&self.path)?;
        let generator = Generator::new(&convs, self.params.clone()).map_err(|e| {
            Error::config(
                self.key(e.key),
                format!("{} ({})", e.message, self.path.display()),
            )
        })?;
        let p = &self.params;
        let count = n.min(p.samples);
        let mut out = Vec::new();
        for i in p.offset..p.offset + count {
            let sample = generator.sample(i);
            if i == p.offset && count > 1 {
                let each = serde_json::to_string(&sample)
                    .map_or(0, |j| j.len())
                    .div_ceil(4);
                if count.saturating_mul(each) > MAX_LOADED_TOKENS {
                    return Err(too_much_to_load(self.key("samples"), count, each));
                }
            }
            out.push(sample);
        }
        Ok(out)
    }
}

/// Builds a [`Convgen`] from its recipe table (no IO).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let path: String = cfg.req("path")?;
    if path.trim().is_empty() {
        return Err(cfg.error("path", "must not be empty"));
    }
    let d = Params::default();
    let samples = cfg.get("samples", d.samples)?;
    let seed = cfg.get("seed", d.seed)?;
    let offset = cfg.get("offset", d.offset)?;
    let sessions = cfg.get("sessions", d.sessions)?;
    let turns_per_session = cfg.get("turns_per_session", d.turns_per_session)?;
    let distractor_facts = cfg.get("distractor_facts", d.distractor_facts)?;
    let names: Vec<String> = cfg.get(
        "types",
        d.types.iter().map(|t| t.name().to_string()).collect(),
    )?;
    let mut types = Vec::with_capacity(names.len());
    for n in &names {
        let Some(t) = QuestionType::from_name(n) else {
            let known: Vec<&str> = QuestionType::ALL.iter().map(|t| t.name()).collect();
            return Err(cfg.error(
                "types",
                format!(
                    "unknown question type `{n}`; expected some of: {}",
                    known.join(", ")
                ),
            ));
        };
        types.push(t);
    }
    let params = Params {
        samples,
        seed,
        offset,
        sessions,
        turns_per_session,
        distractor_facts,
        types,
    };
    params.check().map_err(|e| cfg.error(e.key, e.message))?;
    Ok(Box::new(Convgen {
        path: path.into(),
        params,
        table: cfg.path().to_string(),
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "generated multi-session dialogues (persona-chat filler, injected fact updates and retractions), five question types, gold ADD/UPDATE/DELETE/NOOP per turn",
        build,
    }
}
