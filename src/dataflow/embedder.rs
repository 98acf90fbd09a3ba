//! The encoder shared by a process's workers ([`SharedEmbedder`]): the embedding stages' model handle.
//!
//! The encoder is a *version* of the model, named by a string (the configured model, or a checkpoint
//! directory). The embedding stages embed `(record, version)` pairs, so the vector of a record is a
//! function of both, as the async operator's contract requires: when the pipeline follows a checkpoint
//! directory (`[embedder] follow`) and the trainer promotes a new checkpoint, the version collection
//! changes, every passage and query is re-embedded by the new version, and the old vectors are retracted
//! from memory without a call.
use super::async_op::{BatchFn, BatchFuture};
use crate::embed::TextEmbedder;
use crate::retrieve::vector::Vector;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name of one version of the encoder: the configured model, or a checkpoint directory.
pub type EmbedderVersion = String;

/// Loads the encoder version a name stands for.
pub type EncoderLoader = Arc<dyn Fn(&str) -> Result<Box<dyn TextEmbedder + Send>, String> + Send + Sync>;

/// One loaded encoder: tensors may move between threads but not be shared, so calls take turns behind
/// a mutex (the encoder parallelizes inside).
type Loaded = Arc<Mutex<Box<dyn TextEmbedder + Send>>>;

/// Most encoder versions kept loaded: the current one and the one before it (whose records are being
/// retracted, which costs no call, but a late batch of it may still be in flight).
const KEEP_LOADED: usize = 2;

/// An encoder shared by all workers of a process, possibly in several versions.
#[derive(Clone)]
pub struct SharedEmbedder {
    name: String,
    base: EmbedderVersion,
    /// The configured encoder's dimension, which every version must have (the index holds one).
    dim: usize,
    /// Loaded versions, most recently used last.
    loaded: Arc<Mutex<Vec<(EmbedderVersion, Loaded)>>>,
    /// Loads versions other than the configured one; `None`: this encoder has one version.
    loader: Option<EncoderLoader>,
    follow: Option<Arc<Mutex<Follow>>>,
}

/// What following a checkpoint directory needs: where, how often, what is current.
struct Follow {
    dir: PathBuf,
    interval: Duration,
    last_poll: Option<Instant>,
    current: Option<EmbedderVersion>,
    /// The last promoted checkpoint that failed to load (not tried again until `latest` moves).
    rejected: Option<EmbedderVersion>,
}

/// The embedder switched versions: retract `from` (none at the start), insert `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChange {
    /// The version records were embedded with until now.
    pub from: Option<EmbedderVersion>,
    /// The version they are embedded with from now on.
    pub to: EmbedderVersion,
}

impl std::fmt::Debug for SharedEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEmbedder")
            .field("name", &self.name)
            .field("versioned", &self.is_versioned())
            .field("following", &self.following())
            .finish()
    }
}

impl SharedEmbedder {
    /// Shares `embedder` under `name` (its version name, recorded in each example's provenance).
    pub fn new(name: impl Into<String>, embedder: impl TextEmbedder + Send + 'static) -> Self {
        let name = name.into();
        let dim = embedder.dim();
        let encoder: Loaded = Arc::new(Mutex::new(Box::new(embedder)));
        let loaded = Arc::new(Mutex::new(vec![(name.clone(), encoder)]));
        Self { base: name.clone(), dim, loaded, name, loader: None, follow: None }
    }

    /// Makes this encoder versioned: records are embedded with the version they are paired with (the
    /// dataflow's version collection, fed by the caller), other versions than the configured one loaded by
    /// `loader` on first use.
    pub fn with_versions(mut self, loader: EncoderLoader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Makes this encoder follow the promoted checkpoint of the training output directory `dir` (its
    /// `latest`): [`Self::poll_follow`] reports each new one, loaded by `loader`, checked every `interval`.
    /// Until a checkpoint is promoted the configured encoder is the version.
    pub fn follow_checkpoints(self, dir: impl Into<PathBuf>, loader: EncoderLoader, interval: Duration) -> Self {
        let dir = dir.into();
        let mut this = self.with_versions(loader);
        this.name = format!("{} following {}", this.base, dir.display());
        this.follow =
            Some(Arc::new(Mutex::new(Follow { dir, interval, last_poll: None, current: None, rejected: None })));
        this
    }

    /// The name given at construction (with the followed directory when following one).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version of the configured encoder, the one used when not following (or before a checkpoint).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The directory this encoder follows, if any.
    pub fn following(&self) -> Option<PathBuf> {
        self.follow.as_ref().map(|f| f.lock().expect("poisoned. This is a bug.").dir.clone())
    }

    /// Whether records are embedded by the version they are paired with (see [`Self::with_versions`]).
    pub fn is_versioned(&self) -> bool {
        self.loader.is_some()
    }

    /// When following: the first call gives the starting version (the promoted checkpoint, or the
    /// configured encoder when none is promoted yet); later calls, at most every `interval`, give a change
    /// when `latest` has moved to a checkpoint that loads. A checkpoint that fails to load (or embeds in
    /// another dimension) is skipped with a warning, once: the current version stays until `latest` moves.
    /// `None`: no change (or not following). The new checkpoint is loaded here, on the caller's thread (the
    /// driver's worker 0, for the fraction of a second a sentence-transformers directory takes, once per
    /// promotion), so the embedding stages never wait for a load.
    pub fn poll_follow(&self) -> Option<VersionChange> {
        let follow = self.follow.as_ref()?;
        let mut f = follow.lock().expect("poisoned. This is a bug.");
        if f.last_poll.is_some_and(|at| at.elapsed() < f.interval) {
            return None;
        }
        f.last_poll = Some(Instant::now());
        let promoted = promoted_checkpoint(&f.dir);
        let wanted = promoted.clone().unwrap_or_else(|| self.base.clone());
        if f.current.as_ref() == Some(&wanted) || f.rejected.as_ref() == Some(&wanted) {
            return None;
        }
        if promoted.is_some() && !self.is_loaded(&wanted) {
            let loader = self.loader.as_ref().expect("following implies a loader");
            match loader(&wanted).and_then(|encoder| self.same_dimension(&wanted, encoder)) {
                Ok(encoder) => self.insert_loaded(wanted.clone(), Arc::new(Mutex::new(encoder))),
                Err(error) => {
                    f.rejected = Some(wanted.clone());
                    if f.current.is_some() {
                        tracing::warn!(checkpoint = %wanted, %error, "Cannot load the promoted checkpoint; the embedder stays on its current version.");
                        return None;
                    }
                    // At the start there is no current version: begin with the configured encoder.
                    tracing::warn!(checkpoint = %wanted, %error, "Cannot load the promoted checkpoint; starting with the configured encoder.");
                    return Some(self.switch(&mut f, self.base.clone()));
                }
            }
        }
        Some(self.switch(&mut f, wanted))
    }

    fn switch(&self, f: &mut Follow, to: EmbedderVersion) -> VersionChange {
        if f.current.is_some() {
            tracing::info!(from = ?f.current, to = %to, "The embedder follows a newly promoted checkpoint: re-embedding passages and queries.");
        }
        VersionChange { from: f.current.replace(to.clone()), to }
    }

    /// `encoder` when its dimension is the configured encoder's (the index holds one dimension).
    fn same_dimension(
        &self,
        version: &str,
        encoder: Box<dyn TextEmbedder + Send>,
    ) -> Result<Box<dyn TextEmbedder + Send>, String> {
        match encoder.dim() {
            dim if dim == self.dim => Ok(encoder),
            dim => Err(format!("{version} embeds in {dim} dimensions, the configured encoder in {}", self.dim)),
        }
    }

    fn is_loaded(&self, version: &str) -> bool {
        self.loaded.lock().expect("poisoned. This is a bug.").iter().any(|(v, _)| v == version)
    }

    fn insert_loaded(&self, version: EmbedderVersion, encoder: Loaded) {
        let mut loaded = self.loaded.lock().expect("poisoned. This is a bug.");
        loaded.retain(|(v, _)| *v != version);
        loaded.push((version, encoder));
        // The configured encoder is always kept (it is the fallback and cheap to keep); others age out.
        while loaded.len() > KEEP_LOADED + 1 {
            let Some(oldest) = loaded.iter().position(|(v, _)| *v != self.base) else { break };
            loaded.remove(oldest);
        }
    }

    /// The encoder of `version`, loading it when it is not loaded (another process's worker may see a
    /// version before its own process polled it).
    fn encoder(&self, version: &str) -> Result<Loaded, String> {
        let found = {
            let mut loaded = self.loaded.lock().map_err(|_| "encoder poisoned by an earlier panic".to_string())?;
            let at = loaded.iter().position(|(v, _)| v == version);
            at.map(|i| {
                let entry = loaded.remove(i);
                let encoder = Arc::clone(&entry.1);
                loaded.push(entry);
                encoder
            })
        };
        if let Some(encoder) = found {
            return Ok(encoder);
        }
        let loader = self
            .loader
            .as_ref()
            .ok_or_else(|| format!("no encoder version {version:?} (this embedder is {:?})", self.base))?;
        let encoder: Loaded = Arc::new(Mutex::new(self.same_dimension(version, loader(version)?)?));
        self.insert_loaded(version.to_string(), Arc::clone(&encoder));
        Ok(encoder)
    }

    /// Embeds `texts` with `version` on the calling thread: one unit vector per text.
    pub fn embed_blocking(&self, version: &str, texts: &[String]) -> Result<Vec<Vector>, String> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoder = self.encoder(version)?;
        let embedder = encoder.lock().map_err(|_| "encoder poisoned by an earlier panic".to_string())?;
        let dim = embedder.dim();
        let tensor = embedder.embed(&refs).map_err(|e| e.to_string())?;
        let flat = tensor.to_kind(tch::Kind::Float).contiguous().view([-1]);
        let values = Vec::<f32>::try_from(&flat).map_err(|e| e.to_string())?;
        if values.len() != texts.len() * dim {
            return Err(format!(
                "encoder returned {} values for {} texts of dimension {dim}",
                values.len(),
                texts.len()
            ));
        }
        Ok(values.chunks(dim.max(1)).map(|row| Vector::normalized(row.to_vec())).collect())
    }

    /// A batch function embedding `text_of(record)` with the record's encoder version and pairing each
    /// record with its vector. A batch holding several versions (only around a switch) makes one call
    /// per version.
    pub fn batch_fn<I>(&self, text_of: fn(&I) -> String) -> Arc<dyn BatchFn<(I, EmbedderVersion), (I, Vector)>>
    where
        I: Send + Sync + 'static,
    {
        let this = self.clone();
        Arc::new(move |batch: Vec<(I, EmbedderVersion)>| -> BatchFuture<(I, Vector)> {
            let this = this.clone();
            Box::pin(async move {
                let texts: Vec<(String, EmbedderVersion)> =
                    batch.iter().map(|(r, v)| (text_of(r), v.clone())).collect();
                let n = batch.len();
                match tokio::task::spawn_blocking(move || this.embed_versions(texts)).await {
                    Ok(answers) => batch.into_iter().zip(answers).map(|((r, _), a)| a.map(|v| (r, v))).collect(),
                    Err(join) => (0..n).map(|_| Err(format!("encoder task failed: {join}"))).collect(),
                }
            })
        })
    }

    /// One answer per `(text, version)`, in order: one encoder call per distinct version.
    fn embed_versions(&self, texts: Vec<(String, EmbedderVersion)>) -> Vec<Result<Vector, String>> {
        let mut answers: Vec<Option<Result<Vector, String>>> = vec![None; texts.len()];
        let mut versions: Vec<&EmbedderVersion> = texts.iter().map(|(_, v)| v).collect();
        versions.sort();
        versions.dedup();
        for version in versions {
            let rows: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].1 == *version).collect();
            let group: Vec<String> = rows.iter().map(|&i| texts[i].0.clone()).collect();
            match self.embed_blocking(version, &group) {
                Ok(vectors) => rows.iter().zip(vectors).for_each(|(&i, v)| answers[i] = Some(Ok(v))),
                Err(reason) => rows.iter().for_each(|&i| answers[i] = Some(Err(format!("encoder failed: {reason}")))),
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer for this text. This is a bug.".into())))
            .collect()
    }
}

/// The checkpoint `latest` points at under `dir`, as a canonical path (the version name); `None` when
/// nothing is promoted yet or `latest` cannot be read.
fn promoted_checkpoint(dir: &Path) -> Option<EmbedderVersion> {
    let latest = dir.join(crate::train::checkpoint::LATEST);
    let target = std::fs::canonicalize(&latest).ok()?;
    target.is_dir().then(|| target.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::instant::HashingEmbedder;

    /// Loads of the following test's broken checkpoint (no other test loads it).
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn loader() -> EncoderLoader {
        Arc::new(|version: &str| {
            if version.ends_with("checkpoint-broken") {
                LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if version.ends_with("broken") {
                return Err(format!("{version}: model.safetensors is damaged"));
            }
            let dim = if version.ends_with("wide") { 8 } else { 4 };
            Ok(Box::new(HashingEmbedder::new(dim)) as Box<dyn TextEmbedder + Send>)
        })
    }

    fn embedder_vector(encoder: &dyn TextEmbedder, text: &str) -> Vec<f32> {
        let values = Vec::<f32>::try_from(&encoder.embed(&[text]).unwrap().view([-1])).unwrap();
        Vector::normalized(values).0
    }

    #[test]
    fn following_starts_on_the_base_then_switches_to_each_promoted_checkpoint_that_loads() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = SharedEmbedder::new("base", HashingEmbedder::new(4)).follow_checkpoints(
            dir.path(),
            loader(),
            Duration::ZERO,
        );
        assert_eq!(embedder.poll_follow(), Some(VersionChange { from: None, to: "base".into() }));
        assert_eq!(embedder.poll_follow(), None, "nothing promoted: no change");

        let promote = |name: &str| {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            let link = dir.path().join("latest");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(name, &link).unwrap();
            std::fs::canonicalize(dir.path().join(name)).unwrap().display().to_string()
        };
        let first = promote("checkpoint-1");
        assert_eq!(embedder.poll_follow(), Some(VersionChange { from: Some("base".into()), to: first.clone() }));
        assert_eq!(embedder.embed_blocking(&first, &["a b".into()]).unwrap().len(), 1);
        assert_eq!(embedder.poll_follow(), None);

        promote("checkpoint-broken");
        assert_eq!(embedder.poll_follow(), None, "a checkpoint that does not load is skipped");
        let loads = LOADS.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(embedder.poll_follow(), None);
        assert_eq!(LOADS.load(std::sync::atomic::Ordering::Relaxed), loads, "and not loaded again until latest moves");
        promote("checkpoint-wide");
        assert_eq!(embedder.poll_follow(), None, "a checkpoint of another dimension is skipped");
        let third = promote("checkpoint-3");
        assert_eq!(embedder.poll_follow(), Some(VersionChange { from: Some(first.clone()), to: third.clone() }));
        assert!(embedder.embed_blocking("base", &["a".into()]).is_ok(), "the configured encoder stays loaded");
    }

    #[test]
    fn a_batch_of_two_versions_embeds_each_record_with_its_own_version() {
        let embedder = SharedEmbedder::new("base", HashingEmbedder::new(4)).follow_checkpoints(
            "/nonexistent",
            loader(),
            Duration::ZERO,
        );
        let answers = embedder.embed_versions(vec![
            ("x".into(), "base".into()),
            ("x".into(), "/v/abc".into()),
            ("y".into(), "base".into()),
            ("y".into(), "/v/broken".into()),
            ("z".into(), "/v/wide".into()),
        ]);
        let b = HashingEmbedder::new(4);
        let expect = |text: &str| embedder_vector(&b, text);
        assert_eq!(answers[0].as_ref().unwrap().0, expect("x"));
        assert_eq!(answers[1].as_ref().unwrap().0, expect("x"));
        assert_eq!(answers[2].as_ref().unwrap().0, expect("y"));
        assert!(answers[3].as_ref().unwrap_err().contains("damaged"), "{:?}", answers[3]);
        assert!(answers[4].as_ref().unwrap_err().contains("8 dimensions"), "{:?}", answers[4]);
        let fixed = SharedEmbedder::new("base", HashingEmbedder::new(4));
        assert!(fixed.embed_blocking("other", &["x".into()]).unwrap_err().contains("no encoder version"));
    }
}
