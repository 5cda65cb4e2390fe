//! `fit`: epochs of shuffled batches with validation, callbacks, early stopping and the
//! learning-rate schedule.

use crate::config::{LossFunction, ScheduleStep};
use crate::trainer::{BatchResult, ModelTrainer};
use lamina_core::{dtype::fmt_shape, Error, Result};
use lamina_data::{shuffled, DataLoader, Dataset, LoaderOptions};
use std::time::Instant;

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub train_mse: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_mse: Option<f64>,
    /// Learning rate used during the epoch's last update.
    pub lr: f64,
    pub seconds: f64,
}

/// Every epoch's log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLog>,
}

/// What a callback may do at the end of an epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FitControl {
    /// Stop after this epoch.
    pub stop: bool,
    /// Use this learning rate from now on.
    pub learning_rate: Option<f64>,
}

/// User hooks into `fit`.
pub trait Callback {
    /// After each batch (progress bars).
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _batches: usize,
        _result: &BatchResult,
    ) {
    }
    /// After each epoch, with its log; may stop training or set the learning rate.
    fn on_epoch_end(&mut self, _log: &EpochLog, _control: &mut FitControl) {}
    /// Asked after every batch: `true` ends training after the step that just finished (Ctrl-C).
    fn stop_requested(&mut self) -> bool {
        false
    }
    /// Before the first epoch, with the trainer and whether `fit` has a validation set; an error
    /// ends `fit` before anything is trained (a callback's configuration that cannot work).
    fn before_fit(&mut self, _trainer: &ModelTrainer, _validation: bool) -> Result<()> {
        Ok(())
    }
    /// After each epoch, once every callback's `on_epoch_end` has run and the learning rate they
    /// asked for is set: the trainer as the next epoch starts from it and the history so far
    /// (its last entry is this epoch). An error ends `fit` with that error ([`ModelCheckpoint`]
    /// saves here).
    ///
    /// [`ModelCheckpoint`]: crate::ModelCheckpoint
    fn after_epoch(&mut self, _trainer: &ModelTrainer, _history: &History) -> Result<()> {
        Ok(())
    }
}

/// Which number early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
    TrainLoss,
}

/// Stops when the monitored number has not improved by `min_delta` for `patience` epochs (Keras'
/// EarlyStopping).
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub patience: usize,
    pub min_delta: f64,
    best: Option<f64>,
    wait: usize,
    /// Epoch at which training stopped, if it did.
    pub stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    pub fn new(monitor: Monitor, patience: usize, min_delta: f64) -> Self {
        EarlyStopping {
            monitor,
            patience,
            min_delta,
            best: None,
            wait: 0,
            stopped_epoch: None,
        }
    }
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, log: &EpochLog, control: &mut FitControl) {
        let (value, higher_better) = match self.monitor {
            Monitor::ValLoss => (log.val_loss, false),
            Monitor::ValAccuracy => (log.val_accuracy, true),
            Monitor::TrainLoss => (Some(log.train_loss), false),
        };
        let Some(v) = value else { return };
        let improved = match self.best {
            None => true,
            Some(b) => {
                if higher_better {
                    v > b + self.min_delta
                } else {
                    v < b - self.min_delta
                }
            }
        };
        if improved {
            self.best = Some(v);
            self.wait = 0;
        } else {
            self.wait += 1;
            if self.wait >= self.patience {
                control.stop = true;
                self.stopped_epoch = Some(log.epoch);
            }
        }
    }
}

/// Options of [`ModelTrainer::fit`].
pub struct FitOptions {
    pub epochs: usize,
    /// Reshuffle every epoch (seeded by the trainer's seed and the epoch).
    pub shuffle: bool,
    /// Drop the last partial batch instead of running it as a smaller batch.
    pub drop_last: bool,
    pub callbacks: Vec<Box<dyn Callback>>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 10,
            shuffle: true,
            drop_last: false,
            callbacks: Vec::new(),
        }
    }
}

struct Totals {
    interrupted: bool,
    loss: f64,
    metric: f64,
    samples: usize,
    any_acc: bool,
    any_mse: bool,
}

impl Totals {
    fn new() -> Self {
        Totals {
            interrupted: false,
            loss: 0.0,
            metric: 0.0,
            samples: 0,
            any_acc: false,
            any_mse: false,
        }
    }
    fn add(&mut self, r: &BatchResult) {
        let n = r.samples as f64;
        self.loss += r.loss * n;
        if let Some(a) = r.accuracy {
            self.metric += a * n;
            self.any_acc = true;
        }
        if let Some(m) = r.mse {
            self.metric += m * n;
            self.any_mse = true;
        }
        self.samples += r.samples;
    }
    fn mean(&self, v: f64) -> f64 {
        v / self.samples.max(1) as f64
    }
}

impl ModelTrainer {
    fn check_dataset(&self, d: &dyn Dataset, what: &str) -> Result<()> {
        let want = &self.model().input_shape[1..];
        if d.sample_shape() != want {
            return Err(Error::Input(format!(
                "{what} samples have shape {}, the model takes {}",
                fmt_shape(d.sample_shape()),
                fmt_shape(want)
            )));
        }
        if d.is_empty() {
            return Err(Error::Input(format!("{what} set is empty")));
        }
        let sparse = self.config().loss == LossFunction::SparseCrossEntropy;
        if sparse && !d.has_classes() {
            return Err(Error::Input(format!(
                "{what} set has float targets, SparseCrossEntropy takes class indices"
            )));
        }
        Ok(())
    }

    fn run_batches(
        &mut self,
        d: &dyn Dataset,
        order: &[usize],
        train: bool,
        drop_last: bool,
        epoch: usize,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<Totals> {
        // A worker thread gathers the next batches while this thread runs the step; the loader
        // augments training draws only (validation gathers plain samples).
        let options = LoaderOptions {
            batch_size: self.config().batch_size,
            shuffle: false,
            drop_last,
            workers: 1,
            prefetch: 2,
            augment: train,
            ..Default::default()
        };
        let loader = DataLoader::new(d, options)?;
        loader.with_order(order, epoch, |batches| {
            let mut t = Totals::new();
            let n = batches.len();
            if !train {
                for b in batches {
                    t.add(&self.evaluate(&b.x, &b.x_shape, b.labels(), &b.label_shape)?);
                }
                return Ok(t);
            }
            // Training steps are submitted without waiting: the result of batch i is read (and
            // given to the callbacks) after batch i + 1 is on its way, so the host gathers and
            // copies the next batch while the device runs. A stop request therefore lands one
            // batch later than with synchronous steps.
            let mut done = 0;
            for b in batches {
                self.submit_batch(&b.x, &b.x_shape, b.labels(), &b.label_shape)?;
                while self.pending_results() > 1 {
                    let r = self.next_result().expect("pending")?;
                    t.add(&r);
                    for cb in callbacks.iter_mut() {
                        cb.on_batch_end(epoch, done, n, &r);
                    }
                    done += 1;
                    t.interrupted |= callbacks.iter_mut().any(|cb| cb.stop_requested());
                }
                if t.interrupted {
                    break;
                }
            }
            while let Some(r) = self.next_result() {
                let r = r?;
                t.add(&r);
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(epoch, done, n, &r);
                }
                done += 1;
                if !t.interrupted && callbacks.iter_mut().any(|cb| cb.stop_requested()) {
                    t.interrupted = true;
                }
            }
            Ok(t)
        })?
    }

    /// Trains for `opts.epochs` epochs over `train` in shuffled batches of `batch_size` (the last
    /// batch may be smaller), evaluating on `val` after each epoch. Steps run through
    /// [`submit_batch`](ModelTrainer::submit_batch), one in flight while the next batch is
    /// prepared; steps submitted before `fit` are waited for first and their results dropped.
    pub fn fit(
        &mut self,
        train: &dyn Dataset,
        val: Option<&dyn Dataset>,
        mut opts: FitOptions,
    ) -> Result<History> {
        self.check_dataset(train, "training")?;
        if let Some(v) = val {
            self.check_dataset(v, "validation")?;
        }
        for cb in opts.callbacks.iter_mut() {
            cb.before_fit(self, val.is_some())?;
        }
        // steps submitted before fit finish first (their results are the caller's to read
        // beforehand; fit reads only its own)
        self.wait_results()?;
        let mut history = History::default();
        for epoch in 1..=opts.epochs {
            let start = Instant::now();
            let order = if opts.shuffle {
                shuffled(train.len(), self.config().seed, epoch)
            } else {
                (0..train.len()).collect()
            };
            let lr = self.learning_rate();
            let tr = self.run_batches(
                train,
                &order,
                true,
                opts.drop_last,
                epoch,
                &mut opts.callbacks,
            )?;
            let vt = match val {
                Some(v) => Some(self.run_batches(
                    v,
                    &(0..v.len()).collect::<Vec<_>>(),
                    false,
                    false,
                    epoch,
                    &mut [],
                )?),
                None => None,
            };
            let log = EpochLog {
                epoch,
                train_loss: tr.mean(tr.loss),
                train_accuracy: tr.any_acc.then(|| tr.mean(tr.metric)),
                train_mse: tr.any_mse.then(|| tr.mean(tr.metric)),
                val_loss: vt.as_ref().map(|v| v.mean(v.loss)),
                val_accuracy: vt
                    .as_ref()
                    .and_then(|v| v.any_acc.then(|| v.mean(v.metric))),
                val_mse: vt
                    .as_ref()
                    .and_then(|v| v.any_mse.then(|| v.mean(v.metric))),
                lr,
                seconds: start.elapsed().as_secs_f64(),
            };
            if self.config().schedule_step == ScheduleStep::Epoch {
                self.step_schedule(Some(log.val_loss.unwrap_or(log.train_loss)));
            }
            let mut control = FitControl::default();
            for cb in opts.callbacks.iter_mut() {
                cb.on_epoch_end(&log, &mut control);
            }
            history.epochs.push(log);
            if let Some(lr) = control.learning_rate {
                self.set_learning_rate(lr)?;
            }
            for cb in opts.callbacks.iter_mut() {
                cb.after_epoch(self, &history)?;
            }
            if control.stop || tr.interrupted {
                break;
            }
        }
        Ok(history)
    }
}
