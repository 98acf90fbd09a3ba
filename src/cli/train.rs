//! `fretflow train`: fine-tune the encoder on a FRet file or the FRet Kafka topic, with rolling,
//! evaluated checkpoints, optionally announced on a Kafka events topic.
//!
//! Kafka connection settings resolve as in `fretflow kafka`: `--kafka-config` (a pipeline file's
//! `[kafka]` table), then `FRETFLOW_KAFKA_*` environment variables, then `--bootstrap`.
use crate::pipeline::metrics::MetricsEndpoint;
use crate::train::kafka::{CheckpointPublisher, FretTopicSource, TopicStats};
use crate::train::options::{summary_text, TrainOptions};
use crate::train::source::FileSource;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `fretflow train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// FRet examples or change records: JSONL (`.jsonl`) or Parquet (`.parquet`); or see --kafka-topic.
    #[arg(long, required_unless_present = "kafka_topic", conflicts_with = "kafka_topic")]
    pub data: Option<PathBuf>,
    /// Model, loss, optimizer, checkpoints, evaluation, device.
    #[command(flatten)]
    pub options: TrainOptions,
    /// Serve the trainer's step, loss, examples/s and checkpoint metrics for Prometheus at
    /// `http://ADDR/metrics` (e.g. 127.0.0.1:9185; port 0 picks a free port, printed first).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Kafka: the FRet topic to read, and where checkpoint events go (listed last: their help heading
    /// applies to every argument after them).
    #[command(flatten)]
    pub kafka: TrainKafkaArgs,
}

/// The Kafka side of `fretflow train`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kafka")]
pub struct TrainKafkaArgs {
    /// Train on the FRet Kafka topic (key = query id, value = example JSON, tombstone = retraction):
    /// every partition is read from the beginning, then followed. No consumer group is used: the
    /// checkpoints are the trainer's state, and a restarted trainer rebuilds its replay buffer by
    /// re-reading the compacted topic. Malformed records are skipped, logged and counted.
    #[arg(long, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
    /// End the stream once the topic was read to its end and nothing new arrived for this long (default:
    /// follow forever); without --steps, training then finishes one pass over what was read.
    #[arg(long, value_name = "SECONDS", requires = "kafka_topic")]
    pub kafka_idle_exit: Option<f64>,
    /// After each checkpoint is written (and evaluated), publish its `checkpoints.jsonl` record to this
    /// topic (key = checkpoint name; one partition, created when missing) with an idempotent producer.
    #[arg(long, value_name = "TOPIC")]
    pub events_topic: Option<String>,
    /// Bootstrap servers (`host:port,...`); overrides --kafka-config and FRETFLOW_KAFKA_BOOTSTRAP_SERVERS.
    #[arg(long, value_name = "HOSTS")]
    pub bootstrap: Option<String>,
    /// Pipeline config whose `[kafka]` table holds the connection settings (TLS, SASL, properties).
    #[arg(long, value_name = "PIPELINE.toml")]
    pub kafka_config: Option<PathBuf>,
}

impl TrainKafkaArgs {
    /// The connection, resolved as `fretflow kafka` does.
    pub fn connection(&self) -> anyhow::Result<crate::connectors::kafka::ConnectionConfig> {
        super::kafka::resolve_connection(self.kafka_config.as_deref(), self.bootstrap.as_deref())
    }

    /// `--kafka-idle-exit` as a duration.
    pub fn idle_exit(&self) -> anyhow::Result<Option<Duration>> {
        self.kafka_idle_exit
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .map_err(|_| anyhow::anyhow!("--kafka-idle-exit must be a non-negative number of seconds, got {s}"))
            })
            .transpose()
    }
}

/// Runs `fretflow train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut trainer = args.options.trainer()?;
    if let Some(addr) = &args.metrics {
        let endpoint = MetricsEndpoint::serve(addr)?;
        println!("metrics: http://{}/metrics", endpoint.local_addr());
        trainer.report_to(endpoint.train_gauges());
    }
    if let Some(topic) = &args.kafka.events_topic {
        let publisher = CheckpointPublisher::start(&args.kafka.connection()?, topic)
            .with_context(|| format!("cannot publish checkpoint events to Kafka topic '{topic}'"))?;
        trainer.on_checkpoint(publisher.into_listener());
    }
    let (summary, topic_stats) = match (&args.data, &args.kafka.kafka_topic) {
        (Some(path), _) => (trainer.run(&mut FileSource::new(path))?, None),
        (None, Some(topic)) => {
            let idle_exit = args.kafka.idle_exit()?;
            let mut source = FretTopicSource::start(&args.kafka.connection()?, topic, idle_exit)?;
            let summary = trainer.run(&mut source)?;
            (summary, Some((topic, source.stats())))
        }
        (None, None) => anyhow::bail!("give --data FILE or --kafka-topic TOPIC"),
    };
    println!("{}", summary_text(&trainer, &summary, &args.options.out)?);
    if let Some((topic, TopicStats { records, skipped, .. })) = topic_stats {
        println!("kafka topic '{topic}': {records} records read, {skipped} malformed skipped");
    }
    Ok(())
}
