//! The crate-wide error type. Every library crate of MemFactory returns [`Result`].
//!
//! Errors split in two: *user errors* (a recipe, data file or model file the user gave is
//! wrong — the CLI exits with code 2) and *infrastructure errors* (IO failure, backend
//! failure — exit code 1). Malformed **model output** is never an error: it is recorded on
//! the episode step and penalised by a format reward.

use std::path::PathBuf;

/// Result alias used across MemFactory.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in MemFactory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A recipe could not be parsed as TOML.
    #[error("{file}: malformed TOML at line {line}, column {column}: {message}")]
    Toml {
        /// The recipe file (or `<string>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A recipe key has a bad value, is missing, or is not known.
    #[error("recipe key `{key}`: {message}")]
    Config {
        /// Dotted key path, e.g. `agent.update.memory_tokens`.
        key: String,
        /// What was expected.
        message: String,
    },
    /// A recipe names a component kind that is not linked into this binary.
    #[error(
        "recipe key `{key}`: unknown {family} kind `{kind}`. Available {family} kinds: {available}. {hint}"
    )]
    UnknownKind {
        /// Dotted key path of the `kind` key.
        key: String,
        /// Component family (`op`, `store`, ...).
        family: String,
        /// The kind the recipe asked for.
        kind: String,
        /// Comma-separated list of the registered kinds.
        available: String,
        /// How to get it (feature name, closest match).
        hint: String,
    },
    /// A data file is missing or malformed.
    #[error("data file {}{}: {message}", path.display(), location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    Data {
        /// The file.
        path: PathBuf,
        /// Line, record index or JSON path inside it, when known.
        location: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A model file (weights, tokenizer, GGUF) is missing, corrupt or unsupported.
    #[error("model {}: {message}", path.display())]
    Model {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A template (prompt or chat template) is malformed.
    #[error("template {name}: {message}")]
    Template {
        /// Template name or file.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The registry itself is inconsistent (two crates registered the same kind).
    #[error("registry: {0}")]
    Registry(String),
    /// An IO failure on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A backend (LM engine, store server) failed.
    #[error("{component}: {message}")]
    Backend {
        /// Which component.
        component: String,
        /// What failed.
        message: String,
    },
    /// A caller broke an API contract (wrong batch length, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    /// Shorthand for a [`Error::Config`].
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a [`Error::Data`].
    pub fn data(
        path: impl Into<PathBuf>,
        location: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Data {
            path: path.into(),
            location,
            message: message.into(),
        }
    }

    /// Shorthand for a [`Error::Model`].
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a [`Error::Backend`].
    pub fn backend(component: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            component: component.into(),
            message: message.into(),
        }
    }

    /// The error for a failed read of data file `path`: a missing or non-UTF-8 file is the
    /// user's [`Error::Data`]; anything else stays an [`Error::Io`].
    pub fn data_read(path: &std::path::Path, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::data(path, None, "file not found"),
            std::io::ErrorKind::InvalidData => {
                Error::data(path, None, format!("not UTF-8 text: {e}"))
            }
            _ => Error::io(path, e),
        }
    }

    /// Shorthand for an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the user's input (recipe, data, model file) is at fault: the CLI exits 2.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Toml { .. }
                | Error::Config { .. }
                | Error::UnknownKind { .. }
                | Error::Data { .. }
                | Error::Model { .. }
                | Error::Template { .. }
        ) || matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
