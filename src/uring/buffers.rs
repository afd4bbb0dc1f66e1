//! The provided-buffer ring: one buffer group of `count` buffers of `size` bytes that multishot
//! receives pick from.
//!
//! Ownership of each buffer alternates between the kernel and us: a buffer is the kernel's from
//! the moment its entry is published in the ring until a completion names its id; it is ours
//! from then until [`BufRing::recycle`] publishes it again. The [`Lent`] token is the proof of
//! "ours": only its holder can read the buffer or give it back, and only once.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The buffer group id of the ring's only group.
pub(super) const BUF_GROUP: u16 = 0;

/// Mirror of the kernel's `struct io_uring_buf`. The ring's tail is the `resv` field of entry 0.
#[repr(C)]
struct RawEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawEntry>() == std::mem::size_of::<BufRingEntry>());
const _: () = assert!(std::mem::size_of::<RawEntry>() == 16);

/// A buffer the kernel handed back in a completion: ours until recycled.
#[derive(Debug)]
pub(super) struct Lent {
    bid: u16,
}

pub(super) struct BufRing {
    // INVARIANT: `entries` points to `count` entries allocated with `entries_layout`
    // (page-aligned, as the kernel requires for a user-allocated buffer ring).
    entries: NonNull<RawEntry>,
    entries_layout: Layout,
    // INVARIANT: `data` points to `count * size` bytes allocated (zeroed) with `data_layout`.
    data: NonNull<u8>,
    data_layout: Layout,
    count: u16,
    size: u32,
    /// Our tail: entries below it are written; published to the kernel by [`BufRing::publish`].
    tail: u16,
    /// INVARIANT: `lent[bid]` is true exactly while buffer `bid` is ours (not in the ring).
    lent: Vec<bool>,
    registered: bool,
    /// Set when the memory must never be freed (the kernel may still use it).
    leaked: bool,
}

impl BufRing {
    /// Allocates `count` (a power of two, <= 32768) buffers of `size` bytes, all in the ring.
    pub(super) fn new(count: u16, size: u32) -> io::Result<BufRing> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        if !count.is_power_of_two() || size == 0 {
            return Err(invalid(
                "buffer ring needs a power-of-two count and a non-zero size",
            ));
        }
        let page = page_size();
        let entries_layout =
            Layout::from_size_align(usize::from(count) * std::mem::size_of::<RawEntry>(), page)
                .map_err(|_| invalid("buffer ring layout"))?;
        let data_len = usize::from(count)
            .checked_mul(usize::try_from(size).map_err(|_| invalid("buffer size"))?)
            .ok_or_else(|| invalid("buffer pool size overflows"))?;
        let data_layout = Layout::from_size_align(data_len, page)
            .map_err(|_| invalid("buffer pool too large"))?;

        // SAFETY: `entries_layout` has a non-zero size (count >= 1, 16 bytes per entry).
        let entries: NonNull<RawEntry> =
            NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) }.cast())
                .ok_or(io::ErrorKind::OutOfMemory)?;
        // SAFETY: `data_layout` has a non-zero size (count >= 1, size >= 1).
        let Some(data) = NonNull::new(unsafe { alloc::alloc_zeroed(data_layout) }) else {
            // SAFETY: `entries` was allocated just above with `entries_layout`; the kernel has
            // not seen it (nothing is registered yet).
            unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            data,
            data_layout,
            count,
            size,
            tail: 0,
            lent: vec![true; usize::from(count)],
            registered: false,
            leaked: false,
        };
        for bid in 0..count {
            ring.recycle(Lent { bid });
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring as buffer group [`BUF_GROUP`] of `submitter`'s io_uring.
    pub(super) fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the entries stay allocated and unmoved for as long as they are registered: the
        // Ring unregisters the group (or closes the io_uring) before this BufRing frees them,
        // and leaks them instead if that cannot be done safely (see `leak`).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                BUF_GROUP,
                0,
            )
        }?;
        self.registered = true;
        Ok(())
    }

    /// Unregisters the group; afterwards the kernel no longer reads the ring.
    pub(super) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(BUF_GROUP)?;
            self.registered = false;
        }
        Ok(())
    }

    /// Takes back buffer `bid` that a completion named. `None` for an id out of range or one
    /// that is already ours (a kernel bug: never read memory the kernel may be writing).
    pub(super) fn take(&mut self, bid: u16) -> Option<Lent> {
        let lent = self.lent.get_mut(usize::from(bid))?;
        if *lent {
            return None;
        }
        *lent = true;
        Some(Lent { bid })
    }

    /// The first `len` bytes of a buffer we hold; `None` if `len` exceeds the buffer size.
    pub(super) fn bytes(&self, buf: &Lent, len: usize) -> Option<&[u8]> {
        if len > self.size as usize {
            return None;
        }
        let offset = usize::from(buf.bid) * self.size as usize;
        // SAFETY: `bid < count` (checked in `take`) and `len <= size`, so the range lies inside
        // the pool allocation, which is zero-initialised and lives as long as `self`. The kernel
        // does not write this buffer while it is lent to us (it is not in the ring), and the
        // `Lent` token, which `recycle` consumes, is borrowed for the slice's lifetime.
        Some(unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset), len) })
    }

    /// Puts a buffer back into the ring (visible to the kernel after [`BufRing::publish`]).
    pub(super) fn recycle(&mut self, buf: Lent) {
        let bid = buf.bid;
        let mask = self.count - 1;
        let index = usize::from(self.tail & mask);
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `index < count`, so the entry lies inside the entries allocation. The kernel
        // only reads entries between its head and the published tail; this slot is beyond the
        // published tail (at most `count` buffers are in the ring, and `bid` is not one of them),
        // so the kernel is not reading it. We write the fields one by one through raw pointers
        // and never touch `resv`: in entry 0 that field is the tail, which the kernel reads.
        unsafe {
            let entry = self.entries.as_ptr().add(index);
            ptr::addr_of_mut!((*entry).addr).write(addr);
            ptr::addr_of_mut!((*entry).len).write(self.size);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.lent[usize::from(bid)] = false;
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub(super) fn publish(&mut self) {
        // SAFETY: the tail is the `resv` field of entry 0, inside the entries allocation and
        // 2-byte aligned; the kernel reads it concurrently, so we access it only atomically
        // (AtomicU16 has the layout of u16). The Release store orders the entry writes of
        // `recycle` before the tail that exposes them.
        let tail = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*self.entries.as_ptr()).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    /// How many buffers are in the ring (not lent to us).
    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.lent.iter().filter(|lent| !**lent).count()
    }

    /// Never free the memory: the kernel may still use it.
    pub(super) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: both blocks were allocated in `new` with these layouts. The owning Ring
        // unregisters the group after reaping every operation (or closes the io_uring first)
        // and calls `leak` when it cannot, so the kernel no longer reads or writes them.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant; it takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_page_aligned_and_full() {
        let ring = BufRing::new(8, 100).expect("alloc");
        assert_eq!(ring.entries.as_ptr() as usize % page_size(), 0);
        assert_eq!(ring.data.as_ptr() as usize % page_size(), 0);
        assert_eq!(ring.available(), 8);
        assert_eq!(ring.tail, 8);
    }

    #[test]
    fn take_and_recycle_track_ownership() {
        let mut ring = BufRing::new(4, 64).expect("alloc");
        let buf = ring.take(2).expect("in ring");
        assert!(ring.take(2).is_none(), "taken twice");
        assert!(ring.take(4).is_none(), "out of range");
        assert_eq!(ring.bytes(&buf, 64).map(<[u8]>::len), Some(64));
        assert!(ring.bytes(&buf, 65).is_none());
        assert_eq!(ring.available(), 3);
        ring.recycle(buf);
        ring.publish();
        assert_eq!(ring.available(), 4);
        assert!(ring.take(2).is_some());
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(BufRing::new(3, 64).is_err());
        assert!(BufRing::new(4, 0).is_err());
    }
}
