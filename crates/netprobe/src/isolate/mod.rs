//! `netprobe isolate` / `netprobe release`: cut a (compromised) pod's network namespace off the
//! network the way container-security products do — a DROP-all chain inside the namespace — but
//! keep the kubelet's probes alive on request (`--keep-probes`), predict what the kubelet will do
//! before acting ([`impact`]), record who did it and the exact rules in the store, and undo
//! exactly what was done.
//!
//! - [`podspec`] (pure): the probes of a Pod manifest.
//! - [`impact`] (pure): the kubelet's reaction, from its prober semantics.
//! - [`rules`] (pure): the `iptables-restore --noflush` payloads.
//! - [`source`] (pure): where the kubelet's probes come from, without `--probe-source`.
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
pub mod source;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use store::{IsolationRecord, SqliteStore, Store};

use crate::collect::{NetnsTarget, RouteQuery};
use apply::{FamilyPlan, FamilyRelease, IptBackend};
use rules::{Exception, Net};

/// The namespace `isolate` and `release` act on.
#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// The namespace named `/run/netns/NAME`.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// The namespace of this process (a container's main pid).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

/// Where `isolate` and `release` record what they did, and how they print it.
#[derive(Debug, Args)]
pub struct RecordArgs {
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

/// `netprobe isolate` arguments.
#[derive(Debug, Args)]
pub struct IsolateArgs {
    /// The namespace.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Keep the kubelet's probes (and their replies) from the probe source to the ports of the
    /// `--pod-spec` probes.
    #[arg(long, requires = "pod_spec")]
    pub keep_probes: bool,
    /// Where the kubelet's probes come from (the node's address); at most one per family (give
    /// one IPv4 and one IPv6 address on a dual-stack node). Default: the source address this
    /// namespace picks for the pod's address (`ip route get POD_IP`), as netprobe runs where the
    /// kubelet does; else the gateway of the pod's default route.
    #[arg(long, value_name = "ADDR")]
    pub probe_source: Vec<IpAddr>,
    /// Also keep traffic with CIDR (both ways; with PORT, TCP to that port only); repeatable.
    #[arg(long, value_name = "CIDR[:PORT]")]
    pub allow: Vec<String>,
    /// The Pod manifest (YAML or JSON): its probes drive the impact report and `--keep-probes`.
    #[arg(long, value_name = "FILE")]
    pub pod_spec: Option<PathBuf>,
    /// Print the impact report and the rules; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The record and the output.
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `netprobe release` arguments.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The namespace.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The record and the output.
    #[command(flatten)]
    pub record: RecordArgs,
}

impl TargetArgs {
    fn target(&self) -> NetnsTarget {
        match (&self.netns, self.pid) {
            (Some(name), _) => NetnsTarget::Named { name: name.clone() },
            (None, Some(pid)) => NetnsTarget::Pid { pid },
            (None, None) => NetnsTarget::Current,
        }
    }
}

fn now_unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

impl RecordArgs {
    fn store_path(&self) -> Result<PathBuf, String> {
        match (&self.db, &self.config) {
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
}

async fn open_store(path: &Path) -> Result<SqliteStore, String> {
    SqliteStore::open(path)
        .await
        .map_err(|e| format!("store {}: {e}", path.display()))
}

async fn read_state(target: &NetnsTarget) -> Result<apply::NsState, u8> {
    let t = target.clone();
    match tokio::task::spawn_blocking(move || apply::read_state(&t)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(fail(2, e)),
        Err(e) => Err(fail(1, format!("reader thread: {e}"))),
    }
}

/// The probe sources for `--keep-probes`: `--probe-source` (at most one per family), else
/// [`source::find`] with this namespace's route lookups. Errors: the message for exit 2.
async fn probe_sources(
    given: &[IpAddr],
    state: &apply::NsState,
    target: &NetnsTarget,
) -> Result<Vec<source::ProbeSource>, String> {
    if !given.is_empty() {
        for v6 in [false, true] {
            let fam: Vec<String> = given
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .map(ToString::to_string)
                .collect();
            if fam.len() > 1 {
                return Err(format!(
                    "--probe-source: {} {} addresses ({}); the kubelet probes a pod from one node address \
                     per family: give at most one IPv4 and one IPv6 address",
                    fam.len(),
                    if v6 { "IPv6" } else { "IPv4" },
                    fam.join(", ")
                ));
            }
        }
        return Ok(given
            .iter()
            .map(|a| source::ProbeSource {
                addr: *a,
                how: "--probe-source".to_string(),
            })
            .collect());
    }
    // The lookups run in this process's namespace, where the kubelet runs too: a blocking
    // thread that never entered the target's.
    let (addrs, defaults) = (state.addrs.clone(), state.default_routes.clone());
    let found = tokio::task::spawn_blocking(move || {
        source::find(&addrs, &defaults, &mut |to| {
            let l = crate::collect::route_get(RouteQuery { to, from: None });
            l.route.ok_or_else(|| l.capture.summary())
        })
    })
    .await
    .map_err(|e| format!("route lookup thread: {e}"))?;
    if found.sources.is_empty() {
        let why = if found.missing.is_empty() {
            format!("the {} has no routable address", target.describe())
        } else {
            found.missing.join("; ")
        };
        return Err(format!(
            "--keep-probes: cannot tell where the kubelet's probes come from: {why}; give --probe-source ADDR \
             (the node's address)"
        ));
    }
    Ok(found.sources)
}

/// `netprobe isolate`: returns the exit code.
pub async fn run_isolate(args: IsolateArgs) -> u8 {
    let target = args.target.target();
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
        let path = match args.record.store_path() {
            Ok(p) => p,
            Err(e) => return fail(2, e),
        };
        match open_store(&path).await {
            Ok(s) => Some(s),
            Err(e) => return fail(2, e),
        }
    };
    let state = match read_state(&target).await {
        Ok(s) => s,
        Err(code) => return code,
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
    let mut sources = Vec::new();
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
        sources = match probe_sources(&args.probe_source, &state, &target).await {
            Ok(s) => s,
            Err(e) => return fail(2, e),
        };
        for s in &sources {
            notes.push(format!("probe source {}: {}", s.addr, s.how));
            let prefix = if s.addr.is_ipv4() { 32 } else { 128 };
            for port in &ports {
                exceptions.push(Exception {
                    peer: Net {
                        addr: s.addr,
                        prefix,
                    },
                    port: Some(*port),
                    outbound: false,
                    why: "kubelet probe".to_string(),
                });
            }
        }
    }
    let report = pod
        .as_ref()
        .map(|p| impact::predict(p, args.keep_probes, Some(now_unix_seconds())));
    let backend = state.backend();
    let plans: Vec<FamilyPlan> = [false, true]
        .into_iter()
        .map(|ipv6| {
            let new_table = state.lacks_filter_table(backend, ipv6);
            FamilyPlan {
                ipv6,
                payload: rules::isolate_payload(ipv6, &exceptions, new_table),
                new_table,
            }
        })
        .collect();
    for p in plans.iter().filter(|p| p.new_table) {
        let fam = if p.ipv6 { "IPv6" } else { "IPv4" };
        notes.push(match backend {
            IptBackend::Nft => format!(
                "the namespace has no {fam} filter table: isolating creates it (marked by the empty chain \
                 {}), and release deletes it again",
                rules::NEW_TABLE_MARKER
            ),
            IptBackend::Legacy => format!(
                "the namespace has no {fam} filter table: isolating creates it, and iptables-legacy cannot \
                 unload it: after release it stays, empty, with ACCEPT policies"
            ),
        });
    }
    let rules_json: serde_json::Map<String, serde_json::Value> = plans
        .iter()
        .map(|p| (backend.restore(p.ipv6), json!(p.payload)))
        .collect();
    let new_tables: Vec<&str> = plans
        .iter()
        .filter(|p| p.new_table)
        .map(|p| if p.ipv6 { "ipv6" } else { "ipv4" })
        .collect();
    if !args.record.json {
        match &report {
            Some(r) => say_raw!("{}", impact::render(r)),
            None => say!("impact on the kubelet's probes: unknown (no --pod-spec)"),
        }
        for n in &notes {
            say!("note: {n}");
        }
    }
    if args.dry_run {
        if args.record.json {
            let doc = json!({"action": "isolate", "dry_run": true, "netns": target.describe(),
                "backend": backend.name(), "impact": report, "exceptions": exceptions,
                "probe_sources": sources, "new_tables": new_tables, "rules": rules_json,
                "notes": notes});
            say!("{doc:#}");
        } else {
            say!(
                "dry run: nothing changed; the rules would be (iptables-{}):",
                backend.name()
            );
            for p in &plans {
                say_raw!("{}", p.payload);
            }
        }
        return 0;
    }
    let applied = tokio::task::spawn_blocking({
        let (t, p) = (target.clone(), plans.clone());
        move || apply::isolate(&t, backend, &p)
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
        reason: args.record.reason.clone().unwrap_or_default(),
        rules: serde_json::Value::Object(rules_json.clone()).into(),
        details: json!({"backend": backend.name(), "keep_probes": args.keep_probes,
            "exceptions": exceptions, "probe_sources": sources, "new_tables": new_tables,
            "impact": report, "conntrack": conntrack, "notes": notes})
        .into(),
    };
    let id = match store.as_ref().map(|s| s.append_isolation(&record)) {
        Some(fut) => match fut.await {
            Ok(id) => Some(id),
            Err(e) => {
                // Not recorded → not done: undo, so no unrecorded isolation exists.
                let t = target.clone();
                let families: Vec<FamilyRelease> = plans
                    .iter()
                    .map(|p| FamilyRelease {
                        ipv6: p.ipv6,
                        created_table: p.new_table,
                    })
                    .collect();
                let _ = tokio::task::spawn_blocking(move || apply::release(&t, backend, &families))
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
    if args.record.json {
        let doc = json!({"action": "isolate", "dry_run": false, "netns": target.describe(),
            "backend": backend.name(), "impact": report, "exceptions": exceptions,
            "probe_sources": sources, "new_tables": new_tables, "rules": rules_json,
            "conntrack": conntrack, "notes": notes, "record_id": id});
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

/// `netprobe release`: returns the exit code. What to remove is read from the namespace's
/// ruleset itself (netprobe's chains and the [`rules::NEW_TABLE_MARKER`] chain), not from the
/// store, so a lost store does not prevent a release.
pub async fn run_release(args: ReleaseArgs) -> u8 {
    let target = args.target.target();
    let path = match args.record.store_path() {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let store = match open_store(&path).await {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let state = match read_state(&target).await {
        Ok(s) => s,
        Err(code) => return code,
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
    let families: Vec<FamilyRelease> = state
        .isolated_families(backend)
        .into_iter()
        .map(|ipv6| FamilyRelease {
            ipv6,
            created_table: state.created_table(backend, ipv6),
        })
        .collect();
    let rules_json: serde_json::Map<String, serde_json::Value> = families
        .iter()
        .map(|f| {
            (
                backend.restore(f.ipv6),
                json!(rules::release_payload(f.created_table)),
            )
        })
        .collect();
    let applied = tokio::task::spawn_blocking({
        let (t, f) = (target.clone(), families.clone());
        move || apply::release(&t, backend, &f)
    })
    .await;
    let notes = match applied {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return fail(1, e),
        Err(e) => return fail(1, format!("apply thread: {e}")),
    };
    let record = IsolationRecord {
        id: None,
        action: "release".to_string(),
        netns: target.describe(),
        at_ms: store::now_ms(),
        who: who(),
        reason: args.record.reason.clone().unwrap_or_default(),
        rules: serde_json::Value::Object(rules_json.clone()).into(),
        details: json!({"backend": backend.name(), "families": families, "notes": notes}).into(),
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
    if args.record.json {
        let doc = json!({"action": "release", "netns": target.describe(), "backend": backend.name(),
            "families": families, "rules": rules_json, "notes": notes, "record_id": id});
        say!("{doc:#}");
    } else {
        say!(
            "released the {} (iptables-{}): netprobe's chains and jumps removed",
            target.describe(),
            backend.name()
        );
        for n in &notes {
            say!("note: {n}");
        }
    }
    0
}
