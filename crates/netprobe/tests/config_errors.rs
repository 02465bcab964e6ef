//! Every config error names the file, the line and column of the offending text, and what was expected.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netprobe::config::{self, ConfigError};

const PROBE_KEYS: &str = "expected exactly one of the keys icmp, tcp, http, dns, exec, grpc";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// Loads a fixture that must fail, and checks position, message and the `FILE:LINE:COL: ` prefix.
fn fixture_error(name: &str, line: usize, column: usize, message: &str) -> ConfigError {
    let path = fixture(name);
    let e = match config::load(&path) {
        Ok(cfg) => panic!("{name} loaded: {cfg:?}"),
        Err(e) => e,
    };
    assert_eq!(
        (e.line, e.column),
        (Some(line), Some(column)),
        "{name}: {e}"
    );
    assert!(e.message.contains(message), "{name}: {e}\nwant: {message}");
    assert_eq!(e.origin, path.display().to_string());
    assert!(
        e.to_string()
            .starts_with(&format!("{}:{line}:{column}: ", path.display())),
        "{e}"
    );
    e
}

fn text_error(text: &str, env: &[(&str, &str)]) -> ConfigError {
    let vars: HashMap<&str, &str> = env.iter().copied().collect();
    match config::parse(text, "inline.yaml", &|k| vars.get(k).map(|v| v.to_string())) {
        Ok(cfg) => panic!("{text:?} parsed: {cfg:?}"),
        Err(e) => e,
    }
}

fn assert_at(e: &ConfigError, line: usize, column: usize, message: &str) {
    assert_eq!((e.line, e.column), (Some(line), Some(column)), "{e}");
    assert!(e.message.contains(message), "{e}\nwant: {message}");
}

#[test]
fn typo_in_a_check_key_lists_the_expected_keys() {
    fixture_error(
        "typo_key.yaml",
        3,
        5,
        "unknown field `perod`, expected one of name, icmp, tcp, http, dns, exec, grpc, period, timeout, \
         initial_delay, success_threshold, failure_threshold, conditions",
    );
}

#[test]
fn typos_elsewhere() {
    let e = text_error("servr: {}\n", &[]);
    assert_at(
        &e,
        1,
        1,
        "unknown field `servr`, expected one of server, storage, defaults, diagnosis, checks",
    );
    let e = text_error("defaults:\n  period: 1s\n  perod: 1s\n", &[]);
    assert_at(
        &e,
        3,
        3,
        "unknown field `perod`, expected one of period, timeout, initial_delay, success_threshold, failure_threshold",
    );
    let e = text_error("storage: { path: x.db, retension: 1d }\n", &[]);
    assert_at(
        &e,
        1,
        24,
        "unknown field `retension`, expected one of path, retention",
    );
    let e = text_error("server:\n  listen: 127.0.0.1:80\n  port: 80\n", &[]);
    assert_at(&e, 3, 3, "unknown field `port`, expected one of listen");
}

#[test]
fn diagnosis_section_is_validated_where_it_stands() {
    let e = text_error("diagnosis: { enabled: true, min_intervall: 5m }\n", &[]);
    assert_at(
        &e,
        1,
        29,
        "unknown field `min_intervall`, expected one of enabled, min_interval, max_concurrent",
    );
    let e = text_error("diagnosis:\n  min_interval: 0s\n", &[]);
    assert_at(&e, 2, 17, "must be greater than zero");
    let e = text_error("diagnosis:\n  max_concurrent: 0\n", &[]);
    assert_at(&e, 2, 19, "expected a whole number from 1 to 64");
    let e = text_error("diagnosis:\n  max_concurrent: 65\n", &[]);
    assert_at(&e, 2, 19, "max_concurrent 65 is out of range");
    let e = text_error("diagnosis:\n  enabled: sometimes\n", &[]);
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn typos_inside_a_probe_config_point_at_the_key() {
    // The probe structs are plain `Option` fields (no flatten, no tagged enum), so serde-saphyr keeps
    // the exact position of a nested key, in flow and in block style.
    let flow = "checks:\n  - name: web\n    http: { url: \"http://127.0.0.1/\", metod: GET }\n";
    assert_at(
        &text_error(flow, &[]),
        3,
        39,
        "unknown field `metod`, expected one of url, method",
    );
    let block = "checks:\n  - name: gw\n    icmp:\n      host: 198.51.100.1\n      cuont: 3\n";
    assert_at(
        &text_error(block, &[]),
        5,
        7,
        "unknown field `cuont`, expected one of host, count",
    );
}

#[test]
fn bad_duration_fails_at_its_value() {
    fixture_error("bad_duration.yaml", 5, 13, "invalid duration \"10x\"");
    let e = text_error("defaults:\n  period: 0s\n", &[]);
    assert_at(&e, 2, 11, "duration 0s must be greater than zero");
    let e = text_error("checks:\n  - name: a\n    timeout: 0ms\n", &[]);
    assert_at(&e, 3, 14, "must be greater than zero");
    let e = text_error("storage: { retention: 0s }\n", &[]);
    assert_at(&e, 1, 23, "must be greater than zero");
    let e = text_error("defaults: { initial_delay: 10 }\n", &[]);
    assert_at(
        &e,
        1,
        28,
        "expected a number with a unit, like 500ms, 10s, 5m, 7d",
    );
}

#[test]
fn bad_thresholds_names_and_addresses_fail_at_their_values() {
    let e = text_error("checks:\n  - name: web\n    failure_threshold: 0\n", &[]);
    assert_at(
        &e,
        3,
        24,
        "threshold 0 is out of range; expected a whole number from 1 to 4294967295",
    );
    let e = text_error("defaults: { success_threshold: -2 }\n", &[]);
    assert_at(&e, 1, 32, "threshold -2 is out of range");
    let e = text_error("defaults:\n  success_threshold: lots\n", &[]);
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("expected a whole number from 1"), "{e}");
    for name in ["\"web check\"", "\"a/b\"", "\"\"", "é"] {
        let e = text_error(&format!("checks:\n  - name: {name}\n    tcp: {{}}\n"), &[]);
        assert_at(&e, 2, 11, "invalid check name");
        assert!(
            e.message
                .contains("expected 1 to 128 characters from A-Z a-z 0-9 _ . -"),
            "{e}"
        );
    }
    let long = "n".repeat(129);
    let e = text_error(&format!("checks:\n  - name: {long}\n"), &[]);
    assert_at(&e, 2, 11, "invalid check name");
    let e = text_error("server:\n  listen: localhost\n", &[]);
    assert_at(
        &e,
        2,
        11,
        "invalid listen address \"localhost\"; expected IP:PORT, like 127.0.0.1:8080",
    );
}

#[test]
fn bad_condition_fails_at_its_line_naming_it() {
    fixture_error(
        "bad_condition.yaml",
        5,
        9,
        "invalid condition \"[STAUTS] == 200\": unknown placeholder [STAUTS]; expected one of [STATUS]",
    );
}

#[test]
fn condition_the_kind_cannot_answer() {
    fixture_error(
        "wrong_kind_condition.yaml",
        4,
        18,
        "check \"web\": condition \"[DNS_RCODE] == NOERROR\": [DNS_RCODE] is not available for http checks \
         (only for dns)",
    );
}

#[test]
fn two_probe_keys() {
    fixture_error(
        "two_probes.yaml",
        4,
        11,
        &format!("check \"both\" has 2 probes (tcp, http); {PROBE_KEYS}"),
    );
}

#[test]
fn no_probe_key() {
    fixture_error(
        "no_probe.yaml",
        4,
        5,
        &format!("check \"lonely\" has no probe; {PROBE_KEYS}"),
    );
}

#[test]
fn duplicate_name() {
    fixture_error(
        "duplicate_name.yaml",
        6,
        11,
        "duplicate check name \"web\" (first used at line 2); expected every check name to be unique",
    );
}

#[test]
fn missing_name() {
    let e = text_error("checks:\n  - tcp: { address: \"127.0.0.1:1\" }\n", &[]);
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("missing field `name`"), "{e}");
}

#[test]
fn prober_validation_runs_at_load_time() {
    fixture_error("bad_url.yaml", 3, 11, "check \"web\": invalid http probe: ");
}

#[test]
fn undefined_variable_is_located_at_its_dollar() {
    fixture_error(
        "undefined_var.yaml",
        3,
        26,
        "environment variable NODE_IP is not set",
    );
    let e = text_error("a: ${NOT CLOSED\n", &[]);
    assert_at(&e, 1, 4, "unterminated `${`");
    let e = text_error("a: ${9X}\n", &[]);
    assert_at(&e, 1, 4, "invalid environment variable name \"9X\"");
}

#[test]
fn columns_after_an_expansion_map_back_to_the_file() {
    // "${T}" (4 characters) becomes "1s" (2): the error at `10x` is reported where `10x` is in the file.
    let e = text_error(
        "defaults: { timeout: \"${T}\", period: 10x }\n",
        &[("T", "1s")],
    );
    assert_at(&e, 1, 38, "invalid duration \"10x\"");
    // An error inside an inserted value points at its `${`.
    let e = text_error("checks:\n  - name: x-${N}\n", &[("N", "a b")]);
    assert_at(&e, 2, 11, "invalid check name \"x-a b\"");
    let e = text_error("defaults: { period: \"${P}\" }\n", &[("P", "ten seconds")]);
    assert_at(&e, 1, 21, "invalid duration \"ten seconds\"");
    let e = text_error("defaults: { period: ${P} }\n", &[("P", "\"5s\", bogus: 1")]);
    assert_at(&e, 1, 21, "unknown field `bogus`");
}

#[test]
fn malformed_yaml_is_located_without_panicking() {
    fixture_error("unclosed_bracket.yaml", 4, 17, "unclosed bracket");
    // Unclosed in the middle of the file: the parser notices on the next line.
    let e = text_error(
        "checks:\n  - name: web\n    tcp: { address: \"127.0.0.1:1\"\n  - name: other\n",
        &[],
    );
    assert_at(&e, 4, 3, "\"-\" is only valid inside a block");
    let e = fixture_error("tabs.yaml", 2, 2, "tab");
    assert!(e.message.contains("tab"), "{e}");
    for (text, line) in [
        ("checks: [\n", 1),
        ("checks:\n  - name: \"unterminated\n", 3),
        ("- a\n- b\n", 1),
        ("just a string\n", 1),
        ("checks:\n  - name: a\n    name: b\n", 3),
        ("checks: []\n---\nchecks: []\n", 3),
        ("checks: *nope\n", 1),
        ("checks: !!binary AAAA\n", 1),
        ("{{{{\n", 1),
        (": :\n", 1),
    ] {
        let e = text_error(text, &[]);
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert!(e.column.is_some_and(|c| c >= 1), "{text:?}: {e}");
        assert!(
            !e.message.is_empty() && !e.message.contains('\n'),
            "{text:?}: {e:?}"
        );
    }
}

#[test]
fn hostile_yaml_fails_fast() {
    let start = Instant::now();
    // Deep nesting: an error, not a stack overflow.
    let deep = format!("checks: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
    let e = text_error(&deep, &[]);
    assert_eq!(e.line, Some(1), "{e}");
    // Billion laughs: each level would multiply by ten, but a list where a condition string belongs
    // is refused at the first alias, before anything is expanded.
    let mut bomb = String::from("checks:\n  - name: a\n    tcp: { address: \"127.0.0.1:1\" }\n");
    bomb.push_str(&format!(
        "    conditions: &l0 [{}]\n",
        ["\"[IP] == x\""; 10].join(", ")
    ));
    for level in 1..12 {
        let refs = vec![format!("*l{}", level - 1); 10].join(", ");
        bomb.push_str(&format!(
            "  - name: b{level}\n    conditions: &l{level} [{refs}]\n"
        ));
    }
    let e = text_error(&bomb, &[]);
    assert_eq!(e.line, Some(6), "{e}");
    // Many cheap aliases: the alias budget (10 000) ends it.
    let many = format!(
        "checks:\n  - &c {{ name: a }}\n{}",
        "  - *c\n".repeat(20_000)
    );
    let e = text_error(&many, &[]);
    assert!(e.message.contains("limits breached: Aliases"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
