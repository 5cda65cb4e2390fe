//! lamina: a deep-learning training library that compiles the whole training step — forward,
//! loss, backward, optimizer update — into one graph and runs it on a backend.
//!
//! This facade re-exports the engine: the IR ([`core`]), model specifications ([`nn`]), the
//! reference interpreter ([`reference`]), the CPU backend ([`cpu`]) and the trainer ([`train`]). `use lamina::prelude::*` brings the everyday names.
//!
//! ```
//! use lamina::prelude::*;
//! // y = Σ relu(x·w), its gradient, and an SGD update of w — one graph, run on the CPU.
//! let b = GraphBuilder::new();
//! let x = b.input("x", &[2, 3], DType::F32);
//! let w = b.state("w", &[3, 2], DType::F32);
//! let loss = x.matmul(w).relu().sum(&[], false);
//! let g = grad(loss, &[w])?;
//! let update = Tensor::apply(Op::Assign { name: "w".into() }, &[w - g[0] * 0.1]);
//! let plan = Plan::compile(&b.finish(&[loss, update])?)?;
//!
//! let cpu = CpuBackend::new();
//! let mut exe = cpu.compile(&plan)?;
//! let mut state = StateMap::new();
//! state.insert("w".to_string(), cpu.upload(&HostTensor::f32(&[3, 2], vec![0.5; 6])?)?);
//! let xs = HostTensor::f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let out = cpu.run(&mut exe, &mut state, &[&xs])?;
//! assert_eq!(out[0].to_f64()[0], 21.0); // rows sum to 6 and 15, times 0.5, in 2 columns
//! # Ok::<(), lamina::Error>(())
//! ```

pub use lamina_core as core;
pub use lamina_core::{Error, Result};
pub use lamina_cpu as cpu;
pub use lamina_data as data;
pub use lamina_nn as nn;
pub use lamina_ref as reference;
pub use lamina_train as train;

/// The everyday names.
pub mod prelude {
    pub use lamina_core::{
        grad, vjp, Backend, ConvParams, DType, Error, Graph, GraphBuilder, HostTensor, Op, Plan,
        Result, StateMap, Tensor,
    };
    pub use lamina_cpu::CpuBackend;
    pub use lamina_nn::{
        Init, Layer, LayerRegistry, LayerSpec, Mode, ModelBuilder, ModelSpec, Scope,
    };
    pub use lamina_ref::RefBackend;
    pub use lamina_train::{
        BatchResult, Callback, CheckpointPolicy, Dataset, Device, EarlyStopping, FitOptions, Goal,
        History, InMemoryDataset, LabelData, Labels, LossFunction, LrSchedule, ModelCheckpoint,
        ModelTrainer, Monitor, OptimizerType, Prediction, ProblemType, ScheduleStep, TrainerConfig,
    };
}
