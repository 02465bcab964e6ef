//! Property tests: no text panics the loader, and every error it returns carries a sane position.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use netprobe::config::{self, ConfigError};
use proptest::prelude::*;

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_owned())
}

/// An error's position, when present, lies inside the text (or just past its end).
fn position_is_sane(text: &str, e: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.origin.as_str(), "prop.yaml");
    prop_assert!(!e.message.is_empty());
    prop_assert!(
        !e.message.contains('\n'),
        "multi-line message: {:?}",
        e.message
    );
    if let Some(line) = e.line {
        let lines = text.split(['\n', '\r']).count();
        prop_assert!(
            line >= 1 && line <= lines + 1,
            "line {} of {}: {}",
            line,
            lines,
            e
        );
        prop_assert!(e.column.is_some_and(|c| c >= 1), "{}", e);
    }
    Ok(())
}

/// Fragments that steer random text toward the config's grammar: keys, probe blocks, durations,
/// conditions, flow and block syntax, anchors, aliases, tags, `${VAR}`.
fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "checks:",
        "\n",
        "\n  ",
        "\n    ",
        "- ",
        "name: ",
        "a",
        "web",
        "tcp: ",
        "http: ",
        "icmp: ",
        "exec: ",
        "{ address: \"127.0.0.1:1\" }",
        "{ url: \"http://127.0.0.1/\" }",
        "{}",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        "period: ",
        "10s",
        "0s",
        "10x",
        "timeout: ",
        "failure_threshold: ",
        "0",
        "3",
        "-1",
        "conditions: ",
        "[\"[STATUS] == 200\"]",
        "\"[BODY].a[0] == pat(x*)\"",
        "defaults:",
        "server:",
        "listen: ",
        "\"127.0.0.1:8080\"",
        "storage:",
        "retention: ",
        "&a ",
        "*a",
        "!!str ",
        "${SET}",
        "${UNSET}",
        "$${",
        "\t",
        "'",
        "\"",
        "#",
        "---",
        "? ",
        "|",
        ">",
        "<<: ",
        "~",
        "null",
        "é",
        "\u{feff}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Err(e) = config::parse(&text, "prop.yaml", &env) {
            position_is_sane(&text, &e)?;
        }
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = config::parse(&text, "prop.yaml", &env) {
            position_is_sane(&text, &e)?;
        }
    }

    #[test]
    fn grammar_shaped_text_never_panics(tokens in proptest::collection::vec(token(), 0..60)) {
        let text = tokens.concat();
        match config::parse(&text, "prop.yaml", &env) {
            Err(e) => position_is_sane(&text, &e)?,
            Ok(cfg) => {
                // Whatever got through is valid.
                let mut names: Vec<&str> = cfg.checks.iter().map(|c| c.name.as_str()).collect();
                let count = names.len();
                names.sort_unstable();
                names.dedup();
                prop_assert_eq!(names.len(), count);
                for c in &cfg.checks {
                    prop_assert!(!c.period.is_zero() && !c.timeout.is_zero());
                    prop_assert!(c.success_threshold >= 1 && c.failure_threshold >= 1);
                }
            }
        }
    }
}
