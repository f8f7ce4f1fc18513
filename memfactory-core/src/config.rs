//! Typed, strict access to one component's TOML table.
//!
//! A component's `build` function reads its keys through a [`Cfg`]: each read names the key,
//! gives the default, and records the value actually used. [`Cfg::finish`] then rejects any
//! key the component did not read — naming the full key path — and returns the *resolved*
//! table (defaults filled in) that the run directory keeps.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// One component's table of a recipe, with its dotted key path.
#[derive(Debug, Clone)]
pub struct Cfg {
    path: String,
    table: toml::Table,
    used: BTreeSet<String>,
    resolved: toml::Table,
}

impl Cfg {
    /// Wraps `table`, found at dotted key path `path` (empty for the root).
    pub fn new(path: impl Into<String>, table: toml::Table) -> Self {
        Cfg {
            path: path.into(),
            table,
            used: BTreeSet::new(),
            resolved: toml::Table::new(),
        }
    }

    /// Wraps a value that must be a table; a string `"x"` is read as `{ kind = "x" }`.
    pub fn from_value(path: impl Into<String>, value: &toml::Value) -> Result<Self> {
        let path = path.into();
        match value {
            toml::Value::Table(t) => Ok(Cfg::new(path, t.clone())),
            toml::Value::String(s) => {
                let mut t = toml::Table::new();
                t.insert("kind".into(), toml::Value::String(s.clone()));
                Ok(Cfg::new(path, t))
            }
            other => Err(Error::config(
                path,
                format!(
                    "expected a table (or a kind name), found {}",
                    other.type_str()
                ),
            )),
        }
    }

    /// Dotted path of this table.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Dotted path of `key` inside this table.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    /// The table as written.
    pub fn table(&self) -> &toml::Table {
        &self.table
    }

    /// True when the table has `key` (read or not).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// A config error about `key`.
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::config(self.key(key), message)
    }

    fn convert<T: DeserializeOwned>(&self, key: &str, value: &toml::Value) -> Result<T> {
        T::deserialize(value.clone()).map_err(|e| {
            let shown = match value {
                toml::Value::String(s) => format!("string {s:?}"),
                toml::Value::Table(_) => "a table".to_string(),
                toml::Value::Array(_) => "an array".to_string(),
                v => format!("{} {}", v.type_str(), v),
            };
            let msg = e.to_string();
            let msg = msg.trim().trim_end_matches('.');
            self.error(key, format!("wrong type or value ({shown}): {msg}"))
        })
    }

    fn record<T: Serialize>(&mut self, key: &str, value: &T) {
        if let Ok(v) = toml::Value::try_from(value) {
            self.resolved.insert(key.to_string(), v);
        }
    }

    /// Reads `key`, or `default` when absent.
    pub fn get<T: DeserializeOwned + Serialize>(&mut self, key: &str, default: T) -> Result<T> {
        let v = self.opt(key)?.unwrap_or(default);
        self.record(key, &v);
        Ok(v)
    }

    /// Reads `key` when present.
    pub fn opt<T: DeserializeOwned + Serialize>(&mut self, key: &str) -> Result<Option<T>> {
        self.used.insert(key.to_string());
        match self.table.get(key) {
            None => Ok(None),
            Some(v) => {
                let v = v.clone();
                let t: T = self.convert(key, &v)?;
                self.record(key, &t);
                Ok(Some(t))
            }
        }
    }

    /// Reads a required `key`.
    pub fn req<T: DeserializeOwned + Serialize>(&mut self, key: &str) -> Result<T> {
        match self.opt(key)? {
            Some(v) => Ok(v),
            None => Err(self.error(key, "missing required key")),
        }
    }

    /// Reads `key` (default `default`) and checks `ok(value)`, else fails with `expected`.
    pub fn get_checked<T: DeserializeOwned + Serialize + std::fmt::Debug>(
        &mut self,
        key: &str,
        default: T,
        ok: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Result<T> {
        let v = self.get(key, default)?;
        if ok(&v) {
            Ok(v)
        } else {
            Err(self.error(key, format!("expected {expected}, found {v:?}")))
        }
    }

    /// Reads the string `key` (default `default`), which must be one of `allowed`; the
    /// error lists them. Returns the matching entry of `allowed`.
    pub fn choice(
        &mut self,
        key: &str,
        default: &str,
        allowed: &[&'static str],
    ) -> Result<&'static str> {
        let v: String = self.get(key, default.to_string())?;
        match allowed.iter().find(|a| **a == v) {
            Some(a) => Ok(a),
            None => Err(self.error(
                key,
                format!(
                    "expected {}, found {v:?}",
                    allowed
                        .iter()
                        .map(|a| format!("{a:?}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    }

    /// An agent's `paths` key: independent episodes per sample (avg@k), 1..=1024, default 1.
    pub fn paths(&mut self) -> Result<usize> {
        self.get_checked(
            "paths",
            1usize,
            |n| (1..=1024).contains(n),
            "1..=1024 paths",
        )
    }

    /// [`Cfg::sub`], or an empty table at `key` when it is absent.
    pub fn sub_or_empty(&mut self, key: &str) -> Result<Cfg> {
        Ok(self
            .sub(key)?
            .unwrap_or_else(|| Cfg::new(self.key(key), toml::Table::new())))
    }

    /// Reads the raw value of `key` (marking it as read) without recording it; the caller
    /// records the resolved form with [`Cfg::set_resolved`].
    pub fn raw(&mut self, key: &str) -> Option<toml::Value> {
        self.used.insert(key.to_string());
        self.table.get(key).cloned()
    }

    /// Takes the sub-table at `key` as its own [`Cfg`] (a string is read as `{ kind = .. }`).
    pub fn sub(&mut self, key: &str) -> Result<Option<Cfg>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => Cfg::from_value(self.key(key), &v).map(Some),
        }
    }

    /// Records the resolved value of `key` (for sub-tables built elsewhere).
    pub fn set_resolved(&mut self, key: &str, value: toml::Value) {
        self.resolved.insert(key.to_string(), value);
    }

    /// Checks the generation budgets resolved so far in this table (see
    /// [`check_token_budgets`]) against the context of `lm`, the model that generates for
    /// it; nothing to check when `lm` does not know its context.
    pub fn check_budgets(&self, lm: &dyn crate::LanguageModel) -> Result<()> {
        match lm.context_length() {
            Some(context) => check_token_budgets(&self.resolved, &self.path, context),
            None => Ok(()),
        }
    }

    /// Ends reading: fails on the first key nobody read, else returns the resolved table.
    pub fn finish(self) -> Result<toml::Table> {
        let unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.used.contains(k.as_str()))
            .collect();
        if let Some(k) = unknown.first() {
            let mut known: Vec<&str> = self.used.iter().map(|s| s.as_str()).collect();
            known.sort();
            return Err(self.error(
                k,
                format!(
                    "unknown key (this table accepts: {})",
                    if known.is_empty() {
                        "no keys".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        Ok(self.resolved)
    }
}

/// The recipe key of a generation budget: every component names its cap on generated tokens
/// `max_new_tokens`, so that [`check_token_budgets`] finds them all in a resolved recipe.
pub const BUDGET_KEY: &str = "max_new_tokens";

/// Checks every generation budget ([`BUDGET_KEY`], an integer) in the resolved `table`
/// found at dotted key path `path` — in the table itself, its sub-tables and its arrays of
/// tables — against `context`, the context length of the model that generates for it. A
/// sub-table with its own `model` table is skipped: that model generates for it, and
/// [`crate::op::model_from_cfg`] checks it against that one. Fails on the first budget over
/// the context, naming its full key.
pub fn check_token_budgets(table: &toml::Table, path: &str, context: usize) -> Result<()> {
    let key = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    if let Some(toml::Value::Integer(n)) = table.get(BUDGET_KEY)
        && let Ok(n) = usize::try_from(*n)
        && n > context
    {
        return Err(crate::lm::budget_exceeds_context(
            key(BUDGET_KEY),
            n,
            context,
        ));
    }
    let own_model = |t: &toml::Table| matches!(t.get("model"), Some(toml::Value::Table(_)));
    for (k, v) in table {
        match v {
            toml::Value::Table(t) if !own_model(t) => check_token_budgets(t, &key(k), context)?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item
                        && !own_model(t)
                    {
                        check_token_budgets(t, &format!("{}[{i}]", key(k)), context)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads sampling keys (`max_new_tokens`, `temperature`, `top_k`, `top_p`, `stop`) from
/// `cfg`, with the given default token budget; ranges are checked.
pub fn sampling_from_cfg(
    cfg: &mut Cfg,
    default_max_new_tokens: usize,
) -> Result<crate::SamplingParams> {
    Ok(crate::SamplingParams {
        max_new_tokens: cfg.get_checked(
            "max_new_tokens",
            default_max_new_tokens,
            |n| *n > 0,
            "a positive token count",
        )?,
        temperature: cfg.get_checked(
            "temperature",
            0.0f32,
            |t| t.is_finite() && *t >= 0.0,
            "a temperature >= 0 (0 = greedy)",
        )?,
        top_k: cfg.get("top_k", 0usize)?,
        top_p: cfg.get_checked(
            "top_p",
            1.0f32,
            |p| *p > 0.0 && *p <= 1.0,
            "a probability in (0, 1]",
        )?,
        stop: cfg.get("stop", Vec::<String>::new())?,
        seed: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(src: &str) -> Cfg {
        Cfg::new("agent", toml::from_str(src).unwrap())
    }

    #[test]
    fn defaults_are_resolved_and_unknown_keys_rejected() {
        let mut c = cfg("chunk_tokens = 10\nbogus = 1");
        assert_eq!(c.get("chunk_tokens", 5usize).unwrap(), 10);
        assert_eq!(c.get("paths", 1usize).unwrap(), 1);
        let err = c.finish().unwrap_err().to_string();
        assert!(err.contains("`agent.bogus`"), "{err}");
        assert!(err.contains("chunk_tokens, paths"), "{err}");

        let mut c = cfg("chunk_tokens = 10");
        c.get("chunk_tokens", 5usize).unwrap();
        c.get("paths", 2usize).unwrap();
        let t = c.finish().unwrap();
        assert_eq!(t["paths"].as_integer(), Some(2));
    }

    #[test]
    fn budgets_over_the_context_are_rejected_with_their_key() {
        let t: toml::Table = toml::from_str(
            r#"
            max_new_tokens = 64
            [update]
            max_new_tokens = 100
            [answer]
            max_new_tokens = 1000000
            [own]
            max_new_tokens = 1000000
            model = { kind = "burn", path = "big" }
            [[metrics]]
            max_new_tokens = 5000
            "#,
        )
        .unwrap();
        let err = check_token_budgets(&t, "agent", 4096).unwrap_err();
        assert!(err.is_user_error());
        let msg = err.to_string();
        assert!(msg.contains("`agent.answer.max_new_tokens`"), "{msg}");
        assert!(
            msg.contains("1000000 exceeds the model's context of 4096"),
            "{msg}"
        );
        // A table with its own model is left to that model's check.
        let mut t2 = t.clone();
        t2.remove("answer");
        let err = check_token_budgets(&t2, "agent", 4096)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`agent.metrics[0].max_new_tokens`"), "{err}");
        t2.remove("metrics");
        check_token_budgets(&t2, "agent", 4096).unwrap();
        // The table's own budget, and a nested one.
        let err = check_token_budgets(&t2, "", 99).unwrap_err().to_string();
        assert!(
            err.contains("`update.max_new_tokens`: 100 exceeds"),
            "{err}"
        );
        let err = check_token_budgets(&t2, "", 63).unwrap_err().to_string();
        assert!(err.contains("`max_new_tokens`: 64 exceeds"), "{err}");
        check_token_budgets(&t2, "", 100).unwrap();
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let mut c = cfg("chunk_tokens = \"big\"");
        let err = c.get("chunk_tokens", 5usize).unwrap_err().to_string();
        assert!(err.contains("agent.chunk_tokens"), "{err}");
        assert!(err.contains("\"big\""), "{err}");
        let mut c = cfg("chunk_tokens = -3");
        assert!(c.get("chunk_tokens", 5usize).is_err());
    }
}
