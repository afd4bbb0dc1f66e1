//! The access log's writer thread: writes the chunks of lines the workers hand over, in the
//! order they arrive, to a file or standard output; reopens the file on request (logrotate's
//! `postrotate` sends SIGUSR1 to the `fcgi-uring` binary).
//!
//! Each chunk, once written, goes back to the workers' [`SpareBuffers`] for reuse.
//!
//! Guarantees: every line received before a reopen is written to the file open before it,
//! every line after to the new one (none lost, none written twice); a failed write is reported
//! once per reopen (the lines are lost, the workers go on) and its lines are counted
//! ([`LogWriter::lost_lines`]); the thread ends at
//! [`crate::conn::LogMsg::Stop`], after writing everything queued before it.

use crate::conn::{LogMsg, SpareBuffers};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Where lines go.
#[derive(Debug)]
enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(path: &str) -> io::Result<Sink> {
        if path == "-" {
            return Ok(Sink::Stdout);
        }
        let path = PathBuf::from(path);
        let file = open(&path)?;
        Ok(Sink::File { path, file })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => io::stdout().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, file } = self {
            *file = open(path)?;
        }
        Ok(())
    }
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The running writer.
#[derive(Debug)]
pub(crate) struct LogWriter {
    tx: SyncSender<LogMsg>,
    spare: Arc<SpareBuffers>,
    lost: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Opens `path` (`-`: standard output) and starts the thread; the sender is for the
    /// workers.
    pub fn start(path: &str) -> io::Result<LogWriter> {
        let sink = Sink::open(path)?;
        let (tx, rx) = sync_channel(crate::conn::oplog_channel_chunks());
        let spare = Arc::new(SpareBuffers::default());
        let written = Arc::clone(&spare);
        let lost = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&lost);
        let thread = std::thread::Builder::new()
            .name("fcgi-access-log".to_owned())
            .spawn(move || run(sink, rx, &written, &counted))?;
        Ok(LogWriter {
            tx,
            spare,
            lost,
            thread: Some(thread),
        })
    }

    /// Lines lost because writing them failed (a full disk, a closed pipe), so far.
    pub fn lost_lines(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.lost)
    }

    pub fn sender(&self) -> SyncSender<LogMsg> {
        self.tx.clone()
    }

    /// Where written buffers go back to the workers.
    pub fn spare(&self) -> Arc<SpareBuffers> {
        Arc::clone(&self.spare)
    }

    /// Reopens the file after the lines queued so far (blocks while the queue is full).
    pub fn reopen(&self) {
        let _ = self.tx.send(LogMsg::Reopen);
    }

    /// Writes what is queued and ends the thread (after every worker exited).
    pub fn stop(&mut self) {
        let _ = self.tx.send(LogMsg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut sink: Sink, rx: Receiver<LogMsg>, spare: &SpareBuffers, lost: &AtomicU64) {
    let mut failed = false;
    while let Ok(msg) = rx.recv() {
        match msg {
            LogMsg::Lines(bytes) => {
                if let Err(e) = sink.write(&bytes) {
                    // Only the writer thread adds: a load and a store.
                    let n = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                    lost.store(lost.load(Ordering::Relaxed) + n, Ordering::Relaxed);
                    if !std::mem::replace(&mut failed, true) {
                        tracing::error!(
                            "access log: write failed, lines lost (counted in \
                             fcgi_uring_access_log_lost_lines_total): {e}"
                        );
                    }
                }
                spare.give_back(bytes);
            }
            LogMsg::Reopen => match sink.reopen() {
                Ok(()) => failed = false,
                Err(e) => tracing::error!("access log: cannot reopen: {e}"),
            },
            LogMsg::Stop => break,
        }
    }
}
