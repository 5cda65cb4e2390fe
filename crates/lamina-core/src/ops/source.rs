//! Sources: Input, State, Const, Iota, RandomBits. They take no differentiable operands, so their
//! vjp is empty (RandomBits' key is an integer).

use crate::error::{dtype_err, shape_err, Result};
use crate::graph::TensorType;
use crate::op::{Literal, Op};
use crate::DType;

pub(crate) fn infer(op: &Op, ins: &[&TensorType]) -> Result<TensorType> {
    match op {
        Op::Input { shape, dtype, .. } | Op::State { shape, dtype, .. } => {
            Ok(TensorType::new(shape, *dtype))
        }
        Op::Const {
            value,
            shape,
            dtype,
        } => {
            if let Literal::Data(d) = value {
                if d.len() != crate::dtype::numel(shape) {
                    return shape_err(
                        "const",
                        format!(
                            "shape {:?} needs {} values, got {}",
                            shape,
                            crate::dtype::numel(shape),
                            d.len()
                        ),
                    );
                }
            }
            Ok(TensorType::new(shape, *dtype))
        }
        Op::Iota { shape, axis, dtype } => {
            if *axis >= shape.len() {
                return shape_err(
                    "iota",
                    format!("axis {axis} out of range for shape {shape:?}"),
                );
            }
            if !matches!(dtype, DType::I32 | DType::F32 | DType::F64) {
                return dtype_err("iota", format!("expected i32, f32 or f64, got {dtype}"));
            }
            Ok(TensorType::new(shape, *dtype))
        }
        Op::RandomBits { shape, .. } => {
            if ins[0].dtype != DType::I32 || ins[0].shape != [2] {
                return shape_err(
                    "random_bits",
                    format!("key must be i32[2] (seed, step), got {}", ins[0].describe()),
                );
            }
            Ok(TensorType::new(shape, DType::I32))
        }
        _ => unreachable!("source::infer called with {}", op.name()),
    }
}
