//! Order statistics the benchmarks report. Each program includes this file
//! with `#[path]`.

/// The nearest-rank percentile `p` (0 to 1) of `sorted`; the default (zero)
/// when it is empty.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
