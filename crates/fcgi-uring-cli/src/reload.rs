//! `fcgi-uring reload --pid-file F`: asks a running server for a hot upgrade (SIGUSR2 to the
//! pid in F, once it is known to be an fcgi-uring process: a stale file's reused pid is not
//! signalled) and waits until the new process has written its pid to F (it does once every
//! worker accepts and the old process handed over). Exit 0 when it did; 1 when the old
//! process rewrote F with its own pid (it does when an upgrade failed: its log says why, and
//! it serves on) or nothing changed in time.
//!
//! Before it signals, it loads the configuration the new process would start with, as `nginx
//! -s reload` does: the server's own command line (`/proc/PID/cmdline`, the arguments an
//! upgrade passes on; a relative `--config` from the server's working directory), checked by
//! the binary's `serve` parser ([`CheckConfig`]). A configuration that does not load is
//! reported here, with the setting at fault, and the server is not signalled: it would only
//! have started a process that exits at once. `--no-check` skips this.

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ReloadArgs {
    /// The pid file the server writes (`fcgi-uring serve --pid-file F`).
    #[arg(long, value_name = "FILE")]
    pub pid_file: PathBuf,
    /// Seconds to wait for the new process (past the server's `server.upgrade_timeout`);
    /// fractions as `1.5` accepted.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = wait_seconds)]
    pub wait: Duration,
    /// Signal without loading the server's configuration first (the new process then reports
    /// a configuration that does not load in the server's log, and exits).
    #[arg(long)]
    pub no_check: bool,
}

/// Loads the configuration a server's command line names, as its `serve` would: `args` is the
/// command line without the program's name, `cwd` the server's working directory (`None` when
/// it cannot be read). `Err` says why it does not load; a command line the binary does not
/// know (a program built on the library) is `Ok`: the new process checks its own.
pub type CheckConfig = dyn Fn(&[OsString], Option<&Path>) -> Result<(), String>;

/// The arguments of process `pid` after its program's name, and its working directory.
fn command_line(pid: i32) -> std::io::Result<(Vec<OsString>, Option<PathBuf>)> {
    use std::os::unix::ffi::OsStrExt;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    // NUL-terminated arguments (without the final NUL, no empty one after it); the program's
    // name first.
    let args = raw
        .strip_suffix(&[0])
        .unwrap_or(&raw)
        .split(|&b| b == 0)
        .skip(1)
        .map(|a| std::ffi::OsStr::from_bytes(a).to_owned())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    Ok((args, cwd))
}

/// The pid in `path`, if it holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The running server the pid file names, as a pidfd (which names that process for good: a pid
/// reused after it exits is not signalled) and its pid. An error says why not: no pid in the
/// file, no such process, or a live process that is not an fcgi-uring server (the file is stale:
/// its server is gone and the pid was reused), which is then not signalled.
///
/// A server is known by its worker threads, which the library names `fcgi-worker-N`
/// (`http-worker-N` with `server.protocol` http1 or h2c) whatever the binary is called
/// (`fcgi-uring`, `fcgi-uring-v2`, an application's own name): the name of the binary would
/// refuse a renamed server, and take any other `fcgi-uring` command (`status --watch`) for one.
pub fn open_server(path: &Path) -> Result<(OwnedFd, i32), String> {
    let file = path.display();
    let raw = read_pid(path).ok_or_else(|| format!("no pid in {file}"))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| format!("invalid pid {raw} in {file}"))?;
    let process = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| match e {
        Errno::SRCH => {
            format!("no process {raw}: {file} is stale (a server that exited cleanly removes it)")
        }
        e => format!("pid {raw}: {e}"),
    })?;
    let workers = worker_threads(raw)
        .map_err(|e| format!("pid {raw}: cannot read /proc/{raw}/task: {e}; not signalled"))?;
    // The pidfd holds the process: while it has not exited, /proc/<raw> was that process.
    if exited(&process) {
        return Err(format!(
            "pid {raw} exited meanwhile: {file} is stale (a server that exited cleanly removes it)"
        ));
    }
    if workers == 0 {
        return Err(format!(
            "{file} is stale: pid {raw} is now {}, not an fcgi-uring server (it runs no \
             fcgi-worker thread); its server is gone and the pid was reused, so it was not \
             signalled",
            describe(raw)
        ));
    }
    Ok((process, raw))
}

/// How many threads of process `pid` are fcgi-uring workers (`fcgi-worker-N`, or
/// `http-worker-N` with `server.protocol` http1 or h2c).
fn worker_threads(pid: i32) -> std::io::Result<usize> {
    let mut workers = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(task) = task else { continue };
        // A thread that ended since the listing has no comm left to read.
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("fcgi-worker-") || comm.starts_with("http-worker-") {
            workers += 1;
        }
    }
    Ok(workers)
}

/// Whether the process of `pidfd` has exited (its pidfd is readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}

/// Process `pid` for a person: its command line (`sleep 600`), else its command name.
fn describe(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut text = args.join(" ");
    if text.is_empty() {
        text = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
    }
    if text.chars().count() > 80 {
        text = text.chars().take(77).collect::<String>() + "...";
    }
    format!("`{text}`")
}

/// `--wait`'s value: seconds as every duration of the command line writes them (`60`, `1.5`),
/// from 0 up to [`fcgi_uring::config::MAX_SECONDS`].
pub fn wait_seconds(text: &str) -> Result<Duration, String> {
    let max = fcgi_uring::config::MAX_SECONDS;
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds (0..={max}, e.g. 60 or 1.5)"))?;
    if !(seconds.is_finite() && (0.0..=max).contains(&seconds)) {
        return Err(format!("out of range: seconds from 0 to {max}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `d` in seconds as a person writes them: `60`, `1.5`.
pub fn show_seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

pub fn run(args: &ReloadArgs, check: &CheckConfig) -> ExitCode {
    let (process, old) = match open_server(&args.pid_file) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("fcgi-uring reload: {why}");
            return ExitCode::FAILURE;
        }
    };
    if !args.no_check {
        // An unreadable command line (the server exited meanwhile) is left to the signal.
        if let Ok((server_args, cwd)) = command_line(old)
            && let Err(why) = check(&server_args, cwd.as_deref())
        {
            eprintln!(
                "fcgi-uring reload: the configuration does not load: {why}\n\
                 fcgi-uring reload: pid {old} not signalled; it serves on unchanged"
            );
            return ExitCode::FAILURE;
        }
    }
    let written = modified(&args.pid_file);
    if let Err(e) = rustix::process::pidfd_send_signal(&process, Signal::USR2) {
        eprintln!("fcgi-uring reload: cannot signal pid {old}: {e}");
        return ExitCode::FAILURE;
    }
    let until = Instant::now() + args.wait;
    while Instant::now() < until {
        // The file's identity first, its pid second: a pid read after a rewrite was seen is
        // that rewrite's (or a later one's), so a new process's pid file renamed in between
        // is never taken for the old process's failure answer.
        let seen = modified(&args.pid_file);
        match read_pid(&args.pid_file) {
            Some(new) if new != old => {
                println!("fcgi-uring reload: pid {new} serves; pid {old} drains");
                return ExitCode::SUCCESS;
            }
            Some(_) if seen != written => {
                eprintln!(
                    "fcgi-uring reload: the upgrade failed; pid {old} serves on (see its log)"
                );
                return ExitCode::FAILURE;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "fcgi-uring reload: pid {old} was not replaced within {} s; it still serves (see its log)",
        show_seconds(args.wait)
    );
    ExitCode::FAILURE
}

/// What changes when the file is written again: its inode (a rewrite renames a new file
/// over it) and its mtime (which alone can miss a rewrite within one clock tick).
fn modified(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.modified().ok()?))
}

/// The pid file of a running server: written at start, removed at exit, unless a hot upgrade
/// handed over (the file is then the new process's, which may be writing it right now).
pub struct PidFile {
    path: PathBuf,
    handed_over: bool,
}

impl PidFile {
    pub fn write(path: PathBuf) -> std::io::Result<PidFile> {
        let file = PidFile {
            path,
            handed_over: false,
        };
        file.rewrite()?;
        Ok(file)
    }

    /// Whether `path` can be written as [`PidFile::write`] and [`PidFile::rewrite`] write it
    /// (a temporary file in its directory, renamed over it), checked before the server starts:
    /// the temporary file is created and removed, the file itself left as it is (during a hot
    /// upgrade it still names the old process, which `fcgi-uring reload` waits to see change).
    pub fn check(path: &Path) -> std::io::Result<()> {
        if path.is_dir() {
            return Err(std::io::Error::other("it is a directory"));
        }
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, b"")?;
        std::fs::remove_file(&tmp)
    }

    /// Writes the file again (a failed upgrade's answer to `reload`: same pid, new mtime),
    /// atomically (a temporary file of this process renamed over it).
    pub fn rewrite(&self) -> std::io::Result<()> {
        let pid = std::process::id();
        let tmp = self.path.with_extension(format!("{pid}.tmp"));
        std::fs::write(&tmp, format!("{pid}\n"))?;
        std::fs::rename(&tmp, &self.path)
    }

    /// A hot upgrade handed over: the file is left to the new process.
    pub fn hand_over(&mut self) {
        self.handed_over = true;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.handed_over && read_pid(&self.path) == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
