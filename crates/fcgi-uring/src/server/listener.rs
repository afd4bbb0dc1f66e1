//! Listening sockets: one SO_REUSEPORT TCP listener per worker, or one UNIX listener shared by
//! all workers (SO_REUSEPORT fails on AF_UNIX since Linux 6.12.9: every worker's ring accepts
//! on the same socket instead).
//!
//! A TCP port another listening socket already holds is refused (`AddrInUse`), as a plain
//! `bind` would be: SO_REUSEPORT would otherwise let a second server silently take part of the
//! traffic. [`refuse_if_served`] is the one place that checks; `server.share_port` skips it, and
//! sockets received from elsewhere (handover, socket activation) never reach it.

use fcgi_proto::addr::Addr;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

/// The listening sockets of a server, bound before any worker starts.
#[derive(Debug)]
pub(crate) struct Listeners {
    /// The address actually bound (the real port when 0 was asked).
    pub local: Addr,
    /// One per worker for TCP; a single shared one for UNIX.
    pub sockets: Vec<Arc<OwnedFd>>,
    pub is_tcp: bool,
    /// Passed by systemd or a hot upgrade: a UNIX socket's file belongs to whoever passed it.
    pub passed: bool,
}

impl Listeners {
    /// The listener worker `i` accepts on.
    pub fn for_worker(&self, i: usize) -> Arc<OwnedFd> {
        self.sockets[i % self.sockets.len()].clone()
    }

    /// How many workers serve these sockets when `configured` are asked: never fewer than the
    /// sockets (a passed SO_REUSEPORT socket no worker accepted on would keep its queued
    /// connections waiting forever).
    pub fn workers(&self, configured: usize) -> usize {
        configured.max(self.sockets.len())
    }

    /// The FastCGI listeners `passed` holds (none: bind instead).
    pub fn from_passed(passed: Vec<super::passed::Listener>) -> io::Result<Option<Listeners>> {
        use super::passed::Listener;
        let Some(first) = passed.first() else {
            return Ok(None);
        };
        let (local, is_tcp) = match first {
            Listener::Tcp(l) => (Addr::Tcp(l.local_addr()?), true),
            Listener::Unix(l) => {
                let addr = l.local_addr()?;
                let path = addr.as_pathname().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a passed UNIX socket has no path (abstract and unnamed sockets are not served)",
                    )
                })?;
                (Addr::Unix(path.to_path_buf()), false)
            }
        };
        let sockets = passed
            .into_iter()
            .map(|l| l.into_fd().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Some(Listeners {
            local,
            sockets,
            is_tcp,
            passed: true,
        }))
    }
}

/// Binds `addr` for `workers` workers; a TCP port already listened on is refused unless
/// `share_port`.
pub(crate) fn bind(
    addr: &Addr,
    workers: usize,
    backlog: i32,
    unix_mode: Option<u32>,
    share_port: bool,
) -> io::Result<Listeners> {
    match addr {
        Addr::Tcp(sa) => {
            if !share_port {
                refuse_if_served(*sa)?;
            }
            bind_tcp(*sa, workers, backlog)
        }
        Addr::Unix(path) => bind_unix(path, backlog, unix_mode),
    }
}

fn bind_tcp(addr: SocketAddr, workers: usize, backlog: i32) -> io::Result<Listeners> {
    let first = tcp_socket(addr, backlog)?;
    let local = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound TCP socket has no IP address"))?;
    let mut sockets = vec![Arc::new(OwnedFd::from(first))];
    for _ in 1..workers.max(1) {
        sockets.push(Arc::new(OwnedFd::from(tcp_socket(local, backlog)?)));
    }
    Ok(Listeners {
        local: Addr::Tcp(local),
        sockets,
        is_tcp: true,
        passed: false,
    })
}

/// `AddrInUse` when a socket already listens on `addr`: a socket without SO_REUSEPORT cannot
/// bind next to a listener, whatever that one's options (SO_REUSEADDR, set here, still lets a
/// port whose old connections linger in TIME_WAIT be bound). Port 0 asks for a fresh port: no
/// check. The probe is closed before the real listeners bind.
fn refuse_if_served(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "cannot bind {addr}: another server already listens there (set server.share_port \
                 to share it through SO_REUSEPORT)"
            ),
        )),
        // Any other failure is reported by the real bind, with its own message.
        _ => Ok(()),
    }
}

fn tcp_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    socket.listen(backlog)?;
    Ok(socket)
}

fn bind_unix(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<Listeners> {
    remove_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let sa = socket2::SockAddr::unix(path)?;
    socket.bind(&sa).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind unix:{}: {e}", path.display()),
        )
    })?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    socket.listen(backlog)?;
    Ok(Listeners {
        local: Addr::Unix(path.to_path_buf()),
        sockets: vec![Arc::new(OwnedFd::from(socket))],
        is_tcp: false,
        passed: false,
    })
}

/// Removes a socket file left by an earlier run, refusing to touch anything that is not a socket
/// or that a live server still answers on.
pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("unix:{} is in use by a running server", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// The IP address of a connected TCP socket's peer, for `server.allowed_peers` (`None`: not an
/// IP socket, or the peer is already gone).
pub(crate) fn peer_ip(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::net::IpAddr> {
    let addr = socket2::SockRef::from(&fd).peer_addr().ok()?;
    addr.as_socket().map(|a| a.ip())
}

/// The allow-list in effect: `server.allowed_peers`, else `FCGI_WEB_SERVER_ADDRS` from the
/// environment (FastCGI 1.0 section 3.2; TCP listeners only), else none. An invalid
/// `FCGI_WEB_SERVER_ADDRS` is an error rather than a list that lets everyone in.
pub(crate) fn allowed_peers(
    cfg: &crate::Config,
) -> Result<Option<Arc<crate::config::PeerList>>, super::StartError> {
    use crate::config::WEB_SERVER_ADDRS_ENV;
    let list = match (cfg.allowed_peers(), std::env::var(WEB_SERVER_ADDRS_ENV)) {
        (Some(list), _) => list.clone(),
        (None, Err(_)) => return Ok(None),
        (None, Ok(_)) if matches!(cfg.listen(), Addr::Unix(_)) => {
            tracing::warn!(
                "{WEB_SERVER_ADDRS_ENV} ignored: it applies to TCP listeners, and this one is a \
                 UNIX socket (guarded by its file mode)"
            );
            return Ok(None);
        }
        (None, Ok(value)) => value
            .parse()
            .map_err(|error| super::StartError::WebServerAddrs {
                value: value.clone(),
                error,
            })?,
    };
    tracing::info!("accepting connections only from {list} (server.allowed_peers)");
    Ok(Some(Arc::new(list)))
}

/// `timeouts.write` as TCP_USER_TIMEOUT on the TCP `listeners` (their accepted connections
/// inherit it): a peer that takes none of the bytes the kernel holds for it for that long (it
/// stopped reading, its window stays closed) is reset by the kernel, as the write deadline
/// closes one that leaves output queued in the server. Without it an answer the kernel took
/// whole (up to its send buffer, 4 MiB by default) would keep a peer that never reads open
/// until the idle deadline. 0 (off) leaves the kernel's default (no such bound).
pub(crate) fn bound_unacknowledged_output(listeners: &[Arc<OwnedFd>], write: std::time::Duration) {
    if write.is_zero() {
        return;
    }
    let ms = u32::try_from(write.as_millis()).unwrap_or(u32::MAX);
    for fd in listeners {
        if let Err(e) = rustix::net::sockopt::set_tcp_user_timeout(&**fd, ms) {
            tracing::warn!("cannot set TCP_USER_TIMEOUT on a listener (timeouts.write): {e}");
        }
    }
}
