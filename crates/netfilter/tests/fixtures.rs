//! Real `iptables-save` output (written by iptables v1.8.9 in a throw-away namespace, both
//! backends) parsed into the model and checked field by field.
#![allow(clippy::unwrap_used, reason = "tests")]

use netfilter::matches::{ConntrackMatch, CtState, StatisticMode};
use netfilter::target::{NatFlags, NatRange};
use netfilter::{
    Backend, Cidr, Family, Match, ParseOptions, PortRange, ReferenceKind, Ruleset, TableName,
    Target, parse_restore_payload, parse_save,
};

const NFT: &str = include_str!("fixtures/kube-proxy-nft.txt");
const LEGACY: &str = include_str!("fixtures/kube-proxy-legacy.txt");
const ALL: &str = include_str!("fixtures/all-options-nft.txt");
const MISSING: &str = include_str!("fixtures/kube-proxy-restore-missing-mark-drop.txt");

fn parse(text: &str) -> Ruleset {
    parse_save(text, &ParseOptions::default()).unwrap()
}

fn check_kube_proxy(rs: &Ruleset) {
    assert_eq!(rs.family, Family::Ipv4);
    assert_eq!(rs.version.as_deref(), Some("1.8.9"));
    let names: Vec<TableName> = rs.tables.iter().map(|t| t.name).collect();
    for t in [TableName::Mangle, TableName::Filter, TableName::Nat] {
        assert!(names.contains(&t), "{t} missing");
    }
    let chains = |t| rs.table(t).unwrap().chains.len();
    assert_eq!(chains(TableName::Mangle), 8);
    assert_eq!(chains(TableName::Filter), 11);
    assert_eq!(chains(TableName::Nat), 17);
    assert_eq!(rs.rule_count(), 44);

    // kubelet's localnet rule, exactly as /work/shared/DESIGN.md quotes it.
    let filter = rs.table(TableName::Filter).unwrap();
    let fw = filter.chain("KUBE-FIREWALL").unwrap();
    assert!(!fw.builtin && fw.policy.is_none());
    assert_eq!(fw.rules.len(), 1);
    let r = &fw.rules[0];
    assert_eq!(r.comment(), Some("block incoming localnet connections"));
    assert!(r.text.ends_with(
        "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    ));
    let lo = Cidr::parse("127.0.0.0/8").unwrap();
    assert!(matches!(&r.matches[0], Match::Source(n) if n.negated && n.value == lo));
    assert!(matches!(&r.matches[1], Match::Destination(n) if !n.negated && n.value == lo));
    let Match::Conntrack(ct) = &r.matches[3] else {
        panic!("{:?}", r.matches[3])
    };
    let ConntrackMatch {
        state: Some(st), ..
    } = &**ct
    else {
        panic!("{ct:?}")
    };
    assert!(st.negated);
    assert_eq!(
        st.value,
        [CtState::Related, CtState::Established, CtState::Dnat]
    );
    assert_eq!(r.target, Some(Target::Drop));
    // Jumped to from INPUT and OUTPUT.
    for c in ["INPUT", "OUTPUT"] {
        let jumps = filter
            .chain(c)
            .unwrap()
            .rules
            .iter()
            .filter(|r| r.target == Some(Target::Jump("KUBE-FIREWALL".into())));
        assert_eq!(jumps.count(), 1, "{c}");
    }

    let nat = rs.table(TableName::Nat).unwrap();
    // Endpoint split of default/web: 1/3, then 1/2, then the rest.
    let svc = nat.chain("KUBE-SVC-NPX46M4PTMTKRN6Y").unwrap();
    let probs: Vec<Option<f64>> = svc
        .rules
        .iter()
        .map(|r| {
            r.matches.iter().find_map(|m| match m {
                Match::Statistic(s) => match s.mode {
                    StatisticMode::Random { probability } => Some(probability),
                    StatisticMode::Nth { .. } => None,
                },
                _ => None,
            })
        })
        .collect();
    assert_eq!(probs, [None, Some(0.33333333349), Some(0.5), None]);
    // Every KUBE-SEP chain ends in a DNAT to its endpoint.
    let mut dnats: Vec<String> = nat
        .chains
        .iter()
        .filter(|c| c.name.starts_with("KUBE-SEP-"))
        .map(|c| match &c.rules.last().unwrap().target {
            Some(Target::Dnat {
                to:
                    NatRange {
                        addrs: Some((a, b)),
                        ports: Some(p),
                    },
                flags,
            }) => {
                assert_eq!(a, b);
                assert_eq!(*flags, NatFlags::default());
                format!("{a}:{}", p.render('-'))
            }
            other => panic!("{}: {other:?}", c.name),
        })
        .collect();
    dnats.sort();
    assert_eq!(
        dnats,
        [
            "203.0.113.11:8080",
            "203.0.113.12:8080",
            "203.0.113.13:8080",
            "203.0.113.21:53",
            "203.0.113.22:53"
        ]
    );
    let masq = nat.chain("KUBE-MARK-MASQ").unwrap();
    assert_eq!(
        masq.rules[0].target,
        Some(Target::Mark {
            value: 0x4000,
            mask: 0x4000
        })
    );
    let post = nat.chain("KUBE-POSTROUTING").unwrap();
    assert!(matches!(
        post.rules[2].target,
        Some(Target::Masquerade {
            ports: None,
            flags: NatFlags {
                random_fully: true,
                ..
            }
        })
    ));
    let last = nat.chain("KUBE-SERVICES").unwrap().rules.last().unwrap();
    assert!(last.comment().unwrap().contains("must be the last rule"));
    assert_eq!(last.target, Some(Target::Jump("KUBE-NODEPORTS".into())));
    // A Service without endpoints rejects in filter.
    let rej = &filter.chain("KUBE-SERVICES").unwrap().rules[0];
    assert!(
        matches!(&rej.matches[3], Match::Tcp(t) if t.dport.as_ref().unwrap().value == PortRange::single(80))
    );
    // The hint and canary chains of kubelet and kube-proxy.
    let mangle = rs.table(TableName::Mangle).unwrap();
    for c in [
        "KUBE-IPTABLES-HINT",
        "KUBE-KUBELET-CANARY",
        "KUBE-PROXY-CANARY",
    ] {
        assert!(mangle.chain(c).is_some(), "{c}");
    }
    // Nothing was left unmodelled.
    for t in &rs.tables {
        for c in &t.chains {
            for r in &c.rules {
                assert!(
                    !r.matches.iter().any(|m| matches!(m, Match::Unknown { .. })),
                    "{}",
                    r.text
                );
                assert!(
                    !matches!(r.target, Some(Target::Unknown { .. })),
                    "{}",
                    r.text
                );
            }
        }
    }
}

#[test]
fn kube_proxy_nft_save_with_counters() {
    let rs = parse(NFT);
    assert_eq!(rs.backend, Some(Backend::Nft));
    check_kube_proxy(&rs);
    let r = &rs
        .table(TableName::Filter)
        .unwrap()
        .chain("KUBE-FIREWALL")
        .unwrap()
        .rules[0];
    assert_eq!(
        r.counters,
        Some(netfilter::Counters {
            packets: 0,
            bytes: 0
        })
    );
    assert_eq!(r.line, 37);
}

#[test]
fn kube_proxy_legacy_save() {
    let rs = parse(LEGACY);
    assert_eq!(rs.backend, Some(Backend::Legacy));
    check_kube_proxy(&rs);
    assert_eq!(
        rs.table(TableName::Filter)
            .unwrap()
            .chain("KUBE-FIREWALL")
            .unwrap()
            .rules[0]
            .counters,
        None
    );
}

#[test]
fn caller_backend_overrides_header() {
    let opts = ParseOptions {
        backend: Some(Backend::Legacy),
        family: None,
    };
    assert_eq!(
        parse_save(NFT, &opts).unwrap().backend,
        Some(Backend::Legacy)
    );
    let bare: String = LEGACY
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        parse_save(&bare, &ParseOptions::default()).unwrap().backend,
        None
    );
}

/// Every rule of real iptables-save output renders back to exactly its text.
fn renders_back(text: &str) -> usize {
    let rs = parse(text);
    let mut n = 0;
    for t in &rs.tables {
        for c in &t.chains {
            for r in &c.rules {
                assert_eq!(netfilter::render::render_rule(&c.name, r), r.text);
                n += 1;
            }
        }
    }
    n
}

#[test]
fn real_save_output_renders_back_verbatim() {
    assert_eq!(renders_back(NFT), 44);
    assert_eq!(renders_back(LEGACY), 44);
    assert_eq!(renders_back(ALL), 55);
}

#[test]
fn all_options_are_typed_except_checksum() {
    let rs = parse(ALL);
    let mut unknown = Vec::new();
    for t in &rs.tables {
        for c in &t.chains {
            for r in &c.rules {
                for m in &r.matches {
                    if let Match::Unknown { name, .. } = m {
                        unknown.push(name.clone());
                    }
                }
                if let Some(Target::Unknown { name, args }) = &r.target {
                    unknown.push(format!("{name} {}", args.join(" ")));
                }
            }
        }
    }
    assert_eq!(unknown, ["CHECKSUM --checksum-fill"]);
}

#[test]
fn restore_payload_with_missing_kube_mark_drop() {
    let p = parse_restore_payload(MISSING, &ParseOptions::default()).unwrap();
    let refs: Vec<(TableName, &str, usize, ReferenceKind)> = p
        .undeclared
        .iter()
        .map(|u| (u.table, u.chain.as_str(), u.line, u.kind))
        .collect();
    assert_eq!(
        refs,
        [
            (TableName::Nat, "KUBE-MARK-DROP", 10, ReferenceKind::Jump),
            (TableName::Nat, "KUBE-MARK-MASQ", 11, ReferenceKind::Jump)
        ]
    );
    assert_eq!(p.chain_ops.len(), 1);
    assert_eq!(
        p.chain_ops[0].chain.as_deref(),
        Some("KUBE-SVC-STALESTALESTALE1")
    );
    // The same text is not a valid iptables-save dump.
    let e = parse_save(MISSING, &ParseOptions::default()).unwrap_err();
    assert_eq!(e.line, 13);
    assert_eq!(e.text, "-X KUBE-SVC-STALESTALESTALE1");
}
