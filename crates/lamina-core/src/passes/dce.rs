//! Dead-code elimination: keeps what the outputs and the effects (Assign) need.

use crate::error::Result;
use crate::graph::Graph;

pub fn dce(g: &Graph) -> Result<Graph> {
    let mut live = vec![false; g.nodes.len()];
    for &o in &g.outputs {
        live[o] = true;
    }
    for (id, n) in g.nodes.iter().enumerate() {
        if n.op.has_effect() {
            live[id] = true;
        }
    }
    for id in (0..g.nodes.len()).rev() {
        if live[id] {
            for &i in &g.nodes[id].inputs {
                live[i] = true;
            }
        }
    }
    super::rebuild(g, |out, id, ins| {
        if live[id] {
            out.push(g.nodes[id].op.clone(), ins).map(Some)
        } else {
            Ok(None)
        }
    })
}
