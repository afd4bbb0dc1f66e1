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
//! With `--epoll --echo` every request is answered with its own body (the CGI head
//! `Content-Type: application/octet-stream` when its BEGIN_REQUEST arrives, then each piece
//! of STDIN content as a STDOUT record as it arrives, then the empty STDOUT and END_REQUEST
//! after its empty STDIN): one `recv` per readable connection and one `writev` whose pieces
//! point into the receive buffer, so the body is copied only by the kernel, in and out. That
//! bounds what any server can spend echoing a body on this machine (a `POST /echo` of hyper's
//! or fcgi-uring's costs that and its own work).
//!
//! With `--surface` (either IO) every `GET /hello` is answered through the `http` surface
//! instead of with stored bytes: an `http::Request` made from a fixed request's zero-copy slices,
//! one extension, the demo app's `/hello` steps called through `tower::Service`, the CGI head
//! encoded and the records written around it ([`fcgi_loadtest::surface`]). Params are still not
//! read. That is the least any server that hands its application an `http::Request` spends
//! per request on top of the floor's IO, whatever its protocol side costs: a speed target this
//! mode misses is out of reach through that surface.
//!
//! It allocates with mimalloc, as `fcgi-uring serve` does.
//!
//! Usage: `fcgi-floor [--epoll [--echo]] [--surface] [HOST:PORT|unix:PATH [SECONDS]]` (default
//! 127.0.0.1:9000; a UNIX socket's PATH must not exist yet, and is left behind). It prints
//! `listening on ADDR` (port 0 picks a free one) and runs until
//! killed, or for SECONDS, then prints `requests=N` (answers sent) and exits 0, which lets a
//! profiler such as callgrind write its output. Pin it with `taskset -c 0`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fcgi_loadtest::surface::{HelloService, Surface, hello_service};
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    HEADER_LEN, Header, NULL_REQUEST_ID, RecordType, encode_end_request, encode_record,
    encode_stream, encode_stream_end,
};
use fcgi_proto::{Addr, ProtocolStatus};
use fcgi_uring::uring::{CompletionKind, Ring, RingConfig, SendBuf, Token};
use socket2::{Domain, SockAddr, Socket, Type};

/// The token of the listener's accept; connections use their slot number.
const LISTENER: Token = u64::MAX;
/// Listen backlog, as `fcgi-uring serve` uses by default.
const BACKLOG: i32 = 4096;

/// The CGI head of an echo (`--echo`), sent when a request begins.
const ECHO_HEAD: &[u8] = b"Content-Type: application/octet-stream\r\n\r\n";
/// Pieces one `writev` takes at most (Linux's IOV_MAX); an answer with more is copied.
const MAX_IOVECS: usize = 1024;

/// `fcgi-uring serve`'s `GET /hello` answer: the CGI head and body of its STDOUT record.
const HELLO_STDOUT: &[u8] =
    b"Status: 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\nHello, World!";

#[global_allocator]
static GLOBAL: fcgi_uring::alloc::MiMalloc = fcgi_uring::alloc::MiMalloc;

const USAGE: &str =
    "usage: fcgi-floor [--epoll [--echo]] [--surface] [HOST:PORT|unix:PATH [SECONDS]]";

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
    let mut args = std::env::args().skip(1).peekable();
    let (mut epoll, mut echo, mut surface) = (false, false, false);
    while let Some(flag) = args.next_if(|a| a.starts_with("--")) {
        match flag.as_str() {
            "--epoll" => epoll = true,
            "--echo" => echo = true,
            "--surface" => surface = true,
            _ => return Err(usage(&format!("unknown option {flag:?}"))),
        }
    }
    if echo && !epoll {
        return Err(usage("--echo needs --epoll"));
    }
    if echo && surface {
        return Err(usage(
            "--echo answers with the body, --surface with /hello: not both",
        ));
    }
    let addr: Addr = match args.next() {
        Some(a) => a.parse().map_err(|e| usage(&format!("{e}")))?,
        None => Addr::Tcp(([127, 0, 0, 1], 9000).into()),
    };
    let run_for = match args.next() {
        Some(a) => {
            let secs: f64 = a.parse().map_err(|e| invalid("seconds", &a, &e))?;
            let d = Duration::try_from_secs_f64(secs).map_err(|e| invalid("seconds", &a, &e))?;
            Some(d)
        }
        None => None,
    };
    let (listener, bound) =
        listen(&addr).map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
    if epoll {
        println!("listening on {bound}");
        io::stdout().flush()?;
        let answered = EpollFloor::new(listener, echo, Answer::new(surface))?.serve(run_for)?;
        println!("requests={answered}");
        return Ok(());
    }
    let mut ring = Ring::new(&RingConfig::default()).map_err(io::Error::other)?;
    println!("listening on {bound}");
    io::stdout().flush()?;
    let answered = Floor::new(listener, Answer::new(surface)).serve(&mut ring, run_for)?;
    println!("requests={answered}");
    Ok(())
}

fn usage(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} ({USAGE})"))
}

/// A socket listening on `addr`, and the address it is bound to (a TCP port 0 resolved).
fn listen(addr: &Addr) -> io::Result<(OwnedFd, Addr)> {
    let socket = match addr {
        Addr::Tcp(a) => {
            let socket = Socket::new(Domain::for_address(*a), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SockAddr::from(*a))?;
            socket
        }
        Addr::Unix(path) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket
        }
    };
    socket.listen(BACKLOG)?;
    let bound = match addr {
        Addr::Tcp(_) => Addr::Tcp(
            socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("the TCP listener has no IP address"))?,
        ),
        Addr::Unix(path) => Addr::Unix(path.clone()),
    };
    Ok((socket.into(), bound))
}

/// The answer for request id 0; [`patch_id`] sets the id.
fn hello_response() -> Vec<u8> {
    let mut out = Vec::new();
    encode_stream(&mut out, RecordType::Stdout, 0, HELLO_STDOUT);
    encode_stream_end(&mut out, RecordType::Stdout, 0);
    encode_end_request(&mut out, 0, 0, ProtocolStatus::RequestComplete);
    out
}

/// How a request is answered once its STDIN has ended.
enum Answer {
    /// With the stored bytes of [`hello_response`], the request id patched in.
    Stored(Vec<u8>),
    /// Through the `http` surface (`--surface`).
    Surface(Box<Surface<HelloService>>),
}

impl Answer {
    fn new(surface: bool) -> Answer {
        if surface {
            Answer::Surface(Box::new(Surface::new(hello_service())))
        } else {
            Answer::Stored(hello_response())
        }
    }

    /// Appends the answer to request `id` to `out`.
    fn append(&mut self, id: u16, out: &mut Vec<u8>) {
        match self {
            Answer::Stored(response) => {
                patch_id(response, id);
                out.extend_from_slice(response);
            }
            Answer::Surface(surface) => {
                // The STDOUT record is written in place, as the server writes it: its header's
                // room first, the head and body after it, then the header with their length.
                let at = out.len();
                out.extend_from_slice(&[0; HEADER_LEN]);
                let start = out.len();
                // Nothing appended when the service does not answer: no STDOUT content then.
                surface.serve(out);
                match u16::try_from(out.len() - start) {
                    Ok(0) => out.truncate(at),
                    Ok(len) => out[at..start]
                        .copy_from_slice(&Header::new(RecordType::Stdout, id, len).encode()),
                    // Longer than one record: split (never for /hello).
                    Err(_) => {
                        let content = out.split_off(start);
                        out.truncate(at);
                        encode_stream(out, RecordType::Stdout, id, &content);
                    }
                }
                encode_stream_end(out, RecordType::Stdout, id);
                encode_end_request(out, id, 0, ProtocolStatus::RequestComplete);
            }
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// A BEGIN_REQUEST record for this id (its content is not read).
    Begin(u16),
    /// Content of a non-empty STDIN record of this id: these bytes of the slice fed.
    Stdin(u16, Range<usize>),
    /// An empty STDIN record: the request with this id has all its input.
    StdinEnd(u16),
    /// A GET_VALUES record (its content is not read).
    GetValues,
}

/// Finds the records that need an answer in a record stream cut anywhere: reads record headers
/// (which may straddle reads), reports STDIN content where it is, skips the rest.
#[derive(Debug, Default)]
struct RecordScan {
    header: [u8; HEADER_LEN],
    have: usize,
    /// Content of the current record not yet fed, then its padding.
    content: usize,
    padding: usize,
    /// The current record is STDIN for this id (its content is reported).
    stdin: Option<u16>,
}

impl RecordScan {
    /// Feeds the next bytes; calls `on_event` for each record that needs an answer.
    fn feed(&mut self, data: &[u8], mut on_event: impl FnMut(Event)) {
        let mut at = 0;
        while at < data.len() {
            let left = data.len() - at;
            if self.content > 0 {
                let n = self.content.min(left);
                if let Some(id) = self.stdin {
                    on_event(Event::Stdin(id, at..at + n));
                }
                self.content -= n;
                at += n;
                continue;
            }
            if self.padding > 0 {
                let n = self.padding.min(left);
                self.padding -= n;
                at += n;
                continue;
            }
            let n = (HEADER_LEN - self.have).min(left);
            self.header[self.have..self.have + n].copy_from_slice(&data[at..at + n]);
            self.have += n;
            at += n;
            if self.have == HEADER_LEN {
                self.have = 0;
                let header = Header::parse(&self.header);
                self.content = usize::from(header.content_length);
                self.padding = usize::from(header.padding_length);
                self.stdin = None;
                match header.known_type() {
                    Some(RecordType::Stdin) if header.content_length == 0 => {
                        on_event(Event::StdinEnd(header.request_id));
                    }
                    Some(RecordType::Stdin) => self.stdin = Some(header.request_id),
                    Some(RecordType::BeginRequest) => on_event(Event::Begin(header.request_id)),
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
    answer: Answer,
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
    fn new(listener: OwnedFd, answer: Answer) -> Floor {
        Floor {
            listener: Rc::new(listener),
            answer,
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
            // The floor arms no polls.
            CompletionKind::Shutdown { .. } | CompletionKind::Readable { .. } => {}
        }
    }

    fn on_recv(&mut self, token: Token, result: io::Result<&[u8]>, more: bool, turn: &mut Turn) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match result {
            Ok([]) => conn.closed = true,
            Ok(data) => {
                let answer = &mut self.answer;
                let get_values_result = &self.get_values_result;
                let out = &mut conn.out;
                let answered = &mut self.answered;
                conn.scan.feed(data, |event| match event {
                    Event::StdinEnd(id) => {
                        answer.append(id, out);
                        *answered += 1;
                    }
                    Event::GetValues => out.extend_from_slice(get_values_result),
                    Event::Begin(_) | Event::Stdin(..) => {}
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
            // As `fcgi-uring serve` does; a failure only costs latency (a UNIX socket has no
            // such option).
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

/// A piece of an echo's answer: record bytes in [`Echo::heads`] or received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Head(Range<usize>),
    Data(Range<usize>),
}

/// The answer to one receive in `--echo` mode: record headers (and the CGI head, the ends,
/// GET_VALUES_RESULT) written here, the echoed bytes left where they were received.
#[derive(Debug, Default)]
struct Echo {
    heads: Vec<u8>,
    pieces: Vec<Piece>,
    /// Requests whose STDIN ended in this receive.
    ended: u64,
}

impl Echo {
    fn clear(&mut self) {
        self.heads.clear();
        self.pieces.clear();
        self.ended = 0;
    }

    /// Adds the answer to `event` (STDIN content answered as STDOUT of the same bytes).
    fn answer(&mut self, event: Event, get_values_result: &[u8]) {
        let at = self.heads.len();
        match event {
            Event::Begin(id) => encode_record(&mut self.heads, RecordType::Stdout, id, ECHO_HEAD),
            Event::Stdin(id, range) => {
                // Within one record: at most 65,535 bytes.
                let len = u16::try_from(range.len()).unwrap_or(u16::MAX);
                let header = Header::new(RecordType::Stdout, id, len);
                self.heads.extend_from_slice(&header.encode());
                self.push_head(at);
                self.pieces.push(Piece::Data(range));
                return;
            }
            Event::StdinEnd(id) => {
                encode_stream_end(&mut self.heads, RecordType::Stdout, id);
                encode_end_request(&mut self.heads, id, 0, ProtocolStatus::RequestComplete);
                self.ended += 1;
            }
            Event::GetValues => self.heads.extend_from_slice(get_values_result),
        }
        self.push_head(at);
    }

    /// `heads[at..]` is the next piece (joined to the previous one when that is a head too).
    fn push_head(&mut self, at: usize) {
        let end = self.heads.len();
        match self.pieces.last_mut() {
            Some(Piece::Head(last)) if last.end == at => last.end = end,
            _ => self.pieces.push(Piece::Head(at..end)),
        }
    }

    /// The bytes of `piece`, received ones taken from `data`.
    fn bytes<'a>(&'a self, piece: &Piece, data: &'a [u8]) -> &'a [u8] {
        match piece {
            Piece::Head(r) => &self.heads[r.clone()],
            Piece::Data(r) => &data[r.clone()],
        }
    }

    /// The answer's bytes from offset `from` on, copied to `out`.
    fn copy_from(&self, data: &[u8], from: usize, out: &mut Vec<u8>) {
        let mut skip = from;
        for piece in &self.pieces {
            let bytes = self.bytes(piece, data);
            let n = skip.min(bytes.len());
            skip -= n;
            out.extend_from_slice(&bytes[n..]);
        }
    }

    fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Head(r) | Piece::Data(r) => r.len(),
            })
            .sum()
    }
}

/// The floor without a ring (`--epoll`).
struct EpollFloor {
    listener: OwnedFd,
    epoll: OwnedFd,
    answer: Answer,
    get_values_result: Vec<u8>,
    /// Indexed by token.
    conns: Vec<Option<EpollConn>>,
    free: Vec<usize>,
    buf: Vec<u8>,
    /// `--echo`: the answer being built, `None` in the `GET /hello` mode.
    echo: Option<Echo>,
    answered: u64,
}

impl EpollFloor {
    fn new(listener: OwnedFd, echo: bool, answer: Answer) -> io::Result<EpollFloor> {
        use rustix::event::epoll;
        socket2::SockRef::from(&listener).set_nonblocking(true)?;
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
            answer,
            get_values_result: get_values_result(),
            conns: Vec::new(),
            free: Vec::new(),
            buf: vec![0; 64 * 1024],
            echo: echo.then(Echo::default),
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
                Ok((n, _)) if self.echo.is_some() => {
                    if let Some(echo) = &mut self.echo {
                        closed = echo_now(conn, echo, &self.buf[..n], &self.get_values_result);
                        self.answered += echo.ended;
                    }
                }
                Ok((n, _)) => {
                    let answer = &mut self.answer;
                    let get_values_result = &self.get_values_result;
                    let out = &mut conn.out;
                    let answered = &mut self.answered;
                    conn.scan.feed(&self.buf[..n], |event| match event {
                        Event::StdinEnd(id) => {
                            answer.append(id, out);
                            *answered += 1;
                        }
                        Event::GetValues => out.extend_from_slice(get_values_result),
                        Event::Begin(_) | Event::Stdin(..) => {}
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

/// Answers one receive of `--echo` mode (nothing when it owes no answer): one `sendmsg` whose
/// pieces point into `data` (or, behind an earlier short send, or with more pieces than one
/// call takes, a copy queued in `conn.out`); what a short send leaves is copied there.
/// Returns whether the peer is gone.
fn echo_now(conn: &mut EpollConn, echo: &mut Echo, data: &[u8], get_values_result: &[u8]) -> bool {
    use rustix::io::Errno;
    use rustix::net::{SendAncillaryBuffer, SendFlags};
    echo.clear();
    conn.scan
        .feed(data, |event| echo.answer(event, get_values_result));
    if echo.pieces.is_empty() {
        return false;
    }
    if !conn.out.is_empty() || echo.pieces.len() > MAX_IOVECS {
        echo.copy_from(data, 0, &mut conn.out);
        return false;
    }
    let slices: Vec<io::IoSlice<'_>> = echo
        .pieces
        .iter()
        .map(|p| io::IoSlice::new(echo.bytes(p, data)))
        .collect();
    let sent = match rustix::net::sendmsg(
        &conn.fd,
        &slices,
        &mut SendAncillaryBuffer::default(),
        SendFlags::NOSIGNAL,
    ) {
        Ok(n) => n,
        Err(Errno::AGAIN | Errno::INTR) => 0,
        Err(_) => return true,
    };
    if sent < echo.len() {
        echo.copy_from(data, sent, &mut conn.out);
    }
    false
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

    /// The stream of the scan tests: GET_VALUES, then requests 1, 65535 and 7.
    fn stream() -> Vec<u8> {
        let mut stream = record(RecordType::GetValues, 0, b"\x0f\x00FCGI_MPXS_CONNS", 7);
        stream.extend(request(1));
        stream.extend(request(65535));
        stream.extend(request(7));
        stream
    }

    #[test]
    fn finds_each_request_end_and_its_stdin_however_the_stream_is_cut() {
        let stream = stream();
        for chunk in 1..=stream.len() {
            let mut scan = RecordScan::default();
            let mut events = Vec::new();
            let mut stdin: HashMap<u16, Vec<u8>> = HashMap::new();
            for piece in stream.chunks(chunk) {
                scan.feed(piece, |event| match event {
                    Event::Stdin(id, range) => stdin
                        .entry(id)
                        .or_default()
                        .extend_from_slice(&piece[range]),
                    other => events.push(other),
                });
            }
            let mut expected = vec![Event::GetValues];
            for id in [1, 65535, 7] {
                expected.extend([Event::Begin(id), Event::StdinEnd(id)]);
            }
            assert_eq!(events, expected, "chunk size {chunk}");
            for id in [1, 65535, 7] {
                assert_eq!(stdin[&id], b"body bytes", "chunk size {chunk}, id {id}");
            }
        }
    }

    /// Splits `bytes` into records: (type, id, content).
    fn records(bytes: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let mut header = [0; HEADER_LEN];
            header.copy_from_slice(&bytes[at..at + HEADER_LEN]);
            let header = Header::parse(&header);
            let content = at + HEADER_LEN..at + HEADER_LEN + usize::from(header.content_length);
            out.push((
                header.record_type,
                header.request_id,
                bytes[content].to_vec(),
            ));
            at += HEADER_LEN + header.body_len();
        }
        out
    }

    #[test]
    fn echo_answers_each_request_with_its_body_however_the_stream_is_cut() {
        let stream = stream();
        let values = get_values_result();
        for chunk in 1..=stream.len() {
            let mut scan = RecordScan::default();
            let mut echo = Echo::default();
            let mut answer = Vec::new();
            let mut ended = 0;
            for piece in stream.chunks(chunk) {
                echo.clear();
                scan.feed(piece, |event| echo.answer(event, &values));
                let before = answer.len();
                echo.copy_from(piece, 0, &mut answer);
                assert_eq!(answer.len() - before, echo.len());
                ended += echo.ended;
            }
            assert_eq!(ended, 3, "chunk size {chunk}");
            assert!(answer.starts_with(&values), "chunk size {chunk}");
            let mut stdout: HashMap<u16, Vec<u8>> = HashMap::new();
            let mut done = Vec::new();
            for (kind, id, content) in records(&answer[values.len()..]) {
                match RecordType::from_u8(kind) {
                    Some(RecordType::Stdout) if content.is_empty() => done.push(id),
                    Some(RecordType::Stdout) => {
                        assert!(!done.contains(&id), "STDOUT after its end, id {id}");
                        stdout.entry(id).or_default().extend_from_slice(&content);
                    }
                    Some(RecordType::EndRequest) => {
                        assert_eq!(done.last(), Some(&id), "END_REQUEST after STDOUT's end");
                    }
                    other => panic!("unexpected record {other:?}"),
                }
            }
            assert_eq!(done, [1, 65535, 7], "chunk size {chunk}");
            for id in [1, 65535, 7] {
                assert_eq!(stdout[&id], [ECHO_HEAD, b"body bytes"].concat(), "id {id}");
            }
        }
    }

    #[test]
    fn an_answer_cut_anywhere_is_copied_from_the_cut_on() {
        let stream = stream();
        let mut scan = RecordScan::default();
        let mut echo = Echo::default();
        scan.feed(&stream, |event| echo.answer(event, &get_values_result()));
        let mut whole = Vec::new();
        echo.copy_from(&stream, 0, &mut whole);
        for from in 0..=whole.len() {
            let mut rest = Vec::new();
            echo.copy_from(&stream, from, &mut rest);
            assert_eq!(rest, whole[from..], "from {from}");
        }
    }

    #[test]
    fn the_surface_answers_with_the_stored_bytes() {
        let (mut stored, mut surface) = (Answer::new(false), Answer::new(true));
        for id in [1, 0x1234, 65535] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            stored.append(id, &mut a);
            surface.append(id, &mut b);
            assert_eq!(a, b, "id {id}");
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
