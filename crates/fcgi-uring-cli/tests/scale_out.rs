//! Several fcgi-uring hosts behind one load balancer, in a namespace lab (`common::lab`): three
//! backend hosts, each running the real binary with the proxy as its only allowed peer, and a
//! proxy host running nginx or HAProxy with the configuration docs/deploy/README.md shows. The
//! share of each backend is read from its own metrics (admin listener on the host's loopback).

mod common;

use common::http_client::{Upload, request};
use common::lab::{Host, Lab};
use common::metrics::scrape;
use common::proxy::find_binary;
use common::restarts::{KillPidFile, signal};
use common::{HANG_GUARD, KillOnDrop, holds_within, wait_for};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
        }
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
{servers}        keepalive 16;
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
/// connections, no multiplexing), round robin, FastCGI health checks through the ping path.
fn haproxy(lab: &Lab, proxy: &Host, backends: &[&Host]) -> Option<Proxy> {
    let bin = find_binary("haproxy", &["/usr/sbin/haproxy", "/usr/bin/haproxy"])?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "    server s{i} {}:{FASTCGI_PORT} proto fcgi check inter 500ms fall 2 rise 2\n",
                b.ip
            )
        })
        .collect();
    let conf = format!(
        r#"global
    log stderr format raw local0 info
    maxconn 1024
    pidfile {d}/haproxy.pid
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
    # A request whose connection failed, or died before any answer, goes to another server
    # (idempotent methods only, HAProxy's default for L7 retries).
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
{servers}"#
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = lab.command(proxy, bin);
    cmd.arg("-db").arg("-f").arg(&conf_path);
    Some(Proxy::spawn(cmd, dir))
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
    // two passed health checks) and takes its share.
    let lb = cluster.lb.clone();
    cluster.servers[1] = start_backend(&cluster.lab, &cluster.backends[1], &lb);
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
