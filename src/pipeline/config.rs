//! The pipeline config: what `fretflow run PIPELINE.toml` reads. Every field is documented here (this is
//! the user's reference), unknown fields are errors, and [`PipelineConfig::validate`] names the field of
//! any bad value. Relative paths in the file are relative to the file's own directory.
//!
//! Passages come from a file (`[source]`) or from a Kafka topic (`[kafka.source]`, with the FRet stream
//! going to `[kafka.sink]`); exactly one of the two sources is given ([`PipelineConfig::input`]).
use crate::dataflow::params::DedupParams;
use crate::dataflow::params::FusionWeights;
use crate::device::DeviceChoice;
use crate::train::options::{options_from_table, TrainOptions};

mod llm;
mod recipe;
use crate::connectors::kafka::{self, ConnectionConfig};
use crate::dataflow::params::FretParams;
use crate::dataflow::params::Limits;
pub use llm::{InstantLlmConfig, LlmConfig, LlmRoles, LocalLlmConfig, LLM_URL_ENV};
pub use recipe::{
    BatchConfig, BatchOverride, BatchingConfig, DuplicateQueriesConfig, FretConfig, HardNegativesConfig, WeightsConfig,
    DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_MAX_POSITIVE_RATIO,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A bad or unreadable config, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped field (the message names it and its line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, from the TOML parser.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted field path, e.g. `fret.neighbours`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A whole pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where passages come from when they come from a file; absent when `[kafka.source]` is given.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Kafka: the connection, and passages in from `[kafka.source]` with the FRet stream out to
    /// `[kafka.sink]`. Absent: a file pipeline.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// The LLMs that write queries and judge pairs: `[llm]` for both, or `[llm.generator]` and
    /// `[llm.judge]` for one each (see [`LlmRoles`]).
    pub llm: LlmRoles,
    /// The encoder used for retrieval.
    #[serde(default)]
    pub embedder: EmbedderConfig,
    /// The recipe's parameters.
    #[serde(default)]
    pub fret: FretConfig,
    /// Batching of model calls.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Size limits on passages; a passage beyond them goes to the dead letters.
    #[serde(default)]
    pub limits: Limits,
    /// Where results go. A Kafka pipeline writes the FRet stream and its dead letters to topics, so
    /// only `summary` may be given then (or no `[sinks]` table at all).
    #[serde(default)]
    pub sinks: SinksConfig,
    /// Durable LLM cache (a redb file); a rerun with the same cache makes no repeated LLM call.
    /// Absent: no cache.
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// A damaged cache file is moved aside (`<name>.damaged-<unix time>`) and a new one started, instead of
    /// failing the run. Not a config key: `fretflow run --quarantine-damaged-cache` sets it.
    #[serde(skip)]
    pub quarantine_damaged_cache: bool,
    /// Timely worker threads per process, unless `--workers` is given.
    #[serde(default = "one")]
    pub workers: usize,
    /// Fine-tune the encoder in this process on the FRet stream as the pipeline produces it (file
    /// pipelines; a Kafka pipeline's stream is trained on by `fretflow train --kafka-topic`). Absent: no
    /// training.
    #[serde(default)]
    pub train: Option<TrainConfig>,
}

/// The `[train]` table: `fretflow train`'s options by name (`out = "checkpoints"`, `batch_size = 16`,
/// `eval_dataset = ["../data/scifact"]`, `precision = "bf16"`, `dropout = true`, ...; `_` and `-` alike),
/// read into the same [`TrainOptions`] the command line gives ([`options_from_table`]), plus when to start.
/// `out` is required; `out`, `eval_dataset` and `pairs` are relative to the config file, as is `model` when
/// it names a directory there. Ctrl-C drains the pipeline and stops the trainer at its next step, with a
/// final checkpoint.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Start training once the pipeline's input has ended, on the whole FRet set (the LLM and the trainer
    /// then never compete for cores). Default `false`: train while examples stream in, one step after
    /// another as soon as `min_examples` are there, then finish one pass over the final set.
    pub after_input: bool,
    /// The trainer's options.
    pub options: TrainOptions,
}

impl<'de> Deserialize<'de> for TrainConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let after_input = match table.remove("after_input").or_else(|| table.remove("after-input")) {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => {
                return Err(serde::de::Error::custom(format!("[train] after_input: expected a boolean, found {other}")))
            }
        };
        let options = options_from_table(&table).map_err(|e| serde::de::Error::custom(format!("{e:#}")))?;
        Ok(Self { after_input, options })
    }
}

/// Passage source: a JSONL or Parquet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The file. JSONL lines are `{"id" | "_id", "title"?, "text", "op"?: "upsert" | "delete"}`;
    /// Parquet files have string columns `id` (or `_id`), `text`, and optionally `title` and `op`.
    pub path: PathBuf,
    /// `jsonl` or `parquet`; default: from the file extension (`.parquet` is Parquet, else JSONL).
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// `once`: read the file and finish. `follow`: keep reading lines appended to a JSONL file until
    /// interrupted (Ctrl-C).
    #[serde(default)]
    pub mode: ReadMode,
    /// Records per epoch: the unit in which input advances (smaller epochs pipeline better).
    #[serde(default = "default_epoch_records")]
    pub epoch_records: usize,
    /// In `follow` mode, how often the file is checked for new lines, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Read only the first `limit` records (valid or not), then finish; default: all.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The `[kafka]` table: how to reach the cluster (the fields of [`ConnectionConfig`]: `bootstrap_servers`,
/// `security_protocol`, `[kafka.tls]`, `[kafka.sasl]`, `[kafka.properties]`, overridden by the
/// `FRETFLOW_KAFKA_*` environment variables), plus the passage source and the FRet sink.
///
/// A Kafka run keeps the dataflow's state (passage index, queries, top-N lists) in memory, so on every
/// start each worker reads its partitions of `source.topic` from the beginning to rebuild it; the
/// consumer group's committed offsets only mark progress (see deploy/README.md, "Restarts").
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct KafkaConfig {
    /// Bootstrap servers, TLS, SASL and extra librdkafka properties (the `[kafka]` keys themselves).
    pub connection: ConnectionConfig,
    /// `[kafka.source]`: passages in (key = passage id, value = `{id, title?, text}`, tombstone = delete).
    /// `topic`, `group_id` (progress marker), `start_from` (must be `earliest`), `partitioning` (must be
    /// `static`), `max_message_bytes`, `buffer_records`.
    pub source: Option<kafka::SourceConfig>,
    /// `[kafka.sink]`: the FRet stream out (compacted; key = query id, value = example, tombstone =
    /// retraction) and the dead-letter topic. `topic`, `dead_letter_topic`, `partitions`,
    /// `replication_factor`, `linger_ms`.
    pub sink: Option<kafka::SinkConfig>,
}

impl TryFrom<toml::Table> for KafkaConfig {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        fn part<T: serde::de::DeserializeOwned>(value: Option<toml::Value>, name: &str) -> Result<Option<T>, String> {
            value.map(|v| v.try_into().map_err(|e| format!("[{name}]: {e}"))).transpose()
        }
        let source = part(table.remove("source"), "kafka.source")?;
        let sink = part(table.remove("sink"), "kafka.sink")?;
        let connection = toml::Value::Table(table).try_into().map_err(|e| format!("[kafka]: {e}"))?;
        Ok(Self { connection, source, sink })
    }
}

/// Where a validated pipeline reads passages and writes the FRet set.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A file source, file sinks (`[sinks]`).
    File(&'a SourceConfig),
    /// A Kafka topic in, a compacted Kafka topic out.
    Kafka {
        /// The connection (`[kafka]`).
        connection: &'a ConnectionConfig,
        /// `[kafka.source]`.
        source: &'a kafka::SourceConfig,
        /// `[kafka.sink]`.
        sink: &'a kafka::SinkConfig,
    },
}

/// File formats of sources and sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// `format` if given, else guessed from the extension of `path`.
    pub fn of(path: &Path, format: Option<FileFormat>) -> FileFormat {
        format.unwrap_or(match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") => FileFormat::Parquet,
            _ => FileFormat::Jsonl,
        })
    }
}

/// How a source file is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// Read to the end, then finish.
    #[default]
    Once,
    /// Keep reading appended lines until interrupted.
    Follow,
}

/// The retrieval encoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// A short name (`all-MiniLM-L6-v2`) or a sentence-transformers model directory; `hashing:DIM` is a
    /// bag-of-words hashing embedder of dimension DIM, for dry runs and benchmarks.
    #[serde(default = "default_embedder")]
    pub model: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (default: CUDA device 0 when there is one, else the CPU), as on
    /// the command line.
    #[serde(default)]
    pub device: DeviceChoice,
    /// Token budget of one encoder batch.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// A training output directory (the trainer's `out`) whose promoted checkpoint (`latest`) the
    /// pipeline embeds with: each newly promoted checkpoint re-embeds passages and queries, re-mines the
    /// top N with it, and only new query–passage pairs go to the judge. `model` is used until a checkpoint
    /// is promoted. Checked every `follow_poll_ms`.
    #[serde(default)]
    pub follow: Option<PathBuf>,
    /// How often `follow` is checked for a newly promoted checkpoint, in milliseconds.
    #[serde(default = "default_follow_poll_ms")]
    pub follow_poll_ms: u64,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            model: default_embedder(),
            device: DeviceChoice::default(),
            batch_tokens: default_batch_tokens(),
            follow: None,
            follow_poll_ms: default_follow_poll_ms(),
        }
    }
}

/// Output files. The format of each follows its extension (`.parquet`, else JSONL).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Change-stream files: one record per change, `{op: "upsert" | "retract", key, time, example?}`.
    #[serde(default)]
    pub changes: Vec<PathBuf>,
    /// Snapshot files of the current FRet set, rewritten at the end of the run.
    #[serde(default)]
    pub snapshot: Vec<PathBuf>,
    /// Dead-letter file (JSONL): `{stage, reason, input, record?}` per rejected record. Required by a
    /// file pipeline; a Kafka pipeline sends dead letters to `kafka.sink.dead_letter_topic` instead.
    #[serde(default)]
    pub dead_letters: Option<PathBuf>,
    /// Run summary (JSON): counts and time per stage.
    #[serde(default)]
    pub summary: Option<PathBuf>,
}

fn one() -> usize {
    1
}
fn default_epoch_records() -> usize {
    32
}
fn default_poll_ms() -> u64 {
    500
}
fn default_embedder() -> String {
    "all-MiniLM-L6-v2".into()
}
fn default_batch_tokens() -> usize {
    8192
}
fn default_follow_poll_ms() -> u64 {
    2000
}

impl PipelineConfig {
    /// Reads, parses and validates `path`, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config = Self::parse(&text, path)?;
        config.resolve_paths(&base_dir(path));
        Ok(config)
    }

    /// Applies the environment's overrides from `lookup`: the Kafka connection's `FRETFLOW_KAFKA_*`
    /// variables and [`LLM_URL_ENV`] for remote LLMs. A run applies them once, before it builds
    /// anything; the file itself stays as written.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), kafka::KafkaError> {
        if let Some(kafka) = self.kafka.as_mut() {
            kafka.connection.apply_env(&lookup)?;
        }
        let changed = self.llm.apply_env(&lookup);
        if changed > 0 {
            tracing::info!(roles = changed, "{} overrides base_url of the remote LLM.", LLM_URL_ENV);
        }
        Ok(())
    }

    /// Parses and validates TOML `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks value ranges, naming the field of the first bad one.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str| {
            Err(ConfigError::Invalid { path: path.into(), field: field.into(), message: message.into() })
        };
        self.validate_io(path)?;
        if let Some(train) = &self.train {
            if self.source.is_none() {
                return bad("train", "in-process training needs a file `[source]`; train on a Kafka pipeline's FRet topic with `fretflow train --kafka-topic`");
            }
            if train.options.out.as_os_str().is_empty() {
                return bad("train.out", "name the checkpoint directory");
            }
        }
        let positive = [
            ("workers", self.workers),
            ("source.epoch_records", self.source.as_ref().map_or(1, |s| s.epoch_records)),
            ("fret.neighbours", self.fret.neighbours),
            ("fret.generation_attempts", self.fret.generation_attempts),
            ("fret.queries_per_passage", self.fret.queries_per_passage),
            ("batching.llm.max_batch", self.batching.llm.max_batch),
            ("batching.llm.max_in_flight", self.batching.llm.max_in_flight),
            ("batching.generator.max_batch", self.batching.generator().max_batch),
            ("batching.generator.max_in_flight", self.batching.generator().max_in_flight),
            ("batching.judge.max_batch", self.batching.judge().max_batch),
            ("batching.judge.max_in_flight", self.batching.judge().max_in_flight),
            ("batching.embed.max_batch", self.batching.embed.max_batch),
            ("batching.embed.max_in_flight", self.batching.embed.max_in_flight),
            ("embedder.batch_tokens", self.embedder.batch_tokens),
            ("limits.max_text_chars", self.limits.max_text_chars),
            ("limits.max_id_chars", self.limits.max_id_chars),
        ];
        for (field, value) in positive {
            if value == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if self.source.as_ref().is_some_and(|s| s.limit == Some(0)) {
            return bad("source.limit", "must be at least 1 (leave it out to read everything)");
        }
        let most = crate::llm::fret::MAX_GENERATION_ATTEMPTS;
        if self.fret.generation_attempts > most {
            return bad("fret.generation_attempts", &format!("must be at most {most}"));
        }
        if self.fret.queries_per_passage > most {
            return bad("fret.queries_per_passage", &format!("must be at most {most}"));
        }
        if !crate::llm::fret::valid_further_query_temperature(self.fret.further_query_temperature) {
            return bad("fret.further_query_temperature", "must be in (0, 2]");
        }
        let w = self.fret.weights;
        if !(w.ql.is_finite() && w.rc.is_finite() && w.ql >= 0.0 && w.rc >= 0.0 && w.ql + w.rc > 0.0) {
            return bad("fret.weights", "weights must be finite, ≥ 0, and not both 0");
        }
        if !(self.fret.rrf_k.is_finite() && self.fret.rrf_k >= 0.0) {
            return bad("fret.rrf_k", "must be a finite number ≥ 0");
        }
        let ratio = self.fret.hard_negatives.max_positive_ratio;
        if !(ratio.is_finite() && ratio >= 0.0) {
            return bad("fret.hard_negatives.max_positive_ratio", "must be a number >= 0 (0 turns the filter off)");
        }
        let threshold = self.fret.duplicate_queries.threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return bad("fret.duplicate_queries.threshold", "must be a cosine in (0, 1] (1.0 turns the check off)");
        }
        if self.fret.hard_negatives.count >= self.fret.neighbours {
            return bad("fret.hard_negatives.count", "must be smaller than fret.neighbours (the positive takes one)");
        }
        if self
            .source
            .as_ref()
            .is_some_and(|s| s.mode == ReadMode::Follow && FileFormat::of(&s.path, s.format) == FileFormat::Parquet)
        {
            return bad("source.mode", "`follow` needs a JSONL source (a Parquet file cannot grow)");
        }
        for (table, llm) in self.llm.each() {
            match llm {
                LlmConfig::Instant(i) if i.query_words == 0 => {
                    return bad(&format!("{table}.query_words"), "must be at least 1");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks that exactly one source is given and that the sinks fit it, naming the field.
    fn validate_io(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| {
            Err(ConfigError::Invalid { path: path.into(), field: field.into(), message })
        };
        let kafka_source = self.kafka.as_ref().and_then(|k| k.source.as_ref());
        let kafka_sink = self.kafka.as_ref().and_then(|k| k.sink.as_ref());
        match (&self.source, kafka_source, kafka_sink) {
            (None, None, _) => bad("source", "give a `[source]` file or a `[kafka.source]` topic".into()),
            (Some(_), Some(_), _) => {
                bad("source", "give either a `[source]` file or a `[kafka.source]` topic, not both".into())
            }
            (Some(_), None, Some(_)) => bad(
                "kafka.sink",
                "a file `[source]` writes file `[sinks]`; a Kafka sink needs a `[kafka.source]` topic".into(),
            ),
            (None, Some(_), None) => {
                bad("kafka.sink", "a `[kafka.source]` pipeline needs a `[kafka.sink]` topic".into())
            }
            (Some(_), None, None) => {
                if self.sinks.changes.is_empty() && self.sinks.snapshot.is_empty() {
                    return bad("sinks", "name at least one `changes` or `snapshot` file".into());
                }
                if self.sinks.dead_letters.is_none() {
                    return bad("sinks.dead_letters", "a file pipeline needs a dead-letter file".into());
                }
                Ok(())
            }
            (None, Some(source), Some(sink)) => {
                let kafka = self.kafka.as_ref().expect("matched a Kafka source. This is a bug.");
                let named = |prefix: &str, e: kafka::KafkaError| {
                    let (field, message) = match e {
                        kafka::KafkaError::Config { field, message } => (format!("{prefix}{field}"), message),
                        other => ("kafka".to_owned(), other.to_string()),
                    };
                    ConfigError::Invalid { path: path.into(), field, message }
                };
                kafka.connection.validate().map_err(|e| named("kafka.", e))?;
                source.validate().map_err(|e| named("", e))?;
                sink.validate().map_err(|e| named("", e))?;
                let file_sinks = [
                    ("sinks.changes", !self.sinks.changes.is_empty()),
                    ("sinks.snapshot", !self.sinks.snapshot.is_empty()),
                    ("sinks.dead_letters", self.sinks.dead_letters.is_some()),
                ];
                if let Some((field, _)) = file_sinks.iter().find(|(_, given)| *given) {
                    return bad(
                        field,
                        format!(
                            "a Kafka pipeline writes the FRet stream to topic '{}' and dead letters to '{}'; \
                             remove this file (only `sinks.summary` applies)",
                            sink.topic,
                            sink.dead_letter_topic()
                        ),
                    );
                }
                if source.start_from != kafka::source::StartFrom::Earliest {
                    return bad(
                        "kafka.source.start_from",
                        "must be `earliest`: every start replays the topic from its beginning to rebuild the \
                         dataflow's state (see deploy/README.md, \"Restarts\")"
                            .into(),
                    );
                }
                if source.partitioning != kafka::source::Partitioning::Static {
                    return bad(
                        "kafka.source.partitioning",
                        "must be `static`: each worker replays its own partitions on start, which a \
                         rebalancing consumer group cannot guarantee"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// Where this (validated) pipeline reads and writes.
    pub fn input(&self) -> Input<'_> {
        match (&self.source, &self.kafka) {
            (Some(file), _) => Input::File(file),
            (None, Some(KafkaConfig { connection, source: Some(source), sink: Some(sink) })) => {
                Input::Kafka { connection, source, sink }
            }
            _ => panic!("PipelineConfig::input on a config that failed validation. This is a bug."),
        }
    }

    /// The recipe's parameters, as the dataflow takes them.
    pub fn fret_params(&self) -> FretParams {
        FretParams {
            queries_per_passage: self.fret.queries_per_passage as u32,
            neighbours: self.fret.neighbours,
            rrf_k: self.fret.rrf_k,
            weights: FusionWeights { ql: self.fret.weights.ql, rc: self.fret.weights.rc },
            negatives: self.fret.hard_negatives.strategy,
            negatives_count: self.fret.hard_negatives.count,
            max_positive_ratio: Some(self.fret.hard_negatives.max_positive_ratio).filter(|&r| r > 0.0),
            duplicate_queries: {
                let d = self.fret.duplicate_queries;
                (d.threshold < 1.0).then_some(DedupParams { threshold: d.threshold, action: d.action })
            },
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(source) = self.source.as_mut() {
            fix(&mut source.path);
        }
        self.sinks.changes.iter_mut().for_each(fix);
        self.sinks.snapshot.iter_mut().for_each(fix);
        if let Some(p) = self.sinks.dead_letters.as_mut() {
            fix(p);
        }
        if let Some(p) = self.sinks.summary.as_mut() {
            fix(p);
        }
        if let Some(p) = self.cache.as_mut() {
            fix(p);
        }
        if let Some(p) = self.embedder.follow.as_mut() {
            fix(p);
        }
        if let Some(train) = self.train.as_mut() {
            let o = &mut train.options;
            fix(&mut o.out);
            o.eval_dataset.iter_mut().for_each(fix);
            o.pairs.iter_mut().for_each(fix);
            let model = base.join(&o.model);
            if Path::new(&o.model).is_relative() && model.exists() {
                o.model = model.display().to_string();
            }
        }
    }
}

/// Directory relative paths of a config file are resolved against: the file's own.
fn base_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new("")).to_path_buf()
}
