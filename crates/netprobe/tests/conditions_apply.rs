//! `conditions::apply`: how conditions turn a probe outcome into the check's verdict.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::time::Duration;

use netprobe::conditions::{Condition, apply};
use probe::{Details, HttpDetails, Outcome, Reason};

fn conds(texts: &[&str]) -> Vec<Condition> {
    texts.iter().map(|t| Condition::parse(t).unwrap()).collect()
}

fn http(success: bool, status: u16, body: &str) -> Outcome {
    let details = Details::Http(HttpDetails {
        connected: true,
        status: Some(status),
        body: body.as_bytes().to_vec().into(),
        peer: Some("127.0.0.1:8080".parse().unwrap()),
        ..Default::default()
    });
    if success {
        Outcome::ok(
            format!("HTTP {status}"),
            Duration::from_millis(5),
            vec![],
            details,
        )
    } else {
        Outcome::fail(
            Reason::HttpStatus,
            format!("HTTP {status}"),
            Duration::from_millis(5),
            vec![],
            details,
        )
    }
}

fn refused() -> Outcome {
    Outcome::fail(
        Reason::ConnectionRefused,
        "connect 127.0.0.1:1: connection refused",
        Duration::from_millis(1),
        vec![],
        Details::Http(HttpDetails::default()),
    )
}

#[test]
fn no_conditions_leave_the_outcome_unchanged() {
    for o in [http(true, 200, "x"), http(false, 500, "x"), refused()] {
        let (out, results) = apply(o.clone(), &[], 0);
        assert_eq!(out, o);
        assert!(results.is_empty());
    }
}

#[test]
fn all_passing_is_success_and_keeps_the_message() {
    let o = http(true, 200, r#"{"status":"ok"}"#);
    let (out, results) = apply(
        o.clone(),
        &conds(&["[STATUS] == 200", "[BODY].status == ok"]),
        0,
    );
    assert!(out.success);
    assert_eq!(out.reason, None);
    assert_eq!(out.message, o.message);
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.success));
    assert_eq!(results[1].resolved, "[BODY].status (ok) == ok");
}

#[test]
fn a_failing_condition_on_a_good_probe_is_condition_failed() {
    let body = format!(r#"{{"status":"down","detail":"{}"}}"#, "z".repeat(5000));
    let (out, results) = apply(
        http(true, 200, &body),
        &conds(&[
            "[STATUS] == 200",
            "[BODY].status == ok",
            "[BODY].detail == fine",
            "[RESPONSE_TIME] < 1s",
        ]),
        0,
    );
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ConditionFailed));
    let z64 = "z".repeat(64);
    assert_eq!(
        out.message,
        format!("condition failed: [BODY].status (down) == ok; [BODY].detail ({z64}…) == fine")
    );
    assert!(
        !out.message.contains(&"z".repeat(65)),
        "the body must not leak into the message"
    );
    assert_eq!(
        results.iter().map(|r| r.success).collect::<Vec<_>>(),
        [true, false, false, true]
    );
}

#[test]
fn http_status_failures_are_replaced_by_conditions() {
    // The default rule failed (500), but the conditions expect exactly that: success.
    let (out, _) = apply(http(false, 503, ""), &conds(&["[STATUS] == 503"]), 0);
    assert!(out.success);
    assert_eq!(out.reason, None);
    assert_eq!(
        out.message,
        "all conditions hold (probe reported: HTTP 503)"
    );
    // A failing condition on an http-status failure becomes condition-failed with the resolved list.
    let (out, _) = apply(http(false, 500, ""), &conds(&["[STATUS] == 200"]), 0);
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ConditionFailed));
    assert_eq!(out.message, "condition failed: [STATUS] (500) == 200");
}

#[test]
fn transport_failures_keep_their_reason() {
    let o = refused();
    let (out, results) = apply(
        o.clone(),
        &conds(&["[STATUS] == 200", "[BODY].status == ok"]),
        0,
    );
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ConnectionRefused));
    assert_eq!(out.message, o.message);
    assert_eq!(results[0].resolved, "[STATUS] (missing) == 200");
    assert_eq!(results[1].resolved, "[BODY].status (empty body) == ok");
}

#[test]
fn a_condition_that_expects_the_failure_makes_it_a_success() {
    let (out, results) = apply(refused(), &conds(&["[CONNECTED] == false"]), 0);
    assert!(out.success);
    assert_eq!(out.reason, None);
    assert_eq!(
        out.message,
        "all conditions hold (probe reported: connect 127.0.0.1:1: connection refused)"
    );
    assert_eq!(results[0].resolved, "[CONNECTED] (false) == false");
    // …but not if another condition still fails.
    let (out, _) = apply(
        refused(),
        &conds(&["[CONNECTED] == false", "[STATUS] == 200"]),
        0,
    );
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ConnectionRefused));
}

#[test]
fn timings_and_details_are_untouched() {
    let o = http(true, 200, "{}");
    let (out, _) = apply(o.clone(), &conds(&["[STATUS] == 404"]), 0);
    assert_eq!(out.duration, o.duration);
    assert_eq!(out.phases, o.phases);
    assert_eq!(out.details, o.details);
}

#[test]
fn non_json_body_fails_every_path_condition_without_panicking() {
    let (out, results) = apply(
        http(true, 200, "\u{0}\u{ff}not json {"),
        &conds(&[
            "[BODY].a == 1",
            "has([BODY].a) == true",
            "len([BODY].a) == 0",
            "[STATUS] == 200",
        ]),
        0,
    );
    assert!(!out.success);
    assert_eq!(
        results.iter().map(|r| r.success).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(results[0].resolved, "[BODY].a (body is not JSON) == 1");
}

#[test]
fn passing_conditions_do_not_heal_a_target_that_never_answered() {
    // Only a timing condition: it holds on a 1 ms refused connect, but nothing answered.
    let (out, results) = apply(refused(), &conds(&["[RESPONSE_TIME] < 1s"]), 0);
    assert!(results[0].success);
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ConnectionRefused));
    // Asking about the connection explicitly still describes an expected-closed port.
    let (out, _) = apply(refused(), &conds(&["[CONNECTED] == false"]), 0);
    assert!(out.success);
}
