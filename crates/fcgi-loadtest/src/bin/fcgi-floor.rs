//! The floor for a FastCGI server on this machine: what the kernel and the io_uring driver cost
//! when the application costs nothing.
//!
//! It runs the same ring as `fcgi-uring serve` (`fcgi_uring::uring::Ring` with the default
//! `RingConfig`: multishot accept, multishot receive into the provided-buffer pool, one send per
//! connection per loop turn, DEFER_TASKRUN), but parses nothing: it reads only the 8-byte record
//! headers, and for each request's end of STDIN (an empty STDIN record, FastCGI 1.0 section 5.3)
//! it appends the exact bytes `fcgi-uring serve` answers `GET /hello` with (124 bytes: STDOUT with
//! the CGI head and `Hello, World!`, the empty STDOUT, END_REQUEST), with the request id patched.
//! GET_VALUES gets `FCGI_MPXS_CONNS=1` whatever it asks, so clients multiplex. Params, roles,
//! KEEP_CONN, other management records and limits are ignored: this is a measuring
//! instrument, not a server. Its throughput at a given load is an upper bound for any FastCGI
//! server on this ring, kernel and client, so `fcgi-uring serve` / `fcgi-floor` is the share of
//! the reachable rate the real server reaches, and `fcgi-floor` / another server bounds the ratio
//! any FastCGI server could reach against it on this machine.
//!
//! With `--epoll` it runs no ring at all: one epoll instance, level-triggered, sleeping in
//! `epoll_wait`; each readable connection gets one `recv` (64 KiB buffer) and its answers one
//! `send` right away. At one connection that is one `epoll_wait`, one `recv` and one `send`
//! per request, the least a readiness-based server can do: the bound for fcgi-uring's wake
//! path at low load, which the io_uring floor shares and so cannot measure.
//!
//! Usage: `fcgi-floor [--epoll] [HOST:PORT [SECONDS]]` (default 127.0.0.1:9000). It prints
//! `listening on ADDR` (port 0 picks a free one) and runs until killed, or for SECONDS, then
//! prints `requests=N` (answers sent) and exits 0, which lets a profiler such as callgrind
//! write its output. Pin it with `taskset -c 0`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fcgi_proto::ProtocolStatus;
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    HEADER_LEN, Header, NULL_REQUEST_ID, RecordType, encode_end_request, encode_record,
    encode_stream, encode_stream_end,
};
use fcgi_uring::uring::{CompletionKind, Ring, RingConfig, SendBuf, Token};
use socket2::{Domain, Socket, Type};

/// The token of the listener's accept; connections use their slot number.
const LISTENER: Token = u64::MAX;
/// Listen backlog, as `fcgi-uring serve` uses by default.
const BACKLOG: i32 = 4096;

/// `fcgi-uring serve`'s `GET /hello` answer: the CGI head and body of its STDOUT record.
const HELLO_STDOUT: &[u8] =
    b"Status: 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\nHello, World!";

fn main() {
    if let Err(err) = run() {
        eprintln!("fcgi-floor: {err}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let invalid = |what: &str, a: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {a:?}: {e}"))
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let epoll = args.first().is_some_and(|a| a == "--epoll");
    if epoll {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let addr: SocketAddr = match args.next() {
        Some(a) => a.parse().map_err(|e| invalid("address", &a, &e))?,
        None => SocketAddr::from(([127, 0, 0, 1], 9000)),
    };
    let run_for = match args.next() {
        Some(a) => {
            let secs: f64 = a.parse().map_err(|e| invalid("seconds", &a, &e))?;
            let d = Duration::try_from_secs_f64(secs).map_err(|e| invalid("seconds", &a, &e))?;
            Some(d)
        }
        None => None,
    };
    let listener = listen(addr)?;
    if epoll {
        println!("listening on {}", listener.local_addr()?);
        io::stdout().flush()?;
        let answered = EpollFloor::new(listener)?.serve(run_for)?;
        println!("requests={answered}");
        return Ok(());
    }
    let mut ring = Ring::new(&RingConfig::default()).map_err(io::Error::other)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let answered = Floor::new(listener).serve(&mut ring, run_for)?;
    println!("requests={answered}");
    Ok(())
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The answer for request id 0; [`patch_id`] sets the id.
fn hello_response() -> Vec<u8> {
    let mut out = Vec::new();
    encode_stream(&mut out, RecordType::Stdout, 0, HELLO_STDOUT);
    encode_stream_end(&mut out, RecordType::Stdout, 0);
    encode_end_request(&mut out, 0, 0, ProtocolStatus::RequestComplete);
    out
}

/// The answer to any GET_VALUES (section 4.1): `FCGI_MPXS_CONNS=1`, so that load clients
/// multiplex. Nothing else is claimed: the floor has no limits to report.
fn get_values_result() -> Vec<u8> {
    let mut pair = Vec::new();
    encode_pair(&mut pair, b"FCGI_MPXS_CONNS", b"1");
    let mut out = Vec::new();
    encode_record(
        &mut out,
        RecordType::GetValuesResult,
        NULL_REQUEST_ID,
        &pair,
    );
    out
}

/// Writes `id` into every record header of a response built by [`hello_response`].
fn patch_id(response: &mut [u8], id: u16) {
    let mut at = 0;
    while let Some(bytes) = response.get_mut(at..at + HEADER_LEN) {
        bytes[2..4].copy_from_slice(&id.to_be_bytes());
        let mut header = [0; HEADER_LEN];
        header.copy_from_slice(bytes);
        at += HEADER_LEN + Header::parse(&header).body_len();
    }
}

/// What [`RecordScan`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// An empty STDIN record: the request with this id has all its input.
    StdinEnd(u16),
    /// A GET_VALUES record (its content is not read).
    GetValues,
}

/// Finds the end of each request's STDIN in a record stream cut anywhere: reads record headers
/// (which may straddle reads) and skips content and padding.
#[derive(Debug, Default)]
struct RecordScan {
    header: [u8; HEADER_LEN],
    have: usize,
    skip: usize,
}

impl RecordScan {
    /// Feeds the next bytes; calls `on_event` for each record that needs an answer.
    fn feed(&mut self, mut data: &[u8], mut on_event: impl FnMut(Event)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == HEADER_LEN {
                self.have = 0;
                let header = Header::parse(&self.header);
                self.skip = header.body_len();
                match header.known_type() {
                    Some(RecordType::Stdin) if header.content_length == 0 => {
                        on_event(Event::StdinEnd(header.request_id));
                    }
                    Some(RecordType::GetValues) => on_event(Event::GetValues),
                    _ => {}
                }
            }
        }
    }
}

struct Conn {
    /// Shared with the ring's operations on it, which keep it open until they end.
    fd: Rc<OwnedFd>,
    scan: RecordScan,
    /// Answers not yet handed to a send.
    out: Vec<u8>,
    /// A send is in flight (at most one per connection, as in `fcgi-uring serve`).
    sending: bool,
    /// End of stream or an error: dropped at the end of the turn.
    closed: bool,
}

struct Floor {
    listener: Rc<OwnedFd>,
    response: Vec<u8>,
    get_values_result: Vec<u8>,
    conns: HashMap<Token, Conn>,
    next_token: Token,
    /// Spare output buffers, so the steady state allocates nothing.
    spare: Vec<Vec<u8>>,
    /// Requests answered.
    answered: u64,
}

/// What the completions of one turn asked for, done once the ring is free again.
#[derive(Default)]
struct Turn {
    accepted: Vec<OwnedFd>,
    rearm_accept: bool,
    rearm_recv: Vec<Token>,
}

impl Floor {
    fn new(listener: TcpListener) -> Floor {
        Floor {
            listener: Rc::new(OwnedFd::from(listener)),
            response: hello_response(),
            get_values_result: get_values_result(),
            conns: HashMap::new(),
            next_token: 0,
            spare: Vec::new(),
            answered: 0,
        }
    }

    /// Serves until `run_for` has passed (`None`: forever); returns the requests answered.
    fn serve(mut self, ring: &mut Ring, run_for: Option<Duration>) -> io::Result<u64> {
        ring.accept_multishot(&self.listener, LISTENER);
        let mut turn = Turn::default();
        let deadline = run_for.map(|d| Instant::now() + d);
        loop {
            match deadline {
                None => ring.submit_and_wait()?,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(self.answered);
                    }
                    ring.submit_and_wait_timeout(left)?;
                }
            }
            ring.complete(|c| self.on_completion(c.token, c.kind, &mut turn));
            self.finish_turn(ring, &mut turn);
        }
    }

    fn on_completion(&mut self, token: Token, kind: CompletionKind<'_>, turn: &mut Turn) {
        match kind {
            CompletionKind::Accept { result, more } => {
                match result {
                    Ok(fd) => turn.accepted.push(fd),
                    Err(err) => eprintln!("fcgi-floor: accept: {err}"),
                }
                turn.rearm_accept |= !more;
            }
            CompletionKind::Recv { result, more } => self.on_recv(token, result, more, turn),
            CompletionKind::Send { result, buf } => self.on_sent(token, result, buf),
            CompletionKind::Shutdown { .. } => {}
        }
    }

    fn on_recv(&mut self, token: Token, result: io::Result<&[u8]>, more: bool, turn: &mut Turn) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match result {
            Ok([]) => conn.closed = true,
            Ok(data) => {
                let response = &mut self.response;
                let get_values_result = &self.get_values_result;
                let out = &mut conn.out;
                let answered = &mut self.answered;
                conn.scan.feed(data, |event| match event {
                    Event::StdinEnd(id) => {
                        patch_id(response, id);
                        out.extend_from_slice(response);
                        *answered += 1;
                    }
                    Event::GetValues => out.extend_from_slice(get_values_result),
                });
                if !more {
                    turn.rearm_recv.push(token);
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => turn.rearm_recv.push(token),
            Err(_) => conn.closed = true,
        }
    }

    fn on_sent(&mut self, token: Token, result: io::Result<usize>, buf: SendBuf) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.sending = false;
        let Some(mut buf) = buf.into_heap() else {
            return;
        };
        match result {
            Ok(n) if n < buf.len() => {
                // A short send: what is left goes first, before the newer answers.
                buf.drain(..n);
                buf.append(&mut conn.out);
                conn.out = buf;
            }
            Ok(_) => {
                buf.clear();
                self.spare.push(buf);
            }
            Err(_) => conn.closed = true,
        }
    }

    fn finish_turn(&mut self, ring: &mut Ring, turn: &mut Turn) {
        if std::mem::take(&mut turn.rearm_accept) {
            ring.accept_multishot(&self.listener, LISTENER);
        }
        for fd in turn.accepted.drain(..) {
            let socket = Socket::from(fd);
            // As `fcgi-uring serve` does; a failure only costs latency.
            let _ = socket.set_tcp_nodelay(true);
            let token = self.next_token;
            self.next_token += 1;
            let fd = Rc::new(OwnedFd::from(socket));
            ring.recv_multishot(&fd, token);
            let conn = Conn {
                fd,
                scan: RecordScan::default(),
                out: Vec::new(),
                sending: false,
                closed: false,
            };
            self.conns.insert(token, conn);
        }
        for token in turn.rearm_recv.drain(..) {
            if let Some(conn) = self.conns.get(&token).filter(|c| !c.closed) {
                ring.recv_multishot(&conn.fd, token);
            }
        }
        self.send_all(ring);
    }

    /// One send per connection with answers waiting and none in flight; drops closed ones.
    fn send_all(&mut self, ring: &mut Ring) {
        let spare = &mut self.spare;
        self.conns.retain(|&token, conn| {
            if conn.closed {
                // The ring keeps the fd open until its last operation ends.
                return false;
            }
            if !conn.sending && !conn.out.is_empty() {
                let next = spare.pop().unwrap_or_default();
                let out = std::mem::replace(&mut conn.out, next);
                ring.send(&conn.fd, out, 0, token);
                conn.sending = true;
            }
            true
        });
    }
}

/// One connection of the epoll floor.
struct EpollConn {
    fd: OwnedFd,
    scan: RecordScan,
    /// Answers a short send left.
    out: Vec<u8>,
    /// Registered for writability too (while `out` is not empty).
    writing: bool,
}

/// The floor without a ring (`--epoll`).
struct EpollFloor {
    listener: OwnedFd,
    epoll: OwnedFd,
    response: Vec<u8>,
    get_values_result: Vec<u8>,
    /// Indexed by token.
    conns: Vec<Option<EpollConn>>,
    free: Vec<usize>,
    buf: Vec<u8>,
    answered: u64,
}

impl EpollFloor {
    fn new(listener: TcpListener) -> io::Result<EpollFloor> {
        use rustix::event::epoll;
        listener.set_nonblocking(true)?;
        let listener = OwnedFd::from(listener);
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &ep,
            &listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN,
        )?;
        Ok(EpollFloor {
            listener,
            epoll: ep,
            response: hello_response(),
            get_values_result: get_values_result(),
            conns: Vec::new(),
            free: Vec::new(),
            buf: vec![0; 64 * 1024],
            answered: 0,
        })
    }

    /// Serves until `run_for` has passed (`None`: forever); returns the requests answered.
    fn serve(mut self, run_for: Option<Duration>) -> io::Result<u64> {
        use rustix::event::{Timespec, epoll};
        use rustix::io::Errno;
        let deadline = run_for.map(|d| Instant::now() + d);
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(self.answered);
                    }
                    Some(Timespec::try_from(left).map_err(io::Error::other)?)
                }
            };
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            for ev in &events {
                let token = ev.data.u64();
                if token == LISTENER {
                    self.accept_all()?;
                } else {
                    self.on_ready(token as usize, ev.flags);
                }
            }
        }
    }

    fn accept_all(&mut self) -> io::Result<()> {
        use rustix::event::epoll;
        use rustix::io::Errno;
        use rustix::net::SocketFlags;
        loop {
            let fd = match rustix::net::accept_with(
                &self.listener,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(e) => {
                    eprintln!("fcgi-floor: accept: {e}");
                    return Ok(());
                }
            };
            // As `fcgi-uring serve` does; a failure only costs latency.
            let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
            let token = self.free.pop().unwrap_or(self.conns.len());
            epoll::add(
                &self.epoll,
                &fd,
                epoll::EventData::new_u64(token as u64),
                epoll::EventFlags::IN,
            )?;
            let conn = EpollConn {
                fd,
                scan: RecordScan::default(),
                out: Vec::new(),
                writing: false,
            };
            match self.conns.get_mut(token) {
                Some(slot) => *slot = Some(conn),
                None => self.conns.push(Some(conn)),
            }
        }
    }

    /// One `recv` if readable, then one `send` of what is owed.
    fn on_ready(&mut self, token: usize, flags: rustix::event::epoll::EventFlags) {
        use rustix::event::epoll::{self, EventFlags as F};
        use rustix::io::Errno;
        use rustix::net::{RecvFlags, SendFlags};
        let Some(conn) = self.conns.get_mut(token).and_then(Option::as_mut) else {
            return;
        };
        let mut closed = false;
        if flags.intersects(F::IN | F::HUP | F::ERR) {
            match rustix::net::recv(&conn.fd, &mut self.buf[..], RecvFlags::empty()) {
                Ok((0, _)) => closed = true,
                Ok((n, _)) => {
                    let response = &mut self.response;
                    let get_values_result = &self.get_values_result;
                    let out = &mut conn.out;
                    let answered = &mut self.answered;
                    conn.scan.feed(&self.buf[..n], |event| match event {
                        Event::StdinEnd(id) => {
                            patch_id(response, id);
                            out.extend_from_slice(response);
                            *answered += 1;
                        }
                        Event::GetValues => out.extend_from_slice(get_values_result),
                    });
                }
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(_) => closed = true,
            }
        }
        if !closed && !conn.out.is_empty() {
            match rustix::net::send(&conn.fd, &conn.out, SendFlags::NOSIGNAL) {
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(_) => closed = true,
            }
        }
        let want_out = !conn.out.is_empty();
        if !closed && want_out != conn.writing {
            let flags = if want_out { F::IN | F::OUT } else { F::IN };
            closed = epoll::modify(
                &self.epoll,
                &conn.fd,
                epoll::EventData::new_u64(token as u64),
                flags,
            )
            .is_err();
            conn.writing = want_out;
        }
        if closed {
            // Dropping the fd closes it, which also removes it from the epoll set.
            self.conns[token] = None;
            self.free.push(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with `pad` bytes of padding (which the scan must skip).
    fn record(kind: RecordType, id: u16, content: &[u8], pad: u8) -> Vec<u8> {
        let mut header = Header::new(kind, id, content.len() as u16);
        header.padding_length = pad;
        let mut r = header.encode().to_vec();
        r.extend_from_slice(content);
        r.extend(std::iter::repeat_n(0, usize::from(pad)));
        r
    }

    /// BEGIN_REQUEST, PARAMS, empty PARAMS, STDIN with a body, empty STDIN for `id`.
    fn request(id: u16) -> Vec<u8> {
        let mut s = record(RecordType::BeginRequest, id, &[0, 1, 1, 0, 0, 0, 0, 0], 0);
        s.extend(record(
            RecordType::Params,
            id,
            b"\x0b\x06REQUEST_URI/hello",
            3,
        ));
        s.extend(record(RecordType::Params, id, b"", 0));
        s.extend(record(RecordType::Stdin, id, b"body bytes", 6));
        s.extend(record(RecordType::Stdin, id, b"", 0));
        s
    }

    #[test]
    fn finds_each_request_end_however_the_stream_is_cut() {
        let mut stream = record(RecordType::GetValues, 0, b"\x0f\x00FCGI_MPXS_CONNS", 7);
        stream.extend(request(1));
        stream.extend(request(65535));
        stream.extend(request(7));
        for chunk in 1..=stream.len() {
            let mut scan = RecordScan::default();
            let mut ends = Vec::new();
            for piece in stream.chunks(chunk) {
                scan.feed(piece, |event| ends.push(event));
            }
            let mut expected = vec![Event::GetValues];
            expected.extend([1, 65535, 7].map(Event::StdinEnd));
            assert_eq!(ends, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn the_answer_carries_the_request_id_in_every_record() {
        let mut response = hello_response();
        assert_eq!(
            response.len(),
            124,
            "the size fcgi-uring serve answers /hello with"
        );
        patch_id(&mut response, 0x1234);
        let mut scan = RecordScan::default();
        let mut records = 0;
        let mut at = 0;
        while at < response.len() {
            assert_eq!(&response[at + 2..at + 4], &[0x12, 0x34]);
            let len = usize::from(u16::from_be_bytes([response[at + 4], response[at + 5]]));
            at += 8 + len;
            records += 1;
        }
        assert_eq!(at, response.len());
        assert_eq!(records, 3);
        scan.feed(&response, |e| {
            panic!("no record to answer in an answer: {e:?}")
        });
    }
}
