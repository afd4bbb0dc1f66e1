//! The table of in-flight operations: a slab indexed by the low half of `user_data`, with a
//! generation in the high half so that a stale [`OpId`](super::OpId) never matches a reused slot.
//!
//! An operation stays in the table from the moment it is queued until the completion that ends
//! it (a multishot one until a completion without `MORE`). Whatever memory the kernel may read
//! for it (a send's buffer) and the fd it works on are owned by its entry, so they live at least
//! that long: a connection dropped by its owner keeps its socket open until its last operation
//! has ended.

use super::{OpFd, SendBuf, Token};

/// `user_data` of internal submissions (cancels) whose completions are swallowed. No operation
/// has it: generations never reach `u32::MAX`.
pub(super) const INTERNAL: u64 = u64::MAX;

/// The header and iovecs of a vectored send (SENDMSG), boxed so that the addresses given to
/// the kernel stay put while the op table grows.
pub(super) struct VectoredMsg {
    pub hdr: libc::msghdr,
    pub iov: Vec<libc::iovec>,
}

impl std::fmt::Debug for VectoredMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VectoredMsg({} pieces)", self.iov.len())
    }
}

/// What an operation is, and what it owns while the kernel works on it.
#[derive(Debug)]
pub(super) enum OpKind {
    Accept,
    Recv,
    /// A multishot poll for readability (`ring.direct_recv`).
    Readable,
    /// INVARIANT: the kernel may read this buffer, and for a vectored send the message header,
    /// its iovecs and the bytes they point to, until the send's completion is reaped.
    Send(SendBuf, Option<Box<VectoredMsg>>),
    /// A send that was never submitted (a registered buffer of another ring): it completes
    /// with an error and gives the buffer back.
    Refused(SendBuf),
    Shutdown,
}

#[derive(Debug)]
pub(super) struct Op {
    pub token: Token,
    pub kind: OpKind,
    /// INVARIANT: the fd the kernel works on stays open while the operation is in the table
    /// (held for that only, never read).
    pub _keep_open: Option<OpFd>,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    op: Option<Op>,
}

#[derive(Debug, Default)]
pub(super) struct OpTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

fn encode(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn decode(user_data: u64) -> (usize, u32) {
    ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as u32)
}

impl OpTable {
    /// Stores an operation; returns its `user_data`.
    pub(super) fn insert(&mut self, token: Token, kind: OpKind, fd: Option<OpFd>) -> u64 {
        let op = Some(Op {
            token,
            kind,
            _keep_open: fd,
        });
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.op = op;
            return encode(index, slot.generation);
        }
        let index = u32::try_from(self.slots.len()).unwrap_or_else(|_| {
            // Four billion operations in flight cannot happen: the memory runs out first.
            panic!("io_uring op table full")
        });
        self.slots.push(Slot { generation: 1, op });
        encode(index, 1)
    }

    /// The live operation with this `user_data`, if any (a stale id matches nothing).
    pub(super) fn get(&self, user_data: u64) -> Option<&Op> {
        let (index, generation) = decode(user_data);
        let slot = self.slots.get(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.op.as_ref()
    }

    /// Like [`OpTable::get`], to fill in what the operation owns before it is submitted.
    pub(super) fn get_mut(&mut self, user_data: u64) -> Option<&mut Op> {
        let (index, generation) = decode(user_data);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.op.as_mut()
    }

    /// Removes the live operation with this `user_data`; the slot's generation moves on.
    pub(super) fn remove(&mut self, user_data: u64) -> Option<Op> {
        let (index, generation) = decode(user_data);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let op = slot.op.take()?;
        // Skip 0 (never issued) and u32::MAX (would let INTERNAL match a slot).
        slot.generation = match slot.generation.wrapping_add(1) {
            0 | u32::MAX => 1,
            next => next,
        };
        self.free.push(index as u32);
        self.live -= 1;
        Some(op)
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Forgets every entry without dropping it: for memory the kernel may still be using.
    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
        self.free.clear();
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_never_match_a_reused_slot() {
        let mut table = OpTable::default();
        let a = table.insert(1, OpKind::Recv, None);
        assert_eq!(table.len(), 1);
        assert!(table.remove(a).is_some());
        let b = table.insert(2, OpKind::Accept, None);
        assert_eq!(decode(a).0, decode(b).0, "slot reused");
        assert_ne!(a, b);
        assert!(table.get(a).is_none());
        assert!(table.remove(a).is_none());
        assert_eq!(table.get(b).map(|op| op.token), Some(2));
        assert_eq!(table.len(), 1);
        assert!(table.get(INTERNAL).is_none());
        assert!(table.remove(INTERNAL).is_none());
    }

    #[test]
    fn generation_skips_reserved_values() {
        let mut table = OpTable::default();
        let a = table.insert(1, OpKind::Shutdown, None);
        table.slots[0].generation = u32::MAX - 1;
        let a = encode(decode(a).0 as u32, u32::MAX - 1);
        assert!(table.remove(a).is_some());
        assert_eq!(table.slots[0].generation, 1);
    }

    #[test]
    fn send_buffer_comes_back() {
        let mut table = OpTable::default();
        let id = table.insert(7, OpKind::Send(SendBuf::from(vec![1, 2, 3]), None), None);
        match table.remove(id).map(|op| op.kind) {
            Some(OpKind::Send(SendBuf::Heap(buf), _)) => {
                assert_eq!(buf.contiguous(), Some(&[1, 2, 3][..]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_entry_keeps_its_fd_open_until_removed() {
        let mut table = OpTable::default();
        let fd = std::rc::Rc::new(std::os::fd::OwnedFd::from(
            std::fs::File::open("/dev/null").expect("open"),
        ));
        let id = table.insert(1, OpKind::Recv, Some(OpFd::from(&fd)));
        let weak = std::rc::Rc::downgrade(&fd);
        drop(fd);
        assert!(weak.upgrade().is_some(), "the op keeps the fd");
        drop(table.remove(id));
        assert!(weak.upgrade().is_none(), "closed with the last op");
    }
}
