//! The two gradient kinds of `Op::Conv` (`ConvKind::InputGrad`, `ConvKind::KernelGrad`), as
//! kernels generated into the plan's module with the geometry as constants:
//! - with one group and long enough rows (the forward's condition), through cuBLAS: the kernel
//!   gradient is `dW [O, K] = dyᵀ [O, N·P] · im2col(x)ᵀ`, the input gradient
//!   `dx = col2im(Wᵀ [K, O] · dyᵀ [O, N·P])` with col2im a gather (each `dx` element sums the
//!   columns that read it, so no atomics);
//! - otherwise directly: the input gradient one thread per `dx` element gathering over the
//!   `(o, kh, kw)` whose window reads it, the kernel gradient one block per `dW` element with a
//!   fixed tree reduction over `(n, ho, wo)`.
//!
//! Every path is deterministic. Padding may be negative (it crops); positions outside the image
//! read 0 and receive no gradient.

use super::*;
use lamina_core::ops::linalg::conv_geometry;
use lamina_core::ConvParams;

/// The geometry in `struct ConvP` order: `n c h w o cg kh kw ho wo sh sw ph pw dh dw groups`.
fn geometry(p: &ConvParams, x: &[usize], w: &[usize], y: &[usize]) -> [i64; 17] {
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
        let col_bytes = nb * kk * pp * dt.size_bytes();
        if p.groups == 1 && kk > 64 && col_bytes <= MAX_COLUMNS && nb * kk * pp < 1 << 31 {
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

    /// One group: dy transposed to `[O, N·P]`, one GEMM, and im2col before (kernel gradient) or
    /// col2im after it (input gradient). `slots` are the two operands and the result.
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
        let dyt = self.scratch(1, nb * o * pp * es)?;
        let dy = if input_grad { sa } else { sb };
        let transpose = elementwise(
            format!("copy_{}", sfx(dt)),
            nb * o * pp,
            vec![
                Arg::Slot(dyt),
                Arg::Slot(dy),
                Arg::I64((nb * o * pp) as i64),
                Arg::Walk(Walk::new(&[o, nb, pp], &[pp, o * pp, 1], 0)?),
            ],
        );
        Ok(if input_grad {
            let name = self.col2im_kernel(dt, v);
            vec![
                transpose,
                Kernel::Gemm(Gemm {
                    f64,
                    a: sb,
                    b: dyt,
                    out: cols,
                    m: kk,
                    n: nb * pp,
                    k: o,
                    batch: 1,
                    ta: true,
                    tb: false,
                    stride_a: 0,
                    stride_b: 0,
                }),
                Kernel::Launch {
                    func: Func::Planned(name),
                    f: None,
                    grid: grid_for(nb * c * h * w),
                    block: BLOCK,
                    args: vec![Arg::Slot(out), Arg::Slot(cols)],
                },
            ]
        } else {
            let name = self.im2col_kernel(dt, v);
            vec![
                Kernel::Launch {
                    func: Func::Planned(name),
                    f: None,
                    grid: grid_for(nb * kk * pp),
                    block: BLOCK,
                    args: vec![Arg::Slot(cols), Arg::Slot(sa)],
                },
                transpose,
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
            ]
        })
    }

    /// A fresh name for a kernel appended to the plan's module.
    fn planned_name(&self, what: &str) -> String {
        format!("{what}_{}", self.planned.matches("__global__").count())
    }

    /// `dx[b, ci, iy, ix] = Σ cols[(ci, ky, kx), b, oy, ox]` over the taps whose window position
    /// `(oy, ox)` reads `(iy, ix)`; `cols` is `[C·KH·KW, N·P]` (one group).
    fn col2im_kernel(&mut self, dt: DType, v: &[i64; 17]) -> String {
        let [n, c, h, w, _o, _cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, _g] = *v;
        let name = self.planned_name("col2im");
        let ty = codegen::c_type(dt);
        let (total, np) = (n * c * h * w, n * ho * wo);
        self.planned.push_str(&format!(
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
        acc += col[(((int)ci * {kh} + ky) * {kw} + kx) * {np} + ((int)b * {ho} + yy / {sh}) * {wo} + xx / {sw}];
      }}
    }}
    dx[i] = acc;
  }}
}}
"#
        ));
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
