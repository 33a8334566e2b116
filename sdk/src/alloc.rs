//! [`GuestAllocator`]: a global allocator for WASM plugins, made for the way a jobber uses
//! memory. Every request hands the guest a handful of short strings (the payload, a lease's
//! id, pool, resource id and data, each one a `cabi_realloc` by the host) and the jobber makes
//! a few more (its parsed payload, its answer); all of them are freed before the next request.
//!
//! The target's allocator (dlmalloc), like general-purpose allocators such as talc, splits
//! and coalesces blocks on every call, which costs a hundred or more WASM instructions per
//! allocation and as many per free. Here small blocks (up to [`SMALL_MAX`] bytes) come in
//! power-of-two size classes, each with a free list: taking a block pops the list, freeing
//! one pushes it, a few instructions each. A class with an empty list cuts a new block from
//! a chunk taken from the system allocator. Larger or over-aligned blocks go to the system
//! allocator as they are.
//!
//! The trade-off: a freed small block stays in its class and is never returned or merged,
//! so the memory a class holds is the most it ever held at once. A jobber whose requests
//! allocate and free about the same amounts each time (the usual case) loses nothing; one
//! that once holds a great many small blocks and then frees them keeps that memory.
//!
//! ```ignore
//! #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
//! #[global_allocator]
//! static ALLOCATOR: resman_sdk::alloc::GuestAllocator = resman_sdk::alloc::GuestAllocator::new();
//! ```
//!
//! It assumes one thread: it is `Sync` (so it can be a `static`) only on WASM without the
//! `atomics` feature, where a component runs single-threaded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class, in bytes: room for a free list's link, and the alignment every block
/// has (a chunk is aligned to it and every class is a multiple of it).
const SMALL_MIN: usize = 16;

/// The largest small block, in bytes; larger ones go to the system allocator.
pub const SMALL_MAX: usize = 2048;

/// Classes 16, 32, ..., 2048 bytes.
const CLASSES: usize = (SMALL_MAX / SMALL_MIN).trailing_zeros() as usize + 1;

/// How much a class takes from the system allocator at a time when its list is empty and
/// the current chunk has no room left.
const CHUNK_BYTES: usize = 64 * 1024;

/// A power-of-two size-class allocator over the system allocator; see the
/// [module docs](self).
pub struct GuestAllocator {
    state: UnsafeCell<State>,
}

struct State {
    /// Per class, the first free block; each free block's first word links the next.
    free: [*mut u8; CLASSES],
    /// Where the current chunk's unused part starts and ends.
    next: usize,
    end: usize,
}

// SAFETY: a WASM component without `atomics` has one thread, so the state is never touched by
// two at once. Elsewhere the type is not `Sync` and cannot be a global allocator.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl Sync for GuestAllocator {}

impl GuestAllocator {
    /// An allocator holding no memory yet.
    pub const fn new() -> Self {
        GuestAllocator {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: 0,
                end: 0,
            }),
        }
    }
}

impl Default for GuestAllocator {
    fn default() -> Self {
        GuestAllocator::new()
    }
}

/// The class of a block of `layout`, or `None` for one the system allocator serves.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > SMALL_MAX || layout.align() > SMALL_MIN {
        return None;
    }
    let size = layout.size().max(SMALL_MIN);
    // The power of two at or above `size`, as a shift from SMALL_MIN.
    let shift = usize::BITS - (size - 1).leading_zeros();
    Some((shift - SMALL_MIN.trailing_zeros()) as usize)
}

fn class_bytes(class: usize) -> usize {
    SMALL_MIN << class
}

impl State {
    /// A block of `class`: the head of its list, else one cut from the chunk.
    ///
    /// # Safety
    ///
    /// Every block on a list was handed out by this state and freed.
    unsafe fn take(&mut self, class: usize) -> *mut u8 {
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a free block's first word holds the next one (see `give`); blocks are
            // aligned to SMALL_MIN, enough for a pointer.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let bytes = class_bytes(class);
        if self.end - self.next < bytes {
            self.refill();
            if self.next == 0 {
                return ptr::null_mut();
            }
        }
        let block = self.next as *mut u8;
        self.next += bytes;
        block
    }

    /// Starts a new chunk (whatever was left of the previous one, less than one block, stays
    /// unused), or leaves none (`next` 0) when the system allocator has no memory. Out of
    /// line, so that the common path of `take` stays a few instructions.
    #[cold]
    #[inline(never)]
    fn refill(&mut self) {
        let layout = Layout::from_size_align(CHUNK_BYTES, SMALL_MIN).expect("a valid layout");
        // SAFETY: the layout's size is not zero.
        let chunk = unsafe { System.alloc(layout) };
        self.next = chunk as usize;
        self.end = if chunk.is_null() {
            0
        } else {
            self.next + CHUNK_BYTES
        };
    }

    /// Puts `block` of `class` back on its list.
    ///
    /// # Safety
    ///
    /// `block` came from `take(class)` and is no longer used.
    unsafe fn give(&mut self, block: *mut u8, class: usize) {
        // SAFETY: the block is at least SMALL_MIN bytes, aligned to it, and unused.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }
}

// SAFETY: a small block is at least its layout's size (its class is the power of two at or
// above it) and aligned to SMALL_MIN, which is at least its layout's alignment; no block is
// handed out twice until it is freed; the rest is the system allocator's.
unsafe impl GlobalAlloc for GuestAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: one thread (see `Sync`), and `take` does not reenter this allocator.
            Some(class) => unsafe { (*self.state.get()).take(class) },
            // SAFETY: forwarded as the caller made it.
            None => unsafe { system_alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            // SAFETY: `ptr` came from `alloc` with this layout, so from `take(class)`.
            Some(class) => unsafe { (*self.state.get()).give(ptr, class) },
            // SAFETY: `ptr` came from the system allocator with this layout.
            None => unsafe { system_dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees the new size, rounded to the alignment, fits isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // The block already has room: a string growing within its class stays put.
            (Some(old), Some(new)) if old == new => ptr,
            // SAFETY: both blocks are the system allocator's.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new_layout` is valid (above); `ptr` is live with `layout`.
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both are live, distinct, and hold at least this many bytes.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

/// The system allocator's `alloc`, out of line: inlined, its body would weigh on the small
/// blocks' path, which has to save and restore what it uses.
#[inline(never)]
unsafe fn system_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: as the caller's.
    unsafe { System.alloc(layout) }
}

/// The system allocator's `dealloc`, out of line; see [`system_alloc`].
#[inline(never)]
unsafe fn system_dealloc(ptr: *mut u8, layout: Layout) {
    // SAFETY: as the caller's.
    unsafe { System.dealloc(ptr, layout) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_map_to_the_power_of_two_at_or_above_them() {
        assert_eq!(class_of(layout(0, 1)), Some(0));
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 1)), Some(1));
        assert_eq!(class_of(layout(1024, 4)), Some(6));
        assert_eq!(class_of(layout(1025, 4)), Some(7));
        assert_eq!(class_of(layout(SMALL_MAX, 16)), Some(CLASSES - 1));
        assert_eq!(class_bytes(CLASSES - 1), SMALL_MAX);
    }

    #[test]
    fn large_or_over_aligned_blocks_are_the_system_allocators() {
        assert_eq!(class_of(layout(SMALL_MAX + 1, 1)), None);
        assert_eq!(class_of(layout(64, 32)), None);
    }

    /// Live blocks never overlap, keep what was written to them, and freed blocks are
    /// reused, through alloc, realloc (in place and moving) and dealloc.
    #[test]
    fn live_blocks_are_disjoint_and_keep_their_bytes() {
        let heap = GuestAllocator::new();
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 7u32;
        let mut random = move |below: usize| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 8) as usize % below
        };
        for step in 0..20_000u32 {
            let tag = step as u8;
            match random(4) {
                0 | 1 => {
                    let size = [1, 7, 16, 30, 100, 700, 2048, 5000][random(8)];
                    let align = [1, 2, 8, 16, 64][random(5)];
                    let layout = layout(size, align);
                    let block = unsafe { heap.alloc(layout) };
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0);
                    unsafe { block.write_bytes(tag, size) };
                    live.push((block, layout, tag));
                }
                2 if !live.is_empty() => {
                    let (block, layout, tag) = live.swap_remove(random(live.len()));
                    assert!(unsafe { std::slice::from_raw_parts(block, layout.size()) }
                        .iter()
                        .all(|&byte| byte == tag));
                    unsafe { heap.dealloc(block, layout) };
                }
                3 if !live.is_empty() => {
                    let at = random(live.len());
                    let (block, old, tag) = live[at];
                    let new_size = [3, 20, 33, 900, 3000][random(5)];
                    let moved = unsafe { heap.realloc(block, old, new_size) };
                    assert!(!moved.is_null());
                    let kept = old.size().min(new_size);
                    assert!(unsafe { std::slice::from_raw_parts(moved, kept) }
                        .iter()
                        .all(|&byte| byte == tag));
                    unsafe { moved.write_bytes(tag, new_size) };
                    live[at] = (moved, layout(new_size, old.align()), tag);
                }
                _ => {}
            }
            if step % 1000 == 0 {
                let mut spans: Vec<(usize, usize)> = live
                    .iter()
                    .map(|&(block, layout, _)| (block as usize, block as usize + layout.size()))
                    .collect();
                spans.sort_unstable();
                assert!(spans.windows(2).all(|pair| pair[0].1 <= pair[1].0));
            }
        }
        for (block, layout, _) in live {
            unsafe { heap.dealloc(block, layout) };
        }
    }

    #[test]
    fn a_freed_block_is_the_next_one_of_its_class() {
        let heap = GuestAllocator::new();
        let first = unsafe { heap.alloc(layout(24, 8)) };
        unsafe { heap.dealloc(first, layout(24, 8)) };
        assert_eq!(unsafe { heap.alloc(layout(32, 4)) }, first);
    }
}
