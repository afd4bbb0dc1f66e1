//! Loopback tests of the [`Ring`]. Every wait is bounded: nothing here can hang.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `cond` holds, polling it with a short backoff; panics naming `what` after
/// [`TIMEOUT`] (a hang guard). Tests wait for a fact this way, never for a fixed time.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(Instant::now() < deadline, "waited {TIMEOUT:?} for {what}");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The kernel's id of the calling thread.
fn current_tid() -> u64 {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("a thread id")
}

/// Whether thread `tid` of this process is asleep in the kernel (state S in its stat).
fn thread_asleep(tid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        == Some('S')
}

/// A completion with everything owned, to inspect after `complete` returns.
enum Event {
    Accept(io::Result<OwnedFd>, bool),
    Recv(io::Result<Vec<u8>>, bool),
    Send(io::Result<usize>, Vec<u8>),
    Shutdown(io::Result<()>),
    Readable(io::Result<()>, bool),
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Accept(result, more) => write!(f, "Accept({result:?}, more: {more})"),
            Event::Recv(Ok(data), more) => write!(f, "Recv({} bytes, more: {more})", data.len()),
            Event::Recv(Err(err), more) => write!(f, "Recv({err}, more: {more})"),
            // Not the buffer: it may be megabytes.
            Event::Send(result, buf) => write!(f, "Send({result:?}, buf of {})", buf.len()),
            Event::Shutdown(result) => write!(f, "Shutdown({result:?})"),
            Event::Readable(result, more) => write!(f, "Readable({result:?}, more: {more})"),
        }
    }
}

fn own(completion: Completion<'_>) -> (Token, Event) {
    let event = match completion.kind {
        CompletionKind::Accept { result, more } => Event::Accept(result, more),
        CompletionKind::Recv { result, more } => Event::Recv(result.map(<[u8]>::to_vec), more),
        CompletionKind::Send { result, buf } => {
            Event::Send(result, buf.into_heap().unwrap_or_default())
        }
        CompletionKind::Shutdown { result } => Event::Shutdown(result),
        CompletionKind::Readable { result, more } => Event::Readable(result.map(drop), more),
    };
    (completion.token, event)
}

fn config() -> RingConfig {
    RingConfig {
        sq_entries: 64,
        cq_entries: 256,
        recv_buffers: 16,
        recv_buffer_size: 4096,
        defer_taskrun: true,
        ..RingConfig::default()
    }
}

fn ring() -> Ring {
    match Ring::new(&config()) {
        Ok(ring) => ring,
        Err(err) => panic!("ring setup: {err}"),
    }
}

/// Submits, waits and reaps until `done` holds for the events seen so far (panics on timeout).
fn run_until(
    ring: &mut Ring,
    events: &mut Vec<(Token, Event)>,
    mut done: impl FnMut(&[(Token, Event)]) -> bool,
) {
    let deadline = Instant::now() + TIMEOUT;
    while !done(events) {
        assert!(
            Instant::now() < deadline,
            "timed out; events so far: {events:?}"
        );
        ring.submit_and_wait_timeout(Duration::from_millis(50))
            .expect("enter");
        ring.complete(|c| events.push(own(c)));
    }
}

/// An owned duplicate of `socket`'s fd, for the ring to keep open while it uses it.
fn dup(socket: &impl AsFd) -> Rc<OwnedFd> {
    Rc::new(socket.as_fd().try_clone_to_owned().expect("dup"))
}

/// A connected loopback pair: (client, server side).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

fn recv_bytes(events: &[(Token, Event)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (_, event) in events {
        if let Event::Recv(Ok(data), _) = event {
            bytes.extend_from_slice(data);
        }
    }
    bytes
}

fn errno(result: &io::Result<impl std::fmt::Debug>) -> Option<i32> {
    result.as_ref().err().and_then(io::Error::raw_os_error)
}

/// Queues a send of `buf` from `offset` and waits (bounded by `deadline`) for its completion:
/// its result and the buffer it gives back.
fn send_and_wait(
    ring: &mut Ring,
    fd: &Rc<OwnedFd>,
    buf: impl Into<SendBuf>,
    offset: usize,
    deadline: Instant,
) -> (io::Result<usize>, SendBuf) {
    ring.send(fd, buf, offset, 9);
    let mut back = None;
    while back.is_none() {
        assert!(Instant::now() < deadline, "send timed out");
        ring.submit_and_wait_timeout(Duration::from_millis(50))
            .expect("enter");
        ring.complete(|c| {
            if let CompletionKind::Send { result, buf } = c.kind {
                back = Some((result, buf));
            }
        });
    }
    back.expect("completion")
}

#[test]
fn features_on_this_machine() {
    let ring = ring();
    let features = ring.features();
    eprintln!("io_uring features: {features}");
    assert!(features.multishot_accept && features.multishot_recv && features.provided_buffer_ring);
    assert!(features.to_string().starts_with("kernel "));
}

#[test]
fn invalid_config_is_refused_before_the_kernel() {
    let bad = RingConfig {
        recv_buffers: 3,
        ..config()
    };
    assert!(matches!(Ring::new(&bad), Err(SetupError::Config(_))));
}

#[test]
fn multishot_accept_of_several_connections() {
    let mut ring = ring();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let accept = ring.accept_multishot(&dup(&listener), 1);
    ring.submit().expect("submit");
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(listener.local_addr().expect("addr")).expect("connect"))
        .collect();
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| events.len() >= 3);
    for (token, event) in &events {
        assert_eq!(*token, 1);
        assert!(matches!(event, Event::Accept(Ok(_), true)), "{event:?}");
    }
    assert_eq!(ring.in_flight(), 1, "multishot accept stays armed");

    // The accepted fds are real connections: what a client writes arrives on one of them.
    let mut clients = clients;
    clients[0].write_all(b"x").expect("write");

    ring.cancel(accept);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| !events.is_empty());
    assert!(
        matches!(&events[0].1, Event::Accept(result, false) if errno(result) == Some(libc::ECANCELED)),
        "{events:?}"
    );
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn multishot_recv_of_several_messages_and_eof() {
    let mut ring = ring();
    let (mut client, server) = pair();
    ring.recv_multishot(&dup(&server), 7);
    ring.submit().expect("submit");
    let messages: [&[u8]; 3] = [b"hello", b", ", b"world"];
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for message in messages {
        client.write_all(message).expect("write");
        expected.extend_from_slice(message);
        run_until(&mut ring, &mut events, |events| {
            recv_bytes(events) == expected
        });
    }
    assert_eq!(events.len(), 3, "one completion per message: {events:?}");
    assert!(
        events
            .iter()
            .all(|(token, event)| *token == 7 && matches!(event, Event::Recv(Ok(_), true)))
    );
    assert_eq!(ring.in_flight(), 1);

    drop(client);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| !events.is_empty());
    assert!(
        matches!(&events[0].1, Event::Recv(Ok(data), false) if data.is_empty()),
        "EOF is Ok(&[]): {events:?}"
    );
    assert_eq!(ring.in_flight(), 0);
}

/// Sends `buf` to a peer with small socket buffers that starts reading only once a second send
/// was queued (so that the first one comes back short), resending the rest from where each send
/// stopped; checks that the peer read `expected`. Returns how many sends it took.
fn send_in_short_sends(ring: &mut Ring, buf: SendBuf, expected: &[u8]) -> usize {
    let (client, server) = pair();
    socket2::SockRef::from(&server)
        .set_send_buffer_size(16 * 1024)
        .expect("sndbuf");
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(16 * 1024)
        .expect("rcvbuf");
    let sends_so_far = Arc::new(AtomicUsize::new(0));
    let seen = sends_so_far.clone();
    let reader = thread::spawn(move || {
        let mut client = client;
        client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        wait_for("a second send, or the last", || {
            seen.load(Ordering::SeqCst) >= 2
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).map(|_| got)
    });
    let total = buf.len();
    let (mut buf, mut offset, mut sends) = (buf, 0, 0);
    let fd = dup(&server);
    let deadline = Instant::now() + TIMEOUT;
    while offset < total {
        sends += 1;
        sends_so_far.store(sends, Ordering::SeqCst);
        let (result, returned) = send_and_wait(ring, &fd, buf, offset, deadline);
        let n = result.expect("send");
        assert!(n > 0 && offset + n <= total);
        offset += n;
        buf = returned; // The same buffer comes back for the rest.
    }
    sends_so_far.store(usize::MAX, Ordering::SeqCst);
    assert_eq!(ring.in_flight(), 0);
    server.shutdown(Shutdown::Write).expect("shutdown");
    let got = reader.join().expect("reader").expect("read");
    assert!(
        got == expected,
        "data differs ({} of {total} bytes)",
        got.len()
    );
    sends
}

#[test]
fn send_of_1_mib_with_short_sends_resent_by_the_caller() {
    let mut ring = ring();
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sends = send_in_short_sends(&mut ring, SendBuf::from(payload.clone()), &payload);
    eprintln!("1 MiB sent in {sends} sends");
    assert!(
        sends > 1,
        "the kernel took 1 MiB in one send: short sends not exercised"
    );
}

#[test]
fn vectored_send_of_shared_chunks_with_short_sends_resent_from_their_offset() {
    let mut ring = ring();
    let chunk = |seed: u32| {
        bytes::Bytes::from(
            (0..256 * 1024)
                .map(|i: u32| ((i + seed) % 249) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let mut out = OutBuf::from(b"head".to_vec());
    out.push_chunk(chunk(1));
    out.bytes_mut().extend_from_slice(b"middle");
    out.push_chunk(chunk(2));
    out.bytes_mut().extend_from_slice(b"tail");
    assert_eq!(out.shared_chunks(), 2, "both chunks shared, not copied");
    let mut expected = Vec::new();
    out.append_to(&mut expected);
    assert_eq!(expected.len(), out.len());
    let sends = send_in_short_sends(&mut ring, SendBuf::from(out), &expected);
    assert!(sends > 1, "one send took it all: short sends not exercised");
}

#[test]
fn shutdown_write_makes_the_peer_read_eof() {
    let mut ring = ring();
    let (mut client, server) = pair();
    ring.send(&dup(&server), b"bye".to_vec(), 0, 1);
    ring.shutdown_write(&dup(&server), 2);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| events.len() == 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, (2, Event::Shutdown(Ok(()))))),
        "{events:?}"
    );
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read to EOF");
    assert_eq!(got, b"bye");
}

#[test]
fn cancel_of_multishot_recv_delivers_a_final_completion() {
    let mut ring = ring();
    let (_client, server) = pair();
    let op = ring.recv_multishot(&dup(&server), 9);
    ring.submit().expect("submit");
    ring.cancel(op);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| !events.is_empty());
    assert_eq!(
        events.len(),
        1,
        "the cancel's own completion is swallowed: {events:?}"
    );
    assert!(
        matches!(&events[0], (9, Event::Recv(result, false)) if errno(result) == Some(libc::ECANCELED)),
        "{events:?}"
    );
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn a_readable_poll_reports_each_arrival_until_cancelled_and_takes_no_bytes() {
    let mut ring = ring();
    let (mut client, server) = pair();
    let op = ring.poll_readable(&dup(&server), 9);
    ring.submit().expect("submit");
    let readable = |events: &[(Token, Event)]| {
        events
            .iter()
            .filter(|(t, e)| *t == 9 && matches!(e, Event::Readable(Ok(()), true)))
            .count()
    };
    let mut events = Vec::new();
    for (i, chunk) in [&b"first"[..], b"second"].into_iter().enumerate() {
        client.write_all(chunk).expect("write");
        run_until(&mut ring, &mut events, |events| readable(events) > i);
        // The poll reads nothing: the bytes are the worker's to receive.
        let mut buf = [0u8; 16];
        let n = rustix::net::recv(&server, &mut buf, rustix::net::RecvFlags::DONTWAIT)
            .expect("recv")
            .0;
        assert_eq!(&buf[..n], chunk);
    }
    assert_eq!(ring.in_flight(), 1, "multishot: still armed");
    ring.cancel(op);
    run_until(&mut ring, &mut events, |events| {
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::Readable(_, false)))
    });
    assert!(
        matches!(events.last(), Some((9, Event::Readable(r, false))) if errno(r) == Some(libc::ECANCELED)),
        "{events:?}"
    );
    assert_eq!(readable(&events), 2, "{events:?}");
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn a_poll_that_cannot_poll_ends_with_its_error() {
    // An O_PATH descriptor cannot be polled: the poll's only completion is its error.
    let mut ring = ring();
    let dir = std::fs::File::open("/").expect("open /");
    let path_fd = rustix::fs::openat(
        &dir,
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .expect("O_PATH open");
    ring.poll_readable(&Rc::new(path_fd), 9);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| !events.is_empty());
    assert!(
        matches!(&events[..], [(9, Event::Readable(Err(_), false))]),
        "{events:?}"
    );
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn cancel_before_submit_still_ends_the_op() {
    let mut ring = ring();
    let (_client, server) = pair();
    let op = ring.recv_multishot(&dup(&server), 9);
    ring.cancel(op); // Both in the same submission.
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| !events.is_empty());
    assert!(
        matches!(&events[0], (9, Event::Recv(Err(_), false))),
        "{events:?}"
    );
    assert_eq!(ring.in_flight(), 0);
}

/// Receives `len` bytes from `server` with a multishot receive (token 5), re-armed whenever it
/// ends (ENOBUFS: the pool ran dry); every buffer holds at most `buf_size` bytes. Returns the
/// bytes and how many times a receive found no buffer.
fn receive_rearming(
    ring: &mut Ring,
    server: &TcpStream,
    len: usize,
    buf_size: usize,
) -> (Vec<u8>, u64) {
    ring.recv_multishot(&dup(server), 5);
    let mut received = Vec::new();
    let mut enobufs = 0;
    let deadline = Instant::now() + TIMEOUT;
    while received.len() < len {
        assert!(
            Instant::now() < deadline,
            "timed out at {} bytes",
            received.len()
        );
        ring.submit_and_wait_timeout(Duration::from_millis(50))
            .expect("enter");
        let mut rearm = false;
        ring.complete(|c| match c.kind {
            CompletionKind::Recv {
                result: Ok(data),
                more,
            } => {
                assert!(data.len() <= buf_size);
                received.extend_from_slice(data);
                rearm |= !more;
            }
            CompletionKind::Recv {
                result: Err(err),
                more,
            } => {
                assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "{err}");
                assert!(!more);
                enobufs += 1;
                rearm = true;
            }
            other => panic!("{other:?}"),
        });
        if rearm {
            // The pool was refilled when `complete` returned: re-arm to go on.
            ring.recv_multishot(&dup(server), 5);
        }
    }
    (received, enobufs)
}

#[test]
fn enobufs_with_a_tiny_pool_loses_no_data_after_rearming() {
    let mut ring = Ring::new(&RingConfig {
        recv_buffers: 2,
        recv_buffer_size: 64,
        ..config()
    })
    .expect("ring");
    let (mut client, server) = pair();
    let payload: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
    client.write_all(&payload).expect("write");
    let (received, enobufs) = receive_rearming(&mut ring, &server, payload.len(), 64);
    eprintln!("8 KiB through 2 x 64 B buffers: {enobufs} ENOBUFS re-arms");
    assert!(enobufs > 0, "the pool never ran dry");
    assert!(received == payload, "data lost or reordered");
    assert_eq!(ring.bufs.available(), 2, "every buffer back in the pool");
}

#[test]
fn a_burst_beyond_the_published_window_widens_it_and_loses_no_data() {
    // 256 buffers of 16 bytes, 64 of them published at first; 16 KiB (which the sockets hold
    // before anything is received) take 1,024 receives.
    let mut ring = Ring::new(&RingConfig {
        recv_buffers: 256,
        recv_buffer_size: 16,
        ..config()
    })
    .expect("ring");
    assert_eq!(ring.bufs.available(), 64, "the first window");
    let (mut client, server) = pair();
    let payload: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&payload).expect("write");
    let (received, enobufs) = receive_rearming(&mut ring, &server, payload.len(), 16);
    assert!(enobufs > 0, "the window never ran dry");
    assert!(received == payload, "data lost or reordered");
    // Each time the window ran dry it doubled, up to the pool, and it stays published.
    let window = (64usize << enobufs.min(2)).min(256);
    assert_eq!(ring.bufs.available(), window, "after {enobufs} ENOBUFS");
    let (taken, returned) = ring.bufs.totals();
    assert_eq!(taken, returned, "every buffer given back");
    assert!(taken >= 1024, "{taken}");
    assert_eq!(ring.counters.snapshot().recv_pool_dry, enobufs);
}

#[test]
fn full_receives_shrink_a_window_bounded_by_bytes_and_lose_no_data() {
    // 256 buffers of 16 bytes, the window bounded to 256 bytes: once 256 full receives were
    // looked at, the window is 16 buffers (256 / 16, and the least a bound leaves); the rest of
    // 32 KiB (2,048 receives) waits in the socket whenever those are taken.
    let mut ring = Ring::new(&RingConfig {
        recv_buffers: 256,
        recv_buffer_size: 16,
        recv_window_bytes: 256,
        ..config()
    })
    .expect("ring");
    assert_eq!(ring.bufs.available(), 64, "the first window");
    let (mut client, server) = pair();
    let payload: Vec<u8> = (0..32768u32).map(|i| (i % 241) as u8).collect();
    let writer = std::thread::spawn(move || client.write_all(&payload).map(|()| payload));
    let (received, enobufs) = receive_rearming(&mut ring, &server, 32768, 16);
    let payload = writer.join().expect("writer").expect("write");
    assert!(received == payload, "data lost or reordered");
    assert!(enobufs > 0, "the bounded window never ran dry");
    assert_eq!(ring.counters.snapshot().recv_pool_dry, enobufs);
    assert_eq!(
        ring.bufs.available(),
        16,
        "dry receives widen it only up to the bound"
    );
    let (taken, returned) = ring.bufs.totals();
    assert_eq!(taken, returned, "every buffer given back");
}

#[test]
fn in_flight_counts_queued_and_submitted_ops_until_their_final_completion() {
    let mut ring = ring();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut client, server) = pair();
    assert_eq!(ring.in_flight(), 0);
    ring.accept_multishot(&dup(&listener), 1);
    let recv = ring.recv_multishot(&dup(&server), 2);
    ring.send(&dup(&server), b"ping".to_vec(), 0, 3);
    assert_eq!(ring.in_flight(), 3, "queued ops count");
    ring.submit().expect("submit");

    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| {
        events.iter().any(|e| e.0 == 3)
    });
    assert_eq!(ring.in_flight(), 2, "the send ended");

    client.write_all(b"pong").expect("write");
    run_until(&mut ring, &mut events, |events| {
        events.iter().any(|e| e.0 == 2)
    });
    assert_eq!(ring.in_flight(), 2, "a multishot recv with MORE stays");

    ring.cancel(recv);
    ring.cancel(recv); // Twice: the second is swallowed too.
    run_until(&mut ring, &mut events, |events| {
        events
            .iter()
            .any(|e| matches!(e, (2, Event::Recv(_, false))))
    });
    assert_eq!(ring.in_flight(), 1);
    // Reaping with nothing ready neither blocks nor changes anything.
    ring.submit().expect("submit");
    assert_eq!(ring.complete(|c| panic!("{c:?}")), 0);
    assert_eq!(ring.in_flight(), 1);
}

#[test]
fn stale_op_id_cancel_is_harmless() {
    let mut ring = ring();
    let (mut client, server) = pair();
    let old = ring.recv_multishot(&dup(&server), 1);
    ring.cancel(old);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| !events.is_empty());
    assert_eq!(ring.in_flight(), 0);

    let new = ring.recv_multishot(&dup(&server), 2);
    assert_ne!(old, new, "same slot, new generation");
    ring.cancel(old); // Stale: must not touch `new`.
    ring.cancel(old);
    ring.submit().expect("submit");
    client.write_all(b"still here").expect("write");
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| {
        recv_bytes(events) == b"still here"
    });
    assert!(
        events
            .iter()
            .all(|e| matches!(e, (2, Event::Recv(Ok(_), true)))),
        "{events:?}"
    );
    assert_eq!(ring.in_flight(), 1);
}

/// Writes into `stream` until its send buffer and the peer's receive buffer are full.
fn fill_socket_buffers(stream: &TcpStream) {
    stream.set_nonblocking(true).expect("nonblocking");
    let chunk = [0u8; 64 * 1024];
    loop {
        match (&*stream).write(&chunk) {
            Ok(_) => continue,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => panic!("fill: {err}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
}

#[test]
fn drop_with_pending_recv_accept_and_send_cancels_and_reaps() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (client, server) = pair();
    fill_socket_buffers(&server);
    let mut ring = ring();
    ring.accept_multishot(&dup(&listener), 1);
    ring.recv_multishot(&dup(&server), 2);
    // The socket buffers are full and nobody reads: this send stays pending.
    ring.send(&dup(&server), vec![7; 1 << 20], 0, 3);
    ring.submit().expect("submit");
    ring.submit_and_wait_timeout(Duration::from_millis(50))
        .expect("enter");
    let mut events = Vec::new();
    ring.complete(|c| events.push(own(c)));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(ring.in_flight(), 3);

    let leaked_before = super::LEAKED_AT_DROP.with(|n| n.get());
    drop(ring);
    // Every operation was cancelled and reaped: the leak path did not run.
    assert_eq!(super::LEAKED_AT_DROP.with(|n| n.get()), leaked_before);
    // The listener is free again: a connection is accepted by a plain accept(2).
    let _c = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    assert!(listener.accept().is_ok());
    drop(client);
}

#[test]
fn submit_never_blocks_and_wait_returns_with_nothing_in_flight() {
    // On its own thread (the ring is created there: SINGLE_ISSUER), so that a blocking call
    // shows up as a missing answer instead of a hung test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ring = ring();
        ring.submit().expect("submit");
        ring.submit_and_wait()
            .expect("nothing in flight: returns at once");
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("submit and submit_and_wait with nothing in flight returned");
}

#[test]
fn many_ops_overflow_the_submission_queue_and_still_complete() {
    let mut ring = Ring::new(&RingConfig {
        sq_entries: 4,
        cq_entries: 8,
        ..config()
    })
    .expect("ring");
    let (client, server) = pair();
    let reader = thread::spawn(move || {
        let mut client = client;
        client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut got = vec![0; 40];
        client.read_exact(&mut got).map(|_| got)
    });
    for i in 0..10u8 {
        ring.send(&dup(&server), vec![i; 4], 0, u64::from(i));
    }
    assert_eq!(ring.in_flight(), 10);
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| events.len() == 10);
    let got = reader.join().expect("reader").expect("read");
    let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 4]).collect();
    assert_eq!(got, want, "sends reach the socket in queue order");
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Consumes the readiness an fd had when it was registered, if any.
async fn drain_readiness<T: AsRawFd>(fd: &tokio::io::unix::AsyncFd<T>) {
    let short = Duration::from_millis(20);
    if let Ok(Ok(mut guard)) = tokio::time::timeout(short, fd.readable()).await {
        guard.clear_ready();
    }
}

/// Which fd reports deferred completions to edge-triggered epoll? Both are registered first and
/// drained of the readiness they had at registration; then a peer writes. It also prints how
/// long the eventfd took: on Linux 6.18.44, 9-16 ms (the kernel signals it late for a receive's
/// deferred work when nothing waits in the ring), the late wake-up docs/tuning.md describes
/// under `defer_taskrun`. Not asserted: a timing.
#[test]
fn eventfd_reports_deferred_completions_to_edge_triggered_epoll() {
    let runtime = current_thread();
    let (ring_fd_ready, eventfd_ready, eventfd_after) = runtime.block_on(async {
        let mut ring = ring();
        assert!(
            ring.features().defer_taskrun,
            "this machine has DEFER_TASKRUN"
        );
        // SAFETY: the io_uring fd stays open while `ring` lives; the borrow ends at the dup.
        let ring_fd = unsafe { BorrowedFd::borrow_raw(ring.ring.as_raw_fd()) };
        let ring_fd = ring_fd.try_clone_to_owned().expect("dup ring fd");
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged while registered.
        let ring_fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE)
        }
        .expect("register in epoll");
        let eventfd = ring.register_wakeup().expect("register in epoll");
        let (mut client, server) = pair();
        ring.recv_multishot(&dup(&server), 1);
        ring.submit().expect("submit");
        assert_eq!(ring.complete(|c| panic!("{c:?}")), 0);
        ring.acknowledge_wakeup();
        drain_readiness(&ring_fd).await;
        drain_readiness(&eventfd).await;

        let written = std::time::Instant::now();
        client.write_all(b"data").expect("write");
        let limit = Duration::from_millis(500);
        let eventfd_ready = tokio::time::timeout(limit, eventfd.readable())
            .await
            .is_ok();
        let eventfd_after = written.elapsed();
        let ring_fd_ready = tokio::time::timeout(limit, ring_fd.readable())
            .await
            .is_ok();

        ring.acknowledge_wakeup();
        ring.submit().expect("submit");
        let mut events = Vec::new();
        ring.complete(|c| events.push(own(c)));
        assert_eq!(recv_bytes(&events), b"data");
        (ring_fd_ready, eventfd_ready, eventfd_after)
    });
    eprintln!(
        "DEFER_TASKRUN, recv completion pending: ring fd woke epoll: {ring_fd_ready}, \
         eventfd woke epoll: {eventfd_ready} ({eventfd_after:?} after the write)"
    );
    assert!(
        eventfd_ready,
        "the eventfd must report deferred completions"
    );
}

#[test]
fn tokio_async_fd_wakes_for_a_recv_on_a_defer_taskrun_ring() {
    let runtime = current_thread();
    runtime.block_on(async {
        let mut ring = ring();
        let fd = ring.register_wakeup().expect("register in epoll");
        let (client, server) = pair();
        ring.recv_multishot(&dup(&server), 4);
        ring.submit().expect("submit");

        // Each chunk is written while this thread is asleep waiting for readiness, the second
        // only once the first was received: each needs its own wakeup.
        let reader_tid = current_tid();
        let first_received = Arc::new(AtomicBool::new(false));
        let received = first_received.clone();
        let writer = thread::spawn(move || {
            let mut client = client;
            wait_for("the reader asleep", || thread_asleep(reader_tid));
            client.write_all(b"first").expect("write");
            wait_for("the first chunk received", || {
                received.load(Ordering::SeqCst)
            });
            wait_for("the reader asleep again", || thread_asleep(reader_tid));
            client.write_all(b" second").expect("write");
            client
        });

        let mut events = Vec::new();
        let mut wakeups = 0;
        while recv_bytes(&events) != b"first second" {
            if recv_bytes(&events) == b"first" {
                first_received.store(true, Ordering::SeqCst);
            }
            let mut guard = tokio::time::timeout(TIMEOUT, fd.readable())
                .await
                .expect("no readiness within the timeout: a lost wakeup")
                .expect("readable");
            wakeups += 1;
            guard.clear_ready();
            ring.acknowledge_wakeup();
            ring.submit().expect("submit");
            ring.complete(|c| events.push(own(c)));
        }
        eprintln!(
            "tokio AsyncFd: {wakeups} wakeups for {} completions",
            events.len()
        );
        assert!(
            events
                .iter()
                .all(|e| matches!(e, (4, Event::Recv(Ok(_), true))))
        );
        drop(writer.join().expect("writer"));
    });
}

#[test]
fn coop_taskrun_ring_without_defer_works_the_same() {
    let runtime = current_thread();
    runtime.block_on(async {
        let mut ring = Ring::new(&RingConfig {
            defer_taskrun: false,
            ..config()
        })
        .expect("ring");
        let features = ring.features().clone();
        eprintln!("without DEFER_TASKRUN: {features}");
        assert!(!features.defer_taskrun && features.coop_taskrun && features.single_issuer);
        let fd = ring.register_wakeup().expect("register in epoll");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        ring.accept_multishot(&dup(&listener), 1);
        ring.submit().expect("submit");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");

        let mut events = Vec::new();
        let mut server = None;
        while recv_bytes(&events) != b"coop" {
            let mut guard = tokio::time::timeout(TIMEOUT, fd.readable())
                .await
                .expect("no readiness within the timeout: a lost wakeup")
                .expect("readable");
            guard.clear_ready();
            ring.acknowledge_wakeup();
            ring.submit().expect("submit");
            ring.complete(|c| events.push(own(c)));
            let accepted = events
                .iter()
                .position(|e| matches!(e.1, Event::Accept(Ok(_), true)));
            if let (None, Some(pos)) = (&server, accepted) {
                let Event::Accept(Ok(accepted), _) = events.remove(pos).1 else {
                    unreachable!()
                };
                ring.recv_multishot(&dup(&accepted), 2);
                ring.submit().expect("submit");
                client.write_all(b"coop").expect("write");
                server = Some(accepted);
            }
        }
        assert_eq!(ring.in_flight(), 2);
    });
}

/// A ring with one of the knobs on.
fn ring_with(config: RingConfig) -> Ring {
    match Ring::new(&config) {
        Ok(ring) => ring,
        Err(err) => panic!("ring setup: {err}"),
    }
}

#[test]
fn recv_bundles_take_several_buffers_in_ring_order_and_give_every_one_back() {
    let mut ring = ring_with(RingConfig {
        recv_buffers: 128,
        recv_buffer_size: 512,
        recv_bundle: true,
        ..config()
    });
    assert!(ring.features().recv_bundle);
    let (mut client, server) = pair();
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let mut expected = Vec::new();
    let mut events = Vec::new();
    let mut armed = false;
    // Three rounds, so that the ring wraps around (128 x 512 bytes < 3 x 40,000).
    for round in 0..3 {
        // Queued before the receive is (re-)armed or reaped: the kernel finds many buffers'
        // worth at once.
        client.write_all(&payload).expect("write");
        expected.extend_from_slice(&payload);
        let deadline = Instant::now() + TIMEOUT;
        while recv_bytes(&events).len() < expected.len() {
            assert!(Instant::now() < deadline, "round {round}: {events:?}");
            if !armed {
                ring.recv_multishot(&dup(&server), 9);
            }
            let before = events.len();
            run_until(&mut ring, &mut events, |events| events.len() > before);
            // The multishot ends on ENOBUFS (pool dry); the data waits in the socket.
            armed = !matches!(events.last(), Some((_, Event::Recv(_, false))));
        }
    }
    assert!(
        recv_bytes(&events) == expected,
        "bytes differ or out of order"
    );
    let stats = ring.counters().snapshot();
    eprintln!("{stats}");
    assert!(
        stats.multi_buffer_recvs > 0,
        "no completion covered several buffers: {stats}"
    );
    assert!(stats.recv_buffers > stats.recv_completions);
    assert_eq!(stats.recv_buffers, stats.recv_buffers_returned);
    assert_eq!(ring.bufs.available(), 128, "every buffer back in the ring");
    let (taken, returned) = ring.bufs.totals();
    assert_eq!(taken, returned);
}

/// Sends `payload` from registered buffers (one fill, short sends resent from the same
/// buffer); returns how many sends it took.
fn send_fixed_all(ring: &mut Ring, fd: &Rc<OwnedFd>, payload: &[u8]) -> usize {
    let mut buf = SendBuf::Fixed(ring.fixed_copy(payload).expect("a free registered buffer"));
    let (mut offset, mut sends) = (0, 0);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        sends += 1;
        let (result, returned) = send_and_wait(ring, fd, buf, offset, deadline);
        assert!(
            matches!(returned, SendBuf::Fixed(_)),
            "the same buffer comes back"
        );
        offset += result.expect("send");
        if offset == payload.len() {
            return sends;
        }
        buf = returned;
    }
}

fn fixed_ring() -> Ring {
    ring_with(RingConfig {
        registered_send_buffers: 2,
        send_buffer_size: 1 << 20,
        ..config()
    })
}

#[test]
fn registered_send_buffers_over_tcp_and_unix_with_short_sends_resent() {
    let mut ring = fixed_ring();
    assert_eq!(ring.features().registered_send_buffers, 2);
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    assert!(
        ring.fixed_copy(&vec![0; (1 << 20) + 1]).is_none(),
        "too large"
    );

    let (tcp_client, tcp_server) = pair();
    let (unix_client, unix_server) = std::os::unix::net::UnixStream::pair().expect("pair");
    for (name, server_fd, client) in [
        (
            "tcp",
            dup(&tcp_server),
            Box::new(tcp_client) as Box<dyn ReadSend>,
        ),
        (
            "unix",
            dup(&unix_server),
            Box::new(unix_client) as Box<dyn ReadSend>,
        ),
    ] {
        let want = payload.len();
        // The reader starts once a send came back short (the sender must resend the rest) or
        // the sender is done (the kernel took it all at once).
        let counters = ring.counters().clone();
        let short_before = counters.snapshot().fixed_short_sends;
        let sent = Arc::new(AtomicBool::new(false));
        let done = sent.clone();
        let reader = thread::spawn(move || {
            let mut client = client;
            wait_for("a short fixed send, or the last", || {
                counters.snapshot().fixed_short_sends > short_before || done.load(Ordering::SeqCst)
            });
            let mut got = vec![0; want];
            client.read_exact(&mut got).map(|_| got)
        });
        let sends = send_fixed_all(&mut ring, &server_fd, &payload);
        sent.store(true, Ordering::SeqCst);
        let got = reader.join().expect("reader").expect("read");
        assert!(got == payload, "{name}: data differs");
        eprintln!("{name}: 1 MiB in {sends} fixed sends");
    }
    let stats = ring.counters().snapshot();
    assert!(stats.fixed_sends >= 2, "{stats}");
    assert!(
        stats.fixed_short_sends > 0,
        "no short send: a reader that starts late should force one ({stats})"
    );
    // Both buffers are back: two fills succeed.
    let a = ring.fixed_copy(b"a").expect("buffer 0 back");
    let b = ring.fixed_copy(b"b").expect("buffer 1 back");
    assert!(ring.fixed_copy(b"c").is_none());
    drop((a, b));
    assert_eq!(ring.in_flight(), 0);
}

trait ReadSend: Read + Send {}
impl<T: Read + Send> ReadSend for T {}

#[test]
fn output_with_shared_chunks_is_copied_whole_into_a_registered_buffer() {
    let mut ring = fixed_ring();
    let mut out = OutBuf::from(b"head".to_vec());
    out.push_chunk(bytes::Bytes::from(vec![b'a'; 300 * 1024]));
    out.bytes_mut().extend_from_slice(b"middle");
    out.push_chunk(bytes::Bytes::from(vec![b'b'; 200 * 1024]));
    assert_eq!(out.shared_chunks(), 2);
    let mut expected = Vec::new();
    out.append_to(&mut expected);
    let fixed = ring.fixed_copy_out(&out).expect("fits a 1 MiB buffer");
    assert_eq!(fixed.len(), expected.len());
    let sends = send_in_short_sends(&mut ring, SendBuf::Fixed(fixed), &expected);
    assert!(sends > 1, "short sends not exercised");
    // Too large for one buffer: the heap (vectored) send is left to the caller.
    out.push_chunk(bytes::Bytes::from(vec![b'c'; 1 << 20]));
    assert!(ring.fixed_copy_out(&out).is_none());
}

#[test]
fn a_registered_buffer_of_another_ring_is_refused_and_given_back() {
    let mut mine = fixed_ring();
    let mut other = fixed_ring();
    let (mut client, server) = std::os::unix::net::UnixStream::pair().expect("pair");
    let foreign = other.fixed_copy(b"not yours").expect("buffer");
    mine.send(&dup(&server), foreign, 0, 6);
    let mut back = None;
    let deadline = Instant::now() + TIMEOUT;
    while back.is_none() {
        assert!(Instant::now() < deadline, "no completion");
        mine.submit_and_wait_timeout(Duration::from_millis(50))
            .expect("enter");
        mine.complete(|c| {
            if let CompletionKind::Send { result, buf } = c.kind {
                back = Some((result, buf));
            }
        });
    }
    let (result, buf) = back.expect("completion");
    let err = result.expect_err("a foreign buffer is not sent");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(matches!(buf, SendBuf::Fixed(_)), "the buffer comes back");
    assert_eq!(mine.counters().snapshot().fixed_sends, 0);
    drop(buf);
    // Back in its own pool: `other` can fill both of its buffers again.
    let both = (other.fixed_copy(b"a"), other.fixed_copy(b"b"));
    assert!(both.0.is_some() && both.1.is_some());
    drop(server);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("read");
    assert!(rest.is_empty(), "nothing was written");
}

#[test]
fn dropping_the_callers_fd_keeps_it_open_while_an_op_uses_it() {
    let mut ring = ring();
    let (mut client, server) = pair();
    let fd = Rc::new(OwnedFd::from(server));
    ring.recv_multishot(&fd, 3);
    ring.submit().expect("submit");
    let weak = Rc::downgrade(&fd);
    drop(fd);
    assert!(weak.upgrade().is_some(), "the receive holds the socket");
    client.write_all(b"still here").expect("write");
    let mut events = Vec::new();
    run_until(&mut ring, &mut events, |events| {
        !recv_bytes(events).is_empty()
    });
    assert_eq!(recv_bytes(&events), b"still here");
    client.shutdown(Shutdown::Write).expect("shutdown");
    run_until(&mut ring, &mut events, |events| {
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::Recv(Ok(b), false) if b.is_empty()))
    });
    assert_eq!(ring.in_flight(), 0);
    assert!(weak.upgrade().is_none(), "closed with the last operation");
}

#[test]
fn registered_send_to_a_closed_peer_fails_with_epipe_without_killing_us() {
    let mut ring = fixed_ring();
    let (client, server) = std::os::unix::net::UnixStream::pair().expect("pair");
    drop(client);
    let buf = ring.fixed_copy(b"nobody listens").expect("buffer");
    let (result, _) = send_and_wait(&mut ring, &dup(&server), buf, 0, Instant::now() + TIMEOUT);
    assert_eq!(errno(&result), Some(libc::EPIPE));
}

/// Whether SIGPIPE is pending for this thread (it blocks SIGPIPE first, so that a raised one
/// stays pending even though the test binary ignores it); takes it if so.
fn take_pending_sigpipe() -> bool {
    // SAFETY: plain libc calls on a sigset_t owned here; blocking SIGPIPE in this test's thread
    // only changes how a SIGPIPE raised on it is delivered (kept pending, then taken below).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        let raised = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        if raised {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
        }
        raised
    }
}

#[test]
fn a_vectored_send_to_a_closed_peer_fails_with_epipe_and_raises_no_sigpipe() {
    assert!(!take_pending_sigpipe(), "nothing pending before");
    // The check itself: a plain write to a closed peer raises SIGPIPE, and it is seen.
    let (client, server) = std::os::unix::net::UnixStream::pair().expect("pair");
    drop(client);
    // (std's socket writes pass MSG_NOSIGNAL: write(2) itself is called.)
    // SAFETY: one byte from a live buffer to an fd this test owns.
    let written = unsafe { libc::write(server.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(written, -1);
    assert!(
        take_pending_sigpipe(),
        "a write to a closed peer raises SIGPIPE"
    );

    let mut ring = ring();
    let mut out = OutBuf::from(b"head".to_vec());
    out.push_chunk(bytes::Bytes::from(vec![7; 64 * 1024]));
    assert_eq!(out.shared_chunks(), 1, "a vectored send");
    let (result, _) = send_and_wait(&mut ring, &dup(&server), out, 0, Instant::now() + TIMEOUT);
    assert_eq!(errno(&result), Some(libc::EPIPE));
    assert!(!take_pending_sigpipe(), "the vectored send raised SIGPIPE");
}

#[test]
fn sqpoll_ring_receives_sends_and_wakes_its_sleeping_thread() {
    let mut ring = ring_with(RingConfig {
        sqpoll: true,
        sqpoll_idle_ms: 1,
        defer_taskrun: false,
        coop_taskrun: false,
        ..config()
    });
    assert!(ring.features().sqpoll && !ring.features().defer_taskrun);
    let (mut client, server) = pair();
    ring.recv_multishot(&dup(&server), 7);
    ring.submit().expect("submit");
    let mut events = Vec::new();
    let mut expected = Vec::new();
    // Each round waits, before its send, until the SQ thread went to sleep (the kernel's
    // IORING_SQ_NEED_WAKEUP flag), so submitting the send must wake it. (Not before the
    // client writes: the received bytes' completion work runs on the SQ thread, which wakes
    // it, and it could still be awake when the send is submitted.)
    for message in [&b"ping"[..], b"pong"] {
        client.write_all(message).expect("write");
        expected.extend_from_slice(message);
        run_until(&mut ring, &mut events, |events| {
            recv_bytes(events) == expected
        });
        wait_for("the SQ thread asleep", || {
            ring.ring.submission().need_wakeup()
        });
        ring.send(&dup(&server), message.to_vec(), 0, 8);
        run_until(&mut ring, &mut events, |events| {
            events.iter().filter(|(token, _)| *token == 8).count() == expected.len() / 4
        });
        let mut echoed = [0; 4];
        client.read_exact(&mut echoed).expect("read");
        assert_eq!(&echoed, message);
    }
    let stats = ring.counters().snapshot();
    assert!(stats.sqpoll_wakeups > 0, "{stats}");
}

/// The idle tick ends waits every period (a multishot timeout, or on a kernel without those a
/// wait timed by the period) and is not shown as a completion; once stopped it ends none.
#[test]
fn the_idle_tick_ends_waits_each_period_until_it_is_stopped() {
    let mut ring = ring();
    // A worker always has an operation in flight (its accept).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.accept_multishot(&dup(&listener), 1);
    ring.submit().unwrap();
    let period = Duration::from_millis(2);
    ring.start_tick(period);
    for _ in 0..5 {
        ring.wait_for_io(Some(TIMEOUT)).unwrap();
        assert_eq!(ring.complete(|_| panic!("a tick is no completion")), 0);
        assert!(ring.take_tick(), "a tick ended the wait");
        assert!(!ring.take_tick(), "taken once");
    }
    if setup::kernel_version().is_some_and(|v| v >= (6, 4)) {
        assert!(ring.tick.running(), "a multishot timeout on this kernel");
    }
    ring.stop_tick();
    ring.submit().unwrap();
    // Until the kernel's timeout is gone (its final completion), no tick is taken.
    wait_for("the stopped tick's final completion", || {
        ring.wait_for_io(Some(period)).unwrap();
        assert_eq!(ring.complete(|_| panic!("no IO")), 0);
        assert!(!ring.take_tick(), "a stopped tick does not tick");
        !ring.tick.stopping()
    });
}

/// Whether the ring's eventfd reported a completion or deferred work since the last look
/// (and acknowledges it).
fn woken(ring: &Ring) -> bool {
    let mut count = [0u8; 8];
    (&ring.eventfd).read(&mut count).is_ok()
}

/// The kernel wakes one waiting accept per connection, the first armed (accepts wait
/// exclusively). When that accept is cancelled before it ran, the connection stays in the queue
/// and the other accept armed on the listener (the new process's, at a hot upgrade) is not woken
/// for it: it would wait there until the next connection came. Why a stopping worker accepts
/// what its listener still queues once its own accept has ended (`Backend::accept_queued`).
#[test]
fn a_cancelled_accept_takes_the_wakeup_of_the_connection_it_did_not_accept() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let (mut first, mut second) = (ring(), ring());
    let op = first.accept_multishot(&dup(&listener), 1);
    first.submit().expect("submit");
    second.accept_multishot(&dup(&listener), 2);
    second.submit().expect("submit");
    woken(&first);

    let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    wait_for("the first accept to be woken", || woken(&first));

    first.cancel(op);
    let mut events = Vec::new();
    run_until(&mut first, &mut events, |events| {
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::Accept(_, false)))
    });
    assert!(
        matches!(&events[..], [(1, Event::Accept(result, false))] if errno(result) == Some(libc::ECANCELED)),
        "cancelled before it accepted: {events:?}"
    );
    // The second accept runs what a wakeup queued for it (an enter runs deferred work): had
    // the connection woken it too, it would have accepted it here.
    second.submit().expect("enter");
    assert_eq!(second.complete(|c| panic!("{c:?}")), 0, "not woken");
    // The connection waits in the queue all the same.
    let waiting = crate::sock::accept_now(listener.as_fd(), rustix::net::SocketFlags::CLOEXEC);
    assert!(matches!(waiting, Ok(Some(_))), "{waiting:?}");
}

/// A listening UNIX socket in the abstract namespace (nothing on disk), non-blocking as the
/// server's listeners are; a connect to it returns once the connection is queued.
pub(crate) fn abstract_listener(name: &str) -> std::os::unix::net::UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("fcgi-uring-test-{}-{name}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).expect("name");
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    listener
}

/// Connections waiting on a listener no accept watches (a stopping worker's, once its accept
/// ended) are taken while the core has room; the rest stay queued for whoever accepts next.
#[test]
fn accept_queued_takes_what_waits_while_the_core_has_room() {
    use crate::conn::tests::{core_with, settings};
    let listener = abstract_listener("accept-queued-uring");
    let addr = listener.local_addr().expect("addr");
    let _clients: Vec<_> = (0..5)
        .map(|_| std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect"))
        .collect();
    let core = core_with(crate::conn::Settings {
        max_conns: 3,
        ..settings()
    });
    let mut backend = backend::Backend::new(ring());
    let fd = OwnedFd::from(listener.try_clone().expect("dup"));
    assert_eq!(backend.accept_queued(&core, &fd, false), 3);
    assert!(core.is_full());
    let left = std::iter::from_fn(|| {
        crate::sock::accept_now(listener.as_fd(), rustix::net::SocketFlags::CLOEXEC)
            .expect("accept")
    });
    assert_eq!(left.count(), 2, "the other two wait in the queue");
}

/// Whether the ring's eventfd holds a signal (read without blocking, which consumes it).
fn eventfd_signalled(ring: &Ring) -> bool {
    let mut count = [0u8; 8];
    matches!((&ring.eventfd).read(&mut count), Ok(8))
}

/// Completions signal the wait fd only while the worker asks for it: quiet, a receive's
/// completion leaves the eventfd unsignalled (the kernel skips the wakeup); asked again, the
/// completion that came meanwhile is reported as ready (the worker must not sleep on it), and
/// the next one signals the eventfd. With DEFER_TASKRUN (completions posted when the ring is
/// entered) and with COOP_TASKRUN alike.
#[test]
fn completions_signal_the_wait_fd_only_while_asked() {
    for defer_taskrun in [true, false] {
        let mut ring = ring_with(RingConfig {
            defer_taskrun,
            ..config()
        });
        let (mut client, server) = pair();
        ring.recv_multishot(&dup(&server), 1);
        ring.submit().expect("submit");
        ring.quiet_completions();
        ring.acknowledge_wakeup();

        client.write_all(b"quiet").expect("write");
        // The data is in the socket and the receive's work queued once the kernel ran it.
        wait_for("the quiet receive", || {
            ring.submit().expect("submit");
            ring.has_completions()
        });
        assert!(
            !eventfd_signalled(&ring),
            "defer_taskrun {defer_taskrun}: a quiet completion signalled the eventfd"
        );
        assert!(
            ring.wake_on_completions().expect("wake"),
            "defer_taskrun {defer_taskrun}: the completion waiting is not reported"
        );
        let mut events = Vec::new();
        ring.complete(|c| events.push(own(c)));
        assert_eq!(recv_bytes(&events), b"quiet");
        assert!(
            !ring.wake_on_completions().expect("wake"),
            "nothing is left"
        );
        ring.acknowledge_wakeup();

        client.write_all(b"loud").expect("write");
        wait_for("the eventfd's signal", || eventfd_signalled(&ring));
        events.clear();
        run_until(&mut ring, &mut events, |e| recv_bytes(e) == b"loud");
    }
}
