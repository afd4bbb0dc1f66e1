//! Waiting for facts in tests: a poll with a hang guard, and the kernel's view of TCP sockets
//! and processes.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// How long [`wait_for`] waits for a fact before failing: generous, it only bounds a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Waits until `cond` holds, polling it with a short backoff (1 ms doubling up to 50 ms), and
/// panics naming `what` if it still does not hold after `guard`. This is how a test waits for
/// an observable fact (a socket or process state, a counter) instead of sleeping a fixed time
/// and hoping.
pub fn wait_for(what: &str, guard: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + guard;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "waited {guard:?} for {what}, in vain"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// One IPv4 TCP socket of this network namespace, as /proc/net/tcp shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    /// The kernel's TCP state (1 ESTABLISHED, 10 LISTEN...).
    pub state: u8,
    /// Bytes sent and not yet acknowledged.
    pub tx_queue: u32,
    /// Bytes received and not yet read by the application.
    pub rx_queue: u32,
}

pub const TCP_ESTABLISHED: u8 = 1;

/// Every IPv4 TCP socket in /proc/net/tcp.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).filter_map(parse_tcp_line).collect()
}

fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    let (tx, rx) = fields.get(4)?.split_once(':')?;
    Some(TcpSocket {
        local_port: port(fields.get(1)?)?,
        remote_port: port(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        tx_queue: u32::from_str_radix(tx, 16).ok()?,
        rx_queue: u32::from_str_radix(rx, 16).ok()?,
    })
}

/// The state letter of process `pid` (R running, S sleeping, T stopped...), from
/// /proc/PID/stat.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
