//! Linear algebra: batched MatMul and 2-D Conv. The convolution's vjp is again a convolution (of
//! the dilated cotangent with the flipped kernel for the input, of the input with the cotangent for
//! the kernel), so gradients of any order stay inside the primitive set.

use crate::dtype::fmt_shape;
use crate::error::{dtype_err, shape_err, Result};
use crate::graph::TensorType;
use crate::op::{ConvParams, Op};
use crate::tensor::Tensor;

pub(crate) fn infer_matmul(a: &TensorType, b: &TensorType) -> Result<TensorType> {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let bad = |why: &str| {
        shape_err(
            "matmul",
            format!("{why}: {} x {}", fmt_shape(&a.shape), fmt_shape(&b.shape)),
        )
    };
    if ra < 2 || ra != rb {
        return bad("operands must have the same rank ≥ 2");
    }
    if a.shape[..ra - 2] != b.shape[..rb - 2] {
        return bad("batch dimensions differ");
    }
    if a.shape[ra - 1] != b.shape[rb - 2] {
        return bad("inner dimensions differ");
    }
    if a.dtype != b.dtype || !a.dtype.is_float() {
        return dtype_err(
            "matmul",
            format!(
                "expected equal floating-point dtypes, got {} and {}",
                a.dtype, b.dtype
            ),
        );
    }
    let mut s = a.shape.clone();
    s[ra - 1] = b.shape[rb - 1];
    Ok(TensorType::new(&s, a.dtype))
}

// d(AB) = (G Bᵀ, Aᵀ G)
pub(crate) fn vjp_matmul(a: Tensor, b: Tensor, ct: Tensor) -> Vec<Option<Tensor>> {
    vec![
        Some(ct.matmul(b.transpose(-1, -2))),
        Some(a.transpose(-1, -2).matmul(ct)),
    ]
}

/// Output length of one spatial axis, or `None` when the (padded) input is shorter than the kernel.
pub fn conv_out_len(
    len: usize,
    k: usize,
    stride: usize,
    pad: (i64, i64),
    dilation: usize,
) -> Option<usize> {
    let eff_k = ((k as i64) - 1) * dilation as i64 + 1;
    let padded = len as i64 + pad.0 + pad.1;
    (padded >= eff_k && k > 0).then(|| ((padded - eff_k) / stride as i64 + 1) as usize)
}

pub(crate) fn infer_conv(p: &ConvParams, x: &TensorType, w: &TensorType) -> Result<TensorType> {
    let bad = |why: String| {
        shape_err(
            "conv",
            format!(
                "{why} (input {}, kernel {})",
                fmt_shape(&x.shape),
                fmt_shape(&w.shape)
            ),
        )
    };
    if x.shape.len() != 4 || w.shape.len() != 4 {
        return bad("input must be [N,C,H,W] and kernel [O,C/groups,KH,KW]".into());
    }
    if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
        return bad(format!(
            "groups {}, stride {:?} and dilation {:?} must be ≥ 1",
            p.groups, p.stride, p.dilation
        ));
    }
    let (c, o) = (x.shape[1], w.shape[0]);
    if c != w.shape[1] * p.groups || o % p.groups != 0 {
        return bad(format!("{c} input channels and {o} output channels do not split into {} groups of kernel width {}", p.groups, w.shape[1]));
    }
    if x.dtype != w.dtype || !x.dtype.is_float() {
        return dtype_err(
            "conv",
            format!(
                "expected equal floating-point dtypes, got {} and {}",
                x.dtype, w.dtype
            ),
        );
    }
    let mut out = vec![x.shape[0], o, 0, 0];
    for a in 0..2 {
        out[a + 2] = conv_out_len(x.shape[a + 2], w.shape[a + 2], p.stride[a], p.padding[a], p.dilation[a])
            .ok_or_else(|| crate::Error::Shape {
                op: "conv".into(),
                msg: format!(
                    "kernel {} (dilation {}) is larger than the padded input {} on spatial axis {a} (input {}, kernel {})",
                    w.shape[a + 2],
                    p.dilation[a],
                    x.shape[a + 2] as i64 + p.padding[a].0 + p.padding[a].1,
                    fmt_shape(&x.shape),
                    fmt_shape(&w.shape)
                ),
            })?;
    }
    Ok(TensorType::new(&out, x.dtype))
}

// y[o] = Σₖ x[o·s + k·d − lo] w[k], so
//   dx = conv(dilate(G, s), flip(w)ᵀ, stride 1, dilation d, pad (eff_k−1−lo, …))
//   dw = conv(xᵀ, Gᵀ, stride d, dilation s, pad (lo, …))   (batch and channel axes swapped)
pub(crate) fn vjp_conv(p: &ConvParams, x: Tensor, w: Tensor, ct: Tensor) -> Vec<Option<Tensor>> {
    let (xs, ws, ys) = (x.shape(), w.shape(), ct.shape());
    let (n, c, o, g) = (xs[0], xs[1], ws[0], p.groups);
    let (cg, og) = (c / g, o / g);

    // --- input gradient ---
    let dilated = if p.stride != [1, 1] {
        ct.prim(Op::Pad {
            lo: vec![0; 4],
            hi: vec![0; 4],
            interior: vec![0, 0, p.stride[0] - 1, p.stride[1] - 1],
            value: 0.0,
        })
    } else {
        ct
    };
    // w [O, Cg, kh, kw] → [g, Og, Cg, kh, kw] → [g, Cg, Og, kh, kw] → [C, Og, kh, kw], flipped
    let wt = w
        .reshape(&[g, og, cg, ws[2], ws[3]])
        .permute(&[0, 2, 1, 3, 4])
        .reshape(&[c, og, ws[2], ws[3]])
        .flip(2)
        .flip(3);
    let mut pad_x = [(0i64, 0i64); 2];
    for a in 0..2 {
        let eff_k = ((ws[a + 2] - 1) * p.dilation[a]) as i64;
        let (h, lo, s, ho) = (
            xs[a + 2] as i64,
            p.padding[a].0,
            p.stride[a] as i64,
            ys[a + 2] as i64,
        );
        pad_x[a] = (eff_k - lo, h + lo - (ho - 1) * s - 1);
    }
    let dx = dilated.conv(
        wt,
        &ConvParams {
            stride: [1, 1],
            padding: pad_x,
            dilation: p.dilation,
            groups: g,
        },
    );

    // --- kernel gradient ---
    // x [N, C, H, W] → [N, g, Cg, H, W] → [Cg, g, N, H, W] → [Cg, g·N, H, W]
    let xt = x
        .reshape(&[n, g, cg, xs[2], xs[3]])
        .permute(&[2, 1, 0, 3, 4])
        .reshape(&[cg, g * n, xs[2], xs[3]]);
    // G [N, O, Ho, Wo] → [N, g, Og, Ho, Wo] → [g, Og, N, Ho, Wo] → [O, N, Ho, Wo]
    let gt = ct
        .reshape(&[n, g, og, ys[2], ys[3]])
        .permute(&[1, 2, 0, 3, 4])
        .reshape(&[o, n, ys[2], ys[3]]);
    let mut pad_w = [(0i64, 0i64); 2];
    for a in 0..2 {
        let (k, d, s) = (ws[a + 2] as i64, p.dilation[a] as i64, p.stride[a] as i64);
        let (h, lo, ho) = (xs[a + 2] as i64, p.padding[a].0, ys[a + 2] as i64);
        pad_w[a] = (lo, (k - 1) * d + (ho - 1) * s + 1 - h - lo);
    }
    let dw = xt
        .conv(
            gt,
            &ConvParams {
                stride: p.dilation,
                padding: pad_w,
                dilation: p.stride,
                groups: g,
            },
        )
        .permute(&[1, 0, 2, 3]);
    vec![Some(dx), Some(dw)]
}
