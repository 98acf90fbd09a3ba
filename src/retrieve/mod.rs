//! Exact top-k retrieval by batched matrix products.
//!
//! This is the baseline every approximate index is measured against: every query is scored against every
//! corpus row, and the k best rows are kept. Memory stays bounded however large the corpus is: queries are
//! taken in batches of [`SearchOptions::query_batch`] rows and the corpus in blocks of
//! [`SearchOptions::block_rows`] rows, so at most `query_batch x block_rows` scores exist at a time; each
//! block's best rows are merged into a running [`TopK`] per query.
//!
//! One module for retrieval, with one rank order ([`rank_cmp`]: score descending, then key ascending) and
//! one dot-product kernel ([`vector::dot`]):
//!
//! - [`exact_search`] searches a corpus held in one `[n, dim]` tensor; hits are corpus row numbers.
//! - [`ExactIndex`] holds passage ids with their embeddings, takes upserts and deletes (as the dataflow
//!   sees them), and returns hits keyed by passage id. `fretflow eval` uses these (batched LibTorch
//!   matrix products).
//! - [`slots::Index`]: the dataflow's incremental index (upserts and deletes of passages, many queries
//!   scored per cache-sized block with [`vector::dot`]).
//!
//! # Scores
//! [`Similarity::Cosine`] (the default) normalizes queries and corpus rows to unit length before the
//! product, so inputs need not be normalized; a zero vector stays zero and scores 0 against everything
//! (as `torch.nn.functional.normalize` with `eps = 1e-12`). [`Similarity::Dot`] uses the rows as given.
//! Inputs must be finite; non-finite values are rejected with [`RetrieveError::NonFinite`].
//!
//! # Order and ties
//! Each query's hits are sorted by score, best first. Equal scores are broken by the key, ascending: the
//! corpus row for [`exact_search`], the passage id (byte order) for [`ExactIndex`]. The result is
//! therefore a function of the data alone, not of block sizes, batch sizes, or the order in which an
//! index received its rows. (Scores themselves may differ in the last bits between block sizes, since a
//! matrix product's summation order depends on its shape.)

mod exact;
mod index;
pub mod slots;
mod topk;
pub mod vector;

pub use exact::exact_search;
pub use index::{ExactIndex, IndexOptions};
pub use topk::{Scored, TopK};

use std::cmp::Ordering;
use tch::{Kind, Tensor};

/// The rank order of every retrieval: higher score first, then smaller key. `-0.0` and `0.0` are equal;
/// otherwise scores compare with [`f64::total_cmp`], so the order is total even for NaN.
pub fn rank_cmp<K: Ord + ?Sized>(a_score: f64, a_key: &K, b_score: f64, b_key: &K) -> Ordering {
    // Adding +0.0 turns -0.0 into +0.0 and leaves every other value unchanged.
    (b_score + 0.0).total_cmp(&(a_score + 0.0)).then_with(|| a_key.cmp(b_key))
}

/// How a query and a corpus row are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    /// Cosine similarity: both sides are normalized to unit length, then multiplied.
    #[default]
    Cosine,
    /// Plain dot product of the vectors as given.
    Dot,
}

impl Similarity {
    /// The name used in configs and reports: `cosine` or `dot`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Dot => "dot",
        }
    }
}

/// Settings of an exact search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    /// Number of hits to keep per query.
    pub k: usize,
    /// How queries and rows are scored.
    pub similarity: Similarity,
    /// Queries scored at once.
    pub query_batch: usize,
    /// Corpus rows scored at once (for [`ExactIndex`], its storage block size is used instead).
    pub block_rows: usize,
}

impl Default for SearchOptions {
    /// k = 100, cosine, 256 queries x 8192 rows per product (8 MiB of f32 scores).
    fn default() -> Self {
        Self { k: 100, similarity: Similarity::Cosine, query_batch: 256, block_rows: 8192 }
    }
}

/// Errors of retrieval: inputs of the wrong shape or content, or a failed tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// A tensor that must be `[rows, dim]` is not 2-D.
    #[error("{what} must be a 2-D [rows, dim] tensor, got shape {shape:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// Vectors of different dimensions were mixed.
    #[error("{what} have dimension {got}, expected {expected}")]
    Dimension {
        /// Which input.
        what: &'static str,
        /// The dimension expected (the corpus' or index's).
        expected: usize,
        /// The dimension given.
        got: usize,
    },
    /// The number of ids differs from the number of embedding rows.
    #[error("{ids} passage ids given for {rows} embedding rows")]
    Count {
        /// Ids given.
        ids: usize,
        /// Rows given.
        rows: usize,
    },
    /// The same passage id appears twice in one upsert.
    #[error("passage id '{0}' appears more than once in one upsert")]
    DuplicateId(String),
    /// An input holds NaN or infinite values.
    #[error("{what} contain NaN or infinite values")]
    NonFinite {
        /// Which input.
        what: &'static str,
    },
    /// A batch or block size of zero.
    #[error("{what} must be at least 1")]
    ZeroSize {
        /// Which setting.
        what: &'static str,
    },
    /// A tensor operation failed (device, memory).
    #[error("tensor error: {0}")]
    Tensor(#[from] tch::TchError),
}

/// Checks that `t` is a finite `[rows, dim]` matrix (of dimension `dim` when given); returns `dim`.
fn check_matrix(t: &Tensor, what: &'static str, dim: Option<usize>) -> Result<usize, RetrieveError> {
    let shape = t.size();
    if shape.len() != 2 {
        return Err(RetrieveError::Shape { what, shape });
    }
    let got = shape[1] as usize;
    if let Some(expected) = dim.filter(|&d| d != got) {
        return Err(RetrieveError::Dimension { what, expected, got });
    }
    if shape[0] > 0 && !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(RetrieveError::NonFinite { what });
    }
    Ok(got)
}

/// Returns `t` as f32 on `device`, with unit rows when `similarity` is cosine. A row's norm is clamped
/// below at 1e-12, as in `torch.nn.functional.normalize`, so a zero row stays zero.
fn search_form(t: &Tensor, similarity: Similarity, device: tch::Device) -> Result<Tensor, tch::TchError> {
    let t = t.f_to_device(device)?.f_to_kind(Kind::Float)?;
    match similarity {
        Similarity::Dot => Ok(t),
        Similarity::Cosine => {
            let norms = t.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?.f_clamp_min(1e-12)?;
            t.f_div(&norms)
        }
    }
}
