//! `CpuExecutable`: a plan compiled into kernel descriptions with its memory allocated, and the
//! loop that runs them.
//!
//! Compilation resolves where every operand lives (a slot per node root: arena, constant, fed
//! input, state buffer, or a snapshot of a state buffer), materialises constants, and turns every
//! step into a [`Kernel`] with its shapes and strides precomputed, so a run only binds the fed
//! inputs and state buffers to their slots and calls the kernels in order.

use crate::arena::{Block, Ptr, Slots};
use crate::buffer::{host_data_ptr, host_from_raw, host_ptr, zeroed_host, CpuBuffer};
use crate::conv::Conv;
use crate::elem::{backend_err, with_elem, Dt, Elem};
use crate::ew::Ew;
use crate::fused::{self, Arg, Fused, Source};
use crate::kernels::{self, ArgMax, Gather, Iota, Pad, RandomBits, Reduce, ReduceKind, ScatterAdd};
use crate::layout::{broadcast_strides, Strided};
use crate::matmul::{MatMul, MatOperand};
use lamina_core::ops::linalg::conv_geometry;
use lamina_core::{
    check_state, numel, strides, HostTensor, Literal, NodeId, Op, Plan, Result, StateMap, Step,
    Storage,
};
use std::collections::HashMap;

/// One step of a compiled plan.
#[derive(Clone, Debug)]
enum Kernel {
    /// Nothing to compute (a source, a view, a group with no stored result, or a transpose that
    /// its MatMul users read in place).
    Nop,
    Fused(Fused),
    Iota(Iota),
    RandomBits(RandomBits),
    Reduce(Reduce),
    ArgMax(ArgMax),
    Copy(kernels::StridedCopy),
    Pad(Pad),
    MatMul(MatMul),
    Conv(Conv),
    Gather(Gather),
    ScatterAdd(ScatterAdd),
    /// Copies `bytes` from slot `src` into the state buffer bound to slot `dst`.
    Assign {
        src: usize,
        dst: usize,
        bytes: usize,
    },
}

impl Kernel {
    /// # Safety
    /// The slots must be bound as compiled: every operand's slot holds its value and every result's
    /// slot is writable memory that no operand of the same step overlaps.
    unsafe fn run(&self, slots: &Slots, threads: usize) {
        // SAFETY: guaranteed by the caller; each kernel's slots and sizes were derived from the plan.
        unsafe {
            match self {
                Kernel::Nop => {}
                Kernel::Fused(k) => k.run(slots, threads),
                Kernel::Iota(k) => k.run(slots),
                Kernel::RandomBits(k) => k.run(slots),
                Kernel::Reduce(k) => k.run(slots, threads),
                Kernel::ArgMax(k) => k.run(slots),
                Kernel::Copy(k) => k.run(slots, threads),
                Kernel::Pad(k) => k.run(slots),
                Kernel::MatMul(k) => k.run(slots, threads),
                Kernel::Conv(k) => k.run(slots, threads),
                Kernel::Gather(k) => k.run(slots, threads),
                Kernel::ScatterAdd(k) => k.run(slots),
                // `copy`, not `copy_nonoverlapping`: assigning a state its own value is allowed.
                Kernel::Assign { src, dst, bytes } => {
                    std::ptr::copy(slots.ptr(*src).0, slots.ptr(*dst).0, *bytes)
                }
            }
        }
    }
}

/// A state buffer's contents saved before an Assign overwrites it, for readers that come later
/// but must see the value the run started with.
#[derive(Clone, Debug)]
struct Snapshot {
    from: usize,
    to: usize,
    bytes: usize,
}

/// Where a graph output comes from.
#[derive(Clone, Debug)]
struct OutputRead {
    slot: usize,
    dt: Dt,
    shape: Vec<usize>,
    /// The value is computed straight into a fresh host vector that becomes the output (its slot
    /// is pointed there for the run), so no copy is made; otherwise it is copied out at the end.
    direct: bool,
}

/// A plan compiled for the CPU: memory allocated, constants materialised, kernels chosen.
pub struct CpuExecutable {
    plan: Plan,
    // The blocks own the memory the slots point into; they are never resized.
    _arena: Block,
    _consts: Vec<Block>,
    _snapshots: Vec<Block>,
    slots: Slots,
    /// The slot pointers as compiled (direct outputs are pointed elsewhere during a run).
    arena_ptrs: Vec<Ptr>,
    bind_inputs: Vec<(usize, usize)>,
    bind_states: Vec<(usize, String)>,
    steps: Vec<Kernel>,
    /// Snapshots to take before each step.
    pre: Vec<Vec<Snapshot>>,
    outputs: Vec<OutputRead>,
    /// Per-step labels and accumulated times, printed when the executable is dropped.
    #[cfg(feature = "profile")]
    profile: crate::profile::Profile,
}

impl std::fmt::Debug for CpuExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuExecutable")
            .field("steps", &self.steps.len())
            .field("arena_bytes", &self.plan.arena_bytes)
            .finish()
    }
}

impl CpuExecutable {
    /// The plan this executable runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Number of steps that do work (views, sources and transposes read in place cost nothing).
    pub fn kernel_count(&self) -> usize {
        self.steps
            .iter()
            .filter(|k| !matches!(k, Kernel::Nop))
            .count()
    }

    /// Compiles `plan`: checks it, allocates the arena, materialises constants, builds kernels
    /// (`winograd`: see `CpuBackend::with_winograd`).
    pub(crate) fn compile(plan: &Plan, winograd: bool) -> Result<CpuExecutable> {
        lamina_core::passes::verify(&plan.graph)?;
        let mut b = Builder::new(plan)?;
        b.winograd = winograd;
        let through = b.read_through();
        let mut steps = Vec::with_capacity(plan.steps.len());
        // a step whose work an earlier kernel took over (a bias add done by its convolution)
        let mut absorbed = vec![false; plan.steps.len()];
        // kernel-gradient convolution steps that also write a bias gradient: the sum's slot
        let mut bias_grads: HashMap<usize, usize> = HashMap::new();
        for (t, step) in plan.steps.iter().enumerate() {
            if absorbed[t] {
                steps.push(Kernel::Nop);
                continue;
            }
            if let Step::Node(id) = step {
                if let Some(t2) = b.bias_grad_target(*id, t) {
                    bias_grads.insert(t2, b.write(*id)?);
                    steps.push(Kernel::Nop);
                    continue;
                }
            }
            let k = match step {
                Step::Fused { nodes, outputs } => b.fused(nodes, outputs)?,
                Step::Node(id) => match b.node(*id, t, &through)? {
                    Kernel::Conv(mut conv) if bias_grads.contains_key(&t) => {
                        conv.bias_grad = bias_grads.remove(&t);
                        Kernel::Conv(conv)
                    }
                    Kernel::Conv(conv) => {
                        let (mut conv, value, masked) =
                            b.with_epilogues(conv, *id, t, &mut absorbed)?;
                        if conv.is_per_image_input_grad() {
                            if let Some(((t3, kg), bias)) =
                                b.kernel_grad_reader(*id, value, t, masked)
                            {
                                if let Kernel::Conv(mut kg_conv) = b.node(kg, t3, &through)? {
                                    if kg_conv.is_per_image_kernel_grad() {
                                        if let Some((tr, r)) = bias {
                                            kg_conv.bias_grad = Some(b.write(r)?);
                                            absorbed[tr] = true;
                                        }
                                        conv.then = Some(Box::new(kg_conv));
                                        absorbed[t3] = true;
                                    }
                                }
                            }
                            if let Some(((t2, kg), bias)) =
                                b.kernel_grad_beside(*id, &conv, t, &absorbed)
                            {
                                if let Kernel::Conv(mut kg_conv) = b.node(kg, t2, &through)? {
                                    if kg_conv.is_beside_kernel_grad() {
                                        // its bias-gradient sum: still to come, or already
                                        // handed over (`bias_grads`)
                                        kg_conv.bias_grad = match bias {
                                            Some((tr, r)) if tr > t => {
                                                absorbed[tr] = true;
                                                Some(b.write(r)?)
                                            }
                                            _ => bias_grads.remove(&t2),
                                        };
                                        conv.beside = Some(Box::new(kg_conv));
                                        absorbed[t2] = true;
                                    }
                                }
                            }
                        }
                        if conv.is_per_image_forward() {
                            if let Some((t2, next)) = b.forward_reader(&conv, t, &absorbed) {
                                if let Kernel::Conv(next_conv) = b.node(next, t2, &through)? {
                                    let mut taken = absorbed.clone();
                                    let (next_conv, _, _) =
                                        b.with_epilogues(next_conv, next, t2, &mut taken)?;
                                    if next_conv.is_per_image_forward()
                                        && b.forward_results_free(&conv, &next_conv, t, t2, &taken)
                                    {
                                        taken[t2] = true;
                                        absorbed = taken;
                                        conv.next = Some(Box::new(next_conv));
                                    }
                                }
                            }
                        }
                        Kernel::Conv(conv)
                    }
                    k => k,
                },
            };
            steps.push(k);
        }
        let mut outputs: Vec<OutputRead> = Vec::with_capacity(plan.graph.outputs.len());
        for &o in &plan.graph.outputs {
            check_id(plan, o)?;
            let ty = &plan.graph.nodes[o].ty;
            let slot = b.read(o)?;
            // Arena values are written by exactly one step, which can write the output directly.
            let direct = slot == o
                && matches!(plan.storage[o], Storage::Arena { .. })
                && b.dts[o] != Dt::Bool
                && !outputs.iter().any(|p| p.direct && p.slot == slot);
            outputs.push(OutputRead {
                slot,
                dt: b.dts[o],
                shape: ty.shape.clone(),
                direct,
            });
        }
        Ok(CpuExecutable {
            #[cfg(feature = "profile")]
            profile: crate::profile::Profile::new(plan),
            plan: plan.clone(),
            _arena: b.arena,
            _consts: b.consts,
            _snapshots: b.snapshots,
            arena_ptrs: b.ptrs.clone(),
            slots: Slots { ptrs: b.ptrs },
            bind_inputs: b.bind_inputs,
            bind_states: b.bind_states,
            steps,
            pre: b.pre,
            outputs,
        })
    }

    /// Runs the plan once (see `Backend::run`).
    pub(crate) fn execute(
        &mut self,
        state: &mut StateMap<CpuBuffer>,
        inputs: &[&HostTensor],
        threads: usize,
    ) -> Result<Vec<HostTensor>> {
        // Check everything before touching anything, so bad input leaves `state` unchanged.
        self.plan.check_inputs(inputs)?;
        check_state(&self.plan, state, CpuBuffer::ty)?;
        for &(slot, k) in &self.bind_inputs {
            // Fed inputs are only ever read.
            self.slots.ptrs[slot] = Ptr(host_ptr(inputs[k]) as *mut u8);
        }
        for (slot, name) in &self.bind_states {
            let buf = state
                .get_mut(name)
                .ok_or_else(|| backend_err(format!("state \"{name}\" is missing")))?;
            self.slots.ptrs[*slot] = Ptr(buf.as_mut_ptr());
        }
        let mut direct = Vec::new();
        for o in self.outputs.iter().filter(|o| o.direct) {
            if let Some(mut data) = zeroed_host(o.dt, numel(&o.shape)) {
                self.slots.ptrs[o.slot] = Ptr(host_data_ptr(&mut data));
                direct.push(data);
            }
        }
        for (step, (kernel, pre)) in self.steps.iter().zip(&self.pre).enumerate() {
            #[cfg(not(feature = "profile"))]
            let _ = step;
            for s in pre {
                // SAFETY: `from` is a bound state buffer and `to` a snapshot block, both `bytes` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.slots.ptr(s.from).0,
                        self.slots.ptr(s.to).0,
                        s.bytes,
                    )
                };
            }
            // SAFETY: every slot is bound: arena and constants at compile time, inputs and states
            // above (checked against the plan's types); the planner never places a step's result
            // over memory that one of its operands still occupies.
            #[cfg(feature = "profile")]
            let t0 = std::time::Instant::now();
            unsafe { kernel.run(&self.slots, threads) };
            #[cfg(feature = "profile")]
            self.profile.add(step, t0.elapsed());
        }
        let mut direct = direct.into_iter();
        let mut outs = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            let t = match if o.direct { direct.next() } else { None } {
                Some(data) => HostTensor::new(&o.shape, data)
                    .map_err(|e| backend_err(format!("building an output: {e}")))?,
                // SAFETY: each output slot holds a value of the output's type after the last step.
                None => unsafe { host_from_raw(self.slots.ptr(o.slot).0, o.dt, &o.shape)? },
            };
            outs.push(t);
        }
        // Point the slots back into the arena: the vectors now belong to the caller.
        for o in self.outputs.iter().filter(|o| o.direct) {
            self.slots.ptrs[o.slot] = self.arena_ptrs[o.slot];
        }
        Ok(outs)
    }
}

fn check_id(plan: &Plan, id: NodeId) -> Result<()> {
    if id < plan.graph.nodes.len() {
        Ok(())
    } else {
        Err(backend_err(format!(
            "plan refers to node %{id}, which does not exist"
        )))
    }
}

/// A MatMul operand read through the Permute or Expand that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Through {
    /// The operand of a Permute swapping the last two axes, read transposed.
    Transposed,
    /// The operand of an Expand growing batch axes only, read with batch stride 0.
    Broadcast,
}

/// A plan step and the node it computes.
type StepNode = (usize, NodeId);

/// A ReLU's gradient that an input-gradient convolution applies (see `Builder::mask_epilogue`).
struct MaskEpilogue {
    /// The ReLU's result, whose positive elements keep the gradient.
    mask: NodeId,
    /// The masked gradient, now written by the convolution.
    masked: NodeId,
    /// The fused group's step, which no longer runs.
    step: usize,
}

/// Compile-time state: memory, slot bindings and snapshots.
struct Builder<'p> {
    plan: &'p Plan,
    dts: Vec<Dt>,
    arena: Block,
    ptrs: Vec<Ptr>,
    consts: Vec<Block>,
    materialised: Vec<bool>,
    snapshots: Vec<Block>,
    /// Snapshot slot of each state that a reader needs after its Assign ran.
    snap_of: HashMap<String, usize>,
    /// Step index of the Assign of each state compiled so far.
    assigned: HashMap<String, usize>,
    pre: Vec<Vec<Snapshot>>,
    bind_inputs: Vec<(usize, usize)>,
    bind_states: Vec<(usize, String)>,
    /// Whether convolutions may run as Winograd F(4×4, 3×3).
    winograd: bool,
}

impl<'p> Builder<'p> {
    fn new(plan: &'p Plan) -> Result<Builder<'p>> {
        let g = &plan.graph;
        let n = g.nodes.len();
        if plan.storage.len() != n {
            return Err(backend_err(format!(
                "plan has {} storage entries for {n} nodes",
                plan.storage.len()
            )));
        }
        let dts = g
            .nodes
            .iter()
            .map(|nd| Dt::of(nd.ty.dtype))
            .collect::<Result<Vec<_>>>()?;
        let mut arena = Block::new(plan.arena_bytes);
        let base = Ptr(arena.ptr());
        let mut ptrs = vec![Ptr::NULL; n];
        let (mut bind_inputs, mut bind_states) = (Vec::new(), Vec::new());
        for (id, s) in plan.storage.iter().enumerate() {
            let ty = &g.nodes[id].ty;
            let need = numel(&ty.shape) * ty.dtype.size_bytes();
            match s {
                Storage::Arena { offset, bytes } => {
                    if offset % lamina_core::plan::ALIGN != 0
                        || *bytes < need
                        || offset + bytes > arena.len()
                    {
                        return Err(backend_err(format!(
                            "%{id}: arena range {offset}+{bytes} does not hold {} in an arena of {} bytes",
                            ty.describe(),
                            arena.len()
                        )));
                    }
                    ptrs[id] = Ptr(base.at::<u8>(*offset));
                }
                Storage::Input(k) => {
                    if plan.inputs.get(*k) != Some(&id) {
                        return Err(backend_err(format!(
                            "%{id} is stored as input {k}, which the plan feeds elsewhere"
                        )));
                    }
                    bind_inputs.push((id, *k));
                }
                Storage::State(name) => {
                    if !plan.states.iter().any(|(s, t)| s == name && t == ty) {
                        return Err(backend_err(format!("%{id} is stored in state \"{name}\", which the plan does not declare as {}", ty.describe())));
                    }
                    bind_states.push((id, name.clone()));
                }
                Storage::View(r) => {
                    let ok = *r < n && !matches!(plan.storage[*r], Storage::View(_)) && {
                        let rt = &g.nodes[*r].ty;
                        numel(&rt.shape) == numel(&ty.shape) && rt.dtype == ty.dtype
                    };
                    if !ok {
                        return Err(backend_err(format!(
                            "%{id} is a view of %{r}, which does not hold the same elements"
                        )));
                    }
                }
                Storage::Const => {
                    if !matches!(g.nodes[id].op, Op::Const { .. }) {
                        return Err(backend_err(format!(
                            "%{id} ({}) is stored as a constant",
                            g.nodes[id].op.name()
                        )));
                    }
                }
                Storage::Inline => {}
            }
        }
        Ok(Builder {
            plan,
            dts,
            arena,
            ptrs,
            consts: Vec::new(),
            materialised: vec![false; n],
            snapshots: Vec::new(),
            snap_of: HashMap::new(),
            assigned: HashMap::new(),
            pre: vec![Vec::new(); plan.steps.len()],
            bind_inputs,
            bind_states,
            winograd: true,
        })
    }

    fn op(&self, id: NodeId) -> &'p Op {
        &self.plan.graph.nodes[id].op
    }

    fn shape(&self, id: NodeId) -> &'p [usize] {
        &self.plan.graph.nodes[id].ty.shape
    }

    fn len(&self, id: NodeId) -> usize {
        numel(self.shape(id))
    }

    /// The value of a splat constant (through views), if `id` is one.
    fn splat(&self, id: NodeId) -> Option<f64> {
        match self.op(self.plan.root(id)) {
            Op::Const {
                value: Literal::Splat(v),
                ..
            } => Some(*v),
            _ => None,
        }
    }

    /// The slot holding `id`'s value for a reader compiled at the current step.
    fn read(&mut self, id: NodeId) -> Result<usize> {
        let r = self.plan.root(id);
        match &self.plan.storage[r] {
            Storage::Inline | Storage::View(_) => Err(backend_err(format!(
                "%{id} ({}) is read but the plan stores no value for it",
                self.op(id).name()
            ))),
            Storage::Const => {
                self.materialise(r);
                Ok(r)
            }
            Storage::State(name)
                if matches!(self.op(r), Op::State { .. }) && self.assigned.contains_key(name) =>
            {
                Ok(self.snapshot(name, r))
            }
            Storage::State(_) | Storage::Input(_) | Storage::Arena { .. } => Ok(r),
        }
    }

    /// The slot a step writes `id`'s result into: an arena value, or a state buffer when the
    /// planner placed an Assign's value directly there.
    fn write(&self, id: NodeId) -> Result<usize> {
        match self.plan.storage[id] {
            Storage::Arena { .. } => Ok(id),
            Storage::State(_) if !matches!(self.op(id), Op::State { .. } | Op::Assign { .. }) => {
                Ok(id)
            }
            ref s => Err(backend_err(format!(
                "%{id} ({}) is computed by a step but stored as {s:?}",
                self.op(id).name()
            ))),
        }
    }

    /// A snapshot of state `name` (read through node `state_node`), taken before its Assign.
    fn snapshot(&mut self, name: &str, state_node: NodeId) -> usize {
        if let Some(&s) = self.snap_of.get(name) {
            return s;
        }
        let ty = &self.plan.graph.nodes[state_node].ty;
        let bytes = numel(&ty.shape) * ty.dtype.size_bytes();
        let mut block = Block::new(bytes);
        let slot = self.ptrs.len();
        self.ptrs.push(Ptr(block.ptr()));
        self.snapshots.push(block);
        self.snap_of.insert(name.to_string(), slot);
        self.pre[self.assigned[name]].push(Snapshot {
            from: state_node,
            to: slot,
            bytes,
        });
        slot
    }

    /// Fills a constant's memory once.
    fn materialise(&mut self, id: NodeId) {
        if self.materialised[id] {
            return;
        }
        self.materialised[id] = true;
        let Op::Const { value, .. } = self.op(id) else {
            return;
        };
        let n = self.len(id);
        let dt = self.dts[id];
        let mut block = Block::new(n * dt.size());
        with_elem!(dt, T => {
            for (i, v) in block.as_mut_slice::<T>().iter_mut().take(n).enumerate() {
                *v = T::from_f64(value.get(i));
            }
        });
        self.ptrs[id] = Ptr(block.ptr());
        self.consts.push(block);
    }

    /// Permutes and expands that every user (all MatMuls) can read in place, so they need not run.
    fn read_through(&self) -> HashMap<NodeId, Through> {
        let g = &self.plan.graph;
        let users = g.users();
        let step_of = self.plan.step_of_nodes();
        let mut out = HashMap::new();
        for (id, node) in g.nodes.iter().enumerate() {
            let kind = match &node.op {
                op @ Op::Permute { .. } => {
                    if !op.swaps_last_two_axes() {
                        continue;
                    }
                    Through::Transposed
                }
                Op::Expand { shape } => {
                    let src = &g.nodes[node.inputs[0]].ty.shape;
                    let r = shape.len();
                    if r < 2 || src.len() != r || src[r - 2..] != shape[r - 2..] {
                        continue;
                    }
                    Through::Broadcast
                }
                _ => continue,
            };
            if self.plan.matmuls_read_through(id, &step_of, &users) {
                out.insert(id, kind);
            }
        }
        out
    }

    /// How a MatMul reads operand `x` (`[..., rows, cols]`).
    fn mat_operand(&mut self, x: NodeId, through: &HashMap<NodeId, Through>) -> Result<MatOperand> {
        let xs = self.shape(x);
        let r = xs.len();
        let (rows, cols) = (xs[r - 2], xs[r - 1]);
        let batch_shape = &xs[..r - 2];
        let batch = numel(batch_shape);
        let dense = |b: usize| b * rows * cols;
        Ok(match through.get(&x) {
            None => MatOperand {
                slot: self.read(x)?,
                batch_offsets: (0..batch).map(dense).collect(),
                rs: cols as isize,
                cs: 1,
            },
            Some(Through::Transposed) => {
                let q = self.plan.graph.nodes[x].inputs[0];
                MatOperand {
                    slot: self.read(q)?,
                    batch_offsets: (0..batch).map(dense).collect(),
                    rs: 1,
                    cs: rows as isize,
                }
            }
            Some(Through::Broadcast) => {
                let q = self.plan.graph.nodes[x].inputs[0];
                let st = broadcast_strides(self.shape(q), xs);
                let mut offsets = Vec::with_capacity(batch);
                Strided::new(batch_shape, &st[..r - 2], 0)
                    .for_runs(0..batch, |_, off, run, stride| {
                        offsets.extend((0..run).map(|j| off + j * stride))
                    });
                MatOperand {
                    slot: self.read(q)?,
                    batch_offsets: offsets,
                    rs: cols as isize,
                    cs: 1,
                }
            }
        })
    }

    /// The kernel of `Step::Node(id)` at step `t`.
    fn node(&mut self, id: NodeId, t: usize, through: &HashMap<NodeId, Through>) -> Result<Kernel> {
        check_id(self.plan, id)?;
        let node = &self.plan.graph.nodes[id];
        for &i in &node.inputs {
            check_id(self.plan, i)?;
        }
        let dt = self.dts[id];
        let shape = &node.ty.shape;
        let x = node.inputs.first().copied();
        let xshape = |b: &Self| x.map(|x| b.shape(x)).unwrap_or(&[]);
        let split = |s: &[usize], axis: usize| (numel(&s[..axis]), s[axis], numel(&s[axis + 1..]));
        Ok(match &node.op {
            Op::Input { .. } | Op::State { .. } | Op::Const { .. } => Kernel::Nop,
            Op::Neg
            | Op::Recip
            | Op::Sqrt
            | Op::Exp
            | Op::Log
            | Op::Tanh
            | Op::Erf
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Max
            | Op::CmpLt
            | Op::CmpEq
            | Op::Where
            | Op::Cast { .. } => self.fused(&[id], &[id])?,
            Op::Iota { axis, .. } => {
                let (outer, dim, inner) = split(shape, *axis);
                Kernel::Iota(Iota {
                    out: self.write(id)?,
                    dt,
                    outer,
                    dim,
                    inner,
                })
            }
            Op::RandomBits { stream, .. } => {
                let key = self.read(node.inputs[0])?;
                Kernel::RandomBits(RandomBits {
                    key,
                    out: self.write(id)?,
                    len: numel(shape),
                    stream: *stream,
                })
            }
            Op::ReduceSum { axes } | Op::ReduceMax { axes } => {
                if dt == Dt::Bool {
                    return Err(backend_err(format!(
                        "%{id}: {} of bool is not defined",
                        node.op.name()
                    )));
                }
                let kind = if matches!(node.op, Op::ReduceSum { .. }) {
                    ReduceKind::Sum
                } else {
                    ReduceKind::Max
                };
                let src = self.read(node.inputs[0])?;
                Kernel::Reduce(Reduce::new(
                    kind,
                    dt,
                    src,
                    self.write(id)?,
                    xshape(self),
                    axes,
                ))
            }
            Op::ArgMax { axis } => {
                let (outer, dim, inner) = split(xshape(self), *axis);
                let xdt = self.dts[node.inputs[0]];
                Kernel::ArgMax(ArgMax {
                    dt: xdt,
                    src: self.read(node.inputs[0])?,
                    out: self.write(id)?,
                    outer,
                    dim,
                    inner,
                })
            }
            Op::Reshape { .. } => match self.plan.storage[id] {
                Storage::View(_) => Kernel::Nop,
                _ => {
                    let n = numel(shape);
                    self.copy(id, Strided::new(&[n], &[1], 0))?
                }
            },
            Op::Permute { perm } => {
                if through.contains_key(&id) {
                    return Ok(Kernel::Nop);
                }
                let st = strides(xshape(self));
                let walk = Strided::new(shape, &perm.iter().map(|&p| st[p]).collect::<Vec<_>>(), 0);
                self.copy(id, walk)?
            }
            Op::Expand { shape: to } => {
                if through.contains_key(&id) {
                    return Ok(Kernel::Nop);
                }
                let walk = Strided::new(to, &broadcast_strides(xshape(self), to), 0);
                self.copy(id, walk)?
            }
            Op::Slice { start, stride, .. } => {
                let st = strides(xshape(self));
                let offset = start.iter().zip(&st).map(|(a, s)| a * s).sum();
                let walk = Strided::new(
                    shape,
                    &st.iter()
                        .zip(stride)
                        .map(|(s, k)| s * k)
                        .collect::<Vec<_>>(),
                    offset,
                );
                self.copy(id, walk)?
            }
            Op::Pad {
                lo,
                interior,
                value,
                ..
            } => {
                let ost = strides(shape);
                let offset = lo.iter().zip(&ost).map(|(a, s)| a * s).sum();
                let walk = Strided::new(
                    xshape(self),
                    &ost.iter()
                        .zip(interior)
                        .map(|(s, i)| s * (i + 1))
                        .collect::<Vec<_>>(),
                    offset,
                );
                let src = self.read(node.inputs[0])?;
                Kernel::Pad(Pad {
                    dt,
                    src,
                    src_len: numel(xshape(self)),
                    out: self.write(id)?,
                    out_len: numel(shape),
                    value: *value,
                    walk,
                })
            }
            Op::MatMul => {
                let f64 = match dt {
                    Dt::F32 => false,
                    Dt::F64 => true,
                    _ => {
                        return Err(backend_err(format!(
                            "%{id}: matmul of {} is not supported",
                            node.ty.dtype
                        )))
                    }
                };
                let r = shape.len();
                let (m, n) = (shape[r - 2], shape[r - 1]);
                let k = self.shape(node.inputs[0])[r - 1];
                let a = self.mat_operand(node.inputs[0], through)?;
                let b = self.mat_operand(node.inputs[1], through)?;
                Kernel::MatMul(MatMul {
                    f64,
                    a,
                    b,
                    out: self.write(id)?,
                    m,
                    n,
                    k,
                })
            }
            Op::Conv(p) => {
                let f64 = match dt {
                    Dt::F32 => false,
                    Dt::F64 => true,
                    _ => {
                        return Err(backend_err(format!(
                            "%{id}: conv of {} is not supported",
                            node.ty.dtype
                        )))
                    }
                };
                let [xs, ws, ys] =
                    conv_geometry(p, self.shape(node.inputs[0]), self.shape(node.inputs[1]))?;
                Kernel::Conv(Conv {
                    f64,
                    kind: p.kind,
                    a: self.read(node.inputs[0])?,
                    b: self.read(node.inputs[1])?,
                    out: self.write(id)?,
                    bias: None,
                    relu: None,
                    mask: None,
                    then: None,
                    next: None,
                    beside: None,
                    bias_grad: None,
                    input: [xs[0], xs[1], xs[2], xs[3]],
                    kernel: [ws[0], ws[1], ws[2], ws[3]],
                    out_hw: [ys[2], ys[3]],
                    stride: p.stride,
                    pad_lo: [p.padding[0].0, p.padding[1].0],
                    dilation: p.dilation,
                    groups: p.groups,
                    winograd: self.winograd,
                })
            }
            Op::Gather { axis } => {
                let (pre, dim, post) = split(xshape(self), *axis);
                let k = self.len(node.inputs[1]);
                let (src, idx) = (self.read(node.inputs[0])?, self.read(node.inputs[1])?);
                Kernel::Gather(Gather {
                    dt,
                    src,
                    idx,
                    out: self.write(id)?,
                    pre,
                    dim,
                    post,
                    k,
                })
            }
            Op::ScatterAdd { axis, dim_size } => {
                if dt == Dt::Bool {
                    return Err(backend_err(format!(
                        "%{id}: scatter_add of bool is not defined"
                    )));
                }
                let us = xshape(self);
                let ir = self.shape(node.inputs[1]).len();
                let (pre, k, post) = (
                    numel(&us[..*axis]),
                    self.len(node.inputs[1]),
                    numel(&us[axis + ir..]),
                );
                let (src, idx) = (self.read(node.inputs[0])?, self.read(node.inputs[1])?);
                Kernel::ScatterAdd(ScatterAdd {
                    dt,
                    src,
                    idx,
                    out: self.write(id)?,
                    pre,
                    dim: *dim_size,
                    post,
                    k,
                })
            }
            Op::Assign { name } => {
                let Storage::State(ref stored) = self.plan.storage[id] else {
                    return Err(backend_err(format!(
                        "%{id}: assign to \"{name}\" is not stored in its state buffer"
                    )));
                };
                if stored != name {
                    return Err(backend_err(format!(
                        "%{id}: assign to \"{name}\" is stored in state \"{stored}\""
                    )));
                }
                // Resolve the source first: it reads the value from before this Assign.
                let src = self.read(node.inputs[0])?;
                self.assigned.insert(name.clone(), t);
                Kernel::Assign {
                    src,
                    dst: id,
                    bytes: numel(shape) * dt.size(),
                }
            }
        })
    }

    /// When `next` adds a per-channel bias to forward convolution `conv`'s result (a fused
    /// `conv + expand(bias)` with bias `[1, o, 1, 1]`, read by nothing else), the convolution can
    /// add the bias to each image's block while it is still in cache and write the result straight
    /// into the group's memory, saving a pass over the whole result: returns the slots of the bias
    /// and of what the convolution writes, and of the ReLU of the sum when the same group computes
    /// that too. The group stores the sum, the ReLU of the sum, or both: with only the ReLU the
    /// convolution writes it where the sum would go (the ReLU's slot is then the written one).
    /// Not when what is written overlaps an operand of the convolution (the planner may reuse
    /// that memory once the convolution is done, not while it runs).
    #[allow(clippy::type_complexity)]
    fn bias_epilogue(
        &mut self,
        conv: NodeId,
        next: Option<&Step>,
    ) -> Result<Option<(usize, usize, Option<(usize, bool)>)>> {
        let Some(Step::Fused { nodes, outputs }) = next else {
            return Ok(None);
        };
        let g = &self.plan.graph;
        let Op::Conv(p) = self.op(conv) else {
            return Ok(None);
        };
        let is_add =
            |i: &NodeId| matches!(g.nodes[*i].op, Op::Add) && g.nodes[*i].inputs.contains(&conv);
        let Some(&add) = nodes.iter().find(|i| is_add(i)) else {
            return Ok(None);
        };
        if p.kind != lamina_core::ConvKind::Forward {
            return Ok(None);
        }
        let add_node = &g.nodes[add];
        let e = match add_node.inputs[..] {
            [a, e] if a == conv => e,
            [e, a] if a == conv => e,
            _ => return Ok(None),
        };
        let is_bias = nodes.contains(&e)
            && matches!(self.op(e), Op::Expand { .. })
            && self.plan.storage[e] == Storage::Inline;
        if !is_bias {
            return Ok(None);
        }
        // the rest of the group: nothing, or the ReLU of the sum (stored with or without the sum)
        let rest: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|&i| i != e && i != add)
            .collect();
        let (relu_of_sum, sum_stored) = match outputs[..] {
            [a] if a == add && rest.is_empty() => (None, true),
            [a, m] if a == add => (Some(m), true),
            [m] if m != add => (Some(m), false),
            _ => return Ok(None),
        };
        let q = g.nodes[e].inputs[0];
        let o = self.shape(conv)[1];
        if self.shape(q) != [1, o, 1, 1]
            || !self.read_only_by(conv, add)
            || self.shape(add) != self.shape(conv)
        {
            return Ok(None);
        }
        if sum_stored && !self.writable_during(add, conv) {
            return Ok(None);
        }
        let relu = match relu_of_sum {
            None => None,
            Some(m) => match self.relu_of(conv, add, &rest, m)? {
                Some(r) => Some(r),
                None => return Ok(None),
            },
        };
        let out = match relu {
            Some((r, _)) if !sum_stored => r,
            _ => self.write(add)?,
        };
        Ok(Some((self.read(q)?, out, relu)))
    }

    /// Convolution `conv` (node `id`, step `t`) with the epilogues it takes over (see
    /// `mask_epilogue`, `bias_epilogue`, `relu_epilogue`), marking their steps in `absorbed`:
    /// also the value it now writes (its own, or the masked one) and, with a mask, the ReLU
    /// result and the mask group's step.
    #[allow(clippy::type_complexity)]
    fn with_epilogues(
        &mut self,
        mut conv: Conv,
        id: NodeId,
        t: usize,
        absorbed: &mut [bool],
    ) -> Result<(Conv, NodeId, Option<(NodeId, usize)>)> {
        let plan = self.plan;
        let (mut value, mut masked) = (id, None);
        if let Some(e) = self.mask_epilogue(id, t)? {
            conv.mask = Some(self.read(e.mask)?);
            conv.out = self.write(e.masked)?;
            absorbed[e.step] = true;
            (value, masked) = (e.masked, Some((e.mask, e.step)));
        } else if let Some((bias, add, relu)) = self.bias_epilogue(id, plan.steps.get(t + 1))? {
            conv.bias = Some(bias);
            conv.out = add;
            absorbed[t + 1] = true;
            conv.relu = match relu {
                // the ReLU was in the bias add's group
                Some(r) => Some(r),
                None => {
                    let r = self.relu_epilogue(id, add, plan.steps.get(t + 2))?;
                    if r.is_some() {
                        absorbed[t + 2] = true;
                    }
                    r
                }
            };
        }
        Ok((conv, value, masked))
    }

    /// When a forward convolution a few steps after forward convolution `conv` (step `t`), with
    /// only absorbed steps between, reads what `conv` writes (its result or its ReLU) as its
    /// input, the two can run image by image (`Conv::next`), the second reading each image's
    /// block from cache: returns its step and node.
    fn forward_reader(&self, conv: &Conv, t: usize, absorbed: &[bool]) -> Option<(usize, NodeId)> {
        let g = &self.plan.graph;
        let written = [Some(conv.out), conv.relu.map(|(r, _)| r)];
        let t2 = (t + 1..(t + 4).min(self.plan.steps.len())).find(|&s| !absorbed[s])?;
        let Step::Node(next) = self.plan.steps[t2] else {
            return None;
        };
        let is_forward =
            matches!(self.op(next), Op::Conv(p) if p.kind == lamina_core::ConvKind::Forward);
        let input = self.plan.root(g.nodes[next].inputs[0]);
        (is_forward && written.contains(&Some(input))).then_some((t2, next))
    }

    /// Whether forward convolution `next` (step `t2`, epilogues marked in `taken`) may write its
    /// results while `conv` (step `t`) runs: they overlap neither `conv`'s operands and results
    /// nor what the steps in between that still run read or write.
    fn forward_results_free(
        &self,
        conv: &Conv,
        next: &Conv,
        t: usize,
        t2: usize,
        taken: &[bool],
    ) -> bool {
        let n = self.plan.graph.nodes.len();
        let step_of = self.plan.step_of_nodes();
        // its weights and bias exist before `t` (sources, or values of earlier steps; slots past
        // the nodes are snapshots of states)
        let ready = [Some(next.b), next.bias]
            .iter()
            .flatten()
            .all(|&q| q >= n || step_of[q].is_none_or(|s| s < t));
        let results = [Some(next.out), next.relu.map(|(r, _)| r)];
        let theirs = [
            Some(conv.a),
            Some(conv.b),
            conv.bias,
            Some(conv.out),
            conv.relu.map(|(r, _)| r),
        ];
        ready
            && results.iter().flatten().all(|&r| {
                matches!(self.plan.storage[r], Storage::Arena { .. })
                    && theirs
                        .iter()
                        .flatten()
                        .all(|&q| q >= n || !self.overlaps(r, q))
                    && (t + 1..t2).all(|s| taken[s] || !self.step_touches(s, r))
            })
    }

    /// When one of the few steps after input-gradient convolution `conv` (step `t`) is only the
    /// gradient of a ReLU `m = max(0, x)` applied to the convolution's result,
    /// `where(0 < m, conv, 0)` (the vjp reads the ReLU's result), the convolution can zero its
    /// result where `m` is not positive while the block is in cache, saving a pass over three
    /// tensors: returns `m`, the masked result and the group's step. Not when the convolution's
    /// value has another reader, or the masked result overlaps an operand of the convolution,
    /// `m`, or anything the steps in between read or write (it is now written before them).
    fn mask_epilogue(&self, conv: NodeId, t: usize) -> Result<Option<MaskEpilogue>> {
        let steps = &self.plan.steps;
        let Some(t2) = (t + 1..(t + 4).min(steps.len())).find(|&t2| {
            matches!(&steps[t2], Step::Fused { nodes, .. }
                if nodes.iter().any(|&i| self.plan.graph.nodes[i].inputs.contains(&conv)))
        }) else {
            return Ok(None);
        };
        let Step::Fused { nodes, outputs } = &steps[t2] else {
            return Ok(None);
        };
        let g = &self.plan.graph;
        let (Op::Conv(p), &[w]) = (self.op(conv), outputs.as_slice()) else {
            return Ok(None);
        };
        if !matches!(p.kind, lamina_core::ConvKind::InputGrad { .. })
            || !matches!(self.op(w), Op::Where)
        {
            return Ok(None);
        }
        let [c, v, z] = g.nodes[w].inputs[..] else {
            return Ok(None);
        };
        let &[z0, m] = g.nodes[c].inputs.as_slice() else {
            return Ok(None);
        };
        let absorbed = |b: &Self, i: NodeId| {
            matches!(b.op(i), Op::Expand { .. }) && b.plan.storage[i] == Storage::Inline
        };
        let members_ok = nodes
            .iter()
            .all(|&i| i == w || i == c || (absorbed(self, i) && (i == z || i == z0)));
        if v != conv
            || !matches!(self.op(c), Op::CmpLt)
            || !nodes.contains(&c)
            || nodes.contains(&m)
            || !members_ok
            || !self.is_zero(nodes, z)
            || !self.is_zero(nodes, z0)
            || !self.read_only_by(conv, w)
            || self.shape(m) != self.shape(conv)
            || self.shape(w) != self.shape(conv)
            || !self.writable_during(w, conv)
            || self.overlaps(w, m)
            || (t + 1..t2).any(|s| self.step_touches(s, w))
        {
            return Ok(None);
        }
        Ok(Some(MaskEpilogue {
            mask: m,
            masked: w,
            step: t2,
        }))
    }

    /// When input-gradient convolution `conv` (step `t`) writes `value` and the only reader of
    /// `value` is a later kernel-gradient convolution (as its cotangent; also the sum over its
    /// images and positions that this kernel gradient computes, a bias gradient), the two can
    /// run together image by image, the cotangent never stored (`Conv::then`): returns the
    /// kernel gradient's step and node and the bias-gradient sum's step and node. `masked`: the ReLU
    /// result that masks `value` and the mask group's step (see `mask_epilogue`). Not when the
    /// kernel gradient's other operand is computed after `t`, or its results (now written at
    /// `t`) overlap the input gradient's operands, the mask, or anything the steps in between
    /// read or write.
    fn kernel_grad_reader(
        &self,
        conv: NodeId,
        value: NodeId,
        t: usize,
        masked: Option<(NodeId, usize)>,
    ) -> Option<(StepNode, Option<StepNode>)> {
        let g = &self.plan.graph;
        let step_of = self.plan.step_of_nodes();
        let readers: Vec<NodeId> = (0..g.nodes.len())
            .filter(|&i| {
                g.nodes[i]
                    .inputs
                    .iter()
                    .any(|&j| self.plan.root(j) == value)
            })
            .collect();
        let is_kg = |k: NodeId| {
            matches!(self.op(k), Op::Conv(p) if matches!(p.kind, lamina_core::ConvKind::KernelGrad { .. }))
                && self.plan.root(g.nodes[k].inputs[1]) == value
                && self.plan.root(g.nodes[k].inputs[0]) != value
        };
        let kgs: Vec<NodeId> = readers.iter().copied().filter(|&k| is_kg(k)).collect();
        let &[kg] = kgs.as_slice() else {
            return None;
        };
        let t3 = step_of[kg]?;
        // the bias-gradient sum: its step and node
        let mut bias: Option<StepNode> = None;
        for &r in readers.iter().filter(|&&r| r != kg) {
            let tr = step_of[r]?;
            if self.plan.steps[tr] != Step::Node(r)
                || bias.is_some()
                || self.bias_grad_target(r, tr) != Some(t3)
            {
                return None;
            }
            bias = Some((tr, r));
        }
        let x = self.plan.root(g.nodes[kg].inputs[0]);
        let available = step_of[x].is_none_or(|tx| tx < t);
        let results = std::iter::once(kg).chain(bias.map(|(_, r)| r));
        // the steps in between, but the mask group's and the bias-gradient sum's own (done at
        // `t` now)
        let absorbed =
            |s: usize| Some(s) == bias.map(|(tr, _)| tr) || Some(s) == masked.map(|(_, t2)| t2);
        let free = |r: NodeId| {
            self.writable_during(r, conv)
                && masked.is_none_or(|(m, _)| !self.overlaps(r, m))
                && (t + 1..t3).all(|s| absorbed(s) || !self.step_touches(s, r))
        };
        let is_output = g.outputs.iter().any(|&o| self.plan.root(o) == value);
        (t3 > t && available && !is_output && results.into_iter().all(free))
            .then_some(((t3, kg), bias))
    }

    /// When a kernel-gradient convolution a few steps after input gradient `conv` (step `t`,
    /// compiled as `ig` with its epilogues and `then`) reads the same cotangent, it can run
    /// beside it image by image (`Conv::beside`): returns its step and node, and its
    /// bias-gradient sum's step and node. Not when its input is computed after `t`, or its
    /// results (now written at `t`) overlap what the input gradient's step reads or writes or
    /// anything the steps in between read or write.
    fn kernel_grad_beside(
        &self,
        conv: NodeId,
        ig: &Conv,
        t: usize,
        absorbed: &[bool],
    ) -> Option<(StepNode, Option<StepNode>)> {
        let g = &self.plan.graph;
        let step_of = self.plan.step_of_nodes();
        let cotangent = self.plan.root(g.nodes[conv].inputs[0]);
        let is_kg = |k: NodeId| {
            matches!(self.op(k), Op::Conv(p) if matches!(p.kind, lamina_core::ConvKind::KernelGrad { .. }))
                && self.plan.root(g.nodes[k].inputs[1]) == cotangent
        };
        let (t2, kg) = (t + 1..(t + 5).min(self.plan.steps.len()))
            .filter(|&s| !absorbed[s])
            .find_map(|s| match self.plan.steps[s] {
                Step::Node(k) if is_kg(k) => Some((s, k)),
                _ => None,
            })?;
        let x = self.plan.root(g.nodes[kg].inputs[0]);
        let available = step_of[x].is_none_or(|tx| tx < t);
        // its bias-gradient sum (before or after `t`)
        let bias = (0..g.nodes.len()).find_map(|r| {
            let tr = step_of[r]?;
            (self.plan.steps[tr] == Step::Node(r) && self.bias_grad_target(r, tr) == Some(t2))
                .then_some((tr, r))
        });
        // what the input gradient's step reads or writes besides its operands
        let n = g.nodes.len();
        let at_t = [Some(ig.out), ig.mask, ig.relu.map(|(r, _)| r)]
            .into_iter()
            .chain(
                ig.then
                    .iter()
                    .flat_map(|k| [Some(k.a), Some(k.out), k.bias_grad]),
            )
            .flatten()
            .filter(|&q| q < n);
        let at_t: Vec<NodeId> = at_t.collect();
        let free = |r: NodeId| {
            self.writable_during(r, conv)
                && self.writable_during(r, kg)
                && at_t.iter().all(|&q| !self.overlaps(r, q))
                && (t + 1..t2).all(|s| Some(s) == bias.map(|b| b.0) || !self.step_touches(s, r))
        };
        let results = std::iter::once(kg).chain(bias.map(|(_, r)| r));
        (available && results.into_iter().all(free)).then_some(((t2, kg), bias))
    }

    /// Whether step `s` reads or writes memory that overlaps node `id`'s.
    fn step_touches(&self, s: usize, id: NodeId) -> bool {
        let g = &self.plan.graph;
        let touched = |n: NodeId| {
            std::iter::once(n)
                .chain(g.nodes[n].inputs.iter().copied())
                .any(|i| self.overlaps(id, i))
        };
        match &self.plan.steps[s] {
            Step::Node(n) => touched(*n),
            Step::Fused { nodes, outputs } => nodes.iter().chain(outputs).any(|&n| touched(n)),
        }
    }

    /// When step `t` is the sum of a value over its batch and spatial axes (`[n, o, h, w]` →
    /// `[1, o, 1, 1]`: a convolution's bias gradient) and a kernel-gradient convolution within the
    /// next few steps reads that value as its cotangent, the convolution can sum it per channel
    /// while it reads it anyway (saving a pass over it): returns that convolution's step. Not
    /// when anything reads the sum before that step, or its memory overlaps the convolution's
    /// operands.
    fn bias_grad_target(&self, r: NodeId, t: usize) -> Option<usize> {
        let g = &self.plan.graph;
        let Op::ReduceSum { axes } = self.op(r) else {
            return None;
        };
        let v = *g.nodes[r].inputs.first()?;
        if self.shape(v).len() != 4 || axes.as_slice() != [0, 2, 3] {
            return None;
        }
        let t2 = (t + 1..(t + 4).min(self.plan.steps.len())).find(|&t2| {
            matches!(self.plan.steps[t2], Step::Node(k) if matches!(self.op(k),
                Op::Conv(p) if matches!(p.kind, lamina_core::ConvKind::KernelGrad { .. })
                    && self.plan.root(g.nodes[k].inputs[1]) == self.plan.root(v)))
        })?;
        let Step::Node(conv) = self.plan.steps[t2] else {
            return None;
        };
        let step_of = self.plan.step_of_nodes();
        // every reader of the sum (or of a view of it) runs after the convolution
        let late = g.nodes.iter().enumerate().all(|(i, n)| {
            i == r
                || !n.inputs.iter().any(|&j| self.plan.root(j) == r)
                || matches!(self.plan.storage[i], Storage::View(_))
                || matches!(step_of[i], Some(s) if s > t2)
        });
        (late && self.writable_during(r, conv)).then_some(t2)
    }

    /// Whether `reader` is the only node that reads `value` (directly or through a view) and
    /// `value` is not a graph output.
    fn read_only_by(&self, value: NodeId, reader: NodeId) -> bool {
        let g = &self.plan.graph;
        let others =
            g.nodes.iter().enumerate().any(|(id, n)| {
                id != reader && n.inputs.iter().any(|&i| self.plan.root(i) == value)
            });
        !others && !g.outputs.iter().any(|&i| self.plan.root(i) == value)
    }

    /// Whether node `id` is stored in the arena where convolution `conv` may write it while it
    /// runs: not over any of the convolution's operands.
    fn writable_during(&self, id: NodeId, conv: NodeId) -> bool {
        matches!(self.plan.storage[id], Storage::Arena { .. })
            && !self.plan.graph.nodes[conv]
                .inputs
                .iter()
                .any(|&i| self.overlaps(id, i))
    }

    /// Whether node `id`'s arena memory overlaps that of node `other` (or of the value it views).
    fn overlaps(&self, id: NodeId, other: NodeId) -> bool {
        match (
            &self.plan.storage[id],
            &self.plan.storage[self.plan.root(other)],
        ) {
            (
                Storage::Arena { offset, bytes },
                Storage::Arena {
                    offset: o2,
                    bytes: b2,
                },
            ) => *offset < o2 + b2 && *o2 < offset + bytes,
            _ => false,
        }
    }

    /// When `next` is only the ReLU of bias add `add` (whose sum convolution `conv` now writes),
    /// `max(0, add)` or `max(add, 0)`, the convolution can write it too, from the same block in
    /// cache: returns its slot and whether the zero is the first operand.
    fn relu_epilogue(
        &mut self,
        conv: NodeId,
        add: NodeId,
        next: Option<&Step>,
    ) -> Result<Option<(usize, bool)>> {
        let Some(Step::Fused { nodes, outputs }) = next else {
            return Ok(None);
        };
        let &[m] = outputs.as_slice() else {
            return Ok(None);
        };
        self.relu_of(conv, add, nodes, m)
    }

    /// Whether `nodes` are only `m = max(0, add)` or `max(add, 0)` (with absorbed expands of the
    /// zero) that convolution `conv` may write: its slot and whether the zero is first.
    fn relu_of(
        &mut self,
        conv: NodeId,
        add: NodeId,
        nodes: &[NodeId],
        m: NodeId,
    ) -> Result<Option<(usize, bool)>> {
        let node = &self.plan.graph.nodes[m];
        let absorbed = |b: &Self, i: NodeId| {
            nodes.contains(&i)
                && matches!(b.op(i), Op::Expand { .. })
                && b.plan.storage[i] == Storage::Inline
        };
        if !matches!(node.op, Op::Max)
            || nodes.iter().any(|&i| i != m && !absorbed(self, i))
            || !self.writable_during(m, conv)
        {
            return Ok(None);
        }
        let zero_first = match node.inputs[..] {
            [a, z] if a == add && self.is_zero(nodes, z) => false,
            [z, a] if a == add && self.is_zero(nodes, z) => true,
            _ => return Ok(None),
        };
        Ok(Some((self.write(m)?, zero_first)))
    }

    /// Whether operand `i` of a member of group `nodes` is a positive zero: a constant, or an
    /// expand of one that the group absorbed.
    fn is_zero(&self, nodes: &[NodeId], i: NodeId) -> bool {
        let src = if nodes.contains(&i) {
            if !matches!(self.op(i), Op::Expand { .. }) || self.plan.storage[i] != Storage::Inline {
                return false;
            }
            self.plan.graph.nodes[i].inputs[0]
        } else {
            i
        };
        matches!(self.splat(src), Some(v) if v == 0.0 && v.is_sign_positive())
    }

    /// A strided copy of node `id`'s operand into its result.
    fn copy(&mut self, id: NodeId, walk: Strided) -> Result<Kernel> {
        let x = self.plan.graph.nodes[id].inputs[0];
        Ok(Kernel::Copy(kernels::StridedCopy {
            dt: self.dts[id],
            src: self.read(x)?,
            src_len: self.len(x),
            out: self.write(id)?,
            out_len: self.len(id),
            walk,
        }))
    }

    /// The kernel of a fusion group: elementwise `nodes` (and the expands they absorbed), storing
    /// `outputs`.
    fn fused(&mut self, nodes: &[NodeId], outputs: &[NodeId]) -> Result<Kernel> {
        for &m in nodes.iter().chain(outputs) {
            check_id(self.plan, m)?;
        }
        if outputs.is_empty() {
            return Ok(Kernel::Nop);
        }
        let absorbed = |b: &Self, m: NodeId| {
            matches!(b.op(m), Op::Expand { .. }) && b.plan.storage[m] == Storage::Inline
        };
        let members: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|&m| !absorbed(self, m))
            .collect();
        let Some(&first) = members.first() else {
            return Ok(Kernel::Nop);
        };
        let len = self.len(first);
        let mut index: HashMap<NodeId, usize> = HashMap::new();
        let mut sources: Vec<Source> = Vec::new();
        let mut source_of: HashMap<NodeId, usize> = HashMap::new();
        let mut bufs = 0usize;
        let mut specs = Vec::with_capacity(members.len());
        for (mi, &m) in members.iter().enumerate() {
            let node = &self.plan.graph.nodes[m];
            if !node.op.kind().is_elementwise() {
                return Err(backend_err(format!(
                    "fused step contains %{m} ({}), which is not elementwise",
                    node.op.name()
                )));
            }
            if numel(&node.ty.shape) != len {
                return Err(backend_err(format!(
                    "fused step mixes shapes: %{m} is {}",
                    node.ty.describe()
                )));
            }
            let arg_dt = node
                .inputs
                .get(if matches!(node.op, Op::Where) { 1 } else { 0 })
                .map(|&i| self.plan.graph.nodes[i].ty.dtype)
                .unwrap_or(node.ty.dtype);
            let ew = Ew::new(&node.op, arg_dt, node.ty.dtype)?;
            if ew.arity() != node.inputs.len() {
                return Err(backend_err(format!(
                    "%{m} ({}) has {} operands",
                    node.op.name(),
                    node.inputs.len()
                )));
            }
            let mut args = Vec::with_capacity(3);
            for &i in &node.inputs {
                if let Some(&j) = index.get(&i) {
                    args.push(Arg::Member(j));
                    continue;
                }
                if let Some(&s) = source_of.get(&i) {
                    args.push(Arg::Source(s));
                    continue;
                }
                let src =
                    self.source(i, len, nodes.contains(&i) && absorbed(self, i), &mut bufs)?;
                sources.push(src);
                source_of.insert(i, sources.len() - 1);
                args.push(Arg::Source(sources.len() - 1));
            }
            let out = if outputs.contains(&m) {
                Some(self.write(m)?)
            } else {
                None
            };
            specs.push((ew, args, self.dts[m], out));
            index.insert(m, mi);
        }
        Ok(Kernel::Fused(fused::assemble(len, sources, bufs, specs)))
    }

    /// How a fused group of `len` elements reads operand `i` from outside the group.
    fn source(
        &mut self,
        i: NodeId,
        len: usize,
        absorbed_expand: bool,
        bufs: &mut usize,
    ) -> Result<Source> {
        let dt = self.dts[i];
        let mut buf = || {
            *bufs += 1;
            *bufs - 1
        };
        if absorbed_expand {
            let q = self.plan.graph.nodes[i].inputs[0];
            if let Some(value) = self.splat(q) {
                return Ok(Source::Splat {
                    value,
                    dt,
                    buf: buf(),
                });
            }
            let walk = Strided::new(
                self.shape(i),
                &broadcast_strides(self.shape(q), self.shape(i)),
                0,
            );
            let slot = self.read(q)?;
            return Ok(if walk.is_uniform() {
                Source::Uniform {
                    slot,
                    dt,
                    buf: buf(),
                }
            } else if walk.is_contiguous() {
                Source::Dense { slot, dt }
            } else {
                Source::Broadcast {
                    slot,
                    src_len: self.len(q),
                    dt,
                    walk,
                    buf: buf(),
                }
            });
        }
        if self.len(i) != len {
            return Err(backend_err(format!(
                "fused operand %{i} has {} elements, the group {len}",
                self.len(i)
            )));
        }
        if let Some(value) = self.splat(i) {
            return Ok(Source::Splat {
                value,
                dt,
                buf: buf(),
            });
        }
        Ok(Source::Dense {
            slot: self.read(i)?,
            dt,
        })
    }
}
