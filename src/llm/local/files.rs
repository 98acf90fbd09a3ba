//! Model files: the error every reader of a GGUF, safetensors or JSON file returns, and a JSON reader.
use std::path::{Path, PathBuf};

/// Why a model file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid GGUF / safetensors / JSON file.
    #[error("{path} is not a valid model file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A required metadata key is absent.
    #[error("{path}: missing metadata key '{key}'")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata key has the wrong type.
    #[error("{path}: metadata key '{key}' is not a {expected}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type it should have.
        expected: String,
    },
    /// A required tensor is absent.
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name in the file's naming scheme.
        name: String,
    },
    /// A tensor could not be decoded or has the wrong shape.
    #[error("{path}: tensor '{name}': {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The model's architecture is not one the backend runs.
    #[error("{path}: architecture '{arch}' is not supported (supported: llama, mistral, qwen2)")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture named in the file.
        arch: String,
    },
    /// Some other feature of the model is not supported.
    #[error("{path}: unsupported {what}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        what: String,
    },
}

/// Reads a JSON file, `None` if it does not exist.
pub(crate) fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ModelFileError::Io { path: path.to_path_buf(), source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelFileError::Format { path: path.to_path_buf(), message: e.to_string() })
}
