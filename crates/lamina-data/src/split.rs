//! Seeded train/test and train/validation/test splits.
//!
//! The samples are permuted by [`shuffled`]`(n, seed, 0)` (Fisher–Yates driven by SplitMix64);
//! the train part is the permutation's head and the test part its tail, each keeping the
//! permuted order. A part of fraction `f` holds `ceil(f · n)` samples, as scikit-learn's
//! `train_test_split` does, so `train_test_split(d, 0.2, 0)` is exactly the 80/20 split that
//! `order[..n * 4 / 5]` / `order[n * 4 / 5..]` gives.

use crate::{shuffled, Dataset, InMemoryDataset};
use lamina_core::{Error, Result};

fn part_size(n: usize, fraction: f64, what: &str) -> Result<usize> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::Spec(format!(
            "{what} fraction must be in (0, 1), got {fraction}"
        )));
    }
    Ok(((n as f64) * fraction).ceil() as usize)
}

/// Splits `data` into `(train, test)` with `ceil(test_fraction · n)` test samples.
/// Errors when the fraction is outside `(0, 1)` or a part would be empty.
pub fn train_test_split(
    data: &InMemoryDataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(InMemoryDataset, InMemoryDataset)> {
    let n = data.len();
    let n_test = part_size(n, test_fraction, "test")?;
    if n_test >= n {
        return Err(Error::Spec(format!(
            "a test fraction of {test_fraction} of {n} samples leaves no training samples"
        )));
    }
    let order = shuffled(n, seed, 0);
    let cut = n - n_test;
    Ok((data.subset(&order[..cut]), data.subset(&order[cut..])))
}

/// Splits `data` into `(train, validation, test)` with `ceil(val_fraction · n)` validation and
/// `ceil(test_fraction · n)` test samples, the rest for training.
pub fn train_val_test_split(
    data: &InMemoryDataset,
    val_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<(InMemoryDataset, InMemoryDataset, InMemoryDataset)> {
    let n = data.len();
    let n_val = part_size(n, val_fraction, "validation")?;
    let n_test = part_size(n, test_fraction, "test")?;
    if n_val + n_test >= n {
        return Err(Error::Spec(format!(
            "validation fraction {val_fraction} and test fraction {test_fraction} of {n} samples leave no training samples"
        )));
    }
    let order = shuffled(n, seed, 0);
    let (a, b) = (n - n_val - n_test, n - n_test);
    Ok((
        data.subset(&order[..a]),
        data.subset(&order[a..b]),
        data.subset(&order[b..]),
    ))
}
