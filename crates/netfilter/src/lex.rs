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
    tokenize_borrowed(line).map(|v| v.into_iter().map(Cow::into_owned).collect())
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// [`tokenize`] without copying: an argument without quotes (nearly all of them) borrows from
/// `line`; only one with a quoted part is built into a new string.
pub fn tokenize_borrowed(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let mut out = Vec::new();
    tokenize_into(line, &mut out)?;
    Ok(out)
}

/// [`tokenize_borrowed`] appending to `out`, so that a caller reading many lines reuses one buffer.
pub fn tokenize_into<'a>(line: &'a str, out: &mut Vec<Cow<'a, str>>) -> Result<(), String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if is_space(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'"' {
            i += 1;
        }
        if i == bytes.len() || is_space(bytes[i]) {
            // Whitespace and `"` are ASCII, so `start..i` lies on character boundaries.
            out.push(Cow::Borrowed(&line[start..i]));
            continue;
        }
        if i == start
            && let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'"' || b == b'\\')
            && bytes[i + 1 + len] == b'"'
            && bytes.get(i + 2 + len).is_none_or(|&b| is_space(b))
        {
            // A plain `"…"` argument (a comment): its text is the part between the quotes.
            out.push(Cow::Borrowed(&line[i + 1..i + 1 + len]));
            i += len + 2;
            continue;
        }
        let (arg, end) = quoted_arg(line, start)?;
        out.push(Cow::Owned(arg));
        i = end;
    }
    Ok(())
}

/// Reads the argument starting at byte `start` that contains a quote, as `add_param_to_argv`
/// does; returns it and the byte position after it.
fn quoted_arg(line: &str, start: usize) -> Result<(String, usize), String> {
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line[start..].char_indices();
    while let Some((k, c)) = chars.next() {
        if quoted {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | '\''))) => cur.push(e),
                    Some((_, e)) => {
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
                '"' => quoted = true,
                ' ' | '\t' | '\n' | '\r' => return Ok((cur, start + k)),
                _ => cur.push(c),
            }
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    Ok((cur, line.len()))
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
        assert!(tokenize(r#"a b"c\"#).is_err());
        assert_eq!(tokenize(r#"a"b c"d e"#).unwrap(), ["ab cd", "e"]);
        assert_eq!(tokenize(r#""""#).unwrap(), [""]);
        assert_eq!(tokenize("ü \"ö ä\"x").unwrap(), ["ü", "ö äx"]);
    }

    /// The character-by-character reader `tokenize` replaced, kept as the reference.
    fn reference(line: &str) -> Result<Vec<String>, String> {
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

    proptest::proptest! {
        #[test]
        fn borrowed_reader_agrees_with_the_reference(
            line in r#"([ a\t"\\'xü-]|--comment ){0,24}"#
        ) {
            proptest::prop_assert_eq!(tokenize(&line), reference(&line));
        }
    }

    #[test]
    fn borrows_unless_the_argument_must_be_rebuilt() {
        let t = tokenize_borrowed(r#"-A X -m comment --comment "a b" -j DROP"#).unwrap();
        assert!(t.iter().all(|c| matches!(c, Cow::Borrowed(_))), "{t:?}");
        assert_eq!(t[5], "a b");
        for (line, owned) in [
            (r#""a\"b""#, true),
            (r#""a"b"#, true),
            (r#"x"a b""#, true),
            (r#""" y"#, false),
            (r#""a b"#, true),
        ] {
            let t = tokenize_borrowed(line);
            assert_eq!(
                t.as_ref()
                    .map(|t| t.iter().map(|c| c.to_string()).collect::<Vec<_>>())
                    .map_err(Clone::clone),
                tokenize(line),
                "{line}"
            );
            if let Ok(t) = t {
                assert_eq!(matches!(t[0], Cow::Owned(_)), owned, "{line}: {t:?}");
            }
        }
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
