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

/// A fed input of [`Backend::submit`].
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    /// A host tensor, copied in by the run.
    Host(&'a HostTensor),
    /// Already written into the executable's staging memory through [`Backend::staging`] (its
    /// type is the plan's, by construction).
    Staged,
}

/// The outputs of a run that [`Backend::submit`] may have left running on a device.
pub struct PendingOutputs(Pending);

enum Pending {
    Ready(Vec<HostTensor>),
    Later(Box<dyn FnOnce() -> Result<Vec<HostTensor>> + Send>),
}

impl PendingOutputs {
    /// Outputs that are already on the host.
    pub fn ready(outputs: Vec<HostTensor>) -> PendingOutputs {
        PendingOutputs(Pending::Ready(outputs))
    }
    /// Outputs that `wait` reads when they are asked for (after the device has produced them).
    pub fn later(
        wait: impl FnOnce() -> Result<Vec<HostTensor>> + Send + 'static,
    ) -> PendingOutputs {
        PendingOutputs(Pending::Later(Box::new(wait)))
    }
    /// Waits for the run and returns its outputs; an error of the device during the run (not of
    /// its inputs, which `submit` checked) is reported here.
    pub fn wait(self) -> Result<Vec<HostTensor>> {
        match self.0 {
            Pending::Ready(v) => Ok(v),
            Pending::Later(f) => f(),
        }
    }
}

impl std::fmt::Debug for PendingOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Pending::Ready(_) => "PendingOutputs(ready)",
            Pending::Later(_) => "PendingOutputs(in flight)",
        })
    }
}

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

    /// Host memory that fed input `k` of `exe`'s next [`submit`](Backend::submit) is copied from,
    /// when the backend stages inputs (page-locked memory for asynchronous copies): a caller that
    /// writes the input's bytes there (little-endian, exactly the slice's length) and then passes
    /// [`Feed::Staged`] makes the only host copy of the batch. Waits until the device has read the
    /// previous contents. The memory belongs to the very next `submit` or `run` of `exe` (a `run`
    /// in between uses it for its own inputs). `None` (the default): pass [`Feed::Host`].
    fn staging<'e>(
        &self,
        _exe: &'e mut Self::Executable,
        _k: usize,
    ) -> Result<Option<&'e mut [u8]>> {
        Ok(None)
    }

    /// Like [`run`](Backend::run), but may return before the device has finished: the outputs
    /// come from [`PendingOutputs::wait`]. Later runs, writes and downloads are ordered after it.
    /// Input errors are reported here, before anything runs (and `state` is unchanged). The
    /// default runs synchronously.
    fn submit(
        &self,
        exe: &mut Self::Executable,
        state: &mut StateMap<Self::Buffer>,
        inputs: &[Feed<'_>],
    ) -> Result<PendingOutputs> {
        let hs = inputs
            .iter()
            .enumerate()
            .map(|(k, f)| match f {
                Feed::Host(t) => Ok(*t),
                Feed::Staged => Err(Error::Input(format!(
                    "input {k} is marked staged, but the {} backend has no staging memory",
                    self.name()
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        self.run(exe, state, &hs).map(PendingOutputs::ready)
    }

    /// Returns once `exe` runs the code it keeps: a backend that starts an executable on quickly
    /// compiled code and swaps in optimised code compiled in the background (CUDA's quick start)
    /// waits for that and swaps it in here. The default has nothing to wait for.
    fn finish_compiling(&self, _exe: &mut Self::Executable) -> Result<()> {
        Ok(())
    }

    /// Bytes of device memory `exe` holds (arena, constants, scratch, input buffers); 0 for a
    /// backend that computes in host memory.
    fn executable_bytes(&self, _exe: &Self::Executable) -> usize {
        0
    }
    /// Bytes of device memory `b` holds (0 for host memory).
    fn buffer_bytes(&self, _b: &Self::Buffer) -> usize {
        0
    }
    /// Bytes of device memory the backend holds itself (library workspaces).
    fn backend_bytes(&self) -> usize {
        0
    }
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
