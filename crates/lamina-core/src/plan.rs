//! `Plan`: what a backend compiles. The execution order of kernels (fusion groups and single
//! primitives) and a memory plan: every stored intermediate gets an offset in one arena, reused
//! once its last reader has run (liveness intervals, largest first into the lowest free offset).
//!
//! Persistent state never lives in the arena: `State` reads the buffer, `Assign` writes it after
//! every reader of that buffer (the planner orders it so), so one step can read `w` and write `w'`.

use crate::dtype::numel;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, TensorType};
use crate::op::Op;
use crate::passes::{fusion_groups, optimize, verify};
use std::fmt::Write;

/// Arena offsets are aligned to this many bytes (one cache line, enough for any SIMD load).
pub const ALIGN: usize = 64;

/// Where a node's value lives while a plan runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The k-th fed input.
    Input(usize),
    /// A persistent buffer (also the result of an Assign to it).
    State(String),
    /// A constant of the graph; backends materialise it once, at compile time.
    Const,
    /// Bytes `offset..offset+bytes` of the arena.
    Arena { offset: usize, bytes: usize },
    /// The same memory as another node's value (a reshape); never points to another view.
    View(NodeId),
    /// Computed inside a fused step and never stored (also an expand read with broadcast strides).
    Inline,
}

/// One kernel of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Elementwise nodes (and the expands they read through) computed in one pass; `outputs` are
    /// stored.
    Fused {
        nodes: Vec<NodeId>,
        outputs: Vec<NodeId>,
    },
    /// One other primitive (an Assign copies its operand into the state buffer).
    Node(NodeId),
}

/// A graph ordered into kernels with a memory plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub graph: Graph,
    pub steps: Vec<Step>,
    pub storage: Vec<Storage>,
    /// Peak arena size in bytes.
    pub arena_bytes: usize,
    /// Sum of the sizes of all arena values: what the arena would take without reuse.
    pub value_bytes: usize,
    /// Input nodes in feed order.
    pub inputs: Vec<NodeId>,
    /// Persistent buffers read or written, sorted by name.
    pub states: Vec<(String, TensorType)>,
}

/// External operands of a step (operands of its members that it does not compute), resolved
/// through views to the node that owns the memory.
fn step_operands(graph: &Graph, storage: &[Storage], step: &Step) -> Vec<NodeId> {
    let members: &[NodeId] = match step {
        Step::Fused { nodes, .. } => nodes,
        Step::Node(id) => std::slice::from_ref(id),
    };
    let mut v = Vec::new();
    for &m in members {
        for &i in &graph.nodes[m].inputs {
            if !members.contains(&i) {
                v.push(match &storage[i] {
                    Storage::View(r) => *r,
                    _ => i,
                });
            }
        }
    }
    v
}

/// In-place Assigns: a value computed only to be assigned is written by its own step straight into
/// the state buffer, and the Assign's copy disappears — when no step after the producer reads the
/// buffer's old value, and inside a fused producer every member that reads the old value comes
/// before the value (elementwise, same index: a chunk is read before it is overwritten). This is
/// what turns an optimizer update into one pass over each parameter.
fn place_assigns_in_state(graph: &Graph, steps: &mut Vec<Step>, storage: &mut [Storage]) {
    let n = graph.nodes.len();
    let root = |storage: &[Storage], id: NodeId| match &storage[id] {
        Storage::View(r) => *r,
        _ => id,
    };
    let mut computed_at = vec![usize::MAX; n];
    for (t, s) in steps.iter().enumerate() {
        match s {
            Step::Fused { nodes, .. } => nodes.iter().for_each(|&m| computed_at[m] = t),
            Step::Node(id) => computed_at[*id] = t,
        }
    }
    let mut remove = vec![false; steps.len()];
    for ta in 0..steps.len() {
        let Step::Node(a) = steps[ta] else { continue };
        let Op::Assign { name } = &graph.nodes[a].op else {
            continue;
        };
        let v = graph.nodes[a].inputs[0];
        let p = computed_at[v];
        if !matches!(storage[v], Storage::Arena { .. })
            || graph.outputs.contains(&v)
            || p == usize::MAX
        {
            continue;
        }
        let reads_state = |storage: &[Storage], id: NodeId| matches!(&graph.nodes[root(storage, id)].op, Op::State { name: s, .. } if s == name);
        if graph.outputs.iter().any(|&o| reads_state(storage, o)) {
            continue; // outputs must see the value from the start of the run
        }
        let mut ok = true;
        for (t, step) in steps.iter().enumerate() {
            if t == ta {
                continue;
            }
            let members: &[NodeId] = match step {
                Step::Fused { nodes, .. } => nodes,
                Step::Node(id) => std::slice::from_ref(id),
            };
            let pos_v = members.iter().position(|&m| m == v);
            for (i, &m) in members.iter().enumerate() {
                let reads = graph.nodes[m]
                    .inputs
                    .iter()
                    .any(|&x| !members.contains(&x) && reads_state(storage, x));
                if !reads || t < p {
                    continue;
                }
                let elementwise = graph.nodes[m].op.kind().is_elementwise();
                if t > p
                    || !matches!(step, Step::Fused { .. })
                    || !elementwise
                    || pos_v.is_none_or(|pv| i > pv)
                {
                    ok = false;
                }
            }
        }
        if ok {
            storage[v] = Storage::State(name.clone());
            remove[ta] = true;
        }
    }
    let mut t = 0;
    steps.retain(|_| {
        t += 1;
        !remove[t - 1]
    });
}

fn bytes_of(ty: &TensorType) -> usize {
    numel(&ty.shape) * ty.dtype.size_bytes()
}

impl Plan {
    /// Optimises (fold, simplify, CSE, DCE) and plans a graph.
    pub fn compile(g: &Graph) -> Result<Plan> {
        Plan::new(optimize(g, false)?)
    }

    /// Plans a graph as it is.
    pub fn new(graph: Graph) -> Result<Plan> {
        Plan::with_fusion(graph, true)
    }

    /// Plans a graph as it is; with `fuse` false every elementwise node is its own kernel (for
    /// measuring what fusion buys).
    pub fn with_fusion(graph: Graph, fuse: bool) -> Result<Plan> {
        verify(&graph)?;
        let n = graph.nodes.len();
        let users = graph.users();
        let groups = if fuse {
            fusion_groups(&graph)
        } else {
            (0..n)
                .filter(|&i| graph.nodes[i].op.kind().is_elementwise())
                .map(|i| crate::passes::FusionGroup {
                    nodes: vec![i],
                    outputs: vec![i],
                })
                .collect()
        };
        let mut group_of = vec![usize::MAX; n];
        for (gi, grp) in groups.iter().enumerate() {
            for &m in &grp.nodes {
                group_of[m] = gi;
            }
        }
        // Expands read only by fused groups are absorbed into each of them as broadcast loads
        // (CSE merges the expands of a shared scalar, such as an optimizer's bias correction,
        // into one that several updates read: materialising it would cost a full-size write and
        // a read per update).
        let mut absorbed = vec![false; n];
        for (id, node) in graph.nodes.iter().enumerate() {
            if matches!(node.op, Op::Expand { .. })
                && !users[id].is_empty()
                && !graph.outputs.contains(&id)
            {
                absorbed[id] = users[id].iter().all(|&u| group_of[u] != usize::MAX);
            }
        }
        let mut storage = vec![Storage::Inline; n];
        let inputs = graph.inputs();
        let mut steps_keyed: Vec<((usize, u8), Step)> = Vec::new();
        for (id, node) in graph.nodes.iter().enumerate() {
            storage[id] = match &node.op {
                Op::Input { .. } => {
                    Storage::Input(inputs.iter().position(|&i| i == id).unwrap_or(0))
                }
                Op::State { name, .. } | Op::Assign { name } => Storage::State(name.clone()),
                Op::Const { .. } => Storage::Const,
                Op::Reshape { .. } => {
                    let src = node.inputs[0];
                    Storage::View(match &storage[src] {
                        Storage::View(r) => *r,
                        _ => src,
                    })
                }
                _ if absorbed[id] => Storage::Inline,
                _ if group_of[id] != usize::MAX => {
                    if groups[group_of[id]].outputs.contains(&id) {
                        Storage::Arena {
                            offset: 0,
                            bytes: bytes_of(&node.ty),
                        }
                    } else {
                        Storage::Inline
                    }
                }
                _ => Storage::Arena {
                    offset: 0,
                    bytes: bytes_of(&node.ty),
                },
            };
        }
        let root = |s: &[Storage], id: NodeId| match &s[id] {
            Storage::View(r) => *r,
            _ => id,
        };
        for (gi, grp) in groups.iter().enumerate() {
            let mut nodes = Vec::new();
            for &m in &grp.nodes {
                for &i in &graph.nodes[m].inputs {
                    if absorbed[i] && group_of[m] == gi && !nodes.contains(&i) {
                        nodes.push(i);
                    }
                }
                nodes.push(m);
            }
            steps_keyed.push((
                (grp.root(), 0),
                Step::Fused {
                    nodes,
                    outputs: grp.outputs.clone(),
                },
            ));
        }
        for (id, node) in graph.nodes.iter().enumerate() {
            let needs_step = !matches!(
                node.op,
                Op::Input { .. } | Op::State { .. } | Op::Const { .. } | Op::Reshape { .. }
            ) && group_of[id] == usize::MAX
                && !absorbed[id];
            if needs_step && !matches!(node.op, Op::Assign { .. }) {
                steps_keyed.push(((id, 0), Step::Node(id)));
            }
        }
        let operands = |step: &Step| step_operands(&graph, &storage, step);
        let mut anchor_of = vec![0usize; n];
        for ((a, _), s) in &steps_keyed {
            match s {
                Step::Fused { nodes, .. } => nodes.iter().for_each(|&m| anchor_of[m] = *a),
                Step::Node(id) => anchor_of[*id] = *a,
            }
        }
        // Each Assign runs after its value exists and after every reader of its state.
        for (id, node) in graph.nodes.iter().enumerate() {
            if let Op::Assign { name } = &node.op {
                let v = root(&storage, node.inputs[0]);
                let mut pos = id.max(anchor_of[v]);
                for ((a, _), s) in &steps_keyed {
                    if operands(s).iter().any(
                        |&o| matches!(&graph.nodes[o].op, Op::State { name: s, .. } if s == name),
                    ) {
                        pos = pos.max(*a);
                    }
                }
                steps_keyed.push(((pos, 1), Step::Node(id)));
            }
        }
        steps_keyed.sort_by_key(|(k, _)| *k);
        let mut steps: Vec<Step> = steps_keyed.into_iter().map(|(_, s)| s).collect();
        place_assigns_in_state(&graph, &mut steps, &mut storage);
        let operands = |step: &Step| step_operands(&graph, &storage, step);

        // Liveness of arena values in step indices.
        let mut def = vec![usize::MAX; n];
        let mut last = vec![0usize; n];
        for (t, s) in steps.iter().enumerate() {
            match s {
                Step::Fused { outputs, .. } => outputs.iter().for_each(|&o| def[o] = t),
                Step::Node(id) => def[*id] = t,
            }
            for o in operands(s) {
                last[o] = last[o].max(t);
            }
        }
        for &o in &graph.outputs {
            last[root(&storage, o)] = steps.len();
        }
        // A stored transpose read only by MatMuls is read through a GEMM flag by the backends
        // when its operand is still intact at those MatMuls (`matmuls_read_through`): keep the
        // operand alive until then, so that a MatMul's output is not placed over it.
        for (id, node) in graph.nodes.iter().enumerate() {
            if node.op.swaps_last_two_axes()
                && matches!(storage[id], Storage::Arena { .. })
                && !graph.outputs.contains(&id)
                && !users[id].is_empty()
                && users[id]
                    .iter()
                    .all(|&u| matches!(graph.nodes[u].op, Op::MatMul))
            {
                let src = root(&storage, node.inputs[0]);
                for &u in &users[id] {
                    if def[u] != usize::MAX {
                        last[src] = last[src].max(def[u]);
                    }
                }
            }
        }
        // A convolution whose value only one fused group a few steps later reads may run that
        // group as its epilogue (a ReLU's gradient applied while each image's block is in
        // cache): keep the convolution's operands alive until the group, so that the group's
        // result is not placed over them.
        for (t, s) in steps.iter().enumerate() {
            let Step::Node(p) = *s else { continue };
            if !matches!(graph.nodes[p].op, Op::Conv(_)) || graph.outputs.contains(&p) {
                continue;
            }
            let group = (t + 1..(t + 4).min(steps.len())).find(|&t2| {
                matches!(&steps[t2], Step::Fused { nodes, .. }
                    if !users[p].is_empty() && users[p].iter().all(|u| nodes.contains(u)))
            });
            if let Some(t2) = group {
                for o in operands(s) {
                    last[o] = last[o].max(t2);
                }
            }
        }
        let mut values: Vec<NodeId> = (0..n)
            .filter(|&i| matches!(storage[i], Storage::Arena { .. }))
            .collect();
        values.sort_by_key(|&i| (std::cmp::Reverse(bytes_of(&graph.nodes[i].ty)), i));
        let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, end, def, last)
        let mut arena_bytes = 0;
        let mut value_bytes = 0;
        for &v in &values {
            let bytes = bytes_of(&graph.nodes[v].ty);
            let size = bytes.div_ceil(ALIGN) * ALIGN;
            value_bytes += size;
            let (d, l) = (def[v], last[v].max(def[v]));
            if d == usize::MAX {
                return Err(Error::InvalidGraph(format!(
                    "planner: %{v} is stored but no step computes it"
                )));
            }
            let mut live: Vec<(usize, usize)> = placed
                .iter()
                .filter(|p| p.2 <= l && d <= p.3)
                .map(|p| (p.0, p.1))
                .collect();
            live.sort_unstable();
            let mut offset = 0;
            for (o, e) in live {
                if o >= offset + size {
                    break;
                }
                offset = offset.max(e);
            }
            placed.push((offset, offset + size, d, l));
            arena_bytes = arena_bytes.max(offset + size);
            storage[v] = Storage::Arena { offset, bytes };
        }
        Ok(Plan {
            states: graph.states(),
            graph,
            steps,
            storage,
            arena_bytes,
            value_bytes,
            inputs,
        })
    }

    /// The node whose memory holds `id`'s value (itself unless it is a view).
    pub fn root(&self, id: NodeId) -> NodeId {
        match &self.storage[id] {
            Storage::View(r) => *r,
            _ => id,
        }
    }

    /// The step that computes each node (`None` for sources, views and inlined values).
    pub fn step_of_nodes(&self) -> Vec<Option<usize>> {
        let n = self.graph.nodes.len();
        let mut s = vec![None; n];
        for (t, step) in self.steps.iter().enumerate() {
            let members: &[NodeId] = match step {
                Step::Fused { nodes, .. } => nodes,
                Step::Node(id) => std::slice::from_ref(id),
            };
            for &m in members.iter().filter(|&&m| m < n) {
                s[m] = Some(t);
            }
        }
        s
    }

    /// True when the memory holding `q`'s value is not overwritten by steps `t0+1 ..= t1`, so a
    /// step `t1` may still read `q` there.
    pub fn untouched(&self, q: NodeId, t0: usize, t1: usize) -> bool {
        let q = self.root(q);
        let writes = |t: usize| -> &[NodeId] {
            match &self.steps[t] {
                Step::Fused { outputs, .. } => outputs,
                Step::Node(id) => std::slice::from_ref(id),
            }
        };
        match &self.storage[q] {
            Storage::Input(_) | Storage::Const => true,
            Storage::Arena { offset, bytes } => (t0 + 1..=t1).all(|t| {
                writes(t).iter().all(|&v| match self.storage.get(v) {
                    Some(Storage::Arena {
                        offset: o,
                        bytes: b,
                    }) => o + b <= *offset || offset + bytes <= *o,
                    _ => true,
                })
            }),
            Storage::State(name) => (t0 + 1..=t1).all(|t| {
                writes(t)
                    .iter()
                    .all(|&v| !matches!(self.storage.get(v), Some(Storage::State(s)) if s == name))
            }),
            Storage::View(_) | Storage::Inline => false,
        }
    }

    /// True when the stored single-node step `id` (a transpose or broadcast of its operand) need
    /// not run because every user is a later MatMul that can read the operand itself, still
    /// intact at that point, with a stride or transpose flag. `step_of` is
    /// [`Plan::step_of_nodes`], `users` is [`Graph::users`].
    pub fn matmuls_read_through(
        &self,
        id: NodeId,
        step_of: &[Option<usize>],
        users: &[Vec<NodeId>],
    ) -> bool {
        let g = &self.graph;
        let Some(t0) = step_of[id] else { return false };
        let stored = matches!(self.storage[id], Storage::Arena { .. })
            && matches!(self.steps[t0], Step::Node(_));
        if !stored || g.outputs.contains(&id) || users[id].is_empty() {
            return false;
        }
        users[id].iter().all(|&u| {
            matches!(g.nodes[u].op, Op::MatMul)
                && matches!(step_of[u], Some(t1) if t1 > t0 && self.untouched(g.nodes[id].inputs[0], t0, t1))
        })
    }

    /// Number of kernels per run.
    pub fn kernel_count(&self) -> usize {
        self.steps.len()
    }

    /// Checks fed inputs against the plan: count, shape and dtype of each.
    pub fn check_inputs(&self, inputs: &[&crate::HostTensor]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Input(format!(
                "expected {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for (k, (&id, t)) in self.inputs.iter().zip(inputs).enumerate() {
            let ty = &self.graph.nodes[id].ty;
            if t.shape() != ty.shape.as_slice() || t.dtype() != ty.dtype {
                let name = match &self.graph.nodes[id].op {
                    Op::Input { name, .. } => name.as_str(),
                    _ => "?",
                };
                return Err(Error::Input(format!(
                    "input {k} \"{name}\": expected {}, got {}{}",
                    ty.describe(),
                    t.dtype(),
                    crate::dtype::fmt_shape(t.shape())
                )));
            }
        }
        Ok(())
    }

    /// One line per step with where its results live, then the arena size.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let loc = |id: NodeId| match &self.storage[id] {
            Storage::Arena { offset, bytes } => format!("%{id}@{offset}+{bytes}"),
            Storage::State(n) => format!("%{id}→\"{n}\""),
            _ => format!("%{id}"),
        };
        for (t, step) in self.steps.iter().enumerate() {
            match step {
                Step::Fused { nodes, outputs } => {
                    let names: Vec<&str> = nodes
                        .iter()
                        .map(|&m| self.graph.nodes[m].op.name())
                        .collect();
                    let outs: Vec<String> = outputs.iter().map(|&o| loc(o)).collect();
                    let _ = writeln!(s, "{t}: fused({}) -> {}", names.join(" "), outs.join(" "));
                }
                Step::Node(id) => {
                    let ins: Vec<String> = self.graph.nodes[*id]
                        .inputs
                        .iter()
                        .map(|i| format!("%{i}"))
                        .collect();
                    let _ = writeln!(
                        s,
                        "{t}: {} {} -> {}",
                        crate::print::op_text(&self.graph.nodes[*id].op),
                        ins.join(" "),
                        loc(*id)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "arena {} bytes (values {} bytes)",
            self.arena_bytes, self.value_bytes
        );
        s
    }
}
