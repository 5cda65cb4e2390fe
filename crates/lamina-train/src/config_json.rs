//! `TrainerConfig` ⇄ JSON: the `"train"` section of spec files and the configuration stored in
//! checkpoints. Missing keys keep their defaults; unknown keys are errors (they are typos).

use crate::config::{
    Device, LossFunction, OptimizerType, ProblemType, ScheduleStep, TrainerConfig,
};
use crate::schedule::LrSchedule;
use lamina_core::{DType, Error, Result};
use serde_json::{json, Map, Value};

const OPTIMIZERS: [(&str, OptimizerType); 8] = [
    ("sgd", OptimizerType::Sgd),
    ("adam", OptimizerType::Adam),
    ("adamw", OptimizerType::AdamW),
    ("rmsprop", OptimizerType::RmsProp),
    ("adagrad", OptimizerType::AdaGrad),
    ("adadelta", OptimizerType::AdaDelta),
    ("nadam", OptimizerType::NAdam),
    ("lbfgs", OptimizerType::Lbfgs),
];

const LOSSES: [(&str, LossFunction); 7] = [
    ("cross_entropy", LossFunction::CrossEntropy),
    ("sparse_cross_entropy", LossFunction::SparseCrossEntropy),
    (
        "categorical_cross_entropy",
        LossFunction::CategoricalCrossEntropy,
    ),
    ("binary_cross_entropy", LossFunction::BinaryCrossEntropy),
    ("bce_with_logits", LossFunction::BceWithLogits),
    ("mse", LossFunction::Mse),
    ("mae", LossFunction::Mae),
];

fn bad<T>(key: &str, msg: impl std::fmt::Display) -> Result<T> {
    Err(Error::Spec(format!("config \"{key}\": {msg}")))
}

/// Parses an optimizer name (`adam`, `sgd`, …).
pub fn optimizer_from_str(s: &str) -> Result<OptimizerType> {
    OPTIMIZERS
        .iter()
        .find(|(n, _)| *n == s.to_ascii_lowercase())
        .map(|(_, o)| *o)
        .ok_or_else(|| {
            Error::Spec(format!(
                "unknown optimizer '{s}' (known: {})",
                OPTIMIZERS.map(|o| o.0).join(", ")
            ))
        })
}

/// Parses a device: `cpu`, `cuda`, `cuda:N`, `auto`.
pub fn device_from_str(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::Auto),
        "cuda" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(i) => Ok(Device::Cuda(i)),
            None => Err(Error::Spec(format!(
                "unknown device '{s}' (cpu, cuda, cuda:N or auto)"
            ))),
        },
    }
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Auto => "auto".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
    }
}

fn loss_to_json(l: LossFunction) -> Value {
    match l {
        LossFunction::Huber(d) => json!({ "huber": d }),
        l => json!(LOSSES
            .iter()
            .find(|(_, x)| *x == l)
            .map(|(n, _)| *n)
            .unwrap_or("sparse_cross_entropy")),
    }
}

fn loss_from_json(v: &Value) -> Result<LossFunction> {
    if let Some(d) = v.get("huber") {
        return d
            .as_f64()
            .map(LossFunction::Huber)
            .ok_or_else(|| Error::Spec("config \"loss\": huber needs a number delta".into()));
    }
    let s = v.as_str().unwrap_or("");
    if s == "huber" {
        return Ok(LossFunction::Huber(1.0));
    }
    LOSSES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, l)| *l)
        .ok_or_else(|| {
            Error::Spec(format!(
                "config \"loss\": unknown loss {v} (known: {}, huber, {{\"huber\": delta}})",
                LOSSES.map(|l| l.0).join(", ")
            ))
        })
}

fn schedule_to_json(s: &LrSchedule) -> Value {
    match s {
        LrSchedule::Constant => json!({ "type": "constant" }),
        LrSchedule::Step { step_size, gamma } => {
            json!({ "type": "step", "step_size": step_size, "gamma": gamma })
        }
        LrSchedule::Exponential { gamma } => json!({ "type": "exponential", "gamma": gamma }),
        LrSchedule::CosineAnnealing { t_max, eta_min } => {
            json!({ "type": "cosine", "t_max": t_max, "eta_min": eta_min })
        }
        LrSchedule::LinearWarmup {
            start_factor,
            warmup_steps,
        } => {
            json!({ "type": "warmup", "start_factor": start_factor, "warmup_steps": warmup_steps })
        }
        LrSchedule::OneCycle {
            max_lr,
            total_steps,
            pct_start,
            div_factor,
            final_div_factor,
            cosine,
            three_phase,
        } => json!({
            "type": "one_cycle", "max_lr": max_lr, "total_steps": total_steps, "pct_start": pct_start, "div_factor": div_factor,
            "final_div_factor": final_div_factor, "cosine": cosine, "three_phase": three_phase }),
        LrSchedule::ReduceOnPlateau {
            mode_max,
            factor,
            patience,
            threshold,
            relative,
            cooldown,
            min_lr,
        } => json!({
            "type": "plateau", "mode_max": mode_max, "factor": factor, "patience": patience, "threshold": threshold,
            "relative": relative, "cooldown": cooldown, "min_lr": min_lr }),
    }
}

fn schedule_from_json(v: &Value) -> Result<LrSchedule> {
    let ty = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let f = |k: &str, d: f64| -> Result<f64> {
        match v.get(k) {
            None => Ok(d),
            Some(x) => x.as_f64().ok_or_else(|| {
                Error::Spec(format!("lr_schedule \"{k}\" must be a number, got {x}"))
            }),
        }
    };
    let u = |k: &str, d: usize| -> Result<usize> {
        match v.get(k) {
            None => Ok(d),
            Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
                Error::Spec(format!(
                    "lr_schedule \"{k}\" must be an integer ≥ 0, got {x}"
                ))
            }),
        }
    };
    let b = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
    let need_u = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|n| n as usize)
            .ok_or_else(|| Error::Spec(format!("lr_schedule {ty} needs \"{k}\"")))
    };
    Ok(match ty {
        "constant" => LrSchedule::Constant,
        "step" => LrSchedule::Step { step_size: need_u("step_size")?, gamma: f("gamma", 0.1)? },
        "exponential" => LrSchedule::Exponential { gamma: f("gamma", f64::NAN)? },
        "cosine" => LrSchedule::CosineAnnealing { t_max: need_u("t_max")?, eta_min: f("eta_min", 0.0)? },
        "warmup" => LrSchedule::LinearWarmup { start_factor: f("start_factor", 1.0 / 3.0)?, warmup_steps: u("warmup_steps", 5)? },
        "one_cycle" => {
            let d = LrSchedule::one_cycle(f("max_lr", f64::NAN)?, need_u("total_steps")?);
            match d {
                LrSchedule::OneCycle { max_lr, total_steps, pct_start, div_factor, final_div_factor, cosine, three_phase } => LrSchedule::OneCycle {
                    max_lr,
                    total_steps,
                    pct_start: f("pct_start", pct_start)?,
                    div_factor: f("div_factor", div_factor)?,
                    final_div_factor: f("final_div_factor", final_div_factor)?,
                    cosine: b("cosine", cosine),
                    three_phase: b("three_phase", three_phase),
                },
                other => other,
            }
        }
        "plateau" => match LrSchedule::reduce_on_plateau() {
            LrSchedule::ReduceOnPlateau { mode_max, factor, patience, threshold, relative, cooldown, min_lr } => LrSchedule::ReduceOnPlateau {
                mode_max: b("mode_max", mode_max),
                factor: f("factor", factor)?,
                patience: u("patience", patience)?,
                threshold: f("threshold", threshold)?,
                relative: b("relative", relative),
                cooldown: u("cooldown", cooldown)?,
                min_lr: f("min_lr", min_lr)?,
            },
            other => other,
        },
        _ => return Err(Error::Spec(format!("lr_schedule: unknown \"type\" {:?} (constant, step, exponential, cosine, warmup, one_cycle, plateau)", v.get("type")))),
    })
}

impl TrainerConfig {
    /// The configuration as JSON (every field).
    pub fn to_json(&self) -> Value {
        json!({
            "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "optimizer": OPTIMIZERS.iter().find(|(_, o)| *o == self.optimizer).map(|(n, _)| *n),
            "beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon, "weight_decay": self.weight_decay,
            "momentum": self.momentum, "dampening": self.dampening, "nesterov": self.nesterov,
            "rms_alpha": self.rms_alpha, "centered": self.centered, "rho": self.rho, "lr_decay": self.lr_decay,
            "momentum_decay": self.momentum_decay, "lbfgs_max_iter": self.lbfgs_max_iter, "lbfgs_history": self.lbfgs_history,
            "lbfgs_tolerance_grad": self.lbfgs_tolerance_grad, "lbfgs_tolerance_change": self.lbfgs_tolerance_change,
            "loss": loss_to_json(self.loss),
            "problem": match self.problem { ProblemType::Classification => "classification", ProblemType::Regression => "regression" },
            "device": device_name(self.device), "dtype": self.dtype.name(), "seed": self.seed,
            "lr_schedule": schedule_to_json(&self.lr_schedule),
            "schedule_step": match self.schedule_step { ScheduleStep::Epoch => "epoch", ScheduleStep::Batch => "batch" },
            "clip_grad_norm": self.clip_grad_norm, "clip_grad_value": self.clip_grad_value,
            "accumulate_grad_batches": self.accumulate_grad_batches,
        })
    }

    /// Reads a configuration: keys as in [`TrainerConfig::to_json`]; missing keys keep their
    /// defaults; `ignore` lists keys that belong to the caller (epochs, data, …).
    pub fn from_json(v: &Value, ignore: &[&str]) -> Result<TrainerConfig> {
        let obj: &Map<String, Value> = v.as_object().ok_or_else(|| {
            Error::Spec(format!(
                "the training configuration must be a JSON object, got {v}"
            ))
        })?;
        let mut c = TrainerConfig::default();
        let known = TrainerConfig::default().to_json();
        for (k, x) in obj {
            if ignore.contains(&k.as_str()) {
                continue;
            }
            if known.get(k).is_none() {
                let keys: Vec<&String> = known
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                return bad(
                    k,
                    format!(
                        "unknown key (known: {})",
                        keys.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            let num = || {
                x.as_f64()
                    .ok_or_else(|| Error::Spec(format!("config \"{k}\" must be a number, got {x}")))
            };
            let int = || {
                x.as_u64().map(|n| n as usize).ok_or_else(|| {
                    Error::Spec(format!("config \"{k}\" must be an integer ≥ 0, got {x}"))
                })
            };
            let boolean = || {
                x.as_bool().ok_or_else(|| {
                    Error::Spec(format!("config \"{k}\" must be true or false, got {x}"))
                })
            };
            let opt_num = || {
                if x.is_null() {
                    Ok(None)
                } else {
                    num().map(Some)
                }
            };
            let text = || {
                x.as_str()
                    .ok_or_else(|| Error::Spec(format!("config \"{k}\" must be a string, got {x}")))
            };
            match k.as_str() {
                "batch_size" => c.batch_size = int()?,
                "learning_rate" => c.learning_rate = num()?,
                "optimizer" => c.optimizer = optimizer_from_str(text()?)?,
                "beta1" => c.beta1 = num()?,
                "beta2" => c.beta2 = num()?,
                "epsilon" => c.epsilon = opt_num()?,
                "weight_decay" => c.weight_decay = num()?,
                "momentum" => c.momentum = num()?,
                "dampening" => c.dampening = num()?,
                "nesterov" => c.nesterov = boolean()?,
                "rms_alpha" => c.rms_alpha = num()?,
                "centered" => c.centered = boolean()?,
                "rho" => c.rho = num()?,
                "lr_decay" => c.lr_decay = num()?,
                "momentum_decay" => c.momentum_decay = num()?,
                "lbfgs_max_iter" => c.lbfgs_max_iter = int()?,
                "lbfgs_history" => c.lbfgs_history = int()?,
                "lbfgs_tolerance_grad" => c.lbfgs_tolerance_grad = num()?,
                "lbfgs_tolerance_change" => c.lbfgs_tolerance_change = num()?,
                "loss" => c.loss = loss_from_json(x)?,
                "problem" => {
                    c.problem = match text()? {
                        "classification" => ProblemType::Classification,
                        "regression" => ProblemType::Regression,
                        other => {
                            return bad(k, format!("'{other}' is not classification or regression"))
                        }
                    }
                }
                "device" => c.device = device_from_str(text()?)?,
                "dtype" => {
                    c.dtype = match text()? {
                        "f32" => DType::F32,
                        "f64" => DType::F64,
                        other => return bad(k, format!("'{other}' is not f32 or f64")),
                    }
                }
                "seed" => {
                    c.seed = x.as_u64().ok_or_else(|| {
                        Error::Spec(format!("config \"seed\" must be an integer ≥ 0, got {x}"))
                    })?
                }
                "lr_schedule" => c.lr_schedule = schedule_from_json(x)?,
                "schedule_step" => {
                    c.schedule_step = match text()? {
                        "epoch" => ScheduleStep::Epoch,
                        "batch" => ScheduleStep::Batch,
                        other => return bad(k, format!("'{other}' is not epoch or batch")),
                    }
                }
                "clip_grad_norm" => c.clip_grad_norm = opt_num()?,
                "clip_grad_value" => c.clip_grad_value = opt_num()?,
                "accumulate_grad_batches" => c.accumulate_grad_batches = int()?,
                _ => unreachable!("every key of to_json is handled"),
            }
        }
        c.validate()?;
        Ok(c)
    }
}
