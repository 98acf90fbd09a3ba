//! Full disks (issue 17): a pipeline sink or a checkpoint whose writes fail stops the run with an error
//! naming the path (no panic, no half-written checkpoint left behind), and a rerun once there is space
//! again completes with nothing lost.
//!
//! The disk is made "full" by a file-size limit (`ulimit -f`), with SIGXFSZ ignored so that a write past
//! the limit fails with EFBIG ("File too large") instead of killing the process: it needs no privileges,
//! where a small tmpfs would need a mount. The run is `fretflow` itself, started through bash.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `fretflow args` in `dir`, with files limited to `limit_kib` KiB when given.
fn fretflow(dir: &Path, limit_kib: Option<u64>, args: &[&str]) -> Output {
    let limit = match limit_kib {
        // `ulimit -f` counts 1024-byte blocks in bash.
        Some(kib) => format!("trap '' XFSZ; ulimit -f {kib}; "),
        None => String::new(),
    };
    Command::new("bash")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_fretflow"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("cannot run bash")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const PIPELINE: &str = r#"
[source]
path = "PASSAGES"
epoch_records = 8
[llm]
backend = "instant"
[embedder]
model = "all-MiniLM-L6-v2"
device = "cpu"
[sinks]
changes = ["out/fret-changes.jsonl"]
snapshot = ["out/fret.jsonl", "out/fret.parquet"]
dead_letters = "out/dead-letters.jsonl"
"#;

#[test]
fn a_pipeline_whose_sink_runs_out_of_space_stops_naming_the_file_and_a_rerun_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let passages = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/passages.jsonl");
    std::fs::write(dir.path().join("p.toml"), PIPELINE.replace("PASSAGES", passages.to_str().unwrap())).unwrap();
    let run = |limit| fretflow(dir.path(), limit, &["run", "p.toml", "--no-progress"]);

    let reference = run(None);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let want = (read(dir.path().join("out/fret.jsonl")), read(dir.path().join("out/fret-changes.jsonl")));
    assert!(want.1.len() > 16 * 1024, "the change stream must outgrow the smallest limit below");

    let mut failed = 0;
    for limit_kib in [4, 16, 64] {
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
        let full = run(Some(limit_kib));
        let text = stderr(&full);
        assert!(!text.contains("panicked"), "limit {limit_kib} KiB: {text}");
        if !full.status.success() {
            failed += 1;
            assert!(text.contains("File too large") && text.contains("out/"), "limit {limit_kib} KiB: {text}");
        }
        // Space again: the rerun writes everything, the same as the uninterrupted run.
        let rerun = run(None);
        assert!(rerun.status.success(), "{}", stderr(&rerun));
        let got = (read(dir.path().join("out/fret.jsonl")), read(dir.path().join("out/fret-changes.jsonl")));
        assert!(got == want, "limit {limit_kib} KiB: the rerun's FRet set differs from the uninterrupted run's");
    }
    assert!(failed >= 2, "only {failed} of the limits made a write fail: the test did not test");
}

#[test]
fn a_checkpoint_that_runs_out_of_space_is_an_error_naming_it_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train/fret_small.jsonl");
    let train = |limit| {
        let args = ["train", "--data", data.to_str().unwrap(), "--out", "ck", "--steps", "4", "--batch-size", "4"];
        fretflow(dir.path(), limit, &[&args[..], &["--checkpoint-every", "2", "--max-seq-length", "64"]].concat())
    };
    // 10 MiB per file: the config files fit, model.safetensors (~90 MB) does not.
    let full = train(Some(10 * 1024));
    let text = stderr(&full);
    assert!(!full.status.success(), "the checkpoint fit under the limit: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("model.safetensors") && text.contains("File too large"), "{text}");
    let ck = dir.path().join("ck");
    let left: Vec<String> =
        std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(left.iter().all(|name| !name.starts_with(".checkpoint-") && !name.starts_with("checkpoint-")), "{left:?}");
    assert!(!ck.join("newest").exists() && !ck.join("latest").exists(), "{left:?}");

    // Space again: the rerun trains all 4 steps and both checkpoints are complete.
    let rerun = train(None);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    let manifest = read(ck.join("checkpoints.jsonl"));
    let steps: Vec<u64> = manifest
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![2, 4]);
    let newest = std::fs::canonicalize(ck.join("newest")).unwrap();
    assert!(newest.ends_with("checkpoint-00000004") && newest.join("model.safetensors").is_file());
}
