//! `fcgi-uring stop --pid-file F`: stops a running server as SIGTERM does (`/readyz` and the
//! ping path answer 503 for `admin.drain_delay` while it still serves, then the drain) and waits
//! until it has exited, as `nginx -s quit` would with a wait. Exit 0 once it exited; 1 with the
//! reason when F names no running fcgi-uring process or the process still runs after `--wait`.
//!
//! Where the server is PID 1 of this command's PID namespace (a container's main process,
//! reached with `docker exec` or `kubectl exec`), waiting is impossible: when a namespace's PID 1
//! exits, the kernel kills every other process of the namespace, this one included. There `stop`
//! returns (exit 0) once the signal is delivered, and says so.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct StopArgs {
    /// The pid file the server writes (`fcgi-uring serve --pid-file F`).
    #[arg(long, value_name = "FILE")]
    pub pid_file: PathBuf,
    /// Seconds to wait for the exit (past the server's `admin.drain_delay` plus
    /// `server.shutdown_timeout`); fractions as `1.5` accepted.
    #[arg(long, value_name = "SECONDS", default_value = "60",
          value_parser = crate::reload::wait_seconds)]
    pub wait: Duration,
}

pub fn run(args: &StopArgs) -> ExitCode {
    match stop(args) {
        Ok(done) => {
            println!("fcgi-uring stop: {done}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("fcgi-uring stop: {why}");
            ExitCode::FAILURE
        }
    }
}

fn stop(args: &StopArgs) -> Result<String, String> {
    let (process, raw) = crate::reload::open_server(&args.pid_file)?;
    let pid = Pid::from_raw(raw).ok_or_else(|| format!("invalid pid {raw}"))?;
    rustix::process::pidfd_send_signal(&process, Signal::TERM)
        .map_err(|e| format!("cannot signal pid {raw}: {e}"))?;
    if raw == 1 && rustix::process::getpid() != pid {
        return Ok(
            "pid 1 was sent SIGTERM: it drains and exits, and its exit ends this PID \
                   namespace (a container) with every process in it, this one included, so \
                   stop does not wait"
                .to_owned(),
        );
    }
    let until = Instant::now() + args.wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).map_err(|e| e.to_string())?;
        let mut fds = [PollFd::new(&process, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            // The pidfd is readable once the process has exited.
            Ok(n) if n > 0 => return Ok(format!("pid {raw} drained and exited")),
            Ok(_) => {
                return Err(format!(
                    "pid {raw} still runs {} s after SIGTERM (it drains: admin.drain_delay, then \
                     up to server.shutdown_timeout; see its log)",
                    crate::reload::show_seconds(args.wait)
                ));
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for pid {raw}: {e}")),
        }
    }
}
