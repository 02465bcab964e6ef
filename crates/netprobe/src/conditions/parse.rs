//! Load-time parsing of a condition string into its parts.
//!
//! The split follows Gatus (`config/endpoint/condition.go`): the operators are looked for as substrings
//! surrounded by single spaces, in the order `==`, `!=`, `<=`, `>=`, `>`, `<`, and the condition is split at
//! the first occurrence of the first operator found. Unlike Gatus, anything that would silently evaluate
//! to a constant there (an unknown placeholder, a malformed JSON path, `pat()` on the left) is rejected here.

use std::fmt;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Le,
    Ge,
    Gt,
    Lt,
}

impl Op {
    /// In Gatus's search order: a condition containing both ` == ` and ` < ` splits at `==`.
    const SEARCH_ORDER: [Op; 6] = [Op::Eq, Op::Ne, Op::Le, Op::Ge, Op::Gt, Op::Lt];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Lt => "<",
        }
    }

    fn is_equality(self) -> bool {
        matches!(self, Op::Eq | Op::Ne)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value a probe outcome provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholder {
    Status,
    ResponseTime,
    Body,
    Connected,
    CertificateExpiration,
    DnsRcode,
    Ip,
}

impl Placeholder {
    const ALL: [Placeholder; 7] = [
        Placeholder::Status,
        Placeholder::ResponseTime,
        Placeholder::Body,
        Placeholder::Connected,
        Placeholder::CertificateExpiration,
        Placeholder::DnsRcode,
        Placeholder::Ip,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Placeholder::Status => "[STATUS]",
            Placeholder::ResponseTime => "[RESPONSE_TIME]",
            Placeholder::Body => "[BODY]",
            Placeholder::Connected => "[CONNECTED]",
            Placeholder::CertificateExpiration => "[CERTIFICATE_EXPIRATION]",
            Placeholder::DnsRcode => "[DNS_RCODE]",
            Placeholder::Ip => "[IP]",
        }
    }

    /// The probe kinds whose outcomes carry this value (see the accessors on `probe::Outcome`).
    pub(crate) fn kinds(self) -> &'static [probe::Kind] {
        use probe::Kind::*;
        match self {
            Placeholder::Status => &[Http, Exec],
            Placeholder::Body => &[Http, Tcp, Exec],
            Placeholder::CertificateExpiration => &[Http],
            Placeholder::DnsRcode => &[Dns],
            Placeholder::Ip => &[Icmp, Tcp, Http, Dns, Grpc],
            Placeholder::ResponseTime | Placeholder::Connected => {
                &[Icmp, Tcp, Http, Dns, Exec, Grpc]
            }
        }
    }

    /// Placeholder names compare case-insensitively, as in Gatus.
    fn from_name(name: &str) -> Option<Placeholder> {
        Placeholder::ALL
            .into_iter()
            .find(|p| p.as_str()[1..p.as_str().len() - 1].eq_ignore_ascii_case(name))
    }
}

/// One step of a `[BODY]` JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// `.name`: a member of an object.
    Key(String),
    /// `[n]`: an element of an array.
    Index(usize),
}

/// `len(...)` / `has(...)` around a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    None,
    Len,
    Has,
}

/// A placeholder reference, possibly with a JSON path and a function around it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub(crate) func: Func,
    pub(crate) placeholder: Placeholder,
    /// Only ever non-empty for [`Placeholder::Body`].
    pub(crate) path: Vec<Segment>,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Expr(Expr),
    Literal(String),
}

/// The right side, which alone may hold `pat()` or `any()`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Right {
    Operand(Operand),
    /// `pat(glob)`: `*` matches any run of characters.
    Pattern(String),
    /// `any(a, b, …)`: equal to one of the (trimmed) options.
    Any(Vec<String>),
}

/// A parsed condition: `left op right`, with the source text of each side for display.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub(crate) left: Operand,
    pub(crate) left_text: String,
    pub(crate) op: Op,
    pub(crate) right: Right,
    pub(crate) right_text: String,
}

impl Parsed {
    /// Every placeholder the condition reads.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        let left = match &self.left {
            Operand::Expr(e) => Some(e.placeholder),
            Operand::Literal(_) => None,
        };
        let right = match &self.right {
            Right::Operand(Operand::Expr(e)) => Some(e.placeholder),
            _ => None,
        };
        left.into_iter().chain(right)
    }
}

const PLACEHOLDER_LIST: &str =
    "[STATUS], [RESPONSE_TIME], [BODY], [CONNECTED], [CERTIFICATE_EXPIRATION], [DNS_RCODE], [IP]";

/// Parses `text`; the error says what was expected.
pub(crate) fn parse(text: &str) -> Result<Parsed, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(
            "empty condition; expected `<left> <operator> <right>`, like `[STATUS] == 200`".into(),
        );
    }
    let Some((op, at)) = Op::SEARCH_ORDER
        .into_iter()
        .find_map(|op| trimmed.find(&format!(" {op} ")).map(|at| (op, at)))
    else {
        return Err("no operator; expected `<left> <operator> <right>` with a space on each side of one of \
             == != < <= > >=, like `[STATUS] == 200`"
            .into());
    };
    let left_text = trimmed[..at].trim();
    let right_text = trimmed[at + op.as_str().len() + 2..].trim();
    // Unreachable after trimming, but cheap to guard: an empty side would become a literal "".
    if left_text.is_empty() || right_text.is_empty() {
        let side = if left_text.is_empty() {
            "left"
        } else {
            "right"
        };
        return Err(format!("nothing on the {side} side of {op}"));
    }
    if function_arg(left_text, "pat").is_some() || function_arg(left_text, "any").is_some() {
        return Err(format!(
            "{}() belongs on the right side, like `[BODY].status == pat(ok*)`",
            &left_text[..3]
        ));
    }
    let left = operand(left_text)?;
    let right = if let Some(glob) = function_arg(right_text, "pat") {
        require_equality(op, "pat()")?;
        Right::Pattern(glob.to_owned())
    } else if let Some(list) = function_arg(right_text, "any") {
        require_equality(op, "any()")?;
        let options: Vec<String> = list.split(',').map(|o| o.trim().to_owned()).collect();
        if options.iter().all(String::is_empty) {
            return Err("any() needs at least one value, like `any(200, 204)`".into());
        }
        Right::Any(options)
    } else {
        Right::Operand(operand(right_text)?)
    };
    let parsed = Parsed {
        left,
        left_text: left_text.to_owned(),
        op,
        right,
        right_text: right_text.to_owned(),
    };
    if parsed.placeholders().next().is_none() {
        return Err(format!(
            "no placeholder on either side; expected one of {PLACEHOLDER_LIST}"
        ));
    }
    Ok(parsed)
}

fn require_equality(op: Op, func: &str) -> Result<(), String> {
    if op.is_equality() {
        Ok(())
    } else {
        Err(format!("{func} only works with == or !=, not {op}"))
    }
}

/// The argument of `name(arg)` when `text` is exactly such a call.
fn function_arg<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn operand(text: &str) -> Result<Operand, String> {
    for (name, func) in [("len", Func::Len), ("has", Func::Has)] {
        if let Some(inner) = function_arg(text, name) {
            let inner = inner.trim();
            return match placeholder_expr(inner)? {
                Some(expr) => Ok(Operand::Expr(Expr { func, ..expr })),
                None => Err(format!(
                    "{name}() takes a placeholder, like `{name}([BODY].items)`; got `{inner}`"
                )),
            };
        }
    }
    Ok(match placeholder_expr(text)? {
        Some(expr) => Operand::Expr(expr),
        None => Operand::Literal(text.to_owned()),
    })
}

/// `Ok(None)` when `text` does not start like a placeholder (it is then a literal). A leading
/// `[LETTERS_]` is always taken as a placeholder attempt, so a typo is an error rather than a literal.
fn placeholder_expr(text: &str) -> Result<Option<Expr>, String> {
    let Some(rest) = text.strip_prefix('[') else {
        return Ok(None);
    };
    let Some(close) = rest.find(']') else {
        return Ok(None);
    };
    let name = &rest[..close];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
        return Ok(None);
    }
    let Some(placeholder) = Placeholder::from_name(name) else {
        let upper = name.to_ascii_uppercase();
        return Err(if upper == "DOMAIN_EXPIRATION" || upper == "CONTEXT" {
            format!(
                "placeholder [{name}] is not supported by netprobe; expected one of {PLACEHOLDER_LIST}"
            )
        } else {
            format!("unknown placeholder [{name}]; expected one of {PLACEHOLDER_LIST}")
        });
    };
    let tail = &rest[close + 1..];
    let path = if placeholder == Placeholder::Body {
        json_path(tail)?
    } else if tail.is_empty() {
        Vec::new()
    } else {
        return Err(format!(
            "unexpected `{tail}` after {}; only [BODY] takes a JSON path",
            placeholder.as_str()
        ));
    };
    Ok(Some(Expr {
        func: Func::None,
        placeholder,
        path,
    }))
}

/// Parses the path after `[BODY]`: `.key`, `[index]`, in any sequence (`.a.b[0]`, `[0].x`, `.m[1][2]`).
fn json_path(mut tail: &str) -> Result<Vec<Segment>, String> {
    let mut path = Vec::new();
    while !tail.is_empty() {
        if let Some(rest) = tail.strip_prefix('.') {
            let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
            if end == 0 {
                return Err(format!(
                    "empty key in JSON path at `{tail}`; expected `.name`"
                ));
            }
            path.push(Segment::Key(rest[..end].to_owned()));
            tail = &rest[end..];
        } else if let Some(rest) = tail.strip_prefix('[') {
            let Some(close) = rest.find(']') else {
                return Err(format!(
                    "unclosed `[` in JSON path at `{tail}`; expected `[index]`"
                ));
            };
            let index = rest[..close].trim().parse::<usize>().map_err(|_| {
                format!(
                    "array index `{}` in JSON path is not a non-negative integer",
                    &rest[..close]
                )
            })?;
            path.push(Segment::Index(index));
            tail = &rest[close + 1..];
        } else {
            return Err(format!(
                "unexpected `{tail}` in JSON path; expected `.name` or `[index]` after [BODY]"
            ));
        }
    }
    Ok(path)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    #[test]
    fn splits_in_gatus_order() {
        // ` == ` is looked for before ` < `, whatever their positions.
        let p = parse("[BODY].a < b == c").unwrap();
        assert_eq!(p.op, Op::Eq);
        assert_eq!(p.left_text, "[BODY].a < b");
        assert_eq!(p.right_text, "c");
        assert_eq!(parse("[STATUS] <= 3").unwrap().op, Op::Le);
        assert_eq!(parse("[STATUS] < 3").unwrap().op, Op::Lt);
    }

    #[test]
    fn paths() {
        let p = parse("[BODY][0].x.y[2][3] == 1").unwrap();
        let Operand::Expr(e) = p.left else {
            panic!("expected expr")
        };
        assert_eq!(
            e.path,
            vec![
                Segment::Index(0),
                Segment::Key("x".into()),
                Segment::Key("y".into()),
                Segment::Index(2),
                Segment::Index(3)
            ]
        );
    }

    #[test]
    fn literal_brackets_are_not_placeholders() {
        let p = parse("[BODY].tags == [1, 2]").unwrap();
        assert_eq!(p.right, Right::Operand(Operand::Literal("[1, 2]".into())));
    }
}
