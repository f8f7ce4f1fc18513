//! Recipes: a TOML document naming components by `kind`.
//!
//! Parsing errors report the line and column; the sections are read by the `memfactory`
//! facade, which builds each component through the registry.

use crate::{Cfg, Error, Result};

/// A parsed recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Where it came from (file path, or `<string>`).
    pub file: String,
    /// The whole document.
    pub root: toml::Table,
}

/// 1-based (line, column) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Recipe {
    /// Parses recipe text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Recipe> {
        match text.parse::<toml::Table>() {
            Ok(root) => Ok(Recipe {
                file: file.to_string(),
                root,
            }),
            Err(e) => {
                let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
                Err(Error::Toml {
                    file: file.to_string(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                })
            }
        }
    }

    /// Sets the dotted key `key` (e.g. `data.eval.docs`) to `value`, creating missing tables
    /// on the way: a command-line override (`--set`, `--sweep`). An existing non-table value
    /// on the path, or an empty key segment, is an error naming the key.
    pub fn set(&mut self, key: &str, value: toml::Value) -> Result<()> {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.trim().is_empty()) {
            return Err(Error::config(
                key,
                "expected a dotted recipe key such as `data.eval.docs`",
            ));
        }
        let (last, parents) = parts.split_last().expect("split yields one part");
        let mut table = &mut self.root;
        for (i, p) in parents.iter().enumerate() {
            let entry = table
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                other => {
                    return Err(Error::config(
                        parts[..=i].join("."),
                        format!(
                            "cannot set `{key}`: this is a {} in {}, not a table",
                            other.type_str(),
                            self.file
                        ),
                    ));
                }
            };
        }
        table.insert(last.to_string(), value);
        Ok(())
    }

    /// The whole recipe as a [`Cfg`] rooted at the top level.
    pub fn cfg(&self) -> Cfg {
        Cfg::new("", self.root.clone())
    }
}

/// Parses one command-line override `KEY=VALUE`: `VALUE` is read as a TOML value (`3`,
/// `0.5`, `true`, `"text"`, `[1, 2]`) and, when it is not one, taken as a plain string
/// (`models/a.gguf`). An argument without `=` or with an empty key is an error.
pub fn parse_override(arg: &str) -> Result<(String, toml::Value)> {
    let (key, value) = split_assignment(arg, "an override KEY=VALUE, e.g. data.eval.docs=100")?;
    Ok((key.to_string(), parse_value(value)))
}

/// Splits a command-line `KEY=…` at its first `=`, the key trimmed and non-empty; the error
/// names `arg` and says it `expected` (e.g. "a sweep KEY=V1,V2,…").
pub fn split_assignment<'a>(arg: &'a str, expected: &str) -> Result<(&'a str, &'a str)> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| Error::config(arg, format!("expected {expected}")))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::config(arg, "the key before `=` is empty"));
    }
    Ok((key, value))
}

/// A command-line value: TOML when it parses as one, else the plain string.
pub fn parse_value(value: &str) -> toml::Value {
    let value = value.trim();
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_creates_tables_and_rejects_scalars_on_the_path() {
        let mut r = Recipe::parse("[data.eval]\nkind = \"ruler\"\ndocs = 10\n", "r.toml").unwrap();
        r.set("data.eval.docs", toml::Value::Integer(50)).unwrap();
        r.set("run.seed", toml::Value::Integer(7)).unwrap();
        assert_eq!(r.root["data"]["eval"]["docs"].as_integer(), Some(50));
        assert_eq!(r.root["data"]["eval"]["kind"].as_str(), Some("ruler"));
        assert_eq!(r.root["run"]["seed"].as_integer(), Some(7));
        let err = r
            .set("data.eval.docs.x", toml::Value::Integer(1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.eval.docs") && err.contains("integer"),
            "{err}"
        );
        assert!(r.set("data..x", toml::Value::Integer(1)).is_err());
    }

    #[test]
    fn overrides_read_toml_values_or_plain_strings() {
        let (k, v) = parse_override("data.eval.docs=100").unwrap();
        assert_eq!((k.as_str(), v.as_integer()), ("data.eval.docs", Some(100)));
        assert_eq!(parse_value("0.5").as_float(), Some(0.5));
        assert_eq!(parse_value("true").as_bool(), Some(true));
        assert_eq!(parse_value("\"a b\"").as_str(), Some("a b"));
        assert_eq!(parse_value("models/a.gguf").as_str(), Some("models/a.gguf"));
        assert!(parse_override("no-equals").is_err());
        assert!(parse_override("=3").is_err());
    }

    #[test]
    fn malformed_toml_reports_line() {
        let err = Recipe::parse("[agent]\nkind = \"memagent\"\nchunk = = 3\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("r.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }
}
