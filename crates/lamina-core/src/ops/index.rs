//! Indexing: Gather (`take` along an axis) and its transpose ScatterAdd.

use crate::dtype::fmt_shape;
use crate::error::{dtype_err, shape_err, Result};
use crate::graph::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::DType;

pub(crate) fn infer(op: &Op, x: &TensorType, idx: &TensorType) -> Result<TensorType> {
    if idx.dtype != DType::I32 {
        return dtype_err(
            op.name(),
            format!("indices must be i32, got {}", idx.describe()),
        );
    }
    match op {
        Op::Gather { axis } => {
            if *axis >= x.shape.len() {
                return shape_err(
                    "gather",
                    format!("axis {axis} out of range for {}", fmt_shape(&x.shape)),
                );
            }
            let mut s = x.shape[..*axis].to_vec();
            s.extend_from_slice(&idx.shape);
            s.extend_from_slice(&x.shape[axis + 1..]);
            Ok(TensorType::new(&s, x.dtype))
        }
        Op::ScatterAdd { axis, dim_size } => {
            // updates = pre ++ idx ++ post  →  out = pre ++ [dim_size] ++ post
            let k = idx.shape.len();
            let ok = x.shape.len() >= axis + k && x.shape[*axis..axis + k] == idx.shape[..];
            if !ok {
                return shape_err(
                    "scatter_add",
                    format!(
                        "updates {} must contain the index shape {} at axis {axis}",
                        fmt_shape(&x.shape),
                        fmt_shape(&idx.shape)
                    ),
                );
            }
            let mut s = x.shape[..*axis].to_vec();
            s.push(*dim_size);
            s.extend_from_slice(&x.shape[axis + k..]);
            if !(x.dtype.is_float() || x.dtype == DType::I32) {
                return dtype_err(
                    "scatter_add",
                    format!("expected numeric updates, got {}", x.describe()),
                );
            }
            Ok(TensorType::new(&s, x.dtype))
        }
        _ => unreachable!(),
    }
}

pub(crate) fn vjp(op: &Op, x: Tensor, idx: Tensor, ct: Tensor) -> Vec<Option<Tensor>> {
    match op {
        // gather reads x[idx]: each read adds its cotangent back at idx
        Op::Gather { axis } => {
            let dim_size = x.shape()[*axis];
            vec![
                Some(Tensor::apply(
                    Op::ScatterAdd {
                        axis: *axis,
                        dim_size,
                    },
                    &[ct, idx],
                )),
                None,
            ]
        }
        // scatter_add writes updates at idx: each update's cotangent is read back from idx
        Op::ScatterAdd { axis, .. } => vec![
            Some(Tensor::apply(Op::Gather { axis: *axis }, &[ct, idx])),
            None,
        ],
        _ => unreachable!(),
    }
}
