//! Implicit-GEMM convolution of one f32 image on AVX-512: `y = W · im2col(x)` without the
//! unfolded matrix.
//!
//! The image is copied once into a *source*: every row zero-padded and split into column phases
//! by the column stride (`src[(ci·hp + r)·rl + (q mod s)·pw + q div s]` is padded column `q` of
//! padded row `r`), so the inputs that consecutive output columns read for one kernel tap sit at
//! consecutive addresses whatever the stride, and every tap is one offset (`Problem::tap_offsets`).
//! A tile of `P` consecutive output positions of one row × `16·V` output channels then sums over
//! the taps the broadcast input at `position + offset` times a vector of packed weights: `P·V`
//! accumulators in registers, `V` weight loads and `P` broadcasts per `P·V` multiply-adds, with
//! no packing at all. Output channels run along the vector lanes, so a tile writes
//! `[position][channel]`; the image's result is transposed into `[channel][position]` at the end.
//!
//! On the benchmark's layers (32-64 channels, 8-16 output columns) this replaces im2col + gemm,
//! whose unfolding copy and packing cost as much as a third of the product. The tile alone ran
//! at the build machine's peak multiply-add rate (113-115 GFLOP/s a core) and at 135-165 of the
//! benchmark Xeon's 175 on one core. In readme_cnn's step on that Xeon (2 cores, fastest runs)
//! the three layers that ran as im2col + gemm went from 7.4 to 5.5-5.6 ms (forward), 7.4-7.5 to
//! 5.8-6.2 (kernel gradient) and 6.3 to 5.6 ms (input gradient), the step's sum from 25.4 to
//! 21.3-21.8 ms.
//!
//! An input gradient of a unit-stride convolution is the same computation on the cotangent with
//! the kernel flipped and its channel axes swapped (`Problem::pack_flipped`); a kernel gradient
//! swaps the roles: tiles of taps × channels summed over the positions
//! (`Problem::add_kernel_grad`); a strided input gradient splits into phases
//! ([`PhasedInputGrad`]).

use crate::arena::Block;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Output positions one tile computes (then 4 and 1 for a row's tail).
const TILE: usize = 8;
/// Output channels per vector.
const LANES: usize = 16;
/// About this many taps per pass of the forward tiles over an image (8 channels of a 3×3
/// kernel).
const CHUNK_TAPS: usize = 72;

/// One image's correlation: `c` input channels of `h × w`, `o` output channels of `ho × wo`, a
/// `kh × kw` kernel with `stride`, `dilation` and low padding `pad` (negative crops).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) stride: [usize; 2],
    pub(crate) dilation: [usize; 2],
    pub(crate) pad: [i64; 2],
}

/// One chunk of an input row, for [`Problem::fill_by_chunks`]: the `16·sw` columns from `at`
/// (lanes `load` of each of its vectors inside the row), and for each column parity `k < sw`
/// the vector of columns `at + k + sw·l` stored at `put[k].0` (relative to the source row;
/// may point before it) in lanes `put[k].1`.
#[derive(Clone, Copy)]
struct Chunk {
    at: usize,
    load: [u16; 2],
    put: [(isize, u16); 2],
}

/// Whether `v` starts on a cache line.
#[cfg(target_arch = "x86_64")]
fn aligned(v: &[f32]) -> bool {
    (v.as_ptr() as usize).is_multiple_of(64)
}

/// `⌈a / b⌉` for `b > 0` and any sign of `a`.
fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

thread_local! {
    /// Per-thread sources kept by layout (most recently used last): the copies write only the
    /// lanes that hold input, so a kept source's padding is still zero from its first use and
    /// is not written again. (Zeroing every row before the copy took a third of the copies'
    /// time in readme_cnn's step on the build machine.)
    static SOURCES: RefCell<Vec<(SourceKey, Block)>> = const { RefCell::new(Vec::new()) };
}

/// What fixes a source's layout: `c`, `h`, `w`, padded rows, phase width, row length, column
/// stride and the two paddings.
type SourceKey = [i64; 9];

/// Sources larger than this (elements) are not kept: their copy is cheap beside their product.
const MAX_KEPT_SOURCE: usize = 1 << 18;
/// Sources kept per thread.
const KEPT_SOURCES: usize = 16;

impl Problem {
    /// Runs `f(source, zeroed)` with a buffer for this problem's source: a per-thread one kept
    /// for its layout (`zeroed`: everything outside the input's lanes is 0), or, for a large
    /// source, `fallback` (which the copy must zero).
    fn with_source<R>(&self, fallback: &mut [f32], f: impl FnOnce(&mut [f32], bool) -> R) -> R {
        let len = self.c * self.hp() * self.rl();
        if len > MAX_KEPT_SOURCE {
            return f(&mut fallback[..len], false);
        }
        let (c, h, w, sw) = (
            self.c as i64,
            self.h as i64,
            self.w as i64,
            self.stride[1] as i64,
        );
        let (hp, pw, rl) = (self.hp() as i64, self.pw() as i64, self.rl() as i64);
        let key: SourceKey = [c, h, w, hp, pw, rl, sw, self.pad[0], self.pad[1]];
        let kept = SOURCES.with(|s| {
            let mut s = s.borrow_mut();
            let at = s.iter().position(|e| e.0 == key)?;
            Some(s.remove(at).1)
        });
        let mut buf = kept.unwrap_or_else(|| Block::new(len * 4));
        let r = f(buf.as_mut_slice(), true);
        SOURCES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() >= KEPT_SOURCES {
                s.remove(0);
            }
            s.push((key, buf));
        });
        r
    }

    /// Kernel taps (`c × kh × kw`): the length of the sum per output.
    pub(crate) fn taps(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output channels rounded up to whole vectors: the packed weights' row length and the
    /// tiles' result row length.
    pub(crate) fn ldw(&self) -> usize {
        self.o.next_multiple_of(LANES)
    }

    /// Padded source rows.
    fn hp(&self) -> usize {
        (self.ho - 1) * self.stride[0] + (self.kh - 1) * self.dilation[0] + 1
    }

    /// Width of one column phase of a source row.
    fn pw(&self) -> usize {
        self.wo + (self.kw - 1) * self.dilation[1] / self.stride[1]
    }

    /// Length of one source row (all its phases).
    fn rl(&self) -> usize {
        self.stride[1] * self.pw()
    }

    /// Packed weights' length (`taps × ldw`).
    pub(crate) fn packed_len(&self) -> usize {
        self.taps() * self.ldw()
    }

    /// Scratch one image needs: the source, then the tiles' `[position][channel]` result.
    pub(crate) fn scratch_len(&self) -> usize {
        self.source_len() + self.ho * self.wo * self.ldw()
    }

    /// The scratch a large source takes ahead of the tiles' results: whole cache lines, so that
    /// the results (whose rows are whole vectors) start on one in the aligned scratch.
    fn source_len(&self) -> usize {
        (self.c * self.hp() * self.rl()).next_multiple_of(LANES)
    }

    /// Whether the problem has anything to compute (an empty one must not be run).
    pub(crate) fn is_empty(&self) -> bool {
        self.ho == 0 || self.wo == 0 || self.o == 0 || self.taps() == 0
    }

    /// The source offset of each tap `(ci, ky, kx)` relative to its output position's.
    pub(crate) fn tap_offsets(&self) -> Vec<u32> {
        let (hp, pw, rl) = (self.hp(), self.pw(), self.rl());
        let ([dh, dw], sw) = (self.dilation, self.stride[1]);
        let mut offs = Vec::with_capacity(self.taps());
        for ci in 0..self.c {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let q = kx * dw;
                    let off = (ci * hp + ky * dh) * rl + (q % sw) * pw + q / sw;
                    offs.push(u32::try_from(off).expect("a convolution source under 2^32"));
                }
            }
        }
        offs
    }

    /// Packs an OIHW kernel (`o × c × kh × kw`) as `[tap][ldw]`, zero past channel `o`.
    pub(crate) fn pack(&self, w: &[f32], packed: &mut [f32]) {
        let (taps, ldw) = (self.taps(), self.ldw());
        for (t, row) in packed.chunks_exact_mut(ldw).take(taps).enumerate() {
            for (oc, v) in row.iter_mut().enumerate() {
                *v = if oc < self.o { w[oc * taps + t] } else { 0.0 };
            }
        }
    }

    /// Packs the kernel of an input gradient: `w` is the forward kernel (`c_fwd × o_fwd × kh ×
    /// kw`, where this problem's `c` is `c_fwd`'s output channels and `o` its input channels),
    /// flipped in both spatial axes with its channel axes swapped.
    pub(crate) fn pack_flipped(&self, w: &[f32], packed: &mut [f32]) {
        let (kh, kw, ldw) = (self.kh, self.kw, self.ldw());
        let mut rows = packed.chunks_exact_mut(ldw);
        for oc in 0..self.c {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = rows.next().expect("packed holds taps × ldw");
                    for (ci, v) in row.iter_mut().enumerate() {
                        *v = if ci < self.o {
                            w[((oc * self.o + ci) * kh + kh - 1 - ky) * kw + kw - 1 - kx]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }

    /// The chunks every input row is copied in at column stride 1 or 2 (see
    /// [`Problem::fill_by_chunks`]): lane `l` of parity `k`'s vector is input column `ix = at +
    /// k + sw·l`, padded column `q = ix + pl`, phase column `q div sw` of phase `q mod sw`; it
    /// is stored if `ix` is inside the row and the phase column inside the phase.
    fn chunks(&self) -> Vec<Chunk> {
        let (sw, pw, w, pl) = (self.stride[1], self.pw() as i64, self.w, self.pad[1]);
        debug_assert!(sw <= 2);
        (0..w)
            .step_by(LANES * sw)
            .map(|at| {
                let n = (w - at).min(LANES * sw);
                let put = |k: usize| {
                    let q0 = (at + k) as i64 + pl;
                    let (phase, j0) = (q0.rem_euclid(sw as i64), q0.div_euclid(sw as i64));
                    let lanes = (0..LANES).fold(0u16, |m, l| {
                        let inside = k + sw * l < n && (0..pw).contains(&(j0 + l as i64));
                        m | ((inside as u16) << l)
                    });
                    ((phase * pw + j0) as isize, lanes)
                };
                Chunk {
                    at,
                    load: [mask(n), mask(n.saturating_sub(LANES))],
                    put: [put(0), if sw == 2 { put(1) } else { (0, 0) }],
                }
            })
            .collect()
    }

    /// [`Problem::fill_source`] at column stride 1 or 2: each source row zeroed by whole
    /// vectors, then each chunk of its input row loaded once, split into its column parities
    /// (one permute each at stride 2) and stored into its phases. (Build machine, readme_cnn:
    /// the step's source copies took 2.7 ms of thread time as one permute of two loads per
    /// vector of the source, as much with the input in cache; one image of the 32-channel
    /// stride-2 layer, in cache, 12.0 µs that way against 5.8 µs this way.)
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_by_chunks(&self, img: &[f32], src: &mut [f32], zeroed: bool) {
        let (hp, rl, w, sw) = (self.hp(), self.rl(), self.w, self.stride[1]);
        let pt = self.pad[0];
        assert!(img.len() >= self.c * self.h * w && src.len() >= self.c * hp * rl && sw <= 2);
        let chunks = self.chunks();
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let zero = _mm512_setzero_ps();
        for (ci, plane) in src.chunks_exact_mut(hp * rl).take(self.c).enumerate() {
            for (r, row) in plane.chunks_exact_mut(rl).enumerate() {
                let rp = row.as_mut_ptr();
                if !zeroed {
                    for k in (0..rl).step_by(LANES) {
                        // SAFETY: lanes k..rl of the row.
                        unsafe { _mm512_mask_storeu_ps(rp.add(k), mask(rl - k), zero) };
                    }
                }
                let iy = r as i64 - pt;
                if !(0..self.h as i64).contains(&iy) {
                    continue;
                }
                let xr = img[(ci * self.h + iy as usize) * w..].as_ptr();
                for ch in &chunks {
                    // SAFETY: the loads touch only lanes of input columns in 0..w, the stores
                    // only lanes inside the row's phases (`Problem::chunks`).
                    unsafe {
                        let a = _mm512_maskz_loadu_ps(ch.load[0], xr.add(ch.at));
                        let [(d0, m0), (d1, m1)] = ch.put;
                        if sw == 1 {
                            _mm512_mask_storeu_ps(rp.wrapping_offset(d0), m0, a);
                            continue;
                        }
                        let b = _mm512_maskz_loadu_ps(ch.load[1], xr.wrapping_add(ch.at + LANES));
                        let (e, o) = (
                            _mm512_permutex2var_ps(a, even, b),
                            _mm512_permutex2var_ps(a, odd, b),
                        );
                        _mm512_mask_storeu_ps(rp.wrapping_offset(d0), m0, e);
                        _mm512_mask_storeu_ps(rp.wrapping_offset(d1), m1, o);
                    }
                }
            }
        }
    }

    /// Copies one image (`c × h × w`) into the padded, phase-split source. With column stride 1
    /// or 2 each input row is a few whole-vector chunks planned once ([`Problem::chunks`]):
    /// per-row work dominates for the benchmark's 8-32-column images. Otherwise each phase's
    /// span of input columns is worked out once and a row is a strided copy between zeroed
    /// ends. `zeroed`: every element of `src` outside the input's lanes is already 0 (a kept
    /// source, see [`Problem::with_source`]), so only the input's lanes are written.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_source(&self, img: &[f32], src: &mut [f32], zeroed: bool) {
        let (hp, pw, rl) = (self.hp(), self.pw(), self.rl());
        let (h, w, sw) = (self.h as i64, self.w, self.stride[1]);
        let [pt, pl] = self.pad;
        // phase column j is input column j·sw + ph − pl: columns lo..hi read input from ix
        let span = |ph: usize| {
            let at = ph as i64 - pl;
            let lo = ceil_div(-at, sw as i64).clamp(0, pw as i64) as usize;
            let hi = ceil_div(w as i64 - at, sw as i64).clamp(lo as i64, pw as i64) as usize;
            (lo, hi, (lo as i64 * sw as i64 + at).max(0) as usize)
        };
        if sw <= 2 {
            // SAFETY: the CPU has AVX-512F (the caller's contract).
            return unsafe { self.fill_by_chunks(img, src, zeroed) };
        }
        let mut spans = [(0, 0, 0); 4];
        for (ph, sp) in spans.iter_mut().enumerate().take(sw) {
            *sp = span(ph);
        }
        for (ci, plane) in src.chunks_exact_mut(hp * rl).take(self.c).enumerate() {
            for (r, row) in plane.chunks_exact_mut(rl).enumerate() {
                let iy = r as i64 - pt;
                if !(0..h).contains(&iy) {
                    row.fill(0.0);
                    continue;
                }
                let xr = &img[(ci * self.h + iy as usize) * w..][..w];
                for (ph, dst) in row.chunks_exact_mut(pw).enumerate() {
                    let (lo, hi, ix) = if ph < spans.len() {
                        spans[ph]
                    } else {
                        span(ph)
                    };
                    for v in &mut dst[..lo] {
                        *v = 0.0;
                    }
                    for v in &mut dst[hi..] {
                        *v = 0.0;
                    }
                    if lo < hi {
                        // SAFETY: the CPU has AVX-512F (the caller's contract).
                        unsafe { strided_copy(&xr[ix..], sw, &mut dst[lo..hi]) };
                    }
                }
            }
        }
    }

    /// Convolves one image into `y` (`o × ho × wo`): the source and the tiles' result live in
    /// `scratch` ([`Problem::scratch_len`]), `(packed, offs)` come from [`Problem::pack`] (or
    /// `pack_flipped`) and [`Problem::tap_offsets`]. With `bias` (`ldw` values) every sum starts
    /// from its channel's bias; `store` says what is written besides or instead of the sums (the
    /// epilogue, while the block is in registers). `next` (the next image, say) is fetched into
    /// L2 meanwhile.
    ///
    /// # Safety
    /// The CPU has AVX-512F and the problem is not empty; `store`'s pointer, if any, addresses
    /// `o × ho × wo` elements laid out as `y`, which nothing else accesses meanwhile (a mask is
    /// only read).
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn run(
        &self,
        img: &[f32],
        (packed, offs): (&[f32], &[u32]),
        scratch: &mut [f32],
        (y, store): (&mut [f32], Store),
        bias: Option<&[f32]>,
        next: &[f32],
    ) {
        let (p, ldw) = (self.ho * self.wo, self.ldw());
        assert!(bias.is_none_or(|b| b.len() >= ldw));
        let init = bias.map_or(std::ptr::null(), |b| b.as_ptr());
        let (fallback, res) = scratch.split_at_mut(self.source_len());
        assert!(res.len() >= p * ldw && y.len() >= self.o * p && packed.len() >= self.packed_len());
        // whole-vector loads and stores that span two cache lines cost Intel cores twice
        debug_assert!(
            aligned(res) && aligned(packed),
            "tile operands off cache lines"
        );
        self.with_source(fallback, |src, zeroed| {
            // every tap's reads stay inside the source: the last output position plus the largest
            // offset is the last element of the last channel's last row
            assert!(offs.iter().all(|&t| t as usize
                + (self.ho - 1) * self.stride[0] * self.rl()
                + self.wo
                - 1
                < src.len()));
            // SAFETY: the CPU has AVX-512F (the caller's contract); reads and writes stay within the
            // buffers checked above.
            unsafe {
                self.fill_source(img, src, zeroed);
                let (sp, rp) = (src.as_ptr(), res.as_mut_ptr());
                let grid = self.grid();
                let mask = match store {
                    Store::Mask(m) => std::slice::from_raw_parts(m, self.o * p),
                    _ => &[],
                };
                // the result block too: its lines are then in L2 when the store writes them, instead
                // of being read from memory by each store's miss
                let out = &y[..self.o * p];
                let mut prefetch = Prefetch::new([mask, out, next], grid.steps(offs.len()));
                grid.tiles(sp, offs, packed.as_ptr(), ldw, (rp, init), &mut prefetch);
                transpose_rows(res, p, self.o, ldw, y, p, store);
            }
        })
    }

    /// The image's output positions, the taps in chunks of whole input channels (about
    /// `CHUNK_TAPS`): each chunk runs over the whole image before the next adds to its sums, so
    /// that a chunk's weights and source rows stay in L1. (On the benchmark Xeon the 64-channel
    /// stride-2 layer's product took 1.0 ms in chunks of 8 channels against 1.9 ms over all 576
    /// taps at once; the AMD build machine, with half the multiply-add rate, ran both at its
    /// peak.)
    fn grid(&self) -> Grid {
        let per_channel = self.kh * self.kw;
        Grid {
            hw: [self.ho, self.wo],
            row_step: self.stride[0] * self.rl(),
            chunk: (CHUNK_TAPS / per_channel).max(1) * per_channel,
            out_step: [self.wo * self.ldw(), self.ldw()],
        }
    }
}

/// The output positions of an implicit gemm: `hw[0] × hw[1]`, position `(oy, ox)` at source
/// offset `oy·row_step + ox` and its result row (of `ldw` channels) at `oy·out_step[0] +
/// ox·out_step[1]`, the taps summed in chunks of `chunk`.
struct Grid {
    hw: [usize; 2],
    row_step: usize,
    chunk: usize,
    out_step: [usize; 2],
}

/// Memory a tile loop asks the cache to fetch into L2 a few lines per tile, for use after the
/// loop (the next image's operand, the mask its epilogue reads, the block its results go to):
/// the fetches overlap the multiply-adds instead of stalling the first reads from main memory
/// (and the stores' misses). Issuing them all at once would fill the core's miss buffers and
/// stall the tiles. (Benchmark Xeon, readme_cnn, sum of each step's fastest run over five
/// alternating rounds: 18.8-19.2 ms with the result blocks fetched, 19.0-19.8 without.)
pub(crate) struct Prefetch {
    regions: [(*const u8, usize); 3],
    /// The next line: region and byte offset.
    at: (usize, usize),
    per_tile: usize,
}

/// Bytes per cache line.
const LINE: usize = 64;

impl Prefetch {
    /// Fetches `regions` (slices of any element type; empty ones are skipped) over about `tiles`
    /// tile steps.
    pub(crate) fn new(regions: [&[f32]; 3], tiles: usize) -> Prefetch {
        let lines: usize = regions.iter().map(|r| (r.len() * 4).div_ceil(LINE)).sum();
        Prefetch {
            regions: regions.map(|r| (r.as_ptr() as *const u8, r.len() * 4)),
            at: (0, 0),
            per_tile: lines.div_ceil(tiles.max(1)),
        }
    }

    /// Issues the next few line fetches.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn step(&mut self) {
        for _ in 0..self.per_tile {
            let (mut r, mut off) = self.at;
            while r < 3 && off >= self.regions[r].1 {
                (r, off) = (r + 1, 0);
            }
            if r == 3 {
                self.at = (3, 0);
                return;
            }
            // SAFETY: a prefetch never faults; the address is inside region r anyway.
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(self.regions[r].0.wrapping_add(off) as *const i8)
            };
            self.at = (r, off + LINE);
        }
    }
}

impl Grid {
    /// Tile steps of [`Grid::tiles`] over `taps` taps (an estimate for [`Prefetch::new`]).
    fn steps(&self, taps: usize) -> usize {
        taps.div_ceil(self.chunk) * self.hw[0] * self.hw[1].div_ceil(TILE)
    }

    /// Every tile: rows of output positions by `TILE`, then 4 and 1, one chunk of taps at a time
    /// (see [`Problem::grid`]); `res` gets each position's `ldw` sums where `out_step` puts
    /// them, each started from `init` (null, or `ldw` values such as a bias). Each tile step
    /// also issues `prefetch`'s next fetches.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every position plus every offset is inside the source, `packed`
    /// holds `offs.len() × ldw` elements and `res` every position's `ldw` (`out_step[1] ≥
    /// ldw`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles(
        &self,
        src: *const f32,
        offs: &[u32],
        packed: *const f32,
        ldw: usize,
        (res, init): (*mut f32, *const f32),
        prefetch: &mut Prefetch,
    ) {
        let [ho, wo] = self.hw;
        for (k, offs) in offs.chunks(self.chunk).enumerate() {
            let (add, packed) = (k > 0, packed.wrapping_add(k * self.chunk * ldw));
            for oy in 0..ho {
                let mut ox = 0;
                while ox < wo {
                    // SAFETY: position (oy, ox) and its result row are inside the buffers (the
                    // caller's contract).
                    let (base, out) = unsafe {
                        (
                            src.add(oy * self.row_step + ox),
                            res.add(oy * self.out_step[0] + ox * self.out_step[1]),
                        )
                    };
                    let left = wo - ox;
                    prefetch.step();
                    let args = TileArgs {
                        base,
                        offs,
                        packed,
                        ldw,
                        out,
                        ldo: self.out_step[1],
                        add,
                        init,
                    };
                    // SAFETY: as above, for the positions each arm covers.
                    ox += unsafe {
                        if left >= TILE {
                            channels::<TILE>(args)
                        } else if left >= 4 {
                            channels::<4>(args)
                        } else {
                            channels::<1>(args)
                        }
                    };
                }
            }
        }
    }
}

impl Problem {
    /// Adds one image's kernel gradient to `acc_t` (`taps × ldw`, the transposed kernel
    /// gradient `dWᵀ[tap][channel]`): `dy` is the image's cotangent (`o × ho × wo`), `scratch`
    /// ([`Problem::scratch_len`]) takes the source and the transposed cotangent. Tiles of 8 taps
    /// × 32 channels sum over the image's positions, one vector load of the transposed
    /// cotangent per 16 channels and one broadcast per tap each position. `next` (the next
    /// image's input and cotangent, say; either may be empty) is fetched into L2 meanwhile.
    ///
    /// # Safety
    /// The CPU has AVX-512F and the problem is not empty.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn add_kernel_grad(
        &self,
        (img, dy): (&[f32], &[f32]),
        offs: &[u32],
        scratch: &mut [f32],
        acc_t: &mut [f32],
        next: [&[f32]; 2],
    ) {
        let (p, ldw, taps) = (self.ho * self.wo, self.ldw(), self.taps());
        let (fallback, dyt) = scratch.split_at_mut(self.source_len());
        assert!(dyt.len() >= p * ldw && dy.len() >= self.o * p && acc_t.len() >= taps * ldw);
        self.with_source(fallback, |src, zeroed| {
            assert!(
                offs.len() == taps
                    && offs.iter().all(|&t| t as usize
                        + (self.ho - 1) * self.stride[0] * self.rl()
                        + self.wo
                        - 1
                        < src.len())
            );
            // SAFETY: the CPU has AVX-512F (the caller's contract); reads and writes stay within the
            // buffers checked above.
            unsafe {
                self.fill_source(img, src, zeroed);
                transpose_rows(dy, self.o, p, p, dyt, ldw, Store::Plain);
                let dyt = &mut dyt[..p * ldw];
                if self.o < ldw {
                    // the transposed cotangent's rows have `ldw` elements: zero the padding lanes
                    for row in dyt.chunks_exact_mut(ldw) {
                        row[self.o..].fill(0.0);
                    }
                }
                // one prefetch step per row of each tile's pass (tap tiles × channel blocks × rows)
                let passes = (taps.div_ceil(TILE) + 2) * ldw.div_ceil(2 * LANES);
                let mut prefetch = Prefetch::new([next[0], next[1], &[]], passes * self.ho);
                let mut t0 = 0;
                while t0 < taps {
                    let left = taps - t0;
                    let (offs, acc) = (&offs[t0..], acc_t.as_mut_ptr().add(t0 * ldw));
                    let (src, dyt, pf) = (src.as_ptr(), dyt.as_ptr(), &mut prefetch);
                    t0 += if left >= TILE {
                        self.kernel_grad_taps::<TILE>(src, offs, dyt, acc, pf)
                    } else if left >= 4 {
                        self.kernel_grad_taps::<4>(src, offs, dyt, acc, pf)
                    } else {
                        self.kernel_grad_taps::<1>(src, offs, dyt, acc, pf)
                    };
                }
            }
        })
    }

    /// Writes the kernel gradient `dw` (`o × taps`, OIHW) from the transposed sums `acc_t`
    /// ([`Problem::add_kernel_grad`]), by 16×16 blocks.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn kernel_grad_result(&self, acc_t: &[f32], dw: &mut [f32]) {
        let taps = self.taps();
        // SAFETY: the caller's contract.
        unsafe { transpose_rows(acc_t, taps, self.o, self.ldw(), dw, taps, Store::Plain) };
    }

    /// `P` taps (starting at `offs[0]`) × every channel of the kernel gradient; returns `P`.
    ///
    /// # Safety
    /// As [`grad_tile`], for all `ldw` channels.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_grad_taps<const P: usize>(
        &self,
        src: *const f32,
        offs: &[u32],
        dyt: *const f32,
        acc: *mut f32,
        prefetch: &mut Prefetch,
    ) -> usize {
        let ldw = self.ldw();
        let bases: [*const f32; P] = std::array::from_fn(|i| {
            // SAFETY: a tap offset inside the source (checked by the caller).
            unsafe { src.add(offs[i] as usize) }
        });
        let mut v0 = 0;
        // SAFETY: channel blocks below `ldw` (the caller's contract).
        unsafe {
            while v0 + 2 * LANES <= ldw {
                self.grad_tile::<P, 2>(&bases, dyt.add(v0), acc.add(v0), prefetch);
                v0 += 2 * LANES;
            }
            if v0 < ldw {
                self.grad_tile::<P, 1>(&bases, dyt.add(v0), acc.add(v0), prefetch);
            }
        }
        P
    }

    /// `acc[p·ldw + 16v + l] += Σ_{oy,ox} bases[p][oy·sh·rl + ox] · dyt[(oy·wo + ox)·ldw + 16v +
    /// l]`: `P·V` accumulators over the image's positions, a `prefetch` step each row.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every `bases[p]` is a tap's position 0 in the source, `dyt` holds
    /// `ho·wo` rows of `ldw` from its start and `acc` `P` rows of `ldw`, each at least `16·V`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn grad_tile<const P: usize, const V: usize>(
        &self,
        bases: &[*const f32; P],
        dyt: *const f32,
        acc_io: *mut f32,
        prefetch: &mut Prefetch,
    ) {
        let (ldw, step) = (self.ldw(), self.stride[0] * self.rl());
        // SAFETY: every address is inside the ranges of the contract.
        unsafe {
            let mut acc = load_tile::<P, V>(acc_io, ldw);
            for oy in 0..self.ho {
                prefetch.step();
                let row = oy * step;
                let mut d = dyt.add(oy * self.wo * ldw);
                for ox in row..row + self.wo {
                    rank1(&mut acc, d, |p| *bases[p].add(ox));
                    d = d.add(ldw);
                }
            }
            store_tile(&acc, acc_io, ldw);
        }
    }
}

/// The input gradient of a convolution with a stride above 1 (dilation 1), as one implicit gemm
/// per output phase: the gradient at rows `≡ py (mod sh)` and columns `≡ px (mod sw)` only
/// receives the taps `ky ≡ py + pt (mod sh)`, `kx ≡ px + pl (mod sw)`, from consecutive
/// cotangent positions: a unit-stride correlation of the cotangent with that sub-kernel,
/// flipped. No multiply-add meets a zero (a transposed convolution's waste); the phases read
/// one padded copy of the cotangent, and each writes its sums where its positions lie in the
/// gradient.
pub(crate) struct PhasedInputGrad {
    c: usize,
    h: usize,
    w: usize,
    stride: [usize; 2],
    /// The shared source: the cotangent padded for every phase (`fill.hp()` rows of
    /// `fill.rl()`).
    fill: Problem,
    /// Phase `py·sw + px`.
    phases: Vec<Phase>,
}

struct Phase {
    /// Output rows and columns of the phase.
    hw: [usize; 2],
    /// Taps per cotangent channel (the sub-kernel's size; 0 when no tap reaches the phase, whose
    /// gradient is then 0).
    per_channel: usize,
    packed: Block,
    offs: Vec<u32>,
}

impl PhasedInputGrad {
    /// The phases of the input gradient of a convolution of `input` (`[n, c, h, w]`) by `w`
    /// (`o × c × kh × kw`) into `out_hw` with `stride` and low padding `pad` (dilation 1).
    pub(crate) fn new(
        input: [usize; 4],
        kernel: [usize; 4],
        out_hw: [usize; 2],
        stride: [usize; 2],
        pad: [i64; 2],
        w: &[f32],
    ) -> PhasedInputGrad {
        let [_, c, h, wd] = input;
        let [o, _, kh, kw] = kernel;
        let [sh, sw] = stride;
        let ldw = c.next_multiple_of(LANES);
        // per axis and phase: (residue of its taps, their count, its outputs, the cotangent
        // padding before its first output: `taps − 1 − first cotangent index`)
        let axis = |ph: usize, k: usize, s: usize, pad: i64, len: usize| {
            let u = ph as i64 + pad;
            let r = u.rem_euclid(s as i64) as usize;
            let taps = if r < k { (k - r).div_ceil(s) } else { 0 };
            let outs = if ph < len { (len - ph).div_ceil(s) } else { 0 };
            (r, taps, outs, taps as i64 - 1 - u.div_euclid(s as i64))
        };
        let ys: Vec<_> = (0..sh).map(|py| axis(py, kh, sh, pad[0], h)).collect();
        let xs: Vec<_> = (0..sw).map(|px| axis(px, kw, sw, pad[1], wd)).collect();
        // the shared source: padded by the most any phase needs, as many rows and columns as
        // any phase reads (`pad_max − pad` more than its own source's)
        let reach = |v: &[(usize, usize, usize, i64)]| {
            let top = v.iter().filter(|a| a.1 > 0).map(|a| a.3).max().unwrap_or(0);
            let len = v
                .iter()
                .filter(|a| a.1 > 0 && a.2 > 0)
                .map(|a| (a.2 + a.1 - 1) as i64 + top - a.3)
                .max()
                .unwrap_or(1);
            (top, len.max(1) as usize)
        };
        let ((top, rows), (left, cols)) = (reach(&ys), reach(&xs));
        // a problem whose source is exactly `rows × cols`: one output, a `rows × cols` kernel
        let fill = Problem {
            c: o,
            h: out_hw[0],
            w: out_hw[1],
            o: 1,
            kh: rows,
            kw: cols,
            ho: 1,
            wo: 1,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [top, left],
        };
        let rl = fill.rl();
        let mut phases = Vec::with_capacity(sh * sw);
        for &(ry, a, ho, pad_y) in &ys {
            for &(rx, b, wo, pad_x) in &xs {
                let per_channel = if ho > 0 && wo > 0 { a * b } else { 0 };
                let (mut packed, mut offs) = (Block::new(0), Vec::new());
                if per_channel > 0 {
                    // tap (oc, a', b') is kernel tap (ry + sh·(a − 1 − a'), rx + sw·(b − 1 −
                    // b')), read `top − pad_y` rows and `left − pad_x` columns into the source
                    packed = Block::new(o * per_channel * ldw * 4);
                    let mut rows_out = packed.as_mut_slice::<f32>().chunks_exact_mut(ldw);
                    let (dy0, dx0) = ((top - pad_y) as usize, (left - pad_x) as usize);
                    for oc in 0..o {
                        for ai in 0..a {
                            for bi in 0..b {
                                let (ky, kx) = (ry + sh * (a - 1 - ai), rx + sw * (b - 1 - bi));
                                let row = rows_out.next().expect("packed holds taps × ldw");
                                for (ci, v) in row.iter_mut().take(c).enumerate() {
                                    *v = w[((oc * c + ci) * kh + ky) * kw + kx];
                                }
                                let off = (oc * fill.hp() + ai + dy0) * rl + bi + dx0;
                                offs.push(u32::try_from(off).expect("a source under 2^32"));
                            }
                        }
                    }
                }
                phases.push(Phase {
                    hw: [ho, wo],
                    per_channel,
                    packed,
                    offs,
                });
            }
        }
        PhasedInputGrad {
            c,
            h,
            w: wd,
            stride,
            fill,
            phases,
        }
    }

    /// Scratch one image needs: the shared source, then every position's `[position][channel]`
    /// sums.
    pub(crate) fn scratch_len(&self) -> usize {
        let ldw = self.c.next_multiple_of(LANES);
        self.fill.source_len() + self.h * self.w * ldw
    }

    /// The input gradient of one image: `dy` its cotangent, `dx` (`c × h × w`) the result, zero
    /// where `mask` (laid out as `dx`, a ReLU's result) is not positive. `next` (the next
    /// image's cotangent, say) is fetched into L2 meanwhile.
    ///
    /// Every phase's tiles write their positions' rows in the gradient's own position order
    /// (phase `(py, px)`'s output `(j, i)` is position `(py + sh·j, px + sw·i)`), so one
    /// transposing store (masked, with a mask) writes the whole gradient: no per-phase
    /// results to interleave. (Benchmark Xeon in a slow period, readme_cnn: the interleave pass
    /// and the per-phase transposes took about 3 ms of thread time a step.)
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn run(
        &self,
        dy: &[f32],
        scratch: &mut [f32],
        dx: &mut [f32],
        mask: Option<&[f32]>,
        next: &[f32],
    ) {
        let (c, h, w) = (self.c, self.h, self.w);
        let [sh, sw] = self.stride;
        let ldw = c.next_multiple_of(LANES);
        let rl = self.fill.rl();
        let (fallback, res) = scratch.split_at_mut(self.fill.source_len());
        let res = &mut res[..h * w * ldw];
        assert!(dx.len() >= c * h * w && mask.is_none_or(|m| m.len() >= c * h * w));
        self.fill.with_source(fallback, |src, zeroed| {
            // SAFETY: the CPU has AVX-512F (the caller's contract).
            unsafe { self.fill.fill_source(dy, src, zeroed) };
            // phase (py, px): its outputs' rows in `res`, from its first (py·w + px) on
            let grid = |ph: &Phase| Grid {
                hw: ph.hw,
                row_step: rl,
                chunk: (CHUNK_TAPS / ph.per_channel.max(1)).max(1) * ph.per_channel.max(1),
                out_step: [sh * w * ldw, sw * ldw],
            };
            let first = |k: usize| ((k / sw) * w + k % sw) * ldw;
            let steps = self.phases.iter().map(|ph| grid(ph).steps(ph.offs.len()));
            let out = &dx[..c * h * w];
            let mut prefetch = Prefetch::new([mask.unwrap_or(&[]), out, next], steps.sum());
            for (k, ph) in self.phases.iter().enumerate() {
                let [ho, wo] = ph.hw;
                if ho == 0 || wo == 0 {
                    continue;
                }
                // the phase's last output row ends inside `res`
                let g = grid(ph);
                assert!(
                    first(k) + (ho - 1) * g.out_step[0] + (wo - 1) * g.out_step[1] + ldw
                        <= res.len()
                );
                if ph.per_channel == 0 {
                    // no tap reaches the phase: its gradient is 0
                    for j in 0..ho {
                        for i in 0..wo {
                            let at = first(k) + j * g.out_step[0] + i * g.out_step[1];
                            res[at..at + ldw].fill(0.0);
                        }
                    }
                    continue;
                }
                let last = (ho - 1) * rl + wo - 1;
                assert!(ph.offs.iter().all(|&t| t as usize + last < src.len()));
                assert!(ph.packed.as_slice::<f32>().len() >= ph.offs.len() * ldw);
                // SAFETY: the CPU has AVX-512F; every read and write is inside the buffers checked
                // above.
                unsafe {
                    g.tiles(
                        src.as_ptr(),
                        &ph.offs,
                        ph.packed.as_slice::<f32>().as_ptr(),
                        ldw,
                        (res.as_mut_ptr().add(first(k)), std::ptr::null()),
                        &mut prefetch,
                    )
                };
            }
            let store = mask.map_or(Store::Plain, |m| Store::Mask(m.as_ptr()));
            // SAFETY: the CPU has AVX-512F; `res` holds every position's `ldw` sums, `dx` and the
            // mask `c × h × w` elements (checked above).
            unsafe { transpose_rows(res, h * w, c, ldw, dx, h * w, store) };
        })
    }
}

/// The first `k` of 16 lanes (all of them from 16 on).
pub(crate) fn mask(k: usize) -> u16 {
    if k >= 16 {
        !0
    } else {
        (1u16 << k) - 1
    }
}

/// One tile's operands (see [`tile`]).
#[derive(Clone, Copy)]
struct TileArgs<'a> {
    base: *const f32,
    offs: &'a [u32],
    packed: *const f32,
    ldw: usize,
    out: *mut f32,
    /// Distance between the tile's result rows (one per position).
    ldo: usize,
    add: bool,
    /// Null, or `ldw` initial sums.
    init: *const f32,
}

impl TileArgs<'_> {
    /// The same tile from output channel `v0` on (a null `init` stays null).
    fn at(self, v0: usize) -> Self {
        TileArgs {
            packed: self.packed.wrapping_add(v0),
            out: self.out.wrapping_add(v0),
            init: if self.init.is_null() {
                self.init
            } else {
                self.init.wrapping_add(v0)
            },
            ..self
        }
    }
}

/// `P` positions × every output channel, 32 channels a tile and a last 16; returns `P`.
///
/// # Safety
/// As [`tile`], for all `ldw` channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn channels<const P: usize>(args: TileArgs) -> usize {
    let mut v0 = 0;
    // SAFETY: channel blocks below `ldw` (the caller's contract).
    unsafe {
        while v0 + 2 * LANES <= args.ldw {
            tile::<P, 2>(args.at(v0));
            v0 += 2 * LANES;
        }
        if v0 < args.ldw {
            tile::<P, 1>(args.at(v0));
        }
    }
    P
}

/// `out[p·ldo + 16v + l] = Σ_t base[p + offs[t]] · packed[t·ldw + 16v + l]` for `p < P`,
/// `v < V`, added to `out`'s values with `add`, else to `init[16v + l]` (a bias) unless `init`
/// is null: `P·V` accumulators, one broadcast per position and one load per vector each tap.
///
/// # Safety
/// The CPU has AVX-512F; `base + p + offs[t]` is readable for every `p < P` and tap, `packed`
/// for `offs.len()` rows of `ldw` from its start and `out` writable for `P` rows of `ldo`, each
/// at least `16·V` elements; a non-null `init` is readable for `16·V`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const P: usize, const V: usize>(args: TileArgs) {
    let (ldw, ldo, out) = (args.ldw, args.ldo, args.out);
    let mut wp = args.packed;
    // SAFETY: every address is inside the ranges of the contract.
    unsafe {
        let mut acc = if args.add {
            load_tile::<P, V>(out, ldo)
        } else if !args.init.is_null() {
            // every position starts from the same `init` (row stride 0)
            load_tile::<P, V>(args.init, 0)
        } else {
            [[_mm512_setzero_ps(); V]; P]
        };
        for &t in args.offs {
            let s = args.base.add(t as usize);
            rank1(&mut acc, wp, |p| *s.add(p));
            wp = wp.add(ldw);
        }
        store_tile(&acc, out, ldo);
    }
}

/// `acc[p][v] += x(p) · w[16v..16v + 16]` for every `p < P`, `v < V`: `V` vector loads and `P`
/// broadcasts, the step of both register tiles.
///
/// # Safety
/// The CPU has AVX-512F; `w` is readable for `16·V` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn rank1<const P: usize, const V: usize>(
    acc: &mut [[__m512; V]; P],
    w: *const f32,
    x: impl Fn(usize) -> f32,
) {
    // SAFETY: the caller's contract.
    let wv: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(w.add(v * LANES)) });
    for (p, row) in acc.iter_mut().enumerate() {
        let b = _mm512_set1_ps(x(p));
        for (a, w) in row.iter_mut().zip(&wv) {
            *a = _mm512_fmadd_ps(b, *w, *a);
        }
    }
}

/// A register tile read from `P` rows of `ld` (16·V elements each) at `at`.
///
/// # Safety
/// The CPU has AVX-512F; those elements are readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn load_tile<const P: usize, const V: usize>(
    at: *const f32,
    ld: usize,
) -> [[__m512; V]; P] {
    // SAFETY: the caller's contract.
    std::array::from_fn(|p| {
        std::array::from_fn(|v| unsafe { _mm512_loadu_ps(at.add(p * ld + v * LANES)) })
    })
}

/// Stores a register tile into `P` rows of `ld` at `at`.
///
/// # Safety
/// The CPU has AVX-512F; those elements are writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn store_tile<const P: usize, const V: usize>(
    acc: &[[__m512; V]; P],
    at: *mut f32,
    ld: usize,
) {
    for (p, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { _mm512_storeu_ps(at.add(p * ld + v * LANES), *a) };
        }
    }
}

/// `dst[j] = src[j·s]` for every `j < dst.len()`: 16 at a time, a stride of 2 by one permute of
/// two loads.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn strided_copy(src: &[f32], s: usize, dst: &mut [f32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    assert!((n - 1) * s < src.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: every masked load reads below `(n − 1)·s + 1 ≤ src.len()` and every masked store
    // writes below `n`.
    unsafe {
        match s {
            1 => {
                for j in (0..n).step_by(16) {
                    let m = mask(n - j);
                    _mm512_mask_storeu_ps(dp.add(j), m, _mm512_maskz_loadu_ps(m, sp.add(j)));
                }
            }
            2 => {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let len = (n - 1) * 2 + 1;
                for j in (0..n).step_by(16) {
                    let a = _mm512_maskz_loadu_ps(mask(len - 2 * j), sp.add(2 * j));
                    let b = _mm512_maskz_loadu_ps(
                        mask(len.saturating_sub(2 * j + 16)),
                        sp.add(2 * j + 16),
                    );
                    _mm512_mask_storeu_ps(
                        dp.add(j),
                        mask(n - j),
                        _mm512_permutex2var_ps(a, even, b),
                    );
                }
            }
            _ => {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = *src.get_unchecked(j * s);
                }
            }
        }
    }
}

/// What a transposing store writes for each sum `v` it stores at element `i` of its result `y`
/// (pointers address a tensor laid out as `y`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Store {
    /// `y[i] = v`.
    Plain,
    /// `y[i] = v` and `relu[i] = max(0, v)` (or `max(v, 0)` when the flag is false, see
    /// [`relu_scalar`]): a forward convolution whose sum is kept beside its ReLU.
    AlsoRelu(*mut f32, bool),
    /// `y[i] = max(0, v)` (or `max(v, 0)`): only the ReLU is kept.
    Relu(bool),
    /// `y[i] = v` where `0 < mask[i]`, else 0: an input gradient times a ReLU's derivative,
    /// read from the ReLU's result.
    Mask(*const f32),
}

// SAFETY: a `Store` only carries pointers into arena values that the plan gives the convolution
// (its tasks write disjoint blocks of them, or only read a mask).
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

impl Store {
    /// The same store for the block starting `at` elements further.
    pub(crate) fn offset(self, at: usize) -> Store {
        match self {
            Store::AlsoRelu(r, zero_first) => Store::AlsoRelu(r.wrapping_add(at), zero_first),
            Store::Mask(m) => Store::Mask(m.wrapping_add(at)),
            s => s,
        }
    }

    /// Writes `v` (or what the store makes of it) at `y`, `at` elements from the block start.
    ///
    /// # Safety
    /// `y` and the store's pointer advanced by `at` are valid for one element.
    #[inline(always)]
    unsafe fn scalar(self, y: *mut f32, at: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Store::Plain => *y = v,
                Store::AlsoRelu(r, zero_first) => {
                    *y = v;
                    *r.add(at) = relu_scalar(v, zero_first);
                }
                Store::Relu(zero_first) => *y = relu_scalar(v, zero_first),
                Store::Mask(m) => *y = if 0.0 < *m.add(at) { v } else { 0.0 },
            }
        }
    }

    /// [`Store::scalar`] on 16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `y` and the store's pointer advanced by `at` are valid for 16
    /// elements.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn vector(self, y: *mut f32, at: usize, v: __m512) {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Store::Plain => _mm512_storeu_ps(y, v),
                Store::AlsoRelu(r, zero_first) => {
                    _mm512_storeu_ps(y, v);
                    _mm512_storeu_ps(r.add(at), relu_vector(v, zero_first));
                }
                Store::Relu(zero_first) => _mm512_storeu_ps(y, relu_vector(v, zero_first)),
                Store::Mask(m) => {
                    let keep = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(
                        _mm512_setzero_ps(),
                        _mm512_loadu_ps(m.add(at)),
                    );
                    _mm512_storeu_ps(y, _mm512_maskz_mov_ps(keep, v))
                }
            }
        }
    }
}

/// `y[c·ldy + r] = res[r·ld + c]` for `r < rows`, `c < cols`, written through `store` (whose
/// pointers address a tensor laid out as `y`): whole 16×16 blocks in registers, the edges
/// element by element.
///
/// # Safety
/// The CPU has AVX-512F; `store`'s pointer, if any, is valid for `y`'s elements written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_rows(
    res: &[f32],
    rows: usize,
    cols: usize,
    ld: usize,
    y: &mut [f32],
    ldy: usize,
    store: Store,
) {
    const B: usize = 16;
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(cols <= ld && rows <= ldy);
    assert!(res.len() >= (rows - 1) * ld + cols && y.len() >= (cols - 1) * ldy + rows);
    let (full_r, full_c) = (rows / B * B, cols / B * B);
    for r0 in (0..full_r).step_by(B) {
        for c0 in (0..full_c).step_by(B) {
            // SAFETY: the block's rows r0.. and columns c0.. are inside both (checked above).
            unsafe {
                transpose16(
                    res.as_ptr().add(r0 * ld + c0),
                    ld,
                    y.as_mut_ptr().add(c0 * ldy + r0),
                    ldy,
                    store.offset(c0 * ldy + r0),
                )
            };
        }
    }
    let mut edge = |r: usize, c: usize| {
        // SAFETY: r < rows, c < cols (checked above), the store's pointer as `y` (the caller's
        // contract).
        unsafe {
            let v = *res.get_unchecked(r * ld + c);
            store.scalar(y.as_mut_ptr().add(c * ldy + r), c * ldy + r, v);
        }
    };
    for r in 0..rows {
        for c in full_c..cols {
            edge(r, c);
        }
    }
    for r in full_r..rows {
        for c in 0..full_c {
            edge(r, c);
        }
    }
}

/// `dst[c·ldd + r] = src[r·lds + c]` for a 16×16 block, written through `store` (whose pointer
/// is at the block's start): unpacks, in-lane shuffles, then two rounds of 128-bit lane
/// shuffles.
///
/// # Safety
/// The CPU has AVX-512F; both blocks (and the store's) are inside their buffers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, store: Store) {
    // SAFETY: the caller's contract.
    unsafe {
        let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * lds)));
        // t[2i], t[2i+1]: rows 2i, 2i+1 interleaved (low and high pairs of each 128-bit lane)
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4i + k]: rows 4i..4i+4 of columns k, k+4, k+8, k+12 (one per 128-bit lane)
        let u: [__m512; 16] = std::array::from_fn(|j| {
            let (i, k) = (j / 4, j % 4);
            let (a, b) = (t[4 * i + k / 2], t[4 * i + 2 + k / 2]);
            if k % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        let put = |row: usize, v: __m512| store.vector(dst.add(row * ldd), row * ldd, v);
        for k in 0..4 {
            let x0 = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
            let x1 = _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]);
            let y0 = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
            let y1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]);
            put(k, _mm512_shuffle_f32x4::<0x88>(x0, y0));
            put(k + 4, _mm512_shuffle_f32x4::<0x88>(x1, y1));
            put(k + 8, _mm512_shuffle_f32x4::<0xDD>(x0, y0));
            put(k + 12, _mm512_shuffle_f32x4::<0xDD>(x1, y1));
        }
    }
}

/// The graph's `max(0, v)` (`zero_first`) or `max(v, 0)` with `eval_scalar`'s semantics: NaN
/// wins, a tie keeps the first operand (so `max(0, −0) = 0`, `max(−0, 0) = −0`).
fn relu_scalar(v: f32, zero_first: bool) -> f32 {
    if zero_first {
        if 0.0 < v || v.is_nan() {
            v
        } else {
            0.0
        }
    } else if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// [`relu_scalar`] on 16 lanes.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn relu_vector(v: __m512, zero_first: bool) -> __m512 {
    let zero = _mm512_setzero_ps();
    if zero_first {
        let keep =
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(zero, v) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_ps(keep, zero, v)
    } else {
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero), v, zero)
    }
}
