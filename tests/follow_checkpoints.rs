//! `[embedder] follow` end to end, as a user runs it: `fretflow run` tails a growing JSONL file, embedding
//! with the hashing encoder, while a checkpoint directory gets a promoted checkpoint (all-MiniLM-L6-v2's
//! sentence-transformers directory, as the trainer writes one, with `latest` pointing at it). The running
//! pipeline switches to it: passages and queries are re-embedded, the top N lists re-mined, the change
//! stream retracts the old examples, and passages appended after the switch are embedded by it. The final
//! FRet set equals a from-scratch run with that model as the configured encoder.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUBJECTS: [&str; 8] = [
    "boundary layer",
    "shock wave",
    "heat transfer",
    "swept wing",
    "turbulent flow",
    "nozzle throat",
    "shell buckling",
    "wing flutter",
];
const VERBS: [&str; 4] = ["grows with", "is measured against", "depends on", "is predicted from"];
const OBJECTS: [&str; 5] =
    ["the Reynolds number", "the Mach number", "wall temperature", "the pressure gradient", "surface roughness"];

/// Passage `i` of the corpus: a sentence about one subject, verb and object.
fn passage(i: usize) -> String {
    let text = format!(
        "The {} {} {} in the experiments of series {}.",
        SUBJECTS[i % SUBJECTS.len()],
        VERBS[(i / 2) % VERBS.len()],
        OBJECTS[(i * 3) % OBJECTS.len()],
        i
    );
    serde_json::json!({"id": format!("p{i}"), "text": text}).to_string() + "\n"
}

fn config(dir: &Path, name: &str, embedder: &str, mode: &str) {
    let toml = format!(
        r#"
        [source]
        path = "corpus.jsonl"
        mode = "{mode}"
        poll_ms = 100
        epoch_records = 4
        [llm]
        backend = "instant"
        query_words = 4
        [embedder]
        {embedder}
        [fret]
        neighbours = 3
        duplicate_queries = {{ threshold = 1.0 }}
        [sinks]
        changes = ["{name}/changes.jsonl"]
        snapshot = ["{name}/fret.jsonl"]
        dead_letters = "{name}/dead.jsonl"
    "#
    );
    std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits up to 120 s for `done` to hold on the change stream's lines.
fn wait_for(changes: &Path, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
    let started = Instant::now();
    while !done(&lines(changes)) {
        assert!(started.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Key -> (positive, ranking ids, cosines) of a snapshot.
fn shapes(snapshot: &[serde_json::Value]) -> BTreeMap<String, (String, Vec<String>, Vec<f64>)> {
    snapshot
        .iter()
        .map(|e| {
            let ranking = e["ranking"].as_array().unwrap();
            (
                e["query_id"].as_str().unwrap().to_string(),
                (
                    e["positive"]["id"].as_str().unwrap().to_string(),
                    ranking.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect(),
                    ranking.iter().map(|r| r["cosine"].as_f64().unwrap()).collect(),
                ),
            )
        })
        .collect()
}

/// The run, killed if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn a_running_pipeline_switches_to_a_newly_promoted_checkpoint_and_re_mines() {
    let dir = tempfile::tempdir().unwrap();
    let model = fretflow::assets::resolve_model("all-MiniLM-L6-v2").expect("make test installs all-MiniLM-L6-v2");
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, (0..12).map(passage).collect::<String>()).unwrap();
    config(dir.path(), "follow", "model = \"hashing:384\"\nfollow = \"checkpoints\"\nfollow_poll_ms = 200", "follow");
    let log_path = dir.path().join("follow.log");
    let run = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(["run", "follow.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut run = Running(run);
    let changes = dir.path().join("follow/changes.jsonl");
    let upserts = |c: &[serde_json::Value]| c.iter().filter(|l| l["op"] == "upsert").count();
    wait_for(&changes, "the hashing encoder's 12 examples", |c| upserts(c) >= 12);
    let before = lines(&changes).len();

    // The trainer promotes a checkpoint: `checkpoints/checkpoint-1` (a sentence-transformers directory),
    // `latest` -> it.
    let checkpoints = dir.path().join("checkpoints");
    std::fs::create_dir(&checkpoints).unwrap();
    std::os::unix::fs::symlink(&model, checkpoints.join("checkpoint-1")).unwrap();
    std::os::unix::fs::symlink("checkpoint-1", checkpoints.join("latest")).unwrap();
    // Every example changes with the encoder (its cosines at least): each key is upserted again.
    let remined = |c: &[serde_json::Value]| {
        c.len() > before && (0..12).all(|i| c[before..].iter().any(|l| l["key"] == format!("q:p{i}").as_str()))
    };
    wait_for(&changes, "every example re-mined by the checkpoint", remined);
    std::thread::sleep(Duration::from_secs(1));
    let mut file = std::fs::OpenOptions::new().append(true).open(&corpus).unwrap();
    file.write_all((12..14).map(passage).collect::<String>().as_bytes()).unwrap();
    drop(file);
    wait_for(&changes, "the appended passages' examples", |c| {
        c.iter().any(|l| l["key"] == "q:p13" && l["op"] == "upsert")
    });
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on the child's own pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(run.0.id() as libc::pid_t, libc::SIGINT) }, 0, "Ctrl-C to the run");
    let status = run.0.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("newly promoted checkpoint"), "the switch is logged: {log}");

    // From scratch with the checkpoint as the configured encoder, over the final corpus.
    config(dir.path(), "scratch", &format!("model = {:?}", model.display().to_string()), "once");
    let scratch = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(["run", "scratch.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(scratch.status.success(), "{}", String::from_utf8_lossy(&scratch.stderr));
    let (followed, expected) =
        (shapes(&lines(&dir.path().join("follow/fret.jsonl"))), shapes(&lines(&dir.path().join("scratch/fret.jsonl"))));
    assert_eq!(followed.len(), 14);
    assert_eq!(followed.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (key, (positive, ranking, cosines)) in &followed {
        let (want_positive, want_ranking, want_cosines) = &expected[key];
        assert_eq!((positive, ranking), (want_positive, want_ranking), "{key}");
        // Batches of other sizes pad differently: cosines agree to float rounding.
        for (got, want) in cosines.iter().zip(want_cosines) {
            assert!((got - want).abs() < 1e-5, "{key}: cosine {got} vs {want}");
        }
    }
    // The change stream replays to the snapshot.
    let all = lines(&changes);
    let mut live = BTreeMap::new();
    for change in &all {
        match change["op"].as_str().unwrap() {
            "upsert" => live.insert(change["key"].as_str().unwrap().to_string(), change["example"].clone()),
            _ => live.remove(change["key"].as_str().unwrap()),
        };
    }
    assert_eq!(shapes(&live.into_values().collect::<Vec<_>>()), followed);
}
