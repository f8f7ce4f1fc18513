//! The backend against an in-process mock HTTP/1.1 server (hand-written responses): request
//! fields, retries, errors, timeouts, key hygiene, response dialects, the concurrency bound
//! and partial batch failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memfactory_core::lm::ChatMessage;
use memfactory_core::{Cfg, Finish, GenRequest, LanguageModel, Prompt, SamplingParams, registry};
use memfactory_lm_openai::{OpenAiConfig, OpenAiLm, Retry, ServerKind};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    headers: Vec<(&'static str, String)>,
}

fn ok(body: Value) -> Reply {
    Reply {
        status: 200,
        body: body.to_string(),
        delay: Duration::ZERO,
        headers: Vec::new(),
    }
}

fn status(code: u16, body: &str) -> Reply {
    Reply {
        status: code,
        body: body.to_string(),
        delay: Duration::ZERO,
        headers: Vec::new(),
    }
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

struct Mock {
    url: String,
    log: Arc<Mutex<Vec<Req>>>,
    max_active: Arc<AtomicUsize>,
}

impl Mock {
    fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicUsize::new(0));
        let max_active = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (l, a, m) = (log.clone(), active.clone(), max_active.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (l, a, m, h) = (l.clone(), a.clone(), m.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, &*h, &l, &a, &m));
            }
        });
        Mock {
            url,
            log,
            max_active,
        }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

fn serve(
    stream: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Req>>,
    active: &AtomicUsize,
    max_active: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let req = Req {
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
    max_active.fetch_max(now, Ordering::SeqCst);
    let reply = handler(&req);
    std::thread::sleep(reply.delay);
    active.fetch_sub(1, Ordering::SeqCst);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

/// A llama-server-shaped chat / completion answer echoing the prompt's last message.
fn llama_answer(req: &Req) -> Value {
    let text = req.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .or_else(|| req.body["prompt"].as_str())
        .unwrap_or("?")
        .to_string();
    // `bytes`: the token's UTF-8 bytes, as llama-server sends them (the backend records
    // them as the text where they differ from the message content).
    let lp = json!({"content": [
        {"id": 10, "token": text, "bytes": text.as_bytes(), "logprob": -0.5, "top_logprobs": []},
        {"id": 2, "token": "", "bytes": [], "logprob": -0.25, "top_logprobs": []}
    ]});
    if req.path == "/v1/chat/completions" {
        json!({"choices": [{"index": 0, "finish_reason": "stop", "logprobs": lp,
            "message": {"role": "assistant", "content": text}}]})
    } else {
        json!({"choices": [{"index": 0, "finish_reason": "stop", "logprobs": lp,
            "text": text}]})
    }
}

fn config(url: &str) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(url, "test-model");
    c.server = ServerKind::LlamaServer;
    c.retry = Retry {
        max_retries: 4,
        backoff_ms: 5,
        max_backoff_ms: 50,
        jitter: false,
    };
    c.timeout = Duration::from_secs(10);
    c
}

fn chat(text: &str) -> GenRequest {
    GenRequest {
        prompt: Prompt::Chat(vec![ChatMessage::user(text)]),
        params: SamplingParams::greedy(16),
    }
}

const KEY: &str = "sk-test-SECRET-0123456789";

#[test]
fn request_fields_auth_and_llama_server_parsing() {
    let mock = Mock::start(|r| ok(llama_answer(r)));
    let lm = OpenAiLm::new(config(&format!("{}/v1/", mock.url)), Some(KEY.into())).unwrap();
    let mut req = chat("hello");
    req.params = SamplingParams {
        max_new_tokens: 12,
        temperature: 0.7,
        top_k: 20,
        top_p: 0.95,
        stop: vec!["###".into()],
        seed: 42,
    };
    let text = GenRequest {
        prompt: Prompt::Text("Once upon".into()),
        params: SamplingParams::greedy(5),
    };
    let g = lm.generate(&[req, text]).unwrap();
    assert_eq!(g[0].text, "hello");
    assert_eq!(g[0].token_ids, vec![10, 2]);
    assert_eq!(g[0].logprobs, vec![-0.5, -0.25]);
    assert_eq!(g[0].finish, Finish::Eos); // last token is a control token
    assert!(g[0].prompt_ids.is_empty()); // tokenize = false
    assert_eq!(g[1].text, "Once upon");

    let reqs = mock.requests();
    let c = reqs
        .iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        c.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(c.header("content-type"), Some("application/json"));
    let b = &c.body;
    assert_eq!(b["model"], "test-model");
    assert_eq!(b["messages"], json!([{"role": "user", "content": "hello"}]));
    assert_eq!(b["max_tokens"], 12);
    assert_eq!(b["temperature"].as_f64().unwrap() as f32, 0.7);
    assert_eq!(b["top_p"].as_f64().unwrap() as f32, 0.95);
    assert_eq!(b["top_k"], 20);
    assert_eq!(b["seed"], 42);
    assert_eq!(b["stop"], json!(["###"]));
    assert_eq!(b["logprobs"], true);
    assert_eq!(b["top_logprobs"], 1);
    assert_eq!(b["post_sampling_probs"], true);
    assert_eq!(b["stream"], false);
    let t = reqs.iter().find(|r| r.path == "/v1/completions").unwrap();
    assert_eq!(t.body["prompt"], "Once upon");
    assert_eq!(t.body["logprobs"], 1);
    assert_eq!(t.body["post_sampling_probs"], false); // greedy: plain softmax
    assert!(t.body.get("top_k").is_none() && t.body.get("stop").is_none());
}

#[test]
fn retries_429_and_503_then_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mock = Mock::start(move |r| match c.fetch_add(1, Ordering::SeqCst) {
        0 => status(429, r#"{"error":{"message":"slow down"}}"#),
        1 => {
            let mut rep = status(503, r#"{"error":{"message":"loading model"}}"#);
            rep.headers.push(("Retry-After", "0".into()));
            rep
        }
        2 => status(500, "boom"),
        _ => ok(llama_answer(r)),
    });
    let lm = OpenAiLm::new(config(&mock.url), None).unwrap();
    let g = lm.generate(&[chat("again")]).unwrap();
    assert_eq!(g[0].text, "again");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(mock.count("/v1/chat/completions"), 4);
    // No key configured: no Authorization header at all.
    assert!(mock.requests()[0].header("authorization").is_none());
}

#[test]
fn gives_up_after_max_retries_naming_url_status_and_attempts() {
    let mock = Mock::start(|_| status(502, r#"{"error":{"message":"bad gateway upstream"}}"#));
    let mut c = config(&mock.url);
    c.retry.max_retries = 2;
    let lm = OpenAiLm::new(c, None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert_eq!(mock.count("/v1/chat/completions"), 3);
    assert!(e.starts_with("openai: "), "{e}");
    assert!(
        e.contains(&format!("POST {}/v1/chat/completions", mock.url)),
        "{e}"
    );
    assert!(e.contains("HTTP 502"), "{e}");
    assert!(e.contains("bad gateway upstream"), "{e}");
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    assert!(e.contains("request 0"), "{e}");
}

#[test]
fn no_retry_on_400_and_the_server_message_is_quoted() {
    let mock = Mock::start(|_| {
        status(
            400,
            r#"{"error":{"code":400,"message":"top_k must be >= 0","type":"invalid_request_error"}}"#,
        )
    });
    let lm = OpenAiLm::new(config(&mock.url), None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert_eq!(mock.count("/v1/chat/completions"), 1);
    assert!(e.contains("HTTP 400"), "{e}");
    assert!(e.contains("top_k must be >= 0"), "{e}");
    assert!(!e.contains("gave up"), "{e}");
}

#[test]
fn timeout_is_reported_quickly() {
    let mock = Mock::start(|r| {
        let mut rep = ok(llama_answer(r));
        rep.delay = Duration::from_secs(3);
        rep
    });
    let mut c = config(&mock.url);
    c.timeout = Duration::from_millis(300);
    c.retry.max_retries = 1;
    let lm = OpenAiLm::new(c, None).unwrap();
    let t = Instant::now();
    let e = lm.generate(&[chat("slow")]).unwrap_err().to_string();
    let took = t.elapsed();
    assert!(e.contains("timed out"), "{e}");
    assert!(e.contains("gave up after 2 attempts"), "{e}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(mock.count("/v1/chat/completions"), 2);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(&format!("http://127.0.0.1:{port}"));
    c.retry.max_retries = 2;
    let lm = OpenAiLm::new(c, None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}/v1/chat/completions")),
        "{e}"
    );
    assert!(e.contains("gave up after 3 attempts"), "{e}");
}

#[test]
fn api_key_never_appears_in_errors_describe_or_debug() {
    // A hostile server echoing the Authorization header in its error message.
    let mock = Mock::start(|r| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        status(
            401,
            &json!({"error": {"message": format!("invalid key: {auth}")}}).to_string(),
        )
    });
    let mut c = config(&mock.url);
    c.api_key_env = Some("MY_KEY_VAR".into());
    let lm = OpenAiLm::new(c, Some(KEY.into())).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(e.contains("invalid key: Bearer ***"), "{e}");
    assert!(!e.contains(KEY) && !e.contains("SECRET"), "{e}");
    let each = lm.generate_each(&[chat("y")]);
    let f = each[0].as_ref().unwrap_err();
    assert!(!f.message.contains(KEY), "{}", f.message);
    let d = lm.describe();
    assert!(d.contains("$MY_KEY_VAR") && !d.contains(KEY), "{d}");
    let dbg = format!("{lm:?}");
    assert!(!dbg.contains(KEY) && !dbg.contains("SECRET"), "{dbg}");
    // Credentials in the URL are hidden too.
    let lm = OpenAiLm::new(config("http://user:hunter2@127.0.0.1:9/v1"), None).unwrap();
    assert!(!lm.describe().contains("hunter2"), "{}", lm.describe());
}

#[test]
fn key_comes_from_the_variable_named_in_the_recipe() {
    // Cargo sets CARGO_PKG_NAME in the environment of test binaries: use it as "the key".
    let Ok(key) = std::env::var("CARGO_PKG_NAME") else {
        println!("skipped: CARGO_PKG_NAME is not set in this environment");
        return;
    };
    let mock = Mock::start(|r| ok(llama_answer(r)));
    let table: toml::Table = toml::from_str(&format!(
        "kind = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\napi_key_env = \"CARGO_PKG_NAME\"\nserver = \"llama-server\"",
        mock.url
    ))
    .unwrap();
    let (lm, resolved) = registry::build::<dyn LanguageModel>(Cfg::new("model", table)).unwrap();
    lm.generate(&[chat("k")]).unwrap();
    assert_eq!(
        mock.requests()[0].header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    // The resolved recipe (written to the run directory) has the name, not the key.
    let shown = toml::to_string(&resolved).unwrap();
    assert!(
        shown.contains("api_key_env = \"CARGO_PKG_NAME\""),
        "{shown}"
    );
    assert!(!shown.contains(&key), "{shown}");
    assert!(
        shown.contains("concurrency = 8") && shown.contains("max_retries = 4"),
        "{shown}"
    );
}

fn build_err(src: &str) -> String {
    let table: toml::Table = toml::from_str(src).unwrap();
    match registry::build::<dyn LanguageModel>(Cfg::new("agent.update.model", table)) {
        Ok(_) => panic!("expected an error for {src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors_name_the_key() {
    let e = build_err("kind = \"openai\"\nmodel = \"m\"");
    assert!(
        e.contains("`agent.update.model.base_url`") && e.contains("missing"),
        "{e}"
    );
    let e = build_err("kind = \"openai\"\nbase_url = \"localhost:8080\"\nmodel = \"m\"");
    assert!(
        e.contains("`agent.update.model.base_url`") && e.contains("http://"),
        "{e}"
    );
    let e = build_err("kind = \"openai\"\nbase_url = \"http://h\"");
    assert!(e.contains("`agent.update.model.model`"), "{e}");
    let e =
        build_err("kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\nserver = \"tgi\"");
    assert!(
        e.contains("`agent.update.model.server`") && e.contains("\"tgi\""),
        "{e}"
    );
    let e = build_err("kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\nconcurrency = 0");
    assert!(e.contains("`agent.update.model.concurrency`"), "{e}");
    let e =
        build_err("kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\ntimeout_s = -1.0");
    assert!(e.contains("`agent.update.model.timeout_s`"), "{e}");
    let e = build_err(
        "kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\napi_key_env = \"MEMFACTORY_SURELY_UNSET_VAR\"",
    );
    assert!(e.contains("`agent.update.model.api_key_env`"), "{e}");
    assert!(
        e.contains("`MEMFACTORY_SURELY_UNSET_VAR` is not set"),
        "{e}"
    );
    let e = build_err(
        "kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\napi_key = \"sk-LEAK\"",
    );
    assert!(
        e.contains("`agent.update.model.api_key`") && e.contains("api_key_env"),
        "{e}"
    );
    assert!(!e.contains("sk-LEAK"), "{e}");
    let e = build_err("kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\ntokenize = true");
    assert!(e.contains("`agent.update.model.tokenize`"), "{e}");
    let e = build_err(
        "kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\nlogprobs = false\nrequire_logprobs = true",
    );
    assert!(e.contains("`agent.update.model.require_logprobs`"), "{e}");
    let e = build_err("kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\ntop_k = 3");
    assert!(
        e.contains("`agent.update.model.top_k`") && e.contains("unknown key"),
        "{e}"
    );
}

#[test]
fn concurrency_is_bounded_and_results_keep_their_order() {
    let mock = Mock::start(|r| {
        let mut rep = ok(llama_answer(r));
        rep.delay = Duration::from_millis(150);
        rep
    });
    let mut c = config(&mock.url);
    c.concurrency = 3;
    let lm = Arc::new(OpenAiLm::new(c, None).unwrap());
    let reqs: Vec<GenRequest> = (0..10).map(|i| chat(&format!("q{i}"))).collect();
    let t = Instant::now();
    let g = lm.generate(&reqs).unwrap();
    let took = t.elapsed();
    let texts: Vec<&str> = g.iter().map(|g| g.text.as_str()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    assert_eq!(texts, want);
    assert_eq!(mock.max_active.load(Ordering::SeqCst), 3);
    // 10 requests, 3 at a time, 150 ms each: 4 rounds, not 10.
    assert!(took < Duration::from_millis(1400), "{took:?}");

    // The bound holds across concurrent `generate` calls of one model too.
    mock.max_active.store(0, Ordering::SeqCst);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let lm = lm.clone();
            let reqs = reqs[..4].to_vec();
            s.spawn(move || lm.generate(&reqs).unwrap());
        }
    });
    assert_eq!(mock.max_active.load(Ordering::SeqCst), 3);
}

#[test]
fn failed_requests_are_named_and_finished_ones_kept_for_the_retry() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let mock = Mock::start(move |r| {
        let text = r.body["messages"][0]["content"].as_str().unwrap_or("");
        if text.starts_with("bad") && !h.load(Ordering::SeqCst) {
            status(500, r#"{"error":{"message":"CUDA out of memory"}}"#)
        } else {
            ok(llama_answer(r))
        }
    });
    let mut c = config(&mock.url);
    c.retry.max_retries = 1;
    let lm = OpenAiLm::new(c, None).unwrap();
    let reqs: Vec<GenRequest> = ["a", "bad1", "c", "bad2", "e"]
        .iter()
        .map(|t| chat(t))
        .collect();

    let each = lm.generate_each(&reqs);
    assert!(each[0].is_ok() && each[2].is_ok() && each[4].is_ok());
    let f1 = each[1].as_ref().unwrap_err();
    assert_eq!((f1.index, f1.status), (1, Some(500)));
    assert!(f1.message.contains("CUDA out of memory"), "{}", f1.message);
    assert_eq!(lm.stashed(), 0); // generate_each hands results back; nothing kept

    let e = lm.generate(&reqs).unwrap_err().to_string();
    assert!(e.contains("2 of 5 requests failed (indices 1, 3)"), "{e}");
    assert!(
        e.contains("request 1: POST") && e.contains("request 3: POST"),
        "{e}"
    );
    assert!(e.contains("3 finished generations are kept"), "{e}");
    assert_eq!(lm.stashed(), 3);

    // The server recovers; the caller retries the batch: only the 2 failed ones are sent.
    healthy.store(true, Ordering::SeqCst);
    let before = mock.count("/v1/chat/completions");
    let g = lm.generate(&reqs).unwrap();
    let texts: Vec<&str> = g.iter().map(|g| g.text.as_str()).collect();
    assert_eq!(texts, ["a", "bad1", "c", "bad2", "e"]);
    assert_eq!(mock.count("/v1/chat/completions") - before, 2);
    assert_eq!(lm.stashed(), 0);
}

#[test]
fn vllm_dialect_sends_its_extensions_and_reads_token_ids() {
    let mock = Mock::start(|r| {
        if r.path == "/tokenize" {
            return ok(json!({"count": 2, "max_model_len": 2048, "tokens": [5, 6]}));
        }
        if r.path == "/detokenize" {
            return ok(json!({"prompt": "decoded"}));
        }
        ok(
            json!({"choices": [{"index": 0, "text": "ok", "finish_reason": "stop",
            "stop_reason": "###", "prompt_token_ids": [1, 2, 3], "token_ids": [7, 8],
            "logprobs": {"tokens": ["token_id:7", "token_id:8"],
                         "token_logprobs": [-1.0, -2.0], "top_logprobs": [null, null]}}]}),
        )
    });
    let mut c = config(&mock.url);
    c.server = ServerKind::Vllm;
    let lm = OpenAiLm::new(c, None).unwrap();
    let g = lm
        .generate(&[GenRequest {
            prompt: Prompt::Text("x".into()),
            params: SamplingParams {
                stop: vec!["###".into()],
                ..SamplingParams::greedy(4)
            },
        }])
        .unwrap();
    assert_eq!(g[0].token_ids, vec![7, 8]);
    assert_eq!(g[0].logprobs, vec![-1.0, -2.0]);
    assert_eq!(g[0].prompt_ids, vec![1, 2, 3]);
    assert_eq!(g[0].finish, Finish::Stop);
    let b = &mock.requests()[0].body;
    assert_eq!(b["return_token_ids"], true);
    assert_eq!(b["return_tokens_as_token_ids"], true);
    assert!(b.get("post_sampling_probs").is_none());

    assert_eq!(lm.encode("hi").unwrap(), vec![5, 6]);
    assert_eq!(lm.decode(&[5, 6]).unwrap(), "decoded");
    let t = mock.requests();
    let tok = t.iter().find(|r| r.path == "/tokenize").unwrap();
    assert_eq!(
        tok.body,
        json!({"model": "test-model", "prompt": "hi", "add_special_tokens": false})
    );
    let ids = lm
        .prompt_ids(&Prompt::Chat(vec![ChatMessage::user("q")]))
        .unwrap();
    assert_eq!(ids, vec![5, 6]);
    let last = mock.requests().last().unwrap().body.clone();
    assert_eq!(last["add_generation_prompt"], true);
}

#[test]
fn llama_server_tokenizer_endpoints_and_prompt_ids() {
    let mock = Mock::start(|r| match r.path.as_str() {
        "/apply-template" => {
            ok(json!({"prompt": "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"}))
        }
        "/tokenize" => ok(json!({"tokens": [1, 2, 3]})),
        "/detokenize" => ok(json!({"content": format!("{:?}", r.body["tokens"])})),
        _ => ok(llama_answer(r)),
    });
    let mut c = config(&mock.url);
    c.tokenize = true;
    let lm = OpenAiLm::new(c, None).unwrap();
    let g = lm.generate(&[chat("q")]).unwrap();
    assert_eq!(g[0].prompt_ids, vec![1, 2, 3]);
    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/v1/chat/completions", "/apply-template", "/tokenize"]
    );
    let tok = &mock.requests()[2].body;
    assert_eq!(tok["add_special"], true);
    assert_eq!(tok["parse_special"], true);
    assert_eq!(
        tok["content"],
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    );
    // The control token (id 2, empty text in the generation) is dropped before /detokenize.
    assert_eq!(
        lm.decode(&[10, 2, 11]).unwrap(),
        "Array [Number(10), Number(11)]"
    );
    // Token prompts need no server call.
    let n = mock.requests().len();
    assert_eq!(
        lm.prompt_ids(&Prompt::Tokens(vec![4, 5])).unwrap(),
        vec![4, 5]
    );
    assert_eq!(mock.requests().len(), n);
}

#[test]
fn generic_server_has_no_tokenizer_and_empty_logprobs_are_documented_behaviour() {
    let mock = Mock::start(|_| {
        ok(json!({"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "abc"}, "logprobs": null}]}))
    });
    let mut c = config(&mock.url);
    c.server = ServerKind::Generic;
    let lm = OpenAiLm::new(c.clone(), None).unwrap();
    let e = lm.encode("x").unwrap_err().to_string();
    assert!(
        e.contains("`model.server`") && e.contains("llama-server"),
        "{e}"
    );
    let g = lm.generate(&[chat("x")]).unwrap();
    assert_eq!(g[0].text, "abc");
    assert_eq!(g[0].finish, Finish::Length);
    assert!(g[0].token_ids.is_empty() && g[0].logprobs.is_empty());
    assert!(mock.requests()[0].body.get("post_sampling_probs").is_none());

    c.require_logprobs = true;
    let lm = OpenAiLm::new(c, None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert!(
        e.contains("require_logprobs") && e.contains("token ids and log-probs"),
        "{e}"
    );
}

#[test]
fn a_non_json_success_body_is_an_error_not_a_panic() {
    let mock = Mock::start(|_| status(200, "<html>proxy login</html>"));
    let lm = OpenAiLm::new(config(&mock.url), None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert!(e.contains("not JSON") && e.contains("proxy login"), "{e}");
    let mock = Mock::start(|_| ok(json!({"object": "list", "data": []})));
    let lm = OpenAiLm::new(config(&mock.url), None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert!(e.contains("choices[0]"), "{e}");
}

#[test]
fn the_first_failure_is_kept_when_the_last_one_differs() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mock = Mock::start(move |_| match c.fetch_add(1, Ordering::SeqCst) {
        0 => status(503, r#"{"error":{"message":"Loading model"}}"#),
        _ => status(500, r#"{"error":{"message":"slot crashed"}}"#),
    });
    let mut c = config(&mock.url);
    c.retry.max_retries = 2;
    let lm = OpenAiLm::new(c, None).unwrap();
    let e = lm.generate(&[chat("x")]).unwrap_err().to_string();
    assert!(e.contains("HTTP 500 Internal Server Error: slot crashed (gave up after 3 attempts; first attempt: POST"), "{e}");
    assert!(
        e.contains("HTTP 503 Service Unavailable: Loading model)"),
        "{e}"
    );
}

#[test]
fn chat_template_kwargs_from_the_recipe_reach_every_chat_body() {
    let mock = Mock::start(|r| match r.path.as_str() {
        "/apply-template" => ok(json!({"prompt": "<|im_start|>user\nq<|im_end|>\n"})),
        "/tokenize" => ok(json!({"tokens": [1, 2]})),
        _ => ok(llama_answer(r)),
    });
    let src = format!(
        "base_url = \"{}\"\nmodel = \"qwen3\"\nserver = \"llama-server\"\n\
         tokenize = true\nchat_template_kwargs = {{ enable_thinking = false, budget = 2 }}",
        mock.url
    );
    let table: toml::Table = toml::from_str(&src).unwrap();
    let mut cfg = Cfg::new("model", table);
    let (config, key) = OpenAiConfig::from_cfg(&mut cfg).unwrap();
    let resolved = cfg.finish().unwrap();
    assert_eq!(
        resolved["chat_template_kwargs"]["enable_thinking"],
        toml::Value::Boolean(false)
    );
    let lm = OpenAiLm::new(config, key).unwrap();
    let text = GenRequest {
        prompt: Prompt::Text("raw".into()),
        params: SamplingParams::greedy(4),
    };
    lm.generate(&[chat("q"), text]).unwrap();
    let reqs = mock.requests();
    let want = json!({"enable_thinking": false, "budget": 2});
    let chat_body = &reqs
        .iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap()
        .body;
    assert_eq!(chat_body["chat_template_kwargs"], want);
    // The chat prompt's ids are rendered by the server with the same arguments.
    let apply = &reqs
        .iter()
        .find(|r| r.path == "/apply-template")
        .unwrap()
        .body;
    assert_eq!(apply["chat_template_kwargs"], want);
    // A raw-text completion has no chat template.
    let raw = &reqs
        .iter()
        .find(|r| r.path == "/v1/completions")
        .unwrap()
        .body;
    assert!(raw.get("chat_template_kwargs").is_none(), "{raw}");

    let e = build_err(
        "kind = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\n\
         chat_template_kwargs = [\"enable_thinking\"]",
    );
    assert!(
        e.contains("`agent.update.model.chat_template_kwargs`") && e.contains("table"),
        "{e}"
    );
}
