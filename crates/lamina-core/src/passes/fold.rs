//! Constant folding and algebraic simplification.
//!
//! Folding evaluates pure ops whose operands are all constants, with the scalar semantics of
//! `ops::elementwise::eval_scalar` (so a folded value equals what a backend would compute).
//! Splat constants fold through any movement; constants with data fold through elementwise ops
//! up to `FOLD_LIMIT` elements and through reshapes.

use crate::dtype::numel;
use crate::error::Result;
use crate::graph::Graph;
use crate::op::{Literal, Op};
use crate::ops::elementwise::{eval_scalar, round_to};
use std::sync::Arc;

/// Largest constant (in elements) that folding materialises.
pub const FOLD_LIMIT: usize = 1 << 16;

fn literal(g: &Graph, id: usize) -> Option<&Literal> {
    match &g.nodes[id].op {
        Op::Const { value, .. } => Some(value),
        _ => None,
    }
}

fn splat(g: &Graph, id: usize) -> Option<f64> {
    literal(g, id).and_then(|l| l.splat())
}

pub fn fold_constants(g: &Graph) -> Result<Graph> {
    super::rebuild(g, |out, id, ins| {
        let n = &g.nodes[id];
        let lits: Option<Vec<&Literal>> = ins.iter().map(|&i| literal(out, i)).collect();
        let folded = match (&n.op, lits) {
            (op, Some(lits)) if !ins.is_empty() && op.kind().is_elementwise() => {
                if lits.iter().all(|l| l.splat().is_some()) {
                    let args: Vec<f64> = lits.iter().map(|l| l.get(0)).collect();
                    Some(Literal::Splat(eval_scalar(op, &args, n.ty.dtype)))
                } else if numel(&n.ty.shape) <= FOLD_LIMIT {
                    let vals = (0..numel(&n.ty.shape))
                        .map(|i| {
                            let args: Vec<f64> = lits.iter().map(|l| l.get(i)).collect();
                            eval_scalar(op, &args, n.ty.dtype)
                        })
                        .collect();
                    Some(Literal::Data(Arc::new(vals)))
                } else {
                    None
                }
            }
            (Op::Reshape { .. }, Some(lits)) => Some(lits[0].clone()),
            (Op::Expand { .. } | Op::Permute { .. } | Op::Slice { .. }, Some(lits)) => {
                lits[0].splat().map(Literal::Splat)
            }
            (Op::Pad { value, .. }, Some(lits)) => lits[0]
                .splat()
                .filter(|v| v.to_bits() == value.to_bits())
                .map(Literal::Splat),
            (Op::ReduceSum { .. }, Some(lits)) => lits[0].splat().map(|v| {
                let count = numel(&g.nodes[n.inputs[0]].ty.shape) / numel(&n.ty.shape).max(1);
                Literal::Splat(round_to(v * count as f64, n.ty.dtype))
            }),
            (Op::ReduceMax { .. }, Some(lits)) => lits[0].splat().map(Literal::Splat),
            _ => None,
        };
        let op = match folded {
            Some(value) => Op::Const {
                value,
                shape: n.ty.shape.clone(),
                dtype: n.ty.dtype,
            },
            None => n.op.clone(),
        };
        let operands: &[usize] = if matches!(op, Op::Const { .. }) {
            &[]
        } else {
            ins
        };
        out.push(op, operands).map(Some)
    })
}

/// True when `perm` swaps the last two axes and keeps the others.
fn swaps_last_two(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2
        && perm[r - 2] == r - 1
        && perm[r - 1] == r - 2
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
}

/// Algebraic identities: `x+0`, `x−0`, `x·1`, `x/1`, `−(−x)`, identity reshapes, permutes,
/// expands and casts, reshape∘reshape, permute∘permute, `where(c, x, x)`, and `(AB)ᵀ = BᵀAᵀ` for a
/// product used only transposed (backends read transposed operands in place, so the transpose of
/// the result — a weight gradient — costs no copy).
pub fn simplify(g: &Graph) -> Result<Graph> {
    let users = g.users();
    super::rebuild(g, |out, id, ins| {
        let n = &g.nodes[id];
        if let Op::Permute { perm } = &n.op {
            let inner = &out.nodes[ins[0]];
            if swaps_last_two(perm)
                && matches!(inner.op, Op::MatMul)
                && users[n.inputs[0]].len() == 1
            {
                let (a, b) = (inner.inputs[0], inner.inputs[1]);
                let bt = out.push(Op::Permute { perm: perm.clone() }, &[b])?;
                let at = out.push(Op::Permute { perm: perm.clone() }, &[a])?;
                return out.push(Op::MatMul, &[bt, at]).map(Some);
            }
        }
        let n = &g.nodes[id];
        let same = |i: usize| out.nodes[i].ty == n.ty;
        let fwd = match &n.op {
            Op::Add if splat(out, ins[1]) == Some(0.0) && same(ins[0]) => Some(ins[0]),
            Op::Add if splat(out, ins[0]) == Some(0.0) && same(ins[1]) => Some(ins[1]),
            Op::Sub if splat(out, ins[1]) == Some(0.0) && same(ins[0]) => Some(ins[0]),
            Op::Mul if splat(out, ins[1]) == Some(1.0) && same(ins[0]) => Some(ins[0]),
            Op::Mul if splat(out, ins[0]) == Some(1.0) && same(ins[1]) => Some(ins[1]),
            Op::Div if splat(out, ins[1]) == Some(1.0) && same(ins[0]) => Some(ins[0]),
            Op::Neg if matches!(out.nodes[ins[0]].op, Op::Neg) => Some(out.nodes[ins[0]].inputs[0]),
            Op::Where if ins[1] == ins[2] => Some(ins[1]),
            Op::Reshape { .. } | Op::Expand { .. } | Op::Cast { .. } if same(ins[0]) => {
                Some(ins[0])
            }
            Op::Permute { perm } if perm.iter().enumerate().all(|(i, &p)| i == p) => Some(ins[0]),
            _ => None,
        };
        if let Some(f) = fwd {
            return Ok(Some(f));
        }
        let Some(&first) = ins.first() else {
            return out.push(n.op.clone(), ins).map(Some);
        };
        let inner = out.nodes[first].clone();
        match (&n.op, Some(&inner.op)) {
            (Op::Reshape { shape }, Some(Op::Reshape { .. })) => {
                let src = inner.inputs[0];
                if out.nodes[src].ty.shape == *shape {
                    Ok(Some(src))
                } else {
                    out.push(
                        Op::Reshape {
                            shape: shape.clone(),
                        },
                        &[src],
                    )
                    .map(Some)
                }
            }
            (Op::Permute { perm }, Some(Op::Permute { perm: p0 })) => {
                let composed: Vec<usize> = perm.iter().map(|&p| p0[p]).collect();
                let src = inner.inputs[0];
                if composed.iter().enumerate().all(|(i, &p)| i == p) {
                    Ok(Some(src))
                } else {
                    out.push(Op::Permute { perm: composed }, &[src]).map(Some)
                }
            }
            _ => out.push(n.op.clone(), ins).map(Some),
        }
    })
}
