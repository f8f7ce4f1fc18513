//! # memfactory-reward-judge
//!
//! An LLM judge as reward and evaluation metric (registry kind `judge`, family reward):
//! a language model is asked whether the episode's answer states the same fact as a gold
//! answer, and its True / False verdict becomes the score (1.0 / 0.0).
//!
//! This follows MemFactory's Python judge (an LLM reads the prediction and the gold answer
//! and answers True / False) and the "LLM-as-a-Judge" (J) metric that Mem0 and Memory-R1
//! report on LoCoMo (question, gold answer, generated answer → CORRECT / WRONG; generous
//! about format, strict about content). The default prompt, `templates/judge.txt`, says the
//! same in a few lines with one worked example, so that a small instruct model has a chance.
//!
//! ## How a sample is scored
//!
//! - No gold answer → `None` (the metric does not apply).
//! - The prediction is cut out of the episode's answer as every answer metric does it
//!   ([`memfactory_core::reward::AnswerExtraction`], keys `extract` and `strip_think`): with
//!   `strip_think` (default true) the text after the last `</think>` (the whole answer when
//!   nothing follows it), then `extract`: the last `\boxed{}` (`"boxed"`, the default),
//!   the box or else the whole answer (`"boxed-or-text"`), the text after the last
//!   `the answer is` (`"answer-is"`, MemAgent's), or the whole answer (`"text"`). The older
//!   `require_boxed = true / false` means `"boxed"` / `"boxed-or-text"`; both spellings
//!   together are an error naming `extract`. No prediction, or an empty one → 0.0 without
//!   asking the judge.
//! - **One verdict per gold answer**, all asked in *one* batched `generate` call: the judge
//!   sees one gold at a time (as in Mem0's prompt, which is easiest for a small model), and
//!   the score is 1.0 when any gold is judged correct. Golds already in the cache are not
//!   asked again; a cached True ends the scoring without any call.
//! - Greedy decoding of at most `max_new_tokens` tokens.
//! - The verdict is the *first* verdict word of the output, as a whole word, case-insensitive:
//!   `true` / `correct` / `yes` → correct; `false` / `wrong` / `incorrect` / `no` → wrong.
//!   A word directly followed by `:` (optionally after a closing quote) is a JSON / YAML key,
//!   not a verdict, and is skipped: `{"correct": false}` reads as wrong, and Mem0's
//!   `{"label": "CORRECT"}` as correct. A verdict word right after `not` is negated
//!   (`not correct` → wrong). `yes` / `no` are verdict words too, so a rambling "No idea"
//!   reads as wrong (it would score 0 anyway). An output with no verdict word is
//!   *unparsable*: it scores 0 for that gold and is counted ([`Judge::stats`]); it is never
//!   an error.
//!
//! ## Mem0's prompt
//!
//! `template = "mem0"` asks with Mem0's `ACCURACY_PROMPT` (`templates/mem0.txt`, from
//! mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8, `evaluation/metrics/llm_judge.py`):
//! CORRECT / WRONG, generous about topic and date format, answered as JSON with the key
//! `label`. Its verdicts are read as Mem0 reads them ([`parse_mem0_verdict`]): `label` exactly
//! `"CORRECT"` is correct, any other label wrong, no JSON label unparsable. Mem0 also asks
//! `gpt-4o-mini` at temperature 0 with `response_format = json_object`; here decoding is greedy
//! on whatever model the recipe names, without forced JSON.
//!
//! ## Cache
//!
//! Verdicts are kept per (judge, template, question, gold, prediction), where *judge* is the
//! model's [`LanguageModel::describe`] line plus `max_new_tokens`, and *template* is the FNV-1a
//! hash of the prompt template text — so a different judge model or prompt never reuses
//! verdicts. They live in an in-memory map (shared by the threads that score; a key being
//! judged by one thread makes the others wait for its verdict instead of asking again) and,
//! when `cache` names a file, in a JSONL file: loaded when the judge is built (when it
//! exists), appended and flushed after every new verdict, so re-running an evaluation does
//! not pay twice. A line that is not a cache record is an error naming the file and line
//! (delete the line, or the file, to recover). Without `cache`, an eval puts the file in its
//! run directory (`judge-cache.jsonl`, or `<name>-cache.jsonl` for a renamed judge) through
//! [`Reward::attach_run_dir`], so re-running an eval into the same directory reuses it; the
//! counters (verdicts asked, cache hits, unparsable outputs) go into the eval's
//! `metrics.json` through [`Reward::counters`].
//!
//! One line of the file:
//!
//! ```json
//! {"judge":"scripted LM (…); max_new_tokens=16","template":"9f0c…","question":"…","gold":"…","prediction":"…","output":"True","verdict":true}
//! ```
//!
//! (`verdict` is `null` when the output was unparsable.)
//!
//! ## Recipe
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `model` | required | the judge's LM table, any backend: `burn`, `openai`, `scripted`, … |
//! | `template` | built-in `templates/judge.txt` | `"mem0"`: Mem0's LoCoMo prompt (below); anything else is a prompt file (write `./mem0` for a file of that name); placeholders `{question}` `{gold}` `{prediction}` (`{gold}` and `{prediction}` required) |
//! | `max_new_tokens` | `16` (`96` with `template = "mem0"`) | cap of the judge's output (greedy) |
//! | `extract` | `"boxed"` | which part of the answer is judged: `"boxed"` (the last `\boxed{}`; none → 0), `"boxed-or-text"`, `"answer-is"`, `"text"` |
//! | `require_boxed` | — | older spelling: `true` = `extract = "boxed"`, `false` = `"boxed-or-text"` (not together with `extract`) |
//! | `strip_think` | `true` | judge only what follows the last `</think>` of a reasoning model's answer |
//! | `name` | `"judge"` | the metric's name in reports (to report two judges side by side) |
//! | `cache` | `<run dir>/<name>-cache.jsonl` in an eval (memory only elsewhere) | JSONL verdict cache file, relative to the working directory (read at build, appended; created with its folder on the first new verdict) |
//!
//! ```toml
//! [[eval.metrics]]
//! kind = "judge"
//! extract = "boxed-or-text"
//! cache = "runs/judge.jsonl"
//! model = { kind = "openai", base_url = "http://127.0.0.1:8080/v1", model = "judge" }
//!
//! [[train.rewards]]
//! kind = "judge"
//! weight = 1.0
//! model = { kind = "burn", path = "models/SmolLM2-360M-Instruct" }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use memfactory_core::{
    Cfg, ChatMessage, Episode, Error, GenRequest, LanguageModel, Prompt, PromptTemplate, Result,
    Reward, Sample, SamplingParams,
    op::model_from_cfg,
    prompt::template_from_cfg,
    reward::{AnswerExtraction, Extract},
    seed::fnv1a,
};
use serde::{Deserialize, Serialize};

/// The default judge prompt (`templates/judge.txt`).
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/judge.txt");

/// Mem0's LoCoMo judge prompt (`templates/mem0.txt`, recipe `template = "mem0"`):
/// `ACCURACY_PROMPT` of mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8,
/// `evaluation/metrics/llm_judge.py`, verbatim except that its placeholders
/// `{gold_answer}` / `{generated_answer}` are named `{gold}` / `{prediction}` here.
pub const MEM0_TEMPLATE: &str = include_str!("../templates/mem0.txt");

/// Default output cap with `template = "mem0"`: its prompt asks for a one-sentence
/// explanation before the JSON label.
pub const MEM0_MAX_NEW_TOKENS: usize = 96;

/// How a judge's output becomes a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictParser {
    /// [`parse_verdict`]: the first verdict word (the default prompt's True / False).
    Words,
    /// [`parse_mem0_verdict`]: the `label` of the JSON object (Mem0's prompt).
    Mem0Label,
}

impl VerdictParser {
    /// The verdict of `output` (`None`: unparsable).
    pub fn parse(self, output: &str) -> Option<bool> {
        match self {
            VerdictParser::Words => parse_verdict(output),
            VerdictParser::Mem0Label => parse_mem0_verdict(output),
        }
    }
}

/// Mem0's verdict reading (`evaluate_llm_judge`: `json.loads(content)['label']`, 1 when it
/// is `"CORRECT"`, else 0): the first JSON object in the output (prose and code fences
/// around it are skipped, [`memfactory_core::text::find_json_object`]) with a string `label`;
/// exactly `"CORRECT"` → `Some(true)`, any other label → `Some(false)`. `None` (unparsable,
/// scored 0 and counted) when there is no such object — where Mem0, which forces JSON output
/// through the API's `response_format`, would stop with an exception.
pub fn parse_mem0_verdict(output: &str) -> Option<bool> {
    let object = memfactory_core::text::find_json_object(output).ok()?;
    let label = object.get("label")?.as_str()?;
    Some(label == "CORRECT")
}

/// Placeholders the template may use.
pub const TEMPLATE_NAMES: &[&str] = &["question", "gold", "prediction"];

/// Placeholders the template must use.
pub const TEMPLATE_REQUIRED: &[&str] = &["gold", "prediction"];

/// Default cap of the judge's output, in tokens.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 16;

/// Reads a verdict from a judge's output: the first verdict word (whole word,
/// case-insensitive) — `true` / `correct` / `yes` → `Some(true)`, `false` / `wrong` /
/// `incorrect` / `no` → `Some(false)`; `None` when there is none. A verdict word right after
/// `not` is negated (`not correct` → `Some(false)`). A word directly followed by `:` (after
/// an optional closing quote and spaces) is a key, not a verdict, and is skipped.
pub fn parse_verdict(output: &str) -> Option<bool> {
    let mut rest = output;
    let mut negated = false;
    while let Some(start) = rest.find(|c: char| c.is_alphanumeric()) {
        let word_and_after = &rest[start..];
        let end = word_and_after
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(word_and_after.len());
        let word = word_and_after[..end].to_lowercase();
        let after = &word_and_after[end..];
        rest = after;
        let verdict = match word.as_str() {
            "true" | "correct" | "yes" => true,
            "false" | "wrong" | "incorrect" | "no" => false,
            w => {
                negated = w == "not";
                continue;
            }
        };
        let is_key = after
            .trim_start_matches(['"', '\''])
            .trim_start()
            .starts_with(':');
        if is_key {
            negated = false;
            continue;
        }
        return Some(verdict != negated);
    }
    None
}

/// Counters of a judge since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeStats {
    /// `generate` calls made (one per scored sample that needed new verdicts).
    pub lm_calls: u64,
    /// Verdicts asked of the model (one per gold answer not in the cache).
    pub requests: u64,
    /// Verdicts taken from the cache (in memory or loaded from the file).
    pub cache_hits: u64,
    /// Verdicts used for scoring whose output had no verdict word (fresh or cached; each
    /// counts every time it is used). Each scored 0.
    pub unparsable: u64,
}

/// What a verdict is about. Ordered so that several keys are always locked in one order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct CacheKey {
    judge: String,
    template: String,
    question: String,
    gold: String,
    prediction: String,
}

/// One judged (question, gold, prediction).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    output: String,
    verdict: Option<bool>,
}

/// One line of the cache file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    judge: String,
    template: String,
    question: String,
    gold: String,
    prediction: String,
    output: String,
    verdict: Option<bool>,
}

impl Record {
    fn new(key: &CacheKey, v: &Verdict) -> Self {
        Record {
            judge: key.judge.clone(),
            template: key.template.clone(),
            question: key.question.clone(),
            gold: key.gold.clone(),
            prediction: key.prediction.clone(),
            output: v.output.clone(),
            verdict: v.verdict,
        }
    }

    fn split(self) -> (CacheKey, Verdict) {
        (
            CacheKey {
                judge: self.judge,
                template: self.template,
                question: self.question,
                gold: self.gold,
                prediction: self.prediction,
            },
            Verdict {
                output: self.output,
                verdict: self.verdict,
            },
        )
    }
}

type Slot = Arc<Mutex<Option<Verdict>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The LLM judge (see the crate docs).
pub struct Judge {
    lm: Box<dyn LanguageModel>,
    template: PromptTemplate,
    max_new_tokens: usize,
    extraction: AnswerExtraction,
    parser: VerdictParser,
    name: String,
    /// `describe()` of the model plus the output cap: the `judge` part of cache keys.
    judge_id: String,
    /// Hex FNV-1a of the template text: the `template` part of cache keys.
    template_hash: String,
    slots: Mutex<HashMap<CacheKey, Slot>>,
    /// The cache file: named by the recipe (`explicit_cache`), or the run directory's.
    cache_path: Mutex<Option<PathBuf>>,
    explicit_cache: bool,
    cache_file: Mutex<Option<File>>,
    lm_calls: AtomicU64,
    requests: AtomicU64,
    cache_hits: AtomicU64,
    unparsable: AtomicU64,
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judge")
            .field("name", &self.name)
            .field("judge", &self.judge_id)
            .field("template", &self.template.name())
            .field("extraction", &self.extraction)
            .field("cache", &*lock(&self.cache_path))
            .finish_non_exhaustive()
    }
}

impl Judge {
    /// A judge on `lm` with the defaults: built-in template, `max_new_tokens = 16`,
    /// `extract = "boxed"` with `strip_think`, name `judge`, no cache file.
    pub fn new(lm: Box<dyn LanguageModel>) -> Result<Self> {
        let template = PromptTemplate::new(
            "default:template",
            DEFAULT_TEMPLATE,
            TEMPLATE_NAMES,
            TEMPLATE_REQUIRED,
        )?;
        let mut judge = Judge {
            lm,
            template_hash: String::new(),
            template,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            extraction: AnswerExtraction::default(),
            parser: VerdictParser::Words,
            name: "judge".into(),
            judge_id: String::new(),
            slots: Mutex::new(HashMap::new()),
            cache_path: Mutex::new(None),
            explicit_cache: false,
            cache_file: Mutex::new(None),
            lm_calls: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            unparsable: AtomicU64::new(0),
        };
        judge.rekey();
        Ok(judge)
    }

    fn rekey(&mut self) {
        self.judge_id = format!(
            "{}; max_new_tokens={}",
            self.lm.describe(),
            self.max_new_tokens
        );
        self.template_hash = format!("{:016x}", fnv1a(self.template.text().as_bytes()));
    }

    /// Replaces the prompt template (it must hold `{gold}` and `{prediction}`).
    pub fn with_template(mut self, template: PromptTemplate) -> Self {
        self.template = template;
        self.rekey();
        self
    }

    /// Sets the output cap (tokens, > 0).
    pub fn with_max_new_tokens(mut self, max_new_tokens: usize) -> Result<Self> {
        if max_new_tokens == 0 {
            return Err(Error::Invalid("judge max_new_tokens must be > 0".into()));
        }
        self.max_new_tokens = max_new_tokens;
        self.rekey();
        Ok(self)
    }

    /// Whether only a `\boxed{}` answer is judged (`extract = "boxed"`), else the whole
    /// answer without a box (`"boxed-or-text"`); `strip_think` is kept.
    pub fn with_require_boxed(mut self, require_boxed: bool) -> Self {
        self.extraction.extract = if require_boxed {
            Extract::Boxed
        } else {
            Extract::BoxedOrText
        };
        self
    }

    /// Sets how the judged answer is cut out of the episode's answer (`extract`,
    /// `strip_think`).
    pub fn with_extraction(mut self, extraction: AnswerExtraction) -> Self {
        self.extraction = extraction;
        self
    }

    /// How the judged answer is cut out of the episode's answer.
    pub fn extraction(&self) -> AnswerExtraction {
        self.extraction
    }

    /// Sets how outputs are read (the `mem0` template uses [`VerdictParser::Mem0Label`]).
    pub fn with_verdict_parser(mut self, parser: VerdictParser) -> Self {
        self.parser = parser;
        self
    }

    /// Sets the metric's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Uses `path` as the JSONL verdict cache: loads it when it exists (a bad line is an
    /// [`Error::Data`] naming the file and line; a last line cut short by a kill, without
    /// its newline, is dropped and the file cut back to its whole lines); new verdicts are appended to it (the
    /// file and its folder are created on the first one). Records of other judges or
    /// templates are loaded too but never match this judge's keys.
    pub fn with_cache_file(mut self, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        self.load(&path)?;
        *lock(&self.cache_path) = Some(path);
        self.explicit_cache = true;
        Ok(self)
    }

    /// The cache file in use, if any.
    pub fn cache_file(&self) -> Option<PathBuf> {
        lock(&self.cache_path).clone()
    }

    fn load(&self, path: &Path) -> Result<()> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        };
        // Each verdict goes out in one write ending in a newline, so a kill can leave only
        // the last line cut short: that line (no newline after it) is no verdict. It is
        // dropped and the file cut back to its last whole line, so the next verdict
        // appended starts a line of its own.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            eprintln!(
                "warning: {}: dropping a last line cut short ({} bytes, no newline: an \
                 interrupted write)",
                path.display(),
                bytes.len() - whole
            );
            File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(whole as u64).and_then(|()| f.sync_all()))
                .map_err(|e| Error::io(path, e))?;
        }
        let text = std::str::from_utf8(&bytes[..whole]).map_err(|e| {
            Error::data(
                path,
                None,
                format!("not UTF-8 text (a JSONL verdict cache was expected): {e}"),
            )
        })?;
        let mut slots = lock(&self.slots);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(line).map_err(|e| {
                Error::data(
                    path,
                    Some(format!("line {}", i + 1)),
                    format!("not a judge cache record: {e}"),
                )
            })?;
            let (key, verdict) = record.split();
            slots.insert(key, Arc::new(Mutex::new(Some(verdict))));
        }
        Ok(())
    }

    /// Counters since the judge was built.
    pub fn stats(&self) -> JudgeStats {
        JudgeStats {
            lm_calls: self.lm_calls.load(Ordering::SeqCst),
            requests: self.requests.load(Ordering::SeqCst),
            cache_hits: self.cache_hits.load(Ordering::SeqCst),
            unparsable: self.unparsable.load(Ordering::SeqCst),
        }
    }

    /// Number of verdicts held (loaded from the file or judged since).
    pub fn cached(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| lock(s).is_some())
            .count()
    }

    /// The judge's identity in cache keys: the model's `describe()` and the output cap.
    pub fn judge_id(&self) -> &str {
        &self.judge_id
    }

    /// The prompt the judge sees for one gold answer.
    pub fn prompt(&self, question: &str, gold: &str, prediction: &str) -> String {
        self.template.render(&[
            ("question", question),
            ("gold", gold),
            ("prediction", prediction),
        ])
    }

    /// 1.0 when `prediction` is judged to state the same as any of `golds`, else 0.0
    /// (also for an empty prediction or no golds, without asking the model).
    pub fn judge(&self, question: &str, golds: &[String], prediction: &str) -> Result<f32> {
        let prediction = prediction.trim();
        if prediction.is_empty() || golds.is_empty() {
            return Ok(0.0);
        }
        let keys: BTreeSet<CacheKey> = golds
            .iter()
            .map(|g| CacheKey {
                judge: self.judge_id.clone(),
                template: self.template_hash.clone(),
                question: question.to_string(),
                gold: g.trim().to_string(),
                prediction: prediction.to_string(),
            })
            .collect();
        let slots: Vec<(CacheKey, Slot)> = {
            let mut map = lock(&self.slots);
            keys.into_iter()
                .map(|k| {
                    let slot = map.entry(k.clone()).or_default().clone();
                    (k, slot)
                })
                .collect()
        };
        // Lock every slot, in key order (the same order in every thread: no deadlock).
        // A thread judging one of these keys holds its slot until the verdict is in.
        let mut guards: Vec<(&CacheKey, MutexGuard<'_, Option<Verdict>>)> =
            slots.iter().map(|(k, s)| (k, lock(s))).collect();

        let mut correct = false;
        for (_, g) in &guards {
            if let Some(v) = g.as_ref() {
                self.cache_hits.fetch_add(1, Ordering::SeqCst);
                match v.verdict {
                    Some(true) => correct = true,
                    Some(false) => {}
                    None => {
                        self.unparsable.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
        if correct {
            return Ok(1.0);
        }
        let missing: Vec<usize> = (0..guards.len())
            .filter(|&i| guards[i].1.is_none())
            .collect();
        if missing.is_empty() {
            return Ok(0.0);
        }
        let requests: Vec<GenRequest> = missing
            .iter()
            .map(|&i| {
                let k = guards[i].0;
                GenRequest {
                    prompt: Prompt::Chat(vec![ChatMessage::user(self.prompt(
                        &k.question,
                        &k.gold,
                        &k.prediction,
                    ))]),
                    params: SamplingParams::greedy(self.max_new_tokens),
                }
            })
            .collect();
        self.lm_calls.fetch_add(1, Ordering::SeqCst);
        self.requests
            .fetch_add(requests.len() as u64, Ordering::SeqCst);
        let gens = self.lm.generate(&requests)?;
        if gens.len() != requests.len() {
            return Err(Error::backend(
                "judge",
                format!(
                    "the judge model returned {} generations for {} requests",
                    gens.len(),
                    requests.len()
                ),
            ));
        }
        for (&i, g) in missing.iter().zip(gens) {
            let verdict = Verdict {
                verdict: self.parser.parse(&g.text),
                output: g.text,
            };
            match verdict.verdict {
                Some(true) => correct = true,
                Some(false) => {}
                None => {
                    self.unparsable.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.append(guards[i].0, &verdict)?;
            *guards[i].1 = Some(verdict);
        }
        Ok(if correct { 1.0 } else { 0.0 })
    }

    fn append(&self, key: &CacheKey, verdict: &Verdict) -> Result<()> {
        let Some(path) = lock(&self.cache_path).clone() else {
            return Ok(());
        };
        let path = path.as_path();
        let record = Record::new(key, verdict);
        let mut line = serde_json::to_string(&record)
            .map_err(|e| Error::backend("judge", format!("cannot encode a cache record: {e}")))?;
        line.push('\n');
        let mut file = lock(&self.cache_file);
        if file.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            *file = Some(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?,
            );
        }
        if let Some(f) = file.as_mut() {
            f.write_all(line.as_bytes())
                .and_then(|()| f.flush())
                .map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    }
}

impl Reward for Judge {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, sample: &Sample, episode: &Episode) -> Result<Option<f32>> {
        if sample.answers.is_empty() {
            return Ok(None);
        }
        let Some(prediction) = self.extraction.answer(episode) else {
            return Ok(Some(0.0));
        };
        self.judge(&sample.question, &sample.answers, &prediction)
            .map(Some)
    }

    /// Without a `cache` in the recipe, keeps the verdicts in `dir/<name>-cache.jsonl`
    /// (`judge-cache.jsonl` for the default name), loading what an earlier run left there.
    fn attach_run_dir(&self, dir: &Path) -> Result<()> {
        if self.explicit_cache {
            return Ok(());
        }
        let file: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{file}-cache.jsonl"));
        self.load(&path)?;
        let mut current = lock(&self.cache_path);
        if current.as_deref() != Some(path.as_path()) {
            *lock(&self.cache_file) = None;
            *current = Some(path);
        }
        Ok(())
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let s = self.stats();
        BTreeMap::from([
            ("lm_calls".to_string(), s.lm_calls),
            ("verdicts_asked".to_string(), s.requests),
            ("cache_hits".to_string(), s.cache_hits),
            ("unparsable".to_string(), s.unparsable),
        ])
    }
}

/// Builds a judge from its recipe table (see the crate docs for the keys).
pub fn from_cfg(cfg: &mut Cfg) -> Result<Judge> {
    let Some(lm) = model_from_cfg(cfg, "model")? else {
        return Err(cfg.error(
            "model",
            "missing required key: the judge's LM table, e.g. \
             `model = { kind = \"openai\", base_url = \"http://127.0.0.1:8080/v1\" }`",
        ));
    };
    let mem0 = cfg.table().get("template").and_then(|v| v.as_str()) == Some("mem0");
    let (template, parser, default_max) = if mem0 {
        let _: Option<String> = cfg.opt("template")?;
        (
            PromptTemplate::new("mem0", MEM0_TEMPLATE, TEMPLATE_NAMES, TEMPLATE_REQUIRED)?,
            VerdictParser::Mem0Label,
            MEM0_MAX_NEW_TOKENS,
        )
    } else {
        let template = template_from_cfg(
            cfg,
            "template",
            DEFAULT_TEMPLATE,
            TEMPLATE_NAMES,
            TEMPLATE_REQUIRED,
        )?;
        (template, VerdictParser::Words, DEFAULT_MAX_NEW_TOKENS)
    };
    let max_new_tokens = cfg.get_checked(
        "max_new_tokens",
        default_max,
        |n| *n > 0,
        "a positive token count",
    )?;
    memfactory_core::lm::check_budget(cfg.key("max_new_tokens"), max_new_tokens, lm.as_ref())?;
    let extraction = AnswerExtraction::from_cfg(cfg)?;
    let name: String = cfg.get("name", "judge".to_string())?;
    if name.trim().is_empty() {
        return Err(cfg.error("name", "expected a non-empty metric name"));
    }
    let cache: Option<String> = cfg.opt("cache")?;
    let mut judge = Judge::new(lm)?
        .with_template(template)
        .with_max_new_tokens(max_new_tokens)?
        .with_extraction(extraction)
        .with_verdict_parser(parser)
        .with_name(name);
    if let Some(path) = cache {
        if path.trim().is_empty() {
            return Err(cfg.error("cache", "expected a file path"));
        }
        judge = judge.with_cache_file(path)?;
    }
    Ok(judge)
}

fn build(cfg: &mut Cfg) -> Result<Box<dyn Reward>> {
    Ok(Box::new(from_cfg(cfg)?))
}

memfactory_core::inventory::submit! {
    memfactory_core::Registration::<dyn Reward> {
        kind: "judge",
        about: "LLM judge: an LM (any backend) answers True/False on whether the answer matches a gold answer; cached verdicts",
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_words() {
        assert_eq!(parse_verdict("True"), Some(true));
        assert_eq!(parse_verdict("false."), Some(false));
        assert_eq!(parse_verdict("  TRUE\n"), Some(true));
        assert_eq!(parse_verdict("Verdict: CORRECT"), Some(true));
        assert_eq!(parse_verdict("WRONG, it says 2020"), Some(false));
        assert_eq!(parse_verdict("Yes"), Some(true));
        assert_eq!(parse_verdict("No."), Some(false));
        assert_eq!(parse_verdict("This is incorrect"), Some(false));
        assert_eq!(parse_verdict("The answer is not correct."), Some(false));
        assert_eq!(parse_verdict("NOT WRONG"), Some(true));
        assert_eq!(parse_verdict("not sure, but true"), Some(true));
        // The first verdict word wins.
        assert_eq!(parse_verdict("False, not true"), Some(false));
        assert_eq!(parse_verdict("true or false"), Some(true));
        // Whole words only.
        assert_eq!(parse_verdict("Trueish untrue knot"), None);
        assert_eq!(parse_verdict("nobody knows"), None);
        // Keys are not verdicts.
        assert_eq!(parse_verdict("{\"correct\": false}"), Some(false));
        assert_eq!(parse_verdict("{\"label\": \"CORRECT\"}"), Some(true));
        assert_eq!(parse_verdict("correct: yes"), Some(true));
        assert_eq!(parse_verdict(""), None);
        assert_eq!(parse_verdict("I think so"), None);
        assert_eq!(parse_verdict("Vrai"), None);
    }

    #[test]
    fn default_template_has_the_placeholders() {
        for p in TEMPLATE_NAMES {
            assert!(DEFAULT_TEMPLATE.contains(&format!("{{{p}}}")), "{p}");
        }
    }
}
