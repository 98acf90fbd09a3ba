//! The OpenAI-compatible backend against a scripted fault server (wiremock): rate limits, retries,
//! timeouts, garbage, the API key, log-probability parsing, and that nothing failed is cached.
//! The last test runs against a real server (llama-cpp-python) when one is installed.
use fretflow::llm::cache::LlmCache;
use fretflow::llm::fret::{FretLlm, FretOptions};
use fretflow::llm::remote::{QlMode, RemoteConfig, RemoteConfigError, RemoteLlm};
use fretflow::llm::{ChatMessage, GenerateRequest, LabelRequest, LlmBackend, LlmError, Prompt, Sampling, ScoreRequest};
use fretflow::records::Passage;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod llama_support;
mod prereq;

fn config(server: &MockServer) -> RemoteConfig {
    let mut c = RemoteConfig::new(format!("{}/v1", server.uri()), "test-model");
    c.backoff_base_secs = 0.01;
    c.backoff_max_secs = 0.05;
    c.timeout_secs = 5.0;
    c.max_retries = 3;
    c
}

fn backend(c: RemoteConfig) -> RemoteLlm {
    RemoteLlm::new(c).expect("valid test config")
}

fn chat(text: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage { role: "user".into(), content: text.into() }]),
        max_new_tokens: 8,
        stop: vec![],
        sampling: Sampling::default(),
    }
}

fn chat_ok(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 3}
    }))
}

async fn mount(server: &MockServer, route: &str, response: ResponseTemplate, times: Option<u64>, priority: u8) {
    let mock = Mock::given(method("POST")).and(path(route)).respond_with(response).with_priority(priority);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

async fn requests(server: &MockServer) -> Vec<Value> {
    server.received_requests().await.unwrap().iter().map(|r| r.body_json().unwrap()).collect()
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_retried() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(429).insert_header("Retry-After", "1"), Some(1), 1)
        .await;
    mount(&server, "/v1/chat/completions", chat_ok("hello"), None, 2).await;
    let started = Instant::now();
    let got = backend(config(&server)).generate(vec![chat("hi")]).await;
    let elapsed = started.elapsed();
    assert_eq!(got[0].as_ref().unwrap().text, "hello");
    assert!(elapsed >= Duration::from_secs(1), "waited only {elapsed:?}; the backoff cap is 50 ms");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(500), Some(2), 1).await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(503), Some(1), 1).await;
    mount(&server, "/v1/chat/completions", chat_ok("fine"), None, 2).await;
    let got = backend(config(&server)).generate(vec![chat("hi")]).await;
    assert_eq!(got[0].as_ref().unwrap().text, "fine");
    assert_eq!(requests(&server).await.len(), 4);
}

#[tokio::test]
async fn server_errors_beyond_max_retries_fail_the_request() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(502).set_body_string("bad gateway"), None, 1).await;
    let got = backend(config(&server)).generate(vec![chat("hi")]).await;
    let err = got[0].as_ref().unwrap_err();
    assert!(
        matches!(err, LlmError::Call(m) if m.contains("502") && m.contains("bad gateway") && m.contains("4 attempt")),
        "{err}"
    );
    assert_eq!(requests(&server).await.len(), 4, "1 attempt + max_retries 3");
}

#[tokio::test]
async fn timeouts_are_retried_then_fail() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", chat_ok("late").set_delay(Duration::from_secs(3)), None, 1).await;
    let mut c = config(&server);
    c.timeout_secs = 0.2;
    c.max_retries = 2;
    let got = backend(c).generate(vec![chat("hi")]).await;
    let err = got[0].as_ref().unwrap_err();
    assert!(matches!(err, LlmError::Call(m) if m.contains("timed out")), "{err}");
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn a_timeout_followed_by_an_answer_succeeds() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", chat_ok("late").set_delay(Duration::from_secs(3)), Some(1), 1).await;
    mount(&server, "/v1/chat/completions", chat_ok("on time"), None, 2).await;
    let mut c = config(&server);
    c.timeout_secs = 0.3;
    let got = backend(c).generate(vec![chat("hi")]).await;
    assert_eq!(got[0].as_ref().unwrap().text, "on time");
}

#[tokio::test]
async fn garbage_bodies_are_bad_responses_and_not_retried() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(200).set_body_string("<html>oops</html>"), None, 1)
        .await;
    mount(&server, "/v1/completions", ResponseTemplate::new(200).set_body_json(json!({"id": 1})), None, 1).await;
    let b = backend(config(&server));
    let got = b.generate(vec![chat("hi")]).await;
    assert!(matches!(&got[0], Err(LlmError::BadResponse(m)) if m.contains("<html>oops")), "{:?}", got[0]);
    let text = GenerateRequest { prompt: Prompt::Text("abc".into()), ..chat("x") };
    let got = b.generate(vec![text]).await;
    assert!(matches!(&got[0], Err(LlmError::BadResponse(m)) if m.contains("choices")), "{:?}", got[0]);
    assert_eq!(requests(&server).await.len(), 2, "one attempt each");
}

#[tokio::test]
async fn a_rejected_request_is_invalid_and_not_retried() {
    let server = MockServer::start().await;
    let body = json!({"error": {"message": "prompt is longer than the context"}});
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(400).set_body_json(body), None, 1).await;
    let got = backend(config(&server)).generate(vec![chat("hi")]).await;
    assert!(
        matches!(&got[0], Err(LlmError::InvalidRequest(m)) if m.contains("longer than the context")),
        "{:?}",
        got[0]
    );
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_at_once() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(429).insert_header("Retry-After", "600"), None, 1)
        .await;
    let got = backend(config(&server)).generate(vec![chat("hi")]).await;
    assert!(matches!(&got[0], Err(LlmError::Call(m)) if m.contains("retry_after_max_secs")), "{:?}", got[0]);
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn concurrency_is_bounded_by_max_concurrency() {
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", chat_ok("ok").set_delay(Duration::from_millis(300)), None, 1).await;
    let mut c = config(&server);
    c.max_concurrency = 2;
    let started = Instant::now();
    let got = backend(c).generate((0..6).map(|i| chat(&format!("{i}"))).collect()).await;
    assert!(got.iter().all(|r| r.is_ok()));
    // Three waves of two; unbounded, all six would finish in one 300 ms wave.
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}

fn passage() -> Passage {
    Passage { id: "p1".into(), title: String::new(), text: "x-15 flights at hypersonic speed".into() }
}

#[tokio::test]
async fn failed_calls_are_never_cached() {
    let server = MockServer::start().await;
    mount(&server, "/v1/completions", ResponseTemplate::new(500), None, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(LlmCache::open(dir.path().join("c.redb")).unwrap());
    let mut c = config(&server);
    c.max_retries = 0;
    let llm = FretLlm::new(Arc::new(backend(c)), Some(cache.clone()), FretOptions::default());
    for attempt in 1..=2 {
        let got = llm.generate_queries(&[passage()]).await;
        assert!(got[0].is_err());
        assert_eq!(requests(&server).await.len(), attempt, "each try reaches the server");
    }
    assert_eq!(cache.len().unwrap(), 0);

    server.reset().await;
    let answer =
        json!({"choices": [{"text": " Find facts\nQuery: how fast did the x-15 fly", "finish_reason": "stop"}]});
    mount(&server, "/v1/completions", ResponseTemplate::new(200).set_body_json(answer), None, 1).await;
    for _ in 0..2 {
        let got = llm.generate_queries(&[passage()]).await;
        assert_eq!(got[0].as_ref().unwrap().query, "how fast did the x-15 fly");
    }
    assert_eq!(requests(&server).await.len(), 1, "the success is cached; the second run makes no request");
}

/// An echoed `/completions` answer for `text`, split into `tokens`, with one generated token after it.
fn echo_answer(tokens: &[&str], logprobs: &[Option<f64>]) -> Value {
    let mut offsets = Vec::new();
    let mut at = 0;
    for t in tokens {
        offsets.push(at);
        at += t.chars().count();
    }
    let text: String = tokens.concat();
    json!({"choices": [{"text": text, "finish_reason": "length",
        "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets}}]})
}

#[tokio::test]
async fn ql_sums_the_continuation_tokens_found_by_character_offsets() {
    let server = MockServer::start().await;
    // Non-ASCII text: byte offsets and character offsets differ, and only characters are right.
    let prompt = "Passage: Überschall — cônes.\nQuestion:";
    let continuation = " warum Überschall?";
    let tokens = [
        "Passage", ":", " Über", "schall", " —", " cônes", ".\n", "Question", ":", " warum", " Über", "schall", "?",
        "\n",
    ];
    let lps = [
        None,
        Some(-0.5),
        Some(-2.0),
        Some(-1.0),
        Some(-0.7),
        Some(-0.1),
        Some(-0.3),
        Some(-0.2),
        Some(-0.1),
        Some(-1.5),
        Some(-2.25),
        Some(-0.5),
        Some(-0.25),
        Some(-3.0),
    ];
    mount(&server, "/v1/completions", ResponseTemplate::new(200).set_body_json(echo_answer(&tokens, &lps)), None, 1)
        .await;
    let request = ScoreRequest { prompt: prompt.into(), continuation: continuation.into() };
    let got = backend(config(&server)).score(vec![request]).await;
    let score = got[0].as_ref().unwrap();
    assert_eq!(score.token_logprobs, vec![-1.5, -2.25, -0.5, -0.25]);
    assert!((score.sum_logprob - (-4.5)).abs() < 1e-12, "{}", score.sum_logprob);
    let sent = &requests(&server).await[0];
    assert_eq!(sent["prompt"], json!(format!("{prompt}{continuation}")));
    assert_eq!(
        (sent["echo"].clone(), sent["logprobs"].clone(), sent["max_tokens"].clone()),
        (json!(true), json!(1), json!(1))
    );
}

#[tokio::test]
async fn a_server_without_prompt_logprobs_is_unsupported_with_the_fallback_named() {
    let server = MockServer::start().await;
    // Offsets start after the prompt: the server ignored `echo`.
    let answer = json!({"choices": [{"text": "?", "logprobs": {"tokens": ["?"], "token_logprobs": [-1.0], "text_offset": [9]}}]});
    mount(&server, "/v1/completions", ResponseTemplate::new(200).set_body_json(answer), None, 1).await;
    let request = ScoreRequest { prompt: "Question:".into(), continuation: " why".into() };
    let got = backend(config(&server)).score(vec![request.clone()]).await;
    assert!(matches!(&got[0], Err(LlmError::Unsupported(m)) if m.contains("ql = \"unsupported\"")), "{:?}", got[0]);

    let mut c = config(&server);
    c.ql = QlMode::Unsupported;
    let got = backend(c).score(vec![request]).await;
    assert!(matches!(&got[0], Err(LlmError::Unsupported(_))));
    assert_eq!(requests(&server).await.len(), 1, "ql = unsupported makes no request");
}

#[tokio::test]
async fn label_probabilities_come_from_top_logprobs_of_chat_and_completions() {
    let server = MockServer::start().await;
    let top = json!([{"token": " 2", "logprob": 0.6f64.ln()}, {"token": "3", "logprob": 0.25f64.ln()},
        {"token": "1", "logprob": 0.1f64.ln()}, {"token": "The", "logprob": 0.05f64.ln()}]);
    let chat_answer = json!({"choices": [{"message": {"content": " 2"}, "finish_reason": "length",
        "logprobs": {"content": [{"token": " 2", "logprob": 0.6f64.ln(), "top_logprobs": top}]}}]});
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(200).set_body_json(chat_answer), None, 1).await;
    let text_answer = json!({"choices": [{"text": " 1", "logprobs": {"tokens": [" 1"], "token_logprobs": [-0.1],
        "text_offset": [7], "top_logprobs": [{" 1": 0.9f64.ln(), " 0": 0.1f64.ln()}]}}]});
    mount(&server, "/v1/completions", ResponseTemplate::new(200).set_body_json(text_answer), None, 1).await;
    let labels: Vec<String> = ["0", "1", "2", "3"].iter().map(|s| s.to_string()).collect();
    let b = backend(config(&server));
    let got = b
        .label_probs(vec![
            LabelRequest { prompt: chat("grade it").prompt, labels: labels.clone() },
            LabelRequest { prompt: Prompt::Text("Grade:".into()), labels: vec![" 0".into(), " 1".into()] },
        ])
        .await;
    let chat_probs = &got[0].as_ref().unwrap().probs;
    // "0" is not listed: it gets the floor, the smallest listed probability (0.05).
    for (p, e) in chat_probs.iter().zip([0.05, 0.1, 0.6, 0.25]) {
        assert!((p - e).abs() < 1e-6, "{chat_probs:?}");
    }
    let text_probs = &got[1].as_ref().unwrap().probs;
    assert!((text_probs[0] - 0.1).abs() < 1e-6 && (text_probs[1] - 0.9).abs() < 1e-6, "{text_probs:?}");
    let sent = requests(&server).await;
    let chat_sent = sent.iter().find(|b| b.get("messages").is_some()).unwrap();
    assert_eq!((chat_sent["logprobs"].clone(), chat_sent["top_logprobs"].clone()), (json!(true), json!(20)));
    assert_eq!(chat_sent["max_tokens"], json!(1));
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_api_key_is_sent_as_bearer_and_never_printed_or_logged() {
    const KEY: &str = "sk-test-7f3a9c1e55";
    let var = "FRETFLOW_TEST_LLM_REMOTE_API_KEY";
    std::env::set_var(var, KEY);
    let server = MockServer::start().await;
    mount(&server, "/v1/chat/completions", ResponseTemplate::new(500), Some(1), 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(chat_ok("authorized"))
        .with_priority(2)
        .mount(&server)
        .await;
    let logs = LogBuffer::default();
    let sink = logs.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || sink.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut c = config(&server);
    c.api_key_env = Some(var.into());
    let b = backend(c);
    let got = b.generate(vec![chat("hi")]).await;
    assert_eq!(got[0].as_ref().unwrap().text, "authorized", "the Bearer header matched");
    let printed = format!("{b:?} {:?}", b.config());
    assert!(!printed.contains(KEY), "{printed}");
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("retrying"), "the retry was logged: {logged}");
    assert!(!logged.contains(KEY), "{logged}");
}

#[test]
fn a_missing_key_variable_and_unknown_fields_are_config_errors_naming_them() {
    let mut c = RemoteConfig::new("http://127.0.0.1:1/v1", "m");
    c.api_key_env = Some("FRETFLOW_TEST_NO_SUCH_KEY_VAR".into());
    let err = RemoteLlm::new(c).unwrap_err();
    assert!(
        matches!(&err, RemoteConfigError::MissingApiKey { var } if var == "FRETFLOW_TEST_NO_SUCH_KEY_VAR"),
        "{err}"
    );
    let err = toml::from_str::<RemoteConfig>("base_url = 'http://x/v1'\nmodel = 'm'\nmax_retry = 3\n").unwrap_err();
    assert!(err.to_string().contains("max_retry"), "{err}");
    let mut c = RemoteConfig::new("localhost:8000", "m");
    assert!(RemoteLlm::new(c.clone()).unwrap_err().to_string().contains("base_url"));
    c.base_url = "http://localhost:8000".into();
    assert_eq!(c.api_base(), "http://localhost:8000/v1", "a bare host gets /v1");
}

/// A real OpenAI-compatible server: llama-cpp-python's on the packaged SmolLM2 GGUF (`make test` installs
/// it: `scripts/setup.sh llama-server`, a source build of llama.cpp; started by `llama_support`). When
/// `llama_cpp.server` is not importable in the project's `.venv` the test is recorded as skipped, or fails
/// under CI (see `prereq`).
#[tokio::test]
async fn a_real_llama_cpp_python_server_generates_scores_and_labels() {
    use std::process::Command;
    let log = tempfile::NamedTempFile::new().unwrap();
    let Some(server) = llama_support::LlamaServer::start(log.path()) else { return };
    let base = server.base.clone();

    let mut c = RemoteConfig::new(&base, "smollm2");
    c.timeout_secs = 120.0;
    let b = backend(c);
    let gen = GenerateRequest { prompt: Prompt::Text("The capital of France is".into()), ..chat("x") };
    let got = b.generate(vec![gen]).await;
    assert!(!got[0].as_ref().unwrap().text.is_empty());

    let prompt = "Passage: Paris is the capital and largest city of France.\nPlease write a question based on this passage.\nQuestion:";
    let scores = b
        .score(vec![
            ScoreRequest { prompt: prompt.into(), continuation: " What is the capital of France?".into() },
            ScoreRequest { prompt: prompt.into(), continuation: " How do bees make honey?".into() },
        ])
        .await;
    let (relevant, unrelated) = (scores[0].as_ref().unwrap(), scores[1].as_ref().unwrap());
    eprintln!("llama_cpp.server QL: relevant {relevant:?}\nunrelated {unrelated:?}");
    // The backend's part: the echoed prompt is cut off exactly at the continuation, one finite negative
    // log-probability per continuation token (SmolLM2's tokenizer: " What is the capital of France?" is
    // 7 tokens, " How do bees make honey?" 6), summed.
    for (score, tokens) in [(relevant, 7), (unrelated, 6)] {
        assert_eq!(score.token_logprobs.len(), tokens, "{score:?}");
        assert!(score.token_logprobs.iter().all(|l| l.is_finite() && *l < 0.0), "{score:?}");
        let sum: f64 = score.token_logprobs.iter().map(|&l| f64::from(l)).sum();
        assert!((sum - score.sum_logprob).abs() < 1e-3, "{score:?}");
    }
    // Not asserted: that the relevant question scores higher. llama-cpp-python's echoed prompt
    // log-probabilities are those of each token under the distribution *after* it (off by one position;
    // abetlen/llama-cpp-python#1983, open as of 0.3.36; the measured table is in the design notes, ../shared/docs/DESIGN.md), so its QL ranks
    // these two the wrong way round (-79.4 vs -64.8). A remote QL judge needs a server whose prompt
    // log-probabilities are right (vLLM's prompt_logprobs); check it against the local backend first.

    let labels = b
        .label_probs(vec![LabelRequest {
            prompt: Prompt::Text("Question: Is Paris in France? Answer yes or no.\nAnswer:".into()),
            labels: vec![" yes".into(), " no".into()],
        }])
        .await;
    let probs = &labels[0].as_ref().unwrap().probs;
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{probs:?}");

    // The pipeline on this server, as a user runs it: `fretflow run` with `[llm] backend = "remote"` on six
    // passages of the sample, the base URL coming from FRETFLOW_LLM_URL (the file names a dead port).
    // Candidates are ranked by RC alone (`ql = "unsupported"`, see above).
    let dir = tempfile::tempdir().unwrap();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/passages.jsonl");
    let six: String = std::fs::read_to_string(sample).unwrap().lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("passages.jsonl"), six).unwrap();
    let pipeline = "[source]\npath = \"passages.jsonl\"\n\
        [llm]\nbackend = \"remote\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"smollm2\"\nql = \"unsupported\"\n\
        timeout_secs = 120.0\n[embedder]\nmodel = \"all-MiniLM-L6-v2\"\ndevice = \"cpu\"\n\
        [fret]\nneighbours = 2\nweights = { ql = 0.0, rc = 1.0 }\n[limits]\nmin_words = 1\n\
        [sinks]\nsnapshot = [\"out/fret.jsonl\"]\ndead_letters = \"out/dead-letters.jsonl\"\nsummary = \"out/summary.json\"\n";
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(["run", "p.toml", "--no-progress"])
        .current_dir(dir.path())
        .env("FRETFLOW_LLM_URL", &base)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "fretflow run on the remote backend failed: {stderr}");
    let examples: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("out/fret.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dead = std::fs::read_to_string(dir.path().join("out/dead-letters.jsonl")).unwrap_or_default();
    assert!(!examples.is_empty(), "no example from six passages; dead letters:\n{dead}");
    assert!(examples.len() + dead.lines().count() >= 6, "a passage went missing: {dead}");
    for example in &examples {
        let provenance = &example["provenance"];
        assert!(provenance["generator"]["model"].as_str().unwrap().starts_with("remote:"), "{provenance}");
        assert!(provenance["judge"]["model"].as_str().unwrap().starts_with("remote:"), "{provenance}");
        assert!(example["ranking"].as_array().unwrap().iter().all(|c| c["rc"].as_f64().is_some()), "{example}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap()).unwrap();
    assert!(summary["llm_calls"].as_u64().unwrap() > 0, "{summary}");
}
