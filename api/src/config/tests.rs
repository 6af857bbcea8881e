use super::*;

fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
    if let Value::Table(t) = v {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_table() {
                keys(&path, v, out);
            } else {
                out.push(path);
            }
        }
    }
}

#[test]
fn the_example_is_valid_complete_and_equal_to_the_defaults() {
    let parsed = Config::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parsed,
        Config::default(),
        "docs/config.example.toml must show the defaults"
    );
    let (mut documented, mut known) = (Vec::new(), Vec::new());
    keys(
        "",
        &toml::from_str::<Value>(EXAMPLE).unwrap(),
        &mut documented,
    );
    keys("", &Value::try_from(Config::default()).unwrap(), &mut known);
    documented.sort();
    known.sort();
    assert_eq!(
        documented, known,
        "every key is documented in docs/config.example.toml"
    );
}

#[test]
fn no_file_means_defaults() {
    assert_eq!(
        Config::load(&Sources::default()).unwrap(),
        Config::default()
    );
    assert_eq!(Config::default().storage.path, PathBuf::from("./data"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        [api]
        listen = "not an address"
        [storage]
        max_pending_commands = 0
        colour = "blue"
        [engine.mqtt]
        listen = "0.0.0.0:8080"
        [rocksdb]
        max_open_files = 1
        [nonsense]
        x = 1
    "#;
    let err = Config::from_toml(text).unwrap_err();
    let joined = err.problems.join("\n");
    for expected in [
        "api.listen:",
        "storage.colour: unknown key",
        "storage.max_pending_commands: must be between",
        "engine.mqtt.listen: port 8080 is already used by api.listen",
        "rocksdb.max_open_files: must be between",
        "nonsense: unknown section",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    assert_eq!(err.problems.len(), 6, "{joined}");
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleetgate.toml");
    std::fs::write(
        &file,
        "[api]\nlisten = \"127.0.0.1:9000\"\nworkers = 2\n[storage]\npath = \"/from/file\"\n",
    )
    .unwrap();
    let sources = Sources {
        file: Some(file),
        env: vec![
            ("FLEETGATE_API__WORKERS".into(), "3".into()),
            ("FLEETGATE_STORAGE__PATH".into(), "/from/env".into()),
            ("FLEETGATE_CONFIG".into(), "ignored".into()),
            ("HOME".into(), "/root".into()),
        ],
        overrides: vec![
            ("storage.path".into(), "/from/cli".into()),
            ("engine.mqtt.enabled".into(), "false".into()),
        ],
    };
    let c = Config::load(&sources).unwrap();
    assert_eq!(c.api.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.api.workers, 3);
    assert_eq!(c.storage.path, PathBuf::from("/from/cli"));
    assert!(!c.engine.mqtt.enabled);
}

#[test]
fn unknown_environment_keys_and_syntax_errors_are_reported() {
    let sources = Sources {
        env: vec![
            ("FLEETGATE_STORAGE__PATHH".into(), "x".into()),
            ("FLEETGATE_API__WORKERS".into(), "many".into()),
        ],
        ..Default::default()
    };
    let err = Config::load(&sources).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.starts_with("storage.pathh: unknown key")),
        "{err}"
    );
    assert!(
        err.problems.iter().any(|p| p.starts_with("api.workers:")),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[api]\nlisten = \n").unwrap();
    let err = Config::load(&Sources {
        file: Some(file),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.problems[0].contains("syntax error (line 2)"), "{err}");
    let missing = Config::load(&Sources {
        file: Some(dir.path().join("nope.toml")),
        ..Default::default()
    });
    assert!(missing.unwrap_err().problems[0].contains("cannot read"));
}

#[test]
fn values_are_read_as_toml_when_they_can_be() {
    assert_eq!(parse_value("42"), Value::Integer(42));
    assert_eq!(parse_value("true"), Value::Boolean(true));
    assert_eq!(
        parse_value("127.0.0.1:80"),
        Value::String("127.0.0.1:80".into())
    );
    assert_eq!(parse_value("\"quoted\""), Value::String("quoted".into()));
}

#[test]
fn rate_limits_are_validated_and_unknown_keys_rejected() {
    let text = r#"
        [api.rate_limit]
        calls_per_sec = 5
        calls_burst = 0
        downlinks_per_sec = 2000000
        downlinks_burst = 1
        colour = "blue"
    "#;
    let err = Config::from_toml(text).unwrap_err();
    let joined = err.problems.join("\n");
    for expected in [
        "api.rate_limit.colour: unknown key",
        "api.rate_limit.calls_burst: must be between 1 and",
        "api.rate_limit.downlinks_per_sec: at most",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    assert_eq!(err.problems.len(), 3, "{joined}");
    let ok = Config::from_toml("[api.rate_limit]\ncalls_per_sec = 0\ncalls_burst = 0\n").unwrap();
    assert_eq!(ok.api.rate_limit.calls_per_sec, 0);
}
