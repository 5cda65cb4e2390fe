//! Elementwise primitives: Neg Recip Sqrt Exp Log Tanh Erf, Add Sub Mul Div Max CmpLt CmpEq,
//! Where and Cast. Binary operands must have equal shapes and dtypes: NumPy broadcasting is done by
//! the `Tensor` API with explicit `Expand` nodes, so these rules (and their vjps) stay simple.

use crate::dtype::{fmt_shape, DType};
use crate::error::{dtype_err, shape_err, Result};
use crate::graph::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;

pub(crate) fn infer_unary(op: &Op, x: &TensorType) -> Result<TensorType> {
    let ok = match op {
        Op::Neg => x.dtype.is_float() || x.dtype == DType::I32,
        _ => x.dtype.is_float(),
    };
    if !ok {
        return dtype_err(
            op.name(),
            format!("expected a floating-point operand, got {}", x.describe()),
        );
    }
    Ok(x.clone())
}

pub(crate) fn infer_binary(op: &Op, a: &TensorType, b: &TensorType) -> Result<TensorType> {
    if a.shape != b.shape {
        return shape_err(
            op.name(),
            format!(
                "operand shapes {} and {} differ (broadcast with expand first)",
                fmt_shape(&a.shape),
                fmt_shape(&b.shape)
            ),
        );
    }
    if a.dtype != b.dtype {
        return dtype_err(
            op.name(),
            format!("operand dtypes {} and {} differ", a.dtype, b.dtype),
        );
    }
    let numeric = a.dtype.is_float() || a.dtype == DType::I32;
    match op {
        Op::CmpEq => Ok(TensorType::new(&a.shape, DType::Bool)),
        Op::CmpLt if numeric => Ok(TensorType::new(&a.shape, DType::Bool)),
        _ if numeric => Ok(a.clone()),
        _ => dtype_err(
            op.name(),
            format!("expected numeric operands, got {}", a.describe()),
        ),
    }
}

pub(crate) fn infer_where(c: &TensorType, a: &TensorType, b: &TensorType) -> Result<TensorType> {
    if c.dtype != DType::Bool {
        return dtype_err(
            "where",
            format!("condition must be bool, got {}", c.describe()),
        );
    }
    if c.shape != a.shape || a.shape != b.shape {
        return shape_err(
            "where",
            format!(
                "condition {}, then {} and else {} must have equal shapes",
                fmt_shape(&c.shape),
                fmt_shape(&a.shape),
                fmt_shape(&b.shape)
            ),
        );
    }
    if a.dtype != b.dtype {
        return dtype_err(
            "where",
            format!("then {} and else {} dtypes differ", a.dtype, b.dtype),
        );
    }
    Ok(a.clone())
}

pub(crate) fn vjp_unary(op: &Op, x: Tensor, y: Tensor, ct: Tensor) -> Tensor {
    match op {
        // d(-x) = -1
        Op::Neg => -ct,
        // d(1/x) = -1/x² = -y²
        Op::Recip => -(ct * y * y),
        // d√x = 1/(2√x) = 0.5/y
        Op::Sqrt => ct * 0.5 / y,
        // d eˣ = eˣ = y
        Op::Exp => ct * y,
        // d ln x = 1/x
        Op::Log => ct / x,
        // d tanh x = 1 - tanh² x
        Op::Tanh => ct * (1.0 - y * y),
        // d erf x = 2/√π · e^(-x²)
        Op::Erf => ct * (-(x * x)).exp() * std::f64::consts::FRAC_2_SQRT_PI,
        _ => unreachable!(),
    }
}

pub(crate) fn vjp_binary(
    op: &Op,
    a: Tensor,
    b: Tensor,
    y: Tensor,
    ct: Tensor,
) -> Vec<Option<Tensor>> {
    match op {
        // d(a+b) = (1, 1); d(a-b) = (1, -1)
        Op::Add => vec![Some(ct), Some(ct)],
        Op::Sub => vec![Some(ct), Some(-ct)],
        // d(ab) = (b, a)
        Op::Mul => vec![Some(ct * b), Some(ct * a)],
        // d(a/b) = (1/b, -a/b²) = (1/b, -y/b)
        Op::Div => vec![Some(ct / b), Some(-(ct * y / b))],
        // d max(a,b): the whole cotangent goes to `a` where a ≥ b (ties pick the first operand,
        // so a chain of maxima routes each window's gradient to its first maximum, as PyTorch does)
        Op::Max => {
            // a < b exactly when a < max(a, b) (NaN and signed zeros included), so when `a` is a
            // constant (relu is max(0, x)) the mask reads the result and the operand `b` (the
            // pre-activation) need not be kept for the backward pass
            let b_wins = if a.is_constant() { a.lt(y) } else { a.lt(b) };
            let zero = ct.zeros_like();
            vec![Some(b_wins.where_(zero, ct)), Some(b_wins.where_(ct, zero))]
        }
        // comparisons are piecewise constant
        Op::CmpLt | Op::CmpEq => vec![None, None],
        _ => unreachable!(),
    }
}

// d where(c, a, b) = (-, [c], [!c])
pub(crate) fn vjp_where(c: Tensor, ct: Tensor) -> Vec<Option<Tensor>> {
    let zero = ct.zeros_like();
    vec![None, Some(c.where_(ct, zero)), Some(c.where_(zero, ct))]
}

// A float-to-float cast is the identity up to rounding; casts from or to integers have no gradient.
pub(crate) fn vjp_cast(x: Tensor, ct: Tensor) -> Option<Tensor> {
    (x.dtype().is_float() && ct.dtype().is_float()).then(|| ct.cast(x.dtype()))
}

/// The scalar semantics of every elementwise primitive, in f64: the single definition that constant
/// folding and the reference interpreter use and every backend must reproduce. Results are rounded
/// to `out` (f32 rounding, i32 wrapping, bool as 0/1).
pub fn eval_scalar(op: &Op, args: &[f64], out: DType) -> f64 {
    let r = match op {
        Op::Neg => -args[0],
        Op::Recip => 1.0 / args[0],
        Op::Sqrt => args[0].sqrt(),
        Op::Exp => args[0].exp(),
        Op::Log => args[0].ln(),
        Op::Tanh => args[0].tanh(),
        Op::Erf => libm::erf(args[0]),
        Op::Add => args[0] + args[1],
        Op::Sub => args[0] - args[1],
        Op::Mul => args[0] * args[1],
        Op::Div if out == DType::I32 => {
            // integer division truncates toward zero; dividing by zero gives 0
            if args[1] == 0.0 {
                0.0
            } else {
                (args[0] / args[1]).trunc()
            }
        }
        Op::Div => args[0] / args[1],
        // NaN propagates, as in PyTorch's maximum
        Op::Max => {
            if args[0].is_nan() || args[1].is_nan() {
                f64::NAN
            } else if args[0] < args[1] {
                args[1]
            } else {
                args[0]
            }
        }
        Op::CmpLt => (args[0] < args[1]) as u8 as f64,
        Op::CmpEq => (args[0] == args[1]) as u8 as f64,
        Op::Where => {
            if args[0] != 0.0 {
                args[1]
            } else {
                args[2]
            }
        }
        // float → int truncates toward zero and saturates (NaN → 0), Rust's `as`
        Op::Cast { .. } if out == DType::I32 => return args[0] as i32 as f64,
        Op::Cast { .. } => args[0],
        _ => unreachable!("eval_scalar of {}", op.name()),
    };
    round_to(r, out)
}

/// Rounds an f64 to what a value of `dtype` can hold: f32 rounding, i32 wrap-around (integer
/// arithmetic overflows like `wrapping_add`), bool as 0/1.
pub fn round_to(v: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::I32 => v as i64 as i32 as f64,
        DType::Bool => (v != 0.0) as u8 as f64,
        _ => v,
    }
}
