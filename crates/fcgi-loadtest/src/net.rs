//! Sockets for TCP and UNIX addresses, blocking or not, as one type ([`Socket`]).

use std::io;
use std::time::Duration;

use fcgi_uring::Addr;
use socket2::{Domain, SockAddr, Socket, Type};

/// How a non-blocking connect started.
pub enum Connecting {
    /// Connected at once (common for UNIX sockets).
    Done(Socket),
    /// In progress: wait for writability, then check [`finish_connect`].
    InProgress(Socket),
}

fn new_socket(addr: &Addr) -> io::Result<(Socket, SockAddr)> {
    let (domain, sockaddr) = match addr {
        Addr::Tcp(sa) => (Domain::for_address(*sa), SockAddr::from(*sa)),
        Addr::Unix(path) => (Domain::UNIX, SockAddr::unix(path)?),
    };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), None)?;
    if matches!(addr, Addr::Tcp(_)) {
        socket.set_tcp_nodelay(true)?;
    }
    Ok((socket, sockaddr))
}

/// Starts a non-blocking connect.
pub fn start_connect(addr: &Addr) -> io::Result<Connecting> {
    let (socket, sockaddr) = new_socket(addr)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&sockaddr) {
        Ok(()) => Ok(Connecting::Done(socket)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Connecting::InProgress(socket)),
        Err(e) => Err(e),
    }
}

/// Whether a connect that was in progress succeeded (call when the socket is writable).
pub fn finish_connect(socket: &Socket) -> io::Result<()> {
    match socket.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A blocking connection with `timeout` on connect, reads and writes.
pub fn connect_blocking(addr: &Addr, timeout: Duration) -> io::Result<Socket> {
    let (socket, sockaddr) = new_socket(addr)?;
    socket.connect_timeout(&sockaddr, timeout)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket)
}
