//! The service manager's notifications (`sd_notify`, through the `sd-notify` crate; nothing is
//! sent when `NOTIFY_SOCKET` is unset): `READY=1` once every worker accepts, `STOPPING=1` when
//! a shutdown's drain starts (not when a hot upgrade hands over: the service goes on),
//! `MAINPID=` naming the new process of a hot upgrade, and `WATCHDOG=1` while every worker is
//! alive.
//!
//! The watchdog proves liveness rather than ticking blindly: each worker runs a small task on
//! its own runtime that stamps a heartbeat every quarter of `WATCHDOG_USEC`; a thread sends
//! `WATCHDOG=1` every half period only while every worker's stamp is younger than half the
//! period. A worker stuck in a handler that never yields, or a loop that stopped turning,
//! stops the pings, and systemd restarts the service after `WatchdogSec=`.

use crate::wheel::process_ms;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Sends `states`; a failure is logged (the service manager may be gone), never fatal.
pub(crate) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// A worker's liveness stamp: milliseconds since the process's first use of it.
#[derive(Debug, Default)]
pub(crate) struct Heartbeat(AtomicU64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(process_ms(), Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        Duration::from_millis(process_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }

    /// Stamps every `period` on the worker's runtime, until the worker ends.
    pub async fn run(self: Arc<Self>, period: Duration) {
        loop {
            self.beat();
            tokio::time::sleep(period).await;
        }
    }
}

/// The watchdog's period (`WATCHDOG_USEC`, when meant for this process).
pub(crate) fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|p| !p.is_zero())
}

/// The thread that pings the watchdog; dropping it stops the pings.
#[derive(Debug)]
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(period: Duration, workers: Vec<Arc<Heartbeat>>) -> std::io::Result<Watchdog> {
        Watchdog::start_with(period, workers, || notify(&[NotifyState::Watchdog]))
    }

    /// [`Watchdog::start`] with `ping` in place of `WATCHDOG=1`.
    fn start_with(
        period: Duration,
        workers: Vec<Arc<Heartbeat>>,
        ping: impl Fn() + Send + 'static,
    ) -> std::io::Result<Watchdog> {
        let (stop, stopped) = mpsc::channel::<()>();
        let half = period / 2;
        let thread = std::thread::Builder::new()
            .name("fcgi-watchdog".into())
            .spawn(move || {
                loop {
                    if workers.iter().all(|h| h.age() < half) {
                        ping();
                    } else {
                        tracing::error!("a worker has not turned in {half:?}: no watchdog ping");
                    }
                    match stopped.recv_timeout(half) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// Stamps `h` every 10 ms until `stop`.
    fn beating(h: Arc<Heartbeat>, stop: Arc<std::sync::atomic::AtomicBool>) {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                h.beat();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }

    fn wait(what: &str, cond: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < until, "waited in vain for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn pings_only_while_every_worker_stamps() {
        let (alive, stuck) = (
            Arc::new(Heartbeat::default()),
            Arc::new(Heartbeat::default()),
        );
        alive.beat();
        stuck.beat();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        beating(alive.clone(), stop.clone());
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        let period = Duration::from_millis(200);
        let _dog = Watchdog::start_with(period, vec![alive, stuck.clone()], move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .expect("start");
        // `stuck` stopped stamping: once its stamp is older than half the period, no ping.
        wait("the stuck worker's stamp to age", || stuck.age() >= period);
        let before = pings.load(Ordering::SeqCst);
        wait("two checks after", || stuck.age() >= period * 2);
        assert_eq!(
            pings.load(Ordering::SeqCst),
            before,
            "pinged with a stuck worker"
        );
        // It turns again: pings resume.
        beating(stuck, stop.clone());
        wait("pings again", || pings.load(Ordering::SeqCst) >= before + 2);
        stop.store(true, Ordering::Relaxed);
    }
}
