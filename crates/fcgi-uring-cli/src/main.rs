//! `fcgi-uring`: run the demo app over FastCGI, or send a FastCGI request.

use clap::{Parser, Subcommand};
use fcgi_uring::{Addr, Config, Protocol, Server, service_fn};
use fcgi_uring_cli::config_file::{ConfigFile, MAX_TIMEOUT_SECS};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fcgi-uring",
    version,
    about = "Thread-per-core io_uring FastCGI server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the built-in demo app (GET /hello, POST /echo, GET /sleep?ms=N, GET /json).
    Serve(Box<ServeArgs>),
    /// Send one FastCGI request and print the response.
    Request(fcgi_uring_cli::request::RequestArgs),
    /// Measure this server's settings on this machine and write a recommended fcgi-uring.toml
    /// (the sweep runs in this process against `fcgi-uring serve` children).
    Tune(Box<fcgi_loadtest::tune::cli::TuneArgs>),
}

/// Flags of `serve`. Every setting is optional: a flag given on the command line overrides the
/// `--config` file, which overrides the defaults.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see fcgi-uring.example.toml); flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML (a file --config accepts) and exit.
    #[arg(long)]
    print_config: bool,
    /// What clients speak: fastcgi (io_uring), or http1 / h2c (hyper on tokio on the same
    /// pinned workers, for comparisons) [default: fastcgi].
    #[arg(long)]
    protocol: Option<Protocol>,
    /// Address to listen on: host:port or unix:/path [default: 127.0.0.1:9000].
    #[arg(long)]
    listen: Option<Addr>,
    /// Worker threads (0: one per core) [default: 0].
    #[arg(long)]
    workers: Option<usize>,
    /// Pin worker i to the i-th available core: true or false (overrides the file either
    /// way) [default: true].
    #[arg(long, value_name = "BOOL")]
    pin_workers: Option<bool>,
    /// Same as --pin-workers false.
    #[arg(long, conflicts_with = "pin_workers")]
    no_pin: bool,
    /// File mode of a UNIX socket, in octal (e.g. 660).
    #[arg(long, value_parser = parse_mode)]
    unix_mode: Option<u32>,
    /// listen(2) backlog [default: 4096].
    #[arg(long)]
    backlog: Option<i32>,
    /// Submission queue entries per ring (power of two) [default: 1024].
    #[arg(long)]
    ring_entries: Option<u32>,
    /// Completion queue entries per ring (power of two, >= ring entries) [default: 4096].
    #[arg(long)]
    cq_entries: Option<u32>,
    /// Provided receive buffers per ring (power of two, <= 32768) [default: 1024].
    #[arg(long)]
    recv_buffers: Option<u16>,
    /// Bytes per provided receive buffer [default: 16384].
    #[arg(long)]
    recv_buffer_size: Option<u32>,
    /// Use DEFER_TASKRUN where the kernel has it: true or false [default: false].
    #[arg(long, value_name = "BOOL")]
    defer_taskrun: Option<bool>,
    /// Same as --defer-taskrun false.
    #[arg(long, conflicts_with = "defer_taskrun")]
    no_defer_taskrun: bool,
    /// COOP_TASKRUN (+TASKRUN_FLAG) when DEFER_TASKRUN is off or unavailable: true or false
    /// [default: true].
    #[arg(long, value_name = "BOOL")]
    coop_taskrun: Option<bool>,
    /// SQPOLL: a kernel thread per worker submits; needs --defer-taskrun false and
    /// --coop-taskrun false [default: false].
    #[arg(long, value_name = "BOOL")]
    sqpoll: Option<bool>,
    /// Milliseconds the SQPOLL thread polls before sleeping (1..=60000) [default: 1000].
    #[arg(long, value_name = "MS")]
    sqpoll_idle_ms: Option<u32>,
    /// CPU the SQPOLL threads are bound to, or `none` [default: none].
    #[arg(long, value_name = "CPU|none", value_parser = parse_cpu)]
    sqpoll_cpu: Option<SqpollCpu>,
    /// Microseconds an idle worker keeps polling before it sleeps (0..=100000, 0: off)
    /// [default: 0].
    #[arg(long, value_name = "US")]
    idle_spin_us: Option<u32>,
    /// Registered send buffers per worker (0..=16384, 0: off); output that fits one is sent
    /// with WRITE_FIXED [default: 0].
    #[arg(long, value_name = "N")]
    registered_send_buffers: Option<u16>,
    /// Bytes per registered send buffer [default: 65536].
    #[arg(long, value_name = "BYTES")]
    send_buffer_size: Option<u32>,
    /// Multishot receive bundles (Linux >= 6.10): true or false [default: false].
    #[arg(long, value_name = "BOOL")]
    recv_bundle: Option<bool>,
    /// Connections per worker (also advertised as FCGI_MAX_CONNS) [default: 65536].
    #[arg(long)]
    max_conns_per_worker: Option<usize>,
    /// Requests in flight per connection (also advertised as FCGI_MAX_REQS) [default: 256].
    #[arg(long)]
    max_requests_per_conn: Option<usize>,
    /// Params bytes per request [default: 131072].
    #[arg(long)]
    max_params_bytes: Option<usize>,
    /// Unread request-body bytes buffered per request [default: 1048576].
    #[arg(long)]
    max_body_buffer: Option<usize>,
    /// Response bytes queued per connection before streaming handlers pause [default: 1048576].
    #[arg(long)]
    max_output_buffer: Option<usize>,
    /// Completions handled per loop turn before answers are submitted [default: 32].
    #[arg(long)]
    completions_per_turn: Option<usize>,
    /// Seconds a graceful shutdown waits for in-flight requests [default: 30].
    #[arg(long)]
    shutdown_timeout: Option<f64>,
    /// Seconds a worker waits before accepting again after accept failed (EMFILE: the open-file
    /// limit reached, ENFILE, ENOMEM); new connections wait in the backlog [default: 0.1].
    #[arg(long)]
    accept_retry: Option<f64>,
    #[command(flatten)]
    hostile: HostileArgs,
}

/// Limits and timeouts against peers that misbehave (seconds may be fractional; 0 turns a
/// timeout off).
#[derive(clap::Args)]
struct HostileArgs {
    /// Requests in flight per worker; past it END_REQUEST(OVERLOADED) [default: 16384].
    #[arg(long)]
    max_requests_per_worker: Option<usize>,
    /// Seconds before an idle keep-alive connection is closed [default: 300].
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Seconds from BEGIN_REQUEST to the end of its params [default: 30].
    #[arg(long)]
    params_timeout: Option<f64>,
    /// Seconds without a body byte while a request body is open (slowloris) [default: 60].
    #[arg(long)]
    body_timeout: Option<f64>,
    /// Seconds a handler may run (0: no deadline); past it 504, or the response is cut
    /// [default: 0].
    #[arg(long)]
    handler_timeout: Option<f64>,
    /// Seconds a peer may leave queued output unread before the connection is closed
    /// [default: 60].
    #[arg(long)]
    write_timeout: Option<f64>,
    /// Seconds to wait for the peer's close after our FIN (KEEP_CONN=0) [default: 5].
    #[arg(long)]
    linger_timeout: Option<f64>,
}

/// Seconds from a flag as a duration.
fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        format!("--{name} {v}: must be a number of seconds between 0 and {MAX_TIMEOUT_SECS}")
    })
}

/// Sets `to` when the flag was given.
fn set<T>(to: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *to = v;
    }
}

impl ServeArgs {
    /// The defaults of `serve` (FCGI_MAX_CONNS / FCGI_MAX_REQS follow the limits).
    fn defaults() -> Config {
        let mut config = Config::default();
        config.limits.advertised_max_reqs = config.limits.max_requests_per_conn as u32;
        config.limits.advertised_max_conns = config.max_conns_per_worker as u32;
        config
    }

    /// Defaults, then the `--config` file, then the flags given, then checks the result.
    fn config(&self) -> Result<Config, String> {
        let mut config = ServeArgs::defaults();
        if let Some(path) = &self.config {
            let file = ConfigFile::load(path)?;
            file.apply(&mut config).map_err(|(_, msg)| msg)?;
        }
        self.apply(&mut config)?;
        fcgi_uring_cli::config_file::validate(&config)?;
        Ok(config)
    }

    fn apply(&self, config: &mut Config) -> Result<(), String> {
        set(&mut config.protocol, self.protocol);
        set(&mut config.listen, self.listen.clone());
        set(&mut config.workers, self.workers);
        set(&mut config.pin_workers, self.pin_workers);
        if self.no_pin {
            config.pin_workers = false;
        }
        if self.unix_mode.is_some() {
            config.unix_mode = self.unix_mode;
        }
        set(&mut config.backlog, self.backlog);
        set(&mut config.ring.sq_entries, self.ring_entries);
        set(&mut config.ring.cq_entries, self.cq_entries);
        set(&mut config.ring.recv_buffers, self.recv_buffers);
        set(&mut config.ring.recv_buffer_size, self.recv_buffer_size);
        set(&mut config.ring.defer_taskrun, self.defer_taskrun);
        if self.no_defer_taskrun {
            config.ring.defer_taskrun = false;
        }
        set(&mut config.ring.coop_taskrun, self.coop_taskrun);
        set(&mut config.ring.sqpoll, self.sqpoll);
        set(&mut config.ring.sqpoll_idle_ms, self.sqpoll_idle_ms);
        if let Some(SqpollCpu(cpu)) = self.sqpoll_cpu {
            config.ring.sqpoll_cpu = cpu;
        }
        set(&mut config.idle_spin_us, self.idle_spin_us);
        set(
            &mut config.ring.registered_send_buffers,
            self.registered_send_buffers,
        );
        set(&mut config.ring.send_buffer_size, self.send_buffer_size);
        set(&mut config.ring.recv_bundle, self.recv_bundle);
        if let Some(n) = self.max_conns_per_worker {
            config.max_conns_per_worker = n;
            config.limits.advertised_max_conns = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = self.max_requests_per_conn {
            config.limits.max_requests_per_conn = n;
            config.limits.advertised_max_reqs = u32::try_from(n).unwrap_or(u32::MAX);
        }
        set(&mut config.limits.max_params_bytes, self.max_params_bytes);
        set(&mut config.max_body_buffer, self.max_body_buffer);
        set(&mut config.max_output_buffer, self.max_output_buffer);
        set(&mut config.completions_per_turn, self.completions_per_turn);
        if let Some(v) = self.shutdown_timeout {
            config.shutdown_timeout = secs("shutdown-timeout", v)?;
        }
        if let Some(v) = self.accept_retry {
            config.accept_retry = secs("accept-retry", v)?;
        }
        let h = &self.hostile;
        set(
            &mut config.max_requests_per_worker,
            h.max_requests_per_worker,
        );
        let t = &mut config.timeouts;
        for (name, v, to) in [
            ("idle-timeout", h.idle_timeout, &mut t.idle),
            ("params-timeout", h.params_timeout, &mut t.params),
            ("body-timeout", h.body_timeout, &mut t.body),
            ("handler-timeout", h.handler_timeout, &mut t.handler),
            ("write-timeout", h.write_timeout, &mut t.write),
            ("linger-timeout", h.linger_timeout, &mut t.linger),
        ] {
            if let Some(v) = v {
                *to = secs(name, v)?;
            }
        }
        Ok(())
    }
}

/// `--sqpoll-cpu`: a CPU number, or `none` (overrides a file's `sqpoll_cpu`).
#[derive(Debug, Clone, Copy)]
struct SqpollCpu(Option<u32>);

fn parse_cpu(s: &str) -> Result<SqpollCpu, String> {
    if s == "none" {
        return Ok(SqpollCpu(None));
    }
    s.parse()
        .map(|cpu| SqpollCpu(Some(cpu)))
        .map_err(|_| format!("{s:?} must be a CPU number or `none`"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    fcgi_uring_cli::config_file::parse_mode(s)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Request(args) => fcgi_uring_cli::request::run(args),
        Command::Tune(args) => tune(*args),
    }
}

/// `fcgi-uring tune`: the tuner of the fcgi-loadtest library, run in this process, with this
/// binary as the server under test by default (see `fcgi_loadtest::tune::cli`).
fn tune(args: fcgi_loadtest::tune::cli::TuneArgs) -> ExitCode {
    fcgi_loadtest::tune::cli::main("fcgi-uring tune", args, std::env::current_exe)
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fcgi-uring: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_config {
        print!("{}", fcgi_uring_cli::config_file::to_toml(&config));
        return ExitCode::SUCCESS;
    }
    let protocol = config.protocol;
    let handle = match Server::new(config).start(|| service_fn(fcgi_uring_cli::demo::app)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("fcgi-uring: {e}");
            return ExitCode::FAILURE;
        }
    };
    let features = match handle.features() {
        Some(f) => format!("io_uring: {f}"),
        None => "hyper on tokio".to_owned(),
    };
    println!(
        "fcgi-uring serving the demo app over {:?} on {} with {} workers; {features}",
        protocol,
        handle.local_addr(),
        handle.workers()
    );
    if let Err(e) = wait_for_signal() {
        eprintln!("fcgi-uring: cannot wait for signals: {e}");
    }
    eprintln!("fcgi-uring: shutting down; {}", handle.stats());
    if handle.features().is_some() {
        eprintln!("fcgi-uring: io_uring: {}", handle.ring_stats());
    }
    handle.shutdown();
    ExitCode::SUCCESS
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The effective configuration of `fcgi-uring serve ARGS` with `file` as `--config`.
    fn effective(file: &str, args: &[&str]) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fcgi-uring.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv = vec!["fcgi-uring", "serve", "--config", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve(args) => args.config(),
            Command::Request(_) | Command::Tune { .. } => unreachable!(),
        }
    }

    const ALL_FALSE: &str = "[server]\npin_workers = false\n[ring]\ndefer_taskrun = false\n\
                             coop_taskrun = false\nrecv_bundle = false\nsqpoll = false\n";
    const ALL_TRUE: &str = "[server]\npin_workers = true\n[ring]\ndefer_taskrun = true\n\
                            coop_taskrun = true\nrecv_bundle = true\n";

    #[test]
    fn boolean_flags_override_the_file_both_ways() {
        let c = effective(ALL_FALSE, &[]).unwrap();
        assert!(!c.pin_workers && !c.ring.defer_taskrun && !c.ring.coop_taskrun);
        assert!(!c.ring.recv_bundle && !c.ring.sqpoll);

        let on = [
            "--pin-workers",
            "true",
            "--defer-taskrun",
            "true",
            "--coop-taskrun",
            "true",
            "--recv-bundle",
            "true",
        ];
        let c = effective(ALL_FALSE, &on).unwrap();
        assert!(c.pin_workers && c.ring.defer_taskrun && c.ring.coop_taskrun);
        assert!(c.ring.recv_bundle);

        let off = [
            "--pin-workers",
            "false",
            "--defer-taskrun",
            "false",
            "--coop-taskrun",
            "false",
            "--recv-bundle",
            "false",
        ];
        let c = effective(ALL_TRUE, &off).unwrap();
        assert!(!c.pin_workers && !c.ring.defer_taskrun && !c.ring.coop_taskrun);
        assert!(!c.ring.recv_bundle);

        let c = effective(ALL_FALSE, &["--sqpoll", "true"]).unwrap();
        assert!(c.ring.sqpoll);
        let c = effective(
            "[ring]\nsqpoll = true\ndefer_taskrun = false\ncoop_taskrun = false\n",
            &["--sqpoll", "false"],
        )
        .unwrap();
        assert!(!c.ring.sqpoll);
    }

    #[test]
    fn no_pin_and_no_defer_taskrun_stay_aliases() {
        let c = effective(ALL_TRUE, &["--no-pin", "--no-defer-taskrun"]).unwrap();
        assert!(!c.pin_workers && !c.ring.defer_taskrun);
        let e = effective(ALL_TRUE, &["--no-pin", "--pin-workers", "true"]).unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = effective(ALL_TRUE, &["--pin-workers", "yes"]).unwrap_err();
        assert!(e.contains("--pin-workers"), "{e}");
    }

    #[test]
    fn sqpoll_needs_both_taskrun_modes_off_whichever_sets_them() {
        let e = effective("[ring]\nsqpoll = true\n", &[]).unwrap_err();
        assert!(
            e.contains("ring.sqpoll") && e.contains("ring.defer_taskrun"),
            "{e}"
        );
        assert!(e.contains("ring.coop_taskrun"), "{e}");
        let e = effective(ALL_FALSE, &["--sqpoll", "true", "--coop-taskrun", "true"]).unwrap_err();
        assert!(e.contains("ring.coop_taskrun = true"), "{e}");
        assert!(effective(ALL_FALSE, &["--sqpoll", "true"]).is_ok());
    }

    #[test]
    fn numeric_ring_flags_override_the_file() {
        let file = "[ring]\nsqpoll = true\ndefer_taskrun = false\ncoop_taskrun = false\n\
                    sqpoll_cpu = 1\nsqpoll_idle_ms = 5\nidle_spin_us = 10\n\
                    registered_send_buffers = 4\nsend_buffer_size = 4096\n";
        let c = effective(file, &[]).unwrap();
        assert_eq!(c.ring.sqpoll_cpu, Some(1));
        assert_eq!((c.ring.sqpoll_idle_ms, c.idle_spin_us), (5, 10));
        assert_eq!(c.ring.registered_send_buffers, 4);
        assert_eq!(c.ring.send_buffer_size, 4096);
        let args = [
            "--sqpoll-cpu",
            "none",
            "--sqpoll-idle-ms",
            "7",
            "--idle-spin-us",
            "0",
            "--registered-send-buffers",
            "0",
            "--send-buffer-size",
            "100",
        ];
        let c = effective(file, &args).unwrap();
        assert_eq!(c.ring.sqpoll_cpu, None);
        assert_eq!((c.ring.sqpoll_idle_ms, c.idle_spin_us), (7, 0));
        assert_eq!(c.ring.registered_send_buffers, 0);
        assert_eq!(c.ring.send_buffer_size, 100);
        let e = effective(file, &["--idle-spin-us", "100001"]).unwrap_err();
        assert!(
            e.contains("ring.idle_spin_us = 100001") && e.contains("--idle-spin-us"),
            "{e}"
        );
    }
}
