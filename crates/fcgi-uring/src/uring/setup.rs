//! Ring setup: configuration checks, kernel feature detection, the setup-flag fallback chain, and
//! the errors that name their cause and fix.

use std::fmt;
use std::io;

use io_uring::{IoUring, Probe, opcode};

use super::{Features, RingConfig, SetupError};

/// Kernel versions that brought the features the ring relies on.
const MULTISHOT_ACCEPT_SINCE: (u32, u32) = (5, 19);
const BUF_RING_SINCE: (u32, u32) = (5, 19);
const MULTISHOT_RECV_SINCE: (u32, u32) = (6, 0);
const RECV_BUNDLE_SINCE: (u32, u32) = (6, 10);

impl fmt::Display for Features {
    /// A compact list for the startup line, e.g.
    /// `kernel 6.18, multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}.{}", self.kernel.0, self.kernel.1)?;
        let flags = [
            (self.multishot_accept, "multishot-accept"),
            (self.multishot_recv, "multishot-recv"),
            (self.provided_buffer_ring, "buf-ring"),
            (self.single_issuer, "single-issuer"),
            (self.defer_taskrun, "defer-taskrun"),
            (self.coop_taskrun, "coop-taskrun"),
            (self.taskrun_flag, "taskrun-flag"),
            (self.sqpoll, "sqpoll"),
            (self.recv_bundle, "recv-bundle"),
            (self.direct_send, "direct-send"),
            (self.direct_recv, "direct-recv"),
        ];
        for (_, name) in flags.iter().filter(|(on, _)| *on) {
            write!(f, ", {name}")?;
        }
        if self.registered_send_buffers > 0 {
            write!(
                f,
                ", {} registered send buffers",
                self.registered_send_buffers
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Blocked(err) => write!(
                f,
                "io_uring blocked ({err}), most likely by a container seccomp profile \
                 (Docker >= 25, containerd 2.x); fix: run with a seccomp profile that allows \
                 io_uring_setup/io_uring_enter/io_uring_register, e.g. \
                 `--security-opt seccomp=unconfined` or a custom profile"
            ),
            SetupError::Disabled { sysctl: 1 } => write!(
                f,
                "io_uring disabled for this user by kernel.io_uring_disabled=1; fix: \
                 `sysctl kernel.io_uring_disabled=0`, or add the user to the group named by \
                 kernel.io_uring_group"
            ),
            SetupError::Disabled { sysctl } => write!(
                f,
                "io_uring disabled by kernel.io_uring_disabled={sysctl}; fix: \
                 `sysctl kernel.io_uring_disabled=0`"
            ),
            SetupError::Memlock(err) => write!(
                f,
                "io_uring could not lock memory for its rings and buffers ({err}); fix: raise \
                 RLIMIT_MEMLOCK (`ulimit -l`, systemd `LimitMEMLOCK=`), or reduce \
                 --ring-entries/--recv-buffers"
            ),
            SetupError::MemlockSendBuffers { err, count, size } => write!(
                f,
                "io_uring could not register {count} send buffers of {size} bytes ({} KiB of \
                 locked memory): {err}; registered buffers count against RLIMIT_MEMLOCK \
                 (`ulimit -l`, 8 MiB by default, per user over all processes); fix: raise \
                 RLIMIT_MEMLOCK (`ulimit -l`, systemd `LimitMEMLOCK=`, or CAP_IPC_LOCK), or \
                 lower ring.registered_send_buffers / ring.send_buffer_size \
                 (--registered-send-buffers / --send-buffer-size; 0 buffers turns them off)",
                (u64::from(*count) * u64::from(*size)).div_ceil(1024)
            ),
            SetupError::NotImplemented(err) => write!(
                f,
                "io_uring not implemented ({err}): a seccomp filter refuses it with ENOSYS \
                 (rootless Podman) or the kernel lacks CONFIG_IO_URING; fix: a seccomp profile \
                 that allows io_uring_setup/io_uring_enter/io_uring_register, or a kernel with \
                 io_uring (Linux >= 6.0)"
            ),
            SetupError::Unsupported { feature, needs } => write!(
                f,
                "io_uring {feature} is not available on this kernel; it needs {needs}; fix: \
                 upgrade the kernel"
            ),
            SetupError::Config(e) => write!(f, "invalid io_uring configuration: {e}"),
            SetupError::SigpipeFatal => f.write_str(
                "registered_send_buffers sends with write(2), which raises SIGPIPE when a peer is \
                 gone, and SIGPIPE would terminate this process (its default action); fix: ignore \
                 SIGPIPE (Rust programs do unless they restored it), or set \
                 registered_send_buffers = 0",
            ),
            SetupError::SqpollCpu { cpu, err } => write!(
                f,
                "sqpoll_cpu {cpu} was refused ({err}): it must be an online CPU this process \
                 may run on (this machine has {} CPUs, numbered from 0)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
            SetupError::Other(err) => write!(f, "io_uring setup failed: {err}"),
        }
    }
}

/// Checks the ring settings before anything reaches the kernel, with the same checks as
/// [`Config::validate`](crate::Config::validate) (ranges and the rules between settings).
pub(super) fn validate(config: &RingConfig) -> Result<(), SetupError> {
    crate::config::check_ring(config).map_err(SetupError::Config)
}

/// Registered send buffers are sent with write(2), which raises SIGPIPE when the peer is gone
/// (there is no MSG_NOSIGNAL for a write). Refuses when SIGPIPE would terminate the process.
/// Rust programs ignore SIGPIPE unless they restored it.
pub(super) fn check_sigpipe() -> Result<(), SetupError> {
    // SAFETY: `sigaction` is plain data, for which all-zero bytes are a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; the kernel writes into `old`, which we own and
    // which outlives the call.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) } != 0 {
        return Err(SetupError::Other(io::Error::last_os_error()));
    }
    if old.sa_sigaction == libc::SIG_DFL {
        return Err(SetupError::SigpipeFatal);
    }
    Ok(())
}

/// Maps a failure of IORING_REGISTER_BUFFERS: ENOMEM is RLIMIT_MEMLOCK.
pub(super) fn classify_send_buffers(err: io::Error, config: &RingConfig) -> SetupError {
    match err.raw_os_error() {
        Some(libc::ENOMEM) => SetupError::MemlockSendBuffers {
            err,
            count: config.registered_send_buffers,
            size: config.send_buffer_size,
        },
        _ => classify(err, io_uring_disabled_sysctl()),
    }
}

/// Fails unless the kernel has receive bundles (IORING_FEAT_RECVSEND_BUNDLE, Linux 6.10).
pub(super) fn check_bundle(ring: &IoUring, kernel: Option<(u32, u32)>) -> Result<(), SetupError> {
    let by_version = kernel.is_none_or(|k| k >= RECV_BUNDLE_SINCE);
    if ring.params().is_feature_recvsend_bundle() && by_version {
        return Ok(());
    }
    Err(SetupError::Unsupported {
        feature: "receive bundles (ring.recv_bundle, --recv-bundle)",
        needs: "Linux >= 6.10 (or set recv_bundle = false)",
    })
}

/// `"6.18.44-fc-v657"` -> `(6, 18)`.
pub(super) fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor_digits: &str = parts.next()?;
    let end = minor_digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(minor_digits.len());
    let minor = minor_digits[..end].parse().ok()?;
    Some((major, minor))
}

/// The running kernel's (major, minor), from uname(2).
pub(super) fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: `utsname` is a struct of C char arrays, for which all-zero bytes are a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes into `uts`, which we own and which outlives the call; the kernel does
    // not keep the pointer after returning.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // The release is NUL-terminated; take the bytes before the first NUL (all of it if none).
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    parse_kernel_release(std::str::from_utf8(&bytes).ok()?)
}

/// Fails with [`SetupError::Unsupported`] for the first required feature the kernel lacks.
/// An unknown kernel version is not refused here: the kernel will refuse what it lacks.
pub(super) fn check_required(kernel: Option<(u32, u32)>) -> Result<(), SetupError> {
    let Some(kernel) = kernel else {
        return Ok(());
    };
    let required = [
        ("multishot accept", MULTISHOT_ACCEPT_SINCE, "Linux >= 5.19"),
        ("provided buffer ring", BUF_RING_SINCE, "Linux >= 5.19"),
        ("multishot recv", MULTISHOT_RECV_SINCE, "Linux >= 6.0"),
    ];
    for (feature, since, needs) in required {
        if kernel < since {
            return Err(SetupError::Unsupported { feature, needs });
        }
    }
    Ok(())
}

/// Feature flags implied by the kernel version (the opcode probe cannot see multishot flags).
pub(super) fn version_features(kernel: Option<(u32, u32)>) -> Features {
    let at_least = |since| kernel.is_none_or(|k| k >= since);
    Features {
        kernel: kernel.unwrap_or((0, 0)),
        single_issuer: false,
        defer_taskrun: false,
        coop_taskrun: false,
        multishot_accept: at_least(MULTISHOT_ACCEPT_SINCE),
        multishot_recv: at_least(MULTISHOT_RECV_SINCE),
        provided_buffer_ring: at_least(BUF_RING_SINCE),
        taskrun_flag: false,
        sqpoll: false,
        recv_bundle: false,
        registered_send_buffers: 0,
        direct_send: false,
        direct_recv: false,
    }
}

/// Reads `/proc/sys/kernel/io_uring_disabled` (absent before Linux 6.6: `None`).
pub(super) fn io_uring_disabled_sysctl() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Maps an error from io_uring_setup or io_uring_register to the cause a user can act on.
/// Pure: `sysctl` is the value of `kernel.io_uring_disabled`, if readable.
pub(super) fn classify(err: io::Error, sysctl: Option<u8>) -> SetupError {
    match err.raw_os_error() {
        Some(libc::EPERM) => match sysctl {
            Some(value @ (1 | 2)) => SetupError::Disabled { sysctl: value },
            _ => SetupError::Blocked(err),
        },
        Some(libc::ENOMEM) => SetupError::Memlock(err),
        Some(libc::ENOSYS) => SetupError::NotImplemented(err),
        _ => SetupError::Other(err),
    }
}

/// Which setup flags a ring was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct SetupFlags {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub taskrun_flag: bool,
    pub submit_all: bool,
    pub sqpoll: bool,
}

/// The setup attempts, best first: each later one is tried only when the kernel refuses the
/// previous one with EINVAL (unknown flag). SQPOLL is in every attempt when asked for (it is
/// never dropped silently), COOP_TASKRUN only when `coop_taskrun` is on.
pub(super) fn attempts(config: &RingConfig) -> Vec<SetupFlags> {
    let base = SetupFlags::default();
    let si = SetupFlags {
        single_issuer: true,
        submit_all: true,
        ..base
    };
    let sa = SetupFlags {
        submit_all: true,
        ..base
    };
    if config.sqpoll {
        let sq = |f: SetupFlags| SetupFlags { sqpoll: true, ..f };
        return vec![sq(si), sq(sa), sq(base)];
    }
    let mut list = Vec::with_capacity(5);
    if config.defer_taskrun {
        list.push(SetupFlags {
            defer_taskrun: true,
            ..si
        });
    }
    if config.coop_taskrun {
        let coop = |f: SetupFlags, taskrun_flag| SetupFlags {
            coop_taskrun: true,
            taskrun_flag,
            ..f
        };
        list.extend([coop(si, true), coop(sa, true), coop(sa, false)]);
    } else {
        list.extend([si, sa]);
    }
    list.push(base);
    list
}

/// Creates the ring with the best setup flags the kernel accepts.
pub(super) fn build_ring(config: &RingConfig) -> Result<(IoUring, SetupFlags), SetupError> {
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for flags in attempts(config) {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(config.cq_entries).dontfork();
        if flags.single_issuer {
            builder.setup_single_issuer();
        }
        if flags.defer_taskrun {
            builder.setup_defer_taskrun();
        }
        if flags.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        if flags.taskrun_flag {
            builder.setup_taskrun_flag();
        }
        if flags.submit_all {
            builder.setup_submit_all();
        }
        if flags.sqpoll {
            builder.setup_sqpoll(config.sqpoll_idle_ms);
            if let Some(cpu) = config.sqpoll_cpu {
                builder.setup_sqpoll_cpu(cpu);
            }
        }
        match builder.build(config.sq_entries) {
            Ok(ring) => return Ok((ring, flags)),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => last = err,
            Err(err) => return Err(classify(err, io_uring_disabled_sysctl())),
        }
    }
    if config.sqpoll {
        return Err(match config.sqpoll_cpu {
            Some(cpu) => SetupError::SqpollCpu { cpu, err: last },
            None => SetupError::Unsupported {
                feature: "SQPOLL",
                needs: "Linux >= 5.11 (or set sqpoll = false)",
            },
        });
    }
    Err(SetupError::Other(last))
}

/// Checks that the kernel knows every opcode the ring submits.
pub(super) fn check_opcodes(ring: &IoUring, config: &RingConfig) -> Result<(), SetupError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|err| classify(err, io_uring_disabled_sysctl()))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "accept", "Linux >= 5.5"),
        (opcode::RecvMulti::CODE, "recv", "Linux >= 5.6"),
        (opcode::Send::CODE, "send", "Linux >= 5.6"),
        (opcode::Shutdown::CODE, "shutdown", "Linux >= 5.11"),
        (opcode::AsyncCancel::CODE, "async cancel", "Linux >= 5.5"),
    ];
    let fixed = (opcode::WriteFixed::CODE, "write fixed", "Linux >= 5.1");
    let needed = needed
        .into_iter()
        .chain((config.registered_send_buffers > 0).then_some(fixed));
    for (code, feature, needs) in needed {
        if !probe.is_supported(code) {
            return Err(SetupError::Unsupported { feature, needs });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.19.0"), Some((5, 19)));
        assert_eq!(parse_kernel_release("6.1-rc3"), Some((6, 1)));
        assert_eq!(parse_kernel_release("6.12+deb13-amd64"), Some((6, 12)));
        assert_eq!(parse_kernel_release("6.0rc1"), Some((6, 0)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert_eq!(parse_kernel_release(""), None);
        assert!(kernel_version().is_some());
    }

    #[test]
    fn errno_classification() {
        assert!(matches!(
            classify(errno(libc::EPERM), None),
            SetupError::Blocked(_)
        ));
        assert!(matches!(
            classify(errno(libc::EPERM), Some(0)),
            SetupError::Blocked(_)
        ));
        assert!(matches!(
            classify(errno(libc::EPERM), Some(1)),
            SetupError::Disabled { sysctl: 1 }
        ));
        assert!(matches!(
            classify(errno(libc::EPERM), Some(2)),
            SetupError::Disabled { sysctl: 2 }
        ));
        assert!(matches!(
            classify(errno(libc::ENOMEM), None),
            SetupError::Memlock(_)
        ));
        assert!(matches!(
            classify(errno(libc::ENOSYS), None),
            SetupError::NotImplemented(_)
        ));
        assert!(matches!(
            classify(errno(libc::EFAULT), Some(2)),
            SetupError::Other(_)
        ));
    }

    #[test]
    fn setup_error_messages_name_cause_and_fix() {
        let blocked = SetupError::Blocked(errno(libc::EPERM)).to_string();
        assert!(blocked.starts_with("io_uring blocked"), "{blocked}");
        assert!(blocked.contains("seccomp"));
        assert!(blocked.contains("Docker >= 25, containerd 2.x"));
        assert!(blocked.contains("io_uring_setup/io_uring_enter/io_uring_register"));
        assert!(blocked.contains("--security-opt seccomp=unconfined"));

        let disabled1 = SetupError::Disabled { sysctl: 1 }.to_string();
        assert!(disabled1.contains("kernel.io_uring_disabled=1"));
        assert!(disabled1.contains("sysctl kernel.io_uring_disabled=0"));
        assert!(disabled1.contains("kernel.io_uring_group"));
        let disabled2 = SetupError::Disabled { sysctl: 2 }.to_string();
        assert!(disabled2.contains("kernel.io_uring_disabled=2"));
        assert!(disabled2.contains("sysctl kernel.io_uring_disabled=0"));
        assert!(!disabled2.contains("io_uring_group"));

        let memlock = SetupError::Memlock(errno(libc::ENOMEM)).to_string();
        assert!(memlock.contains("RLIMIT_MEMLOCK"));
        assert!(memlock.contains("ulimit -l"));
        assert!(memlock.contains("LimitMEMLOCK="));
        assert!(memlock.contains("--ring-entries/--recv-buffers"));

        let nosys = SetupError::NotImplemented(errno(libc::ENOSYS)).to_string();
        assert!(nosys.contains("ENOSYS (rootless Podman)"), "{nosys}");
        assert!(nosys.contains("io_uring_setup/io_uring_enter/io_uring_register"));
        assert!(nosys.contains("CONFIG_IO_URING"));

        let unsupported = SetupError::Unsupported {
            feature: "multishot recv",
            needs: "Linux >= 6.0",
        }
        .to_string();
        assert_eq!(
            unsupported,
            "io_uring multishot recv is not available on this kernel; it needs Linux >= 6.0; \
             fix: upgrade the kernel"
        );

        let bad = RingConfig {
            sq_entries: 3,
            ..RingConfig::default()
        };
        let config = validate(&bad).unwrap_err().to_string();
        assert!(
            config.starts_with(
                "invalid io_uring configuration: ring.sq_entries = 3: must be a power of two"
            ),
            "{config}"
        );
        assert!(
            SetupError::SigpipeFatal
                .to_string()
                .contains("set registered_send_buffers = 0")
        );
        let cpu = SetupError::SqpollCpu {
            cpu: 99,
            err: errno(libc::EINVAL),
        }
        .to_string();
        assert!(cpu.starts_with("sqpoll_cpu 99 was refused ("), "{cpu}");
        assert!(
            SetupError::Other(errno(libc::EFAULT))
                .to_string()
                .starts_with("io_uring setup failed: ")
        );
    }

    #[test]
    fn config_validation() {
        let ok = RingConfig::default();
        assert!(validate(&ok).is_ok());
        let cases = [
            RingConfig {
                sq_entries: 0,
                ..ok.clone()
            },
            RingConfig {
                sq_entries: 100,
                ..ok.clone()
            },
            RingConfig {
                sq_entries: 65536,
                cq_entries: 65536,
                ..ok.clone()
            },
            RingConfig {
                cq_entries: 1000,
                ..ok.clone()
            },
            RingConfig {
                cq_entries: 512,
                ..ok.clone()
            },
            RingConfig {
                cq_entries: 131072,
                ..ok.clone()
            },
            RingConfig {
                recv_buffers: 0,
                ..ok.clone()
            },
            RingConfig {
                recv_buffers: 1000,
                ..ok.clone()
            },
            RingConfig {
                recv_buffers: 65535,
                ..ok.clone()
            },
            RingConfig {
                recv_buffer_size: 0,
                ..ok.clone()
            },
        ];
        for config in cases {
            assert!(
                matches!(validate(&config), Err(SetupError::Config(_))),
                "{config:?} accepted"
            );
        }
        let edge = RingConfig {
            sq_entries: 32768,
            cq_entries: 65536,
            recv_buffers: 32768,
            recv_buffer_size: 1,
            defer_taskrun: false,
            ..ok.clone()
        };
        assert!(validate(&edge).is_ok());
        let sqpoll = RingConfig {
            sqpoll: true,
            defer_taskrun: false,
            coop_taskrun: false,
            sqpoll_cpu: Some(0),
            ..ok.clone()
        };
        assert!(validate(&sqpoll).is_ok());
        let refused = [
            RingConfig {
                coop_taskrun: true,
                ..sqpoll.clone()
            },
            RingConfig {
                defer_taskrun: true,
                ..sqpoll.clone()
            },
            RingConfig {
                sqpoll_idle_ms: 0,
                ..sqpoll.clone()
            },
            RingConfig {
                sqpoll_cpu: Some(0),
                ..ok.clone()
            },
            RingConfig {
                registered_send_buffers: crate::config::MAX_SEND_BUFFERS as u16 + 1,
                ..ok.clone()
            },
            RingConfig {
                send_buffer_size: 0,
                ..ok.clone()
            },
        ];
        for config in refused {
            assert!(
                matches!(validate(&config), Err(SetupError::Config(_))),
                "{config:?} accepted"
            );
        }
    }

    #[test]
    fn required_features_by_kernel_version() {
        assert!(check_required(Some((6, 18))).is_ok());
        assert!(check_required(Some((6, 0))).is_ok());
        assert!(check_required(None).is_ok());
        assert!(matches!(
            check_required(Some((5, 19))),
            Err(SetupError::Unsupported {
                feature: "multishot recv",
                needs: "Linux >= 6.0"
            })
        ));
        assert!(matches!(
            check_required(Some((5, 15))),
            Err(SetupError::Unsupported {
                feature: "multishot accept",
                ..
            })
        ));
    }

    #[test]
    fn features_display() {
        let features = Features {
            kernel: (6, 18),
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: false,
            multishot_accept: true,
            multishot_recv: true,
            provided_buffer_ring: true,
            taskrun_flag: false,
            sqpoll: false,
            recv_bundle: false,
            registered_send_buffers: 0,
            direct_send: false,
            direct_recv: false,
        };
        assert_eq!(
            features.to_string(),
            "kernel 6.18, multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun"
        );
        let plain = Features {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
            direct_send: true,
            direct_recv: true,
            ..features
        };
        assert_eq!(
            plain.to_string(),
            "kernel 6.18, multishot-accept, multishot-recv, buf-ring, coop-taskrun, direct-send, \
             direct-recv"
        );
        let knobs = Features {
            single_issuer: true,
            defer_taskrun: false,
            sqpoll: true,
            recv_bundle: true,
            registered_send_buffers: 64,
            ..features
        };
        assert_eq!(
            knobs.to_string(),
            "kernel 6.18, multishot-accept, multishot-recv, buf-ring, single-issuer, sqpoll, \
             recv-bundle, 64 registered send buffers"
        );
    }

    #[test]
    fn fallback_order() {
        let defaults = RingConfig {
            defer_taskrun: true,
            ..RingConfig::default()
        };
        let with_defer = attempts(&defaults);
        assert!(with_defer[0].defer_taskrun && with_defer[0].single_issuer);
        assert!(with_defer[0].submit_all);
        assert!(with_defer[1].coop_taskrun && with_defer[1].taskrun_flag);
        assert!(!with_defer[1].defer_taskrun);
        assert_eq!(with_defer.last(), Some(&SetupFlags::default()));
        let no_defer = RingConfig {
            defer_taskrun: false,
            ..defaults.clone()
        };
        assert!(attempts(&no_defer).iter().all(|f| !f.defer_taskrun));
        assert!(attempts(&no_defer)[0].coop_taskrun);
        let neither = RingConfig {
            coop_taskrun: false,
            ..no_defer.clone()
        };
        assert!(
            attempts(&neither)
                .iter()
                .all(|f| !f.defer_taskrun && !f.coop_taskrun && !f.taskrun_flag)
        );
        let sqpoll = RingConfig {
            sqpoll: true,
            ..neither
        };
        let list = attempts(&sqpoll);
        assert!(
            list.iter()
                .all(|f| f.sqpoll && !f.coop_taskrun && !f.defer_taskrun)
        );
        assert!(list[0].single_issuer);
    }

    #[test]
    fn send_buffer_enomem_names_rlimit_memlock_and_the_fix() {
        let config = RingConfig {
            registered_send_buffers: 64,
            send_buffer_size: 1 << 20,
            ..RingConfig::default()
        };
        let e = classify_send_buffers(errno(libc::ENOMEM), &config);
        let msg = e.to_string();
        assert!(matches!(e, SetupError::MemlockSendBuffers { .. }), "{msg}");
        assert!(msg.contains("64 send buffers of 1048576 bytes"), "{msg}");
        assert!(msg.contains("65536 KiB"), "{msg}");
        assert!(
            msg.contains("RLIMIT_MEMLOCK") && msg.contains("ulimit -l"),
            "{msg}"
        );
        assert!(msg.contains("LimitMEMLOCK=") && msg.contains("registered_send_buffers"));
        assert!(matches!(
            classify_send_buffers(errno(libc::EFAULT), &config),
            SetupError::Other(_)
        ));
    }
}
