//! `fretflow run` on a Kafka pipeline, as a user runs it: the real binary, a pipeline file with `[kafka]`,
//! `[kafka.source]` and `[kafka.sink]`, and the project's real broker. The plumbing tests use the instant
//! word-overlap labeler and the `hashing:64` embedder; the last test uses the local SmolLM2 model.
//!
//! Run with the broker: `scripts/with-kafka.sh cargo test --test kafka_run`.
mod kafka_support;
mod prometheus_support;

use fretflow::dataflow::generate::{query_id, query_ids};
use kafka_support::*;
use prometheus_support::{endpoint, scrape};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPICS: [&str; 6] = ["wing", "boundary", "shock", "heat", "flutter", "nozzle"];

/// `n` passages `p0..`, each about two of six topics, so retrieval has neighbours to rank.
fn corpus(n: usize) -> Vec<Raw> {
    (0..n)
        .map(|i| {
            let (a, b) = (TOPICS[i % 6], TOPICS[(i / 6) % 6]);
            passage(&format!("p{i}"), &format!("{a} layer study number {i} of the {a} problem with {b} effects"))
        })
        .collect()
}

/// Topics and group of one pipeline.
struct Names {
    input: String,
    output: String,
    group: String,
}

impl Names {
    fn new(input: &str) -> Self {
        Self { input: input.to_owned(), output: unique("fret"), group: unique("group") }
    }
}

/// Writes a Kafka pipeline file into `dir` (summary next to it) with the given `[llm]` body.
fn pipeline(dir: &Path, bootstrap: &str, names: &Names, llm: &str) -> PathBuf {
    pipeline_with(dir, bootstrap, names, llm, 1)
}

/// [`pipeline`] writing `queries_per_passage` queries per passage.
fn pipeline_with(dir: &Path, bootstrap: &str, names: &Names, llm: &str, queries_per_passage: u32) -> PathBuf {
    let text = format!(
        r#"workers = 2
cache = "llm-cache.redb"

[kafka]
bootstrap_servers = "{bootstrap}"

[kafka.source]
topic = "{input}"
group_id = "{group}"

[kafka.sink]
topic = "{output}"
partitions = 3

[llm]
{llm}

[embedder]
model = "hashing:64"

[fret]
neighbours = 3
queries_per_passage = {queries_per_passage}
# Passages of one topic start with the same words, so their queries coincide: no near-duplicate check.
duplicate_queries = {{ threshold = 1.0 }}

[batching]
llm = {{ max_batch = 8, max_wait_ms = 5, max_in_flight = 2 }}
embed = {{ max_batch = 64, max_wait_ms = 5 }}

[sinks]
summary = "summary.json"
"#,
        input = names.input,
        output = names.output,
        group = names.group,
    );
    write(dir, "pipeline.toml", &text)
}

const INSTANT: &str = "backend = \"instant\"\nquery_words = 4";

fn fretflow(config: &Path, idle_exit: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fretflow"));
    command.args(["run", config.to_str().unwrap(), "-w", "2", "--no-progress"]);
    if let Some(seconds) = idle_exit {
        command.args(["--idle-exit", seconds]);
    }
    command
}

/// Runs the pipeline until the topic has been quiet for 3 s; returns stdout and the summary JSON.
fn run_to_end(config: &Path) -> (String, Value) {
    let stdout = run(&mut fretflow(config, Some("3")));
    let summary = std::fs::read_to_string(config.with_file_name("summary.json")).expect("the run writes its summary");
    (stdout, serde_json::from_str(&summary).unwrap())
}

/// Live examples by key (the current FRet set in the compacted topic).
fn live(bootstrap: &str, topic: &str) -> BTreeMap<String, Value> {
    latest_by_key(&read_all(bootstrap, topic)).into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// The high watermark of every partition of `topic`.
fn ends(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    (0..partitions).map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)).collect()
}

fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    matches!(fretflow::connectors::kafka::admin::partition_count(&connection(bootstrap), topic), Ok(Some(_)))
}

#[test]
fn two_hundred_passages_over_three_partitions_give_one_live_example_per_query_key() {
    let Some(bootstrap) = broker() else { return };
    let names = Names::new(&unique("passages"));
    create_topic(&bootstrap, &names.input, 3);
    produce(&bootstrap, &names.input, &corpus(200));
    let dir = tempfile::tempdir().unwrap();
    let (stdout, summary) = run_to_end(&pipeline(dir.path(), &bootstrap, &names, INSTANT));

    let out = read_all(&bootstrap, &names.output);
    let examples = live(&bootstrap, &names.output);
    let want: Vec<String> = (0..200).map(|i| query_id(&format!("p{i}"), 0)).collect();
    assert_eq!(examples.keys().cloned().collect::<Vec<_>>(), {
        let mut w = want.clone();
        w.sort();
        w
    });
    for (key, example) in &examples {
        assert_eq!(example["query_id"], key.as_str());
        assert!(example["positive"]["id"].is_string() && example["ranking"].as_array().is_some_and(|r| !r.is_empty()));
    }
    let upserts = out.iter().filter(|m| m.value.is_some());
    assert!(upserts
        .clone()
        .all(|m| m.headers.contains_key("fretflow.positive") && m.headers.contains_key("fretflow.seed")));
    assert_eq!(upserts.count(), out.len(), "no retraction without a deletion");
    // The summary counts what the topic holds; the group's offsets mark the whole topic as done.
    assert_eq!(
        (summary["records_in"].as_u64(), summary["examples_live"].as_u64()),
        (Some(200), Some(200)),
        "{summary}"
    );
    assert!(stdout.contains("examples") && stdout.contains(&format!("wrote topic {}", names.output)), "{stdout}");
    assert_eq!(committed(&bootstrap, &names.group, &names.input, 3), ends(&bootstrap, &names.input, 3));
}

#[test]
fn a_metrics_scrape_shows_each_partitions_committed_offset_rising_to_its_end_and_the_lag_falling_to_zero() {
    let Some(bootstrap) = broker() else { return };
    let names = Names::new(&unique("passages"));
    create_topic(&bootstrap, &names.input, 3);
    produce(&bootstrap, &names.input, &corpus(240));
    let dir = tempfile::tempdir().unwrap();
    // 100 ms per LLM batch: the run lasts several statistics intervals (1 s) and commits (200 ms). The topic
    // is read at once, so it is cut into epochs of 32 records (`epoch_records`): as one epoch, nothing was
    // committed until the end. The lag is reported from the first statistics on, before any commit (under
    // CI's parallel load the first epochs finished only near the end: 3 scrapes, when lag came with commits).
    let config = pipeline(dir.path(), &bootstrap, &names, &format!("{INSTANT}\nlatency_ms = 100"));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[kafka.source]\n",
        "[kafka.source]\nepoch_records = 32\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    // The run follows the topic as a deployment does (no `--idle-exit`): with `--idle-exit` the process ended
    // right after its final commit, often before a scrape saw it (CI, stop 23: the last scrape had offsets
    // 64/64/0). It is scraped until every partition is committed to its end with no lag, then stopped with
    // Ctrl-C, so the final state is one the endpoint served.
    let mut child = fretflow(&config, None)
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = endpoint(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()));
    let lag = |s: &BTreeMap<String, f64>, p: i32| {
        s.get(&format!("fretflow_kafka_consumer_lag{{topic=\"{}\",partition=\"{p}\"}}", names.input)).copied()
    };
    let committed_at = |s: &BTreeMap<String, f64>, p: i32| {
        s.get(&format!("fretflow_kafka_committed_offset{{topic=\"{}\",partition=\"{p}\"}}", names.input)).copied()
    };
    let ends = ends(&bootstrap, &names.input, 3);
    let caught_up = |s: &BTreeMap<String, f64>| {
        (0..3).all(|p| committed_at(s, p) == Some(ends[&p] as f64) && lag(s, p) == Some(0.0))
    };
    let mut scrapes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !scrapes.last().is_some_and(caught_up) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            let last = scrapes.last().map(|s: &BTreeMap<String, f64>| format!("{s:?}")).unwrap_or_default();
            panic!("not caught up (last scrape {last}): {}", String::from_utf8_lossy(&output.stderr));
        }
        if let Some(samples) = scrape(&addr).filter(|s| (0..3).all(|p| lag(s, p).is_some())) {
            scrapes.push(samples);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on the child's own pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0, "Ctrl-C to the run");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("{} scrapes with every partition's lag", scrapes.len());
    assert!(scrapes.len() >= 5, "only {} scrapes with every partition's lag", scrapes.len());
    let total_lag: Vec<f64> = scrapes.iter().map(|s| (0..3).filter_map(|p| lag(s, p)).sum()).collect();
    assert!(total_lag[0] > 0.0, "the run was scraped before it caught up: {total_lag:?}");
    assert!(total_lag.windows(2).all(|w| w[1] <= w[0]), "the lag rose with nothing produced: {total_lag:?}");
    for p in 0..3 {
        let offsets: Vec<f64> = scrapes.iter().filter_map(|s| committed_at(s, p)).collect();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "partition {p}'s committed offset went back: {offsets:?}");
        assert!(offsets.len() == scrapes.len(), "partition {p}'s committed offset is in every scrape: {offsets:?}");
    }
    assert_eq!(committed(&bootstrap, &names.group, &names.input, 3), ends);
}

/// `[embedder] follow` on a Kafka pipeline: the run embeds with `hashing:384` until a checkpoint is promoted
/// under its `checkpoints` directory (all-MiniLM-L6-v2's directory, `latest` -> it), then re-mines: every
/// example is upserted again, and the topic ends with the examples a from-scratch run with that model gives.
#[test]
fn a_kafka_pipeline_following_a_checkpoint_directory_re_mines_when_one_is_promoted() {
    let Some(bootstrap) = broker() else { return };
    let model = fretflow::assets::resolve_model("all-MiniLM-L6-v2").expect("make test installs all-MiniLM-L6-v2");
    let names = Names::new(&unique("passages"));
    create_topic(&bootstrap, &names.input, 2);
    produce(&bootstrap, &names.input, &corpus(24));
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &bootstrap, &names, INSTANT);
    let follow = "model = \"hashing:384\"\nfollow = \"checkpoints\"\nfollow_poll_ms = 200";
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("model = \"hashing:64\"", follow))
        .unwrap();
    let log = dir.path().join("follow.log");
    let mut run =
        fretflow(&config, None).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let upserts = || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for m in read_all(&bootstrap, &names.output).into_iter().filter(|m| m.value.is_some()) {
            *counts.entry(m.key.unwrap()).or_default() += 1;
        }
        counts
    };
    let wait = |what: &str, run: &mut Child, done: &dyn Fn(&BTreeMap<String, usize>) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(&upserts()) {
            if Instant::now() > deadline || run.try_wait().unwrap().is_some() {
                let _ = run.kill();
                panic!("{what}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("the hashing encoder's 24 examples", &mut run, &|c| c.len() == 24);
    let before = upserts();
    let checkpoints = dir.path().join("checkpoints");
    std::fs::create_dir(&checkpoints).unwrap();
    std::os::unix::fs::symlink(&model, checkpoints.join("checkpoint-1")).unwrap();
    std::os::unix::fs::symlink("checkpoint-1", checkpoints.join("latest")).unwrap();
    wait("every example re-mined by the checkpoint", &mut run, &|c| before.iter().all(|(k, n)| c[k] > *n));
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on the child's own pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(run.id() as libc::pid_t, libc::SIGINT) }, 0, "Ctrl-C to the run");
    assert!(run.wait().unwrap().success(), "{}", std::fs::read_to_string(&log).unwrap());
    let followed = live(&bootstrap, &names.output);

    let scratch = Names::new(&names.input);
    let scratch_dir = dir.path().join("scratch");
    std::fs::create_dir(&scratch_dir).unwrap();
    let config = pipeline(&scratch_dir, &bootstrap, &scratch, INSTANT);
    let model_line = format!("model = {:?}", model.display().to_string());
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("model = \"hashing:64\"", &model_line))
        .unwrap();
    run_to_end(&config);
    let expected = live(&bootstrap, &scratch.output);
    assert_eq!(followed.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    let ids = |e: &Value| -> Vec<String> {
        e["ranking"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
    };
    for (key, example) in &followed {
        let want = &expected[key];
        assert_eq!((&example["positive"]["id"], ids(example)), (&want["positive"]["id"], ids(want)), "{key}");
        for (got, want) in example["ranking"].as_array().unwrap().iter().zip(want["ranking"].as_array().unwrap()) {
            let (got, want) = (got["cosine"].as_f64().unwrap(), want["cosine"].as_f64().unwrap());
            assert!((got - want).abs() < 1e-5, "{key}: cosine {got} vs {want}");
        }
    }
}

#[test]
fn sigkill_mid_run_then_restart_loses_no_key_and_ends_where_an_uninterrupted_run_ends() {
    let Some(bootstrap) = broker() else { return };
    let input = unique("passages");
    create_topic(&bootstrap, &input, 3);
    let passages = corpus(200);
    produce(&bootstrap, &input, &passages[..100]);

    // A slow run (300 ms per LLM batch): the first 100 passages go through and are committed, then the
    // other 100 arrive and the process is killed while they are in flight.
    let names = Names::new(&input);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &bootstrap, &names, &format!("{INSTANT}\nlatency_ms = 300"));
    let mut child: Child = fretflow(&config, None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(topic_exists(&bootstrap, &names.output) && live(&bootstrap, &names.output).len() == 100) {
        assert!(Instant::now() < deadline, "the first 100 examples were not out within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended on its own");
        std::thread::sleep(Duration::from_millis(300));
    }
    produce(&bootstrap, &input, &passages[100..]);
    std::thread::sleep(Duration::from_millis(300)); // less than one LLM batch: the second wave is in flight
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = live(&bootstrap, &names.output).len();
    assert!((100..200).contains(&partial), "killed mid-run: {partial} of 200 examples were out");
    let progress_at_kill = committed(&bootstrap, &names.group, &input, 3);
    assert!(progress_at_kill.values().sum::<i64>() >= 100, "the first wave was committed: {progress_at_kill:?}");

    // Restart with an instant LLM: the replay rebuilds the state and finishes the second wave.
    pipeline(dir.path(), &bootstrap, &names, INSTANT);
    run_to_end(&config);
    let got = live(&bootstrap, &names.output);
    let progress = committed(&bootstrap, &names.group, &input, 3);
    assert_eq!(progress, ends(&bootstrap, &input, 3));
    for (p, before) in progress_at_kill {
        assert!(progress[&p] >= before, "partition {p}: progress moved back from {before} to {}", progress[&p]);
    }

    // The reference: one uninterrupted run over the same topic.
    let reference = Names::new(&input);
    let ref_dir = tempfile::tempdir().unwrap();
    run_to_end(&pipeline(ref_dir.path(), &bootstrap, &reference, INSTANT));
    let want = live(&bootstrap, &reference.output);
    assert_eq!(want.len(), 200);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "keys lost or added by the crash");
    assert_eq!(got, want, "the restarted run ends with the uninterrupted run's examples");
}

#[test]
fn a_passage_deleted_while_the_pipeline_is_down_gets_its_examples_tombstoned_on_restart() {
    deleted_while_down(1);
}

#[test]
fn with_two_queries_per_passage_both_examples_of_a_passage_deleted_while_down_are_tombstoned() {
    deleted_while_down(2);
}

fn deleted_while_down(queries_per_passage: u32) {
    let Some(bootstrap) = broker() else { return };
    let names = Names::new(&unique("passages"));
    create_topic(&bootstrap, &names.input, 2);
    produce(&bootstrap, &names.input, &corpus(30));
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline_with(dir.path(), &bootstrap, &names, INSTANT, queries_per_passage);
    run_to_end(&config);
    let before = live(&bootstrap, &names.output);
    assert_eq!(before.len(), 30 * queries_per_passage as usize, "one example per query");
    let mentions_p7 = |example: &Value| example["ranking"].as_array().unwrap().iter().any(|c| c["id"] == "p7");
    let supported: Vec<String> = before.iter().filter(|(_, e)| mentions_p7(e)).map(|(k, _)| k.clone()).collect();
    assert!(supported.len() > 1, "p7 seeds its own example and ranks in others: {supported:?}");

    // Deleted while down: the replay reads p7's upsert and tombstone together and the dataflow never
    // holds p7, yet the example p7 seeded must be tombstoned and the others re-ranked without it.
    produce(&bootstrap, &names.input, &[tombstone("p7")]);
    run_to_end(&config);
    let latest = latest_by_key(&read_all(&bootstrap, &names.output));
    let of_p7: Vec<String> = query_ids("p7", queries_per_passage).collect();
    for key in &of_p7 {
        assert_eq!(latest[key], None, "the example {key} seeded by p7 ends in a tombstone");
    }
    let after = live(&bootstrap, &names.output);
    assert_eq!(after.len(), 29 * queries_per_passage as usize);
    for key in supported.iter().filter(|k| !of_p7.contains(k)) {
        assert!(!mentions_p7(&after[key]), "{key} still ranks the deleted p7: {}", after[key]);
    }
}

#[test]
fn malformed_messages_go_to_the_dead_letter_topic_with_their_reason_and_the_rest_flows() {
    let Some(bootstrap) = broker() else { return };
    let names = Names::new(&unique("passages"));
    create_topic(&bootstrap, &names.input, 2);
    let mut messages = corpus(12);
    messages.insert(3, (Some(b"bad-json".to_vec()), Some(b"{not json".to_vec())));
    messages.insert(7, (Some(b"no-text".to_vec()), Some(br#"{"id": "no-text", "text": "  "}"#.to_vec())));
    produce(&bootstrap, &names.input, &messages);
    let dir = tempfile::tempdir().unwrap();
    let (_, summary) = run_to_end(&pipeline(dir.path(), &bootstrap, &names, INSTANT));

    let dead = read_all(&bootstrap, &format!("{}.dead-letter", names.output));
    let reasons: BTreeMap<String, String> = dead
        .iter()
        .map(|m| (m.key.clone().unwrap(), m.headers.get("fretflow.error").cloned().unwrap_or_default()))
        .collect();
    assert_eq!(reasons.len(), 2, "{dead:?}");
    assert_eq!(reasons["bad-json"], "not_json");
    assert_eq!(reasons["no-text"], "empty_text");
    assert!(dead.iter().all(|m| m.headers.contains_key("fretflow.error.message") && m.value.is_some()));
    assert_eq!(live(&bootstrap, &names.output).len(), 12, "every good passage still gives its example");
    assert_eq!(summary["dead_letters"].as_u64(), Some(2), "{summary}");
}

#[test]
fn rerun_with_the_same_cache_answers_every_llm_request_from_it_with_the_local_model() {
    let Some(bootstrap) = broker() else { return };
    let names = Names::new(&unique("passages"));
    // One partition: the whole corpus is read in one epoch by both runs. Over several partitions the workers
    // may read their shares in different epochs, and the intermediate top-N lists (so a few judged pairs)
    // of a replay can differ from the first run's; the final set is the same (see the SIGKILL test).
    create_topic(&bootstrap, &names.input, 1);
    let texts = [
        "The wing boundary layer separates at high angles of attack.",
        "Shock waves form over the wing at transonic speeds.",
        "Heat transfer rises sharply in hypersonic boundary layers.",
        "Panel flutter appears when dynamic pressure passes a limit.",
        "Nozzle flow expands to supersonic speed past the throat.",
        "Laminar flow over a flat plate becomes turbulent downstream.",
        "Skin friction drag depends on the boundary layer state.",
        "Flutter of a wing couples bending and torsion modes.",
    ];
    let messages: Vec<Raw> = texts.iter().enumerate().map(|(i, t)| passage(&format!("d{i}"), t)).collect();
    produce(&bootstrap, &names.input, &messages);
    let dir = tempfile::tempdir().unwrap();
    let local = "backend = \"local\"\nmodel = \"SmolLM2-135M-Instruct\"";
    let config = pipeline(dir.path(), &bootstrap, &names, local);

    let (_, first) = run_to_end(&config);
    assert!(first["llm_calls"].as_u64().unwrap() > 0, "{first}");
    let want = live(&bootstrap, &names.output);
    assert!(!want.is_empty());
    let (_, second) = run_to_end(&config);
    assert_eq!(second["llm_calls"].as_u64(), Some(0), "the replay asks the model nothing: {second}");
    assert!(second["llm_cache_hits"].as_u64().unwrap() >= first["llm_calls"].as_u64().unwrap(), "{second}");
    assert_eq!(live(&bootstrap, &names.output), want);
}

/// A free TCP port on the loopback interface (for a timely process).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a cache-less copy of `names`'s pipeline (the instant labeler needs no cache, and redb locks a cache
/// file to one process) and a loopback hostfile for two processes into `dir`.
fn cluster_files(dir: &Path, bootstrap: &str, names: &Names, llm: &str) -> (PathBuf, PathBuf) {
    let config = pipeline(dir, bootstrap, names, llm);
    let text = std::fs::read_to_string(&config).unwrap().replace("cache = \"llm-cache.redb\"\n", "");
    std::fs::write(&config, text).unwrap();
    let hostfile = write(dir, "hostfile", &format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()));
    (config, hostfile)
}

/// deploy/cluster/start-cluster.sh for `config` on `hostfile`, 1 worker per process, logs under `logs`,
/// then `more` (script flags, `--` and `fretflow run` arguments).
fn start_cluster(config: &Path, hostfile: &Path, logs: &Path, more: &[&str]) -> Command {
    let mut command = Command::new(repo().join("deploy/cluster/start-cluster.sh"));
    command
        .args([config.to_str().unwrap(), hostfile.to_str().unwrap(), "-w", "1"])
        .args(["--bin", env!("CARGO_BIN_EXE_fretflow"), "--logs", logs.to_str().unwrap()])
        .args(more);
    command
}

fn cluster_logs(logs: &Path) -> String {
    (0..2)
        .map(|i| {
            let log = std::fs::read_to_string(logs.join(format!("process-{i}.log"))).unwrap_or_default();
            format!("--- process {i}\n{log}")
        })
        .collect()
}

/// The one-process reference: the live FRet set of a 2-worker run over `input` to its end.
fn one_process_reference(bootstrap: &str, input: &str) -> BTreeMap<String, Value> {
    let one = Names::new(input);
    let dir = tempfile::tempdir().unwrap();
    run_to_end(&pipeline(dir.path(), bootstrap, &one, INSTANT));
    live(bootstrap, &one.output)
}

#[test]
fn two_processes_on_loopback_end_with_the_same_fret_topic_as_one() {
    let Some(bootstrap) = broker() else { return };
    let input = unique("passages");
    create_topic(&bootstrap, &input, 4);
    produce(&bootstrap, &input, &corpus(120));
    let want = one_process_reference(&bootstrap, &input);
    assert_eq!(want.len(), 120);

    let two = Names::new(&input);
    let dir = tempfile::tempdir().unwrap();
    let (config, hostfile) = cluster_files(dir.path(), &bootstrap, &two, INSTANT);
    let logs = dir.path().join("logs");
    let status = start_cluster(&config, &hostfile, &logs, &["--wait", "--", "--idle-exit", "3", "--no-progress"])
        .status()
        .unwrap();
    assert!(status.success(), "the cluster failed:\n{}", cluster_logs(&logs));
    let got = live(&bootstrap, &two.output);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "keys differ from one process's");
    assert_eq!(got, want, "two processes end with one process's examples");
    assert_eq!(committed(&bootstrap, &two.group, &input, 4), ends(&bootstrap, &input, 4));
}

#[test]
fn sigkill_of_one_cluster_process_then_a_restart_of_both_loses_no_key() {
    let Some(bootstrap) = broker() else { return };
    let input = unique("passages");
    create_topic(&bootstrap, &input, 4);
    let passages = corpus(120);
    produce(&bootstrap, &input, &passages[..60]);

    // A slow cluster (300 ms per LLM batch): the first 60 passages go through, then the other 60 arrive
    // and process 1 is killed with SIGKILL while they are in flight.
    let two = Names::new(&input);
    let dir = tempfile::tempdir().unwrap();
    let (config, hostfile) = cluster_files(dir.path(), &bootstrap, &two, &format!("{INSTANT}\nlatency_ms = 300"));
    let logs = dir.path().join("logs");
    let started = start_cluster(&config, &hostfile, &logs, &["--", "--no-progress"]).status().unwrap();
    assert!(started.success());
    let pid = |i: usize| std::fs::read_to_string(logs.join(format!("process-{i}.pid"))).unwrap().trim().to_owned();
    // Running (a zombie is dead: the processes are the script's orphans, reaped by whoever is init here).
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    };
    let (pid0, pid1) = (pid(0), pid(1));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(topic_exists(&bootstrap, &two.output) && live(&bootstrap, &two.output).len() == 60) {
        assert!(Instant::now() < deadline, "the first 60 examples were not out within 90 s:\n{}", cluster_logs(&logs));
        std::thread::sleep(Duration::from_millis(300));
    }
    produce(&bootstrap, &input, &passages[60..]);
    std::thread::sleep(Duration::from_millis(300)); // less than one LLM batch: the second wave is in flight
    assert!(Command::new("kill").args(["-9", &pid1]).status().unwrap().success());
    let partial = live(&bootstrap, &two.output).len();
    assert!((60..120).contains(&partial), "killed mid-run: {partial} of 120 examples were out");
    // Process 0 loses its peer: it stops on its own, or is killed as an operator would.
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(&pid0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if alive(&pid0) {
        let _ = Command::new("kill").args(["-9", &pid0]).status();
    }
    while alive(&pid0) || alive(&pid1) {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Restart both (instant LLM): the replay rebuilds the state and the topic ends where one process ends.
    // (new ports: the killed processes' may still be in TIME_WAIT)
    let (config, hostfile) = cluster_files(dir.path(), &bootstrap, &two, INSTANT);
    let status = start_cluster(&config, &hostfile, &logs, &["--wait", "--", "--idle-exit", "3", "--no-progress"])
        .status()
        .unwrap();
    assert!(status.success(), "the restarted cluster failed:\n{}", cluster_logs(&logs));
    let got = live(&bootstrap, &two.output);
    let want = one_process_reference(&bootstrap, &input);
    assert_eq!(want.len(), 120);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "keys lost or added by the crash");
    assert_eq!(got, want, "the restarted cluster ends with one process's examples");
    assert_eq!(committed(&bootstrap, &two.group, &input, 4), ends(&bootstrap, &input, 4));
}
