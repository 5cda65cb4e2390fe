//! Learning-rate schedules that reproduce PyTorch's `torch.optim.lr_scheduler` value for value.
//!
//! [`LrSchedule`] describes a schedule; [`Scheduler`] runs one: the trainer reads [`Scheduler::lr`]
//! before each optimizer update and calls [`Scheduler::step`] (or
//! [`Scheduler::step_with_metric`]) where PyTorch code calls `scheduler.step()`. Schedules that
//! PyTorch computes recursively (each value from the previous one: `StepLR`, `ExponentialLR`,
//! `CosineAnnealingLR`, `LinearLR`) are computed with the same recursion and operation order, so
//! the values are PyTorch's own to the last bit, rounding drift included, not the closed form's.
//! The unit tests compare 100 steps of every schedule with values recorded from PyTorch by
//! `tools/golden/lr_schedules.py`.

use lamina_core::{Error, Result};
use std::f64::consts::PI;

/// A learning-rate schedule and its hyper-parameters. Each variant names the PyTorch scheduler it
/// equals, with PyTorch's defaults given by the constructor functions.
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base learning rate at every step (PyTorch: no scheduler, or
    /// `LambdaLR(lr_lambda=lambda _: 1.0)`).
    Constant,
    /// `StepLR(step_size, gamma)`: the rate is multiplied by `gamma` every `step_size` steps.
    /// PyTorch's default `gamma` is 0.1 ([`LrSchedule::step_lr`]).
    Step {
        /// Steps between two decays (≥ 1).
        step_size: usize,
        /// Factor of each decay (> 0).
        gamma: f64,
    },
    /// `ExponentialLR(gamma)`: the rate is multiplied by `gamma` at every step (no default).
    Exponential {
        /// Factor applied at each step (> 0).
        gamma: f64,
    },
    /// `CosineAnnealingLR(T_max, eta_min)` in PyTorch's recursive (chainable) form: the rate
    /// follows half a cosine from the base rate down to `eta_min` over `t_max` steps, then, as in
    /// PyTorch, rises back along the cosine over the next `t_max` steps and so on (period
    /// `2 t_max`). PyTorch's default `eta_min` is 0 ([`LrSchedule::cosine_annealing`]).
    CosineAnnealing {
        /// Steps from the base rate to `eta_min` (≥ 1).
        t_max: usize,
        /// Lowest rate (≥ 0).
        eta_min: f64,
    },
    /// `LinearLR(start_factor, end_factor=1.0, total_iters=warmup_steps)`: the rate rises linearly
    /// from `start_factor × base` to `base` over `warmup_steps` steps, then stays at `base`.
    /// PyTorch's defaults are `start_factor` 1/3 and `total_iters` 5
    /// ([`LrSchedule::linear_warmup`]).
    LinearWarmup {
        /// Fraction of the base rate at step 0, in (0, 1].
        start_factor: f64,
        /// Steps until the base rate is reached (≥ 1).
        warmup_steps: usize,
    },
    /// `OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy, div_factor, final_div_factor,
    /// three_phase)`, its learning rate only (momentum is not cycled). Like PyTorch it ignores
    /// the base learning rate: it starts at `max_lr / div_factor`, rises to `max_lr` over the
    /// first `pct_start` of the steps, then falls to `max_lr / div_factor / final_div_factor`
    /// (with `three_phase`, it first falls back to the start value symmetrically, then to the
    /// minimum). PyTorch's defaults are `pct_start` 0.3, cosine annealing, `div_factor` 25,
    /// `final_div_factor` 1e4, two phases ([`LrSchedule::one_cycle`]). PyTorch raises when
    /// stepped more than `total_steps` times; lamina keeps the rate of step `total_steps`.
    OneCycle {
        /// Peak learning rate (> 0).
        max_lr: f64,
        /// Length of the cycle in steps.
        total_steps: usize,
        /// Fraction of the cycle spent increasing the rate, in (0, 1), with
        /// `pct_start × total_steps > 1`.
        pct_start: f64,
        /// Initial rate = `max_lr / div_factor` (> 0).
        div_factor: f64,
        /// Final rate = initial rate / `final_div_factor` (> 0).
        final_div_factor: f64,
        /// Cosine annealing (`anneal_strategy='cos'`) when true, linear (`'linear'`) when false.
        cosine: bool,
        /// The three-phase schedule of the original paper (`three_phase=True`).
        three_phase: bool,
    },
    /// `ReduceLROnPlateau(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr,
    /// eps=1e-8)`: the rate is multiplied by `factor` once a metric has not improved for more
    /// than `patience` steps; reductions smaller than 1e-8 are skipped, as in PyTorch. Driven by
    /// [`Scheduler::step_with_metric`]. PyTorch's defaults: mode 'min', factor 0.1, patience 10,
    /// threshold 1e-4, threshold_mode 'rel', cooldown 0, min_lr 0
    /// ([`LrSchedule::reduce_on_plateau`]).
    ReduceOnPlateau {
        /// The metric should increase (`mode='max'`) rather than decrease (`mode='min'`).
        mode_max: bool,
        /// Factor of each reduction, in (0, 1).
        factor: f64,
        /// Steps without improvement tolerated before a reduction.
        patience: usize,
        /// Least change that counts as an improvement (≥ 0).
        threshold: f64,
        /// `threshold` is relative to the best value (`threshold_mode='rel'`) rather than
        /// absolute (`'abs'`).
        relative: bool,
        /// Steps after a reduction during which bad steps are not counted.
        cooldown: usize,
        /// Lower bound of the rate (≥ 0).
        min_lr: f64,
    },
}

/// PyTorch's `ReduceLROnPlateau` default `eps`: reductions smaller than this are skipped.
const PLATEAU_EPS: f64 = 1e-8;

/// Number of values in [`Scheduler::state`].
const STATE_LEN: usize = 5;

fn spec_err<T>(variant: &str, msg: String) -> Result<T> {
    Err(Error::Spec(format!("LrSchedule::{variant}: {msg}")))
}

fn check_positive(variant: &str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return spec_err(variant, format!("{name} must be finite and > 0, got {v}"));
    }
    Ok(())
}

fn check_non_negative(variant: &str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return spec_err(variant, format!("{name} must be finite and ≥ 0, got {v}"));
    }
    Ok(())
}

fn check_at_least_one(variant: &str, name: &str, v: usize) -> Result<()> {
    if v == 0 {
        return spec_err(variant, format!("{name} must be ≥ 1, got 0"));
    }
    Ok(())
}

impl LrSchedule {
    /// `StepLR(step_size)` with PyTorch's default `gamma=0.1`.
    pub fn step_lr(step_size: usize) -> Self {
        LrSchedule::Step {
            step_size,
            gamma: 0.1,
        }
    }

    /// `ExponentialLR(gamma)` (PyTorch has no default `gamma`).
    pub fn exponential(gamma: f64) -> Self {
        LrSchedule::Exponential { gamma }
    }

    /// `CosineAnnealingLR(T_max)` with PyTorch's default `eta_min=0`.
    pub fn cosine_annealing(t_max: usize) -> Self {
        LrSchedule::CosineAnnealing {
            t_max,
            eta_min: 0.0,
        }
    }

    /// `LinearLR(total_iters=warmup_steps)` with PyTorch's default `start_factor=1/3`
    /// (PyTorch's default `total_iters` is 5).
    pub fn linear_warmup(warmup_steps: usize) -> Self {
        LrSchedule::LinearWarmup {
            start_factor: 1.0 / 3.0,
            warmup_steps,
        }
    }

    /// `OneCycleLR(max_lr, total_steps)` with PyTorch's defaults: `pct_start=0.3`,
    /// `anneal_strategy='cos'`, `div_factor=25`, `final_div_factor=1e4`, `three_phase=False`.
    pub fn one_cycle(max_lr: f64, total_steps: usize) -> Self {
        LrSchedule::OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            cosine: true,
            three_phase: false,
        }
    }

    /// `ReduceLROnPlateau()` with PyTorch's defaults: `mode='min'`, `factor=0.1`,
    /// `patience=10`, `threshold=1e-4`, `threshold_mode='rel'`, `cooldown=0`, `min_lr=0`.
    pub fn reduce_on_plateau() -> Self {
        LrSchedule::ReduceOnPlateau {
            mode_max: false,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            relative: true,
            cooldown: 0,
            min_lr: 0.0,
        }
    }

    /// The variant's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "Constant",
            LrSchedule::Step { .. } => "Step",
            LrSchedule::Exponential { .. } => "Exponential",
            LrSchedule::CosineAnnealing { .. } => "CosineAnnealing",
            LrSchedule::LinearWarmup { .. } => "LinearWarmup",
            LrSchedule::OneCycle { .. } => "OneCycle",
            LrSchedule::ReduceOnPlateau { .. } => "ReduceOnPlateau",
        }
    }

    /// Checks the hyper-parameters; the error names the variant, the argument, the allowed range
    /// and the value given. Stricter than PyTorch where PyTorch would divide by zero or produce a
    /// meaningless schedule (e.g. a one-cycle warm-up shorter than one step).
    pub fn validate(&self) -> Result<()> {
        let v = self.name();
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { step_size, gamma } => {
                check_at_least_one(v, "step_size", step_size)?;
                check_positive(v, "gamma", gamma)
            }
            LrSchedule::Exponential { gamma } => check_positive(v, "gamma", gamma),
            LrSchedule::CosineAnnealing { t_max, eta_min } => {
                check_at_least_one(v, "t_max", t_max)?;
                check_non_negative(v, "eta_min", eta_min)
            }
            LrSchedule::LinearWarmup {
                start_factor,
                warmup_steps,
            } => {
                if !(start_factor > 0.0 && start_factor <= 1.0) {
                    return spec_err(
                        v,
                        format!("start_factor must be in (0, 1], got {start_factor}"),
                    );
                }
                check_at_least_one(v, "warmup_steps", warmup_steps)
            }
            LrSchedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                three_phase,
                ..
            } => {
                check_positive(v, "max_lr", max_lr)?;
                check_at_least_one(v, "total_steps", total_steps)?;
                if !(pct_start > 0.0 && pct_start < 1.0) {
                    return spec_err(v, format!("pct_start must be in (0, 1), got {pct_start}"));
                }
                check_positive(v, "div_factor", div_factor)?;
                check_positive(v, "final_div_factor", final_div_factor)?;
                let warmup = pct_start * total_steps as f64;
                // The warm-up phase ends at step pct_start·total − 1; at or before step 0
                // PyTorch divides by zero.
                if warmup <= 1.0 {
                    return spec_err(
                        v,
                        format!(
                            "pct_start × total_steps must be > 1 (a warm-up of at least one \
                             step), got {pct_start} × {total_steps} = {warmup}"
                        ),
                    );
                }
                // The third phase runs from step 2·pct_start·total − 2 to total − 1.
                if three_phase && 2.0 * warmup - 2.0 >= total_steps as f64 - 1.0 {
                    return spec_err(
                        v,
                        format!(
                            "with three_phase, 2 × pct_start × total_steps must be < \
                             total_steps + 1 (the two first phases must end before the \
                             cycle), got 2 × {pct_start} × {total_steps} = {}",
                            2.0 * warmup
                        ),
                    );
                }
                Ok(())
            }
            LrSchedule::ReduceOnPlateau {
                factor,
                threshold,
                min_lr,
                ..
            } => {
                if !(factor > 0.0 && factor < 1.0) {
                    return spec_err(v, format!("factor must be in (0, 1), got {factor}"));
                }
                check_non_negative(v, "threshold", threshold)?;
                check_non_negative(v, "min_lr", min_lr)
            }
        }
    }
}

/// Annealing from `start` to `end` as `pct` goes from 0 to 1: PyTorch's
/// `OneCycleLR._annealing_cos` / `_annealing_linear`, same operation order.
fn anneal(cosine: bool, start: f64, end: f64, pct: f64) -> f64 {
    if cosine {
        let cos_out = (PI * pct).cos() + 1.0;
        end + (start - end) / 2.0 * cos_out
    } else {
        (end - start) * pct + start
    }
}

/// The one-cycle rate at `step` (PyTorch `OneCycleLR.get_lr` with `last_epoch = step`).
fn one_cycle_lr(schedule: &LrSchedule, step: usize) -> f64 {
    let LrSchedule::OneCycle {
        max_lr,
        total_steps,
        pct_start,
        div_factor,
        final_div_factor,
        cosine,
        three_phase,
    } = *schedule
    else {
        return f64::NAN;
    };
    let initial = max_lr / div_factor;
    let min = initial / final_div_factor;
    let total = total_steps as f64;
    let warm_end = pct_start * total - 1.0;
    // (end step, start lr, end lr) of each phase.
    let phases: &[(f64, f64, f64)] = if three_phase {
        &[
            (warm_end, initial, max_lr),
            (2.0 * pct_start * total - 2.0, max_lr, initial),
            (total - 1.0, initial, min),
        ]
    } else {
        &[(warm_end, initial, max_lr), (total - 1.0, max_lr, min)]
    };
    let step = step as f64;
    let mut start_step = 0.0;
    for (i, &(end_step, start_lr, end_lr)) in phases.iter().enumerate() {
        if step <= end_step || i == phases.len() - 1 {
            let pct = (step - start_step) / (end_step - start_step);
            return anneal(cosine, start_lr, end_lr, pct);
        }
        start_step = end_step;
    }
    f64::NAN // unreachable: the last phase always returns
}

/// Python's `%` for a positive divisor: the result has the divisor's sign.
fn py_mod(a: i64, b: i64) -> i64 {
    a.rem_euclid(b)
}

/// A running schedule: the current learning rate and the counters that decide the next one.
///
/// Equivalent to a PyTorch scheduler attached to an optimizer whose `lr` is `base_lr`, read as
/// `optimizer.param_groups[0]['lr']`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler {
    schedule: LrSchedule,
    base_lr: f64,
    /// Steps taken (PyTorch's `last_epoch` after construction: 0 at the start).
    last_epoch: usize,
    lr: f64,
    /// ReduceOnPlateau: the best metric so far (±∞ before the first).
    best: f64,
    /// ReduceOnPlateau: consecutive steps without improvement.
    num_bad_epochs: usize,
    /// ReduceOnPlateau: steps of cooldown left.
    cooldown_counter: usize,
}

impl Scheduler {
    /// Starts `schedule` from the optimizer's learning rate `base_lr` (ignored by `OneCycle`,
    /// as in PyTorch). Errors for invalid hyper-parameters or a `base_lr` that is negative or
    /// not finite.
    pub fn new(schedule: LrSchedule, base_lr: f64) -> Result<Scheduler> {
        schedule.validate()?;
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(Error::Spec(format!(
                "Scheduler::new: base_lr must be finite and ≥ 0, got {base_lr}"
            )));
        }
        // PyTorch's constructor performs an initial step at last_epoch 0.
        let lr = match schedule {
            LrSchedule::LinearWarmup { start_factor, .. } => base_lr * start_factor,
            LrSchedule::OneCycle { .. } => one_cycle_lr(&schedule, 0),
            _ => base_lr,
        };
        let best = match schedule {
            LrSchedule::ReduceOnPlateau { mode_max: true, .. } => f64::NEG_INFINITY,
            _ => f64::INFINITY,
        };
        Ok(Scheduler {
            schedule,
            base_lr,
            last_epoch: 0,
            lr,
            best,
            num_bad_epochs: 0,
            cooldown_counter: 0,
        })
    }

    /// The current learning rate: what the optimizer uses for its next update
    /// (PyTorch `optimizer.param_groups[0]['lr']`, equal to `scheduler.get_last_lr()[0]`).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The schedule being run.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// The learning rate the scheduler started from.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// Steps taken so far (PyTorch's `scheduler.last_epoch`).
    pub fn steps(&self) -> usize {
        self.last_epoch
    }

    /// Whether the schedule needs a metric, i.e. must be driven by [`Scheduler::step_with_metric`].
    pub fn needs_metric(&self) -> bool {
        matches!(self.schedule, LrSchedule::ReduceOnPlateau { .. })
    }

    /// One scheduler step, as PyTorch's `scheduler.step()` (call it after the optimizer update).
    /// `ReduceOnPlateau` has nothing to judge without a metric, so this leaves it unchanged; use
    /// [`Scheduler::step_with_metric`] for it.
    pub fn step(&mut self) {
        let next = self.last_epoch + 1;
        let e = next as f64;
        match self.schedule {
            LrSchedule::Constant => {}
            LrSchedule::Step { step_size, gamma } => {
                // checked_rem: a zero step_size (rejected by validate) cannot panic here.
                if next.checked_rem(step_size) == Some(0) {
                    self.lr *= gamma;
                }
            }
            LrSchedule::Exponential { gamma } => self.lr *= gamma,
            LrSchedule::CosineAnnealing { t_max, eta_min } => {
                let t = t_max as f64;
                if py_mod(next as i64 - 1 - t_max as i64, 2 * t_max as i64) == 0 {
                    // One step past a minimum the recursion's denominator 1 + cos(π) is 0;
                    // PyTorch adds the first step of the rise instead.
                    self.lr += (self.base_lr - eta_min) * (1.0 - (PI / t).cos()) / 2.0;
                } else {
                    self.lr = (1.0 + (PI * e / t).cos()) / (1.0 + (PI * (e - 1.0) / t).cos())
                        * (self.lr - eta_min)
                        + eta_min;
                }
            }
            LrSchedule::LinearWarmup {
                start_factor,
                warmup_steps,
            } => {
                if next <= warmup_steps {
                    let delta = 1.0 - start_factor; // end_factor − start_factor
                    self.lr *=
                        1.0 + delta / (warmup_steps as f64 * start_factor + (e - 1.0) * delta);
                }
            }
            LrSchedule::OneCycle { total_steps, .. } => {
                if next > total_steps {
                    return; // PyTorch raises here; the rate stays at that of step total_steps.
                }
                self.lr = one_cycle_lr(&self.schedule, next);
            }
            LrSchedule::ReduceOnPlateau { .. } => return,
        }
        self.last_epoch = next;
    }

    /// One scheduler step after an evaluation that gave `metric`: PyTorch's
    /// `ReduceLROnPlateau.step(metric)`. For the other schedules, the same as [`Scheduler::step`].
    /// A NaN metric counts as no improvement, as in PyTorch.
    pub fn step_with_metric(&mut self, metric: f64) {
        let LrSchedule::ReduceOnPlateau {
            mode_max,
            factor,
            patience,
            threshold,
            relative,
            cooldown,
            min_lr,
        } = self.schedule
        else {
            self.step();
            return;
        };
        self.last_epoch += 1;
        let better = match (mode_max, relative) {
            (false, true) => metric < self.best * (1.0 - threshold),
            (false, false) => metric < self.best - threshold,
            (true, true) => metric > self.best * (threshold + 1.0),
            (true, false) => metric > self.best + threshold,
        };
        if better {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0; // bad steps during cooldown are ignored
        }
        if self.num_bad_epochs > patience {
            let new_lr = (self.lr * factor).max(min_lr);
            if self.lr - new_lr > PLATEAU_EPS {
                self.lr = new_lr;
            }
            self.cooldown_counter = cooldown;
            self.num_bad_epochs = 0;
        }
    }

    /// The scheduler's state as plain numbers, for checkpoints:
    /// `[steps, lr, best, num_bad_epochs, cooldown_counter]`. The last three matter only for
    /// `ReduceOnPlateau`; `best` is ±∞ before its first metric. Restoring it into a scheduler of
    /// the same schedule and base rate continues bit-for-bit.
    pub fn state(&self) -> Vec<f64> {
        vec![
            self.last_epoch as f64,
            self.lr,
            self.best,
            self.num_bad_epochs as f64,
            self.cooldown_counter as f64,
        ]
    }

    /// Restores a state saved by [`Scheduler::state`]. Errors, changing nothing, when `v` does not
    /// have 5 values or a value is out of range: a counter that is not a non-negative whole
    /// number, a negative or non-finite rate, a NaN best, more steps than a one-cycle schedule
    /// has.
    pub fn restore(&mut self, v: &[f64]) -> Result<()> {
        let err = |msg: String| Err(Error::Spec(format!("Scheduler::restore: {msg}")));
        if v.len() != STATE_LEN {
            return err(format!(
                "state must have {STATE_LEN} values, got {}",
                v.len()
            ));
        }
        let mut counters = [0usize; 3];
        for (k, (name, i)) in [("steps", 0), ("num_bad_epochs", 3), ("cooldown_counter", 4)]
            .into_iter()
            .enumerate()
        {
            let x = v[i];
            // 2^53: above it f64 no longer holds every whole number.
            if !((0.0..=9_007_199_254_740_992.0).contains(&x) && x.fract() == 0.0) {
                return err(format!(
                    "state[{i}] ({name}) must be a whole number in 0..=2^53, got {x}"
                ));
            }
            counters[k] = x as usize;
        }
        let (lr, best) = (v[1], v[2]);
        if !(lr.is_finite() && lr >= 0.0) {
            return err(format!("state[1] (lr) must be finite and ≥ 0, got {lr}"));
        }
        if best.is_nan() {
            return err("state[2] (best) must not be NaN".to_string());
        }
        if let LrSchedule::OneCycle { total_steps, .. } = self.schedule {
            if counters[0] > total_steps {
                return err(format!(
                    "state[0] (steps) must be ≤ the schedule's total_steps {total_steps}, got {}",
                    counters[0]
                ));
            }
        }
        self.last_epoch = counters[0];
        self.lr = lr;
        self.best = best;
        self.num_bad_epochs = counters[1];
        self.cooldown_counter = counters[2];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lr_schedules.json"
    );
    const STEPS: usize = 100;

    /// `OneCycleLR(max_lr=1.0, total_steps=100, ...)`.
    fn one_cycle_with(
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
        cosine: bool,
        three_phase: bool,
    ) -> LrSchedule {
        LrSchedule::OneCycle {
            max_lr: 1.0,
            total_steps: 100,
            pct_start,
            div_factor,
            final_div_factor,
            cosine,
            three_phase,
        }
    }

    /// `ReduceLROnPlateau(factor=, threshold=, min_lr=)`, other arguments at their defaults.
    fn plateau_with(factor: f64, threshold: f64, min_lr: f64) -> LrSchedule {
        LrSchedule::ReduceOnPlateau {
            mode_max: false,
            factor,
            patience: 10,
            threshold,
            relative: true,
            cooldown: 0,
            min_lr,
        }
    }

    /// The cases of `tools/golden/lr_schedules.py`, by name, as lamina schedules (base lr 0.1).
    fn cases() -> Vec<(&'static str, LrSchedule)> {
        use LrSchedule::*;
        let one_cycle = |cosine, three_phase| one_cycle_with(0.3, 25.0, 1e4, cosine, three_phase);
        let plateau =
            |mode_max, factor, patience, threshold, relative, cooldown, min_lr| ReduceOnPlateau {
                mode_max,
                factor,
                patience,
                threshold,
                relative,
                cooldown,
                min_lr,
            };
        vec![
            ("constant", Constant),
            (
                "step_10_0.5",
                Step {
                    step_size: 10,
                    gamma: 0.5,
                },
            ),
            ("step_7_default", LrSchedule::step_lr(7)),
            ("exponential_0.97", LrSchedule::exponential(0.97)),
            ("exponential_1.01", Exponential { gamma: 1.01 }),
            (
                "cosine_30_0.001",
                CosineAnnealing {
                    t_max: 30,
                    eta_min: 0.001,
                },
            ),
            ("cosine_100_default", LrSchedule::cosine_annealing(100)),
            (
                "cosine_7_0.01",
                CosineAnnealing {
                    t_max: 7,
                    eta_min: 0.01,
                },
            ),
            (
                "cosine_1_0.001",
                CosineAnnealing {
                    t_max: 1,
                    eta_min: 0.001,
                },
            ),
            (
                "linear_0.1_10",
                LinearWarmup {
                    start_factor: 0.1,
                    warmup_steps: 10,
                },
            ),
            ("linear_default", LrSchedule::linear_warmup(5)),
            (
                "linear_0.5_1",
                LinearWarmup {
                    start_factor: 0.5,
                    warmup_steps: 1,
                },
            ),
            ("onecycle_cos", LrSchedule::one_cycle(1.0, 100)),
            ("onecycle_linear", one_cycle(false, false)),
            ("onecycle_three_phase", one_cycle(true, true)),
            ("onecycle_three_phase_linear", one_cycle(false, true)),
            (
                "onecycle_custom",
                OneCycle {
                    max_lr: 0.5,
                    total_steps: 120,
                    pct_start: 0.25,
                    div_factor: 10.0,
                    final_div_factor: 100.0,
                    cosine: true,
                    three_phase: false,
                },
            ),
            (
                "plateau_min_rel",
                plateau(false, 0.5, 3, 1e-4, true, 2, 0.001),
            ),
            (
                "plateau_max_abs",
                plateau(true, 0.3, 2, 0.01, false, 0, 0.0),
            ),
            ("plateau_default", LrSchedule::reduce_on_plateau()),
            (
                "plateau_min_lr_clamp",
                plateau(false, 0.5, 1, 1e-4, true, 0, 0.01),
            ),
            (
                "plateau_min_lr_eps",
                plateau(false, 0.5, 1, 1e-4, true, 0, 0.012499995),
            ),
            (
                "plateau_tiny_factor",
                plateau(false, 1.0 - 1e-8, 0, 1e-4, true, 0, 0.0),
            ),
        ]
    }

    /// The PyTorch-recorded fixture; fails (never skips) when it has not been generated.
    fn fixture() -> serde_json::Map<String, Value> {
        let text = std::fs::read_to_string(FIXTURE).unwrap_or_else(|e| {
            panic!(
                "PyTorch fixture missing: {FIXTURE} ({e}). Generate it where PyTorch is installed: \
                 python3 tools/golden/lr_schedules.py crates/lamina-train/tests/fixtures/lr_schedules.json"
            )
        });
        match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => m,
            other => panic!("{FIXTURE}: expected a JSON object of cases, got {other:?}"),
        }
    }

    fn floats(case: &str, v: &Value, key: &str) -> Vec<f64> {
        let arr = v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{case}: no array '{key}' in the fixture"));
        let xs: Vec<f64> = arr
            .iter()
            .map(|x| {
                x.as_f64()
                    .unwrap_or_else(|| panic!("{case}.{key}: {x} is not a number"))
            })
            .collect();
        assert_eq!(xs.len(), STEPS, "{case}.{key}: expected {STEPS} values");
        xs
    }

    /// Relative 1e-12, not bit equality: serde_json's default float parser may round the last
    /// bit of a decimal differently from Python's (the values themselves agree bit for bit when
    /// parsed exactly).
    fn rel_close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-12 * got.abs().max(want.abs())
    }

    #[test]
    fn every_schedule_matches_pytorch_over_100_steps() {
        let fixture = fixture();
        for (name, schedule) in cases() {
            let case = fixture
                .get(name)
                .unwrap_or_else(|| panic!("case '{name}' is not in {FIXTURE}"));
            let want = floats(name, case, "lrs");
            let metrics = case.get("metrics").map(|_| floats(name, case, "metrics"));
            let mut s = Scheduler::new(schedule, 0.1).unwrap();
            for (i, &w) in want.iter().enumerate() {
                assert!(
                    rel_close(s.lr(), w),
                    "{name}: lr before step {i} is {}, PyTorch gives {w}",
                    s.lr()
                );
                match &metrics {
                    Some(m) => s.step_with_metric(m[i]),
                    None => s.step(),
                }
            }
        }
    }

    #[test]
    fn fixture_has_no_case_missing_from_the_table() {
        let names: Vec<&str> = cases().iter().map(|c| c.0).collect();
        for name in fixture().keys() {
            assert!(
                names.contains(&name.as_str()),
                "fixture case '{name}' has no schedule in cases()"
            );
        }
    }

    #[test]
    fn state_and_restore_resume_exactly() {
        for (name, schedule) in cases() {
            let mut a = Scheduler::new(schedule.clone(), 0.1).unwrap();
            // A metric that improves, stalls and worsens, so plateau counters are mid-way.
            let metric = |i: usize| 1.0 / (1.0 + (i % 17) as f64) + (i / 17) as f64 * 0.01;
            for i in 0..37 {
                a.step_with_metric(metric(i));
            }
            let mut b = Scheduler::new(schedule, 0.1).unwrap();
            b.restore(&a.state()).unwrap();
            assert_eq!(a, b, "{name}: restored scheduler differs");
            for i in 37..STEPS {
                a.step_with_metric(metric(i));
                b.step_with_metric(metric(i));
                assert_eq!(a.lr().to_bits(), b.lr().to_bits(), "{name}: step {i}");
            }
        }
    }

    #[test]
    fn restore_rejects_bad_state_and_changes_nothing() {
        let mut s = Scheduler::new(LrSchedule::one_cycle(1.0, 100), 0.1).unwrap();
        s.step();
        let before = s.clone();
        for (state, needle) in [
            (vec![1.0, 0.1, 0.0, 0.0], "5 values, got 4"),
            (vec![-1.0, 0.1, 0.0, 0.0, 0.0], "state[0] (steps)"),
            (vec![1.5, 0.1, 0.0, 0.0, 0.0], "got 1.5"),
            (vec![101.0, 0.1, 0.0, 0.0, 0.0], "total_steps 100"),
            (vec![1.0, f64::NAN, 0.0, 0.0, 0.0], "state[1] (lr)"),
            (vec![1.0, 0.1, f64::NAN, 0.0, 0.0], "state[2] (best)"),
            (
                vec![1.0, 0.1, 0.0, 0.0, -2.0],
                "state[4] (cooldown_counter)",
            ),
        ] {
            let e = s.restore(&state).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
            assert_eq!(s, before);
        }
    }

    #[test]
    fn validate_rejects_bad_hyper_parameters() {
        use LrSchedule::*;
        let bad = [
            (
                Step {
                    step_size: 0,
                    gamma: 0.1,
                },
                "Step: step_size must be ≥ 1, got 0",
            ),
            (
                Step {
                    step_size: 3,
                    gamma: 0.0,
                },
                "Step: gamma must be finite and > 0, got 0",
            ),
            (
                Exponential { gamma: -0.5 },
                "gamma must be finite and > 0, got -0.5",
            ),
            (Exponential { gamma: f64::NAN }, "got NaN"),
            (
                CosineAnnealing {
                    t_max: 0,
                    eta_min: 0.0,
                },
                "t_max must be ≥ 1, got 0",
            ),
            (
                CosineAnnealing {
                    t_max: 5,
                    eta_min: -1.0,
                },
                "eta_min must be finite and ≥ 0, got -1",
            ),
            (
                LinearWarmup {
                    start_factor: 0.0,
                    warmup_steps: 5,
                },
                "start_factor must be in (0, 1], got 0",
            ),
            (
                LinearWarmup {
                    start_factor: 1.5,
                    warmup_steps: 5,
                },
                "got 1.5",
            ),
            (
                LinearWarmup {
                    start_factor: 0.5,
                    warmup_steps: 0,
                },
                "warmup_steps must be ≥ 1",
            ),
            (
                one_cycle_with(1.0, 25.0, 1e4, true, false),
                "pct_start must be in (0, 1), got 1",
            ),
            (
                one_cycle_with(0.0, 25.0, 1e4, true, false),
                "pct_start must be in (0, 1), got 0",
            ),
            (
                LrSchedule::one_cycle(0.0, 100),
                "max_lr must be finite and > 0, got 0",
            ),
            (
                LrSchedule::one_cycle(1.0, 0),
                "total_steps must be ≥ 1, got 0",
            ),
            (
                LrSchedule::one_cycle(1.0, 3),
                "pct_start × total_steps must be > 1",
            ),
            (
                one_cycle_with(0.3, 0.0, 1e4, true, false),
                "div_factor must be",
            ),
            (
                one_cycle_with(0.3, 25.0, -1.0, true, false),
                "final_div_factor must be",
            ),
            (one_cycle_with(0.6, 25.0, 1e4, true, true), "three_phase"),
            (
                plateau_with(1.0, 1e-4, 0.0),
                "factor must be in (0, 1), got 1",
            ),
            (
                plateau_with(0.0, 1e-4, 0.0),
                "factor must be in (0, 1), got 0",
            ),
            (plateau_with(0.1, -1e-4, 0.0), "threshold must be"),
            (plateau_with(0.1, 1e-4, f64::INFINITY), "min_lr must be"),
        ];
        for (schedule, needle) in bad {
            let e = schedule.validate().unwrap_err().to_string();
            assert!(
                e.contains(needle),
                "{schedule:?}: message '{e}' lacks '{needle}'"
            );
            assert!(Scheduler::new(schedule, 0.1).is_err());
        }
        for (_, good) in cases() {
            good.validate().unwrap();
        }
        let e = Scheduler::new(LrSchedule::Constant, -0.1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("base_lr must be finite and ≥ 0, got -0.1"),
            "{e}"
        );
    }

    #[test]
    fn constructors_carry_pytorch_defaults() {
        assert_eq!(
            LrSchedule::step_lr(30),
            LrSchedule::Step {
                step_size: 30,
                gamma: 0.1
            }
        );
        assert_eq!(
            LrSchedule::cosine_annealing(50),
            LrSchedule::CosineAnnealing {
                t_max: 50,
                eta_min: 0.0
            }
        );
        assert_eq!(
            LrSchedule::reduce_on_plateau(),
            LrSchedule::ReduceOnPlateau {
                mode_max: false,
                factor: 0.1,
                patience: 10,
                threshold: 1e-4,
                relative: true,
                cooldown: 0,
                min_lr: 0.0
            }
        );
        let LrSchedule::OneCycle {
            pct_start,
            div_factor,
            final_div_factor,
            cosine,
            three_phase,
            ..
        } = LrSchedule::one_cycle(0.1, 10)
        else {
            unreachable!()
        };
        assert_eq!(
            (pct_start, div_factor, final_div_factor, cosine, three_phase),
            (0.3, 25.0, 1e4, true, false)
        );
    }

    #[test]
    fn plateau_ignores_plain_steps_and_one_cycle_stops_at_its_end() {
        let mut p = Scheduler::new(LrSchedule::reduce_on_plateau(), 0.1).unwrap();
        assert!(p.needs_metric());
        p.step();
        assert_eq!((p.steps(), p.lr()), (0, 0.1));
        let mut c = Scheduler::new(LrSchedule::one_cycle(1.0, 10), 0.1).unwrap();
        assert!(!c.needs_metric());
        // PyTorch computes step 0 through the cosine too, which rounds away from 1/25.
        assert!(rel_close(c.lr(), 1.0 / 25.0));
        for _ in 0..10 {
            c.step();
        }
        let end = c.lr();
        c.step();
        c.step_with_metric(0.0);
        assert_eq!((c.steps(), c.lr()), (10, end));
    }
}
