//! Linear algebra: batched MatMul and 2-D Conv. A Conv node computes one of the three maps of a
//! convolution geometry (`ConvKind`): the forward map and its input and kernel gradients. Each
//! kind's vjp is made of the other kinds, so gradients of any order stay inside the primitive.

use crate::dtype::fmt_shape;
use crate::error::{dtype_err, shape_err, Result};
use crate::graph::TensorType;
use crate::op::{ConvKind, ConvParams};
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

/// The shapes of one convolution: input `x`, kernel `w`, output `y`, whatever the kind.
struct ConvShapes {
    x: Vec<usize>,
    w: Vec<usize>,
    y: Vec<usize>,
}

/// The (input, kernel, output) shapes of a Conv node from its operand shapes, checked.
fn conv_shapes(
    p: &ConvParams,
    a: &[usize],
    b: &[usize],
) -> std::result::Result<ConvShapes, String> {
    if a.len() != 4 || b.len() != 4 {
        return Err(match p.kind {
            ConvKind::Forward => "input must be [N,C,H,W] and kernel [O,C/groups,KH,KW]",
            ConvKind::InputGrad { .. } => {
                "output gradient must be [N,O,HO,WO] and kernel [O,C/groups,KH,KW]"
            }
            ConvKind::KernelGrad { .. } => {
                "input must be [N,C,H,W] and output gradient [N,O,HO,WO]"
            }
        }
        .into());
    }
    if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
        return Err(format!(
            "groups {}, stride {:?} and dilation {:?} must be ≥ 1",
            p.groups, p.stride, p.dilation
        ));
    }
    let (x, w) = match p.kind {
        ConvKind::Forward => (a.to_vec(), b.to_vec()),
        ConvKind::InputGrad { input_hw } => (
            vec![a[0], b[1] * p.groups, input_hw[0], input_hw[1]],
            b.to_vec(),
        ),
        ConvKind::KernelGrad { kernel_hw } => {
            if !a[1].is_multiple_of(p.groups) {
                return Err(format!(
                    "{} input channels do not split into {} groups",
                    a[1], p.groups
                ));
            }
            (
                a.to_vec(),
                vec![b[1], a[1] / p.groups, kernel_hw[0], kernel_hw[1]],
            )
        }
    };
    let (c, o) = (x[1], w[0]);
    if c != w[1] * p.groups || o % p.groups != 0 {
        return Err(format!("{c} input channels and {o} output channels do not split into {} groups of kernel width {}", p.groups, w[1]));
    }
    let mut y = vec![x[0], o, 0, 0];
    for ax in 0..2 {
        y[ax + 2] = conv_out_len(
            x[ax + 2],
            w[ax + 2],
            p.stride[ax],
            p.padding[ax],
            p.dilation[ax],
        )
        .ok_or_else(|| {
            format!(
                "kernel {} (dilation {}) is larger than the padded input {} on spatial axis {ax}",
                w[ax + 2],
                p.dilation[ax],
                x[ax + 2] as i64 + p.padding[ax].0 + p.padding[ax].1,
            )
        })?;
    }
    // the given operand that plays the output gradient must have the output's shape
    let given = match p.kind {
        ConvKind::Forward => None,
        ConvKind::InputGrad { .. } => Some(a),
        ConvKind::KernelGrad { .. } => Some(b),
    };
    if let Some(g) = given {
        if g != y.as_slice() {
            return Err(format!(
                "output gradient {} is not the convolution's output shape {}",
                fmt_shape(g),
                fmt_shape(&y)
            ));
        }
    }
    Ok(ConvShapes { x, w, y })
}

pub(crate) fn infer_conv(p: &ConvParams, a: &TensorType, b: &TensorType) -> Result<TensorType> {
    let s = conv_shapes(p, &a.shape, &b.shape).or_else(|why| {
        let (na, nb) = match p.kind {
            ConvKind::Forward => ("input", "kernel"),
            ConvKind::InputGrad { .. } => ("output gradient", "kernel"),
            ConvKind::KernelGrad { .. } => ("input", "output gradient"),
        };
        shape_err(
            "conv",
            format!(
                "{why} ({:?}: {na} {}, {nb} {})",
                p.kind,
                fmt_shape(&a.shape),
                fmt_shape(&b.shape)
            ),
        )
    })?;
    if a.dtype != b.dtype || !a.dtype.is_float() {
        return dtype_err(
            "conv",
            format!(
                "expected equal floating-point dtypes, got {} and {}",
                a.dtype, b.dtype
            ),
        );
    }
    let out = match p.kind {
        ConvKind::Forward => s.y,
        ConvKind::InputGrad { .. } => s.x,
        ConvKind::KernelGrad { .. } => s.w,
    };
    Ok(TensorType::new(&out, a.dtype))
}

// With T(x, w, dy) = Σ dy·conv(x, w), trilinear, every kind is a partial derivative of T:
//   Forward = ∂T/∂dy, InputGrad = ∂T/∂x, KernelGrad = ∂T/∂w,
// so the cotangent G of one kind's result pairs with the remaining operand slot:
//   Forward(x, w):     dx = InputGrad(G, w),  dw = KernelGrad(x, G)
//   InputGrad(dy, w):  ddy = Forward(G, w),   dw = KernelGrad(G, dy)
//   KernelGrad(x, dy): dx = InputGrad(dy, G), ddy = Forward(x, G)
pub(crate) fn vjp_conv(p: &ConvParams, a: Tensor, b: Tensor, ct: Tensor) -> Vec<Option<Tensor>> {
    let with = |kind: ConvKind| ConvParams { kind, ..p.clone() };
    let hw = |t: Tensor| {
        let s = t.shape();
        [s[2], s[3]]
    };
    let fwd = with(ConvKind::Forward);
    match p.kind {
        ConvKind::Forward => vec![
            Some(ct.conv(b, &with(ConvKind::InputGrad { input_hw: hw(a) }))),
            Some(a.conv(ct, &with(ConvKind::KernelGrad { kernel_hw: hw(b) }))),
        ],
        ConvKind::InputGrad { .. } => vec![
            Some(ct.conv(b, &fwd)),
            Some(ct.conv(a, &with(ConvKind::KernelGrad { kernel_hw: hw(b) }))),
        ],
        ConvKind::KernelGrad { .. } => vec![
            Some(b.conv(ct, &with(ConvKind::InputGrad { input_hw: hw(a) }))),
            Some(a.conv(ct, &fwd)),
        ],
    }
}

/// The input, kernel and output shapes of a Conv node of parameters `p` with operand shapes `a`
/// and `b` (for backends, which see the operands of every kind).
pub fn conv_geometry(p: &ConvParams, a: &[usize], b: &[usize]) -> Result<[Vec<usize>; 3]> {
    let s = conv_shapes(p, a, b).or_else(|why| shape_err("conv", why))?;
    Ok([s.x, s.w, s.y])
}
