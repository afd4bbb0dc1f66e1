//! bench/lab.sh, the multi-host lab a user starts: run with this build's binary, it prints
//! `lab ready`; then requests through its proxy (sent from inside the proxy host's namespace)
//! are answered and spread over both backend hosts (their own metrics), and a SIGTERM or SIGINT
//! ends it with exit 0, its processes gone and its namespaces deleted. A lab whose backends
//! cannot start is torn down too, and bad arguments are refused with a clear message.

mod common;

use common::http_client::{Upload, request};
use common::metrics::scrape;
use common::proxy::find_binary;
use common::restarts::{alive, signal};
use common::{HANG_GUARD, wait_for};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");
/// The proxy's address in the lab (bench/lab.sh: the lb host is 10.233.0.1).
const PROXY: &str = "10.233.0.1:8080";
const ADMIN: &str = "127.0.0.1:9100";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/lab.sh")
}

/// The tools the script needs, or `None` outside CI when one is missing.
fn tools(proxy: &str) -> Option<PathBuf> {
    let ip = find_binary("ip", &["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip"])?;
    find_binary("curl", &["/usr/bin/curl", "/usr/local/bin/curl"])?;
    find_binary(
        proxy,
        &[
            &format!("/usr/sbin/{proxy}"),
            &format!("/usr/bin/{proxy}"),
            &format!("/usr/local/sbin/{proxy}"),
            &format!("/usr/local/bin/{proxy}"),
        ],
    )?;
    Some(ip)
}

/// The running script: its stdout lines as they come, its stderr in a file. Dropped while it
/// runs (a failed test), it gets SIGTERM so that it tears its lab down.
struct LabScript {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: tempfile::NamedTempFile,
}

impl LabScript {
    fn start(args: &[&str]) -> LabScript {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        // SIGINT as a terminal's Ctrl-C delivers it, even where the test runs with SIGINT
        // ignored (started in the background by a shell), which bash could not trap.
        let mut child = Command::new("env")
            .arg("--default-signal=INT")
            .arg(script())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LabScript {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// The namespaces' prefix: bench/lab.sh names them fcgi-shlab-PID-... after its own pid
    /// (`env` execs the script: the pid is the child's).
    fn tag(&self) -> String {
        format!("fcgi-shlab-{}", self.child.id())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Reads stdout until the line `lab ready`.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line == "lab ready";
                    self.stdout.push(line);
                    if ready {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no `lab ready` after {HANG_GUARD:?}; stdout: {:?}, stderr: {}",
                    self.stdout,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the script ended before `lab ready`: {:?}; stdout: {:?}, stderr: {}",
                    self.child.try_wait(),
                    self.stdout,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits (hang guard) for the script to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_for("bench/lab.sh to exit", HANG_GUARD, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for LabScript {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "TERM");
            if common::holds_within(HANG_GUARD, || matches!(self.child.try_wait(), Ok(Some(_)))) {
                return;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The network namespaces whose names start with `prefix`.
fn namespaces(ip: &Path, prefix: &str) -> Vec<String> {
    let out = Command::new(ip).args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    found.sort();
    found
}

/// The processes running in namespace `ns`.
fn pids_in(ip: &Path, ns: &str) -> Vec<u32> {
    let out = Command::new(ip)
        .args(["netns", "pids", ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip netns pids {ns}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Runs `f` on a thread inside namespace `ns` (a thread's network namespace is its own).
fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = Path::new("/run/netns").join(ns);
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap()
    })
}

/// Requests a backend served (its metrics, health checks left out: a check counted between
/// the two series' reads can make this one less, never more).
fn served(ns: &str) -> u64 {
    inside(ns, || {
        let page = scrape(ADMIN.parse().unwrap());
        page.n("fcgi_uring_requests_total{role=\"responder\"}")
            .saturating_sub(page.n("fcgi_uring_ping_requests_total"))
    })
}

/// The lab with `proxy` and two backends: ready, balanced, then stopped with `stop_signal`.
fn lab_with(proxy: &str, stop_signal: &str) {
    let Some(ip) = tools(proxy) else { return };
    let mut lab = LabScript::start(&["--proxy", proxy, "--backends", "2", BIN]);
    lab.wait_ready();
    let tag = lab.tag();
    let (lb, b1, b2) = (
        format!("{tag}-lb"),
        format!("{tag}-b1"),
        format!("{tag}-b2"),
    );
    assert_eq!(
        namespaces(&ip, &format!("{tag}-")),
        [b1.clone(), b2.clone(), lb.clone(), format!("{tag}-sw")]
    );
    // What it prints to try it names the real namespace and address.
    let hint = format!("ip netns exec {lb} curl http://{PROXY}/hello");
    assert!(
        lab.stdout.iter().any(|l| l.contains(&hint)),
        "no `{hint}` in {:?}",
        lab.stdout
    );
    // The proxy and each backend run in their namespaces.
    let mut pids = Vec::new();
    for ns in [&lb, &b1, &b2] {
        let in_ns = pids_in(&ip, ns);
        assert!(!in_ns.is_empty(), "nothing runs in {ns}");
        pids.extend(in_ns);
    }

    // 20 requests through the proxy: round robin gives each backend about half.
    let before = [served(&b1), served(&b2)];
    inside(&lb, || {
        for _ in 0..20 {
            let r = request(PROXY.parse().unwrap(), "GET", "/hello", &[], Upload::None);
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body, b"Hello, World!");
        }
    });
    let after = [served(&b1), served(&b2)];
    let share = [0, 1].map(|i| after[i].saturating_sub(before[i]));
    assert!(
        share.iter().all(|&n| n >= 5),
        "both backends serve some of the 20 requests: {share:?} (b1, b2)"
    );

    signal(lab.child.id(), stop_signal);
    let status = lab.wait_exit();
    assert!(
        status.success(),
        "{stop_signal}: {status}; stderr: {}",
        lab.stderr()
    );
    assert_eq!(namespaces(&ip, &format!("{tag}-")), Vec::<String>::new());
    for pid in pids {
        assert!(!alive(pid), "{pid} of the lab still runs");
    }
}

#[test]
fn nginx_lab_answers_balances_and_goes_at_sigterm() {
    lab_with("nginx", "TERM");
}

#[test]
fn haproxy_lab_answers_balances_and_goes_at_sigint() {
    lab_with("haproxy", "INT");
}

/// A lab whose backends never listen (the "binary" exits at once) fails its start, says so,
/// and leaves no namespace behind.
#[test]
fn a_lab_that_fails_to_start_is_torn_down() {
    let Some(ip) = tools("nginx") else { return };
    let fail = find_binary("false", &["/usr/bin/false", "/bin/false"]).unwrap();
    let mut lab = LabScript::start(&["--backends", "1", fail.to_str().unwrap()]);
    let tag = lab.tag();
    let status = lab.wait_exit();
    assert!(!status.success(), "{status}");
    let stderr = lab.stderr();
    assert!(
        stderr.contains("nothing listens on 10.233.0.2:9000") && stderr.contains("torn down"),
        "{stderr}"
    );
    assert_eq!(namespaces(&ip, &format!("{tag}-")), Vec::<String>::new());
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, says) in [
        (&["--proxy", "apache"][..], "unknown proxy 'apache'"),
        (&["--backends", "9"], "from 1 to 8, got '9'"),
        (&["--backends", "0"], "from 1 to 8, got '0'"),
        (&["--backends", "two"], "from 1 to 8, got 'two'"),
        (&["--fast"], "unknown option --fast"),
        (&["--proxy"], "--proxy needs a value"),
    ] {
        let out = Command::new(script()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
