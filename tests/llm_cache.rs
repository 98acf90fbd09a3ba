//! The durable LLM cache: a restart makes zero model calls for the same inputs, failures are never
//! cached, keys follow backend, model and prompt version, and the store is safe to share.
use fretflow::llm::cache::{CacheKey, LlmCache};
use fretflow::llm::fret::{FretLlm, FretOptions, ScriptedLlm};
use fretflow::llm::prompts::PromptOptions;
use fretflow::llm::{BackendId, FinishReason, GenerateRequest, Generation, LlmError, Prompt};
use fretflow::records::Passage;
use std::path::Path;
use std::sync::Arc;

fn passages() -> Vec<Passage> {
    (0..5)
        .map(|i| Passage {
            id: format!("p{i}"),
            title: String::new(),
            text: format!("passage {i} about supersonic flow number {i} over a cone"),
        })
        .collect()
}

fn llm(path: &Path, model: &str, options: FretOptions) -> FretLlm {
    let cache = Arc::new(LlmCache::open(path).expect("open cache"));
    FretLlm::new(Arc::new(ScriptedLlm::new(model)), Some(cache), options)
}

async fn run_all(llm: &FretLlm) -> (Vec<String>, Vec<String>) {
    let ps = passages();
    let queries: Vec<String> = llm.generate_queries(&ps).await.into_iter().map(|r| format!("{r:?}")).collect();
    let pairs: Vec<(&str, &Passage)> = ps.iter().flat_map(|p| [("cone flow", p), ("wing stall", p)]).collect();
    let judgements: Vec<String> = llm.judge(&pairs).await.into_iter().map(|r| format!("{r:?}")).collect();
    (queries, judgements)
}

#[tokio::test]
async fn a_restart_with_the_same_cache_makes_zero_model_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    let first = llm(&path, "m", FretOptions::default());
    let before = run_all(&first).await;
    let calls = first.model_calls();
    assert_eq!((calls.generate, calls.score, calls.label), (5, 10, 10));
    drop(first);

    let second = llm(&path, "m", FretOptions::default());
    let after = run_all(&second).await;
    assert_eq!(second.model_calls().total(), 0, "every answer comes from the cache file");
    assert_eq!(before, after, "cached answers equal the computed ones");
    let stats = second.cache_stats().unwrap();
    assert_eq!((stats.hits, stats.misses), (25, 0));
}

#[tokio::test]
async fn failed_calls_are_not_cached_and_are_retried_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    let failing_on_p3 = || {
        ScriptedLlm::new("m").with_generate(|r: &GenerateRequest| {
            let Prompt::Text(text) = &r.prompt else { unreachable!() };
            if text.ends_with("number 3 over a cone\nTask:") {
                Err(LlmError::Call("HTTP 503".into()))
            } else {
                Ok(Generation { text: " Find\nQuery: what about cones".into(), tokens: 4, finish: FinishReason::Stop })
            }
        })
    };
    let cache = Arc::new(LlmCache::open(&path).unwrap());
    let first = FretLlm::new(Arc::new(failing_on_p3()), Some(cache), FretOptions::default());
    let got = first.generate_queries(&passages()).await;
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
    drop(first);

    let cache = Arc::new(LlmCache::open(&path).unwrap());
    assert_eq!(cache.len().unwrap(), 4, "only the four successes were stored");
    let second = FretLlm::new(Arc::new(failing_on_p3()), Some(cache), FretOptions::default());
    second.generate_queries(&passages()).await;
    assert_eq!(second.model_calls().generate, 1, "only the failed passage goes back to the model");
}

#[tokio::test]
async fn rejected_answers_are_reparsed_from_the_cache_without_new_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    let echoing = || {
        ScriptedLlm::new("m").with_generate(|_: &GenerateRequest| {
            Ok(Generation { text: String::new(), tokens: 0, finish: FinishReason::Stop })
        })
    };
    let cache = Arc::new(LlmCache::open(&path).unwrap());
    let first = FretLlm::new(Arc::new(echoing()), Some(cache.clone()), FretOptions::default());
    assert!(first.generate_queries(&passages()).await.iter().all(|r| r.is_err()));
    drop(first);
    let second = FretLlm::new(Arc::new(echoing()), Some(cache), FretOptions::default());
    assert!(second.generate_queries(&passages()).await.iter().all(|r| r.as_ref().unwrap_err().reason() == "empty"));
    assert_eq!(second.model_calls().total(), 0, "the model answered; only the parser said no");
}

#[tokio::test]
async fn another_model_or_prompt_version_misses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    run_all(&llm(&path, "m", FretOptions::default())).await;

    let other_model = llm(&path, "m2", FretOptions::default());
    run_all(&other_model).await;
    assert_eq!(other_model.model_calls().total(), 25);
    drop(other_model);

    let zero_shot =
        FretOptions { prompts: PromptOptions { ql_examples: 0, ..PromptOptions::default() }, ..FretOptions::default() };
    let other_ql_prompt = llm(&path, "m", zero_shot);
    run_all(&other_ql_prompt).await;
    let calls = other_ql_prompt.model_calls();
    assert_eq!((calls.generate, calls.score, calls.label), (0, 10, 0), "only the QL prompt changed");
}

#[test]
fn cache_keys_are_pinned_so_caches_of_earlier_runs_stay_valid() {
    // Pinned: a change of how keys are formed (adding the role that asked, say) would orphan every cache
    // written before it, including single-`[llm]` runs that a run with `[llm.generator]`/`[llm.judge]`
    // on the same model should reuse.
    let backend = BackendId { backend: "local".into(), model: "SmolLM2-135M-Instruct".into() };
    let key = CacheKey::new(&backend, "0123abcd", "query_likelihood", br#"{"prompt":"p"}"#);
    assert_eq!(key.to_hex(), "19d60ed2c249753b766e231171626083c41f3ea5a4983159c912439761b80870");
}

fn key(i: u32) -> CacheKey {
    let backend = BackendId { backend: "local".into(), model: "m".into() };
    CacheKey::new(&backend, "v", "relevance", &i.to_le_bytes())
}

#[test]
fn batches_round_trip_and_hits_and_misses_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LlmCache::open(dir.path().join("c.redb")).unwrap();
    cache.put_many(&[(key(1), vec![1.0f32, 2.0]), (key(2), vec![3.0])]).unwrap();
    let got: Vec<Option<Vec<f32>>> = cache.get_many(&[key(2), key(3), key(1)]).unwrap();
    assert_eq!(got, vec![Some(vec![3.0]), None, Some(vec![1.0, 2.0])]);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.writes), (2, 1, 2));
}

#[test]
fn an_entry_of_another_shape_is_a_miss_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LlmCache::open(dir.path().join("c.redb")).unwrap();
    cache.put_many(&[(key(1), "text")]).unwrap();
    let got: Vec<Option<Vec<f32>>> = cache.get_many(&[key(1)]).unwrap();
    assert_eq!(got, vec![None]);
    assert_eq!(cache.stats().misses, 1);
}

#[test]
fn one_cache_is_shared_by_threads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(LlmCache::open(dir.path().join("c.redb")).unwrap());
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for i in 0..25 {
                    cache.put_many(&[(key(t * 100 + i), t * 100 + i)]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let keys: Vec<CacheKey> = (0..4u32).flat_map(|t| (0..25).map(move |i| key(t * 100 + i))).collect();
    let got: Vec<Option<u32>> = cache.get_many(&keys).unwrap();
    assert_eq!(got.iter().flatten().count(), 100);
    assert_eq!(cache.len().unwrap(), 100);
}

#[test]
fn a_cache_in_a_missing_directory_fails_with_its_path() {
    let err = LlmCache::open("/no/such/dir/llm.redb").unwrap_err().to_string();
    assert!(err.contains("/no/such/dir/llm.redb"), "{err}");
}

/// A cache file of `n` entries, closed.
fn filled_cache(path: &Path, n: u32) -> Vec<CacheKey> {
    let cache = LlmCache::open(path).unwrap();
    let backend = BackendId { backend: "local".into(), model: "m".into() };
    let keys: Vec<CacheKey> = (0..n).map(|i| CacheKey::new(&backend, "v1", "generate", &i.to_le_bytes())).collect();
    let entries: Vec<(CacheKey, String)> = keys.iter().map(|k| (*k, "x".repeat(300))).collect();
    for chunk in entries.chunks(50) {
        cache.put_many(chunk).unwrap();
    }
    keys
}

/// Truncated and bit-flipped copies of a cache file never panic: opening one either works (and every read
/// then answers or fails with an error naming the file) or is `Damaged`, naming the file and the way on.
#[test]
fn damaged_cache_files_are_errors_naming_the_file_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.redb");
    let keys = filled_cache(&good, 400);
    let bytes = std::fs::read(&good).unwrap();
    let mut damaged_seen = 0;
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0usize, 1, 100, 4096, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        variants.push((format!("truncated to {cut}"), bytes[..cut].to_vec()));
    }
    let mut state = 7u64;
    for k in 0..24 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut flipped = bytes.clone();
        // Half of the flips land in the first 8 KiB (the header and the first pages), half anywhere.
        let at = (state >> 20) as usize % if k % 2 == 0 { 8192.min(bytes.len()) } else { bytes.len() };
        flipped[at] ^= 1 << (k % 8);
        variants.push((format!("bit {} of byte {at} flipped", k % 8), flipped));
    }
    for (what, content) in variants {
        let path = dir.path().join("c.redb");
        std::fs::write(&path, &content).unwrap();
        let result = std::panic::catch_unwind(|| match LlmCache::open(&path) {
            Ok(cache) => {
                // Opened: reads answer or fail with an error naming the file, never panic.
                if let Err(e) = cache.get_many::<String>(&keys) {
                    assert!(e.to_string().contains("c.redb"), "{what}: {e}");
                }
                None
            }
            Err(e) => Some(e.to_string()),
        });
        let Ok(outcome) = result else { panic!("{what}: opening or reading the cache panicked") };
        if let Some(message) = outcome {
            assert!(message.contains("c.redb"), "{what}: {message}");
            if message.contains("is damaged") {
                damaged_seen += 1;
                assert!(message.contains("--quarantine-damaged-cache"), "{what}: {message}");
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert!(damaged_seen >= 6, "every truncated copy but the empty file is reported as damaged ({damaged_seen} were)");
}

/// With quarantine, a damaged cache is moved aside whole and a new, empty cache takes its place.
#[test]
fn a_damaged_cache_is_quarantined_and_replaced_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.redb");
    filled_cache(&path, 100);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let refused = LlmCache::open_or_quarantine(&path, false).unwrap_err().to_string();
    assert!(refused.contains("is damaged") && refused.contains("llm.redb"), "{refused}");
    let cache = LlmCache::open_or_quarantine(&path, true).unwrap();
    assert_eq!(cache.len().unwrap(), 0, "a new cache");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("llm.redb.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::metadata(dir.path().join(&aside[0])).unwrap().len(), len / 2, "moved whole");
}
