//! This process's resource use, read from /proc/self when scraped (Linux): resident and
//! virtual memory, open and maximum descriptors, CPU time, start time, threads.

/// Clock ticks per second of /proc's times (USER_HZ, 100 on every Linux architecture).
const USER_HZ: f64 = 100.0;

/// What [`read`] found; a value /proc did not give is `None` (and not exported).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

pub fn read() -> Process {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().and_then(stat_fields);
    let field = |i: usize| -> Option<u64> { fields.as_ref()?.get(i)?.parse().ok() };
    // Fields after "(comm)", counted from field 3 (state) as index 0.
    let (utime, stime) = (field(11), field(12));
    Process {
        resident_bytes: resident_bytes(),
        virtual_bytes: field(20),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: max_fds(),
        cpu_seconds: utime.zip(stime).map(|(u, s)| (u + s) as f64 / USER_HZ),
        start_time_seconds: field(19).and_then(start_time),
        threads: field(17),
    }
}

/// The fields of /proc/self/stat after the command name (which may hold spaces).
fn stat_fields(stat: &str) -> Option<Vec<String>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Unix time the process started: boot time plus its start in ticks since boot.
fn start_time(ticks_since_boot: u64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + ticks_since_boot as f64 / USER_HZ)
}

/// VmRSS of /proc/self/status (in kB there), which needs no page size.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Seconds since the Unix epoch of `t`.
    fn unix_seconds(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }

    #[test]
    fn reads_this_process() {
        let p = read();
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(
            p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap_or(0)),
            "{p:?}"
        );
        assert!(p.threads.is_some_and(|n| n >= 1), "{p:?}");
        let now = unix_seconds(SystemTime::now());
        let start = p.start_time_seconds.unwrap_or(0.0);
        assert!(start > 1e9 && start <= now + 1.0, "{start} vs {now}");
    }
}
