//! Unit-length embeddings ([`Vector`]) and their dot product: the one SIMD kernel of retrieval,
//! bit-identical on every path.
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A unit-length embedding. Ordered and hashed by the bits of its components, so it can travel in
/// differential collections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Vector(pub Vec<f32>);

impl Vector {
    /// Scales to unit length (a zero vector stays zero).
    pub fn normalized(mut values: Vec<f32>) -> Self {
        let norm = values.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt() as f32;
        if norm > 0.0 {
            values.iter_mut().for_each(|x| *x /= norm);
        }
        Vector(values)
    }

    /// Dot product (cosine for unit vectors), accumulated in a fixed order so the same pair always
    /// gets the same bits, whichever path computes it: eight lanes, lane `l` summing the products of
    /// components `l, l + 8, ...`, then the lanes in order, then the tail. With AVX the eight lanes are
    /// one register (a multiply then an add, no fused multiply-add), which rounds exactly as the scalar
    /// loop does.
    pub fn dot(&self, other: &Vector) -> f32 {
        dot(&self.0, &other.0)
    }
}

/// [`Vector::dot`] of two slices (over the shorter length).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above); slices have equal length.
        return unsafe { dot_avx(a, b) };
    }
    dot_lanes(a, b)
}

/// [`Vector::dot`] in portable code; `a` and `b` have the same length.
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    sum_lanes_and_tail(&lanes, a, b, chunks * 8)
}

/// The lanes in order, then the products of the components from `tail` on.
fn sum_lanes_and_tail(lanes: &[f32; 8], a: &[f32], b: &[f32], tail: usize) -> f32 {
    let mut sum = lanes.iter().sum::<f32>();
    for i in tail..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// [`Vector::dot`] with AVX; bit-identical to [`dot_lanes`]. `a` and `b` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_avx(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let chunks = a.len() / 8;
    let mut acc = _mm256_setzero_ps();
    for c in 0..chunks {
        // SAFETY: c * 8 + 8 <= chunks * 8 <= len of both slices.
        let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(c * 8)), _mm256_loadu_ps(b.as_ptr().add(c * 8))) };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    sum_lanes_and_tail(&lanes, a, b, chunks * 8)
}

/// Calls `each(i)`, in order, for every `i` with `values[i]` not below `cut` (`>= cut`, or NaN): the scan's
/// preselection over a block of product scores, where nearly all are below.
pub fn for_each_at_least(values: &[f32], cut: f32, mut each: impl FnMut(usize)) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above).
        return unsafe { for_each_at_least_avx(values, cut, &mut each) };
    }
    for (i, v) in values.iter().enumerate() {
        if v.partial_cmp(&cut) != Some(Ordering::Less) {
            each(i);
        }
    }
}

/// [`for_each_at_least`] eight values at a time with AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn for_each_at_least_avx(values: &[f32], cut: f32, each: &mut dyn FnMut(usize)) {
    use std::arch::x86_64::{_mm256_cmp_ps, _mm256_loadu_ps, _mm256_movemask_ps, _mm256_set1_ps, _CMP_NLT_UQ};
    let chunks = values.len() / 8;
    let cuts = _mm256_set1_ps(cut);
    for c in 0..chunks {
        // SAFETY: c * 8 + 8 <= chunks * 8 <= values.len().
        let v = unsafe { _mm256_loadu_ps(values.as_ptr().add(c * 8)) };
        let mut mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(v, cuts)) as u32;
        while mask != 0 {
            each(c * 8 + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
    }
    for (i, v) in values.iter().enumerate().skip(chunks * 8) {
        if v.partial_cmp(&cut) != Some(Ordering::Less) {
            each(i);
        }
    }
}

impl PartialEq for Vector {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Vector {}

impl PartialOrd for Vector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Vector {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            match a.total_cmp(b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl Hash for Vector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
        for x in &self.0 {
            x.to_bits().hash(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Vector;

    #[test]
    fn dot_of_unit_vectors_is_cosine_and_independent_of_length_remainders() {
        let a = Vector::normalized((0..11).map(|i| i as f32).collect());
        assert!((a.dot(&a) - 1.0).abs() < 1e-6);
        let z = Vector::normalized(vec![0.0; 5]);
        assert_eq!(z.0, vec![0.0; 5]);
    }

    #[test]
    fn the_values_at_least_a_cut_are_found_in_order_with_nans_and_tails() {
        let mut values: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32).collect();
        values[5] = f32::NAN;
        values[33] = f32::NAN;
        for cut in [f32::NEG_INFINITY, 0.0, 5.0, 9.5, 10.0, f32::INFINITY] {
            let want: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_nan() || values[i] >= cut).collect();
            let mut got = Vec::new();
            super::for_each_at_least(&values, cut, |i| got.push(i));
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx_dot_has_the_same_bits_as_the_portable_lanes() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for len in [0, 1, 7, 8, 9, 64, 383, 384, 1000] {
            let a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            // SAFETY: AVX checked above; equal lengths.
            let fast = unsafe { super::dot_avx(&a, &b) };
            // Exact on purpose, on every x86-64 CPU: both paths round each lane's multiply and add separately
            // (IEEE, identical on Intel and AMD; Rust never fuses them into an FMA, and `avx` enables no FMA)
            // and sum the lanes in the same order, so the runtime dispatch cannot change a score's bits.
            assert_eq!(fast.to_bits(), super::dot_lanes(&a, &b).to_bits(), "length {len}");
        }
    }
}
