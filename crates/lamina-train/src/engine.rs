//! The trainer's view of a backend: compiled executables cached per (kind, batch size) and the
//! persistent buffers, behind one object-safe trait so `ModelTrainer` is not generic.

use crate::Device;
use lamina_core::{
    Backend, Error, Feed, Graph, HostTensor, PendingOutputs, Plan, Result, StateMap,
};
use std::collections::HashMap;

/// Which compiled graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StepKind {
    /// Forward, loss, backward, optimizer update.
    Train,
    /// Forward, loss, backward, gradient added to the accumulators (no update).
    Accumulate,
    /// Forward (evaluation mode) and loss.
    Eval,
    /// Forward only (evaluation mode).
    Predict,
    /// Loss and flat gradients (L-BFGS's closure).
    LossGrad,
}

pub(crate) trait Engine {
    /// Runs the executable for `(kind, batch)`, compiling `build()` the first time.
    fn run(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>>;
    /// Writes fed input `k` of the next run of `(kind, batch)` through `fill`, straight into the
    /// backend's staging memory (compiling first if needed); `false` when the backend has none
    /// (then the caller feeds a tensor).
    fn stage(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        k: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<bool>;
    /// Like `run`, but the outputs may still be in flight (see `Backend::submit`).
    fn submit(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        inputs: &[Feed<'_>],
    ) -> Result<PendingOutputs>;
    /// Device bytes held: persistent buffers, every compiled executable, the backend's own.
    fn device_bytes(&self) -> usize;
    fn read(&self, name: &str) -> Result<HostTensor>;
    fn write(&mut self, name: &str, value: &HostTensor) -> Result<()>;
    fn names(&self) -> Vec<String>;
    /// Kernels per step of a compiled executable (for reports).
    fn kernel_count(&self, kind: StepKind, batch: usize) -> Option<usize>;
    /// Waits until every compiled executable runs the code it keeps (`Backend::finish_compiling`).
    fn finish_compiling(&mut self) -> Result<()>;
}

pub(crate) struct BackendEngine<B: Backend> {
    backend: B,
    state: StateMap<B::Buffer>,
    exes: HashMap<(StepKind, usize), (B::Executable, usize)>,
}

impl<B: Backend> BackendEngine<B> {
    pub fn new(backend: B, init: StateMap<HostTensor>) -> Result<Self> {
        let mut state = StateMap::new();
        for (k, v) in init {
            state.insert(k, backend.upload(&v)?);
        }
        Ok(BackendEngine {
            backend,
            state,
            exes: HashMap::new(),
        })
    }
}

impl<B: Backend> BackendEngine<B> {
    /// Compiles the executable of `(kind, batch)` from `build()` unless it exists.
    fn exe(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
    ) -> Result<()> {
        if !self.exes.contains_key(&(kind, batch)) {
            let plan = Plan::compile(&build()?)?;
            let exe = self.backend.compile(&plan)?;
            self.exes.insert((kind, batch), (exe, plan.kernel_count()));
        }
        Ok(())
    }
}

impl<B: Backend> Engine for BackendEngine<B> {
    fn run(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        self.exe(kind, batch, build)?;
        let (exe, _) = self.exes.get_mut(&(kind, batch)).expect("compiled above");
        self.backend.run(exe, &mut self.state, inputs)
    }
    fn stage(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        k: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<bool> {
        self.exe(kind, batch, build)?;
        let (exe, _) = self.exes.get_mut(&(kind, batch)).expect("compiled above");
        match self.backend.staging(exe, k)? {
            Some(mem) => fill(mem).map(|()| true),
            None => Ok(false),
        }
    }
    fn submit(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        inputs: &[Feed<'_>],
    ) -> Result<PendingOutputs> {
        self.exe(kind, batch, build)?;
        let (exe, _) = self.exes.get_mut(&(kind, batch)).expect("compiled above");
        self.backend.submit(exe, &mut self.state, inputs)
    }
    fn device_bytes(&self) -> usize {
        self.state
            .values()
            .map(|b| self.backend.buffer_bytes(b))
            .chain(
                self.exes
                    .values()
                    .map(|e| self.backend.executable_bytes(&e.0)),
            )
            .sum::<usize>()
            + self.backend.backend_bytes()
    }
    fn read(&self, name: &str) -> Result<HostTensor> {
        let b = self
            .state
            .get(name)
            .ok_or_else(|| Error::Input(format!("no state buffer \"{name}\"")))?;
        self.backend.download(b)
    }
    fn write(&mut self, name: &str, value: &HostTensor) -> Result<()> {
        match self.state.get_mut(name) {
            Some(b) => self.backend.write(b, value),
            None => {
                let b = self.backend.upload(value)?;
                self.state.insert(name.to_string(), b);
                Ok(())
            }
        }
    }
    fn names(&self) -> Vec<String> {
        self.state.keys().cloned().collect()
    }
    fn kernel_count(&self, kind: StepKind, batch: usize) -> Option<usize> {
        self.exes.get(&(kind, batch)).map(|e| e.1)
    }
    fn finish_compiling(&mut self) -> Result<()> {
        for (exe, _) in self.exes.values_mut() {
            self.backend.finish_compiling(exe)?;
        }
        Ok(())
    }
}

/// The engine of a resolved device (`Device::Auto` counts as the CPU here) holding `state`.
pub(crate) fn engine_for(device: Device, state: StateMap<HostTensor>) -> Result<Box<dyn Engine>> {
    open_resolved(device)?.engine(state)
}

/// A device opened before its engine is made, so that a trainer can open it on another thread
/// while it builds the step and draws the parameters.
pub(crate) struct OpenDevice {
    pub(crate) device: Device,
    cuda: Option<lamina_cuda::CudaBackend>,
}

/// Resolves `d` (see [`resolve_device`]) and opens it: for CUDA the driver, the context, the
/// streams and the cuBLAS handles (the libraries load from disk on first use).
pub(crate) fn open_device(d: Device) -> Result<OpenDevice> {
    open_resolved(resolve_device(d)?)
}

fn open_resolved(device: Device) -> Result<OpenDevice> {
    let cuda = match device {
        Device::Cuda(i) => Some(lamina_cuda::CudaBackend::new(lamina_cuda::CudaConfig {
            device: i,
            ..Default::default()
        })?),
        Device::Cpu | Device::Auto => None,
    };
    Ok(OpenDevice { device, cuda })
}

impl OpenDevice {
    /// The engine on this device holding `state` (uploaded now).
    pub(crate) fn engine(self, state: StateMap<HostTensor>) -> Result<Box<dyn Engine>> {
        Ok(match self.cuda {
            Some(cuda) => Box::new(BackendEngine::new(cuda, state)?),
            None => Box::new(BackendEngine::new(lamina_cpu::CpuBackend::new(), state)?),
        })
    }
}

/// The device to use: `LAMINA_DEVICE` (cpu|cuda|cuda:N) overrides `Auto`, which picks CUDA device
/// 0 when a GPU is present; a CUDA device that is not there is an error.
pub(crate) fn resolve_device(d: Device) -> Result<Device> {
    let d = match (d, std::env::var("LAMINA_DEVICE").ok().as_deref()) {
        (Device::Auto, Some("cpu")) => Device::Cpu,
        (Device::Auto, Some(s)) if s.starts_with("cuda") => Device::Cuda(
            s.trim_start_matches("cuda")
                .trim_start_matches(':')
                .parse()
                .unwrap_or(0),
        ),
        (Device::Auto, _) if lamina_cuda::CudaBackend::device_count() > 0 => Device::Cuda(0),
        (Device::Auto, _) => Device::Cpu,
        (d, _) => d,
    };
    if let Device::Cuda(i) = d {
        let n = lamina_cuda::CudaBackend::device_count();
        if i >= n {
            return Err(Error::Backend {
                backend: "cuda".into(),
                msg: format!(
                    "device cuda:{i} asked for, but {n} CUDA device(s) are present; use Device::Cpu"
                ),
            });
        }
    }
    Ok(d)
}
