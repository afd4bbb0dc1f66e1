//! Several fcgi-uring hosts behind one load balancer, in a namespace lab (`common::lab`): three
//! backend hosts, each running the real binary with the proxy as its only allowed peer, and a
//! proxy host running nginx, HAProxy or Caddy with the configuration docs/deploy/scale-out.md
//! shows. The share of each backend is read from its own metrics (admin listener on the host's
//! loopback); HAProxy's view of its servers from its stats socket and its log. Besides balance,
//! kill, drain, rolling upgrade and rejoin: what HAProxy's `on-marked-down shutdown-sessions`
//! and L7 retries do to a request in flight on a host cut off the network or drained.

mod common;

use common::http_client::{Upload, request};
use common::lab::{Host, Lab};
use common::metrics::scrape;
use common::proxy::find_binary;
use common::restarts::{KillPidFile, signal};
use common::{HANG_GUARD, KillOnDrop, holds_within, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");
const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];
const FASTCGI_PORT: u16 = 9000;
const ADMIN: &str = "127.0.0.1:9100";
const PROXY: &str = "127.0.0.1:8080";

/// The lab, or `None` outside CI when `ip` is missing.
fn lab() -> Option<Lab> {
    Lab::new(&["lb", "b1", "b2", "b3"])
}

/// `fcgi-uring serve` on a backend host: every address, the proxy host as its only peer, the
/// ping path for health checks, metrics on the host's loopback.
fn start_backend(lab: &Lab, host: &Host, proxy: &Host) -> KillOnDrop {
    let child = lab
        .command(host, BIN)
        .args(["serve", "--workers", "1", "--no-pin"])
        .arg("--pid-file")
        .arg(pid_file(lab, host))
        .args(["--listen", &format!("0.0.0.0:{FASTCGI_PORT}")])
        .args(["--admin-listen", ADMIN, "--ping-path", "/ping"])
        // At SIGTERM, /readyz and the ping path answer 503 for 1.5 s while the host still
        // serves, so that health checks take it out before it stops accepting.
        .args(["--drain-delay", "1.5"])
        .args(["--allowed-peers", &proxy.ip.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = KillOnDrop(child);
    lab.inside(host, || {
        wait_for("the backend's admin listener", HANG_GUARD, || {
            TcpStream::connect(ADMIN).is_ok()
        });
    });
    server
}

/// Where a backend host's server writes its pid (the hot upgrade's new process rewrites it).
fn pid_file(lab: &Lab, host: &Host) -> std::path::PathBuf {
    lab.dir.path().join(format!("{}.pid", host.ns))
}

/// Requests a backend answered for the application (the ping path's answers left out).
fn app_requests(lab: &Lab, host: &Host) -> u64 {
    lab.inside(host, || {
        let page = scrape(ADMIN.parse().unwrap());
        page.n("fcgi_uring_requests_total{role=\"responder\"}")
            - page.n("fcgi_uring_ping_requests_total")
    })
}

/// A proxy process on the proxy host, its config written to a temporary directory.
struct Proxy {
    _child: KillOnDrop,
    dir: tempfile::TempDir,
    /// HAProxy's stats socket (`show servers state`), for HAProxy only.
    stats: Option<std::path::PathBuf>,
}

impl Proxy {
    /// Runs `cmd` (a command inside the proxy host) with its output in `dir/error.log`.
    fn spawn(mut cmd: std::process::Command, dir: tempfile::TempDir) -> Proxy {
        let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proxy {
            _child: KillOnDrop(child),
            dir,
            stats: None,
        }
    }

    /// The operational state of HAProxy's server `name` in backend `app` (`show servers
    /// state`: [`STOPPED`], [`STARTING`] while `slowstart` ramps its weight up, [`RUNNING`]).
    fn server_state(&self, name: &str) -> u8 {
        let path = self.stats.as_ref().expect("HAProxy's stats socket");
        let mut sock = std::os::unix::net::UnixStream::connect(path).unwrap();
        sock.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        sock.write_all(b"show servers state app\n").unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).unwrap();
        // "be_id be_name srv_id srv_name srv_addr srv_op_state ..."
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[1] == "app" && f[3] == name)
            .and_then(|f| f[5].parse().ok())
            .unwrap_or_else(|| panic!("no state for server {name} in: {out}"))
    }

    /// Every server of HAProxy's backend `app` at full weight (running, slowstart over).
    fn haproxy_all_running(&self, servers: usize) -> bool {
        (0..servers).all(|i| self.server_state(&format!("s{i}")) == RUNNING)
    }

    fn log(&self) -> String {
        ["error.log", "nginx-error.log"]
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .concat()
    }
}

fn nginx(lab: &Lab, proxy: &Host, backends: &[&Host]) -> Option<Proxy> {
    let bin = find_binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let servers: String = backends
        .iter()
        .map(|b| {
            format!(
                "        server {}:{FASTCGI_PORT} max_fails=1 fail_timeout=2s;\n",
                b.ip
            )
        })
        .collect();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/nginx-error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream app {{
{servers}        keepalive 64;
    }}
    server {{
        listen {PROXY};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_pass app;
            fastcgi_keep_conn on;
            fastcgi_next_upstream error timeout;
            fastcgi_next_upstream_tries 2;
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = lab.command(proxy, bin);
    cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
    cmd.arg("-e").arg(dir.path().join("nginx-error.log"));
    Some(Proxy::spawn(cmd, dir))
}

/// HAProxy 2.6 as the deploy guide recommends it for an unfixed 2.6 (kept-alive FastCGI
/// connections, no multiplexing), round robin, FastCGI health checks through the ping path,
/// and `slowstart`: a server that comes back up gets its weight ramped up over 2 s.
fn haproxy(lab: &Lab, proxy: &Host, backends: &[&Host]) -> Option<Proxy> {
    haproxy_with(lab, proxy, backends, "", "")
}

/// [`haproxy`] with `on-marked-down shutdown-sessions` on every server: when a server is
/// marked down, the requests in flight on it are ended at once. `timeout server` is 6 s (for
/// the comparison with [`haproxy_timeout_6s`]).
fn haproxy_shutdown_sessions(lab: &Lab, proxy: &Host, backends: &[&Host]) -> Option<Proxy> {
    haproxy_with(
        lab,
        proxy,
        backends,
        " on-marked-down shutdown-sessions",
        "    timeout server 6s\n",
    )
}

/// [`haproxy_shutdown_sessions`] without `http-request disable-l7-retry unless METH_GET`.
fn haproxy_shutdown_sessions_retrying_posts(
    lab: &Lab,
    proxy: &Host,
    backends: &[&Host],
) -> Option<Proxy> {
    haproxy_retrying(
        lab,
        proxy,
        backends,
        " on-marked-down shutdown-sessions",
        "    timeout server 6s\n",
        true,
    )
}

/// [`haproxy`] with `timeout server` 6 s.
fn haproxy_timeout_6s(lab: &Lab, proxy: &Host, backends: &[&Host]) -> Option<Proxy> {
    haproxy_with(lab, proxy, backends, "", "    timeout server 6s\n")
}

/// HAProxy's server states (`show servers state`, `srv_op_state`).
const STOPPED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;

/// [`haproxy`] with `server_extra` on each server line and `backend_extra` lines in the
/// backend.
fn haproxy_with(
    lab: &Lab,
    proxy: &Host,
    backends: &[&Host],
    server_extra: &str,
    backend_extra: &str,
) -> Option<Proxy> {
    haproxy_retrying(lab, proxy, backends, server_extra, backend_extra, false)
}

/// [`haproxy_with`]; `retry_posts`: without `http-request disable-l7-retry unless METH_GET`,
/// so that L7 retries send a POST again too.
fn haproxy_retrying(
    lab: &Lab,
    proxy: &Host,
    backends: &[&Host],
    server_extra: &str,
    backend_extra: &str,
    retry_posts: bool,
) -> Option<Proxy> {
    let bin = find_binary("haproxy", &["/usr/sbin/haproxy", "/usr/bin/haproxy"])?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let no_retry = if retry_posts {
        ""
    } else {
        "    http-request disable-l7-retry unless METH_GET\n"
    };
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "    server s{i} {}:{FASTCGI_PORT} proto fcgi check inter 500ms fall 2 rise 2 slowstart 2s{server_extra}\n",
                b.ip
            )
        })
        .collect();
    let conf = format!(
        r#"global
    log stderr format raw local0 info
    maxconn 1024
    pidfile {d}/haproxy.pid
    stats socket {d}/haproxy.sock level admin
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 20s
    timeout server 20s
fcgi-app app
    docroot /srv
    option keep-conn
frontend web
    bind {PROXY}
    default_backend app
backend app
    use-fcgi-app app
    http-reuse always
    balance roundrobin
    option httpchk GET /ping
    # A request whose connection failed, or died before any answer, goes to another server;
    # once sent, only GET and HEAD are sent again (HAProxy's L7 retries would replay a POST).
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
{no_retry}{backend_extra}{servers}"#
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).unwrap();
    let stats = dir.path().join("haproxy.sock");
    let mut cmd = lab.command(proxy, bin);
    cmd.arg("-db").arg("-f").arg(&conf_path);
    let mut proxy = Proxy::spawn(cmd, dir);
    proxy.stats = Some(stats);
    Some(proxy)
}

/// Caddy with `reverse_proxy` over `transport fastcgi` (a connection per request), round robin,
/// passive health checks and retries of GET on another upstream.
fn caddy(lab: &Lab, proxy: &Host, backends: &[&Host]) -> Option<Proxy> {
    let bin = find_binary("caddy", &["/usr/bin/caddy", "/usr/local/bin/caddy"])?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let upstreams: Vec<String> = backends
        .iter()
        .map(|b| format!("{}:{FASTCGI_PORT}", b.ip))
        .collect();
    let upstreams = upstreams.join(" ");
    let port = PROXY.rsplit_once(':').unwrap().1;
    let conf = format!(
        r#"{{
    admin off
    auto_https off
    storage file_system {d}/data
    log {{
        output stderr
        level WARN
    }}
}}
http://:{port} {{
    bind 127.0.0.1
    reverse_proxy {upstreams} {{
        lb_policy round_robin
        lb_try_duration 2s
        fail_duration 2s
        max_fails 1
        transport fastcgi {{
            root /srv
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("Caddyfile");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = lab.command(proxy, bin);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf_path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    Some(Proxy::spawn(cmd, dir))
}

/// `n` GET /hello through the proxy from the proxy host, one connection each; the statuses.
fn load(lab: &Lab, proxy: &Host, n: usize) -> Vec<u16> {
    let addr: SocketAddr = PROXY.parse().unwrap();
    lab.inside(proxy, || (0..n).map(|_| get_status(addr)).collect())
}

/// The lab with three backends and the proxy in front, every backend in service.
struct Cluster {
    lab: Lab,
    lb: Host,
    backends: Vec<Host>,
    servers: Vec<KillOnDrop>,
    proxy: Proxy,
}

type StartProxy = fn(&Lab, &Host, &[&Host]) -> Option<Proxy>;

impl Cluster {
    /// `None` outside CI when `ip` or the proxy is missing.
    fn start(start_proxy: StartProxy) -> Option<Cluster> {
        let lab = lab()?;
        let lb = lab.host("lb").clone();
        let backends: Vec<Host> = BACKENDS.iter().map(|b| lab.host(b).clone()).collect();
        let servers = backends
            .iter()
            .map(|b| start_backend(&lab, b, &lb))
            .collect();
        let refs: Vec<&Host> = backends.iter().collect();
        let proxy = start_proxy(&lab, &lb, &refs)?;
        lab.inside(&lb, || {
            wait_for("the proxy to listen", HANG_GUARD, || {
                TcpStream::connect(PROXY).is_ok()
            });
        });
        let cluster = Cluster {
            lab,
            lb,
            backends,
            servers,
            proxy,
        };
        cluster.wait_all_serving();
        Some(cluster)
    }

    /// Sends requests until every backend has answered one since `since`.
    fn wait_all_serving(&self) {
        let since = self.served();
        let ready = holds_within(HANG_GUARD, || {
            load(&self.lab, &self.lb, 3);
            self.served()
                .iter()
                .zip(&since)
                .all(|(now, then)| now > then)
        });
        assert!(
            ready,
            "backends not all in service; proxy log: {}",
            self.proxy.log()
        );
        if self.proxy.stats.is_some() {
            wait_for(
                "every HAProxy server running at full weight",
                HANG_GUARD,
                || self.proxy.haproxy_all_running(self.backends.len()),
            );
        }
    }

    /// Application requests each backend has served.
    fn served(&self) -> Vec<u64> {
        self.backends
            .iter()
            .map(|b| app_requests(&self.lab, b))
            .collect()
    }

    /// 300 requests: none fails, and each backend serves a third of them within 10 %.
    fn assert_balanced(&self, what: &str) {
        let before = self.served();
        let statuses = load(&self.lab, &self.lb, 300);
        let failed = statuses.iter().filter(|s| **s != 200).count();
        assert_eq!(
            failed,
            0,
            "{what}: failed requests; proxy log: {}",
            self.proxy.log()
        );
        let served: Vec<u64> = self
            .served()
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        eprintln!("{what}: 300 requests served as {served:?}");
        assert_eq!(served.iter().sum::<u64>(), 300, "{what}: {served:?}");
        for (b, n) in BACKENDS.iter().zip(&served) {
            assert!(
                (90..=110).contains(n),
                "{what}: {b} served {n} of 300: {served:?}"
            );
        }
    }
}

/// Runs `during` while one client on the proxy host sends GET /hello through the proxy back to
/// back (at most one request in flight); `during` gets the count of answered requests so far.
/// Returns every status (0: no answer).
fn under_load(lab: &Lab, lb: &Host, during: impl FnOnce(&AtomicUsize)) -> Vec<u16> {
    let addr: SocketAddr = PROXY.parse().unwrap();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let statuses = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            lab.inside(lb, || {
                while !stop.load(Ordering::SeqCst) {
                    let status = get_status(addr);
                    statuses.lock().unwrap().push(status);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        });
        // Stops the client even when `during` panics, so that the scope can end.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(&stop);
        during(&done);
    });
    statuses.into_inner().unwrap()
}

/// One GET /hello through the proxy on a new connection: its status, 0 when the connection
/// failed or ended without an answer.
fn get_status(addr: SocketAddr) -> u16 {
    std::panic::catch_unwind(|| request(addr, "GET", "/hello", &[], Upload::None).status)
        .unwrap_or(0)
}

/// Each backend serves a third of 300 requests, within 10 %, and none fails.
fn balance(start_proxy: StartProxy) {
    if let Some(cluster) = Cluster::start(start_proxy) {
        cluster.assert_balanced("balance");
    }
}

/// How b2 is stopped under load.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL: the request it was serving may fail (one client: at most one).
    Kill,
    /// SIGTERM: it drains (ping path 503 first, then in-flight requests answered and
    /// connections closed between requests): no request may fail.
    Drain,
}

/// Under a steady load from one client (at most one request in flight), backend b2 is stopped
/// (`how`): the proxy stops sending to it, and once it is started again it rejoins and takes
/// its third.
fn stop_and_rejoin(start_proxy: StartProxy, how: Stop) {
    let Some(mut cluster) = Cluster::start(start_proxy) else {
        return;
    };
    let statuses = under_load(&cluster.lab, &cluster.lb, |done| {
        wait_for("100 requests before the stop", HANG_GUARD, || {
            done.load(Ordering::SeqCst) >= 100
        });
        let stopped_at = done.load(Ordering::SeqCst);
        let b2 = &mut cluster.servers[1].0;
        match how {
            Stop::Kill => b2.kill().unwrap(),
            Stop::Drain => signal(b2.id(), "TERM"),
        }
        let exited = b2.wait().unwrap();
        if how == Stop::Drain {
            assert!(exited.success(), "b2 drained and exited cleanly: {exited}");
        }
        wait_for("300 requests after the stop", HANG_GUARD, || {
            done.load(Ordering::SeqCst) >= stopped_at + 300
        });
    });
    let failed = statuses.iter().filter(|s| **s != 200).count();
    let (what, allowed) = match how {
        Stop::Kill => ("killed with SIGKILL", 1),
        Stop::Drain => ("drained with SIGTERM", 0),
    };
    eprintln!(
        "stop: {} requests, {failed} failed (b2 {what} under load)",
        statuses.len()
    );
    assert!(
        failed <= allowed,
        "{failed} of {} failed with b2 {what} (at most {allowed} may); proxy log: {}",
        statuses.len(),
        cluster.proxy.log()
    );
    // The proxy no longer sends to b2: 30 more requests all answered by the others.
    let live = [&cluster.backends[0], &cluster.backends[2]];
    let served_live = || live.map(|b| app_requests(&cluster.lab, b));
    let before = served_live();
    let after_kill = load(&cluster.lab, &cluster.lb, 30);
    assert!(
        after_kill.iter().all(|s| *s == 200),
        "{after_kill:?}; proxy log: {}",
        cluster.proxy.log()
    );
    let served: Vec<u64> = served_live()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(
        served.iter().sum::<u64>(),
        30,
        "b1 and b3 served {served:?}"
    );
    // b2 comes back on the same address: it rejoins (nginx after fail_timeout, HAProxy after
    // two passed health checks, then a slowstart ramp) and takes its share.
    let haproxy = cluster.proxy.stats.is_some();
    if haproxy {
        wait_for("HAProxy to mark s1 (b2) down", HANG_GUARD, || {
            cluster.proxy.server_state("s1") == STOPPED
        });
    }
    let lb = cluster.lb.clone();
    cluster.servers[1] = start_backend(&cluster.lab, &cluster.backends[1], &lb);
    if haproxy {
        // HAProxy's view of s1 until it runs at full weight: it must go through STARTING
        // (slowstart: its weight ramped up), not straight from down to full weight.
        let mut seen = vec![STOPPED];
        wait_for("s1 (b2) running at full weight", HANG_GUARD, || {
            let state = cluster.proxy.server_state("s1");
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            state == RUNNING
        });
        assert!(
            seen.contains(&STARTING),
            "s1 came back as {seen:?} (0 stopped, 1 starting, 2 running): no slowstart ramp"
        );
    }
    cluster.wait_all_serving();
    cluster.assert_balanced("rejoined");
}

#[test]
fn nginx_spreads_requests_evenly_over_three_hosts() {
    balance(nginx);
}

#[test]
fn haproxy_spreads_requests_evenly_over_three_hosts() {
    balance(haproxy);
}

#[test]
fn nginx_routes_around_a_killed_host_and_takes_it_back() {
    stop_and_rejoin(nginx, Stop::Kill);
}

#[test]
fn haproxy_routes_around_a_killed_host_and_takes_it_back() {
    stop_and_rejoin(haproxy, Stop::Kill);
}

#[test]
fn caddy_spreads_requests_evenly_over_three_hosts() {
    balance(caddy);
}

#[test]
fn caddy_routes_around_a_killed_host_and_takes_it_back() {
    stop_and_rejoin(caddy, Stop::Kill);
}

#[test]
fn nginx_loses_nothing_when_a_host_drains() {
    stop_and_rejoin(nginx, Stop::Drain);
}

#[test]
fn haproxy_loses_nothing_when_a_host_drains() {
    stop_and_rejoin(haproxy, Stop::Drain);
}

#[test]
fn caddy_loses_nothing_when_a_host_drains() {
    stop_and_rejoin(caddy, Stop::Drain);
}

/// A rolling hot upgrade (`fcgi-uring reload`) of the three hosts, one after another, under a
/// steady load through the proxy: no request fails, and every host serves again afterwards.
fn rolling_upgrade(start_proxy: StartProxy) {
    let Some(cluster) = Cluster::start(start_proxy) else {
        return;
    };
    let _cleanup: Vec<KillPidFile> = cluster
        .backends
        .iter()
        .map(|b| KillPidFile(pid_file(&cluster.lab, b)))
        .collect();
    let statuses = under_load(&cluster.lab, &cluster.lb, |_| {
        for b in &cluster.backends {
            let pids = pid_file(&cluster.lab, b);
            let old = std::fs::read_to_string(&pids).unwrap();
            let out = std::process::Command::new(BIN)
                .args(["reload", "--wait", "60", "--pid-file"])
                .arg(&pids)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "reload of {}: {}",
                b.ns,
                String::from_utf8_lossy(&out.stderr)
            );
            let new = std::fs::read_to_string(&pids).unwrap();
            assert_ne!(old.trim(), new.trim(), "{} runs a new process", b.ns);
        }
    });
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "rolling upgrade: {} requests, {failed} failed",
        statuses.len()
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed; proxy log: {}",
        statuses.len(),
        cluster.proxy.log()
    );
    cluster.wait_all_serving();
    cluster.assert_balanced("after the rolling upgrade");
}

#[test]
fn nginx_loses_nothing_in_a_rolling_upgrade() {
    rolling_upgrade(nginx);
}

#[test]
fn haproxy_loses_nothing_in_a_rolling_upgrade() {
    rolling_upgrade(haproxy);
}

#[test]
fn caddy_loses_nothing_in_a_rolling_upgrade() {
    rolling_upgrade(caddy);
}

/// How HAProxy loses b2 while a slow request is in flight on it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Loss {
    /// b2's link goes down: nothing it sends arrives any more, nothing is reset.
    CutOff,
    /// b2 gets SIGTERM: its ping path answers 503 (HAProxy marks it down) while it still
    /// serves, then it drains (answers what is in flight) and exits.
    Drain,
}

/// What became of the slow request HAProxy had sent to b2, from HAProxy's log line for it.
#[derive(Debug)]
struct Outcome {
    /// The server that answered it last (`app/s1` is b2).
    server: String,
    /// The status HAProxy sent the client; `-1` when it closed the client's connection
    /// without an answer.
    status: String,
    /// Its termination state (`sH--`: the server timeout struck while waiting for the
    /// response head; `----`: a normal end).
    state: String,
    /// Sent again to another server after the first attempt (`+N` in the retries field).
    redispatched: bool,
}

impl Outcome {
    /// From an `option httplog` line: "... app/s1 TR/Tw/Tc/Tr/Ta STATUS BYTES - - STATE
    /// ac/fc/bc/sc/rc ...".
    fn parse(line: &str) -> Option<Outcome> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = fields.iter().position(|f| f.starts_with("app/"))?;
        let retries = fields.get(at + 7)?.rsplit('/').next()?;
        Some(Outcome {
            server: fields[at].to_owned(),
            status: fields.get(at + 2)?.to_string(),
            state: fields.get(at + 6)?.to_string(),
            redispatched: retries.starts_with('+'),
        })
    }
}

/// Three slow GETs through HAProxy (`start_proxy`), one on each backend (round robin), all in
/// flight when b2 is lost (`how`); returns what became of b2's.
fn slow_request_on_a_lost_host(start_proxy: StartProxy, how: Loss) -> Option<Outcome> {
    const SLOW: &str = "/sleep?ms=4000";
    let cluster = Cluster::start(start_proxy)?;
    let addr: SocketAddr = PROXY.parse().unwrap();
    let in_flight = |host: &Host| {
        cluster.lab.inside(host, || {
            scrape(ADMIN.parse().unwrap()).n("fcgi_uring_requests_in_flight")
        })
    };
    let b2_pid = cluster.servers[1].0.id();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    cluster.lab.inside(&cluster.lb, || {
                        std::panic::catch_unwind(|| {
                            request(addr, "GET", SLOW, &[], Upload::None).status
                        })
                        .unwrap_or(0)
                    })
                })
            })
            .collect();
        wait_for("three slow requests in flight", HANG_GUARD, || {
            cluster.backends.iter().map(in_flight).sum::<u64>() >= 3
        });
        let spread: Vec<u64> = cluster.backends.iter().map(in_flight).collect();
        assert!(spread[1] >= 1, "no request in flight on b2: {spread:?}");
        match how {
            Loss::CutOff => cluster.lab.cut_off(&cluster.backends[1]),
            Loss::Drain => signal(b2_pid, "TERM"),
        }
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    eprintln!("{how:?}:");
    let outcome = b2_outcome(&cluster, &format!("\"GET {SLOW} "), &statuses);
    Some(outcome.expect("HAProxy logged every slow GET"))
}

/// How long HAProxy may take to log a request once its client has its answer (or lost its
/// connection): every request here ends within `timeout server` (6 s) of being sent.
const LOG_GUARD: Duration = Duration::from_secs(30);

/// Of the three requests whose log lines contain `target`, one went to each backend: b1's and
/// b3's were answered 200 and the clients got what HAProxy logged. Returns b2's: the one s1
/// answered, or that was sent again to another server. `None` when HAProxy closed a client's
/// connection without an answer and never logged that request (HAProxy 2.6 was seen doing so
/// once in CI, for the POST to the cut-off host).
fn b2_outcome(cluster: &Cluster, target: &str, statuses: &[u16]) -> Option<Outcome> {
    let lines = || -> Vec<Outcome> {
        let log = cluster.proxy.log();
        log.lines()
            .filter(|l| l.contains(target))
            .filter_map(Outcome::parse)
            .collect()
    };
    let logged = holds_within(LOG_GUARD, || lines().len() == 3);
    if !logged && statuses.contains(&0) {
        eprintln!(
            "a client lost its connection without an answer and HAProxy logged no line for it \
             ({statuses:?}); HAProxy's log:\n{}",
            cluster.proxy.log()
        );
        return None;
    }
    assert!(
        logged,
        "three log lines for {target} ({statuses:?}); HAProxy's log:\n{}",
        cluster.proxy.log()
    );
    let mut outcomes = lines();
    eprintln!("client statuses {statuses:?}; HAProxy: {outcomes:?}");
    let b2 = outcomes
        .iter()
        .position(|o| o.server == "app/s1" || o.redispatched)
        .expect("b2's request in the log");
    let b2 = outcomes.swap_remove(b2);
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == "200" && !o.redispatched && o.server != "app/s1"),
        "b1's and b3's requests answered: {outcomes:?}"
    );
    let mut expected: Vec<String> = vec!["200".into(), "200".into(), b2.status.clone()];
    // A client that lost its connection without an answer has status 0; HAProxy logs such a
    // request with status -1 (seen when it ended b2's POST as b2 was marked down, `D---`).
    let mut got: Vec<String> = statuses
        .iter()
        .map(|&s| if s == 0 { "-1".into() } else { s.to_string() })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "the clients got what HAProxy logged");
    Some(b2)
}

/// Three POSTs through HAProxy (`start_proxy`, with `on-marked-down shutdown-sessions`) just
/// after b2 is cut off the network, one for each backend (round robin): b2's is written to a
/// kept-alive connection to it and never answered, until HAProxy marks b2 down and ends it.
/// Returns what became of it. A run in which HAProxy drops a client unanswered and unlogged
/// (see [`b2_outcome`]) tells nothing of retries, so it is run again, at most three times.
fn post_to_a_cut_off_host(start_proxy: StartProxy) -> Option<Outcome> {
    for _ in 0..3 {
        if let Some(outcome) = post_once_to_a_cut_off_host(start_proxy)? {
            return Some(outcome);
        }
    }
    panic!("three runs in which HAProxy dropped a POST unanswered and unlogged");
}

/// One run of [`post_to_a_cut_off_host`]; `Some(None)` when HAProxy logged no outcome.
fn post_once_to_a_cut_off_host(start_proxy: StartProxy) -> Option<Option<Outcome>> {
    let cluster = Cluster::start(start_proxy)?;
    let addr: SocketAddr = PROXY.parse().unwrap();
    let body = vec![b'x'; 1024];
    cluster.lab.cut_off(&cluster.backends[1]);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    cluster.lab.inside(&cluster.lb, || {
                        std::panic::catch_unwind(|| {
                            request(addr, "POST", "/echo", &[], Upload::Fixed(&body)).status
                        })
                        .unwrap_or(0)
                    })
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    Some(b2_outcome(&cluster, "\"POST /echo ", &statuses))
}

/// HAProxy's L7 retries (`retry-on empty-response`) do not look at the method: a POST that
/// b2 received and never answered is sent again to another host unless the configuration
/// says `http-request disable-l7-retry unless METH_GET`, as the guide's does.
#[test]
fn haproxy_sends_a_post_twice_unless_told_not_to() {
    let Some(retried) = post_to_a_cut_off_host(haproxy_shutdown_sessions_retrying_posts) else {
        return;
    };
    assert!(
        retried.redispatched && retried.server != "app/s1" && retried.status == "200",
        "without disable-l7-retry: {retried:?}"
    );
    let Some(kept) = post_to_a_cut_off_host(haproxy_shutdown_sessions) else {
        return;
    };
    assert!(
        !kept.redispatched && kept.server == "app/s1" && kept.status != "200",
        "with disable-l7-retry unless METH_GET: {kept:?}"
    );
}

/// A host cut off the network with a GET in flight on it. Without `on-marked-down
/// shutdown-sessions`, HAProxy waits for the answer until `timeout server` (504, `sH`) although
/// its health checks mark the host down within about a second. With the option the request is
/// ended when the host is marked down, and `retry-on empty-response` with `option redispatch`
/// sends it to another host, which answers.
#[test]
fn haproxy_shutdown_sessions_retries_a_get_stuck_on_a_cut_off_host() {
    let Some(plain) = slow_request_on_a_lost_host(haproxy_timeout_6s, Loss::CutOff) else {
        return;
    };
    assert!(
        plain.server == "app/s1"
            && plain.status == "504"
            && plain.state == "sH--"
            && !plain.redispatched,
        "without the option: {plain:?}"
    );
    let Some(shut) = slow_request_on_a_lost_host(haproxy_shutdown_sessions, Loss::CutOff) else {
        return;
    };
    assert!(
        shut.redispatched && shut.server != "app/s1" && shut.status == "200",
        "with the option: {shut:?}"
    );
}

/// A host drained with SIGTERM (ping 503: HAProxy marks it down while it still serves).
/// Without `on-marked-down shutdown-sessions` the GET in flight on it is answered by it. With
/// the option HAProxy ends it when it marks the host down, although the host would have
/// answered: the GET is run again on another host (from the start, the work done on the
/// draining host lost); a request HAProxy does not retry (a POST, see the guide) fails.
#[test]
fn haproxy_shutdown_sessions_cuts_short_a_draining_hosts_requests() {
    let Some(plain) = slow_request_on_a_lost_host(haproxy_timeout_6s, Loss::Drain) else {
        return;
    };
    assert!(
        plain.server == "app/s1"
            && plain.status == "200"
            && plain.state == "----"
            && !plain.redispatched,
        "without the option: {plain:?}"
    );
    let Some(shut) = slow_request_on_a_lost_host(haproxy_shutdown_sessions, Loss::Drain) else {
        return;
    };
    assert!(
        shut.redispatched && shut.server != "app/s1",
        "with the option: {shut:?}"
    );
}
