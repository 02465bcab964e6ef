//! Gatus-compatible conditions: `<left> <operator> <right>` checks on a probe's outcome.
//!
//! A check with conditions is healthy when **all** of them hold; its kind's default rule (e.g. HTTP
//! 200–399) is then replaced by the conditions, as in Gatus.
//!
//! # Syntax
//!
//! The operators are `==`, `!=`, `<`, `<=`, `>`, `>=`, each with one space on both sides. As in Gatus
//! (`config/endpoint/condition.go`), they are searched for in the order `==`, `!=`, `<=`, `>=`, `>`, `<`
//! and the condition is split at the first occurrence of the first one found.
//!
//! Placeholders (names are case-insensitive) and where their values come from (`probe::Outcome`):
//!
//! | Placeholder | Value | Kinds |
//! |---|---|---|
//! | `[STATUS]` | HTTP status code; an exec command's exit code | http, exec |
//! | `[RESPONSE_TIME]` | the probe's wall time, whole milliseconds | all |
//! | `[BODY]` | the (capped) body, output or received text, trimmed; `[BODY].a.b[0]`, `[BODY][0].x` index it as JSON | http, tcp, exec |
//! | `[CONNECTED]` | `true`/`false`: the target answered at the transport level | all |
//! | `[CERTIFICATE_EXPIRATION]` | milliseconds until the earliest `notAfter` of the peer's chain (negative once expired) | http |
//! | `[DNS_RCODE]` | response code name: `NOERROR`, `NXDOMAIN`, `SERVFAIL`, … | dns |
//! | `[IP]` | the address the probe talked to | icmp, tcp, http, dns, grpc |
//!
//! Functions: `len(P)` is the number of elements of a JSON array, else the character count of the value
//! (an object counts its minified JSON, as Gatus does); `has(P)` is `true` when the value exists (for a
//! JSON path: the path exists, even if its value is `null`; for `[BODY]`: the body is not empty). On the
//! right side only: `pat(glob)` where `*` matches any run of characters, and `any(a, b, …)`; both only
//! with `==`/`!=`.
//!
//! A JSON string compares as its content, other JSON values as minified JSON (`true`, `null`, `[1,2]`).
//!
//! # Comparison
//!
//! When both sides parse as numbers they compare numerically; a value with a duration unit (`200ms`,
//! `1s`, `48h`, `7d`, humantime's syntax) counts as its milliseconds, so `[RESPONSE_TIME] < 1s` and
//! `[CERTIFICATE_EXPIRATION] > 48h` work. Otherwise `==`/`!=` compare the text exactly (quotes are part
//! of the text, as in Gatus), and the ordering operators **fail** (a type mismatch: Gatus would silently
//! compare 0).
//!
//! A value the outcome does not carry (no status after a refused connection, a body that is not JSON, a
//! JSON path that does not exist) makes the condition fail whatever the operator, including `!=`.
//!
//! # Checked at load time (stricter than Gatus)
//!
//! Unknown placeholders (`[STAUTS]`), `[DOMAIN_EXPIRATION]`/`[CONTEXT]` (not supported), a missing
//! operator, a malformed JSON path, `pat()`/`any()` on the left or with an ordering operator, `len()`/
//! `has()` around something that is not a placeholder, and conditions with no placeholder at all.

mod eval;
mod parse;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use self::eval::Evaluator;
use self::parse::Parsed;

/// A parsed condition. Deserialises from its string, so a bad condition in the config fails at its
/// own YAML location; serialises back to the string as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    parsed: Parsed,
}

/// The result of evaluating one condition against one outcome (Gatus's `conditionResults`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionResult {
    /// The condition as written.
    pub condition: String,
    /// Whether it held.
    pub success: bool,
    /// The condition with each placeholder's value in parentheses, e.g. `[STATUS] (500) == 200` or
    /// `[BODY].status (no such path) == ok`. Values are cut to 64 characters and control characters
    /// escaped, so this never carries a whole body.
    pub resolved: String,
}

impl Condition {
    /// Parses a condition. Errors (unknown placeholder, missing operator, bad JSON path, `pat()` on the
    /// left, …) say what was expected.
    pub fn parse(text: &str) -> Result<Condition, String> {
        Ok(Condition {
            text: text.to_owned(),
            parsed: parse::parse(text)?,
        })
    }

    /// The condition as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Fails when the condition reads a placeholder that `kind`'s outcomes never carry (e.g.
    /// `[DNS_RCODE]` on an http check), which would make it fail on every probe.
    pub fn check_kind(&self, kind: probe::Kind) -> Result<(), String> {
        for p in self.parsed.placeholders() {
            if !p.kinds().contains(&kind) {
                let names: Vec<&str> = p.kinds().iter().map(|k| k.as_str()).collect();
                return Err(format!(
                    "{} is not available for {} checks (only for {})",
                    p.as_str(),
                    kind.as_str(),
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Evaluates against `outcome`; `now_unix` (Unix seconds) is the reference for
    /// `[CERTIFICATE_EXPIRATION]`. Never panics, whatever the body holds.
    pub fn evaluate(&self, outcome: &probe::Outcome, now_unix: i64) -> ConditionResult {
        self.evaluate_with(&Evaluator::new(outcome, now_unix))
    }

    fn evaluate_with(&self, ev: &Evaluator<'_>) -> ConditionResult {
        let (success, resolved) = ev.evaluate(&self.parsed);
        ConditionResult {
            condition: self.text.clone(),
            success,
            resolved,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Condition::parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid condition {text:?}: {e}")))
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Applies `conditions` to `outcome` and returns the adjusted outcome with one result per condition.
///
/// - No conditions: the outcome is returned unchanged.
/// - All hold: success, even if the probe itself failed by its kind's default rule (so `[STATUS] == 503`
///   can describe the expected state) — unless the target never answered (`[CONNECTED]` is false) and
///   no condition mentions `[CONNECTED]`: then the original failure stands, so `[RESPONSE_TIME] < 1s`
///   alone cannot make a refused connection healthy (Gatus would). `[CONNECTED] == false` still
///   describes an expected-closed port.
/// - One fails and the probe had failed for a transport reason (anything but `http-status`): the
///   original reason and message are kept, as they say more than "condition failed".
/// - Otherwise: reason `condition-failed`, and the message lists the failed conditions, resolved.
///
/// The body is parsed as JSON at most once for all conditions.
pub fn apply(
    mut outcome: probe::Outcome,
    conditions: &[Condition],
    now_unix: i64,
) -> (probe::Outcome, Vec<ConditionResult>) {
    if conditions.is_empty() {
        return (outcome, Vec::new());
    }
    let results: Vec<ConditionResult> = {
        let ev = Evaluator::new(&outcome, now_unix);
        conditions.iter().map(|c| c.evaluate_with(&ev)).collect()
    };
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.success)
        .map(|r| r.resolved.as_str())
        .collect();
    // Conditions judge what the target answered. When it never answered and no condition asks about
    // [CONNECTED], passing conditions (e.g. only `[RESPONSE_TIME] < 1s`) must not turn a refused or
    // timed-out probe into a success, as they would in Gatus.
    let about_connection = conditions.iter().any(|c| c.text().contains("[CONNECTED]"));
    if failed.is_empty() && !outcome.success && !outcome.connected() && !about_connection {
        return (outcome, results);
    }
    if failed.is_empty() {
        if !outcome.success {
            outcome.message = format!("all conditions hold (probe reported: {})", outcome.message);
        }
        outcome.success = true;
        outcome.reason = None;
    } else {
        let transport_failure =
            !outcome.success && outcome.reason != Some(probe::Reason::HttpStatus);
        outcome.success = false;
        if !transport_failure {
            outcome.reason = Some(probe::Reason::ConditionFailed);
            outcome.message = format!("condition failed: {}", failed.join("; "));
        } else if outcome.reason.is_none() {
            // An outcome marked failed without a reason breaks the contract; classify it anyway.
            outcome.reason = Some(probe::Reason::ConditionFailed);
        }
    }
    (outcome, results)
}
