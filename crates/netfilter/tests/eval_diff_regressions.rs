//! Disagreements between the evaluator and the kernel found by `tests/differential.rs`, one test
//! each, in pure form (no kernel needed). The same cases run against the kernel in
//! `differential.rs`'s `regressions_kernel_agrees`.
#![allow(clippy::unwrap_used, reason = "tests")]

mod eval_support;

use eval_support::{decided, host, ip, legacy, rules};
use netfilter::Backend;
use netfilter::eval::{Flow, HostModel, Origin, Verdict, trace};

/// Differential seed 0xd1ff07f: `-m conntrack` with no conntrack entry (here: raw PREROUTING,
/// before conntrack) matches iff it has a passing `--ctstate` test; every other option is ignored
/// (xt_conntrack.c `if (ct == NULL) return info->match_flags & XT_CONNTRACK_STATE;`). The
/// evaluator used to require a pure state test, so `! --ctstate NEW ! --ctorigdst X` did not match.
#[test]
fn conntrack_without_an_entry_ignores_the_other_options() {
    let rs = [legacy(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A PREROUTING -m conntrack ! --ctstate NEW ! --ctorigdst 203.0.113.254 -j DROP\n\
         COMMIT\n",
    )];
    let mut f = Flow::tcp(Origin::Forward, ip("198.51.100.1"), ip("203.0.113.1"), 443);
    f.in_iface = Some("eth0".into());
    f.out_iface = Some("eth1".into());
    let t = trace(&rs, &host(), &f);
    assert_eq!(t.verdict(), Verdict::Drop);
    assert_eq!(
        decided(t.single().unwrap()),
        ("raw".into(), "PREROUTING".into(), Some(1))
    );
    // Without a state test, no entry means no match.
    let rs = [legacy(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A PREROUTING -m conntrack ! --ctorigdst 203.0.113.254 -j DROP\n\
         COMMIT\n",
    )];
    assert_eq!(trace(&rs, &host(), &f).verdict(), Verdict::Accept);
}

/// Differential seed 0xd1ff0d1: an UNTRACKED packet (NOTRACK in raw OUTPUT) has no entry, so
/// `--ctstate UNTRACKED --ctorigdst 192.0.2.253` matches whatever the original destination.
#[test]
fn untracked_packet_matches_a_state_test_with_other_options() {
    let rs = [legacy(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -j NOTRACK\nCOMMIT\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -p tcp -m conntrack --ctstate UNTRACKED --ctorigdst 192.0.2.253 -j DROP\n\
         COMMIT\n",
    )];
    let mut f = Flow::tcp(
        Origin::LocalOutput,
        ip("198.51.100.5"),
        ip("198.51.100.5"),
        9099,
    );
    f.sport = Some(39017);
    let t = trace(&rs, &host(), &f);
    assert_eq!(t.verdict(), Verdict::Drop);
    assert_eq!(
        decided(t.single().unwrap()),
        ("mangle".into(), "POSTROUTING".into(), Some(1))
    );
}

/// Differential seed 0xd1ff2a8: NOTRACK in raw PREROUTING does nothing to a locally generated
/// packet re-entering through `lo`: it already has its conntrack entry from the output path
/// (xt_CT.c `notrack_tg`: "Previously seen (loopback)? Ignore."). The evaluator used to make it
/// UNTRACKED, so a later `--ctstate NEW` rule did not match.
#[test]
fn notrack_on_loopback_reentry_is_ignored() {
    let rs = [legacy(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -j NOTRACK\nCOMMIT\n\
         *filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n",
    )];
    let local = Flow::udp(
        Origin::LocalOutput,
        ip("203.0.113.1"),
        ip("203.0.113.1"),
        22,
    );
    assert_eq!(trace(&rs, &host(), &local).verdict(), Verdict::Accept);
    // From outside, NOTRACK in raw PREROUTING does apply: the packet is UNTRACKED, not NEW.
    let mut input = Flow::udp(Origin::Input, ip("198.51.100.1"), ip("203.0.113.1"), 22);
    input.in_iface = Some("eth1".into());
    let t = trace(&rs, &host(), &input);
    assert_eq!(t.verdict(), Verdict::Drop);
    assert_eq!(
        decided(t.single().unwrap()),
        ("filter".into(), "INPUT".into(), None)
    );
}

/// Differential seed 0xd1ff283: a DNAT that changes only the port does not change the route, so
/// the output interface stays known (the evaluator used to forget it and answer undetermined
/// for a later `-o`).
#[test]
fn port_only_dnat_keeps_the_route() {
    let rs = [legacy(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -p udp -j DNAT --to-destination 203.0.113.9:8080\n\
         -A OUTPUT -p udp -j DNAT --to-destination :8080\nCOMMIT\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -o eth1 -j DROP\nCOMMIT\n",
    )];
    let mut f = Flow::udp(Origin::Forward, ip("198.51.100.1"), ip("203.0.113.9"), 80);
    f.in_iface = Some("eth0".into());
    f.out_iface = Some("eth1".into());
    let t = trace(&rs, &host(), &f);
    assert_eq!(t.verdict(), Verdict::Drop, "{t:#?}");
    let mut out = Flow::udp(
        Origin::LocalOutput,
        ip("203.0.113.1"),
        ip("203.0.113.9"),
        80,
    );
    out.out_iface = Some("eth1".into());
    assert_eq!(trace(&rs, &host(), &out).verdict(), Verdict::Drop);
}

/// Differential seed 13139: after a DNAT in nat OUTPUT re-routes a locally generated packet, the
/// rest of the OUTPUT hook (filter, security) still sees the original output device — the hook
/// state is fixed for the whole hook — and only POSTROUTING sees the new one (here `lo`). The
/// evaluator used to switch to the new device at once.
#[test]
fn output_device_changes_only_after_the_output_hook() {
    let rs = [legacy(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A OUTPUT -p tcp -j DNAT --to-destination 198.51.100.5:80\nCOMMIT\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -o eth1 -j DROP\nCOMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A OUTPUT -o eth1 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\nCOMMIT\n",
    )];
    let mut f = Flow::tcp(
        Origin::LocalOutput,
        ip("203.0.113.1"),
        ip("203.0.113.9"),
        443,
    );
    f.out_iface = Some("eth1".into());
    let t = trace(&rs, &host(), &f);
    assert_eq!(
        decided(t.single().unwrap()),
        ("filter".into(), "OUTPUT".into(), Some(1)),
        "{t:#?}"
    );
    // Without the REJECT, POSTROUTING sees `lo`: the mangle rule does not drop it.
    let mut rs = rs;
    rs[0] = legacy(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A OUTPUT -p tcp -j DNAT --to-destination 198.51.100.5:80\nCOMMIT\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -o eth1 -j DROP\nCOMMIT\n",
    );
    assert_eq!(trace(&rs, &host(), &f).verdict(), Verdict::Accept);
}

/// Differential seed 779189: MASQUERADE of a packet leaving through `lo` does not keep
/// 127.0.0.1: nf_nat_masquerade_ipv4 asks `inet_select_addr(lo, …, RT_SCOPE_UNIVERSE)`, which
/// skips the host-scoped 127.0.0.1 and picks a global address of another device. The source is
/// then not known, and the connection is source-NATed (`--ctstate SNAT` holds); the evaluator
/// used to keep 127.0.0.1 and say the connection was not NATed.
#[test]
fn masquerade_on_loopback_changes_the_source() {
    let rs = [legacy(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 127.0.0.1/32 -j MASQUERADE\nCOMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -p tcp -m conntrack ! --ctstate SNAT -j DROP\n\
         -A INPUT -p tcp -j REJECT --reject-with icmp-host-unreachable\nCOMMIT\n",
    )];
    let f = Flow::tcp(Origin::LocalOutput, ip("127.0.0.1"), ip("127.0.0.1"), 22);
    let t = trace(&rs, &host(), &f);
    assert_eq!(
        decided(t.single().unwrap()),
        ("filter".into(), "INPUT".into(), Some(2)),
        "{t:#?}"
    );
    assert_eq!(t.single().unwrap().nat[0].to.addr, None);
}

/// Differential seed 0xd1ff016 (found by the rule-counter check): iptables-nft registers its
/// security chains at priority 150, not 50 like the legacy table, so with both backends loaded
/// the legacy security chain runs first, and the nft one only after nat INPUT (100).
#[test]
fn nft_security_table_runs_at_priority_150() {
    let security = |rule: &str| {
        format!(
            "*security\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             {rule}\nCOMMIT\n"
        )
    };
    let nft = eval_support::rules(
        &security("-A FORWARD -j DROP\n-A INPUT -s 192.0.2.9/32 -j DROP"),
        netfilter::Backend::Nft,
    );
    let old = legacy(&security("-A FORWARD -j DROP"));
    // nf_tables first in the list, yet the legacy chain decides.
    let mut f = Flow::tcp(Origin::Forward, ip("198.51.100.1"), ip("203.0.113.9"), 80);
    f.in_iface = Some("eth0".into());
    f.out_iface = Some("eth1".into());
    let t = trace(&[nft.clone(), old], &host(), &f);
    let by = t.single().unwrap().decided_by.clone().unwrap();
    assert_eq!(by.backend, Some(netfilter::Backend::Legacy), "{t:#?}");
    // nat INPUT (SNAT to 192.0.2.9) runs before the nft security INPUT chain.
    let nat = legacy(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n-A INPUT -j SNAT --to-source 192.0.2.9\nCOMMIT\n",
    );
    let mut input = Flow::tcp(Origin::Input, ip("198.51.100.1"), ip("203.0.113.1"), 80);
    input.in_iface = Some("eth1".into());
    let t = trace(&[nft, nat], &host(), &input);
    assert_eq!(t.verdict(), Verdict::Drop, "{t:#?}");
}

/// Differential seeds 0xd1ff179, 0xd1ff1ed, 0xd1ff263: a packet from 127.0.0.1 DNATed in nat
/// OUTPUT to a remote address is dropped when the kernel re-routes it (a loopback source may not
/// leave the host: `__mkroute_output` returns EINVAL, nf_nat_ipv4_local_fn drops). The evaluator
/// used to accept it.
#[test]
fn loopback_source_dnated_out_of_the_host_is_dropped() {
    let rs = [legacy(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n-A OUTPUT -p udp -j DNAT --to-destination 203.0.113.9\n\
         -A OUTPUT -p tcp -j DNAT --to-destination 198.51.100.5\nCOMMIT\n",
    )];
    let udp = Flow::udp(Origin::LocalOutput, ip("127.0.0.1"), ip("127.0.0.1"), 53);
    let t = trace(&rs, &host(), &udp);
    assert_eq!(t.verdict(), Verdict::Drop, "{t:#?}");
    assert_eq!(
        decided(t.single().unwrap()),
        ("nat".into(), "OUTPUT".into(), Some(1))
    );
    // To a local address it stays on the host: delivered.
    let tcp = Flow::tcp(Origin::LocalOutput, ip("127.0.0.1"), ip("127.0.0.1"), 80);
    assert_eq!(trace(&rs, &host(), &tcp).verdict(), Verdict::Accept);
    // From a real address, the DNAT out is fine.
    let from_eth = Flow::udp(Origin::LocalOutput, ip("198.51.100.5"), ip("127.0.0.1"), 53);
    assert_eq!(trace(&rs, &host(), &from_eth).verdict(), Verdict::Accept);
}

/// Differential seed 20280609 (found by the rule-counter check): IPv6 MASQUERADE out of `lo`
/// takes the source ipv6_dev_get_saddr picks for the local destination, which by RFC 6724 rule 1
/// ("prefer same address") is the destination itself, not ::1. The evaluator used ::1, so a later
/// `-s fd00:2::/32` rule on loopback re-entry did not match.
#[test]
fn ipv6_masquerade_on_loopback_keeps_the_local_address() {
    let rs = [eval_support::rules(
        "# Generated by ip6tables-save v1.8.9\n\
         *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -p udp -j MASQUERADE\nCOMMIT\n\
         *raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A PREROUTING -s fd00:2::/32 -j DROP\nCOMMIT\n",
        netfilter::Backend::Nft,
    )];
    let host = eval_support::host().with_addr("eth1", ip("fd00:2::fe"), 64);
    let f = Flow::udp(Origin::LocalOutput, ip("fd00:2::fe"), ip("fd00:2::fe"), 443);
    let t = trace(&rs, &host, &f);
    assert_eq!(
        decided(t.single().unwrap()),
        ("raw".into(), "PREROUTING".into(), Some(1)),
        "{t:#?}"
    );
}

/// iptables-nft 1.8.9 compiles `! --sport A ! --dport B` into one `th sport . th dport != A . B`
/// comparison (the generator stopped writing it after the differential test met it): where the
/// two readings differ for the packet the verdict is undetermined, naming the rule; where they
/// agree it is decided; legacy rules keep the text's meaning.
#[test]
fn nft_negated_port_pair_is_undetermined_only_where_the_readings_differ() {
    let text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                -A INPUT -p tcp -m tcp ! --sport 1000 ! --dport 22 -j DROP\nCOMMIT\n";
    let host = HostModel::default().with_addr("eth0", ip("198.51.100.5"), 24);
    let flow = |sport: u16, dport: u16| Flow {
        sport: Some(sport),
        in_iface: Some("eth0".into()),
        ..Flow::tcp(Origin::Input, ip("198.51.100.9"), ip("198.51.100.5"), dport)
    };
    let nft = [rules(text, Backend::Nft)];
    let v = trace(&nft, &host, &flow(1000, 80)).verdict();
    let Verdict::Undetermined { reason } = v else {
        panic!("{v:?}")
    };
    assert!(reason.contains("th sport . th dport"), "{reason}");
    assert_eq!(trace(&nft, &host, &flow(5, 80)).verdict(), Verdict::Drop);
    assert_eq!(
        trace(&nft, &host, &flow(1000, 22)).verdict(),
        Verdict::Accept
    );
    let legacy = [rules(text, Backend::Legacy)];
    assert_eq!(
        trace(&legacy, &host, &flow(1000, 80)).verdict(),
        Verdict::Accept
    );
}
