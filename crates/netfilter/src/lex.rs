//! Splitting a rule line into arguments, and quoting arguments back, as iptables does.
//!
//! Reading follows `add_param_to_argv()` (iptables/xshared.c): whitespace separates arguments;
//! `"` opens and closes a quoted part; inside quotes `\"`, `\\` and `\'` stand for the character
//! and any other backslash is kept. Writing follows `xtables_save_string()` (libxtables/xtables.c):
//! a non-empty value made only of `[A-Za-z0-9_-]` is written bare, anything else in double quotes
//! with `"`, `\` and `'` escaped by a backslash.

use std::borrow::Cow;

/// Splits `line` into arguments. Errors on an unterminated quote.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    // `has` distinguishes an empty quoted argument ("") from no argument.
    let mut has = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\' | '\'')) => cur.push(e),
                    Some(e) => {
                        cur.push('\\');
                        cur.push(e);
                    }
                    None => return Err("unterminated quote".to_string()),
                },
                '"' => quoted = false,
                _ => cur.push(c),
            }
        } else {
            match c {
                '"' => {
                    quoted = true;
                    has = true;
                }
                ' ' | '\t' | '\n' | '\r' => {
                    if has {
                        out.push(std::mem::take(&mut cur));
                        has = false;
                    }
                }
                _ => {
                    cur.push(c);
                    has = true;
                }
            }
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    if has {
        out.push(cur);
    }
    Ok(out)
}

/// Quotes `value` as iptables-save does (see the module docs).
pub fn quote(value: &str) -> Cow<'_, str> {
    let bare = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return Cow::Borrowed(value);
    }
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    Cow::Owned(s)
}

/// Quotes `value` only when the tokenizer needs it (empty, whitespace, quotes or backslashes), for
/// arguments kept verbatim (unknown matches and targets) whose original quoting is not known.
pub fn quote_min(value: &str) -> Cow<'_, str> {
    let needs = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\\' | '\''));
    if needs {
        let mut s = String::with_capacity(value.len() + 2);
        s.push('"');
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '\'') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        Cow::Owned(s)
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn splits_and_unquotes() {
        let t = tokenize(r#"-A X -m comment --comment "a b \"q\" c" -j DROP"#).unwrap();
        assert_eq!(
            t,
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                r#"a b "q" c"#,
                "-j",
                "DROP"
            ]
        );
        assert_eq!(
            tokenize(r#"--comment "" x"#).unwrap(),
            ["--comment", "", "x"]
        );
        assert_eq!(tokenize(r#""a\nb""#).unwrap(), [r"a\nb"]);
        assert_eq!(tokenize("  a\t b  ").unwrap(), ["a", "b"]);
        assert!(tokenize(r#"--comment "open"#).is_err());
    }

    #[test]
    fn quotes_like_iptables_save() {
        assert_eq!(quote("KUBE-SVC_1"), "KUBE-SVC_1");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote(r#"x"y\z'w"#), r#""x\"y\\z\'w""#);
        for s in ["a b", "", r#"x"y\z'"#, "ns/svc:http", "p"] {
            assert_eq!(tokenize(&quote(s)).unwrap(), [s]);
        }
    }
}
