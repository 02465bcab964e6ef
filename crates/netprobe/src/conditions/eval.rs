//! Evaluation of parsed conditions against a probe outcome.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;

use serde_json::Value;

use super::parse::{Expr, Func, Op, Operand, Parsed, Placeholder, Right, Segment};

/// Resolved values shown in results are cut to this many characters, so a message never carries a
/// whole response body.
const MAX_SHOWN_CHARS: usize = 64;

/// Reads values from one outcome; the body is parsed as JSON at most once, on first use.
pub(crate) struct Evaluator<'a> {
    outcome: &'a probe::Outcome,
    now_unix: i64,
    json: OnceCell<Option<Value>>,
}

/// A resolved side of a comparison.
enum Resolved {
    /// `text` is what is compared; `shown` is what the result displays (durations humanised).
    Value { text: String, shown: Option<String> },
    /// The outcome does not carry this value; the text says why (`missing`, `no such path`, …).
    Missing(&'static str),
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(outcome: &'a probe::Outcome, now_unix: i64) -> Self {
        Evaluator {
            outcome,
            now_unix,
            json: OnceCell::new(),
        }
    }

    /// Returns whether the condition holds and its resolved display form.
    pub(crate) fn evaluate(&self, c: &Parsed) -> (bool, String) {
        let left = self.operand(&c.left);
        let left_shown = show(&c.left_text, &c.left, &left);
        let (success, right_shown) = match &c.right {
            Right::Pattern(glob) => {
                let hit = value_text(&left).map(|l| glob_match(glob, l));
                (
                    hit.is_some_and(|hit| hit == (c.op == Op::Eq)),
                    sanitize(&c.right_text),
                )
            }
            Right::Any(options) => {
                let hit = value_text(&left).map(|l| options.iter().any(|o| equal(l, o)));
                (
                    hit.is_some_and(|hit| hit == (c.op == Op::Eq)),
                    sanitize(&c.right_text),
                )
            }
            Right::Operand(op) => {
                let right = self.operand(op);
                let success = match (value_text(&left), value_text(&right)) {
                    (Some(l), Some(r)) => compare(l, c.op, r),
                    _ => false,
                };
                (success, show(&c.right_text, op, &right))
            }
        };
        (success, format!("{left_shown} {} {right_shown}", c.op))
    }

    fn operand(&self, operand: &Operand) -> Resolved {
        match operand {
            Operand::Literal(text) => Resolved::Value {
                text: text.clone(),
                shown: None,
            },
            Operand::Expr(expr) => self.expr(expr),
        }
    }

    fn expr(&self, expr: &Expr) -> Resolved {
        if expr.placeholder == Placeholder::Body {
            return self.body(expr);
        }
        let base = self.placeholder(expr.placeholder);
        match (expr.func, base) {
            (Func::None, base) => base,
            (Func::Has, base) => bool_value(matches!(base, Resolved::Value { .. })),
            (Func::Len, Resolved::Value { text, .. }) => count(text.chars().count()),
            (Func::Len, missing) => missing,
        }
    }

    fn placeholder(&self, p: Placeholder) -> Resolved {
        let o = self.outcome;
        let value = |text: String| Resolved::Value { text, shown: None };
        let missing = Resolved::Missing("missing");
        match p {
            Placeholder::Status => o.status().map_or(missing, |s| value(s.to_string())),
            Placeholder::ResponseTime => {
                let ms = o.duration.as_millis();
                Resolved::Value {
                    text: ms.to_string(),
                    shown: Some(format!("{ms}ms")),
                }
            }
            Placeholder::Connected => value(o.connected().to_string()),
            Placeholder::CertificateExpiration => match o.certificate_not_after() {
                None => missing,
                Some(not_after) => {
                    let secs = not_after.saturating_sub(self.now_unix);
                    let human = humantime::format_duration(std::time::Duration::from_secs(
                        secs.unsigned_abs(),
                    ));
                    let shown = if secs < 0 {
                        format!("expired {human} ago")
                    } else {
                        human.to_string()
                    };
                    Resolved::Value {
                        text: secs.saturating_mul(1000).to_string(),
                        shown: Some(shown),
                    }
                }
            },
            Placeholder::DnsRcode => o.dns_rcode().map_or(missing, |r| value(r.to_owned())),
            Placeholder::Ip => o.ip().map_or(missing, |ip| value(ip.to_string())),
            // Handled by `body`.
            Placeholder::Body => missing,
        }
    }

    fn body(&self, expr: &Expr) -> Resolved {
        let Some(raw) = self.outcome.body() else {
            return match expr.func {
                Func::Has => bool_value(false),
                _ => Resolved::Missing("missing"),
            };
        };
        if expr.path.is_empty() {
            let text = String::from_utf8_lossy(raw);
            let text = text.trim();
            return match expr.func {
                Func::Has => bool_value(!text.is_empty()),
                // As Gatus: a JSON array counts its elements, anything else its characters.
                Func::Len => match self.json() {
                    Some(Value::Array(items)) => count(items.len()),
                    _ => count(text.chars().count()),
                },
                Func::None => Resolved::Value {
                    text: text.to_owned(),
                    shown: None,
                },
            };
        }
        let found = match self.json() {
            // A failed transport leaves an empty body: say so rather than "not JSON".
            None if raw.is_empty() => Err("empty body"),
            None => Err("body is not JSON"),
            Some(root) => walk(root, &expr.path).ok_or("no such path"),
        };
        match (expr.func, found) {
            (Func::Has, found) => bool_value(found.is_ok()),
            (_, Err(why)) => Resolved::Missing(why),
            (Func::Len, Ok(Value::Array(items))) => count(items.len()),
            (Func::Len, Ok(v)) => count(json_text(v).chars().count()),
            (Func::None, Ok(v)) => Resolved::Value {
                text: json_text(v).into_owned(),
                shown: None,
            },
        }
    }

    fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                self.outcome
                    .body()
                    .and_then(|b| serde_json::from_slice(b).ok())
            })
            .as_ref()
    }
}

fn walk<'v>(mut v: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    for seg in path {
        v = match seg {
            Segment::Key(k) => v.as_object()?.get(k)?,
            Segment::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

/// A JSON string compares as its content; everything else as minified JSON (`null`, `true`, `[1,2]`).
fn json_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

fn bool_value(b: bool) -> Resolved {
    Resolved::Value {
        text: b.to_string(),
        shown: None,
    }
}

fn count(n: usize) -> Resolved {
    Resolved::Value {
        text: n.to_string(),
        shown: None,
    }
}

fn value_text(r: &Resolved) -> Option<&str> {
    match r {
        Resolved::Value { text, .. } => Some(text),
        Resolved::Missing(_) => None,
    }
}

/// `[STATUS] (500)`; a literal is shown as written.
fn show(source: &str, operand: &Operand, r: &Resolved) -> String {
    let source = sanitize(source);
    match (operand, r) {
        (Operand::Literal(_), _) => source,
        (Operand::Expr(_), Resolved::Missing(why)) => format!("{source} ({why})"),
        (Operand::Expr(_), Resolved::Value { text, shown }) => {
            format!("{source} ({})", sanitize(shown.as_deref().unwrap_or(text)))
        }
    }
}

/// Cuts to [`MAX_SHOWN_CHARS`] and escapes control characters, so the result stays one short line.
fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A number as compared: integers exactly, anything else as `f64`.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Parses a decimal number, or a duration with a unit (`200ms`, `1s`, `48h`, `7d`) as milliseconds.
fn number(text: &str) -> Option<Num> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Some(Num::Int(i));
    }
    // `f64::from_str` also takes `inf` and `NaN`; only plain decimal notation counts as a number here.
    let plain = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if plain && let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
        return Some(Num::Float(f));
    }
    let starts_with_digit = text.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if starts_with_digit && let Ok(d) = humantime::parse_duration(text) {
        return Some(match i64::try_from(d.as_millis()) {
            Ok(ms) if d.subsec_nanos() % 1_000_000 == 0 => Num::Int(ms),
            _ => Num::Float(d.as_secs_f64() * 1000.0),
        });
    }
    None
}

/// Equality: numerically when both sides are numbers (so `200 == 200.0` and `1000 == 1s`), else as text.
fn equal(a: &str, b: &str) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.cmp(y) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn compare(a: &str, op: Op, b: &str) -> bool {
    match op {
        Op::Eq => equal(a, b),
        Op::Ne => !equal(a, b),
        // Ordering needs two numbers: a string on either side is a type mismatch and fails.
        _ => {
            let Some(ord) = number(a).zip(number(b)).and_then(|(x, y)| x.cmp(y)) else {
                return false;
            };
            match op {
                Op::Lt => ord == Ordering::Less,
                Op::Le => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }
        }
    }
}

/// Glob match where `*` matches any run of characters (including none) and everything else is literal.
/// Linear-time greedy matching with backtracking to the last `*` only.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        for (p, t, want) in [
            ("ok*", "okay", true),
            ("ok*", "ok", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*.example.com", "www.example.com", true),
            ("https://*", "https://x/y", true),
            ("a?c", "abc", false),
        ] {
            assert_eq!(glob_match(p, t), want, "pat({p}) vs {t:?}");
        }
    }

    #[test]
    fn numbers() {
        assert!(matches!(number("200"), Some(Num::Int(200))));
        assert!(matches!(number("1s"), Some(Num::Int(1000))));
        assert!(matches!(number("48h"), Some(Num::Int(172_800_000))));
        assert!(matches!(number("1.5"), Some(Num::Float(_))));
        assert!(number("inf").is_none());
        assert!(number("NaN").is_none());
        assert!(number("ok").is_none());
        assert!(number("").is_none());
    }
}
