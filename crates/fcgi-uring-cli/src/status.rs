//! `fcgi-uring status`: a running server's live status, read from its admin listener
//! (`GET /status?human`), printed once or refreshed like `top` with `--watch`.

use fcgi_uring::Addr;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The server's admin listener (`admin.listen`): host:port or unix:/path.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9100")]
    pub admin: Addr,
    /// Refresh the table until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
}

/// How long one request to the admin listener may take.
const TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &StatusArgs) -> ExitCode {
    let interval =
        Duration::try_from_secs_f64(args.interval.max(0.1)).unwrap_or(Duration::from_secs(1));
    loop {
        let page = match get(&args.admin, "/status?human") {
            Ok(page) => page,
            Err(e) => {
                eprintln!("fcgi-uring status: {}: {e}", args.admin);
                return ExitCode::FAILURE;
            }
        };
        if args.watch && std::io::stdout().is_terminal() {
            // Home and clear, then the table.
            print!("\x1b[H\x1b[2J{page}");
        } else if args.watch {
            // Into a pipe or a file: one table after another, no terminal escapes.
            println!("{page}");
        } else {
            print!("{page}");
        }
        let _ = std::io::stdout().flush();
        if !args.watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(interval);
    }
}

/// The body of `GET path` from the admin listener at `addr` (HTTP/1.1, one request per
/// connection); an error unless the status is 200.
pub fn get(addr: &Addr, path: &str) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: fcgi-uring\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    match addr {
        Addr::Tcp(sa) => {
            let mut s = std::net::TcpStream::connect_timeout(sa, TIMEOUT)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
        Addr::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
    }
    if !raw.starts_with(b"HTTP/") {
        return Err(std::io::Error::other(not_http(&raw)));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("not an HTTP response (no end of headers)"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(std::io::Error::other(format!(
            "answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

/// Why `raw`, the whole answer of a peer to an HTTP request, is not HTTP, with the likely
/// mistake: a FastCGI port (`server.listen`) given for the admin listener. A FastCGI server
/// closes the connection at the first bytes of an HTTP request, as fcgi-uring does, or answers
/// with a FastCGI record (version byte 1).
fn not_http(raw: &[u8]) -> String {
    let hint = "is this a FastCGI port (server.listen)? `fcgi-uring status` reads the admin \
                listener (admin.listen, 127.0.0.1:9100 unless set; `fcgi-uring serve` prints \
                its address at start): give it with --admin";
    match raw.first() {
        None => format!("no HTTP answer: the connection was closed without one; {hint}"),
        Some(1) => format!("the peer answered with FastCGI, not HTTP; {hint}"),
        Some(_) => format!(
            "not an HTTP answer ({} bytes that do not start with HTTP/); {hint}",
            raw.len()
        ),
    }
}
