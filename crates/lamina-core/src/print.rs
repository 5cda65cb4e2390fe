//! A compact, jaxpr-like text form of graphs and plans, used by snapshot tests and for debugging.
//!
//! ```text
//! %0 = input "x" : f32[2,3]
//! %1 = reduce_sum[axes=1] %0 : f32[2,1]
//! out %1
//! ```

use crate::graph::{Graph, Node};
use crate::op::{ConvKind, Literal, Op};
use std::fmt::Write;

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// The op with its attributes, e.g. `reduce_sum[axes=1]` or `input "x"`.
pub fn op_text(op: &Op) -> String {
    let n = op.name();
    match op {
        Op::Input { name, .. } | Op::State { name, .. } | Op::Assign { name } => {
            format!("{n} \"{name}\"")
        }
        Op::Const {
            value: Literal::Splat(v),
            ..
        } => format!("{n} {}", num(*v)),
        Op::Const {
            value: Literal::Data(d),
            ..
        } => {
            let head: Vec<String> = d.iter().take(4).map(|&v| num(v)).collect();
            format!(
                "{n} [{}{}]",
                head.join(","),
                if d.len() > 4 { ",…" } else { "" }
            )
        }
        Op::Iota { axis, .. } => format!("{n}[axis={axis}]"),
        Op::RandomBits { stream, .. } => format!("{n}[stream={stream}]"),
        Op::Cast { to } => format!("{n}[{to}]"),
        Op::ReduceSum { axes } | Op::ReduceMax { axes } => format!("{n}[axes={}]", list(axes)),
        Op::ArgMax { axis } | Op::Gather { axis } => format!("{n}[axis={axis}]"),
        Op::ScatterAdd { axis, dim_size } => format!("{n}[axis={axis},size={dim_size}]"),
        Op::Reshape { .. } | Op::Expand { .. } => n.to_string(),
        Op::Permute { perm } => format!("{n}[{}]", list(perm)),
        Op::Slice {
            start,
            limit,
            stride,
        } => {
            let parts: Vec<String> = (0..start.len())
                .map(|i| format!("{}:{}:{}", start[i], limit[i], stride[i]))
                .collect();
            format!("{n}[{}]", parts.join(","))
        }
        Op::Pad {
            lo,
            hi,
            interior,
            value,
        } => {
            format!(
                "{n}[lo={},hi={},interior={},value={}]",
                list(lo),
                list(hi),
                list(interior),
                num(*value)
            )
        }
        Op::Conv(p) => format!(
            "{n}[{}stride={},pad={}:{},{}:{},dilation={},groups={}]",
            match p.kind {
                ConvKind::Forward => String::new(),
                ConvKind::InputGrad { input_hw } => format!("input_grad={},", list(&input_hw)),
                ConvKind::KernelGrad { kernel_hw } => format!("kernel_grad={},", list(&kernel_hw)),
            },
            list(&p.stride),
            p.padding[0].0,
            p.padding[0].1,
            p.padding[1].0,
            p.padding[1].1,
            list(&p.dilation),
            p.groups
        ),
        _ => n.to_string(),
    }
}

/// One node as `%id = op %a %b : type`.
pub fn node_text(id: usize, node: &Node) -> String {
    let mut s = format!("%{id} = {}", op_text(&node.op));
    for i in &node.inputs {
        let _ = write!(s, " %{i}");
    }
    let _ = write!(s, " : {}", node.ty.describe());
    s
}

/// The whole graph, one node per line, then its outputs.
pub fn graph_text(g: &Graph) -> String {
    let mut s = String::new();
    for (i, n) in g.nodes.iter().enumerate() {
        s.push_str(&node_text(i, n));
        s.push('\n');
    }
    let outs: Vec<String> = g.outputs.iter().map(|o| format!("%{o}")).collect();
    let _ = writeln!(s, "out {}", outs.join(" "));
    s
}

impl std::fmt::Display for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&graph_text(self))
    }
}
