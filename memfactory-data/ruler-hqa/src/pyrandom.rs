//! CPython's `random.Random`, bit for bit, for the draws MemAgent's data scripts make.
//!
//! MemAgent builds RULER-HotpotQA with `random.seed(42)` + `random.sample` for the padding
//! and `random.Random(4).shuffle` for the document order
//! (BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146
//! `taskutils/memory_data/processing.py` lines 62-72 and 116). This module reproduces those
//! calls exactly:
//!
//! - the generator is MT19937 (`Modules/_randommodule.c`: `genrand_uint32`);
//! - an integer seed goes through `init_by_array` with the 32-bit words of `|seed|`, least
//!   significant first (`random_seed`: `random.seed(42)` and `Random(42)` use the key `[42]`;
//!   the seed 0 uses the key `[0]`);
//! - `getrandbits(k)` for `k ≤ 32` is `genrand_uint32() >> (32 - k)`;
//! - `_randbelow(n)` draws `getrandbits(n.bit_length())` until the value is below `n`
//!   (`Lib/random.py`, `_randbelow_with_getrandbits`);
//! - `shuffle` walks `i` from `len - 1` down to 1 and swaps `x[i]` with `x[_randbelow(i + 1)]`;
//! - `sample(population, k)` picks the pool or the set algorithm by CPython's `setsize` rule
//!   and draws the same indices in the same order.
//!
//! `tests/golden/memagent_random.py` writes the golden file `tests/golden/memagent_random.json`
//! that the tests compare against (CPython 3.11; the algorithms are unchanged from 3.2 to 3.13
//! for these calls).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// CPython's `random.Random` (Mersenne Twister) for the calls MemAgent's scripts make.
#[derive(Clone)]
pub struct PyRandom {
    mt: [u32; N],
    mti: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom").field("mti", &self.mti).finish()
    }
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed (what `random.seed(seed)` sets).
    pub fn new(seed: u64) -> Self {
        let mut key: Vec<u32> = Vec::with_capacity(2);
        let mut n = seed;
        while n > 0 {
            key.push(n as u32);
            n >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom {
            mt: [0; N],
            mti: N + 1,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.mti = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    /// The next 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        let mag = |y: u32| if y & 1 == 0 { 0 } else { MATRIX_A };
        if self.mti >= N {
            for kk in 0..N - M {
                let y = (self.mt[kk] & UPPER_MASK) | (self.mt[kk + 1] & LOWER_MASK);
                self.mt[kk] = self.mt[kk + M] ^ (y >> 1) ^ mag(y);
            }
            for kk in N - M..N - 1 {
                let y = (self.mt[kk] & UPPER_MASK) | (self.mt[kk + 1] & LOWER_MASK);
                self.mt[kk] = self.mt[kk + M - N] ^ (y >> 1) ^ mag(y);
            }
            let y = (self.mt[N - 1] & UPPER_MASK) | (self.mt[0] & LOWER_MASK);
            self.mt[N - 1] = self.mt[M - 1] ^ (y >> 1) ^ mag(y);
            self.mti = 0;
        }
        let mut y = self.mt[self.mti];
        self.mti += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `getrandbits(k)` for `k ≤ 32`.
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        assert!(k <= 32, "getrandbits: {k} bits asked, at most 32 supported");
        if k == 0 {
            return 0;
        }
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)`: uniform in `0..n` by rejection on `n.bit_length()` bits (`n ≥ 1`,
    /// `n < 2^32`); `0` for `n = 0`, as CPython 3.9 and earlier return.
    pub fn randbelow(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let n = u32::try_from(n).expect("randbelow: n must be below 2^32");
        let k = 32 - n.leading_zeros();
        let mut r = self.getrandbits(k);
        while r >= n {
            r = self.getrandbits(k);
        }
        r as usize
    }

    /// `shuffle(x)` in place.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.randbelow(i + 1);
            x.swap(i, j);
        }
    }

    /// The indices `sample(range(n), k)` returns, in order (`random.sample` of any sequence
    /// of length `n` picks `population[i]` for these `i`).
    ///
    /// # Panics
    /// When `k > n` (CPython raises `ValueError`).
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample: sample larger than population ({k} > {n})");
        let mut setsize = 21usize;
        if k > 5 {
            // `4 ** _ceil(_log(k * 3, 4))`, with math.log(x, base) = log(x) / log(base).
            let e = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(e.ceil() as u32);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
        }
        out
    }
}

/// The permutation `random.Random(seed).shuffle(list(range(n)))` leaves: `perm[p]` is the
/// index of the item that ends at position `p`.
pub fn shuffled_range(seed: u64, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    PyRandom::new(seed).shuffle(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPython: `random.Random(42).getrandbits(32)` ×3 and `random.Random(0)`, `Random(2**40+3)`.
    #[test]
    fn first_outputs_match_cpython() {
        let mut r = PyRandom::new(42);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [2_746_317_213, 478_163_327, 107_420_369]
        );
    }

    #[test]
    fn own_ten_documents_at_memagents_positions_for_50() {
        let perm = shuffled_range(4, 50);
        let mut own: Vec<usize> = (0..50).filter(|&p| perm[p] < 10).map(|p| p + 1).collect();
        own.sort_unstable();
        assert_eq!(own, [11, 18, 27, 29, 37, 41, 42, 43, 44, 48]);
    }
}
