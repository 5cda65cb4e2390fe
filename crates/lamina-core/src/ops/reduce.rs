//! Reductions: ReduceSum, ReduceMax, ArgMax. Reduced axes are kept with size 1 (the `Tensor` API
//! reshapes them away), so every vjp is a plain `Expand` back to the operand's shape.

use crate::error::{dtype_err, shape_err, Result};
use crate::graph::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::DType;

pub(crate) fn infer(op: &Op, x: &TensorType) -> Result<TensorType> {
    let axes: Vec<usize> = match op {
        Op::ReduceSum { axes } | Op::ReduceMax { axes } => axes.clone(),
        Op::ArgMax { axis } => vec![*axis],
        _ => unreachable!(),
    };
    let mut shape = x.shape.clone();
    for (i, &a) in axes.iter().enumerate() {
        if a >= shape.len() {
            return shape_err(
                op.name(),
                format!("axis {a} out of range for operand {}", x.describe()),
            );
        }
        if axes[..i].contains(&a) {
            return shape_err(op.name(), format!("axis {a} listed twice in {axes:?}"));
        }
        if x.shape[a] == 0 {
            return shape_err(
                op.name(),
                format!("cannot reduce empty axis {a} of {}", x.describe()),
            );
        }
        shape[a] = 1;
    }
    if !(x.dtype.is_float() || x.dtype == DType::I32) {
        return dtype_err(
            op.name(),
            format!("expected a numeric operand, got {}", x.describe()),
        );
    }
    let dtype = if matches!(op, Op::ArgMax { .. }) {
        DType::I32
    } else {
        x.dtype
    };
    Ok(TensorType::new(&shape, dtype))
}

pub(crate) fn vjp(op: &Op, x: Tensor, y: Tensor, ct: Tensor) -> Option<Tensor> {
    let shape = x.shape();
    match op {
        // d Σx / dx = 1
        Op::ReduceSum { .. } => Some(ct.expand(&shape)),
        // d max / dx = 1/k on the k tied maxima, 0 elsewhere
        Op::ReduceMax { axes } => {
            let hit = x.eq(y.expand(&shape));
            let hits = hit.cast(x.dtype());
            let count = hits.prim(Op::ReduceSum { axes: axes.clone() });
            Some(hits * (ct / count).expand(&shape))
        }
        // an index is piecewise constant
        Op::ArgMax { .. } => None,
        _ => unreachable!(),
    }
}
