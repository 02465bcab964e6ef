//! Command-line interface (clap). Exit codes: 0 ok, 1 check failed, 2 usage or input error.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use probe::HumanDuration;

use crate::trace;

/// netprobe: network health checks with kubelet probe semantics, history, metrics and an API.
#[derive(Debug, Parser)]
#[command(name = "netprobe", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `netprobe=debug`); default `info` for `run`,
    /// `warn` for the one-shot verbs.
    #[arg(long, global = true, env = "NETPROBE_LOG")]
    pub log: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "NETPROBE_LOG_JSON")]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the checks of a config file: schedule probes, keep history, serve the API and metrics.
    Run {
        /// Config file (YAML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Override `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Upper bound on probes running at once.
        #[arg(long, default_value_t = 4096)]
        max_in_flight: usize,
        /// Threads running the agent's async tasks (probes, mesh, API). One suffices for an
        /// agent: its work waits on the network, and snapshots, diagnoses and SQLite run on
        /// threads of their own; a second thread mostly wakes up to steal work (5× the context
        /// switches of a mesh agent, ~1 point of a core more; BENCHMARKS.md). Raise it for many
        /// TLS-heavy checks.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: u16,
    },
    /// Check a config file without running it; exit 2 with file:line:column on error.
    Validate {
        /// Config file (YAML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Probe one target once and print what happened, phase by phase; exit 0 success, 1 failure.
    Check {
        /// `icmp://HOST`, `tcp://HOST:PORT`, `http(s)://…`, `dns://SERVER[:PORT]/NAME?type=A`,
        /// `grpc://HOST:PORT[/SERVICE]`.
        target: String,
        /// ICMP echoes to send.
        #[arg(long)]
        count: Option<u32>,
        /// Bound on the whole probe.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: HumanDuration,
        /// A Gatus-style condition that must hold (repeatable), e.g. `[STATUS] == 200`.
        #[arg(long = "condition")]
        conditions: Vec<String>,
        /// HTTPS: do not verify the server certificate (as the kubelet's httpGet).
        #[arg(long)]
        insecure: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
        /// After a failure, diagnose it (snapshot of this host's state, findings with evidence).
        #[arg(long)]
        diagnose: bool,
    },
    /// Probe a target once and name the cause of a failure from the host's own state (rules of
    /// every backend, routes and source address, sysctls, credentials, listening sockets), with
    /// evidence and fixes; exit 0 healthy, 1 failure (findings, or none that explain it), 2 bad input.
    Diagnose(crate::diagnose::cli::DiagnoseArgs),
    /// Print the diagnosis snapshot of a network namespace as JSON (`diagnose --snapshot FILE`
    /// reads it, on any machine).
    Snapshot(crate::diagnose::cli::SnapshotArgs),
    /// Trace one flow through netfilter rulesets (saved, or read live from a network namespace):
    /// which rule of which backend, table and chain decides it, hook by hook, with NAT; exit 0
    /// accept, 1 drop/reject/undetermined, 2 bad input. Native `nft -j` rulesets are collected
    /// with `--live` but not evaluated yet.
    Trace(trace::TraceArgs),
    /// Keep the rules the mesh needs (ICMP echo in/out and the TCP fallback port on the given
    /// interfaces) in chains of netprobe's own: `ensure`, `status` (exit 0 in place, 1 missing),
    /// `remove`; 2 on bad input.
    Firewall {
        /// What to do.
        #[command(subcommand)]
        command: crate::firewall::cli::FirewallCommand,
    },
    /// Cut a pod's network namespace off the network (NETPROBE-ISOLATE chains, IPv4 and IPv6),
    /// optionally keeping the kubelet's probes; prints the kubelet's predicted reaction first and
    /// records the isolation in the store; exit 0 done, 1 not applied, 2 bad input.
    Isolate(crate::isolate::IsolateArgs),
    /// Undo `isolate` exactly (the namespace's ruleset as before); exit 0 done, 1 not applied,
    /// 2 bad input or not isolated.
    Release(crate::isolate::ReleaseArgs),
    /// fping-style ICMP sweep over many hosts (addresses, CIDR prefixes, or `--targets FILE`):
    /// per-host RTT and loss; exit 0 every host answered, 1 some did not, 2 bad input.
    Sweep(crate::sweep::SweepArgs),
    /// Static checks on netfilter rulesets.
    Rules {
        /// What to do.
        #[command(subcommand)]
        command: RulesCommand,
    },
}

/// `netprobe rules …` verbs.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print findings (`missing-chain`, `shadowed-rule`, `both-backends`, `k8s-backend`); exit 0
    /// clean, 1 a warning or error finding, 2 unreadable or unparsable input.
    Check {
        /// `iptables-save` output (several files: e.g. legacy and nft dumps), or with
        /// `--restore` `iptables-restore` payloads.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The files are `iptables-restore` payloads (chains they use but do not declare are findings).
        #[arg(long)]
        restore: bool,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    HumanDuration::parse(s)
}
