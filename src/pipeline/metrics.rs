//! `fretflow run --metrics ADDR` and `fretflow train --metrics ADDR`: the run's counters as a Prometheus
//! endpoint, `GET /metrics` in the text exposition format (encoded by the Prometheus project's
//! `prometheus-client` crate), refreshed from the progress snapshots the driver takes about four times a
//! second and from the trainer's gauges after each step.
//!
//! Exported (all prefixed `fretflow_`), for a pipeline: the counters `records_in`, `passages_in`,
//! `passages_deleted`, `queries`, `judged_pairs`, `example_changes`, `dead_letters`, `llm_calls`,
//! `llm_cache_hits` (each `_total`), `stage_seconds_total{stage}` and `dead_letters_by_stage_total{stage}`;
//! the gauges `examples_live`, `positive_not_seed`, `duplicate_queries`, `llm_busy_ratio`,
//! `elapsed_seconds`, `index_passages`, `index_queries` and `in_flight_batches{stage}`; for a Kafka
//! pipeline, `kafka_committed_offset{topic,partition}` and `kafka_consumer_lag{topic,partition}` of the
//! partitions this process reads. For a trainer (its
//! own, or `run`'s in-process one): `train_steps_total`, `train_examples_total`, `train_checkpoints_total`
//! and the gauges `train_loss`, `train_examples_per_second`, `train_buffer_examples`, `checkpoint_step`,
//! `promoted_step` and `checkpoint_metric{dataset,metric}` (the newest checkpoint's evaluation). A scrape
//! before the first snapshot or step gets no samples of that part.
use super::driver::ProgressHook;
use crate::dataflow::progress::{Snapshot, SourcePartition};
use crate::train::gauges::TrainGauges;
use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The latest snapshot, shared by the progress hook and the endpoint.
type Latest = Arc<Mutex<Option<Snapshot>>>;

/// A running `/metrics` endpoint.
pub struct MetricsEndpoint {
    latest: Latest,
    train: Arc<TrainGauges>,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` (`host:port`; port 0 picks a free one) and serves `/metrics` on its own thread for the
    /// life of the process.
    pub fn serve(addr: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
        let addr = listener.local_addr().with_context(|| format!("--metrics {addr}"))?;
        let latest: Latest = Arc::new(Mutex::new(None));
        let train = Arc::new(TrainGauges::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector(Arc::clone(&latest))));
        registry.register_collector(Box::new(TrainCollector(Arc::clone(&train))));
        std::thread::Builder::new()
            .name("fretflow-metrics".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Err(e) = answer(stream, &registry) {
                        tracing::debug!(error = %e, "A metrics request failed.");
                    }
                }
            })
            .context("cannot start the metrics thread")?;
        tracing::info!(%addr, "Serving Prometheus metrics at /metrics.");
        Ok(Self { latest, train, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gauges a trainer reports to ([`crate::train::Trainer::report_to`]).
    pub fn train_gauges(&self) -> Arc<TrainGauges> {
        Arc::clone(&self.train)
    }

    /// A progress hook that keeps each snapshot for the endpoint, then passes it to `inner`.
    pub fn hook(&self, mut inner: Option<ProgressHook>) -> ProgressHook {
        let latest = Arc::clone(&self.latest);
        Box::new(move |snapshot: &Snapshot| {
            *latest.lock().expect("poisoned. This is a bug.") = Some(snapshot.clone());
            if let Some(inner) = inner.as_mut() {
                inner(snapshot);
            }
        })
    }
}

/// Answers one HTTP/1.x request: `GET /metrics` with the registry's text, anything else 404.
fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(request.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    let (status, kind, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?") {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics is served here\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// Encodes the latest snapshot on each scrape.
#[derive(Debug)]
struct SnapshotCollector(Latest);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.lock().map_err(|_| std::fmt::Error)?.clone() else { return Ok(()) };
        let counters = [
            ("fretflow_records_in", "Source records read", s.records_in),
            ("fretflow_passages_in", "Passage versions that entered the corpus", s.passages_in),
            ("fretflow_passages_deleted", "Passage deletions", s.passages_deleted),
            ("fretflow_queries", "Queries generated", s.queries),
            ("fretflow_judged_pairs", "Query-candidate pairs judged", s.judged_pairs),
            ("fretflow_example_changes", "FRet example changes written", s.example_changes),
            ("fretflow_dead_letters", "Records sent to the dead letters", s.dead_letters),
            ("fretflow_llm_calls", "LLM requests answered by the model", s.llm_calls),
            ("fretflow_llm_cache_hits", "LLM requests answered from the cache", s.llm_cache_hits),
        ];
        encode_each(&mut encoder, counters.map(|(name, help, v)| (name, help, ConstCounter::new(v))))?;
        let gauges = [
            (
                "fretflow_index_passages",
                "Live passages in this process's shards of the retrieval index",
                s.index_passages as f64,
            ),
            (
                "fretflow_index_queries",
                "Live queries held by this process's retrieval workers (queries x workers)",
                s.index_queries as f64,
            ),
            ("fretflow_examples_live", "Examples in the current FRet set", s.examples_live as f64),
            (
                "fretflow_positive_not_seed",
                "Live examples whose positive is not their seed",
                s.positive_not_seed as f64,
            ),
            (
                "fretflow_duplicate_queries",
                "Live queries within the duplicate threshold of a kept one",
                s.duplicate_queries as f64,
            ),
            ("fretflow_llm_busy_ratio", "Share of wall time with an LLM batch in flight", s.llm_busy_share),
            ("fretflow_elapsed_seconds", "Wall time since the run started", s.elapsed_s),
        ];
        encode_each(&mut encoder, gauges.map(|(name, help, v)| (name, help, ConstGauge::new(v))))?;
        encode_family(
            &mut encoder,
            "fretflow_stage_seconds",
            "Seconds per stage: busy (in flight) for model stages, in-operator time for the others",
            MetricType::Counter,
            s.stage_seconds
                .iter()
                .map(|(stage, seconds)| (vec![("stage", stage.as_str())], ConstCounter::new(*seconds))),
        )?;
        encode_family(
            &mut encoder,
            "fretflow_dead_letters_by_stage",
            "Records sent to the dead letters, by the stage that rejected them",
            MetricType::Counter,
            s.dead_letters_by_stage.iter().map(|(stage, n)| (vec![("stage", stage.as_str())], ConstCounter::new(*n))),
        )?;
        encode_family(
            &mut encoder,
            "fretflow_in_flight_batches",
            "Model batches in flight now, per stage",
            MetricType::Gauge,
            s.in_flight_batches.iter().map(|(stage, n)| (vec![("stage", stage.as_str())], ConstGauge::new(*n as i64))),
        )?;
        if s.source_partitions.is_empty() {
            return Ok(());
        }
        let partitions: Vec<(&str, String, &SourcePartition)> =
            s.source_partitions.iter().map(|p| (p.topic.as_str(), p.partition.to_string(), p)).collect();
        encode_family(
            &mut encoder,
            "fretflow_kafka_committed_offset",
            "Next offset committed for the consumer group, per input partition this process reads",
            MetricType::Gauge,
            partitions.iter().filter_map(|(topic, partition, p)| {
                p.committed.map(|offset| (partition_labels(topic, partition), ConstGauge::new(offset)))
            }),
        )?;
        encode_family(
            &mut encoder,
            "fretflow_kafka_consumer_lag",
            "Records between the committed offset and the partition's end (librdkafka's high watermark, ~1 s old)",
            MetricType::Gauge,
            partitions.iter().map(|(topic, partition, p)| (partition_labels(topic, partition), ConstGauge::new(p.lag))),
        )
    }
}

/// Encodes the trainer's gauges on each scrape, once it has taken a step or recorded an evaluation.
#[derive(Debug)]
struct TrainCollector(Arc<TrainGauges>);

impl Collector for TrainCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        if s.step == 0 && s.checkpoint_metrics.is_empty() {
            return Ok(());
        }
        let counters = [
            ("fretflow_train_steps", "Optimizer steps taken", s.step),
            ("fretflow_train_examples", "Examples trained on", s.examples_seen),
            ("fretflow_train_checkpoints", "Checkpoints recorded by this run", s.checkpoints),
        ];
        encode_each(&mut encoder, counters.map(|(name, help, v)| (name, help, ConstCounter::new(v))))?;
        let mut gauges = vec![
            ("fretflow_train_loss", "Loss of the last step's batch", s.loss),
            (
                "fretflow_train_examples_per_second",
                "Examples per second since this run's first step",
                s.examples_per_second,
            ),
            ("fretflow_train_buffer_examples", "Examples in the replay buffer", s.buffer as f64),
            (
                "fretflow_checkpoint_step",
                "Step of the newest recorded checkpoint (0: the base model)",
                s.checkpoint_step as f64,
            ),
        ];
        if let Some(step) = s.promoted_step {
            gauges.push(("fretflow_promoted_step", "Step of the checkpoint latest points at", step as f64));
        }
        encode_each(&mut encoder, gauges.into_iter().map(|(name, help, v)| (name, help, ConstGauge::new(v))))?;
        let samples = s.checkpoint_metrics.iter().flat_map(|(dataset, metrics)| {
            metrics.iter().map(move |(metric, v)| {
                (vec![("dataset", dataset.as_str()), ("metric", metric.as_str())], ConstGauge::new(*v))
            })
        });
        encode_family(
            &mut encoder,
            "fretflow_checkpoint_metric",
            "The newest checkpoint's evaluation, per dataset and metric (ndcg@10/256: at 256 dimensions)",
            MetricType::Gauge,
            samples,
        )
    }
}

/// Encodes each `(name, help, metric)` as a metric of its own, without labels.
fn encode_each<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    metrics: impl IntoIterator<Item = (&'static str, &'static str, M)>,
) -> Result<(), std::fmt::Error> {
    for (name, help, metric) in metrics {
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
    }
    Ok(())
}

fn partition_labels<'a>(topic: &'a str, partition: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("topic", topic), ("partition", partition)]
}

/// Encodes one metric family `name` of `metric_type`: a sample per label set (described even without one).
fn encode_family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn serves_the_latest_snapshot_in_the_prometheus_text_format() {
        let endpoint = MetricsEndpoint::serve("127.0.0.1:0").unwrap();
        let before = get(endpoint.local_addr(), "/metrics");
        assert!(before.starts_with("HTTP/1.1 200") && !before.contains("fretflow_records_in"), "{before}");
        let mut hook = endpoint.hook(None);
        let snapshot = Snapshot {
            records_in: 40,
            examples_live: 38,
            llm_busy_share: 0.25,
            stage_seconds: vec![("embed".into(), 1.5)],
            dead_letters_by_stage: [("validate".to_string(), 3)].into(),
            index_passages: 17,
            in_flight_batches: vec![("judge".into(), 1)],
            source_partitions: vec![
                SourcePartition { topic: "passages".into(), partition: 0, committed: Some(12), lag: 3 },
                SourcePartition { topic: "passages".into(), partition: 1, committed: None, lag: 9 },
            ],
            ..Snapshot::default()
        };
        hook(&snapshot);
        let text = get(endpoint.local_addr(), "/metrics");
        for line in [
            "fretflow_records_in_total 40",
            "fretflow_examples_live 38",
            "fretflow_llm_busy_ratio 0.25",
            "fretflow_stage_seconds_total{stage=\"embed\"} 1.5",
            "fretflow_dead_letters_by_stage_total{stage=\"validate\"} 3",
            "fretflow_index_passages 17",
            "fretflow_in_flight_batches{stage=\"judge\"} 1",
            "fretflow_kafka_committed_offset{topic=\"passages\",partition=\"0\"} 12",
            "fretflow_kafka_consumer_lag{topic=\"passages\",partition=\"0\"} 3",
            "fretflow_kafka_consumer_lag{topic=\"passages\",partition=\"1\"} 9",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            !text.contains("partition=\"1\"} 0")
                && !text.contains("committed_offset{topic=\"passages\",partition=\"1\"}")
        );
        assert!(!text.contains("fretflow_train_steps"), "no trainer, no train samples");
        assert!(get(endpoint.local_addr(), "/other").starts_with("HTTP/1.1 404"));
    }
}
