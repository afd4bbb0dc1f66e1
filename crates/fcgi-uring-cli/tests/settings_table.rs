//! Everything derived from the table of settings (`fcgi_uring::config::SETTINGS`) agrees with
//! it: the example file, the reference page, the file's section structs, the flags of `serve`
//! and the tuner's knobs.

use fcgi_loadtest::tune::knobs::{KNOBS, Value as KnobValue};
use fcgi_uring::Config;
use fcgi_uring::config::{RULES, SETTINGS, Setting, Value, find};
use fcgi_uring_cli::config_file::{self, ConfigFile, example_toml, flag_value, reference_markdown};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");

fn repo_file(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn the_example_file_is_the_tables() {
    assert!(
        repo_file("fcgi-uring.example.toml") == config_file::example(),
        "fcgi-uring.example.toml is out of date: \
         cargo run -p fcgi-uring-cli -- config --example > fcgi-uring.example.toml"
    );
}

#[test]
fn the_reference_page_is_the_tables() {
    assert!(
        repo_file("docs/configuration.md") == config_file::reference(),
        "docs/configuration.md is out of date: \
         cargo run -p fcgi-uring-cli -- config --reference > docs/configuration.md"
    );
    assert!(config_file::reference().contains("[limits.md](limits.md)"));
}

/// The checks above compare real content: a table with one default, one range or one doc
/// changed no longer matches the files.
#[test]
fn a_changed_table_entry_fails_the_checks() {
    let example = repo_file("fcgi-uring.example.toml");
    let reference = repo_file("docs/configuration.md");
    type Change = fn(&mut Setting);
    let changes: [(&str, Change); 3] = [
        ("ring.sq_entries", |s| s.default = || Value::Int(2048)),
        ("server.workers", |s| {
            s.accepts = fcgi_uring::config::Accepts::Int { min: 0, max: 64 }
        }),
        ("timeouts.linger", |s| s.doc = "Something else."),
    ];
    for (key, change) in changes {
        let mut table: Vec<Setting> = SETTINGS.to_vec();
        let entry = table.iter_mut().find(|s| s.key == key).unwrap();
        change(entry);
        assert_ne!(example_toml(&table), example, "{key}");
        assert_ne!(reference_markdown(&table, RULES), reference, "{key}");
    }
    let mut table: Vec<Setting> = SETTINGS.to_vec();
    table[0].default = || Value::Text("http1".into());
    assert!(example_toml(&table).contains("protocol = \"http1\""));
}

/// The section structs of `ConfigFile` hold exactly the table's keys, each with the TOML
/// type the table gives it.
#[test]
fn the_file_structs_hold_the_tables_keys_with_their_types() {
    let every_key_set = Config::builder()
        .unix_mode(Some(0o600))
        .sqpoll(true)
        .defer_taskrun(false)
        .coop_taskrun(false)
        .sqpoll_cpu(Some(0))
        .admin_listen(Some("127.0.0.1:9100".parse().unwrap()))
        .ping_path(Some("/ping".to_owned()))
        .access_log_path(Some("-".to_owned()))
        .allowed_peers(Some("10.0.0.5, 10.1.0.0/16".parse().unwrap()))
        // Apart from the limits they follow, or they are left out.
        .advertised_max_conns(9)
        .advertised_max_reqs(7)
        .build()
        .unwrap();
    let text = config_file::to_toml(&every_key_set);
    let file = ConfigFile::parse(&text, "all.toml").unwrap();
    let table = toml::Table::try_from(&file).unwrap();
    let mut seen = Vec::new();
    for (section, keys) in &table {
        for (name, v) in keys.as_table().unwrap() {
            let key = format!("{section}.{name}");
            let s = find(&key).unwrap_or_else(|| panic!("{key} is not in the table"));
            let toml_type = match v {
                toml::Value::Integer(_) => "integer",
                toml::Value::Boolean(_) => "boolean",
                toml::Value::Float(_) => "seconds",
                toml::Value::String(_) => "string",
                other => panic!("{key}: {other:?}"),
            };
            assert_eq!(toml_type, s.accepts.type_name(), "{key}");
            seen.push(key);
        }
    }
    let all: Vec<String> = SETTINGS.iter().map(|s| s.key.to_owned()).collect();
    seen.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(seen, expected);
    // And the file applies to the same configuration.
    let mut b = Config::builder();
    file.apply(&mut b).unwrap();
    assert_eq!(b.build().unwrap(), every_key_set);
}

/// Every setting has its flag, with what it accepts and its default in the help.
#[test]
fn serve_has_a_flag_per_setting_with_its_default_in_the_help() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for s in SETTINGS {
        let default = flag_value(s, &s.default_value());
        assert!(help.contains(&format!("--{} <", s.flag)), "--{}", s.flag);
        assert!(
            help.contains(&format!("[default: {default}] [file: {}]", s.key)),
            "{}: {help}",
            s.key
        );
        assert!(help.contains(&s.accepts.summary()), "{}", s.key);
    }
}

/// Each flag given its default changes nothing: every flag sets its own key.
#[test]
fn every_flag_given_its_default_prints_the_default_config() {
    let print = |args: &[String]| {
        let out = Command::new(BIN)
            .arg("serve")
            .args(args)
            .arg("--print-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut args = Vec::new();
    for s in SETTINGS {
        args.push(format!("--{}", s.flag));
        args.push(flag_value(s, &s.default_value()));
    }
    // `--admin-listen none` (the table's default) turns off the listener `serve` adds.
    let no_admin = config_file::to_toml(&Config::default());
    assert!(
        no_admin.contains("[admin]\nlisten = \"none\"\n"),
        "{no_admin}"
    );
    assert_eq!(print(&args), no_admin);
    assert_eq!(
        print(&[]),
        no_admin.replace(
            "[admin]\nlisten = \"none\"\n",
            "[admin]\nlisten = \"127.0.0.1:9100\"\n"
        ),
        "serve's defaults are the table's, and its admin listener"
    );
}

/// The tuner sweeps only keys of the table, and only values the table accepts.
#[test]
fn every_tuner_knob_is_a_table_key_and_its_values_are_accepted() {
    for knob in KNOBS {
        let key = format!("{}.{}", knob.section, knob.key);
        let s = find(&key).unwrap_or_else(|| panic!("knob {key} is not a setting"));
        for v in knob.values.iter().chain(knob.quick) {
            let value = match *v {
                KnobValue::Bool(b) => Value::Bool(b),
                KnobValue::Int(i) => Value::Int(i),
                KnobValue::Str(t) => Value::Text(t.to_owned()),
            };
            s.check(&value)
                .unwrap_or_else(|e| panic!("knob {key} = {v}: {e}"));
        }
    }
}
