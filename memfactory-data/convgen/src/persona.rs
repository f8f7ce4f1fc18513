//! Reading Synthetic-Persona-Chat: an RFC 4180 CSV reader (quoted fields spanning lines,
//! `""` escapes, CRLF or LF line ends) and the conversations it holds.

use std::path::Path;

use memfactory_core::{Error, Result};

/// Column holding speaker 1's persona sentences, one a line.
pub const COLUMN_PERSONA_1: &str = "user 1 personas";
/// Column holding speaker 2's persona sentences, one a line.
pub const COLUMN_PERSONA_2: &str = "user 2 personas";
/// Column holding the conversation, `User 1: …` / `User 2: …` one a line.
pub const COLUMN_CONVERSATION: &str = "Best Generated Conversation";

/// Why a text could not be read: where (`line L, column C` or `record R (line L)`), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where in the file, when known.
    pub location: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// One CSV record with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    /// Line of the record's first character.
    pub line: usize,
    /// The fields, unquoted.
    pub fields: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    AfterQuote,
}

/// Parses CSV text (RFC 4180): fields separated by `,`, records by LF or CRLF; a field in
/// double quotes may hold commas, line breaks and `""` (one quote). A quote inside an
/// unquoted field, text after a closing quote, or an unterminated quote is an error with its
/// line and column. Empty lines are skipped; a UTF-8 byte-order mark is ignored. Line breaks
/// inside quoted fields come back as `\n`.
pub fn parse_csv(text: &str) -> std::result::Result<Vec<CsvRecord>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = State::FieldStart;
    let (mut line, mut col) = (1usize, 0usize);
    let mut record_line = 1usize;
    let mut opened = (1usize, 1usize);
    let at = |line: usize, col: usize, message: String| ParseError {
        location: Some(format!("line {line}, column {col}")),
        message,
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\r' && chars.peek() == Some(&'\n') {
            // CRLF: the `\n` that follows does the work.
            col -= 1;
            continue;
        }
        match (state, c) {
            (State::Quoted, '"') => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    col += 1;
                    field.push('"');
                } else {
                    state = State::AfterQuote;
                }
            }
            (State::Quoted, '\n') => {
                field.push('\n');
                line += 1;
                col = 0;
            }
            (State::Quoted, c) => field.push(c),
            (State::FieldStart, '"') => {
                state = State::Quoted;
                opened = (line, col);
            }
            (State::Unquoted, '"') => {
                return Err(at(
                    line,
                    col,
                    "a double quote inside an unquoted field (quote the whole field and write \
                     the quote as \"\")"
                        .into(),
                ));
            }
            (_, ',') => {
                fields.push(std::mem::take(&mut field));
                state = State::FieldStart;
            }
            (_, '\n') => {
                fields.push(std::mem::take(&mut field));
                let fs = std::mem::take(&mut fields);
                if !(fs.len() == 1 && fs[0].is_empty() && state == State::FieldStart) {
                    records.push(CsvRecord {
                        line: record_line,
                        fields: fs,
                    });
                }
                state = State::FieldStart;
                line += 1;
                col = 0;
                record_line = line;
            }
            (State::AfterQuote, c) => {
                return Err(at(
                    line,
                    col,
                    format!("unexpected {c:?} after a closing quote (expected `,` or a line end)"),
                ));
            }
            (_, c) => {
                field.push(c);
                state = State::Unquoted;
            }
        }
    }
    match state {
        State::Quoted => {
            return Err(at(
                opened.0,
                opened.1,
                "unterminated quoted field (no closing quote before the end of the file)".into(),
            ));
        }
        State::FieldStart if fields.is_empty() => {}
        _ => {
            fields.push(field);
            records.push(CsvRecord {
                line: record_line,
                fields,
            });
        }
    }
    Ok(records)
}

/// One line of a persona-chat conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 0 for `User 1`, 1 for `User 2`.
    pub speaker: usize,
    /// What is said (the `User N:` prefix removed).
    pub text: String,
}

/// One row of Synthetic-Persona-Chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// The persona sentences of `User 1` and `User 2`, one per non-empty line.
    pub personas: [Vec<String>; 2],
    /// The conversation's `User 1:` / `User 2:` lines, in order; other lines (stage
    /// directions such as `[A few minutes later]`, recipes, separators) are dropped.
    pub lines: Vec<Line>,
}

/// `User 1: text` → `(0, text)`; also `*User 2:* text`, `user 1 : text`.
fn dialogue_line(raw: &str) -> Option<Line> {
    let s = raw.trim().trim_start_matches(['*', ' ', '\t']);
    let head = s.get(..4)?;
    if !head.eq_ignore_ascii_case("user") {
        return None;
    }
    let rest = s[4..].trim_start();
    let speaker = match rest.chars().next()? {
        '1' => 0,
        '2' => 1,
        _ => return None,
    };
    let rest = rest[1..].trim_start().strip_prefix(':')?;
    let text = rest.trim_start_matches(['*', ' ', '\t']).trim();
    (!text.is_empty()).then(|| Line {
        speaker,
        text: text.to_string(),
    })
}

fn sentences(field: &str) -> Vec<String> {
    field
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses the text of a Synthetic-Persona-Chat CSV file: a header naming (in any order, other
/// columns ignored) [`COLUMN_PERSONA_1`], [`COLUMN_PERSONA_2`] and [`COLUMN_CONVERSATION`],
/// then one conversation per record.
pub fn parse_persona_chat(text: &str) -> std::result::Result<Vec<Conversation>, ParseError> {
    let records = parse_csv(text)?;
    let Some((header, rows)) = records.split_first() else {
        return Err(ParseError {
            location: None,
            message: "the file is empty (expected a CSV header and conversations)".into(),
        });
    };
    let column = |name: &str| {
        header
            .fields
            .iter()
            .position(|f| f.trim() == name)
            .ok_or_else(|| ParseError {
                location: Some(format!("line {}", header.line)),
                message: format!(
                    "the header has no column `{name}` (it has: {})",
                    header
                        .fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    };
    let (p1, p2, conv) = (
        column(COLUMN_PERSONA_1)?,
        column(COLUMN_PERSONA_2)?,
        column(COLUMN_CONVERSATION)?,
    );
    if rows.is_empty() {
        return Err(ParseError {
            location: None,
            message: "the file has a header but no conversation".into(),
        });
    }
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if r.fields.len() != header.fields.len() {
            return Err(ParseError {
                location: Some(format!("record {} (line {})", i + 1, r.line)),
                message: format!(
                    "expected {} fields like the header, found {}",
                    header.fields.len(),
                    r.fields.len()
                ),
            });
        }
        out.push(Conversation {
            row: i + 1,
            personas: [sentences(&r.fields[p1]), sentences(&r.fields[p2])],
            lines: r.fields[conv].lines().filter_map(dialogue_line).collect(),
        });
    }
    if out.iter().all(|c| c.lines.is_empty()) {
        return Err(ParseError {
            location: None,
            message: format!(
                "no conversation has a `User 1: …` or `User 2: …` line in column \
                 `{COLUMN_CONVERSATION}`"
            ),
        });
    }
    Ok(out)
}

/// Reads and parses a Synthetic-Persona-Chat file; every error is an [`Error::Data`] naming
/// `path`.
pub fn read_persona_chat(path: &Path) -> Result<Vec<Conversation>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    parse_persona_chat(&text).map_err(|e| Error::data(path, e.location, e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_newlines_and_escapes() {
        let r = parse_csv("a,b,c\r\n\"x\ny\",\"he said \"\"hi\"\"\",\n\nlast,\"\",z").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].fields, ["a", "b", "c"]);
        assert_eq!(r[1].fields, ["x\ny", "he said \"hi\"", ""]);
        assert_eq!(r[1].line, 2);
        assert_eq!(r[2].fields, ["last", "", "z"]);
        assert_eq!(r[2].line, 5);
    }

    #[test]
    fn csv_errors_have_positions() {
        let e = parse_csv("a,b\n\"open,x\n").unwrap_err();
        assert_eq!(e.location.as_deref(), Some("line 2, column 1"));
        assert!(e.message.contains("unterminated"), "{e}");
        let e = parse_csv("a,b\nx\"y,z\n").unwrap_err();
        assert_eq!(e.location.as_deref(), Some("line 2, column 2"));
        let e = parse_csv("a,b\n\"x\"y,z\n").unwrap_err();
        assert_eq!(e.location.as_deref(), Some("line 2, column 4"));
        assert!(e.message.contains("after a closing quote"), "{e}");
    }

    #[test]
    fn dialogue_lines() {
        let l = |s| dialogue_line(s).map(|l| (l.speaker, l.text));
        assert_eq!(l("User 1: Hi!"), Some((0, "Hi!".into())));
        assert_eq!(l("*User 2:* Hello there"), Some((1, "Hello there".into())));
        assert_eq!(l("  user 2 :  ok "), Some((1, "ok".into())));
        assert_eq!(l("User 3: no"), None);
        assert_eq!(l("User 1:"), None);
        assert_eq!(l("[A few minutes later]"), None);
        assert_eq!(l("* * *"), None);
        assert_eq!(l("Üser"), None);
    }
}
