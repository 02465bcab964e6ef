//! The node latency mesh: every agent measures RTT, jitter and loss to its peers.
//!
//! * `discovery` — the static list, the Kubernetes peers and DNS A/AAAA of a headless Service,
//!   re-resolved every `refresh`.
//! * `kubernetes` — one long-lived watch (kube-rs informer) on Nodes or Pods feeding a snapshot;
//!   a change wakes the discovery task at once (at most one pass per [`MIN_PASS_GAP`]).
//! * `select` — full mesh for small meshes, rendezvous hashing above (each node observed by exactly
//!   `min(k, n - 1)` others).
//! * `round` — one round of one pair: `packets` echoes on the shared ICMP engine spread over the
//!   interval, or TCP connects to the peer agent's port when ICMP is denied or every echo was lost.
//! * `stats` — a round's aggregates (RTT min/avg/max/stddev/p50/p99, loss, jitter, nanosecond times).
//! * `chunk` — the rounds a pair gathered since the last store write, and their encoding there.
//!
//! The latest round of each pair is kept in memory (the matrix). Every round is appended to its
//! pair's open chunk; every [`CHUNK_SPAN`] all open chunks are written to the store (`mesh_chunks`)
//! in one transaction, one row per pair. The history endpoint reads the store and the chunks not
//! written yet.
//!
//! One long-lived task per (peer, address) runs its rounds at a fixed rate, each starting at its own
//! offset inside the interval (a hash of the pair picks one of the interval's 10 ms `PHASE_SLOT`s),
//! so an agent with many peers sends small bursts spread over the interval. ICMP rounds are handed
//! to one [`IcmpRounds`] driver, which sends each slot's echoes in one pass and settles the rounds
//! itself: a pair task wakes once per round, not per echo and reply. The discovery task reconciles
//! the set of pair tasks after every pass.

pub mod chunk;
pub mod discovery;
pub mod kubernetes;
pub mod round;
pub mod select;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use probe::icmp::{IcmpEngine, IcmpRounds};
use serde::Serialize;
use store::{MeshChunkRecord, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::{CheckSpec, UnhealthyHook};
use crate::config::MeshConfig;
use crate::metrics::{MeshLabels, Metrics};
use round::RoundSpec;
use stats::{MeshProtocol, RoundStats};

/// How often every pair's open chunk is written to the store, in one transaction. A chunk row per
/// pair per span instead of a row per round: with one row per round, an agent with 1,000 peers
/// at a 1 s interval spent about a fifth of its CPU in SQLite, most of it updating a leaf of the
/// per-peer index for every round (BENCHMARKS.md, "Mesh CPU, round three"). The cost: a crash
/// (not a shutdown, which writes them) loses at most this much history; the metrics and the
/// matrix are not affected.
pub const CHUNK_SPAN: Duration = Duration::from_secs(30);

/// Most rounds waiting for the store in memory (~6 MB). Beyond, rounds are left out of the history
/// (logged once per write) until the next write takes them: a store that hangs must not make the
/// agent grow without bound. 1,000 peers at a 1 s interval gather 30,000 per write.
pub const MAX_UNWRITTEN_ROUNDS: usize = 100_000;

/// After ICMP failed, a pair with the TCP fallback probes over TCP and retries ICMP every this many
/// rounds.
const ICMP_RETRY_ROUNDS: u32 = 6;

/// Pair phases are multiples of this (at most the interval), so pairs whose echoes fall in the same
/// slot are woken by one timer tick and send together: 100 wake-ups a second instead of one per
/// millisecond tick with 1,000 peers, which was most of the mesh's scheduling cost (BENCHMARKS.md).
/// 10 ms of spread keeps the bursts small (1,000 peers × 5 echoes: ~50 echoes per slot).
const PHASE_SLOT: Duration = Duration::from_millis(10);

/// Discovery interval when only static peers are configured (they cannot change; the pass still
/// refreshes the local-address check).
const STATIC_REFRESH: Duration = Duration::from_secs(60);

/// Least time between two discovery passes woken by Kubernetes changes: a burst of watch events
/// (a rolling update) makes one reconcile, not one per event.
pub const MIN_PASS_GAP: Duration = Duration::from_secs(1);

/// One probed (peer, address).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairKey {
    /// Peer node name.
    pub node: String,
    /// Peer address.
    pub ip: IpAddr,
}

/// A pair's latest round and the rounds not written to the store yet.
#[derive(Debug, Default)]
struct PairEntry {
    latest: Option<RoundStats>,
    open: chunk::OpenChunk,
}

/// Closed chunks not in the store yet.
#[derive(Debug, Default)]
struct Unwritten {
    /// Chunks of pairs that stopped, for the next write.
    stopped: Vec<MeshChunkRecord>,
    /// The batch being written, until the write ends.
    writing: Option<Arc<Vec<MeshChunkRecord>>>,
}

impl Unwritten {
    fn iter(&self) -> impl Iterator<Item = &MeshChunkRecord> {
        self.stopped
            .iter()
            .chain(self.writing.iter().flat_map(|b| b.iter()))
    }
}

/// What the API shows about the mesh as a whole.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshStatus {
    /// Nodes discovered (this one included when listed).
    pub nodes: usize,
    /// Peer nodes this agent probes.
    pub targets: usize,
    /// How many nodes probe this one.
    pub observers: usize,
    /// Whether every other node is probed.
    pub full_mesh: bool,
    /// Discovery errors of the latest pass.
    pub discovery_errors: Vec<String>,
    /// Nodes dropped because the mesh exceeded [`select::MAX_MESH_NODES`].
    pub dropped_nodes: usize,
}

/// The live mesh state, shared by the pair tasks and the API.
pub struct MeshState {
    cfg: MeshConfig,
    hook: Option<Arc<dyn UnhealthyHook>>,
    store: Option<Arc<dyn Store>>,
    /// Chunks on their way to the store. Lock order: `pairs`, then this.
    unwritten: Mutex<Unwritten>,
    /// Rounds in open chunks and in chunks of stopped pairs (changed under the `pairs` lock).
    open_rounds: AtomicUsize,
    /// [`MAX_UNWRITTEN_ROUNDS`] (smaller in tests).
    max_open_rounds: usize,
    /// Whether rounds were left out since the last write (to log it once).
    dropping: AtomicBool,
    source: Arc<str>,
    metrics: Arc<Metrics>,
    pairs: RwLock<BTreeMap<PairKey, PairEntry>>,
    status: RwLock<MeshStatus>,
    /// The origin of every pair's phase: pairs started at different times share one slot grid.
    epoch: tokio::time::Instant,
    /// Sends and settles every pair's ICMP rounds.
    rounds: IcmpRounds,
}

/// A pair's metric series for one protocol, looked up once instead of once per round (a label-set
/// hash and three string allocations each time).
struct Series {
    rtt: prometheus_client::metrics::histogram::Histogram,
    loss: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// One row of `GET /api/v1/mesh`.
#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    /// Peer node name.
    pub target_node: String,
    /// Peer address.
    pub target_ip: IpAddr,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// The latest round, if one finished.
    pub latest: Option<RoundStats>,
}

/// `GET /api/v1/mesh`.
#[derive(Debug, Clone, Serialize)]
pub struct MeshView {
    /// This agent's node name.
    pub node: String,
    /// Round interval, seconds.
    pub interval_seconds: f64,
    /// Probes per pair per round.
    pub packets: u16,
    /// Discovery and selection state.
    pub status: MeshStatus,
    /// Every probed pair, by peer name then address.
    pub pairs: Vec<PairView>,
}

/// One address of a peer in `GET /api/v1/mesh/{peer}/history`.
#[derive(Debug, Clone, Serialize)]
pub struct PairHistory {
    /// Peer address.
    pub target_ip: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Per-round aggregates, oldest first (RTT aggregates to the nanosecond, as stored).
    pub rounds: Vec<RoundStats>,
}

/// The check name under which a mesh pair's diagnoses are stored and counted:
/// `mesh.NODE.ADDRESS` with `:` written as `-` (check names allow `[A-Za-z0-9_.-]`), e.g.
/// `mesh.node-4.198.51.100.5`, `mesh.node-4.fd00--5`.
pub fn diagnosis_name(node: &str, ip: IpAddr) -> String {
    format!("mesh.{node}.{}", ip.to_string().replace(':', "-"))
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}

impl MeshState {
    /// The matrix row of this agent.
    pub fn view(&self) -> MeshView {
        let pairs = self
            .pairs
            .read()
            .iter()
            .map(|(k, e)| PairView {
                target_node: k.node.clone(),
                target_ip: k.ip,
                family: family(k.ip),
                latest: e.latest.clone(),
            })
            .collect();
        MeshView {
            node: self.cfg.node_name.clone(),
            interval_seconds: self.cfg.interval.as_secs_f64(),
            packets: self.cfg.packets,
            status: self.status.read().clone(),
            pairs,
        }
    }

    /// The per-round history of `peer`: the newest `limit` rounds of each of its addresses, oldest
    /// first, from the store and from the chunks not written yet. `Ok(None)` when `peer` is
    /// neither probed nor in the store.
    ///
    /// Errors: the store's, or a stored chunk that cannot be decoded, as text.
    pub async fn history(
        &self,
        peer: &str,
        limit: u32,
    ) -> Result<Option<Vec<PairHistory>>, String> {
        // Memory first, then the store: a chunk is in a pair's open chunk, in `unwritten`, or
        // committed, and moves on only after the next place has it, so reading in this order
        // misses none; one read in both places is counted once (by start time).
        let mut chunks: Vec<(String, Vec<u8>)> = Vec::new();
        let probed: Vec<IpAddr> = {
            let pairs = self.pairs.read();
            let mine = pairs.iter().filter(|(k, _)| k.node == peer);
            for (k, e) in mine.clone().filter(|(_, e)| !e.open.is_empty()) {
                chunks.push((k.ip.to_string(), e.open.data().to_vec()));
            }
            let unwritten = self.unwritten.lock();
            for c in unwritten.iter().filter(|c| c.target_node == peer) {
                chunks.push((c.target_ip.clone(), c.data.clone()));
            }
            mine.map(|(k, _)| k.ip).collect()
        };
        if let Some(s) = &self.store {
            let stored = s
                .mesh_chunks(peer, limit)
                .await
                .map_err(|e| e.to_string())?;
            chunks.extend(stored.into_iter().map(|c| (c.target_ip, c.data)));
        }
        if chunks.is_empty() && probed.is_empty() {
            return Ok(None);
        }
        let mut by_ip: BTreeMap<String, BTreeMap<i64, RoundStats>> = BTreeMap::new();
        for ip in probed {
            by_ip.entry(ip.to_string()).or_default();
        }
        for (ip, data) in chunks {
            let rounds = chunk::decode(&data)
                .map_err(|e| format!("stored mesh history of {peer} ({ip}): {e}"))?;
            let seen = by_ip.entry(ip).or_default();
            for r in rounds {
                seen.entry(r.started_ns).or_insert(r);
            }
        }
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(Some(
            by_ip
                .into_iter()
                .map(|(ip, rounds)| {
                    let skip = rounds.len().saturating_sub(keep);
                    PairHistory {
                        family: if ip.contains(':') { "ipv6" } else { "ipv4" },
                        target_ip: ip,
                        rounds: rounds.into_values().skip(skip).collect(),
                    }
                })
                .collect(),
        ))
    }

    /// Closes every open chunk and takes those of stopped pairs: the batch to write, `None` if
    /// empty. It stays readable by [`history`](Self::history) until [`written`](Self::written).
    fn close_chunks(&self) -> Option<Arc<Vec<MeshChunkRecord>>> {
        let mut pairs = self.pairs.write();
        let mut unwritten = self.unwritten.lock();
        let mut batch = std::mem::take(&mut unwritten.stopped);
        for (k, e) in pairs.iter_mut() {
            batch.extend(e.open.take(&self.source, &k.node, &k.ip.to_string()));
        }
        self.open_rounds.store(0, Ordering::Relaxed);
        self.dropping.store(false, Ordering::Relaxed);
        if batch.is_empty() {
            return None;
        }
        let batch = Arc::new(batch);
        unwritten.writing = Some(Arc::clone(&batch));
        Some(batch)
    }

    /// Forgets the batch of [`close_chunks`](Self::close_chunks) once the store has it (or gave
    /// up on it).
    fn written(&self) {
        self.unwritten.lock().writing = None;
    }

    /// Stops recording `key`: its metric series go, and its open chunk waits in `unwritten` for
    /// the next store write.
    fn remove_pair(&self, key: &PairKey) {
        let mut pairs = self.pairs.write();
        if let Some(mut e) = pairs.remove(key)
            && let Some(c) = e.open.take(&self.source, &key.node, &key.ip.to_string())
            && self.store.is_some()
        {
            self.unwritten.lock().stopped.push(c);
        }
        drop(pairs);
        self.remove_series(key);
    }

    /// Hands a pair whose echoes all got lost to the automatic diagnosis, as a check named
    /// [`diagnosis_name`] with the round's ICMP outcome. The diagnosis is two-ended: it also asks
    /// the peer's agent at `key.ip:port` (the TCP fallback's port) to trace the inbound echo
    /// request on its own host ([`crate::farend`]).
    fn diagnose(
        &self,
        key: &PairKey,
        port: u16,
        engine: &Arc<IcmpEngine>,
        outcome: &probe::Outcome,
    ) {
        let Some(hook) = &self.hook else {
            return;
        };
        let cfg = probe::icmp::IcmpConfig::new(key.ip.to_string());
        let Ok(prober) = probe::icmp::IcmpProber::new(cfg, Arc::clone(engine)) else {
            return;
        };
        let spec = CheckSpec {
            name: diagnosis_name(&key.node, key.ip),
            kind: probe::Kind::Icmp,
            target: prober.target(),
            runner: crate::scheduler::runner(probe::Prober::Icmp(prober)),
            period: self.cfg.interval,
            timeout: self.cfg.interval,
            initial_delay: Duration::ZERO,
            success_threshold: 1,
            failure_threshold: 1,
            conditions: Vec::new(),
        };
        let far = crate::farend::FarEndTarget {
            node: key.node.clone(),
            agent: std::net::SocketAddr::new(key.ip, port),
            destination: key.ip,
            protocol: crate::diagnose::Protocol::Icmp,
            port: None,
        };
        hook.mesh_pair_lost(&spec, outcome, &far);
    }

    fn labels(&self, key: &PairKey, protocol: MeshProtocol) -> MeshLabels {
        MeshLabels {
            source_node: Arc::clone(&self.source),
            target_node: Arc::from(key.node.as_str()),
            target_ip: Arc::from(key.ip.to_string().as_str()),
            family: family(key.ip),
            protocol: protocol.as_str(),
        }
    }

    fn series(&self, key: &PairKey, protocol: MeshProtocol) -> Series {
        let labels = self.labels(key, protocol);
        Series {
            rtt: self.metrics.mesh.rtt.get_or_create_owned(&labels),
            loss: self.metrics.mesh.loss.get_or_create_owned(&labels),
        }
    }

    fn record(&self, key: &PairKey, series: &Series, stats: RoundStats) {
        series.loss.set(stats.loss_ratio);
        let mut pairs = self.pairs.write();
        let Some(e) = pairs.get_mut(key) else {
            return; // the pair was just removed
        };
        // Log changes of state only: a dead peer must not log once per round.
        let before = e.latest.as_ref().map(|l| (l.loss_ratio > 0.0, l.protocol));
        let now = (stats.loss_ratio > 0.0, stats.protocol);
        if before != Some(now) && (now.0 || before.is_some_and(|b| b.0)) {
            tracing::warn!(
                peer = %key.node, ip = %key.ip, protocol = stats.protocol.as_str(),
                loss = stats.loss_ratio, reason = stats.reason.as_deref().unwrap_or(""),
                "mesh pair {}", if now.0 { "lost probes" } else { "recovered" }
            );
        }
        if self.store.is_some() {
            if self.open_rounds.load(Ordering::Relaxed) < self.max_open_rounds {
                e.open.push(&stats);
                self.open_rounds.fetch_add(1, Ordering::Relaxed);
            } else if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    waiting = self.max_open_rounds,
                    "mesh history: the store has not taken the rounds waiting for it; newer \
                     rounds are left out of the history until it does"
                );
            }
        }
        e.latest = Some(stats);
    }

    fn remove_series(&self, key: &PairKey) {
        for p in [MeshProtocol::Icmp, MeshProtocol::Tcp] {
            let l = self.labels(key, p);
            self.metrics.mesh.rtt.remove(&l);
            self.metrics.mesh.loss.remove(&l);
        }
    }
}

/// Starts discovery, the pair tasks and (with a store) the round writer on `tracker`; they stop
/// when `cancel` fires. `hook` (the automatic diagnosis) is told when a pair's ICMP round loses every
/// echo after one that did not, as a check named [`diagnosis_name`] turning unhealthy.
pub fn start(
    cfg: MeshConfig,
    engine: Arc<IcmpEngine>,
    metrics: Arc<Metrics>,
    store: Option<Arc<dyn Store>>,
    hook: Option<Arc<dyn UnhealthyHook>>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Arc<MeshState> {
    if cfg.firewall_manage {
        spawn_firewall(&cfg, tracker, cancel.clone());
    }
    let state = Arc::new(MeshState {
        hook,
        store: store.clone(),
        unwritten: Mutex::new(Unwritten::default()),
        open_rounds: AtomicUsize::new(0),
        max_open_rounds: MAX_UNWRITTEN_ROUNDS,
        dropping: AtomicBool::new(false),
        source: Arc::from(cfg.node_name.as_str()),
        cfg,
        metrics,
        pairs: RwLock::new(BTreeMap::new()),
        status: RwLock::new(MeshStatus::default()),
        epoch: tokio::time::Instant::now(),
        rounds: IcmpRounds::new(),
    });
    if let Some(s) = store {
        tracker.spawn(chunk_writer(Arc::clone(&state), s, cancel.clone()));
    }
    let st = Arc::clone(&state);
    let t = tracker.clone();
    tracker.spawn(async move { discovery_loop(st, engine, t, cancel).await });
    state
}

/// How often `firewall.manage` checks that the mesh's rules are still in place.
const FIREWALL_RECONCILE: std::time::Duration = std::time::Duration::from_secs(30);

/// `firewall.manage: true`: ensures the mesh's rules (ICMP echo in and out, the TCP fallback port)
/// on the configured interfaces now and every [`FIREWALL_RECONCILE`], on the blocking pool
/// ([`crate::firewall::Reconciler`] runs the `*-save`/`*-restore` tools in a setns thread). A
/// configuration the reconciler refuses is logged once and management stays off.
fn spawn_firewall(cfg: &MeshConfig, tracker: &TaskTracker, cancel: CancellationToken) {
    use crate::firewall::{Change, FirewallConfig, Reconciler};
    let fw = FirewallConfig {
        netns: crate::collect::NetnsTarget::Current,
        spec: netfilter::manage::Spec {
            interfaces: cfg.firewall_interfaces.clone(),
            tcp_port: cfg.tcp.then_some(cfg.tcp_port),
        },
        backend: None,
    };
    let reconciler = match Reconciler::new(fw) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "mesh.firewall.manage: not managing the firewall");
            return;
        }
    };
    tracker.spawn(async move {
        let mut reconciler = reconciler;
        loop {
            // The reconciler moves to the blocking pool and back: no lock is needed.
            let done = tokio::task::spawn_blocking(move || {
                let change = reconciler.reconcile_once();
                (change, reconciler)
            })
            .await;
            let Ok((change, back)) = done else {
                tracing::error!("mesh firewall reconciler panicked; management stops");
                return;
            };
            reconciler = back;
            match change {
                Ok(Change::Restored { backend, missing }) => tracing::warn!(
                    backend,
                    missing = ?missing,
                    restored_total = reconciler.restored_count(),
                    "mesh firewall rules were missing: restored"
                ),
                Ok(Change::Unchanged) => {}
                Err(e) => tracing::error!(error = %e, "mesh firewall reconcile failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(FIREWALL_RECONCILE) => {}
                () = cancel.cancelled() => return,
            }
        }
    });
}

/// Writes every pair's open chunk every [`CHUNK_SPAN`], and once more on cancel. With
/// `mesh.retention`, prunes the mesh history older than that after the first write and then every
/// [`PRUNE_EVERY_WRITES`] writes (the store's pruner applies `storage.retention` to it as well).
async fn chunk_writer(state: Arc<MeshState>, store: Arc<dyn Store>, cancel: CancellationToken) {
    let mut writes: u32 = 0;
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(CHUNK_SPAN) => false,
            () = cancel.cancelled() => true,
        };
        write_chunks(&state, store.as_ref()).await;
        if stop {
            return;
        }
        if let Some(retention) = state.cfg.retention
            && writes.is_multiple_of(PRUNE_EVERY_WRITES)
        {
            prune_history(store.as_ref(), retention).await;
        }
        writes = writes.wrapping_add(1);
    }
}

/// With `mesh.retention`, the mesh history is pruned every this many chunk writes (10 minutes).
const PRUNE_EVERY_WRITES: u32 = 20;

/// Deletes mesh history older than `retention`; a failure is logged and retried next time.
async fn prune_history(store: &dyn Store, retention: Duration) {
    let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff_ms = store::now_ms().saturating_sub(keep_ms);
    match store.prune_mesh(cutoff_ms).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, cutoff_ms, "pruned mesh history"),
        Err(error) => tracing::warn!(%error, cutoff_ms, "pruning mesh history failed"),
    }
}

/// Writes every open chunk and those of stopped pairs in one transaction. A failed write is logged
/// and its chunks are dropped (the store keeps what it had).
async fn write_chunks(state: &MeshState, store: &dyn Store) {
    let Some(batch) = state.close_chunks() else {
        return;
    };
    if let Err(e) = store.append_mesh_chunks(&batch).await {
        let rounds: u64 = batch.iter().map(|c| u64::from(c.rounds)).sum();
        tracing::warn!(error = %e, rounds, "cannot store mesh rounds; they are not kept");
    }
    state.written();
}

async fn discovery_loop(
    state: Arc<MeshState>,
    engine: Arc<IcmpEngine>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let refresh = state.cfg.dns.as_ref().map_or(STATIC_REFRESH, |d| d.refresh);
    let kube = state
        .cfg
        .kubernetes
        .as_ref()
        .map(|k| kubernetes::KubeWatch::start(k, state.cfg.tcp_port, &tracker, cancel.clone()));
    let mut running: HashMap<PairKey, CancellationToken> = HashMap::new();
    let mut previous = BTreeMap::new();
    loop {
        let pass_started = tokio::time::Instant::now();
        let found = tokio::select! {
            f = discovery::discover(&state.cfg, &previous, kube.as_ref()) => f,
            () = cancel.cancelled() => break,
        };
        let mut names: Vec<String> = found.nodes.keys().cloned().collect();
        let mut dropped = 0;
        if names.len() > select::MAX_MESH_NODES {
            dropped = names.len() - select::MAX_MESH_NODES;
            names.truncate(select::MAX_MESH_NODES);
        }
        // A DNS-discovered node named by one of our own addresses is this agent.
        let me = state.cfg.node_name.clone();
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| {
                *n == me
                    || !found
                        .nodes
                        .get(n)
                        .is_some_and(|node| node.addresses.iter().any(|a| discovery::is_local(*a)))
            })
            .collect();
        let (k, fm) = (
            state.cfg.peers_per_node as usize,
            state.cfg.full_mesh_max as usize,
        );
        let sel = {
            let names = names.clone();
            let me = me.clone();
            tokio::task::spawn_blocking(move || select::select(&me, &names, k, fm))
                .await
                .unwrap_or(select::Selection {
                    targets: Vec::new(),
                    observers: 0,
                    full_mesh: false,
                })
        };
        let mut wanted: HashMap<PairKey, u16> = HashMap::new();
        for t in &sel.targets {
            if let Some(node) = found.nodes.get(t) {
                for ip in &node.addresses {
                    wanted.insert(
                        PairKey {
                            node: t.clone(),
                            ip: *ip,
                        },
                        node.port,
                    );
                }
            }
        }
        if !found.errors.is_empty() {
            state.metrics.mesh.discovery_errors.inc();
            for e in &found.errors {
                tracing::warn!(error = %e, "mesh discovery");
            }
        }
        // Stop the pairs that left the selection.
        running.retain(|key, token| {
            let keep = wanted.contains_key(key);
            if !keep {
                token.cancel();
                state.remove_pair(key);
            }
            keep
        });
        for (key, port) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let token = cancel.child_token();
            running.insert(key.clone(), token.clone());
            state.pairs.write().entry(key.clone()).or_default();
            let (st, eng) = (Arc::clone(&state), Arc::clone(&engine));
            tracker.spawn(async move { pair_loop(st, eng, key, port, token).await });
        }
        let probed = running.len();
        state.metrics.mesh.peers.set(probed as i64);
        state.metrics.mesh.nodes.set(names.len() as i64);
        state.metrics.mesh.observers.set(sel.observers as i64);
        previous = found.nodes;
        *state.status.write() = MeshStatus {
            nodes: names.len(),
            targets: sel.targets.len(),
            observers: sel.observers,
            full_mesh: sel.full_mesh,
            discovery_errors: found.errors,
            dropped_nodes: dropped,
        };
        let kube_changed = async {
            match &kube {
                Some(k) => k.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(refresh) => {}
            () = kube_changed => {
                tokio::select! {
                    () = tokio::time::sleep_until(pass_started + MIN_PASS_GAP) => {}
                    () = cancel.cancelled() => break,
                }
            }
            () = cancel.cancelled() => break,
        }
    }
}

/// The pair's phase inside the interval: a hash of the pair picks one of the interval's
/// [`PHASE_SLOT`]s, so pairs start spread out and keep their slot across restarts.
fn phase(key: &PairKey, interval: Duration) -> Duration {
    let h = select::name_hash(&format!("{}/{}", key.node, key.ip));
    let slot = PHASE_SLOT.min(interval);
    let slots = (interval.as_nanos() / slot.as_nanos().max(1)).max(1);
    let pick = u32::try_from(u128::from(h) % slots).unwrap_or(0);
    slot * pick
}

/// The first start at or after `now` on the pair's grid `epoch + phase + k × interval`.
fn first_start(
    epoch: tokio::time::Instant,
    phase: Duration,
    interval: Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    let at = epoch + phase;
    if at >= now {
        return at;
    }
    let k = (now - at).as_nanos().div_ceil(interval.as_nanos().max(1));
    at + interval * u32::try_from(k).unwrap_or(u32::MAX)
}

async fn pair_loop(
    state: Arc<MeshState>,
    engine: Arc<IcmpEngine>,
    key: PairKey,
    port: u16,
    cancel: CancellationToken,
) {
    let cfg = &state.cfg;
    let spec = RoundSpec {
        ip: key.ip,
        port,
        packets: cfg.packets,
        interval: cfg.interval,
    };
    let mut next = first_start(
        state.epoch,
        phase(&key, cfg.interval),
        cfg.interval,
        tokio::time::Instant::now(),
    );
    let prober = round::icmp_prober(spec, &engine).map_err(|e| e.to_string());
    // [ICMP, TCP] series, looked up on the protocol's first round.
    let mut series: [Option<Series>; 2] = [None, None];
    // TCP rounds since ICMP last failed (None = ICMP works or was never tried).
    let mut icmp_failed: Option<u32> = None;
    let mut icmp_reason = String::new();
    // Whether the last ICMP round lost every echo (a diagnosis is asked for on the transition).
    let mut was_lost = false;
    loop {
        let slot = next;
        next += cfg.interval;
        let use_icmp = cfg.icmp && (!cfg.tcp || icmp_failed.is_none_or(|n| n >= ICMP_RETRY_ROUNDS));
        // The round waits for its slot itself: an ICMP round is handed to the rounds driver at
        // once and this task wakes only when it is over.
        let prober = prober.as_ref().map_err(String::as_str);
        let (stats, rtts, outcome) = tokio::select! {
            s = run_round(&state.rounds, spec, slot, prober, use_icmp, &icmp_reason) => s,
            () = cancel.cancelled() => return,
        };
        if let Some(o) = &outcome {
            let lost_all = stats.received == 0;
            if lost_all && !was_lost {
                state.diagnose(&key, port, &engine, o);
            }
            was_lost = lost_all;
        }
        if use_icmp {
            icmp_failed = (stats.received == 0).then_some(0);
            icmp_reason = stats.reason.clone().unwrap_or_default();
        } else if let Some(n) = icmp_failed.as_mut() {
            *n += 1;
        }
        let slot = &mut series[usize::from(stats.protocol == MeshProtocol::Tcp)];
        let pair_series = slot.get_or_insert_with(|| state.series(&key, stats.protocol));
        for r in &rtts {
            pair_series.rtt.observe(*r);
        }
        state.record(&key, pair_series, stats);
        let now = tokio::time::Instant::now();
        if next < now {
            // A round overran (a stalled runtime): skip the missed slots rather than burst.
            let behind = now - next;
            let skip = behind.as_nanos() / cfg.interval.as_nanos().max(1) + 1;
            next += cfg.interval * u32::try_from(skip).unwrap_or(u32::MAX);
        }
    }
}

/// A round's aggregates plus its answered RTTs in seconds (for the histogram). A TCP round is
/// marked with the reason ICMP failed (`icmp-disabled` when `protocols` has no `icmp`).
async fn run_round(
    rounds: &IcmpRounds,
    spec: RoundSpec,
    slot: tokio::time::Instant,
    prober: Result<&probe::icmp::IcmpProber, &str>,
    use_icmp: bool,
    icmp_reason: &str,
) -> (RoundStats, Vec<f64>, Option<probe::Outcome>) {
    if use_icmp {
        round::icmp(spec, rounds, slot, prober).await
    } else {
        tokio::time::sleep_until(slot).await;
        let (mut stats, rtts) = round::tcp(spec).await;
        stats.fallback_reason = Some(if icmp_reason.is_empty() {
            "icmp-disabled".to_owned()
        } else {
            icmp_reason.to_owned()
        });
        (stats, rtts, None)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_whole_slots_inside_the_interval_and_spread() {
        let interval = Duration::from_secs(1);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000u32 {
            let key = PairKey {
                node: format!("p{i}"),
                ip: IpAddr::from([198, 51, 100, (i % 250) as u8]),
            };
            let p = phase(&key, interval);
            assert!(p < interval);
            assert_eq!(p.as_nanos() % PHASE_SLOT.as_nanos(), 0, "{p:?}");
            seen.insert(p);
        }
        assert!(
            seen.len() > 90,
            "1,000 pairs use most of the 100 slots: {}",
            seen.len()
        );
        // An interval shorter than a slot: every pair starts at the beginning.
        let key = PairKey {
            node: "a".into(),
            ip: IpAddr::from([198, 51, 100, 1]),
        };
        assert_eq!(phase(&key, Duration::from_millis(3)), Duration::ZERO);
    }

    fn state(store: Option<Arc<dyn Store>>) -> MeshState {
        MeshState {
            cfg: MeshConfig {
                node_name: "node-a".to_owned(),
                interval: Duration::from_secs(1),
                packets: 2,
                peers_per_node: 0,
                full_mesh_max: 50,
                icmp: true,
                tcp: false,
                tcp_port: 8080,
                static_peers: Vec::new(),
                dns: None,
                kubernetes: None,
                firewall_manage: false,
                firewall_interfaces: Vec::new(),
                retention: None,
            },
            hook: None,
            store,
            unwritten: Mutex::new(Unwritten::default()),
            open_rounds: AtomicUsize::new(0),
            max_open_rounds: 6,
            dropping: AtomicBool::new(false),
            source: Arc::from("node-a"),
            metrics: Arc::new(Metrics::new()),
            pairs: RwLock::new(BTreeMap::new()),
            status: RwLock::new(MeshStatus::default()),
            epoch: tokio::time::Instant::now(),
            rounds: IcmpRounds::new(),
        }
    }

    /// A mesh state on a fresh SQLite store (the directory lives as long as the first value).
    async fn with_store() -> (tempfile::TempDir, Arc<store::SqliteStore>, MeshState) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            store::SqliteStore::open(&dir.path().join("h.db"))
                .await
                .unwrap(),
        );
        let st = state(Some(Arc::clone(&db) as Arc<dyn Store>));
        (dir, db, st)
    }

    fn key(node: &str, ip: [u8; 4]) -> PairKey {
        PairKey {
            node: node.to_owned(),
            ip: IpAddr::from(ip),
        }
    }

    /// Round `i` of a pair: starts at `i` seconds, `i` µs RTT.
    fn round(i: i64) -> RoundStats {
        stats::aggregate(
            MeshProtocol::Icmp,
            i * 1_000_000_000,
            &[Some(i as f64 * 1e-6), None],
            &[0, 500_000_000],
        )
    }

    fn record(st: &MeshState, k: &PairKey, rounds: std::ops::Range<i64>) {
        let series = st.series(k, MeshProtocol::Icmp);
        for i in rounds {
            st.record(k, &series, round(i));
        }
    }

    /// `(address, round starts in seconds)` of `peer`'s history.
    async fn starts(st: &MeshState, peer: &str, limit: u32) -> Vec<(String, Vec<i64>)> {
        st.history(peer, limit)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|h| {
                let s = h
                    .rounds
                    .iter()
                    .map(|r| r.started_ns / 1_000_000_000)
                    .collect();
                (h.target_ip, s)
            })
            .collect()
    }

    /// The history is whole at every step of a round's way to the store — in the pair's open chunk,
    /// written, in a stopped pair's chunk waiting for the next write — with no round twice, the
    /// newest `limit` per address; a store write makes one row per pair.
    #[tokio::test]
    async fn history_reads_unwritten_and_stored_rounds_once_each() {
        let (_dir, db, st) = with_store().await;
        let (b1, b2, c) = (
            key("node-b", [198, 51, 100, 2]),
            key("node-b", [198, 51, 100, 3]),
            key("node-c", [198, 51, 100, 4]),
        );
        for k in [&b1, &b2, &c] {
            st.pairs.write().insert(k.clone(), PairEntry::default());
        }
        assert!(st.history("nobody", 10).await.unwrap().is_none());
        let empty = starts(&st, "node-b", 10).await;
        assert_eq!(
            empty,
            [
                ("198.51.100.2".into(), vec![]),
                ("198.51.100.3".into(), vec![])
            ]
        );

        record(&st, &b1, 0..3);
        record(&st, &b2, 0..1);
        record(&st, &c, 0..2);
        let unwritten = starts(&st, "node-b", 10).await;
        assert_eq!(
            unwritten,
            [
                ("198.51.100.2".into(), vec![0, 1, 2]),
                ("198.51.100.3".into(), vec![0])
            ]
        );

        write_chunks(&st, db.as_ref()).await;
        assert_eq!(
            db.mesh_chunks("node-b", 100).await.unwrap().len(),
            2,
            "a row per pair"
        );
        assert!(st.unwritten.lock().iter().next().is_none());
        record(&st, &b1, 3..5);
        let both = starts(&st, "node-b", 10).await;
        assert_eq!(both[0], ("198.51.100.2".into(), vec![0, 1, 2, 3, 4]));
        assert_eq!(starts(&st, "node-b", 2).await[0].1, [3, 4]);
        assert_eq!(starts(&st, "node-b", 4).await[0].1, [1, 2, 3, 4]);

        // A chunk being written (in `unwritten`) and already committed is still counted once.
        let batch = st.close_chunks().unwrap();
        db.append_mesh_chunks(&batch[..1]).await.unwrap();
        assert_eq!(starts(&st, "node-b", 10).await[0].1, [0, 1, 2, 3, 4]);
        st.written();
        assert_eq!(starts(&st, "node-b", 10).await[0].1, [0, 1, 2, 3, 4]);

        // A pair that stops keeps its unwritten rounds for the next write; its metrics go.
        record(&st, &c, 2..4);
        st.remove_pair(&c);
        assert!(!st.metrics.encode().contains("target_node=\"node-c\""));
        assert_eq!(
            starts(&st, "node-c", 10).await,
            [("198.51.100.4".into(), vec![0, 1, 2, 3])]
        );
        write_chunks(&st, db.as_ref()).await;
        assert!(st.unwritten.lock().iter().next().is_none());
        let stored = db.mesh_chunks("node-c", 100).await.unwrap();
        let rounds: Vec<u32> = stored.iter().map(|c| c.rounds).collect();
        assert_eq!(rounds, [2, 2], "newest first");
        assert_eq!(
            starts(&st, "node-c", 10).await,
            [("198.51.100.4".into(), vec![0, 1, 2, 3])]
        );
        // A round of the removed pair that finishes late is not recorded.
        record(&st, &c, 4..5);
        assert_eq!(starts(&st, "node-c", 10).await[0].1, [0, 1, 2, 3]);
        db.close().await;
    }

    /// Rounds waiting for the store are capped (6 in these tests): beyond, they are left out of
    /// the history until a write takes the waiting ones; the matrix still gets every round.
    #[tokio::test]
    async fn rounds_waiting_for_the_store_are_bounded() {
        let (_dir, db, st) = with_store().await;
        let (b, c) = (
            key("node-b", [198, 51, 100, 2]),
            key("node-c", [198, 51, 100, 3]),
        );
        for k in [&b, &c] {
            st.pairs.write().insert(k.clone(), PairEntry::default());
        }
        record(&st, &b, 0..4);
        record(&st, &c, 0..1);
        st.remove_pair(&c); // its unwritten round still counts
        record(&st, &b, 4..8);
        assert_eq!(starts(&st, "node-b", 10).await[0].1, [0, 1, 2, 3, 4]);
        assert_eq!(st.pairs.read()[&b].latest, Some(round(7)));
        write_chunks(&st, db.as_ref()).await;
        record(&st, &b, 8..9);
        assert_eq!(starts(&st, "node-b", 10).await[0].1, [0, 1, 2, 3, 4, 8]);
        assert_eq!(starts(&st, "node-c", 10).await[0].1, [0]);
        db.close().await;
    }

    /// `mesh.retention` prunes the mesh history older than it, and nothing newer.
    #[tokio::test]
    async fn prune_history_applies_the_mesh_retention() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::SqliteStore::open(&dir.path().join("h.db"))
            .await
            .unwrap();
        let now = store::now_ms();
        let old = now - 2 * 3_600_000;
        let mut open = chunk::OpenChunk::default();
        open.push(&round(old / 1_000));
        let mut recent = chunk::OpenChunk::default();
        recent.push(&round(now / 1_000 - 60));
        let rows: Vec<MeshChunkRecord> = [open, recent]
            .iter_mut()
            .filter_map(|c| c.take("node-a", "node-b", "198.51.100.2"))
            .collect();
        db.append_mesh_chunks(&rows).await.unwrap();
        prune_history(&db, Duration::from_secs(3_600)).await;
        let left = db.mesh_chunks("node-b", 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].first_ms, (now / 1_000 - 60) * 1_000);
        db.close().await;
    }

    /// Without a store nothing accumulates: the pairs keep their latest round only.
    #[tokio::test]
    async fn without_a_store_only_the_latest_round_is_kept() {
        let st = state(None);
        let b = key("node-b", [198, 51, 100, 2]);
        st.pairs.write().insert(b.clone(), PairEntry::default());
        record(&st, &b, 0..3);
        assert!(st.pairs.read()[&b].open.is_empty());
        assert_eq!(st.pairs.read()[&b].latest, Some(round(2)));
        assert_eq!(
            starts(&st, "node-b", 10).await,
            [("198.51.100.2".into(), vec![])]
        );
        st.remove_pair(&b);
        assert!(st.unwritten.lock().iter().next().is_none());
    }

    #[test]
    fn first_start_is_on_the_grid_and_not_in_the_past() {
        let epoch = tokio::time::Instant::now();
        let (phase, interval) = (Duration::from_millis(30), Duration::from_secs(1));
        assert_eq!(first_start(epoch, phase, interval, epoch), epoch + phase);
        let now = epoch + Duration::from_millis(2_500);
        assert_eq!(
            first_start(epoch, phase, interval, now),
            epoch + Duration::from_millis(3_030)
        );
        let exact = epoch + Duration::from_millis(2_030);
        assert_eq!(first_start(epoch, phase, interval, exact), exact);
    }
}
