//! Inverted dropout whose mask costs a quarter of LibTorch's.
//!
//! `Tensor::dropout` on the CPU draws a 64-bit random number per element through a serial kernel
//! (`bernoulli_`); in a training step of all-MiniLM-L6-v2 that was about 11% of all CPU time (perf,
//! `scripts/bench_train.py`). Here one 64-bit draw (`randint`) gives the mask of four elements: each element
//! is dropped when its 16-bit half falls in the lowest `round(p * 65536)` of the 65,536 values, so the
//! drop probability is `p` to within 2^-17 (0.1 becomes 0.100006). Kept elements are scaled by
//! `1 / (1 - p)` as in `Tensor::dropout`. Masks come from LibTorch's default generator, so
//! `tch::manual_seed` makes them repeatable (GradCache relies on that).
use tch::{Kind, Tensor};

/// `xs` with each element zeroed with probability `p` and the others scaled by `1 / (1 - p)` when
/// `train` is set; `xs` itself otherwise. Differentiable in `xs`.
pub fn dropout(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return xs.shallow_clone();
    }
    if p >= 1.0 {
        return xs.zeros_like();
    }
    let n = xs.numel() as i64;
    let words = Tensor::randint_low(i64::MIN, i64::MAX, [(n + 3) / 4], (Kind::Int64, xs.device()));
    let halves = words.view_dtype(Kind::Int16).narrow(0, 0, n);
    // Signed halves are uniform over [-32768, 32767]: drop the lowest round(p * 65536) values.
    let threshold = i16::MIN as i64 + (p * 65536.0).round() as i64;
    let mask = halves.ge(threshold).to_kind(xs.kind()).view(xs.size().as_slice());
    xs * (mask * (1.0 / (1.0 - p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_asked_fraction_scales_the_rest_and_is_identity_in_eval() {
        tch::manual_seed(3);
        let xs = Tensor::ones([301, 517], (Kind::Float, tch::Device::Cpu));
        let n = xs.numel() as f64;
        for p in [0.1, 0.5] {
            let ys = dropout(&xs, p, true);
            let dropped = ys.eq(0.0).sum(Kind::Float).double_value(&[]) / n;
            // Binomial standard deviation for 155,617 elements is below 0.0013; allow 4 of them.
            assert!((dropped - p).abs() < 0.005, "p {p}: dropped {dropped}");
            let kept_value = ys.max().double_value(&[]);
            assert!((kept_value - 1.0 / (1.0 - p)).abs() < 1e-6, "kept elements scaled to {kept_value}");
        }
        assert!(dropout(&xs, 0.1, false).equal(&xs));
        assert!(dropout(&xs, 1.0, true).eq(0.0).all().int64_value(&[]) == 1);
    }

    #[test]
    fn same_seed_same_mask_and_gradients_flow_through_kept_elements_only() {
        let xs = Tensor::rand([64, 33], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        tch::manual_seed(11);
        let a = dropout(&xs, 0.3, true);
        tch::manual_seed(11);
        let b = dropout(&xs, 0.3, true);
        assert!(a.equal(&b));
        a.sum(Kind::Float).backward();
        let grad = xs.grad();
        let expected = a.ne(0.0).to_kind(Kind::Float) * (1.0 / 0.7);
        assert!(grad.allclose(&expected, 1e-6, 1e-6, false));
    }
}
