//! Reverse-mode autodiff as a graph transformation: walks the graph backwards from the outputs and
//! appends, for each node on a path from the wanted inputs, the nodes of its vjp (`ops::vjp`). The
//! backward pass is ordinary graph, so passes, fusion and a second `grad` apply to it unchanged.
//!
//! Nothing here knows any particular primitive: the rules live with their families under `ops/`.

use crate::error::{Error, Result};
use crate::graph::{with_builder, NodeId};
use crate::op::Op;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Gradients of the scalar `y` with respect to each of `xs` (zeros where `y` does not depend on one).
///
/// ```
/// use lamina_core::{GraphBuilder, DType, grad};
/// let b = GraphBuilder::new();
/// let x = b.input("x", &[3], DType::F64);
/// let y = (x * x).sum(&[], false);           // y = Σ x²
/// let g = grad(y, &[x]).unwrap();            // dy/dx = 2x
/// assert_eq!(g[0].shape(), vec![3]);
/// ```
pub fn grad(y: Tensor, xs: &[Tensor]) -> Result<Vec<Tensor>> {
    y.check()?;
    if y.numel() != 1 {
        return Err(Error::Shape {
            op: "grad".into(),
            msg: format!(
                "needs a scalar output, got shape {:?}; use vjp with a cotangent",
                y.shape()
            ),
        });
    }
    vjp(&[y], &[y.ones_like()], xs)
}

/// Vector-Jacobian product: `Σᵢ ctᵢ · ∂ysᵢ/∂xs` for each of `xs`.
pub fn vjp(ys: &[Tensor], cts: &[Tensor], xs: &[Tensor]) -> Result<Vec<Tensor>> {
    let graph = ys
        .first()
        .or(xs.first())
        .map(|t| t.graph_id())
        .ok_or_else(|| Error::InvalidGraph("vjp of nothing".into()))?;
    for t in ys.iter().chain(cts).chain(xs) {
        t.node_in(graph)?;
    }
    for (y, c) in ys.iter().zip(cts) {
        if y.ty() != c.ty() {
            return Err(Error::Shape {
                op: "vjp".into(),
                msg: format!(
                    "cotangent {} does not match output {}",
                    c.ty().describe(),
                    y.ty().describe()
                ),
            });
        }
    }
    // Which nodes lie on a path from some x to some y, carrying floating-point values.
    let (nodes, n) = with_builder(graph, |st| {
        let n = st.graph.nodes.len();
        let v: Vec<(Op, Vec<NodeId>, bool)> = st
            .graph
            .nodes
            .iter()
            .map(|nd| (nd.op.clone(), nd.inputs.clone(), nd.ty.dtype.is_float()))
            .collect();
        (v, n)
    });
    let mut from_x = vec![false; n];
    for x in xs {
        from_x[x.id()] = nodes[x.id()].2;
    }
    for i in 0..n {
        if !from_x[i] && nodes[i].2 && nodes[i].1.iter().any(|&j| from_x[j]) {
            from_x[i] = true;
        }
    }
    let mut to_y = vec![false; n];
    for y in ys {
        to_y[y.id()] = true;
    }
    for i in (0..n).rev() {
        if to_y[i] {
            for &j in &nodes[i].1 {
                to_y[j] = true;
            }
        }
    }
    let mut cot: HashMap<NodeId, Tensor> = HashMap::new();
    let accumulate = |cot: &mut HashMap<NodeId, Tensor>, id: NodeId, g: Tensor| {
        let v = match cot.get(&id) {
            Some(&acc) => acc + g,
            None => g,
        };
        cot.insert(id, v);
    };
    for (y, c) in ys.iter().zip(cts) {
        if from_x[y.id()] {
            accumulate(&mut cot, y.id(), *c);
        }
    }
    let is_x: std::collections::HashSet<NodeId> = xs.iter().map(|x| x.id()).collect();
    for i in (0..n).rev() {
        if !(from_x[i] && to_y[i]) {
            continue;
        }
        let Some(&ct) = cot.get(&i) else { continue };
        // An x is a leaf of the differentiation even when it has operands of its own.
        if is_x.contains(&i) && !nodes[i].1.iter().any(|&j| from_x[j]) {
            continue;
        }
        let (op, inputs, _) = &nodes[i];
        let operands: Vec<Tensor> = inputs
            .iter()
            .map(|&j| Tensor::from_parts(graph, j))
            .collect();
        let grads = crate::ops::vjp(op, &operands, Tensor::from_parts(graph, i), ct)?;
        for (&j, g) in inputs.iter().zip(grads) {
            if let (Some(g), true) = (g, from_x[j] && to_y[j]) {
                let g = g.check()?;
                accumulate(&mut cot, j, g);
            }
        }
    }
    xs.iter()
        .map(|x| match cot.get(&x.id()) {
            Some(&g) => g.check(),
            None => x.zeros_like().check(),
        })
        .collect()
}
