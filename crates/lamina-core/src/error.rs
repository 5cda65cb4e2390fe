//! The one error type of lamina-core. Every message names the operation (or argument), what was
//! expected and what came, so a user can fix the call without reading the library.

/// Errors of graph construction, transformation, planning and execution.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An operation got operands whose shapes it cannot take.
    #[error("{op}: {msg}")]
    Shape { op: String, msg: String },
    /// An operation got operands of a dtype it cannot take.
    #[error("{op}: {msg}")]
    DType { op: String, msg: String },
    /// A gradient was requested through an operation that has none.
    #[error("{op} has no gradient: {why}")]
    NoGradient { op: String, why: String },
    /// A graph breaks an invariant (found by the verifier).
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
    /// Data fed to an executable does not match what it was compiled for.
    #[error("bad input: {0}")]
    Input(String),
    /// A model, layer or configuration is invalid (names the layer or argument).
    #[error("{0}")]
    Spec(String),
    /// Reading or writing a file failed (the path is in the message).
    #[error("{0}")]
    Io(String),
    /// A backend cannot run something (an unsupported dtype, a device failure).
    #[error("{backend}: {msg}")]
    Backend { backend: String, msg: String },
}

/// `Result` with lamina's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape_err<T>(op: &str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op: op.to_string(),
        msg: msg.into(),
    })
}

pub(crate) fn dtype_err<T>(op: &str, msg: impl Into<String>) -> Result<T> {
    Err(Error::DType {
        op: op.to_string(),
        msg: msg.into(),
    })
}
