//! The BERT-family encoder in tch: BERT, and MPNet (the same layers with its own names, positions counted
//! after the padding id, no token types, and a relative-position bias added to every layer's attention
//! scores, as Hugging Face's `MPNetModel`). Parameters live in a [`nn::VarStore`] under Hugging Face's names
//! (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight` or
//! `encoder.layer.0.attention.attn.q.weight`, ...), so a `model.safetensors` loads by name and a fine-tuned
//! store saves back in the same layout.
use super::config::{Activation, Architecture, BertConfig, MPNET_PADDING_IDX};
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

/// Word and position embeddings (plus token type 0 for BERT), summed and layer-normalized.
#[derive(Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    /// BERT's token-type table; MPNet has none.
    token_type: Option<Tensor>,
    /// MPNet: the id after which positions are counted, [`MPNET_PADDING_IDX`] (`None`: BERT, from 0).
    padding_idx: Option<i64>,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    fn new(vs: nn::Path, c: &BertConfig, arch: Architecture) -> Self {
        let table = |name: &str, rows: i64| (&vs / name).var("weight", &[rows, c.hidden_size], nn::Init::Const(0.));
        let bert = arch == Architecture::Bert;
        Self {
            word: table("word_embeddings", c.vocab_size),
            position: table("position_embeddings", c.max_position_embeddings),
            token_type: bert.then(|| table("token_type_embeddings", c.type_vocab_size)),
            padding_idx: (!bert).then_some(MPNET_PADDING_IDX),
            layer_norm: LayerNorm::new(vs.clone(), c),
            dropout: c.hidden_dropout_prob,
        }
    }

    /// `[batch, len]` ids to `[batch, len, hidden]`. BERT: positions count from 0 and every token has type
    /// 0. MPNet: a token's position is `padding_idx` + its 1-based index among the non-padding tokens,
    /// padding sits at `padding_idx` (Hugging Face's `create_position_ids_from_input_ids`).
    fn forward_t(&self, input_ids: &Tensor, train: bool) -> Tensor {
        let len = input_ids.size()[1];
        let words = Tensor::embedding(&self.word, input_ids, -1, false, false);
        let sum = match self.padding_idx {
            None => words + self.position.narrow(0, 0, len),
            Some(pad) => {
                let real = input_ids.ne(pad).to_kind(Kind::Int64);
                let ids = real.cumsum(1, Kind::Int64) * &real + pad;
                words + Tensor::embedding(&self.position, &ids, -1, false, false)
            }
        };
        let sum = match &self.token_type {
            Some(types) => sum + types.get(0),
            None => sum,
        };
        dropout(&self.layer_norm.forward(&sum), self.dropout, train)
    }

    fn shallow_clone(&self) -> Self {
        Self {
            word: self.word.shallow_clone(),
            position: self.position.shallow_clone(),
            token_type: self.token_type.as_ref().map(Tensor::shallow_clone),
            padding_idx: self.padding_idx,
            layer_norm: self.layer_norm.shallow_clone(),
            dropout: self.dropout,
        }
    }
}

/// MPNet's relative-position bias: one learned value per head and distance bucket
/// (`encoder.relative_attention_bias.weight`, `[buckets, heads]`), added to the attention scores of every
/// layer.
#[derive(Debug)]
struct RelativeBias {
    table: Tensor,
    buckets: i64,
}

/// Longest distance told apart by MPNet's buckets; farther ones share the last bucket.
const RELATIVE_MAX_DISTANCE: f64 = 128.0;

impl RelativeBias {
    fn new(vs: nn::Path, c: &BertConfig) -> Self {
        let buckets = c.relative_attention_num_buckets;
        Self { table: vs.var("weight", &[buckets, c.num_attention_heads], nn::Init::Const(0.)), buckets }
    }

    /// `[1, heads, len, len]`: the bias of query position i (row) and key position j (column). The bucket
    /// of `j - i` is T5's bidirectional one, as MPNet's `relative_position_bucket` computes it, in the same
    /// tensor operations so that the f32 logarithm rounds the same way at bucket edges: half the buckets per
    /// direction, exact up to a quarter of them, then logarithmic up to [`RELATIVE_MAX_DISTANCE`].
    fn forward(&self, len: i64) -> Tensor {
        let device = self.table.device();
        let positions = Tensor::arange(len, (Kind::Int64, device));
        let n = positions.unsqueeze(1) - positions.unsqueeze(0); // -(j - i)
        let half = self.buckets / 2;
        let exact = half / 2;
        let side = n.lt(0).to_kind(Kind::Int64) * half;
        let n = n.abs();
        let large = (n.to_kind(Kind::Float) / exact as f64).log() / (RELATIVE_MAX_DISTANCE / exact as f64).ln()
            * (half - exact) as f64;
        let large = (large.to_kind(Kind::Int64) + exact).clamp_max(half - 1);
        let bucket = side + n.where_self(&n.lt(exact), &large);
        Tensor::embedding(&self.table, &bucket, -1, false, false).permute([2, 0, 1]).unsqueeze(0)
    }

    fn shallow_clone(&self) -> Self {
        Self { table: self.table.shallow_clone(), buckets: self.buckets }
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
    fn new(vs: nn::Path, c: &BertConfig, arch: Architecture) -> Self {
        let h = c.hidden_size;
        // BERT: `self.{query,key,value}`, `output.dense`, `output.LayerNorm`; MPNet: `attn.{q,k,v,o}`, `LayerNorm`.
        let (this, names, out, norm) = match arch {
            Architecture::Bert => (&vs / "self", ["query", "key", "value"], &vs / "output" / "dense", &vs / "output"),
            Architecture::MpNet => (&vs / "attn", ["q", "k", "v"], &vs / "attn" / "o", vs.clone()),
        };
        Self {
            query: linear(&this / names[0], h, h),
            key: linear(&this / names[1], h, h),
            value: linear(&this / names[2], h, h),
            output: linear(out, h, h),
            layer_norm: LayerNorm::new(norm, c),
            heads: c.num_attention_heads,
            attention_dropout: c.attention_probs_dropout_prob,
            dropout: c.hidden_dropout_prob,
        }
    }

    /// `xs`: `[batch, len, hidden]`; `mask`: `[batch, 1, 1, len]`, true where a key is a real token, or
    /// (MPNet) a float `[batch, heads, len, len]` added to the scores: the position bias, -inf at padding.
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
            let scores = match mask.kind() {
                Kind::Bool => scores.masked_fill(&mask.logical_not(), f64::NEG_INFINITY),
                _ => scores + mask,
            };
            // The softmax in f32 also under mixed precision (as autocast runs it), back to v's type for the product.
            let probs = scores.softmax(-1, Kind::Float).to_kind(v.kind());
            dropout(&probs, self.attention_dropout, true).matmul(&v)
        } else {
            let p = if train { self.attention_dropout } else { 0.0 };
            // A float mask must have the queries' type (bf16 under mixed precision).
            let mask = if mask.kind() == Kind::Bool { mask.shallow_clone() } else { mask.to_kind(q.kind()) };
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), p, false, None, false)
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
    fn new(vs: nn::Path, c: &BertConfig, arch: Architecture) -> Self {
        Self {
            attention: Attention::new(&vs / "attention", c, arch),
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

/// A BERT or MPNet encoder: embeddings and `num_hidden_layers` transformer layers (no pooler head; a
/// checkpoint's `pooler.*` tensors, when present, are kept as frozen variables so that saving round-trips
/// them).
#[derive(Debug)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// MPNet's relative-position bias; `None` for BERT.
    relative: Option<RelativeBias>,
    compute: Option<Kind>,
}

impl BertModel {
    /// Creates the parameters under `vs` with Hugging Face names; their values are zero until a
    /// checkpoint is loaded (see [`super::weights`]). A `model_type` other than `bert` or `mpnet` is refused
    /// when the config is read ([`super::config::ModelConfig::load`]); here it is taken as BERT.
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        let arch = config.architecture().unwrap_or(Architecture::Bert);
        let encoder = &vs / "encoder";
        let layers = &encoder / "layer";
        Self {
            embeddings: Embeddings::new(&vs / "embeddings", config, arch),
            layers: (0..config.num_hidden_layers).map(|i| Layer::new(&layers / i, config, arch)).collect(),
            relative: (arch == Architecture::MpNet)
                .then(|| RelativeBias::new(&encoder / "relative_attention_bias", config)),
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
        let mut mask = attention_mask.to_kind(Kind::Bool).view([batch, 1, 1, len]);
        if let Some(relative) = &self.relative {
            // The bias in the parameters' type, -inf where a key is padding: one float mask for every layer.
            let bias = relative.forward(len);
            mask = bias.masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
        }
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
            relative: self.relative.as_ref().map(RelativeBias::shallow_clone),
            compute: self.compute,
        }
    }
}
