//! The Kubernetes manifests of docs/deploy/kubernetes/, kept honest without a cluster.
//!
//! - The numbers agree with each other: the probes ask the admin listener's port for /readyz and
//!   /healthz; the Service's ports are the container's and leave the admin port out; nginx's
//!   FastCGI address is the Service's FastCGI port; the grace period covers
//!   `admin.drain_delay + server.shutdown_timeout`; whole CPUs, one unpinned worker each; an IO
//!   mode that starts under the seccomp profile chosen; the network policy lets the proxy's pods
//!   in on the FastCGI port.
//! - A pod's termination as the kubelet runs it: two replicas started from the container's
//!   command and the ConfigMap's configuration (addresses moved to free loopback ports), as the
//!   container's user (when the test runs as root), each ready by its readiness probe; load spread over them as kube-proxy spreads connections;
//!   one replica terminated (its preStop hook if it has one, then SIGTERM) and left in the
//!   endpoints until it has served new connections since (the endpoints' propagation), then
//!   taken out: its readiness answers 503, it exits within the grace period, and no request
//!   fails.
//! - The proxy's configuration passes `nginx -t` and carries a request to a replica.

mod common;

use common::proxy::{find_binary, free_port};
use common::{HANG_GUARD, KillOnDrop, holds_within, wait_for};
use fcgi_client::{Client, RequestSpec};
use fcgi_uring::Addr;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use yaml_rust2::{Yaml, YamlLoader};

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploy/kubernetes");

/// The documents of one manifest file.
fn load(file: &str) -> Vec<Yaml> {
    let path = Path::new(MANIFESTS).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The one object of `kind` in `docs`.
fn only<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let mut found = docs.iter().filter(|d| d["kind"].as_str() == Some(kind));
    let one = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "several objects of kind {kind}");
    one
}

fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: not a list: {y:?}"))
}

/// Whether every label of `selector` (a `matchLabels` or a Service's `selector`) is on `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let Some(selector) = selector.as_hash() else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[text(k, "label")] == v)
}

/// A Deployment's pod template, its first container and what was read from both.
struct Workload<'a> {
    deployment: &'a Yaml,
    pod: &'a Yaml,
    container: &'a Yaml,
}

impl<'a> Workload<'a> {
    fn of(docs: &'a [Yaml]) -> Workload<'a> {
        let deployment = only(docs, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let containers = list(&pod["containers"], "containers");
        assert_eq!(containers.len(), 1, "one container per pod");
        Workload {
            deployment,
            pod,
            container: &containers[0],
        }
    }

    fn labels(&self) -> &'a Yaml {
        &self.deployment["spec"]["template"]["metadata"]["labels"]
    }

    /// The container port `port` names (a port name or a number), or a panic.
    fn container_port(&self, port: &Yaml) -> u16 {
        let ports = list(&self.container["ports"], "ports");
        let found = match port {
            Yaml::Integer(n) => ports
                .iter()
                .find(|p| p["containerPort"].as_i64() == Some(*n)),
            Yaml::String(name) => ports.iter().find(|p| p["name"].as_str() == Some(name)),
            other => panic!("a port is a name or a number: {other:?}"),
        };
        let found = found.unwrap_or_else(|| panic!("no container port {port:?}"));
        let n = found["containerPort"].as_i64().expect("containerPort");
        u16::try_from(n).expect("a port number")
    }

    fn port_named(&self, name: &str) -> u16 {
        self.container_port(&Yaml::String(name.to_owned()))
    }

    fn grace(&self) -> Duration {
        let s = self.pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("terminationGracePeriodSeconds is set");
        Duration::from_secs(u64::try_from(s).expect("a non-negative grace period"))
    }

    /// `(path, port)` of a probe's httpGet.
    fn probe(&self, which: &str) -> (String, u16) {
        let get = &self.container[which]["httpGet"];
        assert!(!get.is_badvalue(), "{which}: an httpGet probe");
        let path = text(&get["path"], "httpGet.path").to_owned();
        (path, self.container_port(&get["port"]))
    }

    /// The preStop exec command, if any.
    fn pre_stop(&self) -> Option<Vec<String>> {
        let exec = &self.container["lifecycle"]["preStop"]["exec"]["command"];
        exec.as_vec().map(|c| {
            c.iter()
                .map(|a| text(a, "preStop command").to_owned())
                .collect()
        })
    }

    /// The container's command and args.
    fn argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        for key in ["command", "args"] {
            if let Some(words) = self.container[key].as_vec() {
                argv.extend(words.iter().map(|w| text(w, key).to_owned()));
            }
        }
        argv
    }

    /// A `securityContext` field, the container's over the pod's.
    fn security(&self, key: &str) -> &'a Yaml {
        let mine = &self.container["securityContext"][key];
        if mine.is_badvalue() {
            &self.pod["securityContext"][key]
        } else {
            mine
        }
    }

    /// The seccomp profile type.
    fn seccomp(&self) -> Option<&'a str> {
        self.security("seccompProfile")["type"].as_str()
    }

    /// The user and group the container runs as.
    fn run_as(&self) -> (u32, u32) {
        let id = |key: &str| {
            let n = self.security(key).as_i64();
            n.and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("securityContext.{key} is set"))
        };
        (id("runAsUser"), id("runAsGroup"))
    }

    /// The ConfigMap key mounted at `path` in the container: `(ConfigMap name, key)`.
    fn config_map_file(&self, path: &str) -> (&'a str, String) {
        let mounts = list(&self.container["volumeMounts"], "volumeMounts");
        let (mount, rel) = mounts
            .iter()
            .find_map(|m| {
                let dir = text(&m["mountPath"], "mountPath").trim_end_matches('/');
                let rel = path.strip_prefix(dir)?.strip_prefix('/')?;
                Some((m, rel.to_owned()))
            })
            .unwrap_or_else(|| panic!("no volume mounted over {path}"));
        let volume = list(&self.pod["volumes"], "volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        (text(&volume["configMap"]["name"], "configMap.name"), rel)
    }
}

/// `data[key]` of the ConfigMap `name` in `docs`.
fn config_map_data<'a>(docs: &'a [Yaml], name: &str, key: &str) -> &'a str {
    let map = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("ConfigMap") && d["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no ConfigMap {name}"));
    text(&map["data"][key], &format!("ConfigMap {name} data {key}"))
}

/// The backend's manifests read: the workload and its configuration file.
struct Backend {
    docs: Vec<Yaml>,
    /// The `--config` path in the container's arguments.
    config_path: String,
    config: toml::Table,
}

impl Backend {
    fn load() -> Backend {
        let docs = load("fcgi-uring.yaml");
        let argv = Workload::of(&docs).argv();
        let config_path = argv
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| argv.get(i + 1))
            .expect("the container passes --config")
            .clone();
        let (map, key) = Workload::of(&docs).config_map_file(&config_path);
        let config = config_map_data(&docs, map, &key)
            .parse::<toml::Table>()
            .expect("the ConfigMap's fcgi-uring.toml is TOML");
        Backend {
            docs,
            config_path,
            config,
        }
    }

    fn workload(&self) -> Workload<'_> {
        Workload::of(&self.docs)
    }

    fn setting(&self, key: &str) -> Option<&toml::Value> {
        let (section, name) = key.split_once('.').expect("section.key");
        self.config.get(section)?.get(name)
    }

    fn seconds(&self, key: &str) -> f64 {
        match self.setting(key) {
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(toml::Value::Float(f)) => *f,
            other => panic!("{key} is set in seconds: {other:?}"),
        }
    }

    fn address(&self, key: &str) -> SocketAddr {
        let text = self.setting(key).and_then(toml::Value::as_str);
        text.and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{key} is a host:port: {text:?}"))
    }

    /// The Service, and its port whose target is the container's FastCGI port.
    fn service_fastcgi(&self) -> (&str, u16) {
        let service = only(&self.docs, "Service");
        let fastcgi = self.address("server.listen").port();
        let port = list(&service["spec"]["ports"], "Service ports")
            .iter()
            .find(|p| self.workload().container_port(&p["targetPort"]) == fastcgi)
            .expect("a Service port for the FastCGI listener");
        let n = port["port"].as_i64().expect("Service port");
        (
            text(&service["metadata"]["name"], "Service name"),
            u16::try_from(n).expect("a port number"),
        )
    }
}

/// nginx's configuration from its ConfigMap: the file mounted into conf.d.
struct Proxy {
    docs: Vec<Yaml>,
    conf: String,
}

impl Proxy {
    fn load() -> Proxy {
        let docs = load("nginx.yaml");
        let conf = {
            let w = Workload::of(&docs);
            let (map, key) = w.config_map_file("/etc/nginx/conf.d/default.conf");
            config_map_data(&docs, map, &key).to_owned()
        };
        Proxy { docs, conf }
    }

    fn workload(&self) -> Workload<'_> {
        Workload::of(&self.docs)
    }

    /// The `host:port` of the upstream that `fastcgi_pass` names (or `fastcgi_pass`'s own).
    fn fastcgi_address(&self) -> String {
        let directive = |name: &str| -> Vec<String> {
            self.conf
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter_map(|l| l.strip_prefix(name)?.strip_suffix(';'))
                .map(|v| v.trim().to_owned())
                .collect()
        };
        let pass = directive("fastcgi_pass ");
        assert_eq!(pass.len(), 1, "one fastcgi_pass: {pass:?}");
        let upstream = format!("upstream {} {{", pass[0]);
        let Some(start) = self.conf.find(&upstream) else {
            return pass[0].clone();
        };
        let block = &self.conf[start..];
        let block = &block[..block.find('}').expect("the upstream block ends")];
        let servers: Vec<&str> = block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("server "))
            .map(|s| {
                s.trim_end_matches(';')
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(
            servers.len(),
            1,
            "the upstream is the one Service: {servers:?}"
        );
        servers[0].to_owned()
    }
}

#[test]
fn the_manifests_agree_with_each_other() {
    let backend = Backend::load();
    let w = backend.workload();

    // The configuration's listeners are the container's ports, on the pod's address (the
    // kubelet probes from the node, the proxy connects from its pods).
    let fastcgi = backend.address("server.listen");
    let admin = backend.address("admin.listen");
    assert!(fastcgi.ip().is_unspecified() && admin.ip().is_unspecified());
    assert_eq!(fastcgi.port(), w.port_named("fastcgi"));
    assert_eq!(admin.port(), w.port_named("admin"));
    assert_ne!(fastcgi.port(), admin.port());

    // Kubernetes has no FastCGI probe: both probes ask the admin listener over HTTP.
    assert_eq!(
        w.probe("readinessProbe"),
        ("/readyz".to_owned(), admin.port())
    );
    assert_eq!(
        w.probe("livenessProbe"),
        ("/healthz".to_owned(), admin.port())
    );

    // The pod keeps accepting while the endpoints drop it, and is not killed mid-drain.
    let drain_delay = backend.seconds("admin.drain_delay");
    let shutdown_timeout = backend.seconds("server.shutdown_timeout");
    assert!(
        drain_delay > 0.0,
        "without a drain delay, connections routed to a terminating pod are refused"
    );
    assert!(
        shutdown_timeout > 0.0,
        "an unbounded drain outlives any grace period"
    );
    let grace = w.grace().as_secs_f64();
    assert!(
        grace >= drain_delay + shutdown_timeout + 2.0,
        "terminationGracePeriodSeconds {grace} < admin.drain_delay {drain_delay} + \
         server.shutdown_timeout {shutdown_timeout} + 2 s to exit"
    );

    // The Service selects the pods and exposes the FastCGI port, never the admin port.
    let service = only(&backend.docs, "Service");
    assert!(selects(&service["spec"]["selector"], w.labels()));
    let targets: Vec<u16> = list(&service["spec"]["ports"], "Service ports")
        .iter()
        .map(|p| w.container_port(&p["targetPort"]))
        .collect();
    assert_eq!(targets, [fastcgi.port()], "the Service's target ports");
    assert!(selects(
        &w.deployment["spec"]["selector"]["matchLabels"],
        w.labels()
    ));

    // nginx passes FastCGI to the Service's FastCGI port.
    let proxy = Proxy::load();
    let (service_name, service_port) = backend.service_fastcgi();
    assert_eq!(
        proxy.fastcgi_address(),
        format!("{service_name}:{service_port}")
    );

    // Whole CPUs, requests = limits (Guaranteed QoS): one worker per CPU, never throttled;
    // workers unpinned (without the static CPU manager every pod shares the node's cores, and
    // each would pin its workers to the same first ones).
    let resources = &w.container["resources"];
    for r in ["cpu", "memory"] {
        assert_eq!(
            resources["requests"][r], resources["limits"][r],
            "{r}: requests = limits"
        );
    }
    let cpus: u64 = text(&resources["limits"]["cpu"], "limits.cpu")
        .parse()
        .expect("a whole number of CPUs");
    match backend
        .setting("server.workers")
        .and_then(toml::Value::as_integer)
    {
        Some(0) => {}
        Some(n) => assert_eq!(
            u64::try_from(n).ok(),
            Some(cpus),
            "server.workers = the CPUs"
        ),
        None => panic!("server.workers is set (0: one per CPU of the limit)"),
    }
    assert_eq!(
        backend
            .setting("server.pin_workers")
            .and_then(toml::Value::as_bool),
        Some(false),
        "server.pin_workers = false (its default is true)"
    );

    // Not root, no capability, no escalation, nothing written to the image (the kubelet
    // simulation below runs the replicas as that user).
    assert_eq!(w.security("runAsNonRoot").as_bool(), Some(true));
    assert_ne!(w.run_as().0, 0, "runAsUser");
    let container = &w.container["securityContext"];
    assert_eq!(container["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(container["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(
        list(&container["capabilities"]["drop"], "capabilities.drop"),
        [Yaml::String("ALL".to_owned())]
    );

    // Under RuntimeDefault io_uring is blocked: the IO mode must be one that starts there.
    let io = backend
        .setting("server.io")
        .and_then(toml::Value::as_str)
        .unwrap_or("auto");
    match w.seccomp() {
        Some("RuntimeDefault") => assert_ne!(
            io, "uring",
            "server.io = uring does not start under RuntimeDefault"
        ),
        Some("Localhost") => {}
        other => panic!("a seccomp profile is chosen (RuntimeDefault or Localhost): {other:?}"),
    }

    // Only the proxy's pods reach the FastCGI port.
    let policy = only(&backend.docs, "NetworkPolicy");
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        w.labels()
    ));
    let fastcgi_rule = list(&policy["spec"]["ingress"], "ingress")
        .iter()
        .find(|rule| {
            list(&rule["ports"], "ports")
                .iter()
                .any(|p| w.container_port(&p["port"]) == fastcgi.port())
        })
        .expect("an ingress rule for the FastCGI port");
    let from = list(&fastcgi_rule["from"], "from");
    assert!(
        from.iter()
            .all(|f| selects(&f["podSelector"]["matchLabels"], proxy.workload().labels())),
        "the FastCGI port is open to the proxy's pods only: {from:?}"
    );

    // nginx has no drain delay: its preStop keeps it serving while its endpoints drop it,
    // within its grace period.
    let pw = proxy.workload();
    let pre_stop = pw.pre_stop().expect("nginx has a preStop hook");
    let slept: u64 = match pre_stop.as_slice() {
        [sleep, s] if sleep == "sleep" => s.parse().expect("sleep seconds"),
        other => panic!("nginx's preStop is a sleep: {other:?}"),
    };
    assert!(Duration::from_secs(slept) < pw.grace());
}

/// A replica started as the kubelet starts the container: the container's command (the binary
/// under test for `fcgi-uring`) with the ConfigMap's file, its listeners moved to free loopback
/// ports.
struct Replica {
    child: KillOnDrop,
    fcgi: Addr,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(backend: &Backend) -> Replica {
        let dir = tempfile::tempdir().expect("tempdir");
        let fcgi = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = backend.config.clone();
        let mut set = |section: &str, key: &str, value: String| {
            let table = config
                .get_mut(section)
                .and_then(toml::Value::as_table_mut)
                .unwrap_or_else(|| panic!("[{section}] in the configuration"));
            table.insert(key.to_owned(), toml::Value::String(value));
        };
        set("server", "listen", fcgi.to_string());
        set("admin", "listen", admin.to_string());
        let file = Path::new(&backend.config_path)
            .file_name()
            .expect("a file name");
        let config_file = dir.path().join(file);
        std::fs::write(&config_file, toml::to_string(&config).expect("TOML"))
            .expect("write config");

        let argv = backend.workload().argv();
        assert_eq!(
            argv.first().map(String::as_str),
            Some("fcgi-uring"),
            "the container runs fcgi-uring"
        );
        let args = argv[1..].iter().map(|a| {
            if *a == backend.config_path {
                config_file.clone().into_os_string()
            } else {
                a.into()
            }
        });
        // As the container runs it: its user and group, no capability, no new privileges
        // (with the binary and the configuration where that user can read them).
        let exe = dir.path().join("fcgi-uring");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_fcgi-uring"), &exe).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_fcgi-uring"), &exe).expect("copy the binary");
        }
        let readable = |path: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        readable(dir.path(), 0o755);
        readable(&config_file, 0o644);
        let mut cmd = if is_root() {
            let (uid, gid) = backend.workload().run_as();
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                .args(["--clear-groups", "--no-new-privs"])
                .args(["--bounding-set=-all", "--inh-caps=-all"])
                .arg(&exe);
            cmd
        } else {
            // Already a user without privileges.
            Command::new(&exe)
        };
        let log = dir.path().join("server.log");
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start the container's command");
        Replica {
            child: KillOnDrop(child),
            fcgi: Addr::Tcp(fcgi),
            admin,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The status of the kubelet's httpGet on the admin port (0 when it cannot connect).
    fn http_get(&self, path: &str) -> u16 {
        match std::net::TcpStream::connect(self.admin) {
            Ok(_) => {
                common::http_client::request(
                    self.admin,
                    "GET",
                    path,
                    &[],
                    common::http_client::Upload::None,
                )
                .status
            }
            Err(_) => 0,
        }
    }

    /// Waits until the readiness probe at `path` passes; a replica that exits first fails the
    /// test with its log.
    fn wait_ready(&mut self, path: &str) {
        wait_for("the readiness probe to pass", HANG_GUARD, || {
            self.http_get(path) == 200 || self.exited().is_some()
        });
        if let Some(status) = self.exited() {
            panic!(
                "the replica exited ({status}) before ready; log:\n{}",
                self.log()
            );
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.0.try_wait().expect("try_wait")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether this test runs as root (then each replica drops to the container's user).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// What the load saw, per endpoint (the replica's FastCGI address).
#[derive(Debug, Default)]
struct Tally {
    answered: BTreeMap<String, u64>,
    /// Answers on connections opened for them.
    fresh: BTreeMap<String, u64>,
    /// Requests sent again after a clean EOF on a reused connection: the server closed it
    /// between two requests and never read this one (as nginx does, they are retried).
    resent: u64,
    failures: Vec<String>,
}

/// Clients through a Service: each new connection goes to one of the current endpoints (as
/// kube-proxy's rules pick one per connection); kept-alive connections stay where they are.
struct ServiceLoad {
    endpoints: Arc<Mutex<Vec<Addr>>>,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ServiceLoad {
    /// `clients`: (URI, kept alive) per client thread.
    fn start(endpoints: Vec<Addr>, clients: &[(&'static str, bool)]) -> ServiceLoad {
        let endpoints = Arc::new(Mutex::new(endpoints));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = clients
            .iter()
            .enumerate()
            .map(|(i, &(uri, keep))| {
                let (endpoints, tally, stop) = (endpoints.clone(), tally.clone(), stop.clone());
                std::thread::spawn(move || client(i, uri, keep, &endpoints, &tally, &stop))
            })
            .collect();
        ServiceLoad {
            endpoints,
            tally,
            stop,
            threads,
        }
    }

    fn remove_endpoint(&self, addr: &Addr) {
        self.endpoints
            .lock()
            .expect("endpoints")
            .retain(|a| a != addr);
    }

    fn read<T>(&self, f: impl FnOnce(&Tally) -> T) -> T {
        f(&self.tally.lock().expect("tally"))
    }

    fn answered_by(&self, addr: &Addr) -> u64 {
        self.read(|t| t.answered.get(&addr.to_string()).copied().unwrap_or(0))
    }

    fn fresh_answers_by(&self, addr: &Addr) -> u64 {
        self.read(|t| t.fresh.get(&addr.to_string()).copied().unwrap_or(0))
    }

    fn failed(&self) -> bool {
        self.read(|t| !t.failures.is_empty())
    }

    /// Waits until `addr` answered `n` more requests (fresh connections only if `fresh`), or a
    /// request failed.
    fn wait_answers(&self, addr: &Addr, n: u64, fresh: bool) {
        let count = || {
            if fresh {
                self.fresh_answers_by(addr)
            } else {
                self.answered_by(addr)
            }
        };
        let from = count();
        wait_for(&format!("{n} answers from {addr}"), HANG_GUARD, || {
            count() >= from + n || self.failed()
        });
    }

    fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread");
        }
        std::mem::take(&mut *self.tally.lock().expect("tally"))
    }
}

fn client(
    i: usize,
    uri: &str,
    keep: bool,
    endpoints: &Mutex<Vec<Addr>>,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
) {
    let spec = RequestSpec {
        keep_conn: keep,
        ..RequestSpec::get(uri)
    };
    let mut conn: Option<(Client, Addr)> = None;
    let mut next = i;
    while !stop.load(Ordering::SeqCst) {
        let fresh = conn.is_none();
        if fresh {
            let addr = {
                let endpoints = endpoints.lock().expect("endpoints");
                next += 1;
                endpoints[next % endpoints.len()].clone()
            };
            match Client::connect(&addr) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(common::IO_TIMEOUT));
                    let _ = c.set_write_timeout(Some(common::IO_TIMEOUT));
                    conn = Some((c, addr));
                }
                Err(e) => {
                    let mut t = tally.lock().expect("tally");
                    t.failures.push(format!("connect to {addr}: {e}"));
                    return;
                }
            }
        }
        let Some((c, addr)) = conn.as_mut() else {
            continue;
        };
        let endpoint = addr.to_string();
        let outcome = exchange(c, &spec);
        let mut t = tally.lock().expect("tally");
        match outcome {
            Ok(Some(200)) => {
                *t.answered.entry(endpoint.clone()).or_default() += 1;
                if fresh {
                    *t.fresh.entry(endpoint).or_default() += 1;
                }
                if !keep {
                    conn = None;
                }
            }
            Ok(None) if !fresh => {
                t.resent += 1;
                conn = None;
            }
            Ok(None) => {
                t.failures
                    .push(format!("{endpoint}: EOF on a fresh connection"));
                conn = None;
            }
            Ok(Some(status)) => {
                t.failures.push(format!("{endpoint}: status {status}"));
                conn = None;
            }
            Err(e) => {
                t.failures
                    .push(format!("{endpoint}: {e} (fresh connection: {fresh})"));
                conn = None;
            }
        }
    }
}

/// Sends `spec` as request 1 and reads its answer's status; `None` on a clean EOF before any
/// byte of it (the server closed the connection between requests: this one was not run).
fn exchange(c: &mut Client, spec: &RequestSpec) -> io::Result<Option<u16>> {
    Ok(common::restarts::exchange(c, spec)?.map(|r| r.status))
}

#[test]
fn a_pod_terminates_as_the_kubelet_runs_it_without_losing_a_request() {
    let backend = Backend::load();
    let w = backend.workload();
    let (ready_path, _) = w.probe("readinessProbe");
    let (live_path, _) = w.probe("livenessProbe");
    let mut pods = [Replica::start(&backend), Replica::start(&backend)];
    for pod in &mut pods {
        pod.wait_ready(&ready_path);
        assert_eq!(pod.http_get(&live_path), 200, "the liveness probe");
    }
    let [a, b] = [pods[0].fcgi.clone(), pods[1].fcgi.clone()];

    // Kept-alive clients (nginx's upstream keepalive), one with requests that take a while (in
    // flight when the drain starts), and clients with a connection per request (Caddy, nginx
    // without keepalive): those open connections through the Service all the time.
    let load = ServiceLoad::start(
        vec![a.clone(), b.clone()],
        &[
            ("/hello", true),
            ("/hello", true),
            ("/sleep?ms=50", true),
            ("/hello", false),
            ("/hello", false),
        ],
    );
    load.wait_answers(&a, 50, true);
    load.wait_answers(&b, 50, true);

    // The termination: the preStop hook (if any), then SIGTERM; the grace period counts from
    // the start.
    let started = Instant::now();
    if let Some(hook) = w.pre_stop() {
        let program = match hook[0].as_str() {
            "fcgi-uring" => env!("CARGO_BIN_EXE_fcgi-uring"),
            other => other,
        };
        let status = Command::new(program)
            .args(&hook[1..])
            .status()
            .expect("run the preStop hook");
        assert!(status.success(), "the preStop hook {hook:?}: {status}");
    }
    common::restarts::signal(pods[0].pid(), "TERM");
    wait_for("the readiness probe to fail (503)", HANG_GUARD, || {
        pods[0].http_get(&ready_path) == 503
    });
    // The endpoints drop the pod some time after its deletion: until then it gets new
    // connections, and serves them.
    load.wait_answers(&a, 50, true);
    assert_eq!(pods[0].http_get(&ready_path), 503, "still draining");
    assert!(
        pods[0].exited().is_none(),
        "the pod exited while still in the endpoints"
    );
    load.remove_endpoint(&a);

    let grace = w.grace();
    let exited = holds_within(grace.saturating_sub(started.elapsed()), || {
        pods[0].exited().is_some()
    });
    assert!(
        exited,
        "the pod still ran at the end of its grace period ({grace:?}): the kubelet would kill it; log:\n{}",
        pods[0].log()
    );
    let status = pods[0].exited().expect("exited");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        pods[0].log()
    );

    load.wait_answers(&b, 100, false);
    let tally = load.stop();
    assert!(
        tally.failures.is_empty(),
        "{} failed requests: {:?}\n{tally:?}\nlog of the terminated pod:\n{}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(20)],
        pods[0].log()
    );
    eprintln!("termination under load: {tally:?}");
}

/// nginx's configuration from its ConfigMap, in the image's place: inside `http {}`, with the
/// Service's name replaced by a replica's address and its ports moved to free loopback ones.
#[test]
fn the_proxy_configuration_carries_requests_to_the_fastcgi_port() {
    let Some(nginx) = find_binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"]) else {
        return;
    };
    let backend = Backend::load();
    let proxy = Proxy::load();
    let mut replica = Replica::start(&backend);
    let (ready_path, _) = backend.workload().probe("readinessProbe");
    replica.wait_ready(&ready_path);

    let (service, service_port) = backend.service_fastcgi();
    let mut conf = proxy.conf.replace(
        &format!("{service}:{service_port}"),
        &replica.fcgi.to_string(),
    );
    let pw = proxy.workload();
    let mut ports = BTreeMap::new();
    for name in ["http", "health"] {
        let port = pw.port_named(name);
        let local = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let listen = format!("listen {port};");
        assert!(
            conf.contains(&listen),
            "nginx listens on its container port {port}"
        );
        conf = conf.replace(&listen, &format!("listen {local};"));
        ports.insert(name, local);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    std::fs::copy(
        "/etc/nginx/fastcgi_params",
        dir.path().join("fastcgi_params"),
    )
    .expect("the image's fastcgi_params (Debian's nginx has the same)");
    std::fs::write(dir.path().join("default.conf"), conf).expect("write default.conf");
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log warn;\n\
         pid {d}/nginx.pid;\nevents {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n\
         client_body_temp_path {d}/client_body;\n    fastcgi_temp_path {d}/fastcgi;\n\
         proxy_temp_path {d}/proxy;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         include {d}/default.conf;\n}}\n"
    );
    let main_path = dir.path().join("nginx.conf");
    std::fs::write(&main_path, main).expect("write nginx.conf");
    let nginx_cmd = || {
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&main_path);
        cmd.arg("-e").arg(dir.path().join("error.log"));
        cmd
    };
    let checked = nginx_cmd().arg("-t").output().expect("nginx -t");
    assert!(
        checked.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let running = common::proxy::Proxy::spawn(nginx_cmd(), ports["http"], dir);
    let r = common::http_client::request(
        ports["http"],
        "GET",
        "/hello",
        &[],
        common::http_client::Upload::None,
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"Hello, World!"[..]),
        "through nginx to the replica; nginx log: {}",
        running.log()
    );
    let (probe_path, probe_port) = pw.probe("readinessProbe");
    assert_eq!(pw.probe("livenessProbe"), (probe_path.clone(), probe_port));
    let health = ports[if probe_port == pw.port_named("health") {
        "health"
    } else {
        "http"
    }];
    let r = common::http_client::request(
        health,
        "GET",
        &probe_path,
        &[],
        common::http_client::Upload::None,
    );
    assert_eq!(r.status, 200, "nginx's own probe");
}
