//! `fcgi-uring reload --pid-file F`: asks a running server for a hot upgrade (SIGUSR2 to the
//! pid in F, once it is known to be an fcgi-uring process: a stale file's reused pid is not
//! signalled) and waits until the new process has written its pid to F (it does once every
//! worker accepts and the old process handed over). Exit 0 when it did; 1 when the old
//! process rewrote F with its own pid (it does when an upgrade failed: its log says why, and
//! it serves on) or nothing changed in time.

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ReloadArgs {
    /// The pid file the server writes (`fcgi-uring serve --pid-file F`).
    #[arg(long, value_name = "FILE")]
    pub pid_file: PathBuf,
    /// Seconds to wait for the new process (past the server's `server.upgrade_timeout`).
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
}

/// The pid in `path`, if it holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The running server the pid file names, as a pidfd (which names that process for good: a pid
/// reused after it exits is not signalled) and its pid. An error says why not: no pid in the
/// file, no such process, or a process of another program (the file is stale and its pid was
/// reused) which is then not signalled.
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
    let (theirs, ours) = (command_name(&raw.to_string()), command_name("self"));
    if theirs != ours {
        return Err(format!(
            "pid {raw} is {}, not {}: {file} is stale",
            theirs.as_deref().unwrap_or("unknown"),
            ours.as_deref().unwrap_or("this program"),
        ));
    }
    Ok((process, raw))
}

/// The command name of `/proc/<which>` (`self` or a pid).
fn command_name(which: &str) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{which}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

pub fn run(args: &ReloadArgs) -> ExitCode {
    let (process, old) = match open_server(&args.pid_file) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("fcgi-uring reload: {why}");
            return ExitCode::FAILURE;
        }
    };
    let written = modified(&args.pid_file);
    if let Err(e) = rustix::process::pidfd_send_signal(&process, Signal::USR2) {
        eprintln!("fcgi-uring reload: cannot signal pid {old}: {e}");
        return ExitCode::FAILURE;
    }
    let until = Instant::now() + Duration::from_secs(args.wait);
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
        args.wait
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
