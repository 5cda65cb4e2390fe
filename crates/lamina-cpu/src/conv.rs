//! 2-D convolution (NCHW input, OIHW kernel, cross-correlation) and its two gradients.
//!
//! f32 with one group on a CPU with AVX-512 (what training runs):
//! - forward, input gradient and kernel gradient of a 3×3 unit-stride convolution with 16 or
//!   more input channels (of the correlation computed): Winograd F(4×4, 3×3) (`winograd.rs`,
//!   through the implicit path's per-image work, epilogues and range sums; `Conv::winograd`, on
//!   unless the backend turns it off);
//! - forward, kernel gradient, and the input gradient of a unit-stride convolution: implicit
//!   gemms (`implicit.rs`: the image copied once into a padded source, register tiles over the
//!   kernel taps, no unfolded matrix), the bias and ReLU of a forward one applied as its block is
//!   stored;
//! - input gradient of a strided convolution: one implicit gemm per output phase
//!   (`implicit::PhasedInputGrad`, no multiply-add by the zeros of a dilated cotangent);
//! - at most 64 taps with unit stride (an RGB input layer): direct convolutions
//!   (`direct_image`, `direct_kernel_grad`), faster still on so narrow a product (benchmark Xeon,
//!   readme_cnn's first layer: 0.75-0.80 ms against 1.05-1.09 as an implicit gemm and ~1.2 as
//!   im2col + gemm).
//!
//! Everything else (f64, groups, CPUs without AVX-512, a kernel too large for L2) runs as gemms:
//! - forward: `y = W · im2col(x)`, one gemm per image and group;
//! - input gradient: `dx = col2im(Wᵀ · dy)` (a transposed convolution: no zero-dilated cotangent),
//!   one gemm per image and group;
//! - kernel gradient: `dWᵀ = im2col(x) · dyᵀ` over a chunk of images at once (their unfolded
//!   patches side by side, the small cotangent transposed so that gemm reads a unit-stride right
//!   operand, about twice as fast).
//!
//! Epilogues, applied to each image's block while it is in cache (the steps they replace become
//! no-ops, see `exec.rs`): a forward convolution's bias and ReLU (only the ReLU stored when
//! nothing else reads the sum); an input gradient's ReLU gradient `where(0 < relu, dx, 0)`; and a
//! kernel gradient that is the only reader of an input gradient's result runs inside it, image by
//! image (`Conv::then`, the per-image paths), the cotangent never stored; a forward convolution
//! whose input another forward convolution has just written runs with it image by image
//! (`Conv::next`), reading each block from cache; and a kernel gradient that reads the same
//! cotangent as an input gradient runs beside it (`Conv::beside`), both reading each image's
//! cotangent (and the kernel gradient's input, the input gradient's mask) once.
//!
//! Kernel gradients split the images into ranges summed in a fixed order (so results do not
//! depend on scheduling). A 1×1 kernel with unit stride and no padding skips im2col/col2im.
//! Padding may be negative (it crops); input positions outside the image read 0 (and receive no
//! gradient).
//!
//! (Shifted gemms — one product per kernel tap over the input channels, reading the padded image
//! in place — measured 4.4 against 3.1 ms for readme_cnn's 32-channel stride-2 layer on the
//! build machine and were not built. A first Winograd F(2×2, 3×3), through the `gemm` crate over
//! chunks of 4 images with scalar transforms, made readme_cnn's step ~2 ms slower on the
//! benchmark Xeon and left with the commit after 69db3e7; F(4×4, 3×3) image by image with
//! vector transforms and the implicit gemm's register tiles took it from 18.8-22.5 to 16.1-16.4
//! ms.)

use crate::arena::{Block, Ptr, Slots};
use crate::implicit::{PhasedInputGrad, Problem, Store};
use crate::matmul::{gemm_acc, gemm_into, GemmElem};
use crate::winograd::Winograd;
use gemm::Parallelism;
use lamina_core::ConvKind;
use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// Per-image work that writes image `ni`'s result into a buffer: `work(ni, buffer)`.
type ImageWork<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Where a kernel gradient takes each image's cotangent from: its slot (`None`), or the input
/// gradient's per-image work (`Conv::then`).
type Cotangent<'a> = Option<&'a ImageWork<'a>>;

/// What a kernel gradient's loop over image ranges also runs for each image (see
/// [`Conv::beside`]): `before(range, image, range end)` ahead of the image's own sums,
/// `after(image)` behind them.
#[derive(Clone, Copy, Default)]
struct ImageHooks<'a> {
    before: Option<&'a (dyn Fn(usize, usize, usize) + Sync + 'a)>,
    after: Option<&'a (dyn Fn(usize) + Sync + 'a)>,
}

impl ImageHooks<'_> {
    fn before(&self, k: usize, ni: usize, end: usize) {
        if let Some(f) = self.before {
            f(k, ni, end)
        }
    }

    fn after(&self, ni: usize) {
        if let Some(f) = self.after {
            f(ni)
        }
    }
}

/// Convolutions with fewer multiply-adds than this run on one thread.
const PAR_MIN: usize = 1 << 16;

/// About this many output positions (columns of the unfolded matrix) per kernel-gradient gemm.
/// Small enough that a chunk's columns stay in L2 while they are written and read (readme_cnn's
/// kernel gradients on the 2-core development machine, fastest runs: 2048 → 256 took the
/// 64-channel stride-2 one from 2.80 to 2.17 ms and the step from 30.1-30.6 to 29.5-29.6 ms;
/// 128 and 64 measured the same as 256).
const KG_COLS: usize = 256;

/// Image ranges per thread that a kernel gradient's sum is split into (see `sum_over_images`).
const RANGES_PER_THREAD: usize = 4;

/// Geometry of one convolution node.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub(crate) f64: bool,
    pub(crate) kind: ConvKind,
    /// Slots of the two operands (as `ConvKind` orders them) and of the result.
    pub(crate) a: usize,
    pub(crate) b: usize,
    pub(crate) out: usize,
    /// Slot of a per-channel bias (`o` elements) the forward kind adds to its result.
    pub(crate) bias: Option<usize>,
    /// With a bias: also write `max(0, y)` (or `max(y, 0)` when the flag is false) of the biased
    /// result into this slot (the ReLU that follows). When it is `out` itself, only the ReLU is
    /// kept: it is written in place of the sum.
    pub(crate) relu: Option<(usize, bool)>,
    /// Input-gradient kind: keep the result only where this slot's value (a ReLU's result, shaped
    /// as the result) is positive, zero elsewhere: `where(0 < m, dx, 0)`, the ReLU's gradient.
    pub(crate) mask: Option<usize>,
    /// Input-gradient kind: the kernel gradient that is the only reader of this result (its
    /// cotangent), run with it image by image: each image's result goes from cache to the kernel
    /// gradient's sums and is never stored (see [`Conv::is_per_image_input_grad`]).
    pub(crate) then: Option<Box<Conv>>,
    /// Forward kind: the forward convolution that reads this one's result (or its ReLU) as its
    /// input, run with it image by image: each image's block is read from cache right after it
    /// is written (see [`Conv::is_per_image_forward`]).
    pub(crate) next: Option<Box<Conv>>,
    /// Input-gradient kind: a kernel gradient of the same layer (it reads the same cotangent),
    /// run beside this one image by image: its sums over each image come first, then this
    /// gradient reads the image's cotangent, and its mask (the kernel gradient's input), from
    /// cache (see [`Conv::is_beside_kernel_grad`]).
    pub(crate) beside: Option<Box<Conv>>,
    /// Kernel-gradient kind: also write the cotangent's sum over images and positions, per
    /// channel (`o` elements: the bias gradient), into this slot.
    pub(crate) bias_grad: Option<usize>,
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
    /// Whether a 3×3 unit-stride forward, input gradient or kernel gradient may run as Winograd
    /// F(4×4, 3×3) (`winograd.rs`).
    pub(crate) winograd: bool,
}

thread_local! {
    /// Per-thread im2col/col2im buffer, kept between runs so that a step allocates nothing.
    static SCRATCH: Cell<Option<Block>> = const { Cell::new(None) };
}

thread_local! {
    /// Per-thread buffer for one image's cotangent that an input gradient hands to the kernel
    /// gradient run with it (`Conv::then`).
    static COTANGENT: Cell<Option<Block>> = const { Cell::new(None) };
}

/// Image `ni + 1`'s block (`len` elements) of `v` if that image comes before `end` (the next
/// image a thread takes, to fetch ahead), else nothing.
fn next_block<T>(v: &[T], ni: usize, end: usize, len: usize) -> &[T] {
    match ni + 1 < end {
        true => v.get((ni + 1) * len..(ni + 2) * len).unwrap_or(&[]),
        false => &[],
    }
}

/// Runs `f` with a scratch slice of `len` elements (contents unspecified).
fn with_scratch<T: GemmElem, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    with_buffer(&SCRATCH, len, f)
}

/// Runs `f` with `len` elements (contents unspecified) of the thread's buffer `key`, 64-byte
/// aligned like every buffer the kernels load whole vectors from (an unaligned 64-byte load
/// spans two cache lines, which costs Intel cores a second access).
fn with_buffer<T: GemmElem, R>(
    key: &'static std::thread::LocalKey<Cell<Option<Block>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|s| {
        // `take` leaves nothing behind, so a nested call (rayon work stealing inside gemm) gets
        // its own buffer instead of aliasing this one.
        let bytes = len * std::mem::size_of::<T>();
        let mut b = s
            .take()
            .filter(|b| b.len() >= bytes)
            .unwrap_or_else(|| Block::new(bytes));
        let r = f(&mut b.as_mut_slice::<T>()[..len]);
        s.set(Some(b));
        r
    })
}

/// Runs `f` compiled for AVX2 where the CPU has it: the unfolding loops and epilogues, inlined
/// into `f`, then vectorise 8 lanes wide instead of SSE2's 4 (copies, adds and comparisons: no
/// instruction changes a result).
#[inline(always)]
fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { avx2(f) };
    }
    f()
}

impl Conv {
    /// # Safety
    /// The operand slots must hold the operands of the node's kind and `out` be writable for the
    /// result, not overlapping them.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            if let Some(kg) = &self.then {
                self.input_then_kernel_grad(kg, slots, threads)
            } else if let Some(kg) = &self.beside {
                self.input_beside_kernel_grad(kg, slots, threads)
            } else if let Some(next) = &self.next {
                self.forward_then_forward(next, slots, threads)
            } else if self.f64 {
                self.go::<f64>(slots, threads)
            } else if self.is_direct() {
                match self.kind {
                    ConvKind::Forward => self.forward_direct(slots, threads),
                    _ => self.kernel_grad_direct(slots, threads, None, ImageHooks::default()),
                }
            } else if let Some(problem) = self.implicit_problem() {
                self.implicit(slots, threads, &problem)
            } else if self.is_phased_input_grad() {
                self.phased_input_grad(slots, threads)
            } else {
                self.go::<f32>(slots, threads)
            }
        }
    }

    /// A forward f32 convolution (or its kernel gradient) with unit stride and dilation, one
    /// group and a small kernel volume, on a CPU with AVX-512: convolved directly
    /// (`direct_image`, `direct_kernel_grad`) instead of through im2col + gemm, whose product
    /// over `c × kh × kw` (27 for an RGB input's 3×3 kernel) is too narrow to run gemm at speed.
    fn is_direct(&self) -> bool {
        let [_, cg, kh, kw] = self.kernel;
        let shape_fits = !self.f64
            && matches!(self.kind, ConvKind::Forward | ConvKind::KernelGrad { .. })
            && self.groups == 1
            && self.stride == [1, 1]
            && self.dilation == [1, 1]
            && cg * kh * kw <= DIRECT_MAX_TAPS
            && !self.is_pointwise();
        #[cfg(target_arch = "x86_64")]
        return shape_fits && std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The geometry of a direct convolution of one image.
    #[cfg(target_arch = "x86_64")]
    fn direct_geometry(&self) -> Direct {
        let [_, c, _, _] = self.input;
        let [o, _, kh, kw] = self.kernel;
        let [ho, wo] = self.out_hw;
        Direct {
            c,
            kh,
            kw,
            o,
            ho,
            wo,
            hp: ho + kh - 1,
            // whole 32-column chunks read past the last output column, into zeros; rows start
            // on cache lines (the scratch is aligned), so the loads of a row's first tap do not
            // span two
            wp: (wo.next_multiple_of(DIRECT_COLS) + kw - 1).next_multiple_of(16),
        }
    }

    /// Copies image `img` (`c × h × w`) into `xp` zero-padded: padded row r, column q hold
    /// input (r - pad_lo[0], q - pad_lo[1]), else 0.
    #[cfg(target_arch = "x86_64")]
    fn pad_image(&self, img: &[f32], xp: &mut [f32], g: &Direct) {
        let [_, _, h, wd] = self.input;
        let [pt, pl] = self.pad_lo;
        for (ci, plane) in xp.chunks_exact_mut(g.hp * g.wp).take(g.c).enumerate() {
            for (r, row) in plane.chunks_exact_mut(g.wp).enumerate() {
                row.fill(0.0);
                let iy = r as i64 - pt;
                if !(0..h as i64).contains(&iy) {
                    continue;
                }
                let src = &img[(ci * h + iy as usize) * wd..][..wd];
                // input columns ix with 0 <= ix + pl < wp
                let lo = (-pl).max(0) as usize;
                let hi = (g.wp as i64 - pl).clamp(0, wd as i64) as usize;
                if lo < hi {
                    let at = (lo as i64 + pl) as usize;
                    row[at..at + (hi - lo)].copy_from_slice(&src[lo..hi]);
                }
            }
        }
    }

    /// The direct kernel gradient (see `is_direct`): each thread sums a range of images, each
    /// zero-padded into scratch, with `direct_kernel_grad` (`sum_over_images`). With
    /// `cotangent`, each image's cotangent is not read from its slot but written by
    /// `cotangent(ni, buffer)` (see [`Conv::then`]).
    ///
    /// # Safety
    /// As [`Conv::run`], and `is_direct()` holds.
    unsafe fn kernel_grad_direct(
        &self,
        slots: &Slots,
        threads: usize,
        cotangent: Cotangent,
        hooks: ImageHooks,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let [n, c, h, wd] = self.input;
            let [o, _, kh, kw] = self.kernel;
            let [ho, wo] = self.out_hw;
            let (taps, dy_len) = (c * kh * kw, o * ho * wo);
            // SAFETY: the operand slots hold the checked geometry's lengths (the caller's
            // contract; a cotangent made image by image has no slot).
            let x = unsafe { slots.get::<f32>(self.a, n * c * h * wd) };
            let dy = match cotangent {
                None => unsafe { slots.get::<f32>(self.b, n * dy_len) },
                Some(_) => &[],
            };
            let g = self.direct_geometry();
            let parts = self.image_ranges(threads);
            let sum = |range: Range<usize>, res: &[*mut f32], _: Parallelism| {
                // SAFETY: `res` comes from `sum_over_images` for this `o × taps` gradient.
                let (dw, db) = unsafe { range_results(res, o, taps) };
                // the range's sums as 16-lane vectors, added across lanes once at the end
                let mut lanes = DirectGradLanes::new(o, taps, db.is_some());
                // which of `sum_over_images`'s ranges this is (for the hooks)
                let k = (0..parts)
                    .find(|&k| k * n / parts == range.start)
                    .unwrap_or(0);
                let end = range.end;
                for ni in range {
                    hooks.before(k, ni, end);
                    let mut add = |dyi: &[f32]| {
                        with_scratch::<f32, _>(c * g.hp * g.wp, |xp| {
                            self.pad_image(&x[ni * c * h * wd..(ni + 1) * c * h * wd], xp, &g);
                            // SAFETY: the CPU has AVX-512F (`is_direct`); the buffers have the
                            // sizes `direct_kernel_grad` reads.
                            unsafe { direct_kernel_grad(xp, dyi, &mut lanes, &g) };
                        })
                    };
                    match cotangent {
                        Some(make) => with_buffer::<f32, _>(&COTANGENT, dy_len, |dyi| {
                            make(ni, dyi);
                            add(dyi)
                        }),
                        None => add(&dy[ni * dy_len..(ni + 1) * dy_len]),
                    }
                    hooks.after(ni);
                }
                lanes.add_to(dw, db);
            };
            let db = self.bias_grad.map(|s| slots.ptr(s));
            self.sum_over_images::<f32>((slots.ptr(self.out), o * taps), db, threads, sum);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (slots, threads);
    }

    /// The direct forward convolution (see `is_direct`): per image, the weights packed in blocks
    /// of `DIRECT_OC` output channels and the image zero-padded into scratch, then the
    /// convolution and the bias epilogue.
    ///
    /// # Safety
    /// As [`Conv::run`], and `is_direct()` holds.
    unsafe fn forward_direct(&self, slots: &Slots, threads: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: forwarded from the caller.
            let image = unsafe { self.direct_image_work(slots) };
            self.each_image(threads, |ni, _| image(ni));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (slots, threads);
    }

    /// The per-image work of a direct forward convolution: `image(ni)` writes image ni's block of
    /// the result (and the epilogue's).
    ///
    /// # Safety
    /// As [`Conv::run`], and `is_direct()` holds; each image's call writes only its blocks.
    #[cfg(target_arch = "x86_64")]
    unsafe fn direct_image_work<'a>(&'a self, slots: &'a Slots) -> impl Fn(usize) + Sync + 'a {
        let [n, c, h, wd] = self.input;
        let [o, _, kh, kw] = self.kernel;
        let [ho, wo] = self.out_hw;
        let taps = c * kh * kw;
        let out = slots.ptr(self.out);
        // SAFETY (three reads): the operand and bias slots hold the checked geometry's lengths
        // (the caller's contract).
        let (x, w) = unsafe {
            (
                slots.get::<f32>(self.a, n * c * h * wd),
                slots.get::<f32>(self.b, o * taps),
            )
        };
        let epilogue = self.epilogue::<f32>(slots);
        // the bias, and a ReLU kept in place of the sum, are applied in registers; a ReLU
        // written besides the sum is a pass over the block
        let (in_registers, epilogue) = match epilogue {
            Some(e) if e.mask.is_none() && e.relu.is_none_or(|(r, _)| r.0 == out.0) => {
                ((e.bias, e.relu.map(|(_, zero_first)| zero_first)), None)
            }
            e => ((None, None), e),
        };
        let g = self.direct_geometry();
        // (whole cache lines, so that the padded image after them starts on one)
        let packed = (o.div_ceil(DIRECT_OC) * taps * DIRECT_OC).next_multiple_of(16);
        move |ni| {
            with_scratch::<f32, _>(packed + c * g.hp * g.wp, |buf| {
                let (wpk, xp) = buf.split_at_mut(packed);
                // weights as [block][tap][DIRECT_OC], zero rows past the last channel
                for (b, blk) in wpk.chunks_exact_mut(taps * DIRECT_OC).enumerate() {
                    for (t, lane) in blk.chunks_exact_mut(DIRECT_OC).enumerate() {
                        for (i, v) in lane.iter_mut().enumerate() {
                            let oc = b * DIRECT_OC + i;
                            *v = if oc < o { w[oc * taps + t] } else { 0.0 };
                        }
                    }
                }
                self.pad_image(&x[ni * c * h * wd..(ni + 1) * c * h * wd], xp, &g);
                let at = ni * o * ho * wo;
                // SAFETY: the CPU has AVX-512F (`is_direct`); `xp` and `wpk` have the sizes
                // `direct_image` reads, and image ni's result block is written by this task
                // only.
                unsafe { direct_image(xp, wpk, out.at::<f32>(at), &g, in_registers) };
                if let Some(e) = &epilogue {
                    // SAFETY: the block just written by this task.
                    unsafe { e.apply(out, at, 0..o, ho * wo) };
                }
            })
        }
    }

    /// Whether this forward convolution works image by image (the direct and implicit paths), so
    /// that it can run with the forward convolution that reads it (`next`).
    pub(crate) fn is_per_image_forward(&self) -> bool {
        self.kind == ConvKind::Forward && (self.is_direct() || self.implicit_problem().is_some())
    }

    /// This forward convolution and `next`, which reads its result: image by image, each image's
    /// block read from cache right after it is written.
    ///
    /// # Safety
    /// As [`Conv::run`] for both, with `is_per_image_forward()` for both; `next`'s results
    /// overlap none of this convolution's operands or results.
    unsafe fn forward_then_forward(&self, next: &Conv, slots: &Slots, threads: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both): forwarded from the caller.
            let (first, second) = unsafe { (self.forward_work(slots), next.forward_work(slots)) };
            self.each_image(threads, |ni, _| {
                first(ni);
                second(ni)
            });
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (next, slots, threads);
    }

    /// The per-image work of a forward convolution on its own path: `work(ni)` writes image ni's
    /// blocks.
    ///
    /// # Safety
    /// As [`Conv::run`], with `is_per_image_forward()`; each image's call writes only its blocks.
    #[cfg(target_arch = "x86_64")]
    unsafe fn forward_work<'a>(&'a self, slots: &'a Slots) -> Box<dyn Fn(usize) + Sync + 'a> {
        // SAFETY (both): forwarded from the caller.
        match self.implicit_problem() {
            Some(problem) if !self.is_direct() => unsafe {
                self.implicit_forward_work(slots, problem)
            },
            _ => Box::new(unsafe { self.direct_image_work(slots) }),
        }
    }

    /// [`Conv::implicit_image`] writing image ni's block of this convolution's result slot.
    ///
    /// # Safety
    /// As [`Conv::implicit_image`]; each image's call writes only its blocks.
    #[cfg(target_arch = "x86_64")]
    unsafe fn implicit_forward_work<'a>(
        &'a self,
        slots: &'a Slots,
        problem: Problem,
    ) -> Box<dyn Fn(usize) + Sync + 'a> {
        let out_len = problem.o * problem.ho * problem.wo;
        let out = slots.ptr(self.out);
        // SAFETY: forwarded from the caller.
        let image = unsafe { self.implicit_image(slots, problem) };
        Box::new(move |ni| {
            // SAFETY: image ni's result block, written by this image's task only.
            image(ni, unsafe {
                std::slice::from_raw_parts_mut(out.at::<f32>(ni * out_len), out_len)
            })
        })
    }

    /// The per-image problem of an f32 convolution with one group (neither direct nor 1×1), its
    /// kernel gradient, or the input gradient of one with unit stride, on a CPU with AVX-512:
    /// these run as implicit gemms (`implicit.rs`) instead of im2col + gemm. Not when the packed kernel
    /// would outgrow L2 (a tile rereads all of it), nor for an empty one.
    fn implicit_problem(&self) -> Option<Problem> {
        #[cfg(target_arch = "x86_64")]
        {
            if self.f64
                || self.groups != 1
                || self.is_pointwise()
                || !std::arch::is_x86_feature_detected!("avx512f")
            {
                return None;
            }
            let [_, c, h, w] = self.input;
            let [o, _, kh, kw] = self.kernel;
            let [ho, wo] = self.out_hw;
            let [dh, dw] = self.dilation;
            let problem = match self.kind {
                ConvKind::Forward | ConvKind::KernelGrad { .. } => Problem {
                    c,
                    h,
                    w,
                    o,
                    kh,
                    kw,
                    ho,
                    wo,
                    stride: self.stride,
                    dilation: self.dilation,
                    pad: self.pad_lo,
                },
                // dx[ci, iy, ix] = Σ w[oc, ci, ky, kx] · dy[oc, iy + pad − ky·d, …]: a forward
                // correlation of dy with the flipped kernel, low padding (k − 1)·d − pad
                ConvKind::InputGrad { .. } if self.stride == [1, 1] => Problem {
                    c: o,
                    h: ho,
                    w: wo,
                    o: c,
                    kh,
                    kw,
                    ho: h,
                    wo: w,
                    stride: [1, 1],
                    dilation: self.dilation,
                    pad: [
                        ((kh - 1) * dh) as i64 - self.pad_lo[0],
                        ((kw - 1) * dw) as i64 - self.pad_lo[1],
                    ],
                },
                _ => return None,
            };
            (!problem.is_empty() && problem.packed_len() * 4 <= 1 << 20).then_some(problem)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// Runs an implicit-gemm convolution (see `implicit_problem`): the kernel packed once, then
    /// per image the convolution and, for a forward one, the bias epilogue.
    ///
    /// # Safety
    /// As [`Conv::run`], and `problem` comes from `implicit_problem()`.
    unsafe fn implicit(&self, slots: &Slots, threads: usize, problem: &Problem) {
        #[cfg(target_arch = "x86_64")]
        {
            if let ConvKind::KernelGrad { .. } = self.kind {
                // SAFETY: forwarded from the caller.
                let hooks = ImageHooks::default();
                return unsafe { self.implicit_kernel_grad(slots, threads, problem, None, hooks) };
            }
            // SAFETY: forwarded from the caller.
            let image = unsafe { self.implicit_forward_work(slots, *problem) };
            self.each_image(threads, |ni, _| image(ni));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (slots, threads, problem);
    }

    /// The per-image work of an implicit forward convolution or unit-stride input gradient:
    /// `image(ni, y)` writes image ni's result into `y` (`o × ho × wo` of the problem), with the
    /// epilogue (bias, ReLU, or the mask of image ni).
    ///
    /// # Safety
    /// As [`Conv::run`], and `problem` comes from `implicit_problem()` for a forward convolution
    /// or an input gradient.
    #[cfg(target_arch = "x86_64")]
    unsafe fn implicit_image<'a>(
        &'a self,
        slots: &'a Slots,
        problem: Problem,
    ) -> impl Fn(usize, &mut [f32]) + Sync + 'a {
        let n = self.input[0];
        let in_len = problem.c * problem.h * problem.w;
        let out_len = problem.o * problem.ho * problem.wo;
        // SAFETY (three reads): the operand and bias slots hold the checked geometry's lengths
        // (the caller's contract).
        let (x, w) = unsafe {
            (
                slots.get::<f32>(self.a, n * in_len),
                slots.get::<f32>(self.b, self.kernel.iter().product()),
            )
        };
        // the bias, padded to whole vectors, starts every sum (it is the epilogue's add)
        let bias = self.bias.map(|b| {
            let mut v = vec![0.0f32; problem.ldw()];
            // SAFETY: a bias slot holds `o` elements (compiled so).
            v[..problem.o].copy_from_slice(unsafe { slots.get::<f32>(b, problem.o) });
            v
        });
        // what the transposing store writes besides (or instead of) the sums
        let store = match (self.relu, self.mask) {
            (Some((r, zero_first)), _) if r == self.out => Store::Relu(zero_first),
            (Some((r, zero_first)), _) => Store::AlsoRelu(slots.ptr(r).at(0), zero_first),
            (None, Some(m)) => Store::Mask(slots.ptr(m).at::<f32>(0)),
            (None, None) => Store::Plain,
        };
        let mut packed = Block::new(problem.packed_len() * 4);
        match self.kind {
            ConvKind::Forward => problem.pack(w, packed.as_mut_slice()),
            _ => problem.pack_flipped(w, packed.as_mut_slice()),
        }
        // a 3×3 stride-1 problem with enough channels runs as Winograd F(4×4, 3×3) on the
        // transformed packed kernel
        let winograd = Winograd::of(&problem).filter(|_| self.winograd).map(|wg| {
            let mut u = Block::new(wg.kernel_len() * 4);
            // SAFETY: the CPU has AVX-512F (`implicit_problem`).
            unsafe { wg.transform_kernel(packed.as_slice(), u.as_mut_slice()) };
            (wg, u)
        });
        let offs = problem.tap_offsets();
        let scratch_len = winograd
            .as_ref()
            .map_or(problem.scratch_len(), |(wg, _)| wg.scratch_len());
        move |ni, y| {
            with_scratch::<f32, _>(scratch_len, |scratch| {
                let img = &x[ni * in_len..(ni + 1) * in_len];
                // the image this thread most likely takes next (rayon splits the range)
                let next = next_block(x, ni, n, in_len);
                // SAFETY: the CPU has AVX-512F and the problem is not empty
                // (`implicit_problem`); the store's second result or mask holds one result
                // (compiled so), whose block ni only this image's task touches.
                unsafe {
                    let (store, y) = (store.offset(ni * out_len), &mut y[..out_len]);
                    let bias = bias.as_deref();
                    match &winograd {
                        Some((wg, u)) => wg.run(img, u.as_slice(), scratch, (y, store), bias, next),
                        None => {
                            let kernel = (packed.as_slice(), &offs[..]);
                            problem.run(img, kernel, scratch, (y, store), bias, next)
                        }
                    }
                };
            })
        }
    }

    /// An implicit-gemm kernel gradient (see `implicit_problem`): each range of images sums into
    /// its own transposed gradient ([`RangeSums`]), transposed into its result at the end; with
    /// a bias gradient, the cotangent's channel sums too. `hooks` run another convolution's
    /// work on each image with it (see [`Conv::beside`]).
    ///
    /// # Safety
    /// As [`Conv::run`], and `problem` comes from `implicit_problem()` for this kernel gradient;
    /// the hooks may run on any thread, each image once.
    #[cfg(target_arch = "x86_64")]
    unsafe fn implicit_kernel_grad(
        &self,
        slots: &Slots,
        threads: usize,
        problem: &Problem,
        cotangent: Cotangent,
        hooks: ImageHooks,
    ) {
        let n = self.input[0];
        let dy_len = problem.o * problem.ho * problem.wo;
        let parts = self.image_ranges(threads);
        // SAFETY: forwarded from the caller.
        let sums = unsafe { RangeSums::new(self, slots, *problem, parts, cotangent.is_none()) };
        let range = |k: usize| {
            let end = (k + 1) * n / parts;
            for ni in k * n / parts..end {
                hooks.before(k, ni, end);
                // SAFETY (both): range k is summed by this task only.
                match cotangent {
                    Some(make) => with_buffer::<f32, _>(&COTANGENT, dy_len, |dyi| {
                        make(ni, dyi);
                        unsafe { sums.add(k, ni, end, Some(dyi)) }
                    }),
                    None => unsafe { sums.add(k, ni, end, None) },
                }
                hooks.after(ni);
            }
        };
        if parts > 1 {
            crate::parallel::for_each(parts, range);
        } else {
            range(0);
        }
        // SAFETY: forwarded from the caller.
        unsafe { sums.finish(slots) };
    }

    /// The input gradient of an f32 convolution with a stride above 1, one group and no
    /// dilation, on a CPU with AVX-512: one implicit gemm per output phase
    /// (`implicit::PhasedInputGrad`) instead of gemm + col2im.
    fn is_phased_input_grad(&self) -> bool {
        let [o, cg, kh, kw] = self.kernel;
        let fits = !self.f64
            && matches!(self.kind, ConvKind::InputGrad { .. })
            && self.groups == 1
            && self.stride != [1, 1]
            && self.dilation == [1, 1]
            && o * cg * kh * kw * 4 <= 1 << 20;
        #[cfg(target_arch = "x86_64")]
        return fits && std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Runs a phased input gradient (see `is_phased_input_grad`): the phases' kernels packed
    /// once, then each image's gradient.
    ///
    /// # Safety
    /// As [`Conv::run`], and `is_phased_input_grad()` holds.
    unsafe fn phased_input_grad(&self, slots: &Slots, threads: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let [_, c, h, wd] = self.input;
            let out = slots.ptr(self.out);
            let dx_len = c * h * wd;
            // SAFETY: forwarded from the caller.
            let image = unsafe { self.phased_image(slots) };
            self.each_image(threads, |ni, _| {
                // SAFETY: image ni's gradient, written by this task only.
                image(ni, unsafe {
                    std::slice::from_raw_parts_mut(out.at::<f32>(ni * dx_len), dx_len)
                })
            });
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (slots, threads);
    }

    /// The per-image work of a phased input gradient: `image(ni, dx)` writes image ni's
    /// gradient (masked, with a mask) into `dx` (`c × h × w`).
    ///
    /// # Safety
    /// As [`Conv::run`], and `is_phased_input_grad()` holds.
    #[cfg(target_arch = "x86_64")]
    unsafe fn phased_image<'a>(
        &'a self,
        slots: &'a Slots,
    ) -> impl Fn(usize, &mut [f32]) + Sync + 'a {
        let [n, c, h, wd] = self.input;
        let o = self.kernel[0];
        let dy_len = o * self.out_hw[0] * self.out_hw[1];
        // SAFETY: the operand slots hold the checked geometry's lengths (the caller's contract).
        let (dy, w) = unsafe {
            (
                slots.get::<f32>(self.a, n * dy_len),
                slots.get::<f32>(self.b, self.kernel.iter().product()),
            )
        };
        let phased = PhasedInputGrad::new(
            self.input,
            self.kernel,
            self.out_hw,
            self.stride,
            self.pad_lo,
            w,
        );
        let dx_len = c * h * wd;
        // SAFETY: a mask slot holds one result (compiled so), only read meanwhile.
        let mask = self
            .mask
            .map(|m| unsafe { slots.get::<f32>(m, n * dx_len) });
        move |ni, dx| {
            with_scratch::<f32, _>(phased.scratch_len(), |scratch| {
                let mask = mask.map(|m| &m[ni * dx_len..(ni + 1) * dx_len]);
                // the image this thread most likely takes next (rayon splits the range)
                let next = next_block(dy, ni, n, dy_len);
                let dy = &dy[ni * dy_len..(ni + 1) * dy_len];
                // SAFETY: the CPU has AVX-512F (`is_phased_input_grad`).
                unsafe { phased.run(dy, scratch, &mut dx[..dx_len], mask, next) };
            })
        }
    }

    /// Whether this input gradient can hand its result to a kernel gradient image by image
    /// (`then`): the implicit and phased paths work per image.
    pub(crate) fn is_per_image_input_grad(&self) -> bool {
        matches!(self.kind, ConvKind::InputGrad { .. })
            && (self.implicit_problem().is_some() || self.is_phased_input_grad())
    }

    /// Whether this kernel gradient can take its cotangent image by image from an input
    /// gradient (`then`): the direct and implicit paths work per image.
    pub(crate) fn is_per_image_kernel_grad(&self) -> bool {
        matches!(self.kind, ConvKind::KernelGrad { .. })
            && (self.is_direct() || self.implicit_problem().is_some())
    }

    /// This input gradient and the kernel gradient `kg` that reads it (see `then`): each range
    /// of images' kernel-gradient sums takes every image's cotangent from this convolution's
    /// per-image work, written into a per-thread buffer in cache instead of the arena.
    ///
    /// # Safety
    /// As [`Conv::run`] for both, with `is_per_image_input_grad()` and
    /// `kg.is_per_image_kernel_grad()`.
    unsafe fn input_then_kernel_grad(&self, kg: &Conv, slots: &Slots, threads: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (all): forwarded from the caller.
            let make = unsafe { self.input_grad_image(slots) };
            let cotangent: Cotangent = Some(&*make);
            // the kernel gradient beside (`beside`) sums each image first, in `kg`'s ranges
            let parts = kg.image_ranges(threads);
            let sums = self
                .beside
                .as_deref()
                .map(|b| unsafe { RangeSums::new(b, slots, b.beside_problem(), parts, true) });
            // SAFETY: `kg`'s range k runs on one task at a time.
            let before = sums
                .as_ref()
                .map(|s| move |k, ni, end| unsafe { s.add(k, ni, end, None) });
            let hooks = ImageHooks {
                before: before
                    .as_ref()
                    .map(|f| f as &(dyn Fn(usize, usize, usize) + Sync)),
                after: None,
            };
            if kg.is_direct() {
                unsafe { kg.kernel_grad_direct(slots, threads, cotangent, hooks) }
            } else if let Some(problem) = kg.implicit_problem() {
                unsafe { kg.implicit_kernel_grad(slots, threads, &problem, cotangent, hooks) }
            }
            if let Some(sums) = sums {
                unsafe { sums.finish(slots) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (kg, slots, threads);
    }

    /// The implicit-gemm problem of a kernel gradient run beside an input gradient (compiled
    /// only when it has one: `is_beside_kernel_grad`).
    #[cfg(target_arch = "x86_64")]
    fn beside_problem(&self) -> Problem {
        self.implicit_problem()
            .expect("a kernel gradient beside an input gradient is an implicit gemm")
    }

    /// The per-image work of a per-image input gradient (`is_per_image_input_grad`): the
    /// implicit gemm of a unit-stride one, else the phased one.
    ///
    /// # Safety
    /// As [`Conv::run`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn input_grad_image<'a>(&'a self, slots: &'a Slots) -> Box<ImageWork<'a>> {
        // SAFETY (both): forwarded from the caller.
        match self.implicit_problem() {
            Some(problem) => Box::new(unsafe { self.implicit_image(slots, problem) }),
            None => Box::new(unsafe { self.phased_image(slots) }),
        }
    }

    /// Whether this kernel gradient can run beside an input gradient that reads its cotangent
    /// (`beside`): the implicit-gemm path sums image by image.
    pub(crate) fn is_beside_kernel_grad(&self) -> bool {
        matches!(self.kind, ConvKind::KernelGrad { .. }) && self.implicit_problem().is_some()
    }

    /// This input gradient with the kernel gradient `kg` of the same layer beside it (see
    /// `beside`): `kg`'s ranges of images drive both, each image's kernel-gradient sums first,
    /// then this gradient of the image, which reads the cotangent (and the mask) from cache.
    ///
    /// # Safety
    /// As [`Conv::run`] for both, with `is_per_image_input_grad()` and
    /// `kg.is_beside_kernel_grad()`.
    unsafe fn input_beside_kernel_grad(&self, kg: &Conv, slots: &Slots, threads: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let [_, c, h, wd] = self.input;
            let (out, dx_len) = (slots.ptr(self.out), c * h * wd);
            let problem = kg.beside_problem();
            // SAFETY (all): forwarded from the caller.
            let image = unsafe { self.input_grad_image(slots) };
            // SAFETY: image ni's gradient, written by this image's task only.
            let after = |ni: usize| {
                image(ni, unsafe {
                    std::slice::from_raw_parts_mut(out.at::<f32>(ni * dx_len), dx_len)
                })
            };
            let hooks = ImageHooks {
                before: None,
                after: Some(&after),
            };
            unsafe { kg.implicit_kernel_grad(slots, threads, &problem, None, hooks) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (kg, slots, threads);
    }

    /// A 1×1 kernel with unit stride and no padding multiplies the image directly.
    fn is_pointwise(&self) -> bool {
        self.kernel[2] == 1
            && self.kernel[3] == 1
            && self.stride == [1, 1]
            && self.pad_lo == [0, 0]
            && self.out_hw == [self.input[2], self.input[3]]
    }

    unsafe fn go<T: GemmElem>(&self, slots: &Slots, threads: usize) {
        let [n, c, h, wd] = self.input;
        let [o, cg, kh, kw] = self.kernel;
        let p = self.out_hw[0] * self.out_hw[1];
        let kk = cg * kh * kw;
        let (x_len, w_len, y_len) = (n * c * h * wd, o * kk, n * o * p);
        let out = slots.ptr(self.out);
        let epilogue = self.epilogue::<T>(slots);
        // SAFETY (all three arms): the operand slots hold the operands of this kind with the
        // lengths computed from the checked geometry (the caller's contract).
        unsafe {
            match self.kind {
                ConvKind::Forward => self.forward::<T>(
                    slots.get::<T>(self.a, x_len),
                    slots.get::<T>(self.b, w_len),
                    epilogue,
                    out,
                    threads,
                ),
                ConvKind::InputGrad { .. } => self.input_grad::<T>(
                    slots.get::<T>(self.a, y_len),
                    slots.get::<T>(self.b, w_len),
                    epilogue,
                    out,
                    threads,
                ),
                ConvKind::KernelGrad { .. } => self.kernel_grad::<T>(
                    slots.get::<T>(self.a, x_len),
                    slots.get::<T>(self.b, y_len),
                    out,
                    self.bias_grad.map(|s| slots.ptr(s)),
                    threads,
                ),
            }
        };
    }

    /// Multiply-adds of the convolution (the same for all three kinds).
    fn work(&self) -> usize {
        let [n, _, _, _] = self.input;
        let [o, cg, kh, kw] = self.kernel;
        n * o * self.out_hw[0] * self.out_hw[1] * cg * kh * kw
    }

    /// Runs `image(ni, gemm_parallelism)` for every image: images in parallel when there are
    /// several and enough work, else in order with gemm's own threads for large products.
    fn each_image(&self, threads: usize, image: impl Fn(usize, Parallelism) + Sync) {
        let (n, work) = (self.input[0], self.work());
        if threads > 1 && n >= 2 && work >= PAR_MIN {
            crate::parallel::for_each(n, |ni| image(ni, Parallelism::None));
        } else {
            let par = if threads > 1 && work >= PAR_MIN * 4 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            (0..n).for_each(|ni| image(ni, par));
        }
    }

    /// `y[n, g] = W[g] · im2col(x[n, g])` (plus `bias`, per output channel, if given).
    unsafe fn forward<T: GemmElem>(
        &self,
        x: &[T],
        w: &[T],
        epilogue: Option<Epilogue<'_, T>>,
        out: Ptr,
        threads: usize,
    ) {
        let [_, c, h, wd] = self.input;
        let [o, cg, kh, kw] = self.kernel;
        let og = o / self.groups;
        let (kk, p) = (cg * kh * kw, self.out_hw[0] * self.out_hw[1]);
        let pointwise = self.is_pointwise();
        self.each_image(threads, |ni, par| {
            for g in 0..self.groups {
                let xg = &x[(ni * c + g * cg) * h * wd..(ni * c + (g + 1) * cg) * h * wd];
                let mul = |rhs: &[T]| {
                    // SAFETY: the kernel rows of group g are `og × kk` contiguous, `rhs` is
                    // `kk × p`, and the result block of image ni, group g is written by this
                    // call only.
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
                    }
                };
                if pointwise {
                    mul(xg)
                } else {
                    with_scratch::<T, _>(kk * p + self.split_len(), |buf| {
                        let (col, split) = buf.split_at_mut(kk * p);
                        wide(|| self.im2col(xg, col, p, split));
                        mul(col)
                    })
                }
                if let Some(e) = &epilogue {
                    // SAFETY: the result block of image ni, group g, just written by this task
                    // (and the same block of the ReLU's result, written by this task only).
                    unsafe { e.apply(out, (ni * o + g * og) * p, g * og..(g + 1) * og, p) };
                }
            }
        });
    }

    /// `dx[n, g] = col2im(W[g]ᵀ · dy[n, g])` (then `mask`ed, if given).
    unsafe fn input_grad<T: GemmElem>(
        &self,
        dy: &[T],
        w: &[T],
        mask: Option<Epilogue<'_, T>>,
        out: Ptr,
        threads: usize,
    ) {
        let [_, c, h, wd] = self.input;
        let [o, cg, kh, kw] = self.kernel;
        let og = o / self.groups;
        let (kk, p) = (cg * kh * kw, self.out_hw[0] * self.out_hw[1]);
        let pointwise = self.is_pointwise();
        self.each_image(threads, |ni, par| {
            for g in 0..self.groups {
                let dyg = &dy[(ni * o + g * og) * p..];
                // the kernel block of group g read transposed: element (row k, column o) at o·kk + k
                let mul = |dst: *mut T| {
                    // SAFETY: `dst` holds `kk × p` elements written by this call only, the kernel
                    // block is `og × kk` and the cotangent block `og × p`, both contiguous.
                    unsafe {
                        gemm_into::<T>(
                            (kk, p, og),
                            dst,
                            p as isize,
                            w[g * og * kk..].as_ptr(),
                            (1, kk as isize),
                            dyg.as_ptr(),
                            (p as isize, 1),
                            par,
                        )
                    }
                };
                let dx = out.at::<T>((ni * c + g * cg) * h * wd);
                if pointwise {
                    mul(dx)
                } else {
                    with_scratch::<T, _>(kk * p + self.split_len(), |buf| {
                        let (col, split) = buf.split_at_mut(kk * p);
                        mul(col.as_mut_ptr());
                        // SAFETY: the gradient of image ni, group g (`cg × h × w` elements) is
                        // written by this image's task only.
                        let dxg = unsafe { std::slice::from_raw_parts_mut(dx, cg * h * wd) };
                        wide(|| self.col2im(col, dxg, split));
                    })
                }
                if let Some(e) = &mask {
                    // SAFETY: the block just written by this task.
                    unsafe {
                        e.apply(
                            out,
                            (ni * c + g * cg) * h * wd,
                            g * cg..(g + 1) * cg,
                            h * wd,
                        )
                    };
                }
            }
        });
    }

    /// `dW[g]ᵀ = Σ_chunks im2col(x[chunk, g]) · dy[chunk, g]ᵀ`: the images are taken a chunk at a
    /// time (about `KG_COLS` output positions), their unfolded patches side by side in one column
    /// matrix and their cotangents transposed (`p × og` each, a ninth or less of the column
    /// matrix's size) into one right operand with unit column stride, so each chunk is one gemm
    /// with a long reduction and the result is written through transposed strides. With several
    /// threads each sums a contiguous range of images and the partial sums are added in range
    /// order (so results do not depend on scheduling).
    unsafe fn kernel_grad<T: GemmElem>(
        &self,
        x: &[T],
        dy: &[T],
        out: Ptr,
        db: Option<Ptr>,
        threads: usize,
    ) {
        let [n, c, h, wd] = self.input;
        let [o, cg, kh, kw] = self.kernel;
        let og = o / self.groups;
        let (kk, p) = (cg * kh * kw, self.out_hw[0] * self.out_hw[1]);
        let chunk = (KG_COLS / p.max(1)).clamp(1, n.max(1));
        // Sums images `range` into `res[0]` (`o × kk`) and, with a bias gradient, the cotangent's
        // channel sums into `res[1]` (`o`).
        let sum = |range: std::ops::Range<usize>, res: &[*mut T], par: Parallelism| {
            let dw = res[0];
            // SAFETY: the bias gradient of this range, `o` elements, written by this call only.
            let mut db = res
                .get(1)
                .map(|&d| unsafe { std::slice::from_raw_parts_mut(d, o) });
            if let Some(db) = db.as_deref_mut() {
                db.fill(T::ZERO);
            }
            // gemm's microkernel wants a column-major destination and a left operand with unit
            // row stride: the sum is kept as `og × kk` column-major (`acc[k·og + o]`), the left
            // operand is the transposed cotangent, the right one the column matrix read down
            // its columns; `acc` is transposed into `dw` at the end.
            let mut acc = vec![T::ZERO; og * kk];
            for g in 0..self.groups {
                for c0 in range.clone().step_by(chunk) {
                    let c1 = (c0 + chunk).min(range.end);
                    let cols = (c1 - c0) * p;
                    with_scratch::<T, _>((kk + og) * cols + self.split_len(), |buf| {
                        let (col, rest) = buf.split_at_mut(kk * cols);
                        let (dyt, split) = rest.split_at_mut(og * cols);
                        for ni in c0..c1 {
                            let j = (ni - c0) * p;
                            let xg =
                                &x[(ni * c + g * cg) * h * wd..(ni * c + (g + 1) * cg) * h * wd];
                            wide(|| self.im2col(xg, &mut col[j..], cols, split));
                            let dyg = &dy[(ni * o + g * og) * p..(ni * o + (g + 1) * og) * p];
                            transpose(dyg, og, p, &mut dyt[j * og..(j + p) * og]);
                            if let Some(db) = db.as_deref_mut() {
                                add_row_sums(dyg, p, &mut db[g * og..(g + 1) * og]);
                            }
                        }
                        // SAFETY: `acc` is `og × kk` column-major, `dyt` is `og × cols` with
                        // unit row stride and `col` is `cols × kk` with unit row stride, all
                        // within their buffers.
                        unsafe {
                            gemm_acc::<T>(
                                (og, kk, cols),
                                acc.as_mut_ptr(),
                                (1, og as isize),
                                dyt.as_ptr(),
                                (1, og as isize),
                                col.as_ptr(),
                                (1, cols as isize),
                                c0 > range.start,
                                par,
                            )
                        }
                    })
                }
                // SAFETY: `dw`'s block of group g is `og × kk`, owned by this range.
                let dwg = unsafe { std::slice::from_raw_parts_mut(dw.add(g * og * kk), og * kk) };
                transpose(&acc, kk, og, dwg);
            }
        };
        self.sum_over_images((out, o * kk), db, threads, sum);
    }

    /// Image ranges a kernel gradient's sum is split into: `RANGES_PER_THREAD` per thread (taken
    /// dynamically, added in range order), one without threads or enough work.
    fn image_ranges(&self, threads: usize) -> usize {
        if threads > 1 && self.work() >= PAR_MIN {
            (threads * RANGES_PER_THREAD).min(self.input[0]).max(1)
        } else {
            1
        }
    }

    /// Runs `sum(images, results, gemm_parallelism)`, which writes the kernel gradient of a
    /// range of images into `results[0]` (`dw`: pointer, elements) and, with `db`, its bias
    /// gradient (`o` elements) into `results[1]`: with several threads the images are split into
    /// `RANGES_PER_THREAD` contiguous ranges per thread, taken by whichever thread is free (a
    /// core slowed by another process then holds up one small range, not half the batch), and
    /// the partial sums are added in range order, so the result does not depend on scheduling.
    fn sum_over_images<T: GemmElem>(
        &self,
        dw: (Ptr, usize),
        db: Option<Ptr>,
        threads: usize,
        sum: impl Fn(Range<usize>, &[*mut T], Parallelism) + Sync,
    ) {
        let outs: Vec<(Ptr, usize)> = std::iter::once(dw)
            .chain(db.map(|d| (d, self.kernel[0])))
            .collect();
        let outs = outs.as_slice();
        let n = self.input[0];
        let p = self.out_hw[0] * self.out_hw[1];
        let total: usize = outs.iter().map(|o| o.1).sum();
        if total == 0 {
            return;
        }
        if n == 0 || p == 0 {
            for &(at, len) in outs {
                // SAFETY: each result holds its `len` elements.
                unsafe { std::slice::from_raw_parts_mut(at.at::<T>(0), len) }.fill(T::ZERO);
            }
            return;
        }
        let results = || -> Vec<*mut T> { outs.iter().map(|o| o.0.at::<T>(0)).collect() };
        let parts = self.image_ranges(threads);
        if parts == 1 {
            let par = if threads > 1 && self.work() >= PAR_MIN * 4 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            sum(0..n, &results(), par);
            return;
        }
        // range 0 writes the results, range k > 0 block k - 1 of `partial`, laid out as `outs`
        let mut partial = vec![T::ZERO; (parts - 1) * total];
        let base = Ptr(partial.as_mut_ptr() as *mut u8);
        let block = |k: usize| -> Vec<*mut T> {
            let mut at = (k - 1) * total;
            outs.iter()
                .map(|o| {
                    let q = base.at::<T>(at);
                    at += o.1;
                    q
                })
                .collect()
        };
        crate::parallel::for_each(parts, |k| {
            let range = k * n / parts..(k + 1) * n / parts;
            let res = if k == 0 { results() } else { block(k) };
            sum(range, &res, Parallelism::None)
        });
        let mut at = 0;
        for _ in 1..parts {
            for &(dst, len) in outs {
                // SAFETY: the result holds `len` elements; the parallel part is over.
                let dst = unsafe { std::slice::from_raw_parts_mut(dst.at::<T>(0), len) };
                for (d, v) in dst.iter_mut().zip(&partial[at..at + len]) {
                    *d += *v;
                }
                at += len;
            }
        }
    }

    /// For column-matrix rows of kernel column `kx`: output columns `lo..hi` read input columns
    /// `first, first + sw, …`; the others read padding. `None` when every column reads padding.
    #[inline(always)]
    fn col_span(&self, kx: usize) -> Option<(usize, usize, usize)> {
        let wd = self.input[3];
        let wo = self.out_hw[1];
        let sw = self.stride[1];
        let off = (kx * self.dilation[1]) as i64 - self.pad_lo[1];
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
        // lo·sw + off ≥ 0 by the choice of lo
        (lo < hi).then(|| (lo, hi, ((lo * sw) as i64 + off) as usize))
    }

    /// The input row read by output row `oy` at kernel row `ky`, if inside the image.
    #[inline(always)]
    fn in_row(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.stride[0] + ky * self.dilation[0]) as i64 - self.pad_lo[0];
        (iy >= 0 && iy < self.input[2] as i64).then_some(iy as usize)
    }

    /// The output rows `y0..y1` whose input row at kernel row `ky` lies inside the image (the
    /// rows of `in_row` that are `Some`).
    #[inline(always)]
    fn row_span(&self, ky: usize) -> (usize, usize) {
        let (sh, h, ho) = (self.stride[0] as i64, self.input[2] as i64, self.out_hw[0]);
        let off = (ky * self.dilation[0]) as i64 - self.pad_lo[0];
        // oy·sh + off ≥ 0 and ≤ h − 1
        let y0 = if off >= 0 { 0 } else { (-off + sh - 1) / sh };
        let y1 = if h - 1 - off < 0 {
            0
        } else {
            (h - 1 - off) / sh + 1
        };
        let (y0, y1) = ((y0 as usize).min(ho), (y1 as usize).min(ho));
        (y0, y1.max(y0))
    }

    /// The output rows `y0..y1` that read inside the image at kernel row `ky`, where (in a plane
    /// of rows of length `rl`, read from column `start`) the first reads `n` elements at `at` and
    /// each next one `step` further: `(y0, y1, at, step)`, checked to end inside a plane of
    /// `plane_len` elements, so the row loops need no checks of their own.
    fn row_block(
        &self,
        ky: usize,
        (rl, start): (usize, usize),
        n: usize,
        plane_len: usize,
    ) -> Option<(usize, usize, usize, usize)> {
        let (y0, y1) = self.row_span(ky);
        if y0 >= y1 {
            return None;
        }
        let iy0 = self.in_row(y0, ky).expect("inside the image");
        let (at, step) = (iy0 * rl + start, self.stride[0] * rl);
        assert!(at + (y1 - 1 - y0) * step + n <= plane_len);
        Some((y0, y1, at, step))
    }

    /// Columns per phase of a row split by the column stride (see [`Conv::split_phases`]).
    fn phase_width(&self) -> usize {
        self.input[3].div_ceil(self.stride[1])
    }

    /// Scratch elements for one group of one image split into column phases (0 at unit stride).
    fn split_len(&self) -> usize {
        if self.stride[1] == 1 {
            return 0;
        }
        let [_, _, h, _] = self.input;
        self.kernel[1] * h * self.stride[1] * self.phase_width()
    }

    /// Copies one group of one image with every row split into its column phases (`sw` the column
    /// stride, `pw` the phase width): `split[(ci·h + iy)·sw·pw + r·pw + j] = x[ci, iy, j·sw + r]`,
    /// so a strided unfolding row is a contiguous run of one phase.
    #[inline(always)]
    fn split_phases<T: GemmElem>(&self, xg: &[T], split: &mut [T]) {
        let [_, _, h, wd] = self.input;
        let (sw, pw) = (self.stride[1], self.phase_width());
        for (row, dst) in xg[..self.kernel[1] * h * wd]
            .chunks_exact(wd)
            .zip(split.chunks_exact_mut(sw * pw))
        {
            if sw == 2 {
                let (e, o) = dst.split_at_mut(pw);
                let mut pairs = row.chunks_exact(2);
                for ((e, o), q) in e.iter_mut().zip(o.iter_mut()).zip(&mut pairs) {
                    *e = q[0];
                    *o = q[1];
                }
                if let [last] = pairs.remainder() {
                    e[pw - 1] = *last;
                }
            } else {
                for r in 0..sw.min(wd) {
                    let n = (wd - r).div_ceil(sw);
                    strided_copy(&row[r..], sw, &mut dst[r * pw..], 1, n);
                }
            }
        }
    }

    /// The adjoint of [`Conv::split_phases`]: writes the phases back into rows of `dxg`.
    #[inline(always)]
    fn merge_phases<T: GemmElem>(&self, split: &[T], dxg: &mut [T]) {
        let [_, _, h, wd] = self.input;
        let (sw, pw) = (self.stride[1], self.phase_width());
        for (row, src) in dxg[..self.kernel[1] * h * wd]
            .chunks_exact_mut(wd)
            .zip(split.chunks_exact(sw * pw))
        {
            if sw == 2 {
                let (e, o) = src.split_at(pw);
                let mut pairs = row.chunks_exact_mut(2);
                for ((e, o), q) in e.iter().zip(o).zip(&mut pairs) {
                    q[0] = *e;
                    q[1] = *o;
                }
                if let [last] = pairs.into_remainder() {
                    *last = e[pw - 1];
                }
            } else {
                for r in 0..sw.min(wd) {
                    let n = (wd - r).div_ceil(sw);
                    strided_copy(&src[r * pw..], 1, &mut row[r..], sw, n);
                }
            }
        }
    }

    /// Unfolds the patches of one group of one image: `col[((ci·kh + ky)·kw + kx)·ld + oy·wo + ox]`
    /// is the input at `(oy·sh + ky·dh − ph, ox·sw + kx·dw − pw)`, or 0 outside the image (`ld`:
    /// the row stride, at least `ho·wo`; the elements between rows are left alone). `split` is
    /// scratch of [`Conv::split_len`] elements: with a column stride the image is first split
    /// into column phases, so every copy is contiguous.
    #[inline(always)]
    fn im2col<T: GemmElem>(&self, xg: &[T], col: &mut [T], ld: usize, split: &mut [T]) {
        let [_, _, h, wd] = self.input;
        let [_, cg, kh, kw] = self.kernel;
        let [ho, wo] = self.out_hw;
        let sw = self.stride[1];
        // (rows, row length): the image as read, or split into phases
        let (src, rl) = if sw == 1 {
            (xg, wd)
        } else {
            self.split_phases(xg, split);
            (&*split, sw * self.phase_width())
        };
        let pw = self.phase_width();
        let mut rows = col.chunks_mut(ld).map(|r| &mut r[..ho * wo]);
        for ci in 0..cg {
            let plane = &src[ci * h * rl..(ci + 1) * h * rl];
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(row) = rows.next() else { return };
                    let Some((lo, hi, first)) = self.col_span(kx) else {
                        zero_short(row);
                        continue;
                    };
                    // where output column lo's input sits in a (split) row
                    let start = if sw == 1 {
                        first
                    } else {
                        (first % sw) * pw + first / sw
                    };
                    let block = self.row_block(ky, (rl, start), hi - lo, plane.len());
                    let (y0, y1) = block.map_or((0, 0), |b| (b.0, b.1));
                    for r in row[..y0 * wo].chunks_mut(wo) {
                        zero_short(r);
                    }
                    for r in row[y1 * wo..].chunks_mut(wo) {
                        zero_short(r);
                    }
                    if let Some((y0, y1, at, step)) = block {
                        assert!(y1 * wo <= row.len() && hi <= wo);
                        // SAFETY: every row written is inside `row` (checked above), every row
                        // read inside `plane` (checked by `row_block`).
                        unsafe {
                            unfold_rows(
                                row.as_mut_ptr().add(y0 * wo),
                                wo,
                                plane.as_ptr().add(at),
                                step,
                                y1 - y0,
                                (lo, hi),
                            )
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`: `dxg` (one group of one image) becomes the sum of every column
    /// entry at the input position it was read from (`split`: scratch as for `im2col`, the sums
    /// kept in column phases until the end).
    #[inline(always)]
    fn col2im<T: GemmElem>(&self, col: &[T], dxg: &mut [T], split: &mut [T]) {
        let [_, _, h, wd] = self.input;
        let [_, cg, kh, kw] = self.kernel;
        let [ho, wo] = self.out_hw;
        let sw = self.stride[1];
        let pw = self.phase_width();
        let rl = if sw == 1 { wd } else { sw * pw };
        let acc: &mut [T] = if sw == 1 { dxg } else { &mut split[..] };
        acc[..cg * h * rl].fill(T::ZERO);
        let mut rows = col.chunks(ho * wo);
        'unfold: for ci in 0..cg {
            let plane = &mut acc[ci * h * rl..(ci + 1) * h * rl];
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(row) = rows.next() else {
                        break 'unfold;
                    };
                    let Some((lo, hi, first)) = self.col_span(kx) else {
                        continue;
                    };
                    let start = if sw == 1 {
                        first
                    } else {
                        (first % sw) * pw + first / sw
                    };
                    if let Some((y0, y1, at, step)) =
                        self.row_block(ky, (rl, start), hi - lo, plane.len())
                    {
                        assert!(y1 * wo <= row.len() && hi <= wo);
                        // SAFETY: every row read is inside `row` (checked above), every row
                        // written inside `plane` (checked by `row_block`); different buffers.
                        unsafe {
                            fold_rows(
                                plane.as_mut_ptr().add(at),
                                step,
                                row.as_ptr().add(y0 * wo + lo),
                                wo,
                                y1 - y0,
                                hi - lo,
                            )
                        }
                    }
                }
            }
        }
        if sw != 1 {
            self.merge_phases(split, dxg);
        }
    }
}

/// Output channels (rows) one pass of `direct_image` computes: 8 × 2 accumulators of 16 lanes.
const DIRECT_OC: usize = 8;
/// Output columns one pass computes (two 16-lane vectors).
const DIRECT_COLS: usize = 32;
/// Largest `c/groups × kh × kw` convolved directly: beyond it im2col + gemm is at gemm's speed.
const DIRECT_MAX_TAPS: usize = 64;

/// Geometry of a direct convolution of one image (stride 1, one group).
#[cfg(target_arch = "x86_64")]
struct Direct {
    c: usize,
    kh: usize,
    kw: usize,
    o: usize,
    ho: usize,
    wo: usize,
    /// Rows and row length of the zero-padded image planes.
    hp: usize,
    wp: usize,
}

/// `y[oc, oy, ox] = Σ_{ci,ky,kx} w[oc, ci, ky, kx] · xp[ci, oy + ky, ox + kx]` for one image:
/// per output row, chunks of 32 columns by blocks of 8 channels, each tap one pair of loads of
/// the padded row and 16 multiply-adds with the broadcast weights (16 accumulators in registers,
/// a tail chunk's columns masked on store). With `bias` (`o` values, or null) each sum starts
/// from its channel's bias, and with `relu` only `max(0, y)` (`true`) or `max(y, 0)` is stored:
/// the bias-and-ReLU epilogue in registers.
///
/// # Safety
/// The CPU has AVX-512F; `xp` holds `c` planes of `hp × wp`, `wpk` the weights packed as
/// `[block][tap][DIRECT_OC]`, and `y` points at `o × ho × wo` writable elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn direct_image(
    xp: &[f32],
    wpk: &[f32],
    y: *mut f32,
    g: &Direct,
    (bias, relu): (Option<&[f32]>, Option<bool>),
) {
    use std::arch::x86_64::*;
    let taps = g.c * g.kh * g.kw;
    debug_assert!(
        xp.len() >= g.c * g.hp * g.wp && wpk.len() >= g.o.div_ceil(DIRECT_OC) * taps * DIRECT_OC
    );
    let mask = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    };
    for oy in 0..g.ho {
        for x0 in (0..g.wo).step_by(DIRECT_COLS) {
            let cols = (g.wo - x0).min(DIRECT_COLS);
            let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
            for b in 0..g.o.div_ceil(DIRECT_OC) {
                let mut acc: [[__m512; 2]; DIRECT_OC] = std::array::from_fn(|i| {
                    let v = match bias {
                        Some(bias) => _mm512_set1_ps(bias[(b * DIRECT_OC + i).min(g.o - 1)]),
                        None => _mm512_setzero_ps(),
                    };
                    [v; 2]
                });
                let mut wt = wpk.as_ptr().add(b * taps * DIRECT_OC);
                for ci in 0..g.c {
                    for ky in 0..g.kh {
                        let row = xp.as_ptr().add((ci * g.hp + oy + ky) * g.wp + x0);
                        for kx in 0..g.kw {
                            // SAFETY: x0 + kx + 31 < wp (the padded row's length)
                            let v0 = _mm512_loadu_ps(row.add(kx));
                            let v1 = _mm512_loadu_ps(row.add(kx + 16));
                            for (i, a) in acc.iter_mut().enumerate() {
                                let wv = _mm512_set1_ps(*wt.add(i));
                                a[0] = _mm512_fmadd_ps(wv, v0, a[0]);
                                a[1] = _mm512_fmadd_ps(wv, v1, a[1]);
                            }
                            wt = wt.add(DIRECT_OC);
                        }
                    }
                }
                let rows = (g.o - b * DIRECT_OC).min(DIRECT_OC);
                for (i, a) in acc.iter().take(rows).enumerate() {
                    let a = match relu {
                        Some(zero_first) => a.map(|v| crate::implicit::relu_vector(v, zero_first)),
                        None => *a,
                    };
                    let dst = y.add(((b * DIRECT_OC + i) * g.ho + oy) * g.wo + x0);
                    _mm512_mask_storeu_ps(dst, m0, a[0]);
                    if cols > 16 {
                        _mm512_mask_storeu_ps(dst.add(16), m1, a[1]);
                    }
                }
            }
        }
    }
}

/// Output channels and taps one pass of `direct_kernel_grad` sums (4 × 6 accumulators).
const KG_OC: usize = 4;
const KG_TAPS: usize = 6;

/// An implicit-gemm kernel gradient's sums by image range: range `k` sums into its own
/// transposed gradient (`taps × ldw`, or for a Winograd one the transformed sums `dU[ξ][c][ldw]`)
/// and channel sums, and [`RangeSums::finish`] adds them in range order and transposes once (one
/// transpose instead of one per range, and no second buffer of partial results: readme_cnn's
/// 64-channel kernel gradients have 8 ranges of 37k-74k sums). Results do not depend on which
/// thread sums which range. The sums' buffer is kept per thread between runs (`SUMS`) and each
/// range clears its own part as it starts, on the thread that sums it (a fresh zeroed block
/// each run cost page faults and a serial clear).
#[cfg(target_arch = "x86_64")]
struct RangeSums<'a> {
    conv: &'a Conv,
    problem: Problem,
    /// The Winograd form the sums take, if the kernel gradient runs as one.
    winograd: Option<Winograd>,
    offs: Vec<u32>,
    x: &'a [f32],
    /// The cotangent's slot, or nothing when each image's is made and handed to `add`.
    dy: &'a [f32],
    sums: Block,
    /// Elements of one range's sums.
    len: usize,
    /// Whether range k has started (and cleared its sums).
    started: Vec<AtomicBool>,
    bias_sums: Vec<f32>,
    /// Where `sums` and `bias_sums` start: range k writes its own blocks through them.
    at: (Ptr, Ptr),
}

thread_local! {
    /// The kernel-gradient range sums' buffer, kept between runs (see [`RangeSums`]).
    static SUMS: Cell<Option<Block>> = const { Cell::new(None) };
}

#[cfg(target_arch = "x86_64")]
impl<'a> RangeSums<'a> {
    /// # Safety
    /// As [`Conv::run`] for `conv`, `problem` from its `implicit_problem()`.
    unsafe fn new(
        conv: &'a Conv,
        slots: &'a Slots,
        problem: Problem,
        parts: usize,
        from_slot: bool,
    ) -> RangeSums<'a> {
        let n = conv.input[0];
        let in_len = problem.c * problem.h * problem.w;
        let dy_len = problem.o * problem.ho * problem.wo;
        // SAFETY: the operand slots hold the checked geometry's lengths (the caller's contract;
        // a cotangent made image by image has no slot).
        let (x, dy) = unsafe {
            let dy = if from_slot {
                slots.get::<f32>(conv.b, n * dy_len)
            } else {
                &[]
            };
            (slots.get::<f32>(conv.a, n * in_len), dy)
        };
        let winograd = Winograd::of(&problem).filter(|_| conv.winograd);
        let len = winograd.map_or(problem.taps() * problem.ldw(), |wg| wg.grad_sums_len());
        let bytes = parts * len * 4;
        let mut sums = match SUMS.take() {
            Some(b) if b.len() >= bytes => b,
            _ => Block::new(bytes),
        };
        let mut bias_sums = vec![0.0f32; parts * problem.o];
        let at = (Ptr(sums.ptr()), Ptr(bias_sums.as_mut_ptr() as *mut u8));
        RangeSums {
            conv,
            problem,
            winograd,
            offs: problem.tap_offsets(),
            x,
            dy,
            sums,
            len,
            started: (0..parts).map(|_| AtomicBool::new(false)).collect(),
            bias_sums,
            at,
        }
    }

    /// Adds image `ni` of range `k` (which ends at `end`) to the range's sums, its cotangent
    /// `dyi` or the slot's.
    ///
    /// # Safety
    /// The CPU has AVX-512F; one task at a time adds to range `k`.
    unsafe fn add(&self, k: usize, ni: usize, end: usize, dyi: Option<&[f32]>) {
        let pr = &self.problem;
        let (in_len, p, len) = (pr.c * pr.h * pr.w, pr.ho * pr.wo, self.len);
        let dy_len = pr.o * p;
        let dyi = dyi.unwrap_or_else(|| &self.dy[ni * dy_len..(ni + 1) * dy_len]);
        // the range's next image and its cotangent (if read from its slot)
        let next = [
            next_block(self.x, ni, end, in_len),
            next_block(self.dy, ni, end, dy_len),
        ];
        assert!(
            self.sums.as_slice::<f32>().len() >= (k + 1) * len
                && self.bias_sums.len() >= (k + 1) * pr.o
        );
        // SAFETY: range k's blocks (inside the buffers, checked above), written by this task
        // only (the caller's contract).
        let (acc, db) = unsafe {
            (
                std::slice::from_raw_parts_mut(self.at.0.at::<f32>(k * len), len),
                std::slice::from_raw_parts_mut(self.at.1.at::<f32>(k * pr.o), pr.o),
            )
        };
        if !self.started[k].swap(true, Ordering::Relaxed) {
            acc.fill(0.0);
        }
        let img = &self.x[ni * in_len..(ni + 1) * in_len];
        // SAFETY (both): the CPU has AVX-512F (the caller's contract) and the problem is not
        // empty (`implicit_problem`).
        match &self.winograd {
            Some(wg) => with_scratch::<f32, _>(wg.grad_scratch_len(), |scratch| unsafe {
                wg.add_kernel_grad((img, dyi), scratch, acc, next)
            }),
            None => with_scratch::<f32, _>(pr.scratch_len(), |scratch| unsafe {
                pr.add_kernel_grad((img, dyi), &self.offs, scratch, acc, next)
            }),
        }
        if self.conv.bias_grad.is_some() {
            add_row_sums(dyi, p, db);
        }
    }

    /// Adds the ranges' sums in order into the kernel gradient's result (and bias gradient).
    ///
    /// # Safety
    /// As [`RangeSums::new`]; every add is over.
    unsafe fn finish(mut self, slots: &Slots) {
        let (o, taps, len) = (self.problem.o, self.problem.taps(), self.len);
        let started: Vec<usize> = (0..self.started.len())
            .filter(|&k| self.started[k].load(Ordering::Relaxed))
            .collect();
        let all = self.sums.as_mut_slice::<f32>();
        match started.split_first() {
            // the first started range's sums take the others', chunk by chunk on any thread
            // (each element still adds the ranges in order)
            Some((&first, rest)) => {
                const CHUNK: usize = 4096;
                let base = Ptr(all.as_mut_ptr() as *mut u8);
                crate::parallel::for_each(len.div_ceil(CHUNK), |i| {
                    let at = i * CHUNK..((i + 1) * CHUNK).min(len);
                    // SAFETY: chunk i of each range's block, inside `all` (ranges below
                    // parts); chunks are disjoint, so only this task writes chunk i.
                    unsafe {
                        let acc = std::slice::from_raw_parts_mut(
                            base.at::<f32>(first * len + at.start),
                            at.len(),
                        );
                        for &k in rest {
                            let part = std::slice::from_raw_parts(
                                base.at::<f32>(k * len + at.start),
                                at.len(),
                            );
                            for (a, v) in acc.iter_mut().zip(part) {
                                *a += *v;
                            }
                        }
                    }
                });
                if first > 0 {
                    all.copy_within(first * len..(first + 1) * len, 0);
                }
            }
            // no images: a zero gradient
            None => all[..len].fill(0.0),
        }
        let sums = &all[..len];
        // SAFETY: the result slot holds the `o × taps` gradient (the caller's contract).
        let dw = unsafe {
            std::slice::from_raw_parts_mut(slots.ptr(self.conv.out).at::<f32>(0), o * taps)
        };
        // SAFETY (both): the CPU has AVX-512F (`implicit_problem`).
        match &self.winograd {
            Some(wg) => with_scratch::<f32, _>(taps * self.problem.ldw(), |acc_t| unsafe {
                wg.kernel_grad_result(sums, acc_t, dw)
            }),
            None => unsafe { self.problem.kernel_grad_result(sums, dw) },
        }
        if let Some(b) = self.conv.bias_grad {
            // SAFETY: a bias-gradient slot holds `o` elements (compiled so).
            let db = unsafe { std::slice::from_raw_parts_mut(slots.ptr(b).at::<f32>(0), o) };
            db.fill(0.0);
            for part in self.bias_sums.chunks_exact(o) {
                for (a, v) in db.iter_mut().zip(part) {
                    *a += *v;
                }
            }
        }
        // keep the larger buffer for the next run
        let sums = std::mem::replace(&mut self.sums, Block::new(0));
        match SUMS.take() {
            Some(kept) if kept.len() > sums.len() => SUMS.set(Some(kept)),
            _ => SUMS.set(Some(sums)),
        }
    }
}

/// A direct kernel gradient's sums over a range of images, kept as 16-lane vectors (one per
/// channel and tap, and per channel for the bias gradient) so that each image's block adds to
/// them with vector loads and stores; the lanes are added once, at the end of the range. (Adding
/// each image's 24 accumulators across lanes cost a shuffle chain each, on the benchmark
/// Xeon's multiply-add port.)
struct DirectGradLanes {
    /// `[oc][tap][16]`, then `[oc][16]` for the bias gradient.
    sums: Block,
    o: usize,
    taps: usize,
    bias: bool,
}

impl DirectGradLanes {
    fn new(o: usize, taps: usize, bias: bool) -> DirectGradLanes {
        let len = (o * taps + if bias { o } else { 0 }) * 16;
        DirectGradLanes {
            sums: Block::new(len * 4),
            o,
            taps,
            bias,
        }
    }

    /// Adds the sums across lanes to `dw` (`o × taps`) and, if given, `db` (`o`).
    fn add_to(&self, dw: &mut [f32], db: Option<&mut [f32]>) {
        let (w_lanes, b_lanes) = self
            .sums
            .as_slice::<f32>()
            .split_at(self.o * self.taps * 16);
        for (d, v) in dw.iter_mut().zip(w_lanes.chunks_exact(16)) {
            *d += v.iter().sum::<f32>();
        }
        if let (Some(db), true) = (db, self.bias) {
            for (d, v) in db.iter_mut().zip(b_lanes.chunks_exact(16)) {
                *d += v.iter().sum::<f32>();
            }
        }
    }
}

/// Adds one image's kernel gradient `Σ_{oy,ox} dy[oc, oy, ox] · xp[ci, oy + ky, ox + kx]` (tap t
/// = (ci, ky, kx)) to `lanes`: blocks of 4 channels × 6 taps summed in 16-lane accumulators over
/// the image (the rows' last 16 columns masked), started from and stored back to the lanes'
/// sums; with a bias gradient, the cotangent's per-channel sums too, from the loads of the
/// first taps.
///
/// # Safety
/// The CPU has AVX-512F; `xp` holds `c` planes of `hp × wp`, `dy` is `o × ho × wo` and `lanes`
/// was made for `o` channels and `c·kh·kw` taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn direct_kernel_grad(xp: &[f32], dy: &[f32], lanes: &mut DirectGradLanes, g: &Direct) {
    use std::arch::x86_64::*;
    let taps = g.c * g.kh * g.kw;
    assert!(xp.len() >= g.c * g.hp * g.wp && dy.len() >= g.o * g.ho * g.wo);
    assert!(lanes.o == g.o && lanes.taps == taps);
    // where tap t starts in the padded image
    let mut tap_at = [0usize; DIRECT_MAX_TAPS];
    for (t, at) in tap_at.iter_mut().enumerate().take(taps) {
        let (ci, k) = (t / (g.kh * g.kw), t % (g.kh * g.kw));
        *at = (ci * g.hp + k / g.kw) * g.wp + k % g.kw;
    }
    let (sums, bias_sums) = lanes
        .sums
        .as_mut_slice::<f32>()
        .split_at_mut(g.o * taps * 16);
    let (sp, bp) = (sums.as_mut_ptr(), bias_sums.as_mut_ptr());
    for o0 in (0..g.o).step_by(KG_OC) {
        let rows = (g.o - o0).min(KG_OC);
        for t0 in (0..taps).step_by(KG_TAPS) {
            let cols = (taps - t0).min(KG_TAPS);
            // a short block repeats its last tap and channel; their sums are not stored
            let at: [usize; KG_TAPS] = std::array::from_fn(|j| tap_at[t0 + j.min(cols - 1)]);
            let ch: [usize; KG_OC] = std::array::from_fn(|i| o0 + i.min(rows - 1));
            // SAFETY (the loads and stores of the sums): channel ch[i] < o, tap < taps.
            let lane =
                |i: usize, j: usize| unsafe { sp.add((ch[i] * taps + t0 + j.min(cols - 1)) * 16) };
            let mut acc: [[__m512; KG_TAPS]; KG_OC] = std::array::from_fn(|i| {
                std::array::from_fn(|j| unsafe { _mm512_loadu_ps(lane(i, j)) })
            });
            let bias_too = t0 == 0 && lanes.bias;
            // SAFETY: as above, for the bias sums of channel ch[i] (read only when kept).
            let mut bsum: [__m512; KG_OC] = std::array::from_fn(|i| unsafe {
                if bias_too {
                    _mm512_loadu_ps(bp.add(ch[i] * 16))
                } else {
                    _mm512_setzero_ps()
                }
            });
            for oy in 0..g.ho {
                for x0 in (0..g.wo).step_by(16) {
                    let n = (g.wo - x0).min(16);
                    let m: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                    // SAFETY: row oy, columns x0..x0 + n of channel ch[i] (inside `dy`), and of
                    // the padded planes from each tap's start (inside `xp`).
                    unsafe {
                        let d: [__m512; KG_OC] = std::array::from_fn(|i| {
                            _mm512_maskz_loadu_ps(
                                m,
                                dy.as_ptr().add((ch[i] * g.ho + oy) * g.wo + x0),
                            )
                        });
                        if bias_too {
                            for (b, &v) in bsum.iter_mut().zip(&d) {
                                *b = _mm512_add_ps(*b, v);
                            }
                        }
                        let base = xp.as_ptr().add(oy * g.wp + x0);
                        for (j, &a) in at.iter().enumerate() {
                            let v = _mm512_maskz_loadu_ps(m, base.add(a));
                            for i in 0..KG_OC {
                                acc[i][j] = _mm512_fmadd_ps(d[i], v, acc[i][j]);
                            }
                        }
                    }
                }
            }
            for (i, row) in acc.iter().enumerate().take(rows) {
                for (j, a) in row.iter().enumerate().take(cols) {
                    // SAFETY: channel o0 + i, tap t0 + j: inside the sums.
                    unsafe { _mm512_storeu_ps(lane(i, j), *a) };
                }
            }
            if bias_too {
                for (i, b) in bsum.iter().enumerate().take(rows) {
                    // SAFETY: channel o0 + i's bias sums.
                    unsafe { _mm512_storeu_ps(bp.add(ch[i] * 16), *b) };
                }
            }
        }
    }
}

/// The results of one image range of an f32 kernel-gradient sum, zeroed: the `o × taps` kernel
/// gradient and, with a bias gradient, its `o` channel sums.
///
/// # Safety
/// `res` is the result list `sum_over_images` passes for a kernel gradient of `o × taps`
/// (`res[0]`, then maybe `res[1]`), written by this range only.
unsafe fn range_results<'a>(
    res: &[*mut f32],
    o: usize,
    taps: usize,
) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    // SAFETY: the caller's contract.
    let dw = unsafe { std::slice::from_raw_parts_mut(res[0], o * taps) };
    let mut db = res
        .get(1)
        .map(|&d| unsafe { std::slice::from_raw_parts_mut(d, o) });
    dw.fill(0.0);
    if let Some(d) = db.as_deref_mut() {
        d.fill(0.0);
    }
    (dw, db)
}

/// What a convolution does to each block of its result while it is in cache: add the
/// per-channel bias, then maybe write the ReLU of the sum to a second result or in place; or,
/// for an input gradient, zero it where a ReLU's result is not positive.
struct Epilogue<'a, T> {
    bias: Option<&'a [T]>,
    /// The ReLU's result (maybe the result itself) and whether it is `max(0, y)` (else
    /// `max(y, 0)`).
    relu: Option<(Ptr, bool)>,
    /// A ReLU's result: `y = where(0 < m, y, 0)`.
    mask: Option<Ptr>,
}

impl Conv {
    /// The epilogue this convolution's results get, if any.
    fn epilogue<'a, T: GemmElem>(&self, slots: &'a Slots) -> Option<Epilogue<'a, T>> {
        let o = self.kernel[0];
        (self.bias.is_some() || self.relu.is_some() || self.mask.is_some()).then(|| Epilogue {
            // SAFETY: a bias slot holds `o` elements (compiled so).
            bias: self.bias.map(|b| unsafe { slots.get::<T>(b, o) }),
            relu: self.relu.map(|(r, zero_first)| (slots.ptr(r), zero_first)),
            mask: self.mask.map(|m| slots.ptr(m)),
        })
    }
}

impl<T: GemmElem> Epilogue<'_, T> {
    /// Applies the epilogue to output channels `channels`, `p` elements each, starting at
    /// element `at` of the result `out` (and of the ReLU's result or the mask).
    ///
    /// # Safety
    /// Those elements of `out` (and of the ReLU's result) must be valid and accessed by this
    /// call only, and those of the mask valid and not written meanwhile.
    unsafe fn apply(&self, out: Ptr, at: usize, channels: Range<usize>, p: usize) {
        let len = channels.len() * p;
        // SAFETY: guaranteed by the caller.
        let y = unsafe { std::slice::from_raw_parts_mut(out.at::<T>(at), len) };
        let bias = self.bias.map(|b| &b[channels]);
        match self.relu {
            // one pass: the sum is not kept
            Some((r, true)) if r.0 == out.0 => wide(|| bias_relu::<T, true>(y, bias, p)),
            Some((r, false)) if r.0 == out.0 => wide(|| bias_relu::<T, false>(y, bias, p)),
            _ => {
                if let Some(bias) = bias {
                    wide(|| {
                        for (row, &b) in y.chunks_exact_mut(p.max(1)).zip(bias) {
                            for v in row {
                                *v += b;
                            }
                        }
                    });
                }
                if let Some((r, zero_first)) = self.relu {
                    // SAFETY: guaranteed by the caller.
                    let r = unsafe { std::slice::from_raw_parts_mut(r.at::<T>(at), len) };
                    wide(|| {
                        let pairs = r.iter_mut().zip(y.iter());
                        if zero_first {
                            pairs.for_each(|(d, &v)| *d = relu::<T, true>(v));
                        } else {
                            pairs.for_each(|(d, &v)| *d = relu::<T, false>(v));
                        }
                    });
                }
            }
        }
        if let Some(m) = self.mask {
            // SAFETY: guaranteed by the caller.
            let m = unsafe { std::slice::from_raw_parts(m.at::<T>(at) as *const T, len) };
            wide(|| {
                for (v, &m) in y.iter_mut().zip(m) {
                    *v = if T::ZERO < m { *v } else { T::ZERO };
                }
            });
        }
    }
}

/// The graph's `max(0, v)` (`ZERO_FIRST`) or `max(v, 0)`, with `eval_scalar`'s maximum: NaN
/// wins, ties keep the first operand.
#[inline(always)]
fn relu<T: GemmElem, const ZERO_FIRST: bool>(v: T) -> T {
    #[allow(clippy::eq_op)]
    if ZERO_FIRST {
        if T::ZERO < v || v != v {
            v
        } else {
            T::ZERO
        }
    } else if v < T::ZERO {
        T::ZERO
    } else {
        v
    }
}

/// `y = relu(y + bias[channel])` in place, for rows of `p` elements, one per channel.
#[inline(always)]
fn bias_relu<T: GemmElem, const ZERO_FIRST: bool>(y: &mut [T], bias: Option<&[T]>, p: usize) {
    match bias {
        Some(bias) => {
            for (row, &b) in y.chunks_exact_mut(p.max(1)).zip(bias) {
                for v in row {
                    let mut sum = *v;
                    sum += b;
                    *v = relu::<T, ZERO_FIRST>(sum);
                }
            }
        }
        None => y.iter_mut().for_each(|v| *v = relu::<T, ZERO_FIRST>(*v)),
    }
}

/// Adds the sum of each row of `m` (rows of `len > 0` elements) to `acc[row]`: 32 running lanes
/// per row (four independent vector additions a step, not one latency-bound chain), then the
/// lanes and the remainder (nearer a pairwise sum's accuracy than one running total).
fn add_row_sums<T: GemmElem>(m: &[T], len: usize, acc: &mut [T]) {
    wide(|| {
        for (a, row) in acc.iter_mut().zip(m.chunks_exact(len)) {
            let mut lanes = [T::ZERO; 32];
            let mut blocks = row.chunks_exact(32);
            for b in &mut blocks {
                for (l, &v) in lanes.iter_mut().zip(b) {
                    *l += v;
                }
            }
            let mut s = T::ZERO;
            for l in lanes {
                s += l;
            }
            for &v in blocks.remainder() {
                s += v;
            }
            *a += s;
        }
    })
}

/// `dst.copy_from_slice(src)` for the short rows of the unfolding loops (an image row, often 8
/// to 32 elements): 8-element blocks moved inline, the last block overlapping the previous one,
/// and 4-, 2- and 1-element pieces below 8, instead of a `memcpy` call per row (those calls took
/// ~8% of readme_cnn's step). No loop here copies element by element, which the compiler would
/// turn back into a `memcpy` call.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    const B: usize = 8;
    let n = dst.len();
    assert_eq!(n, src.len());
    if n >= B {
        let mut i = 0;
        while i + B < n {
            dst[i..i + B].copy_from_slice(&src[i..i + B]);
            i += B;
        }
        dst[n - B..].copy_from_slice(&src[n - B..]);
        return;
    }
    let mut i = 0;
    if n & 4 != 0 {
        dst[..4].copy_from_slice(&src[..4]);
        i = 4;
    }
    if n & 2 != 0 {
        dst[i..i + 2].copy_from_slice(&src[i..i + 2]);
        i += 2;
    }
    if n & 1 != 0 {
        dst[i] = src[i];
    }
}

/// `rows` unfolding rows of `wo` elements at `dst`: row `r` is zero before `lo` and from `hi`,
/// and elements `lo..hi` come from `src + r·step`. The usual widths run with the copy length as a
/// constant (a few vector moves a row; a copy call a row cost more than the copy).
///
/// # Safety
/// `dst` must be valid for `rows·wo` elements, `src + r·step` for `hi − lo` elements for every
/// `r < rows`, and `lo ≤ hi ≤ wo`.
#[inline(always)]
unsafe fn unfold_rows<T: GemmElem>(
    dst: *mut T,
    wo: usize,
    src: *const T,
    step: usize,
    rows: usize,
    (lo, hi): (usize, usize),
) {
    #[inline(always)]
    unsafe fn fixed<T: GemmElem, const N: usize>(
        dst: *mut T,
        wo: usize,
        src: *const T,
        step: usize,
        rows: usize,
        lo: usize,
    ) {
        for r in 0..rows {
            // SAFETY: guaranteed by the caller of `unfold_rows`.
            unsafe {
                let d = dst.add(r * wo);
                for j in 0..lo {
                    *d.add(j) = T::ZERO;
                }
                for j in lo + N..wo {
                    *d.add(j) = T::ZERO;
                }
                (d.add(lo) as *mut [T; N])
                    .write_unaligned((src.add(r * step) as *const [T; N]).read_unaligned());
            }
        }
    }
    // SAFETY (every arm): guaranteed by the caller.
    unsafe {
        match hi - lo {
            7 => fixed::<T, 7>(dst, wo, src, step, rows, lo),
            8 => fixed::<T, 8>(dst, wo, src, step, rows, lo),
            15 => fixed::<T, 15>(dst, wo, src, step, rows, lo),
            16 => fixed::<T, 16>(dst, wo, src, step, rows, lo),
            31 => fixed::<T, 31>(dst, wo, src, step, rows, lo),
            32 => fixed::<T, 32>(dst, wo, src, step, rows, lo),
            n => {
                for r in 0..rows {
                    let d = std::slice::from_raw_parts_mut(dst.add(r * wo), wo);
                    zero_short(&mut d[..lo]);
                    zero_short(&mut d[hi..]);
                    copy_short(
                        &mut d[lo..hi],
                        std::slice::from_raw_parts(src.add(r * step), n),
                    );
                }
            }
        }
    }
}

/// The adjoint of [`unfold_rows`]' copies: `dst[r·step + j] += src[r·wo + j]` for `j < n`,
/// `r < rows`, with the usual lengths as constants.
///
/// # Safety
/// Both ranges must be valid for every row, and must not overlap.
#[inline(always)]
unsafe fn fold_rows<T: GemmElem>(
    dst: *mut T,
    step: usize,
    src: *const T,
    wo: usize,
    rows: usize,
    n: usize,
) {
    #[inline(always)]
    unsafe fn fixed<T: GemmElem, const N: usize>(
        dst: *mut T,
        step: usize,
        src: *const T,
        wo: usize,
        rows: usize,
    ) {
        for r in 0..rows {
            // SAFETY: guaranteed by the caller of `fold_rows`.
            unsafe {
                let d = dst.add(r * step) as *mut [T; N];
                let mut acc = d.read_unaligned();
                let v = (src.add(r * wo) as *const [T; N]).read_unaligned();
                for j in 0..N {
                    acc[j] += v[j];
                }
                d.write_unaligned(acc);
            }
        }
    }
    // SAFETY (every arm): guaranteed by the caller.
    unsafe {
        match n {
            7 => fixed::<T, 7>(dst, step, src, wo, rows),
            8 => fixed::<T, 8>(dst, step, src, wo, rows),
            15 => fixed::<T, 15>(dst, step, src, wo, rows),
            16 => fixed::<T, 16>(dst, step, src, wo, rows),
            31 => fixed::<T, 31>(dst, step, src, wo, rows),
            32 => fixed::<T, 32>(dst, step, src, wo, rows),
            _ => {
                for r in 0..rows {
                    let d = std::slice::from_raw_parts_mut(dst.add(r * step), n);
                    let v = std::slice::from_raw_parts(src.add(r * wo), n);
                    for (d, v) in d.iter_mut().zip(v) {
                        *d += *v;
                    }
                }
            }
        }
    }
}

/// `dst.fill(0)` for the short pieces of rows that read padding, in the manner of
/// [`copy_short`].
#[inline(always)]
fn zero_short<T: GemmElem>(dst: &mut [T]) {
    let zeros = [T::ZERO; 8];
    let n = dst.len();
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            dst[i..i + 8].copy_from_slice(&zeros);
            i += 8;
        }
        dst[n - 8..].copy_from_slice(&zeros);
        return;
    }
    copy_short(dst, &zeros[..n]);
}

/// `dst[j·ds] = src[j·ss]` for `j < n`: the strided copies of the unfolding loops, without
/// iterator adapters (`step_by` compiles to a division per element here).
#[inline(always)]
fn strided_copy<T: Copy>(src: &[T], ss: usize, dst: &mut [T], ds: usize, n: usize) {
    if n == 0 {
        return;
    }
    assert!((n - 1) * ss < src.len() && (n - 1) * ds < dst.len());
    for j in 0..n {
        // SAFETY: j ≤ n − 1, and both last indices were checked above.
        unsafe { *dst.get_unchecked_mut(j * ds) = *src.get_unchecked(j * ss) };
    }
}

/// `dst[c·rows + r] = src[r·cols + c]` (`src` is `rows × cols`), by 16×16 blocks so that reads and
/// writes both stay within a few cache lines.
fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 16;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    // SAFETY: r < rows and c < cols, both slices hold rows·cols elements
                    unsafe {
                        *dst.get_unchecked_mut(c * rows + r) = *src.get_unchecked(r * cols + c)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length from empty to several blocks, at every offset within a block.
    #[test]
    fn short_copies_and_fills() {
        let src: Vec<f32> = (0..64).map(|i| i as f32 + 1.0).collect();
        for n in 0..40 {
            for off in 0..9 {
                let mut dst = vec![-1.0f32; 64];
                copy_short(&mut dst[off..off + n], &src[off..off + n]);
                for (i, &v) in dst.iter().enumerate() {
                    let want = if (off..off + n).contains(&i) {
                        src[i]
                    } else {
                        -1.0
                    };
                    assert_eq!(v, want, "copy of {n} at {off}: element {i}");
                }
                zero_short(&mut dst[off..off + n]);
                for (i, &v) in dst.iter().enumerate() {
                    let want = if (off..off + n).contains(&i) {
                        0.0
                    } else {
                        -1.0
                    };
                    assert_eq!(v, want, "fill of {n} at {off}: element {i}");
                }
            }
        }
    }
}
