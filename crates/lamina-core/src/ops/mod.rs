//! Per-family shape rules and vjps. `infer` and `vjp` dispatch on the op; each family's file holds
//! both halves of its primitives' definition.

pub mod elementwise;
pub mod index;
pub mod linalg;
pub mod movement;
pub mod reduce;
pub mod source;
pub mod state;

use crate::error::Result;
use crate::graph::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;

/// Result type of `op` applied to operands of types `ins`, or an error naming the op and the
/// offending shapes.
pub fn infer(op: &Op, ins: &[&TensorType]) -> Result<TensorType> {
    let want = arity(op);
    if ins.len() != want {
        return crate::error::shape_err(
            op.name(),
            format!("takes {want} operand(s), got {}", ins.len()),
        );
    }
    match op {
        Op::Input { .. }
        | Op::State { .. }
        | Op::Const { .. }
        | Op::Iota { .. }
        | Op::RandomBits { .. } => source::infer(op, ins),
        Op::Neg | Op::Recip | Op::Sqrt | Op::Exp | Op::Log | Op::Tanh | Op::Erf => {
            elementwise::infer_unary(op, ins[0])
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::CmpLt | Op::CmpEq => {
            elementwise::infer_binary(op, ins[0], ins[1])
        }
        Op::Where => elementwise::infer_where(ins[0], ins[1], ins[2]),
        Op::Cast { to } => Ok(TensorType::new(&ins[0].shape, *to)),
        Op::ReduceSum { .. } | Op::ReduceMax { .. } | Op::ArgMax { .. } => {
            reduce::infer(op, ins[0])
        }
        Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Expand { .. }
        | Op::Slice { .. }
        | Op::Pad { .. } => movement::infer(op, ins[0]),
        Op::MatMul => linalg::infer_matmul(ins[0], ins[1]),
        Op::Conv(p) => linalg::infer_conv(p, ins[0], ins[1]),
        Op::Gather { .. } | Op::ScatterAdd { .. } => index::infer(op, ins[0], ins[1]),
        Op::Assign { .. } => Ok(ins[0].clone()),
    }
}

/// Number of operands the op takes.
pub fn arity(op: &Op) -> usize {
    match op {
        Op::Input { .. } | Op::State { .. } | Op::Const { .. } | Op::Iota { .. } => 0,
        Op::RandomBits { .. } => 1,
        Op::Neg
        | Op::Recip
        | Op::Sqrt
        | Op::Exp
        | Op::Log
        | Op::Tanh
        | Op::Erf
        | Op::Cast { .. } => 1,
        Op::ReduceSum { .. } | Op::ReduceMax { .. } | Op::ArgMax { .. } => 1,
        Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Expand { .. }
        | Op::Slice { .. }
        | Op::Pad { .. } => 1,
        Op::Assign { .. } => 1,
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::CmpLt | Op::CmpEq => 2,
        Op::MatMul | Op::Conv(_) | Op::Gather { .. } | Op::ScatterAdd { .. } => 2,
        Op::Where => 3,
    }
}

/// Cotangents of the operands of `y = op(x...)` given the cotangent `ct` of `y`, written with
/// graph operations (so the backward pass is itself differentiable). `None` means the operand
/// receives no gradient (an integer operand, a condition, an index).
pub fn vjp(op: &Op, x: &[Tensor], y: Tensor, ct: Tensor) -> Result<Vec<Option<Tensor>>> {
    match op {
        Op::Input { .. }
        | Op::State { .. }
        | Op::Const { .. }
        | Op::Iota { .. }
        | Op::RandomBits { .. } => Ok(vec![None; x.len()]),
        Op::Neg | Op::Recip | Op::Sqrt | Op::Exp | Op::Log | Op::Tanh | Op::Erf => {
            Ok(vec![Some(elementwise::vjp_unary(op, x[0], y, ct))])
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::CmpLt | Op::CmpEq => {
            Ok(elementwise::vjp_binary(op, x[0], x[1], y, ct))
        }
        Op::Where => Ok(elementwise::vjp_where(x[0], ct)),
        Op::Cast { .. } => Ok(vec![elementwise::vjp_cast(x[0], ct)]),
        Op::ReduceSum { .. } | Op::ReduceMax { .. } | Op::ArgMax { .. } => {
            Ok(vec![reduce::vjp(op, x[0], y, ct)])
        }
        Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Expand { .. }
        | Op::Slice { .. }
        | Op::Pad { .. } => Ok(vec![Some(movement::vjp(op, x[0], ct))]),
        Op::MatMul => Ok(linalg::vjp_matmul(x[0], x[1], ct)),
        Op::Conv(p) => Ok(linalg::vjp_conv(p, x[0], x[1], ct)),
        Op::Gather { .. } | Op::ScatterAdd { .. } => Ok(index::vjp(op, x[0], x[1], ct)),
        Op::Assign { name } => state::vjp(name),
    }
}
