//! Spec files: a model (`input_shape`, `layers`, `seed`, as `ModelSpec::to_json` writes them)
//! plus a `"data"` section (which data set, how to split and scale it) and a `"train"` section
//! (the `TrainerConfig` keys, `epochs` and `checkpoint`). JSON or TOML.

use lamina_core::{Error, Result};
use lamina_nn::{LayerRegistry, ModelSpec};
use lamina_train::{Goal, TrainerConfig, HISTORY_METRICS};
use serde_json::Value;
use std::path::Path;

/// How the data is found and prepared.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSection {
    /// A bundled name (`digits`, `breast_cancer`, `diabetes`) or a CSV path.
    pub source: String,
    /// Fraction held out for the final test (default 0.2).
    pub test_fraction: f64,
    /// Fraction of the rest held out for validation after each epoch (default 0.1).
    pub val_fraction: f64,
    pub split_seed: u64,
    /// Scale features to zero mean, unit variance with training-split statistics.
    pub standardize: bool,
    /// Regression: scale targets too (metrics are reported in the original units).
    pub standardize_targets: bool,
    /// CSV files: which column holds the label (`"last"` by default, `"first"`, a 0-based index or
    /// a header name).
    pub label_column: lamina_data::LabelColumn,
}

/// `train.checkpoint`: checkpoints during training, in `<run folder>/checkpoints/` —
/// `{"every": 5, "keep_last": 3, "keep_best": "val_loss", "goal": "min"}` (every key optional;
/// `goal` defaults to max for accuracies, min otherwise).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointSection {
    pub every: Option<usize>,
    pub keep_last: Option<usize>,
    pub keep_best: Option<String>,
    pub goal: Option<Goal>,
}

impl CheckpointSection {
    /// Whether the spec or the flags asked for checkpoints at all.
    pub fn any(&self) -> bool {
        self.every.is_some() || self.keep_last.is_some() || self.keep_best.is_some()
    }
}

fn checkpoint_section(v: Option<&Value>, file: &Path) -> Result<CheckpointSection> {
    let bad = |m: String| {
        Err(Error::Spec(format!(
            "{}: train.checkpoint{m}",
            file.display()
        )))
    };
    let Some(v) = v else {
        return Ok(CheckpointSection::default());
    };
    let Some(obj) = v.as_object() else {
        return bad(format!(
            " must be an object like {{\"every\": 5, \"keep_last\": 3, \"keep_best\": \"val_loss\"}}, got {v}"
        ));
    };
    let mut c = CheckpointSection::default();
    for (k, x) in obj {
        match k.as_str() {
            "every" | "keep_last" => {
                let n = match x.as_u64() {
                    Some(n) if n >= 1 => n as usize,
                    _ => return bad(format!(".{k} must be an integer ≥ 1, got {x}")),
                };
                if k == "every" {
                    c.every = Some(n);
                } else {
                    c.keep_last = Some(n);
                }
            }
            "keep_best" => match x.as_str() {
                Some(m) => c.keep_best = Some(m.to_string()),
                None => {
                    return bad(format!(
                        ".keep_best must be a history metric name ({}), got {x}",
                        HISTORY_METRICS.join(", ")
                    ))
                }
            },
            "goal" => {
                let g = x.as_str().map(Goal::parse);
                match g {
                    Some(Ok(g)) => c.goal = Some(g),
                    _ => return bad(format!(".goal must be \"min\" or \"max\", got {x}")),
                }
            }
            other => {
                return bad(format!(
                    ": unknown key \"{other}\" (known: every, keep_last, keep_best, goal)"
                ))
            }
        }
    }
    Ok(c)
}

/// A loaded spec file.
pub struct Spec {
    pub name: String,
    pub model: ModelSpec,
    pub data: DataSection,
    pub config: TrainerConfig,
    pub epochs: usize,
    /// Checkpoints during training (`train.checkpoint`).
    pub checkpoint: CheckpointSection,
    /// The whole file as JSON (copied into the run folder).
    pub json: Value,
}

fn field<'a>(v: &'a Value, section: &str, key: &str) -> Option<&'a Value> {
    v.get(section).and_then(|s| s.get(key))
}

/// Reads a spec file (`.toml` is converted to the same JSON structure).
pub fn load(path: &Path) -> Result<Spec> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let json: Value = if path.extension().is_some_and(|e| e == "toml") {
        let t: toml::Value = toml::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: malformed TOML: {e}", path.display())))?;
        serde_json::to_value(t).map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: malformed JSON: {e}", path.display())))?
    };
    let model = ModelSpec::from_json(&json.to_string(), &LayerRegistry::new())
        .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
    let d = |k: &str| field(&json, "data", k);
    let num = |k: &str, default: f64| -> Result<f64> {
        match d(k) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                Error::Spec(format!(
                    "{}: data.{k} must be a number, got {v}",
                    path.display()
                ))
            }),
        }
    };
    let flag = |k: &str| d(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let data = DataSection {
        source: d("source").and_then(|v| v.as_str()).unwrap_or("digits").to_string(),
        test_fraction: num("test_fraction", 0.2)?,
        val_fraction: num("val_fraction", 0.1)?,
        split_seed: d("split_seed").and_then(|v| v.as_u64()).unwrap_or(0),
        standardize: flag("standardize"),
        standardize_targets: flag("standardize_targets"),
        label_column: match d("label_column") {
            None => lamina_data::LabelColumn::Last,
            Some(v) => match (v.as_str(), v.as_u64()) {
                (Some("last"), _) => lamina_data::LabelColumn::Last,
                (Some("first"), _) => lamina_data::LabelColumn::First,
                (Some(name), _) => lamina_data::LabelColumn::Name(name.to_string()),
                (None, Some(i)) => lamina_data::LabelColumn::Index(i as usize),
                _ => return Err(Error::Spec(format!("{}: data.label_column must be \"last\", \"first\", a column index or a header name, got {v}", path.display()))),
            },
        },
    };
    for f in [data.test_fraction, data.val_fraction] {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::Spec(format!(
                "{}: data fractions must be in [0, 1), got {f}",
                path.display()
            )));
        }
    }
    let empty = Value::Object(Default::default());
    let train = json.get("train").unwrap_or(&empty);
    let mut config = TrainerConfig::from_json(train, &["epochs", "checkpoint"])
        .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
    if train.get("batch_size").is_none() {
        config.batch_size = model.input_shape[0];
    }
    let epochs = match train.get("epochs") {
        None => 10,
        Some(v) => v.as_u64().ok_or_else(|| {
            Error::Spec(format!(
                "{}: train.epochs must be an integer ≥ 1, got {v}",
                path.display()
            ))
        })? as usize,
    };
    let checkpoint = checkpoint_section(train.get("checkpoint"), path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    Ok(Spec {
        name,
        model,
        data,
        config,
        epochs,
        checkpoint,
        json,
    })
}
