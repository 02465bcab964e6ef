//! Unit tests: one per match parser and target, negation forms, and bad input.
#![allow(clippy::unwrap_used, reason = "tests")]

use crate::addr::{Cidr, Interface, MarkMask, PortRange};
use crate::icmp::IcmpType;
use crate::matches::*;
use crate::model::{Family, TableName};
use crate::proto::Protocol;
use crate::render::render_rule;
use crate::target::{ConnmarkAction, NatRange, RejectWith, Target};
use crate::{ParseOptions, parse_restore_payload, parse_save};

fn rule6(args: &str, family: Family) -> crate::model::Rule {
    let table = if args.contains("NAT") {
        "nat"
    } else {
        "filter"
    };
    let chain = if table == "nat" {
        "PREROUTING"
    } else {
        "INPUT"
    };
    let text = format!("*{table}\n:{chain} ACCEPT [0:0]\n-A {chain} {args}\nCOMMIT\n");
    let rs = parse_save(
        &text,
        &ParseOptions {
            family: Some(family),
            backend: None,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rs.tables[0].chains[0].rules[0].clone()
}

fn rule(args: &str) -> crate::model::Rule {
    rule6(args, Family::Ipv4)
}

fn one(args: &str) -> Match {
    let r = rule(args);
    assert_eq!(r.matches.len(), 1, "{:?}", r.matches);
    r.matches[0].clone()
}

fn err(text: &str) -> crate::ParseError {
    parse_save(text, &ParseOptions::default()).unwrap_err()
}

#[test]
fn addresses_interfaces_protocols() {
    let r = rule("! -s 198.51.100.0/24 -d 203.0.113.9 -i eth+ -p 47 -f");
    assert_eq!(
        r.matches[0],
        Match::Source(Neg {
            negated: true,
            value: Cidr::parse("198.51.100.0/24").unwrap()
        })
    );
    assert_eq!(
        r.matches[1],
        Match::Destination(Neg::plain(Cidr::parse("203.0.113.9/32").unwrap()))
    );
    assert_eq!(
        r.matches[2],
        Match::InInterface(Neg::plain(Interface {
            name: "eth".into(),
            wildcard: true
        }))
    );
    assert_eq!(
        r.matches[3],
        Match::Protocol(Neg::plain(Protocol::Number(47)))
    );
    assert_eq!(r.matches[4], Match::Fragment { negated: false });
    assert_eq!(
        render_rule("INPUT", &r),
        "-A INPUT ! -s 198.51.100.0/24 -d 203.0.113.9/32 -i eth+ -p gre -f"
    );
    // The old intrapositioned negation.
    assert_eq!(
        one("-s ! 192.0.2.1"),
        Match::Source(Neg {
            negated: true,
            value: Cidr::parse("192.0.2.1").unwrap()
        })
    );
    assert!(matches!(
        one("-p frobnicate"),
        Match::Protocol(Neg {
            value: Protocol::Unresolved(_),
            ..
        })
    ));
    assert!(
        parse_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s fd00::1\nCOMMIT\n",
            &ParseOptions::default()
        )
        .is_err()
    );
}

#[test]
fn tcp_udp_implicit_and_explicit() {
    let r = rule("-p tcp --syn ! --dport 1000:2000");
    let Match::Tcp(t) = &r.matches[1] else {
        panic!()
    };
    assert_eq!(t.flags, Some(Neg::plain(TcpFlags::SYN)));
    assert_eq!(
        t.dport,
        Some(Neg {
            negated: true,
            value: PortRange {
                start: 1000,
                end: 2000
            }
        })
    );
    assert_eq!(
        render_rule("INPUT", &r),
        "-A INPUT -p tcp -m tcp ! --dport 1000:2000 --tcp-flags FIN,SYN,RST,ACK SYN"
    );
    let r = rule("-p tcp -m tcp --tcp-flags ALL NONE");
    assert!(matches!(
        &r.matches[1],
        Match::Tcp(TcpMatch {
            flags: Some(Neg {
                value: TcpFlags {
                    mask: 0x3f,
                    comp: 0
                },
                ..
            }),
            ..
        })
    ));
    let r = rule("-p udp --dport ! 53");
    assert!(matches!(
        &r.matches[1],
        Match::Udp(UdpMatch {
            dport: Some(Neg { negated: true, .. }),
            ..
        })
    ));
    assert!(
        parse_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT --dport 53\nCOMMIT\n",
            &ParseOptions::default()
        )
        .is_err()
    );
    assert!(
        parse_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport http\nCOMMIT\n",
            &ParseOptions::default()
        )
        .is_err()
    );
}

#[test]
fn icmp_names_numbers_codes() {
    let icmp = |s: &str| match &rule(&format!("-p icmp -m icmp --icmp-type {s}")).matches[1] {
        Match::Icmp(n) => n.value,
        m => panic!("{m:?}"),
    };
    assert_eq!(
        icmp("echo-request"),
        IcmpType {
            icmp_type: 8,
            code_min: 0,
            code_max: 255
        }
    );
    assert_eq!(
        icmp("port-unreachable"),
        IcmpType {
            icmp_type: 3,
            code_min: 3,
            code_max: 3
        }
    );
    assert_eq!(icmp("3/4").to_string(), "3/4");
    assert_eq!(icmp("any"), IcmpType::ANY);
    assert!(icmp("any").matches(42, 7) && !icmp("8").matches(0, 0));
    let r = rule6(
        "-p ipv6-icmp -m icmp6 ! --icmpv6-type neighbour-solicitation",
        Family::Ipv6,
    );
    assert_eq!(
        r.matches[1],
        Match::Icmp6(Neg {
            negated: true,
            value: IcmpType {
                icmp_type: 135,
                code_min: 0,
                code_max: 255
            }
        })
    );
    assert!(
        parse_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p icmp -m icmp --icmp-type bogus\nCOMMIT\n",
            &ParseOptions::default()
        )
        .is_err()
    );
}

#[test]
fn multiport_conntrack_state() {
    let m = one("-m multiport ! --dports 80,443,8000:8080");
    assert_eq!(
        m,
        Match::Multiport(MultiportMatch {
            negated: true,
            dir: MultiportDir::Destination,
            ports: vec![
                PortRange::single(80),
                PortRange::single(443),
                PortRange {
                    start: 8000,
                    end: 8080
                }
            ],
        })
    );
    let Match::Conntrack(c) = one(
        "-m conntrack --ctstate DNAT,NEW --ctorigdst 192.0.2.1 ! --ctorigdstport 80 --ctdir REPLY",
    ) else {
        panic!()
    };
    assert_eq!(c.state.unwrap().value, [CtState::New, CtState::Dnat]);
    assert!(c.orig_dst.unwrap().value.is_host());
    assert!(c.orig_dst_port.unwrap().negated);
    assert_eq!(c.dir, Some(CtDir::Reply));
    assert_eq!(
        one("-m state --state ESTABLISHED,RELATED"),
        Match::State(Neg::plain(vec![CtState::Related, CtState::Established]))
    );
    // state has no virtual NAT states.
    assert!(
        parse_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m state --state DNAT\nCOMMIT\n",
            &ParseOptions::default()
        )
        .is_err()
    );
}

#[test]
fn comment_addrtype_marks_set() {
    assert_eq!(
        one(r#"-m comment --comment "a \"b\" c""#),
        Match::Comment(r#"a "b" c"#.into())
    );
    let Match::AddrType(a) = one("-m addrtype ! --dst-type LOCAL,BROADCAST --limit-iface-in")
    else {
        panic!()
    };
    assert_eq!(
        a.dst,
        Some(Neg {
            negated: true,
            value: vec![AddrType::Local, AddrType::Broadcast]
        })
    );
    assert_eq!(a.limit_iface, Some(LimitIface::In));
    assert_eq!(
        one("-m mark ! --mark 0x4000/0x4000"),
        Match::Mark(Neg {
            negated: true,
            value: MarkMask {
                value: 0x4000,
                mask: 0x4000
            }
        })
    );
    assert_eq!(
        one("-m connmark --mark 1"),
        Match::Connmark(Neg::plain(MarkMask {
            value: 1,
            mask: u32::MAX
        }))
    );
    assert_eq!(
        one("-m set ! --match-set kube src,dst --return-nomatch"),
        Match::Set(Box::new(SetMatch {
            negated: true,
            set: "kube".into(),
            dst: vec![false, true],
            return_nomatch: true
        }))
    );
}

#[test]
fn statistic_iprange_owner_physdev_limit_length_mac() {
    assert_eq!(
        one("-m statistic --mode random --probability 0.25"),
        Match::Statistic(StatisticMatch {
            negated: false,
            mode: StatisticMode::Random { probability: 0.25 }
        })
    );
    assert_eq!(
        one("-m statistic --mode nth ! --every 3 --packet 2"),
        Match::Statistic(StatisticMatch {
            negated: true,
            mode: StatisticMode::Nth {
                every: 3,
                packet: 2
            }
        })
    );
    assert!(parse_save("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m statistic --mode random --probability 2\nCOMMIT\n", &ParseOptions::default()).is_err());
    let Match::IpRange(r) = one("-m iprange ! --src-range 192.0.2.1-192.0.2.9") else {
        panic!()
    };
    assert!(
        r.src.as_ref().unwrap().negated
            && r.src.unwrap().value.contains("192.0.2.5".parse().unwrap())
    );
    let Match::Owner(o) = one("-m owner --uid-owner 0 ! --gid-owner 10-20 --suppl-groups") else {
        panic!()
    };
    assert_eq!(o.uid.unwrap().value.start, 0);
    assert!(o.gid.unwrap().negated && o.suppl_groups);
    // Names need /etc/passwd: kept, not guessed.
    // User names need /etc/passwd: an error, never a guessed uid.
    let e = parse_save(
        "*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -m owner --uid-owner root\nCOMMIT\n",
        &ParseOptions::default(),
    );
    assert!(e.unwrap_err().message.contains("--uid-owner"));
    let Match::Physdev(p) = one("-m physdev --physdev-in veth+ ! --physdev-is-bridged") else {
        panic!()
    };
    assert!(p.physdev_in.unwrap().value.wildcard && p.is_bridged.unwrap().negated);
    assert_eq!(
        one("-m limit --limit 3/minute"),
        Match::Limit(LimitMatch {
            rate: Some((3, "min".into())),
            burst: None
        })
    );
    assert_eq!(
        one("-m length ! --length 100"),
        Match::Length(Neg {
            negated: true,
            value: PortRange::single(100)
        })
    );
    assert!(matches!(
        one("-m mac --mac-source 02:00:00:00:00:01"),
        Match::Mac(_)
    ));
}

#[test]
fn unknown_modules_and_options_are_kept() {
    let m = one("-m recent --name x --rcheck --seconds 60");
    assert_eq!(
        m,
        Match::Unknown {
            name: "recent".into(),
            args: vec![
                "--name".into(),
                "x".into(),
                "--rcheck".into(),
                "--seconds".into(),
                "60".into()
            ]
        }
    );
    // A known module with an option the model lacks is kept whole.
    let r = rule("-p tcp -m tcp --dport 80 --tcp-option-frob 3 -j ACCEPT");
    assert_eq!(
        r.matches[1],
        Match::Unknown {
            name: "tcp".into(),
            args: vec![
                "--dport".into(),
                "80".into(),
                "--tcp-option-frob".into(),
                "3".into()
            ]
        }
    );
    assert_eq!(r.target, Some(Target::Accept));
    assert_eq!(
        render_rule("INPUT", &r),
        "-A INPUT -p tcp -m tcp --dport 80 --tcp-option-frob 3 -j ACCEPT"
    );
    let r = rule("-j CHECKSUM --checksum-fill");
    assert_eq!(
        r.target,
        Some(Target::Unknown {
            name: "CHECKSUM".into(),
            args: vec!["--checksum-fill".into()]
        })
    );
    let r = rule("-j MARK --set-xmark 1/1 --frob");
    assert!(matches!(r.target, Some(Target::Unknown { .. })));
}

#[test]
fn targets() {
    assert_eq!(
        rule("-j REJECT").target,
        Some(Target::Reject(RejectWith::IcmpPortUnreachable))
    );
    assert_eq!(
        rule("-j REJECT --reject-with tcp-rst").target,
        Some(Target::Reject(RejectWith::TcpReset))
    );
    assert_eq!(
        rule6("-j REJECT", Family::Ipv6).target,
        Some(Target::Reject(RejectWith::Icmp6PortUnreachable))
    );
    assert_eq!(
        rule("-j MARK --or-mark 0x4000").target,
        Some(Target::Mark {
            value: 0x4000,
            mask: 0x4000
        })
    );
    assert_eq!(
        rule("-j MARK --and-mark 0xff").target,
        Some(Target::Mark {
            value: 0,
            mask: 0xffff_ff00
        })
    );
    assert_eq!(
        rule("-j MARK --xor-mark 1").target,
        Some(Target::Mark { value: 1, mask: 0 })
    );
    assert_eq!(
        rule("-j MARK --set-mark 2").target,
        Some(Target::Mark {
            value: 2,
            mask: u32::MAX
        })
    );
    assert_eq!(
        rule("-j CONNMARK --restore-mark --mask 0xff").target,
        Some(Target::Connmark(ConnmarkAction::Restore {
            nfmask: 0xff,
            ctmask: 0xff
        }))
    );
    let r = rule("-p tcp -j DNAT --to-destination 192.0.2.5-192.0.2.6:80-90 --persistent NAT");
    assert!(
        matches!(r.target, Some(Target::Unknown { .. })),
        "trailing junk keeps the target unknown"
    );
    let dnat = |s: &str, f| match rule6(&format!("-p tcp -j DNAT --to-destination {s}"), f).target {
        Some(Target::Dnat { to, .. }) => to,
        t => panic!("{t:?}"),
    };
    let v6 = dnat("[fd00::2]:80", Family::Ipv6);
    assert_eq!(
        v6,
        NatRange {
            addrs: Some(("fd00::2".parse().unwrap(), "fd00::2".parse().unwrap())),
            ports: Some(PortRange::single(80))
        }
    );
    assert_eq!(dnat(":8080", Family::Ipv4).addrs, None);
    assert_eq!(
        rule("-j LOG --log-prefix \"x y: \"").target,
        Some(Target::Log(vec!["--log-prefix".into(), "x y: ".into()]))
    );
    assert!(rule("-j CT --notrack").target.unwrap().is_notrack());
    assert_eq!(rule("-j DROP").target.unwrap().is_terminal(), Some(true));
    assert_eq!(rule("-j LOG").target.unwrap().is_terminal(), Some(false));
}

#[test]
fn bad_input_errors_carry_line_and_text() {
    let e = err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n");
    assert_eq!((e.line, e.text.as_str()), (3, "-A INPUT -j ACCEPT"));
    assert!(e.message.contains("no COMMIT"), "{e}");
    let e = err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 999.1.1.1 -j ACCEPT\nCOMMIT\n");
    assert_eq!(e.line, 3);
    assert!(e.message.contains("-s"), "{e}");
    let e = err("*bogus\nCOMMIT\n");
    assert_eq!((e.line, e.message.as_str()), (1, "unknown table `bogus`"));
    let e = err("-A INPUT -j ACCEPT\n");
    assert_eq!(e.line, 1);
    let e = err("*filter\n:INPUT ACCEPT [0:0]\n-A NOPE -j ACCEPT\nCOMMIT\n");
    assert!(e.message.contains("not declared"), "{e}");
    let e = err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"open\nCOMMIT\n");
    assert!(e.message.contains("quote"), "{e}");
    let e = err("*filter\n:USR ACCEPT [0:0]\nCOMMIT\n");
    assert!(e.message.contains("policy"), "{e}");
    let e = err("*nat\n:PREROUTING ACCEPT [x:0]\nCOMMIT\n");
    assert!(e.message.contains("counters"), "{e}");
    let e = err("\u{0}\u{1}garbage\n");
    assert_eq!(e.line, 1);
    assert!(
        err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -g NOWHERE\nCOMMIT\n")
            .message
            .contains("undeclared")
    );
    assert!(
        parse_save("", &ParseOptions::default())
            .unwrap()
            .tables
            .is_empty()
    );
}

#[test]
fn restore_payload_mode() {
    let text = "*nat\n:KUBE-SVC-X - [0:0]\n-A KUBE-SVC-X -j KUBE-SEP-Y\n-A KUBE-SEP-Y -j QUEUE\n-I PREROUTING 1 -j KUBE-SVC-X\n-A KUBE-SVC-X -g KUBE-GONE\n-F KUBE-OLD\n-X\nCOMMIT\n";
    let p = parse_restore_payload(text, &ParseOptions::default()).unwrap();
    let u: Vec<(&str, usize)> = p
        .undeclared
        .iter()
        .map(|u| (u.chain.as_str(), u.line))
        .collect();
    assert_eq!(u, [("KUBE-SEP-Y", 3), ("KUBE-SEP-Y", 4), ("KUBE-GONE", 6)]);
    let nat = p.ruleset.table(TableName::Nat).unwrap();
    assert_eq!(nat.chain("KUBE-SEP-Y").unwrap().line, None);
    assert_eq!(
        nat.chain("KUBE-SEP-Y").unwrap().rules[0].target,
        Some(Target::Unknown {
            name: "QUEUE".into(),
            args: vec![]
        })
    );
    assert_eq!(
        nat.chain("PREROUTING").unwrap().rules[0].target,
        Some(Target::Jump("KUBE-SVC-X".into()))
    );
    assert_eq!(p.chain_ops.len(), 2);
    assert_eq!(p.chain_ops[1].chain, None);
}
