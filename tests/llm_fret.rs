//! The FRet LLM layer: prompt rendering and versions, parsing of query-generation answers, and the
//! batching, ordering and fallbacks of `FretLlm` on a scripted backend.
use fretflow::llm::fret::{EchoSource, FretLlm, FretOptions, QueryGenFailure, ScriptedLlm};
use fretflow::llm::prompts::{FretPrompts, PromptKind, PromptOptions, RELEVANCE_LABELS};
use fretflow::llm::{
    BackendId, ContinuationScore, FinishReason, GenerateRequest, Generation, LabelDistribution, LabelRequest,
    LlmBackend, LlmError, Prompt, ScoreRequest,
};
use fretflow::records::Passage;
use std::sync::{Arc, Mutex};

fn passage(id: &str, title: &str, text: &str) -> Passage {
    Passage { id: id.to_string(), title: title.to_string(), text: text.to_string() }
}

fn wing() -> Passage {
    passage(
        "p1",
        "Skin friction on flat plates",
        "Measurements of the skin friction along a flat plate show that the turbulent boundary layer thickens \
         downstream while the local friction coefficient falls.",
    )
}

fn prompts() -> FretPrompts {
    FretPrompts::new(PromptOptions::default())
}

fn parse(answer: &str) -> Result<String, QueryGenFailure> {
    prompts().parse_query_generation(answer, &wing()).map(|tq| format!("{} | {}", tq.task, tq.query))
}

#[test]
fn a_well_formed_answer_parses_into_task_and_query() {
    let got =
        parse(" Given a question, retrieve a passage that answers it\nQuery: how does friction change along a plate");
    assert_eq!(
        got.unwrap(),
        "Given a question, retrieve a passage that answers it | how does friction change along a plate"
    );
}

#[test]
fn variants_of_the_answer_shape_parse() {
    // Task and query on one line, a repeated "Task:", lower-case marker, quotes, trailing lines.
    let got = parse("Task: Find evidence query: \"does the boundary layer get thicker downstream\"\nPassage: next");
    assert_eq!(got.unwrap(), "Find evidence | does the boundary layer get thicker downstream");
}

#[test]
fn blank_answers_and_blank_queries_are_empty_failures() {
    for answer in ["", "  \n ", " Some task\nQuery:   ", " Some task\nQuery: \"\""] {
        assert!(matches!(parse(answer), Err(QueryGenFailure::Empty { .. })), "{answer:?} -> {:?}", parse(answer));
    }
}

#[test]
fn answers_without_the_expected_shape_are_unparsable() {
    let no_marker = parse(" I think the passage is about friction.");
    assert!(
        matches!(no_marker, Err(QueryGenFailure::Unparsable { ref why, .. }) if why.contains("Query")),
        "{no_marker:?}"
    );
    let no_task = parse("\nQuery: how thick is the boundary layer");
    assert!(matches!(no_task, Err(QueryGenFailure::Unparsable { ref why, .. }) if why.contains("task")), "{no_task:?}");
    let repetitive = parse(" Task\nQuery: the validity of the validity of the validity of the validity of");
    assert!(
        matches!(repetitive, Err(QueryGenFailure::Unparsable { ref why, .. }) if why.contains("repeats")),
        "{repetitive:?}"
    );
    let rambling = parse(&format!(" Task\nQuery: {}", "very ".repeat(70)));
    assert!(
        matches!(rambling, Err(QueryGenFailure::Unparsable { ref why, .. }) if why.contains("70 words")),
        "{rambling:?}"
    );
}

#[test]
fn echoes_of_the_title_the_examples_the_task_and_the_passage_are_rejected() {
    let echo = |answer: &str| match parse(answer) {
        Err(QueryGenFailure::Echoed { of, .. }) => Some(of),
        _ => None,
    };
    assert_eq!(echo(" Find papers\nQuery: Skin Friction on Flat Plates."), Some(EchoSource::Title));
    let example = prompts().examples()[0].query.clone();
    assert_eq!(echo(&format!(" Find papers\nQuery: {example}")), Some(EchoSource::FewShotExample));
    assert_eq!(echo(" Find the friction\nQuery: find the friction"), Some(EchoSource::Task));
    assert_eq!(
        echo(" Find papers\nQuery: the turbulent boundary layer thickens downstream"),
        Some(EchoSource::Passage)
    );
    // Words taken from an example (about caffeine and sleep loss) rather than from this passage.
    assert_eq!(
        echo(" Find papers\nQuery: does friction slow reaction time after sleep loss"),
        Some(EchoSource::FewShotExample)
    );
    // A copy with a word changed at its start is still a copy.
    assert_eq!(
        echo(" Find papers\nQuery: a turbulent boundary layer thickens downstream while the local friction"),
        Some(EchoSource::Passage)
    );
    // A short phrase shared with the passage is not a copy.
    assert!(parse(" Find papers\nQuery: why does skin friction fall along a flat plate?").is_ok());
}

#[test]
fn failures_have_stable_reason_codes() {
    assert_eq!(parse("").unwrap_err().reason(), "empty");
    assert_eq!(parse("nothing").unwrap_err().reason(), "unparsable");
    assert_eq!(parse(" t\nQuery: skin friction on flat plates").unwrap_err().reason(), "echoed");
}

#[test]
fn prompt_versions_are_short_hashes_that_follow_the_templates_and_examples() {
    let a = prompts();
    let kinds = [PromptKind::QueryGeneration, PromptKind::Relevance, PromptKind::QueryLikelihood];
    for kind in kinds {
        let v = a.version(kind);
        assert_eq!(v.len(), 12, "{v}");
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()), "{v}");
        assert_eq!(v, prompts().version(kind), "versions are deterministic");
    }
    assert_ne!(a.version(PromptKind::QueryGeneration), a.version(PromptKind::Relevance));
    let zero_shot = FretPrompts::new(PromptOptions { ql_examples: 0, ..PromptOptions::default() });
    assert_ne!(zero_shot.version(PromptKind::QueryLikelihood), a.version(PromptKind::QueryLikelihood));
    assert_eq!(zero_shot.version(PromptKind::Relevance), a.version(PromptKind::Relevance));
}

#[test]
fn query_generation_is_a_few_shot_completion_ending_at_task() {
    let p = prompts();
    let request = p.query_generation(&wing());
    let Prompt::Text(text) = &request.prompt else { panic!("completion-style prompt expected") };
    assert!(text.ends_with(&format!("Passage: {}\nTask:", p.passage_text(&wing()))), "{text}");
    for ex in p.examples() {
        assert!(text.contains(&format!("Task: {}\nQuery: {}\n\n", ex.task, ex.query)), "{text}");
    }
    assert!(request.stop.contains(&"\n\n".to_string()));
    assert_eq!(request.sampling.temperature, 0.0);
}

#[test]
fn ql_scores_the_query_after_the_question_marker_and_rc_asks_for_grades() {
    let p = prompts();
    let ql = p.query_likelihood("how  thick\nis it", &wing());
    assert!(ql.prompt.ends_with("Please write a question based on this passage.\nQuestion:"), "{}", ql.prompt);
    assert_eq!(ql.continuation, " how thick is it");
    assert_eq!(ql.prompt.matches("Question:").count(), 3, "two few-shot examples and the passage");
    let rc = p.relevance("how thick is it", &wing());
    assert_eq!(rc.labels, RELEVANCE_LABELS.to_vec());
    let Prompt::Text(text) = &rc.prompt else { panic!("completion-style prompt expected") };
    assert!(text.ends_with("Relevance:") && text.contains("Query: how thick is it\n"), "{text}");
}

fn generation(text: &str) -> Result<Generation, LlmError> {
    Ok(Generation { text: text.to_string(), tokens: 3, finish: FinishReason::Stop })
}

#[tokio::test]
async fn generated_queries_come_back_in_order_with_failures_as_values() {
    let backend = ScriptedLlm::new("m").with_generate(|r: &GenerateRequest| {
        let Prompt::Text(text) = &r.prompt else { return Err(LlmError::InvalidRequest("chat".into())) };
        let last = text.rsplit("Passage:").next().unwrap_or_default();
        if last.contains("alpha") {
            generation(" Given a question, find the answer\nQuery: what is alpha made of")
        } else if last.contains("beta") {
            generation(" Find papers\nQuery: Beta title")
        } else {
            Err(LlmError::Call("HTTP 500".into()))
        }
    });
    let llm = FretLlm::new(Arc::new(backend), None, FretOptions::default());
    let passages = [passage("a", "", "alpha text"), passage("b", "Beta title", "beta text"), passage("c", "", "gamma")];
    let got = llm.generate_queries(&passages).await;
    assert_eq!(got.len(), 3);
    let first = got[0].as_ref().unwrap();
    assert_eq!(first.query, "what is alpha made of");
    assert_eq!(first.model, "m");
    assert_eq!(first.prompt_version, llm.prompts().version(PromptKind::QueryGeneration));
    assert!(matches!(got[1], Err(QueryGenFailure::Echoed { of: EchoSource::Title, .. })), "{:?}", got[1]);
    assert!(matches!(got[2], Err(QueryGenFailure::Llm { error: LlmError::Call(_) })), "{:?}", got[2]);
}

#[tokio::test]
async fn an_echoed_answer_is_retried_with_sampling_and_a_failed_call_is_not() {
    // Greedy answers echo the title; the first sampled retry of passage "a" writes a real query, passage "b"
    // echoes every time, passage "c"'s calls fail.
    let backend = Arc::new(ScriptedLlm::new("m").with_generate(|r: &GenerateRequest| {
        let Prompt::Text(text) = &r.prompt else { return Err(LlmError::InvalidRequest("chat".into())) };
        let last = text.rsplit("Passage:").next().unwrap_or_default();
        match (last.contains("alpha"), last.contains("gamma"), r.sampling.temperature > 0.0) {
            (_, true, _) => Err(LlmError::Call("HTTP 500".into())),
            (true, _, true) => generation(" Find the material\nQuery: which metal is alpha made from"),
            (true, _, false) => generation(" Find papers\nQuery: Alpha title"),
            (false, _, _) => generation(" Find papers\nQuery: Beta title"),
        }
    }));
    let options = FretOptions { generation_attempts: 3, ..FretOptions::default() };
    let llm = FretLlm::new(backend.clone(), None, options);
    let passages =
        [passage("a", "Alpha title", "alpha text"), passage("b", "Beta title", "beta text"), passage("c", "", "gamma")];
    let got = llm.generate_queries(&passages).await;
    assert_eq!(got[0].as_ref().unwrap().query, "which metal is alpha made from");
    assert!(matches!(got[1], Err(QueryGenFailure::Echoed { of: EchoSource::Title, .. })), "{:?}", got[1]);
    assert!(matches!(got[2], Err(QueryGenFailure::Llm { .. })), "{:?}", got[2]);
    // a: greedy + 1 retry; b: greedy + 2 retries; c: one failed call, not retried here.
    assert_eq!(llm.model_calls().generate, 2 + 3 + 1);

    let greedy_only = FretLlm::new(backend, None, FretOptions { generation_attempts: 1, ..FretOptions::default() });
    assert!(greedy_only.generate_queries(&passages[..1]).await[0].is_err());
}

#[tokio::test]
async fn further_queries_of_a_passage_sample_with_seeds_of_their_own_and_the_first_is_unchanged() {
    // Every answer names the sampling it came from; variant 1's first answer echoes the title, so it is
    // retried.
    let seen: Arc<Mutex<Vec<(f32, u64)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let backend = Arc::new(ScriptedLlm::new("m").with_generate(move |r: &GenerateRequest| {
        log.lock().unwrap().push((r.sampling.temperature, r.sampling.seed));
        match r.sampling.seed {
            1000 => generation(" Find papers\nQuery: Alpha title"),
            seed => generation(&format!(" Find it\nQuery: which alpha is number {seed}")),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(fretflow::llm::cache::LlmCache::open(dir.path().join("c.redb")).unwrap());
    let llm = FretLlm::new(backend.clone(), Some(Arc::clone(&cache)), FretOptions::default());
    let a = passage("a", "Alpha title", "alpha text");
    let first = llm.generate_queries(std::slice::from_ref(&a)).await;
    assert_eq!(first[0].as_ref().unwrap().query, "which alpha is number 0");
    assert_eq!(*seen.lock().unwrap(), vec![(0.0, 0)], "the first query is greedy, as without variants");

    // Three queries of the passage later, further ones at the default 0.5: the first comes from the cache, the others
    // are sampled with seeds variant * 1000 + attempt, apart from each other and from the first query's
    // retries (1, 2); a retry samples at 0.8 whatever the further queries' temperature.
    seen.lock().unwrap().clear();
    let llm = FretLlm::new(backend, Some(cache), FretOptions::default());
    let got = llm.generate_query_variants(&[(&a, 0), (&a, 1), (&a, 2)]).await;
    let queries: Vec<&str> = got.iter().map(|r| r.as_ref().unwrap().query.as_str()).collect();
    assert_eq!(queries, ["which alpha is number 0", "which alpha is number 1001", "which alpha is number 2000"]);
    let mut calls = seen.lock().unwrap().clone();
    calls.sort_by_key(|&(_, seed)| seed);
    assert_eq!(calls, vec![(0.5, 1000), (0.8, 1001), (0.5, 2000)]);
    assert_eq!((llm.model_calls().generate, llm.cache_hits()), (3, 1));
    assert_eq!(fretflow::llm::fret::query_sampling(0, 0, 0.8), None);
    assert_eq!(fretflow::llm::fret::query_sampling(0, 2, 0.8).map(|s| s.seed), Some(2));
}

#[tokio::test]
async fn rc_is_the_normalized_expected_grade_and_ql_the_sum() {
    let backend = ScriptedLlm::new("m")
        .with_labels(|_: &LabelRequest| Ok(LabelDistribution { probs: vec![0.1, 0.2, 0.3, 0.4] }))
        .with_score(|_: &ScoreRequest| Ok(ContinuationScore { sum_logprob: -3.5, token_logprobs: vec![-1.0, -2.5] }));
    let llm = FretLlm::new(Arc::new(backend), None, FretOptions::default());
    let p = wing();
    let got = llm.judge(&[("how thick", &p)]).await;
    let j = got[0].as_ref().unwrap();
    assert!((j.rc - (0.2 + 0.6 + 1.2) / 3.0).abs() < 1e-6, "{}", j.rc);
    assert_eq!(j.ql, Some(-3.5));
    assert_eq!(j.ql_tokens, 2);
    assert_eq!(j.rc_probs, vec![0.1, 0.2, 0.3, 0.4]);
}

#[tokio::test]
async fn without_ql_support_judgements_keep_rc_and_stop_asking_for_ql() {
    let backend = ScriptedLlm::new("m").with_score(|_: &ScoreRequest| Err(LlmError::Unsupported("no echo".into())));
    let llm = FretLlm::new(Arc::new(backend), None, FretOptions::default());
    let p = wing();
    let first = llm.judge(&[("q1", &p), ("q2", &p)]).await;
    assert!(first.iter().all(|j| j.as_ref().unwrap().ql.is_none()));
    assert!(first.iter().all(|j| j.as_ref().unwrap().rc_probs.len() == 4));
    let score_calls = llm.model_calls().score;
    assert_eq!(score_calls, 2);
    let second = llm.judge(&[("q3", &p)]).await;
    assert!(second[0].as_ref().unwrap().ql.is_none());
    assert_eq!(llm.model_calls().score, score_calls, "no QL request after the backend said it cannot");
}

#[tokio::test]
async fn with_relevance_off_judging_asks_only_for_ql_and_fails_clearly_without_it() {
    let backend = ScriptedLlm::new("m")
        .with_labels(|_: &LabelRequest| Ok(LabelDistribution { probs: vec![0.1, 0.2, 0.3, 0.4] }))
        .with_score(|_: &ScoreRequest| Ok(ContinuationScore { sum_logprob: -3.5, token_logprobs: vec![-1.0, -2.5] }));
    let ql_only = FretOptions { relevance: false, ..FretOptions::default() };
    let llm = FretLlm::new(Arc::new(backend), None, ql_only.clone());
    let p = wing();
    let got = llm.judge(&[("q1", &p), ("q2", &p)]).await;
    for j in &got {
        let j = j.as_ref().unwrap();
        assert_eq!((j.ql, j.rc, j.rc_probs.len(), j.rc_prompt_version.as_str()), (Some(-3.5), 0.0, 0, ""));
    }
    assert_eq!((llm.model_calls().score, llm.model_calls().label), (2, 0));

    let no_ql = ScriptedLlm::new("m").with_score(|_: &ScoreRequest| Err(LlmError::Unsupported("no echo".into())));
    let llm = FretLlm::new(Arc::new(no_ql), None, ql_only);
    let got = llm.judge(&[("q", &p)]).await;
    assert!(matches!(&got[0], Err(LlmError::Unsupported(why)) if why.contains("give RC a weight")), "{:?}", got[0]);
}

#[tokio::test]
async fn a_failed_ql_call_fails_the_judgement() {
    let backend = ScriptedLlm::new("m").with_score(|_: &ScoreRequest| Err(LlmError::Call("timed out".into())));
    let llm = FretLlm::new(Arc::new(backend), None, FretOptions::default());
    let p = wing();
    let got = llm.judge(&[("q", &p)]).await;
    assert!(matches!(got[0], Err(LlmError::Call(_))), "{:?}", got[0]);
}

/// Records the size of every batch it receives.
struct BatchRecorder {
    inner: ScriptedLlm,
    batches: Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl LlmBackend for BatchRecorder {
    fn id(&self) -> BackendId {
        self.inner.id()
    }
    async fn generate(&self, r: Vec<GenerateRequest>) -> Vec<Result<Generation, LlmError>> {
        self.batches.lock().unwrap().push(r.len());
        self.inner.generate(r).await
    }
    async fn score(&self, r: Vec<ScoreRequest>) -> Vec<Result<ContinuationScore, LlmError>> {
        self.inner.score(r).await
    }
    async fn label_probs(&self, r: Vec<LabelRequest>) -> Vec<Result<LabelDistribution, LlmError>> {
        self.inner.label_probs(r).await
    }
}

#[tokio::test]
async fn requests_are_sent_in_batches_of_batch_size_and_duplicates_once() {
    let recorder = Arc::new(BatchRecorder { inner: ScriptedLlm::new("m"), batches: Mutex::new(Vec::new()) });
    let options = FretOptions { batch_size: 4, batches_in_flight: 2, ..FretOptions::default() };
    let llm = FretLlm::new(recorder.clone(), None, options);
    let mut passages: Vec<Passage> =
        (0..10).map(|i| passage(&format!("p{i}"), "", &format!("text number {i} here"))).collect();
    passages.push(passages[0].clone());
    let got = llm.generate_queries(&passages).await;
    assert_eq!(got.len(), 11);
    assert_eq!(got[10].as_ref().unwrap(), got[0].as_ref().unwrap());
    assert_eq!(*recorder.batches.lock().unwrap(), vec![4, 4, 2]);
    assert_eq!(llm.model_calls().generate, 10);
}

/// Runs the `fretflow` binary off the async threads (the scripted server keeps serving meanwhile).
async fn fretflow(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fretflow")).args(&args).output().expect("run fretflow")
    })
    .await
    .unwrap()
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_queries_writes_queries_and_dead_letters_and_a_cached_rerun_only_retries_failures() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .and(body_string_contains("beta garbage"))
        .respond_with(ResponseTemplate::new(200).set_body_string("garbage"))
        .with_priority(1)
        .mount(&server)
        .await;
    let answer =
        serde_json::json!({"choices": [{"text": " Given a question, find the answer\nQuery: when does a wing stall"}]});
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .with_priority(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("passages.jsonl");
    std::fs::write(&input, "{\"_id\":\"a\",\"text\":\"alpha wing stall at a high angle of attack\"}\n{not json\n{\"_id\":\"b\",\"text\":\"beta garbage about flow\"}\n{\"_id\":\"c\",\"text\":\"two words\"}\n").unwrap();
    let output = dir.path().join("queries.jsonl");
    let p = |p: &std::path::Path| p.display().to_string();
    let args: Vec<String> = ["llm", "queries", "--input", &p(&input), "--output", &p(&output), "--llm"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("{}/v1", server.uri()),
            "--model".into(),
            "m".into(),
            "--cache".into(),
            p(&dir.path().join("c.redb")),
        ])
        .collect();
    let run = fretflow(args.clone()).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let queries = lines(&output);
    assert_eq!(queries.len(), 1);
    assert_eq!(
        (queries[0]["seed_id"].as_str(), queries[0]["text"].as_str()),
        (Some("a"), Some("when does a wing stall"))
    );
    let failures = lines(&dir.path().join("queries.failures.jsonl"));
    let reasons: Vec<(&str, &str)> =
        failures.iter().map(|f| (f["input"].as_str().unwrap(), f["reason"].as_str().unwrap())).collect();
    assert!(reasons[0].0.ends_with("passages.jsonl:2") && reasons[0].1 == "malformed_input", "{reasons:?}");
    assert!(reasons[1].0.ends_with("passages.jsonl:4") && reasons[1].1 == "too_short", "{reasons:?}");
    assert!(reasons[2].0.ends_with("passages.jsonl:3") && reasons[2].1 == "llm_error", "{reasons:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2, "a too-short passage is never sent");

    let rerun = fretflow(args).await;
    assert!(rerun.status.success());
    assert_eq!(lines(&output), queries, "the cached answer gives the same query");
    assert_eq!(server.received_requests().await.unwrap().len(), 3, "only the failed passage is asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_queries_per_passage_writes_the_pipelines_query_ids_and_samples_further_queries() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    // Answers by (seed, passage): the second query (seed 1000) of passage b echoes its title, so it is
    // retried (seed 1001).
    let answer = |request: &wiremock::Request| {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let prompt = body["prompt"].as_str().unwrap();
        let passage = if prompt.ends_with("alpha passage words\nTask:") { "alpha" } else { "beta" };
        let query = match (body["seed"].as_u64().unwrap(), passage) {
            (0, p) => format!("{p} passage"),
            (1000, "beta") => "Beta flow".to_string(),
            (1000 | 1001, p) => format!("{p} words"),
            _ => return ResponseTemplate::new(500).set_body_string(format!("unexpected {}", body["seed"])),
        };
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"choices": [{"text": format!(" Find it\nQuery: {query}")}]}))
    };
    Mock::given(method("POST")).and(path("/v1/completions")).respond_with(answer).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("passages.jsonl");
    std::fs::write(
        &input,
        "{\"_id\":\"a\",\"text\":\"alpha passage words\"}\n{\"_id\":\"b\",\"title\":\"Beta flow\",\"text\":\"beta passage words\"}\n",
    )
    .unwrap();
    let output = dir.path().join("queries.jsonl");
    let run_with = |per_passage: &str, temperature: &str| {
        ["llm", "queries", "--input", &input.display().to_string(), "--output", &output.display().to_string()]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "--llm".into(),
                format!("{}/v1", server.uri()),
                "--model".into(),
                "m".into(),
                "--queries-per-passage".into(),
                per_passage.into(),
                "--further-query-temperature".into(),
                temperature.into(),
            ])
            .collect::<Vec<String>>()
    };
    let run = fretflow(run_with("2", "0.3")).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got: Vec<(String, String, String)> = lines(&output)
        .iter()
        .map(|q| {
            (
                q["id"].as_str().unwrap().into(),
                q["seed_id"].as_str().unwrap().into(),
                q["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("q:a", "a", "alpha passage"),
        ("q_1:a", "a", "alpha words"),
        ("q:b", "b", "beta passage"),
        ("q_1:b", "b", "beta words"),
    ];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(i, s, t)| (i.to_string(), s.to_string(), t.to_string())).collect();
    let failures = std::fs::read_to_string(dir.path().join("queries.failures.jsonl")).unwrap();
    assert_eq!(got, want, "the pipeline's ids, each passage's queries in order; failures: {failures}");
    assert_eq!(failures, "");
    let mut sampling: Vec<(u64, String)> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (body["seed"].as_u64().unwrap(), format!("{:.2}", body["temperature"].as_f64().unwrap()))
        })
        .collect();
    sampling.sort();
    let sampling: Vec<(u64, &str)> = sampling.iter().map(|(seed, t)| (*seed, t.as_str())).collect();
    assert_eq!(
        sampling,
        [(0, "0.00"), (0, "0.00"), (1000, "0.30"), (1000, "0.30"), (1001, "0.80")],
        "first queries greedy, further ones at --further-query-temperature, a retry of an echo at 0.8"
    );

    for (per_passage, temperature, says) in
        [("0", "0.5", "at least 1"), ("1001", "0.5", "at most 1000"), ("2", "0", "(0, 2]"), ("2", "2.5", "(0, 2]")]
    {
        let bad = fretflow(run_with(per_passage, temperature)).await;
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success() && stderr.contains(says), "{per_passage} {temperature}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_judge_on_a_server_without_ql_writes_rc_only_judgements() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let top = serde_json::json!({" 3": 0.7f64.ln(), " 2": 0.2f64.ln(), " 1": 0.1f64.ln()});
    let answer = serde_json::json!({"choices": [{"text": " 3", "logprobs": {"tokens": [" 3"], "token_logprobs": [-0.3],
        "text_offset": [0], "top_logprobs": [top]}}]});
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("remote.toml");
    std::fs::write(&config, format!("base_url = \"{}/v1\"\nmodel = \"m\"\nql = \"unsupported\"\n", server.uri()))
        .unwrap();
    let input = dir.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"query_id\":\"q1\",\"query\":\"wing stall\",\"passage\":{\"_id\":\"a\",\"text\":\"stall\"}}\n",
    )
    .unwrap();
    let output = dir.path().join("judgements.jsonl");
    let args = ["llm", "judge", "--input", &input.display().to_string(), "--output", &output.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--remote-config".to_string(), config.display().to_string()])
        .collect();
    let run = fretflow(args).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let judged = lines(&output);
    assert_eq!((judged[0]["query_id"].as_str(), judged[0]["passage_id"].as_str()), (Some("q1"), Some("a")));
    assert!(judged[0]["ql"].is_null());
    // Grades 0..3 with masses 0.1 (floor), 0.1, 0.2, 0.7: expected grade 2.6 / 1.1, divided by 3.
    let rc = judged[0]["rc"].as_f64().unwrap();
    assert!((rc - 2.6 / 1.1 / 3.0).abs() < 1e-6, "{rc}");
}
