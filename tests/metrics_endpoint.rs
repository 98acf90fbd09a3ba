//! `fretflow run --metrics`: a Prometheus scrape of a real run (issue 16, item 4). The run is the sample
//! corpus with the instant labeler slowed to 100 ms per batch (4 requests), so it lasts long enough to be scraped several
//! times; the counters must be there, move, and never pass the run's own summary.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `name -> value` of every sample line of a scrape (labels kept in the name).
fn scrape(addr: &str) -> Option<BTreeMap<String, f64>> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: fretflow\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').and_then(|(name, v)| Some((name.to_owned(), v.parse().ok()?))))
            .collect(),
    )
}

#[test]
fn a_scrape_during_a_run_shows_counters_that_move_and_agree_with_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let passages = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/passages.jsonl");
    let pipeline = format!(
        "[source]\npath = {passages:?}\nepoch_records = 8\n[llm]\nbackend = \"instant\"\nlatency_ms = 100\n\
         [embedder]\nmodel = \"all-MiniLM-L6-v2\"\ndevice = \"cpu\"\n[batching]\nllm = {{ max_batch = 4, max_wait_ms = 20, max_in_flight = 1 }}\n\
         [sinks]\nsnapshot = [\"out/fret.jsonl\"]\nsummary = \"out/summary.json\"\ndead_letters = \"out/dead.jsonl\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(["run", "p.toml", "--no-progress", "--metrics", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("metrics: http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the first line does not name the endpoint: {first:?}"));
    let addr = addr.to_owned();
    let mut scrapes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if let Some(samples) = scrape(&addr).filter(|s| s.contains_key("fretflow_records_in_total")) {
            scrapes.push(samples);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(scrapes.len() >= 3, "only {} scrapes with samples during the run", scrapes.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap()).unwrap();
    let names = [
        ("fretflow_records_in_total", "records_in"),
        ("fretflow_queries_total", "queries"),
        ("fretflow_judged_pairs_total", "judged_pairs"),
        ("fretflow_example_changes_total", "example_changes"),
    ];
    for (metric, field) in names {
        let values: Vec<f64> = scrapes.iter().map(|s| s[metric]).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{metric} went down: {values:?}");
        let last = summary[field].as_f64().unwrap();
        assert!(values.iter().all(|v| *v <= last), "{metric} passed the summary's {field} = {last}: {values:?}");
    }
    let judged: Vec<f64> = scrapes.iter().map(|s| s["fretflow_judged_pairs_total"]).collect();
    assert!(judged.first() < judged.last(), "judged pairs did not move while scraped: {judged:?}");
    assert!(scrapes.last().unwrap().keys().any(|k| k.starts_with("fretflow_stage_seconds_total{stage=")));
    assert!(scrapes.last().unwrap().contains_key("fretflow_llm_busy_ratio"));
}
