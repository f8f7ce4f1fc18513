//! A real `llama-server` for tests.
//!
//! Needs `MEMFACTORY_LLAMA_SERVER` (the binary; `benches/scripts/build_llama_server.sh`
//! builds it, `.ci/run` exports it) and the model from `MEMFACTORY_SMOLLM2_GGUF` or
//! `models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf` under the workspace root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One server at a time per test binary: the machine may have two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the per-binary lock for as long as a test uses a server.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `llama-server`, killed (and reaped) on drop.
pub struct Server {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Kills the server now (the fault tests stop it mid-run).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `http://127.0.0.1:PORT` (append `/v1` for the OpenAI routes).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // Keep the log of a failed test for inspection.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The workspace root: the nearest directory holding a `Cargo.toml` with a `[workspace]`
/// table, searched upwards from the crate under test (`cargo test` sets `CARGO_MANIFEST_DIR`
/// when it runs a test) and else from this crate's directory at build time. The run-time value
/// comes first because a build cache shared between two checkouts can hold a testkit compiled
/// in the other one.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// The server binary and the SmolLM2 GGUF, or `None` after printing why the test skips.
pub fn inputs() -> Option<(PathBuf, PathBuf)> {
    let Some(bin) = std::env::var_os("MEMFACTORY_LLAMA_SERVER").map(PathBuf::from) else {
        println!(
            "skipped: MEMFACTORY_LLAMA_SERVER is not set (build llama-server with \
             benches/scripts/build_llama_server.sh and export its path)"
        );
        return None;
    };
    if !bin.is_file() {
        println!(
            "skipped: MEMFACTORY_LLAMA_SERVER={} is not a file",
            bin.display()
        );
        return None;
    }
    let model = std::env::var_os("MEMFACTORY_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if !model.is_file() {
        println!(
            "skipped: no SmolLM2 GGUF at {} (set MEMFACTORY_SMOLLM2_GGUF)",
            model.display()
        );
        return None;
    }
    Some((bin, model))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free local port: {e}"))
}

/// Starts `bin` serving `model` on a free local port — a context of `ctx` tokens shared by
/// `parallel` slots, 2 threads — and waits until `/health` answers 200 (at most 180 s).
pub fn start(bin: &Path, model: &Path, ctx: usize, parallel: usize) -> Server {
    start_with(bin, model, ctx, parallel, std::iter::empty::<&str>())
}

/// [`start`] with further command-line arguments after ours (e.g. `--jinja`,
/// `--chat-template-file FILE`); a flag given twice takes its last value in llama-server.
pub fn start_with<I, S>(bin: &Path, model: &Path, ctx: usize, parallel: usize, extra: I) -> Server
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let port = free_port();
    let log = std::env::temp_dir().join(format!("memfactory-llama-server-{port}.log"));
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let child = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-c", &ctx.to_string(), "-t", "2"])
        .args(["--parallel", &parallel.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut server = Server {
        child: Some(child),
        port,
        log,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let t = Instant::now();
    loop {
        if let Ok(r) = agent.get(format!("{}/health", server.url())).call()
            && r.status() == 200
        {
            return server;
        }
        if let Some(c) = server.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("llama-server exited with {status}:\n{}", server.log_text());
        }
        if t.elapsed() > Duration::from_secs(180) {
            server.kill();
            panic!(
                "llama-server not healthy after 180 s:\n{}",
                server.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
