//! Writing and finding checkpoints: sentence-transformers layout, atomic, with the trainer's state.
//!
//! A checkpoint is a directory `checkpoint-<step, 8 digits>` under the output directory holding
//! - the model in sentence-transformers layout: `config.json`, `model.safetensors` (the base model file's
//!   tensor names, trained values), tokenizer files, `modules.json`, module folders such as
//!   `1_Pooling/config.json`, `sentence_bert_config.json`, `config_sentence_transformers.json` (copied
//!   from the base model: the training truncation length does not change the model's inference length);
//! - `fretflow.json` ([`TrainerState`]: step, examples seen, loss, optimizer and data settings);
//! - `optimizer.safetensors`: the AdamW moments, so a restart continues without losing state.
//!
//! It is written into a hidden temporary directory, every file fsynced, then renamed into place; the
//! `newest` symlink is then replaced by an atomic rename. A crash leaves either the whole checkpoint or none.
//!
//! Two symlinks in the output directory point at checkpoints, each replaced atomically:
//! - `newest`: the last checkpoint written, whatever it measured; a restarted trainer continues from it.
//! - `latest`: the promoted checkpoint, the one users pick up. It moves only when the promotion gate lets
//!   a checkpoint through ([`super::promotion`]), after the checkpoint was evaluated; with the gate off or
//!   without evaluation it follows every checkpoint. It does not exist until a checkpoint is promoted.
use super::optim::AdamW;
use super::TrainError;
use crate::embed::SentenceEncoder;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Name of the trainer state file inside a checkpoint.
pub const STATE_FILE: &str = "fretflow.json";
/// Name of the optimizer state file inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Name of the symlink to the promoted checkpoint (the one users pick up).
pub const LATEST: &str = "latest";
/// Name of the symlink to the last checkpoint written (where a restart continues).
pub const NEWEST: &str = "newest";

/// Base-model files never copied into a checkpoint (weights in other formats, the model card).
const SKIP_FILES: &[&str] =
    &["model.safetensors", "pytorch_model.bin", "README.md", ".gitattributes", STATE_FILE, OPTIMIZER_FILE];

/// What a checkpoint records about the run that produced it (`fretflow.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Training examples consumed (queries over all batches).
    pub examples_seen: u64,
    /// Unix time (seconds) the checkpoint was written.
    pub created: f64,
    /// The model training started from.
    pub base_model: String,
    /// Mean training loss since the previous checkpoint.
    pub mean_loss: Option<f64>,
    /// The loss and its hyperparameters.
    pub loss: super::GeckoLoss,
    /// Optimizer and schedule.
    pub optimizer: super::optim::OptimConfig,
    /// Batch composition.
    pub sampler: super::buffer::SamplerConfig,
    /// Backward pass (GradCache, chunking, dropout).
    pub backward: super::gradcache::BackwardConfig,
    /// Where the data came from, and the state of the replay buffer (free-form, for people).
    pub data: serde_json::Value,
    /// How queries were given to the encoder (and how the checkpoint's users should give them).
    #[serde(default)]
    pub query_format: super::data::QueryFormat,
    /// Which FRet examples were trained on.
    #[serde(default)]
    pub examples: super::data::ExampleFilter,
}

/// The directory name of the checkpoint at `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step:08}")
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::checkpoint(path, e)
}

/// Writes a checkpoint of `encoder` and `optimizer` under `out_dir` and points `newest` at it (not
/// `latest`: see [`point_latest`]); returns its path. An existing checkpoint of the same step is replaced.
pub fn write_checkpoint(
    out_dir: &Path,
    encoder: &SentenceEncoder,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    remove_stale_temps(out_dir);
    let name = checkpoint_name(state.step);
    let tmp = out_dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    if let Err(error) = write_files(&tmp, encoder, optimizer, state) {
        // A full disk, say: leave no half-written directory behind to fill it further.
        if let Err(e) = fs::remove_dir_all(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %e, "Cannot remove the unfinished checkpoint.");
        }
        return Err(error);
    }

    let dest = out_dir.join(&name);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
    }
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    point_link(out_dir, NEWEST, &name)?;
    sync_dir(out_dir)?;
    tracing::info!(step = state.step, path = %dest.display(), "Wrote checkpoint.");
    Ok(dest)
}

/// Writes every file of a checkpoint into the new directory `tmp`, synced.
fn write_files(
    tmp: &Path,
    encoder: &SentenceEncoder,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<(), TrainError> {
    fs::create_dir_all(tmp).map_err(io_err(tmp))?;

    copy_model_files(encoder.model_dir(), tmp)?;
    write_model_weights(encoder, &encoder.model_dir().join("model.safetensors"), &tmp.join("model.safetensors"))?;
    if !tmp.join("sentence_bert_config.json").exists() {
        write_json(
            &tmp.join("sentence_bert_config.json"),
            &serde_json::json!({
                "max_seq_length": encoder.config().max_seq_length,
                "do_lower_case": encoder.config().do_lower_case,
            }),
        )?;
    }
    if !tmp.join("config_sentence_transformers.json").exists() {
        write_json(
            &tmp.join("config_sentence_transformers.json"),
            &serde_json::json!({"__version__": {"fretflow": env!("CARGO_PKG_VERSION")}, "prompts": {},
                "default_prompt_name": null, "similarity_fn_name": "cosine"}),
        )?;
    }
    optimizer.save_state(&tmp.join(OPTIMIZER_FILE))?;
    write_json(&tmp.join(STATE_FILE), state)?;
    sync_tree(tmp)?;
    Ok(())
}

/// Removes `.checkpoint-*.tmp-PID` directories under `out_dir` left by a trainer process that is gone
/// (killed, or out of disk space before it could clean up). A live process's are kept: it may be writing.
fn remove_stale_temps(out_dir: &Path) {
    let Ok(entries) = fs::read_dir(out_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) =
            name.strip_prefix(".checkpoint-").and_then(|rest| rest.rsplit_once(".tmp-")).map(|(_, pid)| pid)
        else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "Removed an unfinished checkpoint of a process that is gone.")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "Cannot remove an unfinished checkpoint.")
                }
            }
        }
    }
}

/// Copies tokenizer and configuration files and the module folders named in `modules.json`.
fn copy_model_files(src: &Path, dst: &Path) -> Result<(), TrainError> {
    for entry in fs::read_dir(src).map_err(io_err(src))? {
        let entry = entry.map_err(io_err(src))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_file() && !SKIP_FILES.contains(&name.as_str()) && !name.ends_with(".safetensors") {
            fs::copy(&path, dst.join(&name)).map_err(io_err(&path))?;
        }
    }
    let modules = src.join("modules.json");
    if let Ok(text) = fs::read_to_string(&modules) {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(&modules, e))?;
        for module_dir in list.iter().filter_map(|m| m.get("path")?.as_str()).filter(|p| !p.is_empty()) {
            let from = src.join(module_dir);
            if from.is_dir() {
                let to = dst.join(module_dir);
                fs::create_dir_all(&to).map_err(io_err(&to))?;
                for f in fs::read_dir(&from).map_err(io_err(&from))? {
                    let f = f.map_err(io_err(&from))?.path();
                    if f.is_file() {
                        fs::copy(&f, to.join(f.file_name().expect("read_dir entries have names. This is a bug.")))
                            .map_err(io_err(&f))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes the encoder's parameters under the base file's tensor names (and dtypes); tensors the encoder
/// does not hold (such as `embeddings.position_ids`) are copied unchanged.
fn write_model_weights(encoder: &SentenceEncoder, base: &Path, out: &Path) -> Result<(), TrainError> {
    let vars = encoder.var_store().variables();
    let base_tensors = Tensor::read_safetensors(base).map_err(|e| TrainError::checkpoint(base, e))?;
    let mut named: Vec<(String, Tensor)> = Vec::with_capacity(base_tensors.len());
    for (name, original) in base_tensors {
        let var_name = name.strip_prefix("bert.").unwrap_or(&name);
        let tensor = match vars.get(var_name) {
            Some(var) => var.detach().to_device(tch::Device::Cpu).to_kind(original.kind()).contiguous(),
            None => original,
        };
        named.push((name, tensor));
    }
    Tensor::write_safetensors(&named, out).map_err(|e| TrainError::checkpoint(out, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("checkpoint records serialize. This is a bug.");
    fs::write(path, text + "\n").map_err(io_err(path))
}

/// Fsyncs every file under `dir`, then the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), TrainError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path).and_then(|f| f.sync_all()).map_err(io_err(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), TrainError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io_err(dir))
}

/// Replaces `out_dir/<link>` with a relative symlink to `name`, atomically.
fn point_link(out_dir: &Path, link: &str, name: &str) -> Result<(), TrainError> {
    let path = out_dir.join(link);
    let tmp = out_dir.join(format!(".{link}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Promotes the checkpoint directory `name` of `out_dir`: replaces the `latest` symlink with one to it,
/// atomically, and fsyncs the directory.
pub fn point_latest(out_dir: &Path, name: &str) -> Result<(), TrainError> {
    point_link(out_dir, LATEST, name)?;
    sync_dir(out_dir)
}

/// The checkpoint `out_dir/<link>` points at (as `out_dir/<target>`), if the link exists.
pub fn link_target(out_dir: &Path, link: &str) -> Option<PathBuf> {
    fs::read_link(out_dir.join(link)).ok().map(|target| out_dir.join(target))
}

fn find_linked(out_dir: &Path, link: &str) -> Result<Option<(PathBuf, TrainerState)>, TrainError> {
    let Some(dir) = link_target(out_dir, link) else { return Ok(None) };
    Ok(Some((dir.clone(), read_state(&dir)?)))
}

/// The promoted checkpoint under `out_dir` (via `latest`) and its state, if there is one.
pub fn find_latest(out_dir: &Path) -> Result<Option<(PathBuf, TrainerState)>, TrainError> {
    find_linked(out_dir, LATEST)
}

/// Where a restart continues: the last checkpoint written under `out_dir` (via `newest`) and its state;
/// for an output directory written before `newest` existed, the one `latest` points at; `None` when
/// there is neither.
pub fn find_newest(out_dir: &Path) -> Result<Option<(PathBuf, TrainerState)>, TrainError> {
    match find_linked(out_dir, NEWEST)? {
        Some(found) => Ok(Some(found)),
        None => find_latest(out_dir),
    }
}

/// Reads `fretflow.json` of a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<TrainerState, TrainError> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(&path, e))
}

/// Removes a checkpoint directory (retention).
pub fn remove_checkpoint(dir: &Path) -> Result<(), TrainError> {
    fs::remove_dir_all(dir).map_err(io_err(dir))
}
