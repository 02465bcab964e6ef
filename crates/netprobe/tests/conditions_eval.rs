//! Table-driven tests of condition evaluation: every placeholder, operator, function, unit, JSON paths
//! and type mismatches, checking both the verdict and the resolved text.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::time::Duration;

use netprobe::conditions::Condition;
use probe::{
    Details, DnsDetails, ExecDetails, GrpcDetails, HttpDetails, IcmpDetails, Outcome, TcpDetails,
    TlsDetails,
};

const NOW: i64 = 1_700_000_000;

fn http(status: u16, body: &str) -> Outcome {
    Outcome::ok(
        "HTTP 200",
        Duration::from_millis(150),
        vec![],
        Details::Http(HttpDetails {
            url: "http://127.0.0.1:8080/".into(),
            peer: Some("127.0.0.1:8080".parse().unwrap()),
            connected: true,
            status: Some(status),
            body: body.as_bytes().to_vec().into(),
            ..Default::default()
        }),
    )
}

fn https(not_after: i64) -> Outcome {
    let mut o = http(200, "");
    if let Details::Http(h) = &mut o.details {
        h.tls = Some(TlsDetails {
            earliest_not_after: not_after,
            ..Default::default()
        });
    }
    o
}

fn refused() -> Outcome {
    Outcome::fail(
        probe::Reason::ConnectionRefused,
        "connection refused",
        Duration::from_millis(3),
        vec![],
        Details::Http(HttpDetails {
            url: "http://127.0.0.1:1/".into(),
            ..Default::default()
        }),
    )
}

fn dns(rcode: &str) -> Outcome {
    Outcome::ok(
        "NOERROR",
        Duration::from_millis(4),
        vec![],
        Details::Dns(DnsDetails {
            server: Some("127.0.0.1:53".parse().unwrap()),
            rcode: Some(rcode.into()),
            ..Default::default()
        }),
    )
}

fn exec(code: i32, output: &str) -> Outcome {
    Outcome::ok(
        "exit 0",
        Duration::from_millis(20),
        vec![],
        Details::Exec(ExecDetails {
            exit_code: Some(code),
            output: output.into(),
            ..Default::default()
        }),
    )
}

fn icmp(received: u32) -> Outcome {
    Outcome::ok(
        "3/3",
        Duration::from_micros(2500),
        vec![],
        Details::Icmp(IcmpDetails {
            address: Some("198.51.100.1".parse().unwrap()),
            sent: 3,
            received,
            ..Default::default()
        }),
    )
}

fn tcp(received: Option<&str>) -> Outcome {
    Outcome::ok(
        "connected",
        Duration::from_millis(1),
        vec![],
        Details::Tcp(TcpDetails {
            peer: Some("[::1]:6379".parse().unwrap()),
            connected: true,
            received: received.map(str::to_owned),
            ..Default::default()
        }),
    )
}

fn grpc() -> Outcome {
    Outcome::ok(
        "SERVING",
        Duration::from_millis(7),
        vec![],
        Details::Grpc(GrpcDetails {
            peer: Some("127.0.0.1:50051".parse().unwrap()),
            connected: true,
            status: Some("SERVING".into()),
            ..Default::default()
        }),
    )
}

/// Runs `(condition, outcome, success, resolved)` rows and reports every mismatch at once.
fn run(rows: Vec<(&str, Outcome, bool, &str)>) {
    let mut failures = Vec::new();
    for (text, outcome, success, resolved) in rows {
        let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
        let r = c.evaluate(&outcome, NOW);
        assert_eq!(r.condition, text);
        if r.success != success || r.resolved != resolved {
            failures.push(format!(
                "{text:?}: got ({}, {:?}), want ({success}, {resolved:?})",
                r.success, r.resolved
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn status_and_operators() {
    run(vec![
        ("[STATUS] == 200", http(200, ""), true, "[STATUS] (200) == 200"),
        ("[STATUS] == 200", http(500, ""), false, "[STATUS] (500) == 200"),
        ("[STATUS] != 500", http(200, ""), true, "[STATUS] (200) != 500"),
        ("[STATUS] != 500", http(500, ""), false, "[STATUS] (500) != 500"),
        ("[STATUS] < 300", http(204, ""), true, "[STATUS] (204) < 300"),
        ("[STATUS] < 300", http(300, ""), false, "[STATUS] (300) < 300"),
        ("[STATUS] <= 300", http(300, ""), true, "[STATUS] (300) <= 300"),
        ("[STATUS] > 199", http(200, ""), true, "[STATUS] (200) > 199"),
        ("[STATUS] > 200", http(200, ""), false, "[STATUS] (200) > 200"),
        ("[STATUS] >= 200", http(200, ""), true, "[STATUS] (200) >= 200"),
        ("[STATUS] >= 201", http(200, ""), false, "[STATUS] (200) >= 201"),
        // Numbers compare numerically, not as text.
        ("[STATUS] == 200.0", http(200, ""), true, "[STATUS] (200) == 200.0"),
        ("[STATUS] < 1000", http(999, ""), true, "[STATUS] (999) < 1000"),
        // Placeholder names are case-insensitive, as in Gatus; a literal may sit on the left.
        ("[status] == 200", http(200, ""), true, "[status] (200) == 200"),
        ("200 == [STATUS]", http(200, ""), true, "200 == [STATUS] (200)"),
        // An exec probe's exit code is its status.
        ("[STATUS] == 0", exec(0, ""), true, "[STATUS] (0) == 0"),
        ("[STATUS] == 0", exec(2, ""), false, "[STATUS] (2) == 0"),
        // A missing value fails whatever the operator.
        ("[STATUS] == 200", refused(), false, "[STATUS] (missing) == 200"),
        ("[STATUS] != 200", refused(), false, "[STATUS] (missing) != 200"),
        ("[STATUS] == 200", icmp(3), false, "[STATUS] (missing) == 200"),
    ]);
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn any_and_pat() {
    run(vec![
        ("[STATUS] == any(200, 204)", http(204, ""), true, "[STATUS] (204) == any(200, 204)"),
        ("[STATUS] == any(200, 204)", http(500, ""), false, "[STATUS] (500) == any(200, 204)"),
        ("[STATUS] != any(500, 503)", http(200, ""), true, "[STATUS] (200) != any(500, 503)"),
        ("[STATUS] != any(500, 503)", http(503, ""), false, "[STATUS] (503) != any(500, 503)"),
        ("[STATUS] == any(200)", refused(), false, "[STATUS] (missing) == any(200)"),
        ("[BODY].status == pat(ok*)", http(200, r#"{"status":"okay"}"#), true, "[BODY].status (okay) == pat(ok*)"),
        ("[BODY].status == pat(ok*)", http(200, r#"{"status":"down"}"#), false, "[BODY].status (down) == pat(ok*)"),
        ("[BODY].status != pat(ok*)", http(200, r#"{"status":"down"}"#), true, "[BODY].status (down) != pat(ok*)"),
        ("[BODY].status == pat(*)", http(200, r#"{"status":""}"#), true, "[BODY].status () == pat(*)"),
        ("[IP] == pat(198.51.100.*)", icmp(3), true, "[IP] (198.51.100.1) == pat(198.51.100.*)"),
        ("[IP] == pat(203.0.113.*)", icmp(3), false, "[IP] (198.51.100.1) == pat(203.0.113.*)"),
        ("[BODY] == pat(*ready*)", exec(0, "  the service is ready\n"), true, "[BODY] (the service is ready) == pat(*ready*)"),
        ("[BODY].x == pat(*)", http(200, "not json"), false, "[BODY].x (body is not JSON) == pat(*)"),
    ]);
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn response_time_units() {
    // http() took 150ms; icmp() 2.5ms (whole milliseconds: 2).
    run(vec![
        ("[RESPONSE_TIME] < 200", http(200, ""), true, "[RESPONSE_TIME] (150ms) < 200"),
        ("[RESPONSE_TIME] < 200ms", http(200, ""), true, "[RESPONSE_TIME] (150ms) < 200ms"),
        ("[RESPONSE_TIME] < 100ms", http(200, ""), false, "[RESPONSE_TIME] (150ms) < 100ms"),
        ("[RESPONSE_TIME] < 1s", http(200, ""), true, "[RESPONSE_TIME] (150ms) < 1s"),
        ("[RESPONSE_TIME] > 1s", http(200, ""), false, "[RESPONSE_TIME] (150ms) > 1s"),
        ("[RESPONSE_TIME] == 150", http(200, ""), true, "[RESPONSE_TIME] (150ms) == 150"),
        ("[RESPONSE_TIME] == 150ms", http(200, ""), true, "[RESPONSE_TIME] (150ms) == 150ms"),
        ("[RESPONSE_TIME] <= 2", icmp(3), true, "[RESPONSE_TIME] (2ms) <= 2"),
        ("[RESPONSE_TIME] < 1m", icmp(3), true, "[RESPONSE_TIME] (2ms) < 1m"),
        // The transport failed but the time is still known.
        ("[RESPONSE_TIME] < 10", refused(), true, "[RESPONSE_TIME] (3ms) < 10"),
    ]);
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn certificate_expiration() {
    let in_30_days = NOW + 30 * 86_400;
    run(vec![
        ("[CERTIFICATE_EXPIRATION] > 48h", https(in_30_days), true, "[CERTIFICATE_EXPIRATION] (30days) > 48h"),
        ("[CERTIFICATE_EXPIRATION] > 31d", https(in_30_days), false, "[CERTIFICATE_EXPIRATION] (30days) > 31d"),
        ("[CERTIFICATE_EXPIRATION] > 0", https(NOW + 3600), true, "[CERTIFICATE_EXPIRATION] (1h) > 0"),
        ("[CERTIFICATE_EXPIRATION] > 0", https(NOW - 7200), false, "[CERTIFICATE_EXPIRATION] (expired 2h ago) > 0"),
        // Milliseconds, as Gatus: 48h = 172800000.
        ("[CERTIFICATE_EXPIRATION] > 172799999", https(NOW + 48 * 3600), true, "[CERTIFICATE_EXPIRATION] (2days) > 172799999"),
        ("[CERTIFICATE_EXPIRATION] > 48h", https(NOW + 48 * 3600), false, "[CERTIFICATE_EXPIRATION] (2days) > 48h"),
        // Plain HTTP has no certificate.
        ("[CERTIFICATE_EXPIRATION] > 48h", http(200, ""), false, "[CERTIFICATE_EXPIRATION] (missing) > 48h"),
    ]);
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn connected_rcode_ip() {
    run(vec![
        ("[CONNECTED] == true", http(200, ""), true, "[CONNECTED] (true) == true"),
        ("[CONNECTED] == true", refused(), false, "[CONNECTED] (false) == true"),
        ("[CONNECTED] == false", refused(), true, "[CONNECTED] (false) == false"),
        ("[CONNECTED] == true", icmp(1), true, "[CONNECTED] (true) == true"),
        ("[CONNECTED] == true", icmp(0), false, "[CONNECTED] (false) == true"),
        ("[CONNECTED] == true", grpc(), true, "[CONNECTED] (true) == true"),
        ("[DNS_RCODE] == NOERROR", dns("NOERROR"), true, "[DNS_RCODE] (NOERROR) == NOERROR"),
        ("[DNS_RCODE] == NOERROR", dns("NXDOMAIN"), false, "[DNS_RCODE] (NXDOMAIN) == NOERROR"),
        ("[DNS_RCODE] == any(NOERROR, NXDOMAIN)", dns("NXDOMAIN"), true, "[DNS_RCODE] (NXDOMAIN) == any(NOERROR, NXDOMAIN)"),
        ("[DNS_RCODE] == NOERROR", http(200, ""), false, "[DNS_RCODE] (missing) == NOERROR"),
        ("[IP] == 127.0.0.1", dns("NOERROR"), true, "[IP] (127.0.0.1) == 127.0.0.1"),
        ("[IP] == ::1", tcp(None), true, "[IP] (::1) == ::1"),
        ("[IP] == 127.0.0.1", grpc(), true, "[IP] (127.0.0.1) == 127.0.0.1"),
        ("[IP] == 127.0.0.1", refused(), false, "[IP] (missing) == 127.0.0.1"),
    ]);
}

const DOC: &str = r#"{
  "status": "ok",
  "count": 3,
  "ratio": 0.25,
  "ready": true,
  "none": null,
  "data": {"items": [{"name": "a", "tags": ["x", "y"]}, {"name": "b"}], "nested": {"deep": {"v": "10"}}},
  "matrix": [[1, 2], [3, 4]],
  "empty": [],
  "obj": {"a": 1, "b": "two"},
  "dotted": "a.b"
}"#;

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn json_paths() {
    run(vec![
        ("[BODY].status == ok", http(200, DOC), true, "[BODY].status (ok) == ok"),
        ("[BODY].count == 3", http(200, DOC), true, "[BODY].count (3) == 3"),
        ("[BODY].count > 2", http(200, DOC), true, "[BODY].count (3) > 2"),
        ("[BODY].ratio < 0.5", http(200, DOC), true, "[BODY].ratio (0.25) < 0.5"),
        ("[BODY].ready == true", http(200, DOC), true, "[BODY].ready (true) == true"),
        ("[BODY].none == null", http(200, DOC), true, "[BODY].none (null) == null"),
        ("[BODY].data.items[0].name == a", http(200, DOC), true, "[BODY].data.items[0].name (a) == a"),
        ("[BODY].data.items[1].name == b", http(200, DOC), true, "[BODY].data.items[1].name (b) == b"),
        ("[BODY].data.items[0].tags[1] == y", http(200, DOC), true, "[BODY].data.items[0].tags[1] (y) == y"),
        ("[BODY].data.nested.deep.v >= 10", http(200, DOC), true, "[BODY].data.nested.deep.v (10) >= 10"),
        ("[BODY].matrix[1][0] == 3", http(200, DOC), true, "[BODY].matrix[1][0] (3) == 3"),
        ("[BODY].obj == {\"a\":1,\"b\":\"two\"}", http(200, DOC), true, "[BODY].obj ({\"a\":1,\"b\":\"two\"}) == {\"a\":1,\"b\":\"two\"}"),
        ("[BODY].dotted == a.b", http(200, DOC), true, "[BODY].dotted (a.b) == a.b"),
        // Missing: a key, an index past the end, a key on an array, an index on an object.
        ("[BODY].missing == ok", http(200, DOC), false, "[BODY].missing (no such path) == ok"),
        ("[BODY].data.items[2].name == a", http(200, DOC), false, "[BODY].data.items[2].name (no such path) == a"),
        ("[BODY].data.items.name == a", http(200, DOC), false, "[BODY].data.items.name (no such path) == a"),
        ("[BODY].obj[0] == 1", http(200, DOC), false, "[BODY].obj[0] (no such path) == 1"),
        ("[BODY].status.deeper == ok", http(200, DOC), false, "[BODY].status.deeper (no such path) == ok"),
        ("[BODY].missing != ok", http(200, DOC), false, "[BODY].missing (no such path) != ok"),
        // A top-level array.
        ("[BODY][0].id == 7", http(200, r#"[{"id": 7}, {"id": 8}]"#), true, "[BODY][0].id (7) == 7"),
        ("[BODY][1].id == 8", http(200, r#"[{"id": 7}, {"id": 8}]"#), true, "[BODY][1].id (8) == 8"),
        // Not JSON, or truncated JSON: the condition fails without panicking.
        ("[BODY].status == ok", http(200, "<html>ok</html>"), false, "[BODY].status (body is not JSON) == ok"),
        ("[BODY].status == ok", http(200, r#"{"status": "ok", "tr"#), false, "[BODY].status (body is not JSON) == ok"),
        ("[BODY].status == ok", http(200, ""), false, "[BODY].status (empty body) == ok"),
        ("[BODY].status == ok", refused(), false, "[BODY].status (empty body) == ok"),
        // The whole body, trimmed.
        ("[BODY] == ok", http(200, " ok\n"), true, "[BODY] (ok) == ok"),
        ("[BODY] == PONG", tcp(Some("+PONG\r\n")), false, "[BODY] (+PONG) == PONG"),
        ("[BODY] == +PONG", tcp(Some("+PONG\r\n")), true, "[BODY] (+PONG) == +PONG"),
    ]);
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn len_and_has() {
    run(vec![
        ("len([BODY].data.items) == 2", http(200, DOC), true, "len([BODY].data.items) (2) == 2"),
        ("len([BODY].empty) == 0", http(200, DOC), true, "len([BODY].empty) (0) == 0"),
        ("len([BODY].status) == 2", http(200, DOC), true, "len([BODY].status) (2) == 2"),
        ("len([BODY].obj) == 17", http(200, DOC), true, "len([BODY].obj) (17) == 17"),
        ("len([BODY].missing) == 0", http(200, DOC), false, "len([BODY].missing) (no such path) == 0"),
        ("len([BODY]) == 3", http(200, "[1, 2, 3]"), true, "len([BODY]) (3) == 3"),
        ("len([BODY]) == 5", http(200, " hello "), true, "len([BODY]) (5) == 5"),
        ("len([BODY]) > 0", http(200, ""), false, "len([BODY]) (0) > 0"),
        ("len([BODY].s) == 3", http(200, r#"{"s": "héé"}"#), true, "len([BODY].s) (3) == 3"),
        ("len([DNS_RCODE]) == 7", dns("NOERROR"), true, "len([DNS_RCODE]) (7) == 7"),
        ("has([BODY].data.nested) == true", http(200, DOC), true, "has([BODY].data.nested) (true) == true"),
        ("has([BODY].none) == true", http(200, DOC), true, "has([BODY].none) (true) == true"),
        ("has([BODY].errors) == false", http(200, DOC), true, "has([BODY].errors) (false) == false"),
        ("has([BODY].errors) == true", http(200, DOC), false, "has([BODY].errors) (false) == true"),
        ("has([BODY].x) == false", http(200, "not json"), true, "has([BODY].x) (false) == false"),
        ("has([BODY]) == true", http(200, "x"), true, "has([BODY]) (true) == true"),
        ("has([BODY]) == false", http(200, "  "), true, "has([BODY]) (false) == false"),
        ("has([STATUS]) == false", refused(), true, "has([STATUS]) (false) == false"),
        ("has([IP]) == true", icmp(3), true, "has([IP]) (true) == true"),
    ]);
}

#[test]
#[rustfmt::skip] // One row per line: the table is the test.
fn type_mismatch() {
    run(vec![
        // Ordering needs two numbers.
        ("[BODY].status < 5", http(200, DOC), false, "[BODY].status (ok) < 5"),
        ("[BODY].status > 5", http(200, DOC), false, "[BODY].status (ok) > 5"),
        ("[BODY].status >= ok", http(200, DOC), false, "[BODY].status (ok) >= ok"),
        ("[BODY].ready > 0", http(200, DOC), false, "[BODY].ready (true) > 0"),
        ("[BODY].data > 0", http(200, DOC), false, "[BODY].data ({\"items\":[{\"name\":\"a\",\"tags\":[\"x\",\"y\"]},{\"name\":\"b\"}],\"nested\":{…) > 0"),
        // Equality falls back to exact text.
        ("[BODY].status == 5", http(200, DOC), false, "[BODY].status (ok) == 5"),
        ("[BODY].status != 5", http(200, DOC), true, "[BODY].status (ok) != 5"),
        ("[BODY].ready == TRUE", http(200, DOC), false, "[BODY].ready (true) == TRUE"),
        // Quotes are part of the literal, as in Gatus.
        ("[BODY].status == \"ok\"", http(200, DOC), false, "[BODY].status (ok) == \"ok\""),
        // A numeric string in JSON compares as a number.
        ("[BODY].data.nested.deep.v == 10.0", http(200, DOC), true, "[BODY].data.nested.deep.v (10) == 10.0"),
        // `inf`/`NaN` are not numbers.
        ("[BODY].status < inf", http(200, DOC), false, "[BODY].status (ok) < inf"),
    ]);
}

#[test]
fn resolved_values_are_cut_and_escaped() {
    let long = "x".repeat(10_000);
    let c = Condition::parse("[BODY] == ok").unwrap();
    let r = c.evaluate(&http(200, &long), NOW);
    assert!(!r.success);
    assert_eq!(r.resolved, format!("[BODY] ({}…) == ok", "x".repeat(64)));
    let r = c.evaluate(&exec(0, "line1\nline2\u{1b}[31m"), NOW);
    assert_eq!(r.resolved, "[BODY] (line1\\nline2\\u{1b}[31m) == ok");
}

#[test]
fn results_serialise_for_the_api() {
    let r = Condition::parse("[STATUS] == 200")
        .unwrap()
        .evaluate(&http(500, ""), NOW);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"condition": "[STATUS] == 200", "success": false, "resolved": "[STATUS] (500) == 200"})
    );
}
