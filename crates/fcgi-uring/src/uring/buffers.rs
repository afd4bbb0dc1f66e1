//! The provided-buffer ring: one buffer group of `count` buffers of `size` bytes that multishot
//! receives pick from.
//!
//! Ownership of each buffer alternates between the kernel and us: a buffer is the kernel's from
//! the moment its entry is published in the ring until a completion names its id; it is ours
//! from then until [`BufRing::recycle`] publishes it again. The [`Lent`] token is the proof of
//! "ours": only its holder can read the buffer or give it back, and only once.
//!
//! The kernel consumes published slots in ring order. Two ways to fill them ([`Order`]):
//! - [`Order::Warm`] (single receives): only a window of slots is published ahead of the
//!   kernel, and each is filled with the buffer given back most recently. The kernel then
//!   writes into buffers that are still in the CPU caches, and the receiver reads them there;
//!   filling every slot in turn would cycle the whole pool (16 MiB for 1024 buffers of 16 KiB)
//!   through the caches, and the copies into and out of it would miss. A receive that finds
//!   the window empty ends with ENOBUFS (the data waits in the socket); [`BufRing::ran_dry`]
//!   then doubles the window, up to the whole pool, or to what a bound on its bytes allows
//!   ([`BufRing::bound_window`]: full receives, as in uploads, get fewer buffers).
//! - [`Order::InRing`] (receive bundles): slot `i` always holds buffer `i` (`bid == position %
//!   count`), every buffer is published, and buffers are republished in ring order, a buffer
//!   returned early waiting until the ones before it are back. That is what makes bundles
//!   readable: the kernel consumes consecutive ring slots, and a bundle completion names only
//!   the first buffer, so its buffers are `bid, bid + 1, ...` modulo `count`.

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

/// How buffers are put back in the ring (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// A window of the most recently returned buffers; single receives only.
    Warm,
    /// Every buffer, slot `i` holding buffer `i`; needed by receive bundles.
    InRing,
}

/// Slots [`Order::Warm`] publishes ahead of the kernel at first: 64 buffers of 16 KiB are 1 MiB.
const FIRST_WINDOW: u16 = 64;

/// However full receives are, a bound on the window's bytes leaves it at least this many slots
/// (or the pool, if smaller).
const MIN_WINDOW: u16 = 16;

/// However full receives are, a bound on the window's bytes leaves this many slots per
/// connection receiving (see [`BufRing::count_receiver`]): a multishot receive takes every
/// buffer it can fill in one go, so with one per connection the first ones to run leave none
/// for the rest (64 connections sending 16 KiB bodies then wait a turn once per request: p99
/// 4 ms instead of 1).
const PER_RECEIVER: u16 = 2;

/// Buffers taken between two looks at how much receives fill them (a look counts the
/// connections receiving, so it spans more than one buffer for each of many connections).
const FILL_EPOCH: u32 = 256;

pub(super) struct BufRing {
    // INVARIANT: `entries` points to `count` entries allocated with `entries_layout`
    // (page-aligned, as the kernel requires for a user-allocated buffer ring).
    entries: NonNull<RawEntry>,
    entries_layout: Layout,
    // INVARIANT: `data` points to `data_len` = `count * size` bytes of a private anonymous
    // mapping (zero-filled, resident only once touched) made in `new`.
    data: NonNull<u8>,
    data_len: usize,
    count: u16,
    size: u32,
    /// Our tail: entries below it are written; published to the kernel by [`BufRing::publish`].
    /// The next buffer to republish is `tail % count`.
    tail: u16,
    /// INVARIANT: `lent[bid]` is true exactly while buffer `bid` is ours (not in the ring).
    lent: Vec<bool>,
    order: Order,
    /// Buffers taken from completions, as a ring position: the kernel has consumed at least the
    /// slots before it, so `tail - consumed` bounds the slots published and not yet consumed.
    consumed: u16,
    /// [`Order::Warm`]: the buffers given back and not yet republished, the most recent last.
    free: Vec<u16>,
    /// [`Order::Warm`]: how many slots to keep published ahead of `consumed` (1..=`widest`).
    window: u16,
    /// [`Order::Warm`]: the bytes the window may hold at the receives' mean fill (`u64::MAX`:
    /// no bound), see [`BufRing::bound_window`].
    window_bytes: u64,
    /// [`Order::Warm`]: the widest window at the receives' mean fill (see `window_bytes`).
    widest: u16,
    /// [`Order::Warm`]: bytes received into, and buffers taken by, single receives since the
    /// last look at the fill ([`FILL_EPOCH`]).
    fill_bytes: u64,
    fill_taken: u32,
    /// [`Order::Warm`]: connections whose receives took a buffer or found none since the last
    /// look at the fill, the looks so far (from 1), and the connection (token) last counted in
    /// each slot with the look it was counted in (see [`BufRing::count_receiver`]).
    fill_receivers: u16,
    fill_epoch: u32,
    receivers: Vec<(u64, u32)>,
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
    /// Allocates `count` (a power of two, <= 32768) buffers of `size` bytes and publishes them
    /// (with [`Order::Warm`], the first window of them).
    pub(super) fn new(count: u16, size: u32, order: Order) -> io::Result<BufRing> {
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
        // SAFETY: `entries_layout` has a non-zero size (count >= 1, 16 bytes per entry).
        let entries: NonNull<RawEntry> =
            NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) }.cast())
                .ok_or(io::ErrorKind::OutOfMemory)?;
        let data = match map_pool(data_len) {
            Ok(data) => data,
            Err(err) => {
                // SAFETY: `entries` was allocated just above with `entries_layout`; the kernel
                // has not seen it (nothing is registered yet).
                unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
                return Err(err);
            }
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            data,
            data_len,
            count,
            size,
            tail: 0,
            lent: vec![true; usize::from(count)],
            returned: vec![false; usize::from(count)],
            taken_total: 0,
            returned_total: 0,
            registered: false,
            leaked: false,
            order,
            consumed: 0,
            free: Vec::new(),
            window: count.min(FIRST_WINDOW),
            window_bytes: u64::MAX,
            widest: count,
            fill_bytes: 0,
            fill_taken: 0,
            fill_receivers: 0,
            fill_epoch: 1,
            receivers: Vec::new(),
        };
        match order {
            Order::InRing => ring.recycle(Lent { bid: 0, n: count }),
            // Popped from the end: buffer 0 is published first.
            Order::Warm => ring.free = (0..count).rev().collect(),
        }
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
        // Only ring order makes a bundle's buffers consecutive.
        let most = match self.order {
            Order::InRing => usize::from(self.count),
            Order::Warm => 1,
        };
        if n == 0 || n > most || first >= self.count {
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
        self.consumed = self.consumed.wrapping_add(n as u16);
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
        // mapping, which is zero-filled (initialised) and lives as long as `self`. Buffer `bid` is
        // ours (`lent`): the kernel does not write it while it is out of the ring. Callers reach
        // this only through a `Lent` covering `bid`, which `recycle` consumes, and which is
        // borrowed for the slice's lifetime.
        Some(unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset), len) })
    }

    /// Gives a buffer back. It is republished (visible to the kernel after
    /// [`BufRing::publish`]): with [`Order::InRing`] once every buffer before it in ring order is
    /// back too; with [`Order::Warm`] by the next publish that has room in the window for it,
    /// before the buffers given back earlier.
    pub(super) fn recycle(&mut self, buf: Lent) {
        let mask = self.count - 1;
        self.returned_total += u64::from(buf.n);
        if self.order == Order::Warm {
            // Still lent until published; `Lent` covers one buffer in this order.
            self.free.push(buf.bid);
            return;
        }
        for i in 0..buf.n {
            self.returned[usize::from(buf.bid.wrapping_add(i) & mask)] = true;
        }
        while self.returned[usize::from(self.tail & mask)] {
            let bid = self.tail & mask;
            self.write_entry(bid);
            self.returned[usize::from(bid)] = false;
            self.lent[usize::from(bid)] = false;
            self.tail = self.tail.wrapping_add(1);
        }
    }

    /// A receive of connection `token` found no buffer in the ring: with [`Order::Warm`],
    /// publish twice as many ahead from now on, up to the widest window the receives' fill
    /// allows (see [`BufRing::filled`]). Call [`BufRing::publish`] after it.
    pub(super) fn ran_dry(&mut self, token: u64) {
        if self.order == Order::Warm {
            self.window = self.window.saturating_mul(2).min(self.widest);
        }
        self.count_receiver(token);
    }

    /// With [`Order::Warm`], bounds the bytes the window cycles through: the published slots
    /// are consumed in turn, so every buffer of the window is written by a receive (and read by
    /// the core) once per round, and a window of full buffers larger than the CPU caches makes
    /// both copies miss. Every [`FILL_EPOCH`] buffers taken, the widest window becomes what
    /// holds `bytes` at the receives' mean fill (at least [`MIN_WINDOW`], and [`PER_RECEIVER`]
    /// for each connection receiving, see [`BufRing::count_receiver`]; at most the pool), and
    /// a wider one shrinks to it: small receives (a GET's params) may use many buffers, full
    /// ones (an upload) only as many as stay in the caches, the rest of the data waiting in
    /// the socket. 0: no bound (as a new ring has).
    pub(super) fn bound_window(&mut self, bytes: u64) {
        self.window_bytes = if bytes == 0 { u64::MAX } else { bytes };
        if self.bounded() {
            self.receivers = vec![(0, 0); usize::from(self.count)];
        }
    }

    /// Whether the window's bytes are bounded (then receives are looked at).
    fn bounded(&self) -> bool {
        self.order == Order::Warm && self.window_bytes != u64::MAX
    }

    /// Connection `token` received, or tried to: the window is not bounded below
    /// [`PER_RECEIVER`] buffers for each connection seen receiving in a look at the fill, so
    /// that connections receiving at once find buffers (one that finds none waits a loop
    /// turn). Connections are told apart by a table of `count` slots indexed by the token's low
    /// bits (a connection's index); two sharing a slot may both count more than once, which
    /// only widens the bound. Nothing to count without a bound (the table is empty then).
    fn count_receiver(&mut self, token: u64) {
        let index = token as usize & usize::from(self.count - 1);
        let Some(slot) = self.receivers.get_mut(index) else {
            return;
        };
        if *slot != (token, self.fill_epoch) {
            *slot = (token, self.fill_epoch);
            self.fill_receivers = self.fill_receivers.saturating_add(1);
        }
    }

    /// A single receive of connection `token` wrote `len` bytes into the buffer it took (see
    /// [`BufRing::bound_window`]).
    pub(super) fn filled(&mut self, token: u64, len: usize) {
        if !self.bounded() {
            return;
        }
        self.count_receiver(token);
        self.fill_bytes += len as u64;
        self.fill_taken += 1;
        if self.fill_taken < FILL_EPOCH {
            return;
        }
        let mean = (self.fill_bytes / u64::from(self.fill_taken)).max(1);
        let fits = u16::try_from(self.window_bytes / mean).unwrap_or(u16::MAX);
        self.widest = fits
            .max(MIN_WINDOW)
            .max(self.fill_receivers.saturating_mul(PER_RECEIVER))
            .min(self.count);
        self.window = self.window.min(self.widest);
        self.fill_bytes = 0;
        self.fill_taken = 0;
        self.fill_receivers = 0;
        self.fill_epoch = self.fill_epoch.wrapping_add(1).max(1);
    }

    /// Slots published and not yet consumed, as far as completions tell (the kernel may have
    /// consumed more): never more than `count`, see `publish`.
    fn ahead(&self) -> u16 {
        self.tail.wrapping_sub(self.consumed)
    }

    /// Writes buffer `bid` into the slot at ring position `tail`, which the kernel has
    /// consumed: with [`Order::InRing`] that slot is `bid`'s own. The kernel may have shortened
    /// the entry's `len` when it used the slot, so every field is written again.
    fn write_entry(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `index < count`, so the entry lies inside the entries allocation. Ring
        // position `tail` is beyond the published tail, and the slot's previous use (position
        // `tail - count`) was consumed: fewer than `count` slots are ever published and not
        // consumed (`ahead() < count` before each write, and the kernel consumes in order), so
        // the kernel is not reading it. We write the fields one by one through raw pointers and
        // never touch `resv`: in entry 0 that field is the tail, which the kernel reads.
        unsafe {
            let entry = self.entries.as_ptr().add(index);
            ptr::addr_of_mut!((*entry).addr).write(addr);
            ptr::addr_of_mut!((*entry).len).write(self.size);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
    }

    /// Makes every recycled buffer visible to the kernel; with [`Order::Warm`], first fills
    /// the window with the buffers given back most recently.
    pub(super) fn publish(&mut self) {
        if self.order == Order::Warm {
            while self.ahead() < self.window {
                let Some(bid) = self.free.pop() else { break };
                self.write_entry(bid);
                self.lent[usize::from(bid)] = false;
                self.tail = self.tail.wrapping_add(1);
            }
        }
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
        // SAFETY: the entries were allocated in `new` with this layout, and the pool mapped
        // there with this length. The owning Ring unregisters the group after reaping every
        // operation (or closes the io_uring first) and calls `leak` when it cannot, so the
        // kernel no longer reads or writes either. Nothing borrows the pool: every slice of it
        // borrows `self`.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            // An error would leave the mapping in place: a leak, not a fault.
            let _ = rustix::mm::munmap(self.data.as_ptr().cast(), self.data_len);
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

/// `len` (> 0) bytes of fresh private anonymous memory for the pool: zero-filled, and resident
/// only once touched, so buffers that [`Order::Warm`] never publishes cost no memory.
fn map_pool(len: usize) -> io::Result<NonNull<u8>> {
    use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
    // SAFETY: a new mapping at an address the kernel chooses (null hint, no MAP_FIXED): it
    // replaces nothing and aliases no other memory.
    let ptr = unsafe {
        mmap_anonymous(
            ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }?;
    NonNull::new(ptr.cast()).ok_or_else(|| io::ErrorKind::OutOfMemory.into())
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
        let ring = BufRing::new(8, 100, Order::InRing).expect("alloc");
        assert_eq!(ring.entries.as_ptr() as usize % page_size(), 0);
        assert_eq!(ring.data.as_ptr() as usize % page_size(), 0);
        assert_eq!(ring.available(), 8);
        assert_eq!(ring.tail, 8);
    }

    #[test]
    fn take_and_recycle_track_ownership() {
        let mut ring = BufRing::new(4, 64, Order::InRing).expect("alloc");
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
        let mut ring = BufRing::new(4, 64, Order::InRing).expect("alloc");
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
        let mut ring = BufRing::new(4, 64, Order::InRing).expect("alloc");
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

    /// The buffer ids in the published slots, oldest first.
    fn published(ring: &BufRing) -> Vec<u16> {
        (ring.consumed..ring.tail)
            .map(|pos| {
                let index = usize::from(pos & (ring.count - 1));
                // SAFETY: `index < count`, inside the entries allocation; no kernel reads this
                // ring (it is not registered).
                unsafe { (*ring.entries.as_ptr().add(index)).bid }
            })
            .collect()
    }

    #[test]
    fn warm_order_publishes_a_window_of_the_latest_buffers() {
        let mut ring = BufRing::new(128, 64, Order::Warm).expect("alloc");
        assert_eq!(ring.available(), 64, "the first window");
        assert_eq!(published(&ring), (0..64).collect::<Vec<u16>>());
        // The kernel fills 0, 1, 2; they come back 1, 0, 2.
        let bufs: Vec<Lent> = (0..3).map(|bid| ring.take(bid).expect("in ring")).collect();
        assert_eq!(ring.available(), 61);
        let [a, b, c] = <[Lent; 3]>::try_from(bufs).expect("three");
        ring.recycle(b);
        ring.recycle(a);
        ring.recycle(c);
        assert_eq!(ring.totals(), (3, 3));
        assert_eq!(ring.available(), 61, "given back, not yet published");
        ring.publish();
        assert_eq!(ring.available(), 64);
        // Behind the 61 still published: the most recently given back first.
        assert_eq!(published(&ring)[61..], [2, 0, 1]);
        // Buffers 64.. were never published: the pool beyond the window stays cold.
        assert!(ring.take(64).is_none());
    }

    #[test]
    fn warm_order_takes_single_buffers_only() {
        let mut ring = BufRing::new(8, 64, Order::Warm).expect("alloc");
        assert!(ring.take_bundle(0, 2).is_none());
        let buf = ring.take(0).expect("in ring");
        assert!(ring.take(0).is_none(), "taken twice");
        ring.recycle(buf);
        assert!(ring.take(0).is_none(), "given back but not published");
        ring.publish();
        assert!(ring.take(0).is_some());
    }

    #[test]
    fn a_dry_ring_widens_the_window_up_to_the_pool() {
        let mut ring = BufRing::new(256, 64, Order::Warm).expect("alloc");
        // The kernel takes the whole window; a receive then finds none.
        let taken: Vec<Lent> = (0..64)
            .map(|bid| ring.take(bid).expect("in ring"))
            .collect();
        assert_eq!(ring.available(), 0);
        ring.ran_dry(7);
        ring.publish();
        assert_eq!(
            ring.available(),
            128,
            "64 unused buffers and the window doubled"
        );
        for buf in taken {
            ring.recycle(buf);
        }
        ring.publish();
        assert_eq!(ring.available(), 128, "the window is full: the 64 wait");
        for _ in 0..4 {
            ring.ran_dry(7);
        }
        ring.publish();
        assert_eq!(ring.available(), 256, "never more than the pool");
        assert_eq!(ring.window, 256);
        // Every slot published once: the tail went round exactly once.
        assert_eq!(ring.ahead(), 256);
    }

    /// The kernel fills buffer after buffer of the window with `len` bytes for connection
    /// `token`, and each is given back and republished at once.
    fn receive_full(ring: &mut BufRing, buffers: usize, len: usize, token: u64) {
        for _ in 0..buffers {
            let bid = published(ring)[0];
            let buf = ring.take(bid).expect("published");
            ring.filled(token, len);
            ring.recycle(buf);
            ring.publish();
        }
    }

    #[test]
    fn full_receives_shrink_a_bounded_window_to_its_bytes() {
        let mut ring = BufRing::new(256, 16 * 1024, Order::Warm).expect("alloc");
        ring.bound_window(512 * 1024);
        assert_eq!(ring.window, 64, "the first window");
        // One connection uploading: full 16 KiB receives.
        receive_full(&mut ring, FILL_EPOCH as usize - 1, 16 * 1024, 7);
        assert_eq!(ring.window, 64, "not before a whole look at the fill");
        receive_full(&mut ring, 1, 16 * 1024, 7);
        assert_eq!((ring.widest, ring.window), (32, 32), "512 KiB / 16 KiB");
        assert_eq!(
            ring.ahead(),
            63,
            "published slots are consumed before the window shrinks"
        );
        for _ in 0..4 {
            ring.ran_dry(7);
        }
        assert_eq!(ring.window, 32, "a dry ring widens it only up to the bound");
        // Half-full receives: twice as many buffers hold the bytes.
        receive_full(&mut ring, FILL_EPOCH as usize, 8 * 1024, 7);
        assert_eq!(ring.widest, 64);
        ring.ran_dry(7);
        assert_eq!(ring.window, 64);
        // Tiny receives (GETs): the whole pool, as without a bound.
        receive_full(&mut ring, FILL_EPOCH as usize, 100, 7);
        assert_eq!(ring.widest, 256);
        // Receives that fill buffers larger than the bound still get MIN_WINDOW.
        let mut big = BufRing::new(64, 1 << 20, Order::Warm).expect("alloc");
        big.bound_window(512 * 1024);
        receive_full(&mut big, FILL_EPOCH as usize, 1 << 20, 7);
        assert_eq!(big.widest, MIN_WINDOW);
    }

    #[test]
    fn a_bounded_window_keeps_two_buffers_per_receiving_connection() {
        let mut ring = BufRing::new(256, 16 * 1024, Order::Warm).expect("alloc");
        ring.bound_window(256 * 1024);
        // 50 connections receiving full buffers in turn; the same ones again count once.
        for i in 0..u64::from(FILL_EPOCH) {
            let index = i % 50;
            receive_full(&mut ring, 1, 16 * 1024, (1 << 32) | index);
        }
        assert_eq!(
            ring.widest, 100,
            "2 x 50 connections, above 256 KiB / 16 KiB = 16"
        );
        // The next look sees one connection only: the bytes bound again.
        receive_full(&mut ring, FILL_EPOCH as usize, 16 * 1024, 3);
        assert_eq!(ring.widest, 16);
    }

    #[test]
    fn an_unbounded_window_ignores_the_fill() {
        let mut ring = BufRing::new(256, 16 * 1024, Order::Warm).expect("alloc");
        ring.bound_window(0);
        receive_full(&mut ring, 2 * FILL_EPOCH as usize, 16 * 1024, 7);
        assert_eq!((ring.widest, ring.window), (256, 64));
        let mut bundles = BufRing::new(256, 16 * 1024, Order::InRing).expect("alloc");
        bundles.bound_window(16 * 1024);
        for _ in 0..FILL_EPOCH {
            bundles.filled(7, 16 * 1024);
        }
        assert_eq!(bundles.widest, 256, "ring order publishes every buffer");
    }

    /// How many pages of the pool are resident (mincore).
    fn resident_pages(ring: &BufRing) -> usize {
        let pages = ring.data_len.div_ceil(page_size());
        let mut vec = vec![0u8; pages];
        // SAFETY: the pool is one mapping of `data_len` bytes starting at a page boundary, and
        // `vec` has one byte per page of it.
        let rc =
            unsafe { libc::mincore(ring.data.as_ptr().cast(), ring.data_len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|v| **v & 1 != 0).count()
    }

    #[test]
    fn the_pool_is_resident_only_where_buffers_were_written() {
        let mut ring = BufRing::new(1024, 16 * 1024, Order::Warm).expect("alloc");
        assert_eq!(resident_pages(&ring), 0, "16 MiB reserved, none touched");
        // What a receive into buffer 0 does: the kernel writes its first bytes.
        let buf = ring.take(0).expect("published");
        // SAFETY: buffer 0 is ours (`buf`), inside the pool; nothing else reads or writes it.
        unsafe { ring.data.as_ptr().write(1) };
        assert_eq!(resident_pages(&ring), 1);
        assert_eq!(ring.bytes(&buf, 1), Some(&[1u8][..]));
        ring.recycle(buf);
    }

    #[test]
    fn in_ring_order_ignores_a_dry_ring() {
        let mut ring = BufRing::new(4, 64, Order::InRing).expect("alloc");
        ring.ran_dry(7);
        ring.publish();
        assert_eq!((ring.tail, ring.available()), (4, 4));
    }

    #[test]
    fn rejects_bad_sizes() {
        for order in [Order::InRing, Order::Warm] {
            assert!(BufRing::new(3, 64, order).is_err());
            assert!(BufRing::new(4, 0, order).is_err());
        }
    }
}
