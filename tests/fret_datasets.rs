//! The FRet Parquet snapshot as a Hugging Face user takes it (issue 15): `datasets.load_dataset("parquet")`
//! reads the trainer's columns (`anchor`, `positive`, `negative`, `negatives`), the task and the provenance,
//! with the texts fretflow's own trainer encodes, and sentence-transformers trains a step on
//! `select_columns(["anchor", "positive", "negative"])` as it comes. The checks are in
//! tests/fixtures/fret/check_datasets.py, run with the project's Python (.venv, from `make test`'s setup).
mod prereq;

use std::path::Path;
use std::process::Command;

#[test]
fn the_parquet_snapshot_loads_with_datasets_and_trains_with_sentence_transformers() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    if !python.is_file() {
        prereq::missing(&format!("{} is missing (scripts/setup.sh python installs it)", python.display()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let passages = repo.join("data/sample/passages.jsonl");
    let pipeline = format!(
        "[source]\npath = {passages:?}\nepoch_records = 8\n[llm]\nbackend = \"instant\"\n[embedder]\n\
         model = \"all-MiniLM-L6-v2\"\ndevice = \"cpu\"\n[sinks]\nsnapshot = [\"out/fret.parquet\"]\n\
         dead_letters = \"out/dead-letters.jsonl\"\n",
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(["run", "p.toml", "--no-progress"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let model = fretflow::assets::resolve_model("all-MiniLM-L6-v2").unwrap();
    let check = Command::new(&python)
        .arg(repo.join("tests/fixtures/fret/check_datasets.py"))
        .arg(dir.path().join("out/fret.parquet"))
        .arg(&model)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", dir.path().join("hf-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&check.stderr));
    assert!(stdout.contains("rows with columns") && stdout.contains("trained 1 step"), "{stdout}");
}
