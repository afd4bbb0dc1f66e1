//! Readiness: starting, ready, draining. Written by the server (start, drain), read by the
//! admin listener (`/readyz`, the `fcgi_uring_ready` gauge) and by the ping path.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the server is in its life, as a load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Workers are starting: not ready for traffic yet.
    Starting,
    /// Every worker accepts.
    Ready,
    /// A shutdown began: traffic should go elsewhere (requests still in flight are served).
    Draining,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Draining => "draining",
        }
    }
}

/// The server's readiness, shared between threads.
#[derive(Debug)]
pub struct Health(AtomicU8);

impl Default for Health {
    fn default() -> Health {
        Health(AtomicU8::new(Readiness::Starting as u8))
    }
}

impl Health {
    pub fn get(&self) -> Readiness {
        match self.0.load(Ordering::Acquire) {
            0 => Readiness::Starting,
            1 => Readiness::Ready,
            _ => Readiness::Draining,
        }
    }

    /// Every worker accepts.
    pub fn set_ready(&self) {
        // Never from draining back to ready.
        let _ = self.0.compare_exchange(
            Readiness::Starting as u8,
            Readiness::Ready as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// A shutdown began; true the first time.
    pub fn set_draining(&self) -> bool {
        self.0.swap(Readiness::Draining as u8, Ordering::AcqRel) != Readiness::Draining as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_then_ready_then_draining_never_back() {
        let h = Health::default();
        assert_eq!(h.get(), Readiness::Starting);
        h.set_ready();
        assert_eq!(h.get(), Readiness::Ready);
        assert!(h.set_draining());
        assert!(!h.set_draining());
        h.set_ready();
        assert_eq!(h.get(), Readiness::Draining);
    }
}
