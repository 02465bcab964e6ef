//! The `netprobe diagnose` and `netprobe snapshot` verbs, and `netprobe check --diagnose`.
//!
//! `diagnose` probes once (from inside `--netns`/`--pid` when given: the probe runs on a thread
//! that entered the namespace, with its own single-threaded runtime), then takes a snapshot and
//! diagnoses. With `--snapshot FILE` nothing is probed or collected: the outcome recorded in the
//! file is used when it was taken for the same target, otherwise the state alone is judged.
//! Exit codes: 0 healthy, 1 a failure (explained or not), 2 bad input.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use probe::icmp::IcmpEngine;
use probe::{Details, Outcome, Reason};
use serde_json::json;

use super::{Diagnosis, Extra, Question, diagnose, render_human};
use crate::collect::snapshot::{self, Recorded, Snapshot, SnapshotRequest};
use crate::collect::{NetnsTarget, RouteQuery, run_in};
use crate::oneshot::{EXIT_USAGE, parse_target};

/// Which namespaces (shared by `diagnose` and `snapshot`).
#[derive(Debug, Clone, Args)]
pub struct NsArgs {
    /// The prober's network namespace, by name (`ip netns list`).
    #[arg(long, conflicts_with = "pid")]
    pub netns: Option<String>,
    /// The prober's network namespace, as that of this process (a container's main pid).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The process whose credentials are the prober's (default: netprobe itself).
    #[arg(long)]
    pub as_pid: Option<u32>,
    /// The destination's network namespace by name (default: searched for the destination address).
    #[arg(long, conflicts_with = "target_pid")]
    pub target_netns: Option<String>,
    /// The destination's network namespace as that of this process.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// The source address the check's socket is bound to (an explicit bind).
    #[arg(long)]
    pub source: Option<IpAddr>,
}

impl NsArgs {
    fn prober(&self) -> NetnsTarget {
        match (&self.netns, self.pid) {
            (Some(name), _) => NetnsTarget::Named { name: name.clone() },
            (None, Some(pid)) => NetnsTarget::Pid { pid },
            (None, None) => NetnsTarget::Current,
        }
    }

    fn target(&self) -> Option<NetnsTarget> {
        match (&self.target_netns, self.target_pid) {
            (Some(name), _) => Some(NetnsTarget::Named { name: name.clone() }),
            (None, Some(pid)) => Some(NetnsTarget::Pid { pid }),
            (None, None) => None,
        }
    }
}

/// Arguments of `netprobe diagnose`.
#[derive(Debug, Clone, Args)]
pub struct DiagnoseArgs {
    /// `icmp://HOST`, `tcp://HOST:PORT`, `http(s)://…`, `dns://SERVER[:PORT]/NAME`, `grpc://HOST:PORT`.
    pub target: String,
    /// Namespaces, prober and source.
    #[command(flatten)]
    pub ns: NsArgs,
    /// Diagnose from a snapshot file (`netprobe snapshot`) instead of probing and collecting.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Also write the snapshot taken (with the probe's outcome) to FILE, for `--snapshot` later.
    #[arg(long, value_name = "FILE", conflicts_with = "snapshot")]
    pub save_snapshot: Option<PathBuf>,
    /// An `iptables-restore` payload to check against the rules (repeatable).
    #[arg(long = "restore-payload", value_name = "FILE")]
    pub restore_payloads: Vec<PathBuf>,
    /// Bound on the probe.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the diagnosis as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `netprobe snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// Namespaces, prober and source.
    #[command(flatten)]
    pub ns: NsArgs,
    /// The destination: an address, or a check target (`tcp://HOST:PORT`): its route is looked
    /// up and its namespace searched for.
    #[arg(long)]
    pub target: Option<String>,
    /// Accepted like every reporting verb's; the snapshot is always JSON (with it, errors are too:
    /// `{"error": "…"}`).
    #[arg(long)]
    pub json: bool,
}

fn usage(verb: &str, json_out: bool, msg: &str) -> u8 {
    if json_out {
        println!("{}", json!({ "error": msg }));
    } else {
        eprintln!("netprobe {verb}: {msg}");
    }
    EXIT_USAGE
}

fn request(ns: &NsArgs, q: Option<&Question>, dst: Option<IpAddr>) -> SnapshotRequest {
    SnapshotRequest {
        netns: ns.prober(),
        as_pid: ns.as_pid,
        dst: q.map(|q| q.dst).or(dst).map(|to| RouteQuery {
            to,
            from: ns.source,
        }),
        target_netns: ns.target(),
        locate_target: true,
    }
}

/// Runs `netprobe snapshot` (prints the JSON snapshot) and returns the exit code.
pub fn run_snapshot(args: &SnapshotArgs) -> u8 {
    let (q, dst) = match args.target.as_deref() {
        None => (None, None),
        Some(t) => match t.parse::<IpAddr>() {
            Ok(a) => (None, Some(a)),
            Err(_) => match Question::from_target(t, args.ns.source) {
                Ok(q) => (Some(q), None),
                Err(e) => return usage("snapshot", args.json, &format!("--target: {e}")),
            },
        },
    };
    let req = request(&args.ns, q.as_ref(), dst);
    let mut snap = match snapshot::take(&req) {
        Ok(s) => s,
        Err(e) => return usage("snapshot", args.json, &e.to_string()),
    };
    snap.recorded = args.target.clone().map(|target| Recorded {
        target,
        outcome: None,
    });
    match serde_json::to_string_pretty(&snap) {
        Ok(t) => {
            out(&format!("{t}\n"));
            crate::oneshot::EXIT_OK
        }
        Err(e) => usage("snapshot", args.json, &format!("cannot serialise: {e}")),
    }
}

/// A TCP connect from an explicitly bound source, as a check whose socket is bound would send.
async fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let sock = if dst.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let result = async {
        let sock = sock?;
        sock.bind(SocketAddr::new(src, 0))?;
        tokio::time::timeout(timeout, sock.connect(dst))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
    .await;
    match result {
        Ok(_) => Outcome::ok(
            format!("connected {src} -> {dst}"),
            start.elapsed(),
            Vec::new(),
            Details::None,
        ),
        Err(e) => Outcome::fail(
            Reason::from_io_error(&e),
            format!("connect {src} -> {dst}: {e}"),
            start.elapsed(),
            Vec::new(),
            Details::None,
        ),
    }
}

/// Probes `q` once from `netns` (on a thread inside it, with its own runtime).
fn probe_in(netns: &NetnsTarget, q: &Question, timeout: Duration) -> Result<Outcome, String> {
    let spec = parse_target(&q.target, Some(1), false)?;
    let source = q.source;
    let dst = q.dport.map(|p| SocketAddr::new(q.dst, p));
    run_in(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        rt.block_on(async {
            if let (Some(src), Some(dst)) = (source, dst) {
                return Ok(connect_from(src, dst, timeout).await);
            }
            let engine = Arc::new(IcmpEngine::new());
            let prober = spec.build(&engine).map_err(|e| e.to_string())?;
            Ok(prober.probe(timeout).await)
        })
    })
    .map_err(|e| e.to_string())?
}

/// Reads `--restore-payload` files.
fn payloads(paths: &[PathBuf]) -> Result<Extra, String> {
    let mut extra = Extra::default();
    for p in paths {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
        extra.restore_payloads.push((p.display().to_string(), text));
    }
    Ok(extra)
}

/// Writes to stdout, ignoring a closed pipe (`netprobe diagnose … | head`).
fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print(d: &Diagnosis, json_out: bool) {
    if json_out {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(d).unwrap_or_default()
        ));
    } else {
        out(&render_human(d));
    }
}

/// Runs `netprobe diagnose` and returns the exit code.
pub async fn run_diagnose(args: DiagnoseArgs) -> u8 {
    let q = match Question::from_target(&args.target, args.ns.source) {
        Ok(q) => q,
        Err(e) => return usage("diagnose", args.json, &e.to_string()),
    };
    if let Err(e) = parse_target(&args.target, Some(1), false) {
        return usage("diagnose", args.json, &e);
    }
    let extra = match payloads(&args.restore_payloads) {
        Ok(x) => x,
        Err(e) => return usage("diagnose", args.json, &e),
    };
    let (snap, outcome) = if let Some(path) = &args.snapshot {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("{}: cannot read: {e}", path.display());
                return usage("diagnose", args.json, &msg);
            }
        };
        let snap = match Snapshot::from_json(&text) {
            Ok(s) => s,
            Err(e) => return usage("diagnose", args.json, &format!("{}: {e}", path.display())),
        };
        let outcome = snap
            .recorded
            .as_ref()
            .filter(|r| r.target == args.target)
            .and_then(|r| r.outcome.clone());
        (snap, outcome)
    } else {
        let netns = args.ns.prober();
        let a = args.clone();
        let q2 = q.clone();
        let timeout = args.timeout;
        let probed = tokio::task::spawn_blocking(move || -> Result<(Outcome, Snapshot), String> {
            let outcome = probe_in(&netns, &q2, timeout)?;
            let mut snap =
                snapshot::take(&request(&a.ns, Some(&q2), None)).map_err(|e| e.to_string())?;
            snap.recorded = Some(Recorded {
                target: a.target.clone(),
                outcome: Some(outcome.clone()),
            });
            Ok((outcome, snap))
        })
        .await;
        match probed {
            Ok(Ok((o, s))) => {
                if let Some(path) = &args.save_snapshot {
                    let text = serde_json::to_string_pretty(&s).unwrap_or_default();
                    if let Err(e) = std::fs::write(path, text) {
                        let msg = format!("--save-snapshot {}: {e}", path.display());
                        return usage("diagnose", args.json, &msg);
                    }
                }
                (s, Some(o))
            }
            Ok(Err(e)) => return usage("diagnose", args.json, &e),
            Err(e) => return usage("diagnose", args.json, &format!("collector task: {e}")),
        }
    };
    let d = diagnose(&snap, &q, outcome.as_ref(), &extra);
    print(&d, args.json);
    d.exit_code()
}

/// Takes a snapshot of the current namespace for `q` (netprobe's own credentials; the
/// destination's namespace searched for) and diagnoses it with `outcome`. Blocking collection
/// runs on tokio's blocking pool. For `netprobe run`: call it when a check turns unhealthy (rate
/// limit it per check: a snapshot runs ~10 tools, each bounded by
/// [`TOOL_TIMEOUT`](crate::collect::TOOL_TIMEOUT)). `Err`: the namespace could not be read.
pub async fn diagnose_now(q: &Question, outcome: Option<&Outcome>) -> Result<Diagnosis, String> {
    let ns = NsArgs {
        netns: None,
        pid: None,
        as_pid: None,
        target_netns: None,
        target_pid: None,
        source: q.source,
    };
    let req = request(&ns, Some(q), None);
    let snap = tokio::task::spawn_blocking(move || snapshot::take(&req))
        .await
        .map_err(|e| format!("collector task: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(diagnose(&snap, q, outcome, &Extra::default()))
}

/// `netprobe check --diagnose`: the diagnosis of a failed one-shot check, probed from the
/// current namespace by netprobe itself. `Err` carries a message for a target that has no flow
/// (exec) or a collection failure.
pub async fn after_check(target: &str, outcome: &Outcome) -> Result<Diagnosis, String> {
    let q = Question::from_target(target, None).map_err(|e| e.to_string())?;
    diagnose_now(&q, Some(outcome)).await
}
