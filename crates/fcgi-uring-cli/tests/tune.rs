//! `fcgi-uring tune ARGS` runs the `fcgi-loadtest` binary next to it as
//! `fcgi-loadtest tune --server <fcgi-uring> ARGS`, or says how to build it. The binary is
//! linked into temporary directories, alone and beside a fake `fcgi-loadtest` that prints its
//! arguments (the real sweep is tested in loadtest/tests/tune.rs).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `fcgi-uring` placed in `dir` (a hard link, or a copy across file systems).
fn place(dir: &Path) -> PathBuf {
    let bin = dir.join("fcgi-uring");
    let src = env!("CARGO_BIN_EXE_fcgi-uring");
    if fs::hard_link(src, &bin).is_err() {
        fs::copy(src, &bin).unwrap();
    }
    bin
}

#[test]
fn without_fcgi_loadtest_it_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = place(dir.path());
    let out = Command::new(&bin)
        .args(["tune", "--quick"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let missing = dir.path().join("fcgi-loadtest");
    assert!(
        err.contains(&format!("{} not found", missing.display())),
        "{err}"
    );
    assert!(err.contains("cargo build --release --workspace"), "{err}");
}

#[test]
fn it_runs_the_sibling_with_the_server_and_every_argument() {
    let dir = tempfile::tempdir().unwrap();
    let bin = place(dir.path());
    let fake = dir.path().join("fcgi-loadtest");
    fs::write(&fake, "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin)
        .args(["tune", "--help", "--out", "a b", "--knobs=x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let args: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let server = bin.canonicalize().unwrap().display().to_string();
    assert_eq!(
        args,
        [
            "tune",
            "--server",
            &server,
            "--help",
            "--out",
            "a b",
            "--knobs=x"
        ]
    );
}
