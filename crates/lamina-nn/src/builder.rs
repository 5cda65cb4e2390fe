//! `ModelBuilder`: a model as a list of layers, Keras-Sequential style.

use crate::layers::*;
use crate::spec::{compile, ModelSpec};
use crate::Layer;
use lamina_core::Result;
use std::sync::Arc;

/// Builds a [`ModelSpec`] layer by layer. Shapes after the batch axis are inferred by `compile`.
///
/// ```
/// use lamina_nn::ModelBuilder;
/// let model = ModelBuilder::new(&[32, 784])
///     .dense(256, true, "dense1").swish("swish1")
///     .dense(128, true, "dense2").swish("swish2")
///     .dense(10, true, "output").softmax(-1, "softmax")
///     .compile().unwrap();
/// assert_eq!(model.layers.len(), 6);
/// assert_eq!(model.total_parameters, 235_146);
/// assert_eq!(model.layers[0].output_shape, vec![32, 256]);
/// ```
#[derive(Clone)]
pub struct ModelBuilder {
    input_shape: Vec<usize>,
    layers: Vec<(String, Arc<dyn Layer>)>,
    seed: u64,
}

impl ModelBuilder {
    /// A model taking inputs of `input_shape` (batch axis first).
    pub fn new(input_shape: &[usize]) -> Self {
        ModelBuilder {
            input_shape: input_shape.to_vec(),
            layers: Vec::new(),
            seed: 42,
        }
    }

    /// Seed of the parameter initialisation (default 42).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Appends any layer, built-in or custom.
    pub fn layer(mut self, layer: impl Layer + 'static, name: &str) -> Self {
        self.layers.push((name.to_string(), Arc::new(layer)));
        self
    }

    pub fn dense(self, units: usize, use_bias: bool, name: &str) -> Self {
        self.layer(Dense { units, use_bias }, name)
    }
    pub fn conv2d(
        self,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: i64,
        use_bias: bool,
        name: &str,
    ) -> Self {
        self.layer(
            Conv2D::new(out_channels, kernel, stride, padding, use_bias),
            name,
        )
    }
    pub fn max_pool2d(self, kernel: usize, stride: usize, name: &str) -> Self {
        self.layer(
            MaxPool2D {
                kernel,
                stride,
                padding: 0,
            },
            name,
        )
    }
    pub fn avg_pool2d(self, kernel: usize, stride: usize, name: &str) -> Self {
        self.layer(
            AvgPool2D {
                kernel,
                stride,
                padding: 0,
            },
            name,
        )
    }
    pub fn batch_norm(self, eps: f64, momentum: f64, affine: bool, name: &str) -> Self {
        self.layer(
            BatchNorm {
                eps,
                momentum,
                affine,
            },
            name,
        )
    }
    pub fn layer_norm(self, eps: f64, name: &str) -> Self {
        self.layer(LayerNorm { eps }, name)
    }
    pub fn dropout(self, rate: f64, name: &str) -> Self {
        self.layer(Dropout { rate }, name)
    }
    pub fn flatten(self, name: &str) -> Self {
        self.layer(Flatten, name)
    }
    pub fn reshape(self, shape: &[usize], name: &str) -> Self {
        self.layer(
            Reshape {
                shape: shape.to_vec(),
            },
            name,
        )
    }
    pub fn embedding(self, vocab: usize, dim: usize, name: &str) -> Self {
        self.layer(Embedding { vocab, dim }, name)
    }
    pub fn relu(self, name: &str) -> Self {
        self.layer(Activation::Relu, name)
    }
    pub fn leaky_relu(self, slope: f64, name: &str) -> Self {
        self.layer(LeakyRelu { slope }, name)
    }
    pub fn elu(self, alpha: f64, name: &str) -> Self {
        self.layer(Elu { alpha }, name)
    }
    pub fn sigmoid(self, name: &str) -> Self {
        self.layer(Activation::Sigmoid, name)
    }
    pub fn tanh(self, name: &str) -> Self {
        self.layer(Activation::Tanh, name)
    }
    pub fn swish(self, name: &str) -> Self {
        self.layer(Activation::Swish, name)
    }
    pub fn gelu(self, name: &str) -> Self {
        self.layer(Activation::Gelu, name)
    }
    pub fn softmax(self, axis: isize, name: &str) -> Self {
        self.layer(Softmax { axis }, name)
    }
    pub fn prelu(self, name: &str) -> Self {
        self.layer(PRelu { init: 0.25 }, name)
    }
    pub fn glu(self, units: usize, name: &str) -> Self {
        self.layer(Glu { units }, name)
    }
    pub fn multi_head_attention(self, heads: usize, name: &str) -> Self {
        self.layer(
            MultiHeadAttention {
                heads,
                causal: false,
            },
            name,
        )
    }
    /// A residual block `x + F(x)` with `F` built by `inner` on an empty builder.
    pub fn residual(self, inner: impl FnOnce(ModelBuilder) -> ModelBuilder, name: &str) -> Self {
        let layers = inner(ModelBuilder::new(&[])).layers;
        self.layer(Residual { layers }, name)
    }

    /// Infers every shape and parameter; returns every problem at once.
    pub fn compile(self) -> Result<ModelSpec> {
        compile(&self.input_shape, self.layers, self.seed)
    }
}
