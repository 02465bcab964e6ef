//! The diagnosis snapshot: everything `netprobe diagnose` reads, collected inside the network
//! namespace(s) that matter, versioned and serialisable (`netprobe snapshot` prints it).
//!
//! Kernel-facing: [`take`] enters each namespace with [`run_in`] (setns on a dedicated thread)
//! and reads there, besides the [`NetnsSnapshot`] of [`collect`](super::collect()):
//! * sysctls from `/proc/sys/net/…` ([`SYSCTLS`], plus `rp_filter` / `forwarding` of every
//!   interface): `/proc/sys/net` follows the reading thread's network namespace;
//! * `/proc/thread-self/net/ip_tables_names` and `ip6_tables_names` (the x_tables tables loaded
//!   in the namespace: the legacy backend in use). Not `/proc/net` or `/proc/self/net`: those
//!   follow the process's main thread, not the setns'd thread;
//! * listening sockets from `/proc/thread-self/net/{tcp,tcp6,udp,udp6}`;
//! * the kernel's route lookup for the flow with its preferred source: `ip -j route get`
//!   (RTM_GETROUTE through iproute2, as `trace --live` does), kept in [`NetnsSnapshot::routes`].
//!
//! and once, outside any namespace, the prober's credentials from `/proc/PID/status`.
//!
//! Nothing missing is an error: an unreadable file is listed in [`NamespaceState::unreadable`],
//! a missing tool in its [`Capture`](super::Capture). Only a namespace that cannot be entered is.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use probe::Outcome;
use serde::{Deserialize, Serialize};

use super::procfs::{self, Credentials, Listener, SocketProto};
use super::{NetnsError, NetnsSnapshot, NetnsTarget, RouteQuery, collect, run_in};

/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The fixed sysctls read in every namespace (dotted names, as `sysctl` prints them). Per
/// interface, `net.ipv4.conf.IFACE.{rp_filter,forwarding,route_localnet}` and
/// `net.ipv6.conf.IFACE.forwarding` are read too. The bridge one exists
/// only while `br_netfilter` is loaded.
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv4.icmp_echo_ignore_all",
    "net.ipv6.conf.all.forwarding",
    "net.ipv6.conf.default.forwarding",
    "net.bridge.bridge-nf-call-iptables",
];

/// Everything read inside one network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceState {
    /// Rules of every backend, ipsets, addresses, routes and route lookups.
    pub netns: NetnsSnapshot,
    /// Sysctl values (whitespace collapsed to single spaces) by dotted name; a sysctl that does not exist is absent.
    pub sysctls: BTreeMap<String, String>,
    /// `/proc/thread-self/net/ip_tables_names`: the IPv4 legacy tables loaded (`None`: unreadable,
    /// e.g. `ip_tables` not built).
    pub ip_tables_names: Option<Vec<String>>,
    /// `/proc/thread-self/net/ip6_tables_names`, the same for IPv6.
    pub ip6_tables_names: Option<Vec<String>>,
    /// TCP sockets in LISTEN and unconnected UDP sockets.
    pub listeners: Vec<Listener>,
    /// `ip -j route show table local`: the local routes, whose `src` the kernel prefers for a
    /// destination on this host (`local 127.0.0.0/8 dev lo … src ADDR`).
    pub local_table: super::Capture,
    /// What could not be read, each as `WHAT: WHY`.
    pub unreadable: Vec<String>,
}

impl NamespaceState {
    /// A sysctl's value, if it was read.
    pub fn sysctl(&self, name: &str) -> Option<&str> {
        self.sysctls.get(name).map(String::as_str)
    }

    /// Whether `addr` is an address of this namespace (loopback `127.0.0.0/8` always is).
    pub fn owns(&self, addr: IpAddr) -> bool {
        addr.is_loopback() || self.netns.addrs.iter().any(|a| a.addr == addr)
    }
}

/// How the destination's namespace was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetOrigin {
    /// Given with `--target-netns` / `--target-pid`.
    Given,
    /// Found by scanning `/run/netns/*` and `/proc/*/ns/net` for the destination address.
    Found,
}

/// The destination's namespace, when it is another namespace on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetNamespace {
    /// How it was found.
    pub origin: TargetOrigin,
    /// What was read there.
    pub state: NamespaceState,
}

/// The prober process's credentials, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProberCredentials {
    /// The pid whose `/proc/PID/status` was read (netprobe's own unless `--as-pid`).
    pub pid: u32,
    /// Whether that pid is netprobe itself.
    pub is_self: bool,
    /// The credentials, when readable.
    pub credentials: Option<Credentials>,
    /// Why not, when not.
    pub error: Option<String>,
}

/// The check a snapshot was taken for, and what the probe observed (when it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// The target as given (`tcp://127.0.0.2:9099`, or a bare address).
    pub target: String,
    /// The probe's outcome, when a probe ran.
    pub outcome: Option<Outcome>,
}

/// A versioned diagnosis snapshot (`"version": 1`). JSON shape documented in the README.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version: [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// When collection started, Unix time in milliseconds.
    pub taken_at_unix_ms: u64,
    /// The prober's namespace.
    pub prober: NamespaceState,
    /// The prober process's credentials.
    pub credentials: ProberCredentials,
    /// The destination's namespace, when it lives in another namespace on this host.
    pub target: Option<TargetNamespace>,
    /// Notes on the search for the destination's namespace (what was scanned, what was skipped).
    pub target_search: Vec<String>,
    /// The check, when the snapshot was taken for one.
    pub recorded: Option<Recorded>,
}

/// Why a snapshot file cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not JSON at all.
    #[error("not a JSON document: {0}")]
    NotJson(serde_json::Error),
    /// No numeric `version` field: not a netprobe snapshot.
    #[error("not a netprobe snapshot: no numeric \"version\" field")]
    NoVersion,
    /// Written by a newer netprobe.
    #[error(
        "snapshot version {found} is newer than this netprobe reads (version {SNAPSHOT_VERSION}); \
         diagnose it with a newer netprobe"
    )]
    Newer {
        /// The version in the file.
        found: u64,
    },
    /// An older version this build does not read.
    #[error(
        "snapshot version {found} is not supported (this netprobe reads version {SNAPSHOT_VERSION})"
    )]
    Unsupported {
        /// The version in the file.
        found: u64,
    },
    /// Version 1 but not its shape.
    #[error("snapshot version 1 of unknown shape: {0}")]
    Shape(serde_json::Error),
}

impl Snapshot {
    /// Reads a snapshot from JSON text, checking the version first so that a newer file gets a
    /// clear message rather than a field error.
    pub fn from_json(text: &str) -> Result<Snapshot, SnapshotError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(SnapshotError::NotJson)?;
        let found = v
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or(SnapshotError::NoVersion)?;
        if found > u64::from(SNAPSHOT_VERSION) {
            return Err(SnapshotError::Newer { found });
        }
        if found < u64::from(SNAPSHOT_VERSION) {
            return Err(SnapshotError::Unsupported { found });
        }
        serde_json::from_value(v).map_err(SnapshotError::Shape)
    }

    /// Everything that could not be read, prefixed by where.
    pub fn unreadable(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .prober
            .unreadable
            .iter()
            .map(|u| format!("{}: {u}", self.prober.netns.netns.describe()))
            .collect();
        if let Some(e) = &self.credentials.error {
            out.push(format!("credentials of pid {}: {e}", self.credentials.pid));
        }
        if let Some(t) = &self.target {
            out.extend(
                t.state
                    .unreadable
                    .iter()
                    .map(|u| format!("{}: {u}", t.state.netns.netns.describe())),
            );
        }
        out
    }
}

/// What to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The prober's namespace.
    pub netns: NetnsTarget,
    /// The prober process (`None`: netprobe itself).
    pub as_pid: Option<u32>,
    /// The flow's destination and explicit source, when known: route lookups are asked for it
    /// and its namespace is looked for.
    pub dst: Option<RouteQuery>,
    /// The destination's namespace: given, or `None` to search for it (when `dst` is set).
    pub target_netns: Option<NetnsTarget>,
    /// Whether to search this host for the destination's namespace when none is given. Off for
    /// a mesh peer: it is another node, and the far end answers for itself.
    pub locate_target: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Collects a [`Snapshot`]. Errors only when the prober's namespace, or a given target
/// namespace, cannot be entered (exit 2); everything else unreadable is recorded.
pub fn take(req: &SnapshotRequest) -> Result<Snapshot, NetnsError> {
    let taken_at_unix_ms = now_ms();
    let questions: Vec<RouteQuery> = req.dst.into_iter().collect();
    let prober = namespace_state(&req.netns, &questions)?;
    let credentials = read_credentials(req.as_pid);
    let mut target_search = Vec::new();
    let target = match (&req.target_netns, req.dst) {
        (Some(t), dst) => {
            // The arrival path: the packet comes in with the prober's source; no route question.
            let _ = dst;
            Some(TargetNamespace {
                origin: TargetOrigin::Given,
                state: namespace_state(t, &[])?,
            })
        }
        (None, Some(q)) if req.locate_target && !q.to.is_loopback() && !prober.owns(q.to) => {
            let (found, notes) = super::locate::owner_of(q.to, &req.netns);
            target_search = notes;
            match found {
                Some(t) => match namespace_state(&t, &[]) {
                    Ok(state) => Some(TargetNamespace {
                        origin: TargetOrigin::Found,
                        state,
                    }),
                    Err(e) => {
                        target_search.push(format!("{}: {e}", t.describe()));
                        None
                    }
                },
                None => None,
            }
        }
        _ => None,
    };
    Ok(Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at_unix_ms,
        prober,
        credentials,
        target,
        target_search,
        recorded: None,
    })
}

/// Reads one namespace: [`collect`] plus sysctls, table names and listeners.
pub fn namespace_state(
    target: &NetnsTarget,
    questions: &[RouteQuery],
) -> Result<NamespaceState, NetnsError> {
    let netns = collect(target, questions)?;
    let ifaces: Vec<String> = {
        let mut v: Vec<String> = netns.addrs.iter().map(|a| a.iface.clone()).collect();
        v.dedup();
        v
    };
    run_in(target, move || {
        let mut unreadable = Vec::new();
        let mut sysctls = BTreeMap::new();
        let mut names: Vec<String> = SYSCTLS.iter().map(|s| (*s).to_string()).collect();
        for i in &ifaces {
            for key in ["rp_filter", "forwarding", "route_localnet"] {
                names.push(format!("net.ipv4.conf.{i}.{key}"));
            }
            names.push(format!("net.ipv6.conf.{i}.forwarding"));
        }
        for name in names {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            match std::fs::read_to_string(&path) {
                Ok(v) => {
                    // Whitespace collapsed: `ping_group_range` is printed with a tab.
                    sysctls.insert(name, v.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => unreadable.push(format!("{path}: {e}")),
            }
        }
        let mut tables = |file: &str| -> Option<Vec<String>> {
            let path = format!("/proc/thread-self/net/{file}");
            match std::fs::read_to_string(&path) {
                Ok(t) => Some(t.lines().map(|l| l.trim().to_string()).collect()),
                Err(e) => {
                    unreadable.push(format!("{path}: {e}"));
                    None
                }
            }
        };
        let local_table = super::capture(
            &["ip", "-j", "route", "show", "table", "local"],
            super::TOOL_TIMEOUT,
        );
        let ip_tables_names = tables("ip_tables_names");
        let ip6_tables_names = tables("ip6_tables_names");
        let mut listeners = Vec::new();
        for (file, proto) in [
            ("tcp", SocketProto::Tcp),
            ("tcp6", SocketProto::Tcp),
            ("udp", SocketProto::Udp),
            ("udp6", SocketProto::Udp),
        ] {
            let path = format!("/proc/thread-self/net/{file}");
            match std::fs::read_to_string(&path) {
                Ok(t) => listeners.extend(procfs::parse_socket_table(&t, proto)),
                Err(e) => unreadable.push(format!("{path}: {e}")),
            }
        }
        NamespaceState {
            netns,
            sysctls,
            ip_tables_names,
            ip6_tables_names,
            listeners,
            local_table,
            unreadable,
        }
    })
}

/// Reads `/proc/PID/status` of the prober (netprobe itself when `pid` is `None`).
pub fn read_credentials(pid: Option<u32>) -> ProberCredentials {
    let me = std::process::id();
    let pid = pid.unwrap_or(me);
    let path = format!("/proc/{pid}/status");
    let (credentials, error) = match std::fs::read_to_string(&path) {
        Ok(t) => match procfs::parse_status(pid, &t) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(format!("{path}: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            None,
            Some(format!("no process with pid {pid} ({path} does not exist)")),
        ),
        Err(e) => (None, Some(format!("{path}: {e}"))),
    };
    ProberCredentials {
        pid,
        is_self: pid == me,
        credentials,
        error,
    }
}
