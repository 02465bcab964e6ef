//! Logging setup: tracing to stderr, text or JSON, filtered by `--log` / `NETPROBE_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. A bad filter falls back to `info` with a warning.
pub fn init(filter: &str, json: bool) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        return; // already installed (tests)
    }
    if let Some(e) = bad {
        tracing::warn!(error = %e, "Invalid log filter; using info.");
    }
}
