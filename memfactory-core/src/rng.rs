//! Portable random draws built on `next_u64` alone.
//!
//! MemFactory's datasets draw from a `rand_chacha::ChaCha8Rng` seeded with
//! `rand_core::SeedableRng::seed_from_u64` from a [`crate::seed`]-derived seed. ChaCha's
//! output stream is fixed by its specification; the helpers below turn that stream into
//! integers, floats, shuffles and samples with algorithms written here, so generated data
//! never changes when `rand` changes its distributions. Frozen-value tests pin them.

use std::collections::HashMap;

use rand_core::RngCore;

/// A uniform integer in `0..n` (`n > 0`), from `next_u64` only.
///
/// Lemire's multiply-shift with rejection ("Fast Random Integer Generation in an
/// Interval", ACM TOMACS 2019): the high word of `x * n` (`x` a uniform 64-bit draw) is the
/// result; draws whose low word falls below `2^64 mod n` are rejected, which removes the
/// bias exactly. It consumes one draw except with probability below `n / 2^64`.
///
/// # Panics
/// When `n == 0` (callers pass a positive bound).
pub fn bounded<R: RngCore + ?Sized>(rng: &mut R, n: u64) -> u64 {
    assert!(n > 0, "bounded: empty range");
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    let mut low = m as u64;
    if low < n {
        // 2^64 mod n, computed in 64 bits.
        let threshold = n.wrapping_neg() % n;
        while low < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
            low = m as u64;
        }
    }
    (m >> 64) as u64
}

/// A uniform float in `[0, 1)`: the top 53 bits of one draw times `2^-53` (exact, so the
/// same on every platform).
pub fn unit_f64<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fisher–Yates (Durstenfeld) shuffle: for `i` from the last index down to 1, swap item `i`
/// with item [`bounded`]`(i + 1)`.
pub fn shuffle<T, R: RngCore + ?Sized>(rng: &mut R, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = bounded(rng, (i + 1) as u64) as usize;
        items.swap(i, j);
    }
}

/// `k` distinct integers drawn uniformly from `0..n`, in draw order (`k <= n`).
///
/// A partial Fisher–Yates shuffle of the virtual array `0..n`, kept sparse in a map: step
/// `i` swaps position `i` with position `i + bounded(n - i)` and emits the value now at
/// `i`. Memory and time are `O(k)` whatever `n`.
///
/// # Panics
/// When `k > n`.
pub fn sample_distinct<R: RngCore + ?Sized>(rng: &mut R, n: u64, k: usize) -> Vec<u64> {
    assert!(k as u64 <= n, "sample_distinct: k > n");
    let mut moved: HashMap<u64, u64> = HashMap::with_capacity(k * 2);
    let mut out = Vec::with_capacity(k);
    for i in 0..k as u64 {
        let j = i + bounded(rng, n - i);
        let at_j = moved.get(&j).copied().unwrap_or(j);
        let at_i = moved.get(&i).copied().unwrap_or(i);
        moved.insert(j, at_i);
        out.push(at_j);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn bounded_is_in_range_and_roughly_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[bounded(&mut rng, 7) as usize] += 1;
        }
        for c in counts {
            assert!((9_300..10_700).contains(&c), "{counts:?}");
        }
        assert_eq!(bounded(&mut rng, 1), 0);
        let n = (1u64 << 63) + 1;
        for _ in 0..100 {
            assert!(bounded(&mut rng, n) < n);
        }
    }

    #[test]
    fn unit_f64_is_in_unit_interval() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..10_000 {
            let u = unit_f64(&mut rng);
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn sample_distinct_gives_distinct_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (n, k) in [(10u64, 0usize), (10, 3), (10, 10), (1 << 40, 50)] {
            let s = sample_distinct(&mut rng, n, k);
            assert_eq!(s.len(), k);
            assert!(s.iter().all(|v| *v < n));
            assert_eq!(s.iter().collect::<HashSet<_>>().len(), k);
        }
        let mut all = sample_distinct(&mut rng, 10, 10);
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut v: Vec<usize> = (0..100).collect();
        shuffle(&mut rng, &mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }

    #[test]
    fn draws_are_frozen() {
        // A change here changes every generated dataset instance (RULER, RULER-HotpotQA).
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let b: Vec<u64> = (0..4).map(|_| bounded(&mut rng, 1000)).collect();
        let u = unit_f64(&mut rng);
        let mut v: Vec<u32> = (0..6).collect();
        shuffle(&mut rng, &mut v);
        let s = sample_distinct(&mut rng, 1 << 40, 2);
        assert_eq!(b, [157, 167, 704, 726]);
        assert_eq!(u, 0.6012590152842842);
        assert_eq!(v, [4, 5, 1, 3, 0, 2]);
        assert_eq!(s, [220163583860, 422514888125]);
    }
}
