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
    /// A file or directory the user named (recipe, data file, checkpoint, run directory)
    /// is missing or is not what was expected.
    #[error("{}: {message}", path.display())]
    Path {
        /// The path as the user gave it.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A training step failed: `inner` says why, `hint` how to continue. Keeps the inner
    /// error's classification ([`Error::is_user_error`]), so a recipe or data error met
    /// during a rollout still exits with code 2.
    #[error("step {step} failed: {inner}; {hint}")]
    Step {
        /// The step that failed (1-based).
        step: usize,
        /// What to do next, e.g. the last good checkpoint and `--resume`.
        hint: String,
        /// Why.
        #[source]
        inner: Box<Error>,
    },
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

    /// The error for a failed read of data file `path`: a missing, unreadable or non-UTF-8
    /// file, or a directory where a file was expected, is the user's [`Error::Data`];
    /// anything else stays an [`Error::Io`].
    pub fn data_read(path: &std::path::Path, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Error::data(path, None, "file not found");
        }
        match user_fault(&e, "a data file") {
            Some(m) => Error::data(path, None, m),
            None => Error::io(path, e),
        }
    }

    /// The error for a failed read of `path`, a file or directory the user named that
    /// should be `expected` (e.g. "a recipe file (TOML)"): a missing, unreadable or
    /// non-UTF-8 file, or a directory where a file was expected (and the other way round),
    /// is the user's [`Error::Path`] naming the path and what was expected; anything else
    /// stays an [`Error::Io`].
    pub fn user_io(path: &std::path::Path, e: std::io::Error, expected: &str) -> Self {
        match user_fault(&e, expected) {
            Some(message) => Error::Path {
                path: path.to_path_buf(),
                message,
            },
            None => Error::io(path, e),
        }
    }

    /// Shorthand for an [`Error::Path`].
    pub fn path(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Path {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A training step's failure, keeping `inner`'s classification.
    pub fn step(step: usize, hint: impl Into<String>, inner: Error) -> Self {
        Error::Step {
            step,
            hint: hint.into(),
            inner: Box::new(inner),
        }
    }

    /// Shorthand for an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the user's input (recipe, data, model file, a path given on the command
    /// line) is at fault: the CLI exits 2. An [`Error::Io`] is the user's when its path is
    /// missing, unreadable, not UTF-8 text, or a file where a directory was expected (or
    /// the other way round); a [`Error::Step`] is classified by its inner error.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Toml { .. }
            | Error::Config { .. }
            | Error::UnknownKind { .. }
            | Error::Data { .. }
            | Error::Model { .. }
            | Error::Template { .. }
            | Error::Path { .. } => true,
            Error::Io { source, .. } => user_fault(source, "").is_some(),
            Error::Step { inner, .. } => inner.is_user_error(),
            Error::Registry(_) | Error::Backend { .. } | Error::Invalid(_) => false,
        }
    }
}

/// What is wrong, when an IO error on a path the user named is the user's fault: the path
/// is missing, unreadable, not UTF-8 text, a directory where `expected` (a file) was
/// wanted, or goes through a file as if it were a directory.
fn user_fault(e: &std::io::Error, expected: &str) -> Option<String> {
    use std::io::ErrorKind as K;
    let want = if expected.is_empty() {
        String::new()
    } else {
        format!(", expected {expected}")
    };
    let what = match e.kind() {
        K::NotFound => "not found",
        K::IsADirectory => "is a directory",
        K::NotADirectory => "a part of this path is a file, not a directory",
        K::PermissionDenied => "permission denied",
        K::InvalidData => return Some(format!("not UTF-8 text ({e}){want}")),
        _ => return None,
    };
    Some(format!("{what}{want}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as K;
    use std::path::Path;

    #[test]
    fn io_errors_on_user_paths_are_user_errors_naming_what_was_expected() {
        let p = Path::new("runs/x");
        for (kind, want) in [
            (
                K::NotFound,
                "runs/x: not found, expected a checkpoint directory",
            ),
            (
                K::IsADirectory,
                "runs/x: is a directory, expected a checkpoint directory",
            ),
            (K::NotADirectory, "runs/x: a part of this path is a file"),
            (K::PermissionDenied, "runs/x: permission denied, expected"),
        ] {
            let e = Error::user_io(p, std::io::Error::from(kind), "a checkpoint directory");
            assert!(e.is_user_error(), "{kind:?}");
            assert!(e.to_string().starts_with(want), "{kind:?}: {e}");
            // The same failure raised as a plain Io error is the user's too.
            assert!(
                Error::io(p, std::io::Error::from(kind)).is_user_error(),
                "{kind:?}"
            );
        }
        let e = Error::user_io(p, std::io::Error::from(K::WriteZero), "a file");
        assert!(matches!(e, Error::Io { .. }) && !e.is_user_error());
        let d = Error::data_read(p, std::io::Error::from(K::IsADirectory));
        assert!(matches!(d, Error::Data { .. }) && d.is_user_error(), "{d}");
        assert!(d.to_string().contains("expected a data file"), "{d}");
    }

    #[test]
    fn a_failed_step_keeps_its_inner_errors_classification() {
        let user = Error::step(
            3,
            "resume with --resume",
            Error::config("data.train.path", "bad"),
        );
        assert!(user.is_user_error());
        let text = user.to_string();
        assert!(
            text.contains("step 3 failed") && text.contains("data.train.path"),
            "{text}"
        );
        let infra = Error::step(3, "resume", Error::backend("burn", "out of memory"));
        assert!(!infra.is_user_error());
        assert!(std::error::Error::source(&infra).is_some());
    }
}
