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
