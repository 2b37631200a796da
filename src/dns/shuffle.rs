//! A cheap per-thread random shuffle for answer order.
//!
//! Answers are reordered on every query so clients that take the first record
//! spread their load. The generator needs no quality beyond "not the same
//! order every time" and must not take a lock, so each thread keeps its own
//! wyrand state, seeded from the standard library's per-process random keys.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// The next pseudo-random number of this thread (wyrand). Not for secrets.
pub(crate) fn next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        // Truncation to the low and high halves is the point of the mix.
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// Shuffles `items` in place (Fisher–Yates).
pub(crate) fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        // The modulo bias is irrelevant for answer ordering.
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_keeps_elements_and_varies_order() {
        let original: Vec<u32> = (0..20).collect();
        let mut seen_other_order = false;
        for _ in 0..10 {
            let mut v = original.clone();
            shuffle(&mut v);
            let mut sorted = v.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, original);
            seen_other_order |= v != original;
        }
        assert!(seen_other_order);
        let mut empty: Vec<u32> = Vec::new();
        shuffle(&mut empty);
    }
}
