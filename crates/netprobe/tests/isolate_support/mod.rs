//! The isolation lab: a "pod" namespace serving HTTP (keep-alive) over IPv4 and IPv6, a "node"
//! probing it like the kubelet, a "client" and an outbound destination, and the helpers that
//! run netprobe against it and read the pod's rules.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::diagnose_support::*;
use lab::{Netns, Veth};

pub const POD_NODE: &str = "198.51.100.2:8080";
pub const POD_CLIENT: &str = "203.0.113.2:8080";
pub const DEST: &str = "192.0.2.1:8080";
pub const POD_NODE6: &str = "[fd00:1::2]:8080";
pub const POD_CLIENT6: &str = "[fd00:2::2]:8080";
pub const DEST6: &str = "[fd00:3::1]:8080";
/// What `iptables-save`/`ip6tables-save` print for a filter table with nothing in it (comments and
/// counters aside, as [`Lab::saved`] prints it).
pub const EMPTY_FILTER: &str = "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\nCOMMIT\n";
pub const STEP: Duration = Duration::from_millis(800);

pub const POD_SPEC: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    \
    livenessProbe:\n      httpGet:\n        path: /healthz\n        port: 8080\n      periodSeconds: 10\n      failureThreshold: 3\n    \
    readinessProbe:\n      tcpSocket:\n        port: 8080\n      periodSeconds: 5\n";

/// Keep-alive HTTP/1.1 server bound inside `ns` (every request gets `200 ok`); bounded: stops
/// when dropped or after 180 s; each connection is served for at most 60 s.
pub struct Server {
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn serve(ns: &Netns, addr: &str) -> Server {
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
pub fn request(s: &mut TcpStream) -> bool {
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
pub fn connect(ns: &Netns, addr: &str) -> Option<TcpStream> {
    let a: SocketAddr = addr.parse().unwrap();
    ns.run_in(move || TcpStream::connect_timeout(&a, STEP).ok())
        .unwrap()
}

/// The kubelet's httpGet probe from `ns`: connect, GET, 200.
pub fn http_ok(ns: &Netns, addr: &str) -> bool {
    connect(ns, addr).is_some_and(|mut s| request(&mut s))
}

/// The lab's namespaces (dropped, and so deleted, with it), servers and files.
pub struct Lab {
    pub pod: Netns,
    pub node: Netns,
    pub client: Netns,
    _dest: Netns,
    _veths: Vec<Veth>,
    _servers: Vec<Server>,
    /// The pod spec (`pod.yaml`), the store, scratch files.
    pub dir: tempfile::TempDir,
    /// `nft` or `legacy`: the backend of the pod's own rules.
    pub backend: &'static str,
}

pub fn lab(prefix: &str) -> Lab {
    lab_on(prefix, "nft", true)
}

/// The lab; `own_rules`: the pod already has rules of its own in `backend` (both families),
/// else it has no table at all (a fresh pod namespace).
pub fn lab_on(prefix: &str, backend: &'static str, own_rules: bool) -> Lab {
    let pod = Netns::new(&format!("{prefix}p")).unwrap();
    let node = Netns::new(&format!("{prefix}n")).unwrap();
    let client = Netns::new(&format!("{prefix}c")).unwrap();
    let dest = Netns::new(&format!("{prefix}d")).unwrap();
    let link = |a: &Netns, a4, a6, b4, b6| Veth::connect_multi(a, &[a4, a6], &pod, &[b4, b6]);
    let veths = vec![
        link(
            &node,
            "198.51.100.1/24",
            "fd00:1::1/64",
            "198.51.100.2/24",
            "fd00:1::2/64",
        )
        .unwrap(),
        link(
            &client,
            "203.0.113.1/24",
            "fd00:2::1/64",
            "203.0.113.2/24",
            "fd00:2::2/64",
        )
        .unwrap(),
        link(
            &dest,
            "192.0.2.1/24",
            "fd00:3::1/64",
            "192.0.2.2/24",
            "fd00:3::2/64",
        )
        .unwrap(),
    ];
    pod.ip(&["route", "add", "default", "via", "198.51.100.1"])
        .unwrap();
    pod.ip(&["-6", "route", "add", "default", "via", "fd00:1::1"])
        .unwrap();
    if own_rules {
        // Release must give these back unchanged.
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
    }
    let servers = vec![
        serve(&pod, "0.0.0.0:8080"),
        serve(&pod, POD_NODE6),
        serve(&pod, POD_CLIENT6),
        serve(&dest, DEST),
        serve(&dest, DEST6),
    ];
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
    while !(http_ok(&l.node, POD_NODE)
        && http_ok(&l.pod, DEST)
        && http_ok(&l.node, POD_NODE6)
        && http_ok(&l.pod, DEST6))
    {
        assert!(
            Instant::now() < deadline,
            "lab servers not reachable after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    l
}

impl Lab {
    pub fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_str().unwrap().to_string()
    }

    /// `iptables-B-save` and `ip6tables-B-save` of the pod (B its backend), comments and counters
    /// aside.
    pub fn saved(&self) -> String {
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
    pub fn flows(&self) -> [bool; 5] {
        [
            connect(&self.node, POD_NODE).is_some(),
            http_ok(&self.node, POD_NODE),
            http_ok(&self.client, POD_CLIENT),
            http_ok(&self.pod, DEST),
            http_ok(&self.pod, "127.0.0.1:8080"),
        ]
    }

    /// Over IPv6: (node tcpSocket, node httpGet, client, egress).
    pub fn flows6(&self) -> [bool; 4] {
        [
            connect(&self.node, POD_NODE6).is_some(),
            http_ok(&self.node, POD_NODE6),
            http_ok(&self.client, POD_CLIENT6),
            http_ok(&self.pod, DEST6),
        ]
    }

    /// netprobe in the current (root) namespace, with the lab's store.
    pub fn np(&self, args: &[&str]) -> std::process::Output {
        self.np_in(None, args)
    }

    /// netprobe inside `ns` (`ip netns exec`: that is then the namespace netprobe runs in, as
    /// the node's is for the kubelet), or in the current one; `isolate` and `release` record into
    /// the lab's store.
    pub fn np_in(&self, ns: Option<&Netns>, args: &[&str]) -> std::process::Output {
        let mut cmd = self.np_command(ns, args);
        cmd.env("NETPROBE_LOG", "warn");
        lab::run_bounded(cmd, RUN_LIMIT).unwrap()
    }

    pub fn np_command(&self, ns: Option<&Netns>, args: &[&str]) -> std::process::Command {
        let db = self.path("history.db");
        let mut a = vec![BIN];
        a.extend_from_slice(args);
        if matches!(args[0], "isolate" | "release") && !args.contains(&"--dry-run") {
            a.extend(["--db", db.as_str()]);
        }
        match ns {
            Some(ns) => ns.command(&a),
            None => {
                let mut c = std::process::Command::new(BIN);
                c.args(&a[1..]);
                c
            }
        }
    }
}

pub fn ok(o: &std::process::Output) -> String {
    assert_eq!(
        code(o),
        0,
        "stdout {} stderr {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

pub fn isolations(db: &str) -> Vec<store::IsolationRecord> {
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

/// The pod's own save text of `tool` (`iptables-nft-save`, …), comments aside.
pub fn save_of(ns: &Netns, tool: &str) -> String {
    let t = ns.exec_ok(&[tool]).unwrap();
    t.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}
