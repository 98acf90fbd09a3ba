//! A rerun with the same durable LLM cache makes zero LLM calls and rebuilds the same FRet set.
//! Uses the LLM layer's cache (`FretLlm` over redb) with its scripted stand-in backend.
mod dataflow_support;

use dataflow_support::{upsert, Run};
use fretflow::dataflow::fret_labeler::FretLabeler;
use fretflow::llm::cache::LlmCache;
use fretflow::llm::fret::{FretLlm, FretOptions, ScriptedLlm};
use std::sync::Arc;

const TEXTS: [&str; 6] = [
    "The boundary layer on a flat plate thickens downstream as friction slows the flow near the wall.",
    "Shock waves form ahead of a blunt body in supersonic flow and raise the pressure behind them.",
    "Heat transfer at the stagnation point of a sphere grows with the square root of the pressure gradient.",
    "A swept wing delays the drag rise that compressibility causes near the speed of sound.",
    "Laminar flow turns turbulent when the Reynolds number passes a critical value.",
    "Nozzle flow chokes when the throat reaches sonic speed, fixing the mass flow rate.",
];

#[test]
fn a_rerun_with_the_same_cache_makes_no_llm_call_and_gives_the_same_set() {
    let dir = tempfile::tempdir().unwrap();
    let cache_path = dir.path().join("llm-cache.redb");
    let run = || {
        let backend = Arc::new(ScriptedLlm::new("scripted-test"));
        let cache = Arc::new(LlmCache::open(&cache_path).unwrap());
        let llm = Arc::new(FretLlm::new(backend.clone(), Some(cache), FretOptions::default()));
        let epochs = vec![
            TEXTS[..3].iter().enumerate().map(|(i, t)| upsert(&format!("p{i}"), t, i as u64)).collect(),
            TEXTS[3..].iter().enumerate().map(|(i, t)| upsert(&format!("p{}", i + 3), t, 10 + i as u64)).collect(),
        ];
        let captured = Run::default().go(epochs, Arc::new(FretLabeler::new(llm)));
        (captured.final_set(), backend.requests())
    };
    let (first, first_calls) = run();
    assert!(first.len() >= 4, "most passages get an example: {first:#?}");
    assert!(first_calls > 0);
    let (second, second_calls) = run();
    assert_eq!(second_calls, 0, "the rerun called the LLM");
    assert_eq!(second, first);
}
