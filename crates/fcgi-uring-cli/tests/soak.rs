//! The CI-sized soak: `bench/soak.sh` for 30 s (10,000 idle connections plus load from
//! `fcgi-loadtest` with 64 connections), loopback only. It fails on any load error, any idle
//! connection lost, or RSS growth past its bound; the script prints its figures.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn soak_30_seconds_with_10000_idle_connections() {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_fcgi-uring"));
    let loadtest = server.with_file_name("fcgi-loadtest");
    if !loadtest.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-p", "fcgi-loadtest", "--bin", "fcgi-loadtest"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(built.success(), "cannot build fcgi-loadtest");
    }
    let port = common::proxy::free_port();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/soak.sh"))
        .env("SOAK_SECONDS", "30")
        .env("SOAK_PORT", port.to_string())
        .env("FCGI_URING", &server)
        .env("FCGI_LOADTEST", &loadtest)
        .output()
        .expect("run bench/soak.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "soak failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
