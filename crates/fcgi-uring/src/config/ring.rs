//! The io_uring settings of each worker's ring ([`RingConfig`]). They are plain data: the
//! driver (`crate::uring`) reads them, [`super::check_ring`] checks them.

/// Ring and buffer sizes, and the setup flags and data paths to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries (power of two).
    pub sq_entries: u32,
    /// Completion queue entries (power of two, >= sq_entries).
    pub cq_entries: u32,
    /// Provided receive buffers (power of two, at most 32768).
    pub recv_buffers: u16,
    /// Bytes per provided receive buffer.
    pub recv_buffer_size: u32,
    /// The bytes the window of published receive buffers may hold at the receives' mean fill
    /// (at least 16 buffers; 0: no bound). Ignored with `recv_bundle`.
    pub recv_window_bytes: u32,
    /// Use DEFER_TASKRUN (with SINGLE_ISSUER) when the kernel has it: completions are only
    /// posted when the worker enters the kernel with GETEVENTS, never by interrupting it.
    /// Off by default: on Linux 6.18.44 a worker sleeping in epoll on the ring's eventfd (after
    /// a tick period with no IO, and always with `idle_wait_us = 0`) is then woken only about
    /// 16 ms after a completion became pending: a request after an idle moment waited 13-20 ms
    /// (0.2-0.3 ms with it off), and with `idle_wait_us = 0` every request at one connection
    /// did (62 requests/s instead of 14,700). Under steady load it measures as off does, and
    /// with it off the 16 x 16 multiplexed load is faster.
    pub defer_taskrun: bool,
    /// When DEFER_TASKRUN is off or unavailable: COOP_TASKRUN (completion work runs when the
    /// worker next enters the kernel, without an inter-processor interrupt) with TASKRUN_FLAG
    /// (the ring shows when such work is pending, so a busy worker enters only then).
    /// Ignored with `sqpoll`, which the kernel refuses to combine with it (see `sqpoll`).
    pub coop_taskrun: bool,
    /// IORING_SETUP_SQPOLL: a kernel thread per ring polls the submission queue, so submitting
    /// needs no system call while that thread is awake. The kernel refuses SQPOLL together with
    /// DEFER_TASKRUN or COOP_TASKRUN: `sqpoll` requires `defer_taskrun = false` and
    /// `coop_taskrun = false` (checked by ring setup and the configuration file).
    pub sqpoll: bool,
    /// Milliseconds the SQ thread polls without work before it sleeps (then the next submit
    /// wakes it with IORING_ENTER_SQ_WAKEUP). 1..=60000.
    pub sqpoll_idle_ms: u32,
    /// The CPU the SQ thread is bound to (IORING_SETUP_SQ_AFF); `None`: the scheduler's choice.
    pub sqpoll_cpu: Option<u32>,
    /// Registered (fixed) send buffers per ring, 0 to turn them off. Output that fits in one is
    /// copied into a free one and sent with WRITE_FIXED; the rest is sent from the heap. They
    /// are locked memory: `registered_send_buffers * send_buffer_size` counts against
    /// RLIMIT_MEMLOCK (without CAP_IPC_LOCK).
    pub registered_send_buffers: u16,
    /// Bytes per registered send buffer.
    pub send_buffer_size: u32,
    /// Multishot receive with IORING_RECVSEND_BUNDLE (Linux >= 6.10): one completion covers
    /// several consecutive provided buffers. Ring setup fails on a kernel without it.
    pub recv_bundle: bool,
    /// Each answer is first written with a non-blocking `send(2)` from the worker; only what
    /// the socket does not take at once becomes a ring send (which waits for room). Only the
    /// first answer of a flush, and only one of at most 16 KiB: many or large answers cost
    /// less as ring sends submitted together. Off, or with `sqpoll` (whose point is sending
    /// without system calls): every send is a ring operation.
    pub direct_send: bool,
    /// A connection whose receive brings at least 4 KiB (or a whole provided buffer, if
    /// smaller: an upload) is read by the worker itself: the ring watches it with a multishot poll and the worker receives with
    /// `recv(2)` into one warm buffer as the epoll backend does, so each upload is copied out
    /// while it is in the CPU caches; after a run of small receives the connection goes back
    /// to provided buffers. Off, or with `sqpoll`: every receive is a ring operation.
    pub direct_recv: bool,
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig {
            sq_entries: 1024,
            cq_entries: 16384,
            recv_buffers: 256,
            recv_buffer_size: 64 * 1024,
            recv_window_bytes: 0,
            defer_taskrun: false,
            coop_taskrun: true,
            sqpoll: false,
            sqpoll_idle_ms: 1000,
            sqpoll_cpu: None,
            registered_send_buffers: 0,
            send_buffer_size: 64 * 1024,
            recv_bundle: false,
            direct_send: true,
            direct_recv: true,
        }
    }
}
