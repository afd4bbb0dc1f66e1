//! Lays out the release binary's hot code together. `hot-functions.txt` lists, by their linker
//! names, the functions every request runs (made from callgrind profiles by
//! `tuning/hot-functions.sh`); the linker places them first and in that order, so that a request
//! runs code from about half as many pages as the default layout spreads it over (see
//! docs/performance.md, "The code a request runs").
//!
//! Only release builds of the `fcgi-uring` binary, and only where the linker takes the list
//! (`--symbol-ordering-file`: LLD, rustc's default linker for x86_64 Linux since Rust 1.90): a
//! tiny program is linked with it first, with the build's own linker settings, and a linker
//! that refuses it leaves the layout as it was. Names the list has and the binary does not (a
//! renamed function, another toolchain's symbol hashes) are skipped silently.
//! `FCGI_URING_CODE_ORDER=0` leaves the layout to the linker.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=hot-functions.txt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FCGI_URING_CODE_ORDER");
    let wanted = env::var("PROFILE").as_deref() == Ok("release")
        && env::var("FCGI_URING_CODE_ORDER").as_deref() != Ok("0");
    let (Some(manifest), Some(out)) = (env::var_os("CARGO_MANIFEST_DIR"), env::var_os("OUT_DIR"))
    else {
        return;
    };
    let list = Path::new(&manifest).join("hot-functions.txt");
    if !wanted || !list.is_file() {
        return;
    }
    let args = link_args(&list);
    if linker_takes(&args, Path::new(&out)) {
        for arg in &args {
            println!("cargo:rustc-link-arg-bin=fcgi-uring={arg}");
        }
    } else {
        println!(
            "cargo:warning=the linker does not take --symbol-ordering-file (LLD does): \
             the binary keeps the default code layout"
        );
    }
}

/// The linker arguments that order the code by `list`.
fn link_args(list: &Path) -> [String; 2] {
    [
        format!("-Wl,--symbol-ordering-file={}", list.display()),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ]
}

/// Whether a program links with `args`, with the build's target, rustflags and linker.
fn linker_takes(args: &[String], out: &Path) -> bool {
    let source = out.join("code_order_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut probe = Command::new(rustc);
    probe
        .arg(&source)
        .arg("-o")
        .arg(out.join(PathBuf::from("code_order_probe")))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(target) = env::var("TARGET") {
        probe.args(["--target", &target]);
    }
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        probe.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        probe
            .arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    for arg in args {
        probe.arg("-C").arg(format!("link-arg={arg}"));
    }
    probe.status().is_ok_and(|s| s.success())
}
