//! Elementwise fusion grouping: partitions the elementwise nodes into groups that a backend runs
//! as one kernel (one loop on the CPU, one generated kernel on CUDA).
//!
//! Walking backwards, an elementwise node joins the group of its users that runs first (a group
//! runs where its last node, its root, stands) when every other user (Assigns, sinks, aside) runs
//! after that group. Its value is then an extra stored output that later kernels read: a layer's
//! pre-activation and sigmoid, read by the forward group and by the backward pass, come out of the
//! one kernel that computes the activation. Since every reader of a group's value runs after the
//! group, ordering the steps by their roots stays a valid order: grouping never creates a cycle
//! between kernels. Members needed by an Assign or as a graph output are extra outputs too: Adam's
//! `m'`, `v'` and `p'` come out of one kernel.

use crate::graph::{Graph, NodeId};
use crate::op::Op;

/// One fusion group: its members in topological order and the members it must store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionGroup {
    pub nodes: Vec<NodeId>,
    pub outputs: Vec<NodeId>,
}

impl FusionGroup {
    /// The last member: the group runs where this node stood.
    pub fn root(&self) -> NodeId {
        *self.nodes.last().expect("fusion groups are never empty")
    }
}

/// Groups every elementwise node (a node alone forms a group of one).
pub fn fusion_groups(g: &Graph) -> Vec<FusionGroup> {
    let users = g.users();
    let n = g.nodes.len();
    let mut group_of: Vec<Option<usize>> = vec![None; n];
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    // The root of each group: the node where its kernel is placed (`Plan` orders steps by it).
    let mut roots: Vec<NodeId> = Vec::new();
    // Where a node's step is placed: its group's root, or the node itself.
    let key = |group_of: &[Option<usize>], roots: &[NodeId], u: NodeId| {
        group_of[u].map_or(u, |gu| roots[gu])
    };
    for id in (0..n).rev() {
        if !g.nodes[id].op.kind().is_elementwise() {
            continue;
        }
        // The candidate is the user group placed first; every other user must be placed after it.
        let placed: Vec<NodeId> = users[id]
            .iter()
            .copied()
            .filter(|&u| !matches!(g.nodes[u].op, Op::Assign { .. }))
            .collect();
        let target = placed
            .iter()
            .filter_map(|&u| group_of[u])
            .min_by_key(|&gu| roots[gu]);
        let gid = match target {
            Some(t)
                if placed
                    .iter()
                    .all(|&u| group_of[u] == Some(t) || key(&group_of, &roots, u) > roots[t]) =>
            {
                t
            }
            _ => {
                groups.push(Vec::new());
                roots.push(id);
                groups.len() - 1
            }
        };
        group_of[id] = Some(gid);
        groups[gid].push(id);
    }
    let is_output: Vec<bool> = {
        let mut v = vec![false; g.nodes.len()];
        for &o in &g.outputs {
            v[o] = true;
        }
        v
    };
    let mut out: Vec<FusionGroup> = groups
        .into_iter()
        .enumerate()
        .map(|(gid, mut nodes)| {
            nodes.reverse();
            let outputs = nodes
                .iter()
                .copied()
                .filter(|&n| is_output[n] || users[n].iter().any(|&u| group_of[u] != Some(gid)))
                .collect();
            FusionGroup { nodes, outputs }
        })
        .collect();
    out.sort_by_key(|g| g.root());
    out
}
