//! lamina-onnx: export of a model's inference forward pass as an ONNX model (opset 17, IR 8), and
//! import of ONNX models ([`import`]: lamina's own exports and PyTorch-style chains of layers)
//! into a [`ModelSpec`] plus weights.
//!
//! One mechanism covers built-in and custom layers alike: the model's eval-mode forward graph
//! ([`ModelSpec::forward_graph`]) is a graph of lamina primitives, and every primitive has an
//! ONNX translation here. Parameters and buffers (`Op::State`) become initializers named by their
//! dotted path (`dense1.weight`), the input is `"x"`, the output `"y"`.
//!
//! Not exportable, each with an error naming the primitive: `RandomBits`, `ScatterAdd` and
//! `Assign` and the gradient kinds of `Conv` (they only occur in training graphs), `Pad` with
//! interior padding and `Conv` with negative padding, and f16/bf16 constants. Shapes are static: the
//! batch size is fixed at export.
//!
//! Numerical agreement with onnxruntime: `cargo run -p lamina-onnx --example onnx_fixtures -- DIR`
//! then `python3 tools/golden/onnx_check.py DIR`.
//!
//! ```
//! use lamina_nn::ModelBuilder;
//! use lamina_core::DType;
//! let spec = ModelBuilder::new(&[1, 4]).dense(3, true, "dense").relu("relu").compile().unwrap();
//! let params = spec.initial_state(DType::F32).unwrap();
//! let bytes = lamina_onnx::export(&spec, &params, Some(2)).unwrap();
//! let back = lamina_onnx::import(&bytes).unwrap();
//! assert_eq!(back.weights, params);
//! assert_eq!(back.spec.input_shape, [2, 4]); // the batch size chosen at export
//! ```

#![warn(missing_docs)]

pub mod proto;

use lamina_core::{
    dtype::fmt_shape, numel, strides, ConvKind, ConvParams, DType, Error, Graph, HostData,
    HostTensor, Literal, Op, Result, StateMap, TensorType,
};
use lamina_nn::{Mode, ModelSpec};
use prost::Message;
use proto::*;
use std::collections::HashSet;
use std::path::Path;

/// The ONNX operator set the exported graph uses (ReduceMax still takes `axes` as an attribute).
pub const OPSET_VERSION: i64 = 17;
/// The ONNX IR version written in the model (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// Name of the graph input.
pub const INPUT_NAME: &str = "x";
/// Name of the graph output.
pub const OUTPUT_NAME: &str = "y";
/// Key of the model metadata entry where export stores the model spec (its JSON), so that
/// [`import`] restores exactly the layers that were exported, custom ones included.
pub const SPEC_METADATA_KEY: &str = "lamina.spec";

mod import;
pub use import::{import, import_file, import_with, ImportedModel, MAX_NODES, OPSETS};

/// Exports the inference forward pass of `spec` with parameter and buffer values `params` (by
/// path, as [`ModelSpec::initial_state`] or a checkpoint gives them) as a serialised ONNX
/// `ModelProto`.
///
/// `batch` fixes the batch dimension of the input; `None` uses the spec's own input batch size.
/// Shapes in the exported graph are static: lamina graphs bake every shape into their reshapes
/// and broadcasts.
pub fn export(
    spec: &ModelSpec,
    params: &StateMap<HostTensor>,
    batch: Option<usize>,
) -> Result<Vec<u8>> {
    Ok(export_model(spec, params, batch)?.encode_to_vec())
}

/// [`export`], written to `path`.
pub fn export_to_file(
    path: impl AsRef<Path>,
    spec: &ModelSpec,
    params: &StateMap<HostTensor>,
    batch: Option<usize>,
) -> Result<()> {
    let bytes = export(spec, params, batch)?;
    let path = path.as_ref();
    std::fs::write(path, bytes)
        .map_err(|e| Error::Io(format!("writing ONNX model {}: {e}", path.display())))
}

/// The eval-mode forward graph that [`export`] translates, after lamina's optimisation passes
/// (constant folding, CSE, DCE). Running it with a backend gives the values the ONNX model must
/// reproduce.
pub fn inference_graph(spec: &ModelSpec, batch: Option<usize>) -> Result<Graph> {
    let batch = batch.unwrap_or(spec.input_shape[0]);
    let g = spec.forward_graph(batch, Mode::Eval, DType::F32)?;
    lamina_core::passes::optimize(&g, false)
}

/// [`export`] before serialisation: the `ModelProto` itself.
pub fn export_model(
    spec: &ModelSpec,
    params: &StateMap<HostTensor>,
    batch: Option<usize>,
) -> Result<ModelProto> {
    let g = inference_graph(spec, batch)?;
    let mut graph = graph_to_onnx(&g, params)?;
    graph.name = Some("lamina".into());
    let layers: Vec<String> = spec
        .layers
        .iter()
        .map(|l| format!("{}:{}", l.name, l.type_name()))
        .collect();
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET_VERSION),
        }],
        producer_name: Some("lamina".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!("layers: {}", layers.join(", "))),
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto {
            key: Some(SPEC_METADATA_KEY.into()),
            value: Some(spec.to_json()),
        }],
    })
}

/// Translates a lamina graph with one input and one output into an ONNX `GraphProto`; `State`
/// reads take their values from `params`.
pub fn graph_to_onnx(g: &Graph, params: &StateMap<HostTensor>) -> Result<GraphProto> {
    if g.outputs.len() != 1 {
        return Err(Error::Spec(format!(
            "ONNX export: the graph must have exactly one output, it has {}",
            g.outputs.len()
        )));
    }
    let mut t = Translator::new(g);
    for id in 0..g.nodes.len() {
        t.node(id, params)?;
    }
    let out = g.outputs[0];
    let out_name = t.names[out].clone();
    if out_name != OUTPUT_NAME {
        // The output is a value with a name of its own (the input, a parameter, a constant).
        t.push("Identity", vec![out_name], OUTPUT_NAME.into(), vec![]);
    }
    let ty = &g.nodes[out].ty;
    t.graph.output.push(value_info(OUTPUT_NAME, ty)?);
    Ok(t.graph)
}

/// The ONNX element type of a lamina dtype.
fn onnx_type(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => data_type::FLOAT,
        DType::F64 => data_type::DOUBLE,
        DType::F16 => data_type::FLOAT16,
        DType::BF16 => data_type::BFLOAT16,
        DType::I32 => data_type::INT32,
        DType::Bool => data_type::BOOL,
    }
}

fn value_info(name: &str, ty: &TensorType) -> Result<ValueInfoProto> {
    Ok(ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(onnx_type(ty.dtype)),
                shape: Some(TensorShapeProto {
                    dim: ty
                        .shape
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: Some(d as i64),
                            ..Default::default()
                        })
                        .collect(),
                }),
            }),
            denotation: None,
        }),
        doc_string: None,
    })
}

/// Little-endian bytes of `values` stored as `dtype` (ONNX `raw_data`).
fn raw_bytes(values: impl Iterator<Item = f64>, dtype: DType, what: &str) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => values.flat_map(|v| (v as f32).to_le_bytes()).collect(),
        DType::F64 => values.flat_map(|v| v.to_le_bytes()).collect(),
        DType::I32 => values.flat_map(|v| (v as i32).to_le_bytes()).collect(),
        DType::Bool => values.map(|v| (v != 0.0) as u8).collect(),
        DType::F16 | DType::BF16 => {
            return Err(Error::Spec(format!(
                "ONNX export: {what} has dtype {dtype}, whose constants are not supported \
                 (export the model in f32)"
            )))
        }
    })
}

fn host_bytes(t: &HostTensor) -> Vec<u8> {
    match t.data() {
        HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints,
        ..Default::default()
    }
}

fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::STRING),
        s: Some(s.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::TENSOR),
        t: Some(t),
        ..Default::default()
    }
}

fn unsupported<T>(op: &str, why: &str) -> Result<T> {
    Err(Error::Spec(format!("ONNX export: {op} {why}")))
}

/// Splat constants with more elements than this become `ConstantOfShape` nodes rather than
/// initializers, so that a broadcast scalar does not cost a full tensor in the file.
const SPLAT_INLINE_MAX: usize = 16;

/// The state of one translation: the graph being written and the ONNX value name of each lamina
/// node.
struct Translator<'g> {
    g: &'g Graph,
    graph: GraphProto,
    /// ONNX value name of each lamina node translated so far.
    names: Vec<String>,
    /// Every value and initializer name in use, so that generated names never shadow a
    /// parameter path.
    used: HashSet<String>,
    counter: usize,
}

impl<'g> Translator<'g> {
    fn new(g: &'g Graph) -> Self {
        let mut used: HashSet<String> = g.states().into_iter().map(|(n, _)| n).collect();
        used.insert(INPUT_NAME.into());
        used.insert(OUTPUT_NAME.into());
        Translator {
            g,
            graph: GraphProto::default(),
            names: Vec::with_capacity(g.nodes.len()),
            used,
            counter: 0,
        }
    }

    /// A value name not used yet, starting with `base`.
    fn fresh(&mut self, base: &str) -> String {
        loop {
            let n = format!("{base}_{}", self.counter);
            self.counter += 1;
            if self.used.insert(n.clone()) {
                return n;
            }
        }
    }

    fn push(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        output: String,
        attrs: Vec<AttributeProto>,
    ) {
        let name = format!("{op_type}_{}", self.graph.node.len());
        self.graph.node.push(NodeProto {
            input: inputs,
            output: vec![output],
            name: Some(name),
            op_type: Some(op_type.into()),
            domain: None,
            attribute: attrs,
            doc_string: None,
        });
    }

    /// Appends a node with a fresh output name and returns that name.
    fn push_tmp(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(&op_type.to_ascii_lowercase());
        self.push(op_type, inputs, out.clone(), attrs);
        out
    }

    fn initializer(&mut self, name: String, shape: &[usize], data_type: i32, raw: Vec<u8>) {
        self.graph.initializer.push(TensorProto {
            dims: dims(shape),
            data_type: Some(data_type),
            name: Some(name),
            raw_data: Some(raw),
            ..Default::default()
        });
    }

    /// An int64 initializer (shapes, axes, pads) with a fresh name.
    fn int64s(&mut self, base: &str, v: &[i64]) -> String {
        let name = self.fresh(base);
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name.clone(), &[v.len()], data_type::INT64, raw);
        name
    }

    /// A scalar initializer of `dtype` with a fresh name.
    fn scalar(&mut self, base: &str, value: f64, dtype: DType, what: &str) -> Result<String> {
        let name = self.fresh(base);
        let raw = raw_bytes(std::iter::once(value), dtype, what)?;
        self.initializer(name.clone(), &[], onnx_type(dtype), raw);
        Ok(name)
    }

    /// The name of node `id`'s value: the graph output gets [`OUTPUT_NAME`], others a fresh name.
    fn result_name(&mut self, id: usize, base: &str) -> String {
        if self.g.outputs[0] == id {
            OUTPUT_NAME.into()
        } else {
            self.fresh(base)
        }
    }

    /// Translates node `id`; its value name is pushed onto `names`.
    fn node(&mut self, id: usize, params: &StateMap<HostTensor>) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[id];
        let ty = &node.ty;
        let ins: Vec<String> = node.inputs.iter().map(|&i| self.names[i].clone()).collect();
        let in_ty = |k: usize| &g.nodes[node.inputs[k]].ty;
        // One ONNX op with the lamina node's operands, in order.
        let simple = |t: &mut Self, op: &str, attrs: Vec<AttributeProto>| -> String {
            let out = t.result_name(id, &op.to_ascii_lowercase());
            t.push(op, ins.clone(), out.clone(), attrs);
            out
        };
        let name = match &node.op {
            Op::Input { name, shape, dtype } => {
                if name != INPUT_NAME {
                    return unsupported(
                        "input",
                        &format!("'{name}' is not the model input \"{INPUT_NAME}\""),
                    );
                }
                self.graph
                    .input
                    .push(value_info(INPUT_NAME, &TensorType::new(shape, *dtype))?);
                INPUT_NAME.to_string()
            }
            Op::State { name, shape, dtype } => {
                let t = params.get(name).ok_or_else(|| {
                    Error::Spec(format!(
                        "ONNX export: parameter \"{name}\" ({}) has no value in the given state",
                        ty.describe()
                    ))
                })?;
                if t.shape() != shape.as_slice() {
                    return Err(Error::Spec(format!(
                        "ONNX export: parameter \"{name}\" has shape {}, the model expects {}",
                        fmt_shape(t.shape()),
                        fmt_shape(shape)
                    )));
                }
                // Only the first read of a buffer defines the initializer (CSE normally merges
                // reads, but an unoptimised graph may read twice).
                if !self
                    .graph
                    .initializer
                    .iter()
                    .any(|i| i.name.as_deref() == Some(name.as_str()))
                {
                    let t = if t.dtype() == *dtype {
                        t.clone()
                    } else {
                        t.cast(*dtype)?
                    };
                    let raw = match dtype {
                        DType::F16 | DType::BF16 => {
                            return unsupported(
                                "state",
                                &format!("\"{name}\" has dtype {dtype}; export the model in f32"),
                            )
                        }
                        _ => host_bytes(&t),
                    };
                    self.initializer(name.clone(), shape, onnx_type(*dtype), raw);
                }
                name.clone()
            }
            Op::Const {
                value,
                shape,
                dtype,
            } => self.constant(id, value, shape, *dtype)?,
            Op::Iota { shape, axis, dtype } => {
                let st = strides(shape);
                let (stride, size) = (st[*axis], shape[*axis]);
                let values = (0..numel(shape)).map(|i| ((i / stride) % size) as f64);
                let raw = raw_bytes(values, *dtype, "iota")?;
                let name = self.fresh("iota");
                self.initializer(name.clone(), shape, onnx_type(*dtype), raw);
                name
            }
            Op::RandomBits { .. } => {
                return unsupported(
                    "random_bits",
                    "is not supported: random draws only occur in training graphs (dropout)",
                )
            }
            Op::Neg => simple(self, "Neg", vec![]),
            Op::Recip => simple(self, "Reciprocal", vec![]),
            Op::Sqrt => simple(self, "Sqrt", vec![]),
            Op::Exp => simple(self, "Exp", vec![]),
            Op::Log => simple(self, "Log", vec![]),
            Op::Tanh => simple(self, "Tanh", vec![]),
            Op::Erf => simple(self, "Erf", vec![]),
            Op::Add => simple(self, "Add", vec![]),
            Op::Sub => simple(self, "Sub", vec![]),
            Op::Mul => simple(self, "Mul", vec![]),
            Op::Div => simple(self, "Div", vec![]),
            Op::Max => simple(self, "Max", vec![]),
            Op::CmpLt => simple(self, "Less", vec![]),
            Op::CmpEq => simple(self, "Equal", vec![]),
            Op::Where => simple(self, "Where", vec![]),
            Op::Cast { to } => {
                if in_ty(0).dtype == *to {
                    simple(self, "Identity", vec![])
                } else {
                    simple(self, "Cast", vec![attr_int("to", onnx_type(*to) as i64)])
                }
            }
            Op::ReduceSum { axes } => {
                if axes.is_empty() {
                    // ONNX reads empty axes as "reduce everything"; lamina as "reduce nothing".
                    simple(self, "Identity", vec![])
                } else {
                    let a =
                        self.int64s("axes", &axes.iter().map(|&a| a as i64).collect::<Vec<_>>());
                    let out = self.result_name(id, "reducesum");
                    self.push(
                        "ReduceSum",
                        vec![ins[0].clone(), a],
                        out.clone(),
                        vec![attr_int("keepdims", 1)],
                    );
                    out
                }
            }
            Op::ReduceMax { axes } => {
                if axes.is_empty() {
                    simple(self, "Identity", vec![])
                } else {
                    simple(
                        self,
                        "ReduceMax",
                        vec![
                            attr_ints("axes", axes.iter().map(|&a| a as i64).collect()),
                            attr_int("keepdims", 1),
                        ],
                    )
                }
            }
            Op::ArgMax { axis } => {
                // ONNX ArgMax yields int64; lamina's is i32.
                let am = self.push_tmp(
                    "ArgMax",
                    ins.clone(),
                    vec![
                        attr_int("axis", *axis as i64),
                        attr_int("keepdims", 1),
                        attr_int("select_last_index", 0),
                    ],
                );
                let out = self.result_name(id, "argmax_i32");
                self.push(
                    "Cast",
                    vec![am],
                    out.clone(),
                    vec![attr_int("to", data_type::INT32 as i64)],
                );
                out
            }
            Op::Reshape { shape } => {
                let s = self.int64s("shape", &dims(shape));
                let out = self.result_name(id, "reshape");
                // allowzero: a 0 in the target shape means size 0, not "copy the input's dim".
                let attrs = if shape.contains(&0) {
                    vec![attr_int("allowzero", 1)]
                } else {
                    vec![]
                };
                self.push("Reshape", vec![ins[0].clone(), s], out.clone(), attrs);
                out
            }
            Op::Permute { perm } => simple(
                self,
                "Transpose",
                vec![attr_ints("perm", perm.iter().map(|&p| p as i64).collect())],
            ),
            Op::Expand { shape } => {
                let s = self.int64s("shape", &dims(shape));
                let out = self.result_name(id, "expand");
                self.push("Expand", vec![ins[0].clone(), s], out.clone(), vec![]);
                out
            }
            Op::Slice {
                start,
                limit,
                stride,
            } => {
                let in_shape = &in_ty(0).shape;
                let (mut st, mut en, mut ax, mut sp) = (vec![], vec![], vec![], vec![]);
                for a in 0..in_shape.len() {
                    if start[a] == 0 && limit[a] >= in_shape[a] && stride[a] == 1 {
                        continue; // axis kept whole
                    }
                    st.push(start[a] as i64);
                    en.push(limit[a] as i64);
                    ax.push(a as i64);
                    sp.push(stride[a] as i64);
                }
                if ax.is_empty() {
                    simple(self, "Identity", vec![])
                } else {
                    let inputs = vec![
                        ins[0].clone(),
                        self.int64s("starts", &st),
                        self.int64s("ends", &en),
                        self.int64s("axes", &ax),
                        self.int64s("steps", &sp),
                    ];
                    let out = self.result_name(id, "slice");
                    self.push("Slice", inputs, out.clone(), vec![]);
                    out
                }
            }
            Op::Pad {
                lo,
                hi,
                interior,
                value,
            } => {
                if interior.iter().any(|&i| i != 0) {
                    return Err(Error::Spec(format!(
                        "ONNX export: Pad with interior padding ({}) is not supported: ONNX Pad \
                         has edge padding only, and inference graphs do not use it",
                        fmt_shape(interior)
                    )));
                }
                let mut pads: Vec<i64> = dims(lo);
                pads.extend(dims(hi));
                let p = self.int64s("pads", &pads);
                let v = self.scalar("pad_value", *value, ty.dtype, "pad")?;
                let out = self.result_name(id, "pad");
                self.push(
                    "Pad",
                    vec![ins[0].clone(), p, v],
                    out.clone(),
                    vec![attr_string("mode", "constant")],
                );
                out
            }
            Op::MatMul => simple(self, "MatMul", vec![]),
            Op::Conv(ConvParams {
                kind: ConvKind::InputGrad { .. } | ConvKind::KernelGrad { .. },
                ..
            }) => {
                return unsupported(
                    "conv",
                    "gradient kinds (input_grad, kernel_grad) only occur in training graphs",
                )
            }
            Op::Conv(ConvParams {
                stride,
                padding,
                dilation,
                groups,
                kind: ConvKind::Forward,
            }) => {
                if padding.iter().any(|&(l, h)| l < 0 || h < 0) {
                    return unsupported(
                        "conv",
                        &format!(
                            "with negative (cropping) padding {padding:?} is not supported: ONNX \
                             Conv pads must be ≥ 0"
                        ),
                    );
                }
                let w = &in_ty(1).shape;
                simple(
                    self,
                    "Conv",
                    vec![
                        attr_ints("kernel_shape", vec![w[2] as i64, w[3] as i64]),
                        attr_ints("strides", dims(stride)),
                        attr_ints(
                            "pads",
                            vec![padding[0].0, padding[1].0, padding[0].1, padding[1].1],
                        ),
                        attr_ints("dilations", dims(dilation)),
                        attr_int("group", *groups as i64),
                    ],
                )
            }
            Op::Gather { axis } => self.gather(id, *axis, &ins)?,
            Op::ScatterAdd { .. } => {
                return unsupported(
                    "scatter_add",
                    "is not supported: it only occurs in gradients (the transpose of gather)",
                )
            }
            Op::Assign { name } => {
                return unsupported(
                    "assign",
                    &format!(
                        "to \"{name}\" is not supported: an exported graph is a pure function \
                         (state updates belong to training graphs)"
                    ),
                )
            }
        };
        self.names.push(name);
        Ok(())
    }

    /// A constant: an initializer, or `ConstantOfShape` for a large splat.
    fn constant(
        &mut self,
        id: usize,
        value: &Literal,
        shape: &[usize],
        dtype: DType,
    ) -> Result<String> {
        let n = numel(shape);
        if let (Some(v), true) = (value.splat(), n > SPLAT_INLINE_MAX) {
            let s = self.int64s("shape", &dims(shape));
            let raw = raw_bytes(std::iter::once(v), dtype, "const")?;
            let t = TensorProto {
                dims: vec![1],
                data_type: Some(onnx_type(dtype)),
                raw_data: Some(raw),
                ..Default::default()
            };
            let out = self.result_name(id, "const");
            self.push(
                "ConstantOfShape",
                vec![s],
                out.clone(),
                vec![attr_tensor("value", t)],
            );
            return Ok(out);
        }
        let raw = raw_bytes((0..n).map(|i| value.get(i)), dtype, "const")?;
        let name = self.fresh("const");
        self.initializer(name.clone(), shape, onnx_type(dtype), raw);
        Ok(name)
    }

    /// Gather with lamina's semantics: out-of-range indices read 0 (ONNX Gather would fail on
    /// them, and would wrap negative ones), so indices are masked before and the result after.
    fn gather(&mut self, id: usize, axis: usize, ins: &[String]) -> Result<String> {
        let g = self.g;
        let node = &g.nodes[id];
        let x_ty = &g.nodes[node.inputs[0]].ty;
        let idx_ty = &g.nodes[node.inputs[1]].ty;
        let size = x_ty.shape[axis] as f64;
        let post = x_ty.shape.len() - axis - 1;
        let (x_dtype, idx_shape) = (x_ty.dtype, idx_ty.shape.clone());
        let zero_i = self.scalar("zero_i32", 0.0, DType::I32, "gather")?;
        let size_i = self.scalar("axis_size", size, DType::I32, "gather")?;
        let neg = self.push_tmp("Less", vec![ins[1].clone(), zero_i.clone()], vec![]);
        let non_neg = self.push_tmp("Not", vec![neg], vec![]);
        let below = self.push_tmp("Less", vec![ins[1].clone(), size_i], vec![]);
        let valid = self.push_tmp("And", vec![non_neg, below], vec![]);
        let safe = self.push_tmp("Where", vec![valid.clone(), ins[1].clone(), zero_i], vec![]);
        let gathered = self.push_tmp(
            "Gather",
            vec![ins[0].clone(), safe],
            vec![attr_int("axis", axis as i64)],
        );
        // The mask has the index shape; trailing 1s align it with the gathered axes so that
        // NumPy broadcasting covers the leading and trailing axes of the result.
        let mut mask_shape = idx_shape;
        mask_shape.extend(std::iter::repeat_n(1, post));
        let ms = self.int64s("shape", &dims(&mask_shape));
        let mask = self.push_tmp("Reshape", vec![valid, ms], vec![]);
        let zero_x = self.scalar("zero", 0.0, x_dtype, "gather")?;
        let out = self.result_name(id, "gather");
        self.push("Where", vec![mask, gathered, zero_x], out.clone(), vec![]);
        Ok(out)
    }
}
