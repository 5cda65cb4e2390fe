use crate::{Layer, LayerRegistry, Scope};
use lamina_core::{dtype::fmt_shape, Error, Result, Tensor};
use serde_json::{json, Value};
use std::sync::Arc;

/// A residual block `x + F(x)`, `F` being the inner layers in order. Inner parameters are named
/// `block.inner.param`.
#[derive(Clone)]
pub struct Residual {
    pub layers: Vec<(String, Arc<dyn Layer>)>,
}

impl std::fmt::Debug for Residual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .layers
            .iter()
            .map(|(n, l)| format!("{n}: {}", l.type_name()))
            .collect();
        write!(f, "Residual[{}]", names.join(", "))
    }
}

impl Residual {
    pub fn from_config(cfg: &Value, registry: &LayerRegistry) -> Result<Residual, String> {
        let arr = cfg
            .get("layers")
            .and_then(|v| v.as_array())
            .ok_or("config needs \"layers\": an array of layers")?;
        let layers = arr
            .iter()
            .enumerate()
            .map(|(i, l)| {
                registry
                    .layer_from_json(l)
                    .map_err(|e| format!("inner layer {i}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Residual { layers })
    }
}

impl Layer for Residual {
    fn type_name(&self) -> &str {
        "Residual"
    }
    fn validate(&self) -> Result<(), String> {
        if self.layers.is_empty() {
            return Err("a residual block needs at least one inner layer".into());
        }
        for (i, (name, l)) in self.layers.iter().enumerate() {
            if self.layers[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("two inner layers are named '{name}'"));
            }
            l.validate()
                .map_err(|e| format!("inner layer '{name}' ({}): {e}", l.type_name()))?;
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        let mut h = x;
        for (name, l) in &self.layers {
            h = s.scoped(name, |s| l.build(s, h)).map_err(|e| {
                Error::Spec(format!("inner layer '{name}' ({}): {e}", l.type_name()))
            })?;
            h.check().map_err(|e| {
                Error::Spec(format!("inner layer '{name}' ({}): {e}", l.type_name()))
            })?;
        }
        if h.shape() != x.shape() {
            return Err(Error::Spec(format!(
                "the inner layers map {} to {}; x + F(x) needs equal shapes",
                fmt_shape(&x.shape()),
                fmt_shape(&h.shape())
            )));
        }
        Ok(x + h)
    }
    fn config(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|(n, l)| json!({ "type": l.type_name(), "name": n, "config": l.config() }))
            .collect();
        json!({ "layers": layers })
    }
}
