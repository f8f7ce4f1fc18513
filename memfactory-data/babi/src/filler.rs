//! Background text for the haystack: the built-in sentences, or Synthetic-Persona-Chat
//! utterances read from its CSV file.

use std::path::Path;

use memfactory_core::{Error, Result};

use crate::parse::{ParseError, clip};

/// The built-in filler: RULER's noise sentences, used one per background line, in this
/// order, cycling.
pub const BUILTIN_SENTENCES: [&str; 5] = [
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
];

/// The CSV column holding the conversations in Synthetic-Persona-Chat.
pub const PERSONA_CHAT_COLUMN: &str = "Best Generated Conversation";

/// Splits CSV text into records of fields (RFC 4180: fields separated by commas, records by
/// LF or CRLF, a field in double quotes may hold commas, line breaks and `""` for a quote).
/// Each record comes with its 1-based starting line. A blank line between records is
/// skipped.
pub fn parse_csv(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records: Vec<(usize, Vec<String>)> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while chars.peek().is_some() {
        let start = line;
        // Blank line between records.
        if chars.peek() == Some(&'\n') {
            chars.next();
            line += 1;
            continue;
        }
        if chars.peek() == Some(&'\r') {
            let mut ahead = chars.clone();
            ahead.next();
            if ahead.peek() == Some(&'\n') {
                chars.next();
                chars.next();
                line += 1;
                continue;
            }
        }
        let mut fields: Vec<String> = Vec::new();
        loop {
            // One field.
            let mut field = String::new();
            if chars.peek() == Some(&'"') {
                let open = line;
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ParseError {
                                line: open,
                                message: "unterminated quoted field (no closing `\"`)".into(),
                            });
                        }
                        Some('"') => {
                            if chars.peek() == Some(&'"') {
                                chars.next();
                                field.push('"');
                            } else {
                                break;
                            }
                        }
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\n') => {}
                    Some('\r') => {}
                    Some(c) => {
                        return Err(ParseError {
                            line,
                            message: format!(
                                "unexpected {c:?} after a closing quote (expected `,` or the \
                                 end of the record)"
                            ),
                        });
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '\n' || c == '\r' {
                        break;
                    }
                    if c == '"' {
                        return Err(ParseError {
                            line,
                            message: format!(
                                "a `\"` inside an unquoted field (after {:?}); quote the whole \
                                 field and double the quote",
                                clip(&field)
                            ),
                        });
                    }
                    field.push(c);
                    chars.next();
                }
            }
            fields.push(field);
            match chars.next() {
                Some(',') => continue,
                None => break,
                Some('\n') => {
                    line += 1;
                    break;
                }
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                        line += 1;
                        break;
                    }
                    return Err(ParseError {
                        line,
                        message: "a bare carriage return outside quotes".into(),
                    });
                }
                Some(c) => unreachable!("field ended at {c:?}"),
            }
        }
        records.push((start, fields));
    }
    Ok(records)
}

/// The utterances of a Synthetic-Persona-Chat CSV text: for every record after the header,
/// the lines of its `Best Generated Conversation` field in order, each without a leading
/// `User <digits>:` speaker prefix and trimmed; blank lines are skipped. Every record must
/// have as many fields as the header.
pub fn parse_persona_chat(text: &str) -> std::result::Result<Vec<String>, ParseError> {
    let records = parse_csv(text)?;
    let Some((hline, header)) = records.first() else {
        return Err(ParseError {
            line: 1,
            message: "empty file (expected a header row)".into(),
        });
    };
    let Some(col) = header.iter().position(|h| h.trim() == PERSONA_CHAT_COLUMN) else {
        return Err(ParseError {
            line: *hline,
            message: format!(
                "the header has no `{PERSONA_CHAT_COLUMN}` column (found: {})",
                header
                    .iter()
                    .map(|h| format!("`{}`", clip(h)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let mut out = Vec::new();
    for (line, fields) in &records[1..] {
        if fields.len() != header.len() {
            return Err(ParseError {
                line: *line,
                message: format!(
                    "expected {} fields like the header, found {}",
                    header.len(),
                    fields.len()
                ),
            });
        }
        for l in fields[col].lines() {
            let u = strip_speaker(l.trim()).trim();
            if !u.is_empty() {
                out.push(u.to_string());
            }
        }
    }
    Ok(out)
}

/// `l` without a leading `User <digits>:`.
fn strip_speaker(l: &str) -> &str {
    if let Some(rest) = l.strip_prefix("User ") {
        let d = rest.bytes().take_while(u8::is_ascii_digit).count();
        if d > 0
            && let Some(after) = rest[d..].strip_prefix(':')
        {
            return after;
        }
    }
    l
}

/// Reads a Synthetic-Persona-Chat CSV file's utterances; errors are [`Error::Data`] naming
/// `path` and the line; a file without any utterance is an error too.
pub fn read_persona_chat(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::data_read(path, e))?;
    let u = parse_persona_chat(&text)
        .map_err(|e| Error::data(path, Some(format!("line {}", e.line)), e.message))?;
    if u.is_empty() {
        return Err(Error::data(
            path,
            None,
            format!("no utterance in the `{PERSONA_CHAT_COLUMN}` column"),
        ));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_newlines() {
        let t = "a,b\r\n\"x, \"\"y\"\"\",\"1\n2\"\nplain,\n";
        let r = parse_csv(t).unwrap();
        assert_eq!(
            r,
            vec![
                (1, vec!["a".to_string(), "b".into()]),
                (2, vec!["x, \"y\"".to_string(), "1\n2".into()]),
                (4, vec!["plain".to_string(), "".into()]),
            ]
        );
    }

    #[test]
    fn csv_errors_name_lines() {
        let e = parse_csv("a,b\nc,\"open\nmore\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unterminated"), "{}", e.message);
        let e = parse_csv("a,b\n\n\nc,d\"e\n").unwrap_err();
        assert_eq!(e.line, 4);
        let e = parse_csv("\"a\"x,b\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("after a closing quote"), "{}", e.message);
    }

    #[test]
    fn speakers_are_stripped() {
        assert_eq!(strip_speaker("User 1: Hi!"), " Hi!");
        assert_eq!(strip_speaker("User 12:Yo"), "Yo");
        assert_eq!(strip_speaker("User: x"), "User: x");
        assert_eq!(strip_speaker("Note: x"), "Note: x");
    }
}
