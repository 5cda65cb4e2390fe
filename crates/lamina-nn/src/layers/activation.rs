use super::dense::linear;
use crate::config::{float, int, uint};
use crate::{Init, Layer, Scope};
use lamina_core::{Result, Tensor};
use serde_json::{json, Value};

/// Parameter-free elementwise activations: ReLU, Sigmoid, Tanh, Swish (SiLU) and exact GELU,
/// as PyTorch's `nn.ReLU`, `nn.Sigmoid`, `nn.Tanh`, `nn.SiLU`, `nn.GELU()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    Swish,
    Gelu,
}

impl Layer for Activation {
    fn type_name(&self) -> &str {
        match self {
            Activation::Relu => "ReLU",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Swish => "Swish",
            Activation::Gelu => "GELU",
        }
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Tanh => x.tanh(),
            Activation::Swish => x.silu(),
            Activation::Gelu => x.gelu(),
        })
    }
    fn config(&self) -> Value {
        json!({})
    }
}

/// `x` where positive, `slope·x` elsewhere (PyTorch `nn.LeakyReLU`).
#[derive(Clone, Debug, PartialEq)]
pub struct LeakyRelu {
    pub slope: f64,
}

impl LeakyRelu {
    pub fn from_config(cfg: &Value) -> Result<LeakyRelu, String> {
        Ok(LeakyRelu {
            slope: float(cfg, "slope")?,
        })
    }
}

impl Layer for LeakyRelu {
    fn type_name(&self) -> &str {
        "LeakyReLU"
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        Ok(x.gt(0.0).where_(x, x * self.slope))
    }
    fn config(&self) -> Value {
        json!({ "slope": self.slope })
    }
}

/// `x` where positive, `alpha·(eˣ − 1)` elsewhere (PyTorch `nn.ELU`).
#[derive(Clone, Debug, PartialEq)]
pub struct Elu {
    pub alpha: f64,
}

impl Elu {
    pub fn from_config(cfg: &Value) -> Result<Elu, String> {
        Ok(Elu {
            alpha: float(cfg, "alpha")?,
        })
    }
}

impl Layer for Elu {
    fn type_name(&self) -> &str {
        "ELU"
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        // exp of min(x, 0): the branch not taken must not overflow, or its gradient is 0·∞
        Ok(x.gt(0.0)
            .where_(x, (x.minimum(0.0).exp() - 1.0) * self.alpha))
    }
    fn config(&self) -> Value {
        json!({ "alpha": self.alpha })
    }
}

/// Softmax along `axis` (PyTorch `nn.Softmax(dim)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax {
    pub axis: isize,
}

impl Softmax {
    pub fn from_config(cfg: &Value) -> Result<Softmax, String> {
        Ok(Softmax {
            axis: int(cfg, "axis")? as isize,
        })
    }
}

impl Layer for Softmax {
    fn type_name(&self) -> &str {
        "Softmax"
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        let r = x.rank() as isize;
        if self.axis >= r || self.axis < -r {
            return Err(lamina_core::Error::Spec(format!(
                "Softmax axis {} is out of range for input {:?}",
                self.axis,
                x.shape()
            )));
        }
        Ok(x.softmax(self.axis))
    }
    fn config(&self) -> Value {
        json!({ "axis": self.axis })
    }
}

/// PReLU with one learnable slope per channel (axis 1), initialised to 0.25
/// (PyTorch `nn.PReLU(num_parameters=C)`): `max(0,x) + a·min(0,x)`.
#[derive(Clone, Debug, PartialEq)]
pub struct PRelu {
    pub init: f64,
}

impl PRelu {
    pub fn from_config(cfg: &Value) -> Result<PRelu, String> {
        Ok(PRelu {
            init: cfg.get("init").and_then(|v| v.as_f64()).unwrap_or(0.25),
        })
    }
}

impl Layer for PRelu {
    fn type_name(&self) -> &str {
        "PReLU"
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        super::need_rank(x, "PReLU", &[2, 3, 4], "[batch, channels, …]")?;
        let c = x.dim(1);
        let alpha = s.param("weight", &[c], Init::Constant(self.init));
        let mut shape = vec![c];
        shape.resize(x.rank() - 1, 1);
        Ok(x.relu() + alpha.reshape(&shape) * x.minimum(0.0))
    }
    fn config(&self) -> Value {
        json!({ "init": self.init })
    }
}

/// Gated linear unit: a projection of the last axis to `2·units`, split into halves `a`, `b`,
/// then `a ⊙ σ(b)` (PyTorch `nn.Linear(in, 2·units)` followed by `F.glu(dim=-1)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Glu {
    pub units: usize,
}

impl Glu {
    pub fn from_config(cfg: &Value) -> Result<Glu, String> {
        Ok(Glu {
            units: uint(cfg, "units")?,
        })
    }
}

impl Layer for Glu {
    fn type_name(&self) -> &str {
        "GLU"
    }
    fn validate(&self) -> Result<(), String> {
        if self.units == 0 {
            return Err("units must be ≥ 1, got 0".into());
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        super::need_rank(
            x,
            "GLU",
            &[2, 3],
            "[batch, features] or [batch, time, features]",
        )?;
        let u = self.units;
        let h = linear(s, x, 2 * u, true, "");
        Ok(h.slice(-1, 0, u, 1) * h.slice(-1, u, 2 * u, 1).sigmoid())
    }
    fn config(&self) -> Value {
        json!({ "units": self.units })
    }
}
