//! Host ↔ device traffic of an executable. Fed inputs have two sets of device buffers used in
//! turns, each with its own capture of the step (the graph of turn `j` reads turn `j`'s buffers),
//! and two sets of page-locked staging memory. The copies of a step's inputs run on the device's
//! copy stream while the previous step's kernels still run; the step waits for them with an
//! event, and the copies of turn `j` wait for the end of the last step that read turn `j`.
//! Inputs below `LANDING_MIN` share one staging block and one device block per turn with the same
//! layout (`small_layout`), so one copy moves them all. Outputs are copied into small page-locked
//! buffers (pooled) that the caller reads when it waits for them: in one copy when they lie close
//! together in the arena (`OUT_SPAN`), else one copy each.

use crate::dev::{ctx, cuda_err, Dev, DevMem, Pinned};
use cudarc::driver::{result as drv, CudaEvent};
use lamina_core::{DType, Feed, HostTensor, PendingOutputs, Result};
use std::sync::{Arc, Mutex};

/// Inputs of at least this many bytes have staging and device buffers of their own; smaller ones
/// share a block copied in one operation.
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

/// The device buffers of the fed inputs, one set per turn.
pub(crate) struct InputMem {
    /// Bytes of each fed input.
    sizes: Vec<usize>,
    /// Offset of each small input in the shared block (`None`: a large input).
    small: Vec<Option<usize>>,
    /// Each turn's shared block (`None` when every input is large).
    blocks: [Option<DevMem>; 2],
    /// Each turn's buffer of a large input.
    large: Vec<Option<[DevMem; 2]>>,
}

impl InputMem {
    /// Two sets of device buffers for inputs of `sizes` bytes.
    pub(crate) fn new(dev: &Arc<Dev>, sizes: Vec<usize>) -> Result<InputMem> {
        let (small, block_bytes) = small_layout(&sizes);
        let block = || -> Result<Option<DevMem>> {
            Ok(if block_bytes > 0 {
                Some(DevMem::new(&dev.ctx, block_bytes)?)
            } else {
                None
            })
        };
        let blocks = [block()?, block()?];
        let large = small
            .iter()
            .zip(&sizes)
            .map(|(o, &b)| {
                Ok(match o {
                    None => Some([DevMem::new(&dev.ctx, b)?, DevMem::new(&dev.ctx, b)?]),
                    Some(_) => None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(InputMem {
            sizes,
            small,
            blocks,
            large,
        })
    }

    /// Device address of input `k` in turn `j`.
    pub(crate) fn at(&self, j: usize, k: usize) -> u64 {
        match (self.small[k], &self.blocks[j], &self.large[k]) {
            (Some(o), Some(b), _) => b.ptr + o as u64,
            (None, _, Some(l)) => l[j].ptr,
            _ => unreachable!("every input has a buffer in each turn"),
        }
    }

    /// Device bytes of both turns' buffers.
    pub(crate) fn bytes(&self) -> usize {
        let blocks: usize = self.blocks.iter().flatten().map(|b| b.bytes).sum();
        let large: usize = self
            .large
            .iter()
            .flatten()
            .map(|l| l[0].bytes + l[1].bytes)
            .sum();
        blocks + large
    }
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

/// Total bytes of small outputs that the step's kernels store straight into mapped page-locked
/// memory ([`Feeder::mapped_at`]): a copy after the step costs the device ~9 µs between two
/// steps (H200), a few stores from a kernel almost nothing.
pub(crate) const MAPPED_MAX: usize = 64 << 10;

/// Where each output lands in an output buffer (offset, bytes), and the buffer's bytes.
pub(crate) fn out_layout(outputs: &[(DType, Vec<usize>)]) -> (Vec<(usize, usize)>, usize) {
    let mut end = 0;
    let at = outputs
        .iter()
        .map(|(dtype, shape)| {
            let bytes = lamina_core::numel(shape) * dtype.size_bytes();
            let o = end;
            end += bytes.next_multiple_of(16);
            (o, bytes)
        })
        .collect();
    (at, end)
}

/// What became of the outputs a step of one turn wrote into that turn's mapped buffer.
enum Written {
    /// Still there (the step may still run).
    InTurn,
    /// Copied out before the turn's next step overwrote them.
    Saved(Vec<u8>),
    /// Read by their `PendingOutputs`.
    Taken,
}

/// One turn's page-locked staging: the shared block of the small inputs, the large ones apart.
struct Staging {
    block: Pinned,
    large: Vec<Option<Pinned>>,
}

pub(crate) struct Feeder {
    dev: Arc<Dev>,
    mem: InputMem,
    /// Bytes one copy of the shared block moves (up to the end of the last small input; 0 when
    /// there is none).
    block_copy: usize,
    staging: [Staging; 2],
    /// Recorded on the copy stream after turn `j`'s copies: its staging memory may be written
    /// again, and the step of turn `j` may start.
    copied: [CudaEvent; 2],
    /// Recorded on the main stream after the last step of turn `j` and the copies of its outputs:
    /// turn `j`'s device buffers may be written again.
    freed: [Arc<CudaEvent>; 2],
    /// Each turn's mapped output buffer, when the outputs are small (`MAPPED_MAX`), and its
    /// device address.
    mapped: Option<[(Arc<Pinned>, u64); 2]>,
    /// The outputs of the last step of each turn, while they may still sit in its mapped buffer.
    written: [Option<Arc<Mutex<Written>>>; 2],
    /// The turn whose step was enqueued but whose `freed` is not recorded yet.
    unfreed: Option<usize>,
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
    /// Staging for the inputs of `mem`, and room for `outputs` of (dtype, shape), which the step
    /// leaves at addresses given to `receive`, often inside `arena` (address, bytes).
    /// `mapped`: the step stores its outputs into this feeder's mapped buffers itself.
    pub(crate) fn new(
        dev: &Arc<Dev>,
        mem: InputMem,
        outputs: Vec<(DType, Vec<usize>)>,
        arena: (u64, usize),
        mapped: bool,
    ) -> Result<Feeder> {
        let block_bytes = mem.blocks[0].as_ref().map_or(0, |b| b.bytes);
        let block_copy = mem
            .small
            .iter()
            .zip(&mem.sizes)
            .filter_map(|(o, &b)| o.map(|o| o + b))
            .max()
            .unwrap_or(0);
        let turn = || -> Result<Staging> {
            Ok(Staging {
                block: Pinned::new(&dev.ctx, block_bytes)?,
                large: mem
                    .sizes
                    .iter()
                    .zip(&mem.small)
                    .map(|(&b, o)| match o {
                        Some(_) => Ok(None),
                        None => Pinned::new(&dev.ctx, b).map(Some),
                    })
                    .collect::<Result<_>>()?,
            })
        };
        let staging = [turn()?, turn()?];
        let event = || ctx(dev.ctx.new_event(None), "creating an event");
        let (at, out_bytes) = out_layout(&outputs);
        let specs: Vec<OutSpec> = outputs
            .into_iter()
            .zip(at)
            .map(|((dtype, shape), (offset, bytes))| OutSpec {
                dtype,
                shape,
                offset,
                bytes,
            })
            .collect();
        let turn_out = || -> Result<(Arc<Pinned>, u64)> {
            let p = Pinned::mapped(&dev.ctx, out_bytes)?;
            let at = p.device_ptr()?;
            Ok((Arc::new(p), at))
        };
        let mapped = if mapped {
            Some([turn_out()?, turn_out()?])
        } else {
            None
        };
        Ok(Feeder {
            dev: dev.clone(),
            mem,
            block_copy,
            staging,
            copied: [event()?, event()?],
            freed: [Arc::new(event()?), Arc::new(event()?)],
            mapped,
            written: [None, None],
            unfreed: None,
            turn: 0,
            outputs: Arc::new(specs),
            out_bytes: out_bytes.max(OUT_SPAN),
            arena,
            pool: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Device bytes held here (both turns' input buffers).
    pub(crate) fn device_bytes(&self) -> usize {
        self.mem.bytes()
    }

    /// The turn of the next run: its step reads `input_at(turn, k)`.
    pub(crate) fn turn(&self) -> usize {
        self.turn
    }

    /// Device address of output `k` in turn `j`'s mapped buffer (when the outputs are mapped).
    pub(crate) fn mapped_at(&self, j: usize, k: usize) -> Option<u64> {
        self.mapped
            .as_ref()
            .map(|m| m[j].1 + self.outputs[k].offset as u64)
    }

    /// Before turn `j`'s next step overwrites its mapped outputs: copies out those of its last
    /// step that nobody has read yet (that step finished long ago in a steady loop).
    fn save(&mut self, j: usize) -> Result<()> {
        let (Some(w), Some(m)) = (self.written[j].take(), &self.mapped) else {
            return Ok(());
        };
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*w, Written::InTurn) {
            ctx(self.freed[j].synchronize(), "running the step")?;
            *w = Written::Saved(m[j].0.read(self.out_bytes));
        }
        Ok(())
    }

    /// Device address of input `k` in turn `j`.
    pub(crate) fn input_at(&self, j: usize, k: usize) -> u64 {
        self.mem.at(j, k)
    }

    /// Staging memory of input `k` in turn `j`.
    fn slot(&mut self, j: usize, k: usize) -> &mut [u8] {
        let s = &mut self.staging[j];
        let bytes = self.mem.sizes[k];
        match (self.mem.small[k], &mut s.large[k]) {
            (Some(o), _) => &mut s.block.as_mut_slice()[o..o + bytes],
            (None, Some(p)) => &mut p.as_mut_slice()[..bytes],
            (None, None) => unreachable!("a large input has staging of its own"),
        }
    }

    /// The staging memory of input `k` for the next run, once the device has read what it held.
    pub(crate) fn staging(&mut self, k: usize) -> Result<&mut [u8]> {
        if k >= self.mem.sizes.len() {
            return Err(cuda_err(format!(
                "input {k} asked for, the plan feeds {}",
                self.mem.sizes.len()
            )));
        }
        ctx(
            self.copied[self.turn].synchronize(),
            "waiting for an input copy",
        )?;
        Ok(self.slot(self.turn, k))
    }

    /// Enqueues the copies of this turn's inputs and makes the main stream wait for them (the
    /// caller holds the device lock, context bound, and enqueues the step of this turn next).
    pub(crate) fn send(&mut self, inputs: &[Feed<'_>]) -> Result<()> {
        self.free()?;
        let j = self.turn;
        self.save(j)?;
        ctx(self.copied[j].synchronize(), "waiting for an input copy")?;
        for (k, f) in inputs.iter().enumerate() {
            if let Feed::Host(t) = f {
                let bytes = crate::host_bytes(t);
                self.slot(j, k)[..bytes.len()].copy_from_slice(bytes);
            }
        }
        let side = self.dev.copy_stream.cu_stream();
        // the last step of this turn (and its output copies) must have read the buffers
        ctx(
            self.dev.copy_stream.wait(&self.freed[j]),
            "waiting for an event",
        )?;
        if self.block_copy > 0 {
            let src = &self.staging[j].block.as_mut_slice()[..self.block_copy];
            let dst = self.mem.blocks[j].as_ref().map_or(0, |b| b.ptr);
            // SAFETY: the device block has the staging block's layout and size; the staging
            // memory is not written again before `copied[j]` (recorded after this copy) has fired.
            ctx(
                unsafe { drv::memcpy_htod_async(dst, src, side) },
                "copying the inputs to the device",
            )?;
        }
        for k in 0..self.mem.sizes.len() {
            let (Some(l), Some(src)) = (&self.mem.large[k], &mut self.staging[j].large[k]) else {
                continue;
            };
            let bytes = self.mem.sizes[k];
            // SAFETY: staging and device buffers hold `bytes`; the staging memory is not written
            // again before `copied[j]` has fired.
            ctx(
                unsafe { drv::memcpy_htod_async(l[j].ptr, &src.as_mut_slice()[..bytes], side) },
                "copying an input to the device",
            )?;
        }
        ctx(
            self.copied[j].record(&self.dev.copy_stream),
            "recording an event",
        )?;
        ctx(
            self.dev.stream.wait(&self.copied[j]),
            "waiting for an event",
        )?;
        self.unfreed = Some(j);
        self.turn ^= 1;
        Ok(())
    }

    /// Records that the step enqueued last (and its output copies) is done with its turn's
    /// buffers.
    fn free(&mut self) -> Result<()> {
        if let Some(j) = self.unfreed.take() {
            ctx(self.freed[j].record(&self.dev.stream), "recording an event")?;
        }
        Ok(())
    }

    /// Enqueues the copies of the step's outputs (from `srcs`) and returns them as pending.
    /// How many device-to-host copies bring back outputs at `srcs` (for the profile).
    pub(crate) fn output_copies(&self, srcs: &[u64]) -> usize {
        if self.mapped.is_some() {
            return 0;
        }
        match out_span(&self.outputs, srcs, self.arena) {
            Some(_) => 1,
            None => self.outputs.iter().filter(|o| o.bytes > 0).count(),
        }
    }

    pub(crate) fn receive(&mut self, srcs: &[u64]) -> Result<PendingOutputs> {
        if let Some(m) = &self.mapped {
            // the step stored its outputs into its turn's mapped buffer
            let j = self
                .unfreed
                .ok_or_else(|| cuda_err("outputs asked for before a step"))?;
            let (buf, done) = (m[j].0.clone(), self.freed[j].clone());
            self.free()?;
            let w = Arc::new(Mutex::new(Written::InTurn));
            self.written[j] = Some(w.clone());
            let (specs, n) = (self.outputs.clone(), self.out_bytes);
            return Ok(PendingOutputs::later(move || {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                let bytes = match std::mem::replace(&mut *w, Written::Taken) {
                    Written::InTurn => {
                        ctx(done.synchronize(), "running the step")?;
                        buf.read(n)
                    }
                    Written::Saved(v) => v,
                    Written::Taken => return Err(cuda_err("outputs read twice")),
                };
                specs
                    .iter()
                    .map(|o| {
                        HostTensor::from_le_bytes(
                            &o.shape,
                            o.dtype,
                            &bytes[o.offset..o.offset + o.bytes],
                        )
                    })
                    .collect()
            }));
        }
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
        self.free()?;
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

impl Drop for Feeder {
    fn drop(&mut self) {
        // no copy may still read the staging memory or write the input buffers once they are freed
        for e in self.copied.iter().chain(self.freed.iter().map(|e| &**e)) {
            let _ = e.synchronize();
        }
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
