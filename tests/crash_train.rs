//! `fretflow train` killed anywhere (issue 17, item 2): SIGKILL at kill points spread over a run (seeded,
//! printed), a restart each time, then a last run to the end. Whatever the kill hit (the model load, a step,
//! a checkpoint write), `newest` must always be a complete checkpoint, each restart must continue from it,
//! and the run must end as an uninterrupted one ends: every checkpoint step once, in order, and the last
//! checkpoint's examples count that of the planned steps (no step repeated or skipped). A kill between a
//! checkpoint's write and its manifest line is also made on purpose: the resumed run records it.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const STEPS: u64 = 6;
const BATCH: u64 = 4;

fn train(out: &Path) -> Command {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train/fret_small.jsonl");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fretflow"));
    command
        .args(["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--steps", &STEPS.to_string(), "--batch-size", &BATCH.to_string(), "--checkpoint-every", "2"])
        .args(["--max-seq-length", "64", "--seed", "7"])
        .env("RUST_LOG", "warn");
    command
}

fn json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The step of `newest` when there is one, after checking it is a whole checkpoint: its weights and state
/// are there and the state's step is the directory's.
fn newest_step(out: &Path, what: &str) -> Option<u64> {
    let newest = out.join("newest");
    let dir = std::fs::canonicalize(&newest).ok()?;
    for file in ["model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json"] {
        assert!(dir.join(file).is_file(), "{what}: newest -> {} has no {file}", dir.display());
    }
    let state = json(dir.join("fretflow.json"));
    let step = state["step"].as_u64().unwrap();
    assert!(dir.ends_with(format!("checkpoint-{step:08}")), "{what}: {} holds step {step}", dir.display());
    Some(step)
}

#[test]
fn a_trainer_killed_anywhere_restarts_from_a_whole_checkpoint_and_ends_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ck");
    let started = Instant::now();
    let status = train(&dir.path().join("reference")).status().unwrap();
    assert!(status.success());
    let full = started.elapsed();
    let reference = json(dir.path().join("reference/newest/fretflow.json"));

    let mut state = 29u64; // kill points: a fixed LCG, so a failure names a reproducible trial
    let mut restarts_from = Vec::new();
    for trial in 0..3 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let fraction = 0.1 + 0.5 * ((state >> 40) as f64 / (1u64 << 24) as f64);
        let before = newest_step(&out, &format!("trial {trial}, before"));
        let mut child = train(&out).spawn().unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let what = format!("trial {trial}: killed at {:.0}% of {full:?} (still running: {running})", 100.0 * fraction);
        let after = newest_step(&out, &what);
        assert!(after >= before, "{what}: newest went back from {before:?} to {after:?}");
        eprintln!("{what}: newest {before:?} -> {after:?}");
        restarts_from.push(after);
    }
    // A kill between a checkpoint's write and its manifest line (a short window the kills above rarely
    // hit), made on purpose: the newest checkpoint's line is cut from the manifest.
    let manifest = out.join("checkpoints.jsonl");
    if let (Some(step), Ok(text)) = (newest_step(&out, "before the cut"), std::fs::read_to_string(&manifest)) {
        let kept: String =
            text.lines().filter(|l| !l.contains(&format!("\"step\":{step},"))).map(|l| format!("{l}\n")).collect();
        std::fs::write(&manifest, kept).unwrap();
    }
    let status = train(&out).status().unwrap();
    assert!(status.success());
    assert_eq!(newest_step(&out, "the last run"), Some(STEPS));
    let last = json(out.join("newest/fretflow.json"));
    assert_eq!(last["examples_seen"], reference["examples_seen"], "steps repeated or skipped: {last}");
    assert_eq!(last["examples_seen"].as_u64(), Some(STEPS * BATCH));
    let steps: Vec<u64> = std::fs::read_to_string(out.join("checkpoints.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![2, 4, 6], "the manifest lists each checkpoint once, in order");
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "unfinished checkpoints left behind: {leftovers:?}");
    assert!(
        restarts_from.iter().any(|s| s.is_some_and(|s| s < STEPS)),
        "no kill landed between checkpoints: {restarts_from:?}"
    );
}
