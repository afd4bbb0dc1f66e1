//! Listen and connect addresses: `host:port` or `unix:/path`, the notation both ends of a
//! FastCGI hop share (as in nginx's `fastcgi_pass`).
//!
//! Parsing is pure for numeric addresses and UNIX paths; a host name (`localhost:9000`) is
//! resolved once, by the system resolver, when it is parsed: the one place in this crate that
//! may do IO.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// A TCP socket address or a UNIX socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Why an address string was refused: the string, and what is wrong with it
/// ([`AddrParseError::reason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError {
    input: String,
    kind: Refusal,
}

/// What is wrong with an address string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// `unix:` with nothing after it.
    EmptyUnixPath,
    /// No `:port` (`127.0.0.1`, `127.0.0.1:`, `[::1]`).
    NoPort,
    /// Nothing before `:port`.
    EmptyHost,
    /// The port is not a number (`127.0.0.1:http`).
    PortNotNumber,
    /// The port is a number above 65535.
    PortOutOfRange,
    /// The host is no IP address and the resolver found no address for it (its message).
    Unresolved(String),
}

impl AddrParseError {
    fn new(input: &str, kind: Refusal) -> AddrParseError {
        AddrParseError {
            input: input.to_owned(),
            kind,
        }
    }

    /// What is wrong with the address, without the address: `port 70000 is out of range (0 to
    /// 65535)`.
    pub fn reason(&self) -> String {
        let port = self.input.rsplit_once(':').map_or("", |(_, port)| port);
        let host = self.input.rsplit_once(':').map_or("", |(host, _)| host);
        match &self.kind {
            Refusal::EmptyUnixPath => "no path after unix:".to_owned(),
            Refusal::NoPort => "no port".to_owned(),
            Refusal::EmptyHost => "no host before the port (0.0.0.0:PORT is every IPv4 address, \
                                   [::]:PORT every IPv6 one)"
                .to_owned(),
            Refusal::PortNotNumber => format!("port {port:?} is not a number"),
            Refusal::PortOutOfRange => format!("port {port} is out of range (0 to 65535)"),
            Refusal::Unresolved(why) => format!("host {host:?} did not resolve ({why})"),
        }
    }
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid address {:?}: {}", self.input, self.reason())?;
        match self.kind {
            Refusal::PortOutOfRange | Refusal::Unresolved(_) => Ok(()),
            _ => {
                f.write_str("; expected host:port (e.g. 127.0.0.1:9000, [::1]:9000) or unix:/path")
            }
        }
    }
}

impl std::error::Error for AddrParseError {}

/// So that `main() -> std::io::Result<()>` can use `?` on an address (kind `InvalidInput`).
impl From<AddrParseError> for std::io::Error {
    fn from(e: AddrParseError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Addr, AddrParseError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddrParseError::new(s, Refusal::EmptyUnixPath));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Addr::Tcp(sa));
        }
        let refuse = |kind| Err(AddrParseError::new(s, kind));
        // `[::1]` would otherwise read as host `[:` and port `1]`.
        let bracketed = s.starts_with('[') && s.ends_with(']');
        let Some((host, port)) = s.rsplit_once(':').filter(|_| !bracketed) else {
            return refuse(Refusal::NoPort);
        };
        // `::1` is an IPv6 address alone; `::1:9000` stays [::1]:9000, as the resolver reads it.
        let ip_alone = s.parse::<IpAddr>().is_ok() && host.parse::<IpAddr>().is_err();
        if port.is_empty() || ip_alone {
            return refuse(Refusal::NoPort);
        }
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return refuse(Refusal::PortNotNumber);
        }
        if port.parse::<u16>().is_err() {
            return refuse(Refusal::PortOutOfRange);
        }
        if host.is_empty() {
            return refuse(Refusal::EmptyHost);
        }
        // A host name such as localhost:9000.
        match s.to_socket_addrs() {
            Ok(mut found) => match found.next() {
                Some(sa) => Ok(Addr::Tcp(sa)),
                None => refuse(Refusal::Unresolved("no address found".to_owned())),
            },
            Err(e) => refuse(Refusal::Unresolved(e.to_string())),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(sa) => write!(f, "{sa}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_unix_and_rejects_garbage() {
        assert_eq!(
            "127.0.0.1:9000".parse::<Addr>().unwrap(),
            Addr::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            "[::1]:80".parse::<Addr>().unwrap(),
            Addr::Tcp("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/app.sock".parse::<Addr>().unwrap(),
            Addr::Unix("/run/app.sock".into())
        );
        assert!("unix:".parse::<Addr>().is_err());
        assert!("nonsense".parse::<Addr>().is_err());
        assert_eq!(Addr::Unix("/a".into()).to_string(), "unix:/a");
        let e = "127.0.0.1:99999".parse::<Addr>().unwrap_err().to_string();
        assert!(e.contains("port 99999 is out of range (0 to 65535)"), "{e}");
        let e = "nonsense".parse::<Addr>().unwrap_err().to_string();
        assert!(e.contains("expected host:port"), "{e}");
    }

    /// Each refusal says what is wrong, with no resolver call for a malformed address.
    #[test]
    fn a_refused_address_says_why() {
        let why = |s: &str| s.parse::<Addr>().unwrap_err().reason();
        assert_eq!(
            why("127.0.0.1:70000"),
            "port 70000 is out of range (0 to 65535)"
        );
        assert_eq!(
            why("[::1]:70000"),
            "port 70000 is out of range (0 to 65535)"
        );
        assert_eq!(
            why("localhost:99999"),
            "port 99999 is out of range (0 to 65535)"
        );
        assert_eq!(why("127.0.0.1:http"), "port \"http\" is not a number");
        assert!(why(":9000").starts_with("no host before the port"));
        for no_port in ["127.0.0.1", "127.0.0.1:", "[::1]", "::1", "localhost"] {
            assert_eq!(why(no_port), "no port", "{no_port}");
        }
        assert_eq!(why("unix:"), "no path after unix:");
        assert_eq!(
            "::1:9000".parse::<Addr>().unwrap(),
            Addr::Tcp("[::1]:9000".parse().unwrap())
        );
        let e = "127.0.0.1".parse::<Addr>().unwrap_err().to_string();
        assert!(
            e.ends_with(
                "no port; expected host:port (e.g. 127.0.0.1:9000, [::1]:9000) or unix:/path"
            ),
            "{e}"
        );
        let e = "127.0.0.1:70000".parse::<Addr>().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid address \"127.0.0.1:70000\": port 70000 is out of range (0 to 65535)"
        );
    }
}
