//! Training records: FRet examples and their change stream, extra pair datasets, and the text each
//! encoder input gets.
//!
//! A FRet file or topic carries either bare examples (each an upsert) or change records
//! `{"op": "upsert" | "retract", "key": <query id>, "example": {...}}` (a retraction needs no example).
use super::loss::TeacherScores;
use crate::connectors::file::{jsonl, InputError};
use crate::records::Passage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// `k` of the reciprocal rank fusion behind [`TeacherScores::rrf_student`].
pub const RRF_STUDENT_K: f64 = 60.0;

/// A FRet training example (DESIGN.md, "Records"): a task-prefixed query with its LLM-relabelled positive
/// and hard negatives. `ranking` and `provenance` are kept opaque; the trainer reads the teacher scores of
/// `ranking` leniently ([`FretExample::teacher_scores`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FretExample {
    /// Unique query id; the key of the change stream.
    pub query_id: String,
    /// The generated task description.
    pub task: String,
    /// The generated query.
    pub query: String,
    /// The seed passage the query was generated from.
    #[serde(default)]
    pub seed_id: String,
    /// The positive passage (top of the fused ranking).
    pub positive: Passage,
    /// Hard negatives, best first.
    #[serde(default)]
    pub negatives: Vec<Passage>,
    /// The fused ranking, as produced.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub ranking: serde_json::Value,
    /// Who produced it (generator, judge, embedder, created).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub provenance: serde_json::Value,
}

impl FretExample {
    /// The query side's encoder input: `task: {task} | query: {query}` (Gecko).
    pub fn query_text(&self) -> String {
        format!("task: {} | query: {}", self.task, self.query)
    }

    /// The judge's scores of the candidates in `ranking` (`[{id, cosine, ql, rc, rrf, ...}]`, best first),
    /// by passage id, with [`TeacherScores::rrf_student`] computed over the whole ranking: the RRF
    /// (`k` = [`RRF_STUDENT_K`]) of each candidate's rank by `rrf` and its rank by `cosine` (higher first,
    /// ties in list order). Empty when there is no ranking; an error names what does not parse.
    pub fn teacher_scores(&self) -> Result<HashMap<String, TeacherScores>, String> {
        #[derive(Deserialize)]
        struct Entry {
            id: String,
            cosine: f64,
            ql: Option<f64>,
            rc: f64,
            rrf: f64,
        }
        if self.ranking.is_null() {
            return Ok(HashMap::new());
        }
        let entries = Vec::<Entry>::deserialize(&self.ranking).map_err(|e| format!("ranking: {e}"))?;
        let ranks = |key: &dyn Fn(&Entry) -> f64| {
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_by(|&a, &b| key(&entries[b]).total_cmp(&key(&entries[a])));
            let mut rank = vec![0usize; entries.len()];
            for (position, &i) in order.iter().enumerate() {
                rank[i] = position + 1;
            }
            rank
        };
        let (fused, cosine) = (ranks(&|e| e.rrf), ranks(&|e| e.cosine));
        let rrf = |rank: usize| 1.0 / (RRF_STUDENT_K + rank as f64);
        Ok(entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let rrf_student = rrf(fused[i]) + rrf(cosine[i]);
                (e.id.clone(), TeacherScores { rrf: e.rrf, ql: e.ql, rc: e.rc, rrf_student })
            })
            .collect())
    }
}

/// One change to the FRet set.
// Changes are applied as they arrive, never stored in bulk: boxing the example would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace the example with this query id.
    Upsert(FretExample),
    /// Remove the example with this query id.
    Retract(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Upsert,
    Retract,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRecord {
    op: Op,
    key: String,
    #[serde(default)]
    example: Option<FretExample>,
}

impl Change {
    /// The query id the change is about.
    pub fn key(&self) -> &str {
        match self {
            Change::Upsert(e) => &e.query_id,
            Change::Retract(k) => k,
        }
    }

    /// Parses a change record or a bare example (an upsert); the message names the missing or bad field.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        if value.get("op").is_none() {
            return serde_json::from_value::<FretExample>(value).map(Change::Upsert).map_err(|e| e.to_string());
        }
        let record: ChangeRecord = serde_json::from_value(value).map_err(|e| e.to_string())?;
        match (record.op, record.example) {
            (Op::Retract, _) => Ok(Change::Retract(record.key)),
            (Op::Upsert, None) => Err(format!("upsert of '{}' has no 'example'", record.key)),
            (Op::Upsert, Some(example)) if example.query_id != record.key => {
                Err(format!("upsert key '{}' differs from the example's query_id '{}'", record.key, example.query_id))
            }
            (Op::Upsert, Some(example)) => Ok(Change::Upsert(example)),
        }
    }

    /// Parses one line of a FRet JSONL file or one Kafka message value.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        Self::from_json(serde_json::from_slice(bytes).map_err(|e| e.to_string())?)
    }
}

/// Reads a FRet JSONL file (examples or change records), failing at the first bad line with file and line.
pub fn read_fret_jsonl(path: &Path) -> Result<Vec<Change>, InputError> {
    jsonl::records::<serde_json::Value>(path)?
        .map(|r| {
            let (line, value) = r?;
            Change::from_json(value).map_err(|message| InputError::Malformed {
                path: path.to_path_buf(),
                line,
                message,
            })
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
}

impl TrainExample {
    /// From a FRet example: task-prefixed query, passages as `title + " " + text`, each with its teacher
    /// scores. A ranking that does not parse is logged and leaves the passages without scores (the
    /// example still trains, without distillation).
    pub fn from_fret(e: &FretExample) -> Self {
        let scores = e.teacher_scores().unwrap_or_else(|message| {
            tracing::warn!(query_id = %e.query_id, %message, "No teacher scores: the ranking does not parse.");
            HashMap::new()
        });
        Self {
            key: e.query_id.clone(),
            query: e.query_text(),
            positive: TextWithId::from_passage(&e.positive, &scores),
            negatives: e.negatives.iter().map(|n| TextWithId::from_passage(n, &scores)).collect(),
            seed_id: Some(e.seed_id.clone()).filter(|s| !s.is_empty()),
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
