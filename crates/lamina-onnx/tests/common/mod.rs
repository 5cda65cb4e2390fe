//! Shared by the test binary and the `onnx_fixtures` example, which each use part of it.
#[allow(dead_code)]
pub mod models;
