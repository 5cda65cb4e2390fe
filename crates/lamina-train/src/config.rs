//! Trainer configuration: optimizer, loss, problem type, device, schedule, clipping, accumulation.
//! Every default is the documented PyTorch default; invalid values are rejected by `validate`.

use crate::schedule::LrSchedule;
use lamina_core::{DType, Error, Result};

/// The optimizer's update rule (PyTorch's, with PyTorch's defaults for everything not set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerType {
    /// `torch.optim.SGD` (momentum, dampening, Nesterov, weight decay).
    Sgd,
    /// `torch.optim.Adam` (weight decay as L2 added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay; PyTorch's default weight decay is 0.01, set it in the config).
    AdamW,
    /// `torch.optim.RMSprop` (alpha, momentum, centered).
    RmsProp,
    /// `torch.optim.Adagrad` (lr_decay, eps 1e-10).
    AdaGrad,
    /// `torch.optim.Adadelta` (rho 0.9, eps 1e-6; its usual lr is 1.0).
    AdaDelta,
    /// `torch.optim.NAdam` (momentum_decay 4e-3).
    NAdam,
    /// `torch.optim.LBFGS` with strong-Wolfe line search, full batch: each `train_batch` runs up to
    /// `lbfgs_max_iter` iterations on that batch.
    Lbfgs,
}

impl OptimizerType {
    /// PyTorch's default epsilon of this optimizer.
    pub fn default_epsilon(self) -> f64 {
        match self {
            OptimizerType::AdaGrad => 1e-10,
            OptimizerType::AdaDelta => 1e-6,
            _ => 1e-8,
        }
    }
}

/// The loss minimised (mean over the batch, as PyTorch's default `reduction='mean'`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossFunction {
    /// Cross-entropy with probability (or one-hot) targets `[B, C]`: `−Σ t·log_softmax(z)`.
    CrossEntropy,
    /// Cross-entropy with class indices `[B]` (`nn.CrossEntropyLoss` with integer targets).
    SparseCrossEntropy,
    /// Keras' categorical cross-entropy: one-hot targets `[B, C]` (same formula as CrossEntropy).
    CategoricalCrossEntropy,
    /// `nn.BCELoss` on probabilities (log clamped at −100 as PyTorch); a model ending in Sigmoid
    /// is trained on its logits instead (BCE-with-logits), which is exact and stable.
    BinaryCrossEntropy,
    /// `nn.BCEWithLogitsLoss`.
    BceWithLogits,
    /// `nn.MSELoss`.
    Mse,
    /// `nn.L1Loss`.
    Mae,
    /// `nn.HuberLoss(delta)`.
    Huber(f64),
}

impl LossFunction {
    /// True for the losses that take class indices or class distributions.
    pub fn is_cross_entropy(self) -> bool {
        matches!(
            self,
            LossFunction::CrossEntropy
                | LossFunction::SparseCrossEntropy
                | LossFunction::CategoricalCrossEntropy
        )
    }
    pub fn is_binary(self) -> bool {
        matches!(
            self,
            LossFunction::BinaryCrossEntropy | LossFunction::BceWithLogits
        )
    }
}

/// What the model predicts: classes (accuracy is counted in the step) or real values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemType {
    Classification,
    Regression,
}

/// Where the compiled step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// CUDA device `i`.
    Cuda(usize),
    /// CUDA when a GPU is present, else the CPU (`LAMINA_DEVICE=cpu|cuda` overrides).
    Auto,
}

/// When the learning-rate schedule advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleStep {
    /// After every epoch of `fit` (PyTorch's usual `scheduler.step()` placement for StepLR & co.).
    Epoch,
    /// After every optimizer update (OneCycle, warm-up).
    Batch,
}

/// Everything `ModelTrainer::new` needs besides the model.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Batch size of `fit` (train_batch takes any size).
    pub batch_size: usize,
    /// Base learning rate (default 1e-3).
    pub learning_rate: f64,
    pub optimizer: OptimizerType,
    /// Adam, AdamW, NAdam β₁ (0.9).
    pub beta1: f64,
    /// Adam, AdamW, NAdam β₂ (0.999).
    pub beta2: f64,
    /// `None`: the optimizer's PyTorch default ([`OptimizerType::default_epsilon`]).
    pub epsilon: Option<f64>,
    /// L2 penalty (decoupled for AdamW) (0).
    pub weight_decay: f64,
    /// SGD and RMSProp momentum (0).
    pub momentum: f64,
    /// SGD dampening (0).
    pub dampening: f64,
    /// SGD Nesterov momentum (false).
    pub nesterov: bool,
    /// RMSProp smoothing constant α (0.99).
    pub rms_alpha: f64,
    /// RMSProp centered variant (false).
    pub centered: bool,
    /// AdaDelta ρ (0.9).
    pub rho: f64,
    /// AdaGrad learning-rate decay (0).
    pub lr_decay: f64,
    /// NAdam momentum decay ψ (4e-3).
    pub momentum_decay: f64,
    /// L-BFGS iterations per `train_batch` (20), history size (100), gradient and change tolerances
    /// (1e-7, 1e-9) — PyTorch's defaults.
    pub lbfgs_max_iter: usize,
    pub lbfgs_history: usize,
    pub lbfgs_tolerance_grad: f64,
    pub lbfgs_tolerance_change: f64,
    pub loss: LossFunction,
    pub problem: ProblemType,
    pub device: Device,
    /// Float type of parameters and computation (F32; F64 for verification).
    pub dtype: DType,
    /// Seed of dropout masks and data shuffling (parameters use the model's seed).
    pub seed: u64,
    pub lr_schedule: LrSchedule,
    pub schedule_step: ScheduleStep,
    /// Clip the global gradient norm to this value (PyTorch `clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// Clip each gradient element to ±this value (PyTorch `clip_grad_value_`).
    pub clip_grad_value: Option<f64>,
    /// Apply the optimizer every k batches on the mean gradient (1 = every batch).
    pub accumulate_grad_batches: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            batch_size: 32,
            learning_rate: 1e-3,
            optimizer: OptimizerType::Adam,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: None,
            weight_decay: 0.0,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            rms_alpha: 0.99,
            centered: false,
            rho: 0.9,
            lr_decay: 0.0,
            momentum_decay: 4e-3,
            lbfgs_max_iter: 20,
            lbfgs_history: 100,
            lbfgs_tolerance_grad: 1e-7,
            lbfgs_tolerance_change: 1e-9,
            loss: LossFunction::SparseCrossEntropy,
            problem: ProblemType::Classification,
            device: Device::Auto,
            dtype: DType::F32,
            seed: 0,
            lr_schedule: LrSchedule::Constant,
            schedule_step: ScheduleStep::Epoch,
            clip_grad_norm: None,
            clip_grad_value: None,
            accumulate_grad_batches: 1,
        }
    }
}

impl TrainerConfig {
    /// The epsilon the optimizer uses.
    pub fn eps(&self) -> f64 {
        self.epsilon
            .unwrap_or_else(|| self.optimizer.default_epsilon())
    }

    /// Rejects hyper-parameters PyTorch would reject (and a few it silently accepts).
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails every check
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Spec(format!("TrainerConfig: {m}")));
        let unit = |x: f64| (0.0..1.0).contains(&x);
        if self.batch_size == 0 {
            return bad("batch_size must be ≥ 1, got 0".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return bad(format!(
                "learning_rate must be a finite number ≥ 0, got {}",
                self.learning_rate
            ));
        }
        if !unit(self.beta1) || !unit(self.beta2) {
            return bad(format!(
                "beta1 and beta2 must be in [0, 1), got {} and {}",
                self.beta1, self.beta2
            ));
        }
        if !(self.eps() >= 0.0) {
            return bad(format!("epsilon must be ≥ 0, got {}", self.eps()));
        }
        if !(self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.momentum >= 0.0) {
            return bad(format!("momentum must be ≥ 0, got {}", self.momentum));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return bad(format!("Nesterov momentum needs momentum > 0 and dampening 0, got momentum {} and dampening {}", self.momentum, self.dampening));
        }
        if !(0.0..=1.0).contains(&self.rms_alpha) || !(0.0..=1.0).contains(&self.rho) {
            return bad(format!(
                "rms_alpha and rho must be in [0, 1], got {} and {}",
                self.rms_alpha, self.rho
            ));
        }
        if !(self.lr_decay >= 0.0) || !(self.momentum_decay >= 0.0) {
            return bad(format!(
                "lr_decay and momentum_decay must be ≥ 0, got {} and {}",
                self.lr_decay, self.momentum_decay
            ));
        }
        if self.optimizer == OptimizerType::Lbfgs
            && (self.lbfgs_max_iter == 0 || self.lbfgs_history == 0)
        {
            return bad("L-BFGS needs lbfgs_max_iter ≥ 1 and lbfgs_history ≥ 1".into());
        }
        if self.optimizer == OptimizerType::Lbfgs && self.accumulate_grad_batches != 1 {
            return bad("L-BFGS works on full batches: accumulate_grad_batches must be 1".into());
        }
        if let LossFunction::Huber(d) = self.loss {
            if !(d > 0.0) {
                return bad(format!("Huber delta must be > 0, got {d}"));
            }
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c > 0.0) {
                return bad(format!("clip_grad_norm must be > 0, got {c}"));
            }
        }
        if let Some(c) = self.clip_grad_value {
            if !(c > 0.0) {
                return bad(format!("clip_grad_value must be > 0, got {c}"));
            }
        }
        if self.accumulate_grad_batches == 0 {
            return bad("accumulate_grad_batches must be ≥ 1, got 0".into());
        }
        if !matches!(self.dtype, DType::F32 | DType::F64) {
            return bad(format!("dtype must be f32 or f64, got {}", self.dtype));
        }
        if self.problem == ProblemType::Regression
            && (self.loss.is_cross_entropy() || self.loss.is_binary())
        {
            return bad(format!(
                "{:?} is a classification loss; regression takes Mse, Mae or Huber",
                self.loss
            ));
        }
        self.lr_schedule.validate()
    }
}
