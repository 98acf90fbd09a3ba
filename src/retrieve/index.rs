//! [`ExactIndex`]: passage ids with their embeddings, kept in fixed-size blocks, searched exactly.
use super::exact::{check_sizes, scan_block};
use super::{check_matrix, search_form, RetrieveError, Scored, SearchOptions, Similarity, TopK};
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

/// Settings of an [`ExactIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// How queries and passages are scored. With cosine, passages are stored normalized.
    pub similarity: Similarity,
    /// Where embeddings are stored and scored.
    pub device: Device,
    /// Rows per storage block; also the corpus block of a search.
    pub block_rows: usize,
    /// Queries scored at once.
    pub query_batch: usize,
}

impl Default for IndexOptions {
    /// Cosine, CPU, blocks of 8192 rows, 256 queries per product.
    fn default() -> Self {
        let search = SearchOptions::default();
        Self {
            similarity: search.similarity,
            device: Device::Cpu,
            block_rows: search.block_rows,
            query_batch: search.query_batch,
        }
    }
}

/// An exact nearest-neighbour index keyed by passage id, for a corpus that changes: passages can be
/// upserted and removed at any time.
///
/// Rows live in blocks of `block_rows` f32 rows on the configured device, so growing the index never
/// copies what is already stored, and a search scores one block at a time. Removing a passage moves the
/// last row into its slot. Search results do not depend on this layout: ties are broken by passage id.
#[derive(Debug)]
pub struct ExactIndex {
    dim: usize,
    opts: IndexOptions,
    blocks: Vec<Tensor>,
    ids: Vec<String>,
    rows: HashMap<String, usize>,
}

impl ExactIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, opts: IndexOptions) -> Result<Self, RetrieveError> {
        check_sizes(&SearchOptions {
            block_rows: opts.block_rows,
            query_batch: opts.query_batch,
            ..Default::default()
        })?;
        if dim == 0 {
            return Err(RetrieveError::ZeroSize { what: "embedding dimension" });
        }
        Ok(Self { dim, opts, blocks: Vec::new(), ids: Vec::new(), rows: HashMap::new() })
    }

    /// Dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of passages held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no passage.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    /// The ids held, in storage order (which upserts and removals change).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(String::as_str)
    }

    /// The stored vector of `id` (normalized under cosine), as a `[dim]` tensor on the index's device.
    pub fn embedding(&self, id: &str) -> Option<Tensor> {
        self.rows.get(id).map(|&row| self.row(row))
    }

    /// Inserts passages, or replaces the vectors of ids already held. `embeddings` is `[ids.len(), dim]`.
    /// Validates everything first: on error the index is unchanged.
    pub fn upsert<S: AsRef<str>>(&mut self, ids: &[S], embeddings: &Tensor) -> Result<(), RetrieveError> {
        check_matrix(embeddings, "passage embeddings", Some(self.dim))?;
        let rows = embeddings.size()[0] as usize;
        if rows != ids.len() {
            return Err(RetrieveError::Count { ids: ids.len(), rows });
        }
        let mut seen = HashSet::with_capacity(ids.len());
        if let Some(dup) = ids.iter().map(AsRef::as_ref).find(|id| !seen.insert(*id)) {
            return Err(RetrieveError::DuplicateId(dup.to_string()));
        }
        let embeddings = search_form(embeddings, self.opts.similarity, self.opts.device)?;
        let mut new_rows = Vec::new();
        for (i, id) in ids.iter().map(AsRef::as_ref).enumerate() {
            match self.rows.get(id) {
                Some(&row) => self.row(row).f_copy_(&embeddings.f_get(i as i64)?)?,
                None => new_rows.push(i as i64),
            }
        }
        let fresh = if new_rows.len() == rows {
            embeddings
        } else {
            embeddings.f_index_select(0, &Tensor::from_slice(&new_rows).f_to_device(self.opts.device)?)?
        };
        let mut copied = 0;
        while copied < new_rows.len() {
            let offset = self.len() % self.opts.block_rows;
            if offset == 0 {
                let shape = [self.opts.block_rows as i64, self.dim as i64];
                self.blocks.push(Tensor::f_zeros(shape.as_slice(), (Kind::Float, self.opts.device))?);
            }
            let take = (self.opts.block_rows - offset).min(new_rows.len() - copied);
            let block = self.blocks.last().expect("a block was just ensured. This is a bug.");
            block.f_narrow(0, offset as i64, take as i64)?.f_copy_(&fresh.f_narrow(
                0,
                copied as i64,
                take as i64,
            )?)?;
            for &i in &new_rows[copied..copied + take] {
                let id = ids[i as usize].as_ref().to_string();
                self.rows.insert(id.clone(), self.ids.len());
                self.ids.push(id);
            }
            copied += take;
        }
        tracing::debug!(upserted = rows, inserted = new_rows.len(), held = self.len(), "Upserted passages.");
        Ok(())
    }

    /// Removes `id`; returns whether it was held.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(row) = self.rows.remove(id) else { return false };
        let last = self.ids.len() - 1;
        if row != last {
            let moved = self.row(last);
            self.row(row).copy_(&moved);
            self.ids.swap(row, last);
            self.rows.insert(self.ids[row].clone(), row);
        }
        self.ids.pop();
        if self.ids.len().is_multiple_of(self.opts.block_rows) {
            self.blocks.pop();
        }
        true
    }

    /// The best `k` passages for each query (`[n, dim]`), in query order, best first; equal scores are
    /// ordered by passage id ascending. Fewer than `k` hits when the index holds fewer passages.
    pub fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Scored<String>>>, RetrieveError> {
        check_matrix(queries, "query embeddings", Some(self.dim))?;
        let queries = search_form(queries, self.opts.similarity, self.opts.device)?;
        let n_queries = queries.size()[0];
        let mut top = TopK::new(n_queries as usize, k);
        let batch = self.opts.query_batch as i64;
        for q_start in (0..n_queries).step_by(self.opts.query_batch) {
            let batch = queries.f_narrow(0, q_start, (n_queries - q_start).min(batch))?;
            for (b, block) in self.blocks.iter().enumerate() {
                let base = b * self.opts.block_rows;
                let filled = (self.len() - base).min(self.opts.block_rows);
                let block = block.f_narrow(0, 0, filled as i64)?;
                scan_block(&batch, &block, q_start as usize, &mut top, |j| self.ids[base + j].as_str())?;
            }
        }
        Ok(top
            .into_lists()
            .into_iter()
            .map(|hits| hits.into_iter().map(|h| Scored { score: h.score, key: h.key.to_string() }).collect())
            .collect())
    }

    /// A view of storage row `row`.
    fn row(&self, row: usize) -> Tensor {
        let block = &self.blocks[row / self.opts.block_rows];
        block.get((row % self.opts.block_rows) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Small integers: every dot product is exact in f32 whatever kernel, summation order or FMA LibTorch
    /// uses, so the searches below compare exactly with the scalar brute force.
    fn int_rows(rng: &mut StdRng, n: usize, dim: usize) -> Tensor {
        let flat: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-2..=2) as f32).collect();
        Tensor::from_slice(&flat).reshape([n as i64, dim as i64])
    }

    fn dot_opts(block_rows: usize) -> IndexOptions {
        IndexOptions { similarity: Similarity::Dot, block_rows, query_batch: 3, ..Default::default() }
    }

    /// The reference: scores of every held passage sorted by score descending, id ascending.
    fn brute_force(held: &[(String, Vec<f32>)], query: &[f32], k: usize) -> Vec<Scored<String>> {
        let mut all: Vec<_> = held
            .iter()
            .map(|(id, v)| Scored { score: v.iter().zip(query).map(|(a, b)| a * b).sum(), key: id.clone() })
            .collect();
        all.sort_by(Scored::rank_cmp);
        all.truncate(k);
        all
    }

    #[test]
    fn search_after_upserts_and_removals_equals_brute_force() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut index = ExactIndex::new(5, dot_opts(8)).unwrap();
        let mut held: Vec<(String, Vec<f32>)> = Vec::new();
        for step in 0..30 {
            let n = rng.random_range(1..7);
            let ids: Vec<String> = (0..n).map(|_| format!("p{}", rng.random_range(0..40))).collect();
            let mut ids: Vec<String> = ids.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            ids.reverse();
            let emb = int_rows(&mut rng, ids.len(), 5);
            index.upsert(&ids, &emb).unwrap();
            let rows: Vec<Vec<f32>> = Vec::try_from(&emb).unwrap();
            for (id, v) in ids.iter().zip(rows) {
                held.retain(|(h, _)| h != id);
                held.push((id.clone(), v));
            }
            for _ in 0..rng.random_range(0..4) {
                let id = format!("p{}", rng.random_range(0..40));
                let was = held.iter().any(|(h, _)| *h == id);
                held.retain(|(h, _)| *h != id);
                assert_eq!(index.remove(&id), was, "step {step}: remove {id}");
            }
            assert_eq!(index.len(), held.len());
            let queries = int_rows(&mut rng, 4, 5);
            let got = index.search(&queries, 6).unwrap();
            let query_rows: Vec<Vec<f32>> = Vec::try_from(&queries).unwrap();
            for (g, q) in got.iter().zip(&query_rows) {
                assert_eq!(*g, brute_force(&held, q, 6), "step {step}");
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_insertion_order_or_block_size() {
        let mut rng = StdRng::seed_from_u64(9);
        let ids: Vec<String> = (0..50).map(|i| format!("doc-{i:02}")).collect();
        let emb = int_rows(&mut rng, 50, 4);
        let queries = int_rows(&mut rng, 7, 4);
        let mut forward = ExactIndex::new(4, dot_opts(64)).unwrap();
        forward.upsert(&ids, &emb).unwrap();
        let reversed_ids: Vec<String> = ids.iter().rev().cloned().collect();
        let mut backward = ExactIndex::new(4, dot_opts(3)).unwrap();
        backward.upsert(&reversed_ids, &emb.flip([0i64].as_slice())).unwrap();
        assert_eq!(forward.search(&queries, 9).unwrap(), backward.search(&queries, 9).unwrap());
    }

    #[test]
    fn cosine_index_stores_unit_vectors_and_rejects_bad_upserts() {
        let mut index = ExactIndex::new(2, IndexOptions::default()).unwrap();
        index.upsert(&["a"], &Tensor::from_slice(&[3.0f32, 4.0]).reshape([1, 2])).unwrap();
        let stored: Vec<f32> = Vec::try_from(&index.embedding("a").unwrap()).unwrap();
        assert!((stored[0] - 0.6).abs() < 1e-6 && (stored[1] - 0.8).abs() < 1e-6, "{stored:?}");
        let two = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).reshape([2, 2]);
        assert!(matches!(index.upsert(&["b", "b"], &two), Err(RetrieveError::DuplicateId(id)) if id == "b"));
        assert!(matches!(index.upsert(&["b"], &two), Err(RetrieveError::Count { ids: 1, rows: 2 })));
        let three = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).reshape([1, 3]);
        assert!(matches!(index.upsert(&["b"], &three), Err(RetrieveError::Dimension { .. })));
        assert_eq!(index.ids().collect::<Vec<_>>(), vec!["a"]);
        assert!(!index.remove("zzz"));
        assert!(index.remove("a") && index.is_empty());
        assert!(index.search(&two, 3).unwrap().iter().all(Vec::is_empty));
    }
}
