//! The CUDA backend against the reference interpreter and the CPU backend. Every test needs a
//! GPU: without one it prints "skipped: no CUDA device" and passes (CI has no GPU; the device
//! machine runs the same binary).

mod cuda {
    pub mod common;
    mod dense;
    mod larger;
    mod merged;
    mod ops;
    mod train;
}
