//! `fretflow run --metrics ADDR`: the run's counters as a Prometheus endpoint, `GET /metrics` in the text
//! exposition format (encoded by the Prometheus project's `prometheus-client` crate), refreshed from the
//! progress snapshots the driver takes about four times a second.
//!
//! Exported (all prefixed `fretflow_`): the counters `records_in`, `passages_in`, `passages_deleted`,
//! `queries`, `judged_pairs`, `example_changes`, `dead_letters`, `llm_calls`, `llm_cache_hits` (each
//! `_total`) and `stage_seconds_total{stage}`; the gauges `examples_live`, `positive_not_seed`,
//! `duplicate_queries`, `llm_busy_ratio` and `elapsed_seconds`. A scrape before the first snapshot gets
//! no samples.
use super::driver::ProgressHook;
use crate::dataflow::progress::Snapshot;
use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
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
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` (`host:port`; port 0 picks a free one) and serves `/metrics` on its own thread for the
    /// life of the process.
    pub fn serve(addr: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
        let addr = listener.local_addr().with_context(|| format!("--metrics {addr}"))?;
        let latest: Latest = Arc::new(Mutex::new(None));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector(Arc::clone(&latest))));
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
        Ok(Self { latest, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
        let counters: [(&str, &str, u64); 9] = [
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
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let gauges: [(&str, &str, f64); 5] = [
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
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let probe = ConstCounter::new(0.0);
        let mut family = encoder.encode_descriptor(
            "fretflow_stage_seconds",
            "Seconds per stage: busy (in flight) for model stages, in-operator time for the others",
            None,
            probe.metric_type(),
        )?;
        for (stage, seconds) in &s.stage_seconds {
            let labels = [("stage", stage.as_str())];
            ConstCounter::new(*seconds).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
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
            ..Snapshot::default()
        };
        hook(&snapshot);
        let text = get(endpoint.local_addr(), "/metrics");
        for line in [
            "fretflow_records_in_total 40",
            "fretflow_examples_live 38",
            "fretflow_llm_busy_ratio 0.25",
            "fretflow_stage_seconds_total{stage=\"embed\"} 1.5",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(get(endpoint.local_addr(), "/other").starts_with("HTTP/1.1 404"));
    }
}
