//! The config error type and its construction from serde-saphyr errors and `Spanned` locations.

use std::fmt;

use serde_saphyr::{Location, MessageFormatter, UserMessageFormatter};

use super::env::PositionMap;

/// Why a config could not be loaded, and where. `Display` gives `FILE:LINE:COL: message` (or
/// `FILE: message` when no position applies, e.g. an unreadable file); lines and columns are 1-based,
/// columns count characters, both refer to the file as written (before `${VAR}` expansion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other source name given to [`super::parse`]).
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    pub column: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.origin, self.message),
            (Some(line), None) => write!(f, "{}:{line}: {}", self.origin, self.message),
            _ => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about the whole file.
    pub(crate) fn whole_file(origin: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error at a source position.
    pub(crate) fn at(origin: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// An error at a serde-saphyr location in the expanded text, mapped back to the source.
    pub(crate) fn at_location(
        origin: &str,
        map: &PositionMap,
        loc: Location,
        message: impl Into<String>,
    ) -> Self {
        match known(loc) {
            Some((line, col)) => {
                let (line, col) = map.to_source(line, col);
                ConfigError::at(origin, line, col, message)
            }
            None => ConfigError::whole_file(origin, message),
        }
    }

    /// Converts a deserialisation error: the message without serde-saphyr's own location suffix or
    /// snippet, control characters escaped so it stays one line.
    pub(crate) fn from_yaml(origin: &str, map: &PositionMap, err: &serde_saphyr::Error) -> Self {
        let mut inner = err;
        while let serde_saphyr::Error::AliasError { error, .. }
        | serde_saphyr::Error::WithSnippet { error, .. } = inner
        {
            inner = error;
        }
        let message = escape_controls(&UserMessageFormatter.format_message(inner));
        match err.location() {
            Some(loc) => ConfigError::at_location(origin, map, loc, message),
            None => ConfigError::whole_file(origin, message),
        }
    }
}

/// `None` for serde-saphyr's `Location::UNKNOWN` (line 0), which buffered values report.
pub(crate) fn known(loc: Location) -> Option<(usize, usize)> {
    let line = usize::try_from(loc.line()).ok().filter(|l| *l > 0)?;
    let col = usize::try_from(loc.column()).ok().filter(|c| *c > 0)?;
    Some((line, col))
}

/// The 1-based line and column just after `prefix` (for positions found outside the YAML parser).
pub(crate) fn line_col(prefix: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(prefix);
    let line = 1 + text.matches('\n').count();
    let last = text.rsplit('\n').next().unwrap_or("");
    (line, 1 + last.chars().count())
}

fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
