//! The two gradient kinds of `Op::Conv` (`ConvKind::InputGrad`, `ConvKind::KernelGrad`), as
//! kernels generated into the plan's module with the geometry as constants:
//! - the kernel gradient with one group, when the forward convolution of the same input kept its
//!   per-image columns or `K = C·KH·KW ≤ P = HO·WO`: those columns (else im2col here), one
//!   strided-batched GEMM of per-image partials `dy_n [O, P] · col_n [K, P]ᵀ`, and their sum
//!   over the images in order; otherwise with `K > 64`, `dW [O, K] = dyᵀ [O, N·P] · im2col(x)ᵀ`
//!   with dy transposed (one GEMM over all images);
//! - the input gradient with one group and `K > 64`: `dx = col2im(Wᵀ [K, O] · dy_n [O, P])`, one
//!   strided-batched GEMM over the images into per-image columns (dy read as it is), col2im a
//!   gather (each `dx` element sums the columns that read it, so no atomics);
//! - otherwise directly: the input gradient one thread per `dx` element gathering over the
//!   `(o, kh, kw)` whose window reads it, the kernel gradient one block per `dW` element with a
//!   fixed tree reduction over `(n, ho, wo)`.
//!
//! Every path is deterministic. Padding may be negative (it crops); positions outside the image
//! read 0 and receive no gradient.

use super::conv::geometry;
use super::*;
use lamina_core::ops::linalg::conv_geometry;
use lamina_core::ConvParams;

impl Builder<'_> {
    /// The launches of a Conv node of a gradient kind: `ConvKind::InputGrad` when `input_grad`,
    /// else `ConvKind::KernelGrad` (the operands' order and the result follow the kind).
    pub(super) fn conv_grad(
        &mut self,
        id: NodeId,
        p: &ConvParams,
        input_grad: bool,
    ) -> Result<Vec<Kernel>> {
        let node = &self.plan.graph.nodes[id];
        let dt = node.ty.dtype;
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let [xs, ws, ys] = conv_geometry(p, self.shape(a), self.shape(b))?;
        let v = geometry(p, &xs, &ws, &ys);
        let [nb, _, _, _, o, ..] = v.map(|u| u as usize);
        let (kk, pp) = (numel(&ws[1..]), ys[2] * ys[3]);
        if [numel(&xs), numel(&ws), numel(&ys)]
            .iter()
            .any(|&len| len >= 1 << 31)
        {
            return Err(cuda_err(format!(
                "%{id}: convolution gradient of input {} and kernel {} is too large for 32-bit \
                 indexing",
                shape_text(&xs),
                shape_text(&ws)
            )));
        }
        let (sa, sb) = (self.read(a)?, self.read(b)?);
        let out = self.write(id)?;
        let n_out = numel(&self.plan.graph.nodes[id].ty.shape);
        // an empty sum (no output channels, or no output positions): zeros
        let empty = if input_grad { o == 0 } else { nb * pp == 0 };
        if n_out == 0 || empty {
            return Ok(vec![elementwise(
                format!("fill_{}", sfx(dt)),
                n_out,
                vec![Arg::Slot(out), Arg::I64(n_out as i64), Arg::F64(0.0)],
            )]);
        }
        let es = dt.size_bytes();
        let cols_fit = p.groups == 1 && nb * kk * pp * es <= MAX_COLUMNS && nb * kk * pp < 1 << 31;
        let parts_fit = nb * o * kk * es <= MAX_COLUMNS;
        // per-image partials cost N·O·K of traffic, a transposed dy N·O·P; columns that the
        // forward kept cost nothing
        let kept = self.conv_cols.contains_key(&(a, v));
        if cols_fit && !input_grad && parts_fit && (kept || kk <= pp) {
            return self.kernel_grad_per_image(dt, &v, a, [sa, sb, out]);
        }
        if cols_fit && kk > 64 {
            return self.conv_grad_gemm(dt, input_grad, &v, [sa, sb, out]);
        }
        Ok(vec![if input_grad {
            Kernel::Launch {
                func: Func::Planned(self.input_grad_direct(dt, &v)),
                f: None,
                grid: grid_for(n_out),
                block: BLOCK,
                args: vec![Arg::Slot(out), Arg::Slot(sa), Arg::Slot(sb)],
            }
        } else {
            Kernel::Launch {
                func: Func::Planned(self.kernel_grad_direct(dt, &v)),
                f: None,
                grid: n_out.min(65535) as u32,
                block: BLOCK,
                args: vec![Arg::Slot(out), Arg::Slot(sa), Arg::Slot(sb)],
            }
        }])
    }

    /// One group, through cuBLAS. Input gradient: per-image columns `col_n [K, P] = Wᵀ · dy_n`
    /// (one strided-batched GEMM over the images, reading dy as it is), then col2im. Kernel
    /// gradient: dy transposed to `[O, N·P]`, im2col rows `[K, N·P]`, one GEMM. `slots` are the two operands and the result.
    fn conv_grad_gemm(
        &mut self,
        dt: DType,
        input_grad: bool,
        v: &[i64; 17],
        [sa, sb, out]: [usize; 3],
    ) -> Result<Vec<Kernel>> {
        let [nb, c, h, w, o, cg, kh, kw, ho, wo, ..] = v.map(|u| u as usize);
        let (kk, pp, es) = (cg * kh * kw, ho * wo, dt.size_bytes());
        let f64 = dt == DType::F64;
        let cols = self.scratch(0, nb * kk * pp * es)?;
        let dy = if input_grad { sa } else { sb };
        if input_grad {
            let name = self.col2im_kernel(dt, v);
            return Ok(vec![
                Kernel::Gemm(Gemm {
                    f64,
                    a: sb,
                    b: sa,
                    out: cols,
                    m: kk,
                    n: pp,
                    k: o,
                    batch: nb,
                    ta: true,
                    tb: false,
                    stride_a: 0,
                    stride_b: o * pp,
                }),
                Kernel::Launch {
                    func: Func::Planned(name),
                    f: None,
                    grid: grid_for(nb * c * h * w),
                    block: BLOCK,
                    args: vec![Arg::Slot(out), Arg::Slot(cols)],
                },
            ]);
        }
        let (dyt, copy) = self.transpose_dy(dt, dy, [nb, o, pp])?;
        Ok(vec![
            self.im2col_launch(dt, v, false, [cols, sa]),
            copy,
            Kernel::Gemm(Gemm {
                f64,
                a: dyt,
                b: cols,
                out,
                m: o,
                n: kk,
                k: nb * pp,
                batch: 1,
                ta: false,
                tb: true,
                stride_a: 0,
                stride_b: 0,
            }),
        ])
    }

    /// `dy [N, O, P]` transposed to `[O, N·P]` in scratch buffer 1: the buffer and the copy.
    fn transpose_dy(
        &mut self,
        dt: DType,
        dy: usize,
        [nb, o, pp]: [usize; 3],
    ) -> Result<(usize, Kernel)> {
        let dyt = self.scratch(1, nb * o * pp * dt.size_bytes())?;
        let copy = elementwise(
            format!("copy_{}", sfx(dt)),
            nb * o * pp,
            vec![
                Arg::Slot(dyt),
                Arg::Slot(dy),
                Arg::I64((nb * o * pp) as i64),
                Arg::Walk(Walk::new(&[o, nb, pp], &[pp, o * pp, 1], 0)?),
            ],
        );
        Ok((dyt, copy))
    }

    /// Kernel gradient of one group through per-image columns of input node `x` (the forward's,
    /// if it kept them, else im2col here), one strided-batched GEMM of the per-image partials
    /// `dW_n [O, K] = dy_n [O, P] · col_n [K, P]ᵀ`, and their sum over the images in order
    /// (deterministic). Neither dy nor the columns are transposed.
    fn kernel_grad_per_image(
        &mut self,
        dt: DType,
        v: &[i64; 17],
        x: NodeId,
        [sx, sdy, out]: [usize; 3],
    ) -> Result<Vec<Kernel>> {
        let [nb, _, _, _, o, cg, kh, kw, ho, wo, ..] = v.map(|u| u as usize);
        let (kk, pp, es) = (cg * kh * kw, ho * wo, dt.size_bytes());
        let part = self.scratch(1, nb * o * kk * es)?;
        let mut ks = Vec::new();
        // the forward convolution of x already wrote these columns earlier in the step
        let cols = match self.conv_cols.get(&(x, *v)) {
            Some(&slot) => slot,
            None => {
                let cols = self.scratch(0, nb * kk * pp * es)?;
                ks.push(self.im2col_launch(dt, v, true, [cols, sx]));
                cols
            }
        };
        let sum = self.planned_name("wsum");
        let ok = o * kk;
        self.planned.push_str(&wsum_src(&sum, dt, nb, ok));
        ks.extend([
            Kernel::Gemm(Gemm {
                f64: dt == DType::F64,
                a: sdy,
                b: cols,
                out: part,
                m: o,
                n: kk,
                k: pp,
                batch: nb,
                ta: false,
                tb: true,
                stride_a: o * pp,
                stride_b: kk * pp,
            }),
            Kernel::Launch {
                func: Func::Planned(sum),
                f: None,
                grid: grid_for(ok),
                block: BLOCK,
                args: vec![Arg::Slot(out), Arg::Slot(part)],
            },
        ]);
        Ok(ks)
    }

    /// col2im into a new planned kernel (see `col2im_src`); its name.
    fn col2im_kernel(&mut self, dt: DType, v: &[i64; 17]) -> String {
        let name = self.planned_name("col2im");
        self.planned.push_str(&col2im_src(&name, dt, v));
        name
    }

    /// Input gradient, one thread per `dx` element: `Σ dy[b, o, oy, ox]·w[o, ci, ky, kx]` over the
    /// group's output channels and the taps whose window reads the element.
    fn input_grad_direct(&mut self, dt: DType, v: &[i64; 17]) -> String {
        let [n, c, h, w, o, cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, g] = *v;
        let name = self.planned_name("conv_dx");
        let ty = codegen::c_type(dt);
        let (total, og) = (n * c * h * w, o / g);
        self.planned.push_str(&format!(
            r#"extern "C" __global__ void {name}({ty}* dx, const {ty}* dy, const {ty}* wt) {{
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < {total}u; i += gridDim.x * blockDim.x) {{
    unsigned ix = i % {w}u, t = i / {w}u;
    unsigned iy = t % {h}u; t /= {h}u;
    unsigned ci = t % {c}u, b = t / {c}u;
    int o0 = (int)(ci / {cg}u) * {og}, cl = (int)(ci % {cg}u);
    {ty} acc = 0;
    for (int ky = 0; ky < {kh}; ++ky) {{
      int yy = (int)iy + ({ph}) - ky * {dh};
      if (yy < 0 || yy % {sh} != 0 || yy / {sh} >= {ho}) continue;
      int oy = yy / {sh};
      for (int kx = 0; kx < {kw}; ++kx) {{
        int xx = (int)ix + ({pw}) - kx * {dw};
        if (xx < 0 || xx % {sw} != 0 || xx / {sw} >= {wo}) continue;
        int ox = xx / {sw};
        for (int oc = o0; oc < o0 + {og}; ++oc)
          acc += dy[(((int)b * {o} + oc) * {ho} + oy) * {wo} + ox] * wt[((oc * {cg} + cl) * {kh} + ky) * {kw} + kx];
      }}
    }}
    dx[i] = acc;
  }}
}}
"#
        ));
        name
    }

    /// Kernel gradient, one block (256 threads) per `dW` element: `Σ dy[b, o, oy, ox]·x[b, ci,
    /// pos]` over images and output positions, reduced by a fixed tree (deterministic).
    fn kernel_grad_direct(&mut self, dt: DType, v: &[i64; 17]) -> String {
        let [n, c, h, w, o, cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, g] = *v;
        let name = self.planned_name("conv_dw");
        let ty = codegen::c_type(dt);
        let (total, og, red) = (o * cg * kh * kw, o / g, n * ho * wo);
        self.planned.push_str(&format!(
            r#"extern "C" __global__ void {name}({ty}* dw, const {ty}* x, const {ty}* dy) {{
  __shared__ {ty} part[256];
  for (unsigned e = blockIdx.x; e < {total}u; e += gridDim.x) {{
    unsigned kx = e % {kw}u, t = e / {kw}u;
    unsigned ky = t % {kh}u; t /= {kh}u;
    unsigned cl = t % {cg}u, oc = t / {cg}u;
    unsigned ci = (oc / {og}u) * {cg}u + cl;
    {ty} acc = 0;
    for (unsigned r = threadIdx.x; r < {red}u; r += blockDim.x) {{
      unsigned ox = r % {wo}u, q = r / {wo}u;
      unsigned oy = q % {ho}u, b = q / {ho}u;
      int iy = (int)oy * {sh} - ({ph}) + (int)ky * {dh}, ix = (int)ox * {sw} - ({pw}) + (int)kx * {dw};
      if (iy >= 0 && iy < {h} && ix >= 0 && ix < {w})
        acc += dy[((b * {o}u + oc) * {ho}u + oy) * {wo}u + ox] * x[(((int)b * {c} + (int)ci) * {h} + iy) * {w} + ix];
    }}
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {{
      if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
      __syncthreads();
    }}
    if (threadIdx.x == 0) dw[e] = part[0];
    __syncthreads();
  }}
}}
"#
        ));
        name
    }
}

/// `dx[b, ci, iy, ix] = Σ cols[b, (ci, ky, kx), oy, ox]` over the taps whose window position
/// `(oy, ox)` reads `(iy, ix)`; `cols` is `[N, C·KH·KW, P]` (one group).
pub(super) fn col2im_src(name: &str, dt: DType, v: &[i64; 17]) -> String {
    let [n, c, h, w, _o, _cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, _g] = *v;
    let ty = codegen::c_type(dt);
    let total = n * c * h * w;
    // image stride and tap stride of the columns
    let (bs, ks) = (c * kh * kw * ho * wo, ho * wo);
    format!(
        r#"extern "C" __global__ void {name}({ty}* dx, const {ty}* col) {{
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < {total}u; i += gridDim.x * blockDim.x) {{
    unsigned ix = i % {w}u, t = i / {w}u;
    unsigned iy = t % {h}u; t /= {h}u;
    unsigned ci = t % {c}u, b = t / {c}u;
    {ty} acc = 0;
    for (int ky = 0; ky < {kh}; ++ky) {{
      int yy = (int)iy + ({ph}) - ky * {dh};
      if (yy < 0 || yy % {sh} != 0 || yy / {sh} >= {ho}) continue;
      for (int kx = 0; kx < {kw}; ++kx) {{
        int xx = (int)ix + ({pw}) - kx * {dw};
        if (xx < 0 || xx % {sw} != 0 || xx / {sw} >= {wo}) continue;
        acc += col[(int)b * {bs} + (((int)ci * {kh} + ky) * {kw} + kx) * {ks} + (yy / {sh}) * {wo} + xx / {sw}];
      }}
    }}
    dx[i] = acc;
  }}
}}
"#
    )
}

/// The sum over images of per-image kernel-gradient partials `[N, O·K]`, in order.
pub(super) fn wsum_src(name: &str, dt: DType, nb: usize, ok: usize) -> String {
    let ty = codegen::c_type(dt);
    format!(
        r#"extern "C" __global__ void {name}({ty}* __restrict__ dw, const {ty}* __restrict__ part) {{
  for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < {ok}u; e += gridDim.x * blockDim.x) {{
    {ty} a = 0;
    for (unsigned b = 0; b < {nb}u; ++b) a += part[b * {ok}u + e];
    dw[e] = a;
  }}
}}
"#
    )
}
