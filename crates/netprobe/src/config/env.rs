//! `${VAR}` expansion on the config text before YAML parsing, so `${NODE_NAME}` works anywhere (keys,
//! values, inside quoted strings — and in comments, which are plain text at this stage).
//!
//! `$${` is a literal `${`; any other `$` is kept as is. Names are `[A-Za-z_][A-Za-z0-9_]*`; there is no
//! default syntax (`${X:-d}`), so a typo cannot silently become a default. Values are inserted verbatim
//! (quote the YAML around them if they may hold `:` or `#`) and may not contain line breaks, so
//! expansion never moves a line. It does move columns on the lines it touches; [`PositionMap`] maps
//! positions in the expanded text back to the file as written.

/// Where the expanded text differs from the source, per line, to map columns back.
#[derive(Debug, Default)]
pub(crate) struct PositionMap {
    /// In source order (so sorted by line, then column).
    edits: Vec<Edit>,
}

/// One replaced span: `src_len` characters at `src_col` became `out_len` characters at `out_col`.
#[derive(Debug)]
struct Edit {
    line: usize,
    src_col: usize,
    src_len: usize,
    out_col: usize,
    out_len: usize,
}

impl PositionMap {
    /// Maps a 1-based (line, column) of the expanded text to the source. A column inside an
    /// expanded value maps to the `${` that produced it.
    pub(crate) fn to_source(&self, line: usize, column: usize) -> (usize, usize) {
        let mut shift: isize = 0;
        for e in self.edits.iter().filter(|e| e.line == line) {
            if column < e.out_col {
                break;
            }
            if column < e.out_col + e.out_len {
                return (line, e.src_col);
            }
            shift += e.src_len as isize - e.out_len as isize;
        }
        (line, column.saturating_add_signed(shift).max(1))
    }
}

/// An expansion error at a 1-based source position.
#[derive(Debug)]
pub(crate) struct ExpandError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

/// Expands `${NAME}` from `env` in `text`.
pub(crate) fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, PositionMap), ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut map = PositionMap::default();
    let chars: Vec<char> = text.chars().collect();
    let (mut line, mut col, mut out_col) = (1usize, 1usize, 1usize);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = |k: usize| chars.get(i + k).copied();
        if c == '$' && next(1) == Some('$') && next(2) == Some('{') {
            out.push_str("${");
            map.edits.push(Edit {
                line,
                src_col: col,
                src_len: 3,
                out_col,
                out_len: 2,
            });
            (i, col, out_col) = (i + 3, col + 3, out_col + 2);
            continue;
        }
        if c == '$' && next(1) == Some('{') {
            let err = |message: String| ExpandError {
                line,
                column: col,
                message,
            };
            let body_start = i + 2;
            let Some(len) = chars[body_start..]
                .iter()
                .position(|&c| matches!(c, '}' | '\n' | '\r'))
            else {
                return Err(err(
                    "unterminated `${`; expected `${NAME}`, or `$${` for a literal `${`".into(),
                ));
            };
            if chars[body_start + len] != '}' {
                return Err(err(
                    "unterminated `${`; expected `${NAME}`, or `$${` for a literal `${`".into(),
                ));
            }
            let name: String = chars[body_start..body_start + len].iter().collect();
            if !valid_name(&name) {
                return Err(err(format!(
                    "invalid environment variable name {name:?} in `${{{name}}}`; expected letters, digits \
                     and `_`, not starting with a digit (write `$${{` for a literal `${{`)"
                )));
            }
            let Some(value) = env(&name) else {
                return Err(err(format!(
                    "environment variable {name} is not set (write `$${{` for a literal `${{`)"
                )));
            };
            if value.contains(['\n', '\r']) {
                return Err(err(format!(
                    "environment variable {name} contains a line break; expected one line"
                )));
            }
            let src_len = len + 3;
            let out_len = value.chars().count();
            out.push_str(&value);
            map.edits.push(Edit {
                line,
                src_col: col,
                src_len,
                out_col,
                out_len,
            });
            (i, col, out_col) = (i + src_len, col + src_len, out_col + out_len);
            continue;
        }
        out.push(c);
        i += 1;
        // YAML line breaks: LF, CRLF (counted once, at the LF) and a lone CR.
        if c == '\n' || (c == '\r' && chars.get(i) != Some(&'\n')) {
            (line, col, out_col) = (line + 1, 1, 1);
        } else {
            (col, out_col) = (col + 1, out_col + 1);
        }
    }
    Ok((out, map))
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NODE" => Some("node-a".into()),
            "E" => Some(String::new()),
            "LONG" => Some("0123456789".into()),
            "NL" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_and_escapes() {
        let (out, _) = expand("a: ${NODE}\nb: $${NODE} $x $$ ${E}.", &env).unwrap();
        assert_eq!(out, "a: node-a\nb: ${NODE} $x $$ .");
    }

    #[test]
    fn errors_point_at_the_dollar() {
        let e = expand("a: 1\n  b: x ${NOPE}\n", &env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));
        assert!(e.message.contains("NOPE is not set"), "{}", e.message);
        let e = expand("a: ${NODE\nb: }", &env).unwrap_err();
        assert_eq!((e.line, e.column), (1, 4));
        let e = expand("a: ${1X}", &env).unwrap_err();
        assert!(e.message.contains("invalid environment variable name"));
        let e = expand("a: ${NL}", &env).unwrap_err();
        assert!(e.message.contains("line break"));
    }

    #[test]
    fn maps_columns_back() {
        // "${LONG}" (7 chars) becomes 10 chars; "$${" (3) becomes 2.
        let (out, map) = expand("x: ${LONG} $${ y\r\nz: ${E}w", &env).unwrap();
        assert_eq!(out, "x: 0123456789 ${ y\r\nz: w");
        assert_eq!(map.to_source(1, 1), (1, 1));
        assert_eq!(map.to_source(1, 4), (1, 4)); // first char of the value → the `$`
        assert_eq!(map.to_source(1, 13), (1, 4));
        assert_eq!(map.to_source(1, 14), (1, 11)); // the space after the value
        assert_eq!(map.to_source(1, 15), (1, 12)); // `$${` → `${`
        assert_eq!(map.to_source(1, 17), (1, 15)); // the space after `${`
        assert_eq!(map.to_source(1, 18), (1, 16)); // `y`
        assert_eq!(map.to_source(2, 4), (2, 8)); // `w` after an empty value
    }
}
