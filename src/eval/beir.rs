//! Loading a dataset in BEIR layout: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`.
//!
//! - `corpus.jsonl`: one `{"_id", "title"?, "text"}` per line ([`Passage`]); other fields are ignored.
//! - `queries.jsonl`: one `{"_id", "text"}` per line ([`BeirQuery`]); other fields (`metadata`) are ignored.
//! - `qrels/<split>.tsv`: `query-id<TAB>corpus-id<TAB>score`, the score a (graded) integer. The first line
//!   is a header when its third field is not an integer (BEIR writes `query-id`, `corpus-id`, `score`).
//!
//! Blank lines are skipped everywhere. Every error names the file and, where there is one, the line:
//! a missing file, a malformed line, an id given twice, an empty corpus, a judgment repeated.
//!
//! # Judgments naming unknown ids
//! A qrels line whose query id is not in `queries.jsonl`, or whose corpus id is not in the corpus, is an
//! error by default ([`UnknownIds::Error`]): the first would never be evaluated, the second could never be
//! retrieved, so either silently lowers or skews the numbers. With [`UnknownIds::Warn`] they are counted,
//! logged, and handled as trec_eval would: judgments of unknown queries are dropped (no run exists for
//! them); judgments of unknown passages are kept, so they still count as relevant documents a system
//! failed to retrieve.
use crate::connectors::file::{jsonl, InputError};
use crate::records::Passage;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A query of a BEIR dataset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BeirQuery {
    /// Query id (`_id` in the file).
    #[serde(alias = "_id")]
    pub id: String,
    /// Query text, encoded as is.
    pub text: String,
}

/// What to do with qrels lines naming ids absent from the queries or the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownIds {
    /// Fail, naming the first such line and how many there are.
    #[default]
    Error,
    /// Count and log them; drop judgments of unknown queries, keep those of unknown passages.
    Warn,
}

/// How to load a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Which qrels file: `qrels/<split>.tsv`.
    pub split: String,
    /// Policy for judgments naming unknown ids.
    pub unknown_ids: UnknownIds,
}

impl Default for LoadOptions {
    /// The `test` split; unknown ids are errors.
    fn default() -> Self {
        Self { split: "test".to_string(), unknown_ids: UnknownIds::Error }
    }
}

/// Relevance judgments: query id to passage id to grade.
pub type Qrels = BTreeMap<String, HashMap<String, i32>>;

/// A loaded BEIR dataset.
#[derive(Debug, Clone)]
pub struct BeirDataset {
    /// Name of the dataset (its directory's name).
    pub name: String,
    /// The directory it was loaded from.
    pub root: PathBuf,
    /// The qrels split used.
    pub split: String,
    /// Passages in file order.
    pub corpus: Vec<Passage>,
    /// Queries in file order.
    pub queries: Vec<BeirQuery>,
    /// Judgments by query id, then passage id.
    pub qrels: Qrels,
    /// Qrels lines dropped because their query id is not in the queries (only with [`UnknownIds::Warn`]).
    pub unknown_query_judgments: usize,
    /// Qrels lines kept although their passage id is not in the corpus (only with [`UnknownIds::Warn`]).
    pub unknown_passage_judgments: usize,
}

/// Why a dataset could not be loaded. Each variant names the file, and the line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum BeirError {
    /// The dataset directory does not exist.
    #[error("dataset directory {0} does not exist or is not a directory")]
    NoDirectory(PathBuf),
    /// A required file is missing.
    #[error("{path} is missing: a BEIR dataset directory holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv")]
    MissingFile {
        /// The file expected.
        path: PathBuf,
    },
    /// A file could not be read or a JSONL line is malformed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// An id appears on two lines of the same file.
    #[error("{path}:{line}: id '{id}' was already given on line {first_line}")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The line repeating it.
        line: usize,
        /// The id.
        id: String,
        /// The line first giving it.
        first_line: usize,
    },
    /// A file holds no record.
    #[error("{path} holds no {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
    },
    /// A qrels line names an id absent from the queries or the corpus.
    #[error(
        "{path}:{line}: {kind} id '{id}' is not in {other} ({count} qrels line(s) name unknown {kind} ids; \
         fix the dataset, or pass --allow-unknown-ids to count and skip them)"
    )]
    UnknownId {
        /// The qrels file.
        path: PathBuf,
        /// The first such line.
        line: usize,
        /// `query` or `corpus`.
        kind: &'static str,
        /// The id on that line.
        id: String,
        /// The file that lacks it.
        other: PathBuf,
        /// How many qrels lines name unknown ids of this kind.
        count: usize,
    },
}

impl BeirDataset {
    /// Loads the dataset in directory `dir`.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self, BeirError> {
        if !dir.is_dir() {
            return Err(BeirError::NoDirectory(dir.to_path_buf()));
        }
        let corpus_path = dir.join("corpus.jsonl");
        let queries_path = dir.join("queries.jsonl");
        let qrels_path = dir.join("qrels").join(format!("{}.tsv", opts.split));
        for path in [&corpus_path, &queries_path, &qrels_path] {
            if !path.is_file() {
                return Err(BeirError::MissingFile { path: path.clone() });
            }
        }
        let (corpus, corpus_lines) = read_unique::<Passage>(&corpus_path, |p| &p.id)?;
        if corpus.is_empty() {
            return Err(BeirError::Empty { path: corpus_path, what: "passages" });
        }
        let (queries, query_lines) = read_unique::<BeirQuery>(&queries_path, |q| &q.id)?;
        if queries.is_empty() {
            return Err(BeirError::Empty { path: queries_path, what: "queries" });
        }
        let lines = read_qrels(&qrels_path)?;
        if lines.is_empty() {
            return Err(BeirError::Empty { path: qrels_path, what: "judgments" });
        }
        let mut unknown_queries = Vec::new();
        let mut unknown_passages = Vec::new();
        let mut qrels = Qrels::new();
        for line in lines {
            if !query_lines.contains_key(&line.query) {
                unknown_queries.push(line);
                continue;
            }
            if !corpus_lines.contains_key(&line.passage) {
                unknown_passages.push((line.line, line.passage.clone()));
            }
            qrels.entry(line.query).or_default().insert(line.passage, line.grade);
        }
        for (kind, other, unknown) in [
            ("query", &queries_path, unknown_queries.iter().map(|l| (l.line, l.query.clone())).collect::<Vec<_>>()),
            ("corpus", &corpus_path, unknown_passages.clone()),
        ] {
            let Some((line, id)) = unknown.first().cloned() else { continue };
            if opts.unknown_ids == UnknownIds::Error {
                let (path, other, count) = (qrels_path.clone(), other.clone(), unknown.len());
                return Err(BeirError::UnknownId { path, line, kind, id, other, count });
            }
            tracing::warn!(file = %qrels_path.display(), kind, count = unknown.len(), first_line = line, first_id = %id,
                "Qrels lines name ids that are not in the dataset.");
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        tracing::info!(dataset = %name, passages = corpus.len(), queries = queries.len(),
            judged_queries = qrels.len(), "Loaded BEIR dataset.");
        Ok(Self {
            name,
            root: dir.to_path_buf(),
            split: opts.split.clone(),
            corpus,
            queries,
            qrels,
            unknown_query_judgments: unknown_queries.len(),
            unknown_passage_judgments: unknown_passages.len(),
        })
    }

    /// Number of judgments (qrels lines kept).
    pub fn judgments(&self) -> usize {
        self.qrels.values().map(HashMap::len).sum()
    }
}

/// Reads a JSONL file of records with ids, failing on a malformed line or a repeated id. Returns the
/// records in file order and each id's line.
fn read_unique<T: serde::de::DeserializeOwned>(
    path: &Path,
    id_of: impl Fn(&T) -> &String,
) -> Result<(Vec<T>, HashMap<String, usize>), BeirError> {
    let mut records = Vec::new();
    let mut lines = HashMap::new();
    for item in jsonl::records::<T>(path)? {
        let (line, record) = item?;
        let id = id_of(&record).clone();
        if let Some(&first_line) = lines.get(&id) {
            return Err(BeirError::DuplicateId { path: path.to_path_buf(), line, id, first_line });
        }
        lines.insert(id, line);
        records.push(record);
    }
    Ok((records, lines))
}

/// One judgment line of a qrels file.
#[derive(Debug, Clone)]
struct QrelLine {
    line: usize,
    query: String,
    passage: String,
    grade: i32,
}

/// Parses a qrels TSV file (see the module docs), failing on a malformed or repeated line.
fn read_qrels(path: &Path) -> Result<Vec<QrelLine>, BeirError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Open { path: path.to_path_buf(), source })?;
    let malformed = |line: usize, message: String| InputError::Malformed { path: path.to_path_buf(), line, message };
    let mut out = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut first = true;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split('\t').collect();
        if fields.len() != 3 {
            let message = format!(
                "expected 3 tab-separated fields (query-id, corpus-id, score), found {}: {raw:?}",
                fields.len()
            );
            return Err(malformed(line, message).into());
        }
        let grade = fields[2].trim().parse::<i32>();
        if std::mem::take(&mut first) && grade.is_err() {
            continue; // the header
        }
        let grade = grade.map_err(|_| malformed(line, format!("score {:?} is not an integer", fields[2])))?;
        let (query, passage) = (fields[0].trim().to_string(), fields[1].trim().to_string());
        if query.is_empty() || passage.is_empty() {
            return Err(malformed(line, "empty query-id or corpus-id".to_string()).into());
        }
        if let Some(first_line) = seen.insert((query.clone(), passage.clone()), line) {
            let message = format!("judgment of query '{query}' and passage '{passage}' repeats line {first_line}");
            return Err(malformed(line, message).into());
        }
        out.push(QrelLine { line, query, passage, grade });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: &str =
        "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"one\"}\n\n{\"_id\": \"d2\", \"text\": \"two\"}\n";
    const QUERIES: &str =
        "{\"_id\": \"q1\", \"text\": \"first\", \"metadata\": {}}\n{\"_id\": \"q2\", \"text\": \"second\"}\n";
    const QRELS: &str = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\r\n\nq2\td2\t1\n";

    /// Writes a dataset directory with the given files and returns it.
    fn dataset(corpus: &str, queries: &str, qrels: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corpus.jsonl"), corpus).unwrap();
        std::fs::write(dir.path().join("queries.jsonl"), queries).unwrap();
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        std::fs::write(dir.path().join("qrels/test.tsv"), qrels).unwrap();
        dir
    }

    fn load_err(corpus: &str, queries: &str, qrels: &str) -> String {
        let dir = dataset(corpus, queries, qrels);
        BeirDataset::load(dir.path(), &LoadOptions::default()).unwrap_err().to_string()
    }

    #[test]
    fn loads_passages_queries_and_graded_judgments_skipping_header_and_blank_lines() {
        let dir = dataset(CORPUS, QUERIES, QRELS);
        let data = BeirDataset::load(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(data.corpus.len(), 2);
        assert_eq!(data.corpus[0].embedding_text(), "T one");
        assert_eq!(data.queries[1], BeirQuery { id: "q2".into(), text: "second".into() });
        assert_eq!(data.qrels["q1"]["d1"], 2);
        assert_eq!(data.qrels["q1"]["d2"], 0);
        assert_eq!(data.judgments(), 3);
    }

    #[test]
    fn headerless_qrels_keep_their_first_line() {
        let dir = dataset(CORPUS, QUERIES, "q1\td1\t1\n");
        let data = BeirDataset::load(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(data.judgments(), 1);
    }

    #[test]
    fn missing_directory_and_files_are_named() {
        let err = BeirDataset::load(Path::new("/no/such/dataset"), &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/no/such/dataset"), "{err}");
        let dir = dataset(CORPUS, QUERIES, QRELS);
        let opts = LoadOptions { split: "dev".into(), ..Default::default() };
        let err = BeirDataset::load(dir.path(), &opts).unwrap_err().to_string();
        assert!(err.contains("qrels/dev.tsv") && err.contains("is missing"), "{err}");
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let err = load_err("{\"_id\": \"d1\", \"text\": \"x\"}\n{\"_id\": \"d2\", \"text\": \n", QUERIES, QRELS);
        assert!(err.contains("corpus.jsonl:2:"), "{err}");
        let err = load_err(CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\n");
        assert!(err.contains("test.tsv:2:") && err.contains("3 tab-separated fields"), "{err}");
        let err = load_err(CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\thigh\n");
        assert!(err.contains("test.tsv:2:") && err.contains("not an integer"), "{err}");
        let err = load_err(CORPUS, QUERIES, "q1\td1\t1\nq1\td1\t2\n");
        assert!(err.contains("test.tsv:2:") && err.contains("repeats line 1"), "{err}");
    }

    #[test]
    fn duplicate_ids_and_empty_files_are_errors() {
        let err = load_err(CORPUS, "{\"_id\": \"q1\", \"text\": \"a\"}\n{\"_id\": \"q1\", \"text\": \"b\"}\n", QRELS);
        assert!(err.contains("queries.jsonl:2:") && err.contains("line 1"), "{err}");
        let err = load_err("\n", QUERIES, QRELS);
        assert!(err.contains("corpus.jsonl holds no passages"), "{err}");
        let err = load_err(CORPUS, QUERIES, "query-id\tcorpus-id\tscore\n");
        assert!(err.contains("holds no judgments"), "{err}");
    }

    #[test]
    fn unknown_ids_fail_by_default_and_are_counted_when_allowed() {
        let qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq2\td7\t1\n";
        let err = load_err(CORPUS, QUERIES, qrels);
        assert!(err.contains("test.tsv:3: query id 'q9' is not in") && err.contains("queries.jsonl"), "{err}");
        let err = load_err(CORPUS, QUERIES, "q1\td1\t1\nq2\td7\t1\n");
        assert!(err.contains("test.tsv:2: corpus id 'd7'") && err.contains("corpus.jsonl"), "{err}");

        let dir = dataset(CORPUS, QUERIES, qrels);
        let opts = LoadOptions { unknown_ids: UnknownIds::Warn, ..Default::default() };
        let data = BeirDataset::load(dir.path(), &opts).unwrap();
        assert_eq!((data.unknown_query_judgments, data.unknown_passage_judgments), (1, 1));
        assert!(!data.qrels.contains_key("q9"));
        assert_eq!(data.qrels["q2"]["d7"], 1, "judgments of unknown passages still count as relevant");
    }
}
