//! Evaluation metrics computed on the host from predictions gathered after a run: a confusion
//! matrix with precision, recall and F1, binary ranking metrics (ROC AUC, average precision, the
//! ROC curve) and regression errors.
//!
//! Every value equals scikit-learn's for the same input (the unit tests hold sklearn's numbers);
//! where sklearn would warn and return NaN, lamina returns an error or the documented convention.

use lamina_core::{Error, Result};

/// How per-class precision, recall or F1 are combined into one number, as sklearn's `average`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// Unweighted mean over the classes that occur in the truth or the predictions
    /// (sklearn `average='macro'` with `labels` not given).
    Macro,
    /// Computed from the totals of true positives, false positives and false negatives over all
    /// classes (sklearn `average='micro'`); for single-label multi-class data all three metrics
    /// equal the accuracy.
    Micro,
    /// Mean over classes weighted by each class's number of true samples (its support)
    /// (sklearn `average='weighted'`).
    Weighted,
}

/// Counts of (true class, predicted class) pairs: row = true class, column = predicted class,
/// as sklearn's `confusion_matrix(y_true, y_pred, labels=range(classes))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    /// Number of classes; class indices are `0..classes`.
    pub classes: usize,
    /// Row-major `classes × classes` counts: `counts[truth * classes + pred]`.
    pub counts: Vec<u64>,
}

/// `num / den`, or 0 when `den` is 0: sklearn's `zero_division=0`.
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Counts one sample whose true class is `truth` and predicted class is `pred`.
    /// Errors (and counts nothing) when either is not below `classes`.
    pub fn add(&mut self, truth: usize, pred: usize) -> Result<()> {
        for (name, v) in [("truth", truth), ("pred", pred)] {
            if v >= self.classes {
                return Err(Error::Spec(format!(
                    "ConfusionMatrix::add: {name} class must be in 0..{}, got {v}",
                    self.classes
                )));
            }
        }
        self.counts[truth * self.classes + pred] += 1;
        Ok(())
    }

    /// The matrix of paired true and predicted classes (sklearn `confusion_matrix`). Errors when
    /// the slices differ in length or a class is not below `classes` (naming slice, index, value).
    pub fn from_predictions(truth: &[usize], pred: &[usize], classes: usize) -> Result<Self> {
        if truth.len() != pred.len() {
            return Err(Error::Spec(format!(
                "ConfusionMatrix::from_predictions: truth and pred must have the same length, \
                 got {} and {}",
                truth.len(),
                pred.len()
            )));
        }
        for (name, v) in [("truth", truth), ("pred", pred)] {
            if let Some((i, &c)) = v.iter().enumerate().find(|(_, &c)| c >= classes) {
                return Err(Error::Spec(format!(
                    "ConfusionMatrix::from_predictions: {name}[{i}] must be in 0..{classes}, got {c}"
                )));
            }
        }
        let mut m = ConfusionMatrix::new(classes);
        for (&t, &p) in truth.iter().zip(pred) {
            m.counts[t * classes + p] += 1;
        }
        Ok(m)
    }

    /// Number of samples of true class `truth` predicted as `pred` (0 outside the matrix).
    pub fn get(&self, truth: usize, pred: usize) -> u64 {
        if truth < self.classes && pred < self.classes {
            self.counts[truth * self.classes + pred]
        } else {
            0
        }
    }

    /// Number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.get(c, c)).sum()
    }

    /// Samples of true class `c` (row sum, the class's support).
    fn support(&self, c: usize) -> u64 {
        (0..self.classes).map(|p| self.get(c, p)).sum()
    }

    /// Samples predicted as class `c` (column sum).
    fn predicted(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.get(t, c)).sum()
    }

    /// Fraction of samples predicted correctly (sklearn `accuracy_score`); 0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct() as f64, self.total() as f64)
    }

    /// Precision of each class, `tp / (tp + fp)`, 0 for a class never predicted
    /// (sklearn `precision_score(average=None, labels=range(classes), zero_division=0)`).
    pub fn per_class_precision(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| ratio(self.get(c, c) as f64, self.predicted(c) as f64))
            .collect()
    }

    /// Recall of each class, `tp / (tp + fn)`, 0 for a class with no true samples
    /// (sklearn `recall_score(average=None, labels=range(classes), zero_division=0)`).
    pub fn per_class_recall(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| ratio(self.get(c, c) as f64, self.support(c) as f64))
            .collect()
    }

    /// F1 of each class, `2 tp / (2 tp + fp + fn)`, 0 when that denominator is 0
    /// (sklearn `f1_score(average=None, labels=range(classes), zero_division=0)`).
    pub fn per_class_f1(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| {
                let tp = self.get(c, c) as f64;
                ratio(2.0 * tp, (self.support(c) + self.predicted(c)) as f64)
            })
            .collect()
    }

    /// Classes that occur in the truth or the predictions: the classes sklearn averages over
    /// when `labels` is not given.
    fn present(&self) -> Vec<usize> {
        (0..self.classes)
            .filter(|&c| self.support(c) + self.predicted(c) > 0)
            .collect()
    }

    fn average(&self, per_class: Vec<f64>, avg: Average) -> f64 {
        match avg {
            // Single-label data: total tp = correct, total tp+fp = total tp+fn = all samples.
            Average::Micro => self.accuracy(),
            Average::Macro => {
                let present = self.present();
                ratio(
                    present.iter().map(|&c| per_class[c]).sum(),
                    present.len() as f64,
                )
            }
            Average::Weighted => {
                let weighted: f64 = (0..self.classes)
                    .map(|c| per_class[c] * self.support(c) as f64)
                    .sum();
                ratio(weighted, self.total() as f64)
            }
        }
    }

    /// Precision averaged as `avg` (sklearn `precision_score(y_true, y_pred, average=...,
    /// zero_division=0)`).
    pub fn precision(&self, avg: Average) -> f64 {
        self.average(self.per_class_precision(), avg)
    }

    /// Recall averaged as `avg` (sklearn `recall_score(..., zero_division=0)`).
    pub fn recall(&self, avg: Average) -> f64 {
        self.average(self.per_class_recall(), avg)
    }

    /// F1 averaged as `avg`: the macro F1 is the mean of per-class F1 scores, not the harmonic
    /// mean of macro precision and recall (sklearn `f1_score(..., zero_division=0)`).
    pub fn f1(&self, avg: Average) -> f64 {
        self.average(self.per_class_f1(), avg)
    }
}

/// Checks paired scores and labels; returns (positives, negatives).
fn check_binary(op: &str, scores: &[f64], labels: &[bool]) -> Result<(usize, usize)> {
    if scores.len() != labels.len() {
        return Err(Error::Spec(format!(
            "{op}: scores and labels must have the same length, got {} and {}",
            scores.len(),
            labels.len()
        )));
    }
    if scores.is_empty() {
        return Err(Error::Spec(format!("{op}: scores must not be empty")));
    }
    if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::Spec(format!(
            "{op}: scores[{i}] must be finite, got {s}"
        )));
    }
    let pos = labels.iter().filter(|&&l| l).count();
    Ok((pos, labels.len() - pos))
}

/// Cumulative (true positives, false positives, threshold) at each distinct score, scores taken
/// from highest to lowest with ties grouped: sklearn's `_binary_clf_curve`.
fn clf_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points: Vec<(f64, f64, f64)> = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        // `==` rather than total_cmp so that -0.0 and 0.0 form one group, as in numpy.
        let last_of_group = k + 1 == order.len() || scores[order[k + 1]] != scores[i];
        if last_of_group {
            points.push((tp, fp, scores[i]));
        }
    }
    points
}

fn require_both_classes(op: &str, pos: usize, neg: usize) -> Result<()> {
    if pos == 0 || neg == 0 {
        return Err(Error::Spec(format!(
            "{op}: labels must contain both classes, got {pos} positive and {neg} negative"
        )));
    }
    Ok(())
}

/// Area under the ROC curve of binary `scores` (higher = more positive) against `labels`
/// (sklearn `roc_auc_score`). Tied scores of a positive and a negative count one half: this is
/// the Mann-Whitney U statistic with average ranks, divided by positives × negatives.
/// Errors for different lengths, empty input, a non-finite score, or only one class present.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    let (pos, neg) = check_binary("roc_auc", scores, labels)?;
    require_both_classes("roc_auc", pos, neg)?;
    // Trapezoids between consecutive curve points: within a tie group, each negative is ranked
    // below the positives before the group and level with the group's positives (half credit).
    let mut area = 0.0;
    let (mut tp_prev, mut fp_prev) = (0.0, 0.0);
    for (tp, fp, _) in clf_curve(scores, labels) {
        area += (fp - fp_prev) * (tp_prev + tp) / 2.0;
        (tp_prev, fp_prev) = (tp, fp);
    }
    Ok(area / (pos as f64 * neg as f64))
}

/// Average precision of binary `scores` against `labels` (sklearn `average_precision_score`):
/// Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct score thresholds from highest to lowest, where tied scores
/// form one threshold, and R₀ = 0. Errors for different lengths, empty input, a non-finite score,
/// or no positive label (where sklearn warns and returns a meaningless value).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64> {
    let (pos, _) = check_binary("average_precision", scores, labels)?;
    if pos == 0 {
        return Err(Error::Spec(
            "average_precision: labels must contain at least one positive, got none".to_string(),
        ));
    }
    let mut ap = 0.0;
    let mut recall_prev = 0.0;
    for (tp, fp, _) in clf_curve(scores, labels) {
        let recall = tp / pos as f64;
        ap += (recall - recall_prev) * (tp / (tp + fp));
        recall_prev = recall;
    }
    Ok(ap)
}

/// Area under the precision-recall curve, computed as [`average_precision`] (the step-wise
/// sum sklearn recommends over trapezoids, which overestimate it).
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    average_precision(scores, labels)
}

/// ROC curve of binary `scores` against `labels`: (false positive rates, true positive rates,
/// thresholds), one point per distinct score from highest to lowest plus a first point (0, 0) at
/// threshold +∞, as sklearn `roc_curve(labels, scores, drop_intermediate=False)`. A sample is
/// predicted positive at threshold t when its score is ≥ t. Errors for different lengths, empty
/// input, a non-finite score, or only one class present (where sklearn returns NaN rates).
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (pos, neg) = check_binary("roc_curve", scores, labels)?;
    require_both_classes("roc_curve", pos, neg)?;
    let curve = clf_curve(scores, labels);
    let mut fpr = Vec::with_capacity(curve.len() + 1);
    let mut tpr = Vec::with_capacity(curve.len() + 1);
    let mut thresholds = Vec::with_capacity(curve.len() + 1);
    fpr.push(0.0);
    tpr.push(0.0);
    thresholds.push(f64::INFINITY);
    for (tp, fp, t) in curve {
        fpr.push(fp / neg as f64);
        tpr.push(tp / pos as f64);
        thresholds.push(t);
    }
    Ok((fpr, tpr, thresholds))
}

/// Regression errors of predictions against targets, as sklearn's `mean_absolute_error`,
/// `mean_squared_error`, `root_mean_squared_error` and `r2_score(target, pred)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegressionMetrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Square root of `mse`.
    pub rmse: f64,
    /// Coefficient of determination `1 − SS_res / SS_tot` with `SS_tot` about the mean target.
    /// When the targets are all equal (`SS_tot = 0`) it is 1 for a perfect prediction and 0
    /// otherwise, as sklearn with `force_finite=True` (also for a single sample, where sklearn
    /// returns NaN instead).
    pub r2: f64,
}

impl RegressionMetrics {
    /// Computes the metrics. Errors when the slices differ in length, are empty, or hold a
    /// non-finite value (naming slice and index).
    pub fn new(pred: &[f64], target: &[f64]) -> Result<Self> {
        const OP: &str = "RegressionMetrics::new";
        if pred.len() != target.len() {
            return Err(Error::Spec(format!(
                "{OP}: pred and target must have the same length, got {} and {}",
                pred.len(),
                target.len()
            )));
        }
        if pred.is_empty() {
            return Err(Error::Spec(format!(
                "{OP}: pred and target must not be empty"
            )));
        }
        for (name, v) in [("pred", pred), ("target", target)] {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(Error::Spec(format!(
                    "{OP}: {name}[{i}] must be finite, got {x}"
                )));
            }
        }
        let n = pred.len() as f64;
        let abs: f64 = pred.iter().zip(target).map(|(p, t)| (t - p).abs()).sum();
        let ss_res: f64 = pred
            .iter()
            .zip(target)
            .map(|(p, t)| (t - p) * (t - p))
            .sum();
        let mean = target.iter().sum::<f64>() / n;
        let ss_tot: f64 = target.iter().map(|t| (t - mean) * (t - mean)).sum();
        let mse = ss_res / n;
        let r2 = if ss_tot != 0.0 {
            1.0 - ss_res / ss_tot
        } else if ss_res == 0.0 {
            1.0
        } else {
            0.0
        };
        Ok(RegressionMetrics {
            mae: abs / n,
            mse,
            rmse: mse.sqrt(),
            r2,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Expected values come from scikit-learn 1.9.1 (numpy 2.4.6); each block quotes the Python
    //! that printed them (`from sklearn.metrics import *`).
    use super::*;

    fn close(got: f64, want: f64, what: &str) {
        let tol = 1e-12 * want.abs().max(1.0);
        assert!(
            (got - want).abs() <= tol,
            "{what}: got {got}, sklearn gives {want}"
        );
    }

    fn close_all(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            close(g, w, &format!("{what}[{i}]"));
        }
    }

    struct Expected {
        counts: [u64; 16],
        accuracy: f64,
        // (precision, recall, f1) for macro, micro, weighted
        averaged: [(f64, f64, f64); 3],
        precision: [f64; 4],
        recall: [f64; 4],
        f1: [f64; 4],
    }

    // for avg in ["macro", "micro", "weighted"]:
    //     precision_score(t, p, average=avg, zero_division=0)  # likewise recall_score, f1_score
    // confusion_matrix(t, p, labels=range(4)).ravel(); accuracy_score(t, p)
    // precision_score(t, p, average=None, labels=range(4), zero_division=0)  # likewise recall, f1
    fn check_case(truth: &[usize], pred: &[usize], e: &Expected) {
        let m = ConfusionMatrix::from_predictions(truth, pred, 4).unwrap();
        assert_eq!(m.counts, e.counts);
        assert_eq!(m.total(), truth.len() as u64);
        close(m.accuracy(), e.accuracy, "accuracy");
        for (avg, (p, r, f)) in [Average::Macro, Average::Micro, Average::Weighted]
            .into_iter()
            .zip(e.averaged)
        {
            close(m.precision(avg), p, &format!("precision {avg:?}"));
            close(m.recall(avg), r, &format!("recall {avg:?}"));
            close(m.f1(avg), f, &format!("f1 {avg:?}"));
        }
        close_all(
            &m.per_class_precision(),
            &e.precision,
            "per-class precision",
        );
        close_all(&m.per_class_recall(), &e.recall, "per-class recall");
        close_all(&m.per_class_f1(), &e.f1, "per-class f1");
    }

    #[test]
    fn four_classes_all_predicted() {
        // t = [0,0,0,1,1,1,1,2,2,2,3,3,3,3,3,0,1,2,3,2]
        // p = [0,1,0,1,1,2,1,2,3,2,3,3,0,3,1,0,1,2,2,2]
        let t = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 0, 1, 2, 3, 2];
        let p = [0, 1, 0, 1, 1, 2, 1, 2, 3, 2, 3, 3, 0, 3, 1, 0, 1, 2, 2, 2];
        check_case(
            &t,
            &p,
            &Expected {
                counts: [3, 1, 0, 0, 0, 4, 1, 0, 0, 0, 4, 1, 1, 1, 1, 3],
                accuracy: 0.7,
                averaged: [
                    (0.7083333333333333, 0.7125, 0.7011363636363637),
                    (0.7, 0.7, 0.7),
                    (0.7083333333333333, 0.7, 0.6936363636363636),
                ],
                precision: [0.75, 0.6666666666666666, 0.6666666666666666, 0.75],
                recall: [0.75, 0.8, 0.8, 0.5],
                f1: [0.75, 0.7272727272727273, 0.7272727272727273, 0.6],
            },
        );
    }

    #[test]
    fn class_never_predicted_has_zero_precision() {
        // t = [0,1,2,3,0,1,2,3,0,1,2,3,3,3]
        // p = [0,1,2,0,0,2,2,1,1,1,2,2,0,1]  (class 3 occurs in t, never in p)
        let t = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 3, 3];
        let p = [0, 1, 2, 0, 0, 2, 2, 1, 1, 1, 2, 2, 0, 1];
        check_case(
            &t,
            &p,
            &Expected {
                counts: [2, 1, 0, 0, 0, 2, 1, 0, 0, 0, 3, 0, 2, 2, 1, 0],
                accuracy: 0.5,
                averaged: [
                    (0.375, 0.5833333333333333, 0.45535714285714285),
                    (0.5, 0.5, 0.5),
                    (0.32142857142857145, 0.5, 0.3903061224489796),
                ],
                precision: [0.5, 0.4, 0.6, 0.0],
                recall: [0.6666666666666666, 0.6666666666666666, 1.0, 0.0],
                f1: [0.5714285714285714, 0.5, 0.75, 0.0],
            },
        );
    }

    #[test]
    fn absent_class_is_left_out_of_macro_average() {
        // t = [0,1,2,0,1,2,0,0]; p = [0,2,2,0,1,1,0,2]  (class 3 in neither: sklearn's
        // average='macro' only covers labels present in t or p)
        let t = [0, 1, 2, 0, 1, 2, 0, 0];
        let p = [0, 2, 2, 0, 1, 1, 0, 2];
        check_case(
            &t,
            &p,
            &Expected {
                counts: [3, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0],
                accuracy: 0.625,
                averaged: [
                    (0.611111111111111, 0.5833333333333334, 0.5857142857142857),
                    (0.625, 0.625, 0.625),
                    (0.7083333333333334, 0.625, 0.6535714285714286),
                ],
                precision: [1.0, 0.5, 0.3333333333333333, 0.0],
                recall: [0.75, 0.5, 0.5, 0.0],
                f1: [0.8571428571428571, 0.5, 0.4, 0.0],
            },
        );
    }

    #[test]
    fn add_counts_like_from_predictions() {
        let mut m = ConfusionMatrix::new(3);
        m.add(0, 0).unwrap();
        m.add(2, 1).unwrap();
        m.add(2, 1).unwrap();
        assert_eq!(
            m,
            ConfusionMatrix::from_predictions(&[0, 2, 2], &[0, 1, 1], 3).unwrap()
        );
        assert_eq!(m.get(2, 1), 2);
        assert_eq!(m.get(1, 2), 0);
        assert_eq!(m.get(5, 0), 0);
        assert_eq!(m.total(), 3);
        let e = m.add(1, 3).unwrap_err().to_string();
        assert!(
            e.contains("pred") && e.contains("0..3") && e.contains('3'),
            "{e}"
        );
        assert_eq!(m.total(), 3, "a rejected sample is not counted");
        let empty = ConfusionMatrix::new(2);
        assert_eq!(empty.accuracy(), 0.0);
        assert_eq!(empty.f1(Average::Macro), 0.0);
    }

    #[test]
    fn from_predictions_rejects_bad_input() {
        let e = ConfusionMatrix::from_predictions(&[0, 1, 4], &[0, 1, 1], 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("truth[2]") && e.contains("0..4") && e.contains("got 4"),
            "{e}"
        );
        let e = ConfusionMatrix::from_predictions(&[0, 1], &[0, 7], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pred[1]") && e.contains("got 7"), "{e}");
        let e = ConfusionMatrix::from_predictions(&[0, 1], &[0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("same length") && e.contains("2 and 1"), "{e}");
    }

    // s = [0.9,0.8,0.8,0.7,0.6,0.6,0.6,0.5,0.3,0.3,0.2,0.1]
    // y = [1,1,0,1,0,1,0,0,1,0,0,0]
    const SCORES: [f64; 12] = [0.9, 0.8, 0.8, 0.7, 0.6, 0.6, 0.6, 0.5, 0.3, 0.3, 0.2, 0.1];
    const LABELS: [u8; 12] = [1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0];

    fn labels(l: &[u8]) -> Vec<bool> {
        l.iter().map(|&x| x == 1).collect()
    }

    #[test]
    fn ranking_metrics_with_ties() {
        let y = labels(&LABELS);
        // roc_auc_score(y, s); average_precision_score(y, s)
        close(roc_auc(&SCORES, &y).unwrap(), 0.7714285714285715, "roc_auc");
        close(
            average_precision(&SCORES, &y).unwrap(),
            0.6976190476190477,
            "average_precision",
        );
        close(pr_auc(&SCORES, &y).unwrap(), 0.6976190476190477, "pr_auc");
        // All scores tied: s2 = [0.5]*4, y2 = [1,0,1,0]
        let y2 = labels(&[1, 0, 1, 0]);
        close(roc_auc(&[0.5; 4], &y2).unwrap(), 0.5, "roc_auc all tied");
        close(
            average_precision(&[0.5; 4], &y2).unwrap(),
            0.5,
            "ap all tied",
        );
        // s3 = [0.1,0.4,0.35,0.8]; y3 = [0,0,1,1]
        let y3 = labels(&[0, 0, 1, 1]);
        close(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &y3).unwrap(),
            0.75,
            "roc_auc s3",
        );
        close(
            average_precision(&[0.1, 0.4, 0.35, 0.8], &y3).unwrap(),
            0.8333333333333333,
            "ap s3",
        );
    }

    #[test]
    fn roc_curve_keeps_every_threshold() {
        // fpr, tpr, th = roc_curve(y, s, drop_intermediate=False)
        let (fpr, tpr, th) = roc_curve(&SCORES, &labels(&LABELS)).unwrap();
        close_all(
            &fpr,
            &[
                0.0,
                0.0,
                0.14285714285714285,
                0.14285714285714285,
                0.42857142857142855,
                0.5714285714285714,
                0.7142857142857143,
                0.8571428571428571,
                1.0,
            ],
            "fpr",
        );
        close_all(&tpr, &[0.0, 0.2, 0.4, 0.6, 0.8, 0.8, 1.0, 1.0, 1.0], "tpr");
        assert_eq!(th[0], f64::INFINITY);
        assert_eq!(&th[1..], &[0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1]);
    }

    #[test]
    fn ranking_metrics_reject_bad_input() {
        let e = roc_auc(&[0.1, 0.2], &[true, true]).unwrap_err().to_string();
        assert!(
            e.contains("both classes") && e.contains("2 positive and 0 negative"),
            "{e}"
        );
        let e = roc_curve(&[0.1, 0.2], &[false, false])
            .unwrap_err()
            .to_string();
        assert!(e.contains("both classes"), "{e}");
        let e = average_precision(&[0.1, 0.2], &[false, false])
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "{e}");
        let e = roc_auc(&[0.1, 0.2], &[true]).unwrap_err().to_string();
        assert!(e.contains("same length") && e.contains("2 and 1"), "{e}");
        let e = average_precision(&[], &[]).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = roc_auc(&[0.1, f64::NAN], &[true, false])
            .unwrap_err()
            .to_string();
        assert!(e.contains("scores[1]") && e.contains("NaN"), "{e}");
        // All positives: average precision is 1, as sklearn gives.
        assert_eq!(average_precision(&[0.3, 0.1], &[true, true]).unwrap(), 1.0);
    }

    #[test]
    fn regression_metrics() {
        // pr = [2.5,0.0,2.0,8.0,-1.5,3.25]; tg = [3.0,-0.5,2.0,7.0,-1.0,2.0]
        // mean_absolute_error(tg, pr), mean_squared_error(tg, pr),
        // root_mean_squared_error(tg, pr), r2_score(tg, pr)
        let m = RegressionMetrics::new(
            &[2.5, 0.0, 2.0, 8.0, -1.5, 3.25],
            &[3.0, -0.5, 2.0, 7.0, -1.0, 2.0],
        )
        .unwrap();
        close(m.mae, 0.625, "mae");
        close(m.mse, 0.5520833333333334, "mse");
        close(m.rmse, 0.7430231041719587, "rmse");
        close(m.r2, 0.9196157735085945, "r2");
        // Constant targets: r2_score([2,2,2], [2,2,2]) == 1.0; r2_score([2,2,2], [2,1,2]) == 0.0
        assert_eq!(
            RegressionMetrics::new(&[2.0; 3], &[2.0; 3]).unwrap().r2,
            1.0
        );
        assert_eq!(
            RegressionMetrics::new(&[2.0, 1.0, 2.0], &[2.0; 3])
                .unwrap()
                .r2,
            0.0
        );
    }

    #[test]
    fn regression_metrics_reject_bad_input() {
        let e = RegressionMetrics::new(&[1.0, 2.0], &[1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("same length") && e.contains("2 and 1"), "{e}");
        let e = RegressionMetrics::new(&[], &[]).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = RegressionMetrics::new(&[1.0, 2.0], &[1.0, f64::INFINITY])
            .unwrap_err()
            .to_string();
        assert!(e.contains("target[1]") && e.contains("inf"), "{e}");
    }
}
