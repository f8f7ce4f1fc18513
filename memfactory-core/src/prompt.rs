//! Prompt templates with `{name}` placeholders (MemAgent-style prompt files).
//!
//! Only the declared placeholder names are substituted; any other braces (`\boxed{}`) are
//! left as they are. Templates are checked when a component is built: every required
//! placeholder must occur.

use crate::{Error, Result};

/// A checked prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    name: String,
    text: String,
    names: Vec<&'static str>,
}

impl PromptTemplate {
    /// Checks that `text` contains `{p}` for each `p` in `required`; `names` are all the
    /// placeholders that [`render`](Self::render) will substitute.
    pub fn new(
        name: impl Into<String>,
        text: impl Into<String>,
        names: &[&'static str],
        required: &[&'static str],
    ) -> Result<Self> {
        let name = name.into();
        let text = text.into();
        let missing: Vec<String> = required
            .iter()
            .filter(|p| !text.contains(&format!("{{{p}}}")))
            .map(|p| format!("{{{p}}}"))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Template {
                name,
                message: format!(
                    "missing placeholder(s) {} (available: {})",
                    missing.join(", "),
                    names
                        .iter()
                        .map(|n| format!("{{{n}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(PromptTemplate {
            name,
            text,
            names: names.to_vec(),
        })
    }

    /// The template's name (file path or `default:<x>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw template text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Substitutes each `{name}` with its value in one pass (values are not re-scanned).
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.text.len() + 256);
        let mut rest = self.text.as_str();
        'outer: while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            for n in &self.names {
                if after.starts_with(n) && after[n.len()..].starts_with('}') {
                    let v = vars.iter().find(|(k, _)| k == n).map_or("", |(_, v)| *v);
                    out.push_str(v);
                    rest = &after[n.len() + 1..];
                    continue 'outer;
                }
            }
            out.push('{');
            rest = after;
        }
        out.push_str(rest);
        out
    }
}

/// Reads the optional template-file key `key` of `cfg` (a path, relative to the working
/// directory); absent → `default` (recorded as `default:<key>` in the resolved recipe).
/// This and nothing else in `memfactory-core` touches the filesystem.
pub fn template_from_cfg(
    cfg: &mut crate::Cfg,
    key: &str,
    default: &str,
    names: &[&'static str],
    required: &[&'static str],
) -> Result<PromptTemplate> {
    match cfg.opt::<String>(key)? {
        None => PromptTemplate::new(format!("default:{key}"), default, names, required),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| cfg.error(key, format!("cannot read template file `{path}`: {e}")))?;
            PromptTemplate::new(path, text, names, required)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_and_keeps_other_braces() {
        let t = PromptTemplate::new(
            "t",
            "Q: {problem}\n\\boxed{} {x}",
            &["problem"],
            &["problem"],
        )
        .unwrap();
        assert_eq!(
            t.render(&[("problem", "why {problem}?")]),
            "Q: why {problem}?\n\\boxed{} {x}"
        );
        let err = PromptTemplate::new("f.txt", "no slots", &["problem", "memory"], &["memory"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.txt") && err.contains("{memory}"), "{err}");
    }
}
