//! The provided-buffer ring (IORING_REGISTER_PBUF_RING) that every connection of a shard
//! receives into: the kernel picks a free buffer when data arrives, so an idle connection holds
//! none (docs/architecture.md, "The engine"). With incremental consumption
//! (IOU_PBUF_RING_INC, Linux 6.12) a buffer serves several completions until it is full, which
//! keeps touched memory small and avoids the re-arm storms of a drained ring.
//!
//! The ring memory and the buffers are allocated once and never move while registered
//! (the kernel holds their addresses).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// One page-aligned allocation, freed on drop.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(size: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(size.max(1), 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size; a null result is handled below.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate the buffer ring",
            ));
        }
        Ok(Region { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// A registered buffer ring of `count` buffers of `size` bytes.
pub(super) struct BufRing {
    ring: Region,
    buffers: Region,
    count: u16,
    size: u32,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    /// Bytes of each buffer already consumed (incremental mode).
    consumed: Vec<u32>,
    /// Whether the kernel consumes buffers incrementally.
    pub(super) incremental: bool,
}

impl BufRing {
    /// Allocates and registers the ring with `ring`, incremental when the kernel accepts it.
    pub(super) fn new(uring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<BufRing> {
        Self::with_mode(uring, group, count, size, true)
    }

    /// Allocates and registers the ring; `incremental` asks for incremental consumption (stream
    /// sockets), which datagram receives must not use: one buffer holds one datagram.
    pub(super) fn with_mode(
        uring: &IoUring,
        group: u16,
        count: u16,
        size: u32,
        incremental: bool,
    ) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::other("buffer count must be a power of two"));
        }
        let ring = Region::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Region::new(usize::from(count) * size as usize)?;
        let mut this = BufRing {
            ring,
            buffers,
            count,
            size,
            tail: 0,
            consumed: vec![0; usize::from(count)],
            incremental,
        };
        let submitter = uring.submitter();
        let flags = if incremental {
            io_uring::types::IOU_PBUF_RING_INC as u16
        } else {
            0
        };
        // SAFETY: the ring memory is page aligned, holds `count` entries, and lives (in `this`)
        // until the ring is unregistered or the io_uring instance is dropped: the driver drops
        // its IoUring before its BufRing.
        let registered = unsafe {
            submitter.register_buf_ring_with_flags(this.ring.ptr as u64, count, group, flags)
        };
        if registered.is_err() && incremental {
            this.incremental = false;
            // SAFETY: as above, without the incremental flag (kernels before 6.12).
            unsafe {
                submitter.register_buf_ring_with_flags(this.ring.ptr as u64, count, group, 0)?
            };
        } else {
            registered?;
        }
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    fn entry(&mut self, index: u16) -> &mut BufRingEntry {
        let i = usize::from(index & (self.count - 1));
        // SAFETY: `i` < count and the ring region holds `count` entries; the kernel only reads
        // entries between its head and our published tail, and this slot is beyond the tail.
        unsafe { &mut *(self.ring.ptr as *mut BufRingEntry).add(i) }
    }

    /// Makes buffer `bid` available to the kernel again (visible after [`BufRing::publish`]).
    pub(super) fn push(&mut self, bid: u16) {
        let addr = self.buffers.ptr as u64 + u64::from(bid) * u64::from(self.size);
        let size = self.size;
        let tail = self.tail;
        let e = self.entry(tail);
        e.set_addr(addr);
        e.set_len(size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        if let Some(c) = self.consumed.get_mut(usize::from(bid)) {
            *c = 0;
        }
    }

    /// Publishes the tail so the kernel sees the pushed buffers.
    pub(super) fn publish(&mut self) {
        // SAFETY: the tail shares the `resv` field of the first entry (io_uring_buf_ring); it is
        // suitably aligned for a u16 and lives as long as the ring region. The kernel reads it
        // concurrently, hence the atomic release store.
        let tail = unsafe {
            AtomicU16::from_ptr(BufRingEntry::tail(self.ring.ptr as *const BufRingEntry) as *mut u16)
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes a completion delivered in buffer `bid`: `len` bytes at the buffer's current
    /// offset. `more` tells (in incremental mode) that the kernel keeps filling this buffer, so it
    /// must not be recycled yet. Returns the data and whether the buffer is now free to recycle.
    pub(super) fn take(&mut self, bid: u16, len: usize, more: bool) -> Option<(&[u8], bool)> {
        if bid >= self.count || len > self.size as usize {
            return None;
        }
        let offset = if self.incremental {
            *self.consumed.get(usize::from(bid))? as usize
        } else {
            0
        };
        if offset + len > self.size as usize {
            return None;
        }
        let recycle = !(self.incremental && more);
        if let Some(c) = self.consumed.get_mut(usize::from(bid)) {
            *c += len as u32;
        }
        let start = usize::from(bid) * self.size as usize + offset;
        // SAFETY: `start + len` lies within buffer `bid` of the buffer region, which the kernel
        // has filled for this completion and will not write again until the buffer is pushed
        // back (in incremental mode it only writes past `offset + len`).
        let data = unsafe { std::slice::from_raw_parts(self.buffers.ptr.add(start), len) };
        Some((data, recycle))
    }

    /// Buffers in the ring.
    pub(super) fn count(&self) -> u16 {
        self.count
    }
}
