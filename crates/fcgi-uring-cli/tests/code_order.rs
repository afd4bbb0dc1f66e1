//! The release build of `fcgi-uring` lays out the functions of `hot-functions.txt` first, one
//! after the other and in the list's order (build.rs passes the list to the linker), and the
//! list names functions this build has: a list gone stale (a toolchain update changes the
//! names' hashes) fails here, with the command that makes it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Address and size of each function of `binary`, by linker name.
fn functions(binary: &Path) -> HashMap<String, (u64, u64)> {
    let out = Command::new("nm")
        .args(["--defined-only", "--print-size"])
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [addr, size, kind, name] = f[..] else {
                return None;
            };
            let code = matches!(kind, "t" | "T" | "w" | "W");
            let addr = u64::from_str_radix(addr, 16).ok()?;
            let size = u64::from_str_radix(size, 16).ok()?;
            code.then(|| (name.to_owned(), (addr, size)))
        })
        .collect()
}

#[test]
fn the_release_binary_lays_out_the_hot_functions_first_and_in_order() {
    let root = root();
    let list_path = root.join("crates/fcgi-uring-cli/hot-functions.txt");
    let list: Vec<String> = std::fs::read_to_string(&list_path)
        .expect("read hot-functions.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(list.len() >= 40, "{} names only", list.len());
    // Under the workspace's target directory, kept between runs (the suite runs twice in CI).
    let target = root.join("target/code-order-test");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "fcgi-uring-cli",
            "--bin",
            "fcgi-uring",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("FCGI_URING_CODE_ORDER")
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build --release");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the release build failed:\n{log}");
    assert!(
        !log.contains("does not take --symbol-ordering-file"),
        "this toolchain's linker is not LLD:\n{log}"
    );
    let symbols = functions(&target.join("release/fcgi-uring"));
    let found: Vec<(u64, u64)> = list
        .iter()
        .filter_map(|n| symbols.get(n).copied())
        .collect();
    assert!(
        found.len() * 10 >= list.len() * 9,
        "only {} of the {} functions of hot-functions.txt are in the binary: make the list again \
         with tuning/hot-functions.sh",
        found.len(),
        list.len()
    );
    // In the list's order, each right after the one before (up to its alignment), so together.
    for pair in found.windows(2) {
        let ((a, a_size), (b, _)) = (pair[0], pair[1]);
        assert!(
            b >= a + a_size && b <= a + a_size + 64,
            "{b:#x} does not follow {a:#x}+{a_size:#x}"
        );
    }
}
