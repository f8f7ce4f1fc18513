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

    /// The whole recipe as a [`Cfg`] rooted at the top level.
    pub fn cfg(&self) -> Cfg {
        Cfg::new("", self.root.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_toml_reports_line() {
        let err = Recipe::parse("[agent]\nkind = \"memagent\"\nchunk = = 3\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("r.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }
}
