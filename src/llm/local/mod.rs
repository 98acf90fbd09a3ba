//! The local backend: a llama-family model (llama, SmolLM, mistral, qwen2) run in-process with tch, from a
//! GGUF file or a Hugging Face safetensors directory, on the CPU or a CUDA device.
//!
//! - [`gguf`], [`weights`], [`config`], [`load`]: reading files; GGUF tensors of any ggml type are
//!   dequantized to f32 once, at load.
//! - [`tokenizer`]: the tokenizer rebuilt from GGUF metadata as transformers does; [`chat`]: the chat
//!   template rendered with minijinja.
//! - `model`: the decoder; `generate` and `score`: batched generation with a KV cache and batched
//!   teacher forcing; `engine`: requests to batches (and the prompt/continuation tokenization rule).
//!
//! The model lives on one worker thread that owns it; the async [`LlmBackend`] methods send it a job and
//! await the answer, so the async runtime never runs model code. Jobs run one at a time, each batched.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fretflow::llm::{local::{LocalLlm, LocalLlmOptions}, LlmBackend, ScoreRequest};
//! let llm = LocalLlm::load("SmolLM2-135M-Instruct", LocalLlmOptions::default())?;
//! let scores = llm.score(vec![ScoreRequest { prompt: "Passage: ...\nQuery:".into(), continuation: " lift".into() }]).await;
//! # Ok(()) }
//! ```
use std::sync::{mpsc, Arc};

use crate::assets::{resolve_model, AssetError};
use crate::device::{DeviceChoice, DeviceError, Precision};
use crate::llm::{
    BackendId, ContinuationScore, GenerateRequest, Generation, LabelDistribution, LabelRequest, LlmBackend, LlmError,
    Prompt, ScoreRequest,
};

pub mod chat;
pub mod config;
mod engine;
pub mod files;
mod generate;
pub mod gguf;
pub mod load;
mod model;
mod score;
pub mod tokenizer;
pub mod weights;

use chat::ChatTemplate;
use config::ModelConfig;
use engine::{BatchLimits, Engine};
use tokenizer::LlmTokenizer;

/// The model loaded when none is named.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct";

/// How the local backend runs.
#[derive(Debug, Clone, Copy)]
pub struct LocalLlmOptions {
    /// Where the weights live (`auto` = CUDA when available).
    pub device: DeviceChoice,
    /// Most sequences in one forward pass.
    pub max_batch: usize,
    /// Most padded tokens (`sequences x longest`) in one forward pass; bounds memory.
    pub max_batch_tokens: usize,
    /// LibTorch intra-op threads (process-wide); `None` leaves LibTorch's default (one per core).
    pub threads: Option<usize>,
    /// Number format of the model.
    pub precision: Precision,
}

impl Default for LocalLlmOptions {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            max_batch: 16,
            max_batch_tokens: 8192,
            threads: None,
            precision: Precision::F32,
        }
    }
}

/// Why the local backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalLlmError {
    /// The model name or path did not resolve.
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// The device is unknown or absent.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The model files are unusable.
    #[error(transparent)]
    Load(#[from] load::LoadError),
    /// Moving the weights to the device failed (e.g. out of memory).
    #[error("cannot place {model} on {device}: {message}")]
    Placement {
        /// The model.
        model: String,
        /// The device.
        device: String,
        /// LibTorch's message.
        message: String,
    },
    /// The option values are unusable.
    #[error("invalid local LLM option: {0}")]
    Options(String),
}

type Job = Box<dyn FnOnce(&Engine) + Send>;

/// A llama-family model served in-process. See the module docs.
pub struct LocalLlm {
    id: BackendId,
    config: ModelConfig,
    tokenizer: Arc<LlmTokenizer>,
    chat: Option<Arc<ChatTemplate>>,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LocalLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLlm").field("id", &self.id).field("config", &self.config).finish()
    }
}

impl LocalLlm {
    /// Loads `model` (a `.gguf` file, a Hugging Face directory, or a packaged model's short name such as
    /// [`DEFAULT_MODEL`]) and starts its worker thread. Blocking (reads and dequantizes the weights, about a
    /// second for the default model): from async code, call it inside `spawn_blocking`.
    pub fn load(model: &str, options: LocalLlmOptions) -> Result<Self, LocalLlmError> {
        if options.max_batch == 0 || options.max_batch_tokens == 0 {
            return Err(LocalLlmError::Options("max_batch and max_batch_tokens must be positive".into()));
        }
        let device = options.device.resolve()?;
        let path = resolve_model(model)?;
        let started = std::time::Instant::now();
        let loaded = load::load(&path)?;
        if let Some(n) = options.threads {
            tch::set_num_threads(n.max(1) as i32);
        }
        let name = format!("{}@{}", loaded.name, loaded.digest);
        let placement = |e: tch::TchError| LocalLlmError::Placement {
            model: name.clone(),
            device: format!("{device:?}"),
            message: e.to_string(),
        };
        let config = loaded.config.clone();
        let llama =
            model::Llama::new(loaded.config, loaded.weights, device, options.precision.kind()).map_err(placement)?;
        let tokenizer = Arc::new(loaded.tokenizer);
        let chat = loaded.chat.map(Arc::new);
        tracing::info!(model = %name, path = %path.display(), device = ?device, precision = ?options.precision,
            layers = config.num_layers,
            hidden = config.hidden_size, secs = started.elapsed().as_secs_f32(), "Loaded local LLM.");
        let engine = Engine {
            model: llama,
            tokenizer: tokenizer.clone(),
            chat: chat.clone(),
            limits: BatchLimits { max_batch: options.max_batch, max_batch_tokens: options.max_batch_tokens },
            name: name.clone(),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("local-llm".into())
            .spawn(move || {
                let _no_grad = tch::no_grad_guard();
                for job in rx {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&engine))).is_err() {
                        tracing::error!("A local LLM job panicked; its requests fail, the worker goes on.");
                    }
                }
            })
            .map_err(|e| LocalLlmError::Options(format!("cannot start the worker thread: {e}")))?;
        Ok(Self {
            // bf16 answers differ slightly from f32 ones: they get their own cache entries.
            id: BackendId {
                backend: "local".into(),
                model: match options.precision {
                    Precision::F32 => name,
                    Precision::Bf16 => format!("{name}/bf16"),
                },
            },
            config,
            tokenizer,
            chat,
            jobs: Some(tx),
            worker: Some(worker),
        })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_deref()
    }

    /// Runs `f` on the worker thread and awaits its result.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Engine) -> T + Send + 'static) -> Result<T, LlmError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |engine| {
            // The receiver may be gone (the caller stopped waiting); nothing to do then.
            let _ = tx.send(f(engine));
        });
        let sender = self.jobs.as_ref().expect("the job sender lives until drop. This is a bug.");
        sender.send(job).map_err(|_| LlmError::Model("the local LLM worker has stopped".into()))?;
        rx.await.map_err(|_| LlmError::Model("the local LLM job panicked (see the log)".into()))
    }

    /// Runs a batched job, turning a worker failure into one error per request.
    async fn run_batch<T: Send + 'static>(
        &self,
        n: usize,
        f: impl FnOnce(&Engine) -> Vec<Result<T, LlmError>> + Send + 'static,
    ) -> Vec<Result<T, LlmError>> {
        match self.run(f).await {
            Ok(results) => results,
            Err(e) => vec![e; n].into_iter().map(Err).collect(),
        }
    }

    /// Full next-token log-probabilities (`vocab` values each) after each prompt; one forward pass per batch.
    pub async fn next_token_logprobs(&self, prompts: Vec<Prompt>) -> Vec<Result<Vec<f32>, LlmError>> {
        let n = prompts.len();
        self.run_batch(n, move |e| e.next_token_logprobs(&prompts)).await
    }

    /// The text a prompt becomes (chat messages rendered with the template and the generation prompt).
    pub fn render_prompt(&self, prompt: &Prompt) -> Result<String, LlmError> {
        match prompt {
            Prompt::Text(t) => Ok(t.clone()),
            Prompt::Chat(messages) => {
                let chat = self
                    .chat
                    .as_ref()
                    .ok_or_else(|| LlmError::InvalidRequest(format!("{} has no chat template", self.id.model)))?;
                chat.render(messages, true).map_err(|e| LlmError::InvalidRequest(e.to_string()))
            }
        }
    }
}

impl Drop for LocalLlm {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("The local LLM worker thread panicked.");
            }
        }
    }
}

#[async_trait::async_trait]
impl LlmBackend for LocalLlm {
    /// `local`, and the model as `<file name>@<first 12 hex digits of the SHA-256 of the weight files>`.
    fn id(&self) -> BackendId {
        self.id.clone()
    }

    async fn generate(&self, requests: Vec<GenerateRequest>) -> Vec<Result<Generation, LlmError>> {
        let n = requests.len();
        self.run_batch(n, move |e| e.generate(&requests)).await
    }

    /// Teacher-forced log-probabilities of each continuation; see the tokenization rule in `engine`'s docs:
    /// the prompt's trailing whitespace moves to the continuation, and the two are tokenized separately.
    async fn score(&self, requests: Vec<ScoreRequest>) -> Vec<Result<ContinuationScore, LlmError>> {
        let n = requests.len();
        self.run_batch(n, move |e| e.score(&requests)).await
    }

    async fn label_probs(&self, requests: Vec<LabelRequest>) -> Vec<Result<LabelDistribution, LlmError>> {
        let n = requests.len();
        self.run_batch(n, move |e| e.label_probs(&requests)).await
    }
}
