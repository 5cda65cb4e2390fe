//! Strided layouts: a row-major walk over an index space whose elements sit at
//! `offset + Σ index·stride` in some buffer. Permute, Expand, Slice, broadcast loads and Pad are all
//! such walks; collapsing contiguous axes makes their inner loops long.

use std::ops::Range;

/// Ranks up to this are walked without allocating.
const INLINE_RANK: usize = 8;

/// A strided walk over `numel(sizes)` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Strided {
    /// Sizes of the collapsed axes (never empty).
    sizes: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Strided {
    /// The walk over `sizes` with element strides `strides` from `offset`, with size-1 axes dropped
    /// and axes merged wherever the outer stride is the inner one times the inner size.
    pub(crate) fn new(sizes: &[usize], strides: &[usize], offset: usize) -> Strided {
        let mut cs: Vec<usize> = Vec::new();
        let mut ct: Vec<usize> = Vec::new();
        for (&n, &s) in sizes.iter().zip(strides) {
            if n == 1 {
                continue;
            }
            match (cs.last_mut(), ct.last()) {
                (Some(pn), Some(&ps)) if ps == s * n => {
                    *pn *= n;
                    *ct.last_mut().expect("same length as cs") = s;
                }
                _ => {
                    cs.push(n);
                    ct.push(s);
                }
            }
        }
        if cs.is_empty() {
            cs.push(1);
            ct.push(0);
        }
        Strided {
            sizes: cs,
            strides: ct,
            offset,
        }
    }

    /// True when every element is the one at `offset`.
    pub(crate) fn is_uniform(&self) -> bool {
        self.strides
            .iter()
            .zip(&self.sizes)
            .all(|(&s, &n)| s == 0 || n <= 1)
    }

    /// True when the walk reads `offset..offset+n` in order.
    pub(crate) fn is_contiguous(&self) -> bool {
        self.sizes.len() == 1 && (self.strides[0] == 1 || self.sizes[0] <= 1)
    }

    /// Calls `f(pos, off, run, stride)` for maximal runs along the innermost axis covering walk
    /// positions `range`: positions `pos..pos+run` are at `off + k·stride`.
    #[inline]
    pub(crate) fn for_runs(
        &self,
        range: Range<usize>,
        mut f: impl FnMut(usize, usize, usize, usize),
    ) {
        if range.is_empty() {
            return;
        }
        let r = self.sizes.len();
        let mut inline = [0usize; INLINE_RANK];
        let mut heap = Vec::new();
        let idx: &mut [usize] = if r <= INLINE_RANK {
            &mut inline[..r]
        } else {
            heap.resize(r, 0);
            &mut heap
        };
        let mut rem = range.start;
        let mut off = self.offset;
        for a in (0..r).rev() {
            idx[a] = rem % self.sizes[a];
            rem /= self.sizes[a];
            off += idx[a] * self.strides[a];
        }
        let (inner, stride) = (self.sizes[r - 1], self.strides[r - 1]);
        let mut pos = range.start;
        while pos < range.end {
            let run = (inner - idx[r - 1]).min(range.end - pos);
            f(pos, off, run, stride);
            pos += run;
            idx[r - 1] += run;
            off += run * stride;
            if idx[r - 1] == inner {
                off -= inner * stride;
                idx[r - 1] = 0;
                let mut a = r - 1;
                while a > 0 {
                    a -= 1;
                    idx[a] += 1;
                    off += self.strides[a];
                    if idx[a] < self.sizes[a] {
                        break;
                    }
                    off -= self.sizes[a] * self.strides[a];
                    idx[a] = 0;
                }
            }
        }
    }

    /// Copies walk positions `start..start+out.len()` of `src` into `out`.
    #[inline]
    pub(crate) fn gather<T: Copy>(&self, src: &[T], start: usize, out: &mut [T]) {
        self.for_runs(start..start + out.len(), |pos, off, run, stride| {
            let o = &mut out[pos - start..pos - start + run];
            match stride {
                0 => o.fill(src[off]),
                1 => o.copy_from_slice(&src[off..off + run]),
                _ => {
                    for (k, v) in o.iter_mut().enumerate() {
                        *v = src[off + k * stride];
                    }
                }
            }
        });
    }

    /// Writes `src` (walk positions `0..src.len()`) to its places in `dst`.
    pub(crate) fn scatter<T: Copy>(&self, src: &[T], dst: &mut [T]) {
        self.for_runs(0..src.len(), |pos, off, run, stride| {
            let s = &src[pos..pos + run];
            if stride == 1 {
                dst[off..off + run].copy_from_slice(s);
            } else {
                for (k, &v) in s.iter().enumerate() {
                    dst[off + k * stride] = v;
                }
            }
        });
    }
}

/// Row-major strides of `shape`, with 0 on the axes where `shape` is 1 but `target` is not (the
/// strides that read `shape` broadcast to `target`).
pub(crate) fn broadcast_strides(shape: &[usize], target: &[usize]) -> Vec<usize> {
    let st = lamina_core::strides(shape);
    st.iter()
        .zip(shape.iter().zip(target))
        .map(|(&s, (&a, &b))| if a == 1 && b != 1 { 0 } else { s })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_and_walks() {
        // a [2,3,4] tensor read as its transpose [4,3,2]
        let l = Strided::new(&[4, 3, 2], &[1, 4, 12], 0);
        let src: Vec<u32> = (0..24).collect();
        let mut out = vec![0u32; 24];
        for start in [0, 5, 11] {
            l.gather(&src, start, &mut out[start..(start + 7).min(24)]);
        }
        l.gather(&src, 0, &mut out);
        let want: Vec<u32> = (0..24)
            .map(|i| ((i % 2) * 12 + (i / 2 % 3) * 4 + i / 6) as u32)
            .collect();
        assert_eq!(out, want);
        // contiguous axes merge; size-1 axes vanish
        let c = Strided::new(&[2, 1, 3, 4], &[12, 99, 4, 1], 5);
        assert!(c.is_contiguous());
        assert!(Strided::new(&[3, 1, 4], &[0, 0, 0], 0).is_uniform());
        // row broadcast [3,4] from [1,4]
        let b = Strided::new(&[3, 4], &broadcast_strides(&[1, 4], &[3, 4]), 0);
        let mut o = vec![0u32; 10];
        b.gather(&src[..4], 1, &mut o);
        assert_eq!(o, vec![1, 2, 3, 0, 1, 2, 3, 0, 1, 2]);
    }

    #[test]
    fn scatter_places_elements() {
        // pad [2] into [5] with interior 1 and lo 1: positions 1, 3
        let l = Strided::new(&[2], &[2], 1);
        let mut dst = vec![0u32; 5];
        l.scatter(&[7, 8], &mut dst);
        assert_eq!(dst, vec![0, 7, 0, 8, 0]);
    }
}
