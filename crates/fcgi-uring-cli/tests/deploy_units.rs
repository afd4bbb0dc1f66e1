//! The systemd units shipped in docs/deploy: `systemd-analyze verify` accepts them without a
//! word (an unknown or misspelt option is a warning there, a failure here; the commented-out
//! `CPUSchedulingPolicy=batch` is verified switched on), they carry what
//! docs/deploy/restarts.md promises (socket activation, Type=notify with NotifyAccess=all,
//! ExecReload as the hot upgrade on the same pid file, a stop timeout past the drain), and
//! their system call filter leaves io_uring (and epoll) allowed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ANALYZE: &str = "/usr/bin/systemd-analyze";

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every value of `key` in the unit (`Key=value` lines, comments skipped).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn one(unit: &str, key: &str) -> String {
    let v = values(unit, key);
    assert_eq!(v.len(), 1, "{key}: {v:?}");
    v[0].clone()
}

#[test]
fn systemd_analyze_verify_accepts_the_units_silently() {
    assert!(
        Path::new(ANALYZE).exists(),
        "{ANALYZE} is missing: install Debian's systemd package (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // verify checks that the commands exist: point them at the binary under test. The option
    // the unit offers commented out (SCHED_BATCH, docs/tuning.md) is verified switched on.
    let shipped = unit("fcgi-uring.service");
    let optional = "\n#CPUSchedulingPolicy=batch\n";
    assert!(shipped.contains(optional), "the unit offers {optional:?}");
    let service = shipped
        .replace(optional, "\nCPUSchedulingPolicy=batch\n")
        .replace(
            "/usr/local/bin/fcgi-uring",
            env!("CARGO_BIN_EXE_fcgi-uring"),
        );
    std::fs::write(dir.path().join("fcgi-uring.service"), service).expect("write");
    std::fs::write(
        dir.path().join("fcgi-uring.socket"),
        unit("fcgi-uring.socket"),
    )
    .expect("write");
    let out = Command::new(ANALYZE)
        .current_dir(dir.path())
        .args([
            "verify",
            "--man=no",
            "./fcgi-uring.socket",
            "./fcgi-uring.service",
        ])
        .output()
        .expect("run systemd-analyze");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_units_carry_what_the_docs_promise() {
    let socket = unit("fcgi-uring.socket");
    let service = unit("fcgi-uring.service");
    assert_eq!(one(&socket, "Accept"), "no");
    let name = one(&socket, "FileDescriptorName");
    assert_ne!(
        name, "admin",
        "the FastCGI socket must not be named like the admin one"
    );
    assert!(!values(&socket, "ListenStream").is_empty());

    assert_eq!(one(&service, "Type"), "notify");
    assert_eq!(one(&service, "NotifyAccess"), "all");
    assert_eq!(one(&service, "Requires"), "fcgi-uring.socket");
    let start = one(&service, "ExecStart");
    let reload = one(&service, "ExecReload");
    let pid_file = |cmd: &str| {
        cmd.split_once("--pid-file ")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    assert!(start.contains(" serve "), "{start}");
    assert!(reload.contains(" reload "), "{reload}");
    assert_eq!(pid_file(&start), pid_file(&reload));
    assert!(pid_file(&start).is_some(), "{start}");
    let runtime = one(&service, "RuntimeDirectory");
    assert!(
        pid_file(&start).is_some_and(|p| p.starts_with(&format!("/run/{runtime}/"))),
        "the pid file is in the RuntimeDirectory: {start}"
    );
    // The stop timeout outlasts the default drain (server.shutdown_timeout, 30 s).
    let stop: u64 = one(&service, "TimeoutStopSec").parse().expect("seconds");
    let drain = fcgi_uring::Config::default().shutdown_timeout().as_secs();
    assert!(
        stop > drain,
        "TimeoutStopSec={stop} <= shutdown_timeout {drain}"
    );
    let families = one(&service, "RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.contains(family), "{families}");
    }
}

/// The system calls `systemd-analyze syscall-filter` lists for `group`, groups expanded.
fn expand(group: &str, seen: &mut BTreeSet<String>, calls: &mut BTreeSet<String>) {
    if !seen.insert(group.to_owned()) {
        return;
    }
    let out = Command::new(ANALYZE)
        .args(["syscall-filter", group])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(out.status.success(), "syscall-filter {group}");
    for word in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let word = word.trim();
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        if word.starts_with('@') {
            expand(word, seen, calls);
        } else {
            calls.insert(word.to_owned());
        }
    }
}

#[test]
fn the_system_call_filter_allows_io_uring_and_epoll() {
    let service = unit("fcgi-uring.service");
    let mut allowed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for entry in values(&service, "SystemCallFilter") {
        assert!(!entry.starts_with('~'), "a deny list: {entry}");
        for word in entry.split_whitespace() {
            if word.starts_with('@') {
                expand(word, &mut seen, &mut allowed);
            } else {
                allowed.insert(word.to_owned());
            }
        }
    }
    for call in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "epoll_create1",
        "epoll_ctl",
        "epoll_wait",
        "accept4",
        "sched_setaffinity",
        "mmap",
    ] {
        assert!(
            allowed.contains(call),
            "{call} is not allowed by the filter"
        );
    }
}
