//! Texts to token ids with a model's `tokenizer.json`, truncated at the model's `max_seq_length` and left
//! unpadded: batches are padded later, each to its own longest member (see [`super::batching`]).
use super::config::load_error;
use super::EmbedError;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// A Hugging Face tokenizer set up the way sentence-transformers uses it.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    lowercase: bool,
    pad_id: i64,
    max_len: usize,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, removes any padding baked into it and truncates at `max_len` tokens
    /// (special tokens included). `lowercase` lowercases texts first (`do_lower_case`); `pad_id` is
    /// used when the file does not name a padding token.
    pub fn load(dir: &Path, max_len: usize, lowercase: bool, pad_id: i64) -> Result<Self, EmbedError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(load_error(&path, "file not found"));
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| load_error(&path, &e.to_string()))?;
        let pad_id = inner.get_padding().map(|p| i64::from(p.pad_id)).unwrap_or(pad_id);
        inner.with_padding(None);
        let truncation = TruncationParams { max_length: max_len, ..Default::default() };
        inner
            .with_truncation(Some(truncation))
            .map_err(|e| load_error(&path, &format!("cannot truncate at {max_len} tokens: {e}")))?;
        Ok(Self { inner, lowercase, pad_id, max_len })
    }

    /// Token ids of each text, `[CLS] ... [SEP]`, at most [`Self::max_len`] long.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let inputs: Vec<String> = if self.lowercase {
            texts.iter().map(|t| t.to_lowercase()).collect()
        } else {
            texts.iter().map(|t| t.to_string()).collect()
        };
        let encodings = self.inner.encode_batch_fast(inputs, true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Longest sequence produced, in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}
