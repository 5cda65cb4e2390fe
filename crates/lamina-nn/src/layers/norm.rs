use super::need_rank;
use crate::config::{bool_or, float};
use crate::{Init, Layer, Scope};
use lamina_core::{Result, Tensor};
use serde_json::{json, Value};

/// Batch normalisation over the channel axis 1 of `[N, C]`, `[N, C, L]` or `[N, C, H, W]`,
/// PyTorch `nn.BatchNorm1d/2d`: in training, normalise with the batch statistics (biased
/// variance) and update `running_mean`/`running_var` with `momentum` (unbiased variance); in
/// evaluation, normalise with the running statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub eps: f64,
    pub momentum: f64,
    pub affine: bool,
}

impl BatchNorm {
    pub fn from_config(cfg: &Value) -> Result<BatchNorm, String> {
        Ok(BatchNorm {
            eps: float(cfg, "eps")?,
            momentum: float(cfg, "momentum")?,
            affine: bool_or(cfg, "affine", true)?,
        })
    }
}

impl Layer for BatchNorm {
    fn type_name(&self) -> &str {
        "BatchNorm"
    }
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails the check
    fn validate(&self) -> Result<(), String> {
        if !(self.eps > 0.0) {
            return Err(format!("eps must be > 0, got {}", self.eps));
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(format!("momentum must be in [0, 1], got {}", self.momentum));
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        need_rank(
            x,
            "BatchNorm",
            &[2, 3, 4],
            "[batch, channels, …] of rank 2 to 4",
        )?;
        let shape = x.shape();
        let c = shape[1];
        let mut bshape = vec![1; shape.len()];
        bshape[1] = c;
        let axes: Vec<isize> = (0..shape.len() as isize).filter(|&a| a != 1).collect();
        let rm = s.buffer("running_mean", &[c], Init::Zeros);
        let rv = s.buffer("running_var", &[c], Init::Ones);
        let (mean, var) = if s.is_training() {
            let mean = x.mean(&axes, true);
            let var = x.var(&axes, true);
            let n = (shape.iter().product::<usize>() / c) as f64;
            let unbiased = var * (n / (n - 1.0).max(1.0));
            let m = self.momentum;
            s.update("running_mean", rm * (1.0 - m) + mean.reshape(&[c]) * m);
            s.update("running_var", rv * (1.0 - m) + unbiased.reshape(&[c]) * m);
            (mean, var)
        } else {
            (rm.reshape(&bshape), rv.reshape(&bshape))
        };
        let y = (x - mean) / (var + self.eps).sqrt();
        if !self.affine {
            return Ok(y);
        }
        let w = s.param("weight", &[c], Init::Ones);
        let b = s.param("bias", &[c], Init::Zeros);
        Ok(y * w.reshape(&bshape) + b.reshape(&bshape))
    }
    fn config(&self) -> Value {
        json!({ "eps": self.eps, "momentum": self.momentum, "affine": self.affine })
    }
}

/// Layer normalisation over the last axis with a learnable scale and shift, PyTorch
/// `nn.LayerNorm(last_dim, eps)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    pub eps: f64,
}

impl LayerNorm {
    pub fn from_config(cfg: &Value) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            eps: float(cfg, "eps")?,
        })
    }
}

impl Layer for LayerNorm {
    fn type_name(&self) -> &str {
        "LayerNorm"
    }
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails the check
    fn validate(&self) -> Result<(), String> {
        if !(self.eps > 0.0) {
            return Err(format!("eps must be > 0, got {}", self.eps));
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        let d = x.dim(-1);
        let mean = x.mean(&[-1], true);
        let var = x.var(&[-1], true);
        let w = s.param("weight", &[d], Init::Ones);
        let b = s.param("bias", &[d], Init::Zeros);
        Ok((x - mean) / (var + self.eps).sqrt() * w + b)
    }
    fn config(&self) -> Value {
        json!({ "eps": self.eps })
    }
}

/// Inverted dropout, PyTorch `nn.Dropout(rate)`: in training each element is zeroed with
/// probability `rate` and the rest scaled by `1/(1−rate)`; identity in evaluation. The mask comes
/// from the counter-based RNG (keyed by seed and step), so every backend draws the same mask.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    pub rate: f64,
}

impl Dropout {
    pub fn from_config(cfg: &Value) -> Result<Dropout, String> {
        Ok(Dropout {
            rate: float(cfg, "rate")?,
        })
    }
}

impl Layer for Dropout {
    fn type_name(&self) -> &str {
        "Dropout"
    }
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails the check
    fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(format!("rate must be in [0, 1), got {}", self.rate));
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        if !s.is_training() || self.rate == 0.0 {
            return Ok(x);
        }
        // bits are uniform over i32: keep when bits < −2³¹ + (1−rate)·2³²
        let threshold = (-(2f64.powi(31)) + (1.0 - self.rate) * 2f64.powi(32)).round();
        let keep = s.random_bits(&x.shape()).lt(threshold);
        Ok(keep.where_(x * (1.0 / (1.0 - self.rate)), 0.0))
    }
    fn config(&self) -> Value {
        json!({ "rate": self.rate })
    }
}
