//! Winograd F(4×4, 3×3) (Lavin & Gray, 2016) for one f32 image of a stride-1 3×3 correlation
//! on AVX-512: each 4×4 block of outputs (a *tile*) comes from a 6×6 block of input,
//! `Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`, so a tile costs 36 multiply-adds per input × output channel
//! instead of 144.
//!
//! Per image: the image is transposed into a zero-padded `[row][column][channel]` buffer; each
//! tile's 6×6 block is transformed 16 channels at a time (`V[ξ][tile][channel]`); for each of
//! the 36 positions ξ of a transformed tile a register-tiled product over the input channels,
//! `M[ξ][tile][o] = Σ_c V[ξ][tile][c] · U[ξ][c][o]` (8 tiles × 32 output channels, the implicit
//! gemm's tile); each tile's 36 products are transformed back into its 4×4 outputs, as
//! `[position][channel]` rows like the implicit gemm's result, which its transposing store then
//! writes through the same epilogue (ReLU, mask).
//!
//! The kernel gradient is the transpose of that map (see the second `impl`): per image range the
//! products of the transformed input and the transformed cotangent are summed in the
//! transformed domain, and `Gᵀ dU G` gives the 3×3 gradient once at the end.
//!
//! The transforms only add and scale by small constants (powers of two, 1/6, 1/12, 1/24, 5): the
//! tests bound the error by 1e-5 of the sum of the products' magnitudes (measured up to 2.6e-6;
//! the implicit gemm on the same images, up to 1.9e-7). (readme_cnn's 32 → 64-channel 16×16
//! layer's forward, with the next layer's run beside it, took 3.33 ms as implicit gemms and
//! 2.29-2.32 ms this way on the benchmark Xeon, fastest runs; the README has the steps.)

use crate::implicit::{load_tile, rank1, store_tile, transpose_rows, Prefetch, Problem, Store};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Outputs per tile side.
const M: usize = 4;
/// Input per tile side (`M + 2` for a 3×3 kernel).
const A: usize = 6;
/// Positions of a transformed tile.
const XI: usize = A * A;
/// Lanes of a vector.
const LANES: usize = 16;
/// Tiles per register tile of the products.
const TILE: usize = 8;

/// `f` (a 1-D transform from `$r` to `$r2` vectors, also `$c` to `$c2`) along the columns of
/// `$d` (`[[__m512; $c]; $r]`), then along the rows of that: `[[__m512; $c2]; $r2]`. Loops, not
/// closures, so that everything inlines into the caller's AVX-512 code (a closure passed to
/// `std::array::from_fn` ran out of line, behind a function without the target feature).
macro_rules! transform_2d {
    ($d:expr, $f:ident, [$r:expr, $c:expr] -> [$r2:expr, $c2:expr]) => {{
        let d = $d;
        let mut col = [[_mm512_setzero_ps(); $r2]; $c];
        #[allow(clippy::needless_range_loop)]
        for j in 0..$c {
            let mut v = [_mm512_setzero_ps(); $r];
            for i in 0..$r {
                v[i] = d[i][j];
            }
            col[j] = $f(v);
        }
        let mut out = [[_mm512_setzero_ps(); $c2]; $r2];
        #[allow(clippy::needless_range_loop)]
        for i in 0..$r2 {
            let mut v = [_mm512_setzero_ps(); $c];
            for j in 0..$c {
                v[j] = col[j][i];
            }
            out[i] = $f(v);
        }
        out
    }};
}

/// Loads `R × C` vectors, `(i, j)` from `p + i·ri + j·rj`.
///
/// # Safety
/// The CPU has AVX-512F; those vectors are readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_block<const R: usize, const C: usize>(
    p: *const f32,
    ri: usize,
    rj: usize,
) -> [[__m512; C]; R] {
    let mut b = [[_mm512_setzero_ps(); C]; R];
    for (i, row) in b.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            *v = unsafe { _mm512_loadu_ps(p.add(i * ri + j * rj)) };
        }
    }
    b
}

/// A stride-1 3×3 correlation of one image: `c` input planes `h × w` into `o` planes `ho × wo`,
/// output `(oy, ox)` reading input `(oy + ky − pad[0], ox + kx − pad[1])`, 0 outside the image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Winograd {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ho: usize,
    wo: usize,
    pad: [usize; 2],
}

/// Input channels below which the implicit gemm stays: the products' reduction would be too
/// short to pay for the transforms.
const MIN_CHANNELS: usize = 16;

impl Winograd {
    /// The Winograd form of an implicit gemm's problem, where it has one: a 3×3 kernel with
    /// unit stride and dilation, padding 0 to 2, at least [`MIN_CHANNELS`] input channels and
    /// a 4×4 output.
    pub(crate) fn of(p: &Problem) -> Option<Winograd> {
        let fits = p.kh == 3
            && p.kw == 3
            && p.stride == [1, 1]
            && p.dilation == [1, 1]
            && p.pad.iter().all(|&q| (0..=2).contains(&q))
            && p.c >= MIN_CHANNELS
            && p.ho >= M
            && p.wo >= M
            && p.o > 0;
        fits.then_some(Winograd {
            c: p.c,
            h: p.h,
            w: p.w,
            o: p.o,
            ho: p.ho,
            wo: p.wo,
            pad: p.pad.map(|q| q as usize),
        })
    }

    /// Tile rows and columns.
    fn tiles(&self) -> [usize; 2] {
        [self.ho.div_ceil(M), self.wo.div_ceil(M)]
    }

    /// Tiles of the image.
    fn tile_count(&self) -> usize {
        let [th, tw] = self.tiles();
        th * tw
    }

    /// Every tile: its index, its first output row and column, and how many of its rows and
    /// columns lie inside the output (fewer than 4 at the far edges).
    fn tile_blocks(&self) -> impl Iterator<Item = (usize, [usize; 2], [usize; 2])> + '_ {
        let [_, tw] = self.tiles();
        (0..self.tile_count()).map(move |tile| {
            let (oy, ox) = (M * (tile / tw), M * (tile % tw));
            (tile, [oy, ox], [M.min(self.ho - oy), M.min(self.wo - ox)])
        })
    }

    /// Input channels rounded up to whole vectors (the row length of the padded input and of
    /// the transformed tiles).
    fn ldk(&self) -> usize {
        self.c.next_multiple_of(LANES)
    }

    /// Output channels rounded up to whole vectors (the row length of the transformed kernel,
    /// the products and the result).
    fn ldw(&self) -> usize {
        self.o.next_multiple_of(LANES)
    }

    /// Rows and columns of the padded input: whole tiles and their 2-pixel overlap.
    fn padded(&self) -> [usize; 2] {
        let [th, tw] = self.tiles();
        [M * th + 2, M * tw + 2]
    }

    /// Elements of the transformed kernel (`U[ξ][c][ldw]`).
    pub(crate) fn kernel_len(&self) -> usize {
        XI * self.c * self.ldw()
    }

    /// Lengths of the scratch's parts: padded input, transformed tiles, products, result rows
    /// (each whole cache lines, so that every part starts on one).
    fn parts(&self) -> [usize; 4] {
        let [hp, wp] = self.padded();
        let t = self.tile_count();
        [
            hp * wp * self.ldk(),
            XI * t * self.ldk(),
            XI * t * self.ldw(),
            (self.ho * self.wo * self.ldw()).next_multiple_of(LANES),
        ]
    }

    /// Scratch one image needs.
    pub(crate) fn scratch_len(&self) -> usize {
        self.parts().iter().sum()
    }

    /// `U[ξ][ci][oc] = (G g Gᵀ)[ξ]` for each 3×3 kernel `g` of `packed`, an implicit gemm's
    /// packed kernel (`[ci·9 + ky·3 + kx][ldw]`, from `Problem::pack` or `pack_flipped`).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn transform_kernel(&self, packed: &[f32], u: &mut [f32]) {
        let ldw = self.ldw();
        assert!(packed.len() >= 9 * self.c * ldw && u.len() >= self.kernel_len());
        let (pp, up) = (packed.as_ptr(), u.as_mut_ptr());
        for ci in 0..self.c {
            for v in (0..ldw).step_by(LANES) {
                // SAFETY: taps ci·9.. and lanes v.. of `packed`, rows (ξ, ci) of `u` (checked).
                unsafe {
                    let g = load_block::<3, 3>(pp.add(ci * 9 * ldw + v), 3 * ldw, ldw);
                    let rows = transform_2d!(g, kernel_1d, [3, 3] -> [A, A]);
                    for (i, row) in rows.into_iter().enumerate() {
                        for (j, r) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(up.add(((i * A + j) * self.c + ci) * ldw + v), r);
                        }
                    }
                }
            }
        }
    }

    /// Correlates one image (`c × h × w`) with the transformed kernel `u` into `y` (`o × ho ×
    /// wo`), as `Problem::run` does: `bias` (`ldw` values) is added to every sum and `store`
    /// says what is written; `next` is fetched into L2 meanwhile.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `store`'s pointer, if any, addresses `o × ho × wo` elements laid out
    /// as `y`, which nothing else accesses meanwhile (a mask is only read).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn run(
        &self,
        img: &[f32],
        u: &[f32],
        scratch: &mut [f32],
        (y, store): (&mut [f32], Store),
        bias: Option<&[f32]>,
        next: &[f32],
    ) {
        let (p, ldw) = (self.ho * self.wo, self.ldw());
        let [xl, vl, ml, rl] = self.parts();
        assert!(
            img.len() >= self.c * self.h * self.w
                && u.len() >= self.kernel_len()
                && scratch.len() >= xl + vl + ml + rl
                && y.len() >= self.o * p
                && bias.is_none_or(|b| b.len() >= ldw)
        );
        let (xt, rest) = scratch.split_at_mut(xl);
        let (v, rest) = rest.split_at_mut(vl);
        let (m, res) = rest.split_at_mut(ml);
        // SAFETY: the CPU has AVX-512F (the caller's contract); each part's length is checked
        // above and by the parts' own asserts.
        unsafe {
            self.pad_input(img, xt);
            self.input_transform(xt, v);
            let mask = match store {
                Store::Mask(mp) => std::slice::from_raw_parts(mp, self.o * p),
                _ => &[],
            };
            let out = &y[..self.o * p];
            let mut prefetch = Prefetch::new([mask, out, next], self.product_steps());
            self.products(v, u, m, &mut prefetch);
            self.output_transform(m, bias, res);
            transpose_rows(res, p, self.o, ldw, y, p, store);
        }
    }

    /// Writes the image into `xt` (`[hp][wp][ldk]`) at row `pad[0]`, column `pad[1]`, zero
    /// elsewhere.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pad_input(&self, img: &[f32], xt: &mut [f32]) {
        let ([hp, wp], ldk, (h, w)) = (self.padded(), self.ldk(), (self.h, self.w));
        // the whole buffer (a few tens of KB in L1/L2) is cheaper to clear than to track
        xt.fill(0.0);
        let cols = w.min(wp - self.pad[1]);
        for iy in 0..h.min(hp - self.pad[0]) {
            let at = ((iy + self.pad[0]) * wp + self.pad[1]) * ldk;
            // SAFETY: the CPU has AVX-512F (the caller's contract).
            unsafe {
                transpose_rows(
                    &img[iy * w..],
                    self.c,
                    cols,
                    h * w,
                    &mut xt[at..],
                    ldk,
                    Store::Plain,
                )
            };
        }
    }

    /// `V[ξ][tile][c] = (Bᵀ d B)[ξ]` for each tile's 6×6 block `d` of the padded input.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn input_transform(&self, xt: &[f32], v: &mut [f32]) {
        let ([hp, wp], ldk, t) = (self.padded(), self.ldk(), self.tile_count());
        assert!(xt.len() >= hp * wp * ldk && v.len() >= XI * t * ldk);
        let (xp, vp) = (xt.as_ptr(), v.as_mut_ptr());
        for (tile, [oy, ox], _) in self.tile_blocks() {
            for k in (0..ldk).step_by(LANES) {
                // SAFETY: rows oy..oy + 6 < hp and columns ox..ox + 6 < wp of the padded
                // input, row `tile` of each ξ of `v` (checked above).
                unsafe {
                    let at = xp.add((oy * wp + ox) * ldk + k);
                    let d = load_block::<A, A>(at, wp * ldk, ldk);
                    let rows = transform_2d!(d, input_1d, [A, A] -> [A, A]);
                    for (i, row) in rows.iter().enumerate() {
                        for (j, r) in row.iter().enumerate() {
                            _mm512_storeu_ps(vp.add(((i * A + j) * t + tile) * ldk + k), *r);
                        }
                    }
                }
            }
        }
    }

    /// Register-tile steps of [`Winograd::products`] (for [`Prefetch::new`]).
    fn product_steps(&self) -> usize {
        XI * self.tile_count().div_ceil(TILE) * self.ldw().div_ceil(2 * LANES)
    }

    /// `M[ξ][tile][oc] = Σ_c V[ξ][tile][c] · U[ξ][c][oc]`.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn products(&self, v: &[f32], u: &[f32], m: &mut [f32], prefetch: &mut Prefetch) {
        let (t, ldk, ldw) = (self.tile_count(), self.ldk(), self.ldw());
        assert!(v.len() >= XI * t * ldk && u.len() >= XI * self.c * ldw && m.len() >= XI * t * ldw);
        let product = Product {
            a: (v.as_ptr(), t * ldk, [ldk, 1]),
            b: (u.as_ptr(), self.c * ldw),
            out: (m.as_mut_ptr(), t * ldw),
            rows: t,
            k: self.c,
            ldw,
            add: false,
        };
        // SAFETY: the CPU has AVX-512F (the caller's contract); every ξ's blocks lie inside the
        // buffers (checked above).
        unsafe { product.run(prefetch) }
    }

    /// Each tile's outputs `Aᵀ M A` (plus the bias) into `res[(oy·wo + ox)·ldw + oc]`, the
    /// positions inside the output only.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_transform(&self, m: &[f32], bias: Option<&[f32]>, res: &mut [f32]) {
        let (t, ldw) = (self.tile_count(), self.ldw());
        assert!(m.len() >= XI * t * ldw && res.len() >= self.ho * self.wo * ldw);
        let (mp, rp) = (m.as_ptr(), res.as_mut_ptr());
        for (tile, [oy, ox], [rows, cols]) in self.tile_blocks() {
            for o in (0..ldw).step_by(LANES) {
                // SAFETY: row `tile` of each ξ of `m`, positions inside the output of `res`
                // (checked above); a bias holds ldw values.
                unsafe {
                    let b =
                        bias.map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b.as_ptr().add(o)));
                    let at = mp.add(tile * ldw + o);
                    let m = load_block::<A, A>(at, A * t * ldw, t * ldw);
                    let outs = transform_2d!(m, output_1d, [A, A] -> [M, M]);
                    for (a, row) in outs.into_iter().enumerate().take(rows) {
                        for (bx, r) in row.into_iter().enumerate().take(cols) {
                            let at = ((oy + a) * self.wo + ox + bx) * ldw + o;
                            _mm512_storeu_ps(rp.add(at), _mm512_add_ps(r, b));
                        }
                    }
                }
            }
        }
    }
}

/// The kernel gradient: the forward `Y = Aᵀ[U ⊙ V]A` is linear in `U = G g Gᵀ`, so
/// `∂L/∂U[ξ] = Σ_tiles (A ∂Y Aᵀ)[ξ] ⊙ V[ξ]` and `∂L/∂g = Gᵀ (∂L/∂U) G`: per image, 36 products
/// `dU[ξ][c][o] += Σ_tile V[ξ][tile][c] · W[ξ][tile][o]` of the transformed input and the
/// transformed cotangent `W = A ∂Y Aᵀ` (zero past the output's edge), summed over the images in
/// the transformed domain; the 3×3 gradient is taken once, at the end.
impl Winograd {
    /// Elements of the transformed sums `dU[ξ][c][ldw]` a kernel gradient adds to.
    pub(crate) fn grad_sums_len(&self) -> usize {
        self.kernel_len()
    }

    /// Scratch [`Winograd::add_kernel_grad`] needs: padded input, transformed tiles, the
    /// cotangent as `[position][channel]` rows, the transformed cotangent.
    pub(crate) fn grad_scratch_len(&self) -> usize {
        let [xl, vl, wl, _] = self.parts();
        xl + vl + (self.ho * self.wo * self.ldw()).next_multiple_of(LANES) + wl
    }

    /// Adds one image's transformed kernel-gradient products to `du` (`dU[ξ][c][ldw]`): `img`
    /// is the image (`c × h × w`), `dy` its cotangent (`o × ho × wo`); `next` (the next image's
    /// input and cotangent, say) is fetched into L2 meanwhile.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn add_kernel_grad(
        &self,
        (img, dy): (&[f32], &[f32]),
        scratch: &mut [f32],
        du: &mut [f32],
        next: [&[f32]; 2],
    ) {
        let (p, ldw) = (self.ho * self.wo, self.ldw());
        let [xl, vl, wl, _] = self.parts();
        let dl = (p * ldw).next_multiple_of(LANES);
        assert!(
            img.len() >= self.c * self.h * self.w
                && dy.len() >= self.o * p
                && scratch.len() >= xl + vl + dl + wl
                && du.len() >= self.grad_sums_len()
        );
        let (xt, rest) = scratch.split_at_mut(xl);
        let (v, rest) = rest.split_at_mut(vl);
        let (dyt, w) = rest.split_at_mut(dl);
        // SAFETY: the CPU has AVX-512F (the caller's contract); the parts' lengths are checked
        // above and by their own asserts.
        unsafe {
            self.pad_input(img, xt);
            self.input_transform(xt, v);
            transpose_rows(dy, self.o, p, p, dyt, ldw, Store::Plain);
            if self.o < ldw {
                // the padding lanes of the rows: zero sums past channel o
                for row in dyt[..p * ldw].chunks_exact_mut(ldw) {
                    row[self.o..].fill(0.0);
                }
            }
            self.cotangent_transform(dyt, w);
            let steps = XI * self.c.div_ceil(TILE) * ldw.div_ceil(2 * LANES);
            let mut prefetch = Prefetch::new([next[0], next[1], &[]], steps);
            self.grad_products(v, w, du, &mut prefetch);
        }
    }

    /// `W[ξ][tile][o] = (A ∂Y Aᵀ)[ξ]` for each tile's 4×4 block of the cotangent rows `dyt`
    /// (`[position][ldw]`), zero past the output's edge.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn cotangent_transform(&self, dyt: &[f32], w: &mut [f32]) {
        let (t, ldw) = (self.tile_count(), self.ldw());
        assert!(dyt.len() >= self.ho * self.wo * ldw && w.len() >= XI * t * ldw);
        let (dp, wp) = (dyt.as_ptr(), w.as_mut_ptr());
        for (tile, [oy, ox], [rows, cols]) in self.tile_blocks() {
            for o in (0..ldw).step_by(LANES) {
                // SAFETY: positions inside the output of `dyt`, row `tile` of each ξ of
                // `w` (checked above).
                unsafe {
                    let mut y = [[_mm512_setzero_ps(); M]; M];
                    for (a, row) in y.iter_mut().enumerate().take(rows) {
                        let at = dp.add(((oy + a) * self.wo + ox) * ldw + o);
                        for (b, v) in row.iter_mut().enumerate().take(cols) {
                            *v = _mm512_loadu_ps(at.add(b * ldw));
                        }
                    }
                    let ws = transform_2d!(y, cotangent_1d, [M, M] -> [A, A]);
                    for (i, row) in ws.into_iter().enumerate() {
                        for (j, r) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(wp.add(((i * A + j) * t + tile) * ldw + o), r);
                        }
                    }
                }
            }
        }
    }

    /// `du[ξ][c][o] += Σ_tile v[ξ][tile][c] · w[ξ][tile][o]`.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn grad_products(&self, v: &[f32], w: &[f32], du: &mut [f32], prefetch: &mut Prefetch) {
        let (t, ldk, ldw) = (self.tile_count(), self.ldk(), self.ldw());
        assert!(
            v.len() >= XI * t * ldk && w.len() >= XI * t * ldw && du.len() >= XI * self.c * ldw
        );
        let product = Product {
            a: (v.as_ptr(), t * ldk, [1, ldk]),
            b: (w.as_ptr(), t * ldw),
            out: (du.as_mut_ptr(), self.c * ldw),
            rows: self.c,
            k: t,
            ldw,
            add: true,
        };
        // SAFETY: the CPU has AVX-512F (the caller's contract); every ξ's blocks lie inside the
        // buffers (checked above).
        unsafe { product.run(prefetch) }
    }

    /// Writes the kernel gradient `dw` (`o × c × 3 × 3`) from the summed `du` (`dU[ξ][c][ldw]`):
    /// `Gᵀ dU G` for each channel pair, through `acc_t` (`9c × ldw`, the transposed gradient).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn kernel_grad_result(&self, du: &[f32], acc_t: &mut [f32], dw: &mut [f32]) {
        let (c, ldw) = (self.c, self.ldw());
        assert!(du.len() >= self.grad_sums_len() && acc_t.len() >= 9 * c * ldw);
        let (dp, ap) = (du.as_ptr(), acc_t.as_mut_ptr());
        for ci in 0..c {
            for o in (0..ldw).step_by(LANES) {
                // SAFETY: rows (ξ, ci) of `du`, taps ci·9.. of `acc_t` (checked above).
                unsafe {
                    let u = load_block::<A, A>(dp.add(ci * ldw + o), A * c * ldw, c * ldw);
                    let g = transform_2d!(u, grad_1d, [A, A] -> [3, 3]);
                    for (ky, row) in g.into_iter().enumerate() {
                        for (kx, r) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(ap.add((ci * 9 + ky * 3 + kx) * ldw + o), r);
                        }
                    }
                }
            }
        }
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { transpose_rows(acc_t, 9 * c, self.o, ldw, dw, 9 * c, Store::Plain) };
    }
}

/// One product per position ξ of a transformed tile: `out[ξ][r][o] (+)= Σ_k a(ξ, r, k) ·
/// b[ξ][k][o]`, the forward's (rows: tiles, reduction: channels) and the kernel gradient's (rows:
/// channels, reduction: tiles). Register tiles of 8 (then 4, then 1) rows × 32 (then 16) output
/// channels, one broadcast of `a` per row and one vector load of `b` per 16 channels each step.
#[cfg(target_arch = "x86_64")]
struct Product {
    /// Start, ξ stride and (row, reduction) strides of `a`.
    a: (*const f32, usize, [usize; 2]),
    /// Start and ξ stride of `b` (rows of `ldw`).
    b: (*const f32, usize),
    /// Start and ξ stride of the result (rows of `ldw`).
    out: (*mut f32, usize),
    rows: usize,
    k: usize,
    ldw: usize,
    /// Add to the result instead of writing it.
    add: bool,
}

#[cfg(target_arch = "x86_64")]
impl Product {
    /// Every ξ's product.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every element the strides address for ξ < 36, rows, reduction steps
    /// and `ldw` channels is inside its buffer.
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, prefetch: &mut Prefetch) {
        let [rs, _] = self.a.2;
        for xi in 0..XI {
            let mut r0 = 0;
            while r0 < self.rows {
                let left = self.rows - r0;
                // SAFETY: rows r0.. of ξ's blocks (the caller's contract).
                r0 += unsafe {
                    let a = self.a.0.add(xi * self.a.1 + r0 * rs);
                    let (b, out) = (
                        self.b.0.add(xi * self.b.1),
                        self.out.0.add(xi * self.out.1 + r0 * self.ldw),
                    );
                    if left >= TILE {
                        self.rows_tile::<TILE>(a, b, out, prefetch)
                    } else if left >= 4 {
                        self.rows_tile::<4>(a, b, out, prefetch)
                    } else {
                        self.rows_tile::<1>(a, b, out, prefetch)
                    }
                };
            }
        }
    }

    /// `P` rows × every output channel of one ξ's product; returns `P`.
    ///
    /// # Safety
    /// As [`Product::run`], for these rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_tile<const P: usize>(
        &self,
        a: *const f32,
        b: *const f32,
        out: *mut f32,
        prefetch: &mut Prefetch,
    ) -> usize {
        let mut o0 = 0;
        // SAFETY: output channels below ldw of the rows of the contract.
        unsafe {
            while o0 + 2 * LANES <= self.ldw {
                prefetch.step();
                self.tile::<P, 2>(a, b.add(o0), out.add(o0));
                o0 += 2 * LANES;
            }
            if o0 < self.ldw {
                prefetch.step();
                self.tile::<P, 1>(a, b.add(o0), out.add(o0));
            }
        }
        P
    }

    /// `out[p·ldw + 16v + l] (+)= Σ_k a[p·rs + k·ks] · b[k·ldw + 16v + l]`.
    ///
    /// # Safety
    /// As [`Product::rows_tile`], for `16·V` channels.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const P: usize, const V: usize>(
        &self,
        a: *const f32,
        b: *const f32,
        out: *mut f32,
    ) {
        let ([rs, ks], ldw) = (self.a.2, self.ldw);
        // SAFETY: the caller's contract.
        unsafe {
            let mut acc = if self.add {
                load_tile::<P, V>(out, ldw)
            } else {
                [[_mm512_setzero_ps(); V]; P]
            };
            // the kernel gradient's rows are adjacent: a constant stride keeps its broadcasts'
            // addresses one register plus an immediate
            if rs == 1 {
                for k in 0..self.k {
                    let s = a.add(k * ks);
                    rank1(&mut acc, b.add(k * ldw), |p| *s.add(p));
                }
            } else {
                for k in 0..self.k {
                    let s = a.add(k * ks);
                    rank1(&mut acc, b.add(k * ldw), |p| *s.add(p * rs));
                }
            }
            store_tile(&acc, out, ldw);
        }
    }
}

/// `A y` for one column of a 4×4 cotangent block: the rows of A (the columns of Aᵀ) are
/// (1, 0, 0, 0), (1, 1, 1, 1), (1, −1, 1, −1), (1, 2, 4, 8), (1, −2, 4, −8), (0, 0, 0, 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn cotangent_1d([y0, y1, y2, y3]: [__m512; M]) -> [__m512; A] {
    let s = _mm512_set1_ps;
    let (e1, o1) = (_mm512_add_ps(y0, y2), _mm512_add_ps(y1, y3));
    let (e2, o2) = (
        _mm512_fmadd_ps(y2, s(4.0), y0),
        _mm512_fmadd_ps(y3, s(8.0), _mm512_add_ps(y1, y1)),
    );
    [
        y0,
        _mm512_add_ps(e1, o1),
        _mm512_sub_ps(e1, o1),
        _mm512_add_ps(e2, o2),
        _mm512_sub_ps(e2, o2),
        y3,
    ]
}

/// `Gᵀ u` for one column of a 6×6 block of transformed sums: the rows of Gᵀ are (1/4, −1/6,
/// −1/6, 1/24, 1/24, 0), (0, −1/6, 1/6, 1/12, −1/12, 0), (0, −1/6, −1/6, 1/6, 1/6, 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn grad_1d(u: [__m512; A]) -> [__m512; 3] {
    let s = _mm512_set1_ps;
    let (p12, m12) = (_mm512_add_ps(u[1], u[2]), _mm512_sub_ps(u[2], u[1]));
    let (p34, m34) = (_mm512_add_ps(u[3], u[4]), _mm512_sub_ps(u[3], u[4]));
    [
        _mm512_fmadd_ps(
            u[0],
            s(0.25),
            _mm512_fmadd_ps(p12, s(-1.0 / 6.0), _mm512_mul_ps(p34, s(1.0 / 24.0))),
        ),
        _mm512_fmadd_ps(m12, s(1.0 / 6.0), _mm512_mul_ps(m34, s(1.0 / 12.0))),
        _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(p34, p12), s(1.0 / 6.0)), u[5]),
    ]
}

/// `G g` for one column of a 3×3 kernel: the six rows of G (1/4, 0, 0; −1/6, −1/6, −1/6;
/// −1/6, 1/6, −1/6; 1/24, 1/12, 1/6; 1/24, −1/12, 1/6; 0, 0, 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn kernel_1d([g0, g1, g2]: [__m512; 3]) -> [__m512; A] {
    let s = _mm512_set1_ps;
    let (even, odd) = (_mm512_add_ps(g0, g2), g1);
    // (g0 + g2)/24·... : rows 3, 4 are g0/24 + g2/6 ± g1/12
    let r34 = _mm512_fmadd_ps(g0, s(1.0 / 24.0), _mm512_mul_ps(g2, s(1.0 / 6.0)));
    [
        _mm512_mul_ps(g0, s(0.25)),
        _mm512_mul_ps(_mm512_add_ps(even, odd), s(-1.0 / 6.0)),
        _mm512_mul_ps(_mm512_sub_ps(even, odd), s(-1.0 / 6.0)),
        _mm512_fmadd_ps(odd, s(1.0 / 12.0), r34),
        _mm512_fnmadd_ps(odd, s(1.0 / 12.0), r34),
        g2,
    ]
}

/// `Bᵀ d` for one column of a 6×6 input block: the rows of Bᵀ are (4, 0, −5, 0, 1, 0),
/// (0, −4, −4, 1, 1, 0), (0, 4, −4, −1, 1, 0), (0, −2, −1, 2, 1, 0), (0, 2, −1, −2, 1, 0),
/// (0, 4, 0, −5, 0, 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn input_1d(d: [__m512; A]) -> [__m512; A] {
    let s = _mm512_set1_ps;
    let (d34p, d34m) = (_mm512_add_ps(d[3], d[4]), _mm512_sub_ps(d[4], d[3]));
    let (d12p, d12m) = (_mm512_add_ps(d[1], d[2]), _mm512_sub_ps(d[1], d[2]));
    let (d42, d31) = (_mm512_sub_ps(d[4], d[2]), _mm512_sub_ps(d[3], d[1]));
    [
        _mm512_fmadd_ps(d[0], s(4.0), _mm512_fnmadd_ps(d[2], s(5.0), d[4])),
        _mm512_fnmadd_ps(d12p, s(4.0), d34p),
        _mm512_fmadd_ps(d12m, s(4.0), d34m),
        _mm512_fmadd_ps(d31, s(2.0), d42),
        _mm512_fnmadd_ps(d31, s(2.0), d42),
        _mm512_fmadd_ps(d[1], s(4.0), _mm512_fnmadd_ps(d[3], s(5.0), d[5])),
    ]
}

/// `Aᵀ m` for one column of a 6×6 product block: the rows of Aᵀ are (1, 1, 1, 1, 1, 0),
/// (0, 1, −1, 2, −2, 0), (0, 1, 1, 4, 4, 0), (0, 1, −1, 8, −8, 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn output_1d(m: [__m512; A]) -> [__m512; M] {
    let s = _mm512_set1_ps;
    let (a, b) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (c, d) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], a), c),
        _mm512_fmadd_ps(d, s(2.0), b),
        _mm512_fmadd_ps(c, s(4.0), a),
        _mm512_add_ps(_mm512_fmadd_ps(d, s(8.0), b), m[5]),
    ]
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Values in [-1, 1) from a fixed xorshift sequence.
    fn values(seed: &mut u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 17;
                *seed ^= *seed << 5;
                (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A stride-1 3×3 problem of `c` → `o` channels on `h × w` with `pad`.
    fn problem(c: usize, o: usize, h: usize, w: usize, pad: [usize; 2]) -> Problem {
        Problem {
            c,
            h,
            w,
            o,
            kh: 3,
            kw: 3,
            ho: h + 2 * pad[0] - 2,
            wo: w + 2 * pad[1] - 2,
            stride: [1, 1],
            dilation: [1, 1],
            pad: pad.map(|q| q as i64),
        }
    }

    /// The kernel gradient summed in the transformed domain over two images matches
    /// `dw[o][c][ky][kx] = Σ dy[o][oy][ox] · x[c][oy + ky − pad][ox + kx − pad]` in f64, with
    /// partial tiles and channel counts that are not whole vectors.
    #[test]
    fn kernel_gradient_matches_direct_sums() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut seed = 0x1234_5678_u32;
        for &(c, o, h, w, pad) in &[
            (32, 64, 16, 16, [1, 1]),
            (17, 5, 9, 7, [0, 2]),
            (20, 40, 11, 13, [2, 1]),
        ] {
            let p = problem(c, o, h, w, pad);
            let (ho, wo) = (p.ho, p.wo);
            let wg = Winograd::of(&p).expect("a Winograd problem");
            let n = 2;
            let x = values(&mut seed, n * c * h * w);
            let dy = values(&mut seed, n * o * ho * wo);
            let mut du = crate::arena::Block::new(wg.grad_sums_len() * 4);
            let mut scratch = crate::arena::Block::new(wg.grad_scratch_len() * 4);
            let mut acc_t = crate::arena::Block::new(9 * c * wg.ldw() * 4);
            let mut dw = vec![f32::NAN; o * c * 9];
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe {
                for i in 0..n {
                    let img = &x[i * c * h * w..][..c * h * w];
                    let dyi = &dy[i * o * ho * wo..][..o * ho * wo];
                    wg.add_kernel_grad(
                        (img, dyi),
                        scratch.as_mut_slice(),
                        du.as_mut_slice(),
                        [&[], &[]],
                    );
                }
                wg.kernel_grad_result(du.as_slice(), acc_t.as_mut_slice(), &mut dw);
            }
            let mut worst = 0.0f64;
            for oc in 0..o {
                for ci in 0..c {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (mut want, mut mag) = (0.0f64, 0.0f64);
                            for i in 0..n {
                                for oy in 0..ho {
                                    for ox in 0..wo {
                                        let iy = (oy + ky) as i64 - pad[0] as i64;
                                        let ix = (ox + kx) as i64 - pad[1] as i64;
                                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                            continue;
                                        }
                                        let xv =
                                            x[((i * c + ci) * h + iy as usize) * w + ix as usize];
                                        let d = dy[((i * o + oc) * ho + oy) * wo + ox];
                                        want += xv as f64 * d as f64;
                                        mag += (xv as f64 * d as f64).abs();
                                    }
                                }
                            }
                            let got = dw[((oc * c + ci) * 3 + ky) * 3 + kx] as f64;
                            worst = worst.max((got - want).abs() / mag.max(1.0));
                            assert!(
                                (got - want).abs() <= 1e-5 * mag.max(1.0),
                                "c{c} o{o} {h}×{w} pad{pad:?}: dw[{oc}, {ci}, {ky}, {kx}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
            eprintln!(
                "kernel gradient c{c} o{o} {h}×{w} pad{pad:?}: worst error / magnitude {worst:e}"
            );
        }
    }

    /// The transforms compute the correlation: `Aᵀ[(G g) ⊙ (Bᵀ d)]` is `Σ_k d[i + k] g[k]` in
    /// each lane (1-D; the 2-D form applies them along both axes), and a whole image against
    /// direct summation in f64, with padding 0-2, partial tiles, channel counts that are not
    /// whole vectors, a bias and each store.
    #[test]
    fn matches_direct_correlation() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        // deterministic values in [-1, 1)
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        for &(c, o, h, w, pad) in &[
            (16, 16, 4, 4, [1, 1]),
            (32, 64, 16, 16, [1, 1]),
            (64, 32, 16, 16, [1, 1]),
            (17, 5, 9, 7, [0, 2]),
            (20, 40, 11, 13, [2, 0]),
        ] {
            let (ho, wo) = (h + 2 * pad[0] - 2, w + 2 * pad[1] - 2);
            let p = Problem {
                c,
                h,
                w,
                o,
                kh: 3,
                kw: 3,
                ho,
                wo,
                stride: [1, 1],
                dilation: [1, 1],
                pad: pad.map(|q| q as i64),
            };
            let wg = Winograd::of(&p).expect("a Winograd problem");
            let img: Vec<f32> = (0..c * h * w).map(|_| next()).collect();
            let k: Vec<f32> = (0..o * c * 9).map(|_| next()).collect();
            let bias: Vec<f32> = (0..wg.ldw())
                .map(|i| if i < o { next() } else { 0.0 })
                .collect();
            let mut packed = crate::arena::Block::new(p.packed_len() * 4);
            p.pack(&k, packed.as_mut_slice());
            let mut u = crate::arena::Block::new(wg.kernel_len() * 4);
            let mut scratch = crate::arena::Block::new(wg.scratch_len() * 4);
            let mut y = vec![f32::NAN; o * ho * wo];
            let mut relu = vec![f32::NAN; o * ho * wo];
            // SAFETY: the CPU has AVX-512F (checked); `relu` is laid out as `y`.
            unsafe {
                wg.transform_kernel(packed.as_slice(), u.as_mut_slice());
                let store = Store::AlsoRelu(relu.as_mut_ptr(), true);
                wg.run(
                    &img,
                    u.as_slice(),
                    scratch.as_mut_slice(),
                    (&mut y, store),
                    Some(&bias),
                    &[],
                );
            }
            // the implicit gemm on the same image, for the comparison printed below
            let mut direct = vec![f32::NAN; o * ho * wo];
            let mut iscratch = crate::arena::Block::new(p.scratch_len() * 4);
            // SAFETY: the CPU has AVX-512F (checked); the problem is not empty.
            unsafe {
                let kernel = (packed.as_slice(), &p.tap_offsets()[..]);
                let out = (&mut direct[..], Store::Plain);
                p.run(&img, kernel, iscratch.as_mut_slice(), out, Some(&bias), &[]);
            }
            let (mut worst, mut worst_direct) = (0.0f64, 0.0f64);
            for oc in 0..o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut want = bias[oc] as f64;
                        let mut mag = bias[oc].abs() as f64;
                        for ci in 0..c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (oy + ky, ox + kx);
                                    let (iy, ix) =
                                        (iy as i64 - pad[0] as i64, ix as i64 - pad[1] as i64);
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    let x = img[(ci * h + iy as usize) * w + ix as usize] as f64;
                                    let g = k[((oc * c + ci) * 3 + ky) * 3 + kx] as f64;
                                    want += x * g;
                                    mag += (x * g).abs();
                                }
                            }
                        }
                        let at = (oc * ho + oy) * wo + ox;
                        let got = y[at] as f64;
                        // a few roundings of the sum's magnitude: these transforms measured up
                        // to 2.6e-6·mag, the implicit gemm's direct sums up to 1.9e-7·mag
                        worst = worst.max((got - want).abs() / mag.max(1.0));
                        let d = (direct[at] as f64 - want).abs() / mag.max(1.0);
                        worst_direct = worst_direct.max(d);
                        assert!(
                            (got - want).abs() <= 1e-5 * mag.max(1.0),
                            "c{c} o{o} {h}×{w} pad{pad:?}: y[{oc}, {oy}, {ox}] = {got}, want {want}"
                        );
                        assert_eq!(relu[at], got.max(0.0) as f32);
                    }
                }
            }
            eprintln!(
                "c{c} o{o} {h}×{w} pad{pad:?}: worst error / magnitude {worst:e} (implicit gemm {worst_direct:e})"
            );
        }
    }
}
