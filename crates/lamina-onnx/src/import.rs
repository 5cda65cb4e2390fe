//! ONNX import: a serialised `ModelProto` becomes a [`ModelSpec`] of built-in layers plus their
//! weights by parameter path.
//!
//! Two routes, after the same checks of the file:
//! - a model written by lamina's [`crate::export`] carries its spec in the metadata entry
//!   [`crate::SPEC_METADATA_KEY`]: the spec is rebuilt from it (custom layers through a
//!   [`LayerRegistry`]), with the graph's batch size; every parameter is read from the
//!   initializer of the same path, and the graph must be the one lamina exports for that spec;
//! - any other model (a `torch.onnx.export`, say) must be a chain of layers: each node reads the
//!   previous layer's output plus constants, and node patterns map to layers (`Gemm`, or `MatMul`
//!   then `Add` → Dense; `Conv` → Conv2D; `MaxPool`/`AveragePool`/`GlobalAveragePool` → pools;
//!   `BatchNormalization` → BatchNorm; `Flatten`/`Reshape` → Flatten/Reshape; `Sigmoid` then
//!   `Mul` with its input → Swish; Relu, Sigmoid, Tanh, LeakyRelu, Elu, Softmax; `Identity`,
//!   `Dropout` and `Constant` need no layer).
//!
//! Hostile files fail with an error naming the problem, never a panic: protobuf that does not
//! decode, more than [`MAX_NODES`] nodes, an opset outside [`OPSETS`], an operator import does not
//! know (named with its node), a value read but never defined, a cycle, external tensor data, a
//! tensor whose dims overflow or disagree with its data. Sizes declared in the file are checked
//! against the bytes present before anything is allocated, and everything import allocates for
//! tensors (constants folded, weights transposed) is charged against the file's size, so a small
//! file cannot make it allocate much more than itself.

use crate::proto::*;
use crate::SPEC_METADATA_KEY;
use lamina_core::{dtype::fmt_shape, Error, HostTensor, Result};
use lamina_nn::layers::{
    Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Elu, Flatten, LeakyRelu, MaxPool2D, Reshape,
    Softmax,
};
use lamina_nn::{Layer, LayerRegistry, ModelBuilder, ModelSpec};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::rc::Rc;

/// Most nodes a graph may have (lamina's own exports of the example and benchmark models have a
/// few hundred); a larger graph is rejected before any other work.
pub const MAX_NODES: usize = 10_000;

/// Versions of the default ONNX operator set that import reads. Before 13, `Softmax` and
/// `Flatten`-like coercions had other semantics.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// Operators the layer patterns read (a PyTorch-style chain of layers).
const LAYER_OPS: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Conv",
    "Relu",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Softmax",
    "Flatten",
    "Reshape",
    "Identity",
    "Dropout",
    "Constant",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
];

/// Further operators lamina's exporter writes (read only in files that carry a lamina spec).
const EXPORT_OPS: &[&str] = &[
    "Neg",
    "Reciprocal",
    "Sqrt",
    "Exp",
    "Log",
    "Tanh",
    "Erf",
    "Sub",
    "Div",
    "Max",
    "Less",
    "Equal",
    "Where",
    "Cast",
    "ReduceSum",
    "ReduceMax",
    "ArgMax",
    "Transpose",
    "Expand",
    "Slice",
    "Pad",
    "Gather",
    "Not",
    "And",
    "ConstantOfShape",
];

/// A model read from ONNX: its spec and the value of every parameter and buffer, by path
/// (`conv1.weight` `[out, in, k, k]`, `fc.weight` `[out, in]`, `bn.running_mean`, as in a
/// PyTorch `state_dict` and a lamina checkpoint).
///
/// To run it: `lamina_train::Inferencer::from_weights(spec, weights, DType::F32, Device::Cpu)`;
/// to train it further: `ModelTrainer::new(&spec, config)` then `set_state(path, tensor)` per
/// weight (which is what `lamina import-onnx` does before writing a checkpoint).
#[derive(Clone, Debug)]
pub struct ImportedModel {
    /// The layers, with the input shape of the ONNX graph (a symbolic batch size becomes 1).
    pub spec: ModelSpec,
    /// Every parameter and buffer of `spec`, f32.
    pub weights: BTreeMap<String, HostTensor>,
}

/// Imports a serialised ONNX model with the built-in layers only (see the module docs).
pub fn import(bytes: &[u8]) -> Result<ImportedModel> {
    import_with(bytes, &LayerRegistry::new())
}

/// [`import`] of the file at `path`; errors name the file.
pub fn import_file(path: impl AsRef<Path>) -> Result<ImportedModel> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Io(format!("reading ONNX model {}: {e}", path.display())))?;
    import(&bytes).map_err(|e| Error::Spec(format!("{}: {e}", path.display())))
}

/// [`import`], building the custom layers a lamina spec in the metadata names through
/// `registry`.
pub fn import_with(bytes: &[u8], registry: &LayerRegistry) -> Result<ImportedModel> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| fail(format!("not an ONNX model: protobuf decoding failed ({e})")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph"))?;
    check_opset(&model)?;
    let order = check_graph(graph)?;
    let mut budget = Budget(bytes.len());
    let mut consts: HashMap<String, Rc<Const>> = HashMap::new();
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        let c = tensor_value(t, &name)?;
        consts.insert(name, Rc::new(c));
    }
    let (input, input_shape) = graph_input(graph, &consts)?;
    let spec_json = model
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some(SPEC_METADATA_KEY))
        .and_then(|p| p.value.as_deref());
    if let Some(json) = spec_json {
        let m = from_lamina_spec(json, registry, &input_shape, &consts, &mut budget)?;
        same_graph_as_export(graph, &m, input_shape[0])?;
        return Ok(m);
    }
    let mut chain = Chain {
        consts,
        builder: ModelBuilder::new(&input_shape),
        n_layers: 0,
        weights: BTreeMap::new(),
        names: HashMap::new(),
        shape: input_shape.clone(),
        cur: input,
        pending: None,
        budget,
    };
    for &i in &order {
        chain.node(&graph.node[i], i)?;
    }
    chain.finish(graph)
}

fn fail(msg: impl std::fmt::Display) -> Error {
    Error::Spec(format!("ONNX import: {msg}"))
}

/// Bytes import may still allocate for tensors; starts at the file's size.
struct Budget(usize);

impl Budget {
    fn charge(&mut self, bytes: usize, what: &str) -> Result<()> {
        if bytes > self.0 {
            return Err(fail(format!(
                "{what} would allocate {bytes} bytes, more than the file itself holds \
                 (tensors shared by many layers or folded many times)"
            )));
        }
        self.0 -= bytes;
        Ok(())
    }
}

/// "node 'name' (Op)", or the node's index when it has no name.
fn label(node: &NodeProto, index: usize) -> String {
    let op = node.op_type.as_deref().unwrap_or("");
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => format!("node '{n}' ({op})"),
        _ => format!("node #{index} ({op})"),
    }
}

fn is_default_domain(d: Option<&str>) -> bool {
    matches!(d, None | Some("") | Some("ai.onnx"))
}

fn check_opset(model: &ModelProto) -> Result<()> {
    let v = model
        .opset_import
        .iter()
        .find(|o| is_default_domain(o.domain.as_deref()))
        .map(|o| o.version.unwrap_or(0))
        .ok_or_else(|| {
            fail("the model imports no version of the default ONNX operator set (opset_import)")
        })?;
    if !OPSETS.contains(&v) {
        return Err(fail(format!(
            "opset {v} is not supported: import reads opsets {} to {} of the default domain",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    Ok(())
}

/// Checks the graph's structure and returns its nodes in a topological order: node count,
/// operators, every value read defined exactly once, no cycle, one defined output.
fn check_graph(graph: &GraphProto) -> Result<Vec<usize>> {
    let n = graph.node.len();
    if n > MAX_NODES {
        return Err(fail(format!(
            "the graph has {n} nodes, more than the limit of {MAX_NODES}"
        )));
    }
    for (i, node) in graph.node.iter().enumerate() {
        let op = node.op_type.as_deref().unwrap_or("");
        let known = LAYER_OPS.contains(&op) || EXPORT_OPS.contains(&op);
        if !is_default_domain(node.domain.as_deref()) || !known {
            let domain = node.domain.as_deref().unwrap_or("");
            let full = if is_default_domain(Some(domain)) {
                op.to_string()
            } else {
                format!("{domain}::{op}")
            };
            return Err(fail(format!(
                "unsupported operator {full} ({})",
                label(node, i)
            )));
        }
    }
    let mut defined: HashSet<&str> = HashSet::new();
    for name in graph
        .input
        .iter()
        .filter_map(|v| v.name.as_deref())
        .chain(graph.initializer.iter().filter_map(|t| t.name.as_deref()))
    {
        defined.insert(name);
    }
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if defined.contains(out.as_str()) {
                return Err(fail(format!(
                    "{} writes '{out}', which is already a graph input or initializer",
                    label(node, i)
                )));
            }
            if let Some(&j) = producer.get(out.as_str()) {
                return Err(fail(format!(
                    "value '{out}' is defined twice: by {} and by {}",
                    label(&graph.node[j], j),
                    label(node, i)
                )));
            }
            producer.insert(out, i);
        }
    }
    // Kahn's algorithm: a node is ready once every node it reads from is placed.
    let mut waiting = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in graph.node.iter().enumerate() {
        for inp in node.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                waiting[i] += 1;
                readers[p].push(i);
            } else if !defined.contains(inp.as_str()) {
                return Err(fail(format!(
                    "{} reads '{inp}', which no node, graph input or initializer defines",
                    label(node, i)
                )));
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push_back(r);
            }
        }
    }
    if order.len() < n {
        let i = (0..n).find(|&i| waiting[i] > 0).unwrap_or(0);
        return Err(fail(format!(
            "the graph has a cycle: {} depends on its own output",
            label(&graph.node[i], i)
        )));
    }
    match graph.output.as_slice() {
        [out] => {
            let name = out.name.as_deref().unwrap_or("");
            if !defined.contains(name) && !producer.contains_key(name) {
                return Err(fail(format!(
                    "the graph output '{name}' is not defined by any node"
                )));
            }
        }
        outs => {
            return Err(fail(format!(
                "the graph has {} outputs; import takes models with exactly one",
                outs.len()
            )))
        }
    }
    Ok(order)
}

/// A constant's values: floats stay in their width, integers (shapes) widen to i64.
#[derive(Debug)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// A constant value: an initializer or the output of a `Constant` node.
#[derive(Debug)]
struct Const {
    dims: Vec<usize>,
    data: Rc<Data>,
}

impl Const {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    fn floats(&self, what: &str) -> Result<Vec<f32>> {
        match &*self.data {
            Data::F32(v) => Ok(v.clone()),
            Data::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            Data::I64(_) => Err(fail(format!("{what} holds integers, expected floats"))),
        }
    }

    fn ints(&self, what: &str) -> Result<&[i64]> {
        match &*self.data {
            Data::I64(v) => Ok(v),
            _ => Err(fail(format!("{what} holds floats, expected integers"))),
        }
    }
}

fn type_name(dt: i32) -> &'static str {
    match dt {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BFLOAT16",
        _ => "unknown",
    }
}

/// Decodes a tensor, checking its declared size against the bytes it carries first.
fn tensor_value(t: &TensorProto, name: &str) -> Result<Const> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(fail(format!(
            "tensor '{name}' keeps its data in an external file (data_location = EXTERNAL); \
             import reads self-contained models only"
        )));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut n: usize = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(fail(format!(
                "tensor '{name}' has a negative dimension in dims {:?}",
                t.dims
            )));
        }
        n = usize::try_from(d)
            .ok()
            .and_then(|d| n.checked_mul(d))
            .ok_or_else(|| {
                fail(format!(
                    "tensor '{name}': the element count of dims {:?} overflows",
                    t.dims
                ))
            })?;
        dims.push(d as usize);
    }
    let dt = t.data_type.unwrap_or(0);
    let width = match dt {
        data_type::FLOAT | data_type::INT32 => 4,
        data_type::DOUBLE | data_type::INT64 => 8,
        _ => {
            return Err(fail(format!(
                "tensor '{name}' has data type {dt} ({}); import reads FLOAT, DOUBLE, INT32 and \
                 INT64",
                type_name(dt)
            )))
        }
    };
    let data = if let Some(raw) = &t.raw_data {
        let need = n.checked_mul(width).ok_or_else(|| {
            fail(format!(
                "tensor '{name}': the byte size of dims {:?} overflows",
                t.dims
            ))
        })?;
        if raw.len() != need {
            return Err(fail(format!(
                "tensor '{name}' declares dims {:?} ({n} elements, {need} bytes of {}) but its \
                 raw_data holds {} bytes",
                t.dims,
                type_name(dt),
                raw.len()
            )));
        }
        match dt {
            data_type::FLOAT => Data::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            data_type::DOUBLE => Data::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
                    .collect(),
            ),
            data_type::INT32 => Data::I64(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            ),
            _ => Data::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
                    .collect(),
            ),
        }
    } else {
        let (held, field) = match dt {
            data_type::FLOAT => (t.float_data.len(), "float_data"),
            data_type::DOUBLE => (t.double_data.len(), "double_data"),
            data_type::INT32 => (t.int32_data.len(), "int32_data"),
            _ => (t.int64_data.len(), "int64_data"),
        };
        if held != n {
            return Err(fail(format!(
                "tensor '{name}' declares dims {:?} ({n} elements) but holds {held} values in \
                 {field}",
                t.dims
            )));
        }
        match dt {
            data_type::FLOAT => Data::F32(t.float_data.clone()),
            data_type::DOUBLE => Data::F64(t.double_data.clone()),
            data_type::INT32 => Data::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
            _ => Data::I64(t.int64_data.clone()),
        }
    };
    Ok(Const {
        dims,
        data: Rc::new(data),
    })
}

/// The one graph input that is not an initializer, with its shape (a symbolic first dimension,
/// the batch, becomes 1).
fn graph_input(
    graph: &GraphProto,
    consts: &HashMap<String, Rc<Const>>,
) -> Result<(String, Vec<usize>)> {
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| !consts.contains_key(v.name.as_deref().unwrap_or("")))
        .collect();
    let [input] = inputs.as_slice() else {
        let names: Vec<&str> = inputs
            .iter()
            .map(|v| v.name.as_deref().unwrap_or(""))
            .collect();
        return Err(fail(format!(
            "the graph has {} inputs besides its initializers ({names:?}); import takes models \
             with exactly one",
            inputs.len()
        )));
    };
    let name = input.name.clone().unwrap_or_default();
    let tt = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| fail(format!("graph input '{name}' is not a tensor")))?;
    let et = tt.elem_type.unwrap_or(0);
    if et != data_type::FLOAT {
        return Err(fail(format!(
            "graph input '{name}' has element type {et} ({}); import takes FLOAT inputs",
            type_name(et)
        )));
    }
    let dims = &tt
        .shape
        .as_ref()
        .ok_or_else(|| fail(format!("graph input '{name}' has no shape")))?
        .dim;
    let mut shape = Vec::with_capacity(dims.len());
    for (a, d) in dims.iter().enumerate() {
        match d.dim_value {
            Some(v) if v >= 1 => shape.push(v as usize),
            None if a == 0 => shape.push(1),
            _ => {
                return Err(fail(format!(
                    "graph input '{name}' has dimension {a} = {:?}; import needs fixed sizes \
                     ≥ 1 after the batch axis",
                    d.dim_value.map(|v| v.to_string()).or(d.dim_param.clone())
                )))
            }
        }
    }
    if shape.is_empty() {
        return Err(fail(format!(
            "graph input '{name}' is a scalar; import needs a batch axis"
        )));
    }
    let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    if numel.is_none_or(|n| n > 1 << 40) {
        return Err(fail(format!(
            "graph input '{name}' of shape {} has more than 2^40 elements",
            fmt_shape(&shape)
        )));
    }
    Ok((name, shape))
}

/// A file written by lamina's exporter: the spec from the metadata, every parameter from the
/// initializer of its path.
fn from_lamina_spec(
    json: &str,
    registry: &LayerRegistry,
    input_shape: &[usize],
    consts: &HashMap<String, Rc<Const>>,
    budget: &mut Budget,
) -> Result<ImportedModel> {
    let invalid = |e: &dyn std::fmt::Display| {
        fail(format!(
            "the lamina spec in the model's metadata is invalid: {e}"
        ))
    };
    // The spec takes the batch size the graph was exported with (`export`'s `batch`).
    let mut v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| invalid(&format!("malformed JSON ({e})")))?;
    if let Some(b) = v
        .get_mut("input_shape")
        .and_then(|s| s.as_array_mut())
        .and_then(|a| a.first_mut())
    {
        *b = input_shape[0].into();
    }
    let spec = ModelSpec::from_json(&v.to_string(), registry).map_err(|e| invalid(&e))?;
    if spec.input_shape[1..] != input_shape[1..] {
        return Err(fail(format!(
            "the graph input has shape {}, the lamina spec in the metadata expects {}",
            fmt_shape(input_shape),
            fmt_shape(&spec.input_shape)
        )));
    }
    let mut weights = BTreeMap::new();
    for p in spec.params() {
        let c = consts.get(&p.path).ok_or_else(|| {
            fail(format!(
                "parameter '{}' of the lamina spec has no initializer",
                p.path
            ))
        })?;
        if c.dims != p.shape {
            return Err(fail(format!(
                "'{}' has shape {}, expected {}",
                p.path,
                fmt_shape(&c.dims),
                fmt_shape(&p.shape)
            )));
        }
        weights.insert(p.path.clone(), host(c, &p.shape, &p.path, budget)?);
    }
    Ok(ImportedModel { spec, weights })
}

/// The graph must be the one lamina exports for the spec in the metadata (same operators in the
/// same order), so that a graph edited after export is not silently replaced by its old spec.
fn same_graph_as_export(graph: &GraphProto, m: &ImportedModel, batch: usize) -> Result<()> {
    let again = crate::export_model(&m.spec, &m.weights, Some(batch)).map_err(|e| {
        fail(format!(
            "the lamina spec in the metadata does not export: {e}"
        ))
    })?;
    let ops = |g: &GraphProto| -> Vec<String> {
        g.node
            .iter()
            .map(|n| n.op_type.clone().unwrap_or_default())
            .collect()
    };
    let (have, want) = (
        ops(graph),
        ops(again.graph.as_ref().expect("export writes a graph")),
    );
    if have != want {
        let k = have
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(have.len().min(want.len()));
        return Err(fail(format!(
            "the graph is not the one lamina exports for the spec in its metadata (it was changed \
             after export): node {k} is {}, expected {} ({} nodes, expected {})",
            have.get(k).map_or("missing", |s| s.as_str()),
            want.get(k).map_or("missing", |s| s.as_str()),
            have.len(),
            want.len()
        )));
    }
    Ok(())
}

/// A constant as an f32 tensor of `shape` (same element count), charged to the budget.
fn host(c: &Const, shape: &[usize], what: &str, budget: &mut Budget) -> Result<HostTensor> {
    if c.numel() != shape.iter().product::<usize>() {
        return Err(fail(format!(
            "'{what}' has shape {}, expected {}",
            fmt_shape(&c.dims),
            fmt_shape(shape)
        )));
    }
    budget.charge(4 * c.numel(), what)?;
    HostTensor::f32(shape, c.floats(what)?)
}

/// A layer whose node pattern may continue with the next node.
enum Pending {
    /// `Sigmoid(x)`: Swish if the next node is `Mul(x, Sigmoid(x))`.
    Sigmoid { input: String, name: String },
    /// `MatMul(x, W)`: Dense with a bias if the next node adds a constant of `[units]`.
    MatMul {
        name: String,
        weight: HostTensor,
        units: usize,
    },
}

/// The walk along a chain of layers.
struct Chain {
    consts: HashMap<String, Rc<Const>>,
    builder: ModelBuilder,
    n_layers: usize,
    weights: BTreeMap<String, HostTensor>,
    /// Layer names in use, with the last number appended to each base name.
    names: HashMap<String, usize>,
    /// Output shape of the last layer (the input shape before any).
    shape: Vec<usize>,
    /// The value the next layer must read: the output of the last one.
    cur: String,
    pending: Option<Pending>,
    budget: Budget,
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_int(node: &NodeProto, i: usize, name: &str, default: i64) -> Result<i64> {
    match attr(node, name) {
        None => Ok(default),
        Some(a) => a.i.ok_or_else(|| {
            fail(format!(
                "{}: attribute {name} is not an integer",
                label(node, i)
            ))
        }),
    }
}

fn attr_float(node: &NodeProto, i: usize, name: &str, default: f32) -> Result<f32> {
    match attr(node, name) {
        None => Ok(default),
        Some(a) => a.f.ok_or_else(|| {
            fail(format!(
                "{}: attribute {name} is not a float",
                label(node, i)
            ))
        }),
    }
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_string(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).and_then(|a| {
        a.s.as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    })
}

/// All equal entries of an attribute list (a square kernel, equal strides), or an error.
fn same(node: &NodeProto, i: usize, what: &str, v: &[i64], n: usize) -> Result<usize> {
    if v.len() != n || v.iter().any(|&x| x != v[0]) || v[0] < 0 {
        return Err(fail(format!(
            "{}: {what} {v:?} is not supported (lamina's 2-D layers take {n} equal, non-negative \
             values)",
            label(node, i)
        )));
    }
    Ok(v[0] as usize)
}

/// A name usable as a lamina layer name (no '.', not empty).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

impl Chain {
    fn konst(&self, name: &str) -> Option<Rc<Const>> {
        self.consts.get(name).cloned()
    }

    /// Constant input `k` of `node` with its name, if the node has one there.
    fn input(&self, node: &NodeProto, k: usize) -> Option<(Rc<Const>, String)> {
        let n = node.input.get(k).filter(|s| !s.is_empty())?;
        Some((self.konst(n)?, n.clone()))
    }

    /// A fresh layer name: from the weight's path (`fc1.weight` → `fc1`), else from the node name
    /// (`/conv1/Conv` → `conv1`), else from the layer kind.
    fn name(&mut self, node: &NodeProto, weight: Option<&str>, kind: &str) -> String {
        let from_weight = weight.and_then(|w| w.strip_suffix(".weight")).map(sanitize);
        let from_node = node.name.as_deref().and_then(|n| {
            let parts: Vec<&str> = n.split('/').filter(|p| !p.is_empty()).collect();
            (parts.len() >= 2).then(|| sanitize(&parts[..parts.len() - 1].join("_")))
        });
        let base = from_weight
            .or(from_node)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| kind.to_string());
        // `rng`, `optim` and `accum` name lamina's own checkpoint entries
        let reserved = ["rng", "optim", "accum"].contains(&base.as_str());
        let mut name = base.clone();
        while name == kind || reserved && name == base || self.names.contains_key(&name) {
            let k = self.names.entry(base.clone()).or_insert(0);
            *k += 1;
            name = format!("{base}{k}");
        }
        self.names.insert(name.clone(), 0);
        name
    }

    /// Appends a layer; its output shape comes from compiling it alone on the current shape (so
    /// a long chain costs linear time), and a layer that does not fit is an error naming it.
    fn push<L: Layer + Clone + 'static>(
        &mut self,
        layer: L,
        name: &str,
        params: Vec<(&str, HostTensor)>,
    ) -> Result<()> {
        let one = ModelBuilder::new(&self.shape)
            .layer(layer.clone(), name)
            .compile()
            .map_err(|e| fail(format!("layer '{name}' does not fit: {e}")))?;
        self.shape = one.output_shape;
        self.builder =
            std::mem::replace(&mut self.builder, ModelBuilder::new(&[])).layer(layer, name);
        self.n_layers += 1;
        for (p, t) in params {
            self.weights.insert(format!("{name}.{p}"), t);
        }
        Ok(())
    }

    /// A weight as an f32 tensor of `shape`.
    fn weight(&mut self, c: &Const, shape: &[usize], what: &str) -> Result<HostTensor> {
        host(c, shape, what, &mut self.budget)
    }

    /// `[rows, cols]` → `[cols, rows]`, charged to the budget.
    fn transposed(&mut self, c: &Const, what: &str) -> Result<HostTensor> {
        let (r, k) = (c.dims[0], c.dims[1]);
        let v = self.weight(c, &[r, k], what)?;
        let v = v.as_f32().expect("f32 weight");
        let t: Vec<f32> = (0..k * r).map(|i| v[(i % r) * k + i / r]).collect();
        HostTensor::f32(&[k, r], t)
    }

    fn flush(&mut self, p: Pending) -> Result<()> {
        match p {
            Pending::Sigmoid { name, .. } => self.push(Activation::Sigmoid, &name, vec![])?,
            Pending::MatMul {
                name,
                weight,
                units,
            } => self.push(
                Dense {
                    units,
                    use_bias: false,
                },
                &name,
                vec![("weight", weight)],
            )?,
        }
        Ok(())
    }

    /// Whether `node` completes the pending pattern (then it has been handled).
    fn absorb(&mut self, p: &mut Option<Pending>, node: &NodeProto) -> Result<bool> {
        let op = node.op_type.as_deref().unwrap_or("");
        let ins: Vec<&str> = node.input.iter().map(|s| s.as_str()).collect();
        let out = node.output.first().cloned().unwrap_or_default();
        match (p.as_ref(), op, ins.as_slice()) {
            (Some(Pending::Sigmoid { input, .. }), "Mul", &[a, b])
                if (a == input && b == self.cur) || (b == input && a == self.cur) =>
            {
                let Some(Pending::Sigmoid { name, .. }) = p.take() else {
                    unreachable!("matched above")
                };
                let name = if name.starts_with("sigmoid") {
                    self.names.remove(&name);
                    self.name(node, None, "swish")
                } else {
                    name
                };
                self.push(Activation::Swish, &name, vec![])?;
                self.cur = out;
                Ok(true)
            }
            (Some(Pending::MatMul { units, .. }), "Add", &[a, b])
                if a == self.cur || b == self.cur =>
            {
                let units = *units;
                let other = if a == self.cur { b } else { a };
                let Some(c) = self.konst(other) else {
                    return Ok(false);
                };
                if c.numel() != units || c.dims.len() > 2 || c.dims.last() != Some(&units) {
                    return Ok(false);
                }
                let Some(Pending::MatMul { name, weight, .. }) = p.take() else {
                    unreachable!("matched above")
                };
                let bias = self.weight(&c, &[units], other)?;
                self.push(
                    Dense {
                        units,
                        use_bias: true,
                    },
                    &name,
                    vec![("weight", weight), ("bias", bias)],
                )?;
                self.cur = out;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn node(&mut self, node: &NodeProto, i: usize) -> Result<()> {
        let op = node.op_type.as_deref().unwrap_or("");
        if !LAYER_OPS.contains(&op) {
            return Err(fail(format!(
                "{} is not part of a layer pattern import recognises (this file carries no \
                 lamina spec, so it must be a chain of built-in layers)",
                label(node, i)
            )));
        }
        let data: Vec<usize> = (0..node.input.len())
            .filter(|&k| !node.input[k].is_empty() && !self.consts.contains_key(&node.input[k]))
            .collect();
        if data.is_empty() {
            return self.fold(node, i);
        }
        let mut pending = self.pending.take();
        if self.absorb(&mut pending, node)? {
            return Ok(());
        }
        if let Some(p) = pending {
            self.flush(p)?;
        }
        if data != [0] || node.input[0] != self.cur {
            let v = &node.input[data[0]];
            let v = if *v == self.cur {
                &node.input[*data.last().expect("non-empty")]
            } else {
                v
            };
            return Err(fail(format!(
                "{} reads '{v}', which is not the output of the layer before ('{}'): import \
                 takes a chain of layers (no branches, residual connections or element-wise \
                 operations between layer outputs)",
                label(node, i),
                self.cur
            )));
        }
        self.layer(node, i, op)?;
        self.cur = node.output.first().cloned().unwrap_or_default();
        Ok(())
    }

    fn folded_input(&self, node: &NodeProto, i: usize, k: usize) -> Result<Rc<Const>> {
        self.input(node, k)
            .map(|(c, _)| c)
            .ok_or_else(|| fail(format!("{} has no input {k}", label(node, i))))
    }

    /// A node computing on constants only.
    fn fold(&mut self, node: &NodeProto, i: usize) -> Result<()> {
        let op = node.op_type.as_deref().unwrap_or("");
        let out = node.output.first().cloned().unwrap_or_default();
        let c = match op {
            "Constant" => {
                let a = node
                    .attribute
                    .first()
                    .ok_or_else(|| fail(format!("{} has no value attribute", label(node, i))))?;
                match a.name.as_deref().unwrap_or("") {
                    "value" => {
                        let t = a.t.as_ref().ok_or_else(|| {
                            fail(format!(
                                "{}: attribute value holds no tensor",
                                label(node, i)
                            ))
                        })?;
                        Rc::new(tensor_value(t, &out)?)
                    }
                    "value_float" => Rc::new(Const {
                        dims: vec![],
                        data: Rc::new(Data::F32(vec![a.f.unwrap_or(0.0)])),
                    }),
                    "value_floats" => Rc::new(Const {
                        dims: vec![a.floats.len()],
                        data: Rc::new(Data::F32(a.floats.clone())),
                    }),
                    "value_int" => Rc::new(Const {
                        dims: vec![],
                        data: Rc::new(Data::I64(vec![a.i.unwrap_or(0)])),
                    }),
                    "value_ints" => Rc::new(Const {
                        dims: vec![a.ints.len()],
                        data: Rc::new(Data::I64(a.ints.clone())),
                    }),
                    other => {
                        return Err(fail(format!(
                            "{}: attribute {other} is not supported",
                            label(node, i)
                        )))
                    }
                }
            }
            "Identity" | "Dropout" => self.folded_input(node, i, 0)?,
            "Reshape" => {
                let x = self.folded_input(node, i, 0)?;
                let s = self.folded_input(node, i, 1)?;
                let dims = resolve_shape(node, i, &x.dims, s.ints("Reshape's shape")?, false)?;
                Rc::new(Const {
                    dims,
                    data: x.data.clone(),
                })
            }
            _ => {
                return Err(fail(format!(
                    "{} computes on constants only; import folds Constant, Identity, Dropout and \
                     Reshape, not {op}",
                    label(node, i)
                )))
            }
        };
        self.consts.insert(out, c);
        Ok(())
    }

    /// A node reading the chain's current value: one layer (or none).
    fn layer(&mut self, node: &NodeProto, i: usize, op: &str) -> Result<()> {
        let lbl = label(node, i);
        let input = |this: &Self, k: usize| this.input(node, k);
        let needed = |this: &Self, k: usize, what: &str| {
            this.input(node, k)
                .ok_or_else(|| fail(format!("{lbl} has no {what} input")))
        };
        let shape = self.shape.clone();
        match op {
            "Gemm" => {
                if attr_int(node, i, "transA", 0)? != 0
                    || attr_float(node, i, "alpha", 1.0)? != 1.0
                    || attr_float(node, i, "beta", 1.0)? != 1.0
                {
                    return Err(fail(format!(
                        "{lbl}: only transA = 0, alpha = 1 and beta = 1 map to a Dense layer"
                    )));
                }
                if shape.len() != 2 {
                    return Err(fail(format!(
                        "{lbl} reads a value of shape {}, Gemm needs rank 2",
                        fmt_shape(&shape)
                    )));
                }
                let (b, bname) = needed(self, 1, "B")?;
                if b.dims.len() != 2 {
                    return Err(fail(format!("{lbl}: B has shape {}", fmt_shape(&b.dims))));
                }
                let w = if attr_int(node, i, "transB", 0)? != 0 {
                    self.weight(&b, &b.dims, &bname)?
                } else {
                    self.transposed(&b, &bname)?
                };
                let (units, fan_in) = (w.shape()[0], w.shape()[1]);
                if fan_in != shape[1] {
                    return Err(fail(format!(
                        "{lbl}: weight {bname} has shape {}, the input has {} features",
                        fmt_shape(w.shape()),
                        shape[1]
                    )));
                }
                let mut params = vec![("weight", w)];
                if let Some((c, cname)) = input(self, 2) {
                    if c.numel() != units || c.dims.last() != Some(&units) {
                        return Err(fail(format!(
                            "{lbl}: bias {cname} has shape {}, expected [{units}]",
                            fmt_shape(&c.dims)
                        )));
                    }
                    params.push(("bias", self.weight(&c, &[units], &cname)?));
                }
                let name = self.name(node, Some(&bname), "dense");
                let use_bias = params.len() == 2;
                self.push(Dense { units, use_bias }, &name, params)?;
            }
            "MatMul" => {
                let (b, bname) = needed(self, 1, "B")?;
                if shape.len() != 2 || b.dims.len() != 2 || b.dims[0] != shape[1] {
                    return Err(fail(format!(
                        "{lbl} multiplies {} by {}: only [batch, in] × [in, out] (a Dense layer) \
                         is imported",
                        fmt_shape(&shape),
                        fmt_shape(&b.dims)
                    )));
                }
                let weight = self.transposed(&b, &bname)?;
                let units = b.dims[1];
                let name = self.name(node, Some(&bname), "dense");
                self.pending = Some(Pending::MatMul {
                    name,
                    weight,
                    units,
                });
            }
            "Conv" => {
                let (w, wname) = needed(self, 1, "W")?;
                if w.dims.len() != 4 || shape.len() != 4 {
                    return Err(fail(format!(
                        "{lbl}: input {} and weight {}: only 2-D convolutions are imported",
                        fmt_shape(&shape),
                        fmt_shape(&w.dims)
                    )));
                }
                let auto_pad = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
                if auto_pad != "NOTSET" && auto_pad != "VALID" {
                    return Err(fail(format!("{lbl}: auto_pad {auto_pad} is not supported")));
                }
                let kernel = same(node, i, "kernel", &[w.dims[2] as i64, w.dims[3] as i64], 2)?;
                if let Some(ks) = attr_ints(node, "kernel_shape") {
                    if ks != [kernel as i64; 2] {
                        return Err(fail(format!(
                            "{lbl}: kernel_shape {ks:?} disagrees with weight {}",
                            fmt_shape(&w.dims)
                        )));
                    }
                }
                let stride = same(
                    node,
                    i,
                    "strides",
                    &attr_ints(node, "strides").unwrap_or(vec![1, 1]),
                    2,
                )?;
                let dilation = same(
                    node,
                    i,
                    "dilations",
                    &attr_ints(node, "dilations").unwrap_or(vec![1, 1]),
                    2,
                )?;
                let padding = same(
                    node,
                    i,
                    "pads",
                    &attr_ints(node, "pads").unwrap_or(vec![0; 4]),
                    4,
                )?;
                let groups = attr_int(node, i, "group", 1)?;
                if groups < 1 {
                    return Err(fail(format!("{lbl}: group {groups} must be ≥ 1")));
                }
                let out_channels = w.dims[0];
                let mut params = vec![("weight", self.weight(&w, &w.dims, &wname)?)];
                if let Some((b, bname)) = input(self, 2) {
                    params.push(("bias", self.weight(&b, &[out_channels], &bname)?));
                }
                let name = self.name(node, Some(&wname), "conv");
                let use_bias = params.len() == 2;
                let conv = Conv2D::new(out_channels, kernel, stride, padding as i64, use_bias)
                    .dilation(dilation)
                    .groups(groups as usize);
                self.push(conv, &name, params)?;
            }
            "MaxPool" | "AveragePool" => {
                let auto_pad = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
                if auto_pad != "NOTSET" && auto_pad != "VALID" {
                    return Err(fail(format!("{lbl}: auto_pad {auto_pad} is not supported")));
                }
                if attr_int(node, i, "ceil_mode", 0)? != 0 {
                    return Err(fail(format!("{lbl}: ceil_mode = 1 is not supported")));
                }
                if attr_int(node, i, "storage_order", 0)? != 0 {
                    return Err(fail(format!("{lbl}: storage_order = 1 is not supported")));
                }
                let ks = attr_ints(node, "kernel_shape")
                    .ok_or_else(|| fail(format!("{lbl} has no kernel_shape")))?;
                let kernel = same(node, i, "kernel_shape", &ks, 2)?;
                let stride = same(
                    node,
                    i,
                    "strides",
                    &attr_ints(node, "strides").unwrap_or(vec![1, 1]),
                    2,
                )?;
                same(
                    node,
                    i,
                    "dilations",
                    &attr_ints(node, "dilations").unwrap_or(vec![1, 1]),
                    2,
                )
                .and_then(|d| {
                    if d == 1 {
                        Ok(d)
                    } else {
                        Err(fail(format!(
                            "{lbl}: dilations other than 1 are not supported"
                        )))
                    }
                })?;
                let padding = same(
                    node,
                    i,
                    "pads",
                    &attr_ints(node, "pads").unwrap_or(vec![0; 4]),
                    4,
                )?;
                if op == "MaxPool" {
                    if node.output.get(1).is_some_and(|o| !o.is_empty()) {
                        return Err(fail(format!("{lbl}: the Indices output is not supported")));
                    }
                    let name = self.name(node, None, "maxpool");
                    self.push(
                        MaxPool2D {
                            kernel,
                            stride,
                            padding,
                        },
                        &name,
                        vec![],
                    )?;
                } else {
                    if padding > 0 && attr_int(node, i, "count_include_pad", 0)? == 0 {
                        return Err(fail(format!(
                            "{lbl}: padded average pooling must count the padding \
                             (count_include_pad = 1, PyTorch's default)"
                        )));
                    }
                    let name = self.name(node, None, "avgpool");
                    self.push(
                        AvgPool2D {
                            kernel,
                            stride,
                            padding,
                        },
                        &name,
                        vec![],
                    )?;
                }
            }
            "GlobalAveragePool" => {
                if shape.len() != 4 || shape[2] != shape[3] {
                    return Err(fail(format!(
                        "{lbl} on {}: only square [N, C, H, H] inputs are imported",
                        fmt_shape(&shape)
                    )));
                }
                let name = self.name(node, None, "avgpool");
                let k = shape[2];
                self.push(
                    AvgPool2D {
                        kernel: k,
                        stride: k,
                        padding: 0,
                    },
                    &name,
                    vec![],
                )?;
            }
            "BatchNormalization" => {
                if attr_int(node, i, "training_mode", 0)? != 0
                    || node.output.iter().skip(1).any(|o| !o.is_empty())
                {
                    return Err(fail(format!(
                        "{lbl}: training mode (running statistics as outputs) is not supported"
                    )));
                }
                if !(2..=4).contains(&shape.len()) {
                    return Err(fail(format!(
                        "{lbl} on {}: BatchNorm takes rank 2 to 4",
                        fmt_shape(&shape)
                    )));
                }
                let c = shape[1];
                let mut params = Vec::new();
                let mut wname = String::new();
                for (k, p) in ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .enumerate()
                {
                    let (v, vname) = needed(self, k + 1, p)?;
                    if k == 0 {
                        wname = vname.clone();
                    }
                    params.push((*p, self.weight(&v, &[c], &vname)?));
                }
                let eps = attr_float(node, i, "epsilon", 1e-5)? as f64;
                let momentum = 1.0 - attr_float(node, i, "momentum", 0.9)? as f64;
                let name = self.name(node, Some(&wname), "batchnorm");
                self.push(
                    BatchNorm {
                        eps,
                        momentum: momentum.clamp(0.0, 1.0),
                        affine: true,
                    },
                    &name,
                    params,
                )?;
            }
            "Relu" | "Tanh" => {
                let (act, kind) = if op == "Relu" {
                    (Activation::Relu, "relu")
                } else {
                    (Activation::Tanh, "tanh")
                };
                let name = self.name(node, None, kind);
                self.push(act, &name, vec![])?;
            }
            "Sigmoid" => {
                let name = self.name(node, None, "sigmoid");
                self.pending = Some(Pending::Sigmoid {
                    input: self.cur.clone(),
                    name,
                });
            }
            "LeakyRelu" => {
                let slope = attr_float(node, i, "alpha", 0.01)? as f64;
                let name = self.name(node, None, "leaky_relu");
                self.push(LeakyRelu { slope }, &name, vec![])?;
            }
            "Elu" => {
                let alpha = attr_float(node, i, "alpha", 1.0)? as f64;
                let name = self.name(node, None, "elu");
                self.push(Elu { alpha }, &name, vec![])?;
            }
            "Softmax" => {
                let axis = attr_int(node, i, "axis", -1)?;
                let r = shape.len() as i64;
                if axis < -r || axis >= r {
                    return Err(fail(format!(
                        "{lbl}: axis {axis} is out of range for shape {}",
                        fmt_shape(&shape)
                    )));
                }
                let name = self.name(node, None, "softmax");
                self.push(
                    Softmax {
                        axis: axis as isize,
                    },
                    &name,
                    vec![],
                )?;
            }
            "Flatten" => {
                if attr_int(node, i, "axis", 1)? != 1 {
                    return Err(fail(format!(
                        "{lbl}: only axis = 1 (flatten after the batch axis) is supported"
                    )));
                }
                let name = self.name(node, None, "flatten");
                self.push(Flatten, &name, vec![])?;
            }
            "Reshape" => {
                let (s, sname) = needed(self, 1, "shape")?;
                let allowzero = attr_int(node, i, "allowzero", 0)? != 0;
                let target = resolve_shape(node, i, &shape, s.ints(&sname)?, allowzero)?;
                if target[0] != shape[0] {
                    return Err(fail(format!(
                        "{lbl} reshapes {} to {}: the batch axis must stay",
                        fmt_shape(&shape),
                        fmt_shape(&target)
                    )));
                }
                if target != shape {
                    let name = self.name(node, None, "reshape");
                    if target.len() == 2 {
                        self.push(Flatten, &name, vec![])?;
                    } else {
                        self.push(
                            Reshape {
                                shape: target[1..].to_vec(),
                            },
                            &name,
                            vec![],
                        )?;
                    }
                }
            }
            "Identity" | "Dropout" => {
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(fail(format!(
                        "{lbl}: the dropout mask output is not supported"
                    )));
                }
                if let Some((t, _)) = input(self, 2) {
                    if t.ints("training_mode")
                        .map(|v| v.iter().any(|&b| b != 0))
                        .unwrap_or(true)
                    {
                        return Err(fail(format!("{lbl}: training_mode must be false")));
                    }
                }
            }
            _ => {
                return Err(fail(format!(
                    "{lbl} is not part of a layer pattern import recognises (an Add must follow \
                     a MatMul as its bias, a Mul must multiply x by Sigmoid(x))"
                )))
            }
        }
        Ok(())
    }

    fn finish(mut self, graph: &GraphProto) -> Result<ImportedModel> {
        if let Some(p) = self.pending.take() {
            self.flush(p)?;
        }
        let out = graph.output[0].name.as_deref().unwrap_or("");
        if out != self.cur {
            return Err(fail(format!(
                "the graph output '{out}' is not the end of the chain of layers ('{}')",
                self.cur
            )));
        }
        if self.n_layers == 0 {
            return Err(fail("the graph holds no layer"));
        }
        let spec = self.builder.compile().map_err(|e| {
            fail(format!(
                "the imported layers do not form a valid model: {e}"
            ))
        })?;
        for p in spec.params() {
            match self.weights.get(&p.path) {
                Some(t) if t.shape() == p.shape.as_slice() => {}
                other => {
                    return Err(fail(format!(
                        "parameter '{}' should have shape {}, import read {}",
                        p.path,
                        fmt_shape(&p.shape),
                        other.map_or("nothing".into(), |t| fmt_shape(t.shape()))
                    )))
                }
            }
        }
        Ok(ImportedModel {
            spec,
            weights: self.weights,
        })
    }
}

/// The target of a `Reshape` of a value of `dims` (0 copies the input's dimension unless
/// `allowzero`, one -1 takes what is left).
fn resolve_shape(
    node: &NodeProto,
    i: usize,
    dims: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>> {
    let total: usize = dims.iter().product();
    let bad = || {
        fail(format!(
            "{}: cannot reshape {} to {target:?}",
            label(node, i),
            fmt_shape(dims)
        ))
    };
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (a, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(a);
                out.push(1);
            }
            0 if !allowzero => out.push(*dims.get(a).ok_or_else(bad)?),
            t if t >= 1 => out.push(usize::try_from(t).map_err(|_| bad())?),
            _ => return Err(bad()),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(bad)?;
    if let Some(a) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad());
        }
        out[a] = total / known;
    } else if known != total {
        return Err(bad());
    }
    Ok(out)
}
