//! `fcgi-uring.toml`: parsing, checks, precedence of flags, round trip, and the real binary.

use fcgi_client::{Client, RequestSpec};
use fcgi_uring::Addr;
use fcgi_uring::Config;
use fcgi_uring_cli::config_file::{self, ConfigFile};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");

fn parse(text: &str) -> Result<Config, String> {
    let file = ConfigFile::parse(text, "fcgi-uring.toml").map_err(|e| e.to_string())?;
    let mut builder = Config::builder();
    file.apply(&mut builder).map_err(|e| e.to_string())?;
    builder.build().map_err(|e| e.to_string())
}

fn rejected(text: &str) -> String {
    parse(text).expect_err(text)
}

#[test]
fn the_example_file_parses_and_sets_every_section() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fcgi-uring.example.toml"
    ))
    .unwrap();
    let c = parse(&text).unwrap();
    assert_eq!(*c.listen(), "127.0.0.1:9000".parse::<Addr>().unwrap());
    assert_eq!(c.ring().sq_entries, 1024);
    assert_eq!(c.limits().advertised_max_reqs, 256);
    assert_eq!(c.timeouts().idle, Duration::from_secs(300));
}

#[test]
fn a_full_file_sets_every_setting() {
    let c = parse(
        r#"
[server]
protocol = "http1"
listen = "127.0.0.1:9100"
workers = 3
pin_workers = false
backlog = 128
unix_mode = "0660"
shutdown_timeout = 2.5
accept_retry = 0.25

[ring]
sq_entries = 256
cq_entries = 512
recv_buffers = 64
recv_buffer_size = 4096
defer_taskrun = false
completions_per_turn = 8

[limits]
max_conns_per_worker = 100
max_requests_per_worker = 200
max_requests_per_conn = 16
max_params_bytes = 4096
max_params_pairs = 50
max_name_len = 100
max_value_len = 2000
max_body_buffer = 8192
max_output_buffer = 16384
advertised_max_conns = 99
advertised_max_reqs = 15

[timeouts]
idle = 10
params = 1.5
body = 2
handler = 3.25
write = 4
linger = 0
"#,
    )
    .unwrap();
    assert_eq!(c.protocol(), fcgi_uring::Protocol::Http1);
    assert_eq!(*c.listen(), "127.0.0.1:9100".parse::<Addr>().unwrap());
    assert_eq!((c.workers(), c.pin_workers(), c.backlog()), (3, false, 128));
    assert_eq!(c.unix_mode(), Some(0o660));
    assert_eq!(c.shutdown_timeout(), Duration::from_millis(2500));
    assert_eq!(c.accept_retry(), Duration::from_millis(250));
    assert_eq!(
        (
            c.ring().sq_entries,
            c.ring().cq_entries,
            c.ring().recv_buffers,
            c.ring().recv_buffer_size,
            c.ring().defer_taskrun,
            c.completions_per_turn()
        ),
        (256, 512, 64, 4096, false, 8)
    );
    assert_eq!(
        (c.max_conns_per_worker(), c.max_requests_per_worker()),
        (100, 200)
    );
    let l = c.limits();
    assert_eq!(
        (
            l.max_requests_per_conn,
            l.max_params_bytes,
            l.max_params_pairs,
            l.max_name_len,
            l.max_value_len
        ),
        (16, 4096, 50, 100, 2000)
    );
    assert_eq!((c.max_body_buffer(), c.max_output_buffer()), (8192, 16384));
    assert_eq!((l.advertised_max_conns, l.advertised_max_reqs), (99, 15));
    let t = c.timeouts();
    assert_eq!(t.idle, Duration::from_secs(10));
    assert_eq!(t.params, Duration::from_millis(1500));
    assert_eq!(t.body, Duration::from_secs(2));
    assert_eq!(t.handler, Duration::from_millis(3250));
    assert_eq!(t.write, Duration::from_secs(4));
    assert_eq!(t.linger, Duration::ZERO);
}

#[test]
fn a_partial_file_keeps_the_defaults() {
    let c = parse("[ring]\nsq_entries = 2048\ncq_entries = 8192\n").unwrap();
    let d = Config::default();
    assert_eq!((c.ring().sq_entries, c.ring().cq_entries), (2048, 8192));
    assert_eq!(c.ring().recv_buffers, d.ring().recv_buffers);
    assert_eq!(c.listen(), d.listen());
    assert_eq!(c.timeouts(), d.timeouts());
    assert_eq!(c.limits(), d.limits());
    assert_eq!(c.max_body_buffer(), d.max_body_buffer());
    // An empty file is all defaults; the advertised values follow their limit.
    parse("").unwrap();
    let c = parse("[limits]\nmax_requests_per_conn = 8\n").unwrap();
    assert_eq!(c.limits().advertised_max_reqs, 8);
}

#[test]
fn unknown_keys_are_rejected_with_the_key_named() {
    let e = rejected("[ring]\nsq_entries = 1024\nsq_entrys = 1024\n");
    assert!(
        e.contains("fcgi-uring.toml:3:1") && e.contains("unknown key \"ring.sq_entrys\""),
        "{e}"
    );
    assert!(e.contains("did you mean \"ring.sq_entries\"?"), "{e}");
    assert!(e.contains("keys of [ring]: sq_entries, cq_entries"), "{e}");
    let e = rejected("[serverr]\nworkers = 1\n");
    assert!(e.contains("unknown key \"serverr\""), "{e}");
    assert!(e.contains("did you mean \"server\"?"), "{e}");
    assert!(
        e.contains(
            "sections: server, ring, limits, timeouts, admin, ping, access_log, slow_log, log"
        ),
        "{e}"
    );
    let e = rejected("[timeouts]\nidle_timeout = 3\n");
    assert!(e.contains("unknown key \"timeouts.idle_timeout\""), "{e}");
    assert!(e.contains("did you mean \"timeouts.idle\"?"), "{e}");
    let e = rejected("workers = 3\n");
    assert!(e.contains("did you mean \"server.workers\"?"), "{e}");
}

#[test]
fn invalid_values_are_rejected_with_the_key_and_the_range() {
    for (text, expected) in [
        (
            "[ring]\nsq_entries = 1000\n",
            "fcgi-uring.toml:2: ring.sq_entries = 1000: must be a power of two between 1 and 32768",
        ),
        (
            "[ring]\nrecv_buffers = 65536\n",
            "ring.recv_buffers = 65536: must be a power of two between 1 and 32768",
        ),
        (
            "[server]\nworkers = -1\n",
            "server.workers = -1: must be between 0 and 4096",
        ),
        (
            "[limits]\nmax_requests_per_conn = 70000\n",
            "limits.max_requests_per_conn = 70000: must be between 1 and 65535",
        ),
        (
            "[limits]\nmax_body_buffer = 0\n",
            "limits.max_body_buffer = 0: must be between 1 and",
        ),
        (
            "[timeouts]\nbody = -2.5\n",
            "timeouts.body = -2.5: must be a number of seconds between 0 and",
        ),
        ("[timeouts]\nidle = nan\n", "timeouts.idle = NaN"),
        (
            "[server]\naccept_retry = 0\n",
            "server.accept_retry = 0: must be more than 0 seconds (retrying a failed accept",
        ),
        (
            "[server]\naccept_retry = -1\n",
            "server.accept_retry = -1: must be a number of seconds between 0 and 31536000, more than 0",
        ),
        (
            "[server]\nunix_mode = \"999\"\n",
            "server.unix_mode = \"999\": not an octal file mode; must be an octal file mode",
        ),
        (
            "[server]\nunix_mode = \"1777\"\n",
            "server.unix_mode = 1777: must be an octal file mode between 0 and 777",
        ),
        (
            "[server]\nlisten = \"nowhere\"\n",
            "server.listen = \"nowhere\": no port; must be host:port or unix:/path",
        ),
        (
            "[server]\nprotocol = \"spdy\"\n",
            "server.protocol = \"spdy\": must be one of fastcgi, http1, h2c",
        ),
        (
            "[ring]\nsq_entries = \"many\"\n",
            "fcgi-uring.toml:2:14: ring.sq_entries: invalid type: string \"many\", expected an integer",
        ),
        (
            "[server]\npin_workers = 1\n",
            "server.pin_workers: invalid type: integer",
        ),
        (
            "[ring]\nsq_entries = 4096\ncq_entries = 1024\n",
            "ring.cq_entries = 1024 must be at least ring.sq_entries = 4096",
        ),
        ("[ring\n", "fcgi-uring.toml:1:"),
    ] {
        let e = rejected(text);
        assert!(e.contains(expected), "{text:?}: {e}");
    }
}

#[test]
fn the_printed_config_reads_back_unchanged() {
    let c = Config::builder()
        .unix_mode(Some(0o640))
        .listen("unix:/tmp/x.sock".parse().unwrap())
        .params_timeout(Duration::from_millis(1250))
        .sq_entries(64)
        .build()
        .unwrap();
    let printed = config_file::to_toml(&c);
    let again = parse(&printed).unwrap();
    assert_eq!(config_file::to_toml(&again), printed);
    assert_eq!(again, c);
    assert_eq!(again.unix_mode(), Some(0o640));
    assert_eq!(again.timeouts().params, Duration::from_millis(1250));
}

fn print_config(args: &[&str]) -> Result<String, String> {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--print-config")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

#[test]
fn flags_given_override_the_file_and_defaults_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcgi-uring.toml");
    std::fs::write(
        &path,
        "[server]\nworkers = 3\nbacklog = 77\n[ring]\nsq_entries = 128\n[timeouts]\nidle = 9\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = parse(&print_config(&["--config", p]).unwrap()).unwrap();
    assert_eq!(
        (c.workers(), c.backlog(), c.ring().sq_entries),
        (3, 77, 128)
    );
    assert_eq!(c.timeouts().idle, Duration::from_secs(9));
    let c = parse(
        &print_config(&[
            "--config",
            p,
            "--workers",
            "5",
            "--idle-timeout",
            "1.5",
            "--no-pin",
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (c.workers(), c.backlog(), c.ring().sq_entries),
        (5, 77, 128)
    );
    assert_eq!(c.timeouts().idle, Duration::from_millis(1500));
    assert!(!c.pin_workers());
    // The round trip through the binary: its output is a file it accepts as is.
    let printed = print_config(&["--config", p, "--max-requests-per-conn", "9"]).unwrap();
    std::fs::write(&path, &printed).unwrap();
    assert_eq!(print_config(&["--config", p]).unwrap(), printed);
    // A bad file and a bad flag fail, naming the key.
    std::fs::write(&path, "[ring]\nsq_entrys = 1\n").unwrap();
    let e = print_config(&["--config", p]).unwrap_err();
    assert!(e.contains("unknown key \"ring.sq_entrys\""), "{e}");
    let e = print_config(&["--ring-entries", "1000"]).unwrap_err();
    assert!(e.contains("ring.sq_entries = 1000"), "{e}");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_serves_hello_with_a_config_file() {
    // Below the ephemeral range, claimed for this process: a port from `bind(:0)`, released
    // for the server, could be taken by another test's listener or client before it binds.
    let port = fcgi_loadtest::child::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcgi-uring.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\npin_workers = false\n\
             [ring]\nsq_entries = 64\ncq_entries = 256\nrecv_buffers = 64\n"
        ),
    )
    .unwrap();
    // The server's log goes to a file, shown when the test fails.
    let log_path = dir.path().join("server.log");
    let mut child = Child(
        Command::new(BIN)
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let fail = |child: &mut Child, what: String| -> ! {
        let exit = child.0.try_wait().ok().flatten();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("{what}\nserver exit status: {exit:?}\nserver log:\n{log}")
    };
    let addr: Addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        match Client::connect(&addr) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                fail(&mut child, format!("server did not start: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = match client.request(&RequestSpec::get("/hello")) {
        Ok(r) => r,
        Err(e) => fail(&mut child, format!("GET /hello failed: {e}")),
    };
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
}

const RING_KNOBS: &str = "[ring]\ndefer_taskrun = false\ncoop_taskrun = false\nsqpoll = true\n\
                          sqpoll_idle_ms = 250\nsqpoll_cpu = 1\nidle_spin_us = 500\n\
                          registered_send_buffers = 32\nsend_buffer_size = 8192\n\
                          recv_bundle = true\ndirect_send = false\ndirect_recv = false\n";

#[test]
fn every_new_ring_key_is_read() {
    let c = parse(RING_KNOBS).unwrap();
    let r = c.ring();
    assert!(r.sqpoll && r.recv_bundle && !r.coop_taskrun && !r.defer_taskrun);
    assert!(!r.direct_send && !r.direct_recv);
    assert_eq!((r.sqpoll_idle_ms, r.sqpoll_cpu), (250, Some(1)));
    assert_eq!((r.registered_send_buffers, r.send_buffer_size), (32, 8192));
    assert_eq!(c.idle_spin_us(), 500);
    // And the defaults when absent: nothing new is on.
    let d = parse("").unwrap();
    assert!(!d.ring().sqpoll && !d.ring().recv_bundle && d.ring().coop_taskrun);
    assert!(d.ring().direct_send && d.ring().direct_recv);
    assert_eq!((d.ring().registered_send_buffers, d.idle_spin_us()), (0, 0));
    assert_eq!(d.ring().sqpoll_cpu, None);
    let c = parse("[ring]\ncoop_taskrun = false\n").unwrap();
    assert!(!c.ring().coop_taskrun);
}

#[test]
fn new_ring_keys_out_of_range_name_the_key_and_the_range() {
    for (text, expected) in [
        (
            "[ring]\nidle_spin_us = 100001\n",
            "fcgi-uring.toml:2: ring.idle_spin_us = 100001: must be between 0 and 100000",
        ),
        (
            "[ring]\nsqpoll_idle_ms = 0\n",
            "ring.sqpoll_idle_ms = 0: must be between 1 and 60000",
        ),
        (
            "[ring]\nsqpoll_cpu = -1\n",
            "ring.sqpoll_cpu = -1: must be between 0 and 4095",
        ),
        (
            "[ring]\nregistered_send_buffers = 16385\n",
            "ring.registered_send_buffers = 16385: must be between 0 and 16384",
        ),
        (
            "[ring]\nsend_buffer_size = 0\n",
            "ring.send_buffer_size = 0: must be between 1 and 16777216",
        ),
        (
            "[ring]\nsqpoll = \"yes\"\n",
            "ring.sqpoll: invalid type: string",
        ),
        (
            "[ring]\nrecv_bundles = true\n",
            "unknown key \"ring.recv_bundles\"",
        ),
        (
            "[ring]\nsqpoll_cpu = 0\n",
            "ring.sqpoll_cpu = 0 requires ring.sqpoll = true",
        ),
    ] {
        let e = rejected(text);
        assert!(e.contains(expected), "{text:?}: {e}");
    }
}

#[test]
fn sqpoll_with_a_taskrun_mode_on_is_refused_naming_the_keys() {
    // The message names the modes that are on, and the fix.
    for (text, on) in [
        ("[ring]\nsqpoll = true\n", "ring.coop_taskrun = true"),
        (
            "[ring]\nsqpoll = true\ndefer_taskrun = false\n",
            "ring.coop_taskrun = true",
        ),
        (
            "[ring]\nsqpoll = true\ncoop_taskrun = false\ndefer_taskrun = true\n",
            "ring.defer_taskrun = true:",
        ),
        (
            "[ring]\nsqpoll = true\ndefer_taskrun = true\n",
            "ring.defer_taskrun = true or ring.coop_taskrun = true:",
        ),
    ] {
        let e = rejected(text);
        assert!(
            e.contains(&format!("ring.sqpoll = true cannot be combined with {on}"))
                && e.contains("set ring.defer_taskrun = false and ring.coop_taskrun = false"),
            "{text:?}: {e}"
        );
    }
    parse("[ring]\nsqpoll = true\ndefer_taskrun = false\ncoop_taskrun = false\n").unwrap();
}

#[test]
fn the_new_keys_round_trip_through_print_config() {
    let c = parse(RING_KNOBS).unwrap();
    let printed = config_file::to_toml(&c);
    for key in [
        "coop_taskrun = false",
        "sqpoll = true",
        "sqpoll_idle_ms = 250",
        "sqpoll_cpu = 1",
        "idle_spin_us = 500",
        "registered_send_buffers = 32",
        "send_buffer_size = 8192",
        "recv_bundle = true",
        "direct_send = false",
        "direct_recv = false",
    ] {
        assert!(printed.contains(key), "{key} missing:\n{printed}");
    }
    let again = parse(&printed).unwrap();
    assert_eq!(again.ring(), c.ring());
    assert_eq!(again.idle_spin_us(), 500);
    assert_eq!(config_file::to_toml(&again), printed);
    // Without sqpoll_cpu the key is left out (absent means "no CPU").
    let d = config_file::to_toml(&parse("").unwrap());
    assert!(
        !d.contains("sqpoll_cpu") && d.contains("sqpoll = false"),
        "{d}"
    );

    // Through the binary, with flags turning a file's `false` back on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcgi-uring.toml");
    std::fs::write(
        &path,
        "[server]\npin_workers = false\n[ring]\nrecv_bundle = false\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = print_config(&[
        "--config",
        p,
        "--pin-workers",
        "true",
        "--recv-bundle",
        "true",
        "--idle-spin-us",
        "20",
    ])
    .unwrap();
    let c = parse(&out).unwrap();
    assert!(c.pin_workers() && c.ring().recv_bundle);
    assert_eq!(c.idle_spin_us(), 20);
    std::fs::write(&path, &out).unwrap();
    assert_eq!(print_config(&["--config", p]).unwrap(), out);
}

#[test]
fn the_example_file_lists_every_new_ring_key() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fcgi-uring.example.toml"
    ))
    .unwrap();
    for key in [
        "coop_taskrun",
        "sqpoll",
        "sqpoll_idle_ms",
        "sqpoll_cpu",
        "idle_spin_us",
        "registered_send_buffers",
        "send_buffer_size",
        "recv_bundle",
        "direct_send",
        "direct_recv",
    ] {
        assert!(text.contains(&format!("{key} = ")), "{key} not documented");
    }
    let c = parse(&text).unwrap();
    let d = Config::default();
    assert_eq!(c.ring(), d.ring(), "the example shows the defaults");
    assert_eq!(c.idle_spin_us(), d.idle_spin_us());
}

/// Runs `fcgi-uring serve ARGS` with RLIMIT_MEMLOCK at `limit` bytes and without
/// CAP_IPC_LOCK (which would exempt root from the limit); returns its exit status and stderr.
fn serve_with_memlock(limit: u64, args: &[&str]) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args).stdout(Stdio::null());
    // SAFETY (test): only async-signal-safe calls (prctl, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Dropped from the bounding set, CAP_IPC_LOCK is not granted again at exec.
            const CAP_IPC_LOCK: libc::c_ulong = 14;
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0);
            let rlim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Child(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            return (true, "still running".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn registered_send_buffers_over_rlimit_memlock_fail_startup_naming_the_limit_and_the_fix() {
    // 1 MiB is enough for the rings and the receive buffer ring (the binary starts with it),
    // not for 64 MiB of send buffers. Specific to io_uring (`--io uring`: under `auto` the
    // server falls back to epoll instead, see tests/io_fallback.rs).
    let (ok, err) = serve_with_memlock(
        1 << 20,
        &[
            "--io",
            "uring",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--registered-send-buffers",
            "64",
            "--send-buffer-size",
            "1048576",
        ],
    );
    assert!(!ok, "started: {err}");
    assert!(
        err.contains("could not register 64 send buffers of 1048576 bytes")
            && err.contains("RLIMIT_MEMLOCK")
            && err.contains("ulimit -l")
            && err.contains("--registered-send-buffers"),
        "{err}"
    );
}

/// The example file and `--print-config` leave out the advertised FastCGI limits while they
/// follow the limits they advertise, so that a file made from either and edited goes on
/// advertising what the server accepts (written out, they stayed 256 when the limit went to 1).
#[test]
fn advertised_limits_keep_following_in_files_made_from_the_example_or_the_printout() {
    let example = config_file::example();
    assert!(
        example.contains("\n# advertised_max_reqs = 256\n"),
        "{example}"
    );
    let edited = example.replace(
        "\nmax_requests_per_conn = 256\n",
        "\nmax_requests_per_conn = 1\n",
    );
    assert_ne!(edited, example);
    let c = parse(&edited).unwrap();
    assert_eq!(
        (
            c.limits().max_requests_per_conn,
            c.limits().advertised_max_reqs
        ),
        (1, 1)
    );
    let printed = print_config(&[]).unwrap();
    assert!(!printed.contains("advertised_max"), "{printed}");
    let edited = printed.replace(
        "\nmax_conns_per_worker = 65536\n",
        "\nmax_conns_per_worker = 10\n",
    );
    assert_ne!(edited, printed);
    assert_eq!(parse(&edited).unwrap().limits().advertised_max_conns, 10);
    // One set apart from its limit is printed, and read back as set.
    let printed = print_config(&["--advertised-max-reqs", "4"]).unwrap();
    assert!(printed.contains("\nadvertised_max_reqs = 4\n"), "{printed}");
    assert_eq!(parse(&printed).unwrap().limits().advertised_max_reqs, 4);
}

/// `listen = "none"` in `[admin]` turns `fcgi-uring serve`'s admin listener off (it was refused
/// as an address), and `--print-config` writes it so, where it used to leave the key out and a
/// server started from the printout listened again.
#[test]
fn the_admin_listener_is_turned_off_from_a_file_and_printed_so() {
    let c = parse("[admin]\nlisten = \"none\"\n").unwrap();
    assert_eq!(c.get("admin.listen"), Some(fcgi_uring::config::Value::None));
    let printed = print_config(&["--admin-listen", "none"]).unwrap();
    assert!(
        printed.contains("[admin]\nlisten = \"none\"\n"),
        "{printed}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &printed).unwrap();
    let again = print_config(&["--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(again, printed);
    // Unset, `fcgi-uring serve` listens on its default address, and says so.
    let printed = print_config(&[]).unwrap();
    assert!(
        printed.contains("[admin]\nlisten = \"127.0.0.1:9100\"\n"),
        "{printed}"
    );
}

/// The admin listener on the FastCGI listener's address is refused by name, before anything
/// binds (it was "Address already in use", or for a UNIX socket "in use by a running server").
#[test]
fn the_admin_listener_on_the_fastcgi_address_is_refused() {
    for (listen, admin) in [
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("0.0.0.0:9000", "127.0.0.1:9000"),
        ("unix:/tmp/x.sock", "unix:/tmp/x.sock"),
    ] {
        let err = print_config(&["--listen", listen, "--admin-listen", admin]).unwrap_err();
        assert!(
            err.contains("cannot be combined with server.listen")
                && err.contains("cannot share an address"),
            "{listen} {admin}: {err}"
        );
    }
    assert!(
        print_config(&[
            "--listen",
            "127.0.0.1:9000",
            "--admin-listen",
            "127.0.0.1:9001"
        ])
        .is_ok()
    );
}

/// `FCGI_URING_IO` naming no backend stops the start with a message naming the variable (it
/// was ignored: the server started on io_uring without a word).
#[test]
fn a_bad_fcgi_uring_io_is_a_start_error() {
    let port = fcgi_loadtest::child::free_port().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
        ])
        .args(["--no-pin", "--admin-listen", "none"])
        .env("FCGI_URING_IO", "bogus")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FCGI_URING_IO=\"bogus\" is not an IO backend"),
        "{stderr}"
    );
}
