//! A multi-host lab in network namespaces: each host is a namespace with one address on the lab
//! network (10.231.0.0/24, host i at 10.231.0.(i+1)), linked by a veth pair to a bridge that
//! lives in a namespace of its own, so that all traffic stays inside the lab (labs running at
//! once are separate networks). Created by the test (root and `ip` needed:
//! in CI a missing `ip` fails the test) and torn down when dropped.

use super::proxy::find_binary;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Labs made by this process (their namespaces' names differ).
static LABS: AtomicU32 = AtomicU32::new(0);

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its network namespace (`ip netns exec NAME ...`).
    pub ns: String,
    pub ip: Ipv4Addr,
}

pub struct Lab {
    ip_bin: PathBuf,
    switch: String,
    pub hosts: Vec<Host>,
    /// A directory of the lab's own (pid files, configs), removed with it.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// A lab with one host per name, or `None` outside CI when `ip` is missing.
    pub fn new(names: &[&str]) -> Option<Lab> {
        let ip_bin = find_binary("ip", &["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip"])?;
        let tag = format!(
            "{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            ip_bin,
            switch: format!("fcgi-lab-sw-{tag}"),
            hosts: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let switch = lab.switch.clone();
        lab.run(&["netns", "add", &switch]);
        lab.run(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        lab.run(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let ns = format!("fcgi-lab-{name}-{tag}");
            let ip = Ipv4Addr::new(10, 231, 0, u8::try_from(i + 1).expect("at most 254 hosts"));
            lab.run(&["netns", "add", &ns]);
            // Registered before anything else can fail, so that Drop removes it.
            lab.hosts.push(Host { ns: ns.clone(), ip });
            lab.run(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("p{i}");
            lab.run(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &switch,
            ]);
            lab.run(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            lab.run(&["-n", &switch, "link", "set", &port, "up"]);
            lab.run(&["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            lab.run(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        Some(lab)
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(&self.ip_bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The host named `name` when the lab was made.
    pub fn host(&self, name: &str) -> &Host {
        let suffix = format!("fcgi-lab-{name}-");
        self.hosts
            .iter()
            .find(|h| h.ns.starts_with(&suffix))
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// A command run inside `host`'s namespace (`ip netns exec NS program`).
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&self.ip_bin);
        c.args(["netns", "exec", &host.ns]).arg(program);
        c
    }

    /// Cuts `host` off the lab network (its `eth0` down): packets to it are dropped at the
    /// bridge, nothing is answered or reset, as when a host loses its link or power.
    pub fn cut_off(&self, host: &Host) {
        self.run(&["-n", &host.ns, "link", "set", "eth0", "down"]);
    }

    /// Runs `f` on a thread inside `host`'s namespace (a thread's network namespace is its
    /// own); its sockets are the host's.
    pub fn inside<T: Send>(&self, host: &Host, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&host.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap();
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Host {
    pub fn addr(&self) -> IpAddr {
        self.ip.into()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().map(|h| &h.ns).chain([&self.switch]) {
            let _ = Command::new(&self.ip_bin)
                .args(["netns", "del", ns])
                .output();
        }
    }
}
