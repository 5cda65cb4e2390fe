//! Host ↔ device traffic of an executable. Fed inputs go through two sets of page-locked staging
//! memory used in turns, so the host fills one while the device still copies from the other.
//! Inputs below `LANDING_MIN` share one staging block per turn laid out like their shared device
//! block (`small_layout`), so one copy on the main stream fills them all. Large inputs are copied
//! on the device's copy stream into a landing buffer (one per turn), so that copy overlaps the
//! previous step's kernels; the step itself then starts with a device-to-device copy into the
//! input buffer its graph was captured with. Outputs are copied into small page-locked buffers
//! (pooled) that the caller reads when it waits for them: in one copy when they lie close together
//! in the arena (`OUT_SPAN`), else one copy each.

use crate::dev::{ctx, cuda_err, Dev, DevMem, Pinned};
use cudarc::driver::{result as drv, CudaEvent};
use lamina_core::{DType, Feed, HostTensor, PendingOutputs, Result};
use std::sync::{Arc, Mutex};

/// Inputs of at least this many bytes travel on the copy stream through a landing buffer; smaller
/// ones share a block copied straight into their input buffers on the main stream.
const LANDING_MIN: usize = 1 << 20;

/// Alignment of the inputs in the shared block (what a fresh allocation gives).
const ALIGN: usize = 256;

/// Outputs that all lie within this many bytes of the arena come back in one copy of that range
/// (each stream operation costs the device a few µs between steps; a few kB more cost nothing).
const OUT_SPAN: usize = 4096;

/// The offset of each input below `LANDING_MIN` in the shared block (`None` for a large one) and
/// the block's bytes (0 when every input is large). Each takes at least `ALIGN` bytes, so even an
/// empty input has an address of its own.
pub(crate) fn small_layout(sizes: &[usize]) -> (Vec<Option<usize>>, usize) {
    let mut end = 0;
    let offsets = sizes
        .iter()
        .map(|&b| {
            (b < LANDING_MIN).then(|| {
                let o = end;
                end += b.max(1).next_multiple_of(ALIGN);
                o
            })
        })
        .collect();
    (offsets, end)
}

/// Where an output of the step lands in the output buffer.
pub(crate) struct OutSpec {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    pub(crate) offset: usize,
    pub(crate) bytes: usize,
}

/// An output buffer and the event after the copies into it.
type OutBuf = (Pinned, CudaEvent);

/// One turn's page-locked staging: the shared block of the small inputs, the large ones apart.
struct Staging {
    block: Pinned,
    large: Vec<Option<Pinned>>,
}

pub(crate) struct Feeder {
    dev: Arc<Dev>,
    /// Bytes of each fed input.
    sizes: Vec<usize>,
    /// Device address of each fed input's buffer (what the step reads).
    targets: Vec<u64>,
    /// Offset of each small input in the shared block (`None`: a large input).
    small: Vec<Option<usize>>,
    /// Device address of the small inputs' block and the bytes one copy fills (up to the end of
    /// the last small input; 0 when there is none).
    block_dst: u64,
    block_copy: usize,
    staging: [Staging; 2],
    landing: Vec<Option<[DevMem; 2]>>,
    /// Recorded on the main stream once turn `j`'s inputs are in their buffers: its staging and
    /// landing memory may be written again.
    freed: [CudaEvent; 2],
    /// Recorded on the copy stream after turn `j`'s copies into landing buffers.
    copied: [CudaEvent; 2],
    turn: usize,
    outputs: Arc<Vec<OutSpec>>,
    /// Bytes of an output buffer: the outputs one after another, or `OUT_SPAN` of the arena.
    out_bytes: usize,
    /// Device range (address, bytes) of the arena: outputs inside it may come back in one copy.
    arena: (u64, usize),
    pool: Arc<Mutex<Vec<OutBuf>>>,
}

// SAFETY: the page-locked buffers are owned and used by one run at a time (`&mut self`).
unsafe impl Send for Feeder {}

impl Feeder {
    /// Staging for inputs of `sizes` bytes that land at `targets` (the small ones laid out by
    /// `small_layout` from one base address), and room for `outputs` of (dtype, shape), which
    /// the step leaves at addresses given to `receive`, often inside `arena` (address, bytes).
    pub(crate) fn new(
        dev: &Arc<Dev>,
        sizes: Vec<usize>,
        targets: Vec<u64>,
        outputs: Vec<(DType, Vec<usize>)>,
        arena: (u64, usize),
    ) -> Result<Feeder> {
        let (small, block_bytes) = small_layout(&sizes);
        let first = small
            .iter()
            .zip(&targets)
            .find_map(|(o, &t)| o.map(|o| t - o as u64));
        let block_dst = first.unwrap_or(0);
        let mut block_copy = 0;
        for k in 0..sizes.len() {
            if let Some(o) = small[k] {
                if targets[k] != block_dst + o as u64 {
                    return Err(cuda_err(format!(
                        "input {k} is not where the shared input block puts it"
                    )));
                }
                block_copy = block_copy.max(o + sizes[k]);
            }
        }
        let turn = || -> Result<Staging> {
            Ok(Staging {
                block: Pinned::new(&dev.ctx, block_bytes)?,
                large: sizes
                    .iter()
                    .zip(&small)
                    .map(|(&b, o)| match o {
                        Some(_) => Ok(None),
                        None => Pinned::new(&dev.ctx, b).map(Some),
                    })
                    .collect::<Result<_>>()?,
            })
        };
        let staging = [turn()?, turn()?];
        let landing = small
            .iter()
            .zip(&sizes)
            .map(|(o, &b)| {
                Ok(match o {
                    None => Some([DevMem::new(&dev.ctx, b)?, DevMem::new(&dev.ctx, b)?]),
                    Some(_) => None,
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
            small,
            block_dst,
            block_copy,
            staging,
            landing,
            freed: [event()?, event()?],
            copied: [event()?, event()?],
            turn: 0,
            outputs: Arc::new(specs),
            out_bytes: out_bytes.max(OUT_SPAN),
            arena,
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

    /// Staging memory of input `k` in turn `j`.
    fn slot(&mut self, j: usize, k: usize) -> &mut [u8] {
        let s = &mut self.staging[j];
        match (self.small[k], &mut s.large[k]) {
            (Some(o), _) => &mut s.block.as_mut_slice()[o..o + self.sizes[k]],
            (None, Some(p)) => &mut p.as_mut_slice()[..self.sizes[k]],
            (None, None) => unreachable!("a large input has staging of its own"),
        }
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
        Ok(self.slot(self.turn, k))
    }

    /// Enqueues the copies of this turn's inputs (the caller holds the device lock, context bound).
    pub(crate) fn send(&mut self, inputs: &[Feed<'_>]) -> Result<()> {
        let j = self.turn;
        ctx(self.freed[j].synchronize(), "waiting for an input copy")?;
        for (k, f) in inputs.iter().enumerate() {
            if let Feed::Host(t) = f {
                let bytes = crate::host_bytes(t);
                self.slot(j, k)[..bytes.len()].copy_from_slice(bytes);
            }
        }
        let main = self.dev.stream.cu_stream();
        let side = self.dev.copy_stream.cu_stream();
        if self.block_copy > 0 {
            let src = &self.staging[j].block.as_mut_slice()[..self.block_copy];
            // SAFETY: the device block holds the staging block's layout (checked in `new`); the
            // staging memory is not written again before `freed[j]` (recorded after this copy)
            // has fired.
            ctx(
                unsafe { drv::memcpy_htod_async(self.block_dst, src, main) },
                "copying the inputs to the device",
            )?;
        }
        let mut landed = false;
        for k in 0..self.sizes.len() {
            let (Some(l), Some(src)) = (&self.landing[k], &mut self.staging[j].large[k]) else {
                continue;
            };
            let bytes = self.sizes[k];
            // SAFETY: staging and landing buffers hold `bytes`; the staging memory is not written
            // again before `freed[j]` has fired.
            unsafe {
                ctx(
                    drv::memcpy_htod_async(l[j].ptr, &src.as_mut_slice()[..bytes], side),
                    "copying an input to the device",
                )?;
            }
            landed = true;
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
        let span = out_span(&self.outputs, srcs, self.arena);
        let offsets: Option<Vec<usize>> = match span {
            Some((lo, len)) => {
                // SAFETY: `lo..lo + len` lies inside the arena; the host memory stays alive (in
                // `InFlight`) until `done` has fired.
                ctx(
                    unsafe { drv::memcpy_dtoh_async(&mut mem[..len], lo, stream) },
                    "copying the outputs to the host",
                )?;
                Some(srcs.iter().map(|&s| (s - lo) as usize).collect())
            }
            None => {
                for (o, &src) in self.outputs.iter().zip(srcs) {
                    if o.bytes > 0 {
                        // SAFETY: the slot holds the output's bytes after the step; the host
                        // memory stays alive (in `InFlight`) until `done` has fired.
                        ctx(
                            unsafe {
                                drv::memcpy_dtoh_async(
                                    &mut mem[o.offset..o.offset + o.bytes],
                                    src,
                                    stream,
                                )
                            },
                            "copying an output to the host",
                        )?;
                    }
                }
                None
            }
        };
        ctx(done.record(&self.dev.stream), "recording an event")?;
        let flight = InFlight {
            buf: Some((host, done)),
            specs: self.outputs.clone(),
            offsets,
            pool: self.pool.clone(),
        };
        Ok(PendingOutputs::later(move || flight.read()))
    }
}

/// The device range (address, bytes) that one copy brings every output back in: `None` unless
/// there are several outputs, all inside `arena` and within `OUT_SPAN` bytes of each other.
fn out_span(outputs: &[OutSpec], srcs: &[u64], arena: (u64, usize)) -> Option<(u64, usize)> {
    if outputs.len() < 2 {
        return None;
    }
    let (a0, a1) = (arena.0, arena.0 + arena.1 as u64);
    let mut lo = u64::MAX;
    let mut hi = 0;
    for (o, &s) in outputs.iter().zip(srcs) {
        let end = s + o.bytes as u64;
        if s < a0 || end > a1 {
            return None;
        }
        lo = lo.min(s);
        hi = hi.max(end);
    }
    let len = (hi - lo) as usize;
    (len <= OUT_SPAN).then_some((lo, len))
}

/// Outputs being copied: the buffer goes back to the pool once the copies have finished (also
/// when the outputs are never read, so no copy writes into freed memory).
struct InFlight {
    buf: Option<OutBuf>,
    specs: Arc<Vec<OutSpec>>,
    /// Where each output lies in the buffer when one copy brought them all (else `specs`).
    offsets: Option<Vec<usize>>,
    pool: Arc<Mutex<Vec<OutBuf>>>,
}

impl InFlight {
    fn read(mut self) -> Result<Vec<HostTensor>> {
        let (mut host, done) = self.buf.take().expect("read once");
        let r = ctx(done.synchronize(), "running the step").and_then(|()| {
            let mem = host.as_mut_slice();
            self.specs
                .iter()
                .enumerate()
                .map(|(k, o)| {
                    let at = self.offsets.as_ref().map_or(o.offset, |v| v[k]);
                    HostTensor::from_le_bytes(&o.shape, o.dtype, &mem[at..at + o.bytes])
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
