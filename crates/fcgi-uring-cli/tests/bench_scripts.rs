//! Every script of bench/ and tuning/ answers `--help` with its usage and exit status 0, as
//! README.md says, without building or running anything (the libraries they source,
//! `*-lib.sh` and `benchlib.py`, are not scripts).

mod common;

use common::{HANG_GUARD, KillOnDrop, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The scripts of `dir` (relative to the repository root).
fn scripts(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .expect("read the directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let script = name.ends_with(".sh") || name.ends_with(".py");
            script && !name.ends_with("-lib.sh") && name != "benchlib.py"
        })
        .collect();
    found.sort();
    found
}

#[test]
fn every_bench_and_tuning_script_answers_help() {
    let all: Vec<PathBuf> = ["bench", "tuning"]
        .iter()
        .flat_map(|d| scripts(d))
        .collect();
    assert!(
        all.iter().any(|p| p.ends_with("bench/restart-losses.sh")),
        "{all:?}"
    );
    for script in all {
        let interpreter = match script.extension().and_then(|e| e.to_str()) {
            Some("py") => "python3",
            _ => "bash",
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let out_path = dir.path().join("out");
        let mut child = KillOnDrop(
            Command::new(interpreter)
                .arg(&script)
                .arg("--help")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out_path).expect("out"))
                .stderr(Stdio::null())
                .spawn()
                .expect("run the script"),
        );
        // A script that takes --help for an argument goes on to build or load: a hang here.
        let mut status = None;
        wait_for(
            &format!("{} --help to exit", script.display()),
            HANG_GUARD,
            || {
                status = child.0.try_wait().expect("try_wait");
                status.is_some()
            },
        );
        let help = std::fs::read_to_string(&out_path).unwrap_or_default();
        assert!(
            status.expect("exited").success(),
            "{}: {help}",
            script.display()
        );
        assert!(
            help.to_lowercase().contains("usage"),
            "{} --help printed no usage: {help}",
            script.display()
        );
    }
}

/// `benchlib.round_ratios` pairs each round of a case with the reference run in the same round,
/// and `ratio_summary` gives their median, range and the rounds that met a limit (the per-round
/// tables of `against-floor.py` and `behind-nginx.py`).
#[test]
fn per_round_ratios_pair_each_round_with_its_reference() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let code = "import benchlib as b\n\
        case = [{'cpu': 11.0}, {'cpu': 22.0}, {'cpu': 46.0}]\n\
        ref = [{'cpu': 10.0}, {'cpu': 20.0}, {'cpu': 40.0}]\n\
        r = b.round_ratios(case, ref, 'cpu')\n\
        print(b.ratio_summary(r, 1.1))\n\
        print(b.ratio_summary(r, 1.15, at_most=False))\n\
        print(b.ratio_summary(b.round_ratios(case, [{'cpu': 0.0}] * 3, 'cpu')))\n";
    let out = Command::new("python3")
        .current_dir(&bench)
        .args(["-c", code])
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1.10x (1.10-1.15x), 2/3 <= 1.1x\n1.10x (1.10-1.15x), 1/3 >= 1.15x\n-\n"
    );
}

/// `behind-nginx.py --keep-counts DIR` keeps callgrind's dumps, so it is refused without
/// `--callgrind` (before anything is built or started).
#[test]
fn behind_nginx_refuses_keep_counts_without_callgrind() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/behind-nginx.py");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--keep-counts")
        .arg(dir.path().join("counts"))
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("--keep-counts: needs --callgrind"),
        "{stderr}"
    );
    assert!(!dir.path().join("counts").exists(), "made the directory");
}
