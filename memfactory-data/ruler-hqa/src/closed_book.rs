//! MemAgent's closed-book filter: drop the questions a reference model answers correctly
//! with no context at all.
//!
//! Source: BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146,
//! `taskutils/memory_data/filter.py` (prompt, sampling, the two scores) and
//! `taskutils/memory_data/filter2.py` lines 21-34 (what counts as correct, keep the first
//! 8,192 train / 128 dev questions that no try answered). MemAgent asks each question
//! as one user chat message `"{question}\nYour final answer in \boxed{}.\n"` (filter.py:17-19),
//! `n = 2` samples at temperature 1.0, top_p 0.7, at most 512 new tokens (filter.py:26-36),
//! of two models (Qwen2.5-7B and Qwen2.5-7B-Instruct), and drops the question when any
//! sample of either model is correct by either score:
//!
//! - *contains*: the lower-cased gold answer is a substring of the lower-cased response
//!   (filter.py:52-59);
//! - *boxed*: `hotpotqa_verifier.compute_score`: the last `\boxed{…}` of the response's last
//!   300 characters, lower-cased, equals the lower-cased gold after the MATH `strip_string`
//!   normalisation (hotpotqa_verifier.py:1-117), reproduced by [`boxed_correct`].
//!
//! Here one table names one reference model; MemAgent's two-model union is two filters
//! chained through `keep_ids` (the second run reads the first run's file and asks its own
//! model about the questions still kept).

use serde_json::{Value, json};

use memfactory_core::{ChatMessage, GenRequest, LanguageModel, Prompt, Result, SamplingParams};

/// MemAgent's closed-book prompt (filter.py:17-19), `{question}` replaced by the question.
pub const PROMPT: &str = "{question}\nYour final answer in \\boxed{}.\n";

/// The prompt for one question.
pub fn prompt(question: &str) -> String {
    PROMPT.replace("{question}", question)
}

/// What counts as a correct closed-book answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// MemAgent's: [`contains_correct`] or [`boxed_correct`].
    ContainsOrBoxed,
    /// [`contains_correct`] only.
    Contains,
    /// [`boxed_correct`] only.
    Boxed,
}

impl Criterion {
    /// Names accepted by the recipe key `criterion`.
    pub const NAMES: [&'static str; 3] = ["contains-or-boxed", "contains", "boxed"];

    /// Parses a recipe value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "contains-or-boxed" => Some(Criterion::ContainsOrBoxed),
            "contains" => Some(Criterion::Contains),
            "boxed" => Some(Criterion::Boxed),
            _ => None,
        }
    }

    /// Whether `response` answers `gold` correctly under this criterion.
    pub fn correct(self, response: &str, gold: &str) -> bool {
        match self {
            Criterion::ContainsOrBoxed => {
                contains_correct(response, gold) || boxed_correct(response, gold)
            }
            Criterion::Contains => contains_correct(response, gold),
            Criterion::Boxed => boxed_correct(response, gold),
        }
    }
}

/// filter.py's `contains`: `gt.lower() in r.lower()`.
pub fn contains_correct(response: &str, gold: &str) -> bool {
    response.to_lowercase().contains(&gold.to_lowercase())
}

/// `hotpotqa_verifier.compute_score(response, gold) == 1.0`.
pub fn boxed_correct(response: &str, gold: &str) -> bool {
    let chars: Vec<char> = response.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(300)..].iter().collect();
    let s = tail.to_lowercase();
    let gold = gold.to_lowercase();
    let Some(boxed) = last_boxed_only_string(&s) else {
        return false;
    };
    // `remove_boxed` asserts its shape; a failed assertion scores 0 (the except branch).
    let Some(answer) = remove_boxed(&boxed) else {
        return false;
    };
    strip_string(answer) == strip_string(&gold)
}

fn remove_boxed(s: &str) -> Option<&str> {
    if s.contains("\\boxed ") {
        return s.strip_prefix("\\boxed ");
    }
    s.strip_prefix("\\boxed{")?.strip_suffix('}')
}

fn last_boxed_only_string(s: &str) -> Option<String> {
    if s.contains("\\boxed ") {
        let last = s.rsplit("\\boxed ").next().unwrap_or("");
        let upto = last.split('$').next().unwrap_or("");
        return Some(format!("\\boxed {upto}"));
    }
    let idx = s.rfind("\\boxed").or_else(|| s.rfind("\\fbox"))?;
    let mut open = 0i64;
    for (i, c) in s[idx..].char_indices() {
        if c == '{' {
            open += 1;
        }
        if c == '}' {
            open -= 1;
            if open == 0 {
                return Some(s[idx..idx + i + 1].to_string());
            }
        }
    }
    None
}

fn strip_string(s: &str) -> String {
    let mut s = s.replace('\n', "");
    for (from, to) in [
        ("\\!", ""),
        ("\\\\", "\\"),
        ("tfrac", "frac"),
        ("dfrac", "frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\$", ""),
        ("\\%", ""),
        ("\\%", ""),
        (" .", " 0."),
        ("{.", "{0."),
    ] {
        s = s.replace(from, to);
    }
    if s.is_empty() {
        return s;
    }
    s.replace(' ', "")
}

/// Sampling and scoring settings of one filter run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Samples per question.
    pub tries: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Budget of each answer.
    pub max_new_tokens: usize,
    /// Seed of the sampling (each try's seed derives from it, the question id and the try).
    pub seed: u64,
    /// What counts as correct.
    pub criterion: Criterion,
    /// Requests per `generate` call.
    pub batch: usize,
}

/// One question to ask.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// Sample id (`_id`).
    pub id: &'a str,
    /// The question.
    pub question: &'a str,
    /// The gold answer.
    pub answer: &'a str,
}

/// The verdict on one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Index of the first correct try, `None` when no try was correct (the question is kept).
    pub correct_try: Option<usize>,
    /// The responses, one per try.
    pub responses: Vec<String>,
}

/// The seed of try `t` of question `id`.
pub fn try_seed(seed: u64, id: &str, t: usize) -> u64 {
    memfactory_core::seed::derive_n(memfactory_core::seed::derive(seed, id), t as u64)
}

/// Asks `lm` every question `settings.tries` times, without context, and judges each answer.
pub fn run(
    lm: &dyn LanguageModel,
    questions: &[Question<'_>],
    settings: &Settings,
) -> Result<Vec<Verdict>> {
    let mut requests = Vec::with_capacity(questions.len() * settings.tries);
    for q in questions {
        for t in 0..settings.tries {
            requests.push(GenRequest {
                prompt: Prompt::Chat(vec![ChatMessage::user(prompt(q.question))]),
                params: SamplingParams {
                    max_new_tokens: settings.max_new_tokens,
                    temperature: settings.temperature,
                    top_p: settings.top_p,
                    seed: try_seed(settings.seed, q.id, t),
                    ..Default::default()
                },
            });
        }
    }
    let mut texts = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(settings.batch.max(1)) {
        let gens = lm.generate(chunk)?;
        texts.extend(gens.into_iter().map(|g| g.text));
    }
    Ok(questions
        .iter()
        .zip(texts.chunks(settings.tries.max(1)))
        .map(|(q, rs)| Verdict {
            correct_try: rs
                .iter()
                .position(|r| settings.criterion.correct(r, q.answer)),
            responses: rs.to_vec(),
        })
        .collect())
}

/// The settings as written into the kept-ids file.
pub fn settings_json(s: &Settings) -> Value {
    json!({
        "prompt": PROMPT,
        "tries": s.tries,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_new_tokens": s.max_new_tokens,
        "seed": s.seed,
        "criterion": Criterion::NAMES[match s.criterion {
            Criterion::ContainsOrBoxed => 0,
            Criterion::Contains => 1,
            Criterion::Boxed => 2,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_follows_the_verifier() {
        assert!(boxed_correct("so \\boxed{Paris}", "paris"));
        assert!(boxed_correct("\\boxed{The  Beatles}", "the beatles"));
        // Only the last box counts.
        assert!(!boxed_correct("\\boxed{paris} no, \\boxed{rome}", "paris"));
        // `\boxed ` form: up to the next `$`.
        assert!(boxed_correct("answer: \\boxed 1990$ done", "1990"));
        // Unclosed box, no box, fbox (remove_boxed's assertion fails).
        assert!(!boxed_correct("\\boxed{paris", "paris"));
        assert!(!boxed_correct("paris", "paris"));
        assert!(!boxed_correct("\\fbox{paris}", "paris"));
        // Only the last 300 characters are read.
        let long = format!("\\boxed{{paris}}{}", "x".repeat(300));
        assert!(!boxed_correct(&long, "paris"));
        // Nested braces.
        assert!(boxed_correct("\\boxed{\\text{a}}", "\\text{a}"));
        // strip_string: " ." becomes " 0.", spaces go.
        assert!(boxed_correct("\\boxed{x .5}", "x0.5"));
    }

    #[test]
    fn contains_is_case_insensitive_substring() {
        assert!(contains_correct("It was THE BEATLES.", "the Beatles"));
        assert!(!contains_correct("It was the Stones.", "the Beatles"));
    }

    #[test]
    fn criteria_combine() {
        let c = Criterion::ContainsOrBoxed;
        assert!(c.correct("I think yes", "yes"));
        assert!(c.correct("\\boxed{y e s}", "yes"));
        assert!(!Criterion::Contains.correct("\\boxed{y e s}", "yes"));
        assert!(!Criterion::Boxed.correct("I think yes", "yes"));
    }
}
