//! Recipes: a TOML document naming components by `kind`.
//!
//! Parsing errors report the line and column; the sections are read by the `memfactory`
//! facade, which builds each component through the registry.

use std::io::Read;
use std::path::Path;

use crate::{Cfg, Error, Result};

/// The largest recipe file read (a recipe is a few kilobytes; this keeps `check /dev/zero`
/// or a multi-gigabyte file named by mistake from exhausting memory).
pub const MAX_RECIPE_BYTES: u64 = 16 << 20;

const RECIPE_FILE: &str = "a recipe file (TOML)";

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
    /// Reads and parses the recipe file at `path`. A missing or unreadable path, a
    /// directory, a file over [`MAX_RECIPE_BYTES`] are the user's [`Error::Path`]; bytes
    /// that are not UTF-8 are an [`Error::Toml`] at their line and column.
    pub fn from_file(path: &Path) -> Result<Recipe> {
        let file = path.display().to_string();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_RECIPE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| Error::user_io(path, e, RECIPE_FILE))?;
        if bytes.len() as u64 > MAX_RECIPE_BYTES {
            return Err(Error::path(
                path,
                format!(
                    "larger than {} MiB, expected {RECIPE_FILE}",
                    MAX_RECIPE_BYTES >> 20
                ),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let before = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let (line, column) = line_col(&before, valid);
            Error::Toml {
                file: file.clone(),
                line,
                column,
                message: format!(
                    "not UTF-8 text (byte 0x{:02x} at offset {valid}); a recipe is UTF-8 TOML",
                    e.as_bytes()[valid]
                ),
            }
        })?;
        Recipe::parse(&text, &file)
    }

    /// Parses recipe text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Recipe> {
        match text.parse::<toml::Table>() {
            Ok(root) => Ok(Recipe {
                file: file.to_string(),
                root,
            }),
            Err(e) => {
                // Every error of the toml parser has a span; the end of the text otherwise.
                let at = e.span().map_or(text.len(), |s| s.start);
                let (line, column) = line_col(text, at);
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
    fn recipe_files_that_are_not_recipes_are_user_errors_naming_the_path() {
        let dir = std::env::temp_dir().join(format!("mf-recipe-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.toml")).unwrap();
        std::fs::write(dir.join("latin1.toml"), b"[run]\nname = \"caf\xe9\"\n").unwrap();
        std::fs::write(dir.join("ok.toml"), "[run]\nname = \"a\"\n").unwrap();
        let cases = [
            ("sub.toml", "is a directory, expected a recipe file"),
            ("absent.toml", "not found, expected a recipe file"),
            ("ok.toml/x.toml", "is a file, not a directory"),
            (
                "latin1.toml",
                "line 2, column 12: not UTF-8 text (byte 0xe9",
            ),
        ];
        for (name, want) in cases {
            let e = Recipe::from_file(&dir.join(name)).unwrap_err();
            let text = e.to_string();
            assert!(e.is_user_error(), "{name}: {text}");
            assert!(text.contains(name) && text.contains(want), "{name}: {text}");
        }
        let r = Recipe::from_file(&dir.join("ok.toml")).unwrap();
        assert_eq!(r.root["run"]["name"].as_str(), Some("a"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A recipe that every mutation starts from.
    const VALID: &str = r#"[run]
name = "smoke"
seed = 7

[model]
kind = "scripted"
rules = [
  { contains = ["a"], reply = "b" },
]

[agent]
kind = "memagent"
chunk_tokens = 40

[agent.update]
kind = "overwrite"
memory_tokens = 64

[data.eval]
kind = "memagent-json"
path = "data.jsonl"

[eval]
metrics = ["sub-em", "f1"]
"#;

    /// TOML-ish pieces a mutation splices in.
    const PIECES: &[&str] = &[
        "=",
        "==",
        "[",
        "]",
        "[[",
        "{",
        "}",
        "\"",
        "'''",
        "\"\"\"",
        "#",
        ",",
        ".",
        "\n",
        "\\",
        "nan",
        "-inf",
        "1e999",
        "-1",
        "9223372036854775808",
        "1000000000000",
        "0x",
        "1979-05-27",
        "\u{0}",
        "\u{feff}",
        "é",
        "[agent]",
        "[[agent]]",
        "kind = 3",
        "a.b.c = 1",
        "x = {",
        "\"\\u00\"",
        "\"\\uD800\"",
        "'",
        "[run.name]",
        "name = \"../../x\"",
    ];

    /// [`Recipe::parse`] either parses (and then overrides work or name their key) or gives
    /// an [`Error::Toml`] naming the file and a 1-based line and column inside the text.
    fn check_parse(text: &str) {
        match Recipe::parse(text, "r.toml") {
            Ok(mut r) => {
                if let Err(e) = r.set("agent.update.memory_tokens", toml::Value::Integer(1)) {
                    assert!(matches!(e, Error::Config { .. }), "{e}");
                    assert!(e.to_string().contains("recipe key `agent"), "{e}");
                }
            }
            Err(Error::Toml {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!(file, "r.toml");
                let lines = text.split('\n').count();
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of {lines}: {message}"
                );
                assert!(column >= 1, "column {column}: {message}");
                assert!(!message.is_empty());
            }
            Err(other) => panic!("parse gave a non-TOML error: {other}"),
        }
    }

    /// One edit of a recipe's text.
    #[derive(Debug, Clone)]
    enum Mutation {
        Insert(usize, String),
        Delete(usize, usize),
        Truncate(usize),
        DropLine(usize),
        DupLine(usize),
        SwapLines(usize, usize),
        ReplaceValue(usize, String),
    }

    /// The char boundary at or before `i % (len + 1)`.
    fn boundary(t: &str, i: usize) -> usize {
        let mut i = i % (t.len() + 1);
        while !t.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    fn mutate(text: &str, ms: &[Mutation]) -> String {
        let mut t = text.to_string();
        for m in ms {
            let mut lines: Vec<String> = t.split('\n').map(str::to_string).collect();
            let n = lines.len();
            match m {
                Mutation::Insert(i, s) => {
                    let i = boundary(&t, *i);
                    t.insert_str(i, s);
                    continue;
                }
                Mutation::Delete(i, len) => {
                    let a = boundary(&t, *i);
                    let b = boundary(&t, a + len % 8).max(a);
                    t.replace_range(a..b, "");
                    continue;
                }
                Mutation::Truncate(i) => {
                    let i = boundary(&t, *i);
                    t.truncate(i);
                    continue;
                }
                Mutation::DropLine(i) => {
                    lines.remove(i % n);
                }
                Mutation::DupLine(i) => {
                    let l = lines[i % n].clone();
                    lines.insert(i % n, l);
                }
                Mutation::SwapLines(i, j) => lines.swap(i % n, j % n),
                Mutation::ReplaceValue(i, v) => {
                    if let Some((key, _)) = lines[i % n].split_once('=') {
                        lines[i % n] = format!("{key}= {v}");
                    }
                }
            }
            t = lines.join("\n");
        }
        t
    }

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            proptest::sample::select(PIECES).prop_map(str::to_string),
            any::<String>(),
            "[a-z_.]{1,8} = [-0-9.e+]{0,24}",
        ];
        prop_oneof![
            (any::<usize>(), piece.clone()).prop_map(|(i, s)| Mutation::Insert(i, s)),
            (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
            any::<usize>().prop_map(Mutation::Truncate),
            any::<usize>().prop_map(Mutation::DropLine),
            any::<usize>().prop_map(Mutation::DupLine),
            (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::SwapLines(i, j)),
            (any::<usize>(), piece).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_parses_or_names_line_and_column(
            text in proptest::prelude::any::<String>()
        ) {
            check_parse(&text);
        }

        #[test]
        fn mutated_recipes_parse_or_name_line_and_column(
            ms in proptest::collection::vec(mutation(), 1..6)
        ) {
            check_parse(&mutate(VALID, &ms));
        }

        #[test]
        fn arbitrary_overrides_apply_or_name_their_key(arg in ".{0,40}") {
            let mut r = Recipe::parse(VALID, "r.toml").unwrap();
            let result = parse_override(&arg).and_then(|(k, v)| r.set(&k, v));
            if let Err(e) = result {
                proptest::prop_assert!(matches!(e, Error::Config { .. }), "{}", e);
            }
        }
    }

    #[test]
    fn the_mutated_recipe_parses_unmutated() {
        Recipe::parse(VALID, "r.toml").unwrap();
        assert_eq!(mutate(VALID, &[]), VALID);
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
