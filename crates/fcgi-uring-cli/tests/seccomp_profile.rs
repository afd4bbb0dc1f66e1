//! The seccomp rule docs/deploy/containers.md tells container users to add to their runtime's
//! default profile: it parses, allows exactly the three io_uring syscalls, and the page's `jq`
//! command merges it into a profile without losing that profile's own rules.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];
/// The merge the page shows (`jq --slurpfile rule RULE FILTER BASE`).
const JQ_FILTER: &str = ".syscalls += $rule";

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy")
}

fn rule_path() -> PathBuf {
    docs().join("seccomp-io_uring.json")
}

/// Whether `profile` has an SCMP_ACT_ALLOW rule naming `syscall`.
fn allows(profile: &Value, syscall: &str) -> bool {
    profile["syscalls"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|s| s == syscall))
        })
    })
}

#[test]
fn the_rule_allows_exactly_the_three_io_uring_syscalls() {
    let text = std::fs::read_to_string(rule_path()).unwrap();
    let rule: Value = serde_json::from_str(&text).expect("the rule is JSON");
    assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
    let names: Vec<&str> = rule["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("a syscall name"))
        .collect();
    assert_eq!(names, IO_URING);
    assert!(rule.get("args").is_none(), "no argument filter: {rule}");
}

#[test]
fn the_pages_jq_command_merges_the_rule_into_a_default_profile() {
    let page = std::fs::read_to_string(docs().join("containers.md")).unwrap();
    assert!(
        page.contains(&format!(
            "jq --slurpfile rule seccomp-io_uring.json '{JQ_FILTER}'"
        )),
        "containers.md shows the merge this test runs"
    );
    let Some(jq) = common::proxy::find_binary("jq", &["/usr/bin/jq"]) else {
        return;
    };
    // A stand-in for a runtime's default profile: its own rules must survive the merge.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("default.json");
    std::fs::write(
        &base,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
            "syscalls": [{"names": ["read", "write", "epoll_wait"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let out = Command::new(jq)
        .arg("--slurpfile")
        .arg("rule")
        .arg(rule_path())
        .arg(JQ_FILTER)
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Value = serde_json::from_slice(&out.stdout).expect("the merged profile is JSON");
    assert_eq!(merged["defaultAction"], "SCMP_ACT_ERRNO");
    for syscall in IO_URING.iter().chain(&["read", "write", "epoll_wait"]) {
        assert!(allows(&merged, syscall), "{syscall} allowed: {merged}");
    }
    assert!(!allows(&merged, "ptrace"), "{merged}");
}
