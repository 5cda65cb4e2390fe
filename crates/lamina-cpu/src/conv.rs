//! 2-D convolution (NCHW input, OIHW kernel, cross-correlation) as im2col + gemm per image and
//! group. Padding may be negative (it crops); input positions outside the image read 0.

use crate::arena::Slots;
use crate::matmul::{gemm_into, GemmElem};
use gemm::Parallelism;
use rayon::prelude::*;

/// Geometry of one convolution.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub(crate) f64: bool,
    pub(crate) x: usize,
    pub(crate) w: usize,
    pub(crate) out: usize,
    /// Input `[n, c, h, w]`.
    pub(crate) input: [usize; 4],
    /// Kernel `[o, c/groups, kh, kw]`.
    pub(crate) kernel: [usize; 4],
    /// Output spatial size.
    pub(crate) out_hw: [usize; 2],
    pub(crate) stride: [usize; 2],
    /// Low padding of each spatial axis (the high side follows from the output size).
    pub(crate) pad_lo: [i64; 2],
    pub(crate) dilation: [usize; 2],
    pub(crate) groups: usize,
}

impl Conv {
    /// # Safety
    /// `x`, `w` must hold the input and kernel and `out` be writable for `[n, o, ho, wo]`, not
    /// overlapping them.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            if self.f64 {
                self.go::<f64>(slots, threads)
            } else {
                self.go::<f32>(slots, threads)
            }
        }
    }

    /// A 1×1 kernel with unit stride and no padding multiplies the image directly.
    fn is_pointwise(&self) -> bool {
        self.kernel[2] == 1
            && self.kernel[3] == 1
            && self.stride == [1, 1]
            && self.pad_lo == [0, 0]
            && self.out_hw == [self.input[2], self.input[3]]
    }

    unsafe fn go<T: GemmElem + Default>(&self, slots: &Slots, threads: usize) {
        let [n, c, h, wd] = self.input;
        let [o, cg, kh, kw] = self.kernel;
        let [ho, wo] = self.out_hw;
        let og = o / self.groups;
        let (kk, p) = (cg * kh * kw, ho * wo);
        // SAFETY: guaranteed by `run`'s caller.
        let (x, w) = unsafe {
            (
                slots.get::<T>(self.x, n * c * h * wd),
                slots.get::<T>(self.w, o * kk),
            )
        };
        let out = slots.ptr(self.out);
        let pointwise = self.is_pointwise();
        let image = |ni: usize, col: &mut Vec<T>, par: Parallelism| {
            for g in 0..self.groups {
                let xg = &x[(ni * c + g * cg) * h * wd..(ni * c + (g + 1) * cg) * h * wd];
                let rhs = if pointwise {
                    xg
                } else {
                    col.resize(kk * p, T::default());
                    self.im2col(xg, col);
                    &col[..]
                };
                // SAFETY: the kernel rows of group g are `og × kk` contiguous, `rhs` is `kk × p`,
                // and the result block of image ni, group g is written by this call only.
                unsafe {
                    gemm_into::<T>(
                        (og, p, kk),
                        out.at::<T>((ni * o + g * og) * p),
                        p as isize,
                        w[g * og * kk..].as_ptr(),
                        (kk as isize, 1),
                        rhs.as_ptr(),
                        (p as isize, 1),
                        par,
                    )
                };
            }
        };
        let work = n * o * p * kk;
        if threads > 1 && n >= 2 && work >= 1 << 16 {
            (0..n)
                .into_par_iter()
                .for_each_init(Vec::new, |col, ni| image(ni, col, Parallelism::None));
        } else {
            let par = if threads > 1 && work >= 1 << 18 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            let mut col = Vec::new();
            for ni in 0..n {
                image(ni, &mut col, par);
            }
        }
    }

    /// Unfolds the patches of one group of one image: `col[(ci·kh + ky)·kw + kx][oy·wo + ox]` is
    /// the input at `(oy·sh + ky·dh − ph, ox·sw + kx·dw − pw)`, or 0 outside the image.
    fn im2col<T: Copy + Default>(&self, xg: &[T], col: &mut [T]) {
        let [_, _, h, wd] = self.input;
        let [_, cg, kh, kw] = self.kernel;
        let [ho, wo] = self.out_hw;
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let [ph, pw] = self.pad_lo;
        let zero = T::default();
        let mut rows = col.chunks_mut(ho * wo);
        for ci in 0..cg {
            let plane = &xg[ci * h * wd..(ci + 1) * h * wd];
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(row) = rows.next() else { return };
                    // output columns whose input column lies inside the image
                    let off = (kx * dw) as i64 - pw;
                    let lo = if off >= 0 {
                        0
                    } else {
                        ((-off) as usize).div_ceil(sw)
                    }
                    .min(wo);
                    let hi = if (wd as i64 - 1 - off) < 0 {
                        0
                    } else {
                        ((wd as i64 - 1 - off) as usize / sw + 1).min(wo)
                    }
                    .max(lo);
                    for (oy, r) in row.chunks_mut(wo).enumerate() {
                        let iy = (oy * sh + ky * dh) as i64 - ph;
                        if iy < 0 || iy >= h as i64 {
                            r.fill(zero);
                            continue;
                        }
                        let src = &plane[iy as usize * wd..(iy as usize + 1) * wd];
                        r[..lo].fill(zero);
                        r[hi..].fill(zero);
                        let first = (lo * sw) as i64 + off;
                        if sw == 1 {
                            r[lo..hi]
                                .copy_from_slice(&src[first as usize..first as usize + (hi - lo)]);
                        } else {
                            for (j, v) in r[lo..hi].iter_mut().enumerate() {
                                *v = src[first as usize + j * sw];
                            }
                        }
                    }
                }
            }
        }
    }
}
