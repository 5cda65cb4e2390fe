//! [`ModelCheckpoint`]: the checkpoint callback of `fit` — every N epochs, the last K, the best
//! by a history metric — saving through the atomic checkpoint path.

use crate::checkpoint::write_atomic;
use crate::fit::{Callback, EpochLog, History};
use crate::trainer::ModelTrainer;
use crate::ProblemType;
use lamina_core::{Error, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// The [`EpochLog`] numbers a checkpoint policy (or anything else) can watch by name.
pub const HISTORY_METRICS: [&str; 6] = [
    "train_loss",
    "train_accuracy",
    "train_mse",
    "val_loss",
    "val_accuracy",
    "val_mse",
];

/// A history metric of an epoch's log by name (one of [`HISTORY_METRICS`]); `None` when the
/// epoch did not measure it (no validation set, or accuracy of a regression).
pub fn history_metric(log: &EpochLog, name: &str) -> Option<f64> {
    match name {
        "train_loss" => Some(log.train_loss),
        "train_accuracy" => log.train_accuracy,
        "train_mse" => log.train_mse,
        "val_loss" => log.val_loss,
        "val_accuracy" => log.val_accuracy,
        "val_mse" => log.val_mse,
        _ => None,
    }
}

/// Whether smaller or larger values of a metric are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Min,
    Max,
}

impl Goal {
    /// The usual goal of a history metric: `Max` for accuracies, `Min` for losses and errors.
    pub fn of(metric: &str) -> Goal {
        if metric.ends_with("accuracy") {
            Goal::Max
        } else {
            Goal::Min
        }
    }

    /// `"min"` or `"max"`.
    pub fn parse(s: &str) -> Result<Goal> {
        match s {
            "min" => Ok(Goal::Min),
            "max" => Ok(Goal::Max),
            other => Err(Error::Spec(format!(
                "checkpoint goal must be \"min\" or \"max\", got \"{other}\""
            ))),
        }
    }
}

/// What [`ModelCheckpoint`] saves and keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPolicy {
    /// Folder of the files (created on the first save).
    pub dir: PathBuf,
    /// Save `epoch-NNNN.safetensors` after every `every`-th epoch (`None`: no periodic files).
    pub every: Option<usize>,
    /// Keep only the newest `keep_last` periodic files (`None`: keep them all).
    pub keep_last: Option<usize>,
    /// Keep `best-epoch-NNNN.safetensors`: the epoch with the best value of this history metric
    /// (one of [`HISTORY_METRICS`]), smallest or largest as the [`Goal`] says.
    pub keep_best: Option<(String, Goal)>,
}

impl CheckpointPolicy {
    /// A checkpoint after every epoch in `dir`, all kept, no best file.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CheckpointPolicy {
            dir: dir.into(),
            every: Some(1),
            keep_last: None,
            keep_best: None,
        }
    }

    /// Checks the policy on its own: `every` and `keep_last` ≥ 1, `keep_last` only with
    /// `every`, a known metric, and something to save.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Spec(format!("checkpoint policy: {m}")));
        if self.every == Some(0) {
            return bad("every must be ≥ 1 epoch, got 0".into());
        }
        match (self.keep_last, self.every) {
            (Some(0), _) => {
                return bad(
                    "keep_last must be ≥ 1, got 0 (leave it out to keep every checkpoint)".into(),
                )
            }
            (Some(k), None) => {
                return bad(format!(
                    "keep_last {k} needs every (periodic checkpoints to keep)"
                ))
            }
            _ => {}
        }
        if let Some((m, _)) = &self.keep_best {
            if !HISTORY_METRICS.contains(&m.as_str()) {
                return bad(format!(
                    "keep_best metric \"{m}\" is not a history metric (one of {})",
                    HISTORY_METRICS.join(", ")
                ));
            }
        }
        if self.every.is_none() && self.keep_best.is_none() {
            return bad("it saves nothing: set every, keep_best or both".into());
        }
        Ok(())
    }
}

/// File name of the periodic checkpoint of `epoch`.
pub fn epoch_file_name(epoch: usize) -> String {
    format!("epoch-{epoch:04}.safetensors")
}

/// File name of the best checkpoint when it is `epoch`'s.
pub fn best_file_name(epoch: usize) -> String {
    format!("best-epoch-{epoch:04}.safetensors")
}

/// The `best-epoch-NNNN.safetensors` file of `dir` with the largest epoch, if any (what a
/// [`ModelCheckpoint`] left there).
pub fn best_checkpoint_in(dir: &Path) -> Option<PathBuf> {
    newest(dir, "best-epoch-")
}

/// The `epoch-NNNN.safetensors` file of `dir` with the largest epoch, if any.
pub fn latest_checkpoint_in(dir: &Path) -> Option<PathBuf> {
    newest(dir, "epoch-")
}

fn newest(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().to_string();
            let epoch: usize = name
                .strip_prefix(prefix)?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((epoch, dir.join(name)))
        })
        .max()
        .map(|(_, p)| p)
}

/// The checkpoint callback of [`ModelTrainer::fit`]: after every `every`-th epoch it saves
/// `epoch-NNNN.safetensors` and keeps the newest `keep_last` of them; with `keep_best` it keeps
/// `best-epoch-NNNN.safetensors`, the epoch with the best value of a history metric (ties keep
/// the earlier epoch; NaN never improves). Every file is a whole checkpoint written atomically
/// (temporary file, fsync, rename) holding the trainer as the next epoch starts from it; an older
/// file is deleted only after its replacement is on disk. Only files this callback wrote are
/// deleted. A metric the run does not measure (`val_loss` without a validation set, an accuracy
/// of a regression) is an error before the first epoch; a failed save ends `fit` with the error.
///
/// ```
/// use lamina_nn::ModelBuilder;
/// use lamina_train::*;
/// let model = ModelBuilder::new(&[4, 2]).dense(2, true, "out").compile().unwrap();
/// let config = TrainerConfig { batch_size: 4, device: Device::Cpu, ..Default::default() };
/// let mut t = ModelTrainer::new(&model, config).unwrap();
/// let x: Vec<f32> = (0..16).map(|i| (i % 5) as f32 / 5.0).collect();
/// let data = InMemoryDataset::new(x, &[2], LabelData::Classes(vec![0, 1, 1, 0, 1, 0, 0, 1])).unwrap();
/// let dir = std::env::temp_dir().join(format!("lamina-doc-ckpt-{}", std::process::id()));
/// let saver = ModelCheckpoint::new(CheckpointPolicy {
///     every: Some(2),                                  // epochs 2, 4, 6
///     keep_last: Some(2),                              // epoch-0004, epoch-0006 stay
///     keep_best: Some(("val_loss".into(), Goal::Min)), // plus best-epoch-NNNN
///     ..CheckpointPolicy::new(&dir)
/// }).unwrap();
/// let opts = FitOptions { epochs: 6, callbacks: vec![Box::new(saver)], ..Default::default() };
/// t.fit(&data, Some(&data), opts).unwrap();
/// assert!(!dir.join("epoch-0002.safetensors").exists());
/// assert!(dir.join("epoch-0004.safetensors").exists() && dir.join("epoch-0006.safetensors").exists());
/// let best = best_checkpoint_in(&dir).unwrap();
/// let resumed = ModelTrainer::load_checkpoint(&best, &lamina_nn::LayerRegistry::new(), Device::Cpu).unwrap();
/// assert!(resumed.steps() >= 2); // two updates (batches of 4) per epoch
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct ModelCheckpoint {
    policy: CheckpointPolicy,
    /// Periodic files written, oldest first.
    kept: VecDeque<PathBuf>,
    /// (epoch, value, file) of the best epoch so far.
    best: Option<(usize, f64, PathBuf)>,
}

impl ModelCheckpoint {
    /// A callback following `policy` (checked with [`CheckpointPolicy::validate`]).
    pub fn new(policy: CheckpointPolicy) -> Result<ModelCheckpoint> {
        policy.validate()?;
        Ok(ModelCheckpoint {
            policy,
            kept: VecDeque::new(),
            best: None,
        })
    }

    /// The policy followed.
    pub fn policy(&self) -> &CheckpointPolicy {
        &self.policy
    }

    fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io(format!("{}: {e}", path.display())))
            }
            _ => Ok(()),
        }
    }
}

impl Callback for ModelCheckpoint {
    fn before_fit(&mut self, trainer: &ModelTrainer, validation: bool) -> Result<()> {
        let Some((m, _)) = &self.policy.keep_best else {
            return Ok(());
        };
        if m.starts_with("val_") && !validation {
            return Err(Error::Input(format!(
                "checkpoint keep_best metric \"{m}\" needs a validation set, and fit has none"
            )));
        }
        let classification = trainer.config().problem == ProblemType::Classification;
        let measured = if m.ends_with("accuracy") {
            classification
        } else if m.ends_with("mse") {
            !classification
        } else {
            true
        };
        if !measured {
            return Err(Error::Input(format!(
                "checkpoint keep_best metric \"{m}\" is not measured in a {:?} problem",
                trainer.config().problem
            )));
        }
        Ok(())
    }

    fn after_epoch(&mut self, trainer: &ModelTrainer, history: &History) -> Result<()> {
        let Some(log) = history.epochs.last() else {
            return Ok(());
        };
        let epoch = log.epoch;
        // one serialisation per epoch, written to as many files as the policy asks
        let mut bytes: Option<Vec<u8>> = None;
        let mut save = |path: &Path| -> Result<()> {
            if bytes.is_none() {
                bytes = Some(trainer.checkpoint_bytes()?);
            }
            write_atomic(path, bytes.as_deref().unwrap_or_default())
        };
        if let Some(every) = self.policy.every {
            if epoch.is_multiple_of(every) {
                let path = self.policy.dir.join(epoch_file_name(epoch));
                save(&path)?;
                self.kept.retain(|p| p != &path);
                self.kept.push_back(path);
                let keep = self.policy.keep_last.unwrap_or(usize::MAX);
                while self.kept.len() > keep {
                    if let Some(old) = self.kept.pop_front() {
                        Self::remove(&old)?;
                    }
                }
            }
        }
        if let Some((metric, goal)) = &self.policy.keep_best {
            let value = history_metric(log, metric).ok_or_else(|| {
                Error::Input(format!(
                    "checkpoint keep_best metric \"{metric}\" is not in epoch {epoch}'s log"
                ))
            })?;
            let improved = match &self.best {
                None => !value.is_nan(),
                Some((_, b, _)) => match goal {
                    Goal::Min => value < *b,
                    Goal::Max => value > *b,
                },
            };
            if improved {
                let path = self.policy.dir.join(best_file_name(epoch));
                save(&path)?;
                if let Some((_, _, old)) = self.best.take() {
                    if old != path {
                        Self::remove(&old)?;
                    }
                }
                self.best = Some((epoch, value, path));
            }
        }
        Ok(())
    }
}
