//! `LayerSpec` and `ModelSpec`: a compiled description of a model — every layer with its input
//! and output shapes and parameters — that round-trips through JSON.

use crate::layer::{Mode, ParamDecl, Scope};
use crate::{Layer, LayerRegistry};
use lamina_core::{
    dtype::fmt_shape, DType, Error, GraphBuilder, HostTensor, Result, StateMap, Tensor,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// Version tag of the JSON format.
pub const SPEC_FORMAT: &str = "lamina.model/1";

/// One layer of a compiled model.
#[derive(Clone)]
pub struct LayerSpec {
    pub name: String,
    pub layer: Arc<dyn Layer>,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Trainable parameters: `(path, shape)`.
    pub parameter_shapes: Vec<(String, Vec<usize>)>,
    /// Number of trainable values.
    pub parameter_count: u64,
    /// Every parameter and buffer with its initialiser.
    pub params: Vec<ParamDecl>,
}

impl LayerSpec {
    pub fn type_name(&self) -> &str {
        self.layer.type_name()
    }
}

impl std::fmt::Debug for LayerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSpec")
            .field("name", &self.name)
            .field("type", &self.type_name())
            .field("config", &self.layer.config())
            .field("input_shape", &self.input_shape)
            .field("output_shape", &self.output_shape)
            .field("parameter_count", &self.parameter_count)
            .finish()
    }
}

/// A compiled model: layers with shapes and parameter counts.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// Input shape, batch axis first.
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub layers: Vec<LayerSpec>,
    pub total_parameters: u64,
    /// Seed of the parameter initialisation.
    pub seed: u64,
}

/// Infers every layer's shapes and parameters; reports every problem found at once.
pub(crate) fn compile(
    input_shape: &[usize],
    entries: Vec<(String, Arc<dyn Layer>)>,
    seed: u64,
) -> Result<ModelSpec> {
    let mut problems: Vec<String> = Vec::new();
    if input_shape.is_empty() || input_shape.contains(&0) {
        problems.push(format!(
            "input shape {} must be non-empty with dimensions ≥ 1 (batch first)",
            fmt_shape(input_shape)
        ));
    }
    for (i, (name, layer)) in entries.iter().enumerate() {
        let ty = layer.type_name();
        if name.is_empty() || name.contains('.') {
            problems.push(format!(
                "layer {i} ({ty}): name '{name}' must be non-empty and contain no '.'"
            ));
        }
        // checkpoints keep lamina's own state under these names (`rng`, `optim.*`, `accum.*`)
        if ["rng", "optim", "accum"].contains(&name.as_str()) {
            problems.push(format!(
                "layer {i} ({ty}): name '{name}' is reserved (rng, optim and accum name lamina's own checkpoint entries)"
            ));
        }
        if let Some(j) = entries[..i].iter().position(|(n, _)| n == name) {
            problems.push(format!(
                "layer {i} ({ty}): name '{name}' is already used by layer {j}"
            ));
        }
        if let Err(e) = layer.validate() {
            problems.push(format!("layer {i} '{name}' ({ty}): {e}"));
        }
    }
    let mut layers = Vec::with_capacity(entries.len());
    if problems.is_empty() {
        let b = GraphBuilder::new();
        let mut x = b.input("x", input_shape, DType::F32);
        let mut scope = Scope::new(&b, Mode::Train, DType::F32);
        for (i, (name, layer)) in entries.iter().enumerate() {
            let before = scope.params().count();
            let in_shape = x.shape();
            let y = scope
                .scoped(name, |s| layer.build(s, x))
                .and_then(|y| y.check())
                .and_then(|y| b.check().map(|_| y));
            match y {
                Ok(y) => {
                    let params: Vec<ParamDecl> = scope
                        .params()
                        .skip(before)
                        .map(|(p, _)| p.clone())
                        .collect();
                    let trainable: Vec<&ParamDecl> =
                        params.iter().filter(|p| p.trainable).collect();
                    // checked: a spec read from a file may declare sizes that overflow
                    let sizes: Option<Vec<u64>> = params
                        .iter()
                        .map(|p| {
                            p.shape
                                .iter()
                                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                                .filter(|&n| n <= 1 << 48)
                        })
                        .collect();
                    let Some(sizes) = sizes else {
                        problems.push(format!(
                            "layer {i} '{name}' ({}): a parameter would hold more than 2^48 values",
                            layer.type_name()
                        ));
                        break;
                    };
                    let parameter_count = params
                        .iter()
                        .zip(&sizes)
                        .filter(|(p, _)| p.trainable)
                        .map(|(_, &n)| n)
                        .sum();
                    layers.push(LayerSpec {
                        name: name.clone(),
                        layer: layer.clone(),
                        input_shape: in_shape,
                        output_shape: y.shape(),
                        parameter_shapes: trainable
                            .iter()
                            .map(|p| (p.path.clone(), p.shape.clone()))
                            .collect(),
                        parameter_count,
                        params,
                    });
                    x = y;
                }
                Err(e) => {
                    problems.push(format!(
                        "layer {i} '{name}' ({}) on input {}: {e}",
                        layer.type_name(),
                        fmt_shape(&in_shape)
                    ));
                    if i + 1 < entries.len() {
                        problems.push(format!("layers {}.. were not shape-checked: their input shape depends on layer {i}", i + 1));
                    }
                    break;
                }
            }
        }
    }
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        return Err(Error::Spec(format!(
            "model has {} problem(s):\n{}",
            problems.len(),
            list.join("\n")
        )));
    }
    let output_shape = layers
        .last()
        .map(|l| l.output_shape.clone())
        .unwrap_or_else(|| input_shape.to_vec());
    Ok(ModelSpec {
        input_shape: input_shape.to_vec(),
        output_shape,
        total_parameters: layers.iter().map(|l| l.parameter_count).sum(),
        layers,
        seed,
    })
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl ModelSpec {
    /// Appends the model's forward computation on `x` (each layer under its name).
    pub fn forward(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        let mut h = x;
        for l in &self.layers {
            h = s.scoped(&l.name, |s| l.layer.build(s, h))?.check()?;
        }
        Ok(h)
    }

    /// The forward graph for a batch of `batch` samples: input `"x"`, output the model's output.
    /// In [`Mode::Train`], buffer updates (BatchNorm statistics) become Assigns and dropout is
    /// active (reading the `rng` state, i32 `[2]` = seed, step).
    pub fn forward_graph(
        &self,
        batch: usize,
        mode: Mode,
        dtype: DType,
    ) -> Result<lamina_core::Graph> {
        let b = GraphBuilder::new();
        let mut shape = self.input_shape.clone();
        shape[0] = batch;
        let x = b.input("x", &shape, dtype);
        let mut scope = Scope::new(&b, mode, dtype);
        let y = self.forward(&mut scope, x)?;
        for (path, v) in scope.updates() {
            Tensor::apply(lamina_core::Op::Assign { name: path.clone() }, &[*v]).check()?;
        }
        b.finish(&[y])
    }

    /// Every parameter and buffer, in layer order.
    pub fn params(&self) -> impl Iterator<Item = &ParamDecl> {
        self.layers.iter().flat_map(|l| l.params.iter())
    }

    /// The initial value of every parameter and buffer, by path, from the model seed.
    pub fn initial_state(&self, dtype: DType) -> Result<StateMap<HostTensor>> {
        self.params()
            .map(|p| {
                Ok((
                    p.path.clone(),
                    p.init.tensor(&p.shape, dtype, self.seed, &p.path)?,
                ))
            })
            .collect()
    }

    /// A Keras-style table: name, type, output shape, parameters.
    pub fn summary(&self) -> String {
        let mut rows: Vec<[String; 4]> = vec![[
            "Layer".into(),
            "Type".into(),
            "Output shape".into(),
            "Params".into(),
        ]];
        rows.push([
            "input".into(),
            "Input".into(),
            fmt_shape(&self.input_shape),
            "0".into(),
        ]);
        for l in &self.layers {
            rows.push([
                l.name.clone(),
                l.type_name().to_string(),
                fmt_shape(&l.output_shape),
                group_digits(l.parameter_count),
            ]);
        }
        let w: Vec<usize> = (0..4)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let line = "─".repeat(w.iter().sum::<usize>() + 9);
        let mut s = String::new();
        for (i, r) in rows.iter().enumerate() {
            s.push_str(&format!(
                "{:<a$}   {:<b$}   {:<c$}   {:>d$}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3]
            ));
            if i == 0 {
                s.push_str(&line);
                s.push('\n');
            }
        }
        s.push_str(&line);
        s.push('\n');
        s.push_str(&format!(
            "Total parameters: {}\n",
            group_digits(self.total_parameters)
        ));
        s
    }

    /// The spec as JSON (layers with type, name and configuration).
    pub fn to_json(&self) -> String {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({ "type": l.type_name(), "name": l.name, "config": l.layer.config() }))
            .collect();
        let v = json!({ "format": SPEC_FORMAT, "input_shape": self.input_shape, "seed": self.seed, "layers": layers });
        serde_json::to_string_pretty(&v).expect("a JSON value always serialises")
    }

    /// Reads a spec written by [`ModelSpec::to_json`] (or by hand), building custom layers through
    /// `registry`, and compiles it.
    pub fn from_json(text: &str, registry: &LayerRegistry) -> Result<ModelSpec> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Spec(format!("model JSON is malformed: {e}")))?;
        if let Some(f) = v.get("format").and_then(|f| f.as_str()) {
            if f != SPEC_FORMAT {
                return Err(Error::Spec(format!(
                    "model JSON has format '{f}', expected '{SPEC_FORMAT}'"
                )));
            }
        }
        let shape = v
            .get("input_shape")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().map(|u| u as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                Error::Spec("model JSON needs \"input_shape\": an array of integers ≥ 0".into())
            })?;
        let seed = v.get("seed").and_then(|s| s.as_u64()).unwrap_or(0);
        let arr = v
            .get("layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| Error::Spec("model JSON needs \"layers\": an array".into()))?;
        let mut entries = Vec::new();
        for (i, l) in arr.iter().enumerate() {
            entries.push(
                registry
                    .layer_from_json(l)
                    .map_err(|e| Error::Spec(format!("layer {i}: {e}")))?,
            );
        }
        compile(&shape, entries, seed)
    }
}
