//! lamina-train: the trainer. The whole training step — forward, loss, backward, optimizer update,
//! metric counters — is one compiled graph with all state resident in the backend.
//!
//! ```
//! use lamina_nn::ModelBuilder;
//! use lamina_train::*;
//! let model = ModelBuilder::new(&[4, 3]).dense(8, true, "h").relu("r").dense(2, true, "out").compile().unwrap();
//! let mut t = ModelTrainer::new(&model, TrainerConfig { batch_size: 4, device: Device::Cpu, ..Default::default() }).unwrap();
//! let x = [0.5f32; 12];
//! let r = t.train_batch(&x, &[4, 3], &[0, 1, 1, 0], &[4]).unwrap();
//! assert!(r.loss > 0.0 && r.accuracy.is_some());
//! // the seed tutorial's mistake: 32 labels for a batch of 4 is an error, and nothing changes
//! let err = t.train_batch(&x, &[4, 3], &[0i32; 32], &[32]).unwrap_err().to_string();
//! assert!(err.contains("needs 4 labels"), "{err}");
//! ```

pub mod checkpoint;
mod config;
mod config_json;
mod engine;
mod fit;
pub mod lbfgs;
mod loss;
pub mod metrics;
mod model_checkpoint;
mod optim;
pub mod schedule;
mod trainer;

pub use checkpoint::{batches_tracked_keys, is_lamina_only, CheckpointFile, Inferencer};
pub use config::{Device, LossFunction, OptimizerType, ProblemType, ScheduleStep, TrainerConfig};
pub use config_json::{device_from_str, optimizer_from_str};
pub use fit::{Callback, EarlyStopping, EpochLog, FitControl, FitOptions, History, Monitor};
pub use lamina_data::{shuffled, Dataset, InMemoryDataset, LabelData, Labels};
pub use model_checkpoint::{
    best_checkpoint_in, best_file_name, epoch_file_name, history_metric, latest_checkpoint_in,
    CheckpointPolicy, Goal, ModelCheckpoint, HISTORY_METRICS,
};
pub use schedule::{LrSchedule, Scheduler};
pub use trainer::{BatchResult, ModelTrainer, Prediction};
