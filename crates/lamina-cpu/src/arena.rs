//! Memory of an executable: 64-byte aligned blocks (the arena, materialised constants, scratch)
//! and the slot table that tells kernels where each value lives during a run.

use crate::elem::Elem;

/// Alignment of every block (one cache line, enough for any SIMD load).
const BLOCK_ALIGN: usize = 64;

/// A type with the block alignment, for the dangling pointer of an empty block.
#[repr(C, align(64))]
struct Aligned([u8; BLOCK_ALIGN]);

/// A zero-initialised, 64-byte aligned block of bytes.
pub(crate) struct Block {
    ptr: std::ptr::NonNull<u8>,
    bytes: usize,
}

// SAFETY: a block is plain bytes owned by one value, like a `Vec<u8>`.
unsafe impl Send for Block {}
// SAFETY: as above; shared access hands out only raw pointers.
unsafe impl Sync for Block {}

impl Block {
    /// A block of `bytes` zero bytes.
    pub(crate) fn new(bytes: usize) -> Block {
        let Some(layout) = Self::layout(bytes) else {
            // Empty: a dangling pointer with the block alignment, never dereferenced.
            return Block {
                ptr: std::ptr::NonNull::<Aligned>::dangling().cast(),
                bytes,
            };
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout)
        };
        // Zeroed allocations this large come untouched from the OS: advise before the first write.
        advise_huge_pages(ptr.as_ptr(), bytes);
        Block { ptr, bytes }
    }

    fn layout(bytes: usize) -> Option<std::alloc::Layout> {
        (bytes > 0)
            .then(|| {
                std::alloc::Layout::from_size_align(
                    bytes.next_multiple_of(BLOCK_ALIGN),
                    BLOCK_ALIGN,
                )
                .ok()
            })
            .flatten()
    }

    /// Start of the block (dangling but aligned when it is empty).
    pub(crate) fn ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// The block viewed as elements of `T` (as many as fit).
    pub(crate) fn as_slice<T: Elem>(&self) -> &[T] {
        let n = self.bytes / std::mem::size_of::<T>();
        // SAFETY: as `as_mut_slice`, shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const T, n) }
    }

    /// The block viewed as elements of `T` (as many as fit).
    pub(crate) fn as_mut_slice<T: Elem>(&mut self) -> &mut [T] {
        let n = self.bytes / std::mem::size_of::<T>();
        // SAFETY: the block holds `bytes` initialised bytes, 64-byte aligned (enough for any `T`
        // here), and every bit pattern is a valid f32, f64, i32 or u8.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr() as *mut T, n) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(layout) = Self::layout(self.bytes) {
            // SAFETY: allocated in `new` with this same layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Asks Linux to back a large buffer with transparent huge pages, so that first touching it costs
/// one page fault per 2 MiB instead of one per 4 KiB (fresh multi-megabyte outputs are faulted in
/// on every run, and on virtual machines each fault is expensive). Only a hint: contents are
/// unaffected and failure is ignored.
pub(crate) fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 1 << 21;
        const MADV_HUGEPAGE: i32 = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        if bytes < 2 * HUGE {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside one live allocation of ours; MADV_HUGEPAGE changes how
            // it is backed, never its contents.
            unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// A raw pointer that kernels on several threads may share.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ptr(pub(crate) *mut u8);

// SAFETY: a `Ptr` is only dereferenced by kernels, and the plan guarantees that values live at the
// same time never overlap, so threads writing through it touch disjoint elements.
unsafe impl Send for Ptr {}
// SAFETY: as above.
unsafe impl Sync for Ptr {}

impl Ptr {
    pub(crate) const NULL: Ptr = Ptr(std::ptr::null_mut());

    /// The pointer advanced by `elems` elements of `T`.
    #[inline(always)]
    pub(crate) fn at<T>(self, elems: usize) -> *mut T {
        (self.0 as *mut T).wrapping_add(elems)
    }
}

/// Where every value of a run lives: one pointer per slot (node roots, then snapshots of state
/// buffers). Constants and arena values are set at compile time, inputs and states at each run.
pub(crate) struct Slots {
    pub(crate) ptrs: Vec<Ptr>,
}

impl Slots {
    /// The value in `slot` as a slice of `len` elements.
    ///
    /// # Safety
    /// The slot must hold at least `len` elements of `T`, and no kernel may write them while the
    /// slice lives (the plan never stores a step's result over one of its operands).
    #[inline]
    pub(crate) unsafe fn get<T>(&self, slot: usize, len: usize) -> &[T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(self.ptrs[slot].0 as *const T, len) }
    }

    /// The value in `slot` as a mutable slice of `len` elements.
    ///
    /// # Safety
    /// As [`Slots::get`], and no other slice of the same memory may be alive.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn get_mut<T>(&self, slot: usize, len: usize) -> &mut [T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.ptrs[slot].0 as *mut T, len) }
    }

    /// The raw pointer of `slot`.
    #[inline]
    pub(crate) fn ptr(&self, slot: usize) -> Ptr {
        self.ptrs[slot]
    }
}
