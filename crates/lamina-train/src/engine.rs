//! The trainer's view of a backend: compiled executables cached per (kind, batch size) and the
//! persistent buffers, behind one object-safe trait so `ModelTrainer` is not generic.

use lamina_core::{Backend, Error, Graph, HostTensor, Plan, Result, StateMap};
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
    fn read(&self, name: &str) -> Result<HostTensor>;
    fn write(&mut self, name: &str, value: &HostTensor) -> Result<()>;
    fn names(&self) -> Vec<String>;
    /// Kernels per step of a compiled executable (for reports).
    fn kernel_count(&self, kind: StepKind, batch: usize) -> Option<usize>;
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

impl<B: Backend> Engine for BackendEngine<B> {
    fn run(
        &mut self,
        kind: StepKind,
        batch: usize,
        build: &mut dyn FnMut() -> Result<Graph>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        if !self.exes.contains_key(&(kind, batch)) {
            let plan = Plan::compile(&build()?)?;
            let exe = self.backend.compile(&plan)?;
            self.exes.insert((kind, batch), (exe, plan.kernel_count()));
        }
        let (exe, _) = self.exes.get_mut(&(kind, batch)).expect("inserted above");
        self.backend.run(exe, &mut self.state, inputs)
    }
    fn read(&self, name: &str) -> Result<HostTensor> {
        let b = self
            .state
            .get(name)
            .ok_or_else(|| Error::Input(format!("no state buffer \"{name}\"")))?;
        self.backend.download(b)
    }
    fn write(&mut self, name: &str, value: &HostTensor) -> Result<()> {
        let b = self.backend.upload(value)?;
        self.state.insert(name.to_string(), b);
        Ok(())
    }
    fn names(&self) -> Vec<String> {
        self.state.keys().cloned().collect()
    }
    fn kernel_count(&self, kind: StepKind, batch: usize) -> Option<usize> {
        self.exes.get(&(kind, batch)).map(|e| e.1)
    }
}
