//! `fretflow kafka produce | consume | passthrough`: a corpus into a topic, the FRet stream out of one,
//! and the connectors' pass-through pipeline (topic to topic, for checks and benchmarks).
//!
//! Connection settings: `--config` (the pipeline file's `[kafka]` table), then `FRETFLOW_KAFKA_*`
//! environment variables, then `--bootstrap`.
use crate::connectors::file::source::read_all_events;
use crate::connectors::kafka::admin::{ensure_topic, TopicKind};
use crate::connectors::kafka::topic::{Polled, StartAt, TopicReader, TopicWriter};
use crate::connectors::kafka::{ConnectionConfig, SinkConfig, SourceConfig};
use crate::pipeline::kafka::passthrough::{self, Identity, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::message::{Headers, Message};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `fretflow kafka`.
#[derive(Debug, clap::Args)]
pub struct KafkaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KafkaCommand,
}

/// The `fretflow kafka` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KafkaCommand {
    /// Produce a corpus (JSONL or Parquet: id or _id, title?, text) into a topic, key = passage id.
    Produce(ProduceArgs),
    /// Follow a FRet topic and print one readable line per record (op, key, query, positive id).
    Consume(ConsumeArgs),
    /// Run the pass-through pipeline: passages from one topic to another through the Kafka source and
    /// sink, committing offsets after the broker acknowledges the outputs.
    Passthrough(PassthroughArgs),
}

/// Where the brokers are.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Bootstrap servers (`host:port,...`); overrides the config file and FRETFLOW_KAFKA_BOOTSTRAP_SERVERS.
    #[arg(long, value_name = "HOSTS")]
    pub bootstrap: Option<String>,
    /// Pipeline config whose `[kafka]` table holds connection settings (TLS, SASL, properties).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
}

impl ConnectionArgs {
    /// The connection: config file, then environment, then flags.
    pub fn resolve(&self) -> anyhow::Result<ConnectionConfig> {
        resolve_connection(self.config.as_deref(), self.bootstrap.as_deref())
    }
}

/// The connection every Kafka-using command resolves the same way: the `[kafka]` table of `config_file`
/// (defaults without one), then the `FRETFLOW_KAFKA_*` environment variables, then `bootstrap` (a flag).
pub fn resolve_connection(config_file: Option<&Path>, bootstrap: Option<&str>) -> anyhow::Result<ConnectionConfig> {
    let mut connection = match config_file {
        Some(path) => ConnectionConfig::from_pipeline_file(path)?,
        None => ConnectionConfig::default(),
    };
    connection.apply_env(|name| std::env::var(name).ok())?;
    if let Some(bootstrap) = bootstrap {
        connection.bootstrap_servers = bootstrap.to_owned();
    }
    connection.validate()?;
    Ok(connection)
}

/// Arguments of `fretflow kafka produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// The topic; created with `--partitions` partitions when missing.
    #[arg(long)]
    pub topic: String,
    /// The corpus: `.jsonl` or `.parquet`.
    pub file: PathBuf,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Send tombstones (deletes) for the file's ids instead of the passages.
    #[arg(long)]
    pub delete: bool,
    /// Connection.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `fretflow kafka consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// Start at the oldest record (default: only new records).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Stop after this many seconds without a record (default: follow forever).
    #[arg(long, value_name = "SECONDS")]
    pub idle_exit: Option<f64>,
    /// Print each record as one JSON line (`op`, `key`, `partition`, `offset`, `headers`, `value`).
    #[arg(long)]
    pub json: bool,
    /// Connection.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `fretflow kafka passthrough`.
#[derive(Debug, clap::Args)]
pub struct PassthroughArgs {
    /// Topic of passages in.
    #[arg(long)]
    pub input: String,
    /// Topic out (created compacted when missing); dead letters go to `<output>.dead-letter`.
    #[arg(long)]
    pub output: String,
    /// Consumer group whose committed offsets a restart resumes from.
    #[arg(long, default_value = "fretflow-passthrough")]
    pub group: String,
    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Assign partitions by `partition % workers` (`static`) or by the consumer group (`group`).
    #[arg(long, default_value = "static", value_parser = ["static", "group"])]
    pub partitioning: String,
    /// Stop after this many seconds without input (default: run until killed).
    #[arg(long, value_name = "SECONDS")]
    pub idle_exit: Option<f64>,
    /// Values larger than this go to the dead-letter topic (bytes).
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,
    /// Records per batch and worker.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Sleep after each batch (milliseconds); slows the run for crash tests.
    #[arg(long, default_value_t = 0)]
    pub throttle_ms: u64,
    /// Connection.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `fretflow kafka`.
pub fn run(args: KafkaArgs) -> anyhow::Result<()> {
    match args.command {
        KafkaCommand::Produce(args) => produce(args),
        KafkaCommand::Consume(args) => consume(args),
        KafkaCommand::Passthrough(args) => run_passthrough(args),
    }
}

/// Runs `fretflow produce` (the top-level alias of `fretflow kafka produce`).
pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let connection = args.connection.resolve()?;
    // The pipeline's own readers. A record that does not decode is not sent (the pipeline would only
    // dead-letter it): each is logged with its file:line and reason, and counted at the end.
    let (events, undecodable) = read_all_events(&args.file)?;
    for letter in &undecodable {
        tracing::warn!(input = %letter.input, reason = %letter.reason, "Not produced: the record does not decode.");
    }
    ensure_topic(&connection, &args.topic, args.partitions, 1, TopicKind::Log)?;
    let writer = TopicWriter::open(&connection, &args.topic, "produce", true)?;
    let bar = ProgressBar::new(events.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} passages  {per_sec}  eta {eta}")
            .expect("the progress template is valid. This is a bug."),
    );
    let started = Instant::now();
    let mut in_flight = VecDeque::new();
    let await_one = |in_flight: &mut VecDeque<(String, rdkafka::producer::DeliveryFuture)>| -> anyhow::Result<()> {
        let (id, delivery) = in_flight.pop_front().expect("called with deliveries in flight. This is a bug.");
        Ok(writer.delivered(delivery, &format!("passage '{id}'"))?)
    };
    for event in &events {
        // A delete record (`"op": "delete"`) is a tombstone, as is every record with --delete.
        let value = match &event.passage {
            Some(passage) if !args.delete => Some(serde_json::to_vec(passage)?),
            _ => None,
        };
        let delivery = writer.send(&event.id, value.as_deref(), None)?;
        in_flight.push_back((event.id.clone(), delivery));
        while in_flight.len() >= 10_000 {
            await_one(&mut in_flight)?;
            bar.inc(1);
        }
    }
    while !in_flight.is_empty() {
        await_one(&mut in_flight)?;
        bar.inc(1);
    }
    writer.flush(Duration::from_secs(30))?;
    bar.finish_and_clear();
    let what = if args.delete { "tombstones" } else { "passages" };
    eprintln!("produced {} {what} to '{}' in {:.1} s", events.len(), args.topic, started.elapsed().as_secs_f64());
    if !undecodable.is_empty() {
        eprintln!(
            "skipped {} record(s) that do not decode (logged above with file:line and reason)",
            undecodable.len()
        );
    }
    Ok(())
}

/// Runs `fretflow consume` (the top-level alias of `fretflow kafka consume`).
pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let connection = args.connection.resolve()?;
    let start = if args.from_beginning { StartAt::Beginning } else { StartAt::End };
    let mut reader = TopicReader::open(&connection, &args.topic, start, "consume", Duration::ZERO)?;
    let idle = args.idle_exit.map(Duration::from_secs_f64);
    let mut last = Instant::now();
    let mut seen = 0u64;
    while args.max.is_none_or(|max| seen < max) {
        match reader.poll(Duration::from_millis(200)) {
            Polled::Message(message) => {
                seen += 1;
                last = Instant::now();
                println!("{}", describe(&message, args.json));
            }
            Polled::PartitionEnd(_) | Polled::Nothing => {
                if idle.is_some_and(|idle| last.elapsed() >= idle) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// One readable line: `upsert <key> task=... query="..." positive=<id>` or `delete <key>`, or with
/// `json`, one JSON object.
fn describe(message: &rdkafka::message::BorrowedMessage<'_>, json: bool) -> String {
    let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
    let value: Option<serde_json::Value> =
        message.payload().map(|p| serde_json::from_slice(p).unwrap_or_else(|_| String::from_utf8_lossy(p).into()));
    let op = if value.is_some() { "upsert" } else { "delete" };
    if json {
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into()))
                    .collect()
            })
            .unwrap_or_default();
        let line = serde_json::json!({"op": op, "key": key, "partition": message.partition(),
            "offset": message.offset(), "headers": headers, "value": value});
        return line.to_string();
    }
    let Some(value) = value else { return format!("delete  {key}") };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let positive = value.get("positive").and_then(|p| p.get("id")).and_then(|v| v.as_str());
    match (field("query"), positive) {
        (Some(query), Some(positive)) => {
            let task = field("task").unwrap_or_default();
            format!("upsert  {key}  task={}  query={query:?}  positive={positive}", shorten(&task, 60))
        }
        // Not an example (e.g. pass-through passages): show the text.
        _ => format!("upsert  {key}  {}", shorten(&field("text").unwrap_or_else(|| value.to_string()), 100)),
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Runs `fretflow kafka passthrough`; prints one JSON line of counts and rates to stdout.
fn run_passthrough(args: PassthroughArgs) -> anyhow::Result<()> {
    let connection = args.connection.resolve()?;
    let mut source = SourceConfig::new(&args.input);
    source.group_id = args.group.clone();
    source.max_message_bytes = args.max_message_bytes;
    if args.partitioning == "group" {
        source.partitioning = crate::connectors::kafka::source::Partitioning::Group;
    }
    let sink = SinkConfig::new(&args.output);
    let options = RunOptions {
        workers: args.workers,
        batch: args.batch,
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        throttle: (args.throttle_ms > 0).then(|| Duration::from_millis(args.throttle_ms)),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let reports =
        passthrough::run(&connection, &source, &sink, &options, Identity { source_topic: args.input.clone() })?;
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let active = reports.iter().map(|r| r.active).max().unwrap_or_default().as_secs_f64();
    let line = serde_json::json!({
        "records": records,
        "workers": args.workers,
        "per_worker": reports.iter().map(|r| r.records).collect::<Vec<_>>(),
        "active_s": active,
        "records_per_s": if active > 0.0 { records as f64 / active } else { 0.0 },
        "wall_s": started.elapsed().as_secs_f64(),
    });
    println!("{line}");
    Ok(())
}
