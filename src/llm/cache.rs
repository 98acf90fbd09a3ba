//! Durable cache of LLM results, in an embedded transactional store (redb).
//!
//! **File format.** One redb file holding one table, [`TABLE`] (`llm_results_v1`): key = the 32 bytes of a
//! [`CacheKey`], value = the result as JSON (a `Generation`, `ContinuationScore` or `LabelDistribution`).
//! Writes are committed with redb's default (immediate, fsync'd) durability, one transaction per batch, so
//! a crash loses at most the batch in flight and never leaves a torn entry. One process opens a file at a
//! time (redb locks it); inside the process the cache is shared as an `Arc<LlmCache>` by any number of
//! threads.
//!
//! **Key.** SHA-256 over, each length-prefixed: a format tag, the backend (`local` or
//! `remote:<url>`), the model (name and, for local files, a digest of the weights), the prompt version,
//! the task kind, and the input (the JSON of the exact request sent to the model: rendered prompt,
//! labels, sampling settings, token limits).
//!
//! **What invalidates entries.** Any change of backend, model, template or few-shot examples (the prompt
//! version), or request settings gives a new key; old entries stay and are simply not read. An entry whose
//! JSON no longer parses as the expected type (a change of result format) is a miss and is overwritten.
//! Deleting the file empties the cache.
//!
//! **A damaged file** (truncated, bit-flipped, not a redb file) is an error, never a panic: redb asserts on
//! some damage while opening, so [`LlmCache::open`] contains a panic inside redb and reports
//! [`CacheError::Damaged`], naming the file and the way on. [`LlmCache::open_or_quarantine`] moves such a
//! file aside to `<name>.damaged-<unix time>` (kept for inspection or recovery) and starts a new cache.
//!
//! **Failures are never cached**: callers store only successful results ([`LlmCache::put_many`] takes
//! values, not `Result`s).
use crate::llm::BackendId;
use redb::{Database, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The table of cached results: key bytes → result JSON.
pub const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("llm_results_v1");

/// Tag hashed into every key; bump it when the key layout changes.
const KEY_FORMAT: &str = "fretflow-llm-cache-key-v1";

/// The key of one cached result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of `input` (raw bytes) asked of `backend` with the prompt `prompt_version` for `kind`.
    pub fn new(backend: &BackendId, prompt_version: &str, kind: &str, input: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        for part in [
            KEY_FORMAT.as_bytes(),
            backend.backend.as_bytes(),
            backend.model.as_bytes(),
            prompt_version.as_bytes(),
            kind.as_bytes(),
            input,
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }

    /// The key of a request, with the request's JSON as input.
    pub fn for_request<T: Serialize>(backend: &BackendId, prompt_version: &str, kind: &str, request: &T) -> Self {
        let input = serde_json::to_vec(request).expect("LLM requests serialize to JSON. This is a bug.");
        Self::new(backend, prompt_version, kind, &input)
    }

    /// The key as hex, for logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Hit, miss and write counts since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Keys found.
    pub hits: u64,
    /// Keys not found (or found with an unreadable value).
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
}

/// A cache failure (the cache file cannot be opened, read or written).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file cannot be opened or created (missing directory, not a redb file, open in another process).
    #[error("cannot open the LLM cache {}: {source}", path.display())]
    Open {
        /// The cache file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// The file is damaged: opening it failed its consistency checks (or redb's assertions).
    #[error(
        "the LLM cache {p} is damaged ({message}); its entries cannot be read. Move it aside (`mv {p} {p}.damaged`) \
         and run again to start a new cache, or pass --quarantine-damaged-cache to have fretflow do that",
        p = path.display()
    )]
    Damaged {
        /// The cache file.
        path: PathBuf,
        /// What redb reported.
        message: String,
    },
    /// A read or write transaction failed.
    #[error("LLM cache {}: {source}", path.display())]
    Storage {
        /// The cache file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
}

/// A durable map from [`CacheKey`] to an LLM result; see the module docs.
pub struct LlmCache {
    db: Database,
    path: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
}

impl std::fmt::Debug for LlmCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmCache").field("path", &self.path).field("stats", &self.stats()).finish()
    }
}

impl LlmCache {
    /// Opens the cache file, creating it (not its directory) when absent. A damaged file is
    /// [`CacheError::Damaged`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CacheError> {
        let path = path.as_ref().to_path_buf();
        let db = open_database(&path)?;
        let cache = Self { db, path, hits: AtomicU64::new(0), misses: AtomicU64::new(0), writes: AtomicU64::new(0) };
        // Create the table now, so that readers never meet a missing table.
        cache.write(|_| Ok(()))?;
        tracing::debug!(path = %cache.path.display(), entries = cache.len()?, "Opened the LLM cache.");
        Ok(cache)
    }

    /// [`LlmCache::open`]; with `quarantine`, a damaged file is renamed to `<name>.damaged-<unix time>`
    /// (a warning names both) and a new, empty cache is created in its place.
    pub fn open_or_quarantine(path: impl AsRef<Path>, quarantine: bool) -> Result<Self, CacheError> {
        let path = path.as_ref();
        match Self::open(path) {
            Err(CacheError::Damaged { message, .. }) if quarantine => {
                let seconds =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".damaged-{seconds}"));
                let aside = path.with_file_name(name);
                std::fs::rename(path, &aside).map_err(|e| CacheError::Damaged {
                    path: path.to_path_buf(),
                    message: format!("{message}; moving it to {} failed: {e}", aside.display()),
                })?;
                tracing::warn!(damaged = %path.display(), moved_to = %aside.display(), reason = %message,
                    "The LLM cache was damaged: moved it aside and started a new one.");
                Self::open(path)
            }
            other => other,
        }
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks up every key in one read transaction; `None` for a miss.
    pub fn get_many<T: DeserializeOwned>(&self, keys: &[CacheKey]) -> Result<Vec<Option<T>>, CacheError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = match table.get(key.0.as_slice()).map_err(|e| self.storage(e))? {
                None => None,
                Some(guard) => match serde_json::from_slice::<T>(guard.value()) {
                    Ok(value) => Some(value),
                    Err(error) => {
                        tracing::warn!(key = %key.to_hex(), %error, "Unreadable LLM cache entry; treating it as a miss.");
                        None
                    }
                },
            };
            let counter = if value.is_some() { &self.hits } else { &self.misses };
            counter.fetch_add(1, Ordering::Relaxed);
            out.push(value);
        }
        Ok(out)
    }

    /// Stores every entry in one write transaction (all or none).
    pub fn put_many<T: Serialize>(&self, entries: &[(CacheKey, T)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(|table| {
            for (key, value) in entries {
                let json = serde_json::to_vec(value).expect("LLM results serialize to JSON. This is a bug.");
                table.insert(key.0.as_slice(), json.as_slice())?;
            }
            Ok(())
        })?;
        self.writes.fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Number of entries in the file.
    pub fn len(&self) -> Result<u64, CacheError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
        table.len().map_err(|e| self.storage(e))
    }

    /// Whether the file holds no entry.
    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }

    /// Hits, misses and writes since this handle was opened.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
            f(&mut table).map_err(|e| self.storage(e))?;
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    fn storage(&self, error: impl Into<redb::Error>) -> CacheError {
        CacheError::Storage { path: self.path.clone(), source: Box::new(error.into()) }
    }
}

/// Opens (or creates) the redb file at `path`. redb reports most damage as `Corrupted`, but asserts (panics)
/// on some truncated files while reading their allocator state; that panic is contained here and reported
/// as [`CacheError::Damaged`] ([`crate::connectors::contain::contained`]: no stack trace is printed for it).
fn open_database(path: &Path) -> Result<Database, CacheError> {
    let damaged = |message: String| CacheError::Damaged { path: path.to_path_buf(), message };
    match crate::connectors::contain::contained(|| Database::create(path)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(message)))) => Err(damaged(message)),
        // A file too short for its own header, or whose header does not parse.
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof) =>
        {
            Err(damaged(e.to_string()))
        }
        Ok(Err(redb::DatabaseError::UpgradeRequired(version))) => {
            Err(damaged(format!("written in redb file format {version}, which this version cannot read")))
        }
        Ok(Err(source)) => Err(CacheError::Open { path: path.to_path_buf(), source: Box::new(source) }),
        Err(panic) => Err(damaged(format!("redb: {panic}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(model: &str) -> BackendId {
        BackendId { backend: "local".to_string(), model: model.to_string() }
    }

    #[test]
    fn every_key_part_changes_the_key() {
        let base = CacheKey::new(&backend("m"), "v1", "relevance", b"input");
        assert_eq!(base, CacheKey::new(&backend("m"), "v1", "relevance", b"input"));
        assert_ne!(base, CacheKey::new(&backend("m2"), "v1", "relevance", b"input"));
        assert_ne!(
            base,
            CacheKey::new(&BackendId { backend: "remote:x".into(), model: "m".into() }, "v1", "relevance", b"input")
        );
        assert_ne!(base, CacheKey::new(&backend("m"), "v2", "relevance", b"input"));
        assert_ne!(base, CacheKey::new(&backend("m"), "v1", "query_likelihood", b"input"));
        assert_ne!(base, CacheKey::new(&backend("m"), "v1", "relevance", b"input2"));
        // Length prefixes keep field boundaries apart.
        assert_ne!(CacheKey::new(&backend("ab"), "c", "k", b"i"), CacheKey::new(&backend("a"), "bc", "k", b"i"));
    }
}
