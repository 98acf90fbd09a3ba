//! Reading a sentence-transformers model directory: `config.json` (the BERT or MPNet architecture),
//! `modules.json` (the module pipeline), `1_Pooling/config.json` (pooling) and
//! `sentence_bert_config.json` (sequence length, lowercasing). Every error names the file.
use super::EmbedError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The transformer families [`super::bert::BertModel`] runs (`model_type` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT: absolute positions from 0, token-type embeddings (all-MiniLM-L6-v2, BGE, E5, GTE).
    Bert,
    /// MPNet: positions counted from [`MPNET_PADDING_IDX`]` + 1`, no token types, and a relative-position bias
    /// shared by every layer's attention (all-mpnet-base-v2, multi-qa-mpnet-base).
    MpNet,
}

/// Architecture of a BERT-family transformer, as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `model_type`: `bert` (also when absent) or `mpnet`; see [`BertConfig::architecture`].
    #[serde(default)]
    pub model_type: Option<String>,
    /// Width of hidden states.
    pub hidden_size: i64,
    /// Number of transformer layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Number of learned absolute positions.
    pub max_position_embeddings: i64,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer.
    #[serde(default)]
    pub hidden_act: Activation,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: i64,
    /// Dropout on hidden states (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// MPNet: buckets of the relative-position bias.
    #[serde(default = "default_relative_buckets")]
    pub relative_attention_num_buckets: i64,
}

impl BertConfig {
    /// The family named by `model_type`, or `None` for one this encoder does not run.
    pub fn architecture(&self) -> Option<Architecture> {
        match self.model_type.as_deref() {
            None | Some("bert") => Some(Architecture::Bert),
            Some("mpnet") => Some(Architecture::MpNet),
            Some(_) => None,
        }
    }

    /// Longest input the position table covers: BERT counts positions from 0, MPNet from
    /// [`MPNET_PADDING_IDX`]` + 1` (514 positions hold 512 tokens).
    pub fn max_positions(&self) -> i64 {
        match self.architecture() {
            Some(Architecture::MpNet) => self.max_position_embeddings - MPNET_PADDING_IDX - 1,
            _ => self.max_position_embeddings,
        }
    }
}

/// The id after which MPNet counts positions: 1 whatever `pad_token_id` says, as transformers'
/// `MPNetEmbeddings` fixes it (MPNet's `<pad>`).
pub const MPNET_PADDING_IDX: i64 = 1;

fn default_relative_buckets() -> i64 {
    32
}

fn default_dropout() -> f64 {
    0.1
}

fn default_type_vocab_size() -> i64 {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// Feed-forward activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Activation {
    /// Exact GELU, `x * Φ(x)` with the error function (Hugging Face `gelu`).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}

/// How token vectors become one sentence vector (`1_Pooling/config.json`). When several modes are set,
/// their outputs are concatenated in the order sentence-transformers uses: CLS, max, mean, mean/√len.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct PoolingConfig {
    /// Take the first (`[CLS]`) token.
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    /// Element-wise max over real tokens.
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    /// Mean over real tokens.
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    /// Sum over real tokens divided by √(number of tokens).
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    /// Position-weighted mean (not supported; rejected when set).
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    /// Last token (not supported; rejected when set).
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
}

/// `sentence_bert_config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SentenceBertConfig {
    /// Longest input in tokens, special tokens included; longer inputs are truncated.
    pub max_seq_length: Option<usize>,
    /// Lowercase texts before tokenization.
    #[serde(default)]
    pub do_lower_case: bool,
}

/// One entry of `modules.json`.
#[derive(Debug, Clone, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Everything fretflow needs to know about a sentence-transformers model directory.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The directory.
    pub dir: PathBuf,
    /// The transformer architecture.
    pub bert: BertConfig,
    /// Pooling modes.
    pub pooling: PoolingConfig,
    /// Longest input in tokens (from `sentence_bert_config.json`, else the position table's size).
    pub max_seq_length: usize,
    /// Lowercase texts before tokenization.
    pub do_lower_case: bool,
    /// Whether a `Normalize` module follows pooling (unit-length outputs).
    pub normalize: bool,
}

impl ModelConfig {
    /// Reads the configuration files of `dir`. A directory without `modules.json` is read as a plain
    /// Hugging Face model with mean pooling and no normalization (sentence-transformers' own fallback).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(load_error(dir, "not a directory"));
        }
        let bert: BertConfig = read_json(&dir.join("config.json"))?;
        if bert.architecture().is_none() {
            let kind = bert.model_type.as_deref().unwrap_or_default();
            return Err(load_error(
                &dir.join("config.json"),
                &format!("model_type '{kind}' is not supported ('bert' or 'mpnet')"),
            ));
        }
        if bert.max_positions() < 2 || bert.relative_attention_num_buckets < 4 {
            return Err(load_error(
                &dir.join("config.json"),
                "max_position_embeddings leaves fewer than 2 positions, or relative_attention_num_buckets < 4",
            ));
        }
        if bert.num_attention_heads <= 0 || bert.hidden_size % bert.num_attention_heads != 0 {
            return Err(load_error(
                &dir.join("config.json"),
                "hidden_size must be a positive multiple of num_attention_heads",
            ));
        }
        let (pooling, normalize) = read_modules(dir)?;
        let sbert_path = dir.join("sentence_bert_config.json");
        let sbert = if sbert_path.exists() {
            read_json::<SentenceBertConfig>(&sbert_path)?
        } else {
            SentenceBertConfig { max_seq_length: None, do_lower_case: false }
        };
        let positions = bert.max_positions() as usize;
        let max_seq_length = sbert.max_seq_length.unwrap_or(positions).min(positions);
        Ok(Self {
            dir: dir.to_path_buf(),
            bert,
            pooling,
            max_seq_length,
            do_lower_case: sbert.do_lower_case,
            normalize,
        })
    }

    /// Width of the sentence vector: the hidden size times the number of pooling modes set.
    pub fn output_dim(&self) -> usize {
        let p = &self.pooling;
        let modes = [
            p.pooling_mode_cls_token,
            p.pooling_mode_max_tokens,
            p.pooling_mode_mean_tokens,
            p.pooling_mode_mean_sqrt_len_tokens,
        ];
        self.bert.hidden_size as usize * modes.iter().filter(|m| **m).count()
    }
}

/// Reads `modules.json` and the pooling config it points to; returns the pooling and whether a
/// `Normalize` module is listed.
fn read_modules(dir: &Path) -> Result<(PoolingConfig, bool), EmbedError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.exists() {
        let pooling = PoolingConfig { pooling_mode_mean_tokens: true, ..Default::default() };
        return Ok((pooling, false));
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    let mut pooling = None;
    let mut normalize = false;
    for (i, module) in modules.iter().enumerate() {
        let kind = module.kind.rsplit('.').next().unwrap_or_default();
        match kind {
            "Transformer" if i == 0 => {}
            "Pooling" => {
                let path = dir.join(&module.path).join("config.json");
                pooling = Some(check_pooling(read_json(&path)?, &path)?);
            }
            "Normalize" => normalize = true,
            _ => {
                return Err(load_error(
                    &modules_path,
                    &format!("module {i} of type '{}' is not supported (Transformer, Pooling, Normalize)", module.kind),
                ))
            }
        }
    }
    let pooling = pooling.ok_or_else(|| load_error(&modules_path, "no Pooling module listed"))?;
    Ok((pooling, normalize))
}

fn check_pooling(pooling: PoolingConfig, path: &Path) -> Result<PoolingConfig, EmbedError> {
    if pooling.pooling_mode_weightedmean_tokens || pooling.pooling_mode_lasttoken {
        return Err(load_error(path, "weighted-mean and last-token pooling are not supported"));
    }
    let p = &pooling;
    if !(p.pooling_mode_cls_token
        || p.pooling_mode_max_tokens
        || p.pooling_mode_mean_tokens
        || p.pooling_mode_mean_sqrt_len_tokens)
    {
        return Err(load_error(path, "no pooling mode is set"));
    }
    Ok(pooling)
}

/// Reads and parses a JSON file, naming it in any error.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| load_error(path, &e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| load_error(path, &format!("malformed JSON: {e}")))
}

/// An [`EmbedError::Load`] for `path`.
pub(crate) fn load_error(path: &Path, message: &str) -> EmbedError {
    EmbedError::Load { path: path.to_path_buf(), message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const BERT: &str = r#"{"model_type":"bert","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
        "intermediate_size":16,"vocab_size":10,"max_position_embeddings":64,"hidden_act":"gelu"}"#;

    fn model_dir(modules: &str, pooling: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", BERT);
        write(dir.path(), "modules.json", modules);
        write(dir.path(), "1_Pooling/config.json", pooling);
        write(dir.path(), "sentence_bert_config.json", r#"{"max_seq_length": 256, "do_lower_case": false}"#);
        dir
    }

    const MODULES: &str = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
        {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#;

    #[test]
    fn reads_pooling_normalize_and_caps_length_at_the_position_table() {
        let dir = model_dir(MODULES, r#"{"word_embedding_dimension":8,"pooling_mode_mean_tokens":true}"#);
        let config = ModelConfig::load(dir.path()).unwrap();
        assert!(config.pooling.pooling_mode_mean_tokens && !config.pooling.pooling_mode_cls_token);
        assert!(config.normalize);
        assert_eq!(config.max_seq_length, 64, "256 from sentence_bert_config is capped by 64 positions");
        assert_eq!(config.output_dim(), 8);
        assert_eq!(config.bert.layer_norm_eps, 1e-12);
    }

    #[test]
    fn mpnet_is_read_with_its_position_offset_and_other_families_are_refused_by_name() {
        let dir = model_dir(MODULES, r#"{"pooling_mode_mean_tokens":true}"#);
        let mpnet = BERT.replace(r#""model_type":"bert""#, r#""model_type":"mpnet""#);
        write(dir.path(), "config.json", &mpnet);
        let config = ModelConfig::load(dir.path()).unwrap();
        assert_eq!(config.bert.architecture(), Some(Architecture::MpNet));
        assert_eq!(config.bert.relative_attention_num_buckets, 32);
        assert_eq!(config.max_seq_length, 62, "64 positions less the padding id and the one before it");
        write(dir.path(), "config.json", &BERT.replace(r#""model_type":"bert""#, r#""model_type":"roberta""#));
        let err = ModelConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("'roberta' is not supported"), "{err}");
    }

    #[test]
    fn missing_config_json_is_named() {
        let dir = model_dir(MODULES, "{}");
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        let err = ModelConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn malformed_pooling_json_is_named() {
        let dir = model_dir(MODULES, "{not json");
        let err = ModelConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1_Pooling") && err.contains("malformed JSON"), "{err}");
    }

    #[test]
    fn unsupported_module_is_rejected_with_its_type() {
        let modules = r#"[{"path":"","type":"sentence_transformers.models.Transformer"},
            {"path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#;
        let dir = model_dir(modules, r#"{"pooling_mode_cls_token":true}"#);
        let err = ModelConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.json") && err.contains("Dense"), "{err}");
    }
}
