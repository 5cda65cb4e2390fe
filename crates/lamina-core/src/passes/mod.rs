//! Graph-to-graph passes. Each takes a graph and returns a new one with the same outputs and
//! effects; `optimize` runs them in order and, when asked, verifies after each.

mod cse;
mod dce;
mod fold;
mod fusion;
mod verify;

pub use cse::cse;
pub use dce::dce;
pub use fold::{fold_constants, simplify};
pub use fusion::{fusion_groups, FusionGroup};
pub use verify::verify;

use crate::error::Result;
use crate::graph::Graph;

/// Constant folding, algebraic simplification, CSE and DCE, to a fixed point (at most 4 rounds).
/// With `check`, the verifier runs after every pass (tests always set it).
pub fn optimize(g: &Graph, check: bool) -> Result<Graph> {
    let mut g = g.clone();
    if check {
        verify(&g)?;
    }
    for _ in 0..4 {
        let before = g.nodes.len();
        for pass in [
            fold_constants as fn(&Graph) -> Result<Graph>,
            simplify,
            cse,
            dce,
        ] {
            g = pass(&g)?;
            if check {
                verify(&g)?;
            }
        }
        if g.nodes.len() == before {
            break;
        }
    }
    Ok(g)
}

/// Rebuilds a graph node by node: `rewrite` returns the new id of each old node (pushing new nodes
/// or forwarding to an existing one). Outputs are remapped.
pub(crate) fn rebuild(
    g: &Graph,
    mut rewrite: impl FnMut(&mut Graph, usize, &[usize]) -> Result<Option<usize>>,
) -> Result<Graph> {
    let mut out = Graph::new();
    let mut map: Vec<usize> = vec![usize::MAX; g.nodes.len()];
    for id in 0..g.nodes.len() {
        let ins: Vec<usize> = g.nodes[id].inputs.iter().map(|&i| map[i]).collect();
        if ins.contains(&usize::MAX) {
            continue; // an operand was dropped, so is this node (only DCE drops nodes)
        }
        if let Some(n) = rewrite(&mut out, id, &ins)? {
            map[id] = n;
        }
    }
    out.outputs = g.outputs.iter().map(|&o| map[o]).collect();
    Ok(out)
}
