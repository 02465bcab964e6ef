//! `netprobe isolate` / `netprobe release`: cut a (compromised) pod's network namespace off the
//! network the way container-security products do — a DROP-all chain inside the namespace — but
//! keep the kubelet's probes alive on request (`--keep-probes`), predict what the kubelet will do
//! before acting ([`impact`]), record who did it and the exact rules in the store, and undo
//! exactly what was done.
//!
//! - [`podspec`] (pure): the probes of a Pod manifest.
//! - [`impact`] (pure): the kubelet's reaction, from its prober semantics.
//! - [`rules`] (pure): the `iptables-restore --noflush` payloads.
//! - [`apply`] (kernel-facing): reading and changing the namespace's rules, conntrack flush.
//!
//! Exit codes: 0 done (or `--dry-run` printed), 1 the rules could not be applied or recorded
//! (nothing left behind), 2 bad input (no such namespace or pid, unusable pod spec, already
//! isolated / not isolated, no store given).

/// `println!` that ignores a closed stdout (`netprobe isolate … | head`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

pub mod apply;
pub mod impact;
pub mod podspec;
pub mod rules;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use serde_json::json;
use store::{IsolationRecord, SqliteStore, Store};

use crate::collect::NetnsTarget;
use rules::{Exception, Net};

/// `netprobe isolate` arguments.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["netns", "pid"])))]
pub struct IsolateArgs {
    /// The namespace named `/run/netns/NAME`.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// The namespace of this process (a container's main pid).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Keep the kubelet's probes (and their replies) from the probe source to the ports of the
    /// `--pod-spec` probes.
    #[arg(long, requires = "pod_spec")]
    pub keep_probes: bool,
    /// Where the kubelet's probes come from (the node's address); default: the gateway of the
    /// namespace's default route.
    #[arg(long, value_name = "ADDR")]
    pub probe_source: Option<IpAddr>,
    /// Also keep traffic with CIDR (both ways; with PORT, TCP to that port only); repeatable.
    #[arg(long, value_name = "CIDR[:PORT]")]
    pub allow: Vec<String>,
    /// The Pod manifest (YAML or JSON): its probes drive the impact report and `--keep-probes`.
    #[arg(long, value_name = "FILE")]
    pub pod_spec: Option<PathBuf>,
    /// Print the impact report and the rules; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why (recorded in the store).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Store file to record into (SQLite); see also `-c`.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Record into the store of this config file (`storage.path`).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        conflicts_with = "db"
    )]
    pub config: Option<PathBuf>,
}

/// `netprobe release` arguments.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["netns", "pid"])))]
pub struct ReleaseArgs {
    /// The namespace named `/run/netns/NAME`.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// The namespace of this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Why (recorded in the store).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Store file to record into (SQLite).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Record into the store of this config file (`storage.path`).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        conflicts_with = "db"
    )]
    pub config: Option<PathBuf>,
}

fn target(netns: &Option<String>, pid: Option<u32>) -> NetnsTarget {
    match (netns, pid) {
        (Some(name), _) => NetnsTarget::Named { name: name.clone() },
        (None, Some(pid)) => NetnsTarget::Pid { pid },
        (None, None) => NetnsTarget::Current,
    }
}

fn now_unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn undo_payload(_ipv6: bool) -> String {
    rules::release_payload()
}

fn fail(code: u8, msg: impl std::fmt::Display) -> u8 {
    eprintln!("netprobe: {msg}");
    code
}

fn who() -> String {
    let uid = nix::unistd::getuid();
    let name = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{name} (uid {uid})")
}

fn store_path(db: &Option<PathBuf>, config: &Option<PathBuf>) -> Result<PathBuf, String> {
    match (db, config) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(c)) => crate::config::load(c)
            .map(|cfg| cfg.storage.path)
            .map_err(|e| e.to_string()),
        (None, None) => Err(
            "give --db PATH or -c CONFIG: every isolation and release is recorded in the store"
                .to_string(),
        ),
    }
}

async fn open_store(path: &Path) -> Result<SqliteStore, String> {
    SqliteStore::open(path)
        .await
        .map_err(|e| format!("store {}: {e}", path.display()))
}

/// `netprobe isolate`: returns the exit code.
pub async fn run_isolate(args: IsolateArgs) -> u8 {
    let target = target(&args.netns, args.pid);
    // Everything that can be wrong with the input is checked before the namespace is touched.
    let pod = match &args.pod_spec {
        None => None,
        Some(p) => {
            let origin = p.display().to_string();
            let text = match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) => return fail(2, format!("cannot read {origin}: {e}")),
            };
            match podspec::parse(&text, &origin) {
                Ok(pod) => Some(pod),
                Err(e) => return fail(2, e),
            }
        }
    };
    let mut exceptions = Vec::new();
    for a in &args.allow {
        match rules::parse_allow(a) {
            Ok(e) => exceptions.push(e),
            Err(e) => return fail(2, e),
        }
    }
    let store = if args.dry_run {
        None
    } else {
        let path = match store_path(&args.db, &args.config) {
            Ok(p) => p,
            Err(e) => return fail(2, e),
        };
        match open_store(&path).await {
            Ok(s) => Some(s),
            Err(e) => return fail(2, e),
        }
    };
    let state = match tokio::task::spawn_blocking({
        let t = target.clone();
        move || apply::read_state(&t)
    })
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(2, e),
        Err(e) => return fail(1, format!("reader thread: {e}")),
    };
    if let Some(b) = state.isolated_backend() {
        return fail(
            2,
            format!(
                "the {} is already isolated by netprobe (NETPROBE-ISOLATE chains in iptables-{}); nothing \
                 changed. Run `netprobe release` first to change the exceptions",
                target.describe(),
                b.name()
            ),
        );
    }
    let mut notes = Vec::new();
    if args.keep_probes {
        let Some(pod) = &pod else {
            return fail(2, "--keep-probes needs --pod-spec");
        };
        let ports: std::collections::BTreeSet<u16> =
            pod.probes.iter().filter_map(|p| p.handler.port()).collect();
        if ports.is_empty() {
            return fail(
                2,
                format!(
                    "--keep-probes: the pod spec {} has no httpGet, tcpSocket or grpc probe: nothing to keep",
                    args.pod_spec
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string())
                ),
            );
        }
        let source = match (args.probe_source, state.default_gateway) {
            (Some(s), _) => s,
            (None, Some(g)) => {
                notes.push(format!(
                    "probe source {g}: the gateway of the namespace's default route (give --probe-source \
                     when the kubelet's node address differs)"
                ));
                g
            }
            (None, None) => {
                return fail(
                    2,
                    format!(
                        "--keep-probes: the {} has no default route to take the node's address from; give \
                         --probe-source ADDR",
                        target.describe()
                    ),
                );
            }
        };
        let prefix = if source.is_ipv4() { 32 } else { 128 };
        for port in ports {
            exceptions.push(Exception {
                peer: Net {
                    addr: source,
                    prefix,
                },
                port: Some(port),
                outbound: false,
                why: "kubelet probe".to_string(),
            });
        }
    }
    let report = pod
        .as_ref()
        .map(|p| impact::predict(p, args.keep_probes, Some(now_unix_seconds())));
    let backend = state.backend();
    let payloads: Vec<(bool, String)> = [false, true]
        .into_iter()
        .map(|v6| (v6, rules::isolate_payload(v6, &exceptions)))
        .collect();
    let rules_json: serde_json::Map<String, serde_json::Value> = payloads
        .iter()
        .map(|(v6, p)| (backend.restore(*v6), json!(p)))
        .collect();
    if !args.json {
        match &report {
            Some(r) => say_raw!("{}", impact::render(r)),
            None => say!("impact on the kubelet's probes: unknown (no --pod-spec)"),
        }
        for n in &notes {
            say!("note: {n}");
        }
    }
    if args.dry_run {
        if args.json {
            let doc = json!({"action": "isolate", "dry_run": true, "netns": target.describe(),
                "backend": backend.name(), "impact": report, "exceptions": exceptions,
                "rules": rules_json, "notes": notes});
            say!("{doc:#}");
        } else {
            say!(
                "dry run: nothing changed; the rules would be (iptables-{}):",
                backend.name()
            );
            for (_, p) in &payloads {
                say_raw!("{p}");
            }
        }
        return 0;
    }
    let applied = tokio::task::spawn_blocking({
        let (t, p) = (target.clone(), payloads.clone());
        move || apply::apply(&t, backend, &p, Some(undo_payload), true)
    })
    .await;
    let conntrack = match applied {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return fail(1, format!("{e}; nothing was left installed")),
        Err(e) => return fail(1, format!("apply thread: {e}")),
    };
    let record = IsolationRecord {
        id: None,
        action: "isolate".to_string(),
        netns: target.describe(),
        at_ms: store::now_ms(),
        who: who(),
        reason: args.reason.clone().unwrap_or_default(),
        rules: serde_json::Value::Object(rules_json.clone()).into(),
        details: json!({"backend": backend.name(), "keep_probes": args.keep_probes,
            "exceptions": exceptions, "impact": report, "conntrack": conntrack, "notes": notes})
        .into(),
    };
    let id = match store.as_ref().map(|s| s.append_isolation(&record)) {
        Some(fut) => match fut.await {
            Ok(id) => Some(id),
            Err(e) => {
                // Not recorded → not done: undo, so no unrecorded isolation exists.
                let t = target.clone();
                let payloads: Vec<(bool, String)> = [false, true]
                    .into_iter()
                    .map(|v6| (v6, rules::release_payload()))
                    .collect();
                let _ = tokio::task::spawn_blocking(move || {
                    apply::apply(&t, backend, &payloads, None, false)
                })
                .await;
                return fail(
                    1,
                    format!("cannot record the isolation ({e}); rules removed again"),
                );
            }
        },
        None => None,
    };
    if let Some(s) = store {
        s.close().await;
    }
    if args.json {
        let doc = json!({"action": "isolate", "dry_run": false, "netns": target.describe(),
            "backend": backend.name(), "impact": report, "exceptions": exceptions,
            "rules": rules_json, "conntrack": conntrack, "notes": notes, "record_id": id});
        say!("{doc:#}");
    } else {
        say!(
            "isolated the {} (iptables-{}, IPv4 and IPv6; {} exception(s)); {}",
            target.describe(),
            backend.name(),
            exceptions.len(),
            conntrack.join("; ")
        );
    }
    0
}

/// `netprobe release`: returns the exit code.
pub async fn run_release(args: ReleaseArgs) -> u8 {
    let target = target(&args.netns, args.pid);
    let path = match store_path(&args.db, &args.config) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let store = match open_store(&path).await {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let state = match tokio::task::spawn_blocking({
        let t = target.clone();
        move || apply::read_state(&t)
    })
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(2, e),
        Err(e) => return fail(1, format!("reader thread: {e}")),
    };
    let Some(backend) = state.isolated_backend() else {
        return fail(
            2,
            format!(
                "the {} is not isolated by netprobe (no NETPROBE-ISOLATE chains); nothing changed",
                target.describe()
            ),
        );
    };
    let payloads: Vec<(bool, String)> = state
        .isolated_families(backend)
        .into_iter()
        .map(|v6| (v6, rules::release_payload()))
        .collect();
    let rules_json: serde_json::Map<String, serde_json::Value> = payloads
        .iter()
        .map(|(v6, p)| (backend.restore(*v6), json!(p)))
        .collect();
    let applied = tokio::task::spawn_blocking({
        let (t, p) = (target.clone(), payloads.clone());
        move || apply::apply(&t, backend, &p, None, false)
    })
    .await;
    match applied {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return fail(1, e),
        Err(e) => return fail(1, format!("apply thread: {e}")),
    }
    let record = IsolationRecord {
        id: None,
        action: "release".to_string(),
        netns: target.describe(),
        at_ms: store::now_ms(),
        who: who(),
        reason: args.reason.clone().unwrap_or_default(),
        rules: serde_json::Value::Object(rules_json.clone()).into(),
        details: json!({"backend": backend.name()}).into(),
    };
    let id = store.append_isolation(&record).await;
    store.close().await;
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            return fail(
                1,
                format!("released, but the release could not be recorded: {e}"),
            );
        }
    };
    if args.json {
        let doc = json!({"action": "release", "netns": target.describe(), "backend": backend.name(),
            "rules": rules_json, "record_id": id});
        say!("{doc:#}");
    } else {
        say!(
            "released the {} (iptables-{}): netprobe's chains and jumps removed",
            target.describe(),
            backend.name()
        );
    }
    0
}
