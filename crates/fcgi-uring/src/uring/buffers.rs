//! The provided-buffer ring: one buffer group of `count` buffers of `size` bytes that multishot
//! receives pick from.
//!
//! Ownership of each buffer alternates between the kernel and us: a buffer is the kernel's from
//! the moment its entry is published in the ring until a completion names its id; it is ours
//! from then until [`BufRing::recycle`] publishes it again. The [`Lent`] token is the proof of
//! "ours": only its holder can read the buffer or give it back, and only once.
//!
//! Ring slot `i` always holds buffer `i` (`bid == position % count`): buffers are republished in
//! ring order, a buffer returned early waits until the ones before it are back. That is what
//! makes receive bundles readable: the kernel consumes consecutive ring slots, and a bundle
//! completion names only the first buffer, so its buffers are `bid, bid + 1, ...` modulo `count`.

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

/// Buffers the kernel handed back in a completion: ours until recycled. A single receive
/// hands back one buffer, a bundle a run of `n` consecutive ones (modulo the ring size).
#[derive(Debug)]
pub(super) struct Lent {
    // INVARIANT: buffers `bid, bid + 1, ... bid + n - 1` (modulo `count`) are ours, 1 <= n <= count.
    bid: u16,
    n: u16,
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
    /// The next buffer to republish is `tail % count`.
    tail: u16,
    /// INVARIANT: `lent[bid]` is true exactly while buffer `bid` is ours (not in the ring).
    lent: Vec<bool>,
    /// `returned[bid]`: given back by a [`Lent`], waiting for the buffers before it in ring
    /// order (still `lent` until then).
    returned: Vec<bool>,
    /// Buffers taken from completions, and given back, since creation.
    taken_total: u64,
    returned_total: u64,
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
            returned: vec![false; usize::from(count)],
            taken_total: 0,
            returned_total: 0,
            registered: false,
            leaked: false,
        };
        ring.recycle(Lent { bid: 0, n: count });
        ring.returned_total = 0;
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
    #[cfg(test)]
    pub(super) fn take(&mut self, bid: u16) -> Option<Lent> {
        self.take_bundle(bid, 1)
    }

    /// Takes back the `n` buffers a bundle completion consumed: `first` and the ones after it
    /// in ring order (which are `first + 1, ...` modulo `count`, see the module doc). `None`,
    /// and nothing taken, if any of them is not in the ring (a kernel bug, or `n` too large).
    pub(super) fn take_bundle(&mut self, first: u16, n: usize) -> Option<Lent> {
        if n == 0 || n > usize::from(self.count) || first >= self.count {
            return None;
        }
        let mask = self.count - 1;
        let bids = (0..n as u16).map(|i| first.wrapping_add(i) & mask);
        if bids.clone().any(|bid| self.lent[usize::from(bid)]) {
            return None;
        }
        for bid in bids {
            self.lent[usize::from(bid)] = true;
        }
        self.taken_total += n as u64;
        Some(Lent {
            bid: first,
            n: n as u16,
        })
    }

    /// How many buffers `buf` holds.
    pub(super) fn lent_count(buf: &Lent) -> usize {
        usize::from(buf.n)
    }

    /// Bytes per buffer.
    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// Buffers taken from completions and given back, since creation (equal when every
    /// buffer the kernel handed us came back).
    pub(super) fn totals(&self) -> (u64, u64) {
        (self.taken_total, self.returned_total)
    }

    /// The first `len` bytes of the first buffer of `buf`; `None` if `len` exceeds the buffer
    /// size.
    pub(super) fn bytes(&self, buf: &Lent, len: usize) -> Option<&[u8]> {
        self.buffer(buf.bid, len)
    }

    /// The `len` bytes a bundle received into `buf`, buffer by buffer (each full but the last).
    /// `None` if `len` does not fit in `buf`'s buffers.
    pub(super) fn chunks<'a>(&'a self, buf: &'a Lent, len: usize) -> Option<Chunks<'a>> {
        let size = self.size as usize;
        (len <= usize::from(buf.n) * size).then_some(Chunks {
            ring: self,
            buf,
            index: 0,
            left: len,
        })
    }

    /// The first `len` bytes of buffer `bid`, which must be ours.
    fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if len > self.size as usize || bid >= self.count || !self.lent[usize::from(bid)] {
            return None;
        }
        let offset = usize::from(bid) * self.size as usize;
        // SAFETY: `bid < count` and `len <= size`, so the range lies inside the pool
        // allocation, which is zero-initialised and lives as long as `self`. Buffer `bid` is
        // ours (`lent`): the kernel does not write it while it is out of the ring. Callers reach
        // this only through a `Lent` covering `bid`, which `recycle` consumes, and which is
        // borrowed for the slice's lifetime.
        Some(unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset), len) })
    }

    /// Gives a buffer back. It is republished (visible to the kernel after
    /// [`BufRing::publish`]) once every buffer before it in ring order is back too.
    pub(super) fn recycle(&mut self, buf: Lent) {
        let mask = self.count - 1;
        for i in 0..buf.n {
            self.returned[usize::from(buf.bid.wrapping_add(i) & mask)] = true;
        }
        self.returned_total += u64::from(buf.n);
        while self.returned[usize::from(self.tail & mask)] {
            let bid = self.tail & mask;
            self.write_entry(bid);
            self.returned[usize::from(bid)] = false;
            self.lent[usize::from(bid)] = false;
            self.tail = self.tail.wrapping_add(1);
        }
    }

    /// (Re)writes slot `bid`, which holds buffer `bid`. The kernel may have shortened the entry's
    /// `len` when it used the buffer, so every field is written again.
    fn write_entry(&mut self, bid: u16) {
        let index = usize::from(bid);
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `bid < count`, so the entry lies inside the entries allocation. Slot `bid` is
        // at ring position `tail`, beyond the published tail (the buffer it held was consumed
        // by the kernel and is ours), so the kernel is not reading it. We write the fields one
        // by one through raw pointers and never touch `resv`: in entry 0 that field is the
        // tail, which the kernel reads.
        unsafe {
            let entry = self.entries.as_ptr().add(index);
            ptr::addr_of_mut!((*entry).addr).write(addr);
            ptr::addr_of_mut!((*entry).len).write(self.size);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
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

/// The buffers of a bundle, in order (see [`BufRing::chunks`]).
pub(super) struct Chunks<'a> {
    ring: &'a BufRing,
    buf: &'a Lent,
    index: u16,
    left: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 || self.index >= self.buf.n {
            return None;
        }
        let len = self.left.min(self.ring.size as usize);
        let bid = self.buf.bid.wrapping_add(self.index) & (self.ring.count - 1);
        self.index += 1;
        self.left -= len;
        self.ring.buffer(bid, len)
    }
}

pub(super) fn page_size() -> usize {
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
        let buf = ring.take(0).expect("in ring");
        assert!(ring.take(0).is_none(), "taken twice");
        assert!(ring.take(4).is_none(), "out of range");
        assert_eq!(ring.bytes(&buf, 64).map(<[u8]>::len), Some(64));
        assert!(ring.bytes(&buf, 65).is_none());
        assert_eq!(ring.available(), 3);
        ring.recycle(buf);
        ring.publish();
        assert_eq!(ring.available(), 4);
        assert!(ring.take(0).is_some());
    }

    #[test]
    fn buffers_are_republished_in_ring_order() {
        let mut ring = BufRing::new(4, 64).expect("alloc");
        // The kernel consumed slots 0..3 (buffers 0, 1, 2).
        let a = ring.take(0).expect("0");
        let b = ring.take(1).expect("1");
        let c = ring.take(2).expect("2");
        assert_eq!(ring.totals(), (3, 0));
        // Buffer 2 back first: it waits for 0 and 1.
        ring.recycle(c);
        assert_eq!((ring.tail, ring.available()), (4, 1));
        ring.recycle(a);
        assert_eq!((ring.tail, ring.available()), (5, 2));
        ring.recycle(b);
        assert_eq!((ring.tail, ring.available()), (7, 4));
        assert_eq!(ring.totals(), (3, 3));
    }

    #[test]
    fn bundles_wrap_around_the_ring() {
        let mut ring = BufRing::new(4, 64).expect("alloc");
        let bufs = ring.take_bundle(3, 3).expect("3, 0, 1");
        let starts: Vec<usize> = ring
            .chunks(&bufs, 64 * 2 + 10)
            .expect("fits")
            .map(|c| c.as_ptr() as usize - ring.data.as_ptr() as usize)
            .collect();
        assert_eq!(starts, [3 * 64, 0, 64], "buffers 3, 0, 1 in that order");
        let lens: Vec<usize> = ring.chunks(&bufs, 130).unwrap().map(<[u8]>::len).collect();
        assert_eq!(lens, [64, 64, 2]);
        assert!(ring.chunks(&bufs, 64 * 3 + 1).is_none());
        assert!(ring.take_bundle(2, 2).is_none(), "3 is out already");
        assert!(ring.take(2).is_some(), "a refused bundle takes nothing");
        assert!(ring.take_bundle(0, 5).is_none(), "more than the ring");
        assert!(ring.take_bundle(4, 1).is_none(), "out of range");
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(BufRing::new(3, 64).is_err());
        assert!(BufRing::new(4, 0).is_err());
    }
}
