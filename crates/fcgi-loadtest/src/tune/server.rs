//! The `fcgi-uring` binary under test: asking it for its effective configuration
//! (`serve --config F --print-config`, which also checks a file) and starting it for a trial,
//! pinned to the server CPU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fcgi_uring::Addr;

use crate::child::{self, Proc};
use crate::sys;

/// The server binary.
#[derive(Debug, Clone)]
pub struct Server {
    pub path: PathBuf,
}

impl Server {
    /// Checks that `path` is there.
    pub fn new(path: PathBuf) -> Result<Server, String> {
        if !path.is_file() {
            return Err(format!(
                "server binary {} not found: build it (cargo build --release) or pass --server PATH",
                path.display()
            ));
        }
        Ok(Server { path })
    }

    /// `serve [--config FILE] --print-config`: the effective configuration as TOML, or the
    /// server's message (which names the key it refused).
    pub fn print_config(&self, config: Option<&Path>) -> Result<String, String> {
        let mut cmd = Command::new(&self.path);
        cmd.arg("serve");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--print-config");
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.path.display()))?;
        if out.status.success() {
            String::from_utf8(out.stdout).map_err(|e| format!("--print-config output: {e}"))
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let msg = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" | ");
            Err(if msg.is_empty() {
                format!("exited with {}", out.status)
            } else {
                msg
            })
        }
    }

    /// Starts `serve --config config` pinned to `cpu`, logging to `log`, and waits until `addr`
    /// (the `listen` of that file) accepts connections.
    pub fn start(
        &self,
        config: &Path,
        addr: &Addr,
        cpu: usize,
        log: &Path,
    ) -> Result<Proc, String> {
        let mut cmd = Command::new(&self.path);
        cmd.arg("serve").arg("--config").arg(config);
        // Info-level logs only: a trial's log is read when it fails.
        cmd.env("RUST_LOG", "info");
        sys::child_pinned_and_tied(&mut cmd, Some(cpu));
        child::spawn(cmd, "fcgi-uring", log, addr, Duration::from_secs(10))
    }
}
