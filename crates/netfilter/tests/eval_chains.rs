//! Chain semantics of the evaluator: jump/return/goto, policies, marks, undetermined matches and
//! jump loops, on small `iptables-save` texts.
#![allow(clippy::unwrap_used, reason = "tests")]

mod eval_support;

use eval_support::{decided, host, ip, is_undetermined, legacy, steps_on};
use netfilter::eval::{Flow, Origin, Verdict, trace};
use netfilter::target::RejectWith;

const CHAINS: &str = "\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
:C - [0:0]
-A INPUT -j A
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A A -p tcp -m tcp --dport 80 -g B
-A A -p tcp -m tcp --dport 443 -j C
-A A -s 192.0.2.0/24 -j ACCEPT
-A B -s 192.0.2.0/24 -j RETURN
-A B -j ACCEPT
-A C -s 192.0.2.0/24 -j RETURN
-A C -j DROP
COMMIT
";

fn input(src: &str, dport: u16) -> Flow {
    let mut f = Flow::tcp(Origin::Input, ip(src), ip("198.51.100.5"), dport);
    f.in_iface = Some("eth0".into());
    f
}

#[test]
fn goto_returns_to_the_last_jump_not_to_the_goto() {
    let rs = [legacy(CHAINS)];
    // B's RETURN goes back to INPUT (A was left by -g), whose rule 2 does not match: policy DROP.
    // Were -g a jump, A rule 3 would accept.
    let t = trace(&rs, &host(), &input("192.0.2.7", 80));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Drop);
    assert_eq!(decided(t), ("filter".into(), "INPUT".into(), None));
    assert_eq!(t.decided_by.as_ref().unwrap().text, ":INPUT DROP");
    assert!(steps_on(t, "A", Some(3)).is_empty(), "{:#?}", t.steps);
    assert!(!steps_on(t, "INPUT", Some(2))[0].matched);
    // From elsewhere, B accepts.
    let t = trace(&rs, &host(), &input("203.0.113.9", 80));
    assert_eq!(t.verdict(), Verdict::Accept);
    assert!(steps_on(t.single().unwrap(), "B", Some(2))[0].matched);
}

#[test]
fn jump_returns_to_the_next_rule_of_the_caller() {
    let rs = [legacy(CHAINS)];
    let t = trace(&rs, &host(), &input("192.0.2.7", 443));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Accept);
    let a3 = steps_on(t, "A", Some(3));
    assert!(a3[0].matched, "{:#?}", t.steps);
    assert!(a3[0].why.contains("ACCEPT"));

    let t = trace(&rs, &host(), &input("203.0.113.9", 443));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Drop);
    assert_eq!(decided(t), ("filter".into(), "C".into(), Some(2)));
}

#[test]
fn end_of_user_chain_returns_and_policy_decides() {
    let rs = [legacy(CHAINS)];
    // A falls off its end, INPUT rule 2 accepts.
    let t = trace(&rs, &host(), &input("203.0.113.9", 22));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Accept);
    assert!(steps_on(t, "INPUT", Some(2))[0].matched);
    assert_eq!(t.decided_by, None);
    // Nothing matches: INPUT's policy drops.
    let t = trace(&rs, &host(), &input("203.0.113.9", 25));
    assert_eq!(t.verdict(), Verdict::Drop);
    // FORWARD policy DROP, OUTPUT policy ACCEPT.
    let mut fwd = Flow::tcp(Origin::Forward, ip("192.0.2.7"), ip("203.0.113.9"), 80);
    fwd.in_iface = Some("eth0".into());
    fwd.out_iface = Some("eth1".into());
    let t = trace(&rs, &host(), &fwd);
    assert_eq!(t.verdict(), Verdict::Drop);
    assert_eq!(decided(t.single().unwrap()).1, "FORWARD");
    let out = Flow::tcp(
        Origin::LocalOutput,
        ip("198.51.100.5"),
        ip("203.0.113.9"),
        80,
    );
    assert_eq!(trace(&rs, &host(), &out).verdict(), Verdict::Accept);
    // The same forward flow with policy ACCEPT.
    let open = [legacy(&CHAINS.replace(":FORWARD DROP", ":FORWARD ACCEPT"))];
    assert_eq!(trace(&open, &host(), &fwd).verdict(), Verdict::Accept);
}

const MARKS: &str = "\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MARK-IT - [0:0]
-A PREROUTING -p tcp -m tcp --dport 8080 -j MARK-IT
-A PREROUTING -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A MARK-IT -j MARK --set-xmark 0x4000/0x4000
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p udp -m connmark --mark 0x4000/0x4000 -j REJECT --reject-with icmp-admin-prohibited
-A INPUT -m mark --mark 0x4000/0x4000 -j DROP
COMMIT
";

#[test]
fn marks_set_in_mangle_are_matched_in_filter() {
    let rs = [legacy(MARKS)];
    let t = trace(&rs, &host(), &input("203.0.113.9", 8080));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Drop);
    assert_eq!(decided(t), ("filter".into(), "INPUT".into(), Some(2)));
    assert!(steps_on(t, "MARK-IT", Some(1))[0].why.contains("0x4000"));
    // Unmarked traffic passes.
    assert_eq!(
        trace(&rs, &host(), &input("203.0.113.9", 8081)).verdict(),
        Verdict::Accept
    );
    // A packet arriving with the bit already set (e.g. from the flow) is dropped too.
    let mut f = input("203.0.113.9", 22);
    f.mark = 0x4000;
    assert_eq!(trace(&rs, &host(), &f).verdict(), Verdict::Drop);
    // CONNMARK --save-mark copies the mark to the connection: a UDP flow carrying the mark is rejected.
    let mut u = Flow::udp(Origin::Input, ip("203.0.113.9"), ip("198.51.100.5"), 53);
    u.in_iface = Some("eth0".into());
    u.mark = 0x4000;
    let t = trace(&rs, &host(), &u);
    assert_eq!(
        t.verdict(),
        Verdict::Reject {
            with: RejectWith::IcmpAdminProhibited
        }
    );
}

const UNKNOWN: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p udp -m recent --rcheck --seconds 60 --name probe --mask 255.255.255.255 --rsource -j DROP
-A INPUT -m recent --rcheck --seconds 60 --name probe --mask 255.255.255.255 --rsource -j LOG --log-prefix \"seen \"
-A INPUT -p tcp -m limit --limit 5/sec -j ACCEPT
-A INPUT -p tcp -m recent --rcheck --seconds 60 --name probe --mask 255.255.255.255 --rsource -j DROP
-A INPUT -j DROP
COMMIT
";

#[test]
fn unknown_match_before_drop_is_undetermined_never_drop() {
    let rs = [legacy(UNKNOWN)];
    let t = trace(&rs, &host(), &input("203.0.113.9", 22));
    let t = t.single().unwrap();
    // Rule 1 cannot match a TCP flow whatever `recent` says; rule 2 only logs: skipped with a
    // note; rule 3's limit is stateful: undetermined, and it decides.
    assert!(is_undetermined(&t.verdict), "{:#?}", t.verdict);
    assert_eq!(decided(t), ("filter".into(), "INPUT".into(), Some(3)));
    assert!(
        steps_on(t, "INPUT", Some(1))[0]
            .why
            .contains("does not hold")
    );
    assert!(steps_on(t, "INPUT", Some(2))[0].why.contains("ignored"));
    let Verdict::Undetermined { reason } = &t.verdict else {
        unreachable!()
    };
    assert!(reason.contains("limit"), "{reason}");

    // Without the limit rule, the unknown `recent` before DROP decides: undetermined, not drop.
    let no_limit: String = UNKNOWN
        .lines()
        .filter(|l| !l.contains("limit"))
        .map(|l| format!("{l}\n"))
        .collect();
    let rs = [legacy(&no_limit)];
    let t = trace(&rs, &host(), &input("203.0.113.9", 22));
    let t = t.single().unwrap();
    assert!(is_undetermined(&t.verdict));
    assert_eq!(decided(t), ("filter".into(), "INPUT".into(), Some(3)));
    assert!(t.decided_by.as_ref().unwrap().text.contains("-m recent"));
}

#[test]
fn jump_and_goto_loops_are_undetermined() {
    let jump_loop = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:L1 - [0:0]
:L2 - [0:0]
-A INPUT -j L1
-A L1 -j L2
-A L2 -j L1
COMMIT
";
    for text in [
        jump_loop.to_string(),
        jump_loop.replace("-A L2 -j L1", "-A L2 -g L1"),
    ] {
        let rs = [legacy(&text)];
        let t = trace(&rs, &host(), &input("203.0.113.9", 22));
        let t = t.single().unwrap();
        let Verdict::Undetermined { reason } = &t.verdict else {
            panic!("{:#?}", t.verdict)
        };
        assert!(reason.contains("loop"), "{reason}");
        assert_eq!(decided(t), ("filter".into(), "L2".into(), Some(1)));
    }
    // A missing chain (as in a restore payload) is undetermined as well.
    let missing = jump_loop.replace("-A L2 -j L1", "-A L2 -j KUBE-MARK-DROP");
    let rs = netfilter::parse_restore_payload(&missing, &Default::default()).unwrap();
    let t = trace(&[rs.ruleset], &host(), &input("203.0.113.9", 22));
    let Verdict::Undetermined { reason } = t.verdict() else {
        panic!("{:?}", t.verdict())
    };
    assert!(reason.contains("KUBE-MARK-DROP"), "{reason}");
}
