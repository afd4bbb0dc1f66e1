//! `fcgi-uring request`: send one request to a FastCGI application, curl style.
//!
//! Exit status, as curl without `--fail`: 0 whenever a response arrived, whatever its HTTP
//! status; 1 on a transport or protocol failure (connection refused, EOF before END_REQUEST,
//! malformed CGI output, a request refused with a protocol status); 2 on a usage error (bad
//! `-H`, unreadable `-d @file`).

use std::io::{Read, Write};
use std::process::ExitCode;

use fcgi_client::{Client, RequestSpec};
use fcgi_uring::Addr;

/// Arguments of `fcgi-uring request`.
#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// Application address: host:port or unix:/path.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: Addr,
    /// Request method (default GET, or POST when -d is given).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,
    /// Request body; @file reads a file, @- reads stdin.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    pub data: Option<String>,
    /// Request header 'Name: value' (repeatable). `Host: localhost` is added unless given.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long)]
    pub include: bool,
    /// Set FCGI_KEEP_CONN in BEGIN_REQUEST.
    #[arg(long)]
    pub keep_conn: bool,
    /// Request URI, e.g. /hello?x=1.
    #[arg(value_name = "PATH")]
    pub path: String,
}

/// Runs the command; see the module docs for the exit status.
pub fn run(args: RequestArgs) -> ExitCode {
    let spec = match spec_from_args(&args) {
        Ok(spec) => spec,
        Err(message) => {
            eprintln!("fcgi-uring request: {message}");
            return ExitCode::from(2);
        }
    };
    let mut client = match Client::connect(&args.addr) {
        Ok(client) => client,
        Err(e) => {
            // The error names the address: "connect to 127.0.0.1:9000: Connection refused".
            eprintln!("fcgi-uring request: {e}");
            return ExitCode::from(1);
        }
    };
    let response = match client.request(&spec) {
        Ok(response) => response,
        Err(e) => {
            let http = e
                .get_ref()
                .is_some_and(|inner| inner.is::<fcgi_client::HttpAnswer>());
            // An HTTP port given for the FastCGI one: most often the admin listener's.
            let hint = if http {
                ": is this the admin port? FastCGI is served on server.listen \
                 (127.0.0.1:9000 unless set), the admin listener speaks HTTP"
            } else {
                ""
            };
            eprintln!(
                "fcgi-uring request: {} {} via {}: {e}{hint}",
                spec.method, spec.uri, args.addr
            );
            return ExitCode::from(1);
        }
    };
    let _ = std::io::stderr().write_all(&response.stderr);
    let mut out = Vec::with_capacity(response.body.len() + 512);
    if args.include {
        out.extend_from_slice(format!("Status: {}", response.status).as_bytes());
        if let Some(reason) = http::StatusCode::from_u16(response.status)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            out.extend_from_slice(format!(" {reason}").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &response.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&response.body);
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The request the arguments describe; `Err` with a message on a usage error.
pub fn spec_from_args(args: &RequestArgs) -> Result<RequestSpec, String> {
    let body = match args.data.as_deref() {
        None => None,
        Some("@-") => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| format!("reading the body from stdin: {e}"))?;
            Some(body)
        }
        Some(data) => match data.strip_prefix('@') {
            Some(path) => Some(std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?),
            None => Some(data.as_bytes().to_vec()),
        },
    };
    let mut spec = match body {
        Some(body) => RequestSpec::post(&args.path, body),
        None => RequestSpec::get(&args.path),
    };
    if let Some(method) = &args.method {
        spec.method = method.clone();
    }
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("header {header:?} is not 'Name: value'"));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("header {header:?} has an invalid name"));
        }
        spec.headers
            .push((name.to_owned(), value.trim().to_owned()));
    }
    if !spec
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        spec.headers
            .insert(0, ("Host".to_owned(), "localhost".to_owned()));
    }
    spec.keep_conn = args.keep_conn;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fcgi_proto::record::{encode_end_request, encode_record, encode_stream_end};
    use fcgi_proto::{Addr, ProtocolStatus, RecordType};
    use std::io::Read;
    use std::net::TcpListener;

    /// An application that answers `reply` to the first connection, then reads it to its end.
    fn fake_tcp(reply: Vec<u8>) -> (Addr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Addr::Tcp(listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&reply).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = stream.read_to_end(&mut Vec::new());
        });
        (addr, handle)
    }
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: RequestArgs,
    }

    fn parse(argv: &[&str]) -> RequestArgs {
        Command::try_parse_from(std::iter::once("request").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults_and_get() {
        let args = parse(&["/hello?x=1"]);
        assert_eq!(args.addr, "127.0.0.1:9000".parse::<Addr>().unwrap());
        let spec = spec_from_args(&args).unwrap();
        assert_eq!(
            (spec.method.as_str(), spec.uri.as_str()),
            ("GET", "/hello?x=1")
        );
        assert_eq!(spec.headers, [("Host".to_owned(), "localhost".to_owned())]);
        assert!(!spec.keep_conn);
    }

    #[test]
    fn data_means_post_unless_x_says_otherwise() {
        let args = parse(&[
            "-d",
            "a=1",
            "-H",
            "Host: ex.com",
            "-H",
            "X-A:  b ",
            "--keep-conn",
            "/f",
        ]);
        let spec = spec_from_args(&args).unwrap();
        assert_eq!(spec.method, "POST");
        assert_eq!(spec.body, b"a=1");
        assert!(spec.keep_conn);
        assert_eq!(
            spec.headers,
            [
                ("Host".to_owned(), "ex.com".to_owned()),
                ("X-A".to_owned(), "b".to_owned())
            ]
        );
        let args = parse(&[
            "-X",
            "PUT",
            "--data",
            "x",
            "--addr",
            "unix:/run/app.sock",
            "/f",
        ]);
        assert_eq!(args.addr, Addr::Unix("/run/app.sock".into()));
        assert_eq!(spec_from_args(&args).unwrap().method, "PUT");
    }

    #[test]
    fn data_from_file_and_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.bin");
        std::fs::write(&file, b"\x00binary\xff").unwrap();
        let arg = format!("@{}", file.display());
        let spec = spec_from_args(&parse(&["-d", &arg, "/up"])).unwrap();
        assert_eq!(spec.body, b"\x00binary\xff");
        assert!(spec_from_args(&parse(&["-d", "@/nonexistent/x", "/"])).is_err());
        assert!(spec_from_args(&parse(&["-H", "NoColon", "/"])).is_err());
        assert!(spec_from_args(&parse(&["-H", "Bad Name: x", "/"])).is_err());
        assert!(Command::try_parse_from(["request", "--addr", "nonsense", "/"]).is_err());
    }

    #[test]
    fn run_exit_status() {
        let mut reply = Vec::new();
        encode_record(&mut reply, RecordType::Stdout, 1, b"Status: 500\r\n\r\n");
        encode_stream_end(&mut reply, RecordType::Stdout, 1);
        encode_end_request(&mut reply, 1, 0, ProtocolStatus::RequestComplete);
        let (addr, app) = fake_tcp(reply);
        let addr = addr.to_string();
        // An HTTP error status is still a response: exit 0, as curl without --fail.
        assert_eq!(
            run(parse(&["--addr", &addr, "/"])),
            std::process::ExitCode::SUCCESS
        );
        app.join().unwrap();
        // Nothing listens there any more.
        assert_eq!(
            run(parse(&["--addr", &addr, "/"])),
            std::process::ExitCode::from(1)
        );
        assert_eq!(
            run(parse(&["-H", "bad", "/"])),
            std::process::ExitCode::from(2)
        );
    }
}
