use super::*;

#[test]
fn the_defaults_are_the_tables_and_pass_validation() {
    let c = Config::default();
    c.validate().unwrap();
    for s in SETTINGS {
        assert_eq!((s.get)(&c), s.default_value(), "{}", s.key);
    }
    // The driver's own defaults and the protocol crate's agree with the table.
    assert_eq!(c.ring, RingConfig::default());
    let proto = Limits::default();
    let l = c.limits;
    assert_eq!(
        (l.max_params_bytes, l.max_params_pairs, l.max_name_len),
        (
            proto.max_params_bytes,
            proto.max_params_pairs,
            proto.max_name_len
        )
    );
    assert_eq!(
        (l.max_value_len, l.max_requests_per_conn),
        (proto.max_value_len, proto.max_requests_per_conn)
    );
    // The advertised values are the real limits by default.
    assert_eq!(l.advertised_max_conns as usize, c.max_conns_per_worker);
    assert_eq!(l.advertised_max_reqs as usize, l.max_requests_per_conn);
    assert_eq!(Timeouts::default(), c.timeouts);
}

#[test]
fn keys_and_flags_are_unique_and_follows_name_a_key() {
    for (i, s) in SETTINGS.iter().enumerate() {
        assert!(s.key.contains('.') && !s.flag.is_empty(), "{}", s.key);
        for t in &SETTINGS[i + 1..] {
            assert_ne!(s.key, t.key);
            assert_ne!(s.flag, t.flag);
        }
        if let Some(leader) = s.follows {
            assert!(find(leader).is_some(), "{} follows {leader}", s.key);
        }
        assert_eq!(s.optional, s.example.is_some(), "{}: example", s.key);
        if let Some(example) = s.example {
            s.parse(example).unwrap();
        }
        for rule in RULES {
            for key in rule.keys {
                assert!(find(key).is_some(), "rule names {key}");
            }
        }
    }
}

/// The ends of every integer range fit the field (so `set` never fails after `check`), and one
/// past each end is refused naming the key, the value and the range.
#[test]
fn every_integer_range_fits_its_field_and_its_ends_are_enforced() {
    for s in SETTINGS {
        let (min, max) = match s.accepts {
            Accepts::Int { min, max } | Accepts::PowerOfTwo { min, max } => (min, max),
            Accepts::FileMode => (0, 0o777),
            _ => continue,
        };
        for v in [min, max] {
            let mut b = Config::builder();
            b.set(s.key, Value::Int(v))
                .unwrap_or_else(|e| panic!("{}: {e}", s.key));
            assert_eq!(b.config.get(s.key), Some(Value::Int(v)));
        }
        for v in [min - 1, max + 1] {
            let e = Config::builder().set(s.key, Value::Int(v)).unwrap_err();
            assert!(
                matches!(&e, ConfigError::OutOfRange { key, value: Value::Int(x), .. }
                    if *key == s.key && *x == v),
                "{e:?}"
            );
        }
    }
}

#[test]
fn the_typed_setters_and_set_by_key_agree() {
    let typed = Config::builder()
        .workers(3)
        .sq_entries(256)
        .cq_entries(512)
        .idle_timeout(Duration::from_millis(1500))
        .unix_mode(Some(0o660))
        .protocol(Protocol::Http1)
        .build()
        .unwrap();
    let mut b = Config::builder();
    for (key, v) in [
        ("server.workers", Value::Int(3)),
        ("ring.sq_entries", Value::Int(256)),
        ("ring.cq_entries", Value::Int(512)),
        ("timeouts.idle", Value::Seconds(1.5)),
        ("server.unix_mode", Value::Int(0o660)),
        ("server.protocol", Value::Text("http1".into())),
    ] {
        b.set(key, v).unwrap();
    }
    assert_eq!(b.build().unwrap(), typed);
    assert_eq!(typed.get("timeouts.idle"), Some(Value::Seconds(1.5)));
    assert_eq!(typed.get("ring.nope"), None);
}

#[test]
fn advertised_limits_follow_until_set() {
    let c = Config::builder()
        .max_conns_per_worker(100)
        .max_requests_per_conn(8)
        .build()
        .unwrap();
    assert_eq!(c.limits.advertised_max_conns, 100);
    assert_eq!(c.limits.advertised_max_reqs, 8);
    let mut b = Config::builder();
    b.set("limits.advertised_max_reqs", Value::Int(15)).unwrap();
    b.set("limits.max_requests_per_conn", Value::Int(16))
        .unwrap();
    let c = b.build().unwrap();
    assert_eq!(
        (c.limits.max_requests_per_conn, c.limits.advertised_max_reqs),
        (16, 15)
    );
}

#[test]
fn set_refuses_unknown_keys_and_wrong_types() {
    let mut b = Config::builder();
    let e = b.set("ring.sq_entrys", Value::Int(8)).unwrap_err();
    assert_eq!(
        e,
        ConfigError::UnknownKey {
            key: "ring.sq_entrys".into(),
            nearest: Some("ring.sq_entries")
        }
    );
    assert_eq!(nearest_key("timeouts.idle_timeout"), Some("timeouts.idle"));
    assert_eq!(nearest_key("serverr"), Some("server"));
    assert_eq!(nearest_key("completely.different"), None);
    let e = b
        .set("ring.sq_entries", Value::Text("many".into()))
        .unwrap_err();
    assert!(matches!(
        e,
        ConfigError::WrongType {
            key: "ring.sq_entries",
            ..
        }
    ));
    let e = b.set("server.workers", Value::None).unwrap_err();
    assert!(matches!(e, ConfigError::WrongType { .. }), "not optional");
    b.set("ring.sqpoll_cpu", Value::None).unwrap();
}

#[test]
fn flag_text_parses_by_type() {
    let s = |k| find(k).unwrap();
    assert_eq!(s("ring.sqpoll").parse("true"), Ok(Value::Bool(true)));
    assert_eq!(s("ring.sqpoll_cpu").parse("none"), Ok(Value::None));
    assert_eq!(s("server.unix_mode").parse("0o640"), Ok(Value::Int(0o640)));
    assert_eq!(s("timeouts.idle").parse("2.5"), Ok(Value::Seconds(2.5)));
    assert!(matches!(
        s("server.workers").parse("none"),
        Err(ConfigError::Invalid { .. })
    ));
    assert!(matches!(
        s("ring.sq_entries").parse("1000"),
        Err(ConfigError::OutOfRange { .. })
    ));
    // An address that does not parse says why (here: no port).
    let e = s("server.listen").parse("nowhere").unwrap_err();
    assert!(
        matches!(
            &e,
            ConfigError::Invalid {
                key: "server.listen",
                why,
                ..
            } if why == "no port"
        ),
        "{e}"
    );
}

/// Each variant's message names the key, the value and what is accepted (and the flag).
#[test]
fn every_error_names_key_value_and_what_is_accepted() {
    let cases = [
        (
            Config::builder().sq_entries(1000).build().unwrap_err(),
            "ring.sq_entries = 1000: must be a power of two between 1 and 32768 (flag --ring-entries)",
        ),
        (
            Config::builder()
                .accept_retry(Duration::ZERO)
                .build()
                .unwrap_err(),
            "server.accept_retry = 0: must be more than 0 seconds (retrying a failed accept at once spins at full CPU) (flag --accept-retry)",
        ),
        (
            Config::builder()
                .unix_mode(Some(0o1000))
                .build()
                .unwrap_err(),
            "server.unix_mode = 1000: must be an octal file mode between 0 and 777 (e.g. \"660\") (flag --unix-mode)",
        ),
        (
            find("timeouts.body").unwrap().parse("x").unwrap_err(),
            "timeouts.body = \"x\": not a number of seconds; must be a number of seconds between 0 and 31536000 (0 turns it off) (flag --body-timeout)",
        ),
        (
            Config::builder()
                .set("server.pin_workers", Value::Int(1))
                .unwrap_err(),
            "server.pin_workers = 1: expected true or false (flag --pin-workers)",
        ),
        (
            Config::builder()
                .set("ring.sq_entrys", Value::Int(1))
                .unwrap_err(),
            "unknown key \"ring.sq_entrys\"; did you mean \"ring.sq_entries\"?",
        ),
        (
            Config::builder().sqpoll(true).build().unwrap_err(),
            "ring.sqpoll = true cannot be combined with ring.coop_taskrun = true: the kernel refuses SQPOLL together with DEFER_TASKRUN or COOP_TASKRUN; set ring.defer_taskrun = false and ring.coop_taskrun = false (flags --sqpoll, --coop-taskrun)",
        ),
        (
            Config::builder()
                .sqpoll(true)
                .defer_taskrun(true)
                .build()
                .unwrap_err(),
            "ring.sqpoll = true cannot be combined with ring.defer_taskrun = true or ring.coop_taskrun = true: the kernel refuses SQPOLL together with DEFER_TASKRUN or COOP_TASKRUN; set ring.defer_taskrun = false and ring.coop_taskrun = false (flags --sqpoll, --defer-taskrun, --coop-taskrun)",
        ),
        (
            Config::builder().sqpoll_cpu(Some(1)).build().unwrap_err(),
            "ring.sqpoll_cpu = 1 requires ring.sqpoll = true (flags --sqpoll-cpu, --sqpoll)",
        ),
        (
            Config::builder()
                .sq_entries(4096)
                .cq_entries(1024)
                .build()
                .unwrap_err(),
            "ring.cq_entries = 1024 must be at least ring.sq_entries = 4096 (flags --cq-entries, --ring-entries)",
        ),
        (
            find("server.listen")
                .unwrap()
                .parse("127.0.0.1:70000")
                .unwrap_err(),
            "server.listen = \"127.0.0.1:70000\": port 70000 is out of range (0 to 65535); must be host:port or unix:/path (flag --listen)",
        ),
        (
            Config::builder()
                .set("admin.listen", Value::Text(":9100".to_owned()))
                .unwrap_err(),
            "admin.listen = \":9100\": no host before the port (0.0.0.0:PORT is every IPv4 address, [::]:PORT every IPv6 one); must be host:port or unix:/path (flag --admin-listen)",
        ),
    ];
    for (e, expected) in cases {
        assert_eq!(e.to_string(), expected);
    }
}

#[test]
fn the_driver_checks_ring_settings_with_the_same_rules() {
    let sqpoll = RingConfig {
        sqpoll: true,
        ..RingConfig::default()
    };
    let from_driver = check_ring(&sqpoll).unwrap_err();
    let from_builder = Config::builder().ring(sqpoll).build().unwrap_err();
    assert_eq!(from_driver, from_builder);
    assert!(matches!(from_driver, ConfigError::Conflict { .. }));
    check_ring(&RingConfig::default()).unwrap();
}
