//! Registered (fixed) send buffers: `count` buffers of `size` bytes in one page-aligned block,
//! registered with IORING_REGISTER_BUFFERS, sent from with WRITE_FIXED.
//!
//! A buffer is either free (in the free list) or owned by one [`FixedBuf`]: the caller's while it
//! fills or holds it, the op table's while a send from it is in flight (so it cannot be refilled
//! until the kernel is done reading it). Dropping a [`FixedBuf`] puts its buffer back in the free
//! list; it holds no pointer, so that is safe whenever it happens, also after the pool is gone.
//!
//! Each pool has an id unique in the process, and every [`FixedBuf`] records the pool it came
//! from: a ring sends only from its own pool ([`FixedBuf::pool`]), since another ring's
//! registered buffer index names different memory.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::Submitter;

/// One registered buffer holding `len` bytes of output. Not `Clone`: one owner at a time.
#[derive(Debug)]
pub struct FixedBuf {
    index: u16,
    len: usize,
    /// The id of the pool (and so of the ring) it belongs to.
    pool: PoolId,
    free: Rc<RefCell<Vec<u16>>>,
}

/// Identifies one send pool (one per ring) for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PoolId(u32);

impl PoolId {
    fn next() -> PoolId {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        PoolId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl FixedBuf {
    /// Bytes of output it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn index(&self) -> u16 {
        self.index
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.free.borrow_mut().push(self.index);
    }
}

pub(super) struct SendPool {
    // INVARIANT: `data` points to `count * size` bytes allocated (zeroed) with `layout`.
    data: NonNull<u8>,
    layout: Layout,
    id: PoolId,
    count: u16,
    size: usize,
    /// INVARIANT: holds exactly the indexes no `FixedBuf` owns.
    free: Rc<RefCell<Vec<u16>>>,
    /// Set when the memory must never be freed (the kernel may still read it).
    leaked: bool,
}

impl SendPool {
    /// Allocates `count` (>= 1) buffers of `size` (>= 1) bytes; not registered yet.
    pub(super) fn new(count: u16, size: u32) -> io::Result<SendPool> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        if count == 0 || size == 0 {
            return Err(invalid("send buffer pool needs a non-zero count and size"));
        }
        let size = usize::try_from(size).map_err(|_| invalid("send buffer size"))?;
        let len = usize::from(count)
            .checked_mul(size)
            .ok_or_else(|| invalid("send buffer pool size overflows"))?;
        let layout = Layout::from_size_align(len, super::buffers::page_size())
            .map_err(|_| invalid("send buffer pool too large"))?;
        // SAFETY: `layout` has a non-zero size (count >= 1, size >= 1).
        let data = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
            .ok_or(io::ErrorKind::OutOfMemory)?;
        Ok(SendPool {
            data,
            layout,
            id: PoolId::next(),
            count,
            size,
            // Popped from the end: buffer 0 first.
            free: Rc::new(RefCell::new((0..count).rev().collect())),
            leaked: false,
        })
    }

    /// Registers every buffer as fixed buffer `i` of `submitter`'s io_uring.
    pub(super) fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = (0..usize::from(self.count))
            .map(|i| libc::iovec {
                // In bounds: i < count, so i * size + size <= count * size.
                iov_base: self.data.as_ptr().wrapping_add(i * self.size).cast(),
                iov_len: self.size,
            })
            .collect();
        // SAFETY: each iovec lies inside the pool allocation, which stays allocated and unmoved
        // until the io_uring is closed (the Ring drops its IoUring before this pool) or forever
        // (`leak`) when operations may still read it.
        unsafe { submitter.register_buffers(&iovecs) }
    }

    /// Copies `pieces`, one after the other, into a free buffer. `None` when they are empty in
    /// all, do not fit, or every buffer is taken.
    pub(super) fn fill(&mut self, pieces: &[&[u8]]) -> Option<FixedBuf> {
        let len = pieces.iter().map(|p| p.len()).sum::<usize>();
        if len == 0 || len > self.size {
            return None;
        }
        let index = self.free.borrow_mut().pop()?;
        let mut at = usize::from(index) * self.size;
        for piece in pieces {
            // SAFETY: `index < count` and the pieces' lengths add up to `len <= size`, so each
            // destination lies inside buffer `index` of the pool allocation. No FixedBuf owned
            // `index` (it was in the free list), so no send from it is in flight: the kernel is
            // not reading it. The pieces are caller memory, never part of the pool (the pool is
            // not reachable from outside the ring), so they do not overlap it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    piece.as_ptr(),
                    self.data.as_ptr().add(at),
                    piece.len(),
                )
            };
            at += piece.len();
        }
        Some(FixedBuf {
            index,
            len,
            pool: self.id,
            free: self.free.clone(),
        })
    }

    #[cfg(test)]
    pub(super) fn id(&self) -> PoolId {
        self.id
    }

    /// Whether `buf` is one of this pool's buffers.
    pub(super) fn owns(&self, buf: &FixedBuf) -> bool {
        buf.pool == self.id && buf.index < self.count
    }

    /// Address of byte `offset` of `buf` (for the SQE). `offset <= buf.len() <= size`.
    pub(super) fn addr(&self, buf: &FixedBuf, offset: usize) -> *const u8 {
        let offset = offset.min(buf.len);
        // In bounds of the allocation: index < count and offset <= size.
        self.data
            .as_ptr()
            .wrapping_add(usize::from(buf.index) * self.size + offset)
    }

    /// Buffers not owned by a [`FixedBuf`].
    #[cfg(test)]
    pub(super) fn free_count(&self) -> usize {
        self.free.borrow().len()
    }

    /// Never free the memory: the kernel may still read it.
    pub(super) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for SendPool {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: allocated in `new` with this layout. The owning Ring closes its io_uring first
        // after reaping every operation, and calls `leak` when it could not, so no send reads
        // it any more.
        unsafe { alloc::dealloc(self.data.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_copies_and_drop_frees() {
        let mut pool = SendPool::new(2, 8).expect("alloc");
        assert!(pool.fill(&[b"123456789"]).is_none(), "too large");
        assert!(pool.fill(&[b""]).is_none(), "empty");
        let a = pool.fill(&[b"hello"]).expect("a");
        let b = pool.fill(&[b"wor", b"", b"ld!"]).expect("b");
        assert!(pool.fill(&[b"x"]).is_none(), "all taken");
        assert_eq!((a.index(), a.len(), b.index(), b.len()), (0, 5, 1, 6));
        // SAFETY: reads 6 bytes inside buffer 1 of the live pool, which `b` owns; the pool
        // is not registered, so no kernel use.
        let bytes = unsafe { std::slice::from_raw_parts(pool.addr(&b, 0), 6) };
        assert_eq!(bytes, b"world!");
        assert_eq!(pool.addr(&b, 2) as usize - pool.addr(&b, 0) as usize, 2);
        drop(a);
        assert_eq!(pool.free_count(), 1);
        let c = pool.fill(&[b"again"]).expect("reused");
        assert_eq!(c.index(), 0);
        drop((b, c));
        assert_eq!(pool.free_count(), 2);
    }

    #[test]
    fn a_pool_owns_only_its_own_buffers() {
        let mut a = SendPool::new(1, 8).expect("alloc");
        let mut b = SendPool::new(1, 8).expect("alloc");
        assert_ne!(a.id(), b.id());
        let from_a = a.fill(&[b"x"]).expect("a");
        let from_b = b.fill(&[b"y"]).expect("b");
        assert!(a.owns(&from_a) && b.owns(&from_b));
        assert!(
            !a.owns(&from_b) && !b.owns(&from_a),
            "same index, other pool"
        );
    }
}
