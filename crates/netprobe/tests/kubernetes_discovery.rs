//! Kubernetes discovery against recorded API responses: no API server can run here, so a loopback
//! HTTP server (`kube_support`) replays kube-apiserver answers from `tests/fixtures/kubernetes/`
//! to a real kube-rs client, and every request the watcher makes is checked (list, then watch from
//! the list's resourceVersion, resume from a BOOKMARK, relist after 410 Gone). The last test runs
//! the `netprobe` binary with a KUBECONFIG pointing at the same replaying server.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod kube_support;

use std::net::IpAddr;
use std::time::Duration;

use kube_support::{FakeApiServer, fixture, fixture_lines};
use netprobe::config::{KubernetesDiscovery, KubernetesSource};
use netprobe::mesh::kubernetes::KubeWatch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn client(server: &FakeApiServer) -> kube::Client {
    let cfg = kube::Config::new(server.url.parse().expect("url"));
    kube::Client::try_from(cfg).expect("client")
}

/// The watch's peers as (name, addresses, port).
fn peers(kw: &KubeWatch) -> Vec<(String, Vec<IpAddr>, u16)> {
    kw.nodes()
        .into_values()
        .map(|n| (n.name, n.addresses, n.port))
        .collect()
}

fn want(list: &[(&str, &[&str])], port: u16) -> Vec<(String, Vec<IpAddr>, u16)> {
    list.iter()
        .map(|(n, a)| {
            (
                (*n).to_owned(),
                a.iter().map(|s| s.parse().expect("ip")).collect(),
                port,
            )
        })
        .collect()
}

/// Waits (at most 10 s) until the watch shows exactly `expected`.
async fn until_peers(kw: &KubeWatch, expected: &[(String, Vec<IpAddr>, u16)], what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = peers(kw);
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: peers {now:?}, expected {expected:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), kw.changed()).await;
    }
}

/// Waits (at most 10 s) for an error containing every one of `needles`; returns all taken.
async fn until_error(kw: &KubeWatch, needles: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        seen.extend(kw.take_errors());
        if seen.iter().any(|e| needles.iter().all(|n| e.contains(n))) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error with {needles:?}; errors: {seen:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), kw.changed()).await;
    }
}

#[tokio::test]
async fn kubernetes_nodes_watch_recorded_responses() {
    let mut api = FakeApiServer::start().await;
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let cfg = KubernetesDiscovery {
        source: KubernetesSource::Nodes,
        port: None,
    };
    let kw = KubeWatch::start_with_client(client(&api), &cfg, 8080, &tracker, cancel.clone());

    // 1. The initial list: one request, no watch yet, nothing visible before it is answered.
    let list = api.next(10).await;
    assert_eq!(list.path, "/api/v1/nodes");
    assert!(!list.is_watch(), "{list:?}");
    assert_eq!(list.param("limit"), "500", "{list:?}");
    assert!(peers(&kw).is_empty() && !kw.synced());
    list.answer(200, fixture("nodes-list.json"));
    until_peers(
        &kw,
        &want(
            &[
                ("node-a", &["198.51.100.1", "fd00::1"]),
                ("node-b", &["198.51.100.2"]),
            ],
            8080,
        ),
        "after the list",
    )
    .await;
    assert!(kw.synced());

    // 2. The watch starts from the list's resourceVersion, with bookmarks.
    let watch = api.next(10).await;
    assert_eq!(watch.path, "/api/v1/nodes");
    assert!(watch.is_watch(), "{watch:?}");
    assert_eq!(watch.param("resourceVersion"), "1000", "{watch:?}");
    assert_eq!(watch.param("allowWatchBookmarks"), "true", "{watch:?}");
    let events = watch.stream();
    let lines = fixture_lines("nodes-watch.jsonl");
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.starts_with("{\"type\":\"ADDED\"") {
                "ADDED"
            } else if l.starts_with("{\"type\":\"MODIFIED\"") {
                "MODIFIED"
            } else if l.starts_with("{\"type\":\"DELETED\"") {
                "DELETED"
            } else {
                "BOOKMARK"
            }
        })
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]);

    events.send(lines[0].clone()).unwrap();
    until_peers(
        &kw,
        &want(
            &[
                ("node-a", &["198.51.100.1", "fd00::1"]),
                ("node-b", &["198.51.100.2"]),
                ("node-c", &["198.51.100.3", "fd00::3"]),
            ],
            8080,
        ),
        "after ADDED node-c",
    )
    .await;
    events.send(lines[1].clone()).unwrap();
    until_peers(
        &kw,
        &want(
            &[
                ("node-a", &["198.51.100.1", "fd00::1"]),
                ("node-b", &["198.51.100.22"]),
                ("node-c", &["198.51.100.3", "fd00::3"]),
            ],
            8080,
        ),
        "after MODIFIED node-b",
    )
    .await;
    events.send(lines[2].clone()).unwrap();
    let after_delete = want(
        &[
            ("node-b", &["198.51.100.22"]),
            ("node-c", &["198.51.100.3", "fd00::3"]),
        ],
        8080,
    );
    until_peers(&kw, &after_delete, "after DELETED node-a").await;
    events.send(lines[3].clone()).unwrap();
    // The server ends the watch (its timeoutSeconds): the watcher resumes from the bookmark's
    // resourceVersion, without listing again.
    drop(events);
    let resumed = api.next(10).await;
    assert!(resumed.is_watch(), "resumed without a relist: {resumed:?}");
    assert_eq!(resumed.param("resourceVersion"), "1500", "{resumed:?}");
    assert!(kw.take_errors().is_empty());

    // 3. 410 Gone: reported, the set kept, and a relist follows.
    let events = resumed.stream();
    events
        .send(fixture_lines("nodes-watch-gone.jsonl")[0].clone())
        .unwrap();
    let errors = until_error(&kw, &["410 Expired", "too old resource version"]).await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("keeping the last known 2 peers")),
        "{errors:?}"
    );
    let relist = api.next(10).await;
    assert!(
        !relist.is_watch(),
        "a 410 must be followed by a list: {relist:?}"
    );
    assert_eq!(relist.path, "/api/v1/nodes");
    // 503 on the relist: kube-rs's client retries the same request itself (its server retry
    // policy for 429/503/504); nothing reaches the watcher.
    relist.answer(503, fixture("status-503.json"));
    let retried = api.next(10).await;
    assert!(!retried.is_watch(), "{retried:?}");
    assert_eq!(retried.path, "/api/v1/nodes");
    assert!(kw.take_errors().is_empty());
    // 500 (etcd timed out) is a watcher error: reported, the set still kept.
    retried.answer(500, fixture("status-500.json"));
    until_error(
        &kw,
        &["list failed: 500 InternalError: Internal error occurred: etcdserver: request timed out"],
    )
    .await;
    assert_eq!(peers(&kw), after_delete, "the last known set is kept");
    let relist = api.next(10).await;
    assert!(!relist.is_watch(), "{relist:?}");
    relist.answer(200, fixture("nodes-relist.json"));
    // node-c was deleted while nobody watched: the relist's answer replaces the set.
    until_peers(
        &kw,
        &want(
            &[
                ("node-b", &["198.51.100.22"]),
                ("node-d", &["198.51.100.4", "fd00::4"]),
            ],
            8080,
        ),
        "after the relist",
    )
    .await;
    let watch = api.next(10).await;
    assert!(watch.is_watch(), "{watch:?}");
    assert_eq!(watch.param("resourceVersion"), "2001", "{watch:?}");
    let _held_open = watch.stream();
    // A watch that stays open is not polled: no list per round.
    api.expect_none(1500).await;

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("the watch task stops on cancel");
}

#[tokio::test]
async fn kubernetes_pods_label_selector_watch_recorded_responses() {
    let mut api = FakeApiServer::start().await;
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let cfg = KubernetesDiscovery {
        source: KubernetesSource::Pods {
            label_selector: Some("app=netprobe".to_owned()),
            namespace: Some("kube-system".to_owned()),
        },
        port: Some(9000),
    };
    let kw = KubeWatch::start_with_client(client(&api), &cfg, 8080, &tracker, cancel.clone());

    let list = api.next(10).await;
    assert_eq!(list.path, "/api/v1/namespaces/kube-system/pods");
    assert!(!list.is_watch(), "{list:?}");
    assert_eq!(list.param("labelSelector"), "app=netprobe", "{list:?}");
    list.answer(200, fixture("pods-list.json"));
    // The Pending pod without an IP is no peer; the Running one is named by its node.
    until_peers(
        &kw,
        &want(&[("node-a", &["198.51.100.11", "fd00::11"])], 9000),
        "after the list",
    )
    .await;

    let watch = api.next(10).await;
    assert_eq!(watch.path, "/api/v1/namespaces/kube-system/pods");
    assert!(watch.is_watch(), "{watch:?}");
    assert_eq!(watch.param("labelSelector"), "app=netprobe", "{watch:?}");
    assert_eq!(watch.param("resourceVersion"), "500", "{watch:?}");
    let events = watch.stream();
    let lines = fixture_lines("pods-watch.jsonl");
    assert_eq!(lines.len(), 2);
    events.send(lines[0].clone()).unwrap();
    until_peers(
        &kw,
        &want(
            &[
                ("node-a", &["198.51.100.11", "fd00::11"]),
                ("node-b", &["198.51.100.12"]),
            ],
            9000,
        ),
        "after the node-b pod runs",
    )
    .await;
    // Terminating (deletionTimestamp set) is no longer a peer, before the DELETED event.
    events.send(lines[1].clone()).unwrap();
    until_peers(
        &kw,
        &want(&[("node-b", &["198.51.100.12"])], 9000),
        "after the node-a pod terminates",
    )
    .await;
    assert!(kw.take_errors().is_empty());
    cancel.cancel();
}

#[tokio::test]
async fn kubernetes_unreachable_api_server_is_reported_not_fatal() {
    // A port nothing listens on (bound, then closed): every list fails with a connection error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = kube::Client::try_from(cfg).unwrap();
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let kd = KubernetesDiscovery {
        source: KubernetesSource::Nodes,
        port: None,
    };
    let kw = KubeWatch::start_with_client(client, &kd, 8080, &tracker, cancel.clone());
    let errors = until_error(&kw, &["Kubernetes discovery: nodes: list failed"]).await;
    assert!(peers(&kw).is_empty() && !kw.synced(), "{errors:?}");
    cancel.cancel();
}

/// `GET path` on the agent (HTTP/1.0); (status, JSON body).
async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return (0, serde_json::Value::Null);
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, serde_json::Value::Null);
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The agent's mesh pairs as sorted "node ip family" strings.
async fn pairs(addr: std::net::SocketAddr) -> Option<Vec<String>> {
    let (status, v) = get_json(addr, "/api/v1/mesh").await;
    if status != 200 {
        return None;
    }
    let mut out: Vec<String> = v["pairs"]
        .as_array()?
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["target_node"].as_str().unwrap_or("?"),
                p["target_ip"].as_str().unwrap_or("?"),
                p["family"].as_str().unwrap_or("?")
            )
        })
        .collect();
    out.sort();
    Some(out)
}

async fn until_pairs(addr: std::net::SocketAddr, expected: &[&str], secs: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = pairs(addr).await;
        if now.as_deref().is_some_and(|p| p == expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: pairs {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills the agent when the test ends, also on a failed assertion.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn kubernetes_run_discovers_mesh_peers_recorded_responses() {
    let mut api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: {}\n\
             contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: recorded\n\
             current-context: recorded\nusers:\n- name: recorded\n  user: {{}}\n",
            api.url
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("netprobe.yaml");
    // A one-hour interval: the pairs exist at once, their first round starts at a hashed phase
    // inside the hour (the addresses are documentation ranges; only the pair list is asserted).
    std::fs::write(
        &config,
        format!(
            "storage: {{ path: \"{}\" }}\nmesh:\n  node_name: node-a\n  interval: \"1h\"\n  \
             protocols: [tcp]\n  discovery:\n    kubernetes: {{ nodes: true }}\n",
            dir.path().join("netprobe.db").display()
        ),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut agent = Agent(
        std::process::Command::new(env!("CARGO_BIN_EXE_netprobe"))
            .args(["run", "-c"])
            .arg(&config)
            .args(["--listen", &addr.to_string()])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("NETPROBE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn netprobe"),
    );

    let list = api.next(30).await;
    assert_eq!(list.path, "/api/v1/nodes");
    assert!(!list.is_watch(), "{list:?}");
    list.answer(200, fixture("nodes-list.json"));
    // node-a is this agent; node-b is its only peer.
    until_pairs(addr, &["node-b 198.51.100.2 ipv4"], 20, "after the list").await;
    let (_, v) = get_json(addr, "/api/v1/mesh").await;
    assert_eq!(v["status"]["nodes"], 2, "{v}");

    let watch = api.next(10).await;
    assert!(watch.is_watch(), "{watch:?}");
    assert_eq!(watch.param("resourceVersion"), "1000", "{watch:?}");
    let events = watch.stream();
    let lines = fixture_lines("nodes-watch.jsonl");
    events.send(lines[0].clone()).unwrap();
    events.send(lines[1].clone()).unwrap();
    // Reconciled on the change, well before the 60 s refresh: node-c joins with both families,
    // node-b's pair moves to its new address.
    until_pairs(
        addr,
        &[
            "node-b 198.51.100.22 ipv4",
            "node-c 198.51.100.3 ipv4",
            "node-c fd00::3 ipv6",
        ],
        10,
        "after ADDED node-c and MODIFIED node-b",
    )
    .await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "netprobe did not exit after SIGTERM with a watch open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0));
    drop(events);
}
