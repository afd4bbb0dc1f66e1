//! `fcgi-uring tune` needs nothing but the `fcgi-uring` binary, as `cargo install` gives it: a
//! copy of the binary alone in a temporary directory (with `PATH` pointing there only) shows its
//! options and runs a tiny real sweep (one workload, one knob, runs of a fraction of a second,
//! one calibration run; killed past 60 s), tuning itself. The sweep's outputs are checked in
//! depth by crates/fcgi-loadtest/tests/tune.rs; here: it succeeds, measures this very binary,
//! and the recommendation it writes is accepted by it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A copy of `fcgi-uring`, alone in `dir`.
fn place_alone(dir: &Path) -> PathBuf {
    let bin = dir.join("fcgi-uring");
    fs::copy(env!("CARGO_BIN_EXE_fcgi-uring"), &bin).unwrap();
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["fcgi-uring"]);
    bin
}

/// `bin ARGS` run in `dir` with `PATH=dir`, killed past [`LIMIT`].
fn run_alone(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    let (stdout, stderr) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("PATH", dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let (status, killed) = fcgi_loadtest::child::wait_or_kill(&mut child, LIMIT).unwrap();
    assert!(
        !killed,
        "fcgi-uring {args:?} ran past {LIMIT:?}; stderr: {}",
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    Output {
        status,
        stdout: fs::read(&stdout).unwrap(),
        stderr: fs::read(&stderr).unwrap(),
    }
}

#[test]
fn a_lone_fcgi_uring_binary_tunes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let bin = place_alone(dir.path());

    let help = run_alone(&bin, dir.path(), &["tune", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    for flag in ["--quick", "--workloads", "--knobs", "--server", "--out"] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }

    let out = dir.path().join("out");
    let args = [
        "tune",
        "--quick",
        "--workloads",
        "keepconn-tcp",
        "--knobs",
        "completions_per_turn",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--rounds",
        "1",
        "--calibration-runs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = run_alone(&bin, dir.path(), &args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "tune failed:\n{stderr}\n{stdout}");
    assert!(stdout.contains("completions_per_turn=4096"), "{stdout}");

    // Every trial ran (D, 32, 4096, D at least), without an error, against this very binary.
    let json = fs::read_to_string(out.join("results.json")).unwrap();
    let trials = json.matches("\"step\": ").count();
    assert!(trials >= 4, "{trials} trials:\n{stderr}");
    assert_eq!(json.matches("\"error\": null").count(), trials, "{stderr}");
    let itself = bin.canonicalize().unwrap();
    assert!(
        json.contains(&format!("\"server\": \"{}\"", itself.display())),
        "the server under test is not {}:\n{stdout}",
        itself.display()
    );

    // The recommendation is accepted by the binary as it is.
    let check = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(out.join("fcgi-uring.toml"))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
