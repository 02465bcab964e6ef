//! Unit tests of the `ipset save` parser, on text as ipset v7.17 printed it.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::IpAddr;

use super::*;

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| cidr(s)).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ipset save` of v7.17 (kernel 6.x), sets created in a lab namespace.
const SAVED: &str = r#"create a hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 comment bucketsize 12 initval 0xb631217c
add a 192.0.2.1 timeout 0 comment "hello world"
add a 192.0.2.4 timeout 0
add a 192.0.2.6 timeout 0
create n hash:net family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0xdb16401c
add n 192.0.2.0/24 packets 0 bytes 0
add n 198.51.100.7 packets 0 bytes 0
add n 192.0.2.128/25 nomatch packets 0 bytes 0
create n6 hash:net family inet6 hashsize 1024 maxelem 65536 timeout 300 bucketsize 12 initval 0xed60b3fd
add n6 fd00::1 timeout 299
add n6 fd00::/64 timeout 99
create m hash:ip family inet hashsize 1024 maxelem 65536 netmask 24 bucketsize 12 initval 0x22296028
add m 192.0.2.0
create b bitmap:ip range 192.0.2.0-192.0.2.255
add b 192.0.2.3
create p hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x4ae8a187
add p 192.0.2.1,tcp:80
create e hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xd52c39be
create l list:set size 8
add l n
"#;

#[test]
fn reads_every_set_with_its_kind_and_members() {
    let sets = parse_ipset_save(SAVED).unwrap();
    assert_eq!(
        sets.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "e", "l", "m", "n", "n6", "p"]
    );
    let a = &sets["a"];
    assert_eq!(a.kind, "hash:ip");
    assert_eq!(
        a.members,
        cidrs(&["192.0.2.1/32", "192.0.2.4/32", "192.0.2.6/32"])
    );
    assert!(a.nomatch.is_empty());
    let n = &sets["n"];
    assert_eq!(n.members, cidrs(&["192.0.2.0/24", "198.51.100.7/32"]));
    assert_eq!(n.nomatch, cidrs(&["192.0.2.128/25"]));
    assert_eq!(sets["n6"].members, cidrs(&["fd00::1/128", "fd00::/64"]));
    // netmask 24: the member stands for its whole /24.
    assert_eq!(sets["m"].members, cidrs(&["192.0.2.0/24"]));
    assert_eq!(sets["b"].members, cidrs(&["192.0.2.3/32"]));
    assert!(sets["b"].is_address_set());
    assert!(sets["e"].members.is_empty() && sets["e"].is_address_set());
    // Not modelled: kept with their kind and no members.
    assert_eq!(sets["p"].kind, "hash:ip,port");
    assert!(sets["p"].members.is_empty() && !sets["p"].is_address_set());
    assert_eq!(sets["l"].kind, "list:set");
    assert!(!sets["l"].is_address_set());
}

#[test]
fn comment_and_option_values_are_not_flags() {
    let sets = parse_ipset_save(
        "create c hash:net family inet comment\n\
         add c 192.0.2.0/24 comment \"nomatch\"\n\
         add c 198.51.100.0/24 comment \"a b\" nomatch\n",
    )
    .unwrap();
    assert_eq!(sets["c"].members, cidrs(&["192.0.2.0/24"]));
    assert_eq!(sets["c"].nomatch, cidrs(&["198.51.100.0/24"]));
}

#[test]
fn ranges_split_into_covering_networks() {
    let sets = parse_ipset_save(
        "create r hash:net family inet\nadd r 203.0.113.1-203.0.113.10\n\
         create r6 hash:ip family inet6\nadd r6 fd00::-fd00::3\n",
    )
    .unwrap();
    assert_eq!(
        sets["r"].members,
        cidrs(&[
            "203.0.113.1/32",
            "203.0.113.2/31",
            "203.0.113.4/30",
            "203.0.113.8/31",
            "203.0.113.10/32"
        ])
    );
    assert_eq!(sets["r6"].members, cidrs(&["fd00::/126"]));
    assert_eq!(
        range_to_cidrs(ip("0.0.0.0"), ip("255.255.255.255")).unwrap(),
        cidrs(&["0.0.0.0/0"])
    );
    assert_eq!(
        range_to_cidrs(ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).unwrap(),
        cidrs(&["::/0"])
    );
    assert_eq!(
        range_to_cidrs(ip("255.255.255.255"), ip("255.255.255.255")).unwrap(),
        cidrs(&["255.255.255.255/32"])
    );
    assert!(range_to_cidrs(ip("192.0.2.2"), ip("192.0.2.1")).is_none());
    assert!(range_to_cidrs(ip("192.0.2.2"), ip("fd00::1")).is_none());
}

#[test]
fn old_spellings_comments_and_blank_lines() {
    let sets = parse_ipset_save("# saved\n\n-N s hash:ip\n-A s 192.0.2.9\n").unwrap();
    assert_eq!(sets["s"].members, cidrs(&["192.0.2.9/32"]));
}

#[test]
fn errors_name_the_line_and_its_text() {
    for (text, line, needle) in [
        (
            "create a hash:ip\nfoo a 1\n",
            2,
            "not an ipset save command",
        ),
        ("create a\n", 1, "set name and a type"),
        ("add a 192.0.2.1\n", 1, "not created before"),
        ("create a hash:ip\ncreate a hash:net\n", 2, "created twice"),
        ("create a hash:ip family inet7\n", 1, "family `inet7`"),
        ("create a hash:ip family\n", 1, "family ``"),
        ("create a hash:ip\nadd a fd00::1\n", 2, "family (ipv4)"),
        (
            "create a hash:ip family inet6\nadd a 192.0.2.1\n",
            2,
            "family (ipv6)",
        ),
        (
            "create a hash:net\nadd a 192.0.2.0/33\n",
            2,
            "prefix length",
        ),
        ("create a hash:net\nadd a 192.0.2.x\n", 2, "not an address"),
        (
            "create a hash:net\nadd a 192.0.2.9-192.0.2.1\n",
            2,
            "is empty",
        ),
        ("create a hash:ip netmask 40\n", 1, "netmask `40`"),
        ("create a hash:ip bitmask fd00::\n", 1, "bitmask"),
        ("create a hash:net\nadd a\n", 2, "set name and a member"),
        (
            "create a hash:net comment\nadd a 192.0.2.1 comment \"x\n",
            2,
            "unterminated",
        ),
    ] {
        let e = parse_ipset_save(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert_eq!(
            e.text,
            text.lines().nth(line - 1).unwrap().trim(),
            "{text:?}"
        );
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn members_of_unmodelled_types_are_not_read() {
    // hash:ip,port members would not parse as addresses; they are skipped, not errors.
    let sets = parse_ipset_save("create p hash:ip,port\nadd p 192.0.2.1,udp:53\n").unwrap();
    assert!(sets["p"].members.is_empty());
}

proptest::proptest! {
    #[test]
    fn never_panics(text in "(create|add|-N|-A| |[a-z:,]{1,8}|[0-9./:-]{1,20}|\"|nomatch|family|inet6?|netmask|\n){0,40}") {
        let _ = parse_ipset_save(&text);
    }

    #[test]
    fn never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = parse_ipset_save(&text);
    }

    #[test]
    fn ranges_cover_exactly(a in proptest::prelude::any::<u32>(), b in proptest::prelude::any::<u32>()) {
        let (lo, hi) = (a.min(b), a.max(b));
        let parts = range_to_cidrs(
            IpAddr::V4(Ipv4Addr::from(lo)),
            IpAddr::V4(Ipv4Addr::from(hi)),
        ).unwrap();
        proptest::prop_assert!(parts.len() <= 62);
        // Contiguous, in order, from lo to hi.
        let mut next = u64::from(lo);
        for c in &parts {
            let IpAddr::V4(start) = c.addr() else { unreachable!() };
            proptest::prop_assert_eq!(u64::from(start.to_bits()), next);
            let len = c.prefix_len().unwrap();
            next += 1u64 << (32 - u32::from(len));
        }
        proptest::prop_assert_eq!(next, u64::from(hi) + 1);
    }
}
