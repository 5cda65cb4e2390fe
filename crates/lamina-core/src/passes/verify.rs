//! The verifier: every structural invariant the passes, the planner and the backends rely on.

use crate::error::{Error, Result};
use crate::graph::{Graph, TensorType};
use crate::op::Op;
use std::collections::HashMap;

/// Checks that operands precede their users, every node's type is what its shape rule gives,
/// inputs and states are declared consistently, each state is assigned at most once with its own
/// type, and no node reads an Assign's result (only outputs may).
pub fn verify(g: &Graph) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidGraph(m));
    let mut inputs: HashMap<&str, &TensorType> = HashMap::new();
    let mut states: HashMap<&str, &TensorType> = HashMap::new();
    let mut assigned: HashMap<&str, usize> = HashMap::new();
    for (id, n) in g.nodes.iter().enumerate() {
        for &i in &n.inputs {
            if i >= id {
                return bad(format!(
                    "%{id} ({}) uses %{i}, which does not come before it",
                    n.op.name()
                ));
            }
            if matches!(g.nodes[i].op, Op::Assign { .. }) {
                return bad(format!(
                    "%{id} ({}) reads the result of assign %{i}",
                    n.op.name()
                ));
            }
        }
        let tys: Vec<&TensorType> = n.inputs.iter().map(|&i| &g.nodes[i].ty).collect();
        let ty = crate::ops::infer(&n.op, &tys)
            .map_err(|e| Error::InvalidGraph(format!("%{id}: {e}")))?;
        if ty != n.ty {
            return bad(format!(
                "%{id} ({}) is typed {} but its shape rule gives {}",
                n.op.name(),
                n.ty.describe(),
                ty.describe()
            ));
        }
        match &n.op {
            Op::Input { name, .. } => {
                let previous = inputs.insert(name, &n.ty);
                if previous.is_some() {
                    return bad(format!("input \"{name}\" is declared twice"));
                }
            }
            Op::State { name, .. } => match states.insert(name, &n.ty) {
                Some(t) if t != &n.ty => {
                    return bad(format!(
                        "state \"{name}\" is read as {} and as {}",
                        t.describe(),
                        n.ty.describe()
                    ))
                }
                _ => {}
            },
            Op::Assign { name } => {
                if let Some(prev) = assigned.insert(name, id) {
                    return bad(format!(
                        "state \"{name}\" is assigned twice (%{prev} and %{id})"
                    ));
                }
            }
            _ => {}
        }
    }
    for (name, &id) in &assigned {
        if let Some(t) = states.get(name) {
            if *t != &g.nodes[id].ty {
                return bad(format!(
                    "assign %{id} writes {} into state \"{name}\" of type {}",
                    g.nodes[id].ty.describe(),
                    t.describe()
                ));
            }
        }
    }
    for &o in &g.outputs {
        if o >= g.nodes.len() {
            return bad(format!("output %{o} does not exist"));
        }
    }
    Ok(())
}
