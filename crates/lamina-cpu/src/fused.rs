//! Fused elementwise kernels: a group of elementwise nodes over one shape, run as a single pass.
//!
//! The flat index range is cut into chunks of [`CHUNK`] elements. For each chunk every member is
//! evaluated into a small scratch buffer (reused once its last reader ran, so the working set
//! stays in L1) or straight into its stored output; only the group's outputs reach memory.
//! Operands outside the group are read in place (full-shape values), from a pre-filled buffer
//! (splat constants, expands of one element) or gathered per chunk through broadcast strides
//! (absorbed expands).

use crate::arena::{Block, Ptr, Slots};
use crate::elem::{with_elem, Dt, Elem};
use crate::ew::Ew;
use crate::layout::Strided;

/// Elements per chunk: 4 KiB of f32 per scratch buffer, so a group's working set stays in L1.
pub(crate) const CHUNK: usize = 1024;
/// Groups with at least this many element-operations (elements × members, at least 2 members
/// counted) run their chunks on several threads.
const PAR_MIN: usize = 1 << 19;
/// Bytes of one scratch buffer (room for the widest dtype).
const BUF_BYTES: usize = CHUNK * 8;

/// An operand read from outside the group.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// A stored value of the group's shape, read in place.
    Dense { slot: usize, dt: Dt },
    /// A constant with every element `value`; buffer `buf` is filled with it once.
    Splat { value: f64, dt: Dt, buf: usize },
    /// Every element is element 0 of a stored value (an expand of a one-element tensor).
    Uniform { slot: usize, dt: Dt, buf: usize },
    /// An absorbed expand: `walk` maps each position to an element of the stored value
    /// (`src_len` elements), gathered per chunk into buffer `buf`.
    Broadcast {
        slot: usize,
        src_len: usize,
        dt: Dt,
        walk: Strided,
        buf: usize,
    },
}

/// An operand of a member.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    Source(usize),
    Member(usize),
}

/// Where a member's chunk goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dest {
    /// A scratch buffer (the value is only used inside the group).
    Scratch(usize),
    /// The stored value in this slot (a group output); later members read it from there.
    Out(usize),
}

/// One elementwise node of the group.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) ew: Ew,
    pub(crate) args: [Arg; 3],
    /// Bit `i`: operand `i` is a broadcast scalar (a splat or uniform source).
    pub(crate) uniform: u8,
    pub(crate) dt: Dt,
    pub(crate) dest: Dest,
}

/// A compiled fusion group.
#[derive(Clone, Debug)]
pub(crate) struct Fused {
    pub(crate) len: usize,
    pub(crate) sources: Vec<Source>,
    pub(crate) members: Vec<Member>,
    /// Scratch buffers needed: members' (reused by liveness) and sources'.
    pub(crate) bufs: usize,
}

/// Builds the member list: `args[i]` are the operands of member `i` (sources or earlier members),
/// `outputs[i]` the slot it is stored in, if any. Scratch buffers are assigned here.
pub(crate) fn assemble(
    len: usize,
    sources: Vec<Source>,
    source_bufs: usize,
    nodes: Vec<(Ew, Vec<Arg>, Dt, Option<usize>)>,
) -> Fused {
    // last member reading each member
    let mut last = vec![0usize; nodes.len()];
    for (i, (_, args, _, _)) in nodes.iter().enumerate() {
        for a in args {
            if let Arg::Member(j) = a {
                last[*j] = i;
            }
        }
    }
    let mut free: Vec<usize> = Vec::new();
    let mut next = source_bufs;
    let mut members: Vec<Member> = Vec::with_capacity(nodes.len());
    for (i, (ew, args, dt, out)) in nodes.into_iter().enumerate() {
        let dest = match out {
            Some(slot) => Dest::Out(slot),
            None => Dest::Scratch(free.pop().unwrap_or_else(|| {
                next += 1;
                next - 1
            })),
        };
        let mut a = [Arg::Source(0); 3];
        let mut uniform = 0u8;
        for (k, &x) in args.iter().enumerate().take(3) {
            a[k] = x;
            if let Arg::Source(i) = x {
                if matches!(sources[i], Source::Splat { .. } | Source::Uniform { .. }) {
                    uniform |= 1 << k;
                }
            }
        }
        // operands read for the last time here give their buffers back (after this member, so
        // a member never writes over its own operand)
        for x in &args {
            if let Arg::Member(j) = *x {
                if last[j] == i {
                    if let Dest::Scratch(b) = members[j].dest {
                        if !free.contains(&b) {
                            free.push(b);
                        }
                    }
                }
            }
        }
        members.push(Member {
            ew,
            args: a,
            uniform,
            dt,
            dest,
        });
    }
    Fused {
        len,
        sources,
        members,
        bufs: next,
    }
}

impl Fused {
    /// # Safety
    /// Every source slot must hold its value, every output slot be writable for `len` elements,
    /// and no output may overlap a source.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        let chunks = self.len.div_ceil(CHUNK);
        if chunks == 0 {
            return;
        }
        // a long group (an optimizer update) is worth threads on fewer elements
        if threads <= 1 || self.len * self.members.len().max(2) < PAR_MIN {
            // SAFETY: guaranteed by the caller.
            unsafe { self.run_chunks(slots, 0..chunks) };
        } else {
            let blocks = (threads * 4).min(chunks);
            crate::parallel::for_each(blocks, |b| {
                // SAFETY: guaranteed by the caller; blocks cover disjoint chunk ranges.
                unsafe { self.run_chunks(slots, b * chunks / blocks..(b + 1) * chunks / blocks) }
            });
        }
    }

    /// Evaluates chunks `range` with one scratch block.
    unsafe fn run_chunks(&self, slots: &Slots, range: std::ops::Range<usize>) {
        // each thread keeps its scratch block between runs: no allocation per step
        let mut scratch = SCRATCH.take().filter(|b| b.len() >= self.bufs * BUF_BYTES);
        let block = scratch.get_or_insert_with(|| Block::new(self.bufs * BUF_BYTES));
        let base = Ptr(block.ptr());
        let _keep = PutBack(scratch);
        let buf = |b: usize| Ptr(base.at::<u8>(b * BUF_BYTES));
        // constant operands: fill their buffers once
        for s in &self.sources {
            match *s {
                Source::Splat { value, dt, buf: b } => fill(buf(b), dt, value),
                Source::Uniform { slot, dt, buf: b } => {
                    // SAFETY: the slot holds at least one element of `dt` (caller's contract).
                    let v = unsafe { read_one(slots.ptr(slot), dt) };
                    fill(buf(b), dt, v)
                }
                Source::Dense { .. } | Source::Broadcast { .. } => {}
            }
        }
        for c in range {
            let start = c * CHUNK;
            let n = CHUNK.min(self.len - start);
            for s in &self.sources {
                if let Source::Broadcast {
                    slot,
                    src_len,
                    dt,
                    ref walk,
                    buf: b,
                } = *s
                {
                    with_elem!(dt, T => {
                        // SAFETY: the slot holds `src_len` elements (caller's contract) and the
                        // scratch buffer has room for CHUNK elements of any dtype.
                        let (src, dst) = unsafe {
                            (slots.get::<T>(slot, src_len), std::slice::from_raw_parts_mut(buf(b).at::<T>(0), n))
                        };
                        walk.gather(src, start, dst);
                    })
                }
            }
            for (mi, m) in self.members.iter().enumerate() {
                let mut args = [std::ptr::null::<u8>(); 3];
                for (k, a) in m.args.iter().enumerate().take(m.ew.arity()) {
                    args[k] = match *a {
                        Arg::Source(i) => match &self.sources[i] {
                            Source::Dense { slot, dt } => {
                                slots.ptr(*slot).at::<u8>(start * dt.size())
                            }
                            Source::Splat { buf: b, .. }
                            | Source::Uniform { buf: b, .. }
                            | Source::Broadcast { buf: b, .. } => buf(*b).0,
                        },
                        Arg::Member(j) => self.dest_ptr(slots, base, j, start).0,
                    };
                }
                let out = self.dest_ptr(slots, base, mi, start);
                // SAFETY: operands point to `n` elements of their dtypes (in place, in scratch or
                // in an output written earlier in this chunk); the destination is a scratch buffer
                // no live operand uses, or this chunk of the member's own output.
                unsafe { m.ew.eval(args, m.uniform, out.0, n) };
            }
        }
    }

    /// Where member `j`'s chunk starting at `start` lives.
    fn dest_ptr(&self, slots: &Slots, base: Ptr, j: usize, start: usize) -> Ptr {
        match self.members[j].dest {
            Dest::Scratch(b) => Ptr(base.at::<u8>(b * BUF_BYTES)),
            Dest::Out(slot) => Ptr(slots.ptr(slot).at::<u8>(start * self.members[j].dt.size())),
        }
    }
}

thread_local! {
    /// This thread's scratch block for fused groups (taken while a group runs on the thread, so a
    /// nested use gets a fresh one).
    static SCRATCH: std::cell::Cell<Option<Block>> = const { std::cell::Cell::new(None) };
}

/// Returns a scratch block to this thread's slot when dropped.
struct PutBack(Option<Block>);

impl Drop for PutBack {
    fn drop(&mut self) {
        SCRATCH.set(self.0.take());
    }
}

/// Fills a scratch buffer with CHUNK copies of a value.
fn fill(p: Ptr, dt: Dt, v: f64) {
    with_elem!(dt, T => {
        // SAFETY: scratch buffers hold CHUNK elements of any dtype.
        let s = unsafe { std::slice::from_raw_parts_mut(p.at::<T>(0), CHUNK) };
        s.fill(T::from_f64(v));
    })
}

/// Reads element 0 of a value as f64.
///
/// # Safety
/// `p` must point to at least one element of `dt`.
unsafe fn read_one(p: Ptr, dt: Dt) -> f64 {
    // SAFETY: guaranteed by the caller.
    with_elem!(dt, T => unsafe { (*p.at::<T>(0)).to_f64() })
}
