//! Writing the model back as `iptables-save` text, in the canonical form iptables 1.8 prints:
//! core options first (`-s -d -i -o -p -f`, xshared.c `save_rule_details`), then the modules in
//! their written order with each module's options in its save order, then the target. Implicit
//! protocol modules are explicit (`-p tcp -m tcp --dport 80`). Parsing the output gives back an
//! equal model (the round-trip property tests check this); option spellings are those of
//! iptables-save (checked against iptables v1.8.9, legacy and nf_tables).

use std::fmt::Write;

use crate::addr::PortRange;
use crate::lex::{quote, quote_min};
use crate::matches::{Match, Neg, StatisticMode, TcpFlags, tcp_flags};
use crate::model::{Rule, Ruleset, Table};
use crate::target::{ConnmarkAction, NatFlags, NatRange, Target};

/// Renders a whole ruleset: per table `*table`, the chain lines, the rules chain by chain, `COMMIT`.
/// Rule counters are printed as a `[p:b] ` prefix when the rule has them.
pub fn render_ruleset(rs: &Ruleset) -> String {
    let mut out = String::new();
    for t in &rs.tables {
        render_table(&mut out, t);
    }
    out
}

fn render_table(out: &mut String, t: &Table) {
    let _ = writeln!(out, "*{}", t.name);
    for c in &t.chains {
        let policy = c.policy.map_or("-", |p| p.as_str());
        let _ = writeln!(
            out,
            ":{} {policy} [{}:{}]",
            c.name, c.counters.packets, c.counters.bytes
        );
    }
    for c in &t.chains {
        for r in &c.rules {
            out.push_str(&render_rule(&c.name, r));
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
}

/// Renders one rule line: `[p:b] -A CHAIN args…`.
pub fn render_rule(chain: &str, rule: &Rule) -> String {
    let mut s = String::new();
    if let Some(c) = rule.counters {
        let _ = write!(s, "[{}:{}] ", c.packets, c.bytes);
    }
    let _ = write!(s, "-A {chain}");
    let args = render_rule_args(rule);
    if !args.is_empty() {
        s.push(' ');
        s.push_str(&args);
    }
    s
}

fn core_rank(m: &Match) -> u8 {
    match m {
        Match::Source(_) => 0,
        Match::Destination(_) => 1,
        Match::InInterface(_) => 2,
        Match::OutInterface(_) => 3,
        Match::Protocol(_) => 4,
        Match::Fragment { .. } => 5,
        _ => 6,
    }
}

/// Renders a rule's matches and target (without `-A CHAIN`).
pub fn render_rule_args(rule: &Rule) -> String {
    let mut ms: Vec<&Match> = rule.matches.iter().collect();
    ms.sort_by_key(|m| core_rank(m));
    let mut parts: Vec<String> = ms.iter().map(|m| render_match(m)).collect();
    if let Some(t) = &rule.target {
        parts.push(render_target(t));
    }
    parts.join(" ")
}

fn bang(negated: bool) -> &'static str {
    if negated { "! " } else { "" }
}

/// ` [! ]--opt value` for an optional option.
fn opt<T>(s: &mut String, name: &str, v: &Option<Neg<T>>, show: impl Fn(&T) -> String) {
    if let Some(v) = v {
        let _ = write!(s, " {}{name} {}", bang(v.negated), show(&v.value));
    }
}

fn flag(s: &mut String, name: &str, v: &Option<Neg<()>>) {
    if let Some(v) = v {
        let _ = write!(s, " {}{name}", bang(v.negated));
    }
}

fn flags(bits: u8) -> String {
    if bits == 0 {
        return "NONE".to_string();
    }
    let names: Vec<&str> = tcp_flags::NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect();
    names.join(",")
}

fn list<T: Copy>(v: &[T], name: impl Fn(T) -> &'static str) -> String {
    v.iter().map(|&x| name(x)).collect::<Vec<_>>().join(",")
}

/// Renders one match in save form.
pub fn render_match(m: &Match) -> String {
    let mut s = String::new();
    match m {
        Match::Source(v) => return format!("{}-s {}", bang(v.negated), v.value),
        Match::Destination(v) => return format!("{}-d {}", bang(v.negated), v.value),
        Match::InInterface(v) => return format!("{}-i {}", bang(v.negated), v.value),
        Match::OutInterface(v) => return format!("{}-o {}", bang(v.negated), v.value),
        Match::Protocol(v) => return format!("{}-p {}", bang(v.negated), v.value),
        Match::Fragment { negated } => return format!("{}-f", bang(*negated)),
        Match::Tcp(t) => {
            s.push_str("-m tcp");
            opt(&mut s, "--sport", &t.sport, PortRange::to_string);
            opt(&mut s, "--dport", &t.dport, PortRange::to_string);
            opt(&mut s, "--tcp-option", &t.option, u8::to_string);
            opt(&mut s, "--tcp-flags", &t.flags, |f: &TcpFlags| {
                format!("{} {}", flags(f.mask), flags(f.comp))
            });
        }
        Match::Udp(u) => {
            s.push_str("-m udp");
            opt(&mut s, "--sport", &u.sport, PortRange::to_string);
            opt(&mut s, "--dport", &u.dport, PortRange::to_string);
        }
        Match::Icmp(v) => return format!("-m icmp {}--icmp-type {}", bang(v.negated), v.value),
        Match::Icmp6(v) => return format!("-m icmp6 {}--icmpv6-type {}", bang(v.negated), v.value),
        Match::Multiport(mp) => {
            let o = match mp.dir {
                crate::matches::MultiportDir::Source => "--sports",
                crate::matches::MultiportDir::Destination => "--dports",
                crate::matches::MultiportDir::Either => "--ports",
            };
            let ports: Vec<String> = mp.ports.iter().map(PortRange::to_string).collect();
            return format!("-m multiport {}{o} {}", bang(mp.negated), ports.join(","));
        }
        Match::Conntrack(c) => {
            s.push_str("-m conntrack");
            opt(&mut s, "--ctstate", &c.state, |v| list(v, |x| x.as_str()));
            opt(&mut s, "--ctproto", &c.proto, |p| {
                p.number().map_or_else(|| p.to_string(), |n| n.to_string())
            });
            let a = |c: &crate::addr::Cidr| c.display_bare_host();
            opt(&mut s, "--ctorigsrc", &c.orig_src, a);
            opt(&mut s, "--ctorigdst", &c.orig_dst, a);
            opt(&mut s, "--ctreplsrc", &c.repl_src, a);
            opt(&mut s, "--ctrepldst", &c.repl_dst, a);
            opt(
                &mut s,
                "--ctorigsrcport",
                &c.orig_src_port,
                PortRange::to_string,
            );
            opt(
                &mut s,
                "--ctorigdstport",
                &c.orig_dst_port,
                PortRange::to_string,
            );
            opt(
                &mut s,
                "--ctreplsrcport",
                &c.repl_src_port,
                PortRange::to_string,
            );
            opt(
                &mut s,
                "--ctrepldstport",
                &c.repl_dst_port,
                PortRange::to_string,
            );
            opt(&mut s, "--ctstatus", &c.status, |v| list(v, |x| x.as_str()));
            opt(&mut s, "--ctexpire", &c.expire, |r| {
                if r.start == r.end {
                    r.start.to_string()
                } else {
                    format!("{}:{}", r.start, r.end)
                }
            });
            if let Some(d) = c.dir {
                let d = match d {
                    crate::matches::CtDir::Original => "ORIGINAL",
                    crate::matches::CtDir::Reply => "REPLY",
                };
                let _ = write!(s, " --ctdir {d}");
            }
        }
        Match::State(v) => {
            return format!(
                "-m state {}--state {}",
                bang(v.negated),
                list(&v.value, |x| x.as_str())
            );
        }
        Match::Comment(c) => return format!("-m comment --comment {}", quote(c)),
        Match::AddrType(a) => {
            s.push_str("-m addrtype");
            opt(&mut s, "--src-type", &a.src, |v| list(v, |x| x.as_str()));
            opt(&mut s, "--dst-type", &a.dst, |v| list(v, |x| x.as_str()));
            match a.limit_iface {
                Some(crate::matches::LimitIface::In) => s.push_str(" --limit-iface-in"),
                Some(crate::matches::LimitIface::Out) => s.push_str(" --limit-iface-out"),
                None => {}
            }
        }
        Match::Mark(v) => return format!("-m mark {}--mark {}", bang(v.negated), v.value),
        Match::Connmark(v) => return format!("-m connmark {}--mark {}", bang(v.negated), v.value),
        Match::Set(st) => {
            let dirs: Vec<&str> = st
                .dst
                .iter()
                .map(|&d| if d { "dst" } else { "src" })
                .collect();
            let _ = write!(
                s,
                "-m set {}--match-set {} {}",
                bang(st.negated),
                st.set,
                dirs.join(",")
            );
            if st.return_nomatch {
                s.push_str(" --return-nomatch");
            }
        }
        Match::Statistic(st) => match &st.mode {
            StatisticMode::Random { probability } => {
                let _ = write!(
                    s,
                    "-m statistic --mode random {}--probability {probability:.11}",
                    bang(st.negated)
                );
            }
            StatisticMode::Nth { every, packet } => {
                let _ = write!(
                    s,
                    "-m statistic --mode nth {}--every {every} --packet {packet}",
                    bang(st.negated)
                );
            }
        },
        Match::IpRange(r) => {
            s.push_str("-m iprange");
            opt(&mut s, "--src-range", &r.src, ToString::to_string);
            opt(&mut s, "--dst-range", &r.dst, ToString::to_string);
        }
        Match::Owner(o) => {
            s.push_str("-m owner");
            flag(&mut s, "--socket-exists", &o.socket_exists);
            opt(&mut s, "--uid-owner", &o.uid, ToString::to_string);
            opt(&mut s, "--gid-owner", &o.gid, ToString::to_string);
            if o.suppl_groups {
                s.push_str(" --suppl-groups");
            }
        }
        Match::Physdev(p) => {
            s.push_str("-m physdev");
            opt(&mut s, "--physdev-in", &p.physdev_in, ToString::to_string);
            opt(&mut s, "--physdev-out", &p.physdev_out, ToString::to_string);
            flag(&mut s, "--physdev-is-in", &p.is_in);
            flag(&mut s, "--physdev-is-out", &p.is_out);
            flag(&mut s, "--physdev-is-bridged", &p.is_bridged);
        }
        Match::Limit(l) => {
            s.push_str("-m limit");
            if let Some((n, unit)) = &l.rate {
                let _ = write!(s, " --limit {n}/{unit}");
            }
            if let Some(b) = l.burst {
                let _ = write!(s, " --limit-burst {b}");
            }
        }
        Match::Length(v) => return format!("-m length {}--length {}", bang(v.negated), v.value),
        Match::Mac(v) => return format!("-m mac {}--mac-source {}", bang(v.negated), v.value),
        Match::Unknown { name, args } => {
            let _ = write!(s, "-m {name}");
            push_args(&mut s, args);
        }
    }
    s
}

fn push_args(s: &mut String, args: &[String]) {
    for a in args {
        s.push(' ');
        s.push_str(&quote_min(a));
    }
}

/// Arguments of LOG/NFLOG: prefixes quoted as iptables-save quotes them, the rest as kept.
fn push_log_args(s: &mut String, args: &[String]) {
    let mut prev_prefix = false;
    for a in args {
        s.push(' ');
        if prev_prefix {
            s.push_str(&quote(a));
        } else {
            s.push_str(&quote_min(a));
        }
        prev_prefix = matches!(a.as_str(), "--log-prefix" | "--nflog-prefix");
    }
}

fn nat_range(r: &NatRange) -> String {
    let addrs = r.addrs.map(|(a, b)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    });
    let v6 = r.addrs.is_some_and(|(a, _)| a.is_ipv6());
    match (addrs, r.ports) {
        (Some(a), None) => a,
        (Some(a), Some(p)) if v6 => format!("[{a}]:{}", p.render('-')),
        (Some(a), Some(p)) => format!("{a}:{}", p.render('-')),
        (None, Some(p)) => format!(":{}", p.render('-')),
        (None, None) => String::new(),
    }
}

fn nat_flags(s: &mut String, f: &NatFlags) {
    if f.random {
        s.push_str(" --random");
    }
    if f.random_fully {
        s.push_str(" --random-fully");
    }
    if f.persistent {
        s.push_str(" --persistent");
    }
}

/// Renders a target in save form (`-j …` or `-g CHAIN`).
pub fn render_target(t: &Target) -> String {
    let mut s = String::new();
    match t {
        Target::Accept => s.push_str("-j ACCEPT"),
        Target::Drop => s.push_str("-j DROP"),
        Target::Return => s.push_str("-j RETURN"),
        Target::Trace => s.push_str("-j TRACE"),
        Target::Notrack => s.push_str("-j NOTRACK"),
        Target::Reject(w) => {
            let _ = write!(s, "-j REJECT --reject-with {}", w.as_str());
        }
        Target::Jump(c) => {
            let _ = write!(s, "-j {c}");
        }
        Target::Goto(c) => {
            let _ = write!(s, "-g {c}");
        }
        Target::Log(args) => {
            s.push_str("-j LOG");
            push_log_args(&mut s, args);
        }
        Target::Nflog(args) => {
            s.push_str("-j NFLOG");
            push_log_args(&mut s, args);
        }
        Target::Ct(args) => {
            s.push_str("-j CT");
            push_args(&mut s, args);
        }
        Target::Mark { value, mask } => {
            let _ = write!(s, "-j MARK --set-xmark {value:#x}/{mask:#x}");
        }
        Target::Connmark(a) => match a {
            ConnmarkAction::SetXmark { value, mask } => {
                let _ = write!(s, "-j CONNMARK --set-xmark {value:#x}/{mask:#x}");
            }
            ConnmarkAction::Save { nfmask, ctmask } => {
                let _ = write!(
                    s,
                    "-j CONNMARK --save-mark --nfmask {nfmask:#x} --ctmask {ctmask:#x}"
                );
            }
            ConnmarkAction::Restore { nfmask, ctmask } => {
                let _ = write!(
                    s,
                    "-j CONNMARK --restore-mark --nfmask {nfmask:#x} --ctmask {ctmask:#x}"
                );
            }
        },
        Target::Dnat { to, flags } => {
            let _ = write!(s, "-j DNAT --to-destination {}", nat_range(to));
            nat_flags(&mut s, flags);
        }
        Target::Snat { to, flags } => {
            let _ = write!(s, "-j SNAT --to-source {}", nat_range(to));
            nat_flags(&mut s, flags);
        }
        Target::Masquerade { ports, flags } | Target::Redirect { ports, flags } => {
            s.push_str(if matches!(t, Target::Masquerade { .. }) {
                "-j MASQUERADE"
            } else {
                "-j REDIRECT"
            });
            if let Some(p) = ports {
                let _ = write!(s, " --to-ports {}", p.render('-'));
            }
            nat_flags(&mut s, flags);
        }
        Target::Unknown { name, args } => {
            let _ = write!(s, "-j {name}");
            push_args(&mut s, args);
        }
    }
    s
}

impl std::fmt::Display for Ruleset {
    /// The canonical save text ([`render_ruleset`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&render_ruleset(self))
    }
}
