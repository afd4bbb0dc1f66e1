//! `fcgi-uring`: run the demo app over FastCGI, or send a FastCGI request.

use clap::{Parser, Subcommand};
use fcgi_uring::config::{Accepts, LogFormat, SETTINGS, Setting, Value};
use fcgi_uring::{Config, Server, UpgradeOutcome, service_fn};
use fcgi_uring_cli::config_file::{self, ConfigFile, flag_value};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: fcgi_uring::alloc::MiMalloc = fcgi_uring::alloc::MiMalloc;

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
    /// Serve the built-in demo app (GET /hello, POST /echo, GET /sleep?ms=N, GET /json, GET /pid).
    Serve(Box<ServeArgs>),
    /// Send one FastCGI request and print the response.
    Request(fcgi_uring_cli::request::RequestArgs),
    /// Hot upgrade of a running server: the binary at its path starts with the listening
    /// sockets handed over and the configuration read anew; the old process drains and exits.
    /// A configuration that does not load is reported here and nothing is signalled.
    Reload(fcgi_uring_cli::reload::ReloadArgs),
    /// Graceful stop of a running server, as SIGTERM (drain delay, then the drain), waiting
    /// until it has exited.
    Stop(fcgi_uring_cli::stop::StopArgs),
    /// Print a running server's live status (from its admin listener) as a table.
    Status(fcgi_uring_cli::status::StatusArgs),
    /// Measure this server's settings on this machine and write a recommended fcgi-uring.toml
    /// (the sweep runs in this process against `fcgi-uring serve` children).
    Tune(Box<fcgi_loadtest::tune::cli::TuneArgs>),
    /// Print the files generated from the table of settings (fcgi-uring.example.toml,
    /// docs/configuration.md): `config --example`, `config --reference`.
    Config(ConfigArgs),
}

/// Flags of `serve`. Every setting is optional: a flag given on the command line overrides the
/// `--config` file, which overrides the defaults. The flag of each setting comes from the table
/// of settings ([`SettingFlags`]).
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see fcgi-uring.example.toml); flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the process id to FILE once serving (SIGUSR2, SIGHUP or `fcgi-uring reload
    /// --pid-file FILE` starts a hot upgrade, the new process writing its own pid there;
    /// `fcgi-uring stop --pid-file FILE` stops it gracefully).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Print the effective configuration as TOML (a file --config accepts) and exit.
    #[arg(long)]
    print_config: bool,
    /// Same as --pin-workers false.
    #[arg(long, conflicts_with = "pin-workers")]
    no_pin: bool,
    /// Same as --defer-taskrun false.
    #[arg(long, conflicts_with = "defer-taskrun")]
    no_defer_taskrun: bool,
    #[command(flatten)]
    settings: SettingFlags,
}

/// `fcgi-uring config`: the files generated from the table of settings.
#[derive(clap::Args)]
struct ConfigArgs {
    /// Print fcgi-uring.example.toml.
    #[arg(long, conflicts_with = "reference")]
    example: bool,
    /// Print docs/configuration.md.
    #[arg(long)]
    reference: bool,
}

/// One flag per setting of [`SETTINGS`], its help saying what it accepts and its default;
/// holds the flags given, each value checked against the table.
#[derive(Debug, Default)]
struct SettingFlags {
    given: Vec<(&'static Setting, Value)>,
}

impl SettingFlags {
    fn arg(s: &'static Setting) -> clap::Arg {
        let default = flag_value(s, &s.default_value());
        let value_name = match (s.optional, s.accepts) {
            (false, a) => a.value_name(),
            (true, Accepts::FileMode) => "MODE|none",
            (true, Accepts::Address) => "ADDR|none",
            (true, Accepts::UrlPath) => "PATH|none",
            (true, Accepts::Text) => "TEXT|none",
            (true, Accepts::PeerList) => "PEERS|none",
            (true, Accepts::Seconds { .. }) => "SECONDS|none",
            (true, _) => "N|none",
        };
        clap::Arg::new(s.flag)
            .long(s.flag)
            .value_name(value_name)
            .help(format!(
                "{} ({}) [default: {default}] [file: {}]",
                s.doc.trim_end_matches('.'),
                s.accepts.summary(),
                s.key
            ))
            .value_parser(clap::builder::ValueParser::new(move |text: &str| {
                s.parse(text)
            }))
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS
            .iter()
            .fold(cmd, |cmd, s| cmd.arg(SettingFlags::arg(s)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        SettingFlags::augment_args(cmd)
    }
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<SettingFlags, clap::Error> {
        let mut flags = SettingFlags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for s in SETTINGS {
            let given = m
                .try_get_one::<Value>(s.flag)
                .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            if let Some(v) = given {
                self.given.push((s, v.clone()));
            }
        }
        Ok(())
    }
}

impl ServeArgs {
    /// Defaults, then the `--config` file, then the flags given, then checks the result.
    fn config(&self) -> Result<Config, String> {
        let mut builder = Config::builder();
        if let Some(path) = &self.config {
            let file = ConfigFile::load(path).map_err(|e| e.to_string())?;
            file.apply(&mut builder).map_err(|e| e.to_string())?;
        }
        let aliases = [
            (self.no_pin, "server.pin_workers"),
            (self.no_defer_taskrun, "ring.defer_taskrun"),
        ];
        let aliases = aliases
            .into_iter()
            .filter(|(given, _)| *given)
            .map(|(_, key)| (key, Value::Bool(false)));
        let flags = self.settings.given.iter().map(|(s, v)| (s.key, v.clone()));
        for (key, value) in flags.chain(aliases) {
            builder.set(key, value).map_err(|e| e.to_string())?;
        }
        builder.build().map_err(|e| e.to_string())
    }

    /// Whether the file or a flag sets `admin.listen` (`none` included).
    fn admin_given(&self) -> bool {
        let in_flags = self
            .settings
            .given
            .iter()
            .any(|(s, _)| s.key == "admin.listen");
        let in_file = self
            .config
            .as_ref()
            .is_some_and(|path| ConfigFile::load(path).is_ok_and(|f| f.admin.listen.is_some()));
        in_flags || in_file
    }
}

/// `reload`'s check of a running server's configuration ([`fcgi_uring_cli::reload::CheckConfig`]):
/// the server's command line parsed as this binary's, and the configuration its `serve` would
/// load (defaults, the `--config` file, the flags), a relative file from the server's `cwd`.
fn check_serve_config(
    args: &[std::ffi::OsString],
    cwd: Option<&std::path::Path>,
) -> Result<(), String> {
    let argv = std::iter::once(std::ffi::OsString::from("fcgi-uring")).chain(args.iter().cloned());
    let Ok(Cli {
        command: Command::Serve(mut serve),
    }) = Cli::try_parse_from(argv)
    else {
        // Not a `fcgi-uring serve` command line: the new process checks its own.
        return Ok(());
    };
    if let Some(path) = serve.config.as_mut()
        && path.is_relative()
    {
        match cwd {
            Some(cwd) => *path = cwd.join(&*path),
            None => return Ok(()),
        }
    }
    serve.config().map(|_| ())
}

/// The demo's admin listener when none is configured: loopback, the port `fcgi-uring status`
/// asks by default.
const DEMO_ADMIN: &str = "127.0.0.1:9100";

/// `fcgi-uring config --example | --reference`.
fn print_generated(args: &ConfigArgs) -> ExitCode {
    if args.reference {
        print!("{}", config_file::reference());
    } else if args.example {
        print!("{}", config_file::example());
    } else {
        eprintln!("fcgi-uring config: give --example or --reference");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // `serve` sets up its log once it has read `log.format`; the other commands log as text.
    if !matches!(command, Command::Serve(_)) {
        init_log(LogFormat::Text);
    }
    match command {
        Command::Serve(args) => serve(*args),
        Command::Request(args) => fcgi_uring_cli::request::run(args),
        Command::Reload(args) => fcgi_uring_cli::reload::run(&args, &check_serve_config),
        Command::Stop(args) => fcgi_uring_cli::stop::run(&args),
        Command::Status(args) => fcgi_uring_cli::status::run(&args),
        Command::Tune(args) => tune(*args),
        Command::Config(args) => print_generated(&args),
    }
}

/// The process's tracing subscriber, on standard error: RUST_LOG sets the level (default
/// info). Text is coloured only on a terminal (and not with NO_COLOR): a file, a pipe or
/// journald gets plain lines. JSON is one object per line, never coloured.
fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        _ => {
            let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
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
    init_log(config.ops().log_format);
    if args.print_config {
        // The listener `fcgi-uring serve` adds when none is given (without the free-port
        // fallback: a file that names the address asks for that one).
        let config = match demo_admin_default(&config, !args.admin_given()) {
            Some(c) => c,
            None => config,
        };
        print!("{}", config_file::to_toml(&config));
        return ExitCode::SUCCESS;
    }
    let protocol = config.protocol();
    // Before the first connection is accepted: once connections hold descriptors, the signal
    // thread might find none left (RLIMIT_NOFILE) and the server could not be stopped cleanly.
    // It also reads the path a hot upgrade starts, before a deploy can replace the file.
    let signals = match fcgi_uring::Signals::listen() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "fcgi-uring: cannot listen for SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    // Before the server binds and serves: a pid file that cannot be written would otherwise
    // fail the start only once the server was serving.
    if let Some(path) = &args.pid_file
        && let Err(e) = fcgi_uring_cli::reload::PidFile::check(path)
    {
        eprintln!(
            "fcgi-uring: cannot write the pid file {}: {e}",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let mut handle = match start_demo(config, !args.admin_given()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("fcgi-uring: {e}");
            return ExitCode::FAILURE;
        }
    };
    let features = match (handle.backend(), handle.features()) {
        (_, Some(f)) => format!("io_uring: {f}"),
        (Some(backend), None) => backend.to_string(),
        (None, None) => "hyper on tokio".to_owned(),
    };
    let workers = match handle.workers() {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    println!(
        "fcgi-uring serving the demo app over {} on {} with {workers}; {features}",
        protocol_name(protocol),
        handle.local_addr(),
    );
    if let Some(admin) = handle.admin_addr() {
        println!("fcgi-uring admin listener on {admin} (/metrics /healthz /readyz /status)");
    }
    let pid_file = match args
        .pid_file
        .clone()
        .map(fcgi_uring_cli::reload::PidFile::write)
    {
        Some(Err(e)) => {
            let path = args.pid_file.as_deref().unwrap_or(std::path::Path::new(""));
            eprintln!(
                "fcgi-uring: cannot write the pid file {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        Some(Ok(f)) => Some(f),
        None => None,
    };
    let mut pid_file = pid_file;
    signals.answer(&mut handle, |outcome| match (pid_file.as_mut(), outcome) {
        (Some(f), UpgradeOutcome::Upgraded(_)) => f.hand_over(),
        // Rewritten (same pid, new mtime) before the failure is logged: whoever waits for the
        // line then issues the next `reload` after the rewrite, and that reload is not
        // answered by this one's rewrite.
        (Some(f), _) => {
            if let Err(e) = f.rewrite() {
                tracing::warn!("cannot rewrite the pid file: {e}");
            }
        }
        (None, _) => {}
    });
    tracing::info!("shutting down; {}", handle.stats());
    if handle.features().is_some() {
        tracing::info!("io_uring: {}", handle.ring_stats());
    }
    handle.shutdown();
    ExitCode::SUCCESS
}

/// `protocol` as the banner names it: the protocol's own spelling.
fn protocol_name(protocol: fcgi_uring::Protocol) -> &'static str {
    match protocol {
        fcgi_uring::Protocol::FastCgi => "FastCGI",
        fcgi_uring::Protocol::Http1 => "HTTP/1.1",
        fcgi_uring::Protocol::H2c => "h2c",
        other => other.as_str(),
    }
}

/// Starts the demo app. With `admin_default`, the admin listener goes on [`DEMO_ADMIN`], or on
/// a free loopback port when that one is taken (several demo servers on one machine; logged
/// as a warning, since `fcgi-uring status` and a scrape of the default port then miss it).
fn start_demo(
    config: Config,
    admin_default: bool,
) -> Result<fcgi_uring::ServerHandle, fcgi_uring::StartError> {
    let app = || service_fn(fcgi_uring_cli::demo::app);
    let Some(with_default) = demo_admin_default(&config, admin_default) else {
        return Server::new(config).start(app);
    };
    let first = match Server::new(with_default).start(app) {
        Ok(h) => return Ok(h),
        Err(e) => e,
    };
    match with_demo_admin(&config, "127.0.0.1:0") {
        Some(c) => {
            let handle = Server::new(c).start(app)?;
            if let Some(admin) = handle.admin_addr() {
                tracing::warn!(
                    "the admin listener could not take {DEMO_ADMIN} ({first}); \
                     it listens on {admin} instead (`fcgi-uring status --admin {admin}`; set \
                     --admin-listen to choose, `none` for no listener)"
                );
            }
            Ok(handle)
        }
        None => Server::new(config).start(app),
    }
}

/// `config` with the admin listener `fcgi-uring serve` adds when none is given
/// ([`DEMO_ADMIN`]), if it adds one: `admin_default` (no file or flag set `admin.listen`), and
/// the FastCGI protocol (the HTTP modes serve no admin listener).
fn demo_admin_default(config: &Config, admin_default: bool) -> Option<Config> {
    if !admin_default || config.protocol() != fcgi_uring::Protocol::FastCgi {
        return None;
    }
    with_demo_admin(config, DEMO_ADMIN)
}

fn with_demo_admin(config: &Config, addr: &str) -> Option<Config> {
    let addr = addr.parse().ok()?;
    config
        .clone()
        .into_builder()
        .admin_listen(Some(addr))
        .build()
        .ok()
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
            _ => unreachable!(),
        }
    }

    const ALL_FALSE: &str = "[server]\npin_workers = false\n[ring]\ndefer_taskrun = false\n\
                             coop_taskrun = false\nrecv_bundle = false\nsqpoll = false\n";
    const ALL_TRUE: &str = "[server]\npin_workers = true\n[ring]\ndefer_taskrun = true\n\
                            coop_taskrun = true\nrecv_bundle = true\n";

    #[test]
    fn boolean_flags_override_the_file_both_ways() {
        let c = effective(ALL_FALSE, &[]).unwrap();
        assert!(!c.pin_workers() && !c.ring().defer_taskrun && !c.ring().coop_taskrun);
        assert!(!c.ring().recv_bundle && !c.ring().sqpoll);

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
        assert!(c.pin_workers() && c.ring().defer_taskrun && c.ring().coop_taskrun);
        assert!(c.ring().recv_bundle);

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
        assert!(!c.pin_workers() && !c.ring().defer_taskrun && !c.ring().coop_taskrun);
        assert!(!c.ring().recv_bundle);

        let c = effective(ALL_FALSE, &["--sqpoll", "true"]).unwrap();
        assert!(c.ring().sqpoll);
        let c = effective(
            "[ring]\nsqpoll = true\ndefer_taskrun = false\ncoop_taskrun = false\n",
            &["--sqpoll", "false"],
        )
        .unwrap();
        assert!(!c.ring().sqpoll);
    }

    #[test]
    fn no_pin_and_no_defer_taskrun_stay_aliases() {
        let c = effective(ALL_TRUE, &["--no-pin", "--no-defer-taskrun"]).unwrap();
        assert!(!c.pin_workers() && !c.ring().defer_taskrun);
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
        assert_eq!(c.ring().sqpoll_cpu, Some(1));
        assert_eq!((c.ring().sqpoll_idle_ms, c.idle_spin_us()), (5, 10));
        assert_eq!(c.ring().registered_send_buffers, 4);
        assert_eq!(c.ring().send_buffer_size, 4096);
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
        assert_eq!(c.ring().sqpoll_cpu, None);
        assert_eq!((c.ring().sqpoll_idle_ms, c.idle_spin_us()), (7, 0));
        assert_eq!(c.ring().registered_send_buffers, 0);
        assert_eq!(c.ring().send_buffer_size, 100);
        let e = effective(file, &["--idle-spin-us", "100001"]).unwrap_err();
        assert!(
            e.contains("ring.idle_spin_us = 100001") && e.contains("--idle-spin-us"),
            "{e}"
        );
    }
}
