//! Loading a model from disk: a GGUF file, or a Hugging Face directory (`config.json`, `model.safetensors`
//! or sharded `model-*.safetensors` with an index, `tokenizer.json`, `tokenizer_config.json`).
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::chat::{ChatTemplate, ChatTemplateError};
use super::config::ModelConfig;
use super::files::{read_json, ModelFileError};
use super::gguf::GgufFile;
use super::tokenizer::{LlmTokenizer, TokenizerError};
use super::weights::{self, Weights};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The weights or configuration.
    #[error(transparent)]
    File(#[from] ModelFileError),
    /// The tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template.
    #[error(transparent)]
    ChatTemplate(#[from] ChatTemplateError),
    /// The path is neither a `.gguf` file nor a directory with `config.json`.
    #[error("{0} is neither a .gguf file nor a Hugging Face model directory (config.json + *.safetensors)")]
    NotAModel(PathBuf),
}

/// Everything read from disk, before the weights move to a device.
#[derive(Debug)]
pub(crate) struct LoadedModel {
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: LlmTokenizer,
    pub chat: Option<ChatTemplate>,
    /// File or directory name.
    pub name: String,
    /// First 12 hex digits of the SHA-256 of the weight files' bytes.
    pub digest: String,
}

fn short_digest(hasher: Sha256) -> String {
    hex::encode(hasher.finalize())[..12].to_string()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Loads a GGUF file or a Hugging Face directory.
pub(crate) fn load(path: &Path) -> Result<LoadedModel, LoadError> {
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return load_hf_dir(path);
        }
        return Err(LoadError::NotAModel(path.to_path_buf()));
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return load_gguf(path);
    }
    Err(LoadError::NotAModel(path.to_path_buf()))
}

fn load_gguf(path: &Path) -> Result<LoadedModel, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io { path: path.to_path_buf(), source })?;
    let digest = short_digest(Sha256::new_with_prefix(&bytes));
    let mut file = GgufFile::from_bytes(path, bytes)?;
    let config = ModelConfig::from_gguf(file.metadata())?;
    let tokenizer = LlmTokenizer::from_gguf(file.metadata())?;
    let chat = match file.metadata().opt_string("tokenizer.chat_template")? {
        Some(src) => Some(ChatTemplate::new(
            src,
            &path.display().to_string(),
            tokenizer.bos_token().unwrap_or(""),
            tokenizer.eos_token().unwrap_or(""),
        )?),
        None => None,
    };
    let weights = weights::from_gguf(&mut file, &config)?;
    Ok(LoadedModel { config, weights, tokenizer, chat, name: file_name(path), digest })
}

/// The safetensors files of a directory: the shards an index names, else `model.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelFileError> {
    let index_path = dir.join("model.safetensors.index.json");
    if let Some(index) = read_json(&index_path)? {
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelFileError::MissingKey { path: index_path.clone(), key: "weight_map".into() })?;
        let mut files: Vec<PathBuf> = map.values().filter_map(|v| v.as_str()).map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelFileError::Io {
        path: single,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no model.safetensors and no index"),
    })
}

/// The chat template of a Hugging Face directory: `chat_template.jinja`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of named templates of which `default` is used).
fn hf_chat_template(dir: &Path) -> Result<Option<(String, PathBuf)>, ModelFileError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let src =
            std::fs::read_to_string(&jinja).map_err(|source| ModelFileError::Io { path: jinja.clone(), source })?;
        return Ok(Some((src, jinja)));
    }
    let cfg_path = dir.join("tokenizer_config.json");
    let Some(cfg) = read_json(&cfg_path)? else { return Ok(None) };
    let src = match cfg.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    };
    Ok(src.map(|s| (s, cfg_path)))
}

fn load_hf_dir(dir: &Path) -> Result<LoadedModel, LoadError> {
    let config_path = dir.join("config.json");
    let config = ModelConfig::from_hf_config(&config_path)?;
    let files = safetensors_files(dir)?;
    let mut hasher = Sha256::new();
    for f in std::iter::once(&config_path).chain(&files) {
        let bytes = std::fs::read(f).map_err(|source| ModelFileError::Io { path: f.clone(), source })?;
        hasher.update(&bytes);
    }
    let weights = weights::from_safetensors(&files, &config)?;
    let tokenizer = LlmTokenizer::from_hf_dir(dir)?;
    let chat = match hf_chat_template(dir)? {
        Some((src, from)) => Some(ChatTemplate::new(
            &src,
            &from.display().to_string(),
            tokenizer.bos_token().unwrap_or(""),
            tokenizer.eos_token().unwrap_or(""),
        )?),
        None => None,
    };
    Ok(LoadedModel { config, weights, tokenizer, chat, name: file_name(dir), digest: short_digest(hasher) })
}
