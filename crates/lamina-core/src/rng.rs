//! The counter-based random number generator every backend must reproduce bit for bit.
//!
//! Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) with
//! key `(seed, stream)` and counter `(j, 0, step, 0)` where `j = i / 4`; element `i` of a
//! `RandomBits` result is word `i % 4` of that block, reinterpreted as i32. The seed and step come
//! from the op's i32 `[2]` key operand, the stream is the op's attribute. So a draw depends only on
//! (seed, step, stream, element index): CPU and CUDA draw the same bits, and a resumed run draws
//! the same as an uninterrupted one.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox-4x32 with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Element `i` of `RandomBits` with key `(seed, step)` and `stream`.
pub fn random_bits_at(seed: i32, step: i32, stream: u32, i: usize) -> i32 {
    let j = (i / 4) as u64;
    let block = philox4x32_10(
        [j as u32, (j >> 32) as u32, step as u32, 0],
        [seed as u32, stream],
    );
    block[i % 4] as i32
}

/// Fills `out` with elements `0..out.len()` of `RandomBits`.
pub fn fill_random_bits(seed: i32, step: i32, stream: u32, out: &mut [i32]) {
    for (j, chunk) in out.chunks_mut(4).enumerate() {
        let j = j as u64;
        let block = philox4x32_10(
            [j as u32, (j >> 32) as u32, step as u32, 0],
            [seed as u32, stream],
        );
        for (o, b) in chunk.iter_mut().zip(block) {
            *o = b as i32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([0xffffffff; 4], [0xffffffff; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }
    #[test]
    fn fill_matches_elementwise() {
        let mut v = vec![0; 11];
        fill_random_bits(7, 3, 5, &mut v);
        for (i, &x) in v.iter().enumerate() {
            assert_eq!(x, random_bits_at(7, 3, 5, i));
        }
    }
}
