//! The BERT encoder in tch. Parameters live in a [`nn::VarStore`] under Hugging Face's names
//! (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...), so a
//! `model.safetensors` loads by name and a fine-tuned store saves back in the same layout.
use super::config::{Activation, BertConfig};
use super::dropout::dropout;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Linear layer whose parameters start at zero (they are always overwritten by a checkpoint).
fn linear(vs: nn::Path, input: i64, output: i64) -> nn::Linear {
    let config = nn::LinearConfig { ws_init: nn::Init::Const(0.), bs_init: Some(nn::Init::Const(0.)), bias: true };
    nn::linear(vs, input, output, config)
}

/// `xs · Wᵀ + b`, in `compute`'s number type when given (mixed precision: the f32 parameters are cast for the
/// product, so their gradients stay f32), else in the parameters' own.
fn project(l: &nn::Linear, xs: &Tensor, compute: Option<Kind>) -> Tensor {
    match compute {
        Some(kind) => xs.to_kind(kind).linear(&l.ws.to_kind(kind), l.bs.as_ref().map(|b| b.to_kind(kind))),
        None => l.forward(xs),
    }
}

fn shallow_linear(l: &nn::Linear) -> nn::Linear {
    nn::Linear { ws: l.ws.shallow_clone(), bs: l.bs.as_ref().map(Tensor::shallow_clone) }
}

/// LayerNorm over the last dimension with learned `weight` and `bias` (Hugging Face's `LayerNorm`).
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(vs: nn::Path, config: &BertConfig) -> Self {
        let vs = vs / "LayerNorm";
        let shape = [config.hidden_size];
        Self {
            weight: vs.var("weight", &shape, nn::Init::Const(1.)),
            bias: vs.var("bias", &shape, nn::Init::Const(0.)),
            eps: config.layer_norm_eps,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let shape = [self.weight.size()[0]];
        xs.layer_norm(shape.as_slice(), Some(&self.weight), Some(&self.bias), self.eps, true)
    }

    fn shallow_clone(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), bias: self.bias.shallow_clone(), eps: self.eps }
    }
}

/// Word, position and token-type embeddings, summed and layer-normalized.
#[derive(Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    fn new(vs: nn::Path, c: &BertConfig) -> Self {
        let table = |name: &str, rows: i64| (&vs / name).var("weight", &[rows, c.hidden_size], nn::Init::Const(0.));
        Self {
            word: table("word_embeddings", c.vocab_size),
            position: table("position_embeddings", c.max_position_embeddings),
            token_type: table("token_type_embeddings", c.type_vocab_size),
            layer_norm: LayerNorm::new(vs.clone(), c),
            dropout: c.hidden_dropout_prob,
        }
    }

    /// `[batch, len]` ids to `[batch, len, hidden]`; positions count from 0 and every token has type 0.
    fn forward_t(&self, input_ids: &Tensor, train: bool) -> Tensor {
        let len = input_ids.size()[1];
        let words = Tensor::embedding(&self.word, input_ids, -1, false, false);
        let positions = self.position.narrow(0, 0, len);
        let type0 = self.token_type.get(0);
        let sum = words + positions + type0;
        dropout(&self.layer_norm.forward(&sum), self.dropout, train)
    }

    fn shallow_clone(&self) -> Self {
        Self {
            word: self.word.shallow_clone(),
            position: self.position.shallow_clone(),
            token_type: self.token_type.shallow_clone(),
            layer_norm: self.layer_norm.shallow_clone(),
            dropout: self.dropout,
        }
    }
}

/// Multi-head self-attention with its output projection and residual LayerNorm.
#[derive(Debug)]
struct Attention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    output: nn::Linear,
    layer_norm: LayerNorm,
    heads: i64,
    attention_dropout: f64,
    dropout: f64,
}

impl Attention {
    fn new(vs: nn::Path, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        let this = &vs / "self";
        let out = &vs / "output";
        Self {
            query: linear(&this / "query", h, h),
            key: linear(&this / "key", h, h),
            value: linear(&this / "value", h, h),
            output: linear(&out / "dense", h, h),
            layer_norm: LayerNorm::new(out, c),
            heads: c.num_attention_heads,
            attention_dropout: c.attention_probs_dropout_prob,
            dropout: c.hidden_dropout_prob,
        }
    }

    /// `xs`: `[batch, len, hidden]`; `mask`: `[batch, 1, 1, len]`, true where a key is a real token.
    fn forward_t(&self, xs: &Tensor, mask: &Tensor, train: bool, compute: Option<Kind>) -> Tensor {
        let (batch, len, hidden) = xs.size3().expect("hidden states are [batch, len, hidden]. This is a bug.");
        let split = |t: Tensor| t.view([batch, len, self.heads, hidden / self.heads]).transpose(1, 2);
        let q = split(project(&self.query, xs, compute));
        let k = split(project(&self.key, xs, compute));
        let v = split(project(&self.value, xs, compute));
        let context = if train && self.attention_dropout > 0.0 && q.device() == tch::Device::Cpu {
            // SDPA's math path, which it takes on the CPU when dropout is on, with the cheaper mask (on CUDA
            // its fused kernels apply dropout themselves).
            let scale = 1.0 / ((hidden / self.heads) as f64).sqrt();
            let scores = q.matmul(&k.transpose(-2, -1)) * scale;
            let scores = scores.masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
            // The softmax in f32 also under mixed precision (as autocast runs it), back to v's type for the product.
            let probs = scores.softmax(-1, Kind::Float).to_kind(v.kind());
            dropout(&probs, self.attention_dropout, true).matmul(&v)
        } else {
            let p = if train { self.attention_dropout } else { 0.0 };
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None, false)
        };
        let context = context.transpose(1, 2).reshape([batch, len, hidden]);
        let projected = dropout(&project(&self.output, &context, compute), self.dropout, train);
        // Under mixed precision `projected` is bf16 and `xs` f32: the sum, the residual stream and the
        // LayerNorm stay f32.
        self.layer_norm.forward(&(projected + xs))
    }

    fn shallow_clone(&self) -> Self {
        Self {
            query: shallow_linear(&self.query),
            key: shallow_linear(&self.key),
            value: shallow_linear(&self.value),
            output: shallow_linear(&self.output),
            layer_norm: self.layer_norm.shallow_clone(),
            ..*self
        }
    }
}

/// One transformer layer: attention, then the feed-forward block with its residual LayerNorm.
#[derive(Debug)]
struct Layer {
    attention: Attention,
    intermediate: nn::Linear,
    output: nn::Linear,
    layer_norm: LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl Layer {
    fn new(vs: nn::Path, c: &BertConfig) -> Self {
        Self {
            attention: Attention::new(&vs / "attention", c),
            intermediate: linear(&vs / "intermediate" / "dense", c.hidden_size, c.intermediate_size),
            output: linear(&vs / "output" / "dense", c.intermediate_size, c.hidden_size),
            layer_norm: LayerNorm::new(&vs / "output", c),
            activation: c.hidden_act,
            dropout: c.hidden_dropout_prob,
        }
    }

    fn forward_t(&self, xs: &Tensor, mask: &Tensor, train: bool, compute: Option<Kind>) -> Tensor {
        let xs = self.attention.forward_t(xs, mask, train, compute);
        let inner = project(&self.intermediate, &xs, compute);
        let inner = match self.activation {
            Activation::Gelu => inner.gelu("none"),
            Activation::GeluTanh => inner.gelu("tanh"),
            Activation::Relu => inner.relu(),
        };
        let out = dropout(&project(&self.output, &inner, compute), self.dropout, train);
        self.layer_norm.forward(&(out + xs))
    }

    fn shallow_clone(&self) -> Self {
        Self {
            attention: self.attention.shallow_clone(),
            intermediate: shallow_linear(&self.intermediate),
            output: shallow_linear(&self.output),
            layer_norm: self.layer_norm.shallow_clone(),
            activation: self.activation,
            dropout: self.dropout,
        }
    }
}

/// A BERT encoder: embeddings and `num_hidden_layers` transformer layers (no pooler head; a checkpoint's
/// `pooler.*` tensors, when present, are kept as frozen variables so that saving round-trips them).
#[derive(Debug)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    compute: Option<Kind>,
}

impl BertModel {
    /// Creates the parameters under `vs` with Hugging Face names; their values are zero until a
    /// checkpoint is loaded (see [`super::weights`]).
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        let encoder = &vs / "encoder" / "layer";
        Self {
            embeddings: Embeddings::new(&vs / "embeddings", config),
            layers: (0..config.num_hidden_layers).map(|i| Layer::new(&encoder / i, config)).collect(),
            compute: None,
        }
    }

    /// Mixed precision: run the matrix products (projections and attention) in `kind` (bf16) while the
    /// parameters, their gradients, the embeddings, the residual stream and the LayerNorms stay in the
    /// parameters' type, as `torch.autocast` does. `None` (the default) runs everything in the parameters'
    /// type.
    pub fn set_compute_kind(&mut self, kind: Option<Kind>) {
        self.compute = kind;
    }

    /// Token vectors `[batch, len, hidden]` for `input_ids` `[batch, len]` (i64) and `attention_mask`
    /// `[batch, len]` (1 for real tokens, 0 for padding). Dropout is applied only when `train` is set.
    /// Runs in the kind of the parameters (f32, or bf16 after [`nn::VarStore::bfloat16`]), with the matrix
    /// products in the kind set by [`Self::set_compute_kind`] when there is one.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        let (batch, len) = input_ids.size2().expect("input ids are [batch, len]. This is a bug.");
        let mask = attention_mask.to_kind(Kind::Bool).view([batch, 1, 1, len]);
        let mut xs = self.embeddings.forward_t(input_ids, train);
        for layer in &self.layers {
            xs = layer.forward_t(&xs, &mask, train, self.compute);
        }
        xs
    }

    /// A second handle on the same parameters (no copy), e.g. to run batches on another thread.
    /// Parameter updates through either handle are seen by both.
    pub fn shallow_clone(&self) -> Self {
        Self {
            embeddings: self.embeddings.shallow_clone(),
            layers: self.layers.iter().map(Layer::shallow_clone).collect(),
            compute: self.compute,
        }
    }
}
