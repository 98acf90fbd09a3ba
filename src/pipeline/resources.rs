//! Builds what a pipeline config names: the labeler (LLM + cache), the encoder, the passage reader and
//! the sinks. Each failure is a typed error naming the config field.
use super::config::{FileFormat, LlmConfig, PipelineConfig, ReadMode};
use crate::connectors::file::sink::{change_sink, JsonlDeadLetters, Snapshot};
use crate::connectors::file::source::{JsonlPassages, Limited, ParquetPassages, PassageReader, SourceError};
use crate::connectors::{ChangeSink, DeadLetterSink};
use crate::dataflow::embedder::{EncoderLoader, SharedEmbedder};
use crate::dataflow::fret_labeler::FretLabeler;
use crate::dataflow::instant::{HashingEmbedder, OverlapLabeler, WithLatency};
use crate::dataflow::labeler::{Labeler, SplitLabeler};
use crate::dataflow::progress::Metrics;
use crate::dataflow::stages::Stages;
use crate::embed::{EncoderOptions, SentenceEncoder, TextEmbedder};
use crate::llm::cache::LlmCache;
use crate::llm::fret::{FretLlm, FretOptions};
use crate::llm::LlmBackend;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A resource of the config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// An LLM backend could not start.
    #[error("{table}: {message}")]
    Llm {
        /// Its table: `llm`, `llm.generator` or `llm.judge`.
        table: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The LLM cache could not be opened (`cache`).
    #[error("cache: {0}")]
    Cache(String),
    /// The encoder could not be loaded (`embedder`).
    #[error("embedder: {0}")]
    Embedder(String),
    /// The source could not be opened (`source.path`).
    #[error("source.path: {0}")]
    Source(#[from] SourceError),
    /// A sink file could not be created (`sinks`).
    #[error("sinks: {0}")]
    Sink(String),
    /// A file reader or sink was asked of a Kafka pipeline (no `[source]` or `sinks.dead_letters`).
    #[error("source: this pipeline has no file `[source]` and `sinks.dead_letters` (it reads `[kafka.source]`)")]
    NotFile,
    /// The tokio runtime for model and I/O calls could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What every pipeline driver (file or Kafka) starts from: the runtime for model and I/O calls, the stages
/// (models, batching, recipe parameters, fresh metrics) and a flag that Ctrl-C sets.
pub struct PipelineParts {
    /// The tokio runtime the stages' model calls run on; keep it alive for the run.
    pub runtime: tokio::runtime::Runtime,
    /// The stages of the FRet dataflow.
    pub stages: Stages,
    /// Set when the process receives Ctrl-C.
    pub interrupted: Arc<AtomicBool>,
}

/// Builds [`PipelineParts`] for `config`; on Ctrl-C the driver logs `on_interrupt` (what it does next).
pub fn pipeline_parts(config: &PipelineConfig, on_interrupt: &'static str) -> Result<PipelineParts, ResourceError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fretflow-io")
        .build()
        .map_err(ResourceError::Runtime)?;
    let stages = Stages {
        labeler: labeler(config)?,
        embedder: embedder(config)?,
        runtime: runtime.handle().clone(),
        generate_batch: config.batching.generator().policy(),
        judge_batch: config.batching.judge().policy(),
        embed_batch: config.batching.embed.policy(),
        fret: config.fret_params(),
        limits: config.limits,
        metrics: Arc::new(Metrics::default()),
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Interrupted: {on_interrupt}");
            flag.store(true, Ordering::Relaxed);
        }
    });
    Ok(PipelineParts { runtime, stages, interrupted })
}

/// The labeler of `config.llm`, with the durable cache of `config.cache` for real models: one labeler
/// when both roles share their settings and batch size (as with a single `[llm]`), else a
/// [`SplitLabeler`] of the generator's and the judge's. The cache opens first, so a bad cache path fails
/// before a model loads; both roles share it (its keys name the backend and model, not the role).
pub fn labeler(config: &PipelineConfig) -> Result<Arc<dyn Labeler>, ResourceError> {
    let models = config.llm.each().iter().any(|(_, llm)| !matches!(llm, LlmConfig::Instant(_)));
    let cache = if models { open_cache(config)? } else { None };
    let llms = role_llms(config)?;
    let (generator_batch, judge_batch) = (config.batching.generator().max_batch, config.batching.judge().max_batch);
    let generator = role_labeler(config, llms.generator, cache.clone(), generator_batch);
    if config.llm.shared() && generator_batch == judge_batch {
        return Ok(generator);
    }
    let judge = role_labeler(config, llms.judge, cache, judge_batch);
    Ok(Arc::new(SplitLabeler::new(generator, judge)))
}

/// One role's LLM, as built from its table.
#[derive(Clone)]
pub enum RoleLlm {
    /// A local or remote model, to run the FRet prompts on.
    Model(Arc<dyn LlmBackend>),
    /// The instant labeler (`backend = "instant"`), which needs no prompts.
    Instant(Arc<dyn Labeler>),
}

/// The LLMs of the generator and the judge.
#[derive(Clone)]
pub struct RoleLlms {
    /// Writes the queries.
    pub generator: RoleLlm,
    /// Judges the pairs.
    pub judge: RoleLlm,
}

/// Builds the LLM of each role in `config.llm`. Roles with identical settings get one LLM, built once
/// (one copy of a local model in memory; one connection pool and concurrency limit for a server). A local
/// model runs batches of up to its roles' largest `max_batch`.
pub fn role_llms(config: &PipelineConfig) -> Result<RoleLlms, ResourceError> {
    let [(generator_table, generator), (judge_table, judge)] = config.llm.each();
    let (generator_batch, judge_batch) = (config.batching.generator().max_batch, config.batching.judge().max_batch);
    if config.llm.shared() {
        let llm = role_llm(generator_table, generator, generator_batch.max(judge_batch))?;
        return Ok(RoleLlms { generator: llm.clone(), judge: llm });
    }
    Ok(RoleLlms {
        generator: role_llm(generator_table, generator, generator_batch)?,
        judge: role_llm(judge_table, judge, judge_batch)?,
    })
}

/// The LLM of one role's table (`table` names it in errors).
fn role_llm(table: &'static str, llm: &LlmConfig, max_batch: usize) -> Result<RoleLlm, ResourceError> {
    let failed = |message: String| ResourceError::Llm { table, message };
    Ok(match llm {
        LlmConfig::Instant(i) => {
            let overlap = Arc::new(OverlapLabeler::new(i.query_words));
            RoleLlm::Instant(if i.latency_ms == 0 {
                overlap
            } else {
                Arc::new(WithLatency::new(overlap, Duration::from_millis(i.latency_ms)))
            })
        }
        model => match model.build_backend(max_batch) {
            Some(backend) => RoleLlm::Model(backend.map_err(failed)?),
            None => return Err(failed("names no model backend. This is a bug.".into())),
        },
    })
}

fn open_cache(config: &PipelineConfig) -> Result<Option<Arc<LlmCache>>, ResourceError> {
    let Some(path) = &config.cache else { return Ok(None) };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ResourceError::Cache(format!("{}: {e}", dir.display())))?;
    }
    let cache = LlmCache::open_or_quarantine(path, config.quarantine_damaged_cache)
        .map_err(|e| ResourceError::Cache(e.to_string()))?;
    Ok(Some(Arc::new(cache)))
}

/// The labeler of one role's LLM: the FRet layer over a model (requests per call `batch_size`), or the
/// instant labeler as it is.
fn role_labeler(
    config: &PipelineConfig,
    llm: RoleLlm,
    cache: Option<Arc<LlmCache>>,
    batch_size: usize,
) -> Arc<dyn Labeler> {
    let backend = match llm {
        RoleLlm::Instant(labeler) => return labeler,
        RoleLlm::Model(backend) => backend,
    };
    let options = FretOptions {
        batch_size,
        generation_attempts: config.fret.generation_attempts,
        further_query_temperature: config.fret.further_query_temperature as f32,
        // RC weighted 0 cannot change a ranking: it is not asked for.
        relevance: config.fret.weights.rc > 0.0,
        ..FretOptions::default()
    };
    Arc::new(FretLabeler::new(Arc::new(FretLlm::new(backend, cache, options))))
}

/// The encoder of `config.embedder`, following its `follow` directory's promoted checkpoints when set
/// (each loaded as a sentence-transformers directory with the same device and batching).
pub fn embedder(config: &PipelineConfig) -> Result<SharedEmbedder, ResourceError> {
    let e = &config.embedder;
    let device = e.device.resolve().map_err(|err| ResourceError::Embedder(format!("device: {err}")))?;
    let options = EncoderOptions { device, token_budget: e.batch_tokens, ..EncoderOptions::default() };
    let shared = if let Some(dim) = e.model.strip_prefix("hashing:") {
        let dim: usize = dim.parse().ok().filter(|d| *d > 0).ok_or_else(|| {
            ResourceError::Embedder(format!("model: `hashing:DIM` needs a positive DIM, got {dim:?}"))
        })?;
        SharedEmbedder::new(e.model.clone(), HashingEmbedder::new(dim))
    } else {
        let encoder =
            SentenceEncoder::from_name(&e.model, options).map_err(|err| ResourceError::Embedder(err.to_string()))?;
        SharedEmbedder::new(e.model.clone(), encoder)
    };
    let Some(dir) = &e.follow else { return Ok(shared) };
    let loader: EncoderLoader = Arc::new(move |checkpoint: &str| {
        let encoder = SentenceEncoder::load(std::path::Path::new(checkpoint), options)
            .map_err(|err| format!("checkpoint {checkpoint}: {err}"))?;
        Ok(Box::new(encoder) as Box<dyn TextEmbedder + Send>)
    });
    Ok(shared.follow_checkpoints(dir, loader, Duration::from_millis(e.follow_poll_ms.max(1))))
}

/// The passage reader of `config.source`.
pub fn reader(config: &PipelineConfig) -> Result<Box<dyn PassageReader>, ResourceError> {
    let s = config.source.as_ref().ok_or(ResourceError::NotFile)?;
    let reader: Box<dyn PassageReader> = match FileFormat::of(&s.path, s.format) {
        FileFormat::Jsonl => Box::new(JsonlPassages::open(&s.path, s.mode == ReadMode::Follow)?),
        FileFormat::Parquet => Box::new(ParquetPassages::open(&s.path)?),
    };
    Ok(match s.limit {
        Some(limit) => Box::new(Limited::new(reader, limit)),
        None => reader,
    })
}

/// The change and snapshot sinks of `config.sinks`.
pub fn change_sinks(config: &PipelineConfig) -> Result<Vec<Box<dyn ChangeSink>>, ResourceError> {
    let mut sinks = Vec::new();
    for path in &config.sinks.changes {
        sinks.push(change_sink(path).map_err(ResourceError::Sink)?);
    }
    for path in &config.sinks.snapshot {
        sinks.push(Box::new(Snapshot::new(path)) as Box<dyn ChangeSink>);
    }
    Ok(sinks)
}

/// The dead-letter sink of `config.sinks.dead_letters`.
pub fn dead_letter_sink(config: &PipelineConfig) -> Result<Box<dyn DeadLetterSink>, ResourceError> {
    let path = config.sinks.dead_letters.as_ref().ok_or(ResourceError::NotFile)?;
    Ok(Box::new(JsonlDeadLetters::create(path).map_err(ResourceError::Sink)?))
}
