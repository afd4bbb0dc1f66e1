//! tuning/pgo-build.sh, the profile-guided build a user runs: with a short training it builds
//! an optimized `fcgi-uring` from a profile whose counts show the requests ran through the
//! instrumented server (its params decoder counted), and the binary it prints serves the demo
//! app. A training path the binary answers with errors, a missing llvm-profdata or incomplete
//! arguments stop it with a message that says what went wrong.

mod common;

use common::proxy::{find_binary, free_port};
use common::{HANG_GUARD, KillOnDrop, wait_for};
use fcgi_client::RequestSpec;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

fn script() -> PathBuf {
    root().join("tuning/pgo-build.sh")
}

/// The llvm-profdata of rustc's LLVM major version, where the script looks first (Debian's
/// llvm-N), or `None` outside CI.
fn profdata() -> Option<PathBuf> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let major = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .expect("rustc -vV names its LLVM version")
        .to_owned();
    find_binary(
        &format!("llvm-profdata (apt-get install llvm-{major})"),
        &[
            &format!("/usr/lib/llvm-{major}/bin/llvm-profdata"),
            &format!("/usr/bin/llvm-profdata-{major}"),
        ],
    )
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(script());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run tuning/pgo-build.sh")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_short_training_builds_an_optimized_server_that_serves() {
    let Some(profdata) = profdata() else {
        return;
    };
    // Under the workspace's target directory, kept between runs: a second run reuses the
    // instrumented build and rebuilds only with the new profile. (CI runs this test once: its
    // training covers both IO backends, so the suite's epoll pass skips it.)
    let pgo_dir = root().join("target/pgo-test");
    let port = free_port().to_string();
    // The suite's own build of the load generator (a debug one is fast enough for a training
    // of a second per load); the script builds a release one otherwise.
    let debug_loadtest = root().join("target/debug/fcgi-loadtest");
    let mut envs = vec![
        ("TRAIN_SECONDS", "1"),
        ("PGO_DIR", pgo_dir.to_str().unwrap()),
        ("PORT", port.as_str()),
        ("LLVM_PROFDATA", profdata.to_str().unwrap()),
    ];
    if debug_loadtest.exists() {
        envs.push(("LOADTEST", debug_loadtest.to_str().unwrap()));
    }
    let out = run(&[], &envs);
    assert!(out.status.success(), "the script failed:\n{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let binary = PathBuf::from(stdout.lines().last().expect("the script prints the binary"));
    assert_eq!(binary, pgo_dir.join("release/fcgi-uring"), "{stdout}");
    assert!(binary.is_file(), "{} is not a file", binary.display());
    // Trained on at least one IO backend, and the optimized build used the profile it names.
    let log = stderr(&out);
    assert!(log.contains("training on"), "{log}");
    let profile = log
        .lines()
        .find_map(|l| l.strip_prefix("pgo-build.sh: the optimized build with "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the script names the profile it builds with: {log}"));
    assert!(
        profile.starts_with(&pgo_dir) && profile.is_file(),
        "{}",
        profile.display()
    );
    // The requests ran through the instrumented server: its params decoder has counts.
    let show = Command::new(&profdata)
        .args(["show", "--counts", "--function=NvDecoder4feed"])
        .arg(&profile)
        .output()
        .expect("llvm-profdata show");
    let shown = String::from_utf8_lossy(&show.stdout).into_owned();
    let counts: Vec<u64> = shown
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Block counts: "))
        .flat_map(|list| {
            list.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    assert!(
        counts.iter().any(|&n| n > 1000),
        "the params decoder ran too few times in the training: {shown}"
    );

    // The optimized binary serves the demo app.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _server = KillOnDrop(
        Command::new(&binary)
            .args(["serve", "--listen", &addr, "--workers", "1"])
            .args(["--admin-listen", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the optimized server"),
    );
    let addr = addr.parse().unwrap();
    wait_for("the optimized server to listen", HANG_GUARD, || {
        fcgi_client::Client::connect(&addr).is_ok()
    });
    let mut client = fcgi_client::Client::connect(&addr).expect("connect");
    let r = client
        .request(&RequestSpec::get("/hello"))
        .expect("GET /hello");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    let mut client = fcgi_client::Client::connect(&addr).expect("connect");
    let mut post = RequestSpec::get("/echo");
    post.method = "POST".into();
    post.body = vec![7u8; 100_000];
    let r = client.request(&post).expect("POST /echo");
    assert_eq!(r.status, 200);
    assert!(r.body == post.body, "the body echoed intact");

    // A training path the binary does not serve (404) stops the build with the load's report,
    // rather than optimizing for error pages (the instrumented build is reused: quick).
    envs.push(("GETS", "/no-such-route"));
    let out = run(&[], &envs);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("the training load failed") && log.contains("status"),
        "{log}"
    );
    assert!(!log.contains("the optimized build with"), "{log}");
}

#[test]
fn without_llvm_profdata_it_says_what_to_install_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[],
        &[
            ("LLVM_PROFDATA", "/nonexistent/llvm-profdata"),
            ("PGO_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("no llvm-profdata for LLVM")
            && log.contains("/nonexistent/llvm-profdata is not an executable")
            && log.contains("apt-get install llvm-"),
        "{log}"
    );
    assert!(
        !dir.path().join("gen").exists(),
        "nothing was built: {:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn incomplete_arguments_are_refused() {
    let out = run(&["--package", "my-app", "--bin", "my-app"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("give the binary's arguments after --"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown argument --bogus"));
}
