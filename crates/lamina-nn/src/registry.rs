//! `LayerRegistry`: maps a layer type name and its JSON configuration back to a layer, so specs
//! that name custom layers can be loaded.

use crate::layers::*;
use crate::Layer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

type Constructor =
    Arc<dyn Fn(&Value, &LayerRegistry) -> Result<Arc<dyn Layer>, String> + Send + Sync>;

/// Layer constructors by type name. `LayerRegistry::new()` knows every built-in layer; custom
/// layers are added with [`LayerRegistry::register`].
///
/// ```
/// use lamina_nn::{LayerRegistry, layers::Dense};
/// use std::sync::Arc;
/// let mut reg = LayerRegistry::new();
/// reg.register("Wide", |cfg| Ok(Arc::new(Dense { units: cfg["units"].as_u64().ok_or("units")? as usize, use_bias: true })));
/// assert!(reg.contains("Wide") && reg.contains("Dense"));
/// ```
#[derive(Clone)]
pub struct LayerRegistry {
    ctors: BTreeMap<String, Constructor>,
}

impl Default for LayerRegistry {
    fn default() -> Self {
        Self::new()
    }
}

fn arc<L: Layer + 'static>(r: Result<L, String>) -> Result<Arc<dyn Layer>, String> {
    r.map(|l| Arc::new(l) as Arc<dyn Layer>)
}

impl LayerRegistry {
    /// A registry of every built-in layer.
    pub fn new() -> Self {
        let mut r = LayerRegistry {
            ctors: BTreeMap::new(),
        };
        r.register("Dense", |c| arc(Dense::from_config(c)));
        r.register("Conv2D", |c| arc(Conv2D::from_config(c)));
        r.register("MaxPool2D", |c| arc(MaxPool2D::from_config(c)));
        r.register("AvgPool2D", |c| arc(AvgPool2D::from_config(c)));
        r.register("BatchNorm", |c| arc(BatchNorm::from_config(c)));
        r.register("LayerNorm", |c| arc(LayerNorm::from_config(c)));
        r.register("Dropout", |c| arc(Dropout::from_config(c)));
        r.register("Flatten", |_| arc(Ok(Flatten)));
        r.register("Reshape", |c| arc(Reshape::from_config(c)));
        r.register("Embedding", |c| arc(Embedding::from_config(c)));
        r.register("ReLU", |_| arc(Ok(Activation::Relu)));
        r.register("Sigmoid", |_| arc(Ok(Activation::Sigmoid)));
        r.register("Tanh", |_| arc(Ok(Activation::Tanh)));
        r.register("Swish", |_| arc(Ok(Activation::Swish)));
        r.register("GELU", |_| arc(Ok(Activation::Gelu)));
        r.register("LeakyReLU", |c| arc(LeakyRelu::from_config(c)));
        r.register("ELU", |c| arc(Elu::from_config(c)));
        r.register("Softmax", |c| arc(Softmax::from_config(c)));
        r.register("PReLU", |c| arc(PRelu::from_config(c)));
        r.register("GLU", |c| arc(Glu::from_config(c)));
        r.register("MultiHeadAttention", |c| {
            arc(MultiHeadAttention::from_config(c))
        });
        r.ctors.insert(
            "Residual".into(),
            Arc::new(|c, reg| arc(Residual::from_config(c, reg))),
        );
        r
    }

    /// Adds (or replaces) the constructor of `type_name`.
    pub fn register(
        &mut self,
        type_name: &str,
        ctor: impl Fn(&Value) -> Result<Arc<dyn Layer>, String> + Send + Sync + 'static,
    ) {
        self.ctors
            .insert(type_name.to_string(), Arc::new(move |c, _| ctor(c)));
    }

    pub fn contains(&self, type_name: &str) -> bool {
        self.ctors.contains_key(type_name)
    }

    /// Every known type name, sorted.
    pub fn type_names(&self) -> Vec<&str> {
        self.ctors.keys().map(|s| s.as_str()).collect()
    }

    /// Builds a layer of `type_name` from its configuration.
    pub fn build(&self, type_name: &str, config: &Value) -> Result<Arc<dyn Layer>, String> {
        match self.ctors.get(type_name) {
            Some(c) => c(config, self),
            None => Err(format!("unknown layer type '{type_name}' (known: {}; register custom layers in the LayerRegistry)", self.type_names().join(", "))),
        }
    }

    /// Reads `{"type": …, "name": …, "config": …}`.
    pub fn layer_from_json(&self, v: &Value) -> Result<(String, Arc<dyn Layer>), String> {
        let name = v
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or("a layer needs a string \"name\"")?;
        let ty = v
            .get("type")
            .and_then(|n| n.as_str())
            .ok_or_else(|| format!("layer '{name}' needs a string \"type\""))?;
        let empty = Value::Object(Default::default());
        let cfg = v.get("config").unwrap_or(&empty);
        let layer = self
            .build(ty, cfg)
            .map_err(|e| format!("layer '{name}' ({ty}): {e}"))?;
        Ok((name.to_string(), layer))
    }
}
