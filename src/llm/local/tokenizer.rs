//! The model's tokenizer, built with the `tokenizers` crate from GGUF metadata or read from `tokenizer.json`.
//!
//! A GGUF file carries no `tokenizer.json`, only llama.cpp's description: `tokenizer.ggml.model` (`gpt2` =
//! byte-level BPE), the tokens, merges and token types, the special token ids, and `tokenizer.ggml.pre`,
//! the name of the pre-tokenizer the merges were learned with. The tokenizer is rebuilt the way
//! transformers' GGUF loader does (`integrations/gguf/gguf_tokenizer_mapping.py`): no normalizer, BPE with
//! no unknown token, byte-level decoder, control tokens (type 3) as special added tokens and user-defined
//! tokens (type 4) as plain added tokens, and a pre-tokenizer picked by `tokenizer.ggml.pre`:
//! - `smollm`, `starcoder`, `refact`: single digits, then GPT-2's byte-level regex (the pre-tokenizer of
//!   these models' own `tokenizer.json`, and llama.cpp's);
//! - the llama-3 and qwen2 families: their split regex, then byte-level without a regex;
//! - anything else: GPT-2's byte-level regex (transformers' default).
//!
//! For SmolLM2 the single-digit split changes nothing (its vocabulary has no token with two digits or a
//! space before a digit); the parity fixtures check the ids against transformers.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::files::ModelFileError;
use super::gguf::GgufMetadata;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Control tokens that end a turn or a document in common chat formats; generation stops on any present.
const END_TOKENS: &[&str] =
    &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>"];

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Metadata missing or of the wrong type.
    #[error(transparent)]
    Metadata(#[from] ModelFileError),
    /// The file describes a tokenizer kind this backend does not build.
    #[error("{path}: tokenizer model '{model}' is not supported (supported: gpt2 byte-level BPE)")]
    Unsupported {
        /// The model file.
        path: PathBuf,
        /// `tokenizer.ggml.model`.
        model: String,
    },
    /// The tokenizers crate rejected the vocabulary, merges or regex.
    #[error("{path}: cannot build the tokenizer: {message}")]
    Build {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer failed: {0}")]
    Codec(String),
}

/// A tokenizer with the model's special tokens.
#[derive(Debug, Clone)]
pub struct LlmTokenizer {
    inner: Tokenizer,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    pad: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
}

/// GPT-2's map from bytes to the printable characters byte-level vocabularies are spelled in.
fn bytes_to_unicode() -> HashMap<u8, char> {
    let mut bs: Vec<u8> = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs: Vec<u32> = bs.iter().map(|&b| u32::from(b)).collect();
    let mut n = 0;
    for b in 0..=255u8 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b, char::from_u32(c).expect("GPT-2 byte map is valid. This is a bug.")))
        .collect()
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, tokenizers::Error> {
    let split = |re: &str| -> Result<PreTokenizerWrapper, tokenizers::Error> {
        let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)?;
        Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    match pre {
        "smollm" | "starcoder" | "refact" => {
            Ok(Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into())
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" | "pixtral" => split(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => split(QWEN2_SPLIT),
        other => {
            if !matches!(other, "default" | "gpt2" | "gpt-2") {
                tracing::warn!(
                    pre = other,
                    "Unknown tokenizer.ggml.pre; using GPT-2's byte-level regex as transformers does."
                );
            }
            Ok(ByteLevel::new(false, true, true).into())
        }
    }
}

impl LlmTokenizer {
    /// Builds the tokenizer a GGUF file describes.
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self, TokenizerError> {
        let path = meta.path().to_path_buf();
        let build = |e: tokenizers::Error| TokenizerError::Build { path: path.clone(), message: e.to_string() };
        let model = meta.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported { path: path.clone(), model: model.to_string() });
        }
        let tokens = meta.string_array("tokenizer.ggml.tokens")?;
        let types = meta.opt_int_array("tokenizer.ggml.token_type")?.unwrap_or_default();
        let spelling = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = spelling.values().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let spelled = if in_alphabet(t) { t.to_string() } else { t.bytes().map(|b| spelling[&b]).collect() };
                (spelled, i as u32)
            })
            .collect();
        let merges = meta
            .string_array("tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| TokenizerError::Build {
                    path: path.clone(),
                    message: format!("merge '{m}' is not two tokens separated by a space"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(build)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(
            pre_tokenizer(meta.opt_string("tokenizer.ggml.pre")?.unwrap_or("default")).map_err(build)?,
        ));
        inner.with_decoder(Some(ByteLevelDecoder::new(true, true, true)));
        let typed = |want: i64| tokens.iter().zip(&types).filter(move |(_, &ty)| ty == want).map(|(t, _)| *t);
        let control: Vec<AddedToken> = typed(3)
            .filter(|t| in_alphabet(t))
            .map(|t| AddedToken::from(t.to_string(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&control);
        let user: Vec<AddedToken> =
            typed(4).map(|t| AddedToken::from(t.to_string(), false).normalized(false)).collect();
        inner.add_tokens(&user);

        let special = |key: &str| -> Result<Option<(u32, String)>, TokenizerError> {
            let Some(id) = meta.opt_uint(key)? else { return Ok(None) };
            let token = tokens.get(id).ok_or_else(|| TokenizerError::Build {
                path: path.clone(),
                message: format!("{key} = {id} is past the end of the vocabulary ({} tokens)", tokens.len()),
            })?;
            Ok(Some((id as u32, token.to_string())))
        };
        let eos = special("tokenizer.ggml.eos_token_id")?;
        let mut stop_ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop_ids.extend(special(key)?.map(|(id, _)| id));
        }
        Ok(Self::finish(Self {
            bos: special("tokenizer.ggml.bos_token_id")?,
            eos,
            pad: special("tokenizer.ggml.padding_token_id")?.map(|(id, _)| id),
            add_bos: meta.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            stop_ids,
            inner,
        }))
    }

    /// Reads a Hugging Face directory's `tokenizer.json` and the special tokens of its
    /// `tokenizer_config.json` (the post-processor in `tokenizer.json` adds BOS where the model wants it).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| TokenizerError::Build { path: path.clone(), message: e.to_string() })?;
        let config = super::files::read_json(&dir.join("tokenizer_config.json"))?;
        let token = |key: &str| -> Option<(u32, String)> {
            let v = config.as_ref()?.get(key)?;
            let text = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            Some((inner.token_to_id(text)?, text.to_string()))
        };
        let (bos, eos, pad) = (token("bos_token"), token("eos_token"), token("pad_token").map(|(id, _)| id));
        let mut stop_ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
        if let Some(gen) = super::files::read_json(&dir.join("generation_config.json"))? {
            match gen.get("eos_token_id") {
                Some(serde_json::Value::Array(ids)) => {
                    stop_ids.extend(ids.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
                }
                Some(v) => stop_ids.extend(v.as_u64().map(|v| v as u32)),
                None => {}
            }
        }
        Ok(Self::finish(Self { inner, bos, eos, pad, add_bos: false, stop_ids }))
    }

    fn finish(mut self) -> Self {
        for t in END_TOKENS {
            if let Some(id) = self.inner.token_to_id(t) {
                self.stop_ids.push(id);
            }
        }
        self.stop_ids.sort_unstable();
        self.stop_ids.dedup();
        self
    }

    /// Token ids of `text`. With `add_special_tokens`, BOS is prepended where the model asks for it;
    /// special tokens written in the text (`<|im_start|>`) always encode to their single ids.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode_fast(text, add_special_tokens).map_err(|e| TokenizerError::Codec(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special_tokens && self.add_bos {
            ids.extend(self.bos.as_ref().map(|(id, _)| *id));
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens left out when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Codec(e.to_string()))
    }

    /// The beginning-of-sequence token's text, if the model has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(_, t)| t.as_str())
    }

    /// The end-of-sequence token's text, if the model has one.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|(_, t)| t.as_str())
    }

    /// The id used to pad batches: the padding token, else EOS, else 0 (padded positions are masked).
    pub fn pad_id(&self) -> u32 {
        self.pad.or(self.eos.as_ref().map(|(id, _)| *id)).unwrap_or(0)
    }

    /// Ids that end generation: EOS, the file's end-of-turn ids, and known end-of-turn control tokens.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
