//! Model weights from a GGUF file or a Hugging Face safetensors directory, as f32 tch tensors in one layout.
//!
//! Both formats end in the Hugging Face layout: llama.cpp's converter permutes the rows of llama's q and k
//! projections so that its RoPE can rotate adjacent pairs; like transformers, the loader undoes that
//! permutation, so one RoPE (rotate-half) serves both formats. q/k/v and gate/up projections are fused
//! into one matrix each, so a block runs three matrix products instead of seven.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::config::{Architecture, ModelConfig};
use super::files::ModelFileError;
use super::gguf::GgufFile;

/// The tensors of one decoder block.
#[derive(Debug)]
pub(crate) struct LayerWeights {
    pub attn_norm: Tensor,
    /// `[(heads + 2 * kv_heads) * head_dim, hidden]`: q, k and v rows stacked.
    pub qkv: Tensor,
    pub qkv_bias: Option<Tensor>,
    pub o: Tensor,
    pub ffn_norm: Tensor,
    /// `[2 * intermediate, hidden]`: gate rows then up rows.
    pub gate_up: Tensor,
    pub down: Tensor,
}

/// All tensors of a model, f32, on the CPU until moved.
#[derive(Debug)]
pub(crate) struct Weights {
    pub embed: Tensor,
    pub final_norm: Tensor,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Tensor>,
    pub layers: Vec<LayerWeights>,
}

/// Where tensors come from, with the file's own names.
trait TensorSource {
    fn file(&self) -> &Path;
    fn get(&mut self, name: &str) -> Result<Option<Tensor>, ModelFileError>;
    fn name(&self, role: &str, layer: Option<usize>) -> String;
    /// Whether q/k rows are in llama.cpp's interleaved-RoPE order.
    fn qk_permuted(&self) -> bool;
}

struct Gguf<'a> {
    file: &'a mut GgufFile,
    arch: Architecture,
}

impl TensorSource for Gguf<'_> {
    fn file(&self) -> &Path {
        self.file.metadata().path()
    }
    fn get(&mut self, name: &str) -> Result<Option<Tensor>, ModelFileError> {
        self.file.tensor_f32(name)
    }
    fn name(&self, role: &str, layer: Option<usize>) -> String {
        let base = match role {
            "embed" => "token_embd",
            "final_norm" => "output_norm",
            "lm_head" => "output",
            "attn_norm" => "attn_norm",
            "q" => "attn_q",
            "k" => "attn_k",
            "v" => "attn_v",
            "o" => "attn_output",
            "ffn_norm" => "ffn_norm",
            "gate" => "ffn_gate",
            "up" => "ffn_up",
            "down" => "ffn_down",
            other => other,
        };
        match layer {
            Some(i) => format!("blk.{i}.{base}"),
            None => base.to_string(),
        }
    }
    fn qk_permuted(&self) -> bool {
        self.arch == Architecture::Llama
    }
}

struct Safetensors {
    file: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl TensorSource for Safetensors {
    fn file(&self) -> &Path {
        &self.file
    }
    fn get(&mut self, name: &str) -> Result<Option<Tensor>, ModelFileError> {
        Ok(self.tensors.remove(name))
    }
    fn name(&self, role: &str, layer: Option<usize>) -> String {
        let base = match role {
            "embed" => "model.embed_tokens",
            "final_norm" => "model.norm",
            "lm_head" => "lm_head",
            "attn_norm" => "input_layernorm",
            "q" => "self_attn.q_proj",
            "k" => "self_attn.k_proj",
            "v" => "self_attn.v_proj",
            "o" => "self_attn.o_proj",
            "ffn_norm" => "post_attention_layernorm",
            "gate" => "mlp.gate_proj",
            "up" => "mlp.up_proj",
            "down" => "mlp.down_proj",
            other => other,
        };
        match layer {
            Some(i) => format!("model.layers.{i}.{base}"),
            None => base.to_string(),
        }
    }
    fn qk_permuted(&self) -> bool {
        false
    }
}

/// Undoes llama.cpp's q/k row permutation (transformers' `reverse_permute_weights`).
fn unpermute(t: &Tensor, heads: usize) -> Tensor {
    let shape = t.size();
    let half = shape[0] / heads as i64 / 2;
    let mut split: Vec<i64> = vec![heads as i64, half, 2];
    split.extend_from_slice(&shape[1..]);
    t.reshape(split.as_slice()).transpose(1, 2).reshape(shape.as_slice())
}

fn load(src: &mut dyn TensorSource, cfg: &ModelConfig) -> Result<Weights, ModelFileError> {
    let take = |src: &mut dyn TensorSource, role: &str, layer: Option<usize>, suffix: &str, shape: &[usize]| {
        let name = format!("{}.{suffix}", src.name(role, layer));
        let t = src.get(&name)?;
        if let Some(t) = &t {
            let want: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            if t.size() != want {
                return Err(ModelFileError::Tensor {
                    path: src.file().to_path_buf(),
                    name,
                    message: format!("shape {:?}, expected {want:?}", t.size()),
                });
            }
        }
        Ok((name, t))
    };
    let need = |src: &mut dyn TensorSource, role: &str, layer: Option<usize>, suffix: &str, shape: &[usize]| {
        let (name, t) = take(src, role, layer, suffix, shape)?;
        t.ok_or_else(|| ModelFileError::MissingTensor { path: src.file().to_path_buf(), name })
    };
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let (qd, kvd, ff) = (cfg.num_heads * d, cfg.num_kv_heads * d, cfg.intermediate_size);
    let embed = need(src, "embed", None, "weight", &[cfg.vocab_size, h])?;
    let final_norm = need(src, "final_norm", None, "weight", &[h])?;
    let lm_head = match take(src, "lm_head", None, "weight", &[cfg.vocab_size, h])? {
        (_, Some(t)) => Some(t),
        (_, None) if cfg.tie_word_embeddings => None,
        (name, None) => return Err(ModelFileError::MissingTensor { path: src.file().to_path_buf(), name }),
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let l = Some(i);
        let mut q = need(src, "q", l, "weight", &[qd, h])?;
        let mut k = need(src, "k", l, "weight", &[kvd, h])?;
        let v = need(src, "v", l, "weight", &[kvd, h])?;
        if src.qk_permuted() {
            q = unpermute(&q, cfg.num_heads);
            k = unpermute(&k, cfg.num_kv_heads);
        }
        let qkv_bias = if cfg.arch.has_qkv_bias() {
            let qb = need(src, "q", l, "bias", &[qd])?;
            let kb = need(src, "k", l, "bias", &[kvd])?;
            let vb = need(src, "v", l, "bias", &[kvd])?;
            Some(Tensor::cat(&[qb, kb, vb], 0))
        } else {
            None
        };
        let gate = need(src, "gate", l, "weight", &[ff, h])?;
        let up = need(src, "up", l, "weight", &[ff, h])?;
        layers.push(LayerWeights {
            attn_norm: need(src, "attn_norm", l, "weight", &[h])?,
            qkv: Tensor::cat(&[q, k, v], 0),
            qkv_bias,
            o: need(src, "o", l, "weight", &[h, qd])?,
            ffn_norm: need(src, "ffn_norm", l, "weight", &[h])?,
            gate_up: Tensor::cat(&[gate, up], 0),
            down: need(src, "down", l, "weight", &[h, ff])?,
        });
    }
    Ok(Weights { embed, final_norm, lm_head, layers })
}

/// Builds the weights of a GGUF file.
pub(crate) fn from_gguf(file: &mut GgufFile, cfg: &ModelConfig) -> Result<Weights, ModelFileError> {
    if file.tensor_type("rope_freqs.weight").is_some() {
        return Err(ModelFileError::Unsupported {
            path: file.metadata().path().to_path_buf(),
            what: "per-frequency RoPE factors (rope_freqs.weight, llama 3.1 style)".into(),
        });
    }
    let mut src = Gguf { file, arch: cfg.arch };
    load(&mut src, cfg)
}

/// Reads every tensor of the safetensors files (one file or the shards named in an index) as f32.
fn read_safetensors(files: &[PathBuf]) -> Result<HashMap<String, Tensor>, ModelFileError> {
    let mut out = HashMap::new();
    for path in files {
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io { path: path.clone(), source })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelFileError::Format { path: path.clone(), message: e.to_string() })?;
        for (name, view) in st.tensors() {
            let kind = match view.dtype() {
                safetensors::Dtype::F32 => Kind::Float,
                safetensors::Dtype::F16 => Kind::Half,
                safetensors::Dtype::BF16 => Kind::BFloat16,
                // Integer buffers (e.g. rotary caches) are not weights of the supported architectures.
                _ => continue,
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let t =
                Tensor::f_from_data_size(view.data(), &shape, kind).and_then(|t| t.f_to_kind(Kind::Float)).map_err(
                    |e| ModelFileError::Tensor { path: path.clone(), name: name.clone(), message: e.to_string() },
                )?;
            out.insert(name, t);
        }
    }
    Ok(out)
}

/// Builds the weights of a Hugging Face directory's safetensors files.
pub(crate) fn from_safetensors(files: &[PathBuf], cfg: &ModelConfig) -> Result<Weights, ModelFileError> {
    let file = files.first().cloned().unwrap_or_default();
    let mut src = Safetensors { file, tensors: read_safetensors(files)? };
    load(&mut src, cfg)
}
