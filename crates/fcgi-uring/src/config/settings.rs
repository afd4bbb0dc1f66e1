//! [`SETTINGS`]: every setting of a [`Config`] declared once, with its file key, its flag, what
//! it accepts, its default and its doc. The declaration also generates the typed setters of
//! [`ConfigBuilder`] and [`Config::default`]; the file parser, the flags of `fcgi-uring serve`,
//! the checks, `--print-config`, the example file and the reference page read this table.

use fcgi_proto::Limits;
use fcgi_proto::addr::Addr;
use std::time::Duration;

use super::value::{Accepts, FieldValue, MAX_SECONDS, Value, ZeroSeconds};
use super::{AccessLogFormat, Config, ConfigBuilder, IoMode, LogFormat, PeerList, Protocol};

/// One setting: where it is read from, what it accepts, its default and what it does.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Setting {
    /// The file's `section.key`: `ring.sq_entries`.
    pub key: &'static str,
    /// The flag of `fcgi-uring serve`, without the dashes: `ring-entries`.
    pub flag: &'static str,
    /// The [`ConfigBuilder`] method that sets it: `sq_entries`.
    pub setter: &'static str,
    /// What the value must be.
    pub accepts: Accepts,
    /// Whether the setting may be unset ([`Value::None`]: absent from a file, `none` as a flag).
    pub optional: bool,
    /// Another key this one takes the value of when that one changes while both were equal
    /// (the advertised FastCGI limits follow the real ones).
    pub follows: Option<&'static str>,
    /// For an optional setting, a value to show in the example file (flag syntax).
    pub example: Option<&'static str>,
    /// One line on what it does.
    pub doc: &'static str,
    /// The default.
    pub default: fn() -> Value,
    pub(crate) get: fn(&Config) -> Value,
    /// Sets the field; `false` when the value is not of the field's type or range.
    pub(crate) set: fn(&mut Config, &Value) -> bool,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("key", &self.key)
            .field("flag", &self.flag)
            .field("accepts", &self.accepts)
            .field("default", &(self.default)())
            .finish_non_exhaustive()
    }
}

/// The setting with this `section.key`.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Largest submission queue the kernel accepts (IORING_MAX_ENTRIES).
pub(crate) const MAX_SQ_ENTRIES: i64 = 32768;
/// Largest completion queue the kernel accepts (IORING_MAX_CQ_ENTRIES).
pub(crate) const MAX_CQ_ENTRIES: i64 = 2 * MAX_SQ_ENTRIES;
/// Largest provided-buffer ring the kernel accepts.
pub(crate) const MAX_RECV_BUFFERS: i64 = 32768;
/// Most registered buffers the kernel accepts (IORING_MAX_REG_BUFFERS).
pub(crate) const MAX_SEND_BUFFERS: i64 = 16384;
/// Largest registered send buffer we accept (the kernel's limit is 1 GiB).
pub(crate) const MAX_SEND_BUFFER_SIZE: i64 = 16 << 20;
const GIB: i64 = 1 << 30;

/// Connections per worker by default, also advertised as FCGI_MAX_CONNS.
const MAX_CONNS_PER_WORKER: usize = 65_536;

const SECONDS: Accepts = Accepts::Seconds {
    max: MAX_SECONDS,
    zero: ZeroSeconds::TurnsOff,
};

const fn ints(min: i64, max: i64) -> Accepts {
    Accepts::Int { min, max }
}

const fn pow2(min: i64, max: i64) -> Accepts {
    Accepts::PowerOfTwo { min, max }
}

macro_rules! opt {
    () => {
        None
    };
    ($v:literal) => {
        Some($v)
    };
}

/// Declares every setting: generates [`SETTINGS`], `apply_defaults` and the typed setters of
/// [`ConfigBuilder`] (named by the leading identifier).
macro_rules! settings {
    ($(
        $method:ident {
            key: $key:literal,
            flag: $flag:literal,
            field: $($field:ident).+,
            ty: $ty:ty,
            default: $default:expr,
            accepts: $accepts:expr,
            $(follows: $follows:literal,)?
            $(example: $example:literal,)?
            doc: $doc:literal $(,)?
        }
    ),* $(,)?) => {
        /// Every setting, in the order of the configuration file.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: $key,
                flag: $flag,
                setter: stringify!($method),
                accepts: $accepts,
                optional: <$ty as FieldValue>::OPTIONAL,
                follows: opt!($($follows)?),
                example: opt!($($example)?),
                doc: $doc,
                default: || {
                    let v: $ty = $default;
                    v.to_value()
                },
                get: |c| c.$($field).+.to_value(),
                set: |c, v| match <$ty as FieldValue>::from_value(v) {
                    Some(x) => {
                        c.$($field).+ = x;
                        true
                    }
                    None => false,
                },
            },
        )*];

        /// Sets every field of `c` to its default.
        pub(super) fn apply_defaults(c: &mut Config) {
            $( c.$($field).+ = $default; )*
        }

        impl ConfigBuilder {
            $(
                #[doc = $doc]
                #[doc = ""]
                #[doc = concat!("File key `", $key, "`, flag `--", $flag, "`.")]
                pub fn $method(mut self, value: $ty) -> ConfigBuilder {
                    let old = self.config.$($field).+.to_value();
                    self.config.$($field).+ = value;
                    super::follow(&mut self.config, $key, &old);
                    self
                }
            )*
        }
    };
}

settings! {
    protocol {
        key: "server.protocol",
        flag: "protocol",
        field: protocol,
        ty: Protocol,
        default: Protocol::FastCgi,
        accepts: Accepts::OneOf(&["fastcgi", "http1", "h2c"]),
        doc: "What clients speak: fastcgi (io_uring), or http1 / h2c (hyper on tokio on the same pinned workers, for comparisons; feature http-compare).",
    },
    io {
        key: "server.io",
        flag: "io",
        field: io,
        ty: IoMode,
        default: IoMode::Auto,
        accepts: Accepts::OneOf(&["auto", "uring", "epoll"]),
        doc: "IO backend: uring (io_uring; fail to start where it is blocked), epoll, or auto (io_uring where this process may use it, else epoll with one log line naming the cause and the fix; the environment variable FCGI_URING_IO=uring|epoll overrides auto).",
    },
    listen {
        key: "server.listen",
        flag: "listen",
        field: listen,
        ty: Addr,
        default: Addr::Tcp(([127, 0, 0, 1], 9000).into()),
        accepts: Accepts::Address,
        doc: "Where to listen: TCP host:port (one SO_REUSEPORT listener per worker) or unix:/path (one listener shared by the workers).",
    },
    workers {
        key: "server.workers",
        flag: "workers",
        field: workers,
        ty: usize,
        default: 0,
        accepts: ints(0, 4096),
        doc: "Worker threads; 0: one per available core.",
    },
    pin_workers {
        key: "server.pin_workers",
        flag: "pin-workers",
        field: pin_workers,
        ty: bool,
        default: true,
        accepts: Accepts::Bool,
        doc: "Pin worker i to the i-th available core.",
    },
    backlog {
        key: "server.backlog",
        flag: "backlog",
        field: backlog,
        ty: i32,
        default: 4096,
        accepts: ints(0, i32::MAX as i64),
        doc: "listen(2) backlog.",
    },
    unix_mode {
        key: "server.unix_mode",
        flag: "unix-mode",
        field: unix_mode,
        ty: Option<u32>,
        default: None,
        accepts: Accepts::FileMode,
        example: "660",
        doc: "File mode of a UNIX socket, in octal; unset: the umask's.",
    },
    share_port {
        key: "server.share_port",
        flag: "share-port",
        field: share_port,
        ty: bool,
        default: false,
        accepts: Accepts::Bool,
        doc: "Start even when another server already listens on the TCP port, sharing its traffic through SO_REUSEPORT; false: refuse with EADDRINUSE, as a plain bind does.",
    },
    allowed_peers {
        key: "server.allowed_peers",
        flag: "allowed-peers",
        field: allowed_peers,
        ty: Option<PeerList>,
        default: None,
        accepts: Accepts::PeerList,
        example: "10.0.0.5, 10.1.0.0/16",
        doc: "The only peers (the proxies) that may connect over TCP: addresses and networks; others are closed at accept, counted (peer_refused) and logged. Unset: FCGI_WEB_SERVER_ADDRS from the environment if set (FastCGI 1.0 section 3.2), else any peer.",
    },
    strip_script_name {
        key: "server.strip_script_name",
        flag: "strip-script-name",
        field: strip_script_name,
        ty: bool,
        default: false,
        accepts: Accepts::Bool,
        doc: "Handlers see the request path with SCRIPT_NAME removed from its start (an app mounted under a prefix, e.g. nginx location /app/ with SCRIPT_NAME /app); false: the path of REQUEST_URI, whole.",
    },
    shutdown_timeout {
        key: "server.shutdown_timeout",
        flag: "shutdown-timeout",
        field: shutdown_timeout,
        ty: Duration,
        default: Duration::from_secs(30),
        accepts: SECONDS,
        doc: "Seconds a graceful shutdown (SIGTERM, SIGINT) waits for in-flight requests.",
    },
    upgrade_timeout {
        key: "server.upgrade_timeout",
        flag: "upgrade-timeout",
        field: upgrade_timeout,
        ty: Duration,
        default: Duration::from_secs(30),
        accepts: Accepts::Seconds {
            max: MAX_SECONDS,
            zero: ZeroSeconds::Refused("a new process cannot report ready in no time"),
        },
        doc: "Seconds a hot upgrade (SIGUSR2) waits for the new process to report ready; past it the new process is stopped and the old one keeps serving.",
    },
    accept_retry {
        key: "server.accept_retry",
        flag: "accept-retry",
        field: accept_retry,
        ty: Duration,
        default: Duration::from_millis(100),
        accepts: Accepts::Seconds {
            max: MAX_SECONDS,
            zero: ZeroSeconds::Refused("retrying a failed accept at once spins at full CPU"),
        },
        doc: "Seconds a worker waits before accepting again after accept failed (EMFILE at RLIMIT_NOFILE, ENFILE, ENOMEM); new connections wait in the backlog meanwhile.",
    },
    sq_entries {
        key: "ring.sq_entries",
        flag: "ring-entries",
        field: ring.sq_entries,
        ty: u32,
        default: 1024,
        accepts: pow2(1, MAX_SQ_ENTRIES),
        doc: "Submission queue entries per ring.",
    },
    cq_entries {
        key: "ring.cq_entries",
        flag: "cq-entries",
        field: ring.cq_entries,
        ty: u32,
        default: 16384,
        accepts: pow2(1, MAX_CQ_ENTRIES),
        doc: "Completion queue entries per ring (at least ring.sq_entries; 16 bytes each). Each connection receiving has a multishot receive or poll that posts here; when more completions wait than the queue holds it overflows, the kernel keeps the rest apart and ends multishot operations, and requests waited up to 2 s at 4,096 connections with 4,096 entries (docs/performance.md): give it more entries than the connections sending at once.",
    },
    recv_buffers {
        key: "ring.recv_buffers",
        flag: "recv-buffers",
        field: ring.recv_buffers,
        ty: u16,
        default: 256,
        accepts: pow2(1, MAX_RECV_BUFFERS),
        doc: "Provided receive buffers per ring (memory: this times ring.recv_buffer_size, per worker). Receives are given the buffers returned most recently, a window of them that widens whenever a receive finds none, so the buffers in use stay in the CPU caches (with ring.recv_bundle every buffer is used in turn); data that finds none free waits in the socket, and with ring.direct_recv its connection is read directly (as an upload's) until no receive has found the pool empty for 8 loop turns. More connections sending at once than there are buffers then cost about what the epoll backend does (4,096 connections on 256 buffers: docs/performance.md); without ring.direct_recv (or with ring.sqpoll) the receive is armed again at once, to find the pool empty again until buffers come back: give such a server as many buffers as connections send at once.",
    },
    recv_buffer_size {
        key: "ring.recv_buffer_size",
        flag: "recv-buffer-size",
        field: ring.recv_buffer_size,
        ty: u32,
        default: 64 * 1024,
        accepts: ints(1, 16 << 20),
        doc: "Bytes per provided receive buffer. 64 KiB: an upload of that size with its params takes two receives (with 16 KiB, five, each a completion and a copy into the request body, and the pool ran dry under 16 connections uploading 64 KiB bodies); a GET uses a few hundred bytes of one, and only the pages receives have written are resident.",
    },
    recv_window_bytes {
        key: "ring.recv_window_bytes",
        flag: "recv-window-bytes",
        field: ring.recv_window_bytes,
        ty: u32,
        default: 0,
        accepts: ints(0, 1 << 30),
        doc: "Bytes the window of published receive buffers may hold at the receives' mean fill (at least 16 buffers), 0: no bound (the window widens to the whole pool as receives find it empty). With small buffers (16 KiB) a bound such as 512 KiB keeps uploads on as many buffers as stay in the CPU caches, so the copies into and out of them hit; with the default 64 KiB buffers 16 of them already hold 1 MiB and a bound only makes connections uploading at once wait for buffers (4 x 1 MiB uploads: more CPU, p99 8 ms against 3). Smaller: coarser turns between connections uploading at once. Ignored with ring.recv_bundle.",
    },
    defer_taskrun {
        key: "ring.defer_taskrun",
        flag: "defer-taskrun",
        field: ring.defer_taskrun,
        ty: bool,
        default: false,
        accepts: Accepts::Bool,
        doc: "DEFER_TASKRUN (with SINGLE_ISSUER) where the kernel has it: completions run only when the worker enters the kernel, never interrupting it. Keep it off: a worker sleeping in tokio's reactor (after a tick period with no IO, always with ring.idle_wait_us = 0) was then woken about 16 ms late on Linux 6.18, so a request after an idle moment waited 13-20 ms (docs/tuning.md).",
    },
    coop_taskrun {
        key: "ring.coop_taskrun",
        flag: "coop-taskrun",
        field: ring.coop_taskrun,
        ty: bool,
        default: true,
        accepts: Accepts::Bool,
        doc: "When DEFER_TASKRUN is off or unavailable: COOP_TASKRUN + TASKRUN_FLAG (completion work waits for the worker's next system call, no inter-processor interrupt).",
    },
    completions_per_turn {
        key: "ring.completions_per_turn",
        flag: "completions-per-turn",
        field: completions_per_turn,
        ty: usize,
        default: 1024,
        accepts: ints(1, 65536),
        doc: "Completions handled per loop turn before the answers are submitted (the epoll backend takes up to 1024 readiness events a turn): smaller answers sooner, larger batches more per system call.",
    },
    sqpoll {
        key: "ring.sqpoll",
        flag: "sqpoll",
        field: ring.sqpoll,
        ty: bool,
        default: false,
        accepts: Accepts::Bool,
        doc: "SQPOLL: a kernel thread per worker polls the submission queue, so submitting needs no system call while it is awake (it burns a core); needs ring.defer_taskrun and ring.coop_taskrun false.",
    },
    sqpoll_idle_ms {
        key: "ring.sqpoll_idle_ms",
        flag: "sqpoll-idle-ms",
        field: ring.sqpoll_idle_ms,
        ty: u32,
        default: 1000,
        accepts: ints(1, 60_000),
        doc: "Milliseconds the SQPOLL thread polls without work before it sleeps.",
    },
    sqpoll_cpu {
        key: "ring.sqpoll_cpu",
        flag: "sqpoll-cpu",
        field: ring.sqpoll_cpu,
        ty: Option<u32>,
        default: None,
        accepts: ints(0, 4095),
        example: "1",
        doc: "CPU the SQPOLL threads are bound to (needs ring.sqpoll); unset: the scheduler's choice.",
    },
    idle_spin_us {
        key: "ring.idle_spin_us",
        flag: "idle-spin-us",
        field: idle_spin_us,
        ty: u32,
        default: 0,
        accepts: ints(0, 100_000),
        doc: "Microseconds an idle worker keeps polling (non-blocking enter, yielding to its tokio tasks) before it sleeps; 0: sleep at once.",
    },
    idle_wait_us {
        key: "ring.idle_wait_us",
        flag: "idle-wait-us",
        field: idle_wait_us,
        ty: u32,
        default: 4000,
        accepts: ints(0, 100_000),
        doc: "Period of an idle worker's look at tokio: with no handler task running it waits for IO in io_uring_enter (or its own epoll_wait), with no timer per wait, and a tick every this many microseconds ends the wait to run tokio's timers, IO and other tasks; a period with no IO sends it to sleep in tokio's reactor. One system call per wake instead of three. Tasks the application runs outside requests, and a shutdown, may be seen this much later; 0: always sleep in tokio. Off under ring.sqpoll (the tick's completions would keep the SQ thread from ever sleeping).",
    },
    yield_after_wake {
        key: "ring.yield_after_wake",
        flag: "yield-after-wake",
        field: yield_after_wake,
        ty: bool,
        default: true,
        accepts: Accepts::Bool,
        doc: "A worker woken from its wait in the backend (io_uring_enter, epoll_wait) yields the CPU once (sched_yield) before its turn, so that a proxy on the same CPU, which the wake preempted, finishes its turn first and the worker answers all it forwarded in one turn instead of one request per wake (behind nginx at 16 and 64 clients half to two thirds less CPU per request on io_uring, a quarter less on epoll; docs/performance.md). A yield that took 500 us or more and brought no other request (a CPU-bound neighbour held the CPU) pauses the yields for 100 ms, doubling up to 10 s while that repeats; 32 in a row that returned at once with nothing new (nothing else wanted the CPU) pause them for 100 ms. Off: never yield.",
    },
    direct_send {
        key: "ring.direct_send",
        flag: "direct-send",
        field: ring.direct_send,
        ty: bool,
        default: true,
        accepts: Accepts::Bool,
        doc: "Write the first answer of each flush, if at most 16 KiB, with a non-blocking send(2) from the worker; what the socket does not take at once, and every other answer, goes through the ring. Costs less CPU per request than a ring send when a turn has one answer (behind a proxy, at low load; docs/performance.md). Off, or with ring.sqpoll: every send is a ring operation.",
    },
    direct_recv {
        key: "ring.direct_recv",
        flag: "direct-recv",
        field: ring.direct_recv,
        ty: bool,
        default: true,
        accepts: Accepts::Bool,
        doc: "A connection whose receive brings at least 4 KiB (an upload; or a whole ring.recv_buffer_size, if smaller) is read by the worker itself: the ring polls it for readability and the worker receives with recv(2) into one warm 256 KiB buffer, so uploads are copied out while still in the CPU caches, and a body of 16 KiB or more that one receive brings whole reaches its handler uncopied (16 connections posting 64 KiB, or 64 posting 16 KiB: about a third less CPU per request; docs/performance.md); after 8 smaller receives in a row it goes back to provided buffers (once the pool has not run dry for 8 loop turns: a receive that finds it empty also switches its connection). Off, or with ring.sqpoll: every receive is a ring operation.",
    },
    registered_send_buffers {
        key: "ring.registered_send_buffers",
        flag: "registered-send-buffers",
        field: ring.registered_send_buffers,
        ty: u16,
        default: 0,
        accepts: ints(0, MAX_SEND_BUFFERS),
        doc: "Registered (fixed) send buffers per worker, 0: off; output that fits one is sent with WRITE_FIXED. Locked memory: count x size must fit RLIMIT_MEMLOCK.",
    },
    send_buffer_size {
        key: "ring.send_buffer_size",
        flag: "send-buffer-size",
        field: ring.send_buffer_size,
        ty: u32,
        default: 64 * 1024,
        accepts: ints(1, MAX_SEND_BUFFER_SIZE),
        doc: "Bytes per registered send buffer.",
    },
    recv_bundle {
        key: "ring.recv_bundle",
        flag: "recv-bundle",
        field: ring.recv_bundle,
        ty: bool,
        default: false,
        accepts: Accepts::Bool,
        doc: "Multishot receive bundles: one completion covers several consecutive receive buffers (Linux >= 6.10; startup fails without).",
    },
    max_conns_per_worker {
        key: "limits.max_conns_per_worker",
        flag: "max-conns-per-worker",
        field: max_conns_per_worker,
        ty: usize,
        default: MAX_CONNS_PER_WORKER,
        accepts: ints(1, 1 << 24),
        doc: "Connections per worker; past it new connections are closed at once.",
    },
    max_requests_per_worker {
        key: "limits.max_requests_per_worker",
        flag: "max-requests-per-worker",
        field: max_requests_per_worker,
        ty: usize,
        default: 16_384,
        accepts: ints(1, 1 << 24),
        doc: "Requests in flight per worker over all its connections; past it END_REQUEST(OVERLOADED) without running the handler.",
    },
    max_requests_per_conn {
        key: "limits.max_requests_per_conn",
        flag: "max-requests-per-conn",
        field: limits.max_requests_per_conn,
        ty: usize,
        default: Limits::default().max_requests_per_conn,
        accepts: ints(1, 65535),
        doc: "Requests in flight per connection; past it END_REQUEST(OVERLOADED). 1: one request at a time (FCGI_MAX_REQS 1 answered to GET_VALUES; a concurrent request gets END_REQUEST(CANT_MPX_CONN)).",
    },
    max_params_bytes {
        key: "limits.max_params_bytes",
        flag: "max-params-bytes",
        field: limits.max_params_bytes,
        ty: usize,
        default: Limits::default().max_params_bytes,
        accepts: ints(1, GIB),
        doc: "Params (name and value) bytes per request; past it END_REQUEST(OVERLOADED).",
    },
    max_params_pairs {
        key: "limits.max_params_pairs",
        flag: "max-params-pairs",
        field: limits.max_params_pairs,
        ty: usize,
        default: Limits::default().max_params_pairs,
        accepts: ints(1, 1 << 24),
        doc: "Params pairs per request; past it END_REQUEST(OVERLOADED).",
    },
    max_name_len {
        key: "limits.max_name_len",
        flag: "max-name-len",
        field: limits.max_name_len,
        ty: usize,
        default: Limits::default().max_name_len,
        accepts: ints(1, GIB),
        doc: "Longest params name; past it END_REQUEST(OVERLOADED).",
    },
    max_value_len {
        key: "limits.max_value_len",
        flag: "max-value-len",
        field: limits.max_value_len,
        ty: usize,
        default: Limits::default().max_value_len,
        accepts: ints(1, GIB),
        doc: "Longest params value; past it END_REQUEST(OVERLOADED).",
    },
    max_body_buffer {
        key: "limits.max_body_buffer",
        flag: "max-body-buffer",
        field: max_body_buffer,
        ty: usize,
        default: 1024 * 1024,
        accepts: ints(1, GIB),
        doc: "Unread request-body bytes buffered per request; past it the connection stops reading until the handler catches up.",
    },
    max_output_buffer {
        key: "limits.max_output_buffer",
        flag: "max-output-buffer",
        field: max_output_buffer,
        ty: usize,
        default: 1024 * 1024,
        accepts: ints(1, GIB),
        doc: "Response bytes queued per connection; past it streaming handlers are paused and the connection is not read.",
    },
    advertised_max_conns {
        key: "limits.advertised_max_conns",
        flag: "advertised-max-conns",
        field: limits.advertised_max_conns,
        ty: u32,
        default: MAX_CONNS_PER_WORKER as u32,
        accepts: ints(1, u32::MAX as i64),
        follows: "limits.max_conns_per_worker",
        doc: "FCGI_MAX_CONNS answered to GET_VALUES; follows limits.max_conns_per_worker unless set.",
    },
    advertised_max_reqs {
        key: "limits.advertised_max_reqs",
        flag: "advertised-max-reqs",
        field: limits.advertised_max_reqs,
        ty: u32,
        default: Limits::default().max_requests_per_conn as u32,
        accepts: ints(1, u32::MAX as i64),
        follows: "limits.max_requests_per_conn",
        doc: "FCGI_MAX_REQS answered to GET_VALUES; follows limits.max_requests_per_conn unless set.",
    },
    idle_timeout {
        key: "timeouts.idle",
        flag: "idle-timeout",
        field: timeouts.idle,
        ty: Duration,
        default: Duration::from_secs(300),
        accepts: SECONDS,
        doc: "A connection with no request in flight and nothing queued, on which nothing was received for this long, is closed.",
    },
    params_timeout {
        key: "timeouts.params",
        flag: "params-timeout",
        field: timeouts.params,
        ty: Duration,
        default: Duration::from_secs(30),
        accepts: SECONDS,
        doc: "From the receive that brought BEGIN_REQUEST to the end of its params (whatever other requests complete meanwhile; time the server stops reading the connection because a handler's body buffer is full does not count); past it the connection is closed.",
    },
    body_timeout {
        key: "timeouts.body",
        flag: "body-timeout",
        field: timeouts.body,
        ty: Duration,
        default: Duration::from_secs(60),
        accepts: SECONDS,
        doc: "No request-body byte for this long while a body is open (slowloris): the handler's body fails with BodyError::TimedOut.",
    },
    handler_timeout {
        key: "timeouts.handler",
        flag: "handler-timeout",
        field: timeouts.handler,
        ty: Duration,
        default: Duration::ZERO,
        accepts: SECONDS,
        doc: "Handler deadline: past it the handler is dropped, 504 if nothing was sent, else the response is cut short.",
    },
    write_timeout {
        key: "timeouts.write",
        flag: "write-timeout",
        field: timeouts.write,
        ty: Duration,
        default: Duration::from_secs(60),
        accepts: SECONDS,
        doc: "Output queued while the peer took no byte for this long (it stopped reading): the connection is closed. On TCP the same bound holds for the answer the kernel took and the peer has not acknowledged (TCP_USER_TIMEOUT on the listeners): such a connection is reset by the kernel.",
    },
    linger_timeout {
        key: "timeouts.linger",
        flag: "linger-timeout",
        field: timeouts.linger,
        ty: Duration,
        default: Duration::from_secs(5),
        accepts: SECONDS,
        doc: "After our FIN on a KEEP_CONN=0 connection, how long we keep reading until the peer closes too.",
    },
    admin_listen {
        key: "admin.listen",
        flag: "admin-listen",
        field: ops.admin_listen,
        ty: Option<Addr>,
        default: None,
        accepts: Accepts::Address,
        example: "127.0.0.1:9100",
        doc: "Where the admin HTTP listener serves /metrics (Prometheus, OpenMetrics), /healthz, /readyz and /status: host:port or unix:/path; unset: none for a server the library starts, while `fcgi-uring serve` listens on 127.0.0.1:9100 (or on a free loopback port when that one is taken); `none` turns it off.",
    },
    drain_delay {
        key: "admin.drain_delay",
        flag: "drain-delay",
        field: ops.drain_delay,
        ty: Duration,
        default: Duration::ZERO,
        accepts: SECONDS,
        doc: "At shutdown (SIGTERM), how long /readyz and the ping path answer 503 while the server still accepts and serves, so that load balancers stop sending first.",
    },
    stall_timeout {
        key: "admin.stall_timeout",
        flag: "stall-timeout",
        field: ops.stall_timeout,
        ty: Duration,
        default: Duration::from_secs(10),
        accepts: SECONDS,
        doc: "/healthz answers 503 while a worker has not turned its loop for this long (a handler blocking its thread instead of awaiting); the admin listener asks each worker once a second, waking a sleeping one. 0: not checked.",
    },
    ping_path {
        key: "ping.path",
        flag: "ping-path",
        field: ops.ping_path,
        ty: Option<String>,
        default: None,
        accepts: Accepts::UrlPath,
        example: "/ping",
        doc: "A request for this path is answered by the runtime with ping.response, without calling the application (503 while draining); unset: off.",
    },
    ping_response {
        key: "ping.response",
        flag: "ping-response",
        field: ops.ping_response,
        ty: String,
        default: "pong".to_owned(),
        accepts: Accepts::Text,
        doc: "The text/plain body of the ping answer.",
    },
    access_log_path {
        key: "access_log.path",
        flag: "access-log",
        field: ops.access_log_path,
        ty: Option<String>,
        default: None,
        accepts: Accepts::Text,
        example: "/var/log/fcgi-uring/access.log",
        doc: "Where each request is logged: a file (reopened on SIGUSR1 by the fcgi-uring binary) or - for standard output; unset: no access log. Never blocks a worker: lines are dropped and counted when the writer falls behind.",
    },
    access_log_format {
        key: "access_log.format",
        flag: "access-log-format",
        field: ops.access_log_format,
        ty: AccessLogFormat,
        default: AccessLogFormat::Combined,
        accepts: Accepts::OneOf(AccessLogFormat::NAMES),
        doc: "combined: the combined log format's fields then request time in microseconds, worker, connection and request id; json: one JSON object per line.",
    },
    slow_log_threshold {
        key: "slow_log.threshold",
        flag: "slow-log-threshold",
        field: ops.slow_log_threshold,
        ty: Duration,
        default: Duration::ZERO,
        accepts: SECONDS,
        doc: "Requests slower than this are logged (warn) with their timing breakdown, and requests still running past it once each.",
    },
    log_format {
        key: "log.format",
        flag: "log-format",
        field: ops.log_format,
        ty: LogFormat,
        default: LogFormat::Text,
        accepts: Accepts::OneOf(LogFormat::NAMES),
        doc: "The format of the fcgi-uring binary's own log on standard error (warnings, start, upgrade and shutdown; RUST_LOG sets the level): text, one line per event; json, one JSON object per line. The library installs no log subscriber: an application logs through its own.",
    },
}
