//! `netprobe firewall ensure|status|remove`: a thin shell over [`super`].
//!
//! Exit codes: `ensure`/`remove` 0 done (also when nothing was to do), 1 a tool failed;
//! `status` 0 everything in place, 1 something missing (listed); all 2 on bad input (no such
//! namespace, invalid interface name or port, a tool of the backend not installed, a foreign rule
//! referring to netprobe's chains on `remove`).

use clap::{Args, Subcommand, ValueEnum};
use netfilter::Backend;
use netfilter::manage::Spec;
use serde_json::json;

use super::{FirewallConfig, FirewallError, Report};
use crate::collect::NetnsTarget;
use crate::oneshot::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// `netprobe firewall …` verbs.
#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Install the rules (idempotent: a second run changes nothing).
    Ensure(FirewallArgs),
    /// Say whether the rules are in place (exit 0) or what is missing (exit 1).
    Status(FirewallArgs),
    /// Delete netprobe's jumps and chains, and nothing else.
    Remove(FirewallArgs),
}

/// Backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Detect (Kubernetes marker chains, else the backend with more rules, else nft).
    Auto,
    /// iptables-legacy (x_tables).
    Legacy,
    /// iptables-nft (nf_tables).
    Nft,
}

/// Where and what.
#[derive(Debug, Args)]
pub struct FirewallArgs {
    /// The network namespace `ip netns` calls NAME (`/run/netns/NAME`); default the current one.
    #[arg(long, value_name = "NAME", conflicts_with = "pid")]
    pub netns: Option<String>,
    /// The network namespace of process PID.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// An interface echo-requests come in and replies go out on (repeatable).
    #[arg(long = "interface", value_name = "IF", required = true)]
    pub interfaces: Vec<String>,
    /// The mesh's TCP fallback port, permitted on the interfaces too.
    #[arg(long, value_name = "N")]
    pub tcp_port: Option<u16>,
    /// Which iptables backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl FirewallArgs {
    /// The library configuration.
    pub fn config(&self) -> FirewallConfig {
        let netns = match (&self.netns, self.pid) {
            (Some(name), _) => NetnsTarget::Named { name: name.clone() },
            (None, Some(pid)) => NetnsTarget::Pid { pid },
            (None, None) => NetnsTarget::Current,
        };
        FirewallConfig {
            netns,
            spec: Spec {
                interfaces: self.interfaces.clone(),
                tcp_port: self.tcp_port,
            },
            backend: match self.backend {
                BackendArg::Auto => None,
                BackendArg::Legacy => Some(Backend::Legacy),
                BackendArg::Nft => Some(Backend::Nft),
            },
        }
    }
}

/// Runs one verb; returns the exit code.
pub fn run_firewall(cmd: &FirewallCommand) -> u8 {
    let (verb, args, result) = match cmd {
        FirewallCommand::Ensure(a) => ("ensure", a, super::ensure(&a.config())),
        FirewallCommand::Status(a) => ("status", a, super::status(&a.config())),
        FirewallCommand::Remove(a) => ("remove", a, super::remove(&a.config())),
    };
    match result {
        Ok(report) => {
            print_report(verb, &report, args.json);
            if verb == "status" && !report.in_place() {
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
        Err(e) => report_error(verb, &e, args.json),
    }
}

fn report_error(verb: &str, e: &FirewallError, json_out: bool) -> u8 {
    let code = if e.is_input() {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    };
    if json_out {
        println!(
            "{}",
            json!({ "error": { "message": e.to_string(), "input": e.is_input() } })
        );
    } else {
        eprintln!("netprobe firewall {verb}: {e}");
        if !e.is_input() {
            eprintln!("nothing was applied unless listed as already applied");
        }
    }
    code
}

fn print_report(verb: &str, r: &Report, json_out: bool) {
    if json_out {
        let v = serde_json::to_value(r).unwrap_or_else(|e| json!({ "error": e.to_string() }));
        println!("{v}");
        return;
    }
    println!("{} — backend {} ({})", r.netns, r.backend, r.backend_reason);
    for f in &r.families {
        let state = match (verb, f.applied.is_some(), f.in_place) {
            ("ensure", true, _) => "restored",
            ("ensure", false, _) => "already in place",
            ("remove", true, _) => "removed",
            ("remove", false, _) => "nothing to remove",
            (_, _, true) => "in place",
            _ => "MISSING",
        };
        println!("{}: {state}", f.family);
        // What remove deletes does not depend on the interfaces given, so no diff is shown for it.
        if verb == "status" || (verb == "ensure" && f.applied.is_some()) {
            for m in &f.missing {
                println!("  missing: {m}");
            }
            for x in &f.extra {
                println!("  not wanted (replaced on ensure): {x}");
            }
        }
    }
}
