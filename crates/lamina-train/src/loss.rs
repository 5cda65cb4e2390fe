//! Losses and the in-step metric counters, as graph compositions (mean over the batch).

use crate::config::{LossFunction, ProblemType};
use lamina_core::{DType, Tensor};

/// What the model's last tensor is, as the loss sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Raw scores: the model's output (or its input to a final Softmax/Sigmoid that the trainer
    /// skipped, so cross-entropy never applies a softmax twice).
    Logits,
    /// The model's own output, used as is (probabilities for BCE, values for regression).
    Output,
}

/// `log(1 + e^(−|z|))`, the stable tail of the logistic losses.
fn softplus_neg_abs(z: Tensor) -> Tensor {
    ((-z.abs()).exp() + 1.0).log()
}

/// The scalar loss of `out` against `y` (class indices i32 `[B]` or float targets).
pub(crate) fn loss(kind: LossFunction, out: Tensor, head: Head, y: Tensor) -> Tensor {
    let n = out.numel() as f64;
    match kind {
        LossFunction::SparseCrossEntropy => {
            let batch = out.dim(0) as f64;
            let logp = out.log_softmax(-1);
            -(logp * y.one_hot(out.dim(-1), out.dtype())).sum(&[], false) / batch
        }
        LossFunction::CrossEntropy | LossFunction::CategoricalCrossEntropy => {
            let batch = out.dim(0) as f64;
            -(out.log_softmax(-1) * y).sum(&[], false) / batch
        }
        // Both binary losses run on logits when the model's sigmoid was skipped:
        // BCE(σ(z), t) = max(z,0) − z·t + log(1 + e^−|z|)
        LossFunction::BceWithLogits => {
            (out.relu() - out * y + softplus_neg_abs(out)).sum(&[], false) / n
        }
        LossFunction::BinaryCrossEntropy if head == Head::Logits => {
            (out.relu() - out * y + softplus_neg_abs(out)).sum(&[], false) / n
        }
        LossFunction::BinaryCrossEntropy => {
            // PyTorch clamps each log at −100 so that p ∈ {0, 1} gives a finite loss
            let lp = out.log().maximum(-100.0);
            let lq = (1.0 - out).log().maximum(-100.0);
            -(y * lp + (1.0 - y) * lq).sum(&[], false) / n
        }
        LossFunction::Mse => (out - y).square().sum(&[], false) / n,
        LossFunction::Mae => (out - y).abs().sum(&[], false) / n,
        LossFunction::Huber(delta) => {
            let d = (out - y).abs();
            d.lt(delta)
                .where_(d.square() * 0.5, (d - 0.5 * delta) * delta)
                .sum(&[], false)
                / n
        }
    }
}

/// The step's metric counter: correct predictions (classification) or the sum of squared errors
/// (regression), so accuracy needs no extra forward pass.
pub(crate) fn metric(
    problem: ProblemType,
    kind: LossFunction,
    out: Tensor,
    head: Head,
    y: Tensor,
) -> Tensor {
    let dtype = out.dtype();
    match problem {
        ProblemType::Regression => (out - y).square().sum(&[], false),
        ProblemType::Classification => {
            let single = out.dim(-1) == 1 || kind.is_binary();
            if single {
                // one (or several independent) binary outputs: threshold at ½ (0 for logits)
                let threshold = if head == Head::Logits { 0.0 } else { 0.5 };
                let pred = out.gt(threshold);
                let truth = y.cast(dtype).reshape(&out.shape()).gt(0.5);
                pred.eq(truth).cast(DType::F64).sum(&[], false)
            } else {
                let pred = out.argmax(-1, false);
                let truth = if y.dtype() == DType::I32 {
                    y
                } else {
                    y.argmax(-1, false)
                };
                pred.eq(truth).cast(DType::F64).sum(&[], false)
            }
        }
    }
}
