//! Winograd F(2×2, 3×3) (Lavin & Gray, 2016) for stride-1 3×3 correlations: each 2×2 block of
//! outputs ("tile") comes from a 4×4 block of input, `Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`, so the
//! `cout × cin` products per tile are 16 instead of 36. Over a chunk of images the elementwise
//! product is 16 gemms (`U[ξ]` `cout × cin` times `V[ξ]` `cin × tiles`), one per position ξ of the
//! 4×4 transformed tile, and no unfolded column matrix is built. The transforms only add, subtract
//! and halve, so the result differs from direct summation by a few roundings.
//!
//! Used for the forward convolution and for the input gradient (a stride-1 correlation of the
//! cotangent with the flipped, transposed kernel).

use crate::arena::Ptr;
use crate::conv::{copy_short, wide, with_scratch, Epilogue};
use crate::matmul::{gemm_into, GemmElem};
use gemm::Parallelism;
use rayon::prelude::*;

/// About this many tiles (columns of each gemm) per chunk of images: the transformed input and
/// product of a chunk (`16·(cin + cout)·TILES` elements) stay near the core's L2.
const TILES: usize = 256;

/// A stride-1 3×3 correlation of `n` images of `cin` planes `h × w` into `cout` planes `ho × wo`:
/// output `(oy, ox)` reads input `(oy + ky − pad[0], ox + kx − pad[1])`, 0 outside the image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Winograd {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) pad: [usize; 2],
}

impl Winograd {
    /// Elements of the transformed kernel [`Winograd::transform_kernel`] writes.
    pub(crate) fn kernel_len(&self) -> usize {
        16 * self.cout * self.cin
    }

    /// `u[(ξ·cout + o)·cin + c] = (G g Gᵀ)[ξ]` for the 3×3 kernel `g[ky][kx] = k(o, c, ky, kx)`.
    pub(crate) fn transform_kernel<T: GemmElem>(
        &self,
        k: impl Fn(usize, usize, usize, usize) -> T,
        u: &mut [T],
    ) {
        let half = T::HALF;
        // the rows of G applied to a 3-vector
        let g3 = |a: T, b: T, c: T| [a, half * (a + b + c), half * (a - b + c), c];
        let plane = self.cout * self.cin;
        for o in 0..self.cout {
            for c in 0..self.cin {
                let cols: [[T; 4]; 3] =
                    std::array::from_fn(|kx| g3(k(o, c, 0, kx), k(o, c, 1, kx), k(o, c, 2, kx)));
                for i in 0..4 {
                    let r = g3(cols[0][i], cols[1][i], cols[2][i]);
                    for (j, v) in r.into_iter().enumerate() {
                        u[(4 * i + j) * plane + o * self.cin + c] = v;
                    }
                }
            }
        }
    }

    /// Writes the correlation of `src` (`n × cin × h × w`) with the transformed kernel `u` into
    /// `dst` (`n × cout × ho × wo`), then applies the epilogue to each plane if given. Chunks of
    /// images run on separate threads; every output is computed the same way whatever the thread
    /// count.
    ///
    /// # Safety
    /// `dst` must be valid for `n·cout·ho·wo` elements, written by this call only.
    pub(crate) unsafe fn run<T: GemmElem>(
        &self,
        src: &[T],
        u: &[T],
        bias: Option<Epilogue<'_, T>>,
        dst: Ptr,
        threads: usize,
    ) {
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let per_image = th * tw;
        let ipc = (TILES / per_image.max(1)).clamp(1, self.n.max(1));
        let chunks = self.n.div_ceil(ipc);
        let par = if threads > 1 && chunks == 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        let chunk = |ch: usize| {
            let (i0, i1) = (ch * ipc, ((ch + 1) * ipc).min(self.n));
            let t = (i1 - i0) * per_image;
            let (vl, ml) = (16 * self.cin * t, 16 * self.cout * t);
            with_scratch::<T, _>(vl + ml + 18 * (tw + 1), |buf| {
                let (v, rest) = buf.split_at_mut(vl);
                let (m, rows) = rest.split_at_mut(ml);
                let plane = self.h * self.w;
                wide(|| {
                    for i in i0..i1 {
                        for c in 0..self.cin {
                            let x = &src[(i * self.cin + c) * plane..][..plane];
                            self.input_transform(x, v, c, t, (i - i0) * per_image, rows);
                        }
                    }
                });
                for xi in 0..16 {
                    // SAFETY: `m[ξ]` is `cout × t`, `u[ξ]` `cout × cin` and `v[ξ]` `cin × t`,
                    // all row-major inside their buffers.
                    unsafe {
                        gemm_into::<T>(
                            (self.cout, t, self.cin),
                            m[xi * self.cout * t..].as_mut_ptr(),
                            t as isize,
                            u[xi * self.cout * self.cin..].as_ptr(),
                            (self.cin as isize, 1),
                            v[xi * self.cin * t..].as_ptr(),
                            (t as isize, 1),
                            par,
                        )
                    }
                }
                let out_plane = self.ho * self.wo;
                wide(|| {
                    for i in i0..i1 {
                        for o in 0..self.cout {
                            // SAFETY: plane (i, o) of the result lies inside `dst` (caller's
                            // contract) and belongs to this chunk's images only.
                            let y = unsafe {
                                std::slice::from_raw_parts_mut(
                                    dst.at::<T>((i * self.cout + o) * out_plane),
                                    out_plane,
                                )
                            };
                            self.output_transform(m, o, t, (i - i0) * per_image, y, rows);
                            if let Some(e) = &bias {
                                let at = (i * self.cout + o) * out_plane;
                                // SAFETY: plane (i, o) of the result and of the ReLU's result
                                // belong to this chunk only.
                                unsafe { e.apply(dst, at, o..o + 1, out_plane) };
                            }
                        }
                    }
                });
            })
        };
        if threads > 1 && chunks > 1 {
            (0..chunks).into_par_iter().for_each(chunk);
        } else {
            (0..chunks).for_each(chunk);
        }
    }

    /// `V[ξ][c][base + tile] = (Bᵀ d B)[ξ]` for every tile of plane `x` (channel `c` of one image);
    /// `rows` is scratch of `18·(tw + 1)` elements.
    #[inline(always)]
    fn input_transform<T: GemmElem>(
        &self,
        x: &[T],
        v: &mut [T],
        c: usize,
        t: usize,
        base: usize,
        rows: &mut [T],
    ) {
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let l = tw + 1;
        // the 4 input rows of a tile row, zero-padded to the tile grid's 2l columns (`pad[1]`
        // zeros first), split into even and odd columns (`e[j]`, `o[j]`: columns 2j and 2j + 1),
        // then Bᵀ applied down the columns
        let (d, rest) = rows[..18 * l].split_at_mut(8 * l);
        let (bt, line) = rest.split_at_mut(8 * l);
        let (lo, n) = (
            self.pad[1].min(2 * l),
            self.w.min(2 * l - self.pad[1].min(2 * l)),
        );
        line[..lo].fill(T::ZERO);
        line[lo + n..].fill(T::ZERO);
        for ty in 0..th {
            for k in 0..4 {
                let (e, o) = d[2 * k * l..(2 * k + 2) * l].split_at_mut(l);
                let iy = (2 * ty + k) as isize - self.pad[0] as isize;
                if iy < 0 || iy >= self.h as isize {
                    e.fill(T::ZERO);
                    o.fill(T::ZERO);
                    continue;
                }
                copy_short(&mut line[lo..lo + n], &x[iy as usize * self.w..][..n]);
                for ((e, o), p) in e.iter_mut().zip(o.iter_mut()).zip(line.chunks_exact(2)) {
                    *e = p[0];
                    *o = p[1];
                }
            }
            // Bᵀ rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3 (on even and odd halves alike)
            let r = |k: usize| &d[k * 2 * l..(k + 1) * 2 * l];
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            for j in 0..2 * l {
                bt[j] = r0[j] - r2[j];
                bt[2 * l + j] = r1[j] + r2[j];
                bt[4 * l + j] = r2[j] - r1[j];
                bt[6 * l + j] = r1[j] - r3[j];
            }
            let col = base + ty * tw;
            for i in 0..4 {
                let (e, o) = bt[i * 2 * l..(i + 1) * 2 * l].split_at(l);
                // B columns on tile tx's columns a..a+3 = e[tx], o[tx], e[tx+1], o[tx+1]
                let at = |xi: usize| (xi * self.cin + c) * t + col;
                let dst = &mut v[at(4 * i)..][..tw];
                for ((d, a), b) in dst.iter_mut().zip(&e[..tw]).zip(&e[1..]) {
                    *d = *a - *b;
                }
                let dst = &mut v[at(4 * i + 1)..][..tw];
                for ((d, a), b) in dst.iter_mut().zip(&o[..tw]).zip(&e[1..]) {
                    *d = *a + *b;
                }
                let dst = &mut v[at(4 * i + 2)..][..tw];
                for ((d, a), b) in dst.iter_mut().zip(&e[1..]).zip(&o[..tw]) {
                    *d = *a - *b;
                }
                let dst = &mut v[at(4 * i + 3)..][..tw];
                for ((d, a), b) in dst.iter_mut().zip(&o[..tw]).zip(&o[1..]) {
                    *d = *a - *b;
                }
            }
        }
    }

    /// Plane `y` (`ho × wo`) of output channel `o` from `M[ξ][o][base + tile]`: `Aᵀ M A` per tile,
    /// dropping the row and column past the edge of an odd-sized plane; `rows` is scratch.
    #[inline(always)]
    fn output_transform<T: GemmElem>(
        &self,
        m: &[T],
        o: usize,
        t: usize,
        base: usize,
        y: &mut [T],
        rows: &mut [T],
    ) {
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let (s, dd) = rows[..8 * tw].split_at_mut(4 * tw);
        for ty in 0..th {
            let col = base + ty * tw;
            let mrow = |xi: usize| &m[(xi * self.cout + o) * t + col..][..tw];
            // Aᵀ down the columns: s = m0 + m1 + m2, d = m1 − m2 − m3 (for each tile column j)
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mrow(j), mrow(4 + j), mrow(8 + j), mrow(12 + j));
                let (sj, dj) = (&mut s[j * tw..][..tw], &mut dd[j * tw..][..tw]);
                for x in 0..tw {
                    sj[x] = m0[x] + m1[x] + m2[x];
                    dj[x] = m1[x] - m2[x] - m3[x];
                }
            }
            // A across: columns 2tx = r0 + r1 + r2, 2tx + 1 = r1 − r2 − r3
            for (dy, r) in [(0, &*s), (1, &*dd)] {
                let oy = 2 * ty + dy;
                if oy >= self.ho {
                    break;
                }
                let yrow = &mut y[oy * self.wo..][..self.wo];
                let (r0, r1, r2, r3) = (&r[..tw], &r[tw..2 * tw], &r[2 * tw..3 * tw], &r[3 * tw..]);
                let mut pairs = yrow.chunks_exact_mut(2);
                for (x, p) in (&mut pairs).enumerate() {
                    p[0] = r0[x] + r1[x] + r2[x];
                    p[1] = r1[x] - r2[x] - r3[x];
                }
                if let [last] = pairs.into_remainder() {
                    let x = tw - 1;
                    *last = r0[x] + r1[x] + r2[x];
                }
            }
        }
    }
}
