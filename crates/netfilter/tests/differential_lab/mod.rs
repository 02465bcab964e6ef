//! The differential test's lab: three namespaces (client, router, server), the router's counting
//! observer, and the commands that load a case and read the outcome.
#![allow(clippy::unwrap_used, reason = "tests")]

mod observer;
mod packet;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{Netns, Veth, run_bounded};
use netfilter::eval::Origin;
use netfilter::generate::cases::{Case, Lab, case};
use netfilter::{Backend, Family};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub(crate) use observer::{Counts, Outcome, expected};
use observer::{classify, delta, observer_table, parse_counts};
use packet::packet;

/// Longest wait for the test packet to show up at the router.
pub(crate) const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Time limit of one command in the lab.
pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// `iptables-legacy-save`, `ip6tables-nft-save`, …
pub(crate) fn save_command(family: Family, backend: Backend) -> &'static str {
    match (family, backend) {
        (Family::Ipv4, Backend::Legacy) => "iptables-legacy-save",
        (Family::Ipv4, Backend::Nft) => "iptables-nft-save",
        (Family::Ipv6, Backend::Legacy) => "ip6tables-legacy-save",
        (Family::Ipv6, Backend::Nft) => "ip6tables-nft-save",
        (_, Backend::Nftables) => panic!("no iptables tool saves native nftables tables"),
    }
}

/// The three namespaces and what the cases need of them.
pub(crate) struct DiffLab {
    /// Kept for its lifetime: the namespace is deleted on drop.
    pub(crate) _client: Netns,
    pub(crate) router: Netns,
    /// Kept for its lifetime.
    pub(crate) _server: Netns,
    pub(crate) lab: Lab,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) client_sock: Socket,
    pub(crate) router_sock: Socket,
    client_sock6: Socket,
    router_sock6: Socket,
    pub(crate) next_id: u16,
}

/// Runs `argv` inside `ns` (a child of a thread that entered it: no `ip netns exec`), with a
/// private xtables lock so other tests' iptables runs do not block it. Panics on failure.
pub(crate) fn run(ns: &Netns, lock: &std::path::Path, argv: &[&str]) -> String {
    let out = ns
        .run_in(|| {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]).env("XTABLES_LOCKFILE", lock);
            run_bounded(c, CMD_TIMEOUT)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
    if !out.status.success() {
        panic!(
            "{} in {} failed ({}): {}{}",
            argv.join(" "),
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn mac(ns: &Netns, dev: &str) -> String {
    let link = ns.ip(&["-o", "link", "show", "dev", dev]).unwrap();
    let mut it = link.split_whitespace();
    it.find(|w| *w == "link/ether")
        .and_then(|_| it.next())
        .unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_string()
}

/// The router's interface towards the client.
pub(crate) const ROUTER_INNER: &str = "ndin";
/// The router's interface towards the server.
pub(crate) const ROUTER_OUTER: &str = "ndout";

/// Waits (at most 5 s) until `dev` in `ns` is operationally up.
pub(crate) fn wait_up(ns: &Netns, dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = ns.ip(&["-o", "link", "show", "dev", dev]).unwrap();
        if state.contains("state UP") {
            return;
        }
        assert!(Instant::now() < deadline, "{dev} not up: {state}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A raw socket that sends whole IP packets (`IPPROTO_RAW` implies the header is included, for
/// IPv4 and IPv6 alike).
pub(crate) fn raw_socket(ns: &Netns, domain: Domain) -> Socket {
    ns.run_in(|| Socket::new(domain, Type::RAW, Some(Protocol::from(255))))
        .unwrap()
        .expect("raw socket (needs CAP_NET_RAW)")
}

impl DiffLab {
    pub(crate) fn new() -> DiffLab {
        for tool in [
            "iptables-legacy-restore",
            "iptables-nft-restore",
            "nft",
            "conntrack",
        ] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            assert!(
                found,
                "`{tool}` is needed by the differential test and is not installed"
            );
        }
        let client = Netns::new("ndc").unwrap();
        let router = Netns::new("ndr").unwrap();
        let server = Netns::new("nds").unwrap();
        let inner =
            Veth::connect(&router, "198.51.100.254/24", &client, "198.51.100.1/24").unwrap();
        let outer = Veth::connect(&router, "203.0.113.254/24", &server, "203.0.113.1/24").unwrap();
        // Fixed names for the router's ends, so that a seed gives the same rules in any run.
        for (old, new) in [
            (inner.a_name(), ROUTER_INNER),
            (outer.a_name(), ROUTER_OUTER),
        ] {
            router.ip(&["link", "set", old, "down"]).unwrap();
            router.ip(&["link", "set", old, "name", new]).unwrap();
            router.ip(&["link", "set", new, "up"]).unwrap();
        }
        wait_up(&router, ROUTER_INNER);
        wait_up(&router, ROUTER_OUTER);
        let lab = Lab::new(ROUTER_INNER, ROUTER_OUTER);
        // IPv6 after the renames (a link going down loses its IPv6 addresses), without DAD, and
        // without link-local addresses, so that the fd00:: address is the only one of each end.
        for (ns, dev, addr) in [
            (&router, ROUTER_INNER, "fd00:1::fe/64"),
            (&router, ROUTER_OUTER, "fd00:2::fe/64"),
            (&client, inner.b_name(), "fd00:1::1/64"),
            (&server, outer.b_name(), "fd00:2::1/64"),
        ] {
            ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]).unwrap();
            ns.ip(&["-6", "addr", "flush", "dev", dev, "scope", "link"])
                .unwrap();
        }
        client
            .ip(&["route", "add", "fd00:2::/64", "via", "fd00:1::fe"])
            .unwrap();
        server
            .ip(&["route", "add", "fd00:1::/64", "via", "fd00:2::fe"])
            .unwrap();
        // SNAT targets (192.0.2.0/24, fd00:9::/64) routed towards the server, so that a REJECT of
        // an SNATed packet can answer: the kernel sends nothing to an unroutable source.
        router
            .ip(&["route", "add", "192.0.2.0/24", "via", "203.0.113.1"])
            .unwrap();
        router
            .ip(&["route", "add", "fd00:9::/64", "via", "fd00:2::1"])
            .unwrap();
        client
            .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.254"])
            .unwrap();
        server
            .ip(&["route", "add", "198.51.100.0/24", "via", "203.0.113.254"])
            .unwrap();
        // Permanent neighbours: no ARP in flight when a case's packet goes out.
        let (c_mac, r_in_mac) = (mac(&client, inner.b_name()), mac(&router, ROUTER_INNER));
        let (s_mac, r_out_mac) = (mac(&server, outer.b_name()), mac(&router, ROUTER_OUTER));
        let neigh = |ns: &Netns, addr: &str, mac: &str, dev: &str| {
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        };
        neigh(&client, "198.51.100.254", &r_in_mac, inner.b_name());
        neigh(&router, "198.51.100.1", &c_mac, ROUTER_INNER);
        neigh(&router, "198.51.100.7", &c_mac, ROUTER_INNER);
        neigh(&router, "203.0.113.1", &s_mac, ROUTER_OUTER);
        neigh(&server, "203.0.113.254", &r_out_mac, outer.b_name());
        neigh(&client, "fd00:1::fe", &r_in_mac, inner.b_name());
        neigh(&router, "fd00:1::1", &c_mac, ROUTER_INNER);
        neigh(&router, "fd00:1::7", &c_mac, ROUTER_INNER);
        neigh(&router, "fd00:2::1", &s_mac, ROUTER_OUTER);
        neigh(&server, "fd00:2::fe", &r_out_mac, outer.b_name());
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            // Every REJECT must answer: no ICMP rate limit.
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_ratemask", "0"),
            ("net.ipv4.icmp_msgs_per_sec", "1000000"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.icmp.ratelimit", "0"),
        ] {
            router.sysctl(k, v).unwrap();
        }
        for dev in [ROUTER_INNER, ROUTER_OUTER] {
            router
                .sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")
                .unwrap();
            router
                .sysctl(&format!("net.ipv4.conf.{dev}.send_redirects"), "0")
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("xtables.lock");
        for (ns, cmd) in [
            (&client, "iptables-legacy"),
            (&server, "iptables-legacy"),
            (&client, "ip6tables-legacy"),
            (&server, "ip6tables-legacy"),
        ] {
            run(
                ns,
                &lock,
                &[
                    cmd,
                    "-w",
                    "5",
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-j",
                    "DROP",
                ],
            );
        }
        let obs = dir.path().join("observer.nft");
        std::fs::write(&obs, observer_table()).unwrap();
        run(&router, &lock, &["nft", "-f", obs.to_str().unwrap()]);
        let client_sock = raw_socket(&client, Domain::IPV4);
        let router_sock = raw_socket(&router, Domain::IPV4);
        let client_sock6 = raw_socket(&client, Domain::IPV6);
        let router_sock6 = raw_socket(&router, Domain::IPV6);
        let me = DiffLab {
            _client: client,
            router,
            _server: server,
            lab,
            dir,
            client_sock,
            router_sock,
            client_sock6,
            router_sock6,
            next_id: 1,
        };
        // The legacy tables first, so their hooks are registered before the nf_tables ones and run
        // after them at equal priority (see `Case::rulesets`).
        for family in [Family::Ipv4, Family::Ipv6] {
            let empty = case(0, &me.lab, family);
            let empty_text = empty_ruleset();
            me.load(&Case {
                legacy: empty_text.clone(),
                nft: empty_text,
                ..empty
            });
        }
        me
    }

    pub(crate) fn lock(&self) -> std::path::PathBuf {
        self.dir.path().join("xtables.lock")
    }

    pub(crate) fn load(&self, c: &Case) {
        let legacy = self.dir.path().join("legacy.rules");
        let nft = self.dir.path().join("nft.rules");
        std::fs::write(&legacy, &c.legacy).unwrap();
        std::fs::write(&nft, &c.nft).unwrap();
        let lock = self.lock();
        let (pre, ct_family) = match c.flow.family {
            Family::Ipv4 => ("iptables", "ipv4"),
            Family::Ipv6 => ("ip6tables", "ipv6"),
        };
        let restore = |backend: &str, path: &std::path::Path| {
            let cmd = format!("{pre}-{backend}-restore");
            run(
                &self.router,
                &lock,
                &[&cmd, "-w", "5", path.to_str().unwrap()],
            );
        };
        restore("legacy", &legacy);
        restore("nft", &nft);
        run(&self.router, &lock, &["conntrack", "-F", "-f", ct_family]);
    }

    pub(crate) fn counts(&self) -> Counts {
        let lock = self.lock();
        parse_counts(&run(
            &self.router,
            &lock,
            &["nft", "list", "table", "inet", "ndiff_obs"],
        ))
    }

    /// The router's rules with their packet counters, after a case (for a failure report).
    pub(crate) fn saved_with_counters(&self, family: Family) -> String {
        let lock = self.lock();
        let mut s = String::new();
        for cmd in [
            save_command(family, Backend::Legacy),
            save_command(family, Backend::Nft),
        ] {
            let out = run(&self.router, &lock, &[cmd, "-c"]);
            let _ = writeln!(s, "--- {cmd} -c after the case ---");
            for l in out.lines().filter(|l| !l.starts_with('#')) {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Loads the case, sends its packet, and returns the outcome with the counter delta and the
    /// sender's error, if any.
    pub(crate) fn observe(&mut self, c: &Case) -> (Outcome, Counts, Option<String>) {
        self.load(c);
        let before = self.counts();
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let (bytes, dst) = packet(&c.flow, self.next_id);
        let sock = match (c.flow.origin, c.flow.family) {
            (Origin::LocalOutput, Family::Ipv4) => &self.router_sock,
            (Origin::LocalOutput, Family::Ipv6) => &self.router_sock6,
            (_, Family::Ipv4) => &self.client_sock,
            (_, Family::Ipv6) => &self.client_sock6,
        };
        let to = SockAddr::from(SocketAddr::new(dst, 0));
        let send_err = sock.send_to(&bytes, &to).err().map(|e| e.to_string());
        let start = Instant::now();
        let mut arrived_reads = 0;
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let d = delta(&self.counts(), &before);
            if d.get("arrive").copied().unwrap_or(0) > 0 {
                arrived_reads += 1;
            }
            // A drop is final once the packet has arrived and a later read still shows nothing.
            if let Some(o) = classify(&d, arrived_reads >= 2) {
                return (o, d, send_err);
            }
            assert!(
                start.elapsed() < ARRIVAL_TIMEOUT,
                "seed {}: the test packet never reached the router's first hook (send: {send_err:?}, \
                 counters {d:?}); the lab is broken, not the evaluator",
                c.seed
            );
        }
    }
}

/// All five tables, empty, ACCEPT policies.
pub(crate) fn empty_ruleset() -> String {
    let mut s = String::new();
    for (t, chains) in [
        ("raw", &["PREROUTING", "OUTPUT"][..]),
        (
            "mangle",
            &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"][..],
        ),
        ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"][..]),
        ("filter", &["INPUT", "FORWARD", "OUTPUT"][..]),
        ("security", &["INPUT", "FORWARD", "OUTPUT"][..]),
    ] {
        let _ = writeln!(s, "*{t}");
        for c in chains {
            let _ = writeln!(s, ":{c} ACCEPT [0:0]");
        }
        s.push_str("COMMIT\n");
    }
    s
}
