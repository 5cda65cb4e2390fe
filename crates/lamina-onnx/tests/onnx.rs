//! ONNX export and import. Export (this file): each test model is exported, decoded back with
//! prost and checked for structure (versions, operators, initializers named by parameter path,
//! input/output types, every value defined before use); unsupported primitives give errors that
//! name them. Import: the `import` module.
//! Numerical agreement with onnxruntime is checked by `tools/golden/onnx_check.py` on the files
//! the `onnx_fixtures` example writes.

mod common;
mod import;

use common::models;
use lamina_core::{ConvKind, ConvParams, DType, Graph, HostTensor, Op, StateMap};
use lamina_nn::Mode;
use lamina_onnx::proto::{data_type, ModelProto, ValueInfoProto};
use prost::Message;
use std::collections::{BTreeSet, HashSet};

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).expect("the export decodes as a ModelProto")
}

fn shape_of(v: &ValueInfoProto) -> (i32, Vec<i64>) {
    let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
    let dims = t
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.dim_value.unwrap())
        .collect();
    (t.elem_type.unwrap(), dims)
}

fn op_types(m: &ModelProto) -> BTreeSet<String> {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone().unwrap())
        .collect()
}

/// Every node input is a graph input, an initializer or an earlier node's output; every output
/// is produced once; the graph output is produced.
fn assert_well_formed(m: &ModelProto, name: &str) {
    let g = m.graph.as_ref().unwrap();
    let mut defined: HashSet<String> = g.input.iter().map(|v| v.name.clone().unwrap()).collect();
    for i in &g.initializer {
        assert!(
            defined.insert(i.name.clone().unwrap()),
            "{name}: initializer {:?} defined twice",
            i.name
        );
        let n: i64 = i.dims.iter().product();
        let width = match i.data_type.unwrap() {
            data_type::FLOAT | data_type::INT32 => 4,
            data_type::INT64 | data_type::DOUBLE => 8,
            data_type::BOOL => 1,
            t => panic!("{name}: unexpected initializer type {t}"),
        };
        assert_eq!(
            i.raw_data.as_ref().unwrap().len() as i64,
            n * width,
            "{name}: raw_data of {:?}",
            i.name
        );
    }
    for n in &g.node {
        for i in &n.input {
            assert!(
                defined.contains(i),
                "{name}: {:?} reads {i} before it is defined",
                n.name
            );
        }
        for o in &n.output {
            assert!(
                defined.insert(o.clone()),
                "{name}: {o} defined twice ({:?})",
                n.name
            );
        }
    }
    for o in &g.output {
        assert!(defined.contains(o.name.as_ref().unwrap()), "{name}: output");
    }
}

#[test]
fn every_model_exports_with_opset_17_and_parameter_initializers() {
    for (name, spec) in models::models() {
        let params = models::params(&spec);
        let bytes = lamina_onnx::export(&spec, &params, None).unwrap();
        let m = decode(&bytes);
        assert_eq!(m.ir_version, Some(8), "{name}");
        assert_eq!(m.opset_import.len(), 1, "{name}");
        assert_eq!(m.opset_import[0].version, Some(17), "{name}");
        assert_eq!(
            m.opset_import[0].domain.as_deref().unwrap_or(""),
            "",
            "{name}"
        );
        assert_eq!(m.producer_name.as_deref(), Some("lamina"));
        assert_well_formed(&m, name);

        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.input.len(), 1, "{name}");
        assert_eq!(g.input[0].name.as_deref(), Some("x"));
        let to_i64 = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();
        assert_eq!(
            shape_of(&g.input[0]),
            (data_type::FLOAT, to_i64(&spec.input_shape)),
            "{name}"
        );
        assert_eq!(g.output.len(), 1, "{name}");
        assert_eq!(g.output[0].name.as_deref(), Some("y"));
        assert_eq!(
            shape_of(&g.output[0]),
            (data_type::FLOAT, to_i64(&spec.output_shape)),
            "{name}"
        );

        // Every parameter the eval graph reads is an initializer under its path, with its
        // shape and its exact bytes.
        let graph = lamina_onnx::inference_graph(&spec, None).unwrap();
        let states: BTreeSet<String> = graph.states().into_iter().map(|(n, _)| n).collect();
        let trainable: BTreeSet<String> = spec
            .params()
            .filter(|p| p.trainable)
            .map(|p| p.path.clone())
            .collect();
        assert!(
            trainable.is_subset(&states),
            "{name}: {trainable:?} ⊄ {states:?}"
        );
        let inits: BTreeSet<String> = g
            .initializer
            .iter()
            .filter_map(|i| i.name.clone())
            .filter(|n| params.contains_key(n))
            .collect();
        assert_eq!(inits, states, "{name}");
        for init in &g.initializer {
            let Some(p) = params.get(init.name.as_ref().unwrap()) else {
                continue;
            };
            assert_eq!(init.data_type, Some(data_type::FLOAT));
            assert_eq!(init.dims, to_i64(p.shape()));
            let want: Vec<u8> = p
                .as_f32()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            assert_eq!(
                init.raw_data.as_ref(),
                Some(&want),
                "{name}: {:?}",
                init.name
            );
        }
    }
}

#[test]
fn each_model_uses_the_expected_operators() {
    let want: &[(&str, &[&str])] = &[
        (
            "mlp",
            &[
                "MatMul",
                "Add",
                "Max",
                "Exp",
                "ReduceMax",
                "ReduceSum",
                "Div",
            ],
        ),
        ("cnn", &["Conv", "Max", "Slice", "Reshape", "MatMul"]),
        ("norms", &["ReduceSum", "Sqrt", "Erf", "Div"]),
        (
            "attention",
            &["Transpose", "MatMul", "Slice", "Exp", "ReduceMax"],
        ),
        ("residual", &["Add", "Where", "Exp", "Tanh"]),
        (
            "custom",
            &[
                "Gather", "Pad", "Slice", "ArgMax", "Cast", "Equal", "Erf", "Tanh",
            ],
        ),
        ("embedding", &["Gather", "Where", "Cast"]),
    ];
    let models = models::models();
    for (name, ops) in want {
        let spec = &models.iter().find(|(n, _)| n == name).unwrap().1;
        let m = decode(&lamina_onnx::export(spec, &models::params(spec), None).unwrap());
        let have = op_types(&m);
        for op in *ops {
            assert!(have.contains(*op), "{name}: no {op} in {have:?}");
        }
        // The exported graph is an inference graph: no training leftovers.
        assert!(!have.contains("RandomUniform"), "{name}");
    }
}

#[test]
fn argmax_is_cast_to_int32_and_keeps_its_axis() {
    let (_, spec) = models::models()
        .into_iter()
        .find(|(n, _)| *n == "custom")
        .unwrap();
    let m = decode(&lamina_onnx::export(&spec, &models::params(&spec), None).unwrap());
    let g = m.graph.unwrap();
    let am = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("ArgMax"))
        .unwrap();
    let attr = |k: &str| {
        am.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(k))
            .unwrap()
            .i
    };
    assert_eq!(attr("axis"), Some(1));
    assert_eq!(attr("keepdims"), Some(1));
    assert_eq!(attr("select_last_index"), Some(0));
    let cast = g
        .node
        .iter()
        .find(|n| n.input.first() == am.output.first())
        .unwrap();
    assert_eq!(cast.op_type.as_deref(), Some("Cast"));
    assert_eq!(cast.attribute[0].i, Some(data_type::INT32 as i64));
}

#[test]
fn conv_attributes_follow_the_layer() {
    let (_, spec) = models::models()
        .into_iter()
        .find(|(n, _)| *n == "cnn")
        .unwrap();
    let m = decode(&lamina_onnx::export(&spec, &models::params(&spec), None).unwrap());
    let convs: Vec<_> = m
        .graph
        .unwrap()
        .node
        .into_iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .collect();
    // conv1, conv2 and the average pool (a depthwise convolution with a constant kernel).
    assert_eq!(convs.len(), 3);
    let by_weight = |w: &str| {
        convs
            .iter()
            .find(|n| n.input[1] == w)
            .unwrap_or_else(|| panic!("no Conv reads {w}"))
    };
    let ints = |n: &lamina_onnx::proto::NodeProto, k: &str| {
        let a = n.attribute.iter().find(|a| a.name.as_deref() == Some(k));
        let a = a.unwrap_or_else(|| panic!("Conv has no {k}"));
        if a.ints.is_empty() {
            vec![a.i.unwrap()]
        } else {
            a.ints.clone()
        }
    };
    let (c1, c2) = (by_weight("conv1.weight"), by_weight("conv2.weight"));
    assert_eq!(ints(c1, "strides"), vec![1, 1]);
    assert_eq!(ints(c1, "pads"), vec![1, 1, 1, 1]);
    assert_eq!(ints(c1, "dilations"), vec![1, 1]);
    assert_eq!(ints(c1, "group"), vec![1]);
    assert_eq!(ints(c2, "strides"), vec![2, 2]);
    assert_eq!(ints(c2, "kernel_shape"), vec![3, 3]);
    let pool = convs.iter().find(|n| !n.input[1].contains('.')).unwrap();
    assert_eq!(ints(pool, "group"), vec![6]);
    assert_eq!(ints(pool, "kernel_shape"), vec![2, 2]);
}

#[test]
fn batch_size_is_chosen_at_export() {
    let (_, spec) = models::models()
        .into_iter()
        .find(|(n, _)| *n == "mlp")
        .unwrap();
    let m = decode(&lamina_onnx::export(&spec, &models::params(&spec), Some(17)).unwrap());
    let g = m.graph.unwrap();
    assert_eq!(shape_of(&g.input[0]).1, vec![17, 8]);
    assert_eq!(shape_of(&g.output[0]).1, vec![17, 5]);
}

#[test]
fn export_to_file_writes_the_same_bytes() {
    let (_, spec) = models::models()
        .into_iter()
        .find(|(n, _)| *n == "residual")
        .unwrap();
    let params = models::params(&spec);
    let path = std::env::temp_dir().join(format!("lamina-onnx-{}.onnx", std::process::id()));
    lamina_onnx::export_to_file(&path, &spec, &params, None).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(bytes, lamina_onnx::export(&spec, &params, None).unwrap());
    let err = lamina_onnx::export_to_file("/nonexistent-dir/m.onnx", &spec, &params, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent-dir/m.onnx"), "{err}");
}

#[test]
fn missing_or_misshapen_parameters_are_errors() {
    let (_, spec) = models::models()
        .into_iter()
        .find(|(n, _)| *n == "mlp")
        .unwrap();
    let mut params = models::params(&spec);
    params.remove("out.bias");
    let err = lamina_onnx::export(&spec, &params, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("out.bias") && err.contains("no value"),
        "{err}"
    );
    params.insert(
        "out.bias".into(),
        HostTensor::zeros(&[6], DType::F32).unwrap(),
    );
    let err = lamina_onnx::export(&spec, &params, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("out.bias") && err.contains("[6]") && err.contains("[5]"),
        "{err}"
    );
}

/// A one-input graph built by `f`, for primitives no layer produces in eval mode.
fn graph(f: impl FnOnce(lamina_core::Tensor) -> lamina_core::Tensor) -> Graph {
    let b = lamina_core::GraphBuilder::new();
    let x = b.input("x", &[2, 3], DType::F32);
    let y = f(x);
    b.finish(&[y]).unwrap()
}

fn export_err(g: &Graph) -> String {
    lamina_onnx::graph_to_onnx(g, &StateMap::new())
        .unwrap_err()
        .to_string()
}

#[test]
fn unsupported_primitives_are_errors_that_name_them() {
    let g = graph(|x| {
        lamina_core::Tensor::apply(
            Op::Pad {
                lo: vec![0, 0],
                hi: vec![0, 0],
                interior: vec![0, 1],
                value: 0.0,
            },
            &[x],
        )
    });
    let err = export_err(&g);
    assert!(err.contains("Pad with interior padding ([0,1])"), "{err}");

    let g = graph(|x| {
        let idx = x.sum(&[1], false).cast(DType::I32);
        lamina_core::Tensor::apply(
            Op::ScatterAdd {
                axis: 0,
                dim_size: 4,
            },
            &[x, idx],
        )
    });
    assert!(export_err(&g).contains("scatter_add"), "{}", export_err(&g));

    let g = graph(|x| {
        let key = x
            .slice(0, 0, 1, 1)
            .slice(1, 0, 2, 1)
            .reshape(&[2])
            .cast(DType::I32);
        key.random_uniform(&[2, 3], 0, DType::F32) + x
    });
    assert!(export_err(&g).contains("random_bits"), "{}", export_err(&g));

    let g = graph(|x| {
        let x4 = x.reshape(&[1, 1, 2, 3]);
        let w = x.slice(1, 0, 1, 1).reshape(&[1, 1, 1, 2]);
        x4.conv(
            w,
            &ConvParams {
                stride: [1, 1],
                padding: [(0, 0), (-1, 0)],
                dilation: [1, 1],
                groups: 1,
                kind: ConvKind::Forward,
            },
        )
    });
    let err = export_err(&g);
    assert!(err.contains("conv") && err.contains("negative"), "{err}");
}

#[test]
fn training_graphs_with_state_updates_are_refused() {
    let (_, spec) = models::models()
        .into_iter()
        .find(|(n, _)| *n == "norms")
        .unwrap();
    // BatchNorm's running statistics are Assigns in training mode; dropout draws random bits.
    let g = spec.forward_graph(4, Mode::Train, DType::F32).unwrap();
    let mut params = models::params(&spec);
    params.insert("rng".into(), HostTensor::i32(&[2], vec![1, 0]).unwrap());
    let err = lamina_onnx::graph_to_onnx(&g, &params)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("random_bits") || err.contains("assign"),
        "{err}"
    );
}
