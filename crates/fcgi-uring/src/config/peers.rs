//! `server.allowed_peers`: the only peers (the proxies) that may connect over TCP.
//!
//! A backend on a shared network listens beyond loopback; the allow-list closes every other
//! peer's connection at accept, before a byte of it is read. The list is addresses and
//! networks (`10.0.0.5, 10.1.0.0/16, fd00::/8`); IPv4 peers reaching an IPv6 listener
//! (`::ffff:10.0.0.5`) match their IPv4 entries. FastCGI 1.0 (section 3.2) names the same list
//! `FCGI_WEB_SERVER_ADDRS`, set in the application's environment by whoever starts it: the
//! server honours it when `server.allowed_peers` is not set.

use super::value::{FieldValue, Value};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The environment variable of FastCGI 1.0 section 3.2: a comma-separated list of the web
/// servers' IP addresses.
pub const WEB_SERVER_ADDRS_ENV: &str = "FCGI_WEB_SERVER_ADDRS";

/// Most entries a list may hold (each accepted connection is checked against every one).
const MAX_ENTRIES: usize = 256;

/// Peer addresses and networks allowed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerList {
    nets: Vec<IpNet>,
}

/// Why a peer list does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerListError {
    /// No entry: nobody could connect.
    Empty,
    /// More than 256 entries.
    TooMany(usize),
    /// This entry is neither an IP address nor a network (`10.0.0.0/8`).
    Invalid(String),
}

impl fmt::Display for PeerListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerListError::Empty => f.write_str("the list is empty: no peer could connect"),
            PeerListError::TooMany(n) => {
                write!(f, "{n} entries; at most {MAX_ENTRIES} (use networks)")
            }
            PeerListError::Invalid(item) => write!(
                f,
                "{item:?} is neither an IP address nor a network such as 10.0.0.0/8"
            ),
        }
    }
}

impl std::error::Error for PeerListError {}

impl PeerList {
    /// Whether `peer` may connect.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.nets.iter().any(|n| n.contains(&peer))
    }
}

impl FromStr for PeerList {
    type Err = PeerListError;

    /// Entries separated by commas or whitespace: `10.0.0.5, 10.1.0.0/16 ::1`.
    fn from_str(s: &str) -> Result<PeerList, PeerListError> {
        let nets = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        match nets.len() {
            0 => Err(PeerListError::Empty),
            n if n > MAX_ENTRIES => Err(PeerListError::TooMany(n)),
            _ => Ok(PeerList { nets }),
        }
    }
}

fn parse_entry(item: &str) -> Result<IpNet, PeerListError> {
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    let net = item
        .parse::<IpNet>()
        .map_err(|_| PeerListError::Invalid(item.to_owned()))?;
    // `10.1.2.3/8` is read as the network it is in, as iptables does.
    Ok(net.trunc())
}

impl fmt::Display for PeerList {
    /// `10.0.0.5/32, 10.1.0.0/16`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

impl FieldValue for PeerList {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
    fn from_value(v: &Value) -> Option<PeerList> {
        match v {
            Value::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_of_both_families() {
        let list: PeerList = "10.0.0.5, 10.1.0.0/16 fd00::/8,::1".parse().unwrap();
        assert!(list.allows(ip("10.0.0.5")));
        assert!(!list.allows(ip("10.0.0.6")));
        assert!(list.allows(ip("10.1.255.3")));
        assert!(!list.allows(ip("10.2.0.1")));
        assert!(list.allows(ip("fd12::1")));
        assert!(list.allows(ip("::1")));
        assert!(!list.allows(ip("127.0.0.1")));
        assert_eq!(
            list.to_string(),
            "10.0.0.5/32, 10.1.0.0/16, fd00::/8, ::1/128"
        );
        assert_eq!(list.to_string().parse::<PeerList>().unwrap(), list);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let list: PeerList = "192.168.1.0/24".parse().unwrap();
        assert!(list.allows(ip("::ffff:192.168.1.9")));
        let mapped: PeerList = "::ffff:10.0.0.1".parse().unwrap();
        assert!(mapped.allows(ip("10.0.0.1")));
    }

    #[test]
    fn a_host_inside_a_prefix_means_its_network() {
        let list: PeerList = "10.1.2.3/8".parse().unwrap();
        assert!(list.allows(ip("10.200.0.1")));
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        assert_eq!("".parse::<PeerList>(), Err(PeerListError::Empty));
        assert_eq!(" , ".parse::<PeerList>(), Err(PeerListError::Empty));
        assert_eq!(
            "10.0.0.1, proxy.local".parse::<PeerList>(),
            Err(PeerListError::Invalid("proxy.local".to_owned()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<PeerList>(),
            Err(PeerListError::Invalid("10.0.0.0/33".to_owned()))
        );
        let many = (0..300).map(|i| format!("10.0.{}.{}", i / 256, i % 256));
        let many = many.collect::<Vec<_>>().join(",");
        assert_eq!(many.parse::<PeerList>(), Err(PeerListError::TooMany(300)));
        assert!(
            PeerListError::Invalid("x".into())
                .to_string()
                .contains("neither an IP address nor a network")
        );
    }
}
