//! Movement: Reshape, Permute, Expand, Slice, Pad. They move or replicate elements without
//! arithmetic; each vjp is the adjoint movement (Slice ↔ Pad, Expand → ReduceSum).

use crate::dtype::{fmt_shape, numel};
use crate::error::{shape_err, Result};
use crate::graph::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, x: &TensorType) -> Result<TensorType> {
    let name = op.name();
    let rank = x.shape.len();
    let shape = match op {
        Op::Reshape { shape } => {
            if numel(shape) != numel(&x.shape) {
                return shape_err(
                    name,
                    format!(
                        "cannot reshape {} ({} elements) to {} ({} elements)",
                        fmt_shape(&x.shape),
                        numel(&x.shape),
                        fmt_shape(shape),
                        numel(shape)
                    ),
                );
            }
            shape.clone()
        }
        Op::Permute { perm } => {
            let mut seen = vec![false; rank];
            if perm.len() != rank
                || perm
                    .iter()
                    .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
            {
                return shape_err(
                    name,
                    format!(
                        "{perm:?} is not a permutation of the {rank} axes of {}",
                        fmt_shape(&x.shape)
                    ),
                );
            }
            perm.iter().map(|&p| x.shape[p]).collect()
        }
        Op::Expand { shape } => {
            let ok =
                shape.len() == rank && x.shape.iter().zip(shape).all(|(&a, &b)| a == b || a == 1);
            if !ok {
                return shape_err(
                    name,
                    format!(
                        "cannot expand {} to {} (only size-1 axes grow; ranks must match)",
                        fmt_shape(&x.shape),
                        fmt_shape(shape)
                    ),
                );
            }
            shape.clone()
        }
        Op::Slice {
            start,
            limit,
            stride,
        } => {
            if start.len() != rank || limit.len() != rank || stride.len() != rank {
                return shape_err(
                    name,
                    format!(
                        "start/limit/stride need {rank} entries for {}",
                        fmt_shape(&x.shape)
                    ),
                );
            }
            let mut out = Vec::with_capacity(rank);
            for a in 0..rank {
                if stride[a] == 0 || start[a] >= limit[a] || limit[a] > x.shape[a] {
                    return shape_err(
                        name,
                        format!(
                            "axis {a}: {}..{} step {} is not a non-empty range inside {}",
                            start[a],
                            limit[a],
                            stride[a],
                            fmt_shape(&x.shape)
                        ),
                    );
                }
                out.push((limit[a] - start[a]).div_ceil(stride[a]));
            }
            out
        }
        Op::Pad {
            lo, hi, interior, ..
        } => {
            if lo.len() != rank || hi.len() != rank || interior.len() != rank {
                return shape_err(
                    name,
                    format!(
                        "lo/hi/interior need {rank} entries for {}",
                        fmt_shape(&x.shape)
                    ),
                );
            }
            (0..rank)
                .map(|a| lo[a] + hi[a] + x.shape[a] + x.shape[a].saturating_sub(1) * interior[a])
                .collect()
        }
        _ => unreachable!(),
    };
    Ok(TensorType::new(&shape, x.dtype))
}

pub(crate) fn vjp(op: &Op, x: Tensor, ct: Tensor) -> Tensor {
    let xs = x.shape();
    match op {
        // reshape back
        Op::Reshape { .. } => ct.reshape(&xs),
        // the inverse permutation
        Op::Permute { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            ct.permute(&inv)
        }
        // every copy of an element contributes: sum over the grown axes (kept as size 1)
        Op::Expand { shape } => {
            let axes: Vec<usize> = (0..xs.len())
                .filter(|&a| xs[a] == 1 && shape[a] != 1)
                .collect();
            if axes.is_empty() {
                ct
            } else {
                ct.prim(Op::ReduceSum { axes })
            }
        }
        // scatter the cotangent back into zeros: a pad with stride-1 interior zeros
        Op::Slice { start, stride, .. } => {
            let ys = ct.shape();
            let hi = (0..xs.len())
                .map(|a| xs[a] - (start[a] + (ys[a] - 1) * stride[a] + 1))
                .collect();
            let interior = stride.iter().map(|s| s - 1).collect();
            ct.prim(Op::Pad {
                lo: start.clone(),
                hi,
                interior,
                value: 0.0,
            })
        }
        // the operand's elements sit at lo + i·(interior+1)
        Op::Pad { lo, interior, .. } => {
            let stride: Vec<usize> = interior.iter().map(|i| i + 1).collect();
            let limit = (0..xs.len())
                .map(|a| lo[a] + (xs[a] - 1) * stride[a] + 1)
                .collect();
            ct.prim(Op::Slice {
                start: lo.clone(),
                limit,
                stride,
            })
        }
        _ => unreachable!(),
    }
}
