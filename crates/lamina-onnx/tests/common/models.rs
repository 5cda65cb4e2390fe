//! The models exported by the ONNX tests and by the `onnx_fixtures` example, with parameter values
//! and inputs that exercise every branch (non-trivial BatchNorm statistics, out-of-range
//! embedding indices).

use lamina_core::{DType, HostTensor, Result, StateMap, Tensor};
use lamina_nn::layers::{Conv2D, MultiHeadAttention};
use lamina_nn::{Init, Layer, LayerRegistry, ModelBuilder, ModelSpec, Scope};
use serde_json::{json, Value};
use std::sync::Arc;

/// A custom layer (not known to lamina-nn) touching many primitives: PReLU (state, max via
/// minimum), flip (gather with constant indices), pad + slice (a shift), argmax + one-hot (iota,
/// compare, cast), concat, erf and tanh.
pub struct Fancy;

impl Layer for Fancy {
    fn type_name(&self) -> &str {
        "TestFancy"
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        let d = x.dim(-1);
        let alpha = s.param("alpha", &[d], Init::Constant(0.25));
        let p = x.relu() + alpha * x.minimum(0.0);
        let flipped = p.flip(1);
        let shifted = p.pad(&[(0, 0), (1, 0)], 0.5).slice(1, 0, d, 1);
        let cls = x.argmax(-1, false).one_hot(d, DType::F32);
        let y = Tensor::concat(&[flipped + shifted, cls], -1);
        Ok((y * 0.5).tanh() + y.erf())
    }
    fn config(&self) -> Value {
        json!({})
    }
}

/// `(name, spec)` of every test model; batch sizes are the specs' own.
pub fn models() -> Vec<(&'static str, ModelSpec)> {
    let mlp = ModelBuilder::new(&[3, 8])
        .dense(16, true, "dense1")
        .relu("relu1")
        .dense(5, true, "out")
        .softmax(-1, "softmax");
    let cnn = ModelBuilder::new(&[2, 3, 8, 8])
        .conv2d(4, 3, 1, 1, true, "conv1")
        .relu("relu1")
        .max_pool2d(2, 2, "pool1")
        .conv2d(6, 3, 2, 1, false, "conv2")
        .avg_pool2d(2, 1, "pool2")
        .flatten("flatten")
        .dense(10, true, "out");
    let norms = ModelBuilder::new(&[4, 12])
        .dense(10, true, "dense")
        .batch_norm(1e-5, 0.1, true, "bn")
        .layer_norm(1e-5, "ln")
        .gelu("gelu")
        .dropout(0.5, "drop")
        .dense(3, true, "out");
    let attention = ModelBuilder::new(&[2, 5, 8])
        .multi_head_attention(2, "mha")
        .layer_norm(1e-5, "ln")
        .dense(4, true, "out");
    let residual = ModelBuilder::new(&[3, 8])
        .dense(8, true, "inp")
        .residual(
            |b| b.dense(8, true, "fc1").swish("act").dense(8, true, "fc2"),
            "res",
        )
        .leaky_relu(0.1, "lrelu")
        .elu(1.0, "elu")
        .dense(4, true, "out")
        .sigmoid("sigmoid");
    let custom = ModelBuilder::new(&[3, 6])
        .dense(6, true, "dense")
        .layer(Fancy, "fancy")
        .tanh("tanh");
    let embedding = ModelBuilder::new(&[2, 5])
        .embedding(7, 4, "emb")
        .flatten("flatten")
        .prelu("prelu")
        .glu(3, "glu");
    [
        ("mlp", mlp),
        ("cnn", cnn),
        ("norms", norms),
        ("attention", attention),
        ("residual", residual),
        ("custom", custom),
        ("embedding", embedding),
    ]
    .into_iter()
    .map(|(n, b)| (n, b.compile().expect(n)))
    .collect()
}

/// The registry that knows [`Fancy`] (for importing the `custom` model).
pub fn registry() -> LayerRegistry {
    let mut r = LayerRegistry::new();
    r.register("TestFancy", |_| Ok(Arc::new(Fancy)));
    r
}

/// Every built-in layer alone (the rows of lamina-nn's layer table, with its configurations),
/// named `layer_<row>`.
pub fn layer_models() -> Vec<(String, ModelSpec)> {
    type Build = fn(ModelBuilder) -> ModelBuilder;
    let rows: Vec<(&str, Vec<usize>, Build)> = vec![
        ("dense", vec![4, 5], |b| b.dense(3, true, "l")),
        ("dense_no_bias_rank4", vec![2, 2, 3, 2], |b| {
            b.dense(3, false, "l")
        }),
        ("conv2d", vec![2, 3, 6, 5], |b| {
            b.conv2d(4, 3, 2, 1, true, "l")
        }),
        ("conv2d_dilated_grouped", vec![1, 4, 7, 7], |b| {
            b.layer(Conv2D::new(6, 3, 1, 2, true).dilation(2).groups(2), "l")
        }),
        ("max_pool2d", vec![2, 3, 6, 5], |b| b.max_pool2d(2, 2, "l")),
        ("avg_pool2d", vec![2, 3, 6, 6], |b| b.avg_pool2d(3, 3, "l")),
        ("batch_norm_2d", vec![4, 3, 3, 3], |b| {
            b.batch_norm(1e-5, 0.1, true, "l")
        }),
        ("batch_norm_1d", vec![6, 5], |b| {
            b.batch_norm(1e-3, 0.1, false, "l")
        }),
        ("layer_norm", vec![2, 3, 4], |b| b.layer_norm(1e-5, "l")),
        ("dropout", vec![4, 6], |b| b.dropout(0.5, "l")),
        ("flatten", vec![2, 3, 4], |b| b.flatten("l")),
        ("reshape", vec![2, 12], |b| b.reshape(&[3, 4], "l")),
        ("embedding", vec![2, 3], |b| b.embedding(7, 4, "l")),
        ("relu", vec![3, 4], |b| b.relu("l")),
        ("leaky_relu", vec![3, 4], |b| b.leaky_relu(0.1, "l")),
        ("elu", vec![3, 4], |b| b.elu(1.0, "l")),
        ("sigmoid", vec![3, 4], |b| b.sigmoid("l")),
        ("tanh", vec![3, 4], |b| b.tanh("l")),
        ("swish", vec![3, 4], |b| b.swish("l")),
        ("gelu", vec![3, 4], |b| b.gelu("l")),
        ("softmax", vec![3, 4], |b| b.softmax(-1, "l")),
        ("prelu", vec![3, 4, 2], |b| b.prelu("l")),
        ("glu", vec![3, 5], |b| b.glu(4, "l")),
        ("attention", vec![2, 3, 8], |b| {
            b.multi_head_attention(2, "l")
        }),
        ("attention_causal", vec![2, 4, 8], |b| {
            b.layer(
                MultiHeadAttention {
                    heads: 4,
                    causal: true,
                },
                "l",
            )
        }),
        ("residual", vec![3, 6], |b| {
            b.residual(
                |r| r.dense(6, true, "a").relu("act").dense(6, true, "b"),
                "l",
            )
        }),
    ];
    rows.into_iter()
        .map(|(n, shape, build)| {
            let name = format!("layer_{n}");
            let spec = build(ModelBuilder::new(&shape)).compile().expect(n);
            (name, spec)
        })
        .collect()
}

/// The example models of the repository (`examples/*.json`), named `example_<file stem>`.
pub fn example_models() -> Vec<(String, ModelSpec)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples folder")
        .map(|e| e.expect("examples entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples/*.json");
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("example spec");
            let spec = ModelSpec::from_json(&text, &LayerRegistry::new()).expect("example spec");
            let stem = p.file_stem().unwrap().to_string_lossy();
            (format!("example_{stem}"), spec)
        })
        .collect()
}

/// A small deterministic generator (xorshift), so fixtures need no RNG crate.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The model's initial parameters, perturbed so that zero biases, unit scales and BatchNorm's
/// (0, 1) running statistics do not hide a wrong translation.
pub fn params(spec: &ModelSpec) -> StateMap<HostTensor> {
    let mut state = spec.initial_state(DType::F32).unwrap();
    let mut rng = Lcg::new(7);
    for (path, t) in state.iter_mut() {
        let Some(v) = t.as_f32() else { continue };
        let v: Vec<f32> = v
            .iter()
            .map(|&x| {
                let r = rng.next();
                if path.ends_with("running_var") {
                    0.5 + r.abs()
                } else {
                    x + 0.3 * r
                }
            })
            .collect();
        *t = HostTensor::f32(t.shape(), v).unwrap();
    }
    state
}

/// An input for `name` at the spec's batch size. Embedding models get integer indices, one of
/// them out of range on each side (lamina reads 0 there).
pub fn input(name: &str, spec: &ModelSpec) -> HostTensor {
    let n: usize = spec.input_shape.iter().product();
    let mut rng = Lcg::new(11);
    let v: Vec<f32> = if name.ends_with("embedding") {
        (0..n)
            .map(|i| match i {
                1 => -1.0,
                4 => 7.0,
                _ => ((rng.next() + 1.0) * 3.5).floor(),
            })
            .collect()
    } else {
        (0..n).map(|_| 2.0 * rng.next()).collect()
    };
    HostTensor::f32(&spec.input_shape, v).unwrap()
}

/// Lamina's output for `input`, from the reference interpreter on the graph that was exported.
pub fn expected(spec: &ModelSpec, params: &StateMap<HostTensor>, input: &HostTensor) -> HostTensor {
    let g = lamina_onnx::inference_graph(spec, None).unwrap();
    let mut state = params.clone();
    let out = lamina_ref::run_graph(&g, &[input], &mut state).unwrap();
    out.into_iter().next().unwrap()
}
