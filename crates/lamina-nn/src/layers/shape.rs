use crate::config::{uint, uints};
use crate::{Init, Layer, Scope};
use lamina_core::{dtype::fmt_shape, DType, Error, Result, Tensor};
use serde_json::{json, Value};

/// Flattens every axis after the batch axis (PyTorch `nn.Flatten()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flatten;

impl Layer for Flatten {
    fn type_name(&self) -> &str {
        "Flatten"
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        super::need_rank(x, "Flatten", &[1, 2, 3, 4, 5, 6], "[batch, …]")?;
        if x.rank() == 1 {
            return Ok(x.reshape(&[x.dim(0), 1]));
        }
        Ok(x.flatten_from(1))
    }
    fn config(&self) -> Value {
        json!({})
    }
}

/// Reshapes every sample to `shape` (the batch axis is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    pub shape: Vec<usize>,
}

impl Reshape {
    pub fn from_config(cfg: &Value) -> Result<Reshape, String> {
        Ok(Reshape {
            shape: uints(cfg, "shape")?,
        })
    }
}

impl Layer for Reshape {
    fn type_name(&self) -> &str {
        "Reshape"
    }
    fn validate(&self) -> Result<(), String> {
        if self.shape.is_empty() || self.shape.contains(&0) {
            return Err(format!(
                "shape must be non-empty with dimensions ≥ 1, got {}",
                fmt_shape(&self.shape)
            ));
        }
        Ok(())
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        let s = x.shape();
        let per_sample: usize = s[1..].iter().product();
        if s.is_empty() || per_sample != self.shape.iter().product::<usize>() {
            return Err(Error::Spec(format!(
                "Reshape cannot turn samples of shape {} ({per_sample} values) into {}",
                fmt_shape(&s[1.min(s.len())..]),
                fmt_shape(&self.shape)
            )));
        }
        let mut t = vec![s[0]];
        t.extend_from_slice(&self.shape);
        Ok(x.reshape(&t))
    }
    fn config(&self) -> Value {
        json!({ "shape": self.shape })
    }
}

/// Lookup table, PyTorch `nn.Embedding(vocab, dim)` with `weight ~ N(0, 1)`. Indices may come as
/// floats holding integers (they are cast) or as i32; an index outside `0..vocab` reads zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedding {
    pub vocab: usize,
    pub dim: usize,
}

impl Embedding {
    pub fn from_config(cfg: &Value) -> Result<Embedding, String> {
        Ok(Embedding {
            vocab: uint(cfg, "vocab")?,
            dim: uint(cfg, "dim")?,
        })
    }
}

impl Layer for Embedding {
    fn type_name(&self) -> &str {
        "Embedding"
    }
    fn validate(&self) -> Result<(), String> {
        if self.vocab == 0 || self.dim == 0 {
            return Err(format!(
                "vocab and dim must be ≥ 1, got vocab {}, dim {}",
                self.vocab, self.dim
            ));
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        let w = s.param(
            "weight",
            &[self.vocab, self.dim],
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        );
        Ok(w.gather(x.cast(DType::I32), 0))
    }
    fn config(&self) -> Value {
        json!({ "vocab": self.vocab, "dim": self.dim })
    }
}
