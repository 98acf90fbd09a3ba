//! The shape of a llama-family model, read from GGUF metadata or a Hugging Face `config.json`.
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::files::ModelFileError;
use super::gguf::GgufMetadata;

/// Architectures the local backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama, SmolLM, Mistral-style dense decoders: no attention biases.
    Llama,
    /// Qwen2: like llama, plus biases on the q, k and v projections.
    Qwen2,
}

impl Architecture {
    /// Maps a GGUF `general.architecture` or a `config.json` `model_type`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// Whether q, k and v projections carry biases.
    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }
}

/// Hyperparameters of a llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which architecture.
    pub arch: Architecture,
    /// Rows of the embedding matrix.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Trained context length (prompts longer than this are rejected).
    pub max_positions: usize,
    /// Whether the output projection may be the embedding matrix. GGUF: true (llama.cpp ties when the
    /// file has no `output.weight`); `config.json`: its `tie_word_embeddings` (default false), and an
    /// untied model without `lm_head.weight` is an error.
    pub tie_word_embeddings: bool,
}

fn missing(path: &Path, key: &str) -> ModelFileError {
    ModelFileError::MissingKey { path: path.to_path_buf(), key: key.to_string() }
}

impl ModelConfig {
    /// Reads the `<arch>.*` keys of a GGUF file. `vocab_size` comes from the token list when the file has no
    /// `<arch>.vocab_size`.
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self, ModelFileError> {
        let arch_name = meta.string("general.architecture")?;
        let arch = Architecture::from_name(arch_name).ok_or_else(|| ModelFileError::UnsupportedArchitecture {
            path: meta.path().to_path_buf(),
            arch: arch_name.to_string(),
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = meta.uint(&key("embedding_length"))?;
        let num_heads = meta.uint(&key("attention.head_count"))?;
        let vocab_size = match meta.opt_uint(&key("vocab_size"))? {
            Some(v) => v,
            None => meta.string_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match meta.opt_uint(&key("attention.key_length"))? {
            Some(v) => v,
            None => hidden_size / num_heads.max(1),
        };
        Ok(Self {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: meta.uint(&key("feed_forward_length"))?,
            num_layers: meta.uint(&key("block_count"))?,
            num_heads,
            num_kv_heads: meta.opt_uint(&key("attention.head_count_kv"))?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: meta.float(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.opt_float(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            max_positions: meta.opt_uint(&key("context_length"))?.unwrap_or(2048),
            tie_word_embeddings: true,
        })
        .and_then(|c| c.validated(meta.path()))
    }

    /// Reads a Hugging Face `config.json` (`model_type` llama, mistral or qwen2).
    pub fn from_hf_config(path: &Path) -> Result<Self, ModelFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelFileError::Io { path: path.to_path_buf(), source })?;
        let json: Json = serde_json::from_str(&text)
            .map_err(|e| ModelFileError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        let uint = |k: &str| -> Result<usize, ModelFileError> {
            json.get(k).and_then(Json::as_u64).map(|v| v as usize).ok_or_else(|| missing(path, k))
        };
        let model_type = json.get("model_type").and_then(Json::as_str).ok_or_else(|| missing(path, "model_type"))?;
        let arch = Architecture::from_name(model_type).ok_or_else(|| ModelFileError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            arch: model_type.to_string(),
        })?;
        // transformers 5 writes `rope_parameters`; older configs write `rope_theta` and `rope_scaling`.
        let rope = json.get("rope_parameters").filter(|v| v.is_object());
        let scaling = json.get("rope_scaling").filter(|v| !v.is_null()).or(rope);
        if let Some(scaling) = scaling {
            let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Json::as_str);
            if kind != Some("default") {
                return Err(ModelFileError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("RoPE scaling {scaling}"),
                });
            }
        }
        let rope_theta = json
            .get("rope_theta")
            .or_else(|| rope.and_then(|r| r.get("rope_theta")))
            .and_then(Json::as_f64)
            .unwrap_or(10_000.0);
        let hidden_size = uint("hidden_size")?;
        let num_heads = uint("num_attention_heads")?;
        Ok(Self {
            arch,
            vocab_size: uint("vocab_size")?,
            hidden_size,
            intermediate_size: uint("intermediate_size")?,
            num_layers: uint("num_hidden_layers")?,
            num_heads,
            num_kv_heads: uint("num_key_value_heads").unwrap_or(num_heads),
            head_dim: uint("head_dim").unwrap_or(hidden_size / num_heads.max(1)),
            rms_norm_eps: json
                .get("rms_norm_eps")
                .and_then(Json::as_f64)
                .ok_or_else(|| missing(path, "rms_norm_eps"))?,
            rope_theta,
            max_positions: uint("max_position_embeddings").unwrap_or(2048),
            tie_word_embeddings: json.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
        })
        .and_then(|c| c.validated(path))
    }

    /// Rejects shapes the attention code cannot run, naming the file.
    fn validated(self, path: &Path) -> Result<Self, ModelFileError> {
        let bad = |what: String| Err(ModelFileError::Unsupported { path: PathBuf::from(path), what });
        if self.num_heads == 0 || self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("{} query heads over {} key/value heads", self.num_heads, self.num_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!("odd head dimension {}", self.head_dim));
        }
        Ok(self)
    }
}
