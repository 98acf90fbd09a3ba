//! Packing tokenized texts into batches by a token budget.
//!
//! Texts are sorted by token length, longest first, and each batch takes texts while
//! `texts_in_batch * longest_in_batch <= token_budget` (the size of the padded `[batch, len]` block).
//! Sorting keeps padding small; the budget keeps the block, and so memory and GEMM shapes, near constant
//! whatever the lengths. Outputs are put back in input order by the caller, using the batch indices.
use tch::{Device, Kind, Tensor};

/// Groups the texts with the given token `lengths` into batches; each batch lists input indices, longest
/// first. Every index appears exactly once. A text longer than the budget gets a batch of its own.
pub fn plan_batches(lengths: &[usize], token_budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        let longest = current.first().map_or(lengths[i], |&first| lengths[first]).max(1);
        if !current.is_empty() && (current.len() + 1) * longest > token_budget {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// A padded batch of token ids, ready for the encoder.
#[derive(Debug)]
pub struct TokenBatch {
    /// `[batch, len]` i64 token ids, padded on the right with the tokenizer's padding id.
    pub input_ids: Tensor,
    /// `[batch, len]` i64, 1 for real tokens and 0 for padding.
    pub attention_mask: Tensor,
}

impl TokenBatch {
    /// Pads `sequences` to the longest of them and moves the result to `device`.
    pub fn pad(sequences: &[&[u32]], pad_id: i64, device: Device) -> Self {
        let batch = sequences.len();
        let len = sequences.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![pad_id; batch * len];
        let mut mask = vec![0i64; batch * len];
        for (row, seq) in sequences.iter().enumerate() {
            for (col, &id) in seq.iter().enumerate() {
                ids[row * len + col] = i64::from(id);
                mask[row * len + col] = 1;
            }
        }
        let shape = [batch as i64, len as i64];
        let to = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        Self { input_ids: to(&ids), attention_mask: to(&mask) }
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.input_ids.size()[0] as usize
    }

    /// Whether the batch holds no text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Real (unpadded) tokens in the batch.
    pub fn real_tokens(&self) -> i64 {
        self.attention_mask.sum(Kind::Int64).int64_value(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_longest_first_within_budget() {
        let lengths = [5, 60, 7, 60, 3, 100, 8, 9];
        let batches = plan_batches(&lengths, 128);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &batches {
            let longest = lengths[batch[0]];
            assert!(batch.iter().all(|&i| lengths[i] <= longest), "longest first: {batch:?}");
            assert!(batch.len() == 1 || batch.len() * longest <= 128, "within budget: {batch:?}");
        }
        assert_eq!(batches[0], vec![5], "100 tokens: a second text would exceed 128");
        assert_eq!(batches[1], vec![1, 3], "two texts of 60 fit in 128");
    }

    #[test]
    fn text_longer_than_budget_gets_its_own_batch() {
        assert_eq!(plan_batches(&[300, 2, 2], 256), vec![vec![0], vec![1, 2]]);
        assert!(plan_batches(&[], 256).is_empty());
    }

    #[test]
    fn pad_fills_ids_and_mask() {
        let batch = TokenBatch::pad(&[&[101, 7, 102], &[101, 102]], 0, Device::Cpu);
        let ids = Vec::<i64>::try_from(batch.input_ids.flatten(0, -1)).unwrap();
        let mask = Vec::<i64>::try_from(batch.attention_mask.flatten(0, -1)).unwrap();
        assert_eq!(ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(batch.real_tokens(), 5);
    }
}
