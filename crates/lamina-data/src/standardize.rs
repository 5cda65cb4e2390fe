//! Per-feature standardisation, fitted on the training split and applied to every split, so test
//! data is scaled with the training statistics (scikit-learn's `StandardScaler`).

use crate::{Dataset, InMemoryDataset};
use lamina_core::{Error, Result};

/// Per-feature mean and standard deviation (population, `ddof = 0`). Every value of a sample is a
/// feature: for images that is one statistic per pixel and channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Mean of each feature.
    pub mean: Vec<f32>,
    /// Standard deviation of each feature; a constant feature gets 1 so it maps to 0, not NaN.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits the statistics of `data` (accumulated in f64).
    pub fn fit(data: &InMemoryDataset) -> Result<Standardizer> {
        let n = data.len();
        if n == 0 {
            return Err(Error::Input(
                "cannot fit a standardizer on an empty data set".into(),
            ));
        }
        let d = data.sample_size();
        let mut mean = vec![0f64; d];
        for row in data.x().chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        // Two passes: the sum of squared deviations does not cancel catastrophically.
        let mut var = vec![0f64; d];
        for row in data.x().chunks_exact(d) {
            for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|&s| {
                let sd = (s / n as f64).sqrt() as f32;
                if sd > 0.0 && sd.is_finite() {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Ok(Standardizer {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        })
    }

    /// Number of features the statistics are for.
    pub fn features(&self) -> usize {
        self.mean.len()
    }

    /// `data` with every feature mapped to `(v - mean) / std`.
    pub fn apply(&self, data: &InMemoryDataset) -> Result<InMemoryDataset> {
        if data.sample_size() != self.features() {
            return Err(Error::Input(format!(
                "samples have {} features, the standardizer was fitted on {}",
                data.sample_size(),
                self.features()
            )));
        }
        let mut x = data.x().to_vec();
        self.apply_in_place(&mut x)?;
        data.with_x(x)
    }

    /// Standardises samples laid out one after another (a batch, rows to predict on).
    pub fn apply_in_place(&self, x: &mut [f32]) -> Result<()> {
        let d = self.features();
        if d == 0 || !x.len().is_multiple_of(d) {
            return Err(Error::Input(format!(
                "{} values do not split into samples of the {d} features the standardizer was fitted on",
                x.len()
            )));
        }
        for row in x.chunks_exact_mut(d) {
            for ((v, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }
}
