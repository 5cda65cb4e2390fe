use super::need_rank;
use crate::config::{boolean, uint};
use crate::{Init, Layer, Scope};
use lamina_core::{Result, Tensor};
use serde_json::{json, Value};

/// Fully connected layer, PyTorch `nn.Linear`: `y = x Wᵀ + b` with `W` of shape `[units, in]`.
/// Inputs above rank 2 are flattened after the batch axis first (as Go-Metal's Dense does).
/// Initialisation: `W ~ kaiming_uniform(a=√5)`, `b ~ U(±1/√in)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub units: usize,
    pub use_bias: bool,
}

impl Dense {
    pub fn from_config(cfg: &Value) -> Result<Dense, String> {
        Ok(Dense {
            units: uint(cfg, "units")?,
            use_bias: boolean(cfg, "use_bias")?,
        })
    }
}

/// `x Wᵀ + b` over the last axis, declaring `weight` `[units, in]` and `bias` `[units]`.
pub(crate) fn linear(
    s: &mut Scope,
    x: Tensor,
    units: usize,
    use_bias: bool,
    prefix: &str,
) -> Tensor {
    let fan_in = x.dim(-1);
    let w = s.param(
        &format!("{prefix}weight"),
        &[units, fan_in],
        Init::KaimingUniform { a: 5f64.sqrt() },
    );
    let y = x.matmul(w.transpose(0, 1));
    if use_bias {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        y + s.param(
            &format!("{prefix}bias"),
            &[units],
            Init::Uniform {
                lo: -bound,
                hi: bound,
            },
        )
    } else {
        y
    }
}

impl Layer for Dense {
    fn type_name(&self) -> &str {
        "Dense"
    }
    fn validate(&self) -> Result<(), String> {
        if self.units == 0 {
            return Err("units must be ≥ 1, got 0".into());
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        if x.rank() < 2 {
            need_rank(x, "Dense", &[2], "[batch, features…]")?;
        }
        let x = if x.rank() > 2 { x.flatten_from(1) } else { x };
        Ok(linear(s, x, self.units, self.use_bias, ""))
    }
    fn config(&self) -> Value {
        json!({ "units": self.units, "use_bias": self.use_bias })
    }
}
