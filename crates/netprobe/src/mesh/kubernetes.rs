//! Mesh peers from the Kubernetes API (`mesh.discovery.kubernetes`), kept current by one watch.
//!
//! **Watch semantics** (Kubernetes API concepts, "Efficient detection of changes"): the watcher
//! (kube-rs [`watcher`], an informer) lists the objects once (`GET /api/v1/nodes?limit=500`, pages
//! followed through `continue`), then watches from the list's `metadata.resourceVersion`
//! (`?watch=true&resourceVersion=RV&allowWatchBookmarks=true`): a stream of newline-delimited
//! `WatchEvent`s `{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": …}`. A watch
//! the server ends (after `timeoutSeconds`, 290 s) is resumed from the last resourceVersion seen
//! (an object's or a BOOKMARK's). An `ERROR` event with a `Status` of code 410 (Gone: that
//! resourceVersion is older than the server's history) makes it list again; the relist's answer
//! *replaces* the set, so objects deleted while nobody watched disappear. Discovery passes read the
//! snapshot this task keeps: never a list per pass.
//!
//! **Shapes**: `nodes: true` maps a Node to a peer named `metadata.name` at its
//! `status.addresses[type=InternalIP]` (both families on a dual-stack node; `ExternalIP`,
//! `Hostname` are ignored). `pods: {…}` maps a Pod with `status.phase: Running`, no
//! `metadata.deletionTimestamp` and at least one IP in `status.podIPs` (or the older single
//! `status.podIP`) to a peer named `spec.nodeName` (the pod name if unset), so a DaemonSet's agents
//! carry their node's name, the same `NODE_NAME` the agent is configured with. Two pods on one node
//! (a rolling update overlapping) make one peer with both pods' addresses.
//!
//! **Failures**: a watcher error (API server unreachable, 401/403, a 410 before the relist) is
//! reported once in the next discovery pass's errors, and the last known set is kept; the watcher
//! retries with kube-rs's default backoff (0.8 s doubling to 30 s, jittered).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::discovery::Node;
use crate::config::{KubernetesDiscovery, KubernetesSource};

/// Errors kept for the next discovery pass; older ones are dropped (and counted in the message).
const MAX_PENDING_ERRORS: usize = 16;

/// Wait between attempts to build a client (no kubeconfig, no service account yet).
const CLIENT_RETRY: Duration = Duration::from_secs(30);

/// The peer a Node stands for: named `metadata.name`, at its `InternalIP` addresses (sorted, both
/// families). `None` for a Node without one or being deleted (`metadata.deletionTimestamp`).
pub fn node_peer(node: &core::Node, port: u16) -> Option<Node> {
    if node.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = node.metadata.name.clone()?;
    let addresses = ips(node
        .status
        .as_ref()?
        .addresses
        .as_deref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str()));
    peer(name, addresses, port)
}

/// The peer a Pod stands for: named `spec.nodeName` (the pod's own name if unset), at its
/// `status.podIPs` (or `status.podIP`). `None` unless the pod is `Running`, not being deleted, and
/// has an IP.
pub fn pod_peer(pod: &core::Pod, port: u16) -> Option<Node> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let addresses = match status.pod_ips.as_deref() {
        Some(list) if !list.is_empty() => ips(list.iter().map(|p| p.ip.as_str())),
        _ => ips(status.pod_ip.as_deref().into_iter()),
    };
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.name.clone())?;
    peer(name, addresses, port)
}

fn ips<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = texts
        .filter_map(|t| t.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn peer(name: String, addresses: Vec<IpAddr>, port: u16) -> Option<Node> {
    (!addresses.is_empty()).then_some(Node {
        name,
        addresses,
        port,
        from_dns: false,
    })
}

/// The watched objects as peers, keyed by `namespace/name` (`/name` for cluster-scoped kinds).
/// Fed the watcher's events in order by [`ObjectStore::apply`].
#[derive(Debug, Default)]
pub struct ObjectStore {
    objects: BTreeMap<String, Node>,
    /// The list in progress (between `Init` and `InitDone`); the old set stays visible meanwhile.
    relisting: Option<BTreeMap<String, Node>>,
    synced: bool,
}

impl ObjectStore {
    /// Applies one watcher event; `map` turns an object into its peer (`None`: not a peer, e.g. a
    /// pod that stopped running, which removes it). Returns whether the visible set changed.
    ///
    /// `Init` starts a buffer, `InitApply` fills it, `InitDone` replaces the set with it (objects
    /// missing from a relist are gone); `Apply` upserts, `Delete` removes.
    pub fn apply<K: Resource>(
        &mut self,
        event: Event<K>,
        map: impl Fn(&K) -> Option<Node>,
    ) -> bool {
        match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                if let Some(n) = map(&obj) {
                    self.relisting.get_or_insert_default().insert(key(&obj), n);
                }
                false
            }
            Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                self.synced = true;
                let changed = fresh != self.objects;
                self.objects = fresh;
                changed
            }
            Event::Apply(obj) => match map(&obj) {
                Some(n) => {
                    let k = key(&obj);
                    let changed = self.objects.get(&k) != Some(&n);
                    self.objects.insert(k, n);
                    changed
                }
                None => self.objects.remove(&key(&obj)).is_some(),
            },
            Event::Delete(obj) => self.objects.remove(&key(&obj)).is_some(),
        }
    }

    /// Whether a full list has been applied (`InitDone` seen once).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Peers by name; objects naming the same peer (two pods on one node) are merged, addresses
    /// sorted and deduplicated.
    pub fn nodes(&self) -> BTreeMap<String, Node> {
        let mut out: BTreeMap<String, Node> = BTreeMap::new();
        for n in self.objects.values() {
            match out.get_mut(&n.name) {
                Some(have) => {
                    have.addresses.extend(&n.addresses);
                    have.addresses.sort();
                    have.addresses.dedup();
                }
                None => {
                    out.insert(n.name.clone(), n.clone());
                }
            }
        }
        out
    }
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

#[derive(Debug, Default)]
struct Snapshot {
    nodes: BTreeMap<String, Node>,
    errors: Vec<String>,
    dropped_errors: usize,
    synced: bool,
}

#[derive(Debug, Default)]
struct Shared {
    snapshot: Mutex<Snapshot>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn error(&self, message: String) {
        {
            let mut s = self.snapshot.lock();
            if s.errors.len() >= MAX_PENDING_ERRORS {
                s.errors.remove(0);
                s.dropped_errors += 1;
            }
            s.errors.push(message);
        }
        self.changed.notify_one();
    }
}

/// The handle of the watch task: the latest set of peers and the errors since the last look.
#[derive(Debug, Clone)]
pub struct KubeWatch {
    shared: Arc<Shared>,
}

impl KubeWatch {
    /// Starts the watch on `tracker` with a client from `KUBECONFIG` / `~/.kube/config` or the
    /// in-cluster service account (kube-rs `Client::try_default`), retried every 30 s while none
    /// can be built. `default_port` is the peers' port unless `cfg.port` is set.
    pub fn start(
        cfg: &KubernetesDiscovery,
        default_port: u16,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> KubeWatch {
        let shared = Arc::new(Shared::default());
        let (cfg, sh) = (cfg.clone(), Arc::clone(&shared));
        tracker.spawn(async move {
            let client = loop {
                match Client::try_default().await {
                    Ok(c) => break c,
                    Err(e) => sh.error(format!(
                        "Kubernetes discovery: no API client (KUBECONFIG, ~/.kube/config or the \
                         in-cluster service account): {e}; retrying in {}s",
                        CLIENT_RETRY.as_secs()
                    )),
                }
                tokio::select! {
                    () = tokio::time::sleep(CLIENT_RETRY) => {}
                    () = cancel.cancelled() => return,
                }
            };
            run(client, &cfg, default_port, sh, cancel).await;
        });
        KubeWatch { shared }
    }

    /// Starts the watch on `tracker` with `client` (tests point one at a recorded-response server).
    pub fn start_with_client(
        client: Client,
        cfg: &KubernetesDiscovery,
        default_port: u16,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> KubeWatch {
        let shared = Arc::new(Shared::default());
        let (cfg, sh) = (cfg.clone(), Arc::clone(&shared));
        tracker.spawn(async move { run(client, &cfg, default_port, sh, cancel).await });
        KubeWatch { shared }
    }

    /// The peers as of the latest event (empty until the first list completed).
    pub fn nodes(&self) -> BTreeMap<String, Node> {
        self.shared.snapshot.lock().nodes.clone()
    }

    /// Whether the first full list has been applied.
    pub fn synced(&self) -> bool {
        self.shared.snapshot.lock().synced
    }

    /// The errors since the previous call (each reported once), oldest first.
    pub fn take_errors(&self) -> Vec<String> {
        let mut s = self.shared.snapshot.lock();
        let mut out = std::mem::take(&mut s.errors);
        if s.dropped_errors > 0 {
            out.insert(
                0,
                format!(
                    "Kubernetes discovery: {} more errors not shown",
                    std::mem::take(&mut s.dropped_errors)
                ),
            );
        }
        out
    }

    /// Resolves when the set changed or an error arrived since the last call (a change before the
    /// first call counts).
    pub async fn changed(&self) {
        self.shared.changed.notified().await;
    }
}

async fn run(
    client: Client,
    cfg: &KubernetesDiscovery,
    default_port: u16,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let port = cfg.port.unwrap_or(default_port);
    match &cfg.source {
        KubernetesSource::Nodes => {
            let api: Api<core::Node> = Api::all(client);
            watch(
                api,
                watcher::Config::default(),
                "nodes",
                move |n| node_peer(n, port),
                shared,
                cancel,
            )
            .await;
        }
        KubernetesSource::Pods {
            label_selector,
            namespace,
        } => {
            let api: Api<core::Pod> = match namespace {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            };
            let mut wc = watcher::Config::default();
            if let Some(sel) = label_selector {
                wc = wc.labels(sel);
            }
            watch(api, wc, "pods", move |p| pod_peer(p, port), shared, cancel).await;
        }
    }
}

async fn watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    what: &'static str,
    map: impl Fn(&K) -> Option<Node>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut store = ObjectStore::default();
    let mut events = std::pin::pin!(watcher::watcher(api, wc).default_backoff());
    loop {
        let next = tokio::select! {
            n = events.next() => n,
            () = cancel.cancelled() => return,
        };
        match next {
            Some(Ok(event)) => {
                let was_synced = store.synced();
                if store.apply(event, &map) || store.synced() != was_synced {
                    let nodes = store.nodes();
                    tracing::debug!(
                        kind = what,
                        peers = nodes.len(),
                        "Kubernetes discovery changed"
                    );
                    {
                        let mut s = shared.snapshot.lock();
                        s.nodes = nodes;
                        s.synced = store.synced();
                    }
                    shared.changed.notify_one();
                }
            }
            Some(Err(e)) => {
                let known = store.nodes().len();
                shared.error(format!(
                    "Kubernetes discovery: {what}: {} (keeping the last known {known} peers)",
                    describe(&e)
                ));
            }
            // The watcher recovers from every error itself and never ends.
            None => return,
        }
    }
}

/// A watcher error in words: the API's status code, reason and message when it answered.
fn describe(e: &watcher::Error) -> String {
    let failed = |what: &str, err: &kube::Error| match err {
        kube::Error::Api(s) => format!("{what} failed: {} {}: {}", s.code, s.reason, s.message),
        other => format!("{what} failed: {other}"),
    };
    match e {
        watcher::Error::InitialListFailed(err) => failed("list", err),
        watcher::Error::WatchStartFailed(err) => failed("watch", err),
        watcher::Error::WatchFailed(err) => failed("watch stream", err),
        watcher::Error::WatchError(s) if s.code == 410 => format!(
            "watch expired, listing again: {} {}: {}",
            s.code, s.reason, s.message
        ),
        watcher::Error::WatchError(s) => {
            format!("watch error: {} {}: {}", s.code, s.reason, s.message)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests;
