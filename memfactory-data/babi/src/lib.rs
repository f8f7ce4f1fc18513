//! # memfactory-data-babi
//!
//! The bAbI question-answering tasks (Weston, Bordes, Chopra, Rush, van Merriënboer,
//! Joulin, Mikolov, "Towards AI-Complete Question Answering: A Set of Prerequisite Toy
//! Tasks", 2015; files of release v1.2), read from their text files, either as they are
//! (**plain mode**: the story before each question is the context) or hidden in long
//! background text (**haystack mode**, after BABILong: Kuratov, Bulatov, Anokhin, Rodkin,
//! Sorokin, Sorokin, Burtsev, "BABILong: Testing the Limits of LLMs with Long Context
//! Reasoning-in-a-Haystack", NeurIPS 2024 Datasets and Benchmarks). In MemFactory this
//! crate is a dataset component ([`memfactory_core::DataSource`]) registered under
//! `kind = "babi"`; a recipe names it in `[data.eval]` or `[data.train]`, and the
//! `memfactory` facade links it through the `data-babi` feature. Haystack mode is the
//! long-context memory test: a MemAgent-style reader must keep the few facts that matter
//! while reading thousands of tokens of irrelevant text.
//!
//! ## File format
//!
//! One task per file, named `qa{N}_{task-name}_{split}.txt` (e.g.
//! `qa1_single-supporting-fact_train.txt`). Each line is `ID sentence`; a question line is
//! `ID question<TAB>answer<TAB>supporting-fact ids` (ids separated by spaces). IDs count the
//! lines of a story from 1 (statements and questions together); a line with ID 1 starts a
//! new story. Read strictly ([`parse_babi`]): an ID must be the previous line's plus one
//! (or 1), a line has no tab or exactly two, the answer is not empty, and each supporting id
//! names an earlier statement of the same story. Anything else is an error naming the file
//! and the line. Blank lines are skipped, `\r\n` endings and a byte-order mark accepted.
//!
//! ## Samples (plain mode)
//!
//! One [`Sample`] per question, in file order (tasks in the order of `tasks`):
//!
//! - [`Sample::context`]: the story's statements before the question, one per line,
//!   **without** their ids (ids are bAbI bookkeeping, not text a reader sees; BABILong also
//!   drops them), and without the story's earlier questions and answers (as in the
//!   memory-network setup of Weston et al.).
//! - [`Sample::question`]: the question, trimmed.
//! - [`Sample::answers`]: the answer as written first. An answer with commas (task 8,
//!   lists/sets: `apple,milk`; task 19, path finding: `n,w`) also gets its `a, b` spelling,
//!   since SQuAD normalization (which EM/F1 use) deletes the comma of `apple,milk` but keeps
//!   the space of `apple, milk`. For task 8 the items form a set, so every other order
//!   follows too (`milk,apple`, `milk, apple`); task 19's directions are a path, whose
//!   order matters, so only the written order is kept. Order of the list: permutations in
//!   lexicographic order of the item positions (the written order first), each as `a,b`
//!   then `a, b`. `meta.answer_items` holds the items.
//! - [`Sample::category`]: `qa{N}-{task-name}`, e.g. `qa1-single-supporting-fact` (for a
//!   file not named like bAbI's, its file stem).
//! - [`Sample::id`]: `babi-qa{N}-{q}` (`babi-{stem}-{q}` for other file names), `q` being the
//!   question's 0-based index in its file (stable whatever `offset` / `limit`); haystack mode
//!   appends `-haystack-{tokens}-{seed}`.
//! - [`Sample::meta`]: `source` (`"babi"`), `task` (N, or null), `task_name`, `file` (file
//!   name), `story` (0-based story index in the file), `question_index` (`q`), `line` (the
//!   question's 1-based line in the file), `question_id` (its bAbI id), `answer` (as
//!   written), `answer_items`, `supporting_ids` (bAbI ids), `supporting_facts` (their
//!   sentences), `supporting_lines` (0-based lines of those sentences in the context).
//!
//! ## Haystack mode (`haystack = true`)
//!
//! The facts (the plain context's lines) are scattered through background lines, keeping
//! their order; the context is sized to `tokens` tokens of the model's tokenizer
//! ([`LoadCx::tokenizer`]; loading fails without one — there is no character estimate,
//! since BABILong's lengths are token counts). Layout ([`layout`]): one sentence per line;
//! each fact is put before background line `g`, `g` drawn uniformly from `0..=n` (`n`
//! background lines), the draws sorted so facts keep story order (facts may share a gap,
//! and then stay in order). The number of background lines is the largest whose whole
//! context encodes to at most `tokens` tokens ([`fit`]: secant steps and bisection,
//! re-laying out at each size), so a context never exceeds the budget and falls short of it
//! by about one background line. A story whose facts alone exceed `tokens` is an error
//! naming `tokens`. Only the context is sized (the agent's prompt is unknown here).
//!
//! Background (`filler`):
//!
//! - `"builtin"` (default): RULER's noise sentences [`BUILTIN_SENTENCES`] (`The grass is
//!   green.`, `The sky is blue.`, `The sun is yellow.`, `Here we go.`, `There and back
//!   again.`), one per line, cycling from the first.
//! - `"persona-chat"`: utterances of the Synthetic-Persona-Chat CSV at `filler_path`
//!   (Jandaghi et al., 2023; columns `user 1 personas`, `user 2 personas`, `Best Generated
//!   Conversation`). The file is read with an RFC 4180 parser ([`parse_csv`]); the
//!   utterances are the lines of the `Best Generated Conversation` column of every row, in
//!   file order, without their `User 1:` / `User 2:` prefix ([`parse_persona_chat`]). An
//!   instance takes consecutive utterances from a random start, wrapping around at the end
//!   of the file. BABILong uses PG-19 books instead; conversation text is closer to the
//!   dialogue agents MemFactory trains, and distracts with first-person facts.
//!
//! Extra meta in haystack mode: `tokens` (the context's measured size), `target_tokens`,
//! `counted_by` (`"tokenizer"`), `filler`, `background_lines`, `fact_lines` (0-based line
//! of each fact in the context, in story order: the positions), `filler_start` (the first
//! utterance's index, persona-chat only); `supporting_lines` point into the haystack.
//!
//! ## Determinism
//!
//! Instance `q` of a task draws from a [`ChaCha8Rng`](rand_chacha::ChaCha8Rng) seeded
//! (`seed_from_u64`) with [`instance_seed`] = `derive_n(derive(seed, "babi/{category}"), q)`
//! ([`memfactory_core::seed`]); the draws are [`memfactory_core::rng::bounded`] (first the
//! filler start, then one gap per fact). The same recipe and tokenizer give the same bytes;
//! a sample's haystack depends neither on `offset` / `limit` nor on the other tasks loaded.
//!
//! ## Recipe keys
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | — | one bAbI file (give `path` or `dir`, not both) |
//! | `dir` | string | — | a directory of bAbI files `qa{N}_{name}_{split}.txt` |
//! | `tasks` | array of integers | `[1, 2, …, 20]` | with `dir`: the task numbers to load (1–20, distinct), in this order |
//! | `split` | string | `"train"` | with `dir`: the file suffix (`train`, `test`, `valid`, …) |
//! | `offset` | integer | `0` | skip this many questions **of each task file** |
//! | `limit` | integer | none | at most this many questions **of each task file** (≥ 1) |
//! | `haystack` | boolean | `false` | haystack mode |
//! | `tokens` | integer | `4000` | haystack: context size in tokens (1 to 2^25 = 33554432; one load builds at most 2^30 tokens of haystacks, see [`MAX_LOADED_TOKENS`]) |
//! | `seed` | integer | `0` | haystack: layout seed |
//! | `filler` | string | `"builtin"` | haystack: `builtin` or `persona-chat` |
//! | `filler_path` | string | required with `persona-chat` | haystack: the Synthetic-Persona-Chat CSV |
//!
//! `offset` and `limit` apply per task so that a multi-task evaluation stays balanced
//! (`tasks = [1, 2, 3]`, `limit = 100` loads 300 questions). The four haystack keys are
//! rejected when `haystack` is false, and `filler_path` unless `filler = "persona-chat"`.
//! Relative paths resolve against the current directory. Building reads no file; loading
//! does.
//!
//! ```toml
//! [data.eval]
//! kind = "babi"
//! dir = "../shared/data/babi"
//! tasks = [1, 2, 3]
//! limit = 100
//! haystack = true
//! tokens = 8000
//! filler = "persona-chat"
//! filler_path = "../shared/data/persona_chat/Synthetic-Persona-Chat_valid.csv"
//! ```
//!
//! ## Citation and licence
//!
//! The bAbI data is CC BY 3.0 (Facebook, 2015); cite Weston et al. (2015) wherever results
//! on it are reported, and Kuratov et al. (2024) for the haystack setting. The
//! Synthetic-Persona-Chat data is CC BY 4.0 (Jandaghi, Sheng, Bai, Pujara, Sidahmed, 2023).
//! No data ships with this crate.

use std::path::{Path, PathBuf};

use memfactory_core::data::{MAX_LOADED_TOKENS, MAX_SAMPLE_TOKENS, too_much_to_load};
use memfactory_core::{Cfg, DataSource, Error, LanguageModel, LoadCx, Result, Sample, seed};
use serde_json::json;

mod filler;
mod haystack;
mod parse;

pub use filler::{
    BUILTIN_SENTENCES, PERSONA_CHAT_COLUMN, parse_csv, parse_persona_chat, read_persona_chat,
};
pub use haystack::{Background, Layout, fit, layout};
pub use parse::{ParseError, Question, Statement, Story, parse_babi, read_babi, task_of_file_name};

/// Registry kind of this data source.
pub const KIND: &str = "babi";

/// The number of bAbI tasks.
pub const TASKS: u32 = 20;

/// Which files to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Files {
    /// One file.
    Path(PathBuf),
    /// The files `qa{N}_*_{split}.txt` of a directory, for each task N in order.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Task numbers, in load order.
        tasks: Vec<u32>,
        /// File-name suffix before `.txt`.
        split: String,
    },
}

/// Background text of the haystack.
#[derive(Debug, Clone, PartialEq)]
pub enum Filler {
    /// [`BUILTIN_SENTENCES`].
    Builtin,
    /// Synthetic-Persona-Chat utterances from this CSV file.
    PersonaChat(PathBuf),
}

impl Filler {
    /// The recipe name.
    pub fn name(&self) -> &'static str {
        match self {
            Filler::Builtin => "builtin",
            Filler::PersonaChat(_) => "persona-chat",
        }
    }
}

/// Haystack-mode parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HaystackParams {
    /// Context size in tokens.
    pub tokens: usize,
    /// Layout seed.
    pub seed: u64,
    /// Background text.
    pub filler: Filler,
}

/// The `babi` data source.
#[derive(Debug, Clone)]
pub struct Babi {
    /// Files to read.
    pub files: Files,
    /// Questions skipped at the start of each file.
    pub offset: usize,
    /// At most this many questions per file.
    pub limit: Option<usize>,
    /// Haystack mode, when set.
    pub haystack: Option<HaystackParams>,
    /// Recipe path of `tokens` and `haystack`, for errors found at load time.
    key_prefix: String,
}

/// One task file resolved: its path, task number and name when the name is bAbI's.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFile {
    /// The file.
    pub path: PathBuf,
    /// `N` of `qa{N}_…`.
    pub task: Option<u32>,
    /// The task name (`single-supporting-fact`), or the file stem.
    pub name: String,
}

impl TaskFile {
    /// Describes `path` from its file name.
    pub fn of_path(path: &Path) -> Self {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        match task_of_file_name(&file) {
            Some((n, name, _)) => TaskFile {
                path: path.to_path_buf(),
                task: Some(n),
                name,
            },
            None => TaskFile {
                path: path.to_path_buf(),
                task: None,
                name: path
                    .file_stem()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| file.clone()),
            },
        }
    }

    /// The sample category: `qa{N}-{name}`, or the file stem.
    pub fn category(&self) -> String {
        match self.task {
            Some(n) => format!("qa{n}-{}", self.name),
            None => self.name.clone(),
        }
    }

    fn id_prefix(&self) -> String {
        match self.task {
            Some(n) => format!("babi-qa{n}"),
            None => format!("babi-{}", self.name),
        }
    }
}

/// The seed of question `index` of the task with `category`:
/// `derive_n(derive(seed, "babi/{category}"), index)`.
pub fn instance_seed(seed: u64, category: &str, index: usize) -> u64 {
    seed::derive_n(
        seed::derive(seed, &format!("babi/{category}")),
        index as u64,
    )
}

/// The answer list of a written answer: see the crate docs (`a,b` then `a, b` per order;
/// every order when `set` is true).
pub fn answer_variants(answer: &str, set: bool) -> Vec<String> {
    let items: Vec<&str> = answer.split(',').map(str::trim).collect();
    if items.len() < 2 {
        return vec![answer.to_string()];
    }
    let orders: Vec<Vec<usize>> = if set && items.len() <= 6 {
        permutations(items.len())
    } else {
        vec![(0..items.len()).collect()]
    };
    let mut out = vec![answer.to_string()];
    for order in orders {
        let words: Vec<&str> = order.iter().map(|&i| items[i]).collect();
        for v in [words.join(","), words.join(", ")] {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// Every permutation of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    let mut cur: Vec<usize> = (0..n).collect();
    let mut out = vec![cur.clone()];
    loop {
        // Next lexicographic permutation.
        let Some(i) = (0..n.saturating_sub(1))
            .rev()
            .find(|&i| cur[i] < cur[i + 1])
        else {
            return out;
        };
        let j = (i + 1..n).rev().find(|&j| cur[j] > cur[i]).expect("exists");
        cur.swap(i, j);
        cur[i + 1..].reverse();
        out.push(cur.clone());
    }
}

/// The plain-mode sample of question `qi` of story `si` (question `q` of the file).
pub fn plain_sample(tf: &TaskFile, story: &Story, si: usize, qi: usize, q: usize) -> Sample {
    let question = &story.questions[qi];
    let facts = &story.statements[..question.statements_before];
    let context = facts
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let set = tf.task == Some(8);
    let mut sample = Sample::text(
        format!("{}-{q}", tf.id_prefix()),
        question.text.clone(),
        context,
        answer_variants(&question.answer, set),
    );
    sample.category = Some(tf.category());
    let supporting_facts: Vec<&str> = question
        .supporting
        .iter()
        .filter_map(|id| story.statement(*id).map(|s| s.text.as_str()))
        .collect();
    let supporting_lines: Vec<usize> = question
        .supporting
        .iter()
        .filter_map(|id| facts.iter().position(|s| s.id == *id))
        .collect();
    let items: Vec<&str> = question.answer.split(',').map(str::trim).collect();
    let file = tf
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let m = &mut sample.meta;
    m.insert("source".into(), json!("babi"));
    m.insert("task".into(), json!(tf.task));
    m.insert("task_name".into(), json!(tf.name));
    m.insert("file".into(), json!(file));
    m.insert("story".into(), json!(si));
    m.insert("question_index".into(), json!(q));
    m.insert("line".into(), json!(question.line));
    m.insert("question_id".into(), json!(question.id));
    m.insert("answer".into(), json!(question.answer));
    m.insert("answer_items".into(), json!(items));
    m.insert("supporting_ids".into(), json!(question.supporting));
    m.insert("supporting_facts".into(), json!(supporting_facts));
    m.insert("supporting_lines".into(), json!(supporting_lines));
    sample
}

impl Babi {
    /// A plain-mode source over one file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Babi {
            files: Files::Path(path.into()),
            offset: 0,
            limit: None,
            haystack: None,
            key_prefix: String::new(),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.key_prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.key_prefix)
        }
    }

    /// The task files to read, in order (reads the directory with `dir`).
    pub fn task_files(&self) -> Result<Vec<TaskFile>> {
        match &self.files {
            Files::Path(p) => Ok(vec![TaskFile::of_path(p)]),
            Files::Dir { dir, tasks, split } => {
                let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::data(dir, None, "directory not found"),
                    _ => Error::io(dir, e),
                })?;
                let mut found: Vec<(u32, String, PathBuf)> = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(dir, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some((n, task, s)) = task_of_file_name(&name)
                        && &s == split
                    {
                        found.push((n, task, entry.path()));
                    }
                }
                found.sort();
                tasks
                    .iter()
                    .map(|&n| {
                        let hits: Vec<_> = found.iter().filter(|(m, _, _)| *m == n).collect();
                        match hits.as_slice() {
                            [(_, name, path)] => Ok(TaskFile {
                                path: path.clone(),
                                task: Some(n),
                                name: name.clone(),
                            }),
                            [] => Err(Error::data(
                                dir,
                                None,
                                format!("no file `qa{n}_<name>_{split}.txt` for task {n}"),
                            )),
                            many => Err(Error::data(
                                dir,
                                None,
                                format!(
                                    "{} files for task {n}: {}",
                                    many.len(),
                                    many.iter()
                                        .map(|(_, _, p)| p.display().to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )),
                        }
                    })
                    .collect()
            }
        }
    }

    /// Lays out a plain sample's facts in a haystack sized with `lm`.
    fn to_haystack(
        &self,
        h: &HaystackParams,
        mut sample: Sample,
        utterances: Option<&[String]>,
        lm: &dyn LanguageModel,
        instance: u64,
    ) -> Result<Sample> {
        let facts: Vec<String> = if sample.context.is_empty() {
            Vec::new()
        } else {
            sample.context.split('\n').map(str::to_string).collect()
        };
        let background = match utterances {
            Some(u) => Background::Utterances(u),
            None => Background::Builtin,
        };
        let count = |text: &str| -> Result<usize> { Ok(lm.encode(text)?.len()) };
        let fitted = fit(h.tokens, h.tokens, |n| {
            count(&layout(&facts, n, background, instance).context)
        })?;
        let Some((n, tokens)) = fitted else {
            let needed = count(&layout(&facts, 0, background, instance).context)?;
            return Err(Error::config(
                self.key("tokens"),
                format!(
                    "{} tokens cannot hold the facts of sample {} ({} facts take {needed} tokens \
                     with the LM's tokenizer)",
                    h.tokens,
                    sample.id,
                    facts.len()
                ),
            ));
        };
        let l = layout(&facts, n, background, instance);
        sample.context = l.context;
        sample.id = format!("{}-haystack-{}-{}", sample.id, h.tokens, h.seed);
        let old: Vec<usize> =
            serde_json::from_value(sample.meta["supporting_lines"].clone()).unwrap_or_default();
        let new: Vec<usize> = old
            .iter()
            .filter_map(|&i| l.fact_lines.get(i).copied())
            .collect();
        let m = &mut sample.meta;
        m.insert("supporting_lines".into(), json!(new));
        m.insert("tokens".into(), json!(tokens));
        m.insert("target_tokens".into(), json!(h.tokens));
        m.insert("counted_by".into(), json!("tokenizer"));
        m.insert("filler".into(), json!(h.filler.name()));
        m.insert("background_lines".into(), json!(l.background));
        m.insert("fact_lines".into(), json!(l.fact_lines));
        if let Some(s) = l.filler_start {
            m.insert("filler_start".into(), json!(s));
        }
        Ok(sample)
    }
}

impl DataSource for Babi {
    fn describe(&self) -> String {
        let files = match &self.files {
            Files::Path(p) => format!("file {}", p.display()),
            Files::Dir { dir, tasks, split } => {
                format!("tasks {:?} ({split}) from {}", tasks, dir.display())
            }
        };
        let window = match self.limit {
            Some(l) => format!(
                "questions {}..{} of each task",
                self.offset,
                self.offset + l
            ),
            None if self.offset > 0 => format!("questions from {} of each task", self.offset),
            None => "every question".into(),
        };
        let mode = match &self.haystack {
            None => "plain stories".to_string(),
            Some(h) => format!(
                "facts scattered in {} filler sized to {} tokens of the LM's tokenizer, seed {}",
                h.filler.name(),
                h.tokens,
                h.seed
            ),
        };
        format!("babi: bAbI {files}, {window}, {mode}")
    }

    fn load(&self, cx: &LoadCx<'_>) -> Result<Vec<Sample>> {
        self.load_at_most(cx, None)
    }

    /// Builds only the first `n` samples (in `load`'s order: tasks in turn).
    fn load_first(&self, cx: &LoadCx<'_>, n: usize) -> Result<Vec<Sample>> {
        self.load_at_most(cx, Some(n))
    }
}

impl Babi {
    /// The samples of `load`, the first `cap` of them when given. In haystack mode the
    /// questions are counted first, and a load whose contexts would add up to more than
    /// [`MAX_LOADED_TOKENS`] is refused (naming `tokens`) before any haystack is built.
    fn load_at_most(&self, cx: &LoadCx<'_>, cap: Option<usize>) -> Result<Vec<Sample>> {
        let lm = match (&self.haystack, cx.tokenizer) {
            (Some(_), None) => {
                return Err(Error::config(
                    self.key("haystack"),
                    "haystack mode sizes contexts with the model's tokenizer, but no model was \
                     given to the data source (build one in the recipe, or set haystack = false)",
                ));
            }
            (_, lm) => lm,
        };
        let utterances = match &self.haystack {
            Some(HaystackParams {
                filler: Filler::PersonaChat(p),
                ..
            }) => Some(read_persona_chat(p)?),
            _ => None,
        };
        let files: Vec<(TaskFile, Vec<Story>)> = self
            .task_files()?
            .into_iter()
            .map(|tf| {
                let stories = read_babi(&tf.path)?;
                Ok((tf, stories))
            })
            .collect::<Result<_>>()?;
        let end = self.limit.map(|l| self.offset.saturating_add(l));
        let in_window = |questions: usize| {
            end.map_or(questions, |e| questions.min(e))
                .saturating_sub(self.offset)
        };
        let total: usize = files
            .iter()
            .map(|(_, stories)| in_window(stories.iter().map(|s| s.questions.len()).sum()))
            .sum();
        let total = cap.map_or(total, |c| total.min(c));
        if let Some(h) = &self.haystack
            && total.saturating_mul(h.tokens) > MAX_LOADED_TOKENS
        {
            return Err(too_much_to_load(self.key("tokens"), total, h.tokens));
        }
        let mut out = Vec::new();
        'files: for (tf, stories) in &files {
            let category = tf.category();
            let mut q = 0usize;
            'file: for (si, story) in stories.iter().enumerate() {
                for qi in 0..story.questions.len() {
                    let index = q;
                    q += 1;
                    if index < self.offset {
                        continue;
                    }
                    if end.is_some_and(|e| index >= e) {
                        break 'file;
                    }
                    if out.len() >= total {
                        break 'files;
                    }
                    let sample = plain_sample(tf, story, si, qi, index);
                    let sample = match (&self.haystack, lm) {
                        (Some(h), Some(lm)) => self.to_haystack(
                            h,
                            sample,
                            utterances.as_deref(),
                            lm,
                            instance_seed(h.seed, &category, index),
                        )?,
                        _ => sample,
                    };
                    out.push(sample);
                }
            }
        }
        Ok(out)
    }
}

const HAYSTACK_KEYS: [&str; 4] = ["tokens", "seed", "filler", "filler_path"];

/// Builds a [`Babi`] from its recipe table (no IO).
fn build(cfg: &mut Cfg) -> Result<Box<dyn DataSource>> {
    let path: Option<String> = cfg.opt("path")?;
    let dir: Option<String> = cfg.opt("dir")?;
    let nonempty = |cfg: &Cfg, key: &str, v: &str| {
        if v.trim().is_empty() {
            Err(cfg.error(key, "must not be empty"))
        } else {
            Ok(())
        }
    };
    let files = match (path, dir) {
        (Some(_), Some(_)) => {
            return Err(cfg.error("dir", "give either `path` (one file) or `dir`, not both"));
        }
        (None, None) => {
            return Err(cfg.error(
                "path",
                "missing: give `path` (one bAbI file) or `dir` (a directory of \
                 qa{N}_{name}_{split}.txt files, with `tasks`)",
            ));
        }
        (Some(p), None) => {
            nonempty(cfg, "path", &p)?;
            for k in ["tasks", "split"] {
                if cfg.has(k) {
                    return Err(cfg.error(k, "only used with `dir` (`path` names one file)"));
                }
            }
            Files::Path(p.into())
        }
        (None, Some(d)) => {
            nonempty(cfg, "dir", &d)?;
            let tasks: Vec<u32> = cfg.get_checked(
                "tasks",
                (1..=TASKS).collect(),
                |t: &Vec<u32>| {
                    !t.is_empty()
                        && t.iter().all(|n| (1..=TASKS).contains(n))
                        && (1..t.len()).all(|i| !t[..i].contains(&t[i]))
                },
                "a non-empty array of distinct bAbI task numbers, each from 1 to 20",
            )?;
            let split: String = cfg.get_checked(
                "split",
                "train".to_string(),
                |s| !s.is_empty() && !s.contains(['/', '\\', '_']),
                "a file-name suffix such as \"train\" or \"test\"",
            )?;
            Files::Dir {
                dir: d.into(),
                tasks,
                split,
            }
        }
    };
    let offset: usize = cfg.get("offset", 0usize)?;
    let limit: Option<usize> = cfg.opt("limit")?;
    if limit == Some(0) {
        return Err(cfg.error("limit", "expected at least 1 (leave it out for no limit)"));
    }
    let haystack_on: bool = cfg.get("haystack", false)?;
    let haystack = if haystack_on {
        let tokens: usize = cfg.get_checked(
            "tokens",
            4000usize,
            |t| (1..=MAX_SAMPLE_TOKENS).contains(t),
            "a positive token count of at most 33554432 (2^25, beyond the longest long-context \
             evaluations)",
        )?;
        let seed: u64 = cfg.get("seed", 0u64)?;
        let filler: String = cfg.get("filler", "builtin".to_string())?;
        let filler = match filler.as_str() {
            "builtin" => {
                if cfg.has("filler_path") {
                    return Err(
                        cfg.error("filler_path", "only used with filler = \"persona-chat\"")
                    );
                }
                Filler::Builtin
            }
            "persona-chat" => {
                let p: String = cfg.req("filler_path")?;
                nonempty(cfg, "filler_path", &p)?;
                Filler::PersonaChat(p.into())
            }
            other => {
                return Err(cfg.error(
                    "filler",
                    format!("unknown filler `{other}`; expected builtin or persona-chat"),
                ));
            }
        };
        Some(HaystackParams {
            tokens,
            seed,
            filler,
        })
    } else {
        if let Some(k) = HAYSTACK_KEYS.iter().find(|k| cfg.has(k)) {
            return Err(cfg.error(k, "only used with `haystack = true`"));
        }
        None
    };
    Ok(Box::new(Babi {
        files,
        offset,
        limit,
        haystack,
        key_prefix: cfg.path().to_string(),
    }))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn memfactory_core::DataSource> {
        kind: KIND,
        about: "bAbI tasks (v1.2 text files): one sample per question, plain stories or facts scattered in a haystack sized to `tokens` (BABILong)",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_lists() {
        assert_eq!(answer_variants("milk", true), vec!["milk"]);
        assert_eq!(
            answer_variants("apple,milk", true),
            vec!["apple,milk", "apple, milk", "milk,apple", "milk, apple"]
        );
        assert_eq!(answer_variants("n,w", false), vec!["n,w", "n, w"]);
        assert_eq!(answer_variants("a,b,c", true).len(), 12);
        assert_eq!(answer_variants("a,b,c", true)[2..4], ["a,c,b", "a, c, b"]);
    }

    #[test]
    fn permutations_are_lexicographic() {
        assert_eq!(
            permutations(3),
            vec![
                vec![0, 1, 2],
                vec![0, 2, 1],
                vec![1, 0, 2],
                vec![1, 2, 0],
                vec![2, 0, 1],
                vec![2, 1, 0]
            ]
        );
        assert_eq!(permutations(1), vec![vec![0]]);
    }
}
