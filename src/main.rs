//! `fcgi-uring`: run the demo app over FastCGI, or send a FastCGI request.

use clap::{Parser, Subcommand};
use fcgi_uring::{Addr, Config, Protocol, Server, service_fn};
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
    Serve(ServeArgs),
    /// Send one FastCGI request and print the response.
    Request(fcgi_uring::client::cli::RequestArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// What clients speak: fastcgi (io_uring), or http1 / h2c (hyper on tokio on the same
    /// pinned workers, for comparisons).
    #[arg(long, default_value = "fastcgi")]
    protocol: Protocol,
    /// Address to listen on: host:port or unix:/path.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: Addr,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Do not pin workers to cores.
    #[arg(long)]
    no_pin: bool,
    /// File mode of a UNIX socket, in octal (e.g. 660).
    #[arg(long, value_parser = parse_mode)]
    unix_mode: Option<u32>,
    /// listen(2) backlog.
    #[arg(long, default_value_t = 4096)]
    backlog: i32,
    /// Submission queue entries per ring (power of two).
    #[arg(long, default_value_t = 1024)]
    ring_entries: u32,
    /// Completion queue entries per ring (power of two, >= ring entries).
    #[arg(long, default_value_t = 4096)]
    cq_entries: u32,
    /// Provided receive buffers per ring (power of two, <= 32768).
    #[arg(long, default_value_t = 1024)]
    recv_buffers: u16,
    /// Bytes per provided receive buffer.
    #[arg(long, default_value_t = 16384)]
    recv_buffer_size: u32,
    /// Do not use DEFER_TASKRUN even where the kernel has it.
    #[arg(long)]
    no_defer_taskrun: bool,
    /// Connections per worker.
    #[arg(long, default_value_t = 65536)]
    max_conns_per_worker: usize,
    /// Requests in flight per connection (also advertised as FCGI_MAX_REQS).
    #[arg(long, default_value_t = 256)]
    max_requests_per_conn: usize,
    /// Params bytes per request.
    #[arg(long, default_value_t = 128 * 1024)]
    max_params_bytes: usize,
    /// Unread request-body bytes buffered per request.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_buffer: usize,
    /// Response bytes queued per connection before streaming handlers pause.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_output_buffer: usize,
    /// Completions handled per loop turn before answers are submitted.
    #[arg(long, default_value_t = 32)]
    completions_per_turn: usize,
    /// Seconds a graceful shutdown waits for in-flight requests.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    #[command(flatten)]
    hostile: HostileArgs,
}

/// Limits and timeouts against peers that misbehave (seconds may be fractional; 0 turns a
/// timeout off).
#[derive(clap::Args)]
struct HostileArgs {
    /// Requests in flight per worker; past it END_REQUEST(OVERLOADED).
    #[arg(long, default_value_t = 16_384)]
    max_requests_per_worker: usize,
    /// Seconds before an idle keep-alive connection is closed.
    #[arg(long, default_value_t = 300.0)]
    idle_timeout: f64,
    /// Seconds from BEGIN_REQUEST to the end of its params.
    #[arg(long, default_value_t = 30.0)]
    params_timeout: f64,
    /// Seconds without a body byte while a request body is open (slowloris).
    #[arg(long, default_value_t = 60.0)]
    body_timeout: f64,
    /// Seconds a handler may run (0: no deadline); past it 504, or the response is cut.
    #[arg(long, default_value_t = 0.0)]
    handler_timeout: f64,
    /// Seconds a peer may leave queued output unread before the connection is closed.
    #[arg(long, default_value_t = 60.0)]
    write_timeout: f64,
    /// Seconds to wait for the peer's close after our FIN (KEEP_CONN=0).
    #[arg(long, default_value_t = 5.0)]
    linger_timeout: f64,
}

impl HostileArgs {
    fn apply(&self, config: &mut Config) -> Result<(), String> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| format!("--{name}: {v} is not a duration"))
        };
        config.max_requests_per_worker = self.max_requests_per_worker;
        config.timeouts = fcgi_uring::Timeouts {
            idle: secs("idle-timeout", self.idle_timeout)?,
            params: secs("params-timeout", self.params_timeout)?,
            body: secs("body-timeout", self.body_timeout)?,
            handler: secs("handler-timeout", self.handler_timeout)?,
            write: secs("write-timeout", self.write_timeout)?,
            linger: secs("linger-timeout", self.linger_timeout)?,
        };
        Ok(())
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("invalid file mode {s:?}: expected octal such as 660"))
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
        Command::Serve(args) => serve(args),
        Command::Request(args) => fcgi_uring::client::cli::run(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = Config {
        protocol: args.protocol,
        listen: args.listen,
        workers: args.workers,
        pin_workers: !args.no_pin,
        backlog: args.backlog,
        unix_mode: args.unix_mode,
        max_body_buffer: args.max_body_buffer,
        max_output_buffer: args.max_output_buffer,
        max_conns_per_worker: args.max_conns_per_worker,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        completions_per_turn: args.completions_per_turn,
        ..Config::default()
    };
    config.ring.sq_entries = args.ring_entries;
    config.ring.cq_entries = args.cq_entries;
    config.ring.recv_buffers = args.recv_buffers;
    config.ring.recv_buffer_size = args.recv_buffer_size;
    config.ring.defer_taskrun = !args.no_defer_taskrun;
    config.limits.max_requests_per_conn = args.max_requests_per_conn;
    config.limits.max_params_bytes = args.max_params_bytes;
    config.limits.advertised_max_reqs = args.max_requests_per_conn as u32;
    config.limits.advertised_max_conns = args.max_conns_per_worker as u32;
    if let Err(e) = args.hostile.apply(&mut config) {
        eprintln!("fcgi-uring: {e}");
        return ExitCode::FAILURE;
    }
    let handle = match Server::new(config).start(|| service_fn(fcgi_uring::demo::app)) {
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
        args.protocol,
        handle.local_addr(),
        handle.workers()
    );
    if let Err(e) = fcgi_uring::runtime::wait_for_signal() {
        eprintln!("fcgi-uring: cannot wait for signals: {e}");
    }
    eprintln!("fcgi-uring: shutting down; {}", handle.stats());
    handle.shutdown();
    ExitCode::SUCCESS
}
