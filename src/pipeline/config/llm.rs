//! The `[llm]` table and its role tables `[llm.generator]` / `[llm.judge]`: which LLM backend writes the
//! queries and which judges the pairs.
use crate::device::DeviceChoice;
use crate::device::Precision;
use crate::llm::local::{LocalLlm, LocalLlmOptions};
use crate::llm::remote::config::RemoteConfig;
use crate::llm::remote::RemoteLlm;
use crate::llm::LlmBackend;
use serde::Deserialize;
use std::sync::Arc;

/// The `[llm]` table: the LLM of each of the pipeline's two roles, the *generator* (writes a task and a
/// query per passage) and the *judge* (scores query-passage pairs with QL and RC).
///
/// - `[llm]` alone, a backend table ([`LlmConfig`]: `backend = "local" | "remote" | "instant"` and its
///   settings): one LLM for both roles.
/// - `[llm]` plus `[llm.generator]` and/or `[llm.judge]`, each a whole backend table of its own: a role
///   table replaces `[llm]` for that role (nothing is inherited from `[llm]`).
/// - `[llm.generator]` and `[llm.judge]` only, `[llm]` with no keys of its own (a backend in `[llm]` as
///   well is still checked, but no role uses it).
///
/// Neither a backend in `[llm]` nor both role tables is an error that says which role has none. Mistakes
/// inside a role table name it: ``unknown field `llm.judge.precison` ``, `llm.judge.precision`.
///
/// When both roles end up with identical settings, one backend is built and both use it (one copy of the
/// model in memory). Batching per role is `[batching.generator]` / `[batching.judge]`. Cached results are
/// keyed by backend, model and prompt, not by role, so a run that splits the roles reuses what an earlier
/// single-`[llm]` run with the same model cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct LlmRoles {
    /// The generator's backend: `[llm.generator]`, else `[llm]`.
    pub generator: LlmConfig,
    /// The judge's backend: `[llm.judge]`, else `[llm]`.
    pub judge: LlmConfig,
    /// The tables `generator` and `judge` come from (`llm`, `llm.generator`, `llm.judge`).
    tables: [&'static str; 2],
}

impl LlmRoles {
    /// Whether both roles have identical settings, and so share one backend.
    pub fn shared(&self) -> bool {
        self.generator == self.judge
    }

    /// `(table, settings)` of the generator, then of the judge; the table names fields in errors.
    pub fn each(&self) -> [(&'static str, &LlmConfig); 2] {
        [(self.tables[0], &self.generator), (self.tables[1], &self.judge)]
    }
}

/// The environment variable that, when set, replaces `base_url` of every role whose backend is `remote`
/// (as `FRETFLOW_KAFKA_BOOTSTRAP_SERVERS` replaces `[kafka] bootstrap_servers`), so one pipeline file
/// serves hosts whose LLM server differs (e.g. a GPU server in deploy/compose.yaml's `gpu` profile).
pub const LLM_URL_ENV: &str = "FRETFLOW_LLM_URL";

impl LlmRoles {
    /// Applies [`LLM_URL_ENV`] from `lookup` (an empty value is ignored); returns how many roles it
    /// changed.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> usize {
        let Some(url) = lookup(LLM_URL_ENV).filter(|url| !url.trim().is_empty()) else { return 0 };
        let mut changed = 0;
        for role in [&mut self.generator, &mut self.judge] {
            if let LlmConfig::Remote(remote) = role {
                remote.base_url = url.trim().to_owned();
                changed += 1;
            }
        }
        changed
    }
}

impl TryFrom<toml::Table> for LlmRoles {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let generator = table.remove("generator").map(|v| backend_table(v, "llm.generator")).transpose()?;
        let judge = table.remove("judge").map(|v| backend_table(v, "llm.judge")).transpose()?;
        let base = if table.is_empty() { None } else { Some(backend_table(toml::Value::Table(table), "llm")?) };
        match (base, generator, judge) {
            (_, Some(generator), Some(judge)) => Ok(Self { generator, judge, tables: ["llm.generator", "llm.judge"] }),
            (Some(base), generator, judge) => Ok(Self {
                tables: [
                    if generator.is_some() { "llm.generator" } else { "llm" },
                    if judge.is_some() { "llm.judge" } else { "llm" },
                ],
                generator: generator.unwrap_or_else(|| base.clone()),
                judge: judge.unwrap_or(base),
            }),
            (None, generator, judge) => {
                const BASE: &str = "`[llm]` a `backend = \"local\" | \"remote\" | \"instant\"` and its settings";
                Err(match (generator, judge) {
                    (Some(_), _) => format!(
                        "llm: the judge has no backend: add an `[llm.judge]` table, or give {BASE} (used by every \
                         role without a table of its own)"
                    ),
                    (_, Some(_)) => format!(
                        "llm: the generator has no backend: add an `[llm.generator]` table, or give {BASE} (used \
                         by every role without a table of its own)"
                    ),
                    (None, None) => format!(
                        "llm: no backend: give {BASE} (used by both roles), or an `[llm.generator]` and an \
                         `[llm.judge]` table"
                    ),
                })
            }
        }
    }
}

/// `value` as one backend table named `table`; errors name the field as `table.field`.
fn backend_table(value: toml::Value, table: &str) -> Result<LlmConfig, String> {
    value.try_into().map_err(|e: toml::de::Error| {
        let message = e.message();
        match message.split_once("field `") {
            Some((before, field)) => format!("{before}field `{table}.{field}"),
            None if message.contains("variant") => format!("{table}.backend: {message}"),
            None => format!("{table}: {message}"),
        }
    })
}

/// One LLM backend, chosen by `backend`: the whole `[llm]`, `[llm.generator]` or `[llm.judge]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum LlmConfig {
    /// In-process model (tch) from a GGUF file.
    Local(LocalLlmConfig),
    /// An OpenAI-compatible server (fields of the remote backend's config).
    Remote(RemoteConfig),
    /// A deterministic word-overlap labeler that answers at once: for dry runs and benchmarks.
    Instant(InstantLlmConfig),
}

impl LocalLlmConfig {
    /// Loads the model (blocking) with at most `max_batch` requests per forward pass.
    pub fn build(&self, max_batch: usize) -> Result<Arc<dyn LlmBackend>, String> {
        let options =
            LocalLlmOptions { device: self.device, precision: self.precision, max_batch, ..LocalLlmOptions::default() };
        Ok(Arc::new(LocalLlm::load(&self.model, options).map_err(|e| e.to_string())?))
    }
}

/// The model backend of a `local` or `remote` table (the `instant` labeler is not a model: `None`). The
/// one place a backend is made from its settings, for pipelines and for `fretflow llm`.
impl LlmConfig {
    /// Builds the backend this table names; `max_batch` bounds a local model's forward pass.
    pub fn build_backend(&self, max_batch: usize) -> Option<Result<Arc<dyn LlmBackend>, String>> {
        match self {
            LlmConfig::Local(local) => Some(local.build(max_batch)),
            LlmConfig::Remote(remote) => Some(
                RemoteLlm::new(remote.clone()).map(|m| Arc::new(m) as Arc<dyn LlmBackend>).map_err(|e| e.to_string()),
            ),
            LlmConfig::Instant(_) => None,
        }
    }
}

/// Settings of the in-process LLM.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLlmConfig {
    /// A short name (`SmolLM2-135M-Instruct`, resolved to the installed package; the opt-in larger models
    /// `qwen2.5-coder-0.5b` and `qwen2.5-coder-1.5b` once installed with `scripts/setup.sh model NAME`) or
    /// a GGUF path. Two roles share the loaded model only when their tables are identical, so name it the
    /// same way in both.
    pub model: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (default: CUDA device 0 when there is one, else the CPU), as on
    /// the command line.
    #[serde(default)]
    pub device: DeviceChoice,
    /// `f32` (default; matches the reference to 1e-3 nats) or `bf16` (about 2x faster on CPUs with AVX-512
    /// BF16 and on GPUs; log-probabilities move by up to ~0.15 nats, fine for ranking). Cached apart.
    #[serde(default)]
    pub precision: Precision,
}

/// Settings of the instant labeler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstantLlmConfig {
    /// Words of each generated query (the first words of the passage).
    #[serde(default = "default_query_words")]
    pub query_words: usize,
    /// Simulated latency per batch, in milliseconds (0: none).
    #[serde(default)]
    pub latency_ms: u64,
}

fn default_query_words() -> usize {
    8
}
