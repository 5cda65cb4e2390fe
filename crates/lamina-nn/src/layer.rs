//! The `Layer` trait and the `Scope` a layer builds its graph in. A layer composes `Tensor`
//! operations; gradients, optimizers, checkpoints and backends then work with no further code.

use crate::init::Init;
use lamina_core::{DType, Error, GraphBuilder, Result, Tensor};

/// A layer: a function of its input tensor and its parameters, written with graph operations.
///
/// ```
/// use lamina_nn::{Layer, Scope, Init};
/// use lamina_core::{Tensor, Result};
/// use serde_json::{json, Value};
///
/// /// PReLU with one learnable slope per feature.
/// struct PRelu { alpha_init: f64 }
/// impl Layer for PRelu {
///     fn type_name(&self) -> &str { "MyPReLU" }
///     fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
///         let alpha = s.param("alpha", &[x.dim(-1)], Init::Constant(self.alpha_init));
///         Ok(x.relu() + alpha * x.minimum(0.0))
///     }
///     fn config(&self) -> Value { json!({ "alpha_init": self.alpha_init }) }
/// }
/// ```
pub trait Layer: Send + Sync {
    /// The name serialised specs use for this layer type (`"Dense"`, `"MyPReLU"`).
    fn type_name(&self) -> &str;
    /// Appends the layer's computation on `x` to the graph; parameters come from `s.param`.
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor>;
    /// The configuration that, given to the type's constructor in a `LayerRegistry`, rebuilds it.
    fn config(&self) -> serde_json::Value;
    /// Checks of the configuration alone (before any shape is known); the message names the
    /// argument, the allowed range and the value given.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// A parameter or buffer declared by a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// Dotted path, `layer.param` (`dense1.weight`): the checkpoint key.
    pub path: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Trainable parameters get gradients and optimizer updates; buffers (BatchNorm running
    /// statistics) are updated by the layer itself in training.
    pub trainable: bool,
}

/// Whether the graph being built trains or evaluates (dropout, BatchNorm statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// The context a layer builds in: its name prefix, the parameters declared so far, the mode, the
/// float dtype, the random key and the buffer updates layers ask for.
pub struct Scope<'a> {
    builder: &'a GraphBuilder,
    prefix: String,
    mode: Mode,
    dtype: DType,
    params: Vec<ParamDecl>,
    tensors: Vec<Tensor>,
    updates: Vec<(String, Tensor)>,
    key: Option<Tensor>,
    streams: u32,
}

impl<'a> Scope<'a> {
    /// A root scope over `builder`.
    pub fn new(builder: &'a GraphBuilder, mode: Mode, dtype: DType) -> Self {
        Scope {
            builder,
            prefix: String::new(),
            mode,
            dtype,
            params: vec![],
            tensors: vec![],
            updates: vec![],
            key: None,
            streams: 0,
        }
    }

    /// Uses `key` (i32 `[2]`: seed, step) for random draws instead of a `rng` state buffer.
    pub fn set_key(&mut self, key: Tensor) {
        self.key = Some(key);
    }

    pub fn builder(&self) -> &GraphBuilder {
        self.builder
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn is_training(&self) -> bool {
        self.mode == Mode::Train
    }
    /// The float dtype parameters are declared with.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The current path prefix (`""` at the root, `"res1."` inside a residual block named res1).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `f` with `name.` appended to the prefix.
    pub fn scoped<R>(&mut self, name: &str, f: impl FnOnce(&mut Scope) -> R) -> R {
        let saved = self.prefix.clone();
        self.prefix = format!("{saved}{name}.");
        let r = f(self);
        self.prefix = saved;
        r
    }

    fn declare(&mut self, name: &str, shape: &[usize], init: Init, trainable: bool) -> Tensor {
        let path = format!("{}{name}", self.prefix);
        if let Some(i) = self.params.iter().position(|p| p.path == path) {
            if self.params[i].shape == shape {
                return self.tensors[i]; // a shared parameter: the same state read
            }
        }
        let t = self.builder.state(&path, shape, self.dtype);
        self.params.push(ParamDecl {
            path,
            shape: shape.to_vec(),
            init,
            trainable,
        });
        self.tensors.push(t);
        t
    }

    /// Declares (or reuses) a trainable parameter `prefix.name`.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Tensor {
        self.declare(name, shape, init, true)
    }

    /// Declares a non-trainable buffer `prefix.name` (running statistics).
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> Tensor {
        self.declare(name, shape, init, false)
    }

    /// Asks for buffer `prefix.name` to become `value` at the end of the training step.
    pub fn update(&mut self, name: &str, value: Tensor) {
        self.updates.push((format!("{}{name}", self.prefix), value));
    }

    /// Random bits (i32) for one draw of this layer; each call is a new stream.
    pub fn random_bits(&mut self, shape: &[usize]) -> Tensor {
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.builder.state("rng", &[2], DType::I32);
                self.key = Some(k);
                k
            }
        };
        // The stream is a hash of the layer's path and the draw's number within the step, so it
        // does not depend on how many other layers draw.
        let mut h: u32 = 0x811c_9dc5;
        for b in self.prefix.bytes().chain(self.streams.to_le_bytes()) {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
        self.streams += 1;
        key.random_bits(shape, h)
    }

    /// Every parameter and buffer declared, in declaration order, with its tensor.
    pub fn params(&self) -> impl Iterator<Item = (&ParamDecl, Tensor)> {
        self.params.iter().zip(self.tensors.iter().copied())
    }

    /// Buffer updates asked for (training mode), as `(path, new value)`.
    pub fn updates(&self) -> &[(String, Tensor)] {
        &self.updates
    }

    /// The random key, if any layer drew random bits.
    pub fn key(&self) -> Option<Tensor> {
        self.key
    }

    /// A `Spec` error naming the current layer.
    pub fn error(&self, msg: impl Into<String>) -> Error {
        Error::Spec(format!(
            "{}: {}",
            self.prefix.trim_end_matches('.'),
            msg.into()
        ))
    }
}
