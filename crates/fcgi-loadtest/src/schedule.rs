//! Open-loop pacing (wrk2 style): each connection's requests are due at fixed intervals, and a
//! request's latency is measured from when it was *due*, not from when it could be sent. A
//! server stall then shows up in the latency of every request that should have been sent
//! during it (no coordinated omission).
//!
//! Time is nanoseconds since the start of the run, passed in: no clock here.

/// The due times of one connection's requests: `first`, `first + interval`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacer {
    next: u64,
    interval: u64,
}

impl Pacer {
    /// Requests due every `interval` ns from `first` on (`interval` of 0 is taken as 1).
    pub fn new(first: u64, interval: u64) -> Pacer {
        Pacer {
            next: first,
            interval: interval.max(1),
        }
    }

    /// When the next request is due.
    pub fn next_due(&self) -> u64 {
        self.next
    }

    /// Takes the next request, however far ahead it is due, and returns its due time.
    pub fn claim(&mut self) -> u64 {
        let due = self.next;
        self.next += self.interval;
        due
    }

    /// If a request is due at `now`, takes it and returns its due time (the time its latency
    /// counts from, however late it is sent).
    pub fn take_due(&mut self, now: u64) -> Option<u64> {
        if self.next > now {
            return None;
        }
        let due = self.next;
        self.next += self.interval;
        Some(due)
    }
}

/// The pacers for `conns` connections sharing `rate` requests per second, staggered so that the
/// connections do not all fire at once.
pub fn pacers(conns: usize, rate: f64, start: u64) -> Vec<Pacer> {
    let conns = conns.max(1);
    let gap = (1e9 / rate.max(1e-9)).max(1.0);
    let interval = (gap * conns as f64) as u64;
    (0..conns)
        .map(|i| Pacer::new(start + (gap * i as f64) as u64, interval))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One connection, depth 1, a fake server that answers in `service` ns except for one stall:
    /// the latencies the engine's accounting would record.
    fn simulate(pacer: &mut Pacer, until: u64, service: impl Fn(u64) -> u64) -> Vec<u64> {
        let mut now = 0;
        let mut latencies = Vec::new();
        while now < until {
            match pacer.take_due(now) {
                Some(due) => {
                    let done = now + service(now);
                    latencies.push(done - due);
                    now = done;
                }
                None => now = pacer.next_due(),
            }
        }
        latencies
    }

    #[test]
    fn a_stall_counts_against_every_request_due_during_it() {
        const MS: u64 = 1_000_000;
        // 1 request per ms; each takes 0.1 ms, except the one sent at 10 ms takes 50 ms.
        let mut pacer = Pacer::new(0, MS);
        let service = |sent: u64| if sent == 10 * MS { 50 * MS } else { MS / 10 };
        let lat = simulate(&mut pacer, 100 * MS, service);
        assert_eq!(lat.len(), 100);
        assert_eq!(lat[..10], [MS / 10; 10]);
        assert_eq!(lat[10], 50 * MS);
        // Due at 11 ms, sent at 60 ms when the connection was free again: 49.1 ms, not 0.1 ms.
        assert_eq!(lat[11], 49 * MS + MS / 10);
        // The backlog drains at 0.1 ms per request, 0.9 ms gained per request.
        assert_eq!(lat[12], 48 * MS + 2 * MS / 10);
        let slow = lat.iter().filter(|&&l| l > MS).count();
        assert!(slow > 50, "{slow} slow requests");
        // A closed-loop client would have recorded one slow request out of 100.
    }

    #[test]
    fn pacers_share_the_rate_and_stagger() {
        let p = pacers(4, 1000.0, 5);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], Pacer::new(5, 4_000_000));
        assert_eq!(p[3].next_due(), 5 + 3_000_000);
        let mut q = Pacer::new(10, 0);
        assert_eq!(q.take_due(9), None);
        assert_eq!(q.take_due(10), Some(10));
        assert_eq!(q.take_due(10), None);
    }
}
