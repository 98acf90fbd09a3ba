//! `fretflow run` with a `[train]` table: the pipeline feeds its FRet change stream to a trainer in the same
//! process (instant LLM and hashing embedder for the FRet side, the real all-MiniLM-L6-v2 being trained).
use fretflow::pipeline::config::PipelineConfig;
use serde_json::Value;
use std::path::Path;

fn write_corpus(dir: &Path) {
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let words: Vec<String> = (0..10).map(|k| format!("w{}", (i * 5 + k * 3) % 31)).collect();
            serde_json::json!({"id": format!("p{i}"), "title": format!("passage {i}"), "text": words.join(" ")})
                .to_string()
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
}

/// A file pipeline with the given `[train]` table body.
fn pipeline(dir: &Path, train: &str) -> std::path::PathBuf {
    write_corpus(dir);
    let toml = format!(
        r#"
        [source]
        path = "corpus.jsonl"
        epoch_records = 6
        [llm]
        backend = "instant"
        query_words = 4
        [embedder]
        model = "hashing:32"
        [fret]
        neighbours = 3
        [sinks]
        snapshot = ["out/fret.jsonl"]
        dead_letters = "out/dead.jsonl"
        [train]
        {train}
        "#
    );
    let path = dir.join("p.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn run(config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(["run", "--no-progress"])
        .arg(config)
        .output()
        .expect("run fretflow")
}

/// Runs the pipeline in `dir`, expecting success; its stdout and the `fretflow.json` of its latest checkpoint.
fn run_ok(dir: &Path, config: &Path) -> (String, Value) {
    let output = run(config);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(dir.join("ckpt/latest/fretflow.json")).expect("a checkpoint was written");
    (stdout, serde_json::from_str(&text).unwrap())
}

const TRAIN: &str = r#"out = "ckpt"
        steps = 2
        batch_size = 4
        max_seq_length = 32
        device = "cpu"
        warmup_steps = 0"#;

#[test]
fn after_input_the_trainer_gets_the_whole_fret_set_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &format!("{TRAIN}\n        after_input = true"));
    let (stdout, state) = run_ok(dir.path(), &config);
    assert!(stdout.contains("trained 2 steps"), "{stdout}");
    let examples = std::fs::read_to_string(dir.path().join("out/fret.jsonl")).unwrap().lines().count();
    assert!(examples > 4, "the pipeline made {examples} examples");
    assert_eq!(state["step"], 2);
    assert_eq!(state["data"]["source"], "in-process channel");
    assert_eq!(state["data"]["buffer_examples"].as_u64(), Some(examples as u64), "every example reached the trainer");
    assert_eq!(state["sampler"]["batch_size"], 4);
}

#[test]
fn streaming_training_runs_beside_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &format!("{TRAIN}\n        min-examples = 4\n        precision = \"bf16\""));
    let (_, state) = run_ok(dir.path(), &config);
    assert_eq!(state["step"], 2);
    assert_eq!(state["backward"]["bf16"], true, "the [train] options were applied");
    assert!(state["data"]["buffer_examples"].as_u64().is_some_and(|n| n >= 4), "{}", state["data"]);
}

#[test]
fn a_bad_train_key_is_named_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &format!("{TRAIN}\n        batch_sise = 8"));
    let output = run(&config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[train]") && stderr.contains("unknown field `batch_sise`"), "{stderr}");
    assert!(!dir.path().join("out/fret.jsonl").exists(), "the pipeline did not start");

    let no_out = PipelineConfig::parse(
        "[source]\npath = \"c.jsonl\"\n[llm]\nbackend = \"instant\"\n[sinks]\nsnapshot = [\"f.jsonl\"]\ndead_letters = \"d.jsonl\"\n[train]\nsteps = 1\n",
        Path::new("p.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(no_out.contains("train.out"), "{no_out}");
}
