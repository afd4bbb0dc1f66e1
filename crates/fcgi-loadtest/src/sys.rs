//! The operating-system calls the load generator needs and `std` lacks: epoll, per-thread CPU
//! time, another process's CPU time, and child processes that are pinned and never outlive us.
//! All of the crate's `unsafe` lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readiness for reading.
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Readiness for writing (also how a non-blocking connect reports completion).
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up (always reported, whatever the interest).
pub const ERROR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// A level-triggered epoll instance with a reusable event array.
///
/// Level-triggered on purpose: one `read` per wakeup is enough (no read-until-EAGAIN), which
/// saves a syscall per batch of responses.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` (Linux 5.11) takes a timeout finer than a millisecond; `false` once the
    /// kernel said ENOSYS.
    has_pwait2: bool,
}

impl Epoll {
    /// A new instance returning at most `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Epoll {
            fd,
            events: vec![empty; capacity.max(1)],
            has_pwait2: true,
        })
    }

    /// Starts watching `fd` for `interest`, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes the interest of a watched `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) and returns the ready `(token, events)` pairs.
    /// EINTR returns no events.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<&[libc::epoll_event]> {
        let n = if self.has_pwait2 {
            match self.wait_pwait2(timeout) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    self.has_pwait2 = false;
                    self.wait_ms(timeout)
                }
                other => other,
            }
        } else {
            self.wait_ms(timeout)
        };
        match n {
            Ok(n) => Ok(&self.events[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(&self.events[..0]),
            Err(e) => Err(e),
        }
    }

    fn wait_pwait2(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` is a live buffer of `events.len()` entries the kernel may fill;
        // `ts_ptr` is null or points at `ts`, alive for the call; a null sigmask is allowed.
        let rc = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    fn wait_ms(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        // Round up: waking early would spin, waking late by < 1 ms is the price of old kernels.
        let ms = timeout.map_or(-1, |t| {
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `events` is a live buffer of `events.len()` entries the kernel may fill.
        let rc = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

/// CPU time (user + system) the calling thread has used so far.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// CPU time a process (or a tree of them) has used, split as `/proc/PID/stat` splits it: in
/// user space (utime) and in the kernel on its behalf (stime).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// The time used since `earlier` (zero where a counter went back, e.g. a process that
    /// left a tree).
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    fn from_ticks(ticks: StatTicks) -> CpuTime {
        CpuTime {
            user: ticks_to_duration(ticks.user),
            system: ticks_to_duration(ticks.system),
        }
    }
}

/// utime and stime of a `/proc/PID/stat` line, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatTicks {
    pub user: u64,
    pub system: u64,
}

impl std::ops::Add for StatTicks {
    type Output = StatTicks;
    fn add(self, other: StatTicks) -> StatTicks {
        StatTicks {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// CPU time (all threads) process `pid` has used so far, from `/proc/PID/stat`.
pub fn process_cpu_time(pid: u32) -> io::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_proc_stat_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })?;
    Ok(CpuTime::from_ticks(ticks))
}

/// utime and stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may contain spaces and parentheses, so fields are counted after the
/// last `)`.
pub fn parse_proc_stat_ticks(stat: &str) -> Option<StatTicks> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on; utime is field 14, i.e. index 11 here.
    let mut fields = after_comm.split_ascii_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(StatTicks { user, system })
}

/// Parent pid (field 4), utime and stime (fields 14 and 15) of a `/proc/PID/stat` line.
pub fn parse_proc_stat_parent_and_ticks(stat: &str) -> Option<(u32, StatTicks)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ppid = after_comm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some((ppid, parse_proc_stat_ticks(stat)?))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = clock_ticks_per_second();
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

/// Every live process as `(pid, parent pid, utime and stime ticks)`, from `/proc/*/stat`
/// (processes that exit while the directory is read are left out).
fn all_processes() -> io::Result<Vec<(u32, u32, StatTicks)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, ticks)) = parse_proc_stat_parent_and_ticks(&stat) {
            out.push((pid, ppid, ticks));
        }
    }
    Ok(out)
}

/// `root` and its live descendants among `procs` (`(pid, parent, ticks)`), root first.
pub fn tree_of<T>(root: u32, procs: &[(u32, u32, T)]) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(pid, ppid, _)| *ppid == parent && *pid != parent)
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// A process tree's CPU time: `pid` (e.g. a proxy's master) and every live descendant (its
/// workers), the sums of their `/proc/PID/stat` utime and stime, all threads. An error when
/// `pid` itself is gone.
pub fn tree_cpu_time(pid: u32) -> io::Result<(CpuTime, Vec<u32>)> {
    let procs = all_processes()?;
    if !procs.iter().any(|(p, _, _)| *p == pid) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} is gone"),
        ));
    }
    let tree = tree_of(pid, &procs);
    let ticks = procs
        .iter()
        .filter(|(p, _, _)| tree.contains(p))
        .fold(StatTicks::default(), |sum, (_, _, t)| sum + *t);
    Ok((CpuTime::from_ticks(ticks), tree))
}

/// `(cpu, busy ticks, all ticks)` of a `/proc/stat` line `cpuN user nice system idle iowait irq
/// softirq steal ...`; busy is everything but idle and iowait. `None` for other lines (and
/// the all-CPU `cpu` line).
pub fn parse_proc_stat_cpu(line: &str) -> Option<(usize, u64, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
    // Guest time is already counted in user and nice: the first eight fields are the total.
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let all: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((cpu, all - idle, all))
}

/// Busy and all ticks so far of each CPU in `cpus` (in that order), from `/proc/stat`: what
/// every process on them used, ours and others'.
pub fn cpu_ticks(cpus: &[usize]) -> io::Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let lines: Vec<(usize, u64, u64)> = stat.lines().filter_map(parse_proc_stat_cpu).collect();
    cpus.iter()
        .map(|&c| {
            lines
                .iter()
                .find(|(cpu, _, _)| *cpu == c)
                .map(|(_, busy, all)| (*busy, *all))
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no CPU {c}")))
        })
        .collect()
}

/// Sends SIGTERM to `pid` (a child process of ours).
pub fn terminate(pid: u32) -> io::Result<()> {
    signal(pid, libc::SIGTERM)
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a child started by `cmd` pinned to `cpu` (when given) and killed by the kernel when the
/// thread that spawned it exits (`PR_SET_PDEATHSIG`): a server child never outlives this tool,
/// even when it is killed with SIGKILL. Spawn from a thread that outlives the child (the main
/// thread).
pub fn child_pinned_and_tied(cmd: &mut std::process::Command, cpu: Option<usize>) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: getpid takes no pointers.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, sched_setaffinity, _exit) on its own
    // stack memory; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Child processes to SIGKILL when this process is interrupted (see [`kill_children_on_signal`]).
static CHILDREN: [std::sync::atomic::AtomicI32; 8] =
    [const { std::sync::atomic::AtomicI32::new(0) }; 8];

/// Adds `pid` to the children killed on SIGINT, SIGTERM or SIGHUP; `false` when the table is
/// full (the child is then only tied by [`child_pinned_and_tied`] and its guard).
pub fn register_child(pid: u32) -> bool {
    use std::sync::atomic::Ordering;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    CHILDREN.iter().any(|slot| {
        slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Removes `pid` from the children killed on a signal.
pub fn unregister_child(pid: u32) {
    use std::sync::atomic::Ordering;
    let Ok(pid) = i32::try_from(pid) else { return };
    for slot in &CHILDREN {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    for slot in &CHILDREN {
        let pid = slot.load(std::sync::atomic::Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe and takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // SAFETY: signal and raise are async-signal-safe; restoring the default action and raising
    // the signal again ends the process the way the signal would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// On SIGINT, SIGTERM and SIGHUP: SIGKILL every registered child, then die of the signal as
/// before. (A panic unwinds and the children's guards stop them; SIGKILL of this process is
/// covered by `PR_SET_PDEATHSIG`.)
pub fn kill_children_on_signal() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions and reads atomics.
        unsafe {
            libc::signal(
                sig,
                on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_after_odd_command_names() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(
            parse_proc_stat_ticks(line),
            Some(StatTicks {
                user: 250,
                system: 50
            })
        );
        assert_eq!(parse_proc_stat_ticks("garbage"), None);
    }

    #[test]
    fn parent_pid_and_trees() {
        let line = "7 (x y) S 3 7 7 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0";
        assert_eq!(
            parse_proc_stat_parent_and_ticks(line),
            Some((3, StatTicks { user: 5, system: 6 }))
        );
        let procs = [
            (1, 0, ()),
            (3, 1, ()),
            (7, 3, ()),
            (8, 3, ()),
            (9, 7, ()),
            (10, 1, ()),
        ];
        assert_eq!(tree_of(3, &procs), vec![3, 7, 8, 9]);
        let me = std::process::id();
        let before = process_cpu_time(me).unwrap();
        let (cpu, tree) = tree_cpu_time(me).unwrap();
        assert_eq!(tree[0], me);
        assert!(cpu.user >= before.user && cpu.system >= before.system);
    }

    #[test]
    fn cpu_lines_of_proc_stat() {
        let line = "cpu1 100 5 50 800 20 3 2 0 7 0";
        assert_eq!(parse_proc_stat_cpu(line), Some((1, 160, 980)));
        assert_eq!(parse_proc_stat_cpu("cpu 1 2 3 4 5 6 7 8 9 10"), None);
        assert_eq!(parse_proc_stat_cpu("intr 1 2 3"), None);
        let t = cpu_ticks(&[0]).unwrap();
        assert!(t[0].0 <= t[0].1);
        assert!(cpu_ticks(&[100_000]).is_err());
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let pid = std::process::id();
        assert!(process_cpu_time(pid).is_ok());
        let _ = thread_cpu_time();
    }
}
