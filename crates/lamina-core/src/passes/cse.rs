//! Common-subexpression elimination: one node per (op, operands) for pure ops.

use crate::error::Result;
use crate::graph::Graph;
use std::collections::HashMap;

pub fn cse(g: &Graph) -> Result<Graph> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    super::rebuild(g, |out, id, ins| {
        let op = &g.nodes[id].op;
        if !op.is_pure() {
            return out.push(op.clone(), ins).map(Some);
        }
        // The Debug form is exact (f64 Debug round-trips), so equal keys mean equal nodes.
        let key = format!("{op:?}|{ins:?}");
        if let Some(&n) = seen.get(&key) {
            return Ok(Some(n));
        }
        let n = out.push(op.clone(), ins)?;
        seen.insert(key, n);
        Ok(Some(n))
    })
}
