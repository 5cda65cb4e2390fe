//! The `Backend` trait: what the CPU backend implements now and CUDA (and later wgpu) will.
//!
//! A backend compiles a [`Plan`](crate::Plan) into an executable and runs it against a map of
//! persistent buffers that it owns in its own memory (host memory, device memory). Only the fed
//! inputs go in and the graph's outputs come out of each run; parameters, optimizer moments and
//! counters stay in the backend's buffers between runs, updated in place by `Assign`.

use crate::dtype::HostTensor;
use crate::error::{Error, Result};
use crate::plan::Plan;
use std::collections::BTreeMap;

/// Persistent buffers by name.
pub type StateMap<B> = BTreeMap<String, B>;

/// An execution engine for plans.
pub trait Backend {
    /// Memory owned by the backend (a device allocation).
    type Buffer;
    /// A compiled plan.
    type Executable;

    /// Short name for messages: `ref`, `cpu`, `cuda`.
    fn name(&self) -> &'static str;
    /// Copies host data into a new buffer.
    fn upload(&self, t: &HostTensor) -> Result<Self::Buffer>;
    /// Overwrites `buf` with `t`. The default uploads a fresh buffer; backends whose compiled
    /// executables hold buffer addresses (a captured CUDA graph) write in place when the type
    /// matches, so the executables stay valid.
    fn write(&self, buf: &mut Self::Buffer, t: &HostTensor) -> Result<()> {
        *buf = self.upload(t)?;
        Ok(())
    }
    /// Copies a buffer back to the host.
    fn download(&self, b: &Self::Buffer) -> Result<HostTensor>;
    /// Compiles a plan (kernel selection, arena allocation, constants).
    fn compile(&self, plan: &Plan) -> Result<Self::Executable>;
    /// Runs one step: reads `inputs` (in the plan's feed order) and `state`, applies the plan's
    /// Assigns to `state`, returns the graph's outputs. On an error in the inputs nothing in
    /// `state` changes.
    fn run(
        &self,
        exe: &mut Self::Executable,
        state: &mut StateMap<Self::Buffer>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>>;
}

/// Checks that `state` holds every buffer the plan uses, with the right type.
pub fn check_state<B>(
    plan: &Plan,
    state: &StateMap<B>,
    type_of: impl Fn(&B) -> crate::graph::TensorType,
) -> Result<()> {
    for (name, ty) in &plan.states {
        match state.get(name) {
            None => {
                return Err(Error::Input(format!(
                    "state \"{name}\" ({}) is missing",
                    ty.describe()
                )))
            }
            Some(b) => {
                let have = type_of(b);
                if &have != ty {
                    return Err(Error::Input(format!(
                        "state \"{name}\": expected {}, got {}",
                        ty.describe(),
                        have.describe()
                    )));
                }
            }
        }
    }
    Ok(())
}
