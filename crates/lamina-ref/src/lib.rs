//! lamina-ref: a naive f64 interpreter of every primitive — the living specification of what each
//! op computes, and the oracle every backend is tested against.
//!
//! Values are held as f64 whatever their dtype (exact for f32, i32 and bool values); floating-point
//! results are not rounded between ops. Integer and boolean results follow
//! `lamina_core::ops::elementwise::eval_scalar`. State semantics: every `State` read sees the buffer
//! as it was when the run started, every `Assign` takes effect when the run ends.
//!
//! It is deliberately slow and simple: loops over multi-indices, no blocking, no fusion.

pub mod cases;
pub mod check;
pub mod fixtures;

use lamina_core::ops::elementwise::{eval_scalar, round_to};
use lamina_core::{
    numel, strides, Backend, ConvKind, DType, Error, Graph, HostTensor, Op, Plan, Result, StateMap,
    TensorType,
};

/// A value during interpretation: type and f64 data.
#[derive(Clone, Debug)]
struct Val {
    ty: TensorType,
    data: Vec<f64>,
}

fn unravel(mut i: usize, shape: &[usize], out: &mut [usize]) {
    for a in (0..shape.len()).rev() {
        out[a] = i % shape[a];
        i /= shape[a];
    }
}

/// Evaluates one node from its operands.
fn eval_node(
    op: &Op,
    ty: &TensorType,
    ins: &[&Val],
    inputs: &[&HostTensor],
    input_k: &mut usize,
    state: &StateMap<HostTensor>,
) -> Result<Vec<f64>> {
    let n = numel(&ty.shape);
    let rank = ty.shape.len();
    let mut idx = vec![0usize; rank];
    // floats stay unrounded f64; integer and bool results are what the dtype can hold
    let exact = if ty.dtype.is_float() {
        DType::F64
    } else {
        ty.dtype
    };
    Ok(match op {
        Op::Input { name, .. } => {
            let t = inputs
                .get(*input_k)
                .ok_or_else(|| Error::Input(format!("input \"{name}\" was not fed")))?;
            *input_k += 1;
            t.to_f64()
        }
        Op::State { name, .. } => state
            .get(name)
            .ok_or_else(|| Error::Input(format!("state \"{name}\" is missing")))?
            .to_f64(),
        Op::Const { value, .. } => (0..n).map(|i| value.get(i)).collect(),
        Op::Iota { axis, .. } => (0..n)
            .map(|i| {
                unravel(i, &ty.shape, &mut idx);
                idx[*axis] as f64
            })
            .collect(),
        Op::RandomBits { stream, .. } => {
            let (seed, step) = (ins[0].data[0] as i32, ins[0].data[1] as i32);
            (0..n)
                .map(|i| lamina_core::rng::random_bits_at(seed, step, *stream, i) as f64)
                .collect()
        }
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
        | Op::Where => {
            let mut args = vec![0.0; ins.len()];
            (0..n)
                .map(|i| {
                    for (a, v) in args.iter_mut().zip(ins) {
                        *a = v.data[i];
                    }
                    eval_scalar(op, &args, exact)
                })
                .collect()
        }
        Op::Cast { .. } => ins[0]
            .data
            .iter()
            .map(|&v| eval_scalar(op, &[v], exact))
            .collect(),
        Op::ReduceSum { .. } | Op::ReduceMax { .. } | Op::ArgMax { .. } => {
            let x = ins[0];
            let xs = &x.ty.shape;
            let ost = strides(&ty.shape);
            let is_max = !matches!(op, Op::ReduceSum { .. });
            let mut acc = vec![if is_max { f64::NEG_INFINITY } else { 0.0 }; n];
            let mut arg = vec![0.0; n];
            let mut xi = vec![0usize; xs.len()];
            for (i, &v) in x.data.iter().enumerate() {
                unravel(i, xs, &mut xi);
                let o: usize = xi
                    .iter()
                    .zip(&ty.shape)
                    .zip(&ost)
                    .map(|((&k, &d), &s)| if d == 1 { 0 } else { k * s })
                    .sum();
                match op {
                    Op::ReduceSum { .. } => acc[o] += v,
                    _ => {
                        // NaN wins (and stays); otherwise the first strict maximum
                        if !acc[o].is_nan() && (v.is_nan() || v > acc[o]) {
                            acc[o] = v;
                            if let Op::ArgMax { axis } = op {
                                arg[o] = xi[*axis] as f64;
                            }
                        }
                    }
                }
            }
            if matches!(op, Op::ArgMax { .. }) {
                arg
            } else {
                acc.into_iter().map(|v| round_to(v, exact)).collect()
            }
        }
        Op::Reshape { .. } => ins[0].data.clone(),
        Op::Permute { perm } => {
            let xst = strides(&ins[0].ty.shape);
            (0..n)
                .map(|i| {
                    unravel(i, &ty.shape, &mut idx);
                    ins[0].data[(0..rank).map(|a| idx[a] * xst[perm[a]]).sum::<usize>()]
                })
                .collect()
        }
        Op::Expand { .. } => {
            let xs = &ins[0].ty.shape;
            let xst = strides(xs);
            (0..n)
                .map(|i| {
                    unravel(i, &ty.shape, &mut idx);
                    ins[0].data[(0..rank)
                        .map(|a| if xs[a] == 1 { 0 } else { idx[a] * xst[a] })
                        .sum::<usize>()]
                })
                .collect()
        }
        Op::Slice { start, stride, .. } => {
            let xst = strides(&ins[0].ty.shape);
            (0..n)
                .map(|i| {
                    unravel(i, &ty.shape, &mut idx);
                    ins[0].data[(0..rank)
                        .map(|a| (start[a] + idx[a] * stride[a]) * xst[a])
                        .sum::<usize>()]
                })
                .collect()
        }
        Op::Pad {
            lo,
            interior,
            value,
            ..
        } => {
            let xs = &ins[0].ty.shape;
            let mut out = vec![*value; n];
            let ost = strides(&ty.shape);
            let mut xi = vec![0usize; rank];
            for (i, &v) in ins[0].data.iter().enumerate() {
                unravel(i, xs, &mut xi);
                out[(0..rank)
                    .map(|a| (lo[a] + xi[a] * (interior[a] + 1)) * ost[a])
                    .sum::<usize>()] = v;
            }
            out
        }
        Op::MatMul => {
            let (a, b) = (ins[0], ins[1]);
            let r = a.ty.shape.len();
            let (m, k, nn) = (a.ty.shape[r - 2], a.ty.shape[r - 1], b.ty.shape[r - 1]);
            let batch = numel(&a.ty.shape[..r - 2]);
            let mut out = vec![0.0; n];
            for bi in 0..batch {
                for i in 0..m {
                    for j in 0..nn {
                        let mut s = 0.0;
                        for p in 0..k {
                            s += a.data[bi * m * k + i * k + p] * b.data[bi * k * nn + p * nn + j];
                        }
                        out[bi * m * nn + i * nn + j] = s;
                    }
                }
            }
            out
        }
        Op::Conv(p) => {
            // one loop nest for the three kinds: visit every (image, output channel, output
            // position, kernel tap) that reads an input element and accumulate the product
            let (a, b) = (ins[0], ins[1]);
            let [xs, ws, ys] =
                lamina_core::ops::linalg::conv_geometry(p, &a.ty.shape, &b.ty.shape)?;
            let (cg, og) = (ws[1], ws[0] / p.groups);
            let mut out = vec![0.0; n];
            for bi in 0..ys[0] {
                for o in 0..ys[1] {
                    let g = o / og;
                    for oy in 0..ys[2] {
                        for ox in 0..ys[3] {
                            let yi = ((bi * ys[1] + o) * ys[2] + oy) * ys[3] + ox;
                            for c in 0..cg {
                                for ky in 0..ws[2] {
                                    let iy = (oy * p.stride[0] + ky * p.dilation[0]) as i64
                                        - p.padding[0].0;
                                    if iy < 0 || iy >= xs[2] as i64 {
                                        continue;
                                    }
                                    for kx in 0..ws[3] {
                                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as i64
                                            - p.padding[1].0;
                                        if ix < 0 || ix >= xs[3] as i64 {
                                            continue;
                                        }
                                        let xi = ((bi * xs[1] + g * cg + c) * xs[2] + iy as usize)
                                            * xs[3]
                                            + ix as usize;
                                        let wi = ((o * cg + c) * ws[2] + ky) * ws[3] + kx;
                                        match p.kind {
                                            ConvKind::Forward => out[yi] += a.data[xi] * b.data[wi],
                                            ConvKind::InputGrad { .. } => {
                                                out[xi] += a.data[yi] * b.data[wi]
                                            }
                                            ConvKind::KernelGrad { .. } => {
                                                out[wi] += a.data[xi] * b.data[yi]
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            out
        }
        Op::Gather { axis } => {
            let (x, ix) = (ins[0], ins[1]);
            let xs = &x.ty.shape;
            let k = ix.ty.shape.len();
            let xst = strides(xs);
            let ist = strides(&ix.ty.shape);
            (0..n)
                .map(|i| {
                    unravel(i, &ty.shape, &mut idx);
                    let sel = ix.data[(0..k).map(|j| idx[axis + j] * ist[j]).sum::<usize>()];
                    if sel < 0.0 || sel >= xs[*axis] as f64 {
                        return 0.0; // out-of-range indices read 0
                    }
                    let mut off = sel as usize * xst[*axis];
                    off += (0..*axis).map(|a| idx[a] * xst[a]).sum::<usize>();
                    off += (axis + 1..xs.len())
                        .map(|a| idx[a + k - 1] * xst[a])
                        .sum::<usize>();
                    x.data[off]
                })
                .collect()
        }
        Op::ScatterAdd { axis, dim_size } => {
            let (u, ix) = (ins[0], ins[1]);
            let us = &u.ty.shape;
            let k = ix.ty.shape.len();
            let ost = strides(&ty.shape);
            let ist = strides(&ix.ty.shape);
            let mut out = vec![0.0; n];
            let mut ui = vec![0usize; us.len()];
            for (i, &v) in u.data.iter().enumerate() {
                unravel(i, us, &mut ui);
                let sel = ix.data[(0..k).map(|j| ui[axis + j] * ist[j]).sum::<usize>()];
                if sel < 0.0 || sel >= *dim_size as f64 {
                    continue; // out-of-range indices are dropped
                }
                let mut off = sel as usize * ost[*axis];
                off += (0..*axis).map(|a| ui[a] * ost[a]).sum::<usize>();
                off += (axis + k..us.len())
                    .map(|a| ui[a] * ost[a + 1 - k])
                    .sum::<usize>();
                out[off] += v;
            }
            out
        }
        Op::Assign { .. } => ins[0].data.clone(),
    })
}

/// Runs a graph: `inputs` in the graph's feed order (`Graph::inputs`), `state` read at the start
/// and updated by the graph's Assigns at the end. Returns the outputs, each of its node's dtype.
pub fn run_graph(
    g: &Graph,
    inputs: &[&HostTensor],
    state: &mut StateMap<HostTensor>,
) -> Result<Vec<HostTensor>> {
    let feeds = g.inputs();
    if feeds.len() != inputs.len() {
        return Err(Error::Input(format!(
            "expected {} inputs, got {}",
            feeds.len(),
            inputs.len()
        )));
    }
    let mut vals: Vec<Val> = Vec::with_capacity(g.nodes.len());
    let mut input_k = 0;
    let mut writes: Vec<(String, usize)> = Vec::new();
    for (id, node) in g.nodes.iter().enumerate() {
        let ins: Vec<&Val> = node.inputs.iter().map(|&i| &vals[i]).collect();
        let data = eval_node(&node.op, &node.ty, &ins, inputs, &mut input_k, state)?;
        if let Op::Assign { name } = &node.op {
            writes.push((name.clone(), id));
        }
        vals.push(Val {
            ty: node.ty.clone(),
            data,
        });
    }
    let host = |v: &Val| HostTensor::from_f64(&v.ty.shape, v.ty.dtype, &v.data);
    let outs = g
        .outputs
        .iter()
        .map(|&o| host(&vals[o]))
        .collect::<Result<Vec<_>>>()?;
    for (name, id) in writes {
        state.insert(name, host(&vals[id])?);
    }
    Ok(outs)
}

/// The reference interpreter as a [`Backend`]: buffers are host tensors, an executable is the
/// plan's graph.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefBackend;

impl Backend for RefBackend {
    type Buffer = HostTensor;
    type Executable = Plan;

    fn name(&self) -> &'static str {
        "ref"
    }
    fn upload(&self, t: &HostTensor) -> Result<HostTensor> {
        Ok(t.clone())
    }
    fn download(&self, b: &HostTensor) -> Result<HostTensor> {
        Ok(b.clone())
    }
    fn compile(&self, plan: &Plan) -> Result<Plan> {
        Ok(plan.clone())
    }
    fn run(
        &self,
        exe: &mut Plan,
        state: &mut StateMap<HostTensor>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        exe.check_inputs(inputs)?;
        lamina_core::check_state(exe, state, |b| TensorType::new(b.shape(), b.dtype()))?;
        run_graph(&exe.graph, inputs, state)
    }
}
