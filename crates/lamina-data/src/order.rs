//! Seeded sample orders: SplitMix64 and the Fisher–Yates shuffle that `fit`, the `DataLoader`,
//! splits and augmentation all draw from, so one seed gives one order everywhere.

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast generator whose every seed gives a
/// well-mixed stream; good enough for shuffling and augmentation, and trivial to reproduce.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The generator for `(seed, epoch)`; the constant keeps seed 0, epoch 0 away from state 0.
    pub fn for_epoch(seed: u64, epoch: usize) -> Self {
        SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(GOLDEN) ^ 0x5DEE_CE66)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`). Plain modulo: its bias, below `n / 2^64`, does not matter for
    /// shuffles, and keeping it keeps every order this crate has ever produced.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Fisher–Yates with SplitMix64: the order of epoch `epoch` for `seed` (a permutation of `0..n`).
/// `fit`, the [`DataLoader`](crate::DataLoader) and the splits use this one function.
pub fn shuffled(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix64::for_epoch(seed, epoch);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    idx
}
