//! Moving parameters between a [`tch::nn::VarStore`] and a Hugging Face `model.safetensors`, by name.
//!
//! Checkpoints name BERT tensors with or without a `bert.` prefix; both load. The `position_ids` buffer
//! (an I64 range some checkpoints carry) is skipped. `pooler.*` tensors, which sentence embeddings never
//! use, are kept as frozen variables so that a saved checkpoint still holds them.
use super::config::load_error;
use super::EmbedError;
use std::collections::HashSet;
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

/// What loading a checkpoint found, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Tensors copied into existing variables.
    pub loaded: usize,
    /// Names in the file that the model has no use for (besides `position_ids`).
    pub unused: Vec<String>,
}

/// Copies every variable of `vs` from the safetensors file `path`, converting to the variables' kind and
/// device. Fails, naming the file and tensor, when a variable is missing from the file or has another shape.
pub fn load_safetensors(vs: &VarStore, path: &Path) -> Result<LoadSummary, EmbedError> {
    if !path.exists() {
        return Err(load_error(path, "file not found"));
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| load_error(path, &e.to_string()))?;
    let variables = vs.variables();
    let mut loaded = HashSet::new();
    let mut unused = Vec::new();
    for (file_name, tensor) in tensors {
        let name = file_name.strip_prefix("bert.").or_else(|| file_name.strip_prefix("mpnet.")).unwrap_or(&file_name);
        if name.ends_with("position_ids") {
            continue;
        }
        let target = match variables.get(name) {
            Some(var) => var.shallow_clone(),
            None if name.starts_with("pooler.") => frozen_pooler_var(vs, name, &tensor.size(), path)?,
            None => {
                unused.push(file_name.clone());
                continue;
            }
        };
        if target.size() != tensor.size() {
            return Err(load_error(
                path,
                &format!("tensor '{file_name}' has shape {:?}, the model expects {:?}", tensor.size(), target.size()),
            ));
        }
        let mut target = target;
        tch::no_grad(|| target.f_copy_(&tensor))
            .map_err(|e| load_error(path, &format!("tensor '{file_name}': {e}")))?;
        loaded.insert(name.to_string());
    }
    let mut missing: Vec<&String> = variables.keys().filter(|k| !loaded.contains(k.as_str())).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(load_error(
            path,
            &format!("missing tensor '{first}' (with or without a 'bert.' prefix; {} missing in all)", missing.len()),
        ));
    }
    if !unused.is_empty() {
        tracing::debug!(file = %path.display(), unused = ?unused, "Checkpoint tensors not used by the encoder.");
    }
    Ok(LoadSummary { loaded: loaded.len(), unused })
}

/// Creates the non-trainable variable `name` (dotted, e.g. `pooler.dense.weight`) in `vs`.
fn frozen_pooler_var(vs: &VarStore, name: &str, shape: &[i64], path: &Path) -> Result<Tensor, EmbedError> {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().expect("split yields at least one part. This is a bug.");
    let parent = parts.iter().fold(vs.root(), |p, part| p / *part);
    parent.f_zeros_no_train(leaf, shape).map_err(|e| load_error(path, &format!("tensor '{name}': {e}")))
}

/// Writes every variable of `vs` to `path` in safetensors format under its Hugging Face name (no prefix),
/// so that `transformers` and sentence-transformers load it.
pub fn save_safetensors(vs: &VarStore, path: &Path) -> Result<(), EmbedError> {
    vs.save(path).map_err(|e| load_error(path, &format!("cannot write checkpoint: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn store() -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().sub("encoder").zeros("weight", &[2, 3]);
        vs
    }

    #[test]
    fn loads_prefixed_names_skips_position_ids_and_keeps_the_pooler() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let w = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
        let pooler = Tensor::ones([3, 3], (Kind::Float, Device::Cpu));
        let ids = Tensor::arange(4, (Kind::Int64, Device::Cpu));
        let named = [("bert.encoder.weight", &w), ("bert.pooler.dense.weight", &pooler), ("position_ids", &ids)];
        Tensor::write_safetensors(&named, &path).unwrap();
        let vs = store();
        let summary = load_safetensors(&vs, &path).unwrap();
        assert_eq!(summary.loaded, 2);
        let vars = vs.variables();
        assert_eq!(vars["encoder.weight"], w);
        assert!(!vars["pooler.dense.weight"].requires_grad(), "the pooler is frozen");
    }

    #[test]
    fn missing_tensor_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let other = Tensor::ones([1], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("other", &other)], &path).unwrap();
        let err = load_safetensors(&store(), &path).unwrap_err().to_string();
        assert!(err.contains("model.safetensors") && err.contains("encoder.weight"), "{err}");
    }

    #[test]
    fn wrong_shape_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let w = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("encoder.weight", &w)], &path).unwrap();
        let err = load_safetensors(&store(), &path).unwrap_err().to_string();
        assert!(err.contains("encoder.weight") && err.contains("[3, 2]"), "{err}");
    }
}
