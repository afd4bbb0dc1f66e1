//! Listen and connect addresses: `host:port` or `unix:/path`, the notation both ends of a
//! FastCGI hop share (as in nginx's `fastcgi_pass`).
//!
//! Parsing is pure for numeric addresses and UNIX paths; a host name (`localhost:9000`) is
//! resolved once, by the system resolver, when it is parsed: the one place in this crate that
//! may do IO.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// A TCP socket address or a UNIX socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Why an address string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError(String);

impl AddrParseError {
    /// What is wrong with a `host:port` whose port is a number but not a port (`99999`).
    fn port_out_of_range(&self) -> Option<&str> {
        let (_, port) = self.0.rsplit_once(':')?;
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        (digits && port.parse::<u16>().is_err()).then_some(port)
    }
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(port) = self.port_out_of_range() {
            return write!(
                f,
                "invalid address {:?}: port {port} is out of range (0 to 65535)",
                self.0
            );
        }
        write!(
            f,
            "invalid address {:?}: expected host:port (e.g. 127.0.0.1:9000, [::1]:9000) or unix:/path",
            self.0
        )
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
                return Err(AddrParseError(s.to_owned()));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Addr::Tcp(sa));
        }
        // A host name such as localhost:9000.
        s.to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .map(Addr::Tcp)
            .ok_or_else(|| AddrParseError(s.to_owned()))
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
}
