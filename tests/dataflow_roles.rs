//! Generator and judge as separate roles: queries come from the generator's backend, judgements from the
//! judge's, each example's provenance names both, and a split run reuses a single-LLM run's cache.
mod dataflow_support;

use dataflow_support::{shape, upsert, Captured, Run};
use fretflow::dataflow::fret_labeler::FretLabeler;
use fretflow::dataflow::labeler::{Labeler, SplitLabeler};
use fretflow::llm::cache::LlmCache;
use fretflow::llm::fret::{FretLlm, FretOptions, ScriptedLlm};
use fretflow::llm::LlmError;
use fretflow::records::SourceRecord;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const TEXTS: [&str; 6] = [
    "The boundary layer on a flat plate thickens downstream as friction slows the flow near the wall.",
    "Shock waves form ahead of a blunt body in supersonic flow and raise the pressure behind them.",
    "Heat transfer at the stagnation point of a sphere grows with the square root of the pressure gradient.",
    "A swept wing delays the drag rise that compressibility causes near the speed of sound.",
    "Laminar flow turns turbulent when the Reynolds number passes a critical value.",
    "Nozzle flow chokes when the throat reaches sonic speed, fixing the mass flow rate.",
];

fn epochs() -> Vec<Vec<SourceRecord>> {
    vec![
        TEXTS[..3].iter().enumerate().map(|(i, t)| upsert(&format!("p{i}"), t, i as u64)).collect(),
        TEXTS[3..].iter().enumerate().map(|(i, t)| upsert(&format!("p{}", i + 3), t, 10 + i as u64)).collect(),
    ]
}

fn fret(backend: Arc<ScriptedLlm>, cache: Option<Arc<LlmCache>>) -> Arc<dyn Labeler> {
    Arc::new(FretLabeler::new(Arc::new(FretLlm::new(backend, cache, FretOptions::default()))))
}

fn open(path: &Path) -> Option<Arc<LlmCache>> {
    Some(Arc::new(LlmCache::open(path).unwrap()))
}

#[test]
fn generation_goes_to_the_generator_judging_to_the_judge_and_provenance_names_both() {
    // Each backend fails, and counts, what belongs to the other role.
    let misrouted = Arc::new(AtomicU64::new(0));
    let wrong_role = |what: &'static str| {
        let misrouted = Arc::clone(&misrouted);
        move || {
            misrouted.fetch_add(1, Ordering::Relaxed);
            LlmError::Model(format!("{what} sent to the wrong role"))
        }
    };
    let (generation, scoring, labels) = (wrong_role("generation"), wrong_role("scoring"), wrong_role("labels"));
    let generator =
        Arc::new(ScriptedLlm::new("writer").with_score(move |_| Err(scoring())).with_labels(move |_| Err(labels())));
    let judge = Arc::new(ScriptedLlm::new("grader").with_generate(move |_| Err(generation())));
    let split = Arc::new(SplitLabeler::new(fret(generator.clone(), None), fret(judge.clone(), None)));
    let captured = Run::default().go(epochs(), split.clone());

    assert_eq!(misrouted.load(Ordering::Relaxed), 0, "a request reached the other role's backend");
    let set = captured.final_set();
    assert!(set.len() >= 4, "most passages get an example: {set:#?}");
    // At least one generation per passage; every judged pair asks for QL and RC.
    assert!(generator.requests() >= TEXTS.len() as u64);
    assert!(judge.requests() >= 2 * set.len() as u64);
    assert_eq!(split.stats().model_calls, generator.requests() + judge.requests());
    for example in set.values() {
        assert_eq!(example.provenance.generator.model, "scripted:writer");
        assert_eq!(example.provenance.judge.model, "scripted:grader");
        assert!(example.provenance.judge.prompt_version.starts_with("ql:"));
    }

    // The same answers as one LLM in both roles: only the provenance differs.
    let single = Run::default().go(epochs(), fret(Arc::new(ScriptedLlm::new("writer")), None));
    let shapes = |c: &Captured| c.final_set().values().map(shape).collect::<Vec<_>>();
    assert_eq!(shapes(&captured), shapes(&single));
}

#[test]
fn a_split_run_is_answered_from_the_cache_of_a_single_llm_run_with_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm-cache.redb");
    let single_backend = Arc::new(ScriptedLlm::new("same-model"));
    let single = Run::default().go(epochs(), fret(single_backend.clone(), open(&path)));
    assert!(single_backend.requests() > 0);

    // Two instances of the same model, one per role, over the same cache file.
    let cache = open(&path);
    let (generator, judge) = (Arc::new(ScriptedLlm::new("same-model")), Arc::new(ScriptedLlm::new("same-model")));
    let split = Arc::new(SplitLabeler::new(fret(generator.clone(), cache.clone()), fret(judge.clone(), cache.clone())));
    let rerun = Run::default().go(epochs(), split.clone());
    assert_eq!((generator.requests(), judge.requests()), (0, 0), "the split run called a model");
    let stats = split.stats();
    assert_eq!(stats.model_calls, 0);
    // The roles' hits add up to the shared cache's own count: none is counted twice.
    let cache_hits = cache.unwrap().stats().hits;
    assert!(cache_hits >= single_backend.requests());
    assert_eq!(stats.cache_hits, cache_hits);
    assert_eq!(rerun.final_set(), single.final_set());
}
