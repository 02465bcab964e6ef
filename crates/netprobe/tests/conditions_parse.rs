//! Load-time errors of the conditions language, kind checks, and a property test that no input text
//! or body panics the parser or the evaluator.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::time::Duration;

use netprobe::conditions::Condition;
use probe::{Details, HttpDetails, Kind, Outcome};
use proptest::prelude::*;

#[test]
fn load_time_errors_say_what_was_expected() {
    let rows = [
        ("", "empty condition"),
        ("   ", "empty condition"),
        ("[STATUS]==200", "no operator"),
        ("[STATUS] 200", "no operator"),
        ("[STATUS] =~ 200", "no operator"),
        ("[STATUS] ==  ", "no operator"),
        (" == 200", "no operator"),
        (
            "[STAUTS] == 200",
            "unknown placeholder [STAUTS]; expected one of [STATUS], [RESPONSE_TIME]",
        ),
        ("[BODY].a == [NOPE]", "unknown placeholder [NOPE]"),
        (
            "[DOMAIN_EXPIRATION] > 720h",
            "[DOMAIN_EXPIRATION] is not supported by netprobe",
        ),
        (
            "[CONTEXT].token == x",
            "[CONTEXT] is not supported by netprobe",
        ),
        ("[STATUS].code == 200", "only [BODY] takes a JSON path"),
        ("[BODY]..a == 1", "empty key in JSON path"),
        ("[BODY]. == 1", "empty key in JSON path"),
        ("[BODY].a[0 == 1", "unclosed `[`"),
        (
            "[BODY].a[x] == 1",
            "array index `x` in JSON path is not a non-negative integer",
        ),
        ("[BODY].a[-1] == 1", "is not a non-negative integer"),
        ("[BODY]a == 1", "expected `.name` or `[index]`"),
        ("[BODY].a] == 1", "expected `.name` or `[index]`"),
        (
            "pat(ok*) == [BODY].status",
            "pat() belongs on the right side",
        ),
        ("any(1, 2) == [STATUS]", "any() belongs on the right side"),
        (
            "[BODY].status < pat(ok*)",
            "pat() only works with == or !=, not <",
        ),
        (
            "[STATUS] >= any(200, 300)",
            "any() only works with == or !=, not >=",
        ),
        ("[STATUS] == any()", "any() needs at least one value"),
        ("[STATUS] == any( , )", "any() needs at least one value"),
        ("len(abc) == 3", "len() takes a placeholder"),
        ("has(status) == true", "has() takes a placeholder"),
        ("len([STAUTS]) == 3", "unknown placeholder [STAUTS]"),
        ("ok == ok", "no placeholder on either side"),
        ("STATUS == 200", "no placeholder on either side"),
    ];
    let mut failures = Vec::new();
    for (text, want) in rows {
        match Condition::parse(text) {
            Ok(c) => failures.push(format!(
                "{text:?}: parsed as {c:?}, want error containing {want:?}"
            )),
            Err(e) if !e.contains(want) => {
                failures.push(format!("{text:?}: error {e:?} lacks {want:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn accepted_forms() {
    for text in [
        "[STATUS] == 200",
        "  [STATUS] == 200  ",
        "[RESPONSE_TIME] < 200ms",
        "[BODY] == ok",
        "[BODY].a.b[0] == 1",
        "[BODY][0].x == 1",
        "[BODY][0][1] == 1",
        "[BODY].a-b.c_d == 1",
        "[CONNECTED] == true",
        "[CERTIFICATE_EXPIRATION] > 48h",
        "[DNS_RCODE] == NOERROR",
        "[IP] == pat(10.*)",
        "len([BODY].items) > 0",
        "has([BODY].errors) == false",
        "[STATUS] == any(200, 201)",
        "[BODY].name == [1, 2]",
        "[BODY].a == [BODY].b",
        "200 == [STATUS]",
        "[Body].x == y",
    ] {
        let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(c.text(), text);
        assert_eq!(c.to_string(), text);
    }
}

#[test]
fn kind_checks() {
    let ok = [
        ("[STATUS] == 200", Kind::Http),
        ("[STATUS] == 0", Kind::Exec),
        ("[BODY] == PONG", Kind::Tcp),
        ("[DNS_RCODE] == NOERROR", Kind::Dns),
        ("[CERTIFICATE_EXPIRATION] > 48h", Kind::Http),
        ("[IP] == 198.51.100.1", Kind::Icmp),
        ("[CONNECTED] == true", Kind::Grpc),
        ("[RESPONSE_TIME] < 1s", Kind::Exec),
    ];
    for (text, kind) in ok {
        Condition::parse(text)
            .unwrap()
            .check_kind(kind)
            .unwrap_or_else(|e| panic!("{text} on {kind:?}: {e}"));
    }
    let bad = [
        (
            "[DNS_RCODE] == NOERROR",
            Kind::Http,
            "[DNS_RCODE] is not available for http checks (only for dns)",
        ),
        (
            "[STATUS] == 200",
            Kind::Grpc,
            "[STATUS] is not available for grpc checks (only for http, exec)",
        ),
        (
            "[BODY].x == 1",
            Kind::Icmp,
            "[BODY] is not available for icmp checks",
        ),
        (
            "[CERTIFICATE_EXPIRATION] > 1h",
            Kind::Tcp,
            "not available for tcp checks",
        ),
        (
            "[IP] == 1.2.3.4",
            Kind::Exec,
            "[IP] is not available for exec checks",
        ),
        (
            "200 == [STATUS]",
            Kind::Dns,
            "[STATUS] is not available for dns checks",
        ),
    ];
    for (text, kind, want) in bad {
        let e = Condition::parse(text)
            .unwrap()
            .check_kind(kind)
            .unwrap_err();
        assert!(e.contains(want), "{text} on {kind:?}: {e}");
    }
}

#[test]
fn deserialises_from_a_string_and_serialises_back() {
    let c: Condition = serde_json::from_str(r#""[STATUS] == 200""#).unwrap();
    assert_eq!(c.text(), "[STATUS] == 200");
    assert_eq!(serde_json::to_string(&c).unwrap(), r#""[STATUS] == 200""#);
    let e = serde_json::from_str::<Condition>(r#""[STAUTS] == 200""#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"invalid condition "[STAUTS] == 200": unknown placeholder"#),
        "{e}"
    );
}

fn outcome_with_body(body: Vec<u8>) -> Outcome {
    Outcome::ok(
        "ok",
        Duration::from_millis(1),
        vec![],
        Details::Http(HttpDetails {
            status: Some(200),
            connected: true,
            body: body.into(),
            ..Default::default()
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics(text in "\\PC{0,80}") {
        let _ = Condition::parse(&text);
    }

    #[test]
    fn grammar_shaped_conditions_never_panic(
        left in "(len\\(|has\\(|pat\\(|any\\()?\\[(BODY|STATUS|IP|X)\\]([.\\[\\]0-9a-z]{0,12})\\)?",
        op in "(==|!=|<|<=|>|>=|=)",
        right in "(pat\\(|any\\()?[ -~]{0,12}\\)?",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let text = format!("{left} {op} {right}");
        if let Ok(c) = Condition::parse(&text) {
            let r = c.evaluate(&outcome_with_body(body), 0);
            prop_assert_eq!(r.condition, text);
            // Two sides of at most 64 + 1 characters of source and 64 + 1 of value each.
            prop_assert!(r.resolved.chars().count() <= 2 * (65 + 3 + 65) + 4);
        }
    }

    #[test]
    fn paths_on_arbitrary_json_never_panic(
        path in "(\\.[a-c]|\\[[0-3]\\]){0,6}",
        json in r#"[\[\]{}",:a-c0-3 ]{0,40}"#,
    ) {
        let c = Condition::parse(&format!("[BODY]{path} == a")).unwrap();
        let _ = c.evaluate(&outcome_with_body(json.clone().into_bytes()), 0);
        let c = Condition::parse(&format!("len([BODY]{path}) > 1")).unwrap();
        let _ = c.evaluate(&outcome_with_body(json.into_bytes()), 0);
    }
}
