//! `Graph`: the SSA list of primitive nodes, and `GraphBuilder`: the context in which symbolic
//! [`Tensor`]s are created.
//!
//! Nodes are stored in topological order (an operand's id is always smaller than its user's), so
//! every pass and interpreter is a single forward walk.

use crate::dtype::{fmt_shape, DType};
use crate::error::{Error, Result};
use crate::op::{Literal, Op};
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Index of a node in its [`Graph`].
pub type NodeId = usize;

/// Shape and dtype of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorType {
    pub fn new(shape: &[usize], dtype: DType) -> Self {
        TensorType {
            shape: shape.to_vec(),
            dtype,
        }
    }
    /// `f32[2,3]`
    pub fn describe(&self) -> String {
        format!("{}{}", self.dtype, fmt_shape(&self.shape))
    }
}

/// One primitive application. `ty` is the result type the shape rule computed for `op` on `inputs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub ty: TensorType,
}

/// A dataflow graph of primitives with designated outputs. Plain data: `Clone + Send`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<NodeId>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a node after checking its operands with the op's shape rule.
    pub fn push(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let mut tys = Vec::with_capacity(inputs.len());
        for &i in inputs {
            let n = self.nodes.get(i).ok_or_else(|| {
                Error::InvalidGraph(format!(
                    "{} refers to node %{i}, which does not exist",
                    op.name()
                ))
            })?;
            tys.push(&n.ty);
        }
        let ty = crate::ops::infer(&op, &tys)?;
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            ty,
        });
        Ok(self.nodes.len() - 1)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// For each node, the nodes that use it as an operand (with repetition).
    pub fn users(&self) -> Vec<Vec<NodeId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for (id, n) in self.nodes.iter().enumerate() {
            for &i in &n.inputs {
                users[i].push(id);
            }
        }
        users
    }

    /// The `Input` nodes in order of appearance: the order an executable expects its feeds.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Input { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    /// Every persistent buffer the graph reads or writes, with its type, sorted by name.
    pub fn states(&self) -> Vec<(String, TensorType)> {
        let mut m: std::collections::BTreeMap<String, TensorType> = Default::default();
        for n in &self.nodes {
            match &n.op {
                Op::State { name, .. } => {
                    m.insert(name.clone(), n.ty.clone());
                }
                Op::Assign { name } => {
                    m.insert(name.clone(), self.nodes[n.inputs[0]].ty.clone());
                }
                _ => {}
            }
        }
        m.into_iter().collect()
    }
}

/// What a builder holds: the graph being built and the first error met while building it.
#[derive(Default)]
pub(crate) struct BuildState {
    pub graph: Graph,
    pub error: Option<Error>,
}

static NEXT_GRAPH_ID: AtomicU32 = AtomicU32::new(1);

thread_local! {
    // Tensors are `Copy` handles (graph id, node id); the graphs they point into live here, so
    // operator overloading needs no reference to the builder. Building is single-threaded, the
    // finished `Graph` is plain data.
    static BUILDERS: RefCell<HashMap<u32, BuildState>> = RefCell::new(HashMap::new());
}

/// Runs `f` on the build state of graph `id`.
///
/// # Panics
/// When the builder was already finished or dropped, or belongs to another thread: using a tensor
/// after its graph is gone is a programming error, like indexing past the end of a `Vec`.
pub(crate) fn with_builder<R>(id: u32, f: impl FnOnce(&mut BuildState) -> R) -> R {
    BUILDERS.with(|b| {
        let mut b = b.borrow_mut();
        let st = b.get_mut(&id).unwrap_or_else(|| {
            panic!("tensor of graph #{id} used after its GraphBuilder was finished or dropped")
        });
        f(st)
    })
}

/// The context in which [`Tensor`]s are built. Operations on tensors append primitive nodes; a
/// shape error does not panic: it is recorded, the result is a poisoned tensor, and
/// [`GraphBuilder::finish`] (or [`GraphBuilder::check`]) returns the first error.
///
/// ```
/// use lamina_core::{GraphBuilder, DType};
/// let b = GraphBuilder::new();
/// let x = b.input("x", &[2, 3], DType::F32);
/// let y = (x * 2.0).relu().sum(&[1], false);
/// let g = b.finish(&[y]).unwrap();
/// assert_eq!(g.node(g.outputs[0]).ty.shape, vec![2]);
///
/// let b = GraphBuilder::new();
/// let a = b.input("a", &[2, 3], DType::F32);
/// let c = b.input("c", &[4, 3], DType::F32);
/// let err = b.finish(&[a + c]).unwrap_err().to_string();
/// assert!(err.contains("add") && err.contains("[2,3]") && err.contains("[4,3]"), "{err}");
/// ```
pub struct GraphBuilder {
    id: u32,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    pub fn new() -> Self {
        let id = NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed);
        BUILDERS.with(|b| b.borrow_mut().insert(id, BuildState::default()));
        GraphBuilder { id }
    }

    /// Continues building on an existing graph (its nodes keep their ids).
    pub fn from_graph(graph: Graph) -> Self {
        let b = Self::new();
        with_builder(b.id, |st| st.graph = graph);
        b
    }

    /// A handle to node `id` of the graph being built.
    pub fn tensor(&self, id: NodeId) -> Tensor {
        Tensor::from_parts(self.id, id)
    }

    /// Declares a value fed at each run.
    pub fn input(&self, name: &str, shape: &[usize], dtype: DType) -> Tensor {
        self.source(Op::Input {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Reads the persistent buffer `name`.
    pub fn state(&self, name: &str, shape: &[usize], dtype: DType) -> Tensor {
        self.source(Op::State {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A constant tensor with every element equal to `value`.
    pub fn full(&self, shape: &[usize], value: f64, dtype: DType) -> Tensor {
        self.source(Op::Const {
            value: Literal::Splat(value),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A scalar constant.
    pub fn scalar(&self, value: f64, dtype: DType) -> Tensor {
        self.full(&[], value, dtype)
    }

    /// A constant with the given values (row-major, as f64).
    pub fn constant(&self, shape: &[usize], values: Vec<f64>, dtype: DType) -> Tensor {
        if values.len() != crate::dtype::numel(shape) {
            return self.fail(Error::Shape {
                op: "const".into(),
                msg: format!(
                    "shape {} needs {} values, got {}",
                    fmt_shape(shape),
                    crate::dtype::numel(shape),
                    values.len()
                ),
            });
        }
        self.source(Op::Const {
            value: Literal::Data(std::sync::Arc::new(values)),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Element indices along `axis` of `shape`.
    pub fn iota(&self, shape: &[usize], axis: usize, dtype: DType) -> Tensor {
        self.source(Op::Iota {
            shape: shape.to_vec(),
            axis,
            dtype,
        })
    }

    fn source(&self, op: Op) -> Tensor {
        Tensor::emit_in(self.id, op, &[])
    }

    fn fail(&self, e: Error) -> Tensor {
        with_builder(self.id, |st| {
            if st.error.is_none() {
                st.error = Some(e)
            }
        });
        Tensor::poisoned(self.id)
    }

    /// The first error recorded so far, if any.
    pub fn check(&self) -> Result<()> {
        with_builder(self.id, |st| match &st.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        })
    }

    /// A copy of the graph built so far (outputs unset).
    pub fn snapshot(&self) -> Graph {
        with_builder(self.id, |st| st.graph.clone())
    }

    /// Ends building: the graph with `outputs`, or the first error recorded while building.
    pub fn finish(self, outputs: &[Tensor]) -> Result<Graph> {
        self.check()?;
        let mut ids = Vec::with_capacity(outputs.len());
        for t in outputs {
            ids.push(t.node_in(self.id)?);
        }
        let mut g = with_builder(self.id, |st| std::mem::take(&mut st.graph));
        g.outputs = ids;
        Ok(g)
    }
}

impl Drop for GraphBuilder {
    fn drop(&mut self) {
        // `try_with`: dropping during thread teardown must not panic.
        let _ = BUILDERS.try_with(|b| b.borrow_mut().remove(&self.id));
    }
}
