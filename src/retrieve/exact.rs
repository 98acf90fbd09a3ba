//! Exact search over a corpus tensor, and the block scan that [`super::ExactIndex`] shares.
use super::{check_matrix, search_form, RetrieveError, Scored, SearchOptions, TopK};
use tch::{Kind, Tensor};

/// Scores every query against every row of `corpus` (`[n, dim]`) and returns, for each query in input
/// order, its best `opts.k` rows (fewer when the corpus is smaller), best first, ties by row ascending.
///
/// Runs on the corpus' device; queries are moved there. Neither side needs to be normalized (see
/// [`super::Similarity`]). Memory beyond the inputs: `opts.query_batch x opts.block_rows` scores.
pub fn exact_search(
    queries: &Tensor,
    corpus: &Tensor,
    opts: &SearchOptions,
) -> Result<Vec<Vec<Scored<usize>>>, RetrieveError> {
    check_sizes(opts)?;
    let dim = check_matrix(corpus, "corpus embeddings", None)?;
    check_matrix(queries, "query embeddings", Some(dim))?;
    let device = corpus.device();
    let rows = corpus.size()[0];
    let queries = search_form(queries, opts.similarity, device)?;
    let n_queries = queries.size()[0];
    let mut top = TopK::new(n_queries as usize, opts.k);
    for q_start in (0..n_queries).step_by(opts.query_batch) {
        let q_len = (n_queries - q_start).min(opts.query_batch as i64);
        let batch = queries.f_narrow(0, q_start, q_len)?;
        for b_start in (0..rows).step_by(opts.block_rows) {
            let b_len = (rows - b_start).min(opts.block_rows as i64);
            let block = corpus.f_narrow(0, b_start, b_len)?;
            let block = search_form(&block, opts.similarity, device)?;
            scan_block(&batch, &block, q_start as usize, &mut top, |row| b_start as usize + row)?;
        }
    }
    Ok(top.into_lists())
}

/// Rejects zero batch or block sizes, which would loop forever.
pub(super) fn check_sizes(opts: &SearchOptions) -> Result<(), RetrieveError> {
    if opts.query_batch == 0 {
        return Err(RetrieveError::ZeroSize { what: "query batch" });
    }
    if opts.block_rows == 0 {
        return Err(RetrieveError::ZeroSize { what: "corpus block rows" });
    }
    Ok(())
}

/// Scores `queries` (`[q, dim]`) against `block` (`[b, dim]`, same device), both in search form, and offers
/// each query's best rows to `top`, at query index `query_offset + i`, keyed by `key_of(row in block)`.
///
/// The device's `topk` picks the block's best `min(k, b)` rows. When several rows tie with the k-th
/// score, `topk` may keep any of them; such a query's whole row of scores is then brought to the CPU and
/// every row scoring at least the k-th score is offered, so [`TopK`] decides ties by key, exactly.
pub(super) fn scan_block<K: Ord>(
    queries: &Tensor,
    block: &Tensor,
    query_offset: usize,
    top: &mut TopK<K>,
    key_of: impl Fn(usize) -> K,
) -> Result<(), RetrieveError> {
    let (n_queries, rows) = (queries.size()[0], block.size()[0]);
    let kk = (top.k() as i64).min(rows);
    if n_queries == 0 || kk == 0 {
        return Ok(());
    }
    let scores = queries.f_matmul(&block.f_tr()?)?;
    let (values, indices) = scores.f_topk(kk, 1, true, true)?;
    let kth = values.f_narrow(1, kk - 1, 1)?;
    let at_least_kth = scores.f_ge_tensor(&kth)?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?;
    let values = to_vec::<f32>(&values)?;
    let indices = to_vec::<i64>(&indices)?;
    let at_least_kth = to_vec::<i64>(&at_least_kth)?;
    let kk = kk as usize;
    for q in 0..n_queries as usize {
        let candidates: Vec<Scored<K>> = if at_least_kth[q] == kk as i64 {
            (q * kk..(q + 1) * kk).map(|i| Scored { score: values[i], key: key_of(indices[i] as usize) }).collect()
        } else {
            let row = to_vec::<f32>(&scores.f_get(q as i64)?)?;
            let kth = values[(q + 1) * kk - 1];
            // `!(s < kth)` rather than `s >= kth`: if a product overflowed to NaN, keep everything and
            // let `TopK` order it, instead of dropping the row.
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            row.iter()
                .enumerate()
                .filter(|(_, &s)| !(s < kth))
                .map(|(j, &score)| Scored { score, key: key_of(j) })
                .collect()
        };
        top.offer(query_offset + q, candidates);
    }
    Ok(())
}

/// Copies a tensor of any shape to a flat host vector.
fn to_vec<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<Vec<T>, tch::TchError> {
    Vec::<T>::try_from(&t.f_reshape([-1i64].as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::super::Similarity;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A `[rows, dim]` tensor of small integers (exact dot products in f32, many ties) and its rows.
    fn int_matrix(rng: &mut StdRng, rows: usize, dim: usize) -> (Tensor, Vec<Vec<f32>>) {
        let data: Vec<Vec<f32>> =
            (0..rows).map(|_| (0..dim).map(|_| rng.random_range(-2..=2) as f32).collect()).collect();
        let flat: Vec<f32> = data.iter().flatten().copied().collect();
        (Tensor::from_slice(&flat).reshape([rows as i64, dim as i64]), data)
    }

    /// The reference: every score, sorted by score descending then row ascending, first k.
    fn brute_force(queries: &[Vec<f32>], corpus: &[Vec<f32>], k: usize) -> Vec<Vec<Scored<usize>>> {
        queries
            .iter()
            .map(|q| {
                let mut all: Vec<_> = corpus
                    .iter()
                    .enumerate()
                    .map(|(row, c)| Scored { score: q.iter().zip(c).map(|(a, b)| a * b).sum(), key: row })
                    .collect();
                all.sort_by(Scored::rank_cmp);
                all.truncate(k);
                all
            })
            .collect()
    }

    #[test]
    fn dot_search_equals_brute_force_for_any_block_and_batch_size() {
        let mut rng = StdRng::seed_from_u64(11);
        let (corpus, corpus_rows) = int_matrix(&mut rng, 157, 6);
        let (queries, query_rows) = int_matrix(&mut rng, 23, 6);
        for (k, query_batch, block_rows) in [(10, 256, 8192), (10, 4, 16), (1, 7, 1), (40, 23, 50), (200, 5, 64)] {
            let opts = SearchOptions { k, similarity: Similarity::Dot, query_batch, block_rows };
            let got = exact_search(&queries, &corpus, &opts).unwrap();
            assert_eq!(
                got,
                brute_force(&query_rows, &corpus_rows, k),
                "k {k}, batch {query_batch}, block {block_rows}"
            );
        }
    }

    #[test]
    fn cosine_search_normalizes_both_sides() {
        let mut rng = StdRng::seed_from_u64(5);
        let corpus_rows: Vec<Vec<f32>> =
            (0..300).map(|_| (0..16).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let query_rows: Vec<Vec<f32>> =
            (0..9).map(|_| (0..16).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let unit = |v: &Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let expected = brute_force(
            &query_rows.iter().map(unit).collect::<Vec<_>>(),
            &corpus_rows.iter().map(unit).collect::<Vec<_>>(),
            15,
        );
        let to_tensor = |rows: &Vec<Vec<f32>>, scale: f32| {
            let flat: Vec<f32> = rows.iter().flatten().map(|x| x * scale).collect();
            Tensor::from_slice(&flat).reshape([rows.len() as i64, 16])
        };
        // Scaled inputs: cosine must not care.
        let opts = SearchOptions { k: 15, block_rows: 64, ..SearchOptions::default() };
        let got = exact_search(&to_tensor(&query_rows, 3.0), &to_tensor(&corpus_rows, 0.5), &opts).unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.iter().map(|h| h.key).collect::<Vec<_>>(), e.iter().map(|h| h.key).collect::<Vec<_>>());
            for (a, b) in g.iter().zip(e) {
                assert!((a.score - b.score).abs() < 1e-5, "{} vs {}", a.score, b.score);
            }
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let corpus = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).reshape([2, 2]);
        let opts = SearchOptions::default();
        let wrong_dim = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).reshape([1, 3]);
        assert!(matches!(exact_search(&wrong_dim, &corpus, &opts), Err(RetrieveError::Dimension { .. })));
        let nan = Tensor::from_slice(&[f32::NAN, 0.0]).reshape([1, 2]);
        assert!(matches!(exact_search(&nan, &corpus, &opts), Err(RetrieveError::NonFinite { .. })));
        let flat = Tensor::from_slice(&[1.0f32, 0.0]);
        assert!(matches!(exact_search(&flat, &corpus, &opts), Err(RetrieveError::Shape { .. })));
        let zero = SearchOptions { query_batch: 0, ..opts };
        assert!(matches!(exact_search(&corpus, &corpus, &zero), Err(RetrieveError::ZeroSize { .. })));
    }

    #[test]
    fn zero_vectors_score_zero_under_cosine() {
        let corpus = Tensor::from_slice(&[0.0f32, 0.0, -1.0, 0.0]).reshape([2, 2]);
        let query = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
        let got = exact_search(&query, &corpus, &SearchOptions::default()).unwrap();
        assert_eq!(got[0], vec![Scored { score: 0.0, key: 0 }, Scored { score: -1.0, key: 1 }]);
    }
}
