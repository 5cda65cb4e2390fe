//! Shared helpers: the backend (or a skip), uploads and downloads of state maps.

use lamina_core::*;
use lamina_cuda::{CudaBackend, CudaBuffer, CudaConfig};

/// Held by every test for its whole run: the memory tests read device-wide usage, so no other
/// test may allocate meanwhile (the concurrency test starts its own threads inside).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A strict-f32 backend with graphs on, or `None` (after printing the skip) without a GPU.
pub fn backend(test: &str) -> Option<CudaBackend> {
    backend_with(test, false, true)
}

pub fn backend_with(test: &str, tf32: bool, graphs: bool) -> Option<CudaBackend> {
    if CudaBackend::device_count() == 0 {
        println!("{test}: skipped: no CUDA device");
        return None;
    }
    Some(
        CudaBackend::new(CudaConfig {
            device: 0,
            tf32,
            graphs,
            ..Default::default()
        })
        .expect("a CUDA device is present"),
    )
}

pub fn upload(b: &CudaBackend, s: &StateMap<HostTensor>) -> StateMap<CudaBuffer> {
    s.iter()
        .map(|(k, v)| (k.clone(), b.upload(v).unwrap()))
        .collect()
}

pub fn download(b: &CudaBackend, s: &StateMap<CudaBuffer>) -> StateMap<HostTensor> {
    s.iter()
        .map(|(k, v)| (k.clone(), b.download(v).unwrap()))
        .collect()
}

/// Runs `plan` `times` times on fresh copies of `state`; returns outputs and state of the last run.
pub fn run_cuda(
    b: &CudaBackend,
    plan: &Plan,
    inputs: &[HostTensor],
    state: &StateMap<HostTensor>,
) -> Result<(Vec<HostTensor>, StateMap<HostTensor>)> {
    let mut exe = b.compile(plan)?;
    let mut bufs = upload(b, state);
    let feeds: Vec<&HostTensor> = inputs.iter().collect();
    let outs = b.run(&mut exe, &mut bufs, &feeds)?;
    Ok((outs, download(b, &bufs)))
}
