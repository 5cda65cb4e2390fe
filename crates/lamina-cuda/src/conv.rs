//! The forward kind of `Op::Conv` and the column buffers every convolution path shares, as
//! kernels generated into the plan's module with the geometry as constants:
//! - one group and long rows (`C·KH·KW > 64`): im2col into per-image columns `[N, K, P]` and one
//!   strided-batched GEMM `y_n [O, P] = W [O, K] · col_n [K, P]` that writes NCHW directly (no
//!   transpose of a `[O, N·P]` result). The columns get a buffer of their own, which the kernel
//!   gradient of the same input and geometry reads later in the step instead of recomputing it;
//! - few outputs with very long sums (a weight gradient written as a convolution): a block per
//!   output (`conv_block` in kernels.cu);
//! - otherwise a direct kernel: a thread per 2 output positions and up to 8 output channels of
//!   one group, so each input value loaded feeds 8 FMAs, each weight 2, and the weight loads are
//!   warp-uniform.
//!
//! Also the long sums over few outputs (conv bias gradients: a sum over N, H, W per channel),
//! split into chunks so that enough blocks run, then summed per output in a fixed order.

use super::*;
use lamina_core::ops::linalg::conv_geometry;
use lamina_core::ConvParams;

/// Output channels per thread of the direct forward kernel.
const CHANNELS_PER_THREAD: i64 = 8;
/// Output positions per thread of the direct forward kernel.
const POSITIONS_PER_THREAD: i64 = 2;
/// Scratch buffers shared by the steps (0: columns, 1: GEMM results or a transposed operand, 2:
/// partial sums); the kept forward columns are numbered after them.
const SHARED_SCRATCH: usize = 3;
/// Reduced elements per block of the first pass of a split sum.
const SPLIT_CHUNK: usize = 2048;

/// The geometry in `struct ConvP` order: `n c h w o cg kh kw ho wo sh sw ph pw dh dw groups`.
pub(super) fn geometry(p: &ConvParams, x: &[usize], w: &[usize], y: &[usize]) -> [i64; 17] {
    let u = |v: usize| v as i64;
    [
        u(x[0]),
        u(x[1]),
        u(x[2]),
        u(x[3]),
        u(w[0]),
        u(w[1]),
        u(w[2]),
        u(w[3]),
        u(y[2]),
        u(y[3]),
        u(p.stride[0]),
        u(p.stride[1]),
        p.padding[0].0,
        p.padding[1].0,
        u(p.dilation[0]),
        u(p.dilation[1]),
        u(p.groups),
    ]
}

/// C statements that set `unsigned {off}` to the offset of flat index `{idx}` of a walk
/// (row-major over `shape`, element strides `stride`).
fn walk_code(w: &Walk, idx: &str, off: &str) -> String {
    let rank = w.rank as usize;
    if rank == 0 {
        return format!("unsigned {off} = 0;\n");
    }
    let mut s = format!("unsigned {off} = 0, {off}_t = {idx};\n");
    for d in (1..rank).rev() {
        s += &format!(
            "{off} += ({off}_t % {sz}u) * {st}u; {off}_t /= {sz}u;\n",
            sz = w.shape[d],
            st = w.stride[d]
        );
    }
    s += &format!("{off} += {off}_t * {}u;\n", w.stride[0]);
    s
}

impl Builder<'_> {
    /// The launches of a Conv node of the forward kind.
    pub(super) fn conv_forward(&mut self, id: NodeId, p: &ConvParams) -> Result<Vec<Kernel>> {
        let node = &self.plan.graph.nodes[id];
        let dt = node.ty.dtype;
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let [xs, ws, ys] = conv_geometry(p, self.shape(a), self.shape(b))?;
        let v = geometry(p, &xs, &ws, &ys);
        let n = numel(&ys);
        let (nb, o) = (xs[0], ws[0]);
        let (kk, pp) = (numel(&ws[1..]), ys[2] * ys[3]);
        let xsl = self.read(a)?;
        let wsl = self.read(b)?;
        let out = self.write(id)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let col_bytes = nb * kk * pp * dt.size_bytes();
        let fits_32 = numel(&xs) / nb.max(1) < 1 << 31 && kk < 1 << 31;
        if kk >= 2048 && n <= 4096 && fits_32 {
            // few outputs, long sums (a weight gradient): a block per output
            return Ok(vec![Kernel::Launch {
                func: Func::Generic(format!("conv_block_{}", sfx(dt))),
                f: None,
                grid: n.min(65535) as u32,
                block: BLOCK,
                args: vec![
                    Arg::Slot(out),
                    Arg::Slot(xsl),
                    Arg::Slot(wsl),
                    Arg::Conv(ConvP { v }),
                ],
            }]);
        }
        if [numel(&xs), numel(&ws), n]
            .iter()
            .any(|&len| len >= 1 << 31)
        {
            return Err(cuda_err(format!(
                "%{id}: convolution of {} by {} is too large for 32-bit indexing",
                shape_text(&xs),
                shape_text(&ws)
            )));
        }
        if p.groups == 1 && kk > 64 && col_bytes <= MAX_COLUMNS && nb * kk * pp < 1 << 31 {
            // the columns get a buffer of their own, kept for the kernel gradient
            let cols = match self.conv_cols.get(&(a, v)) {
                Some(&slot) => slot,
                None => {
                    let slot = self.scratch(self.scratch.len().max(SHARED_SCRATCH), col_bytes)?;
                    self.conv_cols.insert((a, v), slot);
                    slot
                }
            };
            // y_n [O, P] = W [O, K] · col_n [K, P], written as NCHW
            return Ok(vec![
                self.im2col_launch(dt, &v, true, [cols, xsl]),
                Kernel::Gemm(Gemm {
                    f64: dt == DType::F64,
                    a: wsl,
                    b: cols,
                    out,
                    m: o,
                    n: pp,
                    k: kk,
                    batch: nb,
                    ta: false,
                    tb: false,
                    stride_a: 0,
                    stride_b: kk * pp,
                }),
            ]);
        }
        let name = self.planned_name("dconv");
        let (src, threads) = forward_direct_src(&name, dt, &v);
        self.planned.push_str(&src);
        Ok(vec![Kernel::Launch {
            func: Func::Planned(name),
            f: None,
            grid: grid_for(threads),
            block: BLOCK,
            args: vec![Arg::Slot(out), Arg::Slot(xsl), Arg::Slot(wsl)],
        }])
    }

    /// The launch of a new planned im2col kernel (see `im2col_src`) from slot `x` into `cols`.
    pub(super) fn im2col_launch(
        &mut self,
        dt: DType,
        v: &[i64; 17],
        per_image: bool,
        [cols, x]: [usize; 2],
    ) -> Kernel {
        let name = self.planned_name("im2col");
        let (src, grid) = im2col_src(&name, dt, v, per_image);
        self.planned.push_str(&src);
        Kernel::Launch {
            func: Func::Planned(name),
            f: None,
            grid,
            block: BLOCK,
            args: vec![Arg::Slot(cols), Arg::Slot(x)],
        }
    }

    /// A fresh name for a kernel appended to the plan's module (the profile groups launches by
    /// the part before the first `_`).
    pub(super) fn planned_name(&self, what: &str) -> String {
        format!("{what}_{}", self.planned.matches("__global__").count())
    }

    /// A float sum over few outputs with long reductions as two passes: blocks of
    /// `SPLIT_CHUNK` reduced elements write wide partial sums, then a thread per output adds
    /// its partials in order (deterministic, rounded once like the other sums). `keep` and `red`
    /// walk the source's kept and reduced axes. `None` when one block per output is enough.
    pub(super) fn split_sum(
        &mut self,
        dt: DType,
        (n, n_red): (usize, usize),
        keep: &Walk,
        red: &Walk,
        [src, out]: [usize; 2],
    ) -> Result<Option<Vec<Kernel>>> {
        let splits = n_red
            .div_ceil(SPLIT_CHUNK)
            .min(1024usize.div_ceil(n.max(1)));
        if !dt.is_float() || n == 0 || splits <= 1 || n * n_red >= 1 << 31 {
            return Ok(None);
        }
        let part = self.scratch(2, n * splits * 8)?;
        let (first, second) = (self.planned_name("sumsplit"), self.planned_name("sumparts"));
        let names = [first.as_str(), second.as_str()];
        let code = split_sum_src(names, dt, (n, n_red, splits), keep, red);
        self.planned.push_str(&code);
        Ok(Some(vec![
            Kernel::Launch {
                func: Func::Planned(first),
                f: None,
                grid: (n * splits) as u32,
                block: BLOCK,
                args: vec![Arg::Slot(part), Arg::Slot(src)],
            },
            Kernel::Launch {
                func: Func::Planned(second),
                f: None,
                grid: grid_for(n),
                block: BLOCK,
                args: vec![Arg::Slot(out), Arg::Slot(part)],
            },
        ]))
    }
}

/// Direct forward kernel: a thread per (image, group, tile of up to 8 output channels, 2 output
/// positions `P/2` apart), so each weight loaded feeds 2 FMAs and each input value up to 8, and
/// the weight loads are warp-uniform; returns its source and thread count. Window positions
/// outside the image are skipped (not multiplied by 0), as the reference does.
fn forward_direct_src(name: &str, dt: DType, v: &[i64; 17]) -> (String, usize) {
    let [n, c, h, w, o, cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, g] = *v;
    let ty = codegen::c_type(dt);
    let og = o / g;
    let t = og.min(CHANNELS_PER_THREAD);
    let tiles = (og + t - 1) / t;
    let p = ho * wo;
    let pp = POSITIONS_PER_THREAD;
    let span = (p + pp - 1) / pp;
    let total = n * g * tiles * span;
    // unrolled taps for small kernels only (code size)
    let unroll = if kh * kw <= 49 { "#pragma unroll" } else { "" };
    let src = format!(
        r#"extern "C" __global__ void {name}({ty}* __restrict__ y, const {ty}* __restrict__ x, const {ty}* __restrict__ wt) {{
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < {total}u; i += gridDim.x * blockDim.x) {{
    unsigned q0 = i % {span}u, r = i / {span}u;
    unsigned tile = r % {gt}u, b = r / {gt}u;
    int grp = (int)(tile / {tiles}u), t0 = (int)(tile % {tiles}u) * {t};
    int y0[{pp}], x0[{pp}];
    bool live[{pp}];
#pragma unroll
    for (int m = 0; m < {pp}; ++m) {{
      unsigned q = q0 + m * {span}u;
      live[m] = q < {p}u;
      y0[m] = (int)(q / {wo}u) * {sh} - ({ph});
      x0[m] = (int)(q % {wo}u) * {sw} - ({pw});
    }}
    {ty} acc[{pp}][{t}];
#pragma unroll
    for (int m = 0; m < {pp}; ++m)
#pragma unroll
      for (int j = 0; j < {t}; ++j) acc[m][j] = 0;
    const {ty}* xb = x + ((int)b * {c} + grp * {cg}) * {h} * {w};
    const {ty}* wb = wt + (grp * {og} + t0) * {kk};
    for (int ci = 0; ci < {cg}; ++ci) {{
{unroll}
      for (int ky = 0; ky < {kh}; ++ky) {{
{unroll}
        for (int kx = 0; kx < {kw}; ++kx) {{
          {ty} xv[{pp}];
          bool in[{pp}];
#pragma unroll
          for (int m = 0; m < {pp}; ++m) {{
            int iy = y0[m] + ky * {dh}, ix = x0[m] + kx * {dw};
            in[m] = live[m] && iy >= 0 && iy < {h} && ix >= 0 && ix < {w};
            xv[m] = in[m] ? xb[(ci * {h} + iy) * {w} + ix] : ({ty})0;
          }}
#pragma unroll
          for (int j = 0; j < {t}; ++j) {{
            if (t0 + j >= {og}) continue;
            {ty} wv = wb[j * {kk} + (ci * {kh} + ky) * {kw} + kx];
#pragma unroll
            for (int m = 0; m < {pp}; ++m)
              if (in[m]) acc[m][j] += xv[m] * wv;
          }}
        }}
      }}
    }}
    {ty}* yb = y + ((int)b * {o} + grp * {og} + t0) * {p};
#pragma unroll
    for (int m = 0; m < {pp}; ++m)
#pragma unroll
      for (int j = 0; j < {t}; ++j)
        if (live[m] && t0 + j < {og}) yb[j * {p} + q0 + m * {span}] = acc[m][j];
  }}
}}
"#,
        gt = g * tiles,
        kk = cg * kh * kw,
    );
    (src, total as usize)
}

/// im2col of one group's windows: per image (`per_image`, columns `[N, K, P]`, each image's
/// block a GEMM operand) or rows over all images (`[K, N·P]`, one GEMM over the batch), with
/// `K = C·KH·KW` and `P = HO·WO`. Positions outside the image read 0. Returns the source and the
/// grid (256 threads a block). With `P ≥ 128` a block covers 256 positions of one column row, so
/// the row's tap and image are block-uniform and each element costs one division (the kernel is
/// bound by index arithmetic otherwise).
fn im2col_src(name: &str, dt: DType, v: &[i64; 17], per_image: bool) -> (String, u32) {
    let [n, c, h, w, _o, cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, _g] = *v;
    let ty = codegen::c_type(dt);
    let (p, k) = (ho * wo, cg * kh * kw);
    let total = n * k * p;
    let split = if per_image {
        format!("unsigned kk = r % {k}u, b = r / {k}u;")
    } else {
        format!("unsigned b = r % {n}u, kk = r / {n}u;")
    };
    let body = format!(
        r#"    {split}
    unsigned kx = kk % {kw}u, t = kk / {kw}u;
    unsigned ky = t % {kh}u, ci = t / {kh}u;
    int oy = (int)(q / {wo}u), ox = (int)(q % {wo}u);
    int iy = oy * {sh} - ({ph}) + (int)ky * {dh}, ix = ox * {sw} - ({pw}) + (int)kx * {dw};
    col[r * {p}u + q] = (iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) ? x[(((int)b * {c} + (int)ci) * {h} + iy) * {w} + ix] : ({ty})0;"#
    );
    let head = format!(
        r#"extern "C" __global__ void {name}({ty}* __restrict__ col, const {ty}* __restrict__ x) {{"#
    );
    if p >= 128 {
        let qb = (p + 255) / 256;
        let src = format!(
            r#"{head}
  unsigned r = blockIdx.x / {qb}u, q = (blockIdx.x % {qb}u) * 256u + threadIdx.x;
  if (q < {p}u) {{
{body}
  }}
}}
"#
        );
        return (src, (n * k * qb) as u32);
    }
    let src = format!(
        r#"{head}
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < {total}u; i += gridDim.x * blockDim.x) {{
    unsigned q = i % {p}u, r = i / {p}u;
{body}
  }}
}}
"#
    );
    (src, grid_for(total as usize))
}

/// The two passes of a split sum (`Builder::split_sum`): `splits` blocks per output.
fn split_sum_src(
    [first, second]: [&str; 2],
    dt: DType,
    (n, n_red, splits): (usize, usize, usize),
    keep: &Walk,
    red: &Walk,
) -> String {
    let ty = codegen::c_type(dt);
    let chunk = n_red.div_ceil(splits);
    let (kcode, rcode) = (walk_code(keep, "j", "base"), walk_code(red, "r", "off"));
    format!(
        r#"extern "C" __global__ void {first}(double* __restrict__ part, const {ty}* __restrict__ src) {{
  __shared__ double sh[256];
  unsigned j = blockIdx.x / {splits}u, s = blockIdx.x % {splits}u;
  {kcode}
  unsigned lo = s * {chunk}u, hi = min(lo + {chunk}u, {n_red}u);
  double a = 0;
  for (unsigned r = lo + threadIdx.x; r < hi; r += 256u) {{
    {rcode}
    a += (double)src[base + off];
  }}
  sh[threadIdx.x] = a;
  __syncthreads();
  for (unsigned w = 128; w > 0; w >>= 1) {{
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }}
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}}
extern "C" __global__ void {second}({ty}* __restrict__ out, const double* __restrict__ part) {{
  unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= {n}u) return;
  double a = 0;
  for (unsigned s = 0; s < {splits}u; ++s) a += part[j * {splits}u + s];
  out[j] = ({ty})a;
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::super::conv_grad::{col2im_src, wsum_src};
    use super::*;

    /// Every generated convolution kernel compiles for sm_90 (needs NVRTC only, no GPU; skipped
    /// where its library is absent): the GPU tests run them, this catches a broken template on
    /// any machine with NVRTC.
    #[test]
    fn generated_conv_kernels_compile() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("NVRTC not found: skipped");
            return;
        }
        // `n c h w o cg kh kw ho wo sh sw ph pw dh dw groups`: a first layer (3 channels, 3×3,
        // padding 1), a grouped, strided, dilated one with negative padding and a partial tile
        // of output channels, a 7×7 kernel (taps not unrolled)
        let geometries: [[i64; 17]; 3] = [
            [64, 3, 32, 32, 32, 3, 3, 3, 32, 32, 1, 1, 1, 1, 1, 1, 1],
            [3, 8, 17, 19, 22, 4, 3, 3, 8, 8, 2, 2, -1, 1, 2, 2, 2],
            [2, 5, 20, 20, 9, 5, 7, 7, 14, 14, 1, 1, 0, 0, 1, 1, 1],
        ];
        let keep = Walk::new(&[32], &[1024], 0).unwrap();
        let red = Walk::new(&[64, 32, 32], &[32768, 32, 1], 0).unwrap();
        let none = Walk::new(&[], &[], 0).unwrap();
        let all = Walk::new(&[5, 9000], &[9000, 1], 0).unwrap();
        for dt in [DType::F32, DType::F64] {
            let mut src = String::new();
            for (i, v) in geometries.iter().enumerate() {
                src += &forward_direct_src(&format!("dconv_{i}"), dt, v).0;
                src += &im2col_src(&format!("im2col_images_{i}"), dt, v, true).0;
                src += &im2col_src(&format!("im2col_rows_{i}"), dt, v, false).0;
                src += &col2im_src(&format!("col2im_{i}"), dt, v);
            }
            src += &wsum_src("wsum", dt, 64, 864);
            src += &split_sum_src(["bias1", "bias2"], dt, (32, 65536, 32), &keep, &red);
            src += &split_sum_src(["all1", "all2"], dt, (1, 45000, 22), &none, &all);
            let ptx = cudarc::nvrtc::compile_ptx_with_opts(
                &src,
                cudarc::nvrtc::CompileOptions {
                    arch: Some("compute_90"),
                    options: vec!["--std=c++17".into()],
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{dt}: {e:?}\n{src}"))
            .to_src();
            let entries = ptx.matches(".visible .entry ").count();
            assert_eq!(entries, 4 * geometries.len() + 5, "{dt}");
        }
    }
}
