//! The HTTP layer: one JSON POST with timeouts and retries, a bound on the requests in
//! flight, and the redaction of the API key from every message.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::wire;

/// Retry policy: `max_retries` further attempts after the first, waiting
/// `min(backoff_ms * 2^attempt, max_backoff_ms)` (times a deterministic factor in
/// `[1, 1.25)` when `jitter`, and at least a `Retry-After` the server sent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// First wait, in milliseconds.
    pub backoff_ms: u64,
    /// Longest wait, in milliseconds.
    pub max_backoff_ms: u64,
    /// Spread the waits of simultaneous failures (deterministic: from the request body).
    pub jitter: bool,
}

impl Retry {
    /// The wait before retry number `attempt` (0-based) of a request whose body hashes to
    /// `key`, given the server's `Retry-After` in seconds.
    pub fn delay(&self, attempt: u32, key: u64, retry_after_s: Option<u64>) -> Duration {
        let base = self
            .backoff_ms
            .saturating_mul(1u64 << attempt.min(40))
            .min(self.max_backoff_ms);
        let mut ms = if self.jitter {
            let u = memfactory_core::seed::derive_n(key, u64::from(attempt)) >> 11;
            let frac = u as f64 / (1u64 << 53) as f64; // [0, 1)
            base + (base as f64 * 0.25 * frac) as u64
        } else {
            base
        };
        if let Some(s) = retry_after_s {
            ms = ms.max(s.saturating_mul(1000).min(self.max_backoff_ms));
        }
        Duration::from_millis(ms)
    }
}

/// A counting semaphore bounding the HTTP requests in flight across all `generate` calls.
#[derive(Debug)]
pub struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

/// One held permit; released on drop.
pub struct Permit<'a>(&'a Permits);

impl Permits {
    /// `n` permits.
    pub fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.cv.notify_one();
    }
}

/// The client: base URL, optional bearer key, agent with timeouts, retry policy.
pub struct Client {
    /// Base URL without a trailing `/` or `/v1`.
    pub base: String,
    /// The same, with any `user:password@` replaced by `***@`, for messages.
    pub shown_base: String,
    key: Option<String>,
    agent: ureq::Agent,
    /// Retry policy.
    pub retry: Retry,
    /// Bound on requests in flight.
    pub permits: Permits,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.shown_base)
            .field("api_key", &self.key.as_ref().map(|_| "***"))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Why one call failed after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The message (URL, status, the server's words), key redacted.
    pub message: String,
}

/// `base_url` without `user:password@` and with secret query parameters (`?api_key=…`)
/// masked: what messages and descriptions show ([`memfactory_core::redact::mask_url`]).
pub fn hide_userinfo(url: &str) -> String {
    memfactory_core::redact::mask_url(url).into_owned()
}

/// True when `url`'s host is `localhost`, `127.x.x.x` or `[::1]`.
pub fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.starts_with("[::1]") {
        return true;
    }
    let host = host_port.split(':').next().unwrap_or("");
    host.eq_ignore_ascii_case("localhost") || host.starts_with("127.")
}

enum Attempt {
    Done(Value),
    Retry {
        status: Option<u16>,
        message: String,
        retry_after: Option<u64>,
    },
    Fail {
        status: Option<u16>,
        message: String,
    },
}

impl Client {
    /// A client for `base` (already normalised) with the given timeouts and policy.
    pub fn new(
        base: String,
        key: Option<String>,
        timeout: Duration,
        connect_timeout: Duration,
        retry: Retry,
        concurrency: usize,
    ) -> Self {
        let mut config = ureq::Agent::config_builder();
        if is_loopback(&base) {
            // A local server is never reached through an HTTP(S)_PROXY from the environment.
            config = config.proxy(None);
        }
        let agent: ureq::Agent = config
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            .timeout_per_call(Some(timeout))
            .max_idle_connections(concurrency.max(1))
            .max_idle_connections_per_host(concurrency.max(1))
            .user_agent(concat!("memfactory-lm-openai/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            shown_base: hide_userinfo(&base),
            base,
            key: key.filter(|k| !k.is_empty()),
            agent,
            retry,
            permits: Permits::new(concurrency.max(1)),
        }
    }

    /// Replaces every occurrence of the API key in `s` (a server may echo headers).
    pub fn redact(&self, s: &str) -> String {
        match &self.key {
            Some(k) if s.contains(k.as_str()) => s.replace(k.as_str(), "***"),
            _ => s.to_string(),
        }
    }

    fn attempt(&self, path: &str, body: &str) -> Attempt {
        let url = format!("{}{}", self.base, path);
        let shown = format!("POST {}{}", self.shown_base, path);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => {
                let retryable = matches!(
                    e,
                    ureq::Error::Io(_)
                        | ureq::Error::Timeout(_)
                        | ureq::Error::ConnectionFailed
                        | ureq::Error::HostNotFound
                        | ureq::Error::Protocol(_)
                        | ureq::Error::BodyStalled
                );
                let message = format!("{shown}: {}", describe_transport(&e));
                return if retryable {
                    Attempt::Retry {
                        status: None,
                        message,
                        retry_after: None,
                    }
                } else {
                    Attempt::Fail {
                        status: None,
                        message,
                    }
                };
            }
        };
        let status = resp.status();
        let code = status.as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut resp = resp;
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string();
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Retry {
                    status: Some(code),
                    message: format!(
                        "{shown}: HTTP {code}, reading the body failed: {}",
                        describe_transport(&e)
                    ),
                    retry_after,
                };
            }
        };
        if status.is_success() {
            return match serde_json::from_str::<Value>(&text) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Fail {
                    status: Some(code),
                    message: format!(
                        "{shown}: HTTP {code} but the body is not JSON ({e}): {}",
                        wire::short(&text)
                    ),
                },
            };
        }
        let reason = status.canonical_reason().unwrap_or("");
        let message = format!(
            "{shown}: HTTP {code} {reason}: {}",
            wire::error_message(&text)
        );
        if code == 429 || (500..=599).contains(&code) {
            Attempt::Retry {
                status: Some(code),
                message,
                retry_after,
            }
        } else {
            Attempt::Fail {
                status: Some(code),
                message,
            }
        }
    }

    /// POSTs `body` to `path`, retrying 429 / 5xx / transport failures; the returned
    /// message names the URL, the status and the number of attempts. Holds one permit
    /// per attempt (not during the backoff sleeps).
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let body = body.to_string();
        let key = memfactory_core::seed::fnv1a(body.as_bytes());
        let mut attempt = 0u32;
        let mut first: Option<String> = None;
        loop {
            let outcome = {
                let _permit = self.permits.acquire();
                self.attempt(path, &body)
            };
            match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail { status, message } => {
                    return Err(CallError {
                        status,
                        message: self.redact(&message),
                    });
                }
                Attempt::Retry {
                    status,
                    message,
                    retry_after,
                } => {
                    if attempt >= self.retry.max_retries {
                        let n = attempt + 1;
                        // The first failure tells what happened (e.g. a reset connection
                        // before the refused ones); keep it when it differs.
                        let earlier = match first {
                            Some(f) if f != message => format!("; first attempt: {f}"),
                            _ => String::new(),
                        };
                        return Err(CallError {
                            status,
                            message: self.redact(&format!(
                                "{message} (gave up after {n} attempt{}{earlier})",
                                if n == 1 { "" } else { "s" }
                            )),
                        });
                    }
                    if first.is_none() {
                        first = Some(message.clone());
                    }
                    std::thread::sleep(self.retry.delay(attempt, key, retry_after));
                    attempt += 1;
                }
            }
        }
    }
}

fn describe_transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_deterministically() {
        let mut r = Retry {
            max_retries: 4,
            backoff_ms: 500,
            max_backoff_ms: 3000,
            jitter: false,
        };
        let d: Vec<u64> = (0..5)
            .map(|a| r.delay(a, 1, None).as_millis() as u64)
            .collect();
        assert_eq!(d, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(r.delay(0, 1, Some(2)).as_millis(), 2000);
        assert_eq!(r.delay(0, 1, Some(60)).as_millis(), 3000);
        r.jitter = true;
        let a = r.delay(1, 7, None).as_millis();
        assert_eq!(a, r.delay(1, 7, None).as_millis());
        assert!((1000..1250).contains(&a), "{a}");
        let spread: std::collections::BTreeSet<u128> =
            (0..20).map(|k| r.delay(1, k, None).as_millis()).collect();
        assert!(spread.len() > 10, "{spread:?}");
    }

    #[test]
    fn userinfo_is_hidden() {
        assert_eq!(
            hide_userinfo("https://u:secret@host:8000/x"),
            "https://***@host:8000/x"
        );
        assert_eq!(
            hide_userinfo("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(hide_userinfo("http://h/p@q"), "http://h/p@q");
        assert_eq!(
            hide_userinfo("https://h:1/base?api_key=s3cret&x=1"),
            "https://h:1/base?api_key=***&x=1"
        );
    }

    #[test]
    fn loopback_hosts() {
        for u in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://u:p@LOCALHOST:1/v1",
            "http://[::1]:8000",
        ] {
            assert!(is_loopback(u), "{u}");
        }
        for u in [
            "http://10.0.0.1:8080",
            "https://api.openai.com",
            "http://127x.org",
        ] {
            assert!(!is_loopback(u), "{u}");
        }
    }
}
