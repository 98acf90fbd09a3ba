//! The encoder shared by a process's workers ([`SharedEmbedder`]): the embedding stages' model handle.
use super::async_op::{BatchFn, BatchFuture};
use crate::embed::TextEmbedder;
use crate::retrieve::vector::Vector;
use std::sync::{Arc, Mutex};

/// An encoder shared by all workers of a process. `TextEmbedder`s hold tensors, which may move between
/// threads but not be shared, so calls take turns behind a mutex (the encoder parallelizes inside).
#[derive(Clone)]
pub struct SharedEmbedder {
    inner: Arc<Mutex<Box<dyn TextEmbedder + Send>>>,
    name: String,
}

impl std::fmt::Debug for SharedEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEmbedder").field("name", &self.name).finish()
    }
}

impl SharedEmbedder {
    /// Shares `embedder` under `name` (recorded in each example's provenance).
    pub fn new(name: impl Into<String>, embedder: impl TextEmbedder + Send + 'static) -> Self {
        Self { inner: Arc::new(Mutex::new(Box::new(embedder))), name: name.into() }
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Embeds `texts` on the calling thread: one unit vector per text.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vector>, String> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embedder = self.inner.lock().map_err(|_| "encoder poisoned by an earlier panic".to_string())?;
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

    /// A batch function embedding `text_of(record)` and pairing each record with its vector.
    pub fn batch_fn<I>(&self, text_of: fn(&I) -> String) -> Arc<dyn BatchFn<I, (I, Vector)>>
    where
        I: Send + Sync + 'static,
    {
        let this = self.clone();
        Arc::new(move |batch: Vec<I>| -> BatchFuture<(I, Vector)> {
            let this = this.clone();
            Box::pin(async move {
                let texts: Vec<String> = batch.iter().map(text_of).collect();
                let n = batch.len();
                match tokio::task::spawn_blocking(move || this.embed_blocking(&texts)).await {
                    Ok(Ok(vectors)) => batch.into_iter().zip(vectors).map(Ok).collect(),
                    Ok(Err(reason)) => (0..n).map(|_| Err(format!("encoder failed: {reason}"))).collect(),
                    Err(join) => (0..n).map(|_| Err(format!("encoder task failed: {join}"))).collect(),
                }
            })
        })
    }
}
