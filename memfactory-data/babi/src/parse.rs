//! The bAbI v1.2 text format: stories of numbered statements and questions.

use std::path::Path;

use memfactory_core::{Error, Result};

/// One statement of a story (a fact), e.g. `1 Mary moved to the bathroom.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The bAbI id (1-based, counted over statements and questions of the story).
    pub id: u32,
    /// The sentence, without its id.
    pub text: String,
    /// 1-based line of the file.
    pub line: usize,
}

/// One question of a story, e.g. `3 Where is Mary? \tbathroom\t1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The bAbI id.
    pub id: u32,
    /// The question, trimmed (the files put a space before the tab).
    pub text: String,
    /// The answer as written (task 8 and 19 list several words as `a,b`).
    pub answer: String,
    /// Ids of the supporting statements, in file order.
    pub supporting: Vec<u32>,
    /// 1-based line of the file.
    pub line: usize,
    /// Number of statements of the story before this question (its context is
    /// `statements[..statements_before]`).
    pub statements_before: usize,
}

/// One story: the lines from an id 1 to the line before the next id 1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Story {
    /// Statements, in order.
    pub statements: Vec<Statement>,
    /// Questions, in order.
    pub questions: Vec<Question>,
}

impl Story {
    /// The statement with bAbI id `id`, if any.
    pub fn statement(&self, id: u32) -> Option<&Statement> {
        self.statements.iter().find(|s| s.id == id)
    }
}

/// A parse failure: the 1-based line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn perr<T>(line: usize, message: impl Into<String>) -> std::result::Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Parses a bAbI file's text into stories.
///
/// Rules: each non-blank line is `ID text` (ID a positive integer, one space); a line with
/// tabs is a question `ID question<TAB>answer<TAB>supporting ids` (exactly two tabs, a
/// non-empty answer, ids separated by spaces, each naming an earlier statement of the same
/// story). ID 1 starts a new story; any other ID must be the previous line's ID plus one.
/// Blank lines are skipped; a trailing `\r` is removed; a UTF-8 byte-order mark is ignored.
pub fn parse_babi(text: &str) -> std::result::Result<Vec<Story>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut stories: Vec<Story> = Vec::new();
    let mut prev: Option<u32> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return perr(n, format!("expected `ID sentence`, found {:?}", clip(line)));
        }
        let Ok(id) = line[..digits].parse::<u32>() else {
            return perr(n, format!("id {:?} is too large", &line[..digits]));
        };
        let Some(rest) = line[digits..].strip_prefix(' ') else {
            return perr(
                n,
                format!(
                    "expected a space after the id {id}, found {:?}",
                    clip(&line[digits..])
                ),
            );
        };
        match (id, prev) {
            (0, _) => return perr(n, "ids start at 1, found 0"),
            (1, _) => stories.push(Story::default()),
            (_, None) => {
                return perr(n, format!("the first story must start at id 1, found {id}"));
            }
            (_, Some(p)) if id != p + 1 => {
                return perr(
                    n,
                    format!(
                        "expected id {} (ids go up by one within a story; 1 starts a new story), \
                         found {id}",
                        p + 1
                    ),
                );
            }
            _ => {}
        }
        prev = Some(id);
        let story = stories.last_mut().expect("a story was started");
        let fields: Vec<&str> = rest.split('\t').collect();
        match fields.as_slice() {
            [sentence] => {
                let sentence = sentence.trim();
                if sentence.is_empty() {
                    return perr(n, format!("statement {id} is empty"));
                }
                story.statements.push(Statement {
                    id,
                    text: sentence.to_string(),
                    line: n,
                });
            }
            [question, answer, support] => {
                let question = question.trim();
                let answer = answer.trim();
                if question.is_empty() {
                    return perr(n, format!("question {id} is empty"));
                }
                if answer.is_empty() {
                    return perr(n, format!("question {id} has an empty answer"));
                }
                let mut supporting = Vec::new();
                for tok in support.split_whitespace() {
                    let Ok(s) = tok.parse::<u32>() else {
                        return perr(
                            n,
                            format!("supporting fact id {tok:?} of question {id} is not a number"),
                        );
                    };
                    if story.statement(s).is_none() {
                        return perr(
                            n,
                            format!(
                                "supporting fact id {s} of question {id} names no earlier \
                                 statement of this story"
                            ),
                        );
                    }
                    supporting.push(s);
                }
                story.questions.push(Question {
                    id,
                    text: question.to_string(),
                    answer: answer.to_string(),
                    supporting,
                    line: n,
                    statements_before: story.statements.len(),
                });
            }
            _ => {
                return perr(
                    n,
                    format!(
                        "expected a statement (no tab) or a question with two tabs \
                         (`ID question<TAB>answer<TAB>supporting ids`), found {} tab(s)",
                        fields.len() - 1
                    ),
                );
            }
        }
    }
    Ok(stories)
}

/// Reads and parses a bAbI file; errors are [`Error::Data`] naming `path` and the line.
pub fn read_babi(path: &Path) -> Result<Vec<Story>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    parse_babi(&text).map_err(|e| Error::data(path, Some(format!("line {}", e.line)), e.message))
}

/// At most 60 characters of `s`, for messages.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Task number, task name and split of a file named `qa{N}_{name}_{split}.txt`
/// (e.g. `qa1_single-supporting-fact_train.txt` → `(1, "single-supporting-fact", "train")`).
pub fn task_of_file_name(name: &str) -> Option<(u32, String, String)> {
    let stem = name.strip_suffix(".txt")?;
    let rest = stem.strip_prefix("qa")?;
    let (num, rest) = rest.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num: u32 = num.parse().ok()?;
    let (task, split) = rest.rsplit_once('_')?;
    if task.is_empty() || split.is_empty() {
        return None;
    }
    Some((num, task.to_string(), split.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            task_of_file_name("qa1_single-supporting-fact_train.txt"),
            Some((1, "single-supporting-fact".into(), "train".into()))
        );
        assert_eq!(
            task_of_file_name("qa20_agents-motivations_test.txt"),
            Some((20, "agents-motivations".into(), "test".into()))
        );
        assert_eq!(task_of_file_name("stories.txt"), None);
        assert_eq!(task_of_file_name("qa_x_train.txt"), None);
        assert_eq!(task_of_file_name("qa1_train.txt"), None);
    }
}
