//! `fretflow llm queries` and `fretflow llm judge`: the LLM stage alone, on JSONL files.
//!
//! Failures never stop a run: a malformed input line, a failed call, or an answer that is not a query goes
//! to the dead-letter file (`--failures`, default `<output>.failures.jsonl`) with its input line and
//! reason, and the run goes on. A summary line is printed at the end.
use crate::connectors::file::jsonl::{self, JsonlWriter};
use crate::dataflow::generate::query_id;
use crate::dataflow::params::too_short;
use crate::device::DeviceChoice;
use crate::device::Precision;
use crate::llm::cache::LlmCache;
use crate::llm::fret::valid_further_query_temperature;
use crate::llm::fret::{FretLlm, FretOptions, Judgement, MAX_GENERATION_ATTEMPTS};
use crate::llm::local::DEFAULT_MODEL;
use crate::llm::prompts::FewShotExample;
use crate::llm::remote::RemoteConfig;
use crate::llm::LlmBackend;
use crate::pipeline::config::{LlmConfig, LocalLlmConfig};
use crate::records::Passage;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `fretflow llm`.
#[derive(Debug, clap::Args)]
pub struct LlmArgs {
    /// What to run.
    #[command(subcommand)]
    pub command: LlmCommand,
}

/// The LLM stage's commands.
#[derive(Debug, clap::Subcommand)]
pub enum LlmCommand {
    /// Write a task and a query for each passage of a JSONL file.
    Queries(StageArgs),
    /// Score (query, passage) pairs with query likelihood (QL) and relevance classification (RC).
    Judge(StageArgs),
}

/// Input, output and backend of one run.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// Input JSONL. `queries`: passages (`id` or `_id`, optional `title`, `text`). `judge`: pairs
    /// (`query_id` optional, `query`, `passage`: a passage object).
    #[arg(long, value_name = "FILE.jsonl")]
    pub input: PathBuf,
    /// Output JSONL: one line per input that succeeded.
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: PathBuf,
    /// Dead-letter JSONL for inputs that failed, with their line and reason
    /// (default: `<output stem>.failures.jsonl` next to the output).
    #[arg(long, value_name = "FILE.jsonl")]
    pub failures: Option<PathBuf>,
    /// `local` (the model in-process) or the base URL of an OpenAI-compatible server
    /// (`http://127.0.0.1:8000/v1`).
    #[arg(long, default_value = "local")]
    pub llm: String,
    /// Local: a GGUF file or a short name (default SmolLM2-135M-Instruct). Server: the model's name there
    /// (required).
    #[arg(long)]
    pub model: Option<String>,
    /// TOML file with the whole remote config (base_url, model, api_key_env, retries, ql...); replaces
    /// `--llm`, `--model` and `--api-key-env`.
    #[arg(long, value_name = "FILE.toml")]
    pub remote_config: Option<PathBuf>,
    /// Name of the environment variable holding the server's API key.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Device of the local model: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Number type of the local model: f32 (reference) or bf16 (about 2x faster on CPUs with AVX-512 BF16;
    /// fine for ranking, not for parity checks).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// `judge` only: score query likelihood alone, without asking for relevance classification (one model
    /// call per pair instead of two; the judgement's rc is 0).
    #[arg(long)]
    pub no_rc: bool,
    /// Durable cache file (redb); a rerun with the same cache makes no model call for inputs already done.
    #[arg(long, value_name = "FILE.redb")]
    pub cache: Option<PathBuf>,
    /// A damaged --cache file is moved aside (`<name>.damaged-<unix time>`) and a new cache started,
    /// instead of stopping with an error.
    #[arg(long)]
    pub quarantine_damaged_cache: bool,
    /// Requests per backend call.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Backend calls in flight at once (raise it for remote servers).
    #[arg(long, default_value_t = 1)]
    pub batches_in_flight: usize,
    /// Tries per passage at a usable query: greedy first, then sampled retries for empty, unparsable or
    /// echoed answers.
    #[arg(long, default_value_t = crate::llm::fret::DEFAULT_GENERATION_ATTEMPTS)]
    pub attempts: usize,
    /// `queries`: queries per passage (the pipeline's `[fret] queries_per_passage`). The first is the same
    /// as with 1 (greedy, then sampled retries; ids `q:<passage>`), each further one is sampled with seeds
    /// of its own (ids `q_<v>:<passage>`), so raising it later reuses the cached answers.
    #[arg(long, default_value_t = 1)]
    pub queries_per_passage: u32,
    /// `queries`: sampling temperature of a passage's further queries, in (0, 2] (the pipeline's `[fret]
    /// further_query_temperature`).
    #[arg(long, default_value_t = crate::llm::fret::DEFAULT_FURTHER_QUERY_TEMPERATURE)]
    pub further_query_temperature: f32,
    /// JSON file of few-shot examples for query generation (`[{"title", "text", "task", "query"}, ...]`),
    /// replacing the built-in ones.
    #[arg(long, value_name = "FILE.json")]
    pub examples: Option<PathBuf>,
    /// Process at most this many input records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// `queries`: a passage with fewer words (title and text together) gets no query and goes to the
    /// failures as `too_short` (the pipeline's `[limits] min_words`). 0: no minimum.
    #[arg(long, default_value_t = crate::dataflow::params::DEFAULT_MIN_WORDS)]
    pub min_words: usize,
}

/// Runs `fretflow llm`.
pub fn run(args: LlmArgs) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    match args.command {
        LlmCommand::Queries(stage) => {
            let llm = build_llm(&stage)?;
            runtime.block_on(run_stage::<Passage, Queries>(stage, llm))
        }
        LlmCommand::Judge(stage) => {
            let llm = build_llm(&stage)?;
            runtime.block_on(run_stage::<PairRecord, Judge>(stage, llm))
        }
    }
}

/// One line of `judge` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PairRecord {
    #[serde(default)]
    query_id: Option<String>,
    query: String,
    passage: Passage,
}

/// One line of `queries` output (the `llm queries` output format).
#[derive(Serialize)]
struct QueryRecord<'a> {
    id: String,
    seed_id: &'a str,
    task: &'a str,
    text: &'a str,
    generator: Generator<'a>,
}

#[derive(Serialize)]
struct Generator<'a> {
    model: &'a str,
    prompt_version: &'a str,
}

/// One line of `judge` output (the `llm judge` output format).
#[derive(Serialize)]
struct JudgementRecord<'a> {
    query_id: Option<&'a str>,
    passage_id: &'a str,
    #[serde(flatten)]
    judgement: &'a Judgement,
}

/// One line of the dead-letter file.
#[derive(Serialize)]
struct FailureRecord<'a> {
    input: String,
    id: Option<&'a str>,
    reason: &'a str,
    message: String,
}

/// What a stage does with a chunk of records: run the LLM and write successes and failures.
trait Stage<R> {
    async fn process(llm: &FretLlm, chunk: &[(usize, R)], out: &mut Outputs<'_>) -> anyhow::Result<()>;
}

struct Queries;
struct Judge;

impl Stage<Passage> for Queries {
    async fn process(llm: &FretLlm, chunk: &[(usize, Passage)], out: &mut Outputs<'_>) -> anyhow::Result<()> {
        let mut seeds = Vec::with_capacity(chunk.len() * out.queries_per_passage as usize);
        for (line, passage) in chunk {
            match too_short(passage, out.min_words) {
                Some(reason) => out.failed(*line, Some(&passage.id), "too_short", reason)?,
                None => seeds.extend((0..out.queries_per_passage).map(|variant| (*line, passage, variant))),
            }
        }
        let requests: Vec<(&Passage, u32)> = seeds.iter().map(|&(_, passage, variant)| (passage, variant)).collect();
        let results = llm.generate_query_variants(&requests).await;
        let of = out.queries_per_passage;
        for ((line, passage, variant), result) in seeds.into_iter().zip(results) {
            match result {
                Ok(q) => out.ok(&QueryRecord {
                    id: query_id(&passage.id, variant),
                    seed_id: &passage.id,
                    task: &q.task,
                    text: &q.query,
                    generator: Generator { model: &q.model, prompt_version: &q.prompt_version },
                })?,
                Err(failure) => {
                    let message = match of {
                        1 => failure.to_string(),
                        _ => format!("query {} of {of}: {failure}", variant + 1),
                    };
                    out.failed(line, Some(&passage.id), failure.reason(), message)?
                }
            }
        }
        Ok(())
    }
}

impl Stage<PairRecord> for Judge {
    async fn process(llm: &FretLlm, chunk: &[(usize, PairRecord)], out: &mut Outputs<'_>) -> anyhow::Result<()> {
        let pairs: Vec<(&str, &Passage)> = chunk.iter().map(|(_, r)| (r.query.as_str(), &r.passage)).collect();
        let results = llm.judge(&pairs).await;
        for ((line, pair), result) in chunk.iter().zip(results) {
            match result {
                Ok(judgement) => out.ok(&JudgementRecord {
                    query_id: pair.query_id.as_deref(),
                    passage_id: &pair.passage.id,
                    judgement: &judgement,
                })?,
                Err(error) => out.failed(*line, Some(&pair.passage.id), "llm_error", error.to_string())?,
            }
        }
        Ok(())
    }
}

/// The output and dead-letter files, with counts.
struct Outputs<'a> {
    input: &'a Path,
    output: JsonlWriter,
    failures: JsonlWriter,
    written: usize,
    failed: BTreeMap<String, usize>,
    min_words: usize,
    queries_per_passage: u32,
}

impl Outputs<'_> {
    fn ok<T: Serialize>(&mut self, record: &T) -> anyhow::Result<()> {
        self.written += 1;
        self.output.write(record).context("cannot write the output")
    }

    fn failed(&mut self, line: usize, id: Option<&str>, reason: &str, message: String) -> anyhow::Result<()> {
        *self.failed.entry(reason.to_string()).or_default() += 1;
        let record = FailureRecord { input: format!("{}:{line}", self.input.display()), id, reason, message };
        self.failures.write(&record).context("cannot write the failures file")
    }
}

/// The backend, cache and FRet layer the arguments describe (loads a local model: blocking).
fn build_llm(args: &StageArgs) -> anyhow::Result<FretLlm> {
    if args.batch_size == 0 || args.batches_in_flight == 0 || args.attempts == 0 || args.queries_per_passage == 0 {
        bail!("--batch-size, --batches-in-flight, --attempts and --queries-per-passage must be at least 1");
    }
    let most = MAX_GENERATION_ATTEMPTS;
    if args.attempts > most || args.queries_per_passage as usize > most {
        bail!("--attempts and --queries-per-passage must be at most {most}");
    }
    let t = args.further_query_temperature;
    if !valid_further_query_temperature(f64::from(t)) {
        bail!("--further-query-temperature must be in (0, 2], not {t}");
    }
    let cache = match &args.cache {
        Some(path) => Some(Arc::new(LlmCache::open_or_quarantine(path, args.quarantine_damaged_cache)?)),
        None => None,
    };
    let backend = build_backend(args)?;
    let mut options = FretOptions {
        batch_size: args.batch_size,
        batches_in_flight: args.batches_in_flight,
        generation_attempts: args.attempts,
        relevance: !args.no_rc,
        further_query_temperature: args.further_query_temperature,
        ..FretOptions::default()
    };
    if let Some(path) = &args.examples {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let examples: Vec<FewShotExample> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON list of {{title, text, task, query}}", path.display()))?;
        if examples.is_empty() {
            bail!("{}: no examples", path.display());
        }
        options.prompts.examples = Some(examples);
    }
    Ok(FretLlm::new(backend, cache, options))
}

async fn run_stage<R, S>(args: StageArgs, llm: FretLlm) -> anyhow::Result<()>
where
    R: serde::de::DeserializeOwned,
    S: Stage<R>,
{
    let started = Instant::now();
    let failures_path = args.failures.clone().unwrap_or_else(|| default_failures_path(&args.output));
    let mut out = Outputs {
        input: &args.input,
        output: JsonlWriter::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?,
        failures: JsonlWriter::create(&failures_path)
            .with_context(|| format!("cannot create {}", failures_path.display()))?,
        written: 0,
        failed: BTreeMap::new(),
        min_words: args.min_words,
        queries_per_passage: args.queries_per_passage,
    };
    let chunk_size = (args.batch_size * args.batches_in_flight * 4).max(64);
    let mut chunk: Vec<(usize, R)> = Vec::with_capacity(chunk_size);
    let mut seen = 0usize;
    for record in jsonl::records::<R>(&args.input)? {
        if args.limit.is_some_and(|limit| seen >= limit) {
            break;
        }
        seen += 1;
        match record {
            Ok(record) => chunk.push(record),
            Err(error) => out.failed(error_line(&error), None, "malformed_input", error.to_string())?,
        }
        if chunk.len() == chunk_size {
            S::process(&llm, &chunk, &mut out).await?;
            chunk.clear();
            tracing::info!(records = seen, written = out.written, calls = llm.model_calls().total(), "Progress.");
        }
    }
    S::process(&llm, &chunk, &mut out).await?;
    out.output.finish().context("cannot write the output")?;
    out.failures.finish().context("cannot write the failures file")?;
    let failed: usize = out.failed.values().sum();
    let cache =
        llm.cache_stats().map_or("no cache".to_string(), |s| format!("cache hits {}, misses {}", s.hits, s.misses));
    println!(
        "{} records: {} written to {}, {} failed {:?} (see {}); {} model requests, {}; {:.1}s",
        seen,
        out.written,
        args.output.display(),
        failed,
        out.failed,
        failures_path.display(),
        llm.model_calls().total(),
        cache,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The backend the arguments name.
fn build_backend(args: &StageArgs) -> anyhow::Result<Arc<dyn LlmBackend>> {
    if let Some(path) = &args.remote_config {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: RemoteConfig =
            toml::from_str(&text).with_context(|| format!("{}: invalid remote config", path.display()))?;
        return build(LlmConfig::Remote(config), args).with_context(|| path.display().to_string());
    }
    if args.llm == "local" {
        return local_backend(args.model.as_deref().unwrap_or(DEFAULT_MODEL), args);
    }
    if !(args.llm.starts_with("http://") || args.llm.starts_with("https://")) {
        bail!("--llm must be `local` or the http(s):// base URL of an OpenAI-compatible server, got '{}'", args.llm);
    }
    let Some(model) = &args.model else {
        bail!("--model is required with a server URL: the name the server knows the model by");
    };
    let mut config = RemoteConfig::new(&args.llm, model);
    config.api_key_env = args.api_key_env.clone();
    build(LlmConfig::Remote(config), args)
}

/// The in-process model.
fn local_backend(model: &str, args: &StageArgs) -> anyhow::Result<Arc<dyn LlmBackend>> {
    let config = LocalLlmConfig { model: model.to_owned(), device: args.device, precision: args.precision };
    build(LlmConfig::Local(config), args)
}

/// The backend of a pipeline's `[llm]` table with these settings: the same code as `fretflow run`.
fn build(config: LlmConfig, args: &StageArgs) -> anyhow::Result<Arc<dyn LlmBackend>> {
    match config.build_backend(args.batch_size) {
        Some(backend) => backend.map_err(|e| anyhow::anyhow!(e)),
        None => bail!("the instant labeler has no model backend"),
    }
}

/// `<dir>/<stem>.failures.jsonl` for an output `<dir>/<stem>.jsonl`.
fn default_failures_path(output: &Path) -> PathBuf {
    let stem = output.file_stem().map_or("output".into(), |s| s.to_string_lossy().into_owned());
    output.with_file_name(format!("{stem}.failures.jsonl"))
}

/// The line an input error points at (0 when none).
fn error_line(error: &crate::connectors::file::InputError) -> usize {
    use crate::connectors::file::InputError;
    match error {
        InputError::Read { line, .. } | InputError::Malformed { line, .. } => *line,
        _ => 0,
    }
}
