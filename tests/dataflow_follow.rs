//! Re-mining with a new encoder version (`[embedder] follow`): when the version collection switches from
//! encoder A to encoder B, every passage and query is re-embedded by B, the top N lists change, and the FRet
//! set's changes at that time are exactly the difference between a from-scratch run with A and one with
//! B; later changes are B's. Only pairs that A's run had not judged reach the model (the durable LLM cache
//! answers the rest). Two deterministic encoders that order the passages differently, 1 and 2 workers.
mod dataflow_support;

use dataflow_support::{delete, upsert, Captured, Run, WordEmbedder};
use fretflow::dataflow::embedder::{EncoderLoader, SharedEmbedder};
use fretflow::dataflow::fret_labeler::FretLabeler;
use fretflow::dataflow::params::{DedupParams, DuplicateAction, FretParams};
use fretflow::dataflow::{Diff, Time};
use fretflow::embed::{EmbedError, TextEmbedder};
use fretflow::llm::cache::LlmCache;
use fretflow::llm::fret::{FretLlm, FretOptions, ScriptedLlm};
use fretflow::records::{Example, SourceRecord};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Encoder B: character trigrams hashed into 64 dimensions (A, [`WordEmbedder`], hashes whole words),
/// so the two order a query's neighbours differently.
struct TrigramEmbedder;

impl TextEmbedder for TrigramEmbedder {
    fn dim(&self) -> usize {
        64
    }

    fn embed(&self, texts: &[&str]) -> Result<tch::Tensor, EmbedError> {
        let mut flat = vec![0f32; texts.len() * 64];
        for (row, text) in texts.iter().enumerate() {
            let chars: Vec<char> = text.to_lowercase().chars().collect();
            for gram in chars.windows(3) {
                let h = gram.iter().fold(2166136261u32, |h, c| (h ^ *c as u32).wrapping_mul(16777619));
                flat[row * 64 + (h % 64) as usize] += 1.0;
            }
        }
        Ok(tch::Tensor::from_slice(&flat).view([texts.len() as i64, 64]))
    }
}

const TEXTS: [&str; 10] = [
    "The boundary layer on a flat plate thickens downstream as friction slows the flow near the wall.",
    "Shock waves form ahead of a blunt body in supersonic flow and raise the pressure behind them.",
    "Heat transfer at the stagnation point of a sphere grows with the square root of the pressure gradient.",
    "A swept wing delays the drag rise that compressibility causes near the speed of sound.",
    "Laminar flow turns turbulent when the Reynolds number passes a critical value near the plate.",
    "Nozzle flow chokes when the throat reaches sonic speed, fixing the mass flow rate through it.",
    "Buckling of thin cylindrical shells under axial compression depends on initial imperfections.",
    "Flutter of a wing occurs when aerodynamic forces couple bending and torsion modes of the structure.",
    "Skin friction on slender bodies in hypersonic flow rises with wall temperature and pressure.",
    "Boundary layer separation behind a shock wave thickens the layer and raises the wall pressure.",
];

const LATE: &str = "Transition of the boundary layer on a swept wing is caused by crossflow near the leading edge.";

fn loader() -> EncoderLoader {
    Arc::new(|version: &str| match version {
        "B" => Ok(Box::new(TrigramEmbedder) as Box<dyn TextEmbedder + Send>),
        other => Err(format!("no test encoder {other:?}")),
    })
}

/// A run with the scripted LLM behind the durable cache at `cache`: what it captured and the backend's
/// model requests.
fn run(run: Run, epochs: Vec<Vec<SourceRecord>>, cache: &Path) -> (Captured, u64) {
    let backend = Arc::new(ScriptedLlm::new("scripted-test"));
    let cache = Arc::new(LlmCache::open(cache).unwrap());
    let llm = Arc::new(FretLlm::new(backend.clone(), Some(cache), FretOptions::default()));
    let captured = run.go(epochs, Arc::new(FretLabeler::new(llm)));
    (captured, backend.requests())
}

fn corpus() -> Vec<SourceRecord> {
    TEXTS.iter().enumerate().map(|(i, t)| upsert(&format!("p{i}"), t, i as u64)).collect()
}

/// Epoch 2's edits: p3 deleted, a late passage that B ranks among several queries' neighbours.
fn edits() -> Vec<SourceRecord> {
    vec![delete("p3", 100), upsert("p10", LATE, 101)]
}

/// One fixed encoder named `test:words` (as the versioned one is, so provenance matches).
fn fixed(embedder: impl TextEmbedder + Send + 'static, params: &FretParams) -> Run {
    Run { embedder: Some(SharedEmbedder::new("test:words", embedder)), params: params.clone(), ..Run::default() }
}

/// The versioned encoder: A (`test:words`) from time 0, B from time 1.
fn switching(workers: usize, params: &FretParams) -> Run {
    Run {
        workers,
        params: params.clone(),
        embedder: Some(SharedEmbedder::new("test:words", WordEmbedder).with_versions(loader())),
        versions: vec![(0, "test:words".to_string()), (1, "B".to_string())],
        ..Run::default()
    }
}

/// The changes that turn `before` into `after`, as consolidated updates at `time`.
fn difference(
    before: &BTreeMap<String, Example>,
    after: &BTreeMap<String, Example>,
    time: Time,
) -> Vec<((String, Example), Time, Diff)> {
    let mut changes = Vec::new();
    for (key, example) in before {
        if after.get(key) != Some(example) {
            changes.push(((key.clone(), example.clone()), time, -1));
        }
    }
    for (key, example) in after {
        if before.get(key) != Some(example) {
            changes.push(((key.clone(), example.clone()), time, 1));
        }
    }
    changes.sort_by(|a, b| (a.1, &a.0, a.2).cmp(&(b.1, &b.0, b.2)));
    changes
}

fn at(changes: &[((String, Example), Time, Diff)], time: Time) -> Vec<((String, Example), Time, Diff)> {
    changes.iter().filter(|c| c.1 == time).cloned().collect()
}

#[test]
fn switching_the_encoder_re_mines_exactly_the_difference_and_judges_only_new_pairs() {
    check_switch(&Run::default().params, "near-duplicate queries off");
}

#[test]
fn switching_the_encoder_with_near_duplicate_queries_dead_lettered_gives_the_same_difference() {
    // At 0.9 the trigram encoder B makes half the generated queries near-duplicates (A gives 10 examples,
    // B 5): the switch dead-letters five queries and retracts their examples.
    let dedup = DedupParams { threshold: 0.9, action: DuplicateAction::DeadLetter };
    check_switch(
        &FretParams { duplicate_queries: Some(dedup), ..Run::default().params },
        "near-duplicates dead-lettered",
    );
}

fn check_switch(params: &FretParams, case: &str) {
    let dir = tempfile::tempdir().unwrap();
    // From scratch: A over the corpus; B over the corpus (sharing A's cache: B's model requests are the
    // pairs A had not judged); B over the edited corpus.
    let shared_cache = dir.path().join("scratch.redb");
    let (a, a_requests) = run(fixed(WordEmbedder, params), vec![corpus()], &shared_cache);
    let (b, b_new_requests) = run(fixed(TrigramEmbedder, params), vec![corpus()], &shared_cache);
    let (b_fresh, b_requests) = run(fixed(TrigramEmbedder, params), vec![corpus()], &dir.path().join("fresh.redb"));
    let mut edited = corpus();
    edited.extend(edits());
    let (b_edited, _) = run(fixed(TrigramEmbedder, params), vec![edited], &dir.path().join("edited.redb"));
    let (a, b, b_edited) = (a.final_set(), b.final_set(), b_edited.final_set());
    assert_eq!(b, b_fresh.final_set());
    assert!(a.len() >= 6 && b.len() >= 3, "{case}: most passages give an example: {} {}", a.len(), b.len());
    let moved = a
        .iter()
        .filter(|(k, e)| b.get(*k).is_none_or(|f| e.ranking.iter().map(|r| &r.id).ne(f.ranking.iter().map(|r| &r.id))))
        .count();
    assert!(
        moved >= 3,
        "{case}: the encoders must order neighbours differently for this test to mean anything ({moved})"
    );
    assert!(
        b_new_requests > 0 && b_new_requests < b_requests,
        "{case}: B shares some pairs with A: {b_new_requests} of {b_requests}"
    );

    for workers in [1, 2] {
        let cache = dir.path().join(format!("follow-{workers}.redb"));
        let (captured, _) = run(switching(workers, params), vec![corpus(), Vec::new(), edits()], &cache);
        let changes = &captured.changes;
        let what = format!("{case}, {workers} workers");
        assert_eq!(at(changes, 0), difference(&BTreeMap::new(), &a, 0), "{what}: time 0 is A's set");
        assert_eq!(at(changes, 1), difference(&a, &b, 1), "{what}: the switch retracts and inserts exactly A -> B");
        assert_eq!(at(changes, 2), difference(&b, &b_edited, 2), "{what}: edits after the switch are B's");
        assert_eq!(captured.final_set(), b_edited);
        // Through the switch the model saw A's requests once and then only B's new pairs.
        let through = dir.path().join(format!("switch-{workers}.redb"));
        let (_, through_switch) = run(switching(workers, params), vec![corpus(), Vec::new()], &through);
        assert_eq!(through_switch, a_requests + b_new_requests, "{what}: the switch judged a pair A had judged");
    }
}
