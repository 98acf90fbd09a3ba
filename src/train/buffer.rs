//! The replay buffer that follows the FRet change stream, and batch sampling from it.
//!
//! The buffer holds the current FRet set: an upsert replaces the example with the same query id, a
//! retraction removes it, so retracted examples are never trained on again. Batches are drawn uniformly
//! from the buffer (and, with a mix ratio, from extra pair datasets) with a generator seeded by
//! `(seed, step)`: the same buffer and step give the same batch, which is what lets a restarted trainer
//! repeat exactly the steps it would have taken.
use super::data::{ExampleFilter, QueryFormat, TrainExample};
use super::loss::{TeacherInputs, TeacherScores};
use crate::records::{Change, Provenance};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The current FRet set, keyed by query id, with O(1) upsert, retraction and uniform sampling.
#[derive(Debug, Default)]
pub struct ReplayBuffer {
    examples: Vec<TrainExample>,
    index: HashMap<String, usize>,
    upserts: u64,
    retractions: u64,
    /// Upserts not kept by `filter` (each also removes the key's held example, if any).
    filtered: u64,
    format: QueryFormat,
    filter: ExampleFilter,
}

impl ReplayBuffer {
    /// An empty buffer (queries in Gecko's task format).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty buffer giving FRet queries in `format`.
    pub fn with_format(format: QueryFormat) -> Self {
        Self { format, ..Self::default() }
    }

    /// This buffer, holding only the examples `filter` keeps: an upsert it does not keep removes the key's
    /// held example, so an example that stops being kept is not trained on again.
    pub fn with_filter(self, filter: ExampleFilter) -> Self {
        Self { filter, ..self }
    }

    /// Applies one change; returns whether the buffer changed (retracting an absent key does not).
    pub fn apply(&mut self, change: &Change) -> bool {
        match change.upserted() {
            Some(example) if !self.filter.keeps(example) => {
                self.upserts += 1;
                self.filtered += 1;
                self.remove(change.key())
            }
            Some(example) => {
                self.upserts += 1;
                let example = TrainExample::from_fret(example, self.format);
                match self.index.get(&example.key) {
                    Some(&i) => self.examples[i] = example,
                    None => {
                        self.index.insert(example.key.clone(), self.examples.len());
                        self.examples.push(example);
                    }
                }
                true
            }
            None => {
                let removed = self.remove(change.key());
                self.retractions += u64::from(removed);
                removed
            }
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(i) = self.index.remove(key) else { return false };
        self.examples.swap_remove(i);
        if let Some(moved) = self.examples.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        true
    }

    /// Number of examples currently held.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Every example held (in no particular order).
    pub fn examples(&self) -> &[TrainExample] {
        &self.examples
    }

    /// The example with this query id, if held.
    pub fn get(&self, key: &str) -> Option<&TrainExample> {
        self.index.get(key).map(|&i| &self.examples[i])
    }

    /// Upserts and effective retractions applied so far.
    pub fn change_counts(&self) -> (u64, u64) {
        (self.upserts, self.retractions)
    }

    /// Upserts the filter did not keep.
    pub fn filtered(&self) -> u64 {
        self.filtered
    }

    /// What the buffer holds, for a checkpoint's `fretflow.json` (`data`) and model card: `buffer_examples`,
    /// `upserts`, `retractions`, `filtered_upserts`, `provenance` (`[{generator, judge, embedder,
    /// examples}]`) and `positive_not_seed_share` (share of FRet examples whose positive is not their seed
    /// passage; null without any).
    pub fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut by_provenance: BTreeMap<&Provenance, u64> = BTreeMap::new();
        for p in self.examples.iter().filter_map(|e| e.provenance.as_ref()) {
            *by_provenance.entry(p).or_default() += 1;
        }
        let provenance: Vec<_> = by_provenance
            .into_iter()
            .map(|(p, n)| {
                serde_json::json!({"generator": p.generator, "judge": p.judge, "embedder": p.embedder, "examples": n})
            })
            .collect();
        let fret: Vec<_> = self.examples.iter().filter_map(|e| e.seed_id.as_ref().map(|s| (s, e))).collect();
        let moved = fret.iter().filter(|(seed, e)| **seed != e.positive.id).count();
        let share = (!fret.is_empty()).then(|| moved as f64 / fret.len() as f64);
        let fields = [
            ("buffer_examples", serde_json::json!(self.examples.len())),
            ("upserts", serde_json::json!(self.upserts)),
            ("retractions", serde_json::json!(self.retractions)),
            ("filtered_upserts", serde_json::json!(self.filtered)),
            ("provenance", serde_json::json!(provenance)),
            ("positive_not_seed_share", serde_json::json!(share)),
        ];
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn at(&self, i: usize) -> &TrainExample {
        &self.examples[i]
    }
}

/// How batches are put together.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerConfig {
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Hard negatives taken from each FRet example (its first ones).
    pub hard_negatives: usize,
    /// Fraction of each batch drawn from the extra pair datasets (0 when there are none).
    pub pair_mix_ratio: f64,
    /// Seed of the per-step generator.
    pub seed: u64,
}

/// One training batch: rows of queries and positives line up; negatives are all queries' hard negatives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Keys of the examples (query ids or pair keys), one per query.
    pub keys: Vec<String>,
    /// Query encoder inputs.
    pub queries: Vec<String>,
    /// Positive encoder inputs.
    pub positives: Vec<String>,
    /// Positive passage ids.
    pub positive_ids: Vec<String>,
    /// Hard negative encoder inputs.
    pub negatives: Vec<String>,
    /// Hard negative passage ids.
    pub negative_ids: Vec<String>,
    /// The teacher's scores of each positive (`None` for pairs and passages missing from the ranking).
    pub positive_teachers: Vec<Option<TeacherScores>>,
    /// The teacher's scores of each hard negative, in its own query's ranking.
    pub negative_teachers: Vec<Option<TeacherScores>>,
    /// The row of the query each hard negative belongs to.
    pub negative_owners: Vec<usize>,
}

impl Batch {
    /// Number of queries.
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Whether the batch has no query.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// The teacher scores as the loss takes them.
    pub fn teacher_inputs(&self) -> TeacherInputs<'_> {
        TeacherInputs {
            positives: &self.positive_teachers,
            negatives: &self.negative_teachers,
            negative_owners: &self.negative_owners,
        }
    }

    /// Adds `e` unless it would put a false negative in the batch: its key, its query (up to case,
    /// punctuation and spacing) or one of its passages (positive or seed) is already another row's positive
    /// or seed, where in-batch negatives would push a relevant passage away.
    fn try_push(&mut self, e: &TrainExample, hard_negatives: usize, seen: &mut Seen) -> bool {
        let query = e.normalized_query();
        let claimed = std::iter::once(&e.positive.id).chain(e.seed_id.as_ref());
        if seen.keys.contains(&e.key)
            || seen.queries.contains(&query)
            || claimed.clone().any(|id| seen.passages.contains(id))
        {
            return false;
        }
        seen.keys.insert(e.key.clone());
        seen.queries.insert(query);
        seen.passages.extend(claimed.cloned());
        self.keys.push(e.key.clone());
        self.queries.push(e.query.clone());
        self.positives.push(e.positive.text.clone());
        self.positive_ids.push(e.positive.id.clone());
        self.positive_teachers.push(e.positive.teacher);
        for n in e.negatives.iter().take(hard_negatives) {
            self.negatives.push(n.text.clone());
            self.negative_ids.push(n.id.clone());
            self.negative_teachers.push(n.teacher);
            self.negative_owners.push(self.keys.len() - 1);
        }
        true
    }
}

#[derive(Default)]
struct Seen {
    keys: HashSet<String>,
    /// Normalized query texts ([`TrainExample::normalized_query`]).
    queries: HashSet<String>,
    /// Positive and seed passage ids.
    passages: HashSet<String>,
}

/// Draws the batch for optimizer step `step` (1-based): about `pair_mix_ratio * batch_size` examples from
/// `pairs` and the rest from the buffer, uniformly at random, skipping any example whose key, normalized
/// query text, positive or seed passage is already in the batch (as another row's positive or seed). The
/// batch is smaller than `batch_size` only when the sources do not hold enough compatible examples.
pub fn sample_batch(buffer: &ReplayBuffer, pairs: &[TrainExample], config: &SamplerConfig, step: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(config.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut batch = Batch::default();
    let mut seen = Seen::default();
    let wanted_pairs = if pairs.is_empty() {
        0
    } else if buffer.is_empty() {
        config.batch_size
    } else {
        ((config.batch_size as f64) * config.pair_mix_ratio.clamp(0.0, 1.0)).round() as usize
    };
    let h = config.hard_negatives;
    draw_into(&mut batch, &mut seen, &mut rng, wanted_pairs, pairs.len(), &|i| &pairs[i], h);
    let rest = config.batch_size - batch.len();
    draw_into(&mut batch, &mut seen, &mut rng, rest, buffer.len(), &|i| buffer.at(i), h);
    batch
}

/// Adds up to `want` distinct examples of a source of `len` examples to `batch`: a few random attempts per
/// slot, then a sweep from a random start so that a small source with duplicates still fills it if it can.
fn draw_into<'a>(
    batch: &mut Batch,
    seen: &mut Seen,
    rng: &mut StdRng,
    want: usize,
    len: usize,
    get: &dyn Fn(usize) -> &'a TrainExample,
    hard_negatives: usize,
) {
    if len == 0 || want == 0 {
        return;
    }
    let target = batch.len() + want.min(len);
    for _ in 0..want.min(len) * 4 {
        if batch.len() >= target {
            return;
        }
        batch.try_push(get(rng.random_range(0..len)), hard_negatives, seen);
    }
    let start = rng.random_range(0..len);
    for k in 0..len {
        if batch.len() >= target {
            return;
        }
        batch.try_push(get((start + k) % len), hard_negatives, seen);
    }
}
