//! The workloads of the sweep: how the front ends that speak FastCGI load a backend, over TCP
//! and over a UNIX socket. No IO.

use std::time::Duration;

use fcgi_uring::Addr;

use crate::run::{Config, Protocol};

/// How requests are sent (over either transport).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub description: &'static str,
    pub path: &'static str,
    pub conns: usize,
    /// Requests in flight per connection (FastCGI multiplexing above 1).
    pub depth: usize,
    /// `false`: a new connection per request (FastCGI KEEP_CONN=0).
    pub keep_conn: bool,
    /// A POST body of this many bytes, echoed by the demo app.
    pub body_bytes: usize,
}

pub const SHAPES: [Shape; 4] = [
    Shape {
        name: "keepconn",
        description: "GET /hello, 16 kept-alive connections, one request at a time each (nginx with fastcgi_keep_conn)",
        path: "/hello",
        conns: 16,
        depth: 1,
        keep_conn: true,
        body_bytes: 0,
    },
    Shape {
        name: "newconn",
        description: "GET /hello, a new connection per request, 16 at a time (Caddy, lighttpd)",
        path: "/hello",
        conns: 16,
        depth: 1,
        keep_conn: false,
        body_bytes: 0,
    },
    Shape {
        name: "mux16",
        description: "GET /hello, 16 connections with 16 multiplexed requests each (HAProxy mpxs-conns)",
        path: "/hello",
        conns: 16,
        depth: 16,
        keep_conn: true,
        body_bytes: 0,
    },
    Shape {
        name: "post64k",
        description: "POST /echo with a 64 KiB body, echoed and checked, 16 kept-alive connections",
        path: "/echo",
        conns: 16,
        depth: 1,
        keep_conn: true,
        body_bytes: 64 * 1024,
    },
];

/// How the client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }
}

/// A shape over a transport, named `shape-transport` (`keepconn-tcp`).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub shape: Shape,
    pub transport: Transport,
}

/// The workloads of `--quick`.
pub const QUICK: [&str; 2] = ["keepconn-tcp", "mux16-tcp"];

impl Workload {
    pub fn name(&self) -> String {
        format!("{}-{}", self.shape.name, self.transport.name())
    }

    /// `shape x transport` for the report.
    pub fn description(&self) -> String {
        format!("{}; over {}", self.shape.description, self.transport.name())
    }

    /// The load of this workload against `addr`: closed loop, or open loop at `rate`; the
    /// client's one thread pinned to `client_cpu`, the server's CPU read from `server_pid`.
    pub fn load(
        &self,
        addr: Addr,
        rate: Option<f64>,
        timing: (Duration, Duration),
        client_cpu: usize,
        server_pid: u32,
    ) -> Config {
        let s = &self.shape;
        let mut c = Config::new(Protocol::Fastcgi, addr, s.path);
        c.conns = s.conns;
        c.depth = s.depth;
        c.keep_conn = s.keep_conn;
        c.body_bytes = s.body_bytes;
        c.expect_body = Some(if s.body_bytes > 0 {
            "x".repeat(s.body_bytes)
        } else {
            "Hello, World!".to_owned()
        });
        c.rate = rate;
        (c.warmup, c.duration) = timing;
        c.threads = 1;
        c.cpus = vec![client_cpu];
        c.server_pid = Some(server_pid);
        c
    }
}

/// Every workload: each shape over TCP, then over a UNIX socket.
pub fn all() -> Vec<Workload> {
    [Transport::Tcp, Transport::Unix]
        .into_iter()
        .flat_map(|transport| SHAPES.map(|shape| Workload { shape, transport }))
        .collect()
}

/// The workloads `filter` names (all when empty): a term is a workload's name (`keepconn-tcp`),
/// a shape (`keepconn`) or a transport (`unix`). An error names a term that matches nothing.
pub fn select(filter: &[String]) -> Result<Vec<Workload>, String> {
    let all = all();
    let matches =
        |w: &Workload, f: &str| w.name() == f || w.shape.name == f || w.transport.name() == f;
    for f in filter {
        if !all.iter().any(|w| matches(w, f)) {
            let names: Vec<String> = all.iter().map(Workload::name).collect();
            return Err(format!(
                "--workloads: no workload {f:?}; workloads: {} (or a part: keepconn, newconn, mux16, post64k, tcp, unix)",
                names.join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|w| filter.is_empty() || filter.iter().any(|f| matches(w, f)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        let names: Vec<String> = all().iter().map(Workload::name).collect();
        assert_eq!(names.len(), 8);
        assert_eq!(names[0], "keepconn-tcp");
        assert!(names.contains(&"post64k-unix".to_owned()));
        for q in QUICK {
            assert!(names.contains(&q.to_owned()), "{q}");
        }
        let unix = select(&["unix".into()]).unwrap();
        assert_eq!(unix.len(), 4);
        assert!(unix.iter().all(|w| w.transport == Transport::Unix));
        let two = select(&["mux16".into(), "keepconn-tcp".into()]).unwrap();
        let two: Vec<String> = two.iter().map(Workload::name).collect();
        assert_eq!(two, ["keepconn-tcp", "mux16-tcp", "mux16-unix"]);
        assert!(select(&["udp".into()]).unwrap_err().contains("\"udp\""));
    }

    #[test]
    fn loads_are_what_the_front_ends_send() {
        let addr: Addr = "127.0.0.1:9".parse().unwrap();
        let w = select(&["newconn-tcp".into()]).unwrap()[0];
        let timing = (Duration::from_millis(300), Duration::from_secs(1));
        let c = w.load(addr.clone(), Some(1000.0), timing, 1, 42);
        assert!(!c.keep_conn);
        assert_eq!((c.conns, c.depth, c.threads), (16, 1, 1));
        assert_eq!(c.cpus, [1]);
        assert_eq!(c.rate, Some(1000.0));
        assert_eq!(c.server_pid, Some(42));
        assert_eq!(c.warmup, Duration::from_millis(300));
        let p = select(&["post64k-tcp".into()]).unwrap()[0].load(addr, None, timing, 1, 42);
        assert_eq!(p.body_bytes, 65536);
        assert_eq!(p.expect_body.as_ref().map(String::len), Some(65536));
        assert_eq!(p.path, "/echo");
    }
}
