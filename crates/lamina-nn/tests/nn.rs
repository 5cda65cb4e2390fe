//! lamina-nn's test binary: the layer table (shapes, parameter counts, gradients), golden PyTorch
//! outputs, JSON round trips of built-in and custom layers, and the bad-input table.

use lamina_core::{Backend, DType, Graph, HostTensor, Op, Plan, StateMap, Tensor};
use lamina_nn::layers::{Conv2D, MultiHeadAttention};
use lamina_nn::{Init, Layer, LayerRegistry, Mode, ModelBuilder, ModelSpec, Scope};
use lamina_ref::check::{assert_close, grad_check, TestRng};
use lamina_ref::RefBackend;
use serde_json::{json, Value};
use std::sync::Arc;

/// PReLU as a user would write it: one learnable slope per feature.
struct UserPRelu {
    alpha_init: f64,
}
impl Layer for UserPRelu {
    fn type_name(&self) -> &str {
        "UserPReLU"
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> lamina_core::Result<Tensor> {
        let alpha = s.param("alpha", &[x.dim(-1)], Init::Constant(self.alpha_init));
        Ok(x.relu() + alpha * x.minimum(0.0))
    }
    fn config(&self) -> Value {
        json!({ "alpha_init": self.alpha_init })
    }
}

fn registry() -> LayerRegistry {
    let mut r = LayerRegistry::new();
    r.register("UserPReLU", |c| {
        Ok(Arc::new(UserPRelu {
            alpha_init: c["alpha_init"]
                .as_f64()
                .ok_or("alpha_init must be a number")?,
        }))
    });
    r
}

type Build = fn(ModelBuilder) -> ModelBuilder;
type LayerRow = (&'static str, Vec<usize>, Build, Vec<usize>, u64);

/// (name, input shape, builder, output shape, trainable parameters)
fn layer_table() -> Vec<LayerRow> {
    vec![
        (
            "dense",
            vec![4, 5],
            |b| b.dense(3, true, "l"),
            vec![4, 3],
            18,
        ),
        (
            "dense_no_bias_rank4",
            vec![2, 2, 3, 2],
            |b| b.dense(3, false, "l"),
            vec![2, 3],
            36,
        ),
        (
            "conv2d",
            vec![2, 3, 6, 5],
            |b| b.conv2d(4, 3, 2, 1, true, "l"),
            vec![2, 4, 3, 3],
            112,
        ),
        (
            "conv2d_dilated_grouped",
            vec![1, 4, 7, 7],
            |b| b.layer(Conv2D::new(6, 3, 1, 2, true).dilation(2).groups(2), "l"),
            vec![1, 6, 7, 7],
            114,
        ),
        (
            "max_pool2d",
            vec![2, 3, 6, 5],
            |b| b.max_pool2d(2, 2, "l"),
            vec![2, 3, 3, 2],
            0,
        ),
        (
            "avg_pool2d",
            vec![2, 3, 6, 6],
            |b| b.avg_pool2d(3, 3, "l"),
            vec![2, 3, 2, 2],
            0,
        ),
        (
            "batch_norm_2d",
            vec![4, 3, 3, 3],
            |b| b.batch_norm(1e-5, 0.1, true, "l"),
            vec![4, 3, 3, 3],
            6,
        ),
        (
            "batch_norm_1d",
            vec![6, 5],
            |b| b.batch_norm(1e-3, 0.1, false, "l"),
            vec![6, 5],
            0,
        ),
        (
            "layer_norm",
            vec![2, 3, 4],
            |b| b.layer_norm(1e-5, "l"),
            vec![2, 3, 4],
            8,
        ),
        (
            "dropout",
            vec![4, 6],
            |b| b.dropout(0.5, "l"),
            vec![4, 6],
            0,
        ),
        ("flatten", vec![2, 3, 4], |b| b.flatten("l"), vec![2, 12], 0),
        (
            "reshape",
            vec![2, 12],
            |b| b.reshape(&[3, 4], "l"),
            vec![2, 3, 4],
            0,
        ),
        (
            "embedding",
            vec![2, 3],
            |b| b.embedding(7, 4, "l"),
            vec![2, 3, 4],
            28,
        ),
        ("relu", vec![3, 4], |b| b.relu("l"), vec![3, 4], 0),
        (
            "leaky_relu",
            vec![3, 4],
            |b| b.leaky_relu(0.1, "l"),
            vec![3, 4],
            0,
        ),
        ("elu", vec![3, 4], |b| b.elu(1.0, "l"), vec![3, 4], 0),
        ("sigmoid", vec![3, 4], |b| b.sigmoid("l"), vec![3, 4], 0),
        ("tanh", vec![3, 4], |b| b.tanh("l"), vec![3, 4], 0),
        ("swish", vec![3, 4], |b| b.swish("l"), vec![3, 4], 0),
        ("gelu", vec![3, 4], |b| b.gelu("l"), vec![3, 4], 0),
        ("softmax", vec![3, 4], |b| b.softmax(-1, "l"), vec![3, 4], 0),
        ("prelu", vec![3, 4, 2], |b| b.prelu("l"), vec![3, 4, 2], 4),
        ("glu", vec![3, 5], |b| b.glu(4, "l"), vec![3, 4], 48),
        (
            "attention",
            vec![2, 3, 8],
            |b| b.multi_head_attention(2, "l"),
            vec![2, 3, 8],
            288,
        ),
        (
            "attention_causal",
            vec![2, 4, 8],
            |b| {
                b.layer(
                    MultiHeadAttention {
                        heads: 4,
                        causal: true,
                    },
                    "l",
                )
            },
            vec![2, 4, 8],
            288,
        ),
        (
            "residual",
            vec![3, 6],
            |b| {
                b.residual(
                    |r| r.dense(6, true, "a").relu("act").dense(6, true, "b"),
                    "l",
                )
            },
            vec![3, 6],
            84,
        ),
        (
            "custom",
            vec![3, 5],
            |b| b.layer(UserPRelu { alpha_init: 0.2 }, "l"),
            vec![3, 5],
            5,
        ),
    ]
}

fn run_ref(g: &Graph, state: &mut StateMap<HostTensor>, x: &HostTensor) -> Vec<HostTensor> {
    let plan = Plan::compile(g).unwrap();
    let mut exe = RefBackend.compile(&plan).unwrap();
    RefBackend.run(&mut exe, state, &[x]).unwrap()
}

fn state_of(spec: &ModelSpec, dtype: DType) -> StateMap<HostTensor> {
    let mut st = spec.initial_state(dtype).unwrap();
    st.insert("rng".into(), HostTensor::i32(&[2], vec![7, 1]).unwrap());
    st
}

fn input_for(name: &str, shape: &[usize], dtype: DType, rng: &mut TestRng) -> HostTensor {
    let n = shape.iter().product();
    // embedding indices sit mid-way between integers, so the truncating cast is stable under the
    // gradient check's perturbation (the index itself has no gradient)
    let v = if name == "embedding" {
        (0..n).map(|_| rng.below(7) as f64 + 0.5).collect()
    } else {
        rng.vec(n, -1.5, 1.5)
    };
    HostTensor::from_f64(shape, dtype, &v).unwrap()
}

#[test]
fn layer_table_shapes_and_parameter_counts() {
    for (name, shape, build, out, params) in layer_table() {
        let spec = build(ModelBuilder::new(&shape))
            .compile()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(spec.output_shape, out, "{name}: output shape");
        assert_eq!(spec.total_parameters, params, "{name}: parameters");
        assert_eq!(spec.layers[0].input_shape, shape, "{name}: input shape");
        // a second batch size gives the same per-sample shapes
        let mut big = shape.clone();
        big[0] += 3;
        let spec2 = build(ModelBuilder::new(&big)).compile().unwrap();
        assert_eq!(
            spec2.output_shape[1..],
            out[1..],
            "{name}: batch {}",
            big[0]
        );
    }
}

/// Gradient of every layer, with respect to its input and all its parameters (train mode: batch
/// statistics, dropout with a fixed key), against f64 central differences.
#[test]
fn layer_table_gradients() {
    let mut rng = TestRng::new(3);
    for (name, shape, build, _, _) in layer_table() {
        let spec = build(ModelBuilder::new(&shape)).compile().unwrap();
        let g = spec
            .forward_graph(shape[0], Mode::Train, DType::F64)
            .unwrap();
        let state = state_of(&spec, DType::F64);
        // parameters become inputs so the check covers them
        let mut g2 = Graph {
            nodes: g.nodes.clone(),
            outputs: g.outputs.clone(),
        };
        g2.nodes.retain(|n| !matches!(n.op, Op::Assign { .. }));
        let mut feeds = Vec::new();
        for n in g2.nodes.iter_mut() {
            match n.op.clone() {
                Op::Input { .. } => feeds.push(input_for(name, &shape, DType::F64, &mut rng)),
                Op::State {
                    name: p,
                    shape,
                    dtype,
                } => {
                    feeds.push(state[&p].clone());
                    n.op = Op::Input {
                        name: p,
                        shape,
                        dtype,
                    };
                }
                _ => {}
            }
        }
        let r = grad_check(&g2, &feeds, &StateMap::new(), 1, 11)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            r.ok(1e-6),
            "{name}: autodiff {} vs central difference {}",
            r.analytic,
            r.numeric
        );
    }
}

/// Forward outputs equal PyTorch's (tools/golden/nn_layers.py) for the same weights: the f64
/// reference to 1e-10, the f32 CPU backend to 1e-5.
#[test]
fn golden_pytorch_forward_outputs() {
    let fx = lamina_ref::fixtures::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nn_layers.safetensors"
    ))
    .unwrap();
    let fixture = |k: &str| fx.get(k).cloned();
    let cases: Vec<(&str, Build, Mode)> = vec![
        ("dense", |b| b.dense(4, true, "l"), Mode::Eval),
        ("dense_rank3", |b| b.dense(6, true, "l"), Mode::Eval),
        (
            "conv_s2_p1",
            |b| b.conv2d(4, 3, 2, 1, true, "l"),
            Mode::Eval,
        ),
        (
            "conv_groups2_d2",
            |b| b.layer(Conv2D::new(6, 3, 1, 2, true).dilation(2).groups(2), "l"),
            Mode::Eval,
        ),
        (
            "conv_nobias",
            |b| b.conv2d(3, 2, 1, 0, false, "l"),
            Mode::Eval,
        ),
        ("maxpool_2", |b| b.max_pool2d(2, 2, "l"), Mode::Eval),
        (
            "maxpool_3_s2_p1",
            |b| {
                b.layer(
                    lamina_nn::layers::MaxPool2D {
                        kernel: 3,
                        stride: 2,
                        padding: 1,
                    },
                    "l",
                )
            },
            Mode::Eval,
        ),
        ("avgpool_2", |b| b.avg_pool2d(2, 2, "l"), Mode::Eval),
        (
            "avgpool_3_s2_p1",
            |b| {
                b.layer(
                    lamina_nn::layers::AvgPool2D {
                        kernel: 3,
                        stride: 2,
                        padding: 1,
                    },
                    "l",
                )
            },
            Mode::Eval,
        ),
        (
            "batchnorm2d_train",
            |b| b.batch_norm(1e-5, 0.1, true, "l"),
            Mode::Train,
        ),
        (
            "batchnorm2d_eval",
            |b| b.batch_norm(1e-5, 0.1, true, "l"),
            Mode::Eval,
        ),
        (
            "batchnorm1d_train",
            |b| b.batch_norm(1e-3, 0.3, true, "l"),
            Mode::Train,
        ),
        (
            "batchnorm1d_eval",
            |b| b.batch_norm(1e-3, 0.3, true, "l"),
            Mode::Eval,
        ),
        ("layernorm", |b| b.layer_norm(1e-5, "l"), Mode::Eval),
        ("gelu", |b| b.gelu("l"), Mode::Eval),
        ("swish", |b| b.swish("l"), Mode::Eval),
        ("elu", |b| b.elu(0.7, "l"), Mode::Eval),
        ("leaky_relu", |b| b.leaky_relu(0.01, "l"), Mode::Eval),
        ("sigmoid", |b| b.sigmoid("l"), Mode::Eval),
        ("tanh", |b| b.tanh("l"), Mode::Eval),
        ("softmax", |b| b.softmax(-1, "l"), Mode::Eval),
        ("embedding", |b| b.embedding(10, 4, "l"), Mode::Eval),
        ("prelu", |b| b.prelu("l"), Mode::Eval),
        ("glu", |b| b.glu(4, "l"), Mode::Eval),
        ("attention", |b| b.multi_head_attention(2, "l"), Mode::Eval),
        (
            "attention_causal",
            |b| {
                b.layer(
                    MultiHeadAttention {
                        heads: 4,
                        causal: true,
                    },
                    "l",
                )
            },
            Mode::Eval,
        ),
    ];
    let cpu = lamina_cpu::CpuBackend::new();
    for (case, build, mode) in cases {
        let x = fixture(&format!("{case}.x")).unwrap();
        let want = fixture(&format!("{case}.y")).unwrap();
        let spec = build(ModelBuilder::new(x.shape())).compile().unwrap();
        for dtype in [DType::F64, DType::F32] {
            let mut state = StateMap::new();
            for p in spec.params() {
                let key = format!("{case}.{}", p.path.strip_prefix("l.").unwrap());
                let v = fixture(&key).unwrap_or_else(|| panic!("{case}: fixture has no {key}"));
                state.insert(p.path.clone(), v.cast(dtype).unwrap());
            }
            let g = spec.forward_graph(x.shape()[0], mode, dtype).unwrap();
            let xd = x.cast(dtype).unwrap();
            let (got, state) = if dtype == DType::F64 {
                let mut st = state;
                (run_ref(&g, &mut st, &xd), st)
            } else {
                let plan = Plan::compile(&g).unwrap();
                let mut exe = cpu.compile(&plan).unwrap();
                let mut st: StateMap<_> = state
                    .iter()
                    .map(|(k, v)| (k.clone(), cpu.upload(v).unwrap()))
                    .collect();
                let out = cpu.run(&mut exe, &mut st, &[&xd]).unwrap();
                (
                    out,
                    st.iter()
                        .map(|(k, v)| (k.clone(), cpu.download(v).unwrap()))
                        .collect(),
                )
            };
            let (rtol, atol) = if dtype == DType::F64 {
                (1e-10, 1e-12)
            } else {
                (1e-5, 1e-6)
            };
            assert_close(&got[0], &want, rtol, atol, &format!("{case} {dtype}"));
            if mode == Mode::Train {
                for stat in ["running_mean", "running_var"] {
                    let after = fixture(&format!("{case}.{stat}_after")).unwrap();
                    assert_close(
                        &state[&format!("l.{stat}")],
                        &after,
                        rtol,
                        atol,
                        &format!("{case} {dtype} {stat}"),
                    );
                }
            }
        }
    }
}

#[test]
fn seed_example_compiles_to_six_layers_and_235146_parameters() {
    let model = ModelBuilder::new(&[32, 784])
        .dense(256, true, "dense1")
        .swish("swish1")
        .dense(128, true, "dense2")
        .swish("swish2")
        .dense(10, true, "output")
        .softmax(-1, "softmax")
        .compile()
        .unwrap();
    assert_eq!(model.layers.len(), 6);
    assert_eq!(model.total_parameters, 235_146);
    let l = &model.layers[0];
    assert_eq!(
        (
            l.name.as_str(),
            l.type_name(),
            l.input_shape.clone(),
            l.output_shape.clone()
        ),
        ("dense1", "Dense", vec![32, 784], vec![32, 256])
    );
    assert_eq!(
        l.parameter_shapes,
        vec![
            ("dense1.weight".to_string(), vec![256, 784]),
            ("dense1.bias".to_string(), vec![256])
        ]
    );
    assert_eq!(l.parameter_count, 200_960);
    let summary = model.summary();
    for row in [
        "dense1",
        "Dense",
        "[32,256]",
        "200,960",
        "Softmax",
        "Total parameters: 235,146",
    ] {
        assert!(summary.contains(row), "summary lacks {row}:\n{summary}");
    }
}

/// Every layer of the table survives to_json → from_json with identical JSON and outputs.
#[test]
fn json_round_trip_of_every_layer() {
    let reg = registry();
    let mut rng = TestRng::new(4);
    for (name, shape, build, _, _) in layer_table() {
        let spec = build(ModelBuilder::new(&shape)).seed(9).compile().unwrap();
        let text = spec.to_json();
        let back =
            ModelSpec::from_json(&text, &reg).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(back.to_json(), text, "{name}");
        let x = input_for(name, &shape, DType::F64, &mut rng);
        let g1 = spec
            .forward_graph(shape[0], Mode::Train, DType::F64)
            .unwrap();
        let g2 = back
            .forward_graph(shape[0], Mode::Train, DType::F64)
            .unwrap();
        let (mut s1, mut s2) = (state_of(&spec, DType::F64), state_of(&back, DType::F64));
        let (y1, y2) = (run_ref(&g1, &mut s1, &x), run_ref(&g2, &mut s2, &x));
        assert_close(&y1[0], &y2[0], 0.0, 0.0, name);
    }
}

#[test]
fn compile_reports_every_problem_at_once() {
    let err = ModelBuilder::new(&[4, 8])
        .dense(0, true, "a")
        .dropout(1.5, "b")
        .dense(3, true, "a")
        .compile()
        .unwrap_err()
        .to_string();
    for want in [
        "3 problem(s)",
        "layer 0 'a' (Dense): units must be ≥ 1, got 0",
        "layer 1 'b' (Dropout): rate must be in [0, 1), got 1.5",
        "layer 2 (Dense): name 'a' is already used by layer 0",
    ] {
        assert!(err.contains(want), "'{err}' lacks '{want}'");
    }
}

/// Bad specs give an error naming the layer and the problem; never a panic.
#[test]
fn bad_input_table() {
    let reg = registry();
    let from_json = |t: &str| {
        ModelSpec::from_json(t, &reg)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let compile = |b: ModelBuilder| b.compile().map(|_| ()).unwrap_err().to_string();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "conv on rank 2",
            compile(ModelBuilder::new(&[4, 8]).conv2d(4, 3, 1, 0, true, "c")),
            vec![
                "layer 0 'c' (Conv2D) on input [4,8]",
                "needs input [batch, channels, height, width], got [4,8]",
            ],
        ),
        (
            "zero units",
            compile(ModelBuilder::new(&[4, 8]).dense(0, true, "d")),
            vec!["'d' (Dense)", "units must be ≥ 1, got 0"],
        ),
        (
            "dropout rate 1",
            compile(ModelBuilder::new(&[4, 8]).dropout(1.0, "drop")),
            vec!["'drop' (Dropout)", "rate must be in [0, 1), got 1"],
        ),
        (
            "dropout rate negative",
            compile(ModelBuilder::new(&[4, 8]).dropout(-0.1, "drop")),
            vec!["rate must be in [0, 1), got -0.1"],
        ),
        (
            "negative padding",
            compile(ModelBuilder::new(&[1, 1, 8, 8]).conv2d(2, 3, 1, -1, true, "c")),
            vec!["'c' (Conv2D)", "padding must be ≥ 0, got -1"],
        ),
        (
            "kernel larger than padded input",
            compile(ModelBuilder::new(&[1, 1, 4, 4]).conv2d(2, 7, 1, 1, true, "big")),
            vec![
                "'big' (Conv2D)",
                "kernel 7",
                "larger than the padded input 6",
            ],
        ),
        (
            "duplicate names",
            compile(ModelBuilder::new(&[4, 8]).relu("x").relu("x")),
            vec!["name 'x' is already used by layer 0"],
        ),
        (
            "a name reserved for checkpoint entries",
            compile(ModelBuilder::new(&[4, 8]).dense(2, true, "optim")),
            vec!["layer 0 (Dense): name 'optim' is reserved (rng, optim and accum"],
        ),
        (
            "unknown custom type",
            from_json(
                r#"{"input_shape":[4,8],"layers":[{"type":"Mystery","name":"m","config":{}}]}"#,
            ),
            vec!["layer 0", "layer 'm'", "unknown layer type 'Mystery'"],
        ),
        (
            "malformed JSON",
            from_json(r#"{"input_shape":[4,8],"layers":[{"type":"Dense""#),
            vec!["model JSON is malformed", "line 1"],
        ),
        (
            "bad config field",
            from_json(
                r#"{"input_shape":[4,8],"layers":[{"type":"Dense","name":"d","config":{"units":"ten","use_bias":true}}]}"#,
            ),
            vec!["layer 'd' (Dense)", "\"units\" must be an integer"],
        ),
        (
            "negative padding in JSON",
            from_json(
                r#"{"input_shape":[1,1,8,8],"layers":[{"type":"Conv2D","name":"c","config":{"out_channels":2,"kernel":3,"padding":-2}}]}"#,
            ),
            vec!["'c' (Conv2D)", "padding must be ≥ 0, got -2"],
        ),
        (
            "residual shape change",
            compile(ModelBuilder::new(&[2, 4]).residual(|r| r.dense(3, true, "in"), "res")),
            vec!["'res' (Residual)", "map [2,4] to [2,3]"],
        ),
        (
            "attention heads",
            compile(ModelBuilder::new(&[2, 3, 6]).multi_head_attention(4, "att")),
            vec!["'att'", "dim 6 is not divisible by 4 heads"],
        ),
        (
            "reshape count",
            compile(ModelBuilder::new(&[2, 6]).reshape(&[4, 2], "r")),
            vec!["'r' (Reshape)", "6 values", "[4,2]"],
        ),
        (
            "empty input shape",
            compile(ModelBuilder::new(&[]).relu("r")),
            vec!["input shape [] must be non-empty"],
        ),
    ];
    for (what, err, wants) in cases {
        for w in wants {
            assert!(err.contains(w), "{what}: '{err}' lacks '{w}'");
        }
    }
}

/// Dropout in training zeroes about `rate` of the elements, scales the rest, and draws a different
/// mask at another step; in evaluation it is the identity.
#[test]
fn dropout_drops_in_training_only() {
    let spec = ModelBuilder::new(&[64, 64])
        .dropout(0.3, "d")
        .compile()
        .unwrap();
    let x = HostTensor::f64(&[64, 64], vec![1.0; 4096]).unwrap();
    let mut st = state_of(&spec, DType::F64);
    let y = run_ref(
        &spec.forward_graph(64, Mode::Train, DType::F64).unwrap(),
        &mut st,
        &x,
    )[0]
    .to_f64();
    let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / 4096.0;
    assert!((zeros - 0.3).abs() < 0.03, "dropped fraction {zeros}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
    st.insert("rng".into(), HostTensor::i32(&[2], vec![7, 2]).unwrap());
    let y2 = run_ref(
        &spec.forward_graph(64, Mode::Train, DType::F64).unwrap(),
        &mut st,
        &x,
    )[0]
    .to_f64();
    assert_ne!(y, y2, "another step must draw another mask");
    let ye = run_ref(
        &spec.forward_graph(64, Mode::Eval, DType::F64).unwrap(),
        &mut st,
        &x,
    )[0]
    .to_f64();
    assert_eq!(ye, vec![1.0; 4096]);
}

#[test]
fn initialisers_follow_pytorch_bounds_and_are_deterministic() {
    let spec = ModelBuilder::new(&[2, 100])
        .dense(50, true, "d")
        .compile()
        .unwrap();
    let st = spec.initial_state(DType::F64).unwrap();
    let w = st["d.weight"].to_f64();
    let bound = 1.0 / 10.0; // kaiming_uniform(a=√5) on fan_in 100 = 1/√100
    assert!(w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > 0.9 * bound));
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    assert!(mean.abs() < 0.01);
    assert_eq!(
        spec.initial_state(DType::F64).unwrap()["d.weight"],
        st["d.weight"]
    );
    let other = ModelBuilder::new(&[2, 100])
        .dense(50, true, "d")
        .seed(1)
        .compile()
        .unwrap();
    assert_ne!(
        other.initial_state(DType::F64).unwrap()["d.weight"],
        st["d.weight"]
    );
    let n = Init::Normal {
        mean: 0.0,
        std: 2.0,
    }
    .values(&[10000], 3, "p");
    let var = n.iter().map(|v| v * v).sum::<f64>() / n.len() as f64;
    assert!((var - 4.0).abs() < 0.2, "variance {var}");
    let x = Init::XavierUniform { gain: 1.0 }.values(&[30, 20], 3, "p");
    assert!(x.iter().all(|v| v.abs() <= (6.0f64 / 50.0).sqrt()));
}
