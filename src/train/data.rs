//! Training records: FRet examples and their change stream, extra pair datasets, and the text each
//! encoder input gets.
//!
//! A FRet file or topic carries either bare examples (each an upsert) or change records
//! `{"op": "upsert" | "retract", "key": <query id>, "time"?: <epoch>, "example": {...}}` (a retraction needs
//! no example): [`crate::records::Change`], read by [`crate::connectors::file::fret`].
use super::loss::TeacherScores;
use crate::connectors::file::{jsonl, InputError};
use crate::records::{Example, Passage, Provenance, RankedCandidate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// `k` of the reciprocal rank fusion behind [`TeacherScores::rrf_student`].
pub const RRF_STUDENT_K: f64 = 60.0;

/// The judge's scores of the candidates in an example's `ranking` (best first), by passage id, with
/// [`TeacherScores::rrf_student`] computed over the whole ranking: the RRF (`k` = [`RRF_STUDENT_K`]) of
/// each candidate's rank by `rrf` and its rank by `cosine` (higher first, ties in list order). Empty when
/// there is no ranking.
pub fn teacher_scores(example: &Example) -> HashMap<String, TeacherScores> {
    let entries = &example.ranking;
    let ranks = |key: &dyn Fn(&RankedCandidate) -> f64| {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| key(&entries[b]).total_cmp(&key(&entries[a])));
        let mut rank = vec![0usize; entries.len()];
        for (position, &i) in order.iter().enumerate() {
            rank[i] = position + 1;
        }
        rank
    };
    let (fused, cosine) = (ranks(&|e| e.rrf.get()), ranks(&|e| e.cosine.get()));
    let rrf = |rank: usize| 1.0 / (RRF_STUDENT_K + rank as f64);
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let rrf_student = rrf(fused[i]) + rrf(cosine[i]);
            let scores = TeacherScores { rrf: e.rrf.get(), ql: e.ql.map(|s| s.get()), rc: e.rc.get(), rrf_student };
            (e.id.clone(), scores)
        })
        .collect()
}

/// A `{query, positive}` pair from an extra dataset (no task prefix is added, no hard negatives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairRecord {
    /// Query text, used as is.
    pub query: String,
    /// Positive passage text.
    pub positive: String,
}

/// Reads a pair dataset (JSONL of `{query, positive}`), failing at the first bad line with file and line.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<TrainExample>, InputError> {
    let name = path.file_stem().map_or_else(|| "pairs".to_string(), |s| s.to_string_lossy().into_owned());
    jsonl::records::<PairRecord>(path)?
        .map(|r| r.map(|(line, pair)| TrainExample::from_pair(&format!("{name}:{line}"), &pair)))
        .collect()
}

/// A passage as the encoder sees it, with the id used to spot duplicates and the teacher's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct TextWithId {
    /// Passage id (for pairs: a hash of the text).
    pub id: String,
    /// Encoder input.
    pub text: String,
    /// The judge's scores of this passage for the example's query (`None`: not in its ranking, or a pair).
    pub teacher: Option<TeacherScores>,
}

impl TextWithId {
    fn from_passage(p: &Passage, scores: &HashMap<String, TeacherScores>) -> Self {
        Self { id: p.id.clone(), text: p.embedding_text(), teacher: scores.get(&p.id).copied() }
    }
}

/// One training example in encoder-ready form.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainExample {
    /// The query id (FRet) or `pair:<dataset>:<line>`.
    pub key: String,
    /// Encoder input of the query.
    pub query: String,
    /// The positive passage.
    pub positive: TextWithId,
    /// Hard negatives, best first.
    pub negatives: Vec<TextWithId>,
    /// The passage the query was generated from (FRet; `None` for pairs). It answers the query even when
    /// the judge chose another positive, so the sampler keeps it out of other queries' in-batch negatives.
    pub seed_id: Option<String>,
    /// Who made it (FRet; `None` for pairs): generator, judge and retrieval embedder.
    pub provenance: Option<Provenance>,
}

/// How a FRet example's query is given to the encoder, in training and in the checkpoints' use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum QueryFormat {
    /// `task: {task} | query: {query}`: Gecko's prompt, the task the generator wrote with the query.
    #[default]
    Task,
    /// The query alone, as the base model was trained (all-MiniLM-L6-v2 saw no task prompts; users then
    /// encode plain queries).
    Plain,
}

/// Which FRet examples are trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExampleFilter {
    /// Every example, with the judge's positive.
    #[default]
    All,
    /// Only examples whose judged positive is the passage their query was written for (round-trip
    /// consistency, Promptagator's filter): where it is not, the query's own passage was usually not among
    /// the retrieved candidates, and the chosen positive is a neighbour of a query written for another passage.
    Consistent,
}

impl ExampleFilter {
    /// Whether `e` is trained on.
    pub fn keeps(self, e: &Example) -> bool {
        match self {
            ExampleFilter::All => true,
            ExampleFilter::Consistent => e.positive.id == e.seed_id,
        }
    }
}

impl QueryFormat {
    /// The encoder input of `e`'s query.
    pub fn query_text(self, e: &Example) -> String {
        match self {
            QueryFormat::Task => e.query_text(),
            QueryFormat::Plain => e.query.clone(),
        }
    }
}

impl TrainExample {
    /// From a FRet example: its query in `format`, passages as `title + " " + text`, each with its teacher
    /// scores ([`teacher_scores`]; none when the example has no ranking).
    pub fn from_fret(e: &Example, format: QueryFormat) -> Self {
        let scores = teacher_scores(e);
        Self {
            key: e.query_id.clone(),
            query: format.query_text(e),
            positive: TextWithId::from_passage(&e.positive, &scores),
            negatives: e.negatives.iter().map(|n| TextWithId::from_passage(n, &scores)).collect(),
            seed_id: Some(e.seed_id.clone()).filter(|s| !s.is_empty()),
            provenance: Some(e.provenance.clone()),
        }
    }

    /// From an extra pair; the positive's id is a hash of its text, so equal texts are recognised.
    pub fn from_pair(key: &str, pair: &PairRecord) -> Self {
        let digest = Sha256::digest(pair.positive.as_bytes());
        Self {
            key: format!("pair:{key}"),
            query: pair.query.clone(),
            positive: TextWithId {
                id: format!("sha256:{}", hex::encode(&digest[..12])),
                text: pair.positive.clone(),
                teacher: None,
            },
            negatives: Vec::new(),
            seed_id: None,
            provenance: None,
        }
    }

    /// The query text a near-duplicate is recognised by: the part after the task prefix, lower-cased, its
    /// words (letters and digits) joined by single spaces. "What is lift?" and "what is lift" are one query.
    pub fn normalized_query(&self) -> String {
        let query = self.query.rsplit_once("| query: ").map_or(self.query.as_str(), |(_, q)| q);
        query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    }
}
