//! Host ↔ device traffic of an executable. Fed inputs go through two sets of page-locked staging
//! buffers used in turns, so the host fills one while the device still copies from the other.
//! Large inputs are copied on the device's copy stream into a landing buffer (one per turn), so
//! that copy overlaps the previous step's kernels; the step itself then starts with a
//! device-to-device copy into the input buffer its graph was captured with. Outputs are copied into
//! small page-locked buffers (pooled) that the caller reads when it waits for them.

use crate::dev::{ctx, cuda_err, Dev, DevMem, Pinned};
use cudarc::driver::{result as drv, CudaEvent};
use lamina_core::{DType, Feed, HostTensor, PendingOutputs, Result};
use std::sync::{Arc, Mutex};

/// Inputs of at least this many bytes travel on the copy stream through a landing buffer; smaller
/// ones are copied straight into their input buffer on the main stream (one operation, no event).
const LANDING_MIN: usize = 1 << 20;

/// Where an output of the step lands in the output buffer.
pub(crate) struct OutSpec {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    pub(crate) offset: usize,
    pub(crate) bytes: usize,
}

/// An output buffer and the event after the copies into it.
type OutBuf = (Pinned, CudaEvent);

pub(crate) struct Feeder {
    dev: Arc<Dev>,
    /// Bytes of each fed input.
    sizes: Vec<usize>,
    /// Device address of each fed input's buffer (what the step reads).
    targets: Vec<u64>,
    staging: [Vec<Pinned>; 2],
    landing: Vec<Option<[DevMem; 2]>>,
    /// Recorded on the main stream once turn `j`'s inputs are in their buffers: its staging and
    /// landing memory may be written again.
    freed: [CudaEvent; 2],
    /// Recorded on the copy stream after turn `j`'s copies into landing buffers.
    copied: [CudaEvent; 2],
    turn: usize,
    outputs: Arc<Vec<OutSpec>>,
    out_bytes: usize,
    pool: Arc<Mutex<Vec<OutBuf>>>,
}

// SAFETY: the page-locked buffers are owned and used by one run at a time (`&mut self`).
unsafe impl Send for Feeder {}

impl Feeder {
    /// Staging for inputs of `sizes` bytes that land at `targets`, and room for `outputs` of
    /// (dtype, shape).
    pub(crate) fn new(
        dev: &Arc<Dev>,
        sizes: Vec<usize>,
        targets: Vec<u64>,
        outputs: Vec<(DType, Vec<usize>)>,
    ) -> Result<Feeder> {
        let mut staging = [Vec::new(), Vec::new()];
        for s in &mut staging {
            for &b in &sizes {
                s.push(Pinned::new(&dev.ctx, b)?);
            }
        }
        let landing = sizes
            .iter()
            .map(|&b| {
                Ok(if b >= LANDING_MIN {
                    Some([DevMem::new(&dev.ctx, b)?, DevMem::new(&dev.ctx, b)?])
                } else {
                    None
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let event = || ctx(dev.ctx.new_event(None), "creating an event");
        let mut specs = Vec::with_capacity(outputs.len());
        let mut out_bytes = 0;
        for (dtype, shape) in outputs {
            let bytes = lamina_core::numel(&shape) * dtype.size_bytes();
            specs.push(OutSpec {
                dtype,
                shape,
                offset: out_bytes,
                bytes,
            });
            out_bytes += bytes.next_multiple_of(16);
        }
        Ok(Feeder {
            dev: dev.clone(),
            sizes,
            targets,
            staging,
            landing,
            freed: [event()?, event()?],
            copied: [event()?, event()?],
            turn: 0,
            outputs: Arc::new(specs),
            out_bytes,
            pool: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Device bytes held here (the landing buffers).
    pub(crate) fn device_bytes(&self) -> usize {
        self.landing
            .iter()
            .flatten()
            .map(|l| l[0].bytes + l[1].bytes)
            .sum()
    }

    /// The staging memory of input `k` for the next run, once the device has read what it held.
    pub(crate) fn staging(&mut self, k: usize) -> Result<&mut [u8]> {
        if k >= self.sizes.len() {
            return Err(cuda_err(format!(
                "input {k} asked for, the plan feeds {}",
                self.sizes.len()
            )));
        }
        ctx(
            self.freed[self.turn].synchronize(),
            "waiting for an input copy",
        )?;
        Ok(self.staging[self.turn][k].as_mut_slice())
    }

    /// Enqueues the copies of this turn's inputs (the caller holds the device lock, context bound).
    pub(crate) fn send(&mut self, inputs: &[Feed<'_>]) -> Result<()> {
        let j = self.turn;
        ctx(self.freed[j].synchronize(), "waiting for an input copy")?;
        for (k, f) in inputs.iter().enumerate() {
            if let Feed::Host(t) = f {
                let bytes = crate::host_bytes(t);
                self.staging[j][k].as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
            }
        }
        let main = self.dev.stream.cu_stream();
        let side = self.dev.copy_stream.cu_stream();
        let mut landed = false;
        for k in 0..self.sizes.len() {
            let (bytes, src) = (self.sizes[k], self.staging[j][k].as_mut_slice());
            if bytes == 0 {
                continue;
            }
            // SAFETY: staging, landing and input buffers all hold `bytes`; the staging memory is
            // not written again before `freed[j]` (recorded after these copies) has fired.
            unsafe {
                match &self.landing[k] {
                    Some(l) => {
                        ctx(
                            drv::memcpy_htod_async(l[j].ptr, &src[..bytes], side),
                            "copying an input to the device",
                        )?;
                        landed = true;
                    }
                    None => ctx(
                        drv::memcpy_htod_async(self.targets[k], &src[..bytes], main),
                        "copying an input to the device",
                    )?,
                }
            }
        }
        if landed {
            ctx(
                self.copied[j].record(&self.dev.copy_stream),
                "recording an event",
            )?;
            ctx(
                self.dev.stream.wait(&self.copied[j]),
                "waiting for an event",
            )?;
            for (k, l) in self.landing.iter().enumerate() {
                if let Some(l) = l {
                    // SAFETY: both buffers hold `sizes[k]` bytes; ordered after the copy above.
                    ctx(
                        unsafe {
                            drv::memcpy_dtod_async(self.targets[k], l[j].ptr, self.sizes[k], main)
                        },
                        "device copy",
                    )?;
                }
            }
        }
        ctx(self.freed[j].record(&self.dev.stream), "recording an event")?;
        self.turn ^= 1;
        Ok(())
    }

    /// Enqueues the copies of the step's outputs (from `srcs`) and returns them as pending.
    pub(crate) fn receive(&mut self, srcs: &[u64]) -> Result<PendingOutputs> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut host, done) = match pooled {
            Some(b) => b,
            None => (
                Pinned::new(&self.dev.ctx, self.out_bytes)?,
                ctx(self.dev.ctx.new_event(None), "creating an event")?,
            ),
        };
        let stream = self.dev.stream.cu_stream();
        let mem = host.as_mut_slice();
        for (o, &src) in self.outputs.iter().zip(srcs) {
            if o.bytes > 0 {
                // SAFETY: the slot holds the output's bytes after the step; the host memory stays
                // alive (in `InFlight`) until `done` has fired.
                ctx(
                    unsafe {
                        drv::memcpy_dtoh_async(&mut mem[o.offset..o.offset + o.bytes], src, stream)
                    },
                    "copying an output to the host",
                )?;
            }
        }
        ctx(done.record(&self.dev.stream), "recording an event")?;
        let flight = InFlight {
            buf: Some((host, done)),
            specs: self.outputs.clone(),
            pool: self.pool.clone(),
        };
        Ok(PendingOutputs::later(move || flight.read()))
    }
}

/// Outputs being copied: the buffer goes back to the pool once the copies have finished (also
/// when the outputs are never read, so no copy writes into freed memory).
struct InFlight {
    buf: Option<OutBuf>,
    specs: Arc<Vec<OutSpec>>,
    pool: Arc<Mutex<Vec<OutBuf>>>,
}

impl InFlight {
    fn read(mut self) -> Result<Vec<HostTensor>> {
        let (mut host, done) = self.buf.take().expect("read once");
        let r = ctx(done.synchronize(), "running the step").and_then(|()| {
            let mem = host.as_mut_slice();
            self.specs
                .iter()
                .map(|o| {
                    HostTensor::from_le_bytes(&o.shape, o.dtype, &mem[o.offset..o.offset + o.bytes])
                })
                .collect()
        });
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((host, done));
        r
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((host, done)) = self.buf.take() {
            let _ = done.synchronize();
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((host, done));
        }
    }
}
