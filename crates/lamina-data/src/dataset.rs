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
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes(v) => v.len(),
            Labels::Targets(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Owned labels of a data set.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelData {
    Classes(Vec<i32>),
    /// Targets with the per-sample shape (`[]` for one value per sample).
    Targets { values: Vec<f32>, shape: Vec<usize> },
}

/// A data set `fit` can iterate: samples addressed by index, copied into batches.
pub trait Dataset {
    /// Number of samples.
    fn len(&self) -> usize;
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
    fn gather(&self, indices: &[usize], x: &mut Vec<f32>, classes: &mut Vec<i32>, targets: &mut Vec<f32>);
}

/// A data set held in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct InMemoryDataset {
    x: Vec<f32>,
    sample_shape: Vec<usize>,
    labels: LabelData,
}

impl InMemoryDataset {
    /// Checks that `x` holds a whole number of samples and that there is one label per sample.
    pub fn new(x: Vec<f32>, sample_shape: &[usize], labels: LabelData) -> Result<Self> {
        let per: usize = sample_shape.iter().product();
        if per == 0 || !x.len().is_multiple_of(per) {
            return Err(Error::Input(format!("{} values do not split into samples of shape {}", x.len(), fmt_shape(sample_shape))));
        }
        let n = x.len() / per;
        let got = match &labels {
            LabelData::Classes(c) => c.len(),
            LabelData::Targets { values, shape } => values.len() / shape.iter().product::<usize>().max(1),
        };
        if got != n {
            return Err(Error::Input(format!("{n} samples but {got} labels")));
        }
        Ok(InMemoryDataset { x, sample_shape: sample_shape.to_vec(), labels })
    }

    /// The samples at `indices`, as a new data set (for splits).
    pub fn subset(&self, indices: &[usize]) -> InMemoryDataset {
        let (mut x, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
        self.gather(indices, &mut x, &mut c, &mut t);
        let labels = match &self.labels {
            LabelData::Classes(_) => LabelData::Classes(c),
            LabelData::Targets { shape, .. } => LabelData::Targets { values: t, shape: shape.clone() },
        };
        InMemoryDataset { x, sample_shape: self.sample_shape.clone(), labels }
    }

    pub fn x(&self) -> &[f32] {
        &self.x
    }
    pub fn labels(&self) -> &LabelData {
        &self.labels
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.x.len() / self.sample_shape.iter().product::<usize>()
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
    fn gather(&self, indices: &[usize], x: &mut Vec<f32>, classes: &mut Vec<i32>, targets: &mut Vec<f32>) {
        let per: usize = self.sample_shape.iter().product();
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
