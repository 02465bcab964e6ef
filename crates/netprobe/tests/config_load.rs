//! Loading valid configs: values, defaults, overrides, `${VAR}` expansion, and file-level errors.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netprobe::config::{self, Config, Defaults, DiagnosisConfig, ProbeSpec};
use probe::Kind;
use probe::icmp::IcmpEngine;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The probe config a YAML snippet deserialises to, compared without naming fields other engineers own.
fn spec<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

#[test]
fn diagnosis_section_defaults_and_overrides() {
    let cfg = config::parse("checks: []\n", "inline.yaml", &no_env).unwrap();
    assert_eq!(cfg.diagnosis, DiagnosisConfig::default());
    assert_eq!(
        cfg.diagnosis,
        DiagnosisConfig {
            enabled: true,
            min_interval: Duration::from_secs(300),
            max_concurrent: 2
        }
    );
    let cfg = config::parse(
        "diagnosis: { enabled: false, min_interval: 90s, max_concurrent: 8 }\n",
        "inline.yaml",
        &no_env,
    )
    .unwrap();
    assert_eq!(
        cfg.diagnosis,
        DiagnosisConfig {
            enabled: false,
            min_interval: Duration::from_secs(90),
            max_concurrent: 8
        }
    );
    let cfg = config::parse("diagnosis: { min_interval: 1m }\n", "inline.yaml", &no_env).unwrap();
    assert_eq!(cfg.diagnosis.min_interval, Duration::from_secs(60));
    assert!(cfg.diagnosis.enabled);
    assert_eq!(cfg.diagnosis.max_concurrent, 2);
}

#[test]
fn full_example_parses_with_values_and_defaults() {
    let cfg = config::load(&fixture("full.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(cfg.storage.path, PathBuf::from("netprobe.db"));
    assert_eq!(cfg.storage.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(cfg.defaults, Defaults::default());

    let names: Vec<&str> = cfg.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "calico-health",
            "gateway",
            "redis",
            "cluster-dns",
            "healthy-file",
            "grpc-svc"
        ]
    );
    let kinds: Vec<Kind> = cfg.checks.iter().map(|c| c.spec.kind()).collect();
    assert_eq!(
        kinds,
        [
            Kind::Http,
            Kind::Icmp,
            Kind::Tcp,
            Kind::Dns,
            Kind::Exec,
            Kind::Grpc
        ]
    );

    assert_eq!(
        cfg.checks[0].spec,
        ProbeSpec::Http(spec(r#"{ url: "http://127.0.0.1:9099/liveness" }"#))
    );
    assert_eq!(
        cfg.checks[1].spec,
        ProbeSpec::Icmp(spec(r#"{ host: "198.51.100.1", count: 3 }"#))
    );
    assert_eq!(
        cfg.checks[2].spec,
        ProbeSpec::Tcp(spec(r#"{ address: "127.0.0.1:6379" }"#))
    );
    assert_eq!(
        cfg.checks[3].spec,
        ProbeSpec::Dns(spec(
            r#"{ server: "127.0.0.1:53", query: "kubernetes.default.svc.cluster.local", record_type: A }"#
        ))
    );
    assert_eq!(
        cfg.checks[4].spec,
        ProbeSpec::Exec(spec(r#"{ command: ["test", "-f", "/tmp/healthy"] }"#))
    );
    assert_eq!(
        cfg.checks[5].spec,
        ProbeSpec::Grpc(spec(r#"{ address: "127.0.0.1:50051", service: "" }"#))
    );

    let texts: Vec<&str> = cfg.checks[0].conditions.iter().map(|c| c.text()).collect();
    assert_eq!(
        texts,
        [
            "[STATUS] == 200",
            "[RESPONSE_TIME] < 200ms",
            "[BODY].status == ok"
        ]
    );
    assert!(cfg.checks[1..].iter().all(|c| c.conditions.is_empty()));

    // The kubelet's defaults everywhere, except gateway's own period.
    for c in &cfg.checks {
        let period = if c.name == "gateway" { 5 } else { 10 };
        assert_eq!(c.period, Duration::from_secs(period), "{}", c.name);
        assert_eq!(c.timeout, Duration::from_secs(1), "{}", c.name);
        assert_eq!(c.initial_delay, Duration::ZERO, "{}", c.name);
        assert_eq!(
            (c.success_threshold, c.failure_threshold),
            (1, 3),
            "{}",
            c.name
        );
    }

    // Every spec builds a prober of its kind.
    let engine = Arc::new(IcmpEngine::new());
    for c in &cfg.checks {
        let prober = c
            .spec
            .build(&engine)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(prober.kind(), c.spec.kind());
    }
}

#[test]
fn defaults_and_per_check_overrides() {
    let cfg = config::load(&fixture("overrides.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.server.listen, "[::1]:9090".parse().unwrap());
    assert_eq!(
        cfg.storage.path,
        PathBuf::from("/var/lib/netprobe/history.db")
    );
    assert_eq!(cfg.storage.retention, Duration::from_secs(36 * 3600));
    let d = Defaults {
        period: Duration::from_secs(30),
        timeout: Duration::from_secs(2),
        initial_delay: Duration::from_secs(15),
        success_threshold: 2,
        failure_threshold: 5,
    };
    assert_eq!(cfg.defaults, d);
    let inherits = &cfg.checks[0];
    assert_eq!(
        (inherits.period, inherits.timeout, inherits.initial_delay),
        (d.period, d.timeout, d.initial_delay)
    );
    assert_eq!(
        (inherits.success_threshold, inherits.failure_threshold),
        (2, 5)
    );
    let all = &cfg.checks[1];
    assert_eq!(all.name, "overrides.all_5");
    assert_eq!(all.period, Duration::from_millis(500));
    assert_eq!(all.timeout, Duration::from_millis(250));
    assert_eq!(all.initial_delay, Duration::from_secs(60));
    assert_eq!((all.success_threshold, all.failure_threshold), (3, 1));
}

#[test]
fn empty_and_minimal_configs_get_builtin_defaults() {
    for text in ["", "# only a comment\n", "checks: []\n", "checks:\n"] {
        let cfg = config::parse(text, "mem", &no_env).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(cfg.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.storage.path, PathBuf::from("netprobe.db"));
        assert_eq!(cfg.storage.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(cfg.defaults, Defaults::default());
        assert!(cfg.checks.is_empty());
    }
    let d = Defaults::default();
    assert_eq!(
        (
            d.period,
            d.timeout,
            d.initial_delay,
            d.success_threshold,
            d.failure_threshold
        ),
        (
            Duration::from_secs(10),
            Duration::from_secs(1),
            Duration::ZERO,
            1,
            3
        )
    );
}

#[test]
fn env_vars_expand_anywhere_and_dollar_dollar_escapes() {
    let vars: HashMap<&str, &str> = [
        ("LISTEN", "0.0.0.0:9100"),
        ("NODE_NAME", "node-7"),
        ("NODE_IP", "127.0.0.7"),
    ]
    .into();
    let env = |k: &str| vars.get(k).map(|v| v.to_string());
    let text = std::fs::read_to_string(fixture("env.yaml")).unwrap();
    let cfg: Config = config::parse(&text, "env.yaml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.server.listen, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(cfg.checks[0].name, "node-7-kubelet");
    assert_eq!(
        cfg.checks[0].spec,
        ProbeSpec::Http(spec(r#"{ url: "http://127.0.0.7:10248/healthz" }"#))
    );
    assert_eq!(cfg.checks[0].conditions[0].text(), "[BODY] == ${literal}");
}

#[test]
fn load_reads_the_process_environment() {
    // Cargo and nextest set CARGO_PKG_NAME for test processes; the test fails loudly if not.
    let expected =
        std::env::var("CARGO_PKG_NAME").expect("CARGO_PKG_NAME is set by cargo for tests");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "checks:\n  - name: ${{CARGO_PKG_NAME}}\n    tcp: {{ address: \"127.0.0.1:1\" }}"
    )
    .unwrap();
    let cfg = config::load(file.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.checks[0].name, expected);
}

#[test]
fn file_level_errors_name_the_file() {
    let missing = fixture("does-not-exist.yaml");
    let e = config::load(&missing).unwrap_err();
    assert_eq!((e.line, e.column), (None, None));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read the file: ", missing.display())),
        "{e}"
    );

    let mut big = tempfile::NamedTempFile::new().unwrap();
    let line = format!("# {}\n", "x".repeat(1022));
    for _ in 0..(config::MAX_CONFIG_BYTES / line.len() + 1) {
        big.write_all(line.as_bytes()).unwrap();
    }
    let e = config::load(big.path()).unwrap_err();
    assert!(e.message.contains("larger than 4194304 bytes"), "{e}");

    let mut bad = tempfile::NamedTempFile::new().unwrap();
    bad.write_all(b"checks:\n  - name: w\xffeb\n").unwrap();
    let e = config::load(bad.path()).unwrap_err();
    assert_eq!((e.line, e.column), (Some(2), Some(12)), "{e}");
    assert!(e.message.contains("invalid UTF-8"), "{e}");
}

#[test]
fn expansion_cannot_blow_past_the_size_limit() {
    let huge = "a".repeat(config::MAX_CONFIG_BYTES);
    let env = |_: &str| Some(huge.clone());
    let e = config::parse("checks: [${A}, ${B}]\n", "mem", &env).unwrap_err();
    assert!(e.message.contains("after ${VAR} expansion"), "{e}");
}
