//! What the trainer reads: labels of a batch, and data sets that `fit` iterates.

use lamina_core::{dtype::fmt_shape, Error, Result};

/// The labels of a batch: class indices or float targets (one-hot rows, probabilities, values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Labels<'a> {
    Classes(&'a [i32]),
    Targets(&'a [f32]),
}

impl<'a> From<&'a [i32]> for Labels<'a> {
    fn from(v: &'a [i32]) -> Self {
        Labels::Classes(v)
    }
}
impl<'a> From<&'a [f32]> for Labels<'a> {
    fn from(v: &'a [f32]) -> Self {
        Labels::Targets(v)
    }
}
impl<'a> From<&'a Vec<i32>> for Labels<'a> {
    fn from(v: &'a Vec<i32>) -> Self {
        Labels::Classes(v)
    }
}
impl<'a> From<&'a Vec<f32>> for Labels<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        Labels::Targets(v)
    }
}
impl<'a, const N: usize> From<&'a [i32; N]> for Labels<'a> {
    fn from(v: &'a [i32; N]) -> Self {
        Labels::Classes(v)
    }
}
impl<'a, const N: usize> From<&'a [f32; N]> for Labels<'a> {
    fn from(v: &'a [f32; N]) -> Self {
        Labels::Targets(v)
    }
}

impl Labels<'_> {
    /// Number of values (class indices, or target values of all samples together).
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes(v) => v.len(),
            Labels::Targets(v) => v.len(),
        }
    }
    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Owned labels of a data set.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelData {
    Classes(Vec<i32>),
    /// Targets with the per-sample shape (`[]` for one value per sample).
    Targets {
        values: Vec<f32>,
        shape: Vec<usize>,
    },
}

impl LabelData {
    /// Borrowed view, as the trainer takes it.
    pub fn as_labels(&self) -> Labels<'_> {
        match self {
            LabelData::Classes(c) => Labels::Classes(c),
            LabelData::Targets { values, .. } => Labels::Targets(values),
        }
    }
}

/// A data set `fit` can iterate: samples addressed by index, copied into batches.
///
/// `Sync` is a supertrait because the [`DataLoader`](crate::DataLoader) gathers batches on worker
/// threads while the trainer computes; every reader in this crate returns a `Sync` data set.
pub trait Dataset: Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shape of one sample (without the batch axis).
    fn sample_shape(&self) -> &[usize];
    /// Shape of one sample's target (`[]` for class indices or a single value).
    fn target_shape(&self) -> &[usize];
    /// True when labels are class indices.
    fn has_classes(&self) -> bool;
    /// Appends the samples at `indices` to `x` and their labels to `classes` or `targets`.
    fn gather(
        &self,
        indices: &[usize],
        x: &mut Vec<f32>,
        classes: &mut Vec<i32>,
        targets: &mut Vec<f32>,
    );
    /// Like [`gather`](Dataset::gather), for a training draw in `epoch`. Data sets with random
    /// augmentation ([`AugmentedDataset`](crate::AugmentedDataset)) draw it here, seeded by the
    /// epoch and the sample index so that the result does not depend on batching or threads;
    /// the default gathers the plain samples.
    fn gather_epoch(
        &self,
        indices: &[usize],
        epoch: usize,
        x: &mut Vec<f32>,
        classes: &mut Vec<i32>,
        targets: &mut Vec<f32>,
    ) {
        let _ = epoch;
        self.gather(indices, x, classes, targets)
    }
}

/// A data set held in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct InMemoryDataset {
    x: Vec<f32>,
    sample_shape: Vec<usize>,
    labels: LabelData,
    class_names: Option<Vec<String>>,
}

impl InMemoryDataset {
    /// Checks that `x` holds a whole number of samples and that there is one label per sample.
    pub fn new(x: Vec<f32>, sample_shape: &[usize], labels: LabelData) -> Result<Self> {
        let per: usize = sample_shape.iter().product();
        if per == 0 || !x.len().is_multiple_of(per) {
            return Err(Error::Input(format!(
                "{} values do not split into samples of shape {}",
                x.len(),
                fmt_shape(sample_shape)
            )));
        }
        let n = x.len() / per;
        let got = match &labels {
            LabelData::Classes(c) => c.len(),
            LabelData::Targets { values, shape } => {
                let k: usize = shape.iter().product();
                if k == 0 || !values.len().is_multiple_of(k) {
                    return Err(Error::Input(format!(
                        "{} target values do not split into targets of shape {}",
                        values.len(),
                        fmt_shape(shape)
                    )));
                }
                values.len() / k
            }
        };
        if got != n {
            return Err(Error::Input(format!("{n} samples but {got} labels")));
        }
        Ok(InMemoryDataset {
            x,
            sample_shape: sample_shape.to_vec(),
            labels,
            class_names: None,
        })
    }

    /// Names the classes: `names[i]` is class `i`. Every label must be in `0..names.len()`.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        let LabelData::Classes(c) = &self.labels else {
            return Err(Error::Input(
                "class names given for a data set with float targets".into(),
            ));
        };
        if let Some(bad) = c.iter().find(|&&l| l < 0 || l as usize >= names.len()) {
            return Err(Error::Input(format!(
                "label {bad} is outside the {} named classes",
                names.len()
            )));
        }
        self.class_names = Some(names);
        Ok(self)
    }

    /// The samples at `indices`, as a new data set (for splits). Class names are kept.
    ///
    /// An index `>= len()` is a caller bug and panics, as slice indexing does.
    pub fn subset(&self, indices: &[usize]) -> InMemoryDataset {
        let (mut x, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
        self.gather(indices, &mut x, &mut c, &mut t);
        let labels = match &self.labels {
            LabelData::Classes(_) => LabelData::Classes(c),
            LabelData::Targets { shape, .. } => LabelData::Targets {
                values: t,
                shape: shape.clone(),
            },
        };
        InMemoryDataset {
            x,
            sample_shape: self.sample_shape.clone(),
            labels,
            class_names: self.class_names.clone(),
        }
    }

    /// All samples, one after another.
    pub fn x(&self) -> &[f32] {
        &self.x
    }
    /// All labels.
    pub fn labels(&self) -> &LabelData {
        &self.labels
    }
    /// Names of the classes, when the source named them (string labels, bundled sets, folders).
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }
    /// Number of classes: the named classes, else one more than the largest label; `None` for
    /// float targets.
    pub fn num_classes(&self) -> Option<usize> {
        match (&self.labels, &self.class_names) {
            (LabelData::Classes(_), Some(names)) => Some(names.len()),
            (LabelData::Classes(c), None) => {
                Some(c.iter().map(|&l| l.max(-1) + 1).max().unwrap_or(0) as usize)
            }
            (LabelData::Targets { .. }, _) => None,
        }
    }
    /// Number of values in one sample.
    pub fn sample_size(&self) -> usize {
        self.sample_shape.iter().product()
    }
    /// Same labels and shape, new sample values (the same count); used by standardisation.
    pub fn with_x(&self, x: Vec<f32>) -> Result<InMemoryDataset> {
        if x.len() != self.x.len() {
            return Err(Error::Input(format!(
                "{} values given to replace {}",
                x.len(),
                self.x.len()
            )));
        }
        Ok(InMemoryDataset { x, ..self.clone() })
    }
    /// Takes the data set apart: samples, sample shape, labels.
    pub fn into_parts(self) -> (Vec<f32>, Vec<usize>, LabelData) {
        (self.x, self.sample_shape, self.labels)
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.x.len() / self.sample_size()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }
    fn target_shape(&self) -> &[usize] {
        match &self.labels {
            LabelData::Classes(_) => &[],
            LabelData::Targets { shape, .. } => shape,
        }
    }
    fn has_classes(&self) -> bool {
        matches!(self.labels, LabelData::Classes(_))
    }
    fn gather(
        &self,
        indices: &[usize],
        x: &mut Vec<f32>,
        classes: &mut Vec<i32>,
        targets: &mut Vec<f32>,
    ) {
        let per = self.sample_size();
        x.reserve(indices.len() * per);
        for &i in indices {
            x.extend_from_slice(&self.x[i * per..(i + 1) * per]);
            match &self.labels {
                LabelData::Classes(c) => classes.push(c[i]),
                LabelData::Targets { values, shape } => {
                    let k: usize = shape.iter().product();
                    targets.extend_from_slice(&values[i * k..(i + 1) * k]);
                }
            }
        }
    }
}
