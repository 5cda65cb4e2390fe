//! `Tensor`: a symbolic value in a graph under construction, with NumPy-style broadcasting,
//! operator overloading and the named compositions that layers are written with.
//!
//! A `Tensor` is a `Copy` handle (graph id, node id). Operations never panic on bad shapes: the
//! first error is recorded in the builder and the result is a poisoned tensor (see
//! [`GraphBuilder`](crate::GraphBuilder)).

use crate::dtype::{fmt_shape, numel, DType};
use crate::error::{Error, Result};
use crate::graph::{with_builder, NodeId, TensorType};
use crate::op::{ConvKind, ConvParams, Literal, Op};
use std::ops::{Add, Div, Mul, Neg, Sub};

const POISON: u32 = u32::MAX;

/// A symbolic tensor: a handle to a node of a graph being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tensor {
    graph: u32,
    node: u32,
}

/// Shape of NumPy broadcasting `a` against `b`, or `None` when they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Resolves a possibly negative axis against a rank.
fn axis_of(axis: isize, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    (0..rank as isize).contains(&a).then_some(a as usize)
}

impl Tensor {
    pub(crate) fn from_parts(graph: u32, node: NodeId) -> Self {
        Tensor {
            graph,
            node: node as u32,
        }
    }

    pub(crate) fn poisoned(graph: u32) -> Self {
        Tensor {
            graph,
            node: POISON,
        }
    }

    /// True when an earlier operation on this tensor's inputs failed.
    pub fn is_poisoned(self) -> bool {
        self.node == POISON
    }

    /// The node id of this tensor in its graph.
    pub fn id(self) -> NodeId {
        self.node as NodeId
    }

    pub(crate) fn graph_id(self) -> u32 {
        self.graph
    }

    /// Whether this tensor is a constant node (a literal or splat, not computed).
    pub(crate) fn is_constant(self) -> bool {
        !self.is_poisoned()
            && with_builder(self.graph, |st| {
                matches!(st.graph.nodes[self.id()].op, Op::Const { .. })
            })
    }

    pub(crate) fn node_in(self, graph: u32) -> Result<NodeId> {
        if self.graph != graph {
            return Err(Error::InvalidGraph(
                "a tensor of another graph was used".into(),
            ));
        }
        if self.is_poisoned() {
            return with_builder(graph, |st| {
                Err(st
                    .error
                    .clone()
                    .unwrap_or_else(|| Error::InvalidGraph("poisoned tensor".into())))
            });
        }
        Ok(self.id())
    }

    /// `Ok(self)`, or the error that poisoned this tensor.
    pub fn check(self) -> Result<Tensor> {
        self.node_in(self.graph).map(|_| self)
    }

    fn record(graph: u32, e: Error) -> Tensor {
        with_builder(graph, |st| {
            if st.error.is_none() {
                st.error = Some(e);
            }
        });
        Tensor::poisoned(graph)
    }

    pub(crate) fn emit_in(graph: u32, op: Op, inputs: &[NodeId]) -> Tensor {
        with_builder(graph, |st| match st.graph.push(op, inputs) {
            Ok(id) => Tensor::from_parts(graph, id),
            Err(e) => {
                if st.error.is_none() {
                    st.error = Some(e);
                }
                Tensor::poisoned(graph)
            }
        })
    }

    /// Applies a primitive to operands of one graph (the shape rule checks them).
    pub fn apply(op: Op, operands: &[Tensor]) -> Tensor {
        let graph = operands[0].graph;
        let mut ids = Vec::with_capacity(operands.len());
        for t in operands {
            if t.graph != graph {
                return Tensor::record(
                    graph,
                    Error::InvalidGraph(format!(
                        "{}: operands come from different graphs",
                        op.name()
                    )),
                );
            }
            if t.is_poisoned() {
                return Tensor::poisoned(graph);
            }
            ids.push(t.id());
        }
        Tensor::emit_in(graph, op, &ids)
    }

    /// Like [`Tensor::apply`], returning the shape rule's error instead of poisoning.
    pub fn try_apply(op: Op, operands: &[Tensor]) -> Result<Tensor> {
        let graph = operands[0].graph;
        let mut ids = Vec::with_capacity(operands.len());
        for t in operands {
            ids.push(t.node_in(graph)?);
        }
        with_builder(graph, |st| st.graph.push(op, &ids)).map(|id| Tensor::from_parts(graph, id))
    }

    /// Applies a one-operand primitive.
    pub fn prim(self, op: Op) -> Tensor {
        Tensor::apply(op, &[self])
    }

    /// A source node (constant, iota) in this tensor's graph.
    fn source(self, op: Op) -> Tensor {
        Tensor::emit_in(self.graph, op, &[])
    }

    /// Shape and dtype (`f32[]` for a poisoned tensor).
    pub fn ty(self) -> TensorType {
        if self.is_poisoned() {
            return TensorType::new(&[], DType::F32);
        }
        with_builder(self.graph, |st| st.graph.nodes[self.id()].ty.clone())
    }
    pub fn shape(self) -> Vec<usize> {
        self.ty().shape
    }
    pub fn dtype(self) -> DType {
        self.ty().dtype
    }
    pub fn rank(self) -> usize {
        self.shape().len()
    }
    pub fn numel(self) -> usize {
        numel(&self.shape())
    }
    /// Size of axis `i`; negative counts from the end (`dim(-1)` is the last axis). Out of range
    /// records an error and returns 0.
    pub fn dim(self, i: isize) -> usize {
        let s = self.shape();
        match axis_of(i, s.len()) {
            Some(a) => s[a],
            None => {
                if !self.is_poisoned() {
                    Tensor::record(
                        self.graph,
                        Error::Shape {
                            op: "dim".into(),
                            msg: format!("axis {i} out of range for {}", fmt_shape(&s)),
                        },
                    );
                }
                0
            }
        }
    }

    fn fail(self, op: &str, msg: String) -> Tensor {
        if self.is_poisoned() {
            return self;
        }
        Tensor::record(self.graph, Error::Shape { op: op.into(), msg })
    }

    fn axis(self, op: &str, axis: isize) -> Option<usize> {
        let r = self.rank();
        let a = axis_of(axis, r);
        if a.is_none() {
            self.fail(op, format!("axis {axis} out of range for rank {r}"));
        }
        a
    }

    // ----- constants -----

    /// A constant of this tensor's dtype with every element `value`, shaped `shape`.
    pub fn full(self, shape: &[usize], value: f64) -> Tensor {
        self.source(Op::Const {
            value: Literal::Splat(value),
            shape: shape.to_vec(),
            dtype: self.dtype(),
        })
    }
    /// A scalar constant of this tensor's dtype.
    pub fn scalar(self, value: f64) -> Tensor {
        self.full(&[], value)
    }
    /// A constant of this tensor's dtype with the given row-major values.
    pub fn literal(self, shape: &[usize], values: Vec<f64>) -> Tensor {
        if values.len() != numel(shape) {
            return self.fail(
                "const",
                format!(
                    "shape {} needs {} values, got {}",
                    fmt_shape(shape),
                    numel(shape),
                    values.len()
                ),
            );
        }
        self.source(Op::Const {
            value: Literal::Data(std::sync::Arc::new(values)),
            shape: shape.to_vec(),
            dtype: self.dtype(),
        })
    }
    pub fn full_like(self, value: f64) -> Tensor {
        self.full(&self.shape(), value)
    }
    pub fn zeros_like(self) -> Tensor {
        self.full_like(0.0)
    }
    pub fn ones_like(self) -> Tensor {
        self.full_like(1.0)
    }

    // ----- broadcasting -----

    /// NumPy `broadcast_to`: prepends size-1 axes, then grows size-1 axes.
    pub fn expand(self, shape: &[usize]) -> Tensor {
        let s = self.shape();
        if s == shape {
            return self;
        }
        if s.len() > shape.len() {
            return self.fail(
                "expand",
                format!(
                    "cannot broadcast {} to lower rank {}",
                    fmt_shape(&s),
                    fmt_shape(shape)
                ),
            );
        }
        let mut padded = vec![1; shape.len() - s.len()];
        padded.extend_from_slice(&s);
        let t = if padded != s {
            self.reshape(&padded)
        } else {
            self
        };
        if padded == shape {
            t
        } else {
            t.prim(Op::Expand {
                shape: shape.to_vec(),
            })
        }
    }

    fn binary(self, op: Op, rhs: Tensor) -> Tensor {
        if self.is_poisoned() || rhs.is_poisoned() {
            return Tensor::poisoned(self.graph);
        }
        let (a, b) = (self.shape(), rhs.shape());
        match broadcast_shapes(&a, &b) {
            Some(s) => Tensor::apply(op, &[self.expand(&s), rhs.expand(&s)]),
            None => self.fail(
                op.name(),
                format!(
                    "shapes {} and {} do not broadcast",
                    fmt_shape(&a),
                    fmt_shape(&b)
                ),
            ),
        }
    }

    // ----- elementwise -----

    pub fn recip(self) -> Tensor {
        self.prim(Op::Recip)
    }
    pub fn sqrt(self) -> Tensor {
        self.prim(Op::Sqrt)
    }
    pub fn exp(self) -> Tensor {
        self.prim(Op::Exp)
    }
    pub fn log(self) -> Tensor {
        self.prim(Op::Log)
    }
    pub fn tanh(self) -> Tensor {
        self.prim(Op::Tanh)
    }
    pub fn erf(self) -> Tensor {
        self.prim(Op::Erf)
    }
    pub fn square(self) -> Tensor {
        self * self
    }
    pub fn abs(self) -> Tensor {
        self.maximum(-self)
    }
    /// `self^p` for a constant exponent, as `exp(p·ln x)` (positive bases).
    pub fn powf(self, p: f64) -> Tensor {
        (self.log() * p).exp()
    }
    /// Elementwise maximum with broadcasting; ties send the gradient to `self`.
    pub fn maximum(self, rhs: impl IntoOperand) -> Tensor {
        let r = rhs.into_operand(self);
        self.binary(Op::Max, r)
    }
    /// Elementwise minimum with broadcasting.
    pub fn minimum(self, rhs: impl IntoOperand) -> Tensor {
        let r = rhs.into_operand(self);
        -((-self).maximum(-r))
    }
    /// `self < rhs` (bool).
    pub fn lt(self, rhs: impl IntoOperand) -> Tensor {
        let r = rhs.into_operand(self);
        self.binary(Op::CmpLt, r)
    }
    /// `self > rhs` (bool).
    pub fn gt(self, rhs: impl IntoOperand) -> Tensor {
        let r = rhs.into_operand(self);
        r.binary(Op::CmpLt, self)
    }
    /// `self == rhs` (bool).
    pub fn eq(self, rhs: impl IntoOperand) -> Tensor {
        let r = rhs.into_operand(self);
        self.binary(Op::CmpEq, r)
    }
    /// Logical not of a bool tensor.
    pub fn logical_not(self) -> Tensor {
        let f = self.source(Op::Const {
            value: Literal::Splat(0.0),
            shape: vec![],
            dtype: DType::Bool,
        });
        self.binary(Op::CmpEq, f)
    }
    /// `where(self, a, b)` for a bool `self`, with broadcasting of all three.
    pub fn where_(self, a: impl IntoOperand, b: impl IntoOperand) -> Tensor {
        let a = a.into_operand(self);
        let b = b.into_operand(a);
        let a = if a.dtype() == DType::Bool && b.dtype() != DType::Bool {
            a.cast(b.dtype())
        } else {
            a
        };
        let shapes = [self.shape(), a.shape(), b.shape()];
        let s =
            broadcast_shapes(&shapes[0], &shapes[1]).and_then(|s| broadcast_shapes(&s, &shapes[2]));
        match s {
            Some(s) => Tensor::apply(Op::Where, &[self.expand(&s), a.expand(&s), b.expand(&s)]),
            None => self.fail(
                "where",
                format!(
                    "shapes {}, {} and {} do not broadcast",
                    fmt_shape(&shapes[0]),
                    fmt_shape(&shapes[1]),
                    fmt_shape(&shapes[2])
                ),
            ),
        }
    }
    pub fn cast(self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            self
        } else {
            self.prim(Op::Cast { to: dtype })
        }
    }

    // ----- activations -----

    /// `max(0, x)`; the gradient at 0 is 0, as in PyTorch.
    pub fn relu(self) -> Tensor {
        self.zeros_like().maximum(self)
    }
    /// `1 / (1 + e^-x)`, computed as `½·tanh(x/2) + ½` so neither value nor gradient overflows.
    pub fn sigmoid(self) -> Tensor {
        (self * 0.5).tanh() * 0.5 + 0.5
    }
    /// `x · σ(x)` (Swish).
    pub fn silu(self) -> Tensor {
        self * self.sigmoid()
    }
    /// Exact GELU: `x · Φ(x) = ½x(1 + erf(x/√2))`, PyTorch's default.
    pub fn gelu(self) -> Tensor {
        self * 0.5 * ((self * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0)
    }
    /// `softmax` along `axis`, shifted by the maximum for stability.
    pub fn softmax(self, axis: isize) -> Tensor {
        let e = (self - self.max(&[axis], true)).exp();
        e / e.sum(&[axis], true)
    }
    /// `log softmax` along `axis`: `x − max − ln Σ e^(x−max)`.
    pub fn log_softmax(self, axis: isize) -> Tensor {
        let shifted = self - self.max(&[axis], true);
        shifted - shifted.exp().sum(&[axis], true).log()
    }

    // ----- reductions -----

    fn reduce_axes(self, op: &str, axes: &[isize]) -> Option<Vec<usize>> {
        let mut out = Vec::new();
        for &a in axes {
            let a = self.axis(op, a)?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out.sort_unstable();
        Some(out)
    }

    fn reduce(self, op: Op, axes: &[usize], keepdim: bool) -> Tensor {
        let r = self.prim(op);
        if keepdim {
            return r;
        }
        let s: Vec<usize> = self
            .shape()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect();
        r.reshape(&s)
    }

    /// Sum over `axes` (all axes when empty).
    pub fn sum(self, axes: &[isize], keepdim: bool) -> Tensor {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        let Some(axes) = self.reduce_axes("sum", if axes.is_empty() { &all } else { axes }) else {
            return Tensor::poisoned(self.graph);
        };
        if axes.is_empty() {
            return self;
        }
        self.reduce(Op::ReduceSum { axes: axes.clone() }, &axes, keepdim)
    }
    /// Mean over `axes` (all axes when empty).
    pub fn mean(self, axes: &[isize], keepdim: bool) -> Tensor {
        let s = self.shape();
        let n: usize = if axes.is_empty() {
            numel(&s)
        } else {
            axes.iter()
                .filter_map(|&a| axis_of(a, s.len()))
                .map(|a| s[a])
                .product()
        };
        self.sum(axes, keepdim) / n as f64
    }
    /// Population variance (PyTorch `correction=0`) over `axes`.
    pub fn var(self, axes: &[isize], keepdim: bool) -> Tensor {
        let d = self - self.mean(axes, true);
        (d * d).mean(axes, keepdim)
    }
    /// Maximum over `axes` (all axes when empty).
    pub fn max(self, axes: &[isize], keepdim: bool) -> Tensor {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        let Some(axes) = self.reduce_axes("max", if axes.is_empty() { &all } else { axes }) else {
            return Tensor::poisoned(self.graph);
        };
        if axes.is_empty() {
            return self;
        }
        self.reduce(Op::ReduceMax { axes: axes.clone() }, &axes, keepdim)
    }
    /// Minimum over `axes` (all axes when empty).
    pub fn min(self, axes: &[isize], keepdim: bool) -> Tensor {
        -((-self).max(axes, keepdim))
    }
    /// Index of the first maximum along `axis` (i32).
    pub fn argmax(self, axis: isize, keepdim: bool) -> Tensor {
        let Some(a) = self.axis("argmax", axis) else {
            return Tensor::poisoned(self.graph);
        };
        self.reduce(Op::ArgMax { axis: a }, &[a], keepdim)
    }

    // ----- movement -----

    pub fn reshape(self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self;
        }
        self.prim(Op::Reshape {
            shape: shape.to_vec(),
        })
    }
    /// Collapses all axes from `axis` on into one.
    pub fn flatten_from(self, axis: usize) -> Tensor {
        let s = self.shape();
        if axis >= s.len() {
            return self.fail(
                "flatten",
                format!("axis {axis} out of range for {}", fmt_shape(&s)),
            );
        }
        let mut t = s[..axis].to_vec();
        t.push(s[axis..].iter().product());
        self.reshape(&t)
    }
    pub fn permute(self, perm: &[usize]) -> Tensor {
        if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == self.rank() {
            return self;
        }
        self.prim(Op::Permute {
            perm: perm.to_vec(),
        })
    }
    /// Swaps two axes (negative counts from the end).
    pub fn transpose(self, a: isize, b: isize) -> Tensor {
        let r = self.rank();
        let (Some(a), Some(b)) = (self.axis("transpose", a), self.axis("transpose", b)) else {
            return Tensor::poisoned(self.graph);
        };
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }
    /// `x[start..end:step]` along one axis.
    pub fn slice(self, axis: isize, start: usize, end: usize, step: usize) -> Tensor {
        let s = self.shape();
        let Some(a) = self.axis("slice", axis) else {
            return Tensor::poisoned(self.graph);
        };
        let mut st = vec![0; s.len()];
        let mut li = s.clone();
        let mut sd = vec![1; s.len()];
        st[a] = start;
        li[a] = end.min(s[a]);
        sd[a] = step;
        self.prim(Op::Slice {
            start: st,
            limit: li,
            stride: sd,
        })
    }
    /// Constant padding: `(low, high)` per axis.
    pub fn pad(self, pads: &[(usize, usize)], value: f64) -> Tensor {
        let r = self.rank();
        if pads.len() != r {
            return self.fail(
                "pad",
                format!("need {r} (low, high) pairs, got {}", pads.len()),
            );
        }
        self.prim(Op::Pad {
            lo: pads.iter().map(|p| p.0).collect(),
            hi: pads.iter().map(|p| p.1).collect(),
            interior: vec![0; r],
            value,
        })
    }
    /// Joins tensors along `axis` (each padded with zeros into place, then summed).
    pub fn concat(parts: &[Tensor], axis: isize) -> Tensor {
        let first = parts[0];
        let Some(a) = first.axis("concat", axis) else {
            return Tensor::poisoned(first.graph);
        };
        let total: usize = parts
            .iter()
            .map(|p| p.shape().get(a).copied().unwrap_or(0))
            .sum();
        let mut acc: Option<Tensor> = None;
        let mut off = 0;
        for &p in parts {
            let s = p.shape();
            if s.len() != first.rank()
                || s.iter()
                    .enumerate()
                    .any(|(i, &d)| i != a && d != first.shape()[i])
            {
                return first.fail(
                    "concat",
                    format!(
                        "part {} does not match {} outside axis {a}",
                        fmt_shape(&s),
                        fmt_shape(&first.shape())
                    ),
                );
            }
            let mut pads = vec![(0, 0); s.len()];
            pads[a] = (off, total - off - s[a]);
            off += s[a];
            let padded = p.pad(&pads, 0.0);
            acc = Some(match acc {
                None => padded,
                Some(x) => x + padded,
            });
        }
        acc.unwrap_or(first)
    }
    /// Reverses `axis`.
    pub fn flip(self, axis: usize) -> Tensor {
        let n = self.shape().get(axis).copied().unwrap_or(0);
        let idx: Vec<f64> = (0..n).rev().map(|i| i as f64).collect();
        let idx = self.source(Op::Const {
            value: Literal::Data(std::sync::Arc::new(idx)),
            shape: vec![n],
            dtype: DType::I32,
        });
        Tensor::apply(Op::Gather { axis }, &[self, idx])
    }
    /// `take(self, idx, axis)`: rows of `self` picked by the i32 tensor `idx`.
    pub fn gather(self, idx: Tensor, axis: isize) -> Tensor {
        let Some(a) = self.axis("gather", axis) else {
            return Tensor::poisoned(self.graph);
        };
        Tensor::apply(Op::Gather { axis: a }, &[self, idx])
    }
    /// One-hot encoding of i32 class indices along a new last axis.
    pub fn one_hot(self, classes: usize, dtype: DType) -> Tensor {
        let mut s = self.shape();
        s.push(classes);
        let iota = self.source(Op::Iota {
            shape: s.clone(),
            axis: s.len() - 1,
            dtype: DType::I32,
        });
        let mut ks = self.shape();
        ks.push(1);
        iota.eq(self.reshape(&ks).expand(&s)).cast(dtype)
    }

    // ----- linear algebra -----

    /// Matrix product with broadcast batch axes (`[..., M, K] x [..., K, N]`).
    pub fn matmul(self, rhs: Tensor) -> Tensor {
        let (a, b) = (self.shape(), rhs.shape());
        if a.len() < 2 || b.len() < 2 {
            return self.fail(
                "matmul",
                format!(
                    "operands must have rank ≥ 2: {} x {}",
                    fmt_shape(&a),
                    fmt_shape(&b)
                ),
            );
        }
        if a[a.len() - 1] != b[b.len() - 2] {
            return self.fail(
                "matmul",
                format!(
                    "inner dimensions differ: {} x {}",
                    fmt_shape(&a),
                    fmt_shape(&b)
                ),
            );
        }
        let Some(batch) = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2]) else {
            return self.fail(
                "matmul",
                format!(
                    "batch dimensions do not broadcast: {} x {}",
                    fmt_shape(&a),
                    fmt_shape(&b)
                ),
            );
        };
        let full = |s: &[usize]| {
            let mut f = batch.clone();
            f.extend_from_slice(&s[s.len() - 2..]);
            f
        };
        Tensor::apply(Op::MatMul, &[self.expand(&full(&a)), rhs.expand(&full(&b))])
    }
    /// 2-D convolution (NCHW, OIHW) with full control of the parameters.
    pub fn conv(self, w: Tensor, p: &ConvParams) -> Tensor {
        Tensor::apply(Op::Conv(p.clone()), &[self, w])
    }
    /// 2-D convolution with symmetric stride, padding and dilation.
    pub fn conv2d(
        self,
        w: Tensor,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Tensor {
        let p = padding as i64;
        self.conv(
            w,
            &ConvParams {
                stride: [stride; 2],
                padding: [(p, p); 2],
                dilation: [dilation; 2],
                groups,
                kind: ConvKind::Forward,
            },
        )
    }
    /// Max pooling over `k×k` windows of an NCHW tensor (padding with −∞, as PyTorch).
    pub fn max_pool2d(self, k: usize, stride: usize, padding: usize) -> Tensor {
        let s = self.shape();
        if s.len() != 4 || k == 0 || stride == 0 || s[2] + 2 * padding < k || s[3] + 2 * padding < k
        {
            return self.fail("max_pool2d", format!("window {k} stride {stride} padding {padding} does not fit input {} (need [N,C,H,W])", fmt_shape(&s)));
        }
        let x = if padding > 0 {
            self.pad(
                &[(0, 0), (0, 0), (padding, padding), (padding, padding)],
                f64::NEG_INFINITY,
            )
        } else {
            self
        };
        let (h, w) = (s[2] + 2 * padding, s[3] + 2 * padding);
        let (ho, wo) = ((h - k) / stride + 1, (w - k) / stride + 1);
        let mut acc: Option<Tensor> = None;
        for i in 0..k {
            for j in 0..k {
                let win = x.prim(Op::Slice {
                    start: vec![0, 0, i, j],
                    limit: vec![
                        s[0],
                        s[1],
                        i + (ho - 1) * stride + 1,
                        j + (wo - 1) * stride + 1,
                    ],
                    stride: vec![1, 1, stride, stride],
                });
                acc = Some(match acc {
                    None => win,
                    Some(a) => a.maximum(win),
                });
            }
        }
        acc.unwrap_or(self)
    }
    /// Average pooling over `k×k` windows (zero padding counted, PyTorch's default), as a
    /// depthwise convolution with weights `1/k²`.
    pub fn avg_pool2d(self, k: usize, stride: usize, padding: usize) -> Tensor {
        let s = self.shape();
        if s.len() != 4 || k == 0 || stride == 0 {
            return self.fail(
                "avg_pool2d",
                format!(
                    "window {k} stride {stride} does not fit input {} (need [N,C,H,W])",
                    fmt_shape(&s)
                ),
            );
        }
        let w = self.full(&[s[1], 1, k, k], 1.0 / (k * k) as f64);
        self.conv2d(w, stride, padding, 1, s[1])
    }

    // ----- randomness -----

    /// Philox random bits (i32) of `shape`; `self` is the i32 `[2]` key `(seed, step)`.
    pub fn random_bits(self, shape: &[usize], stream: u32) -> Tensor {
        self.prim(Op::RandomBits {
            shape: shape.to_vec(),
            stream,
        })
    }
    /// Uniform samples in `[0, 1)` of `dtype` from the key `self`.
    pub fn random_uniform(self, shape: &[usize], stream: u32, dtype: DType) -> Tensor {
        // bits ∈ [−2³¹, 2³¹) ↦ (bits + 2³¹) / 2³², computed in f64 (exact), clamped below 1 after rounding
        let u = (self.random_bits(shape, stream).cast(DType::F64) + 2f64.powi(31)) * 2f64.powi(-32);
        let u = u.cast(dtype);
        u.minimum(
            1.0 - if dtype == DType::F64 {
                f64::EPSILON / 2.0
            } else {
                f32::EPSILON as f64 / 2.0
            },
        )
    }
}

/// Something usable as the second operand of a tensor operation: a tensor, or an `f64` scalar that
/// takes the tensor's dtype. (Only `f64`, so that float literals need no annotation.)
pub trait IntoOperand {
    fn into_operand(self, like: Tensor) -> Tensor;
}
impl IntoOperand for Tensor {
    fn into_operand(self, _: Tensor) -> Tensor {
        self
    }
}
impl IntoOperand for f64 {
    fn into_operand(self, like: Tensor) -> Tensor {
        like.scalar(self)
    }
}

macro_rules! impl_binop {
    ($tr:ident, $m:ident, $op:expr) => {
        impl $tr<Tensor> for Tensor {
            type Output = Tensor;
            fn $m(self, rhs: Tensor) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl $tr<f64> for Tensor {
            type Output = Tensor;
            fn $m(self, rhs: f64) -> Tensor {
                self.binary($op, self.scalar(rhs))
            }
        }
        impl $tr<Tensor> for f64 {
            type Output = Tensor;
            fn $m(self, rhs: Tensor) -> Tensor {
                rhs.scalar(self).binary($op, rhs)
            }
        }
    };
}
impl_binop!(Add, add, Op::Add);
impl_binop!(Sub, sub, Op::Sub);
impl_binop!(Mul, mul, Op::Mul);
impl_binop!(Div, div, Op::Div);

impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.prim(Op::Neg)
    }
}
