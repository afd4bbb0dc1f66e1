//! Ring setup: configuration checks, kernel feature detection, the setup-flag fallback chain, and
//! the errors that name their cause and fix.

use std::fmt;
use std::io;

use io_uring::{IoUring, Probe, opcode};

use super::{Features, RingConfig, SetupError};

/// Largest submission queue the kernel accepts (IORING_MAX_ENTRIES).
const MAX_SQ_ENTRIES: u32 = 32768;
/// Largest completion queue the kernel accepts (IORING_MAX_CQ_ENTRIES).
const MAX_CQ_ENTRIES: u32 = 2 * MAX_SQ_ENTRIES;
/// Largest provided-buffer ring the kernel accepts.
const MAX_RECV_BUFFERS: u16 = 32768;

/// Kernel versions that brought the features the ring relies on.
const MULTISHOT_ACCEPT_SINCE: (u32, u32) = (5, 19);
const BUF_RING_SINCE: (u32, u32) = (5, 19);
const MULTISHOT_RECV_SINCE: (u32, u32) = (6, 0);

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
        ];
        for (_, name) in flags.iter().filter(|(on, _)| *on) {
            write!(f, ", {name}")?;
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
            SetupError::Unsupported { feature, needs } => write!(
                f,
                "io_uring {feature} is not available on this kernel; it needs {needs}; fix: \
                 upgrade the kernel"
            ),
            SetupError::Config(msg) => write!(f, "invalid io_uring configuration: {msg}"),
            SetupError::Other(err) => write!(f, "io_uring setup failed: {err}"),
        }
    }
}

/// Checks sizes before anything reaches the kernel.
pub(super) fn validate(config: &RingConfig) -> Result<(), SetupError> {
    let bad = |msg: String| Err(SetupError::Config(msg));
    let sq = config.sq_entries;
    let cq = config.cq_entries;
    if !sq.is_power_of_two() || sq > MAX_SQ_ENTRIES {
        return bad(format!(
            "sq_entries {sq} must be a power of two in 1..={MAX_SQ_ENTRIES}"
        ));
    }
    if !cq.is_power_of_two() || cq > MAX_CQ_ENTRIES {
        return bad(format!(
            "cq_entries {cq} must be a power of two in 1..={MAX_CQ_ENTRIES}"
        ));
    }
    if cq < sq {
        return bad(format!("cq_entries {cq} must be at least sq_entries {sq}"));
    }
    let n = config.recv_buffers;
    if !n.is_power_of_two() || n > MAX_RECV_BUFFERS {
        return bad(format!(
            "recv_buffers {n} must be a power of two in 1..={MAX_RECV_BUFFERS}"
        ));
    }
    if config.recv_buffer_size == 0 {
        return bad("recv_buffer_size must be greater than 0".to_string());
    }
    Ok(())
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
        Some(libc::ENOSYS) => SetupError::Unsupported {
            feature: "io_uring",
            needs: "Linux >= 6.0 built with CONFIG_IO_URING (ENOSYS may also come from a \
                    seccomp filter)",
        },
        _ => SetupError::Other(err),
    }
}

/// Which setup flags a ring was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetupFlags {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub submit_all: bool,
}

/// The setup attempts, best first: each later one is tried only when the kernel refuses the
/// previous one with EINVAL (unknown flag).
pub(super) fn attempts(defer_taskrun: bool) -> Vec<SetupFlags> {
    let flags = |single_issuer, defer_taskrun, coop_taskrun, submit_all| SetupFlags {
        single_issuer,
        defer_taskrun,
        coop_taskrun,
        submit_all,
    };
    let mut list = Vec::with_capacity(4);
    if defer_taskrun {
        list.push(flags(true, true, false, true));
    }
    list.push(flags(true, false, true, true));
    list.push(flags(false, false, true, true));
    list.push(flags(false, false, false, false));
    list
}

/// Creates the ring with the best setup flags the kernel accepts.
pub(super) fn build_ring(config: &RingConfig) -> Result<(IoUring, SetupFlags), SetupError> {
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for flags in attempts(config.defer_taskrun) {
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
        if flags.submit_all {
            builder.setup_submit_all();
        }
        match builder.build(config.sq_entries) {
            Ok(ring) => return Ok((ring, flags)),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => last = err,
            Err(err) => return Err(classify(err, io_uring_disabled_sysctl())),
        }
    }
    Err(SetupError::Other(last))
}

/// Checks that the kernel knows every opcode the ring submits.
pub(super) fn check_opcodes(ring: &IoUring) -> Result<(), SetupError> {
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
            SetupError::Unsupported {
                feature: "io_uring",
                ..
            }
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

        let config = SetupError::Config("sq_entries 3 must be a power of two".into());
        assert_eq!(
            config.to_string(),
            "invalid io_uring configuration: sq_entries 3 must be a power of two"
        );
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
        };
        assert!(validate(&edge).is_ok());
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
        };
        assert_eq!(
            features.to_string(),
            "kernel 6.18, multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun"
        );
        let plain = Features {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
            ..features
        };
        assert_eq!(
            plain.to_string(),
            "kernel 6.18, multishot-accept, multishot-recv, buf-ring, coop-taskrun"
        );
    }

    #[test]
    fn fallback_order() {
        let with_defer = attempts(true);
        assert!(with_defer[0].defer_taskrun && with_defer[0].single_issuer);
        assert!(with_defer[0].submit_all);
        assert!(with_defer[1].coop_taskrun && !with_defer[1].defer_taskrun);
        assert_eq!(
            with_defer.last(),
            Some(&SetupFlags {
                single_issuer: false,
                defer_taskrun: false,
                coop_taskrun: false,
                submit_all: false
            })
        );
        assert!(attempts(false).iter().all(|f| !f.defer_taskrun));
    }
}
