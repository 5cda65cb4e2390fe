//! ONNX import: lamina's own exports round-trip (every test model, every built-in layer, every
//! example and benchmark model); PyTorch's exports (legacy and dynamo exporters) predict what
//! torch computed; hand-built graphs cover the remaining layer patterns; a table of hostile files
//! gives the exact error for each problem, and no truncation or corruption of a file panics.

use crate::common::models::{self, Lcg};
use lamina_core::{DType, HostTensor, StateMap};
use lamina_nn::{zoo, ModelBuilder, ModelSpec};
use lamina_onnx::proto::*;
use lamina_onnx::{import, import_file, import_with, MAX_NODES};
use lamina_train::{Device, Inferencer};
use prost::Message;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The model's output on `x` (any batch size) from lamina's reference interpreter.
fn reference(spec: &ModelSpec, weights: &StateMap<HostTensor>, x: &HostTensor) -> Vec<f64> {
    let g = lamina_onnx::inference_graph(spec, Some(x.shape()[0])).unwrap();
    let mut state = weights.clone();
    let out = lamina_ref::run_graph(&g, &[x], &mut state).unwrap();
    out[0].to_f64()
}

/// The model's output on `x` through `Inferencer::from_weights` (the CPU backend, f32).
fn inferencer(spec: &ModelSpec, weights: &StateMap<HostTensor>, x: &HostTensor) -> Vec<f64> {
    let mut inf =
        Inferencer::from_weights(spec.clone(), weights.clone(), DType::F32, Device::Cpu).unwrap();
    let p = inf.predict(x.as_f32().unwrap(), x.shape()).unwrap();
    p.values.iter().map(|&v| v as f64).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} is {g}, expected {w}"
        );
    }
}

#[test]
fn lamina_exports_round_trip_to_the_same_spec_weights_and_predictions() {
    let mut all: Vec<(String, ModelSpec)> = models::models()
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .chain(models::layer_models())
        .chain(models::example_models())
        .collect();
    for name in zoo::MODELS {
        all.push((format!("zoo_{name}"), zoo::model(name, true).unwrap()));
    }
    assert!(all.len() >= 40, "{} models", all.len());
    // The batch size chosen at export becomes the imported spec's.
    let (_, mlp) = &all[0];
    let bytes = lamina_onnx::export(mlp, &models::params(mlp), Some(5)).unwrap();
    assert_eq!(import(&bytes).unwrap().spec.input_shape, [5, 8]);
    for (name, spec) in &all {
        let params = models::params(spec);
        let bytes = lamina_onnx::export(spec, &params, None).unwrap();
        let m = import_with(&bytes, &models::registry()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.spec.to_json(), spec.to_json(), "{name}: spec");
        assert_eq!(m.weights, params, "{name}: weights");
        // A batch of 2 keeps the reference interpreter quick on the benchmark models.
        let x = if spec.input_shape[0] <= 6 {
            models::input(name, spec)
        } else {
            let mut shape = spec.input_shape.clone();
            shape[0] = 2;
            let mut rng = Lcg::new(5);
            let n: usize = shape.iter().product();
            HostTensor::f32(&shape, (0..n).map(|_| rng.next()).collect()).unwrap()
        };
        // The imported model computes exactly what the original does on the CPU backend, and
        // agrees with the f64 reference interpreter up to f32 rounding.
        let got = inferencer(&m.spec, &m.weights, &x);
        assert_eq!(got, inferencer(spec, &params, &x), "{name}: predictions");
        assert_close(&got, &reference(spec, &params, &x), 1e-4, name);
    }
}

#[test]
fn pytorch_exports_import_as_layers_and_predict_what_torch_computed() {
    let mlp = [
        "Dense",
        "BatchNorm",
        "ReLU",
        "Dense",
        "Swish",
        "Dense",
        "LeakyReLU",
        "Dense",
        "Softmax",
    ];
    // The dynamo exporter folds BatchNorm1d into the Linear before it.
    let mlp_dynamo = [
        "Dense",
        "ReLU",
        "Dense",
        "Swish",
        "Dense",
        "LeakyReLU",
        "Dense",
        "Softmax",
    ];
    // Both exporters fold BatchNorm2d into the convolution before it.
    let cnn = [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Conv2D",
        "ELU",
        "AvgPool2D",
        "Flatten",
        "Dense",
        "ReLU",
        "Dense",
    ];
    let cases: [(&str, &str, &[&str], &[&str]); 4] = [
        (
            "mlp_legacy.onnx",
            "mlp.safetensors",
            &mlp,
            &["fc1.weight", "bn1.running_var", "act2", "out.bias"],
        ),
        (
            "mlp_dynamo.onnx",
            "mlp.safetensors",
            &mlp_dynamo,
            &["fc1.weight", "fc3.bias"],
        ),
        (
            "cnn_legacy.onnx",
            "cnn.safetensors",
            &cnn,
            &["conv1.weight", "conv2.weight", "pool1", "fc2.bias"],
        ),
        (
            "cnn_dynamo.onnx",
            "cnn.safetensors",
            &cnn,
            &["conv1.weight", "conv2.weight", "fc1.weight"],
        ),
    ];
    for (file, golden, types, names) in cases {
        let m = import_file(fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got_types: Vec<&str> = m.spec.layers.iter().map(|l| l.type_name()).collect();
        assert_eq!(got_types, types, "{file}: layers");
        for n in names {
            let known = m.weights.contains_key(*n) || m.spec.layers.iter().any(|l| l.name == *n);
            assert!(
                known,
                "{file}: no layer or weight named {n}: {:?}",
                m.spec.layers
            );
        }
        let fx = lamina_ref::fixtures::load(fixture(golden).to_str().unwrap()).unwrap();
        let x = fx["x"].cast(DType::F32).unwrap();
        let want = fx["y"].to_f64();
        assert_eq!(m.spec.output_shape, fx["y"].shape(), "{file}: output shape");
        assert_close(&reference(&m.spec, &m.weights, &x), &want, 1e-5, file);
        assert_close(&inferencer(&m.spec, &m.weights, &x), &want, 1e-5, file);
    }
}

// ----- building ONNX graphs by hand -----

fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::FLOAT),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn i64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(data_type::INT64),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(i),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    ins: &[&str],
    outs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        name: Some(name.into()),
        op_type: Some(op.into()),
        attribute: attrs,
        ..Default::default()
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: Some(d),
                            ..Default::default()
                        })
                        .collect(),
                }),
            }),
            denotation: None,
        }),
        doc_string: None,
    }
}

fn model(input: &[i64], nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![value("x", input)],
            output: vec![value("y", &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg::new(seed);
    (0..n).map(|_| rng.next()).collect()
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| v[(i % rows) * cols + i / rows])
        .collect()
}

#[test]
fn hand_built_graphs_map_each_remaining_pattern_to_its_layer() {
    // Conv → Identity → GlobalAveragePool → Reshape(Constant [0, -1]) → MatMul + Add →
    // Sigmoid·x → Dropout → Reshape [-1, 2, 3] → Flatten → Gemm (transB = 0) → Tanh → Sigmoid
    let (wc, bc) = (values(3 * 2 * 9, 1), values(3, 2));
    let (wm, bm) = (values(3 * 6, 3), values(6, 4));
    let (wg, bg) = (values(6 * 4, 5), values(4, 6));
    let nodes = vec![
        node(
            "Conv",
            "c",
            &["x", "wc", "bc"],
            &["c"],
            vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
        ),
        node("Identity", "id", &["c"], &["c2"], vec![]),
        node("GlobalAveragePool", "gap", &["c2"], &["g"], vec![]),
        node(
            "Constant",
            "shape_const",
            &[],
            &["s"],
            vec![AttributeProto {
                name: Some("value".into()),
                r#type: Some(attribute_type::TENSOR),
                t: Some(i64s("", &[0, -1])),
                ..Default::default()
            }],
        ),
        node("Reshape", "flat", &["g", "s"], &["f"], vec![]),
        node("MatMul", "mm", &["f", "wm"], &["m"], vec![]),
        node("Add", "bias", &["m", "bm"], &["a"], vec![]),
        node("Sigmoid", "sig", &["a"], &["sg"], vec![]),
        node("Mul", "swish", &["sg", "a"], &["sw"], vec![]),
        node("Dropout", "drop", &["sw"], &["d"], vec![]),
        node("Reshape", "r3", &["d", "s3"], &["r"], vec![]),
        node("Flatten", "fl", &["r"], &["fl"], vec![int("axis", 1)]),
        node(
            "Gemm",
            "gemm",
            &["fl", "wg", "bg"],
            &["gm"],
            vec![int("transB", 0)],
        ),
        node("Tanh", "tanh", &["gm"], &["t"], vec![]),
        node("Sigmoid", "out_sig", &["t"], &["y"], vec![]),
    ];
    let inits = vec![
        f32s("wc", &[3, 2, 3, 3], &wc),
        f32s("bc", &[3], &bc),
        f32s("wm", &[3, 6], &wm),
        f32s("bm", &[6], &bm),
        i64s("s3", &[-1, 2, 3]),
        f32s("wg", &[6, 4], &wg),
        f32s("bg", &[4], &bg),
    ];
    let bytes = model(&[2, 2, 4, 4], nodes, inits).encode_to_vec();
    let m = import(&bytes).unwrap();
    let types: Vec<&str> = m.spec.layers.iter().map(|l| l.type_name()).collect();
    assert_eq!(
        types,
        [
            "Conv2D",
            "AvgPool2D",
            "Flatten",
            "Dense",
            "Swish",
            "Reshape",
            "Flatten",
            "Dense",
            "Tanh",
            "Sigmoid"
        ]
    );
    // The same model written with lamina's builder and PyTorch-layout weights.
    let want_spec = ModelBuilder::new(&[2, 2, 4, 4])
        .conv2d(3, 3, 1, 1, true, "c")
        .avg_pool2d(4, 4, "p")
        .flatten("f")
        .dense(6, true, "m")
        .swish("s")
        .reshape(&[2, 3], "r")
        .flatten("f2")
        .dense(4, true, "g")
        .tanh("t")
        .sigmoid("o")
        .compile()
        .unwrap();
    let mut w = StateMap::new();
    w.insert(
        "c.weight".into(),
        HostTensor::f32(&[3, 2, 3, 3], wc).unwrap(),
    );
    w.insert("c.bias".into(), HostTensor::f32(&[3], bc).unwrap());
    w.insert(
        "m.weight".into(),
        HostTensor::f32(&[6, 3], transpose(&wm, 3, 6)).unwrap(),
    );
    w.insert("m.bias".into(), HostTensor::f32(&[6], bm).unwrap());
    w.insert(
        "g.weight".into(),
        HostTensor::f32(&[4, 6], transpose(&wg, 6, 4)).unwrap(),
    );
    w.insert("g.bias".into(), HostTensor::f32(&[4], bg).unwrap());
    let x = HostTensor::f32(&[2, 2, 4, 4], values(64, 9)).unwrap();
    let want = reference(&want_spec, &w, &x);
    assert_close(&reference(&m.spec, &m.weights, &x), &want, 1e-6, "patterns");
}

// ----- hostile files -----

/// A valid model: x [2, 4] → Gemm (W [3, 4], transB) → Relu → y.
fn base() -> ModelProto {
    model(
        &[2, 4],
        vec![
            node(
                "Gemm",
                "fc",
                &["x", "fc.weight", "fc.bias"],
                &["h"],
                vec![int("transB", 1)],
            ),
            node("Relu", "relu", &["h"], &["y"], vec![]),
        ],
        vec![
            f32s("fc.weight", &[3, 4], &values(12, 1)),
            f32s("fc.bias", &[3], &values(3, 2)),
        ],
    )
}

fn with(f: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut m = base();
    f(&mut m);
    m.encode_to_vec()
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

#[test]
fn a_symbolic_batch_axis_imports_as_batch_1_and_runs_at_any_batch_size() {
    let mut m = base();
    let dim = &mut graph(&mut m).input[0]
        .r#type
        .as_mut()
        .unwrap()
        .tensor_type
        .as_mut()
        .unwrap()
        .shape
        .as_mut()
        .unwrap()
        .dim[0];
    *dim = Dimension {
        dim_param: Some("batch".into()),
        ..Default::default()
    };
    let m = import(&m.encode_to_vec()).unwrap();
    assert_eq!(m.spec.input_shape, [1, 4]);
    // relu(x Wᵀ + b) at batch 3, by hand
    let (w, b) = (values(12, 1), values(3, 2));
    let x = HostTensor::f32(&[3, 4], values(12, 3)).unwrap();
    let xv = x.as_f32().unwrap();
    let want: Vec<f64> = (0..9)
        .map(|k| {
            let (r, o) = (k / 3, k % 3);
            let s: f32 = (0..4).map(|i| xv[r * 4 + i] * w[o * 4 + i]).sum::<f32>() + b[o];
            s.max(0.0) as f64
        })
        .collect();
    assert_close(&inferencer(&m.spec, &m.weights, &x), &want, 1e-6, "batch 3");
}

#[test]
fn hostile_files_fail_with_an_error_naming_the_problem() {
    assert!(
        import(&base().encode_to_vec()).is_ok(),
        "the base model imports"
    );
    let valid = base().encode_to_vec();
    let lamina = {
        let spec = ModelBuilder::new(&[2, 4])
            .dense(3, true, "fc")
            .compile()
            .unwrap();
        let params = models::params(&spec);
        lamina_onnx::export_model(&spec, &params, None).unwrap()
    };
    let mut too_many = base();
    graph(&mut too_many).node = (0..=MAX_NODES)
        .map(|i| {
            node(
                "Identity",
                &format!("n{i}"),
                &["x"],
                &[format!("v{i}").as_str()],
                vec![],
            )
        })
        .collect();
    // Every Gemm reads the same 64 KB weight: the weights would outgrow the file.
    let mut shared = model(
        &[2, 128],
        vec![],
        vec![f32s("w", &[128, 128], &[0.5; 128 * 128])],
    );
    let mut prev = "x".to_string();
    for i in 0..40 {
        let out = if i == 39 {
            "y".to_string()
        } else {
            format!("h{i}")
        };
        graph(&mut shared).node.push(node(
            "Gemm",
            &format!("g{i}"),
            &[prev.as_str(), "w"],
            &[out.as_str()],
            vec![int("transB", 1)],
        ));
        prev = out;
    }
    let rows: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"\xff\xff\xff\xff not protobuf".to_vec(), "protobuf decoding failed"),
        ("truncated", valid[..valid.len() - 30].to_vec(), "protobuf decoding failed"),
        ("empty", vec![], "the model has no graph"),
        ("cycle", with(|m| {
            let g = graph(m);
            g.node[0].input[0] = "y".into();
        }), "the graph has a cycle: node 'fc' (Gemm) depends on its own output"),
        ("too many nodes", too_many.encode_to_vec(), "the graph has 10001 nodes, more than the limit of 10000"),
        ("external data", with(|m| {
            let w = &mut graph(m).initializer[0];
            w.raw_data = None;
            w.data_location = Some(1);
            w.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some("weights.bin".into()) }];
        }), "tensor 'fc.weight' keeps its data in an external file (data_location = EXTERNAL)"),
        ("raw_data too short", with(|m| {
            graph(m).initializer[0].raw_data.as_mut().unwrap().truncate(40);
        }), "tensor 'fc.weight' declares dims [3, 4] (12 elements, 48 bytes of FLOAT) but its raw_data holds 40 bytes"),
        ("raw_data too long", with(|m| {
            graph(m).initializer[1].raw_data.as_mut().unwrap().extend([0; 4]);
        }), "tensor 'fc.bias' declares dims [3] (3 elements, 12 bytes of FLOAT) but its raw_data holds 16 bytes"),
        ("dims overflow", with(|m| {
            graph(m).initializer[0].dims = vec![1 << 40, 1 << 40];
        }), "tensor 'fc.weight': the element count of dims [1099511627776, 1099511627776] overflows"),
        ("byte size overflows", with(|m| {
            graph(m).initializer[0].dims = vec![1 << 62];
        }), "tensor 'fc.weight': the byte size of dims [4611686018427387904] overflows"),
        ("negative dim", with(|m| {
            graph(m).initializer[0].dims = vec![-3, -4];
        }), "tensor 'fc.weight' has a negative dimension in dims [-3, -4]"),
        ("float_data count", with(|m| {
            let w = &mut graph(m).initializer[1];
            w.raw_data = None;
            w.float_data = vec![1.0; 1000];
        }), "tensor 'fc.bias' declares dims [3] (3 elements) but holds 1000 values in float_data"),
        ("string tensor", with(|m| {
            graph(m).initializer[1].data_type = Some(data_type::STRING);
        }), "tensor 'fc.bias' has data type 8 (STRING); import reads FLOAT, DOUBLE, INT32 and INT64"),
        ("unknown op", with(|m| {
            graph(m).node[1].op_type = Some("FancyRelu".into());
        }), "unsupported operator FancyRelu (node 'relu' (FancyRelu))"),
        ("foreign domain", with(|m| {
            graph(m).node[0].domain = Some("com.microsoft".into());
        }), "unsupported operator com.microsoft::Gemm (node 'fc' (Gemm))"),
        ("missing input", with(|m| {
            graph(m).node[1].input[0] = "nowhere".into();
        }), "node 'relu' (Relu) reads 'nowhere', which no node, graph input or initializer defines"),
        ("missing output", with(|m| {
            graph(m).output[0].name = Some("z".into());
        }), "the graph output 'z' is not defined by any node"),
        ("defined twice", with(|m| {
            graph(m).node[1].output[0] = "h".into();
        }), "value 'h' is defined twice: by node 'fc' (Gemm) and by node 'relu' (Relu)"),
        ("old opset", with(|m| {
            m.opset_import[0].version = Some(9);
        }), "opset 9 is not supported: import reads opsets 13 to 21 of the default domain"),
        ("future opset", with(|m| {
            m.opset_import[0].version = Some(99);
        }), "opset 99 is not supported"),
        ("no opset", with(|m| {
            m.opset_import.clear();
        }), "the model imports no version of the default ONNX operator set"),
        ("two inputs", with(|m| {
            graph(m).input.push(value("x2", &[2, 4]));
        }), "the graph has 2 inputs besides its initializers ([\"x\", \"x2\"])"),
        ("integer input", with(|m| {
            graph(m).input[0].r#type.as_mut().unwrap().tensor_type.as_mut().unwrap().elem_type = Some(data_type::INT64);
        }), "graph input 'x' has element type 7 (INT64); import takes FLOAT inputs"),
        ("branch", with(|m| {
            let g = graph(m);
            g.node[1].output[0] = "r".into();
            g.node.push(node("Add", "skip", &["r", "h"], &["y"], vec![]));
        }), "node 'skip' (Add) reads 'h', which is not the output of the layer before ('r')"),
        ("transA", with(|m| {
            graph(m).node[0].attribute.push(int("transA", 1));
        }), "node 'fc' (Gemm): only transA = 0, alpha = 1 and beta = 1 map to a Dense layer"),
        ("wrong weight width", with(|m| {
            let w = &mut graph(m).initializer[0];
            w.dims = vec![4, 3];
        }), "node 'fc' (Gemm): weight fc.weight has shape [4,3], the input has 4 features"),
        ("lamina-only operator", with(|m| {
            graph(m).node[1].op_type = Some("Exp".into());
        }), "node 'relu' (Exp) is not part of a layer pattern import recognises"),
        ("shared weight outgrows the file", shared.encode_to_vec(), "would allocate 65536 bytes, more than the file itself holds"),
        ("bad lamina spec", {
            let mut m = lamina.clone();
            m.metadata_props[0].value = Some("{ not json".into());
            m.encode_to_vec()
        }, "the lamina spec in the model's metadata is invalid: malformed JSON (key must be a string at line 1 column 3)"),
        ("lamina parameter missing", {
            let mut m = lamina.clone();
            // renamed, with its readers, so that the graph stays well formed
            let g = graph(&mut m);
            for t in g.initializer.iter_mut().filter(|t| t.name.as_deref() == Some("fc.bias")) {
                t.name = Some("renamed".into());
            }
            for inp in g.node.iter_mut().flat_map(|n| n.input.iter_mut()) {
                if inp == "fc.bias" {
                    *inp = "renamed".into();
                }
            }
            m.encode_to_vec()
        }, "parameter 'fc.bias' of the lamina spec has no initializer"),
        ("lamina spec with an enormous layer", {
            let mut m = lamina.clone();
            let json = m.metadata_props[0].value.clone().unwrap();
            m.metadata_props[0].value = Some(json.replace("\"units\": 3", "\"units\": 4611686018427387904"));
            m.encode_to_vec()
        }, "layer 0 'fc' (Dense): a parameter would hold more than 2^48 values"),
        ("enormous input", with(|m| {
            let t = graph(m).input[0].r#type.as_mut().unwrap().tensor_type.as_mut().unwrap();
            t.shape.as_mut().unwrap().dim[1].dim_value = Some(1 << 40);
        }), "graph input 'x' of shape [2,1099511627776] has more than 2^40 elements"),
        ("lamina graph edited", {
            let mut m = lamina.clone();
            graph(&mut m).node.retain(|n| n.op_type.as_deref() != Some("Add"));
            let g = graph(&mut m);
            let last = g.node.len() - 1;
            g.node[last].output[0] = "y".into();
            m.encode_to_vec()
        }, "the graph is not the one lamina exports for the spec in its metadata (it was changed after export)"),
        ("lamina parameter misshapen", {
            let mut m = lamina.clone();
            let w = graph(&mut m).initializer.iter_mut().find(|t| t.name.as_deref() == Some("fc.weight")).unwrap();
            w.dims = vec![4, 3];
            m.encode_to_vec()
        }, "'fc.weight' has shape [4,3], expected [3,4]"),
    ];
    for (what, bytes, want) in rows {
        match import(&bytes) {
            Ok(_) => panic!("{what}: imported"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("ONNX import: "), "{what}: {msg}");
                assert!(
                    msg.contains(want),
                    "{what}: got\n  {msg}\nexpected it to contain\n  {want}"
                );
            }
        }
    }
}

#[test]
fn truncated_or_corrupted_files_are_errors_never_panics() {
    let files = [
        std::fs::read(fixture("mlp_legacy.onnx")).unwrap(),
        std::fs::read(fixture("cnn_dynamo.onnx")).unwrap(),
        {
            let (_, spec) = models::models().remove(0);
            lamina_onnx::export(&spec, &models::params(&spec), None).unwrap()
        },
    ];
    for bytes in &files {
        assert!(import(bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(import(&bytes[..cut]).is_err(), "cut at {cut} imported");
        }
        // Every byte replaced by a few values: any result but a panic.
        let mut b = bytes.clone();
        for i in 0..b.len() {
            let keep = b[i];
            for v in [0x00, 0x7f, 0xff] {
                b[i] = v;
                let _ = import(&b);
            }
            b[i] = keep;
        }
    }
}

#[test]
fn from_weights_names_a_missing_or_extra_tensor() {
    let spec = ModelBuilder::new(&[2, 4])
        .dense(3, true, "fc")
        .compile()
        .unwrap();
    let mut w = models::params(&spec);
    w.remove("fc.bias");
    let e = Inferencer::from_weights(spec.clone(), w, DType::F32, Device::Cpu)
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "tensor \"fc.bias\" is missing");
    let mut w = models::params(&spec);
    w.insert("other".into(), HostTensor::f32(&[1], vec![0.0]).unwrap());
    let e = Inferencer::from_weights(spec, w, DType::F32, Device::Cpu)
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "tensor \"other\" does not belong to this model"
    );
}
