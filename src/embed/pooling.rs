//! Token vectors to one sentence vector, as sentence-transformers' `Pooling` and `Normalize` modules do.
use super::config::PoolingConfig;
use tch::{Kind, Tensor};

/// Pools `tokens` `[batch, len, hidden]` over the real tokens marked by `attention_mask` `[batch, len]`
/// (1 real, 0 padding) into `[batch, hidden * modes]` f32, concatenating the configured modes in the
/// order sentence-transformers uses (CLS, max, mean, mean/√len), then scales rows to unit length
/// when `normalize` is set. Differentiable.
pub fn pool(config: &PoolingConfig, tokens: &Tensor, attention_mask: &Tensor, normalize: bool) -> Tensor {
    let tokens = tokens.to_kind(Kind::Float);
    let mask = attention_mask.to_kind(Kind::Float).unsqueeze(-1);
    let mut parts = Vec::new();
    if config.pooling_mode_cls_token {
        parts.push(tokens.select(1, 0));
    }
    if config.pooling_mode_max_tokens {
        // sentence-transformers fills padding with -1e9 before taking the max.
        let padding = mask.eq(0.0);
        parts.push(tokens.masked_fill(&padding, -1e9).amax([1].as_slice(), false));
    }
    if config.pooling_mode_mean_tokens || config.pooling_mode_mean_sqrt_len_tokens {
        let sum = (&tokens * &mask).sum_dim_intlist([1].as_slice(), false, Kind::Float);
        let count = mask.sum_dim_intlist([1].as_slice(), false, Kind::Float).clamp_min(1e-9);
        if config.pooling_mode_mean_tokens {
            parts.push(&sum / &count);
        }
        if config.pooling_mode_mean_sqrt_len_tokens {
            parts.push(&sum / count.sqrt());
        }
    }
    let pooled = if parts.len() == 1 { parts.pop().expect("one part. This is a bug.") } else { Tensor::cat(&parts, 1) };
    if normalize {
        l2_normalize(&pooled)
    } else {
        pooled
    }
}

/// Scales each row to unit L2 norm (`torch.nn.functional.normalize(p=2, dim=1, eps=1e-12)`).
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2, [1].as_slice(), true).clamp_min(1e-12);
    xs / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tokens() -> (Tensor, Tensor) {
        // One sentence of 2 real tokens and one padding token with a large value that must be ignored.
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -4.0, 100.0, 100.0]).view([1, 3, 2]);
        let m = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        (t, m)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn mean_ignores_padding() {
        let (t, m) = tokens();
        let config = PoolingConfig { pooling_mode_mean_tokens: true, ..Default::default() };
        assert_eq!(values(&pool(&config, &t, &m, false)), vec![2.0, -1.0]);
    }

    #[test]
    fn modes_concatenate_in_sentence_transformers_order() {
        let (t, m) = tokens();
        let config = PoolingConfig {
            pooling_mode_cls_token: true,
            pooling_mode_max_tokens: true,
            pooling_mode_mean_sqrt_len_tokens: true,
            ..Default::default()
        };
        let got = values(&pool(&config, &t, &m, false));
        let s = 2f32.sqrt();
        let want = [1.0, 2.0, 3.0, 2.0, 4.0 / s, -2.0 / s];
        assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?}");
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows_finite() {
        let xs = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0]).view([2, 2]).to_device(Device::Cpu);
        assert_eq!(values(&l2_normalize(&xs)), vec![0.6, 0.8, 0.0, 0.0]);
    }
}
