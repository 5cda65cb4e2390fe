//! Elementwise fusion grouping: partitions the elementwise nodes into groups that a backend runs
//! as one kernel (one loop on the CPU, one generated kernel on CUDA).
//!
//! Walking backwards, an elementwise node joins the group of its users when every user is in that
//! one group (or is an Assign, a sink). So only a group's last node (its root) can have users
//! outside the group that are not sinks, and grouping never creates a cycle between kernels.
//! Members whose value is needed outside the group (by an Assign or as a graph output) are extra
//! outputs: Adam's `m'`, `v'` and `p'` come out of one kernel.

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
    let mut group_of: Vec<Option<usize>> = vec![None; g.nodes.len()];
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    for id in (0..g.nodes.len()).rev() {
        if !g.nodes[id].op.kind().is_elementwise() {
            continue;
        }
        let mut target: Option<usize> = None;
        let mut joinable = true;
        for &u in &users[id] {
            if matches!(g.nodes[u].op, Op::Assign { .. }) {
                continue;
            }
            match (group_of[u], target) {
                (Some(gu), None) => target = Some(gu),
                (Some(gu), Some(t)) if gu == t => {}
                _ => joinable = false,
            }
        }
        let gid = match (joinable, target) {
            (true, Some(t)) => t,
            _ => {
                groups.push(Vec::new());
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
