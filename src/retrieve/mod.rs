//! Exact top-k retrieval by batched matrix products.
