//! The Kafka commands against a real broker: `fretflow kafka produce` (JSONL and Parquet), `passthrough`
//! killed with SIGKILL mid-run and restarted, `consume`, and Kafka's own console consumer reading the
//! output topic (a client we did not write).
mod kafka_support;

use kafka_support::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fretflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fretflow"));
    command.env("RUST_LOG", "warn");
    command
}

fn corpus_jsonl(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"_id": format!("d{i}"), "title": format!("T{i}"), "text": format!("passage {i}")})
                .to_string()
        })
        .collect();
    write(dir, "corpus.jsonl", &(lines.join("\n") + "\n"))
}

#[test]
fn produce_jsonl_then_passthrough_killed_with_sigkill_and_restarted_loses_no_key() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    let corpus = corpus_jsonl(dir.path(), 1000);
    run(fretflow()
        .args(["kafka", "produce", "--topic", &input, "--partitions", "3", "--bootstrap", &bootstrap])
        .arg(&corpus));
    assert_eq!(read_all(&bootstrap, &input).len(), 1000);

    let passthrough = |extra: &[&str]| {
        let mut command = fretflow();
        command.args(["kafka", "passthrough", "--input", &input, "--output", &output, "--group", &group]);
        command.args(["--bootstrap", &bootstrap, "-w", "2", "--batch", "20"]).args(extra);
        command
    };
    // First life: slowed down, killed once some offsets are committed and before the input is done.
    let mut child = passthrough(&["--throttle-ms", "50"]).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed_before_kill = loop {
        let committed: i64 = committed(&bootstrap, &group, &input, 3).values().sum();
        if committed > 0 {
            break committed;
        }
        assert!(Instant::now() < deadline, "the first run committed nothing in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let committed_at_kill: i64 = committed(&bootstrap, &group, &input, 3).values().sum();
    assert!(
        committed_before_kill <= committed_at_kill && committed_at_kill < 1000,
        "killed mid-run: {committed_at_kill}"
    );

    // Second life: resumes from the committed offsets and finishes.
    // (Static partitioning, the default: with `group`, the killed process's consumers would stay members
    // of the group until their session times out, 45 s by default, before the restart gets partitions.)
    let report = run(&mut passthrough(&["--idle-exit", "3"]));
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["records"].as_i64().unwrap(), 1000 - committed_at_kill, "reads exactly the uncommitted records");
    let latest = latest_by_key(&read_all(&bootstrap, &output));
    let want: BTreeSet<String> = (0..1000).map(|i| format!("d{i}")).collect();
    assert_eq!(latest.keys().cloned().collect::<BTreeSet<_>>(), want, "no key lost");
    assert!(latest.values().all(|v| v.is_some()));
    assert_eq!(committed(&bootstrap, &group, &input, 3).values().sum::<i64>(), 1000);

    // Kafka's own console consumer reads the output topic.
    let classpath = kafka_classpath().expect("jars exist when the broker runs");
    let out = run(Command::new("java")
        .arg("-cp")
        .arg(&classpath)
        .arg(format!("-Dlog4j2.configurationFile={}", repo().join("deploy/kafka/log4j2.properties").display()))
        .args(["org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", &bootstrap, "--topic", &output])
        .args(["--from-beginning", "--max-messages", "5", "--timeout-ms", "30000"])
        .args(["--formatter-property", "print.key=true", "--formatter-property", "key.separator=|"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for line in lines {
        let (key, value) = line.split_once('|').unwrap();
        let value: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(value["id"], key);
        assert!(want.contains(key));
    }

    // And our consume command prints readable lines.
    let out = run(fretflow().args([
        "kafka",
        "consume",
        "--topic",
        &output,
        "--from-beginning",
        "--max",
        "3",
        "--bootstrap",
        &bootstrap,
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| l.starts_with("upsert  d") && l.contains("passage ")), "{out}");
}

#[test]
fn produce_parquet_and_delete_then_consume_shows_upserts_and_deletes() {
    let Some(bootstrap) = broker() else { return };
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["x1", "x2"])),
            Arc::new(StringArray::from(vec![Some("Title"), None])),
            Arc::new(StringArray::from(vec!["first text", "second text"])),
        ],
    )
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let topic = unique("parquet");
    let produce = |extra: &[&str]| {
        run(fretflow()
            .args(["kafka", "produce", "--topic", &topic, "--partitions", "1", "--bootstrap", &bootstrap])
            .args(extra)
            .arg(&path))
    };
    produce(&[]);
    produce(&["--delete"]);
    let records = read_all(&bootstrap, &topic);
    assert_eq!(records.len(), 4);
    let first: serde_json::Value = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(first, serde_json::json!({"id": "x1", "title": "Title", "text": "first text"}));
    assert!(records[2].value.is_none() && records[3].value.is_none());

    let out = run(fretflow().args([
        "kafka",
        "consume",
        "--topic",
        &topic,
        "--from-beginning",
        "--max",
        "4",
        "--bootstrap",
        &bootstrap,
    ]));
    let ops: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(ops, ["upsert", "upsert", "delete", "delete"], "{out}");
    let out = run(fretflow().args([
        "kafka",
        "consume",
        "--topic",
        &topic,
        "--from-beginning",
        "--idle-exit",
        "2",
        "--json",
        "--bootstrap",
        &bootstrap,
    ]));
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!((last["op"].as_str(), last["key"].as_str()), (Some("delete"), Some("x2")));
}

#[test]
fn produce_skips_a_malformed_record_naming_its_file_and_line_and_sends_the_rest() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lines = "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"b\"}\n{\"id\":\"c\",\"op\":\"delete\"}\n";
    let path = write(dir.path(), "bad.jsonl", lines);
    let topic = unique("malformed");
    let output = fretflow()
        .args(["kafka", "produce", "--topic", &topic, "--partitions", "1", "--bootstrap", &bootstrap])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("bad.jsonl:2") && stderr.contains("missing field `text`"), "{stderr}");
    assert!(stderr.contains("skipped 1 record(s)"), "{stderr}");
    let records = read_all(&bootstrap, &topic);
    let keys: Vec<(String, bool)> =
        records.iter().map(|r| (r.key.clone().unwrap_or_default(), r.value.is_some())).collect();
    assert_eq!(
        keys,
        [("a".to_string(), true), ("c".to_string(), false)],
        "the good record and the delete as a tombstone"
    );
}
