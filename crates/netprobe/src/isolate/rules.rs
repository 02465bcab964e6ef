//! The rules `isolate` installs and `release` removes, as `iptables-restore --noflush` payloads
//! (pure). One chain per filter hook, jumped to from the first position of the built-in chain:
//!
//! | chain | jumped from | content |
//! |---|---|---|
//! | `NETPROBE-ISOLATE-IN` | `INPUT` | loopback, kept flows (`RETURN`), then `DROP` |
//! | `NETPROBE-ISOLATE-OUT` | `OUTPUT` | loopback, replies of kept flows (`RETURN`), then `DROP` |
//! | `NETPROBE-ISOLATE-FWD` | `FORWARD` | `DROP` |
//!
//! Kept flows `RETURN` to the built-in chain rather than `ACCEPT`, so the namespace's own rules
//! still apply to them: isolation only ever takes access away. Every rule carries the comment
//! [`COMMENT`], which is how `diagnose` recognises netprobe's own isolation.
//!
//! When the family had no filter table before, the payload also creates the empty chain
//! [`NEW_TABLE_MARKER`]: the ruleset itself then says that isolation created the table, so
//! `release` can delete it again (nf_tables) without needing the store.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The comment on every rule netprobe's isolation installs.
pub const COMMENT: &str = "netprobe isolate";
/// Prefix of the chains' names.
pub const CHAIN_PREFIX: &str = "NETPROBE-ISOLATE";
/// The empty chain that marks a filter table created by the isolation (the family had none before).
pub const NEW_TABLE_MARKER: &str = "NETPROBE-ISOLATE-NEW-TABLE";
/// `(built-in chain, netprobe chain)` pairs.
pub const CHAINS: [(&str, &str); 3] = [
    ("INPUT", "NETPROBE-ISOLATE-IN"),
    ("OUTPUT", "NETPROBE-ISOLATE-OUT"),
    ("FORWARD", "NETPROBE-ISOLATE-FWD"),
];

/// A network: address and prefix length (the address as given; the kernel masks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length, bits.
    pub prefix: u8,
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One flow kept through the isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// The peer network.
    pub peer: Net,
    /// With a port: TCP only, to this port of the pod (inbound) or of the peer (outbound). Without:
    /// every protocol and port.
    pub port: Option<u16>,
    /// Whether outbound connections from the pod to the peer are kept too (`--allow`); probes
    /// are inbound only.
    pub outbound: bool,
    /// Why (`kubelet probe`, `--allow`): part of the rules' comment.
    pub why: String,
}

/// Parses `--allow CIDR[:PORT]`: `192.0.2.0/24`, `192.0.2.7:443`, `192.0.2.0/24:443`,
/// `fd00::/64`, `[fd00::7]:443`, `[fd00::/64]:443`. A bare address is a /32 or /128.
pub fn parse_allow(s: &str) -> Result<Exception, String> {
    let bad =
        || format!("--allow {s:?}: expected CIDR[:PORT], e.g. 192.0.2.0/24:443 or [fd00::/64]:443");
    let (net, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (inner, port)
    } else if let Some((addr, tail)) = s.split_once('/') {
        match tail.split_once(':') {
            Some((len, p)) => (&s[..addr.len() + 1 + len.len()], Some(p)),
            None => (s, None),
        }
    } else if s.parse::<IpAddr>().is_ok() {
        (s, None)
    } else {
        let (a, p) = s.rsplit_once(':').ok_or_else(bad)?;
        (a, Some(p))
    };
    let (addr, prefix) = match net.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (net, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
    };
    Ok(Exception {
        peer: Net { addr, prefix },
        port,
        outbound: true,
        why: "--allow".to_string(),
    })
}

fn comment(why: &str) -> String {
    if why.is_empty() {
        format!("-m comment --comment \"{COMMENT}\"")
    } else {
        format!("-m comment --comment \"{COMMENT}: {why}\"")
    }
}

/// Which way a chain sees the namespace's traffic.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// INPUT: packets from the peer (`-i`, `-s`).
    In,
    /// OUTPUT: packets to the peer (`-o`, `-d`).
    Out,
}

/// Appends `chain`'s rules: loopback, IPv6 neighbour discovery (when there are exceptions), each
/// exception as seen in `dir`, then DROP. For a port exception the connection the peer opens
/// (to `--dport` on the way in) is NEW on the way in and its replies ESTABLISHED on the way out;
/// an `outbound` exception also lets the namespace open connections to the peer, mirrored.
fn exceptions_then_drop(out: &mut String, chain: &str, dir: Dir, ipv6: bool, mine: &[&Exception]) {
    let (dev, peer) = match dir {
        Dir::In => ("-i", "-s"),
        Dir::Out => ("-o", "-d"),
    };
    out.push_str(&format!(
        "-A {chain} {dev} lo {} -j RETURN\n",
        comment("loopback")
    ));
    if ipv6 && !mine.is_empty() {
        // Neighbour discovery: without it no IPv6 exception can be reached.
        for t in ["neighbour-solicitation", "neighbour-advertisement"] {
            out.push_str(&format!(
                "-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} {} -j RETURN\n",
                comment("neighbour discovery")
            ));
        }
    }
    const EST: &str = " -m conntrack --ctstate ESTABLISHED";
    for e in mine {
        let c = comment(&e.why);
        let p = e.peer;
        let mut rule =
            |what: String| out.push_str(&format!("-A {chain} {peer} {p}{what} {c} -j RETURN\n"));
        match (e.port, dir) {
            // The peer's connection to the port: its packets in, the replies out.
            (Some(port), Dir::In) => {
                rule(format!(" -p tcp -m tcp --dport {port}"));
                if e.outbound {
                    rule(format!(" -p tcp -m tcp --sport {port}{EST}"));
                }
            }
            (Some(port), Dir::Out) => {
                rule(format!(" -p tcp -m tcp --sport {port}{EST}"));
                if e.outbound {
                    rule(format!(" -p tcp -m tcp --dport {port}"));
                }
            }
            (None, _) if e.outbound => rule(String::new()),
            (None, Dir::In) => rule(" -m conntrack --ctstate NEW,ESTABLISHED".to_string()),
            (None, Dir::Out) => rule(EST.to_string()),
        }
    }
    out.push_str(&format!("-A {chain} {} -j DROP\n", comment("")));
}

/// The `iptables-restore --noflush` payload that isolates, for one family (`ipv6`: the
/// `ip6tables` one): the three chains created, filled and jumped to first, plus the empty
/// [`NEW_TABLE_MARKER`] chain when `new_table` (the family has no filter table yet). Only
/// exceptions of that family are used.
pub fn isolate_payload(ipv6: bool, exceptions: &[Exception], new_table: bool) -> String {
    let mine: Vec<&Exception> = exceptions
        .iter()
        .filter(|e| e.peer.addr.is_ipv6() == ipv6)
        .collect();
    let mut out = String::from("*filter\n");
    for (_, chain) in CHAINS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    if new_table {
        out.push_str(&format!(":{NEW_TABLE_MARKER} - [0:0]\n"));
    }
    let (cin, cout, cfwd) = (CHAINS[0].1, CHAINS[1].1, CHAINS[2].1);
    exceptions_then_drop(&mut out, cin, Dir::In, ipv6, &mine);
    exceptions_then_drop(&mut out, cout, Dir::Out, ipv6, &mine);
    out.push_str(&format!("-A {cfwd} {} -j DROP\n", comment("")));
    for (builtin, chain) in CHAINS {
        out.push_str(&format!("-I {builtin} 1 {} -j {chain}\n", comment("")));
    }
    out.push_str("COMMIT\n");
    out
}

/// The payload that removes exactly what [`isolate_payload`] added (with the same `new_table`):
/// the three jumps, then the chains (flushed and deleted). The table itself, when the isolation
/// created it, is left to [`super::apply`]: `iptables-restore` cannot delete a table.
pub fn release_payload(new_table: bool) -> String {
    let mut out = String::from("*filter\n");
    for (builtin, chain) in CHAINS {
        out.push_str(&format!("-D {builtin} {} -j {chain}\n", comment("")));
    }
    let marker = new_table.then_some(NEW_TABLE_MARKER);
    let chains = || CHAINS.iter().map(|(_, c)| *c).chain(marker);
    for chain in chains() {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in chains() {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Whether an `iptables-save` text holds netprobe's isolation chains.
pub fn is_isolated(save_text: &str) -> bool {
    save_text
        .lines()
        .any(|l| l.starts_with(':') && l[1..].starts_with(CHAIN_PREFIX))
}

/// Whether an `iptables-save` text has a filter table (`*filter`).
pub fn has_filter_table(save_text: &str) -> bool {
    save_text.lines().any(|l| l.trim_end() == "*filter")
}

/// Whether an `iptables-save` text holds the [`NEW_TABLE_MARKER`] chain: the isolation created
/// the filter table.
pub fn created_table(save_text: &str) -> bool {
    save_text.lines().any(|l| {
        l.strip_prefix(':')
            .and_then(|c| c.strip_prefix(NEW_TABLE_MARKER))
            .is_some_and(|rest| rest.starts_with(' ') || rest.is_empty())
    })
}

/// What a filter table holds besides its built-in chains `INPUT`, `FORWARD` and `OUTPUT` with
/// policy accept, read from `nft -j list table FAMILY filter` (schema: libnftables-json(5)): one
/// line per other object (rule, chain, a built-in chain's drop policy, set, map, …). Empty when the
/// table can be deleted without losing anything; an error when the text is not that JSON.
pub fn table_leftovers(nft_json: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(nft_json).map_err(|e| format!("nft -j output is not JSON: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .ok_or("nft -j output has no \"nftables\" array")?;
    let mut out = Vec::new();
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let name = body.get("name").and_then(serde_json::Value::as_str);
        match (kind.as_str(), name) {
            ("metainfo" | "table", _) => {}
            ("chain", Some(n @ ("INPUT" | "FORWARD" | "OUTPUT"))) => {
                let policy = body.get("policy").and_then(serde_json::Value::as_str);
                if policy != Some("accept") {
                    out.push(format!("chain {n} policy {}", policy.unwrap_or("?")));
                }
            }
            ("rule", _) => {
                let chain = body.get("chain").and_then(serde_json::Value::as_str);
                out.push(format!("a rule in {}", chain.unwrap_or("?")));
            }
            (k, n) => out.push(format!("{k} {}", n.unwrap_or("?"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn allow_forms() {
        let cases = [
            ("192.0.2.0/24", "192.0.2.0/24", None),
            ("192.0.2.7:443", "192.0.2.7/32", Some(443)),
            ("192.0.2.0/24:443", "192.0.2.0/24", Some(443)),
            ("fd00::/64", "fd00::/64", None),
            ("fd00::7", "fd00::7/128", None),
            ("[fd00::7]:443", "fd00::7/128", Some(443)),
            ("[fd00::/64]:8443", "fd00::/64", Some(8443)),
        ];
        for (input, net, port) in cases {
            let e = parse_allow(input).unwrap();
            assert_eq!(
                (e.peer.to_string().as_str(), e.port),
                (net, port),
                "{input}"
            );
        }
        for bad in [
            "",
            "x",
            "192.0.2.0/33",
            "192.0.2.1:0",
            "192.0.2.1:99999",
            "[fd00::1",
            "[fd00::1]x",
        ] {
            assert!(parse_allow(bad).is_err(), "{bad}");
        }
    }

    /// The payload as the `iptables-save` text it leaves behind in an empty filter table
    /// (`-I CHAIN 1` becomes `-A CHAIN`), for the evaluator.
    fn as_save(payload: &str) -> String {
        let mut s = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for l in payload.lines().skip(1).filter(|l| *l != "COMMIT") {
            match l.strip_prefix("-I ") {
                Some(rest) => {
                    let (chain, tail) = rest.split_once(" 1 ").unwrap();
                    s.push_str(&format!("-A {chain} {tail}\n"));
                }
                None => {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s.push_str("COMMIT\n");
        s
    }

    /// The evaluator agrees with the claims: the probe flow and its reply pass, the same source
    /// on another port, another client, egress and forwarding do not; loopback passes.
    #[test]
    fn the_evaluator_confirms_what_is_kept() {
        use netfilter::eval::{ConnState, Flow, HostModel, Origin, Verdict, trace};
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (node, pod, other) = (ip("198.51.100.1"), ip("198.51.100.2"), ip("203.0.113.1"));
        let probe = Exception {
            peer: Net {
                addr: node,
                prefix: 32,
            },
            port: Some(8080),
            outbound: false,
            why: "kubelet probe".into(),
        };
        let text = as_save(&isolate_payload(false, &[probe], false));
        let rs = netfilter::parse_save(&text, &netfilter::ParseOptions::default()).unwrap();
        let rs = std::slice::from_ref(&rs);
        let host = HostModel::default()
            .with_addr("eth0", pod, 24)
            .with_addr("lo", ip("127.0.0.1"), 8)
            .with_route(netfilter::Cidr::parse("0.0.0.0/0").unwrap(), "eth0");
        let verdict = |f: Flow| trace(rs, &host, &f).verdict();
        let inbound = |src, port| Flow {
            in_iface: Some("eth0".into()),
            ..Flow::tcp(Origin::Input, src, pod, port)
        };
        assert_eq!(verdict(inbound(node, 8080)), Verdict::Accept);
        assert_eq!(verdict(inbound(node, 8081)), Verdict::Drop);
        assert_eq!(verdict(inbound(other, 8080)), Verdict::Drop);
        let reply = Flow {
            sport: Some(8080),
            dport: Some(40000),
            ..Flow::tcp(Origin::LocalOutput, pod, node, 40000).with_state(ConnState::Established)
        };
        assert_eq!(verdict(reply.clone()), Verdict::Accept);
        // The pod cannot open a connection to the node, even from the probe port.
        let out = Flow {
            ct_state: ConnState::New,
            ..reply
        };
        assert_eq!(verdict(out), Verdict::Drop);
        assert_eq!(
            verdict(Flow::tcp(Origin::LocalOutput, pod, ip("192.0.2.1"), 80)),
            Verdict::Drop
        );
        assert_eq!(
            verdict(Flow::tcp(
                Origin::LocalOutput,
                ip("127.0.0.1"),
                ip("127.0.0.1"),
                8080
            )),
            Verdict::Accept
        );
        let fwd = Flow {
            in_iface: Some("eth0".into()),
            out_iface: Some("eth1".into()),
            ..Flow::tcp(Origin::Forward, other, ip("192.0.2.1"), 80)
        };
        assert_eq!(verdict(fwd), Verdict::Drop);
    }

    #[test]
    fn payloads_parse_and_drop_all_but_the_exceptions() {
        let probe = Exception {
            peer: Net {
                addr: "198.51.100.1".parse().unwrap(),
                prefix: 32,
            },
            port: Some(8080),
            outbound: false,
            why: "kubelet probe".into(),
        };
        let p4 = isolate_payload(false, std::slice::from_ref(&probe), false);
        assert!(
            p4.contains("-A NETPROBE-ISOLATE-IN -s 198.51.100.1/32 -p tcp -m tcp --dport 8080"),
            "{p4}"
        );
        assert!(p4.contains(
            "-I INPUT 1 -m comment --comment \"netprobe isolate\" -j NETPROBE-ISOLATE-IN"
        ));
        // The v6 payload has no v4 exception and no neighbour discovery.
        let p6 = isolate_payload(true, &[probe], false);
        assert!(
            !p6.contains("198.51.100.1") && !p6.contains("neighbour"),
            "{p6}"
        );
        let r = release_payload(false);
        assert!(!r.contains(NEW_TABLE_MARKER), "{r}");
        assert!(
            r.contains(
                "-D OUTPUT -m comment --comment \"netprobe isolate\" -j NETPROBE-ISOLATE-OUT"
            ),
            "{r}"
        );
        assert!(r.contains("-X NETPROBE-ISOLATE-FWD"), "{r}");
        assert!(is_isolated(":NETPROBE-ISOLATE-IN - [0:0]\n"));
        assert!(!is_isolated(
            ":INPUT ACCEPT [0:0]\n-A INPUT -j NETPROBE-ISOLATE-IN\n"
        ));
    }

    /// The marker chain comes and goes with `new_table`, and is recognised (as a whole name only).
    #[test]
    fn the_new_table_marker() {
        let p = isolate_payload(false, &[], true);
        assert!(p.contains(":NETPROBE-ISOLATE-NEW-TABLE - [0:0]\n"), "{p}");
        assert!(!isolate_payload(false, &[], false).contains(NEW_TABLE_MARKER));
        let r = release_payload(true);
        assert!(
            r.contains("-F NETPROBE-ISOLATE-NEW-TABLE\n")
                && r.contains("-X NETPROBE-ISOLATE-NEW-TABLE\n"),
            "{r}"
        );
        // Deleted after the jumps and the other chains.
        assert!(r.find("-X NETPROBE-ISOLATE-FWD") < r.find("-X NETPROBE-ISOLATE-NEW-TABLE"));
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:NETPROBE-ISOLATE-NEW-TABLE - [0:0]\nCOMMIT\n";
        assert!(created_table(save) && has_filter_table(save) && is_isolated(save));
        assert!(!created_table(":NETPROBE-ISOLATE-NEW-TABLEX - [0:0]\n"));
        assert!(!created_table("*filter\n:INPUT ACCEPT [0:0]\n"));
        assert!(!has_filter_table(
            "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
        ));
        assert!(!has_filter_table(""));
    }

    /// `nft -j list table ip filter` as nftables 1.0.6 prints it: a table with only the three
    /// built-in chains at policy accept has no leftovers; a rule, a drop policy, another chain or
    /// a set each count.
    #[test]
    fn table_leftovers_from_nft_json() {
        let head = r#"{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "filter", "handle": 1}}"#;
        let chain = |name: &str, hook: &str, policy: &str| {
            format!(
                r#"{{"chain": {{"family": "ip", "table": "filter", "name": "{name}", "handle": 1, "type": "filter", "hook": "{hook}", "prio": 0, "policy": "{policy}"}}}}"#
            )
        };
        let doc = |items: &[String]| format!(r#"{{"nftables": [{head}, {}]}}"#, items.join(", "));
        let base = vec![
            chain("INPUT", "input", "accept"),
            chain("FORWARD", "forward", "accept"),
            chain("OUTPUT", "output", "accept"),
        ];
        assert_eq!(table_leftovers(&doc(&base)).unwrap(), Vec::<String>::new());
        let mut more = base.clone();
        more[1] = chain("FORWARD", "forward", "drop");
        more.push(r#"{"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 2, "expr": [{"accept": null}]}}"#.to_string());
        more.push(
            r#"{"chain": {"family": "ip", "table": "filter", "name": "foo", "handle": 3}}"#
                .to_string(),
        );
        more.push(r#"{"set": {"family": "ip", "name": "blocked", "table": "filter", "type": "ipv4_addr", "handle": 4}}"#.to_string());
        assert_eq!(
            table_leftovers(&doc(&more)).unwrap(),
            [
                "chain FORWARD policy drop",
                "a rule in INPUT",
                "chain foo",
                "set blocked"
            ]
        );
        assert!(table_leftovers("not json").is_err());
        assert!(table_leftovers("{}").is_err());
    }
}
