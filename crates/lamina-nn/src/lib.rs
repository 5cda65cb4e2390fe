//! lamina-nn: model specifications. A model is a list of layers (`ModelBuilder`), compiled into a
//! `ModelSpec` with every shape and parameter inferred; layers — built-in or user-written through
//! the [`Layer`] trait — are compositions of `lamina_core::Tensor` operations.
//!
//! This crate never calls a backend: it only appends graph nodes.

mod builder;
mod config;
pub mod init;
pub mod layer;
pub mod layers;
mod registry;
pub mod spec;
pub mod zoo;

pub use builder::ModelBuilder;
pub use init::Init;
pub use layer::{Layer, Mode, ParamDecl, Scope};
pub use registry::LayerRegistry;
pub use spec::{LayerSpec, ModelSpec};
