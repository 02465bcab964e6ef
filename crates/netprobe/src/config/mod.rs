//! The configuration file: YAML read in two stages (ripgrep/Vector style).
//!
//! 1. `${VAR}` expansion from the environment on the raw text (see below), then serde-saphyr reads the
//!    text into raw structs that reject unknown keys everywhere and check each value where it stands
//!    (durations, thresholds, names, addresses, conditions), so an error points at its own line and
//!    column.
//! 2. Validation across values: exactly one probe key per check, unique names, conditions that the
//!    probe kind can answer, and each prober's own `new()` (a bad URL or address fails at load time).
//!    These errors point at the offending value through serde-saphyr's `Spanned` locations.
//!
//! ```yaml
//! server: { listen: "127.0.0.1:8080" }              # default 127.0.0.1:8080
//! storage: { path: "netprobe.db", retention: "7d" } # defaults netprobe.db (relative to the working
//!                                                   # directory), 7d
//! defaults: { period: "10s", timeout: "1s", initial_delay: "0s", success_threshold: 1, failure_threshold: 3 }
//! diagnosis: { enabled: true, min_interval: "5m", max_concurrent: 2 } # the defaults
//! checks:
//!   - name: calico-health                           # [A-Za-z0-9_.-]+, unique
//!     http: { url: "http://127.0.0.1:9099/liveness" }
//!     conditions: ["[STATUS] == 200", "[RESPONSE_TIME] < 200ms"]
//!   - name: gateway
//!     icmp: { host: "198.51.100.1", count: 3 }
//!     period: "5s"                                  # overrides defaults.period
//! ```
//!
//! A check has exactly one of the probe keys `icmp`, `tcp`, `http`, `dns`, `exec`, `grpc` (as a kubelet
//! probe has one of `exec`, `httpGet`, `tcpSocket`, `grpc`); a key with an empty value counts as absent.
//! `period`, `timeout`, `initial_delay`, `success_threshold` and `failure_threshold` override `defaults`,
//! whose built-in values are the kubelet's: 10s, 1s, 0s, 1, 3. Periods, timeouts and the retention must
//! be greater than zero and thresholds at least 1 (the kubelet's minimums).
//!
//! # Environment variables
//!
//! `${NAME}` anywhere in the file (keys, values, quoted strings, even comments) is replaced by the
//! variable's value before parsing; `$${` writes a literal `${`. An unset variable is an error at the
//! `${`. Values are inserted verbatim and must be one line, so quote the YAML around a value that may
//! hold `:` or `#`. Expansion can shift columns on the lines it touches: error columns are mapped back
//! to the file as written, and a position inside an inserted value is reported at its `${`.
//!
//! # Limits
//!
//! Files over [`MAX_CONFIG_BYTES`] are refused, and serde-saphyr's `Budget` bounds nesting depth,
//! aliases and node counts, so a YAML bomb fails fast with an error instead of exhausting memory.

mod env;
mod error;
mod mesh;
mod raw;
mod validate;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use probe::dns::{DnsConfig, DnsProber};
use probe::exec::{ExecConfig, ExecProber};
use probe::grpc::{GrpcConfig, GrpcProber};
use probe::http::{HttpConfig, HttpProber};
use probe::icmp::{IcmpConfig, IcmpEngine, IcmpProber};
use probe::tcp::{TcpConfig, TcpProber};

pub use self::error::ConfigError;
pub use self::mesh::{
    DnsDiscovery, KubernetesDiscovery, KubernetesSource, MAX_STATIC_PEERS, MeshConfig, StaticPeer,
};
use crate::conditions::Condition;

/// The largest config file accepted, in bytes (before and after `${VAR}` expansion).
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The history store.
    pub storage: StorageConfig,
    /// The defaults the checks were resolved against (kept for display).
    pub defaults: Defaults,
    /// Automatic diagnosis when a check turns unhealthy.
    pub diagnosis: DiagnosisConfig,
    /// The checks, in file order, with every default applied.
    pub checks: Vec<CheckConfig>,
    /// The node latency mesh (`mesh:`), if configured.
    pub mesh: Option<MeshConfig>,
}

/// `server:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address of the API, metrics and status page. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// `storage:`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// SQLite file, as written (relative paths are relative to the working directory). Default
    /// `netprobe.db`.
    pub path: PathBuf,
    /// How long results, events and diagnoses are kept. Default 7 days; always greater than zero.
    pub retention: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("netprobe.db"),
            retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `diagnosis:`: when a check turns unhealthy, `netprobe run` snapshots the host's state and
/// diagnoses the check's flow in the background (see [`crate::autodiag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagnosisConfig {
    /// Diagnose at all. Default true.
    pub enabled: bool,
    /// Least time between the starts of two diagnoses of one check; a check that flaps faster is
    /// diagnosed once per interval. Default 5 minutes; always greater than zero.
    pub min_interval: Duration,
    /// Diagnoses running at once across all checks (each runs `iptables-save`, `nft`, … once), so a
    /// mass outage cannot fork hundreds of collectors. Default 2; 1 to 64.
    pub max_concurrent: u32,
}

impl Default for DiagnosisConfig {
    fn default() -> Self {
        DiagnosisConfig {
            enabled: true,
            min_interval: Duration::from_secs(300),
            max_concurrent: 2,
        }
    }
}

/// `defaults:`: the kubelet's probe timing fields. `Default` gives the kubelet's own defaults
/// (Probe API docs: `periodSeconds` 10, `timeoutSeconds` 1, `initialDelaySeconds` 0,
/// `successThreshold` 1, `failureThreshold` 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Time between probe starts; greater than zero.
    pub period: Duration,
    /// Bound on one probe; greater than zero.
    pub timeout: Duration,
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Consecutive successes to turn healthy; at least 1.
    pub success_threshold: u32,
    /// Consecutive failures to turn unhealthy; at least 1.
    pub failure_threshold: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            initial_delay: Duration::ZERO,
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

/// One check with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Unique name matching `[A-Za-z0-9_.-]{1,128}`.
    pub name: String,
    /// What to probe.
    pub spec: ProbeSpec,
    /// Time between probe starts; greater than zero.
    pub period: Duration,
    /// Bound on one probe; greater than zero.
    pub timeout: Duration,
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Consecutive successes to turn healthy; at least 1.
    pub success_threshold: u32,
    /// Consecutive failures to turn unhealthy; at least 1.
    pub failure_threshold: u32,
    /// Conditions replacing the kind's default success rule when non-empty (see [`crate::conditions`]).
    pub conditions: Vec<Condition>,
}

/// A check's probe: one variant per probe kind, matched exhaustively.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSpec {
    /// `icmp:`.
    Icmp(IcmpConfig),
    /// `tcp:`.
    Tcp(TcpConfig),
    /// `http:`.
    Http(HttpConfig),
    /// `dns:`.
    Dns(DnsConfig),
    /// `exec:`.
    Exec(ExecConfig),
    /// `grpc:`.
    Grpc(GrpcConfig),
}

impl ProbeSpec {
    /// The probe kind.
    pub fn kind(&self) -> probe::Kind {
        match self {
            ProbeSpec::Icmp(_) => probe::Kind::Icmp,
            ProbeSpec::Tcp(_) => probe::Kind::Tcp,
            ProbeSpec::Http(_) => probe::Kind::Http,
            ProbeSpec::Dns(_) => probe::Kind::Dns,
            ProbeSpec::Exec(_) => probe::Kind::Exec,
            ProbeSpec::Grpc(_) => probe::Kind::Grpc,
        }
    }

    /// Builds the prober through the kind's `XProber::new`; ICMP probers share `icmp`. [`parse`] has
    /// already done this once per check, so on a loaded config it fails only if a prober's validation
    /// depends on the environment (e.g. name resolution).
    pub fn build(&self, icmp: &Arc<IcmpEngine>) -> Result<probe::Prober, probe::ConfigError> {
        Ok(match self {
            ProbeSpec::Icmp(c) => {
                probe::Prober::Icmp(IcmpProber::new(c.clone(), Arc::clone(icmp))?)
            }
            ProbeSpec::Tcp(c) => probe::Prober::Tcp(TcpProber::new(c.clone())?),
            ProbeSpec::Http(c) => probe::Prober::Http(HttpProber::new(c.clone())?),
            ProbeSpec::Dns(c) => probe::Prober::Dns(DnsProber::new(c.clone())?),
            ProbeSpec::Exec(c) => probe::Prober::Exec(ExecProber::new(c.clone())?),
            ProbeSpec::Grpc(c) => probe::Prober::Grpc(GrpcProber::new(c.clone())?),
        })
    }
}

/// Reads and validates the file at `path`, expanding `${VAR}` from the process environment (variables
/// that are not valid UTF-8 count as unset). Errors name the file, and where known the line and column.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let io_err =
        |e: std::io::Error| ConfigError::whole_file(&origin, format!("cannot read the file: {e}"));
    let file = std::fs::File::open(path).map_err(io_err)?;
    // `take` bounds the read even if the file grows or is a FIFO; one byte more detects "too large".
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::whole_file(
            &origin,
            format!("file is larger than {MAX_CONFIG_BYTES} bytes; expected a config file"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = error::line_col(&e.as_bytes()[..e.utf8_error().valid_up_to()]);
        ConfigError::at(
            &origin,
            line,
            column,
            "invalid UTF-8; expected a UTF-8 text file",
        )
    })?;
    parse(&text, &origin, &|name| std::env::var(name).ok())
}

/// Parses and validates `text`. `origin` names the source in errors (usually the file path); `env`
/// looks up `${VAR}` values (the process environment in [`load`], a map in tests).
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    validate::parse(text, origin, env)
}
