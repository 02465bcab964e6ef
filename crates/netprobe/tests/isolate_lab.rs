//! `netprobe isolate` / `release` against real kernels and real iptables: a "pod" namespace
//! serving HTTP (keep-alive) and holding a file, a "node" namespace probing it like the kubelet
//! (httpGet and tcpSocket), a "client" namespace, and an outbound destination namespace.
//! Needs root, iproute2, iptables (nft backend) and conntrack: fails, never skips, where they are
//! missing. Addresses: documentation ranges and loopback, inside the lab's own namespaces only.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod diagnose_support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diagnose_support::*;
use lab::{Netns, Veth};

const POD_NODE: &str = "198.51.100.2:8080";
const POD_CLIENT: &str = "203.0.113.2:8080";
const DEST: &str = "192.0.2.1:8080";
const STEP: Duration = Duration::from_millis(800);

const POD_SPEC: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    \
    livenessProbe:\n      httpGet:\n        path: /healthz\n        port: 8080\n      periodSeconds: 10\n      failureThreshold: 3\n    \
    readinessProbe:\n      tcpSocket:\n        port: 8080\n      periodSeconds: 5\n";

/// Keep-alive HTTP/1.1 server bound inside `ns` (every request gets `200 ok`); bounded: stops
/// when dropped or after 180 s; each connection is served for at most 60 s.
struct Server {
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(ns: &Netns, addr: &str) -> Server {
    let a: SocketAddr = addr.parse().unwrap();
    let listener = ns
        .run_in(move || std::net::TcpListener::bind(a))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                        let mut buf = [0u8; 4096];
                        for _ in 0..1000 {
                            match s.read(&mut buf) {
                                Ok(n) if n > 0 => {}
                                _ => return,
                            }
                            let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(r).is_err() {
                                return;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Server { stop }
}

/// One request on `s`: whether `200` came back within [`STEP`].
fn request(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(STEP));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: pod\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 256];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// A TCP connection from inside `ns` (the kubelet's tcpSocket probe), within [`STEP`].
fn connect(ns: &Netns, addr: &str) -> Option<TcpStream> {
    let a: SocketAddr = addr.parse().unwrap();
    ns.run_in(move || TcpStream::connect_timeout(&a, STEP).ok())
        .unwrap()
}

/// The kubelet's httpGet probe from `ns`: connect, GET, 200.
fn http_ok(ns: &Netns, addr: &str) -> bool {
    connect(ns, addr).is_some_and(|mut s| request(&mut s))
}

struct Lab {
    pod: Netns,
    node: Netns,
    client: Netns,
    _dest: Netns,
    _veths: Vec<Veth>,
    _servers: Vec<Server>,
    dir: tempfile::TempDir,
    /// `nft` or `legacy`: the backend of the pod's own rules.
    backend: &'static str,
}

fn lab(prefix: &str) -> Lab {
    lab_on(prefix, "nft")
}

fn lab_on(prefix: &str, backend: &'static str) -> Lab {
    let pod = Netns::new(&format!("{prefix}p")).unwrap();
    let node = Netns::new(&format!("{prefix}n")).unwrap();
    let client = Netns::new(&format!("{prefix}c")).unwrap();
    let dest = Netns::new(&format!("{prefix}d")).unwrap();
    let veths = vec![
        Veth::connect(&node, "198.51.100.1/24", &pod, "198.51.100.2/24").unwrap(),
        Veth::connect(&client, "203.0.113.1/24", &pod, "203.0.113.2/24").unwrap(),
        Veth::connect(&dest, "192.0.2.1/24", &pod, "192.0.2.2/24").unwrap(),
    ];
    pod.ip(&["route", "add", "default", "via", "198.51.100.1"])
        .unwrap();
    // The namespace already has rules of its own (nft backend, both families): release must
    // give them back unchanged.
    rule(
        &pod,
        &format!("iptables-{backend}"),
        &["-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"],
    );
    rule(
        &pod,
        &format!("ip6tables-{backend}"),
        &["-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"],
    );
    let servers = vec![serve(&pod, "0.0.0.0:8080"), serve(&dest, DEST)];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pod.yaml"), POD_SPEC).unwrap();
    std::fs::write(dir.path().join("evidence.txt"), "left by the attacker").unwrap();
    let l = Lab {
        pod,
        node,
        client,
        _dest: dest,
        _veths: veths,
        _servers: servers,
        dir,
        backend,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(http_ok(&l.node, POD_NODE) && http_ok(&l.pod, DEST)) {
        assert!(
            Instant::now() < deadline,
            "lab servers not reachable after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    l
}

impl Lab {
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_str().unwrap().to_string()
    }

    /// `iptables-B-save` and `ip6tables-B-save` of the pod (B its backend), comments and counters
    /// aside.
    fn saved(&self) -> String {
        let mut out = String::new();
        for family in ["iptables", "ip6tables"] {
            let tool = format!("{family}-{}-save", self.backend);
            let t = self.pod.exec_ok(&[&tool]).unwrap();
            for l in t.lines().filter(|l| !l.starts_with('#')) {
                let l = match l.rfind(" [") {
                    Some(i) if l.starts_with(':') => &l[..i],
                    _ => l,
                };
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// (node tcpSocket, node httpGet, client, egress, pod loopback).
    fn flows(&self) -> [bool; 5] {
        [
            connect(&self.node, POD_NODE).is_some(),
            http_ok(&self.node, POD_NODE),
            http_ok(&self.client, POD_CLIENT),
            http_ok(&self.pod, DEST),
            http_ok(&self.pod, "127.0.0.1:8080"),
        ]
    }

    fn np(&self, args: &[&str]) -> std::process::Output {
        let db = self.path("history.db");
        let mut a = args.to_vec();
        if matches!(a[0], "isolate" | "release") && !a.contains(&"--dry-run") {
            a.extend(["--db", db.as_str()]);
        }
        netprobe(&a)
    }
}

fn ok(o: &std::process::Output) -> String {
    assert_eq!(
        code(o),
        0,
        "stdout {} stderr {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn isolations(db: &str) -> Vec<store::IsolationRecord> {
    use store::Store as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = store::SqliteStore::open(std::path::Path::new(db))
            .await
            .unwrap();
        let r = s.isolations(100).await.unwrap();
        s.close().await;
        r
    })
}

/// Without `--keep-probes`: the probes fail, the client and egress are blocked, an established
/// connection is cut, diagnose says isolation-drop-all and that it is netprobe's; release gives
/// every flow and the exact ruleset back.
#[test]
fn isolate_cuts_everything_and_release_restores_exactly() {
    let l = lab("iso1");
    let before = l.saved();
    assert_eq!(l.flows(), [true; 5]);
    let mut established = connect(&l.client, POD_CLIENT).unwrap();
    assert!(request(&mut established));
    let spec = l.path("pod.yaml");

    // --dry-run: the report, and nothing changes.
    let out = ok(&l.np(&[
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--dry-run",
    ]));
    assert!(
        out.contains("restarts the container 21–31 s after isolation"),
        "{out}"
    );
    assert!(
        out.contains("leaves its Services' endpoints 11–16 s"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!(l.saved(), before);
    assert!(request(&mut established));

    let o = l.np(&[
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--reason",
        "incident 7",
    ]);
    let out = ok(&o);
    assert!(
        out.contains("restart: the kubelet restarts the container"),
        "{out}"
    );
    let isolated = l.saved();
    assert!(isolated.contains(":NETPROBE-ISOLATE-IN"), "{isolated}");
    assert!(
        isolated
            .contains("-A INPUT -m comment --comment \"netprobe isolate\" -j NETPROBE-ISOLATE-IN"),
        "{isolated}"
    );
    // Probes, client and egress blocked; loopback inside the pod kept.
    assert_eq!(l.flows(), [false, false, false, false, true]);
    assert!(
        !request(&mut established),
        "an established connection survived"
    );
    // The evidence is untouched (no kubelet here, but nothing of netprobe's deletes it either).
    assert!(std::path::Path::new(&l.path("evidence.txt")).exists());

    let args = [
        "--netns",
        l.node.name(),
        "--target-netns",
        l.pod.name(),
        "--timeout",
        "1s",
        "http://198.51.100.2:8080/healthz",
    ];
    let d = diagnose(&args, 1);
    assert!(ids(&d).contains(&"isolation-drop-all".to_string()), "{d:#}");
    let ev = evidence(finding(&d, "isolation-drop-all"));
    assert!(ev.contains("netprobe's own isolation"), "{ev}");

    // Again: refused, nothing changed.
    let o = l.np(&["isolate", "--netns", l.pod.name()]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("already isolated by netprobe"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(l.saved(), isolated);

    let out = ok(&l.np(&["release", "--netns", l.pod.name(), "--reason", "done"]));
    assert!(out.contains("released"), "{out}");
    assert_eq!(l.saved(), before);
    assert_eq!(l.flows(), [true; 5]);
    let o = l.np(&["release", "--netns", l.pod.name()]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("not isolated by netprobe"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(l.saved(), before);

    let recs = isolations(&l.path("history.db"));
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (recs[0].action.as_str(), recs[0].reason.as_str()),
        ("release", "done")
    );
    assert_eq!(
        (recs[1].action.as_str(), recs[1].reason.as_str()),
        ("isolate", "incident 7")
    );
    assert!(recs[1].rules.as_str().contains("NETPROBE-ISOLATE-IN"));
    assert!(recs[1].who.contains("uid"));
}

/// `--keep-probes`: the kubelet's probes from the node (found from the default route) keep
/// passing; the client, egress, other node traffic and established connections are cut.
#[test]
fn keep_probes_keeps_the_kubelet_and_nothing_else() {
    let l = lab("iso2");
    let before = l.saved();
    let _other = serve(&l.pod, "0.0.0.0:8081");
    let mut established = connect(&l.client, POD_CLIENT).unwrap();
    assert!(request(&mut established));
    let spec = l.path("pod.yaml");
    let o = l.np(&[
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--keep-probes",
    ]);
    let out = ok(&o);
    assert!(out.contains("restart: none"), "{out}");
    assert!(!out.contains("fails after"), "{out}");
    assert!(out.contains("probe source 198.51.100.1"), "{out}");
    assert_eq!(l.flows(), [true, true, false, false, true]);
    assert!(
        connect(&l.node, "198.51.100.2:8081").is_none(),
        "another port from the node passed"
    );
    assert!(
        !request(&mut established),
        "an established connection survived"
    );
    ok(&l.np(&["release", "--netns", l.pod.name()]));
    assert_eq!(l.saved(), before);
    assert_eq!(l.flows(), [true; 5]);
}

/// Bad input: a clear message, exit 2, and the namespace untouched.
#[test]
fn bad_input_leaves_nothing_behind() {
    let l = lab("iso3");
    let before = l.saved();
    let db = l.path("history.db");
    let cases: Vec<(Vec<String>, &str)> = {
        std::fs::write(
            l.path("noprobes.yaml"),
            "spec:\n  containers:\n  - name: a\n",
        )
        .unwrap();
        std::fs::write(
            l.path("named.yaml"),
            POD_SPEC.replace(
                "port: 8080\n      periodSeconds: 10",
                "port: http\n      periodSeconds: 10",
            ),
        )
        .unwrap();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        vec![
            (
                s(&["isolate", "--netns", "netprobe-no-such-ns", "--db", &db]),
                "no network namespace named",
            ),
            (
                s(&["isolate", "--pid", "2147483646", "--db", &db]),
                "no process with pid",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--keep-probes",
                    "--pod-spec",
                    &l.path("noprobes.yaml"),
                    "--db",
                    &db,
                ]),
                "has no httpGet, tcpSocket or grpc probe",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--pod-spec",
                    &l.path("named.yaml"),
                    "--db",
                    &db,
                ]),
                "named port \"http\"",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--allow",
                    "192.0.2.0/33",
                    "--db",
                    &db,
                ]),
                "expected CIDR[:PORT]",
            ),
            (
                s(&["isolate", "--netns", l.pod.name()]),
                "give --db PATH or -c CONFIG",
            ),
            (
                s(&["release", "--netns", l.pod.name(), "--db", &db]),
                "not isolated by netprobe",
            ),
        ]
    };
    for (args, want) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = netprobe(&a);
        assert_eq!(code(&o), 2, "{a:?}: {}{}", text(&o.stdout), text(&o.stderr));
        assert!(text(&o.stderr).contains(want), "{a:?}: {}", text(&o.stderr));
        assert_eq!(l.saved(), before, "{a:?} changed the rules");
    }
    assert_eq!(l.flows(), [true; 5]);
    assert!(isolations(&db).is_empty());
}

/// A legacy-backend pod named by pid, with `--allow` for one outbound destination: the rules go
/// to iptables-legacy (where the pod's own rules are), the allowed egress passes and nothing
/// else, and release restores the legacy ruleset exactly.
#[test]
fn legacy_backend_by_pid_with_an_allowed_destination() {
    let l = lab_on("iso4", "legacy");
    let before = l.saved();
    let nft_before = l.pod.exec_ok(&["iptables-nft-save"]).unwrap();
    let sleeper = l.pod.spawn(&["sleep", "120"]).unwrap();
    let pid = sleeper.id().to_string();
    let o = l.np(&["isolate", "--pid", &pid, "--allow", DEST, "--json"]);
    let doc = json(&o);
    assert_eq!(code(&o), 0, "{doc:#} {}", text(&o.stderr));
    assert_eq!(doc["backend"], "legacy", "{doc:#}");
    assert!(l.saved().contains(":NETPROBE-ISOLATE-OUT"));
    // Egress to the allowed destination passes; the probes, the client and loopback as before.
    assert_eq!(l.flows(), [false, false, false, true, true]);
    assert!(
        connect(&l.pod, "192.0.2.1:8081").is_none(),
        "another port of the allowed host passed"
    );
    // Released with `-c`: recorded in the store the daemon's config points at.
    let db = l.path("history.db");
    let cfg = l.path("netprobe.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{ path: \"{db}\" }}\nchecks:\n  - name: lo\n    icmp: {{ host: \"127.0.0.1\" }}\n"
        ),
    )
    .unwrap();
    ok(&netprobe(&["release", "--pid", &pid, "-c", &cfg]));
    assert_eq!(l.saved(), before);
    let recs = isolations(&db);
    let actions: Vec<&str> = recs.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["release", "isolate"]);
    assert_eq!(recs[1].netns, format!("network namespace of pid {pid}"));
    assert_eq!(
        l.pod
            .exec_ok(&["iptables-nft-save"])
            .unwrap()
            .lines()
            .filter(|x| !x.starts_with('#'))
            .count(),
        nft_before.lines().filter(|x| !x.starts_with('#')).count()
    );
    assert_eq!(l.flows(), [true; 5]);
    drop(sleeper);
}

/// When the IPv6 restore fails after the IPv4 one succeeded, the IPv4 rules are taken out again:
/// exit 1, the ruleset as before, nothing recorded. The failure is a stand-in
/// `ip6tables-nft-restore` (a script that exits 1) first in `PATH`: a mock, as no real kernel
/// refuses this payload on demand.
#[test]
fn mock_ip6tables_failure_rolls_the_ipv4_rules_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let l = lab("iso5");
    let before = l.saved();
    let bin = l.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("ip6tables-nft-restore");
    std::fs::write(&fake, "#!/bin/sh\necho 'simulated failure' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let db = l.path("history.db");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["isolate", "--netns", l.pod.name(), "--db", &db])
        .env("PATH", path)
        .env("NETPROBE_LOG", "warn");
    let o = lab::run_bounded(cmd, RUN_LIMIT).unwrap();
    assert_eq!(code(&o), 1, "{}{}", text(&o.stdout), text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("ip6tables-nft-restore failed"), "{err}");
    assert!(err.contains("simulated failure"), "{err}");
    assert!(err.contains("nothing was left installed"), "{err}");
    assert_eq!(l.saved(), before);
    assert_eq!(l.flows(), [true; 5]);
    assert!(isolations(&db).is_empty());
}
