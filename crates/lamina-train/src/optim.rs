//! Optimizer updates as graph compositions, with PyTorch's update rules.
//!
//! Per-parameter state lives in persistent buffers named `optim.<param path>.<slot>` (PyTorch's
//! state names: `momentum_buffer`, `exp_avg`, `exp_avg_sq`, `square_avg`, `grad_avg`, `sum`,
//! `acc_delta`). Step-dependent scalars — the learning rate from the schedule and the bias
//! corrections — are computed on the host in f64 (as PyTorch does with Python floats) and written
//! into the device vector `optim.hyper` before each update, so the schedule acts inside the
//! compiled step without recompiling it.

use crate::config::{OptimizerType, TrainerConfig};
use lamina_core::{GraphBuilder, Tensor};

/// Length of the `optim.hyper` vector.
pub const HYPER_LEN: usize = 6;

/// The per-step scalars for update number `t` (1-based) with learning rate `lr`, laid out as the
/// graph reads them; `mu_product` is NAdam's running product of μ (updated here).
pub fn hyper(cfg: &TrainerConfig, lr: f64, t: u64, mu_product: &mut f64) -> [f64; HYPER_LEN] {
    let tf = t as f64;
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    match cfg.optimizer {
        OptimizerType::Adam | OptimizerType::AdamW => {
            let bc1 = 1.0 - b1.powf(tf);
            let bc2 = 1.0 - b2.powf(tf);
            [lr, lr / bc1, bc2.sqrt(), 0.0, 0.0, 0.0]
        }
        OptimizerType::NAdam => {
            let mu = b1 * (1.0 - 0.5 * 0.96f64.powf(tf * cfg.momentum_decay));
            let mu_next = b1 * (1.0 - 0.5 * 0.96f64.powf((tf + 1.0) * cfg.momentum_decay));
            *mu_product *= mu;
            let bc2 = 1.0 - b2.powf(tf);
            [
                lr,
                -lr * (1.0 - mu) / (1.0 - *mu_product),
                -lr * mu_next / (1.0 - *mu_product * mu_next),
                bc2,
                0.0,
                0.0,
            ]
        }
        OptimizerType::AdaGrad => [
            lr,
            lr / (1.0 + (tf - 1.0) * cfg.lr_decay),
            0.0,
            0.0,
            0.0,
            0.0,
        ],
        OptimizerType::Sgd => [lr, if t == 1 { 1.0 } else { 0.0 }, 0.0, 0.0, 0.0, 0.0],
        OptimizerType::RmsProp | OptimizerType::AdaDelta | OptimizerType::Lbfgs => {
            [lr, 0.0, 0.0, 0.0, 0.0, 0.0]
        }
    }
}

/// A state slot the update needs: `(name, shape)`, initialised to zeros.
pub type Slot = (String, Vec<usize>);

/// Appends the update of parameter `p` (path `path`) with gradient `g`; returns the Assigns to
/// make, as `(state name, new value)`, and records the slots it reads.
pub fn update(
    cfg: &TrainerConfig,
    b: &GraphBuilder,
    hyper: Tensor,
    path: &str,
    p: Tensor,
    g: Tensor,
    slots: &mut Vec<Slot>,
) -> Vec<(String, Tensor)> {
    let shape = p.shape();
    let dtype = p.dtype();
    let mut slot = |name: &str| {
        let full = format!("optim.{path}.{name}");
        slots.push((full.clone(), shape.clone()));
        (full.clone(), b.state(&full, &shape, dtype))
    };
    let h = |i: usize| hyper.slice(0, i, i + 1, 1).reshape(&[]);
    let lr = h(0);
    let (wd, eps) = (cfg.weight_decay, cfg.eps());
    let l2 = |g: Tensor| if wd != 0.0 { g + p * wd } else { g };
    let mut out = Vec::new();
    match cfg.optimizer {
        OptimizerType::Sgd => {
            let g = l2(g);
            let step = if cfg.momentum != 0.0 {
                let (name, buf) = slot("momentum_buffer");
                // the first step starts the buffer at g (PyTorch), later steps blend
                let first = h(1);
                let blended = buf * cfg.momentum + g * (1.0 - cfg.dampening);
                let buf2 = first * g + (1.0 - first) * blended;
                out.push((name, buf2));
                if cfg.nesterov {
                    g + buf2 * cfg.momentum
                } else {
                    buf2
                }
            } else {
                g
            };
            out.push((path.to_string(), p - lr * step));
        }
        OptimizerType::Adam | OptimizerType::AdamW => {
            let (p0, g) = if cfg.optimizer == OptimizerType::AdamW {
                (if wd != 0.0 { p * (1.0 - lr * wd) } else { p }, g)
            } else {
                (p, l2(g))
            };
            let (mn, m) = slot("exp_avg");
            let (vn, v) = slot("exp_avg_sq");
            let m2 = m * cfg.beta1 + g * (1.0 - cfg.beta1);
            let v2 = v * cfg.beta2 + g * g * (1.0 - cfg.beta2);
            // p −= (lr / bc1) · m / (√v / √bc2 + eps)
            let denom = v2.sqrt() / h(2) + eps;
            out.push((path.to_string(), p0 - h(1) * m2 / denom));
            out.push((mn, m2));
            out.push((vn, v2));
        }
        OptimizerType::NAdam => {
            let g = l2(g);
            let (mn, m) = slot("exp_avg");
            let (vn, v) = slot("exp_avg_sq");
            let m2 = m * cfg.beta1 + g * (1.0 - cfg.beta1);
            let v2 = v * cfg.beta2 + g * g * (1.0 - cfg.beta2);
            let denom = (v2 / h(3)).sqrt() + eps;
            out.push((path.to_string(), p + h(1) * g / denom + h(2) * m2 / denom));
            out.push((mn, m2));
            out.push((vn, v2));
        }
        OptimizerType::RmsProp => {
            let g = l2(g);
            let a = cfg.rms_alpha;
            let (sn, sq) = slot("square_avg");
            let sq2 = sq * a + g * g * (1.0 - a);
            let avg = if cfg.centered {
                let (gn, ga) = slot("grad_avg");
                let ga2 = ga * a + g * (1.0 - a);
                out.push((gn, ga2));
                (sq2 - ga2 * ga2).sqrt() + eps
            } else {
                sq2.sqrt() + eps
            };
            out.push((sn, sq2));
            if cfg.momentum > 0.0 {
                let (bn, buf) = slot("momentum_buffer");
                let buf2 = buf * cfg.momentum + g / avg;
                out.push((path.to_string(), p - lr * buf2));
                out.push((bn, buf2));
            } else {
                out.push((path.to_string(), p - lr * g / avg));
            }
        }
        OptimizerType::AdaGrad => {
            let g = l2(g);
            let (sn, sum) = slot("sum");
            let sum2 = sum + g * g;
            out.push((path.to_string(), p - h(1) * g / (sum2.sqrt() + eps)));
            out.push((sn, sum2));
        }
        OptimizerType::AdaDelta => {
            let g = l2(g);
            let rho = cfg.rho;
            let (sn, sq) = slot("square_avg");
            let (an, acc) = slot("acc_delta");
            let sq2 = sq * rho + g * g * (1.0 - rho);
            let delta = (acc + eps).sqrt() / (sq2 + eps).sqrt() * g;
            let acc2 = acc * rho + delta * delta * (1.0 - rho);
            out.push((path.to_string(), p - lr * delta));
            out.push((sn, sq2));
            out.push((an, acc2));
        }
        OptimizerType::Lbfgs => unreachable!("L-BFGS updates on the host (see lbfgs.rs)"),
    }
    out
}
