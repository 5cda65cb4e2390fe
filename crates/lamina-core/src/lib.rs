//! lamina-core: the intermediate representation of lamina.
//!
//! Pipeline: a [`GraphBuilder`] records primitives ([`op::Op`]) as symbolic [`Tensor`]s are
//! combined; [`grad`] appends the backward pass as more primitives; [`passes`] fold, simplify,
//! deduplicate, prune and group for fusion; a [`Plan`] orders kernels and assigns arena memory;
//! a [`Backend`] compiles and runs the plan.
//!
//! This crate does no I/O and names no backend.
//!
//! ```
//! use lamina_core::*;
//! let b = GraphBuilder::new();
//! let x = b.input("x", &[4, 3], DType::F32);
//! let w = b.state("w", &[3, 2], DType::F32);
//! let loss = x.matmul(w).relu().mean(&[], false);
//! let g = grad(loss, &[w]).unwrap();
//! let upd = Tensor::apply(op::Op::Assign { name: "w".into() }, &[w - g[0] * 0.1]);
//! let graph = b.finish(&[loss, upd]).unwrap();
//! let plan = Plan::compile(&graph).unwrap();
//! assert!(plan.arena_bytes > 0);
//! ```

pub mod autodiff;
pub mod backend;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod op;
pub mod ops;
pub mod passes;
pub mod plan;
pub mod print;
pub mod rng;
pub mod tensor;

pub use autodiff::{grad, vjp};
pub use backend::{check_state, Backend, Feed, PendingOutputs, StateMap};
pub use dtype::{numel, strides, DType, HostData, HostTensor};
pub use error::{Error, Result};
pub use graph::{Graph, GraphBuilder, Node, NodeId, TensorType};
pub use op::{ConvKind, ConvParams, Literal, Op, OpKind};
pub use plan::{Plan, Step, Storage};
pub use tensor::{broadcast_shapes, IntoOperand, Tensor};
